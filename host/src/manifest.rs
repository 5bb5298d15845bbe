//! Capability manifests: what a plugin is and what it may reach.
//!
//! A manifest is parsed once, at load, into typed values (parse, don't
//! validate): names, durations, sizes, URLs and paths are checked as they are
//! read, unknown fields are rejected, and every error names the file, the line
//! and what to write instead. Everything that is not granted is denied: an
//! empty `[capabilities]` table links no host interface at all.
//!
//! ```toml
//! [plugin]
//! name = "claims-triage"          # [a-z][a-z0-9-]*, at most 63 characters
//! kind = "agent"                  # connector | model-adapter | policy | agent
//! version = "1.0.0"               # semver
//! description = "optional"
//!
//! [limits]                        # optional; defaults shown
//! fuel = 100_000_000              # wasm fuel per call
//! memory = "64MiB"                # linear memory of the whole instance
//! timeout = "2s"                  # wall clock per call
//! max-concurrency = 16            # calls of this plugin in flight at once
//!
//! [capabilities]                  # deny by default
//! log = true                      # or { max-lines = 1000, max-line-bytes = 4096 }
//! kv = { max-value-bytes = 65536, max-keys = 10000, max-key-bytes = 256 }
//! models = ["fraud-score"]        # model adapters an agent may call
//! http = ["https://claims.example.com:443/api/*"]   # or { allow = [...], total-timeout = "30s", ... }
//! files = [{ host = "data/rates", guest = "/rates", mode = "ro" }]
//! env = ["REGION"]
//!
//! [config]                        # read-only values for the `config` interface
//! allow-below = 1000
//! ```
//!
//! Policies are pure: a `policy` manifest may grant only `log` and `[config]`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::capability::files::FileGrant;
use crate::capability::http::HttpGrant;
use crate::capability::kv::KvGrant;
use crate::capability::log::LogGrant;
use crate::{Error, Result};

/// A validated plugin manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub plugin: PluginInfo,
    pub limits: Limits,
    pub capabilities: Capabilities,
    /// Values served by the `config` interface; the grant is the table
    /// itself. Read with [`Manifest::config`], change with
    /// [`Manifest::set_config`] (which keeps `source` in step).
    pub(crate) config: BTreeMap<String, String>,
    /// How a canary of this version is judged.
    pub rollout: crate::rollout::RolloutPolicy,
    /// What a model adapter's usage costs, for cost-per-call metrics.
    pub cost: Option<Cost>,
    /// Where the manifest came from, for error messages.
    pub origin: String,
    /// The manifest text as read, kept so a deployed version can be restored
    /// exactly (grants included).
    pub source: String,
    /// The directory relative `files` paths were resolved against.
    pub base: std::path::PathBuf,
    /// 1-based line of the `[capabilities]` header, if present.
    capabilities_line: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginInfo {
    pub name: PluginName,
    pub kind: Kind,
    pub version: Version,
    #[serde(default)]
    pub description: String,
}

/// Resource limits of one call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Limits {
    /// Fuel (roughly, wasm instructions) one call may burn.
    #[serde(default = "Limits::default_fuel")]
    pub fuel: Fuel,
    /// Linear memory of the whole instance, all memories together. Guards
    /// against a plugin exhausting the host's memory.
    #[serde(default = "Limits::default_memory")]
    pub memory: MemorySize,
    /// Wall-clock time of one call, host calls included. Guards against
    /// a plugin holding a worker forever.
    #[serde(default = "Limits::default_timeout")]
    pub timeout: Timeout,
    /// Calls of this plugin in flight at once; further calls wait.
    #[serde(default = "Limits::default_concurrency")]
    pub max_concurrency: Concurrency,
}

impl Limits {
    fn default_fuel() -> Fuel {
        Fuel(100_000_000)
    }
    fn default_memory() -> MemorySize {
        MemorySize(64 * 1024 * 1024)
    }
    fn default_timeout() -> Timeout {
        Timeout(Duration::from_secs(2))
    }
    fn default_concurrency() -> Concurrency {
        Concurrency(16)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: Limits::default_fuel(),
            memory: Limits::default_memory(),
            timeout: Limits::default_timeout(),
            max_concurrency: Limits::default_concurrency(),
        }
    }
}

/// Everything a plugin may reach. `None`/empty means not granted.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Capabilities {
    #[serde(
        default,
        deserialize_with = "crate::capability::log::deserialize_grant"
    )]
    pub log: Option<LogGrant>,
    #[serde(default)]
    pub kv: Option<KvGrant>,
    #[serde(default)]
    pub models: Vec<PluginName>,
    /// Outgoing HTTP: a list of allowlist entries, or a table with `allow`
    /// and request limits (see [`crate::capability::http`]).
    #[serde(default)]
    pub http: HttpGrant,
    #[serde(default)]
    pub files: Vec<FileGrant>,
    #[serde(default)]
    pub env: Vec<EnvName>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    plugin: PluginInfo,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    capabilities: Capabilities,
    #[serde(default)]
    config: BTreeMap<String, ConfigValue>,
    #[serde(default)]
    rollout: crate::rollout::RolloutPolicy,
    #[serde(default)]
    cost: Option<Cost>,
}

