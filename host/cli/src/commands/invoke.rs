//! `evos invoke`: one call of a plugin's export with JSON input, printing the
//! call report. Exit 0 only when the outcome is `ok`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use evos::{CallInput, CallReport};

use super::{Cli, Exit, print_json, read_input, runtime};

#[derive(clap::Args)]
pub struct Args {
    /// The capability manifest (.toml).
    manifest: PathBuf,
    /// The component (.wasm).
    component: PathBuf,
    /// JSON input (a file, or - for stdin). Shapes by kind: agent: an event;
    /// connector: {"content_type", "body"} or {"execute": <action>};
    /// model-adapter: {"input", "parameters"}; policy: {"action", "event"}.
    #[arg(long)]
    input: PathBuf,
    /// App file whose plugins are loaded too, so an agent's `models` calls
    /// resolve (used when it exists).
    #[arg(long, default_value = "evos.toml")]
    app: PathBuf,
    /// Print the full call report as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(cli: &Cli, args: &Args) -> Result<Exit> {
    let runtime = runtime(cli)?;
    let manifest = evos::Manifest::load(&args.manifest)?;
    if args.app.exists() {
        let app = evos::app::App::load(&args.app)?;
        // Only what this plugin can call is needed: its granted models.
        for model in &manifest.capabilities.models {
            if let Some(entry) = app.get(model.as_str()) {
                entry.load_into(&runtime)?;
            }
        }
    }
    let bytes = read_input(&args.component)?;
    let plugin = runtime.load(manifest, &bytes, &args.component.display().to_string())?;
    runtime.register(plugin.clone());

    let raw = read_input(&args.input)?;
    let value: serde_json::Value = serde_json::from_slice(&raw)
        .with_context(|| format!("{} is not valid JSON", args.input.display()))?;
    let input = CallInput::from_json(plugin.kind(), value)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.input.display()))?;
    let report = runtime.call(&plugin, input).await?;
    if args.json {
        print_json(&report)?;
    } else {
        print_report(&report, 0)?;
    }
    Ok(if report.outcome.is_ok() {
        Exit::Success
    } else {
        Exit::Negative
    })
}

pub fn print_report(r: &CallReport, indent: usize) -> Result<()> {
    let pad = " ".repeat(indent);
    say!(
        "{pad}plugin         {} {} (sha256:{})",
        r.plugin,
        r.version,
        &r.digest[..12.min(r.digest.len())]
    );
    say!("{pad}outcome        {}", r.outcome.summary());
    say!("{pad}fuel_consumed  {}", r.fuel_consumed);
    say!("{pad}duration_us    {}", r.duration_us);
    if let Some(out) = &r.output {
        let text = serde_json::to_string_pretty(out)?;
        say!("{pad}output");
        for line in text.lines() {
            say!("{pad}  {line}");
        }
    }
    if !r.backtrace.is_empty() {
        say!("{pad}backtrace");
        for (i, f) in r.backtrace.iter().enumerate() {
            say!("{pad}  {i:>3}: {f}");
        }
    }
    for refusal in &r.refusals {
        say!(
            "{pad}refused        {}: {} (x{})",
            refusal.capability,
            refusal.detail,
            refusal.count
        );
    }
    for line in &r.logs {
        say!("{pad}log [{}] {}", line.level, line.message);
    }
    for nested in &r.nested {
        say!("{pad}nested call:");
        print_report(nested, indent + 2)?;
    }
    Ok(())
}
