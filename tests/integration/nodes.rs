//! Two evos nodes sharing one PostgreSQL database (a real server the test
//! starts on 127.0.0.1): a deployment change on one is live on the other
//! at once, a token revoked on one is refused by the other, and of two
//! reviewers approving the same review on two nodes exactly one wins and
//! the action is carried out once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use evos::auth::Role;
use evos::server::{Host, ServerConfig};
use serde_json::Value;

use crate::support::*;

struct Node {
    port: u16,
    host: Arc<Host>,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: TempDir,
}

/// A node serving `app` over the shared database at `url`, with a
/// directory of its own.
async fn node(url: &str, app: evos::app::App) -> (Node, Option<String>) {
    let dir = tempdir("node");
    let mut config = ServerConfig::new(&dir, root().join("evos.toml"));
    config.store = Some(url.to_string());
    config.engine.cache_dir = Some(root().join("target/evos-test-cache"));
    config.engine.max_instances = 64;
    let (host, boot) = Host::bootstrap_with(config, app).await.expect("bootstrap");
    let admin = boot.admin_token_file.map(|f| {
        std::fs::read_to_string(f)
            .expect("token")
            .trim()
            .to_string()
    });
    let (port, stop) = serve_on_loopback(host.clone()).await;
    (
        Node {
            port,
            host,
            _stop: stop,
            _dir: dir,
        },
        admin,
    )
}

async fn two_nodes(url: &str, downstream: &Downstream) -> (Node, Node, String) {
    let endpoint = downstream.url("/claims/payouts");
    let (a, admin) = node(url, claims_app(&endpoint)).await;
    let (b, second) = node(url, claims_app(&endpoint)).await;
    assert!(
        second.is_none(),
        "the second node finds the first one's tokens and creates none"
    );
    (a, b, admin.expect("the first node creates the admin token"))
}

