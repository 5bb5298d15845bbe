//! Progressive rollouts: judging a candidate version at each step of its
//! manifest's `[[rollout.steps]]` by health and by the quality of its
//! decisions (see `evos_runtime::rollout` for the manifest keys).
//!
//! [`judge_step`] is pure: it takes what the registry measured (the
//! candidate's and the stable version's windows, the shadow comparison,
//! the candidate's agreement with human labels, the time in the step) and
//! says whether the step passed, failed, or needs more evidence, with every
//! gate's value and threshold for `status` and the audit entry.

use std::time::Duration;

use serde::Serialize;

use crate::labels::HumanAgreement;
use crate::rollout::{RolloutPolicy, Step, WindowStats, judge};
use crate::store::Agreement;

/// One gate as judged now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gate {
    /// The manifest key (`max-error-rate`, `min-agreement-with-stable`, ...)
    /// or `min-calls` / `hold`.
    pub gate: String,
    /// What was measured, when anything was.
    pub value: Option<f64>,
    pub threshold: f64,
    /// `Some(true)` holds, `Some(false)` fails, `None` not judged yet.
    pub passed: Option<bool>,
    /// Why not judged, or what the value counts.
    pub note: String,
}

/// What a step's judgement means for the candidate.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "verdict")]
pub enum StepVerdict {
    /// Not enough calls or time yet, and nothing failed.
    Wait,
    /// Every gate holds: go to the next step, or finish.
    Pass,
    /// A gate failed: roll the candidate back.
    Fail { gate: String, summary: String },
}

/// What the registry measured for a candidate in a step.
pub struct Evidence<'a> {
    pub policy: &'a RolloutPolicy,
    pub step: &'a Step,
    pub candidate: &'a WindowStats,
    pub stable: &'a WindowStats,
    /// For a shadow step: its answers compared with the stable version's.
    pub agreement: Option<&'a Agreement>,
    /// The candidate's decisions against human labels.
    pub humans: Option<&'a HumanAgreement>,
    pub in_step: Duration,
    /// Calls in this step: answers compared with the stable version in a
    /// shadow step, calls the canary answered otherwise.
    pub step_calls: u64,
}

