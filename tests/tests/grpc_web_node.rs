//! The Node proof: `@connectrpc/connect-node`'s gRPC-Web transport (binary;
//! it has no `-text` mode) with and without the interceptor of `js/`,
//! against tonic servers with tonic-web, directly and through real nginx
//! and HAProxy with 2 s idle timeouts, over HTTP/1.1 and h2.
//!
//! Each stream carries two messages 10.5 s apart: more than five idle
//! timeouts of silence. Cases, run at once by one node process
//! (`js/proof/node.mjs`), each on its own connection:
//! - **inline**: the README's server (keepalives every 500 ms) and a client
//!   with the interceptor: survives everywhere, both messages intact, every
//!   keepalive the server sent removed by the interceptor, none reaching the
//!   application, and the server's `wp-inline-keepalives` header seen;
//! - **no keepalives**: a server with tonic-web only and a plain client:
//!   through either proxy it dies about one idle timeout after the first
//!   message;
//! - **no header**: the README's server and a client without the
//!   interceptor: the server sends it no keepalive at all (so it dies
//!   through the proxies, and survives directly with nothing surfacing).
//!
//! Needs node and `js/` installed and built (`npm ci && npm run build`), and
//! nginx and HAProxy: missing, the test fails under `CI=true` and is skipped
//! elsewhere. Run with `--nocapture` for a line per case.

mod grpc_web_support;
mod tonic_support;

use std::path::Path;
use std::time::Duration;

use grpc_web_support::*;
use inlinekeepalive_tests::proxies::{require, ClientHttp, ProxyConfig, ProxyKind, RunningProxy};

/// Proxies' idle timeout.
const IDLE_TIMEOUT: Duration = Duration::from_secs(2);
/// The server's keepalive interval.
const INTERVAL: Duration = Duration::from_millis(500);
/// Two messages, 10.5 s apart: 5.25 idle timeouts of silence.
const GAP_MS: u64 = 10_500;
const COUNT: u64 = 2;
/// The surviving stream ends no earlier than this ...
const SURVIVED_MIN: Duration = Duration::from_millis(10_400);
/// ... a killed one within this window after the call starts.
const DEATH: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(1_500)..=Duration::from_millis(6_000);
/// Keepalives in the gap at least (21 fit).
const MIN_KEEPALIVES: u64 = 15;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    Inline,
    NoKeepalives,
    NoHeader,
}

impl Case {
    fn label(self) -> &'static str {
        match self {
            Case::Inline => "inline",
            Case::NoKeepalives => "no keepalives",
            Case::NoHeader => "no header",
        }
    }
}

/// Where a case connects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    Direct,
    Proxy(ProxyKind),
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Via::Direct => f.write_str("direct"),
            Via::Proxy(kind) => write!(f, "{kind}"),
        }
    }
}

struct Planned {
    name: String,
    case: Case,
    via: Via,
    /// The plan's size: tells the handler's reports apart.
    size: u32,
}

