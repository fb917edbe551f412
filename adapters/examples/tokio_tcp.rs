//! The same wrappers under tokio: tokio's sockets speak `tokio::io`, the
//! wrappers speak `futures-io`, and `tokio_util::compat` converts.
//!
//! A server stream over loopback TCP sends a message, idles for 3.5
//! keepalive intervals and sends another; its `Driver` runs on `tokio::spawn`
//! and the client's `KeepaliveReader` removes the keepalives.
//!
//! Run: `cargo run -p inlinekeepalive --example tokio_compat --features tokio`

use std::time::Duration;

use futures::io::AsyncReadExt;
use inlinekeepalive::timer::TokioTimer;
use inlinekeepalive::{Config, KeepaliveReader, KeepaliveWriter};
use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

const INTERVAL: Duration = Duration::from_millis(50);

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0];
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;

    let server = tokio::spawn(async move {
        let (socket, _) = listener.accept().await?;
        let (_read, write) = socket.into_split();
        let writer = KeepaliveWriter::new(write.compat_write(), TokioTimer, Config::new(INTERVAL)?)
            .with_peer_support(true);
        let (mut frames, driver) = writer.into_driver(8);
        let driver = tokio::spawn(driver);
        frames.send(frame(b"hello")).await?;
        tokio::time::sleep(INTERVAL * 7 / 2).await;
        frames.send(frame(b"still here")).await?;
        drop(frames);
        let writer = driver.await??; // the writer, closed: its stats and socket
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(writer.stats())
    });

    let socket = tokio::net::TcpStream::connect(addr).await?;
    let mut reader = KeepaliveReader::new(socket.compat());
    let mut received = Vec::new();
    reader.read_to_end(&mut received).await?;
    let sent = server.await?.map_err(|e| e.to_string())?;

    let removed = reader.stats().keepalives_removed;
    println!(
        "server sent {} keepalives; client removed {removed}",
        sent.keepalives_sent
    );
    assert_eq!(received, [frame(b"hello"), frame(b"still here")].concat());
    assert!(
        sent.keepalives_sent >= 2,
        "idle 3.5 intervals: expected keepalives"
    );
    assert_eq!(removed, sent.keepalives_sent);
    println!("ok: the application saw its two messages and no keepalive");
    Ok(())
}
