//! Validated configuration of the keepalive state machine.

use core::fmt;
use core::time::Duration;

/// When keepalives go out.
///
/// ```
/// # use inlinekeepalive_core as inlinekeepalive;
/// use inlinekeepalive::{Config, Policy};
/// assert_eq!(Config::default().policy(), Policy::Idle);
/// let fixed = Config::default().with_policy(Policy::Fixed);
/// assert_eq!(fixed.policy(), Policy::Fixed);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Policy {
    /// Send a keepalive only when nothing (application message or keepalive)
    /// was sent for one interval. Every application message sent pushes the
    /// next keepalive back. The default: a busy stream sends no keepalives.
    #[default]
    Idle,
    /// Send a keepalive every interval, whatever else is sent; the first one
    /// as soon as the peer is known to support keepalives. This is Waypoint's
    /// behaviour, kept for parity and comparison.
    Fixed,
}

/// Why a [`Config`] was rejected.
///
/// ```
/// use core::time::Duration;
/// # use inlinekeepalive_core as inlinekeepalive;
/// use inlinekeepalive::{Config, ConfigError};
///
/// let err = Config::new(Duration::ZERO).unwrap_err();
/// assert_eq!(err, ConfigError::IntervalTooShort);
/// assert_eq!(err.to_string(), "keepalive interval is shorter than 1 ms");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigError {
    /// The interval is zero or shorter than the 1 ms resolution.
    IntervalTooShort,
    /// The interval is longer than `u32::MAX` milliseconds (about 49.7 days).
    IntervalTooLong,
    /// The jitter is not a number within `0.0..=0.5`.
    JitterOutOfRange,
    /// The peer timeout is zero.
    ZeroPeerTimeout,
    /// The peer timeout is longer than `u32::MAX` milliseconds (about 49.7 days).
    PeerTimeoutTooLong,
    /// The batch window is longer than half the interval.
    BatchWindowTooLong,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::IntervalTooShort => "keepalive interval is shorter than 1 ms",
            Self::IntervalTooLong => "keepalive interval is longer than u32::MAX milliseconds",
            Self::JitterOutOfRange => "keepalive jitter is not within 0.0..=0.5",
            Self::ZeroPeerTimeout => "peer timeout is zero",
            Self::PeerTimeoutTooLong => "peer timeout is longer than u32::MAX milliseconds",
            Self::BatchWindowTooLong => "keepalive batch window is longer than half the interval",
        })
    }
}

impl core::error::Error for ConfigError {}

/// Largest jitter fraction, and its value in the internal 1/65536 units.
const MAX_JITTER: f32 = 0.5;
const JITTER_ONE: f32 = 65_536.0;

/// Configuration of inline keepalives: interval, policy and jitter of the
/// [`Keepalive`](crate::Keepalive) send schedule, and the optional peer
/// timeout of a [`PeerWatchdog`](crate::PeerWatchdog).
///
/// Always valid: it is built by [`Config::new`] or [`Config::default`] and
/// refined with the `with_*` methods, which check their argument. Durations
/// are kept in whole milliseconds: the interval is rounded *down* (a
/// keepalive never goes out later than asked), the peer timeout *up* (a peer
/// is never reported earlier than asked), and the batch window *down* (so a
/// window under 1 ms is no window: batching stays off, without an error).
///
/// | setting | default | range |
/// |---|---|---|
/// | interval | 20 s ([`Config::DEFAULT_INTERVAL`]) | 1 ms ..= `u32::MAX` ms |
/// | policy | [`Policy::Idle`] | |
/// | jitter | 0.0 | 0.0 ..= 0.5 |
/// | peer timeout | `None` (no dead-peer detection) | 1 ms ..= `u32::MAX` ms |
/// | batch window | `None` (off) | 0 ..= interval / 2, rounded down to whole ms: under 1 ms is off |
///
/// ```
/// use core::time::Duration;
/// # use inlinekeepalive_core as inlinekeepalive;
/// use inlinekeepalive::{Config, Policy};
///
/// let config = Config::new(Duration::from_secs(15))?
///     .with_policy(Policy::Idle)
///     .with_jitter(0.2)?
///     .with_peer_timeout(Duration::from_secs(45))?;
/// assert_eq!(config.interval(), Duration::from_secs(15));
/// assert_eq!(config.jitter(), 0.2);
/// assert_eq!(config.peer_timeout(), Some(Duration::from_secs(45)));
/// # Ok::<(), inlinekeepalive::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Config {
    interval_ms: u32,
    /// 0: no dead-peer detection.
    peer_timeout_ms: u32,
    /// As given, for [`Config::jitter`].
    jitter: f32,
    /// `jitter` in units of 1/65536 (at most 32768), for integer-only maths.
    jitter_q: u16,
    policy: Policy,
    /// 0: every stream keeps its own deadlines.
    batch_window_ms: u32,
}

