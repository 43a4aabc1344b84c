//! Scoring predictive alerts against what happened (issue 15, part 3).
//!
//! A run of a fixed pool (no autoscaling: the capacity the alert is about
//! does not change under it) is replayed with Aya's engine in the loop and
//! traced ([`crate::engine::simulate_traced`]). Two alerts are compared:
//!
//! - **predictive**: at a control tick, Aya's headroom forecast says the
//!   demand forecast's upper bound exceeds the serving pool's capacity
//!   within `lead` seconds ([`aya_policy::Headroom::exhausted_upper_in`]);
//! - **reactive**: the pool's mean utilisation has been at or above
//!   `threshold` at every tick of the last `sustain` seconds (the usual
//!   "CPU > 80 % for 5 minutes" rule).
//!
//! What happened: the SLO windows the run violated. A warning is a **true
//! positive** when a violated window starts within `lead` seconds after it
//! (precision = true warnings / warnings); a violation **episode** (a
//! violated window after a good one) is **caught** when a warning was raised
//! in the `lead` seconds before it started (recall = caught / episodes), and
//! its **lead time** is how long before the episode the earliest such
//! warning was.

use aya_policy::Headroom;
use serde::{Deserialize, Serialize};

use crate::engine::ControlTick;

/// One SLO window of a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SloWindow {
    /// Window start, virtual seconds.
    pub start: f64,
    /// Whether it violated the SLO.
    pub violated: bool,
}

/// How an alert did on one run or a sum of runs.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct AlertScore {
    /// Ticks at which the alert fired.
    pub warnings: u64,
    /// Of those, followed by a violation within the lead.
    pub true_warnings: u64,
    /// Violation episodes.
    pub episodes: u64,
    /// Of those, warned about within the lead before they started.
    pub caught: u64,
    /// Sum of the lead times of the caught episodes, seconds.
    pub lead_sum: f64,
}

impl AlertScore {
    /// True warnings / warnings (NaN without warnings).
    pub fn precision(&self) -> f64 {
        self.true_warnings as f64 / self.warnings as f64
    }
    /// Caught episodes / episodes (NaN without episodes).
    pub fn recall(&self) -> f64 {
        self.caught as f64 / self.episodes as f64
    }
    /// Mean lead time of the caught episodes, seconds (NaN when none).
    pub fn mean_lead(&self) -> f64 {
        self.lead_sum / self.caught as f64
    }
    /// The sum of two scores.
    pub fn add(&self, o: &AlertScore) -> AlertScore {
        AlertScore {
            warnings: self.warnings + o.warnings,
            true_warnings: self.true_warnings + o.true_warnings,
            episodes: self.episodes + o.episodes,
            caught: self.caught + o.caught,
            lead_sum: self.lead_sum + o.lead_sum,
        }
    }
}

/// The alert rules compared.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlertRules {
    /// "Exhaustion within" this many seconds, and the window in which a
    /// warning must precede a violation.
    pub lead: f64,
    /// Reactive rule: utilisation at or above this...
    pub threshold: f64,
    /// ... at every tick of this many seconds.
    pub sustain: f64,
    /// Predictive rule on the forecast's mean instead of its upper bound
    /// (fewer, later warnings).
    pub on_mean: bool,
}

impl Default for AlertRules {
    fn default() -> Self {
        AlertRules {
            lead: 300.0,
            threshold: 0.8,
            sustain: 300.0,
            on_mean: false,
        }
    }
}

/// Whether the predictive alert fires on this headroom forecast: the
/// forecast's upper bound (its mean with `on_mean`) exceeds the capacity
/// within `lead` seconds.
pub fn predictive_fires(h: &Headroom, rules: &AlertRules) -> bool {
    let exhausted = if rules.on_mean {
        h.exhausted_mean_in
    } else {
        h.exhausted_upper_in
    };
    exhausted.is_some_and(|s| s <= rules.lead)
}

/// The ticks of a headroom log (time, forecast) at which the predictive
/// alert fires.
pub fn predictive_times(headroom: &[(f64, Headroom)], rules: &AlertRules) -> Vec<f64> {
    headroom
        .iter()
        .filter(|(_, h)| predictive_fires(h, rules))
        .map(|(t, _)| *t)
        .collect()
}

/// The ticks at which each alert fired: (predictive, reactive).
pub fn fired(trace: &[ControlTick], rules: &AlertRules) -> (Vec<f64>, Vec<f64>) {
    let mut predictive = Vec::new();
    let mut reactive = Vec::new();
    let mut high_since: Option<f64> = None;
    for t in trace {
        if t.decision
            .explanation
            .headroom
            .is_some_and(|h| predictive_fires(&h, rules))
        {
            predictive.push(t.now);
        }
        let cpus: Vec<f64> = t
            .observations
            .iter()
            .filter(|o| o.healthy)
            .filter_map(|o| o.cpu_utilization)
            .filter(|c| c.is_finite())
            .collect();
        let util = if cpus.is_empty() {
            f64::NAN
        } else {
            cpus.iter().sum::<f64>() / cpus.len() as f64
        };
        if util >= rules.threshold {
            let since = *high_since.get_or_insert(t.now);
            if t.now - since >= rules.sustain {
                reactive.push(t.now);
            }
        } else {
            high_since = None;
        }
    }
    (predictive, reactive)
}

