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

/// Packages `xds.data.orca.v3` and `xds.service.orca.v3`: ORCA load reports
/// and the out-of-band `OpenRcaService` (gRFC A51), client and server.
pub mod xds {
    /// Package `xds.data.orca.v3`.
    pub mod data {
        /// ORCA.
        pub mod orca {
            /// `xds.data.orca.v3`: `OrcaLoadReport`.
            pub mod v3 {
                #![allow(missing_docs, clippy::all, clippy::pedantic, rust_2018_idioms)]
                tonic::include_proto!("xds.data.orca.v3");
            }
        }
    }
    /// Package `xds.service.orca.v3`.
    pub mod service {
        /// ORCA.
        pub mod orca {
            /// `xds.service.orca.v3`: `OpenRcaService/StreamCoreMetrics`.
            pub mod v3 {
                #![allow(missing_docs, clippy::all, clippy::pedantic, rust_2018_idioms)]
                tonic::include_proto!("xds.service.orca.v3");
            }
        }
    }
}
