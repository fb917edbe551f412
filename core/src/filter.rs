//! Removing keepalive frames from a gRPC byte stream, sans-IO.
//!
//! The filter never copies application bytes. It tells its caller which
//! ranges of each input chunk to pass on; only a frame short enough to be a
//! keepalive that straddles two chunks is held back in a fixed buffer of
//! `FRAME_HEADER_LEN + MAX_KEEPALIVE_LEN` bytes until it is complete and
//! classified. A frame longer than [`MAX_KEEPALIVE_LEN`] is passed on as soon
//! as its header is seen, so each frame costs O(1) whatever its size.

use core::fmt;
use core::ops::Range;

use crate::classify::{classify, Classification};
use crate::wire::{BadFlag, FrameHeader, FRAME_HEADER_LEN, MAX_KEEPALIVE_LEN};

const HELD_CAPACITY: usize = FRAME_HEADER_LEN + MAX_KEEPALIVE_LEN;

/// The bytes of a frame that straddles inputs: a header, or a whole frame
/// short enough to be a keepalive. A fixed array: the filter never allocates.
#[derive(Clone, Debug)]
struct Held {
    bytes: [u8; HELD_CAPACITY],
    len: u8,
}

impl Held {
    const fn new() -> Self {
        Self {
            bytes: [0; HELD_CAPACITY],
            len: 0,
        }
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    fn len(&self) -> usize {
        usize::from(self.len)
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends as much of `bytes` as fits; the callers never offer more.
    fn extend_from_slice(&mut self, bytes: &[u8]) {
        let start = self.len();
        let taken = bytes.len().min(HELD_CAPACITY - start);
        self.bytes[start..start + taken].copy_from_slice(&bytes[..taken]);
        // start + taken <= HELD_CAPACITY, which fits a u8.
        self.len = (start + taken) as u8;
    }
}

/// The `grpc-encoding` of a stream, which says how frames with the
/// compressed flag set are encoded.
///
/// A keepalive is always *sent* uncompressed, but some peers (Go's grpc among
/// them) compress every message of a compressed stream. With the
/// `compression` feature the filter inflates small compressed frames of a
/// [`Gzip`](Encoding::Gzip) or [`Deflate`](Encoding::Deflate) stream to find
/// such keepalives. Under any other encoding, or without the feature,
/// compressed frames are passed on untouched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Encoding {
    /// No compression (`identity`, or no `grpc-encoding` header).
    #[default]
    Identity,
    /// `gzip` (RFC 1952).
    Gzip,
    /// `deflate`, which gRPC defines as zlib-wrapped DEFLATE (RFC 1950).
    Deflate,
    /// An encoding the filter cannot inflate, such as `snappy` or `zstd`.
    Unknown,
}

impl Encoding {
    /// Maps a `grpc-encoding` header value to an encoding. Matching is
    /// ASCII case-insensitive and ignores surrounding white space.
    ///
    /// ```
    /// use inlinekeepalive_core::Encoding;
    ///
    /// assert_eq!(Encoding::from_grpc_encoding("gzip"), Encoding::Gzip);
    /// assert_eq!(Encoding::from_grpc_encoding(" Identity "), Encoding::Identity);
    /// assert_eq!(Encoding::from_grpc_encoding("zstd"), Encoding::Unknown);
    /// ```
    #[must_use]
    pub fn from_grpc_encoding(value: &str) -> Self {
        let value = value.trim();
        if value.eq_ignore_ascii_case("identity") || value.is_empty() {
            Encoding::Identity
        } else if value.eq_ignore_ascii_case("gzip") {
            Encoding::Gzip
        } else if value.eq_ignore_ascii_case("deflate") {
            Encoding::Deflate
        } else {
            Encoding::Unknown
        }
    }

    /// Whether this build can inflate frames of this encoding.
    fn can_inflate(self) -> bool {
        cfg!(feature = "compression") && matches!(self, Encoding::Gzip | Encoding::Deflate)
    }
}

/// A gRPC byte stream that breaks the framing rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FrameError {
    /// A frame's compressed-flag byte is neither 0 nor 1.
    BadFlag(u8),
    /// The stream ended inside a frame.
    Truncated {
        /// How many more bytes the frame announced.
        missing: u64,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FrameError::BadFlag(flag) => fmt::Display::fmt(&BadFlag(flag), f),
            FrameError::Truncated { missing } => write!(
                f,
                "gRPC stream ended inside a frame ({missing} more bytes were announced)"
            ),
        }
    }
}

impl core::error::Error for FrameError {}

