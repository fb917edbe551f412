//! The send schedule: when must a keepalive go out?

use crate::config::{Config, Policy};
use crate::instant::Instant;

/// The schedule's state. Every deadline lives in the variant that needs it,
/// so "armed without a deadline" cannot be represented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Whether the reader of our send direction removes keepalives is not
    /// known yet: nothing is sent.
    Unknown,
    /// Supported; look again at `at`. Under [`Policy::Idle`] this is a *soft*
    /// deadline: messages sent since it was set may have moved the real one
    /// (`idle_since + wait`) later, and `handle_timeout` then re-arms without
    /// firing. Under [`Policy::Fixed`] it is exact.
    Armed { at: Instant, sampling: Sampling },
    /// A keepalive is due. It stays due until `poll_keepalive` reports it
    /// (under `Idle`, an application message sent meanwhile withdraws it).
    Due,
    /// The reader does not remove keepalives: never send (Waypoint's rule).
    Unsupported,
    /// The send side is closed: never send again.
    Closed,
}

/// What the schedule knows of the times of the messages reported by
/// [`Keepalive::on_sent_with`], which reads the clock only now and then.
///
/// The invariant that makes it safe: `idle_since` is never later than the
/// last message (so a keepalive is never late), and while sampling, every
/// untimed message was sent after `at - sample` (so `at - sample` is a lower
/// bound for the last one, at most one sampling period early).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sampling {
    /// `idle_since` covers every message sent: the next message reads the
    /// clock and starts a sampling period.
    Off,
    /// A sampling period runs until `at`; it started no earlier than
    /// `at - sample`. `untimed` messages were sent in it without the time.
    On { untimed: u8 },
}

/// Untimed messages in a row after which [`Keepalive::on_sent_with`] reads
/// the clock anyway: bounds how stale `idle_since` gets when the caller is
/// slow to call `handle_timeout` (for example while it is busy writing).
const UNTIMED_MAX: u8 = 64;

/// Weyl increment of the jitter generator (2^32 / golden ratio).
const WEYL: u32 = 0x9E37_79B9;

/// A 32-bit finaliser (Chris Wellons' `lowbias32`): a counter through this is
/// a fine generator for jitter, in four bytes of state.
fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^ (x >> 16)
}

/// Folds a 64-bit seed into the 32-bit generator state (splitmix64's finaliser).
fn fold_seed(seed: u64) -> u32 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    #[allow(clippy::cast_possible_truncation)]
    let folded = (z ^ (z >> 32)) as u32;
    folded
}

/// The send schedule of one stream: when must a keepalive go out?
///
/// It does no I/O, reads no clock and allocates nothing: time and events come
/// in as arguments, decisions come out of the `poll_*` methods. Everything is
/// deterministic given the inputs and the seed. Dead-peer detection is a
/// separate machine, [`PeerWatchdog`](crate::PeerWatchdog).
///
/// # Methods
///
/// - Inputs: [`set_peer_support`](Self::set_peer_support),
///   [`on_sent`](Self::on_sent) (or [`on_sent_with`](Self::on_sent_with),
///   which reads the caller's clock only now and then),
///   [`handle_timeout`](Self::handle_timeout), [`close`](Self::close).
/// - Outputs (`#[must_use]`): [`poll_keepalive`](Self::poll_keepalive),
///   [`poll_timeout`](Self::poll_timeout).
/// - Getters: [`is_due`](Self::is_due), [`peer_support`](Self::peer_support),
///   [`keepalives_sent`](Self::keepalives_sent).
///
/// # Polling order
///
/// After **every** input:
/// 1. when able to start writing a frame (at a frame boundary, transport
///    ready), call [`poll_keepalive`](Self::poll_keepalive); on `true`, write
///    [`wire::KEEPALIVE_FRAME`](crate::wire::KEEPALIVE_FRAME);
/// 2. last, [`poll_timeout`](Self::poll_timeout), and (re-)arm one timer for
///    it; when it fires, call [`handle_timeout`](Self::handle_timeout).
///
/// # Activity rule
///
/// What this side *sends* (application messages, and keepalives) postpones
/// the next keepalive under [`Policy::Idle`] and nothing under
/// [`Policy::Fixed`]. What it receives never does: a proxy times out each
/// direction of a stream on its own.
///
/// # Time
///
/// `now` must never go backwards. If it does, the machine treats it as if no
/// time had passed: nothing fires early and nothing panics. All instant
/// arithmetic saturates.
///
/// [`poll_timeout`](Self::poll_timeout) is a *soft* deadline: waking up early
/// is harmless ([`handle_timeout`](Self::handle_timeout) re-arms without
/// firing), waking up late delays the keepalive. [`on_sent`](Self::on_sent)
/// (the hot path, one store) never changes it, so an adapter may keep a timer
/// that is already armed.
///
/// # Example
///
/// A client stream with the default 20 s interval, driven by a simulated clock:
///
/// ```
/// use inlinekeepalive_core::{Config, Instant, Keepalive};
///
/// let ms = Instant::from_millis;
/// let mut ka = Keepalive::new(Config::default(), ms(0));
/// assert_eq!(ka.poll_timeout(), None); // support unknown: nothing scheduled
///
/// ka.set_peer_support(ms(0), true); // e.g. learned from a probe
/// assert_eq!(ka.poll_timeout(), Some(ms(20_000)));
///
/// ka.on_sent(ms(15_000)); // an application message: pushes the keepalive back
/// ka.handle_timeout(ms(20_000)); // the (soft) timer fires: not idle long enough
/// assert!(!ka.poll_keepalive(ms(20_000)));
/// assert_eq!(ka.poll_timeout(), Some(ms(35_000)));
///
/// ka.handle_timeout(ms(35_000));
/// assert!(ka.poll_keepalive(ms(35_000))); // write wire::KEEPALIVE_FRAME now
/// assert_eq!(ka.poll_timeout(), Some(ms(55_000)));
///
/// ka.close();
/// assert_eq!(ka.poll_timeout(), None);
/// ```
///
/// A driving loop, with a transport that may be busy when the timer fires:
///
/// ```
/// use inlinekeepalive_core::{wire, Config, Instant, Keepalive};
///
/// let mut ka = Keepalive::new(Config::default(), Instant::ZERO);
/// ka.set_peer_support(Instant::ZERO, true);
/// let mut out = Vec::new();
/// let mut now = Instant::ZERO;
/// for step in 0..4 {
///     let ready = step != 1; // busy on the first wake-up: the keepalive stays due
///     ka.handle_timeout(now);
///     if ready && ka.poll_keepalive(now) {
///         out.extend_from_slice(&wire::KEEPALIVE_FRAME);
///     }
///     now = ka.poll_timeout().unwrap_or(now);
/// }
/// assert_eq!(out.len(), 2 * wire::KEEPALIVE_FRAME.len());
/// ```
#[derive(Clone, Debug)]
pub struct Keepalive {
    state: State,
    /// Start of the current send-idle period: the latest application
    /// message, keepalive or (initially) the creation of the machine.
    idle_since: Instant,
    // Milliseconds, as `Config` keeps them: 8 bytes less per stream than
    // microseconds in `u64`s.
    interval_ms: u32,
    /// Send deadlines are rounded down to multiples of this (0: not at all).
    batch_ms: u32,
    /// Jitter in units of 1/65536 of the interval.
    jitter_q: u16,
    policy: Policy,
    /// Jitter generator: a Weyl counter, mixed on use; advanced per keepalive.
    rng: u32,
    keepalives_sent: u64,
}

