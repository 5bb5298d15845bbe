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
}
