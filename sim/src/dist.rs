//! Random streams and service-demand distributions.
//!
//! Common random numbers: every purpose (arrivals, request sizes, routing,
//! faults, keys) gets its own [`SmallRng`] derived from the replication seed,
//! so two policies simulated with the same seed see exactly the same arrivals
//! and the same request sizes even though they route differently (routing
//! draws never shift the size stream).

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp1, LogNormal, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::model::ParamError;

/// Purposes of the independent random streams of one replication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Inter-arrival times.
    Arrivals = 1,
    /// Request sizes (service demand), drawn at arrival.
    Sizes = 2,
    /// Data-plane routing choices.
    Routing = 3,
    /// Random faults.
    Faults = 4,
    /// Request keys (client / session identifiers).
    Keys = 5,
    /// Seed handed to the control policy.
    Policy = 6,
}

/// SplitMix64 finaliser: a cheap, well-mixed 64-bit hash.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed of stream `s` for replication seed `seed`.
pub fn stream_seed(seed: u64, s: Stream) -> u64 {
    mix64(mix64(seed) ^ mix64(s as u64 * 0x1000_0000_0000_0001))
}

/// A fresh generator for stream `s` of replication `seed`.
pub fn stream(seed: u64, s: Stream) -> SmallRng {
    SmallRng::seed_from_u64(stream_seed(seed, s))
}

/// Exponential variate with rate 1 (ziggurat).
#[inline]
pub fn exp1(rng: &mut SmallRng) -> f64 {
    Exp1.sample(rng)
}

/// Service-demand distribution of a request, in seconds of work on a
/// speed-1 backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ServiceDist {
    /// Exponential with the given mean.
    Exponential {
        /// Mean, seconds.
        mean: f64,
    },
    /// Every request needs exactly `mean` seconds.
    Deterministic {
        /// Value, seconds.
        mean: f64,
    },
    /// Lognormal with the given mean and coefficient of variation.
    Lognormal {
        /// Mean, seconds.
        mean: f64,
        /// Coefficient of variation (std / mean), > 0.
        cv: f64,
    },
    /// Uniform resampling of observed sizes (seconds).
    Empirical {
        /// The observed sizes, seconds (non-empty, all > 0).
        values: Vec<f64>,
    },
}

impl ServiceDist {
    /// Mean of the distribution, seconds.
    pub fn mean(&self) -> f64 {
        match self {
            ServiceDist::Exponential { mean }
            | ServiceDist::Deterministic { mean }
            | ServiceDist::Lognormal { mean, .. } => *mean,
            ServiceDist::Empirical { values } => {
                values.iter().sum::<f64>() / values.len().max(1) as f64
            }
        }
    }

    /// Check the parameters; the error names the offending field.
    pub fn validate(&self) -> Result<(), ParamError> {
        let pos = ParamError::check_positive;
        match self {
            ServiceDist::Exponential { mean } | ServiceDist::Deterministic { mean } => {
                pos("mean", *mean)
            }
            ServiceDist::Lognormal { mean, cv } => pos("mean", *mean).and_then(|_| pos("cv", *cv)),
            ServiceDist::Empirical { values } => {
                if values.is_empty() {
                    return Err(ParamError::new("values", "must not be empty"));
                }
                values.iter().try_for_each(|v| pos("values[]", *v))
            }
        }
    }

    /// Build the sampler (precomputes lognormal parameters).
    pub fn sampler(&self) -> Result<Sampler, ParamError> {
        self.validate()?;
        Ok(match self {
            ServiceDist::Exponential { mean } => Sampler::Exp(*mean),
            ServiceDist::Deterministic { mean } => Sampler::Det(*mean),
            ServiceDist::Lognormal { mean, cv } => {
                let s2 = (1.0 + cv * cv).ln();
                let mu = mean.ln() - s2 / 2.0;
                let d = LogNormal::new(mu, s2.sqrt()).map_err(|e| {
                    ParamError::new("cv", format!("gives no lognormal distribution: {e}"))
                })?;
                Sampler::LogNormal(d)
            }
            ServiceDist::Empirical { values } => Sampler::Empirical(values.clone()),
        })
    }

    /// Parse the one-line form: `exp`, `det`, `lognormal:<cv>` (mean 1).
    pub fn parse_short(s: &str) -> Result<ServiceDist, ServiceSpecError> {
        let s = s.trim();
        match s {
            "exp" | "exponential" | "M" => Ok(ServiceDist::Exponential { mean: 1.0 }),
            "det" | "deterministic" | "D" => Ok(ServiceDist::Deterministic { mean: 1.0 }),
            _ => {
                if let Some(cv) = s.strip_prefix("lognormal:") {
                    let cv: f64 = cv
                        .parse()
                        .map_err(|_| ServiceSpecError::BadCv(s.to_string()))?;
                    let d = ServiceDist::Lognormal { mean: 1.0, cv };
                    d.validate().map_err(|source| ServiceSpecError::Invalid {
                        spec: s.to_string(),
                        source,
                    })?;
                    Ok(d)
                } else {
                    Err(ServiceSpecError::Unknown(s.to_string()))
                }
            }
        }
    }
}

/// Why a one-line service distribution (`--service`) cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ServiceSpecError {
    /// `lognormal:<cv>` with a cv that is not a number.
    #[error("--service {0:?}: the cv after `lognormal:` is not a number")]
    BadCv(String),
    /// A parameter out of range.
    #[error("--service {spec:?}: {source}")]
    Invalid {
        /// The text given.
        spec: String,
        /// What is wrong.
        source: ParamError,
    },
    /// Not a known form.
    #[error("--service {0:?} is not a service distribution; allowed: exp, det, lognormal:<cv>")]
    Unknown(String),
}

/// A ready-to-draw service-demand distribution.
#[derive(Debug, Clone)]
pub enum Sampler {
    /// Exponential with this mean.
    Exp(f64),
    /// Constant.
    Det(f64),
    /// Lognormal.
    LogNormal(LogNormal<f64>),
    /// Resampling.
    Empirical(Vec<f64>),
}

impl Sampler {
    /// Draw one size.
    #[inline]
    pub fn sample(&self, rng: &mut SmallRng) -> f64 {
        match self {
            Sampler::Exp(m) => m * exp1(rng),
            Sampler::Det(m) => *m,
            Sampler::LogNormal(d) => d.sample(rng),
            Sampler::Empirical(v) => v[rng.random_range(0..v.len())],
        }
    }
}

/// A standard normal draw (used by tests and the bursty workloads).
pub fn std_normal(rng: &mut SmallRng) -> f64 {
    StandardNormal.sample(rng)
}
