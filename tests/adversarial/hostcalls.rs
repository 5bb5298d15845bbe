//! Host-call abuse: a plugin attacking the host through the calls it is
//! allowed to make (handles, big arguments, the log, env, kv).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use evos::capability::kv::MemoryKv;
use evos::{CallOutput, CallReport, Outcome, Plugin, Runtime};
use serde_json::{Value, json};

use crate::support::*;

/// Call `host-abuse` (as loaded in `plugin`) with one attack.
pub async fn abuse(rt: &Runtime, plugin: &Arc<Plugin>, op: Value) -> CallReport {
    let event = json!({
        "id": "abuse-1",
        "kind": "test.host-abuse",
        "source": "adversarial-test",
        "payload": op,
        "trace_id": "",
    });
    call_json(rt, plugin, event).await
}

/// The JSON report of a successful attack call.
pub fn result(r: &CallReport) -> Value {
    match &r.output {
        Some(CallOutput::Actions(actions)) if actions.len() == 1 => (*actions[0].payload).clone(),
        _ => panic!("no abuse-report action: {r:?}"),
    }
}

/// `host-abuse` loaded under `name`, with its manifest edited by `edit`.
pub fn abuser(rt: &Runtime, name: &str, edit: impl Fn(String) -> String) -> Arc<Plugin> {
    let text =
        manifest_text("host-abuse").replace("name = \"host-abuse\"", &format!("name = \"{name}\""));
    let m = manifest_from("host-abuse", &edit(text));
    let plugin = rt
        .load(m, &component("host-abuse"), name)
        .unwrap_or_else(|e| panic!("loading {name}: {e}"));
    rt.register(plugin.clone());
    plugin
}

/// Threat: a plugin creates wasi resources (pollables) in a loop to exhaust host memory
/// through its resource table; the table's cap stops it with a trap and the host serves
/// others.
/// Advisory: GHSA-852m-cvvp-9p4w
#[tokio::test(flavor = "multi_thread")]
async fn resource_flood_stops_at_the_resource_table_cap() {
    let rt = runtime();
    let p = abuser(&rt, "handles-flood", |t| t);
    // Below the cap, handles are fine; 50,000 is past evos's cap (10,000) and
    // far below wasmtime's own default (1,000,000).
    let r = abuse(&rt, &p, json!({"op": "handles", "n": 1000})).await;
    assert!(r.outcome.is_ok(), "{r:?}");
    assert_eq!(result(&r)["held"], 1000);
    let r = abuse(&rt, &p, json!({"op": "handles", "n": 50_000})).await;
    let Outcome::Trap { message } = &r.outcome else {
        panic!("expected a trap at the table cap: {r:?}")
    };
    assert!(message.contains("resource table"), "{message}");
    healthy_call(&rt).await;
}

/// Threat: a plugin passes a huge argument to a host call so the host copies it into its
/// own memory; the per-call hostcall budget traps the guest before the copy.
/// Advisory: GHSA-852m-cvvp-9p4w
#[tokio::test(flavor = "multi_thread")]
async fn oversized_host_call_argument_traps_before_the_host_copies_it() {
    let rt = runtime();
    let p = abuser(&rt, "big-arg", |t| t);
    // 100 KB is within budget (and cut to the line limit).
    let r = abuse(&rt, &p, json!({"op": "big-log", "bytes": 100_000})).await;
    assert!(r.outcome.is_ok(), "{r:?}");
    assert!(r.logs[0].message.len() < 300, "cut to max-line-bytes");
    let over = evos::runtime::HOSTCALL_BYTES + 1024 * 1024;
    let r = abuse(&rt, &p, json!({"op": "big-log", "bytes": over})).await;
    assert!(
        matches!(r.outcome, Outcome::Trap { .. }),
        "a {over}-byte argument must trap: {r:?}"
    );
    assert!(r.logs.is_empty(), "nothing of it was logged: {r:?}");
    healthy_call(&rt).await;
}

/// Threat: a plugin floods the host's log across many short calls, each under the per-call
/// cap; the plugin-wide rate keeps the excess out of the host log (it stays in the bounded
/// call reports, counted) without failing the plugin's calls.
#[tokio::test(flavor = "multi_thread")]
async fn log_rate_limit_holds_across_calls() {
    let rt = runtime();
    // burst 500, 200 lines per second (policies/adversarial/host-abuse.toml).
    let p = abuser(&rt, "log-rate", |t| t);
    let mut suppressed = 0;
    for _ in 0..4 {
        let r = abuse(&rt, &p, json!({"op": "log-burst", "lines": 400})).await;
        assert!(r.outcome.is_ok(), "over the rate is not a failure: {r:?}");
        assert_eq!(r.logs.len(), 400, "the report keeps every line");
        suppressed += r.log_lines_suppressed;
    }
    // 1,600 lines in well under a second: the burst plus what refilled
    // meanwhile reached the host log, the rest was held back.
    let written = 1600 - suppressed;
    assert!((500..1000).contains(&written), "{written} lines written");
    // Tokens come back with time.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = abuse(&rt, &p, json!({"op": "log-burst", "lines": 50})).await;
    assert_eq!(r.log_lines_suppressed, 0, "{r:?}");
}

