//! What a deployer may grant: the grants that reach the host itself need
//! an operator's approval, not just a manifest.
//!
//! A manifest is written by whoever deploys it. An admin token (and the
//! CLI, which needs the data directory) belongs to the operator, who may
//! grant anything the host allows at all. A `deployer` token is someone
//! else — a team scoped to `claims-*`, a CI job — and a manifest of theirs
//! must not be a way to reach what the operator never meant them to reach:
//!
//! | grant | a deployer token may give it |
//! |---|---|
//! | `log`, `kv`, `config`, limits, rollout | always |
//! | `models` | for models inside the token's scope |
//! | `http` to names (`https://api.example.com/...`) | always: names reach public addresses only |
//! | `http` to IP literals and CIDRs (loopback, private, metadata) | only when covered by `[deployers] http` |
//! | `sockets` | only when covered by `[deployers] sockets` |
//! | `files` | only inside a `[deployers] files` directory, read-write only where that says `rw` |
//! | `env` | only variables listed in `[deployers] env` |
//!
//! The approved set lives in the app file, which only the operator edits:
//!
//! ```toml
//! [deployers]
//! http = ["http://127.0.0.1:*/claims/*"]
//! sockets = ["tcp://[10.1.0.0/16]:5432"]
//! files = [{ host = "data/rates", mode = "ro" }]
//! env = ["TRIAGE_DESK"]
//! ```
//!
//! Independently of all this, no manifest of anyone may grant the host's
//! data directory or compile cache (`evos_runtime::Runtime::protect`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::auth::scope_matches;
use crate::capability::egress::HttpRule;
use crate::capability::files::Mode;
use crate::capability::sockets::SocketRule;
use crate::manifest::{EnvName, Manifest};

/// The `[deployers]` table of an app file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployerGrants {
    /// Address entries (IP literals, CIDRs) a deployer may grant.
    #[serde(default)]
    pub http: Vec<HttpRule>,
    /// `sockets` entries a deployer may grant.
    #[serde(default)]
    pub sockets: Vec<SocketRule>,
    /// Directories (and everything under them) a deployer may grant.
    #[serde(default)]
    pub files: Vec<ApprovedDir>,
    /// Host environment variables a deployer may grant.
    #[serde(default)]
    pub env: Vec<EnvName>,
}

/// A directory approved for deployers' `files` grants.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovedDir {
    /// As written, relative to the app file's directory.
    pub host: PathBuf,
    /// `ro` (the default) or `rw`: the most a grant inside may have.
    #[serde(default = "read_only")]
    pub mode: Mode,
    #[serde(skip)]
    resolved: PathBuf,
}

fn read_only() -> Mode {
    Mode::Ro
}

impl DeployerGrants {
    /// Resolve the approved directories against `base` (the app file's
    /// directory); each must exist.
    pub fn resolve(&mut self, base: &Path) -> Result<(), String> {
        for dir in &mut self.files {
            dir.resolved = base.join(&dir.host).canonicalize().map_err(|e| {
                format!(
                    "[deployers] files: {:?} cannot be resolved ({e}); create the directory or correct `host`",
                    dir.host.display().to_string()
                )
            })?;
        }
        Ok(())
    }

