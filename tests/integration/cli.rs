//! The `evos` binary: output, JSON and exit codes (0 ok, 1 negative, 2 bad input).

use evos::store::StateStore;
use std::process::{Command, Output};

use crate::support::*;

fn evos(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_evos"))
        .args(args)
        .current_dir(root())
        .env("EVOS_DATA_DIR", root().join("target/evos-cli-test"))
        .output()
        .expect("run evos")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn path(p: std::path::PathBuf) -> String {
    p.display().to_string()
}

#[test]
fn check_json_on_import_ungranted_lists_under_grants_and_exits_1() {
    let out = evos(&[
        "check",
        &path(manifest_path("import-ungranted")),
        &path(component_path("import-ungranted")),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["ok"], false);
    let under: Vec<String> = report["under_granted"]
        .as_array()
        .expect("under_granted")
        .iter()
        .map(|f| f["subject"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        under.iter().any(|s| s.starts_with("evos:plugin/kv")),
        "{under:?}"
    );
    // wasi:http without a grant is linked inert, and listed as such.
    assert_eq!(under.len(), 1, "{under:?}");
    let inert: Vec<&str> = report["reachable"]
        .as_array()
        .expect("reachable")
        .iter()
        .filter(|r| r["refused"] == true)
        .map(|r| r["import"].as_str().unwrap_or_default())
        .collect();
    assert!(
        inert
            .iter()
            .any(|i| i.starts_with("wasi:http/outgoing-handler")),
        "{report}"
    );
    assert!(
        report["over_granted"]
            .as_array()
            .expect("over_granted")
            .is_empty()
    );
}

#[test]
fn check_passes_every_example_and_warns_on_over_grants() {
    for name in [
        "claims-webhook",
        "fraud-score",
        "claims-triage",
        "payout-limit",
        "pii-guard",
    ] {
        let out = evos(&[
            "check",
            &path(manifest_path(name)),
            &path(component_path(name)),
        ]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out));
        assert!(
            !text(&out).contains("warning"),
            "{name} is over-granted: {}",
            text(&out)
        );
    }
    // pii-guard never reads config: granting it is an over-grant warning.
    let dir = crate::support::tempdir("overgrant");
    let m = dir.join("pii-guard.toml");
    std::fs::write(
        &m,
        format!("{}\n[config]\nunused = 1\n", manifest_text("pii-guard")),
    )
    .unwrap();
    let out = evos(&[
        "check",
        &path(m),
        &path(component_path("pii-guard")),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["over_granted"][0]["subject"], "config", "{report}");
}

#[test]
fn inspect_lists_digest_imports_and_exports() {
    let out = evos(&["inspect", &path(component_path("payout-limit")), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(info["digest"].as_str().map(str::len), Some(64));
    let exports = info["exports"].to_string();
    assert!(exports.contains("evos:plugin/policy-api"), "{exports}");
    let imports = info["imports"].to_string();
    assert!(
        imports.contains("evos:plugin/config") && imports.contains("evos:plugin/log"),
        "{imports}"
    );
}

#[test]
fn invoke_prints_outcome_fuel_and_duration() {
    let sample = root().join("plugins/payout-limit/invoke-input.json");
    let out = evos(&[
        "invoke",
        &path(manifest_path("payout-limit")),
        &path(component_path("payout-limit")),
        "--input",
        &path(sample),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["outcome"], "ok");
    assert_eq!(report["output"]["decision"]["decision"], "allow");
    assert!(report["fuel_consumed"].as_u64().unwrap_or(0) > 0);
    assert!(report["duration_us"].is_u64());
}

#[test]
fn invoke_an_agent_resolves_its_model_through_the_app_file() {
    let sample = root().join("plugins/claims-triage/invoke-input.json");
    let out = evos(&[
        "invoke",
        &path(manifest_path("claims-triage")),
        &path(component_path("claims-triage")),
        "--input",
        &path(sample),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("approve-payout") && t.contains("nested call") && t.contains("fraud-score"),
        "{t}"
    );
}

#[test]
fn invoke_exits_1_when_the_outcome_is_not_ok() {
    let sample = root().join("plugins/adversarial/deep-recursion/invoke-input.json");
    let out = evos(&[
        "invoke",
        &path(manifest_path("deep-recursion")),
        &path(component_path("deep-recursion")),
        "--input",
        &path(sample),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("stack-overflow"));
}

#[test]
fn bad_manifests_exit_2_naming_file_line_and_fix() {
    let dir = crate::support::tempdir("badmanifest");
    let cases = [
        ("syntax.toml", "[plugin\nname = \"x\"\n", "line 1"),
        (
            "unknown.toml",
            "[plugin]\nname = \"x\"\nkind = \"agent\"\nversion = \"1.0.0\"\ncolour = \"red\"\n",
            "unknown field `colour`",
        ),
        (
            "duration.toml",
            "[plugin]\nname = \"x\"\nkind = \"agent\"\nversion = \"1.0.0\"\n[limits]\ntimeout = \"soon\"\n",
            "invalid timeout \"soon\"",
        ),
        (
            "size.toml",
            "[plugin]\nname = \"x\"\nkind = \"agent\"\nversion = \"1.0.0\"\n[limits]\nmemory = \"64 parsecs\"\n",
            "invalid memory size",
        ),
    ];
    for (file, body, expect) in cases {
        let m = dir.join(file);
        std::fs::write(&m, body).unwrap();
        let out = evos(&["check", &path(m), &path(component_path("payout-limit"))]);
        assert_eq!(out.status.code(), Some(2), "{file}: {}", text(&out));
        let t = text(&out);
        assert!(t.contains(file) && t.contains(expect), "{file}: {t}");
    }
    // A missing component says how to build it.
    let out = evos(&[
        "invoke",
        &path(manifest_path("payout-limit")),
        &path(dir.join("missing.wasm")),
        "--input",
        "-",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("missing.wasm"), "{}", text(&out));
}

#[test]
fn run_drives_the_claims_example_through_the_pipeline() {
    let out = evos(&[
        "run",
        "claims-webhook",
        "--input",
        "plugins/claims-webhook/claims.json",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let events = report["events"].as_array().expect("events");
    assert!(events.len() >= 3, "{report}");
    let statuses: Vec<&str> = events
        .iter()
        .flat_map(|e| e["actions"].as_array().into_iter().flatten())
        .filter_map(|a| a["status"].as_str())
        .collect();
    for s in ["allowed", "escalated", "denied"] {
        assert!(statuses.contains(&s), "no {s} action in {statuses:?}");
    }
}

fn evos_in(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_evos"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .current_dir(root())
        .output()
        .expect("run evos")
}

#[test]
fn platform_walkthrough_and_audit_tamper_detection() {
    let dir = crate::support::tempdir("walkthrough");
    let v12 = path(root().join("policies/versions/fraud-score-1.2.0.toml"));
    let steps: Vec<Vec<String>> = vec![
        vec![
            "deploy".into(),
            path(manifest_path("fraud-score")),
            path(component_path("fraud-score")),
        ],
        vec![
            "deploy".into(),
            v12.clone(),
            path(component_path("fraud-score-regressed")),
            "--canary".into(),
            "50".into(),
        ],
    ];
    for s in &steps {
        let args: Vec<&str> = s.iter().map(String::as_str).collect();
        let out = evos_in(&dir, &args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
    }
    // Traffic through the route: the regressed canary fails some calls and
    // is rolled back by the host.
    let out = evos_in(
        &dir,
        &[
            "call",
            "fraud-score",
            "--input",
            "plugins/fraud-score/traffic.jsonl",
            "--times",
            "400",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "some calls failed, so exit 1: {}",
        text(&out)
    );
    assert!(text(&out).contains("no canary"), "{}", text(&out));
    let out = evos_in(&dir, &["status", "fraud-score", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(status[0]["canary"].is_null(), "{status}");
    assert!(status[0]["stable"]["calls"].as_u64().unwrap_or(0) > 0);
    let out = evos_in(&dir, &["history", "fraud-score"]);
    assert!(
        text(&out).contains("auto-rollback") && text(&out).contains("max-"),
        "{}",
        text(&out)
    );

    let out = evos_in(&dir, &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = evos_in(&dir, &["audit", "log", "--json"]);
    let log: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let actions: Vec<&str> = log
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(
        &actions[..3],
        ["deploy", "canary", "auto-rollback"],
        "{actions:?}"
    );

    // Flip one byte of entry 2's detail behind the host's back.
    let db = rusqlite::Connection::open(dir.join("evos.db")).expect("db");
    db.execute(
        "UPDATE audit SET detail = replace(detail, '1.2.0', '1.2.1') WHERE seq = 2",
        [],
    )
    .expect("tamper");
    let out = evos_in(&dir, &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("entry 2"), "{}", text(&out));
    db.execute(
        "UPDATE audit SET detail = replace(detail, '1.2.1', '1.2.0') WHERE seq = 2",
        [],
    )
    .expect("restore");
    assert_eq!(evos_in(&dir, &["audit", "verify"]).status.code(), Some(0));

    // Delete the newest entry: a truncated tail.
    db.execute(
        "DELETE FROM audit WHERE seq = (SELECT MAX(seq) FROM audit)",
        [],
    )
    .expect("truncate");
    let out = evos_in(&dir, &["audit", "verify", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["problem"]["kind"], "truncated-tail", "{v}");
}

#[test]
fn demo_runs_the_main_job_end_to_end() {
    let out = evos(&["demo"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = text(&out);
    for expected in [
        "-> executed",
        "-> escalated",
        "-> denied",
        "is executed",
        "intact=true",
        "evos_review_queue_depth 0",
    ] {
        assert!(t.contains(expected), "missing {expected:?} in:\n{t}");
    }
}

#[test]
fn json_logs_carry_each_pipeline_step_with_plugin_version_and_digest() {
    let out = Command::new(env!("CARGO_BIN_EXE_evos"))
        .args([
            "--log-format",
            "json",
            "run",
            "claims-webhook",
            "--input",
            "plugins/claims-webhook/claims.json",
        ])
        .current_dir(root())
        .env("EVOS_DATA_DIR", root().join("target/evos-cli-test"))
        .env("EVOS_LOG", "evos::pipeline=debug")
        .output()
        .expect("run evos");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let steps: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))
        })
        .filter(|v| v["fields"]["message"] == "step finished")
        .collect();
    let kinds: std::collections::BTreeSet<String> = steps
        .iter()
        .filter_map(|v| v["span"]["step"].as_str().map(String::from))
        .collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["agent", "ingest", "policy"]
    );
    for s in &steps {
        let span = &s["span"];
        assert!(
            span["plugin"].is_string() && span["version"].is_string(),
            "{s}"
        );
        assert_eq!(span["digest"].as_str().map(str::len), Some(64), "{s}");
    }
    assert!(
        steps
            .iter()
            .any(|s| s["span"]["trace_id"].as_str().map(str::len) == Some(32))
    );
}

/// Regression: `audit verify` said "chain and anchor agree" when there was
/// no anchor file at all.
#[test]
fn audit_verify_without_an_anchor_says_so() {
    let dir = tempdir("verify-no-anchor");
    let store = evos::store::SqliteStore::open(&dir).expect("store");
    store
        .audit(evos::audit::NewEntry {
            actor: "test",
            action: "note",
            subject: "x",
            digest: None,
            detail: serde_json::json!({}),
        })
        .expect("audit");
    drop(store);
    std::fs::remove_file(dir.join("audit.anchor")).expect("anchor");
    let out = Command::new(env!("CARGO_BIN_EXE_evos"))
        .arg("--data-dir")
        .arg(&dir)
        .args(["audit", "verify"])
        .output()
        .expect("run");
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(!said.contains("anchor agree"), "{said}");
    assert!(said.contains("no anchor file"), "{said}");
}

/// Regression: logs carried ANSI colours into files and pipes.
#[test]
fn logs_are_plain_text_when_stderr_is_not_a_terminal() {
    let out = Command::new(env!("CARGO_BIN_EXE_evos"))
        .args([
            "invoke",
            &path(manifest_path("log-flood")),
            &path(component_path("log-flood")),
            "--input",
            &path(root().join("plugins/adversarial/log-flood/invoke-input.json")),
        ])
        .current_dir(root())
        .env("EVOS_DATA_DIR", tempdir("plain-logs"))
        .env("EVOS_LOG", "info")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("INFO"), "the plugin logged: {stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr}");
}

/// Regression: `evos up` and `evos demo` run outside the repository said
/// only "cannot read the app file".
#[test]
fn commands_outside_the_repository_say_where_they_looked() {
    let elsewhere = tempdir("elsewhere");
    for cmd in ["up", "demo"] {
        let out = Command::new(env!("CARGO_BIN_EXE_evos"))
            .arg(cmd)
            .current_dir(&elsewhere)
            .env("EVOS_DATA_DIR", elsewhere.join("data"))
            .output()
            .expect("run");
        let said = text(&out);
        assert_eq!(out.status.code(), Some(2), "{said}");
        assert!(
            said.contains(&format!(
                "looked at {}",
                elsewhere.join("evos.toml").display()
            )) && said.contains("--app"),
            "{cmd}: {said}"
        );
    }
}

/// Regression: `evos run claims-webhook --input <plugin>/sample.json`
/// failed without a word on why: those files are input for one plugin
/// call. They are named `invoke-input.json`, and `run` says what it takes.
#[test]
fn run_with_an_invoke_input_says_what_run_takes() {
    let out = evos(&[
        "run",
        "claims-webhook",
        "--input",
        &path(root().join("plugins/claims-webhook/invoke-input.json")),
    ]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("evos invoke") && said.contains("plugins/claims-webhook/claims.json"),
        "{said}"
    );
    assert!(!root().join("plugins/claims-webhook/sample.json").exists());
}

#[test]
fn a_shadow_from_the_cli_is_compared_then_promoted() {
    let dir = crate::support::tempdir("cli-shadow");
    let v11 = path(root().join("policies/versions/fraud-score-1.1.0.toml"));
    let ok = |args: &[&str]| {
        let out = evos_in(&dir, args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        text(&out)
    };
    ok(&[
        "deploy",
        &path(manifest_path("fraud-score")),
        &path(component_path("fraud-score")),
    ]);
    let out = ok(&[
        "deploy",
        &v11,
        &path(component_path("fraud-score-retrained")),
        "--shadow",
    ]);
    assert!(
        out.contains("shadow  1.1.0") && out.contains("mirroring 100%"),
        "{out}"
    );
    // --share needs --shadow; --canary and --shadow exclude each other.
    let out = evos_in(
        &dir,
        &[
            "deploy",
            &v11,
            &path(component_path("fraud-score-retrained")),
            "--share",
            "5",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = evos_in(
        &dir,
        &[
            "deploy",
            &v11,
            &path(component_path("fraud-score-retrained")),
            "--shadow",
            "--canary",
            "5",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    ok(&[
        "call",
        "fraud-score",
        "--input",
        "plugins/fraud-score/traffic.jsonl",
        "--times",
        "40",
    ]);
    let out = ok(&["status", "fraud-score"]);
    assert!(
        out.contains("shadow vs version") && out.contains("/40 compared"),
        "{out}"
    );
    let out = evos_in(&dir, &["status", "fraud-score", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let pair = &status[0]["shadow"]["agreement"][0];
    assert_eq!(pair["compared"], 40, "{status}");
    assert_eq!(status[0]["stable"]["calls"], 40, "{status}");
    assert_eq!(status[0]["shadow"]["calls"], 40, "{status}");

    let out = ok(&["promote", "fraud-score"]);
    assert!(out.contains("promote fraud-score 1.1.0"), "{out}");
    let out = ok(&["history", "fraud-score"]);
    assert!(out.contains("shadow") && out.contains("promote"), "{out}");
}

#[test]
fn feedback_labels_a_recorded_action_and_is_audited() {
    let dir = crate::support::tempdir("cli-feedback");
    let out = evos_in(
        &dir,
        &[
            "run",
            "claims-webhook",
            "--input",
            "plugins/claims-webhook/claims.json",
            "--record",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = evos_in(
        &dir,
        &[
            "feedback",
            "C-1001",
            "--label",
            "fraud",
            "--comment",
            "staged accident",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("labelled action 0 of event C-1001 as fraud"),
        "{}",
        text(&out)
    );
    let out = evos_in(&dir, &["feedback", "C-1001", "--label", "legit", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let label: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(label["label"], "legit");
    // An event the host never recorded, a word that is not a label: exit 1,
    // nothing kept.
    let out = evos_in(&dir, &["feedback", "C-0000", "--label", "fraud"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("no recorded decision"),
        "{}",
        text(&out)
    );
    let out = evos_in(&dir, &["feedback", "C-1001", "--label", "FRAUD"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = evos_in(&dir, &["audit", "log", "--json"]);
    let log: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let labels: Vec<&str> = log
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == "feedback")
        .filter_map(|e| e["detail"]["label"].as_str())
        .collect();
    assert_eq!(labels, ["fraud", "legit"]);
}

#[test]
fn a_progressive_rollout_from_the_cli_stops_a_model_at_its_quality_gate() {
    let dir = crate::support::tempdir("cli-rollout");
    let ok = |args: &[&str]| {
        let out = evos_in(&dir, args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        text(&out)
    };
    ok(&[
        "deploy",
        &path(manifest_path("fraud-score")),
        &path(component_path("fraud-score")),
    ]);
    let out = ok(&[
        "deploy",
        &path(root().join("policies/rollouts/fraud-score-1.3.0.toml")),
        &path(component_path("fraud-score-blind")),
    ]);
    assert!(out.contains("rollout fraud-score 1.3.0"), "{out}");
    let out = ok(&["status", "fraud-score"]);
    assert!(
        out.contains("rollout of 1.3.0: step 1 of 3 (shadow 100%)")
            && out.contains("min-agreement-with-stable"),
        "{out}"
    );
    ok(&[
        "call",
        "fraud-score",
        "--input",
        "plugins/fraud-score/traffic.jsonl",
        "--times",
        "200",
    ]);
    let out = ok(&["history", "fraud-score"]);
    assert!(
        out.contains("auto-rollback") && out.contains("min-agreement-with-stable"),
        "{out}"
    );
    let out = evos_in(&dir, &["status", "fraud-score", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(status[0]["stable"]["version"], "1.0.0");
    assert!(
        status[0]["rollout"].is_null() && status[0]["shadow"].is_null(),
        "{status}"
    );
}

#[test]
fn exported_labels_train_new_weights() {
    let dir = crate::support::tempdir("cli-labels");
    // Twelve claims: half look like fraud (cash, urgent, stolen; round
    // amounts), half do not.
    let claims: Vec<serde_json::Value> = (0..12)
        .map(|i| {
            let fraud = i % 2 == 0;
            serde_json::json!({
                "claim_id": format!("C-30{i:02}"),
                "claimant_id": format!("CL-{}", 700 + i % 4),
                "amount": if fraud { 2000.0 + 500.0 * f64::from(i) } else { 180.0 + 37.5 * f64::from(i) },
                "policy_number": format!("POL-{}", 40000 + i),
                "incident": if fraud {
                    "Urgent: car stolen, no witnesses. Pay cash."
                } else {
                    "Rear-ended at a traffic light; photos of the damage and the repair estimate are attached."
                },
                "region": "north",
            })
        })
        .collect();
    let input = dir.join("claims.json");
    std::fs::write(&input, serde_json::json!({ "claims": claims }).to_string()).expect("write");
    let out = evos_in(
        &dir,
        &[
            "run",
            "claims-webhook",
            "--input",
            &path(input.clone()),
            "--record",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for i in 0..12 {
        let label = if i % 2 == 0 { "fraud" } else { "legit" };
        let out = evos_in(
            &dir,
            &["feedback", &format!("C-30{i:02}"), "--label", label],
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    let out = evos_in(
        &dir,
        &[
            "labels",
            "export",
            "--plugin",
            "fraud-score",
            "--since",
            "1h",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(rows.len(), 12, "{rows:?}");
    for row in &rows {
        assert_eq!(row["kind"], "model-adapter");
        let class = row["class"].as_str().expect("class");
        let expected = if row["label"] == "fraud" {
            "positive"
        } else {
            "negative"
        };
        assert_eq!(class, expected, "{row}");
        assert_eq!(
            row["features"].as_object().map(|f| f.len()),
            Some(7),
            "{row}"
        );
        assert!(row["output"]["score"].is_f64(), "{row}");
    }
    let labels = dir.join("labels.jsonl");
    std::fs::write(&labels, &out.stdout).expect("write labels");
    let weights = dir.join("weights.json");
    let trained = Command::new("python3")
        .arg(root().join("plugins/fraud-score/train/train.py"))
        .args([
            "--labels",
            &path(labels),
            "--version",
            "9.9.9",
            "--out",
            &path(weights.clone()),
        ])
        .output()
        .expect("python3 runs train.py");
    assert!(
        trained.status.success(),
        "{}",
        String::from_utf8_lossy(&trained.stderr)
    );
    let w: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&weights).expect("weights written")).expect("JSON");
    assert_eq!(w["version"], "9.9.9");
    assert_eq!(w["training"]["n"], 12);
    assert!(
        w["training"]["generator"]
            .as_str()
            .unwrap_or("")
            .contains("human labels"),
        "{w}"
    );
    assert_eq!(w["weights"].as_array().map(Vec::len), Some(7));
}

#[test]
fn replay_from_the_cli_reports_and_rescores() {
    let dir = crate::support::tempdir("cli-replay");
    let app = crate::recording::app_file(&dir, "sample = { \"*\" = 1.0 }");
    let claims: Vec<serde_json::Value> = (0..8)
        .map(|i| {
            crate::recording::claim(
                &format!("C-40{i}"),
                &format!("CL-{}", i % 2),
                if i % 2 == 0 { 1500.0 } else { 120.0 },
                if i % 2 == 0 {
                    "Phone stolen at the station."
                } else {
                    crate::recording::CALM
                },
            )
        })
        .collect();
    let input = dir.join("claims.json");
    std::fs::write(&input, serde_json::json!({ "claims": claims }).to_string()).expect("write");
    let out = evos_in(
        &dir,
        &[
            "run",
            "claims-webhook",
            "--record",
            "--app",
            &path(app),
            "--input",
            &path(input),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let manifest = path(root().join("policies/rollouts/fraud-score-1.3.0.toml"));
    let component = path(root().join("target/plugins/fraud-score-blind.wasm"));
    let args = [
        "replay",
        "fraud-score",
        "--candidate",
        &manifest,
        "--component",
        &component,
    ];
    let out = evos_in(&dir, &[&args[..], &["--json"]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["replayed"], 8, "{report}");
    assert_eq!(report["candidate_version"], "1.3.0");
    assert_eq!(report["recorded_versions"]["1.0.0"], 8);
    let out = evos_in(&dir, &args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let shown = text(&out);
    for line in [
        "replay fraud-score: candidate 1.3.0",
        "agreement with the recorded output",
        "agreement with humans",
        "latency p50/p95/p99",
    ] {
        assert!(shown.contains(line), "{line} in {shown}");
    }
    // Batch mode: one answer per line of the file.
    let traffic = path(root().join("plugins/fraud-score/traffic.jsonl"));
    let out = evos_in(&dir, &[&args[..], &["--input", &traffic]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let lines = String::from_utf8_lossy(&out.stdout).lines().count();
    assert_eq!(lines, 200);
    assert!(text(&out).contains("answered 200 inputs"), "{}", text(&out));
    // What is missing is named.
    let out = evos_in(&dir, &["replay", "fraud-score", "--candidate", &manifest]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("--component"), "{}", text(&out));
    let out = evos_in(&dir, &["replay", "fraud-score", "--candidate", "1.1.0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("no versions of `fraud-score` are stored"),
        "{}",
        text(&out)
    );
}

#[test]
fn the_evolution_demo_closes_the_loop() {
    let dir = crate::support::tempdir("cli-evolve");
    let out = evos_in(&dir, &["demo", "--evolve"]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    // Drift found by the watch, in the audit log.
    assert!(shown.contains(": DRIFTING ("), "{shown}");
    assert!(shown.contains(" drift          evos"), "{shown}");
    // Retrained from labels, replayed: it agrees better with people.
    let line = shown
        .lines()
        .find(|l| l.contains("agreement with humans over"))
        .unwrap_or_else(|| panic!("{shown}"));
    let rates: Vec<f64> = line
        .split_whitespace()
        .filter_map(|w| w.parse::<f64>().ok().filter(|x| *x <= 1.0))
        .collect();
    assert_eq!(rates.len(), 2, "{line}");
    assert!(rates[0] > rates[1], "{line}");
    // Rolled out in judged steps and promoted by the host.
    for marker in [
        " rollout-step   evos",
        " promote        evos",
        "audit chain intact: true",
    ] {
        assert!(shown.contains(marker), "{marker} in {shown}");
    }
    assert!(
        shown.contains("fraud-score 2.0.0, retrained from human labels, is the stable version"),
        "{shown}"
    );
}
