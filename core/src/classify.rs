//! Is one gRPC message payload a keepalive?
//!
//! The payload is walked field by field, without copying and without looking
//! inside length-delimited values (they may be nested messages, strings or
//! packed fields; the rule treats them as opaque).

use crate::wire::{FIELD_NUMBER, MAX_KEEPALIVE_LEN, SIGNATURE};

/// What one gRPC message payload is, for the receiver of a stream.
///
/// Only [`Keepalive`](Classification::Keepalive) may be removed from a stream.
/// The other two classes are always delivered to the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Classification {
    /// Waypoint's inline keepalive: at most [`MAX_KEEPALIVE_LEN`] bytes of
    /// well-formed protobuf whose every top-level field is field 100000000 with
    /// wire type 2, the last of them holding exactly `inline_keepalive`.
    Keepalive,
    /// A well-formed message that is not a keepalive but uses field number
    /// 100000000 at the top level. It is delivered like any other message, but
    /// it deserves a report: a real schema is using the reserved number.
    Collision,
    /// Everything else, including the empty payload and bytes that are not
    /// well-formed protobuf.
    Application,
}

/// Deepest group nesting that the classifier follows, as prost's decoder's
/// default recursion limit. Deeper payloads, and any field inside the
/// innermost group allowed (prost counts fields, not groups), are treated as
/// malformed, so they are [`Classification::Application`] and always
/// delivered.
pub(crate) const MAX_GROUP_DEPTH: usize = 100;

/// The third byte of every varint encoding of a tag with field number
/// 100000000, whatever its wire type: such a tag is at least
/// `100000000 << 3`, above 2^21, so its varint has more than three 7-bit
/// groups and the third carries the continuation bit; its bits 14..21 are
/// those of `FIELD_NUMBER << 3`, which the wire type (bits 0..3) never
/// reaches. Overlong encodings keep the groups in place.
pub(crate) const RESERVED_TAG_BYTE: u8 = 0x80 | ((FIELD_NUMBER << 3 >> 14) & 0x7f) as u8;

/// Whether `payload` contains [`RESERVED_TAG_BYTE`], eight bytes at a time.
///
/// `memchr` (what `<[u8]>::contains` calls) first walks to an aligned
/// address and keeps the tail apart, which costs more than it saves on the
/// at most 64 bytes classified here; this reads unaligned words and tests
/// all eight bytes at once: `x ^ pattern` has a zero byte exactly where `x`
/// has the byte sought, and `(v - 0x01..) & !v & 0x80..` is non-zero exactly
/// when `v` has a zero byte.
#[inline]
fn contains_reserved_tag_byte(payload: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const PATTERN: u64 = ONES * RESERVED_TAG_BYTE as u64;
    let mut words = payload.chunks_exact(8);
    // No branch per word: the payloads classified are at most 64 bytes, and
    // one test at the end lets the words be checked side by side.
    let mut found = 0;
    for chunk in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_le_bytes(word) ^ PATTERN;
        found |= v.wrapping_sub(ONES) & !v & HIGHS;
    }
    if found != 0 {
        return true;
    }
    // At most seven bytes: `contains` checks them one by one.
    words.remainder().contains(&RESERVED_TAG_BYTE)
}

/// Classifies one gRPC message payload (the bytes after the 5-byte frame
/// header, uncompressed).
///
/// Total: every input gets an answer. It never panics, never allocates and
/// reads each byte at most once.
///
/// ```
/// use inlinekeepalive_core::{classify, wire, Classification};
///
/// assert_eq!(classify(&wire::KEEPALIVE_MESSAGE), Classification::Keepalive);
/// // Event { seq: 1, text: "x" }
/// assert_eq!(classify(&[0x08, 0x01, 0x12, 0x01, b'x']), Classification::Application);
/// // Field 100000000 as a varint: well-formed, but not a keepalive.
/// assert_eq!(classify(&[0x80, 0x90, 0xbc, 0xfd, 0x02, 0x01]), Classification::Collision);
/// // A truncated keepalive is not well-formed protobuf at all.
/// assert_eq!(classify(&wire::KEEPALIVE_MESSAGE[..10]), Classification::Application);
/// ```
#[must_use]
pub fn classify(payload: &[u8]) -> Classification {
    // A payload without the byte every tag of field 100000000 contains has
    // no such field: an application message, decided by a scan a word at a
    // time instead of a protobuf walk.
    if !contains_reserved_tag_byte(payload) {
        return Classification::Application;
    }
    let mut fields = Fields { rest: payload };
    let mut has_reserved_field = false;
    let mut only_signature_fields = true;
    let mut last_value_is_signature = false;
    let mut any_field = false;

    while !fields.rest.is_empty() {
        let Some(field) = fields.next_top_level() else {
            return Classification::Application;
        };
        any_field = true;
        if field.number == FIELD_NUMBER {
            has_reserved_field = true;
            match field.value {
                Value::Bytes(value) => last_value_is_signature = value == SIGNATURE,
                Value::Other => only_signature_fields = false,
            }
        } else {
            only_signature_fields = false;
        }
    }

    if !has_reserved_field {
        Classification::Application
    } else if any_field
        && only_signature_fields
        && last_value_is_signature
        && payload.len() <= MAX_KEEPALIVE_LEN
    {
        Classification::Keepalive
    } else {
        Classification::Collision
    }
}

