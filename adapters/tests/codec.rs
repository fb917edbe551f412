//! `GrpcCodec` through tokio-util's `FramedRead`/`FramedWrite` (and
//! asynchronous-codec's, with that feature), alone and under the message
//! wrappers: whole messages over every chunking, typed errors with their
//! offsets for bad input, the limit, one frame per message, and a property
//! test against the core's `FrameFilter`.
#![cfg(feature = "tokio")]

mod support;

use std::io::ErrorKind;

use bytes::{Bytes, BytesMut};
use futures::executor::block_on;
use futures::{SinkExt, StreamExt};
use inlinekeepalive::codec::{CodecError, GrpcCodec, Message, DEFAULT_MAX_MESSAGE_SIZE};
use inlinekeepalive::core::{Encoding, FrameError, FrameFilter, Output};
use inlinekeepalive::wire::{self, KEEPALIVE_FRAME, KEEPALIVE_MESSAGE};
use inlinekeepalive::KeepaliveStream;
use proptest::prelude::*;
use support::{compressed_frame, frame, gzip_keepalive, Chunks};
use tokio_util::codec::{Decoder, Encoder, FramedRead, FramedWrite};

/// Everything a `FramedRead` yields: the messages, then the error if any.
fn decode_all(
    wire: &[u8],
    sizes: Vec<usize>,
    codec: GrpcCodec,
) -> (Vec<Message>, Option<CodecError>) {
    let mut framed = FramedRead::new(Chunks::new(wire.to_vec(), sizes), codec);
    let mut messages = Vec::new();
    while let Some(item) = block_on(framed.next()) {
        match item {
            Ok(message) => messages.push(message),
            Err(e) => return (messages, Some(e)),
        }
    }
    (messages, None)
}

/// Application messages of assorted sizes, compressed flags, and the
/// keepalive among them, as frames and as the messages they decode to.
fn assorted() -> (Vec<u8>, Vec<Message>) {
    let messages = vec![
        Message::new(vec![0x08, 0x01]),
        Message::new(Vec::new()),
        Message::new(KEEPALIVE_MESSAGE.to_vec()),
        Message::new(vec![0x0a; 64]),
        Message::compressed(vec![0x1f; 65]),
        Message::new(vec![0x0b; 1024]),
        Message::compressed(Vec::new()),
    ];
    let mut wire = Vec::new();
    let mut codec = GrpcCodec::new();
    let mut buf = BytesMut::new();
    for m in &messages {
        codec.encode(m.clone(), &mut buf).unwrap();
    }
    wire.extend_from_slice(&buf);
    (wire, messages)
}

#[test]
fn decodes_whole_messages_in_order_over_every_chunking() {
    let (wire, expected) = assorted();
    for size in (1..=40).chain([64, 1000, 4096]) {
        let (got, error) = decode_all(&wire, vec![size], GrpcCodec::new());
        assert!(error.is_none(), "chunk {size}: {error:?}");
        assert_eq!(got, expected, "chunk {size}");
    }
    let (got, _) = decode_all(&wire, vec![3, 1, 17, 2, 600], GrpcCodec::new());
    assert_eq!(got, expected);
}

#[test]
fn encodes_one_frame_per_message() {
    let mut codec = GrpcCodec::new();
    let mut out = BytesMut::new();
    codec.encode(Message::new(&b"abc"[..]), &mut out).unwrap();
    assert_eq!(&out[..], wire::frame(b"abc").unwrap());
    out.clear();
    codec
        .encode(Message::compressed(&b"xy"[..]), &mut out)
        .unwrap();
    assert_eq!(&out[..], [1, 0, 0, 0, 2, b'x', b'y']);
    out.clear();
    codec
        .encode(Message::from(&KEEPALIVE_MESSAGE[..]), &mut out)
        .unwrap();
    assert_eq!(&out[..], KEEPALIVE_FRAME, "a sink's keepalive item");

    // Through FramedWrite: each `send` is one frame on the wire.
    let mut framed = FramedWrite::new(Vec::new(), GrpcCodec::new());
    block_on(async {
        framed.send(Message::new(&b"one"[..])).await?;
        framed.send(Message::new(&b""[..])).await?;
        framed.send(Message::new(vec![7; 300])).await
    })
    .unwrap();
    let expected = [frame(b"one"), frame(b""), frame(&[7; 300])].concat();
    assert_eq!(framed.get_ref(), &expected);
}

