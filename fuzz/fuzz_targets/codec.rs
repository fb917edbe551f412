//! The adapters' `GrpcCodec` decoder, fed a random stream in random chunks
//! under a random limit, against a whole-buffer reference (every message,
//! its flag, the error with its offset) and against the core's
//! `FrameFilter` (the keepalives a `KeepaliveStream` on top would remove).
//! Input layout: see `inlinekeepalive_testkit::codec::CodecInput::parse`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    inlinekeepalive_testkit::codec_against_reference(data);
});
