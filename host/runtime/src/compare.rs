//! Comparing two versions' answers to the same input, and the class of an
//! answer: what shadow traffic, decision shift and human labels are
//! measured in.
//!
//! Per kind:
//!
//! | kind          | the answers agree when                               | class            |
//! |---------------|------------------------------------------------------|------------------|
//! | policy        | the decisions are the same (allow, deny, escalate)   | the decision     |
//! | agent         | the proposed action kinds are the same (as a multiset) | the kinds, sorted, joined by `+` (`none` for no action) |
//! | model-adapter | `[rollout.compare]` says: `field` within `tolerance`, or `label` equal; without it the outputs are equal JSON | the label, or `field >= threshold` as `positive`/`negative` |
//! | connector     | the events (ingest) or receipts are equal            | —                |
//!
//! A call that did not answer (a trap, a timeout, a guest error) has the
//! class `failed`; two failed answers agree, a failed and a real one never.
//!
//! ```toml
//! [rollout.compare]        # in a model adapter's manifest
//! field = "score"          # a number in the model's output (a key, or a JSON pointer "/a/b")
//! tolerance = 0.05         # |stable - candidate| <= tolerance agrees
//! threshold = 0.5          # score >= threshold is the class `positive`
//! # or: label = "decision" # a string in the output; equal labels agree
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::runtime::{CallOutput, CallReport, Outcome};
use evos_core::types::Decision;

/// What a call answered: all a comparison looks at.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub outcome: Outcome,
    pub output: Option<CallOutput>,
}

impl From<&CallReport> for Answer {
    fn from(r: &CallReport) -> Answer {
        Answer {
            outcome: r.outcome.clone(),
            output: r.output.clone(),
        }
    }
}

/// How a model adapter's answers are compared (`[rollout.compare]`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Compare {
    /// A number in the output, compared within `tolerance`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default)]
    pub tolerance: f64,
    /// Where a `field` splits the classes `positive` and `negative`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// A string in the output: the answer's class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The class each human label stands for, by `"<action kind>/<label>"`
    /// or by the label alone (`"approve-payout/reject" = "positive"`,
    /// `fraud = "positive"`): how answers are compared with reviewers'
    /// decisions and later corrections.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

impl Compare {
    /// Check the table; the message names the key to fix.
    pub(crate) fn validate(&self) -> Result<(), String> {
        match (&self.field, &self.label) {
            (Some(_), Some(_)) => Err(
                "[rollout.compare] sets both `field` and `label`: compare by one (a number within `tolerance`, or a string label)".into(),
            ),
            (None, None) => Err(
                "[rollout.compare] needs `field = \"<number in the output>\"` or `label = \"<string in the output>\"`".into(),
            ),
            (None, Some(_)) if self.threshold.is_some() || self.tolerance != 0.0 => Err(
                "[rollout.compare] `tolerance` and `threshold` go with `field`, not `label`".into(),
            ),
            _ if !self.tolerance.is_finite() || self.tolerance < 0.0 => Err(format!(
                "[rollout.compare] tolerance = {} must be a number of at least 0",
                self.tolerance
            )),
            _ if self.threshold.is_some_and(|t| !t.is_finite()) => {
                Err("[rollout.compare] threshold must be a finite number".into())
            }
            (Some(_), None) if !self.labels.is_empty() && self.threshold.is_none() => Err(
                "[rollout.compare] `labels` maps human labels to classes, and a `field` has classes only with a `threshold`".into(),
            ),
            _ => Ok(()),
        }
    }
}

/// The class of a call that gave no answer.
pub const FAILED: &str = "failed";

/// A value at `path` in `output`: a top-level key, or a JSON pointer.
fn at<'a>(output: &'a Value, path: &str) -> Option<&'a Value> {
    if path.starts_with('/') {
        output.pointer(path)
    } else {
        output.get(path)
    }
}

