//! Sampled recording of pipeline traffic, redacted before it is stored.
//!
//! The app file's `[recording]` table says which events are kept:
//!
//! ```toml
//! [recording]
//! sample = { claims-webhook = 0.1 }   # share of each connector's events ("*": any connector)
//! escalated = true                    # every event with an escalated action
//! failed = true                       # every event with a failed step or action
//! redact = ["/payload/claimant_id"]   # JSON paths replaced whole (see below)
//! retention = "30d"                   # recordings older than this are pruned
//! max-rows = 100000                   # at most this many recorded events
//! ```
//!
//! A recorded event keeps every call on its path (the agent, the model
//! calls it made, each policy, the execute call) with the plugin, version,
//! digest, input, output, outcome, fuel and time, under the event's trace
//! id: the input [`crate::replay`] runs against a candidate.
//!
//! Nothing is written before it is redacted ([`crate::redact`]): the
//! built-in detectors run over every input, output and error, and the
//! `redact` paths apply to each event, action and model request in the
//! recording (an event's `/payload/claimant_id`, a model request's
//! `/input/policy_number`). Redaction happens in memory on the event's own
//! task; the store sees only the redacted rows.
//!
//! Sampling is by the event id (FNV-1a), so every node that sees an event
//! makes the same choice, and a replayed event is recorded again or not
//! alike. Pruning ([`prune`]) deletes what is past `retention` or beyond
//! `max-rows`, oldest first, and audits what it removed.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::pipeline::{Disposition, EventReport};
use crate::redact::{Redactions, Redactor};
use crate::runtime::{CallInput, CallOutput, CallReport};
use crate::store::{NewRecording, RecordedCall, StateStore};
use crate::{Error, Result};

/// The `[recording]` table of an app file, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawRecording {
    #[serde(default)]
    sample: BTreeMap<String, f64>,
    #[serde(default)]
    escalated: bool,
    #[serde(default)]
    failed: bool,
    #[serde(default)]
    redact: Vec<String>,
    retention: Option<String>,
    max_rows: Option<u64>,
}

/// Which events are recorded and how long they are kept.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordingConfig {
    /// Share of events per connector; `*` for connectors not named.
    pub sample: BTreeMap<String, f64>,
    /// Record every event with an escalated action.
    pub escalated: bool,
    /// Record every event with a failed step or action.
    pub failed: bool,
    /// JSON paths redacted whole in events, actions and model requests.
    pub redact: Vec<String>,
    /// Recordings older than this are pruned.
    #[serde(with = "humantime_serde_opt")]
    pub retention: Option<Duration>,
    /// At most this many recorded events are kept.
    pub max_rows: Option<u64>,
}

mod humantime_serde_opt {
    pub fn serialize<S: serde::Serializer>(
        d: &Option<std::time::Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }
}

/// Retention when the table sets none: recorded payloads are not kept
/// forever by default.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

impl RawRecording {
    /// Check the table against the app's connectors; messages name the key
    /// to fix.
    pub fn validate(self, connectors: &[&str]) -> std::result::Result<RecordingConfig, String> {
        for (connector, share) in &self.sample {
            if connector != "*" && !connectors.contains(&connector.as_str()) {
                return Err(format!(
                    "[recording] sample names `{connector}`, which is not a connector of this app (connectors: {}); use a connector's name or \"*\"",
                    connectors.join(", ")
                ));
            }
            if !share.is_finite() || !(0.0..=1.0).contains(share) {
                return Err(format!(
                    "[recording] sample.{connector} = {share}: give a share between 0 and 1 (0.1 records one event in ten)"
                ));
            }
        }
        Redactor::new(&[0; 16], &self.redact).map_err(|e| format!("[recording] redact: {e}"))?;
        let retention = match &self.retention {
            Some(text) => {
                let d = humantime::parse_duration(text).map_err(|e| {
                    format!("[recording] retention = {text:?}: {e}; write a duration such as \"30d\" or \"12h\"")
                })?;
                if d.is_zero() {
                    return Err("[recording] retention must be longer than 0s".into());
                }
                Some(d)
            }
            None => Some(DEFAULT_RETENTION),
        };
        if self.max_rows == Some(0) {
            return Err(
                "[recording] max-rows = 0 would keep nothing; leave it out, or give at least 1"
                    .into(),
            );
        }
        Ok(RecordingConfig {
            sample: self.sample,
            escalated: self.escalated,
            failed: self.failed,
            redact: self.redact,
            retention,
            max_rows: self.max_rows,
        })
    }
}

impl RecordingConfig {
    /// Whether anything is ever recorded.
    pub fn records_anything(&self) -> bool {
        self.escalated || self.failed || self.sample.values().any(|s| *s > 0.0)
    }
}

/// Records events as the config says, redacting with the host's key.
#[derive(Debug)]
pub struct Recorder {
    config: RecordingConfig,
    redactor: Redactor,
}

/// Why an event was recorded.
pub const SAMPLED: &str = "sampled";
pub const ESCALATED: &str = "escalated";
pub const FAILED: &str = "failed";

