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

/// What the sleep is set to, and whether the task is registered on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Armed {
    /// No deadline: the sleep (if any) is ignored.
    Off,
    /// Set for `at` and not polled since: the sleep decides (reading its own
    /// clock) whether `at` has come.
    Set(Instant),
    /// Set for `at` and pending when last polled, so the task is registered
    /// on it: the next poll is most likely its wake-up, and one clock read
    /// decides.
    Waiting(Instant),
}

impl Armed {
    /// Set or waiting for exactly `at`.
    fn is_for(self, at: Instant) -> bool {
        matches!(self, Armed::Set(t) | Armed::Waiting(t) if t == at)
    }

    fn at(self) -> Option<Instant> {
        match self {
            Armed::Off => None,
            Armed::Set(at) | Armed::Waiting(at) => Some(at),
        }
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
    /// Clock reads: one per wake-up of the sleep, compared with the deadline
    /// in std time (no conversion to core time); none to re-arm after it
    /// ([`arm`](Self::arm) takes the instant [`poll`](Self::poll) returned);
    /// none to re-poll a sleep that was just armed (the sleep checks its own
    /// deadline).
    ///
    /// # The deadline stands for now
    ///
    /// When the task is polled while registered for `at` (the sleep's
    /// wake-up, as a rule) and the clock has reached `at`, `poll` returns
    /// `Ready(at)`, not the clock's time: the deadline itself is the "now"
    /// the caller hands to the state machine. The clock still decides
    /// *whether* `at` has come, so this holds whatever the timer's sleeps do
    /// (early, late or never).
    ///
    /// What it changes: the instant is a lower bound of the true time, late
    /// by the executor's latency. A keepalive counts as sent when it was due,
    /// so the next one is due exactly one interval after that, not after the
    /// moment it ran: keepalives keep a fixed phase, like an interval timer
    /// (no drift, and the streams that share a deadline keep sharing it, so
    /// the runtime's timers fire in batches), and each comes early by the
    /// previous one's lateness at most, which never hurts a keepalive. A
    /// silent peer is reported at the same moment, with `silent_for`
    /// understated by the lateness. If the task ran so late that the next
    /// deadline had passed too, the sleep completes on its first poll after
    /// being set, and the clock's own time is returned then: a stream that
    /// stalled for more than an interval sends two keepalives back to back
    /// (the one due at `at`, then the next, overdue too) and resumes from
    /// the real time, never a burst of catch-ups.
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
            armed: Armed::Off,
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
    /// Returns `Ready(now)` once `next` has come, `Pending` with the task
    /// registered on the sleep otherwise, and `Pending` without any
    /// registration when `next` is `None`. The instant returned is never
    /// before `next` and never after the clock: on the wake-up of the sleep
    /// it is `next` itself (see the type's docs), otherwise the clock's
    /// reading.
    #[inline]
    pub(crate) fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        next: Option<Instant>,
    ) -> Poll<Instant> {
        let mut this = self.project();
        let Some(at) = next else {
            *this.armed = Armed::Off;
            return Poll::Pending;
        };
        if *this.armed == Armed::Waiting(at) {
            // Registered and polled again: most likely the sleep's wake-up.
            // The clock decides, compared in std time (no conversion of
            // `now`), and `at` itself stands for now (see the type's docs).
            // The sleep is polled only if `at` has not come (to refresh the
            // waker).
            if this.timer.now() >= clock(this.timer).to_std(at) {
                return Poll::Ready(at);
            }
        } else if *this.armed != Armed::Set(at) {
            // A new deadline: it may have passed already.
            let now = now(this.timer);
            if now >= at {
                return Poll::Ready(now);
            }
            set(this.sleep.as_mut(), this.timer, at);
        }
        // Set for `at` and not polled since (or early): the sleep itself says
        // whether `at` has come; no clock read of ours.
        *this.armed = Armed::Waiting(at);
        let Some(mut sleep) = this.sleep.as_mut().as_pin_mut() else {
            return Poll::Pending;
        };
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        // The sleep says `at` has come, on its first poll after being set:
        // `at` had already passed when it was set (the task ran later than
        // this deadline too), or the timer completes early. The clock
        // decides, and its time is returned, so a late task resumes from the
        // real time instead of catching up deadline by deadline. If it is
        // early, re-arm it, and if it fires again at once, come back through
        // the executor rather than spin here.
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
        *this.armed = Armed::Set(at);
    }

    /// Drops the sleep, releasing the runtime's timer entry.
    pub(crate) fn release(self: Pin<&mut Self>) {
        let mut this = self.project();
        this.sleep.set(None);
        *this.armed = Armed::Off;
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant as StdInstant};

    use super::*;