impl Default for Config {
    /// Interval 20 s, [`Policy::Idle`], no jitter, no dead-peer detection.
    ///
    /// ```
    /// use core::time::Duration;
    /// # use inlinekeepalive_core as inlinekeepalive;
    /// use inlinekeepalive::{Config, Policy};
    ///
    /// let c = Config::default();
    /// assert_eq!(c.interval(), Duration::from_secs(20));
    /// assert_eq!((c.policy(), c.jitter(), c.peer_timeout()), (Policy::Idle, 0.0, None));
    /// ```
    fn default() -> Self {
        Self {
            interval_ms: 20_000,
            peer_timeout_ms: 0,
            jitter: 0.0,
            jitter_q: 0,
            policy: Policy::Idle,
            batch_window_ms: 0,
        }
    }
}

impl Config {
    /// The default interval, 20 s: below the 60 s idle timeout of AWS ALB and
    /// nginx's 60 s `grpc_read_timeout`, with room for one lost keepalive.
    ///
    /// ```
    /// use core::time::Duration;
    /// # use inlinekeepalive_core as inlinekeepalive;
    /// use inlinekeepalive::Config;
    /// assert_eq!(Config::DEFAULT_INTERVAL, Duration::from_secs(20));
    /// ```
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(20);

    /// The default configuration with another interval (rounded down to whole
    /// milliseconds).
    ///
    /// # Errors
    /// [`ConfigError::IntervalTooShort`] below 1 ms,
    /// [`ConfigError::IntervalTooLong`] above `u32::MAX` ms.
    ///
    /// ```
    /// use core::time::Duration;
    /// # use inlinekeepalive_core as inlinekeepalive;
    /// use inlinekeepalive::{Config, ConfigError};
    ///
    /// assert!(Config::new(Duration::from_secs(30)).is_ok());
    /// assert_eq!(Config::new(Duration::from_micros(999)), Err(ConfigError::IntervalTooShort));
    /// assert_eq!(Config::new(Duration::from_secs(1 << 40)), Err(ConfigError::IntervalTooLong));
    /// ```
    pub fn new(interval: Duration) -> Result<Self, ConfigError> {
        let interval_ms = match u32::try_from(interval.as_millis()) {
            Ok(0) => return Err(ConfigError::IntervalTooShort),
            Ok(ms) => ms,
            Err(_) => return Err(ConfigError::IntervalTooLong),
        };
        Ok(Self {
            interval_ms,
            ..Self::default()
        })
    }

    /// This configuration with another [`Policy`].
    ///
    /// ```
    /// # use inlinekeepalive_core as inlinekeepalive;
    /// use inlinekeepalive::{Config, Policy};
    /// assert_eq!(Config::default().with_policy(Policy::Fixed).policy(), Policy::Fixed);
    /// ```
    #[must_use]
    pub fn with_policy(self, policy: Policy) -> Self {
        Self { policy, ..self }
    }

