//! Entry points for the fuzz targets and the corpus replay tests.
//!
//! Behind the `_fuzzing` feature and hidden from the docs: not a stable API.
//! Each entry point takes the raw fuzz input, never panics on any input
//! unless it has found a bug, and is called both by `fuzz/fuzz_targets/*.rs`
//! and by the stable test that replays `fuzz/corpus/*/` on every `cargo test`.
//!
//! Everything here is prost-free and allocation-free so the module builds in
//! the core's `no_std` configuration; the prost-based oracle of the
//! `classify` differential target lives in `fuzz/src/classify_oracle.rs`.

use core::ops::Range;

use crate::classify::{classify, Classification};
use crate::filter::{Encoding, FilterStats, FrameError, FrameFilter, Output};
use crate::wire::{FRAME_HEADER_LEN, MAX_KEEPALIVE_LEN};

// ---------------------------------------------------------------------------
// Frame filter against a whole-buffer reference deframer
// ---------------------------------------------------------------------------

/// The filter fuzz input, decoded: see [`filter_against_reference`].
#[derive(Clone, Copy, Debug)]
pub struct FilterInput<'a> {
    /// The stream's `grpc-encoding`.
    pub encoding: Encoding,
    /// Chunk sizes, cycled until the stream is fed. Empty: one whole chunk.
    /// A size of 0 is a call to `step` with an empty input.
    pub chunk_sizes: &'a [u8],
    /// The gRPC byte stream.
    pub stream: &'a [u8],
}

impl<'a> FilterInput<'a> {
    /// Splits a fuzz input: byte 0 picks the encoding (low two bits:
    /// identity, gzip, deflate, unknown), byte 1 is the number `n` of chunk
    /// size bytes (mod 32), the next `n` bytes are chunk sizes
    /// (see [`chunk_size`]), the rest is the stream.
    #[must_use]
    pub fn parse(data: &'a [u8]) -> Self {
        let encoding = match data.first().map_or(0, |b| b & 3) {
            0 => Encoding::Identity,
            1 => Encoding::Gzip,
            2 => Encoding::Deflate,
            _ => Encoding::Unknown,
        };
        let rest = data.get(1..).unwrap_or(&[]);
        let n = rest.first().map_or(0, |&b| usize::from(b % 32));
        let rest = rest.get(1..).unwrap_or(&[]);
        let n = n.min(rest.len());
        let (chunk_sizes, stream) = rest.split_at(n);
        Self {
            encoding,
            chunk_sizes,
            stream,
        }
    }
}

/// Decodes one chunk-size byte: 0 is an empty `step`, 1 to 191 are that many
/// bytes, 192 to 255 are multiples of 512 bytes (512 to 32 KiB).
#[must_use]
pub fn chunk_size(byte: u8) -> usize {
    match byte {
        0..=191 => usize::from(byte),
        _ => usize::from(byte - 191) * 512,
    }
}

/// The fuzz target `filter`: feeds the stream of the decoded fuzz input
/// (see [`FilterInput::parse`]) to a [`FrameFilter`] in the given chunks and
/// checks every output byte, the error, the counters and the step contract
/// against [`ReferenceDeframer`], which reads the whole buffer at once.
///
/// # Panics
/// On any disagreement: that is a bug in the filter (or the reference).
pub fn filter_against_reference(data: &[u8]) {
    check_filter(FilterInput::parse(data));
}

