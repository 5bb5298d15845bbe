//! The `fraud-lr` model behind the `fraud-score` model adapter: scores an
//! insurance claim's fraud risk with a logistic-regression model whose
//! weights ship inside the component, so scoring needs no network, no files
//! and no configuration.
//!
//! Each build of the adapter is a [`FraudModel`]: the weights file it embeds
//! and the model id it reports. The builds are
//!
//! | crate                   | model            | weights                          |
//! |-------------------------|------------------|----------------------------------|
//! | `fraud-score`           | `fraud-lr@1.0.0` | `fraud-score/weights.json`       |
//! | `fraud-score-retrained` | `fraud-lr@1.1.0` | `fraud-score/weights-1.1.0.json` |
//! | `fraud-score-regressed` | `fraud-lr@1.2.0` | `fraud-score/weights.json`, plus the faulty feature-store lookup of [`regression`] |
//! | `fraud-score-blind`     | `fraud-lr@1.3.0` | `fraud-score/weights-1.3.0.json`, trained without `prior_claims` |
//! | `fraud-score-tunable`   | `[config] model` | `[config] weights`: any weights file, in the manifest |
//!
//! The weights files are fitted by `fraud-score/train/train.py` on a
//! documented synthetic data set (fixed seed); the script also records the
//! training metrics and a few reference inputs with their expected features
//! and scores, which this crate's tests check against.
//!
//! Input (`model-request.input`):
//! `{"amount": 1250.0, "prior_claims": 2, "incident": "...", "region": "...", "policy_number": "..."}`;
//! `region` and `policy_number` are optional context and do not affect the
//! score. Output: `{"score": 0..1, "label": "low"|"medium"|"high", "features": {...}}`
//! with `low` below 0.3, `high` from 0.7.
//!
//! Features, in model order:
//! - `bias`: constant 1.
//! - `log_amount`: ln(1 + amount) / 10; claim size on a log scale.
//! - `prior_claims`: min(prior_claims, 10) / 10; the claimant's earlier claims.
//! - `round_amount`: 1 when the amount is a multiple of 500; invented losses
//!   tend to be round figures.
//! - `risk_keywords`: distinct risk phrases in the incident text (cash, urgent,
//!   stolen, total loss, no witnesses, fire, lost receipt), matched
//!   case-insensitively on word boundaries, capped at 5, divided by 5.
//! - `short_incident`: 1 when the trimmed incident text is under 40
//!   characters; vague descriptions are a classic red flag.
//! - `near_threshold`: 1 for amounts in [900, 1000) or [9000, 10000), just under
//!   common review limits.

pub mod regression;

use evos_sdk::{Error, ModelRequest, ModelResponse, Usage, json, log};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// Feature names in the order the weights expect them.
const FEATURES: [&str; 7] = [
    "bias",
    "log_amount",
    "prior_claims",
    "round_amount",
    "risk_keywords",
    "short_incident",
    "near_threshold",
];

const RISK_KEYWORDS: [&str; 7] = [
    "cash",
    "urgent",
    "stolen",
    "total loss",
    "no witnesses",
    "fire",
    "lost receipt",
];
const KEYWORD_CAP: usize = 5;
const PRIOR_CLAIMS_CAP: u64 = 10;
const SHORT_INCIDENT_CHARS: usize = 40;

/// Scores below this are `low`.
const MEDIUM_FROM: f64 = 0.3;
/// Scores from this are `high`.
const HIGH_FROM: f64 = 0.7;

/// A hook run on every valid request just before it is scored; an error it
/// returns is the call's answer.
pub type BeforeScoring = fn(&ModelRequest) -> Result<(), Error>;

