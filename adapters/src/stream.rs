//! [`KeepaliveStream`]: removes keepalives from a stream of whole messages.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::{FusedStream, Stream};
use inlinekeepalive_core::{Classification, Encoding};
use pin_project_lite::pin_project;

use crate::error::KeepaliveError;
use crate::receive::{ReceiveHalf, ReceiveStats, POLL_BUDGET};
use crate::timer::{NoTimer, Timer};
use crate::wake_probe::WakeProbe;

pub(crate) use item::Inbound;

mod item {
    /// An item that a [`KeepaliveStream`](crate::KeepaliveStream) can
    /// classify: a payload, and whether its frame was compressed. Sealed:
    /// implemented for every `AsRef<[u8]>` (uncompressed payloads) and for
    /// the codec's `Message` (which carries the flag, and for that reason is
    /// not `AsRef<[u8]>`).
    #[allow(unreachable_pub)] // Public in a private module: a sealed bound.
    pub trait Inbound {
        /// The message's payload, without the gRPC prefix.
        fn payload(&self) -> &[u8];
        /// Whether the frame's compressed flag was set.
        fn is_compressed(&self) -> bool;
    }

    impl<B: AsRef<[u8]>> Inbound for B {
        #[inline]
        fn payload(&self) -> &[u8] {
            self.as_ref()
        }

        #[inline]
        fn is_compressed(&self) -> bool {
            false
        }
    }

    #[cfg(any(feature = "tokio", feature = "asynchronous-codec"))]
    impl Inbound for crate::codec::Message {
        #[inline]
        fn payload(&self) -> &[u8] {
            crate::codec::Message::payload(self)
        }

        #[inline]
        fn is_compressed(&self) -> bool {
            crate::codec::Message::is_compressed(self)
        }
    }
}

pin_project! {
    /// Removes inline keepalives from a stream of whole gRPC messages, and
    /// optionally reports a silent peer.
    ///
    /// Wraps any `Stream<Item = Result<B, E>>` whose items are whole
    /// messages, *without* the 5-byte gRPC prefix: payloads
    /// (`B: AsRef<[u8]>`), such as the messages of a WebSocket or of a QUIC
    /// stream that does its own framing, or the
    /// [`codec::Message`](crate::codec::Message)s of a
    /// [`GrpcCodec`](crate::codec::GrpcCodec)'s `Framed`, which carry gRPC's
    /// compressed flag (see [`with_grpc_encoding`](Self::with_grpc_encoding)). Each
    /// `Ok` item is classified:
    ///
    /// - a keepalive is dropped and counted;
    /// - a collision, an application message that uses the reserved field
    ///   number, is delivered unchanged and counted;
    /// - everything else is delivered unchanged, in order.
    ///
    /// Transport errors are passed through as [`KeepaliveError::Transport`].
    /// It is the message-level twin of [`KeepaliveReader`](crate::KeepaliveReader).
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
    /// owns no timer and reads no clock.
    #[must_use = "streams do nothing unless polled"]
    pub struct KeepaliveStream<S, T: Timer = NoTimer> {
        #[pin]
        inner: S,
        #[pin]
        receive: ReceiveHalf<T>,
        // With dead-peer detection: sees the inner stream's wake-ups, which
        // are its only sign of a message still arriving.
        probe: Option<WakeProbe>,
        done: bool,
    }
}

impl<S> KeepaliveStream<S> {
    /// Wraps `inner`: keepalives are removed and counted, and no timer
    /// exists.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            receive: ReceiveHalf::new(NoTimer, Encoding::Identity),
            probe: None,
            done: false,
        }
    }

    /// Turns on [dead-peer detection](crate#dead-peer-detection): when
    /// nothing at all arrives for `timeout`, the stream yields
    /// `Err(KeepaliveError::PeerTimedOut(..))` and ends. Call it whenever
    /// the peer's support becomes known: what was received so far is kept,
    /// and the watch starts now.
    ///
    /// A message, keepalive or not, proves the peer alive, and so does every
    /// wake-up of the inner stream that delivers no message: over a
    /// [`GrpcCodec`](crate::codec::GrpcCodec)'s `Framed`, bytes of a large
    /// message still arriving. So a message that takes longer than the
    /// timeout to arrive does not end the stream while its bytes flow.
    ///
    /// Only ask for it when the peer sends keepalives (it knows that you
    /// remove them, and its interval is well below the timeout); otherwise a
    /// quiet but healthy stream would be reported.
    ///
    /// ```
    /// use std::time::Duration;
    /// use futures::{stream, StreamExt};
    /// use inlinekeepalive::{timer::FuturesTimer, KeepaliveError, KeepaliveStream};
    ///
    /// # futures::executor::block_on(async {
    /// let silent = stream::pending::<Result<Vec<u8>, std::io::Error>>();
    /// let mut stream =
    ///     KeepaliveStream::new(silent).detect_dead_peer(FuturesTimer, Duration::from_millis(20));
    /// match stream.next().await {
    ///     Some(Err(KeepaliveError::PeerTimedOut(e))) => {
    ///         assert!(e.silent_for >= Duration::from_millis(20));
    ///     }
    ///     other => panic!("expected a timeout, got {other:?}"),
    /// }
    /// assert!(stream.next().await.is_none(), "a silent peer ends the stream");
    /// assert!(stream.stats().peer_timed_out);
    /// # });
    /// ```
    pub fn detect_dead_peer<T: Timer>(self, timer: T, timeout: Duration) -> KeepaliveStream<S, T> {
        KeepaliveStream {
            inner: self.inner,
            // The filter carries over: what was received keeps its meaning.
            receive: self.receive.with_timer(timer).watch_now(timeout),
            probe: Some(WakeProbe::new()),
            done: self.done,
        }
    }
}

