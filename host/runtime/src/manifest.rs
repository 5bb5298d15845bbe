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
//! sockets = ["tcp://db.example.com:5432", "tcp://[10.0.0.0/8]:5432"]   # outgoing TCP only
//! files = [{ host = "data/rates", guest = "/rates", mode = "ro" }]
//! env = ["REGION"]
//!
//! [config]                        # read-only values for the `config` interface
//! allow-below = 1000
//! ```
//!
//! Policies are pure: a `policy` manifest may grant only `log` and `[config]`.
//!
//! A manifest comes from whoever deploys, through the CLI or the API, so
//! every value is bounded and a hostile one is refused with the reason,
//! never clamped or passed on:
//!
//! | what                        | accepted                                           |
//! |-----------------------------|----------------------------------------------------|
//! | the manifest text           | UTF-8, at most 256 KiB, TOML without duplicate keys |
//! | `name`, `models` entries    | `[a-z][a-z0-9-]*`, ASCII only, at most 63 bytes    |
//! | `version`                   | semver, at most 64 bytes                           |
//! | `description`               | at most 1 KiB, no control characters but newline and tab |
//! | `fuel`                      | 1 ..= 2^63-1 (the timeout bounds a call whatever its fuel) |
//! | `memory`                    | 2 MiB ..= 4 GiB, and at most the host's per-instance limit at load |
//! | `timeout`                   | 1 ms ..= 1 h                                        |
//! | `max-concurrency`           | 1 ..= 10,000                                        |
//! | `kv` limits                 | at least 1 each                                     |
//! | `[config]` keys / values    | keys `[A-Za-z0-9_.-]`, at most 128 bytes; values a string, number or boolean, at most 16 KiB of text |
//! | `[cost]` prices             | finite, zero or positive                            |

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

/// Largest manifest text accepted. A manifest lists grants and small
/// config values; the cap bounds the parser's work and memory on hostile
/// input (huge strings, deep nesting) before TOML is read at all.
pub const MAX_MANIFEST_BYTES: usize = 256 * 1024;

/// Largest `limits.memory`: all a wasm32 memory can address. The host's
/// pool may allow less (checked at load, see `EngineConfig`).
pub const MAX_MEMORY: u64 = 4 * 1024 * 1024 * 1024;

/// Longest `version`: it is shown in status, metrics labels and the audit.
const MAX_VERSION_BYTES: usize = 64;
/// Longest `description`.
const MAX_DESCRIPTION_BYTES: usize = 1024;
/// Longest `[config]` key, and longest value as text.
const MAX_CONFIG_KEY_BYTES: usize = 128;
const MAX_CONFIG_VALUE_BYTES: usize = 16 * 1024;

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
    /// Which of a model adapter's fields are watched for drift
    /// (`[drift]`, see [`crate::drift`]).
    pub drift: Option<crate::drift::DriftConfig>,
    /// How `evos build` makes the component (`[build]`).
    pub build: Option<Build>,
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
    /// Outgoing TCP: `tcp://host:port` entries vetted like `http`'s (see
    /// [`crate::capability::sockets`]).
    #[serde(default)]
    pub sockets: Vec<crate::capability::sockets::SocketRule>,
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
    #[serde(default)]
    drift: Option<crate::drift::DriftConfig>,
    #[serde(default)]
    build: Option<Build>,
}

/// How `evos build` makes the component from source (`[build]`). Only the
/// CLI's `evos build` reads it, on the author's machine; the host never
/// runs it.
///
/// ```toml
/// [build]
/// command = ["componentize-py", "-w", "evos:plugin/policy@0.1.0", "componentize", "app", "-o", "{out}"]
/// component = "payout-check.wasm"
/// test = ["python3", "-m", "unittest", "-q"]   # optional: `evos build --test`
/// input = "input.json"                         # optional: invoked by `evos build --test`
/// ```
///
/// Commands are a program and its arguments, run without a shell in the
/// manifest's directory. In each argument `{out}` is the absolute path of
/// `component`, `{sdk}` the evos SDK directory, `{wit}` a directory with
/// evos's WIT and `{world}` the world in it that holds exactly what the
/// manifest grants (its kind's export and the granted host interfaces).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Build {
    pub command: Vec<String>,
    /// Where the command writes the component, relative to the manifest.
    pub component: String,
    /// The plugin's own tests.
    #[serde(default)]
    pub test: Option<Vec<String>>,
    /// A sample input (`evos invoke --input` shape), relative to the manifest.
    #[serde(default)]
    pub input: Option<String>,
}

/// Most arguments of a `[build] command`, and bytes of one.
const MAX_BUILD_ARGS: usize = 256;
const MAX_BUILD_ARG_BYTES: usize = 4096;

impl Build {
    fn validate(&self) -> std::result::Result<(), String> {
        check_command("command", &self.command)?;
        if let Some(test) = &self.test {
            check_command("test", test)?;
        }
        check_inside("component", &self.component, ".wasm", "policy.wasm")?;
        if let Some(input) = &self.input {
            check_inside("input", input, ".json", "input.json")?;
        }
        Ok(())
    }
}

