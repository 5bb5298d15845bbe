//! Sign-in, sessions, CSRF and roles over raw HTTP: what a browser would
//! send, and what a hostile page or client would.

use std::io::{Read, Write};
use std::time::Duration;

use evos::auth::Role;

use crate::Console;

/// A response: status, headers (names lowercased) and body.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == "set-cookie")
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The value of cookie `name` this reply sets.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.set_cookies().into_iter().find_map(|c| {
            c.split(';')
                .next()
                .and_then(|kv| kv.split_once('='))
                .filter(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    /// The value of the first hidden `csrf` input of the page.
    pub fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .expect("a csrf field")
            + 19;
        self.body[at..]
            .split('"')
            .next()
            .unwrap_or_default()
            .to_string()
    }
}

pub fn raw(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

/// Sign in with `token` as a browser would: the form, then the post.
/// Returns the session cookie.
pub fn sign_in(port: u16, token: &str) -> String {
    let form = raw(port, "GET", "/ui/login", &[], "");
    assert_eq!(form.status, 200, "{}", form.body);
    let login = form.cookie("evos_login").expect("login cookie");
    let cookie = format!("evos_login={login}");
    let body = format!("csrf={}&token={token}", form.csrf());
    let r = raw(
        port,
        "POST",
        "/ui/login",
        &[FORM, ("cookie", &cookie)],
        &body,
    );
    assert_eq!(r.status, 303, "{}", r.body);
    r.cookie("evos_session").expect("a session cookie")
}

fn session(cookie: &str) -> String {
    format!("evos_session={cookie}")
}

/// POST the form `body` to `path` with the session cookie `cookie`.
fn signed_post(port: u16, cookie: &str, path: &str, body: &str) -> Reply {
    raw(
        port,
        "POST",
        path,
        &[FORM, ("cookie", &session(cookie))],
        body,
    )
}

/// GET `path` with the session cookie `cookie`.
fn signed_get(port: u16, cookie: &str, path: &str) -> Reply {
    raw(port, "GET", path, &[("cookie", &session(cookie))], "")
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_in_sets_a_strict_http_only_cookie_and_a_bad_token_is_refused_and_audited() {
    let c = Console::start(|_| {}).await;
    let (_, reviewer) = c.token("rita", Role::Reviewer, "*");

    // Anonymous: every page leads to the sign-in form.
    let r = raw(c.port, "GET", "/ui/reviews", &[], "");
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/ui/login"));

    let form = raw(c.port, "GET", "/ui/login", &[], "");
    let csp = form.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(form.header("x-frame-options"), Some("DENY"));
    let login = form.cookie("evos_login").unwrap();

    // A wrong token: refused, the form again, audited.
    let body = format!("csrf={}&token=evos_0000_nope", form.csrf());
    let cookie = format!("evos_login={login}");
    let r = raw(
        c.port,
        "POST",
        "/ui/login",
        &[FORM, ("cookie", &cookie)],
        &body,
    );
    assert_eq!(r.status, 401);
    assert!(r.body.contains("That token is not valid"), "{}", r.body);
    assert!(r.cookie("evos_session").is_none());
    assert!(
        c.audited("access-refused")
            .iter()
            .any(|e| e.subject == "/ui/login" && e.actor == "anonymous"),
        "the failed sign-in is audited"
    );

    // The sign-in form without its CSRF cookie (posted from another site).
    let body = format!("csrf={}&token={reviewer}", form.csrf());
    let r = raw(c.port, "POST", "/ui/login", &[FORM], &body);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.cookie("evos_session").is_none());

    // The right token: a session cookie, HttpOnly and SameSite=Strict,
    // with an expiry, and the token itself is not in it.
    let body = format!("csrf={}&token={reviewer}", form.csrf());
    let r = raw(
        c.port,
        "POST",
        "/ui/login",
        &[FORM, ("cookie", &cookie)],
        &body,
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), Some("/ui/reviews"));
    let set = r
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("evos_session="))
        .unwrap();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=28800"] {
        assert!(set.contains(part), "{set}");
    }
    assert!(!set.contains(&reviewer));
    let cookie = r.cookie("evos_session").unwrap();
    let page = signed_get(c.port, &cookie, "/ui/reviews");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("rita"), "{}", page.body);
    assert!(
        c.audited("console-sign-in")
            .iter()
            .any(|e| e.detail["role"] == "reviewer"),
        "sign-in is audited"
    );
    // A made-up session is no session.
    let r = raw(
        c.port,
        "GET",
        "/ui/reviews",
        &[("cookie", "evos_session=00ff")],
        "",
    );
    assert_eq!(r.status, 303);
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_end_at_sign_out_on_expiry_and_when_the_token_is_revoked() {
    let c = Console::start(|config| config.console_session = Duration::from_secs(2)).await;
    let (reviewer_id, reviewer) = c.token("rita", Role::Reviewer, "*");

    // Sign-out needs the session's CSRF token, and then ends it.
    let cookie = sign_in(c.port, &reviewer);
    let page = signed_get(c.port, &cookie, "/ui/reviews");
    let r = signed_post(c.port, &cookie, "/ui/logout", "csrf=wrong");
    assert_eq!(r.status, 403);
    let body = format!("csrf={}", page.csrf());
    let r = signed_post(c.port, &cookie, "/ui/logout", &body);
    assert_eq!(r.status, 303);
    let r = signed_get(c.port, &cookie, "/ui/reviews");
    assert_eq!(r.status, 303, "signed out");

    // Revoking the token ends its sessions at once.
    let cookie = sign_in(c.port, &reviewer);
    c.host.tokens.revoke(&reviewer_id, "test").unwrap();
    let r = signed_get(c.port, &cookie, "/ui/reviews");
    assert_eq!(r.status, 303, "revoked");
    assert_eq!(r.header("location"), Some("/ui/login?expired=1"));

    // A session lasts `console_session` from sign-in.
    let (_, other) = c.token("otto", Role::Reviewer, "*");
    let cookie = sign_in(c.port, &other);
    let r = signed_get(c.port, &cookie, "/ui/reviews");
    assert_eq!(r.status, 200);
    std::thread::sleep(Duration::from_millis(2100));
    let r = signed_get(c.port, &cookie, "/ui/reviews");
    assert_eq!(r.status, 303, "expired");
}