/// What the [`FrameFilter`] has seen so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct FilterStats {
    /// Keepalive frames removed from the stream.
    pub keepalives_removed: u64,
    /// Frames passed on whose payload uses field number 100000000 but is not
    /// a keepalive ([`Classification::Collision`]). Only frames short enough
    /// to be classified count; longer ones are passed on unread.
    pub collisions: u64,
    /// Frames passed on to the application, collisions included.
    pub frames_passed: u64,
}

/// One decision of the [`FrameFilter`]; see [`FrameFilter::step`].
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub struct Step<'a> {
    /// How many bytes of the input the filter consumed. The next call MUST
    /// start with `input[consumed..]`.
    pub consumed: usize,
    /// What to pass on.
    pub output: Output<'a>,
}

/// What the caller passes on after one [`FrameFilter::step`].
#[derive(Debug, PartialEq, Eq)]
pub enum Output<'a> {
    /// Pass on `input[range]` unchanged. The range lies within
    /// `..consumed`.
    Forward(Range<usize>),
    /// Pass on these bytes, a short frame that the filter held back while it
    /// straddled two inputs. At most `FRAME_HEADER_LEN + MAX_KEEPALIVE_LEN`
    /// bytes; they come before anything of the input that follows.
    Held(&'a [u8]),
    /// A keepalive frame was removed; nothing to pass on.
    Removed,
    /// Nothing to pass on: the consumed bytes were held back, or the input
    /// was empty.
    Nothing,
}

/// Removes keepalive frames from a gRPC byte stream fed in arbitrary chunks.
///
/// Feed each chunk through [`step`](Self::step) until it is consumed, pass on
/// what each step says, and call [`finish`](Self::finish) at the end of the
/// stream:
///
/// ```
/// use inlinekeepalive_core::{wire::KEEPALIVE_FRAME, FrameFilter, Output};
///
/// let app = [0, 0, 0, 0, 2, 0x08, 0x01]; // a 2-byte message
/// let mut stream = Vec::new();
/// stream.extend_from_slice(&KEEPALIVE_FRAME);
/// stream.extend_from_slice(&app);
///
/// let mut filter = FrameFilter::new();
/// let mut passed = Vec::new();
/// for chunk in stream.chunks(10) {
///     let mut input = chunk;
///     while !input.is_empty() {
///         let step = filter.step(input)?;
///         match step.output {
///             Output::Forward(range) => passed.extend_from_slice(&input[range]),
///             Output::Held(bytes) => passed.extend_from_slice(bytes),
///             Output::Removed | Output::Nothing => {}
///         }
///         input = &input[step.consumed..];
///     }
/// }
/// filter.finish()?;
/// assert_eq!(passed, app);
/// assert_eq!(filter.stats().keepalives_removed, 1);
/// # Ok::<(), inlinekeepalive_core::FrameError>(())
/// ```
///
/// Errors are sticky: after a [`FrameError`] every later call returns it
/// again, and nothing after the broken frame is passed on. Bytes passed on
/// before the error stay passed: a long frame is forwarded as it arrives, so
/// a stream truncated inside one ends with part of it already forwarded, as
/// it would have without the filter.
#[derive(Clone, Debug)]
pub struct FrameFilter {
    state: State,
    /// A frame header, or a whole short frame, that straddles inputs.
    held: Held,
    /// The header of the held frame once it is complete.
    held_header: Option<FrameHeader>,
    /// `held` was handed out by the last step and is cleared by the next.
    held_released: bool,
    encoding: Encoding,
    stats: FilterStats,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At a frame boundary, or filling `held`.
    Framing,
    /// Inside the payload of a frame being passed on, `remaining` bytes to go.
    Passing {
        remaining: u32,
    },
    Failed(FrameError),
}

impl Default for FrameFilter {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameFilter {
    /// A filter for an uncompressed stream (`grpc-encoding` absent or
    /// `identity`).
    #[must_use]
    pub const fn new() -> Self {
        Self::with_encoding(Encoding::Identity)
    }

    /// A filter for a stream with the given `grpc-encoding`.
    #[must_use]
    pub const fn with_encoding(encoding: Encoding) -> Self {
        Self {
            state: State::Framing,
            held: Held::new(),
            held_header: None,
            held_released: false,
            encoding,
            stats: FilterStats {
                keepalives_removed: 0,
                collisions: 0,
                frames_passed: 0,
            },
        }
    }

    /// The stream's encoding, as given at construction.
    #[must_use]
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Counters of what the filter has seen.
    #[must_use]
    pub fn stats(&self) -> FilterStats {
        self.stats
    }

