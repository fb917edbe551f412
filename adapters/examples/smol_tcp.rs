//! Message-level keepalives on smol over real loopback TCP: the codec frames
//! gRPC messages, the message wrappers add and remove keepalives.
//!
//! The server wraps its socket in `asynchronous_codec::FramedWrite` with
//! `GrpcCodec` and puts a `KeepaliveSink` on top; it sends one message, stays
//! idle for 3.5 keepalive intervals and sends another. The sink's `Driver`
//! (spawned by us, never by the library) sends keepalives while it is idle.
//! The client reads with `FramedRead` and a `KeepaliveStream`, which removes
//! them, so it sees exactly the two messages.
//!
//! Run: `cargo run -p inlinekeepalive --example smol_tcp --features smol,asynchronous-codec`

use std::time::{Duration, Instant};

use asynchronous_codec::{FramedRead, FramedWrite};
use futures::StreamExt;
use inlinekeepalive::codec::{GrpcCodec, Message};
use inlinekeepalive::timer::{AsyncIoTimer, Timer};
use inlinekeepalive::{Config, KeepaliveSink, KeepaliveStream};

const INTERVAL: Duration = Duration::from_millis(50);

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    smol::block_on(async {
        let listener = smol::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let started = Instant::now();

        // Server: the client announced `wp-inline-keepalives: true` (in gRPC,
        // request metadata), so the server may send keepalives.
        let server = smol::spawn(async move {
            let (socket, _) = listener.accept().await?;
            let messages = FramedWrite::new(socket, GrpcCodec::new());
            let sink = KeepaliveSink::new(messages, AsyncIoTimer, Config::new(INTERVAL)?)
                .with_peer_support(true);
            let (mut sender, driver) = sink.into_driver(8);
            let driver = smol::spawn(driver); // the stream's only background work
            sender.send(Message::new(&b"hello"[..])).await?;
            AsyncIoTimer
                .sleep_until(Instant::now() + INTERVAL * 7 / 2)
                .await;
            sender.send(Message::new(&b"still here"[..])).await?;
            drop(sender); // end of stream: the driver flushes, closes and resolves
            let sink = driver.await?; // the sink, closed: its stats and transport
            Ok::<_, Error>(sink.stats())
        });

        // Client: whole messages, keepalives removed.
        let socket = smol::net::TcpStream::connect(addr).await?;
        let mut stream = KeepaliveStream::new(FramedRead::new(socket, GrpcCodec::new()));
        let mut received = Vec::new();
        while let Some(message) = stream.next().await {
            received.push(message?.into_payload());
        }
        let sent = server.await?;

        let removed = stream.stats().keepalives_removed;
        println!(
            "server: 2 messages and {} keepalives in {:?}",
            sent.keepalives_sent,
            started.elapsed()
        );
        println!("client: {received:?}, {removed} keepalives removed");
        assert_eq!(received, [&b"hello"[..], &b"still here"[..]]);
        assert!(
            sent.keepalives_sent >= 2,
            "idle 3.5 intervals: expected keepalives"
        );
        assert_eq!(removed, sent.keepalives_sent);
        println!("ok: the application saw its two messages and no keepalive");
        Ok(())
    })
}
