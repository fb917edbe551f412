//! `albsim` against the raw-h2 gRPC-shaped server and client of `h2grpc`.
//!
//! Timing: the idle timeout is 300 ms; "idle" gaps are three times that and
//! keepalives come every quarter of it, so the assertions ("was reset",
//! "survived") hold with wide margins on a loaded machine. No assertion
//! depends on exact times.

use std::time::Duration;

use h2::Reason;
use inlinekeepalive_tests::albsim::{
    parse_duration, AlbSim, AlbSimConfig, AlbSimStats, ParseDurationError,
};
use inlinekeepalive_tests::h2grpc::{
    call, grpc_frame, keepalives, schedule_bytes, CallOutcome, CallSpec, GrpcServer, Scheduled,
    ServerBehavior, StreamEnd, KEEPALIVE_FRAME,
};

const IDLE: Duration = Duration::from_millis(300);
const QUARTER: Duration = Duration::from_millis(75);
/// Long enough to be idle for certain.
const LONG_GAP: Duration = Duration::from_millis(900);
/// Keepalives covering five idle timeouts.
const KEEPALIVE_COUNT: usize = 20;
const REPORT_WAIT: Duration = Duration::from_secs(5);

fn localhost() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn start(behavior: ServerBehavior) -> (GrpcServer, AlbSim) {
    let server = GrpcServer::start(localhost(), behavior)
        .await
        .expect("start upstream");
    let sim = AlbSim::start(AlbSimConfig::new(localhost(), server.local_addr(), IDLE))
        .await
        .expect("start albsim");
    (server, sim)
}

/// `first` at once, then `then` after an idle gap.
fn idle_gap(first: &[u8], then: &[u8]) -> Vec<Scheduled> {
    vec![
        Scheduled::message(Duration::ZERO, first),
        Scheduled::message(LONG_GAP, then),
    ]
}

/// `first` at once, `KEEPALIVE_COUNT` keepalives a quarter apart, then `last`.
fn kept_alive(first: &[u8], last: &[u8]) -> Vec<Scheduled> {
    let mut schedule = vec![Scheduled::message(Duration::ZERO, first)];
    schedule.extend(keepalives(QUARTER, KEEPALIVE_COUNT));
    schedule.push(Scheduled::message(QUARTER, last));
    schedule
}

/// An upstream that answers `summary` once the request has ended.
async fn start_summary() -> (GrpcServer, AlbSim) {
    start(ServerBehavior::after_request(vec![Scheduled::message(
        Duration::ZERO,
        b"summary",
    )]))
    .await
}

fn assert_reset(outcome: &CallOutcome, reason: Reason) {
    assert_eq!(outcome.reset_reason(), Some(reason), "{outcome:?}");
}

