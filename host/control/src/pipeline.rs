//! The pipeline: connector → agents → policies → action.
//!
//! One run takes raw input through a connector's `ingest`, hands each event
//! to the agents subscribed to its kind, puts every proposed action before
//! every policy that guards its kind, and decides: all allow → the executing
//! connector's `execute` (when execution is enabled); any deny → denied with
//! the reasons; otherwise any escalate → escalated for a human. Every step
//! keeps its call summary (plugin, version, digest, outcome, fuel, time), and
//! everything in one event's path shares its trace id.

use futures_util::StreamExt;
use serde::Serialize;

use std::sync::Arc;

use serde_json::json;

use crate::app::App;
use crate::audit::NewEntry;
use crate::breaker::Breakers;
use crate::manifest::Kind;
use crate::recording::{Recorder, Tape};
use crate::review::{Review, ReviewQueue};
use crate::runtime::Outcome;
use crate::runtime::{CallInput, CallOutput, CallReport, Caller};
use crate::store::{DecisionRecord, Processed, StateStore};
use crate::types::GuestError;
use crate::types::{Action, Decision, Event};
use crate::{Error, Result};

/// A call as it appears in a pipeline report.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub plugin: Arc<str>,
    pub version: Arc<str>,
    pub digest: Arc<str>,
    pub outcome: String,
    pub fuel_consumed: u64,
    pub duration_us: u64,
    /// When the call started (microseconds since the Unix epoch); for trace
    /// export, not kept in reports.
    #[serde(skip)]
    pub started_us: u64,
    /// The span id an execute step sent downstream as the parent in its
    /// W3C `traceparent`, so an exported trace continues there.
    #[serde(skip)]
    pub span_id: Option<String>,
    /// Nested calls (model adapters) made by this step.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nested: Vec<Step>,
    /// A model adapter's answer (its `output` and the model it names), so
    /// the record of a decision shows the score it rested on. Answers
    /// larger than [`MODEL_OUTPUT_KEPT`] bytes are kept as their digest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_output: Option<serde_json::Value>,
}

/// Largest model answer (as JSON text) kept whole in a step.
pub const MODEL_OUTPUT_KEPT: usize = 4096;
/// Longest agent rationale kept whole in an audit entry.
pub const RATIONALE_KEPT: usize = 4096;

fn model_output(r: &CallReport) -> Option<serde_json::Value> {
    let Some(crate::runtime::CallOutput::Model(resp)) = &r.output else {
        return None;
    };
    let text = resp.output.to_string();
    Some(if text.len() <= MODEL_OUTPUT_KEPT {
        json!({"model": resp.model, "output": resp.output})
    } else {
        json!({
            "model": resp.model,
            "output_sha256": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes())),
            "output_bytes": text.len(),
        })
    })
}

impl From<&CallReport> for Step {
    fn from(r: &CallReport) -> Self {
        Step {
            plugin: r.plugin.clone(),
            version: r.version.clone(),
            digest: r.digest.clone(),
            outcome: r.outcome.summary(),
            fuel_consumed: r.fuel_consumed,
            duration_us: r.duration_us,
            started_us: r.started_us,
            span_id: None,
            nested: r.nested.iter().map(Step::from).collect(),
            model_output: model_output(r),
        }
    }
}

/// One policy's verdict on one action.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyVerdict {
    pub policy: String,
    #[serde(flatten)]
    pub decision: Decision,
    pub step: Step,
}

/// What became of an action.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Disposition {
    /// Every policy allowed it and the connector carried it out.
    Executed { connector: String, receipt: String },
    /// Every policy allowed it; execution was not requested.
    Allowed,
    /// A policy denied it (or failed, which counts as a denial).
    Denied { reasons: Vec<String> },
    /// A policy escalated it: it waits for a human (in the review queue,
    /// when the run has one).
    Escalated {
        reasons: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        review_id: Option<i64>,
    },
    /// Allowed, but carrying it out failed.
    Failed { error: String },
}

