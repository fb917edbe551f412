//! The frame filter against a whole-buffer reference deframer: the oracle
//! of the `filter` fuzz target and of the corpus replay.
//!
//! [`ReferenceDeframer`] is the specification, written as plainly as
//! possible over the whole stream at once; compressed frames are inflated
//! with [`reference_inflate`] (flate2 on zlib-rs), never with the core's own
//! inflater, so a bug there shows up as a disagreement.

use std::ops::Range;

use inlinekeepalive_core::wire::{FRAME_HEADER_LEN, GRPC_WEB_TRAILERS_FLAG, MAX_KEEPALIVE_LEN};
use inlinekeepalive_core::{
    classify, Classification, Encoding, FilterStats, FrameError, FrameFilter, Framing, Output,
};

use crate::inflate::{core_inflates, reference_inflate};

/// The filter fuzz input, decoded: see [`filter_against_reference`].
#[derive(Clone, Copy, Debug)]
pub struct FilterInput<'a> {
    /// The stream's `grpc-encoding`.
    pub encoding: Encoding,
    /// Plain gRPC, or a gRPC-Web response body (which may end with a
    /// trailers frame).
    pub framing: Framing,
    /// Chunk sizes, cycled until the stream is fed. Empty: one whole chunk.
    /// A size of 0 is a call to `step` with an empty input.
    pub chunk_sizes: &'a [u8],
    /// The gRPC byte stream.
    pub stream: &'a [u8],
}

impl<'a> FilterInput<'a> {
    /// Splits a fuzz input: byte 0 picks the encoding (low two bits:
    /// identity, gzip, deflate, unknown) and the framing (bit 2: plain gRPC
    /// or gRPC-Web), byte 1 is the number `n` of chunk size bytes (mod 32),
    /// the next `n` bytes are chunk sizes (see [`chunk_size`]), the rest is
    /// the stream.
    #[must_use]
    pub fn parse(data: &'a [u8]) -> Self {
        let encoding = match data.first().map_or(0, |b| b & 3) {
            0 => Encoding::Identity,
            1 => Encoding::Gzip,
            2 => Encoding::Deflate,
            _ => Encoding::Unknown,
        };
        let framing = if data.first().is_some_and(|b| b & 4 != 0) {
            Framing::GrpcWeb
        } else {
            Framing::Grpc
        };
        let rest = data.get(1..).unwrap_or(&[]);
        let n = rest.first().map_or(0, |&b| usize::from(b % 32));
        let rest = rest.get(1..).unwrap_or(&[]);
        let n = n.min(rest.len());
        let (chunk_sizes, stream) = rest.split_at(n);
        Self {
            encoding,
            framing,
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
        framing,
        chunk_sizes,
        stream,
    } = input;
    let mut reference = ReferenceDeframer::new(stream, encoding).with_framing(framing);
    let mut expected = ExpectedBytes {
        reference: &mut reference,
        current: 0..0,
    };
    let mut filter = FrameFilter::with_encoding(encoding).with_framing(framing);
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
    let trailers_seen = reference.trailers_seen();
    let (want, want_stats) = reference.outcome();
    assert_eq!(outcome, want, "error");
    assert_eq!(filter.stats(), want_stats, "stats");
    assert_eq!(filter.trailers_seen(), trailers_seen, "trailers seen");
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
/// [`MAX_KEEPALIVE_LEN`] bytes, uncompressed or compressed under gzip or
/// deflate when the core build inflates ([`core_inflates`]), is classified
/// and removed if it is a keepalive; any other frame is passed on whole. A
/// compressed payload is inflated by [`reference_inflate`] (zlib's rules):
/// one that zlib refuses, or that inflates to more than
/// [`MAX_KEEPALIVE_LEN`] bytes, is an application message. At the end of the
/// stream, an
/// incomplete frame is [`FrameError::Truncated`]; its bytes are passed on only
/// if its header is complete and it would not have been classified (a long
/// frame is forwarded as it arrives).
///
/// Under [`Framing::GrpcWeb`] a frame may also start with flag `0x80` or
/// `0x81`: a trailers frame, passed on whole and never classified nor
/// counted, after which any byte is [`FrameError::AfterTrailers`] (once the
/// trailers frame is complete; an incomplete one is truncated, and its bytes
/// after a complete header are passed on).
#[derive(Clone, Debug)]
pub struct ReferenceDeframer<'a> {
    stream: &'a [u8],
    encoding: Encoding,
    framing: Framing,
    pos: usize,
    stats: FilterStats,
    error: Option<FrameError>,
    trailers_seen: bool,
}

impl<'a> ReferenceDeframer<'a> {
    /// A deframer over the whole `stream` of the given encoding.
    #[must_use]
    pub fn new(stream: &'a [u8], encoding: Encoding) -> Self {
        Self {
            stream,
            encoding,
            framing: Framing::Grpc,
            pos: 0,
            stats: FilterStats::default(),
            error: None,
            trailers_seen: false,
        }
    }

