//! [`KeepaliveWriter`]: passes gRPC frames through and inserts keepalives
//! between them when the stream is idle.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_io::AsyncWrite;
use inlinekeepalive_core::wire::KEEPALIVE_FRAME;
use inlinekeepalive_core::{Config, FrameError, Instant};
use pin_project_lite::pin_project;

use crate::send::{SendHalf, SendStats};
use crate::timer::Timer;

/// `KEEPALIVE_FRAME.len()`, as the type of the in-flight cursor.
const KEEPALIVE_LEN: u8 = KEEPALIVE_FRAME.len() as u8;

pin_project! {
    /// Passes the application's gRPC frames through to `W` unchanged and
    /// inserts [`KEEPALIVE_FRAME`](crate::wire::KEEPALIVE_FRAME) when the
    /// stream has been idle for the configured interval.
    ///
    /// A keepalive only ever goes in at a frame boundary, never inside an
    /// application frame, and correctly across partial writes: the writer
    /// follows the frame headers it passes (O(1) per frame), and once it
    /// starts a keepalive it finishes all 27 bytes before it accepts
    /// application bytes again.
    ///
    /// Keepalives go out from two places:
    ///
    /// - `poll_write`: a keepalive that is due when the application writes at
    ///   a frame boundary goes first;
    /// - [`poll_keepalive`](Self::poll_keepalive): waits on the timer and
    ///   writes (and flushes) keepalives while the application writes
    ///   nothing. Poll it alongside your own work, or let a
    ///   [`Driver`](crate::Driver) do it (see
    ///   [`into_driver`](Self::into_driver)).
    ///
    /// Implements `futures_io::AsyncWrite`, and with the `tokio` feature
    /// `tokio::io::AsyncWrite` when `W` does.
    ///
    /// # Peer support (Waypoint's rule)
    ///
    /// Nothing is ever sent until the peer is known to remove keepalives:
    /// a server sends them only when the client's request metadata carried
    /// `wp-inline-keepalives: true`; a client only once it knows the server
    /// removes them (configured, seen in the response headers, or listed in
    /// Waypoint's `GetVersionInfo`). Say so with
    /// [`with_peer_support`](Self::with_peer_support) or later with
    /// [`set_peer_support`](Self::set_peer_support). `false` is final.
    ///
    /// # Activity
    ///
    /// Every write that hands application bytes to the transport counts as
    /// activity: under the default [`Policy::Idle`](crate::Policy::Idle) a
    /// busy stream sends no keepalives. Most writes do not read the clock:
    /// the writer samples (see the core's `Keepalive::on_sent_with`), so a
    /// keepalive is never later than the interval after the last write, and
    /// at most an eighth of it earlier, as long as
    /// [`poll_keepalive`](Self::poll_keepalive) is polled whenever the task
    /// is not writing (a [`Driver`](crate::Driver) does).
    ///
    /// # Example
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use std::future::poll_fn;
    /// use std::pin::Pin;
    /// use std::time::Duration;
    /// use futures::io::AsyncWriteExt;
    /// use inlinekeepalive::{timer::FuturesTimer, wire, Config, KeepaliveWriter};
    ///
    /// let config = Config::new(Duration::from_millis(10))?;
    /// let mut writer = KeepaliveWriter::new(Vec::new(), FuturesTimer, config)
    ///     .with_peer_support(true);
    /// writer.write_all(&[0, 0, 0, 0, 2, 0x08, 0x01]).await?; // one message
    /// // Idle: waits ~10 ms, writes a keepalive and flushes.
    /// poll_fn(|cx| Pin::new(&mut writer).poll_keepalive(cx)).await?;
    /// assert!(writer.get_ref().ends_with(&wire::KEEPALIVE_FRAME));
    /// assert_eq!(writer.stats().keepalives_sent, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// Errors of the inner writer are passed through. Bytes that are not a
    /// gRPC stream (a compressed-flag other than 0 or 1) are written, since
    /// the transport already took them, but every later write and
    /// [`poll_keepalive`](Self::poll_keepalive) fails with
    /// [`io::ErrorKind::InvalidInput`] (inner error: the
    /// [`FrameError`](crate::FrameError)), and no keepalive is ever inserted
    /// into a stream the writer cannot follow; flushing and closing still
    /// reach the transport. Writing after `poll_close` fails with
    /// [`io::ErrorKind::BrokenPipe`].
    ///
    /// # Cancellation
    ///
    /// Dropping the writer, at any point (mid-frame, mid-keepalive), drops
    /// its one timer entry with it; closing it releases the timer at once.
    pub struct KeepaliveWriter<W, T: Timer> {
        #[pin]
        inner: W,
        #[pin]
        send: SendHalf<T>,
        // Bytes of KEEPALIVE_FRAME already written while one is in flight;
        // KEEPALIVE_LEN when none is.
        keepalive_written: u8,
        // `poll_keepalive` wrote bytes that still need a flush.
        unflushed: bool,
        closed: bool,
        failed: Option<FrameError>,
    }
}

