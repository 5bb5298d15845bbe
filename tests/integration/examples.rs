//! The example plugins do their real work through the host.

use evos::pipeline::{self, Disposition, RunOptions};
use evos::types::{Decision, GuestError};
use evos::{CallOutput, Outcome};
use serde_json::json;

use crate::support::*;

fn claim(id: &str, claimant: &str, amount: f64, incident: &str) -> serde_json::Value {
    json!({
        "claim_id": id, "claimant_id": claimant, "amount": amount,
        "policy_number": "POL-12345", "incident": incident, "region": "north"
    })
}

const CALM: &str = "Rear-ended at a traffic light on the way to work; photos and the repair estimate are attached.";
const SHADY: &str = "Urgent: car stolen, total loss, no witnesses, lost receipt, need cash";

#[tokio::test(flavor = "multi_thread")]
async fn claims_webhook_ingests_claims_into_events() {
    let rt = runtime();
    let webhook = load(&rt, "claims-webhook");
    let r = call_json(&rt, &webhook, sample("claims-webhook")).await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    let Some(CallOutput::Events(events)) = &r.output else {
        panic!("{r:?}")
    };
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, "claim.submitted");
    assert_eq!(events[0].id, "C-1001");
    assert_eq!(events[0].payload["claimant_id"], "CL-4711");
    assert_eq!(events[0].payload["amount"], 250.0);

    let batch = json!({"content_type": "application/json; charset=utf-8",
        "body": {"claims": [claim("C-1", "A", 10.0, CALM), claim("C-2", "B", 20.0, CALM)]}});
    let r = call_json(&rt, &webhook, batch).await;
    let Some(CallOutput::Events(events)) = &r.output else {
        panic!("{r:?}")
    };
    assert_eq!(
        events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["C-1", "C-2"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn claims_webhook_rejects_malformed_claims_saying_what_is_wrong() {
    let rt = runtime();
    let webhook = load(&rt, "claims-webhook");
    let mut bad = claim("C-102", "B", -5.0, CALM);
    let body = json!({"claims": [claim("C-101", "A", 10.0, CALM), bad.clone()]});
    let r = call_json(
        &rt,
        &webhook,
        json!({"content_type": "application/json", "body": body}),
    )
    .await;
    let Outcome::GuestError {
        error: GuestError::InvalidInput(msg),
    } = &r.outcome
    else {
        panic!("{r:?}")
    };
    assert!(msg.contains("C-102") && msg.contains("amount"), "{msg}");

    bad["amount"] = json!(10.0);
    bad["policy_number"] = json!("12345");
    let r = call_json(
        &rt,
        &webhook,
        json!({"content_type": "application/json", "body": bad}),
    )
    .await;
    let Outcome::GuestError {
        error: GuestError::InvalidInput(msg),
    } = &r.outcome
    else {
        panic!("{r:?}")
    };
    assert!(msg.contains("policy_number"), "{msg}");

    let r = call_json(
        &rt,
        &webhook,
        json!({"content_type": "application/json", "body": "{not json"}),
    )
    .await;
    assert!(
        matches!(
            r.outcome,
            Outcome::GuestError {
                error: GuestError::InvalidInput(_)
            }
        ),
        "{r:?}"
    );

    let r = call_json(
        &rt,
        &webhook,
        json!({"content_type": "text/plain", "body": "x"}),
    )
    .await;
    let Outcome::GuestError {
        error: GuestError::InvalidInput(msg),
    } = &r.outcome
    else {
        panic!("{r:?}")
    };
    assert!(msg.contains("application/json"), "{msg}");
}

#[tokio::test(flavor = "multi_thread")]
async fn claims_webhook_execute_posts_the_action_to_its_endpoint() {
    let downstream = Downstream::start(200);
    let rt = runtime();
    let mut m = manifest("claims-webhook");
    m.set_config("endpoint", &downstream.url("/claims/payouts"))
        .expect("config");
    let webhook = load_with(&rt, "claims-webhook", m);
    let action = json!({"kind": "approve-payout", "event_id": "C-1", "payload": {"claim_id": "C-1", "amount": 12.5}, "rationale": "ok"});
    let r = call_json(&rt, &webhook, json!({"execute": action})).await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    let Some(CallOutput::Receipt(receipt)) = &r.output else {
        panic!("{r:?}")
    };
    assert!(receipt.contains("200"), "{receipt}");
    let got = downstream.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].path, "/claims/payouts");
    let body: serde_json::Value = serde_json::from_str(&got[0].body).expect("JSON body");
    assert_eq!(body["kind"], "approve-payout");
    assert_eq!(body["payload"]["amount"], 12.5);

    // A failing downstream is an upstream error, not a success.
    let failing = Downstream::start(503);
    let mut m = manifest("claims-webhook");
    m.set_config("endpoint", &failing.url("/claims/payouts"))
        .expect("config");
    let webhook = load_with(&rt, "claims-webhook", m);
    let r = call_json(&rt, &webhook, json!({"execute": action})).await;
    let Outcome::GuestError {
        error: GuestError::Upstream(msg),
    } = &r.outcome
    else {
        panic!("{r:?}")
    };
    assert!(msg.contains("503"), "{msg}");
}

