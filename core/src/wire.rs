//! The byte-exact constants of the inline keepalive protocol.
//!
//! These match HashiCorp Waypoint's `internal/pkg/inlinekeepalive` package so a
//! Rust peer and a Go peer understand each other's keepalives.
//!
//! A keepalive is the protobuf message
//!
//! ```proto
//! message InlineKeepalive { string signature = 100000000; }
//! ```
//!
//! with `signature = "inline_keepalive"`, sent as one ordinary gRPC message in
//! the stream. Field number 100000000 is far above anything a hand-written
//! schema uses, so the receiver can recognise the message by its bytes alone,
//! without knowing the stream's message type.
//!
//! ```
//! # use inlinekeepalive_core as inlinekeepalive;
//! use inlinekeepalive::wire;
//!
//! assert_eq!(&wire::KEEPALIVE_FRAME[..wire::FRAME_HEADER_LEN], &[0, 0, 0, 0, 22]);
//! assert_eq!(&wire::KEEPALIVE_FRAME[wire::FRAME_HEADER_LEN..], &wire::KEEPALIVE_MESSAGE);
//! assert!(wire::KEEPALIVE_MESSAGE.ends_with(wire::SIGNATURE));
//! ```

use core::fmt;

/// The protobuf field number that carries the keepalive signature.
pub const FIELD_NUMBER: u32 = 100_000_000;

/// The value of the signature field: the 16 ASCII bytes `inline_keepalive`.
pub const SIGNATURE: &[u8] = b"inline_keepalive";

/// The longest payload that can still be a keepalive, in bytes.
///
/// A longer message is never a keepalive, so a streaming filter decides from
/// the 5-byte frame header alone and passes long frames on at once, holding
/// at most `FRAME_HEADER_LEN + MAX_KEEPALIVE_LEN` bytes.
pub const MAX_KEEPALIVE_LEN: usize = 64;

/// The length of a gRPC frame header: one compressed-flag byte and a
/// big-endian `u32` payload length.
pub const FRAME_HEADER_LEN: usize = 5;

/// The flag byte of a gRPC-Web trailers frame, `0x80`: the most significant
/// bit set. The low bit says whether the trailers are compressed, so
/// compressed trailers have the flag `0x81`. It appears only as the last
/// frame of a gRPC-Web response body; see
/// [`Framing::GrpcWeb`](crate::Framing::GrpcWeb).
pub const GRPC_WEB_TRAILERS_FLAG: u8 = 0x80;

/// The request metadata key by which a client announces that it removes
/// keepalives from the streams it receives.
pub const METADATA_KEY: &str = "wp-inline-keepalives";

/// The value of [`METADATA_KEY`] that announces support.
pub const METADATA_VALUE: &str = "true";

/// The protobuf tag of the signature field: `(FIELD_NUMBER << 3) | 2`
/// (wire type 2, length-delimited).
pub const SIGNATURE_TAG: u32 = (FIELD_NUMBER << 3) | 2;

const TAG_VARINT: [u8; 5] = encode_varint5(SIGNATURE_TAG);
const MESSAGE_LEN: usize = TAG_VARINT.len() + 1 + SIGNATURE.len();

/// The canonical encoding of `InlineKeepalive { signature: "inline_keepalive" }`:
/// the tag varint `82 90 BC FD 02`, the length `10` and the 16 signature bytes.
pub const KEEPALIVE_MESSAGE: [u8; 22] = keepalive_message();

/// [`KEEPALIVE_MESSAGE`] as an uncompressed gRPC frame: `00 00 00 00 16` and
/// the message. This is what a sender writes; it is valid whatever
/// `grpc-encoding` the stream negotiated, because the flag says uncompressed.
pub const KEEPALIVE_FRAME: [u8; 27] = keepalive_frame(&KEEPALIVE_MESSAGE);

const fn encode_varint5(value: u32) -> [u8; 5] {
    let mut out = [0u8; 5];
    let mut v = value;
    let mut i = 0;
    while i < 5 {
        out[i] = (v & 0x7f) as u8;
        v >>= 7;
        if i < 4 {
            out[i] |= 0x80;
        }
        i += 1;
    }
    out
}

const fn keepalive_message() -> [u8; MESSAGE_LEN] {
    let mut out = [0u8; MESSAGE_LEN];
    let mut i = 0;
    while i < TAG_VARINT.len() {
        out[i] = TAG_VARINT[i];
        i += 1;
    }
    out[i] = SIGNATURE.len() as u8;
    i += 1;
    let mut j = 0;
    while j < SIGNATURE.len() {
        out[i + j] = SIGNATURE[j];
        j += 1;
    }
    out
}

