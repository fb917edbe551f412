//! Drives the keepalive state machine from arbitrary bytes (decoded into a
//! configuration, inputs and clock steps) and checks the invariants
//! against a shadow model: see `inlinekeepalive_core::fuzzing::drive_machine`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| inlinekeepalive_core::fuzzing::drive_machine(data));
