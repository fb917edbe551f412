//! Inflating small compressed frames, so that a keepalive that a peer sent
//! compressed is recognised too (Go's grpc compresses every message of a
//! stream whose `grpc-encoding` is `gzip`, keepalives included).
//!
//! Output is capped at [`MAX_KEEPALIVE_LEN`] bytes: anything that inflates to
//! more cannot be a keepalive, so inflation stops there and the frame is
//! passed on untouched.

use miniz_oxide::inflate::core::{decompress, inflate_flags, DecompressorOxide};
use miniz_oxide::inflate::TINFLStatus;

use crate::filter::Encoding;
use crate::wire::MAX_KEEPALIVE_LEN;

/// Inflates `input` into `out` and returns the inflated length, or `None` if
/// `input` is not a complete, valid stream of `encoding` that inflates to at
/// most `out.len()` bytes.
pub(crate) fn inflate(
    encoding: Encoding,
    input: &[u8],
    out: &mut [u8; MAX_KEEPALIVE_LEN],
) -> Option<usize> {
    match encoding {
        Encoding::Gzip => inflate_gzip(input, out),
        Encoding::Deflate => inflate_raw(input, out, inflate_flags::TINFL_FLAG_PARSE_ZLIB_HEADER)
            .filter(|&(_, consumed)| consumed == input.len())
            .map(|(len, _)| len),
        Encoding::Identity | Encoding::Unknown => None,
    }
}

/// One RFC 1952 member: header, raw DEFLATE data, CRC-32 and size trailer.
fn inflate_gzip(input: &[u8], out: &mut [u8; MAX_KEEPALIVE_LEN]) -> Option<usize> {
    const FHCRC: u8 = 0x02;
    const FEXTRA: u8 = 0x04;
    const FNAME: u8 = 0x08;
    const FCOMMENT: u8 = 0x10;
    const RESERVED: u8 = 0xe0;

    let (fixed, mut rest) = split(input, 10)?;
    if fixed[..3] != [0x1f, 0x8b, 8] || fixed[3] & RESERVED != 0 {
        return None;
    }
    let flags = fixed[3];
    if flags & FEXTRA != 0 {
        let (xlen, after) = split(rest, 2)?;
        rest = split(after, usize::from(u16::from_le_bytes([xlen[0], xlen[1]])))?.1;
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let nul = rest.iter().position(|&b| b == 0)?;
            rest = &rest[nul + 1..];
        }
    }
    if flags & FHCRC != 0 {
        // The low 16 bits of the CRC-32 of every header byte before it: a
        // member whose header is corrupt is not a keepalive (zlib agrees).
        let header_len = input.len() - rest.len();
        let (crc16, after) = split(rest, 2)?;
        let expected = crc32(&input[..header_len]) & 0xffff;
        if u32::from(u16::from_le_bytes([crc16[0], crc16[1]])) != expected {
            return None;
        }
        rest = after;
    }

    let (len, consumed) = inflate_raw(rest, out, 0)?;
    let trailer = rest.get(consumed..)?;
    let trailer: [u8; 8] = trailer.try_into().ok()?;
    let crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    let size = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]);
    (crc == crc32(&out[..len]) && usize::try_from(size).ok()? == len).then_some(len)
}

/// Returns the inflated length and the number of input bytes consumed.
fn inflate_raw(input: &[u8], out: &mut [u8], flags: u32) -> Option<(usize, usize)> {
    let mut decompressor = DecompressorOxide::new();
    let flags = flags | inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
    let (status, consumed, written) = decompress(&mut decompressor, input, out, 0, flags);
    (status == TINFLStatus::Done).then_some((written, consumed))
}

fn split(bytes: &[u8], at: usize) -> Option<(&[u8], &[u8])> {
    (at <= bytes.len()).then(|| bytes.split_at(at))
}

/// CRC-32 (IEEE 802.3, reflected), bit by bit: it only ever runs over at most
/// 64 bytes, so a 1 KiB table would cost more than it saves.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xedb8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn gzip_with_optional_header_fields() {
        // "hi" as stored DEFLATE block, inside a gzip member with FNAME set.
        let mut member = std::vec![0x1f, 0x8b, 8, 0x08, 0, 0, 0, 0, 0, 0xff];
        member.extend_from_slice(b"name\0");
        member.extend_from_slice(&[0x01, 0x02, 0x00, 0xfd, 0xff, b'h', b'i']);
        member.extend_from_slice(&crc32(b"hi").to_le_bytes());
        member.extend_from_slice(&2u32.to_le_bytes());
        let mut out = [0u8; MAX_KEEPALIVE_LEN];
        assert_eq!(inflate(Encoding::Gzip, &member, &mut out), Some(2));
        assert_eq!(&out[..2], b"hi");

        let mut bad_crc = member.clone();
        let at = bad_crc.len() - 8;
        bad_crc[at] ^= 1;
        assert_eq!(inflate(Encoding::Gzip, &bad_crc, &mut out), None);
        assert_eq!(
            inflate(Encoding::Gzip, &member[..member.len() - 1], &mut out),
            None
        );
    }

    #[test]
    fn output_over_the_cap_is_refused() {
        // A stored block of 65 bytes.
        let mut zlib = std::vec![0x78, 0x01, 0x01, 65, 0x00, !65u8, 0xff];
        zlib.extend(core::iter::repeat(b'a').take(65));
        zlib.extend_from_slice(&[0, 0, 0, 0]);
        let mut out = [0u8; MAX_KEEPALIVE_LEN];
        assert_eq!(inflate(Encoding::Deflate, &zlib, &mut out), None);
    }
}
