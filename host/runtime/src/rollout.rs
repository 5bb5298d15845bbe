//! Rollout policy and the per-version windows that judge a canary.
//!
//! A canary earns trust with traffic: the host keeps a rolling window of
//! each live version's outcomes and latencies and, once the canary has seen
//! `min-calls` calls within `window`, compares it with the policy and with
//! the stable version. A canary that breaks any threshold is rolled back
//! automatically; the audit entry carries the numbers and the threshold.
//!
//! ```toml
//! [rollout]                 # in the canary's manifest; defaults shown
//! min-calls = 50            # canary calls in the window before judging
//! window = "60s"            # how far back the window reaches
//! max-error-rate = 0.05     # share of calls whose outcome is not ok
//! max-trap-rate = 0.01      # share of traps, fuel/memory exhaustion, stack overflows, timeouts
//! max-p95-ratio = 3.0       # canary p95 latency / stable p95 latency
//! p95-slack = "5ms"         # latency differences smaller than this never count
//! ```
//!
//! `p95-slack` guards against noise: on microsecond-scale calls a busy
//! machine can triple a p95 without anything being wrong.
//!
//! # Progressive rollout
//!
//! A manifest may declare steps a new version goes through, and gates on
//! the *quality* of its decisions judged at every step besides the health
//! gates above:
//!
//! ```toml
//! [rollout]
//! min-agreement-with-stable = 0.9   # shadow steps: share of answers agreeing with stable
//! max-decision-shift = 0.1          # shadow steps: share of answers whose class changed
//! min-agreement-with-humans = 0.8   # its decisions vs human labels ...
//! min-labels = 20                   # ... once this many of them are labelled
//! auto-promote = true               # after the last step; else it waits for `evos promote`
//!
//! [[rollout.steps]]
//! shadow = 100                      # mirror 100 % of live calls to it
//! min-calls = 200                   # compared answers before judging
//! hold = "10m"                      # and at least this long in the step
//!
//! [[rollout.steps]]
//! weight = 10                       # a canary with 10 % of calls
//! min-calls = 100                   # canary calls in the window before judging
//! ```
//!
//! A step passes when it has seen `min-calls`, held for `hold`, and every
//! gate that can be judged holds; a gate that fails rolls the version back
//! with the gate's value and threshold in the audit entry. A gate that
//! cannot be judged yet (too few labels) holds nothing up.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::runtime::Outcome;

/// Thresholds a canary must stay within.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RolloutPolicy {
    #[serde(default = "RolloutPolicy::default_min_calls")]
    pub min_calls: u32,
    #[serde(
        default = "RolloutPolicy::default_window",
        with = "humantime_serde_compat"
    )]
    pub window: Duration,
    #[serde(default = "RolloutPolicy::default_error_rate")]
    pub max_error_rate: f64,
    #[serde(default = "RolloutPolicy::default_trap_rate")]
    pub max_trap_rate: f64,
    #[serde(default = "RolloutPolicy::default_p95_ratio")]
    pub max_p95_ratio: f64,
    #[serde(
        default = "RolloutPolicy::default_slack",
        with = "humantime_serde_compat"
    )]
    pub p95_slack: Duration,
    /// How a candidate's answers are compared with the stable version's
    /// (`[rollout.compare]`; see [`crate::compare`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare: Option<crate::compare::Compare>,
    /// The steps of a progressive rollout (`[[rollout.steps]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_agreement_with_stable: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_decision_shift: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_agreement_with_humans: Option<f64>,
    /// Labelled decisions before `min-agreement-with-humans` is judged.
    #[serde(default = "RolloutPolicy::default_min_labels")]
    pub min_labels: u64,
    /// Promote after the last step passes (else wait for a person).
    #[serde(default)]
    pub auto_promote: bool,
}

