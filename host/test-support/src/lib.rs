//! What evos's integration tests (`tests/integration`) and adversarial
//! catalogue (`tests/adversarial`) share: paths into the repository, a
//! shared engine, manifest overrides, a local HTTP server that records what
//! it receives, raw HTTP requests and temp dirs. Development only.

// Test code states its expectations with unwrap/expect/panic: a failed
// expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod browser;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use evos::capability::kv::MemoryKv;
use evos::{CallInput, CallReport, Engine, EngineConfig, Manifest, Plugin, Runtime};

pub fn root() -> PathBuf {
    // The repository root: this package is host/cli.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// One engine for the whole test binary, with a compile cache so each
/// component compiles once.
pub fn engine() -> Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            Engine::new(EngineConfig {
                cache_dir: Some(root().join("target/evos-test-cache")),
                max_instances: 256,
                ..Default::default()
            })
            .expect("engine")
        })
        .clone()
}

pub fn runtime() -> Runtime {
    runtime_with_env(BTreeMap::new())
}

pub fn runtime_with_env(env: BTreeMap<String, String>) -> Runtime {
    Runtime::with_parts(engine(), Arc::new(MemoryKv::default()), env)
}

pub fn component_path(name: &str) -> PathBuf {
    root().join("target/plugins").join(format!("{name}.wasm"))
}

pub fn component(name: &str) -> Vec<u8> {
    let path = component_path(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the plugins first with `cargo xtask plugins`",
            path.display()
        )
    })
}

/// The manifest of an example (`policies/<name>.toml`) or adversarial
/// (`policies/adversarial/<name>.toml`) plugin.
pub fn manifest_path(name: &str) -> PathBuf {
    let direct = root().join("policies").join(format!("{name}.toml"));
    if direct.exists() {
        direct
    } else {
        root()
            .join("policies/adversarial")
            .join(format!("{name}.toml"))
    }
}

pub fn manifest_text(name: &str) -> String {
    std::fs::read_to_string(manifest_path(name)).expect("manifest")
}

