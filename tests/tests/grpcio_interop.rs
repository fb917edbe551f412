//! Interoperability with a gRPC stack that is not tonic: Python grpcio (the
//! gRPC C core), run as `tests/python/grpcio_peer.py` with no generated code.
//!
//! 1. A grpcio client watches through albsim (idle timeout 800 ms) a tonic
//!    server with `ServerKeepaliveLayer`: having sent
//!    `wp-inline-keepalives: true`, it gets the header back, skips the
//!    server's keepalives (as Waypoint's Go client does) and its stream
//!    survives gaps of 2.5 idle timeouts; without the header the same plan
//!    dies at the first gap and carries no keepalive.
//! 2. A grpcio server sends keepalives between its items, plus one
//!    collision message (field 100000000 as a varint, `Item.collision`): the
//!    tonic client with `ClientKeepaliveLayer` removes exactly the keepalives
//!    grpcio sent and delivers the rest, the collision included, in order.
//!    Again with the call gzip compressed: grpcio compresses only messages
//!    that gzip shrinks, so its canonical 22-byte keepalives stay
//!    uncompressed among compressed items, and a 58-byte keepalive (see
//!    `PADDED_KEEPALIVE` in the script) is what arrives compressed.
//! 3. A grpcio client stream with keepalives after each item (so it also
//!    ends on keepalives): the tonic server with `ServerKeepaliveLayer` hands
//!    the handler only the items.
//!
//! Needs `python3` (or the interpreter named by `INLINEKEEPALIVE_PYTHON`)
//! with grpcio (`tests/python/requirements.txt`). Missing, the tests fail
//! under `CI=true` and are skipped elsewhere, as the nginx and HAProxy tests
//! are (`proxies::require`).

mod tonic_support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use inlinekeepalive::core::{classify, Classification, Encoding};
use inlinekeepalive::tonic::{ClientKeepaliveLayer, Config, ServerKeepaliveLayer};
use inlinekeepalive_testkit::inflate::reference_inflate;
use inlinekeepalive_tests::albsim::{AlbSim, AlbSimConfig, Direction};
use inlinekeepalive_tests::external::missing;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::codec::CompressionEncoding;
use tonic_support::pb::echo_client::EchoClient;
use tonic_support::pb::Plan;
use tonic_support::*;
use tower::ServiceBuilder;

/// Names the interpreter explicitly, like `INLINEKEEPALIVE_NGINX` does nginx.
const PYTHON_ENV: &str = "INLINEKEEPALIVE_PYTHON";
const INSTALL_GRPCIO: &str = "python3 -m pip install -r tests/python/requirements.txt";
/// Bounds every Python child: far above what any case needs (5 s at most).
const CHILD_TIMEOUT: Duration = Duration::from_secs(20);

const IDLE_TIMEOUT: Duration = Duration::from_millis(800);
/// Four keepalives per idle timeout: survival does not hang on one of them.
const KEEPALIVE_INTERVAL: Duration = Duration::from_millis(200);
/// 2.5 idle timeouts: a stream that survives it was kept alive.
const GAP_MS: u32 = 2000;

/// The Python interpreter, if it runs and imports grpcio.
fn require_python() -> Option<PathBuf> {
    let python = std::env::var_os(PYTHON_ENV).map_or_else(|| "python3".into(), PathBuf::from);
    let probe = std::process::Command::new(&python)
        .args(["-c", "import grpc"])
        .stdin(Stdio::null())
        .output();
    match probe {
        Err(e) => missing(
            &format!("python3 (`{}`: {e})", python.display()),
            &format!("install python3, or set {PYTHON_ENV} to an interpreter"),
        ),
        Ok(output) if !output.status.success() => missing(
            &format!("grpcio, importable by `{}`,", python.display()),
            INSTALL_GRPCIO,
        ),
        Ok(_) => Some(python),
    }
}

/// A running `grpcio_peer.py`. Dropping it kills this child, by its own PID,
/// so a failed or timed-out test leaves no Python process behind.
struct PythonChild {
    child: Child,
    command: String,
}

