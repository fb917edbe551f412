//! Following an outbound gRPC byte stream to find its frame boundaries.

use crate::filter::{FrameError, Framing, Header};
use crate::wire::{FrameHeader, FRAME_HEADER_LEN};

/// Follows the gRPC frames a sender writes, so it knows when it stands at a
/// frame boundary: the only place where a keepalive frame may be inserted.
///
/// It reads frame headers only and skips payloads, so it costs O(1) per frame
/// whatever the frame's size, and it copies nothing but header bytes that
/// straddle two writes.
///
/// ```
/// use inlinekeepalive_core::FrameTracker;
///
/// let mut tracker = FrameTracker::new();
/// tracker.advance(&[0, 0, 0, 0, 3, 0x08])?; // a header and 1 of 3 payload bytes
/// assert!(!tracker.is_at_boundary());
/// tracker.advance(&[0x01, 0x10])?;
/// assert!(tracker.is_at_boundary());
/// # Ok::<(), inlinekeepalive_core::FrameError>(())
/// ```
///
/// A gRPC-Web response body ends with a trailers frame
/// ([`Framing::GrpcWeb`]): from its first byte on, the tracker reports no
/// boundary again, so nothing is ever inserted after it, and a byte written
/// after it is [`FrameError::AfterTrailers`]:
///
/// ```
/// use inlinekeepalive_core::{FrameError, FrameTracker, Framing};
///
/// let mut tracker = FrameTracker::new().with_framing(Framing::GrpcWeb);
/// tracker.advance(&[0, 0, 0, 0, 1, 0x08])?; // a message
/// assert!(tracker.is_at_boundary());
/// tracker.advance(b"\x80\x00\x00\x00\x0fgrpc-status:0\r\n")?; // the trailers
/// assert!(tracker.trailers_seen() && !tracker.is_at_boundary());
/// assert_eq!(tracker.advance(&[0]), Err(FrameError::AfterTrailers));
/// # Ok::<(), FrameError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct FrameTracker {
    header: [u8; FRAME_HEADER_LEN],
    header_len: u8,
    remaining: u32,
    failed: Option<FrameError>,
    frames: u64,
    framing: Framing,
    /// A gRPC-Web trailers frame has begun: the stream's last.
    ended: bool,
}

