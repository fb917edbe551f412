//! The sans-IO keepalive state machine.

use core::fmt;
use core::time::Duration;

use crate::config::{Config, Policy};
use crate::instant::Instant;
use crate::Classification;

/// Something the caller must act on, from [`Keepalive::poll_event`].
///
/// ```
/// use core::time::Duration;
/// use inlinekeepalive_core::{Config, Event, Instant, Keepalive};
///
/// let config = Config::default().with_peer_timeout(Duration::from_secs(45))?;
/// let mut ka = Keepalive::new(config, Instant::ZERO);
/// ka.expect_peer_keepalives(Instant::ZERO, true);
/// ka.handle_timeout(Instant::from_millis(50_000));
/// assert_eq!(ka.poll_event(), Some(Event::PeerTimedOut { silent_for: Duration::from_secs(50) }));
/// # Ok::<(), inlinekeepalive_core::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Event {
    /// Nothing at all arrived from the peer for at least the configured peer
    /// timeout, although it is known to send keepalives. Reported once per
    /// silence; the next frame from the peer re-arms the detection. What to do
    /// (usually: cancel the stream) is the caller's decision.
    PeerTimedOut {
        /// How long the peer had been silent when the silence was noticed
        /// (by [`Keepalive::handle_timeout`]): at least the peer timeout.
        silent_for: Duration,
    },
}

/// Counters of a [`Keepalive`], from [`Keepalive::stats`]. They saturate.
///
/// Application messages are not counted: [`Keepalive::on_sent`] is kept to a
/// single store, and the caller already knows what it sends.
///
/// ```
/// use inlinekeepalive_core::{Config, Instant, Keepalive, Policy};
///
/// let mut ka = Keepalive::new(Config::default().with_policy(Policy::Fixed), Instant::ZERO);
/// ka.set_peer_support(Instant::ZERO, true);
/// assert!(ka.poll_keepalive(Instant::ZERO));
/// assert_eq!(ka.stats().keepalives_sent, 1);
/// assert_eq!(ka.stats().peer_timeouts, 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Stats {
    /// Keepalives reported by [`Keepalive::poll_keepalive`] (each counts as sent).
    pub keepalives_sent: u32,
    /// [`Event::PeerTimedOut`] events returned by [`Keepalive::poll_event`]
    /// (stored in 16 bits: it saturates at 65,535).
    pub peer_timeouts: u32,
}

/// The send direction: may a keepalive go out, and when?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SendTimer {
    /// Whether the reader of our send direction filters keepalives is not
    /// known yet: nothing is sent.
    Unknown,
    /// Supported; look again at `at`. Under [`Policy::Idle`] this is a *soft*
    /// deadline: application messages sent since it was set may have moved the
    /// real one (`idle_since + wait`) later, and `handle_timeout` then re-arms
    /// without firing. Under [`Policy::Fixed`] it is exact.
    Armed { at: Instant, sampling: Sampling },
    /// A keepalive is due. It stays due until `poll_keepalive` reports it
    /// (under `Idle`, an application message sent meanwhile withdraws it).
    Due,
    /// The reader does not filter keepalives: never send (Waypoint's rule).
    Unsupported,
    /// The send side is closed: never send again.
    Closed,
}

/// What the machine knows of the times of the application messages reported
/// by [`Keepalive::on_sent_with`], which reads the clock only now and then.
///
/// The invariant that makes the scheme safe: `idle_since` is never later than
/// the last message (so a keepalive is never late), and while sampling, every
/// untimed message was sent after `at - sample` (so `at - sample` is a lower
/// bound for the last one, at most one sampling period early).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sampling {
    /// `idle_since` covers every message sent: the next message reads the
    /// clock and starts a sampling period.
    Off,
    /// A sampling period runs until `at`; it started no earlier than
    /// `at - sample`. `untimed` messages were sent in it without the time
    /// (0: none, `idle_since` covers them all).
    On { untimed: u8 },
}

/// Untimed messages in a row after which [`Keepalive::on_sent_with`] reads
/// the clock anyway: bounds how stale `idle_since` gets when the caller is
/// slow to call `handle_timeout` (for example while it is busy writing).
const UNTIMED_MAX: u8 = 64;

/// The receive direction: dead-peer detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PeerTimer {
    /// Not watching: no peer timeout configured, or the peer is not known to
    /// send keepalives.
    Off,
    /// Watching; the peer is declared silent at `at` (last frame + timeout).
    Watching { at: Instant },
    /// Silent; the event is waiting for `poll_event`.
    Silent { silent_for_us: u64 },
    /// Silent and reported; the next frame re-arms.
    Reported,
    /// The peer finished sending: never watch again.
    Closed,
}

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

