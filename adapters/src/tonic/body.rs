//! [`KeepaliveBody`]: a gRPC HTTP body with the peer's keepalives removed
//! (inbound) or keepalives inserted while idle (outbound).

use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::Status;

use super::KeepaliveStats;
use crate::core::{wire, Config, Encoding, FrameError, Output};
use crate::receive::{ReceiveHalf, POLL_BUDGET};
use crate::send::SendHalf;
use crate::timer::TokioTimer;

/// The boxed error of tower and tonic.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The keepalive frame as a `Bytes` that points at static memory: sending
/// one allocates nothing.
fn keepalive_frame() -> Bytes {
    static FRAME: [u8; wire::KEEPALIVE_FRAME.len()] = wire::KEEPALIVE_FRAME;
    Bytes::from_static(&FRAME)
}

pin_project! {
    /// A gRPC body seen through the keepalive layers: inbound, the peer's
    /// keepalive frames are removed before tonic decodes a single message;
    /// outbound, a keepalive frame is inserted whenever the body was idle for
    /// the interval and the peer removes keepalives.
    ///
    /// Made by the layers for every body they see; a body that is not gRPC
    /// (by its `content-type`: only `application/grpc` and
    /// `application/grpc+<codec>` are) passes through untouched.
    ///
    /// **Inbound**, frames are classified as they arrive, in chunks of any
    /// size, without copying application bytes (only a short frame split
    /// across two chunks is held, at most 69 bytes). A compressed keepalive
    /// is recognised too when the stream's `grpc-encoding` is `gzip` or
    /// `deflate`. Errors become a [`Status`], which tonic hands to the
    /// handler or the caller as is:
    /// - a malformed frame (a compressed flag other than 0 or 1, or a stream
    ///   that ends inside a frame): `Status::internal` naming the problem;
    /// - a silent peer ([dead-peer detection](crate#dead-peer-detection)):
    ///   `Status::unavailable`, and [`KeepaliveStats::peer_timed_out`].
    ///
    /// **Outbound**, the inner body is always polled first; only when it is
    /// pending and stands at a frame boundary does this body yield one
    /// [`wire::KEEPALIVE_FRAME`] as its own DATA frame. Nothing is ever
    /// inserted before the peer is known to remove keepalives, inside a
    /// message, or after the inner body ended (so never after trailers).
    pub struct KeepaliveBody<B> {
        #[pin]
        inner: B,
        #[pin]
        direction: Direction,
    }
}

pin_project! {
    #[project = DirectionProj]
    enum Direction {
        Inbound {
            #[pin]
            half: ReceiveHalf<TokioTimer>,
            // The rest of the current DATA chunk, not yet filtered.
            pending: Bytes,
            // Collisions already reported (a warning for each new one).
            seen_collisions: u64,
            stats: KeepaliveStats,
            failed: bool,
        },
        Outbound {
            #[pin]
            half: SendHalf<TokioTimer>,
            stats: KeepaliveStats,
            // May still send keepalives.
            active: bool,
            // The peer's support is learned later, through `stats`.
            learning: bool,
            done: bool,
        },
        Untouched,
    }
}

/// What an outbound body knows of the peer's support when it is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Support {
    /// Known: send when idle.
    Yes,
    /// Learned later, through [`KeepaliveStats`] (a client waiting for the
    /// response headers).
    Later,
}

/// When an inbound body starts watching its peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PeerSends {
    /// Known to send keepalives from the start (a client whose server
    /// announced support).
    Yes,
    /// Might: watch once the first keepalive arrives (a server).
    Maybe,
}

impl<B> KeepaliveBody<B> {
    /// A body passed through as it is.
    pub(crate) fn untouched(inner: B) -> Self {
        Self {
            inner,
            direction: Direction::Untouched,
        }
    }

    /// An inbound gRPC body, filtered.
    pub(crate) fn inbound(
        inner: B,
        encoding: Encoding,
        config: &Config,
        peer_sends: PeerSends,
        stats: KeepaliveStats,
    ) -> Self {
        let mut half = ReceiveHalf::new(TokioTimer, encoding);
        if let Some(timeout) = config.peer_timeout() {
            half = match peer_sends {
                PeerSends::Yes => half.watch_now(timeout),
                PeerSends::Maybe => half.watch_after_first_keepalive(timeout),
            };
        }
        Self {
            inner,
            direction: Direction::Inbound {
                half,
                pending: Bytes::new(),
                seen_collisions: 0,
                stats,
                failed: false,
            },
        }
    }