/// What an answer is, for comparing classes (decision shift, agreement
/// with human labels); `None` when its kind has no class (connectors, a
/// model without `[rollout.compare]` or whose output lacks the field).
pub fn class_of(report: &Answer, compare: Option<&Compare>) -> Option<String> {
    if !matches!(report.outcome, Outcome::Ok) {
        return Some(FAILED.into());
    }
    match report.output.as_ref()? {
        CallOutput::Decision(d) => Some(decision_class(d).into()),
        CallOutput::Actions(actions) => {
            let mut kinds: Vec<&str> = actions.iter().map(|a| a.kind.as_str()).collect();
            kinds.sort_unstable();
            Some(if kinds.is_empty() {
                "none".into()
            } else {
                kinds.join("+")
            })
        }
        CallOutput::Model(resp) => {
            let compare = compare?;
            if let Some(label) = &compare.label {
                return match at(&resp.output, label)? {
                    Value::String(s) => Some(s.clone()),
                    other => Some(other.to_string()),
                };
            }
            let value = at(&resp.output, compare.field.as_deref()?)?.as_f64()?;
            let threshold = compare.threshold?;
            Some(
                if value >= threshold {
                    "positive"
                } else {
                    "negative"
                }
                .into(),
            )
        }
        CallOutput::Events(_) | CallOutput::Receipt(_) => None,
    }
}

impl Compare {
    /// The class a human `label` on an action of `action_kind` stands for.
    pub fn class_for_label(&self, action_kind: &str, label: &str) -> Option<&str> {
        self.labels
            .get(&format!("{action_kind}/{label}"))
            .or_else(|| self.labels.get(label))
            .map(String::as_str)
    }
}

/// The class of a policy decision: `allow`, `deny` or `escalate`.
pub fn decision_class(d: &Decision) -> &'static str {
    match d {
        Decision::Allow => "allow",
        Decision::Deny(_) => "deny",
        Decision::Escalate(_) => "escalate",
    }
}

