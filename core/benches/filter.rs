//! Benchmarks of the classifier and the frame filter.
//!
//! `cargo bench -p inlinekeepalive-core --features compression --bench filter`
//!
//! - `classify/*`: one call on the canonical keepalive and on a 1 KiB
//!   application message.
//! - `stream_64MiB/*`: the frame filter over 64 MiB of 1 KiB frames with 1%
//!   keepalives, fed in 16 KiB chunks, beside a plain `memcpy` of the same
//!   64 MiB in the same group, both with byte throughput. The filter skips
//!   long frames instead of reading them, so it should beat the copy.
//! - `stream_1MiB/*`: the same over the first 1 MiB, which stays in cache
//!   (the adapters' overhead bench moves 1 MiB per iteration): the per-frame
//!   cost of the filter and of the `FrameTracker` that a writer runs, beside
//!   a `memcpy` of that 1 MiB.
//! - `small_64MiB/*` and `small_1MiB/*`: the same with 69-byte frames
//!   (64-byte payloads, every one short enough to be a keepalive, so each is
//!   classified), 1% keepalives. The payloads are log events (three varint
//!   fields and a line of ASCII), told apart from keepalives by the 0xBC
//!   prefilter; `small_random_bytes_1MiB` has one bytes field of
//!   pseudo-random bytes instead, a fifth of which contain 0xBC and take the
//!   full walk. `frame_tracker` is the bare header walk, the floor of any
//!   filter.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use inlinekeepalive_core::wire::{FRAME_HEADER_LEN, KEEPALIVE_FRAME, KEEPALIVE_MESSAGE};
use inlinekeepalive_core::{classify, FrameFilter, FrameTracker, Output};

const STREAM_LEN: usize = 64 << 20;
const FRAME_LEN: usize = 1024;
const CHUNK_LEN: usize = 16 << 10;
/// One keepalive after every this many application frames: 1% of frames.
const KEEPALIVE_EVERY: usize = 99;

/// A 1 KiB protobuf message: a string field, then 1000-odd bytes of
/// repeated length-delimited fields, as a log batch would look.
fn application_message() -> Vec<u8> {
    let mut msg = vec![0x0a, 0x0a];
    msg.extend_from_slice(b"01HZX3K9Q9");
    let mut line = 0u8;
    while msg.len() < 1024 - 66 {
        msg.extend_from_slice(&[0x12, 0x3c]);
        msg.extend_from_slice(b"step ");
        msg.push(b'0' + line % 10);
        msg.extend_from_slice(&[b'0'; 54]);
        line = line.wrapping_add(1);
    }
    let pad = 1024 - msg.len() - 2;
    msg.extend_from_slice(&[0x1a, pad as u8]);
    msg.resize(msg.len() + pad, b'x');
    assert_eq!(msg.len(), 1024);
    msg
}

/// Up to 64 MiB of 1 KiB frames (header included) with a keepalive frame
/// after every 99 application frames; also returns the keepalive count.
fn stream() -> (Vec<u8>, u64) {
    let payload_len = FRAME_LEN - FRAME_HEADER_LEN;
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(payload_len as u32).to_be_bytes());
    frame.extend((0..payload_len).map(|i| (i * 7) as u8));
    let mut stream = Vec::with_capacity(STREAM_LEN + FRAME_LEN);
    let mut keepalives = 0;
    let mut n = 0;
    while stream.len() + FRAME_LEN <= STREAM_LEN {
        stream.extend_from_slice(&frame);
        n += 1;
        if n % KEEPALIVE_EVERY == 0 && stream.len() + KEEPALIVE_FRAME.len() <= STREAM_LEN {
            stream.extend_from_slice(&KEEPALIVE_FRAME);
            keepalives += 1;
        }
    }
    (stream, keepalives)
}

/// Runs the filter over `stream` in 16 KiB chunks, the way a transport loop
/// would: hand each forwarded range on (here: to `black_box`) and count it.
fn filter_stream(stream: &[u8]) -> (usize, u64) {
    let mut filter = FrameFilter::new();
    let mut passed = 0;
    for chunk in stream.chunks(CHUNK_LEN) {
        let mut input = chunk;
        while !input.is_empty() {
            let step = filter.step(input).expect("well-framed");
            match step.output {
                Output::Forward(range) => {
                    passed += range.len();
                    black_box(&input[range]);
                }
                Output::Held(bytes) => {
                    passed += bytes.len();
                    black_box(bytes);
                }
                Output::Removed | Output::Nothing => {}
            }
            input = &input[step.consumed..];
        }
    }
    (passed, filter.stats().keepalives_removed)
}

/// Runs a `FrameTracker` over `stream` in writes of `write_len` bytes;
/// returns the frames seen. 16 KiB writes spread the per-write cost over
/// 16 frames; one write per 1 KiB frame (an application that calls
/// `write_all` once per message) pays it in full.
fn track_stream(stream: &[u8], write_len: usize) -> u64 {
    let mut tracker = FrameTracker::new();
    for write in stream.chunks(write_len) {
        tracker.advance(black_box(write)).expect("well-framed");
    }
    tracker.frames()
}

/// A 64-byte log event, as a small message of a real schema looks:
/// `seq` (varint), `unix_ms` (varint), `level` (enum) and a line of ASCII.
fn log_event(seq: u64) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let mut msg = vec![0x08];
    varint(&mut msg, seq);
    msg.push(0x10);
    varint(&mut msg, 1_764_600_000_000 + seq * 37);
    msg.extend_from_slice(&[0x18, (seq % 4) as u8, 0x22]);
    let text_len = 64 - msg.len() - 1;
    msg.push(text_len as u8);
    let line = format!("GET /api/v1/items/{seq} 200 in 3ms ");
    msg.extend(line.bytes().cycle().take(text_len));
    assert_eq!(msg.len(), 64);
    msg
}

