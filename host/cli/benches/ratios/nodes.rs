//! Several nodes on PostgreSQL: the pipeline on PostgreSQL against SQLite
//! on one node, two nodes against one on the same database, and how fast a
//! deployment change on one node is live on another. Each row starts a
//! PostgreSQL server of its own on 127.0.0.1 (as the `postgres` user when
//! run as root) and stops it at the end.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::evos::registry::Registry;
use ::evos::store::postgres::PgStore;
use ::evos::{EngineConfig, Manifest};
use evos_test_support::PgServer;

use super::{
    Bench, CALM_INCIDENT, CONCURRENCY, Row, deployed_claims_app, pipeline_rate, root, stat,
};

/// A registry over the PostgreSQL database at `url`, with its own node
/// directory, and the claims app deployed (by the first node) or found
/// deployed (by the others).
fn pg_node(
    b: &Bench,
    url: &str,
    tag: &str,
    app: &Arc<::evos::app::App>,
) -> anyhow::Result<(PathBuf, Arc<Registry>)> {
    let dir = std::env::temp_dir().join(format!("evos-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Arc::new(PgStore::connect(url, &dir)?);
    let reg = Registry::with_store(
        store,
        EngineConfig {
            cache_dir: Some(dir.join("cache")),
            max_instances: 128,
            ..Default::default()
        },
        BTreeMap::new(),
    )?;
    for p in &app.plugins {
        if reg.route(&p.name).is_none() {
            let bytes = std::fs::read(&p.component)?;
            b.rt.block_on(reg.deploy(p.manifest.clone(), &bytes, &p.name, None, "bench"))?;
        }
    }
    Ok((dir, reg))
}

fn options(reg: &Arc<Registry>) -> ::evos::pipeline::RunOptions {
    ::evos::pipeline::RunOptions {
        execute: true,
        reviews: Some(::evos::review::ReviewQueue::new(reg.store().clone())),
        audit: Some(reg.store().clone()),
        concurrency: CONCURRENCY,
        ..Default::default()
    }
}

/// The pipeline row's path on one node, its state on PostgreSQL against
/// SQLite, alternated in one run.
pub fn pg_vs_sqlite(b: &Bench) -> anyhow::Result<Row> {
    let pg = PgServer::start();
    let (sqlite_dir, sqlite, app) = deployed_claims_app(b, "nodes-sqlite")?;
    let (pg_dir, node) = pg_node(b, &pg.database(), "nodes-pg", &app)?;
    let (on_sqlite, on_pg) = (options(&sqlite), options(&node));
    let batches = if b.runs <= 3 { 2 } else { 5 };
    let mut n = 0;
    pipeline_rate(b, (&sqlite, &app), &on_sqlite, 1, &mut n, CALM_INCIDENT)?;
    pipeline_rate(b, (&node, &app), &on_pg, 1, &mut n, CALM_INCIDENT)?;
    let (mut p, mut s) = (Vec::new(), Vec::new());
    for _ in 0..b.runs {
        s.push(pipeline_rate(
            b,
            (&sqlite, &app),
            &on_sqlite,
            batches,
            &mut n,
            CALM_INCIDENT,
        )?);
        p.push(pipeline_rate(
            b,
            (&node, &app),
            &on_pg,
            batches,
            &mut n,
            CALM_INCIDENT,
        )?);
    }
    let _ = std::fs::remove_dir_all(&sqlite_dir);
    let _ = std::fs::remove_dir_all(&pg_dir);
    let (p, s) = (stat(p), stat(s));
    let ratio = p.median / s.median;
    Ok(Row {
        name: "pipeline events/s, state on PostgreSQL vs SQLite (one node)".into(),
        evos: p,
        baseline: Some(("SQLite".into(), s)),
        unit: "events/s",
        target: "≥ 0.5×".into(),
        met: ratio >= 0.5,
        ratio: Some(ratio),
        note: "the pipeline row's path (audit on, every action executed) with the state in a local PostgreSQL 15 (fsync on, group commit, the chain head locked per group) against SQLite in WAL mode with group commit; the database server runs on the same 2 cores".into(),
    })
}

/// Two nodes on one PostgreSQL database, each driving half the batches at
/// once, against one node driving them all.
pub fn two_nodes_vs_one(b: &Bench) -> anyhow::Result<Row> {
    let pg = PgServer::start();
    let url = pg.database();
    let (_, _, app) = deployed_claims_app(b, "nodes-app")?;
    let (dir_a, a) = pg_node(b, &url, "nodes-a", &app)?;
    let (dir_b, second) = pg_node(b, &url, "nodes-b", &app)?;
    let batches = if b.runs <= 3 { 4 } else { 8 };
    let mut n = 0;
    pipeline_rate(b, (&a, &app), &options(&a), 1, &mut n, CALM_INCIDENT)?;
    pipeline_rate(
        b,
        (&second, &app),
        &options(&second),
        1,
        &mut n,
        CALM_INCIDENT,
    )?;
    let (mut two, mut one) = (Vec::new(), Vec::new());
    for run in 0..b.runs {
        one.push(pipeline_rate(
            b,
            (&a, &app),
            &options(&a),
            batches,
            &mut n,
            CALM_INCIDENT,
        )?);
        // Both nodes at once, each from a thread of its own; their rates
        // add up (each ran for about the same time).
        let rates = std::thread::scope(|scope| {
            let halves: Vec<_> = [(&a, 0usize), (&second, 1)]
                .into_iter()
                .map(|(node, k)| {
                    let app = app.clone();
                    scope.spawn(move || {
                        let mut next = 1_000_000 * (run + 1) + 100_000 * k;
                        pipeline_rate(
                            b,
                            (node, &app),
                            &options(node),
                            batches / 2,
                            &mut next,
                            CALM_INCIDENT,
                        )
                    })
                })
                .collect();
            halves
                .into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| anyhow::anyhow!("a node's thread panicked"))?
                })
                .collect::<anyhow::Result<Vec<f64>>>()
        })?;
        two.push(rates.iter().sum());
    }
    let _ = std::fs::remove_dir_all(&dir_a);
    let _ = std::fs::remove_dir_all(&dir_b);
    let (t, o) = (stat(two), stat(one));
    let ratio = t.median / o.median;
    Ok(Row {
        name: "pipeline events/s, two nodes vs one on the same PostgreSQL".into(),
        evos: t,
        baseline: Some(("one node".into(), o)),
        unit: "events/s",
        target: "≥ 0.8×".into(),
        met: ratio >= 0.8,
        ratio: Some(ratio),
        note: "two registries on one database, each driving half the batches at once from its own thread, against one driving them all; both nodes and the database share this machine's 2 cores, so this row shows what sharing one chain head and one database costs, not scaling — on separate machines the nodes' plugin work (most of an event's time) runs in parallel and only the commits serialize".into(),
    })
}