impl PythonChild {
    /// Starts `grpcio_peer.py <args>`; its stderr goes to the test's unless
    /// `capture_stderr` (a client's stderr goes into the failure message).
    fn spawn(python: &Path, args: &[&str], capture_stderr: bool) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/grpcio_peer.py");
        let command = format!("{} grpcio_peer.py {}", python.display(), args.join(" "));
        let child = Command::new(python)
            .arg(&script)
            .args(args)
            // The C core's routine log lines would only be noise.
            .env("GRPC_VERBOSITY", "ERROR")
            // A server serves until this closes; clients do not read it.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(if capture_stderr {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .unwrap_or_else(|e| panic!("starting {command}: {e}"));
        Self { child, command }
    }

    /// Runs a client to its end and parses its `key=value` lines.
    async fn report(mut self) -> Report {
        let mut stdout = self.child.stdout.take().expect("piped");
        let mut stderr = self.child.stderr.take().expect("piped");
        let (mut out, mut err) = (String::new(), String::new());
        let run = async {
            let (o, e, status) = tokio::join!(
                stdout.read_to_string(&mut out),
                stderr.read_to_string(&mut err),
                self.child.wait()
            );
            o.and(e).and(status)
        };
        let status = tokio::time::timeout(CHILD_TIMEOUT, run)
            .await
            .unwrap_or_else(|_| panic!("{} still running after {CHILD_TIMEOUT:?}", self.command))
            .unwrap_or_else(|e| panic!("{}: {e}", self.command));
        assert!(
            status.success(),
            "{} failed ({status}):\n{out}\n{err}",
            self.command
        );
        Report::parse(&out)
    }
}

impl Drop for PythonChild {
    fn drop(&mut self) {
        // SIGKILL to this child's PID; a no-op once it has been waited for.
        let _ = self.child.start_kill();
    }
}

/// What a Python client printed, one `key=value` per line.
#[derive(Debug)]
struct Report(HashMap<String, String>);

impl Report {
    fn parse(text: &str) -> Self {
        let pairs = text.lines().filter_map(|l| l.split_once('='));
        Self(pairs.map(|(k, v)| (k.into(), v.into())).collect())
    }

    fn get(&self, key: &str) -> &str {
        self.0
            .get(key)
            .unwrap_or_else(|| panic!("no {key} in {self:?}"))
    }

    fn number(&self, key: &str) -> u64 {
        self.get(key).parse().expect("a number")
    }

    fn numbers(&self, key: &str) -> Vec<u64> {
        let list = self.get(key);
        let items = list.split(',').filter(|s| !s.is_empty());
        items.map(|s| s.parse().expect("a number")).collect()
    }
}

/// Starts the grpcio server and returns it with its loopback address.
async fn start_python_server(python: &Path, args: &[&str]) -> (PythonChild, SocketAddr) {
    let mut server = PythonChild::spawn(python, &[&["serve"], args].concat(), false);
    let stdout = server.child.stdout.take().expect("piped");
    let line = tokio::time::timeout(CHILD_TIMEOUT, BufReader::new(stdout).lines().next_line())
        .await
        .expect("the grpcio server reports its port in time")
        .expect("reading its stdout")
        .expect("the grpcio server exited before reporting its port");
    let port = line
        .strip_prefix("port=")
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("not a port line: {line:?}"));
    (server, SocketAddr::from(([127, 0, 0, 1], port)))
}

fn keepalive_config() -> Config {
    Config::new(KEEPALIVE_INTERVAL).unwrap()
}

/// Case 1: a grpcio `Watch` through albsim to a tonic server with the layer.
async fn grpcio_watch_through_albsim(
    python: &Path,
    announce: bool,
) -> (Report, AlbSim, Option<u64>) {
    let mut server = start_server(Some(ServerKeepaliveLayer::new(keepalive_config()))).await;
    let albsim = AlbSim::start(AlbSimConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        server.addr,
        IDLE_TIMEOUT,
    ))
    .await
    .unwrap();
    let target = albsim.local_addr().to_string();
    let gap = GAP_MS.to_string();
    let mut args = vec!["watch", "--target", &target, "--count", "3"];
    args.extend(["--gap-ms", &gap, "--size", "64"]);
    if !announce {
        args.push("--no-announce");
    }
    let report = PythonChild::spawn(python, &args, true).report().await;
    eprintln!("grpcio client (announce: {announce}): {report:?}");
    let seen = server.next_seen().await;
    let sent = seen.stats.map(|s| s.keepalives_sent());
    assert_eq!(
        server.wire.response_frames().keepalives as u64,
        sent.unwrap_or(0),
        "the layer's count matches the server's wire"
    );
    server.shutdown().await;
    (report, albsim, sent)
}

