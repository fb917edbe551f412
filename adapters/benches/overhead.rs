//! Overhead of the byte-level wrappers: 1 KiB gRPC frames written through a
//! `KeepaliveWriter` and read back through a `KeepaliveReader`, side by side
//! with the same pipe unwrapped, in one run, over four pipes:
//!
//! - `memcpy`: a `Vec<u8>` that the writer fills and the reader then drains
//!   (`&[u8]` implements `AsyncRead`): no scheduler, no wake-ups, an
//!   in-cache `memcpy` per frame. The wrappers' fixed cost per frame shows in
//!   full here; no transport is this cheap.
//! - `duplex`: `tokio::io::duplex` (a bounded in-memory byte pipe, 64 KiB,
//!   with wake-ups, like a socketpair without the kernel) between a writer task and a
//!   reader task on one current-thread tokio runtime, through
//!   `tokio_util::compat` (the way tokio users plug in the wrappers).
//! - `socketpair`: the same over a Unix socketpair (the kernel's in-memory
//!   duplex, what two processes or an in-process transport would use);
//! - `tcp`: the same over loopback TCP.
//!
//! The `duplex` groups have a third row, `floor`: the same pipe with each
//! end wrapped in `HeaderWalk`, which does nothing but follow the 5-byte
//! frame headers of the bytes passing through (no keepalive logic, no
//! filtering). Any correct implementation does at least that on both ends:
//! the writer to know where a frame ends, so a keepalive never lands inside
//! one; the reader to find the keepalive frames. `floor / unwrapped` is
//! therefore the best ratio any implementation can reach on that pipe.
//!
//! Three usage patterns, each against the same pipe unwrapped in the same
//! run:
//!
//! - one `write_all` per frame (`*_1KiB_frames`): the wrapper's fixed cost
//!   per write in full (the writer samples the clock: the first write and
//!   every 64th in a row read it);
//! - batched (`*_batched16`): 16 frames per `write_all` (an application or a
//!   codec that buffers);
//! - driver (`duplex_driver`): frames sent through a `Sender` to a
//!   spawned `Driver`; unwrapped, the same bounded channel drained by a
//!   plain forwarding task. Driver, task and pipe live across iterations (a
//!   stream's steady state, not its setup).
//!
//! `cargo bench -p inlinekeepalive --bench overhead`
//!
//! The writer has peer support on and a 20 s interval: the machine is live,
//! but no keepalive falls due during the run (the steady state of a busy
//! stream under the Idle policy). Goal: wrapped throughput >= 0.98x
//! unwrapped.

use std::hint::black_box;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::channel::mpsc;
use futures::executor::block_on;
use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures::StreamExt;
use inlinekeepalive::core::FrameTracker;
use inlinekeepalive::timer::FuturesTimer;
use inlinekeepalive::{Config, KeepaliveReader, KeepaliveWriter, Sender};
use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

const FRAME_PAYLOAD: usize = 1024;
const FRAMES: usize = 1024; // 1 MiB of payload per iteration
const READ_BUF: usize = 16 * 1024;
const DUPLEX_BUF: usize = 64 * 1024;
/// Frames per `write_all` in the batched rows.
const BATCH: usize = 16;
/// Capacity of the channel in the driver rows (ours and the plain one).
const CHANNEL: usize = 64;

fn frame() -> Vec<u8> {
    let mut f = vec![0u8; 5 + FRAME_PAYLOAD];
    f[1..5].copy_from_slice(&(FRAME_PAYLOAD as u32).to_be_bytes());
    // A field-1 bytes value, so it is well-formed protobuf but no keepalive.
    f[5] = 0x0a;
    f[6] = 0xfd;
    f[7] = 0x07;
    for (i, b) in f[8..].iter_mut().enumerate() {
        *b = i as u8;
    }
    f
}

/// A 69-byte frame: a 64-byte log event (three varint fields and a line of
/// ASCII), short enough to be a keepalive, so the reader classifies each.
fn small_frame() -> Vec<u8> {
    let mut f = vec![0, 0, 0, 0, 64, 0x08, 0x96, 0x01, 0x10];
    f.extend_from_slice(&[0x80, 0xe8, 0xd6, 0xe7, 0xae, 0x33, 0x18, 0x02, 0x22]);
    let text = b"GET /api/v1/items/150 200 in 3ms GET /api/v1/items/1";
    f.push((69 - f.len() - 1) as u8);
    f.extend_from_slice(&text[..69 - f.len()]);
    assert_eq!(f.len(), 69);
    assert_eq!(
        inlinekeepalive::core::classify(&f[5..]),
        inlinekeepalive::core::Classification::Application
    );
    f
}

