//! Rendering published snapshots as Envoy xDS resources.
//!
//! One Aya cluster becomes, per resource type:
//! - **CDS** `Cluster{name, type: EDS, eds_config: ads, lb_policy,
//!   outlier_detection, circuit_breakers}`: the algorithm selection travels
//!   here, the data plane's consecutive-5xx ejection when the engine turns it
//!   on, and the engine's in-flight limit (`max_requests`) when it sets one;
//! - **EDS** `ClusterLoadAssignment{cluster_name, endpoints}`: the weights
//!   travel here;
//! - **LDS** `Listener{name: <cluster>, api_listener: HttpConnectionManager{rds}}`
//!   and **RDS** `RouteConfiguration{name: <cluster>, vhost "*" -> cluster}`:
//!   only proxyless gRPC clients (`xds:///<cluster>`) ask for these; Envoy
//!   gets its listeners from its own bootstrap.
//!
//! ## Weights: one locality per endpoint
//! Each endpoint is put in its own `LocalityLbEndpoints` (sub-zone = backend
//! name) carrying the weight twice: as the endpoint's `load_balancing_weight`
//! and as the locality's `load_balancing_weight`.
//! - Envoy only applies locality weights when a cluster enables
//!   `locality_weighted_lb_config`, which Aya's clusters do not, so Envoy
//!   merges the localities of a priority and balances on endpoint weights.
//! - gRPC's xDS client ignores endpoint weights under ROUND_ROBIN
//!   (grpc/grpc#32004) but always honours locality weights
//!   (`weighted_target`), so with one endpoint per locality the weights work
//!   there too.
//!
//! Weights are clamped to ≥ 1: both Envoy and gRPC NACK a zero weight (a
//! backend is drained by leaving it out of the snapshot).
//!
//! ## Algorithm mapping (`LbAlgorithm` → `Cluster.lb_policy`)
//! | Aya | Envoy | why |
//! |---|---|---|
//! | round_robin, weighted_round_robin | ROUND_ROBIN | Envoy's RR is weighted (EDF); with equal weights it is plain RR |
//! | weighted_random | ROUND_ROBIN | Envoy's RANDOM ignores weights; weighted RR gives the same shares with less variance |
//! | random | RANDOM | |
//! | least_request, peak_ewma | LEAST_REQUEST, `active_request_bias` 1.0 | load awareness is the point of choosing them; Envoy has no latency EWMA, least-request is the closest |
//! | join_shortest_queue | `load_balancing_policy` [`envoy.load_balancing_policies.least_request` with `selection_method: FULL_SCAN`, `active_request_bias` 1.0; then round robin], `lb_policy` LEAST_REQUEST | every endpoint compared on each pick (Envoy scans only with equal weights; unequal weights use the same EDF as least request). A client that does not know the typed policy takes the next one in the list (gRPC: round robin) |
//! | ring_hash, source_ip_hash | RING_HASH | the hash key (e.g. source IP) comes from the route's `hash_policy`, configured on the Envoy side |
//! | maglev | MAGLEV | |
//!
//! `active_request_bias` is set explicitly to Envoy's default of 1.0: Envoy
//! then divides each weight by `(active requests + 1)`, so weights and load
//! both count. When the weights alone should decide, the engine selects
//! `weighted_round_robin` instead (a bias of 0 would make LEAST_REQUEST
//! identical to weighted round robin).

use std::collections::BTreeMap;
use std::sync::Arc;

use aya_policy::LbAlgorithm;
use envoy_types::pb::envoy::config::cluster::v3::load_balancing_policy::Policy;
use envoy_types::pb::envoy::config::cluster::v3::circuit_breakers::Thresholds;
use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, LoadBalancingPolicy, OutlierDetection as EnvoyOutlierDetection,
    TrackClusterStats,
};
use envoy_types::pb::envoy::config::core::v3::RoutingPriority;
use envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;
use envoy_types::pb::envoy::extensions::load_balancing_policies::least_request::v3::LeastRequest;
use envoy_types::pb::envoy::extensions::load_balancing_policies::least_request::v3::least_request::SelectionMethod;
use envoy_types::pb::envoy::extensions::load_balancing_policies::round_robin::v3::RoundRobin;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbConfig, LbPolicy,
    LeastRequestLbConfig,
};
use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, Locality, RuntimeDouble,
    SocketAddress,
};
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint as EnvoyEndpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Listener};
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds,
};
use envoy_types::pb::google::protobuf::{Any, Duration, UInt32Value};
use envoy_types::util::pack_any;

