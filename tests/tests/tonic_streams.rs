//! Server-streaming, client-streaming and bidirectional RPCs through real
//! tonic with both keepalive layers: every message arrives intact and in
//! order while keepalives flow in each allowed direction, and the
//! application never sees one.

mod tonic_support;

use inlinekeepalive::tonic::{ClientKeepaliveLayer, Config, ServerKeepaliveLayer};
use tonic_support::pb::echo_client::EchoClient;
use tonic_support::pb::Plan;
use tonic_support::*;

fn config() -> Config {
    Config::new(MS(40)).unwrap()
}

#[tokio::test]
async fn server_stream_gets_server_keepalives_removed_by_the_client() {
    let mut server = start_server(Some(ServerKeepaliveLayer::new(config()))).await;
    let channel = connect_layered(server.addr, ClientKeepaliveLayer::new(config())).await;
    let mut client = EchoClient::new(channel);

    let plan = Plan {
        count: 5,
        gap_ms: 200,
        size: 100,
        first_gap_ms: 200,
    };
    let response = client.watch(plan).await.unwrap();
    let client_stats = stats_of(&response);
    let items = collect(response.into_inner()).await.unwrap();
    assert_in_order(&items, 5, 100);

    let seen = server.next_seen().await;
    let server_stats = seen.stats.expect("stats in the request extensions");
    assert!(server_stats.keepalives_sent() >= 5, "{server_stats:?}");
    assert_eq!(
        client_stats.keepalives_removed(),
        server_stats.keepalives_sent(),
        "every keepalive sent was removed: {client_stats:?}"
    );
    assert_eq!(client_stats.messages_passed(), 5);
    assert_eq!(client_stats.peer_supports_keepalives(), Some(true));
    // The raw response bytes carried them, as whole frames between messages.
    let frames = server.wire.response_frames();
    assert_eq!(frames.keepalives as u64, server_stats.keepalives_sent());
    assert_eq!((frames.others, frames.trailing), (5, 0));
    server.shutdown().await;
}

#[tokio::test]
async fn client_stream_gets_client_keepalives_removed_by_the_server() {
    let mut server = start_server(Some(ServerKeepaliveLayer::new(config()))).await;
    // tonic sends a client stream's response headers only at its end, so
    // the client must know of the server's support beforehand.
    let channel = connect_layered(
        server.addr,
        ClientKeepaliveLayer::new(config()).assume_server_support(),
    )
    .await;
    let mut client = EchoClient::new(channel);

    let items: Vec<_> = (0..5).map(|seq| item(seq, 300)).collect();
    let response = client.upload(paced(items, MS(200))).await.unwrap();
    let client_stats = stats_of(&response);
    let summary = response.into_inner();
    assert_eq!(summary.seqs, vec![0, 1, 2, 3, 4]);

    let seen = server.next_seen().await;
    assert!(seen.error.is_none(), "{:?}", seen.error);
    assert_in_order(&seen.items, 5, 300);
    let server_stats = seen.stats.unwrap();
    assert!(client_stats.keepalives_sent() >= 5, "{client_stats:?}");
    assert_eq!(
        server_stats.keepalives_removed(),
        client_stats.keepalives_sent()
    );
    assert_eq!(server_stats.messages_passed(), 5);
    let frames = server.wire.request_frames();
    assert_eq!(frames.keepalives as u64, client_stats.keepalives_sent());
    assert_eq!((frames.others, frames.trailing), (5, 0));
    server.shutdown().await;
}

#[tokio::test]
async fn client_stream_with_a_probe() {
    let mut server = start_server(Some(ServerKeepaliveLayer::new(config()))).await;
    let probes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = probes.clone();
    let layer = ClientKeepaliveLayer::new(config()).with_probe(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { true }
    });
    let channel = connect_layered(server.addr, layer.clone()).await;
    let mut client = EchoClient::new(channel);
    for round in 0..2 {
        let items: Vec<_> = (0..3).map(|seq| item(seq, 10)).collect();
        let response = client.upload(paced(items, MS(150))).await.unwrap();
        let stats = stats_of(&response);
        assert!(stats.keepalives_sent() >= 2, "round {round}: {stats:?}");
        let seen = server.next_seen().await;
        assert_in_order(&seen.items, 3, 10);
        assert_eq!(
            seen.stats.unwrap().keepalives_removed(),
            stats.keepalives_sent()
        );
    }
    assert_eq!(layer.server_support(), Some(true));
    assert_eq!(
        probes.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "probed once per layer"
    );
    server.shutdown().await;
}

