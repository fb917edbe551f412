//! Start and stop real nginx and HAProxy on loopback for tests.
//!
//! Both proxies sit between an h2c (prior-knowledge HTTP/2 over cleartext) client and an h2c gRPC upstream, with
//! every idle timeout that can end an *active but idle* stream set to one value,
//! [`ProxyConfig::idle_timeout`]. That is the situation inline keepalives exist for: the proxy answers HTTP/2
//! PINGs itself and resets a stream that carries no DATA for its idle timeout (see `/work/shared/PROXIES.md`
//! for the measurements behind the templates below).
//!
//! With [`Traffic::GrpcWeb`] they carry gRPC-Web instead, as browsers send it: HTTP/1.1 or h2c from the
//! client ([`ClientHttp`]), HTTP/1.1 to the upstream (tonic with `accept_http1(true)` and tonic-web), nothing
//! buffered, the same single idle timeout (nginx `proxy_pass`, HAProxy `mode http` without `proto h2` towards
//! the server).
//!
//! # Lifecycle
//!
//! [`RunningProxy::start`]:
//! 1. picks a free loopback port (bind `127.0.0.1:0`, read it, close it);
//! 2. writes the configuration into a fresh directory `P` (under [`ProxyConfig::work_root`], else the
//!    runtime environment variable `CARGO_TARGET_TMPDIR`, else [`std::env::temp_dir`]);
//! 3. validates it (`nginx -t -q`, `haproxy -c -q`);
//! 4. starts the proxy as a single foreground process (`nginx` with `daemon off; master_process off;`,
//!    `haproxy -db`) with stdout/stderr captured to `P/stdout.log` and `P/stderr.log`;
//! 5. polls a TCP connect to the listen port for at most [`READY_TIMEOUT`].
//!
//! Dropping the [`RunningProxy`] sends SIGTERM to exactly the PID it started, waits at most
//! [`STOP_TIMEOUT`], then sends SIGKILL. Nothing else is ever signalled. A single process is used for both
//! proxies because SIGKILL of an nginx *master* leaves its worker running and holding the port.
//! The directory is removed on drop unless the thread is panicking (a failing test), so the logs stay
//! behind for diagnosis; [`RunningProxy::logs`] returns them for assertion messages.
//!
//! Starting and stopping block the calling thread (for milliseconds normally, at most the bounds above).
//!
//! # Missing binaries
//!
//! Tests call [`require`]: under `CI=true` a missing proxy fails the test; elsewhere the test is skipped with
//! `SKIPPED: <kind> not installed (apt-get install -y nginx haproxy)` on stderr.
//!
//! ```no_run
//! use inlinekeepalive_tests::proxies::{require, ProxyConfig, ProxyKind, RunningProxy};
//! use std::time::Duration;
//!
//! let Some(_) = require(ProxyKind::Nginx) else { return };
//! let upstream = "127.0.0.1:50051".parse().unwrap();
//! let proxy = RunningProxy::start(&ProxyConfig::new(ProxyKind::Nginx, upstream, Duration::from_secs(1)))
//!     .unwrap_or_else(|e| panic!("{e}"));
//! println!("connect h2c clients to {}", proxy.addr());
//! ```

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long [`RunningProxy::start`] waits for the listen port to accept connections.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long stopping a proxy waits after SIGTERM before it sends SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// How many trailing log lines go into error messages.
const LOG_TAIL_LINES: usize = 40;

/// How many trailing bytes of each log file [`RunningProxy::logs`] reads.
const LOG_TAIL_BYTES: u64 = 64 * 1024;

/// The smallest nginx version whose `listen ... http2` parameter is deprecated in favour of `http2 on;`.
const NGINX_HTTP2_DIRECTIVE_SINCE: (u32, u32, u32) = (1, 25, 1);

/// Which proxy to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProxyKind {
    /// nginx with `grpc_pass`.
    Nginx,
    /// HAProxy in `mode http` with `proto h2` on both sides.
    Haproxy,
}

impl ProxyKind {
    /// Both kinds, for tests that run against each.
    pub const ALL: [ProxyKind; 2] = [ProxyKind::Nginx, ProxyKind::Haproxy];

    /// The executable's file name.
    pub fn binary_name(self) -> &'static str {
        match self {
            ProxyKind::Nginx => "nginx",
            ProxyKind::Haproxy => "haproxy",
        }
    }

    /// The environment variable that may name the executable explicitly (checked before `PATH`).
    pub fn binary_env_var(self) -> &'static str {
        match self {
            ProxyKind::Nginx => "INLINEKEEPALIVE_NGINX",
            ProxyKind::Haproxy => "INLINEKEEPALIVE_HAPROXY",
        }
    }
}

