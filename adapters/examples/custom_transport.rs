//! The sans-IO core in a hand-written blocking transport loop: no async, no
//! runtime, no adapter types. The core decides, `GrpcCodec` frames:
//!
//! - the sender thread owns a `Keepalive` state machine and a std
//!   `TcpStream`; it waits for application messages with a timeout equal to
//!   the machine's next deadline (`poll_timeout`), calls `handle_timeout`
//!   when it passes and writes `KEEPALIVE_FRAME` when `poll_keepalive` says;
//!   application messages are framed by the codec's `Encoder`;
//! - the receiver thread appends whatever `read` returns to a buffer, takes
//!   whole messages out with the codec's `Decoder` (tokio-util's traits work
//!   on a `BytesMut`, without any runtime), and asks the core's
//!   `FrameFilter::classify_frame` about each, so keepalives never reach the
//!   application.
//!
//! Time is real (`std::time::Instant`, converted to the core's microsecond
//! `Instant` from an epoch the loop picks).
//!
//! Run: `cargo run -p inlinekeepalive --example custom_transport --features tokio`

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant as StdInstant};

use bytes::BytesMut;
use inlinekeepalive::codec::{CodecError, GrpcCodec, Message};
use inlinekeepalive::core::{wire, Classification, Config, FrameFilter, Instant, Keepalive};
use tokio_util::codec::{Decoder, Encoder};

const INTERVAL: Duration = Duration::from_millis(30);

/// The sender's loop: application messages from `app`, keepalives when idle.
fn send_loop(mut socket: TcpStream, app: mpsc::Receiver<Message>) -> Result<u64, CodecError> {
    let epoch = StdInstant::now();
    let now = || Instant::from_micros(epoch.elapsed().as_micros() as u64);
    let config = Config::new(INTERVAL).expect("a valid interval");
    let mut ka = Keepalive::new(config, now());
    ka.set_peer_support(now(), true); // the receiver announced that it removes them
    let mut codec = GrpcCodec::new();
    let mut out = BytesMut::new();
    loop {
        // Wait for the application, but no longer than the next deadline.
        let wait = match ka.poll_timeout() {
            Some(at) => Duration::from_micros(at.as_micros().saturating_sub(now().as_micros())),
            None => Duration::from_secs(3600),
        };
        match app.recv_timeout(wait) {
            Ok(message) => {
                codec.encode(message, &mut out)?; // one whole frame
                socket.write_all(&out)?; // so always at a boundary after it
                out.clear();
                ka.on_sent(now());
            }
            Err(RecvTimeoutError::Timeout) => ka.handle_timeout(now()),
            Err(RecvTimeoutError::Disconnected) => {
                ka.close();
                socket.shutdown(std::net::Shutdown::Write)?;
                return Ok(ka.keepalives_sent());
            }
        }
        // Between two frames, with a blocking socket: always able to write.
        if ka.poll_keepalive(now()) {
            socket.write_all(&wire::KEEPALIVE_FRAME)?;
        }
    }
}

/// The receiver's loop: whole messages from whatever `read` returns, the
/// keepalives among them removed.
fn receive_loop(mut socket: TcpStream) -> Result<(Vec<Message>, u64), CodecError> {
    let mut codec = GrpcCodec::new();
    let mut filter = FrameFilter::new(); // the classifier and its counters
    let mut delivered = Vec::new();
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 7]; // small on purpose: frames straddle reads
    loop {
        let n = socket.read(&mut chunk)?;
        buf.extend_from_slice(&chunk[..n]);
        let ended = n == 0;
        // `decode_eof` at the end: a frame cut short is an error there.
        while let Some(message) = if ended {
            codec.decode_eof(&mut buf)?
        } else {
            codec.decode(&mut buf)?
        } {
            match filter.classify_frame(message.is_compressed(), message.payload()) {
                Classification::Keepalive => {} // removed
                Classification::Collision | Classification::Application => {
                    delivered.push(message);
                }
            }
        }
        if ended {
            return Ok((delivered, filter.stats().keepalives_removed));
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;

    let (app, queue) = mpsc::channel();
    let sender = thread::spawn(move || send_loop(server, queue));
    let receiver = thread::spawn(move || receive_loop(client));

    app.send(Message::new(&b"first"[..]))?;
    thread::sleep(INTERVAL * 4); // idle: keepalives flow
    app.send(Message::new(&b"second"[..]))?;
    drop(app);

    let sent = sender.join().expect("sender thread")?;
    let (delivered, removed) = receiver.join().expect("receiver thread")?;
    println!("sent {sent} keepalives, removed {removed}; delivered {delivered:?}");
    assert_eq!(
        delivered,
        [Message::new(&b"first"[..]), Message::new(&b"second"[..])]
    );
    assert!(
        sent >= 2,
        "idle for 4 intervals: expected keepalives, got {sent}"
    );
    assert_eq!(sent, removed);
    println!("ok: no async, no runtime, keepalives sent and removed");
    Ok(())
}
