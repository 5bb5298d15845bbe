//! Every capability, granted and not granted. Privileged interfaces that are
//! not granted are not linked, so the component is refused at load with a
//! message naming the import and the grant; non-privileged refinements of
//! baseline WASI (env, files) are simply empty.

use std::collections::BTreeMap;

use evos::{CallOutput, Outcome};
use serde_json::json;

use crate::support::*;

/// Load `name` with `edit` applied to its manifest text, expecting refusal.
fn refused(name: &str, edit: impl Fn(String) -> String) -> String {
    let rt = runtime();
    let text = edit(manifest_text(name));
    rt.load(manifest_from(name, &text), &component(name), name)
        .err()
        .unwrap_or_else(|| panic!("{name} loaded without the grant"))
        .to_string()
}

fn drop_line(text: String, prefix: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with(prefix))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn log_granted_and_not_granted() {
    let rt = runtime();
    let p = load(&rt, "payout-limit");
    let r = call_json(&rt, &p, sample("payout-limit")).await;
    assert!(
        !r.logs.is_empty(),
        "granted log lines reach the report: {r:?}"
    );
    let msg = refused("payout-limit", |t| drop_line(t, "log"));
    assert!(
        msg.contains("evos:plugin/log") && msg.contains("log = true"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kv_granted_and_not_granted() {
    // Granted: the claimant's history survives from one call to the next.
    let rt = runtime();
    load(&rt, "fraud-score");
    let triage = load(&rt, "claims-triage");
    let mut event = sample("claims-triage");
    let first = call_json(&rt, &triage, event.clone()).await;
    assert!(first.outcome.is_ok(), "{first:?}");
    event["id"] = json!("C-1002");
    event["payload"]["claim_id"] = json!("C-1002");
    let second = call_json(&rt, &triage, event).await;
    let Some(CallOutput::Actions(a)) = &second.output else {
        panic!("{second:?}")
    };
    assert!(a[0].rationale.contains("1 prior claim"), "{a:?}");

    let msg = refused("claims-triage", |t| drop_line(t, "kv"));
    assert!(
        msg.contains("evos:plugin/kv") && msg.contains("max-value-bytes"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn models_granted_not_granted_and_wrong_model() {
    let msg = refused("claims-triage", |t| drop_line(t, "models"));
    assert!(msg.contains("evos:plugin/models"), "{msg}");

    // Granted a different model: the call to fraud-score is refused and
    // reported, and the agent fails cleanly.
    let rt = runtime();
    load(&rt, "fraud-score");
    let text = manifest_text("claims-triage")
        .replace("models = [\"fraud-score\"]", "models = [\"other-model\"]");
    let triage = load_with(&rt, "claims-triage", manifest_from("claims-triage", &text));
    let r = call_json(&rt, &triage, sample("claims-triage")).await;
    let Outcome::Denied { capability, reason } = &r.outcome else {
        panic!("{r:?}")
    };
    assert_eq!(capability, "models");
    assert!(reason.contains("fraud-score"), "{reason}");
    assert!(r.nested.is_empty(), "the model never ran");

    // Granted but not loaded: not-found, no refusal.
    let rt = runtime();
    let triage = load(&rt, "claims-triage");
    let r = call_json(&rt, &triage, sample("claims-triage")).await;
    assert!(matches!(&r.outcome, Outcome::GuestError { .. }), "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn config_granted_and_not_granted() {
    let msg = refused("payout-limit", |t| {
        let t = drop_line(t, "allow-below");
        let t = drop_line(t, "deny-above");
        drop_line(t, "[config]")
    });
    assert!(
        msg.contains("evos:plugin/config") && msg.contains("[config]"),
        "{msg}"
    );
    // A granted table with a key missing: the policy fails closed.
    let rt = runtime();
    let text = drop_line(manifest_text("payout-limit"), "deny-above");
    let p = load_with(&rt, "payout-limit", manifest_from("payout-limit", &text));
    let r = call_json(&rt, &p, sample("payout-limit")).await;
    let Some(CallOutput::Decision(evos::types::Decision::Deny(reason))) = &r.output else {
        panic!("{r:?}")
    };
    assert!(reason.contains("deny-above"), "{reason}");
}

fn adjuster_event() -> serde_json::Value {
    // Four prior claims send a claim to an adjuster whatever its score.
    json!({"id": "C-9", "kind": "claim.submitted", "source": "t", "payload": {
        "claim_id": "C-9", "claimant_id": "CL-7", "amount": 100.0, "policy_number": "POL-1",
        "incident": "Hail damage to the roof of the car during the storm last night.", "region": "south"}})
}

async fn desk_with(env: BTreeMap<String, String>, grant: bool) -> String {
    let rt = runtime_with_env(env);
    load(&rt, "fraud-score");
    let text = manifest_text("claims-triage");
    let text = if grant { text } else { drop_line(text, "env") };
    let triage = load_with(&rt, "claims-triage", manifest_from("claims-triage", &text));
    let mut last = None;
    for i in 0..4 {
        let mut e = adjuster_event();
        e["id"] = json!(format!("C-{i}"));
        e["payload"]["claim_id"] = json!(format!("C-{i}"));
        last = Some(call_json(&rt, &triage, e).await);
    }
    let r = last.expect("calls");
    let Some(CallOutput::Actions(actions)) = &r.output else {
        panic!("{r:?}")
    };
    assert_eq!(actions[0].kind, "route-to-adjuster", "{actions:?}");
    actions[0].payload["desk"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn env_granted_and_not_granted() {
    let env: BTreeMap<_, _> = [
        ("TRIAGE_DESK".to_string(), "north-desk".to_string()),
        ("SECRET".to_string(), "x".to_string()),
    ]
    .into();
    assert_eq!(desk_with(env.clone(), true).await, "north-desk");
    assert_eq!(
        desk_with(env, false).await,
        "central",
        "ungranted variables are invisible"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn files_granted_and_not_granted() {
    let rt = runtime();
    let fs = load(&rt, "fs-escape");
    let r = call_json(&rt, &fs, sample("fs-escape")).await;
    let Some(CallOutput::Actions(a)) = &r.output else {
        panic!("{r:?}")
    };
    assert!(
        a[0].payload["granted_read"]
            .as_str()
            .unwrap_or("")
            .contains("fs-escape plugin is allowed to read"),
        "{a:?}"
    );

    // Without the grant there is no preopen: even the granted file is gone.
    let text = drop_line(manifest_text("fs-escape"), "files");
    let fs = load_with(&rt, "fs-escape", manifest_from("fs-escape", &text));
    let r = call_json(&rt, &fs, sample("fs-escape")).await;
    assert!(matches!(r.outcome, Outcome::GuestError { .. }), "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn http_granted_not_granted_and_outside_the_allowlist() {
    let downstream = Downstream::start(200);
    let action =
        json!({"kind": "approve-payout", "event_id": "C-1", "payload": {}, "rationale": ""});
    // Not granted: wasi:http is linked inert, so the connector loads and
    // its request is refused before a connection is made.
    let rt = runtime();
    let text = drop_line(manifest_text("claims-webhook"), "http");
    let mut m = manifest_from("claims-webhook", &text);
    m.set_config("endpoint", &downstream.url("/claims/payouts"))
        .expect("config");
    let webhook = load_with(&rt, "claims-webhook", m);
    let r = call_json(&rt, &webhook, json!({"execute": action.clone()})).await;
    let Outcome::Denied { capability, reason } = &r.outcome else {
        panic!("{r:?}")
    };
    assert_eq!(capability, "http");
    assert!(
        reason.contains("grants no `http`") && reason.contains("http = ["),
        "{reason}"
    );
    assert!(downstream.requests().is_empty());

    let rt = runtime();
    let mut m = manifest("claims-webhook");
    // Allowed host and port, but a path outside the `/claims/` prefix.
    m.set_config("endpoint", &downstream.url("/admin/payouts"))
        .expect("config");
    let webhook = load_with(&rt, "claims-webhook", m);
    let r = call_json(&rt, &webhook, json!({"execute": action})).await;
    let Outcome::Denied { capability, .. } = &r.outcome else {
        panic!("{r:?}")
    };
    assert_eq!(capability, "http");
    assert!(downstream.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_of_the_wrong_kind_or_not_a_component_is_refused() {
    let rt = runtime();
    // payout-limit exports the policy world; declared as an agent it is refused.
    let text = manifest_text("payout-limit").replace("kind = \"policy\"", "kind = \"agent\"");
    let err = rt
        .load(
            manifest_from("payout-limit", &text),
            &component("payout-limit"),
            "payout-limit",
        )
        .err()
        .expect("wrong kind must not load")
        .to_string();
    assert!(
        err.contains("evos:plugin/agent-api") && err.contains("kind"),
        "{err}"
    );

    // Truncated bytes and a core module are refused before compiling.
    let bytes = component("payout-limit");
    let err = rt
        .load(
            manifest("payout-limit"),
            &bytes[..bytes.len() / 2],
            "half.wasm",
        )
        .err()
        .expect("truncated component must not load")
        .to_string();
    assert!(err.contains("half.wasm"), "{err}");
    let core = b"\0asm\x01\0\0\0";
    let err = rt
        .load(manifest("payout-limit"), core, "core.wasm")
        .err()
        .expect("core module must not load")
        .to_string();
    assert!(err.contains("core WebAssembly module"), "{err}");
    assert!(rt.get("payout-limit").is_none(), "nothing was registered");
}
