//! Conversions between the host's types ([`evos_core::types`]) and the
//! bindings generated from `wit/`: the one place that sees both.

use evos_core::types::{
    Action, Decision, Event, GuestError, ModelRequest, ModelResponse, Payload, Usage,
};
use serde_json::Value;

use crate::bindings::evos::plugin::types as wit;

/// JSON text for the guest.
fn to_text(v: &Value) -> String {
    v.to_string()
}

/// A guest's JSON text back into a value; text that is not JSON is kept as a
/// string so nothing is lost.
fn from_text(s: String) -> Value {
    serde_json::from_str(&s).unwrap_or(Value::String(s))
}

// Values passed to a guest borrow from ours (no copies before lowering
// into the guest's memory); values coming back are owned.

impl<'a> From<&'a Event> for wit::EventParam<'a> {
    fn from(e: &'a Event) -> Self {
        wit::EventParam {
            id: &e.id,
            kind: &e.kind,
            source: &e.source,
            payload: e.payload.text(),
            trace_id: &e.trace_id,
        }
    }
}

impl From<wit::EventResult> for Event {
    fn from(e: wit::EventResult) -> Self {
        Event {
            id: e.id,
            kind: e.kind,
            source: e.source,
            payload: Payload::from_guest(e.payload),
            trace_id: e.trace_id,
        }
    }
}

impl<'a> From<&'a Action> for wit::ActionParam<'a> {
    fn from(a: &'a Action) -> Self {
        wit::ActionParam {
            kind: &a.kind,
            event_id: &a.event_id,
            payload: a.payload.text(),
            rationale: &a.rationale,
        }
    }
}

impl From<wit::ActionResult> for Action {
    fn from(a: wit::ActionResult) -> Self {
        Action {
            kind: a.kind,
            event_id: a.event_id,
            payload: Payload::from_guest(a.payload),
            rationale: a.rationale,
        }
    }
}

impl From<wit::Decision> for Decision {
    fn from(d: wit::Decision) -> Self {
        match d {
            wit::Decision::Allow => Decision::Allow,
            wit::Decision::Deny(r) => Decision::Deny(r),
            wit::Decision::Escalate(r) => Decision::Escalate(r),
        }
    }
}

/// A model request's JSON texts, for [`wit::ModelRequestParam`].
pub(crate) fn request_texts(r: &ModelRequest) -> (String, String) {
    (to_text(&r.input), to_text(&r.parameters))
}

impl From<wit::ModelRequestResult> for ModelRequest {
    fn from(r: wit::ModelRequestResult) -> Self {
        ModelRequest {
            input: from_text(r.input),
            parameters: from_text(r.parameters),
        }
    }
}

impl From<wit::ModelResponse> for ModelResponse {
    fn from(r: wit::ModelResponse) -> Self {
        ModelResponse {
            output: from_text(r.output),
            model: r.model,
            usage: Usage {
                input_units: r.usage.input_units,
                output_units: r.usage.output_units,
            },
        }
    }
}

impl From<ModelResponse> for wit::ModelResponse {
    fn from(r: ModelResponse) -> Self {
        wit::ModelResponse {
            output: to_text(&r.output),
            model: r.model,
            usage: wit::Usage {
                input_units: r.usage.input_units,
                output_units: r.usage.output_units,
            },
        }
    }
}

impl From<wit::Error> for GuestError {
    fn from(e: wit::Error) -> Self {
        match e {
            wit::Error::InvalidInput(m) => GuestError::InvalidInput(m),
            wit::Error::Denied(m) => GuestError::Denied(m),
            wit::Error::NotFound(m) => GuestError::NotFound(m),
            wit::Error::Upstream(m) => GuestError::Upstream(m),
            wit::Error::Internal(m) => GuestError::Internal(m),
        }
    }
}