/// The keepalive state machine of one gRPC stream: when must a keepalive go
/// out, and has the peer gone silent?
///
/// It does no I/O, reads no clock and allocates nothing (it is at most 48
/// bytes): time and events come in as arguments, decisions come out of the
/// `poll_*` methods. Everything is deterministic given the inputs and the seed.
///
/// # Methods
///
/// - Inputs (`handle_*`, `on_*`, `set_*`, `close_*`):
///   [`set_peer_support`](Self::set_peer_support),
///   [`expect_peer_keepalives`](Self::expect_peer_keepalives),
///   [`on_sent`](Self::on_sent) (or [`on_sent_with`](Self::on_sent_with),
///   which reads the caller's clock only now and then),
///   [`on_received`](Self::on_received),
///   [`handle_timeout`](Self::handle_timeout),
///   [`close_send`](Self::close_send), [`close_receive`](Self::close_receive).
/// - Outputs (`poll_*`, all `#[must_use]`):
///   [`poll_event`](Self::poll_event), [`poll_keepalive`](Self::poll_keepalive),
///   [`poll_timeout`](Self::poll_timeout).
/// - Getters: [`stats`](Self::stats).
///
/// # Polling order
///
/// After **every** input:
/// 1. drain [`poll_event`](Self::poll_event) until `None`;
/// 2. when able to start writing a frame (at a frame boundary, transport
///    ready), call [`poll_keepalive`](Self::poll_keepalive); on `true`, write
///    [`wire::KEEPALIVE_FRAME`](crate::wire::KEEPALIVE_FRAME);
/// 3. last, [`poll_timeout`](Self::poll_timeout), and (re-)arm one timer for
///    it; when it fires, call [`handle_timeout`](Self::handle_timeout).
///
/// # Activity rule
///
/// *Outbound* activity (application messages, and keepalives) postpones the
/// next keepalive under [`Policy::Idle`] and nothing under [`Policy::Fixed`].
/// *Inbound* activity (every frame, keepalive or not) proves the peer alive for
/// dead-peer detection. Inbound frames never postpone a keepalive: a proxy
/// times out each direction of a stream on its own.
///
/// # Time
///
/// `now` must never go backwards. If it does, the machine treats it as if no
/// time had passed: nothing fires early and nothing panics. All instant
/// arithmetic saturates.
///
/// # Timer
///
/// [`poll_timeout`](Self::poll_timeout) is a *soft* deadline: waking up early
/// is harmless ([`handle_timeout`](Self::handle_timeout) re-arms without firing),
/// waking up late delays the keepalive. [`on_sent`](Self::on_sent) (the hot
/// path, one store) never changes it, and [`on_received`](Self::on_received)
/// only moves it later, so an adapter may keep a timer that is already armed
/// earlier, and needs to re-arm only when `poll_timeout` returns an *earlier*
/// instant or its timer fired.
///
/// # Example
///
/// A client stream with the default 20 s interval, driven by a simulated clock:
///
/// ```
/// use core::time::Duration;
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
/// ka.close_send();
/// assert_eq!(ka.poll_timeout(), None);
/// ```
///
/// A driving loop, with a sink that may be busy when the timer fires:
///
/// ```
/// use inlinekeepalive_core::{wire, Config, Instant, Keepalive};
///
/// let mut ka = Keepalive::new(Config::default(), Instant::ZERO);
/// ka.set_peer_support(Instant::ZERO, true);
/// let mut out = Vec::new();
/// let mut now = Instant::ZERO;
/// for step in 0..4 {
///     let sink_ready = step != 1; // busy on the first wake-up: the keepalive stays due
///     ka.handle_timeout(now);
///     while let Some(event) = ka.poll_event() {
///         panic!("no dead-peer detection configured: {event:?}");
///     }
///     if sink_ready && ka.poll_keepalive(now) {
///         out.extend_from_slice(&wire::KEEPALIVE_FRAME);
///     }
///     now = ka.poll_timeout().unwrap_or(now);
/// }
/// assert_eq!(out.len(), 2 * wire::KEEPALIVE_FRAME.len());
/// ```
#[derive(Clone)]
pub struct Keepalive {
    // The two directions' states are stored unpacked, tag and payload in
    // separate fields, so that the tags share the padding of the small
    // fields and the machine fits in 48 bytes (two `SendTimer`/`PeerTimer`
    // enums would take 16 each). The logic works on the enums, through
    // `send_timer`/`set_send_timer` and `peer_timer`/`set_peer_timer`.
    send: SendKind,
    /// `Sampling`, packed (see `Sampling::pack`); meaningful when `Armed`.
    sampling: u8,
    /// The deadline when `Armed`.
    send_at: Instant,
    peer: PeerKind,
    /// The deadline (µs) when `Watching`, the silence (µs) when `Silent`.
    peer_us: u64,
    /// Start of the current send-idle period: the latest application message,
    /// keepalive or (initially) the creation of the machine.
    idle_since: Instant,
    interval_ms: u32,
    /// 0: no dead-peer detection.
    peer_timeout_ms: u32,
    /// Jitter generator: a Weyl counter, mixed on use; advanced per keepalive.
    rng: u32,
    keepalives_sent: u32,
    /// Saturates at `u16::MAX` (each needs a silence of at least the peer
    /// timeout, 1 ms at the least, and a frame after it).
    peer_timeouts: u16,
    /// Jitter in units of 1/65536 of the interval.
    jitter_q: u16,
    policy: Policy,
}

