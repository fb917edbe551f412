//! `KeepaliveWriter` and `Driver`: boundaries across partial writes,
//! Waypoint's compatibility matrix, and cancellation.

mod support;

use std::io::ErrorKind;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use futures::executor::block_on;
use futures::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use inlinekeepalive::wire::KEEPALIVE_FRAME;
use inlinekeepalive::{Config, FrameError, KeepaliveReader, KeepaliveWriter, Policy};
use support::{frame, poll_once, writer_keepalive, ChunkyPipe, MockTimer};

const INTERVAL: Duration = Duration::from_millis(20);

fn config() -> Config {
    Config::new(INTERVAL).unwrap()
}

/// Splits a raw stream into frames.
fn frames_of(mut raw: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !raw.is_empty() {
        let len = u32::from_be_bytes(raw[1..5].try_into().unwrap()) as usize;
        out.push(raw[..5 + len].to_vec());
        raw = &raw[5 + len..];
    }
    out
}

/// Writes `data` through `writer` with the mock transport's partial writes.
fn write_all<W: AsyncWrite + Unpin>(writer: &mut W, data: &[u8]) {
    block_on(writer.write_all(data)).unwrap();
}

#[test]
fn a_due_keepalive_waits_for_the_frame_boundary() {
    let timer = MockTimer::new();
    let pipe = ChunkyPipe::new(3, 3);
    let mut writer =
        KeepaliveWriter::new(pipe.clone(), timer.clone(), config()).with_peer_support(true);
    let app = frame(&[9; 40]);
    write_all(&mut writer, &app[..17]);
    timer.advance(INTERVAL * 3);
    // Mid-frame: nothing may go in.
    assert!(poll_once(&mut writer_keepalive(&mut writer)).is_pending());
    write_all(&mut writer, &app[17..]);
    assert_eq!(pipe.take_all(), app);
    // The frame is done, but it was just sent: idle policy waits a whole interval.
    assert!(poll_once(&mut writer_keepalive(&mut writer)).is_pending());
    timer.advance(INTERVAL);
    assert!(poll_once(&mut writer_keepalive(&mut writer)).is_ready());
    assert_eq!(pipe.take_all(), KEEPALIVE_FRAME);
    assert_eq!(writer.stats().keepalives_sent, 1);
}

#[test]
fn a_keepalive_due_mid_frame_goes_before_the_next_frame_even_in_pieces() {
    // Fixed policy: a keepalive the timer finds due while the application is
    // mid-frame is not withdrawn by the rest of that frame.
    let timer = MockTimer::new();
    let pipe = ChunkyPipe::new(4, 5); // at most 5 bytes per write
    let config = config().with_policy(Policy::Fixed);
    let mut writer =
        KeepaliveWriter::new(pipe.clone(), timer.clone(), config).with_peer_support(true);
    assert!(poll_once(&mut writer_keepalive(&mut writer)).is_ready()); // Fixed: one at once
    let a = frame(&[1; 10]);
    let b = frame(&[2; 10]);
    write_all(&mut writer, &a[..7]);
    timer.advance(INTERVAL * 2);
    assert!(poll_once(&mut writer_keepalive(&mut writer)).is_pending()); // due, mid-frame
    write_all(&mut writer, &a[7..]);
    write_all(&mut writer, &b);
    let raw = pipe.take_all();
    assert_eq!(
        frames_of(&raw),
        vec![KEEPALIVE_FRAME.to_vec(), a, KEEPALIVE_FRAME.to_vec(), b]
    );
    assert_eq!(writer.stats().keepalives_sent, 2);
    assert_eq!(writer.stats().messages_sent, 2);
}

