//! The inline keepalive protobuf schema and its [`prost`] types.
//!
//! `inline_keepalive.proto` beside this crate's `Cargo.toml` is the source of
//! truth. The types here mirror it with `#[derive(prost::Message)]`, written
//! by hand so that building needs no `protoc`; the tests check that they
//! encode exactly as the wire constants of `inlinekeepalive-core` say.
//!
//! Most users never need this crate: the keepalive is recognised and produced
//! at the byte level. It is for peers that want the typed message, and for
//! Waypoint-style servers that advertise support through `GetVersionInfo`.
//!
//! ```
//! use inlinekeepalive_proto::{InlineKeepalive, Message};
//!
//! let bytes = InlineKeepalive::new().encode_to_vec();
//! assert_eq!(bytes.len(), 22);
//! assert_eq!(InlineKeepalive::decode(&bytes[..]).unwrap(), InlineKeepalive::new());
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub use prost::Message;

/// The `.proto` source of the types in this crate.
pub const PROTO_SOURCE: &str = include_str!("../inline_keepalive.proto");

/// The value of [`InlineKeepalive::signature`] that marks a keepalive.
pub const SIGNATURE: &str = "inline_keepalive";

/// `ServerFeatures.feature.FEATURE_INLINE_KEEPALIVES`: a Waypoint server that
/// lists it in `GetVersionInfoResponse.server_features` removes inline
/// keepalives from the streams it receives, so clients may send them.
pub const FEATURE_INLINE_KEEPALIVES: i32 = 1;

/// `message InlineKeepalive { string signature = 100000000; }`
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct InlineKeepalive {
    /// Always [`SIGNATURE`] in a keepalive.
    #[prost(string, tag = "100000000")]
    pub signature: String,
}

impl InlineKeepalive {
    /// The keepalive, with its signature set.
    #[must_use]
    pub fn new() -> Self {
        Self {
            signature: SIGNATURE.to_owned(),
        }
    }
}

/// Server capabilities advertised in [`GetVersionInfoResponse`].
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct ServerFeatures {
    /// Values of [`server_features::Feature`].
    #[prost(enumeration = "server_features::Feature", repeated, tag = "1")]
    pub features: Vec<i32>,
}

impl ServerFeatures {
    /// Whether the server advertises [`FEATURE_INLINE_KEEPALIVES`].
    ///
    /// ```
    /// use inlinekeepalive_proto::{ServerFeatures, FEATURE_INLINE_KEEPALIVES};
    ///
    /// let features = ServerFeatures { features: vec![FEATURE_INLINE_KEEPALIVES] };
    /// assert!(features.supports_inline_keepalives());
    /// assert!(!ServerFeatures::default().supports_inline_keepalives());
    /// ```
    #[must_use]
    pub fn supports_inline_keepalives(&self) -> bool {
        self.features.contains(&FEATURE_INLINE_KEEPALIVES)
    }
}

/// Nested types of [`ServerFeatures`].
pub mod server_features {
    /// `ServerFeatures.feature`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum Feature {
        /// No feature (the proto3 zero value).
        Unspecified = 0,
        /// The server removes inline keepalives from inbound streams.
        InlineKeepalives = 1,
    }
}

/// `GetVersionInfoResponse`, reduced to what keepalive negotiation reads.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct GetVersionInfoResponse {
    /// Version information.
    #[prost(message, optional, tag = "1")]
    pub info: Option<VersionInfo>,
    /// Optional capabilities.
    #[prost(message, optional, tag = "2")]
    pub server_features: Option<ServerFeatures>,
}

impl GetVersionInfoResponse {
    /// Whether the server advertises [`FEATURE_INLINE_KEEPALIVES`].
    #[must_use]
    pub fn supports_inline_keepalives(&self) -> bool {
        self.server_features
            .as_ref()
            .is_some_and(ServerFeatures::supports_inline_keepalives)
    }
}

/// `VersionInfo`.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct VersionInfo {
    /// API protocol version range.
    #[prost(message, optional, tag = "1")]
    pub api: Option<version_info::ProtocolVersion>,
    /// Entrypoint protocol version range.
    #[prost(message, optional, tag = "2")]
    pub entrypoint: Option<version_info::ProtocolVersion>,
    /// Human-readable version.
    #[prost(string, tag = "3")]
    pub version: String,
}

/// Nested types of [`VersionInfo`].
pub mod version_info {
    /// `VersionInfo.ProtocolVersion`.
    #[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
    pub struct ProtocolVersion {
        /// The current version.
        #[prost(uint32, tag = "1")]
        pub current: u32,
        /// The oldest version still supported.
        #[prost(uint32, tag = "2")]
        pub minimum: u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use inlinekeepalive_core::{classify, wire, Classification};

    #[test]
    fn prost_encoding_is_the_wire_constant() {
        assert_eq!(
            InlineKeepalive::new().encode_to_vec(),
            wire::KEEPALIVE_MESSAGE
        );
        assert_eq!(SIGNATURE.as_bytes(), wire::SIGNATURE);
    }

    #[test]
    fn prost_decodes_every_keepalive_the_classifier_accepts() {
        let decoded = InlineKeepalive::decode(&wire::KEEPALIVE_MESSAGE[..]).unwrap();
        assert_eq!(decoded.signature, SIGNATURE);
        // Last one wins in prost as in the classifier.
        let mut twice = InlineKeepalive {
            signature: "hello".into(),
        }
        .encode_to_vec();
        twice.extend_from_slice(&wire::KEEPALIVE_MESSAGE);
        assert_eq!(classify(&twice), Classification::Keepalive);
        assert_eq!(
            InlineKeepalive::decode(&twice[..]).unwrap(),
            InlineKeepalive::new()
        );
    }

    #[test]
    fn an_empty_signature_is_not_encoded_and_not_a_keepalive() {
        let empty = InlineKeepalive::default().encode_to_vec();
        assert!(empty.is_empty());
        assert_eq!(classify(&empty), Classification::Application);
    }

    #[test]
    fn feature_enum_matches_the_constant() {
        assert_eq!(
            server_features::Feature::InlineKeepalives as i32,
            FEATURE_INLINE_KEEPALIVES
        );
        let response = GetVersionInfoResponse {
            info: None,
            server_features: Some(ServerFeatures {
                features: vec![0, FEATURE_INLINE_KEEPALIVES],
            }),
        };
        let decoded = GetVersionInfoResponse::decode(&response.encode_to_vec()[..]).unwrap();
        assert!(decoded.supports_inline_keepalives());
        assert!(!GetVersionInfoResponse::default().supports_inline_keepalives());
    }

    #[test]
    fn proto_source_declares_the_same_numbers() {
        assert!(PROTO_SOURCE.contains("string signature = 100000000;"));
        assert!(PROTO_SOURCE.contains("FEATURE_INLINE_KEEPALIVES = 1;"));
    }
}
