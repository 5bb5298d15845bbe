//! `http`: outgoing HTTP through `wasi:http/outgoing-handler`, through the
//! host's egress engine.
//!
//! Guards against exfiltration and SSRF. Every request a plugin sends goes
//! through [`EgressHooks::send_request`] before any connection is made:
//!
//! 1. the URL is normalized and matched against the manifest's allowlist
//!    (scheme, host, port, path prefix; see [`super::egress`] for the entry
//!    forms and the normalization);
//! 2. the host resolves the name itself and vets every address (loopback,
//!    private, link-local, metadata ... need an explicit IP/CIDR grant);
//! 3. the connection goes to a vetted address ([`super::pool`]), TLS to the
//!    original name for `https`;
//! 4. hop-by-hop and forbidden headers are stripped both ways (a guest
//!    cannot even set them: `wasi:http` refuses them in `fields`), `Host` is
//!    the normalized authority, the path the normalized path;
//! 5. redirects are not followed: a 3xx reaches the guest as is;
//! 6. connect, first-byte and total timeouts and a response-size cap come
//!    from the manifest, with the defaults of [`HttpLimits`].
//!
//! A refused request fails with `HTTP-request-denied` and is recorded as a
//! refusal in the call's report, even if the guest swallows the error; so is
//! a response body cut off at the size cap.
//!
//! Manifest forms:
//!
//! ```toml
//! [capabilities]
//! http = ["https://api.example.com/v1/*"]
//! # or, with limits (defaults shown):
//! http = { allow = ["https://api.example.com/v1/*", "http://[10.0.0.0/8]:8080/*"],
//!          connect-timeout = "5s", first-byte-timeout = "10s",
//!          total-timeout = "30s", max-response-bytes = "8MiB",
//!          max-connections = 64, max-connections-per-call = 16 }
//! ```
//!
//! Connections are bounded so that one plugin cannot starve the host (and
//! its API) of file descriptors: `max-connections` open outgoing
//! connections per plugin, idle keep-alive ones included (idle ones are
//! closed first when the plugin needs a new one; a request beyond the limit
//! waits for one within its connect timeout, then fails with
//! `connection-limit-reached`), and `max-connections-per-call` requests in
//! flight per call (refused at once beyond it). A host out of descriptors
//! fails the request with `connection-limit-reached`, not as if the
//! upstream refused it. Each is a refusal in the call's report.
//!
//! Fields a guest builds are capped at [`FIELD_SIZE_LIMIT`] bytes (wasmtime
//! accounting) per `fields` resource; a guest that exceeds it traps
//! (GHSA-243v-98vx-264h is the advisory about unbounded fields).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, header};
use serde::Deserialize;
use wasmtime_wasi_http::{
    DEFAULT_FORBIDDEN_HEADERS, ForbiddenHeaderFilter, RequestOptions, WasiBody, WasiHttpCtx,
    WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use super::egress::{Host, Target};
pub use super::egress::{HttpRule, Scheme};
use super::pool::{ConnectError, Connections, Limits, Pool, Upstream};
use wasmtime::component::Linker;

use super::{CallContext, Capability, SharedRefusals, Views};
use crate::manifest::{Manifest, Timeout};
use crate::state::PluginState;
use crate::{Error, Result};

/// The `http` capability: `wasi:http/outgoing-handler` through the
/// egress engine.
pub struct Http;

impl Capability for Http {
    const NAME: &'static str = "http";
    const INTERFACES: &'static [&'static str] = &["wasi:http/outgoing-handler", "wasi:http/types"];
    const PRIVILEGED: bool = true;
    const EXAMPLE: &'static str = "http = [\"https://host:443/path/*\"]";
    type State = HttpState;

    fn granted(m: &Manifest) -> bool {
        !m.capabilities.http.is_empty()
    }

    fn link<T: Views>(linker: &mut Linker<T>) -> Result<()> {
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
            .map_err(|e| Error::wasmtime("linking wasi:http", e))
    }

    /// JavaScript's runtime imports `wasi:http` for `fetch`. Without a
    /// grant the allowlist is empty, and [`EgressHooks::send_request`]
    /// refuses every request before anything else is looked at.
    const INERT: bool = true;

    fn link_inert<T: Views>(linker: &mut Linker<T>) -> Result<()> {
        Self::link(linker)
    }

    fn state(call: &CallContext<'_>) -> HttpState {
        let mut state = HttpState::new(call.grants, call.egress);
        state.hooks.shadow = call.shadow.cloned();
        state
    }
}

