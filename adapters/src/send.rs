//! The send half that every sending wrapper drives: the frame tracker, the
//! keepalive schedule and its timer. [`KeepaliveWriter`](crate::KeepaliveWriter),
//! [`KeepaliveSink`](crate::KeepaliveSink) and the tonic body each add only
//! how a keepalive is written to their transport.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use inlinekeepalive_core::{Config, FrameError, FrameTracker, Instant, Keepalive};
use pin_project_lite::pin_project;

use crate::sleep_slot::SleepSlot;
use crate::timer::Timer;

/// Counters of a sending wrapper ([`KeepaliveWriter`](crate::KeepaliveWriter),
/// [`KeepaliveSink`](crate::KeepaliveSink)). They saturate.
///
/// ```
/// use inlinekeepalive::SendStats;
/// let stats = SendStats::default();
/// assert_eq!((stats.keepalives_sent, stats.messages_sent), (0, 0));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct SendStats {
    /// Keepalives handed to the transport.
    pub keepalives_sent: u64,
    /// Application messages handed to the transport: gRPC frames whose
    /// header was written (the last may still be incomplete) for a byte
    /// stream, items for a message sink.
    pub messages_sent: u64,
}

/// How a send half knows where a keepalive may go in: a byte stream follows
/// its frame headers ([`FrameTracker`]); a message sink is always between
/// messages ([`Messages`]). Either counts the application's messages.
pub(crate) trait Framing: Default {
    fn is_at_boundary(&self) -> bool;
    fn messages(&self) -> u64;
}

impl Framing for FrameTracker {
    #[inline]
    fn is_at_boundary(&self) -> bool {
        FrameTracker::is_at_boundary(self)
    }

    fn messages(&self) -> u64 {
        self.frames()
    }
}

/// The framing of a message sink: every message is whole, so a keepalive may
/// go in between any two.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Messages(u64);

impl Framing for Messages {
    #[inline]
    fn is_at_boundary(&self) -> bool {
        true
    }

    fn messages(&self) -> u64 {
        self.0
    }
}

pin_project! {
    /// The send half of a stream: the keepalive schedule, its timer, and the
    /// framing that says where a keepalive may go in.
    ///
    /// Its callers follow one protocol: report what they send
    /// ([`on_bytes_sent`](Self::on_bytes_sent),
    /// [`on_message_sent`](Self::on_message_sent)); wait with
    /// [`poll_due`](Self::poll_due) while idle; and whenever they could
    /// write a whole keepalive at once, ask
    /// [`take_keepalive`](Self::take_keepalive), which commits them to write
    /// one when it says `true`.
    pub(crate) struct SendHalf<T: Timer, F = FrameTracker> {
        machine: Keepalive,
        framing: F,
        #[pin]
        slot: SleepSlot<T>,
        // The machine may hold a due keepalive (after `handle_timeout` or
        // `set_peer_support`), until the next `take_keepalive`.
        maybe_due: bool,
    }
}

impl<T: Timer, F: Framing> SendHalf<T, F> {
    pub(crate) fn new(timer: T, config: Config) -> Self {
        let slot = SleepSlot::new(timer);
        Self {
            machine: Keepalive::new(config, slot.now()),
            framing: F::default(),
            slot,
            maybe_due: false,
        }
    }

    /// This half with its jitter seeded (see [`Keepalive::with_seed`]).
    pub(crate) fn with_seed(self, seed: u64) -> Self {
        Self {
            machine: self.machine.with_seed(seed),
            ..self
        }
    }

    /// Whether the peer removes keepalives; `false` is final.
    pub(crate) fn set_peer_support(self: Pin<&mut Self>, supported: bool) {
        let this = self.project();
        this.machine.set_peer_support(this.slot.now(), supported);
        // Due at once only under `Policy::Fixed`; otherwise the timer says.
        *this.maybe_due = this.machine.is_due();
    }

    /// [`set_peer_support`](Self::set_peer_support) on a half that is not
    /// pinned yet (the wrappers' builders).
    pub(crate) fn set_peer_support_unpinned(&mut self, supported: bool) {
        self.machine.set_peer_support(self.slot.now(), supported);
        self.maybe_due = self.machine.is_due();
    }

    /// What the schedule knows of the peer's support.
    #[cfg(feature = "tonic")]
    pub(crate) fn peer_support(&self) -> Option<bool> {
        self.machine.peer_support()
    }

    /// Whether a keepalive may go in now: the stream stands at a frame
    /// boundary (a message stream always does).
    pub(crate) fn is_at_boundary(&self) -> bool {
        self.framing.is_at_boundary()
    }