#[test]
fn a_bad_flag_is_a_typed_error_at_its_offset_after_the_good_messages() {
    let good = [frame(&[0x08, 0x01]), frame(&[1; 100])].concat();
    for flag in [2u8, 3, 0x80, 0xff] {
        let mut bad = frame(&[1, 2, 3]);
        bad[0] = flag;
        let wire = [good.clone(), bad].concat();
        for size in [1, 2, 5, 6, 200] {
            let (got, error) = decode_all(&wire, vec![size], GrpcCodec::new());
            assert_eq!(got.len(), 2, "flag {flag}, chunk {size}");
            match error {
                Some(CodecError::BadFlag { flag: f, offset }) => {
                    assert_eq!((f, offset), (flag, good.len() as u64), "chunk {size}");
                }
                other => panic!("flag {flag}, chunk {size}: {other:?}"),
            }
        }
    }
    // Decoding the broken frame again gives the same error: nothing of it
    // was consumed.
    let mut codec = GrpcCodec::new();
    let mut buf = BytesMut::from(&[7u8][..]);
    for _ in 0..2 {
        let e = codec.decode(&mut buf).unwrap_err();
        assert!(
            matches!(e, CodecError::BadFlag { flag: 7, offset: 0 }),
            "{e:?}"
        );
    }
    let e = std::io::Error::from(codec.decode(&mut buf).unwrap_err());
    assert_eq!(e.kind(), ErrorKind::InvalidData);
    assert_eq!(
        e.to_string(),
        "invalid gRPC compressed-flag 7 (expected 0 or 1) in the frame at byte 0"
    );
    assert!(e.get_ref().unwrap().downcast_ref::<CodecError>().is_some());
}

#[test]
fn a_length_over_the_limit_is_a_typed_error_and_reserves_nothing() {
    assert_eq!(
        GrpcCodec::new().max_message_size(),
        DEFAULT_MAX_MESSAGE_SIZE
    );
    assert_eq!(DEFAULT_MAX_MESSAGE_SIZE, 4 << 20);
    let good = frame(b"ok");
    for (max, len) in [
        (DEFAULT_MAX_MESSAGE_SIZE, u32::MAX),
        (DEFAULT_MAX_MESSAGE_SIZE, (4 << 20) + 1),
        (16, 17),
        (2, 3),
    ] {
        let mut wire = good.clone();
        wire.extend_from_slice(&[0]);
        wire.extend_from_slice(&len.to_be_bytes());
        let codec = GrpcCodec::new().with_max_message_size(max);
        let (got, error) = decode_all(&wire, vec![3], codec);
        assert_eq!(got, [Message::new(&b"ok"[..])]);
        match error {
            Some(CodecError::TooLarge {
                len: l,
                max: m,
                offset,
            }) => {
                assert_eq!((l, m, offset), (len, max, good.len() as u64));
            }
            other => panic!("{other:?}"),
        }
        // Straight on a buffer: the header stays, nothing was reserved.
        let mut codec = GrpcCodec::new().with_max_message_size(max);
        let mut buf = BytesMut::with_capacity(16);
        buf.extend_from_slice(&wire[good.len()..]);
        assert!(codec.decode(&mut buf).is_err());
        assert!(codec.decode(&mut buf).is_err(), "sticky");
        assert_eq!(buf.len(), 5);
        assert!(buf.capacity() < 64, "reserved {} bytes", buf.capacity());
    }
    // A message of exactly the limit passes; room for it is reserved once
    // the header is read, and never more than the limit.
    let mut codec = GrpcCodec::new().with_max_message_size(1000);
    let mut buf = BytesMut::from(&frame(&[5; 1000])[..10]);
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert!(
        buf.capacity() >= 1000 && buf.capacity() < 2048,
        "{}",
        buf.capacity()
    );
    let e = std::io::Error::from(
        GrpcCodec::new()
            .with_max_message_size(3)
            .decode(&mut BytesMut::from(&frame(b"four")[..]))
            .unwrap_err(),
    );
    assert_eq!(e.kind(), ErrorKind::InvalidData);
    assert_eq!(
        e.to_string(),
        "the gRPC frame at byte 0 announces a 4-byte message, over the limit of 3 bytes"
    );
}

