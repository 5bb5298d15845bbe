//! `claims-triage` agent: decides what happens to each submitted insurance
//! claim.
//!
//! For every `claim.submitted` event it
//! 1. reads the claimant's history from kv (`claimant/<claimant_id>`:
//!    `{"claims": n, "total_amount": x, "claim_ids": [up to the last 10]}`),
//! 2. asks the `fraud-score` model adapter for a fraud score, passing the
//!    number of earlier claims as `prior_claims`,
//! 3. records the claim in the history (a redelivered event whose `claim_id`
//!    is already recorded is not counted twice),
//! 4. proposes exactly one action:
//!    - `flag-fraud` when the score is 0.7 or more,
//!    - `route-to-adjuster` (to the desk named by the `TRIAGE_DESK`
//!      environment variable, default `central`) when the score is 0.3 or
//!      more, or the claimant has 3 or more earlier claims,
//!    - `approve-payout` otherwise.
//!
//! Every action's payload carries `claim_id`, `claimant_id`,
//! `policy_number`, `amount`, `region`, `score` and `label` so that policies
//! (payout limits, PII checks) and the connector can act on it without the
//! event.

use evos_sdk::{Action, Agent, Error, Event, json, kv, log, models};
use serde::{Deserialize, Serialize};
use serde_json::json;

const EVENT_KIND: &str = "claim.submitted";
const FRAUD_MODEL: &str = "fraud-score";
const DESK_VARIABLE: &str = "TRIAGE_DESK";
const DEFAULT_DESK: &str = "central";

/// Scores from this are flagged as fraud.
const FLAG_FROM: f64 = 0.7;
/// Scores from this go to an adjuster.
const REVIEW_FROM: f64 = 0.3;
/// Claimants with at least this many earlier claims go to an adjuster.
const REVIEW_PRIOR_CLAIMS: u64 = 3;
/// Claim ids remembered per claimant for redelivery detection.
const REMEMBERED_CLAIM_IDS: usize = 10;

/// The `claim.submitted` payload produced by the claims-webhook connector.
#[derive(Deserialize)]
struct Claim {
    claim_id: String,
    claimant_id: String,
    amount: f64,
    policy_number: String,
    incident: String,
    region: String,
}

impl Claim {
    fn parse(payload: &str) -> Result<Claim, Error> {
        let claim: Claim = json::parse(payload)?;
        for (field, value) in [
            ("claim_id", &claim.claim_id),
            ("claimant_id", &claim.claimant_id),
            ("policy_number", &claim.policy_number),
            ("incident", &claim.incident),
            ("region", &claim.region),
        ] {
            if value.trim().is_empty() {
                return Err(Error::InvalidInput(format!(
                    "payload: {field} must not be empty"
                )));
            }
        }
        if !claim.amount.is_finite() || claim.amount <= 0.0 {
            return Err(Error::InvalidInput(format!(
                "payload: amount must be a positive number, got {}",
                claim.amount
            )));
        }
        Ok(claim)
    }
}

/// A claimant's claim history, stored as JSON in kv.
#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
struct History {
    claims: u64,
    total_amount: f64,
    claim_ids: Vec<String>,
}

impl History {
    fn key(claimant_id: &str) -> String {
        format!("claimant/{claimant_id}")
    }

    fn load(claimant_id: &str) -> Result<History, Error> {
        Ok(kv::get_json(&History::key(claimant_id))?.unwrap_or_default())
    }

    fn contains(&self, claim_id: &str) -> bool {
        self.claim_ids.iter().any(|id| id == claim_id)
    }

    fn record(&mut self, claim: &Claim) {
        self.claims += 1;
        self.total_amount += claim.amount;
        self.claim_ids.push(claim.claim_id.clone());
        if self.claim_ids.len() > REMEMBERED_CLAIM_IDS {
            let excess = self.claim_ids.len() - REMEMBERED_CLAIM_IDS;
            self.claim_ids.drain(..excess);
        }
    }
}

/// The part of the fraud model's answer the triage needs.
#[derive(Deserialize)]
struct FraudScore {
    score: f64,
    label: String,
}

fn fraud_score(claim: &Claim, prior_claims: u64) -> Result<FraudScore, Error> {
    let response = models::infer_json(
        FRAUD_MODEL,
        &json!({
            "amount": claim.amount,
            "prior_claims": prior_claims,
            "incident": claim.incident,
            "region": claim.region,
            "policy_number": claim.policy_number,
        }),
    )?;
    let answer: FraudScore = serde_json::from_str(&response.output).map_err(|e| {
        Error::Upstream(format!(
            "{FRAUD_MODEL} ({}) answered unreadable output: {e}",
            response.model
        ))
    })?;
    if !(0.0..=1.0).contains(&answer.score) {
        return Err(Error::Upstream(format!(
            "{FRAUD_MODEL} ({}) answered score {} outside [0, 1]",
            response.model, answer.score
        )));
    }
    Ok(answer)
}