    /// An outbound gRPC body, with keepalives when idle.
    pub(crate) fn outbound(
        inner: B,
        config: &Config,
        support: Support,
        stats: KeepaliveStats,
        seed: u64,
    ) -> Self {
        let mut half = SendHalf::new(TokioTimer, *config).with_seed(seed);
        if support == Support::Yes {
            half.set_peer_support_unpinned(true);
        }
        Self {
            inner,
            direction: Direction::Outbound {
                half,
                stats,
                active: true,
                learning: support == Support::Later,
                done: false,
            },
        }
    }

    /// The stream's counters; `None` for a body passed through untouched.
    pub fn stats(&self) -> Option<&KeepaliveStats> {
        match &self.direction {
            Direction::Inbound { stats, .. } | Direction::Outbound { stats, .. } => Some(stats),
            Direction::Untouched => None,
        }
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B> fmt::Debug for KeepaliveBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let direction = match &self.direction {
            Direction::Inbound { .. } => "inbound",
            Direction::Outbound { .. } => "outbound",
            Direction::Untouched => "untouched",
        };
        f.debug_struct("KeepaliveBody")
            .field("direction", &direction)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<B> Body for KeepaliveBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.project();
        match this.direction.project() {
            DirectionProj::Inbound {
                half,
                pending,
                seen_collisions,
                stats,
                failed,
            } => poll_inbound(
                this.inner,
                half,
                pending,
                seen_collisions,
                stats,
                failed,
                cx,
            ),
            DirectionProj::Outbound {
                half,
                stats,
                active,
                learning,
                done,
            } => poll_outbound(this.inner, half, stats, active, learning, done, cx),
            DirectionProj::Untouched => this
                .inner
                .poll_frame(cx)
                .map(|frame| frame.map(|result| result.map_err(|e| Status::from_error(e.into())))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.direction {
            Direction::Inbound {
                pending, failed, ..
            } => *failed || (pending.is_empty() && self.inner.is_end_stream()),
            Direction::Outbound { done, .. } => *done || self.inner.is_end_stream(),
            Direction::Untouched => self.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        match &self.direction {
            Direction::Inbound { pending, .. } => {
                // Removing keepalives can only shorten the body.
                let mut hint = SizeHint::new();
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper.saturating_add(pending.len() as u64));
                }
                hint
            }
            Direction::Outbound { .. } => {
                // Keepalives can only lengthen it, by an unknown amount.
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower());
                hint
            }
            Direction::Untouched => inner,
        }
    }
}

/// An inbound body's poll: filter what arrives, watch the peer while
/// nothing does.
fn poll_inbound<B>(
    mut inner: Pin<&mut B>,
    mut half: Pin<&mut ReceiveHalf<TokioTimer>>,
    pending: &mut Bytes,
    seen_collisions: &mut u64,
    stats: &KeepaliveStats,
    failed: &mut bool,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, Status>>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    // Work done in this poll with nothing to return yet: each filter step
    // that yielded nothing (a keepalive removed, bytes held back) and each
    // DATA frame taken from the inner body. Counting the frames too bounds a
    // peer that sends only empty DATA frames, which no filter step sees.
    let mut spent = 0;
    loop {
        if *failed {
            return Poll::Ready(None);
        }
        if spent >= POLL_BUDGET {
            // Nothing for the caller so far: let the executor run others.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if !pending.is_empty() {
            let step = step(half.as_mut(), pending);
            publish(&half, seen_collisions, stats);
            match step {
                Ok(Some(bytes)) => return Poll::Ready(Some(Ok(Frame::data(bytes)))),
                Ok(None) => {
                    spent += 1;
                    continue;
                }
                Err(error) => return Poll::Ready(Some(Err(malformed(pending, failed, error)))),
            }
        }
        match inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    spent += 1;
                    if !data.is_empty() {
                        // Any byte proves the peer alive, a whole message or not.
                        half.as_mut().on_bytes();
                    }
                    *pending = data;
                }
                Err(trailers) => {
                    // Trailers: the end of the stream.
                    if let Err(error) = half.as_mut().finish() {
                        return Poll::Ready(Some(Err(malformed(pending, failed, error))));
                    }
                    return Poll::Ready(Some(Ok(trailers)));
                }
            },
            Poll::Ready(Some(Err(error))) => {
                return Poll::Ready(Some(Err(Status::from_error(error.into()))));
            }
            Poll::Ready(None) => {
                return match half.as_mut().finish() {
                    Ok(()) => Poll::Ready(None),
                    Err(error) => Poll::Ready(Some(Err(malformed(pending, failed, error)))),
                };
            }
            Poll::Pending => {
                let silence = ready!(half.as_mut().poll_silence(cx));
                *failed = true;
                stats.record_peer_timeout();
                tracing::warn!(
                    target: "inlinekeepalive",
                    silent_for_ms = silence.silent_for.as_millis() as u64,
                    "peer sent nothing, not even a keepalive, for longer than the peer timeout"
                );
                return Poll::Ready(Some(Err(Status::unavailable(format!(
                    "inline keepalive: {silence}, longer than the peer timeout"
                )))));
            }
        }
    }
}