impl Keepalive {
    /// A schedule for one stream, created at `now`.
    ///
    /// Nothing is scheduled until [`set_peer_support`](Self::set_peer_support)
    /// says the peer removes keepalives. The send-idle period starts at `now`.
    /// The jitter seed defaults to one derived from `now`; give each stream
    /// its own with [`with_seed`](Self::with_seed) when using jitter.
    ///
    /// ```
    /// use inlinekeepalive_core::{Config, Instant, Keepalive};
    /// let ka = Keepalive::new(Config::default(), Instant::from_millis(5));
    /// assert_eq!(ka.poll_timeout(), None);
    /// ```
    #[must_use]
    pub fn new(config: Config, now: Instant) -> Self {
        Self {
            state: State::Unknown,
            idle_since: now,
            // Both fit: `Config` checks them against `u32::MAX` ms.
            interval_ms: u32::try_from(config.interval().as_millis()).unwrap_or(u32::MAX),
            batch_ms: config
                .batch_window()
                .map_or(0, |w| u32::try_from(w.as_millis()).unwrap_or(u32::MAX)),
            jitter_q: config.jitter_q(),
            policy: config.policy(),
            rng: fold_seed(now.as_micros()),
            keepalives_sent: 0,
        }
    }

    /// This schedule with the jitter generator seeded from `seed` (for
    /// example a stream id, or a random number from the adapter). Call it
    /// right after [`new`](Self::new). Equal seeds and inputs give equal
    /// outputs.
    ///
    /// ```
    /// use inlinekeepalive_core::{Config, Instant, Keepalive};
    ///
    /// let config = Config::default().with_jitter(0.5)?;
    /// let first = |seed| {
    ///     let mut ka = Keepalive::new(config, Instant::ZERO).with_seed(seed);
    ///     ka.set_peer_support(Instant::ZERO, true);
    ///     ka.poll_timeout()
    /// };
    /// assert_eq!(first(7), first(7));
    /// assert_ne!(first(7), first(8));
    /// # Ok::<(), inlinekeepalive_core::ConfigError>(())
    /// ```
    #[must_use]
    pub fn with_seed(self, seed: u64) -> Self {
        Self {
            rng: fold_seed(seed),
            ..self
        }
    }

    // ----- inputs -----

    /// Whether the reader of our send direction removes keepalives.
    ///
    /// A server passes whether the client announced
    /// `wp-inline-keepalives: true`; a client passes what it learned of the
    /// server (configuration, a response header, or a probe). Until `true`,
    /// nothing is ever sent. `false` is final: nothing is ever sent, and a
    /// later `true` is ignored (Waypoint's compatibility rule). A repeated
    /// `true` changes nothing.
    ///
    /// On `true`, under [`Policy::Fixed`] the first keepalive is due at once;
    /// under [`Policy::Idle`] it is due once nothing was sent for one interval
    /// since the machine was created or the last application message.
    ///
    /// ```
    /// use inlinekeepalive_core::{Config, Instant, Keepalive};
    ///
    /// let mut ka = Keepalive::new(Config::default(), Instant::ZERO);
    /// ka.set_peer_support(Instant::ZERO, false);
    /// ka.set_peer_support(Instant::ZERO, true); // too late: "no" is final
    /// ka.handle_timeout(Instant::from_millis(3_600_000));
    /// assert!(!ka.poll_keepalive(Instant::from_millis(3_600_000)));
    /// assert_eq!(ka.poll_timeout(), None);
    /// ```
    pub fn set_peer_support(&mut self, now: Instant, supported: bool) {
        self.state = match (self.state, supported) {
            (State::Unknown, true) => match self.policy {
                Policy::Fixed => State::Due,
                Policy::Idle => self.idle_check(now),
            },
            (State::Closed, _) | (_, true) => return,
            (_, false) => State::Unsupported,
        };
    }

