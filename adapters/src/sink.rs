//! [`KeepaliveSink`]: injects keepalives into a sink of whole messages.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_channel::mpsc;
use futures_core::Stream;
use futures_sink::Sink;
use inlinekeepalive_core::{wire, Config, Keepalive};
use pin_project_lite::pin_project;

#[cfg(doc)]
use crate::sender::DriverStopped;
use crate::sender::{self, Command, Sender};
use crate::sleep_slot::SleepSlot;
use crate::timer::Timer;

/// How many application messages [`SinkDriver`] forwards in one poll before
/// it yields, so a busy stream cannot starve its neighbours.
const MESSAGES_PER_POLL: usize = 64;

/// Whether a keepalive may be due. The sink's machine watches no peer, so
/// its only deadline is the send deadline, and it has none exactly when a
/// keepalive is due (or none will ever be sent, which `poll_keepalive` then
/// says once).
fn maybe_due(machine: &Keepalive) -> bool {
    machine.poll_timeout().is_none()
}

/// Makes the keepalive item of a [`KeepaliveSink`]: the type parameter `F`
/// of the sink, so the default constructor takes no space in it.
pub trait MakeKeepalive<M> {
    /// A message whose payload is exactly [`wire::KEEPALIVE_MESSAGE`].
    fn make_keepalive(&self) -> M;
}

/// The keepalive constructor of [`KeepaliveSink::new`]:
/// [`wire::KEEPALIVE_MESSAGE`] converted with `M::from(&'static [u8])`.
/// A zero-sized type.
#[derive(Clone, Copy, Debug, Default)]
pub struct KeepaliveFromBytes;

impl<M: From<&'static [u8]>> MakeKeepalive<M> for KeepaliveFromBytes {
    #[inline]
    fn make_keepalive(&self) -> M {
        M::from(&wire::KEEPALIVE_MESSAGE[..])
    }
}

/// The keepalive constructor of [`KeepaliveSink::with_keepalive_fn`].
impl<M> MakeKeepalive<M> for fn() -> M {
    #[inline]
    fn make_keepalive(&self) -> M {
        self()
    }
}

/// Counters of a [`KeepaliveSink`], from [`KeepaliveSink::stats`]. They
/// saturate: `keepalives_sent` at `u32::MAX` (as the core's
/// [`Stats`](crate::core::Stats) do; 49 days of keepalives at the shortest
/// interval), `messages_sent` at `u64::MAX`.
///
/// ```
/// use inlinekeepalive::SinkStats;
/// assert_eq!(SinkStats::default().keepalives_sent, 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct SinkStats {
    /// Keepalives handed to the inner sink.
    pub keepalives_sent: u64,
    /// Application messages handed to the inner sink.
    pub messages_sent: u64,
}