/// One build of the model adapter: the weights it embeds and the model id
/// it reports in every response.
///
/// ```ignore
/// const MODEL: FraudModel = FraudModel::new("fraud-lr@1.0.0", include_str!("../weights.json"));
/// struct FraudScore;
/// impl ModelAdapter for FraudScore {
///     fn infer(request: ModelRequest) -> Result<ModelResponse, Error> {
///         MODEL.infer(request)
///     }
/// }
/// evos_sdk::export_model_adapter!(FraudScore);
/// ```
pub struct FraudModel<'a> {
    model: &'a str,
    weights_json: &'a str,
    before_scoring: Option<BeforeScoring>,
}

impl<'a> FraudModel<'a> {
    /// A build reporting `model` (e.g. `fraud-lr@1.0.0`) and scoring with the
    /// weights file `weights_json` written by `train/train.py`.
    pub const fn new(model: &'a str, weights_json: &'a str) -> FraudModel<'a> {
        FraudModel {
            model,
            weights_json,
            before_scoring: None,
        }
    }

    /// The same build with `hook` run on every valid request before scoring.
    pub const fn before_scoring(self, hook: BeforeScoring) -> FraudModel<'a> {
        FraudModel {
            before_scoring: Some(hook),
            ..self
        }
    }

    /// Answer one `model-request`: validate the input, run the hook if any,
    /// and score the claim.
    pub fn infer(&self, request: ModelRequest) -> Result<ModelResponse, Error> {
        let weights = Weights::parse(self.weights_json)?;
        let claim = Claim::from_input(&request.input)?;
        if let Some(hook) = self.before_scoring {
            hook(&request)?;
        }
        let x = claim.features();
        let score = weights.score(&x);
        let label = label(score);
        let features: Map<String, Value> = FEATURES
            .iter()
            .zip(x)
            .map(|(name, v)| (name.to_string(), json!(v)))
            .collect();
        log::debug(&format!("{}: score {score:.4} ({label})", self.model));
        Ok(ModelResponse {
            output: json::to_string(&json!({
                "score": score,
                "label": label,
                "features": features,
            }))?,
            model: self.model.to_string(),
            usage: Usage {
                input_units: FEATURES.len() as u64,
                output_units: 1,
            },
        })
    }
}

#[derive(Deserialize)]
struct Weights {
    features: Vec<String>,
    weights: Vec<f64>,
}

impl Weights {
    /// The weights in an embedded weights file, checked against [`FEATURES`].
    fn parse(text: &str) -> Result<Weights, Error> {
        let weights: Weights = serde_json::from_str(text)
            .map_err(|e| Error::Internal(format!("embedded weights file is invalid: {e}")))?;
        if weights.features != FEATURES || weights.weights.len() != FEATURES.len() {
            return Err(Error::Internal(format!(
                "embedded weights are for features {:?} ({} weights), this build computes {:?}",
                weights.features,
                weights.weights.len(),
                FEATURES
            )));
        }
        if weights.weights.iter().any(|w| !w.is_finite()) {
            return Err(Error::Internal(
                "embedded weights contain a non-finite value".into(),
            ));
        }
        Ok(weights)
    }

    fn score(&self, x: &[f64; FEATURES.len()]) -> f64 {
        let z: f64 = self.weights.iter().zip(x).map(|(w, v)| w * v).sum();
        sigmoid(z)
    }
}

/// The scored parts of a claim.
#[derive(Debug, PartialEq)]
struct Claim {
    amount: f64,
    prior_claims: u64,
    incident: String,
}