impl fmt::Display for ProxyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.binary_name())
    }
}

/// What a proxy carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Traffic {
    /// gRPC: h2c on both sides (nginx `grpc_pass`, HAProxy `proto h2` on bind and server).
    #[default]
    Grpc,
    /// gRPC-Web: the client speaks the given HTTP version (h2c with prior knowledge for
    /// [`ClientHttp::Http2`]), the proxy speaks HTTP/1.1 to the upstream (nginx `proxy_pass` with
    /// `proxy_http_version 1.1`, HAProxy's default) and buffers nothing, so every chunk (a keepalive
    /// included) is forwarded as it arrives.
    GrpcWeb(ClientHttp),
}

/// The HTTP version a gRPC-Web client speaks to the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientHttp {
    /// HTTP/1.1, chunked responses.
    Http1,
    /// HTTP/2 over cleartext with prior knowledge (h2c): what a browser would speak over TLS.
    Http2,
}

impl fmt::Display for ClientHttp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClientHttp::Http1 => "HTTP/1.1",
            ClientHttp::Http2 => "h2",
        })
    }
}

/// What to run: which proxy, in front of which upstream, with which idle timeout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Which proxy.
    pub kind: ProxyKind,
    /// What it carries: gRPC (the default) or gRPC-Web.
    pub traffic: Traffic,
    /// The h2c gRPC upstream the proxy forwards to. Must be a loopback address.
    pub upstream: SocketAddr,
    /// Applied to every timeout that can end an active idle stream, in whole milliseconds (at least 1 ms):
    /// nginx `grpc_read_timeout` (server-to-client idle) and `client_body_timeout` (client-to-server idle),
    /// plus `grpc_connect_timeout`/`grpc_send_timeout` (for gRPC-Web the `proxy_*` ones and `send_timeout`);
    /// HAProxy `timeout server` (idle in either direction), `timeout client` and `timeout connect`.
    pub idle_timeout: Duration,
    /// The proxy executable; `None` looks it up with [`find_binary`].
    pub binary: Option<PathBuf>,
    /// Where the per-run directory is created; `None` uses the environment variable `CARGO_TARGET_TMPDIR`
    /// if set, else [`std::env::temp_dir`]. Integration tests pass `env!("CARGO_TARGET_TMPDIR")`.
    pub work_root: Option<PathBuf>,
    /// TLS on the listening side (nginx, gRPC-Web only): a PEM certificate and its key. Browsers speak h2
    /// only over TLS, so a browser test of gRPC-Web over h2 needs it.
    pub tls: Option<Tls>,
}

/// A certificate and its private key, both PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tls {
    /// The certificate (chain).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

impl ProxyConfig {
    /// A configuration with the binary found by [`find_binary`] and the default work root.
    pub fn new(kind: ProxyKind, upstream: SocketAddr, idle_timeout: Duration) -> Self {
        ProxyConfig {
            kind,
            traffic: Traffic::Grpc,
            upstream,
            idle_timeout,
            binary: None,
            work_root: None,
            tls: None,
        }
    }

    /// Sets [`ProxyConfig::work_root`].
    pub fn with_work_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.work_root = Some(root.into());
        self
    }

    /// Sets [`ProxyConfig::traffic`] to gRPC-Web from a client speaking `client`.
    pub fn grpc_web(mut self, client: ClientHttp) -> Self {
        self.traffic = Traffic::GrpcWeb(client);
        self
    }

    /// Sets [`ProxyConfig::tls`].
    pub fn with_tls(mut self, tls: Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets [`ProxyConfig::binary`].
    pub fn with_binary(mut self, binary: impl Into<PathBuf>) -> Self {
        self.binary = Some(binary.into());
        self
    }
}

/// Why a proxy could not be started (or stopped).
#[derive(Debug)]
#[non_exhaustive]
pub enum ProxyError {
    /// The configuration cannot be expressed for the proxy.
    InvalidConfig {
        /// Which proxy.
        kind: ProxyKind,
        /// What is wrong.
        reason: String,
    },
    /// No executable was found (see [`find_binary`]).
    NotInstalled {
        /// Which proxy.
        kind: ProxyKind,
    },
    /// A file-system or process operation failed.
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The proxy's own configuration check (`nginx -t`, `haproxy -c`) rejected the generated file.
    ConfigRejected {
        /// Which proxy.
        kind: ProxyKind,
        /// The check's exit status.
        status: ExitStatus,
        /// The check's output and the generated configuration.
        output: String,
        /// The run directory, kept for diagnosis.
        dir: PathBuf,
    },
    /// The proxy exited before it accepted connections.
    Exited {
        /// Which proxy.
        kind: ProxyKind,
        /// Its exit status.
        status: ExitStatus,
        /// The last lines of its logs.
        log_tail: String,
        /// The run directory, kept for diagnosis.
        dir: PathBuf,
    },
    /// The proxy's port did not accept connections within [`READY_TIMEOUT`].
    NotReady {
        /// Which proxy.
        kind: ProxyKind,
        /// The port it should have listened on.
        addr: SocketAddr,
        /// The last lines of its logs.
        log_tail: String,
        /// The run directory, kept for diagnosis.
        dir: PathBuf,
    },
}

