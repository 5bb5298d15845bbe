//! Metrics in the Prometheus text format.
//!
//! Per plugin and version: calls by outcome, a latency histogram, fuel,
//! model usage and usage per 1,000 calls; for the pipeline: events,
//! actions by disposition, escalation rate and the review queue depth.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::pipeline::{Disposition, PipelineReport};
use crate::registry::PluginStatus;

/// Pipeline counters of a running host.
#[derive(Debug, Default)]
pub struct Metrics {
    events: AtomicU64,
    ingest_failures: AtomicU64,
    executed: AtomicU64,
    allowed: AtomicU64,
    denied: AtomicU64,
    escalated: AtomicU64,
    failed: AtomicU64,
    /// Actions proposed by agents (each counted once, whatever became of it).
    proposed: AtomicU64,
    /// Refusals not audited one by one (see `server::RefusalRate`).
    pub(crate) refusals_suppressed: AtomicU64,
    /// Failed accepts of the listener.
    pub(crate) accept_errors: AtomicU64,
    /// Each event source's counters, by source name and connector.
    sources: std::sync::Mutex<Vec<(String, String, std::sync::Arc<SourceCounters>)>>,
}

/// What one event source (a JetStream consumer) did on this host.
#[derive(Debug, Default)]
pub struct SourceCounters {
    /// Messages delivered to this host.
    pub received: AtomicU64,
    /// Of those, deliveries after the first (a redelivered message).
    pub redelivered: AtomicU64,
    /// Messages acknowledged after their events' audit entries committed.
    pub acked: AtomicU64,
    /// Events skipped because they were processed already.
    pub duplicates: AtomicU64,
    /// Failed deliveries sent back for a retry after a backoff.
    pub retried: AtomicU64,
    /// Messages given up on and kept as dead letters.
    pub dead_letters: AtomicU64,
    /// Messages in the stream the consumer has not delivered yet, as last
    /// read from the server.
    pub lag: AtomicU64,
}

impl Metrics {
    /// The counters of the event source `name` feeding `connector`.
    pub fn source(&self, name: &str, connector: &str) -> std::sync::Arc<SourceCounters> {
        let mut sources = evos_core::sync::lock(&self.sources);
        if let Some((_, _, c)) = sources.iter().find(|(n, _, _)| n == name) {
            return c.clone();
        }
        let counters = std::sync::Arc::new(SourceCounters::default());
        sources.push((name.to_string(), connector.to_string(), counters.clone()));
        counters
    }

