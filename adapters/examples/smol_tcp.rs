//! A gRPC-framed server stream over real loopback TCP on smol.
//!
//! The server sends one message, stays idle for 3.5 keepalive intervals and
//! sends another. Its `Driver` (spawned by us, never by the library) sends
//! keepalives while it is idle; the client's `KeepaliveReader` removes them,
//! so the client reads exactly the two messages.
//!
//! Run: `cargo run -p inlinekeepalive --example smol_tcp --features smol`

use std::time::{Duration, Instant};

use futures::io::AsyncReadExt;
use inlinekeepalive::timer::{AsyncIoTimer, Timer};
use inlinekeepalive::{Config, KeepaliveReader, KeepaliveWriter};

const INTERVAL: Duration = Duration::from_millis(50);

/// A gRPC frame: uncompressed flag, big-endian length, payload.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0];
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    smol::block_on(async {
        let listener = smol::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let started = Instant::now();

        // Server: the client announced `wp-inline-keepalives: true` (in gRPC,
        // request metadata), so the server may send keepalives.
        let server = smol::spawn(async move {
            let (socket, _) = listener.accept().await?;
            let writer = KeepaliveWriter::new(socket, AsyncIoTimer, Config::new(INTERVAL)?)
                .with_peer_support(true);
            let (mut frames, driver) = writer.into_driver(8);
            let driver = smol::spawn(driver); // the stream's only background work
            frames.send(frame(b"hello")).await?;
            AsyncIoTimer
                .sleep_until(Instant::now() + INTERVAL * 7 / 2)
                .await;
            frames.send(frame(b"still here")).await?;
            drop(frames); // end of stream: the driver flushes, closes and resolves
            let writer = driver.await?; // the writer, closed: its stats and socket
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(writer.stats())
        });

        // Client: reads the response stream with keepalives removed.
        let socket = smol::net::TcpStream::connect(addr).await?;
        let mut reader = KeepaliveReader::new(socket);
        let mut received = Vec::new();
        reader.read_to_end(&mut received).await?;
        let sent = server.await.map_err(|e| e.to_string())?;

        let removed = reader.stats().keepalives_removed;
        println!(
            "server: 2 messages and {} keepalives in {:?}",
            sent.keepalives_sent,
            started.elapsed()
        );
        println!(
            "client: {} bytes, {removed} keepalives removed",
            received.len()
        );
        assert_eq!(received, [frame(b"hello"), frame(b"still here")].concat());
        assert!(
            sent.keepalives_sent >= 2,
            "idle 3.5 intervals: expected keepalives"
        );
        assert_eq!(removed, sent.keepalives_sent);
        println!("ok: the application saw its two messages and no keepalive");
        Ok(())
    })
}
