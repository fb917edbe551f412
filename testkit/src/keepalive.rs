//! The shadow model of the send schedule, [`Keepalive`].
//!
//! [`KeepaliveModel`] owns the machine under test. Each of its methods gives
//! the machine one input (or asks it one question) and checks the answer, and
//! the state afterwards, against the rules of the schedule, written here from
//! what the caller told it rather than from how the machine works:
//!
//! - no keepalive before support is known, after it was refused, or after
//!   [`close`](Keepalive::close); never two at once;
//! - none sooner than `interval * (1 - jitter)` after what the next one waits
//!   on: under [`Policy::Idle`] the last send of any kind whose time the
//!   machine was given (or its creation), under [`Policy::Fixed`] the last
//!   keepalive;
//! - none lost or late when the caller is prompt ([`KeepaliveModel::wake`]):
//!   the first `Fixed` one at once, then one within `interval` of what it
//!   waits on (for `Idle`, of the last send, timed or not);
//! - [`poll_timeout`](Keepalive::poll_timeout) is never at or before `now`
//!   after `handle_timeout(now)`, never later than what is due, unchanged by
//!   [`on_sent`](Keepalive::on_sent) and by an `on_sent_with` that read no
//!   clock, and `None` whenever nothing can ever be sent;
//! - `on_sent_with` reads the clock at most once, says so, and never where
//!   no keepalive depends on it;
//! - the counters and getters agree with the model.
//!
//! The model assumes that time never goes backwards (the machine's handling
//! of time that does is covered by the core's unit tests). Times are integer
//! microseconds since the epoch of the machine's [`Instant`]s.

use inlinekeepalive_core::{Config, Instant, Keepalive, Policy};

/// A [`Keepalive`] under test, beside what it was told. Every method checks
/// the machine against the rules of the [module](self) and panics, with what
/// went wrong, on the first violation.
///
/// ```
/// use inlinekeepalive_core::{Config, Policy};
/// use inlinekeepalive_testkit::keepalive::KeepaliveModel;
///
/// let config = Config::default().with_policy(Policy::Fixed); // every 20 s
/// let mut model = KeepaliveModel::new(config, 7, 0);
/// model.set_peer_support(0, true);
/// assert!(model.wake(0, true).sent); // the first Fixed keepalive: at once
/// let next = model.wake(1_000, true).next.unwrap(); // nothing due yet
/// assert!(model.wake(next.as_micros(), true).sent);
/// assert_eq!(model.keepalives(), 2);
/// ```
#[derive(Clone, Debug)]
pub struct KeepaliveModel {
    ka: Keepalive,
    fixed: bool,
    /// The interval, µs.
    interval: u64,
    /// The shortest wait jitter allows, µs: `interval * (1 - jitter)`, with
    /// the jitter quantised to 1/65536 as the configuration keeps it.
    min_wait: u64,
    /// `None` until told; `Some(false)` is final.
    support: Option<bool>,
    closed: bool,
    /// The latest instant given to the machine (or its creation).
    now: u64,
    /// Last send of any kind, or creation: what an `Idle` keepalive waits
    /// on at the latest. Untimed sends count too.
    last_activity: u64,
    /// Last send whose time the machine was given (`on_sent`, a clock read
    /// of `on_sent_with`, a keepalive) or creation: an `Idle` keepalive is
    /// never sooner than the minimum wait after it. Untimed sends may make a
    /// keepalive early (never late), but not earlier than that.
    last_timed: u64,
    /// Last keepalive since support was granted: what `Fixed` waits on.
    last_keepalive: Option<u64>,
    keepalives: u64,
}

/// What a prompt caller saw when woken: see [`KeepaliveModel::wake`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Woken {
    /// A keepalive went out.
    pub sent: bool,
    /// The machine's next deadline ([`Keepalive::poll_timeout`]).
    pub next: Option<Instant>,
}

fn at(us: u64) -> Instant {
    Instant::from_micros(us)
}