fn check_command(key: &str, command: &[String]) -> std::result::Result<(), String> {
    let Some(program) = command.first() else {
        return Err(format!(
            "[build] {key} is empty; write the program and its arguments, e.g. [\"cargo\", \"build\", \"--release\"]"
        ));
    };
    if program.trim().is_empty() {
        return Err(format!(
            "[build] {key} names no program (its first element is empty)"
        ));
    }
    if command.len() > MAX_BUILD_ARGS {
        return Err(format!(
            "[build] {key} has {} arguments; at most {MAX_BUILD_ARGS} are accepted",
            command.len()
        ));
    }
    if let Some(arg) = command
        .iter()
        .find(|a| a.len() > MAX_BUILD_ARG_BYTES || a.contains('\0'))
    {
        return Err(format!(
            "[build] {key} argument {:?}... is longer than {MAX_BUILD_ARG_BYTES} bytes or holds a NUL byte",
            arg.chars().take(40).collect::<String>()
        ));
    }
    Ok(())
}

/// A path relative to the manifest that stays inside its directory.
fn check_inside(
    key: &str,
    value: &str,
    ext: &str,
    example: &str,
) -> std::result::Result<(), String> {
    let path = Path::new(value);
    let inside = !value.is_empty()
        && path.is_relative()
        && path.components().all(|c| {
            matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        });
    if !inside || !value.ends_with(ext) {
        return Err(format!(
            "[build] {key} = {value:?} must be a relative path inside the plugin's directory (no `..`) ending in {ext}, e.g. \"{example}\""
        ));
    }
    Ok(())
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

/// A `[config]` value: a string, number or boolean. Tables, arrays and
/// dates are refused with that sentence rather than serde's "did not match
/// any variant".
enum ConfigValue {
    String(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

impl<'de> Deserialize<'de> for ConfigValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = ConfigValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean (config values are flat: no tables, arrays or dates)")
            }
            fn visit_str<E: serde::de::Error>(
                self,
                v: &str,
            ) -> std::result::Result<ConfigValue, E> {
                Ok(ConfigValue::String(v.to_string()))
            }
            fn visit_string<E: serde::de::Error>(
                self,
                v: String,
            ) -> std::result::Result<ConfigValue, E> {
                Ok(ConfigValue::String(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<ConfigValue, E> {
                Ok(ConfigValue::Integer(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<ConfigValue, E> {
                i64::try_from(v)
                    .map(ConfigValue::Integer)
                    .map_err(|_| E::custom("integer out of range"))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<ConfigValue, E> {
                Ok(ConfigValue::Float(v))
            }
            fn visit_bool<E: serde::de::Error>(
                self,
                v: bool,
            ) -> std::result::Result<ConfigValue, E> {
                Ok(ConfigValue::Bool(v))
            }
        }
        d.deserialize_any(Visit)
    }
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
        use std::io::Read;
        let path = path.as_ref();
        let err = |message: String| Error::Manifest {
            path: path.display().to_string(),
            message,
        };
        // Read one byte past the cap so an oversized file is refused
        // without reading all of it.
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| {
                f.take(MAX_MANIFEST_BYTES as u64 + 1)
                    .read_to_end(&mut bytes)
            })
            .map_err(|e| err(format!("cannot read the manifest: {e}")))?;
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(err(too_large_message(None)));
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            err(format!(
                "the manifest is not UTF-8 text (invalid byte at offset {}); save it as UTF-8",
                e.utf8_error().valid_up_to()
            ))
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
        if text.len() > MAX_MANIFEST_BYTES {
            return Err(err(too_large_message(Some(text.len()))));
        }
        let raw: RawManifest =
            toml::from_str(text).map_err(|e| err(describe_toml_error(&e, text)))?;
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
            drift: raw.drift,
            build: raw.build,
            origin: origin.to_string(),
            source: text.to_string(),
            base: base.to_path_buf(),
            capabilities_line,
        };
        manifest.rollout.validate().map_err(|m| {
            err(at_line(
                line_of(text, |l| {
                    let l = l.trim_start();
                    l.starts_with("[rollout") || l.starts_with("[[rollout")
                }),
                &m,
            ))
        })?;
        if let Some(drift) = &manifest.drift {
            let line = line_of(text, |l| l.trim_start().starts_with("[drift]"));
            if manifest.plugin.kind != Kind::ModelAdapter {
                return Err(err(at_line(
                    line,
                    &format!(
                        "[drift] watches a model adapter's inputs and outputs, but this plugin is a {}; remove the table",
                        manifest.plugin.kind
                    ),
                )));
            }
            drift.validate().map_err(|m| err(at_line(line, &m)))?;
        }
        if let Some(build) = &manifest.build {
            let line = line_of(text, |l| l.trim_start().starts_with("[build]"));
            build.validate().map_err(|m| err(at_line(line, &m)))?;
        }
        let located = Located::new(text);
        manifest.check_values(&located).map_err(err)?;
        manifest.check_kind_rules(&located).map_err(err)?;
        for (i, grant) in manifest.capabilities.files.iter_mut().enumerate() {
            grant.resolve(base).map_err(|message| {
                let line = located.line(&["capabilities", "files", &i.to_string()]);
                err(at_line(line, &message))
            })?;
        }
        crate::capability::files::check_grants(&manifest.capabilities.files)
            .map_err(|message| err(at_line(located.line(&["capabilities", "files"]), &message)))?;
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
        self.rewrite("config", key, value)
    }

    /// Set `[plugin] version` (a retrained model's manifest is the stable
    /// one with new weights and a new version), rewriting `source` as
    /// [`Manifest::set_config`] does.
    pub fn set_version(&mut self, version: &str) -> Result<()> {
        self.rewrite("plugin", "version", version)
    }

    /// Set `[table] key = value` in `source` and parse it again, so what is
    /// deployed and stored is exactly what runs.
    fn rewrite(&mut self, table_name: &str, key: &str, value: &str) -> Result<()> {
        let err = |message: String| Error::Manifest {
            path: self.origin.clone(),
            message,
        };
        let mut table: toml::Table =
            toml::from_str(&self.source).map_err(|e| err(e.to_string()))?;
        let section = table
            .entry(table_name)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match section {
            toml::Value::Table(t) => {
                t.insert(key.to_string(), toml::Value::String(value.to_string()));
            }
            _ => return Err(err(format!("[{table_name}] is not a table"))),
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

    /// Bounds on values serde's types do not express: text lengths,
    /// control characters, config keys, zero quotas and finite prices.
    fn check_values(&self, located: &Located<'_>) -> std::result::Result<(), String> {
        let text = located.text;
        let description = &self.plugin.description;
        if description.len() > MAX_DESCRIPTION_BYTES {
            return Err(at_line(
                located.line(&["plugin", "description"]),
                &format!(
                    "description is {} bytes; at most {MAX_DESCRIPTION_BYTES} are allowed",
                    description.len()
                ),
            ));
        }
        if let Some(c) = description
            .chars()
            .find(|c| c.is_control() && *c != '\n' && *c != '\t')
        {
            return Err(at_line(
                located.line(&["plugin", "description"]),
                &format!(
                    "description contains the control character U+{:04X}; only newline and tab are allowed (control characters can rewrite a terminal that shows it)",
                    c as u32
                ),
            ));
        }
        for (key, value) in &self.config {
            let line = located.line(&["config", key]);
            let key_ok = !key.is_empty()
                && key.len() <= MAX_CONFIG_KEY_BYTES
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !key_ok {
                return Err(at_line(
                    line,
                    &format!(
                        "invalid [config] key {}: use ASCII letters, digits, '_', '-' and '.', at most {MAX_CONFIG_KEY_BYTES} bytes (e.g. allow-below)",
                        shown(key)
                    ),
                ));
            }
            if value.len() > MAX_CONFIG_VALUE_BYTES {
                return Err(at_line(
                    line,
                    &format!(
                        "[config] {key} is {} bytes; a config value may be at most {MAX_CONFIG_VALUE_BYTES} bytes (larger data belongs in `files` or `kv`)",
                        value.len()
                    ),
                ));
            }
        }
        if let Some(kv) = &self.capabilities.kv {
            for (field, v) in [
                ("max-value-bytes", kv.max_value_bytes),
                ("max-keys", kv.max_keys),
                ("max-key-bytes", kv.max_key_bytes),
                ("max-total-bytes", kv.max_total_bytes),
            ] {
                if v == 0 {
                    return Err(at_line(
                        located
                            .line(&["capabilities", "kv", field])
                            .or_else(|| located.line(&["capabilities", "kv"])),
                        &format!(
                            "kv {field} = 0 would refuse every write; set a positive limit, or remove `kv` to grant no storage"
                        ),
                    ));
                }
            }
        }
        if let Some(c) = self.cost
            && [c.per_1k_input_units, c.per_1k_output_units]
                .iter()
                .any(|p| !p.is_finite() || *p < 0.0)
        {
            let line = line_of(text, |l| l.trim_start().starts_with("[cost]"));
            return Err(at_line(
                line,
                "[cost] prices must be finite numbers, zero or positive",
            ));
        }
        Ok(())
    }

    /// Grants that only make sense for some plugin kinds.
    fn check_kind_rules(&self, located: &Located<'_>) -> std::result::Result<(), String> {
        let caps = &self.capabilities;
        let kind = self.plugin.kind;
        let granted = [
            ("kv", caps.kv.is_some()),
            ("models", !caps.models.is_empty()),
            ("http", !caps.http.is_empty()),
            ("sockets", !caps.sockets.is_empty()),
            ("files", !caps.files.is_empty()),
            ("env", !caps.env.is_empty()),
        ];
        for (key, _) in granted.iter().filter(|(_, g)| *g) {
            if let Some(why) = never_granted(kind, key) {
                let line = located.line(&["capabilities", key]);
                return Err(at_line(
                    line,
                    &format!("`{key}` cannot be granted to a {kind} plugin: {why}; remove it"),
                ));
            }
        }
        if caps.models.iter().any(|m| m == &self.plugin.name) {
            let line = located.line(&["capabilities", "models"]);
            return Err(at_line(
                line,
                "`models` cannot list the plugin itself: a plugin cannot call itself; remove it",
            ));
        }
        Ok(())
    }
}

/// Why a plugin of `kind` can never be granted `capability`, or `None`
/// when it can. The one place the kind rules live: manifests are checked
/// against it, and `evos check` and the inert interfaces' refusals use it
/// so that no hint suggests a grant the kind cannot have.
pub fn never_granted(kind: Kind, capability: &str) -> Option<&'static str> {
    match (kind, capability) {
        (_, "log" | "config") => None,
        (Kind::Policy, _) => Some(
            "policies are pure functions of their input and config (only `log` and [config] may be granted)",
        ),
        (Kind::Connector | Kind::ModelAdapter, "models") => {
            Some("only agents import the `models` interface")
        }
        (Kind::ModelAdapter, "kv") => Some("the model-adapter world does not import `kv`"),
        _ => None,
    }
}

/// toml's error as toml shows it (line, column, the line with a caret
/// under the problem, the message), with two changes for hostile input: the
/// quoted line and the message are cut to a readable length and control
/// characters in them are replaced, so an error never echoes a megabyte
/// line or a terminal escape. An unknown field name gets the closest
/// expected one as a hint.
fn describe_toml_error(e: &toml::de::Error, text: &str) -> String {
    const WIDTH: usize = 100;
    const MAX_MESSAGE: usize = 600;
    let mut message: String = e.message().trim_end().chars().map(printable).collect();
    if let Some((cut, _)) = message.char_indices().nth(MAX_MESSAGE) {
        message.truncate(cut);
        message.push_str("...");
    }
    if let Some(hint) = unknown_field_hint(e.message()) {
        message.push_str(&format!("\nhint: did you mean `{hint}`?"));
    }
    let Some(span) = e.span() else {
        return format!("TOML parse error: {message}");
    };
    // toml says only "duplicate key"; the span holds the key.
    if message == "duplicate key"
        && let Some(key) = text.get(span.clone())
    {
        message = format!(
            "duplicate key {}: a key may appear once per table (the second would silently win in some parsers, so it is refused)",
            shown(key.trim())
        );
    }
    let start = span.start.min(text.len());
    let before = text.get(..start).unwrap_or("");
    let line_no = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let column = text.get(line_start..start).map_or(0, |s| s.chars().count());
    // A window of the line around the column, in characters.
    let first = column.saturating_sub(WIDTH / 2);
    let shown_line: String = line
        .chars()
        .skip(first)
        .take(WIDTH)
        .map(printable)
        .collect();
    let (head, tail) = (
        if first > 0 { "..." } else { "" },
        if line.chars().count() > first + WIDTH {
            "..."
        } else {
            ""
        },
    );
    let span_chars = text
        .get(start..span.end.min(text.len()))
        .map_or(1, |s| s.chars().count());
    let caret_at = head.len() + column - first;
    let carets = span_chars.clamp(1, (WIDTH + head.len()).saturating_sub(caret_at).max(1));
    let gutter = " ".repeat(line_no.to_string().len());
    format!(
        "TOML parse error at line {line_no}, column {}\n{gutter} |\n{line_no} | {head}{shown_line}{tail}\n{gutter} | {}{}\n{message}",
        column + 1,
        " ".repeat(caret_at),
        "^".repeat(carets),
    )
}

/// A character as it may appear in an error message.
fn printable(c: char) -> char {
    if c.is_control() && c != '\n' {
        '\u{fffd}'
    } else {
        c
    }
}

/// `unknown field `fule`, expected one of `fuel`, `memory`` -> `fuel`: the
/// expected field nearest in edit distance, if it is near enough to be a
/// typo.
fn unknown_field_hint(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let expected = rest.split_once("expected")?.1;
    let candidates = expected.split('`').skip(1).step_by(2);
    let (distance, best) = candidates
        .map(|c| (edit_distance(field, c), c))
        .min_by_key(|(d, _)| *d)?;
    (distance > 0 && distance <= 2.max(field.len() / 3)).then(|| best.to_string())
}

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(row[j + 1])
            };
            prev = current;
        }
    }
    row[b.len()]
}

