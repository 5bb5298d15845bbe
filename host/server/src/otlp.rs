//! OpenTelemetry export (`evos up --otlp http://collector:4318`), off by
//! default: the pipeline's spans and the host's metrics over OTLP/HTTP
//! (protobuf).
//!
//! Spans are built from each pipeline report once its event is done: one
//! trace per event under the event's W3C trace id (the caller's
//! `traceparent` when it sent one, whose span becomes the parent), with a
//! span for the ingest, each agent and its model calls, each policy's
//! verdict and the execution. The execute span's id is the parent id the
//! downstream received in its `traceparent`, so a trace continues there.
//! Every span carries the plugin, its version and digest, and the outcome.
//!
//! Sending never holds up a request: spans go through a bounded queue to a
//! thread of their own (the exporter's HTTP client blocks); when the
//! collector is slow and the queue is full, spans are dropped and counted
//! (`dropped()`). Metrics are read from the host at each export interval
//! by the SDK's periodic reader, on its own thread too.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};

use crate::pipeline::{EventReport, PipelineReport, Step};
use crate::server::Host;
use crate::{Error, Result};

/// Span batches waiting for the exporter thread; past it, spans are
/// dropped.
const QUEUE: usize = 1024;
/// Most spans sent in one request.
const BATCH: usize = 512;

/// The export of one host.
pub struct Otlp {
    spans: SyncSender<Vec<SpanData>>,
    dropped: Arc<AtomicU64>,
    meters: SdkMeterProvider,
    scope: InstrumentationScope,
    _instruments: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

/// Where OTLP goes: `endpoint` is the collector's base URL
/// (`http://127.0.0.1:4318`); signals go to `/v1/traces` and `/v1/metrics`.
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    pub endpoint: String,
    /// How often metrics are read and sent.
    pub metrics_every: Duration,
}

/// Whether `config` names a collector this build can export to; checked
/// before a host opens its data directory, so a mistake changes nothing.
pub fn check(config: &OtlpConfig) -> Result<()> {
    signal_url(&config.endpoint, "traces").map(|_| ())
}

/// The collector URL for `signal`, checked.
fn signal_url(endpoint: &str, signal: &str) -> Result<String> {
    let url = url::Url::parse(endpoint).map_err(|e| {
        Error::Refused(format!(
            "--otlp {endpoint:?} is not a URL ({e}); give the collector's OTLP/HTTP address, e.g. http://127.0.0.1:4318"
        ))
    })?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(Error::Refused(format!(
            "--otlp {endpoint:?}: OTLP is exported over http or https, not {}; e.g. http://127.0.0.1:4318",
            url.scheme()
        )));
    }
    if url.scheme() == "https" {
        return Err(Error::Refused(format!(
            "--otlp {endpoint:?}: this build exports over plain http; run a local collector (http://127.0.0.1:4318) that forwards over TLS"
        )));
    }
    Ok(format!("{}/v1/{signal}", endpoint.trim_end_matches('/')))
}

impl Otlp {
    /// Start exporting `host`'s spans and metrics to `config.endpoint`.
    pub fn start(config: &OtlpConfig, host: Weak<Host>, node: &str) -> Result<Otlp> {
        let traces = signal_url(&config.endpoint, "traces")?;
        let metrics = signal_url(&config.endpoint, "metrics")?;
        let resource = Resource::builder_empty()
            .with_service_name("evos")
            .with_attributes([
                KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
                KeyValue::new("service.instance.id", node.to_string()),
            ])
            .build();
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            Error::Refused(format!("starting the OTLP {what} exporter: {e}"))
        };
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(traces)
            .with_timeout(Duration::from_secs(10))
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_headers(Default::default())
            .build()
            .map_err(|e| failed("span", &e))?;
        exporter.set_resource(&resource);
        let metric_exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_endpoint(metrics)
            .with_timeout(Duration::from_secs(10))
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .build()
            .map_err(|e| failed("metric", &e))?;
        let reader = opentelemetry_sdk::metrics::PeriodicReader::builder(metric_exporter)
            .with_interval(config.metrics_every.max(Duration::from_millis(100)))
            .build();
        let meters = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(reader)
            .build();
        let instruments = instruments(&meters, host);

