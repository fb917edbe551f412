//! The inline keepalive protobuf schema and its [`prost`] types.
//!
//! `inline_keepalive.proto` beside this crate's `Cargo.toml` is the source of
//! truth. The types here mirror it with `#[derive(prost::Message)]`, written
//! by hand so that building needs no `protoc`; the tests check that they
//! encode exactly as the wire constants of `inlinekeepalive-core` say.
//!
//! Most users never need this crate: the keepalive is recognised and produced
//! at the byte level. It is for peers that want the typed message, and for
//! Rust servers that Waypoint's Go clients talk to.
//!
//! # Serving Waypoint clients
//!
//! Waypoint's Go client (its `inlinekeepalive` interceptor), at the start of
//! every client-streaming or bidirectional call, asks the same server
//! `/hashicorp.waypoint.Waypoint/GetVersionInfo` and sends keepalives on that
//! stream only when the answer lists [`FEATURE_INLINE_KEEPALIVES`]; any
//! error, `Unimplemented` included, means no. A Rust server therefore serves
//! that method next to its own services (generated from Waypoint's
//! `server.proto`) and answers with
//! [`GetVersionInfoResponse::with_inline_keepalives`], while something on the
//! server (e.g. the `inlinekeepalive` crate's `ServerKeepaliveLayer`) removes
//! the keepalives. To have the generated service return this crate's type,
//! map it in the build script:
//!
//! ```text
//! tonic_prost_build::configure().extern_path(
//!     ".hashicorp.waypoint.GetVersionInfoResponse",
//!     "::inlinekeepalive_proto::GetVersionInfoResponse",
//! )
//! ```
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

/// `GetVersionInfoResponse`, the answer to Waypoint's `GetVersionInfo`
/// (`hashicorp.waypoint`, with the same field numbers as Waypoint's
/// `server.proto`).
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
    /// The answer to `GetVersionInfo` that turns on a Waypoint client's
    /// keepalives: `info`, with [`FEATURE_INLINE_KEEPALIVES`] as the only
    /// server feature.
    ///
    /// Only for a server that removes inline keepalives from the streams it
    /// receives: a server that lists the feature without doing so hands its
    /// handlers keepalives as empty messages.
    ///
    /// ```
    /// use inlinekeepalive_proto::{GetVersionInfoResponse, VersionInfo};
    ///
    /// let info = VersionInfo {
    ///     version: "0.11.4".into(),
    ///     ..VersionInfo::default()
    /// };
    /// let response = GetVersionInfoResponse::with_inline_keepalives(info);
    /// assert!(response.supports_inline_keepalives());
    /// assert_eq!(response.info.unwrap().version, "0.11.4");
    /// ```
    #[must_use]
    pub fn with_inline_keepalives(info: VersionInfo) -> Self {
        let mut response = Self {
            info: Some(info),
            server_features: None,
        };
        response.advertise_inline_keepalives();
        response
    }

    /// Adds [`FEATURE_INLINE_KEEPALIVES`] to the server features, keeping the
    /// features already listed; does nothing if it is listed already.
    ///
    /// ```
    /// use inlinekeepalive_proto::{GetVersionInfoResponse, ServerFeatures};
    ///
    /// let mut response = GetVersionInfoResponse {
    ///     info: None,
    ///     server_features: Some(ServerFeatures { features: vec![7] }),
    /// };
    /// response.advertise_inline_keepalives();
    /// response.advertise_inline_keepalives();
    /// assert_eq!(response.server_features.unwrap().features, [7, 1]);
    /// ```
    pub fn advertise_inline_keepalives(&mut self) {
        let features = &mut self
            .server_features
            .get_or_insert_with(ServerFeatures::default)
            .features;
        if !features.contains(&FEATURE_INLINE_KEEPALIVES) {
            features.push(FEATURE_INLINE_KEEPALIVES);
        }
    }

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
        assert!(PROTO_SOURCE.contains("ServerFeatures server_features = 2;"));
        assert!(PROTO_SOURCE.contains("string version = 3;"));
    }

    /// The answer, byte for byte as Waypoint's `server.proto` (package
    /// `hashicorp.waypoint`) lays it out, so a Go client decodes it:
    ///
    /// ```text
    /// GetVersionInfoResponse { VersionInfo info = 1; ServerFeatures server_features = 2; }
    /// VersionInfo { ProtocolVersion api = 1; ProtocolVersion entrypoint = 2; string version = 3; }
    /// VersionInfo.ProtocolVersion { uint32 current = 1; uint32 minimum = 2; }
    /// ServerFeatures { repeated feature features = 1; }  // proto3: packed
    /// ```
    #[test]
    fn the_answer_encodes_as_waypoint_lays_it_out() {
        let info = VersionInfo {
            api: Some(version_info::ProtocolVersion {
                current: 1,
                minimum: 1,
            }),
            entrypoint: None,
            version: "0.11.4".into(),
        };
        let bytes = GetVersionInfoResponse::with_inline_keepalives(info).encode_to_vec();
        #[rustfmt::skip]
        let expected: &[u8] = &[
            0x0a, 0x0e, //                 info (field 1, 14 bytes)
                0x0a, 0x04, //             info.api (field 1, 4 bytes)
                    0x08, 0x01, //         api.current = 1
                    0x10, 0x01, //         api.minimum = 1
                0x1a, 0x06, b'0', b'.', b'1', b'1', b'.', b'4', // info.version (field 3)
            0x12, 0x03, //                 server_features (field 2, 3 bytes)
                0x0a, 0x01, 0x01, //       features (field 1, packed): [FEATURE_INLINE_KEEPALIVES]
        ];
        assert_eq!(bytes, expected);
    }

    #[test]
    fn every_encoding_of_the_feature_decodes() {
        // Packed (what Go sends for proto3), unpacked (which every decoder
        // must accept), and packed after an unspecified feature.
        for features in [
            &[0x0a, 0x01, 0x01][..],
            &[0x08, 0x01],
            &[0x0a, 0x02, 0x00, 0x01],
        ] {
            let mut bytes = vec![0x12, features.len() as u8];
            bytes.extend_from_slice(features);
            let decoded = GetVersionInfoResponse::decode(&bytes[..]).unwrap();
            assert!(decoded.supports_inline_keepalives(), "{features:02x?}");
        }
        for without in [&[][..], &[0x12, 0x00], &[0x12, 0x02, 0x08, 0x00]] {
            let decoded = GetVersionInfoResponse::decode(without).unwrap();
            assert!(!decoded.supports_inline_keepalives(), "{without:02x?}");
        }
    }

    #[test]
    fn advertising_keeps_other_features_and_lists_ours_once() {
        let mut response = GetVersionInfoResponse::with_inline_keepalives(VersionInfo::default());
        response.advertise_inline_keepalives();
        assert_eq!(
            response.server_features.as_ref().unwrap().features,
            [FEATURE_INLINE_KEEPALIVES]
        );
        let mut other = GetVersionInfoResponse {
            info: None,
            server_features: Some(ServerFeatures {
                features: vec![0, 9, FEATURE_INLINE_KEEPALIVES],
            }),
        };
        other.advertise_inline_keepalives();
        assert_eq!(
            other.server_features.unwrap().features,
            [0, 9, FEATURE_INLINE_KEEPALIVES]
        );
    }
}
