//! gRPC's length-prefixed messages over any byte transport: [`GrpcCodec`],
//! a codec for `tokio_util::codec` (feature `tokio`) and for
//! `asynchronous_codec` (feature `asynchronous-codec`: futures-io, so smol,
//! async-std or any executor).
//!
//! # Who removes keepalives
//!
//! The codec only frames: it decodes every message, keepalives included,
//! and encodes one frame per message. Keepalives are removed by a
//! [`KeepaliveStream`](crate::KeepaliveStream) on top of the decoder and
//! sent by a [`KeepaliveSink`](crate::KeepaliveSink) on top of the encoder.
//! One place removes them, and it is the one that also watches the peer:
//! with [dead-peer detection](crate#dead-peer-detection) every keepalive is
//! proof of life, so the stream must see them.
//!
//! ```text
//! socket ─ Framed<_, GrpcCodec> ─┬─ KeepaliveStream ─> your messages, keepalives removed
//!                                └─ KeepaliveSink   <─ your messages, keepalives added while idle
//! ```
//!
//! Both take the codec's [`Message`], which carries gRPC's compressed flag:
//! with [`KeepaliveStream::with_grpc_encoding`](crate::KeepaliveStream::with_grpc_encoding)
//! the stream also removes the keepalives a Go peer sends compressed under
//! `grpc-encoding: gzip`.
//!
//! # Example
//!
//! Under tokio (feature `tokio`); under smol or async-std the same lines with
//! `asynchronous_codec::Framed` (feature `asynchronous-codec`), as in
//! `adapters/examples/smol_tcp.rs`.
//!
#![cfg_attr(feature = "tokio", doc = "```")]
#![cfg_attr(not(feature = "tokio"), doc = "```ignore")]
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::time::Duration;
//!
//! use futures::{SinkExt, StreamExt};
//! use inlinekeepalive::codec::{GrpcCodec, Message};
//! use inlinekeepalive::{timer::TokioTimer, Config, KeepaliveSink, KeepaliveStream};
//! use tokio_util::codec::{FramedRead, FramedWrite};
//!
//! let (client, server) = tokio::io::duplex(64 * 1024);
//! let config = Config::new(Duration::from_millis(10))?;
//!
//! // Sending side: one frame per message, keepalives while idle.
//! let framed = FramedWrite::new(server, GrpcCodec::new());
//! let mut sink = KeepaliveSink::new(framed, TokioTimer, config).with_peer_support(true);
//! sink.send(Message::new(&b"hello"[..])).await?;
//! let (mut messages, driver) = sink.into_driver(8);
//! let driver = tokio::spawn(driver);
//! tokio::time::sleep(Duration::from_millis(50)).await; // idle: keepalives flow
//! messages.send(Message::new(&b"world"[..])).await?;
//! drop(messages);
//! driver.await??;
//!
//! // Receiving side: whole messages, keepalives removed.
//! let mut stream = KeepaliveStream::new(FramedRead::new(client, GrpcCodec::new()));
//! assert_eq!(stream.next().await.unwrap()?.payload(), &b"hello"[..]);
//! assert_eq!(stream.next().await.unwrap()?.payload(), &b"world"[..]);
//! assert!(stream.next().await.is_none());
//! assert!(stream.stats().keepalives_removed >= 1);
//! # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
//! ```

use std::error::Error as StdError;
use std::fmt;
use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use inlinekeepalive_core::wire::{self, EncodeError, FrameHeader, FRAME_HEADER_LEN};

/// gRPC's default limit on a received message: 4 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024;

/// The most bytes a buffer can hold: no allocation exceeds `isize::MAX`
/// bytes. Every frame fits on a 64-bit target; on a 32-bit one a header can
/// announce more.
const MAX_BUFFERED: usize = isize::MAX as usize;

