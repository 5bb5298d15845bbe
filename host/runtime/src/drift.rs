//! Drift of a model adapter's inputs and outputs: the distribution of
//! declared fields over a rolling window against a reference window.
//!
//! ```toml
//! [drift]                                  # in a model adapter's manifest
//! outputs = ["score"]                      # output fields (keys or JSON pointers)
//! inputs = ["amount", "prior_claims", "region"]   # request input fields
//! reference = 200     # the first N calls served as the stable version
//! window = 200        # the newest N calls, compared with the reference
//! threshold = 0.2     # a field whose PSI exceeds this drifts
//! bins = 10           # numeric fields: bins at the reference's quantiles
//! review-share = 0.2  # while drifting, this share of the events whose actions
//!                     # rest on this version go to human review
//! ```
//!
//! A field whose reference values are all numbers is numeric: it is cut
//! into `bins` bins at the reference's quantiles, and compared by the
//! population stability index (PSI) and the two-sample Kolmogorov-Smirnov
//! statistic (KS, the largest gap between the two empirical distribution
//! functions). Any other field is categorical (strings, booleans; numbers
//! among them count as their text) and compared by PSI over its values.
//!
//! PSI = Σ (wᵢ − rᵢ) · ln(wᵢ / rᵢ) over the bins, with each share smoothed
//! as (count + ½) / (n + ½·bins) so an empty bin does not make it
//! infinite. By the usual reading, below 0.1 nothing moved, 0.1 to 0.25 is
//! a moderate shift and above 0.25 a large one.
//!
//! The judgement runs every tenth of a window once both windows are full.
//! A version starts drifting when any field's PSI exceeds `threshold`, and
//! stops when every field is back under 0.8 × `threshold` (so a value
//! wavering at the threshold does not flap).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A model adapter's `[drift]` table.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DriftConfig {
    #[serde(default)]
    pub outputs: Vec<String>,
    #[serde(default)]
    pub inputs: Vec<String>,
    #[serde(default = "DriftConfig::default_size")]
    pub reference: usize,
    #[serde(default = "DriftConfig::default_size")]
    pub window: usize,
    #[serde(default = "DriftConfig::default_threshold")]
    pub threshold: f64,
    #[serde(default = "DriftConfig::default_bins")]
    pub bins: usize,
    #[serde(default)]
    pub review_share: f64,
}

/// Fewest calls in a reference or window: fewer make PSI noise.
pub const MIN_WINDOW: usize = 20;
/// Most calls in a reference or window (memory per field and version).
pub const MAX_WINDOW: usize = 100_000;

impl DriftConfig {
    fn default_size() -> usize {
        200
    }
    fn default_threshold() -> f64 {
        0.2
    }
    fn default_bins() -> usize {
        10
    }

    /// Check the table; the message names the key to fix.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.outputs.is_empty() && self.inputs.is_empty() {
            return Err("[drift] watches nothing: list output fields (outputs = [\"score\"]) or input fields (inputs = [\"amount\"])".into());
        }
        for (key, n) in [("reference", self.reference), ("window", self.window)] {
            if !(MIN_WINDOW..=MAX_WINDOW).contains(&n) {
                return Err(format!(
                    "[drift] {key} = {n}: give between {MIN_WINDOW} and {MAX_WINDOW} calls"
                ));
            }
        }
        if !self.threshold.is_finite() || self.threshold <= 0.0 {
            return Err(format!(
                "[drift] threshold = {}: give a PSI above 0 (0.2 is a common choice)",
                self.threshold
            ));
        }
        if !(2..=50).contains(&self.bins) {
            return Err(format!("[drift] bins = {}: give 2 to 50", self.bins));
        }
        if !self.review_share.is_finite() || !(0.0..=1.0).contains(&self.review_share) {
            return Err(format!(
                "[drift] review-share = {}: give a share between 0 and 1",
                self.review_share
            ));
        }
        for f in self.outputs.iter().chain(&self.inputs) {
            if f.is_empty() || f.len() > 256 {
                return Err(format!(
                    "[drift] field {f:?}: give a key or a JSON pointer of at most 256 bytes"
                ));
            }
        }
        Ok(())
    }

    /// Every watched field, named `output.<f>` or `input.<f>`.
    fn fields(&self) -> Vec<(String, Side, String)> {
        self.outputs
            .iter()
            .map(|f| {
                (
                    format!("output.{}", f.trim_start_matches('/')),
                    Side::Output,
                    f.clone(),
                )
            })
            .chain(self.inputs.iter().map(|f| {
                (
                    format!("input.{}", f.trim_start_matches('/')),
                    Side::Input,
                    f.clone(),
                )
            }))
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Input,
    Output,
}

