//! {{name}}: allows an action whose payload `amount` is at most
//! `[config] max-amount`, escalates larger ones, denies a payload without a
//! valid amount.

use evos_sdk::{Action, Decision, Event, Policy, config, json, log};
use serde::Deserialize;

#[derive(Deserialize)]
struct Payload {
    amount: f64,
}

/// The rule, apart from the host: what `evaluate` decides.
pub fn decide(amount: Option<f64>, max_amount: f64) -> Decision {
    match amount {
        Some(a) if a.is_finite() && a >= 0.0 => {
            if a <= max_amount {
                Decision::Allow
            } else {
                Decision::Escalate(format!("amount {a} is above max-amount {max_amount}"))
            }
        }
        _ => Decision::Deny("the payload has no valid amount".into()),
    }
}

struct Plugin;

impl Policy for Plugin {
    fn evaluate(action: Action, _event: Event) -> Decision {
        let max_amount: f64 = match config::get_parsed("max-amount") {
            Ok(v) => v,
            Err(e) => return Decision::Deny(format!("policy misconfigured: {e:?}")),
        };
        let amount = json::parse::<Payload>(&action.payload).ok().map(|p| p.amount);
        let decision = decide(amount, max_amount);
        log::debug(&format!("{}: {}", action.kind, decision.summary()));
        decision
    }
}

evos_sdk::export_policy!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_up_to_the_limit_escalates_above_and_denies_no_amount() {
        assert!(matches!(decide(Some(250.0), 1000.0), Decision::Allow));
        assert!(matches!(decide(Some(1000.0), 1000.0), Decision::Allow));
        assert!(matches!(decide(Some(1000.5), 1000.0), Decision::Escalate(_)));
        assert!(matches!(decide(None, 1000.0), Decision::Deny(_)));
        assert!(matches!(decide(Some(-1.0), 1000.0), Decision::Deny(_)));
    }
}
