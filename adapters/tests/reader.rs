//! `KeepaliveReader`: every chunking and buffer size, bad input, dead peers.

mod support;

use std::io::ErrorKind;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use futures::executor::block_on;
use futures::io::{AsyncRead, AsyncReadExt};
use inlinekeepalive::wire::KEEPALIVE_FRAME;
use inlinekeepalive::{FrameError, KeepaliveReader, PeerTimedOut};
use support::{
    compressed_frame, frame, gzip_keepalive, zlib_keepalive, Chunks, ChunkyPipe, MockTimer,
};

/// Application frames of assorted sizes (the short ones are classified,
/// the long ones forwarded from their header) with keepalives between them.
fn mixed_stream() -> (Vec<u8>, Vec<u8>, u64) {
    let apps = [
        frame(&[0x08, 0x01]),
        frame(&[]),
        frame(&[0x0a; 64]),
        frame(&[0x0a; 65]),
        frame(&[0x42; 300]),
        // A collision: field 100000000 with another value. Delivered.
        frame(&[0x82, 0x90, 0xbc, 0xfd, 0x02, 0x01, b'x']),
    ];
    let mut wire = Vec::new();
    let mut expected = Vec::new();
    let mut keepalives = 0;
    for (i, app) in apps.iter().enumerate() {
        for _ in 0..i % 3 {
            wire.extend_from_slice(&KEEPALIVE_FRAME);
            keepalives += 1;
        }
        wire.extend_from_slice(app);
        expected.extend_from_slice(app);
    }
    wire.extend_from_slice(&KEEPALIVE_FRAME);
    (wire, expected, keepalives + 1)
}