/// Bytes (as wasmtime accounts them: names, values and their in-memory
/// overhead) one guest-built `fields` resource may hold. Real request
/// headers fit in a few KiB; the cap keeps a guest that piles up fields
/// resources (up to the call's resource-table capacity) from tying up host
/// memory.
pub const FIELD_SIZE_LIMIT: usize = 32 * 1024;

/// Per-plugin request limits (`[capabilities] http = { ... }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// DNS, TCP connect and TLS handshake together. Default 5s.
    pub connect_timeout: Duration,
    /// From sending the request to the response head. Default 10s.
    pub first_byte_timeout: Duration,
    /// The whole request, response body included. Default 30s.
    pub total_timeout: Duration,
    /// Largest response body. Default 8 MiB.
    pub max_response_bytes: u64,
    /// Outgoing connections the plugin may have open at once, across all
    /// its calls, idle keep-alive connections included. Default 64.
    pub max_connections: u32,
    /// Requests one call may have in flight at once (each holds a
    /// connection). Default 16.
    pub max_connections_per_call: u32,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            connect_timeout: Duration::from_secs(5),
            first_byte_timeout: Duration::from_secs(10),
            total_timeout: Duration::from_secs(30),
            max_response_bytes: 8 * 1024 * 1024,
            max_connections: 64,
            max_connections_per_call: 16,
        }
    }
}

/// Most connections a manifest may grant one plugin, or one call.
const MAX_CONNECTIONS_CEILING: u32 = 4096;

/// Longest pause between response body frames unless the guest asks for
/// less.
const BETWEEN_BYTES_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest `max-response-bytes` a manifest may set.
const MAX_RESPONSE_BYTES_CEILING: u64 = 1024 * 1024 * 1024;

/// `[capabilities] http`: the allowlist and the request limits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpGrant {
    pub allow: Vec<HttpRule>,
    pub limits: HttpLimits,
}

impl HttpGrant {
    /// No entry: `http` is not granted.
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty()
    }

    /// The allowlist entries.
    pub fn iter(&self) -> std::slice::Iter<'_, HttpRule> {
        self.allow.iter()
    }
}

/// The table form.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct HttpTable {
    allow: Vec<HttpRule>,
    connect_timeout: Option<Timeout>,
    first_byte_timeout: Option<Timeout>,
    total_timeout: Option<Timeout>,
    max_response_bytes: Option<ResponseBytes>,
    max_connections: Option<u32>,
    max_connections_per_call: Option<u32>,
}

/// A response-size cap: `"8MiB"` or a number of bytes.
#[derive(Deserialize)]
#[serde(untagged)]
enum ResponseBytesText {
    Text(String),
    Bytes(i64),
}

#[derive(Deserialize)]
#[serde(try_from = "ResponseBytesText")]
struct ResponseBytes(u64);

impl TryFrom<ResponseBytesText> for ResponseBytes {
    type Error = String;
    fn try_from(v: ResponseBytesText) -> std::result::Result<Self, String> {
        let n = match v {
            ResponseBytesText::Bytes(n) => u64::try_from(n).unwrap_or(0),
            ResponseBytesText::Text(s) => s
                .parse::<bytesize::ByteSize>()
                .map_err(|e| {
                    format!("invalid max-response-bytes {s:?}: {e}; write a size like \"8MiB\"")
                })?
                .as_u64(),
        };
        if n == 0 || n > MAX_RESPONSE_BYTES_CEILING {
            return Err(format!(
                "max-response-bytes must be between 1 byte and 1GiB, got {n}"
            ));
        }
        Ok(ResponseBytes(n))
    }
}

