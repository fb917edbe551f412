//! The adapters' `GrpcCodec` decoder against a whole-buffer reference and
//! against the core's `FrameFilter`: the oracle of the `codec` fuzz target
//! and of the corpus replay (feature `codec`).
//!
//! Two checks on one input, the stream fed to the decoder in chunks:
//!
//! 1. Framing: the decoder yields exactly the frames of a plain whole-buffer
//!    deframer ([`reference_frames`]), payload and compressed flag, in order,
//!    then exactly its error (kind, offset, length, limit) or none.
//! 2. Keepalives: classifying each decoded message with
//!    `FrameFilter::classify_frame`, as a `KeepaliveStream` does, keeps
//!    exactly the frames that a `FrameFilter` passes on when it is fed the
//!    whole stream, and removes as many keepalives; nothing is dropped,
//!    duplicated or reordered. A frame over the decoder's limit stops the
//!    decoder but not the filter, which has no limit: then the kept
//!    messages are a prefix of the filter's.

use bytes::BytesMut;
use inlinekeepalive::codec::{CodecError, GrpcCodec, Message};
use inlinekeepalive_core::wire::FRAME_HEADER_LEN;
use inlinekeepalive_core::{Classification, Encoding, FrameFilter, Output};

use crate::filter::chunk_size;

// The decoder through asynchronous-codec's trait; tokio-util's calls the
// same two functions.
use asynchronous_codec::Decoder;

/// The codec fuzz input, decoded: see [`CodecInput::parse`].
#[derive(Clone, Copy, Debug)]
pub struct CodecInput<'a> {
    /// The stream's `grpc-encoding`, for the keepalive check.
    pub encoding: Encoding,
    /// The decoder's limit on a message, in bytes.
    pub max_message_size: usize,
    /// Chunk sizes, cycled until the stream is fed (see [`chunk_size`]; 0
    /// counts as 1). Empty: one whole chunk.
    pub chunk_sizes: &'a [u8],
    /// The gRPC byte stream.
    pub stream: &'a [u8],
}

impl<'a> CodecInput<'a> {
    /// Splits a fuzz input: byte 0 picks the encoding (low two bits:
    /// identity, gzip, deflate, unknown) and the limit (the other six bits
    /// `k`: 4 MiB, gRPC's default, for 0, else `(k - 1) * 40` bytes, 0 to
    /// 2480); byte 1 is the number `n` of chunk size bytes (mod 32); the next
    /// `n` bytes are chunk sizes; the rest is the stream.
    #[must_use]
    pub fn parse(data: &'a [u8]) -> Self {
        let first = data.first().copied().unwrap_or(0);
        let encoding = match first & 3 {
            0 => Encoding::Identity,
            1 => Encoding::Gzip,
            2 => Encoding::Deflate,
            _ => Encoding::Unknown,
        };
        let max_message_size = match usize::from(first >> 2) {
            0 => inlinekeepalive::codec::DEFAULT_MAX_MESSAGE_SIZE,
            k => (k - 1) * 40,
        };
        let rest = data.get(1..).unwrap_or(&[]);
        let n = rest.first().map_or(0, |&b| usize::from(b % 32));
        let rest = rest.get(1..).unwrap_or(&[]);
        let (chunk_sizes, stream) = rest.split_at(n.min(rest.len()));
        Self {
            encoding,
            max_message_size,
            chunk_sizes,
            stream,
        }
    }
}

/// How a stream ends, by the reference: cleanly, or with the error the
/// decoder must give (its fields, as `CodecError`'s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// At a frame boundary.
    Clean,
    /// A flag byte other than 0 or 1 at `offset`.
    BadFlag {
        /// The flag.
        flag: u8,
        /// The frame's offset.
        offset: u64,
    },
    /// A header at `offset` announces `len` bytes, over `max`.
    TooLarge {
        /// The announced length.
        len: u32,
        /// The limit.
        max: usize,
        /// The frame's offset.
        offset: u64,
    },
    /// The stream ends `missing` bytes short of the frame at `offset`.
    Truncated {
        /// The frame's offset.
        offset: u64,
        /// The bytes missing (of the header, if it is not whole).
        missing: u64,
    },
}

/// The frames of `stream` read as plainly as possible, whole buffer at
/// once, under a limit of `max` bytes per message, and how the stream ends.
#[must_use]
pub fn reference_frames(stream: &[u8], max: usize) -> (Vec<(bool, &[u8])>, End) {
    let mut frames = Vec::new();
    let mut pos = 0;
    while pos < stream.len() {
        let rest = &stream[pos..];
        let offset = pos as u64;
        if rest[0] > 1 {
            return (
                frames,
                End::BadFlag {
                    flag: rest[0],
                    offset,
                },
            );
        }
        if rest.len() < FRAME_HEADER_LEN {
            let missing = (FRAME_HEADER_LEN - rest.len()) as u64;
            return (frames, End::Truncated { offset, missing });
        }
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]);
        if len as usize > max {
            return (frames, End::TooLarge { len, max, offset });
        }
        let end = FRAME_HEADER_LEN + len as usize;
        if rest.len() < end {
            let missing = (end - rest.len()) as u64;
            return (frames, End::Truncated { offset, missing });
        }
        frames.push((rest[0] == 1, &rest[FRAME_HEADER_LEN..end]));
        pos += end;
    }
    (frames, End::Clean)
}