fn read_all_with(
    reader: &mut KeepaliveReader<Chunks>,
    buf_size: usize,
) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; buf_size];
    loop {
        let n = block_on(reader.read(&mut buf))?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn every_chunk_size_and_every_buffer_size_gives_the_same_bytes() {
    let (wire, expected, keepalives) = mixed_stream();
    for chunk in [1, 2, 3, 4, 5, 6, 7, 13, 26, 27, 28, 64, 69, 70, 500, 4096] {
        for buf_size in [1, 2, 3, 4, 5, 6, 7, 8, 26, 27, 28, 68, 69, 70, 71, 1000] {
            let mut reader = KeepaliveReader::new(Chunks::new(wire.clone(), vec![chunk]));
            let out = read_all_with(&mut reader, buf_size).unwrap();
            assert_eq!(out, expected, "chunk {chunk}, buffer {buf_size}");
            let stats = reader.stats();
            assert_eq!(stats.keepalives_removed, keepalives);
            assert_eq!(stats.messages_passed, 6);
            assert_eq!(stats.collisions, 1);
        }
    }
}

#[test]
fn random_chunks_and_buffers() {
    let (wire, expected, _) = mixed_stream();
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..300 {
        let sizes: Vec<usize> = (0..17).map(|_| rng.usize(1..40)).collect();
        let mut reader = KeepaliveReader::new(Chunks::new(wire.clone(), sizes));
        let mut out = Vec::new();
        loop {
            let mut buf = vec![0u8; rng.usize(1..100)];
            let n = block_on(reader.read(&mut buf)).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, expected);
    }
}

#[test]
fn a_bad_compressed_flag_is_invalid_data_after_the_good_bytes() {
    let good = frame(&[1, 2, 3]);
    for chunk in [1, 3, 8, 9, 100] {
        let mut wire = good.clone();
        wire.extend_from_slice(&KEEPALIVE_FRAME);
        wire.extend_from_slice(&[7, 0, 0, 0, 1, 9]);
        wire.extend_from_slice(&good);
        let mut reader = KeepaliveReader::new(Chunks::new(wire, vec![chunk]));
        let mut out = Vec::new();
        let err = loop {
            let mut buf = [0u8; 4];
            match block_on(reader.read(&mut buf)) {
                Ok(0) => panic!("end of stream instead of an error"),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => break e,
            }
        };
        assert_eq!(out, good, "chunk {chunk}: bytes before the error, once");
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert_eq!(
            err.to_string(),
            "invalid gRPC compressed-flag 7 (expected 0 or 1)"
        );
        let inner = err.get_ref().and_then(|e| e.downcast_ref::<FrameError>());
        assert_eq!(inner, Some(&FrameError::BadFlag(7)));
        // Sticky.
        let again = block_on(reader.read(&mut [0u8; 16])).unwrap_err();
        assert_eq!(again.kind(), ErrorKind::InvalidData);
    }
}

#[test]
fn a_stream_ending_inside_a_frame_is_unexpected_eof() {
    let good = frame(&[1, 2, 3]);
    // Inside a short frame (held back), inside a long one (forwarded), and
    // inside a header.
    let cuts: [(Vec<u8>, &[u8], u64); 3] = [
        (frame(&[5; 10])[..8].to_vec(), b"" as &[u8], 7),
        (frame(&[5; 100])[..50].to_vec(), &frame(&[5; 100])[..50], 55),
        (vec![0, 0], b"", 3),
    ];
    for (tail, forwarded, missing) in cuts {
        for chunk in [1, 4, 1000] {
            let mut wire = good.clone();
            wire.extend_from_slice(&tail);
            let mut reader = KeepaliveReader::new(Chunks::new(wire, vec![chunk]));
            let mut out = Vec::new();
            let err = loop {
                let mut buf = [0u8; 7];
                match block_on(reader.read(&mut buf)) {
                    Ok(0) => panic!("clean end of stream inside a frame"),
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                    Err(e) => break e,
                }
            };
            let mut expected = good.clone();
            expected.extend_from_slice(forwarded);
            assert_eq!(out, expected, "chunk {chunk}");
            assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
            assert_eq!(
                err.to_string(),
                format!("gRPC stream ended inside a frame ({missing} more bytes were announced)")
            );
            let again = block_on(reader.read(&mut [0u8; 16])).unwrap_err();
            assert_eq!(again.kind(), ErrorKind::UnexpectedEof);
        }
    }
}

#[test]
fn inner_errors_pass_through_and_are_not_sticky() {
    struct FailOnce(bool);
    impl AsyncRead for FailOnce {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            _buf: &mut [u8],
        ) -> Poll<std::io::Result<usize>> {
            if self.0 {
                return Poll::Ready(Ok(0));
            }
            self.0 = true;
            Poll::Ready(Err(ErrorKind::Interrupted.into()))
        }
    }
    let mut reader = KeepaliveReader::new(FailOnce(false));
    let e = block_on(reader.read(&mut [0u8; 8])).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Interrupted);
    assert_eq!(block_on(reader.read(&mut [0u8; 8])).unwrap(), 0);
}

/// `with_grpc_encoding` sets the stream's encoding (case-insensitively): a
/// keepalive that the peer compressed is then recognised and removed; without
/// it (identity), or with the other encoding, the same frame is an ordinary
/// compressed message and passes untouched.
#[test]
fn with_grpc_encoding_is_a_builder_option() {
    let app = frame(&[0x08, 0x01]);
    for (compressed, right, wrong) in [
        (gzip_keepalive(), "gzip", "deflate"),
        (zlib_keepalive(), "DEFLATE", "gzip"),
    ] {
        let ka = compressed_frame(&compressed);
        let wire = [app.clone(), ka.clone(), app.clone()].concat();
        for chunk in [1, 7, 1000] {
            let mut reader = KeepaliveReader::new(Chunks::new(wire.clone(), vec![chunk]))
                .with_grpc_encoding(right);
            let out = read_all_with(&mut reader, 64).unwrap();
            assert_eq!(
                out,
                [app.clone(), app.clone()].concat(),
                "{right}, chunk {chunk}"
            );
            assert_eq!(reader.stats().keepalives_removed, 1, "{right}");
            assert_eq!(reader.stats().messages_passed, 2, "{right}");
            for other in [None, Some(wrong)] {
                let reader = KeepaliveReader::new(Chunks::new(wire.clone(), vec![chunk]));
                let mut reader = match other {
                    Some(encoding) => reader.with_grpc_encoding(encoding),
                    None => reader,
                };
                let out = read_all_with(&mut reader, 64).unwrap();
                assert_eq!(out, wire, "{right} read as {other:?}: passed untouched");
                assert_eq!(reader.stats().keepalives_removed, 0);
                assert_eq!(reader.stats().messages_passed, 3);
            }
        }
    }
}

