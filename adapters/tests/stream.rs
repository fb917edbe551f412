//! `KeepaliveStream`: keepalives dropped, everything else delivered in order,
//! collisions counted, and a silent peer reported once, which ends the
//! stream.

mod support;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use futures::{executor::block_on, stream, Stream, StreamExt};
use inlinekeepalive::{wire, KeepaliveError, KeepaliveStream, PeerTimedOut};
use support::{counting_waker, MockTimer};

type Item = Result<Vec<u8>, io::Error>;

/// Field 100000000 as a varint: well-formed, not a keepalive.
const COLLISION: [u8; 6] = [0x80, 0x90, 0xbc, 0xfd, 0x02, 0x01];

fn ka() -> Item {
    Ok(wire::KEEPALIVE_MESSAGE.to_vec())
}

fn app(bytes: &[u8]) -> Item {
    Ok(bytes.to_vec())
}

fn poll<S: Stream + Unpin>(s: &mut S) -> Poll<Option<S::Item>> {
    let (waker, _) = counting_waker();
    Pin::new(s).poll_next(&mut Context::from_waker(&waker))
}

#[test]
fn keepalives_are_dropped_and_order_is_kept() {
    let input = vec![
        app(b"one"),
        ka(),
        Ok(COLLISION.to_vec()),
        ka(),
        ka(),
        app(b""),
        Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset")),
        app(b"three"),
        ka(),
    ];
    let mut s = KeepaliveStream::new(stream::iter(input));
    let got: Vec<_> = block_on((&mut s).collect());
    assert_eq!(got.len(), 5);
    assert_eq!(got[0].as_ref().unwrap(), b"one");
    assert_eq!(got[1].as_ref().unwrap(), &COLLISION);
    assert_eq!(got[2].as_ref().unwrap(), b"");
    match &got[3] {
        Err(KeepaliveError::Transport(e)) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
        other => panic!("expected the transport error, got {other:?}"),
    }
    assert_eq!(got[4].as_ref().unwrap(), b"three");
    let stats = s.stats();
    assert_eq!(stats.keepalives_removed, 4);
    assert_eq!(stats.collisions, 1);
    assert_eq!(stats.messages_passed, 4);
    assert!(!stats.peer_timed_out);
    assert!(futures::stream::FusedStream::is_terminated(&s));
    assert!(poll(&mut s).is_ready(), "a finished stream stays finished");
}

#[test]
fn a_keepalive_flood_yields_to_the_executor_but_loses_nothing() {
    let mut input: Vec<Item> = (0..1000).map(|_| ka()).collect();
    input.push(app(b"after the flood"));
    let mut s = KeepaliveStream::new(stream::iter(input));
    let (waker, wakes) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    let mut pendings = 0;
    let item = loop {
        match Pin::new(&mut s).poll_next(&mut cx) {
            Poll::Ready(item) => break item,
            Poll::Pending => pendings += 1,
        }
    };
    assert_eq!(item.unwrap().unwrap(), b"after the flood");
    assert!(pendings > 0, "the stream never yielded");
    assert_eq!(
        wakes.load(std::sync::atomic::Ordering::SeqCst),
        pendings,
        "every yield woke the task"
    );
    assert_eq!(s.stats().keepalives_removed, 1000);
}

#[test]
fn bytes_like_items_work() {
    let input = stream::iter([Ok::<_, ()>(&wire::KEEPALIVE_MESSAGE[..]), Ok(&b"x"[..])]);
    let got: Vec<_> = block_on(KeepaliveStream::new(input).collect());
    assert_eq!(got, vec![Ok(&b"x"[..])]);
}

fn watched(
    timeout_ms: u64,
) -> (
    KeepaliveStream<mpsc::UnboundedReceiver<Item>, MockTimer>,
    mpsc::UnboundedSender<Item>,
    MockTimer,
) {
    let timer = MockTimer::new();
    let (tx, rx) = mpsc::unbounded();
    let s =
        KeepaliveStream::new(rx).detect_dead_peer(timer.clone(), Duration::from_millis(timeout_ms));
    (s, tx, timer)
}

fn expect_timeout(p: Poll<Option<Result<Vec<u8>, KeepaliveError<io::Error>>>>) -> Duration {
    match p {
        Poll::Ready(Some(Err(KeepaliveError::PeerTimedOut(PeerTimedOut {
            silent_for, ..
        })))) => silent_for,
        other => panic!("expected a peer timeout, got {other:?}"),
    }
}