impl Disposition {
    /// Its name, as reports and metrics spell it.
    pub fn name(&self) -> &'static str {
        match self {
            Disposition::Executed { .. } => "executed",
            Disposition::Allowed => "allowed",
            Disposition::Denied { .. } => "denied",
            Disposition::Escalated { .. } => "escalated",
            Disposition::Failed { .. } => "failed",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ActionReport {
    pub action: Action,
    pub proposed_by: String,
    pub policies: Vec<PolicyVerdict>,
    #[serde(flatten)]
    pub disposition: Disposition,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execute_step: Option<Step>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventReport {
    pub event: Event,
    pub agents: Vec<Step>,
    pub actions: Vec<ActionReport>,
    /// The event source had processed this event already (a redelivered
    /// message): it was skipped.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct PipelineReport {
    pub connector: String,
    pub ingest: Step,
    /// Set when ingest did not produce events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingest_error: Option<String>,
    pub events: Vec<EventReport>,
}

impl PipelineReport {
    /// Every action across all events.
    pub fn actions(&self) -> impl Iterator<Item = &ActionReport> {
        self.events.iter().flat_map(|e| e.actions.iter())
    }
}

/// Options of one pipeline run.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Carry out allowed actions through the executing connector.
    pub execute: bool,
    /// Queue escalated actions for human review.
    pub reviews: Option<ReviewQueue>,
    /// Record each event's path (every step with plugin, version and
    /// digest, and what became of each action) in the audit log.
    pub audit: Option<Arc<dyn StateStore>>,
    /// Trace id for events that carry none (e.g. from a W3C `traceparent`).
    pub trace_id: Option<String>,
    /// Circuit breakers and retries for executing connectors.
    pub breakers: Option<Arc<Breakers>>,
    /// Events of one ingest handled at once (0: [`DEFAULT_CONCURRENCY`]).
    /// Reports keep the connector's event order either way.
    pub concurrency: usize,
    /// Record sampled events' calls, redacted, with their audit entry
    /// ([`crate::recording`]; needs `audit`).
    pub recorder: Option<Arc<Recorder>>,
    /// The event source the body came from (e.g. `nats:CLAIMS/evos`):
    /// an event it already processed is skipped, and each event is marked
    /// processed with its audit entry (needs `audit`), so a redelivered
    /// message never repeats an event's effects.
    pub source: Option<Arc<str>>,
}

/// Events of one ingest in flight at once by default: enough to overlap
/// plugins' waits (HTTP, durable writes) and share group commits, while an
/// event holds at most two pooled instances (an agent and its model), so one
/// ingest takes at most half of the default pool of 128.
pub const DEFAULT_CONCURRENCY: usize = 32;

/// Drive `body` through the app's pipeline, starting at `connector`. The
/// app's plugins must be reachable through `caller`: a [`evos_runtime::Runtime`]
/// they were loaded into (see [`App::load_into`]) or a
/// [`crate::registry::Registry`] they are deployed in.
pub async fn run(
    caller: Arc<dyn Caller>,
    app: Arc<App>,
    connector: &str,
    body: Vec<u8>,
    content_type: &str,
    options: &RunOptions,
) -> Result<PipelineReport> {
    expect_kind(caller.as_ref(), connector, Kind::Connector)?;
    let ingest = traced(
        caller.as_ref(),
        "ingest",
        connector,
        options.trace_id.as_deref().unwrap_or(""),
        CallInput::Ingest {
            body,
            content_type: content_type.to_string(),
        },
    )
    .await?;
    let events = match (&ingest.outcome.is_ok(), &ingest.output) {
        (true, Some(CallOutput::Events(events))) => events.clone(),
        _ => {
            return Ok(PipelineReport {
                connector: connector.to_string(),
                ingest: Step::from(&ingest),
                ingest_error: Some(ingest.outcome.summary()),
                events: Vec::new(),
            });
        }
    };

    // Events run as their own tasks (so on every core), a bounded number at
    // once, each audited as soon as it is decided; concurrent audit writes
    // share group commits. Reports keep the connector's order.
    let ingest_step = Arc::new(Step::from(&ingest));
    let concurrency = match options.concurrency {
        0 => DEFAULT_CONCURRENCY,
        n => n,
    };
    let connector_name: Arc<str> = Arc::from(connector);
    let handled = futures_util::stream::iter(events.into_iter().map(|mut event| {
        if event.trace_id.is_empty() {
            event.trace_id = options.trace_id.clone().unwrap_or_else(new_trace_id);
        }
        let (caller, app, options) = (caller.clone(), app.clone(), options.clone());
        let (ingest_step, connector) = (ingest_step.clone(), connector_name.clone());
        let task = tokio::spawn(async move {
            let recorder = options
                .recorder
                .as_ref()
                .filter(|_| options.audit.is_some());
            let processed = match (&options.source, &options.audit) {
                (Some(source), Some(store)) => {
                    let (store, id, from) = (store.clone(), event.id.clone(), source.clone());
                    let seen = tokio::task::spawn_blocking(move || store.processed(&from, &id))
                        .await
                        .map_err(|e| Error::internal("looking up a processed event", e))??;
                    if seen {
                        return Ok(EventReport {
                            event,
                            agents: Vec::new(),
                            actions: Vec::new(),
                            duplicate: true,
                        });
                    }
                    Some(Processed {
                        source: source.to_string(),
                        event_id: event.id.clone(),
                    })
                }
                _ => None,
            };
            let tape = recorder.and_then(|r| r.tape(&connector, &event.id));
            let report =
                handle_event(caller.as_ref(), &app, event, &options, tape.as_ref()).await?;
            if let Some(store) = &options.audit {
                let recording = match (recorder, tape) {
                    (Some(r), Some(tape)) => r.finish(tape, &connector, &report),
                    _ => None,
                };
                audit_event(
                    store,
                    &connector,
                    &ingest_step,
                    &report,
                    recording,
                    processed,
                )
                .await?;
            }
            Ok::<_, Error>(report)
        });
        async move {
            task.await
                .map_err(|e| Error::internal("handling an event", e))?
        }
    }))
    .buffered(concurrency)
    .collect::<Vec<_>>()
    .await;
    let reports = handled.into_iter().collect::<Result<Vec<_>>>()?;
    Ok(PipelineReport {
        connector: connector.to_string(),
        ingest: Step::from(&ingest),
        ingest_error: None,
        events: reports,
    })
}

async fn handle_event(
    caller: &dyn Caller,
    app: &App,
    event: Event,
    options: &RunOptions,
    tape: Option<&Tape>,
) -> Result<EventReport> {
    let mut agents = Vec::new();
    let mut actions = Vec::new();
    for entry in app
        .plugins
        .iter()
        .filter(|p| p.subscribes.iter().any(|k| k == &event.kind))
    {
        expect_kind(caller, &entry.name, Kind::Agent)?;
        let mut report = traced(
            caller,
            "agent",
            &entry.name,
            &event.trace_id,
            CallInput::Handle(event.clone()),
        )
        .await?;
        let step = Step::from(&report);
        // The model answers its actions rest on.
        let models: Vec<ModelVersion> = step
            .nested
            .iter()
            .map(|m| (m.plugin.clone(), m.version.clone()))
            .collect();
        agents.push(step);
        if let Some(tape) = tape {
            tape.keep("agent", None, &mut report);
        }
        if let (true, Some(CallOutput::Actions(proposed))) =
            (report.outcome.is_ok(), &report.output)
        {
            for action in proposed {
                let index = actions.len();
                actions.push(
                    decide(
                        caller,
                        app,
                        &event,
                        (index, action.clone()),
                        (&entry.name, &models),
                        options,
                        tape,
                    )
                    .await?,
                );
            }
        }
    }
    Ok(EventReport {
        event,
        agents,
        actions,
        duplicate: false,
    })
}

/// A model adapter (plugin, version) whose answer an agent's actions rest
/// on.
type ModelVersion = (Arc<str>, Arc<str>);

async fn decide(
    caller: &dyn Caller,
    app: &App,
    event: &Event,
    (index, action): (usize, Action),
    (proposed_by, models): (&str, &[ModelVersion]),
    options: &RunOptions,
    tape: Option<&Tape>,
) -> Result<ActionReport> {
    let mut policies = Vec::new();
    let mut denials = Vec::new();
    let mut escalations = Vec::new();
    let guards = app
        .plugins
        .iter()
        .filter(|p| p.guards.iter().any(|k| k == "*" || *k == action.kind));
    for entry in guards {
        expect_kind(caller, &entry.name, Kind::Policy)?;
        let input = CallInput::Evaluate {
            action: action.clone(),
            event: event.clone(),
        };
        let mut report = traced(caller, "policy", &entry.name, &event.trace_id, input).await?;
        // A policy that fails to answer denies: fail closed.
        let decision = match (&report.outcome.is_ok(), &report.output) {
            (true, Some(CallOutput::Decision(d))) => d.clone(),
            _ => Decision::Deny(format!(
                "policy `{}` failed: {}",
                entry.name,
                report.outcome.summary()
            )),
        };
        match &decision {
            Decision::Allow => {}
            Decision::Deny(r) => denials.push(format!("{}: {r}", entry.name)),
            Decision::Escalate(r) => escalations.push(format!("{}: {r}", entry.name)),
        }
        policies.push(PolicyVerdict {
            policy: entry.name.clone(),
            decision,
            step: Step::from(&report),
        });
        if let Some(tape) = tape {
            tape.keep("policy", Some(index), &mut report);
        }
    }

    // A share of what a drifting model decided goes to people, who label
    // it: the labels a retrained version is trained and judged on.
    if denials.is_empty()
        && escalations.is_empty()
        && let Some(reason) = models
            .iter()
            .find_map(|(plugin, version)| caller.drift_review(plugin, version, &event.id))
    {
        escalations.push(format!("drift: {reason}"));
    }

    let mut execute_step = None;
    let disposition = if !denials.is_empty() {
        Disposition::Denied { reasons: denials }
    } else if !escalations.is_empty() {
        let review_id = match &options.reviews {
            Some(queue) => Some(queue.enqueue(
                (index, &action),
                event,
                &escalations,
                proposed_by,
                executor(app, &action.kind),
            )?),
            None => None,
        };
        Disposition::Escalated {
            reasons: escalations,
            review_id,
        }
    } else if !options.execute {
        Disposition::Allowed
    } else {
        match executor(app, &action.kind) {
            None => Disposition::Failed {
                error: format!(
                    "no connector in {} executes `{}`",
                    app.path.display(),
                    action.kind
                ),
            },
            Some(name) => {
                expect_kind(caller, name, Kind::Connector)?;
                // Fail closed: an audited pipeline carries out nothing it
                // could not record first (a full or broken audit volume
                // stops actions instead of letting them pass unrecorded).
                if let Some(store) = &options.audit {
                    let intent = store
                        .audit_async(NewEntry {
                            actor: name,
                            action: "execute",
                            subject: &format!("event/{}", event.id),
                            digest: None,
                            detail: json!({
                                "trace_id": event.trace_id,
                                "kind": action.kind,
                                "proposed_by": proposed_by,
                            }),
                        })
                        .await;
                    if let Err(e) = intent {
                        return Ok(ActionReport {
                            action,
                            proposed_by: proposed_by.to_string(),
                            policies,
                            disposition: Disposition::Failed {
                                error: format!(
                                    "not carried out: the audit log cannot record it ({e})"
                                ),
                            },
                            execute_step: None,
                        });
                    }
                }
                let (mut report, result, span) = execute(
                    caller,
                    name,
                    &action,
                    &event.trace_id,
                    &idempotency_key(&event.id, index),
                    options.breakers.as_deref(),
                )
                .await?;
                execute_step = report.as_ref().map(|r| Step {
                    span_id: Some(span),
                    ..Step::from(r)
                });
                if let (Some(tape), Some(report)) = (tape, report.as_mut()) {
                    tape.keep("execute", Some(index), report);
                }
                match result {
                    Ok(receipt) => Disposition::Executed {
                        connector: name.to_string(),
                        receipt,
                    },
                    Err(error) => Disposition::Failed { error },
                }
            }
        }
    };
    Ok(ActionReport {
        action,
        proposed_by: proposed_by.to_string(),
        policies,
        disposition,
        execute_step,
    })
}

/// One audit entry per event: its trace id and every step's plugin,
/// version, digest and outcome, and what became of each action.
async fn audit_event(
    store: &Arc<dyn StateStore>,
    connector: &str,
    ingest: &Step,
    report: &EventReport,
    recording: Option<crate::store::NewRecording>,
    processed: Option<Processed>,
) -> Result<()> {
    let mut steps = vec![serde_json::to_value(ingest).unwrap_or_default()];
    steps.extend(
        report
            .agents
            .iter()
            .map(|s| serde_json::to_value(s).unwrap_or_default()),
    );
    let actions: Vec<serde_json::Value> = report
        .actions
        .iter()
        .map(|a| {
            json!({
                "kind": a.action.kind,
                "rationale": crate::text::bounded(&a.action.rationale, RATIONALE_KEPT),
                "payload_sha256": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(a.action.payload.text().as_bytes())),
                "proposed_by": a.proposed_by,
                "policies": a.policies.iter().map(|p| json!({"policy": p.policy, "decision": p.decision, "version": p.step.version, "digest": p.step.digest})).collect::<Vec<_>>(),
                "disposition": a.disposition,
                "execute": a.execute_step,
            })
        })
        .collect();
    let mut detail = json!({"trace_id": report.event.trace_id, "event_kind": report.event.kind, "steps": steps, "actions": actions});
    if let Some(r) = &recording {
        detail["recorded"] = json!(r.reason);
    }
    store
        .record_event(
            NewEntry {
                actor: connector,
                action: "pipeline",
                subject: &format!("event/{}", report.event.id),
                digest: None,
                detail,
            },
            decisions(report),
            recording,
            processed,
        )
        .await
}

/// Which versions produced each action of an event: the proposing agent
/// (its class is the action kind), the model answers it rested on, each
/// policy's decision. Feedback on the action is judged against these.
fn decisions(report: &EventReport) -> Vec<DecisionRecord> {
    let at = crate::store::now();
    let step = |s: &Step, kind: &str| json!({"plugin": s.plugin, "kind": kind, "version": s.version, "digest": s.digest});
    report
        .actions
        .iter()
        .enumerate()
        .map(|(index, a)| {
            let mut steps = Vec::new();
            if let Some(agent) = report.agents.iter().find(|s| *s.plugin == *a.proposed_by) {
                let mut s = step(agent, "agent");
                s["class"] = json!(a.action.kind);
                steps.push(s);
                for m in &agent.nested {
                    let mut s = step(m, "model-adapter");
                    s["outcome"] = json!(m.outcome);
                    s["output"] = m
                        .model_output
                        .as_ref()
                        .and_then(|o| o.get("output"))
                        .cloned()
                        .unwrap_or(serde_json::Value::Null);
                    steps.push(s);
                }
            }
            for p in &a.policies {
                let mut s = step(&p.step, "policy");
                s["class"] = json!(crate::compare::decision_class(&p.decision));
                steps.push(s);
            }
            DecisionRecord {
                event_id: report.event.id.clone(),
                action_index: index,
                trace_id: report.event.trace_id.clone(),
                action_kind: a.action.kind.clone(),
                proposed_by: a.proposed_by.clone(),
                steps: serde_json::Value::Array(steps),
                at: at.clone(),
            }
        })
        .collect()
}

/// The connector the app binds to carry out `kind`.
fn executor<'a>(app: &'a App, kind: &str) -> Option<&'a str> {
    app.plugins
        .iter()
        .find(|p| p.executes.iter().any(|k| k == kind))
        .map(|p| p.name.as_str())
}