/// One step of a progressive rollout: a shadow or a canary share.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Step {
    /// Percent of live calls mirrored to the version as a shadow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<u8>,
    /// Percent of calls the version answers as a canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u8>,
    /// Calls before the step is judged (compared answers for a shadow,
    /// canary calls in the window for a canary); default `[rollout]
    /// min-calls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_calls: Option<u32>,
    /// Time in the step before it can pass.
    #[serde(
        default,
        with = "humantime_serde_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub hold: Option<Duration>,
}

impl Step {
    /// `shadow 100%` or `canary 10%`.
    pub fn describe(&self) -> String {
        match (self.shadow, self.weight) {
            (Some(s), _) => format!("shadow {s}%"),
            (None, Some(w)) => format!("canary {w}%"),
            (None, None) => "empty step".into(),
        }
    }
}

impl RolloutPolicy {
    fn default_min_calls() -> u32 {
        50
    }
    fn default_window() -> Duration {
        Duration::from_secs(60)
    }
    fn default_error_rate() -> f64 {
        0.05
    }
    fn default_trap_rate() -> f64 {
        0.01
    }
    fn default_p95_ratio() -> f64 {
        3.0
    }
    fn default_slack() -> Duration {
        Duration::from_millis(5)
    }
    fn default_min_labels() -> u64 {
        20
    }

    /// Check value ranges; the message names the key.
    pub(crate) fn validate(&self) -> Result<(), String> {
        for (key, v) in [
            ("max-error-rate", self.max_error_rate),
            ("max-trap-rate", self.max_trap_rate),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!(
                    "[rollout] {key} = {v} must be a share between 0.0 and 1.0"
                ));
            }
        }
        if self.max_p95_ratio.is_nan() || self.max_p95_ratio < 1.0 {
            return Err(format!(
                "[rollout] max-p95-ratio = {} must be at least 1.0",
                self.max_p95_ratio
            ));
        }
        if self.min_calls == 0 {
            return Err("[rollout] min-calls must be at least 1".into());
        }
        if self.window < Duration::from_millis(100) {
            return Err("[rollout] window must be at least 100ms".into());
        }
        if let Some(c) = &self.compare {
            c.validate()?;
        }
        for (key, v) in [
            ("min-agreement-with-stable", self.min_agreement_with_stable),
            ("max-decision-shift", self.max_decision_shift),
            ("min-agreement-with-humans", self.min_agreement_with_humans),
        ] {
            if let Some(v) = v
                && !(0.0..=1.0).contains(&v)
            {
                return Err(format!(
                    "[rollout] {key} = {v} must be a share between 0.0 and 1.0"
                ));
            }
        }
        for (i, step) in self.steps.iter().enumerate() {
            let n = i + 1;
            match (step.shadow, step.weight) {
                (Some(_), Some(_)) => {
                    return Err(format!(
                        "[[rollout.steps]] step {n} sets both `shadow` and `weight`: a step is a shadow share or a canary weight"
                    ));
                }
                (None, None) => {
                    return Err(format!(
                        "[[rollout.steps]] step {n} needs `shadow = <percent>` or `weight = <percent>`"
                    ));
                }
                (Some(p), None) | (None, Some(p)) if !(1..=100).contains(&p) => {
                    return Err(format!(
                        "[[rollout.steps]] step {n}: {p} is not a percentage from 1 to 100"
                    ));
                }
                _ => {}
            }
            if step.min_calls == Some(0) {
                return Err(format!(
                    "[[rollout.steps]] step {n}: min-calls must be at least 1"
                ));
            }
        }
        if (self.min_agreement_with_stable.is_some() || self.max_decision_shift.is_some())
            && !self.steps.iter().any(|s| s.shadow.is_some())
        {
            return Err("[rollout] min-agreement-with-stable and max-decision-shift are judged in shadow steps: add a step with `shadow = <percent>`".into());
        }
        Ok(())
    }
}

