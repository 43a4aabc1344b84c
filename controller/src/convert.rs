//! Conversions between the domain types (the decision engine's `aya_policy`
//! types, ingest's [`crate::ingest::sample`] types) and the aya.v1 wire types
//! (`aya_proto::v1`). They live here, at the API edge, so that neither the
//! engine nor the proto crate depends on the other and ingest never sees a
//! wire message.

use aya_policy::{Decision, LbAlgorithm};
use aya_proto::v1 as pb;

use crate::config::{BackendConfig, ClusterConfig};
use crate::ingest::{MetricKind, Outcome, RejectReason, Sample};
use crate::publish::ClusterSnapshot;

/// Wire kind number → domain kind (`UNSPECIFIED` is a gauge; a number the
/// enum does not name is kept as [`MetricKind::Unknown`] for ingest to reject).
pub fn metric_kind_from_wire(n: i32) -> MetricKind {
    match pb::MetricKind::try_from(n) {
        Ok(pb::MetricKind::Unspecified | pb::MetricKind::Gauge) => MetricKind::Gauge,
        Ok(pb::MetricKind::Counter) => MetricKind::Counter,
        Ok(pb::MetricKind::Delta) => MetricKind::Delta,
        Err(_) => MetricKind::Unknown(n),
    }
}

/// Wire sample → domain sample.
pub fn sample_from_wire(s: pb::Sample) -> Sample {
    Sample::new(
        s.cluster,
        s.backend,
        s.metric,
        metric_kind_from_wire(s.kind),
        s.timestamp_ms,
        s.value,
    )
    .with_labels(s.labels)
}

/// Domain sample → wire sample (the inverse of [`sample_from_wire`] for
/// every sample ingest accepted; the HA ingest log carries accepted samples
/// in this form).
pub fn sample_to_wire(s: &Sample) -> pb::Sample {
    let kind = match s.kind {
        MetricKind::Gauge => pb::MetricKind::Gauge as i32,
        MetricKind::Counter => pb::MetricKind::Counter as i32,
        MetricKind::Delta => pb::MetricKind::Delta as i32,
        MetricKind::Unknown(n) => n,
    };
    pb::Sample {
        cluster: s.cluster.clone(),
        backend: s.backend.clone(),
        metric: s.metric.clone(),
        kind,
        timestamp_ms: s.timestamp_ms,
        value: s.value,
        labels: s.labels.clone(),
    }
}

/// Domain reject reason → wire enum.
pub fn reject_reason_to_wire(r: RejectReason) -> pb::RejectReason {
    match r {
        RejectReason::UnknownCluster => pb::RejectReason::UnknownCluster,
        RejectReason::UnknownBackend => pb::RejectReason::UnknownBackend,
        RejectReason::NotFinite => pb::RejectReason::NotFinite,
        RejectReason::NegativeCounter => pb::RejectReason::NegativeCounter,
        RejectReason::OutOfOrder => pb::RejectReason::OutOfOrder,
        RejectReason::FarFuture => pb::RejectReason::FarFuture,
        RejectReason::TooOld => pb::RejectReason::TooOld,
        RejectReason::LabelsTooLarge => pb::RejectReason::LabelsTooLarge,
        RejectReason::InvalidMetricName => pb::RejectReason::InvalidMetricName,
        RejectReason::BatchTooLarge => pb::RejectReason::BatchTooLarge,
        RejectReason::StorageError => pb::RejectReason::StorageError,
        RejectReason::SeriesLimit => pb::RejectReason::SeriesLimit,
        RejectReason::RateLimited => pb::RejectReason::RateLimited,
    }
}

/// Ingest's outcome for one sample → wire result.
pub fn outcome_to_wire(o: Outcome) -> pb::SampleResult {
    match o {
        Ok(()) => pb::SampleResult {
            accepted: true,
            reason: pb::RejectReason::Unspecified as i32,
            message: String::new(),
        },
        Err(r) => pb::SampleResult {
            accepted: false,
            reason: reject_reason_to_wire(r.reason) as i32,
            message: r.message,
        },
    }
}

