//! Scale: 100,000 concurrent idle streams on one smol executor thread, a
//! keepalive every second each, for 10 seconds: keepalive lateness, CPU time
//! and memory per stream, for our design side by side with the naive design
//! in the same run. Every design writes the same keepalive message into the
//! same kind of sink (`Recorder`, below), with `poll_ready`, `start_send`
//! and `poll_flush`.
//!
//! The naive design, Waypoint's (`ServeKeepalives`: a goroutine per stream
//! with a `time.Ticker`, sending under the stream's send mutex, stopped by
//! the stream's context):
//!
//! - `naive`: one spawned task per stream looping on its own
//!   `async_io::Timer::interval`, writing into the stream's sink, which it
//!   shares with the application (`Rc<RefCell<_>>`: the lock, on one
//!   thread); the application keeps its handle to the sink and the task
//!   handle that stops the ticker when the stream ends. The application's
//!   own idle task is not spawned (its handles sit in a `Vec`), although in
//!   `sink-task` below the application's task is what carries the sink: this
//!   favours `naive` by one task per stream;
//! - `naive-app`: `naive` with that idle application task spawned too (it
//!   holds the two handles and waits for its next message, which never
//!   comes), as every design has one in a real program;
//! - `naive-bare`: the same ticker owning the sink outright, with no
//!   application handle at all: a lower bound, since such a stream cannot
//!   carry the application's messages.
//!
//! Ours, one timer per stream reset in place, in its two shapes:
//!
//! - `sink-task`: the application's task owns a `KeepaliveSink` and awaits
//!   `poll_keepalive` (through `std::future::poll_fn`) while idle (what an
//!   idle stream costs at the least);
//! - `sink-driver`: `into_driver`, a spawned `Driver` plus the
//!   application's `Sender` channel (a bounded futures-channel).
//!
//! `cargo bench -p inlinekeepalive --bench scale --features smol`
//!
//! Each design runs in a fresh child process of this binary (one after the
//! other, never at the same time), so one design's freed memory cannot hide
//! the other's. Environment: `SCALE_STREAMS` (default 100000),
//! `SCALE_SECS` (default 10), `SCALE_DESIGNS` (a comma-separated subset),
//! `SCALE_ROUNDS` (default 1: how many times the whole list runs, one
//! design after the other in each round, so that a slow spell of the
//! machine falls on every design alike; the summary gives each design's
//! median steady CPU and its ratio to `naive`'s).
//!
//! Streams open in 100 batches over the first second (as real streams
//! arrive over time, not all in one microsecond); both designs get the same
//! schedule. No jitter: lateness is then measured exactly, as the time a
//! keepalive reached the transport minus the time it was due. Both designs
//! keep a fixed rate while idle: naive's ticker fires its k-th tick at
//! open + k intervals, and ours (Idle policy, nothing else sent) counts the
//! wake-up of its sleep as the deadline itself, so each keepalive is due
//! exactly one interval after the previous one was *due*. (Before that, ours
//! was due one interval after the previous one *arrived*: `Recorder` keeps
//! that schedule behind `fixed_rate: false`, unused, so that its size, part
//! of every design's memory, stays comparable with earlier runs.)
//!
//! CPU is the run time of the whole child process (all its threads) from
//! `CLOCK_PROCESS_CPUTIME_ID`, in nanoseconds;
//! memory is the VmRSS growth from before the streams open to the end of the
//! run, from /proc. The lateness samples are
//! allocated and touched before the baseline, so they are not counted.
//! `task_bytes` is the size of one spawned future (what the executor
//! allocates per task, besides its header).

use std::cell::RefCell;
use std::pin::Pin;
use std::process::Command;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::{Sink, StreamExt};
use inlinekeepalive::timer::AsyncIoTimer;
use inlinekeepalive::{wire, Config, KeepaliveSink, Sender};
use smol::{LocalExecutor, Task};

