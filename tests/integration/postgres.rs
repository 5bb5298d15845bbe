//! The PostgreSQL side of the storage boundary against a real server the
//! test starts (127.0.0.1, a temp dir, stopped at the end).

use evos::store::postgres::PgStore;

use std::sync::Arc;

use evos::store::{StateStore, conformance};

use crate::support::{PgServer, tempdir};

#[test]
fn nodes_starting_together_apply_the_schema_once() {
    let pg = PgServer::start();
    let url = pg.url();
    let scratch = tempdir("pg-node");
    // Four nodes start at once against an empty database.
    let starting: Vec<_> = (0..4)
        .map(|i| {
            let url = url.clone();
            let dir = scratch.join(format!("node-{i}"));
            std::thread::spawn(move || PgStore::connect(&url, dir))
        })
        .collect();
    let nodes: Vec<PgStore> = starting
        .into_iter()
        .map(|t| t.join().expect("join").expect("connect"))
        .collect();
    for node in &nodes {
        assert_eq!(node.schema_version().expect("version"), 3);
    }
    assert_eq!(pg.psql("SELECT COUNT(*) FROM evos_schema"), "1");
    let tables = nodes[0].tables().expect("tables");
    for t in [
        "agreement",
        "audit",
        "audit_head",
        "console_sessions",
        "blobs",
        "control_generation",
        "dead_letters",
        "decisions",
        "deployments",
        "drift",
        "history",
        "kv",
        "kv_usage",
        "labels",
        "processed_events",
        "recorded_calls",
        "recordings",
        "reviews",
        "tokens",
        "version_stats",
        "versions",
        "windows",
    ] {
        assert!(tables.iter().any(|x| x == t), "{t} in {tables:?}");
    }
    // One more node later finds nothing to apply.
    drop(nodes);
    assert_eq!(
        PgStore::connect(&url, scratch.join("later"))
            .expect("connect")
            .schema_version()
            .unwrap(),
        3
    );
    // A database a newer evos migrated is refused, with what to do.
    pg.psql("UPDATE evos_schema SET version = 99");
    let e = PgStore::connect(&url, scratch.join("newer"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("schema version 99") && e.contains("upgrade evos"),
        "{e}"
    );
}

#[test]
fn a_bad_url_or_an_absent_server_is_named_without_the_password() {
    let scratch = tempdir("pg-node");
    let e = PgStore::connect("mysql://x", &*scratch)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("not a PostgreSQL URL") && e.contains("postgres://"),
        "{e}"
    );
    let e = PgStore::connect(
        "postgres://evos:hunter2@127.0.0.1:1/evos?connect_timeout=2",
        &*scratch,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("cannot connect") && !e.contains("hunter2"),
        "{e}"
    );
}

#[test]
fn the_postgres_store_passes_the_conformance_checks() {
    let pg = PgServer::start();
    let scratch = tempdir("pg-node");
    let made = std::sync::atomic::AtomicUsize::new(0);
    let fresh = || -> Arc<dyn StateStore> {
        let n = made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = scratch.join(n.to_string());
        Arc::new(PgStore::connect(&pg.database(), dir).expect("connect"))
    };
    assert_eq!(conformance::run(&fresh), Ok(()));
    assert_eq!(made.into_inner(), conformance::CHECKS.len());
}