fn keepalive_writer<W>(inner: W) -> KeepaliveWriter<W, FuturesTimer> {
    KeepaliveWriter::new(inner, FuturesTimer, Config::default()).with_peer_support(true)
}

/// A pipe end that follows the frame headers passing through it and does
/// nothing else (`floor`): the core's `FrameTracker`, the leanest header
/// walk we have (a one-off plain walk written for this bench measured
/// 1.5-2x slower per frame).
struct HeaderWalk<T> {
    inner: T,
    walk: FrameTracker,
}

impl<T> HeaderWalk<T> {
    fn new(inner: T) -> Self {
        Self {
            inner,
            walk: FrameTracker::new(),
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for HeaderWalk<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let n = std::task::ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        self.walk.advance(&buf[..n]).map_err(io::Error::other)?;
        Poll::Ready(Ok(n))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for HeaderWalk<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, buf))?;
        self.walk.advance(&buf[..n]).map_err(io::Error::other)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// Reads `reader` to the end: returns bytes read.
async fn drain<R: AsyncRead + Unpin>(mut reader: R, buf: &mut [u8]) -> usize {
    let mut total = 0;
    loop {
        let n = reader.read(buf).await.unwrap();
        if n == 0 {
            break total;
        }
        total += n;
    }
}

/// Writes `chunk` (whole frames) until FRAMES frames are written, then
/// closes.
async fn feed<W: AsyncWrite + Unpin>(mut writer: W, chunk: &[u8]) {
    for _ in 0..writes(chunk) {
        writer.write_all(chunk).await.unwrap();
    }
    writer.close().await.unwrap();
}

/// How many frames all the writes of `chunk` hold.
fn frames_in(chunk: &[u8]) -> u64 {
    let mut walk = FrameTracker::new();
    walk.advance(chunk).unwrap();
    walk.frames() * writes(chunk) as u64
}

/// How many writes of `chunk` make FRAMES frames (of 1 KiB: about 1 MiB in
/// all, whatever the frames).
fn writes(chunk: &[u8]) -> usize {
    FRAMES * (5 + FRAME_PAYLOAD) / chunk.len()
}

/// Writes every frame into `pipe`, `chunk` at a time, then reads it to the
/// end.
async fn memcpy_plain(chunk: &[u8], pipe: &mut Vec<u8>, buf: &mut [u8]) -> usize {
    pipe.clear();
    for _ in 0..writes(chunk) {
        pipe.write_all(chunk).await.unwrap();
    }
    pipe.flush().await.unwrap();
    drain(&pipe[..], buf).await
}

async fn memcpy_wrapped(
    chunk: &[u8],
    writer: &mut KeepaliveWriter<Vec<u8>, FuturesTimer>,
    buf: &mut [u8],
) -> usize {
    writer.get_mut().clear();
    for _ in 0..writes(chunk) {
        writer.write_all(chunk).await.unwrap();
    }
    writer.flush().await.unwrap();
    drain(KeepaliveReader::new(&writer.get_ref()[..]), buf).await
}

/// What wraps the two ends of a pipe.
#[derive(Clone, Copy)]
enum Ends {
    Unwrapped,
    /// `HeaderWalk` on both ends: the least any implementation does.
    Floor,
    /// `KeepaliveWriter` and `KeepaliveReader`.
    Wrapped,
}

/// A writer task and a reader task on one current-thread runtime, over a
/// fresh `tokio::io::duplex` per iteration.
fn duplex_round(rt: &tokio::runtime::Runtime, chunk: &'static [u8], ends: Ends) -> usize {
    rt.block_on(async move {
        let (a, b) = tokio::io::duplex(DUPLEX_BUF);
        let (a, b) = (a.compat_write(), b.compat());
        let mut buf = vec![0u8; READ_BUF];
        let (writer, n) = match ends {
            Ends::Unwrapped => (tokio::spawn(feed(a, chunk)), drain(b, &mut buf).await),
            Ends::Floor => {
                let writer = tokio::spawn(async move {
                    let mut a = HeaderWalk::new(a);
                    feed(&mut a, chunk).await;
                    assert_eq!(a.walk.frames(), frames_in(chunk));
                });
                let mut b = HeaderWalk::new(b);
                let n = drain(&mut b, &mut buf).await;
                assert_eq!(b.walk.frames(), frames_in(chunk));
                assert!(b.walk.is_at_boundary());
                (writer, n)
            }
            Ends::Wrapped => (
                tokio::spawn(feed(keepalive_writer(a), chunk)),
                drain(KeepaliveReader::new(b), &mut buf).await,
            ),
        };
        writer.await.unwrap();
        n
    })
}

/// The application's end of a driver row: our `Sender`, or the plain
/// channel of the unwrapped forwarder.
enum Tx {
    Ours(Sender<&'static [u8]>),
    Plain(mpsc::Sender<&'static [u8]>),
}

impl Tx {
    async fn send(&mut self, frame: &'static [u8]) {
        match self {
            Tx::Ours(tx) => tx.send(frame).await.unwrap(),
            Tx::Plain(tx) => {
                std::future::poll_fn(|cx| tx.poll_ready(cx)).await.unwrap();
                tx.start_send(frame).unwrap();
            }
        }
    }
}

/// A stream whose application hands frames to a writer task through a
/// bounded channel, over one `tokio::io::duplex` that lives across
/// iterations: wrapped, `KeepaliveWriter::into_driver` (the spawned
/// `Driver`, read through a `KeepaliveReader`); unwrapped, a task that
/// writes each item of the same kind of channel with `write_all`.
struct DriverPipe {
    rt: tokio::runtime::Runtime,
    tx: Tx,
    reader: Pin<Box<dyn AsyncRead>>,
}

impl DriverPipe {
    fn new(wrapped: bool) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (a, b) = tokio::io::duplex(DUPLEX_BUF);
        let (a, b) = (a.compat_write(), b.compat());
        let _guard = rt.enter();
        let (tx, reader): (Tx, Pin<Box<dyn AsyncRead>>) = if wrapped {
            let (tx, driver) = keepalive_writer(a).into_driver(CHANNEL);
            tokio::spawn(driver);
            (Tx::Ours(tx), Box::pin(KeepaliveReader::new(b)))
        } else {
            let (tx, mut rx) = mpsc::channel::<&'static [u8]>(CHANNEL);
            let mut a = a;
            tokio::spawn(async move {
                while let Some(item) = rx.next().await {
                    a.write_all(item).await.unwrap();
                }
                a.close().await.unwrap();
            });
            (Tx::Plain(tx), Box::pin(b))
        };
        drop(_guard);
        Self { rt, tx, reader }
    }

    /// Sends FRAMES frames and reads them back.
    fn round(&mut self, frame: &'static [u8]) -> usize {
        let total = frame.len() * FRAMES;
        let Self { rt, tx, reader } = self;
        rt.block_on(async {
            let send = async {
                for _ in 0..FRAMES {
                    tx.send(frame).await;
                }
            };
            let recv = async {
                let mut buf = vec![0u8; READ_BUF];
                let mut got = 0;
                while got < total {
                    got += reader.read(&mut buf).await.unwrap();
                }
                got
            };
            futures::future::join(send, recv).await.1
        })
    }
}

/// The same over a connected pair of sockets made once per configuration:
/// loopback TCP, or a Unix socketpair (the kernel's in-memory duplex).
struct SocketPair<S> {
    rt: tokio::runtime::Runtime,
    client: Option<S>,
    server: Option<S>,
}

fn io_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

impl SocketPair<tokio::net::UnixStream> {
    fn unix() -> Self {
        let rt = io_runtime();
        let (client, server) = {
            let _guard = rt.enter();
            tokio::net::UnixStream::pair().unwrap()
        };
        Self {
            rt,
            client: Some(client),
            server: Some(server),
        }
    }
}

impl SocketPair<tokio::net::TcpStream> {
    fn tcp() -> Self {
        let rt = io_runtime();
        let (client, server) = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (client, accepted) =
                tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
            let client = client.unwrap();
            client.set_nodelay(true).unwrap();
            (client, accepted.unwrap().0)
        });
        Self {
            rt,
            client: Some(client),
            server: Some(server),
        }
    }
}

