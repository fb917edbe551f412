//! Waypoint's four compatibility cases, checked on the raw frames each side
//! put on the wire: keepalives flow only where the receiver announced that
//! it removes them.

mod tonic_support;

use inlinekeepalive::tonic::{ClientKeepaliveLayer, Config, ServerKeepaliveLayer};
use tonic_support::pb::echo_client::EchoClient;
use tonic_support::pb::Plan;
use tonic_support::*;

fn config() -> Config {
    Config::new(MS(40)).unwrap()
}

fn plan() -> Plan {
    Plan {
        count: 4,
        gap_ms: 200,
        size: 50,
        first_gap_ms: 200,
    }
}

fn items() -> Vec<tonic_support::pb::Item> {
    (0..4).map(|seq| item(seq, 50)).collect()
}

#[tokio::test]
async fn both_layered_keepalives_flow_both_ways() {
    let mut server = start_server(Some(ServerKeepaliveLayer::new(config()))).await;
    let channel = connect_layered(server.addr, ClientKeepaliveLayer::new(config())).await;
    let mut client = EchoClient::new(channel);

    let response = client.watch(plan()).await.unwrap();
    assert_in_order(&collect(response.into_inner()).await.unwrap(), 4, 50);
    let _ = server.next_seen().await;
    let response = client.chat(paced(items(), MS(200))).await.unwrap();
    assert_in_order(&collect(response.into_inner()).await.unwrap(), 4, 50);
    let seen = server.next_seen().await;
    assert_in_order(&seen.items, 4, 50);

    let (requests, responses) = (server.wire.request_frames(), server.wire.response_frames());
    assert!(
        responses.keepalives >= 5,
        "server sent keepalives: {responses:?}"
    );
    assert!(
        requests.keepalives >= 3,
        "client sent keepalives: {requests:?}"
    );
    assert_eq!((responses.others, requests.others), (8, 5)); // 4 + 4 out; 1 plan + 4 in
    server.shutdown().await;
}

#[tokio::test]
async fn layered_server_sends_nothing_to_a_plain_client() {
    let mut server = start_server(Some(ServerKeepaliveLayer::new(config()))).await;
    let mut client = EchoClient::new(connect(server.addr).await);

    let response = client.watch(plan()).await.unwrap();
    assert_eq!(
        response
            .metadata()
            .get("wp-inline-keepalives")
            .map(|v| v.to_str().unwrap()),
        Some("true"),
        "the server still announces that it removes keepalives"
    );
    assert_in_order(&collect(response.into_inner()).await.unwrap(), 4, 50);
    let stats = server.next_seen().await.stats.unwrap();
    let response = client.chat(paced(items(), MS(200))).await.unwrap();
    assert_in_order(&collect(response.into_inner()).await.unwrap(), 4, 50);
    let chat_stats = server.next_seen().await.stats.unwrap();

    let frames = server.wire.response_frames();
    assert_eq!(frames.keepalives, 0, "no keepalive on the wire: {frames:?}");
    assert_eq!((frames.others, frames.trailing), (8, 0));
    for stats in [stats, chat_stats] {
        assert_eq!(stats.keepalives_sent(), 0);
        assert_eq!(stats.peer_supports_keepalives(), Some(false));
    }
    server.shutdown().await;
}

#[tokio::test]
async fn layered_client_sends_nothing_to_a_plain_server() {
    let mut server = start_server(None).await;
    let channel = connect_layered(server.addr, ClientKeepaliveLayer::new(config())).await;
    let mut client = EchoClient::new(channel);

    // Bidi: the response headers come at once, without the announcement.
    let response = client.chat(paced(items(), MS(200))).await.unwrap();
    let stats = stats_of(&response);
    assert_in_order(&collect(response.into_inner()).await.unwrap(), 4, 50);
    assert!(server.next_seen().await.error.is_none());
    assert_eq!(stats.peer_supports_keepalives(), Some(false));
    assert_eq!(stats.keepalives_sent(), 0);
    // Client stream: support is never confirmed while it runs.
    let response = client.upload(paced(items(), MS(200))).await.unwrap();
    let stats = stats_of(&response);
    assert_eq!(response.into_inner().seqs, vec![0, 1, 2, 3]);
    assert_in_order(&server.next_seen().await.items, 4, 50);
    assert_eq!(stats.keepalives_sent(), 0);
    // Server stream: the plain server sends none either.
    let response = client.watch(plan()).await.unwrap();
    let stats = stats_of(&response);
    assert_in_order(&collect(response.into_inner()).await.unwrap(), 4, 50);
    assert_eq!(stats.keepalives_removed(), 0);

    let frames = server.wire.request_frames();
    assert_eq!(frames.keepalives, 0, "no keepalive on the wire: {frames:?}");
    assert_eq!((frames.others, frames.trailing), (9, 0));
    server.shutdown().await;
}

#[tokio::test]
async fn neither_side_layered() {
    let mut server = start_server(None).await;
    let mut client = EchoClient::new(connect(server.addr).await);
    let response = client.watch(plan()).await.unwrap();
    assert!(response.metadata().get("wp-inline-keepalives").is_none());
    assert_in_order(&collect(response.into_inner()).await.unwrap(), 4, 50);
    let response = client.upload(paced(items(), MS(200))).await.unwrap();
    assert_eq!(response.into_inner().seqs, vec![0, 1, 2, 3]);
    assert!(server.next_seen().await.stats.is_none());
    assert!(server.next_seen().await.stats.is_none());
    let (requests, responses) = (server.wire.request_frames(), server.wire.response_frames());
    assert_eq!((requests.keepalives, responses.keepalives), (0, 0));
    assert_eq!((requests.others, responses.others), (5, 5));
    server.shutdown().await;
}