/// One observed value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Sample {
    Number(f64),
    Text(String),
}

impl Sample {
    fn of(v: &Value) -> Option<Sample> {
        match v {
            Value::Number(n) => n.as_f64().filter(|x| x.is_finite()).map(Sample::Number),
            // Long texts are cut: categories are short by nature.
            Value::String(s) => Some(Sample::Text(evos_core::text::bounded(s, 128).into_owned())),
            Value::Bool(b) => Some(Sample::Text(b.to_string())),
            _ => None,
        }
    }

    fn text(&self) -> String {
        match self {
            Sample::Number(x) => x.to_string(),
            Sample::Text(s) => s.clone(),
        }
    }
}

fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    if path.starts_with('/') {
        v.pointer(path)
    } else {
        v.get(path)
    }
}

/// How far one field moved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldDrift {
    pub field: String,
    /// `numeric` or `categorical`.
    pub kind: String,
    pub psi: f64,
    /// Kolmogorov-Smirnov statistic (numeric fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ks: Option<f64>,
}

/// The last judgement, as a serving host persists it (so `status` from
/// another process shows it, and drift outlives a restart).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Judged {
    pub drifting: bool,
    pub fields: Vec<FieldDrift>,
}

/// What a judgement changed.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// The reference filled up (persist it).
    ReferenceComplete,
    /// A field crossed the threshold.
    Started(Vec<FieldDrift>),
    /// Every field is back under the threshold.
    Cleared(Vec<FieldDrift>),
}

/// The reference as persisted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    pub calls: usize,
    pub values: BTreeMap<String, Vec<Sample>>,
    /// Set by a person (`evos drift pin`) rather than the first calls.
    #[serde(default)]
    pub pinned: bool,
}

/// One version's drift state.
#[derive(Debug, Clone)]
pub struct Drift {
    config: DriftConfig,
    fields: Vec<(String, Side, String)>,
    reference: Reference,
    window: BTreeMap<String, VecDeque<Sample>>,
    window_calls: usize,
    since_judged: usize,
    last: Vec<FieldDrift>,
    drifting: bool,
}

/// A version's drift, as shown in status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftStatus {
    pub reference_calls: usize,
    pub reference_size: usize,
    pub reference_pinned: bool,
    pub window_calls: usize,
    pub window_size: usize,
    pub threshold: f64,
    pub drifting: bool,
    pub review_share: f64,
    pub fields: Vec<FieldDrift>,
}

impl Drift {
    pub fn new(config: DriftConfig, reference: Option<Reference>) -> Drift {
        let fields = config.fields();
        Drift {
            fields,
            reference: reference.unwrap_or_default(),
            window: BTreeMap::new(),
            window_calls: 0,
            since_judged: 0,
            last: Vec::new(),
            drifting: false,
            config,
        }
    }

    pub fn config(&self) -> &DriftConfig {
        &self.config
    }

    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    pub fn drifting(&self) -> bool {
        self.drifting
    }

    /// The last judgement.
    pub fn judged(&self) -> Judged {
        Judged {
            drifting: self.drifting,
            fields: self.last.clone(),
        }
    }

