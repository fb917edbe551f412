//! [`KeepaliveSink`]: sends keepalives into a sink of whole messages.

use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};

use futures_sink::Sink;
use inlinekeepalive_core::{wire, Config, Instant};
use pin_project_lite::pin_project;

use crate::send::{Messages, SendHalf, SendStats};
use crate::timer::Timer;

/// [`wire::KEEPALIVE_MESSAGE`] as any message type that converts from bytes.
fn keepalive_from_bytes<M: From<&'static [u8]>>() -> M {
    M::from(&wire::KEEPALIVE_MESSAGE[..])
}

pin_project! {
    /// Sends inline keepalives into a sink of whole gRPC messages while the
    /// application is idle.
    ///
    /// Wraps any `Sink<M>` whose items are message payloads (without the
    /// 5-byte gRPC prefix), for transports that frame messages themselves
    /// (WebSocket, QUIC streams, channels, a codec's `Framed`). Application
    /// items pass through unchanged; each one counts as activity (under
    /// [`Policy::Idle`](crate::Policy::Idle) it pushes the next keepalive
    /// back). It is the message-level twin of
    /// [`KeepaliveWriter`](crate::KeepaliveWriter).
    ///
    /// # Peer support
    ///
    /// Nothing is ever sent until the reader of this sink is known to remove
    /// keepalives (Waypoint's rule): say so with
    /// [`with_peer_support`](Self::with_peer_support) when it is known at
    /// construction (a server that saw `wp-inline-keepalives: true`), or
    /// [`set_peer_support`](Self::set_peer_support) when you learn it.
    /// `false` is final.
    ///
    /// # Keeping an idle sink alive
    ///
    /// A sink only runs when it is polled, and an idle application does not
    /// poll it. Either hand it to a [`Driver`](crate::Driver)
    /// ([`into_driver`](Self::into_driver)), which forwards your messages,
    /// sends keepalives in the gaps and closes the sink when every
    /// [`Sender`](crate::Sender) is dropped; or poll
    /// [`poll_keepalive`](Self::poll_keepalive) in your own `select` loop.
    ///
    /// # Interleaving
    ///
    /// A keepalive is handed to the inner sink only after its `poll_ready`
    /// returned `Ready`, and never between your `poll_ready` and
    /// `start_send`: the readiness you were given is yours. A due keepalive
    /// waits until then; it is neither lost nor doubled. Keepalives also
    /// ride along with your own `poll_flush` when one is due and the inner
    /// sink is ready.
    ///
    /// One timer is created when the first keepalive is scheduled, reset when
    /// the deadline moves, and dropped with the sink (or when it is closed).
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use std::time::Duration;
    /// use futures::{future::join, StreamExt};
    /// use inlinekeepalive::{timer::FuturesTimer, wire, Config, KeepaliveSink};
    ///
    /// // The transport: here a channel of `Vec<u8>` messages.
    /// let (transport, mut peer) = futures::channel::mpsc::unbounded::<Vec<u8>>();
    /// let config = Config::new(Duration::from_millis(10))?;
    /// let sink = KeepaliveSink::new(transport, FuturesTimer, config).with_peer_support(true);
    /// let (mut messages, driver) = sink.into_driver(8);
    ///
    /// // On a real executor: `let task = spawn(driver);` and keep the sender.
    /// let app = async move {
    ///     messages.send(b"hello".to_vec()).await?;
    ///     futures_timer::Delay::new(Duration::from_millis(50)).await; // idle
    ///     messages.send(b"world".to_vec()).await
    /// }; // `messages` dropped here: the driver closes the sink and finishes
    /// let (sent, sink) = join(app, driver).await;
    /// sent?;
    /// assert!(sink?.stats().keepalives_sent >= 1);
    ///
    /// let received: Vec<Vec<u8>> = peer.collect().await;
    /// let app_only: Vec<_> = received.iter().filter(|m| **m != wire::KEEPALIVE_MESSAGE).collect();
    /// assert_eq!(app_only, [b"hello", b"world"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    #[must_use = "sinks do nothing unless polled"]
    pub struct KeepaliveSink<Si, M, T: Timer> {
        #[pin]
        inner: Si,
        #[pin]
        send: SendHalf<T, Messages>,
        make_keepalive: fn() -> M,
        // The application holds the inner sink's readiness: its `poll_ready`
        // returned `Ready` and its `start_send` has not come yet.
        reserved: bool,
        // The task whose `poll_keepalive` returned `Pending` because of that
        // reservation. Nothing else will wake it (its sleep has fired, or
        // was not polled), so `start_send` does when the reservation ends.
        reservation_waiter: Option<Waker>,
        // A keepalive was handed over and not flushed yet.
        unflushed: bool,
    }
}

