//! `fraud-score` 1.0.0: the `fraud-lr@1.0.0` model adapter, scoring an
//! insurance claim's fraud risk with the logistic-regression weights in
//! `weights.json` (fitted by `train/train.py`). The model, its input and its
//! output are described in the `fraud-model` crate.

use evos_sdk::{Error, ModelAdapter, ModelRequest, ModelResponse};
use fraud_model::FraudModel;

const MODEL: FraudModel = FraudModel::new("fraud-lr@1.0.0", include_str!("../weights.json"));

struct FraudScore;

impl ModelAdapter for FraudScore {
    fn infer(request: ModelRequest) -> Result<ModelResponse, Error> {
        MODEL.infer(request)
    }
}

evos_sdk::export_model_adapter!(FraudScore);