    /// Take up a judgement persisted before (a restart, another process):
    /// it holds until the window refills and is judged again.
    pub fn restore(&mut self, judged: Judged) {
        self.drifting = judged.drifting;
        self.last = judged.fields;
    }

    /// The values of the watched fields in one call's request input and
    /// answer output.
    fn samples(&self, input: &Value, output: &Value) -> Vec<(usize, Option<Sample>)> {
        self.fields
            .iter()
            .enumerate()
            .map(|(i, (_, side, path))| {
                let source = match side {
                    Side::Input => input,
                    Side::Output => output,
                };
                (i, at(source, path).and_then(Sample::of))
            })
            .collect()
    }

    /// Take in one answered call. `stable`: the version served it as the
    /// stable version (only those fill the reference).
    pub fn observe(&mut self, input: &Value, output: &Value, stable: bool) -> Option<Transition> {
        let samples = self.samples(input, output);
        if stable && self.reference.calls < self.config.reference {
            for (i, s) in &samples {
                if let Some(s) = s {
                    self.reference
                        .values
                        .entry(self.fields[*i].0.clone())
                        .or_default()
                        .push(s.clone());
                }
            }
            self.reference.calls += 1;
            if self.reference.calls == self.config.reference {
                return Some(Transition::ReferenceComplete);
            }
            return None;
        }
        for (i, s) in samples {
            let w = self.window.entry(self.fields[i].0.clone()).or_default();
            if let Some(s) = s {
                w.push_back(s);
            }
            while w.len() > self.config.window {
                w.pop_front();
            }
        }
        self.window_calls = (self.window_calls + 1).min(self.config.window);
        self.since_judged += 1;
        let every = (self.config.window / 10).max(1);
        if self.window_calls < self.config.window
            || self.reference.calls < self.config.reference
            || self.since_judged < every
        {
            return None;
        }
        self.since_judged = 0;
        self.judge()
    }

    /// Compare the window with the reference now.
    fn judge(&mut self) -> Option<Transition> {
        self.last = self
            .fields
            .iter()
            .filter_map(|(name, _, _)| {
                let r = self.reference.values.get(name)?;
                let w = self.window.get(name)?;
                if r.is_empty() || w.is_empty() {
                    return None;
                }
                let w: Vec<Sample> = w.iter().cloned().collect();
                Some(compare(name, r, &w, self.config.bins))
            })
            .collect();
        let over: Vec<FieldDrift> = self
            .last
            .iter()
            .filter(|f| f.psi > self.config.threshold)
            .cloned()
            .collect();
        let calm = self
            .last
            .iter()
            .all(|f| f.psi <= self.config.threshold * 0.8);
        match (self.drifting, over.is_empty(), calm) {
            (false, false, _) => {
                self.drifting = true;
                Some(Transition::Started(over))
            }
            (true, _, true) => {
                self.drifting = false;
                Some(Transition::Cleared(self.last.clone()))
            }
            _ => None,
        }
    }

    /// Make the current window the reference (a person's choice).
    pub fn pin(&mut self) -> Result<(), String> {
        if self.window_calls == 0 {
            return Err("no calls since the reference filled: nothing to pin yet".into());
        }
        self.reference = Reference {
            calls: self.config.reference,
            values: self
                .window
                .iter()
                .map(|(k, v)| (k.clone(), v.iter().cloned().collect()))
                .collect(),
            pinned: true,
        };
        self.window.clear();
        self.window_calls = 0;
        self.since_judged = 0;
        self.drifting = false;
        self.last.clear();
        Ok(())
    }

    pub fn status(&self) -> DriftStatus {
        DriftStatus {
            reference_calls: self.reference.calls,
            reference_size: self.config.reference,
            reference_pinned: self.reference.pinned,
            window_calls: self.window_calls,
            window_size: self.config.window,
            threshold: self.config.threshold,
            drifting: self.drifting,
            review_share: self.config.review_share,
            fields: self.last.clone(),
        }
    }
}