    /// Whether the bytes fed so far end exactly at a frame boundary, so the
    /// stream may end here without error.
    #[must_use]
    pub fn is_at_boundary(&self) -> bool {
        self.state == State::Framing && (self.held.is_empty() || self.held_released)
    }

    /// How many bytes the filter holds back, waiting for the rest of a short
    /// frame. A reader that must not overwrite unread input before writing
    /// held bytes can read at most [`held_needs`](Self::held_needs) bytes
    /// while this is non-zero.
    #[must_use]
    pub fn held_len(&self) -> usize {
        if self.held_released {
            0
        } else {
            self.held.len()
        }
    }

    /// How many more bytes complete what is held back (a header, or a short
    /// frame), or 0 when nothing is held.
    #[must_use]
    pub fn held_needs(&self) -> usize {
        let held = self.held_len();
        match self.held_header {
            _ if held == 0 => 0,
            Some(header) => FRAME_HEADER_LEN + header.len as usize - held,
            None => FRAME_HEADER_LEN - held,
        }
    }

    /// Classifies one whole message of a transport that frames messages
    /// itself (a WebSocket, a QUIC stream, a codec), and counts it in
    /// [`stats`](Self::stats) as [`step`](Self::step) counts frames: the
    /// caller drops a [`Classification::Keepalive`] and delivers the rest.
    ///
    /// ```
    /// use inlinekeepalive_core::{wire, Classification, FrameFilter};
    ///
    /// let mut filter = FrameFilter::new();
    /// assert_eq!(filter.classify_message(&wire::KEEPALIVE_MESSAGE), Classification::Keepalive);
    /// assert_eq!(filter.classify_message(b"hello"), Classification::Application);
    /// assert_eq!((filter.stats().keepalives_removed, filter.stats().frames_passed), (1, 1));
    /// ```
    pub fn classify_message(&mut self, payload: &[u8]) -> Classification {
        let class = classify(payload);
        match class {
            Classification::Keepalive => self.stats.keepalives_removed += 1,
            class => self.count_passed(class),
        }
        class
    }

    /// Declares the end of the stream.
    ///
    /// # Errors
    /// [`FrameError::Truncated`] if the stream ended inside a frame (the held
    /// part of a short frame is then never passed on), or the earlier error.
    pub fn finish(&mut self) -> Result<(), FrameError> {
        let missing = match self.state {
            State::Failed(error) => return Err(error),
            State::Passing { remaining } => u64::from(remaining),
            State::Framing => self.held_needs() as u64,
        };
        if missing == 0 {
            return Ok(());
        }
        let error = FrameError::Truncated { missing };
        self.state = State::Failed(error);
        Err(error)
    }

    /// Consumes a prefix of `input` and says what to pass on.
    ///
    /// Call it again with `input[step.consumed..]` until the input is empty;
    /// each call makes progress (`consumed > 0`) on a non-empty input unless
    /// it fails. Consecutive frames that are passed on come out as one
    /// [`Output::Forward`] range, so a chunk without keepalives costs one
    /// step.
    ///
    /// # Errors
    /// [`FrameError::BadFlag`] when a frame header carries a compressed flag
    /// other than 0 or 1. Frames before it in the same input come out first,
    /// in an `Ok` step.
    pub fn step(&mut self, input: &[u8]) -> Result<Step<'_>, FrameError> {
        if self.held_released {
            self.held.clear();
            self.held_header = None;
            self.held_released = false;
        }
        match self.state {
            State::Failed(error) => Err(error),
            State::Passing { remaining } => {
                let taken = input.len().min(remaining as usize);
                // `taken <= remaining`, which is a u32.
                let remaining = remaining - taken as u32;
                if remaining > 0 {
                    self.state = State::Passing { remaining };
                    return Ok(Step {
                        consumed: taken,
                        output: Output::Forward(0..taken),
                    });
                }
                self.state = State::Framing;
                self.scan(input, taken)
            }
            State::Framing if !self.held.is_empty() => self.fill_held(input),
            State::Framing => self.scan(input, 0),
        }
    }

