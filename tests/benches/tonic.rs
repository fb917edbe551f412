//! tonic throughput over loopback with both keepalive layers installed versus
//! no layers, measured in one run, for three workloads:
//!
//! - `stream1k`: server streaming of 1 KiB messages from an iterator;
//! - `stream62`: server streaming of 62-byte messages from a channel fed by
//!   a producer task (the shape of most real streams);
//! - `unary62`: unary calls of 62 bytes each way, 16 callers at once on one
//!   channel (the per-call cost: headers, bodies, extensions, timers).
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
//! `WORKLOADS=stream1k,unary62` picks workloads; `ONLY=plain` or
//! `ONLY=layers` runs one half alone (for callgrind); `LAYERS=server` or
//! `LAYERS=client` installs one side only, to see where a difference comes
//! from.

#[path = "../tests/tonic_support/mod.rs"]
mod tonic_support;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use inlinekeepalive::tonic::{ClientKeepaliveLayer, Config, ServerKeepaliveLayer};
use tonic::client::GrpcService;
use tonic_support::pb::echo_client::EchoClient;
use tonic_support::pb::Plan;
use tonic_support::*;
use tower::ServiceBuilder;

const SIZE: usize = 1024;
/// The payload of a 62-byte `Blob`.
const SMALL: usize = 60;
/// Concurrent callers of the unary workload.
const CALLERS: usize = 16;

mod bench_pb {
    tonic::include_proto!("ikabench");
}

use bench_pb::bench_client::BenchClient;
use bench_pb::bench_server::{Bench, BenchServer};
use bench_pb::{Blob, Order};

/// The small-message service: `Ping` echoes, `Feed` streams from a channel.
struct SmallMessages;

type BlobStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<Blob, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl Bench for SmallMessages {
    type FeedStream = BlobStream;

    async fn ping(
        &self,
        request: tonic::Request<Blob>,
    ) -> Result<tonic::Response<Blob>, tonic::Status> {
        Ok(tonic::Response::new(request.into_inner()))
    }

    async fn feed(
        &self,
        request: tonic::Request<Order>,
    ) -> Result<tonic::Response<BlobStream>, tonic::Status> {
        let order = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let payload = bytes::Bytes::from(vec![7u8; order.size as usize]);
            for _ in 0..order.count {
                let blob = Blob {
                    payload: payload.clone(),
                };
                if tx.send(Ok(blob)).await.is_err() {
                    return;
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Serves [`SmallMessages`] on a free loopback port, with the server layer
/// if given.
async fn start_small_server(layer: Option<ServerKeepaliveLayer>) -> SocketAddr {
    // TCP_NODELAY, as tonic's own listener sets it: small messages must not
    // wait for Nagle's algorithm and a delayed ACK (40 ms per exchange).
    let incoming = tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap())
        .unwrap()
        .with_nodelay(Some(true));
    let addr = incoming.local_addr().unwrap();
    let service = BenchServer::new(SmallMessages);
    match layer {
        Some(layer) => tokio::spawn(
            tonic::transport::Server::builder()
                .layer(layer)
                .add_service(service)
                .serve_with_incoming(incoming),
        ),
        None => tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming),
        ),
    };
    addr
}

/// One round of `stream62`: a `Feed` of `messages` blobs.
async fn feed_call<T>(client: &mut BenchClient<T>, messages: u64) -> Duration
where
    T: GrpcService<tonic::body::Body>,
    T::Error: Into<BoxError>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<BoxError> + Send,
{
    let order = Order {
        count: messages,
        size: SMALL as u32,
    };
    let started = Instant::now();
    let mut stream = client.feed(order).await.unwrap().into_inner();
    let mut received = 0;
    while let Some(blob) = stream.message().await.unwrap() {
        assert_eq!(blob.payload.len(), SMALL);
        received += 1;
    }
    assert_eq!(received, messages);
    started.elapsed()
}

/// One round of `unary62`: `calls` pings, `CALLERS` in flight at once.
async fn ping_calls<T>(client: &BenchClient<T>, calls: u64) -> Duration
where
    T: GrpcService<tonic::body::Body> + Clone + Send + 'static,
    T::Future: Send,
    T::Error: Into<BoxError>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<BoxError> + Send,
{
    let started = Instant::now();
    let per_caller = calls / CALLERS as u64;
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let blob = Blob {
                    payload: bytes::Bytes::from_static(&[7u8; SMALL]),
                };
                for _ in 0..per_caller {
                    let back = client.ping(blob.clone()).await.unwrap().into_inner();
                    assert_eq!(back.payload.len(), SMALL);
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
    started.elapsed()
}

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

type RoundFuture<'a> = Pin<Box<dyn Future<Output = Duration> + 'a>>;

/// Alternating rounds of `plain` and `layered` (clients of one type: both
/// go through [`client_side`]'s box), each moving `messages`; returns the
/// median messages per second of each and the median of the per-round
/// ratios (layered / plain, each pair measured back to back, which is
/// robust to load that drifts during the run).
async fn compare<C>(
    plain: &mut C,
    layered: &mut C,
    round: impl Fn(&mut C, u64) -> RoundFuture<'_> + Copy,
    rounds: u64,
    messages: u64,
) -> (f64, f64, f64) {
    // `ONLY=plain` or `ONLY=layers` runs one half alone, to count its
    // instructions (callgrind) or cycles (perf) apart from the other's.
    let only = std::env::var("ONLY").unwrap_or_default();
    if !only.is_empty() {
        for _ in 0..rounds {
            if only == "plain" {
                round(plain, messages).await;
            } else {
                round(layered, messages).await;
            }
        }
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    for _ in 0..2 {
        round(plain, messages.min(2000)).await;
        round(layered, messages.min(2000)).await;
    }
    let rate = |d: Duration| messages as f64 / d.as_secs_f64();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        // Alternate which goes first, so neither always follows the other.
        if i % 2 == 0 {
            a.push(rate(round(plain, messages).await));
            b.push(rate(round(layered, messages).await));
        } else {
            b.push(rate(round(layered, messages).await));
            a.push(rate(round(plain, messages).await));
        }
    }
    let ratios = a.iter().zip(&b).map(|(a, b)| b / a).collect();
    (median(a), median(b), median(ratios))
}

fn report(
    workload: &str,
    rounds: u64,
    messages: u64,
    layers: &str,
    (plain, layered, ratio): (f64, f64, f64),
) {
    println!("{workload}: {messages} messages per round, median of {rounds} rounds");
    println!("  no layers:        {plain:>10.0} msg/s");
    println!("  layers ({layers:>6}): {layered:>10.0} msg/s");
    println!(
        "  ratio (layers / none): {:.3} of the medians, {ratio:.3} median of paired rounds",
        layered / plain
    );
}

type BoxedChannel = tower::util::BoxCloneService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    tonic::transport::Error,
>;

/// `channel`, with the client layer if `layered`, boxed: both halves of a
/// comparison go through the same box (one allocation per call each), so
/// they are one type and the difference is the layer alone.
fn client_side(channel: tonic::transport::Channel, config: Config, layered: bool) -> BoxedChannel {
    use tower::ServiceExt;
    if !layered {
        return tower::util::BoxCloneService::new(channel);
    }
    let layered = ServiceBuilder::new()
        .layer(ClientKeepaliveLayer::new(config))
        .service(channel);
    let boxed = ServiceExt::<http::Request<tonic::body::Body>>::map_response(
        layered,
        |response: http::Response<inlinekeepalive::tonic::KeepaliveBody<tonic::body::Body>>| {
            response.map(tonic::body::Body::new)
        },
    );
    tower::util::BoxCloneService::new(boxed)
}

/// What every workload's comparison shares.
struct Comparison<'a> {
    config: Config,
    /// The layered half has the client layer (not under `LAYERS=server`).
    client_layer: bool,
    rounds: u64,
    layers: &'a str,
}

impl Comparison<'_> {
    /// Connects `client` to the plain and the layered server of `addrs`,
    /// compares them over `round` and prints the result.
    async fn run<C>(
        &self,
        workload: &str,
        addrs: (SocketAddr, SocketAddr),
        client: impl Fn(BoxedChannel) -> C,
        round: impl Fn(&mut C, u64) -> RoundFuture<'_> + Copy,
        messages: u64,
    ) {
        let mut plain = client(client_side(connect(addrs.0).await, self.config, false));
        let mut layered = client(client_side(
            connect(addrs.1).await,
            self.config,
            self.client_layer,
        ));
        let result = compare(&mut plain, &mut layered, round, self.rounds, messages).await;
        report(workload, self.rounds, messages, self.layers, result);
    }
}

