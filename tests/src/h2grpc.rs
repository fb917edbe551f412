//! A raw-`h2` "gRPC-shaped" server and client for tests.
//!
//! Neither side knows protobuf: they move gRPC *frames* (a 5-byte prefix plus
//! a message) on a schedule the test chooses and report exactly what
//! happened on the wire, including resets. That makes them suitable for
//! testing proxies ([`albsim`](crate::albsim), real nginx and HAProxy) and
//! keepalive layers alike.
//!
//! - [`GrpcServer`]: an upstream that, per request, reads the request body,
//!   sends response headers (`content-type: application/grpc`), then the
//!   DATA of a [`ServerBehavior`] schedule, then trailers (`grpc-status: 0`
//!   by default). Each finished stream yields a [`ServerReport`].
//! - [`call`]: a client that opens one connection and one stream, sends the
//!   request DATA of a [`CallSpec`] schedule, optionally sends HTTP/2 PINGs
//!   periodically, and returns a [`CallOutcome`]: response headers, DATA
//!   bytes, trailers, or the reset reason.
//!
//! Each [`Scheduled`] item is sent as one DATA frame after its delay, so a
//! schedule both fixes the bytes and the gaps between them. Helpers build
//! common items: [`Scheduled::message`] (a gRPC frame),
//! [`Scheduled::keepalive`] (the 27-byte [`KEEPALIVE_FRAME`]) and
//! [`keepalives`] (a run of them).
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::time::Duration;
//! use inlinekeepalive_tests::h2grpc::{
//!     call, keepalives, CallSpec, GrpcServer, Scheduled, ServerBehavior,
//! };
//!
//! let ms = Duration::from_millis;
//! // Upstream: one message, 1 s of keepalives every 100 ms, a last message.
//! let mut schedule = vec![Scheduled::message(ms(0), b"first")];
//! schedule.extend(keepalives(ms(100), 10));
//! schedule.push(Scheduled::message(ms(100), b"last"));
//! let mut server = GrpcServer::start(
//!     "127.0.0.1:0".parse().unwrap(),
//!     ServerBehavior::respond(schedule),
//! )
//! .await?;
//!
//! let outcome = call(server.local_addr(), CallSpec::unary(b"request")).await?;
//! assert_eq!(outcome.grpc_status(), Some("0"));
//! assert_eq!(outcome.received.messages().map(|m| m.len()), Some(12));
//! let report = server.next_report(ms(1000)).await;
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::{Ping, Reason, RecvStream, SendStream};
use http::header::{HeaderMap, HeaderValue, CONTENT_TYPE, TE};
use http::{Method, Request, Response, StatusCode};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

/// The 27-byte Waypoint inline keepalive, as one gRPC frame: the 5-byte
/// prefix (uncompressed, length 22), then the message (field 5000000 as
/// `82 90 BC FD 02`, length `10`, the ASCII text `inline_keepalive`).
///
/// Spelled out here independently of `inlinekeepalive-core` so tests can
/// cross-check the two.
pub const KEEPALIVE_FRAME: [u8; 27] =
    *b"\x00\x00\x00\x00\x16\x82\x90\xbc\xfd\x02\x10inline_keepalive";

/// Frames `message` as one uncompressed gRPC message: a zero flag byte, the
/// big-endian `u32` length, the message.
///
/// # Panics
///
/// Panics if `message` is 4 GiB or longer (not representable in gRPC).
pub fn grpc_frame(message: &[u8]) -> Bytes {
    let len = u32::try_from(message.len()).expect("gRPC message longer than u32::MAX");
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.extend_from_slice(&[0]);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(message);
    frame.freeze()
}

/// Splits a byte stream of gRPC frames into the frames' messages (without
/// their prefixes). Returns `None` if the bytes end inside a frame.
pub fn split_grpc_frames(mut data: &[u8]) -> Option<Vec<&[u8]>> {
    let mut messages = Vec::new();
    while !data.is_empty() {
        let prefix = data.get(..5)?;
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        let end = 5usize.checked_add(len)?;
        messages.push(data.get(5..end)?);
        data = &data[end..];
    }
    Some(messages)
}