        let (spans, queue) = std::sync::mpsc::sync_channel::<Vec<SpanData>>(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        std::thread::Builder::new()
            .name("evos-otlp".into())
            .spawn(move || send_spans(exporter, queue))
            .map_err(|e| failed("span", &e))?;
        Ok(Otlp {
            spans,
            dropped,
            meters,
            scope: InstrumentationScope::builder("evos")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            _instruments: instruments,
        })
    }

    /// Spans dropped because the collector did not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Queue the spans of a pipeline run. `parent` is the caller's span
    /// (from its `traceparent`), for events in the caller's trace.
    pub fn pipeline(&self, report: &PipelineReport, parent: Option<(&str, &str)>) {
        let mut spans = Vec::new();
        for event in &report.events {
            spans.extend(self.event_spans(report, event, parent));
        }
        if !spans.is_empty() {
            self.queue(spans);
        }
    }

    fn event_spans(
        &self,
        report: &PipelineReport,
        event: &EventReport,
        parent: Option<(&str, &str)>,
    ) -> Vec<SpanData> {
        let Ok(trace) = TraceId::from_hex(&event.event.trace_id) else {
            return Vec::new();
        };
        let remote_parent = parent
            .filter(|(t, _)| *t == event.event.trace_id)
            .and_then(|(_, s)| SpanId::from_hex(s).ok());
        let root = random_span_id();
        let mut b = Builder {
            trace,
            scope: &self.scope,
            spans: Vec::new(),
        };
        let start = report.ingest.started_us;
        let mut end = start + report.ingest.duration_us;
        b.step(&report.ingest, "ingest", root, SpanKind::Internal, vec![]);
        for agent in &event.agents {
            end = end.max(agent.started_us + agent.duration_us);
            b.step(agent, "agent", root, SpanKind::Internal, vec![]);
        }
        for (index, action) in event.actions.iter().enumerate() {
            let attrs = || {
                vec![
                    KeyValue::new("evos.action.index", index as i64),
                    KeyValue::new("evos.action.kind", action.action.kind.clone()),
                ]
            };
            for verdict in &action.policies {
                end = end.max(verdict.step.started_us + verdict.step.duration_us);
                let mut a = attrs();
                a.push(KeyValue::new(
                    "evos.decision",
                    evos_runtime::compare::decision_class(&verdict.decision),
                ));
                if let evos_core::types::Decision::Deny(r)
                | evos_core::types::Decision::Escalate(r) = &verdict.decision
                {
                    a.push(KeyValue::new(
                        "evos.decision.reason",
                        crate::text::bounded(r, 256).to_string(),
                    ));
                }
                b.step(&verdict.step, "policy", root, SpanKind::Internal, a);
            }
            if let Some(exec) = &action.execute_step {
                end = end.max(exec.started_us + exec.duration_us);
                b.step(exec, "execute", root, SpanKind::Client, attrs());
            }
        }
        let disposition: Vec<&str> = event.actions.iter().map(|a| a.disposition.name()).collect();
        b.push(Span {
            id: root,
            parent: remote_parent.unwrap_or(SpanId::INVALID),
            remote_parent: remote_parent.is_some(),
            kind: SpanKind::Server,
            name: format!("event {}", event.event.kind),
            start_us: start,
            end_us: end,
            attributes: vec![
                KeyValue::new("evos.event.id", event.event.id.clone()),
                KeyValue::new("evos.event.kind", event.event.kind.clone()),
                KeyValue::new("evos.connector", report.connector.clone()),
                KeyValue::new("evos.actions", disposition.join(",")),
            ],
            status: Status::Unset,
        });
        b.spans
    }

