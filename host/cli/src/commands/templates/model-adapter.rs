//! {{name}}: scores an input's `amount` with a logistic model whose
//! weights ship inside the component: score = 1 / (1 + e^-(bias + weight *
//! ln(1 + amount))). Output: `{"score": 0..1, "label": "low"|"high"}`.

use evos_sdk::{Error, ModelAdapter, ModelRequest, ModelResponse, Usage, json, log};
use serde::Deserialize;
use serde_json::json;

const MODEL: &str = "{{name}}@0.1.0";
const BIAS: f64 = -6.0;
const WEIGHT: f64 = 0.75;

#[derive(Deserialize)]
struct Input {
    amount: f64,
}

/// The model, apart from the host.
pub fn score(amount: f64) -> f64 {
    1.0 / (1.0 + (-(BIAS + WEIGHT * amount.ln_1p())).exp())
}

struct Plugin;

impl ModelAdapter for Plugin {
    fn infer(request: ModelRequest) -> Result<ModelResponse, Error> {
        let input: Input = json::parse(&request.input)?;
        if !input.amount.is_finite() || input.amount < 0.0 {
            return Err(Error::InvalidInput("amount must be a number of at least 0".into()));
        }
        let s = score(input.amount);
        let label = if s >= 0.5 { "high" } else { "low" };
        log::debug(&format!("amount {} scored {s:.4} ({label})", input.amount));
        Ok(ModelResponse {
            output: json::to_string(&json!({"score": s, "label": label}))?,
            model: MODEL.into(),
            usage: Usage { input_units: 1, output_units: 1 },
        })
    }
}

evos_sdk::export_model_adapter!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_rise_with_the_amount_and_stay_between_0_and_1() {
        let (small, large) = (score(250.0), score(100_000.0));
        assert!(small > 0.0 && small < 0.5, "{small}");
        assert!(large > 0.5 && large < 1.0, "{large}");
        assert!((small - 0.1352).abs() < 0.001, "{small}");
    }
}
