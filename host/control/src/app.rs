//! The app file (`evos.toml`): which plugins make up a host and how events
//! flow between them.
//!
//! ```toml
//! [plugins.claims-webhook]                     # the key is the plugin's name
//! manifest = "policies/claims-webhook.toml"    # paths relative to this file
//! component = "target/plugins/claims-webhook.wasm"
//! executes = ["approve-payout"]                # connector: action kinds it carries out
//!
//! [plugins.claims-triage]
//! manifest = "policies/claims-triage.toml"
//! component = "target/plugins/claims-triage.wasm"
//! subscribes = ["claim.submitted"]             # agent: event kinds it handles
//!
//! [plugins.payout-limit]
//! manifest = "policies/payout-limit.toml"
//! component = "target/plugins/payout-limit.wasm"
//! guards = ["approve-payout"]                  # policy: action kinds it decides ("*" = all)
//! ```
//!
//! `[recording]` says which events are recorded, redacted, for replay
//! (see [`crate::recording`]); `[sources.<connector>]` names a NATS
//! JetStream stream a connector's input comes from (see [`crate::source`]).
//!
//! Model adapters need no bindings: agents reach them by name through the
//! `models` capability, and the host resolves the name among the app's
//! plugins. `evos invoke` and `evos run` use the same file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::approval::DeployerGrants;
use crate::manifest::{Kind, Manifest, PluginName};
use crate::runtime::{Plugin, Runtime};
use crate::{Error, Result};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    plugins: BTreeMap<PluginName, RawEntry>,
    /// What deployer tokens may grant beyond the safe set
    /// ([`crate::approval`]).
    #[serde(default)]
    deployers: DeployerGrants,
    /// Which events are recorded, redacted, for replay
    /// ([`crate::recording`]).
    recording: Option<crate::recording::RawRecording>,
    /// Event sources of connectors ([`crate::source`]).
    #[serde(default)]
    sources: BTreeMap<PluginName, crate::source::RawSource>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    manifest: PathBuf,
    component: PathBuf,
    #[serde(default)]
    subscribes: Vec<String>,
    #[serde(default)]
    guards: Vec<String>,
    #[serde(default)]
    executes: Vec<String>,
}

/// One plugin of the app, with its bindings.
#[derive(Debug, Clone)]
pub struct AppPlugin {
    pub name: String,
    pub manifest: Manifest,
    pub component: PathBuf,
    /// Agents: event kinds handled.
    pub subscribes: Vec<String>,
    /// Policies: action kinds decided (`*` = all).
    pub guards: Vec<String>,
    /// Connectors: action kinds carried out.
    pub executes: Vec<String>,
}

/// A parsed, validated app file.
#[derive(Debug, Clone)]
pub struct App {
    pub path: PathBuf,
    pub plugins: Vec<AppPlugin>,
    /// What deployer tokens may grant beyond the safe set.
    pub deployers: DeployerGrants,
    /// Which events are recorded and how long they are kept.
    pub recording: Option<crate::recording::RecordingConfig>,
    /// Connectors' NATS JetStream sources.
    pub sources: Vec<crate::source::Source>,
}

impl App {
    pub fn load(path: impl AsRef<Path>) -> Result<App> {
        let path = path.as_ref();
        let err = |message: String| Error::App {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            let looked = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
            err(format!(
                "cannot read the app file (looked at {}): {e}; run evos from the directory that holds the app file (evos.toml in the repository), or name it with --app <path>",
                looked.display()
            ))
        })?;
        let mut raw: RawApp =
            toml::from_str(&text).map_err(|e| err(e.to_string().trim_end().to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        raw.deployers.resolve(base).map_err(err)?;
        let mut plugins = Vec::new();
        for (name, entry) in raw.plugins {
            let manifest = Manifest::load(base.join(&entry.manifest))?;
            if manifest.name() != name.as_str() {
                return Err(err(format!(
                    "[plugins.{name}] points at {} whose plugin name is `{}`; use the same name in both",
                    entry.manifest.display(),
                    manifest.name()
                )));
            }
            let kind = manifest.kind();
            let misplaced = |key: &str, wants: Kind| {
                err(format!(
                    "[plugins.{name}] sets `{key}`, which only applies to {wants} plugins, but `{name}` is a {kind}"
                ))
            };
            if !entry.subscribes.is_empty() && kind != Kind::Agent {
                return Err(misplaced("subscribes", Kind::Agent));
            }
            if !entry.guards.is_empty() && kind != Kind::Policy {
                return Err(misplaced("guards", Kind::Policy));
            }
            if !entry.executes.is_empty() && kind != Kind::Connector {
                return Err(misplaced("executes", Kind::Connector));
            }
            plugins.push(AppPlugin {
                name: name.to_string(),
                manifest,
                component: base.join(&entry.component),
                subscribes: entry.subscribes,
                guards: entry.guards,
                executes: entry.executes,
            });
        }
        let connectors: Vec<&str> = plugins
            .iter()
            .filter(|p| p.manifest.kind() == Kind::Connector)
            .map(|p| p.name.as_str())
            .collect();
        let recording = raw
            .recording
            .map(|r| r.validate(&connectors))
            .transpose()
            .map_err(err)?;
        let sources = crate::source::validate(raw.sources, &connectors).map_err(err)?;
        Ok(App {
            path: path.to_path_buf(),
            plugins,
            deployers: raw.deployers,
            recording,
            sources,
        })
    }

    pub fn get(&self, name: &str) -> Option<&AppPlugin> {
        self.plugins.iter().find(|p| p.name == name)
    }

    /// Load every plugin into `runtime` and register it. Stops at the first
    /// plugin that fails, naming it.
    pub fn load_into(&self, runtime: &Runtime) -> Result<Vec<Arc<Plugin>>> {
        self.plugins.iter().map(|p| p.load_into(runtime)).collect()
    }
}

impl AppPlugin {
    /// Load this plugin into `runtime` and register it.
    pub fn load_into(&self, runtime: &Runtime) -> Result<Arc<Plugin>> {
        let bytes = runtime.engine().read_component(&self.component)?;
        let plugin = runtime.load(
            self.manifest.clone(),
            &bytes,
            &self.component.display().to_string(),
        )?;
        runtime.register(plugin.clone());
        Ok(plugin)
    }
}