impl<S, T: Timer> KeepaliveStream<S, T> {
    /// Sets the stream's `grpc-encoding`, which says how messages flagged as
    /// compressed are encoded, so that keepalives a peer sent compressed
    /// (Go's grpc does, under `grpc-encoding: gzip`) are removed too. Only
    /// items that carry the flag, the codec's
    /// [`Message`](crate::codec::Message), can be compressed; plain payloads
    /// are uncompressed. It applies from the next item on.
    ///
    /// ```
    /// use inlinekeepalive::{core::Encoding, KeepaliveStream};
    /// let stream = KeepaliveStream::new(futures::stream::empty::<Result<Vec<u8>, ()>>())
    ///     .with_encoding(Encoding::Gzip);
    /// # drop(stream);
    /// ```
    pub fn with_encoding(mut self, encoding: Encoding) -> Self {
        self.receive.set_encoding(encoding);
        self
    }

    /// [`with_encoding`](Self::with_encoding) from a `grpc-encoding` header
    /// value (`gzip`, `deflate`, `identity`, ...; case-insensitive).
    ///
    /// ```
    /// use inlinekeepalive::KeepaliveStream;
    /// let stream = KeepaliveStream::new(futures::stream::empty::<Result<Vec<u8>, ()>>())
    ///     .with_grpc_encoding("gzip");
    /// # drop(stream);
    /// ```
    pub fn with_grpc_encoding(self, value: &str) -> Self {
        self.with_encoding(Encoding::from_grpc_encoding(value))
    }

    /// The counters: keepalives dropped, messages and collisions delivered,
    /// silences reported.
    #[must_use]
    pub fn stats(&self) -> ReceiveStats {
        self.receive.stats()
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
    B: Inbound,
    T: Timer,
{
    type Item = Result<B, KeepaliveError<E>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        // The inner stream first: a message that is already there is a sign
        // of life, even if the deadline has passed meanwhile, and so is a
        // wake-up of the inner stream that brought only part of one (it
        // polls `Pending`). A wake-up that brought an error is none.
        let woken = this.probe.as_ref().is_some_and(WakeProbe::take_woken);
        let mut removed = 0;
        loop {
            let polled = match this.probe {
                Some(probe) => probe.poll(cx, |cx| this.inner.as_mut().poll_next(cx)),
                None => this.inner.as_mut().poll_next(cx),
            };
            match polled {
                Poll::Ready(Some(Ok(message))) => {
                    this.receive.as_mut().on_bytes();
                    let class = this
                        .receive
                        .as_mut()
                        .classify_message(message.is_compressed(), message.payload());
                    match class {
                        Classification::Keepalive => {
                            removed += 1;
                            if removed >= POLL_BUDGET {
                                cx.waker().wake_by_ref();
                                return Poll::Pending;
                            }
                        }
                        Classification::Collision | Classification::Application => {
                            return Poll::Ready(Some(Ok(message)));
                        }
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Some(Err(KeepaliveError::Transport(e))));
                }
                Poll::Ready(None) => {
                    *this.done = true;
                    // Messages have no frames to break: only the watch ends.
                    let _ = this.receive.as_mut().finish();
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    if woken {
                        this.receive.as_mut().on_bytes();
                    }
                    break;
                }
            }
        }
        // Nothing to deliver: a silent peer ends the stream.
        let silence = std::task::ready!(this.receive.poll_silence(cx));
        *this.done = true;
        Poll::Ready(Some(Err(KeepaliveError::PeerTimedOut(silence))))
    }
}

impl<S, B, E, T> FusedStream for KeepaliveStream<S, T>
where
    S: Stream<Item = Result<B, E>>,
    B: Inbound,
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
            .field("receive", &self.receive)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}
