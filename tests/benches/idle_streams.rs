//! Idle tonic server streams: what each keepalive costs the server, in its
//! own process, for our layer and for a naive task-per-stream design, in one
//! run.
//!
//! The bench re-runs its own binary as the server (`IKA_IDLE_SERVER` in the
//! environment), so the server's CPU time and memory are its own; the
//! client, in this process, opens `IDLE_STREAMS` server streams (default
//! 50,000 under `--bench`, over 50 connections) whose handler never sends a
//! message, and records when each keepalive arrives.
//!
//! Designs, each against a fresh server process:
//! - `layer`: `ServerKeepaliveLayer` with a 1 s interval; the client
//!   announces `wp-inline-keepalives: true` and reads the raw keepalives as
//!   messages (no client layer, so nothing is filtered away);
//! - `batched`: the same layer with a batch window of 1/16 of the interval
//!   (`Config::with_batch_window`): the streams whose deadlines share a
//!   window send together;
//! - `naive`: no layer; the handler spawns one task per stream that sends an
//!   empty message every interval (`tokio::time::interval`), Waypoint's
//!   shape.
//!
//! Per design: server CPU per keepalive over `IDLE_SECS` (default 10 s) of
//! steady state, server RSS per stream, and lateness: how much later than
//! one interval after the previous keepalive each one arrived (p50, p99).
//!
//! ```text
//! cargo bench -p inlinekeepalive-tests --bench idle_streams
//! IDLE_STREAMS=20000 IDLE_SECS=5 IDLE_ROUNDS=2 cargo bench -p inlinekeepalive-tests --bench idle_streams
//! ```

mod bench_pb {
    tonic::include_proto!("ikabench");
}

use std::io::{BufRead, BufReader, Write};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bench_pb::bench_client::BenchClient;
use bench_pb::bench_server::{Bench, BenchServer};
use bench_pb::{Blob, Order};
use inlinekeepalive::tonic::{Config, ServerKeepaliveLayer};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::{Endpoint, Server};
use tonic::{Request, Response, Status};

const INTERVAL: Duration = Duration::from_secs(1);
const CONNECTIONS: usize = 50;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------- server

type BlobStream = Pin<Box<dyn Stream<Item = Result<Blob, Status>> + Send>>;

/// The idle application: `Feed` never sends a message of its own. (`Blob`
/// has no field 100000000, so the client decodes a raw keepalive as an empty
/// `Blob`.)
struct Idle {
    naive: bool,
}

#[tonic::async_trait]
impl Bench for Idle {
    type FeedStream = BlobStream;

    async fn feed(&self, _: Request<Order>) -> Result<Response<BlobStream>, Status> {
        if !self.naive {
            return Ok(Response::new(Box::pin(tokio_stream::pending())));
        }
        // Waypoint's shape: one task per stream, a message every interval.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            let mut ticks =
                tokio::time::interval_at(tokio::time::Instant::now() + INTERVAL, INTERVAL);
            loop {
                ticks.tick().await;
                if tx.send(Ok(Blob::default())).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn ping(&self, request: Request<Blob>) -> Result<Response<Blob>, Status> {
        Ok(Response::new(request.into_inner()))
    }
}

/// CPU time of this process, from `CLOCK_PROCESS_CPUTIME_ID`.
fn cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The server process: prints its address, then answers `stat` lines on
/// stdin with its CPU time and RSS until stdin closes.
fn server(design: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("listening {}", listener.local_addr().unwrap());
        std::io::stdout().flush().unwrap();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let naive = design == "naive";
        let mut config = Config::new(INTERVAL).unwrap();
        if design == "batched" {
            config = config.with_batch_window(INTERVAL / 16).unwrap();
        }
        let service = BenchServer::new(Idle { naive });
        let builder = Server::builder().max_concurrent_streams(Some(100_000));
        tokio::spawn(async move {
            if naive {
                let mut builder = builder;
                builder
                    .add_service(service)
                    .serve_with_incoming(incoming)
                    .await
                    .unwrap();
            } else {
                let layer = ServerKeepaliveLayer::new(config);
                let mut builder = builder.layer(layer);
                builder
                    .add_service(service)
                    .serve_with_incoming(incoming)
                    .await
                    .unwrap();
            }
        });
        let lines = tokio::task::spawn_blocking(|| {
            for line in std::io::stdin().lock().lines() {
                if line.is_err() {
                    break;
                }
                println!("stat {} {}", cpu_time().as_nanos(), rss_kib());
                std::io::stdout().flush().unwrap();
            }
        });
        let _ = lines.await;
    });
}

// ---------------------------------------------------------------- client

struct ServerProcess {
    child: Child,
    lines: BufReader<std::process::ChildStdout>,
    addr: String,
}

