//! `evos new` and `evos build`: what a plugin author starts and builds with.
//!
//! `evos new` writes a plugin that builds and passes its tests as it is:
//! source in the chosen language, a manifest granting the least the source
//! needs (with its `[build]` table), a sample input and a test. `evos build`
//! runs the manifest's build command, then checks the component against
//! the manifest as `evos check` does; with `--test` it also runs the
//! plugin's tests and invokes the component on its sample input.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, anyhow, bail};
use evos::manifest::Kind;
use evos::{CallInput, Manifest};

use super::{Cli, Exit, print_json, runtime};

/// Languages `evos new` writes.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KindArg {
    Connector,
    Agent,
    ModelAdapter,
    Policy,
}

impl From<KindArg> for Kind {
    fn from(k: KindArg) -> Kind {
        match k {
            KindArg::Connector => Kind::Connector,
            KindArg::Agent => Kind::Agent,
            KindArg::ModelAdapter => Kind::ModelAdapter,
            KindArg::Policy => Kind::Policy,
        }
    }
}

#[derive(clap::Args)]
pub struct NewArgs {
    /// The plugin's name ([a-z][a-z0-9-]*); also its directory's.
    name: String,
    /// What the plugin is.
    #[arg(long, value_enum)]
    kind: KindArg,
    /// The language it is written in.
    #[arg(long, value_enum, default_value = "rust")]
    lang: Lang,
    /// The directory the plugin's directory is made in.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
}

#[derive(clap::Args)]
pub struct BuildArgs {
    /// A plugin directory (holding plugin.toml), a manifest, or an app file
    /// (every plugin whose manifest has a [build] table is built, and its
    /// component copied to where the app loads it from).
    #[arg(default_value = ".")]
    path: PathBuf,
    /// Also run the plugin's tests (`[build] test`) and invoke the component
    /// on its sample input (`[build] input`); the outcome must be ok.
    #[arg(long)]
    test: bool,
    /// Copy the checked component here (one plugin only).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print a JSON summary of each plugin built.
    #[arg(long)]
    json: bool,
}

/// The directory holding the evos SDKs (`rust`: the crate itself, `python/`,
/// `js/`): `EVOS_SDK`, else the `sdk/` of the checkout this binary was
/// built from.
pub fn sdk_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("EVOS_SDK") {
        let dir = PathBuf::from(dir);
        if !dir.join("python").is_dir() || !dir.join("js").is_dir() {
            bail!(
                "EVOS_SDK={} is not the evos SDK directory (it holds no python/ and js/); point it at the `sdk` directory of an evos checkout",
                dir.display()
            );
        }
        return Ok(std::path::absolute(dir)?);
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk");
    if built.join("python").is_dir() {
        return Ok(built.canonicalize()?);
    }
    bail!(
        "the evos SDK directory is not known: set EVOS_SDK to the `sdk` directory of an evos checkout"
    )
}

/// evos's WIT, as this binary was built with it.
const WIT: &[(&str, &str)] = &[
    ("types.wit", include_str!("../../../../wit/types.wit")),
    ("host.wit", include_str!("../../../../wit/host.wit")),
    ("worlds.wit", include_str!("../../../../wit/worlds.wit")),
];

/// The WIT world of exactly what `manifest` grants: its kind's export and
/// the host interfaces granted. Interpreted languages' build tools import
/// every interface of the world they build against, used or not, so a
/// plugin built against its kind's whole world would need every grant of
/// that world; built against this one, it imports only what it may use.
pub fn granted_world(manifest: &Manifest) -> String {
    let mut wit = format!(
        "package evos:plugin@0.1.0;\n\n/// What {}'s manifest grants.\nworld granted {{\n",
        manifest.name()
    );
    for cap in evos::capability::ALL {
        let host = cap
            .interfaces
            .iter()
            .find_map(|i| i.strip_prefix("evos:plugin/"));
        if let Some(interface) = host
            && (cap.granted)(manifest)
        {
            wit.push_str(&format!("    import {interface};\n"));
        }
    }
    let export = manifest.kind().export_interface();
    let export = export
        .trim_start_matches("evos:plugin/")
        .trim_end_matches("@0.1.0");
    wit.push_str(&format!("    export {export};\n}}\n"));
    wit
}

/// A directory holding evos's WIT plus the `granted` world of `manifest`,
/// removed when dropped.
struct GrantedWit(PathBuf);

