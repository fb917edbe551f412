//! Generates the prost messages and tonic services of `proto/*.proto`.
//!
//! protox parses the files in pure Rust, so no system `protoc` is needed on a
//! fresh machine; tonic-prost-build turns the descriptors into code in
//! `OUT_DIR`, which the tests include with `tonic::include_proto!`.
//!
//! The Waypoint stub is generated a second time, into `OUT_DIR/proto_crate/`:
//! there its messages are the `inlinekeepalive-proto` types (`extern_path`),
//! as a Rust server serving Waypoint clients would generate it, so
//! `GetVersionInfo` answers with
//! `GetVersionInfoResponse::with_inline_keepalives` and a probe reads
//! `supports_inline_keepalives()`. The first copy keeps Waypoint's schema
//! alone: what a client that knows nothing of the proto crate decodes.

use std::path::PathBuf;

const WAYPOINT_STUB: &str = "proto/waypoint_stub.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/echo.proto", "proto/bench.proto", WAYPOINT_STUB];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        // `bytes` fields as `Bytes`, so the benchmark can send one payload
        // many times without copying it.
        .bytes(".")
        .compile_fds(descriptors)?;

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?).join("proto_crate");
    std::fs::create_dir_all(&out_dir)?;
    let mut proto_crate = tonic_prost_build::configure().out_dir(&out_dir);
    for message in ["GetVersionInfoResponse", "ServerFeatures", "VersionInfo"] {
        proto_crate = proto_crate.extern_path(
            format!(".hashicorp.waypoint.{message}"),
            format!("::inlinekeepalive_proto::{message}"),
        );
    }
    proto_crate.compile_fds(protox::compile([WAYPOINT_STUB], ["proto"])?)?;
    Ok(())
}
