//! `KeepaliveSink`: keepalives only when idle, only once the peer supports
//! them, only when the inner sink is ready and not reserved by the
//! application; and the driver.

mod support;

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{executor::block_on, future, Sink, SinkExt, StreamExt};
use inlinekeepalive::{wire, Config, KeepaliveSink, Policy};
use support::{counting_waker, poll_once, sink_keepalive, MockTimer, TestSink};

const KA: &[u8] = &wire::KEEPALIVE_MESSAGE;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn sink(
    interval_ms: u64,
    policy: Policy,
    ready: bool,
) -> (
    KeepaliveSink<TestSink, Vec<u8>, MockTimer>,
    TestSink,
    MockTimer,
) {
    let timer = MockTimer::new();
    let inner = TestSink::new(ready);
    let config = Config::new(ms(interval_ms)).unwrap().with_policy(policy);
    (
        KeepaliveSink::new(inner.clone(), timer.clone(), config),
        inner,
        timer,
    )
}

fn poll_ka(s: &mut KeepaliveSink<TestSink, Vec<u8>, MockTimer>) -> Poll<Result<(), &'static str>> {
    let (waker, _) = counting_waker();
    Pin::new(s).poll_keepalive(&mut Context::from_waker(&waker))
}

fn send(s: &mut KeepaliveSink<TestSink, Vec<u8>, MockTimer>, msg: &[u8]) {
    let (waker, _) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(Pin::new(&mut *s).poll_ready(&mut cx).is_ready());
    Pin::new(&mut *s).start_send(msg.to_vec()).unwrap();
    assert!(Pin::new(&mut *s).poll_flush(&mut cx).is_ready());
}

#[test]
fn nothing_is_sent_before_peer_support_is_known() {
    let (mut s, inner, timer) = sink(10, Policy::Idle, true);
    for _ in 0..10 {
        timer.advance(ms(100));
        assert!(poll_ka(&mut s).is_pending());
    }
    assert!(inner.items().is_empty());
    assert_eq!(timer.created(), 0, "no timer while nothing is scheduled");
    s.set_peer_support(true);
    // Idle for a second already: the first keepalive is due at once.
    assert_eq!(poll_ka(&mut s), Poll::Ready(Ok(())));
    assert_eq!(inner.items(), vec![KA.to_vec()]);
    assert_eq!(inner.log().unflushed, 0, "the keepalive was flushed");
}

#[test]
fn a_peer_without_support_never_gets_a_keepalive() {
    let (s, inner, timer) = sink(10, Policy::Fixed, true);
    let mut s = s.with_peer_support(false);
    s.set_peer_support(true); // "no" is final
    for _ in 0..10 {
        timer.advance(ms(100));
        assert!(poll_ka(&mut s).is_pending());
        send(&mut s, b"app");
    }
    assert!(inner.items().iter().all(|m| m != KA));
    assert_eq!(s.stats().keepalives_sent, 0);
    assert_eq!(s.stats().messages_sent, 10);
}

#[test]
fn keepalives_go_out_only_when_idle() {
    let (s, inner, timer) = sink(100, Policy::Idle, true);
    let mut s = s.with_peer_support(true);
    assert!(poll_ka(&mut s).is_pending());
    // Busy: a message every 60 ms for a while. No keepalive at all.
    for _ in 0..20 {
        timer.advance(ms(60));
        assert!(poll_ka(&mut s).is_pending());
        send(&mut s, b"busy");
    }
    assert_eq!(inner.items().len(), 20);
    assert!(inner.items().iter().all(|m| m == b"busy"));
    // Idle: one keepalive per 100 ms.
    timer.advance(ms(99));
    assert!(poll_ka(&mut s).is_pending());
    timer.advance(ms(1));
    assert_eq!(poll_ka(&mut s), Poll::Ready(Ok(())));
    assert!(poll_ka(&mut s).is_pending());
    timer.advance(ms(100));
    assert_eq!(poll_ka(&mut s), Poll::Ready(Ok(())));
    assert_eq!(inner.items()[20..], [KA.to_vec(), KA.to_vec()]);
    assert_eq!(s.stats().keepalives_sent, 2);
    assert!(timer.created() <= 1, "one timer, reset, never recreated");
}

#[test]
fn a_busy_inner_sink_delays_the_keepalive_without_doubling_it() {
    let (s, inner, timer) = sink(100, Policy::Idle, false);
    let mut s = s.with_peer_support(true);
    assert!(poll_ka(&mut s).is_pending());
    // Due at 100 ms, but the inner sink stays busy for several intervals.
    for _ in 0..5 {
        timer.advance(ms(100));
        assert!(poll_ka(&mut s).is_pending());
    }
    assert!(inner.items().is_empty());
    inner.set_ready(true);
    assert_eq!(poll_ka(&mut s), Poll::Ready(Ok(())));
    assert!(poll_ka(&mut s).is_pending());
    assert_eq!(
        inner.items(),
        vec![KA.to_vec()],
        "exactly one keepalive, not five"
    );
    assert_eq!(inner.log().contract_violations, 0);
}

