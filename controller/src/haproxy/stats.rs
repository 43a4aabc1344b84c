//! HAProxy as a metrics source (`[[haproxy]] stats = true`): the runtime
//! API's `show stat BE 4 -1` (one CSV line per server of backend `BE`) turned
//! into the cluster's backend metrics, so a HAProxy user needs no metrics
//! code in the backends.
//!
//! | Aya metric | from HAProxy's `show stat` |
//! |---|---|
//! | `requests_total` (counter) | `req_tot` (HTTP requests the server answered); `stot` (sessions) in TCP mode |
//! | `in_flight` | `scur + qcur`: requests at the server plus those queued in HAProxy for it |
//! | `error_rate` | Δ(`hrsp_5xx` + `eresp` + `econ`) / Δ(`req_tot` + `econ`) since the previous probe (only when the server was tried) |
//! | `latency_mean_seconds` | `rtime` / 1000: HAProxy's average response time over the server's last 1024 requests (HTTP mode, once it has answered) |
//! | `healthy` | 1 for `UP` (also `UP n/m` going down), `no check`, `DRAIN`, `NOLB`; 0 for `DOWN` (also `DOWN n/m` coming back); none for `MAINT` (Aya's own drains and deletions put servers there: not a failure) |
//!
//! `rtime` is a moving average over many requests, not the latency of the
//! probe interval: it lags a change by up to 1024 requests.

use std::collections::BTreeMap;

use crate::ingest::{MetricKind, Sample};

/// One server's line of `show stat`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerStats {
    /// `svname`.
    pub server: String,
    /// `scur`.
    pub scur: u64,
    /// `qcur`.
    pub qcur: u64,
    /// `stot`.
    pub stot: u64,
    /// `req_tot` (empty in TCP mode).
    pub req_tot: Option<u64>,
    /// `hrsp_5xx` (empty in TCP mode).
    pub hrsp_5xx: Option<u64>,
    /// `econ`.
    pub econ: u64,
    /// `eresp`.
    pub eresp: u64,
    /// `rtime`, ms (empty in TCP mode).
    pub rtime_ms: Option<f64>,
    /// `status`.
    pub status: String,
}

/// Parse `show stat BE 4 -1`: the servers of `backend`. The header line
/// (`# pxname,svname,...`) names the columns, so their order does not
/// matter; a reply without it, or without a column Aya reads, is an error
/// naming what is missing.
pub fn parse_show_stat(backend: &str, reply: &str) -> Result<Vec<ServerStats>, String> {
    let mut lines = reply.lines();
    let header = lines
        .by_ref()
        .find(|l| l.starts_with('#'))
        .ok_or_else(|| format!("`show stat {backend}` returned no CSV header: {reply:.200}"))?;
    let columns: Vec<&str> = header.trim_start_matches('#').trim().split(',').collect();
    let col = |name: &str| {
        columns
            .iter()
            .position(|c| *c == name)
            .ok_or_else(|| format!("`show stat {backend}` has no column `{name}`"))
    };
    let (px, sv, scur, qcur, stot, req_tot, h5, econ, eresp, rtime, status) = (
        col("pxname")?,
        col("svname")?,
        col("scur")?,
        col("qcur")?,
        col("stot")?,
        col("req_tot")?,
        col("hrsp_5xx")?,
        col("econ")?,
        col("eresp")?,
        col("rtime")?,
        col("status")?,
    );
    let mut out = Vec::new();
    for (n, line) in lines.enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        let get = |i: usize| f.get(i).copied().unwrap_or("");
        if get(px) != backend || matches!(get(sv), "BACKEND" | "FRONTEND") {
            continue;
        }
        let int = |i: usize, name: &str| -> Result<Option<u64>, String> {
            let v = get(i);
            if v.is_empty() {
                return Ok(None);
            }
            v.parse::<u64>().map(Some).map_err(|_| {
                format!(
                    "`show stat {backend}` line {}: column `{name}` = {v:?} is not a count",
                    n + 2
                )
            })
        };
        out.push(ServerStats {
            server: get(sv).to_string(),
            scur: int(scur, "scur")?.unwrap_or(0),
            qcur: int(qcur, "qcur")?.unwrap_or(0),
            stot: int(stot, "stot")?.unwrap_or(0),
            req_tot: int(req_tot, "req_tot")?,
            hrsp_5xx: int(h5, "hrsp_5xx")?,
            econ: int(econ, "econ")?.unwrap_or(0),
            eresp: int(eresp, "eresp")?.unwrap_or(0),
            rtime_ms: int(rtime, "rtime")?.map(|v| v as f64),
            status: get(status).to_string(),
        });
    }
    Ok(out)
}

