//! The byte wrappers under tokio, with tokio's own I/O traits: no compat
//! layer, no futures import.
//!
//! Over loopback TCP, the client sends one request frame through a
//! `KeepaliveWriter` and the server reads it through a `KeepaliveReader`.
//! The server answers with a stream: one message, 3.5 keepalive intervals of
//! silence, another message. Its writer's `Driver` (made by
//! `into_tokio_driver`, spawned with `tokio::spawn`) sends keepalives while
//! it is idle; the client's `KeepaliveReader` removes them, so the client
//! reads exactly the two messages.
//!
//! Run: `cargo run -p inlinekeepalive --example tokio_tcp --features tokio`

use std::time::Duration;

use inlinekeepalive::timer::TokioTimer;
use inlinekeepalive::{wire, Config, KeepaliveReader, KeepaliveWriter};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const INTERVAL: Duration = Duration::from_millis(50);

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The server: reads the request, then streams two messages with a pause.
async fn serve(listener: TcpListener) -> Result<u64, Error> {
    let (socket, _) = listener.accept().await?;
    let (read, write) = socket.into_split();

    // Read the request: the client sent no keepalives, and none would reach
    // us if it had.
    let mut reader = KeepaliveReader::new(read);
    let mut request = vec![0; wire::FRAME_HEADER_LEN + 7];
    reader.read_exact(&mut request).await?;
    assert_eq!(request, wire::frame(b"tail -f")?);

    // The client announced `wp-inline-keepalives: true` (in gRPC, request
    // metadata), so the server may send keepalives.
    let writer =
        KeepaliveWriter::new(write, TokioTimer, Config::new(INTERVAL)?).with_peer_support(true);
    let (mut frames, driver) = writer.into_tokio_driver(8);
    let driver = tokio::spawn(driver); // the stream's only background work
    frames.send(wire::frame(b"hello")?).await?;
    tokio::time::sleep(INTERVAL * 7 / 2).await;
    frames.send(wire::frame(b"still here")?).await?;
    drop(frames); // end of stream: the driver flushes, shuts down and resolves
    let writer = driver.await??; // the writer, closed: its stats and socket
    Ok(writer.stats().keepalives_sent)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(serve(listener));

    // The client: writes its request and reads the stream, keepalives removed.
    let (read, write) = TcpStream::connect(addr).await?.into_split();
    let mut writer = KeepaliveWriter::new(write, TokioTimer, Config::new(INTERVAL)?);
    writer.write_all(&wire::frame(b"tail -f")?).await?;
    writer.flush().await?;
    let mut reader = KeepaliveReader::new(read);
    let mut received = Vec::new();
    reader.read_to_end(&mut received).await?;
    writer.shutdown().await?;
    let sent = server.await??;

    let removed = reader.stats().keepalives_removed;
    println!("server sent {sent} keepalives; client removed {removed}");
    assert_eq!(
        received,
        [wire::frame(b"hello")?, wire::frame(b"still here")?].concat()
    );
    assert!(sent >= 2, "idle 3.5 intervals: expected keepalives");
    assert_eq!(removed, sent);
    println!("ok: tokio's own traits, the two messages and no keepalive");
    Ok(())
}