impl Recorder {
    /// A recorder for `config` with the host's redaction `key`
    /// ([`crate::redact::host_key`]).
    pub fn new(config: RecordingConfig, key: &[u8]) -> Result<Recorder> {
        let redactor = Redactor::new(key, &config.redact).map_err(|message| Error::App {
            path: String::new(),
            message: format!("[recording] {message}"),
        })?;
        Ok(Recorder { config, redactor })
    }

    pub fn config(&self) -> &RecordingConfig {
        &self.config
    }

    /// Whether `event_id` from `connector` falls in the sampled share.
    pub fn sampled(&self, connector: &str, event_id: &str) -> bool {
        let share = self
            .config
            .sample
            .get(connector)
            .or_else(|| self.config.sample.get("*"))
            .copied()
            .unwrap_or(0.0);
        if share <= 0.0 {
            return false;
        }
        // 1e6 buckets: shares to a millionth.
        let bucket = fnv1a(event_id.as_bytes()) % 1_000_000;
        (bucket as f64) < share * 1_000_000.0
    }

    /// A tape for one event from `connector`, when the event may be
    /// recorded (sampled, or the config keeps escalated or failed events,
    /// which are known only at the end).
    pub fn tape(&self, connector: &str, event_id: &str) -> Option<Tape> {
        let sampled = self.sampled(connector, event_id);
        (sampled || self.config.escalated || self.config.failed).then(|| Tape {
            sampled,
            calls: Mutex::new(Vec::new()),
        })
    }

    /// Why the event is recorded, or `None` when it is not.
    fn reason(&self, tape: &Tape, report: &EventReport) -> Option<&'static str> {
        if tape.sampled {
            return Some(SAMPLED);
        }
        let escalated = report
            .actions
            .iter()
            .any(|a| matches!(a.disposition, Disposition::Escalated { .. }));
        if self.config.escalated && escalated {
            return Some(ESCALATED);
        }
        let failed = report.agents.iter().any(|s| s.outcome != "ok")
            || report.actions.iter().any(|a| {
                matches!(a.disposition, Disposition::Failed { .. })
                    || a.policies.iter().any(|p| p.step.outcome != "ok")
            });
        (self.config.failed && failed).then_some(FAILED)
    }

    /// The redacted recording of an event, or `None` when it is not
    /// recorded.
    pub fn finish(
        &self,
        tape: Tape,
        connector: &str,
        report: &EventReport,
    ) -> Option<NewRecording> {
        let reason = self.reason(&tape, report)?;
        let mut calls = tape.calls.into_inner().unwrap_or_else(|e| e.into_inner());
        let mut redactions = Redactions::new();
        for call in &mut calls {
            self.redact_paths(call, &mut redactions);
        }
        // The event reaches every call on its path: each distinct string
        // is examined once.
        let mut values: Vec<&mut Value> = calls
            .iter_mut()
            .flat_map(|c| [&mut c.input, &mut c.output])
            .collect();
        self.redactor
            .redact_detected_all(&mut values, &mut redactions);
        for call in &mut calls {
            if let Some(error) = &call.error {
                call.error = Some(self.redact_text(error, &mut redactions));
            }
        }
        Some(NewRecording {
            trace_id: report.event.trace_id.clone(),
            event_id: self.redact_text(&report.event.id, &mut redactions),
            event_kind: report.event.kind.clone(),
            connector: connector.to_string(),
            reason: reason.to_string(),
            redactions: redactions
                .into_iter()
                .map(|(k, n)| (k.to_string(), n))
                .collect(),
            calls,
        })
    }

    fn redact_text(&self, text: &str, found: &mut Redactions) -> String {
        let mut v = Value::String(text.to_string());
        self.redactor.redact_detected(&mut v, found);
        match v {
            Value::String(s) => s,
            other => other.to_string(),
        }
    }

    /// The configured paths in each event, action and model request of a
    /// call.
    fn redact_paths(&self, call: &mut RecordedCall, found: &mut Redactions) {
        let documents: Vec<&mut Value> = match call.step.as_str() {
            "policy" => match &mut call.input {
                Value::Object(m) => m.values_mut().collect(),
                _ => Vec::new(),
            },
            "execute" => call.input.get_mut("execute").into_iter().collect(),
            _ => vec![&mut call.input],
        };
        for d in documents {
            self.redactor.redact_paths(d, found);
        }
        if let Some(actions) = call.output.get_mut("actions").and_then(Value::as_array_mut) {
            for a in actions {
                self.redactor.redact_paths(a, found);
            }
        }
    }
}

/// The calls of one event, kept while it runs.
pub struct Tape {
    sampled: bool,
    calls: Mutex<Vec<RecordedCall>>,
}

