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
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Api {
    /// A host on a fresh data directory with the claims app (its
    /// `[deployers]` table replaced by `deployers`), served on loopback.
    pub async fn start(tag: &str, deployers: evos::approval::DeployerGrants) -> Api {
        let dir = tempdir(tag).canonicalize().unwrap();
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
            http_request(port, method, &path, token.as_deref(), &body, &[])
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
        evos::audit::list(&self.host.registry.store().conn_for_reading(), 0, None).unwrap()
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
    let shared = tempdir("escalate-shared").canonicalize().unwrap();
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
    let _ = std::fs::remove_dir_all(&shared);
}