/// [`filter_against_reference`] on an already decoded input.
///
/// # Panics
/// On any disagreement between the filter and the reference.
pub fn check_filter(input: FilterInput<'_>) {
    let FilterInput {
        encoding,
        chunk_sizes,
        stream,
    } = input;
    let mut reference = ReferenceDeframer::new(stream, encoding);
    let mut expected = ExpectedBytes {
        reference: &mut reference,
        current: 0..0,
    };
    let mut filter = FrameFilter::with_encoding(encoding);
    let mut outcome = Ok(());
    if chunk_sizes.is_empty() {
        outcome = feed(&mut filter, stream, &mut expected);
    } else {
        let mut fed = 0;
        let mut sizes = chunk_sizes.iter().copied().cycle();
        while fed < stream.len() && outcome.is_ok() {
            let size = match chunk_size(sizes.next().unwrap_or(0)) {
                // An empty step, then at least one byte so the loop ends.
                0 => {
                    outcome = feed(&mut filter, &[], &mut expected);
                    1
                }
                size => size,
            };
            let end = stream.len().min(fed + size);
            if outcome.is_ok() {
                outcome = feed(&mut filter, &stream[fed..end], &mut expected);
            }
            fed = end;
        }
    }
    if outcome.is_ok() {
        let at_boundary = filter.is_at_boundary();
        outcome = filter.finish();
        assert_eq!(at_boundary, outcome.is_ok(), "is_at_boundary before finish");
    }
    expected.expect_end();
    let (want, want_stats) = reference.outcome();
    assert_eq!(outcome, want, "error");
    assert_eq!(filter.stats(), want_stats, "stats");
    if let Err(error) = outcome {
        assert_eq!(filter.step(&[0]).unwrap_err(), error, "sticky step");
        assert_eq!(filter.finish(), Err(error), "sticky finish");
    }
}

/// Feeds one chunk through `step` until it is consumed, checking the step
/// contract and every byte passed on.
fn feed(
    filter: &mut FrameFilter,
    mut input: &[u8],
    expected: &mut ExpectedBytes<'_, '_>,
) -> Result<(), FrameError> {
    loop {
        let len = input.len();
        let step = filter.step(input)?;
        assert!(step.consumed <= len, "consumed {} of {len}", step.consumed);
        assert!(len == 0 || step.consumed > 0, "no progress on {len} bytes");
        match step.output {
            Output::Forward(range) => {
                assert!(
                    range.start <= range.end && range.end <= step.consumed,
                    "forward {range:?} outside consumed {}",
                    step.consumed
                );
                expected.expect(&input[range]);
            }
            Output::Held(bytes) => {
                assert!(bytes.len() <= FRAME_HEADER_LEN + MAX_KEEPALIVE_LEN);
                expected.expect(bytes);
            }
            Output::Removed | Output::Nothing => {}
        }
        input = &input[step.consumed..];
        assert!(filter.held_len() <= FRAME_HEADER_LEN + MAX_KEEPALIVE_LEN);
        if input.is_empty() {
            return Ok(());
        }
    }
}

/// Compares the bytes the filter passes on with the reference's ranges,
/// without buffering either side.
struct ExpectedBytes<'r, 'a> {
    reference: &'r mut ReferenceDeframer<'a>,
    current: Range<usize>,
}

impl ExpectedBytes<'_, '_> {
    fn expect(&mut self, mut got: &[u8]) {
        while !got.is_empty() {
            if self.current.is_empty() {
                match self.reference.next_passed() {
                    Some(range) => self.current = range,
                    None => panic!("filter passed {} bytes more than the reference", got.len()),
                }
                continue;
            }
            let want = &self.reference.stream[self.current.clone()];
            let n = want.len().min(got.len());
            assert_eq!(
                &got[..n],
                &want[..n],
                "passed bytes differ at stream offset {}",
                self.current.start
            );
            self.current.start += n;
            got = &got[n..];
        }
    }

    fn expect_end(&mut self) {
        let mut missing = self.current.len();
        while let Some(range) = self.reference.next_passed() {
            missing += range.len();
        }
        assert_eq!(missing, 0, "filter passed fewer bytes than the reference");
    }
}

/// A plain whole-buffer deframer: the specification of what the streaming
/// filter must pass on, written as simply as possible.
///
/// Frames are read one after the other. A compressed-flag byte other than 0
/// or 1 at a frame start ends the stream with [`FrameError::BadFlag`] at once,
/// even if fewer than 5 header bytes follow (the filter fails at the first
/// bad byte; the Python reference in `tests/vectors` would say truncated, a
/// case no vector covers). A frame whose payload is at most
/// [`MAX_KEEPALIVE_LEN`] bytes, uncompressed or compressed under an encoding
/// this build can inflate, is classified and removed if it is a keepalive;
/// any other frame is passed on whole. At the end of the stream, an
/// incomplete frame is [`FrameError::Truncated`]; its bytes are passed on only
/// if its header is complete and it would not have been classified (a long
/// frame is forwarded as it arrives).
#[derive(Clone, Debug)]
pub struct ReferenceDeframer<'a> {
    stream: &'a [u8],
    encoding: Encoding,
    pos: usize,
    stats: FilterStats,
    error: Option<FrameError>,
}

