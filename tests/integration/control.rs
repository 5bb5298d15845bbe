//! The control plane: deploy, canary, promote, rollback, automatic
//! rollback, hot swap under load, persistence across restarts.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use evos::registry::Registry;
use evos::{CallInput, Outcome};

use crate::support::*;

fn versioned(version: &str) -> (evos::Manifest, Vec<u8>) {
    match version {
        "1.0.0" => (manifest("fraud-score"), component("fraud-score")),
        "1.1.0" => (
            versioned_manifest("1.1.0"),
            component("fraud-score-retrained"),
        ),
        "1.2.0" => (
            versioned_manifest("1.2.0"),
            component("fraud-score-regressed"),
        ),
        other => panic!("no fraud-score {other}"),
    }
}

fn versioned_manifest(version: &str) -> evos::Manifest {
    let path = root().join(format!("policies/versions/fraud-score-{version}.toml"));
    evos::Manifest::load(path).expect("versioned manifest")
}

async fn deploy(reg: &Registry, version: &str, canary: Option<u8>) -> evos::registry::ChangeReport {
    let (m, bytes) = versioned(version);
    reg.deploy(m, &bytes, version, canary, "test")
        .await
        .unwrap_or_else(|e| panic!("deploy {version}: {e}"))
}

/// Call fraud-score with `inputs` in turn until it has no canary, at most
/// `max` times; how many calls that took.
async fn call_until_the_canary_is_gone(reg: &Registry, inputs: &[CallInput], max: usize) -> usize {
    let mut calls = 0;
    while reg.route("fraud-score").expect("route").canary.is_some() && calls < max {
        reg.call("fraud-score", inputs[calls % inputs.len()].clone(), None)
            .await
            .expect("call");
        calls += 1;
    }
    calls
}

fn data_dir(tag: &str) -> crate::support::TempDir {
    crate::support::tempdir(tag)
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_canary_promote_rollback_and_restart_restore_exact_versions() {
    let dir = data_dir("lifecycle");
    let reg = open_registry(&dir);
    let v1 = deploy(&reg, "1.0.0", None).await;
    let v11 = deploy(&reg, "1.1.0", Some(25)).await;
    let route = reg.route("fraud-score").expect("route");
    assert_eq!(route.stable.plugin.digest(), v1.digest);
    let (canary, weight) = route.canary.as_ref().expect("canary");
    assert_eq!((canary.plugin.digest(), *weight), (v11.digest.as_str(), 25));

    reg.promote("fraud-score", "test").await.expect("promote");
    assert_eq!(
        reg.route("fraud-score")
            .expect("route")
            .stable
            .plugin
            .version(),
        "1.1.0"
    );

    // Rollback without a canary restores the previous stable: same digest,
    // same grants (the stored manifest), not whatever is on disk now.
    let back = reg
        .rollback("fraud-score", None, "test")
        .await
        .expect("rollback");
    assert_eq!(back.digest, v1.digest);
    let stable = reg.route("fraud-score").expect("route").stable.clone();
    assert_eq!(
        stable.plugin.manifest().source,
        manifest("fraud-score").source
    );
    assert_eq!(stable.plugin.version(), "1.0.0");

    // --to a version or a digest prefix.
    let to = reg
        .rollback("fraud-score", Some(&v11.digest[..12]), "test")
        .await
        .expect("rollback --to");
    assert_eq!(to.version, "1.1.0");
    let err = reg
        .rollback("fraud-score", Some("9.9.9"), "test")
        .await
        .expect_err("unknown version");
    assert!(
        err.to_string().contains("no version or digest `9.9.9`")
            && err.to_string().contains("1.0.0"),
        "{err}"
    );

    let r = reg
        .call("fraud-score", fraud_traffic()[0].clone(), None)
        .await
        .expect("call");
    assert!(r.outcome.is_ok());
    reg.flush_stats().expect("flush");
    let before = reg.status(None).expect("status");
    drop(reg);

    // A restarted host serves exactly what was committed, stats included.
    let reg = open_registry(&dir);
    let after = reg.status(None).expect("status");
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].stable.digest, before[0].stable.digest);
    assert_eq!(after[0].stable.version, "1.1.0");
    assert_eq!(after[0].stable.calls, 1);
    let actions: Vec<String> = reg
        .store()
        .history("fraud-score")
        .expect("history")
        .into_iter()
        .map(|h| h.action)
        .collect();
    assert_eq!(
        actions,
        ["deploy", "canary", "promote", "rollback", "rollback"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_deploy_changes_nothing_but_is_audited() {
    let dir = data_dir("refused");
    let reg = open_registry(&dir);
    deploy(&reg, "1.0.0", None).await;
    let before = reg.status(None).expect("status");
    let history = reg.store().history("fraud-score").expect("history").len();

    // A component that imports ungranted interfaces, under fraud-score's name.
    let text = manifest_text("import-ungranted")
        .replace("name = \"import-ungranted\"", "name = \"fraud-score\"")
        .replace("kind = \"agent\"", "kind = \"model-adapter\"");
    let m = manifest_from("import-ungranted", &text);
    let err = reg
        .deploy(m, &component("import-ungranted"), "bad", None, "test")
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("evos:plugin/kv"), "{err}");
    // A canary weight out of range, and the same version again.
    let (m, b) = versioned("1.1.0");
    assert!(reg.deploy(m, &b, "x", Some(0), "test").await.is_err());
    let (m, b) = versioned("1.0.0");
    let err = reg
        .deploy(m, &b, "x", None, "test")
        .await
        .expect_err("same version");
    assert!(err.to_string().contains("already deployed"), "{err}");

    let after = reg.status(None).expect("status");
    assert_eq!(after[0].stable.digest, before[0].stable.digest);
    assert!(after[0].canary.is_none());
    assert_eq!(
        reg.store().history("fraud-score").expect("history").len(),
        history
    );
    let audit = reg.store().audit_list(0, None).expect("audit");
    assert_eq!(
        audit
            .iter()
            .filter(|e| e.action == "deploy-refused")
            .count(),
        3
    );
    // Nothing about the refused component reached the blob store.
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(component(
        "import-ungranted",
    )));
    assert!(!reg.store().has_blob(&digest));
}

