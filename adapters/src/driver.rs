//! [`Driver`]: keepalives for a stream whose application may send nothing
//! for a long time, without a hidden task. One loop for both sending
//! wrappers: [`KeepaliveWriter`] (whole gRPC frames) and [`KeepaliveSink`]
//! (messages).

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_channel::mpsc;
use futures_core::Stream;
use futures_io::AsyncWrite;
use futures_sink::Sink;
use inlinekeepalive_core::Instant;
use pin_project_lite::pin_project;

use crate::sender::{self, Command, Sender};
use crate::sink::KeepaliveSink;
use crate::timer::Timer;
#[cfg(feature = "tokio")]
use crate::writer::ViaTokio;
use crate::writer::{KeepaliveWriter, Transport, ViaFutures};

/// How many items the driver hands over in one poll before it yields, so a
/// busy sender cannot starve the other tasks of its executor.
const ITEMS_PER_POLL: usize = 64;

pin_project! {
    /// Owns a sending wrapper, [`KeepaliveWriter`] or [`KeepaliveSink`], and
    /// its transport: sends the items that arrive from its [`Sender`]s and,
    /// while none arrive, the keepalives that fall due.
    ///
    /// Made by [`KeepaliveWriter::into_driver`] (items are whole gRPC frames,
    /// anything that is `AsRef<[u8]>`; `KeepaliveWriter::into_tokio_driver`
    /// over a tokio transport) and [`KeepaliveSink::into_driver`] (items are
    /// messages).
    ///
    /// Like hyper's connection future or quinn's `ConnectionDriver`, it does
    /// nothing unless polled, and the library never spawns it: spawn it on
    /// your executor (or `join`/`select` it with your own work). It is the
    /// stream's only owner of the transport, so there is no lock; the
    /// application holds only the channel's sending end. One driver per
    /// stream, one timer per driver, dropped with it.
    ///
    /// It resolves when every [`Sender`] is dropped (or closed as a `Sink`),
    /// after sending what was queued, flushing and closing the wrapper, with
    /// the wrapper itself: its `stats()`, and the transport through
    /// `into_inner()` (for example to shut a socket down). A transport error
    /// resolves it with that error; the wrapper and its transport are then
    /// dropped, which closes a socket. Dropping it cancels the stream: items
    /// not yet sent are discarded, and the senders get
    /// [`DriverStopped`](crate::DriverStopped), whose cause is what the
    /// driver resolved with.
    ///
    /// The wrapper must be `Unpin` to be handed back; `Box::pin` a transport
    /// that is not.
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use std::time::Duration;
    /// use futures::future::join;
    /// use inlinekeepalive::{timer::FuturesTimer, Config, KeepaliveWriter};
    ///
    /// let config = Config::new(Duration::from_millis(10))?;
    /// let writer = KeepaliveWriter::new(Vec::new(), FuturesTimer, config)
    ///     .with_peer_support(true);
    /// let (mut frames, driver) = writer.into_driver(8);
    ///
    /// // On a real executor: `let task = spawn(driver);` and keep the sender.
    /// let app = async move {
    ///     frames.send(vec![0, 0, 0, 0, 1, 0x2a]).await?;
    ///     futures_timer::Delay::new(Duration::from_millis(50)).await; // idle
    ///     frames.send(vec![0, 0, 0, 0, 1, 0x2b]).await?;
    ///     Ok::<_, inlinekeepalive::DriverStopped>(())
    /// }; // `frames` dropped here: the driver finishes
    /// let (sent, writer) = join(app, driver).await;
    /// sent?;
    /// let writer = writer?;
    /// assert!(writer.stats().keepalives_sent >= 1);
    /// assert_eq!(writer.stats().messages_sent, 2);
    /// let transport: Vec<u8> = writer.into_inner();
    /// # drop(transport);
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    #[must_use = "futures do nothing unless polled; spawn it"]
    pub struct Driver<S, M> {
        // `None` once handed back.
        outlet: Option<S>,
        rx: mpsc::Receiver<Command<M>>,
        // The item being sent and how many of its bytes are written.
        current: Option<(M, usize)>,
        unflushed: bool,
        senders_gone: bool,
        // A writer's loop, instantiated for the I/O trait that the method
        // which made the driver picked; `None` for a sink.
        writer_loop: Option<WriterLoop<S, M>>,
    }
}

