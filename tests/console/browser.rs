//! The console in headless Chromium: a reviewer decides an escalated claim
//! from sign-in to execution, a deployer rolls a canary back, and hostile
//! claim fields stay text.

use evos::auth::Role;
use serde_json::json;

use crate::Console;
use crate::support::browser::Browser;
use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_reviewer_signs_in_approves_an_escalated_claim_and_sees_it_executed() {
    let c = Console::start(|_| {}).await;
    let review_id = c.escalate("C-2001");
    let (reviewer_id, reviewer) = c.token("rita", Role::Reviewer, "*");
    let b = Browser::start("reviewer");

    // Signing in lands on the queue.
    b.goto(&c.url("/ui/reviews"));
    assert!(b.path().starts_with("/ui/login"), "{}", b.path());
    b.screenshot("01-sign-in");
    b.type_into("#token", &reviewer);
    b.click("#sign-in");
    b.wait_for("the queue", |b| b.path() == "/ui/reviews");
    assert!(b.text("#who").contains("rita"), "{}", b.text("#who"));
    let cookies = b.cookies();
    let session = cookies
        .iter()
        .find(|c| c["name"] == "evos_session")
        .expect("a session cookie");
    assert_eq!(session["httpOnly"], true, "{session}");
    assert_eq!(session["sameSite"], "Strict", "{session}");
    assert!(
        b.execute("return document.cookie")
            .as_str()
            .unwrap_or("")
            .is_empty(),
        "scripts cannot read the session"
    );
    assert!(b.text("#reviews").contains("C-2001"), "{}", b.text("body"));
    b.screenshot("02-queue");

    // The keyboard opens the first review.
    b.press("j");
    b.press("\u{E007}");
    b.wait_for("the review", |b| {
        b.path() == format!("/ui/reviews/{review_id}")
    });

    // What the reviewer decides on: the event, the action, why it waits,
    // and the versions and answers behind it.
    assert_eq!(b.text("#action-kind"), "approve-payout");
    assert!(!b.text("#rationale").is_empty());
    let reasons = b.text("#reasons");
    assert!(reasons.contains("payout-limit"), "{reasons}");
    let decision = b.text("#decision");
    assert!(
        decision.contains("claims-triage") && decision.contains("fraud-score"),
        "{decision}"
    );
    assert!(
        decision.contains("1.0.0"),
        "the model's version: {decision}"
    );

    // Hostile claim fields are shown as text and run nothing.
    let payload = b.text("#event-payload");
    assert!(
        payload.contains("<script>window.__evosXss=1</script>"),
        "{payload}"
    );
    assert!(payload.contains("onerror="), "{payload}");
    assert_eq!(b.execute("return typeof window.__evosXss"), "undefined");
    assert_eq!(
        b.execute("return document.querySelectorAll('img, main script').length"),
        0
    );
    assert!(!b.source().contains("<script>window.__evosXss"));
    b.screenshot("03-review");

    // Scripts on the page may not call out at all (connect-src 'none'),
    // and the decision form without its CSRF token is refused.
    let fetched = b.execute(&format!(
        "try {{ await fetch('/ui/reviews/{review_id}', {{method: 'POST', body: 'decision=approve'}}); return 'sent'; }} catch (e) {{ return 'blocked'; }}"
    ));
    assert_eq!(fetched, "blocked");
    b.execute(
        "const f = document.getElementById('decide'); f.querySelector('[name=csrf]').remove(); f.requestSubmit(document.getElementById('approve')); return 1;",
    );
    b.wait_for("the refusal", |b| b.try_find("#error").is_some());
    assert!(b.text("#error").contains("CSRF"), "{}", b.text("#error"));
    assert_eq!(c.review_status(review_id), "pending");
    b.goto(&c.url(&format!("/ui/reviews/{review_id}")));

    // Comment, then `a` approves: the action is carried out at once.
    b.type_into("#comment", "Plumber's invoice checked <b>ok</b>");
    b.press("\u{E00C}");
    b.press("a");
    b.wait_for("the approval", |b| b.try_find("#done").is_some());
    assert_eq!(b.text("#status"), "executed");
    assert!(
        b.text("#result").contains("DS-1"),
        "the receipt: {}",
        b.text("#result")
    );
    assert_eq!(
        b.text("#decided-comment"),
        "Plumber's invoice checked <b>ok</b>"
    );
    let after = b.text("#review-audit");
    assert!(
        after.contains("review-approved") && after.contains("executed"),
        "{after}"
    );
    let delivered: Vec<_> = c
        .downstream
        .requests()
        .into_iter()
        .filter(|r| r.body.contains("C-2001"))
        .collect();
    assert_eq!(delivered.len(), 1, "carried out once");
    assert_eq!(delivered[0].header("idempotency-key"), Some("C-2001/0"));
    let approved = c.audited("review-approved");
    assert!(
        approved.iter().any(|e| e.actor.contains(&reviewer_id)
            && e.detail["comment"]
                .as_str()
                .unwrap_or("")
                .contains("invoice")),
        "{approved:?}"
    );
    b.screenshot("04-executed");

    // The event's trace: ingest, the agent and its model, the policies.
    b.click("#event-link");
    b.wait_for("the trace", |b| b.path() == "/ui/events/C-2001");
    let steps = b.text("#trace-steps");
    for part in [
        "ingest",
        "claims-webhook",
        "claims-triage",
        "fraud-score",
        "1.0.0",
        "ok",
    ] {
        assert!(steps.contains(part), "{part} in {steps}");
    }
    assert!(b.text("#action-0").contains("payout-limit"));
    let audit = b.text("#event-audit");
    for action in ["pipeline", "escalated", "review-approved", "executed"] {
        assert!(audit.contains(action), "{action} in {audit}");
    }
    b.screenshot("05-trace");

    // A reviewer has no audit log: refused, and the refusal is audited.
    b.goto(&c.url("/ui/audit"));
    assert!(
        b.text("#error").contains("may not Audit"),
        "{}",
        b.text("body")
    );
    assert!(
        c.audited("access-refused")
            .iter()
            .any(|e| e.actor == format!("token/{reviewer_id}") && e.subject == "/ui/audit")
    );
    b.screenshot("06-refused");

    // Signing out ends the session.
    b.click("#sign-out");
    b.wait_for("the sign-in form", |b| b.path() == "/ui/login");
    b.goto(&c.url("/ui/reviews"));
    assert!(b.path().starts_with("/ui/login"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deployer_watches_a_canary_and_rolls_it_back() {
    let c = Console::start(|_| {}).await;
    let m = evos::Manifest::load(root().join("policies/versions/fraud-score-1.1.0.toml"))
        .expect("manifest");
    c.host
        .registry
        .deploy(
            m,
            &component("fraud-score-retrained"),
            "v11",
            Some(50),
            "test",
        )
        .await
        .expect("canary");
    let claims: Vec<_> = (0..12)
        .map(|i| json!({"claim_id": format!("C-50{i:02}"), "claimant_id": "CL-7", "amount": 120.0 + i as f64, "policy_number": "POL-12345", "incident": "Hail damage to the roof", "region": "north"}))
        .collect();
    c.ingest(json!(claims));
    // Two samples apart, so the plots have an interval to show.
    std::thread::sleep(std::time::Duration::from_millis(500));
    c.ingest(json!([{"claim_id": "C-5100", "claimant_id": "CL-7", "amount": 80.0, "policy_number": "POL-12345", "incident": "Hail damage to the roof", "region": "north"}]));
    std::thread::sleep(std::time::Duration::from_millis(500));

    let (deployer_id, deployer) = c.token("dora", Role::Deployer, "fraud-*");
    let b = Browser::start("deployer");
    b.goto(&c.url("/ui/login"));
    b.type_into("#token", &deployer);
    b.click("#sign-in");
    b.wait_for("the rollouts", |b| b.path() == "/ui/rollouts");
    let card = b.text("#plugin-fraud-score");
    assert!(
        card.contains("canary") && card.contains("1.1.0") && card.contains("50%"),
        "{card}"
    );
    assert!(
        b.try_find("a[href='/ui/reviews']").is_none(),
        "no queue for a deployer"
    );
    b.screenshot("01-rollouts");

    // The plugin's page: versions, live latency and the plots.
    b.click("#plugin-fraud-score h2 a");
    b.wait_for("the plugin", |b| b.path() == "/ui/rollouts/fraud-score");
    assert!(
        b.try_find("figure.plot svg polyline").is_some(),
        "{}",
        b.text("body")
    );
    assert!(b.text("body").contains("p95 latency"));
    b.screenshot("02-plots");

    // Roll back: a confirmation first, then the change, audited.
    b.click("#rollback-fraud-score");
    b.wait_for("the confirmation", |b| {
        b.path() == "/ui/rollouts/fraud-score/rollback"
    });
    assert!(
        b.text("#what").contains("canary 1.1.0"),
        "{}",
        b.text("#what")
    );
    assert!(
        c.host.registry.status(Some("fraud-score")).unwrap()[0]
            .canary
            .is_some(),
        "nothing changed before the confirmation"
    );
    b.screenshot("03-confirm");
    b.click("#confirm-button");
    b.wait_for("the rollback", |b| b.try_find("#done").is_some());
    assert!(b.text("#done").contains("rollback"), "{}", b.text("#done"));
    let status = c.host.registry.status(Some("fraud-score")).unwrap();
    assert!(status[0].canary.is_none(), "the canary is out of traffic");
    assert!(!b.text("#plugin-fraud-score").contains("canary"));
    let rollbacks: Vec<_> = c
        .host
        .registry
        .store()
        .audit_list(0, None)
        .unwrap()
        .into_iter()
        .filter(|e| e.action.contains("rollback") && e.subject == "fraud-score")
        .collect();
    assert!(
        rollbacks
            .iter()
            .any(|e| e.actor == format!("token/{deployer_id} (console)")),
        "{rollbacks:?}"
    );
    b.screenshot("04-rolled-back");
}