#[test]
fn idle_writes_after_a_long_frame_send_no_early_keepalive() {
    // A frame written in many pieces over several intervals, with the task
    // polling `poll_keepalive` in between: the writes are dated by the timer's
    // wake-ups, so no keepalive goes out until an interval after the last.
    let timer = MockTimer::new();
    let pipe = ChunkyPipe::new(7, 5);
    let mut writer =
        KeepaliveWriter::new(pipe.clone(), timer.clone(), config()).with_peer_support(true);
    let app = frame(&[3; 200]);
    for piece in app.chunks(5) {
        write_all(&mut writer, piece);
        timer.advance(INTERVAL / 4);
        assert!(poll_once(&mut writer_keepalive(&mut writer)).is_pending());
    }
    assert_eq!(pipe.take_all(), app);
    assert_eq!(writer.stats().keepalives_sent, 0);
    timer.advance(INTERVAL);
    assert!(poll_once(&mut writer_keepalive(&mut writer)).is_ready());
    assert_eq!(pipe.take_all(), KEEPALIVE_FRAME);
}

#[test]
fn a_partially_written_keepalive_is_finished_before_application_bytes() {
    let timer = MockTimer::new();
    let mut pipe = ChunkyPipe::new(5, 4);
    pipe.pending_one_in = 2; // and often not ready at all
    let mut writer =
        KeepaliveWriter::new(pipe.clone(), timer.clone(), config()).with_peer_support(true);
    timer.advance(INTERVAL);
    // Start the keepalive, let the transport take a few bytes, then give up.
    for _ in 0..3 {
        let _ = poll_once(&mut writer_keepalive(&mut writer));
    }
    assert!(!writer.is_at_boundary() || writer.stats().keepalives_sent == 1);
    let app = frame(&[7; 30]);
    write_all(&mut writer, &app);
    block_on(writer.flush()).unwrap();
    assert_eq!(
        frames_of(&pipe.take_all()),
        vec![KEEPALIVE_FRAME.to_vec(), app]
    );
}

#[test]
fn non_grpc_bytes_are_refused_after_they_were_written() {
    let timer = MockTimer::new();
    let pipe = ChunkyPipe::new(6, 100);
    let mut writer =
        KeepaliveWriter::new(pipe.clone(), timer.clone(), config()).with_peer_support(true);
    write_all(&mut writer, &[3, 0, 0, 0, 0]);
    let err = block_on(writer.write_all(&frame(&[1]))).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<FrameError>());
    assert_eq!(inner, Some(&FrameError::BadFlag(3)));
    timer.advance(INTERVAL * 5);
    assert!(matches!(
        poll_once(&mut writer_keepalive(&mut writer)),
        Poll::Ready(Err(e)) if e.kind() == ErrorKind::InvalidInput
    ));
    assert_eq!(
        pipe.take_all(),
        [3, 0, 0, 0, 0],
        "no keepalive into a stream it cannot follow"
    );
    // Flushing and closing still reach the transport.
    block_on(writer.flush()).unwrap();
    block_on(writer.close()).unwrap();
}

// ----- Waypoint's compatibility matrix, at the byte level -----

/// Sends two messages with an idle gap of 5 intervals between them; returns
/// the raw bytes on the wire and the writer's keepalive count.
fn send_with_gap(peer_support: Option<bool>) -> (Vec<u8>, u64, Vec<u8>) {
    let timer = MockTimer::new();
    let pipe = ChunkyPipe::new(8, 1000);
    let mut writer = KeepaliveWriter::new(pipe.clone(), timer.clone(), config());
    if let Some(supported) = peer_support {
        writer.set_peer_support(supported);
    }
    let (m1, m2) = (frame(b"first"), frame(b"second"));
    write_all(&mut writer, &m1);
    for _ in 0..5 {
        timer.advance(INTERVAL);
        let _ = poll_once(&mut writer_keepalive(&mut writer));
    }
    write_all(&mut writer, &m2);
    block_on(writer.close()).unwrap();
    let app = [m1, m2].concat();
    (pipe.take_all(), writer.stats().keepalives_sent, app)
}

fn receive(raw: &[u8]) -> (Vec<u8>, u64) {
    let mut reader = KeepaliveReader::new(raw);
    let mut out = Vec::new();
    block_on(reader.read_to_end(&mut out)).unwrap();
    (out, reader.stats().keepalives_removed)
}