/// Whether two answers to the same input agree (see the module docs).
pub fn agree(a: &Answer, b: &Answer, compare: Option<&Compare>) -> bool {
    let (a_ok, b_ok) = (
        matches!(a.outcome, Outcome::Ok),
        matches!(b.outcome, Outcome::Ok),
    );
    if !a_ok || !b_ok {
        return a_ok == b_ok;
    }
    match (&a.output, &b.output) {
        (Some(CallOutput::Decision(x)), Some(CallOutput::Decision(y))) => {
            decision_class(x) == decision_class(y)
        }
        (Some(CallOutput::Actions(_)), Some(CallOutput::Actions(_))) => {
            class_of(a, None) == class_of(b, None)
        }
        (Some(CallOutput::Model(x)), Some(CallOutput::Model(y))) => match compare {
            Some(c) => match (&c.field, &c.label) {
                (Some(field), _) => {
                    match (
                        at(&x.output, field).and_then(Value::as_f64),
                        at(&y.output, field).and_then(Value::as_f64),
                    ) {
                        (Some(p), Some(q)) => (p - q).abs() <= c.tolerance,
                        // A missing field agrees only with a missing field.
                        (p, q) => p.is_none() && q.is_none(),
                    }
                }
                (None, Some(label)) => at(&x.output, label) == at(&y.output, label),
                (None, None) => x.output == y.output,
            },
            None => x.output == y.output,
        },
        (Some(CallOutput::Events(x)), Some(CallOutput::Events(y))) => x == y,
        (Some(CallOutput::Receipt(x)), Some(CallOutput::Receipt(y))) => x == y,
        (x, y) => x.is_none() && y.is_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use evos_core::types::{Action, ModelResponse, Payload};
    use serde_json::json;

    fn report(outcome: Outcome, output: Option<CallOutput>) -> Answer {
        Answer { outcome, output }
    }

    fn model(output: Value) -> Answer {
        report(
            Outcome::Ok,
            Some(CallOutput::Model(ModelResponse {
                output,
                model: "m".into(),
                usage: Default::default(),
            })),
        )
    }

    fn score(field: &str, tolerance: f64, threshold: Option<f64>) -> Compare {
        Compare {
            field: Some(field.into()),
            tolerance,
            threshold,
            label: None,
            labels: Default::default(),
        }
    }

    #[test]
    fn model_scores_agree_within_the_tolerance_and_split_at_the_threshold() {
        let c = score("score", 0.05, Some(0.5));
        let (a, b, far) = (
            model(json!({"score": 0.70})),
            model(json!({"score": 0.74})),
            model(json!({"score": 0.20})),
        );
        assert!(agree(&a, &b, Some(&c)));
        assert!(!agree(&a, &far, Some(&c)));
        assert_eq!(class_of(&a, Some(&c)).as_deref(), Some("positive"));
        assert_eq!(class_of(&far, Some(&c)).as_deref(), Some("negative"));
        // A JSON pointer reaches nested fields.
        let nested = score("/risk/score", 0.0, None);
        assert!(agree(
            &model(json!({"risk": {"score": 1.0}})),
            &model(json!({"risk": {"score": 1.0}})),
            Some(&nested)
        ));
        // Without a threshold a score has no class.
        assert_eq!(class_of(&a, Some(&nested)), None);
        // Without [rollout.compare] outputs must be equal.
        assert!(!agree(&a, &b, None));
        assert!(agree(&a, &model(json!({"score": 0.70})), None));
    }

    #[test]
    fn labels_decisions_and_action_kinds_are_classes() {
        let c = Compare {
            field: None,
            tolerance: 0.0,
            threshold: None,
            label: "decision".to_string().into(),
            labels: Default::default(),
        };
        let (yes, no) = (
            model(json!({"decision": "approve", "p": 1})),
            model(json!({"decision": "flag"})),
        );
        assert_eq!(class_of(&yes, Some(&c)).as_deref(), Some("approve"));
        assert!(!agree(&yes, &no, Some(&c)));
        assert!(agree(
            &yes,
            &model(json!({"decision": "approve"})),
            Some(&c)
        ));

        let policy = |d| report(Outcome::Ok, Some(CallOutput::Decision(d)));
        assert!(agree(
            &policy(Decision::Deny("a".into())),
            &policy(Decision::Deny("b".into())),
            None
        ));
        assert!(!agree(
            &policy(Decision::Allow),
            &policy(Decision::Escalate("x".into())),
            None
        ));
        let action = |kind: &str| Action {
            kind: kind.into(),
            event_id: "e".into(),
            payload: Payload::default(),
            rationale: String::new(),
        };
        let acts = |kinds: &[&str]| {
            report(
                Outcome::Ok,
                Some(CallOutput::Actions(
                    kinds.iter().map(|k| action(k)).collect(),
                )),
            )
        };
        assert!(agree(
            &acts(&["pay", "notify"]),
            &acts(&["notify", "pay"]),
            None
        ));
        assert!(!agree(&acts(&["pay"]), &acts(&["hold"]), None));
        assert_eq!(class_of(&acts(&[]), None).as_deref(), Some("none"));
        assert_eq!(
            class_of(&acts(&["pay", "notify"]), None).as_deref(),
            Some("notify+pay")
        );
    }

    #[test]
    fn a_failed_call_agrees_only_with_a_failed_call() {
        let trap = report(Outcome::Timeout, None);
        let ok = model(json!({"score": 1}));
        assert!(!agree(&trap, &ok, None));
        assert!(agree(&trap, &report(Outcome::OutOfFuel, None), None));
        assert_eq!(class_of(&trap, None).as_deref(), Some(FAILED));
    }

    #[test]
    fn a_compare_table_names_one_way_to_compare() {
        assert!(score("score", 0.1, Some(0.5)).validate().is_ok());
        assert!(score("score", -0.1, None).validate().is_err());
        let both = Compare {
            label: Some("x".into()),
            ..score("score", 0.0, None)
        };
        assert!(both.validate().unwrap_err().contains("both"));
        let neither = Compare {
            field: None,
            ..score("score", 0.0, None)
        };
        assert!(neither.validate().unwrap_err().contains("needs"));
    }
}
