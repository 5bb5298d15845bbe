//! Replay and backtest: recorded inputs run through a candidate version.
//!
//! [`replay`] takes a plugin's recorded calls ([`crate::recording`]) and
//! calls the candidate with each recorded input as a shadow: the same
//! grants, no effects (kv writes go to an overlay, outgoing requests are
//! not sent, files are read-only, its model calls are shadow calls). It
//! reports how the candidate's answers compare with what the live version
//! answered then and with what humans said since:
//!
//! - **changed**: answers whose class (a policy's decision, an agent's
//!   action kinds, a model's class by `[rollout.compare]`) differs from the
//!   recorded one, and the confusion matrix `"<recorded> -> <candidate>"`;
//! - **agreement with the recorded output** ([`crate::compare::agree`]);
//! - **agreement with human labels**, for the candidate and for the
//!   recorded versions over the same labelled calls, so the two rates can
//!   be compared directly;
//! - outcomes, latency (p50/p95/p99) and fuel of both, and the replay's
//!   own throughput.
//!
//! [`rescore`] is the batch mode: inputs from a JSONL file, one answer per
//! input, for bulk re-scoring.
//!
//! Recorded inputs are redacted: a candidate sees pseudonyms where the live
//! version saw personal data. Features computed from redacted text (its
//! length, its words) can differ; identifiers joined across calls keep
//! working, because a value always gets the same pseudonym.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::Value;

use crate::compare::{self, Answer, Compare};
use crate::labels::verdict;
use crate::recording::answer_of;
use crate::runtime::{CallInput, CallReport, Plugin, Router, Runtime};
use crate::store::{RecordingFilter, StateStore, StoredCall};
use crate::{Error, Result};

/// Which recorded calls to replay.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// Recorded at or after this time (RFC 3339).
    pub since: Option<String>,
    /// At most this many calls (the newest).
    pub limit: Option<usize>,
    /// Calls in flight at once (0: twice the cores, at most the
    /// candidate's `max-concurrency`).
    pub concurrency: usize,
}

/// How often the candidate and the recorded versions agreed with humans.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HumanRates {
    /// Replayed calls of labelled events whose label says what the answer
    /// should have been.
    pub compared: u64,
    pub candidate_agreed: u64,
    pub recorded_agreed: u64,
    pub candidate_rate: Option<f64>,
    pub recorded_rate: Option<f64>,
    /// Count per `"<candidate class> -> <label>"`.
    pub confusion: BTreeMap<String, u64>,
}

/// Latency and fuel of a set of calls.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Cost {
    pub p50_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
    pub mean_fuel: u64,
    /// Count per outcome name.
    pub outcomes: BTreeMap<String, u64>,
}

/// One replayed call whose class changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub trace_id: String,
    pub event_id: String,
    pub recorded: String,
    pub candidate: String,
}

/// What a replay found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplayReport {
    pub plugin: String,
    pub candidate_version: String,
    pub candidate_digest: String,
    /// Recorded calls by the version that answered them.
    pub recorded_versions: BTreeMap<String, u64>,
    /// Calls replayed.
    pub replayed: u64,
    /// Recorded calls without a usable input (skipped).
    pub skipped: u64,
    /// Answers whose class differs from the recorded one.
    pub changed: u64,
    /// Answers that agree with the recorded output.
    pub agreed: u64,
    pub agreement: Option<f64>,
    /// Count per `"<recorded class> -> <candidate class>"`.
    pub confusion: BTreeMap<String, u64>,
    pub humans: HumanRates,
    pub candidate: Cost,
    pub recorded: Cost,
    /// Calls replayed per second of wall-clock time.
    pub calls_per_second: f64,
    /// The first changes, in recorded order (at most [`CHANGES_KEPT`]).
    pub changes: Vec<Change>,
}

/// Changes listed in a report.
pub const CHANGES_KEPT: usize = 20;

