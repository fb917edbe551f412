//! The browser proof: Debian's chromium, headless (driven by puppeteer-core
//! from `js/proof/browser.mjs`), loads a small page (`js/proof/page.mjs`,
//! bundled with connect-web, protobuf-es and the interceptor of `js/`) and
//! watches a server stream through real nginx with a 2 s idle timeout.
//!
//! The page comes from another origin than the API (another port), so every
//! call goes through CORS as the README's recipe sets it up: a preflight for
//! `wp-inline-keepalives` (and the gRPC-Web headers), and the response
//! header exposed so the page can read it. The stream carries two messages
//! 10.5 s apart (5.25 idle timeouts of silence). Two nginx instances stand
//! in front of the server: one speaking HTTP/1.1, one h2 over TLS (browsers
//! speak h2 only over TLS; a self-signed certificate made by `openssl`, which
//! the browser is told to accept). Through each, the page runs two calls at
//! once:
//! - **inline**, with the interceptor: survives, both messages reach the
//!   page intact, every keepalive the server sent is removed before the
//!   page's code iterates, none reaches it;
//! - **plain**, without it: the server sends no keepalive, and nginx kills
//!   the stream about 2 s after the first message.
//!
//! nginx's access logs show which protocol the browser spoke. Needs node,
//! `js/` built, chromium, openssl and nginx: missing, the test fails under
//! `CI=true` and is skipped elsewhere.

mod grpc_web_support;
mod tonic_support;

use std::time::Duration;

