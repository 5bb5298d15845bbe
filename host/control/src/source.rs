//! Event sources: where a connector's input comes from besides
//! `POST /v1/ingest/<connector>`. The app file names a NATS JetStream
//! stream per connector:
//!
//! ```toml
//! [sources.claims-webhook]          # the connector that ingests the messages
//! url = "nats://127.0.0.1:4222"     # credentials: EVOS_NATS_USER/EVOS_NATS_PASSWORD or EVOS_NATS_TOKEN
//! stream = "CLAIMS"                 # created with `subject` when missing
//! subject = "claims.>"
//! consumer = "evos"                 # the durable pull consumer every node shares
//! max-deliver = 5                   # deliveries before a message becomes a dead letter
//! ack-wait = "30s"                  # redelivered when not acknowledged by then
//! backoff = ["1s", "5s", "30s"]     # delay before the 1st, 2nd, 3rd+ retry of a failure
//! in-flight = 64                    # messages this node handles at once
//! content-type = "application/json"
//! dedupe-window = "7d"              # how long an event stays marked processed
//! ```
//!
//! Each message goes through the pipeline and is acknowledged only after
//! its events' audit entries committed; each event is marked processed in
//! the same transaction, so a redelivered message never repeats an event's
//! effects. A failure is retried after `backoff`; a message whose
//! connector cannot read it, or that failed `max-deliver` times, is kept as
//! a dead letter with an audit entry and not delivered again. The consumer
//! itself runs in the server (`evos up`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::manifest::PluginName;

/// A source as written in the app file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawSource {
    url: String,
    stream: String,
    subject: String,
    #[serde(default = "default_consumer")]
    consumer: String,
    #[serde(default = "default_max_deliver")]
    max_deliver: u32,
    #[serde(default = "default_ack_wait")]
    ack_wait: String,
    #[serde(default = "default_backoff")]
    backoff: Vec<String>,
    #[serde(default = "default_in_flight")]
    in_flight: usize,
    #[serde(default = "default_content_type")]
    content_type: String,
    #[serde(default = "default_dedupe_window")]
    dedupe_window: String,
}

fn default_dedupe_window() -> String {
    "7d".into()
}

fn default_consumer() -> String {
    "evos".into()
}
fn default_max_deliver() -> u32 {
    5
}
fn default_ack_wait() -> String {
    "30s".into()
}
fn default_backoff() -> Vec<String> {
    vec!["1s".into(), "5s".into(), "30s".into()]
}
fn default_in_flight() -> usize {
    64
}
fn default_content_type() -> String {
    "application/json".into()
}

/// A connector's NATS JetStream source, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// The connector that ingests the messages.
    pub connector: String,
    pub url: String,
    pub stream: String,
    pub subject: String,
    pub consumer: String,
    pub max_deliver: u32,
    pub ack_wait: Duration,
    pub backoff: Vec<Duration>,
    pub in_flight: usize,
    pub content_type: String,
    /// How long an event stays marked processed: a message redelivered or
    /// republished within it never repeats the event's effects.
    pub dedupe_window: Duration,
}

impl Source {
    /// The name events of this source are marked processed under:
    /// `nats:<stream>/<consumer>`.
    pub fn name(&self) -> String {
        format!("nats:{}/{}", self.stream, self.consumer)
    }

    /// How long to wait before redelivering a message whose `delivered`th
    /// delivery failed.
    pub fn delay(&self, delivered: u64) -> Duration {
        let i = usize::try_from(delivered.saturating_sub(1)).unwrap_or(usize::MAX);
        self.backoff
            .get(i)
            .or(self.backoff.last())
            .copied()
            .unwrap_or(Duration::from_secs(1))
    }
}

/// A JetStream name: letters, digits, `-` and `_` (no `.`, `*`, `>` or
/// spaces, which the server refuses or reads as a subject).
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A subject: dot-separated tokens, `*` for one token, `>` for the rest.
fn valid_subject(s: &str) -> bool {
    let tokens: Vec<&str> = s.split('.').collect();
    !s.is_empty()
        && tokens.iter().enumerate().all(|(i, t)| {
            !t.is_empty()
                && !t.contains(char::is_whitespace)
                && (*t == ">" && i == tokens.len() - 1 || !t.contains('>'))
                && (*t == "*" || !t.contains('*'))
        })
}

