//! `KeepaliveReader` and `KeepaliveWriter` through tokio's own `AsyncRead`
//! and `AsyncWrite` (feature `tokio`), with no compat layer: the same bytes
//! as through futures-io, the driver over a tokio-only transport, and a
//! transport that implements both traits.
#![cfg(feature = "tokio")]

mod support;

use std::time::Duration;

use inlinekeepalive::timer::TokioTimer;
use inlinekeepalive::wire::{self, KEEPALIVE_FRAME};
use inlinekeepalive::{Config, FrameError, KeepaliveReader, KeepaliveWriter};
use support::{frame, MockTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Application frames (short and long) with keepalives between them, and
/// the bytes a reader must pass on.
fn mixed() -> (Vec<u8>, Vec<u8>) {
    let apps = [
        frame(&[0x08, 0x01]),
        frame(&[]),
        frame(&[0x0a; 65]),
        frame(&[0x0b; 3000]),
    ];
    let mut wire = KEEPALIVE_FRAME.to_vec();
    for app in &apps {
        wire.extend_from_slice(app);
        wire.extend_from_slice(&KEEPALIVE_FRAME);
    }
    (wire, apps.concat())
}

#[tokio::test]
async fn the_reader_removes_keepalives_through_tokio_read() {
    let (wire, app) = mixed();
    // Whole, from a slice (tokio's `AsyncRead for &[u8]`).
    let mut reader = KeepaliveReader::new(&wire[..]);
    let mut got = Vec::new();
    reader.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, app);
    assert_eq!(reader.stats().keepalives_removed, 5);

    // In small pieces through a duplex pipe, into buffers of every size,
    // down to one byte, and into a `BytesMut`'s uninitialised spare room.
    for size in [1, 2, 5, 27, 64, 100, 4096] {
        let (mut tx, rx) = tokio::io::duplex(7);
        let feed = tokio::spawn({
            let wire = wire.clone();
            async move { tx.write_all(&wire).await }
        });
        let mut reader = KeepaliveReader::new(rx);
        let mut got = Vec::new();
        let mut buf = vec![0; size];
        loop {
            let n = reader.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        feed.await.unwrap().unwrap();
        assert_eq!(got, app, "buffer {size}");
    }
    let mut reader = KeepaliveReader::new(&wire[..]);
    let mut got = bytes::BytesMut::with_capacity(10);
    while reader.read_buf(&mut got).await.unwrap() > 0 {}
    assert_eq!(&got[..], &app[..]);
}

#[tokio::test]
async fn the_reader_reports_a_broken_stream_as_through_futures_io() {
    let wire = [frame(b"ok"), vec![9, 0, 0, 0, 0]].concat();
    let mut reader = KeepaliveReader::new(&wire[..]);
    let mut buf = [0u8; 64];
    let n = reader.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], frame(b"ok"), "the good bytes first");
    let e = reader.read(&mut buf).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    assert_eq!(
        e.get_ref().and_then(|e| e.downcast_ref::<FrameError>()),
        Some(&FrameError::BadFlag(9))
    );
}

#[tokio::test(start_paused = true)]
async fn the_tokio_driver_sends_keepalives_over_a_tokio_only_transport() {
    let interval = Duration::from_secs(1);
    // `DuplexStream` speaks tokio's `AsyncWrite` only.
    let (socket, peer) = tokio::io::duplex(1 << 16);
    let writer = KeepaliveWriter::new(socket, TokioTimer, Config::new(interval).unwrap())
        .with_peer_support(true);
    let (mut frames, driver) = writer.into_tokio_driver(8);
    let driver = tokio::spawn(driver);
    frames.send(wire::frame(b"hello").unwrap()).await.unwrap();
    tokio::time::sleep(interval * 7 / 2).await;
    frames.send(wire::frame(b"bye").unwrap()).await.unwrap();
    drop(frames);
    let writer = driver.await.unwrap().unwrap();
    let sent = writer.stats().keepalives_sent;
    assert!(sent >= 3, "idle 3.5 intervals: {sent} keepalives");
    assert_eq!(writer.stats().messages_sent, 2);

    // The driver shut the transport down: the peer reads to the end.
    let mut reader = KeepaliveReader::new(peer);
    let mut got = Vec::new();
    reader.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, [frame(b"hello"), frame(b"bye")].concat());
    assert_eq!(reader.stats().keepalives_removed, sent);
}

#[tokio::test]
async fn the_writer_writes_and_shuts_down_through_tokio_write() {
    let (socket, mut peer) = tokio::io::duplex(64);
    let mut writer = KeepaliveWriter::new(socket, MockTimer::new(), Config::default());
    let frames = [frame(b"one"), frame(&[2; 500])].concat();
    let feed = tokio::spawn(async move {
        writer.write_all(&frames).await?;
        writer.flush().await?;
        writer.shutdown().await?;
        // Closed: a later write fails.
        let e = writer.write_all(b"x").await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe);
        Ok::<_, std::io::Error>(writer.stats())
    });
    let mut got = Vec::new();
    peer.read_to_end(&mut got).await.unwrap();
    let stats = feed.await.unwrap().unwrap();
    assert_eq!(got, [frame(b"one"), frame(&[2; 500])].concat());
    assert_eq!(stats.messages_sent, 2);
}

/// `Vec<u8>` implements both traits: the method that makes the driver picks
/// the trait, so either works and nothing is ambiguous.
#[tokio::test(start_paused = true)]
async fn a_transport_with_both_traits_takes_either_driver() {
    let interval = Duration::from_millis(100);
    for tokio_driver in [false, true] {
        let writer = KeepaliveWriter::new(Vec::new(), TokioTimer, Config::new(interval).unwrap())
            .with_peer_support(true);
        let (mut frames, driver) = if tokio_driver {
            writer.into_tokio_driver(4)
        } else {
            writer.into_driver(4)
        };
        let driver = tokio::spawn(driver);
        frames.send(frame(b"a")).await.unwrap();
        tokio::time::sleep(interval * 3 / 2).await;
        drop(frames);
        let writer = driver.await.unwrap().unwrap();
        assert_eq!(
            writer.get_ref(),
            &[frame(b"a"), KEEPALIVE_FRAME.to_vec()].concat(),
            "tokio driver: {tokio_driver}"
        );
    }
    // And both `write_all`s, named by their trait.
    let mut writer = KeepaliveWriter::new(Vec::new(), TokioTimer, Config::default());
    tokio::io::AsyncWriteExt::write_all(&mut writer, &frame(b"t"))
        .await
        .unwrap();
    futures::io::AsyncWriteExt::write_all(&mut writer, &frame(b"f"))
        .await
        .unwrap();
    assert_eq!(writer.get_ref(), &[frame(b"t"), frame(b"f")].concat());
}