    /// An application message was sent (handed to the transport) at `now`.
    ///
    /// Under [`Policy::Idle`] it pushes the next keepalive back, and withdraws
    /// one that is due but not yet polled; under [`Policy::Fixed`] it changes
    /// nothing. Keepalives are not reported here:
    /// [`poll_keepalive`](Self::poll_keepalive) returning `true` already
    /// records one.
    ///
    /// This is the hot path: a single store that never moves
    /// [`poll_timeout`](Self::poll_timeout); the deadline is re-checked lazily
    /// in [`handle_timeout`](Self::handle_timeout) and
    /// [`poll_keepalive`](Self::poll_keepalive).
    ///
    /// ```
    /// use inlinekeepalive_core::{Config, Instant, Keepalive};
    ///
    /// let ms = Instant::from_millis;
    /// let mut ka = Keepalive::new(Config::default(), ms(0));
    /// ka.set_peer_support(ms(0), true);
    /// ka.on_sent(ms(19_000));
    /// ka.handle_timeout(ms(20_000));
    /// assert!(!ka.poll_keepalive(ms(20_000)));
    /// assert_eq!(ka.poll_timeout(), Some(ms(39_000)));
    /// ```
    #[inline]
    pub fn on_sent(&mut self, now: Instant) {
        // `max`: time that goes backwards counts as no time.
        self.idle_since = self.idle_since.max(now);
    }

    /// An application message was sent, with the time read only when the
    /// schedule needs it: `now` is called at most once, and for most messages
    /// of a busy stream not at all. Returns the instant it read, if any.
    ///
    /// Use it instead of [`on_sent`](Self::on_sent) when reading the clock
    /// costs more than the rest of sending a message (a vDSO clock read is
    /// ~20 ns, a small in-memory write less).
    ///
    /// Under [`Policy::Idle`] the schedule samples instead of timing every
    /// message: the first message after a quiet spell is timed and starts a
    /// *sampling period* of one eighth of the wait (the interval, less
    /// jitter); the messages after it are only counted, and each
    /// [`handle_timeout`](Self::handle_timeout) at the end of a period
    /// counts them as sent at the period's start. So, when the caller calls
    /// `handle_timeout` at [`poll_timeout`](Self::poll_timeout):
    ///
    /// - a keepalive is **never later** than with `on_sent` (never more than
    ///   the wait after the last message), and at most one eighth of the wait
    ///   earlier;
    /// - a busy stream wakes its timer once per period instead of once per
    ///   wait.
    ///
    /// When it calls `handle_timeout` late (a task busy writing), the early
    /// margin grows by that lateness, but every 64th message in a row is
    /// timed, so it is bounded by the time of 64 messages.
    ///
    /// After a `Some`, [`poll_timeout`](Self::poll_timeout) may be **earlier**
    /// (a period started): re-arm the timer, or call `handle_timeout` if it
    /// has passed. After `None` it is unchanged. Under [`Policy::Fixed`], and
    /// when no keepalive can ever be sent (support refused, closed), it never
    /// reads the clock.
    ///
    /// ```
    /// use inlinekeepalive_core::{Config, Instant, Keepalive};
    ///
    /// let ms = Instant::from_millis;
    /// let mut ka = Keepalive::new(Config::default(), ms(0)); // 20 s interval
    /// ka.set_peer_support(ms(0), true);
    /// // A burst of messages from 5 s: only the first one reads the clock.
    /// assert_eq!(ka.on_sent_with(|| ms(5_000)), Some(ms(5_000)));
    /// assert_eq!(ka.on_sent_with(|| unreachable!()), None);
    /// assert_eq!(ka.poll_timeout(), Some(ms(7_500))); // the period ends
    /// ka.handle_timeout(ms(7_500));
    /// assert!(!ka.poll_keepalive(ms(7_500)));
    /// // Quiet since: the untimed messages count as sent at 5 s.
    /// assert_eq!(ka.poll_timeout(), Some(ms(10_000)));
    /// ka.handle_timeout(ms(10_000));
    /// assert_eq!(ka.poll_timeout(), Some(ms(25_000)));
    /// ```
    #[must_use = "after `Some`, re-arm the timer at `poll_timeout` (or call `handle_timeout` if it has passed)"]
    #[inline]
    pub fn on_sent_with(&mut self, now: impl FnOnce() -> Instant) -> Option<Instant> {
        // The hot path: a message inside a sampling period.
        if let State::Armed {
            sampling: Sampling::On { untimed },
            ..
        } = &mut self.state
        {
            if *untimed < UNTIMED_MAX - 1 {
                *untimed += 1;
                return None;
            }
        }
        self.on_sent_timed(now)
    }

    /// The send side is closed: the stream finished, or a send failed. No
    /// keepalive is ever produced again (one that is due is dropped) and no
    /// deadline remains.
    ///
    /// ```
    /// use inlinekeepalive_core::{Config, Instant, Keepalive, Policy};
    ///
    /// let mut ka = Keepalive::new(Config::default().with_policy(Policy::Fixed), Instant::ZERO);
    /// ka.set_peer_support(Instant::ZERO, true); // a keepalive is due
    /// ka.close();
    /// assert!(!ka.poll_keepalive(Instant::ZERO));
    /// assert_eq!(ka.poll_timeout(), None);
    /// ```
    pub fn close(&mut self) {
        self.state = State::Closed;
    }

    /// Processes a deadline that passed by `now`. Safe to call early, late or
    /// repeatedly: before the deadline it does nothing, and under
    /// [`Policy::Idle`] a soft deadline that application messages have
    /// overtaken is re-armed without firing. Afterwards
    /// [`poll_timeout`](Self::poll_timeout) is never at or before `now`.
    ///
    /// ```
    /// use inlinekeepalive_core::{Config, Instant, Keepalive};
    ///
    /// let ms = Instant::from_millis;
    /// let mut ka = Keepalive::new(Config::default(), ms(0));
    /// ka.set_peer_support(ms(0), true);
    /// ka.handle_timeout(ms(19_999)); // early: a no-op
    /// assert!(!ka.poll_keepalive(ms(19_999)));
    /// ka.handle_timeout(ms(20_000));
    /// assert!(ka.poll_keepalive(ms(20_000)));
    /// ```
    #[inline]
    pub fn handle_timeout(&mut self, now: Instant) {
        let State::Armed { at, sampling } = self.state else {
            return;
        };
        if at > now {
            return;
        }
        self.state = match (self.policy, sampling) {
            (Policy::Fixed, _) => State::Due,
            (Policy::Idle, Sampling::On { untimed }) if untimed > 0 => {
                self.end_sampling_period(at, now)
            }
            // A period with no message, or no sampling: the spell is quiet.
            (Policy::Idle, _) => self.idle_check(now),
        };
    }

