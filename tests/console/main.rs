//! The web console (`/ui`): sign-in, sessions and CSRF over raw HTTP, and
//! the reviewer's and the deployer's flows in a real browser (headless
//! Chromium over WebDriver; screenshots in target/console-screenshots/).
//!
//! A test binary of its own: Chromium takes the CPU while it renders, and
//! cargo runs test binaries one after another, so it never shares it with
//! the integration tests that measure latencies.

// Test code states its expectations with unwrap/expect/panic: a failed
// expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod browser;
mod sessions;
mod support {
    pub use evos_test_support::*;
}

use std::sync::Arc;
use std::time::Duration;

use evos::auth::Role;
use evos::server::{Host, ServerConfig};
use serde_json::{Value, json};

use support::*;

/// A host serving the claims app (its webhook posting to a local
/// downstream), with a token per role.
pub struct Console {
    pub port: u16,
    pub host: Arc<Host>,
    pub downstream: Downstream,
    pub admin: String,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: TempDir,
}

impl Console {
    pub async fn start(tweak: impl FnOnce(&mut ServerConfig)) -> Console {
        let downstream = Downstream::start(200);
        let dir = tempdir("console");
        let mut config = ServerConfig::new(&*dir, root().join("evos.toml"));
        config.engine.cache_dir = Some(root().join("target/evos-test-cache"));
        config.engine.max_instances = 32;
        config.console_sample_every = Duration::from_millis(200);
        tweak(&mut config);
        let app = claims_app(&downstream.url("/claims/payouts"));
        let (host, boot) = Host::bootstrap_with(config, app).await.expect("bootstrap");
        // The first node on a state writes the admin token; others make one.
        let admin = match boot.admin_token_file {
            Some(file) => std::fs::read_to_string(file)
                .expect("token")
                .trim()
                .to_string(),
            None => {
                host.tokens
                    .create("test admin", Role::Admin, "*", "test")
                    .expect("admin")
                    .1
            }
        };
        let (port, stop) = serve_on_loopback(host.clone()).await;
        Console {
            port,
            host,
            downstream,
            admin,
            _stop: stop,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A new token: its id and secret.
    pub fn token(&self, name: &str, role: Role, scope: &str) -> (String, String) {
        let (t, secret) = self
            .host
            .tokens
            .create(name, role, scope, "test")
            .expect("token");
        (t.id, secret)
    }

    /// Ingest `claims` through the webhook; the pipeline's report.
    pub fn ingest(&self, claims: Value) -> Value {
        let (status, body) = http_request(
            self.port,
            "POST",
            "/v1/ingest/claims-webhook",
            Some(&self.admin),
            json!({ "claims": claims }).to_string().as_bytes(),
            &[("content-type", "application/json")],
        );
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("json")
    }

    /// Ingest [`hostile_claim`] `id`; the review it waits in.
    pub fn escalate(&self, id: &str) -> i64 {
        let report = self.ingest(json!([hostile_claim(id)]));
        report["report"]["events"][0]["actions"][0]["review_id"]
            .as_i64()
            .unwrap_or_else(|| panic!("{id} was not escalated: {report}"))
    }

    /// The status of review `id`.
    pub fn review_status(&self, id: i64) -> String {
        let review = self.host.reviews.get(id).expect("read").expect("a review");
        review.status.as_str().to_string()
    }

    /// The audit entries with `action`.
    pub fn audited(&self, action: &str) -> Vec<evos::audit::Entry> {
        self.host
            .registry
            .store()
            .audit_list(0, None)
            .expect("audit")
            .into_iter()
            .filter(|e| e.action == action)
            .collect()
    }
}

/// A claim over the payout limit (it waits for a reviewer) whose fields
/// carry markup and script, as a hostile claimant would write them.
pub fn hostile_claim(id: &str) -> Value {
    json!({
        "claim_id": id,
        "claimant_id": "CL-<img src=x onerror=\"window.__evosXss=2\">",
        "amount": 4200.0,
        "policy_number": "POL-31877",
        "incident": "Pipe burst.</pre><script>window.__evosXss=1</script><b>bold</b> \"quoted\" & more",
        "region": "south",
    })
}
