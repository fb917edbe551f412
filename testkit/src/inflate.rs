//! Reference inflation of compressed frames, with a library independent of
//! the core's.
//!
//! The core inflates with `miniz_oxide` and parses the gzip wrapper itself;
//! the reference inflates with `flate2` on its `zlib-rs` backend (a port of
//! zlib), wrapper included. zlib is what gRPC receivers inflate with, or
//! check like (grpc-c++ and grpc-java's `java.util.zip` are zlib; Go's
//! `compress/gzip` checks the same header and trailer fields), so it is also
//! the specification: a frame the reference cannot inflate is one a receiver
//! would refuse, and the filter must pass it on.

use std::sync::OnceLock;

use flate2::{Decompress, FlushDecompress, Status};
use inlinekeepalive_core::wire::{KEEPALIVE_FRAME, KEEPALIVE_MESSAGE, MAX_KEEPALIVE_LEN};
use inlinekeepalive_core::{Encoding, FrameFilter, Output};

/// Inflates the payload of a compressed frame of `encoding` the way zlib
/// does: `Some` with the inflated bytes if `payload` is exactly one complete,
/// valid stream (gzip: one RFC 1952 member, header CRC checked when present;
/// deflate: one RFC 1950 zlib stream, window size at most 32 KiB, no preset
/// dictionary) that inflates to at most [`MAX_KEEPALIVE_LEN`] bytes, with no
/// byte after it. `None` for anything else, and for the encodings that have
/// no compressed form ([`Encoding::Identity`], [`Encoding::Unknown`]).
///
/// ```
/// use inlinekeepalive_core::Encoding;
/// use inlinekeepalive_testkit::inflate::reference_inflate;
///
/// // "hi" in a zlib stream of one stored block.
/// let zlib = [0x78, 0x01, 0x01, 0x02, 0x00, 0xfd, 0xff, b'h', b'i', 0x01, 0x3b, 0x00, 0xd2];
/// assert_eq!(reference_inflate(Encoding::Deflate, &zlib).as_deref(), Some(&b"hi"[..]));
/// assert_eq!(reference_inflate(Encoding::Deflate, &zlib[..12]), None); // truncated
/// assert_eq!(reference_inflate(Encoding::Gzip, &zlib), None); // not gzip
/// ```
///
/// Under `cfg(fuzzing)` (set by `cargo fuzz`) the adler32 trailer of a zlib
/// stream is not checked: `miniz_oxide`, the core's inflater, skips that
/// check there so that the fuzzer gets past it, and the reference follows.
#[must_use]
pub fn reference_inflate(encoding: Encoding, payload: &[u8]) -> Option<Vec<u8>> {
    let fixed;
    let payload = if cfg!(fuzzing) && encoding == Encoding::Deflate {
        fixed = with_right_adler32(payload);
        fixed.as_deref().unwrap_or(payload)
    } else {
        payload
    };
    let mut inflater = match encoding {
        Encoding::Gzip => Decompress::new_gzip(15),
        Encoding::Deflate => Decompress::new(true),
        _ => return None,
    };
    // One byte more than allowed: filling it means the stream inflates to
    // more than a keepalive can be.
    let mut out = [0u8; MAX_KEEPALIVE_LEN + 1];
    let status = inflater
        .decompress(payload, &mut out, FlushDecompress::Finish)
        .ok()?;
    let consumed = usize::try_from(inflater.total_in()).ok()?;
    let len = usize::try_from(inflater.total_out()).ok()?;
    (status == Status::StreamEnd && consumed == payload.len() && len <= MAX_KEEPALIVE_LEN)
        .then(|| out[..len].to_vec())
}