pin_project! {
    /// Sends inline keepalives into a sink of whole gRPC messages while the
    /// application is idle.
    ///
    /// Wraps any `Sink<M>` whose items are message payloads (without the
    /// 5-byte gRPC prefix), for transports that frame messages themselves
    /// (WebSocket, QUIC streams, channels). Application items pass through
    /// unchanged; each one sent counts as activity for the state machine
    /// (under [`Policy::Idle`](crate::core::Policy::Idle) it pushes the next
    /// keepalive back). It is the message-level twin of
    /// [`KeepaliveWriter`](crate::KeepaliveWriter).
    ///
    /// # Peer support
    ///
    /// Nothing is ever sent until the reader of this sink is known to filter
    /// keepalives (Waypoint's compatibility rule): say so with
    /// [`peer_supports_keepalives`](Self::peer_supports_keepalives) when it
    /// is known at construction (a server that saw `wp-inline-keepalives:
    /// true`), or [`set_peer_support`](Self::set_peer_support) when you learn
    /// it. `false` is final.
    ///
    /// # Keeping an idle sink alive
    ///
    /// A sink only runs when it is polled, and an idle application does not
    /// poll it. Pick one of:
    ///
    /// - [`into_driver`](Self::into_driver): a [`MessageSender`] for the
    ///   application and a [`SinkDriver`] future that owns the sink; spawn
    ///   the driver on your executor (the library never spawns, as with
    ///   hyper's connection future). It forwards your messages, sends
    ///   keepalives in the gaps, and closes the sink when every sender is
    ///   dropped.
    /// - [`keepalive`](Self::keepalive) in your own `select` loop, to keep
    ///   the sink in your task.
    /// - [`poll_keepalive`](Self::poll_keepalive), the building block of
    ///   both.
    ///
    /// # Interleaving
    ///
    /// A keepalive is handed to the inner sink only after its `poll_ready`
    /// returned `Ready`, and never between your `poll_ready` and
    /// `start_send`: the readiness you were given is yours. A due keepalive
    /// waits until then; it is neither lost nor doubled. Keepalives also
    /// ride along with your own [`poll_flush`](Sink::poll_flush) when one is
    /// due and the inner sink is ready.
    ///
    /// One timer is created when the first keepalive is scheduled, reset when
    /// the deadline moves, and dropped with the sink (or when it is closed).
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use std::time::Duration;
    /// use futures::{future::join, StreamExt};
    /// use inlinekeepalive::{core::Config, timer::FuturesTimer, wire, KeepaliveSink};
    ///
    /// // The transport: here a channel of `Vec<u8>` messages.
    /// let (transport, mut peer) = futures::channel::mpsc::unbounded::<Vec<u8>>();
    /// let config = Config::new(Duration::from_millis(10))?;
    /// let sink = KeepaliveSink::new(transport, FuturesTimer, config).peer_supports_keepalives(true);
    /// let (mut messages, driver) = sink.into_driver(8);
    ///
    /// // On a real executor: `let task = spawn(driver);` and keep the sender.
    /// let app = async move {
    ///     messages.send(b"hello".to_vec()).await?;
    ///     futures_timer::Delay::new(Duration::from_millis(50)).await; // idle
    ///     messages.send(b"world".to_vec()).await
    /// }; // `messages` dropped here: the driver closes the sink and finishes
    /// let (sent, stats) = join(app, driver).await;
    /// sent?;
    /// assert!(stats?.keepalives_sent >= 1);
    ///
    /// let received: Vec<Vec<u8>> = peer.collect().await;
    /// let app_only: Vec<_> = received.iter().filter(|m| **m != wire::KEEPALIVE_MESSAGE).collect();
    /// assert_eq!(app_only, [b"hello", b"world"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    #[must_use = "sinks do nothing unless polled"]
    pub struct KeepaliveSink<Si, M, T: Timer, F = KeepaliveFromBytes> {
        #[pin]
        inner: Si,
        #[pin]
        slot: SleepSlot<T>,
        machine: Keepalive,
        make_keepalive: F,
        // The counters of `SinkStats`, kept apart so the flags below fill
        // the space after the narrower one.
        messages_sent: u64,
        keepalives_sent: u32,
        _message: PhantomData<fn() -> M>,
        // The application holds the inner sink's readiness: its `poll_ready`
        // returned `Ready` and its `start_send` has not come yet.
        reserved: bool,
        // A keepalive may be due: ask `poll_keepalive` once the sink is
        // ready. (The machine schedules nothing while one is due.)
        maybe_due: bool,
        // A keepalive was handed over and not flushed yet.
        unflushed: bool,
    }
}

