//! Replay and backtest: recorded traffic through a candidate, effects
//! suppressed, compared with the recorded answers and with human labels.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::recording::{CALM, app_file, claim, load_app};
use crate::support::{component_path, fraud_traffic, open_registry, root, tempdir};
use evos::compare::{self, Answer};
use evos::pipeline::{self, RunOptions};
use evos::registry::Registry;
use evos::replay::{self, ReplayOptions};
use evos::runtime::Router;
use evos::store::{LABEL_FROM_FEEDBACK, NewLabel, RecordingFilter, StateStore};

/// Short, one risk word: with a round 1,500 it scores 0.50 at fraud-lr
/// 1.0.0 for a first claim and 0.70 from the second prior claim on; the
/// blind 1.3.0 gives 0.64 whatever the history.
const SUSPICIOUS: &str = "Phone stolen at the station.";

/// 48 claims by 12 claimants (so later claims have prior claims), every
/// third one suspicious; the claims app deployed in `registry`, every
/// event recorded. The ground truth of each claim: fraud when it is
/// suspicious and its claimant has claimed at least twice before.
async fn recorded_claims(dir: &std::path::Path, registry: &Arc<Registry>) -> Vec<(String, bool)> {
    let app_path = app_file(dir, "sample = { \"*\" = 1.0 }");
    let app = load_app(&app_path, "http://127.0.0.1:9/unused");
    for p in &app.plugins {
        let bytes = std::fs::read(&p.component).expect("component");
        registry
            .deploy(p.manifest.clone(), &bytes, "test", None, "test")
            .await
            .expect("deploy");
    }
    let mut truth = Vec::new();
    let mut claims = Vec::new();
    for i in 0..48 {
        let fraudy = i % 3 == 0;
        let id = format!("R-{i:02}");
        claims.push(claim(
            &id,
            &format!("CL-{}", i % 12),
            if fraudy { 1500.0 } else { 90.0 + f64::from(i) },
            if fraudy { SUSPICIOUS } else { CALM },
        ));
        truth.push((id, fraudy && i >= 24));
    }
    let recorder =
        Arc::new(evos::recording::Recorder::new(app.recording.clone().unwrap(), &[5; 32]).unwrap());
    let store: Arc<dyn StateStore> = registry.store().clone();
    // One claim at a time, so each claimant's history grows in order.
    for c in claims {
        pipeline::run(
            registry.clone(),
            Arc::new(app.clone()),
            "claims-webhook",
            json!({ "claims": [c] }).to_string().into_bytes(),
            "application/json",
            &RunOptions {
                reviews: Some(evos::review::ReviewQueue::new(store.clone())),
                audit: Some(store.clone()),
                recorder: Some(recorder.clone()),
                ..Default::default()
            },
        )
        .await
        .expect("pipeline");
    }
    truth
}

fn blind(registry: &Registry) -> Arc<evos::Plugin> {
    let manifest = evos::Manifest::load(root().join("policies/rollouts/fraud-score-1.3.0.toml"))
        .expect("manifest");
    let bytes = std::fs::read(component_path("fraud-score-blind")).expect("component");
    registry
        .runtime()
        .load(manifest, &bytes, "fraud-score-blind")
        .expect("load")
}

/// `plugin`'s recorded calls through `candidate`, its model calls routed
/// by `registry`.
async fn replay_in(
    registry: &Arc<Registry>,
    plugin: &str,
    candidate: &Arc<evos::Plugin>,
    options: ReplayOptions,
) -> evos::Result<evos::replay::ReplayReport> {
    let router: Arc<dyn Router> = registry.clone();
    replay::replay(
        registry.runtime(),
        Some(router),
        &**registry.store(),
        plugin,
        candidate,
        &options,
    )
    .await
}

fn fraud_score_calls(registry: &Registry) -> u64 {
    registry.status(Some("fraud-score")).expect("status")[0]
        .stable
        .calls
}