impl<'de> Deserialize<'de> for HttpGrant {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = HttpGrant;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a list of entries like [\"https://api.example.com/v1/*\"] or a table like { allow = [...], total-timeout = \"30s\" }",
                )
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> std::result::Result<HttpGrant, A::Error> {
                let allow = Vec::<HttpRule>::deserialize(
                    serde::de::value::SeqAccessDeserializer::new(seq),
                )?;
                Ok(HttpGrant {
                    allow,
                    limits: HttpLimits::default(),
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> std::result::Result<HttpGrant, A::Error> {
                let t = HttpTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                if t.allow.is_empty() {
                    return Err(serde::de::Error::custom(
                        "`allow` needs at least one entry such as \"https://api.example.com/v1/*\"; remove `http` to grant nothing",
                    ));
                }
                let d = HttpLimits::default();
                let connections = |key: &str,
                                   v: Option<u32>,
                                   default: u32|
                 -> std::result::Result<u32, A::Error> {
                    match v {
                        None => Ok(default),
                        Some(n) if (1..=MAX_CONNECTIONS_CEILING).contains(&n) => Ok(n),
                        Some(n) => Err(serde::de::Error::custom(format!(
                            "`{key}` is {n}; it must be between 1 and {MAX_CONNECTIONS_CEILING}"
                        ))),
                    }
                };
                let max_connections =
                    connections("max-connections", t.max_connections, d.max_connections)?;
                let max_connections_per_call = connections(
                    "max-connections-per-call",
                    t.max_connections_per_call,
                    d.max_connections_per_call.min(max_connections),
                )?;
                if max_connections_per_call > max_connections {
                    return Err(serde::de::Error::custom(format!(
                        "`max-connections-per-call` ({max_connections_per_call}) exceeds `max-connections` ({max_connections}); a call cannot hold more connections than its plugin"
                    )));
                }
                Ok(HttpGrant {
                    allow: t.allow,
                    limits: HttpLimits {
                        connect_timeout: t.connect_timeout.map_or(d.connect_timeout, |t| t.0),
                        first_byte_timeout: t
                            .first_byte_timeout
                            .map_or(d.first_byte_timeout, |t| t.0),
                        total_timeout: t.total_timeout.map_or(d.total_timeout, |t| t.0),
                        max_response_bytes: t
                            .max_response_bytes
                            .map_or(d.max_response_bytes, |b| b.0),
                        max_connections,
                        max_connections_per_call,
                    },
                })
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// One plugin's egress policy, built once at load.
#[derive(Debug, Clone)]
pub struct Allowlist {
    rules: super::egress::Allowlist,
    limits: HttpLimits,
    /// Permits for the plugin's open connections (`max-connections`).
    connections: Arc<tokio::sync::Semaphore>,
}

impl Default for Allowlist {
    fn default() -> Allowlist {
        Allowlist::new(HttpGrant::default())
    }
}

impl Allowlist {
    pub fn new(grant: HttpGrant) -> Allowlist {
        Allowlist {
            rules: super::egress::Allowlist::new(grant.allow),
            connections: Arc::new(tokio::sync::Semaphore::new(
                grant.limits.max_connections as usize,
            )),
            limits: grant.limits,
        }
    }

    /// Resolve `target`'s host (an IP literal resolves to itself) and keep
    /// the addresses that pass vetting. `Ok(Err(why))` is a refusal.
    async fn resolve(
        &self,
        target: &Target,
        timeout: Duration,
    ) -> std::result::Result<std::result::Result<Vec<SocketAddr>, String>, wasmtime_wasi_http::Error>
    {
        let found: Vec<IpAddr> = match &target.host {
            Host::Ip(ip) => vec![*ip],
            Host::Name(name) => {
                let lookup = tokio::net::lookup_host((name.as_str(), target.port));
                match tokio::time::timeout(timeout, lookup).await {
                    Err(_) => return Err(wasmtime_wasi_http::Error::DnsTimeout),
                    Ok(Err(e)) => {
                        return Err(wasmtime_wasi_http::Error::DnsError {
                            rcode: Some(e.to_string()),
                            info_code: None,
                        });
                    }
                    Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
                }
            }
        };
        let mut vetted = Vec::new();
        let mut first_refusal = None;
        for ip in found {
            let ip = ip.to_canonical();
            match self.rules.vet(target, ip) {
                Ok(()) => {
                    let addr = SocketAddr::new(ip, target.port);
                    if !vetted.contains(&addr) {
                        vetted.push(addr);
                    }
                }
                Err(why) => {
                    first_refusal.get_or_insert(why);
                }
            }
        }
        Ok(match (vetted.is_empty(), first_refusal) {
            (false, _) => Ok(vetted),
            (true, Some(why)) => Err(format!("{target}: {why}")),
            (true, None) => Err(format!("{target}: {} resolved to no address", target.host)),
        })
    }
}

tokio::task_local! {
    /// Headers the host adds to every outgoing request of the calls made
    /// inside [`with_outgoing_headers`].
    static OUTGOING: Arc<[(HeaderName, HeaderValue)]>;
}

/// Run `call` so that every outgoing HTTP request of the plugin calls it
/// makes carries `headers`, replacing any of the same name the guest set.
/// The pipeline uses it to pass the W3C `traceparent` and an idempotency
/// key to the downstream system on `execute`, whatever the connector does.
pub async fn with_outgoing_headers<F: Future>(
    headers: Vec<(HeaderName, HeaderValue)>,
    call: F,
) -> F::Output {
    OUTGOING.scope(headers.into(), call).await
}

/// Per-call http state.
pub struct HttpState {
    pub(crate) ctx: WasiHttpCtx,
    pub(crate) hooks: EgressHooks,
}

impl HttpState {
    pub(crate) fn new(grants: &super::Grants, pool: &Pool) -> HttpState {
        let mut ctx = WasiHttpCtx::new();
        ctx.set_field_size_limit(FIELD_SIZE_LIMIT);
        HttpState {
            ctx,
            hooks: EgressHooks {
                allowlist: grants.http.clone(),
                refusals: SharedRefusals::default(),
                plugin: grants.plugin.clone(),
                kind: grants.kind,
                pool: pool.clone(),
                in_flight: None,
                shadow: None,
            },
        }
    }
}

/// Headers that never cross the sandbox boundary in either direction:
/// wasmtime's defaults (connection, keep-alive, proxy-authenticate,
/// proxy-authorization, proxy-connection, transfer-encoding, upgrade, host,
/// http2-settings) plus the other hop-by-hop headers (`te`, `trailer`) and
/// every `proxy-*` header.
pub fn is_forbidden_header(name: &HeaderName) -> bool {
    DEFAULT_FORBIDDEN_HEADERS.contains(name)
        || *name == header::TE
        || *name == header::TRAILER
        || name.as_str().starts_with("proxy-")
}

/// Remove hop-by-hop headers: the fixed set and any the `Connection`
/// header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(&name);
    }
    let forbidden: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_forbidden_header(n))
        .cloned()
        .collect();
    for name in forbidden {
        headers.remove(&name);
    }
}

/// Enforces the egress policy on every outgoing request.
pub struct EgressHooks {
    allowlist: Arc<Allowlist>,
    pub(crate) refusals: SharedRefusals,
    plugin: Arc<str>,
    kind: evos_core::Kind,
    pool: Pool,
    /// Permits for this call's requests in flight
    /// (`max-connections-per-call`), made at the call's first request:
    /// most calls send none.
    in_flight: Option<Arc<tokio::sync::Semaphore>>,
    /// For a shadow call, where requests it would have sent are recorded.
    shadow: Option<SharedRefusals>,
}

type SendFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn Future<Output = std::result::Result<(), wasmtime_wasi_http::Error>> + Send>,
            )>,
        > + Send,
>;

impl EgressHooks {
    fn refuse(&self, why: String) -> SendFuture {
        self.refusals.push("http", why);
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

/// A request's URI as a refusal shows it: at most 200 characters (the
/// `http` crate has already refused control characters in it).
fn shown_uri(uri: &http::Uri) -> String {
    let mut text = uri.to_string();
    if text.len() > 200 {
        text.truncate(text.floor_char_boundary(200));
        text.push_str("...");
    }
    text
}

impl WasiHttpHooks for EgressHooks {
    fn forbidden_header_filter(&mut self) -> ForbiddenHeaderFilter {
        Arc::new(is_forbidden_header)
    }

    fn p2_error_from_tls(
        &mut self,
        err: &std::io::Error,
    ) -> wasmtime_wasi_http::p2::bindings::http::types::ErrorCode {
        use tokio_rustls::rustls::Error as Tls;
        use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, TlsAlertReceivedPayload};
        match err.get_ref().and_then(|e| e.downcast_ref::<Tls>()) {
            Some(Tls::InvalidCertificate(_)) => ErrorCode::TlsCertificateError,
            Some(Tls::AlertReceived(alert)) => {
                ErrorCode::TlsAlertReceived(TlsAlertReceivedPayload {
                    alert_id: Some(u8::from(*alert)),
                    alert_message: Some(format!("{alert:?}")),
                })
            }
            _ => ErrorCode::TlsProtocolError,
        }
    }

    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = std::result::Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> SendFuture {
        _ = fut;
        if self.allowlist.rules.is_empty() {
            // Linked inert: no request leaves, whatever it names.
            let why = format!(
                "{} {} refused: {}",
                request.method(),
                shown_uri(request.uri()),
                super::not_granted(self.kind, Http::NAME)
            );
            return self.refuse(why);
        }
        let target = match Target::parse(request.uri()) {
            Ok(t) => t,
            Err(why) => return self.refuse(why),
        };
        if let Err(why) = self.allowlist.rules.check(&target) {
            return self.refuse(why);
        }
        // A shadow's requests are checked like the live version's (a
        // request outside the grant is a refusal) but never sent.
        if let Some(suppressed) = &self.shadow {
            suppressed.push(
                "http",
                format!("suppressed in shadow: {} {target}", request.method()),
            );
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        // What goes on the wire is what was matched: the normalized path
        // and authority, no hop-by-hop headers.
        let Ok(uri) = http::Uri::try_from(target.path_and_query()) else {
            return self.refuse(format!("{target}: the normalized path is not a valid URI"));
        };
        let Ok(host) = HeaderValue::try_from(target.authority()) else {
            return self.refuse(format!("{target}: the host is not a valid header value"));
        };
        let per_call = self.allowlist.limits.max_connections_per_call as usize;
        let in_flight = self
            .in_flight
            .get_or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(per_call)));
        let Ok(in_flight) = in_flight.clone().try_acquire_owned() else {
            return self.refuse(format!(
                "{target}: this call already has {} requests in flight, its `max-connections-per-call`; wait for a response (or raise the limit in the `http` grant)",
                self.allowlist.limits.max_connections_per_call
            ));
        };
        *request.uri_mut() = uri;
        strip_hop_by_hop(request.headers_mut());
        request.headers_mut().insert(header::HOST, host);
        // Headers the host adds for this call (the pipeline's execute
        // context); the request is sent from inside the call's task.
        let _ = OUTGOING.try_with(|added| {
            for (name, value) in added.iter() {
                request.headers_mut().insert(name.clone(), value.clone());
            }
        });

        let limits = self.allowlist.limits;
        let options = options.unwrap_or_default();
        let at_most = |asked: Option<Duration>, max: Duration| asked.map_or(max, |a| a.min(max));
        let connect = at_most(options.connect_timeout, limits.connect_timeout);
        let start = tokio::time::Instant::now();
        let mut limits = Limits {
            connect,
            first_byte: at_most(options.first_byte_timeout, limits.first_byte_timeout),
            between_bytes: at_most(options.between_bytes_timeout, BETWEEN_BYTES_TIMEOUT),
            deadline: start + limits.total_timeout,
            max_response_bytes: limits.max_response_bytes,
        };
        let (allowlist, pool, plugin) = (
            self.allowlist.clone(),
            self.pool.clone(),
            self.plugin.clone(),
        );
        let refusals = self.refusals.clone();
        Box::new(async move {
            let addrs = match allowlist.resolve(&target, connect).await? {
                Ok(addrs) => addrs,
                Err(why) => {
                    refusals.push("http", why);
                    return Err(wasmtime_wasi_http::Error::HttpRequestDenied);
                }
            };
            // One connect budget for DNS, TCP and TLS together.
            limits.connect = limits.connect.saturating_sub(start.elapsed());
            let upstream = Upstream {
                https: target.scheme == Scheme::Https,
                host: target.host.clone(),
                addrs,
            };
            let url = target.to_string();
            let oversize_refusals = refusals.clone();
            let oversize_url = url.clone();
            let on_oversize = Box::new(move |max: u64| {
                oversize_refusals.push("http", format!(
                    "the response from {oversize_url} exceeded max-response-bytes ({max} bytes) and was cut off; raise `max-response-bytes` in the `http` grant if intended"
                ));
            });
            let conns = Connections {
                plugin: allowlist.connections.clone(),
                max: allowlist.limits.max_connections,
                in_flight,
            };
            let sent = pool
                .send(plugin, &upstream, request, limits, on_oversize, conns)
                .await;
            let mut res = match sent {
                Ok(res) => res,
                Err(ConnectError::PluginLimit { open }) => {
                    refusals.push("http", format!(
                        "{url}: the plugin already has {open} open connections, its `max-connections`, and none freed up within the connect timeout; raise `max-connections` in the `http` grant if intended"
                    ));
                    return Err(wasmtime_wasi_http::Error::ConnectionLimitReached);
                }
                Err(ConnectError::HostExhausted(e)) => {
                    refusals.push("http", format!(
                        "{url}: the host is out of resources for new connections ({e}); the request was not sent"
                    ));
                    return Err(wasmtime_wasi_http::Error::ConnectionLimitReached);
                }
                Err(ConnectError::Http(e)) => return Err(e),
            };
            strip_hop_by_hop(res.headers_mut());
            Ok((
                res,
                Box::new(async { Ok(()) }) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

impl WasiHttpView for PluginState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.caps.http.ctx,
            table: &mut self.table,
            hooks: &mut self.caps.http.hooks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Caps {
        http: HttpGrant,
    }

    fn grant(toml_text: &str) -> std::result::Result<HttpGrant, String> {
        toml::from_str::<Caps>(toml_text)
            .map(|c| c.http)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn list_and_table_forms() {
        let g = grant("http = [\"https://api.example.com/v1/*\"]").unwrap();
        assert_eq!(g.allow.len(), 1);
        assert_eq!(g.limits, HttpLimits::default());
        let g = grant(
            "http = { allow = [\"http://127.0.0.1:*/*\"], connect-timeout = \"2s\", first-byte-timeout = \"250ms\", total-timeout = \"3s\", max-response-bytes = \"64KiB\" }",
        )
        .unwrap();
        assert_eq!(g.limits.connect_timeout, Duration::from_secs(2));
        assert_eq!(g.limits.first_byte_timeout, Duration::from_millis(250));
        assert_eq!(g.limits.total_timeout, Duration::from_secs(3));
        assert_eq!(g.limits.max_response_bytes, 64 * 1024);
        let g = grant("http = { allow = [\"http://127.0.0.1:*/*\"], max-response-bytes = 1000 }")
            .unwrap();
        assert_eq!(g.limits.max_response_bytes, 1000);
    }

    #[test]
    fn table_errors_are_explained() {
        let e = grant("http = { allow = [\"http://a.test\"], timeout = \"1s\" }").unwrap_err();
        assert!(
            e.contains("unknown field `timeout`") && e.contains("total-timeout"),
            "{e}"
        );
        let e = grant("http = { allow = [] }").unwrap_err();
        assert!(e.contains("at least one entry"), "{e}");
        let e =
            grant("http = { allow = [\"http://a.test\"], total-timeout = \"soon\" }").unwrap_err();
        assert!(e.contains("invalid timeout"), "{e}");
        let e = grant("http = { allow = [\"http://a.test\"], max-response-bytes = \"0B\" }")
            .unwrap_err();
        assert!(e.contains("between 1 byte and 1GiB"), "{e}");
        let e = grant("http = \"https://a.test\"").unwrap_err();
        assert!(e.contains("a list of entries"), "{e}");
        let e = grant("http = [\"https://u@a.test\"]").unwrap_err();
        assert!(e.contains("userinfo"), "{e}");
    }

    #[test]
    fn hop_by_hop_headers_are_stripped() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "close, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("proxy-foo", "1"),
            ("host", "evil"),
            ("x-kept", "1"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }
}
