//! Real tonic on both sides, through real nginx (`grpc_pass`) and real HAProxy (`proto h2` on both sides),
//! each with a 1 s idle timeout (see `inlinekeepalive_tests::proxies` and `/work/shared/PROXIES.md`).
//!
//! Every stream carries three messages with an idle gap of 3 s (three idle timeouts) before the second and
//! the third. For each proxy and for server, client and bidirectional streams:
//! 1. plain client, plain server: the proxy kills the idle stream, about one idle timeout after the first
//!    message, and the client sees a `Status` (nginx: `INTERNAL`, from RST_STREAM; HAProxy: see
//!    [`expected_death`]) and only the first message;
//! 2. plain server, client HTTP/2 PINGs every 300 ms while idle: killed the same way, because each proxy
//!    answers PINGs itself and does not count them as stream activity;
//! 3. both layers, inline keepalives every 250 ms: the stream survives both gaps, every message arrives
//!    intact and in order with status OK, the sending side counts keepalives sent and the receiving side
//!    exactly as many removed, and the application never sees one.
//!
//! For bidirectional streams case 3 runs twice, with keepalives in one direction only: server-to-client
//! and client-to-server. The silent side still has its layer (to remove the peer's keepalives) but with a
//! one-hour interval. Server-to-client keepalives keep a bidi stream alive through both proxies. Client-to-
//! server keepalives alone do through HAProxy (data either way re-arms `timeout server`) but **not through
//! nginx with a tonic server**: nginx re-arms `grpc_read_timeout` only when it reads something from the
//! upstream connection. PROXIES.md measured the opposite with a grpcio server, which answers received DATA
//! with WINDOW_UPDATE/BDP PING frames; hyper's h2 (tonic) with its default windows sends nothing back for a
//! few 27-byte keepalives, so nginx sees a silent upstream and kills the stream after 1 s, keepalives
//! flowing or not. (Measured while writing this file: the same case survives when the tonic server's
//! HTTP/2 windows are shrunk to 96 bytes, which makes h2 send a WINDOW_UPDATE every two keepalives.) So
//! behind nginx a bidi stream needs server-to-client keepalives, as a server stream does.
//!
//! The cases of one proxy and stream kind run concurrently, each with its own server, proxy process and
//! connection, so each test takes about as long as its surviving streams (~6 s). Missing proxies fail the
//! tests under `CI=true` and skip them elsewhere (`proxies::require`). Run with `--nocapture` for a line
//! per case.

mod tonic_support;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use inlinekeepalive::tonic::{ClientKeepaliveLayer, Config, KeepaliveStats, ServerKeepaliveLayer};
use inlinekeepalive_tests::proxies::{require, version, ProxyConfig, ProxyKind, RunningProxy};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status, Streaming};
use tonic_support::pb::echo_client::EchoClient;
use tonic_support::pb::{Item, Plan};
use tonic_support::*;
use tower::ServiceBuilder;

