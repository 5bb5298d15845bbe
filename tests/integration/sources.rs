//! Events from NATS JetStream (a real nats-server the test starts on
//! 127.0.0.1) into the pipeline over PostgreSQL: each message is processed
//! once in effect, retried with backoff when it fails, kept as a dead
//! letter when it keeps failing or cannot be read; and with two `evos up`
//! processes sharing one consumer, one of them killed with SIGKILL
//! mid-stream, every one of 5,000 events is processed exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use evos::server::{Host, ServerConfig};
use evos::source::Source;
use serde_json::json;

use crate::support::*;

const STREAM: &str = "CLAIMS";

fn claim_message(id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!([{
        "claim_id": id,
        "claimant_id": format!("P-{id}"),
        "amount": 120.0 + (id.len() as f64),
        "policy_number": "POL-10001",
        "incident": "burst pipe flooded the kitchen",
        "region": "north",
    }]))
    .expect("json")
}

fn source(nats: &NatsServer) -> Source {
    Source {
        connector: "claims-webhook".into(),
        url: nats.url(),
        stream: STREAM.into(),
        subject: "claims.>".into(),
        consumer: "evos".into(),
        max_deliver: 3,
        ack_wait: Duration::from_secs(5),
        backoff: vec![Duration::from_millis(200)],
        in_flight: 16,
        content_type: "application/json".into(),
        dedupe_window: Duration::from_secs(86_400),
    }
}

/// The events with a pipeline audit entry, by event id, with how many.
fn pipeline_entries(store: &dyn evos::store::StateStore) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for e in store.audit_list(0, None).expect("audit") {
        if e.action == "pipeline"
            && let Some(id) = e.subject.strip_prefix("event/")
        {
            *seen.entry(id.to_string()).or_default() += 1;
        }
    }
    seen
}

