//! Cancellation: opening and dropping 10,000 wrapped streams and sinks (and
//! their drivers, mid-flight) leaves no timer and no task behind.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::channel::mpsc;
use futures::executor::LocalPool;
use futures::task::LocalSpawnExt;
use futures::StreamExt;
use inlinekeepalive::{wire, Config, KeepaliveSink, KeepaliveStream, Policy};
use support::{counting_waker, CountingTimer, TestSink};

const N: usize = 10_000;

/// Long enough that nothing falls due while the test runs: it is about
/// timers existing, not firing.
const PEER_TIMEOUT: Duration = Duration::from_secs(30);

fn config() -> Config {
    Config::new(Duration::from_secs(10)).unwrap()
}

/// Decrements a shared counter when dropped: one per spawned task.
struct TaskGuard(Arc<AtomicUsize>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[test]
fn dropping_10k_streams_and_sinks_releases_every_timer() {
    let timer = CountingTimer::default();
    let (waker, _) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    let mut streams = Vec::with_capacity(N);
    let mut sinks = Vec::with_capacity(N);
    let mut senders = Vec::with_capacity(N);
    for i in 0..N {
        let (tx, rx) = mpsc::unbounded::<Result<Vec<u8>, ()>>();
        // Mid-message: a keepalive waiting, and the stream polled once.
        tx.unbounded_send(Ok(wire::KEEPALIVE_MESSAGE.to_vec()))
            .unwrap();
        let mut s = KeepaliveStream::new(rx).detect_dead_peer(timer.clone(), PEER_TIMEOUT);
        assert!(s.poll_next_unpin(&mut cx).is_pending());
        streams.push(s);
        senders.push(tx);

        let inner = TestSink::new(i % 2 == 0); // half of them busy: timers all the same
        let mut k = KeepaliveSink::new(inner, timer.clone(), config().with_policy(Policy::Idle))
            .with_peer_support(true);
        assert!(std::pin::Pin::new(&mut k)
            .poll_keepalive(&mut cx)
            .is_pending());
        sinks.push(k);
    }
    assert_eq!(
        timer.live.load(Ordering::SeqCst),
        2 * N,
        "one timer per wrapper"
    );
    drop(streams);
    drop(sinks);
    assert_eq!(timer.live.load(Ordering::SeqCst), 0);
    assert_eq!(timer.created.load(Ordering::SeqCst), 2 * N);
    drop(senders);
}

#[test]
fn dropping_10k_spawned_drivers_leaves_no_task_and_no_timer() {
    let timer = CountingTimer::default();
    let tasks = Arc::new(AtomicUsize::new(0));
    let mut pool = LocalPool::new();
    let spawner = pool.spawner();
    let mut handles = Vec::with_capacity(N);
    let mut peers = Vec::with_capacity(N);
    for i in 0..N {
        let (transport, peer) = mpsc::channel::<Vec<u8>>(1);
        let sink =
            KeepaliveSink::new(transport, timer.clone(), config()).with_peer_support(i % 3 != 0);
        let (messages, driver) = sink.into_driver(1);
        let guard = TaskGuard(tasks.clone());
        tasks.fetch_add(1, Ordering::SeqCst);
        spawner
            .spawn_local(async move {
                let _guard = guard;
                let _ = driver.await;
            })
            .unwrap();
        handles.push(messages);
        peers.push(peer);
    }
    // Some drivers send a message that the full transport cannot take:
    // they are dropped mid-send.
    for m in handles.iter_mut().step_by(7) {
        let _ = futures::executor::block_on(m.send(b"stuck".to_vec()));
    }
    pool.run_until_stalled();
    assert_eq!(tasks.load(Ordering::SeqCst), N);
    assert!(timer.live.load(Ordering::SeqCst) > 0);
    drop(pool); // the executor drops its tasks, and with them the drivers
    assert_eq!(tasks.load(Ordering::SeqCst), 0, "tasks left behind");
    assert_eq!(timer.live.load(Ordering::SeqCst), 0, "timers left behind");
    for m in &handles {
        assert!(m.is_closed());
    }
    // The peers saw only what was sent (no keepalive falls due this fast).
    for mut p in peers {
        while let Poll::Ready(Some(m)) =
            p.poll_next_unpin(&mut Context::from_waker(&counting_waker().0))
        {
            assert_eq!(m, b"stuck");
        }
    }
}

#[test]
fn finished_drivers_release_their_timers_before_being_dropped() {
    let timer = CountingTimer::default();
    let mut pool = LocalPool::new();
    let spawner = pool.spawner();
    let done = Arc::new(AtomicUsize::new(0));
    // The sinks the drivers hand back, kept alive: closed, they hold no timer.
    let finished = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    for _ in 0..1_000 {
        let (transport, _peer) = mpsc::unbounded::<Vec<u8>>();
        let sink = KeepaliveSink::new(transport, timer.clone(), config()).with_peer_support(true);
        let (messages, driver) = sink.into_driver(1);
        let done = done.clone();
        let finished = finished.clone();
        spawner
            .spawn_local(async move {
                let sink = driver.await.unwrap();
                assert_eq!(sink.stats().messages_sent, 0);
                finished.borrow_mut().push(sink);
                done.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        drop(messages); // the application is done at once
    }
    pool.run();
    assert_eq!(done.load(Ordering::SeqCst), 1_000);
    assert_eq!(finished.borrow().len(), 1_000);
    assert_eq!(timer.live.load(Ordering::SeqCst), 0);
    drop(finished);
    assert_eq!(timer.live.load(Ordering::SeqCst), 0);
}
