//! The client layer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::Body;
use tower_layer::Layer;
use tower_service::Service;

use super::body::Support;
use super::common::{inner_accessors, is_grpc, METADATA_KEY};
use super::future::{Pending, ResponseFuture};
use super::{KeepaliveBody, KeepaliveStats, Seeds};
use crate::Config;

/// The boxed error type of tower and tonic.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A user-supplied check of the server's support, run once per layer.
struct Probe {
    answer: tokio::sync::OnceCell<bool>,
    run: Box<dyn Fn() -> BoxFuture<bool> + Send + Sync>,
}

/// A [`Layer`] for tonic clients (around a
/// [`Channel`](https://docs.rs/tonic/latest/tonic/transport/struct.Channel.html)):
/// announces support on every request, removes the server's keepalives from
/// response bodies, and inserts keepalives into idle request bodies once the
/// server is known to remove them.
///
/// For every gRPC request (`content-type: application/grpc` or
/// `application/grpc+<codec>`; other requests and their responses pass
/// through untouched):
/// - the header `wp-inline-keepalives: true` is added, so a server that
///   supports inline keepalives may send them;
/// - the request body becomes an outbound [`KeepaliveBody`] (boxed into
///   `tonic::body::Body`, as `Channel` requires), which sends a keepalive
///   whenever it was idle for the configured interval, once the server is
///   known to remove keepalives, by the first of:
///   1. [`assume_server_support`](Self::assume_server_support): configured;
///   2. a [probe](Self::with_probe) that answered `true` (run once per
///      layer, before the first request, and cached);
///   3. this stream's response headers carrying `wp-inline-keepalives: true`
///      (the response future tells the request body through the stream's
///      [`KeepaliveStats`] and wakes it). tonic servers send response headers of
///      a client-streaming call only when the call ends, so this helps
///      bidirectional streams only; use 1 or 2 for client streams.
///
///   Until then nothing is sent: a server without the filter would decode a
///   keepalive as an empty message.
/// - a gRPC response body becomes an inbound [`KeepaliveBody`] without the
///   server's keepalives (honouring its `grpc-encoding`), and a [`KeepaliveStats`]
///   handle is inserted into the response's extensions.
///
/// ```no_run
/// # use std::time::Duration;
/// use inlinekeepalive::tonic::{ClientKeepaliveLayer, Config};
/// use tower::ServiceBuilder;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:50051")
///     .connect()
///     .await?;
/// let config = Config::new(Duration::from_secs(20))?;
/// let channel = ServiceBuilder::new()
///     .layer(ClientKeepaliveLayer::new(config))
///     .service(channel);
/// // let client = MyServiceClient::new(channel);
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct ClientKeepaliveLayer {
    config: Config,
    assume: bool,
    probe: Option<Arc<Probe>>,
    seeds: Seeds,
}

impl std::fmt::Debug for ClientKeepaliveLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKeepaliveLayer")
            .field("config", &self.config)
            .field("assume_server_support", &self.assume)
            .field("probe", &self.probe.as_ref().map(|p| p.answer.get()))
            .finish()
    }
}

impl ClientKeepaliveLayer {
    /// A layer that sends keepalives as `config` says, once the server's
    /// support is known.
    #[must_use]
    pub fn new(config: Config) -> Self {
        Self {
            config,
            assume: false,
            probe: None,
            seeds: Seeds::new(),
        }
    }

    /// Assume that the server removes keepalives: send them from the start
    /// of every stream. Only for servers you know run this layer, Waypoint,
    /// or another implementation of the protocol. Replaces a
    /// [probe](Self::with_probe): the last of the two calls wins.
    #[must_use]
    pub fn assume_server_support(mut self) -> Self {
        self.assume = true;
        self.probe = None;
        self
    }

