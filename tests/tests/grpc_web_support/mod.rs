//! Shared support of the gRPC-Web tests (`grpc_web*.rs`): the server setup
//! of the README's "Browsers (gRPC-Web)" section, compiled, with its CORS
//! recipe; a raw gRPC-Web client over HTTP/1.1 and h2 for every content
//! type; the decoding of what it receives; and the tools policy for node
//! and chromium.
#![allow(dead_code)] // each test file uses a different part

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use inlinekeepalive::tonic::{Config, ServerKeepaliveLayer};
use inlinekeepalive::wire::{KEEPALIVE_FRAME, KEEPALIVE_MESSAGE, METADATA_KEY};

use inlinekeepalive::core::{FrameFilter, Framing, Output};
use inlinekeepalive_tests::external::missing;
use inlinekeepalive_tests::proxies::ClientHttp;
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;
use tonic_web::GrpcWebLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::map_response_body::MapResponseBodyLayer;

use crate::tonic_support::pb::echo_server::EchoServer;
use crate::tonic_support::pb::{Item, Plan};
use crate::tonic_support::{EchoImpl, Seen};

// ---------------------------------------------------------------------------
// The server: the README's setup
// ---------------------------------------------------------------------------

/// The README's CORS recipe, as it is there: what a browser page on
/// `origin` needs to call a gRPC-Web server with inline keepalives.
/// Requests may carry the gRPC-Web headers and `wp-inline-keepalives` (a
/// preflight asks for them); responses expose the gRPC status headers and
/// `wp-inline-keepalives`.
pub fn grpc_web_cors(origin: HeaderValue) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::exact(origin))
        .allow_methods([Method::POST])
        .allow_headers([
            header::CONTENT_TYPE,
            HeaderName::from_static("x-grpc-web"),
            HeaderName::from_static("x-user-agent"),
            HeaderName::from_static("grpc-timeout"),
            HeaderName::from_static("wp-inline-keepalives"),
        ])
        .expose_headers([
            HeaderName::from_static("grpc-status"),
            HeaderName::from_static("grpc-message"),
            HeaderName::from_static("grpc-status-details-bin"),
            HeaderName::from_static("wp-inline-keepalives"),
        ])
        .max_age(Duration::from_secs(24 * 60 * 60))
}

/// How the server stacks its layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stack {
    /// The README's order: CORS, tonic-web, the body map, then the keepalive
    /// layer, which sees plain gRPC.
    Keepalives,
    /// CORS and tonic-web without the keepalive layer: no keepalives ever.
    Plain,
    /// The wrong order: the keepalive layer outside tonic-web. It sees
    /// gRPC-Web, passes it through and warns.
    WrongOrder,
}

/// A running gRPC-Web test server.
pub struct WebServer {
    pub addr: SocketAddr,
    pub seen: mpsc::UnboundedReceiver<Seen>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl WebServer {
    /// Starts the `Echo` service on a free loopback port, stacked as
    /// `stack`, sending keepalives every `interval`, allowing CORS calls from
    /// `origin`.
    pub async fn start(stack: Stack, interval: Duration, origin: &str) -> WebServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = TcpListenerStream::new(listener);
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let service = EchoServer::new(EchoImpl::new(seen_tx));
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async {
            let _ = stopped.await;
        };
        let origin = HeaderValue::from_str(origin).unwrap();
        let config = Config::new(interval).unwrap();
        let task = match stack {
            Stack::Keepalives => tokio::spawn(async move {
                // The README's "Browsers (gRPC-Web)" setup, as it is there.
                Server::builder()
                    .accept_http1(true) // browsers often speak HTTP/1.1
                    .layer(grpc_web_cors(origin)) // outermost: answers preflights
                    .layer(GrpcWebLayer::new()) // gRPC-Web <-> gRPC, base64 for -text
                    .layer(MapResponseBodyLayer::new(tonic::body::Body::new)) // tonic-web wants tonic's Body
                    .layer(ServerKeepaliveLayer::new(config)) // sees plain gRPC
                    .add_service(service)
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await
                    .unwrap();
            }),
            Stack::Plain => tokio::spawn(async move {
                Server::builder()
                    .accept_http1(true)
                    .layer(grpc_web_cors(origin))
                    .layer(GrpcWebLayer::new())
                    .add_service(service)
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await
                    .unwrap();
            }),
            Stack::WrongOrder => tokio::spawn(async move {
                Server::builder()
                    .accept_http1(true)
                    .layer(grpc_web_cors(origin))
                    .layer(MapResponseBodyLayer::new(tonic::body::Body::new))
                    .layer(ServerKeepaliveLayer::new(config))
                    .layer(GrpcWebLayer::new())
                    .add_service(service)
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await
                    .unwrap();
            }),
        };
        WebServer {
            addr,
            seen,
            stop: Some(stop),
            task,
        }
    }

