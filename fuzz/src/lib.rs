//! Fuzz-only support code: the prost-based oracle of the `classify` target.
//!
//! The frame filter's reference deframer needs no third-party crate, so it
//! lives in the core behind the `_fuzzing` feature
//! (`inlinekeepalive_core::fuzzing`); the classify oracle needs `prost`, which
//! the core must not depend on, so it lives here.
#![forbid(unsafe_code)]

mod classify_oracle;

pub use classify_oracle::{classify_differential, oracle_classify};
