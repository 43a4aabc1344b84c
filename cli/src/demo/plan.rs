//! How big the demo is. The full demo replays a whole day in about an hour of
//! virtual time with several seeds; `--quick` shrinks every dimension so the
//! same pipeline runs in seconds (used by the tests and for a first look).
//!
//! Time scales: the history is in *series time* (1-minute steps of a synthetic
//! day). The simulator replays the test period `compression` times faster, so
//! every duration that belongs to the series (control interval, boot delay,
//! cool-downs, forecast step) is divided by `compression` to become *virtual
//! time*, while request service times stay real. The report states both.

/// Every size and time constant of one demo run.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Name shown in the report (`full` or `quick`).
    pub name: &'static str,
    /// Days of synthetic history (the last day is the test day).
    pub history_days: u32,
    /// Step of the history, seconds.
    pub interval_secs: u32,
    /// Hour of the last day (UTC) at which the test period starts.
    pub test_start_hour: u32,
    /// Hours of the last day replayed in the simulator, from `test_start_hour`.
    pub test_hours: u32,
    /// Step of the demand series the forecaster models, seconds of series time.
    pub demand_step_secs: u32,
    /// Series seconds per virtual second in the simulator.
    pub compression: f64,
    /// Replications (seeds) per policy.
    pub replications: u32,
    /// Series seconds between control ticks.
    pub control_interval_secs: f64,
    /// Series seconds from scale-up to ready (boot delay).
    pub boot_secs: f64,
    /// Forecast horizon in forecast steps.
    pub forecast_horizon: usize,
    /// Origins of the selection backtest.
    pub origins: usize,
    /// Hours of recent per-backend metrics streamed into the live controller.
    pub stream_hours: u32,
    /// Wall time per streamed minute of metrics, milliseconds.
    pub stream_step_ms: u64,
}

impl Plan {
    /// The full demo (`aya demo`): 15 days of history, the last (a Monday)
    /// replayed whole with 5 seeds.
    pub fn full() -> Plan {
        Plan {
            name: "full",
            history_days: 15,
            interval_secs: 60,
            test_start_hour: 0,
            test_hours: 24,
            demand_step_secs: 300,
            compression: 24.0,
            replications: 5,
            control_interval_secs: 60.0,
            boot_secs: 180.0,
            forecast_horizon: 12,
            origins: 10,
            stream_hours: 2,
            stream_step_ms: 100,
        }
    }

    /// The quick demo (`aya demo --quick`): 4 days of history, 3 hours of
    /// the last day (11:00-14:00, the climb to the daily peak) replayed with 2
    /// seeds. Same pipeline, seconds instead of minutes.
    pub fn quick() -> Plan {
        Plan {
            name: "quick",
            history_days: 4,
            interval_secs: 60,
            test_start_hour: 11,
            test_hours: 3,
            demand_step_secs: 300,
            compression: 24.0,
            replications: 2,
            control_interval_secs: 60.0,
            boot_secs: 180.0,
            forecast_horizon: 12,
            origins: 4,
            stream_hours: 1,
            stream_step_ms: 30,
        }
    }

    /// A series-time duration in virtual seconds.
    pub fn virtual_secs(&self, series_secs: f64) -> f64 {
        series_secs / self.compression
    }

    /// Virtual seconds the test period lasts.
    pub fn test_virtual_secs(&self) -> f64 {
        self.virtual_secs(f64::from(self.test_hours) * 3600.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_is_smaller_than_full_in_every_dimension() {
        let (f, q) = (Plan::full(), Plan::quick());
        assert!(q.history_days < f.history_days);
        assert!(q.test_hours < f.test_hours);
        assert!(q.test_start_hour + q.test_hours <= 24 && f.test_start_hour + f.test_hours <= 24);
        assert!(q.replications <= f.replications);
        assert!(q.test_virtual_secs() < f.test_virtual_secs());
        assert_eq!(f.virtual_secs(2400.0), 100.0);
    }
}
