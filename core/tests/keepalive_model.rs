//! Model-based property tests of the send schedule, [`Keepalive`].
//!
//! Every run goes through the one model of the schedule,
//! `inlinekeepalive_testkit::keepalive::KeepaliveModel` (the `machine` fuzz
//! target uses it too), which checks each step: nothing is sent before
//! support is known, after it was refused or after `close`, never two at
//! once, never sooner than `interval * (1 - jitter)`; `poll_timeout` is never
//! at or before `now` after `handle_timeout(now)`; a prompt caller loses no
//! keepalive and gets none late. On top of that, the scenarios here check:
//! - arbitrary scripts of inputs and clock steps keep those rules;
//! - `Idle` never sends while application messages go out more often than
//!   `interval * (1 - jitter)`, and sends within `interval` once they stop,
//!   with timed (`on_sent`) and untimed (`on_sent_with`) messages;
//! - `Fixed` without jitter sends `floor(T / interval) + 1` keepalives over
//!   a run of length `T`, whatever the application sends;
//! - a keepalive that falls due while the sink is busy comes out exactly
//!   once, at the first moment the sink is ready.
//!
//! The watchdog's properties are in `watchdog_model.rs`. Time is simulated
//! (integer microseconds); nothing sleeps.

use core::time::Duration;

use inlinekeepalive_core::{Config, Instant, Keepalive, Policy};
use inlinekeepalive_testkit::keepalive::KeepaliveModel;
use inlinekeepalive_testkit::machine::{run_script, Op};
use proptest::prelude::*;

fn config(interval_ms: u64, policy: Policy, jitter_k: u64) -> Config {
    Config::new(Duration::from_millis(interval_ms))
        .unwrap()
        .with_policy(policy)
        .with_jitter(jitter_k as f32 / 256.0)
        .unwrap()
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

fn jitter_k() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), 0u64..=128]
}

// ---------------------------------------------------------------------------
// 1. Arbitrary scripts: the rules hold whatever the caller does.
// ---------------------------------------------------------------------------

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u64..400_000).prop_map(Op::Advance),
        3 => Just(Op::Sleep),
        3 => Just(Op::Sent),
        3 => Just(Op::SentUntimed),
        2 => Just(Op::Received),
        2 => prop::bool::weighted(0.8).prop_map(Op::SetSupport),
        1 => prop::bool::weighted(0.8).prop_map(Op::Watch),
        1 => prop::bool::weighted(0.15).prop_map(|c| if c { Op::CloseSend } else { Op::Sent }),
        1 => prop::bool::weighted(0.15).prop_map(|c| if c { Op::CloseReceive } else { Op::Received }),
        3 => Just(Op::HandleTimeout),
        4 => Just(Op::PollKeepalive),
        2 => Just(Op::PollEvent),
        6 => prop::bool::weighted(0.8).prop_map(|ready| Op::Wake { ready }),
    ]
}

proptest! {
    #![proptest_config(cases(40_000))]

    /// Both machines of a stream under a random script (the watchdog runs
    /// once `Watch(true)` is seen and a peer timeout is configured).
    #[test]
    fn arbitrary_scripts_keep_the_rules(
        interval_ms in 1u64..500,
        policy in policy(),
        jitter_k in jitter_k(),
        timeout_ms in prop::option::of(1u64..1_500),
        seed in any::<u64>(),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let mut config = config(interval_ms, policy, jitter_k);
        if let Some(t) = timeout_ms {
            config = config.with_peer_timeout(Duration::from_millis(t)).unwrap();
        }
        run_script(config, seed, &ops);
    }
}

/// Proptest regression: the first message of an `Idle` stream with a 1 ms
/// interval, untimed, while support is unknown.
#[test]
fn untimed_message_before_support() {
    run_script(config(1, Policy::Idle, 0), 0, &[Op::SentUntimed]);
    run_script(
        config(1, Policy::Idle, 0),
        0,
        &[
            Op::SentUntimed,
            Op::SetSupport(true),
            Op::SentUntimed,
            Op::Sleep,
            Op::Wake { ready: true },
        ],
    );
}

// ---------------------------------------------------------------------------
// 2-5. Promptly driven runs: exact counts and timings.
// ---------------------------------------------------------------------------

/// Wakes at every deadline up to and including `until`, ready to write;
/// returns the instants at which a keepalive went out.
fn run_deadlines(m: &mut KeepaliveModel, now: &mut u64, until: u64, sent: &mut Vec<u64>) {
    while let Some(t) = m.machine().poll_timeout().map(Instant::as_micros) {
        if t > until {
            break;
        }
        *now = t;
        if m.wake(t, true).sent {
            sent.push(t);
        }
    }
}

/// The Idle scenario with untimed messages, `gaps` in fractions of the
/// largest gap that leaves no room for a keepalive.
fn idle_untimed_busy_stream(interval_ms: u64, jitter_k: u64, seed: u64, gaps: &[f64]) {
    let mut m = KeepaliveModel::new(config(interval_ms, Policy::Idle, jitter_k), seed, 0);
    m.set_peer_support(0, true);
    let (interval, min_wait) = (m.interval(), m.min_wait());
    let max_gap = min_wait - interval / 8;
    let (mut now, mut sent, mut last, mut reads) = (0, Vec::new(), 0, 0u64);
    for g in gaps {
        let at = last + (g * (max_gap - 1) as f64) as u64;
        run_deadlines(&mut m, &mut now, at, &mut sent);
        assert!(sent.is_empty(), "keepalive at {sent:?} on a busy stream");
        now = at;
        reads += u64::from(m.on_sent_with(at).is_some());
        // A period that started in the past may already be over.
        if m.machine()
            .poll_timeout()
            .is_some_and(|t| t.as_micros() <= now)
        {
            m.handle_timeout(now);
        }
        assert!(!m.poll_keepalive(at));
        last = at;
    }
    run_deadlines(&mut m, &mut now, last + interval, &mut sent);
    assert!(
        !sent.is_empty(),
        "no keepalive within an interval of the last message"
    );
    assert!(
        sent[0] + interval / 8 >= last + min_wait && sent[0] <= last + interval,
        "at {} after {last}",
        sent[0]
    );
    // The clock: at most once per period of quiet-then-busy, plus every
    // 64th message in a row.
    let periods = last / (min_wait / 8).max(1) + 1;
    assert!(reads <= periods.min(gaps.len() as u64), "{reads} reads");
}

