//! [`KeepaliveReader`]: a gRPC byte stream with the peer's keepalives removed.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_io::AsyncRead;
use inlinekeepalive_core::wire::{FRAME_HEADER_LEN, MAX_KEEPALIVE_LEN};
use inlinekeepalive_core::{
    Classification, Config, Encoding, Event, FilterStats, FrameError, FrameFilter, Keepalive,
    Output,
};
use pin_project_lite::pin_project;

use crate::sleep_slot::SleepSlot;
use crate::timer::{NoTimer, Timer};

/// The most bytes the filter ever holds back: a header and a payload that
/// may still be a keepalive.
const HELD_MAX: usize = FRAME_HEADER_LEN + MAX_KEEPALIVE_LEN;

pin_project! {
    /// Reads a gRPC byte stream with the peer's keepalive frames removed.
    ///
    /// Every other frame comes out byte for byte as it arrived, in order.
    /// Bytes are read straight into the caller's buffer and moved only where
    /// a keepalive was cut out; a short frame that straddles two reads is
    /// held back (at most 69 bytes) until it can be classified. Reads of any
    /// size work, down to one byte at a time.
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use futures::io::AsyncReadExt;
    /// use inlinekeepalive::{wire::KEEPALIVE_FRAME, KeepaliveReader};
    ///
    /// let app = [0, 0, 0, 0, 2, 0x08, 0x01]; // one 2-byte gRPC message
    /// let mut wire = KEEPALIVE_FRAME.to_vec();
    /// wire.extend_from_slice(&app);
    /// wire.extend_from_slice(&KEEPALIVE_FRAME);
    ///
    /// let mut reader = KeepaliveReader::new(&wire[..]);
    /// let mut got = Vec::new();
    /// reader.read_to_end(&mut got).await?;
    /// assert_eq!(got, app);
    /// assert_eq!(reader.stats().keepalives_removed, 2);
    /// # Ok::<(), std::io::Error>(()) }).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// Errors of the inner reader are passed through unchanged. A stream
    /// that breaks the gRPC framing fails with an `std::io::Error` whose
    /// [`get_ref`](io::Error::get_ref) is the core's [`FrameError`]
    /// (use `downcast_ref`), and whose message is that error's:
    ///
    /// - a compressed-flag byte other than 0 or 1: [`io::ErrorKind::InvalidData`];
    /// - the stream ends inside a frame: [`io::ErrorKind::UnexpectedEof`].
    ///
    /// Bytes before the broken frame are delivered first, exactly once; the
    /// error is then returned by every later read (it is sticky). With
    /// [dead-peer detection](Self::detect_dead_peer), a silent peer fails a
    /// read with [`io::ErrorKind::TimedOut`] carrying a [`PeerTimedOut`].
    ///
    /// # Dead-peer detection
    ///
    /// Optional, and it needs a [`Timer`]: see
    /// [`detect_dead_peer`](Self::detect_dead_peer). Without it the reader
    /// never reads a clock and owns no timer.
    pub struct KeepaliveReader<R, T: Timer = NoTimer> {
        #[pin]
        inner: R,
        filter: FrameFilter,
        // Output bytes of a held frame that did not fit a small caller
        // buffer: `pending[start..end]`.
        pending: [u8; HELD_MAX],
        pending_start: u8,
        pending_end: u8,
        state: ReadState,
        // Whether any byte was fed to the filter (the encoding is then fixed).
        started: bool,
        #[pin]
        peer: Option<PeerWatch<T>>,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadState {
    Reading,
    /// The inner reader ended at a frame boundary.
    Eof,
    /// Sticky failure.
    Failed(Failure),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    Frame(FrameError),
    PeerTimedOut(Duration),
    /// A broken invariant of this crate; reported, never a panic.
    Internal(&'static str),
}

impl Failure {
    fn to_io(self) -> io::Error {
        match self {
            Failure::Frame(e @ FrameError::Truncated { .. }) => {
                io::Error::new(io::ErrorKind::UnexpectedEof, e)
            }
            Failure::Frame(e) => io::Error::new(io::ErrorKind::InvalidData, e),
            Failure::PeerTimedOut(silent_for) => {
                io::Error::new(io::ErrorKind::TimedOut, PeerTimedOut { silent_for })
            }
            Failure::Internal(what) => {
                io::Error::other(format!("inlinekeepalive bug: {what}; please report it"))
            }
        }
    }
}

/// The peer sent nothing, not even a keepalive, for longer than the peer
/// timeout: the inner error of the [`io::ErrorKind::TimedOut`] error that a
/// [`KeepaliveReader`] with dead-peer detection returns.
///
/// ```
/// use std::time::Duration;
/// use inlinekeepalive::PeerTimedOut;
///
/// let e = PeerTimedOut::new(Duration::from_secs(45));
/// assert_eq!(e.silent_for, Duration::from_secs(45));
/// assert_eq!(e.to_string(), "peer sent nothing, not even a keepalive, for 45s");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct PeerTimedOut {
    /// How long the peer had been silent when it was noticed.
    pub silent_for: Duration,
}

impl fmt::Display for PeerTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "peer sent nothing, not even a keepalive, for {:?}",
            self.silent_for
        )
    }
}