impl<Si: Sink<M>, M: From<&'static [u8]>, T: Timer> KeepaliveSink<Si, M, T> {
    /// Wraps `inner`; `timer` schedules keepalives per `config`. Each
    /// keepalive is [`wire::KEEPALIVE_MESSAGE`] converted with
    /// `M::from(&'static [u8])`, which covers `Vec<u8>`, `Box<[u8]>`,
    /// `Arc<[u8]>`, `&'static [u8]` and `bytes::Bytes`; for other message
    /// types use [`with_keepalive_fn`](Self::with_keepalive_fn).
    ///
    /// Nothing is sent until the peer is known to support keepalives.
    ///
    /// ```
    /// use inlinekeepalive::{timer::FuturesTimer, Config, KeepaliveSink};
    /// let (tx, _rx) = futures::channel::mpsc::unbounded::<Vec<u8>>();
    /// let sink = KeepaliveSink::new(tx, FuturesTimer, Config::default());
    /// assert_eq!(sink.stats().keepalives_sent, 0);
    /// ```
    pub fn new(inner: Si, timer: T, config: Config) -> Self {
        Self::with_keepalive_fn(inner, timer, config, keepalive_from_bytes::<M>)
    }
}

impl<Si, M, T: Timer> KeepaliveSink<Si, M, T> {
    /// Wraps `inner`, making each keepalive item with `make_keepalive`,
    /// which must return a message whose payload is exactly
    /// [`wire::KEEPALIVE_MESSAGE`].
    ///
    /// ```
    /// use inlinekeepalive::{timer::FuturesTimer, wire, Config, KeepaliveSink};
    ///
    /// /// A transport's own message type.
    /// enum Frame { Binary(Vec<u8>), Text(String) }
    ///
    /// let (tx, _rx) = futures::channel::mpsc::unbounded::<Frame>();
    /// let sink = KeepaliveSink::with_keepalive_fn(tx, FuturesTimer, Config::default(), || {
    ///     Frame::Binary(wire::KEEPALIVE_MESSAGE.to_vec())
    /// });
    /// # drop(sink);
    /// ```
    pub fn with_keepalive_fn(
        inner: Si,
        timer: T,
        config: Config,
        make_keepalive: fn() -> M,
    ) -> Self {
        Self {
            inner,
            send: SendHalf::new(timer, config),
            make_keepalive,
            reserved: false,
            reservation_waiter: None,
            unflushed: false,
        }
    }

    /// This sink, told whether the peer removes keepalives: `true` lets
    /// keepalives go out, `false` is final (Waypoint's rule).
    ///
    /// ```
    /// use inlinekeepalive::{timer::FuturesTimer, Config, KeepaliveSink};
    /// let (tx, _rx) = futures::channel::mpsc::unbounded::<Vec<u8>>();
    /// // A server whose client sent `wp-inline-keepalives: true`:
    /// let sink = KeepaliveSink::new(tx, FuturesTimer, Config::default()).with_peer_support(true);
    /// # drop(sink);
    /// ```
    pub fn with_peer_support(mut self, supported: bool) -> Self {
        self.send.set_peer_support_unpinned(supported);
        self
    }

