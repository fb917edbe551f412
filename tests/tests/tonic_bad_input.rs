//! Bad input through the tonic layers: a collision reaches the handler and
//! is counted; a malformed frame gives the handler a clear `Status`; a
//! silent peer is detected.

mod tonic_support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use inlinekeepalive::tonic::{ClientKeepaliveLayer, Config, KeepaliveStats, ServerKeepaliveLayer};
use tonic::Code;
use tonic_support::pb::echo_client::EchoClient;
use tonic_support::pb::{Item, Plan};
use tonic_support::*;
use tower::{Service, ServiceExt};

fn config() -> Config {
    Config::new(MS(40)).unwrap()
}

#[tokio::test]
async fn a_collision_is_delivered_and_counted() {
    let mut server = start_server(Some(ServerKeepaliveLayer::new(config()))).await;
    let mut client = EchoClient::new(connect(server.addr).await);
    let mut items: Vec<_> = (0..3).map(|seq| item(seq, 8)).collect();
    items[1].collision = 7; // field 100000000 as a varint: not a keepalive
    let summary = client
        .upload(paced(items, MS(1)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.seqs, vec![0, 1, 2]);

    let seen = server.next_seen().await;
    assert_eq!(seen.items.len(), 3);
    assert_eq!(
        seen.items[1].collision, 7,
        "delivered to the handler as sent"
    );
    let stats = seen.stats.unwrap();
    assert_eq!(stats.collisions(), 1);
    assert_eq!(stats.keepalives_removed(), 0);
    assert_eq!(stats.messages_passed(), 3);
    server.shutdown().await;
}

/// Sends `body` as the raw request body of `Echo/Upload` and returns the
/// handler's view and the `grpc-status` the client got.
async fn raw_upload(body: Vec<u8>) -> (Seen, Option<String>) {
    let mut server = start_server(Some(ServerKeepaliveLayer::new(config()))).await;
    let mut channel = connect(server.addr).await;
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{}/ikatest.Echo/Upload", server.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(Full::new(Bytes::from(body))))
        .unwrap();
    let response = channel.ready().await.unwrap().call(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.unwrap();
    let status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| parts.headers.get("grpc-status"))
        .map(|v| v.to_str().unwrap().to_owned());
    let seen = server.next_seen().await;
    server.shutdown().await;
    (seen, status)
}

fn encode(item: &tonic_support::pb::Item) -> Vec<u8> {
    use prost::Message;
    let payload = item.encode_to_vec();
    let mut frame = vec![0];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    frame
}

#[tokio::test]
async fn a_bad_compressed_flag_gives_the_handler_a_clear_status() {
    let mut body = encode(&item(0, 4));
    body.extend_from_slice(&[2, 0, 0, 0, 1, 0]); // compressed flag 2
    body.extend_from_slice(&encode(&item(1, 4)));
    let (seen, status) = raw_upload(body).await;

    assert_eq!(seen.items.len(), 1, "the frame before the bad one arrived");
    let error = seen.error.expect("the handler got an error");
    assert_eq!(error.code(), Code::Internal);
    assert_eq!(
        error.message(),
        "malformed gRPC frame from the peer: invalid gRPC compressed-flag 2 (expected 0 or 1)"
    );
    assert_eq!(
        status.as_deref(),
        Some("13"),
        "the handler's status reached the client"
    );
}

#[tokio::test]
async fn a_truncated_frame_gives_the_handler_a_clear_status() {
    let mut body = encode(&item(0, 4));
    body.extend_from_slice(&[0, 0, 0, 0, 10, 8, 1]); // 10 bytes announced, 2 sent
    let (seen, _) = raw_upload(body).await;
    assert_eq!(seen.items.len(), 1);
    let error = seen.error.expect("the handler got an error");
    assert_eq!(error.code(), Code::Internal);
    assert!(
        error.message().contains("ended inside a frame"),
        "{}",
        error.message()
    );
}

/// Watches two 10-byte messages, the first after `first_gap_ms` and the
/// second `gap_ms` later, from a server sending keepalives every
/// `server_interval` through a client with `peer_timeout`. Returns what the
/// client collected, its stats, and how long the call took.
async fn watch_with_peer_timeout(
    server_interval: Duration,
    peer_timeout: Duration,
    first_gap_ms: u32,
    gap_ms: u32,
) -> (Result<Vec<Item>, tonic::Status>, KeepaliveStats, Duration) {
    let mut server = start_server(Some(ServerKeepaliveLayer::new(
        Config::new(server_interval).unwrap(),
    )))
    .await;
    let client_config = config().with_peer_timeout(peer_timeout).unwrap();
    let channel = connect_layered(server.addr, ClientKeepaliveLayer::new(client_config)).await;
    let mut client = EchoClient::new(channel);
    let plan = Plan {
        count: 2,
        gap_ms,
        size: 10,
        first_gap_ms,
    };
    let started = std::time::Instant::now();
    let response = client.watch(plan).await.unwrap();
    let stats = stats_of(&response);
    let items = collect(response.into_inner()).await;
    let elapsed = started.elapsed();
    let _ = server.next_seen().await;
    server.shutdown().await;
    (items, stats, elapsed)
}

#[tokio::test]
async fn a_keepalive_sending_peer_is_not_reported_silent() {
    let (items, stats, _) = watch_with_peer_timeout(MS(40), MS(500), 700, 700).await;
    assert_in_order(&items.unwrap(), 2, 10);
    assert!(!stats.peer_timed_out());
    assert!(stats.keepalives_removed() >= 10, "{stats:?}");
}

#[tokio::test]
async fn a_silent_peer_ends_the_stream_with_unavailable() {
    // The server announces support but its interval (5 s) is far beyond the
    // client's peer timeout (200 ms): to the client it has gone silent.
    let (items, stats, elapsed) = watch_with_peer_timeout(MS(5000), MS(200), 1500, 50).await;
    let error = items.unwrap_err();
    assert_eq!(error.code(), Code::Unavailable);
    assert!(
        error.message().contains("peer timeout"),
        "{}",
        error.message()
    );
    assert!(elapsed < MS(1400), "reported before the first message");
    assert!(stats.peer_timed_out());
}
