//! No loss under load: 1,000,000 application frames of random sizes (0 B to
//! 64 KiB, mostly small) through `KeepaliveWriter` -> a transport that
//! accepts and returns random short counts (and is now and then not ready)
//! -> `KeepaliveReader`, with random idle gaps on a mocked clock so that
//! keepalives go in, some of them while a frame is half written.
//!
//! Checked: the raw stream parses as frames where every frame is either a
//! keepalive or the next application frame, byte for byte (so keepalives
//! went in only at boundaries); the reader's output is exactly the
//! application frames, in order, byte for byte (memcmp against the pool
//! they were cut from) and by a running checksum; keepalives sent ==
//! keepalives seen on the wire == keepalives removed.
//!
//! `LOAD_FRAMES=n` runs fewer or more frames (default 1,000,000).

mod support;

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::io::{AsyncRead, AsyncWrite};
use inlinekeepalive::wire::KEEPALIVE_FRAME;
use inlinekeepalive::{Config, KeepaliveReader, KeepaliveWriter};
use support::{ChunkyPipe, MockTimer};

const INTERVAL: Duration = Duration::from_millis(20);
const POOL: usize = 1 << 17;

/// A frame's payload: `pool[offset..offset + len]`.
#[derive(Clone, Copy, Debug)]
struct Payload {
    offset: usize,
    len: usize,
}

/// Frame sizes heavily weighted to small frames (mean ~0.7 KiB), with
/// both ends of the range, 0 B and 64 KiB, drawn now and then.
fn payload(rng: &mut fastrand::Rng) -> Payload {
    let len = match rng.u32(..1000) {
        0 => 0,
        1 => 65_536,
        2..=601 => rng.usize(0..=32),
        602..=901 => rng.usize(33..=512),
        902..=991 => rng.usize(513..=8192),
        992..=998 => rng.usize(8193..=32_768),
        _ => rng.usize(32_769..=65_536),
    };
    Payload {
        offset: rng.usize(..=POOL - len),
        len,
    }
}

/// Parses frames off the front of `buf` (from `*start`) and checks each
/// against `expected`; keepalives are counted where `allow_keepalives`, and
/// a failure otherwise.
struct Verifier {
    buf: Vec<u8>,
    start: usize,
    expected: VecDeque<Payload>,
    frames: u64,
    keepalives: u64,
    checksum: u64,
}

