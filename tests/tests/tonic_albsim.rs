//! Through albsim, the simulated load balancer (idle timeout 300 ms): an
//! idle tonic stream is reset without keepalives and with HTTP/2 PINGs only,
//! and survives 10 idle timeouts with inline keepalives every 100 ms. For a
//! server stream and for a client stream.

mod tonic_support;

use std::time::Duration;

use inlinekeepalive::tonic::{ClientKeepaliveLayer, Config, KeepaliveStats, ServerKeepaliveLayer};
use inlinekeepalive_tests::albsim::{AlbSim, AlbSimConfig, Direction};
use tonic::transport::{Channel, Endpoint};
use tonic_support::pb::echo_client::EchoClient;
use tonic_support::pb::Plan;
use tonic_support::*;
use tower::ServiceBuilder;

const IDLE_TIMEOUT: Duration = Duration::from_millis(300);
/// Ten idle timeouts.
const LONG_IDLE: Duration = Duration::from_millis(3000);
const PINGS_DONT_COUNT: &str = "PINGs do not count as stream activity";

#[derive(Clone, Copy, Debug)]
enum Mode {
    Nothing,
    PingsOnly,
    Inline,
}

fn keepalive_config() -> Config {
    Config::new(MS(100)).unwrap()
}

async fn setup(mode: Mode) -> (TestServer, AlbSim, Channel) {
    let layer = matches!(mode, Mode::Inline).then(|| ServerKeepaliveLayer::new(keepalive_config()));
    let server = start_server(layer).await;
    let albsim = AlbSim::start(AlbSimConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        server.addr,
        IDLE_TIMEOUT,
    ))
    .await
    .unwrap();
    let mut endpoint = Endpoint::from_shared(format!("http://{}", albsim.local_addr())).unwrap();
    if matches!(mode, Mode::PingsOnly) {
        endpoint = endpoint
            .http2_keep_alive_interval(MS(100))
            .keep_alive_while_idle(true)
            .keep_alive_timeout(MS(1000));
    }
    let channel = endpoint.connect().await.unwrap();
    (server, albsim, channel)
}

/// A server stream: one message, then `LONG_IDLE` of silence, then another.
async fn server_stream(
    mode: Mode,
) -> (Result<usize, tonic::Status>, AlbSim, Option<KeepaliveStats>) {
    let (server, albsim, channel) = setup(mode).await;
    let plan = Plan {
        count: 2,
        gap_ms: LONG_IDLE.as_millis() as u32,
        size: 32,
        first_gap_ms: 0,
    };
    let result = if let Mode::Inline = mode {
        let channel = ServiceBuilder::new()
            .layer(ClientKeepaliveLayer::new(keepalive_config()))
            .service(channel);
        let response = EchoClient::new(channel).watch(plan).await.unwrap();
        let stats = response.extensions().get::<KeepaliveStats>().cloned();
        (collect(response.into_inner()).await, stats)
    } else {
        let response = EchoClient::new(channel).watch(plan).await.unwrap();
        (collect(response.into_inner()).await, None)
    };
    server.shutdown().await;
    let (items, stats) = result;
    (
        items.map(|items| {
            assert_in_order(&items, 2, 32);
            items.len()
        }),
        albsim,
        stats,
    )
}

/// A client stream: one message, then `LONG_IDLE` of silence, then another.
async fn client_stream(
    mode: Mode,
) -> (
    Result<Vec<u64>, tonic::Status>,
    AlbSim,
    Option<KeepaliveStats>,
) {
    let (server, albsim, channel) = setup(mode).await;
    let items = scheduled(vec![(MS(0), item(0, 32)), (LONG_IDLE, item(1, 32))]);
    let result = if let Mode::Inline = mode {
        let channel = ServiceBuilder::new()
            .layer(ClientKeepaliveLayer::new(keepalive_config()).assume_server_support())
            .service(channel);
        match EchoClient::new(channel).upload(items).await {
            Ok(response) => {
                let stats = response.extensions().get::<KeepaliveStats>().cloned();
                (Ok(response.into_inner().seqs), stats)
            }
            Err(status) => (Err(status), None),
        }
    } else {
        let result = EchoClient::new(channel).upload(items).await;
        (result.map(|r| r.into_inner().seqs), None)
    };
    server.shutdown().await;
    (result.0, albsim, result.1)
}

/// The idle stream failed, and albsim reset it once for silence in `direction`.
fn assert_reset_once<T: std::fmt::Debug>(
    result: &Result<T, tonic::Status>,
    albsim: &AlbSim,
    direction: Direction,
    why: &str,
) {
    assert!(result.is_err(), "{why}: {result:?}");
    assert_eq!(albsim.stats().direction(direction).idle_resets, 1);
}

#[tokio::test]
async fn server_stream_without_keepalives_is_reset() {
    let (result, albsim, _) = server_stream(Mode::Nothing).await;
    assert_reset_once(
        &result,
        &albsim,
        Direction::ServerToClient,
        "reset by albsim",
    );
}

#[tokio::test]
async fn server_stream_with_http2_pings_only_is_reset() {
    let (result, albsim, _) = server_stream(Mode::PingsOnly).await;
    assert_reset_once(
        &result,
        &albsim,
        Direction::ServerToClient,
        PINGS_DONT_COUNT,
    );
}

#[tokio::test]
async fn server_stream_with_inline_keepalives_survives_ten_idle_timeouts() {
    let (result, albsim, stats) = server_stream(Mode::Inline).await;
    assert_eq!(result.unwrap(), 2);
    assert_eq!(albsim.stats().idle_resets(), 0);
    let stats = stats.unwrap();
    assert!(stats.keepalives_removed() >= 10, "{stats:?}");
}

#[tokio::test]
async fn client_stream_without_keepalives_is_reset() {
    let (result, albsim, _) = client_stream(Mode::Nothing).await;
    assert_reset_once(
        &result,
        &albsim,
        Direction::ClientToServer,
        "reset by albsim",
    );
}

#[tokio::test]
async fn client_stream_with_http2_pings_only_is_reset() {
    let (result, albsim, _) = client_stream(Mode::PingsOnly).await;
    assert_reset_once(
        &result,
        &albsim,
        Direction::ClientToServer,
        PINGS_DONT_COUNT,
    );
}

#[tokio::test]
async fn client_stream_with_inline_keepalives_survives_ten_idle_timeouts() {
    let (result, albsim, stats) = client_stream(Mode::Inline).await;
    assert_eq!(result.unwrap(), vec![0, 1]);
    assert_eq!(albsim.stats().idle_resets(), 0);
    let stats = stats.unwrap();
    assert!(stats.keepalives_sent() >= 10, "{stats:?}");
}
