//! Generates the KEDA external-scaler gRPC types from the vendored
//! `proto/keda/externalscaler.proto` (Apache-2.0, see the file header).
//!
//! `protox` parses the proto in pure Rust, so no system `protoc` is needed;
//! `tonic-prost-build` turns the descriptor set into prost messages and the
//! tonic server/client. The output lands in `OUT_DIR` and is included by
//! `src/keda.rs`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest.join("..").join("proto").join("keda");
    let proto_file = proto_root.join("externalscaler.proto");
    println!("cargo:rerun-if-changed={}", proto_file.display());

    let fds = protox::compile([&proto_file], [&proto_root])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