/// The length of the whole frame (header and payload) whose header
/// announces `len` payload bytes, or `None` when the payload is over the
/// limit `max` or the frame longer than `max_buffered` (a parameter only so
/// that tests can use a 32-bit target's bound). Summed in `u64`: in `usize`,
/// `5 + len` overflows on a 32-bit target whose limit is raised near
/// `usize::MAX`, and a frame longer than a buffer can hold would make the
/// decoder's `reserve` panic; a peer must not be able to do either.
fn frame_len(len: u32, max: usize, max_buffered: usize) -> Option<usize> {
    let frame = u64::from(len) + FRAME_HEADER_LEN as u64;
    if u64::from(len) > max as u64 || frame > max_buffered as u64 {
        return None;
    }
    usize::try_from(frame).ok()
}

/// One gRPC message: its payload (without the 5-byte prefix) and the
/// compressed flag of its frame.
///
/// The item [`GrpcCodec`] decodes and encodes, and the item a
/// [`KeepaliveStream`](crate::KeepaliveStream) or a
/// [`KeepaliveSink`](crate::KeepaliveSink) carries over the codec. The
/// payload is a [`Bytes`], cut from the codec's read buffer without a copy.
///
/// It converts from `&'static [u8]`, `Vec<u8>` and `Bytes` as an
/// uncompressed message; that is how a `KeepaliveSink` makes its
/// keepalives. It is deliberately not `AsRef<[u8]>`: a compressed payload
/// is not the message, so ask [`is_compressed`](Self::is_compressed).
///
/// ```
/// use inlinekeepalive::codec::Message;
///
/// let m = Message::new(vec![0x08, 0x01]);
/// assert_eq!(&m.payload()[..], [0x08, 0x01]);
/// assert!(!m.is_compressed());
/// assert!(Message::compressed(vec![0x1f, 0x8b]).is_compressed());
/// assert_eq!(Message::from(&b"x"[..]), Message::new(&b"x"[..]));
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Message {
    payload: Bytes,
    flag: Flag,
}

/// gRPC's compressed flag, a whole word wide. As a `bool` it left seven
/// bytes of padding in `Message`, which every move of a decoded item copied
/// with unaligned loads that stalled on the decoder's stores (measured: a
/// third of a `KeepaliveStream`'s cost per 64-byte message). Its spare
/// values still give `Option<Result<Message, _>>` its niche.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u64)]
enum Flag {
    #[default]
    Uncompressed = 0,
    Compressed = 1,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("compressed", &self.is_compressed())
            .field("payload", &self.payload)
            .finish()
    }
}

impl Message {
    /// An uncompressed message.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Self {
            payload: payload.into(),
            flag: Flag::Uncompressed,
        }
    }

    /// A message whose payload is already compressed with the stream's
    /// `grpc-encoding` (the codec never compresses).
    pub fn compressed(payload: impl Into<Bytes>) -> Self {
        Self {
            payload: payload.into(),
            flag: Flag::Compressed,
        }
    }

    /// The payload, without the 5-byte prefix.
    #[must_use]
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Whether the frame's compressed flag is set.
    #[must_use]
    pub fn is_compressed(&self) -> bool {
        self.flag == Flag::Compressed
    }

    /// The payload, without the 5-byte prefix.
    #[must_use]
    pub fn into_payload(self) -> Bytes {
        self.payload
    }
}

impl From<&'static [u8]> for Message {
    fn from(payload: &'static [u8]) -> Self {
        Self::new(Bytes::from_static(payload))
    }
}

impl From<Vec<u8>> for Message {
    fn from(payload: Vec<u8>) -> Self {
        Self::new(payload)
    }
}

impl From<Bytes> for Message {
    fn from(payload: Bytes) -> Self {
        Self::new(payload)
    }
}

