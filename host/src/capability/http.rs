//! `http`: outgoing HTTP through `wasi:http/outgoing-handler`, allowlisted.
//!
//! Guards against exfiltration and SSRF: every request a plugin sends is
//! matched against the manifest's allowlist (scheme, host, port, path prefix)
//! in [`WasiHttpHooks::send_request`] before any connection is made. A
//! request outside the list fails with `HTTP-request-denied` and is recorded
//! as a refusal in the call's report, even if the guest swallows the error.
//! URLs with userinfo (`http://allowed@evil/`) are refused outright.
//!
//! Accepted allowlist entries:
//!
//! | entry                                  | matches                                   |
//! |----------------------------------------|-------------------------------------------|
//! | `https://api.example.com`              | any path, port 443                        |
//! | `https://api.example.com:8443/v1/*`    | paths starting `/v1/`, port 8443          |
//! | `http://127.0.0.1:*/hooks/*`           | any port, paths starting `/hooks/`        |
//! | `https://*.example.com/status`         | any subdomain, exactly `/status`          |
//! | `http://[::1]:8080/*`                  | IPv6 literal                              |

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::Descriptor;
use super::pool::Pool;
use crate::manifest::Manifest;
use crate::runtime::Refusal;
use crate::state::PluginState;
use crate::{Error, Result};

