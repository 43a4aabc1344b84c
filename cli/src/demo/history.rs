//! The demo's built-in history: Aya's own synthetic traffic and per-backend
//! metrics (`aya_forecaster::synth`), split into a training period (what the
//! forecaster learns from and what is streamed into the controller) and a test
//! period (what the simulator replays under every policy).
//!
//! Nothing here reads a clock: the history is a pure function of the seed and
//! the demo's size, so every later stage sees the same data for the same seed.

use std::path::{Path, PathBuf};

use aya_forecaster::synth::{self, SynthConfig, SynthData};

use super::DemoError;
use super::plan::Plan;

/// The generated history and where the split falls.
#[derive(Debug, Clone)]
pub struct History {
    /// The generated data (1-minute steps by default).
    pub data: SynthData,
    /// Index of the first test step in `data` (the training period is `..test_start`).
    pub test_start: usize,
    /// One past the last test step.
    pub test_end: usize,
    /// Demand aggregated to the forecaster's step (mean requests/s per step), training period.
    pub train_demand: Vec<f64>,
    /// Demand aggregated to the forecaster's step, test period.
    pub test_demand: Vec<f64>,
    /// Unix ms of the first aggregated training step.
    pub train_start_ms: i64,
    /// Forecast step in seconds of series time.
    pub demand_step_secs: u32,
}

impl History {
    /// Generate the history for `plan` with `seed`.
    pub fn build(seed: u64, plan: &Plan) -> Result<History, DemoError> {
        let cfg = SynthConfig {
            seed,
            days: plan.history_days,
            interval_secs: plan.interval_secs,
            ..SynthConfig::default()
        };
        let data = synth::generate(&cfg).map_err(|e| DemoError::History(e.to_string()))?;
        let steps = data.traffic.len();
        let per_hour = (3600 / plan.interval_secs) as usize;
        let test_len = plan.test_hours as usize * per_hour;
        if test_len == 0 || plan.test_start_hour + plan.test_hours > 24 || test_len >= steps {
            return Err(DemoError::History(format!(
                "test period of {} h from {}:00 does not fit in the last of {} days of history",
                plan.test_hours, plan.test_start_hour, plan.history_days
            )));
        }
        // The test period starts at `test_start_hour` of the last day; the
        // training period is everything before it.
        let last_day_start = steps - (86_400 / plan.interval_secs) as usize;
        let test_start = last_day_start + plan.test_start_hour as usize * per_hour;
        let test_end = (test_start + test_len).min(steps);
        let per_step = (plan.demand_step_secs / plan.interval_secs) as usize;
        let train_demand = aggregate(&data.traffic[..test_start], per_step);
        let test_demand = aggregate(&data.traffic[test_start..test_end], per_step);
        let train_start_ms = data.timestamps.first().copied().unwrap_or(cfg.start_ms);
        Ok(History {
            data,
            test_start,
            test_end,
            train_demand,
            test_demand,
            train_start_ms,
            demand_step_secs: plan.demand_step_secs,
        })
    }

    /// Unix ms of the first test step.
    pub fn test_start_ms(&self) -> i64 {
        self.data
            .timestamps
            .get(self.test_start)
            .copied()
            .unwrap_or_default()
    }

    /// Write the whole history (`traffic.csv`, `backends.csv`, `synth.json`)
    /// into `dir/history/`, and the test period's traffic (the simulator's
    /// workload, `timestamp,value` in requests/s) as `dir/test_traffic.csv`.
    /// Returns the workload path.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, DemoError> {
        let hist = dir.join("history");
        self.data
            .write(&hist)
            .map_err(|e| DemoError::History(e.to_string()))?;
        let workload = dir.join("test_traffic.csv");
        aya_forecaster::data::write_series_csv(
            &workload,
            &self.data.timestamps[self.test_start..self.test_end],
            &self.data.traffic[self.test_start..self.test_end],
        )
        .map_err(|e| DemoError::History(e.to_string()))?;
        Ok(workload)
    }
}

/// Means of consecutive blocks of `per` values (a trailing partial block is dropped).
pub fn aggregate(values: &[f64], per: usize) -> Vec<f64> {
    if per <= 1 {
        return values.to_vec();
    }
    values
        .chunks_exact(per)
        .map(|c| c.iter().sum::<f64>() / per as f64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregate_means_whole_blocks() {
        assert_eq!(aggregate(&[1.0, 3.0, 5.0, 7.0, 100.0], 2), vec![2.0, 6.0]);
        assert_eq!(aggregate(&[1.0, 2.0], 1), vec![1.0, 2.0]);
    }

    #[test]
    fn history_is_deterministic_and_split_at_the_planned_hour() {
        let plan = Plan::quick();
        let a = History::build(3, &plan).unwrap();
        let b = History::build(3, &plan).unwrap();
        assert_eq!(a.data.traffic, b.data.traffic);
        assert_eq!(
            a.test_start_ms() % 86_400_000,
            i64::from(plan.test_start_hour) * 3_600_000
        );
        assert_eq!(
            a.test_demand.len(),
            plan.test_hours as usize * 3600 / plan.demand_step_secs as usize
        );
        let c = History::build(4, &plan).unwrap();
        assert_ne!(a.data.traffic, c.data.traffic);
    }
}
