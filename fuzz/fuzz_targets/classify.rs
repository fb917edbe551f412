//! Differential: `inlinekeepalive_core::classify` against an oracle built on
//! `prost::encoding`, which must agree on every input: see
//! `inlinekeepalive_testkit::classify`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    inlinekeepalive_testkit::classify_differential(data);
});
