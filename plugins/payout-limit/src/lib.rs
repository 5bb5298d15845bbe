//! `payout-limit` policy: allow payouts below `allow-below`, escalate up to
//! `deny-above` for a human to decide, deny anything larger. Both limits come
//! from the manifest's `[config]`; a missing or malformed limit denies
//! (fail closed) with a reason that says which key to fix. Every decision is
//! logged at debug level.

use evos_sdk::{Action, Decision, Error, Event, Policy, config, json, log};
use serde::Deserialize;

#[derive(Deserialize)]
struct Payout {
    amount: f64,
}

struct PayoutLimit;

impl Policy for PayoutLimit {
    fn evaluate(action: Action, _event: Event) -> Decision {
        let decision = decide(&action);
        log::debug(&format!(
            "{} for event {}: {}",
            action.kind,
            action.event_id,
            decision.summary()
        ));
        decision
    }
}

fn decide(action: &Action) -> Decision {
    let (allow_below, deny_above) = match limits() {
        Ok(limits) => limits,
        Err(reason) => return Decision::Deny(reason),
    };
    let payout: Payout = match json::parse(&action.payload) {
        Ok(p) => p,
        Err(e) => {
            return Decision::Deny(format!(
                "{} payload has no numeric amount: {}",
                action.kind,
                text(e)
            ));
        }
    };
    let amount = payout.amount;
    if !amount.is_finite() || amount < 0.0 {
        Decision::Deny(format!("amount {amount} is not a valid payout"))
    } else if amount < allow_below {
        Decision::Allow
    } else if amount <= deny_above {
        Decision::Escalate(format!(
            "amount {amount:.2} is between {allow_below:.2} and {deny_above:.2}: needs a human"
        ))
    } else {
        Decision::Deny(format!(
            "amount {amount:.2} exceeds the payout limit {deny_above:.2}"
        ))
    }
}

fn limits() -> Result<(f64, f64), String> {
    let allow_below: f64 = config::get_parsed("allow-below").map_err(text)?;
    let deny_above: f64 = config::get_parsed("deny-above").map_err(text)?;
    if allow_below > deny_above {
        return Err(format!(
            "config allow-below ({allow_below}) must not exceed deny-above ({deny_above})"
        ));
    }
    Ok((allow_below, deny_above))
}

/// The human-readable text of an SDK error, without the variant name.
fn text(e: Error) -> String {
    match e {
        Error::InvalidInput(m)
        | Error::Denied(m)
        | Error::NotFound(m)
        | Error::Upstream(m)
        | Error::Internal(m) => m,
    }
}

evos_sdk::export_policy!(PayoutLimit);
