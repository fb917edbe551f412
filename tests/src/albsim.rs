//! `albsim`: a simulated L7 load balancer with a per-stream idle timeout.
//!
//! `albsim` is an HTTP/2 reverse proxy for cleartext HTTP/2 with prior
//! knowledge (h2c). It accepts downstream connections, opens one upstream
//! connection per downstream connection and relays every stream: request
//! headers, DATA and trailers go upstream, response headers, DATA and
//! trailers come back, all unchanged (so gRPC's `grpc-status` trailers pass).
//! On top of that it behaves like AWS ALB, nginx or HAProxy towards idle
//! streams, which is what inline keepalives exist to defeat:
//!
//! - **PINGs are answered, never forwarded.** The `h2` crate answers an
//!   HTTP/2 PING on the connection it arrived on. A PING therefore never
//!   reaches the other side and never counts as activity on any stream.
//! - **A stream whose DATA stops flowing in one direction is reset.**
//!
//! # The idle rule, exactly
//!
//! Each stream has two directions, client-to-server (the request body) and
//! server-to-client (the response body), and one idle clock per direction.
//!
//! 1. Only a DATA frame with a **non-empty payload** received from the sending
//!    side of a direction is activity for that direction. HEADERS, trailers,
//!    empty DATA frames, WINDOW_UPDATE, PING and anything on the other
//!    direction are not.
//! 2. A direction's clock runs only while `albsim` waits for that sender's
//!    next DATA frame. It restarts from zero once a non-empty DATA frame has
//!    been forwarded completely (so a slow *receiver* that withholds flow
//!    control credit never makes the *sender* look idle).
//! 3. The client-to-server clock starts when the request headers arrive. The
//!    server-to-client clock starts when the request has ended (its
//!    END_STREAM was forwarded upstream) or when the first non-empty response
//!    DATA frame has been forwarded, whichever comes first. This mirrors
//!    nginx, whose `grpc_read_timeout` is not armed while a client stream is
//!    still sending, and lets a client-streaming call whose server stays
//!    silent until the end survive on client-to-server keepalives alone.
//!    Waiting for the response headers counts as server-to-client idleness.
//! 4. A direction that has ended (END_STREAM forwarded, by an empty DATA
//!    frame or by trailers) cannot go idle any more. Once the response has
//!    ended the stream is finished and nothing is watched at all.
//! 5. When a running clock reaches [`AlbSimConfig::idle_timeout`], `albsim`
//!    sends RST_STREAM to the downstream client with the reason configured
//!    for that direction, sends RST_STREAM `CANCEL` upstream, counts the
//!    reset in [`DirectionStats::idle_resets`] and logs it with `tracing` at
//!    `WARN` level.
//!
//! The directions are independent: data flowing one way does not keep the
//! other way alive. This is stricter than HAProxy (data either way re-arms
//! its single timer) and than nginx once a bidirectional stream has flowed
//! both ways. A keepalive layer that passes `albsim` passes those too.
//!
//! # Reset reasons
//!
//! The defaults copy what nginx sends (see `PROXIES.md`): `INTERNAL_ERROR`
//! when the server-to-client direction went idle (`grpc_read_timeout`, which
//! gRPC clients report as `INTERNAL`) and `PROTOCOL_ERROR` when the
//! client-to-server direction went idle (`client_body_timeout`). ALB's
//! documented behaviour is the same from a gRPC client's view: the stream
//! dies with an error status. Both reasons are configurable.
//!
//! Other failures are passed through: a reset from one side is forwarded to
//! the other with the same reason; if the upstream cannot be reached or fails
//! before the response headers, the client gets HTTP `502` (gRPC
//! `UNAVAILABLE`), and after the headers an RST_STREAM `INTERNAL_ERROR`.
//!
//! # Counters
//!
//! [`AlbSim::stats`] returns an [`AlbSimStats`] snapshot. Answered PINGs are
//! not counted: `h2` answers them internally and does not expose a count.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::time::Duration;
//! use inlinekeepalive_tests::albsim::{AlbSim, AlbSimConfig};
//!
//! let upstream = "127.0.0.1:50051".parse().unwrap();
//! let config = AlbSimConfig::new(
//!     "127.0.0.1:0".parse().unwrap(),
//!     upstream,
//!     Duration::from_secs(2),
//! );
//! let sim = AlbSim::start(config).await?;
//! println!("point your client at {}", sim.local_addr());
//! // ... run traffic ...
//! println!("{:?}", sim.stats());
//! sim.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::{Request, Response, StatusCode};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio::time::{Instant, Sleep};

