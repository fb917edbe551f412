//! Per-stream counters shared between a stream's bodies and the application.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::task::Waker;

use atomic_waker::AtomicWaker;

/// What the peer is known to do about keepalives in our send direction.
const SUPPORT_UNKNOWN: u8 = 0;
const SUPPORT_YES: u8 = 1;
const SUPPORT_NO: u8 = 2;

/// Live counters of one gRPC stream, shared by the layer's bodies and the
/// application.
///
/// The server layer inserts one into each request's extensions, the client
/// layer into each response's extensions, so a handler or a caller reaches
/// them through [`tonic::Request::extensions`] or
/// [`tonic::Response::extensions`]. The handle is cheap to clone (one `Arc`)
/// and every read is a relaxed atomic load: the values are current, but two
/// reads are not a consistent snapshot of each other.
///
/// ```
/// use inlinekeepalive::tonic::KeepaliveStats;
///
/// # fn handler(request: tonic::Request<()>) {
/// if let Some(stats) = request.extensions().get::<KeepaliveStats>() {
///     println!(
///         "sent {} keepalives, removed {} from the peer, peer timed out: {}",
///         stats.keepalives_sent(),
///         stats.keepalives_removed(),
///         stats.peer_timed_out(),
///     );
/// }
/// # }
/// # handler(tonic::Request::new(()));
/// ```
#[derive(Clone, Default)]
pub struct KeepaliveStats {
    inner: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    keepalives_sent: AtomicU64,
    keepalives_removed: AtomicU64,
    collisions: AtomicU64,
    messages_passed: AtomicU64,
    peer_timed_out: AtomicBool,
    peer_support: AtomicU8,
    /// The request body of a client stream waiting to learn the support
    /// from the response headers.
    support_waiter: AtomicWaker,
}

impl KeepaliveStats {
    /// Fresh counters, all zero, peer support unknown.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Keepalive frames this side inserted into its outbound body.
    #[must_use]
    pub fn keepalives_sent(&self) -> u64 {
        self.inner.keepalives_sent.load(Relaxed)
    }

    /// Keepalive frames removed from the inbound body before the application
    /// could see them.
    #[must_use]
    pub fn keepalives_removed(&self) -> u64 {
        self.inner.keepalives_removed.load(Relaxed)
    }

    /// Inbound messages that use field number 100000000 without being a
    /// keepalive. They are delivered to the application (and logged with
    /// `tracing` at `WARN`): a schema is using the reserved number. Only
    /// messages short enough to be keepalives (at most
    /// [`MAX_KEEPALIVE_LEN`](crate::wire::MAX_KEEPALIVE_LEN) bytes) are
    /// examined; longer ones are passed on unread.
    #[must_use]
    pub fn collisions(&self) -> u64 {
        self.inner.collisions.load(Relaxed)
    }

    /// Inbound messages passed on to the application (collisions included,
    /// keepalives not): [`ReceiveStats::messages_passed`](crate::ReceiveStats::messages_passed)
    /// of the byte and message wrappers.
    #[must_use]
    pub fn messages_passed(&self) -> u64 {
        self.inner.messages_passed.load(Relaxed)
    }

    /// Whether the peer went silent for longer than the configured
    /// [peer timeout](crate::Config::with_peer_timeout) although it was
    /// known to send keepalives. The inbound body then ends with
    /// `Status::unavailable`, so the application sees it too.
    #[must_use]
    pub fn peer_timed_out(&self) -> bool {
        self.inner.peer_timed_out.load(Relaxed)
    }

    /// Whether the peer removes keepalives from what we send, so this side
    /// may send them: `None` while unknown (a client waiting for the
    /// server's response headers).
    #[must_use]
    pub fn peer_supports_keepalives(&self) -> Option<bool> {
        match self.inner.peer_support.load(Relaxed) {
            SUPPORT_YES => Some(true),
            SUPPORT_NO => Some(false),
            _ => None,
        }
    }

    pub(crate) fn add_sent(&self) {
        self.inner.keepalives_sent.fetch_add(1, Relaxed);
    }

    /// Stores the inbound body's counters (it is their only writer).
    pub(crate) fn store_received(&self, stats: crate::ReceiveStats) {
        let c = &self.inner;
        c.keepalives_removed
            .store(stats.keepalives_removed, Relaxed);
        c.collisions.store(stats.collisions, Relaxed);
        c.messages_passed.store(stats.messages_passed, Relaxed);
    }

    pub(crate) fn record_peer_timeout(&self) {
        self.inner.peer_timed_out.store(true, Relaxed);
    }

    /// Records whether the peer supports keepalives, and wakes a body
    /// waiting for it. A known answer is final: only the first call that
    /// finds it unknown changes it.
    pub(crate) fn set_peer_support(&self, supported: bool) {
        let value = if supported { SUPPORT_YES } else { SUPPORT_NO };
        let _ = self
            .inner
            .peer_support
            .compare_exchange(SUPPORT_UNKNOWN, value, Relaxed, Relaxed);
        self.inner.support_waiter.wake();
    }

    /// The peer's support, registering `waker` to be woken when it becomes
    /// known.
    pub(crate) fn poll_peer_support(&self, waker: &Waker) -> Option<bool> {
        if let Some(known) = self.peer_supports_keepalives() {
            return Some(known);
        }
        self.inner.support_waiter.register(waker);
        // Learned between the first look and the registration.
        self.peer_supports_keepalives()
    }
}

impl fmt::Debug for KeepaliveStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeepaliveStats")
            .field("keepalives_sent", &self.keepalives_sent())
            .field("keepalives_removed", &self.keepalives_removed())
            .field("collisions", &self.collisions())
            .field("messages_passed", &self.messages_passed())
            .field("peer_timed_out", &self.peer_timed_out())
            .field("peer_supports_keepalives", &self.peer_supports_keepalives())
            .finish()
    }
}