impl ProxyError {
    fn io(context: impl Into<String>, source: io::Error) -> Self {
        ProxyError::Io {
            context: context.into(),
            source,
        }
    }
}

impl ProxyError {
    /// The run directory kept for diagnosis, for the errors that leave one behind.
    pub fn kept_dir(&self) -> Option<&Path> {
        match self {
            ProxyError::ConfigRejected { dir, .. }
            | ProxyError::Exited { dir, .. }
            | ProxyError::NotReady { dir, .. } => Some(dir),
            _ => None,
        }
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::InvalidConfig { kind, reason } => {
                write!(f, "invalid {kind} configuration: {reason}")
            }
            ProxyError::NotInstalled { kind } => write!(
                f,
                "{kind} not installed (apt-get install -y nginx haproxy, or set {})",
                kind.binary_env_var()
            ),
            ProxyError::Io { context, source } => write!(f, "{context}: {source}"),
            ProxyError::ConfigRejected {
                kind,
                status,
                output,
                dir,
            } => write!(
                f,
                "{kind} rejected the generated configuration ({status}; files kept in {}):\n{output}",
                dir.display()
            ),
            ProxyError::Exited {
                kind,
                status,
                log_tail,
                dir,
            } => write!(
                f,
                "{kind} exited before accepting connections ({status}; logs kept in {}); log tail:\n{log_tail}",
                dir.display()
            ),
            ProxyError::NotReady {
                kind,
                addr,
                log_tail,
                dir,
            } => write!(
                f,
                "{kind} did not accept connections on {addr} within {READY_TIMEOUT:?} (logs kept in {}); \
                 log tail:\n{log_tail}",
                dir.display()
            ),
        }
    }
}

impl std::error::Error for ProxyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProxyError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Finds the executable for `kind`: the path in the environment variable [`ProxyKind::binary_env_var`] if set,
/// else the first executable file named [`ProxyKind::binary_name`] in `PATH`, `/usr/sbin`, `/usr/local/sbin`
/// or `/sbin` (Debian installs both proxies in `/usr/sbin`, which is not in an unprivileged user's `PATH`).
pub fn find_binary(kind: ProxyKind) -> Option<PathBuf> {
    if let Some(explicit) = std::env::var_os(kind.binary_env_var()) {
        let explicit = PathBuf::from(explicit);
        return is_executable(&explicit).then_some(explicit);
    }
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(kind.binary_name()))
        .find(|candidate| is_executable(candidate))
}

/// The test policy for a missing proxy: returns the executable if [`find_binary`] finds it. Otherwise, under
/// `CI=true` (or `CI=1`) it panics so the test fails; elsewhere it prints
/// `SKIPPED: <kind> not installed (apt-get install -y nginx haproxy)` to stderr and returns `None`, and the test
/// should return early.
///
/// # Panics
///
/// If the binary is missing and the environment variable `CI` is `true` or `1`.
pub fn require(kind: ProxyKind) -> Option<PathBuf> {
    if let Some(binary) = find_binary(kind) {
        return Some(binary);
    }
    let var = kind.binary_env_var();
    match std::env::var_os(var) {
        Some(path) => crate::external::missing(
            &format!("{kind} ({var}={})", Path::new(&path).display()),
            "it is not an executable file",
        ),
        None => crate::external::missing(
            &kind.to_string(),
            &format!(
                "not in PATH, /usr/sbin, /usr/local/sbin or /sbin: apt-get install -y nginx haproxy, \
                 or set {var}"
            ),
        ),
    }
}

/// The first line of the proxy's version output, e.g. `nginx version: nginx/1.22.1` or
/// `HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/`.
pub fn version(kind: ProxyKind, binary: &Path) -> Result<String, ProxyError> {
    let output = Command::new(binary)
        .arg("-v")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ProxyError::io(format!("running `{} -v`", binary.display()), e))?;
    // nginx prints its version on stderr, HAProxy on stdout.
    let text = [output.stdout, output.stderr]
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect::<String>();
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| ProxyError::InvalidConfig {
            kind,
            reason: format!("`{} -v` printed nothing", binary.display()),
        })
}

