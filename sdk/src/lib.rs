//! # evos-sdk: write evos plugins in Rust
//!
//! An evos plugin is a WebAssembly component (target `wasm32-wasip2`) that
//! exports one of four worlds of the `evos:plugin` WIT package. With this crate
//! a plugin is **one struct, one trait impl and one export macro**:
//!
//! | kind          | trait            | macro                     |
//! |---------------|------------------|---------------------------|
//! | agent         | [`Agent`]        | [`export_agent!`]         |
//! | connector     | [`Connector`]    | [`export_connector!`]     |
//! | model-adapter | [`ModelAdapter`] | [`export_model_adapter!`] |
//! | policy        | [`Policy`]       | [`export_policy!`]        |
//!
//! The host interfaces live in [`log`], [`kv`], [`models`] and [`config`].
//! Each works only when the plugin's manifest grants it; a plugin that calls
//! an ungranted one is refused at deploy time (`evos check` says which line of
//! the manifest would grant it). Payloads are JSON: [`json`] parses them into
//! your own `serde` types with errors the host can show.
//!
//! Build with `cargo build --target wasm32-wasip2 --release`; the `.wasm` in
//! `target/wasm32-wasip2/release/` is the component.
//!
//! ## Agent
//!
//! ```no_run
//! use evos_sdk::{Action, Agent, Error, Event, json, models};
//!
//! #[derive(serde::Deserialize)]
//! struct Claim { claim_id: String, amount: f64 }
//!
//! struct Triage;
//!
//! impl Agent for Triage {
//!     fn handle(event: Event) -> Result<Vec<Action>, Error> {
//!         let claim: Claim = json::parse(&event.payload)?;
//!         let score = models::infer_json("fraud-score", &serde_json::json!({"amount": claim.amount}))?;
//!         let kind = if score.output.contains("\"fraud\"") { "flag-fraud" } else { "approve-payout" };
//!         Ok(vec![Action::new(kind, &event, &serde_json::json!({"claim_id": claim.claim_id}), "model score")?])
//!     }
//! }
//!
//! evos_sdk::export_agent!(Triage);
//! # fn main() {}
//! ```
//!
//! ## Connector
//!
//! ```no_run
//! use evos_sdk::{Action, Connector, Error, Event, json};
//!
//! #[derive(serde::Deserialize, serde::Serialize)]
//! struct Ticket { id: String, title: String }
//!
//! struct Tickets;
//!
//! impl Connector for Tickets {
//!     fn ingest(raw: Vec<u8>, _content_type: String) -> Result<Vec<Event>, Error> {
//!         let ticket: Ticket = json::parse_bytes(&raw)?;
//!         Ok(vec![Event::new(&ticket.id, "ticket.opened", "tickets", &ticket)?])
//!     }
//!     fn execute(action: Action) -> Result<String, Error> {
//!         // Reach the outside system with wasi:http (manifest: `http = [...]`).
//!         Ok(format!("executed {}", action.kind))
//!     }
//! }
//!
//! evos_sdk::export_connector!(Tickets);
//! # fn main() {}
//! ```
//!
//! ## Model adapter
//!
//! ```no_run
//! use evos_sdk::{Error, ModelAdapter, ModelRequest, ModelResponse, Usage, json};
//!
//! struct Length;
//!
//! impl ModelAdapter for Length {
//!     fn infer(request: ModelRequest) -> Result<ModelResponse, Error> {
//!         let text: String = json::parse(&request.input)?;
//!         Ok(ModelResponse {
//!             output: json::to_string(&text.len())?,
//!             model: "length@1.0.0".into(),
//!             usage: Usage { input_units: text.len() as u64, output_units: 1 },
//!         })
//!     }
//! }
//!
//! evos_sdk::export_model_adapter!(Length);
//! # fn main() {}
//! ```
//!
//! ## Policy
//!
//! ```no_run
//! use evos_sdk::{Action, Decision, Event, Policy, config};
//!
//! struct MaxAmount;
//!
//! impl Policy for MaxAmount {
//!     fn evaluate(action: Action, _event: Event) -> Decision {
//!         let limit: f64 = match config::get_parsed("limit") {
//!             Ok(limit) => limit,
//!             Err(e) => return Decision::Deny(format!("policy misconfigured: {e}")),
//!         };
//!         match evos_sdk::json::parse::<serde_json::Value>(&action.payload) {
//!             Ok(p) if p["amount"].as_f64().unwrap_or(f64::MAX) <= limit => Decision::Allow,
//!             Ok(_) => Decision::Escalate(format!("amount above {limit}")),
//!             Err(e) => Decision::Deny(e.to_string()),
//!         }
//!     }
//! }
//!
//! evos_sdk::export_policy!(MaxAmount);
//! # fn main() {}
//! ```