impl<W, T: Timer> KeepaliveWriter<W, T> {
    /// Wraps `writer`; `timer` schedules keepalives per `config`. Nothing is
    /// sent until the peer is known to support keepalives.
    ///
    /// ```
    /// use inlinekeepalive::{timer::FuturesTimer, Config, KeepaliveWriter};
    /// let writer = KeepaliveWriter::new(futures::io::sink(), FuturesTimer, Config::default());
    /// assert_eq!(writer.stats().keepalives_sent, 0);
    /// ```
    #[must_use]
    pub fn new(writer: W, timer: T, config: Config) -> Self {
        Self {
            inner: writer,
            send: SendHalf::new(timer, config),
            keepalive_written: KEEPALIVE_LEN,
            unflushed: false,
            closed: false,
            failed: None,
        }
    }

    /// This writer, told whether the peer removes keepalives (see the type's
    /// docs for Waypoint's rule): `true` lets keepalives go out, `false` is
    /// final.
    ///
    /// ```
    /// use inlinekeepalive::{timer::FuturesTimer, Config, KeepaliveWriter};
    /// // A server whose client sent `wp-inline-keepalives: true`:
    /// let writer = KeepaliveWriter::new(futures::io::sink(), FuturesTimer, Config::default())
    ///     .with_peer_support(true);
    /// # drop(writer);
    /// ```
    #[must_use]
    pub fn with_peer_support(mut self, supported: bool) -> Self {
        self.send.set_peer_support_unpinned(supported);
        self
    }

    /// Says whether the peer removes keepalives, on a writer in use: for a
    /// client that learns it from the response headers. Through a
    /// [`Driver`](crate::Driver), use [`Sender::set_peer_support`](crate::Sender::set_peer_support).
    pub fn set_peer_support(&mut self, supported: bool) {
        self.send.set_peer_support_unpinned(supported);
    }

    /// [`set_peer_support`](Self::set_peer_support) through a pin (the
    /// driver's).
    pub(crate) fn set_peer_support_pinned(self: Pin<&mut Self>, supported: bool) {
        self.project().send.set_peer_support(supported);
    }

    /// This writer with the jitter of its interval seeded (see
    /// [`Config::with_jitter`]). Without it the seed is derived from the
    /// instant the writer was created, in microseconds, so writers created in
    /// the same microsecond jitter alike: when you open many streams at once
    /// with jitter, give each its own seed (a stream id, or a counter).
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.send = self.send.with_seed(seed);
        self
    }

    /// Counters of what was written.
    #[must_use]
    pub fn stats(&self) -> SendStats {
        self.send.stats()
    }

    /// Whether everything written so far ends at a frame boundary (and no
    /// keepalive is half written): where a keepalive may go in.
    #[must_use]
    pub fn is_at_boundary(&self) -> bool {
        self.send.is_at_boundary() && self.keepalive_written == KEEPALIVE_LEN
    }

    /// Whether the writer holds a runtime timer right now (it does while a
    /// deadline is armed; closing releases it).
    #[must_use]
    pub fn holds_timer(&self) -> bool {
        self.send.holds_timer()
    }

    /// The inner writer.
    #[must_use]
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The inner writer, mutably. Writing to it directly desynchronises the
    /// frame tracking: keepalives could then land inside a frame.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The inner writer, pinned; see [`get_mut`](Self::get_mut).
    pub fn get_pin_mut(self: Pin<&mut Self>) -> Pin<&mut W> {
        self.project().inner
    }

    /// Unwraps the inner writer. A keepalive in flight stays half written:
    /// flush first if that matters.
    #[must_use]
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: AsyncWrite, T: Timer> KeepaliveWriter<W, T> {
    /// Waits until a keepalive is due, writes it and flushes the transport.
    ///
    /// Resolves with `Ok(())` after each keepalive; call it again for the
    /// next. It stays pending while the application is in the middle of a
    /// frame (nothing may be inserted there), while nothing is scheduled (the
    /// peer's support is unknown or refused), and after close. Cancel-safe:
    /// a keepalive started and not finished is completed by the next call to
    /// any poll method.
    ///
    /// Poll it whenever your task is not writing, for example in a `select`
    /// with the source of your messages (`std::future::poll_fn` makes it a
    /// future); or hand the writer to a [`Driver`](crate::Driver). Over a
    /// tokio transport, use [`into_tokio_driver`](Self::into_tokio_driver).
    pub fn poll_keepalive(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_keepalive_via::<ViaFutures>(cx)
    }
}

