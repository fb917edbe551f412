//! Keep idle gRPC streams alive through L7 load balancers.
//!
//! AWS ALB, nginx, HAProxy and Envoy reset an HTTP/2 stream that carries no
//! DATA for their idle timeout, and HTTP/2 PINGs do not help: the proxy
//! answers them itself. This crate sends HashiCorp Waypoint's *inline
//! keepalive*, a tiny protobuf message inside the stream, when the stream is
//! idle, and removes the peer's keepalives before the application sees them.
//!
//! # Which wrapper
//!
//! | you have | to send keepalives | to remove the peer's |
//! |---|---|---|
//! | a tonic server or client | [`tonic::ServerKeepaliveLayer`], [`tonic::ClientKeepaliveLayer`] (feature `tonic`) | the same layers |
//! | a byte stream of gRPC frames | [`KeepaliveWriter`] | [`KeepaliveReader`] |
//! | a stream / sink of whole messages | [`KeepaliveSink`] | [`KeepaliveStream`] |
//! | a byte stream you want as messages | [`KeepaliveSink`] over a `Framed` of [`codec::GrpcCodec`] | [`KeepaliveStream`] over it |
//!
//! The byte wrappers implement futures-io's `AsyncRead`/`AsyncWrite` and,
//! with the `tokio` feature, tokio's as well, so a tokio socket goes in as it
//! is. [`codec::GrpcCodec`] frames gRPC messages for `tokio_util::codec`
//! (feature `tokio`) and `asynchronous_codec` (feature `asynchronous-codec`).
//!
//! An application that may send nothing for a long time hands its
//! [`KeepaliveWriter`] or [`KeepaliveSink`] to a [`Driver`], which sends what
//! arrives through its [`Sender`] and the keepalives in the gaps. Timers
//! come from the runtime of your choice through [`timer::Timer`]; nothing is
//! ever spawned.
//!
//! Every wrapper is a thin shell around one send half (frame tracking, the
//! keepalive schedule and one timer) or one receive half (the frame filter
//! and dead-peer detection): the rules below hold for all of them alike.
//!
//! # Dead-peer detection
//!
//! HTTP/2 PINGs cannot tell whether a peer behind a proxy is alive, but a
//! peer that sends inline keepalives proves it with bytes. Given a peer
//! timeout (`detect_dead_peer(timer, timeout)` on [`KeepaliveReader`] and
//! [`KeepaliveStream`], [`Config::with_peer_timeout`] for the tonic layers),
//! every receiving wrapper watches its peer:
//!
//! - **any received byte proves the peer alive**: keepalives, application
//!   messages, and every chunk of a large message still arriving (a
//!   [`KeepaliveStream`] sees whole messages, so it counts each wake-up of
//!   its inner stream too: over a codec, bytes arrived);
//! - when not a single byte arrived for the peer timeout, the wrapper
//!   reports [`PeerTimedOut`] once and **the stream ends**: a
//!   [`KeepaliveReader`] fails its reads with [`std::io::ErrorKind::TimedOut`]
//!   (sticky), a [`KeepaliveStream`] yields
//!   [`KeepaliveError::PeerTimedOut`] and then `None`, and the tonic layers
//!   end the body with `Status::unavailable`;
//! - watch only a peer that sends keepalives (it knows you remove them, and
//!   its interval is well below the timeout): the byte and message wrappers
//!   watch from the start, a tonic client once the server announced support,
//!   and a tonic server from the client's first keepalive.
//!
//! The sans-IO machines behind all this live in the `no_std` crate
//! [`inlinekeepalive_core`], re-exported as [`core`], for transports you
//! drive yourself.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use inlinekeepalive_core as core;
pub use inlinekeepalive_core::{wire, Config, ConfigError, FrameError, PeerTimedOut, Policy};

#[cfg(any(feature = "tokio", feature = "asynchronous-codec"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "tokio", feature = "asynchronous-codec")))
)]
pub mod codec;
pub mod timer;
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub mod tonic;

mod clock;
mod driver;
mod error;
mod reader;
mod receive;
mod send;
mod sender;
mod sink;
mod sleep_slot;
mod stream;
mod wake_probe;
mod writer;

pub use driver::Driver;
pub use error::KeepaliveError;
pub use reader::KeepaliveReader;
pub use receive::ReceiveStats;
pub use send::SendStats;
pub use sender::{DriverStopped, Sender};
pub use sink::KeepaliveSink;
pub use stream::KeepaliveStream;
pub use writer::KeepaliveWriter;

/// The README's examples, compiled (and the runnable ones run) as doctests
/// with the paths and dependencies a user of this crate has.
#[cfg(all(
    doctest,
    feature = "tonic",
    feature = "smol",
    feature = "async-std",
    feature = "futures-timer",
    feature = "asynchronous-codec"
))]
#[doc = include_str!("../../README.md")]
struct ReadmeExamples;