#[allow(unsafe_code, clippy::all)]
mod bindings {
    // Import side only: the `imports` world exports nothing, so linking it into
    // any plugin adds no export obligations, and wit-component drops whatever
    // host interface the plugin never calls.
    wit_bindgen::generate!({
        world: "evos:plugin/imports",
        path: "../wit",
        generate_all,
    });
}

pub use evos_sdk_macros::{export_agent, export_connector, export_model_adapter, export_policy};

pub use bindings::evos::plugin::types::{
    Action, Decision, Error, Event, ModelRequest, ModelResponse, Usage,
};

/// Implementation details used by the export macros.
#[doc(hidden)]
pub mod __rt {
    pub use crate::bindings::evos::plugin::{config, kv, log, models, types};
    pub use wit_bindgen;
}

/// An agent reacts to events by proposing actions.
pub trait Agent {
    /// Handle one event; return the actions to propose (possibly none).
    fn handle(event: Event) -> Result<Vec<Action>, Error>;
}

/// A connector turns outside data into events and carries approved actions out.
pub trait Connector {
    /// Parse raw outside data into events. Reject malformed input with
    /// [`Error::InvalidInput`] saying what is wrong.
    fn ingest(raw: Vec<u8>, content_type: String) -> Result<Vec<Event>, Error>;
    /// Carry out an approved action; return a short receipt.
    fn execute(action: Action) -> Result<String, Error>;
}

/// A model adapter answers inference requests and reports its usage.
pub trait ModelAdapter {
    fn infer(request: ModelRequest) -> Result<ModelResponse, Error>;
}

/// A policy decides whether a proposed action may be carried out.
pub trait Policy {
    fn evaluate(action: Action, event: Event) -> Decision;
}

impl Event {
    /// An event with a JSON payload serialized from `payload`.
    pub fn new(
        id: &str,
        kind: &str,
        source: &str,
        payload: &impl serde::Serialize,
    ) -> Result<Event, Error> {
        Ok(Event {
            id: id.to_string(),
            kind: kind.to_string(),
            source: source.to_string(),
            payload: json::to_string(payload)?,
            trace_id: String::new(),
        })
    }
}

impl Decision {
    /// One line for logs: `allow`, `deny: <reason>` or `escalate: <reason>`.
    pub fn summary(&self) -> String {
        match self {
            Decision::Allow => "allow".to_string(),
            Decision::Deny(reason) => format!("deny: {reason}"),
            Decision::Escalate(reason) => format!("escalate: {reason}"),
        }
    }
}

impl Action {
    /// An action answering `event`, with a JSON payload serialized from `payload`.
    pub fn new(
        kind: &str,
        event: &Event,
        payload: &impl serde::Serialize,
        rationale: &str,
    ) -> Result<Action, Error> {
        Ok(Action {
            kind: kind.to_string(),
            event_id: event.id.clone(),
            payload: json::to_string(payload)?,
            rationale: rationale.to_string(),
        })
    }
}

/// JSON payload helpers whose errors are [`Error`] values the host can report.
pub mod json {
    use crate::Error;

    /// Parse a JSON payload into `T`; a malformed payload becomes
    /// [`Error::InvalidInput`] naming the line, column and problem.
    pub fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, Error> {
        serde_json::from_str(text).map_err(|e| Error::InvalidInput(format!("payload: {e}")))
    }