/// One DATA frame to send after a delay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scheduled {
    /// Time to wait before sending, measured from the previous item (or from
    /// the start of the schedule).
    pub delay: Duration,
    /// The DATA payload, sent as is (one DATA frame unless flow control or
    /// the peer's maximum frame size split it). Empty payloads are skipped.
    pub data: Bytes,
}

impl Scheduled {
    /// `payload` framed as a gRPC message (see [`grpc_frame`]).
    pub fn message(delay: Duration, payload: &[u8]) -> Self {
        Self {
            delay,
            data: grpc_frame(payload),
        }
    }

    /// One [`KEEPALIVE_FRAME`].
    pub fn keepalive(delay: Duration) -> Self {
        Self {
            delay,
            data: Bytes::from_static(&KEEPALIVE_FRAME),
        }
    }

    /// Arbitrary bytes, not framed (for partial frames, several frames in one
    /// DATA frame, and so on).
    pub fn raw(delay: Duration, data: impl Into<Bytes>) -> Self {
        Self {
            delay,
            data: data.into(),
        }
    }
}

/// `count` keepalive items, each `interval` after the previous one.
pub fn keepalives(interval: Duration, count: usize) -> Vec<Scheduled> {
    (0..count).map(|_| Scheduled::keepalive(interval)).collect()
}

/// The total of a schedule's payload bytes.
pub fn schedule_bytes(schedule: &[Scheduled]) -> Bytes {
    let mut all = BytesMut::new();
    for item in schedule {
        all.extend_from_slice(&item.data);
    }
    all.freeze()
}

/// How one side of a stream ended, as seen by the side that reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum StreamEnd {
    /// Not finished: the other direction completed the call first and this
    /// one was abandoned (or it has not been driven at all).
    #[default]
    Unfinished,
    /// Ended normally with END_STREAM (after trailers, if any).
    Complete,
    /// The stream ended with an HTTP/2 error code: RST_STREAM from the peer
    /// or sent locally, or a GOAWAY that took the stream down.
    Reset(Reason),
    /// Any other failure (I/O error, protocol error, timeout), as text.
    Failed(String),
}

impl StreamEnd {
    fn from_h2(error: &h2::Error) -> Self {
        match error.reason() {
            Some(reason) => StreamEnd::Reset(reason),
            None => StreamEnd::Failed(error.to_string()),
        }
    }

    /// The reset reason, if the stream was reset.
    pub fn reset_reason(&self) -> Option<Reason> {
        match self {
            StreamEnd::Reset(reason) => Some(*reason),
            _ => None,
        }
    }
}

/// What one side received in one direction of a stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// The DATA payload bytes, concatenated in order.
    pub data: BytesMut,
    /// How many non-empty DATA frames carried them.
    pub data_frames: usize,
    /// The trailers, if the direction ended with trailers.
    pub trailers: Option<HeaderMap>,
    /// How the direction ended.
    pub end: StreamEnd,
}

impl Received {
    /// The gRPC messages in [`Received::data`] (keepalives included), or
    /// `None` if the data ends inside a frame.
    pub fn messages(&self) -> Option<Vec<&[u8]>> {
        split_grpc_frames(&self.data)
    }