/// The idle timeout configured on the proxies.
const IDLE_TIMEOUT: Duration = Duration::from_secs(1);
/// Silence before the second and before the third message: three idle timeouts.
const GAP: Duration = Duration::from_millis(3000);
/// Messages per stream.
const COUNT: u64 = 3;
/// Payload bytes per message.
const SIZE: usize = 64;
/// The inline keepalive interval of a sending side.
const INTERVAL: Duration = Duration::from_millis(250);
/// The interval of a layer that must only remove keepalives: it never sees such an idle period.
const SILENT: Duration = Duration::from_secs(3600);
/// The client's HTTP/2 PING interval in case 2.
const PING_INTERVAL: Duration = Duration::from_millis(300);
/// A killed stream fails no earlier than this after the call starts (its first message goes at once) ...
const DEATH_MIN: Duration = Duration::from_millis(500);
/// ... and no later than this: before the second message would have broken the silence, so the idle
/// timeout, not anything after it, killed the stream.
const DEATH_MAX: Duration = Duration::from_millis(2800);
/// Keepalives a surviving stream must at least have carried: one per idle timeout of both gaps (about 11
/// fit in each gap).
const MIN_KEEPALIVES: u64 = 6;
/// Bounds every call, so a hang fails rather than stalls the test.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// How long to wait for a handler's report of a stream that must have completed ...
const SEEN_TIMEOUT: Duration = Duration::from_secs(5);
/// ... and of a stream the proxy killed (the handler may never learn).
const SEEN_GRACE: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StreamKind {
    /// `Watch`: one request, the server streams.
    Server,
    /// `Upload`: the client streams, one response at the end.
    Client,
    /// `Chat`: the client streams, the server echoes each message at once.
    Bidi,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    /// Plain client, plain server.
    Nothing,
    /// Plain server; the client sends HTTP/2 PINGs every [`PING_INTERVAL`], idle or not.
    PingsOnly,
    /// Both layers; each side sends keepalives every [`INTERVAL`] if told so, else its interval is
    /// [`SILENT`].
    Inline {
        server_sends: bool,
        client_sends: bool,
    },
}

impl Case {
    /// Whether the stream is expected to survive the gaps through `proxy` (see the module docs for nginx
    /// and client-to-server keepalives on a bidi stream).
    fn survives(self, proxy: ProxyKind, stream: StreamKind) -> bool {
        match self {
            Case::Nothing | Case::PingsOnly => false,
            Case::Inline { server_sends, .. } => {
                proxy != ProxyKind::Nginx || stream != StreamKind::Bidi || server_sends
            }
        }
    }

    fn label(self) -> &'static str {
        match self {
            Case::Nothing => "no keepalives",
            Case::PingsOnly => "HTTP/2 PINGs only",
            Case::Inline {
                server_sends: true,
                client_sends: true,
            } => "inline, both ways",
            Case::Inline {
                server_sends: true,
                client_sends: false,
            } => "inline, server->client",
            Case::Inline {
                server_sends: false,
                client_sends: true,
            } => "inline, client->server",
            Case::Inline { .. } => "inline, layers only",
        }
    }
}

/// The cases of one stream kind. For server and client streams, "both ways" only means both layers are
/// installed: the other direction carries one message and ends at once (server stream's request) or is
/// never idle (client stream's response), so only the streaming side sends keepalives.
fn cases(stream: StreamKind) -> Vec<Case> {
    let mut cases = vec![Case::Nothing, Case::PingsOnly];
    match stream {
        StreamKind::Server | StreamKind::Client => cases.push(Case::Inline {
            server_sends: true,
            client_sends: true,
        }),
        StreamKind::Bidi => cases.extend([
            Case::Inline {
                server_sends: true,
                client_sends: false,
            },
            Case::Inline {
                server_sends: false,
                client_sends: true,
            },
        ]),
    }
    cases
}

/// What the client sees when `proxy` kills an idle stream of kind `stream`: the code, and a fragment of
/// the message where the code alone is ambiguous. This is tonic 0.14's reading of what PROXIES.md
/// measured on the wire, which differs from grpcio's for HAProxy's client and bidi streams.
fn expected_death(proxy: ProxyKind, stream: StreamKind) -> (Code, &'static str) {
    match (proxy, stream) {
        // RST_STREAM INTERNAL_ERROR (grpc_read_timeout) or PROTOCOL_ERROR (client_body_timeout); tonic maps
        // both to INTERNAL.
        (ProxyKind::Nginx, _) => (Code::Internal, "h2 protocol error"),
        // An empty DATA frame with END_STREAM and no grpc-status trailers.
        (ProxyKind::Haproxy, StreamKind::Server) => (Code::Unknown, "missing grpc-status trailer"),
        // HTTP 504 with an HTML body. grpcio maps the status to UNAVAILABLE; tonic decodes the body as gRPC
        // first, fails on its first byte (`<` as a compression flag) and reports INTERNAL, naming the 504.
        (ProxyKind::Haproxy, StreamKind::Client) => (Code::Internal, "504 Gateway Timeout"),
        // DATA+END_STREAM, then RST_STREAM CANCEL. grpcio reports CANCELLED; hyper ends the body cleanly at
        // END_STREAM (it never surfaces the CANCEL after it), so tonic sees the missing trailers.
        (ProxyKind::Haproxy, StreamKind::Bidi) => (Code::Unknown, "missing grpc-status trailer"),
    }
}