    /// This configuration with jitter: each wait is shortened by a uniformly
    /// random fraction in `[0, jitter)` of the interval (`jitter` kept in
    /// steps of 1/65536, the wait in whole microseconds), so streams opened
    /// together do not send in lockstep.
    ///
    /// The random fractions come from a generator seeded per stream, and two
    /// streams with the same seed (and the same configuration and inputs)
    /// wait exactly as long, so the seeds must differ:
    ///
    /// - the tonic layers give every stream its own seed, from a counter that
    ///   the layer and its clones share and that starts from the wall clock,
    ///   so streams differ within a layer, and between layers and processes;
    /// - `KeepaliveWriter` and `KeepaliveSink` take one with their
    ///   `with_seed`. Without it they keep the default of
    ///   [`Keepalive::new`](crate::Keepalive::new), which is derived from the
    ///   `now` it is given: for them, the instant of their creation, in
    ///   microseconds. Two created in the same microsecond then share their
    ///   jitter, so when you open many at once, pass `with_seed` (a stream
    ///   id, or a counter);
    /// - the sans-IO [`Keepalive`](crate::Keepalive) takes one with
    ///   [`Keepalive::with_seed`](crate::Keepalive::with_seed); its default is
    ///   derived from the `now` given to [`Keepalive::new`](crate::Keepalive::new).
    ///
    /// # Errors
    /// [`ConfigError::JitterOutOfRange`] if `jitter` is NaN or not within
    /// `0.0..=0.5`.
    ///
    /// ```
    /// # use inlinekeepalive_core as inlinekeepalive;
    /// use inlinekeepalive::{Config, ConfigError};
    ///
    /// assert_eq!(Config::default().with_jitter(0.1)?.jitter(), 0.1);
    /// assert_eq!(Config::default().with_jitter(0.6), Err(ConfigError::JitterOutOfRange));
    /// assert_eq!(Config::default().with_jitter(f32::NAN), Err(ConfigError::JitterOutOfRange));
    /// # Ok::<(), ConfigError>(())
    /// ```
    pub fn with_jitter(self, jitter: f32) -> Result<Self, ConfigError> {
        if !(0.0..=MAX_JITTER).contains(&jitter) {
            return Err(ConfigError::JitterOutOfRange);
        }
        // Plain float multiply and a saturating cast: no libm needed.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let jitter_q = (jitter * JITTER_ONE + 0.5) as u16;
        Ok(Self {
            jitter,
            jitter_q,
            ..self
        })
    }

    /// This configuration with dead-peer detection: once the peer is known to
    /// send keepalives, a silence of `timeout` (not a single byte received)
    /// is reported as [`PeerTimedOut`](crate::PeerTimedOut) by a
    /// [`PeerWatchdog`](crate::PeerWatchdog). Rounded up to
    /// whole milliseconds. Set it above the peer's keepalive interval, e.g. to
    /// two intervals plus the expected latency.
    ///
    /// # Errors
    /// [`ConfigError::ZeroPeerTimeout`] for zero,
    /// [`ConfigError::PeerTimeoutTooLong`] above `u32::MAX` ms.
    ///
    /// ```
    /// use core::time::Duration;
    /// # use inlinekeepalive_core as inlinekeepalive;
    /// use inlinekeepalive::{Config, ConfigError};
    ///
    /// let c = Config::default().with_peer_timeout(Duration::from_micros(45_000_001))?;
    /// assert_eq!(c.peer_timeout(), Some(Duration::from_millis(45_001))); // rounded up
    /// assert_eq!(Config::default().with_peer_timeout(Duration::ZERO), Err(ConfigError::ZeroPeerTimeout));
    /// # Ok::<(), ConfigError>(())
    /// ```
    pub fn with_peer_timeout(self, timeout: Duration) -> Result<Self, ConfigError> {
        let ms = timeout.as_millis() + u128::from(timeout.subsec_nanos() % 1_000_000 != 0);
        let peer_timeout_ms = match u32::try_from(ms) {
            Ok(0) => return Err(ConfigError::ZeroPeerTimeout),
            Ok(ms) => ms,
            Err(_) => return Err(ConfigError::PeerTimeoutTooLong),
        };
        Ok(Self {
            peer_timeout_ms,
            ..self
        })
    }