/// Prefixes `message` with an uncompressed gRPC frame header. Built in a
/// `const fn` so the header's length can never disagree with the message.
const fn keepalive_frame(message: &[u8; MESSAGE_LEN]) -> [u8; FRAME_HEADER_LEN + MESSAGE_LEN] {
    let mut out = [0u8; FRAME_HEADER_LEN + MESSAGE_LEN];
    let len = (MESSAGE_LEN as u32).to_be_bytes();
    out[1] = len[0];
    out[2] = len[1];
    out[3] = len[2];
    out[4] = len[3];
    let mut i = 0;
    while i < MESSAGE_LEN {
        out[FRAME_HEADER_LEN + i] = message[i];
        i += 1;
    }
    out
}

/// A gRPC frame header: the compressed flag and the payload length.
///
/// ```
/// # use inlinekeepalive_core as inlinekeepalive;
/// use inlinekeepalive::wire::FrameHeader;
///
/// let header = FrameHeader::parse([0, 0, 0, 0, 22]).unwrap();
/// assert_eq!(header, FrameHeader { compressed: false, len: 22 });
/// assert_eq!(header.to_bytes(), [0, 0, 0, 0, 22]);
/// assert!(FrameHeader::parse([2, 0, 0, 0, 0]).is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    /// Whether the payload is compressed with the stream's `grpc-encoding`.
    pub compressed: bool,
    /// The payload length in bytes.
    pub len: u32,
}

impl FrameHeader {
    /// Parses the 5 header bytes. A compressed flag other than 0 or 1 is an
    /// error: gRPC defines no other value.
    pub const fn parse(bytes: [u8; FRAME_HEADER_LEN]) -> Result<Self, BadFlag> {
        let compressed = match bytes[0] {
            0 => false,
            1 => true,
            flag => return Err(BadFlag(flag)),
        };
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        Ok(Self { compressed, len })
    }

    /// The 5 header bytes.
    pub const fn to_bytes(self) -> [u8; FRAME_HEADER_LEN] {
        let len = self.len.to_be_bytes();
        [self.compressed as u8, len[0], len[1], len[2], len[3]]
    }
}

/// A compressed-flag byte other than 0 or 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BadFlag(pub u8);

impl fmt::Display for BadFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid gRPC compressed-flag {} (expected 0 or 1)",
            self.0
        )
    }
}

impl core::error::Error for BadFlag {}

/// `out` cannot hold what was asked for; `required` bytes would.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BufferTooSmall {
    /// The size that would have been enough.
    pub required: usize,
}

impl fmt::Display for BufferTooSmall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "buffer too small: {} bytes required", self.required)
    }
}

impl core::error::Error for BufferTooSmall {}

/// Writes [`KEEPALIVE_FRAME`] to the start of `out` and returns its length.
///
/// ```
/// # use inlinekeepalive_core as inlinekeepalive;
/// use inlinekeepalive::wire::{encode_keepalive_frame, KEEPALIVE_FRAME};
///
/// let mut buf = [0u8; 64];
/// let n = encode_keepalive_frame(&mut buf).unwrap();
/// assert_eq!(&buf[..n], &KEEPALIVE_FRAME);
/// assert_eq!(encode_keepalive_frame(&mut [0u8; 4]).unwrap_err().required, 27);
/// ```
pub fn encode_keepalive_frame(out: &mut [u8]) -> Result<usize, BufferTooSmall> {
    let frame = &KEEPALIVE_FRAME;
    out.get_mut(..frame.len())
        .ok_or(BufferTooSmall {
            required: frame.len(),
        })?
        .copy_from_slice(frame);
    Ok(frame.len())
}

/// A frame that [`encode_frame`] cannot write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EncodeError {
    /// `out` is shorter than the frame.
    BufferTooSmall(BufferTooSmall),
    /// The payload is longer than a frame header can announce
    /// (`u32::MAX` bytes).
    PayloadTooLong {
        /// The payload's length in bytes.
        len: usize,
    },
}

impl From<BufferTooSmall> for EncodeError {
    fn from(e: BufferTooSmall) -> Self {
        EncodeError::BufferTooSmall(e)
    }
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::BufferTooSmall(e) => fmt::Display::fmt(e, f),
            EncodeError::PayloadTooLong { len } => write!(
                f,
                "a {len}-byte payload does not fit a gRPC frame (at most {} bytes)",
                u32::MAX
            ),
        }
    }
}

impl core::error::Error for EncodeError {}

