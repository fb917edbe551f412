//! The two body wrappers: one removes keepalives from what arrives, the other
//! inserts keepalives into what is sent.
//!
//! Each owns its stream's state by value (no mutex) and at most one tokio
//! `Sleep`, created the first time it is needed and then only reset (STYLE
//! C7): it is re-armed when the core's deadline moves *earlier* or after it
//! fired, never per frame.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tonic::Status;

use crate::clock::Clock;
use crate::core::{
    wire, Classification, Config, Encoding, Event, FilterStats, FrameError, FrameFilter,
    FrameTracker, Instant, Keepalive, Output,
};
use crate::timer::{Timer, TokioTimer};

use super::KeepaliveStats;

/// The keepalive frame as a `Bytes` that points at static memory: sending
/// one allocates nothing.
fn keepalive_frame() -> Bytes {
    static FRAME: [u8; wire::KEEPALIVE_FRAME.len()] = wire::KEEPALIVE_FRAME;
    Bytes::from_static(&FRAME)
}

/// One resettable tokio sleep, created lazily, and the core instant it is
/// armed for.
#[derive(Debug, Default)]
struct Armed(Option<Instant>);

impl Armed {
    /// Arms `sleep` for `at` unless it is already armed earlier (an early
    /// wake-up is harmless: the core re-arms), then polls it. `Ready` means
    /// the deadline passed and the caller should look at the core again.
    fn poll(
        &mut self,
        mut sleep: Pin<&mut Option<Sleep>>,
        clock: &Clock,
        at: Instant,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        if self.0.is_none_or(|armed| at < armed) {
            let deadline = clock.to_std(at);
            match sleep.as_mut().as_pin_mut() {
                Some(existing) => existing.reset(deadline.into()),
                None => sleep.set(Some(tokio::time::sleep_until(deadline.into()))),
            }
            self.0 = Some(at);
        }
        match sleep.as_pin_mut() {
            Some(sleep) => match sleep.poll(cx) {
                Poll::Ready(()) => {
                    self.0 = None;
                    Poll::Ready(())
                }
                Poll::Pending => Poll::Pending,
            },
            None => Poll::Pending,
        }
    }
}

fn now(clock: &Clock) -> Instant {
    clock.to_core(TokioTimer.now())
}

fn new_clock() -> Clock {
    Clock::new(TokioTimer.now())
}

pin_project! {
    /// A gRPC body with the peer's keepalive frames removed, before tonic
    /// decodes a single message.
    ///
    /// Frames are classified with the core's [`FrameFilter`] as they
    /// arrive, in chunks of any size, without copying application bytes
    /// (only a short frame split across two chunks is held, at most 69
    /// bytes). A compressed keepalive is recognised too when the stream's
    /// `grpc-encoding` is `gzip` or `deflate`.
    ///
    /// Errors become a [`Status`], which tonic hands to the handler or the
    /// caller as is:
    /// - a malformed frame (a compressed flag other than 0 or 1, or a stream
    ///   that ends inside a frame): `Status::internal` naming the problem;
    /// - with a [peer timeout](Config::with_peer_timeout) configured, a peer
    ///   known to send keepalives that stays silent for longer:
    ///   `Status::unavailable`, and [`KeepaliveStats::peer_timed_out`].
    ///
    /// Made by the layers; a body that is not gRPC (by its `content-type`)
    /// passes through untouched.
    pub struct FilteredBody<B> {
        #[pin]
        inner: B,
        #[pin]
        sleep: Option<Sleep>,
        state: Receiver,
    }
}

impl<B> std::fmt::Debug for FilteredBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilteredBody")
            .field("filtering", &self.state.filter.is_some())
            .field("stats", &self.state.stats)
            .finish_non_exhaustive()
    }
}

struct Receiver {
    /// `None`: not a gRPC body, passed through.
    filter: Option<FrameFilter>,
    /// The rest of the current DATA chunk, not yet fed to the filter.
    pending: Bytes,
    stats: KeepaliveStats,
    seen: FilterStats,
    watchdog: Option<Box<Watchdog>>,
    failed: bool,
}