/// How the writer reaches its inner writer: through futures-io's
/// `AsyncWrite` ([`ViaFutures`]) or tokio's (`ViaTokio`). A type may
/// implement both (`Vec<u8>` does), so the trait is never inferred from the
/// inner type: every entry point names its marker, and the logic below is
/// written once, generic over it.
pub(crate) trait Transport<Io> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>>;
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// futures-io's `poll_close`, tokio's `poll_shutdown`.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

/// The marker of futures-io's `AsyncWrite`.
pub(crate) enum ViaFutures {}

impl<W: AsyncWrite + ?Sized> Transport<ViaFutures> for W {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write(self, cx, buf)
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_flush(self, cx)
    }

    #[inline]
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_close(self, cx)
    }
}

/// The marker of tokio's `AsyncWrite`.
#[cfg(feature = "tokio")]
pub(crate) enum ViaTokio {}

#[cfg(feature = "tokio")]
impl<W: tokio::io::AsyncWrite + ?Sized> Transport<ViaTokio> for W {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        tokio::io::AsyncWrite::poll_write(self, cx, buf)
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::io::AsyncWrite::poll_flush(self, cx)
    }

    #[inline]
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::io::AsyncWrite::poll_shutdown(self, cx)
    }
}

impl<W, T: Timer> KeepaliveWriter<W, T> {
    /// [`poll_keepalive`](Self::poll_keepalive) through either I/O trait.
    pub(crate) fn poll_keepalive_via<Io>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>>
    where
        W: Transport<Io>,
    {
        let mut this = self.project();
        // The instant the timer fired, reused for the send decision and to
        // re-arm: one clock read per keepalive.
        let mut now = None;
        loop {
            if let Some(e) = this.failed {
                return Poll::Ready(Err(sticky_error(Some(*e))));
            }
            if *this.closed {
                // Nothing more is scheduled after close: pending for good,
                // as documented, so a `select` arm on it just goes quiet.
                return Poll::Pending;
            }
            if ready!(finish_keepalive::<Io, W>(
                this.inner.as_mut(),
                cx,
                this.keepalive_written
            ))? {
                *this.unflushed = true;
            }
            if *this.unflushed {
                ready!(Transport::<Io>::poll_flush(this.inner.as_mut(), cx))?;
                *this.unflushed = false;
                return Poll::Ready(Ok(()));
            }
            ready!(this.send.as_mut().poll_due(cx, &mut now));
            if this.send.as_mut().take_keepalive(&mut now) {
                *this.keepalive_written = 0;
            }
        }
    }

