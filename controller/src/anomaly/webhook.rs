//! The optional anomaly webhook (`[anomaly] webhook_url`): one JSON `POST`
//! when an anomaly opens and one when it closes.
//!
//! The ingest writer only hands the event to a bounded queue
//! (`webhook_queue`) with `try_send`: a full queue drops the event (counted,
//! logged), so a slow or dead receiver never blocks ingest. One sender thread
//! posts the events in order, each with `webhook_timeout_seconds`. A
//! transport error, a timeout, 429 or a 5xx answer is retried up to
//! `webhook_retries` times, 0.5 s, 1 s, 2 s, … apart (at most 8 s); any other
//! non-2xx answer (the receiver refused the event) is not. An event that
//! still failed is logged and counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use super::Anomaly;

/// Counters of the webhook (on `/metrics`).
#[derive(Debug, Default)]
pub struct WebhookCounts {
    /// Events posted and answered 2xx.
    pub sent: AtomicU64,
    /// Events whose post failed (transport error or non-2xx answer).
    pub failed: AtomicU64,
    /// Events dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Retried posts (each retry counts once).
    pub retried: AtomicU64,
}

/// Pause before retry `attempt` (1-based): 0.5 s doubling, at most 8 s.
pub fn retry_delay(attempt: u32) -> Duration {
    Duration::from_millis((500u64 << attempt.saturating_sub(1).min(4)).min(8_000))
}

/// One post's outcome.
enum Outcome {
    Sent,
    /// Worth another try (transport error, timeout, 429, 5xx).
    Transient(String),
    /// The receiver refused it (another non-2xx status).
    Refused(u16),
}

/// The queue to the sender thread.
#[derive(Debug)]
pub struct Webhook {
    tx: SyncSender<String>,
    url: String,
    /// Counters.
    pub counts: Arc<WebhookCounts>,
}

/// Whether `url` is an `http://host[:port][/path]` address; the message says why not.
pub fn check_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "{url:?}: https is not supported (plain http only; put a local relay in front of an https receiver)"
            ));
        }
        _ => return Err(format!("{url:?} must start with http://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{url:?} has no host"));
    }
    Ok(())
}

impl Webhook {
    /// Start the sender thread for `url` (checked with [`check_url`]).
    pub fn start(
        url: &str,
        queue: usize,
        timeout: Duration,
        retries: u32,
    ) -> std::io::Result<Webhook> {
        let (tx, rx) = sync_channel::<String>(queue.max(1));
        let counts = Arc::new(WebhookCounts::default());
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .into();
        let (target, c) = (url.to_string(), counts.clone());
        std::thread::Builder::new()
            .name("aya-anomaly-webhook".into())
            .spawn(move || {
                let post = |body: &str| match agent
                    .post(&target)
                    .header("content-type", "application/json")
                    .send(body)
                {
                    Ok(resp) if resp.status().is_success() => Outcome::Sent,
                    Ok(resp) => {
                        let code = resp.status().as_u16();
                        if code == 429 || resp.status().is_server_error() {
                            Outcome::Transient(format!("status {code}"))
                        } else {
                            Outcome::Refused(code)
                        }
                    }
                    Err(e) => Outcome::Transient(e.to_string()),
                };
                while let Ok(body) = rx.recv() {
                    let mut attempt = 0;
                    loop {
                        match post(&body) {
                            Outcome::Sent => {
                                c.sent.fetch_add(1, Ordering::Relaxed);
                            }
                            Outcome::Transient(why) if attempt < retries => {
                                attempt += 1;
                                c.retried.fetch_add(1, Ordering::Relaxed);
                                tracing::debug!(url = %target, error = %why, attempt, "anomaly webhook post failed; retrying");
                                std::thread::sleep(retry_delay(attempt));
                                continue;
                            }
                            Outcome::Transient(why) => {
                                c.failed.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(url = %target, error = %why, retries, "anomaly webhook post failed after its retries; event dropped");
                            }
                            Outcome::Refused(status) => {
                                c.failed.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(url = %target, status, "anomaly webhook refused the event (not retried)");
                            }
                        }
                        break;
                    }
                }
            })?;
        Ok(Webhook {
            tx,
            url: url.to_string(),
            counts,
        })
    }

    /// Queue the event of `a` (`"opened"` or `"closed"`); never blocks.
    pub fn send(&self, event: &str, a: &Anomaly) {
        let body = event_json(event, a);
        match self.tx.try_send(body) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                let n = self.counts.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // One line for the first drop and every 1000th after it.
                if n % 1000 == 1 {
                    tracing::warn!(url = %self.url, dropped = n, "anomaly webhook queue full; events dropped");
                }
            }
        }
    }
}