/// gRPC's length-prefixed message framing: a 1-byte compressed flag, a
/// big-endian `u32` length, the payload.
///
/// A codec for `tokio_util::codec::{FramedRead, FramedWrite, Framed}`
/// (feature `tokio`) and for `asynchronous_codec`'s (feature
/// `asynchronous-codec`). It only frames; see the [module docs](self) for
/// how to add and remove keepalives on top.
///
/// Decoding yields one [`Message`] per frame, in order; the payload is cut
/// from the read buffer without copying. Encoding writes one frame per
/// message.
///
/// # Limit
///
/// A frame whose header announces more than
/// [`max_message_size`](Self::max_message_size) bytes (by default
/// [`DEFAULT_MAX_MESSAGE_SIZE`], 4 MiB, gRPC's default) fails with
/// [`CodecError::TooLarge`] as soon as its header is read: whatever a header
/// declares, the codec reserves at most the limit. On a 32-bit target a
/// frame must also fit in one buffer (`isize::MAX` bytes), whatever the
/// limit: a longer one fails with `TooLarge` too. The limit applies to
/// decoding, as gRPC's default one does; encoding refuses only a payload no
/// frame can carry (over `u32::MAX` bytes).
///
/// # Errors
///
/// A broken stream gives a [`CodecError`] that says what and where (the
/// byte offset of the frame in the stream):
/// [`BadFlag`](CodecError::BadFlag) for a compressed-flag other than 0 or
/// 1, [`TooLarge`](CodecError::TooLarge) for a length over the limit, and
/// [`Truncated`](CodecError::Truncated) when the stream ends inside a frame.
/// Messages before the broken frame are all delivered first. Nothing of the
/// broken frame is consumed, so decoding it again gives the same error.
///
#[cfg_attr(feature = "tokio", doc = "```")]
#[cfg_attr(not(feature = "tokio"), doc = "```ignore")]
/// use bytes::BytesMut;
/// use inlinekeepalive::codec::{CodecError, GrpcCodec, Message};
/// use tokio_util::codec::Decoder;
///
/// let mut codec = GrpcCodec::new().with_max_message_size(1024);
/// let mut buf = BytesMut::from(&[0, 0, 0, 0, 2, 0x08, 0x01, 0, 0, 0][..]);
/// assert_eq!(codec.decode(&mut buf)?, Some(Message::new(vec![0x08, 0x01])));
/// assert_eq!(codec.decode(&mut buf)?, None); // a partial header: wait for more
///
/// buf.extend_from_slice(&[0x10, 0, 0]); // the header announces 4 KiB
/// match codec.decode(&mut buf) {
///     Err(CodecError::TooLarge { len, max, offset }) => {
///         assert_eq!((len, max, offset), (4096, 1024, 7));
///     }
///     other => panic!("{other:?}"),
/// }
/// # Ok::<(), CodecError>(())
/// ```
#[derive(Clone, Debug)]
pub struct GrpcCodec {
    max_message_size: usize,
    /// The stream offset of the first byte in the decode buffer: the start
    /// of the next frame.
    offset: u64,
}

impl Default for GrpcCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl GrpcCodec {
    /// A codec with the default limit of 4 MiB per decoded message.
    #[must_use]
    pub fn new() -> Self {
        Self {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            offset: 0,
        }
    }

    /// This codec with another limit on the size of a decoded message's
    /// payload, in bytes.
    #[must_use]
    pub fn with_max_message_size(mut self, max: usize) -> Self {
        self.max_message_size = max;
        self
    }

    /// The limit on the size of a decoded message's payload, in bytes.
    #[must_use]
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// Decodes the next whole message from the front of `src`, if it is
    /// there; shared by both codec traits.
    ///
    /// A frame stays in `src` until it is whole (its header is read again
    /// on the next call, five bytes), so an empty buffer always means a
    /// frame boundary: asynchronous-codec's `FramedRead` ends a stream whose
    /// buffer is empty without asking [`decode_eof`](Self::decode_message_eof).
    fn decode_message(&mut self, src: &mut BytesMut) -> Result<Option<Message>, CodecError> {
        let Some((header, frame_len)) = self.peek_header(src)? else {
            return Ok(None);
        };
        if src.len() < frame_len {
            // Room for the rest of the frame: at most the limit and a header,
            // checked by `peek_header`.
            src.reserve(frame_len - src.len());
            return Ok(None);
        }
        self.offset += frame_len as u64;
        // One split of the whole frame, then the header skipped on the
        // frozen `Bytes` (a pointer bump): cheaper than advancing the
        // `BytesMut` and splitting it again.
        let mut payload = src.split_to(frame_len).freeze();
        payload.advance(FRAME_HEADER_LEN);
        Ok(Some(if header.compressed {
            Message::compressed(payload)
        } else {
            Message::new(payload)
        }))
    }