fn main() {
    // `cargo test --benches` runs bench targets without `--bench`: keep that
    // a quick smoke run.
    let benching = std::env::args().any(|a| a == "--bench");
    let rounds = env("ROUNDS", if benching { 21 } else { 1 });
    let messages = env("MESSAGES", if benching { 20_000 } else { 100 });
    let layers = std::env::var("LAYERS").unwrap_or_else(|_| "both".into());
    let workloads =
        std::env::var("WORKLOADS").unwrap_or_else(|_| "stream1k,stream62,unary62".into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let config = Config::default();
        let server_layer = || (layers != "client").then(|| ServerKeepaliveLayer::new(config));
        let bench = Comparison {
            config,
            client_layer: layers != "server",
            rounds,
            layers: &layers,
        };
        if workloads.contains("stream1k") {
            let plain_server = start_unrecorded_server(None).await;
            let layered_server = start_unrecorded_server(server_layer()).await;
            bench
                .run(
                    &format!("stream1k ({SIZE} B, server streaming)"),
                    (plain_server.addr, layered_server.addr),
                    EchoClient::new,
                    |c, n| Box::pin(one_call(c, n)),
                    messages,
                )
                .await;
            plain_server.shutdown().await;
            layered_server.shutdown().await;
        }
        if workloads.contains("stream62") {
            let servers = (
                start_small_server(None).await,
                start_small_server(server_layer()).await,
            );
            bench
                .run(
                    "stream62 (62 B, server streaming from a channel)",
                    servers,
                    BenchClient::new,
                    |c, n| Box::pin(feed_call(c, n)),
                    messages,
                )
                .await;
        }
        if workloads.contains("unary62") {
            let servers = (
                start_small_server(None).await,
                start_small_server(server_layer()).await,
            );
            bench
                .run(
                    &format!("unary62 (62 B each way, {CALLERS} callers)"),
                    servers,
                    BenchClient::new,
                    |c, n| Box::pin(ping_calls(c, n)),
                    (messages / 4).max(CALLERS as u64),
                )
                .await;
        }
    });
}
