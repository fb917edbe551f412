//! Model-based property tests of the keepalive state machine (issue 3).
//!
//! Random sequences of inputs and clock advances, checked against the rules:
//! - nothing is sent before support is known, after it was refused, or after
//!   `close_send`; never two keepalives at once;
//! - `Idle` never sends while application messages go out more often than
//!   `interval * (1 - jitter)`, and sends within `interval` once they stop;
//! - `Fixed` without jitter sends `floor(T / interval) + 1` keepalives over a
//!   run of length `T`, whatever the application sends;
//! - `poll_timeout` is never at or before `now` after `handle_timeout(now)`;
//! - a keepalive that falls due while the sink is busy comes out exactly once,
//!   at the first moment the sink is ready;
//! - a silent peer is reported once per silence, with the right duration.
//!
//! Time is simulated (integer microseconds); nothing sleeps. About 120k cases
//! in total.

use core::time::Duration;

use inlinekeepalive_core::{Classification, Config, Event, Instant, Keepalive, Policy};
use proptest::prelude::*;

fn us(n: u64) -> Instant {
    Instant::from_micros(n)
}

fn config(interval_ms: u64, policy: Policy, jitter_k: u64, timeout_ms: Option<u64>) -> Config {
    let mut c = Config::new(Duration::from_millis(interval_ms))
        .unwrap()
        .with_policy(policy)
        .with_jitter(jitter_k as f32 / 256.0)
        .unwrap();
    if let Some(t) = timeout_ms {
        c = c.with_peer_timeout(Duration::from_millis(t)).unwrap();
    }
    c
}

/// `n` cases, with proptest's XorShift generator: its default ChaCha20 is
/// most of the run time in a debug build.
fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift,
        ..ProptestConfig::with_cases(n)
    }
}

fn policy() -> impl Strategy<Value = Policy> {
    prop_oneof![Just(Policy::Idle), Just(Policy::Fixed)]
}

// ---------------------------------------------------------------------------
// 1. Arbitrary scripts: the safety rules hold whatever the caller does.
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Op {
    /// Advance the clock by this many microseconds.
    Advance(u64),
    Sent,
    /// `on_sent_with`: the clock is read only if the machine asks.
    SentUntimed,
    Received(u8),
    Support(bool),
    Expect(bool),
    CloseSend,
    CloseReceive,
    HandleTimeout,
    PollKeepalive,
    PollEvent,
    /// Sleep until `poll_timeout` (if any), then handle it.
    Wake,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u64..400_000).prop_map(Op::Advance),
        3 => Just(Op::Sent),
        3 => Just(Op::SentUntimed),
        2 => (0u8..3).prop_map(Op::Received),
        2 => prop::bool::weighted(0.8).prop_map(Op::Support),
        1 => prop::bool::weighted(0.8).prop_map(Op::Expect),
        1 => prop::bool::weighted(0.15).prop_map(|c| if c { Op::CloseSend } else { Op::Sent }),
        1 => prop::bool::weighted(0.15).prop_map(|c| if c { Op::CloseReceive } else { Op::Received(0) }),
        3 => Just(Op::HandleTimeout),
        4 => Just(Op::PollKeepalive),
        2 => Just(Op::PollEvent),
        6 => Just(Op::Wake),
    ]
}

/// What the machine was told, and what it may therefore do.
struct Model {
    fixed: bool,
    interval: u64,
    jitter_k: u64,
    timeout: Option<u64>,
    support: Option<bool>,
    send_closed: bool,
    /// The last activity whose time the machine was given: `on_sent`, a
    /// clock read by `on_sent_with`, a keepalive. Untimed messages may make
    /// an Idle keepalive early (never late), but never earlier than this.
    last_activity: u64,
    last_keepalive: Option<u64>,
    expected: bool,
    peer_closed: bool,
    last_rx: u64,
    reported: bool,
    pending: Option<u64>,
}

impl Model {
    fn may_send(&self) -> bool {
        self.support == Some(true) && !self.send_closed
    }

    fn watching(&self) -> bool {
        self.timeout.is_some() && self.expected && !self.peer_closed
    }

