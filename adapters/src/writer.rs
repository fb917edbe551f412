//! [`KeepaliveWriter`]: passes gRPC frames through and inserts keepalives
//! between them when the stream is idle.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_io::AsyncWrite;
use inlinekeepalive_core::wire::KEEPALIVE_FRAME;
use inlinekeepalive_core::{Config, FrameError, FrameTracker, Instant, Keepalive};
use pin_project_lite::pin_project;

use crate::sleep_slot::SleepSlot;
use crate::timer::Timer;

/// `KEEPALIVE_FRAME.len()`, as the type of the in-flight cursor.
const KEEPALIVE_LEN: u8 = KEEPALIVE_FRAME.len() as u8;

/// Counters of a [`KeepaliveWriter`], from [`KeepaliveWriter::stats`].
///
/// ```
/// use inlinekeepalive::WriterStats;
/// let stats = WriterStats::default();
/// assert_eq!((stats.keepalives_sent, stats.frames_written), (0, 0));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct WriterStats {
    /// Keepalive frames written to the transport in full.
    pub keepalives_sent: u64,
    /// Application frames whose header was written to the transport (the
    /// last one may still be incomplete).
    pub frames_written: u64,
}

pin_project! {
    /// Passes the application's gRPC frames through to `W` unchanged and
    /// inserts [`KEEPALIVE_FRAME`] when the keepalive state machine says the
    /// stream has been idle for too long.
    ///
    /// A keepalive only ever goes in at a frame boundary, never inside an
    /// application frame, and correctly across partial writes: the writer
    /// follows the frames it passes with a [`FrameTracker`] (headers only,
    /// O(1) per frame), and once it starts a keepalive it finishes all 27
    /// bytes before it accepts application bytes again.
    ///
    /// Keepalives go out from two places:
    ///
    /// - [`poll_write`](AsyncWrite::poll_write): a keepalive that is due when
    ///   the application writes at a frame boundary goes first;
    /// - [`poll_keepalive`](Self::poll_keepalive): waits on the timer and
    ///   writes (and flushes) keepalives while the application writes
    ///   nothing. Poll it alongside your own work, or let a
    ///   [`Driver`](crate::Driver) do it (see
    ///   [`into_driver`](Self::into_driver)).
    ///
    /// # Peer support (Waypoint's rule)
    ///
    /// Nothing is ever sent until the peer is known to remove keepalives:
    /// a server sends them only when the client's request metadata carried
    /// `wp-inline-keepalives: true`; a client only once it knows the server
    /// removes them (configured, seen in the response headers, or listed in
    /// Waypoint's `GetVersionInfo`). Say so with
    /// [`peer_supports_keepalives`](Self::peer_supports_keepalives) or later
    /// with [`set_peer_support`](Self::set_peer_support). `false` is final.
    ///
    /// # Activity
    ///
    /// Every write that hands application bytes to the transport counts as
    /// activity: under the default [`Policy::Idle`](crate::core::Policy::Idle)
    /// a busy stream sends no keepalives. A write does not read the clock:
    /// the writer samples (see
    /// [`Keepalive::on_sent_with`](crate::core::Keepalive::on_sent_with)).
    /// The first write after a quiet spell and every 64th in a row read it;
    /// the others only count, and the timer, which wakes once per eighth of
    /// the interval while the stream is busy, dates them. So a keepalive is
    /// never later than `interval` after the last write, and at most an
    /// eighth of the interval earlier, as long as
    /// [`poll_keepalive`](Self::poll_keepalive) is polled whenever the task
    /// is not writing (a [`Driver`](crate::Driver) does).
    ///
    /// Keepalives fall due through the timer, that is in
    /// [`poll_keepalive`](Self::poll_keepalive); `poll_write` inserts one the
    /// timer found due but could not write (the application was mid-frame).
    /// Under [`Policy::Fixed`](crate::core::Policy::Fixed), a keepalive that
    /// falls due while the application writes without ever polling
    /// `poll_keepalive` waits for its next poll: a busy stream needs none to
    /// stay alive.
    ///
    /// # Example
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use std::time::Duration;
    /// use futures::io::AsyncWriteExt;
    /// use inlinekeepalive::{core::Config, timer::FuturesTimer, wire, KeepaliveWriter};
    ///
    /// let config = Config::new(Duration::from_millis(10))?;
    /// let mut writer = KeepaliveWriter::new(Vec::new(), FuturesTimer, config)
    ///     .peer_supports_keepalives(true);
    /// writer.write_all(&[0, 0, 0, 0, 2, 0x08, 0x01]).await?; // one message
    /// writer.keepalive().await?; // idle: waits ~10 ms, writes a keepalive
    /// assert!(writer.get_ref().ends_with(&wire::KEEPALIVE_FRAME));
    /// assert_eq!(writer.stats().keepalives_sent, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// Errors of the inner writer are passed through. Bytes that are not a
    /// gRPC stream (a compressed-flag other than 0 or 1) are written, since
    /// the transport already took them, but every later call fails with
    /// [`io::ErrorKind::InvalidInput`] (inner error: the [`FrameError`]),
    /// and no keepalive is ever inserted into a stream the writer cannot
    /// follow. Writing after [`poll_close`](AsyncWrite::poll_close) fails with
    /// [`io::ErrorKind::BrokenPipe`].
    ///
    /// # Cancellation
    ///
    /// Dropping the writer, at any point (mid-frame, mid-keepalive), drops
    /// its one timer entry with it; closing it releases the timer at once.
    pub struct KeepaliveWriter<W, T: Timer> {
        #[pin]
        inner: W,
        machine: Keepalive,
        tracker: FrameTracker,
        #[pin]
        slot: SleepSlot<T>,
        // Bytes of KEEPALIVE_FRAME already written while one is in flight;
        // KEEPALIVE_LEN when none is.
        keepalive_written: u8,
        // The machine may hold a due keepalive (after handle_timeout or
        // set_peer_support, until the next poll_keepalive).
        maybe_due: bool,
        // poll_keepalive wrote bytes that still need a flush.
        unflushed: bool,
        closed: bool,
        failed: Option<FrameError>,
        stats: WriterStats,
    }
}