fn triage_desk() -> String {
    match std::env::var(DESK_VARIABLE) {
        Ok(desk) if !desk.trim().is_empty() => desk.trim().to_string(),
        _ => DEFAULT_DESK.to_string(),
    }
}

/// The action kind for a score and history, as described in the crate docs.
fn decide(score: f64, prior_claims: u64) -> &'static str {
    if score >= FLAG_FROM {
        "flag-fraud"
    } else if score >= REVIEW_FROM || prior_claims >= REVIEW_PRIOR_CLAIMS {
        "route-to-adjuster"
    } else {
        "approve-payout"
    }
}

struct ClaimsTriage;

impl Agent for ClaimsTriage {
    fn handle(event: Event) -> Result<Vec<Action>, Error> {
        if event.kind != EVENT_KIND {
            log::debug(&format!(
                "event {} of kind {} ignored",
                event.id, event.kind
            ));
            return Ok(Vec::new());
        }
        let claim = Claim::parse(&event.payload)?;

        let mut history = History::load(&claim.claimant_id)?;
        let redelivered = history.contains(&claim.claim_id);
        // A recorded claim is part of its own history; it is not its own prior.
        let prior_claims = if redelivered {
            history.claims.saturating_sub(1)
        } else {
            history.claims
        };

        let fraud = fraud_score(&claim, prior_claims)?;

        if redelivered {
            log::info(&format!(
                "claim {} already recorded for its claimant; history unchanged",
                claim.claim_id
            ));
        } else {
            history.record(&claim);
            kv::set_json(&History::key(&claim.claimant_id), &history)?;
        }

        let kind = decide(fraud.score, prior_claims);
        let mut payload = json!({
            "claim_id": claim.claim_id,
            "claimant_id": claim.claimant_id,
            "policy_number": claim.policy_number,
            "amount": claim.amount,
            "region": claim.region,
            "score": fraud.score,
            "label": fraud.label,
        });
        let outcome = match kind {
            "flag-fraud" => "flagged as likely fraud".to_string(),
            "route-to-adjuster" => {
                let desk = triage_desk();
                let outcome = format!("routed to the {desk} adjuster desk");
                payload["desk"] = json!(desk);
                outcome
            }
            _ => "approved for payout".to_string(),
        };
        let rationale = format!(
            "Fraud score {:.3} ({}) with {prior_claims} prior claim(s): {outcome}.",
            fraud.score, fraud.label
        );
        log::info(&format!(
            "claim {} (amount {:.2}): {kind}, score {:.3} ({}), prior claims {prior_claims}",
            claim.claim_id, claim.amount, fraud.score, fraud.label
        ));
        Ok(vec![Action::new(kind, &event, &payload, &rationale)?])
    }
}

evos_sdk::export_agent!(ClaimsTriage);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_follow_score_and_history() {
        assert_eq!(decide(0.05, 0), "approve-payout");
        assert_eq!(decide(0.29, 2), "approve-payout");
        assert_eq!(decide(0.05, 3), "route-to-adjuster");
        assert_eq!(decide(0.3, 0), "route-to-adjuster");
        assert_eq!(decide(0.69, 0), "route-to-adjuster");
        assert_eq!(decide(0.7, 0), "flag-fraud");
        assert_eq!(decide(0.95, 9), "flag-fraud");
    }

    #[test]
    fn history_keeps_the_last_ten_claim_ids() {
        let mut history = History::default();
        for n in 0..12 {
            let claim = Claim {
                claim_id: format!("C-{n}"),
                claimant_id: "CL-1".into(),
                amount: 10.0,
                policy_number: "POL-1".into(),
                incident: "x".into(),
                region: "r".into(),
            };
            history.record(&claim);
        }
        assert_eq!(history.claims, 12);
        assert_eq!(history.total_amount, 120.0);
        assert_eq!(history.claim_ids.len(), 10);
        assert_eq!(history.claim_ids[0], "C-2");
        assert!(history.contains("C-11") && !history.contains("C-1"));
    }

    #[test]
    fn rejects_incomplete_claims() {
        assert!(Claim::parse(r#"{"claim_id":"C","claimant_id":"A","amount":-1,"policy_number":"POL-1","incident":"i","region":"r"}"#).is_err());
        assert!(Claim::parse(r#"{"claim_id":"","claimant_id":"A","amount":1,"policy_number":"POL-1","incident":"i","region":"r"}"#).is_err());
        assert!(Claim::parse(r#"{"claim_id":"C","claimant_id":"A","amount":1,"policy_number":"POL-1","incident":"i","region":"r"}"#).is_ok());
    }
}
