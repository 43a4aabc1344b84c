//! Data-plane load-balancing algorithms, modelled on how Envoy, gRPC and
//! Linkerd implement them.
//!
//! The balancer is "build on update, select on read" (as in pingora and
//! Envoy): membership or weight changes rebuild the per-algorithm tables
//! ([`Balancer::rebuild`]), and [`Balancer::pick`] is index-based and
//! allocation-free. Backends are addressed by their index in the simulator's
//! backend table; the balancer only sees the *routable* subset.
//!
//! | algorithm | model |
//! |---|---|
//! | `round_robin` | strict rotation over routable hosts, weights ignored |
//! | `weighted_round_robin` | Envoy's EDF scheduler: deadline = now + 1/weight, pop earliest |
//! | `random` | uniform choice (Envoy RANDOM) |
//! | `weighted_random` | choice proportional to weight (cumulative table + binary search) |
//! | `least_request` | Envoy LEAST_REQUEST: equal weights → `choice_count` random picks (with replacement), fewest active wins, ties keep the first; unequal weights → EDF with effective weight `w / (active + 1)^active_request_bias` recomputed when a host is re-inserted |
//! | `join_shortest_queue` | Envoy LEAST_REQUEST with `selection_method: FULL_SCAN`: equal weights → scan all hosts, fewest outstanding (random tie-break start); unequal weights → the same EDF as `least_request` (Envoy only scans when the weights are equal) |
//! | `peak_ewma` | Linkerd / tower PeakEwma: two distinct random hosts, cost = rtt_estimate × (pending + 1); the estimate jumps to any higher RTT (peak) and otherwise decays exponentially with time constant `ewma_decay` |
//! | `ring_hash` | Envoy RING_HASH (Ketama): each host owns ⌊w·scale⌋ ≥ 1 points, ring ≥ `ring_min_size`, lookup = first point ≥ hash(key) |
//! | `maglev` | Envoy MAGLEV: weighted permutation table of prime size (65537), lookup = table[hash(key) mod M] |
//! | `source_ip_hash` | hash(key) mod number of hosts |

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use aya_policy::LbAlgorithm;
use rand::Rng;
use rand::rngs::SmallRng;
use serde::{Deserialize, Serialize};

use crate::dist::mix64;
use crate::model::ParamError;

/// Tunables of the data-plane algorithms (Envoy / Linkerd defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LbParams {
    /// Envoy `least_request_lb_config.choice_count` (default 2).
    #[serde(default = "d_choice")]
    pub choice_count: u32,
    /// Envoy `active_request_bias` (default 1.0).
    #[serde(default = "d_bias")]
    pub active_request_bias: f64,
    /// Envoy `ring_hash_lb_config.minimum_ring_size` (default 1024).
    #[serde(default = "d_ring")]
    pub ring_min_size: u32,
    /// Envoy `ring_hash_lb_config.maximum_ring_size` (default 8M).
    #[serde(default = "d_ring_max")]
    pub ring_max_size: u32,
    /// Envoy `maglev_lb_config.table_size` (default 65537, must be prime).
    #[serde(default = "d_maglev")]
    pub maglev_table_size: u32,
    /// Linkerd peak-EWMA decay time constant, seconds (default 10).
    #[serde(default = "d_decay")]
    pub ewma_decay: f64,
    /// Linkerd peak-EWMA initial RTT estimate, seconds (default 0.03).
    #[serde(default = "d_rtt")]
    pub ewma_default_rtt: f64,
    /// Envoy passive outlier detection, `consecutive_5xx`: a host that
    /// answers this many errors in a row is ejected (0, the default: no
    /// outlier detection, as an Envoy cluster without `outlier_detection`).
    #[serde(default)]
    pub outlier_consecutive_5xx: u32,
    /// Envoy `base_ejection_time`, seconds (default 30): the n-th ejection
    /// of a host lasts n times this.
    #[serde(default = "d_ejection")]
    pub outlier_base_ejection_time: f64,
    /// Envoy `max_ejection_percent` (default 10): at most this share of the
    /// hosts is ejected at once, but at least one host can be.
    #[serde(default = "d_ejection_percent")]
    pub outlier_max_ejection_percent: f64,
}