impl FrameTracker {
    /// A tracker at the start of a stream, which is a frame boundary.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            header: [0; FRAME_HEADER_LEN],
            header_len: 0,
            remaining: 0,
            failed: None,
            frames: 0,
            framing: Framing::Grpc,
            ended: false,
        }
    }

    /// The same tracker for a stream framed as `framing`: pass
    /// [`Framing::GrpcWeb`] for a gRPC-Web response body, whose last frame
    /// carries the trailers. Call it before the first
    /// [`advance`](Self::advance).
    #[must_use]
    pub const fn with_framing(mut self, framing: Framing) -> Self {
        self.framing = framing;
        self
    }

    /// Whether the header of a gRPC-Web trailers frame has been written: the
    /// stream's last frame has begun, and no boundary will be reported
    /// again. Always `false` under [`Framing::Grpc`].
    #[must_use]
    #[inline]
    pub fn trailers_seen(&self) -> bool {
        self.ended
    }

    /// Records that `bytes` were written to the stream, in order.
    ///
    /// # Errors
    /// [`FrameError::BadFlag`] if the bytes break the framing, and
    /// [`FrameError::AfterTrailers`] if they go on after a gRPC-Web trailers
    /// frame. The tracker then never reports a boundary again, so nothing is
    /// ever inserted into a stream it cannot follow; the error is returned
    /// again on every call.
    #[inline]
    pub fn advance(&mut self, mut bytes: &[u8]) -> Result<(), FrameError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        // The rest of a frame (or of a header) begun in an earlier write.
        if self.remaining > 0 || self.header_len > 0 {
            match self.finish_frame(bytes)? {
                Some(rest) => bytes = rest,
                None => return Ok(()),
            }
        }
        if self.ended {
            return self.after_trailers(bytes);
        }
        // Whole frames from a boundary: one header read per frame, and the
        // frame count kept in a register until the end.
        let mut frames = 0;
        let result = loop {
            let Some(&header) = bytes.first_chunk::<FRAME_HEADER_LEN>() else {
                self.hold_header(bytes);
                break Ok(());
            };
            let len = match FrameHeader::parse(header) {
                Ok(header) => header.len,
                Err(_) => match self.trailers(header) {
                    // The last frame: skip it, then only the end may come.
                    Ok(len) => match bytes[FRAME_HEADER_LEN..].get(len as usize..) {
                        Some(rest) => break self.after_trailers(rest),
                        None => {
                            // Fewer than `len` bytes are left, so this fits.
                            self.remaining = len - (bytes.len() - FRAME_HEADER_LEN) as u32;
                            break Ok(());
                        }
                    },
                    Err(error) => break Err(error),
                },
            };
            frames += 1;
            let payload = &bytes[FRAME_HEADER_LEN..];
            // `len` as usize: a u32 always fits where this crate builds
            // (at least 32-bit targets).
            match payload.get(len as usize..) {
                Some(rest) => bytes = rest,
                None => {
                    // `payload.len() < len`, so the difference fits a u32.
                    self.remaining = len - payload.len() as u32;
                    break Ok(());
                }
            }
        };
        self.frames += frames;
        result
    }

    /// Whether everything written so far ends exactly at a frame boundary.
    #[must_use]
    #[inline]
    pub fn is_at_boundary(&self) -> bool {
        self.header_len == 0 && self.remaining == 0 && self.failed.is_none() && !self.ended
    }

    /// How many message frame headers have been seen (the last frame may
    /// still be incomplete); a gRPC-Web trailers frame is not counted.
    #[must_use]
    #[inline]
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Continues a frame begun in an earlier write: skips what is left of its
    /// payload, or completes its header first. Returns the bytes after the
    /// frame, or `None` when `bytes` ends inside it.
    fn finish_frame<'b>(&mut self, mut bytes: &'b [u8]) -> Result<Option<&'b [u8]>, FrameError> {
        if self.header_len > 0 {
            let at = usize::from(self.header_len);
            let taken = (FRAME_HEADER_LEN - at).min(bytes.len());
            self.header[at..at + taken].copy_from_slice(&bytes[..taken]);
            bytes = &bytes[taken..];
            // taken <= 5.
            self.header_len += taken as u8;
            if usize::from(self.header_len) < FRAME_HEADER_LEN {
                return Ok(None);
            }
            self.header_len = 0;
            match FrameHeader::parse(self.header) {
                Ok(header) => {
                    self.remaining = header.len;
                    self.frames += 1;
                }
                Err(_) => self.remaining = self.trailers(self.header)?,
            }
        }
        let skipped = bytes.len().min(self.remaining as usize);
        // `skipped <= remaining`, which is a u32.
        self.remaining -= skipped as u32;
        if self.remaining > 0 {
            return Ok(None);
        }
        Ok(Some(&bytes[skipped..]))
    }

    /// Keeps the start of a header that the write ended in (fewer than 5
    /// bytes, at a boundary).
    fn hold_header(&mut self, bytes: &[u8]) {
        self.header[..bytes.len()].copy_from_slice(bytes);
        // bytes.len() < 5.
        self.header_len = bytes.len() as u8;
    }

    /// A header that is not a message frame's: the length of a gRPC-Web
    /// trailers frame (and the stream ends with it), or the error.
    #[cold]
    fn trailers(&mut self, header: [u8; FRAME_HEADER_LEN]) -> Result<u32, FrameError> {
        match self.framing.parse(header) {
            Ok(Header::Trailers { len }) => {
                self.ended = true;
                Ok(len)
            }
            // Unreachable: only a header that is not a message's gets here.
            Ok(Header::Message(_)) => Err(self.fail(FrameError::BadFlag(header[0]))),
            Err(error) => Err(self.fail(error)),
        }
    }

    /// What may follow a whole trailers frame: nothing.
    #[cold]
    fn after_trailers(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        if bytes.is_empty() {
            return Ok(());
        }
        Err(self.fail(FrameError::AfterTrailers))
    }

    #[cold]
    fn fail(&mut self, error: FrameError) -> FrameError {
        self.failed = Some(error);
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::KEEPALIVE_FRAME;

    #[test]
    fn boundary_only_between_frames_at_every_split() {
        let mut stream = std::vec::Vec::from(KEEPALIVE_FRAME);
        stream.extend_from_slice(&[0, 0, 0, 0, 0]);
        stream.extend_from_slice(&KEEPALIVE_FRAME);
        let boundaries = [0, 27, 32, 59];
        for split in 0..=stream.len() {
            let mut tracker = FrameTracker::new();
            tracker.advance(&stream[..split]).unwrap();
            assert_eq!(
                tracker.is_at_boundary(),
                boundaries.contains(&split),
                "split {split}"
            );
            tracker.advance(&stream[split..]).unwrap();
            assert!(tracker.is_at_boundary());
            assert_eq!(tracker.frames(), 3);
        }
    }

    #[test]
    fn no_boundary_from_the_grpc_web_trailers_on_at_every_split() {
        let mut body = std::vec::Vec::from(KEEPALIVE_FRAME);
        let trailers = b"\x80\x00\x00\x00\x0fgrpc-status:0\r\n";
        body.extend_from_slice(trailers);
        for split in 0..=body.len() {
            let mut tracker = FrameTracker::new().with_framing(Framing::GrpcWeb);
            tracker.advance(&body[..split]).unwrap();
            assert_eq!(
                tracker.is_at_boundary(),
                split == 0 || split == 27,
                "split {split}"
            );
            assert_eq!(tracker.trailers_seen(), split >= 32, "split {split}");
            tracker.advance(&body[split..]).unwrap();
            assert!(tracker.trailers_seen() && !tracker.is_at_boundary());
            assert_eq!(tracker.frames(), 1, "the trailers are not a message");
            // Anything more, in any write, is an error, and sticks.
            assert_eq!(tracker.advance(&[0]), Err(FrameError::AfterTrailers));
            assert_eq!(tracker.advance(&[]), Err(FrameError::AfterTrailers));
        }
        // In the same write as the trailers, too, and for a zero-length one.
        let mut tracker = FrameTracker::new().with_framing(Framing::GrpcWeb);
        assert_eq!(
            tracker.advance(&[0x81, 0, 0, 0, 0, 0]),
            Err(FrameError::AfterTrailers)
        );
        let mut tracker = FrameTracker::new().with_framing(Framing::GrpcWeb);
        tracker.advance(&[0x80, 0, 0]).unwrap();
        assert_eq!(
            tracker.advance(&[0, 0, 0, 0, 0, 0, 0]),
            Err(FrameError::AfterTrailers)
        );
    }

    #[test]
    fn trailer_flags_are_bad_outside_grpc_web() {
        let mut tracker = FrameTracker::new();
        assert_eq!(
            tracker.advance(&[0x80, 0, 0, 0, 0]),
            Err(FrameError::BadFlag(0x80))
        );
        let mut tracker = FrameTracker::new().with_framing(Framing::GrpcWeb);
        assert_eq!(
            tracker.advance(&[0x82, 0, 0, 0, 0]),
            Err(FrameError::BadFlag(0x82))
        );
    }

    #[test]
    fn bad_flag_poisons() {
        let mut tracker = FrameTracker::new();
        assert_eq!(
            tracker.advance(&[9, 0, 0, 0, 0]),
            Err(FrameError::BadFlag(9))
        );
        assert!(!tracker.is_at_boundary());
        assert_eq!(tracker.advance(&[]), Err(FrameError::BadFlag(9)));
    }
}
