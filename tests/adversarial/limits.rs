//! Each adversarial plugin ends in its typed outcome, and the host serves
//! other plugins normally right after.

use std::time::Duration;

use evos::Outcome;
use evos::manifest::Fuel;
use evos::types::GuestError;
use serde_json::json;

use crate::support::*;

/// Threat: a plugin spins forever to hold a worker; the wall-clock limit stops it and
/// other plugins are served meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn spin_forever_times_out_and_others_keep_running() {
    let rt = runtime();
    // A long wall-clock budget, so the spinner is certainly still running
    // while the healthy plugin is called.
    let mut m = manifest("spin-forever");
    m.limits.timeout = evos::manifest::Timeout(Duration::from_secs(3));
    let spin = load_with(&rt, "spin-forever", m);
    let healthy = load(&rt, "payout-limit");
    let spinning = {
        let (rt, spin) = (rt.clone(), spin.clone());
        tokio::spawn(async move { call_json(&rt, &spin, sample("spin-forever")).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let ok = call_json(&rt, &healthy, sample("payout-limit")).await;
    assert!(ok.outcome.is_ok(), "{ok:?}");
    assert!(
        !spinning.is_finished(),
        "the healthy call had to wait for the spinner"
    );
    let r = spinning.await.expect("join");
    assert_eq!(r.outcome, Outcome::Timeout, "{r:?}");
    // Limits never fire early.
    assert!(r.duration_us >= 3_000_000, "stopped too early: {r:?}");

    // The manifest's own 300ms limit applies too.
    let spin = load(&rt, "spin-forever");
    let r = call_json(&rt, &spin, sample("spin-forever")).await;
    assert_eq!(r.outcome, Outcome::Timeout, "{r:?}");
    assert!(r.duration_us >= 300_000, "stopped too early: {r:?}");
    healthy_call(&rt).await;
}

/// Threat: a plugin burns CPU; its fuel budget stops it with `out-of-fuel`.
#[tokio::test(flavor = "multi_thread")]
async fn spin_forever_with_a_small_fuel_budget_runs_out_of_fuel() {
    let rt = runtime();
    let mut m = manifest("spin-forever");
    m.limits.fuel = Fuel(5_000_000);
    let spin = load_with(&rt, "spin-forever", m);
    let r = call_json(&rt, &spin, sample("spin-forever")).await;
    assert_eq!(r.outcome, Outcome::OutOfFuel, "{r:?}");
    assert!(r.fuel_consumed >= 5_000_000 - 1000, "{r:?}");
    healthy_call(&rt).await;
}

/// Threat: a plugin grows its memory without bound; growth past the manifest limit is
/// refused and the call ends `out-of-memory`.
#[tokio::test(flavor = "multi_thread")]
async fn memory_hog_is_refused_memory() {
    let rt = runtime();
    let hog = load(&rt, "memory-hog");
    let r = call_json(&rt, &hog, sample("memory-hog")).await;
    let Outcome::OutOfMemory { detail } = &r.outcome else {
        panic!("{r:?}")
    };
    assert!(detail.contains(&(16 * 1024 * 1024).to_string()), "{detail}");
    healthy_call(&rt).await;
}

/// Threat: a plugin recurses without bound to overflow the host stack; it ends
/// `stack-overflow` with a backtrace, the host survives.
#[tokio::test(flavor = "multi_thread")]
async fn deep_recursion_overflows_the_stack_with_a_demangled_backtrace() {
    let rt = runtime();
    let deep = load(&rt, "deep-recursion");
    let r = call_json(&rt, &deep, sample("deep-recursion")).await;
    assert_eq!(r.outcome, Outcome::StackOverflow, "{r:?}");
    assert!(!r.backtrace.is_empty(), "{r:?}");
    assert!(
        r.backtrace
            .iter()
            .any(|f| f.contains("deep_recursion::") && !f.contains("_ZN")),
        "expected demangled guest frames: {:?}",
        &r.backtrace[..r.backtrace.len().min(5)]
    );
    healthy_call(&rt).await;
}

/// Threat: a plugin posts data to a host outside its allowlist; nothing leaves and the
/// refusal is in the report.
#[tokio::test(flavor = "multi_thread")]
async fn http_exfil_is_denied_and_nothing_leaves() {
    let canary = Downstream::start(200);
    let rt = runtime();
    let exfil = load(&rt, "http-exfil");
    let targets = [
        canary.url("/steal"),
        format!("http://allowed.invalid@127.0.0.1:{}/api/x", canary.port),
        format!("http://allowed.invalid:{}/api/x", canary.port),
        "http://169.254.169.254/latest/meta-data/".to_string(),
    ];
    let event = json!({"id": "x", "kind": "test.http-exfil", "payload": {"targets": targets}});
    let r = call_json(&rt, &exfil, event).await;
    let Outcome::Denied { capability, reason } = &r.outcome else {
        panic!("{r:?}")
    };
    assert_eq!(capability, "http");
    assert!(
        reason.contains("not in the http allowlist") || reason.contains("userinfo"),
        "{reason}"
    );
    assert_eq!(
        r.refusals.len(),
        4,
        "every attempt is reported: {:?}",
        r.refusals
    );
    assert!(
        canary.requests().is_empty(),
        "a request got out: {:?}",
        canary.requests()
    );
    healthy_call(&rt).await;
}

/// Threat: a component imports privileged interfaces its manifest does not grant; it
/// is refused before it runs. `wasi:http` is the exception: JavaScript's
/// runtime imports it for `fetch`, so it is linked inert, and is not named.
#[tokio::test(flavor = "multi_thread")]
async fn import_ungranted_is_refused_at_link_time_naming_imports_and_grants() {
    let rt = runtime();
    let err = rt
        .load(
            manifest("import-ungranted"),
            &component("import-ungranted"),
            "import-ungranted",
        )
        .err()
        .expect("must not load");
    let msg = err.to_string();
    assert!(msg.contains("evos:plugin/kv"), "{msg}");
    assert!(!msg.contains("wasi:http/outgoing-handler"), "{msg}");
    assert!(
        msg.contains("import-ungranted.toml line"),
        "names the manifest line: {msg}"
    );
    assert!(msg.contains("kv = {"), "shows the grant to add: {msg}");
    assert!(rt.get("import-ungranted").is_none());
    healthy_call(&rt).await;
}

/// Threat: a component imports `wasi:http` without an `http` grant. It is
/// linked inert: the component loads, and its request is refused before
/// any connection is made, reported with the grant that is missing.
#[tokio::test(flavor = "multi_thread")]
async fn http_not_granted_is_linked_inert_and_every_request_is_refused() {
    let rt = runtime();
    let text = manifest_text("import-ungranted").replace("log = true", "log = true\nkv = {}");
    let m = manifest_from("import-ungranted", &text);
    let p = rt
        .load(m, &component("import-ungranted"), "import-ungranted")
        .expect("loads: wasi:http is linked inert");
    let r = call_json(
        &rt,
        &p,
        json!({"id": "e-1", "kind": "probe", "payload": {}}),
    )
    .await;
    let Outcome::Denied { capability, reason } = &r.outcome else {
        panic!("expected a refusal: {:?}", r.outcome);
    };
    assert_eq!(capability, "http");
    assert!(
        reason.contains("GET http://127.0.0.1:9/import-ungranted refused")
            && reason.contains("grants no `http`")
            && reason.contains("http = ["),
        "{reason}"
    );
    assert!(r.suppressed.is_empty() && r.refusals.len() == 1, "{r:?}");
}

/// Threat: a plugin floods the log; lines past the per-call cap are dropped and counted.
#[tokio::test(flavor = "multi_thread")]
async fn log_flood_is_capped_and_reported() {
    let rt = runtime();
    let flood = load(&rt, "log-flood");
    let r = call_json(&rt, &flood, sample("log-flood")).await;
    let Outcome::Denied { capability, reason } = &r.outcome else {
        panic!("{r:?}")
    };
    assert_eq!(capability, "log");
    assert!(reason.contains("1000 lines"), "{reason}");
    assert_eq!(r.logs.len(), 1000);
    assert!(r.logs.iter().all(|l| l.message.len() <= 4096 + 16));
    let dropped: u64 = r.refusals.iter().map(|x| x.count).sum();
    assert_eq!(dropped, 100_000 - 1000, "every dropped line is counted");
    healthy_call(&rt).await;
}

/// Threat: a plugin floods stdout; the capture stops at its cap and the guest keeps
/// running.
#[tokio::test(flavor = "multi_thread")]
async fn stdout_flood_is_captured_up_to_its_cap_without_crashing_the_guest() {
    let rt = runtime();
    // Formatting 100 MB through println! costs more fuel than logging it.
    let mut m = manifest("log-flood");
    m.limits.fuel = Fuel(5_000_000_000);
    m.limits.timeout = evos::manifest::Timeout(Duration::from_secs(30));
    let flood = load_with(&rt, "log-flood", m);
    let event = json!({"id": "s", "kind": "test.log-flood", "payload": {"stdout": true}});
    let r = call_json(&rt, &flood, event).await;
    // The guest's writes all succeed (a failed println! would trap); the
    // excess is dropped and reported.
    let Outcome::Denied { capability, reason } = &r.outcome else {
        panic!("{r:?}")
    };
    assert_eq!(capability, "log");
    assert!(
        reason.contains("stdout") && reason.contains("dropped"),
        "{reason}"
    );
    let captured: usize = r
        .logs
        .iter()
        .filter(|l| l.level == "stdout")
        .map(|l| l.message.len() + 1)
        .sum();
    // +1: the last, cut-off line has no newline of its own.
    assert!(
        captured <= 64 * 1024 + 1 && captured > 60 * 1024,
        "{captured}"
    );
    healthy_call(&rt).await;
}

/// Threat: a plugin fills kv with keys; writes past `max-keys` are refused and nothing
/// past the quota is stored.
#[tokio::test(flavor = "multi_thread")]
async fn kv_flood_stops_at_the_key_quota() {
    let rt = runtime();
    let flood = load(&rt, "kv-flood");
    let r = call_json(&rt, &flood, sample("kv-flood")).await;
    let Outcome::Denied { capability, reason } = &r.outcome else {
        panic!("{r:?}")
    };
    assert_eq!(capability, "kv");
    assert!(
        reason.contains("max-keys") && reason.contains("100"),
        "{reason}"
    );
    // The guest saw the quota error too.
    let again = call_json(&rt, &flood, sample("kv-flood")).await;
    assert!(matches!(again.outcome, Outcome::Denied { .. }), "{again:?}");
    assert!(!matches!(
        again.outcome,
        Outcome::GuestError {
            error: GuestError::Internal(_)
        }
    ));
    healthy_call(&rt).await;
}

/// Threat: a plugin fills kv with large values; writes past `max-total-bytes` are
/// refused and usage stays at the quota.
#[tokio::test(flavor = "multi_thread")]
async fn kv_flood_stops_at_the_total_bytes_quota() {
    let rt = runtime();
    // 1 KiB values under keys like "flood/0": the fourth write would take
    // the namespace past 3 KiB + 100 bytes.
    let text = manifest_text("kv-flood").replace(
        "kv = { max-value-bytes = 1024, max-keys = 100 }",
        "kv = { max-value-bytes = 1024, max-keys = 100, max-total-bytes = 3172 }",
    );
    let flood = load_with(&rt, "kv-flood", manifest_from("kv-flood", &text));
    let r = call_json(&rt, &flood, sample("kv-flood")).await;
    let Outcome::Denied { capability, reason } = &r.outcome else {
        panic!("{r:?}")
    };
    assert_eq!(capability, "kv");
    assert!(
        reason.contains("max-total-bytes") && reason.contains("3172"),
        "{reason}"
    );
    healthy_call(&rt).await;
}