/// Up to `len` bytes of 69-byte frames (64-byte payloads from `payload`), a
/// keepalive after every 99; also returns the keepalive count.
fn small_stream(len: usize, payload: impl Fn(u64) -> Vec<u8>) -> (Vec<u8>, u64) {
    let mut stream = Vec::with_capacity(len + 69);
    let (mut keepalives, mut n) = (0, 0);
    while stream.len() + 69 <= len {
        stream.extend_from_slice(&[0, 0, 0, 0, 64]);
        stream.extend_from_slice(&payload(n));
        n += 1;
        if n % KEEPALIVE_EVERY as u64 == 0 && stream.len() + KEEPALIVE_FRAME.len() <= len {
            stream.extend_from_slice(&KEEPALIVE_FRAME);
            keepalives += 1;
        }
    }
    (stream, keepalives)
}

/// A bytes field of 62 pseudo-random bytes: about a fifth contain 0xBC.
fn random_bytes(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut msg = vec![0x0a, 62];
    msg.extend((0..62).map(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as u8
    }));
    msg
}

fn classify_benches(c: &mut Criterion) {
    let app = application_message();
    let mut group = c.benchmark_group("classify");
    group.bench_function("canonical_keepalive", |b| {
        b.iter(|| classify(black_box(&KEEPALIVE_MESSAGE)))
    });
    group.bench_function("application_1KiB", |b| b.iter(|| classify(black_box(&app))));
    let event = log_event(1234);
    group.bench_function("application_64B_log_event", |b| {
        b.iter(|| classify(black_box(&event)))
    });
    let blob = random_bytes(7);
    group.bench_function("application_64B_one_bytes_field", |b| {
        b.iter(|| classify(black_box(&blob)))
    });
    // 64 bytes of 32 one-byte varint fields: the walk's worst common case.
    let varints: Vec<u8> = (0..32u8)
        .flat_map(|i| [0x08 | ((i % 15 + 1) << 3), i])
        .collect();
    assert_eq!(
        classify(&varints),
        inlinekeepalive_core::Classification::Application
    );
    group.bench_function("application_64B_32_varint_fields", |b| {
        b.iter(|| classify(black_box(&varints)))
    });
    group.finish();
}

fn small_benches(c: &mut Criterion) {
    let (stream, keepalives) = small_stream(STREAM_LEN, log_event);
    let (passed, removed) = filter_stream(&stream);
    assert_eq!(removed, keepalives);
    assert_eq!(
        passed,
        stream.len() - keepalives as usize * KEEPALIVE_FRAME.len()
    );
    let (random, _) = small_stream(1 << 20, random_bytes);
    for (name, bytes) in [
        ("small_64MiB", &stream[..]),
        ("small_1MiB", &stream[..1 << 20]),
        ("small_random_bytes_1MiB", &random[..]),
    ] {
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        if bytes.len() > 1 << 20 {
            group.sample_size(20);
        }
        group.bench_function("frame_filter_16KiB_chunks", |b| {
            b.iter(|| filter_stream(black_box(bytes)))
        });
        group.bench_function("frame_tracker_16KiB_chunks", |b| {
            b.iter(|| track_stream(black_box(bytes), CHUNK_LEN))
        });
        let mut copy = vec![0u8; bytes.len()];
        group.bench_function("memcpy", |b| {
            b.iter(|| {
                copy.copy_from_slice(black_box(bytes));
                black_box(&copy);
            })
        });
        group.finish();
    }
}

fn stream_benches(c: &mut Criterion) {
    let (stream, keepalives) = stream();
    let (passed, removed) = filter_stream(&stream);
    assert_eq!(removed, keepalives);
    assert_eq!(
        passed,
        stream.len() - keepalives as usize * KEEPALIVE_FRAME.len()
    );

    let mut group = c.benchmark_group("stream_64MiB");
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.sample_size(20);
    group.bench_function("frame_filter_16KiB_chunks", |b| {
        b.iter(|| filter_stream(black_box(&stream)))
    });
    let mut copy = vec![0u8; stream.len()];
    group.bench_function("memcpy", |b| {
        b.iter(|| {
            copy.copy_from_slice(black_box(&stream));
            black_box(&copy);
        })
    });
    group.finish();

    // In cache: 1 MiB.
    let small = &stream[..1 << 20];
    let mut group = c.benchmark_group("stream_1MiB");
    group.throughput(Throughput::Bytes(small.len() as u64));
    group.bench_function("frame_filter_16KiB_chunks", |b| {
        b.iter(|| filter_stream(black_box(small)))
    });
    group.bench_function("frame_tracker_16KiB_chunks", |b| {
        b.iter(|| track_stream(black_box(small), CHUNK_LEN))
    });
    let frame_len = FRAME_HEADER_LEN + 1024;
    let mut frame = vec![0u8; frame_len];
    frame[1..FRAME_HEADER_LEN].copy_from_slice(&1024u32.to_be_bytes());
    let frames = frame.repeat(small.len() / frame_len);
    group.bench_function("frame_tracker_one_write_per_1KiB_frame", |b| {
        b.iter(|| track_stream(black_box(&frames), frame_len))
    });
    let mut copy = vec![0u8; small.len()];
    group.bench_function("memcpy", |b| {
        b.iter(|| {
            copy.copy_from_slice(black_box(small));
            black_box(&copy);
        })
    });
    group.finish();
}

criterion_group!(benches, classify_benches, stream_benches, small_benches);
criterion_main!(benches);