    /// Every report the handlers sent so far.
    pub fn drain_seen(&mut self) -> Vec<Seen> {
        let mut all = Vec::new();
        while let Ok(seen) = self.seen.try_recv() {
            all.push(seen);
        }
        all
    }

    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

// ---------------------------------------------------------------------------
// A raw gRPC-Web client
// ---------------------------------------------------------------------------

/// The gRPC-Web content types a browser client sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebType {
    /// `application/grpc-web`
    Web,
    /// `application/grpc-web+proto`
    WebProto,
    /// `application/grpc-web-text` (base64 both ways)
    WebText,
}

impl WebType {
    pub const ALL: [WebType; 3] = [WebType::Web, WebType::WebProto, WebType::WebText];

    pub fn content_type(self) -> &'static str {
        match self {
            WebType::Web => "application/grpc-web",
            WebType::WebProto => "application/grpc-web+proto",
            WebType::WebText => "application/grpc-web-text",
        }
    }

    pub fn is_text(self) -> bool {
        self == WebType::WebText
    }
}

/// One gRPC-Web request.
#[derive(Clone, Debug)]
pub struct WebRequest {
    pub path: &'static str,
    pub content_type: WebType,
    /// Send `wp-inline-keepalives: true`.
    pub announce: bool,
    /// The body as sent (already base64 for -text, or deliberately broken).
    pub body: Vec<u8>,
    /// Extra headers (an `Origin`, say).
    pub headers: Vec<(&'static str, String)>,
    pub method: Method,
    /// Bounds the whole call.
    pub deadline: Duration,
}

impl WebRequest {
    /// A `Watch` call carrying `plan`, framed (and base64-encoded for -text).
    pub fn watch(content_type: WebType, plan: Plan, announce: bool) -> Self {
        let mut frame = vec![0];
        let payload = plan.encode_to_vec();
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(&payload);
        let body = if content_type.is_text() {
            base64_encode(&frame).into_bytes()
        } else {
            frame
        };
        WebRequest {
            path: "/ikatest.Echo/Watch",
            content_type,
            announce,
            body,
            headers: Vec::new(),
            method: Method::POST,
            deadline: Duration::from_secs(30),
        }
    }
}

/// What the client received.
#[derive(Debug)]
pub struct WebCall {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body's data chunks as they arrived (still base64 for -text).
    pub chunks: Vec<Bytes>,
    /// How the body ended: `Ok` at its end, else the error.
    pub end: Result<(), String>,
    pub elapsed: Duration,
}

impl WebCall {
    /// A response header's value, lowercased (CORS lists compare without
    /// case); empty when absent.
    pub fn header_lowercase(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_ascii_lowercase())
            .unwrap_or_default()
    }

    /// The whole body as received.
    pub fn raw(&self) -> Vec<u8> {
        self.chunks.concat()
    }
}

/// Sends `request` to `addr` over a fresh connection speaking `http`.
pub async fn web_call(addr: SocketAddr, http: ClientHttp, request: WebRequest) -> WebCall {
    let started = Instant::now();
    let deadline = request.deadline;
    match tokio::time::timeout(deadline, web_call_inner(addr, http, request, started)).await {
        Ok(call) => call,
        Err(_) => panic!("gRPC-Web call to {addr} over {http} still running after {deadline:?}"),
    }
}