fn keepalive_config(sends: bool) -> Config {
    Config::new(if sends { INTERVAL } else { SILENT }).expect("valid interval")
}

/// One case's server, proxy and connection.
struct Rig {
    case: Case,
    server: TestServer,
    proxy: RunningProxy,
    channel: Channel,
}

async fn rig(kind: ProxyKind, binary: &Path, case: Case) -> Rig {
    let layer = match case {
        Case::Inline { server_sends, .. } => {
            Some(ServerKeepaliveLayer::new(keepalive_config(server_sends)))
        }
        Case::Nothing | Case::PingsOnly => None,
    };
    let server = start_server(layer).await;
    let config = ProxyConfig::new(kind, server.addr, IDLE_TIMEOUT)
        .with_binary(binary)
        .with_work_root(env!("CARGO_TARGET_TMPDIR"));
    // Starting blocks (briefly); keep it off the runtime's workers.
    let proxy = tokio::task::spawn_blocking(move || RunningProxy::start(&config))
        .await
        .expect("start task panicked")
        .unwrap_or_else(|e| panic!("starting {kind}: {e}"));
    let mut endpoint = Endpoint::from_shared(format!("http://{}", proxy.addr())).unwrap();
    if case == Case::PingsOnly {
        endpoint = endpoint
            .http2_keep_alive_interval(PING_INTERVAL)
            .keep_alive_while_idle(true)
            .keep_alive_timeout(Duration::from_secs(5));
    }
    let channel = endpoint
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connecting to {kind} at {}: {e}", proxy.addr()));
    Rig {
        case,
        server,
        proxy,
        channel,
    }
}

/// What the client saw of one call.
#[derive(Debug)]
struct Call {
    /// Sequence numbers received, in order: the items of a server or bidi stream, the summary's `seqs` of a
    /// client stream.
    received: Vec<u64>,
    /// Received items that were not `item(seq, SIZE)` (a keepalive decoded as a message would be one).
    damaged: Vec<Item>,
    /// How the call ended.
    end: Result<(), Status>,
    /// From the call's start to its end.
    elapsed: Duration,
    /// The client layer's counters (from the response extensions), if it had a layer and a response.
    stats: Option<KeepaliveStats>,
}

type StdError = Box<dyn std::error::Error + Send + Sync + 'static>;

async fn call(stream: StreamKind, case: Case, channel: Channel) -> Call {
    match case {
        Case::Inline { client_sends, .. } => {
            let mut layer = ClientKeepaliveLayer::new(keepalive_config(client_sends));
            if stream == StreamKind::Client {
                // A tonic server sends the response headers of a client stream (and with them
                // `wp-inline-keepalives: true`) only when the handler returns, i.e. after the request
                // stream ended; a proxy can only forward them later still. Waiting for them would mean no
                // keepalive during the stream, so the client must know beforehand: assumed here (a real
                // client would use a probe, `with_probe`). A bidi stream learns it from its response
                // headers, which the `Chat` handler sends at once and both proxies forward at once.
                layer = layer.assume_server_support();
            }
            let channel = ServiceBuilder::new().layer(layer).service(channel);
            call_with(stream, EchoClient::new(channel)).await
        }
        Case::Nothing | Case::PingsOnly => call_with(stream, EchoClient::new(channel)).await,
    }
}

