//! The data that flows through evos, as the host's public API sees it.
//!
//! These mirror the WIT types in `wit/types.wit`, with JSON payloads held as
//! [`Payload`] (a shared `serde_json::Value` that dereferences to the value)
//! so callers never juggle JSON-in-strings. Conversions to and from the
//! generated bindings live in the runtime crate (`convert`), the one place
//! that sees them.

use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A JSON payload of an event or action. Cloning shares it, and its JSON
/// text for guests is produced once however many plugins it is passed to
/// (a guest's own text is kept as it was received).
#[derive(Clone, Default)]
pub struct Payload(Arc<PayloadInner>);

#[derive(Default)]
struct PayloadInner {
    value: Value,
    text: OnceLock<String>,
}

impl Payload {
    pub fn new(value: Value) -> Payload {
        Payload(Arc::new(PayloadInner {
            value,
            text: OnceLock::new(),
        }))
    }

    pub fn value(&self) -> &Value {
        &self.0.value
    }

    /// The payload as JSON text.
    pub fn text(&self) -> &str {
        self.0.text.get_or_init(|| self.0.value.to_string())
    }

    /// A guest's JSON text; text that is not JSON is kept as a string so
    /// nothing is lost.
    pub fn from_guest(text: String) -> Payload {
        match serde_json::from_str(&text) {
            Ok(value) => Payload(Arc::new(PayloadInner {
                value,
                text: OnceLock::from(text),
            })),
            Err(_) => Payload::new(Value::String(text)),
        }
    }
}

impl std::ops::Deref for Payload {
    type Target = Value;
    fn deref(&self) -> &Value {
        &self.0.value
    }
}

impl From<Value> for Payload {
    fn from(value: Value) -> Payload {
        Payload::new(value)
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Payload) -> bool {
        self.0.value == other.0.value
    }
}

impl PartialEq<Value> for Payload {
    fn eq(&self, other: &Value) -> bool {
        &self.0.value == other
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.value.fmt(f)
    }
}

impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.value.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Payload, D::Error> {
        Value::deserialize(d).map(Payload::new)
    }
}

/// A normalized fact produced by a connector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub id: String,
    pub kind: String,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub payload: Payload,
    #[serde(default)]
    pub trace_id: String,
}

/// Something an agent proposes to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    pub kind: String,
    #[serde(default)]
    pub event_id: String,
    #[serde(default)]
    pub payload: Payload,
    #[serde(default)]
    pub rationale: String,
}

/// A policy's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", content = "reason", rename_all = "kebab-case")]
pub enum Decision {
    Allow,
    Deny(String),
    Escalate(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRequest {
    pub input: Value,
    #[serde(default = "empty_object")]
    pub parameters: Value,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    pub input_units: u64,
    pub output_units: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelResponse {
    pub output: Value,
    pub model: String,
    pub usage: Usage,
}

/// An error a plugin returned (an answer, not a crash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", content = "message", rename_all = "kebab-case")]
pub enum GuestError {
    InvalidInput(String),
    Denied(String),
    NotFound(String),
    Upstream(String),
    Internal(String),
}

impl std::fmt::Display for GuestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GuestError::InvalidInput(m) => write!(f, "invalid input: {m}"),
            GuestError::Denied(m) => write!(f, "denied: {m}"),
            GuestError::NotFound(m) => write!(f, "not found: {m}"),
            GuestError::Upstream(m) => write!(f, "upstream: {m}"),
            GuestError::Internal(m) => write!(f, "internal: {m}"),
        }
    }
}