impl Verifier {
    fn new() -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            expected: VecDeque::new(),
            frames: 0,
            keepalives: 0,
            checksum: 0,
        }
    }

    fn check(&mut self, pool: &[u8], allow_keepalives: bool, what: &str) {
        loop {
            let rest = &self.buf[self.start..];
            if rest.len() < 5 {
                break;
            }
            assert_eq!(rest[0], 0, "{what}: bad flag at frame {}", self.frames);
            let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
            if rest.len() < 5 + len {
                break;
            }
            let frame = &rest[..5 + len];
            if frame == KEEPALIVE_FRAME {
                assert!(
                    allow_keepalives,
                    "{what}: a keepalive reached the application"
                );
                self.keepalives += 1;
            } else {
                let want = self
                    .expected
                    .pop_front()
                    .unwrap_or_else(|| panic!("{what}: an unexpected frame"));
                assert_eq!(len, want.len, "{what}: length of frame {}", self.frames);
                assert!(
                    frame[5..] == pool[want.offset..want.offset + want.len],
                    "{what}: bytes of frame {}",
                    self.frames
                );
                self.checksum = checksum(self.checksum, frame);
                self.frames += 1;
            }
            self.start += 5 + len;
        }
        if self.start > 1 << 20 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

/// A cheap order-sensitive checksum over a frame (header, length, ends and
/// a sparse sample of the payload); the byte-for-byte check is the memcmp.
fn checksum(acc: u64, frame: &[u8]) -> u64 {
    let mut h = acc ^ (frame.len() as u64);
    for &b in frame.iter().step_by(97).chain(frame.last()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h.rotate_left(5)
}

fn write_all<W: AsyncWrite + Unpin>(writer: &mut W, mut data: &[u8], cx: &mut Context<'_>) {
    while !data.is_empty() {
        // Pending: the mock transport is "not ready" at random; try again.
        if let Poll::Ready(n) = Pin::new(&mut *writer).poll_write(cx, data) {
            let n = n.expect("write failed");
            assert!(n > 0);
            data = &data[n..];
        }
    }
}

/// Reads what is available (until the transport says pending or ends).
fn drain<R: AsyncRead + Unpin>(
    reader: &mut R,
    rng: &mut fastrand::Rng,
    buf: &mut [u8],
    out: &mut Vec<u8>,
    cx: &mut Context<'_>,
) -> bool {
    loop {
        let size = [1, 5, 27, 100, 4096, buf.len()][rng.usize(..6)];
        match Pin::new(&mut *reader).poll_read(cx, &mut buf[..size]) {
            Poll::Ready(Ok(0)) => return true,
            Poll::Ready(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Poll::Ready(Err(e)) => panic!("read failed: {e}"),
            Poll::Pending => return false,
        }
    }
}

#[test]
fn a_million_frames_pass_intact_with_keepalives_only_at_boundaries() {
    let total: u64 = std::env::var("LOAD_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let started = std::time::Instant::now();
    let mut rng = fastrand::Rng::with_seed(0x1b_ee7);
    let pool: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(POOL).collect();

    let timer = MockTimer::new();
    let mut pipe = ChunkyPipe::new(1, 65_536 + 5);
    pipe.skewed = true;
    pipe.pending_one_in = 16;
    pipe.tap();
    let read_end = pipe.other_end(2);
    let config = Config::new(INTERVAL).unwrap();
    let mut writer =
        KeepaliveWriter::new(pipe.clone(), timer.clone(), config).with_peer_support(true);
    let mut reader = KeepaliveReader::new(read_end);
    let mut cx = Context::from_waker(Waker::noop());

    let mut raw = Verifier::new();
    let mut app = Verifier::new();
    let mut read_buf = vec![0u8; 70_000];
    let mut frame = Vec::with_capacity(65_536 + 5);
    let mut sent_checksum = 0u64;
    let mut sent_bytes = 0u64;
    let mut mid_frame_gaps = 0u64;

    for _ in 0..total {
        let p = payload(&mut rng);
        frame.clear();
        frame.push(0);
        frame.extend_from_slice(&(p.len as u32).to_be_bytes());
        frame.extend_from_slice(&pool[p.offset..p.offset + p.len]);
        sent_checksum = checksum(sent_checksum, &frame);
        sent_bytes += frame.len() as u64;
        raw.expected.push_back(p);
        app.expected.push_back(p);

        if rng.u32(..200) == 0 {
            // Idle in the middle of a frame: the keepalive must wait.
            let split = rng.usize(1..frame.len());
            write_all(&mut writer, &frame[..split], &mut cx);
            timer.advance(INTERVAL * 3);
            assert!(Pin::new(&mut writer).poll_keepalive(&mut cx).is_pending());
            write_all(&mut writer, &frame[split..], &mut cx);
            mid_frame_gaps += 1;
        } else {
            write_all(&mut writer, &frame, &mut cx);
        }
        if rng.u32(..40) == 0 {
            // An idle gap of 0 to 3 intervals; the keepalive (if due) goes
            // out from poll_keepalive, or from the next write if the
            // transport is not ready now.
            timer.advance(Duration::from_millis(rng.u64(..60)));
            let _ = Pin::new(&mut writer).poll_keepalive(&mut cx);
        }
        if rng.u32(..4) == 0 || pipe.buffered() > 1 << 20 {
            drain(&mut reader, &mut rng, &mut read_buf, &mut app.buf, &mut cx);
            app.check(&pool, false, "application");
            pipe.take_tap(&mut raw.buf);
            raw.check(&pool, true, "raw stream");
        }
    }
    loop {
        if let Poll::Ready(r) = Pin::new(&mut writer).poll_close(&mut cx) {
            r.unwrap();
            break;
        }
    }
    while !drain(&mut reader, &mut rng, &mut read_buf, &mut app.buf, &mut cx) {}
    app.check(&pool, false, "application");
    pipe.take_tap(&mut raw.buf);
    raw.check(&pool, true, "raw stream");

    let sent = writer.stats();
    let received = reader.stats();
    assert_eq!(app.frames, total, "every frame arrived");
    assert!(app.expected.is_empty() && raw.expected.is_empty());
    assert_eq!(
        app.start,
        app.buf.len(),
        "no stray bytes after the last frame"
    );
    assert_eq!(app.checksum, sent_checksum);
    assert_eq!(raw.checksum, sent_checksum);
    assert_eq!(sent.messages_sent, total);
    assert_eq!(received.messages_passed, total);
    assert_eq!(raw.keepalives, sent.keepalives_sent);
    assert_eq!(received.keepalives_removed, sent.keepalives_sent);
    assert!(
        sent.keepalives_sent >= total / 400,
        "idle gaps should have produced keepalives, got {}",
        sent.keepalives_sent
    );
    eprintln!(
        "load: {total} frames, {sent_bytes} bytes, {} keepalives ({mid_frame_gaps} idle gaps \
         mid-frame), {:.1?}",
        sent.keepalives_sent,
        started.elapsed()
    );
}