use grpc_web_support::*;
use inlinekeepalive_tests::proxies::{require, ClientHttp, ProxyConfig, ProxyKind, RunningProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const IDLE_TIMEOUT: Duration = Duration::from_secs(2);
const INTERVAL: Duration = Duration::from_millis(500);
const GAP_MS: u64 = 10_500;
const SIZE: u32 = 64;
const MIN_KEEPALIVES: u64 = 15;

/// Serves the page (`/`) and its bundle (`/page.js`) on `listener` until
/// dropped: a static origin for the browser, other than the API's.
fn serve_page(listener: tokio::net::TcpListener) -> tokio::task::JoinHandle<()> {
    let bundle = std::fs::read(js_dir().join("dist/proof/page.js")).expect("js/dist/proof/page.js");
    let html = b"<!doctype html><html><head><meta charset=\"utf-8\"><title>inline keepalives over gRPC-Web</title></head>\
<body><h1>inline keepalives over gRPC-Web</h1><script src=\"/page.js\"></script></body></html>"
        .to_vec();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let (bundle, html) = (bundle.clone(), html.clone());
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&request);
                let path = line.split_whitespace().nth(1).unwrap_or("/");
                let (status, kind, body) = match path.split('?').next() {
                    Some("/") => ("200 OK", "text/html; charset=utf-8", html),
                    Some("/page.js") => ("200 OK", "text/javascript", bundle),
                    _ => ("404 Not Found", "text/plain", b"not found".to_vec()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&body).await;
                let _ = socket.shutdown().await;
            });
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_stream_survives_nginx_with_inline_keepalives() {
    let Some(node) = require_node() else { return };
    let Some(chromium) = require_chromium() else {
        return;
    };
    let Some(nginx) = require(ProxyKind::Nginx) else {
        return;
    };

    let page_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", page_listener.local_addr().unwrap());
    let page = serve_page(page_listener);
    let mut server = WebServer::start(Stack::Keepalives, INTERVAL, &origin).await;
    let tls_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("grpc-web-browser-tls-{}", std::process::id()));
    let Some(tls) = self_signed_cert(&tls_dir) else {
        return;
    };
    // (label, client protocol, scheme, what nginx logs): the page watches
    // through both.
    let fronts = [
        ("HTTP/1.1", ClientHttp::Http1, "http", "HTTP/1.1"),
        ("h2 over TLS", ClientHttp::Http2, "https", "HTTP/2.0"),
    ];
    let mut proxies: Vec<RunningProxy> = Vec::new();
    for (_, http, scheme, _) in fronts {
        let mut config = ProxyConfig::new(ProxyKind::Nginx, server.addr, IDLE_TIMEOUT)
            .grpc_web(http)
            .with_binary(&nginx)
            .with_work_root(env!("CARGO_TARGET_TMPDIR"));
        if scheme == "https" {
            config = config.with_tls(tls.clone());
        }
        let proxy = tokio::task::spawn_blocking(move || RunningProxy::start(&config))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("starting nginx: {e}"));
        proxies.push(proxy);
    }
    let apis: String = fronts
        .iter()
        .zip(&proxies)
        .map(|((_, _, scheme, _), proxy)| format!("&api={scheme}://{}", proxy.addr()))
        .collect();
    let url = format!("{origin}/?count=2&gapMs={GAP_MS}&size={SIZE}{apis}");
    let lines = run_node(
        &node,
        "proof/browser.mjs",
        &[chromium.display().to_string(), url, "40000".to_owned()],
        Duration::from_secs(90),
    )
    .await;
    let results = CaseResult::parse_all(&lines);
    let seen = server.drain_seen();
    let output = lines.join("\n");
    let logs: Vec<String> = proxies.iter().map(RunningProxy::logs).collect();
    let context = || format!("browser output:\n{output}\nnginx:\n{}", logs.join("\n"));
    assert_eq!(results.len(), 2 * fronts.len(), "{}", context());

    let sent = |size: u32| {
        seen.iter()
            .find(|s| s.plan.is_some_and(|plan| plan.size == size))
            .and_then(|s| s.stats.as_ref())
            .map(|stats| stats.keepalives_sent())
            .unwrap_or_else(|| panic!("no handler report for size {size}; {}", context()))
    };
    eprintln!(
        "chromium through nginx (idle timeout {IDLE_TIMEOUT:?}), messages {GAP_MS} ms apart, \
         keepalives every {INTERVAL:?}:"
    );
    for line in lines
        .iter()
        .filter(|l| l.starts_with("BROWSER") || l.starts_with("PAGE"))
    {
        eprintln!("  {line}");
    }
    for (i, (label, _, _, protocol)) in fronts.iter().enumerate() {
        let inline = &results[2 * i];
        let plain = &results[2 * i + 1];
        let size = SIZE + 2 * i as u32;
        let (inline_sent, plain_sent) = (sent(size), sent(size + 1));
        eprintln!("  {label}: {}; server sent {inline_sent}", inline.summary());
        eprintln!("  {label}: {}; server sent {plain_sent}", plain.summary());
        let context = || format!("{label}; {}", context());

        // nginx saw the browser speak this front's protocol.
        let access: Vec<&str> = logs[i]
            .lines()
            .filter(|l| l.contains("/ikatest.Echo/Watch"))
            .collect();
        assert!(
            !access.is_empty() && access.iter().all(|l| l.contains(protocol)),
            "expected {protocol} in nginx's access log; {}",
            context()
        );

        assert_eq!(inline.name, format!("inline#{i}"));
        assert!(inline.ok, "the inline stream must survive; {}", context());
        assert_eq!(inline.seqs, [0, 1], "{}", context());
        assert!(inline.intact, "{}", context());
        assert_eq!(
            inline.surfaced,
            0,
            "no keepalive reaches the page's code; {}",
            context()
        );
        assert!(
            inline.elapsed >= Duration::from_millis(GAP_MS - 100),
            "{}",
            context()
        );
        assert!(inline_sent >= MIN_KEEPALIVES, "{}", context());
        assert_eq!(
            inline.removed,
            Some(inline_sent),
            "every keepalive removed; {}",
            context()
        );
        assert_eq!(inline.delivered, Some(2), "{}", context());
        assert_eq!(
            inline.announced,
            Some(true),
            "the page read wp-inline-keepalives: CORS exposes it; {}",
            context()
        );

        assert_eq!(plain.name, format!("plain#{i}"));
        assert!(
            !plain.ok,
            "the plain stream dies at nginx's idle timeout; {}",
            context()
        );
        assert_eq!(plain.seqs, [0], "{}", context());
        assert_eq!(plain.surfaced, 0, "{}", context());
        assert_eq!(plain_sent, 0, "no header, no keepalives; {}", context());
        assert!(
            (Duration::from_millis(1_500)..=Duration::from_millis(6_000)).contains(&plain.elapsed),
            "{}",
            context()
        );
    }

    for proxy in proxies {
        tokio::task::spawn_blocking(move || proxy.stop())
            .await
            .unwrap()
            .unwrap();
    }
    let _ = std::fs::remove_dir_all(&tls_dir);
    server.shutdown().await;
    page.abort();
}