#[tokio::test(flavor = "multi_thread")]
async fn canary_share_matches_its_weight_and_keys_are_sticky() {
    let dir = data_dir("weight");
    let reg = open_registry(&dir);
    deploy(&reg, "1.0.0", None).await;
    deploy(&reg, "1.1.0", Some(20)).await;
    let inputs = fraud_traffic();
    let n = 2000;
    let mut canary = 0;
    for i in 0..n {
        let r = reg
            .call("fraud-score", inputs[i % inputs.len()].clone(), None)
            .await
            .expect("call");
        assert!(r.outcome.is_ok(), "{:?}", r.outcome);
        if &*r.version == "1.1.0" {
            canary += 1;
        }
    }
    // Binomial(2000, 0.2): mean 400, sd ~17.9; 5 sd either side.
    assert!(
        (310..=490).contains(&canary),
        "canary got {canary} of {n} calls at weight 20%"
    );

    // The same routing key always reaches the same version.
    for key in ["claimant-1", "claimant-2", "claimant-3", "claimant-4"] {
        let mut seen = HashSet::new();
        for _ in 0..20 {
            let r = reg
                .call("fraud-score", inputs[0].clone(), Some(key))
                .await
                .expect("call");
            seen.insert(r.version);
        }
        assert_eq!(seen.len(), 1, "key {key} moved between versions: {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_regressed_canary_is_rolled_back_automatically_and_a_healthy_one_is_not() {
    let inputs = fraud_traffic();
    // Healthy 1.1.0 canary: no rollback after plenty of traffic.
    let dir = data_dir("healthy");
    let reg = open_registry(&dir);
    deploy(&reg, "1.0.0", None).await;
    deploy(&reg, "1.1.0", Some(50)).await;
    for i in 0..400 {
        reg.call("fraud-score", inputs[i % inputs.len()].clone(), None)
            .await
            .expect("call");
    }
    let route = reg.route("fraud-score").expect("route");
    assert!(route.canary.is_some(), "a healthy canary was rolled back");

    // Regressed 1.2.0 canary: rolled back within its window.
    let dir = data_dir("regressed");
    let reg = open_registry(&dir);
    let stable = deploy(&reg, "1.0.0", None).await;
    deploy(&reg, "1.2.0", Some(50)).await;
    let calls = call_until_the_canary_is_gone(&reg, &inputs, 1000).await;
    let route = reg.route("fraud-score").expect("route");
    assert!(
        route.canary.is_none(),
        "the regressed canary survived {calls} calls"
    );
    assert_eq!(route.stable.plugin.digest(), stable.digest);
    // min-calls 50 at 50%: judged after roughly 100 calls, well inside 1000.
    assert!(calls < 400, "rollback took {calls} calls");

    let history = reg.store().history("fraud-score").expect("history");
    let last = history.last().expect("history");
    assert_eq!(last.action, "auto-rollback");
    let audit = reg.store().audit_list(0, None).expect("audit");
    let entry = audit
        .iter()
        .find(|e| e.action == "auto-rollback")
        .expect("audited");
    let evidence = &entry.detail["evidence"];
    assert!(
        evidence["threshold"].is_string()
            && evidence["observed"].as_f64() > evidence["limit"].as_f64(),
        "{entry:?}"
    );
    assert!(evidence["canary"]["calls"].as_u64().unwrap_or(0) >= 50);

    // The decision survives a restart.
    drop(reg);
    let reg = open_registry(&dir);
    assert!(reg.route("fraud-score").expect("route").canary.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn hot_swap_under_concurrent_load_fails_no_call() {
    let dir = data_dir("hotswap");
    let reg = open_registry(&dir);
    let v1 = deploy(&reg, "1.0.0", None).await;
    let v11 = deploy(&reg, "1.1.0", None).await;
    let live: HashSet<String> = [v1.digest.clone(), v11.digest.clone()].into();
    let inputs = Arc::new(fraud_traffic());
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers = 8;
    let per_worker = 1250; // 10,000 calls
    let mut handles = Vec::new();
    for w in 0..workers {
        let (reg, inputs, done) = (reg.clone(), inputs.clone(), done.clone());
        handles.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for i in 0..per_worker {
                let input = inputs[(w * per_worker + i) % inputs.len()].clone();
                let r = reg.call("fraud-score", input, None).await.expect("call");
                seen.push((r.outcome.clone(), r.digest.clone()));
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            seen
        }));
    }
    // 24 swaps spread over the run (one per 400 calls answered): alternate
    // the stable version by rollback, which restores stored versions.
    let mut swaps = 0;
    while swaps < 24 {
        while done.load(std::sync::atomic::Ordering::Relaxed) < (swaps + 1) * 400 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let to = if swaps % 2 == 0 {
            &v1.digest
        } else {
            &v11.digest
        };
        reg.rollback("fraud-score", Some(&to[..16]), "test")
            .await
            .expect("swap");
        swaps += 1;
    }
    let mut total = 0;
    let mut by_digest: BTreeMap<String, usize> = BTreeMap::new();
    for h in handles {
        for (outcome, digest) in h.await.expect("join") {
            assert_eq!(outcome, Outcome::Ok, "a call failed during hot swap");
            assert!(
                live.contains(&*digest),
                "answered by an unknown version {digest}"
            );
            *by_digest.entry(digest.to_string()).or_default() += 1;
            total += 1;
        }
    }
    assert_eq!(total, 10_000);
    assert_eq!(swaps, 24);
    assert_eq!(by_digest.values().sum::<usize>(), 10_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn kv_data_and_quotas_survive_a_restart() {
    let dir = data_dir("kv");
    let reg = open_registry(&dir);
    let m = manifest("kv-flood");
    reg.deploy(m, &component("kv-flood"), "kv-flood", None, "test")
        .await
        .expect("deploy");
    let event =
        CallInput::from_json(evos::manifest::Kind::Agent, sample("kv-flood")).expect("input");
    let r = reg
        .call("kv-flood", event.clone(), None)
        .await
        .expect("call");
    assert!(
        matches!(r.outcome, Outcome::Denied { .. }),
        "{:?}",
        r.outcome
    );
    drop(reg);

    let reg = open_registry(&dir);
    // The 100 keys are still there: the very first write after restart is
    // refused by the persisted quota.
    let r = reg.call("kv-flood", event, None).await.expect("call");
    let Outcome::Denied { capability, reason } = &r.outcome else {
        panic!("{:?}", r.outcome)
    };
    assert_eq!(capability, "kv");
    assert!(reason.contains("holds 100 keys"), "{reason}");
    let audit = reg.store().audit_list(0, None).expect("audit");
    assert!(
        audit
            .iter()
            .filter(|e| e.action == "kv-quota-refused")
            .count()
            >= 2
    );
}

/// Regression: `rollback --to` a version the host had rolled back
/// automatically reinstated it without a word. It needs `force`, and the
/// refusal says why the version was rolled back.
#[tokio::test(flavor = "multi_thread")]
async fn reinstating_an_automatically_rolled_back_version_needs_force() {
    let inputs = fraud_traffic();
    let dir = data_dir("force");
    let reg = open_registry(&dir);
    deploy(&reg, "1.0.0", None).await;
    deploy(&reg, "1.2.0", Some(50)).await;
    call_until_the_canary_is_gone(&reg, &inputs, 1000).await;
    assert!(reg.route("fraud-score").expect("route").canary.is_none());
    let refused = reg
        .rollback("fraud-score", Some("1.2.0"), "test")
        .await
        .expect_err("refused without force");
    let message = refused.to_string();
    assert!(
        message.contains("rolled back automatically") && message.contains("--force"),
        "{message}"
    );
    assert!(message.contains("rate"), "says why: {message}");
    assert_eq!(
        reg.route("fraud-score")
            .expect("route")
            .stable
            .plugin
            .version(),
        "1.0.0"
    );
    let report = reg
        .rollback_with("fraud-score", Some("1.2.0"), true, "test")
        .await
        .expect("forced");
    assert_eq!(report.version, "1.2.0");
    let last = reg.store().history("fraud-score").expect("history");
    assert_eq!(last.last().expect("entry").detail["forced"], true);
}
