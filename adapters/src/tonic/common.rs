//! What the server and client layers share: reading the headers, and the
//! accessors of their services.

use crate::core::{wire, Encoding};

/// `wp-inline-keepalives` as a header name. A constant: a lookup by `&str`
/// parses the name anew on every call, which costs more than the rest of
/// the header handling of a small unary call.
pub(super) const METADATA_KEY: http::HeaderName = http::HeaderName::from_static(wire::METADATA_KEY);

/// `grpc-encoding` as a header name.
const GRPC_ENCODING: http::HeaderName = http::HeaderName::from_static("grpc-encoding");

/// Whether a `content-type` is gRPC over HTTP/2 (`application/grpc` or
/// `application/grpc+<codec>`), not gRPC-Web or anything else: the layers
/// touch no other body.
pub(super) fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            let value = value.trim().as_bytes();
            value.len() >= 16
                && value[..16].eq_ignore_ascii_case(b"application/grpc")
                && matches!(value.get(16), None | Some(b'+' | b';'))
        })
}

/// Whether a `content-type` is gRPC-Web (`application/grpc-web`, with any
/// `-text` or `+<codec>` suffix): a body the layers cannot follow, because
/// its trailers are in-band and, for `-text`, it is base64. tonic-web's
/// `GrpcWebLayer` must translate it to gRPC *before* a layer sees it.
pub(super) fn is_grpc_web(headers: &http::HeaderMap) -> bool {
    const PREFIX: &[u8] = b"application/grpc-web";
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            let value = value.trim().as_bytes();
            value.len() >= PREFIX.len()
                && value[..PREFIX.len()].eq_ignore_ascii_case(PREFIX)
                && matches!(value.get(PREFIX.len()), None | Some(b'+' | b';' | b'-'))
        })
}

/// The stream's `grpc-encoding`, for the filter.
pub(super) fn encoding(headers: &http::HeaderMap) -> Encoding {
    headers
        .get(GRPC_ENCODING)
        .and_then(|value| value.to_str().ok())
        .map_or(Encoding::Identity, Encoding::from_grpc_encoding)
}

/// Whether the headers carry `wp-inline-keepalives: true`.
pub(super) fn announces_support(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(METADATA_KEY)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.trim().eq_ignore_ascii_case(wire::METADATA_VALUE))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    http::HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn grpc_content_types() {
        for yes in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC",
            "application/grpc; charset=utf-8",
        ] {
            assert!(is_grpc(&headers(&[("content-type", yes)])), "{yes}");
        }
        for no in [
            "application/grpc-web",
            "application/grpc-web+proto",
            "application/grpc-web-text",
            "application/octet-stream",
            "application/json",
            "application/grpcx",
            "",
        ] {
            assert!(!is_grpc(&headers(&[("content-type", no)])), "{no}");
        }
        assert!(!is_grpc(&headers(&[])));
    }

    #[test]
    fn grpc_web_content_types() {
        for yes in [
            "application/grpc-web",
            "application/grpc-web+proto",
            "application/grpc-web+json",
            "application/grpc-web-text",
            "application/grpc-web-text+proto",
            "Application/gRPC-Web; charset=utf-8",
        ] {
            assert!(is_grpc_web(&headers(&[("content-type", yes)])), "{yes}");
            assert!(!is_grpc(&headers(&[("content-type", yes)])), "{yes}");
        }
        for no in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc-webx",
            "application/json",
            "",
        ] {
            assert!(!is_grpc_web(&headers(&[("content-type", no)])), "{no}");
        }
        assert!(!is_grpc_web(&headers(&[])));
    }

    #[test]
    fn announcement_and_encoding() {
        assert!(announces_support(&headers(&[(
            "wp-inline-keepalives",
            "true"
        )])));
        assert!(announces_support(&headers(&[(
            "wp-inline-keepalives",
            " TRUE "
        )])));
        assert!(!announces_support(&headers(&[(
            "wp-inline-keepalives",
            "false"
        )])));
        assert!(!announces_support(&headers(&[])));
        assert_eq!(
            encoding(&headers(&[("grpc-encoding", "gzip")])),
            Encoding::Gzip
        );
        assert_eq!(encoding(&headers(&[])), Encoding::Identity);
    }
}