    fn min_wait_ok(&self, gap: u64) -> bool {
        gap * 256 >= self.interval * (256 - self.jitter_k)
    }
}

fn run_script(cfg: Config, seed: u64, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut ka = Keepalive::new(cfg, us(0)).with_seed(seed);
    let mut now = 0u64;
    let mut m = Model {
        fixed: cfg.policy() == Policy::Fixed,
        interval: cfg.interval().as_micros() as u64,
        jitter_k: (cfg.jitter() * 256.0) as u64,
        timeout: cfg.peer_timeout().map(|d| d.as_micros() as u64),
        support: None,
        send_closed: false,
        last_activity: 0,
        last_keepalive: None,
        expected: false,
        peer_closed: false,
        last_rx: 0,
        reported: false,
        pending: None,
    };
    let (mut keepalives, mut events) = (0u32, 0u32);
    for &op in ops {
        let mut handle = false;
        match op {
            Op::Advance(d) => now += d,
            Op::Sent => {
                ka.on_sent(us(now));
                m.last_activity = now;
            }
            Op::SentUntimed => {
                let before = ka.poll_timeout();
                let mut reads = 0;
                let read = ka.on_sent_with(|| {
                    reads += 1;
                    us(now)
                });
                prop_assert_eq!(read.is_some(), reads == 1, "Some iff the clock was read");
                if read.is_some() {
                    m.last_activity = now;
                } else {
                    prop_assert_eq!(ka.poll_timeout(), before, "untimed moved the deadline");
                }
                if m.fixed || m.support == Some(false) || m.send_closed {
                    prop_assert_eq!(reads, 0, "clock read where no keepalive depends on it");
                }
            }
            Op::Received(k) => {
                let kind = [
                    Classification::Keepalive,
                    Classification::Application,
                    Classification::Collision,
                ][usize::from(k)];
                ka.on_received(us(now), kind);
                if m.watching() {
                    m.last_rx = now;
                    m.reported = false;
                    m.pending = None;
                }
            }
            Op::Support(s) => {
                ka.set_peer_support(us(now), s);
                match (m.support, s) {
                    (None, true) => m.support = Some(true),
                    (_, false) => m.support = Some(false),
                    _ => {}
                }
            }
            Op::Expect(e) => {
                ka.expect_peer_keepalives(us(now), e);
                if !m.peer_closed && m.timeout.is_some() && e != m.expected {
                    m.expected = e;
                    m.last_rx = now;
                    m.reported = false;
                    m.pending = None;
                }
            }
            Op::CloseSend => {
                ka.close_send();
                m.send_closed = true;
            }
            Op::CloseReceive => {
                ka.close_receive();
                m.peer_closed = true;
                m.pending = None;
            }
            Op::HandleTimeout => handle = true,
            Op::Wake => {
                if let Some(t) = ka.poll_timeout() {
                    now = now.max(t.as_micros());
                }
                handle = true;
            }
            Op::PollKeepalive => {
                if ka.poll_keepalive(us(now)) {
                    prop_assert!(
                        m.may_send(),
                        "keepalive without support or after close at {}",
                        now
                    );
                    if !m.fixed {
                        prop_assert!(
                            m.min_wait_ok(now - m.last_activity),
                            "Idle keepalive too early at {}",
                            now
                        );
                    } else if let Some(last) = m.last_keepalive {
                        prop_assert!(
                            m.min_wait_ok(now - last),
                            "Fixed keepalive too early at {}",
                            now
                        );
                    }
                    prop_assert!(!ka.poll_keepalive(us(now)), "two keepalives at once");
                    m.last_activity = now;
                    m.last_keepalive = Some(now);
                    keepalives += 1;
                }
            }
            Op::PollEvent => {
                let want = m.pending.take().map(|s| Event::PeerTimedOut {
                    silent_for: Duration::from_micros(s),
                });
                prop_assert_eq!(ka.poll_event(), want);
                if want.is_some() {
                    m.reported = true;
                    events += 1;
                }
            }
        }
        if handle {
            ka.handle_timeout(us(now));
            if let Some(t) = ka.poll_timeout() {
                prop_assert!(
                    t > us(now),
                    "poll_timeout {:?} not after handle_timeout({})",
                    t,
                    now
                );
            }
            if let Some(timeout) = m.timeout {
                if m.watching() && !m.reported && m.pending.is_none() && now - m.last_rx >= timeout
                {
                    m.pending = Some(now - m.last_rx);
                }
            }
        }
        let peer_due = m.watching() && !m.reported;
        if !m.may_send() && !peer_due {
            prop_assert_eq!(
                ka.poll_timeout(),
                None,
                "nothing can happen, yet a deadline"
            );
        }
        prop_assert_eq!(ka.stats().keepalives_sent, keepalives);
        prop_assert_eq!(ka.stats().peer_timeouts, events);
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(40_000))]

    #[test]
    fn arbitrary_scripts_keep_the_rules(
        interval_ms in 1u64..500,
        policy in policy(),
        jitter_k in prop_oneof![Just(0u64), 0u64..=128],
        timeout_ms in prop::option::of(1u64..1_500),
        seed in any::<u64>(),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        run_script(config(interval_ms, policy, jitter_k, timeout_ms), seed, &ops)?;
    }
}