impl ServerProcess {
    fn start(design: &str) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env("IKA_IDLE_SERVER", design)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the server process");
        let mut lines = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        lines.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .expect("the server's address")
            .to_string();
        Self { child, lines, addr }
    }

    /// The server's CPU time and RSS (KiB).
    fn stat(&mut self) -> (Duration, u64) {
        writeln!(self.child.stdin.as_mut().unwrap(), "stat").unwrap();
        let mut line = String::new();
        self.lines.read_line(&mut line).unwrap();
        let mut parts = line.split_whitespace().skip(1);
        let nanos: u64 = parts.next().unwrap().parse().unwrap();
        let rss: u64 = parts.next().unwrap().parse().unwrap();
        (Duration::from_nanos(nanos), rss)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the client saw.
#[derive(Default)]
struct Seen {
    keepalives: AtomicU64,
    /// Lateness of each keepalive after the first of its stream, in µs,
    /// while `recording`.
    lateness_us: Mutex<Vec<u32>>,
    recording: std::sync::atomic::AtomicBool,
}

struct Outcome {
    cpu_per_keepalive: Duration,
    keepalives: u64,
    rss_per_stream: u64,
    p50: Duration,
    p99: Duration,
}

fn percentile(sorted: &[u32], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    Duration::from_micros(u64::from(sorted[at]))
}

async fn run_design(design: &str, streams: usize, secs: u64) -> Outcome {
    let mut server = ServerProcess::start(design);
    let (_, rss_before) = server.stat();
    let seen = Arc::new(Seen::default());
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        let channel = Endpoint::from_shared(format!("http://{}", server.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        channels.push(channel);
    }
    let mut tasks = Vec::with_capacity(streams);
    for i in 0..streams {
        let mut client = BenchClient::new(channels[i % CONNECTIONS].clone());
        let seen = Arc::clone(&seen);
        tasks.push(tokio::spawn(async move {
            let mut request = Request::new(Order::default());
            request
                .metadata_mut()
                .insert("wp-inline-keepalives", "true".parse().unwrap());
            let response = match client.feed(request).await {
                Ok(response) => response,
                Err(status) => {
                    eprintln!("stream {i}: {status}");
                    return;
                }
            };
            let mut stream = response.into_inner();
            let mut last: Option<Instant> = None;
            while let Some(item) = stream.next().await {
                if let Err(status) = item {
                    eprintln!("stream {i}: {status}");
                    return;
                }
                let now = Instant::now();
                seen.keepalives.fetch_add(1, Relaxed);
                if let Some(last) = last {
                    if seen.recording.load(Relaxed) {
                        let gap = now - last;
                        let late = gap.saturating_sub(INTERVAL).as_micros() as u32;
                        seen.lateness_us.lock().unwrap().push(late);
                    }
                }
                last = Some(now);
            }
        }));
    }
    // Every stream open and past its first keepalive.
    tokio::time::sleep(INTERVAL * 3).await;
    let (cpu0, rss_open) = server.stat();
    let k0 = seen.keepalives.load(Relaxed);
    seen.recording.store(true, Relaxed);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (cpu1, _) = server.stat();
    let k1 = seen.keepalives.load(Relaxed);
    seen.recording.store(false, Relaxed);
    for task in &tasks {
        task.abort();
    }
    drop(server);
    let keepalives = k1 - k0;
    let mut lateness = std::mem::take(&mut *seen.lateness_us.lock().unwrap());
    lateness.sort_unstable();
    Outcome {
        cpu_per_keepalive: (cpu1 - cpu0) / keepalives.max(1) as u32,
        keepalives,
        rss_per_stream: (rss_open.saturating_sub(rss_before) * 1024) / streams as u64,
        p50: percentile(&lateness, 0.5),
        p99: percentile(&lateness, 0.99),
    }
}

fn main() {
    if let Ok(design) = std::env::var("IKA_IDLE_SERVER") {
        return server(&design);
    }
    let benching = std::env::args().any(|a| a == "--bench");
    let streams = env("IDLE_STREAMS", if benching { 50_000 } else { 200 }) as usize;
    let secs = env("IDLE_SECS", if benching { 10 } else { 2 });
    let rounds = env("IDLE_ROUNDS", 1);
    let designs: Vec<String> = std::env::var("IDLE_DESIGNS")
        .unwrap_or_else(|_| "layer,batched,naive".into())
        .split(',')
        .map(str::to_string)
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "idle tonic server streams: {streams} streams over {CONNECTIONS} connections, \
         interval {INTERVAL:?}, {secs} s steady state, server in its own process (1 worker)"
    );
    println!("design | round | keepalives | server CPU per keepalive | RSS per stream | lateness p50 | p99");
    for round in 1..=rounds {
        for design in &designs {
            let outcome = runtime.block_on(run_design(design, streams, secs));
            println!(
                "{design:6} | {round:5} | {:10} | {:>24.2?} | {:>12} B | {:>12.2?} | {:.2?}",
                outcome.keepalives,
                outcome.cpu_per_keepalive,
                outcome.rss_per_stream,
                outcome.p50,
                outcome.p99
            );
        }
    }
}
