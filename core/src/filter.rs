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
use crate::wire::{
    BadFlag, FrameHeader, FRAME_HEADER_LEN, GRPC_WEB_TRAILERS_FLAG, MAX_KEEPALIVE_LEN,
};

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

/// How a byte stream is framed: which frame flags it may carry and how it
/// ends.
///
/// Plain gRPC (`application/grpc`) carries only message frames, flag 0 or
/// 1, and ends with the HTTP/2 trailers. A gRPC-Web *response* body
/// (`application/grpc-web`, `application/grpc-web+proto`, and
/// `application/grpc-web-text` once base64-decoded) carries its trailers
/// in-band, as a last frame whose flag has the most significant bit set:
/// [`GRPC_WEB_TRAILERS_FLAG`] (`0x80`), or `0x81` when the trailers are
/// compressed.
///
/// Under [`Framing::GrpcWeb`], [`FrameFilter`] and
/// [`FrameTracker`](crate::FrameTracker) accept that frame as the stream's
/// last: it is passed on untouched and never classified, nothing may be
/// inserted after it, and any byte after it is
/// [`FrameError::AfterTrailers`]. Under [`Framing::Grpc`] its flag is a
/// [`FrameError::BadFlag`], as every flag above 1 is.
///
/// A gRPC-Web request body never has a trailers frame: filter it as
/// [`Framing::Grpc`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Framing {
    /// gRPC over HTTP/2: message frames only (flag 0 or 1).
    #[default]
    Grpc,
    /// A gRPC-Web response body: message frames, then at most one trailers
    /// frame (flag `0x80` or `0x81`), which ends the body.
    GrpcWeb,
}

/// What a 5-byte frame header announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Header {
    /// A message frame.
    Message(FrameHeader),
    /// A gRPC-Web trailers frame of `len` bytes: the last frame of the body.
    Trailers {
        /// The payload length in bytes.
        len: u32,
    },
}

impl Framing {
    /// Whether a frame may start with `flag` in this framing.
    pub(crate) const fn allows_flag(self, flag: u8) -> bool {
        flag <= 1 || (matches!(self, Framing::GrpcWeb) && flag & !1 == GRPC_WEB_TRAILERS_FLAG)
    }

    /// Parses a frame header in this framing.
    pub(crate) const fn parse(self, bytes: [u8; FRAME_HEADER_LEN]) -> Result<Header, FrameError> {
        if !self.allows_flag(bytes[0]) {
            return Err(FrameError::BadFlag(bytes[0]));
        }
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        if bytes[0] & GRPC_WEB_TRAILERS_FLAG != 0 {
            return Ok(Header::Trailers { len });
        }
        Ok(Header::Message(FrameHeader {
            compressed: bytes[0] == 1,
            len,
        }))
    }
}

