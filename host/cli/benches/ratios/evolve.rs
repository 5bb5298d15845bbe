//! What the evolution loop and its observation cost: pipeline throughput
//! with a share of the events recorded (and redacted) against none, with
//! every event's spans exported over OTLP against none, and replay
//! throughput against the same calls made live.

use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;

use super::{
    Bench, CALM_INCIDENT, CONCURRENCY, Row, deployed_claims_app, pipeline_rate, pipeline_rate_then,
    sink, stat,
};

/// Incidents carrying personal data, so redaction does real work on every
/// recorded call: a phone number and an e-mail address.
const INCIDENT_WITH_PII: &str = "Scratched bumper in the car park; call +1 415 555 0199 or write to jane.roe@example.com for the repair quote.";

/// Pipeline events/s with `share` of the events recorded and redacted,
/// against the same pipeline recording nothing, alternated in one run.
fn recording(b: &Bench, share: f64, target: f64) -> anyhow::Result<Row> {
    let (dir, reg, app) = deployed_claims_app(b, &format!("recording-{share}"))?;
    let raw: ::evos::recording::RawRecording = toml::from_str(&format!(
        "sample = {{ claims-webhook = {share} }}\nredact = [\"/payload/claimant_id\"]"
    ))?;
    let config = raw
        .validate(&["claims-webhook"])
        .map_err(anyhow::Error::msg)?;
    let recorder = Arc::new(::evos::recording::Recorder::new(config, &[7; 32])?);
    let reviews = ::evos::review::ReviewQueue::new(reg.store().clone());
    let options =
        |recorder: Option<Arc<::evos::recording::Recorder>>| ::evos::pipeline::RunOptions {
            execute: true,
            reviews: Some(reviews.clone()),
            audit: Some(reg.store().clone()),
            concurrency: CONCURRENCY,
            recorder,
            ..Default::default()
        };
    let (none, some) = (options(None), options(Some(recorder)));
    let batches = if b.runs <= 3 { 2 } else { 5 };
    let mut n = 0;
    // Warm both up.
    pipeline_rate(b, (&reg, &app), &none, 1, &mut n, INCIDENT_WITH_PII)?;
    pipeline_rate(b, (&reg, &app), &some, 1, &mut n, INCIDENT_WITH_PII)?;
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..b.runs {
        without.push(pipeline_rate(
            b,
            (&reg, &app),
            &none,
            batches,
            &mut n,
            INCIDENT_WITH_PII,
        )?);
        with.push(pipeline_rate(
            b,
            (&reg, &app),
            &some,
            batches,
            &mut n,
            INCIDENT_WITH_PII,
        )?);
    }
    let recorded = reg.store().recordings(&Default::default())?.len();
    let _ = std::fs::remove_dir_all(&dir);
    let (w, wo) = (stat(with), stat(without));
    let ratio = w.median / wo.median;
    Ok(Row {
        name: format!(
            "pipeline events/s with {:.0}% of events recorded and redacted",
            share * 100.0
        ),
        evos: w,
        baseline: Some(("recording nothing".into(), wo)),
        unit: "events/s",
        target: format!("≥ {target}×"),
        met: ratio >= target,
        ratio: Some(ratio),
        note: format!(
            "the pipeline row's path (audit on, every action executed), each claim's incident holding a phone number and an e-mail address; each recorded event keeps its 5 calls (agent, model, 2 policies, execute) redacted in the event's own transaction; {recorded} events recorded over the run"
        ),
    })
}

/// The pipeline row's path with every event's spans exported over OTLP/HTTP
/// to a local collector (`evos up --otlp`), against no export.
pub fn otlp(b: &Bench) -> anyhow::Result<Row> {
    let (dir, reg, app) = deployed_claims_app(b, "otlp")?;
    let collector = sink()?;
    let otlp = ::evos::otlp::Otlp::start(
        &::evos::otlp::OtlpConfig {
            endpoint: format!("http://127.0.0.1:{collector}"),
            metrics_every: std::time::Duration::from_secs(10),
        },
        std::sync::Weak::new(),
        "bench",
    )?;
    let reviews = ::evos::review::ReviewQueue::new(reg.store().clone());
    let options = ::evos::pipeline::RunOptions {
        execute: true,
        reviews: Some(reviews),
        audit: Some(reg.store().clone()),
        concurrency: CONCURRENCY,
        ..Default::default()
    };
    let export = |r: &::evos::pipeline::PipelineReport| otlp.pipeline(r, None);
    let batches = if b.runs <= 3 { 2 } else { 5 };
    let mut n = 0;
    pipeline_rate_then(b, (&reg, &app), &options, 1, &mut n, CALM_INCIDENT, &export)?;
    pipeline_rate(b, (&reg, &app), &options, 1, &mut n, CALM_INCIDENT)?;
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..b.runs {
        without.push(pipeline_rate(
            b,
            (&reg, &app),
            &options,
            batches,
            &mut n,
            CALM_INCIDENT,
        )?);
        with.push(pipeline_rate_then(
            b,
            (&reg, &app),
            &options,
            batches,
            &mut n,
            CALM_INCIDENT,
            &export,
        )?);
    }
    let dropped = otlp.dropped();
    let _ = std::fs::remove_dir_all(&dir);
    let (w, wo) = (stat(with), stat(without));
    let ratio = w.median / wo.median;
    Ok(Row {
        name: "pipeline events/s exporting every event's spans over OTLP".into(),
        evos: w,
        baseline: Some(("no export".into(), wo)),
        unit: "events/s",
        target: "≥ 0.9×".into(),
        met: ratio >= 0.9,
        ratio: Some(ratio),
        note: format!(
            "the pipeline row's path (audit on, every action executed); each event's 7 spans (event, ingest, agent, model, 2 policies, execute) built from its report, queued, protobuf-encoded and posted by the exporter thread to a local collector on the same 2 cores; {dropped} spans dropped because the queue was full"
        ),
    })
}

