//! `claims-webhook` connector: the front door and the back door of the
//! claims pipeline.
//!
//! `ingest` accepts the JSON body of a claims webhook (one claim object, an
//! array of claims, or `{"claims": [...]}`), validates every claim and emits
//! one `claim.submitted` event per claim whose payload is the normalized claim
//! (`claim_id`, `claimant_id`, `amount`, `policy_number`, `incident`,
//! `region`). Extra fields are ignored; a malformed claim rejects the whole
//! body with an `invalid-input` error naming the claim, the field and the
//! problem, so the sender can fix and resend it in one go.
//!
//! `execute` carries an approved action out by POSTing
//! `{"kind", "event_id", "payload", "rationale"}` as JSON to the URL in the
//! `endpoint` config key through `wasi:http` (the manifest's `http` grant
//! must cover it). A 2xx answer is the receipt; anything else is an
//! `upstream` error, and a request the host refuses is `denied`.

use std::collections::HashMap;

use evos_sdk::{Action, Connector, Error, Event, config, json, log};
use http_client::{HttpError, Method, Url};
use serde::Serialize;
use serde_json::{Map, Value};

const SOURCE: &str = "claims-webhook";
const EVENT_KIND: &str = "claim.submitted";

/// Largest number of claims accepted in one body.
const MAX_CLAIMS: usize = 1000;
/// Problems listed in one rejection before the rest are summarized.
const MAX_REPORTED_PROBLEMS: usize = 10;
/// Characters of a downstream response kept in a receipt or error.
const RESPONSE_PREVIEW_CHARS: usize = 200;

/// A validated claim, as carried in the `claim.submitted` payload.
#[derive(Debug, Serialize, PartialEq)]
struct Claim {
    claim_id: String,
    claimant_id: String,
    amount: f64,
    policy_number: String,
    incident: String,
    region: String,
}

struct ClaimsWebhook;

impl Connector for ClaimsWebhook {
    fn ingest(raw: Vec<u8>, content_type: String) -> Result<Vec<Event>, Error> {
        check_content_type(&content_type)?;
        let claims = parse_claims(&raw).inspect_err(|e| {
            if let Error::InvalidInput(reason) = e {
                log::warn(&format!("rejected body: {reason}"));
            }
        })?;
        let events = claims
            .iter()
            .map(|claim| Event::new(&claim.claim_id, EVENT_KIND, SOURCE, claim))
            .collect::<Result<Vec<_>, _>>()?;
        log::info(&format!("accepted {} claim(s)", events.len()));
        Ok(events)
    }

    fn execute(action: Action) -> Result<String, Error> {
        let endpoint = config::get("endpoint").ok_or_else(|| {
            Error::InvalidInput(
                "config key \"endpoint\" is not set; add it under [config] in the manifest".into(),
            )
        })?;
        let url = Url::parse(&endpoint)
            .map_err(|e| Error::InvalidInput(format!("config key \"endpoint\": {e}")))?;
        let payload: Value = serde_json::from_str(&action.payload)
            .map_err(|e| Error::InvalidInput(format!("action payload is not valid JSON: {e}")))?;
        let body = json::to_string(&serde_json::json!({
            "kind": action.kind,
            "event_id": action.event_id,
            "payload": payload,
            "rationale": action.rationale,
        }))?;
        let idempotency_key = format!("{}/{}", action.event_id, action.kind);
        let headers = [
            ("content-type", "application/json"),
            ("accept", "application/json, text/plain;q=0.9, */*;q=0.1"),
            ("idempotency-key", idempotency_key.as_str()),
        ];

        match http_client::send(Method::Post, &url, &headers, body.as_bytes()) {
            Ok(response) if response.is_success() => {
                log::info(&format!(
                    "{} for event {} delivered: HTTP {}",
                    action.kind, action.event_id, response.status
                ));
                Ok(format!(
                    "HTTP {}: {}",
                    response.status,
                    response.body_preview(RESPONSE_PREVIEW_CHARS)
                ))
            }
            Ok(response) => {
                log::warn(&format!(
                    "{} for event {} refused downstream: HTTP {}",
                    action.kind, action.event_id, response.status
                ));
                Err(Error::Upstream(format!(
                    "HTTP {} from {url}: {}",
                    response.status,
                    response.body_preview(RESPONSE_PREVIEW_CHARS)
                )))
            }
            Err(e) => {
                log::warn(&format!(
                    "{} for event {} not delivered: {e}",
                    action.kind, action.event_id
                ));
                Err(match e {
                    HttpError::Denied(m) => Error::Denied(format!("POST {url}: {m}")),
                    HttpError::InvalidRequest(m) => Error::InvalidInput(format!("POST {url}: {m}")),
                    HttpError::Transport(m) => Error::Upstream(format!("POST {url}: {m}")),
                })
            }
        }
    }
}