/// Configuration of an [`AlbSim`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlbSimConfig {
    /// Address to listen on for downstream h2c connections. Port 0 picks a
    /// free port; read it back with [`AlbSim::local_addr`].
    pub listen: SocketAddr,
    /// Address of the upstream h2c server every stream is forwarded to.
    pub upstream: SocketAddr,
    /// How long one direction of a stream may carry no DATA before the
    /// stream is reset (see the [module docs](self) for the exact rule).
    /// Must not be zero.
    pub idle_timeout: Duration,
    /// RST_STREAM reason sent downstream when the server-to-client direction
    /// went idle. Default `INTERNAL_ERROR`, as nginx sends.
    pub server_idle_reason: Reason,
    /// RST_STREAM reason sent downstream when the client-to-server direction
    /// went idle. Default `PROTOCOL_ERROR`, as nginx sends.
    pub client_idle_reason: Reason,
}

impl AlbSimConfig {
    /// A configuration with the default reset reasons.
    pub fn new(listen: SocketAddr, upstream: SocketAddr, idle_timeout: Duration) -> Self {
        Self {
            listen,
            upstream,
            idle_timeout,
            server_idle_reason: Reason::INTERNAL_ERROR,
            client_idle_reason: Reason::PROTOCOL_ERROR,
        }
    }

    fn idle_reason(&self, direction: Direction) -> Reason {
        match direction {
            Direction::ClientToServer => self.client_idle_reason,
            Direction::ServerToClient => self.server_idle_reason,
        }
    }
}

/// One direction of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the downstream client to the upstream server (request body).
    ClientToServer,
    /// From the upstream server to the downstream client (response body).
    ServerToClient,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::ClientToServer => "client-to-server",
            Direction::ServerToClient => "server-to-client",
        })
    }
}

/// Counters of one direction, part of [`AlbSimStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Non-empty DATA frames received from the sender and forwarded.
    pub data_frames: u64,
    /// Payload bytes of those DATA frames.
    pub data_bytes: u64,
    /// Streams reset because this direction was idle for the idle timeout.
    pub idle_resets: u64,
}

/// A snapshot of an [`AlbSim`]'s counters, from [`AlbSim::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AlbSimStats {
    /// Downstream TCP connections accepted.
    pub connections: u64,
    /// Downstream connections whose upstream connection could not be set up
    /// (their requests are answered with HTTP 502).
    pub upstream_connect_failures: u64,
    /// Streams opened by downstream clients.
    pub streams_opened: u64,
    /// Streams whose response was forwarded up to its END_STREAM.
    pub streams_completed: u64,
    /// Counters of the request direction.
    pub client_to_server: DirectionStats,
    /// Counters of the response direction.
    pub server_to_client: DirectionStats,
}

impl AlbSimStats {
    /// Counters of one direction.
    pub fn direction(&self, direction: Direction) -> &DirectionStats {
        match direction {
            Direction::ClientToServer => &self.client_to_server,
            Direction::ServerToClient => &self.server_to_client,
        }
    }

    /// Streams reset for idleness, both directions together.
    pub fn idle_resets(&self) -> u64 {
        self.client_to_server.idle_resets + self.server_to_client.idle_resets
    }
}

#[derive(Default)]
struct DirectionCounters {
    data_frames: AtomicU64,
    data_bytes: AtomicU64,
    idle_resets: AtomicU64,
}

