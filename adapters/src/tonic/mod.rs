//! Tower layers that give tonic servers and clients inline keepalives.
//!
//! Both layers work at the HTTP body level (`http-body` 1.x), below tonic's
//! codec, so they serve every method of every service without code
//! generation changes and without knowing any message type: keepalives are
//! recognised and removed as gRPC *frames*, before prost decodes (and would
//! silently drop) them.
//!
//! # Server
//!
//! ```no_run
//! # use std::time::Duration;
//! # async fn run(routes: tonic::service::Routes) -> Result<(), Box<dyn std::error::Error>> {
//! use inlinekeepalive::tonic::{Config, ServerKeepaliveLayer};
//!
//! tonic::transport::Server::builder()
//!     .layer(ServerKeepaliveLayer::new(Config::new(Duration::from_secs(20))?))
//!     .add_routes(routes) // or .add_service(MyServer::new(handler))
//!     .serve("127.0.0.1:50051".parse()?)
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! # Client
//!
//! ```no_run
//! # use std::time::Duration;
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use inlinekeepalive::tonic::{ClientKeepaliveLayer, Config};
//!
//! let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:50051")
//!     .connect()
//!     .await?;
//! let channel = tower::ServiceBuilder::new()
//!     .layer(ClientKeepaliveLayer::new(Config::new(Duration::from_secs(20))?))
//!     .service(channel);
//! // let mut client = MyServiceClient::new(channel);
//! # Ok(()) }
//! ```
//!
//! # What each side does
//!
//! | | server ([`ServerKeepaliveLayer`]) | client ([`ClientKeepaliveLayer`]) |
//! |---|---|---|
//! | headers | adds `wp-inline-keepalives: true` to responses | adds it to requests |
//! | inbound body | keepalives always removed ([`KeepaliveBody`]) | keepalives always removed |
//! | outbound body | keepalives when idle, if the request announced support | keepalives when idle, once the server's support is known (assumed, probed, or from the response headers) |
//! | statistics | [`KeepaliveStats`] in the request extensions | [`KeepaliveStats`] in the response extensions |
//!
//! Only gRPC bodies are touched (`content-type: application/grpc` or
//! `application/grpc+<codec>`); gRPC-Web, REST and anything else pass
//! through as they are. Keepalives go out only between whole gRPC messages
//! and never after a body's end. Each body owns its keepalive state by value
//! and one tokio timer ([`TokioTimer`](crate::timer::TokioTimer)), reset
//! rather than recreated; no task is spawned per stream and no mutex is
//! taken. A malformed inbound frame reaches the handler or the caller as a
//! `Status::internal` with a clear message, never a panic; a silent peer
//! ([dead-peer detection](crate#dead-peer-detection)) as
//! `Status::unavailable`.
//!
//! # Tracing
//!
//! Events use the target `inlinekeepalive`:
//!
//! - `WARN` for a collision (an inbound message using field number
//!   100000000 without being a keepalive), a silent peer, a malformed frame,
//!   and a gRPC-Web request reaching the server layer (the layers are in the
//!   wrong order: see the README's section on browsers);
//! - `DEBUG` when a client learns the server's support or its probe
//!   answers, and when an outbound body is not gRPC-framed (no keepalives
//!   on that stream);
//! - `TRACE` for each keepalive sent.

mod body;
mod client;
mod common;
mod future;
mod server;
mod stats;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

pub use self::body::KeepaliveBody;
pub use self::client::{ClientKeepalive, ClientKeepaliveLayer};
pub use self::future::ResponseFuture;
pub use self::server::{ServerKeepalive, ServerKeepaliveLayer};
pub use self::stats::KeepaliveStats;
// The crate's `Config`, here too so that
// `inlinekeepalive::tonic::{Config, ServerKeepaliveLayer}` is one `use`.
pub use crate::Config;

/// Jitter seeds for the streams of one layer: distinct per stream, and
/// different between layers and processes.
#[derive(Clone, Debug)]
struct Seeds(Arc<AtomicU64>);

impl Seeds {
    fn new() -> Self {
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let counter = Arc::new(AtomicU64::new(0));
        let address = Arc::as_ptr(&counter) as u64;
        counter.store(time ^ address.rotate_left(32), Relaxed);
        Self(counter)
    }

    fn next(&self) -> u64 {
        // The core mixes the seed, so consecutive values are fine.
        self.0.fetch_add(1, Relaxed)
    }
}

impl Default for Seeds {
    fn default() -> Self {
        Self::new()
    }
}
