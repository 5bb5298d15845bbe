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

/// Build the plugins, run the ratio benchmarks (release build) and write
/// docs/BENCHMARKS.md.
fn bench(quick: bool) -> Result<()> {
    plugins()?;
    let root = root();
    let out = root.join("docs/BENCHMARKS.md");
    std::fs::create_dir_all(root.join("docs")).context("creating docs/")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&root)
        .args(["bench", "-p", "evos", "--bench", "ratios", "--"])
        .arg("--out")
        .arg(&out);
    if quick {
        cmd.arg("--quick");
    }
    let status = cmd.status().context("running the benchmarks")?;
    if !status.success() {
        bail!("the benchmarks failed");
    }
    Ok(())
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