impl<Si, M, T> KeepaliveSink<Si, M, T>
where
    T: Timer,
    M: From<&'static [u8]>,
{
    /// Wraps `inner`; `timer` schedules keepalives per `config`. Each
    /// keepalive is [`wire::KEEPALIVE_MESSAGE`] converted with
    /// `M::from(&'static [u8])`, which covers `Vec<u8>`, `Box<[u8]>`,
    /// `Arc<[u8]>`, `&'static [u8]` and `bytes::Bytes`; for other message
    /// types use [`with_keepalive_fn`](Self::with_keepalive_fn).
    ///
    /// Nothing is sent until the peer is known to support keepalives.
    ///
    /// ```
    /// use inlinekeepalive::{core::Config, timer::FuturesTimer, KeepaliveSink};
    /// let (tx, _rx) = futures::channel::mpsc::unbounded::<Vec<u8>>();
    /// let sink = KeepaliveSink::<_, Vec<u8>, _>::new(tx, FuturesTimer, Config::default());
    /// assert_eq!(sink.stats().keepalives_sent, 0);
    /// ```
    pub fn new(inner: Si, timer: T, config: Config) -> Self {
        Self::with_maker(inner, timer, config, KeepaliveFromBytes)
    }
}

impl<Si, M, T: Timer> KeepaliveSink<Si, M, T, fn() -> M> {
    /// Wraps `inner`, making each keepalive item with `make_keepalive`,
    /// which must return a message whose payload is exactly
    /// [`wire::KEEPALIVE_MESSAGE`].
    ///
    /// ```
    /// use inlinekeepalive::{core::Config, timer::FuturesTimer, wire, KeepaliveSink};
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
        Self::with_maker(inner, timer, config, make_keepalive)
    }
}

impl<Si, M, T: Timer, F> KeepaliveSink<Si, M, T, F> {
    fn with_maker(inner: Si, timer: T, config: Config, make_keepalive: F) -> Self {
        let slot = SleepSlot::new(timer);
        let mut machine = Keepalive::new(config, slot.now());
        machine.close_receive();
        Self {
            inner,
            slot,
            machine,
            make_keepalive,
            messages_sent: 0,
            keepalives_sent: 0,
            _message: PhantomData,
            reserved: false,
            maybe_due: false,
            unflushed: false,
        }
    }

    /// Says whether the peer removes keepalives: `true` lets keepalives go
    /// out, `false` is final (Waypoint's rule).
    ///
    /// ```
    /// use inlinekeepalive::{core::Config, timer::FuturesTimer, KeepaliveSink};
    /// let (tx, _rx) = futures::channel::mpsc::unbounded::<Vec<u8>>();
    /// // A server whose client sent `wp-inline-keepalives: true`:
    /// let sink = KeepaliveSink::<_, Vec<u8>, _>::new(tx, FuturesTimer, Config::default())
    ///     .peer_supports_keepalives(true);
    /// # drop(sink);
    /// ```
    pub fn peer_supports_keepalives(mut self, supported: bool) -> Self {
        self.set_peer_support(supported);
        self
    }

    /// [`peer_supports_keepalives`](Self::peer_supports_keepalives) on a sink
    /// in use, for a client that learns of the server's support from the
    /// response headers. The first keepalive goes out on the next poll of
    /// [`poll_keepalive`](Self::poll_keepalive) (or of the driver: use
    /// [`MessageSender::set_peer_support`] then).
    pub fn set_peer_support(&mut self, supported: bool) {
        self.machine.set_peer_support(self.slot.now(), supported);
        self.maybe_due = maybe_due(&self.machine);
    }

    fn set_peer_support_pinned(self: Pin<&mut Self>, supported: bool) {
        let this = self.project();
        this.machine.set_peer_support(this.slot.now(), supported);
        *this.maybe_due = maybe_due(this.machine);
    }

    /// Seeds the jitter of the keepalive interval (see
    /// [`Config::with_jitter`]); give each stream its own seed when using
    /// jitter.
    pub fn seed(mut self, seed: u64) -> Self {
        self.machine = self.machine.with_seed(seed);
        self
    }

    /// Counters of what was sent.
    #[must_use]
    pub fn stats(&self) -> SinkStats {
        SinkStats {
            keepalives_sent: u64::from(self.keepalives_sent),
            messages_sent: self.messages_sent,
        }
    }

