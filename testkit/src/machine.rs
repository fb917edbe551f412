//! Scripts of inputs and clock steps for one stream's two machines, the send
//! schedule and the dead-peer watchdog, run through their models: the
//! `machine` fuzz target ([`drive_machine`], which decodes raw bytes into a
//! script) and the core's model-based property tests ([`run_script`], with
//! scripts from proptest) share them.
//!
//! Every step goes through [`KeepaliveModel`] and [`WatchdogModel`], which
//! check the machines against their rules; see those for what is checked.

use std::time::Duration;

use inlinekeepalive_core::{Config, Policy};

use crate::keepalive::KeepaliveModel;
use crate::watchdog::WatchdogModel;

/// One step of a script. Times are in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// The clock moves on by this many microseconds.
    Advance(u64),
    /// The clock moves on to the earliest deadline of the two machines, or
    /// by one interval if neither has one, as a sleeping caller's timer
    /// would (nothing is handled: follow with [`Op::Wake`]).
    Sleep,
    /// An application message is sent ([`Keepalive::on_sent`]).
    ///
    /// [`Keepalive::on_sent`]: inlinekeepalive_core::Keepalive::on_sent
    Sent,
    /// An application message is sent, the clock read only if the schedule
    /// asks ([`Keepalive::on_sent_with`]).
    ///
    /// [`Keepalive::on_sent_with`]: inlinekeepalive_core::Keepalive::on_sent_with
    SentUntimed,
    /// Bytes arrive from the peer: any bytes, a keepalive or not.
    Received,
    /// The peer's support of keepalives is learned.
    SetSupport(bool),
    /// Whether the peer is known to send keepalives: `true` starts a
    /// [`PeerWatchdog`](inlinekeepalive_core::PeerWatchdog) (if a peer
    /// timeout is configured and none runs), `false` drops it.
    Watch(bool),
    /// The send side closes ([`Keepalive::close`]).
    ///
    /// [`Keepalive::close`]: inlinekeepalive_core::Keepalive::close
    CloseSend,
    /// The peer finished sending ([`PeerWatchdog::close`]).
    ///
    /// [`PeerWatchdog::close`]: inlinekeepalive_core::PeerWatchdog::close
    CloseReceive,
    /// Both machines' `handle_timeout(now)`, whether or not anything is due.
    HandleTimeout,
    /// [`Keepalive::poll_keepalive`], by a caller able to write.
    ///
    /// [`Keepalive::poll_keepalive`]: inlinekeepalive_core::Keepalive::poll_keepalive
    PollKeepalive,
    /// [`PeerWatchdog::poll_event`].
    ///
    /// [`PeerWatchdog::poll_event`]: inlinekeepalive_core::PeerWatchdog::poll_event
    PollEvent,
    /// A prompt caller woken now: both machines' `handle_timeout`, the
    /// watchdog's events drained, and a keepalive polled if `ready` to write
    /// (see [`KeepaliveModel::wake`] for what that checks).
    Wake {
        /// The caller can write a frame now.
        ready: bool,
    },
}

/// Both machines of one stream, with their models and a shared clock.
#[derive(Clone, Debug)]
pub struct Script {
    now: u64,
    interval: u64,
    peer_timeout: Option<Duration>,
    keepalive: KeepaliveModel,
    watchdog: Option<WatchdogModel>,
}

impl Script {
    /// A stream created at time 0: its send schedule made with `config` and
    /// `seed`, no watchdog yet (see [`Op::Watch`]; it uses the configured
    /// peer timeout).
    #[must_use]
    pub fn new(config: Config, seed: u64) -> Self {
        let keepalive = KeepaliveModel::new(config, seed, 0);
        Self {
            now: 0,
            interval: keepalive.interval(),
            peer_timeout: config.peer_timeout(),
            keepalive,
            watchdog: None,
        }
    }

    /// The current time, µs.
    #[must_use]
    pub fn now(&self) -> u64 {
        self.now
    }

    /// The send schedule's model.
    #[must_use]
    pub fn keepalive(&self) -> &KeepaliveModel {
        &self.keepalive
    }

    /// The watchdog's model, while one runs.
    #[must_use]
    pub fn watchdog(&self) -> Option<&WatchdogModel> {
        self.watchdog.as_ref()
    }

