//! [`KeepaliveReader`]: a gRPC byte stream with the peer's keepalives removed.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_io::AsyncRead;
use inlinekeepalive_core::wire::{FRAME_HEADER_LEN, MAX_KEEPALIVE_LEN};
use inlinekeepalive_core::{Encoding, FrameError, Output, PeerTimedOut};
use pin_project_lite::pin_project;

use crate::receive::{ReceiveHalf, ReceiveStats, POLL_BUDGET};
use crate::timer::{NoTimer, Timer};

/// The most bytes the filter ever holds back: a header and a payload that
/// may still be a keepalive.
const HELD_MAX: usize = FRAME_HEADER_LEN + MAX_KEEPALIVE_LEN;

pin_project! {
    /// Reads a gRPC byte stream with the peer's keepalive frames removed.
    ///
    /// Implements `futures_io::AsyncRead`, and with the `tokio` feature
    /// `tokio::io::AsyncRead` when `R` does.
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
    /// [`get_ref`](io::Error::get_ref) is a [`FrameError`](crate::FrameError)
    /// (use `downcast_ref`), and whose message is that error's:
    ///
    /// - a compressed-flag byte other than 0 or 1: [`io::ErrorKind::InvalidData`];
    /// - the stream ends inside a frame: [`io::ErrorKind::UnexpectedEof`].
    ///
    /// Bytes before the broken frame are delivered first, exactly once; the
    /// error is then returned by every later read (it is sticky). With
    /// [dead-peer detection](Self::detect_dead_peer), a silent peer fails
    /// reads with [`io::ErrorKind::TimedOut`] carrying a
    /// [`PeerTimedOut`](crate::PeerTimedOut), sticky too.
    ///
    /// # Fairness
    ///
    /// A read that finds only keepalives goes on reading, but after 64 in one
    /// call it wakes its task and returns `Pending`, so a peer that sends
    /// nothing else cannot hold an executor thread.
    ///
    /// # Dead-peer detection
    ///
    /// Optional, and it needs a [`Timer`]: see
    /// [`detect_dead_peer`](Self::detect_dead_peer). Without it the reader
    /// never reads a clock and owns no timer.
    pub struct KeepaliveReader<R, T: Timer = NoTimer> {
        #[pin]
        inner: R,
        #[pin]
        receive: ReceiveHalf<T>,
        // Output bytes of a held frame that did not fit a small caller
        // buffer: `pending[start..end]`.
        pending: [u8; HELD_MAX],
        pending_start: u8,
        pending_end: u8,
        state: ReadState,
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
    PeerTimedOut(PeerTimedOut),
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
            Failure::PeerTimedOut(silence) => io::Error::new(io::ErrorKind::TimedOut, silence),
            Failure::Internal(what) => {
                io::Error::other(format!("inlinekeepalive bug: {what}; please report it"))
            }
        }
    }
}

impl<R> KeepaliveReader<R> {
    /// Wraps `reader`, a stream without `grpc-encoding` (or `identity`).
    ///
    /// ```
    /// use inlinekeepalive::KeepaliveReader;
    /// let reader = KeepaliveReader::new(futures::io::empty());
    /// assert_eq!(reader.stats().messages_passed, 0);
    /// ```
    #[must_use]
    pub fn new(reader: R) -> Self {
        Self {
            inner: reader,
            receive: ReceiveHalf::new(NoTimer, Encoding::Identity),
            pending: [0; HELD_MAX],
            pending_start: 0,
            pending_end: 0,
            state: ReadState::Reading,
        }
    }