#[tokio::test]
async fn grpcio_client_skips_server_keepalives_and_survives_albsim() {
    let Some(python) = require_python() else {
        return;
    };
    let (report, albsim, sent) = grpcio_watch_through_albsim(&python, true).await;
    assert_eq!(report.get("error"), "none", "{report:?}");
    assert_eq!(report.numbers("seqs"), [0, 1, 2], "all items, in order");
    assert_eq!(report.get("intact"), "true");
    assert_eq!(
        report.get("header"),
        "true",
        "the server answers the header"
    );
    assert_eq!(albsim.stats().idle_resets(), 0);
    // Every keepalive the server sent crossed albsim and was skipped by
    // grpcio; two gaps of 2 s at 200 ms give about 20 (bound: 2 per gap).
    let keepalives = report.number("keepalives");
    assert_eq!(Some(keepalives), sent, "{report:?}");
    assert!(keepalives >= 4, "{report:?}");
}

#[tokio::test]
async fn grpcio_client_without_the_header_gets_no_keepalives_and_dies() {
    let Some(python) = require_python() else {
        return;
    };
    let (report, albsim, sent) = grpcio_watch_through_albsim(&python, false).await;
    // albsim resets the idle stream with INTERNAL_ERROR, as nginx does.
    assert_eq!(report.get("error"), "INTERNAL", "{report:?}");
    assert_eq!(report.numbers("seqs"), [0], "only the item before the gap");
    assert_eq!(report.number("keepalives"), 0);
    assert_eq!(sent, Some(0));
    let resets = albsim
        .stats()
        .direction(Direction::ServerToClient)
        .idle_resets;
    assert_eq!(resets, 1);
}

/// Keepalive frames of a raw response body, (uncompressed, compressed),
/// and the number of frames.
fn count_keepalive_frames(mut raw: &[u8]) -> (u64, u64, u64) {
    let (mut plain, mut compressed, mut all) = (0, 0, 0);
    let is_keepalive = |payload: &[u8]| classify(payload) == Classification::Keepalive;
    while raw.len() >= 5 {
        let len = u32::from_be_bytes([raw[1], raw[2], raw[3], raw[4]]) as usize;
        let payload = &raw[5..5 + len];
        match raw[0] {
            0 => plain += u64::from(is_keepalive(payload)),
            // reference_inflate gives up past keepalive size: an item.
            _ => {
                let inflated = reference_inflate(Encoding::Gzip, payload);
                compressed += u64::from(inflated.is_some_and(|p| is_keepalive(&p)));
            }
        }
        all += 1;
        raw = &raw[5 + len..];
    }
    assert!(raw.is_empty(), "whole frames");
    (plain, compressed, all)
}

const ITEMS: u64 = 5;
const COLLISION_SEQ: u64 = 2;
/// Large and repetitive, so that gzip shrinks the items.
const ITEM_SIZE: usize = 256;
/// Small, so that the layer examines the collision (at most 64 bytes).
const COLLISION_SIZE: usize = 8;

