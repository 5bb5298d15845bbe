//! {{name}}: proposes `approve` for an event whose payload `amount` is
//! below `[config] threshold`, `review` otherwise.

use evos_sdk::{Action, Agent, Error, Event, config, json, log};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct Payload {
    amount: f64,
}

/// The rule, apart from the host: the action kind for an amount.
pub fn action_kind(amount: f64, threshold: f64) -> &'static str {
    if amount < threshold { "approve" } else { "review" }
}

struct Plugin;

impl Agent for Plugin {
    fn handle(event: Event) -> Result<Vec<Action>, Error> {
        let threshold: f64 = config::get_parsed("threshold")?;
        let payload: Payload = json::parse(&event.payload)?;
        if !payload.amount.is_finite() {
            return Err(Error::InvalidInput("amount must be a finite number".into()));
        }
        let kind = action_kind(payload.amount, threshold);
        log::info(&format!("event {}: {kind}", event.id));
        let rationale = format!("amount {} against threshold {threshold}", payload.amount);
        Ok(vec![Action::new(kind, &event, &json!({"amount": payload.amount}), &rationale)?])
    }
}

evos_sdk::export_agent!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_the_threshold_approves_and_at_or_above_reviews() {
        assert_eq!(action_kind(250.0, 1000.0), "approve");
        assert_eq!(action_kind(1000.0, 1000.0), "review");
        assert_eq!(action_kind(5000.0, 1000.0), "review");
    }
}
