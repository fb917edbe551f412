//! tonic server-streaming throughput of 1 KiB messages over loopback: both
//! keepalive layers installed versus no layers, measured in one run.
//!
//! The two configurations run in alternating rounds (plain, layered,
//! layered, plain, …) against their own server on the same runtime, so
//! machine noise hits both alike; each round streams `MESSAGES` messages
//! through one call. The report gives the median of the rounds and the
//! ratio.
//!
//! ```text
//! cargo bench -p inlinekeepalive-tests --bench tonic
//! ```
//! `ROUNDS=n` and `MESSAGES=n` in the environment change the sizes;
//! `LAYERS=server` or `LAYERS=client` installs one side only, to see where a
//! difference comes from.

#[path = "../tests/tonic_support/mod.rs"]
mod tonic_support;

use std::time::{Duration, Instant};

use inlinekeepalive::tonic::{ClientKeepaliveLayer, Config, ServerKeepaliveLayer};
use tonic::client::GrpcService;
use tonic_support::pb::echo_client::EchoClient;
use tonic_support::pb::Plan;
use tonic_support::*;
use tower::ServiceBuilder;

const SIZE: usize = 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn one_call<T>(client: &mut EchoClient<T>, messages: u64) -> Duration
where
    T: GrpcService<tonic::body::Body>,
    T::Error: Into<BoxError>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<BoxError> + Send,
{
    let plan = Plan {
        count: messages,
        gap_ms: 0,
        size: SIZE as u32,
        first_gap_ms: 0,
    };
    let started = Instant::now();
    let mut stream = client.watch(plan).await.unwrap().into_inner();
    let mut received = 0;
    while let Some(item) = stream.message().await.unwrap() {
        assert_eq!(item.payload.len(), SIZE);
        received += 1;
    }
    assert_eq!(received, messages);
    started.elapsed()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Alternating rounds; returns the median MiB/s of each and the median of
/// the per-round ratios (layered / plain, each pair measured back to back,
/// which is robust to load that drifts during the run).
async fn compare<A, B>(
    mut plain: EchoClient<A>,
    mut layered: EchoClient<B>,
    rounds: u64,
    messages: u64,
) -> (f64, f64, f64)
where
    A: GrpcService<tonic::body::Body>,
    A::Error: Into<BoxError>,
    A::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <A::ResponseBody as http_body::Body>::Error: Into<BoxError> + Send,
    B: GrpcService<tonic::body::Body>,
    B::Error: Into<BoxError>,
    B::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <B::ResponseBody as http_body::Body>::Error: Into<BoxError> + Send,
{
    for _ in 0..2 {
        one_call(&mut plain, messages.min(2000)).await;
        one_call(&mut layered, messages.min(2000)).await;
    }
    let mib = (messages as f64) * SIZE as f64 / (1024.0 * 1024.0);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate which goes first, so neither always follows the other.
        if round % 2 == 0 {
            a.push(mib / one_call(&mut plain, messages).await.as_secs_f64());
            b.push(mib / one_call(&mut layered, messages).await.as_secs_f64());
        } else {
            b.push(mib / one_call(&mut layered, messages).await.as_secs_f64());
            a.push(mib / one_call(&mut plain, messages).await.as_secs_f64());
        }
    }
    let ratios = a.iter().zip(&b).map(|(a, b)| b / a).collect();
    (median(a), median(b), median(ratios))
}

fn main() {
    // `cargo test --benches` runs bench targets without `--bench`: keep that
    // a quick smoke run.
    let benching = std::env::args().any(|a| a == "--bench");
    let rounds = env("ROUNDS", if benching { 21 } else { 1 });
    let messages = env("MESSAGES", if benching { 20_000 } else { 100 });
    let layers = std::env::var("LAYERS").unwrap_or_else(|_| "both".into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let config = Config::default();
        let plain_server = start_unrecorded_server(None).await;
        let server_layer = (layers != "client").then(|| ServerKeepaliveLayer::new(config));
        let layered_server = start_unrecorded_server(server_layer).await;
        let plain = EchoClient::new(connect(plain_server.addr).await);
        let channel = connect(layered_server.addr).await;
        let (plain_mib, layered_mib, ratio) = if layers == "server" {
            compare(plain, EchoClient::new(channel), rounds, messages).await
        } else {
            let layered = ServiceBuilder::new()
                .layer(ClientKeepaliveLayer::new(config))
                .service(channel);
            compare(plain, EchoClient::new(layered), rounds, messages).await
        };
        let msgs = |mib_s: f64| mib_s * 1024.0 * 1024.0 / SIZE as f64;
        println!(
            "tonic server streaming, {SIZE} B messages, {messages} per call, median of {rounds} rounds"
        );
        println!(
            "  no layers:        {plain_mib:8.1} MiB/s  {:>10.0} msg/s",
            msgs(plain_mib)
        );
        println!(
            "  layers ({layers:>6}): {layered_mib:8.1} MiB/s  {:>10.0} msg/s",
            msgs(layered_mib)
        );
        println!(
            "  ratio (layers / none): {:.3} of the medians, {ratio:.3} median of paired rounds",
            layered_mib / plain_mib
        );
        plain_server.shutdown().await;
        layered_server.shutdown().await;
    });
}
