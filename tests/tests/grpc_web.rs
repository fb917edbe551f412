//! gRPC-Web through tonic-web and `ServerKeepaliveLayer`, with raw clients
//! (no proxy, no browser): the layer order of the README, for every content
//! type over HTTP/1.1 and h2; the wrong order; the CORS recipe; bad input.
//!
//! The raw client keeps every byte it received, so these tests check the
//! wire: each keepalive is one gRPC frame exactly like an application
//! message's, base64-encoded on its own in `-text` mode, and the trailers
//! frame comes last. The core's `FrameFilter` in gRPC-Web framing, fed the
//! same bodies, removes exactly those keepalives and accepts the trailers
//! frame as the last.

mod grpc_web_support;
mod tonic_support;

use std::time::Duration;

use grpc_web_support::*;
use http::Method;
use inlinekeepalive::core::{FrameError, FrameFilter, FrameTracker, Framing};
use inlinekeepalive::wire::KEEPALIVE_FRAME;
use inlinekeepalive_tests::proxies::ClientHttp;
use tonic_support::intact;
use tonic_support::pb::Plan;

/// The page origin the CORS layer allows.
const ORIGIN: &str = "http://page.example";
/// The keepalive interval of these tests.
const INTERVAL: Duration = Duration::from_millis(100);
/// Messages per stream, the gap between them, and their size.
const COUNT: u64 = 3;
const GAP_MS: u32 = 500;
const SIZE: u32 = 16;
/// Keepalives a stream must at least carry: one per interval in both gaps,
/// with room for timer slack.
const MIN_KEEPALIVES: usize = 4;

fn plan(size: u32) -> Plan {
    Plan {
        count: COUNT,
        gap_ms: GAP_MS,
        size,
        first_gap_ms: 0,
    }
}