impl DirectionCounters {
    fn snapshot(&self) -> DirectionStats {
        DirectionStats {
            data_frames: self.data_frames.load(Ordering::Relaxed),
            data_bytes: self.data_bytes.load(Ordering::Relaxed),
            idle_resets: self.idle_resets.load(Ordering::Relaxed),
        }
    }
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    upstream_connect_failures: AtomicU64,
    streams_opened: AtomicU64,
    streams_completed: AtomicU64,
    client_to_server: DirectionCounters,
    server_to_client: DirectionCounters,
}

impl Counters {
    fn direction(&self, direction: Direction) -> &DirectionCounters {
        match direction {
            Direction::ClientToServer => &self.client_to_server,
            Direction::ServerToClient => &self.server_to_client,
        }
    }
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

struct Shared {
    config: AlbSimConfig,
    counters: Counters,
}

/// A running simulated load balancer; see the [module docs](self).
///
/// Dropping the handle stops it like [`AlbSim::shutdown`] does, without
/// waiting for the tasks to finish.
pub struct AlbSim {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl fmt::Debug for AlbSim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlbSim")
            .field("local_addr", &self.local_addr)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl AlbSim {
    /// Binds [`AlbSimConfig::listen`] and spawns the accept loop on the
    /// current tokio runtime.
    ///
    /// Fails if binding fails or if the idle timeout is zero
    /// ([`io::ErrorKind::InvalidInput`]). The upstream is not contacted
    /// here: each downstream connection opens its own upstream connection.
    ///
    /// # Panics
    ///
    /// Panics if called outside a tokio runtime (like `tokio::spawn`).
    pub async fn start(config: AlbSimConfig) -> io::Result<AlbSim> {
        if config.idle_timeout.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "albsim: idle timeout must not be zero",
            ));
        }
        let listener = TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config,
            counters: Counters::default(),
        });
        tracing::debug!(%local_addr, upstream = %shared.config.upstream, "albsim listening");
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(AlbSim {
            local_addr,
            shared,
            task,
        })
    }

    /// The address the proxy listens on (with the real port if port 0 was
    /// configured).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &AlbSimConfig {
        &self.shared.config
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> AlbSimStats {
        let c = &self.shared.counters;
        AlbSimStats {
            connections: c.connections.load(Ordering::Relaxed),
            upstream_connect_failures: c.upstream_connect_failures.load(Ordering::Relaxed),
            streams_opened: c.streams_opened.load(Ordering::Relaxed),
            streams_completed: c.streams_completed.load(Ordering::Relaxed),
            client_to_server: c.client_to_server.snapshot(),
            server_to_client: c.server_to_client.snapshot(),
        }
    }

    /// Stops accepting and aborts every connection and stream task; waits
    /// until the accept loop has stopped. Open connections are closed
    /// abruptly (TCP close, no GOAWAY).
    pub async fn shutdown(mut self) {
        self.task.abort();
        // The only possible error is the cancellation we just asked for.
        let _ = (&mut self.task).await;
    }
}

impl Drop for AlbSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accepts downstream connections until aborted. Dropping the `JoinSet`
/// (when this task is aborted) aborts every connection task, which in turn
/// drop their stream tasks.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        match listener.accept().await {
            Ok((socket, peer)) => {
                bump(&shared.counters.connections, 1);
                // Keepalive frames are tiny; do not let Nagle hold them back.
                let _ = socket.set_nodelay(true);
                connections.spawn(serve_connection(socket, peer, Arc::clone(&shared)));
            }
            Err(error) => {
                // Typically EMFILE; back off instead of spinning.
                tracing::warn!(%error, "albsim: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        while connections.try_join_next().is_some() {}
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn connect_upstream(addr: SocketAddr) -> io::Result<(SendRequest<Bytes>, AbortOnDrop)> {
    let socket = TcpStream::connect(addr).await?;
    let _ = socket.set_nodelay(true);
    let (send_request, connection) = h2::client::handshake(socket).await.map_err(h2_to_io)?;
    let driver = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "albsim: upstream connection ended with an error");
        }
    });
    Ok((send_request, AbortOnDrop(driver.abort_handle())))
}