/// Replay `plugin`'s recorded calls against `candidate`. Its nested model
/// calls resolve through `router` (a registry's live versions) or among
/// `runtime`'s registered plugins.
pub async fn replay(
    runtime: &Runtime,
    router: Option<Arc<dyn Router>>,
    store: &dyn StateStore,
    plugin: &str,
    candidate: &Arc<Plugin>,
    options: &ReplayOptions,
) -> Result<ReplayReport> {
    if candidate.name() != plugin {
        return Err(Error::Refused(format!(
            "the candidate is plugin `{}`, not `{plugin}`; give a version or manifest of `{plugin}`",
            candidate.name()
        )));
    }
    let recorded = store.recorded_calls(&RecordingFilter {
        plugin: Some(plugin),
        since: options.since.as_deref(),
        limit: options.limit,
        ..Default::default()
    })?;
    if recorded.is_empty() {
        return Err(Error::NotFound(format!(
            "no recorded calls of `{plugin}`{}; record traffic with a [recording] table in the app file (e.g. sample = {{ \"*\" = 0.1 }}) and run it through `evos up` or `evos run --record`",
            options
                .since
                .as_deref()
                .map(|s| format!(" since {s}"))
                .unwrap_or_default()
        )));
    }
    let kind = candidate.kind().to_string();
    if let Some(other) = recorded.iter().find(|c| c.call.kind != kind) {
        return Err(Error::Refused(format!(
            "recorded calls of `{plugin}` are {} calls, the candidate is a {kind}",
            other.call.kind
        )));
    }
    let compare = candidate.manifest().rollout.compare.clone();
    let labels = labels_by_event(store)?;

    let inputs: Vec<Option<CallInput>> = recorded
        .iter()
        .map(|c| CallInput::from_json(candidate.kind(), c.call.input.clone()).ok())
        .collect();
    let started = Instant::now();
    let answers = run_all(runtime, router, candidate, inputs, options.concurrency).await;
    let elapsed = started.elapsed().as_secs_f64();

    let mut report = ReplayReport {
        plugin: plugin.to_string(),
        candidate_version: candidate.version().to_string(),
        candidate_digest: candidate.digest().to_string(),
        recorded_versions: BTreeMap::new(),
        replayed: 0,
        skipped: 0,
        changed: 0,
        agreed: 0,
        agreement: None,
        confusion: BTreeMap::new(),
        humans: HumanRates::default(),
        candidate: Cost::default(),
        recorded: Cost::default(),
        calls_per_second: 0.0,
        changes: Vec::new(),
    };
    let mut costs = (Costs::default(), Costs::default());
    for (stored, answer) in recorded.iter().zip(answers) {
        let Some(new) = answer else {
            report.skipped += 1;
            continue;
        };
        report.replayed += 1;
        *report
            .recorded_versions
            .entry(stored.call.version.clone())
            .or_default() += 1;
        let old = answer_of(&stored.call);
        costs
            .0
            .add(new.outcome.name(), new.duration_us, new.fuel_consumed);
        costs.1.add(
            &stored.call.outcome,
            stored.call.duration_us,
            stored.call.fuel,
        );
        let new = Answer::from(&new);
        if compare::agree(&old, &new, compare.as_ref()) {
            report.agreed += 1;
        }
        let class = |a: &Answer| {
            compare::class_of(a, compare.as_ref()).unwrap_or_else(|| "unclassified".into())
        };
        let (was, now) = (class(&old), class(&new));
        *report
            .confusion
            .entry(format!("{was} -> {now}"))
            .or_default() += 1;
        if was != now {
            report.changed += 1;
            if report.changes.len() < CHANGES_KEPT {
                report.changes.push(Change {
                    trace_id: stored.trace_id.clone(),
                    event_id: stored.event_id.clone(),
                    recorded: was.clone(),
                    candidate: now.clone(),
                });
            }
        }
        judge_by_humans(
            &mut report.humans,
            &labels,
            stored,
            &kind,
            (&was, &now),
            compare.as_ref(),
        );
    }
    report.agreement = (report.replayed > 0).then(|| report.agreed as f64 / report.replayed as f64);
    let h = &mut report.humans;
    h.candidate_rate = (h.compared > 0).then(|| h.candidate_agreed as f64 / h.compared as f64);
    h.recorded_rate = (h.compared > 0).then(|| h.recorded_agreed as f64 / h.compared as f64);
    report.candidate = costs.0.finish();
    report.recorded = costs.1.finish();
    report.calls_per_second = if elapsed > 0.0 {
        report.replayed as f64 / elapsed
    } else {
        0.0
    };
    Ok(report)
}

/// The newest label of each labelled action of each event, by event id:
/// (action index, action kind, label).
type LabelsByEvent = HashMap<String, Vec<(usize, String, String)>>;

fn labels_by_event(store: &dyn StateStore) -> Result<LabelsByEvent> {
    let mut out = LabelsByEvent::new();
    for (decision, label) in store.labeled(None)? {
        out.entry(decision.event_id).or_default().push((
            decision.action_index,
            decision.action_kind,
            label.label,
        ));
    }
    Ok(out)
}

fn judge_by_humans(
    h: &mut HumanRates,
    labels: &LabelsByEvent,
    stored: &StoredCall,
    kind: &str,
    (was, now): (&str, &str),
    compare: Option<&Compare>,
) {
    let Some(labelled) = labels.get(&stored.event_id) else {
        return;
    };
    // A policy's call concerns one action; an agent's and its model's
    // concern every action of the event.
    for (index, action_kind, label) in labelled {
        if stored.call.action_index.is_some_and(|i| i != *index) {
            continue;
        }
        let (Some(candidate), Some(recorded)) = (
            verdict(kind, now, action_kind, label, compare),
            verdict(kind, was, action_kind, label, compare),
        ) else {
            continue;
        };
        h.compared += 1;
        h.candidate_agreed += u64::from(candidate);
        h.recorded_agreed += u64::from(recorded);
        *h.confusion.entry(format!("{now} -> {label}")).or_default() += 1;
    }
}

