//! Human feedback as labels, and how each version's decisions agree with
//! them.
//!
//! Every audited pipeline run records, per action, which versions produced
//! it (`DecisionRecord`): the agent that proposed it, the model answers it
//! rested on and the policies that judged it. A reviewer's approve or
//! reject becomes a label of that action; `evos feedback` and
//! `POST /v1/events/{id}/feedback` add corrections after the fact (a paid
//! claim found fraudulent later). The newest label of an action counts.
//!
//! Agreement with humans, per version:
//!
//! | kind          | agrees when                                                  |
//! |---------------|--------------------------------------------------------------|
//! | agent         | its proposal was approved (`reject` disagrees)               |
//! | policy        | `allow` was approved or `deny` rejected (escalations are not compared) |
//! | model-adapter | its answer's class is the one its manifest's `[rollout.compare.labels]` gives the label (`"<action kind>/<label>"`, then `<label>`) |
//!
//! Labels the table does not name are counted (`labeled`, the confusion
//! counts) but not compared.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::Value;

use crate::Result;
use crate::compare::{self, Answer, Compare};
use crate::manifest::Manifest;
use crate::runtime::{CallOutput, Outcome};
use crate::store::StateStore;
use crate::types::ModelResponse;

/// How one version's decisions compared with human labels.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HumanAgreement {
    /// Labelled actions this version took part in.
    pub labeled: u64,
    /// Of those, the ones whose label says what the version should have
    /// answered.
    pub compared: u64,
    pub agreed: u64,
    /// Count per `"<the version's class> -> <label>"`.
    pub confusion: BTreeMap<String, u64>,
}

impl HumanAgreement {
    /// agreed / compared, once anything was compared.
    pub fn rate(&self) -> Option<f64> {
        (self.compared > 0).then(|| self.agreed as f64 / self.compared as f64)
    }
}

/// A version as labels name it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VersionKey {
    pub plugin: String,
    pub version: String,
    pub digest: String,
}

/// Agreement with humans of every version that took part in a labelled
/// action (labelled at or after `since` when given).
pub fn by_version(
    store: &dyn StateStore,
    since: Option<&str>,
) -> Result<BTreeMap<VersionKey, HumanAgreement>> {
    let labeled = store.labeled(since)?;
    let mut compares = Comparators::new(store);
    let mut out: BTreeMap<VersionKey, HumanAgreement> = BTreeMap::new();
    for (decision, label) in &labeled {
        let Value::Array(steps) = &decision.steps else {
            continue;
        };
        for step in steps {
            let text = |k: &str| step.get(k).and_then(Value::as_str).unwrap_or_default();
            let key = VersionKey {
                plugin: text("plugin").to_string(),
                version: text("version").to_string(),
                digest: text("digest").to_string(),
            };
            // The step's class, and whether the label says it was right
            // (`None`: the label does not say).
            let (class, verdict) = match text("kind") {
                "agent" | "policy" => {
                    let class = text("class").to_string();
                    let v = verdict(
                        text("kind"),
                        &class,
                        &decision.action_kind,
                        &label.label,
                        None,
                    );
                    (class, v)
                }
                "model-adapter" => {
                    let compare = compares.of(&key);
                    let class = model_class(step, compare.as_ref())
                        .unwrap_or_else(|| "unclassified".into());
                    let v = verdict(
                        "model-adapter",
                        &class,
                        &decision.action_kind,
                        &label.label,
                        compare.as_ref(),
                    );
                    (class, v)
                }
                _ => continue,
            };
            let entry = out.entry(key).or_default();
            entry.labeled += 1;
            *entry
                .confusion
                .entry(format!("{class} -> {}", label.label))
                .or_default() += 1;
            if let Some(agreed) = verdict {
                entry.compared += 1;
                entry.agreed += u64::from(agreed);
            }
        }
    }
    Ok(out)
}

