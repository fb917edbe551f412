//! [`Driver`] and [`FrameSender`]: keepalives for a stream whose application
//! may write nothing for a long time, without a hidden task.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_channel::mpsc;
use futures_core::Stream;
use futures_io::AsyncWrite;
use pin_project_lite::pin_project;

use crate::sender::{self, Command, Sender};
use crate::timer::Timer;
use crate::writer::{KeepaliveWriter, WriterStats};

/// How many frames the driver writes in one poll before it yields, so a
/// busy sender cannot starve the other tasks of its executor.
const FRAMES_PER_POLL: usize = 64;

/// The application's handle to a [`Driver`]: sends items of whole gRPC
/// frames to it through a bounded channel.
///
/// Each item is written as is, in order, with keepalives only between items'
/// frames. An item should hold whole frames (a header and its payload; several
/// are fine); the driver follows the framing, so a frame split across items
/// is still never cut by a keepalive, but it holds the keepalives back until
/// the rest arrives. See [`Sender`] for its methods.
pub type FrameSender<B = Vec<u8>> = Sender<B>;

pin_project! {
    /// Owns a [`KeepaliveWriter`] and its transport: writes the frames that
    /// arrive from its [`FrameSender`]s and, while none arrive, the
    /// keepalives that fall due.
    ///
    /// Like hyper's connection future or quinn's `ConnectionDriver`, it does
    /// nothing unless polled, and the library never spawns it: spawn it on
    /// your executor (or `join`/`select` it with your own work). It is the
    /// stream's only owner of the transport, so there is no lock; the
    /// application holds only the channel's sending end. One driver per
    /// stream, one timer per driver, dropped with it.
    ///
    /// It resolves when every [`FrameSender`] is dropped (after writing what
    /// was sent, flushing and closing the transport) with the writer's final
    /// [`WriterStats`], or with the first transport error. Dropping it
    /// cancels the stream: frames not yet written are discarded, and the
    /// senders get [`DriverStopped`].
    ///
    /// Frames are dated as [`KeepaliveWriter`] dates writes (most read no
    /// clock; see its "Activity" section), and the driver reads the clock at
    /// most once per poll for the writes of that poll that need it: they
    /// count as sent at that instant, early by at most the poll's own
    /// duration (microseconds; the poll never waits). The driver polls the
    /// timer whenever its queue is empty, so a keepalive follows the last
    /// frame after between seven eighths of the interval and the interval.
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use std::time::Duration;
    /// use futures::future::join;
    /// use inlinekeepalive::{core::Config, timer::FuturesTimer, wire, KeepaliveWriter};
    ///
    /// let config = Config::new(Duration::from_millis(10))?;
    /// let writer = KeepaliveWriter::new(Vec::new(), FuturesTimer, config)
    ///     .peer_supports_keepalives(true);
    /// let (mut frames, driver) = writer.into_driver(8);
    ///
    /// // On a real executor: `let task = spawn(driver);` and keep the sender.
    /// let app = async move {
    ///     frames.send(vec![0, 0, 0, 0, 1, 0x2a]).await?;
    ///     futures_timer::Delay::new(Duration::from_millis(50)).await; // idle
    ///     frames.send(vec![0, 0, 0, 0, 1, 0x2b]).await?;
    ///     Ok::<_, inlinekeepalive::DriverStopped>(())
    /// }; // `frames` dropped here: the driver finishes
    /// let (sent, stats) = join(app, driver).await;
    /// sent?;
    /// assert!(stats?.keepalives_sent >= 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    #[must_use = "futures do nothing unless polled; spawn it"]
    pub struct Driver<W, T: Timer, B = Vec<u8>> {
        #[pin]
        writer: KeepaliveWriter<W, T>,
        rx: mpsc::Receiver<Command<B>>,
        // The item being written and how much of it is written.
        current: Option<(B, usize)>,
        unflushed: bool,
        senders_gone: bool,
    }
}

impl<W, T: Timer, B> Driver<W, T, B> {
    /// The writer, for its [`stats`](KeepaliveWriter::stats).
    #[must_use]
    pub fn writer(&self) -> &KeepaliveWriter<W, T> {
        &self.writer
    }
}

impl<W, T: Timer, B> fmt::Debug for Driver<W, T, B>
where
    W: fmt::Debug,
    T: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("writer", &self.writer)
            .field("writing", &self.current.is_some())
            .field("senders_gone", &self.senders_gone)
            .finish_non_exhaustive()
    }
}

impl<W: AsyncWrite, T: Timer> KeepaliveWriter<W, T> {
    /// Splits into a [`FrameSender`] for the application and the [`Driver`]
    /// that owns the writer, for an application that may write nothing for
    /// a long time. `capacity` bounds the items queued in the channel (at
    /// least one per sender can always be queued).
    ///
    /// The item type `B` is anything that derefs to bytes (`Vec<u8>`,
    /// `bytes::Bytes`, `&'static [u8]`, ...). See [`Driver`] for an example.
    pub fn into_driver<B: AsRef<[u8]>>(self, capacity: usize) -> (FrameSender<B>, Driver<W, T, B>) {
        let (sender, rx) = sender::channel(capacity);
        let driver = Driver {
            writer: self,
            rx,
            current: None,
            unflushed: false,
            senders_gone: false,
        };
        (sender, driver)
    }
}

impl<W: AsyncWrite, T: Timer, B: AsRef<[u8]>> Future for Driver<W, T, B> {
    type Output = io::Result<WriterStats>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let mut budget = FRAMES_PER_POLL;
        // At most one clock read for the writes of this poll, made by the
        // first write that needs it (see `KeepaliveWriter::poll_write_at`).
        let mut now = None;
        loop {
            // 1. Finish the item in hand.
            if let Some((item, written)) = this.current.as_mut() {
                let bytes = item.as_ref();
                while *written < bytes.len() {
                    let n = ready!(this.writer.as_mut().poll_write_at(
                        cx,
                        &bytes[*written..],
                        &mut now
                    ))?;
                    if n == 0 {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    *written += n;
                }
                *this.current = None;
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
                        this.writer.as_mut().set_peer_support_pinned(supported);
                        continue;
                    }
                    Poll::Ready(None) => *this.senders_gone = true,
                    Poll::Pending => {}
                }
            }
            if *this.senders_gone {
                ready!(this.writer.as_mut().poll_close(cx))?;
                return Poll::Ready(Ok(this.writer.stats()));
            }
            // 3. Nothing more for now: flush, then keepalives while idle.
            if *this.unflushed {
                ready!(this.writer.as_mut().poll_flush(cx))?;
                *this.unflushed = false;
            }
            ready!(this.writer.as_mut().poll_keepalive(cx))?;
        }
    }
}