/// Threat: a plugin forges host log lines or terminal escapes with newlines and control
/// characters, or sends overlong lines; they are escaped and cut.
#[tokio::test(flavor = "multi_thread")]
async fn log_lines_escape_control_characters_and_are_cut() {
    let rt = runtime();
    let p = abuser(&rt, "log-forge", |t| t);
    let forged = "ok\n2026-01-01T00:00:00Z INFO evos: deploy approved\x1b[2J\r";
    let r = abuse(&rt, &p, json!({"op": "log-line", "message": forged})).await;
    assert!(r.outcome.is_ok(), "{r:?}");
    let line = &r.logs[0].message;
    assert!(!line.contains(['\n', '\r', '\x1b']), "{line:?}");
    assert!(line.contains("\\n") && line.contains("\\u{1b}"), "{line:?}");
    let long = "y".repeat(10_000);
    let r = abuse(&rt, &p, json!({"op": "log-line", "message": long})).await;
    let line = &r.logs[0].message;
    assert!(
        line.len() <= 256 + 32 && line.ends_with("[truncated]"),
        "{line}"
    );
}

/// Threat: a plugin reads the host's environment (tokens, paths) through wasi:cli; it sees
/// exactly the granted keys and nothing of the host's.
#[tokio::test(flavor = "multi_thread")]
async fn env_shows_only_granted_keys_never_the_hosts() {
    let host_env = BTreeMap::from([
        ("EVOS_TEST_GRANTED".to_string(), "visible".to_string()),
        ("AWS_SECRET_ACCESS_KEY".to_string(), "hidden".to_string()),
        ("PATH".to_string(), "/usr/bin".to_string()),
    ]);
    let rt = runtime_with_env(host_env);
    let p = abuser(&rt, "env-probe", |t| t);
    let r = abuse(&rt, &p, json!({"op": "env"})).await;
    assert_eq!(
        result(&r)["env"],
        json!({"EVOS_TEST_GRANTED": "visible"}),
        "{r:?}"
    );
    // Not granted: nothing at all, not even the process's own environment.
    let rt = Runtime::new(engine());
    let p = abuser(&rt, "env-none", |t| {
        t.replace("env = [\"EVOS_TEST_GRANTED\"]", "")
    });
    let r = abuse(&rt, &p, json!({"op": "env"})).await;
    assert_eq!(result(&r)["env"], json!({}), "{r:?}");
}

/// Threat: a plugin crafts kv keys (`other/key`, `../other/key`, separators, NUL) or lists
/// prefixes to read another plugin's state; namespaces keep them apart.
#[tokio::test(flavor = "multi_thread")]
async fn kv_keys_cannot_reach_another_plugins_namespace() {
    let rt = Runtime::with_parts(engine(), Arc::new(MemoryKv::default()), BTreeMap::new());
    let a = abuser(&rt, "tenant-a", |t| t);
    let b = abuser(&rt, "tenant-b", |t| t);
    let r = abuse(
        &rt,
        &a,
        json!({"op": "kv-set", "key": "secret", "value": "a-only"}),
    )
    .await;
    assert!(r.outcome.is_ok(), "{r:?}");
    let probe = json!({"op": "kv-probe",
        "keys": ["secret", "tenant-a/secret", "../tenant-a/secret", "tenant-a:secret",
                 "tenant-a\u{0}secret", "/tenant-a/secret", "*"],
        "prefixes": ["", "tenant-a", "../", "/"]});
    let r = abuse(&rt, &b, probe.clone()).await;
    let text = result(&r).to_string();
    assert!(!text.contains("a-only"), "{text}");
    assert!(
        !text.contains("\"secret\"]"),
        "a listing showed a's key: {text}"
    );
    // The owner sees its own key.
    let r = abuse(&rt, &a, probe).await;
    assert!(result(&r).to_string().contains("a-only"), "{r:?}");
}

/// Threat: a trap's message carries what the guest wrote to stderr (an
/// interpreter's traceback), so a guest could flood or forge the message;
/// only the last lines go in, each cut and with control characters escaped.
#[tokio::test(flavor = "multi_thread")]
async fn a_trap_carries_the_last_stderr_lines_bounded_and_escaped() {
    let rt = runtime();
    let p = abuser(&rt, "trap-stderr", |t| t);
    let mut stderr: String = (0..50).map(|i| format!("line {i}\n")).collect();
    stderr.push_str(&format!(
        "KeyError: 'amount' \u{1b}[31mred{}\n",
        "x".repeat(5000)
    ));
    let r = abuse(&rt, &p, json!({"op": "trap", "stderr": stderr})).await;
    let Outcome::Trap { message } = &r.outcome else {
        panic!("expected a trap: {r:?}")
    };
    assert!(message.contains("unreachable"), "{message}");
    assert!(
        message.contains("line 45 | line 46 | line 47 | line 48 | line 49 | KeyError: 'amount'"),
        "{message}"
    );
    assert!(!message.contains("line 44"), "{message}");
    assert!(!message.contains('\u{1b}'), "{message}");
    assert!(message.len() < 1000, "{} bytes", message.len());
    // Every line stays in the call's log.
    assert_eq!(r.logs.iter().filter(|l| l.level == "stderr").count(), 51);
    // A trap without stderr says only what trapped.
    let r = abuse(&rt, &p, json!({"op": "trap"})).await;
    let Outcome::Trap { message } = &r.outcome else {
        panic!("expected a trap: {r:?}")
    };
    assert!(!message.contains("stderr"), "{message}");
}