    /// The header at the front of `src`, checked against the rules and the
    /// limit, with the length of its whole frame; `None` while fewer than 5
    /// bytes are there.
    fn peek_header(&self, src: &[u8]) -> Result<Option<(FrameHeader, usize)>, CodecError> {
        let header = match src.first_chunk::<FRAME_HEADER_LEN>() {
            Some(bytes) => FrameHeader::parse(*bytes),
            // A broken stream fails at its first bad byte, not four later.
            None => match src.first() {
                Some(&flag) if flag > 1 => Err(wire::BadFlag(flag)),
                _ => return Ok(None),
            },
        };
        let header = header.map_err(|wire::BadFlag(flag)| CodecError::BadFlag {
            flag,
            offset: self.offset,
        })?;
        match frame_len(header.len, self.max_message_size, MAX_BUFFERED) {
            Some(frame_len) => Ok(Some((header, frame_len))),
            None => Err(CodecError::TooLarge {
                len: header.len,
                max: self.max_message_size.min(MAX_BUFFERED - FRAME_HEADER_LEN),
                offset: self.offset,
            }),
        }
    }

    /// [`decode_message`](Self::decode_message) at the end of the stream:
    /// anything left over is a frame cut short.
    fn decode_message_eof(&mut self, src: &mut BytesMut) -> Result<Option<Message>, CodecError> {
        if let Some(message) = self.decode_message(src)? {
            return Ok(Some(message));
        }
        if src.is_empty() {
            return Ok(None);
        }
        let missing = match self.peek_header(src)? {
            // `decode_message` left the frame, so `src` is shorter than it;
            // saturating all the same, so that a bug cannot become a panic.
            Some((_, frame_len)) => frame_len.saturating_sub(src.len()) as u64,
            None => (FRAME_HEADER_LEN - src.len()) as u64,
        };
        Err(CodecError::Truncated {
            offset: self.offset,
            missing,
        })
    }

    /// Appends `message` as one frame; shared by both codec traits.
    fn encode_message(&mut self, message: &Message, dst: &mut BytesMut) -> Result<(), CodecError> {
        let payload = message.payload();
        let len = u32::try_from(payload.len())
            .map_err(|_| CodecError::Encode(EncodeError::PayloadTooLong { len: payload.len() }))?;
        let header = FrameHeader {
            compressed: message.is_compressed(),
            len,
        };
        dst.reserve(FRAME_HEADER_LEN + payload.len());
        dst.put_slice(&header.to_bytes());
        dst.put_slice(payload);
        Ok(())
    }
}

#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
impl tokio_util::codec::Decoder for GrpcCodec {
    type Item = Message;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, CodecError> {
        self.decode_message(src)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Message>, CodecError> {
        self.decode_message_eof(src)
    }
}

#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
impl tokio_util::codec::Encoder<Message> for GrpcCodec {
    type Error = CodecError;

    fn encode(&mut self, message: Message, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode_message(&message, dst)
    }
}

#[cfg(feature = "asynchronous-codec")]
#[cfg_attr(docsrs, doc(cfg(feature = "asynchronous-codec")))]
impl asynchronous_codec::Decoder for GrpcCodec {
    type Item = Message;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, CodecError> {
        self.decode_message(src)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Message>, CodecError> {
        self.decode_message_eof(src)
    }
}

#[cfg(feature = "asynchronous-codec")]
#[cfg_attr(docsrs, doc(cfg(feature = "asynchronous-codec")))]
impl asynchronous_codec::Encoder for GrpcCodec {
    type Item<'a> = Message;
    type Error = CodecError;