async fn call_with<T>(stream: StreamKind, mut client: EchoClient<T>) -> Call
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<StdError>,
    T::ResponseBody: http_body::Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<StdError> + Send,
{
    let start = Instant::now();
    let schedule = || {
        let mut items = vec![(Duration::ZERO, item(0, SIZE))];
        items.extend((1..COUNT).map(|seq| (GAP, item(seq, SIZE))));
        scheduled(items)
    };
    let call = async {
        match stream {
            StreamKind::Server => {
                let plan = Plan {
                    count: COUNT,
                    gap_ms: GAP.as_millis() as u32,
                    size: SIZE as u32,
                    first_gap_ms: 0,
                };
                receive(start, client.watch(plan).await).await
            }
            StreamKind::Bidi => receive(start, client.chat(schedule()).await).await,
            StreamKind::Client => match client.upload(schedule()).await {
                Ok(response) => Call {
                    stats: response.extensions().get::<KeepaliveStats>().cloned(),
                    received: response.into_inner().seqs,
                    damaged: Vec::new(),
                    end: Ok(()),
                    elapsed: start.elapsed(),
                },
                Err(status) => Call {
                    received: Vec::new(),
                    damaged: Vec::new(),
                    end: Err(status),
                    elapsed: start.elapsed(),
                    stats: None,
                },
            },
        }
    };
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| panic!("{stream:?} call still running after {CALL_TIMEOUT:?}"))
}

/// Receives a response stream message by message, keeping what arrived before an error.
async fn receive(
    start: Instant,
    response: Result<tonic::Response<Streaming<Item>>, Status>,
) -> Call {
    let mut call = Call {
        received: Vec::new(),
        damaged: Vec::new(),
        end: Ok(()),
        elapsed: Duration::ZERO,
        stats: None,
    };
    match response {
        Err(status) => call.end = Err(status),
        Ok(response) => {
            call.stats = response.extensions().get::<KeepaliveStats>().cloned();
            let mut messages = response.into_inner();
            call.end = loop {
                match messages.message().await {
                    Ok(Some(item)) => {
                        call.received.push(item.seq);
                        if !intact(&item, SIZE) || item.collision != 0 {
                            call.damaged.push(item);
                        }
                    }
                    Ok(None) => break Ok(()),
                    Err(status) => break Err(status),
                }
            };
        }
    }
    call.elapsed = start.elapsed();
    call
}

/// One finished case.
struct Outcome {
    case: Case,
    call: Call,
    /// What the handler saw, if it reported.
    seen: Option<Seen>,
    proxy: RunningProxy,
    server: TestServer,
}

fn fmt_stats(stats: Option<&KeepaliveStats>) -> String {
    match stats {
        Some(s) => format!(
            "sent={} removed={} collisions={} frames={}",
            s.keepalives_sent(),
            s.keepalives_removed(),
            s.collisions(),
            s.messages_passed()
        ),
        None => "-".to_owned(),
    }
}

impl Outcome {
    fn summary(&self) -> String {
        let c = &self.call;
        let end = match &c.end {
            Ok(()) => "OK".to_owned(),
            Err(s) => format!("{:?} ({})", s.code(), s.message()),
        };
        let seen = match &self.seen {
            Some(seen) => format!(
                "items={:?} error={:?} layer: {}",
                seen.items.iter().map(|i| i.seq).collect::<Vec<_>>(),
                seen.error.as_ref().map(|s| s.code()),
                fmt_stats(seen.stats.as_ref())
            ),
            None => "no report".to_owned(),
        };
        format!(
            "{:<24} {end} after {:.2?}; client got {:?}, damaged {}, layer: {}; server {seen}",
            self.case.label(),
            c.elapsed,
            c.received,
            c.damaged.len(),
            fmt_stats(c.stats.as_ref()),
        )
    }
}