/// How long after a deployment change commits on node A node B serves it:
/// B watches the store as `evos up` does (`watch_generation`, told at once
/// by PostgreSQL NOTIFY, polling every 250 ms besides) and syncs.
pub fn propagation(b: &Bench) -> anyhow::Result<Row> {
    let pg = PgServer::start();
    let url = pg.database();
    let (_, _, app) = deployed_claims_app(b, "propagation-app")?;
    let (dir_a, a) = pg_node(b, &url, "propagation-a", &app)?;
    let (dir_b, second) = pg_node(b, &url, "propagation-b", &app)?;
    let watcher = {
        let second = second.clone();
        b.rt.spawn(async move {
            let mut generations = second
                .store()
                .clone()
                .watch_generation(Duration::from_millis(250));
            while generations.changed().await.is_ok() {
                let _ = second.sync().await;
            }
        })
    };
    let manifest = Manifest::load(root().join("policies/versions/fraud-score-1.1.0.toml"))?;
    let bytes = std::fs::read(root().join("target/plugins/fraud-score-retrained.wasm"))?;
    let canary = |reg: &Registry| reg.route("fraud-score").is_some_and(|r| r.canary.is_some());
    let changes = if b.runs <= 3 { 20 } else { 60 };
    let mut delays = Vec::new();
    for i in 0..changes {
        let deploying = i % 2 == 0;
        let started = Instant::now();
        if deploying {
            b.rt.block_on(a.deploy(manifest.clone(), &bytes, "1.1.0", Some(10), "bench"))?;
        } else {
            b.rt.block_on(a.rollback("fraud-score", None, "bench"))?;
        }
        while canary(&second) != deploying {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(10),
                "node B never served change {i}"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        delays.push(started.elapsed().as_secs_f64() * 1e3);
    }
    watcher.abort();
    let _ = std::fs::remove_dir_all(&dir_a);
    let _ = std::fs::remove_dir_all(&dir_b);
    delays.sort_by(|x, y| x.total_cmp(y));
    let p99 = delays[((delays.len() as f64 * 0.99).ceil() as usize).clamp(1, delays.len()) - 1];
    let s = stat(delays);
    Ok(Row {
        name: "deploy propagation to another node, p50 (p99 in the note)".into(),
        evos: s,
        baseline: None,
        unit: "ms",
        target: "p99 < 1,000 ms".into(),
        met: p99 < 1000.0,
        ratio: None,
        note: format!(
            "{changes} changes (a canary deployed, then rolled back) committed on node A, timed until node B serves them; B is told by PostgreSQL NOTIFY and rebuilds the route (the component compiled from its own cache); p99 {p99:.1} ms, max {:.1} ms",
            s.max
        ),
    })
}
