//! `albsim`: run the simulated L7 load balancer from the command line.
//!
//! ```text
//! albsim --listen 127.0.0.1:8080 --upstream 127.0.0.1:50051 --idle-timeout 60s
//! ```
//!
//! Resets and other events are logged to stderr; Ctrl-C prints the counters
//! and exits. See `inlinekeepalive_tests::albsim` for the exact idle rule.

use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Instant;

use h2::Reason;
use inlinekeepalive_tests::albsim::{parse_duration, AlbSim, AlbSimConfig};
use tracing::field::{Field, Visit};
use tracing::{span, Event, Level, Metadata, Subscriber};

const USAGE: &str = "\
usage: albsim --listen ADDR --upstream ADDR --idle-timeout DURATION [options]

Simulated L7 load balancer: an h2c (HTTP/2 prior knowledge) reverse proxy that
answers PINGs itself and resets a stream when one direction carries no DATA
for the idle timeout.

  --listen ADDR                  address to listen on, e.g. 127.0.0.1:8080
  --upstream ADDR                h2c server to forward to, e.g. 127.0.0.1:50051
  --idle-timeout DURATION        e.g. 500ms, 2s, 1m (units: ns us ms s m h)
  --server-idle-reason REASON    RST_STREAM code when the server side is idle
                                 (default INTERNAL_ERROR)
  --client-idle-reason REASON    RST_STREAM code when the client side is idle
                                 (default PROTOCOL_ERROR)
  -v, --verbose                  also log debug events
  -h, --help                     show this help

REASON is a name such as CANCEL or a number such as 8.";

struct Args {
    config: AlbSimConfig,
    verbose: bool,
}

enum ArgsError {
    Help,
    Bad(String),
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, ArgsError> {
    let mut listen = None;
    let mut upstream = None;
    let mut idle_timeout = None;
    let mut server_idle_reason = Reason::INTERNAL_ERROR;
    let mut client_idle_reason = Reason::PROTOCOL_ERROR;
    let mut verbose = false;
    while let Some(arg) = args.next() {
        let (flag, inline_value) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg, None),
        };
        let mut value = |name: &str| {
            inline_value
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| ArgsError::Bad(format!("{name} needs a value")))
        };
        match flag.as_str() {
            "-h" | "--help" => return Err(ArgsError::Help),
            "-v" | "--verbose" => verbose = true,
            "--listen" => listen = Some(parse_addr("--listen", &value("--listen")?)?),
            "--upstream" => upstream = Some(parse_addr("--upstream", &value("--upstream")?)?),
            "--idle-timeout" => {
                let text = value("--idle-timeout")?;
                let timeout = parse_duration(&text)
                    .map_err(|e| ArgsError::Bad(format!("--idle-timeout {text:?}: {e}")))?;
                if timeout.is_zero() {
                    return Err(ArgsError::Bad("--idle-timeout must not be zero".into()));
                }
                idle_timeout = Some(timeout);
            }
            "--server-idle-reason" => {
                server_idle_reason = parse_reason(&value("--server-idle-reason")?)?;
            }
            "--client-idle-reason" => {
                client_idle_reason = parse_reason(&value("--client-idle-reason")?)?;
            }
            other => return Err(ArgsError::Bad(format!("unknown argument {other:?}"))),
        }
    }
    let missing = |name: &str| ArgsError::Bad(format!("{name} is required"));
    let mut config = AlbSimConfig::new(
        listen.ok_or_else(|| missing("--listen"))?,
        upstream.ok_or_else(|| missing("--upstream"))?,
        idle_timeout.ok_or_else(|| missing("--idle-timeout"))?,
    );
    config.server_idle_reason = server_idle_reason;
    config.client_idle_reason = client_idle_reason;
    Ok(Args { config, verbose })
}

fn parse_addr(flag: &str, text: &str) -> Result<SocketAddr, ArgsError> {
    text.parse()
        .map_err(|e| ArgsError::Bad(format!("{flag} {text:?}: {e} (expected IP:PORT)")))
}

const REASONS: [(&str, Reason); 14] = [
    ("NO_ERROR", Reason::NO_ERROR),
    ("PROTOCOL_ERROR", Reason::PROTOCOL_ERROR),
    ("INTERNAL_ERROR", Reason::INTERNAL_ERROR),
    ("FLOW_CONTROL_ERROR", Reason::FLOW_CONTROL_ERROR),
    ("SETTINGS_TIMEOUT", Reason::SETTINGS_TIMEOUT),
    ("STREAM_CLOSED", Reason::STREAM_CLOSED),
    ("FRAME_SIZE_ERROR", Reason::FRAME_SIZE_ERROR),
    ("REFUSED_STREAM", Reason::REFUSED_STREAM),
    ("CANCEL", Reason::CANCEL),
    ("COMPRESSION_ERROR", Reason::COMPRESSION_ERROR),
    ("CONNECT_ERROR", Reason::CONNECT_ERROR),
    ("ENHANCE_YOUR_CALM", Reason::ENHANCE_YOUR_CALM),
    ("INADEQUATE_SECURITY", Reason::INADEQUATE_SECURITY),
    ("HTTP_1_1_REQUIRED", Reason::HTTP_1_1_REQUIRED),
];

fn parse_reason(text: &str) -> Result<Reason, ArgsError> {
    if let Ok(code) = text.parse::<u32>() {
        return Ok(Reason::from(code));
    }
    REASONS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(text))
        .map(|&(_, reason)| reason)
        .ok_or_else(|| ArgsError::Bad(format!("unknown RST_STREAM reason {text:?}")))
}

/// A minimal `tracing` subscriber printing events as one line each to
/// stderr (the crate has no `tracing-subscriber` dependency).
struct StderrLog {
    max_level: Level,
    start: Instant,
}

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value}");
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl Subscriber for StderrLog {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= &self.max_level
    }

    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }

    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}

    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut line = Line(String::new());
        event.record(&mut line);
        let elapsed = self.start.elapsed().as_secs_f64();
        eprintln!("{elapsed:10.3}s {:>5}{}", event.metadata().level(), line.0);
    }

    fn enter(&self, _: &span::Id) {}

    fn exit(&self, _: &span::Id) {}
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(ArgsError::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(ArgsError::Bad(message)) => {
            eprintln!("albsim: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let log = StderrLog {
        max_level: if args.verbose {
            Level::DEBUG
        } else {
            Level::INFO
        },
        start: Instant::now(),
    };
    // Fails only if a global subscriber is already set, which we never do.
    let _ = tracing::subscriber::set_global_default(log);

    let config = args.config;
    let (upstream, idle_timeout) = (config.upstream, config.idle_timeout);
    let sim = match AlbSim::start(config).await {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("albsim: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        listen = %sim.local_addr(), %upstream, ?idle_timeout,
        "albsim running; Ctrl-C to stop"
    );
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("albsim: cannot wait for Ctrl-C: {e}");
    }
    tracing::info!(stats = ?sim.stats(), "albsim stopping");
    sim.shutdown().await;
    ExitCode::SUCCESS
}
