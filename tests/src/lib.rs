//! Support code for Aya's cross-crate integration tests (`tests/it`).
//!
//! One integration-test binary (`it`) with a module per concern, so the
//! expensive dependencies link once.

#![forbid(unsafe_code)]

use std::path::PathBuf;

/// The workspace root (the directory holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}

/// Where the shared real-world traces live: `$AYA_DATASETS`, else
/// `<workspace>/../shared/datasets`.
pub fn shared_datasets() -> PathBuf {
    match std::env::var_os("AYA_DATASETS") {
        Some(p) => PathBuf::from(p),
        None => workspace_root().join("..").join("shared").join("datasets"),
    }
}