#[test]
fn a_silent_peer_times_out_and_a_talking_one_does_not() {
    let timer = MockTimer::new();
    let writer = ChunkyPipe::new(1, 64);
    let mut reader = KeepaliveReader::new(writer.other_end(2))
        .detect_dead_peer(timer.clone(), Duration::from_millis(100));
    let mut buf = [0u8; 64];
    // Keepalives every 60 ms keep it alive: nothing is delivered, no error.
    for _ in 0..5 {
        timer.advance(Duration::from_millis(60));
        futures::executor::block_on(async {
            let mut w = writer.clone();
            futures::io::AsyncWriteExt::write_all(&mut w, &KEEPALIVE_FRAME).await
        })
        .unwrap();
        assert!(support::poll_once(&mut reader.read(&mut buf)).is_pending());
    }
    assert_eq!(reader.stats().keepalives_removed, 5);
    // Then silence.
    timer.advance(Duration::from_millis(150));
    let err = match support::poll_once(&mut reader.read(&mut buf)) {
        Poll::Ready(Err(e)) => e,
        other => panic!("expected a timeout, got {other:?}"),
    };
    assert_eq!(err.kind(), ErrorKind::TimedOut);
    let inner = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<PeerTimedOut>())
        .unwrap();
    assert!(inner.silent_for >= Duration::from_millis(100));
    assert!(err.to_string().starts_with("peer sent nothing"));
    assert!(timer.live() <= 1);
    drop(reader);
    assert_eq!(timer.live(), 0, "the reader's timer is dropped with it");
}

/// The encoding can be learnt late: set after the first message was read,
/// it applies to the frames that follow (a compressed keepalive among them
/// is removed).
#[test]
fn with_encoding_after_reading_applies_to_what_follows() {
    let app = frame(&[0x08, 0x01]);
    let ka = compressed_frame(&gzip_keepalive());
    let wire = [app.clone(), ka, app.clone()].concat();
    let mut reader = KeepaliveReader::new(Chunks::new(wire, vec![app.len()]));
    let mut out = vec![0u8; app.len()];
    block_on(reader.read_exact(&mut out)).unwrap();
    let mut reader = reader.with_encoding(inlinekeepalive::core::Encoding::Gzip);
    block_on(reader.read_to_end(&mut out)).unwrap();
    assert_eq!(out, [app.clone(), app].concat());
    assert_eq!(reader.stats().keepalives_removed, 1);
}

/// Turning dead-peer detection on after reading began keeps the filter's
/// place in the stream: a short frame it holds back is still delivered, and
/// the payload of a long frame it is passing on is not read as frames (a
/// payload that contains a keepalive frame's bytes stays whole).
#[test]
fn detect_dead_peer_after_reading_keeps_the_stream_intact() {
    let short = [frame(&[0x08, 0x01]), frame(&[0x08, 0x02])].concat();
    let mut long_payload = vec![0x42; 3];
    long_payload.extend_from_slice(&KEEPALIVE_FRAME);
    long_payload.resize(100, 0x42);
    let long = frame(&long_payload);
    // (stream, chunk sizes, bytes read before detection is turned on)
    let cases = [
        // The first read returns frame 1 and leaves 3 bytes of frame 2 held.
        (short.clone(), vec![10, 4], 7),
        // 8 bytes in, the filter is passing the long frame's payload on.
        (long.clone(), vec![8, 200], 8),
    ];
    for (wire, chunks, first) in cases {
        let mut reader = KeepaliveReader::new(Chunks::new(wire.clone(), chunks));
        let mut out = vec![0u8; first];
        block_on(reader.read_exact(&mut out)).unwrap();
        let mut reader = reader.detect_dead_peer(MockTimer::new(), Duration::from_secs(60));
        block_on(reader.read_to_end(&mut out)).unwrap();
        assert_eq!(out, wire, "chunks {first}");
        assert_eq!(reader.stats().keepalives_removed, 0);
    }
}