/// PSI (and KS for numbers) of `window` against `reference`.
pub fn compare(name: &str, reference: &[Sample], window: &[Sample], bins: usize) -> FieldDrift {
    let numbers = |s: &[Sample]| -> Option<Vec<f64>> {
        s.iter()
            .map(|x| match x {
                Sample::Number(n) => Some(*n),
                Sample::Text(_) => None,
            })
            .collect()
    };
    match (numbers(reference), numbers(window)) {
        (Some(mut r), Some(mut w)) => {
            r.sort_by(f64::total_cmp);
            w.sort_by(f64::total_cmp);
            FieldDrift {
                field: name.to_string(),
                kind: "numeric".into(),
                psi: psi_numeric(&r, &w, bins),
                ks: Some(ks(&r, &w)),
            }
        }
        _ => FieldDrift {
            field: name.to_string(),
            kind: "categorical".into(),
            psi: psi_categorical(reference, window),
            ks: None,
        },
    }
}

fn psi_of(r: &[usize], w: &[usize]) -> f64 {
    let (rn, wn) = (
        r.iter().sum::<usize>() as f64,
        w.iter().sum::<usize>() as f64,
    );
    let k = r.len() as f64;
    r.iter()
        .zip(w)
        .map(|(rc, wc)| {
            let p = (*rc as f64 + 0.5) / (rn + 0.5 * k);
            let q = (*wc as f64 + 0.5) / (wn + 0.5 * k);
            (q - p) * (q / p).ln()
        })
        .sum()
}

/// PSI over `bins` bins at the (sorted) reference's quantiles.
fn psi_numeric(r: &[f64], w: &[f64], bins: usize) -> f64 {
    let mut edges: Vec<f64> = (1..bins)
        .filter_map(|k| r.get(k * r.len() / bins).copied())
        .collect();
    edges.dedup();
    let count = |xs: &[f64]| {
        let mut c = vec![0usize; edges.len() + 1];
        for x in xs {
            c[edges.partition_point(|e| e <= x)] += 1;
        }
        c
    };
    psi_of(&count(r), &count(w))
}

fn psi_categorical(r: &[Sample], w: &[Sample]) -> f64 {
    let (r, w): (Vec<String>, Vec<String>) = (
        r.iter().map(Sample::text).collect(),
        w.iter().map(Sample::text).collect(),
    );
    let values: BTreeSet<&String> = r.iter().chain(&w).collect();
    let count = |xs: &[String]| -> Vec<usize> {
        values
            .iter()
            .map(|v| xs.iter().filter(|x| x == v).count())
            .collect()
    };
    psi_of(&count(&r), &count(&w))
}