    /// Walks whole frames of `input` from `start` (everything before `start`
    /// is to be forwarded), extending one forward range as far as it can.
    fn scan(&mut self, input: &[u8], start: usize) -> Result<Step<'_>, FrameError> {
        let mut pos = start;
        let forward = |end: usize| {
            Ok(Step {
                consumed: end,
                output: if end == 0 {
                    Output::Nothing
                } else {
                    Output::Forward(0..end)
                },
            })
        };
        loop {
            let rest = &input[pos..];
            // The flag is checked before the header is complete: a broken
            // stream fails at its first bad byte, not four bytes later.
            match rest.first() {
                Some(&flag) if flag > 1 && pos > 0 => return forward(pos),
                Some(&flag) if flag > 1 => return Err(self.fail(FrameError::BadFlag(flag))),
                _ => {}
            }
            let Some(header) = rest.first_chunk::<FRAME_HEADER_LEN>() else {
                if pos > 0 || rest.is_empty() {
                    return forward(pos);
                }
                return Ok(self.hold(rest, None));
            };
            let header = match FrameHeader::parse(*header) {
                Ok(header) => header,
                Err(BadFlag(_)) if pos > 0 => return forward(pos),
                Err(BadFlag(flag)) => return Err(self.fail(FrameError::BadFlag(flag))),
            };
            let payload = &rest[FRAME_HEADER_LEN..];
            if !self.may_be_keepalive(header) {
                self.stats.frames_passed += 1;
                let len = header.len as usize;
                if len <= payload.len() {
                    pos += FRAME_HEADER_LEN + len;
                    continue;
                }
                // `payload.len() < header.len`, so the difference fits.
                let remaining = header.len - payload.len() as u32;
                self.state = State::Passing { remaining };
                return forward(input.len());
            }
            let Some(payload) = payload.get(..header.len as usize) else {
                if pos > 0 {
                    return forward(pos);
                }
                return Ok(self.hold(rest, Some(header)));
            };
            let frame_len = FRAME_HEADER_LEN + payload.len();
            match self.classify(header, payload) {
                Classification::Keepalive if pos > 0 => return forward(pos),
                Classification::Keepalive => {
                    self.stats.keepalives_removed += 1;
                    return Ok(Step {
                        consumed: frame_len,
                        output: Output::Removed,
                    });
                }
                class => {
                    self.count_passed(class);
                    pos += frame_len;
                }
            }
        }
    }

    /// Adds bytes to the held frame; releases or removes it once complete.
    fn fill_held(&mut self, input: &[u8]) -> Result<Step<'_>, FrameError> {
        let mut consumed = self.take_held(input);
        let header = match self.held_header {
            Some(header) => header,
            None if self.held.len() < FRAME_HEADER_LEN => return Ok(nothing(consumed)),
            None => {
                let mut bytes = [0u8; FRAME_HEADER_LEN];
                bytes.copy_from_slice(self.held.as_slice());
                let header = match FrameHeader::parse(bytes) {
                    Ok(header) => header,
                    Err(BadFlag(flag)) => return Err(self.fail(FrameError::BadFlag(flag))),
                };
                if !self.may_be_keepalive(header) {
                    self.stats.frames_passed += 1;
                    if header.len > 0 {
                        self.state = State::Passing {
                            remaining: header.len,
                        };
                    }
                    return Ok(self.release(consumed));
                }
                self.held_header = Some(header);
                consumed += self.take_held(&input[consumed..]);
                header
            }
        };
        if self.held_needs() > 0 {
            return Ok(nothing(consumed));
        }
        let class = self.classify(header, &self.held.as_slice()[FRAME_HEADER_LEN..]);
        if class == Classification::Keepalive {
            self.stats.keepalives_removed += 1;
            self.held_released = true;
            return Ok(Step {
                consumed,
                output: Output::Removed,
            });
        }
        self.count_passed(class);
        Ok(self.release(consumed))
    }

    /// Moves up to [`held_needs`](Self::held_needs) bytes of `input` into the
    /// held buffer and returns how many.
    fn take_held(&mut self, input: &[u8]) -> usize {
        let taken = self.held_needs().min(input.len());
        // `held_needs` never reaches past HELD_CAPACITY.
        self.held.extend_from_slice(&input[..taken]);
        taken
    }

    /// Holds back the tail of the input: a partial header, or a short frame
    /// whose payload is incomplete.
    fn hold(&mut self, bytes: &[u8], header: Option<FrameHeader>) -> Step<'_> {
        self.held.extend_from_slice(bytes);
        self.held_header = header;
        nothing(bytes.len())
    }

    fn release(&mut self, consumed: usize) -> Step<'_> {
        self.held_released = true;
        Step {
            consumed,
            output: Output::Held(self.held.as_slice()),
        }
    }

    fn fail(&mut self, error: FrameError) -> FrameError {
        self.state = State::Failed(error);
        error
    }

    /// Whether a frame with this header is short enough to classify, and
    /// readable: compressed frames only when the encoding can be inflated.
    fn may_be_keepalive(&self, header: FrameHeader) -> bool {
        header.len as usize <= MAX_KEEPALIVE_LEN
            && (!header.compressed || self.encoding.can_inflate())
    }

    fn classify(&self, header: FrameHeader, payload: &[u8]) -> Classification {
        if !header.compressed {
            return classify(payload);
        }
        #[cfg(feature = "compression")]
        {
            let mut inflated = [0u8; MAX_KEEPALIVE_LEN];
            if let Some(len) = crate::compression::inflate(self.encoding, payload, &mut inflated) {
                return classify(&inflated[..len]);
            }
        }
        Classification::Application
    }

    fn count_passed(&mut self, class: Classification) {
        self.stats.frames_passed += 1;
        if class == Classification::Collision {
            self.stats.collisions += 1;
        }
    }
}