/// Score the warnings fired at `warnings` (tick times) against `windows`.
pub fn score(warnings: &[f64], windows: &[SloWindow], lead: f64) -> AlertScore {
    let mut s = AlertScore {
        warnings: warnings.len() as u64,
        ..AlertScore::default()
    };
    s.true_warnings = warnings
        .iter()
        .filter(|&&w| {
            windows
                .iter()
                .any(|x| x.violated && x.start >= w && x.start <= w + lead)
        })
        .count() as u64;
    let mut prev_violated = false;
    for x in windows {
        if x.violated && !prev_violated {
            s.episodes += 1;
            if let Some(first) = warnings
                .iter()
                .copied()
                .filter(|&w| w >= x.start - lead && w <= x.start)
                .reduce(f64::min)
            {
                s.caught += 1;
                s.lead_sum += x.start - first;
            }
        }
        prev_violated = x.violated;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use aya_policy::{
        AlgorithmChoice, BackendObservation, Decision, Explanation, LbAlgorithm, ReplicaState,
        ScalingSignal,
    };

    fn tick(now: f64, util: f64, exhausted_in: Option<f64>) -> ControlTick {
        let mut o = BackendObservation::unobserved("a", now);
        o.cpu_utilization = Some(util);
        ControlTick {
            now,
            interval: 60.0,
            observations: vec![o],
            demand_rps: 0.0,
            replicas: ReplicaState::new(1, 0),
            decision: Decision {
                outlier_detection: None,
                max_requests: None,
                at: now,
                weights: Vec::new(),
                ejected: Vec::new(),
                scaling: ScalingSignal {
                    desired_replicas: 1,
                    current_replicas: 1,
                    rule: String::new(),
                },
                algorithm: AlgorithmChoice {
                    algorithm: LbAlgorithm::LeastRequest,
                    rule: String::new(),
                },
                explanation: Explanation {
                    headroom: exhausted_in.map(|e| Headroom {
                        capacity_rps: 100.0,
                        horizon_seconds: 600.0,
                        exhausted_upper_in: Some(e),
                        exhausted_mean_in: None,
                        exhausted_lower_in: None,
                        scale_up_deadline_in: None,
                    }),
                    ..Explanation::default()
                },
            },
        }
    }

    #[test]
    fn warnings_are_scored_against_the_violations_that_followed() {
        // Ticks every 60 s; utilisation climbs from t = 300, the SLO breaks
        // at t = 600 and 660, recovers, breaks again at 900.
        let rules = AlertRules::default();
        let trace: Vec<ControlTick> = (0..16)
            .map(|k| {
                let t = k as f64 * 60.0;
                let util = if (300.0..=720.0).contains(&t) {
                    0.9
                } else {
                    0.5
                };
                // The forecast sees the first episode coming from t = 360.
                let warn = (360.0..=600.0).contains(&t).then_some(600.0 - t);
                tick(t, util, warn)
            })
            .collect();
        let (predictive, reactive) = fired(&trace, &rules);
        assert_eq!(predictive, vec![360.0, 420.0, 480.0, 540.0, 600.0]);
        assert_eq!(reactive, vec![600.0, 660.0, 720.0], "after 5 min above 0.8");
        let windows: Vec<SloWindow> = (0..16)
            .map(|k| SloWindow {
                start: k as f64 * 60.0,
                violated: [600.0, 660.0, 900.0].contains(&(k as f64 * 60.0)),
            })
            .collect();
        let p = score(&predictive, &windows, rules.lead);
        assert_eq!((p.warnings, p.true_warnings), (5, 5));
        // The second episode (900) starts 300 s after the last warning: caught too.
        assert_eq!((p.episodes, p.caught), (2, 2));
        assert_eq!(p.mean_lead(), (240.0 + 300.0) / 2.0);
        let r = score(&reactive, &windows, rules.lead);
        assert_eq!(
            (r.warnings, r.true_warnings),
            (3, 3),
            "each sees 900 within 5 min"
        );
        assert_eq!(r.caught, 2, "the alert at 600 is at the episode's start");
        assert_eq!(r.lead_sum, 0.0 + 300.0);
        assert_eq!(p.add(&r).recall(), 1.0);
        let none = score(&[], &windows, rules.lead);
        assert_eq!((none.caught, none.episodes), (0, 2));
        assert!(none.precision().is_nan());
    }
}
