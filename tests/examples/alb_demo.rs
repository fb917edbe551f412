//! Three gRPC clients watch the same mostly idle server stream through a load
//! balancer with an idle timeout. Only the one with inline keepalives survives.
//!
//! ```text
//! cargo run --release --example alb_demo
//! cargo run --release --example alb_demo -- --idle-timeout 2s --interval 500ms --duration 12s
//! cargo run --release --example alb_demo -- --listen 127.0.0.1:50051 --via 127.0.0.1:8080
//! ```
//!
//! By default the load balancer is `albsim`, this repository's simulated ALB:
//! it answers HTTP/2 PINGs itself and resets a stream that carried no DATA
//! for the idle timeout. With `--via HOST:PORT` (a name such as
//! `localhost:8080` or an address) the clients go through a proxy you run
//! instead (nginx, HAProxy, Envoy...), pointed at the server's `--listen`
//! address.
//!
//! `--duration` sets how many messages the server stream sends: one at once,
//! then one every `--message-every` within the duration (3 with the
//! defaults, at 0, 5 and 10 s), after which the stream ends.
//!
//! The three clients:
//! - `plain`: no keepalive at all;
//! - `h2-ping`: tonic's HTTP/2 keepalive PINGs every `--interval`;
//! - `inline`: the `inlinekeepalive` client layer; the server layer then sends
//!   an inline keepalive every `--interval` of idleness.

use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use inlinekeepalive::tonic::{ClientKeepaliveLayer, Config, KeepaliveStats, ServerKeepaliveLayer};
use inlinekeepalive_tests::albsim::{parse_duration, AlbSim, AlbSimConfig};
use tokio::net::TcpListener;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::Stream;
use tonic::transport::{Endpoint, Server};
use tonic::{Request, Response, Status, Streaming};

mod pb {
    tonic::include_proto!("ikatest");
}

use pb::echo_client::EchoClient;
use pb::echo_server::{Echo, EchoServer};
use pb::{Item, Plan, Summary};

const USAGE: &str = "usage: alb_demo [--idle-timeout 2s] [--interval 500ms] [--duration 12s] \
[--message-every 5s] [--listen 127.0.0.1:0] [--via HOST:PORT]";

/// The command line, with defaults whose streams end after about 10 s.
struct Args {
    idle_timeout: Duration,
    interval: Duration,
    duration: Duration,
    message_every: Duration,
    listen: SocketAddr,
    /// `HOST:PORT` as given, resolved again by the clients' connector, which
    /// tries every address of a name (`localhost` may be `::1` first).
    via: Option<String>,
}

impl Args {
    fn parse() -> Result<Args, String> {
        let mut args = Args {
            idle_timeout: Duration::from_secs(2),
            interval: Duration::from_millis(500),
            duration: Duration::from_secs(12),
            message_every: Duration::from_secs(5),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            via: None,
        };
        let mut words = std::env::args().skip(1);
        while let Some(flag) = words.next() {
            if flag == "-h" || flag == "--help" {
                return Err(String::new());
            }
            let value = words
                .next()
                .ok_or_else(|| format!("{flag} needs a value"))?;
            let duration = || parse_duration(&value).map_err(|e| format!("{flag}: {e}"));
            let address = || {
                value
                    .parse::<SocketAddr>()
                    .map_err(|e| format!("{flag} {value}: {e}"))
            };
            match flag.as_str() {
                "--idle-timeout" => args.idle_timeout = duration()?,
                "--interval" => args.interval = duration()?,
                "--duration" => args.duration = duration()?,
                "--message-every" => args.message_every = duration()?,
                "--listen" => args.listen = address()?,
                "--via" => {
                    // Resolve once here, for an early and clear error.
                    value
                        .to_socket_addrs()
                        .map_err(|e| format!("{flag} {value}: {e}"))?
                        .next()
                        .ok_or_else(|| format!("{flag} {value}: no address"))?;
                    args.via = Some(value.clone());
                }
                _ => return Err(format!("unknown flag {flag}")),
            }
        }
        if args.message_every.is_zero() || args.duration.is_zero() {
            return Err("--message-every and --duration must be above zero".into());
        }
        Ok(args)
    }