fn h2_to_io(error: h2::Error) -> io::Error {
    if error.is_io() {
        match error.into_io() {
            Some(io) => io,
            None => io::Error::other("h2 I/O error"),
        }
    } else {
        io::Error::other(error)
    }
}

async fn serve_connection(socket: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let upstream = match connect_upstream(shared.config.upstream).await {
        Ok(upstream) => Some(upstream),
        Err(error) => {
            bump(&shared.counters.upstream_connect_failures, 1);
            tracing::warn!(%peer, upstream = %shared.config.upstream, %error,
                "albsim: cannot connect upstream, answering 502");
            None
        }
    };
    let mut downstream = match h2::server::handshake(socket).await {
        Ok(connection) => connection,
        Err(error) => {
            tracing::debug!(%peer, %error, "albsim: downstream HTTP/2 handshake failed");
            return;
        }
    };
    let mut streams = JoinSet::new();
    while let Some(accepted) = downstream.accept().await {
        match accepted {
            Ok((request, mut respond)) => {
                bump(&shared.counters.streams_opened, 1);
                match &upstream {
                    Some((send_request, _)) => {
                        streams.spawn(relay_stream(
                            request,
                            respond,
                            send_request.clone(),
                            peer,
                            Arc::clone(&shared),
                        ));
                    }
                    None => send_bad_gateway(&mut respond),
                }
            }
            Err(error) => {
                tracing::debug!(%peer, %error, "albsim: downstream connection error");
                break;
            }
        }
        while streams.try_join_next().is_some() {}
    }
    // `accept` returns `None` only once the connection is closed: no stream
    // can make progress any more, so dropping `streams` (aborting them) and
    // the upstream connection loses nothing.
}

fn send_bad_gateway(respond: &mut SendResponse<Bytes>) {
    let mut response = Response::new(());
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    if respond.send_response(response, true).is_err() {
        respond.send_reset(Reason::INTERNAL_ERROR);
    }
}

/// HTTP/2 requires `:scheme` and `:authority` on a forwarded request; fill
/// them in if the downstream client left them out.
fn complete_uri(uri: &http::Uri, upstream: SocketAddr) -> Option<http::Uri> {
    if uri.scheme().is_some() && uri.authority().is_some() {
        return None;
    }
    let mut parts = uri.clone().into_parts();
    if parts.scheme.is_none() {
        parts.scheme = Some(http::uri::Scheme::HTTP);
    }
    if parts.authority.is_none() {
        parts.authority = http::uri::Authority::try_from(upstream.to_string()).ok();
    }
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    http::Uri::from_parts(parts).ok()
}