/// Feeds the filter once from `pending`: `Ok(Some)` is a chunk to pass on,
/// `Ok(None)` a keepalive removed or bytes held back.
fn step(
    half: Pin<&mut ReceiveHalf<TokioTimer>>,
    pending: &mut Bytes,
) -> Result<Option<Bytes>, FrameError> {
    let len = pending.len();
    let step = half.step(pending)?;
    let consumed = step.consumed;
    let out = match step.output {
        // The common case, a chunk of whole application frames: pass the
        // chunk itself on.
        Output::Forward(range) if consumed == len && range == (0..len) => {
            Some(std::mem::take(pending))
        }
        Output::Forward(range) => Some(pending.slice(range)),
        Output::Held(bytes) => Some(Bytes::copy_from_slice(bytes)),
        Output::Removed | Output::Nothing => None,
    };
    // `consumed <= pending.len()` by the filter's contract; `min` keeps a bug
    // from becoming a panic.
    pending.advance(consumed.min(pending.len()));
    Ok(out.filter(|bytes| !bytes.is_empty()))
}

/// Publishes the receive counters to the stream's [`KeepaliveStats`], and
/// warns of each new collision.
fn publish(half: &ReceiveHalf<TokioTimer>, seen_collisions: &mut u64, stats: &KeepaliveStats) {
    let now = half.stats();
    stats.store_received(now);
    if now.collisions > *seen_collisions {
        *seen_collisions = now.collisions;
        tracing::warn!(
            target: "inlinekeepalive",
            collisions = now.collisions,
            "received a message that uses field number 100000000, reserved for inline \
             keepalives, without being one; it was delivered to the application"
        );
    }
}

fn malformed(pending: &mut Bytes, failed: &mut bool, error: FrameError) -> Status {
    *failed = true;
    *pending = Bytes::new();
    tracing::warn!(target: "inlinekeepalive", %error, "malformed gRPC frame from the peer");
    Status::internal(format!("malformed gRPC frame from the peer: {error}"))
}

/// An outbound body's poll: the inner body first, a keepalive while it is
/// pending.
fn poll_outbound<B>(
    inner: Pin<&mut B>,
    mut half: Pin<&mut SendHalf<TokioTimer>>,
    stats: &KeepaliveStats,
    active: &mut bool,
    learning: &mut bool,
    done: &mut bool,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, Status>>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    if *done {
        return Poll::Ready(None);
    }
    match inner.poll_frame(cx) {
        Poll::Ready(Some(Ok(frame))) => {
            if *active {
                match frame.data_ref() {
                    Some(data) if !data.is_empty() => {
                        if let Err(error) = half.as_mut().on_bytes_sent(data, &mut None) {
                            // Not a gRPC stream we can follow: never insert
                            // anything into it.
                            tracing::debug!(
                                target: "inlinekeepalive",
                                %error,
                                "outbound body is not gRPC-framed; no keepalives on this stream"
                            );
                            *active = false;
                        }
                    }
                    Some(_) => {}
                    // Trailers end the body: nothing may follow them.
                    None => stop(half.as_mut(), active),
                }
            }
            Poll::Ready(Some(Ok(frame)))
        }
        Poll::Ready(Some(Err(error))) => {
            stop(half.as_mut(), active);
            Poll::Ready(Some(Err(Status::from_error(error.into()))))
        }
        Poll::Ready(None) => {
            stop(half.as_mut(), active);
            *done = true;
            Poll::Ready(None)
        }
        Poll::Pending => {
            ready!(poll_keepalive(half, stats, active, learning, cx));
            Poll::Ready(Some(Ok(Frame::data(keepalive_frame()))))
        }
    }
}