    /// A mocked clock whose sleeps complete once it reaches their deadline,
    /// never (a timer that lags behind its clock), or at once (one that is
    /// early).
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Fires {
        AtDeadline,
        Never,
        AtOnce,
    }

    #[derive(Clone, Debug)]
    struct Mock {
        now: Arc<Mutex<StdInstant>>,
        fires: Fires,
    }

    struct MockSleep {
        mock: Mock,
        deadline: StdInstant,
    }

    impl Future for MockSleep {
        type Output = ();
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            let ready = match self.mock.fires {
                Fires::AtDeadline => self.mock.now() >= self.deadline,
                Fires::Never => false,
                Fires::AtOnce => true,
            };
            if ready {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    impl Timer for Mock {
        type Sleep = MockSleep;
        fn sleep_until(&self, deadline: StdInstant) -> MockSleep {
            MockSleep {
                mock: self.clone(),
                deadline,
            }
        }
        fn reset(&self, sleep: Pin<&mut MockSleep>, deadline: StdInstant) {
            sleep.get_mut().deadline = deadline;
        }
        fn now(&self) -> StdInstant {
            *self.now.lock().unwrap()
        }
    }

    impl Mock {
        fn new(fires: Fires) -> Self {
            Self {
                now: Arc::new(Mutex::new(StdInstant::now())),
                fires,
            }
        }
        fn advance_ms(&self, ms: u64) {
            *self.now.lock().unwrap() += Duration::from_millis(ms);
        }
    }

    fn poll(slot: &mut Pin<Box<SleepSlot<Mock>>>, next: Instant) -> Poll<Instant> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        slot.as_mut().poll(&mut cx, Some(next))
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_wake_up_of_a_sleep_stands_for_its_deadline() {
        let timer = Mock::new(Fires::AtDeadline);
        let mut slot = Box::pin(SleepSlot::new(timer.clone()));
        let at = slot.now() + ms(100);
        assert!(poll(&mut slot, at).is_pending());
        timer.advance_ms(130); // the task runs 30 ms late
        assert_eq!(
            poll(&mut slot, at),
            Poll::Ready(at),
            "the deadline, no drift"
        );
        // The next deadline, one interval after the last: not reached yet.
        let next = at + ms(100);
        slot.as_mut().arm(at, Some(next));
        assert!(poll(&mut slot, next).is_pending());
        timer.advance_ms(70);
        assert_eq!(poll(&mut slot, next), Poll::Ready(next));
    }

    #[test]
    fn a_task_later_than_the_next_deadline_resumes_from_the_clock() {
        let timer = Mock::new(Fires::AtDeadline);
        let mut slot = Box::pin(SleepSlot::new(timer.clone()));
        let at = slot.now() + ms(100);
        assert!(poll(&mut slot, at).is_pending());
        timer.advance_ms(350); // a stall of several intervals
        assert_eq!(poll(&mut slot, at), Poll::Ready(at));
        let next = at + ms(100);
        slot.as_mut().arm(at, Some(next));
        // Already passed when it was set: the clock's time, so the deadline
        // after it is an interval from now, not a burst of catch-ups.
        let now = slot.now();
        assert_eq!(now, at + ms(250));
        assert_eq!(poll(&mut slot, next), Poll::Ready(now));
    }

    #[test]
    fn a_lagging_timer_is_overruled_by_the_clock() {
        let timer = Mock::new(Fires::Never); // its sleeps never complete
        let mut slot = Box::pin(SleepSlot::new(timer.clone()));
        let at = slot.now() + ms(100);
        assert!(poll(&mut slot, at).is_pending());
        timer.advance_ms(99);
        assert!(poll(&mut slot, at).is_pending());
        timer.advance_ms(2);
        assert_eq!(poll(&mut slot, at), Poll::Ready(at));
    }

    #[test]
    fn an_early_timer_is_overruled_by_the_clock() {
        let timer = Mock::new(Fires::AtOnce);
        let mut slot = Box::pin(SleepSlot::new(timer.clone()));
        let at = slot.now() + ms(100);
        assert!(poll(&mut slot, at).is_pending(), "re-armed, not trusted");
        assert!(poll(&mut slot, at).is_pending());
        timer.advance_ms(100);
        assert_eq!(poll(&mut slot, at), Poll::Ready(at));
    }

    #[test]
    fn a_deadline_already_passed_is_ready_at_once_without_a_sleep() {
        let timer = Mock::new(Fires::AtDeadline);
        let mut slot = Box::pin(SleepSlot::new(timer.clone()));
        let now = slot.now();
        assert_eq!(poll(&mut slot, now), Poll::Ready(now));
        assert!(!slot.is_allocated());
    }
}
