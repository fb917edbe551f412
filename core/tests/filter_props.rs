//! Property tests of the classifier, the frame filter and the frame tracker.
//!
//! - Random well-formed application messages whose top-level fields never use
//!   number 100000000 are never a keepalive nor a collision.
//! - Random interleavings of keepalive frames (canonical and non-canonical)
//!   and application frames, split at random chunk boundaries, come out of
//!   the filter as exactly the application frames, in order, with the right
//!   counters.
//! - The frame tracker reports a boundary exactly at frame ends.

use inlinekeepalive_core::wire::{FIELD_NUMBER, KEEPALIVE_MESSAGE, MAX_KEEPALIVE_LEN, SIGNATURE};
use inlinekeepalive_core::{classify, Classification, Encoding, FrameFilter, FrameTracker};
use inlinekeepalive_testkit::filter::filter_in_chunks;
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// Protobuf message generator
// ---------------------------------------------------------------------------

/// One protobuf field; `pad` makes the tag varint that many bytes longer
/// than minimal (still at most 10 bytes, so still well-formed).
#[derive(Clone, Debug)]
enum Field {
    Varint {
        number: u32,
        pad: u8,
        value: u64,
    },
    Fixed32 {
        number: u32,
        value: u32,
    },
    Fixed64 {
        number: u32,
        value: u64,
    },
    Bytes {
        number: u32,
        pad: u8,
        value: Vec<u8>,
    },
    Group {
        number: u32,
        fields: Vec<Field>,
    },
}

const MAX_FIELD_NUMBER: u32 = (1 << 29) - 1;

fn put_varint(out: &mut Vec<u8>, mut value: u64, pad: u8) {
    let mut bytes = Vec::with_capacity(10);
    loop {
        bytes.push((value & 0x7f) as u8);
        value >>= 7;
        if value == 0 {
            break;
        }
    }
    // Over-long encoding: continuation bytes of zero, up to 10 bytes in all.
    let extra = usize::from(pad).min(10 - bytes.len());
    bytes.resize(bytes.len() + extra, 0);
    let last = bytes.len() - 1;
    for b in &mut bytes[..last] {
        *b |= 0x80;
    }
    out.extend_from_slice(&bytes);
}

fn put_tag(out: &mut Vec<u8>, number: u32, wire_type: u8, pad: u8) {
    put_varint(out, (u64::from(number) << 3) | u64::from(wire_type), pad);
}

impl Field {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Field::Varint { number, pad, value } => {
                put_tag(out, *number, 0, *pad);
                put_varint(out, *value, 0);
            }
            Field::Fixed32 { number, value } => {
                put_tag(out, *number, 5, 0);
                out.extend_from_slice(&value.to_le_bytes());
            }
            Field::Fixed64 { number, value } => {
                put_tag(out, *number, 1, 0);
                out.extend_from_slice(&value.to_le_bytes());
            }
            Field::Bytes { number, pad, value } => {
                put_tag(out, *number, 2, *pad);
                put_varint(out, value.len() as u64, *pad);
                out.extend_from_slice(value);
            }
            Field::Group { number, fields } => {
                put_tag(out, *number, 3, 0);
                for field in fields {
                    field.encode(out);
                }
                put_tag(out, *number, 4, 0);
            }
        }
    }
}

fn encode(fields: &[Field]) -> Vec<u8> {
    let mut out = Vec::new();
    for field in fields {
        field.encode(&mut out);
    }
    out
}

/// Field numbers other than 100000000: small ones, neighbours of the reserved
/// number, and the whole range.
fn top_level_number() -> impl Strategy<Value = u32> {
    prop_oneof![
        1u32..=20,
        (FIELD_NUMBER - 3..=FIELD_NUMBER + 3),
        1u32..=MAX_FIELD_NUMBER,
    ]
    .prop_map(|n| if n == FIELD_NUMBER { n + 1 } else { n })
}

/// Values of length-delimited fields: opaque bytes, sometimes a whole
/// keepalive (nested, so not top-level) or the bare signature.
fn bytes_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), 0..40),
        1 => Just(KEEPALIVE_MESSAGE.to_vec()),
        1 => Just(SIGNATURE.to_vec()),
    ]
}