/// Parse manifest text as if it were the plugin's own file.
pub fn manifest_from(name: &str, text: &str) -> Manifest {
    let path = manifest_path(name);
    Manifest::parse(
        text,
        &path.display().to_string(),
        path.parent().expect("dir"),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

pub fn manifest(name: &str) -> Manifest {
    manifest_from(name, &manifest_text(name))
}

/// Load and register `name` with its own manifest.
pub fn load(rt: &Runtime, name: &str) -> Arc<Plugin> {
    load_with(rt, name, manifest(name))
}

pub fn load_with(rt: &Runtime, name: &str, manifest: Manifest) -> Arc<Plugin> {
    let plugin = rt
        .load(manifest, &component(name), name)
        .unwrap_or_else(|e| panic!("loading {name}: {e}"));
    rt.register(plugin.clone());
    plugin
}

pub fn sample(name: &str) -> serde_json::Value {
    let dir = if root().join("plugins").join(name).exists() {
        root().join("plugins").join(name)
    } else {
        root().join("plugins/adversarial").join(name)
    };
    let text = std::fs::read_to_string(dir.join("invoke-input.json")).expect("invoke-input.json");
    serde_json::from_str(&text).expect("sample is JSON")
}

pub async fn call_json(rt: &Runtime, plugin: &Arc<Plugin>, input: serde_json::Value) -> CallReport {
    let input = CallInput::from_json(plugin.kind(), input).expect("input fits the kind");
    rt.call(plugin, input).await.expect("call")
}

/// A payout-limit call that must succeed: proves the host still serves
/// other plugins after an adversarial one.
pub async fn healthy_call(rt: &Runtime) {
    let plugin = load(rt, "payout-limit");
    let report = call_json(rt, &plugin, sample("payout-limit")).await;
    assert!(
        report.outcome.is_ok(),
        "healthy plugin failed after adversarial call: {report:?}"
    );
}

/// A request the local server received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Header names in lower case, values as sent.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A local HTTP/1.1 server on 127.0.0.1 that records requests and answers
/// each with `status` and a small JSON body. It stops when dropped.
pub struct Downstream {
    pub port: u16,
    pub received: Arc<Mutex<Vec<Received>>>,
    status: Arc<std::sync::atomic::AtomicU16>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Downstream {
    pub fn start(status: u16) -> Downstream {
        Downstream::start_for(status, std::time::Duration::from_secs(120))
    }

    /// [`Downstream::start`], accepting requests for `lifetime`.
    pub fn start_for(status: u16, lifetime: std::time::Duration) -> Downstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let status = Arc::new(std::sync::atomic::AtomicU16::new(status));
        let (rec, st, code) = (received.clone(), stop.clone(), status.clone());
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + lifetime;
            while !st.load(std::sync::atomic::Ordering::Relaxed)
                && std::time::Instant::now() < deadline
            {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                        serve_one(
                            stream,
                            code.load(std::sync::atomic::Ordering::Relaxed),
                            &rec,
                        );
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        });
        Downstream {
            port,
            received,
            status,
            stop,
        }
    }

    /// Answer further requests with `status`.
    pub fn set_status(&self, status: u16) {
        self.status
            .store(status, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }
}

impl Drop for Downstream {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Read one request, record it, then answer (recording first, so a test
/// that sees the response also sees the request).
fn serve_one(
    mut stream: std::net::TcpStream,
    status: u16,
    rec: &Mutex<Vec<Received>>,
) -> Option<()> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut length = 0usize;
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let h = header.trim();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    rec.lock().ok()?.push(Received {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let reply = format!("{{\"status\":{status},\"ref\":\"DS-1\"}}");
    let response = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
        reply.len()
    );
    stream.write_all(response.as_bytes()).ok()
}

/// A fresh directory under the system temp dir, unique per call, removed
/// with everything in it when the returned guard is dropped. Set
/// `EVOS_KEEP_TEST_DIRS=1` to keep them for a look after a failure.
///
/// The first call of a test process also removes the directories that
/// processes no longer running left behind (a run killed by a timeout drops
/// nothing), so the temp dir never fills up across runs.
pub fn tempdir(tag: &str) -> TempDir {
    static SWEEP: std::sync::Once = std::sync::Once::new();
    SWEEP.call_once(sweep_dead_runs);
    let dir = std::env::temp_dir().join(format!(
        "evos-test-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    TempDir(dir)
}

/// A test's temp directory; see [`tempdir`]. Derefs to its path.
#[derive(Debug)]
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    /// The directory's path, owned.
    pub fn path_buf(&self) -> std::path::PathBuf {
        self.0.clone()
    }
}

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for TempDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for TempDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("EVOS_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Removes `evos-test-<tag>-<pid>-<nanos>` directories whose process is gone.
fn sweep_dead_runs() {
    if std::env::var_os("EVOS_KEEP_TEST_DIRS").is_some() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with("evos-test-") {
            continue;
        }
        let mut parts = name.rsplit('-');
        let (Some(_nanos), Some(pid)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// One HTTP/1.1 request; returns status and body.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
    extra: &[(&str, &str)],
) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    if let Some(t) = token {
        head.push_str(&format!("authorization: Bearer {t}\r\n"));
    }
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).expect("write");
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = match text.split_once("\r\n\r\n") {
        Some((_, b)) => b.to_string(),
        None => String::new(),
    };
    (status, body)
}

/// The example app (`evos.toml`) with `claims-webhook` posting approved
/// actions to `endpoint`.
pub fn claims_app(endpoint: &str) -> evos::app::App {
    app_posting_to("evos.toml", endpoint)
}

/// The app file `file` (relative to the repository) with `claims-webhook`
/// posting approved actions to `endpoint`.
pub fn app_posting_to(file: &str, endpoint: &str) -> evos::app::App {
    let mut app = evos::app::App::load(root().join(file)).expect("app");
    for p in &mut app.plugins {
        if p.name == "claims-webhook" {
            p.manifest.set_config("endpoint", endpoint).expect("config");
        }
    }
    app
}

/// Serve `host`'s API on an ephemeral 127.0.0.1 port until the returned
/// sender is dropped or sent to; the port and that sender.
pub async fn serve_on_loopback(
    host: Arc<evos::server::Host>,
) -> (u16, tokio::sync::oneshot::Sender<()>) {
    let listener = evos::server::bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(evos::server::serve(
        host,
        listener,
        async {
            let _ = stopped.await;
        },
        std::time::Duration::from_secs(5),
    ));
    (port, stop)
}

/// A registry over `dir`, with the shared test compile cache.
pub fn open_registry(dir: &std::path::Path) -> Arc<evos::registry::Registry> {
    evos::registry::Registry::open(
        dir,
        EngineConfig {
            cache_dir: Some(root().join("target/evos-test-cache")),
            max_instances: 64,
            ..Default::default()
        },
        BTreeMap::new(),
    )
    .expect("open registry")
}

/// fraud-score requests from `plugins/fraud-score/traffic.jsonl`: varied
/// claims.
pub fn fraud_traffic() -> Vec<evos::CallInput> {
    std::fs::read_to_string(root().join("plugins/fraud-score/traffic.jsonl"))
        .expect("traffic.jsonl")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            evos::CallInput::from_json(
                evos::manifest::Kind::ModelAdapter,
                serde_json::from_str(l).expect("json"),
            )
            .expect("input")
        })
        .collect()
}

/// A PostgreSQL server of its own for one test: a fresh cluster in a temp
/// dir, listening on 127.0.0.1 at a free port, trusting local connections
/// (nothing but the test can reach it), stopped and removed on drop.
/// `initdb` and `pg_ctl` refuse to run as root, so as root they run as the
/// `postgres` user.
pub struct PgServer {
    dir: TempDir,
    bin: PathBuf,
    as_root: bool,
    pub port: u16,
}

impl PgServer {
    pub fn start() -> PgServer {
        let bin = ["initdb"]
            .iter()
            .find_map(|tool| {
                std::env::var_os("PATH").and_then(|paths| {
                    std::env::split_paths(&paths)
                        .map(|p| p.join(tool))
                        .find(|p| p.exists())
                        .and_then(|p| p.canonicalize().ok())
                        .and_then(|p| p.parent().map(Path::to_path_buf))
                })
            })
            .or_else(|| {
                let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                    .ok()?
                    .flatten()
                    .map(|e| e.path().join("bin"))
                    .filter(|p| p.join("initdb").exists())
                    .collect();
                found.sort();
                found.pop()
            })
            .expect("PostgreSQL's initdb (apt-get install postgresql; .ci/run does)");
        let as_root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let dir = tempdir("pg");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let server = PgServer {
            dir,
            bin,
            as_root,
            port,
        };
        if as_root {
            let owned = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&server.dir)
                .status()
                .expect("chown");
            assert!(owned.success(), "chown the cluster directory to postgres");
        }
        let data = server.dir.join("data");
        server.tool(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "evos".as_ref(),
                "-A".as_ref(),
                "trust".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--no-sync".as_ref(),
            ],
        );
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off -c max_connections=200",
            server.dir.display()
        );
        server.tool(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                server.dir.join("log").as_os_str(),
                "-o".as_ref(),
                options.as_ref(),
                "-w".as_ref(),
                "start".as_ref(),
            ],
        );
        server
    }

    fn tool(&self, name: &str, args: &[&std::ffi::OsStr]) {
        let program = self.bin.join(name);
        let mut cmd = if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let out = cmd.args(args).output().expect("run a PostgreSQL tool");
        assert!(
            out.status.success(),
            "{name} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The URL of a database that exists (`postgres`).
    pub fn url(&self) -> String {
        format!("postgres://evos@127.0.0.1:{}/postgres", self.port)
    }

    /// A new, empty database on this server; its URL.
    pub fn database(&self) -> String {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let name = format!(
            "evos_{}",
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        self.psql(&format!("CREATE DATABASE {name}"));
        format!("postgres://evos@127.0.0.1:{}/{name}", self.port)
    }

    /// Run `sql` with `psql` on the `postgres` database; its output.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_on(&self.url(), sql)
    }

    /// Run `sql` with `psql` on the database of `url` (one of this
    /// server's); its output.
    pub fn psql_on(&self, url: &str, sql: &str) -> String {
        let database = url.rsplit('/').next().unwrap_or("postgres");
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-U", "evos", "-d", database, "-tAc", sql])
            .arg("-p")
            .arg(self.port.to_string())
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let program = self.bin.join("pg_ctl");
        let mut cmd = if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let _ = cmd
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// The example app file's text with absolute paths (so it may be written
/// anywhere), the connector's manifest replaced by `connector` when given.
pub fn example_app_text(connector: Option<&Path>) -> String {
    let base = root();
    std::fs::read_to_string(base.join("evos.toml"))
        .expect("evos.toml")
        .lines()
        .map(|l| {
            if let Some(manifest) = connector
                && l == "manifest = \"policies/claims-webhook.toml\""
            {
                return format!("manifest = \"{}\"", manifest.display());
            }
            for key in ["manifest = \"", "component = \""] {
                if let Some(rest) = l.strip_prefix(key) {
                    return format!("{key}{}/{rest}", base.display());
                }
            }
            l.to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A NATS server with JetStream for one test: listening on 127.0.0.1 at a
/// free port, its store in a temp dir, killed and removed on drop.
pub struct NatsServer {
    _dir: TempDir,
    child: std::process::Child,
    pub port: u16,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        let dir = tempdir("nats");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.join("store"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server (apt-get install nats-server; .ci/run does)");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nats-server did not start listening"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        NatsServer {
            _dir: dir,
            child,
            port,
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Publish `payloads` to `subject` on `stream` (made when missing, as
    /// evos makes it), each stored by the server before this returns.
    pub async fn publish(&self, stream: &str, subject: &str, payloads: Vec<Vec<u8>>) {
        let client = async_nats::connect(self.url()).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        let filter = format!("{}.>", subject.split('.').next().unwrap_or(subject));
        js.get_or_create_stream(async_nats::jetstream::stream::Config {
            name: stream.to_string(),
            subjects: vec![filter],
            ..Default::default()
        })
        .await
        .expect("stream");
        let mut payloads = payloads.into_iter();
        // A stream just made may not take messages for a moment (the
        // server answers that nothing listens on the subject): the first
        // message is sent until it is stored.
        if let Some(first) = payloads.next() {
            let mut tries = 0;
            loop {
                let stored = match js.publish(subject.to_string(), first.clone().into()).await {
                    Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match stored {
                    Ok(()) => break,
                    Err(_) if tries < 100 => {
                        tries += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                    Err(e) => panic!("publishing to {subject}: {e}"),
                }
            }
        }
        let mut acks = Vec::new();
        for payload in payloads {
            acks.push(
                js.publish(subject.to_string(), payload.into())
                    .await
                    .expect("publish"),
            );
            if acks.len() >= 256 {
                for ack in acks.drain(..) {
                    ack.await.expect("stored");
                }
            }
        }
        for ack in acks {
            ack.await.expect("stored");
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