/// Labelled decisions `plugin` took part in, as rows for training: the
/// label, the class it stands for (a model's `[rollout.compare.labels]`),
/// the version's output and, for models that report them, the features
/// the answer was computed from; everything passed through `redactor`.
///
/// A version the store does not hold (decisions recorded by `evos run
/// --record`, which calls the app's plugins without deploying them) is
/// compared by the manifest of `app`'s plugin of that name and version.
pub fn export(
    store: &dyn StateStore,
    plugin: &str,
    since: Option<&str>,
    redactor: &crate::redact::Redactor,
    app: Option<&crate::app::App>,
) -> Result<Vec<Value>> {
    let mut compares = Comparators::new(store);
    for p in app.iter().flat_map(|a| &a.plugins) {
        compares.from_app.push((
            p.name.clone(),
            p.manifest.plugin.version.to_string(),
            p.manifest.rollout.compare.clone(),
        ));
    }
    let mut rows = Vec::new();
    for (decision, label) in store.labeled(since)? {
        let Value::Array(steps) = &decision.steps else {
            continue;
        };
        for step in steps
            .iter()
            .filter(|s| s.get("plugin").and_then(Value::as_str) == Some(plugin))
        {
            let text = |k: &str| step.get(k).and_then(Value::as_str).unwrap_or_default();
            let key = VersionKey {
                plugin: plugin.to_string(),
                version: text("version").to_string(),
                digest: text("digest").to_string(),
            };
            let class = match text("kind") {
                "model-adapter" => compares.of(&key).and_then(|c| {
                    c.class_for_label(&decision.action_kind, &label.label)
                        .map(str::to_string)
                }),
                _ => None,
            };
            let output = step.get("output").cloned().unwrap_or(Value::Null);
            let mut row = serde_json::json!({
                "event_id": decision.event_id,
                "action_index": decision.action_index,
                "action_kind": decision.action_kind,
                "label": label.label,
                "label_source": label.source,
                "labeled_at": label.at,
                "decided_at": decision.at,
                "plugin": plugin,
                "kind": text("kind"),
                "version": key.version,
                "digest": key.digest,
                "class": class,
                "features": output.get("features").cloned().unwrap_or(Value::Null),
                "output": output,
            });
            redactor.redact(&mut row);
            rows.push(row);
        }
    }
    Ok(rows)
}

/// Whether a version's answer of `class` agrees with a human `label` on
/// an action of `action_kind` (see the module docs); `None` when the label
/// does not say. An agent whose answer is not the labelled action (a
/// candidate replayed on recorded traffic) disagrees with an approval and
/// is not judged by a rejection.
pub fn verdict(
    kind: &str,
    class: &str,
    action_kind: &str,
    label: &str,
    compare: Option<&Compare>,
) -> Option<bool> {
    match kind {
        "agent" if class == action_kind => approved(label),
        "agent" => approved(label).filter(|a| *a).map(|_| false),
        "policy" => match class {
            "allow" => approved(label),
            "deny" => approved(label).map(|a| !a),
            _ => None,
        },
        "model-adapter" => compare
            .and_then(|c| c.class_for_label(action_kind, label))
            .map(|expected| expected == class),
        _ => None,
    }
}

/// Whether the label approves the action: `approve`, `reject`, or
/// neither.
fn approved(label: &str) -> Option<bool> {
    match label {
        "approve" => Some(true),
        "reject" => Some(false),
        _ => None,
    }
}

/// The class of a recorded model answer.
fn model_class(step: &Value, compare: Option<&Compare>) -> Option<String> {
    let ok = step.get("outcome").and_then(Value::as_str) == Some("ok");
    let output = step.get("output").filter(|o| !o.is_null());
    let answer = match (ok, output) {
        (true, Some(output)) => Answer {
            outcome: Outcome::Ok,
            output: Some(CallOutput::Model(ModelResponse {
                output: output.clone(),
                model: String::new(),
                usage: Default::default(),
            })),
        },
        _ => Answer {
            outcome: Outcome::Trap {
                message: String::new(),
            },
            output: None,
        },
    };
    compare::class_of(&answer, compare)
}

/// Each version's `[rollout.compare]`, read from its stored manifest once.
struct Comparators<'a> {
    store: &'a dyn StateStore,
    known: HashMap<VersionKey, Option<Compare>>,
    /// (plugin, version, compare) of manifests not in the store.
    from_app: Vec<(String, String, Option<Compare>)>,
}

impl<'a> Comparators<'a> {
    fn new(store: &'a dyn StateStore) -> Self {
        Comparators {
            store,
            known: HashMap::new(),
            from_app: Vec::new(),
        }
    }

