//! One call as every layer sees it: its input by kind, how it ended
//! ([`Outcome`]), what it returned and the report the host keeps of it.
//! The sandbox produces these; the control plane, the server and the CLI
//! read them.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::types::{Action, Decision, Event, GuestError, ModelRequest, ModelResponse};

/// The four plugin worlds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Connector,
    ModelAdapter,
    Policy,
    Agent,
}

impl Kind {
    /// The versioned export interface a component of this kind must have.
    pub fn export_interface(self) -> &'static str {
        match self {
            Kind::Connector => "evos:plugin/connector-api@0.1.0",
            Kind::ModelAdapter => "evos:plugin/model-adapter-api@0.1.0",
            Kind::Policy => "evos:plugin/policy-api@0.1.0",
            Kind::Agent => "evos:plugin/agent-api@0.1.0",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Connector => "connector",
            Kind::ModelAdapter => "model-adapter",
            Kind::Policy => "policy",
            Kind::Agent => "agent",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line a plugin logged (or wrote to stdout/stderr).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LogLine {
    pub level: &'static str,
    pub message: String,
}

/// The input of one call, by kind.
#[derive(Debug, Clone, PartialEq)]
pub enum CallInput {
    /// connector `ingest`
    Ingest { body: Vec<u8>, content_type: String },
    /// connector `execute`
    Execute(Action),
    /// model-adapter `infer`
    Infer(ModelRequest),
    /// policy `evaluate`
    Evaluate { action: Action, event: Event },
    /// agent `handle`
    Handle(Event),
}

/// Where a call input's JSON comes from.
enum Source<'a> {
    Value(Value),
    Text(&'a [u8]),
}

impl Source<'_> {
    fn parse<T: serde::de::DeserializeOwned>(self, what: &str) -> std::result::Result<T, String> {
        match self {
            Source::Value(v) => {
                serde_json::from_value(v).map_err(|e| format!("expected {what}: {e}"))
            }
            Source::Text(t) => serde_json::from_slice(t).map_err(|e| match e.classify() {
                serde_json::error::Category::Data => format!("expected {what}: {e}"),
                _ => format!("malformed JSON: {e}"),
            }),
        }
    }
}

impl CallInput {
    /// Build a call input from JSON, by kind:
    ///
    /// | kind          | JSON                                                            |
    /// |---------------|-----------------------------------------------------------------|
    /// | agent         | an event: `{"id", "kind", "source", "payload": <json>, "trace_id"}` |
    /// | connector     | ingest: `{"content_type": "application/json", "body": <json or string>}`; execute: `{"execute": <action>}` |
    /// | model-adapter | `{"input": <json>, "parameters": <json>}`                        |
    /// | policy        | `{"action": {"kind", "event_id", "payload", "rationale"}, "event": <event>}` |
    pub fn from_json(kind: Kind, value: Value) -> std::result::Result<CallInput, String> {
        CallInput::parse(kind, Source::Value(value))
    }

    /// [`CallInput::from_json`] straight from JSON text, without building
    /// the whole document as a `Value` first. Errors say whether the text
    /// is not JSON at all or does not have the kind's shape.
    pub fn from_json_slice(kind: Kind, text: &[u8]) -> std::result::Result<CallInput, String> {
        CallInput::parse(kind, Source::Text(text))
    }

    fn parse(kind: Kind, source: Source<'_>) -> std::result::Result<CallInput, String> {
        match kind {
            Kind::Agent => Ok(CallInput::Handle(source.parse("an event object")?)),
            Kind::ModelAdapter => Ok(CallInput::Infer(
                source.parse("{\"input\": ..., \"parameters\": {...}}")?,
            )),
            Kind::Policy => {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct P {
                    action: Action,
                    event: Event,
                }
                let p: P = source.parse("{\"action\": {...}, \"event\": {...}}")?;
                Ok(CallInput::Evaluate {
                    action: p.action,
                    event: p.event,
                })
            }
            Kind::Connector => {
                let value: Value = source.parse("a JSON object")?;
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Ingest {
                    content_type: String,
                    body: Value,
                }
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Execute {
                    execute: Action,
                }
                if value.get("execute").is_some() {
                    let e: Execute = Source::Value(value).parse("{\"execute\": <action>}")?;
                    return Ok(CallInput::Execute(e.execute));
                }
                let i: Ingest = Source::Value(value).parse(
                    "{\"content_type\": \"application/json\", \"body\": ...} or {\"execute\": <action>}",
                )?;
                let body = match i.body {
                    Value::String(s) => s.into_bytes(),
                    other => other.to_string().into_bytes(),
                };
                Ok(CallInput::Ingest {
                    body,
                    content_type: i.content_type,
                })
            }
        }
    }