#[test]
fn compat_new_sender_new_receiver() {
    let (raw, sent, app) = send_with_gap(Some(true));
    assert!(sent >= 4, "5 idle intervals, {sent} keepalives");
    let (out, removed) = receive(&raw);
    assert_eq!(out, app);
    assert_eq!(removed, sent);
}

#[test]
fn compat_new_sender_whose_peer_did_not_announce_support_sends_nothing() {
    for support in [None, Some(false)] {
        let (raw, sent, app) = send_with_gap(support);
        assert_eq!(sent, 0);
        assert_eq!(raw, app, "the raw bytes are exactly the application's");
    }
    // "No" is final.
    let timer = MockTimer::new();
    let pipe = ChunkyPipe::new(9, 100);
    let mut writer =
        KeepaliveWriter::new(pipe.clone(), timer.clone(), config()).with_peer_support(false);
    writer.set_peer_support(true);
    timer.advance(INTERVAL * 10);
    assert!(poll_once(&mut writer_keepalive(&mut writer)).is_pending());
    assert_eq!(pipe.buffered(), 0);
}

#[test]
fn compat_old_sender_new_receiver_and_old_old() {
    let app = [frame(b"first"), frame(&[0x55; 200]), frame(b"")].concat();
    let (out, removed) = receive(&app);
    assert_eq!((out.as_slice(), removed), (app.as_slice(), 0));
    // old/old: no wrapper on either side; the bytes are the application's,
    // which is what the new sender produced without support above.
    let (raw, _, sent_app) = send_with_gap(None);
    assert_eq!(raw, sent_app);
}

// ----- cancellation: the timer goes with the writer -----

#[test]
fn dropping_a_writer_mid_frame_releases_its_timer() {
    let timer = MockTimer::new();
    let pipe = ChunkyPipe::new(10, 100);
    let mut writer = KeepaliveWriter::new(pipe, timer.clone(), config()).with_peer_support(true);
    write_all(&mut writer, &frame(&[1; 50])[..20]);
    timer.advance(INTERVAL / 2);
    write_all(&mut writer, &frame(&[1; 50])[20..]);
    assert!(poll_once(&mut writer_keepalive(&mut writer)).is_pending());
    write_all(&mut writer, &frame(&[1; 50])[..3]);
    assert_eq!(timer.live(), 1);
    drop(writer);
    assert_eq!(timer.live(), 0);
}

/// A transport that takes `take` bytes, then is never ready again.
struct Stalls {
    take: usize,
    got: Vec<u8>,
}