    /// Messages the server stream sends: the first at once, then one every
    /// `message_every` while the run lasts.
    fn messages(&self) -> u64 {
        1 + (self.duration.as_millis() / self.message_every.as_millis().max(1)) as u64
    }
}

/// The demo's service: `Watch` sends `plan.count` items, `plan.gap_ms` apart.
struct Tail;

type ItemStream = Pin<Box<dyn Stream<Item = Result<Item, Status>> + Send>>;

#[tonic::async_trait]
impl Echo for Tail {
    type WatchStream = ItemStream;
    type ChatStream = ItemStream;

    async fn watch(&self, request: Request<Plan>) -> Result<Response<ItemStream>, Status> {
        let plan = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            for seq in 0..plan.count {
                if seq > 0 {
                    tokio::time::sleep(Duration::from_millis(plan.gap_ms.into())).await;
                }
                let item = Item {
                    seq,
                    payload: Bytes::from(format!("log line {seq}")),
                    collision: 0,
                };
                if tx.send(Ok(item)).await.is_err() {
                    return; // the client is gone
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn upload(&self, _: Request<Streaming<Item>>) -> Result<Response<Summary>, Status> {
        Err(Status::unimplemented("the demo only tails"))
    }

    async fn chat(&self, _: Request<Streaming<Item>>) -> Result<Response<ItemStream>, Status> {
        Err(Status::unimplemented("the demo only tails"))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Plain,
    H2Ping,
    Inline,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Plain, Kind::H2Ping, Kind::Inline];

    fn name(self) -> &'static str {
        match self {
            Kind::Plain => "plain",
            Kind::H2Ping => "h2-ping",
            Kind::Inline => "inline",
        }
    }
}

/// How one client's stream ended.
struct Outcome {
    kind: Kind,
    received: u64,
    keepalives_removed: Option<u64>,
    error: Option<Status>,
}

/// Prints a timeline line, stamped with the time since the demo started.
struct Timeline(Instant);

impl Timeline {
    fn say(&self, who: &str, what: impl std::fmt::Display) {
        let t = self.0.elapsed().as_secs_f64();
        println!("[{t:6.2}s] {who:<8} {what}");
    }
}

async fn run_client(
    kind: Kind,
    target: &str,
    args: &Args,
    timeline: &Timeline,
) -> Result<Outcome, Box<dyn std::error::Error>> {
    let endpoint = Endpoint::from_shared(format!("http://{target}"))?;
    let plan = Plan {
        count: args.messages(),
        gap_ms: u32::try_from(args.message_every.as_millis()).unwrap_or(u32::MAX),
        size: 0,
        first_gap_ms: 0,
    };
    let response = match kind {
        Kind::Plain => EchoClient::new(endpoint.connect().await?).watch(plan).await,
        Kind::H2Ping => {
            let channel = endpoint
                .http2_keep_alive_interval(args.interval)
                .keep_alive_while_idle(true)
                .keep_alive_timeout(Duration::from_secs(5))
                .connect()
                .await?;
            EchoClient::new(channel).watch(plan).await
        }
        Kind::Inline => {
            let layer = ClientKeepaliveLayer::new(Config::new(args.interval)?);
            let channel = tower::ServiceBuilder::new()
                .layer(layer)
                .service(endpoint.connect().await?);
            EchoClient::new(channel).watch(plan).await
        }
    };
    let mut outcome = Outcome {
        kind,
        received: 0,
        keepalives_removed: None,
        error: None,
    };
    let response = match response {
        Ok(response) => response,
        Err(status) => {
            timeline.say(
                kind.name(),
                format_args!("call failed: {}", describe(&status)),
            );
            outcome.error = Some(status);
            return Ok(outcome);
        }
    };
    let stats = response.extensions().get::<KeepaliveStats>().cloned();
    let mut stream = response.into_inner();
    loop {
        match stream.message().await {
            Ok(Some(item)) => {
                outcome.received += 1;
                let removed = stats
                    .as_ref()
                    .map(|s| format!(" ({} keepalives removed so far)", s.keepalives_removed()))
                    .unwrap_or_default();
                timeline.say(
                    kind.name(),
                    format_args!("got {:?}{removed}", String::from_utf8_lossy(&item.payload)),
                );
            }
            Ok(None) => {
                timeline.say(kind.name(), "stream finished cleanly");
                break;
            }
            Err(status) => {
                timeline.say(
                    kind.name(),
                    format_args!("stream died: {}", describe(&status)),
                );
                outcome.error = Some(status);
                break;
            }
        }
    }
    outcome.keepalives_removed = stats.map(|s| s.keepalives_removed());
    Ok(outcome)
}

/// The status, and the HTTP/2 reset behind it if there was one: that is what
/// a load balancer sends when it kills an idle stream.
fn describe(status: &Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if let Some(reason) = error
            .downcast_ref::<h2::Error>()
            .and_then(h2::Error::reason)
        {
            text.push_str(&format!(" (RST_STREAM {reason:?})"));
            break;
        }
        source = error.source();
    }
    text
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match Args::parse() {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("alb_demo: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("alb_demo: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the demo; `Ok(true)` when the outcome is the expected one (only the
/// inline client survives), so the demo doubles as a smoke test.
async fn run(args: Args) -> Result<bool, Box<dyn std::error::Error>> {
    let listener = TcpListener::bind(args.listen).await?;
    let server_addr = listener.local_addr()?;
    let server_layer = ServerKeepaliveLayer::new(Config::new(args.interval)?);
    let server = tokio::spawn(
        Server::builder()
            .layer(server_layer)
            .add_service(EchoServer::new(Tail))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let (target, albsim) = match &args.via {
        Some(via) => (via.clone(), None),
        None => {
            let config = AlbSimConfig::new(
                SocketAddr::from(([127, 0, 0, 1], 0)),
                server_addr,
                args.idle_timeout,
            );
            let sim = AlbSim::start(config).await?;
            (sim.local_addr().to_string(), Some(sim))
        }
    };
    println!(
        "server on {server_addr}; clients go through {} at {target}",
        if albsim.is_some() {
            format!("albsim (idle timeout {:?})", args.idle_timeout)
        } else {
            "your proxy".to_string()
        }
    );
    println!(
        "the server stream sends {} messages, one every {:?}; keepalives and PINGs every {:?}\n",
        args.messages(),
        args.message_every,
        args.interval
    );

    let timeline = Timeline(Instant::now());
    let runs = Kind::ALL.map(|kind| run_client(kind, &target, &args, &timeline));
    let [plain, ping, inline] = runs;
    let (plain, ping, inline) = tokio::join!(plain, ping, inline);
    let outcomes = [plain?, ping?, inline?];

    println!(
        "\n{:<8} | {:<8} | {:>8} | {:>18} | error",
        "client", "survived", "messages", "keepalives removed"
    );
    println!("{}", "-".repeat(78));
    for o in &outcomes {
        println!(
            "{:<8} | {:<8} | {:>8} | {:>18} | {}",
            o.kind.name(),
            if o.error.is_none() { "yes" } else { "no" },
            format!("{}/{}", o.received, args.messages()),
            o.keepalives_removed
                .map_or_else(|| "-".to_string(), |n| n.to_string()),
            o.error.as_ref().map_or_else(String::new, describe),
        );
    }
    if let Some(sim) = &albsim {
        let stats = sim.stats();
        println!(
            "\nalbsim: {} streams, {} reset for server-to-client idleness",
            stats.streams_opened, stats.server_to_client.idle_resets
        );
    }

    if let Some(sim) = albsim {
        sim.shutdown().await;
    }
    server.abort();

    let survived = |kind: Kind| outcomes.iter().any(|o| o.kind == kind && o.error.is_none());
    let expected = survived(Kind::Inline)
        && (args.message_every <= args.idle_timeout
            || (!survived(Kind::Plain) && !survived(Kind::H2Ping)));
    if expected {
        println!("\nAs expected: only inline keepalives kept the idle stream alive.");
    } else {
        println!("\nUnexpected outcome: see the table above.");
    }
    Ok(expected)
}
