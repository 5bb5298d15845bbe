//! API clients reaching past their role: a deployer whose manifest grants
//! the host's own files or other host-reaching capabilities, scoped tokens
//! reading other teams' data, and anonymous clients growing the audit log.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use evos::auth::Role;
use evos::server::{Host, ServerConfig};
use serde_json::Value;

use crate::support::*;

pub(crate) struct Api {
    pub port: u16,
    pub host: Arc<Host>,
    pub admin: String,
    pub dir: PathBuf,
    _scratch: TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl Api {
    /// A host on a fresh data directory with the claims app (its
    /// `[deployers]` table replaced by `deployers`), served on loopback.
    pub async fn start(tag: &str, deployers: evos::approval::DeployerGrants) -> Api {
        let scratch = tempdir(tag);
        let dir = scratch.canonicalize().unwrap();
        let mut config = ServerConfig::new(&dir, root().join("evos.toml"));
        config.engine.cache_dir = Some(root().join("target/evos-test-cache"));
        config.engine.max_instances = 32;
        let mut app = claims_app("http://127.0.0.1:9/claims/payouts");
        app.deployers = deployers;
        let (host, boot) = Host::bootstrap_with(config, app).await.unwrap();
        let admin = std::fs::read_to_string(boot.admin_token_file.unwrap())
            .unwrap()
            .trim()
            .to_string();
        let (port, stop) = serve_on_loopback(host.clone()).await;
        Api {
            port,
            host,
            admin,
            dir,
            _scratch: scratch,
            stop: Some(stop),
        }
    }

    pub fn token(&self, role: Role, scope: &str) -> String {
        self.host
            .tokens
            .create(&format!("{role}-{scope}"), role, scope, "test")
            .unwrap()
            .1
    }

    pub async fn send(
        &self,
        method: &'static str,
        path: &str,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> (u16, String) {
        let (port, path, token) = (self.port, path.to_string(), token.map(str::to_string));
        tokio::task::spawn_blocking(move || {
            http_request(
                port,
                method,
                &path,
                token.as_deref(),
                &body,
                &[("content-type", "application/json")],
            )
        })
        .await
        .unwrap()
    }

    /// Upload `component` and deploy it with `manifest` as `token`.
    pub async fn deploy(&self, token: &str, manifest: &str, component: &[u8]) -> (u16, Value) {
        let (status, body) = self
            .send("POST", "/v1/components", Some(token), component.to_vec())
            .await;
        let digest = match serde_json::from_str::<Value>(&body) {
            Ok(v) if status == 201 => v["digest"].as_str().unwrap().to_string(),
            _ => {
                // A deployer may upload too; an admin uploads when it cannot.
                let (s, b) = self
                    .send(
                        "POST",
                        "/v1/components",
                        Some(&self.admin),
                        component.to_vec(),
                    )
                    .await;
                assert_eq!(s, 201, "{b}");
                serde_json::from_str::<Value>(&b).unwrap()["digest"]
                    .as_str()
                    .unwrap()
                    .to_string()
            }
        };
        let name = manifest
            .lines()
            .find_map(|l| l.strip_prefix("name = "))
            .unwrap()
            .trim_matches('"')
            .to_string();
        let req = serde_json::json!({"manifest": manifest, "digest": digest});
        let (status, body) = self
            .send(
                "POST",
                &format!("/v1/plugins/{name}/deploy"),
                Some(token),
                req.to_string().into_bytes(),
            )
            .await;
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    pub fn audit(&self) -> Vec<evos::audit::Entry> {
        self.host.registry.store().audit_list(0, None).unwrap()
    }
}

fn probe_manifest(version: &str, host: &Path, mode: &str) -> String {
    format!(
        "[plugin]\nname = \"fs-probe\"\nkind = \"agent\"\nversion = \"{version}\"\n\n[capabilities]\nfiles = [{{ host = {:?}, guest = \"/data\", mode = \"{mode}\" }}]\n",
        host.display().to_string()
    )
}

/// Threat: a deployer scoped to its own plugins deploys a manifest whose
/// `files` grant is the host's data directory (or a parent of it, a
/// directory inside it, or the compile cache) and reads `admin.token`, the
/// cache key and the database. Refused for every token, admin included,
/// before anything is stored; the refusal is audited.
#[tokio::test(flavor = "multi_thread")]
async fn manifests_cannot_grant_the_data_directory_or_the_cache() {
    let api = Api::start("escalate-datadir", Default::default()).await;
    let deployer = api.token(Role::Deployer, "fs-*");
    let probe = component("fs-probe");
    let cache = root().join("target/evos-test-cache");
    let targets = [
        (api.dir.clone(), "is"),
        (api.dir.parent().unwrap().to_path_buf(), "contains"),
        (api.dir.join("blobs"), "lies inside"),
        (cache, "compile cache"),
    ];
    for (target, says) in &targets {
        for token in [&deployer, &api.admin] {
            let (status, body) = api
                .deploy(token, &probe_manifest("0.1.0", target, "ro"), &probe)
                .await;
            assert_eq!(status, 400, "{}: {body}", target.display());
            let message = body["error"]["message"].as_str().unwrap();
            assert!(
                message.contains("no manifest may grant it") && message.contains(says),
                "{message}"
            );
        }
    }
    assert!(api.host.registry.route("fs-probe").is_none());
    let refused = api
        .audit()
        .into_iter()
        .filter(|e| e.action == "deploy-refused" && e.subject == "fs-probe")
        .count();
    assert_eq!(refused, targets.len() * 2);

    // The CLI's runtime protects the data directory it was given too.
    let rt = evos::Runtime::new(engine());
    rt.protect(&api.dir, "data directory");
    let m = evos::Manifest::parse(
        &probe_manifest("0.1.0", &api.dir, "ro"),
        "probe.toml",
        Path::new("/"),
    )
    .unwrap();
    let err = rt.load(m, &probe, "fs-probe").err().expect("refused");
    assert!(err.to_string().contains("data directory"), "{err}");
}

/// Threat: a deployer token grants its plugin host-reaching capabilities
/// (a host directory, a private address, a raw socket, a host environment
/// variable) the operator never approved. Refused with 403 and how to get
/// approval; the same manifest deploys with an admin token, or once the
/// app file's `[deployers]` table approves the directory.
#[tokio::test(flavor = "multi_thread")]
async fn deployer_grants_beyond_the_safe_set_need_operator_approval() {
    let scratch = tempdir("escalate-shared");
    let shared = scratch.canonicalize().unwrap();
    std::fs::create_dir_all(shared.join("rates")).unwrap();
    let probe = component("fs-probe");

    let api = Api::start("escalate-deployer", Default::default()).await;
    let deployer = api.token(Role::Deployer, "fs-*");
    let manifest = probe_manifest("0.1.0", &shared.join("rates"), "ro");
    let (status, body) = api.deploy(&deployer, &manifest, &probe).await;
    assert_eq!(status, 403, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("needs an operator's approval") && message.contains("[deployers]"),
        "{message}"
    );
    assert!(api.host.registry.route("fs-probe").is_none());
    assert!(
        api.audit()
            .iter()
            .any(|e| e.action == "deploy-refused" && e.actor.starts_with("token/")),
        "the refusal is audited"
    );
    let (status, body) = api.deploy(&api.admin, &manifest, &probe).await;
    assert_eq!(status, 200, "an admin may grant it: {body}");
    drop(api);

    let mut approved: evos::approval::DeployerGrants = toml::from_str(&format!(
        "files = [{{ host = {:?}, mode = \"ro\" }}]",
        shared.display().to_string()
    ))
    .unwrap();
    approved.resolve(Path::new("/")).unwrap();
    let api = Api::start("escalate-approved", approved).await;
    let deployer = api.token(Role::Deployer, "fs-*");
    let (status, body) = api.deploy(&deployer, &manifest, &probe).await;
    assert_eq!(status, 200, "approved directory: {body}");
    // Read-write needs a read-write approval.
    let rw = probe_manifest("0.1.1", &shared.join("rates"), "rw");
    let (status, body) = api.deploy(&deployer, &rw, &probe).await;
    assert_eq!(status, 403, "{body}");
}

fn evos_cli(dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_evos"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

/// Threat: an anonymous client puts a newline and an ANSI escape sequence
/// in a URL path; `evos audit log` would print a forged line in red on the
/// operator's terminal. Human-readable output escapes control characters;
/// `--json` keeps the exact value.
#[tokio::test(flavor = "multi_thread")]
async fn client_text_cannot_forge_lines_or_drive_the_terminal() {
    let api = Api::start("escalate-forge", Default::default()).await;
    let (status, _) = api
        .send(
            "POST",
            "/v1/ingest/x%0A%1B%5B31m%20%20%201%20FORGED%20deploy%E2%80%AE",
            None,
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(status, 401);
    let forged = "/v1/ingest/x\n\u{1b}[31m   1 FORGED deploy\u{202e}";
    assert!(api.audit().iter().any(|e| e.subject == forged));

    let out = evos_cli(&api.dir, &["audit", "log"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{202e}'),
        "{text}"
    );
    assert!(
        !text.lines().any(|l| l.trim_start().starts_with("1 FORGED")),
        "{text}"
    );
    assert!(text.contains("x\\n\\u{1b}[31m"), "{text}");

    let out = evos_cli(&api.dir, &["audit", "log", "--json"]);
    let entries: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        entries.iter().any(|e| e["subject"] == forged),
        "JSON is exact"
    );
}

/// Threat: anonymous requests grow the audit log without bound: a refused
/// request with a 60 KB name, repeated as fast as a client can send.
/// Audited fields from unauthenticated input are cut (keeping length and
/// digest of the original), and refusals are audited at a bounded rate
/// per client, the rest counted.
#[tokio::test(flavor = "multi_thread")]
async fn anonymous_refusals_cannot_grow_the_audit_log_without_bound() {
    let api = Api::start("escalate-growth", Default::default()).await;
    let name = "n".repeat(60_000);
    let (status, _) = api
        .send("POST", &format!("/v1/ingest/{name}"), None, Vec::new())
        .await;
    assert_eq!(status, 401);
    let entry = api
        .audit()
        .into_iter()
        .rev()
        .find(|e| e.action == "access-refused")
        .unwrap();
    let stored = entry.subject.len() + entry.detail.to_string().len();
    assert!(stored < 2_000, "{stored} bytes stored for one refusal");
    assert!(
        entry.subject.contains("60011 bytes, sha256:"),
        "{}",
        entry.subject
    );

    let before = api.audit().len();
    let start = std::time::Instant::now();
    let sent = 300;
    for _ in 0..sent {
        let (status, _) = api.send("GET", "/v1/audit", None, Vec::new()).await;
        assert_eq!(status, 401);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let audited = api.audit().len() - before;
    // The burst (50, less the one above) plus what the rate (5/s) refills.
    let bound = 50 + (5.0 * elapsed).ceil() as usize + 1;
    assert!(audited <= bound, "{audited} of {sent} refusals audited");
    assert!(audited >= 40, "the burst is audited: {audited}");
    let (_, metrics) = api
        .send("GET", "/metrics", Some(&api.admin), Vec::new())
        .await;
    let suppressed: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix("evos_audit_refusals_suppressed_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(suppressed, sent - audited, "{metrics}");
}

/// Threat: scoped auditor and reviewer tokens read other teams' audit
/// entries, metrics and reviews, or decide their reviews. They see only
/// their plugins; a review outside the scope is refused (403, audited).
#[tokio::test(flavor = "multi_thread")]
async fn scoped_tokens_see_only_their_plugins() {
    let api = Api::start("escalate-scope", Default::default()).await;
    let claims = std::fs::read(root().join("plugins/claims-webhook/claims.json")).unwrap();
    let (status, body) = api
        .send(
            "POST",
            "/v1/ingest/claims-webhook",
            Some(&api.admin),
            claims,
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let auditor = api.token(Role::Auditor, "payout-*");
    let (status, body) = api
        .send("GET", "/v1/audit", Some(&auditor), Vec::new())
        .await;
    assert_eq!(status, 200, "{body}");
    let entries: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert!(!entries.is_empty(), "its own plugin's deploy is visible");
    for e in &entries {
        assert_eq!(e["subject"], "payout-limit", "{e}");
    }
    let (_, all) = api
        .send("GET", "/v1/audit", Some(&api.admin), Vec::new())
        .await;
    assert!(serde_json::from_str::<Vec<Value>>(&all).unwrap().len() > entries.len());

    let (status, metrics) = api
        .send("GET", "/metrics", Some(&auditor), Vec::new())
        .await;
    assert_eq!(status, 200);
    assert!(metrics.contains("plugin=\"payout-limit\""), "{metrics}");
    assert!(!metrics.contains("claims-"), "{metrics}");
    assert!(!metrics.contains("evos_pipeline_events_total"), "{metrics}");

    let stranger = api.token(Role::Reviewer, "other-*");
    let (status, body) = api
        .send("GET", "/v1/reviews", Some(&stranger), Vec::new())
        .await;
    assert_eq!(status, 200);
    assert_eq!(body.trim(), "[]");
    let pending = api.host.reviews.list(None).unwrap();
    let id = pending[0].id;
    let (status, body) = api
        .send(
            "POST",
            &format!("/v1/reviews/{id}/approve"),
            Some(&stranger),
            Vec::new(),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let owner = api.token(Role::Reviewer, "claims-*");
    let (_, body) = api
        .send("GET", "/v1/reviews", Some(&owner), Vec::new())
        .await;
    assert_eq!(
        serde_json::from_str::<Vec<Value>>(&body).unwrap().len(),
        pending.len()
    );
}

/// Threat: another local user reads the host's secrets and state: the
/// data directory is created 0700, and the database, the blobs, the
/// anchor and the admin token 0600.
#[tokio::test(flavor = "multi_thread")]
async fn the_data_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let scratch = tempdir("escalate-modes");
    let dir = scratch.join("data");
    let mut config = ServerConfig::new(&dir, root().join("evos.toml"));
    config.engine.cache_dir = Some(root().join("target/evos-test-cache"));
    config.engine.max_instances = 16;
    let (host, _) = Host::bootstrap_with(config, claims_app("http://127.0.0.1:9/claims"))
        .await
        .unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("blobs")), 0o700);
    for file in ["evos.db", "audit.anchor", "admin.token"] {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
    let blobs: Vec<_> = std::fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!blobs.is_empty());
    for blob in blobs {
        assert_eq!(mode(&blob), 0o600, "{}", blob.display());
    }
    drop(host);
}

/// A running `evos up` child with stderr collected.
struct Child {
    child: std::process::Child,
    port: u16,
    stderr: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `evos up` under `prlimit --nofile=<soft>:<hard>` on a fresh data
/// directory, and wait until it listens.
fn up_with_nofile(dir: &Path, soft: u64, hard: u64) -> Child {
    use std::io::BufRead;
    let mut child = std::process::Command::new("prlimit")
        .arg(format!("--nofile={soft}:{hard}"))
        .arg(env!("CARGO_BIN_EXE_evos"))
        .arg("--data-dir")
        .arg(dir)
        .args(["up", "--listen", "127.0.0.1:0", "--app"])
        .arg(root().join("evos.toml"))
        .env("EVOS_LOG", "warn,evos=info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let collected = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.split("listening on http://127.0.0.1:").nth(1) {
                let port: u16 = rest.split(' ').next().unwrap().parse().unwrap();
                let _ = tx.send(port);
            }
            collected.lock().unwrap().push(line);
        }
    });
    let port = rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .unwrap_or_else(|_| panic!("evos up did not start: {:?}", lines.lock().unwrap()));
    Child {
        child,
        port,
        stderr: lines,
    }
}

/// Threat: a client opens connections until the host is out of file
/// descriptors; the accept loop then fails at full speed, writing hundreds
/// of thousands of warnings a second. It backs off and warns once per
/// interval, and serves again once descriptors free up. At start, `evos
/// up` raises its soft open-file limit to the hard one.
#[test]
fn a_descriptor_flood_neither_spins_the_accept_loop_nor_stops_the_host() {
    let dir = tempdir("escalate-emfile");
    let raised = up_with_nofile(&dir.join("raised"), 100, 300);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", raised.child.id())).unwrap();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert_eq!(
        open_files.split_whitespace().nth(3),
        Some("300"),
        "soft limit raised: {open_files}"
    );
    drop(raised);

    let host = up_with_nofile(&dir.join("flooded"), 64, 64);
    let mut flood = Vec::new();
    for _ in 0..120 {
        if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", host.port)) {
            flood.push(s);
        }
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    let warnings = host
        .stderr
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("accept"))
        .count();
    assert!(
        (1..=3).contains(&warnings),
        "{warnings} accept warnings in 2 s: {:?}",
        host.stderr
            .lock()
            .unwrap()
            .iter()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
    );
    drop(flood);
    let mut healthy = false;
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let (status, _) = http_request(host.port, "GET", "/healthz", None, b"", &[]);
        if status == 200 {
            healthy = true;
            break;
        }
    }
    assert!(healthy, "the host serves again once the flood is gone");
    drop(host);
}
