//! Converting between `std::time::Instant` and the core's [`Instant`].

use std::time::{Duration, Instant as StdInstant};

use inlinekeepalive_core::Instant;

/// Maps `std::time::Instant` to the core's microsecond [`Instant`] and back,
/// relative to an origin chosen explicitly (usually when a stream is
/// wrapped), so the core never needs a clock of its own.
///
/// ```
/// use std::time::{Duration, Instant};
/// use inlinekeepalive::clock::Clock;
///
/// let origin = Instant::now();
/// let clock = Clock::new(origin);
/// let later = origin + Duration::from_millis(1500);
/// assert_eq!(clock.to_core(later).as_micros(), 1_500_000);
/// assert_eq!(clock.to_std(clock.to_core(later)), later);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    origin: StdInstant,
}

impl Clock {
    /// A clock whose core time 0 is `origin`.
    #[must_use]
    pub fn new(origin: StdInstant) -> Self {
        Self { origin }
    }

    /// The origin.
    #[must_use]
    pub fn origin(&self) -> StdInstant {
        self.origin
    }

    /// The core instant of `at`. Instants before the origin map to 0, and
    /// instants more than ~584,000 years after it saturate.
    #[must_use]
    #[inline]
    pub fn to_core(&self, at: StdInstant) -> Instant {
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
    pub fn to_std(&self, at: Instant) -> StdInstant {
        let offset = Duration::from_micros(at.as_micros());
        self.origin
            .checked_add(offset)
            .unwrap_or_else(|| far_future(self.origin))
    }
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
