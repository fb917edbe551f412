//! The sans-IO core in a hand-written blocking transport loop: no async, no
//! runtime, no adapter types. Only `inlinekeepalive::core`:
//!
//! - the sender thread owns a `Keepalive` state machine and a std
//!   `TcpStream`; it waits for application messages with a timeout equal to
//!   the machine's next deadline (`poll_timeout`), calls `handle_timeout`
//!   when it passes and writes `KEEPALIVE_FRAME` when `poll_keepalive` says;
//! - the receiver thread feeds whatever `read` returns to a `FrameFilter`
//!   and passes on what it says, so keepalives never reach the application.
//!
//! Time is real (`std::time::Instant`, converted to the core's microsecond
//! `Instant` from an epoch the loop picks).
//!
//! Run: `cargo run -p inlinekeepalive --example custom_transport`

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant as StdInstant};

use inlinekeepalive::core::{wire, Config, FrameFilter, Instant, Keepalive, Output};

const INTERVAL: Duration = Duration::from_millis(30);

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0];
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The sender's loop: application messages from `app`, keepalives when idle.
fn send_loop(mut socket: TcpStream, app: mpsc::Receiver<Vec<u8>>) -> std::io::Result<u64> {
    let epoch = StdInstant::now();
    let now = || Instant::from_micros(epoch.elapsed().as_micros() as u64);
    let config = Config::new(INTERVAL).expect("a valid interval");
    let mut ka = Keepalive::new(config, now());
    ka.set_peer_support(now(), true); // the receiver announced that it filters
    loop {
        // Wait for the application, but no longer than the next deadline.
        let wait = match ka.poll_timeout() {
            Some(at) => Duration::from_micros(at.as_micros().saturating_sub(now().as_micros())),
            None => Duration::from_secs(3600),
        };
        match app.recv_timeout(wait) {
            Ok(message) => {
                socket.write_all(&message)?; // whole frames: always at a boundary
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

/// The receiver's loop: filters keepalives out of whatever `read` returns.
fn receive_loop(mut socket: TcpStream) -> std::io::Result<(Vec<u8>, u64)> {
    let mut filter = FrameFilter::new();
    let mut delivered = Vec::new();
    let mut buf = [0u8; 7]; // small on purpose: frames straddle reads
    loop {
        let n = socket.read(&mut buf)?;
        if n == 0 {
            filter.finish().map_err(std::io::Error::other)?;
            return Ok((delivered, filter.stats().keepalives_removed));
        }
        let mut input = &buf[..n];
        while !input.is_empty() {
            let step = filter
                .step(input)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            match step.output {
                Output::Forward(range) => delivered.extend_from_slice(&input[range]),
                Output::Held(bytes) => delivered.extend_from_slice(bytes),
                Output::Removed | Output::Nothing => {}
            }
            input = &input[step.consumed..];
        }
    }
}

fn main() -> std::io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;

    let (app, queue) = mpsc::channel();
    let sender = thread::spawn(move || send_loop(server, queue));
    let receiver = thread::spawn(move || receive_loop(client));

    app.send(frame(b"first")).expect("sender alive");
    thread::sleep(INTERVAL * 4); // idle: keepalives flow
    app.send(frame(b"second")).expect("sender alive");
    drop(app);

    let sent = sender.join().expect("sender thread")?;
    let (delivered, removed) = receiver.join().expect("receiver thread")?;
    println!("sent {sent} keepalives, removed {removed}; delivered {delivered:02x?}");
    assert_eq!(delivered, [frame(b"first"), frame(b"second")].concat());
    assert!(
        sent >= 2,
        "idle for 4 intervals: expected keepalives, got {sent}"
    );
    assert_eq!(sent, removed);
    println!("ok: no async, no runtime, keepalives sent and filtered");
    Ok(())
}