/// Decodes a call's body (base64 pieces for -text) and checks the framing
/// with both the hand parser and the core's filter.
fn frames_of(call: &WebCall, kind: WebType) -> (WebFrames, Vec<u8>) {
    let raw = call.raw();
    let body = if kind.is_text() {
        base64_decode_pieces(&raw).unwrap_or_else(|e| panic!("{kind:?}: {e}"))
    } else {
        raw
    };
    let frames = WebFrames::parse(&body);
    assert!(
        frames.problems.is_empty(),
        "{kind:?}: {:?}",
        frames.problems
    );
    // The core, told the body is gRPC-Web, removes exactly the keepalives
    // and passes the rest, the trailers frame last, whatever the chunking.
    for chunk in [1, 7, 64, body.len()] {
        let (passed, removed, end) = core_filter(&body, chunk);
        assert_eq!(end, Ok(()), "{kind:?}, chunks of {chunk}");
        assert_eq!(
            removed as usize, frames.keepalives,
            "{kind:?}, chunks of {chunk}"
        );
        assert_eq!(
            passed.len() + frames.keepalives * KEEPALIVE_FRAME.len(),
            body.len(),
            "{kind:?}, chunks of {chunk}"
        );
        assert!(passed.ends_with(&body[body.len() - 5 - frames.trailers.as_ref().unwrap().len()..]));
    }
    (frames, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalives_are_framed_and_encoded_like_messages() {
    let mut server = WebServer::start(Stack::Keepalives, INTERVAL, ORIGIN).await;
    // Every content type over both HTTP versions at once; the size tells the
    // handler's reports apart.
    let mut cases = Vec::new();
    for (i, kind) in WebType::ALL.into_iter().enumerate() {
        for (j, http) in [ClientHttp::Http1, ClientHttp::Http2]
            .into_iter()
            .enumerate()
        {
            cases.push((kind, http, SIZE + (2 * i + j) as u32));
        }
    }
    let calls: Vec<_> = cases
        .iter()
        .map(|&(kind, http, size)| {
            let addr = server.addr;
            tokio::spawn(async move {
                web_call(addr, http, WebRequest::watch(kind, plan(size), true)).await
            })
        })
        .collect();
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await.unwrap());
    }
    let seen = server.drain_seen();
    for (&(kind, http, size), call) in cases.iter().zip(&results) {
        let context = format!("{kind:?} over {http}");
        assert_eq!(call.status, http::StatusCode::OK, "{context}");
        assert_eq!(call.end, Ok(()), "{context}");
        let content_type = call.headers.get("content-type").unwrap().to_str().unwrap();
        let want = if kind.is_text() {
            "application/grpc-web-text+proto"
        } else {
            "application/grpc-web+proto"
        };
        assert_eq!(content_type, want, "{context}");
        assert_eq!(
            call.headers
                .get("wp-inline-keepalives")
                .map(|v| v.to_str().unwrap()),
            Some("true"),
            "{context}: the layer announces its support through tonic-web"
        );

        let (frames, _) = frames_of(call, kind);
        let seqs: Vec<u64> = frames.items.iter().map(|i| i.seq).collect();
        assert_eq!(seqs, (0..COUNT).collect::<Vec<_>>(), "{context}");
        assert!(
            frames
                .items
                .iter()
                .all(|i| intact(i, size as usize) && i.collision == 0),
            "{context}"
        );
        assert_eq!(
            frames.grpc_status(),
            Some("0"),
            "{context}: {:?}",
            frames.trailers
        );
        assert!(
            frames.keepalives >= MIN_KEEPALIVES,
            "{context}: {} keepalives",
            frames.keepalives
        );

        // What the layer counted is what crossed tonic-web.
        let stats = seen
            .iter()
            .find(|s| s.plan.is_some_and(|p| p.size == size))
            .and_then(|s| s.stats.as_ref())
            .unwrap_or_else(|| panic!("{context}: no report with the layer's stats"));
        assert_eq!(
            stats.keepalives_sent() as usize,
            frames.keepalives,
            "{context}"
        );

        if kind.is_text() {
            // Base64 of the 27-byte frame, 36 characters, encoded on its own
            // like every message: it appears once per keepalive, whole.
            let text = String::from_utf8(call.raw()).unwrap();
            assert_eq!(
                text.matches(&keepalive_base64()).count(),
                frames.keepalives,
                "{context}"
            );
            assert_eq!(keepalive_base64(), "AAAAABaCkLz9AhBpbmxpbmVfa2VlcGFsaXZl");
        } else {
            // Binary: the frame itself, as its own body chunk.
            let keepalive_chunks = call
                .chunks
                .iter()
                .filter(|c| c[..] == KEEPALIVE_FRAME)
                .count();
            assert!(
                keepalive_chunks > 0,
                "{context}: no keepalive arrived as its own chunk"
            );
        }
        eprintln!(
            "{context}: {} messages, {} keepalives, trailers {:?}",
            frames.items.len(),
            frames.keepalives,
            frames.trailers
        );
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_the_header_gets_no_keepalives() {
    let mut server = WebServer::start(Stack::Keepalives, INTERVAL, ORIGIN).await;
    for kind in [WebType::WebProto, WebType::WebText] {
        for http in [ClientHttp::Http1, ClientHttp::Http2] {
            let call = web_call(
                server.addr,
                http,
                WebRequest::watch(kind, plan(SIZE), false),
            )
            .await;
            let (frames, _) = frames_of(&call, kind);
            assert_eq!(frames.items.len() as u64, COUNT, "{kind:?} over {http}");
            assert_eq!(frames.keepalives, 0, "{kind:?} over {http}");
            let seen = server.drain_seen();
            assert_eq!(seen.len(), 1);
            assert_eq!(seen[0].stats.as_ref().unwrap().keepalives_sent(), 0);
        }
    }
    server.shutdown().await;
}

/// The keepalive layer outside tonic-web sees `application/grpc-web*`,
/// which it cannot follow: nothing is sent, and the layer says why, once.
#[tokio::test]
async fn the_wrong_order_sends_nothing_and_warns_once() {
    let captured = Captured::default();
    // A current-thread runtime: the server's tasks run on this thread, under
    // this subscriber.
    let _guard = tracing::subscriber::set_default(captured.clone());
    let mut server = WebServer::start(Stack::WrongOrder, INTERVAL, ORIGIN).await;
    for kind in [WebType::WebProto, WebType::WebText] {
        let call = web_call(
            server.addr,
            ClientHttp::Http1,
            WebRequest::watch(kind, plan(SIZE), true),
        )
        .await;
        let (frames, _) = frames_of(&call, kind);
        assert_eq!(frames.items.len() as u64, COUNT, "{kind:?}");
        assert_eq!(
            frames.keepalives, 0,
            "{kind:?}: no keepalive in the wrong order"
        );
        assert!(call.headers.get("wp-inline-keepalives").is_none());
    }
    let seen = server.drain_seen();
    assert!(
        seen.iter().all(|s| s.stats.is_none()),
        "the layer never handled a stream"
    );
    let warnings: Vec<_> = captured
        .events()
        .into_iter()
        .filter(|(level, target, _)| *level == tracing::Level::WARN && target == "inlinekeepalive")
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].2.contains("GrpcWebLayer outside"),
        "{warnings:?}"
    );
    server.shutdown().await;
}

