//! Following an outbound gRPC byte stream to find its frame boundaries.

use crate::filter::FrameError;
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
#[derive(Clone, Debug, Default)]
pub struct FrameTracker {
    header: [u8; FRAME_HEADER_LEN],
    header_len: u8,
    remaining: u32,
    failed: Option<FrameError>,
    frames: u64,
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
        }
    }

    /// Records that `bytes` were written to the stream, in order.
    ///
    /// # Errors
    /// [`FrameError::BadFlag`] if the bytes break the framing. The tracker then
    /// never reports a boundary again, so nothing is ever inserted into a
    /// stream it cannot follow; the error is returned again on every call.
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
                Err(flag) => break Err(self.fail(flag.0)),
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
        self.header_len == 0 && self.remaining == 0 && self.failed.is_none()
    }

    /// How many frame headers have been seen (the last frame may still be
    /// incomplete).
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
                Err(flag) => return Err(self.fail(flag.0)),
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

    #[cold]
    fn fail(&mut self, flag: u8) -> FrameError {
        let error = FrameError::BadFlag(flag);
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
