//! `fraud-score` 1.3.0: the `fraud-lr@1.3.0` model adapter, trained without
//! the `prior_claims` feature (`train.py --ignore prior_claims`): as healthy
//! as the other builds by errors and latency, but blind to a claimant's
//! history, so it scores repeat claimants lower than the stable model. This
//! build exists to show a version that progressive rollout stops at its
//! quality gates.

use evos_sdk::{Error, ModelAdapter, ModelRequest, ModelResponse};
use fraud_model::FraudModel;

const MODEL: FraudModel = FraudModel::new(
    "fraud-lr@1.3.0",
    include_str!("../../fraud-score/weights-1.3.0.json"),
);

struct FraudScoreBlind;

impl ModelAdapter for FraudScoreBlind {
    fn infer(request: ModelRequest) -> Result<ModelResponse, Error> {
        MODEL.infer(request)
    }
}

evos_sdk::export_model_adapter!(FraudScoreBlind);