/// A keepalive before the deadline is a sign of life and pushes the
/// deadline back (re-arming the same timer); a silence is reported once, as
/// an error, and then the stream ends: `None` for ever, whatever arrives or
/// however long it lasts.
#[test]
fn a_silent_peer_is_reported_once_and_ends_the_stream() {
    let (mut s, tx, timer) = watched(100);
    assert!(poll(&mut s).is_pending());
    assert_eq!(timer.live(), 1, "one timer, armed for the deadline");
    timer.advance(Duration::from_millis(50));
    // A keepalive at 50 ms (not delivered): the deadline moves to 150 ms.
    tx.unbounded_send(ka()).unwrap();
    assert!(poll(&mut s).is_pending());
    timer.advance(Duration::from_millis(99));
    assert!(
        poll(&mut s).is_pending(),
        "149 ms: 99 ms after the keepalive"
    );
    timer.advance(Duration::from_millis(2));
    assert!(expect_timeout(poll(&mut s)) >= Duration::from_millis(100));
    assert_eq!(timer.live(), 0, "the timer is released with the stream");
    // The stream has ended: however long the silence lasts, and even if the
    // peer speaks again.
    for _ in 0..5 {
        timer.advance(Duration::from_secs(1));
        assert!(matches!(poll(&mut s), Poll::Ready(None)));
    }
    tx.unbounded_send(ka()).unwrap();
    tx.unbounded_send(app(b"too late")).unwrap();
    assert!(matches!(poll(&mut s), Poll::Ready(None)));
    timer.advance(Duration::from_secs(1));
    assert!(matches!(poll(&mut s), Poll::Ready(None)));
    assert!(futures::stream::FusedStream::is_terminated(&s));
    assert!(s.stats().peer_timed_out);
    assert_eq!(s.stats().keepalives_removed, 1);
    assert_eq!(s.stats().messages_passed, 0);
    assert_eq!(timer.created(), 1, "the timer was reset, never recreated");
    assert_eq!(timer.live(), 0);
}

#[test]
fn every_message_is_a_sign_of_life() {
    let (mut s, tx, timer) = watched(100);
    assert!(poll(&mut s).is_pending());
    for _ in 0..10 {
        timer.advance(Duration::from_millis(60));
        tx.unbounded_send(app(b"tick")).unwrap();
        assert_eq!(
            poll(&mut s).map(|i| i.map(Result::unwrap)),
            Poll::Ready(Some(b"tick".to_vec()))
        );
        tx.unbounded_send(Ok(COLLISION.to_vec())).unwrap();
        assert!(matches!(poll(&mut s), Poll::Ready(Some(Ok(_)))));
        assert!(poll(&mut s).is_pending());
    }
    assert!(!s.stats().peer_timed_out);
    assert_eq!(s.stats().collisions, 10);
}

#[test]
fn a_waiting_message_wins_over_an_expired_deadline() {
    let (mut s, tx, timer) = watched(100);
    assert!(poll(&mut s).is_pending());
    // The message arrived in time, but the application polls late.
    tx.unbounded_send(app(b"late poll")).unwrap();
    timer.advance(Duration::from_millis(500));
    assert!(matches!(poll(&mut s), Poll::Ready(Some(Ok(_)))));
    assert!(
        poll(&mut s).is_pending(),
        "the message was a sign of life at 500 ms"
    );
}

#[test]
fn errors_are_not_signs_of_life_and_the_end_of_the_stream_releases_the_timer() {
    let (mut s, tx, timer) = watched(100);
    assert!(poll(&mut s).is_pending());
    timer.advance(Duration::from_millis(60));
    tx.unbounded_send(Err(io::Error::other("glitch"))).unwrap();
    assert!(matches!(
        poll(&mut s),
        Poll::Ready(Some(Err(KeepaliveError::Transport(_))))
    ));
    timer.advance(Duration::from_millis(41));
    expect_timeout(poll(&mut s));
    assert_eq!(
        timer.live(),
        0,
        "the timeout ended the stream and its timer"
    );
    drop(tx);
    assert!(matches!(poll(&mut s), Poll::Ready(None)));
    assert!(s.stats().peer_timed_out);

    // The peer's end of stream, before any silence: the timer goes too.
    let (mut s, tx, timer) = watched(100);
    assert!(poll(&mut s).is_pending());
    assert_eq!(timer.live(), 1);
    timer.advance(Duration::from_millis(60));
    drop(tx);
    assert!(matches!(poll(&mut s), Poll::Ready(None)));
    assert_eq!(timer.live(), 0, "end of stream drops the timer");
    timer.advance(Duration::from_secs(1));
    assert!(matches!(poll(&mut s), Poll::Ready(None)));
    assert!(!s.stats().peer_timed_out, "an ended stream is never silent");
}

#[test]
fn with_a_real_timer_a_stream_fed_keepalives_never_times_out() {
    // Short real intervals with generous bounds: keepalives every 5 ms
    // against a 200 ms peer timeout, then silence.
    let timeout = Duration::from_millis(200);
    let (tx, rx) = mpsc::unbounded::<Item>();
    let feeder = std::thread::spawn(move || {
        for _ in 0..40 {
            tx.unbounded_send(ka()).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        tx // keep the stream open, silent
    });
    let mut s =
        KeepaliveStream::new(rx).detect_dead_peer(inlinekeepalive::timer::FuturesTimer, timeout);
    let start = Instant::now();
    let first = block_on(s.next());
    let elapsed = start.elapsed();
    let tx = feeder.join().unwrap();
    match first {
        Some(Err(KeepaliveError::PeerTimedOut(e))) => {
            assert!(e.silent_for >= Duration::from_millis(200))
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(
        elapsed >= Duration::from_millis(200),
        "reported after {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(10));
    assert_eq!(s.stats().keepalives_removed, 40);
    assert!(
        block_on(s.next()).is_none(),
        "a silent peer ends the stream"
    );
    assert!(s.stats().peer_timed_out);
    drop(tx);
}