/// `assume_server_support` and `with_probe` replace each other: the last
/// call wins, so an assumption after a probe never waits for the probe (one
/// that would never answer here), and a probe after an assumption is asked.
#[tokio::test]
async fn assume_and_probe_replace_each_other() {
    let mut server = start_server(Some(ServerKeepaliveLayer::new(config()))).await;
    let probes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = probes.clone();
    let hanging_probe = move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::future::pending::<bool>()
    };
    let layer = ClientKeepaliveLayer::new(config())
        .with_probe(hanging_probe.clone())
        .assume_server_support();
    let mut client = EchoClient::new(connect_layered(server.addr, layer).await);
    let items: Vec<_> = (0..3).map(|seq| item(seq, 10)).collect();
    let response = tokio::time::timeout(MS(5000), client.upload(paced(items, MS(150))))
        .await
        .expect("an assumption does not wait for a probe")
        .unwrap();
    assert!(stats_of(&response).keepalives_sent() >= 2);
    assert_in_order(&server.next_seen().await.items, 3, 10);
    assert_eq!(probes.load(std::sync::atomic::Ordering::SeqCst), 0);

    let layer = ClientKeepaliveLayer::new(config())
        .assume_server_support()
        .with_probe(hanging_probe);
    assert_eq!(layer.server_support(), None, "the probe has not answered");
    let mut client = EchoClient::new(connect_layered(server.addr, layer).await);
    let waited = tokio::time::timeout(MS(300), client.upload(paced(Vec::new(), MS(1)))).await;
    assert!(waited.is_err(), "the request waits for the probe");
    assert_eq!(probes.load(std::sync::atomic::Ordering::SeqCst), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn bidi_stream_keepalives_flow_both_ways() {
    let mut server = start_server(Some(ServerKeepaliveLayer::new(config()))).await;
    // No assumption, no probe: the client learns support from the response
    // headers, which a bidi stream gets at once.
    let channel = connect_layered(server.addr, ClientKeepaliveLayer::new(config())).await;
    let mut client = EchoClient::new(channel);

    let items: Vec<_> = (0..5).map(|seq| item(seq, 2000)).collect();
    let response = client.chat(paced(items, MS(200))).await.unwrap();
    let client_stats = stats_of(&response);
    let echoed = collect(response.into_inner()).await.unwrap();
    assert_in_order(&echoed, 5, 2000);

    let seen = server.next_seen().await;
    assert!(seen.error.is_none(), "{:?}", seen.error);
    assert_in_order(&seen.items, 5, 2000);
    let server_stats = seen.stats.unwrap();
    assert!(client_stats.keepalives_sent() >= 3, "{client_stats:?}");
    assert!(server_stats.keepalives_sent() >= 3, "{server_stats:?}");
    assert_eq!(
        server_stats.keepalives_removed(),
        client_stats.keepalives_sent()
    );
    assert_eq!(
        client_stats.keepalives_removed(),
        server_stats.keepalives_sent()
    );
    assert_eq!(client_stats.collisions() + server_stats.collisions(), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn a_busy_stream_sends_no_keepalives() {
    let mut server = start_server(Some(ServerKeepaliveLayer::new(
        Config::new(MS(100)).unwrap(),
    )))
    .await;
    let channel = connect_layered(server.addr, ClientKeepaliveLayer::new(config())).await;
    let mut client = EchoClient::new(channel);
    let plan = Plan {
        count: 20,
        gap_ms: 10,
        size: 64,
        first_gap_ms: 10,
    };
    let response = client.watch(plan).await.unwrap();
    let items = collect(response.into_inner()).await.unwrap();
    assert_in_order(&items, 20, 64);
    let stats = server.next_seen().await.stats.unwrap();
    assert_eq!(stats.keepalives_sent(), 0, "never idle for 100 ms");
    server.shutdown().await;
}