/// Runs every case of `stream` through `kind` concurrently and checks each outcome.
async fn run(kind: ProxyKind, stream: StreamKind) {
    let Some(binary) = require(kind) else { return };
    let version = version(kind, &binary).unwrap_or_else(|e| e.to_string());

    // Everything is set up before any call starts, so no case's stream waits on another's setup.
    let mut rigs = Vec::new();
    for case in cases(stream) {
        rigs.push(rig(kind, &binary, case).await);
    }
    let tasks: Vec<_> = rigs
        .iter()
        .map(|rig| tokio::spawn(call(stream, rig.case, rig.channel.clone())))
        .collect();
    let mut outcomes = Vec::new();
    for (rig, task) in rigs.into_iter().zip(tasks) {
        let call = task.await.expect("call task panicked");
        let Rig {
            case,
            mut server,
            proxy,
            channel,
        } = rig;
        drop(channel);
        let wait = if call.end.is_ok() {
            SEEN_TIMEOUT
        } else {
            SEEN_GRACE
        };
        let seen = tokio::time::timeout(wait, server.seen.recv())
            .await
            .ok()
            .flatten();
        outcomes.push(Outcome {
            case,
            call,
            seen,
            proxy,
            server,
        });
    }

    let label = format!("{kind} {stream:?} stream");
    eprintln!("{label} ({version}; idle timeout {IDLE_TIMEOUT:?}, gaps {GAP:?}):");
    for o in &outcomes {
        eprintln!("  {}", o.summary());
    }
    for o in &outcomes {
        let context = || {
            format!(
                "{label}, {}: {}\n{kind} logs:\n{}",
                o.case.label(),
                o.summary(),
                o.proxy.logs()
            )
        };
        if o.case.survives(kind, stream) {
            assert_survived(stream, o, &context);
        } else {
            assert_killed(kind, stream, o, &context);
        }
    }

    // Stop the proxies first: a proxy may hold idle upstream connections, which graceful shutdown waits for.
    for o in outcomes {
        let Outcome { proxy, server, .. } = o;
        tokio::task::spawn_blocking(move || proxy.stop())
            .await
            .expect("stop task panicked")
            .unwrap_or_else(|e| panic!("stopping {kind}: {e}"));
        server.shutdown().await;
    }
}

fn assert_killed(kind: ProxyKind, stream: StreamKind, o: &Outcome, context: &dyn Fn() -> String) {
    let c = &o.call;
    let status = match &c.end {
        Ok(()) => panic!("expected {kind} to kill the idle stream; {}", context()),
        Err(status) => status,
    };
    let (code, fragment) = expected_death(kind, stream);
    assert_eq!(
        status.code(),
        code,
        "how {kind} kills an idle {stream:?} stream; {}",
        context()
    );
    assert!(
        status.message().contains(fragment),
        "expected {fragment:?} in the message; {}",
        context()
    );
    assert!(
        (DEATH_MIN..=DEATH_MAX).contains(&c.elapsed),
        "killed after {:?}, expected about the {IDLE_TIMEOUT:?} idle timeout after the first message \
         (bounds {DEATH_MIN:?}..={DEATH_MAX:?}); {}",
        c.elapsed,
        context()
    );
    let expected: &[u64] = match stream {
        // The first message (or its echo) crossed before the silence; nothing after it.
        StreamKind::Server | StreamKind::Bidi => &[0],
        // The summary never came.
        StreamKind::Client => &[],
    };
    assert_eq!(c.received, expected, "{}", context());
    assert!(c.damaged.is_empty(), "{}", context());
    if let Some(seen) = &o.seen {
        assert!(
            (seen.items.len() as u64) < COUNT,
            "the server got the whole stream the client lost; {}",
            context()
        );
    }
    if let Case::Inline { .. } = o.case {
        // nginx, bidi, client-to-server keepalives only: they flowed through nginx and were removed, and
        // the stream died anyway.
        let client = c
            .stats
            .as_ref()
            .unwrap_or_else(|| panic!("no client layer stats; {}", context()));
        let server = o
            .seen
            .as_ref()
            .and_then(|seen| seen.stats.as_ref())
            .unwrap_or_else(|| panic!("no server layer stats; {}", context()));
        assert!(client.keepalives_sent() >= 1, "{}", context());
        assert!(server.keepalives_removed() >= 1, "{}", context());
        assert_eq!(client.keepalives_removed() + server.collisions(), 0);
    }
}