/// Domain algorithm → wire enum.
pub fn algorithm_to_wire(a: LbAlgorithm) -> pb::LbAlgorithm {
    match a {
        LbAlgorithm::RoundRobin => pb::LbAlgorithm::RoundRobin,
        LbAlgorithm::WeightedRoundRobin => pb::LbAlgorithm::WeightedRoundRobin,
        LbAlgorithm::Random => pb::LbAlgorithm::Random,
        LbAlgorithm::WeightedRandom => pb::LbAlgorithm::WeightedRandom,
        LbAlgorithm::LeastRequest => pb::LbAlgorithm::LeastRequest,
        LbAlgorithm::JoinShortestQueue => pb::LbAlgorithm::JoinShortestQueue,
        LbAlgorithm::PeakEwma => pb::LbAlgorithm::PeakEwma,
        LbAlgorithm::RingHash => pb::LbAlgorithm::RingHash,
        LbAlgorithm::Maglev => pb::LbAlgorithm::Maglev,
        LbAlgorithm::SourceIpHash => pb::LbAlgorithm::SourceIpHash,
    }
}

/// Wire enum number → domain algorithm; `None` for UNSPECIFIED or an unknown number.
pub fn algorithm_from_wire(n: i32) -> Option<LbAlgorithm> {
    Some(match pb::LbAlgorithm::try_from(n).ok()? {
        pb::LbAlgorithm::Unspecified => return None,
        pb::LbAlgorithm::RoundRobin => LbAlgorithm::RoundRobin,
        pb::LbAlgorithm::WeightedRoundRobin => LbAlgorithm::WeightedRoundRobin,
        pb::LbAlgorithm::Random => LbAlgorithm::Random,
        pb::LbAlgorithm::WeightedRandom => LbAlgorithm::WeightedRandom,
        pb::LbAlgorithm::LeastRequest => LbAlgorithm::LeastRequest,
        pb::LbAlgorithm::JoinShortestQueue => LbAlgorithm::JoinShortestQueue,
        pb::LbAlgorithm::PeakEwma => LbAlgorithm::PeakEwma,
        pb::LbAlgorithm::RingHash => LbAlgorithm::RingHash,
        pb::LbAlgorithm::Maglev => LbAlgorithm::Maglev,
        pb::LbAlgorithm::SourceIpHash => LbAlgorithm::SourceIpHash,
    })
}

/// Domain decision → wire.
pub fn decision_to_wire(d: &Decision) -> pb::Decision {
    pb::Decision {
        at: d.at,
        weights: d
            .weights
            .iter()
            .map(|w| pb::BackendWeight {
                backend: w.backend.clone(),
                weight: w.weight,
            })
            .collect(),
        ejected: d.ejected.clone(),
        scaling: Some(pb::ScalingSignal {
            desired_replicas: d.scaling.desired_replicas,
            current_replicas: d.scaling.current_replicas,
            rule: d.scaling.rule.clone(),
        }),
        algorithm: Some(pb::AlgorithmChoice {
            algorithm: algorithm_to_wire(d.algorithm.algorithm) as i32,
            rule: d.algorithm.rule.clone(),
        }),
        outlier_detection: d.outlier_detection.map(|o| pb::OutlierDetection {
            consecutive_5xx: o.consecutive_5xx,
            base_ejection_time_seconds: o.base_ejection_time,
            max_ejection_percent: o.max_ejection_percent,
        }),
        max_requests: d.max_requests,
        explanation: Some(pb::Explanation {
            inputs: d.explanation.inputs.clone(),
            forecast: d.explanation.forecast.clone().unwrap_or_default(),
            rules: d.explanation.rules.clone(),
            headroom: d.explanation.headroom.map(|h| pb::Headroom {
                capacity_rps: h.capacity_rps,
                horizon_seconds: h.horizon_seconds,
                exhausted_upper_in: h.exhausted_upper_in,
                exhausted_mean_in: h.exhausted_mean_in,
                exhausted_lower_in: h.exhausted_lower_in,
                scale_up_deadline_in: h.scale_up_deadline_in,
            }),
        }),
    }
}

/// Published snapshot → wire.
pub fn snapshot_to_wire(s: &ClusterSnapshot) -> pb::ClusterSnapshot {
    pb::ClusterSnapshot {
        cluster: s.cluster.clone(),
        version: s.version,
        decision: Some(decision_to_wire(&s.decision)),
        endpoints: s
            .endpoints
            .iter()
            .map(|e| pb::Endpoint {
                backend: e.backend.clone(),
                host: e.host.clone(),
                port: u32::from(e.port),
                weight: e.weight,
            })
            .collect(),
    }
}