async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in metrics:\n{text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_feeds_the_pipeline_once_retries_failures_and_keeps_dead_letters() {
    let pg = PgServer::start();
    let nats = NatsServer::start();
    let downstream = Downstream::start(200);
    let url = pg.database();
    let mut app = claims_app(&downstream.url("/claims/payouts"));
    app.sources.push(source(&nats));
    let dir = tempdir("source-node");
    let mut config = ServerConfig::new(&dir, root().join("evos.toml"));
    config.store = Some(url.clone());
    config.engine.cache_dir = Some(root().join("target/evos-test-cache"));
    let (host, boot) = Host::bootstrap_with(config, app).await.expect("bootstrap");
    let admin = std::fs::read_to_string(boot.admin_token_file.expect("admin"))
        .expect("token")
        .trim()
        .to_string();
    let (port, _stop) = serve_on_loopback(host.clone()).await;
    let store = host.registry.store().clone();
    let metrics = || {
        let (status, body) = http_request(port, "GET", "/metrics", Some(&admin), b"", &[]);
        assert_eq!(status, 200, "{body}");
        body
    };

    // Twenty claims: each processed once, executed once downstream.
    let ids: Vec<String> = (0..20).map(|i| format!("S-{i:02}")).collect();
    let messages: Vec<Vec<u8>> = ids.iter().map(|id| claim_message(id)).collect();
    nats.publish(STREAM, "claims.new", messages.clone()).await;
    wait_for("20 processed events", Duration::from_secs(30), || {
        pipeline_entries(&*store).len() == 20
    })
    .await;
    wait_for("20 acknowledgements", Duration::from_secs(10), || {
        metric(&metrics(), "evos_source_acked_total") == 20
    })
    .await;
    let keys = |downstream: &Downstream| -> Vec<String> {
        downstream
            .requests()
            .iter()
            .filter_map(|r| r.header("idempotency-key").map(str::to_string))
            .collect()
    };
    let delivered = keys(&downstream);
    assert!(!delivered.is_empty(), "no claim reached the downstream");
    let distinct: BTreeSet<&String> = delivered.iter().collect();
    assert_eq!(distinct.len(), delivered.len(), "{delivered:?}");

    // The same messages again (as a redelivery would bring them): every
    // event is found processed and nothing is carried out twice.
    nats.publish(STREAM, "claims.new", messages).await;
    wait_for("40 acknowledgements", Duration::from_secs(30), || {
        metric(&metrics(), "evos_source_acked_total") == 40
    })
    .await;
    let text = metrics();
    assert_eq!(metric(&text, "evos_source_duplicate_events_total"), 20);
    assert!(pipeline_entries(&*store).values().all(|n| *n == 1));
    assert_eq!(keys(&downstream), delivered, "a duplicate was carried out");

    // The database refuses T-1's pipeline entry twice, then accepts it: two
    // retries after the backoff, then processed. P-1's is refused every
    // time: after max-deliver (3) deliveries it is a dead letter. A message
    // the connector cannot read is a dead letter at once.
    pg.psql_on(
        &url,
        "CREATE SEQUENCE t1_failures;
         CREATE FUNCTION refuse() RETURNS trigger AS $$
         BEGIN
           IF NEW.action <> 'pipeline' THEN
             RETURN NEW;
           END IF;
           IF NEW.subject = 'event/P-1' THEN
             RAISE EXCEPTION 'refused by the test';
           END IF;
           IF NEW.subject = 'event/T-1' THEN
             IF nextval('t1_failures') <= 2 THEN
               RAISE EXCEPTION 'refused by the test';
             END IF;
           END IF;
           RETURN NEW;
         END $$ LANGUAGE plpgsql;
         CREATE TRIGGER refuse BEFORE INSERT ON audit FOR EACH ROW EXECUTE FUNCTION refuse();",
    );
    nats.publish(
        STREAM,
        "claims.new",
        vec![
            claim_message("T-1"),
            claim_message("P-1"),
            b"this is not a claim".to_vec(),
        ],
    )
    .await;
    wait_for("two dead letters", Duration::from_secs(30), || {
        store.dead_letters(None).expect("dead letters").len() == 2
    })
    .await;
    wait_for("T-1 processed", Duration::from_secs(30), || {
        pipeline_entries(&*store).contains_key("T-1")
    })
    .await;
    let letters = store.dead_letters(None).expect("dead letters");
    let poisoned = letters
        .iter()
        .find(|l| l.payload == claim_message("P-1"))
        .expect("P-1 is a dead letter");
    assert_eq!(poisoned.delivered, 3);
    assert!(
        poisoned.error.contains("refused by the test"),
        "{poisoned:?}"
    );
    let unreadable = letters
        .iter()
        .find(|l| l.payload == b"this is not a claim")
        .expect("the unreadable message is a dead letter");
    assert_eq!(unreadable.delivered, 1, "{unreadable:?}");
    assert!(unreadable.error.contains("connector"), "{unreadable:?}");
    assert!(!pipeline_entries(&*store).contains_key("P-1"));
    let text = metrics();
    assert_eq!(metric(&text, "evos_source_dead_letters_total"), 2);
    // T-1 twice and P-1 twice were sent back; P-1's third failure is final.
    assert_eq!(metric(&text, "evos_source_retries_total"), 4);
    assert!(metric(&text, "evos_source_redeliveries_total") >= 4);
    let entries = store.audit_list(0, None).expect("audit");
    let dead: Vec<&evos::audit::Entry> = entries
        .iter()
        .filter(|e| e.action == "dead-letter")
        .collect();
    assert_eq!(dead.len(), 2);
    assert!(dead.iter().all(|e| e.actor == "claims-webhook"));
    wait_for("no lag", Duration::from_secs(10), || {
        metric(&metrics(), "evos_source_lag") == 0
    })
    .await;
    pg.psql_on(&url, "DROP TRIGGER refuse ON audit");
    let v = store.audit_verify().expect("verify");
    assert!(v.intact && v.anchored, "{v:?}");

    // Operators list them from any node.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_evos"))
        .arg("--data-dir")
        .arg(tempdir("operator"))
        .args(["--store", &url, "sources", "dead-letters", "--json"])
        .output()
        .expect("evos sources dead-letters");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let listed = listed.as_array().expect("a list");
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().any(|l| {
        l["delivered"] == 3
            && l["source"] == "nats:CLAIMS/evos"
            && l["error"]
                .as_str()
                .is_some_and(|e| e.contains("refused by the test"))
    }));
}

/// An app file for `evos up` processes: the repository's claims app with
/// its connector delivering to `sink` and reading `nats`'s stream.
fn app_file(dir: &std::path::Path, sink: &Downstream, nats: &NatsServer) -> std::path::PathBuf {
    let base = root();
    let connector = std::fs::read_to_string(base.join("policies/claims-webhook.toml"))
        .expect("connector manifest")
        .replace(
            "endpoint = \"http://127.0.0.1:8089/claims/payouts\"",
            &format!("endpoint = \"{}\"", sink.url("/claims/payouts")),
        );
    let manifest = dir.join("claims-webhook.toml");
    std::fs::write(&manifest, connector).expect("write manifest");
    let app = example_app_text(Some(&manifest));
    let path = dir.join("app.toml");
    std::fs::write(
        &path,
        format!(
            "{app}\n\n[sources.claims-webhook]\nurl = \"{}\"\nstream = \"{STREAM}\"\nsubject = \"claims.>\"\nack-wait = \"3s\"\nbackoff = [\"200ms\"]\nin-flight = 32\n",
            nats.url()
        ),
    )
    .expect("write app");
    path
}