fn assert_survived(stream: StreamKind, o: &Outcome, context: &dyn Fn() -> String) {
    let c = &o.call;
    let Case::Inline {
        server_sends,
        client_sends,
    } = o.case
    else {
        unreachable!("only inline cases survive")
    };
    assert!(
        c.end.is_ok(),
        "expected the stream to survive; {}",
        context()
    );
    let all: Vec<u64> = (0..COUNT).collect();
    assert_eq!(c.received, all, "every message, in order; {}", context());
    assert!(
        c.damaged.is_empty(),
        "intact, no keepalive surfaced; {}",
        context()
    );
    let seen = o
        .seen
        .as_ref()
        .unwrap_or_else(|| panic!("no handler report; {}", context()));
    assert!(seen.error.is_none(), "{}", context());
    if stream != StreamKind::Server {
        // The request stream, as the handler saw it: every message, intact, no keepalive among them.
        assert_in_order(&seen.items, COUNT, SIZE);
    }
    let client = c
        .stats
        .as_ref()
        .unwrap_or_else(|| panic!("no client layer stats; {}", context()));
    let server = seen
        .stats
        .as_ref()
        .unwrap_or_else(|| panic!("no server layer stats; {}", context()));
    assert_eq!(
        client.peer_supports_keepalives(),
        Some(true),
        "{}",
        context()
    );
    assert_eq!(
        client.collisions() + server.collisions(),
        0,
        "{}",
        context()
    );

    // Server to client: on a server stream always; on a bidi stream when the server sends.
    let server_to_client = match stream {
        StreamKind::Server => true,
        StreamKind::Client => false,
        StreamKind::Bidi => server_sends,
    };
    // Client to server: on a client stream always; on a bidi stream when the client sends.
    let client_to_server = match stream {
        StreamKind::Server => false,
        StreamKind::Client => true,
        StreamKind::Bidi => client_sends,
    };
    if server_to_client {
        assert!(
            server.keepalives_sent() >= MIN_KEEPALIVES,
            "server keepalives; {}",
            context()
        );
    } else {
        assert_eq!(server.keepalives_sent(), 0, "{}", context());
    }
    if client_to_server {
        assert!(
            client.keepalives_sent() >= MIN_KEEPALIVES,
            "client keepalives; {}",
            context()
        );
    } else {
        assert_eq!(client.keepalives_sent(), 0, "{}", context());
    }
    // Every keepalive crossed the proxy and was removed on the other side, and only keepalives were.
    assert_eq!(
        client.keepalives_removed(),
        server.keepalives_sent(),
        "server-to-client keepalives removed by the client; {}",
        context()
    );
    assert_eq!(
        server.keepalives_removed(),
        client.keepalives_sent(),
        "client-to-server keepalives removed by the server; {}",
        context()
    );
    let (to_client, to_server) = match stream {
        StreamKind::Server => (COUNT, 1),
        StreamKind::Client => (1, COUNT),
        StreamKind::Bidi => (COUNT, COUNT),
    };
    assert_eq!(client.messages_passed(), to_client, "{}", context());
    assert_eq!(server.messages_passed(), to_server, "{}", context());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_server_stream() {
    run(ProxyKind::Nginx, StreamKind::Server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_client_stream() {
    run(ProxyKind::Nginx, StreamKind::Client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_bidi_stream() {
    run(ProxyKind::Nginx, StreamKind::Bidi).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_server_stream() {
    run(ProxyKind::Haproxy, StreamKind::Server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_client_stream() {
    run(ProxyKind::Haproxy, StreamKind::Client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_bidi_stream() {
    run(ProxyKind::Haproxy, StreamKind::Bidi).await;
}