    /// This configuration with keepalives sent in batches: every send
    /// deadline is rounded *down* to a multiple of `window` on the clock, so
    /// the streams whose deadlines fall into the same window send at the
    /// same instant: one timer wake-up for all of them and, over one HTTP/2
    /// connection, one flush. A keepalive is never later than without it
    /// and at most one window earlier (so at most `window / interval` more
    /// keepalives). Rounded down to whole milliseconds, so zero, and any
    /// window under 1 ms, turns it off (the default) without an error. The
    /// adapters share one clock origin per process, so every stream of a
    /// process shares the windows.
    ///
    /// # Errors
    /// [`ConfigError::BatchWindowTooLong`] when `window` is longer than half
    /// the interval. Call it after [`Config::new`], which sets the interval
    /// and resets every other setting to its default.
    ///
    /// ```
    /// use core::time::Duration;
    /// # use inlinekeepalive_core as inlinekeepalive;
    /// use inlinekeepalive::{Config, ConfigError};
    ///
    /// let c = Config::new(Duration::from_secs(20))?.with_batch_window(Duration::from_millis(1250))?;
    /// assert_eq!(c.batch_window(), Some(Duration::from_millis(1250)));
    /// assert_eq!(
    ///     Config::new(Duration::from_secs(1))?.with_batch_window(Duration::from_millis(501)),
    ///     Err(ConfigError::BatchWindowTooLong)
    /// );
    /// // Under 1 ms: rounded down to 0, which is off.
    /// assert_eq!(Config::default().with_batch_window(Duration::from_micros(999))?.batch_window(), None);
    /// # Ok::<(), ConfigError>(())
    /// ```
    pub fn with_batch_window(self, window: Duration) -> Result<Self, ConfigError> {
        let ms = window.as_millis();
        if ms > u128::from(self.interval_ms / 2) {
            return Err(ConfigError::BatchWindowTooLong);
        }
        Ok(Self {
            // `ms <= interval_ms / 2`, which is a u32.
            batch_window_ms: ms as u32,
            ..self
        })
    }

    /// The batch window, if keepalives are batched
    /// ([`with_batch_window`](Self::with_batch_window)).
    ///
    /// ```
    /// # use inlinekeepalive_core as inlinekeepalive;
    /// use inlinekeepalive::Config;
    /// assert_eq!(Config::default().batch_window(), None);
    /// ```
    #[must_use]
    pub fn batch_window(&self) -> Option<Duration> {
        (self.batch_window_ms != 0).then(|| Duration::from_millis(u64::from(self.batch_window_ms)))
    }