/// Dead-peer detection: a core machine that never sends, only watches.
struct Watchdog {
    machine: Keepalive,
    clock: Clock,
    armed: Armed,
    /// Start watching at the first keepalive received (a server cannot know
    /// beforehand whether its client sends keepalives).
    expecting: bool,
}

/// Who sends keepalives on the inbound side, for dead-peer detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PeerSends {
    /// Known to send them from the start (a client whose server announced
    /// support).
    Yes,
    /// Might: watch once the first keepalive arrives.
    Maybe,
}

impl<B> FilteredBody<B> {
    /// Wraps `inner`. `grpc` is false for a non-gRPC body, passed through.
    pub(crate) fn new(
        inner: B,
        grpc: bool,
        encoding: Encoding,
        config: &Config,
        peer_sends: PeerSends,
        stats: KeepaliveStats,
    ) -> Self {
        let watchdog = match (grpc, config.peer_timeout()) {
            (true, Some(_)) => {
                let clock = new_clock();
                let mut machine = Keepalive::new(*config, Instant::ZERO);
                machine.set_peer_support(Instant::ZERO, false);
                let expecting = peer_sends == PeerSends::Yes;
                if expecting {
                    machine.expect_peer_keepalives(Instant::ZERO, true);
                }
                Some(Box::new(Watchdog {
                    machine,
                    clock,
                    armed: Armed::default(),
                    expecting,
                }))
            }
            _ => None,
        };
        Self {
            inner,
            sleep: None,
            state: Receiver {
                filter: grpc.then(|| FrameFilter::with_encoding(encoding)),
                pending: Bytes::new(),
                stats,
                seen: FilterStats::default(),
                watchdog,
                failed: false,
            },
        }
    }

