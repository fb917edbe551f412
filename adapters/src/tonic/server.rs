//! The server layer.

use std::task::{Context, Poll};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::body::PeerSends;
use super::common::{announces_support, encoding, inner_accessors, is_grpc};
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
#[derive(Clone, Debug, Default)]
pub struct ServerKeepaliveLayer {
    config: Config,
    seeds: Seeds,
}

impl ServerKeepaliveLayer {
    /// A layer that sends keepalives as `config` says.
    #[must_use]
    pub fn new(config: Config) -> Self {
        Self {
            config,
            seeds: Seeds::new(),
        }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
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
