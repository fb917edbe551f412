//! Decode throughput of `GrpcCodec` with keepalive removal, side by side in
//! one run with the same framing without it, for 64 B and 1 KiB messages:
//!
//! - `length_delimited`: tokio-util's `LengthDelimitedCodec` configured for
//!   the gRPC prefix (length at offset 1, 4 bytes, big-endian, the 5-byte
//!   header skipped): the framing every tokio user already has, removing
//!   nothing.
//! - `grpc_codec`: `FramedRead` with `GrpcCodec`, removing nothing (the
//!   codec only frames).
//! - `grpc_codec_keepalive_stream`: the same under a `KeepaliveStream`,
//!   which classifies every message and removes the keepalives: what a user
//!   of the codec runs.
//!
//! Each iteration decodes 1 MiB of payload (16,384 messages of 64 B, or
//! 1,024 of 1 KiB), with no keepalive among them (a busy stream's steady
//! state), from an in-memory `&[u8]` (tokio's `AsyncRead`), polled by hand
//! with a no-op waker: no runtime, no I/O, so the codec's and the
//! classifier's cost per message shows in full. The payloads are protobuf
//! (`field 1: bytes`), as a gRPC stream carries.
//!
//! `cargo bench -p inlinekeepalive --features tokio --bench codec -- --warm-up-time 1 --measurement-time 3`
//!
//! Goal: `grpc_codec_keepalive_stream` >= 0.95x `length_delimited`.

use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Poll};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::task::noop_waker_ref;
use futures::Stream;
use inlinekeepalive::codec::GrpcCodec;
use inlinekeepalive::{wire, KeepaliveStream};
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

const TOTAL_PAYLOAD: usize = 1 << 20;

/// `count` frames of a `size`-byte protobuf payload: field 1, wire type 2.
fn stream_of(size: usize) -> (Vec<u8>, usize) {
    assert!((3..=16_383).contains(&size));
    let body = size - 3; // tag, a two-byte length varint
    let mut payload = vec![0x0a, (body as u8 & 0x7f) | 0x80, (body >> 7) as u8];
    payload.resize(size, 0x61);
    let frame = wire::frame(&payload).expect("a small frame");
    let count = TOTAL_PAYLOAD / size;
    (frame.repeat(count), count)
}

/// Polls `stream` to its end and returns the payload bytes it yielded.
fn drain<S, T, E>(mut stream: S, len: impl Fn(&T) -> usize) -> usize
where
    S: Stream<Item = Result<T, E>> + Unpin,
    E: std::fmt::Debug,
{
    let mut cx = Context::from_waker(noop_waker_ref());
    let mut total = 0;
    loop {
        match Pin::new(&mut stream).poll_next(&mut cx) {
            Poll::Ready(Some(item)) => total += len(&black_box(item.expect("decodes"))),
            Poll::Ready(None) => return total,
            Poll::Pending => unreachable!("an in-memory reader never waits"),
        }
    }
}

fn codec(c: &mut Criterion) {
    for size in [64, 1024] {
        let (wire, count) = stream_of(size);
        let mut group = c.benchmark_group(format!("codec_decode_{size}B"));
        group.throughput(Throughput::Bytes(TOTAL_PAYLOAD as u64));

        group.bench_function("length_delimited", |b| {
            b.iter(|| {
                let codec = LengthDelimitedCodec::builder()
                    .length_field_offset(1)
                    .length_field_length(4)
                    .num_skip(5)
                    .max_frame_length(4 << 20)
                    .new_codec();
                let n = drain(FramedRead::new(&wire[..], codec), |m| m.len());
                assert_eq!(n, count * size);
            });
        });

        group.bench_function("grpc_codec", |b| {
            b.iter(|| {
                let framed = FramedRead::new(&wire[..], GrpcCodec::new());
                let n = drain(framed, |m| m.payload().len());
                assert_eq!(n, count * size);
            });
        });

        group.bench_function("grpc_codec_keepalive_stream", |b| {
            b.iter(|| {
                let framed = FramedRead::new(&wire[..], GrpcCodec::new());
                let mut stream = KeepaliveStream::new(framed);
                let n = drain(&mut stream, |m| m.payload().len());
                assert_eq!(n, count * size);
                assert_eq!(stream.stats().messages_passed, count as u64);
            });
        });
        group.finish();
    }
}

criterion_group!(benches, codec);
criterion_main!(benches);
