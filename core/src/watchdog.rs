//! Dead-peer detection: has the peer gone silent?

use core::fmt;
use core::time::Duration;

use crate::instant::{micros, Instant};

/// The peer sent nothing at all, not even a keepalive, for at least the peer
/// timeout: the event of a [`PeerWatchdog`], and the error the adapters
/// report for it.
///
/// ```
/// use std::time::Duration;
/// # use inlinekeepalive_core as inlinekeepalive;
/// use inlinekeepalive::PeerTimedOut;
///
/// let e = PeerTimedOut { silent_for: Duration::from_secs(45) };
/// assert_eq!(e.to_string(), "peer sent nothing, not even a keepalive, for 45s");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerTimedOut {
    /// How long the peer had been silent when the silence was noticed: at
    /// least the peer timeout.
    pub silent_for: Duration,
}

impl fmt::Display for PeerTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "peer sent nothing, not even a keepalive, for {:?}",
            self.silent_for
        )
    }
}

impl core::error::Error for PeerTimedOut {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Watching; the peer is declared silent at `at` (last bytes + timeout).
    Watching { at: Instant },
    /// Silent for `silent_for`; the event waits for `poll_event`.
    Silent { silent_for: Duration },
    /// Silent and reported; the next bytes from the peer re-arm.
    Reported,
    /// The peer finished sending: never watch again.
    Closed,
}

/// Dead-peer detection for one direction of a stream: reports a peer that
/// sends nothing at all for longer than a timeout.
///
/// HTTP/2 PINGs cannot tell whether the peer behind a proxy is alive (the
/// proxy answers them), but a peer that sends inline keepalives proves it
/// with bytes. Watch only a peer that is known to send keepalives at an
/// interval well below the timeout; a quiet but healthy peer that sends none
/// would be reported.
///
/// # Activity rule
///
/// **Any received byte proves the peer alive**: call
/// [`on_received`](Self::on_received) for every chunk that arrives, not only
/// for whole messages, so that a large message trickling in slowly is never
/// mistaken for silence. Keepalives, collisions, application messages and
/// partial frames count alike.
///
/// # Polling order
///
/// After every input ([`on_received`](Self::on_received),
/// [`handle_timeout`](Self::handle_timeout)), drain
/// [`poll_event`](Self::poll_event), then arm one timer for
/// [`poll_timeout`](Self::poll_timeout). Calling `handle_timeout` early is
/// harmless. Time that goes backwards counts as no time.
///
/// ```
/// use core::time::Duration;
/// use inlinekeepalive_core::{Instant, PeerTimedOut, PeerWatchdog};
///
/// let ms = Instant::from_millis;
/// let mut watchdog = PeerWatchdog::new(Duration::from_secs(45), ms(0));
/// assert_eq!(watchdog.poll_timeout(), Some(ms(45_000)));
///
/// watchdog.on_received(ms(20_000)); // a keepalive, or any bytes
/// watchdog.handle_timeout(ms(45_000)); // early: nothing
/// assert_eq!(watchdog.poll_event(), None);
///
/// watchdog.handle_timeout(ms(70_000));
/// assert_eq!(
///     watchdog.poll_event(),
///     Some(PeerTimedOut { silent_for: Duration::from_secs(50) })
/// );
/// assert_eq!(watchdog.poll_event(), None); // once per silence
/// assert_eq!(watchdog.poll_timeout(), None);
///
/// watchdog.on_received(ms(80_000)); // the peer is back: watch again
/// assert_eq!(watchdog.poll_timeout(), Some(ms(125_000)));
/// ```
#[derive(Clone, Debug)]
pub struct PeerWatchdog {
    state: State,
    timeout_us: u64,
    /// Silences reported by `poll_event`. Saturates.
    timeouts: u64,
}

impl PeerWatchdog {
    /// Watches a peer from `now`: silent once nothing arrived for `timeout`.
    ///
    /// ```
    /// use core::time::Duration;
    /// use inlinekeepalive_core::{Instant, PeerWatchdog};
    ///
    /// let watchdog = PeerWatchdog::new(Duration::from_secs(30), Instant::from_millis(5));
    /// assert_eq!(watchdog.poll_timeout(), Some(Instant::from_millis(30_005)));
    /// ```
    #[must_use]
    pub fn new(timeout: Duration, now: Instant) -> Self {
        let timeout_us = micros(timeout);
        Self {
            state: State::Watching {
                at: now.add_micros(timeout_us),
            },
            timeout_us,
            timeouts: 0,
        }
    }

    /// Bytes arrived from the peer at `now`: it is alive. Pushes the deadline
    /// back, re-arms the detection after a reported silence, and withdraws a
    /// silence not yet polled.
    ///
    /// ```
    /// use core::time::Duration;
    /// use inlinekeepalive_core::{Instant, PeerWatchdog};
    ///
    /// let ms = Instant::from_millis;
    /// let mut watchdog = PeerWatchdog::new(Duration::from_millis(300), ms(0));
    /// watchdog.handle_timeout(ms(300)); // silent...
    /// watchdog.on_received(ms(310)); // ...but bytes came before the event was polled
    /// assert_eq!(watchdog.poll_event(), None);
    /// assert_eq!(watchdog.poll_timeout(), Some(ms(610)));
    /// ```
    #[inline]
    pub fn on_received(&mut self, now: Instant) {
        let at = now.add_micros(self.timeout_us);
        match &mut self.state {
            State::Watching { at: deadline } => *deadline = (*deadline).max(at),
            State::Silent { .. } | State::Reported => self.state = State::Watching { at },
            State::Closed => {}
        }
    }