    /// Says whether the peer removes keepalives, on a sink in use: for a
    /// client that learns it from the response headers. The first keepalive
    /// goes out on the next [`poll_keepalive`](Self::poll_keepalive).
    /// Through a [`Driver`](crate::Driver), use
    /// [`Sender::set_peer_support`](crate::Sender::set_peer_support).
    pub fn set_peer_support(&mut self, supported: bool) {
        self.send.set_peer_support_unpinned(supported);
    }

    /// [`set_peer_support`](Self::set_peer_support) through a pin (the
    /// driver's).
    pub(crate) fn set_peer_support_pinned(self: Pin<&mut Self>, supported: bool) {
        self.project().send.set_peer_support(supported);
    }

    /// This sink with the jitter of its interval seeded (see
    /// [`Config::with_jitter`]). Without it the seed is derived from the
    /// instant the sink was created, in microseconds, so sinks created in
    /// the same microsecond jitter alike: when you open many streams at once
    /// with jitter, give each its own seed (a stream id, or a counter).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.send = self.send.with_seed(seed);
        self
    }

    /// Counters of what was sent.
    #[must_use]
    pub fn stats(&self) -> SendStats {
        self.send.stats()
    }

    /// The wrapped sink.
    #[must_use]
    pub fn get_ref(&self) -> &Si {
        &self.inner
    }

    /// The wrapped sink, mutably. Items sent directly bypass the keepalive
    /// schedule (they do not count as activity).
    pub fn get_mut(&mut self) -> &mut Si {
        &mut self.inner
    }

    /// The wrapped sink, pinned.
    pub fn get_pin_mut(self: Pin<&mut Self>) -> Pin<&mut Si> {
        self.project().inner
    }

    /// Unwraps the sink; its timer is dropped.
    pub fn into_inner(self) -> Si {
        self.inner
    }
}