/// Case 2: the tonic client layer against a grpcio server's keepalives.
async fn tonic_client_of_grpcio_server(python: &Path, gzip: bool) {
    let collision = COLLISION_SEQ.to_string();
    let size = COLLISION_SIZE.to_string();
    let mut args = vec!["--keepalives", "3", "--collision-seq", &collision];
    args.extend(["--collision-size", &size]);
    if gzip {
        args.push("--gzip");
    }
    let (_server, addr) = start_python_server(python, &args).await;
    let wire = Wire::default();
    // The recorder next to the channel sees the bytes as grpcio sent them.
    let channel = ServiceBuilder::new()
        .layer(ClientKeepaliveLayer::new(keepalive_config()))
        .layer(RecordLayer(wire.clone()))
        .service(connect(addr).await);
    let mut client = EchoClient::new(channel).accept_compressed(CompressionEncoding::Gzip);
    let plan = Plan {
        count: ITEMS,
        gap_ms: 100,
        size: ITEM_SIZE as u32,
        first_gap_ms: 0,
    };
    let response = client.watch(plan).await.unwrap();
    let stats = stats_of(&response);
    let mut stream = response.into_inner();
    let mut items = Vec::new();
    while let Some(item) = stream.message().await.unwrap() {
        items.push(item);
    }
    let trailers = stream.trailers().await.unwrap().expect("trailers");
    let sent: u64 = trailers
        .get("ika-keepalives-sent")
        .expect("grpcio reports what it sent")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();

    let seqs: Vec<u64> = items.iter().map(|i| i.seq).collect();
    assert_eq!(
        seqs,
        (0..ITEMS).collect::<Vec<_>>(),
        "only the items, in order"
    );
    for item in &items {
        let (size, collision) = if item.seq == COLLISION_SEQ {
            (COLLISION_SIZE, 1)
        } else {
            (ITEM_SIZE, 0)
        };
        assert!(intact(item, size), "item {} intact", item.seq);
        assert_eq!(item.collision, collision, "item {}", item.seq);
    }
    // Three between each two items, all seen by grpcio's peer (this client
    // announced support) and all removed.
    assert_eq!(sent, 3 * (ITEMS - 1));
    assert_eq!(stats.keepalives_removed(), sent, "{stats:?}");
    assert_eq!(stats.collisions(), 1, "delivered, and counted");
    // grpcio's handler answered the header, and the layer read it.
    assert_eq!(stats.peer_supports_keepalives(), Some(true));
    assert_eq!(stats.messages_passed(), ITEMS);

    let (plain, compressed, all) = count_keepalive_frames(&wire.responses.lock().unwrap());
    eprintln!("grpcio sent {sent} keepalives ({compressed} compressed), {stats:?}");
    assert_eq!(all, ITEMS + sent, "one frame per message");
    if gzip {
        // grpcio compressed the padded keepalive of each gap (one in three)
        // and sent the canonical ones as they are: gzip would grow them.
        assert_eq!((plain, compressed), (sent - sent / 3, sent / 3));
    } else {
        assert_eq!((plain, compressed), (sent, 0));
    }
}

#[tokio::test]
async fn tonic_client_removes_grpcio_server_keepalives() {
    let Some(python) = require_python() else {
        return;
    };
    tonic_client_of_grpcio_server(&python, false).await;
}

#[tokio::test]
async fn tonic_client_removes_gzip_compressed_grpcio_server_keepalives() {
    let Some(python) = require_python() else {
        return;
    };
    tonic_client_of_grpcio_server(&python, true).await;
}

#[tokio::test]
async fn tonic_server_removes_grpcio_client_stream_keepalives() {
    let Some(python) = require_python() else {
        return;
    };
    let mut server = start_server(Some(ServerKeepaliveLayer::new(keepalive_config()))).await;
    let target = server.addr.to_string();
    let args = [
        "upload", "--target", &target, "--count", "4", "--size", "32",
    ];
    let args = [&args[..], &["--keepalives", "2"]].concat();
    let report = PythonChild::spawn(&python, &args, true).report().await;
    eprintln!("grpcio client: {report:?}");
    let seen = server.next_seen().await;
    let wire_keepalives = server.wire.request_frames().keepalives as u64;
    server.shutdown().await;

    // Two after each of the four items; the summary counts only the items.
    let sent = report.number("sent");
    assert_eq!(sent, 8);
    assert_eq!(report.number("count"), 4, "{report:?}");
    assert_eq!(report.numbers("seqs"), [0, 1, 2, 3], "{report:?}");
    assert_eq!(seen.method, "upload");
    assert!(seen.error.is_none(), "{:?}", seen.error);
    assert_in_order(&seen.items, 4, 32);
    assert_eq!(wire_keepalives, sent, "grpcio put them on the wire");
    let stats = seen.stats.expect("the layer's stats");
    assert_eq!(stats.keepalives_removed(), sent, "{stats:?}");
}