impl<'a> ReferenceDeframer<'a> {
    /// A deframer over the whole `stream` of the given encoding.
    #[must_use]
    pub fn new(stream: &'a [u8], encoding: Encoding) -> Self {
        Self {
            stream,
            encoding,
            pos: 0,
            stats: FilterStats::default(),
            error: None,
        }
    }

    /// The next range of the stream to pass on, or `None` at the end.
    pub fn next_passed(&mut self) -> Option<Range<usize>> {
        while self.pos < self.stream.len() {
            let start = self.pos;
            let rest = &self.stream[start..];
            if rest[0] > 1 {
                return self.stop(FrameError::BadFlag(rest[0]));
            }
            if rest.len() < FRAME_HEADER_LEN {
                let missing = (FRAME_HEADER_LEN - rest.len()) as u64;
                return self.stop(FrameError::Truncated { missing });
            }
            let compressed = rest[0] == 1;
            let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            let available = rest.len() - FRAME_HEADER_LEN;
            let inflatable = matches!(self.encoding, Encoding::Gzip | Encoding::Deflate)
                && cfg!(feature = "compression");
            let classified = len <= MAX_KEEPALIVE_LEN && (!compressed || inflatable);
            if available < len {
                self.stop::<()>(FrameError::Truncated {
                    missing: (len - available) as u64,
                });
                if classified {
                    return None;
                }
                self.stats.frames_passed += 1;
                return Some(start..self.stream.len());
            }
            let end = start + FRAME_HEADER_LEN + len;
            self.pos = end;
            let class = if classified {
                self.classify(compressed, &rest[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len])
            } else {
                Classification::Application
            };
            match class {
                Classification::Keepalive => self.stats.keepalives_removed += 1,
                Classification::Collision => {
                    self.stats.collisions += 1;
                    self.stats.frames_passed += 1;
                    return Some(start..end);
                }
                Classification::Application => {
                    self.stats.frames_passed += 1;
                    return Some(start..end);
                }
            }
        }
        None
    }

    /// Reads to the end; returns how the stream ended and the counters.
    pub fn outcome(&mut self) -> (Result<(), FrameError>, FilterStats) {
        while self.next_passed().is_some() {}
        (self.error.map_or(Ok(()), Err), self.stats)
    }

    fn stop<T>(&mut self, error: FrameError) -> Option<T> {
        self.error = Some(error);
        self.pos = self.stream.len();
        None
    }

    fn classify(&self, compressed: bool, payload: &[u8]) -> Classification {
        if !compressed {
            return classify(payload);
        }
        #[cfg(feature = "compression")]
        {
            let mut out = [0u8; MAX_KEEPALIVE_LEN];
            if let Some(len) = crate::compression::inflate(self.encoding, payload, &mut out) {
                return classify(&out[..len]);
            }
        }
        Classification::Application
    }
}

// ---------------------------------------------------------------------------
// Keepalive state machine against a shadow model
// ---------------------------------------------------------------------------

pub use self::machine_model::drive_machine;

mod machine_model {
    use core::time::Duration;

    use crate::{Classification, Config, Event, Instant, Keepalive, Policy};