    /// The keepalive state machine (for its [`poll_timeout`](Keepalive::poll_timeout)).
    #[must_use]
    pub fn keepalive_state(&self) -> &Keepalive {
        &self.machine
    }

    /// The wrapped sink.
    #[must_use]
    pub fn get_ref(&self) -> &Si {
        &self.inner
    }

    /// The wrapped sink, mutably. Items sent directly bypass the state
    /// machine (they do not count as activity).
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

    /// [`poll_keepalive`](Self::poll_keepalive) as a future: resolves after
    /// the next keepalive was sent and flushed. For a `select` loop that
    /// keeps the sink in your task; dropping it at any point is safe.
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use std::time::Duration;
    /// use futures::{future::{self, Either}, SinkExt, StreamExt};
    /// use inlinekeepalive::{core::Config, timer::FuturesTimer, KeepaliveSink};
    ///
    /// let (tx, _rx) = futures::channel::mpsc::unbounded::<Vec<u8>>();
    /// let config = Config::new(Duration::from_millis(5))?;
    /// let mut sink = KeepaliveSink::new(tx, FuturesTimer, config).peer_supports_keepalives(true);
    /// // The application's work: two messages, 30 ms apart.
    /// let work = futures::stream::iter([b"a".to_vec(), b"b".to_vec()]).then(|m| async move {
    ///     futures_timer::Delay::new(Duration::from_millis(30)).await;
    ///     m
    /// });
    /// let mut work = std::pin::pin!(work);
    /// loop {
    ///     match future::select(work.next(), sink.keepalive()).await {
    ///         Either::Left((Some(msg), _)) => sink.send(msg).await?,
    ///         Either::Left((None, _)) => break,
    ///         Either::Right((sent, _)) => sent?,
    ///     }
    /// }
    /// assert!(sink.stats().keepalives_sent >= 2);
    /// assert_eq!(sink.stats().messages_sent, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    pub fn keepalive(&mut self) -> KeepaliveSent<'_, Si, M, T, F>
    where
        Si: Unpin,
        T::Sleep: Unpin,
    {
        KeepaliveSent { sink: self }
    }

    /// Splits into a [`MessageSender`] for the application and the
    /// [`SinkDriver`] that owns the sink, for an application that may send
    /// nothing for a long time. `capacity` bounds the messages queued in the
    /// channel (at least one per sender can always be queued). See the
    /// type's docs for an example.
    pub fn into_driver(self, capacity: usize) -> (MessageSender<M>, SinkDriver<Si, M, T, F>) {
        let (sender, rx) = sender::channel(capacity);
        let driver = SinkDriver {
            sink: self,
            rx,
            buffered: None,
            unflushed: false,
            senders_gone: false,
        };
        (sender, driver)
    }
}