// ---------------------------------------------------------------------------
// 2-5. Promptly driven runs: exact counts and timings.
// ---------------------------------------------------------------------------

/// Handles every deadline up to and including `until`, polling a keepalive at
/// each; returns the instants at which one went out.
fn run_deadlines(
    ka: &mut Keepalive,
    now: &mut u64,
    until: u64,
    sent: &mut Vec<u64>,
) -> Result<(), TestCaseError> {
    while let Some(t) = ka.poll_timeout() {
        let t = t.as_micros();
        if t > until {
            break;
        }
        prop_assert!(t > *now || (t == *now && sent.last() != Some(now)));
        *now = t;
        ka.handle_timeout(us(t));
        if ka.poll_keepalive(us(t)) {
            sent.push(t);
            prop_assert!(!ka.poll_keepalive(us(t)));
        }
        if let Some(next) = ka.poll_timeout() {
            prop_assert!(next.as_micros() > t);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(20_000))]

    /// Fixed, no jitter, support from t=0: floor(T / interval) + 1 keepalives,
    /// whatever the application sends and however often the timer wakes early.
    #[test]
    fn fixed_count_is_floor_t_over_interval_plus_one(
        interval_ms in 1u64..1_000,
        periods in 0u64..100,
        extra in 0.0f64..1.0,
        app_every_ms in prop::option::of(1u64..2_000),
        early_wakes in any::<bool>(),
    ) {
        let interval = interval_ms * 1_000;
        let t_end = periods * interval + (extra * interval as f64) as u64;
        let mut ka = Keepalive::new(config(interval_ms, Policy::Fixed, 0, None), us(0));
        ka.set_peer_support(us(0), true);
        let mut sent = Vec::new();
        let mut now = 0;
        if ka.poll_keepalive(us(0)) {
            sent.push(0);
        }
        let mut next_app = app_every_ms.map(|ms| ms * 1_000);
        while let Some(t) = ka.poll_timeout().map(Instant::as_micros) {
            if t > t_end {
                break;
            }
            while let Some(a) = next_app.filter(|&a| a <= t) {
                ka.on_sent(us(a));
                next_app = Some(a + app_every_ms.unwrap() * 1_000);
            }
            if early_wakes {
                let early = now + (t - now) / 2;
                ka.handle_timeout(us(early));
                prop_assert!(!ka.poll_keepalive(us(early)), "early wake sent");
            }
            now = t;
            ka.handle_timeout(us(now));
            prop_assert!(ka.poll_keepalive(us(now)), "deadline without keepalive");
            sent.push(now);
        }
        prop_assert_eq!(sent.len() as u64, t_end / interval + 1);
    }

    /// Idle: application messages closer than interval * (1 - jitter) leave no
    /// room for a keepalive; once they stop, one comes within the interval.
    #[test]
    fn idle_busy_stream_sends_nothing_then_resumes(
        interval_ms in 2u64..1_000,
        jitter_k in prop_oneof![Just(0u64), 0u64..=128],
        seed in any::<u64>(),
        gaps in prop::collection::vec(0.0f64..1.0, 1..80),
    ) {
        let interval = interval_ms * 1_000;
        let min_wait = interval * (256 - jitter_k) / 256;
        let mut ka = Keepalive::new(config(interval_ms, Policy::Idle, jitter_k, None), us(0)).with_seed(seed);
        ka.set_peer_support(us(0), true);
        let (mut now, mut sent, mut last) = (0, Vec::new(), 0);
        for g in gaps {
            let at = last + (g * (min_wait - 1) as f64) as u64; // strictly less than min_wait
            run_deadlines(&mut ka, &mut now, at, &mut sent)?;
            prop_assert!(sent.is_empty(), "keepalive at {:?} on a busy stream", sent);
            now = at;
            ka.on_sent(us(at));
            prop_assert!(!ka.poll_keepalive(us(at)));
            last = at;
        }
        run_deadlines(&mut ka, &mut now, last + interval, &mut sent)?;
        prop_assert_eq!(sent.len(), 1, "exactly one keepalive after the traffic stopped");
        prop_assert!(sent[0] >= last + min_wait && sent[0] <= last + interval, "at {} after {}", sent[0], last);
    }

    /// Idle with untimed messages (`on_sent_with`), driven promptly:
    /// messages closer than `interval * (1 - jitter) - interval / 8` leave no
    /// room for a keepalive; once they stop, one comes never later than with
    /// timed messages, and at most an eighth of the interval earlier.
    #[test]
    fn idle_untimed_busy_stream_sends_nothing_then_resumes(
        interval_ms in 2u64..1_000,
        jitter_k in prop_oneof![Just(0u64), 0u64..=128],
        seed in any::<u64>(),
        gaps in prop::collection::vec(0.0f64..1.0, 1..200),
    ) {
        let interval = interval_ms * 1_000;
        let min_wait = interval * (256 - jitter_k) / 256;
        let max_gap = min_wait - interval / 8;
        let mut ka = Keepalive::new(config(interval_ms, Policy::Idle, jitter_k, None), us(0)).with_seed(seed);
        ka.set_peer_support(us(0), true);
        let (mut now, mut sent, mut last, mut reads) = (0, Vec::new(), 0, 0u32);
        let messages = gaps.len() as u64;
        for g in gaps {
            let at = last + (g * (max_gap - 1) as f64) as u64;
            run_deadlines(&mut ka, &mut now, at, &mut sent)?;
            prop_assert!(sent.is_empty(), "keepalive at {:?} on a busy stream", sent);
            now = at;
            let read = ka.on_sent_with(|| us(at));
            reads += u32::from(read.is_some());
            if let Some(t) = ka.poll_timeout() {
                // A period that started in the past may already be over.
                if t.as_micros() <= now {
                    ka.handle_timeout(us(now));
                }
            }
            prop_assert!(!ka.poll_keepalive(us(at)));
            last = at;
        }
        run_deadlines(&mut ka, &mut now, last + interval, &mut sent)?;
        prop_assert!(!sent.is_empty(), "no keepalive within an interval of the last message");
        prop_assert!(
            sent[0] + interval / 8 >= last + min_wait && sent[0] <= last + interval,
            "at {} after {}", sent[0], last
        );
        prop_assert!(sent.windows(2).all(|w| w[1] - w[0] >= min_wait), "{:?}", sent);
        // The clock: at most once per period of quiet-then-busy, plus every
        // 64th message in a row.
        let periods = last / (min_wait / 8).max(1) + 1;
        prop_assert!(u64::from(reads) <= periods.min(messages), "{} reads", reads);
    }

    /// A keepalive that falls due while the sink is busy stays due: it comes
    /// out exactly once, at the first moment the sink is ready again.
    #[test]
    fn deferred_keepalive_comes_out_exactly_once(
        interval_ms in 1u64..500,
        policy in policy(),
        windows in prop::collection::vec((0u64..2_000_000, 0u64..2_000_000), 1..20),
    ) {
        let interval = interval_ms * 1_000;
        let mut ka = Keepalive::new(config(interval_ms, policy, 0, None), us(0));
        ka.set_peer_support(us(0), true);
        // Model: when the next keepalive is due.
        let mut due = if policy == Policy::Fixed { 0 } else { interval };
        let (mut now, mut count) = (0u64, 0u32);
        let mut boundaries = Vec::new();
        let mut t = 0;
        for (ready_len, busy_len) in windows {
            t += ready_len;
            boundaries.push((t, false)); // busy from t
            t += busy_len;
            boundaries.push((t, true)); // ready from t
        }
        let end = t + 2 * interval;
        let mut ready = true;
        let mut b = boundaries.into_iter().peekable();
        loop {
            ka.handle_timeout(us(now));
            if ready {
                let sent = ka.poll_keepalive(us(now));
                prop_assert_eq!(sent, now >= due, "at {} (due {})", now, due);
                if sent {
                    count += 1;
                    due = now + interval;
                    prop_assert!(!ka.poll_keepalive(us(now)), "a second keepalive");
                }
            }
            let timer = ka.poll_timeout().map(Instant::as_micros);
            if let Some(t) = timer {
                prop_assert!(t > now);
            }
            let next_boundary = b.peek().map(|&(t, _)| t);
            let next = match (timer, next_boundary) {
                (Some(a), Some(c)) => a.min(c),
                (a, c) => a.or(c).unwrap_or(end),
            };
            if next >= end {
                break;
            }
            now = next;
            while let Some(&(t, r)) = b.peek() {
                if t > now {
                    break;
                }
                ready = r;
                b.next();
            }
        }
        prop_assert_eq!(ka.stats().keepalives_sent, count);
    }

    /// Dead-peer detection: one event per silence longer than the timeout,
    /// reported exactly at the deadline with the right duration.
    #[test]
    fn dead_peer_is_reported_once_per_silence(
        timeout_ms in 1u64..1_000,
        gaps in prop::collection::vec(0.0f64..3.0, 0..40),
        kinds in prop::collection::vec(0usize..3, 40),
        extra_wakes in any::<bool>(),
    ) {
        let timeout = timeout_ms * 1_000;
        let mut ka = Keepalive::new(config(1_000, Policy::Idle, 0, Some(timeout_ms)), us(0));
        ka.expect_peer_keepalives(us(0), true);
        let (mut now, mut last_rx, mut events, mut want) = (0u64, 0u64, 0u32, 0u32);
        let mut arrivals: Vec<u64> = Vec::new();
        for g in &gaps {
            let at = last_rx + (g * timeout as f64) as u64;
            if at - last_rx > timeout {
                want += 1;
            }
            arrivals.push(at);
            last_rx = at;
        }
        want += 1; // the trailing silence
        let end = last_rx + 3 * timeout;
        let mut next_arrival = arrivals.iter().copied().zip(kinds).peekable();
        let mut last_rx = 0;
        loop {
            let timer = ka.poll_timeout().map(Instant::as_micros);
            match (timer, next_arrival.peek().copied()) {
                (Some(t), a) if a.is_none_or(|(a, _)| t < a) && t <= end => {
                    now = t;
                    ka.handle_timeout(us(now));
                    let e = ka.poll_event();
                    prop_assert_eq!(e, Some(Event::PeerTimedOut { silent_for: Duration::from_micros(now - last_rx) }));
                    prop_assert_eq!(now - last_rx, timeout);
                    events += 1;
                    if extra_wakes {
                        for later in [now, now, now + 1] {
                            ka.handle_timeout(us(later));
                            prop_assert_eq!(ka.poll_event(), None, "twice for one silence");
                        }
                    }
                }
                (_, Some((a, k))) => {
                    if extra_wakes {
                        // Just before the frame (a deadline at `a` itself is
                        // beaten by the frame, which the model counts as no silence).
                        now = now.max(a.saturating_sub(1));
                        ka.handle_timeout(us(now));
                        prop_assert_eq!(ka.poll_event(), None, "event before the deadline");
                    }
                    now = now.max(a);
                    let kind = [Classification::Keepalive, Classification::Application, Classification::Collision][k];
                    ka.on_received(us(now), kind);
                    last_rx = now;
                    next_arrival.next();
                }
                _ => break,
            }
        }
        prop_assert_eq!(events, want);
        prop_assert_eq!(ka.stats().peer_timeouts, want);
    }
}
