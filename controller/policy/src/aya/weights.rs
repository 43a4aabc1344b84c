//! Weights: the split of the forecast load over backends of unequal capacity,
//! the share correction, smoothing and rescaling.

use super::AyaPolicy;
use crate::capacity::{CapacityEstimate, median, positive};
use crate::config::WeightObjective;
use crate::types::{BackendObservation, BackendWeight, Explanation, TickInput, Time};
use crate::weights::{WEIGHT_SCALE, smooth_bounded, to_published};

/// Shares below this (planned or observed) are too small to correct on:
/// one window's count of a few requests is mostly noise.
const MIN_SHARE_FOR_CORRECTION: f64 = 0.005;

/// Bounds of the share-correction multiplier.
const SHARE_CORRECTION_RANGE: (f64, f64) = (0.25, 4.0);

/// Internal weights are rescaled when their mean leaves this band, so that
/// integer rounding keeps its resolution over long runs.
const WEIGHT_MEAN_BAND: (f64, f64) = (10.0, 10_000.0);

/// Capacity estimates of the active backends, as the weight rules use them.
struct Capacities<'n> {
    names: Vec<&'n str>,
    /// Estimates of the kind in use (absolute or relative), positive ones only.
    usable: Vec<Option<CapacityEstimate>>,
    use_absolute: bool,
    /// The usable capacities, requests per second (or relative).
    known: Vec<f64>,
    /// How far apart the capacities are, lower and upper bound with their
    /// noise (see [`spread_bounds`]), when two or more are known.
    bounds: Option<(f64, f64)>,
}

/// Standard errors each capacity estimate may be off by before a difference
/// counts (two: a 95 % band per backend).
const SPREAD_NOISE_SE: f64 = 2.0;

/// The pool's capacity spread with its noise, and whether the rules treat
/// the pool as homogeneous.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Spread {
    /// The spread the noise cannot explain: the largest capacity's lower
    /// band over the smallest's upper band (at least 1).
    pub(super) lower: f64,
    /// The spread the noise allows: the largest upper band over the
    /// smallest lower band.
    pub(super) upper: f64,
    /// Equal weights and unweighted least request apply.
    pub(super) homogeneous: bool,
}

/// The spread's bounds for two or more estimates, with bands of
/// [`SPREAD_NOISE_SE`] relative standard errors around each (log scale):
/// `lower = exp(max(ln c_i − z·se_i) − min(ln c_j + z·se_j))` (at least 1),
/// `upper = exp(max(ln c_i + z·se_i) − min(ln c_j − z·se_j))`. The raw
/// max/min of point estimates grows with the pool: of 16 identical backends
/// measured with a 10 % error, the largest and smallest are ≈ 1.6× apart, and
/// a homogeneous pool would get unequal weights on noise alone.
fn spread_bounds<'a>(ests: impl Iterator<Item = &'a CapacityEstimate>) -> Option<(f64, f64)> {
    let mut n = 0usize;
    let (mut lo_hi, mut hi_lo) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut lo_lo, mut hi_hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for e in ests {
        let l = e.capacity_rps.max(1e-12).ln();
        let m = SPREAD_NOISE_SE * e.rel_se;
        n += 1;
        lo_hi = lo_hi.min(l + m);
        hi_lo = hi_lo.max(l - m);
        lo_lo = lo_lo.min(l - m);
        hi_hi = hi_hi.max(l + m);
    }
    (n >= 2).then(|| ((hi_lo - lo_hi).max(0.0).exp(), (hi_hi - lo_lo).exp()))
}

/// max/min of the point estimates (for the explanation).
fn raw_spread(known: &[f64]) -> f64 {
    let (lo, hi) = known.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &x| {
        (lo.min(x), hi.max(x))
    });
    hi / lo.max(1e-12)
}

impl Capacities<'_> {
    /// Weights proportional to capacity (`med` for a backend with none).
    fn proportional(&self, med: f64) -> Vec<(String, f64)> {
        self.names
            .iter()
            .zip(&self.usable)
            .map(|(n, e)| (n.to_string(), e.map_or(med, |e| e.capacity_rps)))
            .collect()
    }
}

impl AyaPolicy {
    /// The weights to publish for the `active` backends at forecast `load`,
    /// and the capacity spread when two or more capacities are known.
    pub(super) fn compute_weights(
        &mut self,
        input: &TickInput<'_>,
        active: &[&BackendObservation],
        load: f64,
        stale: bool,
        ex: &mut Explanation,
    ) -> (Vec<BackendWeight>, Option<Spread>) {
        if active.is_empty() {
            return (Vec::new(), None);
        }
        let names: Vec<&str> = active.iter().map(|b| b.backend.as_str()).collect();
        if stale && names.iter().all(|n| self.weights.contains_key(*n)) {
            ex.rules.push("hold_weights: stale telemetry".into());
            let out = names
                .iter()
                .map(|n| BackendWeight {
                    backend: n.to_string(),
                    weight: to_published(self.weights[*n]),
                })
                .collect();
            return (out, None);
        }
        let caps = self.capacities(input, names, ex);
        let spread = caps
            .bounds
            .map(|(lower, upper)| self.classify_spread(lower, upper));
        let targets = self.weight_targets(active, &caps, spread, load, ex);
        (
            self.publish_weights(input.now, &targets, &caps, load, ex),
            spread,
        )
    }

    /// Homogeneous or not, on evidence: a pool becomes heterogeneous when
    /// even the lower bound of its spread exceeds `capacity_spread`, and
    /// homogeneous again when even the upper bound is within it; while the
    /// noise allows both, it stays as it was. A change under way (a host
    /// slowing down) widens the bands and must not flip a pool to equal
    /// weights at the moment the host needs less traffic.
    fn classify_spread(&mut self, lower: f64, upper: f64) -> Spread {
        let limit = self.cfg.get().capacity_spread;
        if lower > limit {
            self.pool_homogeneous = false;
        } else if upper <= limit {
            self.pool_homogeneous = true;
        }
        Spread {
            lower,
            upper,
            homogeneous: self.pool_homogeneous,
        }
    }