    /// Queue the spans of an approved review carried out: a `review <id>`
    /// span for the decision (from `started_us`, microseconds since the
    /// epoch) and its execute span, in the event's trace.
    pub fn carried_out(&self, review: &crate::review::Review, started_us: u64, step: &Step) {
        let Ok(trace) = TraceId::from_hex(&review.trace_id) else {
            return;
        };
        let root = random_span_id();
        let mut b = Builder {
            trace,
            scope: &self.scope,
            spans: Vec::new(),
        };
        b.step(
            step,
            "execute",
            root,
            SpanKind::Client,
            vec![
                KeyValue::new("evos.action.index", review.action_index as i64),
                KeyValue::new("evos.action.kind", review.action.kind.clone()),
            ],
        );
        b.push(Span {
            id: root,
            parent: SpanId::INVALID,
            remote_parent: false,
            kind: SpanKind::Server,
            name: format!("review {}", review.id),
            start_us: started_us,
            end_us: (step.started_us + step.duration_us).max(started_us),
            attributes: vec![
                KeyValue::new("evos.review.id", review.id),
                KeyValue::new("evos.review.status", review.status.as_str()),
                KeyValue::new("evos.event.id", review.event.id.clone()),
            ],
            status: Status::Unset,
        });
        self.queue(b.spans);
    }

    fn queue(&self, spans: Vec<SpanData>) {
        match self.spans.try_send(spans) {
            Ok(()) => {}
            Err(TrySendError::Full(s) | TrySendError::Disconnected(s)) => {
                self.dropped.fetch_add(s.len() as u64, Ordering::Relaxed);
            }
        }
    }

    /// Send what is queued and stop the metric reader (at shutdown).
    pub fn shutdown(&self) {
        let _ = self.meters.shutdown();
    }
}

/// What sets one span apart; [`Builder::push`] fills in the rest.
struct Span {
    id: SpanId,
    /// `SpanId::INVALID` for a trace's first span here.
    parent: SpanId,
    /// The parent is the caller's span (from its `traceparent`).
    remote_parent: bool,
    kind: SpanKind,
    name: String,
    /// Microseconds since the Unix epoch.
    start_us: u64,
    end_us: u64,
    attributes: Vec<KeyValue>,
    status: Status,
}

struct Builder<'a> {
    trace: TraceId,
    scope: &'a InstrumentationScope,
    spans: Vec<SpanData>,
}

impl Builder<'_> {
    fn push(&mut self, span: Span) {
        self.spans.push(SpanData {
            span_context: context(self.trace, span.id),
            parent_span_id: span.parent,
            parent_span_is_remote: span.remote_parent,
            span_kind: span.kind,
            name: Cow::Owned(span.name),
            start_time: at(span.start_us),
            end_time: at(span.end_us),
            attributes: span.attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: span.status,
            instrumentation_scope: self.scope.clone(),
        });
    }

    /// A span for `step` (and its nested model calls) under `parent`.
    fn step(
        &mut self,
        step: &Step,
        role: &str,
        parent: SpanId,
        kind: SpanKind,
        mut attributes: Vec<KeyValue>,
    ) {
        let id = step
            .span_id
            .as_deref()
            .and_then(|s| SpanId::from_hex(s).ok())
            .unwrap_or_else(random_span_id);
        attributes.extend([
            KeyValue::new("evos.step", role.to_string()),
            KeyValue::new("evos.plugin", step.plugin.to_string()),
            KeyValue::new("evos.plugin.version", step.version.to_string()),
            KeyValue::new("evos.plugin.digest", step.digest.to_string()),
            KeyValue::new("evos.outcome", step.outcome.clone()),
            KeyValue::new("evos.fuel", step.fuel_consumed as i64),
        ]);
        self.push(Span {
            id,
            parent,
            remote_parent: false,
            kind,
            name: format!("{role} {}", step.plugin),
            start_us: step.started_us,
            end_us: step.started_us + step.duration_us,
            attributes,
            status: if step.outcome == "ok" {
                Status::Ok
            } else {
                Status::error(step.outcome.clone())
            },
        });
        for nested in &step.nested {
            self.step(nested, "model", id, SpanKind::Internal, Vec::new());
        }
    }
}