impl<W, T: Timer> KeepaliveWriter<W, T> {
    /// Wraps `writer`; `timer` schedules keepalives per `config`. Nothing is
    /// sent until the peer is known to support keepalives.
    ///
    /// ```
    /// use inlinekeepalive::{core::Config, timer::FuturesTimer, KeepaliveWriter};
    /// let writer = KeepaliveWriter::new(futures::io::sink(), FuturesTimer, Config::default());
    /// assert_eq!(writer.stats().keepalives_sent, 0);
    /// ```
    #[must_use]
    pub fn new(writer: W, timer: T, config: Config) -> Self {
        let slot = SleepSlot::new(timer);
        let machine = Keepalive::new(config, slot.now());
        Self {
            inner: writer,
            machine,
            tracker: FrameTracker::new(),
            slot,
            keepalive_written: KEEPALIVE_LEN,
            maybe_due: false,
            unflushed: false,
            closed: false,
            failed: None,
            stats: WriterStats::default(),
        }
    }

    /// Says whether the peer removes keepalives (see the type's docs for
    /// Waypoint's rule): `true` lets keepalives go out, `false` is final.
    ///
    /// ```
    /// use inlinekeepalive::{core::Config, timer::FuturesTimer, KeepaliveWriter};
    /// // A server whose client sent `wp-inline-keepalives: true`:
    /// let writer = KeepaliveWriter::new(futures::io::sink(), FuturesTimer, Config::default())
    ///     .peer_supports_keepalives(true);
    /// # drop(writer);
    /// ```
    #[must_use]
    pub fn peer_supports_keepalives(mut self, supported: bool) -> Self {
        self.set_peer_support(supported);
        self
    }

    /// [`peer_supports_keepalives`](Self::peer_supports_keepalives) on a
    /// writer in use, for a client that learns of the server's support from
    /// the response headers.
    pub fn set_peer_support(&mut self, supported: bool) {
        self.machine.set_peer_support(self.slot.now(), supported);
        self.maybe_due = true;
    }

    /// [`set_peer_support`](Self::set_peer_support) through a pin.
    pub(crate) fn set_peer_support_pinned(self: Pin<&mut Self>, supported: bool) {
        let this = self.project();
        this.machine.set_peer_support(this.slot.now(), supported);
        *this.maybe_due = true;
    }