/// The README's CORS recipe: a preflight from the page's origin may send
/// `wp-inline-keepalives`, and the response exposes it.
#[tokio::test]
async fn the_cors_recipe_lets_a_page_negotiate() {
    let server = WebServer::start(Stack::Keepalives, INTERVAL, ORIGIN).await;
    for http in [ClientHttp::Http1, ClientHttp::Http2] {
        let mut preflight = WebRequest::watch(WebType::WebProto, plan(SIZE), false);
        preflight.method = Method::OPTIONS;
        preflight.body = Vec::new();
        preflight.headers = vec![
            ("origin", ORIGIN.to_owned()),
            ("access-control-request-method", "POST".to_owned()),
            (
                "access-control-request-headers",
                "content-type,x-grpc-web,x-user-agent,wp-inline-keepalives".to_owned(),
            ),
        ];
        let call = web_call(server.addr, http, preflight).await;
        assert_eq!(call.status, http::StatusCode::OK, "{http}");
        let header = |name: &str| call.header_lowercase(name);
        assert_eq!(header("access-control-allow-origin"), ORIGIN, "{http}");
        assert!(
            header("access-control-allow-headers").contains("wp-inline-keepalives"),
            "{http}"
        );
        assert!(
            header("access-control-allow-methods").contains("post"),
            "{http}"
        );

        let mut request = WebRequest::watch(WebType::WebProto, plan(SIZE), true);
        request.headers = vec![("origin", ORIGIN.to_owned())];
        let call = web_call(server.addr, http, request).await;
        let header = |name: &str| call.header_lowercase(name);
        assert_eq!(header("access-control-allow-origin"), ORIGIN, "{http}");
        let exposed = header("access-control-expose-headers");
        for name in ["wp-inline-keepalives", "grpc-status", "grpc-message"] {
            assert!(exposed.contains(name), "{http}: {name} not in {exposed:?}");
        }
        assert_eq!(header("wp-inline-keepalives"), "true");

        // Another origin is not allowed: the header names only the page's
        // origin, so a browser refuses the response.
        let mut other = WebRequest::watch(WebType::WebProto, plan(SIZE), true);
        other.headers = vec![("origin", "http://evil.example".to_owned())];
        let call = web_call(server.addr, http, other).await;
        let allowed = call.headers.get("access-control-allow-origin");
        assert!(allowed.is_none_or(|v| v == ORIGIN), "{http}: {allowed:?}");
    }
    server.shutdown().await;
}