const INTERVAL: Duration = Duration::from_secs(1);
const BATCHES: usize = 100;

/// Lateness samples in microseconds, shared by every stream of the thread.
#[derive(Default)]
struct Samples {
    late_us: Vec<u32>,
    early: u64,
}

/// The transport of one stream: records when each keepalive arrives and how
/// late it was.
struct Recorder {
    /// When the next keepalive is due.
    due: Instant,
    /// Fixed rate (`due += interval`, every design now), or from the
    /// arrival (`due = arrival + interval`, what ours did before its sleep's
    /// wake-up counted as the deadline).
    fixed_rate: bool,
    samples: Rc<RefCell<Samples>>,
}

impl Recorder {
    fn record(&mut self) {
        let now = Instant::now();
        let mut s = self.samples.borrow_mut();
        match now.checked_duration_since(self.due) {
            Some(late) => s
                .late_us
                .push(u32::try_from(late.as_micros()).unwrap_or(u32::MAX)),
            None => s.early += 1,
        }
        self.due = if self.fixed_rate {
            self.due + INTERVAL
        } else {
            now + INTERVAL
        };
    }
}

/// The application's side of a naive stream: the sink it shares with the
/// ticker task, and the handle that stops the ticker (Waypoint's context).
type NaiveHandle = (Rc<RefCell<Recorder>>, Task<()>);

/// The shared sink of a naive stream, as a `Sink` for the ticker: takes the
/// lock (borrows the cell) for each call, as Waypoint takes its send mutex.
struct Shared(Rc<RefCell<Recorder>>);

impl Sink<&'static [u8]> for Shared {
    type Error = ();

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: &'static [u8]) -> Result<(), ()> {
        Pin::new(&mut *self.0.borrow_mut()).start_send(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_close(cx)
    }
}