/// Waits until `check` holds for albsim's counters (they are updated by
/// albsim's own task, possibly just after the client saw the effect).
async fn stats_eventually(sim: &AlbSim, check: impl Fn(&AlbSimStats) -> bool) -> AlbSimStats {
    for _ in 0..200 {
        let stats = sim.stats();
        if check(&stats) {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("albsim counters never matched: {:?}", sim.stats());
}

#[tokio::test]
async fn regular_data_passes_through_with_trailers() {
    let schedule = vec![
        Scheduled::message(Duration::ZERO, b"one"),
        Scheduled::message(Duration::from_millis(50), b"two"),
        Scheduled::message(Duration::from_millis(50), &[7u8; 100_000]),
    ];
    let expected = schedule_bytes(&schedule);
    let (mut server, sim) = start(ServerBehavior::respond(schedule)).await;

    let outcome = call(sim.local_addr(), CallSpec::unary(b"hello"))
        .await
        .expect("call");
    assert_eq!(outcome.status, Some(http::StatusCode::OK));
    let headers = outcome.headers.as_ref().expect("response headers");
    assert_eq!(headers["content-type"], "application/grpc");
    assert_eq!(outcome.received.end, StreamEnd::Complete);
    assert_eq!(outcome.grpc_status(), Some("0"));
    assert_eq!(outcome.received.data, expected);
    assert_eq!(outcome.received.messages().map(|m| m.len()), Some(3));
    assert_eq!(outcome.sent.end, StreamEnd::Complete);

    let report = server
        .next_report(REPORT_WAIT)
        .await
        .expect("server report");
    assert_eq!(report.path, "/inlinekeepalive.test.Test/Call");
    assert_eq!(report.request_headers["content-type"], "application/grpc");
    assert_eq!(report.received.data, grpc_frame(b"hello"));
    assert_eq!(report.received.end, StreamEnd::Complete);
    assert_eq!(report.sent.end, StreamEnd::Complete);

    let stats = stats_eventually(&sim, |s| s.streams_completed == 1).await;
    assert_eq!(stats.connections, 1);
    assert_eq!(stats.streams_opened, 1);
    assert_eq!(stats.idle_resets(), 0);
    assert_eq!(stats.server_to_client.data_bytes, expected.len() as u64);
    assert!(stats.server_to_client.data_frames >= 3);
    assert_eq!(stats.client_to_server.data_frames, 1);
    assert_eq!(stats.client_to_server.data_bytes, 10);
    sim.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn idle_server_stream_is_reset() {
    let (mut server, sim) = start(ServerBehavior::respond(idle_gap(b"first", b"too late"))).await;

    let outcome = call(sim.local_addr(), CallSpec::unary(b"req"))
        .await
        .expect("call");
    assert_reset(&outcome, Reason::INTERNAL_ERROR);
    assert_eq!(outcome.received.data, grpc_frame(b"first"));
    assert_eq!(outcome.received.trailers, None);

    let stats = stats_eventually(&sim, |s| s.server_to_client.idle_resets == 1).await;
    assert_eq!(stats.client_to_server.idle_resets, 0);
    assert_eq!(stats.streams_completed, 0);

    // The upstream side was cancelled too.
    let report = server
        .next_report(REPORT_WAIT)
        .await
        .expect("server report");
    assert_eq!(report.sent.end, StreamEnd::Reset(Reason::CANCEL));
    sim.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn pings_do_not_keep_a_stream_alive() {
    let (_server, sim) = start(ServerBehavior::respond(idle_gap(b"first", b"too late"))).await;

    let spec = CallSpec {
        ping_interval: Some(QUARTER),
        ..CallSpec::unary(b"req")
    };
    let outcome = call(sim.local_addr(), spec).await.expect("call");
    assert!(outcome.pongs >= 1, "albsim answers PINGs: {outcome:?}");
    assert_reset(&outcome, Reason::INTERNAL_ERROR);
    stats_eventually(&sim, |s| s.server_to_client.idle_resets == 1).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn server_keepalives_keep_a_server_stream_alive() {
    let schedule = kept_alive(b"first", b"last");
    let expected = schedule_bytes(&schedule);
    let (_server, sim) = start(ServerBehavior::respond(schedule)).await;

    let outcome = call(sim.local_addr(), CallSpec::unary(b"req"))
        .await
        .expect("call");
    assert_eq!(outcome.received.end, StreamEnd::Complete, "{outcome:?}");
    assert_eq!(outcome.grpc_status(), Some("0"));
    assert_eq!(outcome.received.data, expected);
    let messages = outcome.received.messages().expect("whole frames");
    assert_eq!(messages.len(), KEEPALIVE_COUNT + 2);
    assert_eq!(
        messages
            .iter()
            .filter(|m| **m == &KEEPALIVE_FRAME[5..])
            .count(),
        KEEPALIVE_COUNT
    );

    let stats = stats_eventually(&sim, |s| s.streams_completed == 1).await;
    assert_eq!(stats.idle_resets(), 0);
    assert_eq!(stats.server_to_client.data_bytes, expected.len() as u64);
    sim.shutdown().await;
}

#[tokio::test]
async fn idle_client_stream_is_reset() {
    let (mut server, sim) = start_summary().await;

    let spec = CallSpec::streaming(idle_gap(b"a", b"b"));
    let outcome = call(sim.local_addr(), spec).await.expect("call");
    assert_reset(&outcome, Reason::PROTOCOL_ERROR);
    assert_eq!(outcome.status, None);

    let stats = stats_eventually(&sim, |s| s.client_to_server.idle_resets == 1).await;
    assert_eq!(stats.server_to_client.idle_resets, 0);

    let report = server
        .next_report(REPORT_WAIT)
        .await
        .expect("server report");
    assert_eq!(report.received.data, grpc_frame(b"a"));
    assert_eq!(report.received.end, StreamEnd::Reset(Reason::CANCEL));
    assert_eq!(report.sent.end, StreamEnd::Unfinished);
    sim.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn client_keepalives_keep_a_client_stream_alive() {
    let (mut server, sim) = start_summary().await;

    let request = kept_alive(b"a", b"b");
    let expected = schedule_bytes(&request);
    // PINGs as well, to show they neither help nor hurt.
    let spec = CallSpec {
        ping_interval: Some(QUARTER),
        ..CallSpec::streaming(request)
    };
    let outcome = call(sim.local_addr(), spec).await.expect("call");
    assert_eq!(outcome.received.end, StreamEnd::Complete, "{outcome:?}");
    assert_eq!(outcome.grpc_status(), Some("0"));
    assert_eq!(outcome.received.data, grpc_frame(b"summary"));
    assert_eq!(outcome.sent.end, StreamEnd::Complete);

    let report = server
        .next_report(REPORT_WAIT)
        .await
        .expect("server report");
    assert_eq!(report.received.data, expected);
    assert_eq!(report.received.end, StreamEnd::Complete);

    let stats = stats_eventually(&sim, |s| s.streams_completed == 1).await;
    assert_eq!(stats.idle_resets(), 0);
    assert_eq!(stats.client_to_server.data_bytes, expected.len() as u64);
    sim.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn pings_do_not_keep_a_client_stream_alive() {
    let (_server, sim) = start(ServerBehavior::after_request(Vec::new())).await;
    let spec = CallSpec {
        ping_interval: Some(QUARTER),
        ..CallSpec::streaming(idle_gap(b"a", b"b"))
    };
    let outcome = call(sim.local_addr(), spec).await.expect("call");
    assert_reset(&outcome, Reason::PROTOCOL_ERROR);
    stats_eventually(&sim, |s| s.client_to_server.idle_resets == 1).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn reset_reasons_are_configurable() {
    let server = GrpcServer::start(
        localhost(),
        ServerBehavior::respond(vec![Scheduled::message(LONG_GAP, b"late")]),
    )
    .await
    .expect("start upstream");
    let mut config = AlbSimConfig::new(localhost(), server.local_addr(), IDLE);
    config.server_idle_reason = Reason::CANCEL;
    let sim = AlbSim::start(config).await.expect("start albsim");
    let outcome = call(sim.local_addr(), CallSpec::unary(b"req"))
        .await
        .expect("call");
    // Headers arrived, DATA never did: waiting for the first message counts.
    assert_eq!(outcome.status, Some(http::StatusCode::OK));
    assert_reset(&outcome, Reason::CANCEL);
    sim.shutdown().await;
}

#[tokio::test]
async fn unreachable_upstream_answers_502() {
    // Bind and drop to get a port nobody listens on.
    let port = std::net::TcpListener::bind(localhost())
        .and_then(|l| l.local_addr())
        .expect("free port");
    let sim = AlbSim::start(AlbSimConfig::new(localhost(), port, IDLE))
        .await
        .expect("start albsim");
    let outcome = call(sim.local_addr(), CallSpec::unary(b"req"))
        .await
        .expect("call");
    assert_eq!(outcome.status, Some(http::StatusCode::BAD_GATEWAY));
    assert_eq!(sim.stats().upstream_connect_failures, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn zero_idle_timeout_is_rejected() {
    let config = AlbSimConfig::new(localhost(), localhost(), Duration::ZERO);
    let error = AlbSim::start(config).await.expect_err("zero timeout");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn parse_duration_cases() {
    let ok = |text: &str| parse_duration(text).expect(text);
    assert_eq!(ok("500ms"), Duration::from_millis(500));
    assert_eq!(ok("2s"), Duration::from_secs(2));
    assert_eq!(ok("1m"), Duration::from_secs(60));
    assert_eq!(ok("60s"), Duration::from_secs(60));
    assert_eq!(ok("1h"), Duration::from_secs(3600));
    assert_eq!(ok("10us"), Duration::from_micros(10));
    for bad in [
        "",
        "s",
        "5",
        "5 parsecs",
        "1.5s",
        "-2s",
        "2 s s",
        "999999999999999999999ms",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad:?} should not parse");
    }
    assert_eq!(parse_duration("5"), Err(ParseDurationError::MissingUnit));
    assert!(!ParseDurationError::MissingUnit.to_string().is_empty());
}
