//! Plugins in Python and JavaScript built and run through evos.
//!
//! These tests need componentize-py (`pip install -r
//! sdk/python/requirements-build.txt`), mypy and Node.js with the JS SDK's
//! packages (`npm ci --prefix sdk/js`); `.ci/run` installs them.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;

use evos::types::{Decision, GuestError};
use evos::{CallOutput, Outcome};
use serde_json::{Value, json};

use crate::support::*;

fn evos_bin() -> &'static str {
    env!("CARGO_BIN_EXE_evos")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn evos_in(dir: &Path, data: &Path, args: &[&str]) -> Output {
    Command::new(evos_bin())
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .current_dir(dir)
        .output()
        .expect("run evos")
}

/// The Python fraud-score and JavaScript payout-limit of `polyglot.toml`,
/// and the Python payout-limit, built once per test run by `evos build
/// --test` (their own tests, the check, an invoke on their sample inputs)
/// into target/plugins/fraud-score-py.wasm, payout-limit-js.wasm and
/// payout-limit-py.wasm.
fn polyglot_built() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let data = tempdir("polyglot-build");
        let out = evos_in(&root(), &data, &["build", "polyglot.toml", "--test"]);
        assert!(
            out.status.success(),
            "evos build polyglot.toml: {}",
            text(&out)
        );
        let shown = text(&out);
        assert!(
            shown.contains("copied to target/plugins/fraud-score-py.wasm")
                && shown.contains("copied to target/plugins/payout-limit-js.wasm"),
            "{shown}"
        );
        let out = evos_in(
            &root(),
            &data,
            &[
                "build",
                "plugins/python/payout-limit",
                "--test",
                "--out",
                "target/plugins/payout-limit-py.wasm",
            ],
        );
        assert!(
            out.status.success(),
            "evos build plugins/python/payout-limit: {}",
            text(&out)
        );
        assert!(
            text(&out).contains("copied to target/plugins/payout-limit-py.wasm"),
            "{}",
            text(&out)
        );
    });
}

