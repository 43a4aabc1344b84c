//! Generates the Rust code of `aya/v1/*.proto` (Aya's own API) and of the
//! vendored `keda/externalscaler.proto` (KEDA's external-scaler API,
//! Apache-2.0, see the file header) and of `etcd/etcd.proto` (the part of
//! etcd's v3 API that the HA mode uses, client only) and of
//! `xds/{data,service}/orca/v3/*.proto` (ORCA load reports, gRFC A51) with `protox` (a pure Rust protobuf
//! compiler) and `tonic-prost-build`: no system `protoc` needed. The output
//! lands in `OUT_DIR` and is included by `src/lib.rs`.

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

    let keda_root = root.join("keda");
    let keda_file = keda_root.join("externalscaler.proto");
    println!("cargo:rerun-if-changed={}", keda_file.display());
    let fds = protox::compile([&keda_file], [&keda_root])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;

    // etcd's v3 API, the part the HA mode uses (client only).
    let etcd_root = root.join("etcd");
    let etcd_file = etcd_root.join("etcd.proto");
    println!("cargo:rerun-if-changed={}", etcd_file.display());
    let fds = protox::compile([&etcd_file], [&etcd_root])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(fds)?;

    // ORCA (gRFC A51): the load report and the out-of-band service, the
    // client Aya runs against backends and the server its tests run.
    let orca_files = [
        "xds/data/orca/v3/orca_load_report.proto",
        "xds/service/orca/v3/orca.proto",
    ];
    for f in orca_files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(orca_files, [&root])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
