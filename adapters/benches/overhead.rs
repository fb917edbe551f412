//! Overhead of the byte-level wrappers: 1 KiB gRPC frames written through a
//! `KeepaliveWriter` into an in-memory pipe and read back through a
//! `KeepaliveReader`, side by side with the same pipe unwrapped.
//!
//! `cargo bench -p inlinekeepalive --bench overhead`
//!
//! The pipe is a `Vec<u8>` that the writer fills and the reader then drains
//! (`&[u8]` implements `AsyncRead`), so the figures measure the wrappers and
//! not a scheduler. Goal: wrapped throughput >= 0.98x unwrapped.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::executor::block_on;
use futures::io::{AsyncReadExt, AsyncWriteExt};
use inlinekeepalive::core::Config;
use inlinekeepalive::timer::FuturesTimer;
use inlinekeepalive::{KeepaliveReader, KeepaliveWriter};

const FRAME_PAYLOAD: usize = 1024;
const FRAMES: usize = 1024; // 1 MiB of payload per iteration
const READ_BUF: usize = 16 * 1024;

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

/// Writes every frame, then reads the pipe to the end: returns bytes read.
async fn round_trip_plain(frame: &[u8], pipe: &mut Vec<u8>, buf: &mut [u8]) -> usize {
    pipe.clear();
    for _ in 0..FRAMES {
        pipe.write_all(frame).await.unwrap();
    }
    pipe.flush().await.unwrap();
    let mut reader = &pipe[..];
    let mut total = 0;
    loop {
        let n = reader.read(buf).await.unwrap();
        if n == 0 {
            break total;
        }
        total += n;
    }
}

async fn round_trip_wrapped(
    frame: &[u8],
    writer: &mut KeepaliveWriter<Vec<u8>, FuturesTimer>,
    buf: &mut [u8],
) -> usize {
    writer.get_mut().clear();
    for _ in 0..FRAMES {
        writer.write_all(frame).await.unwrap();
    }
    writer.flush().await.unwrap();
    let mut reader = KeepaliveReader::new(&writer.get_ref()[..]);
    let mut total = 0;
    loop {
        let n = reader.read(buf).await.unwrap();
        if n == 0 {
            break total;
        }
        total += n;
    }
}

fn overhead(c: &mut Criterion) {
    let frame = frame();
    let bytes = (frame.len() * FRAMES) as u64;
    let mut group = c.benchmark_group("pipe_1KiB_frames");
    group.throughput(Throughput::Bytes(bytes));
    group.measurement_time(Duration::from_secs(5));

    let mut buf = vec![0u8; READ_BUF];
    let mut pipe = Vec::with_capacity(frame.len() * FRAMES);
    group.bench_function("unwrapped", |b| {
        b.iter(|| {
            let n = block_on(round_trip_plain(&frame, &mut pipe, &mut buf));
            assert_eq!(n as u64, bytes);
            black_box(n)
        })
    });
    // Peer support on and a 20 s interval: the machine is live, but no
    // keepalive falls due during the run (the steady state of a busy stream
    // under the Idle policy). The pipe's buffer is reused, as above.
    let mut writer = KeepaliveWriter::new(
        Vec::with_capacity(frame.len() * FRAMES),
        FuturesTimer,
        Config::default(),
    )
    .peer_supports_keepalives(true);
    group.bench_function("wrapped", |b| {
        b.iter(|| {
            let n = block_on(round_trip_wrapped(&frame, &mut writer, &mut buf));
            assert_eq!(n as u64, bytes);
            black_box(n)
        })
    });
    group.finish();
}

criterion_group!(benches, overhead);
criterion_main!(benches);