fn d_ejection() -> f64 {
    30.0
}
fn d_ejection_percent() -> f64 {
    10.0
}

fn d_choice() -> u32 {
    2
}
fn d_bias() -> f64 {
    1.0
}
fn d_ring() -> u32 {
    1024
}
fn d_ring_max() -> u32 {
    8 * 1024 * 1024
}
fn d_maglev() -> u32 {
    65537
}
fn d_decay() -> f64 {
    10.0
}
fn d_rtt() -> f64 {
    0.03
}

impl Default for LbParams {
    fn default() -> Self {
        LbParams {
            choice_count: d_choice(),
            active_request_bias: d_bias(),
            ring_min_size: d_ring(),
            ring_max_size: d_ring_max(),
            maglev_table_size: d_maglev(),
            ewma_decay: d_decay(),
            ewma_default_rtt: d_rtt(),
            outlier_consecutive_5xx: 0,
            outlier_base_ejection_time: d_ejection(),
            outlier_max_ejection_percent: d_ejection_percent(),
        }
    }
}

impl LbParams {
    /// Check parameters; the error names the field.
    pub fn validate(&self) -> Result<(), ParamError> {
        if self.choice_count < 1 {
            return Err(ParamError::new("choice_count", "must be >= 1"));
        }
        if !(self.active_request_bias.is_finite() && self.active_request_bias >= 0.0) {
            return Err(ParamError::new(
                "active_request_bias",
                format!("must be >= 0, got {}", self.active_request_bias),
            ));
        }
        if self.ring_min_size < 1 || self.ring_max_size < self.ring_min_size {
            return Err(ParamError::new(
                "ring_min_size",
                "must be >= 1 and <= `ring_max_size`",
            ));
        }
        let m = self.maglev_table_size as u64;
        if m < 3
            || (2..)
                .take_while(|d| d * d <= m)
                .any(|d| m.is_multiple_of(d))
        {
            return Err(ParamError::new(
                "maglev_table_size",
                format!("must be a prime >= 3, got {m}"),
            ));
        }
        if !(self.outlier_base_ejection_time.is_finite() && self.outlier_base_ejection_time > 0.0) {
            return Err(ParamError::new(
                "outlier_base_ejection_time",
                format!("must be > 0, got {}", self.outlier_base_ejection_time),
            ));
        }
        if !(0.0..=100.0).contains(&self.outlier_max_ejection_percent) {
            return Err(ParamError::new(
                "outlier_max_ejection_percent",
                format!(
                    "must be in [0, 100], got {}",
                    self.outlier_max_ejection_percent
                ),
            ));
        }
        if !(self.ewma_decay.is_finite() && self.ewma_decay > 0.0) {
            return Err(ParamError::new(
                "ewma_decay",
                format!("must be > 0, got {}", self.ewma_decay),
            ));
        }
        if !(self.ewma_default_rtt.is_finite() && self.ewma_default_rtt >= 0.0) {
            return Err(ParamError::new(
                "ewma_default_rtt",
                format!("must be >= 0, got {}", self.ewma_default_rtt),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
struct EdfEntry {
    deadline: f64,
    order: u64,
    pos: u32,
}

impl PartialEq for EdfEntry {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for EdfEntry {}
impl PartialOrd for EdfEntry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for EdfEntry {
    // Reversed: BinaryHeap is a max-heap, we want the earliest deadline.
    fn cmp(&self, o: &Self) -> Ordering {
        o.deadline
            .total_cmp(&self.deadline)
            .then(o.order.cmp(&self.order))
    }
}

/// Envoy's EDF scheduler (source/common/upstream/edf_scheduler.h).
#[derive(Debug, Default, Clone)]
struct Edf {
    heap: BinaryHeap<EdfEntry>,
    now: f64,
    order: u64,
}

impl Edf {
    fn clear(&mut self) {
        self.heap.clear();
        self.now = 0.0;
        self.order = 0;
    }
    #[inline]
    fn add(&mut self, weight: f64, pos: u32) {
        let w = if weight > 0.0 && weight.is_finite() {
            weight
        } else {
            1e-12
        };
        self.order += 1;
        self.heap.push(EdfEntry {
            deadline: self.now + 1.0 / w,
            order: self.order,
            pos,
        });
    }
    #[inline]
    fn pop(&mut self) -> Option<u32> {
        let e = self.heap.pop()?;
        self.now = e.deadline;
        Some(e.pos)
    }
}

#[derive(Debug, Clone, Copy)]
struct Ewma {
    estimate: f64,
    updated: f64,
}

/// A data plane's balancer over the routable backends.
#[derive(Debug, Clone)]
pub struct Balancer {
    algo: LbAlgorithm,
    params: LbParams,
    hosts: Vec<u32>,
    weights: Vec<f64>,
    equal_weights: bool,
    rr: usize,
    edf: Edf,
    cum: Vec<f64>,
    ring: Vec<(u64, u32)>,
    maglev: Vec<u32>,
    ewma: Vec<Ewma>,
}

impl Balancer {
    /// A balancer with no hosts.
    pub fn new(algo: LbAlgorithm, params: LbParams) -> Balancer {
        Balancer {
            algo,
            params,
            hosts: Vec::new(),
            weights: Vec::new(),
            equal_weights: true,
            rr: 0,
            edf: Edf::default(),
            cum: Vec::new(),
            ring: Vec::new(),
            maglev: Vec::new(),
            ewma: Vec::new(),
        }
    }

    /// The algorithm in use.
    pub fn algorithm(&self) -> LbAlgorithm {
        self.algo
    }

    /// Switch algorithm at `now` (takes effect at the next
    /// [`Balancer::rebuild`]). Switching to peak-EWMA starts it as a new
    /// balancer starts: every host's estimate at `ewma_default_rtt`, as of
    /// `now` (tower's `PeakEwma::new`). The estimates are only kept while
    /// peak-EWMA balances; left over from an earlier spell they would have
    /// decayed towards 0, and a host with no responses since then (the
    /// slowest) would win every comparison, pending requests or not.
    pub fn set_algorithm(&mut self, algo: LbAlgorithm, now: f64) {
        if algo == LbAlgorithm::PeakEwma && self.algo != LbAlgorithm::PeakEwma {
            let d = self.params.ewma_default_rtt;
            for e in &mut self.ewma {
                *e = Ewma {
                    estimate: d,
                    updated: now,
                };
            }
        }
        self.algo = algo;
    }

    /// Routable hosts (backend indices).
    pub fn hosts(&self) -> &[u32] {
        &self.hosts
    }

    /// Rebuild for a new set of routable hosts. `weight[b]` and `name_hash[b]`
    /// are indexed by backend index; `outstanding[b]` seeds the least-request EDF.
    pub fn rebuild(
        &mut self,
        hosts: &[u32],
        weight: &[f64],
        name_hash: &[u64],
        outstanding: &[u32],
    ) {
        self.hosts.clear();
        self.hosts.extend_from_slice(hosts);
        self.weights.clear();
        self.weights.extend(
            hosts
                .iter()
                .map(|&h| weight.get(h as usize).copied().unwrap_or(1.0).max(1e-9)),
        );
        self.equal_weights = self.weights.windows(2).all(|w| w[0] == w[1]);
        if let Some(max) = hosts.iter().max()
            && self.ewma.len() <= *max as usize
        {
            let d = self.params.ewma_default_rtt;
            self.ewma.resize(
                *max as usize + 1,
                Ewma {
                    estimate: d,
                    updated: 0.0,
                },
            );
        }
        if self.rr >= self.hosts.len() {
            self.rr = 0;
        }
        self.edf.clear();
        self.cum.clear();
        self.ring.clear();
        self.maglev.clear();
        if self.hosts.is_empty() {
            return;
        }
        match self.algo {
            LbAlgorithm::WeightedRoundRobin => {
                for (i, w) in self.weights.iter().enumerate() {
                    self.edf.add(*w, i as u32);
                }
            }
            LbAlgorithm::LeastRequest | LbAlgorithm::JoinShortestQueue if !self.equal_weights => {
                for i in 0..self.hosts.len() {
                    let a = outstanding
                        .get(self.hosts[i] as usize)
                        .copied()
                        .unwrap_or(0);
                    let w = self.lr_weight(i, a);
                    self.edf.add(w, i as u32);
                }
            }
            LbAlgorithm::WeightedRandom => {
                let mut acc = 0.0;
                for w in &self.weights {
                    acc += w;
                    self.cum.push(acc);
                }
            }
            LbAlgorithm::RingHash => self.build_ring(name_hash),
            LbAlgorithm::Maglev => self.build_maglev(name_hash),
            _ => {}
        }
    }

    #[inline]
    fn lr_weight(&self, pos: usize, active: u32) -> f64 {
        let w = self.weights[pos];
        let b = self.params.active_request_bias;
        if b == 0.0 {
            w
        } else if b == 1.0 {
            w / (active as f64 + 1.0)
        } else {
            w / (active as f64 + 1.0).powf(b)
        }
    }

    fn build_ring(&mut self, name_hash: &[u64]) {
        let total: f64 = self.weights.iter().sum();
        let norm: Vec<f64> = self.weights.iter().map(|w| w / total).collect();
        let min_norm = norm.iter().cloned().fold(f64::INFINITY, f64::min);
        let scale = ((min_norm * self.params.ring_min_size as f64).ceil() / min_norm)
            .min(self.params.ring_max_size as f64);
        for (pos, &h) in self.hosts.iter().enumerate() {
            let n = ((norm[pos] * scale).floor() as u64).max(1);
            let base = name_hash.get(h as usize).copied().unwrap_or(h as u64);
            for i in 0..n {
                self.ring.push((mix64(base ^ mix64(i + 1)), pos as u32));
            }
        }
        self.ring.sort_unstable();
    }

    fn build_maglev(&mut self, name_hash: &[u64]) {
        let m = self.params.maglev_table_size as u64;
        let max_w = self.weights.iter().cloned().fold(0.0, f64::max);
        struct E {
            offset: u64,
            skip: u64,
            next: u64,
            weight: f64,
            target: f64,
        }
        let mut es: Vec<E> = self
            .hosts
            .iter()
            .enumerate()
            .map(|(pos, &h)| {
                let base = name_hash.get(h as usize).copied().unwrap_or(h as u64);
                E {
                    offset: mix64(base) % m,
                    skip: mix64(base ^ 0xA5A5_A5A5_A5A5_A5A5) % (m - 1) + 1,
                    next: 0,
                    weight: self.weights[pos] / max_w,
                    target: 0.0,
                }
            })
            .collect();
        let mut table = vec![u32::MAX; m as usize];
        let mut filled = 0u64;
        let mut i = 0u64;
        'outer: loop {
            for (pos, e) in es.iter_mut().enumerate() {
                if e.weight * (i as f64) < e.target {
                    continue;
                }
                e.target += 1.0;
                let mut c = (e.offset + e.next * e.skip) % m;
                while table[c as usize] != u32::MAX {
                    e.next += 1;
                    c = (e.offset + e.next * e.skip) % m;
                }
                table[c as usize] = pos as u32;
                e.next += 1;
                filled += 1;
                if filled == m {
                    break 'outer;
                }
            }
            i += 1;
        }
        self.maglev = table;
    }

    /// Pick a backend for a request with `key` at `now`. `outstanding[b]` is
    /// the number of requests this data plane has in flight to backend `b`.
    #[inline]
    pub fn pick(
        &mut self,
        key: u64,
        now: f64,
        outstanding: &[u32],
        rng: &mut SmallRng,
    ) -> Option<u32> {
        let n = self.hosts.len();
        if n == 0 {
            return None;
        }
        if n == 1 {
            return Some(self.hosts[0]);
        }
        let act = |h: u32| outstanding.get(h as usize).copied().unwrap_or(0);
        let pos = match self.algo {
            LbAlgorithm::RoundRobin => {
                let p = self.rr;
                self.rr = if p + 1 == n { 0 } else { p + 1 };
                p
            }
            LbAlgorithm::WeightedRoundRobin => {
                let p = self.edf.pop().unwrap_or(0);
                let w = self.weights[p as usize];
                self.edf.add(w, p);
                p as usize
            }
            LbAlgorithm::Random => rng.random_range(0..n),
            LbAlgorithm::WeightedRandom => {
                let total = self.cum[n - 1];
                let x = rng.random::<f64>() * total;
                self.cum.partition_point(|c| *c <= x).min(n - 1)
            }
            LbAlgorithm::LeastRequest | LbAlgorithm::JoinShortestQueue if !self.equal_weights => {
                let p = self.edf.pop().unwrap_or(0) as usize;
                // Envoy re-inserts the picked host with its weight at pick
                // time, counting the request about to be sent.
                let w = self.lr_weight(p, act(self.hosts[p]) + 1);
                self.edf.add(w, p as u32);
                p
            }
            LbAlgorithm::LeastRequest => {
                let mut best = rng.random_range(0..n);
                let mut best_a = act(self.hosts[best]);
                for _ in 1..self.params.choice_count {
                    let c = rng.random_range(0..n);
                    let a = act(self.hosts[c]);
                    if a < best_a {
                        best = c;
                        best_a = a;
                    }
                }
                best
            }
            LbAlgorithm::JoinShortestQueue => {
                let start = rng.random_range(0..n);
                let mut best = start;
                let mut best_a = u32::MAX;
                for i in 0..n {
                    let p = if start + i >= n {
                        start + i - n
                    } else {
                        start + i
                    };
                    let a = act(self.hosts[p]);
                    if a < best_a {
                        best = p;
                        best_a = a;
                        if a == 0 {
                            break;
                        }
                    }
                }
                best
            }
            LbAlgorithm::PeakEwma => {
                let a = rng.random_range(0..n);
                let mut b = rng.random_range(0..n - 1);
                if b >= a {
                    b += 1;
                }
                let ca = self.ewma_cost(self.hosts[a], act(self.hosts[a]), now);
                let cb = self.ewma_cost(self.hosts[b], act(self.hosts[b]), now);
                if cb < ca { b } else { a }
            }
            LbAlgorithm::RingHash => {
                let h = mix64(key);
                let i = self.ring.partition_point(|e| e.0 < h);
                let i = if i == self.ring.len() { 0 } else { i };
                self.ring.get(i).map(|e| e.1 as usize).unwrap_or(0)
            }
            LbAlgorithm::Maglev => {
                let m = self.maglev.len().max(1) as u64;
                self.maglev
                    .get((mix64(key) % m) as usize)
                    .map(|p| *p as usize)
                    .unwrap_or(0)
            }
            LbAlgorithm::SourceIpHash => (mix64(key) % n as u64) as usize,
        };
        self.hosts.get(pos).copied()
    }

    /// Tower's `PeakEwma::load`: decay the estimate to `now`, times (pending + 1).
    #[inline]
    fn ewma_cost(&mut self, b: u32, pending: u32, now: f64) -> f64 {
        let decay = self.params.ewma_decay;
        let Some(e) = self.ewma.get_mut(b as usize) else {
            return 0.0;
        };
        let el = (now - e.updated).max(0.0);
        e.estimate *= (-el / decay).exp();
        e.updated = now;
        e.estimate * (pending as f64 + 1.0)
    }

    /// Record a response time observed from backend `b` (peak-EWMA only).
    #[inline]
    pub fn observe_rtt(&mut self, b: u32, rtt: f64, now: f64) {
        if self.algo != LbAlgorithm::PeakEwma {
            return;
        }
        let decay = self.params.ewma_decay;
        let Some(e) = self.ewma.get_mut(b as usize) else {
            return;
        };
        if rtt > e.estimate {
            e.estimate = rtt;
        } else {
            let el = (now - e.updated).max(0.0);
            let d = (-el / decay).exp();
            e.estimate = e.estimate * d + rtt * (1.0 - d);
        }
        e.updated = now;
    }

    /// Notify that a request to `b` finished (re-weights least-request EDF lazily:
    /// Envoy only refreshes a host's effective weight when it is re-inserted, so nothing to do).
    #[inline]
    pub fn on_complete(&mut self, _b: u32) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn counts(algo: LbAlgorithm, weights: &[f64], n: usize) -> Vec<usize> {
        let hosts: Vec<u32> = (0..weights.len() as u32).collect();
        let names: Vec<u64> = hosts.iter().map(|h| mix64(*h as u64 + 7)).collect();
        let out = vec![0u32; weights.len()];
        let mut b = Balancer::new(algo, LbParams::default());
        b.rebuild(&hosts, weights, &names, &out);
        let mut rng = SmallRng::seed_from_u64(3);
        let mut c = vec![0; weights.len()];
        for i in 0..n {
            let h = b.pick(mix64(i as u64), 0.0, &out, &mut rng).unwrap();
            c[h as usize] += 1;
        }
        c
    }

    /// A data plane switched to peak-EWMA mid-run starts from the default
    /// estimate: a host with requests pending and no response yet does not
    /// win against one that answered. (Left over from the start, its
    /// estimate had decayed to ~0, so its cost stayed ~0 whatever its
    /// pending count while the answering host's rose to its RTT: the slow
    /// host attracted every request.)
    #[test]
    fn a_switch_to_peak_ewma_starts_from_the_default_estimate() {
        let hosts = [0u32, 1];
        let names: Vec<u64> = hosts.iter().map(|h| mix64(*h as u64 + 7)).collect();
        let mut b = Balancer::new(LbAlgorithm::LeastRequest, LbParams::default());
        b.rebuild(&hosts, &[1.0, 1.0], &names, &[0, 0]);
        let now = 100.0;
        b.set_algorithm(LbAlgorithm::PeakEwma, now);
        let outstanding = [5u32, 0];
        b.rebuild(&hosts, &[1.0, 1.0], &names, &outstanding);
        // Host 1 answered in 50 ms; host 0 has 5 requests pending.
        b.observe_rtt(1, 0.05, now);
        let mut rng = SmallRng::seed_from_u64(5);
        let busy = (0..1000)
            .filter(|i| b.pick(*i, now, &outstanding, &mut rng) == Some(0))
            .count();
        assert_eq!(
            busy, 0,
            "the host with 5 pending and no answer was picked {busy} of 1000 times"
        );
    }

    #[test]
    fn wrr_follows_weights_exactly() {
        let c = counts(LbAlgorithm::WeightedRoundRobin, &[1.0, 2.0, 4.0], 7000);
        assert_eq!(c, vec![1000, 2000, 4000]);
    }

    #[test]
    fn round_robin_ignores_weights() {
        let c = counts(LbAlgorithm::RoundRobin, &[1.0, 2.0, 4.0], 3000);
        assert_eq!(c, vec![1000, 1000, 1000]);
    }

    #[test]
    fn weighted_hashes_follow_weights() {
        for algo in [
            LbAlgorithm::WeightedRandom,
            LbAlgorithm::RingHash,
            LbAlgorithm::Maglev,
        ] {
            let c = counts(algo, &[1.0, 1.0, 2.0], 40_000);
            let share = c[2] as f64 / 40_000.0;
            assert!(
                (share - 0.5).abs() < 0.03,
                "{algo}: share of the weight-2 host {share}"
            );
        }
    }

    #[test]
    fn maglev_is_consistent_when_a_host_leaves() {
        let names: Vec<u64> = (0..10u64).map(|h| mix64(h + 7)).collect();
        let w = vec![1.0; 10];
        let out = vec![0u32; 10];
        let mut a = Balancer::new(LbAlgorithm::Maglev, LbParams::default());
        a.rebuild(&(0..10).collect::<Vec<_>>(), &w, &names, &out);
        let mut b = a.clone();
        b.rebuild(&(0..9).collect::<Vec<_>>(), &w, &names, &out);
        let mut rng = SmallRng::seed_from_u64(1);
        let mut moved = 0;
        for k in 0..10_000u64 {
            let x = a.pick(k, 0.0, &out, &mut rng).unwrap();
            let y = b.pick(k, 0.0, &out, &mut rng).unwrap();
            if x != 9 && x != y {
                moved += 1;
            }
        }
        // Maglev moves few keys that were not on the removed host.
        assert!(moved < 1500, "moved {moved}");
    }

    #[test]
    fn least_request_prefers_idle_hosts() {
        let hosts: Vec<u32> = (0..4).collect();
        let out = vec![5u32, 0, 5, 5];
        let mut b = Balancer::new(LbAlgorithm::JoinShortestQueue, LbParams::default());
        b.rebuild(&hosts, &[1.0; 4], &[1, 2, 3, 4], &out);
        let mut rng = SmallRng::seed_from_u64(1);
        assert_eq!(b.pick(0, 0.0, &out, &mut rng), Some(1));
    }

    #[test]
    fn full_scan_always_compares_both_of_two_hosts_two_picks_do_not() {
        // Envoy's N_CHOICES draws with replacement: on two hosts half the
        // picks compare a host with itself. FULL_SCAN never does.
        let hosts = [0u32, 1];
        let out = [3u32, 0];
        let mut rng = SmallRng::seed_from_u64(7);
        let busy_picks = |algo: LbAlgorithm, rng: &mut SmallRng| {
            let mut b = Balancer::new(algo, LbParams::default());
            b.rebuild(&hosts, &[1.0, 1.0], &[1, 2], &out);
            (0..10_000)
                .filter(|_| b.pick(0, 0.0, &out, rng) == Some(0))
                .count()
        };
        assert_eq!(busy_picks(LbAlgorithm::JoinShortestQueue, &mut rng), 0);
        let p2c = busy_picks(LbAlgorithm::LeastRequest, &mut rng);
        assert!(
            (2200..2800).contains(&p2c),
            "P2C picked the busy host {p2c} times"
        );
    }

    #[test]
    fn full_scan_with_unequal_weights_is_weighted_least_request() {
        // Envoy scans only when all weights are equal; otherwise both
        // selection methods use the EDF on w / (active + 1).
        let hosts = [0u32, 1, 2];
        let out = [0u32, 0, 0];
        let picks = |algo: LbAlgorithm| {
            let mut b = Balancer::new(algo, LbParams::default());
            b.rebuild(&hosts, &[1.0, 2.0, 5.0], &[1, 2, 3], &out);
            let mut rng = SmallRng::seed_from_u64(3);
            (0..64)
                .map(|_| b.pick(0, 0.0, &out, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            picks(LbAlgorithm::JoinShortestQueue),
            picks(LbAlgorithm::LeastRequest)
        );
    }

    #[test]
    fn peak_ewma_is_peak_sensitive_and_decays() {
        let mut b = Balancer::new(LbAlgorithm::PeakEwma, LbParams::default());
        b.rebuild(&[0, 1], &[1.0, 1.0], &[1, 2], &[0, 0]);
        b.observe_rtt(0, 2.0, 1.0);
        assert_eq!(b.ewma[0].estimate, 2.0);
        b.observe_rtt(0, 0.0, 11.0);
        assert!((b.ewma[0].estimate - 2.0 * (-1.0f64).exp()).abs() < 1e-9);
    }

    #[test]
    fn bad_maglev_size_is_rejected() {
        let p = LbParams {
            maglev_table_size: 65536,
            ..LbParams::default()
        };
        assert!(p.validate().unwrap_err().to_string().contains("prime"));
    }
}