    /// Runs one step through the models.
    ///
    /// # Panics
    /// On the first violation of the rules found by a model.
    pub fn step(&mut self, op: Op) {
        let now = self.now;
        match op {
            Op::Advance(us) => self.now = now.saturating_add(us),
            Op::Sleep => {
                let deadlines = [
                    self.keepalive.machine().poll_timeout(),
                    self.watchdog
                        .as_ref()
                        .and_then(|w| w.machine().poll_timeout()),
                ];
                self.now = match deadlines.into_iter().flatten().min() {
                    Some(t) => now.max(t.as_micros()),
                    None => now.saturating_add(self.interval),
                };
            }
            Op::Sent => self.keepalive.on_sent(now),
            Op::SentUntimed => {
                let _ = self.keepalive.on_sent_with(now);
            }
            Op::Received => {
                if let Some(w) = &mut self.watchdog {
                    w.on_received(now);
                }
            }
            Op::SetSupport(supported) => self.keepalive.set_peer_support(now, supported),
            Op::Watch(true) => {
                if let (None, Some(timeout)) = (&self.watchdog, self.peer_timeout) {
                    self.watchdog = Some(WatchdogModel::new(timeout, now));
                }
            }
            Op::Watch(false) => self.watchdog = None,
            Op::CloseSend => self.keepalive.close(),
            Op::CloseReceive => {
                if let Some(w) = &mut self.watchdog {
                    w.close();
                }
            }
            Op::HandleTimeout => {
                self.keepalive.handle_timeout(now);
                if let Some(w) = &mut self.watchdog {
                    w.handle_timeout(now);
                }
            }
            Op::PollKeepalive => {
                let _ = self.keepalive.poll_keepalive(now);
            }
            Op::PollEvent => {
                if let Some(w) = &mut self.watchdog {
                    let _ = w.poll_event();
                }
            }
            Op::Wake { ready } => {
                if let Some(w) = &mut self.watchdog {
                    let _ = w.wake(now);
                }
                let _ = self.keepalive.wake(now, ready);
            }
        }
    }
}

/// Runs `ops` on a fresh [`Script`] made with `config` and `seed`.
///
/// # Panics
/// On the first violation of the rules found by a model.
///
/// ```
/// use inlinekeepalive_core::Config;
/// use inlinekeepalive_testkit::machine::{run_script, Op};
///
/// run_script(
///     Config::default(),
///     1,
///     &[Op::SetSupport(true), Op::Sleep, Op::Wake { ready: true }, Op::Sent],
/// );
/// ```
pub fn run_script(config: Config, seed: u64, ops: &[Op]) -> Script {
    let mut script = Script::new(config, seed);
    for &op in ops {
        script.step(op);
    }
    script
}

/// The fuzz target `machine`: decodes `data` into a configuration, a seed
/// and a script (see [`decode`]) and runs it through the models.
///
/// # Panics
/// On any violation: a bug in a machine (or in a model).
pub fn drive_machine(data: &[u8]) {
    let (config, seed, ops) = decode(data);
    let mut script = Script::new(config, seed);
    for op in ops {
        script.step(op);
    }
}