impl Default for RolloutPolicy {
    fn default() -> Self {
        RolloutPolicy {
            min_calls: Self::default_min_calls(),
            window: Self::default_window(),
            max_error_rate: Self::default_error_rate(),
            max_trap_rate: Self::default_trap_rate(),
            max_p95_ratio: Self::default_p95_ratio(),
            p95_slack: Self::default_slack(),
            compare: None,
            steps: Vec::new(),
            min_agreement_with_stable: None,
            max_decision_shift: None,
            min_agreement_with_humans: None,
            min_labels: Self::default_min_labels(),
            auto_promote: false,
        }
    }
}

/// Durations as humantime text (`"60s"`) in TOML and JSON.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?}: {e}; write e.g. \"60s\""
            ))
        })
    }
}

/// Optional durations as humantime text.
mod humantime_serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map(Some).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?}: {e}; write e.g. \"10m\""
            ))
        })
    }
}

/// How an outcome counts for rollout decisions.
fn is_trap(outcome: &Outcome) -> bool {
    matches!(
        outcome,
        Outcome::Trap { .. }
            | Outcome::OutOfFuel
            | Outcome::OutOfMemory { .. }
            | Outcome::StackOverflow
            | Outcome::Timeout
    )
}

/// Most entries a window keeps, whatever its duration: bounds memory and
/// evaluation cost under heavy traffic.
const MAX_ENTRIES: usize = 20_000;

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    ok: bool,
    trap: bool,
    micros: u64,
}

/// A rolling window of one version's recent calls.
#[derive(Debug, Default)]
pub struct Window {
    samples: VecDeque<Sample>,
}

/// What a window says about a version.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WindowStats {
    pub calls: u64,
    pub errors: u64,
    pub traps: u64,
    pub error_rate: f64,
    pub trap_rate: f64,
    pub p95_us: u64,
}

impl Window {
    pub fn record(&mut self, outcome: &Outcome, micros: u64) {
        if self.samples.len() >= MAX_ENTRIES {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample {
            at: Instant::now(),
            ok: outcome.is_ok(),
            trap: is_trap(outcome),
            micros,
        });
    }

    fn expire(&mut self, window: Duration) {
        let now = Instant::now();
        while self
            .samples
            .front()
            .is_some_and(|s| now.duration_since(s.at) > window)
        {
            self.samples.pop_front();
        }
    }

    /// The samples younger than `window` as counts that add up with other
    /// nodes' windows of the same version.
    pub fn counts(&mut self, window: Duration) -> WindowCounts {
        self.expire(window);
        let mut latencies: BTreeMap<u64, u64> = BTreeMap::new();
        for s in &self.samples {
            *latencies.entry(three_digits(s.micros)).or_default() += 1;
        }
        WindowCounts {
            calls: self.samples.len() as u64,
            errors: self.samples.iter().filter(|s| !s.ok).count() as u64,
            traps: self.samples.iter().filter(|s| s.trap).count() as u64,
            latencies: latencies.into_iter().collect(),
        }
    }

    /// Statistics over the samples younger than `window` together with
    /// `peers`, the same version's windows on other nodes; exactly this
    /// window's when there are none.
    pub fn stats_with(&mut self, window: Duration, peers: &WindowCounts) -> WindowStats {
        if peers.calls == 0 {
            return self.stats(window);
        }
        let mut all = self.counts(window);
        all.add(peers);
        all.stats()
    }

    /// Statistics over the samples younger than `window`.
    pub fn stats(&mut self, window: Duration) -> WindowStats {
        self.expire(window);
        let calls = self.samples.len() as u64;
        if calls == 0 {
            return WindowStats::default();
        }
        let errors = self.samples.iter().filter(|s| !s.ok).count() as u64;
        let traps = self.samples.iter().filter(|s| s.trap).count() as u64;
        let mut lat: Vec<u64> = self.samples.iter().map(|s| s.micros).collect();
        lat.sort_unstable();
        let idx = ((lat.len() as f64 * 0.95).ceil() as usize).clamp(1, lat.len()) - 1;
        WindowStats {
            calls,
            errors,
            traps,
            error_rate: errors as f64 / calls as f64,
            trap_rate: traps as f64 / calls as f64,
            p95_us: lat[idx],
        }
    }
}

