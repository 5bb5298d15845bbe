//! `evos check`: a component's real imports against its manifest's grants.
//! Exit 1 when a privileged import is not granted or the kind's export is
//! missing; over-grants are warnings.

use std::path::PathBuf;

use anyhow::Result;

use super::{Exit, print_json, read_input};

#[derive(clap::Args)]
pub struct Args {
    /// The capability manifest (.toml).
    manifest: PathBuf,
    /// The component (.wasm).
    component: PathBuf,
    /// Print JSON (`under_granted`, `over_granted`, `reachable`, `ok`).
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args) -> Result<Exit> {
    let manifest = evos::Manifest::load(&args.manifest)?;
    let bytes = read_input(&args.component)?;
    let info = evos::inspect::inspect(&bytes, &args.component.display().to_string())?;
    let report = evos::inspect::check(&manifest, &info);
    let ok = report.ok();
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        value["ok"] = serde_json::Value::Bool(ok);
        print_json(&value)?;
    } else {
        say!(
            "plugin {} ({}) sha256:{}",
            report.plugin,
            report.kind,
            report.digest
        );
        say!("can reach:");
        for r in report.reachable.iter().filter(|r| !r.refused) {
            say!("  {:<45} via {}", r.import, r.provided_by);
        }
        let refused: Vec<_> = report.reachable.iter().filter(|r| r.refused).collect();
        if !refused.is_empty() {
            say!("linked, every use refused and reported:");
            for r in refused {
                say!("  {:<45} {}", r.import, r.provided_by);
            }
        }
        for line in findings(&report, &manifest) {
            say!("{line}");
        }
        say!(
            "{}",
            if ok {
                "ok: every import is granted"
            } else {
                "refused: this component cannot be deployed with this manifest"
            }
        );
    }
    Ok(if ok { Exit::Success } else { Exit::Negative })
}

/// The findings of a check, one line each: a missing export and
/// under-grants as errors, over-grants as warnings.
pub fn findings(report: &evos::inspect::CheckReport, manifest: &evos::Manifest) -> Vec<String> {
    let mut lines = Vec::new();
    if !report.exports_kind {
        lines.push(format!(
            "error: the component does not export `{}`, which a {} must",
            manifest.kind().export_interface(),
            manifest.kind()
        ));
    }
    lines.extend(
        report
            .under_granted
            .iter()
            .map(|f| format!("error: {}", f.message)),
    );
    lines.extend(
        report
            .over_granted
            .iter()
            .map(|f| format!("warning: {}", f.message)),
    );
    lines
}