fn context(trace: TraceId, span: SpanId) -> SpanContext {
    SpanContext::new(
        trace,
        span,
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    )
}

fn at(unix_us: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(unix_us)
}

fn random_span_id() -> SpanId {
    SpanId::from_hex(&crate::pipeline::new_trace_id()[..16]).unwrap_or(SpanId::INVALID)
}

/// The exporter thread: sends what is queued, up to [`BATCH`] spans a
/// request, until the host drops its end.
fn send_spans(exporter: opentelemetry_otlp::SpanExporter, queue: Receiver<Vec<SpanData>>) {
    while let Ok(mut batch) = queue.recv() {
        while batch.len() < BATCH {
            match queue.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        if let Err(e) = futures_executor::block_on(exporter.export(batch)) {
            tracing::warn!(target: "evos::otlp", "exporting spans failed: {e}");
        }
    }
    let _ = exporter.shutdown();
}

/// The host's metrics as observable instruments, read at each export.
fn instruments(
    meters: &SdkMeterProvider,
    host: Weak<Host>,
) -> Vec<Box<dyn std::any::Any + Send + Sync>> {
    use opentelemetry::metrics::MeterProvider as _;
    let meter = meters.meter("evos");
    let calls_host = host.clone();
    let calls = meter
        .u64_observable_counter("evos.plugin.calls")
        .with_description("Calls of each plugin version, by outcome")
        .with_callback(move |o| {
            let Some(host) = calls_host.upgrade() else {
                return;
            };
            for (plugin, slot, v) in versions(&host) {
                for (outcome, n) in &v.outcomes {
                    o.observe(
                        *n,
                        &[
                            KeyValue::new("evos.plugin", plugin.clone()),
                            KeyValue::new("evos.plugin.version", v.version.clone()),
                            KeyValue::new("evos.slot", slot),
                            KeyValue::new("evos.outcome", outcome.clone()),
                        ],
                    );
                }
            }
        })
        .build();
    let latency_host = host.clone();
    let latency = meter
        .u64_observable_gauge("evos.plugin.latency")
        .with_description("Call latency of each plugin version at p50, p95 and p99")
        .with_unit("us")
        .with_callback(move |o| {
            let Some(host) = latency_host.upgrade() else {
                return;
            };
            for (plugin, slot, v) in versions(&host) {
                for (q, us) in [("p50", v.p50_us), ("p95", v.p95_us), ("p99", v.p99_us)] {
                    o.observe(
                        us,
                        &[
                            KeyValue::new("evos.plugin", plugin.clone()),
                            KeyValue::new("evos.plugin.version", v.version.clone()),
                            KeyValue::new("evos.slot", slot),
                            KeyValue::new("quantile", q),
                        ],
                    );
                }
            }
        })
        .build();
    let actions_host = host.clone();
    let actions = meter
        .u64_observable_counter("evos.pipeline.actions")
        .with_description("Actions by what became of them")
        .with_callback(move |o| {
            let Some(host) = actions_host.upgrade() else {
                return;
            };
            for (disposition, n) in host.metrics.dispositions() {
                o.observe(n, &[KeyValue::new("evos.disposition", disposition)]);
            }
        })
        .build();
    let agreement_host = host.clone();
    let agreement = meter
        .f64_observable_gauge("evos.shadow.agreement")
        .with_description("Share of a shadow's answers that agree with a live version's")
        .with_callback(move |o| {
            let Some(host) = agreement_host.upgrade() else {
                return;
            };
            for p in host.registry.status(None).unwrap_or_default() {
                let Some(shadow) = &p.shadow else { continue };
                for pair in &shadow.agreement {
                    if let Some(rate) = pair.agreement_rate {
                        o.observe(
                            rate,
                            &[
                                KeyValue::new("evos.plugin", p.plugin.clone()),
                                KeyValue::new(
                                    "evos.plugin.version",
                                    shadow.version.version.clone(),
                                ),
                                KeyValue::new("evos.live.version", pair.live_version.clone()),
                            ],
                        );
                    }
                }
            }
        })
        .build();
    let drift_host = host.clone();
    let drift = meter
        .f64_observable_gauge("evos.plugin.drift")
        .with_description("Population stability index of each watched field against its reference")
        .with_callback(move |o| {
            let Some(host) = drift_host.upgrade() else {
                return;
            };
            for (plugin, slot, v) in versions(&host) {
                let Some(d) = &v.drift else { continue };
                for f in &d.fields {
                    o.observe(
                        f.psi,
                        &[
                            KeyValue::new("evos.plugin", plugin.clone()),
                            KeyValue::new("evos.plugin.version", v.version.clone()),
                            KeyValue::new("evos.slot", slot),
                            KeyValue::new("evos.field", f.field.clone()),
                        ],
                    );
                }
            }
        })
        .build();
    let breaker_host = host.clone();
    let breakers = meter
        .u64_observable_gauge("evos.breaker.state")
        .with_description("Circuit breaker per connector: 0 closed, 1 half-open, 2 open")
        .with_callback(move |o| {
            let Some(host) = breaker_host.upgrade() else {
                return;
            };
            for (connector, state) in host.breakers.states() {
                let v = match state {
                    crate::breaker::State::Closed => 0,
                    crate::breaker::State::HalfOpen => 1,
                    crate::breaker::State::Open => 2,
                };
                o.observe(v, &[KeyValue::new("evos.connector", connector)]);
            }
        })
        .build();
    let sources_host = host.clone();
    let sources = meter
        .u64_observable_counter("evos.source.messages")
        .with_description("Event-source messages by what became of them")
        .with_callback(move |o| {
            let Some(host) = sources_host.upgrade() else {
                return;
            };
            for (name, connector, c) in host.metrics.sources() {
                for (what, n) in [
                    ("received", &c.received),
                    ("redelivered", &c.redelivered),
                    ("acked", &c.acked),
                    ("duplicate", &c.duplicates),
                    ("retried", &c.retried),
                    ("dead-letter", &c.dead_letters),
                ] {
                    o.observe(
                        n.load(Ordering::Relaxed),
                        &[
                            KeyValue::new("evos.source", name.clone()),
                            KeyValue::new("evos.connector", connector.clone()),
                            KeyValue::new("evos.message", what),
                        ],
                    );
                }
            }
        })
        .build();
    let pending = meter
        .u64_observable_gauge("evos.reviews.pending")
        .with_description("Actions waiting for a reviewer")
        .with_callback(move |o| {
            let Some(host) = host.upgrade() else { return };
            if let Ok(n) = host.reviews.pending() {
                o.observe(n, &[]);
            }
        })
        .build();
    vec![
        Box::new(calls),
        Box::new(latency),
        Box::new(actions),
        Box::new(agreement),
        Box::new(drift),
        Box::new(breakers),
        Box::new(sources),
        Box::new(pending),
    ]
}

/// Every serving version: plugin, slot and status.
fn versions(host: &Host) -> Vec<(String, &'static str, crate::registry::VersionStatus)> {
    let mut out = Vec::new();
    for p in host.registry.status(None).unwrap_or_default() {
        out.push((p.plugin.clone(), "stable", p.stable));
        if let Some(c) = p.canary {
            out.push((p.plugin.clone(), "canary", c));
        }
        if let Some(s) = p.shadow {
            out.push((p.plugin.clone(), "shadow", s.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_checked_and_signal_paths_added() {
        assert_eq!(
            signal_url("http://127.0.0.1:4318", "traces").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            signal_url("http://collector:4318/", "metrics").unwrap(),
            "http://collector:4318/v1/metrics"
        );
        let e = signal_url("127.0.0.1:4318", "traces")
            .unwrap_err()
            .to_string();
        assert!(e.contains("http://127.0.0.1:4318"), "{e}");
        let e = signal_url("grpc://c:4317", "traces")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not grpc"), "{e}");
    }
}