/// The tag of [`SendTimer`], as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SendKind {
    Unknown,
    Armed,
    Due,
    Unsupported,
    Closed,
}

/// The tag of [`PeerTimer`], as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PeerKind {
    Off,
    Watching,
    Silent,
    Reported,
    Closed,
}

impl Sampling {
    /// `Off` is `u8::MAX`; `On { untimed }` is `untimed` (< `UNTIMED_MAX`).
    const PACKED_OFF: u8 = u8::MAX;

    #[inline]
    fn pack(self) -> u8 {
        match self {
            Sampling::Off => Self::PACKED_OFF,
            Sampling::On { untimed } => untimed,
        }
    }

    #[inline]
    fn unpack(packed: u8) -> Self {
        if packed == Self::PACKED_OFF {
            Sampling::Off
        } else {
            Sampling::On { untimed: packed }
        }
    }
}

impl fmt::Debug for Keepalive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keepalive")
            .field("send", &self.send_timer())
            .field("peer", &self.peer_timer())
            .field("idle_since", &self.idle_since)
            .field("interval_ms", &self.interval_ms)
            .field("peer_timeout_ms", &self.peer_timeout_ms)
            .field("jitter_q", &self.jitter_q)
            .field("policy", &self.policy)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Keepalive {
    /// A machine for one stream, created at `now`.
    ///
    /// Nothing is scheduled until [`set_peer_support`](Self::set_peer_support)
    /// or [`expect_peer_keepalives`](Self::expect_peer_keepalives) say so. The
    /// send-idle period starts at `now`. The jitter seed defaults to one
    /// derived from `now`; give each stream its own with
    /// [`with_seed`](Self::with_seed) when using jitter.
    ///
    /// ```
    /// use inlinekeepalive_core::{Config, Instant, Keepalive};
    /// let ka = Keepalive::new(Config::default(), Instant::from_millis(5));
    /// assert_eq!(ka.poll_timeout(), None);
    /// ```
    #[must_use]
    pub fn new(config: Config, now: Instant) -> Self {
        Self {
            send: SendKind::Unknown,
            sampling: Sampling::PACKED_OFF,
            send_at: Instant::ZERO,
            peer: PeerKind::Off,
            peer_us: 0,
            idle_since: now,
            interval_ms: config.interval_ms(),
            peer_timeout_ms: config.peer_timeout_ms(),
            rng: fold_seed(now.as_micros()),
            keepalives_sent: 0,
            peer_timeouts: 0,
            jitter_q: config.jitter_q(),
            policy: config.policy(),
        }
    }

    /// This machine with the jitter generator seeded from `seed` (for
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

    /// Whether the reader of our send direction filters keepalives.
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
    /// Should be followed by: [`poll_keepalive`](Self::poll_keepalive),
    /// [`poll_timeout`](Self::poll_timeout).
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
        match (self.send_timer(), supported) {
            (SendTimer::Unknown, true) => {
                let timer = match self.policy {
                    Policy::Fixed => SendTimer::Due,
                    Policy::Idle => {
                        let at = self.idle_since.add_micros(self.wait_us());
                        if at <= now {
                            SendTimer::Due
                        } else {
                            SendTimer::Armed {
                                at,
                                sampling: Sampling::Off,
                            }
                        }
                    }
                };
                self.set_send_timer(timer);
            }
            (SendTimer::Closed, _) | (_, true) => {}
            (_, false) => self.set_send_timer(SendTimer::Unsupported),
        }
    }

    /// Whether the peer is known to send keepalives in our receive direction
    /// (a server: the client announced support; a client: the server did).
    /// With a [peer timeout](Config::with_peer_timeout) configured, `true`
    /// starts dead-peer detection, counting silence from `now`; `false` stops
    /// it. Without one, it does nothing. A repeated `true` changes nothing.
    ///
    /// Should be followed by: [`poll_timeout`](Self::poll_timeout).
    ///
    /// ```
    /// use core::time::Duration;
    /// use inlinekeepalive_core::{Config, Instant, Keepalive};
    ///
    /// let config = Config::default().with_peer_timeout(Duration::from_secs(45))?;
    /// let mut ka = Keepalive::new(config, Instant::ZERO);
    /// ka.expect_peer_keepalives(Instant::from_millis(1_000), true);
    /// assert_eq!(ka.poll_timeout(), Some(Instant::from_millis(46_000)));
    /// ka.expect_peer_keepalives(Instant::from_millis(2_000), false);
    /// assert_eq!(ka.poll_timeout(), None);
    /// # Ok::<(), inlinekeepalive_core::ConfigError>(())
    /// ```
    pub fn expect_peer_keepalives(&mut self, now: Instant, expected: bool) {
        match (self.peer_timer(), expected) {
            (PeerTimer::Closed, _) => {}
            (PeerTimer::Off, true) if self.peer_timeout_ms != 0 => {
                self.set_peer_timer(PeerTimer::Watching {
                    at: now.add_micros(self.peer_timeout_us()),
                });
            }
            (_, true) => {}
            (_, false) => self.set_peer_timer(PeerTimer::Off),
        }
    }

    /// An application message was sent (handed to the transport) at `now`.
    ///
    /// Under [`Policy::Idle`] it pushes the next keepalive back, and withdraws
    /// one that is due but not yet polled; under [`Policy::Fixed`] it changes
    /// nothing. Keepalives are not reported here:
    /// [`poll_keepalive`](Self::poll_keepalive) returning `true` already
    /// records one (calling `on_sent` for it anyway is harmless).
    ///
    /// This is the hot path, called for every message: it is a single store
    /// and never moves [`poll_timeout`](Self::poll_timeout); the deadline is
    /// re-checked lazily in [`handle_timeout`](Self::handle_timeout) and
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
        // `max`: time that goes backwards counts as no time (compiles to a cmov).
        self.idle_since = self.idle_since.max(now);
    }

    /// An application message was sent, with the time read only when the
    /// machine needs it: `now` is called at most once, and for most messages
    /// of a busy stream not at all. Returns the instant it read, if any.
    ///
    /// Use it instead of [`on_sent`](Self::on_sent) when reading the clock
    /// costs more than the rest of sending a message (a vDSO clock read is
    /// ~20 ns, a small in-memory write less).
    ///
    /// Under [`Policy::Idle`] the machine samples instead of timing every
    /// message: the first message after a quiet spell is timed and starts a
    /// *sampling period* of one eighth of the wait (the interval, less
    /// jitter); the messages after it only set a flag, and each
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
    /// when no keepalive can ever be sent (support refused, send side
    /// closed), it never reads the clock.
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
    #[inline]
    pub fn on_sent_with(&mut self, now: impl FnOnce() -> Instant) -> Option<Instant> {
        // The hot path: a message inside a sampling period (`Armed`, and the
        // packed `Sampling::On { untimed }` below the limit; `Off` is above).
        if self.send == SendKind::Armed && self.sampling < UNTIMED_MAX - 1 {
            self.sampling += 1;
            return None;
        }
        self.on_sent_timed(now)
    }

    /// A frame arrived from the peer at `now`. Every frame, whatever its
    /// [`Classification`], proves the peer alive: it pushes the dead-peer
    /// deadline back, re-arms the detection after a reported silence, and
    /// withdraws a [`Event::PeerTimedOut`] not yet polled. It never postpones
    /// a keepalive.
    ///
    /// Should be followed by: [`poll_timeout`](Self::poll_timeout) (which it
    /// only ever moves later).
    ///
    /// ```
    /// use core::time::Duration;
    /// use inlinekeepalive_core::{Classification, Config, Instant, Keepalive};
    ///
    /// let ms = Instant::from_millis;
    /// let config = Config::default().with_peer_timeout(Duration::from_secs(45))?;
    /// let mut ka = Keepalive::new(config, ms(0));
    /// ka.expect_peer_keepalives(ms(0), true);
    /// ka.on_received(ms(20_000), Classification::Keepalive);
    /// ka.handle_timeout(ms(45_000));
    /// assert_eq!(ka.poll_event(), None);
    /// assert_eq!(ka.poll_timeout(), Some(ms(65_000)));
    /// # Ok::<(), inlinekeepalive_core::ConfigError>(())
    /// ```
    #[inline]
    pub fn on_received(&mut self, now: Instant, kind: Classification) {
        // Every kind counts: a collision or an application message is as good
        // a proof of life as a keepalive.
        let _ = kind;
        let at = now.add_micros(self.peer_timeout_us()).as_micros();
        match self.peer {
            PeerKind::Watching => self.peer_us = self.peer_us.max(at),
            PeerKind::Silent | PeerKind::Reported => {
                self.peer = PeerKind::Watching;
                self.peer_us = at;
            }
            PeerKind::Off | PeerKind::Closed => {}
        }
    }

    /// The send side is closed: the stream finished, or a send failed with
    /// end-of-stream. No keepalive is ever produced again (one that is due is
    /// dropped) and no send deadline remains.
    ///
    /// ```
    /// use inlinekeepalive_core::{Config, Instant, Keepalive, Policy};
    ///
    /// let mut ka = Keepalive::new(Config::default().with_policy(Policy::Fixed), Instant::ZERO);
    /// ka.set_peer_support(Instant::ZERO, true); // a keepalive is due
    /// ka.close_send();
    /// assert!(!ka.poll_keepalive(Instant::ZERO));
    /// assert_eq!(ka.poll_timeout(), None);
    /// ```
    pub fn close_send(&mut self) {
        self.set_send_timer(SendTimer::Closed);
    }

    /// The peer finished sending: dead-peer detection stops for good (and an
    /// unreported silence is dropped).
    ///
    /// ```
    /// use core::time::Duration;
    /// use inlinekeepalive_core::{Config, Instant, Keepalive};
    ///
    /// let config = Config::default().with_peer_timeout(Duration::from_secs(45))?;
    /// let mut ka = Keepalive::new(config, Instant::ZERO);
    /// ka.expect_peer_keepalives(Instant::ZERO, true);
    /// ka.close_receive();
    /// ka.handle_timeout(Instant::from_millis(100_000));
    /// assert_eq!(ka.poll_event(), None);
    /// assert_eq!(ka.poll_timeout(), None);
    /// # Ok::<(), inlinekeepalive_core::ConfigError>(())
    /// ```
    pub fn close_receive(&mut self) {
        self.set_peer_timer(PeerTimer::Closed);
    }

    /// Processes the deadlines that passed by `now`. Safe to call early,
    /// late or repeatedly: before a deadline it does nothing, and under
    /// [`Policy::Idle`] a soft deadline that application messages have
    /// overtaken is re-armed without firing. Afterwards
    /// [`poll_timeout`](Self::poll_timeout) is never at or before `now`.
    ///
    /// Should be followed by: [`poll_event`](Self::poll_event),
    /// [`poll_keepalive`](Self::poll_keepalive),
    /// [`poll_timeout`](Self::poll_timeout).
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
        if let SendTimer::Armed { at, sampling } = self.send_timer() {
            if at <= now {
                let timer = match (self.policy, sampling) {
                    (Policy::Fixed, _) => SendTimer::Due,
                    (Policy::Idle, Sampling::On { untimed }) if untimed > 0 => {
                        self.end_sampling_period(at, now)
                    }
                    (Policy::Idle, Sampling::On { .. }) => {
                        // A period with no message: the spell is quiet.
                        self.idle_check(now)
                    }
                    (Policy::Idle, Sampling::Off) => self.idle_check(now),
                };
                self.set_send_timer(timer);
            }
        }
        if let PeerTimer::Watching { at } = self.peer_timer() {
            if at <= now {
                let silent_for_us =
                    (now.as_micros() - at.as_micros()).saturating_add(self.peer_timeout_us());
                self.set_peer_timer(PeerTimer::Silent { silent_for_us });
            }
        }
    }

    // ----- outputs -----

    /// The next [`Event`], if any. Drain it after every input.
    ///
    /// ```
    /// use inlinekeepalive_core::{Config, Instant, Keepalive};
    /// let mut ka = Keepalive::new(Config::default(), Instant::ZERO);
    /// assert_eq!(ka.poll_event(), None);
    /// ```
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        if let PeerTimer::Silent { silent_for_us } = self.peer_timer() {
            self.set_peer_timer(PeerTimer::Reported);
            self.peer_timeouts = self.peer_timeouts.saturating_add(1);
            return Some(Event::PeerTimedOut {
                silent_for: Duration::from_micros(silent_for_us),
            });
        }
        None
    }

    /// Whether to write [`wire::KEEPALIVE_FRAME`](crate::wire::KEEPALIVE_FRAME)
    /// now.
    ///
    /// The caller MUST call it only when it is able to start writing a frame:
    /// at a frame boundary, with the transport ready. `true` counts as the
    /// keepalive being sent at `now`: the caller MUST then write it (if the
    /// write fails with end-of-stream, call [`close_send`](Self::close_send)),
    /// and the next keepalive is scheduled from `now`.
    ///
    /// A keepalive that fell due while the caller could not write stays due
    /// until this is called: it is neither lost nor doubled. Under
    /// [`Policy::Idle`], one withdrawn by an application message sent since is
    /// not reported, and the timer is re-armed instead.
    ///
    /// Should be followed by: [`poll_timeout`](Self::poll_timeout).
    ///
    /// ```
    /// use inlinekeepalive_core::{Config, Instant, Keepalive};
    ///
    /// let ms = Instant::from_millis;
    /// let mut ka = Keepalive::new(Config::default(), ms(0));
    /// ka.set_peer_support(ms(0), true);
    /// ka.handle_timeout(ms(20_000)); // due, but the sink is busy until 20.5 s
    /// ka.handle_timeout(ms(20_400)); // repeated: still one keepalive due
    /// assert!(ka.poll_keepalive(ms(20_500)));
    /// assert!(!ka.poll_keepalive(ms(20_500)));
    /// assert_eq!(ka.poll_timeout(), Some(ms(40_500)));
    /// ```
    #[must_use]
    #[inline]
    pub fn poll_keepalive(&mut self, now: Instant) -> bool {
        if self.send != SendKind::Due {
            return false;
        }
        if self.policy == Policy::Idle {
            let recheck = self.idle_check(now);
            if recheck != SendTimer::Due {
                self.set_send_timer(recheck);
                return false;
            }
        }
        self.keepalives_sent = self.keepalives_sent.saturating_add(1);
        self.rng = self.rng.wrapping_add(WEYL);
        self.idle_since = self.idle_since.max(now);
        self.set_send_timer(SendTimer::Armed {
            at: now.add_micros(self.wait_us()),
            sampling: Sampling::Off,
        });
        true
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called:
    /// the earlier of the send and the dead-peer deadlines, or `None` when
    /// nothing is scheduled (support unknown or refused, send side closed, a
    /// keepalive already due, and no dead-peer detection armed). Call it last,
    /// after the other `poll_*` methods.
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
        let send = (self.send == SendKind::Armed).then_some(self.send_at);
        let peer = (self.peer == PeerKind::Watching).then(|| Instant::from_micros(self.peer_us));
        match (send, peer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ----- getters -----

    /// The counters.
    ///
    /// ```
    /// use inlinekeepalive_core::{Config, Instant, Keepalive, Stats};
    /// let ka = Keepalive::new(Config::default(), Instant::ZERO);
    /// assert_eq!(ka.stats(), Stats::default());
    /// ```
    #[must_use]
    #[inline]
    pub fn stats(&self) -> Stats {
        Stats {
            keepalives_sent: self.keepalives_sent,
            peer_timeouts: u32::from(self.peer_timeouts),
        }
    }

    // ----- internals -----

    /// The send direction's state.
    #[inline]
    fn send_timer(&self) -> SendTimer {
        match self.send {
            SendKind::Unknown => SendTimer::Unknown,
            SendKind::Armed => SendTimer::Armed {
                at: self.send_at,
                sampling: Sampling::unpack(self.sampling),
            },
            SendKind::Due => SendTimer::Due,
            SendKind::Unsupported => SendTimer::Unsupported,
            SendKind::Closed => SendTimer::Closed,
        }
    }

    #[inline]
    fn set_send_timer(&mut self, timer: SendTimer) {
        self.send = match timer {
            SendTimer::Unknown => SendKind::Unknown,
            SendTimer::Armed { at, sampling } => {
                self.send_at = at;
                self.sampling = sampling.pack();
                SendKind::Armed
            }
            SendTimer::Due => SendKind::Due,
            SendTimer::Unsupported => SendKind::Unsupported,
            SendTimer::Closed => SendKind::Closed,
        };
    }

    /// The receive direction's state.
    #[inline]
    fn peer_timer(&self) -> PeerTimer {
        match self.peer {
            PeerKind::Off => PeerTimer::Off,
            PeerKind::Watching => PeerTimer::Watching {
                at: Instant::from_micros(self.peer_us),
            },
            PeerKind::Silent => PeerTimer::Silent {
                silent_for_us: self.peer_us,
            },
            PeerKind::Reported => PeerTimer::Reported,
            PeerKind::Closed => PeerTimer::Closed,
        }
    }

    #[inline]
    fn set_peer_timer(&mut self, timer: PeerTimer) {
        self.peer = match timer {
            PeerTimer::Off => PeerKind::Off,
            PeerTimer::Watching { at } => {
                self.peer_us = at.as_micros();
                PeerKind::Watching
            }
            PeerTimer::Silent { silent_for_us } => {
                self.peer_us = silent_for_us;
                PeerKind::Silent
            }
            PeerTimer::Reported => PeerKind::Reported,
            PeerTimer::Closed => PeerKind::Closed,
        };
    }

    /// `Due` if nothing was sent for the current wait, else `Armed` at the
    /// real deadline (which is then after `now`).
    #[inline]
    fn idle_check(&self, now: Instant) -> SendTimer {
        let at = self.idle_since.add_micros(self.wait_us());
        if at <= now {
            SendTimer::Due
        } else {
            SendTimer::Armed {
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
        match self.send_timer() {
            SendTimer::Armed { at, .. } => {
                // The first message after a quiet spell, or the 64th untimed
                // one in a row: time it. `idle_since` then covers every
                // message so far, and a period starts (or goes on) from it.
                let t = now();
                self.idle_since = self.idle_since.max(t);
                let period_end = self.idle_since.add_micros(self.sample_us());
                self.set_send_timer(SendTimer::Armed {
                    at: at.min(period_end),
                    sampling: Sampling::On { untimed: 0 },
                });
                Some(t)
            }
            // Support unknown (the idle time counts once it is known), or a
            // keepalive due (this message withdraws it): exact, and rare.
            SendTimer::Unknown | SendTimer::Due => {
                let t = now();
                self.on_sent(t);
                Some(t)
            }
            SendTimer::Unsupported | SendTimer::Closed => None,
        }
    }

    /// The end (`period_end`, reached at `now`) of a sampling period in which
    /// untimed messages were sent: they count as sent at the period's start,
    /// the latest instant known to be no later than any of them. A new period
    /// follows, in which the next message is untimed too.
    #[inline]
    fn end_sampling_period(&mut self, period_end: Instant, now: Instant) -> SendTimer {
        let sample = self.sample_us();
        let start = Instant::from_micros(period_end.as_micros().saturating_sub(sample));
        self.idle_since = self.idle_since.max(start);
        let deadline = self.idle_since.add_micros(self.wait_us());
        if deadline <= now {
            // Only when `handle_timeout` came more than a wait late.
            return SendTimer::Due;
        }
        SendTimer::Armed {
            at: deadline.min(now.add_micros(sample)),
            sampling: Sampling::On { untimed: 0 },
        }
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
        let span = (interval * u64::from(self.jitter_q)) >> 16; // < 2^41
        let r = u64::from(mix32(self.rng) >> 16); // 16 random bits
        interval - ((span * r) >> 16)
    }

    #[inline]
    fn peer_timeout_us(&self) -> u64 {
        u64::from(self.peer_timeout_ms) * 1_000
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn fits_in_48_bytes() {
        assert!(
            core::mem::size_of::<Keepalive>() <= 48,
            "{}",
            core::mem::size_of::<Keepalive>()
        );
    }

    #[test]
    fn nothing_is_sent_while_support_is_unknown() {
        let mut ka = Keepalive::new(every(100).with_policy(Policy::Fixed), ms(0));
        assert_eq!(ka.poll_timeout(), None);
        for t in [0, 100, 1_000, 1_000_000] {
            ka.handle_timeout(ms(t));
            assert!(!ka.poll_keepalive(ms(t)));
        }
        assert_eq!(ka.stats().keepalives_sent, 0);
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
    fn inbound_traffic_does_not_postpone_keepalive() {
        let mut ka = supported(every(100));
        ka.on_received(ms(90), Classification::Application);
        ka.handle_timeout(ms(100));
        assert!(ka.poll_keepalive(ms(100)));
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
                ka.stats().keepalives_sent,
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
    fn close_send_stops_everything_on_the_send_side() {
        for policy in [Policy::Idle, Policy::Fixed] {
            let mut ka = supported(every(100).with_policy(policy));
            ka.handle_timeout(ms(100));
            ka.close_send();
            assert!(!ka.poll_keepalive(ms(100)));
            assert_eq!(ka.poll_timeout(), None);
            ka.set_peer_support(ms(100), true);
            ka.on_sent(ms(150));
            assert!(drive(&mut ka, 150, 10_000).is_empty());
            // Closing before support is known is final too.
            let mut ka = Keepalive::new(every(100).with_policy(policy), ms(0));
            ka.close_send();
            ka.set_peer_support(ms(0), true);
            assert_eq!(ka.poll_timeout(), None);
            assert!(!ka.poll_keepalive(ms(0)));
        }
    }

    fn watched(timeout_ms: u64) -> Keepalive {
        let config = every(100)
            .with_peer_timeout(Duration::from_millis(timeout_ms))
            .unwrap();
        let mut ka = Keepalive::new(config, ms(0));
        ka.expect_peer_keepalives(ms(0), true);
        ka
    }

    #[test]
    fn dead_peer_is_reported_once_per_silence() {
        let mut ka = watched(300);
        assert_eq!(ka.poll_timeout(), Some(ms(300)));
        ka.on_received(ms(100), Classification::Keepalive);
        assert_eq!(ka.poll_timeout(), Some(ms(400)));
        ka.handle_timeout(ms(399));
        assert_eq!(ka.poll_event(), None);
        ka.handle_timeout(ms(450));
        assert_eq!(
            ka.poll_event(),
            Some(Event::PeerTimedOut {
                silent_for: Duration::from_millis(350)
            })
        );
        assert_eq!(ka.poll_timeout(), None);
        for t in [450, 800, 5_000] {
            ka.handle_timeout(ms(t));
            assert_eq!(ka.poll_event(), None, "reported once per silence");
        }
        // Something arrives: detection is re-armed for the next silence.
        ka.on_received(ms(5_000), Classification::Collision);
        assert_eq!(ka.poll_timeout(), Some(ms(5_300)));
        ka.handle_timeout(ms(5_300));
        assert!(matches!(ka.poll_event(), Some(Event::PeerTimedOut { .. })));
        assert_eq!(ka.stats().peer_timeouts, 2);
    }

    #[test]
    fn frame_before_poll_event_withdraws_the_silence() {
        let mut ka = watched(300);
        ka.handle_timeout(ms(300));
        ka.on_received(ms(310), Classification::Application);
        assert_eq!(ka.poll_event(), None);
        assert_eq!(ka.poll_timeout(), Some(ms(610)));
    }

    #[test]
    fn dead_peer_detection_needs_config_and_expectation() {
        // Configured but the peer is not known to send keepalives.
        let config = every(100)
            .with_peer_timeout(Duration::from_millis(300))
            .unwrap();
        let mut ka = Keepalive::new(config, ms(0));
        ka.handle_timeout(ms(10_000));
        assert_eq!(ka.poll_event(), None);
        // Expected, but no timeout configured.
        let mut ka = Keepalive::new(every(100), ms(0));
        ka.expect_peer_keepalives(ms(0), true);
        ka.handle_timeout(ms(10_000));
        assert_eq!((ka.poll_event(), ka.poll_timeout()), (None, None));
        // Un-expected, then closed.
        let mut ka = watched(300);
        ka.expect_peer_keepalives(ms(100), false);
        ka.handle_timeout(ms(10_000));
        assert_eq!((ka.poll_event(), ka.poll_timeout()), (None, None));
        let mut ka = watched(300);
        ka.close_receive();
        ka.expect_peer_keepalives(ms(100), true);
        ka.on_received(ms(200), Classification::Keepalive);
        ka.handle_timeout(ms(10_000));
        assert_eq!((ka.poll_event(), ka.poll_timeout()), (None, None));
        // Repeated expectation does not push the deadline.
        let mut ka = watched(300);
        ka.expect_peer_keepalives(ms(200), true);
        assert_eq!(ka.poll_timeout(), Some(ms(300)));
    }

    #[test]
    fn poll_timeout_is_the_earlier_deadline() {
        let config = every(100)
            .with_peer_timeout(Duration::from_millis(250))
            .unwrap();
        let mut ka = Keepalive::new(config, ms(0));
        ka.set_peer_support(ms(0), true);
        ka.expect_peer_keepalives(ms(0), true);
        assert_eq!(ka.poll_timeout(), Some(ms(100)));
        ka.close_send();
        assert_eq!(ka.poll_timeout(), Some(ms(250)));
    }

    /// Waypoint's four compatibility cases. A supporting client announces
    /// `wp-inline-keepalives: true` and probes the server; a supporting server
    /// reads the header. A legacy side runs no machine and sends nothing.
    #[test]
    fn waypoint_compatibility_cases() {
        fn run(client_supports: bool, server_supports: bool) -> (u32, u32) {
            let side = |supports: bool, peer_supports: bool| {
                supports.then(|| {
                    let mut ka = Keepalive::new(every(100).with_policy(Policy::Fixed), ms(0));
                    ka.set_peer_support(ms(0), peer_supports);
                    let _ = drive(&mut ka, 0, 1_000);
                    ka.stats().keepalives_sent
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
        let config = every(100)
            .with_peer_timeout(Duration::from_millis(300))
            .unwrap();
        let mut ka = Keepalive::new(config, ms(1_000));
        ka.set_peer_support(ms(1_000), true);
        ka.expect_peer_keepalives(ms(1_000), true);
        ka.on_sent(ms(1_050));
        ka.on_sent(ms(10)); // backwards: ignored
        ka.on_received(ms(5), Classification::Keepalive);
        ka.handle_timeout(ms(0));
        assert!(!ka.poll_keepalive(ms(0)));
        assert_eq!(ka.poll_event(), None);
        ka.handle_timeout(ms(1_100));
        assert!(!ka.poll_keepalive(ms(1_100)));
        ka.handle_timeout(ms(1_150));
        assert!(ka.poll_keepalive(ms(1_150)));
        // Saturation at the end of time.
        let end = Instant::from_micros(u64::MAX);
        ka.on_sent(end);
        ka.handle_timeout(end);
        let _ = ka.poll_keepalive(end);
        let _ = ka.poll_event();
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
        closed.close_send();
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
}
