//! The sans-IO, `no_std` core of inline gRPC keepalives.
//!
//! Nothing here does I/O, reads a clock or allocates: time and bytes come in as
//! arguments, decisions come out as return values. The async adapters in the
//! `inlinekeepalive` crate drive it; you can drive it yourself from any
//! transport loop.
//!
//! - [`wire`]: the byte-exact constants of Waypoint's inline keepalive protocol.
//! - [`classify`]: is one gRPC message payload a keepalive, a collision with the
//!   reserved field number, or an ordinary application message?
//! - [`FrameFilter`]: removes keepalive frames from a gRPC byte stream fed in
//!   arbitrary chunks, without copying application bytes.
//! - [`FrameTracker`]: follows an outbound gRPC byte stream so a sender knows
//!   when it stands at a frame boundary and may insert a keepalive.
//! - [`Keepalive`]: the state machine that decides when a keepalive must go out
//!   and when a silent peer should be reported.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

mod classify;
#[cfg(feature = "compression")]
mod compression;
mod config;
mod filter;
#[cfg(feature = "_fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod instant;
mod machine;
mod tracker;
pub mod wire;

pub use classify::{classify, Classification};
pub use config::{Config, ConfigError, Policy};
pub use filter::{Encoding, FilterStats, FrameError, FrameFilter, Output, Step};
pub use instant::Instant;
pub use machine::{Event, Keepalive, Stats};
pub use tracker::FrameTracker;

/// The README's examples, compiled and run as doctests of this crate.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeExamples;