fn python_fraud_score(rt: &evos::Runtime) -> std::sync::Arc<evos::Plugin> {
    polyglot_built();
    let m = evos::Manifest::load(root().join("plugins/python/fraud-score/plugin.toml"))
        .expect("manifest");
    load_with(rt, "fraud-score-py", m)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_fraud_score_passes_the_rust_builds_checks() {
    let rt = runtime();
    let model = python_fraud_score(&rt);
    crate::examples::fraud_score_checks(&rt, &model).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_fraud_score_answers_exactly_as_the_rust_build_on_recorded_traffic() {
    let (rust_rt, python_rt) = (runtime(), runtime());
    let rust = load(&rust_rt, "fraud-score");
    let python = python_fraud_score(&python_rt);
    let traffic = fraud_traffic();
    assert_eq!(traffic.len(), 200);
    for input in traffic {
        let a = rust_rt.call(&rust, input.clone()).await.expect("rust");
        let b = python_rt
            .call(&python, input.clone())
            .await
            .expect("python");
        assert_eq!(a.outcome, Outcome::Ok, "{a:?}");
        assert_eq!(b.outcome, Outcome::Ok, "{b:?}");
        let (Some(CallOutput::Model(a)), Some(CallOutput::Model(b))) = (&a.output, &b.output)
        else {
            panic!("{a:?} {b:?}")
        };
        assert_eq!((&a.model, &a.usage), (&b.model, &b.usage));
        assert_eq!(a.output["label"], b.output["label"], "{input:?}");
        let score = |v: &Value| v["score"].as_f64().expect("score");
        assert!(
            (score(&a.output) - score(&b.output)).abs() < 1e-12,
            "{} != {}",
            a.output,
            b.output
        );
        for (name, value) in a.output["features"].as_object().expect("features") {
            assert_eq!(&b.output["features"][name], value, "{name}");
        }
    }
    // The same refusal, naming the same field.
    for bad in [
        json!({"amount": 10.0, "prior_claims": 1.5, "incident": "x"}),
        json!({"amount": 10.0, "prior_claims": 1, "incident": "x", "region": 7}),
        json!([1]),
    ] {
        let input = json!({"input": bad, "parameters": {}});
        let a = call_json(&rust_rt, &rust, input.clone()).await;
        let b = call_json(&python_rt, &python, input).await;
        let invalid = |o: &Outcome| match o {
            Outcome::GuestError {
                error: GuestError::InvalidInput(m),
            } => m.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(invalid(&a.outcome), invalid(&b.outcome));
    }
}

/// The payout-limit builds in other languages: component name, manifest.
const PAYOUT_LIMITS: [(&str, &str); 2] = [
    ("payout-limit-js", "plugins/js/payout-limit/plugin.toml"),
    ("payout-limit-py", "plugins/python/payout-limit/plugin.toml"),
];

#[tokio::test(flavor = "multi_thread")]
async fn the_javascript_and_python_payout_limits_pass_the_rust_builds_checks() {
    polyglot_built();
    for (name, manifest) in PAYOUT_LIMITS {
        let rt = runtime();
        let m = evos::Manifest::load(root().join(manifest)).expect("manifest");
        crate::examples::payout_limit_checks(&rt, name, m).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_javascript_and_python_payout_limits_decide_exactly_as_the_rust_build() {
    polyglot_built();
    for (name, manifest) in PAYOUT_LIMITS {
        payout_limit_parity(name, manifest).await;
    }
}

async fn payout_limit_parity(name: &str, manifest: &str) {
    let (rust_rt, js_rt) = (runtime(), runtime());
    let rust = load(&rust_rt, "payout-limit");
    let m = evos::Manifest::load(root().join(manifest)).expect("manifest");
    let js = load_with(&js_rt, name, m);
    let decide = |rt: evos::Runtime, p, payload: Value| async move {
        let input = json!({"action": {"kind": "approve-payout", "event_id": "C-1", "payload": payload, "rationale": "r"},
            "event": {"id": "C-1", "kind": "claim.submitted", "payload": {}}});
        let r = call_json(&rt, &p, input).await;
        assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
        match r.output {
            Some(CallOutput::Decision(d)) => d,
            other => panic!("{other:?}"),
        }
    };
    for amount in [
        0.0, 0.5, 999.0, 999.99, 1000.0, 4321.5, 10000.0, 10000.01, 25000.0, -1.0,
    ] {
        let payload = json!({"claim_id": "C-1", "amount": amount});
        let a = decide(rust_rt.clone(), rust.clone(), payload.clone()).await;
        let b = decide(js_rt.clone(), js.clone(), payload).await;
        assert_eq!(a, b, "{name}: amount {amount}");
    }
    for payload in [json!({"amount": "lots"}), json!({}), json!([1, 2])] {
        let a = decide(rust_rt.clone(), rust.clone(), payload.clone()).await;
        let b = decide(js_rt.clone(), js.clone(), payload.clone()).await;
        let (Decision::Deny(x), Decision::Deny(y)) = (&a, &b) else {
            panic!("{payload}: {a:?} {b:?}")
        };
        assert!(
            x.contains("no numeric amount") && y.contains("no numeric amount"),
            "{x} / {y}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_claims_app_with_python_and_javascript_plugins_runs_end_to_end() {
    polyglot_built();
    let downstream = Downstream::start(200);
    // polyglot.toml loads the components `evos build` copied.
    let app = app_posting_to("polyglot.toml", &downstream.url("/claims/payouts"));
    let fraud = app.get("fraud-score").expect("fraud-score");
    assert!(fraud.component.ends_with("fraud-score-py.wasm"));
    crate::examples::pipeline_checks(app, &downstream).await;
}

/// Where the plugins of the `evos new` test are written: one directory per
/// run, its Rust plugins sharing one cargo target directory.
fn scratch() -> TempDir {
    let dir = tempdir("evos-new");
    std::fs::create_dir_all(dir.join("cargo-target")).expect("mkdir");
    dir
}

#[test]
fn evos_new_writes_plugins_that_build_pass_their_tests_and_run_in_every_language() {
    let dir = scratch();
    let data = dir.join("data");
    for lang in ["rust", "python", "js"] {
        for kind in ["policy", "agent", "connector", "model-adapter"] {
            let name = format!("{lang}-{kind}");
            let out = evos_in(&dir, &data, &["new", &name, "--kind", kind, "--lang", lang]);
            assert!(out.status.success(), "evos new {name}: {}", text(&out));
            let plugin = dir.join(&name);
            if lang == "rust" {
                std::os::unix::fs::symlink(dir.join("cargo-target"), plugin.join("target"))
                    .expect("symlink");
            }
            let out = evos_in(&dir, &data, &["build", &name, "--test", "--json"]);
            assert!(out.status.success(), "evos build {name}: {}", text(&out));
            let built: Value = serde_json::from_slice(&out.stdout).expect("json");
            let built = &built[0];
            assert_eq!(built["check_ok"], true, "{name}: {built}");
            assert_eq!(built["tests_ok"], true, "{name}: {built}");
            assert_eq!(built["invoke_outcome"], "ok", "{name}: {built}");
            // Least privilege both ways: every import granted, every grant used.
            let component = built["component"].as_str().expect("component");
            let manifest = plugin.join("plugin.toml");
            let out = evos_in(
                &dir,
                &data,
                &["check", manifest.to_str().unwrap(), component, "--json"],
            );
            let check: Value = serde_json::from_slice(&out.stdout).expect("json");
            assert_eq!(check["ok"], true, "{name}: {check}");
            assert_eq!(check["over_granted"], json!([]), "{name}: {check}");
            let evos_imports: Vec<&str> = check["reachable"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|r| r["import"].as_str())
                .filter(|i| i.starts_with("evos:plugin/") && !i.starts_with("evos:plugin/types"))
                .collect();
            let expected = match kind {
                "policy" | "agent" => 2,
                _ => 1,
            };
            assert_eq!(evos_imports.len(), expected, "{name}: {evos_imports:?}");
            if lang == "python" {
                let config = root().join("sdk/python/pyproject.toml");
                let out = Command::new("python3")
                    .args(["-m", "mypy", "--config-file", config.to_str().unwrap(), "."])
                    .current_dir(&plugin)
                    .output()
                    .expect("mypy");
                assert!(out.status.success(), "mypy {name}: {}", text(&out));
            }
        }
    }
    // A second `evos new` of the same name writes nothing.
    let out = evos_in(&dir, &data, &["new", "rust-policy", "--kind", "policy"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("already exists"), "{}", text(&out));
    let bad = evos_in(&dir, &data, &["new", "Bad_Name", "--kind", "policy"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(!dir.join("Bad_Name").exists());
}

/// A plugin whose code raises answers with an error, or, for a policy,
/// denies (a broken policy fails closed); the traceback reaches the log.
#[test]
fn sdk_exceptions_become_errors_and_broken_policies_deny_with_the_traceback_logged() {
    let dir = scratch();
    let data = dir.join("data");
    let cases = [
        (
            "python",
            "policy",
            "app.py",
            "        max_amount = config.get_float(\"max-amount\")\n",
            "        max_amount = config.get_float(\"max-amount\")\n        raise KeyError(\"amount\")\n",
        ),
        (
            "js",
            "policy",
            "plugin.js",
            "    const maxAmount = config.getNumber('max-amount');\n",
            "    const maxAmount = config.getNumber('max-amount');\n    null.boom();\n",
        ),
        (
            "python",
            "agent",
            "app.py",
            "        threshold = config.get_float(\"threshold\")\n",
            "        threshold = config.get_float(\"threshold\")\n        raise InvalidInput(\"no claim here\")\n",
        ),
        (
            "js",
            "model-adapter",
            "plugin.js",
            "    const { amount } = parseObject(request.input);\n",
            "    const { amount } = parseObject(request.input);\n    undefinedFunction(amount);\n",
        ),
    ];
    for (lang, kind, file, from, to) in cases {
        let name = format!("broken-{lang}-{kind}");
        let out = evos_in(&dir, &data, &["new", &name, "--kind", kind, "--lang", lang]);
        assert!(out.status.success(), "{}", text(&out));
        let source = dir.join(&name).join(file);
        let code = std::fs::read_to_string(&source).unwrap();
        assert!(code.contains(from), "{name}: template changed");
        std::fs::write(&source, code.replace(from, to)).unwrap();
        let out = evos_in(&dir, &data, &["build", &name]);
        assert!(out.status.success(), "{name}: {}", text(&out));
        let manifest = dir.join(&name).join("plugin.toml");
        let component = dir.join(&name).join(format!("{name}.wasm"));
        let input = dir.join(&name).join("input.json");
        let out = evos_in(
            &dir,
            &data,
            &[
                "invoke",
                manifest.to_str().unwrap(),
                component.to_str().unwrap(),
                "--input",
                input.to_str().unwrap(),
                "--json",
            ],
        );
        let report: Value = serde_json::from_slice(&out.stdout).expect("report");
        let logs: Vec<&str> = report["logs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["level"] == "stderr")
            .filter_map(|l| l["message"].as_str())
            .collect();
        match (lang, kind) {
            ("python", "policy") => {
                assert_eq!(report["output"]["decision"]["decision"], "deny", "{report}");
                let reason = report["output"]["decision"]["reason"].as_str().unwrap();
                assert!(reason.contains("policy failed: KeyError"), "{reason}");
                assert!(logs.iter().any(|l| l.contains("Traceback")), "{logs:?}");
            }
            ("js", "policy") => {
                assert_eq!(report["output"]["decision"]["decision"], "deny", "{report}");
                let reason = report["output"]["decision"]["reason"].as_str().unwrap();
                assert!(reason.contains("policy failed: TypeError"), "{reason}");
                assert!(!logs.is_empty(), "the stack is logged: {report}");
            }
            ("python", "agent") => {
                assert_eq!(report["outcome"], "guest-error", "{report}");
                assert_eq!(
                    report["error"],
                    json!({"code": "invalid-input", "message": "no claim here"}),
                    "{report}"
                );
            }
            _ => {
                assert_eq!(report["outcome"], "guest-error", "{report}");
                assert_eq!(report["error"]["code"], "internal", "{report}");
                let message = report["error"]["message"].as_str().unwrap();
                assert!(message.contains("infer threw ReferenceError"), "{message}");
            }
        }
    }
}

#[test]
fn the_sdks_match_the_wit_and_type_check() {
    // The Python SDK's WIT and stubs are what generate.sh makes now.
    let out = Command::new("bash")
        .arg(root().join("sdk/python/generate.sh"))
        .arg("--check")
        .output()
        .expect("generate.sh");
    assert!(out.status.success(), "{}", text(&out));
    // The JS SDK ships the same WIT.
    for file in ["types.wit", "host.wit", "worlds.wit"] {
        let wit = std::fs::read(root().join("wit").join(file)).unwrap();
        assert_eq!(
            std::fs::read(root().join("sdk/js/wit").join(file)).unwrap(),
            wit,
            "sdk/js/wit/{file} differs from wit/{file}: copy it"
        );
    }
    // mypy --strict over the SDK and the Python examples (one at a time:
    // each has its own `app` module).
    for target in [
        "src/evos_sdk",
        "../../plugins/python/fraud-score",
        "../../plugins/python/payout-limit",
    ] {
        let out = Command::new("python3")
            .args(["-m", "mypy", target])
            .current_dir(root().join("sdk/python"))
            .output()
            .expect("mypy");
        assert!(out.status.success(), "mypy {target}: {}", text(&out));
    }
    // The JS SDK's own tests, under Node.
    let out = Command::new("node")
        .args(["--test", "test/"])
        .current_dir(root().join("sdk/js"))
        .output()
        .expect("node");
    assert!(out.status.success(), "node --test: {}", text(&out));
    // tsc over the JS SDK's types.
    let out = Command::new(root().join("sdk/js/node_modules/.bin/tsc"))
        .args(["-p", "types/tsconfig.json"])
        .current_dir(root().join("sdk/js"))
        .output()
        .expect("tsc");
    assert!(out.status.success(), "tsc: {}", text(&out));
}

/// TypeScript: a plugin type-checks against the SDK's declarations (a type
/// error is caught), and `evos-js-build` strips the types and builds it.
#[test]
fn a_typescript_plugin_type_checks_builds_and_runs() {
    let dir = tempdir("typescript");
    let data = dir.join("data");
    let types = root().join("sdk/js/types");
    let plugin = r#"import { policy, allow, escalate, parseObject, type Action, type Event, type Decision } from '@evos/sdk';
import * as config from '@evos/sdk/config';

function decide(amount: number, limit: number): Decision {
  return amount < limit ? allow() : escalate(`amount ${amount} is not below ${limit}`);
}

export const policyApi = policy({
  evaluate(action: Action, _event: Event): Decision {
    const { amount } = parseObject(action.payload);
    return decide(typeof amount === 'number' ? amount : Infinity, config.getNumber('allow-below'));
  },
});
"#;
    std::fs::write(dir.join("plugin.ts"), plugin).unwrap();
    let tsconfig = json!({
        "compilerOptions": {
            "strict": true, "noEmit": true, "target": "es2022",
            "module": "esnext", "moduleResolution": "bundler",
            "paths": {
                "@evos/sdk": [types.join("index.d.ts")],
                "@evos/sdk/*": [types.join("*.d.ts")],
            }
        },
        "files": ["plugin.ts"]
    });
    std::fs::write(dir.join("tsconfig.json"), tsconfig.to_string()).unwrap();
    let tsc = root().join("sdk/js/node_modules/.bin/tsc");
    let out = Command::new(&tsc)
        .args(["-p", "tsconfig.json"])
        .current_dir(&dir)
        .output()
        .expect("tsc");
    assert!(out.status.success(), "tsc: {}", text(&out));
    // A type error is an error.
    std::fs::write(
        dir.join("plugin.ts"),
        plugin.replace(
            "decide(typeof amount === 'number' ? amount : Infinity",
            "decide(amount",
        ),
    )
    .unwrap();
    let out = Command::new(&tsc)
        .args(["-p", "tsconfig.json"])
        .current_dir(&dir)
        .output()
        .expect("tsc");
    assert!(!out.status.success(), "tsc accepted an unknown as a number");
    std::fs::write(dir.join("plugin.ts"), plugin).unwrap();

    let out = Command::new("node")
        .arg(root().join("sdk/js/bin/evos-js-build.mjs"))
        .args(["plugin.ts", "--kind", "policy", "-o", "plugin.wasm"])
        .current_dir(&dir)
        .output()
        .expect("evos-js-build");
    assert!(out.status.success(), "evos-js-build: {}", text(&out));
    let manifest = root().join("policies/payout-limit.toml");
    let input = root().join("plugins/payout-limit/invoke-input.json");
    let out = evos_in(
        &dir,
        &data,
        &[
            "invoke",
            manifest.to_str().unwrap(),
            "plugin.wasm",
            "--input",
            input.to_str().unwrap(),
            "--json",
        ],
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("report");
    assert_eq!(
        report["output"]["decision"]["decision"], "allow",
        "{report}"
    );
}
