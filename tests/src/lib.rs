//! Support code for the integration tests of `inlinekeepalive`.
//!
//! - [`albsim`]: an HTTP/2 reverse proxy that behaves like an L7 load balancer
//!   with an idle timeout (answers PINGs itself, resets idle streams).
//! - [`proxies`]: start and stop real nginx and HAProxy on loopback for tests.
//! - [`external`]: what a test does when a tool it drives is missing.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod albsim;
pub mod external;
pub mod h2grpc;
pub mod proxies;
