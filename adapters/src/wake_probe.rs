//! [`WakeProbe`]: tells whether a wrapped stream woke its task, for a
//! wrapper that sees only whole messages but must count every chunk of a
//! message still arriving as a sign of life.
//!
//! A stream of messages decoded from bytes (`FramedRead` over a socket)
//! stays `Pending` while a large message trickles in, but it wakes its task
//! each time bytes arrive. Other wake-ups of the same task (a `select!`
//! sibling, a timer) must not count, so the inner stream is polled with a
//! waker of its own that records its wake-ups and passes them on.
//!
//! A stream that wakes itself without input (tokio's cooperative budget,
//! spent by a busy task) counts too. That only delays the verdict on a dead
//! peer while its task keeps busy: once the task idles, the silence is
//! measured again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Wake, Waker};

use atomic_waker::AtomicWaker;

/// Polls an inner future or stream with a waker that records its wake-ups.
pub(crate) struct WakeProbe {
    shared: Arc<Shared>,
    /// The recording waker, made once: polling with it clones nothing.
    waker: Waker,
}

struct Shared {
    woken: AtomicBool,
    /// The task to wake on the inner's behalf: the waker of the last poll.
    task: AtomicWaker,
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl WakeProbe {
    pub(crate) fn new() -> Self {
        let shared = Arc::new(Shared {
            woken: AtomicBool::new(false),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(Arc::clone(&shared));
        Self { shared, waker }
    }

    /// Runs `poll` (a poll of the inner stream) with the recording waker,
    /// which wakes `cx`'s task in turn.
    pub(crate) fn poll<R>(&self, cx: &Context<'_>, poll: impl FnOnce(&mut Context<'_>) -> R) -> R {
        // Registered on every poll: `wake` takes the waker out, and the
        // registration clones only when the task's waker changed.
        self.shared.task.register(cx.waker());
        poll(&mut Context::from_waker(&self.waker))
    }

    /// Whether the inner stream woke the task since the last call.
    pub(crate) fn take_woken(&self) -> bool {
        self.shared.woken.swap(false, Ordering::Acquire)
    }
}

impl std::fmt::Debug for WakeProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WakeProbe")
            .field("woken", &self.shared.woken.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct CountWakes(AtomicUsize);

    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn records_only_the_inner_wake_ups_and_passes_them_on() {
        let task = Arc::new(CountWakes(AtomicUsize::new(0)));
        let task_waker = Waker::from(Arc::clone(&task));
        let cx = Context::from_waker(&task_waker);
        let probe = WakeProbe::new();
        let inner_waker = probe.poll(&cx, |inner_cx| inner_cx.waker().clone());
        assert!(!probe.take_woken());

        // The task woken by someone else: not recorded.
        task_waker.wake_by_ref();
        assert!(!probe.take_woken());
        assert_eq!(task.0.load(Ordering::SeqCst), 1);

        // The inner stream wakes: recorded once, and the task is woken.
        inner_waker.wake_by_ref();
        assert_eq!(task.0.load(Ordering::SeqCst), 2);
        assert!(probe.take_woken());
        assert!(!probe.take_woken());
    }
}