pub const DESCRIPTOR: Descriptor = Descriptor {
    name: "http",
    interfaces: &["wasi:http/outgoing-handler", "wasi:http/types"],
    privileged: true,
    example: "http = [\"https://host:443/path/*\"]",
    granted: |m: &Manifest| !m.capabilities.http.is_empty(),
    link,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.example.com`: any name ending in `.example.com`.
    Subdomains(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PathPattern {
    Any,
    Prefix(String),
    Exact(String),
}

/// One allowlist entry, parsed once at manifest load.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HttpRule {
    text: String,
    scheme: Scheme,
    host: HostPattern,
    /// `None` = any port.
    port: Option<u16>,
    path: PathPattern,
}

impl TryFrom<String> for HttpRule {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for HttpRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn normalize_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn valid_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

impl FromStr for HttpRule {
    type Err = String;
    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "invalid http allowlist entry {text:?}: {why}; write e.g. \"https://api.example.com:443/v1/*\""
            )
        };
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| bad("missing scheme"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            _ => return Err(bad("the scheme must be http or https")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(bad("userinfo (`user@`) is not allowed"));
        }
        if path.contains(['?', '#']) {
            return Err(bad(
                "query strings and fragments are not matched; end the entry at the path",
            ));
        }
        let (host, port) = if authority.starts_with('[') {
            match authority.find(']') {
                Some(i) => {
                    let host = &authority[..=i];
                    let rest = &authority[i + 1..];
                    (host, rest.strip_prefix(':'))
                }
                None => return Err(bad("unclosed IPv6 literal")),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let port = match port {
            None => Some(scheme.default_port()),
            Some("*") => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| bad("invalid port"))?,
            ),
        };
        let host = normalize_host(host);
        let host = match host.strip_prefix("*.") {
            Some(base) if valid_host(base) => HostPattern::Subdomains(format!(".{base}")),
            Some(_) => return Err(bad("invalid host")),
            None if host.contains('*') => {
                return Err(bad(
                    "`*` is only allowed as the first label (`*.example.com`)",
                ));
            }
            None if valid_host(&host) => HostPattern::Exact(host),
            None => return Err(bad("invalid host")),
        };
        let path = match path {
            "" | "/*" => PathPattern::Any,
            p if p.ends_with('*') => {
                let prefix = &p[..p.len() - 1];
                if prefix.contains('*') {
                    return Err(bad("`*` is only allowed at the end of the path"));
                }
                PathPattern::Prefix(prefix.to_string())
            }
            p if p.contains('*') => return Err(bad("`*` is only allowed at the end of the path")),
            p => PathPattern::Exact(p.to_string()),
        };
        Ok(HttpRule {
            text: text.to_string(),
            scheme,
            host,
            port,
            path,
        })
    }
}

impl HttpRule {
    fn matches(&self, scheme: Scheme, host: &str, port: u16, path: &str) -> bool {
        self.scheme == scheme
            && match &self.host {
                HostPattern::Exact(h) => h == host,
                HostPattern::Subdomains(suffix) => host.ends_with(suffix.as_str()),
            }
            && self.port.is_none_or(|p| p == port)
            && match &self.path {
                PathPattern::Any => true,
                PathPattern::Prefix(p) => path.starts_with(p.as_str()),
                PathPattern::Exact(p) => path == p,
            }
    }
}

/// The rules of one plugin.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    rules: Vec<HttpRule>,
}

impl Allowlist {
    pub fn new(rules: Vec<HttpRule>) -> Allowlist {
        Allowlist { rules }
    }

    /// `Ok` when some rule allows `uri`; otherwise why not.
    pub fn check(&self, uri: &http::Uri) -> std::result::Result<(), String> {
        let scheme = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
            Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            other => return Err(format!("scheme {other:?} is not allowed")),
        };
        let authority = uri.authority().ok_or("the request has no host")?;
        if authority.as_str().contains('@') {
            return Err(format!("{uri}: URLs with userinfo are refused"));
        }
        let host = normalize_host(authority.host());
        let port = authority.port_u16().unwrap_or(scheme.default_port());
        let path = uri.path();
        if path
            .split('/')
            .any(|seg| seg == ".." || seg.eq_ignore_ascii_case("%2e%2e"))
        {
            return Err(format!("{uri}: dot-segments in the path are refused"));
        }
        if self
            .rules
            .iter()
            .any(|r| r.matches(scheme, &host, port, path))
        {
            Ok(())
        } else {
            Err(format!("{uri} is not in the http allowlist"))
        }
    }
}

/// Default timeouts for outgoing requests the guest did not bound itself.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);
const BETWEEN_BYTES_TIMEOUT: Duration = Duration::from_secs(10);

/// Per-call http state.
#[derive(Default)]
pub struct HttpState {
    pub(crate) ctx: WasiHttpCtx,
    pub(crate) hooks: EgressHooks,
}

impl HttpState {
    pub(crate) fn new(grants: &super::Grants, pool: &Pool) -> HttpState {
        HttpState {
            ctx: WasiHttpCtx::new(),
            hooks: EgressHooks {
                allowlist: grants.http.clone(),
                refusals: Vec::new(),
                plugin: grants.plugin.clone(),
                pool: pool.clone(),
            },
        }
    }
}

/// Enforces the allowlist on every outgoing request.
#[derive(Default)]
pub struct EgressHooks {
    allowlist: std::sync::Arc<Allowlist>,
    pub(crate) refusals: Vec<Refusal>,
    plugin: std::sync::Arc<str>,
    pool: Pool,
}

impl WasiHttpHooks for EgressHooks {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = std::result::Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<
                        dyn Future<Output = std::result::Result<(), wasmtime_wasi_http::Error>>
                            + Send,
                    >,
                )>,
            > + Send,
    > {
        _ = fut;
        if let Err(why) = self.allowlist.check(request.uri()) {
            if self.refusals.len() < 64 {
                self.refusals.push(Refusal {
                    capability: "http".into(),
                    detail: why,
                    count: 1,
                });
            }
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        let mut options = options.unwrap_or_default();
        options.connect_timeout.get_or_insert(CONNECT_TIMEOUT);
        options.first_byte_timeout.get_or_insert(FIRST_BYTE_TIMEOUT);
        options
            .between_bytes_timeout
            .get_or_insert(BETWEEN_BYTES_TIMEOUT);
        // Plain HTTP reuses keep-alive connections; HTTPS connects per request.
        if request.uri().scheme() == Some(&http::uri::Scheme::HTTP) {
            let (pool, plugin) = (self.pool.clone(), self.plugin.clone());
            return Box::new(async move {
                let res = pool.send(plugin, request, options).await?;
                Ok((
                    res,
                    Box::new(async { Ok(()) }) as Box<dyn Future<Output = _> + Send>,
                ))
            });
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (res, io) =
                wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

impl WasiHttpView for PluginState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http.ctx,
            table: &mut self.table,
            hooks: &mut self.http.hooks,
        }
    }
}

fn link(linker: &mut wasmtime::component::Linker<PluginState>) -> Result<()> {
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
        .map_err(|e| Error::wasmtime("linking wasi:http", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(rules: &[&str], uri: &str) -> bool {
        let list = Allowlist::new(rules.iter().map(|r| r.parse().unwrap()).collect());
        list.check(&uri.parse().unwrap()).is_ok()
    }

    #[test]
    fn matches_scheme_host_port_and_path_prefix() {
        let r = ["https://api.example.com:443/v1/*"];
        assert!(allow(&r, "https://api.example.com/v1/items"));
        assert!(allow(&r, "https://API.example.com.:443/v1/x"));
        assert!(!allow(&r, "http://api.example.com/v1/items"));
        assert!(!allow(&r, "https://api.example.com:8443/v1/items"));
        assert!(!allow(&r, "https://api.example.com/v2/items"));
        assert!(!allow(&r, "https://evil.com/v1/items"));
        assert!(!allow(&r, "https://api.example.com.evil.com/v1/items"));
    }

    #[test]
    fn wildcards_and_exact_paths() {
        assert!(allow(
            &["http://127.0.0.1:*/hooks/*"],
            "http://127.0.0.1:5555/hooks/a"
        ));
        assert!(!allow(
            &["http://127.0.0.1:*/hooks/*"],
            "http://127.0.0.2:5555/hooks/a"
        ));
        assert!(allow(
            &["https://*.example.com/status"],
            "https://a.b.example.com/status"
        ));
        assert!(!allow(
            &["https://*.example.com/status"],
            "https://example.com/status"
        ));
        assert!(!allow(
            &["https://*.example.com/status"],
            "https://a.example.com/status/x"
        ));
        assert!(allow(&["http://[::1]:8080/*"], "http://[::1]:8080/x"));
    }

    #[test]
    fn userinfo_and_dot_segments_are_refused() {
        let r = ["http://allowed.test/*"];
        assert!(!allow(&r, "http://allowed.test@127.0.0.1/x"));
        assert!(!allow(&r, "http://allowed.test/a/../b"));
    }

    #[test]
    fn bad_entries_are_explained() {
        for bad in [
            "ftp://x.com",
            "x.com/path",
            "http://u@x.com",
            "http://x.com:0",
            "http://x.com/a*b",
            "http://*x.com",
        ] {
            let e = bad.parse::<HttpRule>().unwrap_err();
            assert!(e.contains("invalid http allowlist entry"), "{e}");
        }
    }
}