    /// Check what a deployer token scoped to `scope` asks for in
    /// `manifest`. `Err` lists every grant that needs approval, each with
    /// how to get it.
    pub fn check(&self, manifest: &Manifest, scope: &str) -> Result<(), Vec<String>> {
        let caps = &manifest.capabilities;
        let mut problems = Vec::new();
        let approve = |what: String, table_line: String| {
            format!(
                "{what} needs an operator's approval: an admin adds {table_line} under [deployers] in the app file, or deploys this manifest with an admin token"
            )
        };
        for model in &caps.models {
            if !scope_matches(scope, model.as_str()) {
                problems.push(format!(
                    "models: `{model}` is outside this token's scope {scope:?}; a deployer may only grant models it may deploy itself"
                ));
            }
        }
        for rule in caps.http.iter().filter(|r| r.names_addresses()) {
            if !self.http.iter().any(|a| rule.covered_by(a)) {
                problems.push(approve(
                    format!("http entry {:?} (an address grant: it can reach loopback, private or metadata addresses)", rule.to_string()),
                    format!("http = [{:?}]", rule.to_string()),
                ));
            }
        }
        for rule in &caps.sockets {
            if !self.sockets.iter().any(|a| rule.covered_by(a)) {
                problems.push(approve(
                    format!("sockets entry {:?}", rule.to_string()),
                    format!("sockets = [{:?}]", rule.to_string()),
                ));
            }
        }
        for grant in &caps.files {
            let inside = |a: &&ApprovedDir| {
                grant.host_path().starts_with(&a.resolved)
                    && (grant.mode == Mode::Ro || a.mode == Mode::Rw)
            };
            if !self.files.iter().any(|a| inside(&a)) {
                let mode = match grant.mode {
                    Mode::Ro => "ro",
                    Mode::Rw => "rw",
                };
                problems.push(approve(
                    format!("files grant of {} ({mode})", grant.host_path().display()),
                    format!(
                        "files = [{{ host = {:?}, mode = \"{mode}\" }}]",
                        grant.host_path().display().to_string()
                    ),
                ));
            }
        }
        for var in &caps.env {
            if !self.env.contains(var) {
                problems.push(approve(
                    format!(
                        "env variable {:?} (the host's environment may hold secrets)",
                        var.0
                    ),
                    format!("env = [{:?}]", var.0),
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(caps: &str) -> Manifest {
        let dir = std::env::temp_dir();
        let text = format!(
            "[plugin]\nname = \"claims-x\"\nkind = \"agent\"\nversion = \"1.0.0\"\n[capabilities]\n{caps}\n"
        );
        Manifest::parse(&text, "test.toml", &dir).expect("manifest")
    }

    fn grants(toml_text: &str) -> DeployerGrants {
        let mut g: DeployerGrants = toml::from_str(toml_text).expect("grants");
        g.resolve(&std::env::temp_dir()).expect("resolve");
        g
    }

    #[test]
    fn safe_grants_need_no_approval() {
        let m = manifest(
            "log = true\nkv = {}\nhttp = [\"https://api.example.com:443/v1/*\"]\nmodels = [\"claims-model\"]",
        );
        assert_eq!(DeployerGrants::default().check(&m, "claims-*"), Ok(()));
    }

    #[test]
    fn address_http_needs_a_covering_approval() {
        let m = manifest("http = [\"http://127.0.0.1:8080/claims/*\"]");
        let problems = DeployerGrants::default()
            .check(&m, "*")
            .expect_err("refused");
        assert!(
            problems[0].contains("needs an operator's approval"),
            "{problems:?}"
        );
        assert!(problems[0].contains("[deployers]"), "{problems:?}");
        let approved = grants("http = [\"http://127.0.0.1:*/claims/*\"]");
        assert_eq!(approved.check(&m, "*"), Ok(()));
        let narrower = grants("http = [\"http://127.0.0.1:8080/claims/a/*\"]");
        assert!(narrower.check(&m, "*").is_err());
    }

    #[test]
    fn sockets_env_and_models_outside_scope_are_refused() {
        let m = manifest(
            "sockets = [\"tcp://[10.1.2.3]:5432\"]\nenv = [\"HOME\"]\nmodels = [\"other-model\"]",
        );
        let problems = DeployerGrants::default()
            .check(&m, "claims-*")
            .expect_err("refused");
        assert_eq!(problems.len(), 3, "{problems:?}");
        let approved = grants("sockets = [\"tcp://[10.1.0.0/16]:*\"]\nenv = [\"HOME\"]");
        let problems = approved.check(&m, "claims-*").expect_err("model");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("other-model"), "{problems:?}");
        assert_eq!(approved.check(&m, "*"), Ok(()));
    }

    #[test]
    fn files_need_an_approved_directory_of_enough_mode() {
        let root = std::env::temp_dir().join(format!("evos-approval-{}", std::process::id()));
        std::fs::create_dir_all(root.join("rates/2026")).expect("dirs");
        let m = Manifest::parse(
            "[plugin]\nname = \"claims-x\"\nkind = \"agent\"\nversion = \"1.0.0\"\n[capabilities]\nfiles = [{ host = \"rates/2026\", guest = \"/rates\", mode = \"rw\" }]\n",
            "test.toml",
            &root,
        )
        .expect("manifest");
        let mut ro: DeployerGrants =
            toml::from_str("files = [{ host = \"rates\" }]").expect("grants");
        ro.resolve(&root).expect("resolve");
        assert!(ro.check(&m, "*").is_err(), "rw inside an ro approval");
        let mut rw: DeployerGrants =
            toml::from_str("files = [{ host = \"rates\", mode = \"rw\" }]").expect("grants");
        rw.resolve(&root).expect("resolve");
        assert_eq!(rw.check(&m, "*"), Ok(()));
        let _ = std::fs::remove_dir_all(&root);
    }
}