/// Prices of a model adapter's usage units (any currency, consistently).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Cost {
    /// Price of 1,000 input units (tokens, features, ...).
    #[serde(default)]
    pub per_1k_input_units: f64,
    /// Price of 1,000 output units.
    #[serde(default)]
    pub per_1k_output_units: f64,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ConfigValue {
    String(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

impl ConfigValue {
    fn into_string(self) -> String {
        match self {
            ConfigValue::String(s) => s,
            ConfigValue::Integer(i) => i.to_string(),
            ConfigValue::Float(f) => f.to_string(),
            ConfigValue::Bool(b) => b.to_string(),
        }
    }
}

impl Manifest {
    /// Read and validate a manifest file. Relative `files` host paths are
    /// resolved against the manifest's directory.
    pub fn load(path: impl AsRef<Path>) -> Result<Manifest> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::Manifest {
            path: path.display().to_string(),
            message: format!("cannot read the manifest: {e}"),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Manifest::parse(&text, &path.display().to_string(), base)
    }

    /// Parse and validate manifest text. `origin` names it in errors; `base`
    /// is the directory relative `files` paths are resolved against.
    pub fn parse(text: &str, origin: &str, base: &Path) -> Result<Manifest> {
        let err = |message: String| Error::Manifest {
            path: origin.to_string(),
            message,
        };
        let raw: RawManifest = toml::from_str(text).map_err(|e| err(describe_toml_error(&e)))?;
        let capabilities_line = line_of(text, |l| l.trim_start().starts_with("[capabilities]"));
        let mut manifest = Manifest {
            plugin: raw.plugin,
            limits: raw.limits,
            capabilities: raw.capabilities,
            config: raw
                .config
                .into_iter()
                .map(|(k, v)| (k, v.into_string()))
                .collect(),
            rollout: raw.rollout,
            cost: raw.cost,
            origin: origin.to_string(),
            source: text.to_string(),
            base: base.to_path_buf(),
            capabilities_line,
        };
        manifest.rollout.validate().map_err(|m| {
            err(at_line(
                line_of(text, |l| l.trim_start().starts_with("[rollout]")),
                &m,
            ))
        })?;
        if let Some(c) = manifest.cost
            && [c.per_1k_input_units, c.per_1k_output_units]
                .iter()
                .any(|p| p.is_nan() || *p < 0.0)
        {
            let line = line_of(text, |l| l.trim_start().starts_with("[cost]"));
            return Err(err(at_line(
                line,
                "[cost] prices must be zero or positive numbers",
            )));
        }
        manifest.check_kind_rules(text).map_err(err)?;
        for grant in &mut manifest.capabilities.files {
            grant.resolve(base).map_err(|message| {
                let line = line_of(text, |l| l.contains(&grant.host_display()));
                err(at_line(line, &message))
            })?;
        }
        Ok(manifest)
    }

    pub fn name(&self) -> &str {
        self.plugin.name.as_str()
    }

    /// The `[config]` values.
    pub fn config(&self) -> &BTreeMap<String, String> {
        &self.config
    }

    /// Set a `[config]` value, rewriting `source` so that what is deployed
    /// and stored is exactly what runs (comments in `source` are not kept).
    pub fn set_config(&mut self, key: &str, value: &str) -> Result<()> {
        let err = |message: String| Error::Manifest {
            path: self.origin.clone(),
            message,
        };
        let mut table: toml::Table =
            toml::from_str(&self.source).map_err(|e| err(e.to_string()))?;
        let config = table
            .entry("config")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match config {
            toml::Value::Table(t) => {
                t.insert(key.to_string(), toml::Value::String(value.to_string()));
            }
            _ => return Err(err("[config] is not a table".into())),
        }
        let text = toml::to_string(&table).map_err(|e| err(e.to_string()))?;
        *self = Manifest::parse(&text, &self.origin, &self.base)?;
        Ok(())
    }

    pub fn kind(&self) -> Kind {
        self.plugin.kind
    }

    /// Where a grant would be written: `policies/x.toml` line N (`[capabilities]`).
    pub fn grant_location(&self) -> String {
        match self.capabilities_line {
            Some(line) => format!("{} line {line} ([capabilities])", self.origin),
            None => format!("{} (add a [capabilities] table)", self.origin),
        }
    }

    /// Grants that only make sense for some plugin kinds.
    fn check_kind_rules(&self, text: &str) -> std::result::Result<(), String> {
        let caps = &self.capabilities;
        let kind = self.plugin.kind;
        let refuse = |key: &str, why: &str| {
            let line = line_of(text, |l| {
                l.trim_start().starts_with(key)
                    && l.trim_start()[key.len()..].trim_start().starts_with('=')
            });
            Err(at_line(
                line,
                &format!("`{key}` cannot be granted to a {kind} plugin: {why}; remove it"),
            ))
        };
        if kind == Kind::Policy {
            let pure = "policies are pure functions of their input and config (only `log` and [config] may be granted)";
            if caps.kv.is_some() {
                return refuse("kv", pure);
            }
            if !caps.models.is_empty() {
                return refuse("models", pure);
            }
            if !caps.http.is_empty() {
                return refuse("http", pure);
            }
            if !caps.files.is_empty() {
                return refuse("files", pure);
            }
            if !caps.env.is_empty() {
                return refuse("env", pure);
            }
        }
        if kind != Kind::Agent && !caps.models.is_empty() {
            return refuse("models", "only agents import the `models` interface");
        }
        if kind == Kind::ModelAdapter && caps.kv.is_some() {
            return refuse("kv", "the model-adapter world does not import `kv`");
        }
        if caps.models.iter().any(|m| m == &self.plugin.name) {
            return refuse("models", "a plugin cannot call itself");
        }
        Ok(())
    }
}

/// toml's errors already carry line, column and a snippet; keep them whole.
fn describe_toml_error(e: &toml::de::Error) -> String {
    let msg = e.to_string();
    msg.trim_end().to_string()
}

fn line_of(text: &str, pred: impl Fn(&str) -> bool) -> Option<usize> {
    text.lines().position(pred).map(|i| i + 1)
}

fn at_line(line: Option<usize>, message: &str) -> String {
    match line {
        Some(l) => format!("line {l}: {message}"),
        None => message.to_string(),
    }
}

/// A plugin name: `[a-z][a-z0-9-]*`, at most 63 characters, no `--` and no
/// trailing `-`. It is used as the kv namespace and in metrics labels, so it
/// must be safe in both.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct PluginName(String);

impl PluginName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for PluginName {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !s.ends_with('-')
            && !s.contains("--");
        if ok {
            Ok(PluginName(s.to_string()))
        } else {
            Err(format!(
                "invalid plugin name {s:?}: use lowercase letters, digits and single dashes, starting with a letter (e.g. \"claims-triage\")"
            ))
        }
    }
}

impl TryFrom<String> for PluginName {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

impl From<PluginName> for String {
    fn from(n: PluginName) -> String {
        n.0
    }
}

impl fmt::Display for PluginName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The four plugin worlds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Connector,
    ModelAdapter,
    Policy,
    Agent,
}

impl Kind {
    /// The versioned export interface a component of this kind must have.
    pub fn export_interface(self) -> &'static str {
        match self {
            Kind::Connector => "evos:plugin/connector-api@0.1.0",
            Kind::ModelAdapter => "evos:plugin/model-adapter-api@0.1.0",
            Kind::Policy => "evos:plugin/policy-api@0.1.0",
            Kind::Agent => "evos:plugin/agent-api@0.1.0",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Connector => "connector",
            Kind::ModelAdapter => "model-adapter",
            Kind::Policy => "policy",
            Kind::Agent => "agent",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A semantic version.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Version(pub semver::Version);

impl TryFrom<String> for Version {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        semver::Version::parse(&s)
            .map(Version)
            .map_err(|e| format!("invalid version {s:?}: {e}; use semver like \"1.2.0\""))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Fuel per call; must be positive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct Fuel(pub u64);

impl TryFrom<i64> for Fuel {
    type Error = String;
    fn try_from(v: i64) -> std::result::Result<Self, String> {
        if v > 0 {
            Ok(Fuel(v as u64))
        } else {
            Err(format!(
                "fuel must be a positive number of units, got {v} (e.g. fuel = 50_000_000)"
            ))
        }
    }
}

/// A memory size written as text with a unit, e.g. `"64MiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct MemorySize(pub u64);

/// Smallest memory limit: one wasm page plus room for a Rust guest's stack.
const MIN_MEMORY: u64 = 2 * 1024 * 1024;

impl TryFrom<String> for MemorySize {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        let size: bytesize::ByteSize = s.parse().map_err(|e| {
            format!("invalid memory size {s:?}: {e}; write a number with a unit, e.g. \"64MiB\"")
        })?;
        if size.as_u64() < MIN_MEMORY {
            return Err(format!(
                "memory {s:?} is too small: at least \"2MiB\" is needed for a guest's stack and data"
            ));
        }
        Ok(MemorySize(size.as_u64()))
    }
}

/// A wall-clock limit written as text, e.g. `"2s"` or `"250ms"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Timeout(pub Duration);

impl TryFrom<String> for Timeout {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        let d = humantime::parse_duration(&s).map_err(|e| {
            format!("invalid timeout {s:?}: {e}; write a duration like \"2s\" or \"250ms\"")
        })?;
        if d < Duration::from_millis(1) || d > Duration::from_secs(3600) {
            return Err(format!("timeout {s:?} must be between 1ms and 1h"));
        }
        Ok(Timeout(d))
    }
}

/// Calls in flight at once; between 1 and 10,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct Concurrency(pub u32);

impl TryFrom<i64> for Concurrency {
    type Error = String;
    fn try_from(v: i64) -> std::result::Result<Self, String> {
        if (1..=10_000).contains(&v) {
            Ok(Concurrency(v as u32))
        } else {
            Err(format!(
                "max-concurrency must be between 1 and 10000, got {v}"
            ))
        }
    }
}

/// An environment variable name that may pass from the host to the plugin.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct EnvName(pub String);

impl TryFrom<String> for EnvName {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        let ok = !s.is_empty()
            && !s.starts_with(|c: char| c.is_ascii_digit())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ok {
            Ok(EnvName(s))
        } else {
            Err(format!(
                "invalid environment variable name {s:?}: use letters, digits and '_' (e.g. \"REGION\")"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest> {
        Manifest::parse(text, "test.toml", Path::new("."))
    }

    const MINIMAL: &str = "[plugin]\nname = \"p\"\nkind = \"policy\"\nversion = \"1.0.0\"\n";

    #[test]
    fn minimal_manifest_denies_everything() {
        let m = parse(MINIMAL).unwrap();
        assert_eq!(m.name(), "p");
        assert!(m.capabilities.log.is_none());
        assert!(m.capabilities.kv.is_none());
        assert!(m.capabilities.http.is_empty());
        assert!(m.config.is_empty());
        assert_eq!(m.limits.timeout.0, Duration::from_secs(2));
    }

    #[test]
    fn unknown_field_names_line_and_field() {
        let text = format!("{MINIMAL}[limits]\nfule = 10\n");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("test.toml"), "{e}");
        assert!(e.contains("line 6"), "{e}");
        assert!(e.contains("unknown field `fule`"), "{e}");
        assert!(
            e.contains("fuel"),
            "expected the valid fields to be listed: {e}"
        );
    }

    #[test]
    fn bad_duration_and_size_are_explained() {
        let e = parse(&format!("{MINIMAL}[limits]\ntimeout = \"2 parsecs\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid timeout") && e.contains("line 6"), "{e}");
        let e = parse(&format!("{MINIMAL}[limits]\nmemory = \"lots\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("invalid memory size") && e.contains("64MiB"),
            "{e}"
        );
    }

    #[test]
    fn bad_syntax_is_reported_with_position() {
        let e = parse("[plugin\nname = 1").unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn bad_name_kind_and_version() {
        let e = parse("[plugin]\nname = \"Bad Name\"\nkind = \"agent\"\nversion = \"1.0.0\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid plugin name"), "{e}");
        let e = parse("[plugin]\nname = \"a\"\nkind = \"robot\"\nversion = \"1.0.0\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant `robot`"), "{e}");
        let e = parse("[plugin]\nname = \"a\"\nkind = \"agent\"\nversion = \"one\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid version"), "{e}");
    }

    #[test]
    fn policies_cannot_be_granted_io() {
        let e = parse(&format!(
            "{MINIMAL}[capabilities]\nhttp = [\"https://example.com:443/*\"]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("line 6") && e.contains("policies are pure"),
            "{e}"
        );
    }

    #[test]
    fn config_values_become_strings() {
        let m = parse(&format!(
            "{MINIMAL}[config]\nlimit = 10\nratio = 0.5\nname = \"x\"\non = true\n"
        ))
        .unwrap();
        assert_eq!(m.config["limit"], "10");
        let mut m = m;
        m.set_config("limit", "20").unwrap();
        assert_eq!(m.config()["limit"], "20");
        assert!(m.source.contains("limit = \"20\""), "{}", m.source);
        assert_eq!(m.config()["ratio"], "0.5");
        assert_eq!(m.config["ratio"], "0.5");
        assert_eq!(m.config["name"], "x");
        assert_eq!(m.config["on"], "true");
    }

    #[test]
    fn fuel_must_be_positive() {
        let e = parse(&format!("{MINIMAL}[limits]\nfuel = 0\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("fuel must be a positive"), "{e}");
    }
}