    /// The same deframer for a stream framed as `framing`.
    #[must_use]
    pub fn with_framing(mut self, framing: Framing) -> Self {
        self.framing = framing;
        self
    }

    /// Whether a gRPC-Web trailers frame's header has been read so far.
    #[must_use]
    pub fn trailers_seen(&self) -> bool {
        self.trailers_seen
    }

    /// The next range of the stream to pass on, or `None` at the end.
    pub fn next_passed(&mut self) -> Option<Range<usize>> {
        while self.pos < self.stream.len() {
            let start = self.pos;
            let rest = &self.stream[start..];
            if self.trailers_seen {
                return self.stop(FrameError::AfterTrailers);
            }
            let trailers = self.framing == Framing::GrpcWeb
                && (rest[0] == GRPC_WEB_TRAILERS_FLAG || rest[0] == GRPC_WEB_TRAILERS_FLAG | 1);
            if rest[0] > 1 && !trailers {
                return self.stop(FrameError::BadFlag(rest[0]));
            }
            if rest.len() < FRAME_HEADER_LEN {
                let missing = (FRAME_HEADER_LEN - rest.len()) as u64;
                return self.stop(FrameError::Truncated { missing });
            }
            let compressed = rest[0] == 1;
            let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            let available = rest.len() - FRAME_HEADER_LEN;
            if trailers {
                // The last frame: passed on as it is, whole or not.
                self.trailers_seen = true;
                if available < len {
                    self.stop::<()>(FrameError::Truncated {
                        missing: (len - available) as u64,
                    });
                    return Some(start..self.stream.len());
                }
                self.pos = start + FRAME_HEADER_LEN + len;
                return Some(start..self.pos);
            }
            let inflatable =
                matches!(self.encoding, Encoding::Gzip | Encoding::Deflate) && core_inflates();
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
        reference_inflate(self.encoding, payload)
            .map_or(Classification::Application, |inflated| classify(&inflated))
    }
}

/// Feeds `stream` to `filter` cut into chunks of the given sizes (cycled),
/// checking that every step makes progress, then finishes it: what was
/// passed on, and the first error (of a step, or of `finish`).
pub fn filter_in_chunks(
    filter: &mut FrameFilter,
    stream: &[u8],
    sizes: &[usize],
) -> (Vec<u8>, Result<(), FrameError>) {
    let mut passed = Vec::with_capacity(stream.len());
    let mut rest = stream;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, after) = rest.split_at(size.min(rest.len()));
        rest = after;
        let mut input = chunk;
        while !input.is_empty() {
            let step = match filter.step(input) {
                Ok(step) => step,
                Err(error) => return (passed, Err(error)),
            };
            assert!(step.consumed > 0, "no progress on {} bytes", input.len());
            match step.output {
                Output::Forward(range) => passed.extend_from_slice(&input[range]),
                Output::Held(bytes) => passed.extend_from_slice(bytes),
                Output::Removed | Output::Nothing => {}
            }
            input = &input[step.consumed..];
        }
    }
    let finished = filter.finish();
    (passed, finished)
}