    /// The fuzz target `machine`: decodes `data` into a configuration and a
    /// script of inputs and clock steps, drives a [`Keepalive`] with it and
    /// checks every output against a shadow model of the rules.
    ///
    /// Layout: byte 0 bit 0 picks [`Policy::Fixed`], bit 1 enables jitter;
    /// byte 1 is the jitter in 1/256 (mod 129, so at most 0.5); bytes 2-3 the
    /// interval, `1 + (u16 LE % 2000)` ms; byte 4 the peer timeout in units of
    /// 8 ms (0: none); bytes 5-12 the seed (LE); then one byte per operation,
    /// high nibble the operation, low nibble its argument (see `Harness::step`).
    /// Missing bytes read as zero. Time only moves forward.
    ///
    /// Checked: no keepalive before support is known, after it was refused or
    /// after `close_send`; none sooner than `interval * (1 - jitter)` after the
    /// last send (`Idle`: any send; `Fixed`: the last keepalive); never two at
    /// once; when driven promptly, none lost or late (the first `Fixed` one at
    /// once, then one within `interval`); `poll_timeout` is never at or before
    /// `now` after `handle_timeout(now)`, never later than what is due, and
    /// `None` when nothing can happen; `PeerTimedOut` exactly when, and with
    /// the silence, the model expects, at most once per silence; the counters.
    ///
    /// # Panics
    /// On any violation: that is a bug in the machine (or the model).
    pub fn drive_machine(data: &[u8]) {
        let byte = |i: usize| data.get(i).copied().unwrap_or(0);
        let fixed = byte(0) & 1 == 1;
        let jitter_k = if byte(0) & 2 == 2 {
            u64::from(byte(1)) % 129
        } else {
            0
        };
        let interval_ms = 1 + u64::from(u16::from_le_bytes([byte(2), byte(3)])) % 2_000;
        let timeout_ms = u64::from(byte(4)) * 8;
        let mut seed = [0u8; 8];
        for (i, b) in seed.iter_mut().enumerate() {
            *b = byte(5 + i);
        }
        let mut config = Config::new(Duration::from_millis(interval_ms))
            .expect("interval in range")
            .with_policy(if fixed { Policy::Fixed } else { Policy::Idle });
        #[allow(clippy::cast_precision_loss)] // k <= 128: exact in f32
        let jitter = jitter_k as f32 / 256.0;
        config = config.with_jitter(jitter).expect("jitter in range");
        if timeout_ms != 0 {
            config = config
                .with_peer_timeout(Duration::from_millis(timeout_ms))
                .expect("timeout in range");
        }
        let mut h = Harness {
            ka: Keepalive::new(config, Instant::ZERO).with_seed(u64::from_le_bytes(seed)),
            now: 0,
            fixed,
            interval: interval_ms * 1_000,
            jitter_k,
            timeout: timeout_ms * 1_000,
            support: None,
            send_closed: false,
            last_activity: 0,
            last_timed: 0,
            last_keepalive: None,
            expected: false,
            peer_closed: false,
            last_rx: 0,
            reported: false,
            pending: None,
            keepalives: 0,
            events: 0,
        };
        for &op in data.get(13..).unwrap_or(&[]) {
            h.step(op);
        }
    }

    /// The machine under test and the model's view of what it was told.
    /// All times in microseconds.
    struct Harness {
        ka: Keepalive,
        now: u64,
        fixed: bool,
        interval: u64,
        /// Jitter in 1/256.
        jitter_k: u64,
        /// 0: no dead-peer detection.
        timeout: u64,
        /// `None` until told; `Some(false)` is final.
        support: Option<bool>,
        send_closed: bool,
        /// Last send of any kind, or creation (what `Idle` waits on): no
        /// keepalive may be later than this allows.
        last_activity: u64,
        /// Last send whose time the machine was given (`on_sent`, a clock
        /// read of `on_sent_with`, a keepalive, creation): no `Idle`
        /// keepalive may be earlier than this allows. Untimed sends may make
        /// one early, never late.
        last_timed: u64,
        /// Last keepalive since support was granted (what `Fixed` waits on).
        last_keepalive: Option<u64>,
        expected: bool,
        peer_closed: bool,
        /// Last frame from the peer, or when watching started.
        last_rx: u64,
        /// This silence was reported.
        reported: bool,
        /// A silence noticed by `handle_timeout` and not yet polled.
        pending: Option<u64>,
        keepalives: u32,
        events: u32,
    }