    /// The keepalive interval (whole milliseconds).
    ///
    /// ```
    /// use core::time::Duration;
    /// # use inlinekeepalive_core as inlinekeepalive;
    /// use inlinekeepalive::Config;
    /// let c = Config::new(Duration::from_micros(1_500))?;
    /// assert_eq!(c.interval(), Duration::from_millis(1)); // rounded down
    /// # Ok::<(), inlinekeepalive::ConfigError>(())
    /// ```
    #[must_use]
    pub fn interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.interval_ms))
    }

    /// The sending policy.
    ///
    /// ```
    /// # use inlinekeepalive_core as inlinekeepalive;
    /// use inlinekeepalive::{Config, Policy};
    /// assert_eq!(Config::default().policy(), Policy::Idle);
    /// ```
    #[must_use]
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The jitter fraction, as given to [`Config::with_jitter`].
    ///
    /// ```
    /// # use inlinekeepalive_core as inlinekeepalive;
    /// use inlinekeepalive::Config;
    /// assert_eq!(Config::default().jitter(), 0.0);
    /// ```
    #[must_use]
    pub fn jitter(&self) -> f32 {
        self.jitter
    }

    /// The dead-peer timeout, if dead-peer detection is configured.
    ///
    /// ```
    /// # use inlinekeepalive_core as inlinekeepalive;
    /// use inlinekeepalive::Config;
    /// assert_eq!(Config::default().peer_timeout(), None);
    /// ```
    #[must_use]
    pub fn peer_timeout(&self) -> Option<Duration> {
        (self.peer_timeout_ms != 0).then(|| Duration::from_millis(u64::from(self.peer_timeout_ms)))
    }

    pub(crate) fn jitter_q(&self) -> u16 {
        self.jitter_q
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn validation_errors() {
        let d = Config::default();
        assert_eq!(
            Config::new(Duration::ZERO),
            Err(ConfigError::IntervalTooShort)
        );
        assert_eq!(
            Config::new(Duration::from_nanos(999_999)),
            Err(ConfigError::IntervalTooShort)
        );
        assert!(Config::new(Duration::from_millis(1)).is_ok());
        assert!(Config::new(Duration::from_millis(u64::from(u32::MAX))).is_ok());
        assert_eq!(
            Config::new(Duration::from_millis(u64::from(u32::MAX) + 1)),
            Err(ConfigError::IntervalTooLong)
        );
        assert_eq!(
            Config::new(Duration::MAX),
            Err(ConfigError::IntervalTooLong)
        );
        for bad in [
            -0.01,
            0.5001,
            1.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ] {
            assert_eq!(
                d.with_jitter(bad),
                Err(ConfigError::JitterOutOfRange),
                "{bad}"
            );
        }
        for good in [0.0, -0.0, 0.25, 0.5] {
            assert!(d.with_jitter(good).is_ok(), "{good}");
        }
        assert_eq!(
            d.with_peer_timeout(Duration::ZERO),
            Err(ConfigError::ZeroPeerTimeout)
        );
        assert_eq!(
            d.with_peer_timeout(Duration::from_nanos(1))
                .unwrap()
                .peer_timeout(),
            Some(Duration::from_millis(1))
        );
        assert_eq!(
            d.with_peer_timeout(Duration::from_millis(u64::from(u32::MAX) + 1)),
            Err(ConfigError::PeerTimeoutTooLong)
        );
        assert_eq!(
            d.with_peer_timeout(Duration::MAX),
            Err(ConfigError::PeerTimeoutTooLong)
        );
    }

    #[test]
    fn jitter_is_quantised_without_floats_later() {
        let d = Config::default();
        assert_eq!(d.with_jitter(0.0).unwrap().jitter_q(), 0);
        assert_eq!(d.with_jitter(0.5).unwrap().jitter_q(), 32_768);
        assert_eq!(d.with_jitter(0.25).unwrap().jitter_q(), 16_384);
    }

    #[test]
    fn display_is_lower_case_without_period() {
        for e in [
            ConfigError::IntervalTooShort,
            ConfigError::IntervalTooLong,
            ConfigError::JitterOutOfRange,
            ConfigError::ZeroPeerTimeout,
            ConfigError::PeerTimeoutTooLong,
            ConfigError::BatchWindowTooLong,
        ] {
            let s = e.to_string();
            assert!(s.starts_with(|c: char| c.is_ascii_lowercase()), "{s}");
            assert!(!s.ends_with('.'), "{s}");
            let _: &dyn core::error::Error = &e;
        }
    }

    #[test]
    fn builders_keep_other_fields() {
        let c = Config::new(Duration::from_secs(5))
            .unwrap()
            .with_jitter(0.3)
            .unwrap()
            .with_peer_timeout(Duration::from_secs(12))
            .unwrap()
            .with_policy(Policy::Fixed);
        assert_eq!(c.interval(), Duration::from_secs(5));
        assert_eq!(c.jitter(), 0.3);
        assert_eq!(c.peer_timeout(), Some(Duration::from_secs(12)));
        assert_eq!(c.policy(), Policy::Fixed);
    }
}