async fn web_call_inner(
    addr: SocketAddr,
    http: ClientHttp,
    request: WebRequest,
    started: Instant,
) -> WebCall {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let io = TokioIo::new(tcp);
    let uri = match http {
        ClientHttp::Http1 => request.path.to_owned(),
        ClientHttp::Http2 => format!("http://{addr}{}", request.path),
    };
    let mut builder = http::Request::builder()
        .method(request.method.clone())
        .uri(uri)
        .header(header::CONTENT_TYPE, request.content_type.content_type())
        // tonic-web picks the response's encoding from `accept`: what
        // grpc-web's text mode sends.
        .header(header::ACCEPT, request.content_type.content_type())
        .header("x-grpc-web", "1");
    if http == ClientHttp::Http1 {
        // h2 carries the authority in the URI (`:authority`); a `host` header
        // beside it is a duplicate that nginx refuses with 400.
        builder = builder.header(header::HOST, addr.to_string());
    }
    if request.announce {
        builder = builder.header(METADATA_KEY, "true");
    }
    for (name, value) in &request.headers {
        builder = builder.header(*name, value);
    }
    let req = builder.body(Full::new(Bytes::from(request.body))).unwrap();
    let response = match http {
        ClientHttp::Http1 => {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            sender.send_request(req).await
        }
        ClientHttp::Http2 => {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .unwrap();
            tokio::spawn(conn);
            sender.send_request(req).await
        }
    };
    let response = match response {
        Ok(response) => response,
        Err(error) => {
            return WebCall {
                status: StatusCode::BAD_GATEWAY,
                headers: HeaderMap::new(),
                chunks: Vec::new(),
                end: Err(format!("no response: {error}")),
                elapsed: started.elapsed(),
            }
        }
    };
    let (parts, mut body) = response.into_parts();
    let mut chunks = Vec::new();
    let end = loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    chunks.push(data);
                }
            }
            Some(Err(error)) => break Err(error.to_string()),
            None => break Ok(()),
        }
    };
    WebCall {
        status: parts.status,
        headers: parts.headers,
        chunks,
        end,
        elapsed: started.elapsed(),
    }
}

