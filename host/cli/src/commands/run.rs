//! `evos run`: drive raw input through the app file's pipeline (connector ->
//! agents -> policies -> action) and print what became of every action.

use std::path::PathBuf;

use anyhow::Result;
use evos::app::App;
use evos::pipeline::{self, Disposition, RunOptions};

use super::{Cli, Exit, print_json, read_input, runtime};

#[derive(clap::Args)]
pub struct Args {
    /// The connector that ingests the input.
    connector: String,
    /// The raw input (a file, or - for stdin), e.g. a webhook body.
    #[arg(long)]
    input: PathBuf,
    /// Content type of the input.
    #[arg(long, default_value = "application/json")]
    content_type: String,
    /// The app file: plugins and their bindings.
    #[arg(long, default_value = "evos.toml")]
    app: PathBuf,
    /// Carry out allowed actions through the executing connector.
    #[arg(long)]
    execute: bool,
    /// Queue escalated actions for review, audit every event's path and
    /// record the events the app's `[recording]` samples, in the data
    /// directory (as `evos up` does).
    #[arg(long)]
    record: bool,
    /// Print the pipeline report as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(cli: &Cli, args: &Args) -> Result<Exit> {
    let app = App::load(&args.app)?;
    let runtime = runtime(cli)?;
    app.load_into(&runtime)?;
    let body = read_input(&args.input)?;
    let options = if args.record {
        let store: std::sync::Arc<dyn evos::store::StateStore> = super::open_store(cli)?;
        let recorder = match &app.recording {
            Some(config) => {
                let key = evos::redact::host_key(&cli.data_dir)?;
                Some(std::sync::Arc::new(evos::recording::Recorder::new(
                    config.clone(),
                    &key,
                )?))
            }
            None => None,
        };
        RunOptions {
            execute: args.execute,
            reviews: Some(evos::review::ReviewQueue::new(store.clone())),
            audit: Some(store),
            recorder,
            ..Default::default()
        }
    } else {
        RunOptions {
            execute: args.execute,
            ..Default::default()
        }
    };
    let report = pipeline::run(
        std::sync::Arc::new(runtime.clone()),
        std::sync::Arc::new(app.clone()),
        &args.connector,
        body,
        &args.content_type,
        &options,
    )
    .await?;
    if args.json {
        print_json(&report)?;
    } else {
        let s = &report.ingest;
        say!(
            "ingest   {} {} -> {} ({} us)",
            s.plugin,
            s.version,
            s.outcome,
            s.duration_us
        );
        for e in &report.events {
            say!(
                "event    {} {} trace={}",
                e.event.kind,
                e.event.id,
                e.event.trace_id
            );
            for a in &e.agents {
                say!(
                    "  agent  {} {} -> {} (fuel {}, {} us)",
                    a.plugin,
                    a.version,
                    a.outcome,
                    a.fuel_consumed,
                    a.duration_us
                );
                for n in &a.nested {
                    say!(
                        "    model {} {} -> {} (fuel {}, {} us)",
                        n.plugin,
                        n.version,
                        n.outcome,
                        n.fuel_consumed,
                        n.duration_us
                    );
                }
            }
            for a in &e.actions {
                say!(
                    "  action {} by {}: {}",
                    a.action.kind,
                    a.proposed_by,
                    a.action.rationale
                );
                for p in &a.policies {
                    let d = match &p.decision {
                        evos::types::Decision::Allow => "allow".to_string(),
                        evos::types::Decision::Deny(r) => format!("deny: {r}"),
                        evos::types::Decision::Escalate(r) => format!("escalate: {r}"),
                    };
                    say!("    policy {} -> {d}", p.policy);
                }
                let verdict = match &a.disposition {
                    Disposition::Executed { connector, receipt } => {
                        format!("executed by {connector}: {receipt}")
                    }
                    Disposition::Allowed => "allowed (pass --execute to carry it out)".into(),
                    Disposition::Denied { reasons } => format!("denied: {}", reasons.join("; ")),
                    Disposition::Escalated { reasons, .. } => {
                        format!("escalated for human review: {}", reasons.join("; "))
                    }
                    Disposition::Failed { error } => format!("failed: {error}"),
                };
                say!("    => {verdict}");
            }
        }
        if let Some(err) = &report.ingest_error {
            say!("ingest failed: {err}");
            if args
                .input
                .file_name()
                .is_some_and(|n| n == "invoke-input.json")
            {
                shout!(
                    "hint: {} is input for one plugin call (`evos invoke`/`evos call`); `evos run` takes what the connector ingests, e.g. plugins/claims-webhook/claims.json",
                    args.input.display()
                );
            }
        }
    }
    Ok(if report.ingest_error.is_none() {
        Exit::Success
    } else {
        Exit::Negative
    })
}