async fn relay_stream(
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    send_request: SendRequest<Bytes>,
    peer: SocketAddr,
    shared: Arc<Shared>,
) {
    let stream = u32::from(respond.stream_id());
    let (mut parts, request_body) = request.into_parts();
    if let Some(uri) = complete_uri(&parts.uri, shared.config.upstream) {
        parts.uri = uri;
    }
    let request_ended = request_body.is_end_stream();
    let mut send_request = match send_request.ready().await {
        Ok(ready) => ready,
        Err(error) => {
            tracing::warn!(%peer, stream, %error, "albsim: upstream connection unusable, answering 502");
            send_bad_gateway(&mut respond);
            return;
        }
    };
    let (response, upstream_send) = match send_request
        .send_request(Request::from_parts(parts, ()), request_ended)
    {
        Ok(sent) => sent,
        Err(error) => {
            tracing::warn!(%peer, stream, %error, "albsim: cannot forward request, answering 502");
            send_bad_gateway(&mut respond);
            return;
        }
    };
    let timeout = shared.config.idle_timeout;
    let mut relay = Relay {
        counters: &shared.counters,
        c2s: Pipe::new(request_body, upstream_send, Direction::ClientToServer),
        c2s_idle: IdleClock::new(timeout),
        s2c: ServerToClient::Head { response, respond },
        s2c_idle: IdleClock::new(timeout),
    };
    if request_ended {
        relay.c2s.state = PipeState::Done;
        relay.c2s_idle.disarm();
        relay.s2c_idle.arm();
    } else {
        relay.c2s_idle.arm();
    }
    let outcome = poll_fn(|cx| relay.poll(cx)).await;
    match outcome {
        Outcome::Complete => bump(&shared.counters.streams_completed, 1),
        Outcome::Idle(direction) => {
            let reason = shared.config.idle_reason(direction);
            relay.reset_downstream(reason);
            relay.reset_upstream(Reason::CANCEL);
            bump(&shared.counters.direction(direction).idle_resets, 1);
            tracing::warn!(
                %peer, stream, %direction, idle_timeout = ?timeout, ?reason,
                "albsim: stream idle, sent RST_STREAM"
            );
        }
        Outcome::Downstream(reason) => {
            let reason = reason.unwrap_or(Reason::CANCEL);
            relay.reset_upstream(reason);
            tracing::debug!(%peer, stream, ?reason, "albsim: downstream ended the stream, reset upstream");
        }
        Outcome::Upstream(reason) => {
            let reason = reason.unwrap_or(Reason::INTERNAL_ERROR);
            match &mut relay.s2c {
                ServerToClient::Head { respond, .. } if reason != Reason::REFUSED_STREAM => {
                    send_bad_gateway(respond);
                }
                _ => relay.reset_downstream(reason),
            }
            relay.reset_upstream(Reason::CANCEL);
            tracing::debug!(%peer, stream, ?reason, "albsim: upstream ended the stream, reset downstream");
        }
    }
}

/// How a relayed stream ended.
#[derive(Debug)]
enum Outcome {
    /// The response was forwarded up to its END_STREAM.
    Complete,
    /// A direction was idle for the idle timeout.
    Idle(Direction),
    /// The downstream client reset the stream (or its connection failed:
    /// `None`).
    Downstream(Option<Reason>),
    /// The upstream server reset the stream (or its connection failed).
    Upstream(Option<Reason>),
}