    /// The input as JSON in the shape [`CallInput::from_json`] reads back
    /// (an ingest body that is not UTF-8 is kept lossily).
    pub fn to_json(&self) -> Value {
        match self {
            CallInput::Ingest { body, content_type } => serde_json::json!({
                "content_type": content_type,
                "body": String::from_utf8_lossy(body),
            }),
            CallInput::Execute(action) => serde_json::json!({ "execute": action }),
            CallInput::Infer(request) => serde_json::to_value(request).unwrap_or(Value::Null),
            CallInput::Evaluate { action, event } => {
                serde_json::json!({ "action": action, "event": event })
            }
            CallInput::Handle(event) => serde_json::to_value(event).unwrap_or(Value::Null),
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            CallInput::Ingest { .. } | CallInput::Execute(_) => Kind::Connector,
            CallInput::Infer(_) => Kind::ModelAdapter,
            CallInput::Evaluate { .. } => Kind::Policy,
            CallInput::Handle(_) => Kind::Agent,
        }
    }
}

/// What a successful (or guest-error) call returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallOutput {
    Events(Vec<Event>),
    Receipt(String),
    Model(ModelResponse),
    Decision(Decision),
    Actions(Vec<Action>),
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// The export returned a value.
    Ok,
    /// The export returned its WIT `error`.
    GuestError { error: GuestError },
    /// The call burned its fuel budget.
    OutOfFuel,
    /// The call exceeded its wall-clock limit.
    Timeout,
    /// The instance asked for more memory than its manifest allows.
    OutOfMemory { detail: String },
    /// The guest's wasm stack overflowed.
    StackOverflow,
    /// Any other trap (unreachable, bad memory access, a panic, ...).
    Trap { message: String },
    /// The guest used a capability in a way that was refused (an URL outside
    /// the allowlist, a quota, ...); see `refusals` for every instance.
    Denied { capability: String, reason: String },
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok)
    }

    /// The outcome's name, e.g. `out-of-fuel`.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::GuestError { .. } => "guest-error",
            Outcome::OutOfFuel => "out-of-fuel",
            Outcome::Timeout => "timeout",
            Outcome::OutOfMemory { .. } => "out-of-memory",
            Outcome::StackOverflow => "stack-overflow",
            Outcome::Trap { .. } => "trap",
            Outcome::Denied { .. } => "denied",
        }
    }

    /// One line for people.
    pub fn summary(&self) -> String {
        match self {
            Outcome::GuestError { error } => format!("guest-error: {error}"),
            Outcome::OutOfMemory { detail } => format!("out-of-memory: {detail}"),
            Outcome::Trap { message } => format!("trap: {message}"),
            Outcome::Denied { capability, reason } => format!("denied ({capability}): {reason}"),
            other => other.name().to_string(),
        }
    }
}

/// A refused use of a capability during a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    pub capability: String,
    pub detail: String,
    /// How many times this (or, for the last entry, a later) refusal occurred.
    pub count: u64,
}

/// Everything about one call.
#[derive(Debug, Clone, Serialize)]
pub struct CallReport {
    pub plugin: Arc<str>,
    pub version: Arc<str>,
    pub digest: Arc<str>,
    pub kind: Kind,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub output: Option<CallOutput>,
    pub fuel_consumed: u64,
    pub duration_us: u64,
    /// Guest wasm frames, innermost first, demangled, for trap outcomes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backtrace: Vec<String>,
    pub refusals: Vec<Refusal>,
    pub logs: Vec<LogLine>,
    /// Lines in `logs` not written to the host log: the plugin logs faster
    /// than its `log` grant's `lines-per-second`.
    #[serde(skip_serializing_if = "is_zero")]
    pub log_lines_suppressed: u64,
    /// Calls this call made through the host (e.g. model adapters).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nested: Vec<CallReport>,
    /// Effects a shadow call attempted and the host suppressed (outgoing
    /// requests and connections); always empty for live calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suppressed: Vec<Refusal>,
    /// The input the call was made with (moved in after the call, not
    /// copied): what recorded traffic keeps and replays. Never serialized,
    /// so reports and logs do not carry payloads.
    #[serde(skip)]
    pub input: Option<CallInput>,
    /// When the call started, in microseconds since the Unix epoch (what a
    /// trace export places its span at). Not serialized.
    #[serde(skip)]
    pub started_us: u64,
}

/// Microseconds since the Unix epoch, now.
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