    /// Each backend's capacity estimate (explained), those of the kind most
    /// backends have (absolute or relative), and their spread.
    fn capacities<'n>(
        &self,
        input: &TickInput<'_>,
        names: Vec<&'n str>,
        ex: &mut Explanation,
    ) -> Capacities<'n> {
        let ests: Vec<Option<CapacityEstimate>> = names
            .iter()
            .map(|n| self.estimate(n, input.now, input.interval))
            .collect();
        for (n, e) in names.iter().zip(&ests) {
            if let Some(e) = e {
                ex.inputs.push(format!(
                    "{n}: capacity={:.1}{} cost_factor={:.2}{}",
                    e.capacity_rps,
                    if e.absolute { "rps" } else { "(relative)" },
                    e.cost_factor,
                    if e.degrading { " DEGRADING" } else { "" }
                ));
                if e.degrading {
                    ex.rules.push(format!(
                        "degrading {n}: cost per request rising x{:.2}",
                        e.cost_factor
                    ));
                }
            }
        }
        let abs_count = ests.iter().flatten().filter(|e| e.absolute).count();
        let rel_count = ests.iter().flatten().filter(|e| !e.absolute).count();
        let use_absolute = abs_count >= rel_count;
        let usable: Vec<Option<CapacityEstimate>> = ests
            .iter()
            .map(|e| e.filter(|e| e.absolute == use_absolute && e.capacity_rps > 0.0))
            .collect();
        let known: Vec<f64> = usable.iter().flatten().map(|e| e.capacity_rps).collect();

        let bounds = spread_bounds(usable.iter().flatten());
        if let Some((lower, upper)) = bounds {
            ex.inputs.push(format!(
                "capacity spread {lower:.2}..{upper:.2} with noise (raw max/min {:.2})",
                raw_spread(&known)
            ));
        }
        Capacities {
            names,
            usable,
            use_absolute,
            known,
            bounds,
        }
    }

    /// Target weights before smoothing: equal for a homogeneous pool or
    /// without a model, else the objective's split (or proportional to capacity).
    fn weight_targets(
        &mut self,
        active: &[&BackendObservation],
        caps: &Capacities<'_>,
        spread: Option<Spread>,
        load: f64,
        ex: &mut Explanation,
    ) -> Vec<(String, f64)> {
        let capacity_spread = self.cfg.get().capacity_spread;
        let names = &caps.names;
        let usable = &caps.usable;
        match (median(&caps.known), spread) {
            (None, _) => {
                ex.rules.push("weights_equal: no capacity model yet".into());
                names.iter().map(|n| (n.to_string(), 1.0)).collect()
            }
            (Some(_), Some(s))
                if s.homogeneous && !usable.iter().any(|e| e.is_some_and(|e| e.degrading)) =>
            {
                ex.rules.push(format!(
                    "weights_equal: homogeneous pool (capacity spread {:.2}..{:.2}, limit {capacity_spread:.2})",
                    s.lower, s.upper
                ));
                names.iter().map(|n| (n.to_string(), 1.0)).collect()
            }
            (Some(med), _) => {
                let all_cpu =
                    caps.use_absolute && usable.iter().all(|e| e.is_some_and(|e| e.cpu.is_some()));
                if all_cpu && load > 0.0 {
                    self.objective_split(active, caps, med, load, ex)
                } else {
                    ex.rules.push("weights_proportional_to_capacity".into());
                    caps.proportional(med)
                }
            }
        }
    }

    /// Equalise predicted utilisation at the forecast load, or the latency or
    /// tail objective's split over full capacities; then the share correction.
    fn objective_split(
        &mut self,
        active: &[&BackendObservation],
        caps: &Capacities<'_>,
        med: f64,
        load: f64,
        ex: &mut Explanation,
    ) -> Vec<(String, f64)> {
        let c = self.cfg.get().clone();
        // Equalise predicted utilisation at the forecast load.
        let line_of = |e: &CapacityEstimate, now: bool| {
            e.cpu.map(|l| {
                let k = if now {
                    e.current_cost_factor / e.cost_factor
                } else {
                    1.0
                };
                (l.intercept, l.slope * k)
            })
        };
        let utilisation = |lines: &[(f64, f64)]| {
            let sum_inv: f64 = lines.iter().map(|(_, b)| 1.0 / b).sum();
            let sum_ab: f64 = lines.iter().map(|(a, b)| a / b).sum();
            (load + sum_ab) / sum_inv
        };
        let mut lines: Vec<(f64, f64)> = caps
            .usable
            .iter()
            .flatten()
            .filter_map(|e| line_of(e, false))
            .collect();
        let mut u = utilisation(&lines);
        // Graceful overload: when the pool cannot carry the load even at
        // full utilisation, moving traffic off a degrading backend ahead of
        // its trend only overloads the others further. Split by what each
        // costs now, and do not let the share correction (which chases the
        // data plane's reaction to saturation) compound.
        let overloaded = u >= 1.0;
        if overloaded {
            lines = caps
                .usable
                .iter()
                .flatten()
                .filter_map(|e| line_of(e, true))
                .collect();
            u = utilisation(&lines);
            ex.rules.push(format!(
                "overload: the pool cannot carry {load:.1}rps -> split by current capacities (utilisation {u:.3}), no degrade extrapolation, no share correction"
            ));
        }
        ex.rules.push(format!(
            "weights_equalise_utilisation: load={load:.1}rps -> predicted utilisation {u:.3} (target {:.2})",
            c.target_utilization
        ));
        let mut xs: Vec<f64> = lines.iter().map(|(a, b)| ((u - a) / b).max(0.0)).collect();
        let mus: Vec<f64> = lines
            .iter()
            .map(|(a, b)| ((1.0 - a) / b).max(0.0))
            .collect();
        match c.objective {
            WeightObjective::Latency => {
                if let Some(split) = latency_split(&mus, load) {
                    ex.rules.push(
                        "weights_minimise_latency: square-root assignment over full capacities"
                            .into(),
                    );
                    xs = split;
                }
            }
            WeightObjective::Tail => {
                if let Some(split) = tail_split(&mus, load) {
                    ex.rules.push(
                        "weights_minimise_tail: equal spare capacity over full capacities".into(),
                    );
                    xs = split;
                }
            }
            WeightObjective::Utilization => {}
        }
        if xs.iter().sum::<f64>() > 0.0 {
            let xs = if overloaded {
                xs
            } else {
                self.correct_shares(active, xs, ex)
            };
            let xs = cap_shares(xs, &mus, c.max_capacity_share, caps.names.as_slice(), ex);
            caps.names
                .iter()
                .zip(xs)
                .map(|(n, x)| (n.to_string(), x))
                .collect()
        } else {
            caps.proportional(med)
        }
    }

    /// Smooth and bound the step towards `targets`, rescale when the mean
    /// leaves [`WEIGHT_MEAN_BAND`], remember the result and publish it.
    fn publish_weights(
        &mut self,
        now: Time,
        targets: &[(String, f64)],
        caps: &Capacities<'_>,
        load: f64,
        ex: &mut Explanation,
    ) -> Vec<BackendWeight> {
        let c = self.cfg.get();
        let mut new = smooth_bounded(
            targets,
            &self.weights,
            c.weight_smoothing,
            c.max_weight_step,
        );
        self.cap_suspects(now, &mut new, caps, load, ex);
        let mean = new.iter().map(|(_, w)| w).sum::<f64>() / new.len() as f64;
        if !(WEIGHT_MEAN_BAND.0..=WEIGHT_MEAN_BAND.1).contains(&mean) && mean > 0.0 {
            let k = WEIGHT_SCALE / mean;
            for (_, w) in &mut new {
                *w = (*w * k).max(1.0);
            }
            ex.rules.push("weights_rescaled".into());
        }
        self.weights = new.iter().cloned().collect();
        new.iter()
            .map(|(n, w)| BackendWeight {
                backend: n.clone(),
                weight: to_published(*w),
            })
            .collect()
    }

    /// Remember which backends are in trouble now: unhealthy, or erroring at
    /// the ejection threshold.
    pub(super) fn note_trouble(&mut self, input: &TickInput<'_>) {
        let threshold = self.cfg.get().eject_error_rate;
        for b in input.backends {
            let erroring = b.error_rate.is_finite() && b.error_rate >= threshold;
            if !b.healthy || erroring {
                self.last_trouble.insert(b.backend.clone(), input.now);
            }
        }
    }

    /// Blast-radius bound for backends that failed recently: a backend seen
    /// in trouble within `suspicion_window` seconds gets at most the mean
    /// weight of the others (its fair share), applied at once rather than smoothed. A
    /// backend that fails once tends to fail again (flapping hosts, a
    /// crash loop); while it carries a large share, each failure errors that
    /// share of all requests until the data plane or Aya notices.
    ///
    /// The cap is bounded by what the others can carry: when the clean
    /// backends' capacity (at `target_utilization`, from their models) is
    /// below the forecast load, the suspects keep at least the share of the
    /// load the clean ones cannot serve, split in proportion to the suspects'
    /// capacities. Capping a fast host that just recovered at the fair share of
    /// slow ones would otherwise overload the slow ones for the whole window
    /// (the N+1 check of ejection, applied to the cap).
    fn cap_suspects(
        &self,
        now: Time,
        new: &mut [(String, f64)],
        caps: &Capacities<'_>,
        load: f64,
        ex: &mut Explanation,
    ) {
        let window = self.cfg.get().suspicion_window;
        if window <= 0.0 || new.len() < 2 {
            return;
        }
        let recent: Vec<bool> = new
            .iter()
            .map(|(n, _)| self.last_trouble.get(n).is_some_and(|t| now - t <= window))
            .collect();
        if !recent.iter().any(|r| *r) {
            return;
        }
        // Fair share: the mean weight of the backends not under suspicion.
        // When every one is, there is no safer place for the traffic, and
        // equal weights would only throw away what the split knows.
        let clean: Vec<f64> = new
            .iter()
            .zip(&recent)
            .filter(|(_, r)| !**r)
            .map(|((_, w), _)| *w)
            .collect();
        if clean.is_empty() {
            ex.rules
                .push("blast_radius_relaxed: every backend failed recently".into());
            return;
        }
        let fair = clean.iter().sum::<f64>() / clean.len() as f64;
        let full = 1.0 / self.cfg.get().target_utilization;
        let floors = suspect_floors(new, &recent, caps, full, load, clean.iter().sum());
        if floors.is_none() {
            ex.rules.push(
                "blast_radius_relaxed: the clean backends cannot carry the load without the suspects"
                    .into(),
            );
            return;
        }
        let mut capped = Vec::new();
        let mut carried = Vec::new();
        for (i, ((n, w), r)) in new.iter_mut().zip(&recent).enumerate() {
            if !*r {
                continue;
            }
            let floor = floors.as_ref().map_or(0.0, |f| f[i]);
            let cap = fair.max(floor);
            if *w > cap {
                *w = cap;
                if floor > fair {
                    carried.push(n.clone());
                } else {
                    capped.push(n.clone());
                }
            }
        }
        if !capped.is_empty() {
            ex.rules.push(format!(
                "blast_radius: failed within {window:.0}s, capped at fair share: {}",
                capped.join(",")
            ));
        }
        if !carried.is_empty() {
            ex.rules.push(format!(
                "blast_radius: failed within {window:.0}s, capped at the share the others cannot carry: {}",
                carried.join(",")
            ));
        }
    }

    /// Close the loop from planned split to observed traffic. A weighted
    /// least-request data plane does not send traffic in proportion to the
    /// weights: busy fast backends shed picks to idle slow ones. Each
    /// backend's multiplier moves by `(planned share / observed share)^gain`
    /// per tick (clamped to [1/4, 4]), so the traffic that arrives follows
    /// the split the objective chose. `gain = 0` publishes the split as is.
    fn correct_shares(
        &mut self,
        active: &[&BackendObservation],
        xs: Vec<f64>,
        ex: &mut Explanation,
    ) -> Vec<f64> {
        let gain = self.cfg.get().share_correction;
        let present: Vec<&str> = active.iter().map(|b| b.backend.as_str()).collect();
        self.share_correction
            .retain(|k, _| present.contains(&k.as_str()));
        if gain <= 0.0 || xs.len() != active.len() {
            self.share_correction.clear();
            return xs;
        }
        let sum_x: f64 = xs.iter().sum();
        let sum_r: f64 = active
            .iter()
            .map(|b| b.request_rate)
            .filter(|r| r.is_finite() && *r > 0.0)
            .sum();
        let mut out = Vec::with_capacity(xs.len());
        for (b, x) in active.iter().zip(xs) {
            let k = self
                .share_correction
                .entry(b.backend.clone())
                .or_insert(1.0);
            let planned = x / sum_x;
            let observed = if b.request_rate.is_finite() && sum_r > 0.0 {
                b.request_rate.max(0.0) / sum_r
            } else {
                0.0
            };
            if planned >= MIN_SHARE_FOR_CORRECTION && observed >= MIN_SHARE_FOR_CORRECTION {
                let next = *k * (planned / observed).powf(gain);
                if next.is_finite() {
                    *k = next.clamp(SHARE_CORRECTION_RANGE.0, SHARE_CORRECTION_RANGE.1);
                }
            }
            out.push(x * *k);
        }
        if self
            .share_correction
            .values()
            .any(|k| (k - 1.0).abs() > 0.05)
        {
            ex.rules.push(format!(
                "weights_share_correction: {}",
                self.share_correction
                    .iter()
                    .map(|(n, k)| format!("{n}x{k:.2}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
        out
    }
}

/// The least weight each suspect (`recent`) must keep so that the clean
/// backends, whose weights sum to `clean_weight`, are not asked for more than
/// their full capacity (the estimates at target utilisation times `scale`) at
/// the forecast `load`: zeros when they can carry it all or
/// when capacities are unknown (no absolute estimate for every backend), and
/// `None` when the clean backends can carry (almost) none of it.
fn suspect_floors(
    new: &[(String, f64)],
    recent: &[bool],
    caps: &Capacities<'_>,
    scale: f64,
    load: f64,
    clean_weight: f64,
) -> Option<Vec<f64>> {
    let zeros = vec![0.0; new.len()];
    if !(load > 0.0 && load.is_finite() && caps.use_absolute) {
        return Some(zeros);
    }
    // By name, not by position: one lookup per backend, so a large pool
    // with a suspect costs O(n log n), not O(n²), per tick.
    let by_name: std::collections::BTreeMap<&str, f64> = caps
        .names
        .iter()
        .zip(&caps.usable)
        .filter_map(|(n, e)| e.map(|e| (*n, e.capacity_rps * scale)))
        .collect();
    let capacities: Option<Vec<f64>> = new
        .iter()
        .map(|(n, _)| by_name.get(n.as_str()).copied())
        .collect();
    let Some(capacities) = capacities else {
        return Some(zeros);
    };
    let clean_capacity: f64 = capacities
        .iter()
        .zip(recent)
        .filter(|(_, r)| !**r)
        .map(|(c, _)| c)
        .sum();
    let suspect_capacity: f64 = capacities
        .iter()
        .zip(recent)
        .filter(|(_, r)| **r)
        .map(|(c, _)| c)
        .sum();
    let excess = load - clean_capacity;
    if excess <= 0.0 || suspect_capacity <= 0.0 {
        return Some(zeros);
    }
    // The suspects together need the share q of all traffic; with the
    // clean weights fixed, their weights must sum to q / (1 - q) of those.
    let q = excess / load;
    if q >= 0.999 || clean_weight <= 0.0 {
        return None;
    }
    let total = q / (1.0 - q) * clean_weight;
    Some(
        capacities
            .iter()
            .zip(recent)
            .map(|(c, r)| {
                if *r {
                    total * c / suspect_capacity
                } else {
                    0.0
                }
            })
            .collect(),
    )
}

/// Blast-radius bound: no backend's share of the traffic above `cap` times
/// its share of the pool's capacity (`μ_i / Σμ`), the excess spread over the
/// others in proportion to their shares. The tail split and the share
/// correction both push traffic onto the fastest hosts; uncapped, losing one
/// fast host errors most of the traffic until the data plane notices, and a
/// share correction that the data plane cannot follow winds up without bound.
/// `cap = 0` (or non-finite) leaves the split alone.
fn cap_shares(
    mut xs: Vec<f64>,
    mus: &[f64],
    cap: f64,
    names: &[&str],
    ex: &mut Explanation,
) -> Vec<f64> {
    let total_mu: f64 = mus.iter().sum();
    if !(cap.is_finite() && cap > 0.0) || xs.len() != mus.len() || !positive(total_mu) {
        return xs;
    }
    let mut capped = vec![false; xs.len()];
    // Each pass pins the backends over their bound; the rest are rescaled to
    // carry what they shed. A pinned backend stays pinned, so this ends in at
    // most n passes.
    for _ in 0..xs.len() {
        let total: f64 = xs.iter().sum();
        if !positive(total) {
            return xs;
        }
        let bound: Vec<f64> = mus.iter().map(|m| cap * m / total_mu * total).collect();
        let over: Vec<usize> = (0..xs.len())
            .filter(|&i| !capped[i] && xs[i] > bound[i] * (1.0 + 1e-9))
            .collect();
        if over.is_empty() {
            break;
        }
        let pinned: f64 = (0..xs.len())
            .filter(|&i| capped[i] || over.contains(&i))
            .map(|i| bound[i].min(xs[i]))
            .sum();
        let free: f64 = (0..xs.len())
            .filter(|&i| !capped[i] && !over.contains(&i))
            .map(|i| xs[i])
            .sum();
        for &i in &over {
            xs[i] = bound[i];
            capped[i] = true;
        }
        if !positive(free) {
            break;
        }
        // Keep the total: the free backends carry total − pinned.
        let k = (total - pinned).max(0.0) / free;
        for i in 0..xs.len() {
            if !capped[i] {
                xs[i] *= k;
            }
        }
    }
    let names_capped: Vec<&str> = names
        .iter()
        .zip(&capped)
        .filter(|(_, c)| **c)
        .map(|(n, _)| *n)
        .collect();
    if !names_capped.is_empty() {
        ex.rules.push(format!(
            "blast_radius: share capped at {cap:.2}x capacity share: {}",
            names_capped.join(",")
        ));
    }
    xs
}

/// Keep at least this fraction of total capacity spare before using the
/// latency-optimal split; closer to saturation it degenerates to "all
/// backends at 100 %", and proportional (equal utilisation) is safer.
const LATENCY_SPLIT_MIN_SLACK: f64 = 0.05;

/// Latency-optimal static split of `load` over servers of capacities `mus`
/// (M/M/1 each): `x_i = μ_i − √μ_i · (Σμ − L)/Σ√μ` over the servers that get
/// a positive share (the rest get none). `None` when the pool cannot carry
/// the load with 5 % to spare (`LATENCY_SPLIT_MIN_SLACK`).
pub fn latency_split(mus: &[f64], load: f64) -> Option<Vec<f64>> {
    water_fill(mus, load, f64::sqrt)
}

/// Tail-optimal static split of `load` over servers of capacities `mus`
/// (M/M/1 each): every server that gets traffic keeps the same spare
/// capacity, `x_i = μ_i − c` with `c = (Σμ − L)/n` over the servers used.
/// The sojourn time at server i is exponential with rate `μ_i − x_i = c`, so
/// every used server has the same tail, the largest common decay rate
/// possible. `None` when the pool cannot carry the load with 5 % to spare
/// (`LATENCY_SPLIT_MIN_SLACK`).
pub fn tail_split(mus: &[f64], load: f64) -> Option<Vec<f64>> {
    water_fill(mus, load, |_| 1.0)
}

/// Water-filling behind [`latency_split`] and [`tail_split`]: over the
/// servers used, `x_i = μ_i − g(μ_i) · k` with `k = (Σμ − L)/Σg(μ)`, so the
/// shares sum to the load. A server whose share would be negative gets none
/// and `k` is recomputed; `k` only grows as servers are dropped, so a dropped
/// server never comes back and the order of dropping does not matter.
fn water_fill(mus: &[f64], load: f64, g: impl Fn(f64) -> f64) -> Option<Vec<f64>> {
    let total: f64 = mus.iter().sum();
    if !positive(load) || !positive(total) || load > total * (1.0 - LATENCY_SPLIT_MIN_SLACK) {
        return None;
    }
    let mut used: Vec<bool> = mus.iter().map(|m| *m > 0.0).collect();
    for _ in 0..mus.len() {
        let (s_mu, s_g) = mus
            .iter()
            .zip(&used)
            .filter(|(_, u)| **u)
            .fold((0.0, 0.0), |(sm, sg), (m, _)| (sm + m, sg + g(*m)));
        if !positive(s_g) {
            return None;
        }
        let k = (s_mu - load) / s_g;
        let xs: Vec<f64> = mus
            .iter()
            .zip(&used)
            .map(|(m, u)| if *u { m - g(*m) * k } else { 0.0 })
            .collect();
        if let Some(i) = xs.iter().zip(&used).position(|(x, u)| *u && *x < 0.0) {
            used[i] = false;
            continue;
        }
        return Some(xs);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::*;
    use crate::aya::AyaPolicy;
    use crate::config::AyaConfig;
    use crate::types::*;

    #[test]
    fn degrading_backend_loses_weight_before_it_saturates() {
        let mut p = engine();
        let names = ["a", "b", "c", "d"];
        let mut last = None;
        for k in 0..30 {
            let t = k as f64 * 10.0;
            // Load varies a little so the load → CPU fit is identifiable.
            let rate = 100.0 + 10.0 * ((k % 5) as f64 - 2.0);
            // Backend d's cost per request rises 4 % per tick from tick 15.
            let d_cost = 0.004 * if k >= 15 { 1.04f64.powi(k - 14) } else { 1.0 };
            let backends: Vec<_> = names
                .iter()
                .map(|n| {
                    let c = if *n == "d" { d_cost } else { 0.004 };
                    obs(n, t, rate, c * rate, 0.01, 0.06)
                })
                .collect();
            let d_cpu = d_cost * rate;
            let dec = p.decide(&input(t, &backends, rate * 4.0, None, replicas(4)));
            if k == 14 {
                assert_eq!(
                    weight(&dec, "d"),
                    weight(&dec, "a"),
                    "steady pool: equal weights"
                );
            }
            if k >= 15 && weight(&dec, "d") < weight(&dec, "a") * 9 / 10 && last.is_none() {
                last = Some((k, d_cpu));
            }
        }
        let (k, cpu) = last.expect("d never lost weight");
        assert!(
            cpu < 0.6,
            "down-weighted at tick {k} while its CPU was still {cpu:.2}"
        );
    }

    /// A backend whose cost per request rises: with headroom in the pool it
    /// loses weight ahead of its trend; when the pool cannot carry the load
    /// at all (graceful overload), it keeps the share its current cost
    /// allows, since the others have nothing to spare.
    #[test]
    fn an_overloaded_pool_splits_by_current_capacity_not_the_trend() {
        let cfg = AyaConfig {
            objective: crate::config::WeightObjective::Utilization,
            share_correction: 0.0,
            weight_smoothing: 1.0,
            max_weight_step: 100.0,
            ..AyaConfig::default()
        };
        let run = |per_backend: f64| {
            let mut p = AyaPolicy::new(cfg.clone().validate().unwrap());
            let names = ["a", "b", "c", "d"];
            let mut out = None;
            for k in 0..25 {
                let t = k as f64 * 10.0;
                let rate = per_backend + 5.0 * ((k % 5) as f64 - 2.0);
                let d_cost = 0.004 * if k >= 15 { 1.04f64.powi(k - 14) } else { 1.0 };
                let backends: Vec<_> = names
                    .iter()
                    .map(|n| {
                        let c = if *n == "d" { d_cost } else { 0.004 };
                        obs(n, t, rate, c * rate, 0.01, 0.06)
                    })
                    .collect();
                let dec = p.decide(&input(t, &backends, rate * 4.0, None, replicas(4)));
                out = Some((dec, 0.004 / d_cost));
            }
            out.unwrap()
        };
        // Headroom (40 % load): d is down-weighted beyond what it costs now.
        let (dec, now_ratio) = run(100.0);
        let ratio = weight(&dec, "d") as f64 / weight(&dec, "a") as f64;
        assert!(
            ratio < now_ratio * 0.95,
            "with headroom d keeps {ratio:.3} of a's weight; its current capacity is {now_ratio:.3}"
        );
        assert!(
            !dec.explanation
                .rules
                .iter()
                .any(|r| r.starts_with("overload"))
        );
        // Overload (96 % of the healthy capacity, and d slower): d keeps
        // its current capacity's share.
        let (dec, now_ratio) = run(240.0);
        let ratio = weight(&dec, "d") as f64 / weight(&dec, "a") as f64;
        assert!(
            dec.explanation
                .rules
                .iter()
                .any(|r| r.starts_with("overload")),
            "{:?}",
            dec.explanation.rules
        );
        assert!(
            ratio >= now_ratio * 0.95,
            "overloaded, d keeps only {ratio:.3} of a's weight; its current capacity is {now_ratio:.3}"
        );
    }

    /// 16 backends measured with ±60 % per-window CPU noise (deterministic):
    /// `speed(i)` sets their true relative speed. Returns the last decision.
    fn noisy_pool(speed: impl Fn(usize) -> f64) -> Decision {
        let mut p = engine();
        let mut dec = None;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for k in 0..20 {
            let t = k as f64 * 10.0;
            let backends: Vec<_> = (0..16)
                .map(|i| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let u = (x >> 11) as f64 / (1u64 << 53) as f64;
                    let noise = 1.0 + 1.2 * (u - 0.5);
                    let rate = 50.0;
                    obs(
                        &format!("b{i:02}"),
                        t,
                        rate,
                        0.008 * rate * noise / speed(i),
                        0.02,
                        0.12,
                    )
                })
                .collect();
            dec = Some(p.decide(&input(t, &backends, 800.0, None, replicas(16))));
        }
        dec.unwrap()
    }

    #[test]
    fn noise_alone_does_not_make_a_pool_heterogeneous() {
        // Identical backends: the raw max/min of their estimates is well
        // over `capacity_spread`, but within what their noise explains.
        let dec = noisy_pool(|_| 1.0);
        let raw = dec
            .explanation
            .inputs
            .iter()
            .find_map(|i| i.split("raw max/min ").nth(1))
            .and_then(|r| r.trim_end_matches(')').parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{:?}", dec.explanation.inputs));
        assert!(
            raw > 1.3,
            "raw spread {raw}: the test needs noise that fools max/min"
        );
        assert!(
            dec.explanation
                .rules
                .iter()
                .any(|r| r.starts_with("weights_equal: homogeneous pool")),
            "{:?}",
            dec.explanation
        );
        assert!(dec.weights.windows(2).all(|w| w[0].weight == w[1].weight));
        // Two real tiers (3x apart) measured as noisily stay unequal.
        let tiers = noisy_pool(|i| if i < 8 { 1.0 } else { 3.0 });
        assert!(
            !tiers
                .explanation
                .rules
                .iter()
                .any(|r| r.starts_with("weights_equal:")),
            "{:?}",
            tiers.explanation
        );
        let (slow, fast) = (weight(&tiers, "b00"), weight(&tiers, "b15"));
        assert!(fast > 2 * slow, "fast {fast} vs slow {slow}");
    }

    #[test]
    fn unequal_capacities_get_weights_that_equalise_utilisation() {
        let cfg = AyaConfig {
            objective: crate::config::WeightObjective::Utilization,
            // The observed rates below are fixed; this test checks the split itself.
            share_correction: 0.0,
            ..AyaConfig::default()
        };
        let mut p = AyaPolicy::new(cfg.validate().unwrap());
        let mut dec = None;
        for k in 0..20 {
            let t = k as f64 * 10.0;
            let rate = 100.0 + 5.0 * (k % 3) as f64;
            // b is twice as fast: half the CPU per request.
            let backends = [
                obs("a", t, rate, 0.004 * rate, 0.02, 0.12),
                obs("b", t, rate, 0.002 * rate, 0.01, 0.06),
            ];
            dec = Some(p.decide(&input(t, &backends, 2.0 * rate, None, replicas(2))));
        }
        let dec = dec.unwrap();
        let ratio = weight(&dec, "b") as f64 / weight(&dec, "a") as f64;
        // This test runs the utilisation objective (see its config below).
        assert!((ratio - 2.0).abs() < 0.15, "weights {:?}", dec.weights);
        assert!(
            dec.explanation
                .rules
                .iter()
                .any(|r| r.starts_with("weights_equalise_utilisation")),
            "{:?}",
            dec.explanation
        );
    }

    #[test]
    fn latency_objective_loads_fast_backends_more_than_proportionally() {
        let cfg = AyaConfig {
            objective: crate::config::WeightObjective::Latency,
            share_correction: 0.0,
            ..AyaConfig::default()
        };
        let mut p = AyaPolicy::new(cfg.validate().unwrap());
        let mut dec = None;
        for k in 0..20 {
            let t = k as f64 * 10.0;
            let rate = 100.0 + 5.0 * (k % 3) as f64;
            let backends = [
                obs("a", t, rate, 0.004 * rate, 0.02, 0.12),
                obs("b", t, rate, 0.001 * rate, 0.005, 0.03),
            ];
            dec = Some(p.decide(&input(t, &backends, 2.0 * rate, None, replicas(2))));
        }
        let dec = dec.unwrap();
        let ratio = weight(&dec, "b") as f64 / weight(&dec, "a") as f64;
        assert!(
            ratio > 4.0,
            "capacity ratio is 4, latency-optimal split is steeper: {:?}",
            dec.weights
        );
        assert!(
            dec.explanation
                .rules
                .iter()
                .any(|r| r.starts_with("weights_minimise_latency")),
            "{:?}",
            dec.explanation
        );
    }

    #[test]
    fn latency_split_matches_the_square_root_rule() {
        // μ = 100, 400; L = 300: k = (500 − 300)/(10 + 20) = 6.67.
        let xs = latency_split(&[100.0, 400.0], 300.0).unwrap();
        assert!((xs[0] - (100.0 - 10.0 * 200.0 / 30.0)).abs() < 1e-9);
        assert!((xs.iter().sum::<f64>() - 300.0).abs() < 1e-9);
        // A very slow server gets nothing at light load.
        let xs = latency_split(&[1.0, 400.0], 50.0).unwrap();
        assert_eq!(xs[0], 0.0);
        assert!((xs[1] - 50.0).abs() < 1e-9);
        assert!(latency_split(&[100.0, 100.0], 199.0).is_none());
    }

    #[test]
    fn shares_are_capped_relative_to_capacity_and_keep_their_total() {
        let mut ex = Explanation::default();
        // Capacities 1, 1, 8 (shares 10 %, 10 %, 80 %); a split giving the
        // fast host 95 % is cut to 1.1 × 80 % = 88 %, the rest carry the excess.
        let xs = cap_shares(
            vec![2.5, 2.5, 95.0],
            &[1.0, 1.0, 8.0],
            1.1,
            &["a", "b", "c"],
            &mut ex,
        );
        let total: f64 = xs.iter().sum();
        assert!((total - 100.0).abs() < 1e-9, "{xs:?}");
        assert!((xs[2] - 88.0).abs() < 1e-9, "{xs:?}");
        assert!(
            (xs[0] - 6.0).abs() < 1e-9 && (xs[1] - 6.0).abs() < 1e-9,
            "{xs:?}"
        );
        assert!(
            ex.rules
                .iter()
                .any(|r| r.starts_with("blast_radius") && r.ends_with(": c"))
        );
        // Within bounds, or disabled: unchanged.
        let mut ex = Explanation::default();
        let same = cap_shares(
            vec![10.0, 10.0, 80.0],
            &[1.0, 1.0, 8.0],
            1.1,
            &["a", "b", "c"],
            &mut ex,
        );
        assert_eq!(same, vec![10.0, 10.0, 80.0]);
        assert!(ex.rules.is_empty());
        let off = cap_shares(
            vec![0.0, 0.0, 1.0],
            &[1.0, 1.0, 1.0],
            0.0,
            &["a", "b", "c"],
            &mut ex,
        );
        assert_eq!(off, vec![0.0, 0.0, 1.0]);
    }

    #[test]
    fn a_backend_that_failed_recently_gets_at_most_the_mean_weight() {
        let mut p = engine();
        let names = ["a", "b", "c", "d"];
        let run = |p: &mut AyaPolicy, t: f64, d_healthy: bool| {
            // d is four times as fast as the others.
            let backends: Vec<_> = names
                .iter()
                .map(|n| {
                    let cost = if *n == "d" { 0.001 } else { 0.004 };
                    let rate = 100.0 + 10.0 * ((t as i64 / 10) % 3) as f64;
                    let mut b = obs(n, t, rate, cost * rate, cost * 5.0, cost * 30.0);
                    b.healthy = *n != "d" || d_healthy;
                    b
                })
                .collect();
            p.decide(&input(t, &backends, 600.0, None, replicas(4)))
        };
        let mut before = None;
        for k in 0..15 {
            before = Some(run(&mut p, 10.0 * k as f64, true));
        }
        let before = before.unwrap();
        assert!(
            weight(&before, "d") > 2 * weight(&before, "a"),
            "{:?}",
            before.weights
        );
        // d fails for one tick, then is healthy again: for the next
        // `suspicion_window` (60 s) its weight stays at most the mean.
        run(&mut p, 150.0, false);
        for k in 16..21 {
            let d = run(&mut p, 10.0 * k as f64, true);
            let mean =
                d.weights.iter().map(|w| w.weight as f64).sum::<f64>() / d.weights.len() as f64;
            assert!(
                weight(&d, "d") as f64 <= mean + 1.0,
                "tick {k}: {:?}",
                d.weights
            );
            assert!(
                d.explanation
                    .rules
                    .iter()
                    .any(|r| r.contains("capped at fair share: d")),
                "{:?}",
                d.explanation.rules
            );
        }
        // Long after, the cap is gone.
        let mut last = None;
        for k in 22..40 {
            last = Some(run(&mut p, 10.0 * k as f64, true));
        }
        let last = last.unwrap();
        assert!(
            weight(&last, "d") > 2 * weight(&last, "a"),
            "{:?}",
            last.weights
        );
    }

    #[test]
    fn the_suspicion_cap_leaves_what_the_others_cannot_carry() {
        // A slow host (≈250 rps at full utilisation) and a fast one (≈1000
        // rps) that fails for one tick. Capping the fast one at the slow
        // one's weight would send half the load to the slow host.
        let run = |demand: f64| {
            let mut p = engine();
            let step = |p: &mut AyaPolicy, t: f64, fast_healthy: bool| {
                let backends: Vec<_> = [("slow", 0.004), ("fast", 0.001)]
                    .iter()
                    .map(|(n, cost)| {
                        let share = if *n == "fast" { 0.8 } else { 0.2 };
                        let rate = demand * share + 5.0 * ((t as i64 / 10) % 3) as f64;
                        let mut b = obs(n, t, rate, cost * rate, cost * 2.0, cost * 10.0);
                        b.healthy = *n != "fast" || fast_healthy;
                        b
                    })
                    .collect();
                p.decide(&input(t, &backends, demand, None, replicas(2)))
            };
            for k in 0..15 {
                step(&mut p, 10.0 * k as f64, true);
            }
            step(&mut p, 150.0, false);
            // Back at the mean weight, it ramps by `max_weight_step` while
            // the suspicion window (60 s) lasts.
            for k in 16..20 {
                step(&mut p, 10.0 * k as f64, true);
            }
            step(&mut p, 200.0, true)
        };
        let share = |d: &Decision, n: &str| {
            weight(d, n) as f64 / d.weights.iter().map(|w| w.weight as f64).sum::<f64>()
        };
        // At 800 rps the slow host can serve at most 250: the fast one keeps
        // at least (800 - 250) / 800 of the traffic.
        let d = run(800.0);
        assert!(
            share(&d, "fast") >= 0.68,
            "{:?} {:?}",
            d.weights,
            d.explanation.rules
        );
        assert!(
            !d.explanation
                .rules
                .iter()
                .any(|r| r.contains("capped at fair share")),
            "{:?}",
            d.explanation.rules
        );
        // At 150 rps the slow host carries it all: the fast one is capped at
        // its fair share.
        let d = run(150.0);
        assert!(share(&d, "fast") <= 0.51, "{:?}", d.weights);
        assert!(
            d.explanation
                .rules
                .iter()
                .any(|r| r.contains("capped at fair share: fast")),
            "{:?}",
            d.explanation.rules
        );
    }

    #[test]
    fn tail_split_equalises_spare_capacity() {
        // μ = 100, 200, 400; L = 400: spare (700 − 400)/3 = 100 each, so the
        // slowest server gets nothing and the split is redone over the other two:
        // spare (600 − 400)/2 = 100 → 100, 300.
        let xs = tail_split(&[100.0, 200.0, 400.0], 400.0).unwrap();
        assert_eq!(xs[0], 0.0);
        assert!((xs[1] - 100.0).abs() < 1e-9, "{xs:?}");
        assert!((xs[2] - 300.0).abs() < 1e-9, "{xs:?}");
        // At higher load everyone works, with equal spare capacity.
        let xs = tail_split(&[100.0, 200.0, 400.0], 550.0).unwrap();
        let spare: Vec<f64> = [100.0, 200.0, 400.0]
            .iter()
            .zip(&xs)
            .map(|(m, x)| m - x)
            .collect();
        assert!(spare.iter().all(|s| (s - 50.0).abs() < 1e-9), "{spare:?}");
        assert!((xs.iter().sum::<f64>() - 550.0).abs() < 1e-9);
        // No split without 5 % spare capacity, nor for nonsense input.
        assert!(tail_split(&[100.0, 100.0], 199.0).is_none());
        assert!(tail_split(&[100.0], f64::NAN).is_none());
    }

    #[test]
    fn tail_objective_is_the_default_and_starves_slow_backends_more_than_latency() {
        let run = |objective| {
            let cfg = AyaConfig {
                objective,
                // Fixed observed rates: compare the splits themselves.
                share_correction: 0.0,
                ..AyaConfig::default()
            };
            let mut p = AyaPolicy::new(cfg.validate().unwrap());
            let mut dec = None;
            for k in 0..20 {
                let t = k as f64 * 10.0;
                let rate = 100.0 + 5.0 * (k % 3) as f64;
                let backends = [
                    obs("a", t, rate, 0.004 * rate, 0.02, 0.12),
                    obs("b", t, rate, 0.001 * rate, 0.005, 0.03),
                ];
                // Weights are split at the observed demand: 1000 rps over
                // capacities 250 and 1000 rps, where both objectives use both.
                dec = Some(p.decide(&input(t, &backends, 1000.0, None, replicas(2))));
            }
            let dec = dec.unwrap();
            (
                weight(&dec, "b") as f64 / weight(&dec, "a") as f64,
                dec.explanation,
            )
        };
        assert_eq!(
            AyaConfig::default().objective,
            crate::config::WeightObjective::Tail
        );
        let (tail, ex) = run(crate::config::WeightObjective::Tail);
        let (latency, _) = run(crate::config::WeightObjective::Latency);
        assert!(tail > latency, "tail {tail} vs latency {latency}");
        assert!(
            ex.rules
                .iter()
                .any(|r| r.starts_with("weights_minimise_tail")),
            "{ex:?}"
        );
    }

    #[test]
    fn share_correction_steers_observed_traffic_towards_the_plan() {
        // Two backends, capacities 250 and 1000 rps; the tail split at 1000 rps
        // plans 125 / 875. The data plane sends 300 / 700 instead (a slow
        // backend picks up overflow): the slow one's weight must fall relative
        // to what the uncorrected engine publishes.
        let run = |gain: f64| {
            let cfg = AyaConfig {
                share_correction: gain,
                ..AyaConfig::default()
            };
            let mut p = AyaPolicy::new(cfg.validate().unwrap());
            let mut dec = None;
            for k in 0..20 {
                let t = k as f64 * 10.0;
                let jitter = 5.0 * (k % 3) as f64;
                let (ra, rb) = (300.0 + jitter, 700.0 - jitter);
                let backends = [
                    obs("a", t, ra, 0.004 * ra, 0.02, 0.12),
                    obs("b", t, rb, 0.001 * rb, 0.005, 0.03),
                ];
                dec = Some(p.decide(&input(t, &backends, 1000.0, None, replicas(2))));
            }
            dec.unwrap()
        };
        let plain = run(0.0);
        let corrected = run(0.25);
        let ratio = |d: &Decision| weight(d, "b") as f64 / weight(d, "a") as f64;
        assert!(
            ratio(&corrected) > ratio(&plain) * 1.5,
            "{:?} vs {:?}",
            corrected.weights,
            plain.weights
        );
        assert!(
            corrected
                .explanation
                .rules
                .iter()
                .any(|r| r.starts_with("weights_share_correction")),
            "{:?}",
            corrected.explanation
        );
        // The multiplier is bounded: at most 4 either way.
        assert!(ratio(&corrected) <= ratio(&plain) * 16.0 + 1.0);
    }

    #[test]
    fn share_correction_leaves_a_homogeneous_pool_alone() {
        let mut p = engine();
        for k in 0..20 {
            let t = k as f64 * 10.0;
            let backends = [
                obs("a", t, 300.0, 0.3, 0.01, 0.06),
                obs("b", t, 100.0, 0.1, 0.01, 0.06),
            ];
            let d = p.decide(&input(t, &backends, 400.0, None, replicas(2)));
            assert_eq!(weight(&d, "a"), weight(&d, "b"), "{:?}", d.explanation);
        }
    }
}