impl KeepaliveModel {
    /// A machine made with [`Keepalive::new`]`(config, now)` and seeded with
    /// `seed`, and its model.
    #[must_use]
    pub fn new(config: Config, seed: u64, now: u64) -> Self {
        let interval = u64::try_from(config.interval().as_micros()).expect("interval in µs");
        // As `Config::with_jitter` quantises it: in 1/65536, rounded.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let jitter_q = (f64::from(config.jitter()) * 65_536.0).round() as u64;
        let model = Self {
            ka: Keepalive::new(config, at(now)).with_seed(seed),
            fixed: config.policy() == Policy::Fixed,
            interval,
            min_wait: interval - ((interval * jitter_q) >> 16),
            support: None,
            closed: false,
            now,
            last_activity: now,
            last_timed: now,
            last_keepalive: None,
            keepalives: 0,
        };
        model.check();
        model
    }

    /// The machine under test, for questions that change nothing.
    #[must_use]
    pub fn machine(&self) -> &Keepalive {
        &self.ka
    }

    /// Keepalives sent so far.
    #[must_use]
    pub fn keepalives(&self) -> u64 {
        self.keepalives
    }

    /// The interval, µs.
    #[must_use]
    pub fn interval(&self) -> u64 {
        self.interval
    }

    /// The shortest wait between keepalives that jitter allows, µs.
    #[must_use]
    pub fn min_wait(&self) -> u64 {
        self.min_wait
    }

    /// Whether a keepalive may ever be sent again: support granted and not
    /// closed.
    #[must_use]
    pub fn may_send(&self) -> bool {
        self.support == Some(true) && !self.closed
    }

    /// [`Keepalive::on_sent`]: an application message at `now`.
    ///
    /// # Panics
    /// If the deadline moved.
    pub fn on_sent(&mut self, now: u64) {
        self.tick(now);
        let before = self.ka.poll_timeout();
        self.ka.on_sent(at(now));
        assert_eq!(self.ka.poll_timeout(), before, "on_sent moved the deadline");
        self.last_activity = now;
        self.last_timed = now;
        self.check();
    }

    /// [`Keepalive::on_sent_with`]: an application message at `now`, whose
    /// time the machine reads only if it asks. Returns what it returned.
    ///
    /// # Panics
    /// If it read the clock more than once, returned other than what it
    /// read, read it where no keepalive depends on it (`Fixed`, refused,
    /// closed), or moved the deadline without reading it.
    pub fn on_sent_with(&mut self, now: u64) -> Option<Instant> {
        self.tick(now);
        let before = self.ka.poll_timeout();
        let mut reads = 0;
        let read = self.ka.on_sent_with(|| {
            reads += 1;
            at(now)
        });
        assert!(reads <= 1, "on_sent_with read the clock {reads} times");
        assert_eq!(
            read,
            (reads == 1).then(|| at(now)),
            "Some(now) iff the clock was read"
        );
        if read.is_some() {
            self.last_timed = now;
        } else {
            assert_eq!(
                self.ka.poll_timeout(),
                before,
                "untimed send moved the deadline"
            );
        }
        if self.fixed || self.support == Some(false) || self.closed {
            assert_eq!(reads, 0, "clock read where no keepalive depends on it");
        }
        self.last_activity = now;
        self.check();
        read
    }

    /// [`Keepalive::set_peer_support`] at `now`.
    pub fn set_peer_support(&mut self, now: u64, supported: bool) {
        self.tick(now);
        self.ka.set_peer_support(at(now), supported);
        if !self.closed {
            match (self.support, supported) {
                (None, true) => self.support = Some(true),
                (_, false) => self.support = Some(false),
                _ => {}
            }
        }
        self.check();
    }

    /// [`Keepalive::close`].
    pub fn close(&mut self) {
        self.ka.close();
        self.closed = true;
        self.check();
    }

