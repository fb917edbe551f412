//! The oracle of the `classify` differential fuzz target and of the corpus
//! replay: the classification rule of `tests/vectors/README.md`, built on
//! `prost::encoding`'s wire decoding (`decode_key`, `decode_varint`,
//! `skip_field`) instead of the core's hand-written walker.
//!
//! Well-formedness is whatever prost's decoder accepts when it skips unknown
//! fields with a fresh `DecodeContext`: varints of at most 10 bytes whose
//! value fits in 64 bits, tags below 2^32 with field number >= 1 and wire type
//! 0 to 5, lengths within the payload, groups closed by the END_GROUP of the
//! same field number, END_GROUP nowhere else, and prost's recursion limit of
//! 100: no field may stand inside the 100th nested group. The core's
//! `MAX_GROUP_DEPTH` follows the same limit, so there is no deliberate
//! difference between the two.

use inlinekeepalive_core::wire::{FIELD_NUMBER, MAX_KEEPALIVE_LEN, SIGNATURE};
use inlinekeepalive_core::{classify, Classification};
use prost::bytes::Buf;
use prost::encoding::{decode_key, decode_varint, skip_field, DecodeContext, WireType};

/// Classifies `payload` by the rule, reading it with prost.
pub fn oracle_classify(payload: &[u8]) -> Classification {
    let mut buf = payload;
    let mut reserved = false;
    let mut only_signature_fields = true;
    let mut last_is_signature = false;
    while buf.has_remaining() {
        let Ok((number, wire_type)) = decode_key(&mut buf) else {
            return Classification::Application;
        };
        if wire_type == WireType::LengthDelimited {
            let Ok(len) = decode_varint(&mut buf) else {
                return Classification::Application;
            };
            let Some(value) = usize::try_from(len).ok().and_then(|len| buf.get(..len)) else {
                return Classification::Application;
            };
            buf.advance(value.len());
            if number == FIELD_NUMBER {
                reserved = true;
                last_is_signature = value == SIGNATURE;
            } else {
                only_signature_fields = false;
            }
        } else {
            if skip_field(wire_type, number, &mut buf, DecodeContext::default()).is_err() {
                return Classification::Application;
            }
            reserved |= number == FIELD_NUMBER;
            only_signature_fields = false;
        }
    }
    if !reserved {
        Classification::Application
    } else if only_signature_fields && last_is_signature && payload.len() <= MAX_KEEPALIVE_LEN {
        Classification::Keepalive
    } else {
        Classification::Collision
    }
}

/// The fuzz target `classify`: the core and the oracle must agree.
///
/// # Panics
/// When they disagree, with the payload in hex.
pub fn classify_differential(data: &[u8]) {
    let core = classify(data);
    let oracle = oracle_classify(data);
    assert_eq!(
        core,
        oracle,
        "core and prost oracle disagree on {}",
        data.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
}