impl<Si: Sink<M>, M, T: Timer> KeepaliveSink<Si, M, T> {
    /// Waits until a keepalive is due, sends it and flushes the inner sink.
    ///
    /// Resolves with `Ok(())` after each keepalive; call it again for the
    /// next. It stays pending while nothing is scheduled (the peer's support
    /// is unknown or refused), while your `poll_ready` holds the inner
    /// sink's readiness (your `start_send` wakes it), and after close; it
    /// resolves with the inner sink's error if sending or flushing a
    /// keepalive fails (no keepalive is sent after that). Cancel-safe: a
    /// keepalive handed over and not yet flushed is flushed by the next call.
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use std::future::poll_fn;
    /// use std::pin::Pin;
    /// use std::time::Duration;
    /// use futures::{future::{self, Either}, SinkExt, StreamExt};
    /// use inlinekeepalive::{timer::FuturesTimer, Config, KeepaliveSink};
    ///
    /// let (tx, _rx) = futures::channel::mpsc::unbounded::<Vec<u8>>();
    /// let config = Config::new(Duration::from_millis(5))?;
    /// let mut sink = KeepaliveSink::new(tx, FuturesTimer, config).with_peer_support(true);
    /// // The application's work: two messages, 30 ms apart.
    /// let work = futures::stream::iter([b"a".to_vec(), b"b".to_vec()]).then(|m| async move {
    ///     futures_timer::Delay::new(Duration::from_millis(30)).await;
    ///     m
    /// });
    /// let mut work = std::pin::pin!(work);
    /// loop {
    ///     let keepalive = poll_fn(|cx| Pin::new(&mut sink).poll_keepalive(cx));
    ///     match future::select(work.next(), keepalive).await {
    ///         Either::Left((Some(msg), _)) => sink.send(msg).await?,
    ///         Either::Left((None, _)) => break,
    ///         Either::Right((sent, _)) => sent?,
    ///     }
    /// }
    /// assert!(sink.stats().keepalives_sent >= 2);
    /// assert_eq!(sink.stats().messages_sent, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    pub fn poll_keepalive(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Si::Error>> {
        let mut this = self.project();
        // The instant the timer fired, reused for the send decision and to
        // re-arm: one clock read per keepalive.
        let mut now = None;
        loop {
            if *this.unflushed {
                if let Err(e) = ready!(this.inner.as_mut().poll_flush(cx)) {
                    this.send.as_mut().close();
                    return Poll::Ready(Err(e));
                }
                *this.unflushed = false;
                return Poll::Ready(Ok(()));
            }
            ready!(this.send.as_mut().poll_due(cx, &mut now));
            if *this.reserved {
                // The application's `start_send` comes first; its
                // `poll_flush` sends the keepalive. Nothing else wakes this
                // task (its sleep fired or was not polled), so `start_send`
                // does: the task then sends the keepalive if the application
                // does not flush, or arms the timer for the next one. Stored
                // rather than woken now: the reservation may last, and an
                // immediate wake-up would spin until it ends.
                match this.reservation_waiter {
                    Some(waiter) if waiter.will_wake(cx.waker()) => {}
                    waiter => *waiter = Some(cx.waker().clone()),
                }
                return Poll::Pending;
            }
            if let Err(e) = ready!(this.inner.as_mut().poll_ready(cx)) {
                this.send.as_mut().close();
                return Poll::Ready(Err(e));
            }
            if this.send.as_mut().take_keepalive(&mut now) {
                if let Err(e) = this.inner.as_mut().start_send((this.make_keepalive)()) {
                    this.send.as_mut().close();
                    return Poll::Ready(Err(e));
                }
                *this.unflushed = true;
            }
        }
    }

    /// `start_send` with the clock read shared with the caller, as
    /// [`KeepaliveWriter`](crate::KeepaliveWriter)'s writes do.
    pub(crate) fn start_send_at(
        self: Pin<&mut Self>,
        item: M,
        now: &mut Option<Instant>,
    ) -> Result<(), Si::Error> {
        let this = self.project();
        *this.reserved = false;
        if let Some(waiter) = this.reservation_waiter.take() {
            waiter.wake();
        }
        this.inner.start_send(item)?;
        this.send.on_message_sent(now);
        Ok(())
    }

    /// If a keepalive is due and the inner sink is ready right now, hands it
    /// over; never waits.
    fn try_keepalive(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Result<(), Si::Error> {
        let mut this = self.project();
        if *this.reserved || !this.send.as_mut().is_due_now() {
            return Ok(());
        }
        if let Poll::Ready(ready) = this.inner.as_mut().poll_ready(cx) {
            ready?;
            if this.send.as_mut().take_keepalive(&mut None) {
                this.inner.as_mut().start_send((this.make_keepalive)())?;
                *this.unflushed = true;
            }
        }
        Ok(())
    }
}

impl<Si: Sink<M>, M, T: Timer> Sink<M> for KeepaliveSink<Si, M, T> {
    type Error = Si::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.project();
        ready!(this.inner.poll_ready(cx))?;
        *this.reserved = true;
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, item: M) -> Result<(), Self::Error> {
        self.start_send_at(item, &mut None)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.as_mut().try_keepalive(cx)?;
        let this = self.project();
        ready!(this.inner.poll_flush(cx))?;
        *this.unflushed = false;
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.project();
        this.send.close();
        ready!(this.inner.poll_close(cx))?;
        *this.unflushed = false;
        Poll::Ready(Ok(()))
    }
}

impl<Si: fmt::Debug, M, T: Timer + fmt::Debug> fmt::Debug for KeepaliveSink<Si, M, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeepaliveSink")
            .field("inner", &self.inner)
            .field("send", &self.send)
            .field("reserved", &self.reserved)
            .finish_non_exhaustive()
    }
}
