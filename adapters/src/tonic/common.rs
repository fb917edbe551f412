//! What the server and client layers share: wrapping an inbound body, and
//! the skeleton of their response futures.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::body::{announces_support, encoding, is_grpc, PeerSends};
use super::{FilteredBody, KeepaliveStats};
use crate::core::Config;

/// An inbound body (a server's request, a client's response) wrapped by
/// [`filter_inbound`].
pub(super) struct Inbound<B> {
    pub(super) body: FilteredBody<B>,
    /// The message is gRPC (otherwise the body passes through).
    pub(super) grpc: bool,
    /// The peer announced `wp-inline-keepalives: true`.
    pub(super) announced: bool,
}

/// Wraps `body` in a [`FilteredBody`] as `headers` say (gRPC or not, its
/// `grpc-encoding`) and records in `stats` whether the peer announced
/// support. `if_announced` is what an announcement says of the peer's own
/// keepalives; without one the peer might still send them.
pub(super) fn filter_inbound<B>(
    headers: &http::HeaderMap,
    body: B,
    config: &Config,
    stats: &KeepaliveStats,
    if_announced: PeerSends,
) -> Inbound<B> {
    let grpc = is_grpc(headers);
    let announced = grpc && announces_support(headers);
    stats.set_peer_support(announced);
    let body = FilteredBody::new(
        body,
        grpc,
        encoding(headers),
        config,
        if announced {
            if_announced
        } else {
            PeerSends::Maybe
        },
        stats.clone(),
    );
    Inbound {
        body,
        grpc,
        announced,
    }
}

/// Polls the inner future of a response future and, once it completes, hands
/// back its output with the `state` taken out for building the response.
pub(super) fn poll_inner<F: Future, T>(
    future: Pin<&mut F>,
    state: &mut Option<T>,
    cx: &mut Context<'_>,
) -> Poll<(F::Output, T)> {
    if state.is_none() {
        // Polled after completion, which the `Future` contract leaves
        // unspecified: stay pending rather than poll the inner again.
        return Poll::Pending;
    }
    let output = std::task::ready!(future.poll(cx));
    state
        .take()
        .map_or(Poll::Pending, |state| Poll::Ready((output, state)))
}

/// `get_ref`, `get_mut` and `into_inner` for a service wrapping `inner: S`.
macro_rules! inner_accessors {
    ($service:ident) => {
        impl<S> $service<S> {
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
    };
}
pub(super) use inner_accessors;