/// Health from HAProxy's `status`: `None` when it says nothing about the
/// server's health (maintenance, or a status Aya does not know).
pub fn healthy(status: &str) -> Option<bool> {
    let word = status.split_whitespace().next().unwrap_or("");
    match word {
        "UP" | "DRAIN" | "NOLB" | "no" => Some(true),
        "DOWN" => Some(false),
        _ => None,
    }
}

/// What a server's counters were at the previous probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    attempts: u64,
    errors: u64,
}

/// Turns successive `show stat` replies into samples (it keeps the counters
/// of the previous probe for the error rate).
#[derive(Debug, Default)]
pub struct StatsState {
    prev: BTreeMap<String, Seen>,
}

impl StatsState {
    /// Samples of `cluster` at `now_ms` for the servers in `stats` that
    /// `backend_of` maps to a backend of the cluster (others are skipped).
    pub fn samples(
        &mut self,
        cluster: &str,
        stats: &[ServerStats],
        backend_of: impl Fn(&str) -> Option<String>,
        now_ms: i64,
    ) -> Vec<Sample> {
        let mut out = Vec::new();
        for s in stats {
            let Some(backend) = backend_of(&s.server) else {
                continue;
            };
            let mut push = |metric: &str, kind: MetricKind, value: f64| {
                out.push(Sample::new(
                    cluster,
                    backend.clone(),
                    metric,
                    kind,
                    now_ms,
                    value,
                ));
            };
            push(
                "requests_total",
                MetricKind::Counter,
                s.req_tot.unwrap_or(s.stot) as f64,
            );
            push("in_flight", MetricKind::Gauge, (s.scur + s.qcur) as f64);
            if let Some(h) = healthy(&s.status) {
                push("healthy", MetricKind::Gauge, if h { 1.0 } else { 0.0 });
            }
            if let Some(rt) = s.rtime_ms
                && s.req_tot.unwrap_or(0) > 0
            {
                push("latency_mean_seconds", MetricKind::Gauge, rt / 1000.0);
            }
            let now = Seen {
                attempts: s.req_tot.unwrap_or(s.stot) + s.econ,
                errors: s.hrsp_5xx.unwrap_or(0) + s.eresp + s.econ,
            };
            if let Some(prev) = self.prev.get(&s.server)
                && now.attempts >= prev.attempts
                && now.errors >= prev.errors
                && now.attempts > prev.attempts
            {
                let rate =
                    (now.errors - prev.errors) as f64 / (now.attempts - prev.attempts) as f64;
                push("error_rate", MetricKind::Gauge, rate.clamp(0.0, 1.0));
            }
            self.prev.insert(s.server.clone(), now);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply as HAProxy 2.6 writes it (columns cut to a few, in another
    /// order than HAProxy's, which the header names).
    const REPLY: &str = "# pxname,svname,qcur,scur,stot,status,req_tot,hrsp_5xx,econ,eresp,rtime\n\
        be_web,a,0,2,10,UP,10,1,0,0,12\n\
        be_web,b,3,4,7,DOWN 1/2,5,0,2,0,40\n\
        be_web,c,0,0,0,MAINT,0,0,0,0,0\n\
        be_web,BACKEND,3,6,17,UP,15,1,2,0,20\n\
        other,a,0,9,9,UP,9,0,0,0,1\n";

    #[test]
    fn parses_servers_of_the_backend_only() {
        let s = parse_show_stat("be_web", REPLY).unwrap();
        assert_eq!(
            s.iter().map(|x| x.server.as_str()).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert_eq!(s[1].qcur, 3);
        assert_eq!(s[1].econ, 2);
        assert_eq!(s[0].rtime_ms, Some(12.0));
    }

    #[test]
    fn tcp_mode_has_no_http_columns() {
        let r = "# pxname,svname,qcur,scur,stot,status,req_tot,hrsp_5xx,econ,eresp,rtime\n\
                 be,a,0,1,5,UP,,,0,0,\n";
        let s = parse_show_stat("be", r).unwrap();
        assert_eq!(s[0].req_tot, None);
        let samples = StatsState::default().samples("web", &s, |x| Some(x.into()), 1000);
        let total = samples
            .iter()
            .find(|x| x.metric == "requests_total")
            .unwrap();
        assert_eq!(total.value, 5.0, "sessions count in TCP mode");
        assert!(!samples.iter().any(|x| x.metric == "latency_mean_seconds"));
    }

    #[test]
    fn bad_replies_name_what_is_wrong() {
        let e = parse_show_stat("be_web", "Unknown command\n").unwrap_err();
        assert!(e.contains("no CSV header"), "{e}");
        let e = parse_show_stat("be_web", "# pxname,svname\nbe_web,a\n").unwrap_err();
        assert!(e.contains("no column `scur`"), "{e}");
        let e = parse_show_stat(
            "be_web",
            "# pxname,svname,qcur,scur,stot,status,req_tot,hrsp_5xx,econ,eresp,rtime\nbe_web,a,0,x,1,UP,1,0,0,0,1\n",
        )
        .unwrap_err();
        assert!(e.contains("line 2") && e.contains("`scur`"), "{e}");
    }

    #[test]
    fn samples_map_health_in_flight_and_the_error_rate_between_probes() {
        let mut st = StatsState::default();
        let first = parse_show_stat("be_web", REPLY).unwrap();
        let map = |s: &str| (s != "c").then(|| format!("aya-{s}"));
        let s1 = st.samples("web", &first, map, 1000);
        let get = |v: &[Sample], b: &str, m: &str| {
            v.iter()
                .find(|x| x.backend == b && x.metric == m)
                .map(|x| x.value)
        };
        assert_eq!(get(&s1, "aya-a", "healthy"), Some(1.0));
        assert_eq!(get(&s1, "aya-b", "healthy"), Some(0.0));
        assert_eq!(get(&s1, "aya-b", "in_flight"), Some(7.0));
        assert_eq!(get(&s1, "aya-a", "latency_mean_seconds"), Some(0.012));
        assert_eq!(
            get(&s1, "aya-a", "error_rate"),
            None,
            "no rate before a second probe"
        );
        assert!(
            s1.iter().all(|x| x.backend != "aya-c"),
            "unmapped server skipped"
        );
        // Next probe: a answered 10 more, 5 of them 5xx; b was not tried.
        let second = REPLY.replace(
            "be_web,a,0,2,10,UP,10,1,0,0,12",
            "be_web,a,0,2,20,UP,20,6,0,0,12",
        );
        let s2 = st.samples(
            "web",
            &parse_show_stat("be_web", &second).unwrap(),
            map,
            2000,
        );
        assert_eq!(get(&s2, "aya-a", "error_rate"), Some(0.5));
        assert_eq!(get(&s2, "aya-b", "error_rate"), None, "not tried: no rate");
        assert!(healthy("MAINT").is_none() && healthy("UP 1/3") == Some(true));
        assert_eq!(healthy("no check"), Some(true));
    }
}