    /// Waits on the timer: `Ready` when a keepalive may be due and the stream
    /// stands at a frame boundary, so [`take_keepalive`](Self::take_keepalive)
    /// should be asked. The timer runs mid-frame too (its wake-ups date the
    /// writes, see [`Keepalive::on_sent_with`]). `now` receives the instant
    /// the timer fired, for `take_keepalive`: one clock read per keepalive.
    pub(crate) fn poll_due(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        now: &mut Option<Instant>,
    ) -> Poll<()> {
        let this = self.project();
        if *this.maybe_due && this.framing.is_at_boundary() {
            return Poll::Ready(());
        }
        let fired = ready!(this.slot.poll(cx, this.machine.poll_timeout()));
        this.machine.handle_timeout(fired);
        *this.maybe_due = true;
        *now = Some(fired);
        Poll::Ready(())
    }

    /// Whether to write a keepalive now. The caller MUST ask only when it can
    /// start a whole keepalive at once (transport ready), and on `true` MUST
    /// write it: it counts as sent. Re-arms the timer either way.
    pub(crate) fn take_keepalive(self: Pin<&mut Self>, now: &mut Option<Instant>) -> bool {
        let this = self.project();
        if !*this.maybe_due || !this.framing.is_at_boundary() {
            return false;
        }
        *this.maybe_due = false;
        let at = *now.get_or_insert_with(|| this.slot.now());
        let sent = this.machine.poll_keepalive(at);
        this.slot.arm(at, this.machine.poll_timeout());
        sent
    }

    /// Whether a keepalive is due right now, by the clock rather than by the
    /// timer: for a caller that sends one along with its own work (a sink's
    /// `poll_flush`) and whose timer may not have been polled.
    pub(crate) fn is_due_now(self: Pin<&mut Self>) -> bool {
        let this = self.project();
        if let Some(deadline) = this.machine.poll_timeout() {
            let now = this.slot.now();
            if deadline <= now {
                this.machine.handle_timeout(now);
                *this.maybe_due = true;
            }
        }
        *this.maybe_due && this.machine.is_due()
    }

    /// No keepalive ever again; the timer is released.
    pub(crate) fn close(self: Pin<&mut Self>) {
        let this = self.project();
        this.machine.close();
        *this.maybe_due = false;
        this.slot.release();
    }

    /// Whether a runtime timer is held right now.
    pub(crate) fn holds_timer(&self) -> bool {
        self.slot.is_allocated()
    }

    pub(crate) fn stats(&self) -> SendStats {
        SendStats {
            keepalives_sent: self.machine.keepalives_sent(),
            messages_sent: self.framing.messages(),
        }
    }
}

impl<T: Timer> SendHalf<T, FrameTracker> {
    /// Application bytes of a gRPC byte stream were handed to the transport.
    /// `now` is the instant of this poll if it was read already; it is read
    /// (and filled in) only if the schedule needs it.
    ///
    /// # Errors
    /// The bytes break the gRPC framing: the tracker is poisoned, and no
    /// keepalive may ever go into this stream.
    pub(crate) fn on_bytes_sent(
        self: Pin<&mut Self>,
        bytes: &[u8],
        now: &mut Option<Instant>,
    ) -> Result<(), FrameError> {
        let this = self.project();
        let framing = this.framing.advance(bytes);
        record_sent(this.machine, &this.slot, this.maybe_due, now);
        framing
    }
}

impl<T: Timer> SendHalf<T, Messages> {
    /// An application message was handed to a message transport.
    pub(crate) fn on_message_sent(self: Pin<&mut Self>, now: &mut Option<Instant>) {
        let this = self.project();
        this.framing.0 = this.framing.0.saturating_add(1);
        record_sent(this.machine, &this.slot, this.maybe_due, now);
    }
}

/// Reports a send to the schedule, which reads the clock only for the first
/// send after a quiet spell and every 64th in a row ([`Keepalive::on_sent_with`]).
#[inline]
fn record_sent<T: Timer>(
    machine: &mut Keepalive,
    slot: &Pin<&mut SleepSlot<T>>,
    maybe_due: &mut bool,
    now: &mut Option<Instant>,
) {
    let Some(at) = machine.on_sent_with(|| *now.get_or_insert_with(|| slot.now())) else {
        return;
    };
    // A sampling period may be over already. One that started (its end may
    // be earlier than the sleep) needs no re-arm here: the next `poll_due`
    // sees the new deadline. Arming now would create the sleep, a runtime
    // timer entry, on the first write of every stream, even one that is
    // only ever written to.
    if machine
        .poll_timeout()
        .is_some_and(|deadline| deadline <= at)
    {
        machine.handle_timeout(at);
        *maybe_due = true;
    }
}

impl<T: Timer + std::fmt::Debug, F: std::fmt::Debug> std::fmt::Debug for SendHalf<T, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendHalf")
            .field("machine", &self.machine)
            .field("framing", &self.framing)
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}
