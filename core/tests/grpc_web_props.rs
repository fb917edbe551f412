//! Property tests of the frame filter and the frame tracker on gRPC-Web
//! response bodies (`Framing::GrpcWeb`), whose last frame carries the
//! trailers (flag `0x80`, or `0x81` compressed).
//!
//! - Keepalives and application frames, then a trailers frame, split at
//!   random chunk boundaries: exactly the application frames and the
//!   trailers frame come out, untouched, and the stream may end there.
//! - Anything after the trailers frame is `FrameError::AfterTrailers`, with
//!   everything before it passed on.
//! - The tracker reports a boundary exactly at message frame ends before the
//!   trailers frame, never from its first byte on.
//! - Random streams built from these pieces (and from bad flags, truncations
//!   and junk) agree with the reference deframer of `inlinekeepalive-testkit`.

use inlinekeepalive_core::wire::{GRPC_WEB_TRAILERS_FLAG, KEEPALIVE_FRAME};
use inlinekeepalive_core::{
    classify, Classification, Encoding, FrameError, FrameFilter, FrameTracker, Framing,
};
use inlinekeepalive_testkit::filter::{check_filter, filter_in_chunks, FilterInput};
use proptest::prelude::*;

fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![flag];
    out.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A message frame: a keepalive, or an application frame (`true`).
fn message() -> impl Strategy<Value = (bool, Vec<u8>)> {
    prop_oneof![
        1 => Just((false, KEEPALIVE_FRAME.to_vec())),
        3 => (0u8..2, proptest::collection::vec(any::<u8>(), 0..=300))
            .prop_filter("random keepalive", |(flag, p)| {
                *flag == 1 || classify(p) != Classification::Keepalive
            })
            .prop_map(|(flag, p)| (true, frame(flag, &p))),
    ]
}

/// A trailers frame: HTTP/1-style header lines, or any bytes when
/// compressed.
fn trailers() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (0u8..=16, ".{0,40}").prop_map(|(status, message)| {
            let text = format!("grpc-status:{status}\r\ngrpc-message:{message}\r\n");
            frame(GRPC_WEB_TRAILERS_FLAG, text.as_bytes())
        }),
        proptest::collection::vec(any::<u8>(), 0..300)
            .prop_map(|p| frame(GRPC_WEB_TRAILERS_FLAG | 1, &p)),
    ]
}

fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(
        prop_oneof![3 => 1usize..=6, 3 => 1usize..=100, 1 => 1usize..=4096],
        1..8,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Exactly the application frames and the trailers frame come out,
    /// untouched, whatever the chunking; the trailers frame ends the body.
    #[test]
    fn trailers_frame_passes_untouched_as_the_last(
        messages in proptest::collection::vec(message(), 0..12),
        trailers in trailers(),
        sizes in chunk_sizes(),
    ) {
        let mut body = Vec::new();
        let mut expected = Vec::new();
        let (mut removed, mut passed) = (0u64, 0u64);
        for (application, frame) in &messages {
            body.extend_from_slice(frame);
            if *application {
                expected.extend_from_slice(frame);
                passed += 1;
            } else {
                removed += 1;
            }
        }
        body.extend_from_slice(&trailers);
        expected.extend_from_slice(&trailers);
        let mut filter = FrameFilter::with_encoding(Encoding::Gzip).with_framing(Framing::GrpcWeb);
        let (out, result) = filter_in_chunks(&mut filter, &body, &sizes);
        prop_assert_eq!(result, Ok(()));
        prop_assert!(out == expected, "output differs ({} vs {} bytes)", out.len(), expected.len());
        prop_assert!(filter.trailers_seen() && filter.is_at_boundary());
        let stats = filter.stats();
        prop_assert_eq!((stats.keepalives_removed, stats.frames_passed), (removed, passed));
    }

    /// Any byte after the trailers frame is a typed error; everything before
    /// it was passed on, and nothing after it.
    #[test]
    fn anything_after_the_trailers_frame_is_an_error(
        messages in proptest::collection::vec(message(), 0..6),
        trailers in trailers(),
        after in prop_oneof![
            message().prop_map(|(_, frame)| frame),
            trailers(),
            proptest::collection::vec(any::<u8>(), 1..20),
        ],
        sizes in chunk_sizes(),
    ) {
        let mut body = Vec::new();
        let mut expected = Vec::new();
        for (application, frame) in &messages {
            body.extend_from_slice(frame);
            if *application {
                expected.extend_from_slice(frame);
            }
        }
        body.extend_from_slice(&trailers);
        expected.extend_from_slice(&trailers);
        body.extend_from_slice(&after);
        let mut filter = FrameFilter::new().with_framing(Framing::GrpcWeb);
        let (out, result) = filter_in_chunks(&mut filter, &body, &sizes);
        prop_assert_eq!(result, Err(FrameError::AfterTrailers));
        prop_assert!(out == expected, "output differs ({} vs {} bytes)", out.len(), expected.len());

        let mut tracker = FrameTracker::new().with_framing(Framing::GrpcWeb);
        let mut offset = 0;
        let mut outcome = Ok(());
        for &size in sizes.iter().cycle() {
            if offset == body.len() || outcome.is_err() {
                break;
            }
            let end = body.len().min(offset + size);
            outcome = tracker.advance(&body[offset..end]);
            offset = end;
        }
        prop_assert_eq!(outcome, Err(FrameError::AfterTrailers));
        prop_assert!(!tracker.is_at_boundary());
    }

    /// A boundary exactly at the end of each message frame (and at the
    /// start), never from the trailers frame's first byte on.
    #[test]
    fn tracker_reports_no_boundary_from_the_trailers_on(
        frames in proptest::collection::vec((0u8..2, 0usize..300), 0..10),
        trailers in trailers(),
        sizes in chunk_sizes(),
    ) {
        let mut body = Vec::new();
        let mut ends = vec![0];
        for (flag, len) in &frames {
            body.extend_from_slice(&frame(*flag, &vec![0xa5; *len]));
            ends.push(body.len());
        }
        let trailers_start = body.len();
        body.extend_from_slice(&trailers);
        let mut tracker = FrameTracker::new().with_framing(Framing::GrpcWeb);
        let mut offset = 0;
        for &size in sizes.iter().cycle() {
            if offset == body.len() {
                break;
            }
            let end = body.len().min(offset + size);
            prop_assert_eq!(tracker.advance(&body[offset..end]), Ok(()));
            offset = end;
            // Every message end is at or before the trailers frame's start.
            prop_assert_eq!(tracker.is_at_boundary(), ends.contains(&offset), "offset {}", offset);
            prop_assert_eq!(tracker.trailers_seen(), offset >= trailers_start + 5, "offset {}", offset);
        }
        prop_assert!(!tracker.is_at_boundary());
        prop_assert_eq!(tracker.frames(), frames.len() as u64);
    }

    /// Plain gRPC keeps rejecting every flag above 1, the trailers flags
    /// included.
    #[test]
    fn plain_grpc_rejects_the_trailers_flags(
        messages in proptest::collection::vec(message(), 0..4),
        trailers in trailers(),
    ) {
        let mut body: Vec<u8> = messages.iter().flat_map(|(_, f)| f.clone()).collect();
        body.extend_from_slice(&trailers);
        let (_, result) = filter_in_chunks(&mut FrameFilter::new(), &body, &[body.len().max(1)]);
        prop_assert_eq!(result, Err(FrameError::BadFlag(trailers[0])));
        let mut tracker = FrameTracker::new();
        prop_assert_eq!(tracker.advance(&body), Err(FrameError::BadFlag(trailers[0])));
    }

    /// Streams of message frames, trailers frames, bad flags and junk in any
    /// order, any encoding and any chunking: the filter agrees with the
    /// reference deframer on every byte, the error and the counters.
    #[test]
    fn filter_agrees_with_the_reference(
        pieces in proptest::collection::vec(prop_oneof![
            4 => message().prop_map(|(_, frame)| frame),
            2 => trailers(),
            1 => (2u8..=255).prop_map(|flag| frame(flag, b"x")),
            1 => proptest::collection::vec(any::<u8>(), 1..8),
        ], 0..8),
        cut in any::<prop::sample::Index>(),
        encoding in prop_oneof![Just(Encoding::Identity), Just(Encoding::Gzip), Just(Encoding::Unknown)],
        sizes in proptest::collection::vec(0u8..=255, 0..6),
    ) {
        let mut stream: Vec<u8> = pieces.concat();
        // Sometimes truncated anywhere.
        if !stream.is_empty() && cut.index(4) == 0 {
            stream.truncate(cut.index(stream.len()));
        }
        for framing in [Framing::GrpcWeb, Framing::Grpc] {
            check_filter(FilterInput { encoding, framing, chunk_sizes: &sizes, stream: &stream });
        }
    }
}
