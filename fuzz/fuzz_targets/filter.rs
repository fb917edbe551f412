//! The streaming `FrameFilter`, fed a random stream in random chunks, against
//! a whole-buffer reference deframer that inflates with flate2. Input layout:
//! see `inlinekeepalive_testkit::filter::FilterInput::parse`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    inlinekeepalive_testkit::filter_against_reference(data);
});