    /// Seeds the jitter of the keepalive interval (see
    /// [`Config::with_jitter`]); give each stream its own seed when using
    /// jitter.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.machine = self.machine.with_seed(seed);
        self
    }

    /// Counters of what was written.
    #[must_use]
    pub fn stats(&self) -> WriterStats {
        WriterStats {
            frames_written: self.tracker.frames(),
            ..self.stats
        }
    }

    /// The keepalive state machine (for its [`stats`](Keepalive::stats) and
    /// [`poll_timeout`](Keepalive::poll_timeout)).
    #[must_use]
    pub fn keepalive_state(&self) -> &Keepalive {
        &self.machine
    }

    /// Whether everything written so far ends at a frame boundary (and no
    /// keepalive is half written): where a keepalive may go in.
    #[must_use]
    pub fn is_at_boundary(&self) -> bool {
        self.tracker.is_at_boundary() && self.keepalive_written == KEEPALIVE_LEN
    }

    /// Whether the writer holds a runtime timer right now (it does while a
    /// deadline is armed; closing releases it).
    #[must_use]
    pub fn holds_timer(&self) -> bool {
        self.slot.is_allocated()
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
    /// with the source of your messages; or hand the writer to a
    /// [`Driver`](crate::Driver).
    pub fn poll_keepalive(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut this = self.project();
        // The instant the timer fired, reused for the send decision and to
        // re-arm: one clock read per keepalive.
        let mut fired_at = None;
        loop {
            check(this.failed, *this.closed)?;
            if ready!(finish_keepalive(
                this.inner.as_mut(),
                cx,
                this.keepalive_written,
                this.stats
            ))? {
                *this.unflushed = true;
            }
            if *this.unflushed {
                ready!(this.inner.as_mut().poll_flush(cx))?;
                *this.unflushed = false;
                return Poll::Ready(Ok(()));
            }
            // Mid-frame nothing may go in, but the timer still runs: its
            // wake-ups date the application's writes (see `on_sent_with`).
            let at_boundary = this.tracker.is_at_boundary();
            if *this.maybe_due && at_boundary {
                *this.maybe_due = false;
                let now = fired_at.take().unwrap_or_else(|| this.slot.now());
                let sent = this.machine.poll_keepalive(now);
                this.slot.as_mut().arm(now, this.machine.poll_timeout());
                if sent {
                    *this.keepalive_written = 0;
                    continue;
                }
            }
            match this.slot.as_mut().poll(cx, this.machine.poll_timeout()) {
                Poll::Ready(now) => {
                    this.machine.handle_timeout(now);
                    *this.maybe_due = true;
                    fired_at = Some(now);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// [`poll_keepalive`](Self::poll_keepalive) as a future: resolves after
    /// the next keepalive was written and flushed.
    pub fn keepalive(&mut self) -> KeepaliveDue<'_, W, T>
    where
        W: Unpin,
        T::Sleep: Unpin,
    {
        KeepaliveDue { writer: self }
    }
}

/// The future of [`KeepaliveWriter::keepalive`].
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct KeepaliveDue<'a, W, T: Timer> {
    writer: &'a mut KeepaliveWriter<W, T>,
}

impl<W: AsyncWrite + Unpin, T: Timer> std::future::Future for KeepaliveDue<'_, W, T>
where
    T::Sleep: Unpin,
{
    type Output = io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.writer).poll_keepalive(cx)
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
fn finish_keepalive<W: AsyncWrite>(
    mut inner: Pin<&mut W>,
    cx: &mut Context<'_>,
    written: &mut u8,
    stats: &mut WriterStats,
) -> Poll<io::Result<bool>> {
    if *written >= KEEPALIVE_LEN {
        return Poll::Ready(Ok(false));
    }
    while *written < KEEPALIVE_LEN {
        let rest = &KEEPALIVE_FRAME[usize::from(*written)..];
        let n = ready!(inner.as_mut().poll_write(cx, rest))?;
        if n == 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "transport accepted no bytes of a keepalive frame",
            )));
        }
        // n <= rest.len() <= 27.
        *written += n.min(rest.len()) as u8;
    }
    stats.keepalives_sent += 1;
    Poll::Ready(Ok(true))
}

