//! The error of the message-level wrappers.

use std::error::Error as StdError;
use std::fmt;
use std::io;

use crate::PeerTimedOut;

/// An error item of a [`KeepaliveStream`](crate::KeepaliveStream): either the
/// transport's own error, passed through unchanged, or a silent peer detected
/// by the keepalive state machine.
///
/// Generic over the transport error `E`, so nothing forces your transport into
/// `std::io::Error`; when `E` *is* `io::Error`, `From` converts the whole
/// thing into one (a silent peer becomes [`io::ErrorKind::TimedOut`]).
///
/// ```
/// use std::time::Duration;
/// use futures::{stream, StreamExt};
/// use inlinekeepalive::{timer::FuturesTimer, KeepaliveStream, PeerTimedOut};
///
/// # futures::executor::block_on(async {
/// let silent = stream::pending::<Result<Vec<u8>, std::io::Error>>();
/// let mut stream =
///     KeepaliveStream::new(silent).detect_dead_peer(FuturesTimer, Duration::from_millis(5));
/// let e = stream.next().await.unwrap().unwrap_err();
/// assert!(e.is_peer_timed_out());
/// assert!(e.to_string().starts_with("peer sent nothing"));
///
/// // As an `io::Error`: the same shape as `KeepaliveReader`'s.
/// let io: std::io::Error = e.into();
/// assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);
/// assert!(io.get_ref().unwrap().downcast_ref::<PeerTimedOut>().is_some());
/// # });
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeepaliveError<E> {
    /// The wrapped transport failed; [`source`](StdError::source) is `E`.
    Transport(E),
    /// [Dead-peer detection](crate#dead-peer-detection): nothing at all
    /// arrived from the peer for at least the configured peer timeout. The
    /// stream ends after it.
    PeerTimedOut(PeerTimedOut),
}

impl<E> KeepaliveError<E> {
    /// Whether this is [`KeepaliveError::PeerTimedOut`].
    ///
    /// ```
    /// use inlinekeepalive::KeepaliveError;
    /// assert!(!KeepaliveError::Transport("reset").is_peer_timed_out());
    /// ```
    #[must_use]
    pub fn is_peer_timed_out(&self) -> bool {
        matches!(self, Self::PeerTimedOut(_))
    }

    /// The transport error, if this is one.
    ///
    /// ```
    /// use inlinekeepalive::KeepaliveError;
    /// assert_eq!(KeepaliveError::Transport("reset").into_transport(), Some("reset"));
    /// ```
    #[must_use]
    pub fn into_transport(self) -> Option<E> {
        match self {
            Self::Transport(e) => Some(e),
            Self::PeerTimedOut(_) => None,
        }
    }
}

impl<E> fmt::Display for KeepaliveError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The transport error itself is the `source`, not repeated here.
            Self::Transport(_) => f.write_str("transport error"),
            Self::PeerTimedOut(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl<E: StdError + 'static> StdError for KeepaliveError<E> {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::Transport(e) => Some(e),
            Self::PeerTimedOut(_) => None,
        }
    }
}

/// The transport's error becomes an `io::Error` as it converts on its own
/// (an `io::Error` is returned as it was; a
/// [`CodecError`](crate::codec::CodecError) gets its matching kind); a
/// silent peer becomes an error of kind [`io::ErrorKind::TimedOut`] whose
/// inner error is the [`PeerTimedOut`], exactly as
/// [`KeepaliveReader`](crate::KeepaliveReader) reports it.
impl<E: Into<io::Error>> From<KeepaliveError<E>> for io::Error {
    fn from(e: KeepaliveError<E>) -> Self {
        match e {
            KeepaliveError::Transport(e) => e.into(),
            KeepaliveError::PeerTimedOut(e) => io::Error::new(io::ErrorKind::TimedOut, e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_error_is_the_source() {
        let e = KeepaliveError::Transport(io::Error::new(io::ErrorKind::ConnectionReset, "boom"));
        assert_eq!(e.to_string(), "transport error");
        assert_eq!(e.source().map(ToString::to_string).as_deref(), Some("boom"));
        let io: io::Error = e.into();
        assert_eq!(io.kind(), io::ErrorKind::ConnectionReset);
    }

    /// The codec's errors convert through `CodecError`'s own conversion,
    /// so `?` works in an `io::Result` function over a codec stream.
    #[cfg(any(feature = "tokio", feature = "asynchronous-codec"))]
    #[test]
    fn codec_errors_convert_with_their_kind() {
        use crate::codec::CodecError;
        let e = KeepaliveError::Transport(CodecError::BadFlag { flag: 7, offset: 0 });
        let io: io::Error = e.into();
        assert_eq!(io.kind(), io::ErrorKind::InvalidData);
        assert!(io.get_ref().unwrap().downcast_ref::<CodecError>().is_some());
    }

    #[test]
    fn peer_timeout_has_no_source() {
        let e = KeepaliveError::<io::Error>::PeerTimedOut(PeerTimedOut {
            silent_for: std::time::Duration::from_millis(1500),
        });
        assert!(e.source().is_none());
        assert_eq!(
            e.to_string(),
            "peer sent nothing, not even a keepalive, for 1.5s"
        );
        let io: io::Error = e.into();
        assert_eq!(io.kind(), io::ErrorKind::TimedOut);
        assert_eq!(
            io.to_string(),
            "peer sent nothing, not even a keepalive, for 1.5s"
        );
    }
}