/// The fuzz target `codec`: see the [module docs](self) for the two checks
/// and [`CodecInput::parse`] for the input layout.
///
/// # Panics
/// On any disagreement: that is a bug in the codec (or the reference).
pub fn codec_against_reference(data: &[u8]) {
    check_codec(CodecInput::parse(data));
}

/// [`codec_against_reference`] on an already decoded input.
///
/// # Panics
/// On any disagreement.
pub fn check_codec(input: CodecInput<'_>) {
    let (messages, end) = decode_in_chunks(input);
    let (frames, want_end) = reference_frames(input.stream, input.max_message_size);

    // 1. Framing.
    let got: Vec<(bool, &[u8])> = messages
        .iter()
        .map(|m| (m.is_compressed(), &m.payload()[..]))
        .collect();
    assert_eq!(got, frames, "decoded messages");
    assert_eq!(end, want_end, "how the stream ends");
    for m in &messages {
        assert!(
            m.payload().len() <= input.max_message_size,
            "over the limit"
        );
    }

    // 2. Keepalives, as a KeepaliveStream over the decoder removes them.
    let mut classifier = FrameFilter::with_encoding(input.encoding);
    let kept: Vec<(bool, &[u8])> = got
        .iter()
        .copied()
        .filter(|&(compressed, payload)| {
            classifier.classify_frame(compressed, payload) != Classification::Keepalive
        })
        .collect();
    let (passed, removed) = filter_whole(input.stream, input.encoding);
    let (passed_frames, _) = reference_frames(&passed, usize::MAX);
    if matches!(end, End::TooLarge { .. }) {
        assert!(
            passed_frames.starts_with(&kept),
            "kept messages are not a prefix of what the filter passes"
        );
        assert!(classifier.stats().keepalives_removed <= removed);
    } else {
        assert_eq!(kept, passed_frames, "kept messages against the filter");
        assert_eq!(
            classifier.stats().keepalives_removed,
            removed,
            "keepalives removed"
        );
    }
}

/// Feeds the stream to a `GrpcCodec` in the input's chunks: the messages,
/// then how it ended.
fn decode_in_chunks(input: CodecInput<'_>) -> (Vec<Message>, End) {
    let mut codec = GrpcCodec::new().with_max_message_size(input.max_message_size);
    let mut buf = BytesMut::new();
    let mut messages = Vec::new();
    let mut fed = 0;
    let mut sizes = input.chunk_sizes.iter().copied().cycle();
    loop {
        let size = if input.chunk_sizes.is_empty() {
            input.stream.len()
        } else {
            // 0 (a call with no new bytes in the filter's layout) is 1 here:
            // every round decodes until it needs more anyway.
            chunk_size(sizes.next().unwrap_or(0)).max(1)
        };
        let end = input.stream.len().min(fed + size);
        buf.extend_from_slice(&input.stream[fed..end]);
        fed = end;
        let at_eof = fed == input.stream.len();
        loop {
            let decoded = if at_eof {
                codec.decode_eof(&mut buf)
            } else {
                codec.decode(&mut buf)
            };
            match decoded {
                Ok(Some(message)) => messages.push(message),
                Ok(None) if at_eof => return (messages, End::Clean),
                Ok(None) => break,
                Err(e) => return (messages, end_of(e)),
            }
        }
    }
}

fn end_of(e: CodecError) -> End {
    match e {
        CodecError::BadFlag { flag, offset } => End::BadFlag { flag, offset },
        CodecError::TooLarge { len, max, offset } => End::TooLarge { len, max, offset },
        CodecError::Truncated { offset, missing } => End::Truncated { offset, missing },
        other => panic!("a decoder error that is not about the stream: {other:?}"),
    }
}

/// What a `FrameFilter` fed the whole stream at once passes on, and how
/// many keepalives it removes.
fn filter_whole(stream: &[u8], encoding: Encoding) -> (Vec<u8>, u64) {
    let mut filter = FrameFilter::with_encoding(encoding);
    let mut passed = Vec::new();
    let mut input = stream;
    while !input.is_empty() {
        let Ok(step) = filter.step(input) else {
            break;
        };
        match step.output {
            Output::Forward(range) => passed.extend_from_slice(&input[range]),
            Output::Held(bytes) => passed.extend_from_slice(bytes),
            Output::Removed | Output::Nothing => {}
        }
        input = &input[step.consumed..];
    }
    (passed, filter.stats().keepalives_removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use inlinekeepalive_core::wire::{frame, KEEPALIVE_FRAME};

    #[test]
    fn reference_and_codec_agree_on_hand_made_streams() {
        let good = [
            frame(b"a").unwrap(),
            KEEPALIVE_FRAME.to_vec(),
            frame(&[7; 300]).unwrap(),
        ]
        .concat();
        let cases: Vec<Vec<u8>> = vec![
            good.clone(),
            [good.clone(), vec![2]].concat(),
            [good.clone(), vec![0, 0, 0]].concat(),
            [good.clone(), vec![0, 0, 0, 1, 0, 9]].concat(),
            [good.clone(), vec![0, 0xff, 0xff, 0xff, 0xff]].concat(),
        ];
        for stream in &cases {
            for chunks in [&[][..], &[1][..], &[3, 0, 200][..]] {
                for max in [0, 100, 4 << 20] {
                    check_codec(CodecInput {
                        encoding: Encoding::Identity,
                        max_message_size: max,
                        chunk_sizes: chunks,
                        stream,
                    });
                }
            }
        }
        let (frames, end) = reference_frames(&cases[0], 4 << 20);
        assert_eq!((frames.len(), end), (3, End::Clean));
    }
}
