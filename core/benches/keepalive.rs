//! Costs of the hot paths of the send schedule (`Keepalive`) and of the
//! dead-peer watchdog (`PeerWatchdog`), each next to a trivial baseline
//! measured in the same run:
//! - per application message: `Keepalive::on_sent` (goal: under 5 ns) and
//!   `PeerWatchdog::on_received`, against a plain store of an `Instant`
//!   through `black_box`; and, with a real clock, `on_sent` with a clock read
//!   per message against `on_sent_with`, which reads it only when the
//!   schedule asks;
//! - per keepalive: one timer wake-up of the schedule (`handle_timeout`,
//!   `poll_keepalive`, `poll_timeout`) and one of the watchdog (bytes
//!   received, then `handle_timeout`, `poll_event`, `poll_timeout`), against
//!   a compare-and-rearm of a plain deadline; and the lazy re-arm of a busy
//!   `Idle` stream (no keepalive).
//!
//! `cargo bench -p inlinekeepalive-core --bench keepalive -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use inlinekeepalive_core::{Config, Instant, Keepalive, PeerWatchdog, Policy};

const INTERVAL_US: u64 = 20_000_000;
const PEER_TIMEOUT: Duration = Duration::from_secs(45);

fn machine(policy: Policy) -> Keepalive {
    let config = Config::default()
        .with_policy(policy)
        .with_jitter(0.1)
        .unwrap();
    let mut ka = Keepalive::new(config, Instant::ZERO).with_seed(7);
    ka.set_peer_support(Instant::ZERO, true);
    let _ = ka.poll_keepalive(Instant::ZERO);
    ka
}

fn watchdog() -> PeerWatchdog {
    PeerWatchdog::new(PEER_TIMEOUT, Instant::ZERO)
}

/// What the baselines write to: a struct the optimiser cannot see through.
struct Slot {
    at: Instant,
}

fn per_message(c: &mut Criterion) {
    let mut g = c.benchmark_group("per application message");
    g.bench_function("baseline: store an Instant", |b| {
        let mut slot = Slot { at: Instant::ZERO };
        let mut t = 0u64;
        b.iter(|| {
            t += 1;
            black_box(&mut slot).at = black_box(Instant::from_micros(t));
        });
    });
    g.bench_function("Keepalive::on_sent", |b| {
        let mut ka = machine(Policy::Idle);
        let mut t = 0u64;
        b.iter(|| {
            t += 1;
            black_box(&mut ka).on_sent(black_box(Instant::from_micros(t)));
        });
    });
    // With a real clock: what a caller pays per message for the time.
    g.bench_function("on_sent(clock read per message)", |b| {
        let mut ka = machine(Policy::Idle);
        let origin = std::time::Instant::now();
        b.iter(|| {
            let now = Instant::from_micros(origin.elapsed().as_micros() as u64);
            black_box(&mut ka).on_sent(now);
        });
    });
    g.bench_function("on_sent_with(clock read when asked)", |b| {
        let mut ka = machine(Policy::Idle);
        let origin = std::time::Instant::now();
        b.iter(|| {
            let read = black_box(&mut ka)
                .on_sent_with(|| Instant::from_micros(origin.elapsed().as_micros() as u64));
            if let Some(now) = read {
                // Keep the sampling period running, as an adapter's timer
                // would: its end passes every 64 messages here at most.
                if ka.poll_timeout().is_some_and(|at| at <= now) {
                    ka.handle_timeout(now);
                }
            }
        });
    });
    g.bench_function("PeerWatchdog::on_received", |b| {
        let mut watchdog = watchdog();
        let mut t = 0u64;
        b.iter(|| {
            t += 1;
            black_box(&mut watchdog).on_received(black_box(Instant::from_micros(t)));
        });
    });
    g.finish();
}

fn per_keepalive(c: &mut Criterion) {
    let mut g = c.benchmark_group("per keepalive");
    g.bench_function("baseline: compare and re-arm a deadline", |b| {
        let mut slot = Slot { at: Instant::ZERO };
        let mut t = 0u64;
        b.iter(|| {
            t += INTERVAL_US;
            let now = black_box(Instant::from_micros(t));
            let s = black_box(&mut slot);
            let fire = s.at <= now;
            if fire {
                s.at = now + Duration::from_micros(INTERVAL_US);
            }
            black_box(fire)
        });
    });
    g.bench_function(
        "Keepalive wake-up: handle_timeout+poll_keepalive+poll_timeout",
        |b| {
            let mut ka = machine(Policy::Fixed);
            let mut t = 0u64;
            b.iter(|| {
                t += INTERVAL_US;
                let now = black_box(Instant::from_micros(t));
                let ka = black_box(&mut ka);
                ka.handle_timeout(now);
                let sent = ka.poll_keepalive(now);
                debug_assert!(sent);
                black_box((sent, ka.poll_timeout()))
            });
        },
    );
    g.bench_function(
        "PeerWatchdog wake-up: on_received+handle_timeout+poll_event+poll_timeout",
        |b| {
            let mut watchdog = watchdog();
            let mut t = 0u64;
            b.iter(|| {
                t += INTERVAL_US;
                let now = black_box(Instant::from_micros(t));
                let watchdog = black_box(&mut watchdog);
                watchdog.on_received(now); // the peer's keepalive: alive
                watchdog.handle_timeout(now);
                let event = watchdog.poll_event();
                debug_assert!(event.is_none());
                black_box((event, watchdog.poll_timeout()))
            });
        },
    );
    g.bench_function("Idle busy stream: lazy re-arm without keepalive", |b| {
        let mut ka = machine(Policy::Idle);
        let mut t = 0u64;
        b.iter(|| {
            // One message just before each (soft) deadline: the wake-up re-arms.
            let deadline = ka.poll_timeout().map_or(t, Instant::as_micros);
            ka.on_sent(Instant::from_micros(deadline - 1));
            t = deadline;
            let now = black_box(Instant::from_micros(t));
            let ka = black_box(&mut ka);
            ka.handle_timeout(now);
            let sent = ka.poll_keepalive(now);
            debug_assert!(!sent);
            black_box((sent, ka.poll_timeout()))
        });
    });
    g.finish();
}

criterion_group!(benches, per_message, per_keepalive);
criterion_main!(benches);