    /// Reads `body` to its end (or error) into `self`, giving flow control
    /// credit back as data arrives. Cancel-safe: what arrived so far stays.
    async fn read(&mut self, body: &mut RecvStream) {
        loop {
            match body.data().await {
                Some(Ok(data)) => {
                    // Releasing credit can only fail if the stream is gone,
                    // which the next `data()` call reports.
                    let _ = body.flow_control().release_capacity(data.len());
                    if !data.is_empty() {
                        self.data_frames += 1;
                        self.data.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => {
                    self.end = StreamEnd::from_h2(&e);
                    return;
                }
                None => break,
            }
        }
        match body.trailers().await {
            Ok(trailers) => {
                self.trailers = trailers;
                self.end = StreamEnd::Complete;
            }
            Err(e) => self.end = StreamEnd::from_h2(&e),
        }
    }
}

/// What one side sent in one direction of a stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    /// Payload bytes handed to `h2` (not necessarily delivered).
    pub data_bytes: usize,
    /// Schedule items sent.
    pub items: usize,
    /// How sending ended: `Complete` once END_STREAM (or trailers) was sent,
    /// `Unfinished` if the schedule was still running or the caller chose
    /// not to end the stream.
    pub end: StreamEnd,
}

/// Sends `data` on `stream`, waiting for flow-control capacity so nothing
/// piles up in `h2`'s unbounded send buffer.
async fn send_all(stream: &mut SendStream<Bytes>, mut data: Bytes) -> Result<(), h2::Error> {
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        let capacity = match poll_fn(|cx| stream.poll_capacity(cx)).await {
            Some(capacity) => capacity?,
            None => {
                // The stream is closed for sending; find out why.
                let reason = poll_fn(|cx| stream.poll_reset(cx)).await?;
                return Err(reason.into());
            }
        };
        let chunk = data.split_to(capacity.min(data.len()));
        stream.send_data(chunk, false)?;
    }
    Ok(())
}

/// Sleeps for `delay`, unless the peer resets `stream` first.
async fn sleep_unless_reset(
    stream: &mut SendStream<Bytes>,
    delay: Duration,
) -> Result<(), h2::Error> {
    tokio::select! {
        () = tokio::time::sleep(delay) => Ok(()),
        reset = poll_fn(|cx| stream.poll_reset(cx)) => Err(reset?.into()),
    }
}

/// Runs `schedule` on `stream`, recording into `sent`; ends the stream with
/// `trailers` (or a bare END_STREAM when `None`) if `end` is true.
async fn run_schedule(
    stream: &mut SendStream<Bytes>,
    schedule: &[Scheduled],
    end: bool,
    trailers: Option<HeaderMap>,
    sent: &mut Sent,
) {
    let result: Result<(), h2::Error> = async {
        for item in schedule {
            if !item.delay.is_zero() {
                sleep_unless_reset(stream, item.delay).await?;
            }
            send_all(stream, item.data.clone()).await?;
            sent.items += 1;
            sent.data_bytes += item.data.len();
        }
        if end {
            match trailers {
                Some(trailers) => stream.send_trailers(trailers)?,
                None => stream.send_data(Bytes::new(), true)?,
            }
            sent.end = StreamEnd::Complete;
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        sent.end = StreamEnd::from_h2(&e);
    }
}

/// What a [`GrpcServer`] does for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerBehavior {
    /// Wait until the request body has ended before sending the response
    /// headers (the client-streaming shape). If the request fails, nothing
    /// is sent. When `false` (default), respond at once and read the request
    /// concurrently.
    pub respond_after_request: bool,
    /// Response DATA, sent after the response headers.
    pub schedule: Vec<Scheduled>,
    /// Response trailers. Default `grpc-status: 0`.
    pub trailers: HeaderMap,
}

impl Default for ServerBehavior {
    fn default() -> Self {
        Self {
            respond_after_request: false,
            schedule: Vec::new(),
            trailers: grpc_status_trailers(0),
        }
    }
}

impl ServerBehavior {
    /// Respond at once with `schedule`, then `grpc-status: 0`.
    pub fn respond(schedule: Vec<Scheduled>) -> Self {
        Self {
            schedule,
            ..Self::default()
        }
    }

    /// Read the whole request first, then respond with `schedule` and
    /// `grpc-status: 0`.
    pub fn after_request(schedule: Vec<Scheduled>) -> Self {
        Self {
            respond_after_request: true,
            schedule,
            ..Self::default()
        }
    }
}

/// Trailers holding just `grpc-status: <status>`.
pub fn grpc_status_trailers(status: u32) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(status));
    trailers
}