/// Broken base64 in a `-text` request gives the caller a clear status (in
/// the base64 trailers frame), never a panic, and the server goes on.
#[tokio::test]
async fn malformed_base64_is_a_clear_status() {
    let mut server = WebServer::start(Stack::Keepalives, INTERVAL, ORIGIN).await;
    for (body, why) in [
        (&b"AAAA!!!!"[..], "a character outside the alphabet"),
        (&b"AAAAAB=a"[..], "padding inside a quad"),
        (&b"AAAAA"[..], "a cut quad"),
    ] {
        for http in [ClientHttp::Http1, ClientHttp::Http2] {
            let mut request = WebRequest::watch(WebType::WebText, plan(SIZE), true);
            request.body = body.to_vec();
            let call = web_call(server.addr, http, request).await;
            let context = format!("{why} over {http}");
            assert_eq!(call.status, http::StatusCode::OK, "{context}");
            let decoded = base64_decode_pieces(&call.raw()).unwrap();
            let frames = WebFrames::parse(&decoded);
            let status = frames
                .grpc_status()
                .or_else(|| call.headers.get("grpc-status").map(|v| v.to_str().unwrap()));
            assert_eq!(
                status,
                Some("13"),
                "{context}: {frames:?} {:?}",
                call.headers
            );
            let message = frames
                .trailer("grpc-message")
                .or_else(|| {
                    call.headers
                        .get("grpc-message")
                        .map(|v| v.to_str().unwrap())
                })
                .unwrap_or_default()
                .to_owned();
            let message = percent_decode(&message);
            assert!(message.starts_with("tonic-web: "), "{context}: {message:?}");
            eprintln!("{context}: grpc-status 13, {message:?}");
        }
    }
    // Still serving.
    let call = web_call(
        server.addr,
        ClientHttp::Http1,
        WebRequest::watch(WebType::WebText, plan(SIZE), true),
    )
    .await;
    let (frames, _) = frames_of(&call, WebType::WebText);
    assert_eq!(frames.items.len() as u64, COUNT);
    let _ = server.drain_seen();
    server.shutdown().await;
}

/// A real gRPC-Web body with a frame after its trailers frame: the core says
/// so with a typed error, after passing on everything before it; the tracker
/// of a sender refuses to go on too.
#[tokio::test]
async fn a_frame_after_the_trailers_frame_is_a_typed_error() {
    let server = WebServer::start(Stack::Keepalives, INTERVAL, ORIGIN).await;
    let call = web_call(
        server.addr,
        ClientHttp::Http1,
        WebRequest::watch(WebType::WebProto, plan(SIZE), true),
    )
    .await;
    let (_, mut body) = frames_of(&call, WebType::WebProto);
    let clean = body.len();
    body.extend_from_slice(&KEEPALIVE_FRAME);
    for chunk in [1, 5, 100, body.len()] {
        let (passed, _, end) = core_filter(&body, chunk);
        assert_eq!(
            end,
            Err(FrameError::AfterTrailers.to_string()),
            "chunks of {chunk}"
        );
        assert!(passed.len() < clean && body[..clean].ends_with(&passed[passed.len() - 5..]));
    }
    let mut filter = FrameFilter::new().with_framing(Framing::GrpcWeb);
    let mut input = &body[..];
    let error = loop {
        match filter.step(input) {
            Ok(step) => input = &input[step.consumed..],
            Err(error) => break error,
        }
    };
    assert_eq!(error, FrameError::AfterTrailers);
    let mut tracker = FrameTracker::new().with_framing(Framing::GrpcWeb);
    assert_eq!(tracker.advance(&body), Err(FrameError::AfterTrailers));
    // Plain gRPC framing refuses the trailers flag itself.
    let mut tracker = FrameTracker::new();
    assert_eq!(
        tracker.advance(&body[..clean]),
        Err(FrameError::BadFlag(0x80))
    );
    server.shutdown().await;
}