/// A proxy process started by [`RunningProxy::start`]; stopped when dropped.
#[derive(Debug)]
pub struct RunningProxy {
    kind: ProxyKind,
    child: Option<Child>,
    dir: PathBuf,
    addr: SocketAddr,
    keep_dir: bool,
}

impl RunningProxy {
    /// Writes, validates and starts the proxy, and waits until its port accepts TCP connections
    /// (see the [module docs](self) for the steps).
    pub fn start(config: &ProxyConfig) -> Result<RunningProxy, ProxyError> {
        let kind = config.kind;
        if !config.upstream.ip().is_loopback() {
            return Err(ProxyError::InvalidConfig {
                kind,
                reason: format!("upstream {} is not a loopback address", config.upstream),
            });
        }
        let timeout_ms = config.idle_timeout.as_millis();
        if timeout_ms == 0 || timeout_ms > u128::from(u32::MAX / 2) {
            return Err(ProxyError::InvalidConfig {
                kind,
                reason: format!(
                    "idle_timeout {:?} must be between 1 ms and 2^31-1 ms (about 24 days)",
                    config.idle_timeout
                ),
            });
        }
        let binary = match &config.binary {
            Some(b) => b.clone(),
            None => find_binary(kind).ok_or(ProxyError::NotInstalled { kind })?,
        };

        if config.tls.is_some() && (kind != ProxyKind::Nginx || config.traffic == Traffic::Grpc) {
            return Err(ProxyError::InvalidConfig {
                kind,
                reason: "TLS is templated for nginx carrying gRPC-Web only".to_owned(),
            });
        }
        let http2_directive = match kind {
            ProxyKind::Nginx => nginx_needs_http2_directive(&version(kind, &binary)?),
            ProxyKind::Haproxy => false,
        };
        let root = work_root(config.work_root.as_deref());
        // Refuse a root the configuration languages cannot express before creating anything under it.
        config_path(kind, &root)?;
        let dir = fresh_dir(&root, kind)?;
        let addr = free_loopback_port()?;
        let (config_path, text) = match kind {
            ProxyKind::Nginx => {
                for sub in NGINX_TEMP_DIRS {
                    let path = dir.join("tmp").join(sub);
                    fs::create_dir_all(&path)
                        .map_err(|e| ProxyError::io(format!("creating {}", path.display()), e))?;
                }
                let text = nginx_config(&NginxParams {
                    prefix: &dir,
                    listen: addr,
                    upstream: config.upstream,
                    timeout_ms,
                    http2_directive,
                    traffic: config.traffic,
                    tls: config.tls.as_ref(),
                })?;
                (dir.join("nginx.conf"), text)
            }
            ProxyKind::Haproxy => {
                let text = haproxy_config(&dir, addr, config.upstream, timeout_ms, config.traffic)?;
                (dir.join("haproxy.cfg"), text)
            }
        };
        fs::write(&config_path, &text)
            .map_err(|e| ProxyError::io(format!("writing {}", config_path.display()), e))?;

        validate(kind, &binary, &dir, &config_path, &text)?;

        let stdout = create_log(&dir, "stdout.log")?;
        let stderr = create_log(&dir, "stderr.log")?;
        let mut command = Command::new(&binary);
        command
            .args(run_args(kind, &dir, &config_path))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let child = command
            .spawn()
            .map_err(|e| ProxyError::io(format!("starting {}", binary.display()), e))?;
        // From here on, any error return drops `proxy`, which stops the child.
        let mut proxy = RunningProxy {
            kind,
            child: Some(child),
            dir,
            addr,
            keep_dir: false,
        };
        if let Err(e) = proxy.wait_ready() {
            proxy.keep_dir = true;
            return Err(e);
        }
        Ok(proxy)
    }

    /// The loopback address clients connect to (h2c, prior knowledge).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Which proxy this is.
    pub fn kind(&self) -> ProxyKind {
        self.kind
    }

    /// The directory holding the configuration and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The process id, while the process has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The proxy's logs (the tail of each file: error, access, stdout and stderr), for failure messages.
    pub fn logs(&self) -> String {
        read_logs(&self.dir)
    }

    /// Stops the proxy (SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]) and returns its exit status.
    /// Dropping does the same, ignoring errors.
    pub fn stop(mut self) -> Result<ExitStatus, ProxyError> {
        match self.shutdown() {
            Ok(Some(status)) => Ok(status),
            // Unreachable: only `stop` and `drop` take the child, and both consume the proxy.
            Ok(None) => Err(ProxyError::io(
                format!("stopping {}", self.kind),
                io::Error::other("already stopped"),
            )),
            Err(e) => {
                self.keep_dir = true;
                Err(ProxyError::io(format!("stopping {}", self.kind), e))
            }
        }
    }