    /// Ask the server once, before the first request through this layer,
    /// whether it removes keepalives, and cache the answer for every service
    /// the layer makes (`tonic` clients are cloned per call site; they share
    /// it).
    ///
    /// The probe runs inside `poll_ready` (so the first request waits for
    /// it, and no task is spawned) and must not go through this layer: give
    /// it a clone of the plain channel. For a Waypoint server, call
    /// `GetVersionInfo` and look for `FEATURE_INLINE_KEEPALIVES`; answer
    /// `false` when the call fails (for example
    /// `.is_ok_and(|r| r.into_inner().supports_inline_keepalives())` with
    /// the `inlinekeepalive-proto` crate's `GetVersionInfoResponse`). See
    /// `tests/examples/waypoint_probe.rs`.
    ///
    /// Bound its time yourself, as below: every request through the layer
    /// waits for the first answer. The answer, `false` too, is kept for the
    /// layer's life; a bidirectional stream still learns support from the
    /// server's `wp-inline-keepalives: true` response header. Replaces
    /// [`assume_server_support`](Self::assume_server_support): the last of
    /// the two calls wins.
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// use inlinekeepalive::tonic::{ClientKeepaliveLayer, Config};
    ///
    /// # fn demo(channel: tonic::transport::Channel) {
    /// let probe_channel = channel.clone();
    /// let layer = ClientKeepaliveLayer::new(Config::default()).with_probe(move || {
    ///     let channel = probe_channel.clone();
    ///     async move {
    ///         let ask = async move {
    ///             // e.g. WaypointClient::new(channel).get_version_info(()).await
    ///             //     .is_ok_and(|r| r.into_inner().supports_inline_keepalives())
    ///             let _ = channel;
    ///             true
    ///         };
    ///         // No answer in time: no client keepalives.
    ///         tokio::time::timeout(Duration::from_secs(5), ask).await.unwrap_or(false)
    ///     }
    /// });
    /// # }
    /// ```
    #[must_use]
    pub fn with_probe<F, Fut>(mut self, probe: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        self.probe = Some(Arc::new(Probe {
            answer: tokio::sync::OnceCell::new(),
            run: Box::new(move || Box::pin(probe())),
        }));
        self.assume = false;
        self
    }

    /// What the layer knows of the server's support before any response:
    /// `Some(true)` when assumed or probed so, `Some(false)` when the probe
    /// said no, `None` when there is no probe or it has not finished.
    #[must_use]
    pub fn server_support(&self) -> Option<bool> {
        if self.assume {
            return Some(true);
        }
        self.probe.as_ref().and_then(|p| p.answer.get().copied())
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }
}

impl<S> Layer<S> for ClientKeepaliveLayer {
    type Service = ClientKeepalive<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientKeepalive {
            inner,
            layer: self.clone(),
            probing: None,
        }
    }
}

/// The service made by [`ClientKeepaliveLayer`].
pub struct ClientKeepalive<S> {
    inner: S,
    layer: ClientKeepaliveLayer,
    probing: Option<BoxFuture<bool>>,
}

impl<S: Clone> Clone for ClientKeepalive<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
            probing: None,
        }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for ClientKeepalive<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKeepalive")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .field("probing", &self.probing.is_some())
            .finish()
    }
}

inner_accessors!(ClientKeepalive);

impl<S, B, ResBody> Service<Request<B>> for ClientKeepalive<S>
where
    S: Service<Request<tonic::body::Body>, Response = Response<ResBody>>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<KeepaliveBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if let Some(probe) = &self.layer.probe {
            if probe.answer.get().is_none() {
                let running = self.probing.get_or_insert_with(|| {
                    let probe = Arc::clone(probe);
                    Box::pin(async move {
                        let answer = *probe.answer.get_or_init(|| (probe.run)()).await;
                        tracing::debug!(
                            target: "inlinekeepalive",
                            supported = answer,
                            "probed the server for inline keepalive support"
                        );
                        answer
                    })
                });
                std::task::ready!(running.as_mut().poll(cx));
                self.probing = None;
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        if !is_grpc(&parts.headers) {
            let body = tonic::body::Body::new(KeepaliveBody::untouched(body));
            let future = self.inner.call(Request::from_parts(parts, body));
            return ResponseFuture::new(future, Pending::Untouched);
        }
        parts
            .headers
            .insert(METADATA_KEY, HeaderValue::from_static("true"));
        let stats = KeepaliveStats::new();
        let support = if self.layer.server_support() == Some(true) {
            stats.set_peer_support(true);
            Support::Yes
        } else {
            Support::Later
        };
        let config = self.layer.config;
        let body = KeepaliveBody::outbound(
            body,
            &config,
            support,
            stats.clone(),
            self.layer.seeds.next(),
        );
        let request = Request::from_parts(parts, tonic::body::Body::new(body));
        ResponseFuture::new(self.inner.call(request), Pending::Client { config, stats })
    }
}
