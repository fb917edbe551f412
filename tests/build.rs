//! Generates the prost messages and tonic services of `proto/*.proto`.
//!
//! protox parses the files in pure Rust, so no system `protoc` is needed on a
//! fresh machine; tonic-prost-build turns the descriptors into code in
//! `OUT_DIR`, which the tests include with `tonic::include_proto!`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/echo.proto", "proto/waypoint_stub.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        // `bytes` fields as `Bytes`, so the benchmark can send one payload
        // many times without copying it.
        .bytes(".")
        .compile_fds(descriptors)?;
    Ok(())
}
