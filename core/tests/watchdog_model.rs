//! Model-based property tests of dead-peer detection, [`PeerWatchdog`].
//!
//! Every run goes through the one model of the watchdog,
//! `inlinekeepalive_testkit::watchdog::WatchdogModel` (the `machine` fuzz
//! target uses it too), which checks each step: the deadline is exactly the
//! last bytes plus the timeout, a silence is reported once with the time
//! since the last bytes, nothing after `close`. On top of that:
//! - arbitrary scripts keep those rules;
//! - a silent peer is reported once per silence longer than the timeout,
//!   exactly at the deadline, with the right duration;
//! - any received bytes keep the peer alive: chunks of a gRPC stream that
//!   hold only keepalives, or only part of a frame, count like any other.
//!
//! [`PeerWatchdog`]: inlinekeepalive_core::PeerWatchdog

use core::time::Duration;

use inlinekeepalive_core::wire::KEEPALIVE_FRAME;
use inlinekeepalive_core::{FrameFilter, Instant, PeerTimedOut};
use inlinekeepalive_testkit::watchdog::WatchdogModel;
use proptest::prelude::*;

/// `n` cases, with proptest's XorShift generator: its default ChaCha20 is
/// most of the run time in a debug build.
fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift,
        ..ProptestConfig::with_cases(n)
    }
}

#[derive(Clone, Copy, Debug)]
enum Op {
    /// The clock moves on by this many timeouts / 64.
    Advance(u64),
    Received,
    HandleTimeout,
    PollEvent,
    /// `handle_timeout` and `poll_event`, as a woken caller.
    Wake,
    /// Sleep until the deadline, if any, then wake.
    WakeAtDeadline,
    Close,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u64..160).prop_map(Op::Advance),
        4 => Just(Op::Received),
        2 => Just(Op::HandleTimeout),
        2 => Just(Op::PollEvent),
        3 => Just(Op::Wake),
        3 => Just(Op::WakeAtDeadline),
        1 => prop::bool::weighted(0.2).prop_map(|c| if c { Op::Close } else { Op::Wake }),
    ]
}

/// A stream of frames: keepalives, and application frames of up to 200
/// bytes; returns it and how many keepalives it holds.
fn stream() -> impl Strategy<Value = (Vec<u8>, u64)> {
    let frame = prop_oneof![
        Just(KEEPALIVE_FRAME.to_vec()),
        prop::collection::vec(any::<u8>(), 0..200).prop_map(|payload| {
            let mut frame = vec![0];
            frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            frame.extend_from_slice(&payload);
            frame
        }),
    ];
    prop::collection::vec(frame, 1..30).prop_map(|frames| {
        let keepalives = frames.iter().filter(|f| **f == KEEPALIVE_FRAME).count();
        (frames.concat(), keepalives as u64)
    })
}

proptest! {
    #![proptest_config(cases(10_000))]

    #[test]
    fn arbitrary_watchdog_scripts_keep_the_rules(
        timeout_ms in 1u64..1_500,
        start in 0u64..1_000_000,
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let timeout = timeout_ms * 1_000;
        let mut m = WatchdogModel::new(Duration::from_millis(timeout_ms), start);
        let mut now = start;
        for op in ops {
            match op {
                Op::Advance(n) => now += n * timeout / 64,
                Op::Received => m.on_received(now),
                Op::HandleTimeout => m.handle_timeout(now),
                Op::PollEvent => {
                    let _ = m.poll_event();
                }
                Op::Wake => {
                    let _ = m.wake(now);
                }
                Op::WakeAtDeadline => {
                    if let Some(t) = m.machine().poll_timeout() {
                        now = now.max(t.as_micros());
                    }
                    let _ = m.wake(now);
                }
                Op::Close => m.close(),
            }
        }
    }

    /// Dead-peer detection: one event per silence longer than the timeout,
    /// reported exactly at the deadline with the right duration.
    #[test]
    fn dead_peer_is_reported_once_per_silence(
        timeout_ms in 1u64..1_000,
        gaps in prop::collection::vec(0.0f64..3.0, 0..40),
        extra_wakes in any::<bool>(),
    ) {
        let timeout = timeout_ms * 1_000;
        let mut m = WatchdogModel::new(Duration::from_millis(timeout_ms), 0);
        let (mut last_rx, mut want) = (0u64, 0u64);
        let mut arrivals = Vec::new();
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
        let mut next_arrival = arrivals.into_iter().peekable();
        let mut now = 0;
        loop {
            let timer = m.machine().poll_timeout().map(Instant::as_micros);
            match (timer, next_arrival.peek().copied()) {
                (Some(t), a) if a.is_none_or(|a| t < a) && t <= end => {
                    now = t;
                    let silent_for = Duration::from_micros(timeout);
                    prop_assert_eq!(m.wake(now), Some(PeerTimedOut { silent_for }));
                    if extra_wakes {
                        for later in [now, now, now + 1] {
                            prop_assert_eq!(m.wake(later), None, "twice for one silence");
                        }
                        now += 1;
                    }
                }
                (_, Some(a)) => {
                    if extra_wakes {
                        // Just before the bytes (a deadline at `a` itself is
                        // beaten by the bytes, which the model counts as no
                        // silence).
                        now = now.max(a.saturating_sub(1));
                        prop_assert_eq!(m.wake(now), None, "event before the deadline");
                    }
                    now = now.max(a);
                    m.on_received(now);
                    next_arrival.next();
                }
                _ => break,
            }
        }
        prop_assert_eq!(m.timeouts(), want);
    }

    /// Any received bytes keep the peer alive: a gRPC stream trickles in,
    /// chunk by chunk, each less than a timeout after the last. The caller
    /// reports every chunk to the watchdog, whatever the filter makes of
    /// it (a removed keepalive, a partial header, application bytes): the
    /// peer is never silent, and is reported once it stops.
    #[test]
    fn any_received_bytes_keep_the_peer_alive(
        timeout_ms in 1u64..1_000,
        (stream, keepalives) in stream(),
        chunk_sizes in prop::collection::vec(1usize..64, 1..16),
        gaps in prop::collection::vec(0.0f64..1.0, 1..16),
        wakes in prop::collection::vec(0.0f64..1.0, 1..16),
    ) {
        let timeout = timeout_ms * 1_000;
        let mut m = WatchdogModel::new(Duration::from_millis(timeout_ms), 0);
        let mut filter = FrameFilter::new();
        let (mut now, mut fed, mut i) = (0, 0, 0);
        while fed < stream.len() {
            let at = now + (gaps[i % gaps.len()] * (timeout - 1) as f64) as u64;
            let wake = now + (wakes[i % wakes.len()] * (at - now) as f64) as u64;
            prop_assert_eq!(m.wake(wake), None, "silent at {} after bytes at {}", wake, now);
            now = at;
            let end = stream.len().min(fed + chunk_sizes[i % chunk_sizes.len()]);
            let mut chunk = &stream[fed..end];
            while !chunk.is_empty() {
                let step = filter.step(chunk).unwrap();
                chunk = &chunk[step.consumed..];
            }
            m.on_received(now);
            prop_assert_eq!(m.wake(now), None);
            fed = end;
            i += 1;
        }
        prop_assert_eq!(filter.stats().keepalives_removed, keepalives);
        let deadline = m.machine().poll_timeout().map(Instant::as_micros);
        prop_assert_eq!(deadline, Some(now + timeout));
        let silent_for = Duration::from_micros(timeout);
        prop_assert_eq!(m.wake(now + timeout), Some(PeerTimedOut { silent_for }));
        prop_assert_eq!(m.timeouts(), 1);
    }
}
