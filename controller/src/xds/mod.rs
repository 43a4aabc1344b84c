//! Envoy xDS control plane: Aya's decisions as CDS, EDS (and LDS/RDS for
//! proxyless gRPC) over state-of-the-world ADS.
//!
//! Why ADS state-of-the-world: it is the one protocol both real data planes
//! speak (Envoy supports SotW and delta; gRPC's xDS client only SotW, gRFC
//! A27), and one ordered stream lets CDS (the algorithm) and EDS (the weights)
//! change together without the client seeing a cluster without endpoints.
//!
//! - [`resources`] renders a [`PublishedState`] as xDS resources (and
//!   documents how each `LbAlgorithm` maps to an Envoy `lb_policy`).
//! - [`ads`] holds the per-stream protocol state machine (versions, nonces,
//!   ACK/NACK, the EDS-after-CDS warming rule) and the tonic service.
//! - [`stats`] the counters the service exports on `/metrics`.
//!
//! Every published change reaches every connected client at once: streams
//! read a `tokio::sync::watch` receiver, so a slow client only ever gets the
//! latest state, never a backlog.
//!
//! Wire it into a tonic router with [`ads_service`]; point Envoy's
//! `dynamic_resources.ads_config` at it (see `docs/xds.md` or the
//! README for a bootstrap).

pub mod ads;
pub mod resources;
pub mod stats;

use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use tokio::sync::watch;

pub use ads::{AdsServer, AdsStream};
pub use stats::{NackRecord, XdsStats, XdsStatsSnapshot};

use crate::publish::PublishedState;

/// The ADS gRPC service (`envoy.service.discovery.v3.AggregatedDiscoveryService`)
/// serving every cluster published on `rx`, counting into `stats`. Add it to
/// a tonic router next to Aya's own services.
pub fn ads_service(
    rx: watch::Receiver<Arc<PublishedState>>,
    stats: Arc<XdsStats>,
) -> AggregatedDiscoveryServiceServer<AdsServer> {
    AggregatedDiscoveryServiceServer::new(AdsServer::new(rx, stats))
}

/// [`ads_service_with_clock`] that, with `monotonic` (the HA mode), never
/// answers a client with a version below the one it reports
/// ([`AdsServer::with_monotonic_versions`]).
pub fn ads_service_monotonic(
    rx: watch::Receiver<Arc<PublishedState>>,
    stats: Arc<XdsStats>,
    clock: crate::clock::Clock,
    monotonic: bool,
) -> AggregatedDiscoveryServiceServer<AdsServer> {
    AggregatedDiscoveryServiceServer::new(
        AdsServer::with_clock(rx, stats, clock).with_monotonic_versions(monotonic),
    )
}

/// [`ads_service`] measuring ACK latencies on `clock`.
pub fn ads_service_with_clock(
    rx: watch::Receiver<Arc<PublishedState>>,
    stats: Arc<XdsStats>,
    clock: crate::clock::Clock,
) -> AggregatedDiscoveryServiceServer<AdsServer> {
    AggregatedDiscoveryServiceServer::new(AdsServer::with_clock(rx, stats, clock))
}
