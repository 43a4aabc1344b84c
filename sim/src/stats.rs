//! Replications and their statistics: 95% confidence intervals (Student t)
//! and paired comparisons between policies run on the same seeds (common
//! random numbers make the paired differences far less noisy than the
//! difference of two independent means).

use serde::{Deserialize, Serialize};

/// Two-sided 97.5% quantile of Student's t with `df` degrees of freedom.
pub fn t975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        1..=30 => T[df - 1],
        // Cornish-Fisher expansion around the normal quantile.
        _ => {
            let z = 1.959964f64;
            let d = df as f64;
            z + (z.powi(3) + z) / (4.0 * d)
                + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * d * d)
        }
    }
}

/// Mean with a 95% confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Estimate {
    /// Sample mean.
    pub mean: f64,
    /// Half-width of the 95% CI (0 with one sample... reported as NaN-free 0).
    pub ci95: f64,
    /// Sample standard deviation.
    pub sd: f64,
    /// Number of samples.
    pub n: usize,
}

impl Estimate {
    /// Estimate from samples.
    pub fn of(xs: &[f64]) -> Estimate {
        let n = xs.len();
        if n == 0 {
            return Estimate::default();
        }
        let mean = xs.iter().sum::<f64>() / n as f64;
        if n == 1 {
            return Estimate {
                mean,
                ci95: 0.0,
                sd: 0.0,
                n,
            };
        }
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let sd = var.sqrt();
        Estimate {
            mean,
            ci95: t975(n - 1) * sd / (n as f64).sqrt(),
            sd,
            n,
        }
    }

    /// `mean ± ci` formatted with `prec` decimals.
    pub fn fmt(&self, prec: usize) -> String {
        format!("{:.prec$} ± {:.prec$}", self.mean, self.ci95)
    }
}

/// Paired difference (`b − a`) over common seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Paired {
    /// Mean and CI of the per-seed differences.
    pub diff: Estimate,
    /// Relative difference of the means, (mean_b − mean_a) / mean_a.
    pub relative: f64,
    /// True when the CI excludes 0.
    pub significant: bool,
}

/// Paired comparison of `b` against `a` (same seeds, same order).
pub fn paired(a: &[f64], b: &[f64]) -> Paired {
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| y - x).collect();
    let diff = Estimate::of(&d);
    let ma = Estimate::of(a).mean;
    let mb = Estimate::of(b).mean;
    Paired {
        diff,
        relative: if ma != 0.0 { (mb - ma) / ma } else { 0.0 },
        significant: diff.n > 1 && diff.mean.abs() > diff.ci95,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_quantiles() {
        assert_eq!(t975(4), 2.776);
        assert!((t975(120) - 1.980).abs() < 0.002);
        assert!((t975(10_000) - 1.960).abs() < 0.001);
    }

    #[test]
    fn ci_of_known_sample() {
        let e = Estimate::of(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(e.mean, 3.0);
        assert!((e.sd - 1.5811).abs() < 1e-4);
        assert!((e.ci95 - 2.776 * 1.5811 / 5f64.sqrt()).abs() < 1e-3);
    }

    #[test]
    fn paired_detects_consistent_shift() {
        let a = [10.0, 20.0, 30.0, 40.0];
        let b = [11.0, 21.1, 30.9, 41.0];
        let p = paired(&a, &b);
        assert!(p.significant);
        assert!((p.diff.mean - 1.0).abs() < 0.05);
    }
}
