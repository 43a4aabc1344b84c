#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// Package `aya.v1`: metrics ingest, decision watch, forecast and admin services.
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::pedantic, rust_2018_idioms)]
    tonic::include_proto!("aya.v1");
}

/// Package `externalscaler`: KEDA's external-scaler service (messages,
/// server and client).
pub mod keda {
    #![allow(missing_docs, clippy::all, clippy::pedantic, rust_2018_idioms)]
    tonic::include_proto!("externalscaler");
}

/// Package `etcdserverpb`: the part of etcd's v3 API (KV, Lease, Watch)
/// that the controller's HA mode uses (clients only).
pub mod etcd {
    #![allow(missing_docs, clippy::all, clippy::pedantic, rust_2018_idioms)]
    tonic::include_proto!("etcdserverpb");
}