/// Carry out `action` through `connector`: with `breakers`, through the
/// connector's circuit breaker and with retries (exponential backoff, full
/// jitter) for failures that may pass (upstream errors, timeouts). Returns
/// the last attempt's report (none when the breaker refused) and the receipt
/// or the error.
/// The headers every outgoing request of an `execute` call carries: a W3C
/// `traceparent` continuing the event's trace (a fresh span id) and an
/// `idempotency-key` naming the action: `<event id>/<action index>`.
fn downstream_headers(
    trace_id: &str,
    span: &str,
    idempotency_key: &str,
) -> Vec<(http::HeaderName, http::HeaderValue)> {
    let mut headers = Vec::new();
    if let Ok(v) = http::HeaderValue::from_str(&format!("00-{trace_id}-{span}-01")) {
        headers.push((http::HeaderName::from_static("traceparent"), v));
    }
    if let Ok(v) = http::HeaderValue::from_str(idempotency_key) {
        headers.push((http::HeaderName::from_static("idempotency-key"), v));
    }
    headers
}

/// The idempotency key of the action at `index` of `event_id`'s actions,
/// as a header value: the event id percent-encodes anything outside
/// visible ASCII.
pub fn idempotency_key(event_id: &str, index: usize) -> String {
    let mut key = String::with_capacity(event_id.len() + 4);
    for b in event_id.bytes() {
        if b.is_ascii_graphic() && b != b'%' {
            key.push(char::from(b));
        } else {
            key.push_str(&format!("%{b:02X}"));
        }
    }
    format!("{key}/{index}")
}