/// [`poll_drive`] of a writer, instantiated for futures-io's or tokio's
/// `AsyncWrite`. A transport may implement both (`Vec<u8>` does), so its
/// type cannot pick the trait, and one `Future` impl cannot either: the
/// constructor picks (`into_driver` or `into_tokio_driver`) and the driver
/// keeps the loop it picked.
type WriterLoop<S, M> = fn(Pin<&mut Driver<S, M>>, &mut Context<'_>) -> Poll<io::Result<S>>;

impl<S, M> Driver<S, M> {
    fn new(outlet: S, capacity: usize, writer_loop: Option<WriterLoop<S, M>>) -> (Sender<M>, Self) {
        let (sender, rx) = sender::channel(capacity);
        let driver = Driver {
            outlet: Some(outlet),
            rx,
            current: None,
            unflushed: false,
            senders_gone: false,
            writer_loop,
        };
        (sender, driver)
    }

    /// The wrapper it drives, for its `stats()`; `None` once the driver
    /// resolved.
    #[must_use]
    pub fn get_ref(&self) -> Option<&S> {
        self.outlet.as_ref()
    }
}

impl<S: fmt::Debug, M> fmt::Debug for Driver<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("outlet", &self.outlet)
            .field("sending", &self.current.is_some())
            .field("senders_gone", &self.senders_gone)
            .finish_non_exhaustive()
    }
}

/// What the driver needs of a sending wrapper: the one difference between a
/// byte stream and a message sink is how an item is handed over. `Io` is the
/// I/O trait a writer goes through ([`ViaFutures`] or `ViaTokio`); `()` for a
/// sink.
trait Outlet<M, Io> {
    type Error;