/// Why a [`Pipe`] stopped early.
#[derive(Debug)]
enum PipeError {
    /// The sender was idle for the idle timeout.
    Idle,
    /// Receiving from the sender failed (reset, connection error).
    Source(Option<Reason>),
    /// Sending to the receiver failed (reset, connection error).
    Sink(Option<Reason>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PipeState {
    /// Forwarding DATA frames.
    Data,
    /// DATA is over; forwarding trailers or the bare END_STREAM.
    Trailers,
    /// END_STREAM forwarded.
    Done,
}

/// Forwards one direction of a stream: DATA with flow control, then
/// trailers or END_STREAM.
struct Pipe {
    src: RecvStream,
    dst: SendStream<Bytes>,
    /// Payload received but not yet sent (waiting for send capacity).
    pending: Bytes,
    state: PipeState,
    direction: Direction,
}

impl Pipe {
    fn new(src: RecvStream, dst: SendStream<Bytes>, direction: Direction) -> Self {
        Self {
            src,
            dst,
            pending: Bytes::new(),
            state: PipeState::Data,
            direction,
        }
    }

    /// Drives the pipe; `Ready(Ok(()))` once END_STREAM has been forwarded.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        idle: &mut IdleClock,
        counters: &Counters,
    ) -> Poll<Result<(), PipeError>> {
        loop {
            if !self.pending.is_empty() {
                self.dst.reserve_capacity(self.pending.len());
                match self.dst.poll_capacity(cx) {
                    Poll::Ready(Some(Ok(capacity))) => {
                        let chunk = self.pending.split_to(capacity.min(self.pending.len()));
                        let sent = chunk.len();
                        self.dst
                            .send_data(chunk, false)
                            .map_err(|e| PipeError::Sink(e.reason()))?;
                        // Give the sender credit only for what has left, so a
                        // slow receiver slows the sender down.
                        self.src
                            .flow_control()
                            .release_capacity(sent)
                            .map_err(|e| PipeError::Source(e.reason()))?;
                        if self.pending.is_empty() {
                            idle.arm();
                        }
                        continue;
                    }
                    Poll::Ready(Some(Err(e))) => {
                        return Poll::Ready(Err(PipeError::Sink(e.reason())))
                    }
                    Poll::Ready(None) => return Poll::Ready(Err(self.sink_closed(cx))),
                    Poll::Pending => return Poll::Pending,
                }
            }
            match self.state {
                PipeState::Data => match self.src.poll_data(cx) {
                    Poll::Ready(Some(Ok(data))) => {
                        if !data.is_empty() {
                            let c = counters.direction(self.direction);
                            bump(&c.data_frames, 1);
                            bump(&c.data_bytes, data.len() as u64);
                            self.pending = data;
                        }
                        continue;
                    }
                    Poll::Ready(Some(Err(e))) => {
                        return Poll::Ready(Err(PipeError::Source(e.reason())))
                    }
                    Poll::Ready(None) => {
                        self.state = PipeState::Trailers;
                        continue;
                    }
                    Poll::Pending => {}
                },
                PipeState::Trailers => match self.src.poll_trailers(cx) {
                    Poll::Ready(Ok(Some(trailers))) => {
                        self.dst
                            .send_trailers(trailers)
                            .map_err(|e| PipeError::Sink(e.reason()))?;
                        self.state = PipeState::Done;
                        continue;
                    }
                    Poll::Ready(Ok(None)) => {
                        self.dst
                            .send_data(Bytes::new(), true)
                            .map_err(|e| PipeError::Sink(e.reason()))?;
                        self.state = PipeState::Done;
                        continue;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(PipeError::Source(e.reason()))),
                    Poll::Pending => {}
                },
                PipeState::Done => {
                    idle.disarm();
                    return Poll::Ready(Ok(()));
                }
            };
            // Waiting for the sender: watch the receiver for resets and the
            // sender for idleness.
            if let Poll::Ready(reset) = self.dst.poll_reset(cx) {
                return Poll::Ready(Err(PipeError::Sink(match reset {
                    Ok(reason) => Some(reason),
                    Err(e) => e.reason(),
                })));
            }
            if idle.poll_expired(cx) {
                return Poll::Ready(Err(PipeError::Idle));
            }
            return Poll::Pending;
        }
    }

    fn sink_closed(&mut self, cx: &mut Context<'_>) -> PipeError {
        match self.dst.poll_reset(cx) {
            Poll::Ready(Ok(reason)) => PipeError::Sink(Some(reason)),
            Poll::Ready(Err(e)) => PipeError::Sink(e.reason()),
            Poll::Pending => PipeError::Sink(None),
        }
    }
}

/// The idle clock of one direction (rules 2 to 4 of the module docs).
struct IdleClock {
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    armed: bool,
}

impl IdleClock {
    fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            sleep: Box::pin(tokio::time::sleep_until(deadline_after(timeout))),
            armed: false,
        }
    }

    /// (Re)starts the clock from now.
    fn arm(&mut self) {
        self.sleep.as_mut().reset(deadline_after(self.timeout));
        self.armed = true;
    }

    /// Starts the clock unless it is already running.
    fn arm_if_unarmed(&mut self) {
        if !self.armed {
            self.arm();
        }
    }

    fn disarm(&mut self) {
        self.armed = false;
    }

    /// True once a running clock has reached the timeout; registers `cx` for
    /// the deadline otherwise.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.armed && self.sleep.as_mut().poll(cx).is_ready()
    }
}

/// `now + timeout`, saturating far in the future instead of overflowing.
fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