    /// The stream's counters.
    pub fn stats(&self) -> &KeepaliveStats {
        &self.state.stats
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl Receiver {
    /// Feeds the filter once from `pending`: `Ok(Some)` is a chunk to pass
    /// on, `Ok(None)` means step again (or read more).
    fn step(&mut self) -> Result<Option<Bytes>, Status> {
        let Some(filter) = self.filter.as_mut() else {
            return Ok(Some(std::mem::take(&mut self.pending)));
        };
        let len = self.pending.len();
        let step = match filter.step(&self.pending) {
            Ok(step) => step,
            Err(error) => return Err(self.fail(error)),
        };
        let consumed = step.consumed;
        let out = match step.output {
            // The common case, a chunk of whole application frames: pass the
            // chunk itself on.
            Output::Forward(range) if consumed == len && range == (0..len) => {
                Some(std::mem::take(&mut self.pending))
            }
            Output::Forward(range) => Some(self.pending.slice(range)),
            Output::Held(bytes) => Some(Bytes::copy_from_slice(bytes)),
            Output::Removed | Output::Nothing => None,
        };
        if !self.pending.is_empty() {
            // `consumed <= pending.len()` by the filter's contract; `min`
            // keeps a bug from becoming a panic.
            self.pending.advance(consumed.min(self.pending.len()));
        }
        self.account();
        Ok(out.filter(|bytes| !bytes.is_empty()))
    }

    /// Publishes what the filter saw and feeds the watchdog.
    fn account(&mut self) {
        let Some(filter) = self.filter.as_ref() else {
            return;
        };
        let now_stats = filter.stats();
        if now_stats == self.seen {
            return;
        }
        let seen = std::mem::replace(&mut self.seen, now_stats);
        self.stats.store_filter(now_stats);
        if now_stats.collisions > seen.collisions {
            tracing::warn!(
                target: "inlinekeepalive",
                collisions = now_stats.collisions,
                "received a message that uses field number 100000000, reserved for inline \
                 keepalives, without being one; it was delivered to the application"
            );
        }
        if let Some(watchdog) = self.watchdog.as_deref_mut() {
            let now = now(&watchdog.clock);
            if now_stats.keepalives_removed > seen.keepalives_removed {
                if !watchdog.expecting {
                    watchdog.expecting = true;
                    watchdog.machine.expect_peer_keepalives(now, true);
                }
                watchdog.machine.on_received(now, Classification::Keepalive);
            }
            if now_stats.frames_passed > seen.frames_passed {
                watchdog
                    .machine
                    .on_received(now, Classification::Application);
            }
        }
    }

    /// The end of the inbound body (trailers or end of stream).
    fn finish(&mut self) -> Result<(), Status> {
        if let Some(watchdog) = self.watchdog.as_deref_mut() {
            watchdog.machine.close_receive();
        }
        match self.filter.as_mut().map(FrameFilter::finish) {
            Some(Err(error)) => Err(self.fail(error)),
            _ => Ok(()),
        }
    }

    fn fail(&mut self, error: FrameError) -> Status {
        self.failed = true;
        self.pending = Bytes::new();
        tracing::warn!(target: "inlinekeepalive", %error, "malformed gRPC frame from the peer");
        Status::internal(format!("malformed gRPC frame from the peer: {error}"))
    }

    /// Runs dead-peer detection while the inner body is pending.
    fn poll_watchdog(
        &mut self,
        mut sleep: Pin<&mut Option<Sleep>>,
        cx: &mut Context<'_>,
    ) -> Poll<Status> {
        let Some(watchdog) = self.watchdog.as_deref_mut() else {
            return Poll::Pending;
        };
        loop {
            let now = now(&watchdog.clock);
            if watchdog.machine.poll_timeout().is_some_and(|at| at <= now) {
                watchdog.machine.handle_timeout(now);
            }
            if let Some(Event::PeerTimedOut { silent_for }) = watchdog.machine.poll_event() {
                self.stats.record_peer_timeout();
                self.failed = true;
                tracing::warn!(
                    target: "inlinekeepalive",
                    silent_for_ms = silent_for.as_millis() as u64,
                    "peer sent nothing, not even a keepalive, for longer than the peer timeout"
                );
                return Poll::Ready(Status::unavailable(format!(
                    "inline keepalive: the peer sent nothing for {silent_for:?}, longer than \
                     the peer timeout"
                )));
            }
            let Some(at) = watchdog.machine.poll_timeout() else {
                return Poll::Pending;
            };
            let at = at.max(now.saturating_add(Duration::from_millis(1)));
            match watchdog.armed.poll(sleep.as_mut(), &watchdog.clock, at, cx) {
                Poll::Ready(()) => continue,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<B> Body for FilteredBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let mut this = self.project();
        let state = this.state;
        loop {
            if state.failed {
                return Poll::Ready(None);
            }
            if !state.pending.is_empty() {
                match state.step() {
                    Ok(Some(bytes)) => return Poll::Ready(Some(Ok(Frame::data(bytes)))),
                    Ok(None) => continue,
                    Err(status) => return Poll::Ready(Some(Err(status))),
                }
            }
            match this.inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => state.pending = data,
                    Err(frame) => {
                        // Trailers: the end of the stream.
                        if let Err(status) = state.finish() {
                            return Poll::Ready(Some(Err(status)));
                        }
                        return Poll::Ready(Some(Ok(frame)));
                    }
                },
                Poll::Ready(Some(Err(error))) => {
                    return Poll::Ready(Some(Err(Status::from_error(error.into()))));
                }
                Poll::Ready(None) => {
                    return match state.finish() {
                        Ok(()) => Poll::Ready(None),
                        Err(status) => Poll::Ready(Some(Err(status))),
                    };
                }
                Poll::Pending => {
                    return match state.poll_watchdog(this.sleep.as_mut(), cx) {
                        Poll::Ready(status) => Poll::Ready(Some(Err(status))),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state.failed || (self.state.pending.is_empty() && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        // Removing keepalives can only shorten the body.
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(self.state.pending.len() as u64));
        }
        hint
    }
}

pin_project! {
    /// A gRPC body into which keepalive frames are inserted while it is idle.
    ///
    /// The inner body is always polled first; only when it is pending, stands
    /// at a frame boundary (core [`FrameTracker`]) and the core
    /// [`Keepalive`] machine says a keepalive is due, does this body yield
    /// one [`wire::KEEPALIVE_FRAME`] as its own DATA frame. Nothing is ever
    /// inserted before the peer is known to remove keepalives, inside a
    /// message, or after the inner body ended (so never after trailers).
    ///
    /// Made by the layers.
    pub struct KeepaliveBody<B> {
        #[pin]
        inner: B,
        #[pin]
        sleep: Option<Sleep>,
        state: Sender,
    }
}

impl<B> std::fmt::Debug for KeepaliveBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeepaliveBody")
            .field("active", &self.state.active)
            .field("stats", &self.state.stats)
            .finish_non_exhaustive()
    }
}

struct Sender {
    machine: Keepalive,
    tracker: FrameTracker,
    clock: Clock,
    armed: Armed,
    /// Whether this body may still send keepalives at all.
    active: bool,
    /// Support not known yet: read it from the stats' shared flag (written
    /// by the client's response future) and look again at `recheck_at`.
    watching: bool,
    recheck_at: Option<Instant>,
    interval: Duration,
    stats: KeepaliveStats,
    done: bool,
}

/// What the sender knows of the peer's support when the body is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Support {
    /// Known: send when idle.
    Yes,
    /// Known: never send.
    No,
    /// Learned later through [`KeepaliveStats`]'s shared flag.
    Later,
}

impl<B> KeepaliveBody<B> {
    pub(crate) fn new(
        inner: B,
        config: &Config,
        support: Support,
        stats: KeepaliveStats,
        seed: u64,
    ) -> Self {
        let clock = new_clock();
        let mut machine = Keepalive::new(*config, Instant::ZERO).with_seed(seed);
        match support {
            Support::Yes => machine.set_peer_support(Instant::ZERO, true),
            Support::No => machine.set_peer_support(Instant::ZERO, false),
            Support::Later => {}
        }
        Self {
            inner,
            sleep: None,
            state: Sender {
                machine,
                tracker: FrameTracker::new(),
                clock,
                armed: Armed::default(),
                active: support != Support::No,
                watching: support == Support::Later,
                recheck_at: None,
                interval: config.interval(),
                stats,
                done: false,
            },
        }
    }

    /// The stream's counters.
    pub fn stats(&self) -> &KeepaliveStats {
        &self.state.stats
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl Sender {
    fn on_data(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.machine.on_sent(now(&self.clock));
        if let Err(error) = self.tracker.advance(data) {
            // Not a gRPC stream we can follow: never insert anything into it.
            tracing::debug!(
                target: "inlinekeepalive",
                %error,
                "outbound body is not gRPC-framed; no keepalives on this stream"
            );
            self.active = false;
        }
    }

    fn finish(&mut self) {
        self.done = true;
        self.active = false;
        self.machine.close_send();
    }

    /// Reads the shared support flag while it is unknown.
    fn refresh_support(&mut self, now: Instant) {
        if !self.watching {
            return;
        }
        match self.stats.peer_supports_keepalives() {
            Some(supported) => {
                self.watching = false;
                self.recheck_at = None;
                self.machine.set_peer_support(now, supported);
                if !supported {
                    self.active = false;
                }
                tracing::debug!(
                    target: "inlinekeepalive",
                    supported,
                    "learned whether the peer removes inline keepalives"
                );
            }
            None => {
                if self.recheck_at.is_none_or(|at| at <= now) {
                    self.recheck_at = Some(now.saturating_add(self.interval));
                }
            }
        }
    }

    /// `Ready` when a keepalive must be sent now (already counted).
    fn poll_keepalive(
        &mut self,
        mut sleep: Pin<&mut Option<Sleep>>,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        loop {
            // Mid-frame: the inner body owes the rest of a message and will
            // wake us; a keepalive must wait for the boundary anyway.
            if !self.active || !self.tracker.is_at_boundary() {
                return Poll::Pending;
            }
            let now = now(&self.clock);
            self.refresh_support(now);
            if !self.active {
                return Poll::Pending;
            }
            if self.machine.poll_timeout().is_some_and(|at| at <= now) {
                self.machine.handle_timeout(now);
            }
            if self.machine.poll_keepalive(now) {
                self.stats.add_sent();
                tracing::trace!(target: "inlinekeepalive", "sending an inline keepalive");
                return Poll::Ready(());
            }
            let next = match (self.machine.poll_timeout(), self.recheck_at) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(at) => at,
                    None => return Poll::Pending,
                },
            };
            // Never arm in the past: a deadline the machine did not act on at
            // `now` must not spin.
            let next = next.max(now.saturating_add(Duration::from_millis(1)));
            match self.armed.poll(sleep.as_mut(), &self.clock, next, cx) {
                Poll::Ready(()) => continue,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<B> Body for KeepaliveBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let state = this.state;
        if state.done {
            return Poll::Ready(None);
        }
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if state.active {
                    match frame.data_ref() {
                        Some(data) => state.on_data(data),
                        // Trailers end the body: nothing may follow them.
                        None => state.finish(),
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                state.finish();
                Poll::Ready(Some(Err(error)))
            }
            Poll::Ready(None) => {
                state.finish();
                Poll::Ready(None)
            }
            Poll::Pending => state
                .poll_keepalive(this.sleep.as_mut(), cx)
                .map(|()| Some(Ok(Frame::data(keepalive_frame())))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        // Keepalives can only lengthen the body, by an unknown amount.
        let mut hint = SizeHint::new();
        hint.set_lower(self.inner.size_hint().lower());
        hint
    }
}

/// Whether a `content-type` is gRPC over HTTP/2 (`application/grpc` or
/// `application/grpc+<codec>`), not gRPC-Web or anything else.
pub(crate) fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            let value = value.trim();
            value.len() >= 16
                && value.as_bytes()[..16].eq_ignore_ascii_case(b"application/grpc")
                && matches!(value.as_bytes().get(16), None | Some(b'+' | b';'))
        })
}

/// The stream's `grpc-encoding`, for the filter.
pub(crate) fn encoding(headers: &http::HeaderMap) -> Encoding {
    headers
        .get("grpc-encoding")
        .and_then(|value| value.to_str().ok())
        .map_or(Encoding::Identity, Encoding::from_grpc_encoding)
}

/// Whether the headers carry `wp-inline-keepalives: true`.
pub(crate) fn announces_support(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(wire::METADATA_KEY)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.trim().eq_ignore_ascii_case(wire::METADATA_VALUE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    http::HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn grpc_content_types() {
        for yes in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC",
        ] {
            assert!(is_grpc(&headers(&[("content-type", yes)])), "{yes}");
        }
        for no in [
            "application/grpc-web",
            "application/json",
            "application/grpcx",
            "",
        ] {
            assert!(!is_grpc(&headers(&[("content-type", no)])), "{no}");
        }
        assert!(!is_grpc(&headers(&[])));
    }

    #[test]
    fn announcement_and_encoding() {
        assert!(announces_support(&headers(&[(
            "wp-inline-keepalives",
            "true"
        )])));
        assert!(announces_support(&headers(&[(
            "wp-inline-keepalives",
            " TRUE "
        )])));
        assert!(!announces_support(&headers(&[(
            "wp-inline-keepalives",
            "false"
        )])));
        assert!(!announces_support(&headers(&[])));
        assert_eq!(
            encoding(&headers(&[("grpc-encoding", "gzip")])),
            Encoding::Gzip
        );
        assert_eq!(encoding(&headers(&[])), Encoding::Identity);
    }

    #[test]
    fn the_keepalive_frame_is_static() {
        assert_eq!(&keepalive_frame()[..], &wire::KEEPALIVE_FRAME[..]);
    }
}