/// `payload`, a zlib stream, with its adler32 trailer replaced by the right
/// one, if the stream ends exactly 4 bytes before the end of `payload`;
/// nothing checks its header here.
fn with_right_adler32(payload: &[u8]) -> Option<Vec<u8>> {
    let body = payload.get(2..payload.len().checked_sub(4)?)?;
    let mut inflater = Decompress::new(false);
    let mut out = [0u8; MAX_KEEPALIVE_LEN + 1];
    let status = inflater
        .decompress(body, &mut out, FlushDecompress::Finish)
        .ok()?;
    let consumed = usize::try_from(inflater.total_in()).ok()?;
    let len = usize::try_from(inflater.total_out()).ok()?;
    if status != Status::StreamEnd || consumed != body.len() || len > MAX_KEEPALIVE_LEN {
        return None;
    }
    // Adler-32 (RFC 1950), plainly: at most 64 bytes.
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in &out[..len] {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    let mut fixed = payload.to_vec();
    let at = fixed.len() - 4;
    fixed[at..].copy_from_slice(&((b << 16) | a).to_be_bytes());
    Some(fixed)
}

/// Whether the core build this crate is linked with inflates compressed
/// frames: it is built with its `compression` feature.
///
/// With this crate's own `compression` feature the answer is known (`true`)
/// and nothing is probed, so a core whose inflation is broken altogether
/// fails the differential tests. Without it, the core is asked once: does a
/// [`FrameFilter`] remove a gzip and a deflate keepalive frame (made with
/// `flate2`)? Both or neither, or this panics.
///
/// # Panics
/// If the core removes one of the two probe frames but not the other.
#[must_use]
pub fn core_inflates() -> bool {
    static PROBE: OnceLock<bool> = OnceLock::new();
    if cfg!(feature = "compression") {
        return true;
    }
    *PROBE.get_or_init(|| {
        let removes = |encoding| {
            let frame = compressed_keepalive_frame(encoding);
            let mut filter = FrameFilter::with_encoding(encoding);
            let mut input = &frame[..];
            let mut passed = 0;
            while !input.is_empty() {
                let Ok(step) = filter.step(input) else {
                    return false;
                };
                passed += match step.output {
                    Output::Forward(range) => range.len(),
                    Output::Held(bytes) => bytes.len(),
                    _ => 0,
                };
                input = &input[step.consumed..];
            }
            passed == 0 && filter.stats().keepalives_removed == 1
        };
        let (gzip, deflate) = (removes(Encoding::Gzip), removes(Encoding::Deflate));
        assert_eq!(
            gzip, deflate,
            "the core removes a compressed keepalive under one of gzip and deflate only"
        );
        gzip
    })
}

/// `data` compressed by `flate2` (zlib-rs) as a gzip member or a zlib
/// stream, at the default level: what a peer's gRPC library sends. Used to
/// build test frames; [`Encoding::Identity`] and [`Encoding::Unknown`] give
/// `data` back unchanged.
#[must_use]
pub fn compress(encoding: Encoding, data: &[u8]) -> Vec<u8> {
    use flate2::{Compress, Compression, FlushCompress};
    let mut compressor = match encoding {
        Encoding::Gzip => Compress::new_gzip(Compression::default(), 15),
        Encoding::Deflate => Compress::new(Compression::default(), true),
        _ => return data.to_vec(),
    };
    let mut out = Vec::with_capacity(data.len() + 64);
    loop {
        let status = compressor
            .compress_vec(data, &mut out, FlushCompress::Finish)
            .expect("compressing in memory");
        if status == Status::StreamEnd {
            return out;
        }
        out.reserve(64);
    }
}

/// The keepalive frame compressed under `encoding`: a frame with the
/// compressed flag set and the [`compress`]ed keepalive message, or the
/// plain [`KEEPALIVE_FRAME`] for an encoding without a compressed form.
#[must_use]
pub fn compressed_keepalive_frame(encoding: Encoding) -> Vec<u8> {
    if !matches!(encoding, Encoding::Gzip | Encoding::Deflate) {
        return KEEPALIVE_FRAME.to_vec();
    }
    let payload = compress(encoding, &KEEPALIVE_MESSAGE);
    let mut frame = vec![1];
    frame.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(&payload);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_zlib_refuses() {
        for encoding in [Encoding::Gzip, Encoding::Deflate] {
            let payload = compress(encoding, &KEEPALIVE_MESSAGE);
            assert_eq!(
                reference_inflate(encoding, &payload).as_deref(),
                Some(&KEEPALIVE_MESSAGE[..])
            );
            let mut trailing = payload.clone();
            trailing.push(0);
            assert_eq!(
                reference_inflate(encoding, &trailing),
                None,
                "trailing byte"
            );
            let mut corrupt = payload.clone();
            *corrupt.last_mut().unwrap() ^= 1;
            assert_eq!(reference_inflate(encoding, &corrupt), None, "bad checksum");
            for len in 0..payload.len() {
                assert_eq!(
                    reference_inflate(encoding, &payload[..len]),
                    None,
                    "cut at {len}"
                );
            }
            let big = compress(encoding, &[b'a'; MAX_KEEPALIVE_LEN + 1]);
            assert_eq!(reference_inflate(encoding, &big), None, "over the cap");
            let at_cap = compress(encoding, &[b'a'; MAX_KEEPALIVE_LEN]);
            assert_eq!(
                reference_inflate(encoding, &at_cap).map(|v| v.len()),
                Some(MAX_KEEPALIVE_LEN)
            );
            assert!(reference_inflate(encoding, &compress(encoding, &[])).is_some());
        }
        let gzip = compress(Encoding::Gzip, b"x");
        assert_eq!(reference_inflate(Encoding::Deflate, &gzip), None);
        assert_eq!(reference_inflate(Encoding::Identity, b"x"), None);
        assert_eq!(reference_inflate(Encoding::Unknown, b"x"), None);
    }

    #[test]
    fn the_adler32_is_put_right_for_fuzzing_builds() {
        let payload = compress(Encoding::Deflate, &KEEPALIVE_MESSAGE);
        let mut wrong = payload.clone();
        let at = wrong.len() - 4;
        wrong[at..].copy_from_slice(&[0, 0, 0, 1]);
        assert_eq!(with_right_adler32(&wrong), Some(payload.clone()));
        assert_eq!(with_right_adler32(&payload), Some(payload.clone()));
        let mut trailing = payload.clone();
        trailing.push(0);
        assert_eq!(with_right_adler32(&trailing), None);
        assert_eq!(with_right_adler32(&payload[..5]), None);
        assert_eq!(with_right_adler32(&[]), None);
    }

    #[test]
    fn the_compressed_keepalive_frame_is_removed() {
        assert!(core_inflates());
        for encoding in [Encoding::Gzip, Encoding::Deflate] {
            let frame = compressed_keepalive_frame(encoding);
            assert_eq!(frame[0], 1);
            assert!(
                frame.len() <= 5 + MAX_KEEPALIVE_LEN,
                "{} bytes",
                frame.len()
            );
        }
    }
}