fn stop(half: Pin<&mut SendHalf<TokioTimer>>, active: &mut bool) {
    if *active {
        *active = false;
        half.close();
    }
}

/// `Ready` when a keepalive must be sent now (already counted).
fn poll_keepalive(
    mut half: Pin<&mut SendHalf<TokioTimer>>,
    stats: &KeepaliveStats,
    active: &mut bool,
    learning: &mut bool,
    cx: &mut Context<'_>,
) -> Poll<()> {
    if *learning {
        let Some(supported) = stats.poll_peer_support(cx.waker()) else {
            return Poll::Pending;
        };
        *learning = false;
        half.as_mut().set_peer_support(supported);
        tracing::debug!(
            target: "inlinekeepalive",
            supported,
            "learned whether the peer removes inline keepalives"
        );
    }
    let mut now = None;
    loop {
        if !*active || half.peer_support() == Some(false) {
            return Poll::Pending;
        }
        ready!(half.as_mut().poll_due(cx, &mut now));
        if half.as_mut().take_keepalive(&mut now) {
            stats.add_sent();
            tracing::trace!(target: "inlinekeepalive", "sending an inline keepalive");
            return Poll::Ready(());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    use super::*;

    /// A peer's request body: `empty` zero-length DATA frames (which h2
    /// passes on as empty chunks), then `message`; counts its polls.
    struct EmptyFrames {
        empty: usize,
        message: Option<Bytes>,
        polled: Arc<AtomicUsize>,
    }

    impl Body for EmptyFrames {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            self.polled.fetch_add(1, Ordering::SeqCst);
            if self.empty > 0 {
                self.empty -= 1;
                return Poll::Ready(Some(Ok(Frame::data(Bytes::new()))));
            }
            Poll::Ready(self.message.take().map(|m| Ok(Frame::data(m))))
        }
    }

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn empty_data_frames_count_toward_the_per_poll_budget() {
        const EMPTY: usize = 10_000;
        let message = Bytes::from_static(&[0, 0, 0, 0, 1, 0x2a]);
        let polled = Arc::new(AtomicUsize::new(0));
        let inner = EmptyFrames {
            empty: EMPTY,
            message: Some(message.clone()),
            polled: polled.clone(),
        };
        let body = KeepaliveBody::inbound(
            inner,
            Encoding::Identity,
            &Config::default(),
            PeerSends::Maybe,
            KeepaliveStats::new(),
        );
        let mut body = std::pin::pin!(body);
        let wakes = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);

        // The first poll stops within the budget and asks to be polled again
        // at once, rather than draining every empty frame in one go.
        assert!(body.as_mut().poll_frame(&mut cx).is_pending());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        let budget = POLL_BUDGET as usize;
        assert!(polled.load(Ordering::SeqCst) <= budget);

        // Polled again, as the wake-up asks, it gets through to the message.
        let mut polls = 1;
        let data = loop {
            polls += 1;
            match body.as_mut().poll_frame(&mut cx) {
                Poll::Pending => assert_eq!(wakes.0.load(Ordering::SeqCst), polls),
                Poll::Ready(Some(Ok(frame))) => break frame.into_data().unwrap(),
                Poll::Ready(other) => panic!("expected the message, got {other:?}"),
            }
        };
        assert_eq!(data, message);
        assert!(polls >= EMPTY / budget, "{polls} polls");
        assert!(matches!(
            body.as_mut().poll_frame(&mut cx),
            Poll::Ready(None)
        ));
    }
}