    /// Hands `current` over, taking it out once it is all sent. `now` is the
    /// clock read of this driver poll, shared by its items.
    fn poll_send(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        current: &mut Option<(M, usize)>,
        now: &mut Option<Instant>,
    ) -> Poll<Result<(), Self::Error>>;
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>>;
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>>;
    fn poll_keepalive(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>>;
    fn set_peer_support(self: Pin<&mut Self>, supported: bool);
}

/// The driver's loop.
fn poll_drive<S: Outlet<M, Io> + Unpin, M, Io>(
    driver: Pin<&mut Driver<S, M>>,
    cx: &mut Context<'_>,
) -> Poll<Result<S, S::Error>> {
    let this = driver.project();
    let Some(outlet) = this.outlet.as_mut() else {
        // Polled after it resolved.
        return Poll::Pending;
    };
    let mut outlet = Pin::new(outlet);
    let mut budget = ITEMS_PER_POLL;
    // At most one clock read for the items of this poll.
    let mut now = None;
    loop {
        // 1. Finish the item in hand.
        if this.current.is_some() {
            ready!(outlet.as_mut().poll_send(cx, this.current, &mut now))?;
            *this.unflushed = true;
        }
        // 2. Take the next one.
        if !*this.senders_gone {
            if budget == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            match Pin::new(&mut *this.rx).poll_next(cx) {
                Poll::Ready(Some(Command::Item(item))) => {
                    budget -= 1;
                    *this.current = Some((item, 0));
                    continue;
                }
                Poll::Ready(Some(Command::PeerSupport(supported))) => {
                    outlet.as_mut().set_peer_support(supported);
                    continue;
                }
                Poll::Ready(None) => *this.senders_gone = true,
                Poll::Pending => {}
            }
        }
        if *this.senders_gone {
            ready!(outlet.as_mut().poll_close(cx))?;
            return match this.outlet.take() {
                Some(outlet) => Poll::Ready(Ok(outlet)),
                None => Poll::Pending,
            };
        }
        // 3. Nothing more for now: flush, then keepalives while idle.
        if *this.unflushed {
            ready!(outlet.as_mut().poll_flush(cx))?;
            *this.unflushed = false;
        }
        ready!(outlet.as_mut().poll_keepalive(cx))?;
    }
}

impl<W: AsyncWrite, T: Timer> KeepaliveWriter<W, T> {
    /// Splits into a [`Sender`] for the application and the [`Driver`] that
    /// owns the writer, for an application that may write nothing for a long
    /// time. `capacity` bounds the items queued in the channel (at least one
    /// per sender can always be queued).
    ///
    /// Each item, anything that is `AsRef<[u8]>` (`Vec<u8>`, `bytes::Bytes`,
    /// `&'static [u8]`, ...), is written as is, in order, with keepalives
    /// only between frames. An item should hold whole frames (a header and
    /// its payload; several are fine): a frame split across items is still
    /// never cut by a keepalive, but it holds the keepalives back until the
    /// rest arrives. See [`Driver`] for an example.
    ///
    /// For a transport that speaks tokio's `AsyncWrite` (a tokio socket),
    /// use [`into_tokio_driver`](Self::into_tokio_driver): a type may
    /// implement both traits, so one method cannot pick.
    pub fn into_driver<B: AsRef<[u8]>>(self, capacity: usize) -> (Sender<B>, Driver<Self, B>)
    where
        Self: Unpin,
    {
        let writer_loop = poll_drive::<Self, B, ViaFutures> as WriterLoop<Self, B>;
        Driver::new(self, capacity, Some(writer_loop))
    }
}

#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
impl<W: tokio::io::AsyncWrite, T: Timer> KeepaliveWriter<W, T> {
    /// [`into_driver`](Self::into_driver) for a transport that speaks
    /// tokio's `AsyncWrite`, such as a tokio `TcpStream` or its
    /// `OwnedWriteHalf`: the driver writes, flushes and shuts down through
    /// tokio's trait. Spawn it with `tokio::spawn`.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// use std::time::Duration;
    /// use inlinekeepalive::{timer::TokioTimer, wire, Config, KeepaliveWriter};
    /// use tokio::io::AsyncReadExt;
    ///
    /// let (socket, mut peer) = tokio::io::duplex(1024);
    /// let config = Config::new(Duration::from_millis(10))?;
    /// let writer = KeepaliveWriter::new(socket, TokioTimer, config).with_peer_support(true);
    /// let (mut frames, driver) = writer.into_tokio_driver(8);
    /// let driver = tokio::spawn(driver);
    /// frames.send(wire::frame(b"hello")?).await?;
    /// tokio::time::sleep(Duration::from_millis(50)).await; // idle: keepalives
    /// drop(frames);
    /// let writer = driver.await??; // written, flushed and shut down
    /// assert!(writer.stats().keepalives_sent >= 1);
    ///
    /// let mut received = Vec::new();
    /// peer.read_to_end(&mut received).await?;
    /// assert!(received.starts_with(&wire::frame(b"hello")?));
    /// assert!(received.ends_with(&wire::KEEPALIVE_FRAME));
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    pub fn into_tokio_driver<B: AsRef<[u8]>>(self, capacity: usize) -> (Sender<B>, Driver<Self, B>)
    where
        Self: Unpin,
    {
        let writer_loop = poll_drive::<Self, B, ViaTokio> as WriterLoop<Self, B>;
        Driver::new(self, capacity, Some(writer_loop))
    }
}

impl<W, T, B, Io> Outlet<B, Io> for KeepaliveWriter<W, T>
where
    W: Transport<Io>,
    T: Timer,
    B: AsRef<[u8]>,
{
    type Error = io::Error;

    fn poll_send(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        current: &mut Option<(B, usize)>,
        now: &mut Option<Instant>,
    ) -> Poll<io::Result<()>> {
        if let Some((item, written)) = current.as_mut() {
            let bytes = item.as_ref();
            while *written < bytes.len() {
                let n = ready!(self
                    .as_mut()
                    .poll_write_at::<Io>(cx, &bytes[*written..], now))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *written += n;
            }
        }
        *current = None;
        Poll::Ready(Ok(()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush_via::<Io>(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_close_via::<Io>(cx)
    }

    fn poll_keepalive(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_keepalive_via::<Io>(cx)
    }

    fn set_peer_support(self: Pin<&mut Self>, supported: bool) {
        self.set_peer_support_pinned(supported);
    }
}

impl<W, T, B> Future for Driver<KeepaliveWriter<W, T>, B>
where
    W: Unpin,
    T: Timer,
    T::Sleep: Unpin,
    B: AsRef<[u8]>,
{
    /// The writer, closed, with its stats and transport.
    type Output = io::Result<KeepaliveWriter<W, T>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.writer_loop {
            Some(writer_loop) => writer_loop(self, cx),
            None => Poll::Ready(Err(io::Error::other(
                "inlinekeepalive bug: a writer's driver without its loop; please report it",
            ))),
        }
    }
}

impl<Si: Sink<M>, M, T: Timer> KeepaliveSink<Si, M, T> {
    /// Splits into a [`Sender`] for the application and the [`Driver`] that
    /// owns the sink, for an application that may send nothing for a long
    /// time. `capacity` bounds the messages queued in the channel (at least
    /// one per sender can always be queued). See [`KeepaliveSink`] for an
    /// example.
    pub fn into_driver(self, capacity: usize) -> (Sender<M>, Driver<Self, M>) {
        Driver::new(self, capacity, None)
    }
}

impl<Si: Sink<M>, M, T: Timer> Outlet<M, ()> for KeepaliveSink<Si, M, T> {
    type Error = Si::Error;

    fn poll_send(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        current: &mut Option<(M, usize)>,
        now: &mut Option<Instant>,
    ) -> Poll<Result<(), Si::Error>> {
        ready!(Sink::poll_ready(self.as_mut(), cx))?;
        if let Some((message, _)) = current.take() {
            self.start_send_at(message, now)?;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Si::Error>> {
        Sink::poll_flush(self, cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Si::Error>> {
        Sink::poll_close(self, cx)
    }

    fn poll_keepalive(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Si::Error>> {
        KeepaliveSink::poll_keepalive(self, cx)
    }

    fn set_peer_support(self: Pin<&mut Self>, supported: bool) {
        self.set_peer_support_pinned(supported);
    }
}

impl<Si, M, T> Future for Driver<KeepaliveSink<Si, M, T>, M>
where
    Si: Sink<M> + Unpin,
    T: Timer,
    T::Sleep: Unpin,
{
    /// The sink, closed, with its stats and transport.
    type Output = Result<KeepaliveSink<Si, M, T>, Si::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        poll_drive::<_, _, ()>(self, cx)
    }
}
