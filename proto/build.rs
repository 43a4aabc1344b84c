//! Generates the aya.v1 Rust code from `aya/v1/*.proto` with `protox` (a pure
//! Rust protobuf compiler) and `tonic-prost-build`: no system `protoc` needed.

use std::path::PathBuf;

const FILES: [&str; 5] = [
    "aya/v1/types.proto",
    "aya/v1/metrics.proto",
    "aya/v1/watch.proto",
    "aya/v1/forecast.proto",
    "aya/v1/admin.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    for f in FILES {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(FILES, [&root])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .btree_map(".")
        .compile_fds(fds)?;
    Ok(())
}