/// Validate the app file's `[sources]` against its connectors; the error
/// names the key to fix.
pub fn validate(
    raw: BTreeMap<PluginName, RawSource>,
    connectors: &[&str],
) -> Result<Vec<Source>, String> {
    let mut sources = Vec::new();
    for (connector, r) in raw {
        let at = |key: &str| format!("[sources.{connector}] {key}");
        if !connectors.contains(&connector.as_str()) {
            return Err(format!(
                "[sources.{connector}]: `{connector}` is not a connector of this app; use the name of a connector under [plugins] ({})",
                connectors.join(", ")
            ));
        }
        if !(r.url.starts_with("nats://") || r.url.starts_with("tls://")) {
            return Err(format!(
                "{} = {:?}: give a NATS URL such as nats://127.0.0.1:4222 (credentials go in EVOS_NATS_USER/EVOS_NATS_PASSWORD or EVOS_NATS_TOKEN, not the file)",
                at("url"),
                r.url
            ));
        }
        if r.url.contains('@') {
            return Err(format!(
                "{}: keep credentials out of the app file; set EVOS_NATS_USER and EVOS_NATS_PASSWORD (or EVOS_NATS_TOKEN) for `evos up` instead",
                at("url")
            ));
        }
        for (key, value) in [("stream", &r.stream), ("consumer", &r.consumer)] {
            if !valid_name(value) {
                return Err(format!(
                    "{} = {value:?}: use 1 to 64 letters, digits, `-` or `_`",
                    at(key)
                ));
            }
        }
        if !valid_subject(&r.subject) {
            return Err(format!(
                "{} = {:?}: use dot-separated tokens, `*` for one token and `>` for the rest (e.g. \"claims.>\")",
                at("subject"),
                r.subject
            ));
        }
        if r.max_deliver == 0 {
            return Err(format!(
                "{} = 0: a message needs at least one delivery; use 1 or more",
                at("max-deliver")
            ));
        }
        let duration = |key: &str, text: &str| {
            humantime::parse_duration(text)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    format!(
                        "{} = {text:?}: give a duration such as \"500ms\", \"5s\" or \"1m\"",
                        at(key)
                    )
                })
        };
        let ack_wait = duration("ack-wait", &r.ack_wait)?;
        let dedupe_window = duration("dedupe-window", &r.dedupe_window)?;
        if dedupe_window <= ack_wait {
            return Err(format!(
                "{} = {:?} is not longer than ack-wait ({:?}): a redelivered message would be processed again; give a longer window such as \"7d\"",
                at("dedupe-window"),
                r.dedupe_window,
                r.ack_wait
            ));
        }
        let backoff = r
            .backoff
            .iter()
            .map(|b| duration("backoff", b))
            .collect::<Result<Vec<_>, _>>()?;
        if r.in_flight == 0 || r.in_flight > 4096 {
            return Err(format!(
                "{} = {}: use 1 to 4096 messages",
                at("in-flight"),
                r.in_flight
            ));
        }
        sources.push(Source {
            connector: connector.to_string(),
            url: r.url,
            stream: r.stream,
            subject: r.subject,
            consumer: r.consumer,
            max_deliver: r.max_deliver,
            ack_wait,
            backoff,
            in_flight: r.in_flight,
            content_type: r.content_type,
            dedupe_window,
        });
    }
    Ok(sources)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Source>, String> {
        let raw: BTreeMap<PluginName, RawSource> =
            toml::from_str(text).map_err(|e| e.to_string())?;
        validate(raw, &["claims-webhook"])
    }

    #[test]
    fn a_source_reads_with_its_defaults() {
        let s = parse(
            "[claims-webhook]\nurl = \"nats://127.0.0.1:4222\"\nstream = \"CLAIMS\"\nsubject = \"claims.>\"\n",
        )
        .unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].name(), "nats:CLAIMS/evos");
        assert_eq!((s[0].max_deliver, s[0].in_flight), (5, 64));
        assert_eq!(s[0].ack_wait, Duration::from_secs(30));
        assert_eq!(s[0].dedupe_window, Duration::from_secs(7 * 86_400));
        assert_eq!(s[0].delay(1), Duration::from_secs(1));
        assert_eq!(s[0].delay(2), Duration::from_secs(5));
        assert_eq!(s[0].delay(9), Duration::from_secs(30));
    }

    #[test]
    fn mistakes_name_the_key_to_fix() {
        let base = "url = \"nats://127.0.0.1:4222\"\nstream = \"CLAIMS\"\nsubject = \"claims.>\"\n";
        for (text, says) in [
            (format!("[other]\n{base}"), "not a connector"),
            (
                "[claims-webhook]\nurl = \"http://x\"\nstream = \"S\"\nsubject = \"a\"\n".into(),
                "url",
            ),
            (
                "[claims-webhook]\nurl = \"nats://u:p@h:4222\"\nstream = \"S\"\nsubject = \"a\"\n"
                    .into(),
                "EVOS_NATS_PASSWORD",
            ),
            (
                "[claims-webhook]\nurl = \"nats://h:4222\"\nstream = \"A.B\"\nsubject = \"a\"\n"
                    .into(),
                "stream",
            ),
            (
                "[claims-webhook]\nurl = \"nats://h:4222\"\nstream = \"S\"\nsubject = \"a.>.b\"\n"
                    .into(),
                "subject",
            ),
            (
                format!("[claims-webhook]\n{base}max-deliver = 0\n"),
                "max-deliver",
            ),
            (
                format!("[claims-webhook]\n{base}dedupe-window = \"10s\"\n"),
                "dedupe-window",
            ),
            (
                format!("[claims-webhook]\n{base}ack-wait = \"soon\"\n"),
                "ack-wait",
            ),
            (
                format!("[claims-webhook]\n{base}backoff = [\"0s\"]\n"),
                "backoff",
            ),
            (
                format!("[claims-webhook]\n{base}in-flight = 0\n"),
                "in-flight",
            ),
            (format!("[claims-webhook]\n{base}colour = 1\n"), "colour"),
        ] {
            let e = parse(&text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
