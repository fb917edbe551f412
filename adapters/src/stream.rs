//! [`KeepaliveStream`]: removes keepalives from a stream of whole messages.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::{FusedStream, Stream};
use inlinekeepalive_core::{classify, Classification, Config, Event, Keepalive};
use pin_project_lite::pin_project;

use crate::error::KeepaliveError;
use crate::sleep_slot::SleepSlot;
use crate::timer::{NoTimer, Timer};
use crate::PeerTimedOut;

/// How many keepalives in a row [`KeepaliveStream`] drops before it yields to
/// the executor (it wakes itself at once), so a peer that floods keepalives
/// cannot starve the other tasks of the thread.
const DROP_BUDGET: u32 = 64;

pin_project! {
    /// Removes inline keepalives from a stream of whole gRPC messages, and
    /// optionally reports a silent peer.
    ///
    /// Wraps any `Stream<Item = Result<B, E>>` whose items are message
    /// payloads (`B: AsRef<[u8]>`, *without* the 5-byte gRPC prefix), such as
    /// the messages of a WebSocket or of a QUIC stream that does its own
    /// framing. Each `Ok` item is [classified](crate::classify):
    ///
    /// - a keepalive is dropped and counted;
    /// - a [collision](Classification::Collision), an application message
    ///   that uses the reserved field number, is delivered unchanged and
    ///   counted;
    /// - everything else is delivered unchanged, in order.
    ///
    /// Transport errors are passed through as [`KeepaliveError::Transport`].
    /// See [`stats`](Self::stats) for the counters.
    ///
    /// ```
    /// use futures::{stream, StreamExt};
    /// use inlinekeepalive::{wire, KeepaliveStream};
    ///
    /// # futures::executor::block_on(async {
    /// let messages = stream::iter([
    ///     Ok::<_, std::io::Error>(b"first".to_vec()),
    ///     Ok(wire::KEEPALIVE_MESSAGE.to_vec()),
    ///     Ok(b"second".to_vec()),
    /// ]);
    /// let mut stream = KeepaliveStream::new(messages);
    /// assert_eq!(stream.next().await.unwrap().unwrap(), b"first");
    /// assert_eq!(stream.next().await.unwrap().unwrap(), b"second");
    /// assert!(stream.next().await.is_none());
    /// assert_eq!(stream.stats().keepalives_removed, 1);
    /// assert_eq!(stream.stats().messages_passed, 2);
    /// # });
    /// ```
    ///
    /// # Dead-peer detection
    ///
    /// Optional, and it needs a [`Timer`]: see
    /// [`detect_dead_peer`](Self::detect_dead_peer). Without it the stream
    /// owns no timer, and reads the clock only to timestamp messages.
    ///
    /// The timer is created on the first deadline and reset, never recreated,
    /// when the deadline moves; it is dropped with the stream. Nothing is
    /// spawned.
    #[must_use = "streams do nothing unless polled"]
    pub struct KeepaliveStream<S, T: Timer = NoTimer> {
        #[pin]
        inner: S,
        #[pin]
        peer: Option<PeerWatch<T>>,
        stats: StreamStats,
        done: bool,
    }
}

/// Counters of a [`KeepaliveStream`], from [`KeepaliveStream::stats`]. They
/// saturate.
///
/// ```
/// use inlinekeepalive::StreamStats;
/// assert_eq!(StreamStats::default().keepalives_removed, 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct StreamStats {
    /// Keepalives received and dropped.
    pub keepalives_removed: u64,
    /// [Collisions](Classification::Collision) delivered: application
    /// messages that use the reserved field number 100000000. Non-zero means
    /// a schema clashes with the keepalive protocol.
    pub collisions: u64,
    /// Messages delivered to the application, collisions included.
    pub messages_passed: u64,
    /// Silences reported as [`KeepaliveError::PeerTimedOut`].
    pub peer_timeouts: u32,
}

pin_project! {
    /// Dead-peer detection: the state machine (receive side only) and its
    /// timer.
    struct PeerWatch<T: Timer> {
        machine: Keepalive,
        #[pin]
        slot: SleepSlot<T>,
    }
}

