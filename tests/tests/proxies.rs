//! Real nginx and HAProxy between a gRPC-shaped h2c client and upstream, at the HTTP/2 wire level.
//!
//! Each proxy runs with a 1 s idle timeout; every stream has one message, an idle gap of 3.5 s, then a second
//! message. The cases document what an inline keepalive has to beat:
//! - (a) an idle server stream dies after about the idle timeout;
//! - (b) it dies the same way with client HTTP/2 PINGs every 300 ms (the proxy answers them itself);
//! - (c) with the 27-byte keepalive message sent by the upstream every 300 ms it survives, and every byte,
//!   keepalives included, reaches the client (nothing filters them at this level);
//! - (d) an idle client stream (request body) dies, and survives with keepalives sent by the client.
//!
//! A direct run (no proxy) shows the client and upstream themselves keep idle streams open. The five cases of
//! one proxy run concurrently on separate connections, so the file takes a few seconds.
//! Missing proxies fail the tests under `CI=true` and skip them elsewhere (see `proxies::require`).
//! Run with `--nocapture` to see the measured outcome of every case.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use http::StatusCode;
use inlinekeepalive_tests::h2grpc::{
    call, keepalives, schedule_bytes, CallOutcome, CallSpec, GrpcServer, Scheduled, ServerBehavior,
    ServerReport, StreamEnd, KEEPALIVE_FRAME,
};
use inlinekeepalive_tests::proxies::{
    find_binary, require, version, ProxyConfig, ProxyError, ProxyKind, RunningProxy,
};
use tokio::time::Instant;

/// The idle timeout configured on the proxies.
const IDLE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long each stream stays idle between its two messages.
const GAP: Duration = Duration::from_millis(3500);
/// The keepalive and PING interval.
const TICK: Duration = Duration::from_millis(300);
/// Keepalives that fit in the gap: 11 x 300 ms, then the second message 200 ms later.
const GAP_KEEPALIVES: usize = 11;
/// An idle stream must die no earlier than this after its last data ...
const DEATH_AFTER_MIN: Duration = Duration::from_millis(500);
/// ... and no later than this (well before the gap ends, so the proxy, not the stream's end, killed it).
const DEATH_AFTER_MAX: Duration = Duration::from_millis(3200);
/// How long to wait for the upstream's report of a stream after the client is done with it.
const REPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for reports that may never come (streams the proxy killed).
const REPORT_GRACE: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    /// (a) server stream, nothing during the gap.
    ServerIdle,
    /// (b) server stream, client PINGs every [`TICK`].
    ServerIdlePings,
    /// (c) server stream, upstream keepalives every [`TICK`].
    ServerKeepalive,
    /// (d) client stream, nothing during the gap.
    ClientIdle,
    /// (d) client stream, client keepalives every [`TICK`].
    ClientKeepalive,
}

impl Scenario {
    const ALL: [Scenario; 5] = [
        Scenario::ServerIdle,
        Scenario::ServerIdlePings,
        Scenario::ServerKeepalive,
        Scenario::ClientIdle,
        Scenario::ClientKeepalive,
    ];

    /// Each scenario has its own method, which is how the upstream picks its behaviour and how its reports
    /// are matched to the calls.
    fn path(self) -> String {
        format!("/ika.test.Idle/{self:?}")
    }

    fn from_path(path: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.path() == path)
    }

    fn is_client_stream(self) -> bool {
        matches!(self, Scenario::ClientIdle | Scenario::ClientKeepalive)
    }

    fn has_keepalives(self) -> bool {
        matches!(self, Scenario::ServerKeepalive | Scenario::ClientKeepalive)
    }

    fn should_survive(self) -> bool {
        self.has_keepalives()
    }

    /// Message one, the gap (with keepalives every [`TICK`] if `keepalive`), message two.
    fn gap_schedule(keepalive: bool, first: &[u8], second: &[u8]) -> Vec<Scheduled> {
        let mut schedule = vec![Scheduled::message(Duration::ZERO, first)];
        if keepalive {
            schedule.extend(keepalives(TICK, GAP_KEEPALIVES));
            let rest = GAP.saturating_sub(TICK * GAP_KEEPALIVES as u32);
            schedule.push(Scheduled::message(rest, second));
        } else {
            schedule.push(Scheduled::message(GAP, second));
        }
        schedule
    }

    /// What the upstream does for this scenario's method.
    fn upstream_behavior(self) -> ServerBehavior {
        match self {
            Scenario::ServerIdle | Scenario::ServerIdlePings => {
                ServerBehavior::respond(Self::gap_schedule(false, b"response one", b"response two"))
            }
            Scenario::ServerKeepalive => {
                ServerBehavior::respond(Self::gap_schedule(true, b"response one", b"response two"))
            }
            // The client-streaming shape: answer once the request has ended.
            Scenario::ClientIdle | Scenario::ClientKeepalive => {
                ServerBehavior::after_request(vec![Scheduled::message(Duration::ZERO, b"summary")])
            }
        }
    }

    fn call_spec(self) -> CallSpec {
        let mut spec = if self.is_client_stream() {
            CallSpec::streaming(Self::gap_schedule(
                self.has_keepalives(),
                b"request one",
                b"request two",
            ))
        } else {
            CallSpec::unary(b"request")
        };
        spec.path = self.path();
        if self == Scenario::ServerIdlePings {
            spec.ping_interval = Some(TICK);
        }
        spec
    }
}