/// Cluster configuration → wire.
pub fn cluster_to_wire(c: &ClusterConfig) -> pb::Cluster {
    pb::Cluster {
        name: c.name.clone(),
        backends: c.backends.iter().map(backend_to_wire).collect(),
        policy: c.policy.clone(),
        min_replicas: c.min_replicas,
        max_replicas: c.max_replicas,
        boot_time_seconds: c.boot_time_seconds,
        algorithm: algorithm_to_wire(c.algorithm) as i32,
        policy_params_json: if c.policy_params.is_empty() {
            String::new()
        } else {
            serde_json::Value::Object(c.policy_params.clone()).to_string()
        },
    }
}

/// Backend configuration → wire.
pub fn backend_to_wire(b: &BackendConfig) -> pb::Backend {
    pb::Backend {
        name: b.name.clone(),
        address: b.address.clone(),
        weight_hint: b.weight_hint,
    }
}

/// Wire backend → configuration (checked later by `ClusterConfig::normalise`).
pub fn backend_from_wire(b: &pb::Backend) -> BackendConfig {
    BackendConfig {
        name: b.name.clone(),
        address: b.address.clone(),
        weight_hint: b.weight_hint.max(1),
    }
}

/// Why a wire cluster is not a valid configuration; each names the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WireClusterError {
    /// `policy_params_json` is JSON but not an object.
    #[error("cluster.policy_params_json: must be a JSON object")]
    ParamsNotObject,
    /// `policy_params_json` is not JSON.
    #[error("cluster.policy_params_json: {0}")]
    ParamsJson(String),
    /// `algorithm` is not a known value.
    #[error("cluster.algorithm: unknown value {0}")]
    UnknownAlgorithm(i32),
    /// `boot_time_seconds` is negative or not finite.
    #[error("cluster.boot_time_seconds: must be a finite number ≥ 0")]
    BootTime,
}

/// Wire cluster → configuration. Errors name the offending field.
pub fn cluster_from_wire(c: &pb::Cluster) -> Result<ClusterConfig, WireClusterError> {
    let policy_params = if c.policy_params_json.trim().is_empty() {
        serde_json::Map::new()
    } else {
        match serde_json::from_str::<serde_json::Value>(&c.policy_params_json) {
            Ok(serde_json::Value::Object(m)) => m,
            Ok(_) => return Err(WireClusterError::ParamsNotObject),
            Err(e) => return Err(WireClusterError::ParamsJson(e.to_string())),
        }
    };
    let algorithm = if c.algorithm == 0 {
        LbAlgorithm::WeightedRoundRobin
    } else {
        algorithm_from_wire(c.algorithm).ok_or(WireClusterError::UnknownAlgorithm(c.algorithm))?
    };
    if !c.boot_time_seconds.is_finite() || c.boot_time_seconds < 0.0 {
        return Err(WireClusterError::BootTime);
    }
    Ok(ClusterConfig {
        name: c.name.clone(),
        policy: c.policy.clone(),
        policy_params,
        algorithm,
        min_replicas: c.min_replicas,
        max_replicas: c.max_replicas,
        boot_time_seconds: if c.boot_time_seconds == 0.0 {
            30.0
        } else {
            c.boot_time_seconds
        },
        backends: c.backends.iter().map(backend_from_wire).collect(),
        warm_start: None,
        orca: None,
        events: Default::default(),
    })
}

/// A cluster's events on the wire: the calendar file's (ids `file-N`,
/// source the file's path), then the added ones (ids `api-N`, source
/// `api`), those ending before `from_ms` left out.
pub fn events_to_wire(ev: &crate::config::ClusterEvents, from_ms: i64) -> pb::ListEventsResponse {
    use crate::state::registry::FILE_PREFIX;
    let file = ev
        .file
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let one = |id: String, e: &aya_forecaster::events::Event, source: &str| pb::KnownEvent {
        id,
        name: e.name.clone(),
        start_ms: e.start_ms,
        end_ms: e.end_ms,
        category: e.category.clone(),
        source: source.to_string(),
    };
    let events = ev
        .from_file
        .iter()
        .enumerate()
        .map(|(i, e)| one(format!("{FILE_PREFIX}{}", i + 1), e, &file))
        .chain(ev.added.iter().map(|a| one(a.id.clone(), &a.event, "api")))
        .filter(|e| e.end_ms >= from_ms)
        .collect();
    pb::ListEventsResponse { events, file }
}

/// An event to add, from the wire (an empty category is the default one).
pub fn event_from_wire(e: &pb::KnownEvent) -> aya_forecaster::events::Event {
    aya_forecaster::events::Event {
        name: e.name.clone(),
        start_ms: e.start_ms,
        end_ms: e.end_ms,
        category: if e.category.is_empty() {
            aya_forecaster::events::DEFAULT_CATEGORY.to_string()
        } else {
            e.category.clone()
        },
    }
}