    /// Turns on [dead-peer detection](crate#dead-peer-detection): when not a
    /// single byte arrives for `timeout`, reads fail with
    /// [`io::ErrorKind::TimedOut`] (inner error
    /// [`PeerTimedOut`](crate::PeerTimedOut)). The error is sticky. Call it
    /// whenever the peer's support becomes known: what was read so far
    /// keeps its meaning, and the watch starts now.
    ///
    /// Only ask for it when the peer sends keepalives (it knows that you
    /// remove them, and its interval is well below the timeout); otherwise a
    /// quiet but healthy stream would be reported.
    ///
    /// ```
    /// use std::time::Duration;
    /// use inlinekeepalive::{timer::FuturesTimer, KeepaliveReader};
    ///
    /// // The peer sends a keepalive every 20 s: two of its intervals and some.
    /// let reader = KeepaliveReader::new(futures::io::empty())
    ///     .detect_dead_peer(FuturesTimer, Duration::from_secs(45));
    /// # drop(reader);
    /// ```
    #[must_use]
    pub fn detect_dead_peer<T: Timer>(self, timer: T, timeout: Duration) -> KeepaliveReader<R, T> {
        KeepaliveReader {
            inner: self.inner,
            // The filter carries over: bytes already read, and a frame
            // begun, keep their meaning.
            receive: self.receive.with_timer(timer).watch_now(timeout),
            pending: self.pending,
            pending_start: self.pending_start,
            pending_end: self.pending_end,
            state: self.state,
        }
    }
}

impl<R, T: Timer> KeepaliveReader<R, T> {
    /// Sets the stream's `grpc-encoding`, which says how frames flagged as
    /// compressed are encoded, so that keepalives a peer sent compressed are
    /// recognised too. It applies from the next frame on.
    ///
    /// ```
    /// use inlinekeepalive::{core::Encoding, KeepaliveReader};
    /// let reader = KeepaliveReader::new(futures::io::empty()).with_encoding(Encoding::Gzip);
    /// # drop(reader);
    /// ```
    #[must_use]
    pub fn with_encoding(mut self, encoding: Encoding) -> Self {
        self.receive.set_encoding(encoding);
        self
    }

    /// [`with_encoding`](Self::with_encoding) from a `grpc-encoding` header value
    /// (`gzip`, `deflate`, `identity`, ...; case-insensitive).
    ///
    /// ```
    /// use inlinekeepalive::KeepaliveReader;
    /// let reader = KeepaliveReader::new(futures::io::empty()).with_grpc_encoding("deflate");
    /// # drop(reader);
    /// ```
    #[must_use]
    pub fn with_grpc_encoding(self, value: &str) -> Self {
        self.with_encoding(Encoding::from_grpc_encoding(value))
    }

    /// Counters: keepalives removed, collisions seen, frames passed on.
    #[must_use]
    pub fn stats(&self) -> ReceiveStats {
        self.receive.stats()
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
            .field("receive", &self.receive)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// Runs the filter over `buf[start..end]`, where `buf[..start]` is room for
/// the `start` bytes the filter holds, and compacts what it passes on to the
/// front of `buf`. Returns the length passed on and the error that stopped
/// it, if any (what was passed on before it is valid), and how many
/// keepalives it removed.
///
/// ```text
/// buf: [ room for held | input read ........ | unused ]
///        0            start                 end
/// ```
///
/// Output never overtakes input: a forwarded range moves left or stays, and
/// held bytes (the `start` old ones plus those taken from this input) fit in
/// front of the input they were taken from.
fn filter_in_place<T: Timer>(
    mut receive: Pin<&mut ReceiveHalf<T>>,
    buf: &mut [u8],
    start: usize,
    end: usize,
) -> Filtered {
    let mut write = 0;
    let mut removed = 0;
    let mut read = start;
    while read < end {
        let step = match receive.as_mut().step(&buf[read..end]) {
            Ok(step) => step,
            Err(e) => return Filtered::failed(write, removed, Failure::Frame(e)),
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
                        return Filtered::failed(write, removed, Failure::Internal(what));
                    }
                }
            }
            Output::Removed => removed += 1,
            Output::Nothing => {}
        }
        if consumed == 0 {
            break;
        }
        read += consumed;
    }
    Filtered {
        passed: write,
        removed,
        failure: None,
    }
}

