//! MSTL (multiple seasonal-trend decomposition by Loess, Bandara et al. 2021)
//! from augurs, with the bounded ETS search of [`super::ets`] for the
//! deseasonalised trend: handles several seasons at once (e.g. daily and
//! weekly request patterns).

use augurs::mstl::{FittedMSTLModel, MSTLModel};
use augurs::{Fit as _, Predict as _};
use serde_json::json;

use super::{Fit, Forecast, ModelError, Predict, too_short};

/// MSTL specification.
#[derive(Debug, Clone)]
pub struct Mstl {
    /// Season lengths in steps.
    pub periods: Vec<usize>,
}

/// A fitted [`Mstl`] model.
pub struct FittedMstl {
    periods: Vec<usize>,
    model: FittedMSTLModel,
}

impl std::fmt::Debug for FittedMstl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FittedMstl")
            .field("periods", &self.periods)
            .finish_non_exhaustive()
    }
}

fn err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Fit {
        model: "mstl_ets".into(),
        message: e.to_string(),
    }
}

impl Fit for Mstl {
    type Fitted = FittedMstl;
    fn fit(&self, y: &[f64]) -> Result<FittedMstl, ModelError> {
        let mut periods: Vec<usize> = self.periods.iter().copied().filter(|&p| p > 1).collect();
        periods.sort_unstable();
        periods.dedup();
        periods.retain(|&p| y.len() > 2 * p);
        if periods.is_empty() {
            let needed = 2 * self.periods.iter().copied().max().unwrap_or(2) + 1;
            return Err(too_short("mstl_ets", needed, y.len()));
        }
        // Decompose at most two cycles of the longest season (at least
        // 1,500 points): the decomposition's cost is linear in the length.
        let longest = periods.iter().copied().max().unwrap_or(1);
        let keep = (2 * longest + 1).max(1500);
        let y = &y[y.len().saturating_sub(keep)..];
        let model = MSTLModel::new(periods.clone(), super::ets::EtsTrend)
            .fit(y)
            .map_err(err)?;
        Ok(FittedMstl { periods, model })
    }
}

impl Predict for FittedMstl {
    fn predict_into(&self, horizon: usize, out: &mut Forecast) -> Result<(), ModelError> {
        out.clear();
        let f = self.model.predict(horizon, None).map_err(err)?;
        out.point.extend_from_slice(&f.point);
        Ok(())
    }
    fn params(&self) -> serde_json::Value {
        json!({ "periods": self.periods, "trend": "ETS(A,N,N) or ETS(A,Ad,N) by AICc" })
    }
}