#[test]
fn a_stream_that_ends_inside_a_frame_is_truncated() {
    let good = [frame(b"a"), frame(&[2; 70])].concat();
    let last = frame(&[3; 40]);
    // Cut inside the header and inside the payload.
    for cut in [1, 4, 5, 6, 44] {
        let wire = [&good[..], &last[..cut]].concat();
        for size in [1, 3, 1000] {
            let (got, error) = decode_all(&wire, vec![size], GrpcCodec::new());
            assert_eq!(got.len(), 2, "cut {cut}, chunk {size}");
            let expected_missing = if cut < 5 { 5 - cut } else { 45 - cut } as u64;
            match error {
                Some(CodecError::Truncated { offset, missing }) => {
                    assert_eq!((offset, missing), (good.len() as u64, expected_missing));
                }
                other => panic!("cut {cut}, chunk {size}: {other:?}"),
            }
        }
    }
    let mut codec = GrpcCodec::new();
    let mut buf = BytesMut::from(&frame(b"hello")[..7]);
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    let e = std::io::Error::from(codec.decode_eof(&mut buf).unwrap_err());
    assert_eq!(e.kind(), ErrorKind::UnexpectedEof);
    assert_eq!(
        e.to_string(),
        "gRPC stream ended inside the frame at byte 0 (3 more bytes were expected)"
    );
    // A stream that ends at a boundary just ends.
    let (got, error) = decode_all(&good, vec![7], GrpcCodec::new());
    assert_eq!((got.len(), error.is_none()), (2, true));
}

#[test]
fn the_stream_removes_keepalives_and_compressed_ones_under_their_encoding() {
    let gz = gzip_keepalive();
    let wire = [
        frame(b"first"),
        KEEPALIVE_FRAME.to_vec(),
        compressed_frame(&gz),
        frame(b"second"),
    ]
    .concat();
    let collect = |stream: KeepaliveStream<FramedRead<Chunks, GrpcCodec>>| {
        let mut stream = stream;
        let got: Vec<Message> = block_on((&mut stream).map(Result::unwrap).collect());
        (got, stream.stats())
    };
    let framed = || FramedRead::new(Chunks::new(wire.clone(), vec![4]), GrpcCodec::new());

    let (got, stats) = collect(KeepaliveStream::new(framed()).with_grpc_encoding("gzip"));
    assert_eq!(
        got,
        [Message::new(&b"first"[..]), Message::new(&b"second"[..])]
    );
    assert_eq!((stats.keepalives_removed, stats.messages_passed), (2, 2));

    // Without the encoding the compressed keepalive cannot be read: it is
    // delivered, flag and all.
    let (got, stats) = collect(KeepaliveStream::new(framed()));
    assert_eq!(got[1], Message::compressed(gz.clone()));
    assert_eq!((stats.keepalives_removed, stats.messages_passed), (1, 3));
}