/// The response direction before and after its headers.
enum ServerToClient {
    /// Waiting for the upstream's response headers.
    Head {
        response: ResponseFuture,
        respond: SendResponse<Bytes>,
    },
    /// Headers forwarded; relaying the body.
    Body(Pipe),
}

/// Both directions of one stream, polled by one task.
struct Relay<'a> {
    counters: &'a Counters,
    c2s: Pipe,
    c2s_idle: IdleClock,
    s2c: ServerToClient,
    s2c_idle: IdleClock,
}

impl Relay<'_> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Outcome> {
        if self.c2s.state != PipeState::Done {
            match self.c2s.poll(cx, &mut self.c2s_idle, self.counters) {
                Poll::Ready(Ok(())) => {
                    // Request complete: now the server owes us data (rule 3).
                    self.s2c_idle.arm_if_unarmed();
                }
                Poll::Ready(Err(PipeError::Idle)) => {
                    return Poll::Ready(Outcome::Idle(Direction::ClientToServer))
                }
                Poll::Ready(Err(PipeError::Source(reason))) => {
                    return Poll::Ready(Outcome::Downstream(reason))
                }
                Poll::Ready(Err(PipeError::Sink(Some(Reason::NO_ERROR)))) => {
                    // The upstream does not want the rest of the request
                    // (RFC 9113 section 8.1): stop forwarding it, keep
                    // relaying the response.
                    self.c2s.state = PipeState::Done;
                    self.c2s_idle.disarm();
                    self.s2c_idle.arm_if_unarmed();
                }
                Poll::Ready(Err(PipeError::Sink(reason))) => {
                    return Poll::Ready(Outcome::Upstream(reason))
                }
                Poll::Pending => {}
            }
        }
        loop {
            let body = match &mut self.s2c {
                ServerToClient::Head { response, respond } => match Pin::new(response).poll(cx) {
                    Poll::Ready(Ok(head)) => {
                        let (parts, body) = head.into_parts();
                        let end = body.is_end_stream();
                        match respond.send_response(Response::from_parts(parts, ()), end) {
                            Ok(_) if end => return Poll::Ready(Outcome::Complete),
                            Ok(send) => Pipe::new(body, send, Direction::ServerToClient),
                            Err(e) => return Poll::Ready(Outcome::Downstream(e.reason())),
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Outcome::Upstream(e.reason())),
                    Poll::Pending => {
                        if let Poll::Ready(reset) = respond.poll_reset(cx) {
                            return Poll::Ready(Outcome::Downstream(match reset {
                                Ok(reason) => Some(reason),
                                Err(e) => e.reason(),
                            }));
                        }
                        if self.s2c_idle.poll_expired(cx) {
                            return Poll::Ready(Outcome::Idle(Direction::ServerToClient));
                        }
                        return Poll::Pending;
                    }
                },
                ServerToClient::Body(pipe) => {
                    return match pipe.poll(cx, &mut self.s2c_idle, self.counters) {
                        Poll::Ready(Ok(())) => Poll::Ready(Outcome::Complete),
                        Poll::Ready(Err(PipeError::Idle)) => {
                            Poll::Ready(Outcome::Idle(Direction::ServerToClient))
                        }
                        Poll::Ready(Err(PipeError::Source(reason))) => {
                            Poll::Ready(Outcome::Upstream(reason))
                        }
                        Poll::Ready(Err(PipeError::Sink(reason))) => {
                            Poll::Ready(Outcome::Downstream(reason))
                        }
                        Poll::Pending => Poll::Pending,
                    };
                }
            };
            self.s2c = ServerToClient::Body(body);
        }
    }

    fn reset_downstream(&mut self, reason: Reason) {
        match &mut self.s2c {
            ServerToClient::Head { respond, .. } => respond.send_reset(reason),
            ServerToClient::Body(pipe) => pipe.dst.send_reset(reason),
        }
    }

    fn reset_upstream(&mut self, reason: Reason) {
        self.c2s.dst.send_reset(reason);
    }
}

