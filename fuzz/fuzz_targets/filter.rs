//! The streaming `FrameFilter`, fed a random stream in random chunks, against
//! a whole-buffer reference deframer. Input layout: see
//! `inlinekeepalive_core::fuzzing::FilterInput::parse`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    inlinekeepalive_core::fuzzing::filter_against_reference(data);
});