impl<Si: Sink<M>, M, T: Timer, F: MakeKeepalive<M>> KeepaliveSink<Si, M, T, F> {
    /// Waits until a keepalive is due, sends it and flushes the inner sink.
    ///
    /// Resolves with `Ok(())` after each keepalive; call it again for the
    /// next. It stays pending while nothing is scheduled (the peer's support
    /// is unknown or refused), while your `poll_ready` holds the inner
    /// sink's readiness, and after close; it resolves with the inner sink's
    /// error if sending or flushing a keepalive fails (no keepalive is sent
    /// after that). Cancel-safe: a keepalive handed over and not yet flushed
    /// is flushed by the next call.
    pub fn poll_keepalive(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Si::Error>> {
        let mut this = self.project();
        // The instant the timer fired, reused for the send decision and to
        // re-arm: one clock read per keepalive.
        let mut fired_at = None;
        loop {
            if *this.unflushed {
                if let Err(e) = ready!(this.inner.as_mut().poll_flush(cx)) {
                    this.machine.close_send();
                    return Poll::Ready(Err(e));
                }
                *this.unflushed = false;
                return Poll::Ready(Ok(()));
            }
            if *this.maybe_due && !*this.reserved {
                if let Err(e) = ready!(this.inner.as_mut().poll_ready(cx)) {
                    this.machine.close_send();
                    return Poll::Ready(Err(e));
                }
                *this.maybe_due = false;
                let now = fired_at.take().unwrap_or_else(|| this.slot.now());
                let sent = this.machine.poll_keepalive(now);
                this.slot.as_mut().arm(now, this.machine.poll_timeout());
                if sent {
                    if let Err(e) = this
                        .inner
                        .as_mut()
                        .start_send(this.make_keepalive.make_keepalive())
                    {
                        this.machine.close_send();
                        return Poll::Ready(Err(e));
                    }
                    *this.keepalives_sent = this.keepalives_sent.saturating_add(1);
                    *this.unflushed = true;
                    continue;
                }
            }
            let now = ready!(this.slot.as_mut().poll(cx, this.machine.poll_timeout()));
            this.machine.handle_timeout(now);
            *this.maybe_due = maybe_due(this.machine);
            fired_at = Some(now);
        }
    }

    /// If a keepalive is due and the inner sink is ready right now, hands it
    /// over; never waits.
    fn try_keepalive(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Result<(), Si::Error> {
        let mut this = self.project();
        if *this.reserved {
            return Ok(());
        }
        let now = this.slot.now();
        if this.machine.poll_timeout().is_some_and(|at| at <= now) {
            this.machine.handle_timeout(now);
            *this.maybe_due = maybe_due(this.machine);
        }
        if !*this.maybe_due {
            return Ok(());
        }
        if let Poll::Ready(ready) = this.inner.as_mut().poll_ready(cx) {
            ready?;
            *this.maybe_due = false;
            let sent = this.machine.poll_keepalive(now);
            this.slot.as_mut().arm(now, this.machine.poll_timeout());
            if sent {
                this.inner
                    .as_mut()
                    .start_send(this.make_keepalive.make_keepalive())?;
                *this.keepalives_sent = this.keepalives_sent.saturating_add(1);
                *this.unflushed = true;
            }
        }
        Ok(())
    }
}

impl<Si: Sink<M>, M, T: Timer, F: MakeKeepalive<M>> Sink<M> for KeepaliveSink<Si, M, T, F> {
    type Error = Si::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.project();
        ready!(this.inner.poll_ready(cx))?;
        *this.reserved = true;
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, item: M) -> Result<(), Self::Error> {
        let this = self.project();
        *this.reserved = false;
        this.inner.start_send(item)?;
        this.machine.on_sent(this.slot.now());
        *this.messages_sent = this.messages_sent.saturating_add(1);
        Ok(())
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
        this.machine.close_send();
        this.slot.release();
        *this.maybe_due = false;
        ready!(this.inner.poll_close(cx))?;
        *this.unflushed = false;
        Poll::Ready(Ok(()))
    }
}

impl<Si: fmt::Debug, M, T: Timer, F> fmt::Debug for KeepaliveSink<Si, M, T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeepaliveSink")
            .field("inner", &self.inner)
            .field("machine", &self.machine)
            .field("stats", &self.stats())
            .field("reserved", &self.reserved)
            .finish_non_exhaustive()
    }
}

/// The future of [`KeepaliveSink::keepalive`].
#[must_use = "futures do nothing unless polled"]
pub struct KeepaliveSent<'a, Si, M, T: Timer, F = KeepaliveFromBytes> {
    sink: &'a mut KeepaliveSink<Si, M, T, F>,
}

impl<Si: Sink<M> + Unpin, M, T: Timer, F: MakeKeepalive<M>> Future
    for KeepaliveSent<'_, Si, M, T, F>
where
    T::Sleep: Unpin,
{
    type Output = Result<(), Si::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut *self.sink).poll_keepalive(cx)
    }
}