#[derive(Default)]
struct Costs {
    latency: Option<Histogram<u64>>,
    fuel: u64,
    calls: u64,
    outcomes: BTreeMap<String, u64>,
}

impl Costs {
    fn add(&mut self, outcome: &str, duration_us: u64, fuel: u64) {
        if self.latency.is_none() {
            self.latency = Histogram::new_with_bounds(1, 600_000_000, 3).ok();
        }
        if let Some(h) = &mut self.latency {
            let _ = h.record(duration_us.clamp(1, 600_000_000));
        }
        self.fuel = self.fuel.saturating_add(fuel);
        self.calls += 1;
        *self.outcomes.entry(outcome.to_string()).or_default() += 1;
    }

    fn finish(self) -> Cost {
        let q = |p: f64| self.latency.as_ref().map_or(0, |h| h.value_at_quantile(p));
        Cost {
            p50_us: q(0.5),
            p95_us: q(0.95),
            p99_us: q(0.99),
            mean_fuel: self.fuel.checked_div(self.calls).unwrap_or(0),
            outcomes: self.outcomes,
        }
    }
}

/// Call `candidate` as a shadow with each input (`None`: skipped), a
/// bounded number at once; the reports in input order.
async fn run_all(
    runtime: &Runtime,
    router: Option<Arc<dyn Router>>,
    candidate: &Arc<Plugin>,
    inputs: Vec<Option<CallInput>>,
    concurrency: usize,
) -> Vec<Option<CallReport>> {
    let limit = candidate.manifest().limits.max_concurrency.0 as usize;
    let width = match concurrency {
        0 => std::thread::available_parallelism()
            .map_or(2, |n| n.get() * 2)
            .min(limit.max(1)),
        n => n,
    };
    futures_util::stream::iter(inputs.into_iter().map(|input| {
        let (runtime, router, candidate) = (runtime.clone(), router.clone(), candidate.clone());
        async move {
            let input = input?;
            runtime.call_shadow(&candidate, input, router).await.ok()
        }
    }))
    .buffered(width)
    .collect()
    .await
}

/// One input's answer in the batch mode.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rescored {
    /// The input's line number (from 1).
    pub line: usize,
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub output: Value,
    /// The answer's class (by the candidate's `[rollout.compare]`), if it
    /// has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    pub fuel: u64,
    pub duration_us: u64,
}

/// Batch mode: call `candidate` (as a shadow) with each JSON line of
/// `text`, an input in the shape `evos invoke` reads. Blank lines are
/// skipped; a line that is not a valid input stops the batch before any
/// call, naming the line.
pub async fn rescore(
    runtime: &Runtime,
    router: Option<Arc<dyn Router>>,
    candidate: &Arc<Plugin>,
    text: &str,
    concurrency: usize,
) -> Result<Vec<Rescored>> {
    let mut inputs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let input = CallInput::from_json_slice(candidate.kind(), line.as_bytes()).map_err(|e| {
            Error::Input {
                plugin: candidate.name().to_string(),
                kind: candidate.kind().to_string(),
                message: format!("line {}: {e}", i + 1),
            }
        })?;
        inputs.push((i + 1, input));
    }
    let lines: Vec<usize> = inputs.iter().map(|(l, _)| *l).collect();
    let reports = run_all(
        runtime,
        router,
        candidate,
        inputs.into_iter().map(|(_, input)| Some(input)).collect(),
        concurrency,
    )
    .await;
    let compare = candidate.manifest().rollout.compare.clone();
    Ok(lines
        .into_iter()
        .zip(reports)
        .map(|(line, report)| match report {
            Some(r) => Rescored {
                line,
                outcome: r.outcome.name().to_string(),
                error: (!r.outcome.is_ok()).then(|| r.outcome.summary()),
                output: r
                    .output
                    .as_ref()
                    .and_then(|o| serde_json::to_value(o).ok())
                    .unwrap_or(Value::Null),
                class: compare::class_of(&Answer::from(&r), compare.as_ref()),
                fuel: r.fuel_consumed,
                duration_us: r.duration_us,
            },
            None => Rescored {
                line,
                outcome: "refused".into(),
                error: Some("the input does not fit the plugin".into()),
                output: Value::Null,
                class: None,
                fuel: 0,
                duration_us: 0,
            },
        })
        .collect())
}
