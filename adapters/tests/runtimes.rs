//! The same end-to-end test under every runtime: loopback TCP, a server
//! stream and a client stream each idle for 5 intervals between two
//! application messages. Keepalives flow while idle (sent by a spawned
//! `Driver`), the peer's `KeepaliveReader` removes them, and the
//! application receives exactly its two messages.
#![cfg(all(feature = "async-io", feature = "tokio", feature = "futures-timer"))]

mod support;

use std::time::Duration;

use futures::future::{join, BoxFuture, FutureExt};
use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use inlinekeepalive::timer::Timer;
use inlinekeepalive::{Config, KeepaliveReader, KeepaliveWriter, ReceiveStats, SendStats};
use support::frame;

const INTERVAL: Duration = Duration::from_millis(20);
const IDLE: Duration = Duration::from_millis(100); // 5 intervals

type Spawn<'a> = &'a dyn Fn(BoxFuture<'static, ()>);

/// What ends the write half once the driver has closed its writer: nothing
/// where `poll_close` already shuts the socket's write side down (smol,
/// tokio's compat); async-std's `poll_close` only flushes, so there the test
/// calls `shutdown(Write)` itself.
type HalfClose = Box<dyn FnOnce()>;

fn nothing() -> HalfClose {
    Box::new(|| {})
}

struct Side {
    received: Vec<u8>,
    reader: ReceiveStats,
    writer: SendStats,
}

/// One end of the connection: sends its two messages through a spawned
/// driver with an idle gap between them, and reads the peer's stream to
/// its end.
async fn side<R, W, T>(
    (read, write, half_close): (R, W, HalfClose),
    name: &str,
    timer: T,
    spawn: Spawn<'_>,
) -> Side
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
    T: Timer,
    T::Sleep: Unpin,
{
    let config = Config::new(INTERVAL).unwrap();
    let writer = KeepaliveWriter::new(write, timer.clone(), config).with_peer_support(true);
    let (mut frames, driver) = writer.into_driver(4);
    let (driver, finished) = driver.remote_handle();
    spawn(driver.boxed());
    let send = async move {
        frames
            .send(frame(format!("{name} #1").as_bytes()))
            .await
            .unwrap();
        timer.sleep_until(timer.now() + IDLE).await;
        frames
            .send(frame(format!("{name} #2").as_bytes()))
            .await
            .unwrap();
        drop(frames); // the driver flushes, closes the write half, resolves
        let writer = finished.await.unwrap();
        half_close();
        writer.stats()
    };
    let receive = async move {
        let mut reader = KeepaliveReader::new(read);
        let mut received = Vec::new();
        reader.read_to_end(&mut received).await.unwrap();
        (received, reader.stats())
    };
    let (writer, (received, reader)) = join(send, receive).await;
    Side {
        received,
        reader,
        writer,
    }
}

async fn idle_streams_both_ways<R, W, T>(
    server: (R, W, HalfClose),
    client: (R, W, HalfClose),
    timer: T,
    spawn: Spawn<'_>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
    T: Timer,
    T::Sleep: Unpin,
{
    let (s, c) = join(
        side(server, "server", timer.clone(), spawn),
        side(client, "client", timer, spawn),
    )
    .await;
    for (me, peer, peer_name) in [(&s, &c, "client"), (&c, &s, "server")] {
        let expected = [
            frame(format!("{peer_name} #1").as_bytes()),
            frame(format!("{peer_name} #2").as_bytes()),
        ]
        .concat();
        assert_eq!(
            me.received, expected,
            "both messages, intact, in order, no keepalive"
        );
        assert!(
            peer.writer.keepalives_sent >= 2,
            "{peer_name} idle for 5 intervals sent {} keepalives",
            peer.writer.keepalives_sent
        );
        assert_eq!(me.reader.keepalives_removed, peer.writer.keepalives_sent);
        assert_eq!(me.reader.messages_passed, 2);
        assert_eq!(peer.writer.messages_sent, 2);
    }
}

#[test]
fn smol() {
    use inlinekeepalive::timer::AsyncIoTimer;
    smol::block_on(async {
        let listener = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = join(smol::net::TcpStream::connect(addr), listener.accept()).await;
        let (client, server) = (client.unwrap(), server.unwrap().0);
        let spawn: Spawn<'_> = &|f| smol::spawn(f).detach();
        idle_streams_both_ways(
            (server.clone(), server, nothing()),
            (client.clone(), client, nothing()),
            AsyncIoTimer,
            spawn,
        )
        .await;
    });
}

#[test]
fn async_std() {
    use inlinekeepalive::timer::AsyncIoTimer;
    async_std::task::block_on(async {
        let listener = async_std::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) =
            join(async_std::net::TcpStream::connect(addr), listener.accept()).await;
        let (client, server) = (client.unwrap(), server.unwrap().0);
        let spawn: Spawn<'_> = &|f| drop(async_std::task::spawn(f));
        let half_close = |s: async_std::net::TcpStream| -> HalfClose {
            Box::new(move || s.shutdown(std::net::Shutdown::Write).unwrap())
        };
        idle_streams_both_ways(
            (server.clone(), server.clone(), half_close(server)),
            (client.clone(), client.clone(), half_close(client)),
            AsyncIoTimer,
            spawn,
        )
        .await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio() {
    use inlinekeepalive::timer::TokioTimer;
    use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, server) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
    let (client, server) = (client.unwrap(), server.unwrap().0);
    let (sr, sw) = server.into_split();
    let (cr, cw) = client.into_split();
    let spawn: Spawn<'_> = &|f| drop(tokio::spawn(f));
    idle_streams_both_ways(
        (sr.compat(), sw.compat_write(), nothing()),
        (cr.compat(), cw.compat_write(), nothing()),
        TokioTimer,
        spawn,
    )
    .await;
}

#[test]
fn futures_executor() {
    // futures' own executor and futures-timer; the sockets need a reactor,
    // and async-net's (async-io's) runs under any executor.
    use futures::executor::LocalPool;
    use futures::task::LocalSpawnExt;
    use inlinekeepalive::timer::FuturesTimer;
    let mut pool = LocalPool::new();
    let spawner = pool.spawner();
    pool.run_until(async move {
        let listener = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = join(smol::net::TcpStream::connect(addr), listener.accept()).await;
        let (client, server) = (client.unwrap(), server.unwrap().0);
        let spawn = move |f: BoxFuture<'static, ()>| spawner.spawn_local(f).unwrap();
        let spawn: Spawn<'_> = &spawn;
        idle_streams_both_ways(
            (server.clone(), server, nothing()),
            (client.clone(), client, nothing()),
            FuturesTimer,
            spawn,
        )
        .await;
    });
}
