//! Validation at the boundary: the bounds the documentation gives every
//! configured interval, and the checks of request values shared by the
//! configuration ([`crate::config`]) and the request handlers
//! ([`crate::ingest`], [`crate::api`]). Every error names the field.
//!
//! The bounds are listed in `docs/security.md`; they exist so that a typo
//! (`1e300`, `1e-9`) is refused at start instead of panicking a background
//! loop (`Duration::from_secs_f64` overflows) or spinning it thousands of
//! times a second.

use std::collections::BTreeMap;

use crate::ingest::{MetricKind, RejectReason, Rejection};

/// Inclusive bounds of a duration in seconds. `zero_disables` also admits
/// exactly 0 (the documented "off" value).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SecondsBound {
    /// Field name (as in `aya.toml`).
    pub field: &'static str,
    /// Smallest accepted value (> 0).
    pub min: f64,
    /// Largest accepted value.
    pub max: f64,
    /// Whether exactly 0 is accepted (and means "disabled").
    pub zero_disables: bool,
}

const DAY: f64 = 86_400.0;

/// The bounds of every interval of the service configuration.
pub const SECONDS_BOUNDS: [SecondsBound; 7] = [
    SecondsBound {
        field: "tick_interval_seconds",
        min: 0.05,
        max: DAY,
        zero_disables: false,
    },
    SecondsBound {
        field: "retention_seconds",
        min: 60.0,
        max: 3650.0 * DAY,
        zero_disables: false,
    },
    SecondsBound {
        field: "retention_check_seconds",
        min: 1.0,
        max: DAY,
        zero_disables: false,
    },
    SecondsBound {
        field: "max_future_skew_seconds",
        min: 0.001,
        max: 30.0 * DAY,
        zero_disables: false,
    },
    SecondsBound {
        field: "stale_after_seconds",
        min: 0.001,
        max: 7.0 * DAY,
        zero_disables: false,
    },
    SecondsBound {
        field: "forecast_step_seconds",
        min: 1.0,
        max: DAY,
        zero_disables: true,
    },
    SecondsBound {
        field: "retrain_interval_seconds",
        min: 0.1,
        max: 30.0 * DAY,
        zero_disables: true,
    },
];

/// Bounds of a cluster's `boot_time_seconds` (0 is allowed: ready at once).
pub const BOOT_TIME_MAX_SECONDS: f64 = DAY;

/// Largest accepted `max_batch_samples`.
pub const MAX_BATCH_SAMPLES: usize = 1_000_000;
/// Largest accepted `ingest_queue_batches`.
pub const MAX_INGEST_QUEUE_BATCHES: usize = 4096;
/// Largest accepted `max_replicas`.
pub const MAX_REPLICAS: u32 = 100_000;

/// Bounds of `tls.reload_check_seconds`.
pub const TLS_RELOAD_SECONDS: &SecondsBound = &SecondsBound {
    field: "tls.reload_check_seconds",
    min: 0.1,
    max: DAY,
    zero_disables: false,
};
/// Bounds of `limits.handshake_timeout_seconds`.
pub const HANDSHAKE_SECONDS: &SecondsBound = &SecondsBound {
    field: "limits.handshake_timeout_seconds",
    min: 0.01,
    max: 600.0,
    zero_disables: false,
};
/// Bounds of `limits.idle_timeout_seconds`.
pub const IDLE_SECONDS: &SecondsBound = &SecondsBound {
    field: "limits.idle_timeout_seconds",
    min: 0.05,
    max: 7.0 * DAY,
    zero_disables: false,
};
/// Bounds of `limits.keepalive_interval_seconds` and `keepalive_timeout_seconds`.
pub const KEEPALIVE_SECONDS: &SecondsBound = &SecondsBound {
    field: "limits.keepalive_*_seconds",
    min: 0.01,
    max: DAY,
    zero_disables: false,
};
/// Range of `limits.max_connections`.
pub const MAX_CONNECTIONS: (usize, usize) = (1, 1_000_000);
/// Range of `limits.max_concurrent_streams`.
pub const MAX_CONCURRENT_STREAMS: (usize, usize) = (1, 100_000);
/// Range of `limits.max_clusters`.
pub const MAX_CLUSTERS: (usize, usize) = (1, 1_000_000);
/// Range of `limits.max_backends_per_cluster`.
pub const MAX_BACKENDS: (usize, usize) = (1, 100_000);
/// Range of `limits.max_series` and `limits.max_series_per_cluster`.
pub const MAX_SERIES: (usize, usize) = (1, 100_000_000);
/// Largest per-client rate limit (`limits.*_per_second`).
pub const MAX_RATE: f64 = 1e9;
/// Shortest accepted bearer token.
pub const MIN_TOKEN_CHARS: usize = 16;

