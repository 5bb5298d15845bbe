//! Progressive rollouts: a candidate goes through its manifest's steps
//! (shadow, then canaries), judged at each by health and by the quality of
//! its decisions; a failing gate rolls it back with the evidence, the last
//! step promotes it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use evos::Outcome;
use evos::registry::Registry;

use crate::support::*;

async fn start(dir: &Path, candidate: &str, component_name: &str) -> Arc<Registry> {
    let reg = open_registry(dir);
    reg.deploy(
        manifest("fraud-score"),
        &component("fraud-score"),
        "1.0.0",
        None,
        "test",
    )
    .await
    .expect("deploy stable");
    let m = evos::Manifest::load(
        root().join(format!("policies/rollouts/fraud-score-{candidate}.toml")),
    )
    .expect("rollout manifest");
    let report = reg
        .deploy(m, &component(component_name), candidate, None, "test")
        .await
        .expect("deploy candidate");
    assert_eq!(
        report.action, "rollout",
        "a manifest with steps starts its rollout"
    );
    let route = reg.route("fraud-score").expect("route");
    assert_eq!(route.rollout.map(|p| p.step), Some(0));
    assert!(
        route.shadow.is_some() && route.canary.is_none(),
        "step 1 is a shadow"
    );
    reg
}

/// Drive traffic until the rollout is over (no candidate left), judging as
/// a serving host does; the live versions that answered.
async fn drive(reg: &Registry) -> Vec<String> {
    let inputs = fraud_traffic();
    let mut answered = Vec::new();
    for round in 0..60 {
        for input in &inputs {
            let r = reg
                .call("fraud-score", input.clone(), None)
                .await
                .expect("call");
            assert_eq!(r.outcome, Outcome::Ok, "a live call failed: {r:?}");
            answered.push(r.version.to_string());
        }
        assert!(
            reg.drain_shadows(Duration::from_secs(30)).await,
            "round {round}"
        );
        reg.tick_rollouts().await;
        let route = reg.route("fraud-score").expect("route");
        if route.rollout.is_none() {
            return answered;
        }
    }
    panic!("the rollout did not finish");
}

/// The newest audit entry of `action`.
fn last_entry(reg: &Registry, action: &str) -> evos::audit::Entry {
    reg.store()
        .audit_list(0, None)
        .expect("audit")
        .into_iter()
        .rev()
        .find(|e| e.action == action)
        .unwrap_or_else(|| panic!("no {action} entry"))
}