/// What the core's `FrameFilter` passes of `wire`, fed whole, cut back into
/// the complete frames it holds, and how many keepalives it removed.
fn filter_messages(wire: &[u8], encoding: Encoding) -> (Vec<Message>, u64, Option<FrameError>) {
    let mut filter = FrameFilter::with_encoding(encoding);
    let mut passed = Vec::new();
    let mut input = wire;
    let mut error = None;
    while !input.is_empty() {
        match filter.step(input) {
            Ok(step) => {
                match step.output {
                    Output::Forward(range) => passed.extend_from_slice(&input[range]),
                    Output::Held(bytes) => passed.extend_from_slice(bytes),
                    Output::Removed | Output::Nothing => {}
                }
                input = &input[step.consumed..];
            }
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    if error.is_none() {
        error = filter.finish().err();
    }
    let mut buf = BytesMut::from(&passed[..]);
    let mut codec = GrpcCodec::new().with_max_message_size(u32::MAX as usize);
    let mut messages = Vec::new();
    while let Ok(Some(m)) = codec.decode(&mut buf) {
        messages.push(m);
    }
    (messages, filter.stats().keepalives_removed, error)
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..=80).prop_map(Message::new),
        1 => proptest::collection::vec(any::<u8>(), 0..=2000).prop_map(Message::new),
        1 => proptest::collection::vec(any::<u8>(), 0..=80).prop_map(Message::compressed),
        2 => Just(Message::new(KEEPALIVE_MESSAGE.to_vec())),
        1 => Just(Message::compressed(gzip_keepalive())),
        // A collision: field 100000000 as a varint; delivered.
        1 => Just(Message::new(vec![0x80, 0x90, 0xbc, 0xfd, 0x02, 0x01])),
    ]
}

/// How the generated stream ends.
#[derive(Clone, Debug)]
enum Tail {
    Clean,
    /// The last `n` bytes are cut off.
    Cut(usize),
    /// A frame with this flag (2..=255) follows.
    BadFlag(u8),
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Messages are never dropped, duplicated or reordered: a
    /// `KeepaliveStream` over the codec, fed in random chunks, delivers
    /// exactly the frames that the core's `FrameFilter` passes on when it is
    /// fed the same bytes whole, and removes as many keepalives; a broken
    /// tail gives the same kind of error in both.
    #[test]
    fn the_codec_under_a_stream_equals_the_core_filter(
        messages in proptest::collection::vec(message(), 0..24),
        sizes in proptest::collection::vec(prop_oneof![1usize..=8, 1usize..=300, 1usize..=9000], 1..6),
        gzip in any::<bool>(),
        tail in prop_oneof![
            3 => Just(Tail::Clean),
            1 => (1usize..=40).prop_map(Tail::Cut),
            1 => (2u8..=255).prop_map(Tail::BadFlag),
        ],
    ) {
        let mut codec = GrpcCodec::new();
        let mut buf = BytesMut::new();
        for m in &messages {
            codec.encode(m.clone(), &mut buf).unwrap();
        }
        let mut wire = buf.to_vec();
        match tail {
            Tail::Clean => {}
            Tail::Cut(n) => wire.truncate(wire.len().saturating_sub(n)),
            Tail::BadFlag(flag) => wire.extend_from_slice(&[flag, 0, 0, 0, 1, 0]),
        }
        let encoding = if gzip { Encoding::Gzip } else { Encoding::Identity };

        let (want, want_removed, want_error) = filter_messages(&wire, encoding);

        let framed = FramedRead::new(Chunks::new(wire.clone(), sizes), GrpcCodec::new());
        let mut stream = KeepaliveStream::new(framed).with_encoding(encoding);
        let mut got = Vec::new();
        let mut got_error = None;
        while let Some(item) = block_on(stream.next()) {
            match item {
                Ok(m) => got.push(m),
                Err(e) => {
                    got_error = e.into_transport();
                    break;
                }
            }
        }
        prop_assert_eq!(&got, &want);
        prop_assert_eq!(stream.stats().keepalives_removed, want_removed);
        prop_assert_eq!(stream.stats().messages_passed, got.len() as u64);
        match (want_error, got_error) {
            (None, None) => {}
            (Some(FrameError::BadFlag(a)), Some(CodecError::BadFlag { flag, .. })) => {
                prop_assert_eq!(a, flag);
            }
            (Some(FrameError::Truncated { .. }), Some(CodecError::Truncated { .. })) => {}
            (want, got) => prop_assert!(false, "filter {:?}, codec {:?}", want, got),
        }
    }
}