fn nothing(consumed: usize) -> Step<'static> {
    Step {
        consumed,
        output: Output::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::KEEPALIVE_FRAME;
    use std::vec::Vec as StdVec;

    /// Feeds `chunks` and returns the passed bytes, or the error with the
    /// bytes passed before it.
    fn run(filter: &mut FrameFilter, chunks: &[&[u8]]) -> (StdVec<u8>, Result<(), FrameError>) {
        let mut out = StdVec::new();
        for chunk in chunks {
            let mut input = *chunk;
            while !input.is_empty() {
                let step = match filter.step(input) {
                    Ok(step) => step,
                    Err(e) => return (out, Err(e)),
                };
                assert!(step.consumed > 0, "no progress on {input:?}");
                match step.output {
                    Output::Forward(range) => out.extend_from_slice(&input[range]),
                    Output::Held(bytes) => out.extend_from_slice(bytes),
                    Output::Removed | Output::Nothing => {}
                }
                input = &input[step.consumed..];
            }
        }
        let result = filter.finish();
        (out, result)
    }

    fn frame(payload: &[u8]) -> StdVec<u8> {
        let mut f = StdVec::from((payload.len() as u32).to_be_bytes());
        f.insert(0, 0);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn keepalive_between_frames_is_cut_out_at_every_chunk_size() {
        let a = frame(&[0x08, 0x01]);
        let big = frame(&[0x0a; 300]);
        let mut stream = a.clone();
        stream.extend_from_slice(&KEEPALIVE_FRAME);
        stream.extend_from_slice(&big);
        stream.extend_from_slice(&KEEPALIVE_FRAME);
        let mut expected = a.clone();
        expected.extend_from_slice(&big);
        for size in 1..=stream.len() {
            let chunks: StdVec<&[u8]> = stream.chunks(size).collect();
            let mut filter = FrameFilter::new();
            let (out, result) = run(&mut filter, &chunks);
            assert_eq!(result, Ok(()), "chunk size {size}");
            assert_eq!(out, expected, "chunk size {size}");
            assert_eq!(filter.stats().keepalives_removed, 2);
            assert_eq!(filter.stats().frames_passed, 2);
        }
    }

    #[test]
    fn a_chunk_without_keepalives_is_one_forward() {
        let mut stream = frame(&[1; 10]);
        stream.extend_from_slice(&frame(&[2; 100]));
        stream.extend_from_slice(&frame(&[]));
        let mut filter = FrameFilter::new();
        let step = filter.step(&stream).unwrap();
        assert_eq!(step.consumed, stream.len());
        assert_eq!(step.output, Output::Forward(0..stream.len()));
    }

    #[test]
    fn errors_are_sticky() {
        let mut filter = FrameFilter::new();
        assert_eq!(filter.step(&[7]).unwrap_err(), FrameError::BadFlag(7));
        assert_eq!(filter.step(&[0]).unwrap_err(), FrameError::BadFlag(7));
        assert_eq!(filter.finish(), Err(FrameError::BadFlag(7)));

        let mut filter = FrameFilter::new();
        let _ = filter.step(&[0, 0, 0, 1, 0, 9]).unwrap();
        assert_eq!(filter.finish(), Err(FrameError::Truncated { missing: 255 }));
    }

    #[test]
    fn compressed_frames_pass_untouched_when_the_encoding_is_unknown() {
        let mut frame = KEEPALIVE_FRAME;
        frame[0] = 1;
        let mut filter = FrameFilter::with_encoding(Encoding::Unknown);
        let (out, result) = run(&mut filter, &[&frame]);
        assert_eq!(result, Ok(()));
        assert_eq!(out, frame);
    }

    #[test]
    fn error_messages_are_clear() {
        use std::string::ToString;
        assert_eq!(
            FrameError::BadFlag(2).to_string(),
            "invalid gRPC compressed-flag 2 (expected 0 or 1)"
        );
        assert_eq!(
            FrameError::Truncated { missing: 3 }.to_string(),
            "gRPC stream ended inside a frame (3 more bytes were announced)"
        );
    }
}
