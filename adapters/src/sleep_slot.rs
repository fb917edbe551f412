//! One resettable sleep per wrapped stream, kept in step with the core's
//! deadline (STYLE C7): re-armed only when the deadline moves, and checked
//! against the clock rather than trusted.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use inlinekeepalive_core::Instant;

use crate::clock::Clock;
use crate::timer::Timer;

/// The sleep of one wrapped stream and the clock that maps its time.
///
/// The sleep is boxed so the wrappers stay `Unpin` whatever the runtime's
/// sleep type (tokio's is not): one allocation per stream, made the first
/// time a deadline is armed, freed by [`release`](Self::release) or drop.
pub(crate) struct SleepSlot<T: Timer> {
    timer: T,
    clock: Clock,
    sleep: Option<Pin<Box<T::Sleep>>>,
    /// The deadline the sleep is set to, if it is set.
    armed: Option<Instant>,
}

impl<T: Timer> SleepSlot<T> {
    /// A deadline whose core time 0 is the timer's `now()`.
    pub(crate) fn new(timer: T) -> Self {
        let clock = Clock::new(timer.now());
        Self {
            timer,
            clock,
            sleep: None,
            armed: None,
        }
    }

    /// The current core time.
    pub(crate) fn now(&self) -> Instant {
        self.clock.to_core(self.timer.now())
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
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>, next: Option<Instant>) -> Poll<Instant> {
        let Some(at) = next else {
            self.armed = None;
            return Poll::Pending;
        };
        let now = self.now();
        if now >= at {
            return Poll::Ready(now);
        }
        if self.armed != Some(at) {
            self.set(at);
        }
        let Some(sleep) = self.sleep.as_mut() else {
            return Poll::Pending;
        };
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        // The sleep fired early by the clock's reckoning (a coarse timer, or
        // a mocked clock): re-arm it, and if it fires again at once, come
        // back through the executor rather than spin here.
        let now = self.now();
        if now >= at {
            return Poll::Ready(now);
        }
        self.set(at);
        if let Some(sleep) = self.sleep.as_mut() {
            if sleep.as_mut().poll(cx).is_ready() {
                cx.waker().wake_by_ref();
            }
        }
        Poll::Pending
    }

    fn set(&mut self, at: Instant) {
        let deadline = self.clock.to_std(at);
        match self.sleep.as_mut() {
            Some(sleep) => self.timer.reset(sleep.as_mut(), deadline),
            None => self.sleep = Some(Box::pin(self.timer.sleep_until(deadline))),
        }
        self.armed = Some(at);
    }

    /// Drops the sleep, releasing the runtime's timer entry.
    pub(crate) fn release(&mut self) {
        self.sleep = None;
        self.armed = None;
    }
}

impl<T: Timer + std::fmt::Debug> std::fmt::Debug for SleepSlot<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SleepSlot")
            .field("timer", &self.timer)
            .field("armed", &self.armed)
            .finish_non_exhaustive()
    }
}