/// Two-sample Kolmogorov-Smirnov statistic of two sorted samples.
fn ks(r: &[f64], w: &[f64]) -> f64 {
    let (mut i, mut j, mut d) = (0usize, 0usize, 0f64);
    while i < r.len() && j < w.len() {
        let x = r[i].min(w[j]);
        while i < r.len() && r[i] <= x {
            i += 1;
        }
        while j < w.len() && w[j] <= x {
            j += 1;
        }
        let gap = (i as f64 / r.len() as f64 - j as f64 / w.len() as f64).abs();
        d = d.max(gap);
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(text: &str) -> Result<DriftConfig, String> {
        let c: DriftConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate().map(|_| c)
    }

    #[test]
    fn the_table_is_checked() {
        let c = config("outputs = [\"score\"]\ninputs = [\"region\"]").unwrap();
        assert_eq!((c.reference, c.window, c.bins), (200, 200, 10));
        for (text, says) in [
            ("", "watches nothing"),
            ("outputs = [\"s\"]\nwindow = 5", "window = 5"),
            ("outputs = [\"s\"]\nthreshold = 0", "threshold"),
            ("outputs = [\"s\"]\nbins = 1", "bins"),
            ("outputs = [\"s\"]\nreview-share = 2", "review-share"),
            ("outputs = [\"s\"]\nwindwo = 50", "windwo"),
        ] {
            let e = config(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    fn numbers(xs: impl Iterator<Item = f64>) -> Vec<Sample> {
        xs.map(Sample::Number).collect()
    }

    #[test]
    fn psi_and_ks_are_near_zero_for_the_same_distribution_and_large_for_a_shift() {
        let r = numbers((0..1000).map(|i| f64::from(i % 100)));
        let same = numbers((0..500).map(|i| f64::from((i * 7) % 100)));
        let shifted = numbers((0..500).map(|i| f64::from(i % 100) + 40.0));
        let calm = compare("x", &r, &same, 10);
        assert!(calm.psi < 0.02, "{calm:?}");
        assert!(calm.ks.unwrap() < 0.05, "{calm:?}");
        let moved = compare("x", &r, &shifted, 10);
        assert!(moved.psi > 1.0, "{moved:?}");
        assert!((moved.ks.unwrap() - 0.4).abs() < 0.02, "{moved:?}");
        // Categories: a new value taking a third of the traffic.
        let text = |v: &[&str]| {
            v.iter()
                .map(|s| Sample::Text(s.to_string()))
                .collect::<Vec<_>>()
        };
        let r = text(&["north", "south", "east", "west"].repeat(50));
        let w = text(
            &[&["north", "south", "east", "west"][..], &["east", "east"]]
                .concat()
                .repeat(30),
        );
        let d = compare("region", &r, &w, 10);
        assert_eq!(d.kind, "categorical");
        assert!(d.psi > 0.1 && d.ks.is_none(), "{d:?}");
    }

    #[test]
    fn drift_starts_over_the_threshold_and_clears_under_it() {
        let c = config("outputs = [\"score\"]\ninputs = [\"region\"]\nreference = 50\nwindow = 50")
            .unwrap();
        let mut d = Drift::new(c, None);
        let call = |score: f64, region: &str| (json!({"region": region}), json!({"score": score}));
        for i in 0..49 {
            let (input, output) = call(f64::from(i % 10) / 10.0, "north");
            assert_eq!(d.observe(&input, &output, true), None);
        }
        let (input, output) = call(0.5, "north");
        assert_eq!(
            d.observe(&input, &output, true),
            Some(Transition::ReferenceComplete)
        );
        // Canary calls never fill the reference; the same distribution
        // does not drift.
        let mut transitions = Vec::new();
        for i in 0..100 {
            let (input, output) = call(f64::from(i % 10) / 10.0, "north");
            transitions.extend(d.observe(&input, &output, false));
        }
        assert!(transitions.is_empty(), "{transitions:?}");
        assert!(!d.drifting());
        assert!(d.status().fields.iter().all(|f| f.psi < 0.05));
        // Scores move up and a new region appears.
        for i in 0..50 {
            let (input, output) = call(0.6 + f64::from(i % 4) / 10.0, "east");
            transitions.extend(d.observe(&input, &output, false));
        }
        assert!(
            matches!(transitions.as_slice(), [Transition::Started(over)] if !over.is_empty()),
            "one start: {transitions:?}"
        );
        assert!(d.drifting());
        // With the window full of them, both fields are far over.
        let fields = d.status().fields;
        assert_eq!(fields.len(), 2);
        assert!(fields.iter().all(|f| f.psi > 0.2), "{fields:?}");
        assert!(
            fields.iter().any(|f| f.ks.is_some_and(|ks| ks > 0.5)),
            "{fields:?}"
        );
        // Back to normal: cleared once the window holds normal calls.
        transitions.clear();
        for i in 0..60 {
            let (input, output) = call(f64::from(i % 10) / 10.0, "north");
            transitions.extend(d.observe(&input, &output, true));
        }
        assert!(
            matches!(transitions.last(), Some(Transition::Cleared(_))),
            "{transitions:?}"
        );
        assert!(!d.drifting());
        // Pinning makes the window the new reference.
        d.pin().unwrap();
        assert!(d.reference().pinned);
        assert_eq!(d.status().window_calls, 0);
    }
}