impl AsyncWrite for Stalls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let n = buf.len().min(self.take - self.got.len());
        if n == 0 {
            return Poll::Pending;
        }
        self.got.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }
    fn poll_flush(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[test]
fn dropping_a_writer_mid_keepalive_releases_its_timer() {
    let timer = MockTimer::new();
    let mut writer = KeepaliveWriter::new(
        Stalls {
            take: 10,
            got: Vec::new(),
        },
        timer.clone(),
        config(),
    )
    .with_peer_support(true);
    assert!(poll_once(&mut writer_keepalive(&mut writer)).is_pending());
    assert_eq!(timer.live(), 1);
    timer.advance(INTERVAL);
    assert!(poll_once(&mut writer_keepalive(&mut writer)).is_pending());
    assert_eq!(writer.get_ref().got, KEEPALIVE_FRAME[..10]);
    assert!(!writer.is_at_boundary());
    drop(writer);
    assert_eq!(timer.live(), 0);
}

#[test]
fn closing_releases_the_timer_at_once() {
    let timer = MockTimer::new();
    let mut writer = KeepaliveWriter::new(ChunkyPipe::new(11, 100), timer.clone(), config())
        .with_peer_support(true);
    assert!(poll_once(&mut writer_keepalive(&mut writer)).is_pending());
    assert!(writer.holds_timer());
    block_on(writer.close()).unwrap();
    assert!(!writer.holds_timer());
    assert_eq!(timer.live(), 0);
    let err = block_on(writer.write_all(b"x")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrokenPipe);
    // After close nothing is scheduled: `poll_keepalive` goes quiet, as the
    // sink's does, instead of failing a `select` arm that still polls it.
    timer.advance(INTERVAL * 5);
    assert!(poll_once(&mut writer_keepalive(&mut writer)).is_pending());
    assert_eq!(timer.live(), 0);
}

#[test]
fn dropping_a_driver_mid_keepalive_releases_its_timer_and_stops_the_senders() {
    let timer = MockTimer::new();
    let writer = KeepaliveWriter::new(
        Stalls {
            take: 40,
            got: Vec::new(),
        },
        timer.clone(),
        config(),
    )
    .with_peer_support(true);
    let (mut tx, mut driver) = writer.into_driver::<Vec<u8>>(4);
    block_on(tx.send(frame(&[5; 20]))).unwrap();
    assert!(poll_once(&mut driver).is_pending());
    timer.advance(INTERVAL);
    assert!(poll_once(&mut driver).is_pending()); // 25 + 15 of 27 bytes taken
    assert_eq!(driver.get_ref().unwrap().get_ref().got.len(), 40);
    assert_eq!(timer.live(), 1);
    drop(driver);
    assert_eq!(timer.live(), 0);
    assert!(tx.is_closed());
    assert!(block_on(tx.send(frame(b"late"))).is_err());
}

#[test]
fn the_driver_writes_frames_and_idle_keepalives_then_closes() {
    let timer = MockTimer::new();
    let pipe = ChunkyPipe::new(12, 7);
    let writer =
        KeepaliveWriter::new(pipe.clone(), timer.clone(), config()).with_peer_support(true);
    let (mut tx, mut driver) = writer.into_driver(2);
    let m1 = frame(b"one");
    block_on(tx.send(m1.clone())).unwrap();
    assert!(poll_once(&mut driver).is_pending());
    assert_eq!(pipe.take_all(), m1);
    for _ in 0..3 {
        timer.advance(INTERVAL);
        assert!(poll_once(&mut driver).is_pending());
    }
    assert_eq!(pipe.take_all(), KEEPALIVE_FRAME.repeat(3));
    let m2 = frame(b"two");
    block_on(tx.set_peer_support(true)).unwrap(); // harmless repeat
    block_on(tx.send(m2.clone())).unwrap();
    drop(tx);
    let writer = match poll_once(&mut driver) {
        Poll::Ready(result) => result.unwrap(),
        Poll::Pending => panic!("the driver should finish when the senders are gone"),
    };
    assert!(driver.get_ref().is_none(), "the writer was handed back");
    let stats = writer.stats();
    assert_eq!((stats.keepalives_sent, stats.messages_sent), (3, 2));
    assert_eq!(pipe.take_all(), m2);
    assert_eq!(
        timer.live(),
        0,
        "closed: the returned writer holds no timer"
    );
    assert!(!writer.holds_timer());
    drop(writer);
    assert_eq!(timer.live(), 0);
}

#[test]
fn a_driver_learns_peer_support_late() {
    let timer = MockTimer::new();
    let pipe = ChunkyPipe::new(13, 100);
    let (mut tx, mut driver) =
        KeepaliveWriter::new(pipe.clone(), timer.clone(), config()).into_driver::<Vec<u8>>(2);
    timer.advance(INTERVAL * 3);
    assert!(poll_once(&mut driver).is_pending());
    assert_eq!(pipe.buffered(), 0, "support unknown: nothing sent");
    block_on(tx.set_peer_support(true)).unwrap();
    assert!(poll_once(&mut driver).is_pending());
    assert_eq!(
        pipe.take_all(),
        KEEPALIVE_FRAME,
        "idle for longer than the interval"
    );
}