    // ----- outputs -----

    /// Whether to write [`wire::KEEPALIVE_FRAME`](crate::wire::KEEPALIVE_FRAME)
    /// now.
    ///
    /// The caller MUST call it only when it is able to start writing a frame:
    /// at a frame boundary, with the transport ready. `true` counts as the
    /// keepalive being sent at `now`: the caller MUST then write it (if the
    /// write fails, call [`close`](Self::close)), and the next keepalive is
    /// scheduled from `now`.
    ///
    /// A keepalive that fell due while the caller could not write stays due
    /// until this is called: it is neither lost nor doubled. Under
    /// [`Policy::Idle`], one withdrawn by an application message sent since is
    /// not reported, and the timer is re-armed instead.
    ///
    /// ```
    /// use inlinekeepalive_core::{Config, Instant, Keepalive};
    ///
    /// let ms = Instant::from_millis;
    /// let mut ka = Keepalive::new(Config::default(), ms(0));
    /// ka.set_peer_support(ms(0), true);
    /// ka.handle_timeout(ms(20_000)); // due, but the transport is busy until 20.5 s
    /// ka.handle_timeout(ms(20_400)); // repeated: still one keepalive due
    /// assert!(ka.poll_keepalive(ms(20_500)));
    /// assert!(!ka.poll_keepalive(ms(20_500)));
    /// assert_eq!(ka.poll_timeout(), Some(ms(40_500)));
    /// ```
    #[must_use]
    #[inline]
    pub fn poll_keepalive(&mut self, now: Instant) -> bool {
        if self.state != State::Due {
            return false;
        }
        if self.policy == Policy::Idle {
            let recheck = self.idle_check(now);
            if recheck != State::Due {
                self.state = recheck;
                return false;
            }
        }
        self.keepalives_sent = self.keepalives_sent.saturating_add(1);
        self.rng = self.rng.wrapping_add(WEYL);
        self.idle_since = self.idle_since.max(now);
        self.state = State::Armed {
            at: self.batched(now.add_micros(self.wait_us())),
            sampling: Sampling::Off,
        };
        true
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called, or
    /// `None` when nothing is scheduled (support unknown or refused, closed,
    /// or a keepalive already due). Call it last, after
    /// [`poll_keepalive`](Self::poll_keepalive).
    ///
    /// It is a soft deadline: calling `handle_timeout` earlier is harmless,
    /// later delays what is due.
    ///
    /// ```
    /// use inlinekeepalive_core::{Config, Instant, Keepalive};
    ///
    /// let mut ka = Keepalive::new(Config::default(), Instant::ZERO);
    /// assert_eq!(ka.poll_timeout(), None);
    /// ka.set_peer_support(Instant::ZERO, true);
    /// assert_eq!(ka.poll_timeout(), Some(Instant::from_millis(20_000)));
    /// ```
    #[must_use]
    #[inline]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Armed { at, .. } => Some(at),
            _ => None,
        }
    }

    // ----- getters -----

    /// Whether a keepalive is due: [`poll_keepalive`](Self::poll_keepalive)
    /// would say so now, unless (under [`Policy::Idle`]) a message sent since
    /// withdraws it. A caller that cannot write at once uses it to decide
    /// whether to get ready (a sink's `poll_ready`).
    ///
    /// ```
    /// use inlinekeepalive_core::{Config, Instant, Keepalive, Policy};
    ///
    /// let mut ka = Keepalive::new(Config::default().with_policy(Policy::Fixed), Instant::ZERO);
    /// assert!(!ka.is_due());
    /// ka.set_peer_support(Instant::ZERO, true);
    /// assert!(ka.is_due());
    /// ```
    #[must_use]
    #[inline]
    pub fn is_due(&self) -> bool {
        self.state == State::Due
    }

    /// What [`set_peer_support`](Self::set_peer_support) said: `None` while
    /// unknown, and once closed (nothing will be sent either way).
    ///
    /// ```
    /// use inlinekeepalive_core::{Config, Instant, Keepalive};
    ///
    /// let mut ka = Keepalive::new(Config::default(), Instant::ZERO);
    /// assert_eq!(ka.peer_support(), None);
    /// ka.set_peer_support(Instant::ZERO, true);
    /// assert_eq!(ka.peer_support(), Some(true));
    /// ```
    #[must_use]
    pub fn peer_support(&self) -> Option<bool> {
        match self.state {
            State::Unknown | State::Closed => None,
            State::Unsupported => Some(false),
            State::Armed { .. } | State::Due => Some(true),
        }
    }

    /// Keepalives reported by [`poll_keepalive`](Self::poll_keepalive), each
    /// counted as sent. Saturates.
    ///
    /// ```
    /// use inlinekeepalive_core::{Config, Instant, Keepalive, Policy};
    ///
    /// let mut ka = Keepalive::new(Config::default().with_policy(Policy::Fixed), Instant::ZERO);
    /// ka.set_peer_support(Instant::ZERO, true);
    /// assert!(ka.poll_keepalive(Instant::ZERO));
    /// assert_eq!(ka.keepalives_sent(), 1);
    /// ```
    #[must_use]
    #[inline]
    pub fn keepalives_sent(&self) -> u64 {
        self.keepalives_sent
    }

    // ----- internals -----

    /// `Due` if nothing was sent for the current wait, else `Armed` at the
    /// real deadline (which is then after `now`).
    #[inline]
    fn idle_check(&self, now: Instant) -> State {
        let at = self.batched(self.idle_since.add_micros(self.wait_us()));
        if at <= now {
            State::Due
        } else {
            State::Armed {
                at,
                sampling: Sampling::Off,
            }
        }
    }

    /// [`on_sent_with`](Self::on_sent_with) outside a sampling period, or at
    /// its 64th untimed message in a row.
    fn on_sent_timed(&mut self, now: impl FnOnce() -> Instant) -> Option<Instant> {
        if self.policy == Policy::Fixed {
            return None;
        }
        match self.state {
            State::Armed { at, .. } => {
                // The first message after a quiet spell, or the 64th untimed
                // one in a row: time it. `idle_since` then covers every
                // message so far, and a period starts (or goes on) from it.
                let t = now();
                self.idle_since = self.idle_since.max(t);
                let period_end = self.idle_since.add_micros(self.sample_us());
                self.state = State::Armed {
                    at: at.min(period_end),
                    sampling: Sampling::On { untimed: 0 },
                };
                Some(t)
            }
            // Support unknown (the idle time counts once it is known), or a
            // keepalive due (this message withdraws it): exact, and rare.
            State::Unknown | State::Due => {
                let t = now();
                self.on_sent(t);
                Some(t)
            }
            State::Unsupported | State::Closed => None,
        }
    }

    /// The end (`period_end`, reached at `now`) of a sampling period in which
    /// untimed messages were sent: they count as sent at the period's start,
    /// the latest instant known to be no later than any of them. A new period
    /// follows, in which the next message is untimed too.
    #[inline]
    fn end_sampling_period(&mut self, period_end: Instant, now: Instant) -> State {
        let sample = self.sample_us();
        let start = Instant::from_micros(period_end.as_micros().saturating_sub(sample));
        self.idle_since = self.idle_since.max(start);
        let deadline = self.batched(self.idle_since.add_micros(self.wait_us()));
        if deadline <= now {
            // Only when `handle_timeout` came more than a wait late.
            return State::Due;
        }
        State::Armed {
            at: deadline.min(now.add_micros(sample)),
            sampling: Sampling::On { untimed: 0 },
        }
    }

    /// A send deadline rounded down to the batch window, so the streams
    /// whose deadlines share a window send together. The window is at most
    /// half the interval and the wait at least half of it, so the result
    /// stays after the instant the wait was counted from.
    #[inline]
    fn batched(&self, deadline: Instant) -> Instant {
        if self.batch_ms == 0 {
            return deadline;
        }
        let us = deadline.as_micros();
        Instant::from_micros(us - us % (u64::from(self.batch_ms) * 1_000))
    }

    /// The sampling period of [`on_sent_with`](Self::on_sent_with): one
    /// eighth of the current wait, so a busy stream's lower bound is never
    /// more than that early; at least 1 µs, so a period always ends after it
    /// starts.
    #[inline]
    fn sample_us(&self) -> u64 {
        (self.wait_us() >> 3).max(1)
    }

    /// The current wait: the interval shortened by a random fraction in
    /// `[0, jitter)` of it, drawn from the generator without advancing it (so
    /// the lazy re-checks of one cycle agree). Integer maths only.
    #[inline]
    fn wait_us(&self) -> u64 {
        let interval = u64::from(self.interval_ms) * 1_000; // < 2^42
        if self.jitter_q == 0 {
            return interval;
        }
        // interval < 2^42 µs, jitter_q <= 2^15: no overflow.
        let span = (interval * u64::from(self.jitter_q)) >> 16;
        let r = u64::from(mix32(self.rng) >> 16); // 16 random bits
        interval - ((span * r) >> 16)
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;
    use std::vec::Vec;

    fn ms(n: u64) -> Instant {
        Instant::from_millis(n)
    }

    fn every(interval_ms: u64) -> Config {
        Config::new(Duration::from_millis(interval_ms)).unwrap()
    }

    /// A supported machine created and told about support at 0.
    fn supported(config: Config) -> Keepalive {
        let mut ka = Keepalive::new(config, ms(0));
        ka.set_peer_support(ms(0), true);
        ka
    }

    /// Drives `ka` promptly (handle_timeout exactly at each deadline, sink
    /// always ready) until `end`; returns the instants of keepalives sent.
    fn drive(ka: &mut Keepalive, from: u64, end: u64) -> Vec<u64> {
        let mut sent = Vec::new();
        let mut now = ms(from);
        loop {
            ka.handle_timeout(now);
            if ka.poll_keepalive(now) {
                sent.push(now.as_micros() / 1_000);
            }
            match ka.poll_timeout() {
                Some(t) if t <= ms(end) => {
                    assert!(t > now, "poll_timeout in the past");
                    now = t;
                }
                _ => return sent,
            }
        }
    }

    #[test]
    fn nothing_is_sent_while_support_is_unknown() {
        let mut ka = Keepalive::new(every(100).with_policy(Policy::Fixed), ms(0));
        assert_eq!(ka.poll_timeout(), None);
        for t in [0, 100, 1_000, 1_000_000] {
            ka.handle_timeout(ms(t));
            assert!(!ka.poll_keepalive(ms(t)));
        }
        assert_eq!(ka.keepalives_sent(), 0);
    }

    #[test]
    fn refused_support_is_final() {
        for policy in [Policy::Idle, Policy::Fixed] {
            let mut ka = Keepalive::new(every(100).with_policy(policy), ms(0));
            ka.set_peer_support(ms(0), false);
            ka.set_peer_support(ms(10), true);
            assert_eq!(ka.poll_timeout(), None);
            assert!(drive(&mut ka, 10, 10_000).is_empty());
            // Withdrawn after being granted: stops too, and drops a due keepalive.
            let mut ka = supported(every(100).with_policy(policy));
            ka.handle_timeout(ms(100));
            ka.set_peer_support(ms(100), false);
            assert!(!ka.poll_keepalive(ms(100)));
            assert_eq!(ka.poll_timeout(), None);
        }
    }

    #[test]
    fn repeated_support_does_not_reset_the_timer() {
        let mut ka = supported(every(100));
        ka.set_peer_support(ms(50), true);
        assert_eq!(ka.poll_timeout(), Some(ms(100)));
        let mut ka = supported(every(100).with_policy(Policy::Fixed));
        assert!(ka.poll_keepalive(ms(0)));
        ka.set_peer_support(ms(50), true);
        assert!(!ka.poll_keepalive(ms(50)));
    }

    #[test]
    fn idle_sends_after_one_quiet_interval() {
        // smoltcp's test_sends_keep_alive: nothing at 95, a send at 100.
        let mut ka = supported(every(100));
        ka.handle_timeout(ms(95));
        assert!(!ka.poll_keepalive(ms(95)));
        ka.handle_timeout(ms(100));
        assert!(ka.poll_keepalive(ms(100)));
        assert_eq!(ka.poll_timeout(), Some(ms(200)));
        assert_eq!(
            drive(&mut ka, 100, 1_000),
            [200, 300, 400, 500, 600, 700, 800, 900, 1_000]
        );
    }

    #[test]
    fn outbound_traffic_postpones_keepalive() {
        let mut ka = supported(every(100));
        ka.on_sent(ms(60));
        assert_eq!(ka.poll_timeout(), Some(ms(100))); // lazy: unchanged by on_sent
        ka.handle_timeout(ms(100));
        assert!(!ka.poll_keepalive(ms(100)));
        assert_eq!(ka.poll_timeout(), Some(ms(160))); // re-armed, did not fire
        ka.handle_timeout(ms(160));
        assert!(ka.poll_keepalive(ms(160)));
    }

    #[test]
    fn busy_idle_stream_sends_no_keepalive() {
        let mut ka = supported(every(100));
        let mut wakeups = 0;
        for t in 0..=10_000 {
            if t % 99 == 0 {
                ka.on_sent(ms(t));
            }
            if ka.poll_timeout().is_some_and(|d| d <= ms(t)) {
                wakeups += 1;
                ka.handle_timeout(ms(t));
            }
            assert!(!ka.poll_keepalive(ms(t)), "keepalive at {t}");
        }
        assert!(wakeups <= 10_000 / 99 + 1, "{wakeups} wake-ups");
    }

    #[test]
    fn support_learned_late_counts_idleness_since_creation() {
        let mut ka = Keepalive::new(every(100), ms(0));
        ka.set_peer_support(ms(150), true);
        assert!(ka.poll_keepalive(ms(150)));
        let mut ka = Keepalive::new(every(100), ms(0));
        ka.on_sent(ms(120));
        ka.set_peer_support(ms(150), true);
        assert_eq!(ka.poll_timeout(), Some(ms(220)));
    }

    #[test]
    fn early_and_spurious_timeouts_are_no_ops() {
        for policy in [Policy::Idle, Policy::Fixed] {
            let mut ka = supported(every(100).with_policy(policy));
            let _ = ka.poll_keepalive(ms(0));
            let before = ka.poll_timeout();
            for t in [0, 1, 50, 99, 99, 0] {
                ka.handle_timeout(ms(t));
                assert_eq!(ka.poll_timeout(), before);
                assert!(!ka.poll_keepalive(ms(t)));
            }
            ka.handle_timeout(ms(100));
            assert!(ka.poll_keepalive(ms(100)));
            ka.handle_timeout(ms(100));
            assert!(!ka.poll_keepalive(ms(100)));
        }
    }

    #[test]
    fn fixed_sends_at_once_then_every_interval() {
        let mut ka = supported(every(100).with_policy(Policy::Fixed));
        assert!(ka.poll_keepalive(ms(0)));
        assert_eq!(ka.poll_timeout(), Some(ms(100)));
        for t in (5..1_000).step_by(10) {
            ka.on_sent(ms(t)); // changes nothing under Fixed
        }
        let sent = drive(&mut ka, 0, 1_050);
        assert_eq!(sent, [100, 200, 300, 400, 500, 600, 700, 800, 900, 1_000]);
    }

    #[test]
    fn fixed_count_is_floor_t_over_interval_plus_one() {
        for (interval, t) in [
            (100, 0),
            (100, 99),
            (100, 100),
            (100, 1_050),
            (7, 1_000),
            (1_000, 999),
        ] {
            let mut ka = supported(every(interval).with_policy(Policy::Fixed));
            assert_eq!(
                drive(&mut ka, 0, t).len() as u64,
                t / interval + 1,
                "interval {interval} T {t}"
            );
        }
    }

    #[test]
    fn deferred_keepalive_is_produced_exactly_once() {
        for policy in [Policy::Idle, Policy::Fixed] {
            let mut ka = supported(every(100).with_policy(policy));
            let _ = ka.poll_keepalive(ms(0));
            ka.handle_timeout(ms(100)); // fires while the sink is busy
            assert_eq!(ka.poll_timeout(), None, "due: no timer needed");
            ka.handle_timeout(ms(150));
            ka.handle_timeout(ms(250)); // a whole interval later: still one
            assert!(ka.poll_keepalive(ms(260)));
            assert!(!ka.poll_keepalive(ms(260)));
            assert_eq!(ka.poll_timeout(), Some(ms(360)), "rewound from the send");
            assert_eq!(
                ka.keepalives_sent(),
                if policy == Policy::Fixed { 2 } else { 1 }
            );
        }
    }

    #[test]
    fn idle_due_keepalive_is_withdrawn_by_application_message() {
        let mut ka = supported(every(100));
        ka.handle_timeout(ms(100)); // due, sink busy writing a message...
        ka.on_sent(ms(120)); // ...which went out
        assert!(!ka.poll_keepalive(ms(130)));
        assert_eq!(ka.poll_timeout(), Some(ms(220)));
        // Fixed: an application message changes nothing.
        let mut ka = supported(every(100).with_policy(Policy::Fixed));
        assert!(ka.poll_keepalive(ms(0)));
        ka.handle_timeout(ms(100));
        ka.on_sent(ms(120));
        assert!(ka.poll_keepalive(ms(130)));
    }

    #[test]
    fn close_stops_everything() {
        for policy in [Policy::Idle, Policy::Fixed] {
            let mut ka = supported(every(100).with_policy(policy));
            ka.handle_timeout(ms(100));
            ka.close();
            assert!(!ka.poll_keepalive(ms(100)));
            assert_eq!(ka.poll_timeout(), None);
            ka.set_peer_support(ms(100), true);
            ka.on_sent(ms(150));
            assert!(drive(&mut ka, 150, 10_000).is_empty());
            // Closing before support is known is final too.
            let mut ka = Keepalive::new(every(100).with_policy(policy), ms(0));
            ka.close();
            ka.set_peer_support(ms(0), true);
            assert_eq!(ka.poll_timeout(), None);
            assert!(!ka.poll_keepalive(ms(0)));
        }
    }

    /// Waypoint's four compatibility cases. A supporting client announces
    /// `wp-inline-keepalives: true` and probes the server; a supporting server
    /// reads the header. A legacy side runs no machine and sends nothing.
    #[test]
    fn waypoint_compatibility_cases() {
        fn run(client_supports: bool, server_supports: bool) -> (u64, u64) {
            let side = |supports: bool, peer_supports: bool| {
                supports.then(|| {
                    let mut ka = Keepalive::new(every(100).with_policy(Policy::Fixed), ms(0));
                    ka.set_peer_support(ms(0), peer_supports);
                    let _ = drive(&mut ka, 0, 1_000);
                    ka.keepalives_sent()
                })
            };
            (
                side(client_supports, server_supports).unwrap_or(0),
                side(server_supports, client_supports).unwrap_or(0),
            )
        }
        assert_eq!(run(true, true), (11, 11), "both support: both send");
        assert_eq!(run(false, true), (0, 0), "server only: nobody sends");
        assert_eq!(run(true, false), (0, 0), "client only: nobody sends");
        assert_eq!(run(false, false), (0, 0), "neither");
    }

    #[test]
    fn jitter_stays_in_bounds_and_is_deterministic_per_seed() {
        let config = every(1_000)
            .with_policy(Policy::Fixed)
            .with_jitter(0.5)
            .unwrap();
        let run = |seed| {
            let mut ka = Keepalive::new(config, ms(0)).with_seed(seed);
            ka.set_peer_support(ms(0), true);
            drive(&mut ka, 0, 200_000)
        };
        let a = run(1);
        assert_eq!(a, run(1), "same seed, same schedule");
        assert_ne!(a, run(2), "different seeds, different schedules");
        let gaps: Vec<u64> = a.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|g| (500..=1_000).contains(g)), "{gaps:?}");
        // Roughly uniform: both halves of the range are used.
        assert!(gaps.iter().any(|&g| g < 625) && gaps.iter().any(|&g| g > 875));
        let mean = gaps.iter().sum::<u64>() / gaps.len() as u64;
        assert!((700..=800).contains(&mean), "mean {mean}");
        // Idle: the first wait is jittered too.
        let mut ka = Keepalive::new(every(1_000).with_jitter(0.25).unwrap(), ms(0)).with_seed(9);
        ka.set_peer_support(ms(0), true);
        let first = ka.poll_timeout().unwrap();
        assert!(first >= ms(750) && first <= ms(1_000));
    }

    #[test]
    fn time_going_backwards_is_no_time_passing() {
        let mut ka = Keepalive::new(every(100), ms(1_000));
        ka.set_peer_support(ms(1_000), true);
        ka.on_sent(ms(1_050));
        ka.on_sent(ms(10)); // backwards: ignored
        ka.handle_timeout(ms(0));
        assert!(!ka.poll_keepalive(ms(0)));
        ka.handle_timeout(ms(1_100));
        assert!(!ka.poll_keepalive(ms(1_100)));
        ka.handle_timeout(ms(1_150));
        assert!(ka.poll_keepalive(ms(1_150)));
        // Saturation at the end of time.
        let end = Instant::from_micros(u64::MAX);
        ka.on_sent(end);
        ka.handle_timeout(end);
        assert!(ka.poll_keepalive(end));
        assert_eq!(ka.poll_timeout(), Some(end), "saturates, never wraps");
    }

    /// Drives `ka` promptly (every deadline handled when it comes) with
    /// untimed messages at `messages` (sorted, µs) until `end`; returns the
    /// keepalive instants and how many times the clock was read.
    fn drive_untimed(ka: &mut Keepalive, messages: &[u64], end: u64) -> (Vec<u64>, usize) {
        let (mut sent, mut reads) = (Vec::new(), 0);
        let mut messages = messages.iter().copied().peekable();
        loop {
            let timer = ka.poll_timeout().map(Instant::as_micros);
            match (timer, messages.peek().copied()) {
                (Some(t), m) if t <= end && m.is_none_or(|m| t < m) => {
                    ka.handle_timeout(Instant::from_micros(t));
                    if ka.poll_keepalive(Instant::from_micros(t)) {
                        sent.push(t);
                    }
                }
                (_, Some(m)) if m <= end => {
                    messages.next();
                    let read = ka.on_sent_with(|| {
                        reads += 1;
                        Instant::from_micros(m)
                    });
                    if let Some(t) = read {
                        assert_eq!(t.as_micros(), m);
                    }
                }
                _ => return (sent, reads),
            }
        }
    }

    #[test]
    fn untimed_busy_stream_sends_nothing_and_reads_the_clock_once_per_period() {
        // 1 s interval: periods of 125 ms. A message every 10 ms for 5 s.
        let mut ka = supported(every(1_000));
        let messages: Vec<u64> = (1..=500).map(|i| i * 10_000).collect();
        let (sent, reads) = drive_untimed(&mut ka, &messages, 5_000_000);
        assert!(sent.is_empty(), "keepalives on a busy stream: {sent:?}");
        // One timed message starts sampling; after that only the 64th in a
        // row is timed (12.5 messages per period, so never here).
        assert_eq!(reads, 1);
    }

    #[test]
    fn untimed_keepalive_is_never_late_and_at_most_an_eighth_early() {
        for last in [3_000_000u64, 3_050_000, 3_124_999, 3_125_000, 3_125_001] {
            let mut ka = supported(every(1_000));
            let mut messages: Vec<u64> = (1..300).map(|i| i * 10_000).collect();
            messages.push(last);
            let (sent, _) = drive_untimed(&mut ka, &messages, 10_000_000);
            let first = sent[0];
            assert!(first <= last + 1_000_000, "late: {first} after {last}");
            assert!(first >= last + 875_000, "too early: {first} after {last}");
            // Then a keepalive every interval, exactly.
            assert!(
                sent.windows(2).all(|w| w[1] - w[0] == 1_000_000),
                "{sent:?}"
            );
        }
    }

    #[test]
    fn untimed_message_after_a_quiet_spell_starts_a_period() {
        let mut ka = supported(every(1_000));
        assert_eq!(ka.poll_timeout(), Some(ms(1_000)));
        assert_eq!(ka.on_sent_with(|| ms(400)), Some(ms(400)));
        // The period ends an eighth of the interval later: re-arm earlier.
        assert_eq!(ka.poll_timeout(), Some(Instant::from_micros(525_000)));
        assert_eq!(ka.on_sent_with(|| unreachable!()), None);
    }

    #[test]
    fn every_64th_untimed_message_in_a_row_is_timed() {
        let mut ka = supported(every(1_000));
        let mut reads = 0;
        for i in 0..(3 * u64::from(UNTIMED_MAX)) {
            let read = ka.on_sent_with(|| ms(i));
            reads += usize::from(read.is_some());
        }
        assert_eq!(reads, 3);
        // Handled late (the period ended at 125 ms), the last timed message,
        // at 128 ms, is what the deadline counts from.
        ka.handle_timeout(ms(1_000));
        ka.handle_timeout(ms(1_127));
        assert!(!ka.poll_keepalive(ms(1_127)));
        ka.handle_timeout(ms(1_128));
        assert!(ka.poll_keepalive(ms(1_128)));
    }

    #[test]
    fn untimed_messages_read_no_clock_when_nothing_can_be_sent() {
        let never = || -> Instant { panic!("clock read") };
        let mut fixed = Keepalive::new(every(1_000).with_policy(Policy::Fixed), ms(0));
        fixed.set_peer_support(ms(0), true);
        assert_eq!(fixed.on_sent_with(never), None);
        let mut refused = Keepalive::new(every(1_000), ms(0));
        refused.set_peer_support(ms(0), false);
        assert_eq!(refused.on_sent_with(never), None);
        let mut closed = supported(every(1_000));
        closed.close();
        assert_eq!(closed.on_sent_with(never), None);
    }

    #[test]
    fn untimed_message_withdraws_a_due_keepalive_and_counts_before_support() {
        let mut ka = supported(every(1_000));
        ka.handle_timeout(ms(1_000)); // due
        assert_eq!(ka.on_sent_with(|| ms(1_200)), Some(ms(1_200)));
        assert!(!ka.poll_keepalive(ms(1_300)));
        assert_eq!(ka.poll_timeout(), Some(ms(2_200)));

        let mut unknown = Keepalive::new(every(1_000), ms(0));
        assert_eq!(unknown.on_sent_with(|| ms(700)), Some(ms(700)));
        unknown.set_peer_support(ms(900), true);
        assert_eq!(unknown.poll_timeout(), Some(ms(1_700)));
    }

    #[test]
    fn late_handle_timeout_after_untimed_messages_is_early_not_late() {
        // The caller is busy and handles the period's end 3 s late: the
        // untimed messages count as sent at the period's start, so the
        // keepalive goes out at once (early), never later.
        let mut ka = supported(every(1_000));
        assert!(ka.on_sent_with(|| ms(100)).is_some());
        assert_eq!(ka.on_sent_with(|| unreachable!()), None);
        ka.handle_timeout(ms(3_225));
        assert!(ka.poll_keepalive(ms(3_225)));
        assert_eq!(ka.poll_timeout(), Some(ms(4_225)));
    }

    #[test]
    fn batched_deadlines_share_windows_and_are_never_late() {
        let window = Duration::from_millis(100);
        let config = every(1_000).with_batch_window(window).unwrap();
        for created in [0, 1, 37, 99, 100, 101, 555, 999] {
            let mut ka = Keepalive::new(config, ms(created));
            ka.set_peer_support(ms(created), true);
            let sent = drive(&mut ka, created, 10_000);
            let unbatched = created + 1_000;
            assert!(
                sent[0] <= unbatched && sent[0] + 100 > unbatched,
                "{created}: {sent:?}"
            );
            for pair in sent.windows(2) {
                assert_eq!(pair[0] % 100, 0, "on the grid: {sent:?}");
                let gap = pair[1] - pair[0];
                assert!(
                    (901..=1_000).contains(&gap),
                    "never late, at most a window early: {sent:?}"
                );
            }
        }
        // Two streams created apart within one window send together.
        let first = |created| {
            let mut ka = Keepalive::new(config, ms(created));
            ka.set_peer_support(ms(created), true);
            ka.poll_timeout()
        };
        assert_eq!(first(3), first(97));
        assert_ne!(first(97), first(103));
    }
}
