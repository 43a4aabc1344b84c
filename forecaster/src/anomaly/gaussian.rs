//! A port of NAB's windowed-Gaussian baseline (`nab/detectors/gaussian/windowedGaussian_detector.py`):
//! the anomaly score of a value is `1 - Q(|z|)` under the mean and (population) standard deviation
//! of a window of earlier values. The window grows to 6400 values, then slides forward in steps of
//! 100 (the statistics are refreshed once per step). Used to validate the NAB scorer against a
//! published score (39.6 / 20.9 / 47.4 on NAB's 58 files).

/// Complementary error function, `erfc(x)`, fractional error below 1.2e-7 everywhere
/// (Chebyshev fit of Numerical Recipes' `erfcc`).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// Upper tail probability of the standard normal, `P(Z > z)`.
pub fn normal_tail(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// NAB's windowed-Gaussian detector, one value at a time.
#[derive(Debug, Clone)]
pub struct WindowedGaussian {
    window: std::collections::VecDeque<f64>,
    step: Vec<f64>,
    mean: f64,
    std: f64,
    // Running sums while the window grows (Welford).
    count: f64,
    m2: f64,
}

/// NAB's window size.
pub const WINDOW: usize = 6400;
/// NAB's step size.
pub const STEP: usize = 100;

impl Default for WindowedGaussian {
    fn default() -> Self {
        WindowedGaussian {
            window: std::collections::VecDeque::with_capacity(WINDOW),
            step: Vec::with_capacity(STEP),
            mean: 0.0,
            std: 1.0,
            count: 0.0,
            m2: 0.0,
        }
    }
}

impl WindowedGaussian {
    /// A fresh detector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Scores `value` against the window so far, then adds it (as NAB's `handleRecord`).
    pub fn update(&mut self, value: f64) -> f64 {
        let score = if self.window.is_empty() {
            0.0
        } else {
            let z = (value - self.mean).abs() / self.std;
            1.0 - normal_tail(z)
        };
        if self.window.len() < WINDOW {
            self.window.push_back(value);
            self.count += 1.0;
            let d = value - self.mean;
            self.mean += d / self.count;
            self.m2 += d * (value - self.mean);
            self.std = (self.m2 / self.count).sqrt();
        } else {
            self.step.push(value);
            if self.step.len() == STEP {
                self.window.drain(..STEP);
                self.window.extend(self.step.drain(..));
                let n = self.window.len() as f64;
                self.mean = self.window.iter().sum::<f64>() / n;
                let var = self
                    .window
                    .iter()
                    .map(|v| (v - self.mean).powi(2))
                    .sum::<f64>()
                    / n;
                self.std = var.sqrt();
            }
        }
        if self.std == 0.0 {
            self.std = 1e-6;
        }
        score.clamp(0.0, 1.0)
    }

    /// Scores a whole series in order.
    pub fn score_series(values: &[f64]) -> Vec<f64> {
        let mut d = Self::new();
        values.iter().map(|&v| d.update(v)).collect()
    }
}
