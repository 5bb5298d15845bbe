//! `fraud-score` 1.2.0: the `fraud-lr@1.2.0` model adapter, a faulty release.
//! It scores with the 1.0.0 weights after a feature-store lookup
//! ([`fraud_model::regression`]) that traps on about a third of inputs and
//! times out on about a sixth of the rest, deterministically per input. This
//! build exists to exercise canary rollback.

use evos_sdk::{Error, ModelAdapter, ModelRequest, ModelResponse};
use fraud_model::{FraudModel, regression};

const MODEL: FraudModel = FraudModel::new(
    "fraud-lr@1.2.0",
    include_str!("../../fraud-score/weights.json"),
)
.before_scoring(regression::shard_prior_lookup);

struct FraudScoreRegressed;

impl ModelAdapter for FraudScoreRegressed {
    fn infer(request: ModelRequest) -> Result<ModelResponse, Error> {
        MODEL.infer(request)
    }
}

evos_sdk::export_model_adapter!(FraudScoreRegressed);