/// A keep-alive HTTP/1.1 server on 127.0.0.1 answering 200 to every
/// request; counts the connections it accepted and the requests it served.
fn keep_alive_server() -> (
    u16,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (conns, reqs) = (
        std::sync::Arc::new(AtomicUsize::new(0)),
        std::sync::Arc::new(AtomicUsize::new(0)),
    );
    let (c, r) = (conns.clone(), reqs.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten().take(64) {
            c.fetch_add(1, Ordering::SeqCst);
            let r = r.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(10)));
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut stream = stream;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut len = 0usize;
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        if h.trim().is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; len];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    r.fetch_add(1, Ordering::SeqCst);
                    let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 14\r\n\r\n{\"ref\":\"DS-1\"}";
                    if stream.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, conns, reqs)
}

#[tokio::test(flavor = "multi_thread")]
async fn outgoing_http_reuses_keep_alive_connections_per_plugin() {
    use std::sync::atomic::Ordering;
    let (port, conns, reqs) = keep_alive_server();
    let rt = runtime();
    let url = format!("http://127.0.0.1:{port}/claims/payouts");
    let mut m = manifest("claims-webhook");
    m.set_config("endpoint", &url).expect("config");
    let webhook = load_with(&rt, "claims-webhook", m);
    let action = json!({"kind": "approve-payout", "event_id": "C-1", "payload": {"claim_id": "C-1", "amount": 12.5}, "rationale": "ok"});
    for _ in 0..5 {
        let r = call_json(&rt, &webhook, json!({"execute": action})).await;
        assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    }
    assert_eq!(reqs.load(Ordering::SeqCst), 5);
    assert_eq!(
        conns.load(Ordering::SeqCst),
        1,
        "five sequential requests share one connection"
    );
}

fn score(r: &evos::CallReport) -> f64 {
    let Some(CallOutput::Model(resp)) = &r.output else {
        panic!("{r:?}")
    };
    resp.output["score"].as_f64().expect("score")
}

#[tokio::test(flavor = "multi_thread")]
async fn fraud_score_separates_calm_from_suspicious_claims() {
    let rt = runtime();
    let model = load(&rt, "fraud-score");
    fraud_score_checks(&rt, &model).await;
}

