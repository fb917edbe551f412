//! The one thing the adapters need from a runtime: a resettable timer.
//!
//! Each wrapped stream owns exactly one sleep future, created once and reset
//! whenever the core's deadline moves (never recreated per poll), and dropped
//! with the stream. No implementation spawns a task or a thread per stream.

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

/// A source of resettable sleeps, implemented for each supported runtime.
///
/// Implement it yourself to run under another runtime, or to control time in
/// tests (override [`now`](Timer::now)).
///
/// Each wrapper stores its sleep inline, so a wrapper is `Unpin` exactly when
/// its timer's `Sleep` is. The sleeps of async-io and futures-timer are
/// `Unpin`; `TokioTimer` boxes tokio's (`Pin<Box<tokio::time::Sleep>>`)
/// to keep its wrappers `Unpin` too. Do the same with a sleep that is not
/// `Unpin` unless you pin the wrappers yourself.
///
/// A sleep's output is ignored, and so is its completing early or late:
/// the wrappers compare [`now`](Timer::now) with their deadline themselves,
/// so a timer only has to wake the task at about the right time.
pub trait Timer: Clone + Send + Sync + 'static {
    /// The sleep future; completes at (or after) its deadline.
    type Sleep: Future + Send + 'static;

    /// A sleep that completes at `deadline`.
    fn sleep_until(&self, deadline: Instant) -> Self::Sleep;

    /// Moves an existing sleep to a new deadline, which may be earlier or
    /// later than the old one, and re-arms it if it had completed.
    fn reset(&self, sleep: Pin<&mut Self::Sleep>, deadline: Instant);

    /// The current time. Override it to test with a mocked clock.
    #[inline]
    fn now(&self) -> Instant {
        Instant::now()
    }

    /// The instant that the core's time 0 stands for: the wrappers map
    /// [`now`](Timer::now) and their deadlines to the core's microsecond
    /// [`Instant`](crate::core::Instant) relative to it. It MUST return the
    /// same instant on every call, for the timer and its clones, and SHOULD
    /// be at or before every instant `now` returns: one before it maps to
    /// core time 0 (so a stream would see no time pass until its clock
    /// reached the origin).
    ///
    /// The default is one origin for the whole process, a day before the
    /// process first asked for it; keep it unless `now` can return instants
    /// from before then, for example a mocked clock that starts in the past
    /// (one that starts at `Instant::now()` is fine).
    ///
    /// ```
    /// use inlinekeepalive::timer::{NoTimer, Timer};
    /// assert!(NoTimer.origin() <= NoTimer.now());
    /// assert_eq!(NoTimer.origin(), NoTimer.origin());
    /// ```
    #[inline]
    fn origin(&self) -> Instant {
        crate::clock::process_origin()
    }
}

#[cfg(feature = "futures-timer")]
#[cfg_attr(docsrs, doc(cfg(feature = "futures-timer")))]
pub use self::futures_timer_impl::FuturesTimer;

#[cfg(feature = "futures-timer")]
mod futures_timer_impl {
    use super::*;

    /// Timers from the `futures-timer` crate, which work under any executor.
    ///
    /// `futures-timer` runs one global helper thread for all its timers,
    /// started on first use; it is shared, never one per stream.
    #[derive(Clone, Copy, Debug, Default)]
    pub struct FuturesTimer;

    impl Timer for FuturesTimer {
        type Sleep = futures_timer::Delay;

        #[inline]
        fn sleep_until(&self, deadline: Instant) -> Self::Sleep {
            futures_timer::Delay::new(deadline.saturating_duration_since(self.now()))
        }

        #[inline]
        fn reset(&self, sleep: Pin<&mut Self::Sleep>, deadline: Instant) {
            // `Delay::reset` takes a duration from now, not an instant.
            sleep
                .get_mut()
                .reset(deadline.saturating_duration_since(self.now()));
        }
    }
}

#[cfg(feature = "async-io")]
#[cfg_attr(docsrs, doc(cfg(feature = "async-io")))]
pub use self::async_io_impl::AsyncIoTimer;

#[cfg(feature = "async-io")]
mod async_io_impl {
    use super::*;

    /// Timers from `async-io`, the reactor of smol (and of async-std, which
    /// is discontinued but still runs on it).
    #[derive(Clone, Copy, Debug, Default)]
    pub struct AsyncIoTimer;

    impl Timer for AsyncIoTimer {
        type Sleep = async_io::Timer;

        #[inline]
        fn sleep_until(&self, deadline: Instant) -> Self::Sleep {
            async_io::Timer::at(deadline)
        }

        #[inline]
        fn reset(&self, sleep: Pin<&mut Self::Sleep>, deadline: Instant) {
            sleep.get_mut().set_at(deadline);
        }
    }
}

#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub use self::tokio_impl::TokioTimer;

#[cfg(feature = "tokio")]
mod tokio_impl {
    use super::*;

    /// Timers from `tokio::time`. Needs a tokio runtime with the time driver
    /// enabled; paused time (`start_paused`) works, since `now` reads tokio's
    /// clock.
    ///
    /// tokio's `Sleep` is not `Unpin`, so it is boxed (one allocation per
    /// stream, made when the first deadline is armed): the wrappers stay
    /// `Unpin` under tokio as under every other runtime.
    #[derive(Clone, Copy, Debug, Default)]
    pub struct TokioTimer;

    impl Timer for TokioTimer {
        type Sleep = Pin<Box<tokio::time::Sleep>>;

        #[inline]
        fn sleep_until(&self, deadline: Instant) -> Self::Sleep {
            Box::pin(tokio::time::sleep_until(deadline.into()))
        }

        #[inline]
        fn reset(&self, sleep: Pin<&mut Self::Sleep>, deadline: Instant) {
            sleep.get_mut().as_mut().reset(deadline.into());
        }

        #[inline]
        fn now(&self) -> Instant {
            tokio::time::Instant::now().into_std()
        }
    }
}

/// The timer of a wrapper that needs none: its sleeps never complete.
///
/// It is the default timer type of
/// [`KeepaliveReader`](crate::KeepaliveReader) and
/// [`KeepaliveStream`](crate::KeepaliveStream), which need a real timer only
/// for dead-peer detection. It never reads a clock of its own beyond
/// [`Timer::now`]'s default and never wakes anything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoTimer;

impl Timer for NoTimer {
    type Sleep = std::future::Pending<()>;

    fn sleep_until(&self, _deadline: Instant) -> Self::Sleep {
        std::future::pending()
    }

    fn reset(&self, _sleep: Pin<&mut Self::Sleep>, _deadline: Instant) {}
}
