//! Per-client rate limits: one token bucket per client and kind of request.
//!
//! `[limits] ingest_samples_per_second` bounds the samples one client may
//! send on the aya.v1 ingest stream, `admin_requests_per_second` the admin
//! RPCs it may make. A client is its authenticated identity (token name or
//! certificate identity) when credentials are configured, else its IP
//! address. A bucket holds a burst of one second's worth of ingest
//! (`max(1, 2 × rate)` admin requests), refills continuously on the
//! service's [`Clock`], and may go into debt by one request larger than what
//! is left so that a batch larger than the burst is still served when the
//! bucket is full (the client then waits for the debt to refill).
//!
//! The number of buckets is bounded: past [`MAX_CLIENTS`] the full ones
//! (idle clients) are dropped, and if none is, the new client shares the
//! overflow bucket, so a flood of source addresses cannot grow the map.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::clock::Clock;
use crate::config::LimitsConfig;

use super::Caller;

/// Most clients tracked per limiter.
pub const MAX_CLIENTS: usize = 10_000;
/// The bucket clients share once [`MAX_CLIENTS`] are tracked.
const OVERFLOW: &str = "\u{0}overflow";

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: f64,
}

/// One limit: `rate` per second with a burst of `burst`, per client.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    clock: Clock,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// Refused: how long until the request would fit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limited {
    /// Seconds until the client's bucket holds enough again.
    pub retry_after_seconds: f64,
}

impl RateLimiter {
    /// `rate` per second with a burst of `burst` (`None` when `rate` is 0: no limit).
    pub fn new(rate: f64, burst: f64, clock: Clock) -> Option<RateLimiter> {
        (rate > 0.0 && rate.is_finite()).then(|| RateLimiter {
            rate,
            burst: burst.max(1.0),
            clock,
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// The configured rate per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Take `n` tokens from `client`'s bucket, or say when they would be there.
    pub fn try_take(&self, client: &str, n: f64) -> Result<(), Limited> {
        let now = self.clock.elapsed().as_secs_f64();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !buckets.contains_key(client) && buckets.len() >= MAX_CLIENTS {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| b.tokens + (now - b.at) * rate < burst);
        }
        let key = if buckets.contains_key(client) || buckets.len() < MAX_CLIENTS {
            client
        } else {
            OVERFLOW
        };
        let b = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        b.tokens = (b.tokens + (now - b.at).max(0.0) * self.rate).min(self.burst);
        b.at = now;
        // A request larger than the burst passes only on a full bucket.
        let need = n.min(self.burst);
        if b.tokens >= need {
            b.tokens -= n;
            Ok(())
        } else {
            Err(Limited {
                retry_after_seconds: (need - b.tokens) / self.rate,
            })
        }
    }
}

/// The service's per-client limits.
#[derive(Debug)]
pub struct RateLimits {
    /// Samples per second on the ingest stream.
    pub ingest: Option<RateLimiter>,
    /// Admin RPCs per second.
    pub admin: Option<RateLimiter>,
}

impl RateLimits {
    /// The limits of `[limits]`, on `clock`.
    pub fn new(limits: &LimitsConfig, clock: &Clock) -> RateLimits {
        let ingest = limits.ingest_samples_per_second;
        let admin = limits.admin_requests_per_second;
        RateLimits {
            ingest: RateLimiter::new(ingest, ingest, clock.clone()),
            admin: RateLimiter::new(admin, (2.0 * admin).max(1.0), clock.clone()),
        }
    }

    /// No limits.
    pub fn none() -> RateLimits {
        RateLimits {
            ingest: None,
            admin: None,
        }
    }
}

/// Who a limit counts a request against (in the request extensions, set by
/// the gRPC auth layer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientKey(pub String);

impl ClientKey {
    /// The identity of an authenticated caller, else the peer's IP address,
    /// else `anonymous`.
    pub fn of(caller: &Caller, remote: Option<std::net::SocketAddr>) -> ClientKey {
        if caller.via != "none" {
            return ClientKey(format!("{}:{}", caller.via, caller.identity));
        }
        ClientKey(match remote {
            Some(a) => a.ip().to_string(),
            None => "anonymous".into(),
        })
    }

    /// The key of a request (`anonymous` when the layer did not run).
    pub fn of_request<T>(r: &tonic::Request<T>) -> ClientKey {
        r.extensions()
            .get::<ClientKey>()
            .cloned()
            .unwrap_or_else(|| ClientKey("anonymous".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_refills_at_its_rate_and_clients_are_separate() {
        let clock = Clock::manual(0);
        let l = RateLimiter::new(10.0, 10.0, clock.clone()).unwrap();
        assert!(l.try_take("a", 10.0).is_ok(), "a full burst");
        let e = l.try_take("a", 1.0).unwrap_err();
        assert!((e.retry_after_seconds - 0.1).abs() < 1e-9, "{e:?}");
        assert!(
            l.try_take("b", 5.0).is_ok(),
            "another client has its own bucket"
        );
        clock.advance(Duration::from_millis(500)).unwrap();
        assert!(l.try_take("a", 5.0).is_ok(), "half a second refills 5");
        assert!(l.try_take("a", 1.0).is_err());
        // Larger than the burst: only on a full bucket, and it leaves a debt.
        clock.advance(Duration::from_secs(10)).unwrap();
        assert!(l.try_take("a", 25.0).is_ok());
        clock.advance(Duration::from_secs(1)).unwrap();
        assert!(l.try_take("a", 1.0).is_err(), "15 tokens of debt left");
        clock.advance(Duration::from_secs(2)).unwrap();
        assert!(l.try_take("a", 1.0).is_ok());
        assert!(
            RateLimiter::new(0.0, 1.0, clock).is_none(),
            "0 turns it off"
        );
    }

    #[test]
    fn the_map_of_clients_is_bounded() {
        let clock = Clock::manual(0);
        let l = RateLimiter::new(1.0, 1.0, clock.clone()).unwrap();
        for i in 0..MAX_CLIENTS {
            assert!(l.try_take(&format!("c{i}"), 1.0).is_ok());
        }
        // Every tracked bucket is empty: newcomers share the overflow bucket.
        assert!(l.try_take("new-1", 1.0).is_ok());
        assert!(l.try_take("new-2", 1.0).is_err(), "shares new-1's bucket");
        assert!(l.buckets.lock().unwrap().len() <= MAX_CLIENTS + 1);
        // Once the idle buckets have refilled they are dropped for newcomers.
        clock.advance(Duration::from_secs(5)).unwrap();
        assert!(l.try_take("new-3", 1.0).is_ok());
        assert!(l.buckets.lock().unwrap().len() < 10);
    }

    #[test]
    fn clients_are_keyed_by_identity_or_address() {
        let anon = Caller {
            identity: "anonymous".into(),
            via: "none",
        };
        let addr: std::net::SocketAddr = "10.1.2.3:5555".parse().unwrap();
        assert_eq!(ClientKey::of(&anon, Some(addr)).0, "10.1.2.3");
        assert_eq!(ClientKey::of(&anon, None).0, "anonymous");
        let tok = Caller {
            identity: "envoy".into(),
            via: "token",
        };
        assert_eq!(ClientKey::of(&tok, Some(addr)).0, "token:envoy");
    }
}
