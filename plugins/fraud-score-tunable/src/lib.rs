//! `fraud-score-tunable`: the `fraud-lr` model adapter with its weights in
//! the manifest rather than the component. `[config] weights` holds the
//! weights file `train/train.py` writes (its JSON text) and `[config] model`
//! the model id the answers report, so a retrained model ships as a new
//! manifest over the same component: deployed, shadowed, replayed and rolled
//! out like any other version, with the weights it runs recorded in the
//! deployment and its audit entry. `evos demo --evolve` retrains it from
//! human labels this way.

use evos_sdk::{Error, ModelAdapter, ModelRequest, ModelResponse, config};
use fraud_model::FraudModel;

struct FraudScoreTunable;

impl ModelAdapter for FraudScoreTunable {
    fn infer(request: ModelRequest) -> Result<ModelResponse, Error> {
        let weights = config::get("weights").ok_or_else(|| {
            Error::Internal(
                "the manifest sets no [config] weights: give the weights file train.py writes"
                    .into(),
            )
        })?;
        let model = config::get("model").unwrap_or_else(|| "fraud-lr".into());
        FraudModel::new(&model, &weights).infer(request)
    }
}

evos_sdk::export_model_adapter!(FraudScoreTunable);