    fn encode(&mut self, message: Message, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode_message(&message, dst)
    }
}

/// What went wrong in a [`GrpcCodec`], and where.
///
/// Offsets count the bytes of the stream that the codec has read since it
/// was created, from 0; a frame's offset is that of its flag byte.
///
/// Converts into an `io::Error` of a matching kind (`InvalidData`,
/// `UnexpectedEof`, `InvalidInput`, or the transport's own) whose inner
/// error is this one.
#[derive(Debug)]
#[non_exhaustive]
pub enum CodecError {
    /// A frame header's compressed-flag byte is neither 0 nor 1.
    BadFlag {
        /// The flag byte.
        flag: u8,
        /// The frame's offset in the stream.
        offset: u64,
    },
    /// A frame header announces a message longer than the codec's limit.
    /// Nothing was reserved for it.
    TooLarge {
        /// The length the header announces.
        len: u32,
        /// The limit, [`GrpcCodec::max_message_size`]; on a 32-bit target,
        /// at most the largest payload a buffer can hold (`isize::MAX`
        /// bytes less the 5-byte header).
        max: usize,
        /// The frame's offset in the stream.
        offset: u64,
    },
    /// The stream ended inside a frame.
    Truncated {
        /// The frame's offset in the stream.
        offset: u64,
        /// How many more bytes the frame needed: exactly, once its header
        /// was there; the rest of the header (at least) otherwise.
        missing: u64,
    },
    /// A message cannot be encoded: its payload is longer than a frame can
    /// announce.
    Encode(EncodeError),
    /// The transport failed.
    Io(io::Error),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::BadFlag { flag, offset } => write!(
                f,
                "invalid gRPC compressed-flag {flag} (expected 0 or 1) in the frame at byte {offset}"
            ),
            CodecError::TooLarge { len, max, offset } => write!(
                f,
                "the gRPC frame at byte {offset} announces a {len}-byte message, \
                 over the limit of {max} bytes"
            ),
            CodecError::Truncated { offset, missing } => write!(
                f,
                "gRPC stream ended inside the frame at byte {offset} \
                 ({missing} more bytes were expected)"
            ),
            CodecError::Encode(e) => write!(f, "cannot encode a gRPC message: {e}"),
            CodecError::Io(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl StdError for CodecError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            CodecError::Encode(e) => Some(e),
            CodecError::Io(e) => e.source(),
            _ => None,
        }
    }
}

impl From<io::Error> for CodecError {
    fn from(e: io::Error) -> Self {
        CodecError::Io(e)
    }
}

impl From<CodecError> for io::Error {
    fn from(e: CodecError) -> Self {
        let kind = match e {
            CodecError::Io(e) => return e,
            CodecError::BadFlag { .. } | CodecError::TooLarge { .. } => io::ErrorKind::InvalidData,
            CodecError::Truncated { .. } => io::ErrorKind::UnexpectedEof,
            CodecError::Encode(_) => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a 32-bit target would compute, with the limit raised to its
    /// `usize::MAX`: no length the header can announce may overflow or
    /// exceed what a buffer can hold (`isize::MAX` bytes); those are
    /// refused instead.
    #[test]
    fn frame_len_fits_a_32_bit_target_whatever_the_limit() {
        let (max, max_buffered) = (u32::MAX as usize, i32::MAX as usize);
        assert_eq!(frame_len(0, max, max_buffered), Some(FRAME_HEADER_LEN));
        let largest = i32::MAX as u32 - FRAME_HEADER_LEN as u32;
        assert_eq!(frame_len(largest, max, max_buffered), Some(max_buffered));
        for len in [largest + 1, u32::MAX - 5, u32::MAX - 4, u32::MAX] {
            assert_eq!(frame_len(len, max, max_buffered), None, "{len}");
        }
    }

    #[test]
    fn frame_len_applies_the_limit() {
        assert_eq!(frame_len(10, 10, MAX_BUFFERED), Some(15));
        assert_eq!(frame_len(11, 10, MAX_BUFFERED), None);
        assert_eq!(frame_len(u32::MAX, 0, MAX_BUFFERED), None);
    }
}
