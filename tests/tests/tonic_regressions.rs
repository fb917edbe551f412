//! Regression tests of the tonic layers:
//!
//! - dead-peer detection counts every received byte as proof of life, so a
//!   large message that arrives slowly is never killed as "silent";
//! - bodies that are not gRPC over HTTP/2 (gRPC-Web, anything else) are
//!   never touched: no keepalive inserted, none removed.

mod tonic_support;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full, StreamBody};
use inlinekeepalive::tonic::{ClientKeepaliveLayer, Config, ServerKeepaliveLayer};
use inlinekeepalive::wire::KEEPALIVE_FRAME;
use inlinekeepalive_tests::h2grpc::{grpc_frame, grpc_status_trailers};
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::Server;
use tonic_support::*;
use tower::{Layer, Service, ServiceExt};

/// The keepalive interval of the slow-message tests.
const INTERVAL: Duration = Duration::from_millis(200);
/// Their peer timeout: far shorter than the time the message takes.
const PEER_TIMEOUT: Duration = Duration::from_millis(600);
/// The payload of the slow message.
const SIZE: usize = 64 * 1024;
/// It arrives in chunks of this size...
const CHUNK: usize = 1024;
/// ...this far apart (about 1.3 s for the whole message).
const GAP: Duration = Duration::from_millis(20);

fn slow_config() -> Config {
    Config::new(INTERVAL)
        .unwrap()
        .with_peer_timeout(PEER_TIMEOUT)
        .unwrap()
}

/// A body made of `chunks`, each DATA frame sent after its delay (measured
/// from the previous one), then `trailers` if any.
type SlowBody = StreamBody<Pin<Box<dyn Stream<Item = Result<Frame<Bytes>, Infallible>> + Send>>>;

fn slow_body(chunks: Vec<(Duration, Bytes)>, trailers: Option<HeaderMap>) -> SlowBody {
    let data = tokio_stream::iter(chunks).then(|(delay, bytes)| async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok(Frame::data(bytes))
    });
    let trailers = tokio_stream::iter(trailers.map(|t| Ok(Frame::trailers(t))));
    StreamBody::new(Box::pin(data.chain(trailers)))
}

/// One keepalive at once (proof that the peer sends them), then `frame` in
/// [`CHUNK`]-byte pieces, [`GAP`] apart.
fn keepalive_then_slowly(frame: &[u8]) -> Vec<(Duration, Bytes)> {
    let mut chunks = vec![(Duration::ZERO, Bytes::from_static(&KEEPALIVE_FRAME))];
    chunks.extend(
        frame
            .chunks(CHUNK)
            .map(|piece| (GAP, Bytes::copy_from_slice(piece))),
    );
    chunks
}

/// `item` as one uncompressed gRPC frame.
fn encode(item: &pb::Item) -> Bytes {
    use prost::Message;
    grpc_frame(&item.encode_to_vec())
}

fn grpc_status(parts: &http::response::Parts, trailers: Option<&HeaderMap>) -> Option<String> {
    trailers
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| parts.headers.get("grpc-status"))
        .map(|v| v.to_str().unwrap().to_owned())
}

/// A service that knows nothing of gRPC: it records each request body as it
/// arrived (or the error it ended with) and answers with `content_type`,
/// the body `response` (chunks after their delays) and `trailers`.
#[derive(Clone)]
struct RawService {
    content_type: &'static str,
    response: Vec<(Duration, Bytes)>,
    trailers: Option<HeaderMap>,
    requests: Arc<Mutex<Vec<Result<Bytes, String>>>>,
}

impl RawService {
    fn new(content_type: &'static str, response: Vec<(Duration, Bytes)>) -> Self {
        Self {
            content_type,
            response,
            trailers: None,
            requests: Arc::default(),
        }
    }

    fn last_request(&self) -> Result<Bytes, String> {
        self.requests
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the service was called")
    }
}

impl tonic::server::NamedService for RawService {
    const NAME: &'static str = "ikatest.Raw";
}

impl<B> Service<Request<B>> for RawService
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::fmt::Debug,
{
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let body = match request.into_body().collect().await {
                Ok(collected) => Ok(collected.to_bytes()),
                Err(error) => Err(format!("{error:?}")),
            };
            this.requests.lock().unwrap().push(body);
            let body = slow_body(this.response.clone(), this.trailers.clone());
            Ok(Response::builder()
                .header(CONTENT_TYPE, this.content_type)
                .body(tonic::body::Body::new(body))
                .unwrap())
        })
    }
}