async fn start_proxy(
    kind: ProxyKind,
    binary: &Path,
    upstream: std::net::SocketAddr,
    http: ClientHttp,
) -> RunningProxy {
    let config = ProxyConfig::new(kind, upstream, IDLE_TIMEOUT)
        .grpc_web(http)
        .with_binary(binary)
        .with_work_root(env!("CARGO_TARGET_TMPDIR"));
    tokio::task::spawn_blocking(move || RunningProxy::start(&config))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("starting {kind}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_node_grpc_web_streams_survive_with_inline_keepalives() {
    let Some(node) = require_node() else { return };
    let Some(nginx) = require(ProxyKind::Nginx) else {
        return;
    };
    let Some(haproxy) = require(ProxyKind::Haproxy) else {
        return;
    };

    let mut keepalives = WebServer::start(Stack::Keepalives, INTERVAL, "http://127.0.0.1").await;
    let mut plain = WebServer::start(Stack::Plain, INTERVAL, "http://127.0.0.1").await;

    let mut planned = Vec::new();
    let mut proxies = Vec::new();
    let mut json_cases = Vec::new();
    for http in [ClientHttp::Http1, ClientHttp::Http2] {
        for via in [
            Via::Direct,
            Via::Proxy(ProxyKind::Nginx),
            Via::Proxy(ProxyKind::Haproxy),
        ] {
            for case in [Case::Inline, Case::NoKeepalives, Case::NoHeader] {
                if via == Via::Direct && case == Case::NoKeepalives {
                    continue; // nothing kills a direct stream
                }
                let server = if case == Case::NoKeepalives {
                    &plain
                } else {
                    &keepalives
                };
                let base = match via {
                    Via::Direct => server.addr,
                    Via::Proxy(kind) => {
                        let binary = if kind == ProxyKind::Nginx {
                            &nginx
                        } else {
                            &haproxy
                        };
                        let proxy = start_proxy(kind, binary, server.addr, http).await;
                        let addr = proxy.addr();
                        proxies.push(proxy);
                        addr
                    }
                };
                let size = 64 + planned.len() as u32;
                let name = format!("{via} {http} {}", case.label());
                json_cases.push(format!(
                    r#"{{"name":"{name}","baseUrl":"http://{base}","httpVersion":"{}","interceptor":{},"plan":{{"count":{COUNT},"gapMs":{GAP_MS},"size":{size}}},"deadlineMs":30000}}"#,
                    match http {
                        ClientHttp::Http1 => "1.1",
                        ClientHttp::Http2 => "2",
                    },
                    case == Case::Inline,
                ));
                planned.push(Planned {
                    name,
                    case,
                    via,
                    size,
                });
            }
        }
    }
    let config = format!(r#"{{"cases":[{}]}}"#, json_cases.join(","));
    let lines = run_node(&node, "proof/node.mjs", &[config], Duration::from_secs(60)).await;
    let results = CaseResult::parse_all(&lines);
    assert_eq!(
        results.len(),
        planned.len(),
        "one result per case:\n{}",
        lines.join("\n")
    );

    // The handlers' reports: the layer's counters per stream, by plan size.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut seen = keepalives.drain_seen();
    seen.extend(plain.drain_seen());
    let logs: Vec<String> = proxies
        .iter()
        .map(|p| format!("{}:\n{}", p.kind(), p.logs()))
        .collect();

    eprintln!(
        "connect-node gRPC-Web, idle timeout {IDLE_TIMEOUT:?}, messages {GAP_MS} ms apart, keepalives every {INTERVAL:?}:"
    );
    for (p, r) in planned.iter().zip(&results) {
        assert_eq!(r.name, p.name);
        let sent = seen
            .iter()
            .find(|s| s.plan.is_some_and(|plan| plan.size == p.size))
            .map(|s| s.stats.as_ref().map_or(0, |stats| stats.keepalives_sent()));
        let summary = format!("{}; server sent {sent:?} keepalives", r.summary());
        eprintln!("  {summary}");
        let context = || format!("{summary}\n{}", logs.join("\n"));
        let sent = sent.unwrap_or_else(|| panic!("no handler report; {}", context()));
        assert_eq!(
            r.surfaced,
            0,
            "no keepalive reaches the application; {}",
            context()
        );
        assert!(r.intact, "{}", context());
        let survives = p.case == Case::Inline || p.via == Via::Direct;
        if survives {
            assert!(r.ok, "expected to survive; {}", context());
            assert_eq!(r.seqs, [0, 1], "{}", context());
            assert!(r.elapsed >= SURVIVED_MIN, "{}", context());
        } else {
            assert!(!r.ok, "expected the proxy to kill it; {}", context());
            assert_eq!(r.seqs, [0], "{}", context());
            assert!(
                DEATH.contains(&r.elapsed),
                "killed after {:?}; {}",
                r.elapsed,
                context()
            );
        }
        match p.case {
            Case::Inline => {
                assert!(sent >= MIN_KEEPALIVES, "{}", context());
                assert_eq!(
                    r.removed,
                    Some(sent),
                    "every keepalive removed; {}",
                    context()
                );
                assert_eq!(r.delivered, Some(COUNT), "{}", context());
                assert_eq!(r.collisions, Some(0), "{}", context());
                assert_eq!(r.announced, Some(true), "{}", context());
            }
            Case::NoHeader | Case::NoKeepalives => assert_eq!(sent, 0, "{}", context()),
        }
    }

    for proxy in proxies {
        tokio::task::spawn_blocking(move || proxy.stop())
            .await
            .unwrap()
            .unwrap();
    }
    keepalives.shutdown().await;
    plain.shutdown().await;
}