/// An idle sink holds one timer for its next keepalive whether or not the
/// inner sink is ready when it is polled (what `scale_drop` counts: "half of
/// them busy: timers all the same").
#[test]
fn an_idle_sink_holds_one_timer_whether_or_not_the_inner_sink_is_ready() {
    for ready in [true, false] {
        let (s, inner, timer) = sink(100, Policy::Idle, ready);
        let mut s = s.with_peer_support(true);
        assert!(poll_ka(&mut s).is_pending());
        assert_eq!(timer.live(), 1, "inner sink ready: {ready}");
        assert!(inner.items().is_empty());
    }
}

#[test]
fn under_idle_a_reserved_send_withdraws_the_due_keepalive() {
    let (s, inner, timer) = sink(100, Policy::Idle, true);
    let mut s = s.with_peer_support(true);
    timer.advance(ms(100));
    assert_eq!(poll_ka(&mut s), Poll::Ready(Ok(())));
    timer.advance(ms(100)); // the next one is due
    let (waker, _) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    // The application reserved the inner sink: poll_keepalive must neither
    // steal the reservation nor send.
    assert!(Pin::new(&mut s).poll_ready(&mut cx).is_ready());
    assert!(Pin::new(&mut s).poll_keepalive(&mut cx).is_pending());
    assert_eq!(inner.items().len(), 1);
    Pin::new(&mut s).start_send(b"app".to_vec()).unwrap();
    assert_eq!(inner.log().contract_violations, 0);
    // The application message was activity: the due keepalive is withdrawn.
    assert!(Pin::new(&mut s).poll_keepalive(&mut cx).is_pending());
    assert_eq!(inner.items(), vec![KA.to_vec(), b"app".to_vec()]);
}

#[test]
fn a_reservation_is_never_stolen_and_fixed_keepalives_follow_it() {
    let (s, inner, timer) = sink(100, Policy::Fixed, true);
    let mut s = s.with_peer_support(true);
    // Fixed: the first keepalive is due at once.
    assert_eq!(poll_ka(&mut s), Poll::Ready(Ok(())));
    let (waker, _) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    timer.advance(ms(100)); // the next one is due
    assert!(Pin::new(&mut s).poll_ready(&mut cx).is_ready());
    for _ in 0..3 {
        assert!(Pin::new(&mut s).poll_keepalive(&mut cx).is_pending());
    }
    Pin::new(&mut s).start_send(b"app".to_vec()).unwrap();
    // Under Fixed the application message does not withdraw it.
    assert!(Pin::new(&mut s).poll_keepalive(&mut cx).is_ready());
    assert_eq!(
        inner.items(),
        vec![KA.to_vec(), b"app".to_vec(), KA.to_vec()]
    );
    assert_eq!(inner.log().contract_violations, 0);
}

#[test]
fn a_keepalive_held_back_by_a_reservation_wakes_its_task_when_the_reservation_ends() {
    let (s, inner, timer) = sink(100, Policy::Fixed, true);
    let mut s = s.with_peer_support(true);
    assert_eq!(poll_ka(&mut s), Poll::Ready(Ok(())));
    timer.advance(ms(100)); // the next one is due
    let (app_waker, _) = counting_waker();
    assert!(Pin::new(&mut s)
        .poll_ready(&mut Context::from_waker(&app_waker))
        .is_ready());
    // A task that waits on poll_keepalive alone: the fired sleep no longer
    // holds its waker, so only the end of the reservation can wake it.
    let (ka_waker, wakes) = counting_waker();
    let mut ka_cx = Context::from_waker(&ka_waker);
    assert!(Pin::new(&mut s).poll_keepalive(&mut ka_cx).is_pending());
    assert_eq!(wakes.load(Ordering::SeqCst), 0, "no busy wake-up");
    Pin::new(&mut s).start_send(b"app".to_vec()).unwrap();
    assert_eq!(wakes.load(Ordering::SeqCst), 1, "woken once by start_send");
    assert!(Pin::new(&mut s).poll_keepalive(&mut ka_cx).is_ready());
    assert_eq!(
        inner.items(),
        vec![KA.to_vec(), b"app".to_vec(), KA.to_vec()]
    );
    assert_eq!(inner.log().contract_violations, 0);
}

#[test]
fn keepalives_ride_along_with_the_applications_flush() {
    let (s, inner, timer) = sink(100, Policy::Fixed, true);
    let mut s = s.with_peer_support(true);
    // Never polled for keepalives: the flush of an application message
    // carries the due one.
    send(&mut s, b"one");
    timer.advance(ms(100));
    send(&mut s, b"two");
    let items = inner.items();
    assert_eq!(items.iter().filter(|m| *m == KA).count(), 2, "{items:?}");
    assert_eq!(inner.log().contract_violations, 0);
}