async fn execute(
    caller: &dyn Caller,
    connector: &str,
    action: &Action,
    trace_id: &str,
    idempotency_key: &str,
    breakers: Option<&Breakers>,
) -> Result<(
    Option<CallReport>,
    std::result::Result<String, String>,
    String,
)> {
    // The span the downstream sees as its parent, the same for every
    // attempt.
    let span = new_trace_id()[..16].to_string();
    if let Some(b) = breakers
        && let Err(wait) = b.allow(connector)
    {
        return Ok((
            None,
            Err(format!(
                "circuit open for `{connector}`: its downstream is failing; next try in {}ms",
                wait.as_millis()
            )),
            span,
        ));
    }
    let retries = breakers.map_or(0, |b| b.config().retries);
    let mut attempt = 0;
    loop {
        let input = CallInput::Execute(action.clone());
        // The downstream sees the trace and can drop repeats (retries, a
        // redelivered event): the key is the same for every attempt.
        let headers = downstream_headers(trace_id, &span, idempotency_key);
        let report = crate::capability::http::with_outgoing_headers(
            headers,
            traced(caller, "execute", connector, trace_id, input),
        )
        .await?;
        let result = receipt(&report);
        let retryable = matches!(
            report.outcome,
            Outcome::GuestError {
                error: GuestError::Upstream(_)
            } | Outcome::Timeout
        );
        if result.is_ok() || !retryable || attempt >= retries {
            if let Some(b) = breakers {
                if result.is_ok() {
                    b.success(connector);
                } else {
                    b.failure(connector);
                }
            }
            return Ok((Some(report), result, span));
        }
        attempt += 1;
        if let Some(b) = breakers {
            tokio::time::sleep(b.backoff(attempt)).await;
        }
    }
}