/// The JSON body of one event.
pub fn event_json(event: &str, a: &Anomaly) -> String {
    let e = &a.episode;
    serde_json::json!({
        "event": event,
        "cluster": a.cluster,
        "backend": a.backend,
        "metric": a.metric,
        "labels": a.labels,
        "opened_at_ms": e.opened_at_ms,
        "closed_at_ms": e.closed_at_ms,
        "last_ms": e.last_ms,
        "score": e.last_score,
        "peak_score": e.peak_score,
        "peak_at_ms": e.peak_at_ms,
        "value": e.value,
        "reason": e.reason,
        "explanation": e.explanation,
        "closed_by": e.closed_by,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anomaly::Episode;

    fn anomaly() -> Anomaly {
        Anomaly {
            cluster: "web".into(),
            backend: "a".into(),
            metric: "latency_p99_seconds".into(),
            labels: Default::default(),
            episode: Episode {
                opened_at_ms: 5,
                closed_at_ms: None,
                last_ms: 5,
                last_score: 1.0,
                peak_score: 1.0,
                peak_at_ms: 5,
                value: 2.5,
                explanation: "score 1.000 (above the highest value seen)".into(),
                reason: "new_high",
                closed_by: None,
            },
        }
    }

    #[test]
    fn urls_are_plain_http_with_a_host() {
        assert!(check_url("http://127.0.0.1:9000/hook").is_ok());
        assert!(check_url("http://alerts.example/aya").is_ok());
        for bad in ["https://x/y", "ftp://x", "x/y", "http://", ""] {
            assert!(check_url(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_full_queue_drops_events_and_a_dead_receiver_counts_failures() {
        // A listener that accepts (backlog) but never answers: the sender
        // thread waits on the first event until its timeout, the queue of 1
        // holds the second, the rest are dropped at once.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", silent.local_addr().unwrap());
        let w = Webhook::start(&url, 1, Duration::from_millis(300), 0).unwrap();
        let started = crate::clock::Clock::system().stopwatch();
        for _ in 0..5 {
            w.send("opened", &anomaly());
        }
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "send blocked"
        );
        let dropped = w.counts.dropped.load(Ordering::Relaxed);
        assert!(dropped >= 3, "{dropped}");
        // The events that were not dropped time out: counted as failures.
        let deadline = crate::clock::RealDeadline::after(Duration::from_secs(10));
        while w.counts.failed.load(Ordering::Relaxed) < 5 - dropped && !deadline.passed() {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(w.counts.failed.load(Ordering::Relaxed), 5 - dropped);
        assert_eq!(w.counts.sent.load(Ordering::Relaxed), 0);
        drop(silent);
    }

    /// A receiver answering each connection's request with the next status
    /// of `statuses` (the last one repeated), counting the requests.
    fn receiver(statuses: Vec<u16>) -> (String, Arc<AtomicU64>) {
        use std::io::{BufRead, BufReader, Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", l.local_addr().unwrap());
        let n = Arc::new(AtomicU64::new(0));
        let seen = n.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let l = line.trim_end().to_ascii_lowercase();
                    if l.is_empty() {
                        break;
                    }
                    if let Some(v) = l.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                let _ = r.read_exact(&mut body);
                let k = seen.fetch_add(1, Ordering::SeqCst) as usize;
                let status = statuses[k.min(statuses.len() - 1)];
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        (url, n)
    }

    fn wait_for(what: impl Fn() -> bool) {
        let deadline = crate::clock::RealDeadline::after(Duration::from_secs(20));
        while !what() && !deadline.passed() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn transient_failures_are_retried_and_refusals_are_not() {
        // 503, then 429, then 200: delivered on the third attempt.
        let (url, requests) = receiver(vec![503, 429, 200]);
        let w = Webhook::start(&url, 8, Duration::from_secs(2), 3).unwrap();
        w.send("opened", &anomaly());
        wait_for(|| w.counts.sent.load(Ordering::Relaxed) == 1);
        assert_eq!(w.counts.sent.load(Ordering::Relaxed), 1);
        assert_eq!(w.counts.retried.load(Ordering::Relaxed), 2);
        assert_eq!(w.counts.failed.load(Ordering::Relaxed), 0);
        assert_eq!(requests.load(Ordering::SeqCst), 3);

        // Always 500 with one retry: two attempts, then counted failed.
        let (url, requests) = receiver(vec![500]);
        let w = Webhook::start(&url, 8, Duration::from_secs(2), 1).unwrap();
        w.send("opened", &anomaly());
        wait_for(|| w.counts.failed.load(Ordering::Relaxed) == 1);
        assert_eq!(w.counts.failed.load(Ordering::Relaxed), 1);
        assert_eq!(w.counts.retried.load(Ordering::Relaxed), 1);
        assert_eq!(requests.load(Ordering::SeqCst), 2);

        // 400: the receiver refused the event; no retry.
        let (url, requests) = receiver(vec![400, 200]);
        let w = Webhook::start(&url, 8, Duration::from_secs(2), 3).unwrap();
        w.send("opened", &anomaly());
        wait_for(|| w.counts.failed.load(Ordering::Relaxed) == 1);
        assert_eq!(w.counts.failed.load(Ordering::Relaxed), 1);
        assert_eq!(w.counts.retried.load(Ordering::Relaxed), 0);
        assert_eq!(requests.load(Ordering::SeqCst), 1);
        assert_eq!(
            [1, 2, 3, 5, 9].map(|k| retry_delay(k).as_millis()),
            [500, 1000, 2000, 8000, 8000]
        );
    }

    #[test]
    fn events_carry_the_anomaly() {
        let v: serde_json::Value = serde_json::from_str(&event_json("opened", &anomaly())).unwrap();
        assert_eq!(v["event"], "opened");
        assert_eq!(v["backend"], "a");
        assert_eq!(v["closed_at_ms"], serde_json::Value::Null);
        assert_eq!(v["value"], 2.5);
        assert_eq!(v["reason"], "new_high");
        assert_eq!(v["closed_by"], serde_json::Value::Null);
        assert!(v["explanation"].as_str().unwrap().contains("highest"));
    }
}