// ---------------------------------------------------------------------------
// Decoding what came back
// ---------------------------------------------------------------------------

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.len();
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= n {
                out.push(BASE64[(v >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes a gRPC-Web-text body: a concatenation of padded base64 pieces
/// (tonic-web encodes each body chunk on its own), so it is read quad by
/// quad, padding allowed at the end of any quad.
pub fn base64_decode_pieces(text: &[u8]) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(4) {
        return Err(format!(
            "{} base64 characters, not a multiple of 4",
            text.len()
        ));
    }
    let value = |c: u8| BASE64.iter().position(|&b| b == c).map(|v| v as u32);
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for quad in text.chunks(4) {
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 {
            return Err(format!("bad quad {:?}", String::from_utf8_lossy(quad)));
        }
        let mut v = 0u32;
        for &c in &quad[..4 - pad] {
            v = (v << 6) | value(c).ok_or_else(|| format!("bad base64 character {c:#x}"))?;
        }
        v <<= 6 * pad as u32;
        out.extend_from_slice(&v.to_be_bytes()[1..4 - pad]);
    }
    Ok(out)
}

/// The frames of a decoded gRPC-Web response body.
#[derive(Debug, Default)]
pub struct WebFrames {
    /// Application messages, in order.
    pub items: Vec<Item>,
    /// Keepalive frames (exactly [`KEEPALIVE_FRAME`]).
    pub keepalives: usize,
    /// The trailers frame's text, if it came.
    pub trailers: Option<String>,
    /// Frames after the trailers frame, other flags, or a cut frame.
    pub problems: Vec<String>,
}

impl WebFrames {
    /// Walks `body` frame by frame, by hand.
    pub fn parse(mut body: &[u8]) -> Self {
        let mut frames = WebFrames::default();
        while !body.is_empty() {
            if frames.trailers.is_some() {
                frames
                    .problems
                    .push(format!("{} bytes after the trailers", body.len()));
                break;
            }
            let Some(header) = body.first_chunk::<5>() else {
                frames.problems.push(format!("a cut header: {body:02x?}"));
                break;
            };
            let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
            let Some(payload) = body.get(5..5 + len) else {
                frames.problems.push(format!("a cut frame of {len} bytes"));
                break;
            };
            match header[0] {
                0 if payload == KEEPALIVE_MESSAGE => frames.keepalives += 1,
                0 => match Item::decode(payload) {
                    Ok(item) => frames.items.push(item),
                    Err(error) => frames.problems.push(format!("not an Item: {error}")),
                },
                0x80 => frames.trailers = Some(String::from_utf8_lossy(payload).into_owned()),
                flag => frames.problems.push(format!("flag {flag:#x}")),
            }
            body = &body[5 + len..];
        }
        frames
    }

    /// The `grpc-status` of the trailers frame.
    pub fn grpc_status(&self) -> Option<&str> {
        self.trailer("grpc-status")
    }

    /// One trailer's value.
    pub fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers.as_deref()?.split("\r\n").find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// Filters a decoded gRPC-Web response body through the core's
/// `FrameFilter` in gRPC-Web framing, fed in `chunk`-byte pieces: what passes
/// (the application frames and the trailers frame), the keepalives removed,
/// and whether it ended cleanly.
pub fn core_filter(body: &[u8], chunk: usize) -> (Vec<u8>, u64, Result<(), String>) {
    let mut filter = FrameFilter::new().with_framing(Framing::GrpcWeb);
    let mut passed = Vec::new();
    for piece in body.chunks(chunk.max(1)) {
        let mut input = piece;
        while !input.is_empty() {
            let step = match filter.step(input) {
                Ok(step) => step,
                Err(error) => {
                    return (
                        passed,
                        filter.stats().keepalives_removed,
                        Err(error.to_string()),
                    )
                }
            };
            match step.output {
                Output::Forward(range) => passed.extend_from_slice(&input[range]),
                Output::Held(bytes) => passed.extend_from_slice(bytes),
                Output::Removed | Output::Nothing => {}
            }
            input = &input[step.consumed..];
        }
    }
    let end = filter.finish().map_err(|e| e.to_string());
    let end = end.and_then(|()| {
        filter
            .trailers_seen()
            .then_some(())
            .ok_or_else(|| "no trailers frame".to_owned())
    });
    (passed, filter.stats().keepalives_removed, end)
}

/// [`KEEPALIVE_FRAME`] in base64, as tonic-web sends it in -text mode: 27
/// bytes, so 36 characters without padding.
pub fn keepalive_base64() -> String {
    base64_encode(&KEEPALIVE_FRAME)
}

// ---------------------------------------------------------------------------
// Tools: node, the js/ package, chromium
// ---------------------------------------------------------------------------

/// The repository's `js/` directory.
pub fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../js")
}

/// `node`, with `js/` installed and built (`npm ci && npm run build`), or
/// `None` (and a SKIPPED line) outside CI.
pub fn require_node() -> Option<PathBuf> {
    let node = find_in_path("node")
        .or_else(|| missing("node", "apt-get install -y nodejs, or put node in PATH"))?;
    let js = js_dir();
    if !js.join("node_modules/@connectrpc/connect-node").is_dir() {
        return missing("js/node_modules", "run `npm ci` in js/");
    }
    if !js.join("dist/index.js").is_file() || !js.join("dist/proof/page.js").is_file() {
        return missing("js/dist", "run `npm run build` in js/");
    }
    Some(node)
}

/// Debian's chromium (or `INLINEKEEPALIVE_CHROMIUM`), or `None` outside CI.
pub fn require_chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("INLINEKEEPALIVE_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .or_else(|| find_in_path("chromium"))
        .or_else(|| missing("chromium", "apt-get install -y chromium"))
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Runs `node <script> <args..>` in `js/`, bounded by `timeout`, and returns
/// its stdout lines; panics with stderr on failure.
pub async fn run_node(
    node: &Path,
    script: &str,
    args: &[String],
    timeout: Duration,
) -> Vec<String> {
    let mut command = tokio::process::Command::new(node);
    command
        .arg(script)
        .args(args)
        .current_dir(js_dir())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(timeout, command.output())
        .await
        .unwrap_or_else(|_| panic!("node {script} still running after {timeout:?}"))
        .unwrap_or_else(|e| panic!("running node {script}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "node {script} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    if !stderr.trim().is_empty() {
        eprintln!("node {script} stderr:\n{stderr}");
    }
    stdout.lines().map(str::to_owned).collect()
}

// ---------------------------------------------------------------------------
// Captured tracing events
// ---------------------------------------------------------------------------

/// A minimal `tracing` subscriber that keeps every event's level, target and
/// message (the tests crate has no tracing-subscriber).
#[derive(Clone, Debug, Default)]
pub struct Captured(pub Arc<Mutex<Vec<(tracing::Level, String, String)>>>);

impl Captured {
    pub fn events(&self) -> Vec<(tracing::Level, String, String)> {
        self.0.lock().unwrap().clone()
    }
}

struct MessageVisitor(String);

impl tracing::field::Visit for MessageVisitor {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl tracing::Subscriber for Captured {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut visitor = MessageVisitor(String::new());
        event.record(&mut visitor);
        let meta = event.metadata();
        self.0
            .lock()
            .unwrap()
            .push((*meta.level(), meta.target().to_owned(), visitor.0));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

// ---------------------------------------------------------------------------
// The JS proofs' results
// ---------------------------------------------------------------------------

/// One case of a JS proof, from its `RESULT` line (`js/proof/result.mjs`).
#[derive(Clone, Debug, Default)]
pub struct CaseResult {
    pub name: String,
    /// The stream ended cleanly (status OK).
    pub ok: bool,
    /// The gRPC code's name, when it did not.
    pub code: String,
    pub message: String,
    pub elapsed: Duration,
    /// Sequence numbers the application iterated, in order.
    pub seqs: Vec<u64>,
    /// Every message had the payload the server sends for its sequence number.
    pub intact: bool,
    /// Messages with unknown fields: keepalives that reached the application.
    pub surfaced: u64,
    /// The interceptor's counters (`None` without it).
    pub removed: Option<u64>,
    pub delivered: Option<u64>,
    pub collisions: Option<u64>,
    /// Whether the response header `wp-inline-keepalives: true` was readable.
    pub announced: Option<bool>,
}

impl CaseResult {
    /// Parses the `RESULT` lines of a proof's output.
    pub fn parse_all(lines: &[String]) -> Vec<CaseResult> {
        lines
            .iter()
            .filter_map(|line| line.strip_prefix("RESULT\t"))
            .map(CaseResult::parse)
            .collect()
    }

    fn parse(line: &str) -> CaseResult {
        let mut r = CaseResult::default();
        let number = |v: &str| {
            (!v.is_empty()).then(|| v.parse::<u64>().unwrap_or_else(|e| panic!("{v}: {e}")))
        };
        for pair in line.split('\t') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "name" => r.name = value.to_owned(),
                "ok" => r.ok = value == "true",
                "code" => r.code = value.to_owned(),
                "message" => r.message = value.to_owned(),
                "elapsedMs" => r.elapsed = Duration::from_millis(number(value).unwrap_or(0)),
                "seqs" => r.seqs = value.split(',').filter_map(number).collect(),
                "intact" => r.intact = value == "true",
                "surfaced" => r.surfaced = number(value).unwrap_or(0),
                "removed" => r.removed = number(value),
                "delivered" => r.delivered = number(value),
                "collisions" => r.collisions = number(value),
                "announced" => r.announced = (!value.is_empty()).then_some(value == "true"),
                _ => {}
            }
        }
        r
    }

    /// One line for a person.
    pub fn summary(&self) -> String {
        let end = if self.ok {
            "OK".to_owned()
        } else {
            format!("{} ({})", self.code, self.message)
        };
        format!(
            "{:<26} {end} after {:.1} s; messages {:?}, intact {}, reaching the app {}; interceptor: removed {:?}, delivered {:?}, header seen {:?}",
            self.name,
            self.elapsed.as_secs_f64(),
            self.seqs,
            self.intact,
            self.surfaced,
            self.removed,
            self.delivered,
            self.announced,
        )
    }
}

/// A self-signed certificate for 127.0.0.1, made in `dir` by the `openssl`
/// command (for nginx's TLS listener in the browser's h2 case), or `None`
/// (and a SKIPPED line) outside CI without openssl.
pub fn self_signed_cert(dir: &Path) -> Option<inlinekeepalive_tests::proxies::Tls> {
    let openssl =
        find_in_path("openssl").or_else(|| missing("openssl", "apt-get install -y openssl"))?;
    std::fs::create_dir_all(dir).unwrap();
    let tls = inlinekeepalive_tests::proxies::Tls {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    let output = std::process::Command::new(openssl)
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&tls.key)
        .arg("-out")
        .arg(&tls.cert)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running openssl");
    assert!(
        output.status.success(),
        "openssl req failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(tls)
}