/// Proptest regression: a jitter just under 0.5 and a 2 ms interval.
#[test]
fn idle_untimed_busy_stream_with_large_jitter() {
    idle_untimed_busy_stream(
        2,
        127,
        17_374_399_064_323_002_938,
        &[0.0, 0.15759671024365302],
    );
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
        let mut m = KeepaliveModel::new(config(interval_ms, Policy::Fixed, 0), 0, 0);
        m.set_peer_support(0, true);
        prop_assert!(m.wake(0, true).sent, "the first Fixed keepalive: at once");
        let mut now = 0;
        let mut next_app = app_every_ms.map(|ms| ms * 1_000);
        let mut send_apps = |m: &mut KeepaliveModel, until: u64| {
            while let Some(a) = next_app.filter(|&a| a <= until) {
                m.on_sent(a);
                next_app = Some(a + app_every_ms.unwrap() * 1_000);
            }
        };
        while let Some(t) = m.machine().poll_timeout().map(Instant::as_micros) {
            if t > t_end {
                break;
            }
            if early_wakes {
                let early = now + (t - now) / 2;
                send_apps(&mut m, early);
                prop_assert!(!m.wake(early, true).sent, "early wake sent");
            }
            send_apps(&mut m, t);
            now = t;
            prop_assert!(m.wake(now, true).sent, "deadline without keepalive");
        }
        prop_assert_eq!(m.keepalives(), t_end / interval + 1);
    }

    /// Idle: application messages closer than interval * (1 - jitter) leave no
    /// room for a keepalive; once they stop, one comes within the interval.
    #[test]
    fn idle_busy_stream_sends_nothing_then_resumes(
        interval_ms in 2u64..1_000,
        jitter_k in jitter_k(),
        seed in any::<u64>(),
        gaps in prop::collection::vec(0.0f64..1.0, 1..80),
    ) {
        let mut m = KeepaliveModel::new(config(interval_ms, Policy::Idle, jitter_k), seed, 0);
        m.set_peer_support(0, true);
        let (interval, min_wait) = (m.interval(), m.min_wait());
        let (mut now, mut sent, mut last) = (0, Vec::new(), 0);
        for g in gaps {
            let at = last + (g * (min_wait - 1) as f64) as u64; // strictly less than min_wait
            run_deadlines(&mut m, &mut now, at, &mut sent);
            prop_assert!(sent.is_empty(), "keepalive at {:?} on a busy stream", sent);
            now = at;
            m.on_sent(at);
            prop_assert!(!m.poll_keepalive(at));
            last = at;
        }
        run_deadlines(&mut m, &mut now, last + interval, &mut sent);
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
        jitter_k in jitter_k(),
        seed in any::<u64>(),
        gaps in prop::collection::vec(0.0f64..1.0, 1..200),
    ) {
        idle_untimed_busy_stream(interval_ms, jitter_k, seed, &gaps);
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
        let mut m = KeepaliveModel::new(config(interval_ms, policy, 0), 0, 0);
        m.set_peer_support(0, true);
        // When the next keepalive is due.
        let mut due = if policy == Policy::Fixed { 0 } else { interval };
        let mut boundaries = Vec::new();
        let mut t = 0;
        for (ready_len, busy_len) in windows {
            t += ready_len;
            boundaries.push((t, false)); // busy from t
            t += busy_len;
            boundaries.push((t, true)); // ready from t
        }
        let end = t + 2 * interval;
        let (mut now, mut ready) = (0, true);
        let mut b = boundaries.into_iter().peekable();
        loop {
            let woken = m.wake(now, ready);
            if ready {
                prop_assert_eq!(woken.sent, now >= due, "at {} (due {})", now, due);
                if woken.sent {
                    due = now + interval;
                }
            }
            let timer = woken.next.map(Instant::as_micros);
            let next = match (timer, b.peek().map(|&(t, _)| t)) {
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
        prop_assert_eq!(m.machine().keepalives_sent(), m.keepalives());
    }
}

/// The model is the machine's: a hand-driven `Keepalive` and one driven
/// through the model agree on every deadline.
#[test]
fn the_model_drives_the_real_machine() {
    let config = config(100, Policy::Idle, 64);
    let mut m = KeepaliveModel::new(config, 3, 0);
    let mut ka = Keepalive::new(config, Instant::ZERO).with_seed(3);
    m.set_peer_support(0, true);
    ka.set_peer_support(Instant::ZERO, true);
    for t in (0..2_000_000).step_by(10_000) {
        let woken = m.wake(t, true);
        ka.handle_timeout(Instant::from_micros(t));
        assert_eq!(woken.sent, ka.poll_keepalive(Instant::from_micros(t)));
        assert_eq!(woken.next, ka.poll_timeout());
    }
    assert!(m.keepalives() >= 20);
}
