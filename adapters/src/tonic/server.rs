//! The server layer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::body::{is_grpc, PeerSends, Support};
use super::common::{filter_inbound, inner_accessors, poll_inner, Inbound};
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

inner_accessors!(ServerKeepalive);

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
        let stats = KeepaliveStats::new();
        // The client announcing support says it removes keepalives, not
        // that it sends them.
        let Inbound {
            body,
            grpc,
            announced: client_removes,
        } = filter_inbound(
            &parts.headers,
            body,
            &self.layer.config,
            &stats,
            PeerSends::Maybe,
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
        let (response, state) = std::task::ready!(poll_inner(this.future, this.response, cx));
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