evos_sdk::export_connector!(ClaimsWebhook);

/// Accept `application/json` with optional parameters (`; charset=utf-8`).
fn check_content_type(content_type: &str) -> Result<(), Error> {
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if media_type.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "content type {content_type:?} is not supported; send application/json"
        )))
    }
}

/// Parse and validate every claim in a webhook body.
fn parse_claims(raw: &[u8]) -> Result<Vec<Claim>, Error> {
    let body: Value = serde_json::from_slice(raw)
        .map_err(|e| Error::InvalidInput(format!("body is not valid JSON: {e}")))?;
    let items: Vec<Value> = match body {
        Value::Array(items) => items,
        Value::Object(mut object)
            if object.contains_key("claims") && !object.contains_key("claim_id") =>
        {
            match object.remove("claims") {
                Some(Value::Array(items)) => items,
                Some(other) => {
                    return Err(Error::InvalidInput(format!(
                        "\"claims\" must be an array of claim objects, got {}",
                        type_name(&other)
                    )));
                }
                None => Vec::new(),
            }
        }
        single @ Value::Object(_) => vec![single],
        other => {
            return Err(Error::InvalidInput(format!(
                "body must be a claim object, an array of claims or {{\"claims\": [...]}}, got {}",
                type_name(&other)
            )));
        }
    };
    if items.is_empty() {
        return Err(Error::InvalidInput("body contains no claims".into()));
    }
    if items.len() > MAX_CLAIMS {
        return Err(Error::InvalidInput(format!(
            "body contains {} claims; at most {MAX_CLAIMS} are accepted per request",
            items.len()
        )));
    }

    let mut claims = Vec::with_capacity(items.len());
    let mut problems = Vec::new();
    let mut first_index: HashMap<String, usize> = HashMap::new();
    for (index, item) in items.iter().enumerate() {
        match validate_claim(item) {
            Ok(claim) => {
                if let Some(first) = first_index.get(&claim.claim_id) {
                    problems.push(format!(
                        "claims[{index}] ({}): claim_id duplicates claims[{first}]",
                        claim.claim_id
                    ));
                } else {
                    first_index.insert(claim.claim_id.clone(), index);
                    claims.push(claim);
                }
            }
            Err(field_problems) => {
                let label = match item.get("claim_id").and_then(Value::as_str).map(str::trim) {
                    Some(id) if !id.is_empty() => format!("claims[{index}] ({})", shorten(id)),
                    _ => format!("claims[{index}]"),
                };
                problems.extend(field_problems.into_iter().map(|p| format!("{label}: {p}")));
            }
        }
    }
    if problems.is_empty() {
        return Ok(claims);
    }
    let total = problems.len();
    problems.truncate(MAX_REPORTED_PROBLEMS);
    let mut message = problems.join("; ");
    if total > MAX_REPORTED_PROBLEMS {
        message.push_str(&format!(
            "; and {} more problem(s)",
            total - MAX_REPORTED_PROBLEMS
        ));
    }
    Err(Error::InvalidInput(message))
}

/// Validate one claim; on failure, every problem found (field and reason).
fn validate_claim(item: &Value) -> Result<Claim, Vec<String>> {
    let Value::Object(fields) = item else {
        return Err(vec![format!(
            "expected a claim object, got {}",
            type_name(item)
        )]);
    };
    let mut problems = Vec::new();
    let claim_id = required_text(fields, "claim_id", &mut problems);
    let claimant_id = required_text(fields, "claimant_id", &mut problems);
    let amount = match fields.get("amount") {
        None | Some(Value::Null) => {
            problems.push("amount is missing".to_string());
            None
        }
        Some(v) => match v.as_f64() {
            Some(a) if a.is_finite() && a > 0.0 => Some(a),
            _ => {
                problems.push(format!("amount must be a positive number, got {}", show(v)));
                None
            }
        },
    };
    let policy_number = required_text(fields, "policy_number", &mut problems).and_then(|p| {
        if is_policy_number(&p) {
            Some(p)
        } else {
            problems.push(format!(
                "policy_number must be POL- followed by digits, got {:?}",
                shorten(&p)
            ));
            None
        }
    });
    let incident = required_text(fields, "incident", &mut problems);
    let region = required_text(fields, "region", &mut problems);

    match (
        claim_id,
        claimant_id,
        amount,
        policy_number,
        incident,
        region,
    ) {
        (
            Some(claim_id),
            Some(claimant_id),
            Some(amount),
            Some(policy_number),
            Some(incident),
            Some(region),
        ) if problems.is_empty() => Ok(Claim {
            claim_id,
            claimant_id,
            amount,
            policy_number,
            incident,
            region,
        }),
        _ => Err(problems),
    }
}

