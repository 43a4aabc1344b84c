//! The control loop both drivers run: feed the observed demand to the
//! forecaster, ask it for a forecast, and hand everything to the policy.
//!
//! The controller service calls [`ControlLoop::tick`] from its tick task with
//! wall-clock time; the simulator calls it from its event loop with virtual
//! time. Keeping this sequencing here (not in either driver) is what makes
//! their published decisions identical for identical inputs.

use crate::registry::{BoxedPolicy, BuildContext, PolicySpec};
use crate::types::{
    BackendObservation, Decision, DemandForecast, DemandForecaster, Policy, ReplicaState,
    TickInput, Time,
};

/// A policy plus (optionally) a demand forecaster, driven one tick at a time.
pub struct ControlLoop<P, F> {
    policy: P,
    forecaster: Option<F>,
    /// Forecast horizon in forecaster steps.
    horizon: usize,
    forecast: DemandForecast,
    /// The last demand of a [`warm`](ControlLoop::warm) history.
    warm_demand: Option<f64>,
}

impl<P: Policy, F: DemandForecaster> ControlLoop<P, F> {
    /// A loop that forecasts `horizon` steps ahead with `forecaster` (if any)
    /// and decides with `policy`.
    pub fn new(policy: P, forecaster: Option<F>, horizon: usize) -> Self {
        ControlLoop {
            policy,
            forecaster,
            horizon,
            forecast: DemandForecast::default(),
            warm_demand: None,
        }
    }

    /// Warm start: let the forecaster observe `history` — `(time, demand
    /// in requests/s)` per control interval, oldest first, all before the
    /// first tick — as a deployed controller's stored demand would. Without
    /// a forecaster this only records the last demand.
    pub fn warm(&mut self, history: &[(Time, f64)]) {
        if let Some(f) = self.forecaster.as_mut() {
            for &(t, d) in history {
                f.observe(t, d);
            }
        }
        if let Some(&(_, d)) = history.last() {
            self.warm_demand = Some(d);
        }
    }

    /// The last demand of the [`warm`](ControlLoop::warm) history, if any:
    /// what a driver should report as demand until its first measurement.
    pub fn warm_demand(&self) -> Option<f64> {
        self.warm_demand
    }

    /// The loop every driver runs for a policy of the registry: `spec`
    /// built with `ctx`, forecasting `horizon` steps ahead with `forecaster`
    /// (if any). The simulator and the service both build their loops here.
    pub fn for_policy(
        spec: &PolicySpec,
        ctx: &BuildContext,
        forecaster: Option<F>,
        horizon: usize,
    ) -> Self
    where
        P: From<BoxedPolicy>,
    {
        ControlLoop::new(P::from(spec.build(ctx)), forecaster, horizon)
    }

    /// The policy (e.g. to read its name).
    pub fn policy(&self) -> &P {
        &self.policy
    }

    /// The forecaster, if any.
    pub fn forecaster(&self) -> Option<&F> {
        self.forecaster.as_ref()
    }

    /// One control tick at `now`.
    pub fn tick(
        &mut self,
        now: Time,
        interval: f64,
        backends: &[BackendObservation],
        demand_rps: f64,
        replicas: ReplicaState,
    ) -> Decision {
        let have_forecast = match self.forecaster.as_mut() {
            Some(f) => {
                f.observe(now, demand_rps);
                f.forecast_into(now, self.horizon, &mut self.forecast)
            }
            None => false,
        };
        let input = TickInput {
            now,
            interval,
            backends,
            demand_rps,
            forecast: have_forecast.then_some(&self.forecast),
            replicas,
        };
        self.policy.decide(&input)
    }
}