impl<Si, M, T: Timer, F> fmt::Debug for KeepaliveSent<'_, Si, M, T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeepaliveSent").finish_non_exhaustive()
    }
}

/// The application's handle to a [`SinkDriver`]: sends messages to it
/// through a bounded channel, in order. The message-level twin of
/// [`FrameSender`](crate::FrameSender); see [`Sender`] for its methods.
pub type MessageSender<M> = Sender<M>;

pin_project! {
    /// Owns a [`KeepaliveSink`]: sends the messages that arrive from its
    /// [`MessageSender`]s and, while none arrive, the keepalives that fall
    /// due. The message-level twin of [`Driver`](crate::Driver).
    ///
    /// It does nothing unless polled, and the library never spawns it: spawn
    /// it on your executor (or `join`/`select` it with your own work). It is
    /// the only owner of the sink, so there is no lock. One timer per
    /// driver, dropped with it.
    ///
    /// It resolves when every [`MessageSender`] is dropped (after sending
    /// what was queued, flushing and closing the sink) with the final
    /// [`SinkStats`], or with the sink's first error. Dropping it cancels
    /// the stream: queued messages are discarded, and the senders get
    /// [`DriverStopped`].
    #[must_use = "futures do nothing unless polled; spawn it"]
    pub struct SinkDriver<Si, M, T: Timer, F = KeepaliveFromBytes> {
        #[pin]
        sink: KeepaliveSink<Si, M, T, F>,
        rx: mpsc::Receiver<Command<M>>,
        buffered: Option<M>,
        // Messages were handed to the sink since its last flush.
        unflushed: bool,
        senders_gone: bool,
    }
}

impl<Si, M, T: Timer, F> SinkDriver<Si, M, T, F> {
    /// The sink, for its [`stats`](KeepaliveSink::stats).
    pub fn sink(&self) -> &KeepaliveSink<Si, M, T, F> {
        &self.sink
    }
}

impl<Si, M, T, F> Future for SinkDriver<Si, M, T, F>
where
    Si: Sink<M>,
    T: Timer,
    F: MakeKeepalive<M>,
{
    type Output = Result<SinkStats, Si::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let mut budget = MESSAGES_PER_POLL;
        loop {
            // 1. Hand over the message in hand.
            if this.buffered.is_some() {
                ready!(this.sink.as_mut().poll_ready(cx))?;
                if let Some(message) = this.buffered.take() {
                    this.sink.as_mut().start_send(message)?;
                    *this.unflushed = true;
                }
            }
            // 2. Take the next one.
            if !*this.senders_gone {
                if budget == 0 {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                match Pin::new(&mut *this.rx).poll_next(cx) {
                    Poll::Ready(Some(Command::Item(message))) => {
                        budget -= 1;
                        *this.buffered = Some(message);
                        continue;
                    }
                    Poll::Ready(Some(Command::PeerSupport(supported))) => {
                        this.sink.as_mut().set_peer_support_pinned(supported);
                        continue;
                    }
                    Poll::Ready(None) => *this.senders_gone = true,
                    Poll::Pending => {}
                }
            }
            if *this.senders_gone {
                ready!(this.sink.as_mut().poll_close(cx))?;
                return Poll::Ready(Ok(this.sink.stats()));
            }
            // 3. Nothing more for now: flush what was sent (a keepalive that
            // is due rides along), then keepalives while idle (they flush
            // themselves).
            if *this.unflushed {
                ready!(this.sink.as_mut().poll_flush(cx))?;
                *this.unflushed = false;
            }
            ready!(this.sink.as_mut().poll_keepalive(cx))?;
        }
    }
}

impl<Si: fmt::Debug, M, T: Timer, F> fmt::Debug for SinkDriver<Si, M, T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkDriver")
            .field("sink", &self.sink)
            .field("sending", &self.buffered.is_some())
            .field("senders_gone", &self.senders_gone)
            .finish_non_exhaustive()
    }
}
