//! Differential: `inlinekeepalive_core::classify` against an oracle built on
//! `prost::encoding`, which must agree on every input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    inlinekeepalive_fuzz::classify_differential(data);
});
