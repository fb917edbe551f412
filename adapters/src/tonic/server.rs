//! The server layer.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::body::PeerSends;
use super::common::{announces_support, encoding, inner_accessors, is_grpc, is_grpc_web};
use super::future::{Pending, ResponseFuture};
use super::{KeepaliveBody, KeepaliveStats, Seeds};
use crate::Config;

/// A [`Layer`] for tonic servers: removes the clients' keepalives from
/// request bodies and inserts keepalives into idle response bodies of
/// clients that asked for them.
///
/// For every gRPC request (`content-type: application/grpc` or
/// `application/grpc+<codec>`):
/// - the request body becomes an inbound [`KeepaliveBody`]: keepalive frames
///   are removed before tonic decodes anything, whatever the method or
///   message type, honouring `grpc-encoding`;
/// - a [`KeepaliveStats`] handle is inserted into the request's extensions
///   (a handler reads it with `request.extensions().get::<KeepaliveStats>()`);
/// - the response gets the header `wp-inline-keepalives: true`;
/// - the response body becomes an outbound [`KeepaliveBody`] that sends a keepalive
///   whenever it was idle for the configured interval, **only** if the
///   request carried `wp-inline-keepalives: true`, only between whole
///   messages and never after the body's end.
///
/// Other requests (gRPC-Web, REST, anything else) and their responses pass
/// through untouched.
///
/// ```no_run
/// # use std::time::Duration;
/// use inlinekeepalive::tonic::{Config, ServerKeepaliveLayer};
///
/// # async fn run(routes: tonic::service::Routes) -> Result<(), Box<dyn std::error::Error>> {
/// let config = Config::new(Duration::from_secs(20))?;
/// tonic::transport::Server::builder()
///     .layer(ServerKeepaliveLayer::new(config))
///     .add_routes(routes) // or .add_service(MyServer::new(handler))
///     .serve("127.0.0.1:50051".parse()?)
///     .await?;
/// # Ok(()) }
/// ```
///
/// # gRPC-Web (browsers)
///
/// Put tonic-web's `GrpcWebLayer` **outside** this layer (an earlier
/// `.layer(...)` on the builder), with `accept_http1(true)`. tonic-web then
/// turns each gRPC-Web request into plain gRPC before this layer sees it,
/// and turns the response back: a keepalive is framed, and for
/// `application/grpc-web-text` base64-encoded, exactly like every
/// application message, and the trailers frame still comes last. tonic-web
/// wants a `tonic::body::Body` from the service it wraps, so map the
/// response body in between:
///
/// ```no_run
/// # use std::time::Duration;
/// # use inlinekeepalive::tonic::{Config, ServerKeepaliveLayer};
/// # use tower_http::map_response_body::MapResponseBodyLayer;
/// # async fn run(routes: tonic::service::Routes) -> Result<(), Box<dyn std::error::Error>> {
/// # let config = Config::new(Duration::from_secs(20))?;
/// # let addr = "127.0.0.1:8080".parse()?;
/// // With tonic-web and tower-http (feature "map-response-body"):
/// tonic::transport::Server::builder()
///     .accept_http1(true) // browsers often speak HTTP/1.1
///     .layer(tonic_web::GrpcWebLayer::new()) // outside
///     .layer(MapResponseBodyLayer::new(tonic::body::Body::new))
///     .layer(ServerKeepaliveLayer::new(config)) // inside: sees plain gRPC
///     .add_routes(routes)
///     .serve(addr)
///     .await?;
/// # Ok(()) }
/// ```
///
/// In the other order this layer sees `application/grpc-web` bodies, which
/// it cannot follow, passes them through and sends no keepalives at all: it
/// then logs a `WARN` (once per layer) naming the fix. The README's
/// "Browsers (gRPC-Web)" section has the whole setup, with CORS.
#[derive(Clone, Debug, Default)]
pub struct ServerKeepaliveLayer {
    config: Config,
    seeds: Seeds,
    /// Set once the layer warned of a gRPC-Web request (wrong layer order).
    warned_grpc_web: Arc<AtomicBool>,
}

impl ServerKeepaliveLayer {
    /// A layer that sends keepalives as `config` says.
    #[must_use]
    pub fn new(config: Config) -> Self {
        Self {
            config,
            seeds: Seeds::new(),
            warned_grpc_web: Arc::default(),
        }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }
}

impl ServerKeepaliveLayer {
    /// Warns, once per layer, that gRPC-Web reached the layer: tonic-web's
    /// `GrpcWebLayer` is inside it, or missing.
    #[cold]
    fn warn_grpc_web(&self) {
        if !self.warned_grpc_web.swap(true, Relaxed) {
            tracing::warn!(
                target: "inlinekeepalive",
                "ServerKeepaliveLayer saw a gRPC-Web request (content-type application/grpc-web*) \
                 and passes it through without keepalives: put tonic-web's GrpcWebLayer outside \
                 it (an earlier .layer() on the server builder), so that it sees plain gRPC"
            );
        }
    }
}

impl<S> Layer<S> for ServerKeepaliveLayer {
    type Service = ServerKeepalive<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerKeepalive {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`ServerKeepaliveLayer`].
#[derive(Clone, Debug)]
pub struct ServerKeepalive<S> {
    inner: S,
    layer: ServerKeepaliveLayer,
}

inner_accessors!(ServerKeepalive);

impl<S, B, ResBody> Service<Request<B>> for ServerKeepalive<S>
where
    S: Service<Request<KeepaliveBody<B>>, Response = Response<ResBody>>,
{
    type Response = Response<KeepaliveBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        if !is_grpc(&parts.headers) {
            if is_grpc_web(&parts.headers) {
                self.layer.warn_grpc_web();
            }
            let request = Request::from_parts(parts, KeepaliveBody::untouched(body));
            return ResponseFuture::new(self.inner.call(request), Pending::Untouched);
        }
        let config = self.layer.config;
        let stats = KeepaliveStats::new();
        // The client announcing support says it removes keepalives, not
        // that it sends them: watch it from its first keepalive.
        let client_removes = announces_support(&parts.headers);
        stats.set_peer_support(client_removes);
        let body = KeepaliveBody::inbound(
            body,
            encoding(&parts.headers),
            &config,
            PeerSends::Maybe,
            stats.clone(),
        );
        parts.extensions.insert(stats.clone());
        let future = self.inner.call(Request::from_parts(parts, body));
        ResponseFuture::new(
            future,
            Pending::Server {
                client_removes,
                config,
                stats,
                seed: self.layer.seeds.next(),
            },
        )
    }
}