fn too_large_message(size: Option<usize>) -> String {
    let size = match size {
        Some(n) => format!("{n} bytes"),
        None => format!("more than {MAX_MANIFEST_BYTES} bytes"),
    };
    format!(
        "the manifest is {size}; the limit is {MAX_MANIFEST_BYTES} bytes (256 KiB): a manifest holds grants and small config values"
    )
}

/// A value from a manifest for an error message: quoted and escaped (no
/// control character reaches a terminal), cut after 64 characters.
fn shown(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}... ({} bytes)", &s[..cut], s.len()),
        None => format!("{s:?}"),
    }
}

fn line_of(text: &str, pred: impl Fn(&str) -> bool) -> Option<usize> {
    text.lines().position(pred).map(|i| i + 1)
}

/// Where the values of a manifest are in its text: checks made after
/// deserializing point at the line the value is written on, found by its
/// path (`["capabilities", "files", "1"]`) in the spanned TOML document,
/// not by searching lines for text that may also appear elsewhere.
struct Located<'t> {
    text: &'t str,
    doc: Option<toml::Spanned<toml::de::DeTable<'t>>>,
}

impl<'t> Located<'t> {
    fn new(text: &'t str) -> Located<'t> {
        Located {
            text,
            doc: toml::de::DeTable::parse(text).ok(),
        }
    }

    /// The 1-based line where the value at `path` starts: table keys, and
    /// array positions as numbers.
    fn line(&self, path: &[&str]) -> Option<usize> {
        use toml::de::DeValue;
        let mut table = self.doc.as_ref()?.get_ref();
        let mut span = None;
        let mut rest = path.iter();
        while let Some(key) = rest.next() {
            let value = table
                .iter()
                .find(|(k, _)| k.get_ref().as_ref() == *key)
                .map(|(_, v)| v)?;
            span = Some(value.span());
            match value.get_ref() {
                DeValue::Table(t) => table = t,
                DeValue::Array(items) => {
                    let Some(index) = rest.next() else { break };
                    let item = items.get(index.parse::<usize>().ok()?)?;
                    span = Some(item.span());
                    match item.get_ref() {
                        DeValue::Table(t) => table = t,
                        _ => break,
                    }
                }
                _ => break,
            }
        }
        let start = span?.start.min(self.text.len());
        Some(self.text.get(..start)?.matches('\n').count() + 1)
    }
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
    /// ASCII only, so a name cannot be a path (`../x`, `a/b`), carry
    /// control characters into logs, or look like another plugin's name
    /// (Unicode confusables such as a Cyrillic `а` in `pаyout-limit`).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad_char = s
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'));
        let problem = if s.is_empty() {
            Some("it is empty".to_string())
        } else if s.len() > 63 {
            Some(format!(
                "it is {} bytes long, at most 63 are allowed",
                s.len()
            ))
        } else if let Some(c) = bad_char {
            Some(if c.is_ascii_uppercase() {
                format!("it contains the uppercase letter {c:?}")
            } else if c.is_ascii_graphic() || c == ' ' {
                format!("it contains {c:?}")
            } else if c.is_control() {
                format!("it contains the control character U+{:04X}", c as u32)
            } else {
                format!(
                    "it contains the non-ASCII character {c:?} (U+{:04X}), which can pass for an ASCII letter",
                    c as u32
                )
            })
        } else if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
            Some("it does not start with a letter".to_string())
        } else if s.ends_with('-') {
            Some("it ends with '-'".to_string())
        } else if s.contains("--") {
            Some("it contains \"--\"".to_string())
        } else {
            None
        };
        match problem {
            None => Ok(PluginName(s.to_string())),
            Some(why) => Err(format!(
                "invalid plugin name {}: {why}; use lowercase ASCII letters, digits and single dashes, starting with a letter, at most 63 bytes (e.g. \"claims-triage\")",
                shown(s)
            )),
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

pub use evos_core::Kind;

/// A semantic version.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Version(pub semver::Version);

impl TryFrom<String> for Version {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        if s.len() > MAX_VERSION_BYTES {
            return Err(format!(
                "version {} is {} bytes; at most {MAX_VERSION_BYTES} are allowed (use semver like \"1.2.0\")",
                shown(&s),
                s.len()
            ));
        }
        semver::Version::parse(&s).map(Version).map_err(|e| {
            format!(
                "invalid version {}: {e}; use semver like \"1.2.0\"",
                shown(&s)
            )
        })
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
        let size: bytesize::ByteSize = s.parse().map_err(|_| {
            format!(
                "invalid memory size {}; write a number with a unit, e.g. \"64MiB\"",
                shown(&s)
            )
        })?;
        if size.as_u64() < MIN_MEMORY {
            return Err(format!(
                "memory {} is too small: at least \"2MiB\" is needed for a guest's stack and data",
                shown(&s)
            ));
        }
        // bytesize saturates at u64::MAX, so "99999PiB" lands here too.
        if size.as_u64() > MAX_MEMORY {
            return Err(format!(
                "memory {} is more than a wasm32 memory can address; at most \"4GiB\" (and at most what the host's pool allows per instance, 256MiB by default)",
                shown(&s)
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
            format!(
                "invalid timeout {}: {e}; write a duration like \"2s\" or \"250ms\"",
                shown(&s)
            )
        })?;
        if d < Duration::from_millis(1) || d > Duration::from_secs(3600) {
            return Err(format!("timeout {} must be between 1ms and 1h", shown(&s)));
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
    fn a_build_table_is_parsed_and_its_paths_stay_inside_the_plugin() {
        let head = "[plugin]\nname = \"p\"\nkind = \"policy\"\nversion = \"1.0.0\"\n[build]\n";
        let ok = parse(&format!(
            "{head}command = [\"cargo\", \"build\"]\ncomponent = \"target/p.wasm\"\ntest = [\"cargo\", \"test\"]\ninput = \"input.json\"\n"
        ))
        .unwrap();
        let build = ok.build.unwrap();
        assert_eq!(build.command, ["cargo", "build"]);
        assert_eq!(build.input.as_deref(), Some("input.json"));
        for (table, why) in [
            (
                "command = []\ncomponent = \"p.wasm\"",
                "[build] command is empty",
            ),
            (
                "command = [\"\"]\ncomponent = \"p.wasm\"",
                "names no program",
            ),
            (
                "command = [\"x\"]\ncomponent = \"../p.wasm\"",
                "inside the plugin's directory",
            ),
            (
                "command = [\"x\"]\ncomponent = \"/tmp/p.wasm\"",
                "inside the plugin's directory",
            ),
            ("command = [\"x\"]\ncomponent = \"p.so\"", "ending in .wasm"),
            (
                "command = [\"x\"]\ncomponent = \"p.wasm\"\ninput = \"../secret.json\"",
                "[build] input",
            ),
            (
                "command = [\"x\"]\ncomponent = \"p.wasm\"\ntest = []",
                "[build] test is empty",
            ),
            (
                "command = [\"x\"]\ncomponent = \"p.wasm\"\nshell = true",
                "unknown field",
            ),
        ] {
            let e = refused(&format!("{head}{table}\n"));
            assert!(e.contains(why) && e.contains("line"), "{table}: {e}");
        }
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

    fn refused(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    fn with_name(name: &str) -> String {
        let name = toml::Value::String(name.to_string());
        format!("[plugin]\nname = {name}\nkind = \"policy\"\nversion = \"1.0.0\"\n")
    }

    #[test]
    fn bad_syntax_names_file_line_and_problem() {
        let e = refused(&format!("{MINIMAL}[limits]\nfuel = = 3\n"));
        assert!(e.starts_with("test.toml: "), "{e}");
        assert!(e.contains("line 6"), "{e}");
        let e = refused("[plugin]\nname = \"unterminated\nkind = \"policy\"\n");
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn unknown_fields_get_a_did_you_mean_hint() {
        let e = refused(&format!("{MINIMAL}[limits]\nfule = 10\n"));
        assert!(e.contains("did you mean `fuel`?"), "{e}");
        let e = refused(&format!("{MINIMAL}[limit]\nfuel = 10\n"));
        assert!(e.contains("unknown field `limit`"), "{e}");
        assert!(e.contains("did you mean `limits`?"), "{e}");
        let e = refused(&format!(
            "{MINIMAL}[capabilities]\nkv = {{ max-key = 3 }}\n"
        ));
        assert!(e.contains("did you mean `max-keys`?"), "{e}");
        // Nothing near: the expected fields are listed, no guess is made.
        let e = refused(&format!("{MINIMAL}[limits]\nzzzzzzzzzz = 1\n"));
        assert!(
            e.contains("expected one of") && !e.contains("did you mean"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_keys_and_tables_are_refused() {
        let e = refused(
            "[plugin]\nname = \"p\"\nname = \"q\"\nkind = \"policy\"\nversion = \"1.0.0\"\n",
        );
        assert!(
            e.contains("duplicate key \"name\"") && e.contains("line 3"),
            "{e}"
        );
        let e = refused(&format!(
            "{MINIMAL}[limits]\nfuel = 5\n[limits]\nfuel = 6\n"
        ));
        assert!(e.contains("duplicate key") || e.contains("redefin"), "{e}");
        let e = refused(&format!("{MINIMAL}[config]\nlimit = 1\n\"limit\" = 2\n"));
        assert!(e.contains("duplicate key"), "{e}");
    }

    #[test]
    fn enormous_and_non_positive_numbers_are_refused() {
        // The largest TOML integer is a valid fuel: the timeout still
        // bounds the call.
        let m = parse(&format!("{MINIMAL}[limits]\nfuel = 9223372036854775807\n")).unwrap();
        assert_eq!(m.limits.fuel.0, i64::MAX as u64);
        for fuel in ["0", "-1", "-9223372036854775808"] {
            let e = refused(&format!("{MINIMAL}[limits]\nfuel = {fuel}\n"));
            assert!(
                e.contains("fuel must be a positive") && e.contains("line 6"),
                "{e}"
            );
        }
        let e = refused(&format!(
            "{MINIMAL}[limits]\nfuel = 99999999999999999999999\n"
        ));
        assert!(e.contains("line 6"), "{e}");
        let e = refused(&format!("{MINIMAL}[limits]\nfuel = 1e300\n"));
        assert!(e.contains("line 6"), "{e}");
        for c in ["0", "-5", "10001", "4294967297"] {
            let e = refused(&format!("{MINIMAL}[limits]\nmax-concurrency = {c}\n"));
            assert!(
                e.contains("max-concurrency must be between 1 and 10000"),
                "{e}"
            );
        }
    }

    #[test]
    fn memory_beyond_what_wasm32_addresses_is_refused() {
        for memory in ["99999PiB", "18446744073709551616B", "5GiB", "1EiB"] {
            let e = refused(&format!("{MINIMAL}[limits]\nmemory = {memory:?}\n"));
            assert!(e.contains("more than a wasm32 memory can address"), "{e}");
        }
        for memory in ["0B", "0", "1KiB", "0.5MiB"] {
            let e = refused(&format!("{MINIMAL}[limits]\nmemory = {memory:?}\n"));
            assert!(e.contains("too small"), "{memory}: {e}");
        }
        for memory in ["-1MiB", "", "NaN", "1e9MiB", "64 parsecs"] {
            let e = refused(&format!("{MINIMAL}[limits]\nmemory = {memory:?}\n"));
            assert!(e.contains("invalid memory size"), "{memory}: {e}");
        }
        let m = parse(&format!("{MINIMAL}[limits]\nmemory = \"4GiB\"\n")).unwrap();
        assert_eq!(m.limits.memory.0, MAX_MEMORY);
    }

    #[test]
    fn timeouts_outside_a_millisecond_to_an_hour_are_refused() {
        for t in ["0", "0s", "0ms", "999us", "100years", "2h", "1h 1s"] {
            let e = refused(&format!("{MINIMAL}[limits]\ntimeout = {t:?}\n"));
            assert!(e.contains("between 1ms and 1h"), "{t}: {e}");
        }
        for t in ["-1s", "99999999999999999999999999years", "", "1 fortnight"] {
            let e = refused(&format!("{MINIMAL}[limits]\ntimeout = {t:?}\n"));
            assert!(e.contains("invalid timeout"), "{t}: {e}");
        }
        let m = parse(&format!("{MINIMAL}[limits]\ntimeout = \"1h\"\n")).unwrap();
        assert_eq!(m.limits.timeout.0, Duration::from_secs(3600));
    }

    #[test]
    fn hostile_plugin_names_are_refused_with_the_reason() {
        let cases = [
            ("", "empty"),
            ("../etc/passwd", "'.'"),
            ("a/b", "'/'"),
            ("a\u{0}b", "control character U+0000"),
            ("a\u{1b}[2Jb", "control character U+001B"),
            // Cyrillic а (U+0430) in place of the Latin a.
            ("p\u{430}yout-limit", "U+0430"),
            ("payout\u{200b}", "U+200B"),
            ("Payout", "uppercase"),
            ("a b", "' '"),
            ("1abc", "start with a letter"),
            ("abc-", "ends with"),
            ("a--b", "\"--\""),
        ];
        for (name, why) in cases {
            let e = refused(&with_name(name));
            assert!(
                e.contains("invalid plugin name") && e.contains(why),
                "{name:?}: {e}"
            );
            assert!(!e.contains('\u{0}') && !e.contains('\u{1b}'), "{e:?}");
        }
        let long = "a".repeat(64);
        let e = refused(&with_name(&long));
        assert!(e.contains("64 bytes long"), "{e}");
        assert!(parse(&with_name(&"a".repeat(63))).is_ok());
        // The same rules hold for names in `models`.
        let e = refused(
            "[plugin]\nname = \"a\"\nkind = \"agent\"\nversion = \"1.0.0\"\n[capabilities]\nmodels = [\"../b\"]\n",
        );
        assert!(e.contains("invalid plugin name"), "{e}");
    }

    #[test]
    fn versions_must_be_short_semver() {
        for v in ["1.0", "latest", "v1.0.0", "1.0.0.0", "01.0.0", " 1.0.0", ""] {
            let e = refused(&MINIMAL.replace("1.0.0", v));
            assert!(e.contains("invalid version"), "{v:?}: {e}");
        }
        let long = format!("1.0.0-{}", "a".repeat(100));
        let e = refused(&MINIMAL.replace("1.0.0", &long));
        assert!(e.contains("at most 64"), "{e}");
        assert!(parse(&MINIMAL.replace("1.0.0", "1.2.3-rc.1+build.5")).is_ok());
    }

    #[test]
    fn long_strings_are_refused_and_not_echoed_whole() {
        let huge = "x".repeat(100_000);
        let e = refused(&with_name(&huge));
        assert!(e.len() < 1_000, "error of {} bytes", e.len());
        let e = refused(&MINIMAL.replace("1.0.0", &huge));
        assert!(e.len() < 1_000, "error of {} bytes", e.len());
        let e = refused(&format!("{MINIMAL}[limits]\ntimeout = {huge:?}\n"));
        assert!(e.len() < 1_000, "error of {} bytes", e.len());
        let e = refused(&format!("{MINIMAL}description = {:?}\n", "d".repeat(2000)));
        assert!(e.contains("description is 2000 bytes"), "{e}");
        let e = refused(&format!(
            "{MINIMAL}description = \"ok\\u001b]0;pwned\\u0007\"\n"
        ));
        assert!(e.contains("control character U+001B"), "{e}");
        assert!(
            parse(&format!(
                "{MINIMAL}description = \"two\\nlines\\tand a tab\"\n"
            ))
            .is_ok()
        );
    }

    #[test]
    fn oversized_manifests_are_refused_before_parsing() {
        let text = format!("{MINIMAL}# {}\n", "x".repeat(MAX_MANIFEST_BYTES));
        let e = refused(&text);
        assert!(e.contains("the limit is 262144 bytes"), "{e}");
    }

    #[test]
    fn config_values_are_bounded_and_flat() {
        let e = refused(&format!(
            "{MINIMAL}[config]\nbig = {:?}\n",
            "v".repeat(20_000)
        ));
        assert!(
            e.contains("[config] big is 20000 bytes") && e.contains("line 6"),
            "{e}"
        );
        for value in ["{ a = 1 }", "[1, 2]", "1979-05-27T07:32:00Z"] {
            let e = refused(&format!("{MINIMAL}[config]\nk = {value}\n"));
            assert!(e.contains("a string, number or boolean"), "{value}: {e}");
        }
        let e = refused(&format!("{MINIMAL}[config.nested]\nk = 1\n"));
        assert!(e.contains("a string, number or boolean"), "{e}");
        for key in ["\"a b\"", "\"\"", "\"k\\u0000\"", "\"\u{430}\""] {
            let e = refused(&format!("{MINIMAL}[config]\n{key} = 1\n"));
            assert!(e.contains("invalid [config] key"), "{key}: {e}");
        }
        let key = "k".repeat(129);
        let e = refused(&format!("{MINIMAL}[config]\n{key} = 1\n"));
        assert!(e.contains("invalid [config] key"), "{e}");
        let m = parse(&format!(
            "{MINIMAL}[config]\nallow-below = 1000\nmodel.v2_x = \"y\"\n"
        ));
        assert!(m.is_ok() || m.is_err()); // dotted keys make a table: refused above
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        for depth in [1_000, 100_000] {
            let text = format!(
                "{MINIMAL}[config]\nk = {}{}\n",
                "[".repeat(depth),
                "]".repeat(depth)
            );
            assert!(parse(&text).is_err());
            let text = format!(
                "{MINIMAL}[config]\nk = {}1{}\n",
                "{ a = ".repeat(depth),
                " }".repeat(depth)
            );
            assert!(parse(&text).is_err());
        }
    }

    #[test]
    fn kv_limits_of_zero_are_refused() {
        const AGENT: &str =
            "[plugin]\nname = \"a\"\nkind = \"agent\"\nversion = \"1.0.0\"\n[capabilities]\n";
        for field in [
            "max-value-bytes",
            "max-keys",
            "max-key-bytes",
            "max-total-bytes",
        ] {
            let e = refused(&format!("{AGENT}kv = {{ {field} = 0 }}\n"));
            assert!(
                e.contains(&format!("kv {field} = 0")) && e.contains("line 6"),
                "{e}"
            );
        }
        let e = refused(&format!("{AGENT}kv = {{ max-keys = -1 }}\n"));
        assert!(e.contains("line 6"), "{e}");
        assert!(parse(&format!("{AGENT}kv = {{ max-keys = 1 }}\n")).is_ok());
    }

    #[test]
    fn cost_prices_must_be_finite() {
        for price in ["inf", "-inf", "nan", "-1.0"] {
            let e = refused(&format!("{MINIMAL}[cost]\nper-1k-input-units = {price}\n"));
            assert!(e.contains("[cost] prices must be finite"), "{price}: {e}");
        }
    }

    #[test]
    fn load_refuses_oversized_and_non_utf8_files() {
        let dir = std::env::temp_dir().join(format!("evos-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let big = dir.join("big.toml");
        std::fs::write(&big, vec![b'#'; MAX_MANIFEST_BYTES + 10]).unwrap();
        let e = Manifest::load(&big).unwrap_err().to_string();
        assert!(e.contains("big.toml") && e.contains("the limit is"), "{e}");
        let latin1 = dir.join("latin1.toml");
        std::fs::write(&latin1, b"[plugin]\nname = \"caf\xe9\"\n").unwrap();
        let e = Manifest::load(&latin1).unwrap_err().to_string();
        assert!(e.contains("not UTF-8") && e.contains("offset 20"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn fuel_must_be_positive() {
        let e = parse(&format!("{MINIMAL}[limits]\nfuel = 0\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("fuel must be a positive"), "{e}");
    }
}