/// What every build of fraud-score (Rust, Python) must do.
pub(crate) async fn fraud_score_checks(rt: &evos::Runtime, model: &std::sync::Arc<evos::Plugin>) {
    let rt = rt.clone();
    let calm = call_json(&rt, model, sample("fraud-score")).await;
    assert_eq!(calm.outcome, Outcome::Ok, "{calm:?}");
    let Some(CallOutput::Model(resp)) = &calm.output else {
        panic!()
    };
    assert!(
        resp.usage.input_units > 0 && resp.usage.output_units == 1,
        "{resp:?}"
    );
    assert!(resp.model.starts_with("fraud-lr@"), "{resp:?}");
    assert_eq!(resp.output["label"], "low");

    let shady = json!({"input": {"amount": 9000.0, "prior_claims": 6, "incident": SHADY, "region": "north", "policy_number": "POL-1"}, "parameters": {}});
    let shady = call_json(&rt, model, shady).await;
    assert!(score(&shady) > 0.7, "{shady:?}");
    assert!(score(&calm) < 0.3);

    let bad = call_json(
        &rt,
        model,
        json!({"input": {"amount": "lots"}, "parameters": {}}),
    )
    .await;
    assert!(
        matches!(
            bad.outcome,
            Outcome::GuestError {
                error: GuestError::InvalidInput(_)
            }
        ),
        "{bad:?}"
    );
}

fn triage_event(id: &str, claimant: &str, amount: f64, incident: &str) -> serde_json::Value {
    json!({"id": id, "kind": "claim.submitted", "source": "claims-webhook", "payload": claim(id, claimant, amount, incident), "trace_id": ""})
}

