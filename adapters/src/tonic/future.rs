//! [`ResponseFuture`]: the response future of both layers' services.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{HeaderValue, Response};
use pin_project_lite::pin_project;

use super::body::{PeerSends, Support};
use super::common::{announces_support, encoding, is_grpc, METADATA_KEY};
use super::{KeepaliveBody, KeepaliveStats};
use crate::core::Config;

/// What the response needs from the request, by side.
#[derive(Debug)]
pub(crate) enum Pending {
    /// A server's response to a gRPC request.
    Server {
        /// The client announced that it removes keepalives.
        client_removes: bool,
        config: Config,
        stats: KeepaliveStats,
        seed: u64,
    },
    /// A client's response to a gRPC request.
    Client {
        config: Config,
        stats: KeepaliveStats,
    },
    /// Not gRPC: the response passes through untouched.
    Untouched,
}

pin_project! {
    /// The response future of [`ServerKeepalive`](super::ServerKeepalive)
    /// and [`ClientKeepalive`](super::ClientKeepalive): wraps the response
    /// body in a [`KeepaliveBody`] once the inner service answered.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        future: F,
        // `None` once the response was handed out.
        pending: Option<Pending>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(future: F, pending: Pending) -> Self {
        Self {
            future,
            pending: Some(pending),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<KeepaliveBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.pending.is_none() {
            // Polled after completion, which the `Future` contract leaves
            // unspecified: stay pending rather than poll the inner again.
            return Poll::Pending;
        }
        let result = ready!(this.future.poll(cx));
        let Some(pending) = this.pending.take() else {
            return Poll::Pending;
        };
        let response = match (result, &pending) {
            (Ok(response), _) => response,
            (Err(error), Pending::Client { stats, .. }) => {
                // No response: a request body waiting to learn stops waiting.
                stats.set_peer_support(false);
                return Poll::Ready(Err(error));
            }
            (Err(error), _) => return Poll::Ready(Err(error)),
        };
        let (mut parts, body) = response.into_parts();
        let body = match pending {
            Pending::Server {
                client_removes,
                config,
                stats,
                seed,
            } if is_grpc(&parts.headers) => {
                parts
                    .headers
                    .insert(METADATA_KEY, HeaderValue::from_static("true"));
                if client_removes {
                    KeepaliveBody::outbound(body, &config, Support::Yes, stats, seed)
                } else {
                    KeepaliveBody::untouched(body)
                }
            }
            Pending::Client { config, stats } if is_grpc(&parts.headers) => {
                let announced = announces_support(&parts.headers);
                stats.set_peer_support(announced);
                // A server that announces support sends keepalives from the
                // start; another one might still send them.
                let peer_sends = if announced {
                    PeerSends::Yes
                } else {
                    PeerSends::Maybe
                };
                let body = KeepaliveBody::inbound(
                    body,
                    encoding(&parts.headers),
                    &config,
                    peer_sends,
                    stats.clone(),
                );
                parts.extensions.insert(stats);
                body
            }
            Pending::Client { stats, .. } => {
                stats.set_peer_support(false);
                KeepaliveBody::untouched(body)
            }
            Pending::Server { .. } | Pending::Untouched => KeepaliveBody::untouched(body),
        };
        Poll::Ready(Ok(Response::from_parts(parts, body)))
    }
}
