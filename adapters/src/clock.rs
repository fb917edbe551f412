//! Converting between `std::time::Instant` and the core's [`Instant`], from
//! one origin for the whole process.

use std::sync::OnceLock;
use std::time::{Duration, Instant as StdInstant};

use inlinekeepalive_core::Instant;

/// Maps `std::time::Instant` to the core's microsecond [`Instant`] and back,
/// relative to an origin chosen explicitly, so the core never needs a clock
/// of its own.
///
/// The wrappers of this crate use the origin of their timer,
/// [`Timer::origin`](crate::timer::Timer::origin), which is
/// [`process_origin`] unless the timer says otherwise: one origin for every
/// stream, so that a wrapper stores no origin of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Clock {
    origin: StdInstant,
}

impl Clock {
    /// A clock whose core time 0 is `origin`.
    #[must_use]
    pub(crate) fn new(origin: StdInstant) -> Self {
        Self { origin }
    }

    /// The core instant of `at`. Instants before the origin map to 0, and
    /// instants more than ~584,000 years after it saturate.
    #[must_use]
    #[inline]
    pub(crate) fn to_core(self, at: StdInstant) -> Instant {
        // u64 arithmetic (no u128 `as_micros`): whole seconds times 10^6
        // plus the sub-second part, saturating like the u128 form did.
        let since = at.saturating_duration_since(self.origin);
        let micros = since
            .as_secs()
            .saturating_mul(1_000_000)
            .saturating_add(u64::from(since.subsec_micros()));
        Instant::from_micros(micros)
    }

    /// The std instant of a core instant; saturates at the latest instant the
    /// platform can represent instead of panicking.
    #[must_use]
    #[inline]
    pub(crate) fn to_std(self, at: Instant) -> StdInstant {
        let offset = Duration::from_micros(at.as_micros());
        self.origin
            .checked_add(offset)
            .unwrap_or_else(|| far_future(self.origin))
    }
}

/// How long before its first use the process-wide origin lies.
const PROCESS_ORIGIN_MARGIN: Duration = Duration::from_secs(24 * 60 * 60);

static PROCESS_ORIGIN: OnceLock<StdInstant> = OnceLock::new();

/// The origin of the process: one day before the first call (or as long
/// before as the platform's `Instant` reaches, if less), then the same for
/// the life of the process.
///
/// It is the default [`Timer::origin`](crate::timer::Timer::origin), which
/// the wrappers map their timer's [`now`](crate::timer::Timer::now) against:
/// one origin shared by every stream instead of one stored per stream. The
/// day of margin keeps instants read shortly *before* the first call (by
/// another thread, or by a mocked timer started earlier) after the origin,
/// where they map exactly; instants before it would all map to core time 0.
/// Core instants count microseconds, so the margin costs nothing: the range
/// left is over 500,000 years.
#[must_use]
#[inline]
pub(crate) fn process_origin() -> StdInstant {
    *PROCESS_ORIGIN.get_or_init(|| before(StdInstant::now(), PROCESS_ORIGIN_MARGIN))
}

/// `at - margin`, or as close to it as the platform's `Instant` reaches
/// (on some platforms it cannot go before boot or process start).
fn before(at: StdInstant, margin: Duration) -> StdInstant {
    // The longest step back found so far, refined by halving.
    let mut back = Duration::ZERO;
    let mut step = margin;
    while step >= Duration::from_millis(1) {
        let longer = back.saturating_add(step);
        if longer <= margin && at.checked_sub(longer).is_some() {
            back = longer;
        }
        step /= 2;
    }
    at.checked_sub(back).unwrap_or(at)
}

/// The latest instant reachable from `origin`, found by halving: used only
/// when a deadline is absurdly far away, so it never fires.
fn far_future(origin: StdInstant) -> StdInstant {
    let mut step = Duration::from_secs(u64::MAX / 4);
    let mut at = origin;
    while step > Duration::from_secs(1) {
        if let Some(later) = at.checked_add(step) {
            at = later;
        }
        step /= 2;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_steps_back_at_most_the_margin() {
        let now = StdInstant::now();
        let margin = Duration::from_secs(3600);
        let origin = before(now, margin);
        assert!(origin <= now);
        assert!(now - origin <= margin);
        assert_eq!(before(now, Duration::ZERO), now);
    }

    #[test]
    fn instants_after_the_process_origin_map_exactly() {
        let clock = Clock::new(process_origin());
        let at = StdInstant::now() + Duration::from_millis(1500);
        let core = clock.to_core(at);
        assert_eq!(clock.to_core(clock.to_std(core)), core);
        assert!(core.as_micros() > 0, "after the origin, not saturated at 0");
    }
}
