//! The cost of one keepalive of an idle `KeepaliveSink`, without a runtime:
//! the sink's own bookkeeping, next to the two things the scale bench's
//! designs trade against it, in one run:
//!
//! - `sink keepalive, fake timer`: the two polls an idle stream makes per
//!   keepalive (the wake-up, which sends, then the next `poll_keepalive`,
//!   which registers again), with a timer whose clock is a plain variable and
//!   whose sleep is a comparison, so only our code is measured;
//! - `Instant::now`: one clock read (each design makes two per keepalive
//!   under async-io);
//! - `waker clone + drop`: what the naive ticker pays per tick and the sink
//!   does not (async-io's interval timer re-registers with a clone of the
//!   waker; the sink re-arms its registered timer in place).
//!
//! `cargo bench -p inlinekeepalive --bench wake`

use std::cell::Cell;
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use futures::Sink;
use inlinekeepalive::timer::Timer;
use inlinekeepalive::{Config, KeepaliveSink};

thread_local! {
    /// The fake timer's clock.
    static NOW: Cell<Option<Instant>> = const { Cell::new(None) };
}

fn fake_now() -> Instant {
    NOW.with(|now| now.get()).expect("clock set")
}

/// A timer whose clock is `NOW` and whose sleep completes once `NOW` has
/// reached its deadline (it never wakes anyone: the bench polls by hand).
/// Not the tests' `MockTimer`: that one takes a mutex on every clock read
/// and records wakers, which would cost as much as the code measured here.
#[derive(Clone, Copy)]
struct FakeTimer;

struct FakeSleep(Instant);

impl Future for FakeSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if fake_now() >= self.0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Timer for FakeTimer {
    type Sleep = FakeSleep;

    fn sleep_until(&self, deadline: Instant) -> FakeSleep {
        FakeSleep(deadline)
    }

    fn reset(&self, sleep: Pin<&mut FakeSleep>, deadline: Instant) {
        sleep.get_mut().0 = deadline;
    }

    fn now(&self) -> Instant {
        fake_now()
    }
}

/// A sink that takes every item at once.
struct Null(usize);

impl Sink<&'static [u8]> for Null {
    type Error = ();

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(mut self: Pin<&mut Self>, item: &'static [u8]) -> Result<(), ()> {
        self.0 += item.len();
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
        Poll::Ready(Ok(()))
    }
}

/// A task waker with a reference count, as an executor's is.
struct TaskWaker;

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {}
}

fn wake(c: &mut Criterion) {
    let interval = Duration::from_secs(1);
    let mut t = Instant::now();
    NOW.with(|now| now.set(Some(t)));
    let mut sink = KeepaliveSink::new(Null(0), FakeTimer, Config::new(interval).unwrap())
        .with_peer_support(true);
    let waker = Waker::from(Arc::new(TaskWaker));
    let mut cx = Context::from_waker(&waker);

    let mut g = c.benchmark_group("per keepalive of an idle sink");
    g.bench_function("sink keepalive, fake timer", |b| {
        b.iter(|| {
            // The application's next `poll_keepalive`: registers, nothing due.
            let registered = Pin::new(&mut sink).poll_keepalive(&mut cx);
            assert!(registered.is_pending());
            t += interval;
            NOW.with(|now| now.set(Some(t)));
            // The wake-up one interval later: sends the keepalive.
            let sent = Pin::new(&mut sink).poll_keepalive(&mut cx);
            assert!(matches!(sent, Poll::Ready(Ok(()))));
        })
    });
    g.bench_function("baseline: Instant::now", |b| {
        b.iter(|| black_box(Instant::now()))
    });
    g.bench_function("baseline: waker clone + drop", |b| {
        b.iter(|| drop(black_box(waker.clone())))
    });
    g.finish();
    assert!(sink.stats().keepalives_sent > 0);
}

criterion_group!(benches, wake);
criterion_main!(benches);
