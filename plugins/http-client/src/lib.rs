//! A small blocking HTTP client for evos plugins, built on
//! `wasi:http/outgoing-handler`.
//!
//! Plugins that reach outside systems (connectors, and the adversarial probes
//! that check the host's HTTP allowlist) share this crate so that URL parsing,
//! body streaming and error reporting behave the same everywhere. The host
//! decides whether a request may leave the sandbox: a request outside the
//! manifest's `http = [...]` grants comes back as [`HttpError::Denied`].
//!
//! Using any function here makes the component import
//! `wasi:http/outgoing-handler`, which the host links only when the manifest
//! grants `http`.

use std::fmt;

use wasi::clocks::monotonic_clock;
use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, IncomingBody, OutgoingBody, OutgoingRequest, Scheme,
};
use wasi::io::poll;
use wasi::io::streams::StreamError;

pub use wasi::http::types::Method;

/// Largest chunk handed to one `blocking-write-and-flush` call; WASI output
/// streams accept at most 4096 bytes per blocking write.
const WRITE_CHUNK: usize = 4096;

/// Bytes requested per read of a response body.
const READ_CHUNK: u64 = 16 * 1024;

/// How long to wait for the cause of a failed body write (1 s).
const SETTLE_WAIT_NS: u64 = 1_000_000_000;

/// Response bodies larger than this are refused rather than buffered.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// An absolute `http` or `https` URL split into the parts `wasi:http` wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    /// `true` for `https`.
    pub https: bool,
    /// `host[:port]` exactly as written (with `userinfo@` only when parsed by
    /// [`Url::parse_verbatim`]).
    pub authority: String,
    /// Path and query, always starting with `/`; the fragment is dropped.
    pub path_with_query: String,
}

impl Url {
    /// Parse an absolute `http://` or `https://` URL. Rejects other schemes,
    /// an empty host, credentials in the authority (`user@host`), whitespace
    /// and control characters, and a non-numeric port.
    pub fn parse(url: &str) -> Result<Url, String> {
        let parsed = Url::parse_verbatim(url)?;
        if parsed.authority.contains('@') {
            return Err(format!(
                "URL {url:?} must not carry credentials (user@host)"
            ));
        }
        let (host, port) = split_host_port(&parsed.authority);
        if host.is_empty() {
            return Err(format!("URL {url:?} has an empty host"));
        }
        if let Some(port) = port
            && port.parse::<u16>().is_err()
        {
            return Err(format!("URL {url:?} has an invalid port {port:?}"));
        }
        Ok(parsed)
    }

    /// Split an absolute `http://` or `https://` URL without judging its
    /// authority: `user@host` and odd ports are passed through verbatim so the
    /// HTTP implementation (and the host's allowlist) sees exactly what was
    /// written.
    pub fn parse_verbatim(url: &str) -> Result<Url, String> {
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "URL {url:?} contains whitespace or control characters"
            ));
        }
        let (https, rest) = if let Some(rest) = strip_prefix_ignore_case(url, "http://") {
            (false, rest)
        } else if let Some(rest) = strip_prefix_ignore_case(url, "https://") {
            (true, rest)
        } else {
            return Err(format!("URL {url:?} must start with http:// or https://"));
        };
        let rest = match rest.find('#') {
            Some(i) => &rest[..i],
            None => rest,
        };
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        if authority.is_empty() {
            return Err(format!("URL {url:?} has no host"));
        }
        let tail = &rest[authority_end..];
        let path_with_query = if tail.starts_with('/') {
            tail.to_string()
        } else {
            format!("/{tail}")
        };
        Ok(Url {
            https,
            authority: authority.to_string(),
            path_with_query,
        })
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority, self.path_with_query)
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// `host` and the optional port text of an authority without credentials;
/// understands bracketed IPv6 literals (`[::1]:8080`).
fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => {
                let port = authority[end + 1..].strip_prefix(':');
                (&authority[..=end], port)
            }
            None => ("", None),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    }
}