/// `v` with its decimal digits after the first three set to zero: the
/// latency buckets windows are shared in (0.1% apart at most).
fn three_digits(v: u64) -> u64 {
    let mut scale = 1;
    while v / scale >= 1000 {
        scale *= 10;
    }
    v / scale * scale
}

/// One version's recent calls as counts: what a node publishes of its
/// window so rollouts are judged on the calls of every node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowCounts {
    pub calls: u64,
    pub errors: u64,
    pub traps: u64,
    /// (latency in µs to three significant digits, calls), ascending.
    pub latencies: Vec<(u64, u64)>,
}

impl WindowCounts {
    /// Add another window's counts.
    pub fn add(&mut self, other: &WindowCounts) {
        self.calls = self.calls.saturating_add(other.calls);
        self.errors = self.errors.saturating_add(other.errors);
        self.traps = self.traps.saturating_add(other.traps);
        let mut merged: BTreeMap<u64, u64> = self.latencies.iter().copied().collect();
        for (v, n) in &other.latencies {
            let slot = merged.entry(*v).or_default();
            *slot = slot.saturating_add(*n);
        }
        self.latencies = merged.into_iter().collect();
    }

    /// What these counts say about the version.
    pub fn stats(&self) -> WindowStats {
        if self.calls == 0 {
            return WindowStats::default();
        }
        let rank = ((self.calls as f64 * 0.95).ceil() as u64).clamp(1, self.calls);
        let mut seen = 0u64;
        let p95_us = self
            .latencies
            .iter()
            .find(|(_, n)| {
                seen = seen.saturating_add(*n);
                seen >= rank
            })
            .map_or(0, |(v, _)| *v);
        WindowStats {
            calls: self.calls,
            errors: self.errors,
            traps: self.traps,
            error_rate: self.errors as f64 / self.calls as f64,
            trap_rate: self.traps as f64 / self.calls as f64,
            p95_us,
        }
    }
}

/// Why a canary must go, with the evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Breach {
    /// The threshold broken, e.g. `max-error-rate`.
    pub threshold: String,
    /// Its configured value.
    pub limit: f64,
    /// The observed value.
    pub observed: f64,
    pub canary: WindowStats,
    pub stable: WindowStats,
}

impl Breach {
    pub fn summary(&self) -> String {
        format!(
            "{} {:.4} exceeds {:.4} over {} canary calls",
            self.threshold, self.observed, self.limit, self.canary.calls
        )
    }
}

/// Judge a canary against `policy`; `None` while it is within bounds or has
/// not yet seen `min-calls` calls.
pub fn judge(policy: &RolloutPolicy, canary: &WindowStats, stable: &WindowStats) -> Option<Breach> {
    if canary.calls < policy.min_calls as u64 {
        return None;
    }
    let breach = |threshold: &str, limit: f64, observed: f64| Breach {
        threshold: threshold.to_string(),
        limit,
        observed,
        canary: canary.clone(),
        stable: stable.clone(),
    };
    if canary.trap_rate > policy.max_trap_rate {
        return Some(breach(
            "max-trap-rate",
            policy.max_trap_rate,
            canary.trap_rate,
        ));
    }
    if canary.error_rate > policy.max_error_rate {
        return Some(breach(
            "max-error-rate",
            policy.max_error_rate,
            canary.error_rate,
        ));
    }
    let slack = policy.p95_slack.as_micros() as u64;
    if stable.calls > 0 && stable.p95_us > 0 && canary.p95_us > stable.p95_us.saturating_add(slack)
    {
        let ratio = canary.p95_us as f64 / stable.p95_us as f64;
        if ratio > policy.max_p95_ratio {
            return Some(breach("max-p95-ratio", policy.max_p95_ratio, ratio));
        }
    }
    None
}