async fn req(
    port: u16,
    method: &'static str,
    path: String,
    token: &str,
    body: Vec<u8>,
) -> (u16, String) {
    let token = token.to_string();
    tokio::task::spawn_blocking(move || {
        http_request(
            port,
            method,
            &path,
            Some(&token),
            &body,
            &[("content-type", "application/json")],
        )
    })
    .await
    .expect("join")
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Ingest the sample claims on `node`; the id of the review the escalated
/// one (C-1002) waits in.
async fn escalated_review(node: &Node, admin: &str) -> i64 {
    let claims = std::fs::read(root().join("plugins/claims-webhook/claims.json")).expect("claims");
    let (status, body) = req(
        node.port,
        "POST",
        "/v1/ingest/claims-webhook".into(),
        admin,
        claims,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    json_of(&body)["report"]["events"]
        .as_array()
        .expect("events")
        .iter()
        .flat_map(|e| e["actions"].as_array().into_iter().flatten())
        .find(|a| a["status"] == "escalated")
        .and_then(|a| a["review_id"].as_i64())
        .expect("an escalated action")
}

fn canary_of(node: &Node) -> Option<(String, u8)> {
    node.host.registry.route("fraud-score").and_then(|r| {
        r.canary
            .as_ref()
            .map(|(c, w)| (c.plugin.version().to_string(), *w))
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deployment_on_one_node_is_live_on_the_other_at_once() {
    let pg = PgServer::start();
    let url = pg.database();
    let downstream = Downstream::start(200);
    let (a, b, admin) = two_nodes(&url, &downstream).await;
    let manifest = evos::Manifest::load(root().join("policies/versions/fraud-score-1.1.0.toml"))
        .expect("1.1.0");
    let bytes = component("fraud-score-retrained");

    // Canaries deployed and rolled back on A: each change is served by B.
    let mut delays = Vec::new();
    for weight in [10u8, 30, 50] {
        for deploy in [true, false] {
            let started = Instant::now();
            let expected = if deploy {
                a.host
                    .registry
                    .deploy(manifest.clone(), &bytes, "1.1.0", Some(weight), "node-a")
                    .await
                    .expect("canary on A");
                Some(("1.1.0".to_string(), weight))
            } else {
                a.host
                    .registry
                    .rollback("fraud-score", None, "node-a")
                    .await
                    .expect("rollback on A");
                None
            };
            while canary_of(&b) != expected {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "B never served {expected:?}: {:?}",
                    canary_of(&b)
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            delays.push(started.elapsed());
        }
    }
    a.host
        .registry
        .deploy(manifest.clone(), &bytes, "1.1.0", Some(20), "node-a")
        .await
        .expect("canary on A");
    while canary_of(&b).is_none() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    delays.sort();
    assert!(
        delays[delays.len() / 2] < Duration::from_secs(1),
        "B picks changes up within a second: {delays:?}"
    );

    // A promotion through B's API is live on A, and B's history is A's.
    let (status, body) = req(
        b.port,
        "POST",
        "/v1/plugins/fraud-score/promote".into(),
        &admin,
        vec![],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let started = Instant::now();
    loop {
        let route = a.host.registry.route("fraud-score").expect("route");
        if route.canary.is_none() && route.stable.plugin.version() == "1.1.0" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "A never promoted"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let history = a
        .host
        .registry
        .store()
        .history("fraud-score")
        .expect("history");
    let actions: Vec<&str> = history.iter().map(|h| h.action.as_str()).collect();
    assert_eq!(actions.first(), Some(&"deploy"));
    assert_eq!(actions.last(), Some(&"promote"));

    // A token revoked on A is refused by B within a second.
    let (token, secret) = a
        .host
        .tokens
        .create("auditor", Role::Auditor, "*", "test")
        .expect("token");
    let (status, _) = req(b.port, "GET", "/v1/audit".into(), &secret, vec![]).await;
    assert_eq!(status, 200);
    a.host.tokens.revoke(&token.id, "test").expect("revoke");
    let started = Instant::now();
    loop {
        let (status, _) = req(b.port, "GET", "/v1/audit".into(), &secret, vec![]).await;
        if status == 401 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "B still accepts a token revoked on A"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Both nodes' entries are one chain, verified from either node.
    for n in [&a, &b] {
        let v = n.host.registry.store().audit_verify().expect("verify");
        assert!(v.intact && v.anchored, "{v:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_reviewers_approving_on_two_nodes_carry_the_action_out_once() {
    let pg = PgServer::start();
    let url = pg.database();
    let downstream = Downstream::start(200);
    let (a, b, admin) = two_nodes(&url, &downstream).await;
    let review_id = escalated_review(&a, &admin).await;
    let escalated_claim = "C-1002";
    assert!(
        !downstream
            .requests()
            .iter()
            .any(|r| r.body.contains(escalated_claim))
    );

    // Two reviewers approve at once, one on each node.
    let (_, rita) = a
        .host
        .tokens
        .create("rita", Role::Reviewer, "*", "test")
        .expect("token");
    let (_, rob) = a
        .host
        .tokens
        .create("rob", Role::Reviewer, "*", "test")
        .expect("token");
    let path = format!("/v1/reviews/{review_id}/approve");
    let (on_a, on_b) = tokio::join!(
        req(a.port, "POST", path.clone(), &rita, b"{}".to_vec()),
        req(b.port, "POST", path.clone(), &rob, b"{}".to_vec()),
    );
    let statuses = [on_a.0, on_b.0];
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "exactly one approval wins: {on_a:?} {on_b:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        1,
        "the other is refused as already decided: {on_a:?} {on_b:?}"
    );
    let loser = if on_a.0 == 200 { &on_b.1 } else { &on_a.1 };
    assert!(loser.contains("already"), "{loser}");

    // The action was carried out once, with its idempotency key.
    let delivered: Vec<_> = downstream
        .requests()
        .into_iter()
        .filter(|r| r.body.contains(escalated_claim))
        .collect();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(
        delivered[0].header("idempotency-key"),
        Some(&*format!("{escalated_claim}/0"))
    );
    let review = b
        .host
        .reviews
        .get(review_id)
        .expect("read")
        .expect("review");
    assert_eq!(review.status, evos::review::ReviewStatus::Executed);
    let entries = a.host.registry.store().audit_list(0, None).expect("audit");
    let subject = format!("review/{review_id}");
    let count = |action: &str| {
        entries
            .iter()
            .filter(|e| e.subject == subject && e.action == action)
            .count()
    };
    assert_eq!(count("review-approved"), 1);
    assert_eq!(count("executed"), 1);
    for n in [&a, &b] {
        let v = n.host.registry.store().audit_verify().expect("verify");
        assert!(v.intact && v.anchored, "{v:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_failing_on_calls_spread_over_two_nodes_is_rolled_back_once() {
    let pg = PgServer::start();
    let url = pg.database();
    let downstream = Downstream::start(200);
    let (a, b, _) = two_nodes(&url, &downstream).await;
    let manifest = evos::Manifest::load(root().join("policies/versions/fraud-score-1.2.0.toml"))
        .expect("1.2.0");
    let min_calls = u64::from(manifest.rollout.min_calls);
    a.host
        .registry
        .deploy(
            manifest,
            &component("fraud-score-regressed"),
            "1.2.0",
            Some(50),
            "node-a",
        )
        .await
        .expect("canary on A");
    let started = Instant::now();
    while canary_of(&b).is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "B never saw the canary"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Calls alternate between the nodes; neither sees enough canary calls
    // of its own to judge the canary, together they do.
    let inputs = fraud_traffic();
    let mut own = [0u64; 2];
    for i in 0..(min_calls as usize * 14 / 5) {
        let n = i % 2;
        let node = if n == 0 { &a } else { &b };
        if node
            .host
            .registry
            .route("fraud-score")
            .and_then(|r| r.canary.clone())
            .is_none()
        {
            break;
        }
        let r = node
            .host
            .registry
            .call("fraud-score", inputs[i % inputs.len()].clone(), None)
            .await
            .expect("call");
        if &*r.version == "1.2.0" {
            own[n] += 1;
        }
    }
    assert!(
        own.iter().all(|o| *o < min_calls) && own.iter().sum::<u64>() >= min_calls,
        "each node alone is below min-calls {min_calls}, both together above: {own:?}"
    );

    // Within a few seconds both nodes serve without the canary.
    let started = Instant::now();
    while canary_of(&a).is_some() || canary_of(&b).is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the canary survived: {:?} {:?}",
            canary_of(&a),
            canary_of(&b)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Give the slower node time to have tried too.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let entries = a.host.registry.store().audit_list(0, None).expect("audit");
    let rollbacks: Vec<_> = entries
        .iter()
        .filter(|e| e.action == "auto-rollback")
        .collect();
    assert_eq!(
        rollbacks.len(),
        1,
        "exactly one node rolled back: {rollbacks:?}"
    );
    let judged = rollbacks[0].detail["evidence"]["canary"]["calls"]
        .as_u64()
        .expect("evidence");
    assert!(
        judged > own[0].max(own[1]),
        "judged on {judged} calls, more than either node's own {own:?}"
    );
    let history = b
        .host
        .registry
        .store()
        .history("fraud-score")
        .expect("history");
    assert_eq!(
        history
            .iter()
            .filter(|h| h.action == "auto-rollback")
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approval_whose_node_stopped_before_carrying_it_out_is_carried_out_by_another() {
    let pg = PgServer::start();
    let url = pg.database();
    let downstream = Downstream::start(200);
    let (a, _b, admin) = two_nodes(&url, &downstream).await;
    let review_id = escalated_review(&a, &admin).await;
    // The approval commits on A, which then stops before carrying it out:
    // its lease on the execution runs out.
    a.host
        .reviews
        .decide(review_id, true, "rita", Some("checked"))
        .expect("approve");
    pg.psql_on(
        &url,
        &format!("UPDATE reviews SET lease_until = '2000-01-01T00:00:00Z' WHERE id = {review_id}"),
    );
    let started = Instant::now();
    loop {
        let review = a
            .host
            .reviews
            .get(review_id)
            .expect("read")
            .expect("review");
        if review.status == evos::review::ReviewStatus::Executed {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the orphaned approval was never carried out: {review:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let delivered = downstream
        .requests()
        .into_iter()
        .filter(|r| r.body.contains("C-1002"))
        .count();
    assert_eq!(delivered, 1);
    let entries = a.host.registry.store().audit_list(0, None).expect("audit");
    let subject = format!("review/{review_id}");
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.subject == subject && e.action == "executed")
            .count(),
        1
    );
}