use crate::publish::{ClusterSnapshot, PublishedState};

/// Type URL of CDS resources (`envoy.config.cluster.v3.Cluster`).
pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// Type URL of EDS resources (`envoy.config.endpoint.v3.ClusterLoadAssignment`).
pub const ENDPOINT_TYPE: &str =
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
/// Type URL of LDS resources (`envoy.config.listener.v3.Listener`).
pub const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// Type URL of RDS resources (`envoy.config.route.v3.RouteConfiguration`).
pub const ROUTE_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

/// The resource types Aya serves, in the order pushes go out on a state
/// change (the xDS "make before break" order: clusters before their
/// endpoints, listeners before their routes).
pub const SERVED_TYPES: [&str; 4] = [CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE];

/// Timeout Envoy uses to connect to a backend of an Aya cluster.
const CONNECT_TIMEOUT_SECS: i64 = 1;

/// The Envoy `lb_policy` for an Aya algorithm, with its optional
/// `lb_config` (see the module docs for the table and the reasons; join
/// shortest queue also needs [`load_balancing_policy_for`]).
pub fn lb_policy_for(algorithm: LbAlgorithm) -> (LbPolicy, Option<LbConfig>) {
    let least_request = || {
        Some(LbConfig::LeastRequestLbConfig(LeastRequestLbConfig {
            choice_count: None,
            active_request_bias: Some(RuntimeDouble {
                default_value: 1.0,
                runtime_key: String::new(),
            }),
            slow_start_config: None,
        }))
    };
    match algorithm {
        LbAlgorithm::RoundRobin | LbAlgorithm::WeightedRoundRobin | LbAlgorithm::WeightedRandom => {
            (LbPolicy::RoundRobin, None)
        }
        LbAlgorithm::Random => (LbPolicy::Random, None),
        LbAlgorithm::LeastRequest | LbAlgorithm::PeakEwma | LbAlgorithm::JoinShortestQueue => {
            (LbPolicy::LeastRequest, least_request())
        }
        LbAlgorithm::RingHash | LbAlgorithm::SourceIpHash => (LbPolicy::RingHash, None),
        LbAlgorithm::Maglev => (LbPolicy::Maglev, None),
    }
}

/// The typed `load_balancing_policy` of an algorithm that `lb_policy`
/// cannot say: join shortest queue is Envoy's least request with
/// `selection_method: FULL_SCAN` (Envoy ≥ 1.31), followed by round robin for
/// clients that do not know that policy (each takes the first it supports).
/// When set, Envoy uses it instead of `lb_policy`.
pub fn load_balancing_policy_for(algorithm: LbAlgorithm) -> Option<LoadBalancingPolicy> {
    if algorithm != LbAlgorithm::JoinShortestQueue {
        return None;
    }
    let typed = |name: &str, typed_config: Any| Policy {
        typed_extension_config: Some(TypedExtensionConfig {
            name: name.to_string(),
            typed_config: Some(typed_config),
        }),
    };
    let full_scan = LeastRequest {
        active_request_bias: Some(RuntimeDouble {
            default_value: 1.0,
            runtime_key: String::new(),
        }),
        selection_method: SelectionMethod::FullScan as i32,
        ..Default::default()
    };
    Some(LoadBalancingPolicy {
        policies: vec![
            typed(
                "envoy.load_balancing_policies.least_request",
                pack_any(full_scan),
            ),
            typed(
                "envoy.load_balancing_policies.round_robin",
                pack_any(RoundRobin::default()),
            ),
        ],
    })
}

/// A `ConfigSource` that says "over the same ADS stream".
fn ads_source() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

/// The CDS resource of one cluster: an EDS cluster fed over ADS whose
/// `lb_policy` follows the decision's algorithm, with
/// `track_cluster_stats.per_endpoint_stats` on, so that Envoy's stats sinks
/// (the OpenTelemetry one pointed at Aya, docs/envoy.md) report
/// `rq_total`, `rq_success`, `rq_error`, `rq_active`, `cx_active` and
/// `healthy` per endpoint: the engine then learns load, errors and health
/// from Envoy alone.
pub fn cluster(snapshot: &ClusterSnapshot) -> Cluster {
    let algorithm = snapshot.decision.algorithm.algorithm;
    let (policy, lb_config) = lb_policy_for(algorithm);
    Cluster {
        name: snapshot.cluster.clone(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(ads_source()),
            service_name: String::new(),
        }),
        connect_timeout: Some(Duration {
            seconds: CONNECT_TIMEOUT_SECS,
            nanos: 0,
        }),
        lb_policy: policy as i32,
        lb_config,
        load_balancing_policy: load_balancing_policy_for(algorithm),
        track_cluster_stats: Some(TrackClusterStats {
            per_endpoint_stats: true,
            ..Default::default()
        }),
        outlier_detection: snapshot
            .decision
            .outlier_detection
            .filter(|o| o.enabled())
            .map(|o| outlier_detection(&o)),
        circuit_breakers: snapshot.decision.max_requests.map(circuit_breakers),
        ..Default::default()
    }
}