    fn wait_ready(&mut self) -> Result<(), ProxyError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                let exited = child
                    .try_wait()
                    .map_err(|e| ProxyError::io(format!("polling {}", self.kind), e))?;
                if let Some(status) = exited {
                    return Err(ProxyError::Exited {
                        kind: self.kind,
                        status,
                        log_tail: self.log_tail(),
                        dir: self.dir.clone(),
                    });
                }
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ProxyError::NotReady {
                    kind: self.kind,
                    addr: self.addr,
                    log_tail: self.log_tail(),
                    dir: self.dir.clone(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_tail(&self) -> String {
        let logs = self.logs();
        let lines: Vec<&str> = logs.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// SIGTERM to our own child only (its PID cannot be reused before we reap it), bounded wait, SIGKILL.
    fn shutdown(&mut self) -> io::Result<Option<ExitStatus>> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let termed = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if termed {
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                if let Some(status) = child.try_wait()? {
                    return Ok(Some(status));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        // Without `kill` or after the grace period: SIGKILL. Safe for both proxies because each runs as one
        // process (`master_process off`, `haproxy -db`), so no orphaned worker can keep the port.
        child.kill()?;
        child.wait().map(Some)
    }
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("warning: stopping {} failed: {e}", self.kind);
            self.keep_dir = true;
        }
        if self.keep_dir || std::thread::panicking() {
            eprintln!(
                "note: {} configuration and logs kept in {}",
                self.kind,
                self.dir.display()
            );
        } else {
            // Best effort: a leftover directory under the target dir is harmless.
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn is_executable(path: &Path) -> bool {
    let Ok(meta) = fs::metadata(path) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.is_file() && meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        meta.is_file()
    }
}

fn free_loopback_port() -> Result<SocketAddr, ProxyError> {
    // The port is free when we close it; another process could take it before the proxy binds. Then the proxy
    // exits with "address in use" (nginx after its bind retries), reported as `ProxyError::Exited`.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| ProxyError::io("binding 127.0.0.1:0 to find a free port", e))?;
    listener
        .local_addr()
        .map_err(|e| ProxyError::io("reading the free port", e))
}

/// `<root>/inlinekeepalive-proxies`, where `<root>` is explicit, else `$CARGO_TARGET_TMPDIR`, else the temp dir.
fn work_root(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("CARGO_TARGET_TMPDIR").map(PathBuf::from))
        .unwrap_or_else(std::env::temp_dir)
        .join("inlinekeepalive-proxies")
}

fn fresh_dir(root: &Path, kind: ProxyKind) -> Result<PathBuf, ProxyError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    fs::create_dir_all(root)
        .map_err(|e| ProxyError::io(format!("creating {}", root.display()), e))?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = root.join(format!("{kind}-{}-{n}-{nanos:09}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            // A directory left by an earlier process with the same PID: take the next name.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(ProxyError::io(format!("creating {}", dir.display()), e)),
        }
    }
}

fn create_log(dir: &Path, name: &str) -> Result<File, ProxyError> {
    let path = dir.join(name);
    File::create(&path).map_err(|e| ProxyError::io(format!("creating {}", path.display()), e))
}

/// Rejects paths the configuration languages would need escaping for.
fn config_path(kind: ProxyKind, path: &Path) -> Result<String, ProxyError> {
    let text = path.to_str().ok_or_else(|| ProxyError::InvalidConfig {
        kind,
        reason: format!("path {} is not UTF-8", path.display()),
    })?;
    if let Some(bad) = text
        .chars()
        .find(|c| c.is_control() || matches!(c, '"' | '\'' | '\\' | '$' | ';' | '{' | '}' | '#'))
    {
        return Err(ProxyError::InvalidConfig {
            kind,
            reason: format!("path {text:?} contains {bad:?}; choose another work_root"),
        });
    }
    Ok(text.to_owned())
}

/// The temp directories nginx may write request/response bodies to; all of them live under `P/tmp/`.
const NGINX_TEMP_DIRS: [&str; 5] = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"];

/// Whether this nginx wants `http2 on;` rather than the (deprecated since 1.25.1) `listen ... http2` parameter.
fn nginx_needs_http2_directive(version_line: &str) -> bool {
    parse_nginx_version(version_line).is_some_and(|v| v >= NGINX_HTTP2_DIRECTIVE_SINCE)
}

/// Parses `nginx version: nginx/1.22.1` (possibly with a suffix such as ` (Ubuntu)`).
fn parse_nginx_version(version_line: &str) -> Option<(u32, u32, u32)> {
    let rest = version_line.split("nginx/").nth(1)?;
    let digits: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut parts = digits.split('.').map(|p| p.parse::<u32>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

struct NginxParams<'a> {
    prefix: &'a Path,
    listen: SocketAddr,
    upstream: SocketAddr,
    timeout_ms: u128,
    http2_directive: bool,
    traffic: Traffic,
    tls: Option<&'a Tls>,
}

fn nginx_config(p: &NginxParams<'_>) -> Result<String, ProxyError> {
    let dir = config_path(ProxyKind::Nginx, p.prefix)?;
    let t = p.timeout_ms;
    let (listen_http2, http2_on) = if p.http2_directive {
        ("", "\n        http2 on;")
    } else {
        (" http2", "")
    };
    let listen = p.listen;
    let upstream = p.upstream;
    let server = match p.traffic {
        Traffic::Grpc => format!(
            r#"
        # h2c with prior knowledge (no TLS, no HTTP/1.1 upgrade).
        listen {listen}{listen_http2};{http2_on}

        # Server-to-client idle: the longest gap between two reads from the upstream. Fires on an idle server
        # stream (and a bidi stream once the server has answered); HTTP/2 PINGs do not re-arm it, because
        # nginx answers client PINGs itself and never forwards them. Data in either direction re-arms it on
        # a flowing bidi stream.
        grpc_read_timeout {t}ms;
        # Client-to-server idle: the longest gap between two reads of the request body. Fires on an idle
        # client stream (RST_STREAM PROTOCOL_ERROR to the client, 408 in the access log).
        client_body_timeout {t}ms;
        # These never fire on an established idle stream (measured), but a test's timeout should bound
        # every wait the proxy can do.
        grpc_connect_timeout {t}ms;
        grpc_send_timeout {t}ms;

        location / {{
            grpc_pass grpc://{upstream};
        }}"#
        ),
        Traffic::GrpcWeb(client) => {
            let (listen_http2, http2_on) = match client {
                ClientHttp::Http1 => ("", ""),
                ClientHttp::Http2 => (listen_http2, http2_on),
            };
            let (listen_ssl, ssl) = match p.tls {
                None => (String::new(), String::new()),
                Some(tls) => (
                    " ssl".to_owned(),
                    format!(
                        "\n        ssl_certificate \"{}\";\n        ssl_certificate_key \"{}\";",
                        config_path(ProxyKind::Nginx, &tls.cert)?,
                        config_path(ProxyKind::Nginx, &tls.key)?
                    ),
                ),
            };
            format!(
                r#"
        # gRPC-Web from the client over {client} (h2 without TLS: h2c with prior knowledge).
        listen {listen}{listen_ssl}{listen_http2};{http2_on}{ssl}

        # Server-to-client idle: the longest gap between two reads from the upstream; an idle gRPC-Web
        # server stream dies when it expires.
        proxy_read_timeout {t}ms;
        # Client-to-server idle, and the bounds of every other wait.
        client_body_timeout {t}ms;
        proxy_connect_timeout {t}ms;
        proxy_send_timeout {t}ms;
        send_timeout {t}ms;

        location / {{
            # HTTP/1.1 to tonic (accept_http1 + tonic-web), on kept-alive upstream connections.
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # Forward each chunk as it arrives, both ways: a keepalive must not wait in a buffer.
            proxy_buffering off;
            proxy_request_buffering off;
        }}"#
            )
        }
    };
    Ok(format!(
        r#"# Generated by inlinekeepalive_tests::proxies for one test run; everything lives under this directory.
# One foreground process: with a master, a SIGKILLed master would leave its worker holding the port.
daemon off;
master_process off;
worker_processes 1;
pid "{dir}/nginx.pid";
error_log "{dir}/error.log" info;

events {{
    worker_connections 256;
}}

http {{
    # Temp paths inside the run directory (Debian's compiled-in defaults are under /var/lib/nginx).
    client_body_temp_path "{dir}/tmp/client_body";
    proxy_temp_path "{dir}/tmp/proxy";
    fastcgi_temp_path "{dir}/tmp/fastcgi";
    uwsgi_temp_path "{dir}/tmp/uwsgi";
    scgi_temp_path "{dir}/tmp/scgi";

    log_format ika '$remote_addr [$time_local] "$request" status=$status bytes=$body_bytes_sent '
                   'request_time=$request_time upstream_status=$upstream_status '
                   'upstream_time=$upstream_response_time';
    access_log "{dir}/access.log" ika;

    server {{{server}
    }}
}}
"#
    ))
}

fn haproxy_config(
    prefix: &Path,
    listen: SocketAddr,
    upstream: SocketAddr,
    timeout_ms: u128,
    traffic: Traffic,
) -> Result<String, ProxyError> {
    let dir = config_path(ProxyKind::Haproxy, prefix)?;
    let t = timeout_ms;
    // gRPC: h2c on both sides. gRPC-Web: the client's HTTP version, HTTP/1.1 to the server.
    let (bind_proto, server_proto) = match traffic {
        Traffic::Grpc => (" proto h2", " proto h2"),
        Traffic::GrpcWeb(ClientHttp::Http1) => ("", ""),
        Traffic::GrpcWeb(ClientHttp::Http2) => (" proto h2", ""),
    };
    Ok(format!(
        r#"# Generated by inlinekeepalive_tests::proxies for one test run; runs as `haproxy -db` (one foreground process).
global
    pidfile "{dir}/haproxy.pid"
    # Traffic logs go to stdout, which the harness captures to stdout.log.
    log stdout format raw local0 info
    nbthread 1
    # Bounds the memory HAProxy sizes from the file-descriptor limit.
    maxconn 256

defaults
    mode http
    log global
    option httplog
    # `timeout server` governs an active idle HTTP/2 stream in both directions: data either way re-arms it,
    # PINGs do not (HAProxy answers them itself). Expired on a server stream: the client gets an empty
    # DATA+END_STREAM without grpc-status trailers; on a client stream: HTTP 504.
    timeout server {t}ms
    # Client-side inactivity; measured never to end an active idle h2 stream, set for completeness.
    timeout client {t}ms
    # Connecting to the upstream.
    timeout connect {t}ms

frontend fe
    # `proto h2`: h2c with prior knowledge; without it, HTTP/1.1.
    bind {listen}{bind_proto}
    default_backend be

backend be
    server up {upstream}{server_proto}
"#
    ))
}

fn run_args(kind: ProxyKind, dir: &Path, config: &Path) -> Vec<std::ffi::OsString> {
    match kind {
        // `-p P/` sets the prefix; `-e` keeps Debian's compiled-in error log (/var/log/nginx) out of the run.
        ProxyKind::Nginx => vec![
            "-p".into(),
            prefix_arg(dir),
            "-c".into(),
            config.into(),
            "-e".into(),
            dir.join("error.log").into(),
        ],
        // `-db`: foreground, no daemon, logs and alerts on stdout/stderr.
        ProxyKind::Haproxy => vec!["-db".into(), "-f".into(), config.into()],
    }
}

fn prefix_arg(dir: &Path) -> std::ffi::OsString {
    let mut prefix = dir.as_os_str().to_owned();
    prefix.push("/");
    prefix
}

fn validate(
    kind: ProxyKind,
    binary: &Path,
    dir: &Path,
    config: &Path,
    text: &str,
) -> Result<(), ProxyError> {
    let mut command = Command::new(binary);
    match kind {
        ProxyKind::Nginx => command.args(["-t", "-q"]).args(run_args(kind, dir, config)),
        ProxyKind::Haproxy => command.args(["-c", "-q", "-f"]).arg(config),
    };
    let output = command
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ProxyError::io(format!("validating with {}", binary.display()), e))?;
    if output.status.success() {
        return Ok(());
    }
    Err(ProxyError::ConfigRejected {
        kind,
        status: output.status,
        output: format!(
            "{}{}\n--- {} ---\n{text}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            config.display()
        ),
        dir: dir.to_path_buf(),
    })
}

fn read_logs(dir: &Path) -> String {
    let mut out = String::new();
    for name in ["error.log", "access.log", "stdout.log", "stderr.log"] {
        let path = dir.join(name);
        match read_tail(&path) {
            Ok(text) if text.trim().is_empty() => {}
            Ok(text) => {
                out.push_str(&format!("--- {} ---\n{text}", path.display()));
                if !text.ends_with('\n') {
                    out.push('\n');
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => out.push_str(&format!("--- {}: unreadable: {e} ---\n", path.display())),
        }
    }
    out
}

fn read_tail(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(LOG_TAIL_BYTES);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if start == 0 {
        return Ok(text);
    }
    // Cut the partial first line.
    Ok(match text.split_once('\n') {
        Some((_, rest)) => format!("[... truncated ...]\n{rest}"),
        None => text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nginx_versions() {
        assert_eq!(
            parse_nginx_version("nginx version: nginx/1.22.1"),
            Some((1, 22, 1))
        );
        assert_eq!(
            parse_nginx_version("nginx version: nginx/1.25.1 (Ubuntu)"),
            Some((1, 25, 1))
        );
        assert_eq!(
            parse_nginx_version("nginx version: nginx/1.27"),
            Some((1, 27, 0))
        );
        assert_eq!(parse_nginx_version("openresty/1.21"), None);
        assert!(!nginx_needs_http2_directive("nginx version: nginx/1.22.1"));
        assert!(nginx_needs_http2_directive("nginx version: nginx/1.25.1"));
        assert!(nginx_needs_http2_directive("nginx version: nginx/1.26.3"));
    }

    #[test]
    fn templates_apply_the_timeout_everywhere() {
        let listen: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let upstream: SocketAddr = "127.0.0.1:2000".parse().unwrap();
        let nginx = nginx_config(&NginxParams {
            prefix: Path::new("/tmp/x"),
            listen,
            upstream,
            timeout_ms: 1500,
            http2_directive: false,
            traffic: Traffic::Grpc,
            tls: None,
        })
        .unwrap();
        for line in [
            "grpc_read_timeout 1500ms;",
            "client_body_timeout 1500ms;",
            "listen 127.0.0.1:1000 http2;",
            "grpc_pass grpc://127.0.0.1:2000;",
            "master_process off;",
            "daemon off;",
            "access_log \"/tmp/x/access.log\" ika;",
        ] {
            assert!(nginx.contains(line), "{line} missing from\n{nginx}");
        }
        let newer = nginx_config(&NginxParams {
            prefix: Path::new("/tmp/x"),
            listen,
            upstream,
            timeout_ms: 1500,
            http2_directive: true,
            traffic: Traffic::Grpc,
            tls: None,
        })
        .unwrap();
        assert!(newer.contains("listen 127.0.0.1:1000;\n        http2 on;"));

        let haproxy =
            haproxy_config(Path::new("/tmp/x"), listen, upstream, 1500, Traffic::Grpc).unwrap();
        for line in [
            "timeout server 1500ms",
            "timeout client 1500ms",
            "timeout connect 1500ms",
            "bind 127.0.0.1:1000 proto h2",
            "server up 127.0.0.1:2000 proto h2",
            "mode http",
        ] {
            assert!(haproxy.contains(line), "{line} missing from\n{haproxy}");
        }
    }

    #[test]
    fn grpc_web_templates_proxy_http1_unbuffered() {
        let listen: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let upstream: SocketAddr = "127.0.0.1:2000".parse().unwrap();
        for (client, listen_line) in [
            (ClientHttp::Http1, "listen 127.0.0.1:1000;"),
            (ClientHttp::Http2, "listen 127.0.0.1:1000 http2;"),
        ] {
            let nginx = nginx_config(&NginxParams {
                prefix: Path::new("/tmp/x"),
                listen,
                upstream,
                timeout_ms: 2000,
                http2_directive: false,
                traffic: Traffic::GrpcWeb(client),
                tls: None,
            })
            .unwrap();
            for line in [
                listen_line,
                "proxy_read_timeout 2000ms;",
                "client_body_timeout 2000ms;",
                "send_timeout 2000ms;",
                "proxy_pass http://127.0.0.1:2000;",
                "proxy_http_version 1.1;",
                "proxy_buffering off;",
                "proxy_request_buffering off;",
            ] {
                assert!(nginx.contains(line), "{line} missing from\n{nginx}");
            }
            assert!(!nginx.contains("grpc_pass"), "{nginx}");
        }
        let tls = Tls {
            cert: PathBuf::from("/tmp/x/cert.pem"),
            key: PathBuf::from("/tmp/x/key.pem"),
        };
        let nginx = nginx_config(&NginxParams {
            prefix: Path::new("/tmp/x"),
            listen,
            upstream,
            timeout_ms: 2000,
            http2_directive: false,
            traffic: Traffic::GrpcWeb(ClientHttp::Http2),
            tls: Some(&tls),
        })
        .unwrap();
        for line in [
            "listen 127.0.0.1:1000 ssl http2;",
            "ssl_certificate \"/tmp/x/cert.pem\";",
            "ssl_certificate_key \"/tmp/x/key.pem\";",
        ] {
            assert!(nginx.contains(line), "{line} missing from\n{nginx}");
        }
        for (client, bind) in [
            (ClientHttp::Http1, "bind 127.0.0.1:1000\n"),
            (ClientHttp::Http2, "bind 127.0.0.1:1000 proto h2\n"),
        ] {
            let haproxy = haproxy_config(
                Path::new("/tmp/x"),
                listen,
                upstream,
                2000,
                Traffic::GrpcWeb(client),
            )
            .unwrap();
            for line in [bind, "server up 127.0.0.1:2000\n", "timeout server 2000ms"] {
                assert!(haproxy.contains(line), "{line:?} missing from\n{haproxy}");
            }
        }
    }

    #[test]
    fn rejects_paths_that_need_escaping() {
        assert!(config_path(ProxyKind::Nginx, Path::new("/tmp/a b")).is_ok());
        assert!(config_path(ProxyKind::Nginx, Path::new("/tmp/a\"b")).is_err());
        assert!(config_path(ProxyKind::Haproxy, Path::new("/tmp/a;b")).is_err());
    }
}