/// Outcome counts by name, for status and persistence.
pub type OutcomeCounts = BTreeMap<String, u64>;

#[cfg(test)]
mod tests {
    use super::*;

    fn window(ok: usize, errors: usize, traps: usize, micros: u64) -> WindowStats {
        let mut w = Window::default();
        for _ in 0..ok {
            w.record(&Outcome::Ok, micros);
        }
        for _ in 0..errors {
            w.record(
                &Outcome::GuestError {
                    error: crate::types::GuestError::Internal("x".into()),
                },
                micros,
            );
        }
        for _ in 0..traps {
            w.record(
                &Outcome::Trap {
                    message: "unreachable".into(),
                },
                micros,
            );
        }
        w.stats(Duration::from_secs(60))
    }

    #[test]
    fn a_canary_is_not_judged_before_min_calls() {
        let p = RolloutPolicy::default();
        assert_eq!(
            judge(&p, &window(0, 0, 10, 100), &window(100, 0, 0, 100)),
            None
        );
    }

    #[test]
    fn trap_and_error_rates_are_enforced_with_evidence() {
        let p = RolloutPolicy::default();
        let b = judge(&p, &window(90, 0, 10, 100), &window(100, 0, 0, 100)).unwrap();
        assert_eq!(b.threshold, "max-trap-rate");
        assert!((b.observed - 0.1).abs() < 1e-9 && b.limit == 0.01);
        let b = judge(&p, &window(90, 10, 0, 100), &window(100, 0, 0, 100)).unwrap();
        assert_eq!(b.threshold, "max-error-rate");
        assert_eq!(
            judge(&p, &window(100, 0, 0, 100), &window(100, 0, 0, 100)),
            None
        );
    }

    #[test]
    fn p95_ratio_counts_only_beyond_the_slack() {
        let p = RolloutPolicy::default();
        // 4x slower but only 300us apart: noise, not a regression.
        assert_eq!(
            judge(&p, &window(100, 0, 0, 400), &window(100, 0, 0, 100)),
            None
        );
        // 4x slower and 30ms apart: a regression.
        let b = judge(&p, &window(100, 0, 0, 40_000), &window(100, 0, 0, 10_000)).unwrap();
        assert_eq!(b.threshold, "max-p95-ratio");
    }

    #[test]
    fn old_samples_leave_the_window() {
        let mut w = Window::default();
        w.record(&Outcome::Ok, 1);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(w.stats(Duration::from_millis(5)).calls, 0);
    }

    #[test]
    fn windows_of_several_nodes_add_up_to_the_stats_of_all_their_calls() {
        let trap = Outcome::Trap {
            message: "unreachable".into(),
        };
        let (mut a, mut b, mut both) = (Window::default(), Window::default(), Window::default());
        for i in 0..40u64 {
            let (outcome, micros) = if i % 4 == 0 {
                (&trap, 900 + i)
            } else {
                (&Outcome::Ok, 100 + i * 7)
            };
            let node = if i % 3 == 0 { &mut a } else { &mut b };
            node.record(outcome, micros);
            both.record(outcome, micros);
        }
        let window = Duration::from_secs(60);
        let peers = b.counts(window);
        let summed = a.stats_with(window, &peers);
        let exact = both.stats(window);
        assert_eq!(
            (summed.calls, summed.errors, summed.traps),
            (exact.calls, exact.errors, exact.traps)
        );
        assert_eq!(summed.trap_rate, exact.trap_rate);
        // Latencies are shared to three significant digits.
        assert_eq!(summed.p95_us, three_digits(exact.p95_us));
        // Without peers a window judges exactly its own calls.
        assert_eq!(
            a.stats_with(window, &WindowCounts::default()),
            a.stats(window)
        );
        assert_eq!(three_digits(123_456), 123_000);
        assert_eq!(three_digits(999), 999);
    }
}