impl Tape {
    /// Keep `report` (and the model calls it made) as the event's `step`,
    /// for the action at `action_index` when it concerns one. The report's
    /// input is moved into the tape.
    pub fn keep(&self, step: &str, action_index: Option<usize>, report: &mut CallReport) {
        let mut kept = Vec::with_capacity(1 + report.nested.len());
        kept.push(recorded(step, action_index, report));
        for nested in &mut report.nested {
            kept.push(recorded("model", action_index, nested));
        }
        evos_core::sync::lock(&self.calls).extend(kept);
    }
}

fn recorded(step: &str, action_index: Option<usize>, report: &mut CallReport) -> RecordedCall {
    let input = report
        .input
        .take()
        .as_ref()
        .map_or(Value::Null, CallInput::to_json);
    let output = report
        .output
        .as_ref()
        .and_then(|o| serde_json::to_value(o).ok())
        .unwrap_or(Value::Null);
    RecordedCall {
        step: step.to_string(),
        action_index,
        plugin: report.plugin.to_string(),
        kind: report.kind.to_string(),
        version: report.version.to_string(),
        digest: report.digest.to_string(),
        input,
        output,
        outcome: report.outcome.name().to_string(),
        error: (!report.outcome.is_ok()).then(|| report.outcome.summary()),
        duration_us: report.duration_us,
        fuel: report.fuel_consumed,
    }
}

/// The recorded output of a call as an answer [`crate::compare`] reads.
pub fn answer_of(call: &RecordedCall) -> crate::compare::Answer {
    use crate::runtime::Outcome;
    let outcome = if call.outcome == "ok" {
        Outcome::Ok
    } else {
        Outcome::Trap {
            message: call.error.clone().unwrap_or_else(|| call.outcome.clone()),
        }
    };
    crate::compare::Answer {
        output: serde_json::from_value::<CallOutput>(call.output.clone()).ok(),
        outcome,
    }
}

/// What one pruning pass removed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Pruned {
    /// Recorded events removed for their age.
    pub expired: u64,
    /// Recorded events removed beyond `max-rows`.
    pub over_limit: u64,
    /// Recorded events kept.
    pub kept: u64,
}

/// Delete the recordings `config` no longer keeps (older than its
/// retention, the oldest beyond `max-rows`), audited as `recording-prune`
/// by `actor` when anything was removed.
pub fn prune(store: &dyn StateStore, config: &RecordingConfig, actor: &str) -> Result<Pruned> {
    let before = config.retention.and_then(|r| {
        std::time::SystemTime::now()
            .checked_sub(r)
            .map(|t| humantime::format_rfc3339_micros(t).to_string())
    });
    store.prune_recordings(before.as_deref(), config.max_rows, actor)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> std::result::Result<RecordingConfig, String> {
        let raw: RawRecording = toml::from_str(text).map_err(|e| e.to_string())?;
        raw.validate(&["webhook"])
    }

    #[test]
    fn the_table_is_checked_with_messages_that_name_the_fix() {
        let ok = config("sample = { webhook = 0.25 }\nescalated = true\nretention = \"7d\"\nmax-rows = 10\nredact = [\"/payload/id\"]").unwrap();
        assert_eq!(ok.retention, Some(Duration::from_secs(7 * 86400)));
        assert_eq!(ok.max_rows, Some(10));
        assert!(ok.records_anything());
        // Retention defaults to 30 days: payloads are not kept forever.
        assert_eq!(config("").unwrap().retention, Some(DEFAULT_RETENTION));
        assert!(!config("").unwrap().records_anything());
        let e = config("sample = { nobody = 0.1 }").unwrap_err();
        assert!(
            e.contains("`nobody`") && e.contains("connectors: webhook"),
            "{e}"
        );
        let e = config("sample = { webhook = 1.5 }").unwrap_err();
        assert!(e.contains("between 0 and 1"), "{e}");
        let e = config("retention = \"soon\"").unwrap_err();
        assert!(e.contains("\"30d\""), "{e}");
        let e = config("redact = [\"payload.id\"]").unwrap_err();
        assert!(e.contains("JSON pointer"), "{e}");
        let e = config("max-rows = 0").unwrap_err();
        assert!(e.contains("max-rows"), "{e}");
        let e = config("sampel = {}").unwrap_err();
        assert!(e.contains("sampel"), "{e}");
    }

    #[test]
    fn sampling_is_by_event_id_and_close_to_the_share() {
        let recorder = Recorder::new(
            config("sample = { webhook = 0.1, \"*\" = 1.0 }").unwrap(),
            &[7; 32],
        )
        .unwrap();
        let ids: Vec<String> = (0..20_000).map(|i| format!("claim-{i}")).collect();
        let hits = ids
            .iter()
            .filter(|id| recorder.sampled("webhook", id))
            .count();
        assert!((1_700..2_300).contains(&hits), "{hits} of 20000 at 0.1");
        // The same id always gets the same answer.
        for id in ids.iter().take(100) {
            assert_eq!(
                recorder.sampled("webhook", id),
                recorder.sampled("webhook", id)
            );
        }
        // `*` covers connectors not named.
        assert!(ids.iter().all(|id| recorder.sampled("other", id)));
    }
}