#[tokio::test(flavor = "multi_thread")]
async fn a_candidate_is_judged_on_recorded_traffic_against_the_recording_and_humans() {
    let dir = tempdir("replay-model");
    let registry = open_registry(&dir.join("data"));
    let truth = recorded_claims(&dir, &registry).await;
    let store = registry.store().clone();
    // A reviewer labelled the first 30 claims by the truth.
    for (id, fraud) in truth.iter().take(30) {
        store
            .add_label(&NewLabel {
                event_id: id,
                action_index: 0,
                label: if *fraud { "fraud" } else { "legit" },
                source: LABEL_FROM_FEEDBACK,
                actor: "reviewer",
                comment: None,
            })
            .expect("label");
    }
    let candidate = blind(&registry);
    let before = fraud_score_calls(&registry);
    let report = replay_in(
        &registry,
        "fraud-score",
        &candidate,
        ReplayOptions::default(),
    )
    .await
    .expect("replay");

    // Every recorded model call, by the version that answered it.
    assert_eq!(report.replayed, 48, "{report:#?}");
    assert_eq!(report.recorded_versions["1.0.0"], 48);
    assert_eq!(report.candidate_version, "1.3.0");
    // The candidate's calls were shadows: the live version's stats did not
    // move.
    assert_eq!(fraud_score_calls(&registry), before);

    // The same comparison, made here call by call.
    let compare = candidate.manifest().rollout.compare.clone();
    let recorded = store
        .recorded_calls(&RecordingFilter {
            plugin: Some("fraud-score"),
            ..Default::default()
        })
        .expect("calls");
    let (mut changed, mut agreed, mut compared, mut cand_ok, mut rec_ok) = (0, 0, 0, 0, 0);
    for c in &recorded {
        let input = evos::CallInput::from_json(candidate.kind(), c.call.input.clone()).unwrap();
        let now = registry.runtime().call(&candidate, input).await.unwrap();
        let old = evos::recording::answer_of(&c.call);
        let new = Answer::from(&now);
        let class = |a: &Answer| compare::class_of(a, compare.as_ref()).unwrap();
        changed += u64::from(class(&old) != class(&new));
        agreed += u64::from(compare::agree(&old, &new, compare.as_ref()));
        if let Some((_, fraud)) = truth.iter().take(30).find(|(id, _)| *id == c.event_id) {
            let expected = if *fraud { "positive" } else { "negative" };
            compared += 1;
            cand_ok += u64::from(class(&new) == expected);
            rec_ok += u64::from(class(&old) == expected);
        }
    }
    assert_eq!(report.changed, changed);
    assert_eq!(report.agreed, agreed);
    assert!(changed > 0, "the blind model scores repeat claimants lower");
    assert_eq!(report.changes.len() as u64, changed.min(20));
    assert_eq!(report.confusion.values().sum::<u64>(), 48);
    assert_eq!(report.humans.compared, compared);
    assert_eq!(compared, 30);
    assert_eq!(report.humans.candidate_agreed, cand_ok);
    assert_eq!(report.humans.recorded_agreed, rec_ok);
    // Blind to prior claims, the candidate misses the repeat fraud the
    // live model caught.
    assert!(
        report.humans.candidate_rate < report.humans.recorded_rate,
        "{:?}",
        report.humans
    );
    assert!(report.candidate.mean_fuel > 0 && report.candidate.p50_us > 0);
    assert_eq!(report.candidate.outcomes["ok"], 48);
    assert!(report.calls_per_second > 0.0);

    // `limit` takes the newest.
    let few = replay_in(
        &registry,
        "fraud-score",
        &candidate,
        ReplayOptions {
            limit: Some(5),
            ..Default::default()
        },
    )
    .await
    .expect("replay");
    assert_eq!(few.replayed, 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn replaying_an_agent_changes_no_state_and_counts_no_live_calls() {
    let dir = tempdir("replay-agent");
    let registry = open_registry(&dir.join("data"));
    recorded_claims(&dir, &registry).await;
    let kv = registry.store().clone().kv();
    let history = |claimant: &str| {
        kv.get("claims-triage", &format!("claimant/{claimant}"))
            .expect("kv")
            .map(|v| serde_json::from_slice::<Value>(&v).expect("json"))
    };
    let before = (history("CL-0"), fraud_score_calls(&registry));
    assert_eq!(before.0.as_ref().unwrap()["claims"], 4);
    let candidate = registry
        .stored_version("claims-triage", "1.0.0")
        .expect("stored");
    let report = replay_in(
        &registry,
        "claims-triage",
        &candidate,
        ReplayOptions::default(),
    )
    .await
    .expect("replay");
    assert_eq!(report.replayed, 48);
    assert_eq!(report.candidate.outcomes["ok"], 48, "{report:#?}");
    // The agent's kv writes went to a per-call overlay, and its model calls
    // were shadow calls outside the live version's stats.
    assert_eq!((history("CL-0"), fraud_score_calls(&registry)), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_explains_what_is_missing() {
    let dir = tempdir("replay-errors");
    let registry = open_registry(&dir.join("data"));
    let candidate = blind(&registry);
    let e = replay_in(
        &registry,
        "fraud-score",
        &candidate,
        ReplayOptions::default(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("no recorded calls of `fraud-score`") && e.contains("[recording]"),
        "{e}"
    );
    let e = replay_in(
        &registry,
        "claims-triage",
        &candidate,
        ReplayOptions::default(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("not `claims-triage`"), "{e}");
    let Err(e) = registry.stored_version("fraud-score", "9.9.9") else {
        panic!("found a version never stored")
    };
    let e = e.to_string();
    assert!(e.contains("no versions of `fraud-score` are stored"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_mode_rescores_a_jsonl_file() {
    let dir = tempdir("replay-batch");
    let registry = open_registry(&dir.join("data"));
    let candidate = blind(&registry);
    let text = std::fs::read_to_string(root().join("plugins/fraud-score/traffic.jsonl")).unwrap();
    let answers = replay::rescore(registry.runtime(), None, &candidate, &text, 0)
        .await
        .expect("rescore");
    let traffic = fraud_traffic();
    assert_eq!(answers.len(), traffic.len());
    // Each answer is the candidate's answer to its line, in order.
    for (a, input) in answers.iter().zip(traffic).step_by(25) {
        let direct = registry.runtime().call(&candidate, input).await.unwrap();
        let Some(evos::CallOutput::Model(resp)) = &direct.output else {
            panic!("{direct:?}")
        };
        assert_eq!(a.output["model"]["output"], resp.output, "line {}", a.line);
        let expected = if resp.output["score"].as_f64().unwrap() >= 0.7 {
            "positive"
        } else {
            "negative"
        };
        assert_eq!(a.class.as_deref(), Some(expected));
    }
    // A bad line stops the batch before any call, naming the line.
    let e = replay::rescore(
        registry.runtime(),
        None,
        &candidate,
        "{\"input\": {}}\nnot json\n",
        0,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("line 2"), "{e}");
}
