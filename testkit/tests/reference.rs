//! The reference deframer and its inflation against the core's frame
//! filter: compressed keepalives made by flate2 (every level, optional gzip
//! header fields), and a deterministic mutation search around them, which
//! reaches the corners of both inflaters where a keepalive may hide.

use std::io::Write;

use flate2::{Compress, Compression, FlushCompress, GzBuilder, Status};
use inlinekeepalive_core::wire::{KEEPALIVE_FRAME, KEEPALIVE_MESSAGE, MAX_KEEPALIVE_LEN};
use inlinekeepalive_core::{Encoding, FrameFilter, Framing, Output};
use inlinekeepalive_testkit::filter::{check_filter, FilterInput};
use inlinekeepalive_testkit::inflate::{core_inflates, reference_inflate};

fn frame(compressed: bool, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![u8::from(compressed)];
    frame.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// The keepalive message compressed at `level` as a gzip member or a zlib
/// stream.
fn compressed(encoding: Encoding, level: u32) -> Vec<u8> {
    let mut compressor = match encoding {
        Encoding::Gzip => Compress::new_gzip(Compression::new(level), 15),
        _ => Compress::new(Compression::new(level), true),
    };
    let mut out = Vec::with_capacity(128);
    let status = compressor
        .compress_vec(&KEEPALIVE_MESSAGE, &mut out, FlushCompress::Finish)
        .unwrap();
    assert_eq!(status, Status::StreamEnd);
    out
}

/// Whether the filter removes `payload`, alone in a compressed frame.
fn core_removes(encoding: Encoding, payload: &[u8]) -> bool {
    let frame = frame(true, payload);
    let mut filter = FrameFilter::with_encoding(encoding);
    let mut input = &frame[..];
    while !input.is_empty() {
        let step = filter.step(input).unwrap();
        if matches!(step.output, Output::Forward(_) | Output::Held(_)) {
            return false;
        }
        input = &input[step.consumed..];
    }
    filter.stats().keepalives_removed == 1
}

#[test]
fn compressed_keepalives_are_removed_at_every_level_in_any_chunks() {
    assert!(core_inflates(), "these tests need a core that inflates");
    for encoding in [Encoding::Gzip, Encoding::Deflate] {
        for level in 0..=9 {
            let payload = compressed(encoding, level);
            assert!(
                payload.len() <= MAX_KEEPALIVE_LEN,
                "{encoding:?} level {level}"
            );
            assert!(
                core_removes(encoding, &payload),
                "{encoding:?} level {level}"
            );
            let mut stream = frame(false, b"app");
            stream.extend(frame(true, &payload));
            stream.extend_from_slice(&KEEPALIVE_FRAME);
            stream.extend(frame(true, &payload[..payload.len() - 1])); // corrupt: passed on
            for chunk_sizes in [&[][..], &[1], &[0, 3, 7], &[200]] {
                check_filter(FilterInput {
                    framing: Framing::Grpc,
                    encoding,
                    chunk_sizes,
                    stream: &stream,
                });
            }
            // Under another encoding, nothing compressed is a keepalive.
            for other in [Encoding::Identity, Encoding::Unknown] {
                check_filter(FilterInput {
                    framing: Framing::Grpc,
                    encoding: other,
                    chunk_sizes: &[],
                    stream: &stream,
                });
            }
        }
    }
}

#[test]
fn gzip_header_fields_are_skipped() {
    let mut member = Vec::new();
    let mut encoder = GzBuilder::new()
        .filename("k")
        .comment("c")
        .extra(vec![1, 2])
        .mtime(7)
        .write(&mut member, Compression::fast());
    encoder.write_all(&KEEPALIVE_MESSAGE).unwrap();
    encoder.finish().unwrap();
    assert_eq!(
        reference_inflate(Encoding::Gzip, &member).as_deref(),
        Some(&KEEPALIVE_MESSAGE[..])
    );
    assert!(core_removes(Encoding::Gzip, &member));
    check_filter(FilterInput {
        framing: Framing::Grpc,
        encoding: Encoding::Gzip,
        chunk_sizes: &[2],
        stream: &frame(true, &member),
    });
}

/// Random bit flips, byte changes, insertions and deletions of compressed
/// keepalives: wherever the core's inflater and zlib disagree on one of
/// them, the filter and the reference disagree.
#[test]
fn mutated_compressed_keepalives_agree_with_zlib() {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    let mut random = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut removed = 0;
    for encoding in [Encoding::Gzip, Encoding::Deflate] {
        for level in [0, 1, 6, 9] {
            let base = compressed(encoding, level);
            for _ in 0..5_000 {
                let mut payload = base.clone();
                for _ in 0..1 + random() % 3 {
                    let len = payload.len();
                    let i = usize::try_from(random()).unwrap() % len;
                    match random() % 4 {
                        0 => payload[i] ^= 1 << (random() % 8),
                        1 => payload[i] = random().to_le_bytes()[0],
                        // Anywhere, the end included: trailing bytes.
                        2 => payload.insert(
                            i + usize::from(random() % 8 == 0),
                            random().to_le_bytes()[0],
                        ),
                        _ if payload.len() > 1 => {
                            payload.remove(i);
                        }
                        _ => {}
                    }
                }
                if payload.len() > MAX_KEEPALIVE_LEN {
                    continue;
                }
                removed += usize::from(core_removes(encoding, &payload));
                check_filter(FilterInput {
                    framing: Framing::Grpc,
                    encoding,
                    chunk_sizes: &[],
                    stream: &frame(true, &payload),
                });
            }
        }
    }
    // Some mutations leave a keepalive (in the mtime or OS byte, say).
    assert!(removed > 100, "{removed} mutants removed");
}

/// zlib, Go's `compress/gzip` and Java's `GZIPInputStream` refuse a gzip
/// member whose header CRC (FHCRC) is wrong, so the filter must not remove
/// it as a keepalive either (the core once skipped the two bytes unchecked).
#[test]
fn gzip_member_with_a_wrong_header_crc_is_not_a_keepalive() {
    let plain = compressed(Encoding::Gzip, 6);
    let mut member = plain[..10].to_vec();
    member[3] |= 0x02; // FHCRC
    member.extend_from_slice(&[0x00, 0x00]); // not the CRC-16 of the header
    member.extend_from_slice(&plain[10..]);
    assert_eq!(
        reference_inflate(Encoding::Gzip, &member),
        None,
        "zlib refuses it"
    );
    assert!(
        !core_removes(Encoding::Gzip, &member),
        "the filter removes a gzip keepalive with a wrong header CRC"
    );
}

/// The same member with the right header CRC is a keepalive for both.
#[test]
fn gzip_member_with_the_right_header_crc_is_a_keepalive() {
    let plain = compressed(Encoding::Gzip, 6);
    let mut member = plain[..10].to_vec();
    member[3] |= 0x02;
    // flate2's CRC-32 (crc32fast), not a copy of the core's: the header CRC
    // is computed independently of the code under test.
    let mut crc = flate2::Crc::new();
    crc.update(&member);
    let crc = crc.sum();
    member.extend_from_slice(&crc.to_le_bytes()[..2]);
    member.extend_from_slice(&plain[10..]);
    assert_eq!(
        reference_inflate(Encoding::Gzip, &member).as_deref(),
        Some(&KEEPALIVE_MESSAGE[..])
    );
    assert!(core_removes(Encoding::Gzip, &member));
}
