//! The compile cache: hit on second load, and nothing deserialized that this
//! host did not write.

use std::sync::atomic::Ordering;

use evos::{Engine, EngineConfig, Runtime};

use crate::support::*;

fn engine_at(dir: &std::path::Path) -> Engine {
    Engine::new(EngineConfig {
        cache_dir: Some(dir.to_path_buf()),
        max_instances: 8,
        ..Default::default()
    })
    .expect("engine")
}

#[tokio::test(flavor = "multi_thread")]
async fn second_load_hits_the_cache_and_tampering_is_refused() {
    let dir = crate::support::tempdir("cache");
    let bytes = component("payout-limit");

    let first = Runtime::new(engine_at(&dir));
    let p = first
        .load(manifest("payout-limit"), &bytes, "payout-limit")
        .expect("load");
    assert!(!p.cache_hit());

    let second = Runtime::new(engine_at(&dir));
    let p = second
        .load(manifest("payout-limit"), &bytes, "payout-limit")
        .expect("load");
    assert!(p.cache_hit(), "the second load must come from the cache");
    assert_eq!(
        second.engine().cache_stats().hits.load(Ordering::Relaxed),
        1
    );
    // The cached code really runs.
    let r = call_json(&second, &p, sample("payout-limit")).await;
    assert!(r.outcome.is_ok(), "{r:?}");

    // Flip a byte in the cached code: the entry is refused and recompiled.
    let cwasm = walk(&dir)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .expect("cwasm");
    let mut code = std::fs::read(&cwasm).unwrap();
    let mid = code.len() / 2;
    code[mid] ^= 0xff;
    std::fs::write(&cwasm, &code).unwrap();
    let third = Runtime::new(engine_at(&dir));
    let p = third
        .load(manifest("payout-limit"), &bytes, "payout-limit")
        .expect("load");
    assert!(!p.cache_hit());
    assert_eq!(
        third
            .engine()
            .cache_stats()
            .rejected
            .load(Ordering::Relaxed),
        1
    );
    let r = call_json(&third, &p, sample("payout-limit")).await;
    assert!(r.outcome.is_ok(), "{r:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