    pub fn observe_pipeline(&self, report: &PipelineReport) {
        if report.ingest_error.is_some() {
            self.ingest_failures.fetch_add(1, Ordering::Relaxed);
        }
        self.events
            .fetch_add(report.events.len() as u64, Ordering::Relaxed);
        for a in report.actions() {
            self.proposed.fetch_add(1, Ordering::Relaxed);
            let counter = match a.disposition {
                Disposition::Executed { .. } => &self.executed,
                Disposition::Allowed => &self.allowed,
                Disposition::Denied { .. } => &self.denied,
                Disposition::Escalated { .. } => &self.escalated,
                Disposition::Failed { .. } => &self.failed,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every event source's counters: name, connector, counters.
    pub fn sources(&self) -> Vec<(String, String, std::sync::Arc<SourceCounters>)> {
        evos_core::sync::lock(&self.sources).clone()
    }

    /// Actions by what became of them, as counted so far.
    pub fn dispositions(&self) -> [(&'static str, u64); 5] {
        [
            ("executed", self.executed.load(Ordering::Relaxed)),
            ("allowed", self.allowed.load(Ordering::Relaxed)),
            ("denied", self.denied.load(Ordering::Relaxed)),
            ("escalated", self.escalated.load(Ordering::Relaxed)),
            ("failed", self.failed.load(Ordering::Relaxed)),
        ]
    }

    /// Count what became of an escalated action a reviewer approved.
    pub fn observe_review(&self, review: &crate::review::Review) {
        use crate::review::ReviewStatus;
        match review.status {
            ReviewStatus::Executed => self.executed.fetch_add(1, Ordering::Relaxed),
            ReviewStatus::Failed => self.failed.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }
}

/// Write a metric family's `HELP` and `TYPE` lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escape a label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// What the metrics are rendered from: a snapshot of the host's parts,
/// so rendering needs no server (and tests can render any state).
pub struct Snapshot<'a> {
    /// Every deployed plugin's versions, calls, outcomes and latency.
    pub status: Vec<PluginStatus>,
    /// The pipeline counters.
    pub metrics: &'a Metrics,
    /// Each connector's circuit breaker.
    pub breakers: Vec<(String, crate::breaker::State)>,
    /// Actions waiting for a human.
    pub pending_reviews: u64,
}

/// A version's agreement with human labels, as one metric's value.
type HumanValue = fn(&crate::labels::HumanAgreement) -> Option<f64>;

/// A metric of a shadow pair: name, type, help, value.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&crate::shadow::PairStatus) -> Option<f64>,
);

/// How each shadow's answers compared with the live versions'.
fn shadows(out: &mut String, status: &[PluginStatus]) {
    let pairs: Vec<_> = status
        .iter()
        .flat_map(|p| p.shadow.iter().map(move |s| (p, s)))
        .flat_map(|(p, s)| s.agreement.iter().map(move |pair| (p, s, pair)))
        .collect();
    let labels =
        |p: &PluginStatus, s: &crate::registry::ShadowStatus, pair: &crate::shadow::PairStatus| {
            format!(
                "plugin=\"{}\",live_version=\"{}\",shadow_version=\"{}\"",
                label(&p.plugin),
                label(&pair.live_version),
                label(&s.version.version)
            )
        };
    let series: [Series; 5] = [
        (
            "evos_shadow_compared_total",
            "counter",
            "Live calls whose shadow answer was compared.",
            |p| Some(p.agreement.compared as f64),
        ),
        (
            "evos_shadow_agreed_total",
            "counter",
            "Compared shadow answers that agreed with the live answer.",
            |p| Some(p.agreement.agreed as f64),
        ),
        (
            "evos_shadow_agreement_ratio",
            "gauge",
            "Share of compared shadow answers that agreed with the live answer.",
            |p| p.agreement_rate,
        ),
        (
            "evos_shadow_decision_shift_ratio",
            "gauge",
            "Share of compared answers whose class (decision, action kinds, label) changed.",
            |p| p.decision_shift,
        ),
        (
            "evos_shadow_shed_total",
            "counter",
            "Mirrored calls dropped because the shadow's queue was full.",
            |p| Some(p.agreement.shed as f64),
        ),
    ];
    for (name, kind, help, value) in series {
        family(out, name, kind, help);
        for (p, s, pair) in &pairs {
            if let Some(v) = value(pair) {
                let _ = writeln!(out, "{name}{{{}}} {v}", labels(p, s, pair));
            }
        }
    }
}

/// Drift of the watched fields of each model-adapter version.
fn drift(out: &mut String, versions: &[(&PluginStatus, &crate::registry::VersionStatus, &str)]) {
    let watched: Vec<_> = versions
        .iter()
        .filter_map(|(p, v, _)| v.drift.as_ref().map(|d| (*p, *v, d)))
        .collect();
    family(
        out,
        "evos_drift_psi",
        "gauge",
        "Population stability index of a watched field: the rolling window against the reference.",
    );
    family(
        out,
        "evos_drift_ks",
        "gauge",
        "Kolmogorov-Smirnov statistic of a watched numeric field against the reference.",
    );
    for (p, v, d) in &watched {
        for f in &d.fields {
            let l = format!(
                "plugin=\"{}\",version=\"{}\",field=\"{}\"",
                label(&p.plugin),
                label(&v.version),
                label(&f.field)
            );
            let _ = writeln!(out, "evos_drift_psi{{{l}}} {}", f.psi);
            if let Some(ks) = f.ks {
                let _ = writeln!(out, "evos_drift_ks{{{l}}} {ks}");
            }
        }
    }
    family(
        out,
        "evos_drift_active",
        "gauge",
        "1 while a version drifts (a watched field's PSI over its threshold).",
    );
    for (p, v, d) in &watched {
        let _ = writeln!(
            out,
            "evos_drift_active{{plugin=\"{}\",version=\"{}\"}} {}",
            label(&p.plugin),
            label(&v.version),
            u8::from(d.drifting)
        );
    }
}

/// One counter of an event source.
type SourceValue = fn(&SourceCounters) -> &AtomicU64;

/// The event sources' series, of the connectors inside `scope`.
fn sources(out: &mut String, m: &Metrics, scope: &str) {
    let sources: Vec<_> = evos_core::sync::lock(&m.sources)
        .iter()
        .filter(|(_, c, _)| crate::auth::scope_matches(scope, c))
        .cloned()
        .collect();
    let series: [(&str, &str, &str, SourceValue); 7] = [
        (
            "evos_source_messages_total",
            "counter",
            "Messages an event source delivered to this host.",
            |c| &c.received,
        ),
        (
            "evos_source_redeliveries_total",
            "counter",
            "Deliveries of a message after its first.",
            |c| &c.redelivered,
        ),
        (
            "evos_source_acked_total",
            "counter",
            "Messages acknowledged after their events' audit entries committed.",
            |c| &c.acked,
        ),
        (
            "evos_source_duplicate_events_total",
            "counter",
            "Events of redelivered messages skipped as processed already.",
            |c| &c.duplicates,
        ),
        (
            "evos_source_retries_total",
            "counter",
            "Failed deliveries sent back to be retried after a backoff.",
            |c| &c.retried,
        ),
        (
            "evos_source_dead_letters_total",
            "counter",
            "Messages given up on and kept as dead letters.",
            |c| &c.dead_letters,
        ),
        (
            "evos_source_lag",
            "gauge",
            "Messages of the stream the consumer has not delivered yet.",
            |c| &c.lag,
        ),
    ];
    for (name, kind, help, value) in series {
        family(out, name, kind, help);
        for (source, connector, c) in &sources {
            let _ = writeln!(
                out,
                "{name}{{source=\"{}\",connector=\"{}\"}} {}",
                label(source),
                label(connector),
                value(c).load(Ordering::Relaxed)
            );
        }
    }
}

/// Render what a token scoped to `scope` may see of `snapshot`: the
/// series of plugins (and connectors) inside its scope, and the host-wide
/// series (pipeline totals, the review queue) only for `*`.
pub fn render(snapshot: Snapshot<'_>, scope: &str) -> String {
    let mut out = String::new();
    let host_wide = scope == "*";
    let status: Vec<_> = snapshot
        .status
        .into_iter()
        .filter(|p| crate::auth::scope_matches(scope, &p.plugin))
        .collect();
    family(
        &mut out,
        "evos_calls_total",
        "counter",
        "Plugin calls by version and outcome.",
    );
    let versions: Vec<_> = status
        .iter()
        .flat_map(|p| {
            std::iter::once((p, &p.stable, "stable"))
                .chain(p.canary.iter().map(move |c| (p, c, "canary")))
                .chain(p.shadow.iter().map(move |s| (p, &s.version, "shadow")))
        })
        .collect();
    for (p, v, role) in &versions {
        for (outcome, n) in &v.outcomes {
            let _ = writeln!(
                out,
                "evos_calls_total{{plugin=\"{}\",version=\"{}\",role=\"{role}\",outcome=\"{}\"}} {n}",
                label(&p.plugin),
                label(&v.version),
                label(outcome)
            );
        }
    }
    shadows(&mut out, &status);
    let human: [(&str, &str, &str, HumanValue); 2] = [
        (
            "evos_human_labels_total",
            "counter",
            "Labelled actions (review decisions, feedback) a version's decision took part in.",
            |h| Some(h.labeled as f64),
        ),
        (
            "evos_human_agreement_ratio",
            "gauge",
            "Share of a version's labelled decisions that agree with the human label.",
            |h| h.rate(),
        ),
    ];
    for (name, kind, help, value) in human {
        family(&mut out, name, kind, help);
        for (p, v, role) in &versions {
            if let Some(x) = v.humans.as_ref().and_then(value) {
                let _ = writeln!(
                    out,
                    "{name}{{plugin=\"{}\",version=\"{}\",role=\"{role}\"}} {x}",
                    label(&p.plugin),
                    label(&v.version)
                );
            }
        }
    }
    drift(&mut out, &versions);
    family(
        &mut out,
        "evos_call_duration_seconds",
        "histogram",
        "Plugin call latency.",
    );
    for (p, v, _) in &versions {
        let l = format!(
            "plugin=\"{}\",version=\"{}\"",
            label(&p.plugin),
            label(&v.version)
        );
        for (le, count) in &v.latency_buckets {
            let _ = writeln!(
                out,
                "evos_call_duration_seconds_bucket{{{l},le=\"{}\"}} {count}",
                *le as f64 / 1e6
            );
        }
        let _ = writeln!(
            out,
            "evos_call_duration_seconds_bucket{{{l},le=\"+Inf\"}} {}",
            v.calls
        );
        let _ = writeln!(out, "evos_call_duration_seconds_count{{{l}}} {}", v.calls);
    }
    family(
        &mut out,
        "evos_fuel_consumed_total",
        "counter",
        "Fuel burned by plugin calls.",
    );
    for (p, v, _) in &versions {
        let _ = writeln!(
            out,
            "evos_fuel_consumed_total{{plugin=\"{}\",version=\"{}\"}} {}",
            label(&p.plugin),
            label(&v.version),
            v.fuel_consumed
        );
    }
    family(
        &mut out,
        "evos_model_usage_units_total",
        "counter",
        "Units reported by model adapters.",
    );
    family(
        &mut out,
        "evos_model_usage_units_per_1k_calls",
        "gauge",
        "Units per 1,000 calls (cost driver).",
    );
    family(
        &mut out,
        "evos_model_cost_per_1k_calls",
        "gauge",
        "Cost of 1,000 calls at the manifest's [cost] prices.",
    );
    for (p, v, _) in versions
        .iter()
        .filter(|(p, _, _)| p.kind == "model-adapter")
    {
        let l = format!(
            "plugin=\"{}\",version=\"{}\"",
            label(&p.plugin),
            label(&v.version)
        );
        let _ = writeln!(
            out,
            "evos_model_usage_units_total{{{l},direction=\"input\"}} {}",
            v.usage.input_units
        );
        let _ = writeln!(
            out,
            "evos_model_usage_units_total{{{l},direction=\"output\"}} {}",
            v.usage.output_units
        );
        if v.calls > 0 {
            let per_1k =
                (v.usage.input_units + v.usage.output_units) as f64 * 1000.0 / v.calls as f64;
            let _ = writeln!(out, "evos_model_usage_units_per_1k_calls{{{l}}} {per_1k}");
            if let Some(c) = v.cost {
                let cost = (v.usage.input_units as f64 * c.per_1k_input_units
                    + v.usage.output_units as f64 * c.per_1k_output_units)
                    / 1000.0;
                let per_1k_calls = cost * 1000.0 / v.calls as f64;
                let _ = writeln!(out, "evos_model_cost_per_1k_calls{{{l}}} {per_1k_calls}");
            }
        }
    }
    let m = snapshot.metrics;
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    if host_wide {
        family(
            &mut out,
            "evos_pipeline_events_total",
            "counter",
            "Events produced by connectors.",
        );
        let _ = writeln!(out, "evos_pipeline_events_total {}", load(&m.events));
        family(
            &mut out,
            "evos_pipeline_ingest_failures_total",
            "counter",
            "Ingests whose connector refused or failed the input.",
        );
        let _ = writeln!(
            out,
            "evos_pipeline_ingest_failures_total {}",
            load(&m.ingest_failures)
        );
        family(
            &mut out,
            "evos_pipeline_actions_total",
            "counter",
            "Proposed actions by what became of them; an escalated action a reviewer approves is counted again as executed or failed when it is carried out.",
        );
        let actions = [
            ("executed", load(&m.executed)),
            ("allowed", load(&m.allowed)),
            ("denied", load(&m.denied)),
            ("escalated", load(&m.escalated)),
            ("failed", load(&m.failed)),
        ];
        for (d, n) in actions {
            let _ = writeln!(
                out,
                "evos_pipeline_actions_total{{disposition=\"{d}\"}} {n}"
            );
        }
        let decided = load(&m.proposed);
        family(
            &mut out,
            "evos_escalation_rate",
            "gauge",
            "Share of the actions agents proposed that policies escalated to a human.",
        );
        let rate = if decided == 0 {
            0.0
        } else {
            load(&m.escalated) as f64 / decided as f64
        };
        let _ = writeln!(out, "evos_escalation_rate {rate}");
        family(
            &mut out,
            "evos_audit_refusals_suppressed_total",
            "counter",
            "Refused requests not written to the audit log one by one because their client exceeded the refusal rate (counted in the next entry written for that client).",
        );
        let _ = writeln!(
            out,
            "evos_audit_refusals_suppressed_total {}",
            load(&m.refusals_suppressed)
        );
        family(
            &mut out,
            "evos_accept_errors_total",
            "counter",
            "Connections the listener failed to accept (e.g. out of file descriptors).",
        );
        let _ = writeln!(out, "evos_accept_errors_total {}", load(&m.accept_errors));
    }
    family(
        &mut out,
        "evos_breaker_state",
        "gauge",
        "Circuit breaker per connector: 0 closed, 1 half-open, 2 open.",
    );
    for (connector, state) in snapshot
        .breakers
        .into_iter()
        .filter(|(c, _)| crate::auth::scope_matches(scope, c))
    {
        let v = match state {
            crate::breaker::State::Closed => 0,
            crate::breaker::State::HalfOpen => 1,
            crate::breaker::State::Open => 2,
        };
        let _ = writeln!(
            out,
            "evos_breaker_state{{connector=\"{}\",state=\"{}\"}} {v}",
            label(&connector),
            state.as_str()
        );
    }
    sources(&mut out, m, scope);
    if host_wide {
        family(
            &mut out,
            "evos_review_queue_depth",
            "gauge",
            "Actions waiting for a human.",
        );
        let _ = writeln!(out, "evos_review_queue_depth {}", snapshot.pending_reviews);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::State;

    fn snapshot(metrics: &Metrics) -> Snapshot<'_> {
        Snapshot {
            status: Vec::new(),
            metrics,
            breakers: vec![
                ("claims-webhook".into(), State::Open),
                ("other".into(), State::Closed),
            ],
            pending_reviews: 3,
        }
    }

    #[test]
    fn a_scoped_render_leaves_out_host_wide_series_and_other_plugins() {
        let metrics = Metrics::default();
        let all = render(snapshot(&metrics), "*");
        assert!(all.contains("evos_review_queue_depth 3"), "{all}");
        assert!(all.contains("connector=\"other\""), "{all}");
        let scoped = render(snapshot(&metrics), "claims-*");
        assert!(!scoped.contains("evos_review_queue_depth"), "{scoped}");
        assert!(!scoped.contains("evos_pipeline_events_total"), "{scoped}");
        assert!(scoped.contains("connector=\"claims-webhook\""), "{scoped}");
        assert!(!scoped.contains("connector=\"other\""), "{scoped}");
    }
}
