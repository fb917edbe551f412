//! Test support for the adapters: a mocked, counting timer; for the
//! byte-level adapters, in-memory transports that accept and return random
//! short counts; for the message-level wrappers, a timer whose sleeps never
//! fire and a sink whose readiness the test controls; keepalives compressed
//! as a Go peer sends them under `grpc-encoding: gzip` or `deflate`.
#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures::io::{AsyncRead, AsyncWrite};
use futures_sink::Sink;
use inlinekeepalive::timer::Timer;
use inlinekeepalive::wire::KEEPALIVE_MESSAGE;
use inlinekeepalive::{KeepaliveSink, KeepaliveWriter};

/// A timer whose clock only moves when the test says so, and which counts
/// its sleeps: live ones (to prove that wrappers release theirs) and all
/// ever created (to prove that one is reset rather than recreated).
#[derive(Clone, Debug)]
pub struct MockTimer {
    state: Arc<Mutex<MockState>>,
    live: Arc<AtomicUsize>,
    created: Arc<AtomicUsize>,
}

#[derive(Debug)]
struct MockState {
    now: Instant,
    wakers: Vec<Waker>,
}

impl Default for MockTimer {
    fn default() -> Self {
        Self::new()
    }
}

impl MockTimer {
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(MockState {
                now: Instant::now(),
                wakers: Vec::new(),
            })),
            live: Arc::new(AtomicUsize::new(0)),
            created: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Moves the clock forward and wakes every sleep.
    pub fn advance(&self, by: Duration) {
        let wakers = {
            let mut state = self.state.lock().unwrap();
            state.now += by;
            std::mem::take(&mut state.wakers)
        };
        for waker in wakers {
            waker.wake();
        }
    }

    /// Sleeps alive right now.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// Sleeps ever created.
    pub fn created(&self) -> usize {
        self.created.load(Ordering::SeqCst)
    }
}

/// The sleep of a [`MockTimer`].
#[derive(Debug)]
pub struct MockSleep {
    state: Arc<Mutex<MockState>>,
    live: Arc<AtomicUsize>,
    deadline: Instant,
}

impl Drop for MockSleep {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Future for MockSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.state.lock().unwrap();
        if state.now >= self.deadline {
            return Poll::Ready(());
        }
        state.wakers.push(cx.waker().clone());
        Poll::Pending
    }
}

impl Timer for MockTimer {
    type Sleep = MockSleep;

    fn sleep_until(&self, deadline: Instant) -> MockSleep {
        self.live.fetch_add(1, Ordering::SeqCst);
        self.created.fetch_add(1, Ordering::SeqCst);
        MockSleep {
            state: self.state.clone(),
            live: self.live.clone(),
            deadline,
        }
    }

    fn reset(&self, sleep: Pin<&mut MockSleep>, deadline: Instant) {
        sleep.get_mut().deadline = deadline;
    }

    fn now(&self) -> Instant {
        self.state.lock().unwrap().now
    }
}

/// A gRPC frame: uncompressed header and payload.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(0);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// One end of an in-memory byte pipe that accepts or returns random short
/// counts, and now and then is not ready at all (then it wakes the task at
/// once, as a transport whose buffer just drained would).
#[derive(Clone, Debug)]
pub struct ChunkyPipe {
    shared: Arc<Mutex<PipeState>>,
    rng: fastrand::Rng,
    /// Largest count per call.
    pub max_chunk: usize,
    /// One call in `pending_one_in` returns `Pending`; 0: never.
    pub pending_one_in: u32,
    /// Draw each count's cap from 1, 7, 64, 1500 and `max_chunk`, so short
    /// counts are common whatever `max_chunk` is.
    pub skewed: bool,
}

#[derive(Debug, Default)]
struct PipeState {
    buf: VecDeque<u8>,
    /// A copy of everything written, when tapped.
    tap: Option<Vec<u8>>,
    closed: bool,
    read_waker: Option<Waker>,
}

impl ChunkyPipe {
    pub fn new(seed: u64, max_chunk: usize) -> Self {
        Self {
            shared: Arc::default(),
            rng: fastrand::Rng::with_seed(seed),
            max_chunk,
            pending_one_in: 0,
            skewed: false,
        }
    }

    /// Starts keeping a copy of everything written, for [`take_tap`](Self::take_tap).
    pub fn tap(&self) {
        self.shared.lock().unwrap().tap = Some(Vec::new());
    }

    /// Appends the tapped bytes written since the last call to `out`.
    pub fn take_tap(&self, out: &mut Vec<u8>) {
        if let Some(tap) = self.shared.lock().unwrap().tap.as_mut() {
            out.append(tap);
        }
    }