pub fn recording_10(b: &Bench) -> anyhow::Result<Row> {
    recording(b, 0.1, 0.9)
}

pub fn recording_100(b: &Bench) -> anyhow::Result<Row> {
    recording(b, 1.0, 0.7)
}

/// Replay throughput: recorded fraud-score calls through a candidate (as
/// shadows, compared with the recording and the labels), against the same
/// inputs called live through the registry at the same concurrency.
pub fn replay(b: &Bench) -> anyhow::Result<Row> {
    let (dir, reg, app) = deployed_claims_app(b, "replay")?;
    let raw: ::evos::recording::RawRecording = toml::from_str("sample = { claims-webhook = 1.0 }")?;
    let config = raw
        .validate(&["claims-webhook"])
        .map_err(anyhow::Error::msg)?;
    let options = ::evos::pipeline::RunOptions {
        execute: true,
        audit: Some(reg.store().clone()),
        concurrency: CONCURRENCY,
        recorder: Some(Arc::new(::evos::recording::Recorder::new(
            config, &[7; 32],
        )?)),
        ..Default::default()
    };
    let mut n = 0;
    pipeline_rate(
        b,
        (&reg, &app),
        &options,
        if b.runs <= 3 { 10 } else { 20 },
        &mut n,
        super::CALM_INCIDENT,
    )?;
    let candidate = reg.stored_version("fraud-score", "1.0.0")?;
    let recorded = reg
        .store()
        .recorded_calls(&::evos::store::RecordingFilter {
            plugin: Some("fraud-score"),
            ..Default::default()
        })?;
    let inputs: Vec<::evos::CallInput> = recorded
        .iter()
        .filter_map(|c| ::evos::CallInput::from_json(candidate.kind(), c.call.input.clone()).ok())
        .collect();
    let width = std::thread::available_parallelism()
        .map_or(2, |n| n.get() * 2)
        .min(candidate.manifest().limits.max_concurrency.0 as usize);
    let live = || -> anyhow::Result<f64> {
        let start = Instant::now();
        let reports: Vec<_> = b.rt.block_on(
            futures_util::stream::iter(inputs.iter().cloned().map(|input| {
                let reg = reg.clone();
                async move { reg.call("fraud-score", input, None).await }
            }))
            .buffered(width)
            .collect::<Vec<_>>(),
        );
        anyhow::ensure!(
            reports
                .iter()
                .all(|r| r.as_ref().is_ok_and(|r| r.outcome.is_ok())),
            "a live call failed"
        );
        Ok(reports.len() as f64 / start.elapsed().as_secs_f64())
    };
    let replayed = || -> anyhow::Result<f64> {
        let router: Arc<dyn ::evos::runtime::Router> = reg.clone();
        let report = b.rt.block_on(::evos::replay::replay(
            reg.runtime(),
            Some(router),
            &**reg.store(),
            "fraud-score",
            &candidate,
            &Default::default(),
        ))?;
        anyhow::ensure!(
            report.replayed as usize == inputs.len() && report.agreed == report.replayed,
            "the stable version disagreed with its own recording"
        );
        Ok(report.calls_per_second)
    };
    live()?;
    replayed()?;
    let (mut r, mut l) = (Vec::new(), Vec::new());
    for _ in 0..b.runs {
        r.push(replayed()?);
        l.push(live()?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let (r, l) = (stat(r), stat(l));
    let ratio = r.median / l.median;
    Ok(Row {
        name: "replay calls/s (recorded model calls through a candidate, compared)".into(),
        evos: r,
        baseline: Some(("the same calls live".into(), l)),
        unit: "calls/s",
        target: "≥ 0.8×".into(),
        met: ratio >= 0.8,
        ratio: Some(ratio),
        note: format!(
            "{} recorded fraud-score calls read from the store, run as shadows {width} at a time and compared with the recorded answers and the labels; the baseline calls the same inputs live through the registry, {width} at a time",
            inputs.len()
        ),
    })
}
