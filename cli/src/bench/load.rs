//! The open-loop load generator of the closed-loop benchmark.
//!
//! Arrivals are a Poisson process at a fixed rate, drawn in advance from a
//! seed. Each request is sent at its scheduled time on an idle keep-alive
//! connection (a new one when none is idle), and its latency is measured
//! **from the scheduled arrival**, not from when it was sent: when the
//! generator, Envoy or a backend falls behind, the wait counts (no
//! coordinated omission). A request that does not complete within `timeout`
//! is a failure with latency `timeout`; so is any status other than 200.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, Exp};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One request's outcome.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Scheduled arrival, seconds since the load started.
    pub at: f64,
    /// Seconds from the scheduled arrival to the end of the response.
    pub latency: f64,
    /// 200 with a body.
    pub ok: bool,
    /// The backend that answered (the response body), when it did.
    pub backend: Option<String>,
}

type Pool = Arc<Mutex<Vec<BufReader<TcpStream>>>>;

/// Send Poisson arrivals at `rate` per second to `127.0.0.1:port` for
/// `duration`, then wait for the last one (at most `timeout`). Calls
/// `at_second(s)` once at the start of every whole second `s` of the run
/// (the harness applies its mid-run events there).
pub async fn run(
    port: u16,
    rate: f64,
    duration: Duration,
    timeout: Duration,
    seed: u64,
    mut at_second: impl FnMut(u64) + Send,
) -> Vec<Outcome> {
    let pool: Pool = Arc::new(Mutex::new(Vec::new()));
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let mut rng = SmallRng::seed_from_u64(seed);
    let gap = Exp::new(rate.max(1e-6)).unwrap_or_else(|_| Exp::new(1.0).expect("rate 1"));
    let start = tokio::time::Instant::now();
    let mut t = 0.0f64;
    let mut next_second = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        t += gap.sample(&mut rng);
        if t >= duration.as_secs_f64() {
            break;
        }
        while (next_second as f64) <= t {
            tokio::time::sleep_until(start + Duration::from_secs(next_second)).await;
            at_second(next_second);
            next_second += 1;
        }
        let scheduled = start + Duration::from_secs_f64(t);
        tokio::time::sleep_until(scheduled).await;
        let (pool, outcomes) = (pool.clone(), outcomes.clone());
        let at = t;
        tasks.spawn(async move {
            let result = tokio::time::timeout(timeout, request(port, &pool)).await;
            let latency = scheduled.elapsed().as_secs_f64();
            let outcome = match result {
                Ok(Ok(backend)) => Outcome {
                    at,
                    latency,
                    ok: true,
                    backend: Some(backend),
                },
                Ok(Err(_)) => Outcome {
                    at,
                    latency,
                    ok: false,
                    backend: None,
                },
                Err(_) => Outcome {
                    at,
                    latency: timeout.as_secs_f64().max(latency),
                    ok: false,
                    backend: None,
                },
            };
            outcomes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(outcome);
        });
        // Reap finished tasks as we go so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let mut out = std::mem::take(&mut *outcomes.lock().unwrap_or_else(|e| e.into_inner()));
    out.sort_by(|a, b| a.at.total_cmp(&b.at));
    out
}

/// One `GET /` on a pooled connection: the answering backend's name.
async fn request(port: u16, pool: &Pool) -> Result<String, String> {
    let idle = pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
    let mut conn = match idle {
        Some(c) => c,
        None => {
            let s = TcpStream::connect(("127.0.0.1", port))
                .await
                .map_err(|e| e.to_string())?;
            let _ = s.set_nodelay(true);
            BufReader::new(s)
        }
    };
    let (status, body, keep) = exchange(&mut conn).await?;
    if keep {
        pool.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
    }
    if status == 200 {
        Ok(body)
    } else {
        Err(format!("status {status}"))
    }
}

/// Write the request and read one response: (status, body, reusable).
async fn exchange(reader: &mut BufReader<TcpStream>) -> Result<(u16, String, bool), String> {
    reader
        .get_mut()
        .write_all(b"GET / HTTP/1.1\r\nhost: bench\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .await
        .map_err(|e| e.to_string())?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {line:?}"))?;
    let (mut length, mut keep) = (0usize, true);
    loop {
        line.clear();
        reader
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        if line.is_empty() {
            return Err("connection closed in headers".into());
        }
        let l = line.trim_end().to_ascii_lowercase();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.strip_prefix("content-length:") {
            length = v.trim().parse().map_err(|_| format!("bad {l:?}"))?;
        }
        if l.starts_with("connection:") && l.contains("close") {
            keep = false;
        }
    }
    let mut body = vec![0; length.min(1 << 20)];
    reader
        .read_exact(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    Ok((status, String::from_utf8_lossy(&body).into_owned(), keep))
}

/// Latency percentiles and success of a set of outcomes.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Summary {
    /// Requests scheduled.
    pub requests: usize,
    /// Fraction answered 200 within the timeout (0..1).
    pub success: f64,
    /// Median latency, seconds.
    pub p50: f64,
    /// 99th percentile, seconds.
    pub p99: f64,
    /// 99.9th percentile, seconds.
    pub p999: f64,
}

/// Summarise `outcomes` (failures count at their latency).
pub fn summarise<'a>(outcomes: impl IntoIterator<Item = &'a Outcome>) -> Summary {
    let mut lat: Vec<f64> = Vec::new();
    let mut ok = 0usize;
    for o in outcomes {
        lat.push(o.latency);
        ok += usize::from(o.ok);
    }
    if lat.is_empty() {
        return Summary::default();
    }
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| quantile(&lat, p);
    Summary {
        requests: lat.len(),
        success: ok as f64 / lat.len() as f64,
        p50: q(0.50),
        p99: q(0.99),
        p999: q(0.999),
    }
}

/// The `p` quantile (nearest rank) of the non-empty, sorted `sorted`.
pub fn quantile(sorted: &[f64], p: f64) -> f64 {
    sorted[((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Requests answered per backend in each whole second of `outcomes`.
pub fn per_second_shares(outcomes: &[Outcome]) -> BTreeMap<u64, BTreeMap<String, u64>> {
    let mut out: BTreeMap<u64, BTreeMap<String, u64>> = BTreeMap::new();
    for o in outcomes {
        if let Some(b) = &o.backend {
            *out.entry(o.at.floor() as u64)
                .or_default()
                .entry(b.clone())
                .or_insert(0) += 1;
        }
    }
    out
}