    /// The other end (its own random counts).
    pub fn other_end(&self, seed: u64) -> Self {
        Self {
            shared: self.shared.clone(),
            rng: fastrand::Rng::with_seed(seed),
            max_chunk: self.max_chunk,
            pending_one_in: self.pending_one_in,
            skewed: self.skewed,
        }
    }

    pub fn buffered(&self) -> usize {
        self.shared.lock().unwrap().buf.len()
    }

    /// Takes everything buffered.
    pub fn take_all(&self) -> Vec<u8> {
        self.shared.lock().unwrap().buf.drain(..).collect()
    }

    fn count(&mut self, available: usize) -> Option<usize> {
        if self.pending_one_in > 0 && self.rng.u32(0..self.pending_one_in) == 0 {
            return None;
        }
        let cap = if self.skewed {
            [1, 7, 64, 1500, self.max_chunk][self.rng.usize(..5)].min(self.max_chunk)
        } else {
            self.max_chunk
        };
        Some(self.rng.usize(1..=cap.max(1)).min(available))
    }
}

impl AsyncWrite for ChunkyPipe {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let Some(n) = self.count(buf.len()) else {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        };
        let mut state = self.shared.lock().unwrap();
        if state.closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        state.buf.extend(&buf[..n]);
        if let Some(tap) = state.tap.as_mut() {
            tap.extend_from_slice(&buf[..n]);
        }
        if let Some(w) = state.read_waker.take() {
            w.wake();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self.shared.lock().unwrap();
        state.closed = true;
        if let Some(w) = state.read_waker.take() {
            w.wake();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for ChunkyPipe {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let available = self.shared.lock().unwrap().buf.len();
        let mut state_closed = false;
        if available == 0 {
            let mut state = self.shared.lock().unwrap();
            state_closed = state.closed;
            if !state_closed {
                state.read_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
        if state_closed {
            return Poll::Ready(Ok(0));
        }
        let Some(n) = self.count(buf.len().min(available)) else {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        };
        let mut state = self.shared.lock().unwrap();
        let n = std::io::Read::read(&mut state.buf, &mut buf[..n])?;
        Poll::Ready(Ok(n))
    }
}

/// Polls once with a waker that does nothing.
pub fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    Pin::new(f).poll(&mut cx)
}

/// A timer whose sleeps never fire and count themselves: `live` is the
/// number of sleeps alive.
#[derive(Clone, Debug, Default)]
pub struct CountingTimer {
    pub live: Arc<AtomicUsize>,
    pub created: Arc<AtomicUsize>,
}

impl Timer for CountingTimer {
    type Sleep = CountingSleep;

    fn sleep_until(&self, _deadline: Instant) -> CountingSleep {
        self.live.fetch_add(1, Ordering::SeqCst);
        self.created.fetch_add(1, Ordering::SeqCst);
        CountingSleep {
            live: self.live.clone(),
        }
    }

    fn reset(&self, _sleep: Pin<&mut CountingSleep>, _deadline: Instant) {}
}

#[derive(Debug)]
pub struct CountingSleep {
    live: Arc<AtomicUsize>,
}

impl Future for CountingSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}

impl Drop for CountingSleep {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a [`TestSink`] saw, shared with the test.
#[derive(Debug, Default)]
pub struct SinkLog {
    pub items: Vec<Vec<u8>>,
    /// Items accepted but not flushed yet.
    pub unflushed: usize,
    pub ready: bool,
    /// `poll_ready` calls that returned `Ready`, not yet used by `start_send`.
    pub reserved: bool,
    pub fail_next_send: bool,
    pub closed: bool,
    pub waker: Option<Waker>,
    /// `start_send` without a preceding `Ready` from `poll_ready`.
    pub contract_violations: usize,
}

/// A sink of `Vec<u8>` whose readiness the test switches.
#[derive(Clone, Debug)]
pub struct TestSink(pub Arc<Mutex<SinkLog>>);

impl TestSink {
    pub fn new(ready: bool) -> Self {
        Self(Arc::new(Mutex::new(SinkLog {
            ready,
            ..SinkLog::default()
        })))
    }

    pub fn set_ready(&self, ready: bool) {
        let waker = {
            let mut log = self.0.lock().unwrap();
            log.ready = ready;
            log.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    pub fn items(&self) -> Vec<Vec<u8>> {
        self.0.lock().unwrap().items.clone()
    }

    pub fn log(&self) -> std::sync::MutexGuard<'_, SinkLog> {
        self.0.lock().unwrap()
    }
}

impl Sink<Vec<u8>> for TestSink {
    type Error = &'static str;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let mut log = self.0.lock().unwrap();
        if log.ready {
            log.reserved = true;
            Poll::Ready(Ok(()))
        } else {
            log.waker = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    fn start_send(self: Pin<&mut Self>, item: Vec<u8>) -> Result<(), Self::Error> {
        let mut log = self.0.lock().unwrap();
        if !log.reserved {
            log.contract_violations += 1;
        }
        log.reserved = false;
        if log.fail_next_send {
            log.fail_next_send = false;
            return Err("send failed");
        }
        log.items.push(item);
        log.unflushed += 1;
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let mut log = self.0.lock().unwrap();
        if log.ready {
            log.unflushed = 0;
            Poll::Ready(Ok(()))
        } else {
            log.waker = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let mut log = self.0.lock().unwrap();
        if log.ready {
            log.unflushed = 0;
            log.closed = true;
            Poll::Ready(Ok(()))
        } else {
            log.waker = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}

/// A queue-backed stream the test pushes into.
pub type Queue = VecDeque<Vec<u8>>;

/// A waker that counts its wake-ups.
pub fn counting_waker() -> (Waker, Arc<AtomicUsize>) {
    struct W(Arc<AtomicUsize>);
    impl std::task::Wake for W {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let count = Arc::new(AtomicUsize::new(0));
    (Waker::from(Arc::new(W(count.clone()))), count)
}

/// The writer's next keepalive as a future: waits until one is due, writes
/// and flushes it ([`KeepaliveWriter::poll_keepalive`]).
pub fn writer_keepalive<W, T>(
    writer: &mut KeepaliveWriter<W, T>,
) -> impl Future<Output = io::Result<()>> + Unpin + '_
where
    W: AsyncWrite + Unpin,
    T: Timer,
    T::Sleep: Unpin,
{
    std::future::poll_fn(move |cx| Pin::new(&mut *writer).poll_keepalive(cx))
}

/// The sink's next keepalive as a future: waits until one is due, sends and
/// flushes it ([`KeepaliveSink::poll_keepalive`]).
pub fn sink_keepalive<Si, M, T>(
    sink: &mut KeepaliveSink<Si, M, T>,
) -> impl Future<Output = Result<(), Si::Error>> + Unpin + '_
where
    Si: Sink<M> + Unpin,
    T: Timer,
    T::Sleep: Unpin,
{
    std::future::poll_fn(move |cx| Pin::new(&mut *sink).poll_keepalive(cx))
}

/// CRC-32 (IEEE, reflected), for the gzip trailer.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Adler-32, for the zlib trailer.
pub fn adler32(bytes: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in bytes {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

/// `data` as one stored (uncompressed) DEFLATE block.
pub fn stored_block(data: &[u8]) -> Vec<u8> {
    let len = data.len() as u16;
    let mut out = vec![0x01]; // BFINAL, BTYPE = stored
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// A gRPC frame with the compressed flag set around `compressed`.
pub fn compressed_frame(compressed: &[u8]) -> Vec<u8> {
    let mut f = frame(compressed);
    f[0] = 1;
    f
}

/// The keepalive message as a gzip member (RFC 1952).
pub fn gzip_keepalive() -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.extend_from_slice(&stored_block(&KEEPALIVE_MESSAGE));
    out.extend_from_slice(&crc32(&KEEPALIVE_MESSAGE).to_le_bytes());
    out.extend_from_slice(&(KEEPALIVE_MESSAGE.len() as u32).to_le_bytes());
    out
}

/// The keepalive message as a zlib stream (RFC 1950: gRPC's `deflate`).
pub fn zlib_keepalive() -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    out.extend_from_slice(&stored_block(&KEEPALIVE_MESSAGE));
    out.extend_from_slice(&adler32(&KEEPALIVE_MESSAGE).to_be_bytes());
    out
}

/// An in-memory reader that hands out `data` in chunks of the given sizes,
/// cycled, one per read and never more than the caller's buffer, then end
/// of stream (both tokio's and futures-io's `AsyncRead`).
pub struct Chunks {
    data: Vec<u8>,
    pos: usize,
    sizes: Vec<usize>,
    call: usize,
}

impl Chunks {
    pub fn new(data: Vec<u8>, sizes: Vec<usize>) -> Self {
        Self {
            data,
            pos: 0,
            sizes,
            call: 0,
        }
    }

    fn next_chunk(&mut self, room: usize) -> &[u8] {
        let size = self.sizes[self.call % self.sizes.len()].max(1);
        self.call += 1;
        let n = size.min(room).min(self.data.len() - self.pos);
        self.pos += n;
        &self.data[self.pos - n..self.pos]
    }
}

impl tokio::io::AsyncRead for Chunks {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let room = buf.remaining();
        let chunk = self.next_chunk(room);
        buf.put_slice(chunk);
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Chunks {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let chunk = self.next_chunk(buf.len());
        let n = chunk.len();
        buf[..n].copy_from_slice(chunk);
        Poll::Ready(Ok(n))
    }
}