struct Field<'a> {
    number: u32,
    value: Value<'a>,
}

enum Value<'a> {
    /// A length-delimited value (wire type 2).
    Bytes(&'a [u8]),
    /// Any other wire type; its value is not needed.
    Other,
}

/// A cursor over protobuf fields. Every method returns `None` on malformed
/// input, which the caller turns into [`Classification::Application`].
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    /// Reads one top-level field, skipping a whole group if it is one.
    fn next_top_level(&mut self) -> Option<Field<'a>> {
        let (number, wire_type) = self.tag()?;
        let value = match wire_type {
            2 => Value::Bytes(self.length_delimited()?),
            3 => {
                self.skip_group(number)?;
                Value::Other
            }
            other => {
                self.skip_scalar(other)?;
                Value::Other
            }
        };
        Some(Field { number, value })
    }

    /// Skips the fields of a group up to and including its END_GROUP tag.
    ///
    /// Iterative with a fixed stack of open group numbers, so nesting costs
    /// no call stack on small targets.
    fn skip_group(&mut self, outer: u32) -> Option<()> {
        let mut open = [0u32; MAX_GROUP_DEPTH];
        open[0] = outer;
        let mut depth = 1;
        while depth > 0 {
            let (number, wire_type) = self.tag()?;
            // prost's recursion limit counts fields, not groups: the deepest
            // group it accepts may only be closed, it may hold no field.
            if depth == MAX_GROUP_DEPTH && wire_type != 4 {
                return None;
            }
            match wire_type {
                2 => {
                    self.length_delimited()?;
                }
                3 => {
                    *open.get_mut(depth)? = number;
                    depth += 1;
                }
                4 => {
                    if open[depth - 1] != number {
                        return None;
                    }
                    depth -= 1;
                }
                other => self.skip_scalar(other)?,
            }
        }
        Some(())
    }

    /// Reads a tag and splits it into field number and wire type.
    fn tag(&mut self) -> Option<(u32, u8)> {
        let tag = u32::try_from(self.varint()?).ok()?;
        let number = tag >> 3;
        let wire_type = (tag & 7) as u8;
        if number == 0 || wire_type > 5 {
            return None;
        }
        Some((number, wire_type))
    }

    /// Skips a value of wire type 0, 1 or 5. END_GROUP (4) outside a group is
    /// malformed, and so are 6 and 7 (rejected by `tag`).
    fn skip_scalar(&mut self, wire_type: u8) -> Option<()> {
        match wire_type {
            0 => self.varint().map(drop),
            1 => self.take(8).map(drop),
            5 => self.take(4).map(drop),
            _ => None,
        }
    }

    fn length_delimited(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        self.take(len)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.rest.len() {
            return None;
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Some(taken)
    }

    /// A varint of 1 to 10 bytes whose value fits in 64 bits. Over-long
    /// (non-minimal) encodings are accepted, as prost accepts them.
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for (i, &byte) in self.rest.iter().take(10).enumerate() {
            if i == 9 && byte > 1 {
                return None;
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.rest = &self.rest[i + 1..];
                return Some(value);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::KEEPALIVE_MESSAGE;

    #[test]
    fn canonical_keepalive() {
        assert_eq!(classify(&KEEPALIVE_MESSAGE), Classification::Keepalive);
    }

    #[test]
    fn every_prefix_of_the_keepalive_is_application() {
        for n in 0..KEEPALIVE_MESSAGE.len() {
            assert_eq!(
                classify(&KEEPALIVE_MESSAGE[..n]),
                Classification::Application,
                "prefix of {n} bytes"
            );
        }
    }

    #[test]
    fn nested_groups_balance() {
        // field 1 START_GROUP, field 2 START_GROUP, field 2 END_GROUP, field 1 END_GROUP,
        // then the keepalive: a collision (another field beside it).
        let mut msg = std::vec![0x0b, 0x13, 0x14, 0x0c];
        msg.extend_from_slice(&KEEPALIVE_MESSAGE);
        assert_eq!(classify(&msg), Classification::Collision);
        // Mismatched END_GROUP numbers are malformed.
        msg[2] = 0x1c; // field 3 END_GROUP
        assert_eq!(classify(&msg), Classification::Application);
    }

    #[test]
    fn group_nesting_beyond_the_limit_is_malformed() {
        let mut msg = std::vec::Vec::new();
        for depth in [MAX_GROUP_DEPTH, MAX_GROUP_DEPTH + 1] {
            msg.clear();
            msg.extend(core::iter::repeat(0x0b).take(depth));
            msg.extend(core::iter::repeat(0x0c).take(depth));
            msg.extend_from_slice(&KEEPALIVE_MESSAGE);
            let expected = if depth <= MAX_GROUP_DEPTH {
                Classification::Collision
            } else {
                Classification::Application
            };
            assert_eq!(classify(&msg), expected, "depth {depth}");
        }
    }

    #[test]
    fn innermost_group_at_the_limit_holds_no_field() {
        // Found by the `classify` differential fuzz target: prost refuses any
        // field inside the 100th nested group (its recursion limit applies to
        // every skipped field), so the core must too.
        let mut msg = std::vec::Vec::new();
        for (depth, expected) in [
            (MAX_GROUP_DEPTH - 1, Classification::Collision),
            (MAX_GROUP_DEPTH, Classification::Application),
        ] {
            msg.clear();
            msg.extend(core::iter::repeat(0x0b).take(depth));
            msg.extend_from_slice(&[0x08, 0x00]); // field 1, varint 0
            msg.extend(core::iter::repeat(0x0c).take(depth));
            msg.extend_from_slice(&KEEPALIVE_MESSAGE);
            assert_eq!(classify(&msg), expected, "varint inside {depth} groups");
        }
    }

    #[test]
    fn tenth_varint_byte_must_fit_in_64_bits() {
        // Tag 800000002 as 10 bytes, last byte 0x00: allowed.
        let mut ok = std::vec![0x82, 0x90, 0xbc, 0xfd, 0x82, 0x80, 0x80, 0x80, 0x80, 0x00, 0x10];
        ok.extend_from_slice(SIGNATURE);
        assert_eq!(classify(&ok), Classification::Keepalive);
        ok[9] = 0x02;
        assert_eq!(classify(&ok), Classification::Application);
    }

    #[test]
    fn every_tag_of_the_reserved_field_contains_the_prefilter_byte() {
        for wire_type in 0..8u64 {
            let tag = (u64::from(FIELD_NUMBER) << 3) | wire_type;
            let mut encoded = std::vec::Vec::new();
            let mut v = tag;
            while v >= 0x80 {
                encoded.push((v as u8 & 0x7f) | 0x80);
                v >>= 7;
            }
            encoded.push(v as u8);
            assert_eq!(encoded[2], RESERVED_TAG_BYTE, "wire type {wire_type}");
            // Overlong: the same groups, then zero groups.
            let last = encoded.len() - 1;
            encoded[last] |= 0x80;
            encoded.extend_from_slice(&[0x80, 0x00]);
            assert_eq!(encoded[2], RESERVED_TAG_BYTE);
        }
        assert_eq!(RESERVED_TAG_BYTE, 0xbc);
        assert!(KEEPALIVE_MESSAGE.contains(&RESERVED_TAG_BYTE));
    }

    #[test]
    fn the_word_scan_finds_the_byte_at_every_position_and_nothing_else() {
        for len in 0..40 {
            for at in 0..len {
                let mut payload = std::vec![0xbbu8; len];
                payload[at] = RESERVED_TAG_BYTE;
                assert!(contains_reserved_tag_byte(&payload), "len {len} at {at}");
            }
            // Every other byte value, in every lane.
            for other in (0..=255u8).filter(|&b| b != RESERVED_TAG_BYTE) {
                let payload = std::vec![other; len];
                assert!(
                    !contains_reserved_tag_byte(&payload),
                    "len {len} byte {other:#x}"
                );
            }
        }
    }
}