/// Why a value is refused: the message says what is accepted (it never
/// echoes a secret). Callers put it under the field's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

impl From<InvalidValue> for String {
    fn from(e: InvalidValue) -> String {
        e.0
    }
}

/// A bearer token: at least [`MIN_TOKEN_CHARS`] visible ASCII characters
/// (what an HTTP header carries), at most 4096. The message never echoes it.
pub fn token(t: &str) -> Result<(), InvalidValue> {
    if t.len() < MIN_TOKEN_CHARS || t.len() > 4096 {
        return Err(InvalidValue(format!(
            "must be {MIN_TOKEN_CHARS}..=4096 characters (it has {})",
            t.len()
        )));
    }
    if !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(InvalidValue(
            "must be visible ASCII characters only (no spaces or control characters)".into(),
        ));
    }
    Ok(())
}

/// Whether the host of a listen address (`host:port`) is a loopback one
/// (`127.0.0.0/8`, `[::1]`, `localhost`). Anything else, including
/// `0.0.0.0` and other host names, is not.
pub fn is_loopback(address: &str) -> bool {
    let Ok((host, _)) = host_port(address, true) else {
        return false;
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// `s` cut to at most `max` bytes (on a character boundary) with `…` when
/// cut: for echoing client-supplied names in error messages.
pub fn truncate_for_message(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The bound of `field` (one of [`SECONDS_BOUNDS`]).
pub fn seconds_bound(field: &str) -> Option<&'static SecondsBound> {
    SECONDS_BOUNDS.iter().find(|b| b.field == field)
}

/// Check `v` against `b`; the message says what is accepted.
pub fn seconds(b: &SecondsBound, v: f64) -> Result<(), InvalidValue> {
    if b.zero_disables && v == 0.0 {
        return Ok(());
    }
    if v.is_finite() && v >= b.min && v <= b.max {
        return Ok(());
    }
    let zero = if b.zero_disables {
        " (or 0 to disable)"
    } else {
        ""
    };
    Err(InvalidValue(format!(
        "{v} is out of range: must be a number of seconds in [{}, {}]{zero}",
        b.min, b.max
    )))
}

/// A tracing `EnvFilter` directive string (`info`, `aya_controller=debug,warn`).
pub fn log_filter(s: &str) -> Result<(), InvalidValue> {
    tracing_subscriber::EnvFilter::builder()
        .with_regex(false)
        .parse(s)
        .map(|_| ())
        .map_err(|e| InvalidValue(format!("{s:?} is not a valid filter: {e}")))
}

/// Split `host:port`. An IPv6 host must be bracketed (`[::1]:80`): an
/// unbracketed `::1:80` is ambiguous and refused. `allow_port_zero` is for
/// listen addresses (0 = any free port).
pub fn host_port(address: &str, allow_port_zero: bool) -> Result<(String, u16), InvalidValue> {
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| InvalidValue(format!("{address:?} has an unclosed '['")))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| InvalidValue(format!("{address:?} is not [ipv6]:port")))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(InvalidValue(format!(
                "{address:?}: {host:?} in brackets is not an IPv6 address"
            )));
        }
        (host, port)
    } else {
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| InvalidValue(format!("{address:?} is not host:port")))?;
        if host.contains(':') {
            return Err(InvalidValue(format!(
                "{address:?}: an IPv6 host must be in brackets, e.g. \"[::1]:80\""
            )));
        }
        if host.contains(['[', ']']) {
            return Err(InvalidValue(format!("{address:?} has unbalanced brackets")));
        }
        (host, port)
    };
    if host.is_empty() {
        return Err(InvalidValue(format!("{address:?} has an empty host")));
    }
    if host.len() > 253 {
        return Err(InvalidValue(format!(
            "{address:?}: host longer than 253 bytes"
        )));
    }
    if host
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '/')
    {
        return Err(InvalidValue(format!(
            "{address:?}: host has whitespace, '/' or control characters"
        )));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| InvalidValue(format!("{address:?} has an invalid port {port:?}")))?;
    if port == 0 && !allow_port_zero {
        return Err(InvalidValue(format!("{address:?} has port 0")));
    }
    Ok((host.to_string(), port))
}

