//! # aya-proto: the wire types of Aya's own gRPC API (`aya.v1`)
//!
//! Generated at build time from `proto/aya/v1/*.proto` by `protox` and
//! `tonic-prost-build`, so a machine without a system `protoc` builds it. The
//! `.proto` files are the documentation of every message and field; this
//! crate only re-exports the generated code (clients and servers).
//!
//! Conversions between these wire types and the decision engine's domain types
//! (`aya_policy::Decision` and friends) live in the controller crate, which
//! keeps this crate free of any dependency on the engine.

#![forbid(unsafe_code)]

/// Package `aya.v1`: metrics ingest, decision watch, forecast and admin services.
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::pedantic, rust_2018_idioms)]
    tonic::include_proto!("aya.v1");
}