impl<S> KeepaliveStream<S> {
    /// Wraps `inner`: keepalives are removed and counted, and no timer
    /// exists.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            peer: None,
            stats: StreamStats::default(),
            done: false,
        }
    }

    /// Turns on dead-peer detection: when nothing at all, application
    /// message or keepalive, arrives for `config`'s
    /// [peer timeout](Config::with_peer_timeout), the stream yields
    /// `Err(KeepaliveError::PeerTimedOut(..))`, once per silence. The stream
    /// stays usable: drop it to give up on the peer, or keep polling, and a
    /// message from the peer ends the silence (the next one is reported
    /// again). Only `config`'s peer timeout matters here; without one this
    /// does nothing but read the clock per message.
    ///
    /// Only ask for it when the peer sends keepalives (it knows that you
    /// remove them, and its interval is well below the timeout); otherwise a
    /// quiet but healthy stream would be reported.
    ///
    /// ```
    /// use std::time::Duration;
    /// use futures::{stream, StreamExt};
    /// use inlinekeepalive::{core::Config, timer::FuturesTimer, KeepaliveError, KeepaliveStream};
    ///
    /// # futures::executor::block_on(async {
    /// let config = Config::default().with_peer_timeout(Duration::from_millis(20))?;
    /// let silent = stream::pending::<Result<Vec<u8>, std::io::Error>>();
    /// let mut stream = KeepaliveStream::new(silent).detect_dead_peer(FuturesTimer, config);
    /// match stream.next().await {
    ///     Some(Err(KeepaliveError::PeerTimedOut(e))) => {
    ///         assert!(e.silent_for >= Duration::from_millis(20));
    ///     }
    ///     other => panic!("expected a timeout, got {other:?}"),
    /// }
    /// assert_eq!(stream.stats().peer_timeouts, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub fn detect_dead_peer<T: Timer>(self, timer: T, config: Config) -> KeepaliveStream<S, T> {
        let slot = SleepSlot::new(timer);
        let now = slot.now();
        let mut machine = Keepalive::new(config, now);
        machine.close_send();
        machine.expect_peer_keepalives(now, true);
        KeepaliveStream {
            inner: self.inner,
            peer: Some(PeerWatch { machine, slot }),
            stats: self.stats,
            done: self.done,
        }
    }
}

impl<S, T: Timer> KeepaliveStream<S, T> {
    /// The counters: keepalives dropped, messages and collisions delivered,
    /// silences reported.
    #[must_use]
    pub fn stats(&self) -> StreamStats {
        StreamStats {
            peer_timeouts: self.keepalive().map_or(0, |m| m.stats().peer_timeouts),
            ..self.stats
        }
    }

    /// The state machine of dead-peer detection, if it is on.
    #[must_use]
    pub fn keepalive(&self) -> Option<&Keepalive> {
        self.peer.as_ref().map(|peer| &peer.machine)
    }

    /// The wrapped stream.
    #[must_use]
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped stream, mutably. Taking items from it directly bypasses
    /// the keepalive filter.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped stream, pinned.
    pub fn get_pin_mut(self: Pin<&mut Self>) -> Pin<&mut S> {
        self.project().inner
    }

    /// Unwraps the stream; its timer is dropped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, E, T> Stream for KeepaliveStream<S, T>
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
    T: Timer,
{
    type Item = Result<B, KeepaliveError<E>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        // The inner stream first: a message that is already there is a sign
        // of life, even if the deadline has passed meanwhile.
        let mut dropped = 0;
        loop {
            match this.inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(msg))) => {
                    let class = classify(msg.as_ref());
                    if let Some(peer) = this.peer.as_mut().as_pin_mut() {
                        let peer = peer.project();
                        peer.machine.on_received(peer.slot.now(), class);
                    }
                    let stats = &mut *this.stats;
                    match class {
                        Classification::Keepalive => {
                            stats.keepalives_removed = stats.keepalives_removed.saturating_add(1);
                            dropped += 1;
                            if dropped >= DROP_BUDGET {
                                cx.waker().wake_by_ref();
                                return Poll::Pending;
                            }
                        }
                        Classification::Collision | Classification::Application => {
                            if class == Classification::Collision {
                                stats.collisions = stats.collisions.saturating_add(1);
                            }
                            stats.messages_passed = stats.messages_passed.saturating_add(1);
                            return Poll::Ready(Some(Ok(msg)));
                        }
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Some(Err(KeepaliveError::Transport(e))));
                }
                Poll::Ready(None) => {
                    *this.done = true;
                    // The peer finished: stop watching, release the timer.
                    this.peer.set(None);
                    return Poll::Ready(None);
                }
                Poll::Pending => break,
            }
        }
        // Nothing to deliver: drive the dead-peer deadline.
        let Some(peer) = this.peer.as_pin_mut() else {
            return Poll::Pending;
        };
        let mut peer = peer.project();
        loop {
            if let Some(Event::PeerTimedOut { silent_for }) = peer.machine.poll_event() {
                return Poll::Ready(Some(Err(KeepaliveError::PeerTimedOut(PeerTimedOut {
                    silent_for,
                }))));
            }
            match peer.slot.as_mut().poll(cx, peer.machine.poll_timeout()) {
                // Afterwards the machine's deadline is after `now`, so this
                // loop ends; it is armed from `now`, without a second read.
                Poll::Ready(now) => {
                    peer.machine.handle_timeout(now);
                    peer.slot.as_mut().arm(now, peer.machine.poll_timeout());
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S, B, E, T> FusedStream for KeepaliveStream<S, T>
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
    T: Timer,
{
    fn is_terminated(&self) -> bool {
        self.done
    }
}

impl<S: fmt::Debug, T: Timer> fmt::Debug for KeepaliveStream<S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeepaliveStream")
            .field("inner", &self.inner)
            .field("keepalive", &self.keepalive())
            .field("stats", &self.stats)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}