async fn start_upstream() -> GrpcServer {
    GrpcServer::start_with("127.0.0.1:0".parse().expect("static addr"), |head| {
        Scenario::from_path(head.uri.path())
            .map(Scenario::upstream_behavior)
            .unwrap_or_default()
    })
    .await
    .expect("start the upstream")
}

struct CaseResult {
    scenario: Scenario,
    client: CallOutcome,
    /// From sending the request headers to the end of the response (message one goes at once, so for a dead
    /// stream this is the time from the last data on the idle side to the failure, plus connection setup).
    elapsed: Duration,
    upstream: Option<ServerReport>,
}

fn succeeded(c: &CallOutcome) -> bool {
    c.status == Some(StatusCode::OK)
        && c.received.end == StreamEnd::Complete
        && c.grpc_status() == Some("0")
}

fn keepalive_count(messages: Option<Vec<&[u8]>>) -> usize {
    messages
        .unwrap_or_default()
        .iter()
        .filter(|m| **m == &KEEPALIVE_FRAME[5..])
        .count()
}

impl CaseResult {
    fn summary(&self) -> String {
        let c = &self.client;
        let verdict = if succeeded(c) { "survived" } else { "died" };
        let upstream = match &self.upstream {
            Some(u) => format!(
                "upstream: received {} B ({:?}), sent {} B ({:?})",
                u.received.data.len(),
                u.received.end,
                u.sent.data_bytes,
                u.sent.end
            ),
            None => "upstream: no report".to_owned(),
        };
        format!(
            "{:?}: {verdict} after {:?}; client: status={:?} grpc-status={:?} end={:?} body={} B in {} DATA \
             ({} keepalives) request sent={} B ({:?}) pongs={}; {upstream}",
            self.scenario,
            self.elapsed,
            c.status.map(|s| s.as_u16()),
            c.grpc_status(),
            c.received.end,
            c.received.data.len(),
            c.received.data_frames,
            keepalive_count(c.received.messages()),
            c.sent.data_bytes,
            c.sent.end,
            c.pongs,
        )
    }
}