impl Sink<&'static [u8]> for Recorder {
    type Error = ();

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, item: &'static [u8]) -> Result<(), ()> {
        assert_eq!(item, &wire::KEEPALIVE_MESSAGE[..]);
        self.get_mut().record();
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
        Poll::Ready(Ok(()))
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// CPU time of this process, in seconds: `CLOCK_PROCESS_CPUTIME_ID`, the
/// kernel's nanosecond run-time accounting of all its threads
/// (/proc/self/stat rounds the same figure to 10 ms ticks, 2.5 % of a
/// 0.4 s steady phase). Through libc rather than rustix: rustix reads the
/// clock through its own vDSO parser, which crashes under valgrind, and
/// this binary is also run under callgrind.
fn cpu_secs() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` only writes the `timespec` it is given, which
    // lives for the whole call.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) } != 0 {
        return f64::NAN;
    }
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// Runs one design in this process and prints one `RESULT` line.
fn child(design: &str, streams: usize, secs: u64) {
    let ex = LocalExecutor::new();
    let samples = Rc::new(RefCell::new(Samples::default()));
    // Keeps the application's handles alive, as an idle application would.
    let senders: Rc<RefCell<Vec<Sender<&'static [u8]>>>> =
        Rc::new(RefCell::new(Vec::with_capacity(streams)));
    let naive_handles: Rc<RefCell<Vec<NaiveHandle>>> =
        Rc::new(RefCell::new(Vec::with_capacity(streams)));
    let task_bytes = Rc::new(std::cell::Cell::new(0usize));

    // Room for every sample, touched now so it is not counted as growth.
    {
        let expected = streams * (secs as usize + 1);
        let mut s = samples.borrow_mut();
        s.late_us.resize(expected, 1);
        s.late_us.clear();
    }
    // Warm the executor and the reactor before the baseline.
    smol::block_on(ex.run(smol::Timer::after(Duration::from_millis(10))));
    let rss_before = rss_kib();
    let cpu_before = cpu_secs();
    let start = Instant::now();

    let per_batch = streams.div_ceil(BATCHES);
    let opener = {
        let ex = &ex;
        let samples = samples.clone();
        let senders = senders.clone();
        let naive_handles = naive_handles.clone();
        let task_bytes = task_bytes.clone();
        async move {
            let mut tick = smol::Timer::interval(INTERVAL / BATCHES as u32);
            let mut opened = 0;
            while opened < streams {
                for _ in 0..per_batch.min(streams - opened) {
                    let samples = samples.clone();
                    let recorder = |fixed_rate| Recorder {
                        due: Instant::now() + INTERVAL,
                        fixed_rate,
                        samples,
                    };
                    match design {
                        "sink-task" | "sink-driver" => {
                            let config = Config::new(INTERVAL).unwrap();
                            let mut sink = KeepaliveSink::new(recorder(true), AsyncIoTimer, config)
                                .with_peer_support(true);
                            if design == "sink-driver" {
                                // The application's handle is a channel.
                                let (sender, driver) = sink.into_driver(1);
                                senders.borrow_mut().push(sender);
                                task_bytes.set(std::mem::size_of_val(&driver));
                                ex.spawn(driver).detach();
                            } else {
                                // The application owns the sink in its task
                                // and polls `poll_keepalive` while idle.
                                let task = async move {
                                    loop {
                                        std::future::poll_fn(|cx| {
                                            Pin::new(&mut sink).poll_keepalive(cx)
                                        })
                                        .await
                                        .unwrap();
                                    }
                                };
                                task_bytes.set(std::mem::size_of_val(&task));
                                ex.spawn(task).detach();
                            }
                        }
                        "naive" | "naive-app" => {
                            // Waypoint: the ticker sends under the stream's
                            // send lock; the application keeps the stream.
                            let shared = Rc::new(RefCell::new(recorder(true)));
                            let mut sink = Shared(shared.clone());
                            let ticker_task = async move {
                                let mut ticker = smol::Timer::interval(INTERVAL);
                                while ticker.next().await.is_some() {
                                    futures::SinkExt::send(&mut sink, &wire::KEEPALIVE_MESSAGE[..])
                                        .await
                                        .unwrap();
                                }
                            };
                            task_bytes.set(std::mem::size_of_val(&ticker_task));
                            let task = ex.spawn(ticker_task);
                            if design == "naive-app" {
                                ex.spawn(async move {
                                    let _stream: NaiveHandle = (shared, task);
                                    std::future::pending::<()>().await;
                                })
                                .detach();
                            } else {
                                naive_handles.borrow_mut().push((shared, task));
                            }
                        }
                        "naive-bare" => {
                            let mut recorder = recorder(true);
                            let ticker_task = async move {
                                let mut ticker = smol::Timer::interval(INTERVAL);
                                while ticker.next().await.is_some() {
                                    futures::SinkExt::send(
                                        &mut recorder,
                                        &wire::KEEPALIVE_MESSAGE[..],
                                    )
                                    .await
                                    .unwrap();
                                }
                            };
                            task_bytes.set(std::mem::size_of_val(&ticker_task));
                            ex.spawn(ticker_task).detach();
                        }
                        other => panic!("unknown design {other}"),
                    }
                    opened += 1;
                }
                tick.next().await;
            }
        }
    };
    let opened_in = smol::block_on(ex.run(async {
        opener.await;
        start.elapsed()
    }));
    let cpu_opened = cpu_secs();
    let rest = Duration::from_secs(secs).saturating_sub(start.elapsed());
    smol::block_on(ex.run(smol::Timer::after(rest)));
    let elapsed = start.elapsed();
    let cpu_end = cpu_secs();
    let cpu = cpu_end - cpu_before;
    // After the last stream opened: the steady state of idle streams.
    let cpu_steady = cpu_end - cpu_opened;
    let rss_after = rss_kib();

    let mut s = samples.borrow_mut();
    s.late_us.sort_unstable();
    let late = &s.late_us;
    println!(
        "RESULT design={design} streams={streams} secs={:.2} opened_in_ms={} keepalives={} early={} \
         p50_us={} p99_us={} max_us={} cpu_s={:.3} cpu_steady_s={:.3} rss_kib={} bytes_per_stream={} task_bytes={}",
        elapsed.as_secs_f64(),
        opened_in.as_millis(),
        late.len() as u64 + s.early,
        s.early,
        percentile(late, 0.50),
        percentile(late, 0.99),
        late.last().copied().unwrap_or(0),
        cpu,
        cpu_steady,
        rss_after.saturating_sub(rss_before),
        rss_after.saturating_sub(rss_before) * 1024 / streams as u64,
        task_bytes.get(),
    );
    drop(s);
    // Exit without dropping 100k tasks: teardown is not what is measured.
    std::process::exit(0);
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .unwrap_or("?")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let streams: usize = std::env::var("SCALE_STREAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let secs: u64 = std::env::var("SCALE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    if let Some(i) = args.iter().position(|a| a == "--design") {
        child(
            args.get(i + 1).map_or("sink-task", String::as_str),
            streams,
            secs,
        );
        return;
    }
    if args.iter().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` and friends: nothing to run
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut lines = Vec::new();
    let all = [
        "naive",
        "naive-app",
        "naive-bare",
        "sink-task",
        "sink-driver",
    ];
    let only = std::env::var("SCALE_DESIGNS").unwrap_or_default();
    let rounds: usize = std::env::var("SCALE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    for round in 1..=rounds {
        for design in all {
            if !only.is_empty() && !only.split(',').any(|d| d == design) {
                continue;
            }
            eprintln!(
                "scale: round {round}/{rounds}: {design}: {streams} streams for {secs} s ..."
            );
            let out = Command::new(&exe)
                .args(["--design", design])
                .output()
                .expect("spawn child");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let line = stdout
                .lines()
                .find(|l| l.starts_with("RESULT"))
                .unwrap_or_else(|| {
                    panic!(
                        "{design} child failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                });
            println!("{line}");
            lines.push(line.to_string());
        }
    }
    println!();
    println!("| design | streams | keepalives | lateness p50 | p99 | max | CPU s | of which steady | RSS growth | bytes/stream | task bytes |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for l in &lines {
        let us = |k| {
            field(l, k)
                .parse::<f64>()
                .map_or("?".into(), |v| format!("{:.2} ms", v / 1000.0))
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} KiB | {} | {} |",
            field(l, "design"),
            field(l, "streams"),
            field(l, "keepalives"),
            us("p50_us"),
            us("p99_us"),
            us("max_us"),
            field(l, "cpu_s"),
            field(l, "cpu_steady_s"),
            field(l, "rss_kib"),
            field(l, "bytes_per_stream"),
            field(l, "task_bytes"),
        );
    }
    summary(&lines);
}

/// Each design's median steady CPU over the rounds, and its ratio to
/// `naive`'s median.
fn summary(lines: &[String]) {
    let steady = |design: &str| {
        let mut v: Vec<f64> = lines
            .iter()
            .filter(|l| field(l, "design") == design)
            .filter_map(|l| field(l, "cpu_steady_s").parse().ok())
            .collect();
        v.sort_by(f64::total_cmp);
        (v.len(), v.get(v.len() / 2).copied())
    };
    let (_, naive) = steady("naive");
    println!();
    println!("| design | runs | median steady CPU s | ratio to naive |");
    println!("|---|---|---|---|");
    let mut seen: Vec<&str> = Vec::new();
    for l in lines {
        let design = field(l, "design");
        if seen.contains(&design) {
            continue;
        }
        seen.push(design);
        let (runs, median) = steady(design);
        let ratio = match (median, naive) {
            (Some(m), Some(n)) if n > 0.0 => format!("{:.3}", m / n),
            _ => "-".into(),
        };
        let median = median.map_or("-".into(), |m| format!("{m:.3}"));
        println!("| {design} | {runs} | {median} | {ratio} |");
    }
}