/// Envoy's default circuit-breaker limits (connections, pending and active
/// requests per cluster and priority).
const ENVOY_DEFAULT_LIMIT: u32 = 1024;

/// The cluster's `circuit_breakers` for the engine's in-flight limit:
/// `max_requests` (past it Envoy answers 503 at once and counts
/// `upstream_rq_active_overflow`), with the connection and pending limits at
/// least Envoy's defaults so that only the engine's limit binds.
pub fn circuit_breakers(max_requests: u32) -> CircuitBreakers {
    let u32v = |value: u32| Some(UInt32Value { value });
    let floor = max_requests.max(ENVOY_DEFAULT_LIMIT);
    CircuitBreakers {
        thresholds: vec![Thresholds {
            priority: RoutingPriority::Default as i32,
            max_connections: u32v(floor),
            max_pending_requests: u32v(floor),
            max_requests: u32v(max_requests.max(1)),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Envoy's `outlier_detection` for the engine's choice: consecutive-5xx
/// ejection only (Envoy enforces success-rate ejection by default too; it is
/// turned off, so that ejections are exactly the ones the engine bounded).
pub fn outlier_detection(o: &aya_policy::OutlierDetection) -> EnvoyOutlierDetection {
    let u32v = |value: u32| Some(UInt32Value { value });
    let secs = o.base_ejection_time.max(0.001);
    EnvoyOutlierDetection {
        consecutive_5xx: u32v(o.consecutive_5xx),
        enforcing_consecutive_5xx: u32v(100),
        enforcing_success_rate: u32v(0),
        enforcing_consecutive_gateway_failure: u32v(0),
        enforcing_failure_percentage: u32v(0),
        base_ejection_time: Some(Duration {
            seconds: secs.trunc() as i64,
            nanos: (secs.fract() * 1e9) as i32,
        }),
        max_ejection_percent: u32v(o.max_ejection_percent.clamp(0.0, 100.0).floor() as u32),
        ..Default::default()
    }
}

/// The EDS resource of one cluster: one locality per endpoint, the weight
/// (clamped to ≥ 1) both on the endpoint and on its locality.
pub fn load_assignment(snapshot: &ClusterSnapshot) -> ClusterLoadAssignment {
    let endpoints = snapshot
        .endpoints
        .iter()
        .map(|ep| {
            let weight = Some(UInt32Value {
                value: ep.weight.max(1),
            });
            LocalityLbEndpoints {
                locality: Some(Locality {
                    region: String::new(),
                    zone: String::new(),
                    sub_zone: ep.backend.clone(),
                }),
                load_balancing_weight: weight,
                lb_endpoints: vec![LbEndpoint {
                    load_balancing_weight: weight,
                    host_identifier: Some(HostIdentifier::Endpoint(EnvoyEndpoint {
                        address: Some(Address {
                            address: Some(AddressKind::SocketAddress(SocketAddress {
                                address: ep.host.clone(),
                                port_specifier: Some(PortSpecifier::PortValue(u32::from(ep.port))),
                                ..Default::default()
                            })),
                        }),
                        hostname: ep.backend.clone(),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: snapshot.cluster.clone(),
        endpoints,
        ..Default::default()
    }
}

/// The LDS resource for proxyless gRPC clients targeting `xds:///<cluster>`:
/// an API listener whose HTTP connection manager takes its routes over RDS.
pub fn listener(snapshot: &ClusterSnapshot) -> Listener {
    let hcm = HttpConnectionManager {
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads_source()),
            route_config_name: snapshot.cluster.clone(),
        })),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".to_string(),
            config_type: Some(ConfigType::TypedConfig(pack_any(Router::default()))),
            ..Default::default()
        }],
        ..Default::default()
    };
    Listener {
        name: snapshot.cluster.clone(),
        api_listener: Some(ApiListener {
            api_listener: Some(pack_any(hcm)),
        }),
        ..Default::default()
    }
}

/// The RDS resource for proxyless gRPC clients: every request to the cluster.
pub fn route_configuration(snapshot: &ClusterSnapshot) -> RouteConfiguration {
    RouteConfiguration {
        name: snapshot.cluster.clone(),
        virtual_hosts: vec![VirtualHost {
            name: snapshot.cluster.clone(),
            domains: vec!["*".to_string()],
            routes: vec![Route {
                r#match: Some(RouteMatch {
                    path_specifier: Some(PathSpecifier::Prefix(String::new())),
                    ..Default::default()
                }),
                action: Some(Action::Route(RouteAction {
                    cluster_specifier: Some(ClusterSpecifier::Cluster(snapshot.cluster.clone())),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Render the resources of `type_url` for the requested `names` (empty =
/// wildcard: every cluster). Names that are not published are left out, as
/// state-of-the-world xDS expects. `None` for a type Aya does not serve.
pub fn render(type_url: &str, state: &PublishedState, names: &[String]) -> Option<Vec<Any>> {
    let selected: Vec<&Arc<ClusterSnapshot>> = if names.is_empty() {
        state.clusters.values().collect()
    } else {
        // Deduplicate and keep a stable (sorted) order.
        let wanted: BTreeMap<&str, ()> = names.iter().map(|n| (n.as_str(), ())).collect();
        wanted
            .keys()
            .filter_map(|n| state.clusters.get(*n))
            .collect()
    };
    let out = match type_url {
        CLUSTER_TYPE => selected.iter().map(|s| pack_any(cluster(s))).collect(),
        ENDPOINT_TYPE => selected
            .iter()
            .map(|s| pack_any(load_assignment(s)))
            .collect(),
        LISTENER_TYPE => selected.iter().map(|s| pack_any(listener(s))).collect(),
        ROUTE_TYPE => selected
            .iter()
            .map(|s| pack_any(route_configuration(s)))
            .collect(),
        _ => return None,
    };
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::Endpoint;
    use aya_policy::{AlgorithmChoice, Decision, Explanation, ScalingSignal};
    use prost::Message;

    fn snapshot(alg: LbAlgorithm, weights: &[u32]) -> ClusterSnapshot {
        ClusterSnapshot {
            cluster: "web".into(),
            version: 1,
            decision: Decision {
                outlier_detection: None,
                max_requests: None,
                at: 0.0,
                weights: Vec::new(),
                ejected: Vec::new(),
                scaling: ScalingSignal::default(),
                algorithm: AlgorithmChoice {
                    algorithm: alg,
                    rule: "test".into(),
                },
                explanation: Explanation::default(),
            },
            endpoints: weights
                .iter()
                .enumerate()
                .map(|(i, w)| Endpoint {
                    backend: format!("b{i}"),
                    host: "127.0.0.1".into(),
                    port: 8000 + i as u16,
                    weight: *w,
                })
                .collect(),
        }
    }

    #[test]
    fn every_algorithm_maps_to_a_policy_envoy_accepts() {
        for alg in LbAlgorithm::ALL {
            let (policy, cfg) = lb_policy_for(alg);
            assert!(
                matches!(
                    policy,
                    LbPolicy::RoundRobin
                        | LbPolicy::LeastRequest
                        | LbPolicy::Random
                        | LbPolicy::RingHash
                        | LbPolicy::Maglev
                ),
                "{alg}"
            );
            // lb_config, when present, must match the policy (Envoy rejects a mismatch).
            if let Some(LbConfig::LeastRequestLbConfig(c)) = cfg {
                assert_eq!(policy, LbPolicy::LeastRequest);
                assert_eq!(c.active_request_bias.map(|b| b.default_value), Some(1.0));
            }
        }
        // Only join shortest queue needs the typed policy: least request
        // with a full scan, then round robin for clients without it.
        for alg in LbAlgorithm::ALL {
            let typed = load_balancing_policy_for(alg);
            assert_eq!(
                typed.is_some(),
                alg == LbAlgorithm::JoinShortestQueue,
                "{alg}"
            );
        }
        let jsq = load_balancing_policy_for(LbAlgorithm::JoinShortestQueue).unwrap();
        let names: Vec<&str> = jsq
            .policies
            .iter()
            .filter_map(|p| p.typed_extension_config.as_ref())
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "envoy.load_balancing_policies.least_request",
                "envoy.load_balancing_policies.round_robin"
            ]
        );
        let any = jsq.policies[0]
            .typed_extension_config
            .as_ref()
            .and_then(|t| t.typed_config.as_ref())
            .unwrap();
        assert!(
            any.type_url.ends_with("least_request.v3.LeastRequest"),
            "{}",
            any.type_url
        );
        let lr = <LeastRequest as prost::Message>::decode(any.value.as_slice()).unwrap();
        assert_eq!(lr.selection_method, SelectionMethod::FullScan as i32);
        assert_eq!(lr.active_request_bias.map(|b| b.default_value), Some(1.0));
    }

    #[test]
    fn weights_are_never_zero_and_sit_on_endpoint_and_locality() {
        let cla = load_assignment(&snapshot(LbAlgorithm::WeightedRoundRobin, &[0, 3, 6]));
        let w: Vec<(u32, u32)> = cla
            .endpoints
            .iter()
            .map(|l| {
                (
                    l.load_balancing_weight.map_or(0, |v| v.value),
                    l.lb_endpoints[0]
                        .load_balancing_weight
                        .map_or(0, |v| v.value),
                )
            })
            .collect();
        assert_eq!(w, vec![(1, 1), (3, 3), (6, 6)]);
        let subzones: Vec<&str> = cla
            .endpoints
            .iter()
            .filter_map(|l| l.locality.as_ref().map(|l| l.sub_zone.as_str()))
            .collect();
        assert_eq!(subzones, vec!["b0", "b1", "b2"]);
    }

    #[test]
    fn outlier_detection_travels_in_cds_only_when_on() {
        let mut s = snapshot(LbAlgorithm::LeastRequest, &[1, 2, 3]);
        assert!(cluster(&s).outlier_detection.is_none(), "not managed");
        s.decision.outlier_detection = Some(aya_policy::OutlierDetection::OFF);
        assert!(cluster(&s).outlier_detection.is_none(), "managed, off");
        s.decision.outlier_detection = Some(aya_policy::OutlierDetection {
            consecutive_5xx: 5,
            base_ejection_time: 30.0,
            max_ejection_percent: 66.0,
        });
        let od = cluster(&s).outlier_detection.expect("on");
        let v = |x: Option<UInt32Value>| x.map(|v| v.value);
        assert_eq!(v(od.consecutive_5xx), Some(5));
        assert_eq!(v(od.enforcing_consecutive_5xx), Some(100));
        assert_eq!(v(od.max_ejection_percent), Some(66));
        assert_eq!(
            v(od.enforcing_success_rate),
            Some(0),
            "Envoy's default success-rate ejection is not the engine's"
        );
        assert_eq!(od.base_ejection_time.map(|d| d.seconds), Some(30));
    }

    #[test]
    fn render_selects_by_name_and_wildcard() {
        let mut state = PublishedState::default();
        let mut a = snapshot(LbAlgorithm::Maglev, &[1]);
        a.cluster = "a".into();
        let mut b = snapshot(LbAlgorithm::Random, &[1]);
        b.cluster = "b".into();
        state.clusters.insert("a".into(), Arc::new(a));
        state.clusters.insert("b".into(), Arc::new(b));
        let all = render(CLUSTER_TYPE, &state, &[]).unwrap_or_default();
        assert_eq!(all.len(), 2);
        let some =
            render(ENDPOINT_TYPE, &state, &["b".into(), "missing".into()]).unwrap_or_default();
        assert_eq!(some.len(), 1);
        let cla = ClusterLoadAssignment::decode(some[0].value.as_slice());
        assert_eq!(cla.map(|c| c.cluster_name).ok().as_deref(), Some("b"));
        let c = Cluster::decode(all[0].value.as_slice()).ok();
        assert_eq!(
            c.as_ref()
                .and_then(|c| c.track_cluster_stats.as_ref())
                .map(|t| t.per_endpoint_stats),
            Some(true),
            "per-endpoint stats feed Envoy's OTel sink"
        );
        assert_eq!(c.map(|c| c.lb_policy), Some(LbPolicy::Maglev as i32));
        assert!(render("type.googleapis.com/unknown", &state, &[]).is_none());
        for t in SERVED_TYPES {
            let r = render(t, &state, &["a".into()]).unwrap_or_default();
            assert_eq!(r.len(), 1, "{t}");
            assert_eq!(r[0].type_url, t);
        }
    }
}
