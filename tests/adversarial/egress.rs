//! Egress: a plugin with `wasi:http` tries to reach what its grant does not
//! cover, or to bend the requests it may send. The `http-exfil` plugin sends
//! each request as written and reports per attempt; local servers on
//! 127.0.0.1 record what actually arrives.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use evos::{CallOutput, CallReport, Outcome};
use serde_json::{Value, json};

use crate::support::*;

/// A request a [`Recorder`] received.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: BTreeMap<String, String>,
}

/// A local HTTP/1.1 server on 127.0.0.1 that records every request and
/// answers by path:
/// - `/redirect` → 302 to `http://127.0.0.1:<redirect-to>/landed`;
/// - `/hop` → 200 carrying hop-by-hop response headers;
/// - `/big` → 200 with a 200,000-byte body;
/// - `/silent` → waits 3 s before answering;
/// - `/drip` → a body of one byte every 100 ms for 5 s;
/// - anything else → 200 `ok`.
struct Recorder {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Recorder {
    fn start(redirect_to: u16) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let log = log.clone();
                std::thread::spawn(move || serve(stream, &log, redirect_to));
            }
        });
        Recorder { port, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

fn serve(mut stream: TcpStream, log: &Mutex<Vec<Seen>>, redirect_to: u16) -> Option<()> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    log.lock().ok()?.push(Seen {
        path: path.clone(),
        headers,
    });
    let reply = |status: &str, extra: &str, body: &str| {
        format!(
            "HTTP/1.1 {status}\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let response = match path.as_str() {
        "/redirect" => reply(
            "302 Found",
            &format!("location: http://127.0.0.1:{redirect_to}/landed\r\n"),
            "",
        ),
        "/hop" => "HTTP/1.1 200 OK\r\nconnection: close, x-secret-hop\r\nx-secret-hop: 1\r\nkeep-alive: timeout=5\r\nproxy-authenticate: Basic\r\nproxy-x: 1\r\ntrailer: x-t\r\nx-visible: yes\r\ncontent-length: 2\r\n\r\nok"
            .to_string(),
        "/big" => reply("200 OK", "", &"a".repeat(200_000)),
        "/silent" => {
            std::thread::sleep(Duration::from_secs(3));
            reply("200 OK", "", "late")
        }
        "/drip" => {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n")
                .ok()?;
            for _ in 0..50 {
                std::thread::sleep(Duration::from_millis(100));
                stream.write_all(b"x").ok()?;
            }
            return Some(());
        }
        _ => reply("200 OK", "", "ok"),
    };
    stream.write_all(response.as_bytes()).ok()
}

/// The http-exfil plugin with `http = <grant>` (TOML) instead of its own.
fn exfil_with(grant: &str) -> (evos::Runtime, Arc<evos::Plugin>) {
    let text = format!(
        "[plugin]\nname = \"http-exfil\"\nkind = \"agent\"\nversion = \"0.1.0\"\n\n[limits]\ntimeout = \"10s\"\n\n[capabilities]\nhttp = {grant}\n"
    );
    let rt = runtime();
    let plugin = load_with(&rt, "http-exfil", manifest_from("http-exfil", &text));
    (rt, plugin)
}

/// Send `requests` (each a URL or a request object) and return the report
/// and the per-attempt results.
async fn probe(
    rt: &evos::Runtime,
    plugin: &Arc<evos::Plugin>,
    requests: Vec<Value>,
) -> (CallReport, Vec<Value>) {
    let requests: Vec<Value> = requests
        .into_iter()
        .map(|r| match r {
            Value::String(url) => json!({ "url": url }),
            other => other,
        })
        .collect();
    let event = json!({"id": "e", "kind": "test.http-exfil", "payload": {"requests": requests}});
    let r = call_json(rt, plugin, event).await;
    let attempts = match &r.output {
        Some(CallOutput::Actions(actions)) => actions[0].payload["attempts"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
        _ => panic!("no report: {r:?}"),
    };
    (r, attempts)
}

fn refusals(r: &CallReport) -> String {
    r.refusals
        .iter()
        .map(|f| format!("{}: {}", f.capability, f.detail))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every attempt failed with `HTTP-request-denied`, each refusal is in the
/// report, and nothing reached `server`.
fn all_denied(r: &CallReport, attempts: &[Value], server: &Recorder) {
    for a in attempts {
        assert_eq!(a["error"], "HTTP-request-denied", "{a}");
    }
    assert!(matches!(r.outcome, Outcome::Denied { .. }), "{r:?}");
    assert_eq!(r.refusals.len(), attempts.len(), "{}", refusals(r));
    assert!(server.seen().is_empty(), "{:?}", server.seen());
}

/// Threat: a URL carries userinfo naming the allowed host
/// (`http://allowed@127.0.0.1/`), hoping a naive check reads the host
/// before `@`; it is refused even though both names are granted.
#[tokio::test(flavor = "multi_thread")]
async fn userinfo_naming_the_allowed_host_is_refused() {
    let s = Recorder::start(0);
    let (rt, p) = exfil_with(r#"["http://localhost:*/*", "http://127.0.0.1:*/*"]"#);
    let urls = [
        format!("http://localhost@127.0.0.1:{}/x", s.port),
        format!("http://localhost:pw@127.0.0.1:{}/x", s.port),
        format!("http://@127.0.0.1:{}/x", s.port),
    ];
    let (r, attempts) = probe(&rt, &p, urls.iter().map(|u| json!(u)).collect()).await;
    all_denied(&r, &attempts, &s);
    assert!(refusals(&r).contains("userinfo"), "{}", refusals(&r));
}

/// Threat: loopback written as `127.1`, `0x7f.1`, `2130706433`, `0177.0.0.1`,
/// `[::ffff:127.0.0.1]` or `[::1]` slips past a grant that names only a
/// host; each is parsed as the address it denotes and refused.
#[tokio::test(flavor = "multi_thread")]
async fn ip_literal_forms_of_loopback_are_refused() {
    let s = Recorder::start(0);
    let (rt, p) = exfil_with(r#"["http://localhost:*/*"]"#);
    let port = s.port;
    let urls: Vec<Value> = [
        "127.1",
        "0x7f.1",
        "2130706433",
        "0177.0.0.1",
        "[::ffff:127.0.0.1]",
        "[::1]",
    ]
    .iter()
    .map(|h| json!(format!("http://{h}:{port}/x")))
    .collect();
    let (r, attempts) = probe(&rt, &p, urls).await;
    all_denied(&r, &attempts, &s);
    let why = refusals(&r);
    assert!(why.contains("http://127.0.0.1:"), "decoded: {why}");
    assert!(why.contains("not in the http allowlist"), "{why}");
}

/// Threat: an odd spelling of a granted address reaches it under a
/// different name; the literal is decoded, vetted as 127.0.0.1, and the
/// upstream sees the normalized `Host`.
#[tokio::test(flavor = "multi_thread")]
async fn ip_literal_forms_are_vetted_as_the_address_they_denote() {
    let s = Recorder::start(0);
    let (rt, p) = exfil_with(r#"["http://127.0.0.1:*/*"]"#);
    let (r, attempts) = probe(&rt, &p, vec![json!(format!("http://0x7f.1:{}/ok", s.port))]).await;
    assert_eq!(attempts[0]["status"], 200, "{attempts:?} {}", refusals(&r));
    let seen = s.seen();
    assert_eq!(
        seen[0].headers["host"],
        format!("127.0.0.1:{}", s.port),
        "{seen:?}"
    );
}

/// Threat: a granted name resolves to loopback (`localhost`, or a hostile
/// DNS answer); the host resolves it itself and refuses the address unless
/// 127.0.0.1 is granted explicitly.
#[tokio::test(flavor = "multi_thread")]
async fn a_name_resolving_to_loopback_needs_an_address_grant() {
    let s = Recorder::start(0);
    let url = format!("http://localhost:{}/ok", s.port);
    let (rt, p) = exfil_with(r#"["http://localhost:*/*"]"#);
    let (r, attempts) = probe(&rt, &p, vec![json!(url)]).await;
    all_denied(&r, &attempts, &s);
    let why = refusals(&r);
    assert!(
        why.contains("localhost resolved to") && why.contains("a loopback address"),
        "{why}"
    );
    assert!(why.contains("grant it explicitly"), "{why}");

    let (rt, p) = exfil_with(r#"["http://localhost:*/*", "http://127.0.0.1:*/*"]"#);
    let (r, attempts) = probe(&rt, &p, vec![json!(url)]).await;
    assert_eq!(attempts[0]["status"], 200, "{attempts:?} {}", refusals(&r));
    assert_eq!(s.seen()[0].headers["host"], format!("localhost:{}", s.port));
}

/// Threat: a plugin with a broad address grant reaches the cloud metadata
/// endpoint or `0.0.0.0` (which Linux routes to the local host); metadata
/// needs an entry naming exactly that address, the unspecified address is
/// never reachable.
#[tokio::test(flavor = "multi_thread")]
async fn metadata_and_unspecified_addresses_are_refused_under_a_broad_grant() {
    let s = Recorder::start(0);
    let (rt, p) = exfil_with(r#"["http://[0.0.0.0/0]:*/*", "http://[::/0]:*/*"]"#);
    let urls = vec![
        json!("http://169.254.169.254/latest/meta-data/"),
        json!("http://[fd00:ec2::254]/latest/meta-data/"),
        json!("http://100.100.100.200/latest/meta-data/"),
        json!(format!("http://0.0.0.0:{}/ok", s.port)),
        json!(format!("http://[::]:{}/ok", s.port)),
        json!(format!("http://[::ffff:0.0.0.0]:{}/ok", s.port)),
    ];
    let (r, attempts) = probe(&rt, &p, urls).await;
    all_denied(&r, &attempts, &s);
    let why = refusals(&r);
    assert!(
        why.contains("169.254.169.254 is a cloud metadata address"),
        "{why}"
    );
    assert!(why.contains("never reachable"), "{why}");
    // The same grant reaches an ordinary granted address.
    let (_, attempts) = probe(&rt, &p, vec![json!(s.url("/ok"))]).await;
    assert_eq!(attempts[0]["status"], 200, "{attempts:?}");
}

/// Threat: a plugin switches scheme or port against a rule
/// (`http://host:443` for `https://host`, https to an http-only port); the
/// rule names both, so neither matches.
#[tokio::test(flavor = "multi_thread")]
async fn scheme_and_port_mismatches_are_refused() {
    let s = Recorder::start(0);
    let grant = format!(
        r#"["https://127.0.0.1/*", "http://127.0.0.1:{}/*"]"#,
        s.port
    );
    let (rt, p) = exfil_with(&grant);
    let urls = vec![
        json!("http://127.0.0.1:443/x"),
        json!(format!("https://127.0.0.1:{}/x", s.port)),
        json!(format!("http://127.0.0.1:{}/x", s.port + 1)),
    ];
    let (r, attempts) = probe(&rt, &p, urls).await;
    all_denied(&r, &attempts, &s);
    assert!(
        refusals(&r).contains("names this host but a different scheme, port or path"),
        "{}",
        refusals(&r)
    );
}

/// Threat: case, a trailing dot or a look-alike suffix changes what a host
/// check sees; names are normalized the same way on both sides, so the
/// granted name passes in any spelling and `localhost.evil.test` does not.
#[tokio::test(flavor = "multi_thread")]
async fn host_names_are_normalized_before_matching() {
    let s = Recorder::start(0);
    let grant = format!(
        r#"["http://LOCALHOST.:{0}/*", "http://127.0.0.1:{0}/*"]"#,
        s.port
    );
    let (rt, p) = exfil_with(&grant);
    let (r, attempts) = probe(
        &rt,
        &p,
        vec![json!(format!("http://LocalHost.:{}/ok", s.port))],
    )
    .await;
    assert_eq!(attempts[0]["status"], 200, "{attempts:?} {}", refusals(&r));
    assert_eq!(s.seen()[0].headers["host"], format!("localhost:{}", s.port));

    let (r, attempts) = probe(
        &rt,
        &p,
        vec![
            json!(format!("http://localhost.evil.test:{}/ok", s.port)),
            json!(format!("http://xn--localhost-.test:{}/ok", s.port)),
        ],
    )
    .await;
    for a in &attempts {
        assert_eq!(a["error"], "HTTP-request-denied", "{a}");
    }
    assert_eq!(s.seen().len(), 1, "{}", refusals(&r));
}

/// Threat: dot-segments, encoded dots, an encoded slash or a double
/// encoding walk out of a granted path prefix (`/api/%2e%2e/admin`); paths
/// are normalized before matching and ambiguous escapes refused, and what
/// is sent is the normalized path.
#[tokio::test(flavor = "multi_thread")]
async fn encoded_paths_cannot_escape_the_prefix() {
    let s = Recorder::start(0);
    let (rt, p) = exfil_with(&format!(r#"["http://127.0.0.1:{}/api/*"]"#, s.port));
    let escapes: Vec<Value> = [
        "/api/../admin",
        "/api/%2e%2e/admin",
        "/api/.%2E/admin",
        "/api/..%2Fadmin",
        "/api/..%5Cadmin",
        "/api/%252e%252e/admin",
        "/api%2F..%2Fadmin",
    ]
    .iter()
    .map(|path| json!(s.url(path)))
    .collect();
    let (r, attempts) = probe(&rt, &p, escapes).await;
    all_denied(&r, &attempts, &s);

    let (_, attempts) = probe(&rt, &p, vec![json!(s.url("/%61pi/./ok%7e"))]).await;
    assert_eq!(attempts[0]["status"], 200, "{attempts:?}");
    assert_eq!(s.seen()[0].path, "/api/ok~");
}

/// Threat: an allowed upstream answers with a redirect to an address the
/// plugin may not reach; the host does not follow it, the guest sees the
/// 3xx, and the redirect target receives nothing.
#[tokio::test(flavor = "multi_thread")]
async fn redirects_are_not_followed() {
    let target = Recorder::start(0);
    let s = Recorder::start(target.port);
    let (rt, p) = exfil_with(&format!(r#"["http://127.0.0.1:{}/*"]"#, s.port));
    let (_, attempts) = probe(&rt, &p, vec![json!(s.url("/redirect"))]).await;
    assert_eq!(attempts[0]["status"], 302, "{attempts:?}");
    assert!(target.seen().is_empty(), "{:?}", target.seen());
    assert_eq!(s.seen().len(), 1);
}

/// Threat: a plugin smuggles hop-by-hop or forbidden headers (`Host`,
/// `Connection`, `TE`, `Proxy-*`, ...) to steer an upstream or proxy, or
/// reads an upstream's; the guest cannot set them, the upstream gets the
/// vetted `Host`, and hop-by-hop response headers (including those named
/// by `Connection`) never reach the guest.
#[tokio::test(flavor = "multi_thread")]
async fn hop_by_hop_and_forbidden_headers_are_stripped() {
    let s = Recorder::start(0);
    let (rt, p) = exfil_with(&format!(r#"["http://127.0.0.1:{}/*"]"#, s.port));
    let forbidden = [
        "host",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
        "proxy-anything",
        "http2-settings",
    ];
    let mut requests: Vec<Value> = forbidden
        .iter()
        .map(|h| json!({"url": s.url("/smuggle"), "headers": [["x-ok", "1"], [h, "evil.example"]]}))
        .collect();
    requests.push(json!({"url": s.url("/hop"), "headers": [["x-ok", "1"]]}));
    let (_, attempts) = probe(&rt, &p, requests).await;
    for (a, h) in attempts.iter().zip(forbidden) {
        assert_eq!(a["result"], "invalid", "{h}: {a}");
        assert!(
            a["error"].as_str().unwrap().contains("headers rejected"),
            "{a}"
        );
    }
    let hop = attempts.last().unwrap();
    assert_eq!(hop["status"], 200, "{hop}");
    let names: Vec<&str> = hop["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h[0].as_str().unwrap())
        .collect();
    assert!(names.contains(&"x-visible"), "{names:?}");
    for h in [
        "connection",
        "x-secret-hop",
        "keep-alive",
        "proxy-authenticate",
        "proxy-x",
        "trailer",
    ] {
        assert!(!names.contains(&h), "{h} reached the guest: {names:?}");
    }
    let seen = s.seen();
    assert_eq!(seen.len(), 1, "only the clean request left: {seen:?}");
    let sent = &seen[0].headers;
    assert_eq!(sent["host"], format!("127.0.0.1:{}", s.port));
    assert_eq!(sent["x-ok"], "1");
    for h in forbidden.iter().filter(|h| **h != "host") {
        assert!(!sent.contains_key(*h), "{h} was sent: {sent:?}");
    }
}

/// Threat: an upstream answers with an endless or huge body to fill host
/// memory; the manifest's `max-response-bytes` cuts it off, the guest gets
/// an error and the report a refusal.
#[tokio::test(flavor = "multi_thread")]
async fn a_response_over_the_cap_is_cut_off_and_reported() {
    let s = Recorder::start(0);
    let grant = format!(
        r#"{{ allow = ["http://127.0.0.1:{}/*"], max-response-bytes = "16KiB" }}"#,
        s.port
    );
    let (rt, p) = exfil_with(&grant);
    let (r, attempts) = probe(&rt, &p, vec![json!(s.url("/big")), json!(s.url("/ok"))]).await;
    let big = &attempts[0];
    assert_eq!(big["status"], 200, "{big}");
    assert!(
        big["error"]
            .as_str()
            .unwrap()
            .contains("body size exceeds limit: 16384 bytes"),
        "{big}"
    );
    assert!(big["body_bytes"].as_u64().unwrap() <= 16 * 1024, "{big}");
    assert!(
        refusals(&r).contains("exceeded max-response-bytes (16384 bytes)"),
        "{}",
        refusals(&r)
    );
    assert_eq!(attempts[1]["status"], 200, "a small response still passes");
}

/// Threat: an upstream accepts the connection and never answers, holding
/// the plugin's call; the manifest's `first-byte-timeout` ends the wait.
#[tokio::test(flavor = "multi_thread")]
async fn first_byte_timeout_bounds_a_silent_upstream() {
    let s = Recorder::start(0);
    let grant = format!(
        r#"{{ allow = ["http://127.0.0.1:{}/*"], first-byte-timeout = "300ms" }}"#,
        s.port
    );
    let (rt, p) = exfil_with(&grant);
    // The upstream answers after 3 s: a timeout error proves the bound.
    let (_, attempts) = probe(&rt, &p, vec![json!(s.url("/silent"))]).await;
    assert_eq!(
        attempts[0]["error"], "connection-read-timeout",
        "{attempts:?}"
    );
}

/// Threat: an upstream drips its body a byte at a time, never tripping a
/// between-bytes timeout; the manifest's `total-timeout` bounds the whole
/// request, body included.
#[tokio::test(flavor = "multi_thread")]
async fn total_timeout_bounds_a_dripping_body() {
    let s = Recorder::start(0);
    let grant = format!(
        r#"{{ allow = ["http://127.0.0.1:{}/*"], total-timeout = "1s" }}"#,
        s.port
    );
    let (rt, p) = exfil_with(&grant);
    // The body takes 5 s to drip: a timeout with part of it proves the bound.
    let (_, attempts) = probe(&rt, &p, vec![json!(s.url("/drip"))]).await;
    let a = &attempts[0];
    assert_eq!(a["status"], 200, "{a}");
    assert!(a["error"].as_str().unwrap().contains("timeout"), "{a}");
    assert!(a["body_bytes"].as_u64().unwrap() < 50, "{a}");
}

/// Threat: a guest adds fields until host memory runs out (many small ones
/// or a few huge ones); each `fields` resource is capped at 32 KiB and the
/// guest's call ends at the cap with a trap naming it, while the host keeps
/// serving.
/// Advisory: GHSA-243v-98vx-264h
#[tokio::test(flavor = "multi_thread")]
async fn too_many_or_too_large_fields_end_the_call_not_the_host() {
    let (rt, p) = exfil_with(r#"["http://127.0.0.1:*/*"]"#);
    for (count, value_bytes) in [(1_000_000, 0), (1_000, 1024 * 1024)] {
        let event = json!({"id": "f", "kind": "test.http-exfil",
            "payload": {"field-flood": {"count": count, "value-bytes": value_bytes}}});
        let r = call_json(&rt, &p, event).await;
        // wasmtime-wasi-http 48 traps the guest at the cap (the call
        // ends with the limit named), rather than returning an error.
        let refused = matches!(&r.outcome, Outcome::Trap { message }
            if message.contains("total size of fields exceeds limit"));
        assert!(refused, "{count} x {value_bytes} B: {r:?}");
    }
    healthy_call(&rt).await;
}

/// Threat: an explicit CIDR grant is read as wider than written; it allows
/// its range on its port and nothing else.
#[tokio::test(flavor = "multi_thread")]
async fn a_cidr_grant_allows_its_range_and_nothing_else() {
    let s = Recorder::start(0);
    let (rt, p) = exfil_with(&format!(r#"["http://[127.0.0.0/30]:{}/*"]"#, s.port));
    let (r, attempts) = probe(
        &rt,
        &p,
        vec![
            json!(s.url("/ok")),
            json!(format!("http://127.0.0.9:{}/ok", s.port)),
            json!(format!("http://[::1]:{}/ok", s.port)),
            json!(format!("http://localhost:{}/ok", s.port)),
        ],
    )
    .await;
    assert_eq!(attempts[0]["status"], 200, "{attempts:?}");
    for a in &attempts[1..] {
        assert_eq!(a["error"], "HTTP-request-denied", "{a}");
    }
    assert_eq!(r.refusals.len(), 3, "{}", refusals(&r));
    assert_eq!(s.seen().len(), 1);
}

const TEST_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBmjCCAUGgAwIBAgIUPl5mhyaVOwW65GZos2zqZeHvpvgwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyNDEyNTU1MVoYDzIxMjYxMDMx
MTI1NTUxWjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAAQQTwOy9zMpqwY5wXVJFSa5NyV4VtdcvgzVf2+xSkPvdTzu7Pi85zzO
GRgcCx1aMvtjypqQjhB8uV10a2ey4GBvo28wbTAdBgNVHQ4EFgQU2fX1OaxBk+98
PUSxShCBbAgMe1cwHwYDVR0jBBgwFoAU2fX1OaxBk+98PUSxShCBbAgMe1cwDwYD
VR0TAQH/BAUwAwEB/zAaBgNVHREEEzARgglsb2NhbGhvc3SHBH8AAAEwCgYIKoZI
zj0EAwIDRwAwRAIgM2H61k6as9X9XuPNVJhQoXIVqylJWn74TZqruVf37OICIAdY
8PAaAd0UBxXYvoac12fTM60+ZFdLGGiODEW/G5cP
-----END CERTIFICATE-----
";

const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQga28701FfpQYB6AkJ
hjnj3NUJQewpQYUF7pNEKkJhB8ShRANCAAQQTwOy9zMpqwY5wXVJFSa5NyV4Vtdc
vgzVf2+xSkPvdTzu7Pi85zzOGRgcCx1aMvtjypqQjhB8uV10a2ey4GBv
-----END PRIVATE KEY-----
";

/// A TLS server on 127.0.0.1 with a self-signed certificate for
/// `localhost`; records the SNI of every ClientHello it gets.
async fn tls_server() -> (u16, Arc<Mutex<Vec<Option<String>>>>) {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert = CertificateDer::from_pem_slice(TEST_CERT.as_bytes()).unwrap();
    let key = PrivateKeyDer::from_pem_slice(TEST_KEY.as_bytes()).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let snis = Arc::new(Mutex::new(Vec::new()));
    let log = snis.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (config, log) = (config.clone(), log.clone());
            tokio::spawn(async move {
                let acceptor =
                    tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
                if let Ok(start) = acceptor.await {
                    let sni = start.client_hello().server_name().map(str::to_string);
                    log.lock().unwrap().push(sni);
                    let _ = start.into_stream(config).await;
                }
            });
        }
    });
    (port, snis)
}

/// Threat: https is used to reach a loopback service by name, or a server
/// that presents a certificate no public root vouches for; the name is
/// vetted like any other, the host does the TLS handshake itself to the
/// vetted address with the original name as SNI, and an untrusted
/// certificate fails the request.
#[tokio::test(flavor = "multi_thread")]
async fn https_goes_to_the_vetted_address_and_verifies_the_certificate() {
    let (port, snis) = tls_server().await;
    let url = format!("https://localhost:{port}/ok");

    let (rt, p) = exfil_with(&format!(r#"["https://localhost:{port}/*"]"#));
    let (r, attempts) = probe(&rt, &p, vec![json!(url)]).await;
    assert_eq!(attempts[0]["error"], "HTTP-request-denied", "{attempts:?}");
    assert!(
        refusals(&r).contains("a loopback address"),
        "{}",
        refusals(&r)
    );
    assert!(snis.lock().unwrap().is_empty(), "nothing may connect");

    let grant = format!(r#"["https://localhost:{port}/*", "https://127.0.0.1:{port}/*"]"#);
    let (rt, p) = exfil_with(&grant);
    let (_, attempts) = probe(&rt, &p, vec![json!(url)]).await;
    assert_eq!(
        attempts[0]["error"], "TLS-certificate-error",
        "{attempts:?}"
    );
    assert_eq!(
        snis.lock().unwrap().as_slice(),
        [Some("localhost".to_string())],
        "SNI is the original name"
    );
}

/// A TCP echo server on 127.0.0.1: reads until the peer stops writing,
/// answers `echo: <what it read>`, and counts the connections it accepted.
struct Echo {
    port: u16,
    accepted: Arc<Mutex<usize>>,
}

impl Echo {
    fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(Mutex::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                *count.lock().unwrap() += 1;
                std::thread::spawn(move || {
                    stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
                    let mut got = Vec::new();
                    let _ = (&mut stream).take(4096).read_to_end(&mut got);
                    let mut reply = b"echo: ".to_vec();
                    reply.extend_from_slice(&got);
                    let _ = stream.write_all(&reply);
                });
            }
        });
        Echo { port, accepted }
    }

    fn accepted(&self) -> usize {
        *self.accepted.lock().unwrap()
    }
}

/// The tcp-probe plugin with `sockets = <grant>` (TOML) instead of its own.
fn tcp_probe_with(grant: &str) -> (evos::Runtime, Arc<evos::Plugin>) {
    let text = format!(
        "[plugin]\nname = \"tcp-probe\"\nkind = \"agent\"\nversion = \"0.1.0\"\n\n[limits]\ntimeout = \"10s\"\n\n[capabilities]\nsockets = {grant}\n"
    );
    let rt = runtime();
    let plugin = load_with(&rt, "tcp-probe", manifest_from("tcp-probe", &text));
    (rt, plugin)
}

/// Run `attempts` and return the report and the per-attempt results
/// (`ok: ...` or `refused: ...`).
async fn tcp_probe(
    rt: &evos::Runtime,
    plugin: &Arc<evos::Plugin>,
    attempts: Vec<Value>,
) -> (CallReport, Vec<String>) {
    let event = json!({"id": "e", "kind": "test.tcp-probe", "payload": {"attempts": attempts}});
    let r = call_json(rt, plugin, event).await;
    let results = match &r.output {
        Some(CallOutput::Actions(actions)) => actions[0].payload["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect(),
        _ => panic!("no report: {r:?}"),
    };
    (r, results)
}

fn socket_refusals(r: &CallReport) -> Vec<String> {
    r.refusals
        .iter()
        .filter(|f| f.capability == "sockets")
        .map(|f| f.detail.clone())
        .collect()
}

/// Threat: vetting breaks what it should allow; a loopback address and
/// port granted explicitly connects and talks, and nothing is refused.
#[tokio::test(flavor = "multi_thread")]
async fn sockets_a_granted_address_connects_and_talks() {
    let echo = Echo::start();
    let (rt, p) = tcp_probe_with(&format!(r#"["tcp://127.0.0.1:{}"]"#, echo.port));
    let (r, results) = tcp_probe(
        &rt,
        &p,
        vec![json!({"connect": format!("127.0.0.1:{}", echo.port), "send": "ping"})],
    )
    .await;
    assert_eq!(results, ["ok: echo: ping"], "{r:?}");
    assert!(socket_refusals(&r).is_empty(), "{:?}", r.refusals);
    assert_eq!(echo.accepted(), 1);
}

/// Threat: a component that opens raw TCP sockets is deployed under a
/// manifest that grants none. Language runtimes import `wasi:sockets`
/// whether or not a plugin uses it, so the interfaces are linked inert:
/// it loads, and every connect, listen, lookup and datagram is refused
/// before any packet leaves, each reported with the grant that is missing.
#[tokio::test(flavor = "multi_thread")]
async fn sockets_not_granted_are_linked_inert_and_every_use_is_refused() {
    let echo = Echo::start();
    let rt = runtime();
    let text = "[plugin]\nname = \"tcp-probe\"\nkind = \"agent\"\nversion = \"0.1.0\"\n";
    let p = load_with(&rt, "tcp-probe", manifest_from("tcp-probe", text));
    let (r, results) = tcp_probe(
        &rt,
        &p,
        vec![
            json!({"connect": format!("127.0.0.1:{}", echo.port), "send": "ping"}),
            json!({"listen": "127.0.0.1:0"}),
            json!({"lookup": "localhost:80"}),
            json!({"udp": format!("127.0.0.1:{}", echo.port), "send": "x"}),
        ],
    )
    .await;
    assert_eq!(results.len(), 4);
    assert!(
        results.iter().all(|r| r.starts_with("refused:")),
        "{results:?}"
    );
    assert_eq!(echo.accepted(), 0);
    let refused = socket_refusals(&r);
    assert!(refused.len() >= 3, "{refused:?}");
    assert!(
        refused
            .iter()
            .all(|f| f.contains("grants no `sockets`") && f.contains("sockets = [\"tcp://")),
        "{refused:?}"
    );
    assert!(
        refused
            .iter()
            .any(|f| f.starts_with("creating a TCP socket")),
        "{refused:?}"
    );
    assert!(
        refused.iter().any(|f| f.starts_with("looking up")),
        "{refused:?}"
    );
    assert!(
        refused
            .iter()
            .any(|f| f.starts_with("creating a UDP socket")),
        "{refused:?}"
    );
    assert!(
        matches!(&r.outcome, Outcome::Denied { capability, .. } if capability == "sockets"),
        "{:?}",
        r.outcome
    );
}

/// Threat: a plugin granted one address and port connects to another
/// service on the same address; the entry names the port, so the
/// connection is refused before any packet leaves.
#[tokio::test(flavor = "multi_thread")]
async fn sockets_a_granted_address_on_another_port_is_refused() {
    let (granted, other) = (Echo::start(), Echo::start());
    let (rt, p) = tcp_probe_with(&format!(r#"["tcp://127.0.0.1:{}"]"#, granted.port));
    let (r, results) = tcp_probe(
        &rt,
        &p,
        vec![json!({"connect": format!("127.0.0.1:{}", other.port), "send": "x"})],
    )
    .await;
    assert!(results[0].starts_with("refused:"), "{results:?}");
    let refused = socket_refusals(&r);
    assert!(
        refused.len() == 1 && refused[0].contains("names this address but a different port"),
        "{refused:?}"
    );
    assert_eq!(other.accepted() + granted.accepted(), 0);
}

/// Threat: under a grant that names a host only, a plugin reaches the
/// loopback service that name resolves to, writing loopback as an address
/// (`127.0.0.1`, `[::1]`, IPv4-mapped `[::ffff:127.0.0.1]`, NAT64
/// `[64:ff9b::7f00:1]`, 6to4 `[2002:7f00:1::1]`) or asking the guest's
/// resolver; names grant public addresses only, and the guest cannot look
/// names up.
#[tokio::test(flavor = "multi_thread")]
async fn sockets_loopback_forms_under_a_name_grant_are_refused() {
    let echo = Echo::start();
    let port = echo.port;
    let (rt, p) = tcp_probe_with(&format!(r#"["tcp://localhost:{port}"]"#));
    let forms = [
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        format!("[::ffff:127.0.0.1]:{port}"),
        format!("[64:ff9b::7f00:1]:{port}"),
        format!("[2002:7f00:1::1]:{port}"),
    ];
    let mut attempts: Vec<Value> = forms
        .iter()
        .map(|a| json!({"connect": a, "send": "x"}))
        .collect();
    attempts.push(json!({"lookup": format!("localhost:{port}")}));
    let (r, results) = tcp_probe(&rt, &p, attempts).await;
    for (result, form) in results.iter().zip(forms.iter().chain([&"lookup".into()])) {
        assert!(result.starts_with("refused:"), "{form}: {result}");
    }
    let refused = socket_refusals(&r).join("\n");
    assert!(refused.contains("127.0.0.1"), "{refused}");
    assert!(refused.contains("a loopback address"), "{refused}");
    assert!(refused.contains("a NAT64 address"), "{refused}");
    assert!(refused.contains("a 6to4 address"), "{refused}");
    assert!(
        refused.contains("looking up \"localhost\" is refused"),
        "{refused}"
    );
    assert_eq!(echo.accepted(), 0);
}

/// Threat: a plugin with a broad CIDR grant (`0.0.0.0/0`, `169.254.0.0/16`)
/// opens a TCP connection to the cloud metadata endpoint, or to `0.0.0.0`
/// (which Linux routes to the local host); metadata needs an entry naming
/// exactly that address and the unspecified address is never reachable.
#[tokio::test(flavor = "multi_thread")]
async fn sockets_metadata_under_a_broad_grant_is_refused() {
    let echo = Echo::start();
    let (rt, p) = tcp_probe_with(r#"["tcp://[169.254.0.0/16]:*", "tcp://[0.0.0.0/0]:*"]"#);
    let (r, results) = tcp_probe(
        &rt,
        &p,
        vec![
            json!({"connect": "169.254.169.254:80", "send": "GET /latest/meta-data/"}),
            json!({"connect": format!("0.0.0.0:{}", echo.port), "send": "x"}),
        ],
    )
    .await;
    for result in &results {
        assert!(result.starts_with("refused:"), "{results:?}");
    }
    let refused = socket_refusals(&r).join("\n");
    assert!(
        refused.contains("a cloud metadata address")
            && refused.contains("tcp://169.254.169.254:80"),
        "{refused}"
    );
    assert_eq!(echo.accepted(), 0);
}

/// Threat: a plugin granted outgoing TCP opens a listener (on loopback or
/// every interface) to receive connections from outside the sandbox;
/// binding to an address and listening are refused.
#[tokio::test(flavor = "multi_thread")]
async fn sockets_bind_and_listen_are_refused() {
    let (rt, p) = tcp_probe_with(r#"["tcp://[0.0.0.0/0]:*", "tcp://[::/0]:*"]"#);
    let (r, results) = tcp_probe(
        &rt,
        &p,
        vec![
            json!({"listen": "127.0.0.1:0"}),
            json!({"listen": "0.0.0.0:0"}),
            json!({"listen": "[::]:0"}),
        ],
    )
    .await;
    for result in &results {
        assert!(result.starts_with("refused:"), "{results:?}");
    }
    let refused = socket_refusals(&r).join("\n");
    assert!(
        refused.contains("binding a TCP socket to 127.0.0.1:0"),
        "{refused}"
    );
    assert!(
        refused.contains("listening for TCP connections"),
        "{refused}"
    );
}

/// Threat: a plugin sends UDP (DNS-style exfiltration, or reaching a UDP
/// service) under a TCP grant, or a manifest grants UDP; a `udp://` entry
/// is refused at load and creating a UDP socket is refused at run time.
#[tokio::test(flavor = "multi_thread")]
async fn sockets_udp_is_refused() {
    let text = "[plugin]\nname = \"tcp-probe\"\nkind = \"agent\"\nversion = \"0.1.0\"\n\n[capabilities]\nsockets = [\"udp://127.0.0.1:53\"]\n";
    let path = manifest_path("tcp-probe");
    let err = evos::Manifest::parse(text, &path.display().to_string(), path.parent().unwrap())
        .expect_err("a udp entry must be refused")
        .to_string();
    assert!(err.contains("UDP is not grantable"), "{err}");

    let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    server
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let port = server.local_addr().unwrap().port();
    let (rt, p) = tcp_probe_with(r#"["tcp://[0.0.0.0/0]:*", "tcp://127.0.0.1:53"]"#);
    let (r, results) = tcp_probe(
        &rt,
        &p,
        vec![json!({"udp": format!("127.0.0.1:{port}"), "send": "secret"})],
    )
    .await;
    assert!(results[0].starts_with("refused:"), "{results:?}");
    let refused = socket_refusals(&r).join("\n");
    assert!(
        refused.contains("creating a UDP socket is refused"),
        "{refused}"
    );
    let mut buf = [0; 64];
    assert!(server.recv_from(&mut buf).is_err(), "a datagram got out");
}

/// A local server that answers every request after `hold` and closes the
/// connection, counting connections open at once.
struct Holding {
    port: u16,
    most: Arc<std::sync::atomic::AtomicUsize>,
}

impl Holding {
    fn start(hold: Duration) -> Holding {
        use std::sync::atomic::Ordering::SeqCst;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (o, m) = (open.clone(), most.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let now = o.fetch_add(1, SeqCst) + 1;
                m.fetch_max(now, SeqCst);
                let o = o.clone();
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                        if line == "\r\n" {
                            break;
                        }
                        line.clear();
                    }
                    std::thread::sleep(hold);
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    );
                    drop(stream);
                    o.fetch_sub(1, SeqCst);
                });
            }
        });
        Holding { port, most }
    }

    fn most(&self) -> usize {
        self.most.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Start `count` requests at once from one call of `plugin`.
async fn burst(
    rt: &evos::Runtime,
    plugin: &Arc<evos::Plugin>,
    url: &str,
    count: usize,
) -> (CallReport, Value) {
    let event = json!({"id": "e", "kind": "test.http-exfil", "payload": {"burst": {"url": url, "count": count}}});
    let r = call_json(rt, plugin, event).await;
    let report = match &r.output {
        Some(CallOutput::Actions(actions)) => actions[0].payload.value().clone(),
        _ => panic!("no report: {r:?}"),
    };
    (r, report)
}

/// Threat: one call opens hundreds of outgoing connections at once and
/// holds them, starving the host (and its API) of file descriptors.
/// Requests beyond `max-connections-per-call` in flight are refused at
/// once and reported; the upstream never sees more at a time.
#[tokio::test(flavor = "multi_thread")]
async fn one_call_cannot_hold_more_connections_than_its_limit() {
    let upstream = Holding::start(Duration::from_millis(400));
    let (rt, p) = exfil_with(&format!(
        "{{ allow = [\"http://127.0.0.1:{}/*\"], max-connections-per-call = 4 }}",
        upstream.port
    ));
    let (r, report) = burst(
        &rt,
        &p,
        &format!("http://127.0.0.1:{}/x", upstream.port),
        40,
    )
    .await;
    assert_eq!(report["responses"], 4, "{report}");
    let errors = report["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 36, "{report}");
    assert!(
        errors.iter().all(|e| e == "HTTP-request-denied"),
        "{report}"
    );
    assert!(
        upstream.most() <= 4,
        "{} connections at once",
        upstream.most()
    );
    assert!(
        refusals(&r).contains("max-connections-per-call"),
        "{}",
        refusals(&r)
    );
    // The default is bounded too.
    let (rt, p) = exfil_with(&format!("[\"http://127.0.0.1:{}/*\"]", upstream.port));
    let (_, report) = burst(
        &rt,
        &p,
        &format!("http://127.0.0.1:{}/x", upstream.port),
        200,
    )
    .await;
    assert_eq!(report["responses"], 16, "{report}");
    assert!(
        upstream.most() <= 16,
        "{} connections at once",
        upstream.most()
    );
}

/// Threat: a plugin's concurrent calls together hold more outgoing
/// connections than its grant allows. Beyond `max-connections`, a request
/// waits for one to close (idle keep-alive connections are closed first)
/// for its connect timeout, then fails with `connection-limit-reached`,
/// reported.
#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_cannot_hold_more_connections_than_its_limit() {
    let upstream = Holding::start(Duration::from_millis(1500));
    let (rt, p) = exfil_with(&format!(
        "{{ allow = [\"http://127.0.0.1:{}/*\"], max-connections = 2, connect-timeout = \"300ms\" }}",
        upstream.port
    ));
    let url = format!("http://127.0.0.1:{}/x", upstream.port);
    let first = burst(&rt, &p, &url, 2);
    let second = async {
        // Let the first call take both connections.
        tokio::time::sleep(Duration::from_millis(200)).await;
        burst(&rt, &p, &url, 1).await
    };
    let ((_, a), (r, b)) = tokio::join!(first, second);
    assert_eq!(a["responses"], 2, "{a}");
    assert_eq!(b["responses"], 0, "{b}");
    assert_eq!(b["errors"][0], "connection-limit-reached", "{b}");
    assert!(refusals(&r).contains("max-connections"), "{}", refusals(&r));
    assert!(
        upstream.most() <= 2,
        "{} connections at once",
        upstream.most()
    );
    // Once the first call's connections are gone, the plugin connects again.
    let (_, c) = burst(&rt, &p, &url, 2).await;
    assert_eq!(c["responses"], 2, "{c}");
}

/// Threat: a plugin opens connections until the host process is out of
/// file descriptors; the failures must neither pass for the upstream's
/// answer (`connection-refused` would send a guest retrying elsewhere)
/// nor go unreported. They fail as `connection-limit-reached`, each a
/// refusal naming the host's exhaustion. Run in a child `evos invoke`
/// with a low open-file limit.
#[test]
fn a_host_out_of_descriptors_is_reported_not_passed_off_as_a_refused_connection() {
    let upstream = Holding::start(Duration::from_millis(1000));
    let dir = tempdir("egress-emfile");
    let manifest = dir.join("http-exfil.toml");
    std::fs::write(
        &manifest,
        format!(
            "[plugin]\nname = \"http-exfil\"\nkind = \"agent\"\nversion = \"0.1.0\"\n\n[limits]\ntimeout = \"10s\"\n\n[capabilities]\nhttp = {{ allow = [\"http://127.0.0.1:{}/*\"], max-connections = 200, max-connections-per-call = 200 }}\n",
            upstream.port
        ),
    )
    .unwrap();
    let input = dir.join("burst.json");
    std::fs::write(
        &input,
        json!({"id": "e", "kind": "test.burst", "payload": {"burst": {"url": format!("http://127.0.0.1:{}/x", upstream.port), "count": 120}}}).to_string(),
    )
    .unwrap();
    let out = std::process::Command::new("prlimit")
        .arg("--nofile=64:64")
        .arg(env!("CARGO_BIN_EXE_evos"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("invoke")
        .arg(&manifest)
        .arg(component_path("http-exfil"))
        .arg("--input")
        .arg(&input)
        .arg("--json")
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let payload = &report["output"]["actions"][0]["payload"];
    let errors: Vec<&str> = payload["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(payload["responses"].as_u64().unwrap() > 0, "{payload}");
    assert!(!errors.is_empty(), "the limit was not reached: {payload}");
    assert!(
        errors.iter().all(|e| *e == "connection-limit-reached"),
        "{errors:?}"
    );
    let refusals = report["refusals"].as_array().unwrap();
    assert!(
        refusals.iter().any(|r| r["detail"]
            .as_str()
            .unwrap()
            .contains("the host is out of resources")),
        "{refusals:?}"
    );
}