/// A received HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    /// `true` for a 2xx status.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as text (invalid UTF-8 replaced), cut to at most `max_chars`
    /// characters.
    pub fn body_preview(&self, max_chars: usize) -> String {
        String::from_utf8_lossy(&self.body)
            .chars()
            .take(max_chars)
            .collect()
    }
}

/// Why a request produced no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The host refused the request (`http-request-denied`): the URL is not
    /// covered by the manifest's `http` grants.
    Denied(String),
    /// The request could not be built (bad header, authority or path).
    InvalidRequest(String),
    /// The request was sent but failed on the way (DNS, connection, protocol,
    /// body streaming, an oversized response).
    Transport(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Denied(m) => write!(f, "request denied: {m}"),
            HttpError::InvalidRequest(m) => write!(f, "invalid request: {m}"),
            HttpError::Transport(m) => write!(f, "transport error: {m}"),
        }
    }
}

impl std::error::Error for HttpError {}

impl From<ErrorCode> for HttpError {
    fn from(code: ErrorCode) -> HttpError {
        match code {
            ErrorCode::HttpRequestDenied => HttpError::Denied(describe(&code)),
            ErrorCode::HttpRequestMethodInvalid
            | ErrorCode::HttpRequestUriInvalid
            | ErrorCode::HttpRequestUriTooLong => HttpError::InvalidRequest(describe(&code)),
            other => HttpError::Transport(describe(&other)),
        }
    }
}

/// An outgoing request for `method` and `url` with the given header
/// entries (lower-case names), before its body is written.
pub fn outgoing_request(
    method: &Method,
    url: &Url,
    entries: &[(String, Vec<u8>)],
) -> Result<OutgoingRequest, HttpError> {
    let invalid = |m: String| HttpError::InvalidRequest(m);
    let fields =
        Fields::from_list(entries).map_err(|e| invalid(format!("headers rejected: {e}")))?;
    let request = OutgoingRequest::new(fields);
    request
        .set_method(method)
        .map_err(|()| invalid("method rejected".to_string()))?;
    let scheme = if url.https {
        Scheme::Https
    } else {
        Scheme::Http
    };
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| invalid("scheme rejected".to_string()))?;
    request
        .set_authority(Some(&url.authority))
        .map_err(|()| invalid(format!("authority {:?} rejected", url.authority)))?;
    request
        .set_path_with_query(Some(&url.path_with_query))
        .map_err(|()| invalid(format!("path {:?} rejected", url.path_with_query)))?;
    Ok(request)
}

/// Send one request and wait for the whole response.
///
/// `headers` are `(name, value)` pairs; a `content-length` header is added
/// for a non-empty body. The body is streamed in chunks of at most 4096
/// bytes; the response body is read up to [`MAX_RESPONSE_BYTES`].
pub fn send(
    method: Method,
    url: &Url,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, HttpError> {
    let mut entries: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.as_bytes().to_vec()))
        .collect();
    if !body.is_empty() && !entries.iter().any(|(name, _)| name == "content-length") {
        entries.push((
            "content-length".to_string(),
            body.len().to_string().into_bytes(),
        ));
    }
    let request = outgoing_request(&method, url, &entries)?;
    let outgoing_body = request
        .body()
        .map_err(|()| HttpError::InvalidRequest("request body already taken".to_string()))?;

    let pending = outgoing_handler::handle(request, None)?;

    let sent = write_body(&outgoing_body, body)
        .and_then(|()| OutgoingBody::finish(outgoing_body, None).map_err(HttpError::from));
    if let Err(body_error) = sent {
        // A request the host refuses, or that cannot connect, closes the body
        // stream; the response future then holds the actual cause.
        return Err(settled_error(&pending).unwrap_or(body_error));
    }

    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(code.into()),
        Some(Err(())) => {
            return Err(HttpError::Transport(
                "response was already taken".to_string(),
            ));
        }
        None => {
            return Err(HttpError::Transport(
                "response not ready after waiting".to_string(),
            ));
        }
    };
    let status = response.status();
    let incoming_body = response
        .consume()
        .map_err(|()| HttpError::Transport("response body already consumed".to_string()))?;
    let body = read_body(&incoming_body)?;
    drop(IncomingBody::finish(incoming_body));
    drop(response);
    Ok(Response { status, body })
}