    impl Harness {
        fn step(&mut self, op: u8) {
            let arg = u64::from(op & 0x0f);
            match op >> 4 {
                0 => self.advance(arg * 250),
                1 => self.advance((arg + 1) * self.interval / 8),
                2 | 14 => self.jump(arg & 1 == 0),
                3 => self.sent(),
                4 => self.received(arg),
                5 => self.set_support(arg < 12),
                6 => self.expect(arg < 12),
                7 if arg < 2 => {
                    self.ka.close_send();
                    self.send_closed = true;
                }
                7 if arg < 10 => self.sent_untimed(),
                7 => self.sent(),
                8 if arg < 2 => {
                    self.ka.close_receive();
                    self.peer_closed = true;
                    self.pending = None;
                }
                8 => self.received(arg),
                9 => self.handle_timeout(),
                10 => {
                    let sent = self.ka.poll_keepalive(self.at());
                    self.check_keepalive(sent, false);
                }
                11 => self.poll_event(),
                12 => {
                    let _ = self.prompt(true);
                }
                13 => self.advance(arg * self.interval),
                _ => self.advance((arg + 1) * self.timeout.max(self.interval) / 4),
            }
            let stats = self.ka.stats();
            assert_eq!(
                stats.keepalives_sent, self.keepalives,
                "stats.keepalives_sent"
            );
            assert_eq!(stats.peer_timeouts, self.events, "stats.peer_timeouts");
        }

        fn at(&self) -> Instant {
            Instant::from_micros(self.now)
        }

        fn advance(&mut self, us: u64) {
            self.now += us;
        }

        fn may_send(&self) -> bool {
            self.support == Some(true) && !self.send_closed
        }

        fn watching(&self) -> bool {
            self.timeout != 0 && self.expected && !self.peer_closed
        }

        fn sent(&mut self) {
            self.ka.on_sent(self.at());
            self.last_activity = self.now;
            self.last_timed = self.now;
        }

        /// `on_sent_with`: the machine reads the clock only when it asks.
        fn sent_untimed(&mut self) {
            let before = self.ka.poll_timeout();
            let mut reads = 0;
            let now = self.at();
            let read = self.ka.on_sent_with(|| {
                reads += 1;
                now
            });
            assert_eq!(read.is_some(), reads == 1, "Some iff the clock was read");
            if read.is_some() {
                self.last_timed = self.now;
            } else {
                assert_eq!(self.ka.poll_timeout(), before, "untimed moved the deadline");
            }
            if self.fixed || self.support == Some(false) || self.send_closed {
                assert_eq!(reads, 0, "clock read where no keepalive depends on it");
            }
            self.last_activity = self.now;
        }

        fn received(&mut self, arg: u64) {
            let kind = match arg % 3 {
                0 => Classification::Keepalive,
                1 => Classification::Application,
                _ => Classification::Collision,
            };
            self.ka.on_received(self.at(), kind);
            if self.watching() {
                self.last_rx = self.now;
                self.reported = false;
                self.pending = None;
            }
        }

        fn set_support(&mut self, supported: bool) {
            self.ka.set_peer_support(self.at(), supported);
            match (self.support, supported) {
                (None, true) => {
                    self.support = Some(true);
                    self.last_keepalive = None;
                }
                (_, false) => self.support = Some(false),
                _ => {}
            }
        }

        fn expect(&mut self, expected: bool) {
            self.ka.expect_peer_keepalives(self.at(), expected);
            if self.peer_closed || self.timeout == 0 {
                return;
            }
            if expected && !self.expected {
                self.last_rx = self.now;
            }
            if expected != self.expected {
                self.reported = false;
                self.pending = None;
            }
            self.expected = expected;
        }

        fn handle_timeout(&mut self) {
            self.ka.handle_timeout(self.at());
            if let Some(t) = self.ka.poll_timeout() {
                assert!(
                    t > self.at(),
                    "poll_timeout {t:?} not after handle_timeout({:?})",
                    self.at()
                );
            }
            if self.watching()
                && !self.reported
                && self.pending.is_none()
                && self.now - self.last_rx >= self.timeout
            {
                self.pending = Some(self.now - self.last_rx);
            }
        }