    fn of(&mut self, key: &VersionKey) -> Option<Compare> {
        if let Some(known) = self.known.get(key) {
            return known.clone();
        }
        let compare = self
            .store
            .versions_of(&key.plugin)
            .ok()
            .and_then(|rows| rows.into_iter().find(|r| r.digest == key.digest))
            .and_then(|row| {
                Manifest::parse(
                    &row.manifest,
                    &row.manifest_origin,
                    std::path::Path::new(&row.manifest_base),
                )
                .ok()
            })
            .and_then(|m| m.rollout.compare)
            .or_else(|| {
                self.from_app
                    .iter()
                    .find(|(p, v, _)| *p == key.plugin && *v == key.version)
                    .and_then(|(_, _, c)| c.clone())
            });
        self.known.insert(key.clone(), compare.clone());
        compare
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{
        DecisionRecord, Deploy, LABEL_FROM_FEEDBACK, NewLabel, NewVersion, Slot, SqliteStore,
    };
    use serde_json::json;
    use std::sync::Arc;

    const MODEL: &str = "[plugin]\nname = \"score\"\nkind = \"model-adapter\"\nversion = \"1.0.0\"\n\n[rollout.compare]\nfield = \"score\"\nthreshold = 0.7\n\n[rollout.compare.labels]\n\"pay/reject\" = \"positive\"\n\"pay/approve\" = \"negative\"\nfraud = \"positive\"\n";

    fn record(event: &str, score: f64, policy: &str) -> DecisionRecord {
        DecisionRecord {
            event_id: event.into(),
            action_index: 0,
            trace_id: String::new(),
            action_kind: "pay".into(),
            proposed_by: "triage".into(),
            steps: json!([
                {"plugin": "triage", "kind": "agent", "version": "2.0.0", "digest": "a", "class": "pay"},
                {"plugin": "score", "kind": "model-adapter", "version": "1.0.0", "digest": "m", "outcome": "ok", "output": {"score": score}},
                {"plugin": "limit", "kind": "policy", "version": "0.1.0", "digest": "p", "class": policy},
            ]),
            at: String::new(),
        }
    }

    #[tokio::test]
    async fn versions_are_judged_against_the_newest_label_of_each_action() {
        let dir = std::env::temp_dir().join(format!("evos-labels-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store: Arc<dyn StateStore> = Arc::new(SqliteStore::open(&dir).unwrap());
        store
            .record_deploy(
                &NewVersion {
                    plugin: "score",
                    version: "1.0.0",
                    digest: "m",
                    manifest: MODEL,
                    manifest_origin: "score.toml",
                    manifest_base: ".",
                },
                &Deploy {
                    action: "deploy",
                    actor: "t",
                    slot: Slot::Stable,
                    detail: &json!({}),
                    seen: None,
                    step: None,
                },
            )
            .unwrap();
        let entry = || crate::audit::NewEntry {
            actor: "t",
            action: "pipeline",
            subject: "event",
            digest: None,
            detail: json!({}),
        };
        store
            .record_event(
                entry(),
                vec![
                    record("low-paid", 0.1, "allow"),
                    record("high-escalated", 0.9, "escalate"),
                    record("low-fraud", 0.2, "allow"),
                ],
                None,
                None,
            )
            .await
            .unwrap();
        let label = |event: &'static str, word: &'static str| NewLabel {
            event_id: event,
            action_index: 0,
            label: word,
            source: LABEL_FROM_FEEDBACK,
            actor: "t",
            comment: None,
        };
        store.add_label(&label("low-paid", "approve")).unwrap();
        store.add_label(&label("high-escalated", "reject")).unwrap();
        // Approved at first, found to be fraud later: the newest counts.
        store.add_label(&label("low-fraud", "approve")).unwrap();
        store.add_label(&label("low-fraud", "fraud")).unwrap();

        let got = by_version(&*store, None).unwrap();
        let key = |plugin: &str, version: &str, digest: &str| VersionKey {
            plugin: plugin.into(),
            version: version.into(),
            digest: digest.into(),
        };
        // The model: negative/approve agrees, positive/reject agrees,
        // negative/fraud disagrees.
        let model = &got[&key("score", "1.0.0", "m")];
        assert_eq!((model.labeled, model.compared, model.agreed), (3, 3, 2));
        assert_eq!(model.confusion["negative -> fraud"], 1);
        assert_eq!(model.rate(), Some(2.0 / 3.0));
        // The agent: approve agrees, reject disagrees, `fraud` says nothing
        // about a proposal.
        let agent = &got[&key("triage", "2.0.0", "a")];
        assert_eq!((agent.labeled, agent.compared, agent.agreed), (3, 2, 1));
        // The policy: allow/approve agrees, escalations are not compared.
        let policy = &got[&key("limit", "0.1.0", "p")];
        assert_eq!((policy.labeled, policy.compared, policy.agreed), (3, 1, 1));
        assert_eq!(policy.confusion["escalate -> reject"], 1);
        let _ = std::fs::remove_dir_all(dir);
    }
}