/// Runs every scenario concurrently against `target`, each on its own connection.
async fn run_all(target: SocketAddr, upstream: &mut GrpcServer) -> Vec<CaseResult> {
    let tasks: Vec<_> = Scenario::ALL
        .into_iter()
        .map(|scenario| {
            tokio::spawn(async move {
                let started = Instant::now();
                let outcome = call(target, scenario.call_spec()).await;
                (scenario, outcome, started.elapsed())
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        let (scenario, outcome, elapsed) = task.await.expect("case task panicked");
        let client =
            outcome.unwrap_or_else(|e| panic!("{scenario:?}: the call failed to run: {e}"));
        results.push(CaseResult {
            scenario,
            client,
            elapsed,
            upstream: None,
        });
    }
    // Match the upstream's reports by method. The surviving cases need theirs; a stream that died may have
    // none (when the proxy closes the upstream connection, the server drops the stream's task), so wait only
    // briefly for those.
    loop {
        let missing_needed = results
            .iter()
            .any(|r| r.upstream.is_none() && r.scenario.should_survive());
        let missing_any = results.iter().any(|r| r.upstream.is_none());
        let wait = match (missing_needed, missing_any) {
            (true, _) => REPORT_TIMEOUT,
            (false, true) => REPORT_GRACE,
            (false, false) => break,
        };
        let Some(report) = upstream.next_report(wait).await else {
            break;
        };
        if let Some(r) = results
            .iter_mut()
            .find(|r| r.scenario.path() == report.path && r.upstream.is_none())
        {
            r.upstream = Some(report);
        }
    }
    results
}

/// The stream survived the gap and every byte arrived unchanged, keepalives included.
fn assert_survived(label: &str, r: &CaseResult, logs: &str) {
    let c = &r.client;
    let context = || format!("{label}: {}\nproxy logs:\n{logs}", r.summary());
    assert!(
        succeeded(c),
        "expected the stream to survive; {}",
        context()
    );
    let u = r
        .upstream
        .as_ref()
        .unwrap_or_else(|| panic!("no upstream report; {}", context()));
    let spec = r.scenario.call_spec();
    let behavior = r.scenario.upstream_behavior();
    assert_eq!(
        c.received.data[..],
        schedule_bytes(&behavior.schedule)[..],
        "response bytes changed; {}",
        context()
    );
    assert_eq!(
        u.received.data[..],
        schedule_bytes(&spec.request)[..],
        "request bytes changed; {}",
        context()
    );
    let crossing = if r.scenario.is_client_stream() {
        &u.received
    } else {
        &c.received
    };
    let messages = crossing
        .messages()
        .unwrap_or_else(|| panic!("torn gRPC framing; {}", context()));
    let expected_keepalives = if r.scenario.has_keepalives() {
        GAP_KEEPALIVES
    } else {
        0
    };
    assert_eq!(
        keepalive_count(Some(messages.clone())),
        expected_keepalives,
        "{}",
        context()
    );
    // The two real messages plus the keepalives, each still a frame of its own.
    assert_eq!(messages.len(), expected_keepalives + 2, "{}", context());
}

/// The proxy killed the idle stream after roughly its idle timeout, well before the gap ended.
fn assert_died(label: &str, r: &CaseResult, logs: &str) {
    let c = &r.client;
    let context = || format!("{label}: {}\nproxy logs:\n{logs}", r.summary());
    assert!(
        !succeeded(c),
        "expected the idle stream to die; {}",
        context()
    );
    assert!(
        (DEATH_AFTER_MIN..=DEATH_AFTER_MAX).contains(&r.elapsed),
        "died {:?} after the last data, expected about the {IDLE_TIMEOUT:?} idle timeout \
         (bounds {DEATH_AFTER_MIN:?}..={DEATH_AFTER_MAX:?}); {}",
        r.elapsed,
        context()
    );
    if let Some(u) = &r.upstream {
        assert_ne!(
            u.sent.end,
            StreamEnd::Complete,
            "the upstream completed a stream the client lost; {}",
            context()
        );
    }
    if r.scenario == Scenario::ServerIdlePings {
        // About three PINGs fit before the stream dies; each was answered (by the proxy: the upstream
        // connection is a different one).
        assert!(c.pongs >= 2, "the proxy should answer PINGs; {}", context());
    }
}

fn judge(label: &str, results: &[CaseResult], logs: &str) {
    for r in results {
        eprintln!("{label}: {}", r.summary());
    }
    for r in results {
        if r.scenario.should_survive() {
            assert_survived(label, r, logs);
        } else {
            assert_died(label, r, logs);
        }
    }
}

fn work_root() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

async fn proxy_cases(kind: ProxyKind) {
    let Some(binary) = require(kind) else { return };
    eprintln!(
        "{}",
        version(kind, &binary).unwrap_or_else(|e| e.to_string())
    );
    let mut upstream = start_upstream().await;
    let config = ProxyConfig::new(kind, upstream.local_addr(), IDLE_TIMEOUT)
        .with_binary(binary)
        .with_work_root(work_root());
    // Starting and stopping block (briefly); keep them off the runtime's workers.
    let proxy = tokio::task::spawn_blocking(move || RunningProxy::start(&config))
        .await
        .expect("start task panicked")
        .unwrap_or_else(|e| panic!("starting {kind}: {e}"));
    let results = run_all(proxy.addr(), &mut upstream).await;
    let logs = proxy.logs();
    let status = tokio::task::spawn_blocking(move || proxy.stop())
        .await
        .expect("stop task panicked")
        .unwrap_or_else(|e| panic!("stopping {kind}: {e}"));
    eprintln!("{kind} stopped: {status}");
    upstream.shutdown().await;
    judge(&kind.to_string(), &results, &logs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_kills_idle_streams_unless_data_flows() {
    proxy_cases(ProxyKind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_kills_idle_streams_unless_data_flows() {
    proxy_cases(ProxyKind::Haproxy).await;
}

/// Control: without a proxy every case survives, so the deaths above are the proxies' doing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_streams_survive_idle_gaps() {
    let mut upstream = start_upstream().await;
    let results = run_all(upstream.local_addr(), &mut upstream).await;
    upstream.shutdown().await;
    for r in &results {
        eprintln!("direct: {}", r.summary());
    }
    for r in &results {
        assert_survived("direct", r, "(no proxy)");
    }
}

// ---------------------------------------------------------------------------------------------------------
// The harness itself.
// ---------------------------------------------------------------------------------------------------------

fn harness_lifecycle(kind: ProxyKind) {
    let Some(binary) = require(kind) else { return };
    // Nothing listens on the upstream: the proxy starts anyway, and startup needs none.
    let upstream: SocketAddr = "127.0.0.1:9".parse().expect("static addr");
    let config = ProxyConfig::new(kind, upstream, IDLE_TIMEOUT)
        .with_binary(binary)
        .with_work_root(work_root());
    let proxy = RunningProxy::start(&config).unwrap_or_else(|e| panic!("starting {kind}: {e}"));
    let addr = proxy.addr();
    let dir = proxy.dir().to_path_buf();
    assert!(addr.ip().is_loopback());
    let pid = proxy.pid().expect("a running proxy has a pid");
    assert!(dir.starts_with(work_root()), "{dir:?}");
    let config_file = match kind {
        ProxyKind::Nginx => "nginx.conf",
        ProxyKind::Haproxy => "haproxy.cfg",
    };
    assert!(dir.join(config_file).is_file());
    TcpStream::connect(addr)
        .unwrap_or_else(|e| panic!("{kind} not listening: {e}\n{}", proxy.logs()));
    let second = RunningProxy::start(&config).unwrap_or_else(|e| panic!("second {kind}: {e}"));
    assert_ne!(second.addr(), addr, "each proxy gets its own port");
    drop(second);

    proxy
        .stop()
        .unwrap_or_else(|e| panic!("stopping {kind}: {e}"));
    assert!(
        TcpStream::connect(addr).is_err(),
        "{kind} still listening on {addr} after stop"
    );
    assert!(
        !dir.exists(),
        "{dir:?} should be removed after a clean stop"
    );
    // Reaped, not a zombie, and (with `master_process off`) no worker left behind.
    if cfg!(target_os = "linux") {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "{kind} pid {pid} still exists after stop"
        );
    }
}

#[test]
fn harness_starts_and_stops_nginx() {
    harness_lifecycle(ProxyKind::Nginx);
}

#[test]
fn harness_starts_and_stops_haproxy() {
    harness_lifecycle(ProxyKind::Haproxy);
}

#[test]
fn harness_reports_errors_with_context() {
    let upstream: SocketAddr = "127.0.0.1:9".parse().expect("static addr");
    // HAProxy: the harness asks nginx for its version first, which these stand-ins cannot answer.
    let config = |binary: &str| {
        ProxyConfig::new(ProxyKind::Haproxy, upstream, IDLE_TIMEOUT)
            .with_binary(binary)
            .with_work_root(work_root())
    };
    // A "proxy" whose configuration check fails.
    match RunningProxy::start(&config("/bin/false")) {
        Err(e @ ProxyError::ConfigRejected { .. }) => {
            assert!(e.to_string().contains("timeout server 1000ms"), "{e}");
            remove_kept_dir(&e);
        }
        other => panic!("expected ConfigRejected, got {other:?}"),
    }
    // A "proxy" that passes the check and exits at once.
    match RunningProxy::start(&config("/bin/true")) {
        Err(e @ ProxyError::Exited { .. }) => {
            assert!(
                e.to_string()
                    .contains("exited before accepting connections"),
                "{e}"
            );
            remove_kept_dir(&e);
        }
        other => panic!("expected Exited, got {other:?}"),
    }
    // Configurations refused before anything runs.
    let mut remote = config("/bin/true");
    remote.upstream = "192.0.2.1:80".parse().expect("static addr");
    assert!(matches!(
        RunningProxy::start(&remote),
        Err(ProxyError::InvalidConfig { .. })
    ));
    let mut zero = config("/bin/true");
    zero.idle_timeout = Duration::ZERO;
    assert!(matches!(
        RunningProxy::start(&zero),
        Err(ProxyError::InvalidConfig { .. })
    ));
    // `find_binary` agrees with `require` when the proxy is installed.
    for kind in ProxyKind::ALL {
        if let Some(found) = find_binary(kind) {
            assert_eq!(require(kind), Some(found));
        }
    }
}

/// The error tests leave their kept directories behind on purpose; tidy up after checking that they exist.
fn remove_kept_dir(e: &ProxyError) {
    let dir = e
        .kept_dir()
        .unwrap_or_else(|| panic!("no kept dir in {e:?}"));
    assert!(dir.join("haproxy.cfg").is_file(), "{dir:?}");
    std::fs::remove_dir_all(dir).unwrap_or_else(|err| panic!("removing {dir:?}: {err}"));
}
