//! The sans-IO, `no_std` core of inline gRPC keepalives.
//!
//! Nothing here does I/O, reads a clock or allocates (bar `wire::frame`,
//! behind the `alloc` feature): time and bytes come in as arguments,
//! decisions come out as return values. The async adapters in the
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
//! - [`Keepalive`]: the send schedule, which decides when a keepalive must go
//!   out.
//! - [`PeerWatchdog`]: dead-peer detection, which reports a peer that sent
//!   nothing at all for too long.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(test)]
extern crate std;

mod classify;
#[cfg(feature = "compression")]
mod compression;
mod config;
mod filter;
mod instant;
mod keepalive;
mod tracker;
mod watchdog;
pub mod wire;

pub use classify::{classify, Classification};
pub use config::{Config, ConfigError, Policy};
pub use filter::{Encoding, FilterStats, FrameError, FrameFilter, Framing, Output, Step};
pub use instant::Instant;
pub use keepalive::Keepalive;
pub use tracker::FrameTracker;
pub use watchdog::{PeerTimedOut, PeerWatchdog};