impl<S> SocketPair<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    /// Sends FRAMES frames from client to server, `chunk` at a time, without
    /// closing.
    fn round(&mut self, chunk: &'static [u8], wrapped: bool) -> usize {
        let total = chunk.len() * writes(chunk);
        let client = self.client.take().unwrap();
        let server = self.server.take().unwrap();
        let (client, server) = self.rt.block_on(async move {
            let mut buf = vec![0u8; READ_BUF];
            let writer = tokio::spawn(async move {
                if wrapped {
                    let mut w = keepalive_writer(client.compat_write());
                    for _ in 0..writes(chunk) {
                        w.write_all(chunk).await.unwrap();
                    }
                    w.flush().await.unwrap();
                    w.into_inner().into_inner()
                } else {
                    let mut w = client.compat_write();
                    for _ in 0..writes(chunk) {
                        w.write_all(chunk).await.unwrap();
                    }
                    w.flush().await.unwrap();
                    w.into_inner()
                }
            });
            let mut got = 0;
            let server = if wrapped {
                let mut r = KeepaliveReader::new(server.compat());
                while got < total {
                    got += r.read(&mut buf).await.unwrap();
                }
                r.into_inner().into_inner()
            } else {
                let mut r = server.compat();
                while got < total {
                    got += r.read(&mut buf).await.unwrap();
                }
                r.into_inner()
            };
            assert_eq!(got, total);
            (writer.await.unwrap(), server)
        });
        self.client = Some(client);
        self.server = Some(server);
        total
    }
}