        fn poll_event(&mut self) {
            let got = self.ka.poll_event();
            let want = self.pending.take().map(|us| Event::PeerTimedOut {
                silent_for: Duration::from_micros(us),
            });
            assert_eq!(got, want, "poll_event at {}", self.now);
            if want.is_some() {
                self.reported = true;
                self.events += 1;
            }
        }

        /// Time since what the next keepalive waits on; `None`: the first
        /// `Fixed` keepalive, due at once.
        fn send_gap(&self) -> Option<u64> {
            if self.fixed {
                self.last_keepalive.map(|t| self.now - t)
            } else {
                Some(self.now - self.last_timed)
            }
        }

        /// `exact`: `handle_timeout(now)` was just called and the sink is
        /// ready, so a keepalive that is due must come out now.
        fn check_keepalive(&mut self, sent: bool, exact: bool) {
            let gap = self.send_gap();
            if sent {
                assert!(
                    self.may_send(),
                    "keepalive without support or after close at {}",
                    self.now
                );
                if let Some(gap) = gap {
                    assert!(
                        gap * 256 >= self.interval * (256 - self.jitter_k),
                        "keepalive {gap} us after the last send, interval {} us",
                        self.interval
                    );
                }
                self.last_keepalive = Some(self.now);
                self.last_activity = self.now;
                self.last_timed = self.now;
                self.keepalives += 1;
                assert!(!self.ka.poll_keepalive(self.at()), "two keepalives at once");
            } else if exact && self.may_send() {
                let gap = if self.fixed {
                    gap
                } else {
                    Some(self.now - self.last_activity)
                };
                assert!(
                    gap.is_some_and(|gap| gap < self.interval),
                    "keepalive lost or late: {gap:?} us since the last send at {}",
                    self.now
                );
            }
        }

        /// What a prompt adapter does when woken: handle_timeout, drain the
        /// events, write a keepalive if `ready`, then check `poll_timeout`.
        fn prompt(&mut self, ready: bool) -> Option<Instant> {
            self.handle_timeout();
            self.poll_event();
            assert_eq!(self.ka.poll_event(), None, "a second event");
            if ready {
                let sent = self.ka.poll_keepalive(self.at());
                self.check_keepalive(sent, true);
            }
            let next = self.ka.poll_timeout();
            if ready && self.may_send() {
                let since = if self.fixed {
                    self.last_keepalive
                } else {
                    Some(self.last_activity)
                };
                let due =
                    Instant::from_micros(since.expect("first keepalive went out") + self.interval);
                assert!(
                    next.is_some_and(|t| t <= due),
                    "send deadline {next:?} later than {due:?}"
                );
            }
            let peer_due = self.watching() && !self.reported;
            if peer_due {
                let due = Instant::from_micros(self.last_rx + self.timeout);
                assert!(
                    next.is_some_and(|t| t <= due),
                    "peer deadline {next:?} later than {due:?}"
                );
            }
            if !self.may_send() && !peer_due {
                assert_eq!(next, None, "nothing can happen, yet a deadline");
            }
            next
        }

        /// Prompt handling, then sleep until the next deadline (or one
        /// interval if there is none), as an adapter's timer would.
        fn jump(&mut self, ready: bool) {
            match self.prompt(ready) {
                Some(t) => self.now = t.as_micros(),
                None => self.advance(self.interval),
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::drive_machine;

        /// Random scripts through the driver (the fuzz target's smoke test).
        #[test]
        fn random_scripts_hold_the_invariants() {
            let mut x = 0x2545_f491_4f6c_dd1d_u64;
            let mut data = [0u8; 300];
            for case in 0..3_000 {
                for b in &mut data {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = x.to_le_bytes()[3];
                }
                // Small intervals and timeouts now and then, so deadlines are crossed often.
                if case % 2 == 0 {
                    data[3] = 0;
                    data[2] %= 64;
                    data[4] %= 16;
                }
                drive_machine(&data[..13 + case % 287]);
            }
        }
    }
}