/// An added event on the wire.
pub fn added_event_to_wire(a: &crate::config::AddedEvent) -> pb::KnownEvent {
    pb::KnownEvent {
        id: a.id.clone(),
        name: a.event.name.clone(),
        start_ms: a.event.start_ms,
        end_ms: a.event.end_ms,
        category: a.event.category.clone(),
        source: "api".into(),
    }
}

/// An anomaly as `ListAnomalies` returns it.
pub fn anomaly_to_wire(a: crate::anomaly::Anomaly) -> pb::Anomaly {
    let e = a.episode;
    pb::Anomaly {
        cluster: a.cluster,
        backend: a.backend,
        metric: a.metric,
        labels: a.labels,
        opened_at_ms: e.opened_at_ms,
        closed_at_ms: e.closed_at_ms.unwrap_or(0),
        last_ms: e.last_ms,
        last_score: e.last_score,
        peak_score: e.peak_score,
        peak_at_ms: e.peak_at_ms,
        value: e.value,
        explanation: e.explanation,
        closed_by: e.closed_by.unwrap_or("").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_types_keep_the_wire_numbers() {
        // The store keeps the wire's kind numbers.
        for (w, d) in [
            (pb::MetricKind::Gauge, MetricKind::Gauge),
            (pb::MetricKind::Counter, MetricKind::Counter),
            (pb::MetricKind::Delta, MetricKind::Delta),
        ] {
            assert_eq!(metric_kind_from_wire(w as i32), d);
            assert_eq!(d.code(), w as i32);
        }
        assert_eq!(metric_kind_from_wire(0), MetricKind::Gauge);
        assert_eq!(metric_kind_from_wire(9), MetricKind::Unknown(9));
        // Reasons keep their wire numbers (1..=11, in order).
        for (i, r) in RejectReason::ALL.into_iter().enumerate() {
            assert_eq!(reject_reason_to_wire(r) as i32, i as i32 + 1);
            let w = outcome_to_wire(Err(crate::ingest::Rejection::new(r, "m")));
            assert_eq!(
                (w.accepted, w.reason, w.message.as_str()),
                (false, i as i32 + 1, "m")
            );
        }
        assert_eq!(
            outcome_to_wire(Ok(())),
            pb::SampleResult {
                accepted: true,
                reason: 0,
                message: String::new()
            }
        );
        let s = sample_from_wire(pb::Sample {
            cluster: "c".into(),
            backend: "b".into(),
            metric: "m".into(),
            timestamp_ms: 5,
            value: 1.5,
            kind: 2,
            labels: [("k".to_string(), "v".to_string())].into(),
        });
        assert_eq!(
            s,
            Sample::new("c", "b", "m", MetricKind::Counter, 5, 1.5)
                .with_labels([("k".to_string(), "v".to_string())].into())
        );
    }

    #[test]
    fn every_algorithm_round_trips() {
        for a in LbAlgorithm::ALL {
            assert_eq!(algorithm_from_wire(algorithm_to_wire(a) as i32), Some(a));
        }
        assert_eq!(algorithm_from_wire(0), None);
        assert_eq!(algorithm_from_wire(99), None);
    }

    #[test]
    fn a_bad_wire_cluster_names_the_field() {
        let ok = pb::Cluster {
            name: "web".into(),
            ..Default::default()
        };
        let cfg = cluster_from_wire(&ok).unwrap();
        assert_eq!(cfg.algorithm, LbAlgorithm::WeightedRoundRobin);
        assert_eq!(cfg.boot_time_seconds, 30.0);
        let with = |f: &dyn Fn(&mut pb::Cluster)| {
            let mut c = ok.clone();
            f(&mut c);
            cluster_from_wire(&c).unwrap_err()
        };
        assert_eq!(
            with(&|c| c.policy_params_json = "[1]".into()),
            WireClusterError::ParamsNotObject
        );
        assert!(
            with(&|c| c.policy_params_json = "{".into())
                .to_string()
                .starts_with("cluster.policy_params_json: ")
        );
        assert_eq!(
            with(&|c| c.algorithm = 99),
            WireClusterError::UnknownAlgorithm(99)
        );
        assert_eq!(
            with(&|c| c.boot_time_seconds = -1.0),
            WireClusterError::BootTime
        );
    }
}