/// One group over a fresh socket pair per configuration: unwrapped, then
/// wrapped.
fn socket_group<S>(
    c: &mut Criterion,
    group: &str,
    chunk: &'static [u8],
    pair: fn() -> SocketPair<S>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let bytes = (chunk.len() * writes(chunk)) as u64;
    let mut group = c.benchmark_group(group);
    group.throughput(Throughput::Bytes(bytes));
    group.measurement_time(Duration::from_secs(5));
    for wrapped in [false, true] {
        let name = if wrapped { "wrapped" } else { "unwrapped" };
        let mut pair = pair();
        group.bench_function(name, |b| {
            b.iter(|| {
                let n = pair.round(chunk, wrapped);
                assert_eq!(n as u64, bytes);
                black_box(n)
            })
        });
    }
    group.finish();
}

fn overhead(c: &mut Criterion) {
    let frame: &'static [u8] = Vec::leak(frame());
    let batch: &'static [u8] = Vec::leak(frame.repeat(BATCH));
    let small: &'static [u8] = Vec::leak(small_frame());
    let bytes = (frame.len() * FRAMES) as u64;

    for (suffix, chunk) in [
        ("1KiB_frames", frame),
        ("batched16", batch),
        ("64B_frames", small),
    ] {
        let bytes = (chunk.len() * writes(chunk)) as u64;
        let mut group = c.benchmark_group(format!("memcpy_{suffix}"));
        group.throughput(Throughput::Bytes(bytes));
        group.measurement_time(Duration::from_secs(5));
        let mut buf = vec![0u8; READ_BUF];
        let mut pipe = Vec::with_capacity(frame.len() * FRAMES);
        group.bench_function("unwrapped", |b| {
            b.iter(|| {
                let n = block_on(memcpy_plain(chunk, &mut pipe, &mut buf));
                assert_eq!(n as u64, bytes);
                black_box(n)
            })
        });
        // The pipe's buffer is reused, as above.
        let mut writer = keepalive_writer(Vec::with_capacity(frame.len() * FRAMES));
        group.bench_function("wrapped", |b| {
            b.iter(|| {
                let n = block_on(memcpy_wrapped(chunk, &mut writer, &mut buf));
                assert_eq!(n as u64, bytes);
                black_box(n)
            })
        });
        group.finish();

        let mut group = c.benchmark_group(format!("duplex_{suffix}"));
        group.throughput(Throughput::Bytes(bytes));
        group.measurement_time(Duration::from_secs(5));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for (name, ends) in [
            ("unwrapped", Ends::Unwrapped),
            ("floor", Ends::Floor),
            ("wrapped", Ends::Wrapped),
        ] {
            group.bench_function(name, |b| {
                b.iter(|| {
                    let n = duplex_round(&rt, chunk, ends);
                    assert_eq!(n as u64, bytes);
                    black_box(n)
                })
            });
        }
        group.finish();

        socket_group(c, &format!("socketpair_{suffix}"), chunk, SocketPair::unix);
        socket_group(c, &format!("tcp_{suffix}"), chunk, SocketPair::tcp);
    }

    let mut group = c.benchmark_group("duplex_driver");
    group.throughput(Throughput::Bytes(bytes));
    group.measurement_time(Duration::from_secs(5));
    for wrapped in [false, true] {
        let name = if wrapped { "wrapped" } else { "unwrapped" };
        let mut pipe = DriverPipe::new(wrapped);
        group.bench_function(name, |b| {
            b.iter(|| {
                let n = pipe.round(frame);
                assert_eq!(n as u64, bytes);
                black_box(n)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, overhead);
criterion_main!(benches);
