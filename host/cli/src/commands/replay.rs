//! `evos replay`: recorded inputs through a candidate version, with
//! effects suppressed; or a JSONL file of inputs through it (batch mode).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use evos::replay::{self, ReplayOptions, ReplayReport};
use evos::runtime::Router;

use super::{Cli, Exit, print_json};

#[derive(clap::Args)]
pub struct Args {
    /// The plugin whose recorded calls to replay.
    plugin: String,
    /// The candidate: a stored version (`1.1.0`), or a manifest file (with
    /// --component).
    #[arg(long)]
    candidate: String,
    /// The candidate's component, when --candidate is a manifest.
    #[arg(long)]
    component: Option<PathBuf>,
    /// Only calls recorded at or after this time: RFC 3339, or a duration
    /// ago such as `7d`.
    #[arg(long)]
    since: Option<String>,
    /// At most this many recorded calls (the newest).
    #[arg(long)]
    limit: Option<usize>,
    /// Batch mode: call the candidate with each line of this JSONL file
    /// (inputs as `evos invoke` reads them) and print one JSON answer per
    /// line, instead of replaying recorded calls.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Calls in flight at once (0: twice the cores, at most the
    /// candidate's max-concurrency).
    #[arg(long, default_value_t = 0)]
    concurrency: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(cli: &Cli, args: &Args) -> Result<Exit> {
    let registry = super::control::open(cli)?;
    let candidate = if args.candidate.ends_with(".toml") || args.component.is_some() {
        let component = args.component.as_ref().with_context(|| {
            format!(
                "--candidate {} is a manifest: name its component with --component <file.wasm>",
                args.candidate
            )
        })?;
        let manifest = evos::Manifest::load(&args.candidate)?;
        let bytes = registry.runtime().engine().read_component(component)?;
        registry
            .runtime()
            .load(manifest, &bytes, &component.display().to_string())?
    } else {
        registry.stored_version(&args.plugin, &args.candidate)?
    };
    if candidate.name() != args.plugin {
        anyhow::bail!(
            "--candidate is plugin `{}`, not `{}`",
            candidate.name(),
            args.plugin
        );
    }
    let router: Arc<dyn Router> = registry.clone();
    if let Some(path) = &args.input {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let started = std::time::Instant::now();
        let answers = replay::rescore(
            registry.runtime(),
            Some(router),
            &candidate,
            &text,
            args.concurrency,
        )
        .await
        .with_context(|| format!("in {}", path.display()))?;
        let secs = started.elapsed().as_secs_f64();
        let mut outcomes = std::collections::BTreeMap::<&str, u64>::new();
        for a in &answers {
            println!("{}", serde_json::to_string(a)?);
            *outcomes.entry(a.outcome.as_str()).or_default() += 1;
        }
        shout!(
            "{} {} ({}) answered {} inputs in {:.2}s ({:.0}/s): {}",
            candidate.name(),
            candidate.version(),
            &candidate.digest()[..12],
            answers.len(),
            secs,
            answers.len() as f64 / secs.max(1e-9),
            outcomes
                .iter()
                .map(|(o, n)| format!("{o} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        return Ok(Exit::Success);
    }
    let options = ReplayOptions {
        since: args.since.as_deref().map(super::since_time).transpose()?,
        limit: args.limit,
        concurrency: args.concurrency,
    };
    let report = replay::replay(
        registry.runtime(),
        Some(router),
        &**registry.store(),
        &args.plugin,
        &candidate,
        &options,
    )
    .await?;
    if args.json {
        print_json(&report)?;
    } else {
        print_report(&report);
    }
    Ok(Exit::Success)
}

fn rate(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{r:.3}"))
}

fn counts(map: &std::collections::BTreeMap<String, u64>) -> String {
    map.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_report(r: &ReplayReport) {
    say!(
        "replay {}: candidate {} ({}) on {} recorded calls ({}){}",
        r.plugin,
        r.candidate_version,
        &r.candidate_digest[..12.min(r.candidate_digest.len())],
        r.replayed,
        counts(&r.recorded_versions),
        if r.skipped > 0 {
            format!(", {} skipped", r.skipped)
        } else {
            String::new()
        }
    );
    say!(
        "  agreement with the recorded output  {} ({}/{}); decisions changed: {}",
        rate(r.agreement),
        r.agreed,
        r.replayed,
        r.changed
    );
    let h = &r.humans;
    say!(
        "  agreement with humans               candidate {} vs recorded {} over {} labelled calls",
        rate(h.candidate_rate),
        rate(h.recorded_rate),
        h.compared
    );
    say!(
        "  recorded -> candidate               {}",
        counts(&r.confusion)
    );
    if !h.confusion.is_empty() {
        say!(
            "  candidate -> human label            {}",
            counts(&h.confusion)
        );
    }
    say!(
        "  latency p50/p95/p99 (us)            candidate {}/{}/{}, recorded {}/{}/{}",
        r.candidate.p50_us,
        r.candidate.p95_us,
        r.candidate.p99_us,
        r.recorded.p50_us,
        r.recorded.p95_us,
        r.recorded.p99_us
    );
    say!(
        "  fuel (mean)                         candidate {}, recorded {}",
        r.candidate.mean_fuel,
        r.recorded.mean_fuel
    );
    say!(
        "  outcomes                            candidate {}; recorded {}",
        counts(&r.candidate.outcomes),
        counts(&r.recorded.outcomes)
    );
    say!("  replayed at {:.0} calls/s", r.calls_per_second);
    for c in &r.changes {
        say!(
            "  changed: event {} (trace {}) {} -> {}",
            c.event_id,
            c.trace_id,
            c.recorded,
            c.candidate
        );
    }
}