fn actions(reg: &Registry) -> Vec<String> {
    reg.store()
        .history("fraud-score")
        .expect("history")
        .into_iter()
        .map(|h| h.action)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retrained_model_passes_every_step_and_is_promoted() {
    let dir = tempdir("rollout-pass");
    let reg = start(&dir, "1.1.0", "fraud-score-retrained").await;
    let answered = drive(&reg).await;
    let route = reg.route("fraud-score").expect("route");
    assert_eq!(
        route.stable.plugin.version(),
        "1.1.0",
        "promoted after the last step"
    );
    assert!(route.canary.is_none() && route.shadow.is_none());
    assert_eq!(
        actions(&reg),
        [
            "deploy",
            "rollout",
            "rollout-step",
            "rollout-step",
            "promote"
        ]
    );
    // The canary steps served live calls; the shadow step did not.
    assert!(answered.iter().any(|v| v == "1.1.0"));
    let history = reg.store().history("fraud-score").expect("history");
    let first = &history[2].detail;
    assert_eq!(first["passed"]["slot"], "shadow 100%");
    assert_eq!(first["next"]["slot"], "canary 20%");
    let agreement = first["passed"]["gates"]
        .as_array()
        .expect("gates")
        .iter()
        .find(|g| g["gate"] == "min-agreement-with-stable")
        .expect("agreement gate");
    assert_eq!(agreement["passed"], true);
    assert!(agreement["value"].as_f64().expect("value") >= 0.9);
    let promote = last_entry(&reg, "promote");
    assert_eq!(promote.actor, "evos");
    assert_eq!(promote.detail["promoted"]["from"], "rollout");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_blind_to_prior_claims_is_rolled_back_at_the_agreement_gate() {
    let dir = tempdir("rollout-fail");
    let reg = start(&dir, "1.3.0", "fraud-score-blind").await;
    // While it is judged, status shows the step and each gate.
    let status = reg.status(Some("fraud-score")).expect("status");
    let rollout = status[0].rollout.as_ref().expect("rollout status");
    assert_eq!(
        (rollout.step, rollout.steps, rollout.slot.as_str()),
        (1, 3, "shadow 100%")
    );
    assert!(
        rollout
            .gates
            .iter()
            .any(|g| g.gate == "min-agreement-with-stable")
    );

    let answered = drive(&reg).await;
    assert!(
        answered.iter().all(|v| v == "1.0.0"),
        "the candidate never answered a live call"
    );
    let route = reg.route("fraud-score").expect("route");
    assert_eq!(route.stable.plugin.version(), "1.0.0");
    assert!(route.shadow.is_none() && route.canary.is_none());
    assert_eq!(actions(&reg), ["deploy", "rollout", "auto-rollback"]);
    let rollback = last_entry(&reg, "auto-rollback");
    let gates = rollback.detail["gates"].as_array().expect("gates");
    let gate = |name: &str| {
        gates
            .iter()
            .find(|g| g["gate"] == name)
            .expect(name)
            .clone()
    };
    let agreement = gate("min-agreement-with-stable");
    assert_eq!(agreement["passed"], false, "{agreement}");
    assert!(agreement["value"].as_f64().expect("value") < 0.9);
    // Healthy by every other measure: quality alone rolled it back.
    for healthy in ["max-error-rate", "max-trap-rate"] {
        assert_eq!(gate(healthy)["passed"], true, "{}", gate(healthy));
    }
    assert!(
        rollback.detail["reason"]
            .as_str()
            .expect("reason")
            .contains("min-agreement-with-stable"),
        "{}",
        rollback.detail
    );
    assert_eq!(rollback.detail["slot"], "shadow 100%");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_survives_a_restart_in_its_step() {
    let dir = tempdir("rollout-restart");
    let reg = start(&dir, "1.1.0", "fraud-score-retrained").await;
    drop(reg);
    let reg = open_registry(&dir);
    let route = reg.route("fraud-score").expect("route");
    assert_eq!(route.rollout.map(|p| p.step), Some(0));
    assert!(route.shadow.is_some());
    let answered = drive(&reg).await;
    assert!(!answered.is_empty());
    assert_eq!(
        reg.route("fraud-score")
            .expect("route")
            .stable
            .plugin
            .version(),
        "1.1.0"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_whose_decisions_people_reject_is_rolled_back_at_the_humans_gate() {
    let dir = tempdir("rollout-humans");
    let reg = open_registry(&dir);
    reg.deploy(
        manifest("fraud-score"),
        &component("fraud-score"),
        "1.0.0",
        None,
        "test",
    )
    .await
    .expect("deploy stable");
    let text = std::fs::read_to_string(root().join("policies/rollouts/fraud-score-1.1.0.toml"))
        .expect("manifest");
    // One canary step judged by people: no shadow step, no stable gates.
    let text = text
        .replace("min-agreement-with-stable = 0.9", "")
        .replace("max-decision-shift = 0.1", "")
        .replace("min-labels = 20", "min-labels = 5")
        .replace(
            "[[rollout.steps]]\nshadow = 100",
            "[[rollout.steps]]\nweight = 50",
        )
        .replace("min-calls = 100 ", "min-calls = 10 ");
    let m = manifest_from("fraud-score", &text);
    assert_eq!(m.rollout.steps[0].weight, Some(50), "{text}");
    reg.deploy(
        m,
        &component("fraud-score-retrained"),
        "1.1.0",
        None,
        "test",
    )
    .await
    .expect("deploy candidate");
    let route = reg.route("fraud-score").expect("route");
    let (canary, _) = route.canary.as_ref().expect("canary step");
    let (version, digest) = (
        canary.plugin.version().to_string(),
        canary.plugin.digest().to_string(),
    );

    // Six payouts the candidate scored low, found to be fraud later.
    let store = reg.store();
    let decisions = (0..6)
        .map(|i| evos::store::DecisionRecord {
            event_id: format!("C-{i}"),
            action_index: 0,
            trace_id: String::new(),
            action_kind: "approve-payout".into(),
            proposed_by: "claims-triage".into(),
            steps: serde_json::json!([{
                "plugin": "fraud-score", "kind": "model-adapter", "version": version,
                "digest": digest, "outcome": "ok", "output": {"score": 0.1, "label": "low"}
            }]),
            at: String::new(),
        })
        .collect();
    store
        .record_event(
            evos::audit::NewEntry {
                actor: "claims-webhook",
                action: "pipeline",
                subject: "event/C-0",
                digest: None,
                detail: serde_json::json!({}),
            },
            decisions,
            None,
            None,
        )
        .await
        .expect("record");
    for i in 0..6 {
        store
            .add_label(&evos::store::NewLabel {
                event_id: &format!("C-{i}"),
                action_index: 0,
                label: "fraud",
                source: evos::store::LABEL_FROM_FEEDBACK,
                actor: "rita",
                comment: None,
            })
            .expect("label");
    }
    let answered = drive(&reg).await;
    assert!(
        answered.iter().any(|v| v == "1.1.0"),
        "the canary served calls"
    );
    assert_eq!(
        reg.route("fraud-score")
            .expect("route")
            .stable
            .plugin
            .version(),
        "1.0.0"
    );
    assert_eq!(actions(&reg), ["deploy", "rollout", "auto-rollback"]);
    let rollback = last_entry(&reg, "auto-rollback");
    let gates = rollback.detail["gates"].as_array().expect("gates");
    let humans = gates
        .iter()
        .find(|g| g["gate"] == "min-agreement-with-humans")
        .expect("humans gate");
    assert_eq!(humans["passed"], false, "{humans}");
    assert_eq!(humans["value"], 0.0, "{humans}");
    // People alone stopped it: no health gate failed.
    for healthy in ["max-error-rate", "max-trap-rate", "max-p95-ratio"] {
        let g = gates.iter().find(|g| g["gate"] == healthy).expect(healthy);
        assert_ne!(g["passed"], false, "{g}");
    }
}
