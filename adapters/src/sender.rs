//! The application's end of a [`Driver`](crate::Driver): a bounded channel
//! of items (whole gRPC frames, or messages).

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_channel::mpsc;
use futures_sink::Sink;

/// What travels from the senders to a driver, in order.
pub(crate) enum Command<T> {
    Item(T),
    PeerSupport(bool),
}

/// A bounded channel to a driver; `capacity` as in `futures_channel::mpsc`
/// (at least one item per sender can always be queued).
pub(crate) fn channel<T>(capacity: usize) -> (Sender<T>, mpsc::Receiver<Command<T>>) {
    let (tx, rx) = mpsc::channel(capacity);
    (Sender { tx }, rx)
}

/// The application's handle to a driver: sends items to it through a bounded
/// channel, in order, waiting while the channel is full (back-pressure from
/// a slow transport).
///
/// Items are whole gRPC frames for a driver of a
/// [`KeepaliveWriter`](crate::KeepaliveWriter), messages for one of a
/// [`KeepaliveSink`](crate::KeepaliveSink). Clone it to send from several
/// places; items never interleave below item granularity. Dropping every
/// sender ends the stream: the driver sends what was queued, closes the
/// transport and resolves. It is also a `futures_sink::Sink`, whose
/// `poll_close` counts as dropping this sender: it ends this clone only,
/// and the stream once every sender is dropped or closed.
pub struct Sender<T> {
    tx: mpsc::Sender<Command<T>>,
}

impl<T> Sender<T> {
    /// Sends one item, waiting while the channel is full.
    ///
    /// # Errors
    /// [`DriverStopped`] if the driver has stopped.
    pub async fn send(&mut self, item: T) -> Result<(), DriverStopped> {
        self.send_command(Command::Item(item)).await
    }

    /// Tells the driver whether the peer removes keepalives, for a client
    /// that learns it once the stream runs (from the response headers, or a
    /// probe). Ordered with the items. Until it is `true` nothing is sent;
    /// `false` is final (Waypoint's rule).
    ///
    /// # Errors
    /// [`DriverStopped`] if the driver has stopped.
    pub async fn set_peer_support(&mut self, supported: bool) -> Result<(), DriverStopped> {
        self.send_command(Command::PeerSupport(supported)).await
    }

    async fn send_command(&mut self, command: Command<T>) -> Result<(), DriverStopped> {
        std::future::poll_fn(|cx| self.tx.poll_ready(cx))
            .await
            .map_err(|_| DriverStopped)?;
        self.tx.start_send(command).map_err(|_| DriverStopped)
    }

    /// Whether the driver has stopped, or this sender was closed through
    /// `Sink::poll_close`: either way nothing more can be sent through it.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("closed", &self.tx.is_closed())
            .finish()
    }
}

/// Also a [`Sink`], for `SinkExt::send_all` and friends.
impl<T> Sink<T> for Sender<T> {
    type Error = DriverStopped;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.tx.poll_ready(cx).map_err(|_| DriverStopped)
    }

    fn start_send(mut self: Pin<&mut Self>, item: T) -> Result<(), Self::Error> {
        self.tx
            .start_send(Command::Item(item))
            .map_err(|_| DriverStopped)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    /// Ends this sender only, as dropping it would: the driver goes on for
    /// the other clones. `close_channel` would close the channel they share,
    /// so a `forward` into one clone would stop the stream for all of them.
    fn poll_close(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Result<(), Self::Error>> {
        self.tx.disconnect();
        Poll::Ready(Ok(()))
    }
}

/// The driver has stopped (its transport failed, it finished, or it was
/// dropped), so nothing more can be sent; also what a sender closed through
/// `Sink::poll_close` returns.
///
/// ```
/// use inlinekeepalive::DriverStopped;
/// assert_eq!(DriverStopped.to_string(), "the keepalive driver has stopped");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DriverStopped;

impl fmt::Display for DriverStopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the keepalive driver has stopped")
    }
}

impl std::error::Error for DriverStopped {}

impl From<DriverStopped> for io::Error {
    fn from(e: DriverStopped) -> Self {
        io::Error::new(io::ErrorKind::BrokenPipe, e)
    }
}