/// What [`filter_in_place`] did.
struct Filtered {
    /// Bytes passed on, at the front of the buffer.
    passed: usize,
    /// Keepalives removed.
    removed: u32,
    /// What stopped it, if anything.
    failure: Option<Failure>,
}

impl Filtered {
    fn failed(passed: usize, removed: u32, failure: Failure) -> Self {
        Self {
            passed,
            removed,
            failure: Some(failure),
        }
    }
}

impl<R, T: Timer> KeepaliveReader<R, T> {
    /// The one read loop behind both `AsyncRead` impls; `read_inner` reads
    /// from the inner reader through futures-io's or tokio's trait.
    #[inline]
    fn poll_read_with<F>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
        mut read_inner: F,
    ) -> Poll<io::Result<usize>>
    where
        F: FnMut(Pin<&mut R>, &mut Context<'_>, &mut [u8]) -> Poll<io::Result<usize>>,
    {
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
        let mut removed = 0;
        loop {
            match *this.state {
                ReadState::Reading => {}
                ReadState::Eof => return Poll::Ready(Ok(0)),
                ReadState::Failed(failure) => return Poll::Ready(Err(failure.to_io())),
            }
            if removed >= POLL_BUDGET {
                // Only keepalives so far: let the executor run other tasks.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let (held, held_needs) = this.receive.held();
            let small = held > 0 && buf.len() <= held;
            // Read after room for the held bytes, so writing them out never
            // overwrites input not yet filtered; while the filter holds a
            // short frame and the caller's buffer cannot even take it, read
            // at most what completes it into a stack buffer.
            let mut stack = [0u8; HELD_MAX];
            let (target, limit): (&mut [u8], usize) = if small {
                (&mut stack[..], held + held_needs.min(HELD_MAX - held))
            } else {
                let len = buf.len();
                (&mut *buf, len)
            };
            let read = match read_inner(this.inner.as_mut(), cx, &mut target[held..limit]) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    let silence = ready!(this.receive.as_mut().poll_silence(cx));
                    let failure = Failure::PeerTimedOut(silence);
                    *this.state = ReadState::Failed(failure);
                    return Poll::Ready(Err(failure.to_io()));
                }
            };
            if read == 0 {
                *this.state = match this.receive.as_mut().finish() {
                    Ok(()) => ReadState::Eof,
                    Err(e) => ReadState::Failed(Failure::Frame(e)),
                };
                continue;
            }
            this.receive.as_mut().on_bytes();
            let filtered = filter_in_place(this.receive.as_mut(), target, held, held + read);
            removed += filtered.removed;
            if let Some(failure) = filtered.failure {
                *this.state = ReadState::Failed(failure);
            }
            let passed = filtered.passed;
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

impl<R: AsyncRead, T: Timer> AsyncRead for KeepaliveReader<R, T> {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_read_with(cx, buf, R::poll_read)
    }
}

/// tokio's `AsyncRead`, over the same read loop: the caller's buffer is
/// initialised once (as `tokio_util::compat` does), filtered in place, and
/// the bytes passed on are marked filled.
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
impl<R: tokio::io::AsyncRead, T: Timer> tokio::io::AsyncRead for KeepaliveReader<R, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = ready!(self.poll_read_with(cx, buf.initialize_unfilled(), tokio_read::<R>))?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

/// Reads from a tokio reader into an initialised slice; returns the count.
#[cfg(feature = "tokio")]
#[inline]
fn tokio_read<R: tokio::io::AsyncRead>(
    inner: Pin<&mut R>,
    cx: &mut Context<'_>,
    slice: &mut [u8],
) -> Poll<io::Result<usize>> {
    let mut buf = tokio::io::ReadBuf::new(slice);
    ready!(inner.poll_read(cx, &mut buf))?;
    Poll::Ready(Ok(buf.filled().len()))
}