#[test]
fn an_inner_error_stops_keepalives() {
    let (s, inner, timer) = sink(100, Policy::Idle, true);
    let mut s = s.with_peer_support(true);
    timer.advance(ms(100));
    inner.log().fail_next_send = true;
    assert_eq!(poll_ka(&mut s), Poll::Ready(Err("send failed")));
    timer.advance(ms(1000));
    assert!(poll_ka(&mut s).is_pending());
    assert!(inner.items().is_empty());
}

#[test]
fn close_stops_keepalives_and_releases_the_timer() {
    let (s, inner, timer) = sink(100, Policy::Idle, true);
    let mut s = s.with_peer_support(true);
    assert!(poll_ka(&mut s).is_pending());
    assert_eq!(timer.live(), 1);
    let (waker, _) = counting_waker();
    assert!(Pin::new(&mut s)
        .poll_close(&mut Context::from_waker(&waker))
        .is_ready());
    assert_eq!(timer.live(), 0);
    timer.advance(ms(1000));
    assert!(poll_ka(&mut s).is_pending());
    assert!(inner.log().closed);
    assert!(inner.items().is_empty());
}

#[test]
fn custom_message_types_use_the_keepalive_fn() {
    #[derive(Debug, PartialEq)]
    enum Frame {
        Binary(Vec<u8>),
    }
    let (tx, mut rx) = futures::channel::mpsc::unbounded::<Frame>();
    let timer = MockTimer::new();
    let config = Config::new(ms(10)).unwrap().with_policy(Policy::Fixed);
    let mut s = KeepaliveSink::with_keepalive_fn(tx, timer, config, || Frame::Binary(KA.to_vec()))
        .with_peer_support(true);
    block_on(sink_keepalive(&mut s)).unwrap();
    assert_eq!(rx.try_recv().ok(), Some(Frame::Binary(KA.to_vec())));
}

#[test]
fn the_driver_forwards_in_order_and_keeps_the_idle_sink_alive() {
    // Real timers, short interval, generous bounds.
    let (transport, peer) = futures::channel::mpsc::unbounded::<Vec<u8>>();
    let config = Config::new(ms(20)).unwrap();
    let sink = KeepaliveSink::new(transport, inlinekeepalive::timer::FuturesTimer, config);
    let (mut messages, driver) = sink.into_driver(4);
    let app = async move {
        messages.set_peer_support(true).await.unwrap();
        for i in 0..50u8 {
            messages.send(vec![i]).await.unwrap();
        }
        futures_timer::Delay::new(ms(200)).await; // idle: ~10 intervals
        messages.send(b"last".to_vec()).await.unwrap();
    };
    let ((), sink) = block_on(future::join(app, driver));
    let sink = sink.unwrap();
    let stats = sink.stats();
    let received: Vec<Vec<u8>> = block_on(peer.collect());
    let app_only: Vec<_> = received
        .iter()
        .filter(|m| m.as_slice() != KA)
        .cloned()
        .collect();
    let mut expected: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i]).collect();
    expected.push(b"last".to_vec());
    assert_eq!(app_only, expected);
    let kas = received.len() - app_only.len();
    assert_eq!(kas as u64, stats.keepalives_sent);
    assert!(
        (2..=40).contains(&kas),
        "{kas} keepalives in 200 ms idle at a 20 ms interval"
    );
    assert_eq!(stats.messages_sent, 51);
    assert!(sink.get_ref().is_closed(), "the driver closed the sink");
}

#[test]
fn a_dropped_driver_stops_its_senders() {
    let (transport, _peer) = futures::channel::mpsc::unbounded::<Vec<u8>>();
    let sink = KeepaliveSink::new(transport, MockTimer::new(), Config::default());
    let (mut messages, driver) = sink.into_driver(1);
    drop(driver);
    assert!(messages.is_closed());
    assert!(block_on(messages.send(b"x".to_vec())).is_err());
}

#[test]
fn closing_one_sender_ends_only_that_clone() {
    let (transport, peer) = futures::channel::mpsc::unbounded::<Vec<u8>>();
    let sink = KeepaliveSink::new(transport, MockTimer::new(), Config::default());
    let (mut messages, mut driver) = sink.into_driver(4);
    // One clone forwards a finite stream, which closes it at the end; another
    // is closed outright.
    let mut forwarding = messages.clone();
    let items = futures::stream::iter([Ok(b"a".to_vec()), Ok(b"b".to_vec())]);
    block_on(items.forward(&mut forwarding)).unwrap();
    let mut closed = messages.clone();
    block_on(SinkExt::close(&mut closed)).unwrap();
    assert!(closed.is_closed());
    assert!(block_on(closed.send(b"late".to_vec())).is_err());
    // The remaining sender still reaches a running driver.
    assert!(poll_once(&mut driver).is_pending());
    assert!(!messages.is_closed());
    block_on(messages.send(b"c".to_vec())).unwrap();
    assert!(poll_once(&mut driver).is_pending());
    // Dropping the last one ends the stream.
    drop((messages, forwarding, closed));
    let sink = block_on(driver).unwrap();
    assert!(sink.get_ref().is_closed(), "the driver closed the sink");
    let received: Vec<Vec<u8>> = block_on(peer.collect());
    assert_eq!(received, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
}