/// One pipeline step as a tracing span carrying the plugin, the version and
/// digest that answered, the outcome and the trace id.
async fn traced(
    caller: &dyn Caller,
    step: &'static str,
    plugin: &str,
    trace_id: &str,
    input: CallInput,
) -> Result<CallReport> {
    use tracing::Instrument;
    let span = tracing::info_span!(target: "evos::pipeline",
        "step",
        step,
        plugin,
        trace_id,
        version = tracing::field::Empty,
        digest = tracing::field::Empty,
        outcome = tracing::field::Empty,
        duration_us = tracing::field::Empty,
    );
    let report = caller.call(plugin, input).instrument(span.clone()).await?;
    span.record("version", &*report.version);
    span.record("digest", &*report.digest);
    span.record("outcome", report.outcome.name());
    span.record("duration_us", report.duration_us);
    span.in_scope(|| tracing::debug!(target: "evos::pipeline", "step finished"));
    Ok(report)
}

fn receipt(report: &CallReport) -> std::result::Result<String, String> {
    match (&report.outcome, &report.output) {
        (Outcome::Ok, Some(CallOutput::Receipt(r))) => Ok(r.clone()),
        (outcome, _) => Err(outcome.summary()),
    }
}

/// Carry out an approved review through its connector and record the result.
pub async fn carry_out(
    caller: &dyn Caller,
    queue: &ReviewQueue,
    review: &Review,
    breakers: Option<&Breakers>,
) -> Result<Review> {
    Ok(carry_out_traced(caller, queue, review, breakers).await?.0)
}