impl Claim {
    /// Validate the request input, naming the offending field on error.
    fn from_input(input: &str) -> Result<Claim, Error> {
        let value: Value = json::parse(input)?;
        let Value::Object(fields) = value else {
            return Err(invalid("input", "must be a JSON object", &value));
        };
        let amount = match fields.get("amount") {
            Some(v @ Value::Number(n)) => match n.as_f64() {
                Some(a) if a.is_finite() && a > 0.0 => a,
                _ => return Err(invalid("amount", "must be a positive number", v)),
            },
            Some(v) => return Err(invalid("amount", "must be a positive number", v)),
            None => return Err(missing("amount")),
        };
        let prior_claims = match fields.get("prior_claims") {
            Some(v @ Value::Number(n)) => n
                .as_u64()
                .ok_or_else(|| invalid("prior_claims", "must be a non-negative integer", v))?,
            Some(v) => return Err(invalid("prior_claims", "must be a non-negative integer", v)),
            None => return Err(missing("prior_claims")),
        };
        let incident = match fields.get("incident") {
            Some(Value::String(s)) => s.clone(),
            Some(v) => return Err(invalid("incident", "must be a string", v)),
            None => return Err(missing("incident")),
        };
        for optional in ["region", "policy_number"] {
            match fields.get(optional) {
                None | Some(Value::String(_)) | Some(Value::Null) => {}
                Some(v) => return Err(invalid(optional, "must be a string", v)),
            }
        }
        Ok(Claim {
            amount,
            prior_claims,
            incident,
        })
    }