/// A field whose number comes from `number`. Fields inside groups may use
/// 100000000: they are not top-level fields.
fn field(number: BoxedStrategy<u32>) -> impl Strategy<Value = Field> {
    let inner_number = prop_oneof![3 => top_level_number(), 1 => Just(FIELD_NUMBER)].boxed();
    let leaf =
        |number: BoxedStrategy<u32>| {
            prop_oneof![
                (number.clone(), 0u8..4, any::<u64>())
                    .prop_map(|(number, pad, value)| Field::Varint { number, pad, value }),
                (number.clone(), any::<u32>())
                    .prop_map(|(number, value)| Field::Fixed32 { number, value }),
                (number.clone(), any::<u64>())
                    .prop_map(|(number, value)| Field::Fixed64 { number, value }),
                (number, 0u8..3, bytes_value()).prop_map(|(number, pad, value)| Field::Bytes {
                    number,
                    pad,
                    value
                }),
            ]
        };
    let inner = leaf(inner_number.clone()).prop_recursive(3, 24, 6, move |inner| {
        (inner_number.clone(), proptest::collection::vec(inner, 0..6))
            .prop_map(|(number, fields)| Field::Group { number, fields })
    });
    prop_oneof![
        4 => leaf(number.clone()),
        1 => (number, proptest::collection::vec(inner, 0..6))
            .prop_map(|(number, fields)| Field::Group { number, fields }),
    ]
}

fn application_message() -> impl Strategy<Value = Vec<Field>> {
    proptest::collection::vec(field(top_level_number().boxed()), 1..8)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// (a) Never a keepalive, never a collision. And the message is really
    /// well-formed: next to a keepalive it makes a collision, not an
    /// application message (a malformed one would stay APPLICATION).
    #[test]
    fn application_messages_are_never_keepalives(fields in application_message()) {
        let msg = encode(&fields);
        prop_assert_eq!(classify(&msg), Classification::Application);

        let mut before = msg.clone();
        before.extend_from_slice(&KEEPALIVE_MESSAGE);
        prop_assert_eq!(classify(&before), Classification::Collision);
        let mut after = KEEPALIVE_MESSAGE.to_vec();
        after.extend_from_slice(&msg);
        prop_assert_eq!(classify(&after), Classification::Collision);
    }
}

// ---------------------------------------------------------------------------
// Frame streams
// ---------------------------------------------------------------------------

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![flag];
    out.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The canonical keepalive gzipped with mtime 0 (from `tests/vectors/frames.tsv`).
const GZIP_KEEPALIVE: &str =
    "1f8b08000000000002036b9ab0e72f9340665e4e665e6a7c766a6a41624e66592a00111101bb16000000";

/// Keepalive payloads: canonical and the non-canonical encodings the rule
/// accepts. All at most 64 bytes.
fn keepalive_payloads() -> Vec<Vec<u8>> {
    let ka = KEEPALIVE_MESSAGE.to_vec();
    let with_tail = |head: &str| {
        let mut p = hex(head);
        p.extend_from_slice(SIGNATURE);
        p
    };
    let twice = [ka.clone(), ka.clone()].concat();
    let hello_then = [hex("8290bcfd020568656c6c6f"), ka.clone()].concat();
    let mut padded = hex("8290bcfd0224");
    padded.extend([b'p'; 36]);
    padded.extend_from_slice(&ka);
    assert_eq!(padded.len(), MAX_KEEPALIVE_LEN);
    let all = vec![
        ka,
        with_tail("8290bcfd820010"),         // 6-byte tag
        with_tail("8290bcfd82808080800010"), // 10-byte tag
        with_tail("8290bcfd029000"),         // 2-byte length
        twice,
        hello_then,
        padded,
    ];
    for p in &all {
        assert_eq!(classify(p), Classification::Keepalive, "{p:02x?}");
    }
    all
}

/// Short application payloads that are collisions or malformed near-misses.
fn tricky_payloads() -> Vec<Vec<u8>> {
    let ka = KEEPALIVE_MESSAGE.to_vec();
    let mut out = vec![
        [hex("0801"), ka.clone()].concat(),
        [ka.clone(), hex("0801")].concat(),
        hex("8090bcfd0201"),
        hex("8290bcfd0200"),
        [ka.clone(), hex("8290bcfd020568656c6c6f")].concat(),
        [ka.clone(), hex("0f")].concat(),
        hex("8690bcfd02"),
    ];
    for n in 0..ka.len() {
        out.push(ka[..n].to_vec());
    }
    let mut long = hex("8290bcfd0225");
    long.extend([b'p'; 37]);
    long.extend_from_slice(&ka);
    assert_eq!(long.len(), MAX_KEEPALIVE_LEN + 1);
    out.push(long);
    out
}

#[derive(Clone, Debug)]
enum TestFrame {
    Keepalive(Vec<u8>),
    Application { frame: Vec<u8>, collision: bool },
}

