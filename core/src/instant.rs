//! A `no_std` monotonic instant: microseconds since an epoch the caller picks.

use core::ops::{Add, AddAssign, Sub};
use core::time::Duration;

/// A point in time, in microseconds since an epoch that the caller picks.
///
/// The core never reads a clock: every input carries an `Instant` made by the
/// caller. An adapter fixes its epoch once (for example the
/// `std::time::Instant` at which it was created) and converts with
/// `Instant::from_micros(now.duration_since(epoch).as_micros() as u64)`; the
/// conversion lives in the adapters, never here. Tests simply count
/// milliseconds from zero.
///
/// All arithmetic saturates: adding a huge [`Duration`] gives the far end of
/// the range, and subtracting a later instant gives [`Duration::ZERO`].
/// Nothing here panics.
///
/// ```
/// use core::time::Duration;
/// use inlinekeepalive_core::Instant;
///
/// let start = Instant::from_millis(1_000);
/// let later = start + Duration::from_millis(250);
/// assert_eq!(later.as_micros(), 1_250_000);
/// assert_eq!(later - start, Duration::from_millis(250));
/// assert_eq!(start - later, Duration::ZERO); // saturates, never panics
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

/// `d` in whole microseconds, saturating at `u64::MAX` (about 584 554 years).
pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Instant {
    /// The epoch itself: zero microseconds.
    ///
    /// ```
    /// use inlinekeepalive_core::Instant;
    /// assert_eq!(Instant::ZERO, Instant::default());
    /// ```
    pub const ZERO: Self = Self(0);

    /// The instant `us` microseconds after the epoch.
    ///
    /// ```
    /// use inlinekeepalive_core::Instant;
    /// assert_eq!(Instant::from_micros(1_500).as_micros(), 1_500);
    /// ```
    #[must_use]
    pub const fn from_micros(us: u64) -> Self {
        Self(us)
    }

    /// The instant `ms` milliseconds after the epoch (saturating).
    ///
    /// ```
    /// use inlinekeepalive_core::Instant;
    /// assert_eq!(Instant::from_millis(2), Instant::from_micros(2_000));
    /// assert_eq!(Instant::from_millis(u64::MAX), Instant::from_micros(u64::MAX));
    /// ```
    #[must_use]
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms.saturating_mul(1_000))
    }

    /// Microseconds since the epoch.
    ///
    /// ```
    /// use inlinekeepalive_core::Instant;
    /// assert_eq!(Instant::from_millis(3).as_micros(), 3_000);
    /// ```
    #[must_use]
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating at the largest representable instant.
    ///
    /// ```
    /// use core::time::Duration;
    /// use inlinekeepalive_core::Instant;
    ///
    /// let t = Instant::from_millis(10);
    /// assert_eq!(t.saturating_add(Duration::from_millis(5)), Instant::from_millis(15));
    /// assert_eq!(t.saturating_add(Duration::MAX), Instant::from_micros(u64::MAX));
    /// ```
    #[must_use]
    pub fn saturating_add(self, d: Duration) -> Self {
        Self(self.0.saturating_add(micros(d)))
    }

    /// `self + us` microseconds, saturating. The machine's internal fast path.
    pub(crate) const fn add_micros(self, us: u64) -> Self {
        Self(self.0.saturating_add(us))
    }

    /// How long after `earlier` this instant is, or `None` if `earlier` is later.
    ///
    /// ```
    /// use core::time::Duration;
    /// use inlinekeepalive_core::Instant;
    ///
    /// let (a, b) = (Instant::from_millis(1), Instant::from_millis(3));
    /// assert_eq!(b.checked_duration_since(a), Some(Duration::from_millis(2)));
    /// assert_eq!(a.checked_duration_since(b), None);
    /// ```
    #[must_use]
    pub fn checked_duration_since(self, earlier: Self) -> Option<Duration> {
        self.0.checked_sub(earlier.0).map(Duration::from_micros)
    }

    /// How long after `earlier` this instant is, or [`Duration::ZERO`] if
    /// `earlier` is later (time that went backwards counts as no time).
    ///
    /// ```
    /// use core::time::Duration;
    /// use inlinekeepalive_core::Instant;
    ///
    /// let (a, b) = (Instant::from_millis(1), Instant::from_millis(3));
    /// assert_eq!(b.saturating_duration_since(a), Duration::from_millis(2));
    /// assert_eq!(a.saturating_duration_since(b), Duration::ZERO);
    /// ```
    #[must_use]
    pub fn saturating_duration_since(self, earlier: Self) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

/// Saturating: see [`Instant::saturating_add`].
///
/// ```
/// use core::time::Duration;
/// use inlinekeepalive_core::Instant;
/// assert_eq!(Instant::ZERO + Duration::from_secs(1), Instant::from_millis(1_000));
/// ```
impl Add<Duration> for Instant {
    type Output = Self;

    fn add(self, d: Duration) -> Self {
        self.saturating_add(d)
    }
}

/// Saturating: see [`Instant::saturating_add`].
///
/// ```
/// use core::time::Duration;
/// use inlinekeepalive_core::Instant;
/// let mut t = Instant::ZERO;
/// t += Duration::from_millis(7);
/// assert_eq!(t, Instant::from_millis(7));
/// ```
impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, d: Duration) {
        *self = self.saturating_add(d);
    }
}

/// Saturating: see [`Instant::saturating_duration_since`].
///
/// ```
/// use core::time::Duration;
/// use inlinekeepalive_core::Instant;
/// assert_eq!(Instant::from_millis(5) - Instant::from_millis(2), Duration::from_millis(3));
/// assert_eq!(Instant::from_millis(2) - Instant::from_millis(5), Duration::ZERO);
/// ```
impl Sub<Instant> for Instant {
    type Output = Duration;

    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_panicking() {
        let max = Instant::from_micros(u64::MAX);
        assert_eq!(max + Duration::from_micros(1), max);
        assert_eq!(Instant::ZERO + Duration::MAX, max);
        assert_eq!(Instant::ZERO - max, Duration::ZERO);
        assert_eq!(max - Instant::ZERO, Duration::from_micros(u64::MAX));
        assert_eq!(Instant::from_millis(u64::MAX), max);
        assert_eq!(micros(Duration::MAX), u64::MAX);
        assert_eq!(max.add_micros(1), max);
    }

    #[test]
    fn ordering_follows_micros() {
        assert!(Instant::from_micros(999) < Instant::from_millis(1));
        assert_eq!(
            Instant::from_millis(1).checked_duration_since(Instant::from_micros(999)),
            Some(Duration::from_micros(1))
        );
    }
}