    /// The feature vector, in [`FEATURES`] order.
    fn features(&self) -> [f64; FEATURES.len()] {
        let keywords = keyword_count(&self.incident).min(KEYWORD_CAP);
        let amount = self.amount;
        let near_threshold =
            (900.0..1000.0).contains(&amount) || (9000.0..10000.0).contains(&amount);
        [
            1.0,
            amount.ln_1p() / 10.0,
            self.prior_claims.min(PRIOR_CLAIMS_CAP) as f64 / PRIOR_CLAIMS_CAP as f64,
            flag(amount > 0.0 && amount % 500.0 == 0.0),
            keywords as f64 / KEYWORD_CAP as f64,
            flag(self.incident.trim().chars().count() < SHORT_INCIDENT_CHARS),
            flag(near_threshold),
        ]
    }
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

fn missing(field: &str) -> Error {
    Error::InvalidInput(format!("input.{field} is missing"))
}

fn invalid(field: &str, requirement: &str, got: &Value) -> Error {
    let mut shown = got.to_string();
    if shown.chars().count() > 60 {
        shown = shown.chars().take(60).collect::<String>() + "...";
    }
    Error::InvalidInput(format!("input.{field} {requirement}, got {shown}"))
}

/// Lowercase ASCII letters and digits separated by single spaces, padded
/// with a space on both ends, so that ` phrase ` matches whole words only.
fn normalized_words(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push(' ');
    let mut pending_space = false;
    for ch in text.chars() {
        if ch.is_ascii_alphanumeric() {
            if pending_space && out.len() > 1 {
                out.push(' ');
            }
            pending_space = false;
            out.push(ch.to_ascii_lowercase());
        } else {
            pending_space = true;
        }
    }
    out.push(' ');
    out
}

/// Number of distinct risk keywords present in `text`.
fn keyword_count(text: &str) -> usize {
    let words = normalized_words(text);
    RISK_KEYWORDS
        .iter()
        .filter(|kw| words.contains(&format!(" {kw} ")))
        .count()
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

fn label(score: f64) -> &'static str {
    if score >= HIGH_FROM {
        "high"
    } else if score >= MEDIUM_FROM {
        "medium"
    } else {
        "low"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The weights files of the builds, as embedded by their crates.
    const WEIGHTS_1_0_0: &str = include_str!("../../fraud-score/weights.json");
    const WEIGHTS_1_1_0: &str = include_str!("../../fraud-score/weights-1.1.0.json");
    const WEIGHTS_1_3_0: &str = include_str!("../../fraud-score/weights-1.3.0.json");

    #[derive(Deserialize)]
    struct Check {
        input: Value,
        features: Map<String, Value>,
        score: f64,
    }

    #[derive(Deserialize)]
    struct Reference {
        model: String,
        version: String,
        training: Map<String, Value>,
        checks: Vec<Check>,
    }

    fn check_against_training_script(text: &str, version: &str) {
        let weights = Weights::parse(text).unwrap();
        let reference: Reference = serde_json::from_str(text).unwrap();
        assert_eq!(reference.model, "fraud-lr");
        assert_eq!(reference.version, version);
        for metric in ["holdout_accuracy", "holdout_auc"] {
            let value = reference.training[metric].as_f64().unwrap();
            assert!(value > 0.5 && value <= 1.0, "{version} {metric}: {value}");
        }
        assert!(!reference.checks.is_empty());
        for check in reference.checks {
            let claim = Claim::from_input(&check.input.to_string()).unwrap();
            let x = claim.features();
            for (name, v) in FEATURES.iter().zip(x) {
                let expected = check.features[*name].as_f64().unwrap();
                assert!((expected - v).abs() < 1e-12, "{name}: {v} != {expected}");
            }
            assert!((weights.score(&x) - check.score).abs() < 1e-9);
        }
    }

    #[test]
    fn weights_1_0_0_load_and_match_the_training_script() {
        check_against_training_script(WEIGHTS_1_0_0, "1.0.0");
    }

    #[test]
    fn weights_1_1_0_load_and_match_the_training_script() {
        check_against_training_script(WEIGHTS_1_1_0, "1.1.0");
    }

    #[test]
    fn weights_1_3_0_ignore_prior_claims() {
        check_against_training_script(WEIGHTS_1_3_0, "1.3.0");
        let w = Weights::parse(WEIGHTS_1_3_0).unwrap();
        let at = FEATURES.iter().position(|f| *f == "prior_claims").unwrap();
        assert_eq!(w.weights[at], 0.0, "trained with --ignore prior_claims");
        let original = Weights::parse(WEIGHTS_1_0_0).unwrap();
        assert!(
            original.weights[at] > 1.0,
            "the original model weighs prior claims"
        );
    }

    #[test]
    fn retrained_weights_differ_from_the_original() {
        let a = Weights::parse(WEIGHTS_1_0_0).unwrap();
        let b = Weights::parse(WEIGHTS_1_1_0).unwrap();
        assert_ne!(a.weights, b.weights);
    }

    #[test]
    fn invalid_weights_are_an_internal_error() {
        let err = |text: &str| match Weights::parse(text) {
            Err(Error::Internal(m)) => m,
            Err(other) => panic!("expected an internal error, got {other:?}"),
            Ok(_) => panic!("expected an internal error for {text}"),
        };
        assert!(err("{").contains("invalid"));
        assert!(err(r#"{"features":["bias"],"weights":[1.0]}"#).contains("features"));
    }

    #[test]
    fn keywords_match_whole_words_only() {
        assert_eq!(keyword_count("FIRE!! Total   loss; no-witnesses"), 3);
        assert_eq!(keyword_count("wildfire near the firehouse, cashew"), 0);
        assert_eq!(keyword_count("cash cash cash"), 1);
    }

    #[test]
    fn rejects_bad_fields_by_name() {
        let err = |input: &str| match Claim::from_input(input) {
            Err(Error::InvalidInput(m)) => m,
            other => panic!("expected invalid input, got {other:?}"),
        };
        assert!(err(r#"{"prior_claims":0,"incident":"x"}"#).contains("input.amount is missing"));
        assert!(err(r#"{"amount":-1,"prior_claims":0,"incident":"x"}"#).contains("input.amount"));
        assert!(err(r#"{"amount":1,"prior_claims":1.5,"incident":"x"}"#).contains("prior_claims"));
        assert!(err(r#"{"amount":1,"prior_claims":1,"incident":7}"#).contains("incident"));
        assert!(
            err(r#"{"amount":1,"prior_claims":1,"incident":"x","region":1}"#).contains("region")
        );
        assert!(err("[1]").contains("input must be a JSON object"));
    }

    #[test]
    fn labels_follow_thresholds() {
        assert_eq!(label(0.29), "low");
        assert_eq!(label(0.3), "medium");
        assert_eq!(label(0.69), "medium");
        assert_eq!(label(0.7), "high");
    }
}
