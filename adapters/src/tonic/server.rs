//! The server layer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::body::{announces_support, encoding, is_grpc, PeerSends, Support};
use super::{metadata_key, FilteredBody, KeepaliveBody, KeepaliveStats, Seeds};
use crate::core::Config;

/// A [`Layer`] for tonic servers: removes the clients' keepalives from
/// request bodies and inserts keepalives into idle response bodies of
/// clients that asked for them.
///
/// For every gRPC request (`content-type: application/grpc…`):
/// - the request body becomes a [`FilteredBody`]: keepalive frames are
///   removed before tonic decodes anything, whatever the method or message
///   type, honouring `grpc-encoding`;
/// - a [`KeepaliveStats`] handle is inserted into the request's extensions
///   (a handler reads it with `request.extensions().get::<KeepaliveStats>()`);
/// - the response gets the header `wp-inline-keepalives: true`;
/// - the response body becomes a [`KeepaliveBody`] that sends a keepalive
///   whenever it was idle for the configured interval, **only** if the
///   request carried `wp-inline-keepalives: true`, only between whole
///   messages and never after the body's end.
///
/// Other requests pass through untouched.
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

impl<S> ServerKeepalive<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, ResBody> Service<Request<B>> for ServerKeepalive<S>
where
    S: Service<Request<FilteredBody<B>>, Response = Response<ResBody>>,
{
    type Response = Response<KeepaliveBody<ResBody>>;
    type Error = S::Error;
    type Future = ServerResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        let grpc = is_grpc(&parts.headers);
        let stats = KeepaliveStats::new();
        let client_removes = grpc && announces_support(&parts.headers);
        stats.set_peer_support(client_removes);
        let body = FilteredBody::new(
            body,
            grpc,
            encoding(&parts.headers),
            &self.layer.config,
            PeerSends::Maybe,
            stats.clone(),
        );
        if grpc {
            parts.extensions.insert(stats.clone());
        }
        let future = self.inner.call(Request::from_parts(parts, body));
        ServerResponseFuture {
            future,
            response: Some(ResponseState {
                grpc,
                support: if client_removes {
                    Support::Yes
                } else {
                    Support::No
                },
                config: self.layer.config,
                stats,
                seed: self.layer.seeds.next(),
            }),
        }
    }
}

#[derive(Debug)]
struct ResponseState {
    grpc: bool,
    support: Support,
    config: Config,
    stats: KeepaliveStats,
    seed: u64,
}

pin_project! {
    /// The response future of [`ServerKeepalive`].
    #[derive(Debug)]
    pub struct ServerResponseFuture<F> {
        #[pin]
        future: F,
        response: Option<ResponseState>,
    }
}

impl<F, ResBody, E> Future for ServerResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<KeepaliveBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.response.is_none() {
            // Polled after completion, which the `Future` contract leaves
            // unspecified: stay pending rather than poll the inner again.
            return Poll::Pending;
        }
        let response = std::task::ready!(this.future.poll(cx));
        let Some(state) = this.response.take() else {
            return Poll::Pending;
        };
        let response = response?;
        let (mut parts, body) = response.into_parts();
        let support = if state.grpc && is_grpc(&parts.headers) {
            parts
                .headers
                .insert(metadata_key(), HeaderValue::from_static("true"));
            state.support
        } else {
            Support::No
        };
        let body = KeepaliveBody::new(body, &state.config, support, state.stats, state.seed);
        Poll::Ready(Ok(Response::from_parts(parts, body)))
    }
}
