//! One resettable sleep per wrapped stream, kept in step with the core's
//! deadline (STYLE C7): re-armed only when the deadline moves, and checked
//! against the clock rather than trusted.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use inlinekeepalive_core::Instant;
use pin_project_lite::pin_project;

use crate::clock::Clock;
use crate::timer::Timer;

/// What the sleep is set to, and whether the task is registered on it,
/// packed into one `u64` (8 bytes instead of an enum's 16):
///
/// - `OFF` (`u64::MAX`): no deadline, the sleep (if any) is ignored;
/// - `at` (top bit clear): *set* for `at` and not polled since: the sleep
///   decides (reading its own clock) whether `at` has come;
/// - `at | WAITING` (top bit set): *waiting*: set for `at` and pending when
///   last polled, so the task is registered on it: the next poll is most
///   likely its wake-up, and one clock read decides.
///
/// A deadline that does not fit in 63 bits (over 292,000 years from the
/// origin) is stored as `OFF`: it then never matches, so the sleep is reset
/// and the clock read on every poll, which is correct, only slower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Armed(u64);

const WAITING: u64 = 1 << 63;

impl Armed {
    const OFF: Self = Self(u64::MAX);

    #[inline]
    fn set(at: Instant) -> Self {
        let micros = at.as_micros();
        if micros & WAITING == 0 {
            Self(micros)
        } else {
            Self::OFF
        }
    }

    #[inline]
    fn waiting(at: Instant) -> Self {
        let micros = at.as_micros();
        if micros & WAITING == 0 {
            Self(micros | WAITING)
        } else {
            Self::OFF
        }
    }

    /// Set (not yet polled) for exactly `at`.
    #[inline]
    fn is_set_for(self, at: Instant) -> bool {
        let micros = at.as_micros();
        micros & WAITING == 0 && self.0 == micros
    }

    /// Waiting for exactly `at`.
    #[inline]
    fn is_waiting_for(self, at: Instant) -> bool {
        let micros = at.as_micros();
        micros & WAITING == 0 && self.0 == micros | WAITING
    }

    /// Set or waiting for exactly `at`.
    #[inline]
    fn is_for(self, at: Instant) -> bool {
        let micros = at.as_micros();
        micros & WAITING == 0 && self.0 & !WAITING == micros
    }

    fn at(self) -> Option<Instant> {
        (self != Self::OFF).then(|| Instant::from_micros(self.0 & !WAITING))
    }
}

pin_project! {
    /// The sleep of one wrapped stream.
    ///
    /// The sleep is stored inline (no allocation of its own), created the
    /// first time a deadline is armed and dropped by
    /// [`release`](Self::release) or with the stream. The wrappers are
    /// therefore `Unpin` exactly when the timer's sleep is: every timer of
    /// this crate has an `Unpin` sleep (tokio's, which is not, is boxed by
    /// `TokioTimer`).
    ///
    /// Clock reads: one per wake-up of the sleep (the instant is handed out
    /// with `Ready` and reused by the caller), none to re-arm after it
    /// ([`arm`](Self::arm) takes that instant), none to re-poll a sleep that
    /// was just armed (the sleep checks its own deadline).
    ///
    /// Core time is the timer's time relative to
    /// [`Timer::origin`] (by default one origin for the whole process), so
    /// the slot stores no origin of its own.
    pub(crate) struct SleepSlot<T: Timer> {
        #[pin]
        sleep: Option<T::Sleep>,
        timer: T,
        armed: Armed,
    }
}

/// The clock of `timer`'s time.
#[inline]
fn clock<T: Timer>(timer: &T) -> Clock {
    Clock::new(timer.origin())
}

/// The current core time of `timer`.
#[inline]
fn now<T: Timer>(timer: &T) -> Instant {
    clock(timer).to_core(timer.now())
}

impl<T: Timer> SleepSlot<T> {
    /// A slot with no sleep yet.
    pub(crate) fn new(timer: T) -> Self {
        Self {
            sleep: None,
            timer,
            armed: Armed::OFF,
        }
    }

    /// The current core time.
    #[inline]
    pub(crate) fn now(&self) -> Instant {
        now(&self.timer)
    }

    /// Whether a sleep is allocated (for tests of release on drop/close).
    pub(crate) fn is_allocated(&self) -> bool {
        self.sleep.is_some()
    }

    /// Arms the sleep for `next` and waits for it.
    ///
    /// Returns `Ready(now)` once the clock has reached `next`, whatever the
    /// sleep says; `Pending` with the task registered on the sleep otherwise,
    /// and `Pending` without any registration when `next` is `None`.
    #[inline]
    pub(crate) fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        next: Option<Instant>,
    ) -> Poll<Instant> {
        let mut this = self.project();
        let Some(at) = next else {
            *this.armed = Armed::OFF;
            return Poll::Pending;
        };
        if this.armed.is_set_for(at) {
            // Armed for `at` and not polled since: the sleep itself says
            // whether `at` has come; no clock read of ours.
        } else if this.armed.is_waiting_for(at) {
            // Registered and polled again: most likely the sleep's wake-up.
            // The clock decides, and the sleep is polled only if it is early
            // (to refresh the waker).
            let now = now(this.timer);
            if now >= at {
                return Poll::Ready(now);
            }
        } else {
            // A new deadline: it may have passed already.
            let now = now(this.timer);
            if now >= at {
                return Poll::Ready(now);
            }
            set(this.sleep.as_mut(), this.timer, at);
        }
        *this.armed = Armed::waiting(at);
        let Some(mut sleep) = this.sleep.as_mut().as_pin_mut() else {
            return Poll::Pending;
        };
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        // The sleep says `at` has come: check it against the clock. It may
        // have fired early by the clock's reckoning (a coarse timer, or a
        // mocked clock): re-arm it then, and if it fires again at once, come
        // back through the executor rather than spin here.
        let now = now(this.timer);
        if now >= at {
            return Poll::Ready(now);
        }
        this.timer
            .reset(sleep.as_mut(), clock(this.timer).to_std(at));
        if sleep.poll(cx).is_ready() {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }

    /// Sets the sleep for `next`, a deadline the caller computed from `now`,
    /// the instant the last [`poll`](Self::poll) returned (or one read since):
    /// no clock read here. A deadline at or before `now`, or the one already
    /// set, is left for [`poll`](Self::poll). The task registers on the next
    /// poll.
    #[inline(always)]
    pub(crate) fn arm(self: Pin<&mut Self>, now: Instant, next: Option<Instant>) {
        let mut this = self.project();
        let Some(at) = next else { return };
        if at <= now || this.armed.is_for(at) {
            return;
        }
        set(this.sleep.as_mut(), this.timer, at);
        *this.armed = Armed::set(at);
    }

    /// Drops the sleep, releasing the runtime's timer entry.
    pub(crate) fn release(self: Pin<&mut Self>) {
        let mut this = self.project();
        this.sleep.set(None);
        *this.armed = Armed::OFF;
    }
}

/// Moves the sleep to `at`, creating it the first time.
#[inline]
fn set<T: Timer>(mut sleep: Pin<&mut Option<T::Sleep>>, timer: &T, at: Instant) {
    let deadline = clock(timer).to_std(at);
    match sleep.as_mut().as_pin_mut() {
        Some(existing) => timer.reset(existing, deadline),
        None => sleep.set(Some(timer.sleep_until(deadline))),
    }
}

impl<T: Timer + std::fmt::Debug> std::fmt::Debug for SleepSlot<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SleepSlot")
            .field("timer", &self.timer)
            .field("armed", &self.armed.at())
            .finish_non_exhaustive()
    }
}