/// A gRPC byte stream that breaks the framing rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FrameError {
    /// A frame's flag byte is not allowed: neither 0 nor 1, or, in a
    /// gRPC-Web body ([`Framing::GrpcWeb`]), not `0x80` or `0x81` either.
    BadFlag(u8),
    /// The stream ended inside a frame.
    Truncated {
        /// How many more bytes the frame announced.
        missing: u64,
    },
    /// A gRPC-Web body goes on after its trailers frame, which must be the
    /// last ([`Framing::GrpcWeb`]).
    AfterTrailers,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FrameError::BadFlag(flag) => fmt::Display::fmt(&BadFlag(flag), f),
            FrameError::Truncated { missing } => write!(
                f,
                "gRPC stream ended inside a frame ({missing} more bytes were announced)"
            ),
            FrameError::AfterTrailers => f.write_str(
                "gRPC-Web body goes on after its trailers frame, which must be the last",
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
///
/// A gRPC-Web response body ends with a trailers frame: filter it with
/// [`with_framing(Framing::GrpcWeb)`](Self::with_framing), and that frame is
/// passed on untouched as the last:
///
/// ```
/// use inlinekeepalive_core::{wire::KEEPALIVE_FRAME, FrameError, FrameFilter, Framing, Output};
///
/// let trailers = b"\x80\x00\x00\x00\x0fgrpc-status:0\r\n";
/// let mut body = KEEPALIVE_FRAME.to_vec();
/// body.extend_from_slice(trailers);
///
/// let mut filter = FrameFilter::new().with_framing(Framing::GrpcWeb);
/// assert_eq!(filter.step(&body)?.output, Output::Removed);
/// let step = filter.step(&body[KEEPALIVE_FRAME.len()..])?;
/// assert_eq!(step.output, Output::Forward(0..trailers.len()));
/// assert!(filter.trailers_seen());
/// filter.finish()?;
/// // Nothing may follow the trailers frame.
/// assert_eq!(filter.step(&[0]).unwrap_err(), FrameError::AfterTrailers);
/// # Ok::<(), FrameError>(())
/// ```
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
    framing: Framing,
    /// A gRPC-Web trailers frame's header was read.
    trailers_seen: bool,
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
    /// Inside a gRPC-Web trailers frame being passed on, `remaining` bytes
    /// to go; the stream ends with it.
    PassingTrailers {
        remaining: u32,
    },
    /// After a gRPC-Web trailers frame: only the end of the stream may come.
    Ended,
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
            framing: Framing::Grpc,
            trailers_seen: false,
            stats: FilterStats {
                keepalives_removed: 0,
                collisions: 0,
                frames_passed: 0,
            },
        }
    }

    /// The same filter for a stream framed as `framing`: pass
    /// [`Framing::GrpcWeb`] for a gRPC-Web response body, whose last frame
    /// carries the trailers. Call it before the first [`step`](Self::step).
    ///
    /// ```
    /// use inlinekeepalive_core::{Encoding, FrameFilter, Framing};
    ///
    /// let filter = FrameFilter::with_encoding(Encoding::Gzip).with_framing(Framing::GrpcWeb);
    /// assert_eq!(filter.framing(), Framing::GrpcWeb);
    /// ```
    #[must_use]
    pub const fn with_framing(mut self, framing: Framing) -> Self {
        self.framing = framing;
        self
    }

    /// The stream's encoding.
    #[must_use]
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Changes the stream's encoding, at any point: only whether a short
    /// compressed frame is a keepalive depends on it, and nothing is ever
    /// removed that is not one, so a frame already begun is classified under
    /// either encoding without harm. Applications learn the encoding from the
    /// `grpc-encoding` header, usually before the first byte.
    pub fn set_encoding(&mut self, encoding: Encoding) {
        self.encoding = encoding;
    }

    /// The stream's framing, [`Framing::Grpc`] unless set with
    /// [`with_framing`](Self::with_framing).
    #[must_use]
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Whether the header of a gRPC-Web trailers frame has been read: the
    /// body's last frame has begun (or ended, if
    /// [`is_at_boundary`](Self::is_at_boundary)). It stays `true` after an
    /// error. Always `false` under [`Framing::Grpc`].
    #[must_use]
    pub fn trailers_seen(&self) -> bool {
        self.trailers_seen
    }

    /// Counters of what the filter has seen.
    #[must_use]
    pub fn stats(&self) -> FilterStats {
        self.stats
    }

    /// Whether the bytes fed so far end exactly at a frame boundary, so the
    /// stream may end here without error. After a whole gRPC-Web trailers
    /// frame this stays `true`, though nothing more may follow.
    #[must_use]
    pub fn is_at_boundary(&self) -> bool {
        match self.state {
            State::Framing => self.held.is_empty() || self.held_released,
            State::Ended => true,
            _ => false,
        }
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

    /// Classifies one whole, uncompressed message of a transport that frames
    /// messages itself (a WebSocket, a QUIC stream): exactly
    /// [`classify_frame`](Self::classify_frame) with the compressed flag
    /// clear, so a message longer than [`MAX_KEEPALIVE_LEN`] is passed unread
    /// (and never counted as a collision), as [`step`](Self::step) passes
    /// such a frame. The caller drops a [`Classification::Keepalive`] and
    /// delivers the rest.
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
        self.classify_frame(false, payload)
    }

    /// Classifies one whole message as it arrived from a codec, with the
    /// compressed flag of its frame, exactly as [`step`](Self::step) treats
    /// the frame: a message longer than [`MAX_KEEPALIVE_LEN`] is never a
    /// keepalive and is passed unread; a compressed one is inflated per the
    /// filter's [`Encoding`] first, and is an application message when it
    /// cannot be. Counted in [`stats`](Self::stats) as `step` counts frames:
    /// the caller drops a [`Classification::Keepalive`] and delivers the
    /// rest.
    ///
    /// ```
    /// use inlinekeepalive_core::{wire, Classification, Encoding, FrameFilter};
    ///
    /// let mut filter = FrameFilter::with_encoding(Encoding::Identity);
    /// assert_eq!(filter.classify_frame(false, &wire::KEEPALIVE_MESSAGE), Classification::Keepalive);
    /// assert_eq!(filter.classify_frame(false, &[0x08, 0x01]), Classification::Application);
    /// // Compressed, under an encoding the filter cannot inflate: delivered.
    /// assert_eq!(filter.classify_frame(true, &wire::KEEPALIVE_MESSAGE), Classification::Application);
    /// assert_eq!((filter.stats().keepalives_removed, filter.stats().frames_passed), (1, 2));
    /// ```
    pub fn classify_frame(&mut self, compressed: bool, payload: &[u8]) -> Classification {
        let header = FrameHeader {
            compressed,
            len: u32::try_from(payload.len()).unwrap_or(u32::MAX),
        };
        let class = if self.may_be_keepalive(header) {
            self.classify(header, payload)
        } else {
            Classification::Application
        };
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
            State::Passing { remaining } | State::PassingTrailers { remaining } => {
                u64::from(remaining)
            }
            State::Framing => self.held_needs() as u64,
            State::Ended => 0,
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
    /// other than 0 or 1 (or, under [`Framing::GrpcWeb`], `0x80` or `0x81`);
    /// [`FrameError::AfterTrailers`] when a gRPC-Web body goes on after its
    /// trailers frame. Frames before it in the same input come out first, in
    /// an `Ok` step.
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
            State::PassingTrailers { remaining } => {
                let taken = input.len().min(remaining as usize);
                // `taken <= remaining`, which is a u32.
                let remaining = remaining - taken as u32;
                self.state = if remaining > 0 {
                    State::PassingTrailers { remaining }
                } else {
                    State::Ended
                };
                // Whatever follows in `input` fails in the next step.
                Ok(Step {
                    consumed: taken,
                    output: if taken == 0 {
                        Output::Nothing
                    } else {
                        Output::Forward(0..taken)
                    },
                })
            }
            State::Ended if input.is_empty() => Ok(nothing(0)),
            State::Ended => Err(self.fail(FrameError::AfterTrailers)),
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
                Some(&flag) if !self.framing.allows_flag(flag) && pos > 0 => return forward(pos),
                Some(&flag) if !self.framing.allows_flag(flag) => {
                    return Err(self.fail(FrameError::BadFlag(flag)))
                }
                _ => {}
            }
            let Some(header) = rest.first_chunk::<FRAME_HEADER_LEN>() else {
                if pos > 0 || rest.is_empty() {
                    return forward(pos);
                }
                return Ok(self.hold(rest, None));
            };
            let header = match self.framing.parse(*header) {
                Ok(Header::Message(header)) => header,
                Ok(Header::Trailers { len }) => {
                    // The last frame: passed on as it arrives, never read.
                    self.trailers_seen = true;
                    let payload = rest.len() - FRAME_HEADER_LEN;
                    return match (len as usize).checked_sub(payload) {
                        Some(remaining) if remaining > 0 => {
                            // `remaining <= len`, which is a u32.
                            self.state = State::PassingTrailers {
                                remaining: remaining as u32,
                            };
                            forward(input.len())
                        }
                        _ => {
                            self.state = State::Ended;
                            forward(pos + FRAME_HEADER_LEN + len as usize)
                        }
                    };
                }
                Err(_) if pos > 0 => return forward(pos),
                Err(error) => return Err(self.fail(error)),
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
                let header = match self.framing.parse(bytes) {
                    Ok(Header::Message(header)) => header,
                    Ok(Header::Trailers { len }) => {
                        // The last frame: its header goes out now, its
                        // payload as it arrives.
                        self.trailers_seen = true;
                        self.state = if len > 0 {
                            State::PassingTrailers { remaining: len }
                        } else {
                            State::Ended
                        };
                        return Ok(self.release(consumed));
                    }
                    Err(error) => return Err(self.fail(error)),
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

    /// Whole messages are counted as the byte filter counts their frames,
    /// long ones included: a keepalive-shaped message over
    /// `MAX_KEEPALIVE_LEN` is passed unread, not counted as a collision.
    #[test]
    fn classify_message_counts_as_step_counts_frames() {
        let mut long = StdVec::new();
        for _ in 0..4 {
            long.extend_from_slice(&crate::wire::KEEPALIVE_MESSAGE);
        }
        assert!(long.len() > MAX_KEEPALIVE_LEN);
        let collision = [0x82, 0x90, 0xbc, 0xfd, 0x02, 0x01, b'x'];
        let messages: [&[u8]; 4] = [&crate::wire::KEEPALIVE_MESSAGE, &long, &collision, b"hi"];

        let mut by_frame = FrameFilter::new();
        let wire: StdVec<u8> = messages.iter().flat_map(|m| frame(m)).collect();
        run(&mut by_frame, &[&wire]).1.unwrap();
        let mut by_message = FrameFilter::new();
        let classes: StdVec<_> = messages
            .iter()
            .map(|m| by_message.classify_message(m))
            .collect();
        assert_eq!(
            classes,
            [
                Classification::Keepalive,
                Classification::Application,
                Classification::Collision,
                Classification::Application
            ]
        );
        assert_eq!(by_message.stats(), by_frame.stats());
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

    fn web_trailers(flag: u8, text: &[u8]) -> StdVec<u8> {
        let mut f = StdVec::from([flag]);
        f.extend_from_slice(&(text.len() as u32).to_be_bytes());
        f.extend_from_slice(text);
        f
    }

    fn web_filter() -> FrameFilter {
        FrameFilter::new().with_framing(Framing::GrpcWeb)
    }

    #[test]
    fn grpc_web_trailers_pass_untouched_at_every_chunk_size() {
        for (flag, text) in [
            (0x80, &b"grpc-status:0\r\ngrpc-message:\r\n"[..]),
            (0x81, &[0x1f, 0x8b, 1, 2, 3][..]),
            (0x80, &[][..]),
            (0x80, &[b'x'; 300][..]),
        ] {
            let app = frame(&[0x08, 0x01]);
            let trailers = web_trailers(flag, text);
            let mut body = KEEPALIVE_FRAME.to_vec();
            body.extend_from_slice(&app);
            body.extend_from_slice(&KEEPALIVE_FRAME);
            body.extend_from_slice(&trailers);
            let mut expected = app.clone();
            expected.extend_from_slice(&trailers);
            for size in 1..=body.len() {
                let chunks: StdVec<&[u8]> = body.chunks(size).collect();
                let mut filter = web_filter();
                let (out, result) = run(&mut filter, &chunks);
                assert_eq!(result, Ok(()), "flag {flag:#x}, chunk size {size}");
                assert_eq!(out, expected, "flag {flag:#x}, chunk size {size}");
                assert!(filter.trailers_seen() && filter.is_at_boundary());
                let stats = filter.stats();
                assert_eq!((stats.keepalives_removed, stats.frames_passed), (2, 1));
            }
        }
    }

    #[test]
    fn anything_after_grpc_web_trailers_is_an_error_at_every_split() {
        let app = frame(&[0x08, 0x01]);
        let trailers = web_trailers(0x80, b"grpc-status:0\r\n");
        for after in [&app[..], &KEEPALIVE_FRAME[..], &trailers[..], &[0][..]] {
            let mut body = app.clone();
            body.extend_from_slice(&trailers);
            body.extend_from_slice(after);
            let mut expected = app.clone();
            expected.extend_from_slice(&trailers);
            for split in 0..=body.len() {
                let mut filter = web_filter();
                let (out, result) = run(&mut filter, &[&body[..split], &body[split..]]);
                assert_eq!(result, Err(FrameError::AfterTrailers), "split {split}");
                assert_eq!(out, expected, "split {split}");
                // Sticky.
                assert_eq!(filter.step(&[]), Err(FrameError::AfterTrailers));
                assert_eq!(filter.finish(), Err(FrameError::AfterTrailers));
            }
        }
    }

    #[test]
    fn trailer_flags_are_bad_outside_grpc_web_and_others_inside() {
        let trailers = web_trailers(0x80, b"grpc-status:0\r\n");
        let (out, result) = run(&mut FrameFilter::new(), &[&trailers]);
        assert_eq!((out.len(), result), (0, Err(FrameError::BadFlag(0x80))));
        for flag in [2, 0x7f, 0x82, 0xc0, 0xff] {
            let (_, result) = run(&mut web_filter(), &[&web_trailers(flag, b"")]);
            assert_eq!(result, Err(FrameError::BadFlag(flag)));
        }
    }

    #[test]
    fn a_truncated_grpc_web_trailers_frame_is_truncated() {
        let trailers = web_trailers(0x80, b"grpc-status:0\r\n");
        for cut in 1..trailers.len() {
            let mut filter = web_filter();
            let (_, result) = run(&mut filter, &[&trailers[..cut]]);
            let missing = if cut < 5 {
                5 - cut
            } else {
                trailers.len() - cut
            };
            assert_eq!(
                result,
                Err(FrameError::Truncated {
                    missing: missing as u64
                }),
                "cut {cut}"
            );
        }
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
        assert_eq!(
            FrameError::AfterTrailers.to_string(),
            "gRPC-Web body goes on after its trailers frame, which must be the last"
        );
    }
}