/// Writes one gRPC frame, the 5-byte header (`compressed` flag, big-endian
/// length) and `payload`, to the start of `out`, and returns its length,
/// `FRAME_HEADER_LEN + payload.len()`.
///
/// `compressed` says that `payload` is already compressed with the stream's
/// `grpc-encoding`; this function never compresses.
///
/// ```
/// # use inlinekeepalive_core as inlinekeepalive;
/// use inlinekeepalive::wire::{encode_frame, EncodeError, KEEPALIVE_FRAME, KEEPALIVE_MESSAGE};
///
/// let mut buf = [0u8; 64];
/// let n = encode_frame(false, &[0x08, 0x01], &mut buf)?;
/// assert_eq!(&buf[..n], &[0, 0, 0, 0, 2, 0x08, 0x01]);
///
/// let n = encode_frame(false, &KEEPALIVE_MESSAGE, &mut buf)?;
/// assert_eq!(&buf[..n], &KEEPALIVE_FRAME);
///
/// let Err(EncodeError::BufferTooSmall(e)) = encode_frame(true, b"hello", &mut [0u8; 8]) else {
///     panic!("8 bytes cannot hold a 10-byte frame");
/// };
/// assert_eq!(e.required, 10);
/// # Ok::<(), EncodeError>(())
/// ```
///
/// # Errors
/// [`EncodeError::BufferTooSmall`] when `out` is shorter than the frame
/// (nothing is written), [`EncodeError::PayloadTooLong`] when the payload is
/// longer than `u32::MAX` bytes.
pub fn encode_frame(
    compressed: bool,
    payload: &[u8],
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let header = header_for(compressed, payload)?;
    let required = FRAME_HEADER_LEN.saturating_add(payload.len());
    let out = out.get_mut(..required).ok_or(BufferTooSmall { required })?;
    let (head, body) = out.split_at_mut(FRAME_HEADER_LEN);
    head.copy_from_slice(&header.to_bytes());
    body.copy_from_slice(payload);
    Ok(required)
}

/// The header of a frame that carries `payload`.
fn header_for(compressed: bool, payload: &[u8]) -> Result<FrameHeader, EncodeError> {
    let len = u32::try_from(payload.len())
        .map_err(|_| EncodeError::PayloadTooLong { len: payload.len() })?;
    Ok(FrameHeader { compressed, len })
}

/// `payload` as one uncompressed gRPC frame: the 5-byte header
/// (flag 0, big-endian length) followed by the payload. For a payload
/// already compressed with the stream's `grpc-encoding`, use
/// [`encode_frame`] with `compressed: true`.
///
/// ```
/// # use inlinekeepalive_core as inlinekeepalive;
/// use inlinekeepalive::wire;
///
/// assert_eq!(wire::frame(&[0x08, 0x01])?, [0, 0, 0, 0, 2, 0x08, 0x01]);
/// assert_eq!(wire::frame(&wire::KEEPALIVE_MESSAGE)?, wire::KEEPALIVE_FRAME);
/// # Ok::<(), wire::EncodeError>(())
/// ```
///
/// # Errors
/// [`EncodeError::PayloadTooLong`] when the payload is longer than
/// `u32::MAX` bytes.
#[cfg(feature = "alloc")]
#[cfg_attr(docsrs, doc(cfg(feature = "alloc")))]
pub fn frame(payload: &[u8]) -> Result<alloc::vec::Vec<u8>, EncodeError> {
    let header = header_for(false, payload)?;
    let mut out = alloc::vec::Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_match_the_waypoint_bytes() {
        assert_eq!(
            KEEPALIVE_MESSAGE[..6],
            [0x82, 0x90, 0xBC, 0xFD, 0x02, 0x10],
            "tag varint of field 100000000 wire type 2, then length 16"
        );
        assert_eq!(&KEEPALIVE_MESSAGE[6..], b"inline_keepalive");
        assert_eq!(KEEPALIVE_FRAME[..5], [0, 0, 0, 0, 0x16]);
        assert_eq!(KEEPALIVE_FRAME.len(), 27);
        assert_eq!(SIGNATURE_TAG, 800_000_002);
    }

    #[test]
    fn encode_frame_writes_header_and_payload_or_nothing() {
        let mut out = [0xaa; 16];
        assert_eq!(encode_frame(true, b"abc", &mut out), Ok(8));
        assert_eq!(out[..8], [1, 0, 0, 0, 3, b'a', b'b', b'c']);
        assert_eq!(encode_frame(false, &[], &mut out), Ok(5));
        assert_eq!(out[..5], [0, 0, 0, 0, 0]);
        let mut short = [0xaa; 7];
        assert_eq!(
            encode_frame(false, b"abc", &mut short),
            Err(EncodeError::BufferTooSmall(BufferTooSmall { required: 8 }))
        );
        assert_eq!(short, [0xaa; 7], "nothing written");
    }

    #[test]
    fn header_round_trips_and_rejects_bad_flags() {
        for flag in 2..=255u8 {
            assert_eq!(FrameHeader::parse([flag, 0, 0, 0, 1]), Err(BadFlag(flag)));
        }
        let h = FrameHeader {
            compressed: true,
            len: 0xdead_beef,
        };
        assert_eq!(FrameHeader::parse(h.to_bytes()), Ok(h));
    }
}