fn only_action(r: &evos::CallReport) -> evos::types::Action {
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    let Some(CallOutput::Actions(actions)) = &r.output else {
        panic!("{r:?}")
    };
    assert_eq!(actions.len(), 1, "{actions:?}");
    actions[0].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn claims_triage_scores_with_the_model_and_keeps_history() {
    let rt = runtime();
    load(&rt, "fraud-score");
    let triage = load(&rt, "claims-triage");

    let r = call_json(&rt, &triage, triage_event("C-1", "CL-9", 120.0, CALM)).await;
    let action = only_action(&r);
    assert_eq!(action.kind, "approve-payout");
    assert_eq!(action.event_id, "C-1");
    assert_eq!(r.nested.len(), 1, "the model call is part of the report");
    assert_eq!(&*r.nested[0].plugin, "fraud-score");
    assert_eq!(r.nested[0].outcome, Outcome::Ok);

    let r = call_json(&rt, &triage, triage_event("C-2", "CL-9", 130.0, CALM)).await;
    assert!(only_action(&r).rationale.contains("1 prior claim"), "{r:?}");

    let r = call_json(&rt, &triage, triage_event("C-3", "CL-X", 8000.0, SHADY)).await;
    assert_eq!(only_action(&r).kind, "flag-fraud");
}

fn policy_input(kind: &str, payload: serde_json::Value) -> serde_json::Value {
    json!({"action": {"kind": kind, "event_id": "C-1", "payload": payload, "rationale": "r"},
           "event": {"id": "C-1", "kind": "claim.submitted", "payload": {}}})
}

async fn decision(
    rt: &evos::Runtime,
    p: &std::sync::Arc<evos::Plugin>,
    input: serde_json::Value,
) -> Decision {
    let r = call_json(rt, p, input).await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    match r.output {
        Some(CallOutput::Decision(d)) => d,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn payout_limit_allows_escalates_and_denies_by_configured_limits() {
    let rt = runtime();
    payout_limit_checks(&rt, "payout-limit", manifest("payout-limit")).await;
}

/// What every build of payout-limit (Rust, JavaScript) must do: `name`
/// is its component in target/plugins, `m` its manifest.
pub(crate) async fn payout_limit_checks(rt: &evos::Runtime, name: &str, m: evos::Manifest) {
    let rt = rt.clone();
    let text = m.source.clone();
    let origin = m.origin.clone();
    let p = load_with(&rt, name, m);
    assert_eq!(
        decision(
            &rt,
            &p,
            policy_input("approve-payout", json!({"amount": 999.0}))
        )
        .await,
        Decision::Allow
    );
    assert!(matches!(
        decision(
            &rt,
            &p,
            policy_input("approve-payout", json!({"amount": 5000.0}))
        )
        .await,
        Decision::Escalate(_)
    ));
    let Decision::Deny(reason) = decision(
        &rt,
        &p,
        policy_input("approve-payout", json!({"amount": 20000.0})),
    )
    .await
    else {
        panic!()
    };
    assert!(reason.contains("10000"), "{reason}");

    // The limits really come from config.
    let text = text.replace("allow-below = 1000", "allow-below = 100");
    let dir = std::path::Path::new(&origin)
        .parent()
        .expect("dir")
        .to_path_buf();
    let p = load_with(
        &rt,
        name,
        evos::Manifest::parse(&text, &origin, &dir).expect("manifest"),
    );
    assert!(matches!(
        decision(
            &rt,
            &p,
            policy_input("approve-payout", json!({"amount": 500.0}))
        )
        .await,
        Decision::Escalate(_)
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn pii_guard_denies_unredacted_pii_and_allows_clean_actions() {
    let rt = runtime();
    let p = load(&rt, "pii-guard");
    let clean = policy_input(
        "approve-payout",
        json!({"claim_id": "C-1", "amount": 10.0, "note": "SSN ***-**-1234 on file"}),
    );
    assert_eq!(decision(&rt, &p, clean).await, Decision::Allow);
    for (payload, what) in [
        (
            json!({"note": "claimant SSN 123-45-6789"}),
            "social security number",
        ),
        (json!({"card": "4111 1111 1111 1111"}), "card"),
        (
            json!({"contact": {"email": "jane.doe@example.com"}}),
            "e-mail",
        ),
    ] {
        let Decision::Deny(reason) =
            decision(&rt, &p, policy_input("approve-payout", payload.clone())).await
        else {
            panic!("{payload} was not denied")
        };
        assert!(
            reason.to_lowercase().contains(&what.to_lowercase()),
            "{reason}"
        );
        assert!(
            !reason.contains("123-45-6789")
                && !reason.contains("4111 1111 1111 1111")
                && !reason.contains("jane.doe"),
            "the reason must not echo PII: {reason}"
        );
    }
    // Regression: a model score whose digits happen to pass Luhn
    // (0.4111111111111111) was denied as a card number.
    assert_eq!(
        decision(
            &rt,
            &p,
            policy_input("x", json!({"score": 0.4111111111111111}))
        )
        .await,
        Decision::Allow
    );
    // A card number sent as a JSON integer is still found.
    assert!(matches!(
        decision(
            &rt,
            &p,
            policy_input("x", json!({"card": 4111111111111111u64}))
        )
        .await,
        Decision::Deny(_)
    ));
    // A 16-digit number that fails Luhn is not a card number.
    assert_eq!(
        decision(
            &rt,
            &p,
            policy_input("x", json!({"ref": "4111 1111 1111 1112"}))
        )
        .await,
        Decision::Allow
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pipeline_runs_claims_end_to_end() {
    let downstream = Downstream::start(200);
    let app = claims_app(&downstream.url("/claims/payouts"));
    pipeline_checks(app, &downstream).await;
}

/// What the claims app must do end to end, whatever its plugins are
/// written in: `app` posts approved payouts to `downstream`.
pub(crate) async fn pipeline_checks(app: evos::app::App, downstream: &Downstream) {
    let rt = runtime();
    app.load_into(&rt).expect("load app");
    let body = json!({"claims": [
        claim("C-1", "CL-1", 250.0, CALM),
        claim("C-2", "CL-2", 4000.0, CALM),
        // Some claims systems use the e-mail address as the claimant id: the
        // agent copies it into its action, and pii-guard must stop it.
        claim("C-3", "jane.doe@example.com", 300.0, CALM),
    ]});
    let report = pipeline::run(
        std::sync::Arc::new(rt.clone()),
        std::sync::Arc::new(app.clone()),
        "claims-webhook",
        body.to_string().into_bytes(),
        "application/json",
        &RunOptions {
            execute: true,
            ..Default::default()
        },
    )
    .await
    .expect("pipeline");
    assert_eq!(report.events.len(), 3, "{report:#?}");
    let by_id = |id: &str| {
        report
            .actions()
            .find(|a| a.action.event_id == id)
            .unwrap_or_else(|| panic!("no action for {id}"))
            .clone()
    };

    let small = by_id("C-1");
    assert_eq!(small.action.kind, "approve-payout");
    assert_eq!(
        small.policies.len(),
        2,
        "payout-limit and pii-guard both decide"
    );
    assert!(
        matches!(small.disposition, Disposition::Executed { .. }),
        "{small:?}"
    );

    let large = by_id("C-2");
    assert!(
        matches!(large.disposition, Disposition::Escalated { .. }),
        "{large:?}"
    );

    let pii = by_id("C-3");
    let Disposition::Denied { reasons } = &pii.disposition else {
        panic!("{pii:?}")
    };
    assert!(
        reasons.iter().any(|r| r.starts_with("pii-guard")),
        "{reasons:?}"
    );

    // Only the allowed action reached the downstream system.
    let got = downstream.requests();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].body.contains("C-1"));
    // One trace id per event, shared by its steps.
    assert!(report.events.iter().all(|e| e.event.trace_id.len() == 32));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tunable_fraud_score_scores_with_the_weights_in_its_manifest() {
    let rt = runtime();
    let fixed = crate::support::load(&rt, "fraud-score");
    let manifest =
        evos::Manifest::load(root().join("policies/evolve/fraud-score.toml")).expect("manifest");
    let bytes = crate::support::component("fraud-score-tunable");
    let tunable = rt
        .load(manifest.clone(), &bytes, "fraud-score-tunable")
        .expect("load");
    // The weights of fraud-score 1.0.0, from [config]: the same scores.
    for input in crate::support::fraud_traffic().into_iter().step_by(20) {
        let a = rt.call(&fixed, input.clone()).await.expect("call");
        let b = rt.call(&tunable, input).await.expect("call");
        let (Some(evos::CallOutput::Model(a)), Some(evos::CallOutput::Model(b))) =
            (&a.output, &b.output)
        else {
            panic!("{a:?} {b:?}")
        };
        assert_eq!(a.output, b.output);
        assert_eq!(b.model, "fraud-lr@1.0.0");
    }
    // Other weights, another model.
    let mut other = manifest.clone();
    let weights =
        std::fs::read_to_string(root().join("plugins/fraud-score/weights-1.3.0.json")).unwrap();
    other.set_config("weights", &weights).unwrap();
    other.set_config("model", "fraud-lr@1.3.0").unwrap();
    other.set_version("1.3.0").unwrap();
    let blind = rt.load(other, &bytes, "fraud-score-tunable").expect("load");
    let reference = crate::support::load_with(
        &rt,
        "fraud-score-blind",
        evos::Manifest::load(root().join("policies/rollouts/fraud-score-1.3.0.toml")).unwrap(),
    );
    let input = crate::support::fraud_traffic().remove(3);
    let a = rt.call(&blind, input.clone()).await.unwrap();
    let b = rt.call(&reference, input).await.unwrap();
    match (&a.output, &b.output) {
        (Some(evos::CallOutput::Model(a)), Some(evos::CallOutput::Model(b))) => {
            assert_eq!(a.output["score"], b.output["score"]);
        }
        other => panic!("{other:?}"),
    }
    // No weights: a clear guest error.
    let text = manifest.source.replace("weights = ", "unused = ");
    let bare = evos::Manifest::parse(&text, "bare", &root()).expect("manifest");
    let r = rt.load(bare, &bytes, "bare").expect("load");
    let report = rt
        .call(&r, crate::support::fraud_traffic().remove(0))
        .await
        .unwrap();
    assert!(
        report.outcome.summary().contains("[config] weights"),
        "{report:?}"
    );
}