/// `evos up` on the shared database, its log in its directory.
fn evos_up(url: &str, dir: &std::path::Path, app: &std::path::Path) -> std::process::Child {
    std::fs::create_dir_all(dir).expect("node dir");
    let log = std::fs::File::create(dir.join("log")).expect("log");
    std::process::Command::new(env!("CARGO_BIN_EXE_evos"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--store", url, "up", "--listen", "127.0.0.1:0", "--app"])
        .arg(app)
        .env("EVOS_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("evos up")
}

fn count(pg: &PgServer, url: &str, sql: &str) -> u64 {
    pg.psql_on(url, sql).parse().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn five_thousand_events_over_two_nodes_one_killed_are_each_processed_once() {
    const EVENTS: u64 = 5_000;
    let pg = PgServer::start();
    let nats = NatsServer::start();
    let sink = Downstream::start_for(200, Duration::from_secs(600));
    let url = pg.database();
    let dir = tempdir("two-processes");
    let app = app_file(&dir, &sink, &nats);

    // A deploys the app; B joins once it has.
    let mut a = evos_up(&url, &dir.join("a"), &app);
    let started = Instant::now();
    let deployed = || {
        count(
            &pg,
            &url,
            "SELECT COUNT(*) FROM pg_tables WHERE tablename = 'deployments'",
        ) == 1
            && count(&pg, &url, "SELECT COUNT(*) FROM deployments") == 5
    };
    while !deployed() {
        assert!(
            started.elapsed() < Duration::from_secs(120) && a.try_wait().ok().flatten().is_none(),
            "node A did not deploy the app: {}",
            std::fs::read_to_string(dir.join("a/log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut b = evos_up(&url, &dir.join("b"), &app);

    let messages: Vec<Vec<u8>> = (0..EVENTS)
        .map(|i| claim_message(&format!("E-{i:05}")))
        .collect();
    nats.publish(STREAM, "claims.new", messages).await;

    // Kill A with SIGKILL once a fifth of the stream is processed.
    let processed = || count(&pg, &url, "SELECT COUNT(*) FROM processed_events");
    let started = Instant::now();
    while processed() < EVENTS / 5 {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the nodes processed {} events: A: {} B: {}",
            processed(),
            std::fs::read_to_string(dir.join("a/log")).unwrap_or_default(),
            std::fs::read_to_string(dir.join("b/log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.kill().expect("SIGKILL node A");
    a.wait().expect("reap A");
    let at_kill = processed();
    assert!(at_kill < EVENTS, "A was killed after the stream was done");

    // B finishes the stream, A's unacknowledged messages included.
    let started = Instant::now();
    while processed() < EVENTS {
        assert!(
            started.elapsed() < Duration::from_secs(300) && b.try_wait().ok().flatten().is_none(),
            "B stopped at {} of {EVENTS} events: {}",
            processed(),
            std::fs::read_to_string(dir.join("b/log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // One pipeline entry per event, none twice.
    assert_eq!(
        count(
            &pg,
            &url,
            "SELECT COUNT(*) FROM audit WHERE action = 'pipeline'"
        ),
        EVENTS
    );
    assert_eq!(
        count(
            &pg,
            &url,
            "SELECT COUNT(*) FROM (SELECT subject FROM audit WHERE action = 'pipeline' GROUP BY subject HAVING COUNT(*) > 1) d"
        ),
        0
    );
    // Every action the audit log says was executed reached the sink, and
    // nothing else: a repeat after the kill carried the same key.
    let executed: BTreeSet<String> = pg
        .psql_on(
            &url,
            "SELECT substr(a.subject, 7) || '/' || (x.ordinality - 1)
             FROM audit a, jsonb_array_elements(a.detail::jsonb -> 'actions') WITH ORDINALITY x
             WHERE a.action = 'pipeline' AND x.value -> 'disposition' ->> 'status' = 'executed'",
        )
        .lines()
        .map(str::to_string)
        .collect();
    // B's answers are in; wait for the sink to have taken the last ones.
    let received = || -> BTreeSet<String> {
        sink.requests()
            .iter()
            .filter_map(|r| r.header("idempotency-key").map(str::to_string))
            .collect()
    };
    let started = Instant::now();
    while received() != executed && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!executed.is_empty());
    let got = received();
    assert_eq!(
        got.len(),
        executed.len(),
        "distinct keys received vs executed: {} missing, {} extra",
        executed.difference(&got).count(),
        got.difference(&executed).count()
    );
    assert_eq!(got, executed);

    // The chain both nodes wrote verifies, from either node's anchor.
    b.kill().expect("stop B");
    b.wait().expect("reap B");
    for node in ["a", "b"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_evos"))
            .arg("--data-dir")
            .arg(dir.join(node).join("data"))
            .args(["--store", &url, "audit", "verify", "--json"])
            .output()
            .expect("evos audit verify");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert_eq!(v["intact"], true, "node {node}: {v}");
        assert_eq!(v["anchored"], true, "node {node}: {v}");
    }
}