/// What a [`GrpcServer`] saw on one stream, from [`GrpcServer::next_report`].
#[derive(Clone, Debug)]
pub struct ServerReport {
    /// The request path (`/package.Service/Method`).
    pub path: String,
    /// The request headers (pseudo-headers excluded).
    pub request_headers: HeaderMap,
    /// The request body as received.
    pub received: Received,
    /// How sending the response went.
    pub sent: Sent,
}

type BehaviorFn = dyn Fn(&http::request::Parts) -> ServerBehavior + Send + Sync;

/// A gRPC-shaped h2c upstream server; see the [module docs](self).
///
/// Dropping it stops it like [`GrpcServer::shutdown`], without waiting.
pub struct GrpcServer {
    local_addr: SocketAddr,
    reports: mpsc::UnboundedReceiver<ServerReport>,
    task: JoinHandle<()>,
}

impl fmt::Debug for GrpcServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcServer")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl GrpcServer {
    /// Binds `addr` (port 0 allowed) and serves every request with
    /// `behavior`.
    pub async fn start(addr: SocketAddr, behavior: ServerBehavior) -> io::Result<Self> {
        Self::start_with(addr, move |_| behavior.clone()).await
    }

    /// Binds `addr` and serves each request with the behavior `choose`
    /// returns for its head (method, URI, headers).
    pub async fn start_with<F>(addr: SocketAddr, choose: F) -> io::Result<Self>
    where
        F: Fn(&http::request::Parts) -> ServerBehavior + Send + Sync + 'static,
    {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let (tx, reports) = mpsc::unbounded_channel();
        let task = tokio::spawn(server_accept_loop(listener, Arc::new(choose), tx));
        Ok(Self {
            local_addr,
            reports,
            task,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The report of the next finished stream, in order of completion;
    /// `None` if none finishes within `timeout`.
    pub async fn next_report(&mut self, timeout: Duration) -> Option<ServerReport> {
        tokio::time::timeout(timeout, self.reports.recv())
            .await
            .ok()
            .flatten()
    }

    /// Stops accepting and aborts all connections.
    pub async fn shutdown(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn server_accept_loop(
    listener: TcpListener,
    choose: Arc<BehaviorFn>,
    reports: mpsc::UnboundedSender<ServerReport>,
) {
    let mut connections = JoinSet::new();
    loop {
        match listener.accept().await {
            Ok((socket, _)) => {
                let _ = socket.set_nodelay(true);
                connections.spawn(server_connection(
                    socket,
                    Arc::clone(&choose),
                    reports.clone(),
                ));
            }
            Err(error) => {
                tracing::warn!(%error, "h2grpc server: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        while connections.try_join_next().is_some() {}
    }
}

async fn server_connection(
    socket: TcpStream,
    choose: Arc<BehaviorFn>,
    reports: mpsc::UnboundedSender<ServerReport>,
) {
    let Ok(mut connection) = h2::server::handshake(socket).await else {
        return;
    };
    let mut streams = JoinSet::new();
    while let Some(Ok((request, respond))) = connection.accept().await {
        let (parts, body) = request.into_parts();
        let behavior = choose(&parts);
        let reports = reports.clone();
        streams.spawn(async move {
            let report = serve_stream(parts, body, respond, behavior).await;
            // The receiver is gone only if the server handle was dropped.
            let _ = reports.send(report);
        });
        while streams.try_join_next().is_some() {}
    }
}

async fn serve_stream(
    parts: http::request::Parts,
    mut body: RecvStream,
    mut respond: h2::server::SendResponse<Bytes>,
    behavior: ServerBehavior,
) -> ServerReport {
    let mut report = ServerReport {
        path: parts.uri.path().to_owned(),
        request_headers: parts.headers,
        received: Received::default(),
        sent: Sent::default(),
    };
    if behavior.respond_after_request {
        report.received.read(&mut body).await;
        if report.received.end == StreamEnd::Complete {
            respond_with(&mut respond, &behavior, &mut report.sent).await;
        }
        return report;
    }
    {
        let read = report.received.read(&mut body);
        let respond_fut = respond_with(&mut respond, &behavior, &mut report.sent);
        tokio::pin!(read, respond_fut);
        let mut read_done = false;
        loop {
            tokio::select! {
                biased;
                () = &mut read, if !read_done => read_done = true,
                // Once the response is complete the call is over; an
                // unfinished request is abandoned (`h2` then resets it with
                // NO_ERROR).
                () = &mut respond_fut => break,
            }
        }
    }
    report
}

async fn respond_with(
    respond: &mut h2::server::SendResponse<Bytes>,
    behavior: &ServerBehavior,
    sent: &mut Sent,
) {
    let mut response = Response::new(());
    *response.status_mut() = StatusCode::OK;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    let mut stream = match respond.send_response(response, false) {
        Ok(stream) => stream,
        Err(e) => {
            sent.end = StreamEnd::from_h2(&e);
            return;
        }
    };
    run_schedule(
        &mut stream,
        &behavior.schedule,
        true,
        Some(behavior.trailers.clone()),
        sent,
    )
    .await;
}

/// What [`call`] does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallSpec {
    /// The request path. Default `/inlinekeepalive.test.Test/Call`.
    pub path: String,
    /// The `:authority`. Default `localhost`.
    pub authority: String,
    /// Request DATA.
    pub request: Vec<Scheduled>,
    /// End the request (END_STREAM) after the schedule. Default `true`; with
    /// `false` the request stays open until the response ends.
    pub end_request: bool,
    /// Send an HTTP/2 PING this often while the call runs (one at a time:
    /// the next PING goes out `interval` after the previous PONG). Default
    /// `None`.
    pub ping_interval: Option<Duration>,
    /// Give up after this long (the call then fails with
    /// [`io::ErrorKind::TimedOut`]). Default 20 s.
    pub timeout: Duration,
}

impl Default for CallSpec {
    fn default() -> Self {
        Self {
            path: "/inlinekeepalive.test.Test/Call".to_owned(),
            authority: "localhost".to_owned(),
            request: Vec::new(),
            end_request: true,
            ping_interval: None,
            timeout: Duration::from_secs(20),
        }
    }
}

impl CallSpec {
    /// A call sending `message` as its only request message, at once.
    pub fn unary(message: &[u8]) -> Self {
        Self::streaming(vec![Scheduled::message(Duration::ZERO, message)])
    }

    /// A call sending `request` as its request body.
    pub fn streaming(request: Vec<Scheduled>) -> Self {
        Self {
            request,
            ..Self::default()
        }
    }
}

/// What happened on a [`call`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallOutcome {
    /// The response's HTTP status, if response headers arrived.
    pub status: Option<StatusCode>,
    /// The response headers, if they arrived.
    pub headers: Option<HeaderMap>,
    /// The response body as received; `received.end` says how it ended
    /// (including a reset before the headers).
    pub received: Received,
    /// How sending the request went.
    pub sent: Sent,
    /// PONGs received for the PINGs sent.
    pub pongs: usize,
}

impl CallOutcome {
    /// The `grpc-status` trailer, if present and ASCII.
    pub fn grpc_status(&self) -> Option<&str> {
        self.received
            .trailers
            .as_ref()?
            .get("grpc-status")?
            .to_str()
            .ok()
    }

    /// The RST_STREAM (or GOAWAY) reason that ended the response, if any.
    pub fn reset_reason(&self) -> Option<Reason> {
        self.received.end.reset_reason()
    }
}

/// Opens an h2c connection to `addr`, makes one call as `spec` says and
/// returns what happened.
///
/// Stream-level failures (resets, error statuses) are reported in the
/// [`CallOutcome`], not as `Err`. `Err` means the connection could not be
/// set up, the request could not be started, or `spec.timeout` elapsed.
pub async fn call(addr: SocketAddr, spec: CallSpec) -> io::Result<CallOutcome> {
    let timeout = spec.timeout;
    tokio::time::timeout(timeout, call_inner(addr, spec))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("h2grpc call to {addr} did not finish within {timeout:?}"),
            )
        })?
}

async fn call_inner(addr: SocketAddr, spec: CallSpec) -> io::Result<CallOutcome> {
    let socket = TcpStream::connect(addr).await?;
    let _ = socket.set_nodelay(true);
    let (send_request, mut connection) = h2::client::handshake(socket)
        .await
        .map_err(io::Error::other)?;
    let ping_pong = connection.ping_pong();
    let driver = tokio::spawn(async move {
        // The error surfaces on the stream as well.
        let _ = connection.await;
    });
    let _driver = AbortOnDrop(driver);

    let mut send_request = send_request.ready().await.map_err(io::Error::other)?;
    let uri = http::Uri::builder()
        .scheme("http")
        .authority(spec.authority.as_str())
        .path_and_query(spec.path.as_str())
        .build()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut request = Request::new(());
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(TE, HeaderValue::from_static("trailers"));
    let end_at_once = spec.end_request && spec.request.is_empty();
    let (response, mut stream) = send_request
        .send_request(request, end_at_once)
        .map_err(io::Error::other)?;

    let mut outcome = CallOutcome::default();
    if end_at_once {
        outcome.sent.end = StreamEnd::Complete;
    }
    let pongs = AtomicUsize::new(0);
    {
        let sent = &mut outcome.sent;
        let sending = async {
            if !end_at_once {
                run_schedule(&mut stream, &spec.request, spec.end_request, None, sent).await;
            }
        };
        let receiving = async {
            let mut received = Received::default();
            let (status, headers) = match response.await {
                Ok(response) => {
                    let (parts, mut body) = response.into_parts();
                    received.read(&mut body).await;
                    (Some(parts.status), Some(parts.headers))
                }
                Err(e) => {
                    received.end = StreamEnd::from_h2(&e);
                    (None, None)
                }
            };
            (status, headers, received)
        };
        let pinging = async {
            match (spec.ping_interval, ping_pong) {
                (Some(interval), Some(mut ping_pong)) => loop {
                    tokio::time::sleep(interval).await;
                    if ping_pong.ping(Ping::opaque()).await.is_err() {
                        break std::future::pending::<()>().await;
                    }
                    pongs.fetch_add(1, Ordering::Relaxed);
                },
                _ => std::future::pending::<()>().await,
            }
        };
        tokio::pin!(sending, receiving, pinging);
        let mut sending_done = false;
        let (status, headers, received) = loop {
            tokio::select! {
                biased;
                () = &mut sending, if !sending_done => sending_done = true,
                // The call is over when the response is; a request still
                // being sent is abandoned.
                result = &mut receiving => break result,
                () = &mut pinging => {}
            }
        };
        outcome.status = status;
        outcome.headers = headers;
        outcome.received = received;
    }
    outcome.pongs = pongs.load(Ordering::Relaxed);
    Ok(outcome)
}

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalive_frame_is_a_grpc_frame_of_the_keepalive_message() {
        let message = b"\x82\x90\xbc\xfd\x02\x10inline_keepalive";
        assert_eq!(grpc_frame(message)[..], KEEPALIVE_FRAME[..]);
        assert_eq!(KEEPALIVE_FRAME.len(), 27);
    }

    #[test]
    fn split_grpc_frames_round_trips() {
        let mut data = BytesMut::new();
        data.extend_from_slice(&grpc_frame(b"a"));
        data.extend_from_slice(&grpc_frame(b""));
        data.extend_from_slice(&KEEPALIVE_FRAME);
        let messages = split_grpc_frames(&data).unwrap();
        assert_eq!(messages, vec![&b"a"[..], &b""[..], &KEEPALIVE_FRAME[5..]]);
        assert_eq!(split_grpc_frames(&data[..data.len() - 1]), None);
        assert_eq!(split_grpc_frames(&[0, 0]), None);
    }
}