    /// `poll_write` with the clock read shared with the caller: `now` is the
    /// instant of this write if the caller already read it (`Some`), and is
    /// filled in here the first time this write needs the time (`None`), so
    /// the caller can pass it on to its next writes.
    ///
    /// [`Driver`](crate::Driver) passes one `now` to every write of one of
    /// its polls: at most one clock read per driver poll. Time does not
    /// meaningfully advance within one poll (its writes never wait, and it
    /// yields after a bounded number of items), so the instant recorded for
    /// the last write of a poll is early by the time the poll took:
    /// microseconds, against keepalive intervals of seconds.
    #[inline]
    pub(crate) fn poll_write_at<Io>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
        now: &mut Option<Instant>,
    ) -> Poll<io::Result<usize>>
    where
        W: Transport<Io>,
    {
        let mut this = self.project();
        check(this.failed, *this.closed)?;
        ready!(finish_keepalive::<Io, W>(
            this.inner.as_mut(),
            cx,
            this.keepalive_written
        ))?;
        // At a boundary, a keepalive that the timer found due goes first.
        if this.send.as_mut().take_keepalive(now) {
            *this.keepalive_written = 0;
            ready!(finish_keepalive::<Io, W>(
                this.inner.as_mut(),
                cx,
                this.keepalive_written
            ))?;
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = ready!(Transport::<Io>::poll_write(this.inner.as_mut(), cx, buf))?;
        let written = &buf[..n.min(buf.len())];
        if !written.is_empty() {
            if let Err(e) = this.send.as_mut().on_bytes_sent(written, now) {
                *this.failed = Some(e);
            }
        }
        Poll::Ready(Ok(n))
    }

    pub(crate) fn poll_flush_via<Io>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>>
    where
        W: Transport<Io>,
    {
        let mut this = self.project();
        ready!(finish_keepalive::<Io, W>(
            this.inner.as_mut(),
            cx,
            this.keepalive_written
        ))?;
        ready!(Transport::<Io>::poll_flush(this.inner.as_mut(), cx))?;
        *this.unflushed = false;
        Poll::Ready(Ok(()))
    }

    /// Closes the send side (no new keepalive; one in flight is finished;
    /// the timer released), then the transport.
    pub(crate) fn poll_close_via<Io>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>>
    where
        W: Transport<Io>,
    {
        let mut this = self.project();
        if !*this.closed {
            this.send.as_mut().close();
            *this.closed = true;
        }
        ready!(finish_keepalive::<Io, W>(
            this.inner.as_mut(),
            cx,
            this.keepalive_written
        ))?;
        Transport::<Io>::poll_close(this.inner, cx)
    }
}

/// The sticky errors. Inlined into every write; the error itself is built
/// out of line.
#[inline]
fn check(failed: &Option<FrameError>, closed: bool) -> io::Result<()> {
    if failed.is_none() && !closed {
        return Ok(());
    }
    Err(sticky_error(*failed))
}

#[cold]
#[inline(never)]
fn sticky_error(failed: Option<FrameError>) -> io::Error {
    match failed {
        Some(e) => io::Error::new(io::ErrorKind::InvalidInput, e),
        None => io::Error::new(
            io::ErrorKind::BrokenPipe,
            "keepalive writer used after close",
        ),
    }
}

/// Writes the rest of the keepalive in flight, if one is. `Ready(Ok(true))`
/// when this call completed one, `Ready(Ok(false))` when none was in flight.
fn finish_keepalive<Io, W: Transport<Io>>(
    mut inner: Pin<&mut W>,
    cx: &mut Context<'_>,
    written: &mut u8,
) -> Poll<io::Result<bool>> {
    if *written >= KEEPALIVE_LEN {
        return Poll::Ready(Ok(false));
    }
    while *written < KEEPALIVE_LEN {
        let rest = &KEEPALIVE_FRAME[usize::from(*written)..];
        let n = ready!(Transport::<Io>::poll_write(inner.as_mut(), cx, rest))?;
        if n == 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "transport accepted no bytes of a keepalive frame",
            )));
        }
        // n <= rest.len() <= 27.
        *written += n.min(rest.len()) as u8;
    }
    Poll::Ready(Ok(true))
}

impl<W: AsyncWrite, T: Timer> AsyncWrite for KeepaliveWriter<W, T> {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // At most one clock read per call, and for most calls none.
        self.poll_write_at::<ViaFutures>(cx, buf, &mut None)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush_via::<ViaFutures>(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_close_via::<ViaFutures>(cx)
    }
}

/// tokio's `AsyncWrite`, over the same code as futures-io's; `poll_shutdown`
/// is `poll_close`.
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
impl<W: tokio::io::AsyncWrite, T: Timer> tokio::io::AsyncWrite for KeepaliveWriter<W, T> {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_at::<ViaTokio>(cx, buf, &mut None)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush_via::<ViaTokio>(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_close_via::<ViaTokio>(cx)
    }
}

impl<W: fmt::Debug, T: Timer + fmt::Debug> fmt::Debug for KeepaliveWriter<W, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeepaliveWriter")
            .field("inner", &self.inner)
            .field("send", &self.send)
            .field("keepalive_written", &self.keepalive_written)
            .finish_non_exhaustive()
    }
}