#[cfg(feature = "asynchronous-codec")]
#[test]
fn asynchronous_codec_frames_the_same_messages() {
    let (wire, expected) = assorted();
    for size in [1, 7, 5000] {
        let framed = asynchronous_codec::FramedRead::new(
            Chunks::new(wire.clone(), vec![size]),
            GrpcCodec::new(),
        );
        let mut stream = KeepaliveStream::new(framed);
        let got: Vec<Message> = block_on((&mut stream).map(Result::unwrap).collect());
        let app: Vec<Message> = expected
            .iter()
            .filter(|m| m.payload() != &KEEPALIVE_MESSAGE[..])
            .cloned()
            .collect();
        assert_eq!(got, app, "chunk {size}");
        assert_eq!(stream.stats().keepalives_removed, 1);
    }
    // Cut short: the typed error, not asynchronous-codec's untyped one.
    let wire = frame(b"hello");
    let mut framed = asynchronous_codec::FramedRead::new(
        Chunks::new(wire[..6].to_vec(), vec![2]),
        GrpcCodec::new(),
    );
    match block_on(framed.next()) {
        Some(Err(CodecError::Truncated {
            offset: 0,
            missing: 4,
        })) => {}
        other => panic!("{other:?}"),
    }
    // Encoding, through asynchronous-codec's FramedWrite.
    let mut framed = asynchronous_codec::FramedWrite::new(Vec::new(), GrpcCodec::new());
    block_on(framed.send(Message::compressed(Bytes::from_static(b"z")))).unwrap();
    assert_eq!(framed.into_inner(), [1, 0, 0, 0, 1, b'z']);
}

/// Dead-peer detection over the codec: a large message that takes several
/// peer timeouts to arrive, in chunks well inside the timeout, is delivered
/// whole (its bytes prove the peer alive, although no message completes);
/// when the bytes stop halfway through the next one, the peer is reported.
#[tokio::test]
async fn a_large_message_arriving_slowly_keeps_a_watched_stream_alive() {
    use std::time::{Duration, Instant};

    use inlinekeepalive::{timer::TokioTimer, KeepaliveError};
    use tokio::io::AsyncWriteExt;

    const TIMEOUT: Duration = Duration::from_millis(300);
    const CHUNK: usize = 1000;
    const GAP: Duration = Duration::from_millis(50);
    let payload = vec![0x42u8; 20 * CHUNK]; // 20 gaps: about 3 timeouts
    let wire = frame(&payload);
    let half_of_the_next = wire[..CHUNK].to_vec();

    let (mut peer, ours) = tokio::io::duplex(64 * 1024);
    let mut stream = KeepaliveStream::new(FramedRead::new(ours, GrpcCodec::new()))
        .detect_dead_peer(TokioTimer, TIMEOUT);
    let sending = tokio::spawn(async move {
        for chunk in wire.chunks(CHUNK) {
            peer.write_all(chunk).await.unwrap();
            tokio::time::sleep(GAP).await;
        }
        // Half of the next message, then silence with the connection open.
        peer.write_all(&half_of_the_next).await.unwrap();
        peer
    });

    let started = Instant::now();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.payload(), &payload[..]);
    assert!(started.elapsed() > 2 * TIMEOUT, "{:?}", started.elapsed());
    let _peer = sending.await.unwrap();

    let silent = Instant::now();
    match stream.next().await {
        Some(Err(KeepaliveError::PeerTimedOut(e))) => assert!(e.silent_for >= TIMEOUT),
        other => panic!("expected the silent peer to be reported, got {other:?}"),
    }
    assert!(silent.elapsed() < 10 * TIMEOUT, "{:?}", silent.elapsed());
    assert!(stream.next().await.is_none());
    assert!(stream.stats().peer_timed_out);
}
