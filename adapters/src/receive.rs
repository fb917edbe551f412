//! The receive half that every receiving wrapper drives: the frame filter and
//! dead-peer detection with its timer. [`KeepaliveReader`](crate::KeepaliveReader),
//! [`KeepaliveStream`](crate::KeepaliveStream) and the tonic body each add only
//! how bytes or messages reach the application.

use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use inlinekeepalive_core::{
    Classification, Encoding, FrameError, FrameFilter, PeerTimedOut, PeerWatchdog, Step,
};
use pin_project_lite::pin_project;

use crate::sleep_slot::SleepSlot;
use crate::timer::Timer;

/// How much work that gives the application nothing (keepalives removed,
/// empty chunks taken) a wrapper does in one poll before it yields to the
/// executor, waking itself at once: a peer that sends nothing but keepalives
/// cannot hold an executor thread.
pub(crate) const POLL_BUDGET: u32 = 64;

/// Counters of a receiving wrapper ([`KeepaliveReader`](crate::KeepaliveReader),
/// [`KeepaliveStream`](crate::KeepaliveStream)). They saturate.
///
/// ```
/// use inlinekeepalive::ReceiveStats;
/// assert_eq!(ReceiveStats::default().keepalives_removed, 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ReceiveStats {
    /// Keepalives received and removed.
    pub keepalives_removed: u64,
    /// Collisions delivered: application messages that use the reserved
    /// field number 100000000 without being keepalives. Non-zero means a
    /// schema clashes with the keepalive protocol. Only messages short enough
    /// to be keepalives are examined.
    pub collisions: u64,
    /// Messages delivered to the application, collisions included.
    pub messages_passed: u64,
    /// Whether the peer was reported silent ([`PeerTimedOut`]), which ended
    /// the stream.
    pub peer_timed_out: bool,
}

/// When dead-peer detection starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Watch {
    /// Never.
    Off,
    /// At the first keepalive removed, with this timeout: for a peer that
    /// may or may not send keepalives (a server cannot know whether its
    /// client does). Only the tonic server layer watches this way.
    #[cfg_attr(not(feature = "tonic"), allow(dead_code))]
    AfterFirstKeepalive(Duration),
}

pin_project! {
    /// The receive half of a stream.
    ///
    /// Its callers report every chunk that arrives
    /// ([`on_bytes`](Self::on_bytes)): any byte proves the peer alive. They
    /// filter byte streams with [`step`](Self::step) and message streams with
    /// [`classify_message`](Self::classify_message), poll
    /// [`poll_silence`](Self::poll_silence) while the transport is pending,
    /// and call [`finish`](Self::finish) at its end.
    pub(crate) struct ReceiveHalf<T: Timer> {
        filter: FrameFilter,
        watchdog: Option<PeerWatchdog>,
        watch: Watch,
        #[pin]
        slot: SleepSlot<T>,
    }
}

impl<T: Timer> ReceiveHalf<T> {
    /// A half that filters a stream of `encoding` and watches no peer.
    pub(crate) fn new(timer: T, encoding: Encoding) -> Self {
        Self {
            filter: FrameFilter::with_encoding(encoding),
            watchdog: None,
            watch: Watch::Off,
            slot: SleepSlot::new(timer),
        }
    }

    /// The same half on `timer`. The filter and its counters carry over, so
    /// this can happen after bytes were read: a frame half read stays half
    /// read. Any watch is dropped; start one with a `watch_*` method.
    pub(crate) fn with_timer<U: Timer>(self, timer: U) -> ReceiveHalf<U> {
        ReceiveHalf {
            filter: self.filter,
            watchdog: None,
            watch: Watch::Off,
            slot: SleepSlot::new(timer),
        }
    }

    /// Watches the peer from now: silent once nothing arrived for `timeout`.
    pub(crate) fn watch_now(mut self, timeout: Duration) -> Self {
        self.watchdog = Some(PeerWatchdog::new(timeout, self.slot.now()));
        self
    }

    /// Watches the peer from its first keepalive on.
    #[cfg(feature = "tonic")]
    pub(crate) fn watch_after_first_keepalive(mut self, timeout: Duration) -> Self {
        self.watch = Watch::AfterFirstKeepalive(timeout);
        self
    }

