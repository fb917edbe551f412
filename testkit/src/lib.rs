//! Test oracles of `inlinekeepalive-core`, shared by its tests, the
//! integration tests in `tests/` and the fuzz targets in `fuzz/`.
//!
//! Unpublished (`publish = false`) and free to use `std`: none of this is
//! part of the core's API, so the core's published crate carries no test
//! code and no test-only feature.
//!
//! - [`classify`]: an oracle of the classification rule built on prost's
//!   wire decoding, and the `classify` fuzz target's differential check.
//! - [`filter`]: a whole-buffer reference deframer and the `filter` fuzz
//!   target's check of the streaming `FrameFilter` against it.
//! - [`inflate`]: the reference deframer's inflation with `flate2` on
//!   zlib-rs, independent of the core's `miniz_oxide`, so that inflate bugs
//!   show up as disagreements.
//! - [`keepalive`] and [`watchdog`]: the one shadow model of each state
//!   machine, checked against the real one step by step.
//! - [`machine`]: scripts of operations run through both models, and the
//!   `machine` fuzz target's decoder of raw bytes into a script.
//! - `codec` (feature `codec`): the adapters' `GrpcCodec` decoder against a
//!   whole-buffer reference and the core's `FrameFilter`, for the `codec`
//!   fuzz target.
//!
//! Every check panics on a violation, with what went wrong: that is how a
//! fuzz target reports a bug, and proptest catches panics and shrinks the
//! case. The entry points of the fuzz targets take the raw fuzz input and
//! never panic on any input unless they have found a bug; the corpus replay
//! in `tests/tests/corpus_replay.rs` calls the same functions.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod classify;
#[cfg(feature = "codec")]
pub mod codec;
pub mod filter;
pub mod inflate;
pub mod keepalive;
pub mod machine;
pub mod watchdog;

pub use classify::classify_differential;
#[cfg(feature = "codec")]
pub use codec::codec_against_reference;
pub use filter::filter_against_reference;
pub use machine::drive_machine;