/// A required non-empty string field, trimmed; records a problem otherwise.
fn required_text(
    fields: &Map<String, Value>,
    name: &str,
    problems: &mut Vec<String>,
) -> Option<String> {
    match fields.get(name) {
        None | Some(Value::Null) => {
            problems.push(format!("{name} is missing"));
            None
        }
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Some(Value::String(_)) => {
            problems.push(format!("{name} must not be empty"));
            None
        }
        Some(other) => {
            problems.push(format!(
                "{name} must be a non-empty string, got {}",
                show(other)
            ));
            None
        }
    }
}

/// `POL-` followed by one or more ASCII digits.
fn is_policy_number(s: &str) -> bool {
    s.strip_prefix("POL-")
        .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A short rendering of an offending value for an error message.
fn show(v: &Value) -> String {
    match v {
        Value::Array(_) | Value::Object(_) => type_name(v).to_string(),
        other => shorten(&other.to_string()),
    }
}

fn shorten(s: &str) -> String {
    const MAX: usize = 40;
    if s.chars().count() > MAX {
        s.chars().take(MAX).collect::<String>() + "..."
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(id: &str, amount: Value) -> Value {
        serde_json::json!({
            "claim_id": id, "claimant_id": "CL-7", "amount": amount,
            "policy_number": "POL-12345", "incident": "Hail damage to roof", "region": "north",
            "extra": true
        })
    }

    fn problems(body: Value) -> String {
        match parse_claims(body.to_string().as_bytes()) {
            Err(Error::InvalidInput(m)) => m,
            other => panic!("expected invalid input, got {other:?}"),
        }
    }

    #[test]
    fn accepts_all_three_shapes() {
        let one = claim("C-1", 250.into());
        assert_eq!(parse_claims(one.to_string().as_bytes()).unwrap().len(), 1);
        let list = Value::Array(vec![claim("C-1", 1.into()), claim("C-2", 2.5.into())]);
        assert_eq!(parse_claims(list.to_string().as_bytes()).unwrap().len(), 2);
        let wrapped = serde_json::json!({ "claims": [claim("C-3", 3.into())] });
        let claims = parse_claims(wrapped.to_string().as_bytes()).unwrap();
        assert_eq!(claims[0].claim_id, "C-3");
        assert_eq!(claims[0].policy_number, "POL-12345");
    }

    #[test]
    fn names_claim_field_and_problem() {
        let list = Value::Array(vec![claim("C-101", 1.into()), claim("C-102", (-5).into())]);
        assert_eq!(
            problems(list),
            "claims[1] (C-102): amount must be a positive number, got -5"
        );
        let mut bad = claim("C-9", 10.into());
        bad["policy_number"] = "12345".into();
        bad["region"] = "  ".into();
        bad.as_object_mut().unwrap().remove("claimant_id");
        let message = problems(bad);
        assert!(
            message.contains("claims[0] (C-9): claimant_id is missing"),
            "{message}"
        );
        assert!(
            message.contains("policy_number must be POL- followed by digits"),
            "{message}"
        );
        assert!(message.contains("region must not be empty"), "{message}");
        assert!(problems(serde_json::json!([])).contains("no claims"));
        assert!(problems(serde_json::json!({"claims": {}})).contains("must be an array"));
        assert!(
            problems(serde_json::json!([
                claim("C-1", 1.into()),
                claim("C-1", 2.into())
            ]))
            .contains("duplicates claims[0]")
        );
        assert!(problems(serde_json::json!([claim("C-1", "12".into())])).contains("got \"12\""));
    }

    #[test]
    fn content_type_parameters_are_allowed() {
        assert!(check_content_type("application/json").is_ok());
        assert!(check_content_type("Application/JSON; charset=utf-8").is_ok());
        assert!(check_content_type("text/plain").is_err());
        assert!(check_content_type("application/jsonx").is_err());
    }
}