/// [`carry_out`], also returning the execute step (with the span id its
/// downstream call carried), for trace export.
pub async fn carry_out_traced(
    caller: &dyn Caller,
    queue: &ReviewQueue,
    review: &Review,
    breakers: Option<&Breakers>,
) -> Result<(Review, Option<Step>)> {
    let Some(connector) = &review.connector else {
        let why = format!("no connector executes `{}`", review.action.kind);
        queue.record_result(review.id, false, &why, serde_json::Value::Null)?;
        let review = queue.get(review.id)?.ok_or(Error::Refused(why))?;
        return Ok((review, None));
    };
    let (report, result, span) = execute(
        caller,
        connector,
        &review.action,
        &review.trace_id,
        &idempotency_key(&review.event.id, review.action_index),
        breakers,
    )
    .await?;
    let step = report.as_ref().map(|r| Step {
        span_id: Some(span),
        ..Step::from(r)
    });
    let kept = step
        .as_ref()
        .map(|s| serde_json::to_value(s).unwrap_or_default())
        .unwrap_or_default();
    match result {
        Ok(receipt) => queue.record_result(review.id, true, &receipt, kept)?,
        Err(error) => queue.record_result(review.id, false, &error, kept)?,
    }
    let review = queue
        .get(review.id)?
        .ok_or_else(|| Error::NotFound(format!("no review {}", review.id)))?;
    Ok((review, step))
}

fn expect_kind(caller: &dyn Caller, name: &str, kind: Kind) -> Result<()> {
    match caller.kind_of(name) {
        None => Err(Error::UnknownPlugin(name.to_string())),
        Some(k) if k != kind => Err(Error::Input {
            plugin: name.to_string(),
            kind: k.to_string(),
            message: format!("the pipeline needs a {kind} here"),
        }),
        Some(_) => Ok(()),
    }
}

/// A fresh W3C trace id: 32 lowercase hex digits, not all zero. Drawn from
/// SipHash under keys the OS seeds randomly once per process, over a
/// counter: unique and unpredictable without a system call per id.
pub fn new_trace_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static KEYS: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let keys = KEYS.get_or_init(std::collections::hash_map::RandomState::new);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let word = |i: u64| {
        let mut h = keys.build_hasher();
        h.write_u64(n);
        h.write_u64(i);
        h.finish()
    };
    let (hi, lo) = (word(0), word(1));
    let id = (u128::from(hi) << 64) | u128::from(lo);
    // All zero is invalid in W3C trace context; a 2^-128 event, but cheap.
    format!("{:032x}", id.max(1))
}