/// Error of [`parse_duration`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseDurationError {
    /// The input was empty (or only whitespace).
    Empty,
    /// No digits before the unit, as in `"ms"` or `"-1s"`.
    MissingNumber,
    /// Digits without a unit, as in `"500"`.
    MissingUnit,
    /// A unit other than `ns`, `us`, `ms`, `s`, `m`, `h`.
    UnknownUnit(String),
    /// The value does not fit in a `Duration`.
    Overflow,
}

impl fmt::Display for ParseDurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("empty duration"),
            Self::MissingNumber => f.write_str("duration must start with a non-negative integer"),
            Self::MissingUnit => {
                f.write_str("duration needs a unit (ns, us, ms, s, m, h), as in 500ms or 2s")
            }
            Self::UnknownUnit(unit) => {
                write!(
                    f,
                    "unknown duration unit {unit:?} (use ns, us, ms, s, m, h)"
                )
            }
            Self::Overflow => f.write_str("duration too large"),
        }
    }
}

impl std::error::Error for ParseDurationError {}

/// Parses a duration written as an integer and a unit: `500ms`, `2s`, `1m`.
///
/// Units: `ns`, `us` (or `µs`), `ms`, `s`, `m` (minutes), `h`. Surrounding
/// whitespace and whitespace between number and unit are accepted;
/// fractions and signs are not. `0s` is a valid (zero) duration.
pub fn parse_duration(text: &str) -> Result<Duration, ParseDurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ParseDurationError::Empty);
    }
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(ParseDurationError::MissingNumber);
    }
    // Only ASCII digits remain, so the sole possible failure is overflow.
    let value: u64 = digits.parse().map_err(|_| ParseDurationError::Overflow)?;
    let unit = unit.trim_start();
    let seconds_per = |secs: u64| {
        value
            .checked_mul(secs)
            .map(Duration::from_secs)
            .ok_or(ParseDurationError::Overflow)
    };
    match unit {
        "" => Err(ParseDurationError::MissingUnit),
        "ns" => Ok(Duration::from_nanos(value)),
        "us" | "µs" => Ok(Duration::from_micros(value)),
        "ms" => Ok(Duration::from_millis(value)),
        "s" => seconds_per(1),
        "m" => seconds_per(60),
        "h" => seconds_per(3600),
        other => Err(ParseDurationError::UnknownUnit(other.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_duration_accepts_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("3h"), Ok(Duration::from_secs(3 * 3600)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse_duration(" 60 s "), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn parse_duration_rejects_bad_input() {
        use ParseDurationError as E;
        assert_eq!(parse_duration(""), Err(E::Empty));
        assert_eq!(parse_duration("   "), Err(E::Empty));
        assert_eq!(parse_duration("500"), Err(E::MissingUnit));
        assert_eq!(parse_duration("ms"), Err(E::MissingNumber));
        assert_eq!(parse_duration("-1s"), Err(E::MissingNumber));
        assert_eq!(parse_duration("1.5s"), Err(E::UnknownUnit(".5s".into())));
        assert_eq!(parse_duration("2d"), Err(E::UnknownUnit("d".into())));
        assert_eq!(parse_duration("99999999999999999999s"), Err(E::Overflow));
        assert_eq!(parse_duration("18446744073709551615h"), Err(E::Overflow));
    }

    #[test]
    fn complete_uri_fills_scheme_and_authority() {
        let upstream: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let full: http::Uri = "http://example/svc/M".parse().unwrap();
        assert_eq!(complete_uri(&full, upstream), None);
        let relative: http::Uri = "/svc/M".parse().unwrap();
        assert_eq!(
            complete_uri(&relative, upstream),
            Some("http://127.0.0.1:9/svc/M".parse().unwrap())
        );
    }

    #[test]
    fn huge_idle_timeout_does_not_overflow() {
        let _ = deadline_after(Duration::MAX);
    }
}
