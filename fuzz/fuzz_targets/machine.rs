//! Drives a stream's send schedule (`Keepalive`) and peer watchdog
//! (`PeerWatchdog`) from arbitrary bytes, decoded into a configuration,
//! inputs and clock steps, and checks them step by step against their
//! models: see `inlinekeepalive_testkit::machine::decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| inlinekeepalive_testkit::drive_machine(data));