/// A peer that sends `keepalives` keepalive frames, generated lazily, one
/// frame per read at most, then `app`, then end of stream. Counts the bytes
/// of keepalive frames it handed out in `sent`, which the test shares.
struct KeepaliveFlood {
    keepalives: u64,
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    app: Vec<u8>,
    app_pos: usize,
}

/// Keepalive frames handed out so far (partial ones rounded down).
fn keepalives_sent(sent: &std::sync::atomic::AtomicU64) -> u64 {
    sent.load(std::sync::atomic::Ordering::SeqCst) / KEEPALIVE_FRAME.len() as u64
}

impl AsyncRead for KeepaliveFlood {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let sent = self.sent.load(std::sync::atomic::Ordering::SeqCst);
        if sent < self.keepalives * KEEPALIVE_FRAME.len() as u64 {
            let offset = (sent % KEEPALIVE_FRAME.len() as u64) as usize;
            let rest = &KEEPALIVE_FRAME[offset..];
            let n = rest.len().min(buf.len());
            buf[..n].copy_from_slice(&rest[..n]);
            self.sent
                .fetch_add(n as u64, std::sync::atomic::Ordering::SeqCst);
            return Poll::Ready(Ok(n));
        }
        let n = buf.len().min(self.app.len() - self.app_pos);
        buf[..n].copy_from_slice(&self.app[self.app_pos..self.app_pos + n]);
        self.app_pos += n;
        Poll::Ready(Ok(n))
    }
}

/// A peer that floods the reader with keepalives (and nothing else) must not
/// keep one `poll_read` call busy until the flood ends: the reader yields
/// (`Pending`, after waking its own task) every so often, so that the task
/// can be cancelled or other work on the executor can run. The application
/// bytes that follow the flood still arrive, exactly once.
#[test]
fn poll_read_yields_while_the_peer_sends_only_keepalives() {
    /// The most keepalives one `poll_read` call may swallow.
    const BOUND: u64 = 1024;
    const FLOOD: u64 = 4_000_000;
    let mut app = frame(&[0x08, 0x01]);
    app.extend_from_slice(&frame(&[0x42; 300]));
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let flood = KeepaliveFlood {
        keepalives: FLOOD,
        sent: sent.clone(),
        app: app.clone(),
        app_pos: 0,
    };
    let mut reader = KeepaliveReader::new(flood);
    let (waker, wakes) = support::counting_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    let mut buf = [0u8; 4096];
    let mut out = Vec::new();
    let mut pendings = 0u64;
    let mut polls = 0u64;
    loop {
        polls += 1;
        let before = keepalives_sent(&sent);
        let wakes_before = wakes.load(std::sync::atomic::Ordering::SeqCst);
        let polled = Pin::new(&mut reader).poll_read(&mut cx, &mut buf);
        let swallowed = keepalives_sent(&sent) - before;
        assert!(
            swallowed <= BOUND,
            "poll call {polls} swallowed {swallowed} keepalives before returning {polled:?} \
             (at most {BOUND} allowed per call; {pendings} Pending so far)"
        );
        match polled {
            Poll::Pending => {
                pendings += 1;
                assert!(
                    wakes.load(std::sync::atomic::Ordering::SeqCst) > wakes_before,
                    "poll call {polls} returned Pending without waking the task \
                     (the inner reader is always ready)"
                );
            }
            Poll::Ready(Ok(0)) => break,
            Poll::Ready(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Poll::Ready(Err(e)) => panic!("poll call {polls} failed: {e}"),
        }
        assert!(polls <= 2 * FLOOD, "no end of stream after {polls} polls");
    }
    assert_eq!(out, app, "the application bytes, exactly once");
    assert_eq!(keepalives_sent(&sent), FLOOD);
    assert!(
        pendings >= FLOOD / BOUND,
        "{pendings} Pending for {FLOOD} keepalives"
    );
}