/// A sample's `kind`: one of the `MetricKind` numbers (0..=3) on the wire.
pub fn metric_kind(kind: MetricKind) -> Result<(), Rejection> {
    match kind {
        MetricKind::Unknown(kind) => Err(Rejection::new(
            RejectReason::InvalidMetricName,
            format!(
                "kind: {kind} is not a MetricKind (0 unspecified, 1 gauge, 2 counter, 3 delta)"
            ),
        )),
        MetricKind::Gauge | MetricKind::Counter | MetricKind::Delta => Ok(()),
    }
}

/// A sample's labels: keys non-empty, keys and values free of control
/// characters (NUL included). The count and length limits are checked by
/// the ingest writer.
pub fn labels(labels: &BTreeMap<String, String>) -> Result<(), Rejection> {
    for (k, v) in labels {
        if k.is_empty() {
            return Err(Rejection::new(
                RejectReason::LabelsTooLarge,
                "labels: a label key is empty".to_string(),
            ));
        }
        if k.chars().any(char::is_control) {
            return Err(Rejection::new(
                RejectReason::LabelsTooLarge,
                format!(
                    "labels: key {:?} has a control character (NUL, newline, …)",
                    truncate(k)
                ),
            ));
        }
        if v.chars().any(char::is_control) {
            return Err(Rejection::new(
                RejectReason::LabelsTooLarge,
                format!(
                    "labels[{:?}]: value has a control character (NUL, newline, …)",
                    truncate(k)
                ),
            ));
        }
    }
    Ok(())
}

/// At most 64 characters of `s`, for messages.
fn truncate(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bound_accepts_its_limits_and_refuses_beyond() {
        for b in &SECONDS_BOUNDS {
            assert!(seconds(b, b.min).is_ok(), "{}", b.field);
            assert!(seconds(b, b.max).is_ok(), "{}", b.field);
            for bad in [
                b.min / 2.0,
                b.max * 2.0,
                f64::NAN,
                f64::INFINITY,
                -1.0,
                1e300,
            ] {
                assert!(seconds(b, bad).is_err(), "{} = {bad}", b.field);
            }
            assert_eq!(seconds(b, 0.0).is_ok(), b.zero_disables, "{}", b.field);
        }
    }

    #[test]
    fn host_port_refuses_ambiguous_ipv6() {
        assert_eq!(host_port("[::1]:80", false).unwrap(), ("::1".into(), 80));
        assert_eq!(host_port("a.b:1", false).unwrap(), ("a.b".into(), 1));
        assert!(host_port("127.0.0.1:0", true).is_ok());
        for bad in [
            "::1:80",
            "[::1:80",
            "[nothost]:80",
            "::1]:80",
            ":80",
            "a:0",
            "a:x",
            "a",
            "a b:1",
        ] {
            assert!(host_port(bad, false).is_err(), "{bad}");
        }
    }
}