/// Decodes fuzz bytes into a configuration, a seed and a script. Missing
/// bytes read as zero, so every input is valid.
///
/// Layout: byte 0 bit 0 picks [`Policy::Fixed`], bit 1 enables jitter;
/// byte 1 is the jitter in 1/256 (mod 129, so at most 0.5); bytes 2-3 the
/// interval, `1 + (u16 LE % 2000)` ms; byte 4 the peer timeout in units of
/// 8 ms (0: none, so [`Op::Watch`] starts nothing); bytes 5-12 the seed
/// (LE); then one or two operations per byte, from its high nibble, with
/// its low nibble `a` as argument:
///
/// | nibble | operations |
/// | --- | --- |
/// | 0 | advance `a * 250` µs |
/// | 1 | advance `(a + 1) / 8` intervals |
/// | 2, 14 | wake, ready if `a` is even; then sleep |
/// | 3 | sent |
/// | 4 | received |
/// | 5 | set support: `a < 12` |
/// | 6 | watch: `a < 12` |
/// | 7 | `a < 2`: close send; `a < 10`: sent untimed; else sent |
/// | 8 | `a < 2`: close receive; else received |
/// | 9 | handle timeout |
/// | 10 | poll keepalive |
/// | 11 | poll event |
/// | 12 | wake, ready |
/// | 13 | advance `a` intervals |
/// | 15 | advance `(a + 1) / 4` of the larger of timeout and interval |
///
/// ```
/// use inlinekeepalive_core::Policy;
/// use inlinekeepalive_testkit::machine::{decode, Op};
///
/// let (config, _, ops) = decode(&[1, 0, 99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0xc0]);
/// assert_eq!(config.policy(), Policy::Fixed);
/// assert_eq!(config.interval().as_millis(), 100);
/// assert_eq!(ops, [Op::SetSupport(true), Op::Wake { ready: true }]);
/// ```
#[must_use]
pub fn decode(data: &[u8]) -> (Config, u64, Vec<Op>) {
    let byte = |i: usize| data.get(i).copied().unwrap_or(0);
    let fixed = byte(0) & 1 == 1;
    let jitter_k = if byte(0) & 2 == 2 { byte(1) % 129 } else { 0 };
    let interval_ms = 1 + u64::from(u16::from_le_bytes([byte(2), byte(3)])) % 2_000;
    let timeout_ms = u64::from(byte(4)) * 8;
    let mut seed = [0u8; 8];
    for (i, b) in seed.iter_mut().enumerate() {
        *b = byte(5 + i);
    }
    let mut config = Config::new(Duration::from_millis(interval_ms))
        .expect("interval in range")
        .with_policy(if fixed { Policy::Fixed } else { Policy::Idle })
        .with_jitter(f32::from(jitter_k) / 256.0)
        .expect("jitter in range");
    if timeout_ms != 0 {
        config = config
            .with_peer_timeout(Duration::from_millis(timeout_ms))
            .expect("timeout in range");
    }
    let interval = interval_ms * 1_000;
    let timeout = timeout_ms * 1_000;
    let mut ops = Vec::new();
    for &byte in data.get(13..).unwrap_or(&[]) {
        let a = u64::from(byte & 0x0f);
        match byte >> 4 {
            0 => ops.push(Op::Advance(a * 250)),
            1 => ops.push(Op::Advance((a + 1) * interval / 8)),
            2 | 14 => ops.extend([Op::Wake { ready: a & 1 == 0 }, Op::Sleep]),
            3 => ops.push(Op::Sent),
            4 => ops.push(Op::Received),
            5 => ops.push(Op::SetSupport(a < 12)),
            6 => ops.push(Op::Watch(a < 12)),
            7 if a < 2 => ops.push(Op::CloseSend),
            7 if a < 10 => ops.push(Op::SentUntimed),
            7 => ops.push(Op::Sent),
            8 if a < 2 => ops.push(Op::CloseReceive),
            8 => ops.push(Op::Received),
            9 => ops.push(Op::HandleTimeout),
            10 => ops.push(Op::PollKeepalive),
            11 => ops.push(Op::PollEvent),
            12 => ops.push(Op::Wake { ready: true }),
            13 => ops.push(Op::Advance(a * interval)),
            _ => ops.push(Op::Advance((a + 1) * timeout.max(interval) / 4)),
        }
    }
    (config, u64::from_le_bytes(seed), ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random scripts through the decoder (the fuzz target's smoke test).
    #[test]
    fn random_fuzz_inputs_hold_the_invariants() {
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let mut data = [0u8; 300];
        for case in 0..3_000 {
            for b in &mut data {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x.to_le_bytes()[3];
            }
            // Small intervals and timeouts now and then, so deadlines are
            // crossed often.
            if case % 2 == 0 {
                data[3] = 0;
                data[2] %= 64;
                data[4] %= 16;
            }
            drive_machine(&data[..13 + case % 287]);
        }
    }

    #[test]
    fn empty_and_short_inputs_are_valid() {
        for len in 0..14 {
            drive_machine(&[0xff; 14][..len]);
        }
        let (config, seed, ops) = decode(&[]);
        assert_eq!((config.interval().as_millis(), seed, ops.len()), (1, 0, 0));
    }

    #[test]
    fn a_watched_peer_that_stays_silent_is_reported_once() {
        let config = Config::new(Duration::from_millis(100))
            .unwrap()
            .with_peer_timeout(Duration::from_millis(250))
            .unwrap();
        let script = run_script(
            config,
            0,
            &[
                Op::Watch(true),
                Op::Advance(100_000),
                Op::Received,
                Op::Sleep,
                Op::Wake { ready: true },
                Op::Sleep,
                Op::Wake { ready: true },
            ],
        );
        let watchdog = script.watchdog().expect("watching");
        assert_eq!(watchdog.timeouts(), 1);
        assert_eq!(script.now(), 350_000 + 100_000); // then slept one interval
    }
}
