//! Keep idle gRPC streams alive through L7 load balancers.
//!
//! AWS ALB, nginx, HAProxy and Envoy reset an HTTP/2 stream that carries no
//! DATA for their idle timeout, and HTTP/2 PINGs do not help: the proxy
//! answers them itself. This crate sends HashiCorp Waypoint's *inline
//! keepalive*, a tiny protobuf message inside the stream, when the stream is
//! idle, and removes the peer's keepalives before the application sees them.
//!
//! The protocol logic lives in the sans-IO [`inlinekeepalive_core`] crate,
//! re-exported here; this crate drives it from async code, under any runtime.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use inlinekeepalive_core as core;
pub use inlinekeepalive_core::{classify, wire, Classification, Encoding, FrameError, FrameFilter};

pub mod clock;
pub mod timer;
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub mod tonic;

mod driver;
mod reader;
mod sender;
mod sleep_slot;
mod writer;
pub use driver::{Driver, FrameSender};
pub use reader::{KeepaliveReader, PeerTimedOut};
pub use sender::{DriverStopped, Sender};
pub use writer::{KeepaliveDue, KeepaliveWriter, WriterStats};

mod error;
mod sink;
mod stream;
pub use error::KeepaliveError;
pub use sink::{KeepaliveSent, KeepaliveSink, MessageSender, SinkDriver, SinkStats};
pub use stream::{KeepaliveStream, StreamStats};