    /// [`Keepalive::handle_timeout`] at `now`.
    ///
    /// # Panics
    /// If [`poll_timeout`](Keepalive::poll_timeout) is then at or before
    /// `now`.
    pub fn handle_timeout(&mut self, now: u64) {
        self.tick(now);
        self.ka.handle_timeout(at(now));
        if let Some(t) = self.ka.poll_timeout() {
            assert!(
                t > at(now),
                "poll_timeout {t:?} not after handle_timeout({now} us)"
            );
        }
        self.check();
    }

    /// [`Keepalive::poll_keepalive`] at `now`, by a caller able to write a
    /// frame. Returns whether a keepalive went out.
    ///
    /// # Panics
    /// On a keepalive that may not go out, or that comes too soon.
    pub fn poll_keepalive(&mut self, now: u64) -> bool {
        self.tick(now);
        let sent = self.ka.poll_keepalive(at(now));
        if sent {
            assert!(
                self.may_send(),
                "keepalive at {now} us without support, after refusal or after close"
            );
            if let Some(gap) = self.send_gap() {
                assert!(
                    gap >= self.min_wait,
                    "keepalive {gap} us after what it waits on, less than {} us (interval {} us)",
                    self.min_wait,
                    self.interval
                );
            }
            self.last_keepalive = Some(now);
            self.last_activity = now;
            self.last_timed = now;
            self.keepalives += 1;
            assert!(!self.ka.poll_keepalive(at(now)), "two keepalives at once");
        }
        self.check();
        sent
    }

    /// What a prompt caller does when woken at `now`: `handle_timeout(now)`,
    /// then, if it is `ready` to write a frame, `poll_keepalive(now)`, then
    /// `poll_timeout()`.
    ///
    /// # Panics
    /// Besides the checks of [`handle_timeout`](Self::handle_timeout) and
    /// [`poll_keepalive`](Self::poll_keepalive): when `ready`, if a keepalive
    /// that is due did not go out (one interval has passed since what it
    /// waits on), or if the next deadline is later than the next keepalive
    /// may be.
    pub fn wake(&mut self, now: u64, ready: bool) -> Woken {
        self.handle_timeout(now);
        let sent = ready && self.poll_keepalive(now);
        let next = self.ka.poll_timeout();
        if ready && self.may_send() {
            if !sent {
                // Idle: untimed sends may have made it early, never late.
                let since = if self.fixed {
                    self.last_keepalive
                } else {
                    Some(self.last_activity)
                };
                assert!(
                    since.is_some_and(|since| now - since < self.interval),
                    "keepalive lost or late at {now} us: it waits on {since:?} us, interval {} us",
                    self.interval
                );
            }
            let since = if self.fixed {
                self.last_keepalive
                    .expect("the first Fixed keepalive went out")
            } else {
                self.last_activity
            };
            let due = at(since + self.interval);
            assert!(
                next.is_some_and(|t| t <= due),
                "deadline {next:?} later than the next keepalive is due, {due:?}"
            );
        }
        Woken { sent, next }
    }

    /// Time since what the next keepalive waits on at the earliest; `None`
    /// for the first `Fixed` keepalive, due at once.
    fn send_gap(&self) -> Option<u64> {
        if self.fixed {
            self.last_keepalive.map(|t| self.now - t)
        } else {
            Some(self.now - self.last_timed)
        }
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
        assert_eq!(
            self.ka.keepalives_sent(),
            self.keepalives,
            "keepalives_sent"
        );
        if !self.may_send() {
            assert_eq!(
                self.ka.poll_timeout(),
                None,
                "nothing can be sent, yet a deadline"
            );
            assert!(
                !self.ka.is_due(),
                "nothing can be sent, yet a keepalive is due"
            );
        }
        if !self.closed {
            assert_eq!(self.ka.peer_support(), self.support, "peer_support");
        } else if self.support.is_none() {
            assert_eq!(
                self.ka.peer_support(),
                None,
                "peer_support, closed while unknown"
            );
        }
    }
}