    /// Like [`parse`], for raw bytes (e.g. a connector's input).
    pub fn parse_bytes<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
        serde_json::from_slice(bytes).map_err(|e| Error::InvalidInput(format!("payload: {e}")))
    }

    /// Serialize `value` as compact JSON.
    pub fn to_string(value: &impl serde::Serialize) -> Result<String, Error> {
        serde_json::to_string(value).map_err(|e| Error::Internal(format!("serialize: {e}")))
    }
}

/// Logging into the host's log (manifest: `log = true`).
pub mod log {
    use crate::bindings::evos::plugin::log::{Level, write};

    pub fn trace(message: &str) {
        write(Level::Trace, message)
    }
    pub fn debug(message: &str) {
        write(Level::Debug, message)
    }
    pub fn info(message: &str) {
        write(Level::Info, message)
    }
    pub fn warn(message: &str) {
        write(Level::Warn, message)
    }
    pub fn error(message: &str) {
        write(Level::Error, message)
    }
}

/// Per-plugin key-value state (manifest: `kv = { ... }`).
pub mod kv {
    use crate::Error;
    use crate::bindings::evos::plugin::kv as raw;
    pub use raw::KvError;

    impl From<KvError> for Error {
        fn from(e: KvError) -> Error {
            match e {
                KvError::QuotaExceeded(m) => Error::Denied(format!("kv quota exceeded: {m}")),
                KvError::InvalidKey(m) => Error::InvalidInput(format!("invalid kv key: {m}")),
                KvError::Internal(m) => Error::Internal(format!("kv failure: {m}")),
            }
        }
    }

    pub fn get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
        raw::get(key)
    }
    pub fn set(key: &str, value: &[u8]) -> Result<(), KvError> {
        raw::set(key, value)
    }
    pub fn delete(key: &str) -> Result<bool, KvError> {
        raw::delete(key)
    }
    pub fn list_keys(prefix: &str) -> Result<Vec<String>, KvError> {
        raw::list_keys(prefix)
    }

    /// The value under `key` parsed as JSON, if present.
    pub fn get_json<T: serde::de::DeserializeOwned>(key: &str) -> Result<Option<T>, Error> {
        match raw::get(key)? {
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::Internal(format!("kv value under {key:?} is not valid JSON: {e}"))
            }),
            None => Ok(None),
        }
    }

    /// Store `value` as JSON under `key`.
    pub fn set_json(key: &str, value: &impl serde::Serialize) -> Result<(), Error> {
        let bytes =
            serde_json::to_vec(value).map_err(|e| Error::Internal(format!("serialize: {e}")))?;
        Ok(raw::set(key, &bytes)?)
    }
}

/// Run named model adapters through the host (manifest: `models = [...]`).
pub mod models {
    use crate::{Error, ModelRequest, ModelResponse};

    /// Run `model` on a request.
    pub fn infer(model: &str, request: &ModelRequest) -> Result<ModelResponse, Error> {
        crate::bindings::evos::plugin::models::infer(model, request)
    }

    /// Run `model` with `input` serialized as JSON and no parameters.
    pub fn infer_json(model: &str, input: &impl serde::Serialize) -> Result<ModelResponse, Error> {
        let request = ModelRequest {
            input: crate::json::to_string(input)?,
            parameters: "{}".to_string(),
        };
        infer(model, &request)
    }
}

/// Configuration values granted by the manifest (`[config]`).
pub mod config {
    use crate::Error;

    /// The value of `key`, or `None` when the manifest does not set it.
    pub fn get(key: &str) -> Option<String> {
        crate::bindings::evos::plugin::config::get(key)
    }

    /// The value of `key` parsed with `FromStr`; a missing or unparsable value
    /// is an [`Error::InvalidInput`] naming the key.
    pub fn get_parsed<T>(key: &str) -> Result<T, Error>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
    {
        let raw = get(key).ok_or_else(|| {
            Error::InvalidInput(format!(
                "config key {key:?} is not set; add it under [config] in the manifest"
            ))
        })?;
        raw.parse()
            .map_err(|e| Error::InvalidInput(format!("config key {key:?} = {raw:?}: {e}")))
    }
}
