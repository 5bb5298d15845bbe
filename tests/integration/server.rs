//! `evos up` over real HTTP on 127.0.0.1: the pipeline, human review,
//! authorization, bad input and metrics.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use evos::app::App;
use evos::auth::Role;
use evos::server::{Host, ServerConfig};
use evos::store::StateStore;
use serde_json::{Value, json};

use crate::support::*;

struct Server {
    port: u16,
    host: Arc<Host>,
    admin: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: crate::support::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn start(downstream: &Downstream, tweak: impl FnOnce(&mut ServerConfig)) -> Server {
    start_app(claims_app(&downstream.url("/claims/payouts")), tweak).await
}

async fn start_app(app: evos::app::App, tweak: impl FnOnce(&mut ServerConfig)) -> Server {
    let dir = crate::support::tempdir("server");
    let mut config = ServerConfig::new(&dir, root().join("evos.toml"));
    config.engine.cache_dir = Some(root().join("target/evos-test-cache"));
    config.engine.max_instances = 64;
    tweak(&mut config);
    let (host, boot) = Host::bootstrap_with(config, app).await.expect("bootstrap");
    let token_file = boot
        .admin_token_file
        .expect("first start writes an admin token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file)
            .expect("token file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the admin token file must be private");
    }
    let admin = std::fs::read_to_string(token_file)
        .expect("token")
        .trim()
        .to_string();
    let (port, tx) = serve_on_loopback(host.clone()).await;
    Server {
        port,
        host,
        admin,
        stop: Some(tx),
        _dir: dir,
    }
}

async fn req(
    port: u16,
    method: &'static str,
    path: String,
    token: Option<String>,
    body: Vec<u8>,
    extra: Vec<(&'static str, String)>,
) -> (u16, String) {
    tokio::task::spawn_blocking(move || {
        let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
        http_request(port, method, &path, token.as_deref(), &body, &extra)
    })
    .await
    .expect("join")
}

pub(crate) fn claims() -> Vec<u8> {
    std::fs::read(root().join("plugins/claims-webhook/claims.json")).expect("claims")
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn claims_flow_through_pipeline_review_and_execution() {
    let downstream = Downstream::start(200);
    let s = start(&downstream, |_| {}).await;
    let ct = vec![
        ("content-type", "application/json".to_string()),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
        ),
    ];
    let (status, body) = req(
        s.port,
        "POST",
        "/v1/ingest/claims-webhook".into(),
        Some(s.admin.clone()),
        claims(),
        ct,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let r = json_of(&body);
    assert_eq!(
        r["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
        "the caller's trace is kept"
    );
    let actions: Vec<&Value> = r["report"]["events"]
        .as_array()
        .expect("events")
        .iter()
        .flat_map(|e| e["actions"].as_array().into_iter().flatten())
        .collect();
    let by_event = |id: &str| {
        actions
            .iter()
            .find(|a| a["action"]["event_id"] == id)
            .copied()
            .expect("action")
    };
    assert_eq!(
        by_event("C-1001")["status"],
        "executed",
        "{}",
        by_event("C-1001")
    );
    assert_eq!(by_event("C-1003")["status"], "denied");
    assert!(
        by_event("C-1003")["reasons"][0]
            .as_str()
            .unwrap_or("")
            .contains("e-mail")
    );
    let escalated = by_event("C-1002");
    assert_eq!(escalated["status"], "escalated");
    let review_id = escalated["review_id"].as_i64().expect("review id");
    // Only the allowed claim reached downstream so far (C-1004 is flagged
    // as fraud, which nothing guards: it is executed too).
    let before = downstream.requests().len();
    // The downstream sees the caller's trace and a key to drop repeats.
    let delivered = |claim: &str| {
        downstream
            .requests()
            .into_iter()
            .find(|r| r.body.contains(claim))
            .unwrap_or_else(|| panic!("{claim} not delivered"))
    };
    let c1001 = delivered("C-1001");
    assert!(
        c1001
            .header("traceparent")
            .is_some_and(|t| t.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")),
        "{:?}",
        c1001.headers
    );
    assert_eq!(c1001.header("idempotency-key"), Some("C-1001/0"));
    assert!(
        downstream
            .requests()
            .iter()
            .any(|r| r.body.contains("C-1001"))
    );
    assert!(
        !downstream
            .requests()
            .iter()
            .any(|r| r.body.contains("C-1002"))
    );

    // A reviewer approves: the action executes.
    let (_, reviewer) = s
        .host
        .tokens
        .create("rita", Role::Reviewer, "*", "test")
        .expect("token");
    let (status, body) = req(
        s.port,
        "GET",
        "/v1/reviews?status=pending".into(),
        Some(reviewer.clone()),
        vec![],
        vec![],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        json_of(&body)
            .as_array()
            .expect("list")
            .iter()
            .any(|r| r["id"] == review_id)
    );
    let (status, body) = req(
        s.port,
        "POST",
        format!("/v1/reviews/{review_id}/approve"),
        Some(reviewer.clone()),
        br#"{"comment":"checked the invoices"}"#.to_vec(),
        vec![],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let review = json_of(&body);
    assert_eq!(review["status"], "executed", "{review}");
    assert!(review["decided_by"].as_str().unwrap_or("").contains("rita"));
    assert_eq!(downstream.requests().len(), before + 1);
    let approved = downstream.requests().last().expect("request").clone();
    assert!(approved.body.contains("C-1002"));
    assert_eq!(approved.header("idempotency-key"), Some("C-1002/0"));
    assert!(
        approved
            .header("traceparent")
            .is_some_and(|t| t.contains("-4bf92f3577b34da6a3ce929d0e0e4736-")),
        "{:?}",
        approved.headers
    );
    // Deciding twice is refused.
    let (status, _) = req(
        s.port,
        "POST",
        format!("/v1/reviews/{review_id}/reject"),
        Some(reviewer),
        vec![],
        vec![],
    )
    .await;
    assert_eq!(status, 409);

    // Everything is audited and the chain verifies.
    let (status, body) = req(
        s.port,
        "GET",
        "/v1/audit/verify".into(),
        Some(s.admin.clone()),
        vec![],
        vec![],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = req(
        s.port,
        "GET",
        "/v1/audit".into(),
        Some(s.admin.clone()),
        vec![],
        vec![],
    )
    .await;
    let actions: Vec<String> = json_of(&body)
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["action"].as_str().map(String::from))
        .collect();
    for a in ["pipeline", "escalated", "review-approved", "executed"] {
        assert!(
            actions.iter().any(|x| x == a),
            "no {a} entry in {actions:?}"
        );
    }
    // The event's entry explains the decision: the agent's rationale, the
    // payload's digest, the model's version and score.
    let entries = json_of(&body);
    let event = entries
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["action"] == "pipeline" && e["subject"] == "event/C-1002")
        .expect("pipeline entry of C-1002");
    let action = &event["detail"]["actions"][0];
    assert!(
        action["rationale"]
            .as_str()
            .is_some_and(|r| r.starts_with("Fraud score")),
        "{event}"
    );
    assert_eq!(action["payload_sha256"].as_str().map(str::len), Some(64));
    let model = event["detail"]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .flat_map(|s| s["nested"].as_array().into_iter().flatten())
        .find(|n| n["plugin"] == "fraud-score")
        .expect("the model step");
    assert_eq!(model["version"], "1.0.0");
    assert!(
        model["model_output"]["output"]["score"].is_number(),
        "{model}"
    );

    // Metrics carry per-version series after the traffic.
    let (status, text) = req(
        s.port,
        "GET",
        "/metrics".into(),
        Some(s.admin.clone()),
        vec![],
        vec![],
    )
    .await;
    assert_eq!(status, 200);
    assert!(text.contains("evos_calls_total{plugin=\"fraud-score\",version=\"1.0.0\",role=\"stable\",outcome=\"ok\"} 4"), "{text}");
    assert!(
        text.contains(
            "evos_call_duration_seconds_count{plugin=\"claims-triage\",version=\"1.0.0\"} 4"
        ),
        "{text}"
    );
    assert!(text.contains("evos_review_queue_depth 0"), "{text}");
    // The approved action counts as executed, with the two executed at once.
    assert!(
        text.contains("evos_pipeline_actions_total{disposition=\"executed\"} 3"),
        "{text}"
    );
    // Every metric is described.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        let family = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|f| text.contains(&format!("# TYPE {f} histogram")))
            .unwrap_or(name);
        assert!(
            text.contains(&format!("# HELP {family} "))
                && text.contains(&format!("# TYPE {family} ")),
            "{family} has no HELP or TYPE"
        );
    }
    assert!(
        text.contains("evos_model_usage_units_total{plugin=\"fraud-score\""),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn authorization_matrix_scopes_and_revocation() {
    let downstream = Downstream::start(200);
    let s = start(&downstream, |_| {}).await;
    let mut tokens = std::collections::BTreeMap::new();
    for role in [
        Role::Admin,
        Role::Deployer,
        Role::Invoker,
        Role::Reviewer,
        Role::Auditor,
    ] {
        let (_, t) = s
            .host
            .tokens
            .create(role.as_str(), role, "*", "test")
            .expect("token");
        tokens.insert(role.as_str(), t);
    }
    let sample =
        std::fs::read(root().join("plugins/payout-limit/invoke-input.json")).expect("sample");
    // (method, path, body, roles allowed)
    let endpoints: Vec<(&str, &str, Vec<u8>, &[&str])> = vec![
        ("GET", "/metrics", vec![], &["admin", "auditor"]),
        (
            "GET",
            "/v1/plugins",
            vec![],
            &["admin", "deployer", "auditor"],
        ),
        (
            "GET",
            "/v1/plugins/payout-limit/history",
            vec![],
            &["admin", "deployer", "auditor"],
        ),
        (
            "POST",
            "/v1/plugins/payout-limit/invoke",
            sample.clone(),
            &["admin", "invoker"],
        ),
        ("GET", "/v1/reviews", vec![], &["admin", "reviewer"]),
        ("GET", "/v1/audit", vec![], &["admin", "auditor"]),
        ("GET", "/v1/audit/verify", vec![], &["admin", "auditor"]),
        (
            "POST",
            "/v1/plugins/payout-limit/promote",
            vec![],
            &["admin", "deployer"],
        ),
    ];
    for (method, path, body, allowed) in &endpoints {
        let (status, text) =
            req(s.port, method, path.to_string(), None, body.clone(), vec![]).await;
        assert_eq!(status, 401, "{method} {path} without a token: {text}");
        for (role, token) in &tokens {
            let (status, text) = req(
                s.port,
                method,
                path.to_string(),
                Some(token.clone()),
                body.clone(),
                vec![],
            )
            .await;
            if allowed.contains(role) {
                // promote has no canary to promote: the request is allowed but refused (409).
                assert!(
                    status == 200 || status == 409,
                    "{role} {method} {path}: {status} {text}"
                );
            } else {
                assert_eq!(status, 403, "{role} {method} {path}: {text}");
                assert_eq!(json_of(&text)["error"]["code"], "forbidden");
            }
        }
    }
    // A scoped invoker reaches its plugins only.
    let (_, scoped) = s
        .host
        .tokens
        .create("payouts", Role::Invoker, "payout-*", "test")
        .expect("token");
    let (status, _) = req(
        s.port,
        "POST",
        "/v1/plugins/payout-limit/invoke".into(),
        Some(scoped.clone()),
        sample.clone(),
        vec![],
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = req(
        s.port,
        "POST",
        "/v1/ingest/claims-webhook".into(),
        Some(scoped.clone()),
        claims(),
        vec![],
    )
    .await;
    assert_eq!(status, 403);
    // A revoked token is refused.
    let id = scoped.split('_').nth(1).expect("id").to_string();
    s.host.tokens.revoke(&id, "test").expect("revoke");
    let (status, _) = req(
        s.port,
        "POST",
        "/v1/plugins/payout-limit/invoke".into(),
        Some(scoped),
        sample,
        vec![],
    )
    .await;
    assert_eq!(status, 401);
    // Refusals are audited.
    let entries = s.host.registry.store().audit_list(0, None).expect("audit");
    assert!(
        entries
            .iter()
            .filter(|e| e.action == "access-refused")
            .count()
            >= 10
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_clear_status_codes() {
    let downstream = Downstream::start(200);
    let s = start(&downstream, |c| {
        c.max_body_bytes = 64 * 1024;
        c.queue_per_plugin = 0;
    })
    .await;
    let t = Some(s.admin.clone());
    let (status, _) = req(
        s.port,
        "POST",
        "/v1/ingest/claims-webhook".into(),
        t.clone(),
        vec![b' '; 200 * 1024],
        vec![],
    )
    .await;
    assert_eq!(status, 413, "oversized body");
    assert_eq!(
        json_of(&body_of_413(s.port, &s.admin).await)["error"]["code"],
        "too-large",
        "every error has the documented JSON shape"
    );
    let (status, body) = req(
        s.port,
        "POST",
        "/v1/plugins/payout-limit/invoke".into(),
        t.clone(),
        b"{not json".to_vec(),
        vec![],
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        json_of(&body)["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("malformed JSON"),
        "{body}"
    );
    let (status, body) = req(
        s.port,
        "POST",
        "/v1/plugins/payout-limit/invoke".into(),
        t.clone(),
        br#"{"action": 1}"#.to_vec(),
        vec![],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = req(
        s.port,
        "POST",
        "/v1/ingest/no-such-connector".into(),
        t.clone(),
        claims(),
        vec![],
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = req(
        s.port,
        "GET",
        "/v1/plugins/nope".into(),
        t.clone(),
        vec![],
        vec![],
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = req(
        s.port,
        "GET",
        "/v1/nothing-here".into(),
        t.clone(),
        vec![],
        vec![],
    )
    .await;
    assert_eq!(status, 404);
    // A connector refusing its input is a 422 with the reason.
    let (status, body) = req(
        s.port,
        "POST",
        "/v1/ingest/claims-webhook".into(),
        t.clone(),
        br#"{"claim_id": ""}"#.to_vec(),
        vec![("content-type", "application/json".into())],
    )
    .await;
    assert_eq!(status, 422, "{body}");

    // Concurrency: deploy a slow plugin allowing one call at a time; a second
    // concurrent call is refused with 429.
    let text = manifest_text("spin-forever").replace(
        "timeout = \"300ms\"",
        "timeout = \"2s\"\nmax-concurrency = 1",
    );
    let bytes = component("spin-forever");
    let (status, body) = req(
        s.port,
        "POST",
        "/v1/components".into(),
        t.clone(),
        bytes,
        vec![],
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let digest = json_of(&body)["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    let deploy = serde_json::to_vec(&json!({"manifest": text, "digest": digest})).expect("json");
    let (status, body) = req(
        s.port,
        "POST",
        "/v1/plugins/spin-forever/deploy".into(),
        t.clone(),
        deploy,
        vec![],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let event = std::fs::read(root().join("plugins/adversarial/spin-forever/invoke-input.json"))
        .expect("sample");
    let first = {
        let (t, event) = (t.clone(), event.clone());
        tokio::spawn(req(
            s.port,
            "POST",
            "/v1/plugins/spin-forever/invoke".into(),
            t,
            event,
            vec![],
        ))
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = req(
        s.port,
        "POST",
        "/v1/plugins/spin-forever/invoke".into(),
        t.clone(),
        event,
        vec![],
    )
    .await;
    assert_eq!(status, 429, "{body}");
    let (status, body) = first.await.expect("join");
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_of(&body)["outcome"], "timeout");
}

#[tokio::test(flavor = "multi_thread")]
async fn circuit_breaker_opens_on_a_failing_downstream_and_closes_after_recovery() {
    let downstream = Downstream::start(503);
    let s = start(&downstream, |c| {
        c.breaker = evos::breaker::BreakerConfig {
            failure_threshold: 2,
            cooldown: Duration::from_millis(300),
            retries: 1,
            base_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(20),
        };
    })
    .await;
    let claim = |id: &str| {
        serde_json::to_vec(&json!({"claim_id": id, "claimant_id": format!("CL-{id}"), "amount": 120.0,
            "policy_number": "POL-1", "incident": "Scratched bumper in the supermarket car park; photos attached.", "region": "north"}))
        .expect("json")
    };
    let ingest = |id: &'static str| {
        req(
            s.port,
            "POST",
            "/v1/ingest/claims-webhook".into(),
            Some(s.admin.clone()),
            claim(id),
            vec![("content-type", "application/json".to_string())],
        )
    };
    let status_of = |body: &str| json_of(body)["report"]["events"][0]["actions"][0].clone();
    // Two failed executions (each retried once) open the breaker.
    for id in ["B-1", "B-2"] {
        let (code, body) = ingest(id).await;
        assert_eq!(code, 200, "{body}");
        let a = status_of(&body);
        assert_eq!(a["status"], "failed", "{a}");
        assert!(a["error"].as_str().unwrap_or("").contains("503"), "{a}");
    }
    assert_eq!(
        downstream.requests().len(),
        4,
        "each execution was tried twice"
    );
    let (_, body) = ingest("B-3").await;
    let a = status_of(&body);
    assert!(
        a["error"].as_str().unwrap_or("").contains("circuit open"),
        "{a}"
    );
    assert_eq!(
        downstream.requests().len(),
        4,
        "an open breaker sends nothing downstream"
    );
    let (_, metrics) = req(
        s.port,
        "GET",
        "/metrics".into(),
        Some(s.admin.clone()),
        vec![],
        vec![],
    )
    .await;
    assert!(
        metrics.contains("evos_breaker_state{connector=\"claims-webhook\",state=\"open\"} 2"),
        "{metrics}"
    );

    // The downstream recovers; after the cooldown one trial closes the breaker.
    downstream.set_status(200);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let (_, body) = ingest("B-4").await;
    assert_eq!(status_of(&body)["status"], "executed", "{body}");
    let (_, metrics) = req(
        s.port,
        "GET",
        "/metrics".into(),
        Some(s.admin.clone()),
        vec![],
        vec![],
    )
    .await;
    assert!(
        metrics.contains("evos_breaker_state{connector=\"claims-webhook\",state=\"closed\"} 0"),
        "{metrics}"
    );
    let entries = s.host.registry.store().audit_list(0, None).expect("audit");
    let changes: Vec<String> = entries
        .iter()
        .filter(|e| e.action == "breaker")
        .map(|e| e.detail["to"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(changes, ["open", "half-open", "closed"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn pending_reviews_survive_a_restart() {
    let downstream = Downstream::start(200);
    let dir = crate::support::tempdir("restart");
    let config = || {
        let mut c = ServerConfig::new(&dir, root().join("evos.toml"));
        c.engine.cache_dir = Some(root().join("target/evos-test-cache"));
        c.engine.max_instances = 32;
        c
    };
    let app = || {
        let mut app = App::load(root().join("evos.toml")).expect("app");
        for p in &mut app.plugins {
            if p.name == "claims-webhook" {
                p.manifest
                    .set_config("endpoint", &downstream.url("/claims/payouts"))
                    .expect("config");
            }
        }
        app
    };
    let review_id = {
        let (host, _) = Host::bootstrap_with(config(), app())
            .await
            .expect("bootstrap");
        let options = evos::pipeline::RunOptions {
            execute: true,
            reviews: Some(host.reviews.clone()),
            audit: Some(host.registry.store().clone()),
            ..Default::default()
        };
        let report = evos::pipeline::run(
            host.registry.clone(),
            host.app.clone(),
            "claims-webhook",
            claims(),
            "application/json",
            &options,
        )
        .await
        .expect("pipeline");
        let id = report
            .actions()
            .find_map(|a| match &a.disposition {
                evos::pipeline::Disposition::Escalated { review_id, .. } => *review_id,
                _ => None,
            })
            .expect("an escalated action");
        host.registry.flush_stats().expect("flush");
        id
    };
    // A new host on the same data directory still has the review pending,
    // and approving it executes the action.
    let (host, boot) = Host::bootstrap_with(config(), app())
        .await
        .expect("restart");
    assert!(
        boot.deployed.is_empty() && boot.admin_token_file.is_none(),
        "nothing is redeployed or recreated"
    );
    let pending = host
        .reviews
        .list(Some(evos::review::ReviewStatus::Pending))
        .expect("list");
    assert_eq!(
        pending.iter().map(|r| r.id).collect::<Vec<_>>(),
        [review_id]
    );
    let review = host
        .reviews
        .decide(review_id, true, "rita", None)
        .expect("decide");
    let review = evos::pipeline::carry_out(
        host.registry.as_ref(),
        &host.reviews,
        &review,
        Some(&host.breakers),
    )
    .await
    .expect("carry out");
    assert_eq!(review.status, evos::review::ReviewStatus::Executed);
    assert!(
        downstream
            .requests()
            .iter()
            .any(|r| r.body.contains("C-1002"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_are_cut_off() {
    let downstream = Downstream::start(200);
    let s = start(&downstream, |c| {
        c.header_timeout = Duration::from_millis(200)
    })
    .await;
    let port = s.port;
    let closed = tokio::task::spawn_blocking(move || {
        // Send half a request line and stall.
        let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        c.write_all(b"GET /healthz HTT").expect("write");
        c.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let started = std::time::Instant::now();
        let mut buf = [0u8; 256];
        let n = c.read(&mut buf).unwrap_or(0);
        (
            n,
            String::from_utf8_lossy(&buf[..n]).to_string(),
            started.elapsed(),
        )
    })
    .await
    .expect("join");
    let (_, reply, waited) = closed;
    assert!(
        waited < Duration::from_secs(4),
        "the server held a stalled client for {waited:?}"
    );
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 408"),
        "{reply}"
    );
    // The server still answers others.
    let (status, _) = req(s.port, "GET", "/healthz".into(), None, vec![], vec![]).await;
    assert_eq!(status, 200);
}

/// The body of an oversized ingest (the API's error shape).
async fn body_of_413(port: u16, admin: &str) -> String {
    let (status, body) = req(
        port,
        "POST",
        "/v1/ingest/claims-webhook".into(),
        Some(admin.to_string()),
        vec![b' '; 200 * 1024],
        vec![],
    )
    .await;
    assert_eq!(status, 413);
    body
}

/// Regression: a CLI `deploy`/`promote`/`rollback` on the data directory
/// of a running host was ignored by it until a restart (the canary then
/// went live unannounced). The host now picks changes up while serving,
/// and a change decided on a deployment another process has since changed
/// is refused instead of overwriting it.
#[tokio::test(flavor = "multi_thread")]
async fn changes_made_by_another_process_go_live_without_a_restart() {
    let downstream = Downstream::start(200);
    let s = start(&downstream, |_| {}).await;
    let other = evos::registry::Registry::open(
        s.host.registry.store().dir(),
        evos::EngineConfig {
            cache_dir: Some(root().join("target/evos-test-cache")),
            max_instances: 16,
            ..Default::default()
        },
        std::collections::BTreeMap::new(),
    )
    .expect("second process's registry");
    let manifest = evos::Manifest::load(root().join("policies/versions/fraud-score-1.1.0.toml"))
        .expect("1.1.0");
    other
        .deploy(
            manifest,
            &component("fraud-score-retrained"),
            "1.1.0",
            Some(30),
            "cli:other",
        )
        .await
        .expect("canary from the other process");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let live = loop {
        let route = s.host.registry.route("fraud-score").expect("route");
        if let Some((canary, weight)) = &route.canary {
            break (canary.plugin.version().to_string(), *weight);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the host never picked up the canary"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(live, ("1.1.0".to_string(), 30));

    // The host promotes through its API; the other process, still seeing
    // the canary, is refused rather than undoing the promotion.
    let (status, body) = req(
        s.port,
        "POST",
        "/v1/plugins/fraud-score/promote".into(),
        Some(s.admin.clone()),
        vec![],
        vec![],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let refused = other
        .rollback("fraud-score", None, "cli:other")
        .await
        .expect_err("stale rollback");
    assert!(
        refused.to_string().contains("changed by another process"),
        "{refused}"
    );
    let stable = s.host.registry.route("fraud-score").expect("route");
    assert_eq!(stable.stable.plugin.version(), "1.1.0");
    assert!(stable.canary.is_none());
}

/// Regression: per-version stats were written only at shutdown or on a
/// swap, so `status` from another process was stale and a kill -9 lost
/// every count. They are persisted every second while serving.
#[tokio::test(flavor = "multi_thread")]
async fn call_stats_are_persisted_while_serving() {
    let downstream = Downstream::start(200);
    let s = start(&downstream, |_| {}).await;
    let sample =
        std::fs::read(root().join("plugins/payout-limit/invoke-input.json")).expect("input");
    for _ in 0..5 {
        let (status, body) = req(
            s.port,
            "POST",
            "/v1/plugins/payout-limit/invoke".into(),
            Some(s.admin.clone()),
            sample.clone(),
            vec![],
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let version = s
        .host
        .registry
        .route("payout-limit")
        .expect("route")
        .stable
        .version_id;
    let reader = evos::store::SqliteStore::open(s.host.registry.store().dir()).expect("store");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (outcomes, _) = reader.stats(version).expect("stats");
        let calls: u64 = outcomes.values().sum();
        if calls == 5 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "persisted calls stayed at {calls}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shadow_deployed_through_the_api_shows_its_agreement_in_status_and_metrics() {
    let downstream = Downstream::start(200);
    let s = start(&downstream, |_| {}).await;
    let t = Some(s.admin.clone());
    let upload = |name: &'static str| {
        let t = t.clone();
        async move {
            let (status, body) = req(
                s.port,
                "POST",
                "/v1/components".into(),
                t,
                component(name),
                vec![],
            )
            .await;
            assert_eq!(status, 201, "{body}");
            json_of(&body)["digest"]
                .as_str()
                .expect("digest")
                .to_string()
        }
    };
    let shadow = std::fs::read_to_string(root().join("policies/versions/fraud-score-1.1.0.toml"))
        .expect("manifest");
    let deploy = |body: Value| {
        let t = t.clone();
        async move {
            req(
                s.port,
                "POST",
                "/v1/plugins/fraud-score/deploy".into(),
                t,
                serde_json::to_vec(&body).expect("json"),
                vec![],
            )
            .await
        }
    };
    // The app file deployed fraud-score 1.0.0 as the stable version.
    let digest = upload("fraud-score-retrained").await;
    // Canary and shadow at once, or a share without a shadow: refused.
    let (status, body) =
        deploy(json!({"manifest": shadow, "digest": digest, "canary": 10, "shadow": true})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = deploy(json!({"manifest": shadow, "digest": digest, "share": 10})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) =
        deploy(json!({"manifest": shadow, "digest": digest, "shadow": true, "share": 100})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_of(&body)["action"], "shadow");

    let input = std::fs::read(root().join("plugins/fraud-score/invoke-input.json")).expect("input");
    for _ in 0..5 {
        let (status, body) = req(
            s.port,
            "POST",
            "/v1/plugins/fraud-score/invoke".into(),
            t.clone(),
            input.clone(),
            vec![],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            json_of(&body)["version"],
            "1.0.0",
            "the live version answers"
        );
    }
    let mut compared = 0;
    for _ in 0..500 {
        let (status, body) = req(
            s.port,
            "GET",
            "/v1/plugins/fraud-score".into(),
            t.clone(),
            vec![],
            vec![],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let v = json_of(&body);
        let shadow = &v[0]["shadow"];
        assert_eq!(shadow["version"], "1.1.0", "{v}");
        compared = shadow["agreement"][0]["compared"].as_u64().unwrap_or(0);
        if compared == 5 {
            assert_eq!(shadow["agreement"][0]["live_version"], "1.0.0");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(compared, 5, "the shadow compared every call");
    let (status, body) = req(s.port, "GET", "/metrics".into(), t.clone(), vec![], vec![]).await;
    assert_eq!(status, 200);
    assert!(
        body.contains(
            "evos_shadow_compared_total{plugin=\"fraud-score\",live_version=\"1.0.0\",shadow_version=\"1.1.0\"} 5"
        ),
        "{body}"
    );
    assert!(
        body.contains("evos_calls_total{plugin=\"fraud-score\",version=\"1.1.0\",role=\"shadow\"")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn review_decisions_and_feedback_become_labels_each_version_is_judged_by() {
    let downstream = Downstream::start(200);
    let s = start(&downstream, |_| {}).await;
    let ct = vec![("content-type", "application/json".to_string())];
    let (status, body) = req(
        s.port,
        "POST",
        "/v1/ingest/claims-webhook".into(),
        Some(s.admin.clone()),
        claims(),
        ct,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, reviewer) = s
        .host
        .tokens
        .create("rita", Role::Reviewer, "*", "test")
        .expect("token");
    // C-1002 (a large payout) waits for a human: approving it labels it.
    let review_id = s
        .host
        .reviews
        .list(None)
        .expect("reviews")
        .into_iter()
        .find(|r| r.event.id == "C-1002")
        .expect("C-1002 escalated")
        .id;
    let (status, body) = req(
        s.port,
        "POST",
        format!("/v1/reviews/{review_id}/approve"),
        Some(reviewer.clone()),
        vec![],
        vec![],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // C-1001 was paid without review; it turns out to be fraud.
    let feedback = |event: &str, body: Value| {
        let reviewer = reviewer.clone();
        let path = format!("/v1/events/{event}/feedback");
        async move {
            req(
                s.port,
                "POST",
                path,
                Some(reviewer),
                serde_json::to_vec(&body).expect("json"),
                vec![],
            )
            .await
        }
    };
    let (status, body) = feedback(
        "C-1001",
        json!({"label": "fraud", "comment": "staged accident"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(json_of(&body)["source"], "feedback");
    let (status, body) = feedback("C-9999", json!({"label": "fraud"})).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = feedback("C-1001", json!({"label": "Fraud!"})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = feedback("C-1001", json!({})).await;
    assert_eq!(status, 400, "{body}");
    // An invoker may not label.
    let (_, invoker) = s
        .host
        .tokens
        .create("ci", Role::Invoker, "*", "test")
        .expect("token");
    let (status, _) = req(
        s.port,
        "POST",
        "/v1/events/C-1001/feedback".into(),
        Some(invoker),
        br#"{"label": "legit"}"#.to_vec(),
        vec![],
    )
    .await;
    assert_eq!(status, 403);

    let (status, body) = req(
        s.port,
        "GET",
        "/v1/events/C-1001/labels".into(),
        Some(reviewer.clone()),
        vec![],
        vec![],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let labels = json_of(&body);
    assert_eq!(labels.as_array().map(Vec::len), Some(1), "{labels}");
    assert_eq!(labels[0]["label"], "fraud");
    assert!(labels[0]["actor"].as_str().unwrap_or("").contains("rita"));

    // fraud-score answered `negative` on both: right for the approved
    // payout, wrong for the fraud.
    let status = s.host.registry.status(Some("fraud-score")).expect("status");
    let humans = status[0].stable.humans.as_ref().expect("humans");
    assert_eq!(
        (humans.labeled, humans.compared, humans.agreed),
        (2, 2, 1),
        "{humans:?}"
    );
    assert_eq!(
        humans.confusion.get("negative -> fraud"),
        Some(&1),
        "{humans:?}"
    );
    assert_eq!(
        humans.confusion.get("negative -> approve"),
        Some(&1),
        "{humans:?}"
    );
    let agent = s
        .host
        .registry
        .status(Some("claims-triage"))
        .expect("status");
    let agent = agent[0].stable.humans.as_ref().expect("agent humans");
    assert_eq!(
        (agent.compared, agent.agreed),
        (1, 1),
        "only approve/reject judge a proposal"
    );

    let (_, metrics) = req(
        s.port,
        "GET",
        "/metrics".into(),
        Some(s.admin.clone()),
        vec![],
        vec![],
    )
    .await;
    assert!(
        metrics.contains("evos_human_agreement_ratio{plugin=\"fraud-score\",version=\"1.0.0\",role=\"stable\"} 0.5"),
        "{metrics}"
    );
    // The labels and decisions are in the data directory: another process
    // reading it judges the same.
    let other = evos::store::SqliteStore::open(s.host.registry.store().dir()).expect("store");
    let again = evos::labels::by_version(&other, None).expect("labels");
    assert_eq!(
        again
            .values()
            .find(|h| h.confusion.contains_key("negative -> fraud")),
        Some(humans)
    );
    let feedback_entries = s
        .host
        .registry
        .store()
        .audit_list(0, None)
        .expect("audit")
        .into_iter()
        .filter(|e| e.action == "feedback")
        .count();
    assert_eq!(feedback_entries, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn recorded_traffic_is_replayed_through_the_api() {
    let downstream = Downstream::start(200);
    let dir = crate::support::tempdir("server-replay");
    let app_path = crate::recording::app_file(&dir, "sample = { \"*\" = 1.0 }");
    let app = crate::recording::load_app(&app_path, &downstream.url("/claims/payouts"));
    let s = start_app(app, |_| {}).await;
    let admin = Some(s.admin.clone());
    let (status, body) = req(
        s.port,
        "POST",
        "/v1/ingest/claims-webhook".into(),
        admin.clone(),
        claims(),
        vec![("content-type", "application/json".into())],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let events = json_of(&body)["report"]["events"]
        .as_array()
        .map_or(0, Vec::len);
    assert!(events > 0);
    let replay = |token: Option<String>, plugin: &'static str, body: Value| async move {
        req(
            s.port,
            "POST",
            format!("/v1/plugins/{plugin}/replay"),
            token,
            serde_json::to_vec(&body).expect("json"),
            vec![],
        )
        .await
    };
    // The stable version against its own recorded answers: a
    // deterministic model agrees with every one.
    let (status, body) = replay(
        admin.clone(),
        "fraud-score",
        json!({"candidate": "1.0.0", "since": "1h"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let report = json_of(&body);
    assert_eq!(report["replayed"], events, "{report}");
    assert_eq!(report["agreement"], 1.0, "{report}");
    assert_eq!(report["changed"], 0, "{report}");
    // Deploy permission, in the plugin's scope.
    let (_, reviewer) = s
        .host
        .tokens
        .create("reviewer", Role::Reviewer, "*", "test")
        .expect("token");
    let (_, other) = s
        .host
        .tokens
        .create("deployer", Role::Deployer, "payout-*", "test")
        .expect("token");
    for token in [reviewer, other] {
        let (status, body) =
            replay(Some(token), "fraud-score", json!({"candidate": "1.0.0"})).await;
        assert_eq!(status, 403, "{body}");
    }
    let (status, body) = replay(admin.clone(), "fraud-score", json!({})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("candidate"), "{body}");
    let (status, body) = replay(admin.clone(), "fraud-score", json!({"candidate": "7.0.0"})).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = replay(
        admin,
        "fraud-score",
        json!({"candidate": "1.0.0", "since": "next tuesday"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
}