/// The README's server setup is the one these tests run: every builder,
/// CORS and header line of its "Browsers (gRPC-Web)" snippet appears, as it
/// is, in `grpc_web_support/mod.rs`.
#[test]
fn the_readme_setup_is_the_tested_one() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let support =
        std::fs::read_to_string(root.join("tests/tests/grpc_web_support/mod.rs")).unwrap();
    let section = readme
        .split("## Browsers (gRPC-Web)")
        .nth(1)
        .expect("the README has a Browsers (gRPC-Web) section");
    let snippet = section
        .split("```rust,no_run\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("the section has a Rust snippet");
    let support_lines: Vec<&str> = support.lines().map(str::trim).collect();
    let mut checked = 0;
    for line in snippet.lines().map(str::trim) {
        let tested = [
            ".layer(",
            ".accept_http1",
            ".allow_",
            ".expose_",
            ".max_age",
            "HeaderName::",
            "header::",
            "CorsLayer::new()",
        ]
        .iter()
        .any(|prefix| line.starts_with(prefix));
        if tested {
            assert!(
                support_lines.contains(&line),
                "README line not in the tested setup: {line}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 18, "only {checked} lines checked");
}

/// Decodes a `grpc-message` (percent-encoded, as gRPC sends it).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `-text` (base64) bodies through real proxies with a 2 s idle timeout,
/// over HTTP/1.1 and h2 (connect's transports have no `-text` mode, so the
/// raw client speaks it): each base64-encoded keepalive crosses nginx and
/// HAProxy like any chunk and keeps the stream alive through a gap of more
/// than two idle timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_mode_keepalives_cross_real_proxies() {
    use inlinekeepalive_tests::proxies::{require, ProxyConfig, ProxyKind, RunningProxy};

    const IDLE_TIMEOUT: Duration = Duration::from_secs(2);
    const GAP_MS: u32 = 4_500;
    let Some(nginx) = require(ProxyKind::Nginx) else {
        return;
    };
    let Some(haproxy) = require(ProxyKind::Haproxy) else {
        return;
    };
    let mut server = WebServer::start(Stack::Keepalives, Duration::from_millis(500), ORIGIN).await;
    let mut proxies = Vec::new();
    let mut calls = Vec::new();
    for (kind, binary) in [(ProxyKind::Nginx, &nginx), (ProxyKind::Haproxy, &haproxy)] {
        for http in [ClientHttp::Http1, ClientHttp::Http2] {
            let config = ProxyConfig::new(kind, server.addr, IDLE_TIMEOUT)
                .grpc_web(http)
                .with_binary(binary)
                .with_work_root(env!("CARGO_TARGET_TMPDIR"));
            let proxy = tokio::task::spawn_blocking(move || RunningProxy::start(&config))
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("starting {kind}: {e}"));
            let size = SIZE + calls.len() as u32;
            let plan = Plan {
                count: 2,
                gap_ms: GAP_MS,
                size,
                first_gap_ms: 0,
            };
            let addr = proxy.addr();
            calls.push((
                kind,
                http,
                size,
                tokio::spawn(async move {
                    web_call(addr, http, WebRequest::watch(WebType::WebText, plan, true)).await
                }),
            ));
            proxies.push(proxy);
        }
    }
    let mut results = Vec::new();
    for (kind, http, size, call) in calls {
        results.push((kind, http, size, call.await.unwrap()));
    }
    let seen = server.drain_seen();
    for (kind, http, size, call) in &results {
        let context = format!("-text through {kind} over {http}");
        assert_eq!(
            call.status,
            http::StatusCode::OK,
            "{context}: {:?}",
            call.headers
        );
        let (frames, _) = frames_of(call, WebType::WebText);
        assert_eq!(call.end, Ok(()), "{context}");
        assert_eq!(
            frames.items.iter().map(|i| i.seq).collect::<Vec<_>>(),
            [0, 1],
            "{context}"
        );
        assert_eq!(frames.grpc_status(), Some("0"), "{context}");
        let sent = seen
            .iter()
            .find(|s| s.plan.is_some_and(|p| p.size == *size))
            .and_then(|s| s.stats.as_ref())
            .map(|s| s.keepalives_sent() as usize);
        assert!(
            frames.keepalives >= 6,
            "{context}: {} keepalives",
            frames.keepalives
        );
        assert_eq!(sent, Some(frames.keepalives), "{context}");
        let text = String::from_utf8(call.raw()).unwrap();
        assert_eq!(
            text.matches(&keepalive_base64()).count(),
            frames.keepalives,
            "{context}"
        );
        eprintln!(
            "{context}: survived {GAP_MS} ms of silence, {} base64 keepalives",
            frames.keepalives
        );
    }
    for proxy in proxies {
        tokio::task::spawn_blocking(move || proxy.stop())
            .await
            .unwrap()
            .unwrap();
    }
    server.shutdown().await;
}