impl GrantedWit {
    fn write(manifest: &Manifest) -> Result<GrantedWit> {
        let dir = std::env::temp_dir().join(format!(
            "evos-build-{}-{}",
            std::process::id(),
            manifest.name()
        ));
        let wit = GrantedWit(dir);
        std::fs::create_dir_all(&wit.0).with_context(|| format!("creating {}", wit.0.display()))?;
        for (name, text) in WIT {
            std::fs::write(wit.0.join(name), text)?;
        }
        std::fs::write(wit.0.join("granted.wit"), granted_world(manifest))?;
        Ok(wit)
    }
}

impl Drop for GrantedWit {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Template {
    files: Vec<(String, String)>,
}

/// A language's part of a template: its source files, its test, its
/// `[build]` table and its `[limits]`.
struct LangFiles {
    source: Vec<(&'static str, &'static str)>,
    test: Option<(&'static str, &'static str)>,
    build: &'static str,
    limits: &'static str,
}

fn template(kind: Kind, lang: Lang) -> Template {
    macro_rules! t {
        ($f:literal) => {
            include_str!(concat!("templates/", $f))
        };
    }
    let (manifest, input) = match kind {
        Kind::Policy => (t!("policy.toml"), t!("policy.json")),
        Kind::Agent => (t!("agent.toml"), t!("agent.json")),
        Kind::Connector => (t!("connector.toml"), t!("connector.json")),
        Kind::ModelAdapter => (t!("model-adapter.toml"), t!("model-adapter.json")),
    };
    let mut files = vec![("input.json".to_string(), input.to_string())];
    let LangFiles {
        source,
        test,
        build,
        limits,
    } = match lang {
        Lang::Rust => {
            let lib = match kind {
                Kind::Policy => t!("policy.rs"),
                Kind::Agent => t!("agent.rs"),
                Kind::Connector => t!("connector.rs"),
                Kind::ModelAdapter => t!("model-adapter.rs"),
            };
            LangFiles {
                source: vec![("Cargo.toml", t!("Cargo.toml.rust")), ("src/lib.rs", lib)],
                test: None,
                build: "[build]\ncommand = [\"cargo\", \"build\", \"--release\", \"--target\", \"wasm32-wasip2\"]\ncomponent = \"target/wasm32-wasip2/release/{{crate}}.wasm\"\ntest = [\"cargo\", \"test\", \"--quiet\"]\ninput = \"input.json\"\n",
                limits: "# A compiled plugin needs little: raise these when calls run out.\nfuel = 20_000_000\nmemory = \"16MiB\"\ntimeout = \"1s\"",
            }
        }
        Lang::Python => {
            let (app, logic, test) = match kind {
                Kind::Policy => (t!("policy.py"), t!("policy.logic.py"), t!("test_policy.py")),
                Kind::Agent => (t!("agent.py"), t!("agent.logic.py"), t!("test_agent.py")),
                Kind::Connector => (
                    t!("connector.py"),
                    t!("connector.logic.py"),
                    t!("test_connector.py"),
                ),
                Kind::ModelAdapter => (
                    t!("model-adapter.py"),
                    t!("model-adapter.logic.py"),
                    t!("test_model-adapter.py"),
                ),
            };
            LangFiles {
                source: vec![("app.py", app), ("logic.py", logic)],
                test: Some(("test_logic.py", test)),
                build: "[build]\ncommand = [\"componentize-py\", \"-d\", \"{wit}\", \"-w\", \"{world}\", \"componentize\", \"app\", \"-p\", \".\", \"-p\", \"{sdk}/python/src\", \"-o\", \"{out}\"]\ncomponent = \"{{name}}.wasm\"\ntest = [\"python3\", \"-m\", \"unittest\", \"-q\"]\ninput = \"input.json\"\n",
                limits: "# The interpreter is in every call: see docs/PLUGINS.md for fuel by language.\nfuel = 200_000_000\nmemory = \"64MiB\"\ntimeout = \"2s\"",
            }
        }
        Lang::Js => {
            let (plugin, logic, test) = match kind {
                Kind::Policy => (
                    t!("policy.plugin.js"),
                    t!("policy.logic.js"),
                    t!("policy.test.mjs"),
                ),
                Kind::Agent => (
                    t!("agent.plugin.js"),
                    t!("agent.logic.js"),
                    t!("agent.test.mjs"),
                ),
                Kind::Connector => (
                    t!("connector.plugin.js"),
                    t!("connector.logic.js"),
                    t!("connector.test.mjs"),
                ),
                Kind::ModelAdapter => (
                    t!("model-adapter.plugin.js"),
                    t!("model-adapter.logic.js"),
                    t!("model-adapter.test.mjs"),
                ),
            };
            LangFiles {
                source: vec![("plugin.js", plugin), ("logic.js", logic)],
                test: Some(("logic.test.mjs", test)),
                build: "[build]\ncommand = [\"node\", \"{sdk}/js/bin/evos-js-build.mjs\", \"plugin.js\", \"--wit\", \"{wit}\", \"--world\", \"{world}\", \"-o\", \"{out}\"]\ncomponent = \"{{name}}.wasm\"\ntest = [\"node\", \"--test\"]\ninput = \"input.json\"\n",
                limits: "# The interpreter is in every call: see docs/PLUGINS.md for fuel by language.\nfuel = 200_000_000\nmemory = \"64MiB\"\ntimeout = \"2s\"",
            }
        }
    };
    let manifest = format!("{}\n{build}", manifest.replace("{{limits}}", limits));
    files.push(("plugin.toml".to_string(), manifest));
    for (path, text) in source {
        files.push((path.to_string(), text.to_string()));
    }
    if let Some((path, text)) = test {
        files.push((path.to_string(), text.to_string()));
    }
    let ignore = match lang {
        Lang::Rust => "/target\n",
        Lang::Python => "/*.wasm\n__pycache__/\n",
        Lang::Js => "/*.wasm\n",
    };
    files.push((".gitignore".to_string(), ignore.to_string()));
    Template { files }
}

pub fn new(args: &NewArgs) -> Result<Exit> {
    let name: evos::manifest::PluginName = args
        .name
        .parse()
        .map_err(|e| anyhow!("{e}; e.g. `evos new payout-check --kind policy`"))?;
    let kind = Kind::from(args.kind);
    let target = args.dir.join(name.as_str());
    if target.exists() {
        bail!(
            "{} already exists; choose another name or --dir, nothing was written",
            target.display()
        );
    }
    let sdk_path = if args.lang == Lang::Rust {
        sdk_dir()?.display().to_string()
    } else {
        String::new()
    };
    let vars = [
        ("{{name}}", name.as_str().to_string()),
        ("{{crate}}", name.as_str().replace('-', "_")),
        ("{{kind}}", kind.as_str().to_string()),
        ("{{sdk_path}}", sdk_path),
    ];
    // Everything is written into a sibling directory first and renamed into
    // place: a failure leaves nothing half-written.
    let staging = args.dir.join(format!(
        ".{}.evos-new-{}",
        name.as_str(),
        std::process::id()
    ));
    let written = (|| -> Result<()> {
        for (path, text) in template(kind, args.lang).files {
            let text = vars.iter().fold(text, |t, (k, v)| t.replace(k, v));
            let file = staging.join(&path);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
        }
        std::fs::rename(&staging, &target)
            .with_context(|| format!("moving the new plugin to {}", target.display()))
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    // The manifest must be valid as written.
    Manifest::load(target.join("plugin.toml"))
        .context("the written manifest does not load (a bug in evos new)")?;
    say!(
        "created {}: {} {kind} plugin in {}",
        target.display(),
        if kind == Kind::Agent { "an" } else { "a" },
        match args.lang {
            Lang::Rust => "Rust",
            Lang::Python => "Python",
            Lang::Js => "JavaScript",
        }
    );
    say!("build, check, test and invoke it on input.json:");
    say!("  evos build {} --test", target.display());
    Ok(Exit::Success)
}

/// What one plugin's build came to. (`evos build` reports its progress on
/// stderr, as compilers do; stdout holds only `--json`.)
#[derive(serde::Serialize)]
struct Built {
    plugin: String,
    manifest: String,
    component: String,
    digest: String,
    size: u64,
    check_ok: bool,
    tests_ok: Option<bool>,
    invoke_outcome: Option<String>,
}

impl Built {
    fn ok(&self) -> bool {
        self.check_ok
            && self.tests_ok != Some(false)
            && self.invoke_outcome.as_deref().is_none_or(|o| o == "ok")
    }
}

pub async fn build(cli: &Cli, args: &BuildArgs) -> Result<Exit> {
    let targets = build_targets(&args.path)?;
    if args.out.is_some() && targets.len() != 1 {
        bail!(
            "--out names one component, but {} plugins are built",
            targets.len()
        );
    }
    let mut results = Vec::new();
    for (manifest_path, copy_to) in &targets {
        let built = build_one(cli, manifest_path, args.test).await?;
        let ok = built.ok();
        if ok && let Some(dest) = copy_to.as_ref().or(args.out.as_ref()) {
            copy_atomically(Path::new(&built.component), dest)?;
            if !args.json {
                shout!("  copied to {}", dest.display());
            }
        }
        results.push(built);
        if !ok {
            break;
        }
    }
    if args.json {
        print_json(&results)?;
    }
    Ok(
        if results.iter().all(Built::ok) && results.len() == targets.len() {
            Exit::Success
        } else {
            Exit::Negative
        },
    )
}

/// The manifests to build from `path`, each with where its component is
/// copied afterwards (an app file's `component`).
fn build_targets(path: &Path) -> Result<Vec<(PathBuf, Option<PathBuf>)>> {
    let file = if path.is_dir() {
        let plugin = path.join("plugin.toml");
        if plugin.is_file() {
            plugin
        } else if path.join("evos.toml").is_file() {
            path.join("evos.toml")
        } else {
            bail!(
                "{} holds neither plugin.toml nor evos.toml; name the manifest or app file to build",
                path.display()
            );
        }
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| anyhow!("{} is not valid TOML: {}", file.display(), e.message()))?;
    if !table.contains_key("plugins") {
        return Ok(vec![(file, None)]);
    }
    let app = evos::app::App::load(&file)?;
    let targets: Vec<_> = app
        .plugins
        .iter()
        .filter(|p| p.manifest.build.is_some())
        .map(|p| {
            let manifest = PathBuf::from(&p.manifest.origin);
            (manifest, Some(p.component.clone()))
        })
        .collect();
    if targets.is_empty() {
        bail!(
            "no plugin of {} has a [build] table in its manifest; nothing to build",
            file.display()
        );
    }
    Ok(targets)
}

async fn build_one(cli: &Cli, manifest_path: &Path, test: bool) -> Result<Built> {
    let manifest = Manifest::load(manifest_path)?;
    let Some(spec) = manifest.build.clone() else {
        bail!(
            "{} has no [build] table; add one, e.g.\n[build]\ncommand = [\"cargo\", \"build\", \"--release\", \"--target\", \"wasm32-wasip2\"]\ncomponent = \"target/wasm32-wasip2/release/{}.wasm\"",
            manifest_path.display(),
            manifest.name().replace('-', "_")
        );
    };
    let dir = std::path::absolute(&manifest.base)?;
    let component = dir.join(&spec.component);
    let wants_sdk = |cmd: &[String]| cmd.iter().any(|a| a.contains("{sdk}"));
    let sdk = if wants_sdk(&spec.command) || spec.test.as_deref().is_some_and(wants_sdk) {
        Some(sdk_dir()?)
    } else {
        sdk_dir().ok()
    };
    shout!("building {} ({})", manifest.name(), manifest_path.display());
    let wit = GrantedWit::write(&manifest)?;
    let places = Places {
        out: &component,
        sdk: sdk.as_deref(),
        wit: &wit.0,
    };
    run_step("command", &spec.command, &dir, &places)?;
    let bytes = std::fs::read(&component).with_context(|| {
        format!(
            "the build command succeeded but wrote no component at {} ([build] component); make the command write there, or point `component` at what it writes",
            component.display()
        )
    })?;
    let info = evos::inspect::inspect(&bytes, &component.display().to_string())?;
    let report = evos::inspect::check(&manifest, &info);
    shout!(
        "  component {} ({}, sha256:{})",
        component.display(),
        bytesize::ByteSize(info.size),
        &info.digest[..12]
    );
    let refused = report.reachable.iter().filter(|r| r.refused).count();
    if refused > 0 {
        shout!("  {refused} imports linked inert (every use refused): see `evos check`");
    }
    for line in super::check::findings(&report, &manifest) {
        shout!("  {line}");
    }
    let mut built = Built {
        plugin: manifest.name().to_string(),
        manifest: manifest_path.display().to_string(),
        component: component.display().to_string(),
        digest: info.digest.clone(),
        size: info.size,
        check_ok: report.ok(),
        tests_ok: None,
        invoke_outcome: None,
    };
    if !built.check_ok {
        shout!("  refused: this component cannot be deployed with this manifest");
        return Ok(built);
    }
    shout!("  check ok: every import is granted");
    if !test {
        return Ok(built);
    }
    if let Some(cmd) = &spec.test {
        let passed = match run_step("test", cmd, &dir, &places) {
            Ok(()) => true,
            Err(e) => {
                shout!("  {e}");
                false
            }
        };
        shout!("  tests {}", if passed { "passed" } else { "FAILED" });
        built.tests_ok = Some(passed);
        if !passed {
            return Ok(built);
        }
    }
    if let Some(input) = &spec.input {
        let path = dir.join(input);
        let raw = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let input = CallInput::from_json_slice(manifest.kind(), &raw)
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let runtime = runtime(cli)?;
        let plugin = runtime.load(manifest, &bytes, &component.display().to_string())?;
        runtime.register(plugin.clone());
        let report = runtime.call(&plugin, input).await?;
        shout!(
            "  invoke {}: {} ({} fuel, {} us)",
            path.display(),
            report.outcome.summary(),
            report.fuel_consumed,
            report.duration_us
        );
        if let Some(output) = &report.output {
            shout!("  output {}", serde_json::to_string(output)?);
        }
        built.invoke_outcome = Some(report.outcome.name().to_string());
    }
    Ok(built)
}

/// What a build command's placeholders stand for.
struct Places<'a> {
    /// `{out}`: where the component goes.
    out: &'a Path,
    /// `{sdk}`: the SDK directory, when known.
    sdk: Option<&'a Path>,
    /// `{wit}`: evos's WIT with the `granted` world (`{world}`).
    wit: &'a Path,
}

/// Run one of the manifest's commands in the plugin's directory, its
/// output on stderr, with `{out}`, `{sdk}`, `{wit}` and `{world}` filled in.
fn run_step(key: &str, command: &[String], dir: &Path, places: &Places<'_>) -> Result<()> {
    let sdk = places.sdk;
    let fill = |arg: &str| -> Result<String> {
        let mut arg = arg
            .replace("{out}", &places.out.display().to_string())
            .replace("{wit}", &places.wit.display().to_string())
            .replace("{world}", "granted");
        if arg.contains("{sdk}") {
            let sdk = sdk.ok_or_else(|| anyhow!("the evos SDK directory is not known"))?;
            arg = arg.replace("{sdk}", &sdk.display().to_string());
        }
        Ok(arg)
    };
    let argv: Vec<String> = command.iter().map(|a| fill(a)).collect::<Result<_>>()?;
    let (program, rest) = argv
        .split_first()
        .ok_or_else(|| anyhow!("[build] {key} is empty"))?;
    let mut cmd = Command::new(program);
    cmd.args(rest)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr()));
    if let Some(sdk) = sdk {
        // The Python SDK's source tree, for the plugin's own tests.
        let mut path = std::ffi::OsString::from(sdk.join("python/src"));
        if let Some(old) = std::env::var_os("PYTHONPATH") {
            path.push(":");
            path.push(old);
        }
        cmd.env("PYTHONPATH", path);
        cmd.env("EVOS_SDK", sdk);
    }
    let status = cmd.status().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow!(
                "cannot run `{program}` ([build] {key}): not found; {}",
                install_hint(program)
            )
        } else {
            anyhow!("cannot run `{program}` ([build] {key}): {e}")
        }
    })?;
    if !status.success() {
        bail!(
            "[build] {key} `{}` failed ({status}) in {}; its output is above",
            argv.join(" "),
            dir.display()
        );
    }
    Ok(())
}

fn install_hint(program: &str) -> String {
    match Path::new(program).file_name().and_then(|n| n.to_str()) {
        Some("componentize-py") => {
            "install it with `pip install -r sdk/python/requirements-build.txt` (componentize-py 0.25.1)".into()
        }
        Some("node") => {
            "install Node.js 20 or later, then `npm ci --prefix sdk/js` for the pinned componentize-js".into()
        }
        Some("cargo") => {
            "install Rust with rustup, then `rustup target add wasm32-wasip2`".into()
        }
        _ => "install it or put it on PATH".into(),
    }
}

/// Copy `from` to `to` through a temporary file renamed into place, so a
/// reader never sees half a component.
fn copy_atomically(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let tmp = to.with_extension(format!("wasm.tmp-{}", std::process::id()));
    std::fs::copy(from, &tmp).with_context(|| format!("copying to {}", tmp.display()))?;
    std::fs::rename(&tmp, to).with_context(|| format!("moving into {}", to.display()))?;
    Ok(())
}
