//! A Rust server that Waypoint's Go clients send keepalives to.
//!
//! Waypoint's client sends inline keepalives on a client stream only when
//! `/hashicorp.waypoint.Waypoint/GetVersionInfo` lists
//! `FEATURE_INLINE_KEEPALIVES`. The server here serves that method, generated
//! from `tests/proto/waypoint_stub.proto` with the `inlinekeepalive-proto`
//! messages (see `tests/build.rs`), and answers with the one call
//! `GetVersionInfoResponse::with_inline_keepalives`; the client layer's probe
//! asks that method. A second copy of the stub, generated without the proto
//! crate, is what a client that knows only Waypoint's schema (Go) decodes.
//!
//! In a real deployment `GetVersionInfo` and the application's services are
//! one server; here `tonic_support`'s `Echo` server (which records the raw
//! frames) runs next to a `GetVersionInfo` server, both behind the layer.

mod tonic_support;

/// The stub with the `inlinekeepalive-proto` messages: what a Rust server
/// (and a Rust client) generates.
mod with_proto_crate {
    include!(concat!(
        env!("OUT_DIR"),
        "/proto_crate/hashicorp.waypoint.rs"
    ));
}

/// The stub as Waypoint's schema alone says: a client's view.
mod waypoint_schema {
    tonic::include_proto!("hashicorp.waypoint");
}

use std::net::SocketAddr;

use inlinekeepalive::tonic::{ClientKeepaliveLayer, Config, ServerKeepaliveLayer};
use inlinekeepalive_proto::version_info::ProtocolVersion;
use inlinekeepalive_proto::{GetVersionInfoResponse, Message, VersionInfo};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::server::NamedService;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};
use tonic_support::pb::echo_client::EchoClient;
use tonic_support::*;
use with_proto_crate::waypoint_client::WaypointClient;
use with_proto_crate::waypoint_server::{Waypoint, WaypointServer};

fn config() -> Config {
    Config::new(MS(50)).unwrap()
}

fn version_info() -> VersionInfo {
    VersionInfo {
        api: Some(ProtocolVersion {
            current: 3,
            minimum: 1,
        }),
        entrypoint: None,
        version: "0.11.4-rust".into(),
    }
}

/// `GetVersionInfo`, listing `FEATURE_INLINE_KEEPALIVES` or not.
struct VersionService {
    advertise: bool,
}

#[tonic::async_trait]
impl Waypoint for VersionService {
    async fn get_version_info(
        &self,
        _: Request<()>,
    ) -> Result<Response<GetVersionInfoResponse>, Status> {
        let response = if self.advertise {
            GetVersionInfoResponse::with_inline_keepalives(version_info())
        } else {
            GetVersionInfoResponse {
                info: Some(version_info()),
                server_features: None,
            }
        };
        Ok(Response::new(response))
    }
}

/// Starts `GetVersionInfo` behind the server layer on a free loopback port.
/// The task ends with the test's runtime.
async fn start_version_server(advertise: bool) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::builder()
        .layer(ServerKeepaliveLayer::new(config()))
        .add_service(WaypointServer::new(VersionService { advertise }))
        .serve_with_incoming(TcpListenerStream::new(listener));
    tokio::spawn(async move { server.await.unwrap() });
    addr
}

/// The probe: does the server list `FEATURE_INLINE_KEEPALIVES`? Any error
/// (a server without the method answers `Unimplemented`) means no.
async fn supports_inline_keepalives(channel: Channel) -> bool {
    WaypointClient::new(channel)
        .get_version_info(())
        .await
        .is_ok_and(|response| response.into_inner().supports_inline_keepalives())
}

/// A client layer that probes the server at `version_addr`.
async fn probing_layer(version_addr: SocketAddr) -> ClientKeepaliveLayer {
    // The probe's channel is a plain one: it must not go through the layer.
    let probe_channel = connect(version_addr).await;
    ClientKeepaliveLayer::new(config())
        .with_probe(move || supports_inline_keepalives(probe_channel.clone()))
}

