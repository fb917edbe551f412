//! Probing a Waypoint-style server for inline keepalive support.
//!
//! Waypoint servers list `FEATURE_INLINE_KEEPALIVES` in the answer to
//! `GetVersionInfo`. A client cannot learn that from a client stream's
//! response headers (tonic sends them only when the stream ends), so it asks
//! once per channel, before the first request, and the layer caches the
//! answer. This example runs a minimal stand-in for that service next to a
//! small upload service, twice: once advertising the feature, once not.
//!
//! The stand-in is generated from `tests/proto/waypoint_stub.proto` (the
//! relevant part of Waypoint's `server.proto`) with its messages mapped to
//! the `inlinekeepalive-proto` types (see `tests/build.rs`), so the server
//! answers with `GetVersionInfoResponse::with_inline_keepalives` and the
//! probe reads `supports_inline_keepalives()`.
//!
//! ```text
//! cargo run -p inlinekeepalive-tests --example waypoint_probe
//! ```

use std::time::Duration;

use inlinekeepalive::tonic::{ClientKeepaliveLayer, Config, KeepaliveStats, ServerKeepaliveLayer};
use inlinekeepalive_proto::{GetVersionInfoResponse, VersionInfo};
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status, Streaming};
use tower::ServiceBuilder;

/// `hashicorp.waypoint.Waypoint`, with the `inlinekeepalive-proto` messages.
mod waypoint {
    include!(concat!(
        env!("OUT_DIR"),
        "/proto_crate/hashicorp.waypoint.rs"
    ));
}
mod ikatest {
    tonic::include_proto!("ikatest");
}

use ikatest::echo_client::EchoClient;
use ikatest::echo_server::{Echo, EchoServer};
use ikatest::{Item, Plan, Summary};
use waypoint::waypoint_client::WaypointClient;
use waypoint::waypoint_server::{Waypoint, WaypointServer};

/// The stand-in for Waypoint's version service.
struct StandIn {
    inline_keepalives: bool,
}

#[tonic::async_trait]
impl Waypoint for StandIn {
    async fn get_version_info(
        &self,
        _: Request<()>,
    ) -> Result<Response<GetVersionInfoResponse>, Status> {
        let info = VersionInfo {
            version: "0.0.0-standin".into(),
            ..VersionInfo::default()
        };
        Ok(Response::new(if self.inline_keepalives {
            // What a Rust server that removes keepalives answers.
            GetVersionInfoResponse::with_inline_keepalives(info)
        } else {
            GetVersionInfoResponse {
                info: Some(info),
                server_features: None,
            }
        }))
    }
}

/// The probe: does the server list `FEATURE_INLINE_KEEPALIVES`? Any error
/// means no, so a server without the method never gets a keepalive.
async fn supports_inline_keepalives(channel: Channel) -> bool {
    WaypointClient::new(channel)
        .get_version_info(())
        .await
        .is_ok_and(|response| response.into_inner().supports_inline_keepalives())
}

/// A client-streaming service that counts what it receives.
struct Uploads;

type ItemStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<Item, Status>> + Send>>;

#[tonic::async_trait]
impl Echo for Uploads {
    type WatchStream = ItemStream;
    type ChatStream = ItemStream;

    async fn upload(&self, request: Request<Streaming<Item>>) -> Result<Response<Summary>, Status> {
        let stats = request.extensions().get::<KeepaliveStats>().cloned();
        let mut stream = request.into_inner();
        let mut seqs = Vec::new();
        while let Some(item) = stream.message().await? {
            seqs.push(item.seq);
        }
        if let Some(stats) = stats {
            println!(
                "  server: {} messages, {} keepalives removed before decoding",
                seqs.len(),
                stats.keepalives_removed()
            );
        }
        Ok(Response::new(Summary {
            count: seqs.len() as u64,
            last_seq: seqs.last().copied().unwrap_or(0),
            seqs,
        }))
    }

    async fn watch(&self, _: Request<Plan>) -> Result<Response<ItemStream>, Status> {
        Err(Status::unimplemented("not in this example"))
    }

    async fn chat(&self, _: Request<Streaming<Item>>) -> Result<Response<ItemStream>, Status> {
        Err(Status::unimplemented("not in this example"))
    }
}

async fn run(inline_keepalives: bool) -> Result<(), Box<dyn std::error::Error>> {
    let interval = Config::new(Duration::from_millis(100))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(
        Server::builder()
            .layer(ServerKeepaliveLayer::new(interval))
            .add_service(WaypointServer::new(StandIn { inline_keepalives }))
            .add_service(EchoServer::new(Uploads))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    // The probe gets the plain channel: it must not go through the layer.
    let probe_channel = channel.clone();
    let layer = ClientKeepaliveLayer::new(interval)
        .with_probe(move || supports_inline_keepalives(probe_channel.clone()));
    let mut client = EchoClient::new(ServiceBuilder::new().layer(layer.clone()).service(channel));

    // Three messages, 350 ms apart: idle long enough for keepalives.
    let items = tokio_stream::iter(0..3u64)
        .throttle(Duration::from_millis(350))
        .map(|seq| Item {
            seq,
            ..Item::default()
        });
    let response = client.upload(items).await?;
    let stats = response.extensions().get::<KeepaliveStats>().cloned();
    println!(
        "  client: probe said {:?}, server got {:?}, {} keepalives sent",
        layer.server_support(),
        response.into_inner().seqs,
        stats.map_or(0, |s| s.keepalives_sent()),
    );
    server.abort();
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("server advertises FEATURE_INLINE_KEEPALIVES:");
    run(true).await?;
    println!("server does not advertise it:");
    run(false).await?;
    Ok(())
}