/// The error a response future settled with, waiting at most
/// [`SETTLE_WAIT_NS`] for it; `None` when it is still pending or succeeded.
fn settled_error(pending: &FutureIncomingResponse) -> Option<HttpError> {
    let ready = pending.subscribe();
    let timer = monotonic_clock::subscribe_duration(SETTLE_WAIT_NS);
    poll::poll(&[&ready, &timer]);
    match pending.get() {
        Some(Ok(Err(code))) => Some(code.into()),
        _ => None,
    }
}

fn write_body(outgoing_body: &OutgoingBody, body: &[u8]) -> Result<(), HttpError> {
    let stream = outgoing_body
        .write()
        .map_err(|()| HttpError::Transport("request body stream unavailable".to_string()))?;
    for chunk in body.chunks(WRITE_CHUNK) {
        stream.blocking_write_and_flush(chunk).map_err(|e| {
            HttpError::Transport(format!("writing request body: {}", stream_error(e)))
        })?;
    }
    drop(stream);
    Ok(())
}

fn read_body(incoming_body: &IncomingBody) -> Result<Vec<u8>, HttpError> {
    let stream = incoming_body
        .stream()
        .map_err(|()| HttpError::Transport("response body stream unavailable".to_string()))?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(READ_CHUNK) {
            Ok(chunk) => {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(HttpError::Transport(format!(
                        "response body exceeds {MAX_RESPONSE_BYTES} bytes"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Err(StreamError::Closed) => break,
            Err(e) => {
                return Err(HttpError::Transport(format!(
                    "reading response body: {}",
                    stream_error(e)
                )));
            }
        }
    }
    drop(stream);
    Ok(body)
}

fn stream_error(error: StreamError) -> String {
    match error {
        StreamError::Closed => "stream closed".to_string(),
        StreamError::LastOperationFailed(io) => match wasi::http::types::http_error_code(&io) {
            Some(code) => describe(&code),
            None => io.to_debug_string(),
        },
    }
}

/// The WIT name of an `error-code`, with its payload when it has one, e.g.
/// `http-request-denied` or `DNS-error (rcode: NXDOMAIN)`.
pub fn describe(code: &ErrorCode) -> String {
    fn opt<T: fmt::Display>(name: &str, value: &Option<T>) -> String {
        match value {
            Some(v) => format!("{name} ({v})"),
            None => name.to_string(),
        }
    }
    match code {
        ErrorCode::DnsTimeout => "dns-timeout".into(),
        ErrorCode::DnsError(p) => {
            let mut parts = Vec::new();
            if let Some(rcode) = &p.rcode {
                parts.push(format!("rcode {rcode}"));
            }
            if let Some(info) = p.info_code {
                parts.push(format!("info-code {info}"));
            }
            if parts.is_empty() {
                "dns-error".into()
            } else {
                format!("dns-error ({})", parts.join(", "))
            }
        }
        ErrorCode::DestinationNotFound => "destination-not-found".into(),
        ErrorCode::DestinationUnavailable => "destination-unavailable".into(),
        ErrorCode::DestinationIpProhibited => "destination-IP-prohibited".into(),
        ErrorCode::DestinationIpUnroutable => "destination-IP-unroutable".into(),
        ErrorCode::ConnectionRefused => "connection-refused".into(),
        ErrorCode::ConnectionTerminated => "connection-terminated".into(),
        ErrorCode::ConnectionTimeout => "connection-timeout".into(),
        ErrorCode::ConnectionReadTimeout => "connection-read-timeout".into(),
        ErrorCode::ConnectionWriteTimeout => "connection-write-timeout".into(),
        ErrorCode::ConnectionLimitReached => "connection-limit-reached".into(),
        ErrorCode::TlsProtocolError => "TLS-protocol-error".into(),
        ErrorCode::TlsCertificateError => "TLS-certificate-error".into(),
        ErrorCode::TlsAlertReceived(p) => match (&p.alert_id, &p.alert_message) {
            (_, Some(message)) => format!("TLS-alert-received ({message})"),
            (Some(id), None) => format!("TLS-alert-received (alert {id})"),
            (None, None) => "TLS-alert-received".into(),
        },
        ErrorCode::HttpRequestDenied => "HTTP-request-denied".into(),
        ErrorCode::HttpRequestLengthRequired => "HTTP-request-length-required".into(),
        ErrorCode::HttpRequestBodySize(n) => opt("HTTP-request-body-size", n),
        ErrorCode::HttpRequestMethodInvalid => "HTTP-request-method-invalid".into(),
        ErrorCode::HttpRequestUriInvalid => "HTTP-request-URI-invalid".into(),
        ErrorCode::HttpRequestUriTooLong => "HTTP-request-URI-too-long".into(),
        ErrorCode::HttpRequestHeaderSectionSize(n) => opt("HTTP-request-header-section-size", n),
        ErrorCode::HttpRequestHeaderSize(_) => "HTTP-request-header-size".into(),
        ErrorCode::HttpRequestTrailerSectionSize(n) => opt("HTTP-request-trailer-section-size", n),
        ErrorCode::HttpRequestTrailerSize(_) => "HTTP-request-trailer-size".into(),
        ErrorCode::HttpResponseIncomplete => "HTTP-response-incomplete".into(),
        ErrorCode::HttpResponseHeaderSectionSize(n) => opt("HTTP-response-header-section-size", n),
        ErrorCode::HttpResponseHeaderSize(_) => "HTTP-response-header-size".into(),
        ErrorCode::HttpResponseBodySize(n) => opt("HTTP-response-body-size", n),
        ErrorCode::HttpResponseTrailerSectionSize(n) => {
            opt("HTTP-response-trailer-section-size", n)
        }
        ErrorCode::HttpResponseTrailerSize(_) => "HTTP-response-trailer-size".into(),
        ErrorCode::HttpResponseTransferCoding(c) => opt("HTTP-response-transfer-coding", c),
        ErrorCode::HttpResponseContentCoding(c) => opt("HTTP-response-content-coding", c),
        ErrorCode::HttpResponseTimeout => "HTTP-response-timeout".into(),
        ErrorCode::HttpUpgradeFailed => "HTTP-upgrade-failed".into(),
        ErrorCode::HttpProtocolError => "HTTP-protocol-error".into(),
        ErrorCode::LoopDetected => "loop-detected".into(),
        ErrorCode::ConfigurationError => "configuration-error".into(),
        ErrorCode::InternalError(m) => opt("internal-error", m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_strict_urls() {
        let url = Url::parse("http://127.0.0.1:8089/claims/payouts?x=1#frag").unwrap();
        assert!(!url.https);
        assert_eq!(url.authority, "127.0.0.1:8089");
        assert_eq!(url.path_with_query, "/claims/payouts?x=1");
        assert_eq!(
            Url::parse("https://example.com").unwrap().path_with_query,
            "/"
        );
        assert_eq!(Url::parse("http://h?q=1").unwrap().path_with_query, "/?q=1");
        assert!(Url::parse("http://[::1]:80/").is_ok());
        assert!(Url::parse("ftp://x/").is_err());
        assert!(Url::parse("http://a@b/").is_err());
        assert!(Url::parse("http://b:x/").is_err());
        assert!(Url::parse("http:///x").is_err());
        assert!(Url::parse("http://a b/").is_err());
    }

    #[test]
    fn verbatim_keeps_credentials() {
        let url = Url::parse_verbatim("http://allowed.invalid@127.0.0.1:9/exfil").unwrap();
        assert_eq!(url.authority, "allowed.invalid@127.0.0.1:9");
        assert_eq!(url.path_with_query, "/exfil");
    }
}
