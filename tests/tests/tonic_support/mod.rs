//! Shared support of the tonic layer tests: the generated `Echo` service, a
//! server with or without the keepalive layer, and a recording layer that
//! keeps the raw gRPC bytes each side put on the wire.
#![allow(dead_code)] // each test file uses a different part

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use inlinekeepalive::tonic::{
    ClientKeepalive, ClientKeepaliveLayer, KeepaliveStats, ServerKeepaliveLayer,
};
use inlinekeepalive::wire;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Status, Streaming};
use tower::{Layer, Service};

pub mod pb {
    tonic::include_proto!("ikatest");
}

use pb::echo_server::{Echo, EchoServer};
use pb::{Item, Plan, Summary};

pub const MS: fn(u64) -> Duration = Duration::from_millis;

/// An item whose payload is derived from its sequence number, so a test can
/// check it arrived intact.
pub fn item(seq: u64, size: usize) -> Item {
    Item {
        seq,
        payload: Bytes::from(vec![(seq % 251) as u8; size]),
        collision: 0,
    }
}

/// Whether `got` is `item(seq, size)` for its own `seq`.
pub fn intact(got: &Item, size: usize) -> bool {
    got.payload.len() == size && got.payload.iter().all(|&b| b == (got.seq % 251) as u8)
}

/// What a handler saw of one call.
#[derive(Debug)]
pub struct Seen {
    pub method: &'static str,
    /// The plan of a `Watch` call.
    pub plan: Option<Plan>,
    /// The server layer's per-stream counters (from the request extensions).
    pub stats: Option<KeepaliveStats>,
    /// Items received, in order (client and bidi streams).
    pub items: Vec<Item>,
    /// The error the request stream ended with, if any.
    pub error: Option<Status>,
}

/// The test service: `Watch` sends `count` items of `size` bytes as its
/// plan says, `Upload` collects, `Chat` echoes; each call is reported to
/// `seen`. Shared by the tonic and the gRPC-Web tests.
#[derive(Clone)]
pub struct EchoImpl {
    seen: mpsc::UnboundedSender<Seen>,
}

impl EchoImpl {
    pub fn new(seen: mpsc::UnboundedSender<Seen>) -> Self {
        Self { seen }
    }
}

type ItemStream = Pin<Box<dyn Stream<Item = Result<Item, Status>> + Send>>;

#[tonic::async_trait]
impl Echo for EchoImpl {
    type WatchStream = ItemStream;
    type ChatStream = ItemStream;