impl<W: AsyncWrite, T: Timer> KeepaliveWriter<W, T> {
    /// [`poll_write`](AsyncWrite::poll_write) with the clock read shared
    /// with the caller: `now` is the instant of this write if the caller
    /// already read it (`Some`), and is filled in here the first time this
    /// write needs the time (`None`), so the caller can pass it on to its
    /// next writes.
    ///
    /// [`Driver`](crate::Driver) passes one `now` to every write of one of
    /// its polls: at most one clock read per driver poll (usually none: the
    /// writer samples), instead of one per item that needs it. Time does not meaningfully
    /// advance within one poll (its writes hand bytes to the transport
    /// without waiting, and it yields after at most `FRAMES_PER_POLL` items),
    /// so the instant recorded for the last write of a poll is early by the
    /// time the poll took: microseconds, against keepalive intervals of
    /// seconds. The only effect is that a keepalive can go out that much
    /// earlier than a full interval after the last write.
    pub(crate) fn poll_write_at(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
        now: &mut Option<Instant>,
    ) -> Poll<io::Result<usize>> {
        let mut this = self.project();
        check(this.failed, *this.closed)?;
        let mut checked = false;
        loop {
            ready!(finish_keepalive(
                this.inner.as_mut(),
                cx,
                this.keepalive_written,
                this.stats
            ))?;
            if checked || !this.tracker.is_at_boundary() {
                break;
            }
            // At a boundary: a keepalive that the timer (or a clock read
            // below) found due goes first. No clock read otherwise: the
            // timer is what finds keepalives due.
            checked = true;
            if *this.maybe_due {
                *this.maybe_due = false;
                let t = *now.get_or_insert_with(|| this.slot.now());
                if this.machine.poll_keepalive(t) {
                    *this.keepalive_written = 0;
                }
            }
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = ready!(this.inner.as_mut().poll_write(cx, buf))?;
        let written = &buf[..n.min(buf.len())];
        if !written.is_empty() {
            if let Err(e) = this.tracker.advance(written) {
                *this.failed = Some(e);
            }
            // The machine reads the clock only for the first write after a
            // quiet spell and every 64th in a row (`Keepalive::on_sent_with`).
            let slot = this.slot.as_ref();
            let read = this
                .machine
                .on_sent_with(|| *now.get_or_insert_with(|| slot.now()));
            if let Some(t) = read {
                // A sampling period may be over already. One that started
                // (its end may be earlier than the sleep) needs no re-arm
                // here: the next `poll_keepalive` sees the new deadline.
                // Arming now would create the sleep, a runtime timer entry,
                // on the first write of every stream, even one that is only
                // ever written to.
                if this.machine.poll_timeout().is_some_and(|at| at <= t) {
                    this.machine.handle_timeout(t);
                    *this.maybe_due = true;
                }
            }
        }
        Poll::Ready(Ok(n))
    }
}

impl<W: AsyncWrite, T: Timer> AsyncWrite for KeepaliveWriter<W, T> {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // At most one clock read per call, and for most calls none.
        self.poll_write_at(cx, buf, &mut None)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut this = self.project();
        ready!(finish_keepalive(
            this.inner.as_mut(),
            cx,
            this.keepalive_written,
            this.stats
        ))?;
        ready!(this.inner.as_mut().poll_flush(cx))?;
        *this.unflushed = false;
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut this = self.project();
        if !*this.closed {
            // No new keepalive from now on; one in flight is finished first.
            this.machine.close_send();
            this.slot.as_mut().release();
            *this.closed = true;
        }
        ready!(finish_keepalive(
            this.inner.as_mut(),
            cx,
            this.keepalive_written,
            this.stats
        ))?;
        this.inner.poll_close(cx)
    }
}

impl<W: fmt::Debug, T: Timer + fmt::Debug> fmt::Debug for KeepaliveWriter<W, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeepaliveWriter")
            .field("inner", &self.inner)
            .field("machine", &self.machine)
            .field("tracker", &self.tracker)
            .field("slot", &self.slot)
            .field("keepalive_written", &self.keepalive_written)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}
