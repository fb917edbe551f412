//! Test support for the message-level wrappers: a timer with a hand-moved
//! clock, a counting timer, and a sink whose readiness the test controls.
#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_sink::Sink;
use inlinekeepalive::timer::Timer;

/// A timer whose clock moves only when the test calls [`MockTimer::advance`].
#[derive(Clone, Debug)]
pub struct MockTimer {
    state: Arc<Mutex<MockState>>,
}

#[derive(Debug)]
struct MockState {
    now: Instant,
    wakers: Vec<Waker>,
    live: usize,
    created: usize,
}

impl MockTimer {
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(MockState {
                now: Instant::now(),
                wakers: Vec::new(),
                live: 0,
                created: 0,
            })),
        }
    }

    /// Moves the clock and wakes every sleep (they re-check their deadline).
    pub fn advance(&self, by: Duration) {
        let wakers = {
            let mut s = self.state.lock().unwrap();
            s.now += by;
            std::mem::take(&mut s.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Sleeps alive now.
    pub fn live(&self) -> usize {
        self.state.lock().unwrap().live
    }

    /// Sleeps ever created.
    pub fn created(&self) -> usize {
        self.state.lock().unwrap().created
    }
}

impl Timer for MockTimer {
    type Sleep = MockSleep;

    fn sleep_until(&self, deadline: Instant) -> MockSleep {
        let mut s = self.state.lock().unwrap();
        s.live += 1;
        s.created += 1;
        MockSleep {
            state: self.state.clone(),
            deadline,
        }
    }

    fn reset(&self, sleep: Pin<&mut MockSleep>, deadline: Instant) {
        sleep.get_mut().deadline = deadline;
    }

    fn now(&self) -> Instant {
        self.state.lock().unwrap().now
    }
}

#[derive(Debug)]
pub struct MockSleep {
    state: Arc<Mutex<MockState>>,
    deadline: Instant,
}

impl Future for MockSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.state.lock().unwrap();
        if s.now >= self.deadline {
            Poll::Ready(())
        } else {
            s.wakers.push(cx.waker().clone());
            Poll::Pending
        }
    }
}

impl Drop for MockSleep {
    fn drop(&mut self) {
        self.state.lock().unwrap().live -= 1;
    }
}

/// A timer whose sleeps never fire and count themselves: `live` is the
/// number of sleeps alive.
#[derive(Clone, Debug, Default)]
pub struct CountingTimer {
    pub live: Arc<AtomicUsize>,
    pub created: Arc<AtomicUsize>,
}

impl Timer for CountingTimer {
    type Sleep = CountingSleep;

    fn sleep_until(&self, _deadline: Instant) -> CountingSleep {
        self.live.fetch_add(1, Ordering::SeqCst);
        self.created.fetch_add(1, Ordering::SeqCst);
        CountingSleep {
            live: self.live.clone(),
        }
    }

    fn reset(&self, _sleep: Pin<&mut CountingSleep>, _deadline: Instant) {}
}

#[derive(Debug)]
pub struct CountingSleep {
    live: Arc<AtomicUsize>,
}

impl Future for CountingSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}

impl Drop for CountingSleep {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a [`TestSink`] saw, shared with the test.
#[derive(Debug, Default)]
pub struct SinkLog {
    pub items: Vec<Vec<u8>>,
    /// Items accepted but not flushed yet.
    pub unflushed: usize,
    pub ready: bool,
    /// `poll_ready` calls that returned `Ready`, not yet used by `start_send`.
    pub reserved: bool,
    pub fail_next_send: bool,
    pub closed: bool,
    pub waker: Option<Waker>,
    /// `start_send` without a preceding `Ready` from `poll_ready`.
    pub contract_violations: usize,
}

/// A sink of `Vec<u8>` whose readiness the test switches.
#[derive(Clone, Debug)]
pub struct TestSink(pub Arc<Mutex<SinkLog>>);

impl TestSink {
    pub fn new(ready: bool) -> Self {
        Self(Arc::new(Mutex::new(SinkLog {
            ready,
            ..SinkLog::default()
        })))
    }

    pub fn set_ready(&self, ready: bool) {
        let waker = {
            let mut log = self.0.lock().unwrap();
            log.ready = ready;
            log.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    pub fn items(&self) -> Vec<Vec<u8>> {
        self.0.lock().unwrap().items.clone()
    }

    pub fn log(&self) -> std::sync::MutexGuard<'_, SinkLog> {
        self.0.lock().unwrap()
    }
}

impl Sink<Vec<u8>> for TestSink {
    type Error = &'static str;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let mut log = self.0.lock().unwrap();
        if log.ready {
            log.reserved = true;
            Poll::Ready(Ok(()))
        } else {
            log.waker = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    fn start_send(self: Pin<&mut Self>, item: Vec<u8>) -> Result<(), Self::Error> {
        let mut log = self.0.lock().unwrap();
        if !log.reserved {
            log.contract_violations += 1;
        }
        log.reserved = false;
        if log.fail_next_send {
            log.fail_next_send = false;
            return Err("send failed");
        }
        log.items.push(item);
        log.unflushed += 1;
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let mut log = self.0.lock().unwrap();
        if log.ready {
            log.unflushed = 0;
            Poll::Ready(Ok(()))
        } else {
            log.waker = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let mut log = self.0.lock().unwrap();
        if log.ready {
            log.unflushed = 0;
            log.closed = true;
            Poll::Ready(Ok(()))
        } else {
            log.waker = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}

/// A queue-backed stream the test pushes into.
pub type Queue = VecDeque<Vec<u8>>;

/// A waker that counts its wake-ups.
pub fn counting_waker() -> (Waker, Arc<AtomicUsize>) {
    struct W(Arc<AtomicUsize>);
    impl std::task::Wake for W {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let count = Arc::new(AtomicUsize::new(0));
    (Waker::from(Arc::new(W(count.clone()))), count)
}