    /// Sets the stream's encoding (see [`FrameFilter::set_encoding`]).
    pub(crate) fn set_encoding(&mut self, encoding: Encoding) {
        self.filter.set_encoding(encoding);
    }

    /// Bytes arrived from the peer: it is alive, whatever they turn out to
    /// be (part of a large message, a keepalive, a broken frame).
    #[inline]
    pub(crate) fn on_bytes(self: Pin<&mut Self>) {
        let this = self.project();
        if let Some(watchdog) = this.watchdog {
            watchdog.on_received(this.slot.now());
        }
    }

    /// [`FrameFilter::step`], and the start of a watch that waited for the
    /// first keepalive.
    #[inline]
    pub(crate) fn step<'a>(self: Pin<&'a mut Self>, input: &[u8]) -> Result<Step<'a>, FrameError> {
        let this = self.project();
        let step = this.filter.step(input)?;
        if matches!(step.output, inlinekeepalive_core::Output::Removed) {
            start_watch(this.watch, this.watchdog, &this.slot);
        }
        Ok(step)
    }

    /// Classifies and counts one whole message, inflating a compressed one
    /// per the stream's encoding (see [`FrameFilter::classify_frame`]).
    pub(crate) fn classify_message(
        self: Pin<&mut Self>,
        compressed: bool,
        message: &[u8],
    ) -> Classification {
        let this = self.project();
        let class = this.filter.classify_frame(compressed, message);
        if class == Classification::Keepalive {
            start_watch(this.watch, this.watchdog, &this.slot);
        }
        class
    }

    /// The filter holds a short frame back: how many bytes, and how many more
    /// complete it.
    pub(crate) fn held(&self) -> (usize, usize) {
        (self.filter.held_len(), self.filter.held_needs())
    }

    /// Waits for a silence of the peer: `Ready` once, when dead-peer
    /// detection finds one (the caller then ends the stream). Pending for
    /// ever when nothing is watched.
    pub(crate) fn poll_silence(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<PeerTimedOut> {
        let mut this = self.project();
        let Some(watchdog) = this.watchdog.as_mut() else {
            return Poll::Pending;
        };
        loop {
            if let Some(silence) = watchdog.poll_event() {
                this.slot.as_mut().release();
                return Poll::Ready(silence);
            }
            let now = ready!(this.slot.as_mut().poll(cx, watchdog.poll_timeout()));
            watchdog.handle_timeout(now);
            // Re-arm from the instant just read: no second read.
            this.slot.as_mut().arm(now, watchdog.poll_timeout());
        }
    }

    /// The end of the peer's stream: stop watching, release the timer, and
    /// say whether it ended at a frame boundary.
    pub(crate) fn finish(self: Pin<&mut Self>) -> Result<(), FrameError> {
        let this = self.project();
        if let Some(watchdog) = this.watchdog {
            watchdog.close();
        }
        this.slot.release();
        this.filter.finish()
    }

    pub(crate) fn stats(&self) -> ReceiveStats {
        let filter = self.filter.stats();
        ReceiveStats {
            keepalives_removed: filter.keepalives_removed,
            collisions: filter.collisions,
            messages_passed: filter.frames_passed,
            peer_timed_out: self
                .watchdog
                .as_ref()
                .is_some_and(|watchdog| watchdog.timeouts() > 0),
        }
    }

    /// Whether dead-peer detection is on (for `Debug`).
    fn is_watching(&self) -> bool {
        self.watchdog.is_some()
    }
}

/// Starts a watch that waited for the first keepalive.
fn start_watch<T: Timer>(
    watch: &mut Watch,
    watchdog: &mut Option<PeerWatchdog>,
    slot: &Pin<&mut SleepSlot<T>>,
) {
    if let Watch::AfterFirstKeepalive(timeout) = *watch {
        *watch = Watch::Off;
        *watchdog = Some(PeerWatchdog::new(timeout, slot.now()));
    }
}

impl<T: Timer> std::fmt::Debug for ReceiveHalf<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiveHalf")
            .field("filter", &self.filter)
            .field("watching", &self.is_watching())
            .finish_non_exhaustive()
    }
}
