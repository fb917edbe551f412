//! The shadow model of dead-peer detection, [`PeerWatchdog`].
//!
//! [`WatchdogModel`] owns the machine under test; each of its methods gives
//! it one input and checks it against the rules:
//!
//! - any received bytes keep the peer alive: the peer is silent once nothing
//!   at all arrived for the timeout since the last bytes (or since watching
//!   started), and not before;
//! - a silence is reported once, by the first [`poll_event`] after a
//!   [`handle_timeout`] that noticed it, with `silent_for` the time from the
//!   last bytes to that `handle_timeout`; bytes that arrive before it is
//!   polled withdraw it, and the next silence is reported again;
//! - the deadline is exactly the last bytes plus the timeout while watching,
//!   and `None` once a silence was noticed or after [`close`];
//! - nothing at all after [`close`], and the counter agrees.
//!
//! The model assumes that time never goes backwards. Times are integer
//! microseconds.
//!
//! [`poll_event`]: PeerWatchdog::poll_event
//! [`handle_timeout`]: PeerWatchdog::handle_timeout
//! [`close`]: PeerWatchdog::close

use std::time::Duration;

use inlinekeepalive_core::{Instant, PeerTimedOut, PeerWatchdog};

/// A [`PeerWatchdog`] under test, beside what it was told. Every method
/// checks the machine against the rules of the [module](self) and panics on
/// the first violation.
///
/// ```
/// use std::time::Duration;
/// use inlinekeepalive_testkit::watchdog::WatchdogModel;
///
/// let mut model = WatchdogModel::new(Duration::from_millis(300), 0);
/// model.on_received(100_000);
/// assert_eq!(model.wake(399_999), None); // alive
/// let event = model.wake(450_000).expect("silent since 100 ms");
/// assert_eq!(event.silent_for, Duration::from_millis(350));
/// assert_eq!(model.wake(900_000), None); // once per silence
/// ```
#[derive(Clone, Debug)]
pub struct WatchdogModel {
    watchdog: PeerWatchdog,
    /// The timeout, µs.
    timeout: u64,
    closed: bool,
    /// The latest instant given to the machine.
    now: u64,
    /// Last bytes from the peer, or when watching started.
    last_rx: u64,
    /// The current silence was reported.
    reported: bool,
    /// A silence noticed by `handle_timeout` and not yet polled: its length.
    pending: Option<u64>,
    timeouts: u64,
}

fn at(us: u64) -> Instant {
    Instant::from_micros(us)
}

impl WatchdogModel {
    /// A machine made with [`PeerWatchdog::new`]`(timeout, now)`, and its
    /// model.
    ///
    /// # Panics
    /// If `timeout` does not fit in 64 bits of microseconds.
    #[must_use]
    pub fn new(timeout: Duration, now: u64) -> Self {
        let model = Self {
            watchdog: PeerWatchdog::new(timeout, at(now)),
            timeout: u64::try_from(timeout.as_micros()).expect("timeout in µs"),
            closed: false,
            now,
            last_rx: now,
            reported: false,
            pending: None,
            timeouts: 0,
        };
        model.check();
        model
    }

    /// The machine under test, for questions that change nothing.
    #[must_use]
    pub fn machine(&self) -> &PeerWatchdog {
        &self.watchdog
    }

    /// Silences reported so far.
    #[must_use]
    pub fn timeouts(&self) -> u64 {
        self.timeouts
    }

    /// [`PeerWatchdog::on_received`]: bytes (any bytes) arrived at `now`.
    pub fn on_received(&mut self, now: u64) {
        self.tick(now);
        self.watchdog.on_received(at(now));
        if !self.closed {
            self.last_rx = now;
            self.reported = false;
            self.pending = None;
        }
        self.check();
    }

    /// [`PeerWatchdog::close`].
    pub fn close(&mut self) {
        self.watchdog.close();
        self.closed = true;
        self.pending = None;
        self.check();
    }

    /// [`PeerWatchdog::handle_timeout`] at `now`.
    ///
    /// # Panics
    /// If [`poll_timeout`](PeerWatchdog::poll_timeout) is then at or before
    /// `now`, or not what the model expects.
    pub fn handle_timeout(&mut self, now: u64) {
        self.tick(now);
        self.watchdog.handle_timeout(at(now));
        if let Some(t) = self.watchdog.poll_timeout() {
            assert!(
                t > at(now),
                "poll_timeout {t:?} not after handle_timeout({now} us)"
            );
        }
        if !self.closed
            && !self.reported
            && self.pending.is_none()
            && now - self.last_rx >= self.timeout
        {
            self.pending = Some(now - self.last_rx);
        }
        self.check();
    }

    /// [`PeerWatchdog::poll_event`]. Returns what it returned.
    ///
    /// # Panics
    /// If the event is not the one the model expects (or none).
    pub fn poll_event(&mut self) -> Option<PeerTimedOut> {
        let got = self.watchdog.poll_event();
        let want = self.pending.take().map(|us| PeerTimedOut {
            silent_for: Duration::from_micros(us),
        });
        assert_eq!(got, want, "poll_event at {} us", self.now);
        if want.is_some() {
            self.reported = true;
            self.timeouts += 1;
        }
        self.check();
        got
    }

    /// What a prompt caller does when woken at `now`: `handle_timeout(now)`,
    /// then drains [`poll_event`](PeerWatchdog::poll_event). Returns the
    /// event, if any.
    ///
    /// # Panics
    /// Besides the checks of the two calls: on a second event.
    pub fn wake(&mut self, now: u64) -> Option<PeerTimedOut> {
        self.handle_timeout(now);
        let event = self.poll_event();
        assert_eq!(
            self.watchdog.poll_event(),
            None,
            "a second event at {now} us"
        );
        event
    }

    fn tick(&mut self, now: u64) {
        assert!(
            now >= self.now,
            "the model needs time that never goes backwards: {now} us after {} us",
            self.now
        );
        self.now = now;
    }

    /// What holds after every input.
    fn check(&self) {
        assert_eq!(self.watchdog.timeouts(), self.timeouts, "timeouts");
        let want = (!self.closed && !self.reported && self.pending.is_none())
            .then(|| at(self.last_rx + self.timeout));
        assert_eq!(self.watchdog.poll_timeout(), want, "poll_timeout");
    }
}