    async fn watch(
        &self,
        request: tonic::Request<Plan>,
    ) -> Result<tonic::Response<ItemStream>, Status> {
        let stats = request.extensions().get::<KeepaliveStats>().cloned();
        let plan = request.into_inner();
        let _ = self.seen.send(Seen {
            method: "watch",
            plan: Some(plan),
            stats,
            items: Vec::new(),
            error: None,
        });
        let size = plan.size as usize;
        if plan.gap_ms == 0 && plan.first_gap_ms == 0 {
            // As fast as possible (the benchmark): one shared payload.
            let payload = Bytes::from(vec![7u8; size]);
            let items = (0..plan.count).map(move |seq| {
                Ok(Item {
                    seq,
                    payload: payload.clone(),
                    collision: 0,
                })
            });
            return Ok(tonic::Response::new(Box::pin(tokio_stream::iter(items))));
        }
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            for seq in 0..plan.count {
                let gap = if seq == 0 {
                    plan.first_gap_ms
                } else {
                    plan.gap_ms
                };
                tokio::time::sleep(MS(gap.into())).await;
                if tx.send(Ok(item(seq, size))).await.is_err() {
                    break;
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn upload(
        &self,
        request: tonic::Request<Streaming<Item>>,
    ) -> Result<tonic::Response<Summary>, Status> {
        let stats = request.extensions().get::<KeepaliveStats>().cloned();
        let mut stream = request.into_inner();
        let mut items = Vec::new();
        let mut error = None;
        loop {
            match stream.message().await {
                Ok(Some(item)) => items.push(item),
                Ok(None) => break,
                Err(status) => {
                    error = Some(status);
                    break;
                }
            }
        }
        let summary = Summary {
            count: items.len() as u64,
            last_seq: items.last().map_or(0, |i| i.seq),
            seqs: items.iter().map(|i| i.seq).collect(),
        };
        let failed = error.clone();
        let _ = self.seen.send(Seen {
            method: "upload",
            plan: None,
            stats,
            items,
            error,
        });
        match failed {
            Some(status) => Err(status),
            None => Ok(tonic::Response::new(summary)),
        }
    }

    async fn chat(
        &self,
        request: tonic::Request<Streaming<Item>>,
    ) -> Result<tonic::Response<ItemStream>, Status> {
        let stats = request.extensions().get::<KeepaliveStats>().cloned();
        let mut stream = request.into_inner();
        let seen = self.seen.clone();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut items = Vec::new();
            let mut error = None;
            loop {
                match stream.message().await {
                    Ok(Some(item)) => {
                        items.push(item.clone());
                        if tx.send(Ok(item)).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        error = Some(status);
                        break;
                    }
                }
            }
            let _ = seen.send(Seen {
                method: "chat",
                plan: None,
                stats,
                items,
                error,
            });
        });
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// The raw bytes of the request and response bodies that passed a
/// [`RecordLayer`].
#[derive(Clone, Debug, Default)]
pub struct Wire {
    pub requests: Arc<Mutex<Vec<u8>>>,
    pub responses: Arc<Mutex<Vec<u8>>>,
}

impl Wire {
    pub fn request_frames(&self) -> Frames {
        Frames::parse(&self.requests.lock().unwrap())
    }

    pub fn response_frames(&self) -> Frames {
        Frames::parse(&self.responses.lock().unwrap())
    }
}

/// gRPC frames parsed from raw body bytes.
#[derive(Debug, Default)]
pub struct Frames {
    pub keepalives: usize,
    pub others: usize,
    /// Bytes left after the last whole frame (0 for a well-formed body).
    pub trailing: usize,
}

impl Frames {
    pub fn parse(mut raw: &[u8]) -> Self {
        let mut frames = Frames::default();
        while raw.len() >= 5 {
            let len = u32::from_be_bytes([raw[1], raw[2], raw[3], raw[4]]) as usize;
            let Some(payload) = raw.get(5..5 + len) else {
                break;
            };
            if raw[0] == 0 && payload == wire::KEEPALIVE_MESSAGE {
                frames.keepalives += 1;
            } else {
                frames.others += 1;
            }
            raw = &raw[5 + len..];
        }
        frames.trailing = raw.len();
        frames
    }
}

/// A layer that records the raw bytes of every request and response body.
/// Outermost on a server, it sees what the server receives and sends;
/// innermost on a client (next to the `Channel`), what the client sends and
/// receives.
#[derive(Clone, Debug, Default)]
pub struct RecordLayer(pub Wire);

impl<S> Layer<S> for RecordLayer {
    type Service = Record<S>;

    fn layer(&self, inner: S) -> Record<S> {
        Record {
            inner,
            wire: self.0.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Record<S> {
    inner: S,
    wire: Wire,
}

impl<S, ResBody> Service<Request<tonic::body::Body>> for Record<S>
where
    S: Service<Request<tonic::body::Body>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<Recorded<ResBody>>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<tonic::body::Body>) -> Self::Future {
        let sink = self.wire.requests.clone();
        let request = request.map(|body| tonic::body::Body::new(Recorded::new(body, sink)));
        let future = self.inner.call(request);
        let sink = self.wire.responses.clone();
        Box::pin(async move {
            let response = future.await?;
            Ok(response.map(|body| Recorded::new(body, sink)))
        })
    }
}

pub struct Recorded<B> {
    inner: Pin<Box<B>>,
    sink: Arc<Mutex<Vec<u8>>>,
}

impl<B> Recorded<B> {
    fn new(inner: B, sink: Arc<Mutex<Vec<u8>>>) -> Self {
        Self {
            inner: Box::pin(inner),
            sink,
        }
    }
}

impl<B: Body<Data = Bytes>> Body for Recorded<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = self.inner.as_mut().poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.sink.lock().unwrap().extend_from_slice(data);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A running test server.
pub struct TestServer {
    pub addr: SocketAddr,
    /// What the handlers saw, one entry per call.
    pub seen: mpsc::UnboundedReceiver<Seen>,
    /// Raw bytes as the server received and sent them (outside the layer).
    pub wire: Wire,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    /// The next call a handler finished with.
    pub async fn next_seen(&mut self) -> Seen {
        tokio::time::timeout(Duration::from_secs(10), self.seen.recv())
            .await
            .expect("a handler reports within 10 s")
            .expect("server alive")
    }

    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// Starts the `Echo` server on a free loopback port, with the keepalive
/// layer if given, and a [`RecordLayer`] outermost.
pub async fn start_server(layer: Option<ServerKeepaliveLayer>) -> TestServer {
    start(layer, true).await
}

/// As [`start_server`], without the recording layer (for the benchmark).
pub async fn start_unrecorded_server(layer: Option<ServerKeepaliveLayer>) -> TestServer {
    start(layer, false).await
}

async fn start(layer: Option<ServerKeepaliveLayer>, record: bool) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = TcpListenerStream::new(listener);
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let service = EchoServer::new(EchoImpl::new(seen_tx));
    let wire = Wire::default();
    let recorder = RecordLayer(wire.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async {
        let _ = stopped.await;
    };
    // Each combination is its own type, hence four spawns.
    macro_rules! serve {
        ($builder:expr) => {
            tokio::spawn(async move {
                $builder
                    .add_service(service)
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await
                    .unwrap();
            })
        };
    }
    let task = match (layer, record) {
        (Some(layer), true) => serve!(Server::builder().layer(recorder).layer(layer)),
        (Some(layer), false) => serve!(Server::builder().layer(layer)),
        (None, true) => serve!(Server::builder().layer(recorder)),
        (None, false) => serve!(Server::builder()),
    };
    TestServer {
        addr,
        seen,
        wire,
        stop: Some(stop),
        task,
    }
}

/// A plain channel to `addr`.
pub async fn connect(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A channel to `addr` through the client layer `layer`.
pub async fn connect_layered(
    addr: SocketAddr,
    layer: ClientKeepaliveLayer,
) -> ClientKeepalive<Channel> {
    layer.layer(connect(addr).await)
}

/// The [`KeepaliveStats`] the client layer put into a response's extensions.
pub fn stats_of<T>(response: &tonic::Response<T>) -> KeepaliveStats {
    response
        .extensions()
        .get::<KeepaliveStats>()
        .cloned()
        .expect("the client layer inserts KeepaliveStats")
}

/// `items`, one every `gap`, from a small producer task.
pub fn paced(items: Vec<Item>, gap: Duration) -> impl Stream<Item = Item> + Send + 'static {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        for item in items {
            tokio::time::sleep(gap).await;
            if tx.send(item).await.is_err() {
                break;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Receives every item of a response stream.
pub async fn collect(mut stream: Streaming<Item>) -> Result<Vec<Item>, Status> {
    let mut items = Vec::new();
    while let Some(item) = stream.next().await {
        items.push(item?);
    }
    Ok(items)
}

/// Asserts `items` are `0..n` in order, each intact.
pub fn assert_in_order(items: &[Item], n: u64, size: usize) {
    let seqs: Vec<u64> = items.iter().map(|i| i.seq).collect();
    assert_eq!(seqs, (0..n).collect::<Vec<_>>(), "all items, in order");
    for item in items {
        assert!(intact(item, size), "item {} arrived intact", item.seq);
        assert_eq!(item.collision, 0, "no keepalive surfaced as a message");
    }
}

/// Items sent each after its own delay, from a small producer task.
pub fn scheduled(items: Vec<(Duration, Item)>) -> impl Stream<Item = Item> + Send + 'static {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        for (delay, item) in items {
            tokio::time::sleep(delay).await;
            if tx.send(item).await.is_err() {
                break;
            }
        }
    });
    ReceiverStream::new(rx)
}
