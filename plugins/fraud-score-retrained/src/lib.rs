//! `fraud-score` 1.1.0: the `fraud-lr@1.1.0` model adapter, the same model as
//! 1.0.0 with weights from a second training run (another seed, twice the
//! data: `fraud-score/weights-1.1.0.json`, written by
//! `fraud-score/train/train.py --seed 20250114 --n 20000 --version 1.1.0`).
//! Same input and output contract as 1.0.0; see the `fraud-model` crate.

use evos_sdk::{Error, ModelAdapter, ModelRequest, ModelResponse};
use fraud_model::FraudModel;

const MODEL: FraudModel = FraudModel::new(
    "fraud-lr@1.1.0",
    include_str!("../../fraud-score/weights-1.1.0.json"),
);

struct FraudScoreRetrained;

impl ModelAdapter for FraudScoreRetrained {
    fn infer(request: ModelRequest) -> Result<ModelResponse, Error> {
        MODEL.infer(request)
    }
}

evos_sdk::export_model_adapter!(FraudScoreRetrained);