#[tokio::test(flavor = "multi_thread")]
async fn forms_without_the_csrf_token_or_from_another_origin_change_nothing() {
    let c = Console::start(|_| {}).await;
    let review_id = c.escalate("C-3001");
    let (_, reviewer) = c.token("rita", Role::Reviewer, "*");
    let cookie = session(&sign_in(c.port, &reviewer));
    let page = raw(
        c.port,
        "GET",
        &format!("/ui/reviews/{review_id}"),
        &[("cookie", &cookie)],
        "",
    );
    assert_eq!(page.status, 200);
    let csrf = page.csrf();
    let path = format!("/ui/reviews/{review_id}");
    let refused_before = c.audited("access-refused").len();
    for (what, headers, body) in [
        (
            "no token",
            vec![FORM, ("cookie", cookie.as_str())],
            "decision=approve".to_string(),
        ),
        (
            "a wrong token",
            vec![FORM, ("cookie", cookie.as_str())],
            "decision=approve&csrf=00".to_string(),
        ),
        (
            "another origin",
            vec![
                FORM,
                ("cookie", cookie.as_str()),
                ("origin", "http://evil.example"),
            ],
            format!("decision=approve&csrf={csrf}"),
        ),
        (
            "a cross-site fetch",
            vec![
                FORM,
                ("cookie", cookie.as_str()),
                ("sec-fetch-site", "cross-site"),
            ],
            format!("decision=approve&csrf={csrf}"),
        ),
    ] {
        let r = raw(c.port, "POST", &path, &headers, &body);
        assert_eq!(r.status, 403, "{what}: {}", r.body);
        let review = c.host.reviews.get(review_id).unwrap().unwrap();
        assert_eq!(review.status.as_str(), "pending", "{what}");
    }
    assert!(
        c.downstream
            .requests()
            .iter()
            .all(|r| !r.body.contains("C-3001"))
    );
    assert_eq!(
        c.audited("access-refused").len(),
        refused_before + 4,
        "each refusal audited"
    );

    // The same form, from the console's own page, is taken.
    let body = format!("decision=reject&csrf={csrf}&comment=duplicate");
    let r = raw(
        c.port,
        "POST",
        &path,
        &[
            FORM,
            ("cookie", &cookie),
            ("origin", &format!("http://127.0.0.1:{}", c.port)),
        ],
        &body,
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let review = c.host.reviews.get(review_id).unwrap().unwrap();
    assert_eq!(review.status.as_str(), "rejected");
    assert_eq!(review.comment.as_deref(), Some("duplicate"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_sees_and_does_only_what_its_role_and_scope_allow() {
    let c = Console::start(|_| {}).await;
    let review_id = c.escalate("C-4001");
    let (auditor_id, auditor) = c.token("alma", Role::Auditor, "*");
    let (_, deployer) = c.token("dora", Role::Deployer, "fraud-*");
    let (_, other_team) = c.token("olaf", Role::Reviewer, "billing-*");
    let get =
        |cookie: &str, path: &str| raw(c.port, "GET", path, &[("cookie", &session(cookie))], "");

    // An auditor reads the audit log and events, not the review queue.
    let a = sign_in(c.port, &auditor);
    assert_eq!(get(&a, "/ui/audit").status, 200);
    assert!(get(&a, "/ui/audit").body.contains("console-sign-in"));
    assert_eq!(get(&a, "/ui/audit/verify").status, 200);
    assert_eq!(get(&a, "/ui/events/C-4001").status, 200);
    assert!(
        get(&a, "/ui/events")
            .body
            .contains("href=\"/ui/events/C-4001\""),
        "recent events"
    );
    let found = get(&a, "/ui/events?id=C-4001");
    assert_eq!(found.status, 303);
    assert_eq!(found.header("location"), Some("/ui/events/C-4001"));
    assert_eq!(get(&a, "/ui/events/C-0000").status, 404);
    let r = get(&a, "/ui/reviews");
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("may not Review"), "{}", r.body);
    assert!(
        c.audited("access-refused")
            .iter()
            .any(|e| e.actor == format!("token/{auditor_id}") && e.subject == "/ui/reviews"),
        "refused like the API, and audited"
    );
    // A deployer scoped to fraud-* sees that rollout only, and no reviews.
    let d = sign_in(c.port, &deployer);
    let r = get(&d, "/ui/rollouts");
    assert_eq!(r.status, 200);
    assert!(r.body.contains("plugin-fraud-score") && !r.body.contains("plugin-payout-limit"));
    assert_eq!(get(&d, "/ui/rollouts/payout-limit").status, 403);
    assert_eq!(get(&d, "/ui/rollouts/payout-limit/rollback").status, 403);
    assert_eq!(get(&d, &format!("/ui/reviews/{review_id}")).status, 403);
    // A reviewer of another team's plugins does not see this review.
    let o = sign_in(c.port, &other_team);
    assert!(!get(&o, "/ui/reviews").body.contains("C-4001"));
    assert_eq!(get(&o, &format!("/ui/reviews/{review_id}")).status, 403);
    let page = get(&o, "/ui/reviews");
    let body = format!("decision=approve&csrf={}", page.csrf());
    let r = signed_post(c.port, &o, &format!("/ui/reviews/{review_id}"), &body);
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(c.review_status(review_id), "pending");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_view_filters_pages_and_verifies() {
    let c = Console::start(|_| {}).await;
    let claims =
        std::fs::read_to_string(crate::support::root().join("plugins/claims-webhook/claims.json"))
            .unwrap();
    let claims: serde_json::Value = serde_json::from_str(&claims).unwrap();
    for round in 0..8 {
        let mut batch = claims["claims"].clone();
        for claim in batch.as_array_mut().unwrap() {
            let id = format!("{}-{round}", claim["claim_id"].as_str().unwrap());
            claim["claim_id"] = id.into();
        }
        c.ingest(batch);
    }
    let (_, auditor) = c.token("alma", Role::Auditor, "*");
    let cookie = session(&sign_in(c.port, &auditor));
    let get = |path: &str| raw(c.port, "GET", path, &[("cookie", &cookie)], "");

    // Newest first, 50 a page, with a link to the older ones.
    let first = get("/ui/audit");
    assert_eq!(first.status, 200);
    let seqs = |body: &str| -> Vec<i64> {
        body.split("<tr><td>")
            .skip(1)
            .filter_map(|row| row.split('<').next()?.parse().ok())
            .collect()
    };
    let page = seqs(&first.body);
    assert_eq!(page.len(), 50, "{}", first.body);
    assert!(
        page.windows(2).all(|w| w[0] > w[1]),
        "newest first: {page:?}"
    );
    let at = first.body.find("id=\"older\"").expect("an older page");
    let href = first.body[..at]
        .rsplit("href=\"")
        .next()
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&");
    let older = seqs(&get(&href).body);
    assert!(
        !older.is_empty() && older[0] < *page.last().unwrap(),
        "{href}: {older:?}"
    );

    // Filters: by action, by subject prefix, by actor.
    let pipeline = get("/ui/audit?action=pipeline").body;
    assert!(pipeline.contains("<td class=\"action\">pipeline</td>"));
    assert!(!pipeline.contains("<td class=\"action\">execute</td>"));
    let one = get("/ui/audit?subject=event%2FC-1002-3").body;
    let rows = seqs(&one).len();
    assert!(rows >= 1, "{one}");
    assert_eq!(
        one.matches("<td>event/C-1002-3</td>").count(),
        rows,
        "{one}"
    );
    let signed_in = get("/ui/audit?actor=token%2F").body;
    assert!(signed_in.contains("console-sign-in"));
    assert!(!signed_in.contains("<td class=\"action\">pipeline</td>"));

    // Verify.
    let v = get("/ui/audit/verify");
    assert_eq!(v.status, 200);
    assert!(v.body.contains("Intact"), "{}", v.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reviewer_labels_an_action_from_its_trace() {
    let c = Console::start(|_| {}).await;
    c.ingest(serde_json::json!([{"claim_id": "C-6001", "claimant_id": "CL-7", "amount": 120.0, "policy_number": "POL-12345", "incident": "Hail damage to the roof", "region": "north"}]));
    let (reviewer_id, reviewer) = c.token("rita", Role::Reviewer, "*");
    let (_, other_team) = c.token("olaf", Role::Reviewer, "billing-*");
    let cookie = sign_in(c.port, &reviewer);
    let page = signed_get(c.port, &cookie, "/ui/events/C-6001");
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("id=\"label-0\""),
        "a label form: {}",
        page.body
    );
    let post = |cookie: &str, body: String| {
        raw(
            c.port,
            "POST",
            "/ui/events/C-6001",
            &[FORM, ("cookie", &session(cookie))],
            &body,
        )
    };
    let csrf = page.csrf();

    // A word that is not a label, and a label without the CSRF token: nothing kept.
    let r = post(
        &cookie,
        format!("csrf={csrf}&action_index=0&label=Not+OK%21"),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let r = post(&cookie, "action_index=0&label=fraud".into());
    assert_eq!(r.status, 403);
    // Another team's reviewer may not label this agent's action.
    let o = sign_in(c.port, &other_team);
    let other_csrf = signed_get(c.port, &o, "/ui/reviews").csrf();
    let r = post(&o, format!("csrf={other_csrf}&action_index=0&label=fraud"));
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(c.host.registry.store().labels("C-6001").unwrap().is_empty());

    // The label is kept, with who gave it, and shown on the trace.
    let r = post(
        &cookie,
        format!("csrf={csrf}&action_index=0&label=fraud&comment=same+roof+as+C-5001"),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let labels = c.host.registry.store().labels("C-6001").unwrap();
    assert_eq!(labels.len(), 1);
    assert_eq!(labels[0].label, "fraud");
    assert!(labels[0].actor.contains(&reviewer_id), "{:?}", labels[0]);
    assert_eq!(labels[0].comment.as_deref(), Some("same roof as C-5001"));
    let page = signed_get(c.port, &cookie, r.header("location").unwrap());
    assert!(
        page.body.contains("labelled action 0 fraud"),
        "{}",
        page.body
    );
    assert!(page.body.contains("<strong>fraud</strong>"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_progressive_rollout_shows_its_step_gates_and_shadow_agreement() {
    let c = Console::start(|_| {}).await;
    let m = evos::Manifest::load(
        crate::support::root().join("policies/rollouts/fraud-score-1.1.0.toml"),
    )
    .expect("rollout manifest");
    let report = c
        .host
        .registry
        .deploy(
            m,
            &crate::support::component("fraud-score-retrained"),
            "1.1.0",
            None,
            "test",
        )
        .await
        .expect("the candidate");
    assert_eq!(report.action, "rollout");
    c.ingest(serde_json::json!([{"claim_id": "C-7001", "claimant_id": "CL-7", "amount": 120.0, "policy_number": "POL-12345", "incident": "Hail damage to the roof", "region": "north"}]));
    assert!(c.host.registry.drain_shadows(Duration::from_secs(30)).await);

    let (_, auditor) = c.token("alma", Role::Auditor, "*");
    let cookie = sign_in(c.port, &auditor);
    let page = signed_get(c.port, &cookie, "/ui/rollouts/fraud-score").body;
    assert!(
        page.contains("Rollout of <strong>1.1.0</strong>: step 1 of 3"),
        "{page}"
    );
    for gate in [
        "min-calls",
        "min-agreement-with-stable",
        "max-decision-shift",
    ] {
        assert!(
            page.contains(&format!("<td>{gate}</td>")),
            "{gate} in {page}"
        );
    }
    assert!(
        page.contains("class=\"version shadow\""),
        "the shadow's row: {page}"
    );
    assert!(page.contains("Shadow agrees with 1.0.0"), "{page}");
    // An auditor sees the rollout but gets no buttons.
    assert!(!page.contains("id=\"rollback-fraud-score\""));
    assert_eq!(
        signed_get(c.port, &cookie, "/ui/rollouts/fraud-score/rollback").status,
        403
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_is_good_on_every_node_sharing_the_state() {
    let pg = crate::support::PgServer::start();
    let url = pg.database();
    let a = Console::start(|config| config.store = Some(url.clone())).await;
    let b = Console::start(|config| config.store = Some(url.clone())).await;
    let (_, reviewer) = a.token("rita", Role::Reviewer, "*");

    // Signed in on one node, the browser is signed in on the other.
    let cookie = sign_in(a.port, &reviewer);
    let on_b = signed_get(b.port, &cookie, "/ui/reviews");
    assert_eq!(on_b.status, 200, "{}", on_b.body);
    assert!(on_b.body.contains("rita"));
    // Its forms are good on either node: sign out on the other one.
    let body = format!("csrf={}", on_b.csrf());
    let r = signed_post(b.port, &cookie, "/ui/logout", &body);
    assert_eq!(r.status, 303);
    assert_eq!(
        signed_get(a.port, &cookie, "/ui/reviews").status,
        303,
        "signed out everywhere"
    );
    let actions: Vec<String> = a
        .audited("console-sign-out")
        .into_iter()
        .map(|e| e.actor)
        .collect();
    assert_eq!(actions.len(), 1, "{actions:?}");
}