/// Uploads four items 200 ms apart (idle for four keepalive intervals each)
/// through `layer`; returns the keepalives the client sent and the server
/// removed, as the layers count them and as the raw request frames show.
async fn upload_through(layer: &ClientKeepaliveLayer) -> (u64, u64, usize) {
    let mut server = start_server(Some(ServerKeepaliveLayer::new(config()))).await;
    let mut client = EchoClient::new(connect_layered(server.addr, layer.clone()).await);
    assert_eq!(
        layer.server_support(),
        None,
        "no probe before the first call"
    );

    let items = (0..4).map(|seq| item(seq, 20)).collect();
    let response = client.upload(paced(items, MS(200))).await.unwrap();
    let sent = stats_of(&response).keepalives_sent();
    assert_eq!(response.into_inner().seqs, [0, 1, 2, 3]);
    let seen = server.next_seen().await;
    assert_in_order(&seen.items, 4, 20);
    let removed = seen.stats.expect("server layer stats").keepalives_removed();
    let frames = server.wire.request_frames();
    assert_eq!(frames.others, 4, "{frames:?}");
    server.shutdown().await;
    (sent, removed, frames.keepalives)
}

#[tokio::test]
async fn a_server_answering_with_inline_keepalives_gets_them() {
    let layer = probing_layer(start_version_server(true).await).await;
    let (sent, removed, on_the_wire) = upload_through(&layer).await;
    assert_eq!(layer.server_support(), Some(true));
    assert!(sent >= 4, "client sent keepalives: {sent}");
    assert_eq!(removed, sent, "the server layer removed them all");
    assert_eq!(on_the_wire as u64, sent);
}

#[tokio::test]
async fn a_server_without_the_feature_gets_none() {
    let layer = probing_layer(start_version_server(false).await).await;
    let (sent, removed, on_the_wire) = upload_through(&layer).await;
    assert_eq!(layer.server_support(), Some(false));
    assert_eq!((sent, removed, on_the_wire), (0, 0, 0));
}

#[tokio::test]
async fn a_server_without_get_version_info_is_probed_as_no() {
    // The Echo server has no Waypoint service: Unimplemented.
    let server = start_server(None).await;
    assert!(!supports_inline_keepalives(connect(server.addr).await).await);
    server.shutdown().await;
}

/// What a client that knows only Waypoint's schema (as Go's does) receives
/// from the server answering with the proto crate's call, over gRPC.
#[tokio::test]
async fn a_waypoint_schema_client_sees_the_feature() {
    use waypoint_schema::server_features::Feature;
    use waypoint_schema::waypoint_client::WaypointClient;

    assert_eq!(
        <WaypointServer<VersionService> as NamedService>::NAME,
        "hashicorp.waypoint.Waypoint",
        "the service Waypoint's Go client calls"
    );
    for advertise in [true, false] {
        let channel = connect(start_version_server(advertise).await).await;
        let answer = WaypointClient::new(channel)
            .get_version_info(())
            .await
            .unwrap()
            .into_inner();
        let info = answer.info.expect("info");
        assert_eq!(info.version, "0.11.4-rust");
        let api = info.api.expect("api");
        assert_eq!((api.current, api.minimum), (3, 1));
        let features = answer.server_features.unwrap_or_default().features;
        let expected: &[i32] = if advertise {
            &[Feature::InlineKeepalives as i32]
        } else {
            &[]
        };
        assert_eq!(features, expected);
    }
}

/// The same, without a network: the proto crate's bytes decode as Waypoint's
/// schema says, and the other way round.
#[test]
fn the_proto_crate_encodes_as_waypoints_schema() {
    use waypoint_schema::server_features::Feature;

    let ours = GetVersionInfoResponse::with_inline_keepalives(version_info());
    let theirs =
        waypoint_schema::GetVersionInfoResponse::decode(&ours.encode_to_vec()[..]).unwrap();
    let expected = waypoint_schema::GetVersionInfoResponse {
        info: Some(waypoint_schema::VersionInfo {
            api: Some(waypoint_schema::version_info::ProtocolVersion {
                current: 3,
                minimum: 1,
            }),
            entrypoint: None,
            version: "0.11.4-rust".into(),
        }),
        server_features: Some(waypoint_schema::ServerFeatures {
            features: vec![Feature::InlineKeepalives as i32],
        }),
    };
    assert_eq!(theirs, expected);
    assert_eq!(expected.encode_to_vec(), ours.encode_to_vec());
    let back = GetVersionInfoResponse::decode(&expected.encode_to_vec()[..]).unwrap();
    assert_eq!(back, ours);
    assert!(back.supports_inline_keepalives());
}