impl PeerTimedOut {
    /// The error for a peer silent for `silent_for`.
    #[must_use]
    pub fn new(silent_for: Duration) -> Self {
        Self { silent_for }
    }
}

impl std::error::Error for PeerTimedOut {}

pin_project! {
    /// Dead-peer detection: the state machine (receive side only) and its
    /// timer.
    struct PeerWatch<T: Timer> {
        machine: Keepalive,
        #[pin]
        slot: SleepSlot<T>,
    }
}

impl<T: Timer> PeerWatch<T> {
    /// Records that bytes arrived (`keepalive`: a keepalive among them).
    fn on_received(self: Pin<&mut Self>, application: bool, keepalive: bool) {
        let this = self.project();
        let now = this.slot.now();
        if application {
            this.machine.on_received(now, Classification::Application);
        }
        if keepalive {
            this.machine.on_received(now, Classification::Keepalive);
        }
    }

    /// Waits for the peer timeout; `Ready` with how long the peer was silent.
    fn poll_timed_out(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Duration> {
        let mut this = self.project();
        loop {
            if let Some(Event::PeerTimedOut { silent_for }) = this.machine.poll_event() {
                return Poll::Ready(silent_for);
            }
            match this.slot.as_mut().poll(cx, this.machine.poll_timeout()) {
                Poll::Ready(now) => {
                    this.machine.handle_timeout(now);
                    // Re-arm from the instant just read: no second read.
                    this.slot.as_mut().arm(now, this.machine.poll_timeout());
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// The peer finished: stop watching and release the timer.
    fn close(self: Pin<&mut Self>) {
        let this = self.project();
        this.machine.close_receive();
        this.slot.release();
    }
}

impl<R> KeepaliveReader<R> {
    /// Wraps `reader`, a stream without `grpc-encoding` (or `identity`).
    ///
    /// ```
    /// use inlinekeepalive::KeepaliveReader;
    /// let reader = KeepaliveReader::new(futures::io::empty());
    /// assert_eq!(reader.stats().frames_passed, 0);
    /// ```
    #[must_use]
    pub fn new(reader: R) -> Self {
        Self {
            inner: reader,
            filter: FrameFilter::new(),
            pending: [0; HELD_MAX],
            pending_start: 0,
            pending_end: 0,
            state: ReadState::Reading,
            started: false,
            peer: None,
        }
    }

    /// Turns on dead-peer detection: when nothing at all, application data
    /// or keepalive, arrives for `config`'s peer timeout, a read fails with
    /// [`io::ErrorKind::TimedOut`] (inner error [`PeerTimedOut`]). The error
    /// is sticky.
    ///
    /// Only ask for it when the peer sends keepalives (it knows that you
    /// remove them, and its interval is well below the timeout); otherwise a
    /// quiet but healthy stream would be reported. Without a peer timeout in
    /// `config` this only costs a clock read per read.
    ///
    /// ```
    /// use std::time::Duration;
    /// use inlinekeepalive::{core::Config, timer::FuturesTimer, KeepaliveReader};
    ///
    /// let config = Config::new(Duration::from_secs(20))?
    ///     .with_peer_timeout(Duration::from_secs(60))?;
    /// let reader = KeepaliveReader::new(futures::io::empty())
    ///     .detect_dead_peer(FuturesTimer, config);
    /// # drop(reader);
    /// # Ok::<(), inlinekeepalive::core::ConfigError>(())
    /// ```
    #[must_use]
    pub fn detect_dead_peer<T: Timer>(self, timer: T, config: Config) -> KeepaliveReader<R, T> {
        let slot = SleepSlot::new(timer);
        let now = slot.now();
        let mut machine = Keepalive::new(config, now);
        machine.expect_peer_keepalives(now, true);
        KeepaliveReader {
            inner: self.inner,
            filter: self.filter,
            pending: self.pending,
            pending_start: self.pending_start,
            pending_end: self.pending_end,
            state: self.state,
            started: self.started,
            peer: Some(PeerWatch { machine, slot }),
        }
    }
}

impl<R, T: Timer> KeepaliveReader<R, T> {
    /// Sets the stream's `grpc-encoding`, which says how frames flagged as
    /// compressed are encoded, so that keepalives a peer sent compressed are
    /// recognised too. Call it before the first read: the encoding belongs to
    /// the whole stream, and once bytes were read it is left unchanged.
    ///
    /// ```
    /// use inlinekeepalive::{Encoding, KeepaliveReader};
    /// let reader = KeepaliveReader::new(futures::io::empty()).encoding(Encoding::Gzip);
    /// assert_eq!(reader.filter().encoding(), Encoding::Gzip);
    /// ```
    #[must_use]
    pub fn encoding(mut self, encoding: Encoding) -> Self {
        if !self.started {
            self.filter = FrameFilter::with_encoding(encoding);
        }
        self
    }

    /// [`encoding`](Self::encoding) from a `grpc-encoding` header value
    /// (`gzip`, `deflate`, `identity`, ...; case-insensitive).
    ///
    /// ```
    /// use inlinekeepalive::{Encoding, KeepaliveReader};
    /// let reader = KeepaliveReader::new(futures::io::empty()).grpc_encoding("deflate");
    /// assert_eq!(reader.filter().encoding(), Encoding::Deflate);
    /// ```
    #[must_use]
    pub fn grpc_encoding(self, value: &str) -> Self {
        self.encoding(Encoding::from_grpc_encoding(value))
    }

    /// Counters: keepalives removed, collisions seen, frames passed on.
    #[must_use]
    pub fn stats(&self) -> FilterStats {
        self.filter.stats()
    }

    /// The frame filter, for its state ([`FrameFilter::is_at_boundary`],
    /// [`FrameFilter::encoding`]).
    #[must_use]
    pub fn filter(&self) -> &FrameFilter {
        &self.filter
    }

    /// The state machine of dead-peer detection, if it is on.
    #[must_use]
    pub fn keepalive(&self) -> Option<&Keepalive> {
        self.peer.as_ref().map(|peer| &peer.machine)
    }

    /// The inner reader.
    #[must_use]
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The inner reader, mutably. Reading from it directly bypasses the
    /// filter and corrupts its view of the frames.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The inner reader, pinned; see [`get_mut`](Self::get_mut).
    pub fn get_pin_mut(self: Pin<&mut Self>) -> Pin<&mut R> {
        self.project().inner
    }

    /// Unwraps the inner reader. Bytes held back inside a partial short frame
    /// (at most 69) and output not yet read are lost.
    #[must_use]
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: fmt::Debug, T: Timer> fmt::Debug for KeepaliveReader<R, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeepaliveReader")
            .field("inner", &self.inner)
            .field("filter", &self.filter)
            .field("state", &self.state)
            .field("dead_peer_detection", &self.peer.is_some())
            .finish_non_exhaustive()
    }
}

/// Runs the filter over `buf[start..end]`, where `buf[..start]` is room for
/// the `start` bytes the filter holds, and compacts what it passes on to the
/// front of `buf`. Returns the length passed on and the error that stopped
/// it, if any (what was passed on before it is valid).
///
/// ```text
/// buf: [ room for held | input read ........ | unused ]
///        0            start                 end
/// ```
///
/// Output never overtakes input: a forwarded range moves left or stays, and
/// held bytes (the `start` old ones plus those taken from this input) fit in
/// front of the input they were taken from.
fn filter_in_place(
    filter: &mut FrameFilter,
    buf: &mut [u8],
    start: usize,
    end: usize,
) -> (usize, Option<Failure>) {
    let mut write = 0;
    let mut read = start;
    while read < end {
        let step = match filter.step(&buf[read..end]) {
            Ok(step) => step,
            Err(e) => return (write, Some(Failure::Frame(e))),
        };
        let consumed = step.consumed;
        match step.output {
            Output::Forward(range) => {
                let (from, len) = (read + range.start, range.len());
                if from != write {
                    buf.copy_within(from..from + len, write);
                }
                write += len;
            }
            Output::Held(bytes) => {
                // Within bounds by the invariant above; checked all the same.
                match buf.get_mut(write..write + bytes.len()) {
                    Some(out) if write + bytes.len() <= read + consumed => {
                        out.copy_from_slice(bytes);
                        write += bytes.len();
                    }
                    _ => {
                        let what = "held bytes would overwrite unread input";
                        return (write, Some(Failure::Internal(what)));
                    }
                }
            }
            Output::Removed | Output::Nothing => {}
        }
        if consumed == 0 {
            break;
        }
        read += consumed;
    }
    (write, None)
}

impl<R: AsyncRead, T: Timer> AsyncRead for KeepaliveReader<R, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut this = self.project();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // 1. Output left over from a small read comes first.
        if *this.pending_start < *this.pending_end {
            let pending =
                &this.pending[usize::from(*this.pending_start)..usize::from(*this.pending_end)];
            let n = pending.len().min(buf.len());
            buf[..n].copy_from_slice(&pending[..n]);
            // n <= HELD_MAX, which fits a u8.
            *this.pending_start += n as u8;
            return Poll::Ready(Ok(n));
        }
        loop {
            match *this.state {
                ReadState::Reading => {}
                ReadState::Eof => return Poll::Ready(Ok(0)),
                ReadState::Failed(failure) => return Poll::Ready(Err(failure.to_io())),
            }
            let held = this.filter.held_len();
            let small = held > 0 && buf.len() <= held;
            // Read after room for the held bytes, so writing them out never
            // overwrites input not yet filtered; while the filter holds a
            // short frame and the caller's buffer cannot even take it, read
            // at most what completes it into a stack buffer.
            let mut stack = [0u8; HELD_MAX];
            let (target, limit): (&mut [u8], usize) = if small {
                let needs = this.filter.held_needs().min(HELD_MAX - held);
                (&mut stack[..], held + needs)
            } else {
                let len = buf.len();
                (&mut *buf, len)
            };
            let read = match this.inner.as_mut().poll_read(cx, &mut target[held..limit]) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    if let Some(peer) = this.peer.as_mut().as_pin_mut() {
                        if let Poll::Ready(silent_for) = peer.poll_timed_out(cx) {
                            let failure = Failure::PeerTimedOut(silent_for);
                            *this.state = ReadState::Failed(failure);
                            return Poll::Ready(Err(failure.to_io()));
                        }
                    }
                    return Poll::Pending;
                }
            };
            if read == 0 {
                *this.state = match this.filter.finish() {
                    Ok(()) => ReadState::Eof,
                    Err(e) => ReadState::Failed(Failure::Frame(e)),
                };
                if let Some(peer) = this.peer.as_mut().as_pin_mut() {
                    peer.close();
                }
                continue;
            }
            *this.started = true;
            let before = this.filter.stats();
            let (passed, error) = filter_in_place(this.filter, target, held, held + read);
            if let Some(peer) = this.peer.as_mut().as_pin_mut() {
                let after = this.filter.stats();
                peer.on_received(
                    passed > 0 || after.frames_passed > before.frames_passed,
                    after.keepalives_removed > before.keepalives_removed,
                );
            }
            if let Some(failure) = error {
                *this.state = ReadState::Failed(failure);
            }
            if passed == 0 {
                // Everything was a keepalive, held back, or an error: read on
                // (returning 0 here would mean end of stream).
                continue;
            }
            if !small {
                return Poll::Ready(Ok(passed));
            }
            let n = passed.min(buf.len());
            buf[..n].copy_from_slice(&stack[..n]);
            let rest = &stack[n..passed];
            this.pending[..rest.len()].copy_from_slice(rest);
            *this.pending_start = 0;
            // rest.len() < HELD_MAX, which fits a u8.
            *this.pending_end = rest.len() as u8;
            return Poll::Ready(Ok(n));
        }
    }
}