    /// Processes the deadline if it passed by `now`; safe to call early, late
    /// or repeatedly.
    #[inline]
    pub fn handle_timeout(&mut self, now: Instant) {
        if let State::Watching { at } = self.state {
            if at <= now {
                let late = now.saturating_duration_since(at);
                self.state = State::Silent {
                    silent_for: late.saturating_add(Duration::from_micros(self.timeout_us)),
                };
            }
        }
    }

    /// The peer finished sending (its end of the stream arrived): detection
    /// stops for good, and an unreported silence is dropped.
    ///
    /// ```
    /// use core::time::Duration;
    /// use inlinekeepalive_core::{Instant, PeerWatchdog};
    ///
    /// let mut watchdog = PeerWatchdog::new(Duration::from_secs(45), Instant::ZERO);
    /// watchdog.close();
    /// watchdog.handle_timeout(Instant::from_millis(100_000));
    /// assert_eq!((watchdog.poll_event(), watchdog.poll_timeout()), (None, None));
    /// ```
    pub fn close(&mut self) {
        self.state = State::Closed;
    }

    /// The silence to report, once per silence.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<PeerTimedOut> {
        let State::Silent { silent_for } = self.state else {
            return None;
        };
        self.state = State::Reported;
        self.timeouts = self.timeouts.saturating_add(1);
        Some(PeerTimedOut { silent_for })
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called:
    /// `None` once a silence was found, or after [`close`](Self::close).
    #[must_use]
    #[inline]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Watching { at } => Some(at),
            _ => None,
        }
    }

    /// Silences reported by [`poll_event`](Self::poll_event) so far.
    #[must_use]
    pub fn timeouts(&self) -> u64 {
        self.timeouts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Instant {
        Instant::from_millis(n)
    }

    #[test]
    fn dead_peer_is_reported_once_per_silence() {
        let mut w = PeerWatchdog::new(Duration::from_millis(300), ms(0));
        assert_eq!(w.poll_timeout(), Some(ms(300)));
        w.on_received(ms(100));
        assert_eq!(w.poll_timeout(), Some(ms(400)));
        w.handle_timeout(ms(399));
        assert_eq!(w.poll_event(), None);
        w.handle_timeout(ms(450));
        assert_eq!(
            w.poll_event(),
            Some(PeerTimedOut {
                silent_for: Duration::from_millis(350)
            })
        );
        assert_eq!(w.poll_timeout(), None);
        for t in [450, 800, 5_000] {
            w.handle_timeout(ms(t));
            assert_eq!(w.poll_event(), None, "reported once per silence");
        }
        w.on_received(ms(5_000));
        assert_eq!(w.poll_timeout(), Some(ms(5_300)));
        w.handle_timeout(ms(5_300));
        assert!(w.poll_event().is_some());
        assert_eq!(w.timeouts(), 2);
    }

    #[test]
    fn a_trickle_of_bytes_keeps_the_peer_alive() {
        // One large message arriving 1 KiB every 100 ms for 30 s, against a
        // 3 s timeout: never silent.
        let mut w = PeerWatchdog::new(Duration::from_secs(3), ms(0));
        for t in (0..30_000).step_by(100) {
            w.handle_timeout(ms(t));
            assert_eq!(w.poll_event(), None, "at {t} ms");
            w.on_received(ms(t));
        }
    }

    #[test]
    fn time_going_backwards_is_no_time_passing() {
        let mut w = PeerWatchdog::new(Duration::from_millis(300), ms(1_000));
        w.on_received(ms(5));
        assert_eq!(w.poll_timeout(), Some(ms(1_300)));
        w.handle_timeout(ms(0));
        assert_eq!(w.poll_event(), None);
        let end = Instant::from_micros(u64::MAX);
        w.on_received(end);
        w.handle_timeout(end);
        assert!(w.poll_event().is_some(), "saturates, never wraps");
    }

    #[test]
    fn closed_is_final() {
        let mut w = PeerWatchdog::new(Duration::from_millis(300), ms(0));
        w.handle_timeout(ms(300));
        w.close();
        w.on_received(ms(400));
        w.handle_timeout(ms(10_000));
        assert_eq!((w.poll_event(), w.poll_timeout()), (None, None));
    }

    #[test]
    fn display_is_lower_case_without_period() {
        use std::string::ToString;
        let s = PeerTimedOut {
            silent_for: Duration::from_millis(1_500),
        }
        .to_string();
        assert_eq!(s, "peer sent nothing, not even a keepalive, for 1.5s");
    }
}