/// Judge a candidate in a step; the verdict and every gate.
pub fn judge_step(e: &Evidence<'_>) -> (StepVerdict, Vec<Gate>) {
    let policy = e.policy;
    let min_calls = e.step.min_calls.unwrap_or(policy.min_calls);
    let shadow = e.step.shadow.is_some();
    let calls = e.step_calls;
    let enough = calls >= u64::from(min_calls);
    let mut gates = vec![Gate {
        gate: "min-calls".into(),
        value: Some(calls as f64),
        threshold: f64::from(min_calls),
        passed: Some(enough),
        note: if shadow {
            "answers compared with the stable version".into()
        } else {
            "calls the canary answered in this step".into()
        },
    }];
    let hold = e.step.hold.unwrap_or_default();
    gates.push(Gate {
        gate: "hold".into(),
        value: Some(e.in_step.as_secs_f64()),
        threshold: hold.as_secs_f64(),
        passed: Some(e.in_step >= hold),
        note: "seconds in the step".into(),
    });

    // Health: the canary judge over the candidate's window (its own calls,
    // shadow calls included), once it has `min-calls` of them.
    let health = judge(policy, e.candidate, e.stable);
    let judged_health = e.candidate.calls >= u64::from(policy.min_calls);
    for (gate, threshold, value) in [
        (
            "max-error-rate",
            policy.max_error_rate,
            e.candidate.error_rate,
        ),
        ("max-trap-rate", policy.max_trap_rate, e.candidate.trap_rate),
    ] {
        let failed = health.as_ref().is_some_and(|b| b.threshold == gate);
        gates.push(Gate {
            gate: gate.into(),
            value: Some(value),
            threshold,
            passed: judged_health.then_some(!failed),
            note: format!("over {} calls", e.candidate.calls),
        });
    }
    // A shadow's latency is not the candidate's: shadow calls run at the
    // lowest priority, after the live calls.
    let p95 = (e.stable.p95_us > 0).then(|| e.candidate.p95_us as f64 / e.stable.p95_us as f64);
    gates.push(Gate {
        gate: "max-p95-ratio".into(),
        value: p95,
        threshold: policy.max_p95_ratio,
        passed: (judged_health && !shadow).then_some(
            health
                .as_ref()
                .is_none_or(|b| b.threshold != "max-p95-ratio"),
        ),
        note: if shadow {
            "not judged in a shadow step: shadow calls run at the lowest priority".into()
        } else {
            format!(
                "candidate p95 {} us, stable {} us",
                e.candidate.p95_us, e.stable.p95_us
            )
        },
    });

    // Quality against the stable version: judged in shadow steps once
    // `min-calls` answers were compared.
    if shadow {
        let a = e.agreement.cloned().unwrap_or_default();
        if let Some(min) = policy.min_agreement_with_stable {
            let rate = a.rate();
            gates.push(Gate {
                gate: "min-agreement-with-stable".into(),
                value: rate,
                threshold: min,
                passed: enough.then(|| rate.is_some_and(|r| r >= min)),
                note: format!("{} of {} answers agreed", a.agreed, a.compared),
            });
        }
        if let Some(max) = policy.max_decision_shift {
            let shift = a.shift();
            gates.push(Gate {
                gate: "max-decision-shift".into(),
                value: shift,
                threshold: max,
                passed: (enough && shift.is_some()).then(|| shift.is_some_and(|s| s <= max)),
                note: format!("{} of {} answers changed class", a.shifted, a.classed),
            });
        }
    }
    // Quality against people: once enough of its decisions were labelled.
    if let Some(min) = policy.min_agreement_with_humans {
        let h = e.humans.cloned().unwrap_or_default();
        let judged = h.compared >= policy.min_labels;
        gates.push(Gate {
            gate: "min-agreement-with-humans".into(),
            value: h.rate(),
            threshold: min,
            passed: judged.then(|| h.rate().is_some_and(|r| r >= min)),
            note: if judged {
                format!("{} of {} labelled decisions agreed", h.agreed, h.compared)
            } else {
                format!(
                    "{} of {} labelled decisions needed (min-labels)",
                    h.compared, policy.min_labels
                )
            },
        });
    }

    let failed = gates
        .iter()
        .find(|g| g.passed == Some(false) && g.gate != "min-calls" && g.gate != "hold");
    let verdict = match failed {
        Some(g) => StepVerdict::Fail {
            gate: g.gate.clone(),
            summary: format!(
                "{} {} breaks {} ({}) in step {}",
                g.gate,
                g.value.map_or("-".into(), |v| format!("{v:.4}")),
                g.threshold,
                g.note,
                e.step.describe()
            ),
        },
        None if gates.iter().take(2).all(|g| g.passed == Some(true)) => StepVerdict::Pass,
        None => StepVerdict::Wait,
    };
    (verdict, gates)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(calls: u64, errors: u64, p95: u64) -> WindowStats {
        WindowStats {
            calls,
            errors,
            traps: 0,
            error_rate: if calls == 0 {
                0.0
            } else {
                errors as f64 / calls as f64
            },
            trap_rate: 0.0,
            p95_us: p95,
        }
    }

    fn policy() -> RolloutPolicy {
        RolloutPolicy {
            min_calls: 10,
            min_agreement_with_stable: Some(0.9),
            max_decision_shift: Some(0.2),
            min_agreement_with_humans: Some(0.8),
            min_labels: 5,
            ..Default::default()
        }
    }

    fn shadow_step() -> Step {
        Step {
            shadow: Some(100),
            weight: None,
            min_calls: Some(20),
            hold: Some(Duration::from_secs(60)),
        }
    }

    fn agreement(compared: u64, agreed: u64, shifted: u64) -> Agreement {
        Agreement {
            compared,
            agreed,
            classed: compared,
            shifted,
            ..Default::default()
        }
    }

    #[test]
    fn a_step_waits_for_calls_and_time_then_passes() {
        let (p, step) = (policy(), shadow_step());
        let (c, s) = (stats(30, 0, 100), stats(30, 0, 100));
        let few = agreement(5, 5, 0);
        let ev = |a: &Agreement, secs: u64| {
            judge_step(&Evidence {
                policy: &p,
                step: &step,
                candidate: &c,
                stable: &s,
                agreement: Some(a),
                humans: None,
                in_step: Duration::from_secs(secs),
                step_calls: a.compared,
            })
        };
        assert_eq!(ev(&few, 120).0, StepVerdict::Wait, "too few compared");
        let many = agreement(40, 39, 1);
        assert_eq!(ev(&many, 10).0, StepVerdict::Wait, "held too briefly");
        let (verdict, gates) = ev(&many, 120);
        assert_eq!(verdict, StepVerdict::Pass, "{gates:#?}");
        let humans = gates
            .iter()
            .find(|g| g.gate == "min-agreement-with-humans")
            .unwrap();
        assert_eq!(humans.passed, None, "no labels yet: not judged");
    }

    #[test]
    fn quality_gates_fail_a_healthy_candidate() {
        let (p, step) = (policy(), shadow_step());
        let (c, s) = (stats(30, 0, 100), stats(30, 0, 100));
        let disagreeing = agreement(40, 30, 10);
        let (verdict, gates) = judge_step(&Evidence {
            policy: &p,
            step: &step,
            candidate: &c,
            stable: &s,
            agreement: Some(&disagreeing),
            humans: None,
            in_step: Duration::from_secs(0),
            step_calls: 40,
        });
        match verdict {
            StepVerdict::Fail { gate, summary } => {
                assert_eq!(gate, "min-agreement-with-stable");
                assert!(
                    summary.contains("0.7500") && summary.contains("shadow 100%"),
                    "{summary}"
                );
            }
            other => panic!("{other:?} {gates:#?}"),
        }
        // Humans: judged once min-labels decisions are labelled.
        let canary = Step {
            shadow: None,
            weight: Some(10),
            min_calls: Some(10),
            hold: None,
        };
        let wrong = HumanAgreement {
            labeled: 6,
            compared: 6,
            agreed: 3,
            ..Default::default()
        };
        let (verdict, _) = judge_step(&Evidence {
            policy: &p,
            step: &canary,
            candidate: &c,
            stable: &s,
            agreement: None,
            humans: Some(&wrong),
            in_step: Duration::from_secs(0),
            step_calls: 30,
        });
        assert!(
            matches!(&verdict, StepVerdict::Fail { gate, .. } if gate == "min-agreement-with-humans"),
            "{verdict:?}"
        );
    }

    #[test]
    fn a_shadow_is_not_judged_by_its_latency() {
        let (p, step) = (policy(), shadow_step());
        // Shadow calls wait behind live ones: a p95 ten times the stable's.
        let (c, s) = (stats(30, 0, 10_000), stats(30, 0, 1_000));
        let fine = agreement(40, 40, 0);
        let (verdict, gates) = judge_step(&Evidence {
            policy: &p,
            step: &step,
            candidate: &c,
            stable: &s,
            agreement: Some(&fine),
            humans: None,
            in_step: Duration::from_secs(600),
            step_calls: 40,
        });
        assert_eq!(verdict, StepVerdict::Pass, "{gates:#?}");
        let p95 = gates.iter().find(|g| g.gate == "max-p95-ratio").unwrap();
        assert_eq!((p95.passed, p95.value), (None, Some(10.0)));
    }

    #[test]
    fn health_gates_still_apply() {
        let (p, step) = (policy(), shadow_step());
        let (c, s) = (stats(30, 10, 100), stats(30, 0, 100));
        let fine = agreement(40, 40, 0);
        let (verdict, _) = judge_step(&Evidence {
            policy: &p,
            step: &step,
            candidate: &c,
            stable: &s,
            agreement: Some(&fine),
            humans: None,
            in_step: Duration::from_secs(600),
            step_calls: 40,
        });
        assert!(
            matches!(&verdict, StepVerdict::Fail { gate, .. } if gate == "max-error-rate"),
            "{verdict:?}"
        );
    }
}