fn application(flag: u8, payload: Vec<u8>) -> TestFrame {
    let collision = payload.len() <= MAX_KEEPALIVE_LEN
        && flag == 0
        && classify(&payload) == Classification::Collision;
    TestFrame::Application {
        frame: frame(flag, &payload),
        collision,
    }
}

fn test_frame() -> impl Strategy<Value = TestFrame> {
    let keepalives = keepalive_payloads();
    let tricky = tricky_payloads();
    let compression = cfg!(feature = "compression");
    prop_oneof![
        3 => proptest::sample::select(keepalives)
            .prop_map(|p| TestFrame::Keepalive(frame(0, &p))),
        // A gzipped keepalive is removed only where the filter can inflate it.
        1 => Just(if compression {
            TestFrame::Keepalive(frame(1, &hex(GZIP_KEEPALIVE)))
        } else {
            application(1, hex(GZIP_KEEPALIVE))
        }),
        2 => proptest::sample::select(tricky).prop_map(|p| application(0, p)),
        3 => (0u8..2, proptest::collection::vec(any::<u8>(), 0..=64)).prop_map(|(f, p)| application(f, p)),
        2 => (0u8..2, proptest::collection::vec(any::<u8>(), 0..=2000)).prop_map(|(f, p)| application(f, p)),
    ]
    // Random bytes that happen to be a keepalive would be removed, rightly.
    .prop_filter("random keepalive", |f| match f {
        TestFrame::Application { frame, .. } => {
            frame[0] == 1 || classify(&frame[5..]) != Classification::Keepalive
        }
        TestFrame::Keepalive(_) => true,
    })
}

/// Chunk sizes from 1 byte up to 64 KiB, mostly small.
fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(
        prop_oneof![3 => 1usize..=4, 3 => 1usize..=100, 1 => 1usize..=65_536],
        1..8,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// (b) Exactly the application frames come out, in order, whatever the
    /// chunking, and the counters add up.
    #[test]
    fn filter_passes_exactly_the_application_frames(
        frames in proptest::collection::vec(test_frame(), 0..24),
        sizes in chunk_sizes(),
    ) {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        let (mut keepalives, mut passed, mut collisions) = (0u64, 0u64, 0u64);
        for f in &frames {
            match f {
                TestFrame::Keepalive(frame) => {
                    stream.extend_from_slice(frame);
                    keepalives += 1;
                }
                TestFrame::Application { frame, collision } => {
                    stream.extend_from_slice(frame);
                    expected.extend_from_slice(frame);
                    passed += 1;
                    collisions += u64::from(*collision);
                }
            }
        }
        let mut filter = FrameFilter::with_encoding(Encoding::Gzip);
        let (out, finished) = filter_in_chunks(&mut filter, &stream, &sizes);
        prop_assert!(filter.is_at_boundary());
        prop_assert_eq!(finished, Ok(()));
        prop_assert!(out == expected, "output differs ({} vs {} bytes)", out.len(), expected.len());
        let stats = filter.stats();
        prop_assert_eq!(stats.keepalives_removed, keepalives);
        prop_assert_eq!(stats.frames_passed, passed);
        prop_assert_eq!(stats.collisions, collisions);
    }
}

// ---------------------------------------------------------------------------
// Frame tracker
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// (c) A boundary exactly at the end of each frame (and at the start),
    /// nowhere else, and the frame count follows the complete headers.
    #[test]
    fn tracker_boundaries_are_frame_ends(
        frames in proptest::collection::vec((0u8..2, 0usize..300), 0..16),
        sizes in chunk_sizes(),
    ) {
        let mut stream = Vec::new();
        let mut starts = Vec::new();
        let mut ends = vec![0];
        for (flag, len) in &frames {
            starts.push(stream.len());
            stream.extend_from_slice(&frame(*flag, &vec![0xa5; *len]));
            ends.push(stream.len());
        }
        let mut tracker = FrameTracker::new();
        let mut offset = 0;
        for &size in sizes.iter().cycle() {
            if offset == stream.len() {
                break;
            }
            let end = stream.len().min(offset + size);
            prop_assert_eq!(tracker.advance(&stream[offset..end]), Ok(()));
            offset = end;
            prop_assert_eq!(tracker.is_at_boundary(), ends.contains(&offset), "offset {}", offset);
            let headers = starts.iter().filter(|&&s| s + 5 <= offset).count() as u64;
            prop_assert_eq!(tracker.frames(), headers, "offset {}", offset);
        }
        prop_assert!(tracker.is_at_boundary());
        prop_assert_eq!(tracker.frames(), frames.len() as u64);
    }
}