/// Serves `service` behind `layer` on a free loopback port.
async fn start_raw_server(
    service: RawService,
    layer: ServerKeepaliveLayer,
) -> (std::net::SocketAddr, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        Server::builder()
            .layer(layer)
            .add_service(service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (addr, stop)
}

/// Case A, client to server: the server layer, with a peer timeout, receives
/// a client stream whose only message takes far longer than the peer
/// timeout to arrive, a byte every few milliseconds. Every byte proves the
/// client alive: the message reaches the handler whole.
#[tokio::test]
async fn peer_timeout_does_not_kill_a_slow_large_message_client_to_server() {
    let mut server = start_server(Some(ServerKeepaliveLayer::new(slow_config()))).await;
    let mut channel = connect(server.addr).await;
    let body = slow_body(keepalive_then_slowly(&encode(&item(0, SIZE))), None);
    let request = Request::builder()
        .method("POST")
        .uri(format!("http://{}/ikatest.Echo/Upload", server.addr))
        .header(CONTENT_TYPE, "application/grpc")
        .header("te", "trailers")
        .header("wp-inline-keepalives", "true")
        .body(tonic::body::Body::new(body))
        .unwrap();
    let started = Instant::now();
    let response = tokio::time::timeout(Duration::from_secs(10), async {
        let response = channel.ready().await.unwrap().call(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let collected = body.collect().await.unwrap();
        grpc_status(&parts, collected.trailers())
    })
    .await
    .expect("the call ends within 10 s");
    let elapsed = started.elapsed();
    let seen = server.next_seen().await;
    assert!(
        seen.error.is_none(),
        "the server layer ended a request whose message was still arriving (after {elapsed:?}, \
         peer timeout {PEER_TIMEOUT:?}, a chunk every {GAP:?}): {:?}",
        seen.error
    );
    assert_eq!(seen.items.len(), 1, "the one message arrived");
    assert!(intact(&seen.items[0], SIZE), "the message arrived whole");
    assert_eq!(response.as_deref(), Some("0"));
    assert!(
        elapsed > 2 * PEER_TIMEOUT,
        "the message took {elapsed:?}, not longer than the peer timeout: the test proves nothing"
    );
    server.shutdown().await;
}

/// Case B, server to client: the client layer, with a peer timeout, receives
/// a response whose only message takes far longer than the peer timeout to
/// arrive. The server runs the server layer (so it announces support) and
/// sends one keepalive first.
#[tokio::test]
async fn peer_timeout_does_not_kill_a_slow_large_message_server_to_client() {
    let message = encode(&item(0, SIZE));
    let mut service = RawService::new("application/grpc", keepalive_then_slowly(&message));
    service.trailers = Some(grpc_status_trailers(0));
    let (addr, stop) = start_raw_server(service, ServerKeepaliveLayer::new(slow_config())).await;
    let mut channel = connect_layered(addr, ClientKeepaliveLayer::new(slow_config())).await;
    let request = Request::builder()
        .method("POST")
        .uri(format!("http://{addr}/ikatest.Raw/Call"))
        .header(CONTENT_TYPE, "application/grpc")
        .header("te", "trailers")
        .body(Full::new(grpc_frame(b"")))
        .unwrap();
    let started = Instant::now();
    let (parts, result) = tokio::time::timeout(Duration::from_secs(10), async {
        let response = ServiceExt::<Request<Full<Bytes>>>::ready(&mut channel)
            .await
            .unwrap()
            .call(request)
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        (parts, body.collect().await)
    })
    .await
    .expect("the call ends within 10 s");
    let elapsed = started.elapsed();
    let collected = match result {
        Ok(collected) => collected,
        Err(status) => panic!(
            "the client layer ended a response whose message was still arriving (after \
             {elapsed:?}, peer timeout {PEER_TIMEOUT:?}, a chunk every {GAP:?}): {status:?}"
        ),
    };
    assert_eq!(
        grpc_status(&parts, collected.trailers()).as_deref(),
        Some("0")
    );
    let data = collected.to_bytes();
    assert!(
        data == message,
        "the message arrived whole, without the keepalive ({} bytes, expected {})",
        data.len(),
        message.len()
    );
    assert!(
        elapsed > 2 * PEER_TIMEOUT,
        "the message took {elapsed:?}, not longer than the peer timeout: the test proves nothing"
    );
    let _ = stop.send(());
}

/// How long a non-gRPC body stays idle between its two chunks: many
/// keepalive intervals.
const IDLE: Duration = Duration::from_millis(300);

/// Two chunks [`IDLE`] apart, each made of whole gRPC-shaped frames (so a
/// layer that mistook the body for gRPC would find a boundary to insert
/// keepalives at), the first with a keepalive frame in it (so one that
/// filtered it would remove it).
fn idle_non_grpc_body() -> (Vec<(Duration, Bytes)>, Bytes) {
    let mut first = grpc_frame(b"first").to_vec();
    first.extend_from_slice(&KEEPALIVE_FRAME);
    let second = grpc_frame(b"second").to_vec();
    let mut whole = first.clone();
    whole.extend_from_slice(&second);
    (
        vec![
            (Duration::ZERO, Bytes::from(first)),
            (IDLE, Bytes::from(second)),
        ],
        Bytes::from(whole),
    )
}

/// `None` if `got` is `expected`, else what differs.
fn difference(what: String, expected: &[u8], got: Result<Bytes, String>) -> Option<String> {
    match got {
        Ok(got) if got == expected => None,
        Ok(got) => {
            let count = |bytes: &[u8]| {
                bytes
                    .windows(KEEPALIVE_FRAME.len())
                    .filter(|w| *w == KEEPALIVE_FRAME)
                    .count()
            };
            Some(format!(
                "{what}: changed: {} bytes with {} keepalive frames, sent {} bytes with {}",
                got.len(),
                count(&got),
                expected.len(),
                count(expected)
            ))
        }
        Err(error) => Some(format!("{what}: failed: {error}")),
    }
}

/// Calls `service` with `request` and collects the response body, within
/// 5 s; a body error comes back as its `Debug` text.
async fn call_and_collect<S, B>(
    service: &mut S,
    request: Request<SlowBody>,
) -> Result<Bytes, String>
where
    S: Service<Request<SlowBody>, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    tokio::time::timeout(Duration::from_secs(5), async {
        let response = ServiceExt::<Request<SlowBody>>::ready(service)
            .await
            .unwrap()
            .call(request)
            .await
            .unwrap();
        response.into_body().collect().await.map(|c| c.to_bytes())
    })
    .await
    .expect("the call ends within 5 s")
    .map_err(|status| format!("{status:?}"))
}

/// Neither layer inserts keepalives into, or removes them from, a body that
/// is not gRPC over HTTP/2 (`application/grpc` or `application/grpc+...`),
/// however long it stays idle and whatever the other side announced.
#[tokio::test]
async fn non_grpc_bodies_are_never_touched() {
    let (chunks, whole) = idle_non_grpc_body();
    let mut problems = Vec::new();

    // Client layer, support assumed: requests out, responses back.
    for content_type in [
        "application/grpc-web",
        "application/grpc-web+proto",
        "application/octet-stream",
    ] {
        let inner = RawService::new(content_type, chunks.clone());
        let mut client = ClientKeepaliveLayer::new(Config::new(MS(50)).unwrap())
            .assume_server_support()
            .layer(inner.clone());
        let request = Request::builder()
            .method("POST")
            .uri("http://raw.test/ikatest.Raw/Call")
            .header(CONTENT_TYPE, content_type)
            .body(slow_body(chunks.clone(), None))
            .unwrap();
        let response = call_and_collect(&mut client, request).await;
        problems.extend(difference(
            format!("client layer, {content_type} request body"),
            &whole,
            inner.last_request(),
        ));
        problems.extend(difference(
            format!("client layer, {content_type} response body"),
            &whole,
            response,
        ));
    }

    // Server layer, whose client announced support: a non-gRPC response to
    // a gRPC request, and a gRPC-Web exchange.
    for (request_type, response_type) in [
        ("application/grpc", "application/octet-stream"),
        ("application/grpc", "application/grpc-web"),
        ("application/grpc-web", "application/grpc-web"),
        ("application/grpc-web+proto", "application/grpc-web+proto"),
    ] {
        let inner = RawService::new(response_type, chunks.clone());
        let mut server =
            ServerKeepaliveLayer::new(Config::new(MS(50)).unwrap()).layer(inner.clone());
        let request_body = if request_type == "application/grpc" {
            vec![(Duration::ZERO, grpc_frame(b"request"))]
        } else {
            chunks.clone()
        };
        let request = Request::builder()
            .method("POST")
            .uri("http://raw.test/ikatest.Raw/Call")
            .header(CONTENT_TYPE, request_type)
            .header("te", "trailers")
            .header("wp-inline-keepalives", HeaderValue::from_static("true"))
            .body(slow_body(request_body, None))
            .unwrap();
        let response = call_and_collect(&mut server, request).await;
        if request_type != "application/grpc" {
            problems.extend(difference(
                format!("server layer, {request_type} request body"),
                &whole,
                inner.last_request(),
            ));
        }
        problems.extend(difference(
            format!("server layer, {response_type} response body to an {request_type} request"),
            &whole,
            response,
        ));
    }

    assert!(
        problems.is_empty(),
        "non-gRPC bodies were changed:\n{}",
        problems.join("\n")
    );
}
