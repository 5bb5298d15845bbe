//! Recorded traffic: which events are kept, redaction before anything is
//! written, and pruning.

use std::process::{Command, Output};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::support::{example_app_text, root, tempdir};
use evos::pipeline::{self, RunOptions};
use evos::store::{RecordingFilter, SqliteStore, StateStore};

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The example app (absolute paths) with `recording` as its
/// `[recording]` table, written to `dir/app.toml`.
pub(crate) fn app_file(dir: &std::path::Path, recording: &str) -> std::path::PathBuf {
    let absolute = example_app_text(None);
    let path = dir.join("app.toml");
    std::fs::write(&path, format!("{absolute}\n\n[recording]\n{recording}\n")).expect("write app");
    path
}

pub(crate) fn claim(id: &str, claimant: &str, amount: f64, incident: &str) -> Value {
    json!({
        "claim_id": id,
        "claimant_id": claimant,
        "amount": amount,
        "policy_number": format!("POL-{}", 10_000 + id.bytes().map(u32::from).sum::<u32>()),
        "incident": incident,
        "region": "north",
    })
}

/// Personal data hidden in claims' incident texts: plain, JSON inside a
/// string, percent-encoded and base64. Each entry is (the text sent, the
/// strings that must never reach the disk or the logs).
fn pii_incidents() -> Vec<(String, Vec<String>)> {
    let b64 = "cmVhY2ggbWUgYXQgYm9iLmJhc2VAZXhhbXBsZS5uZXQ=";
    vec![
        (
            "Call me on +1 415 555 0199 or mail jane.roe@example.com; card 4111 1111 1111 1111, SSN 078-05-1120, refund to DE89 3704 0044 0532 0130 00.".into(),
            vec![
                "+1 415 555 0199".into(),
                "jane.roe@example.com".into(),
                "4111 1111 1111 1111".into(),
                "078-05-1120".into(),
                "DE89 3704 0044 0532 0130 00".into(),
            ],
        ),
        (
            r#"{"note": "the adjuster may write to j.smith@example.org", "ref": 4012888888881881}"#.into(),
            vec!["j.smith@example.org".into(), "4012888888881881".into()],
        ),
        (
            "contact%3A%20carol.pct%40example.com".into(),
            vec!["carol.pct@example.com".into(), "carol.pct%40example.com".into()],
        ),
        // "reach me at bob.base@example.net"
        (b64.into(), vec![b64.into(), "bob.base@example.net".into()]),
        // The same address again: the same pseudonym (joins still work).
        (
            "Second claim; mail JANE.ROE@example.com about it.".into(),
            vec!["JANE.ROE@example.com".into()],
        ),
    ]
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn recorded_traffic_holds_no_raw_pii_on_disk_or_in_the_logs() {
    let dir = tempdir("recording-pii");
    let app = app_file(
        &dir,
        "sample = { claims-webhook = 1.0 }\nredact = [\"/payload/claimant_id\"]\nretention = \"30d\"",
    );
    let incidents = pii_incidents();
    let claims: Vec<Value> = incidents
        .iter()
        .enumerate()
        .map(|(i, (incident, _))| {
            claim(
                &format!("C-90{i}"),
                &format!("CL-{}", 800 + i),
                180.0 + i as f64,
                incident,
            )
        })
        .collect();
    let input = dir.join("claims.json");
    std::fs::write(&input, json!({ "claims": claims }).to_string()).expect("write");
    let data = dir.join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_evos"))
        .arg("--data-dir")
        .arg(&data)
        .args(["run", "claims-webhook", "--record", "--app"])
        .arg(&app)
        .arg("--input")
        .arg(&input)
        // Everything the host logs, at its most detailed.
        .env("EVOS_LOG", "warn,evos=trace")
        .current_dir(root())
        .output()
        .expect("run evos");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let logs = text(&out);
    assert!(
        logs.contains("evos::pipeline"),
        "debug logs were written: {logs}"
    );

    // Nothing raw in any file of the data directory (the database, its
    // WAL, the audit anchor) nor in the logs.
    let files = files_under(&data);
    assert!(files.iter().any(|f| f.ends_with("evos.db")), "{files:?}");
    for (_, secrets) in &incidents {
        for secret in secrets {
            for f in &files {
                let bytes = std::fs::read(f).expect("read");
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{secret:?} reached {}",
                    f.display()
                );
            }
            assert!(
                !logs.contains(secret.as_str()),
                "{secret:?} reached the logs"
            );
        }
    }

    // What was recorded: every event, each call with pseudonyms in place
    // of the personal data.
    let out = Command::new(env!("CARGO_BIN_EXE_evos"))
        .arg("--data-dir")
        .arg(&data)
        .args(["recordings", "list"])
        .current_dir(root())
        .output()
        .expect("run evos");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(rows.len(), incidents.len(), "{rows:#?}");
    let mut emails = Vec::new();
    // Events run concurrently: find each claim's row by its id.
    let rows: Vec<&Value> = (0..incidents.len())
        .map(|i| {
            let id = format!("C-90{i}");
            rows.iter()
                .find(|r| r["event_id"] == id.as_str())
                .unwrap_or_else(|| panic!("{id} not recorded"))
        })
        .collect();
    for row in &rows {
        assert_eq!(row["reason"], "sampled");
        assert_eq!(row["trace_id"].as_str().map(str::len), Some(32), "{row}");
        let calls = row["calls"].as_array().expect("calls");
        let steps: Vec<&str> = calls.iter().filter_map(|c| c["step"].as_str()).collect();
        assert_eq!(steps, ["agent", "model", "policy", "policy"], "{row}");
        let agent = &calls[0];
        assert_eq!(agent["plugin"], "claims-triage");
        assert_eq!(agent["digest"].as_str().map(str::len), Some(64));
        // The configured path: replaced whole, in the event and in the
        // action the agent proposed.
        let claimant = agent["input"]["payload"]["claimant_id"]
            .as_str()
            .expect("claimant");
        assert!(claimant.starts_with("[field:"), "{claimant}");
        let proposed = &agent["output"]["actions"][0]["payload"]["claimant_id"];
        assert_eq!(proposed, claimant, "{agent}");
        let model = &calls[1];
        assert_eq!(model["plugin"], "fraud-score");
        assert!(
            model["output"]["model"]["output"]["score"].is_f64(),
            "{model}"
        );
        let incident = model["input"]["input"]["incident"]
            .as_str()
            .expect("incident");
        assert_eq!(
            Some(incident),
            agent["input"]["payload"]["incident"].as_str(),
            "one pseudonym per value across calls"
        );
        emails.push(incident.to_string());
    }
    let first = &emails[0];
    for kind in ["[phone:", "[email:", "[card:", "[ssn:", "[iban:"] {
        assert!(first.contains(kind), "{kind} in {first}");
    }
    for hidden in &emails[1..4] {
        assert!(hidden.starts_with("[encoded:"), "{hidden}");
    }
    // The same address (case aside) has the same pseudonym in both claims.
    let pseudonym = |s: &str| {
        let at = s.find("[email:").expect("an email pseudonym");
        s[at..at + 24].to_string()
    };
    assert_eq!(pseudonym(first), pseudonym(&emails[4]));
    // Counted per copy: the event reaches the agent, the model and both
    // policies.
    assert_eq!(rows[0]["redactions"]["email"], 4, "{}", rows[0]);
    assert_eq!(rows[0]["redactions"]["field"], 6, "{}", rows[0]);
}

fn runtime_with(store: &Arc<SqliteStore>) -> evos::Runtime {
    let engine = evos::Engine::new(evos::EngineConfig {
        cache_dir: Some(root().join("target/evos-test-cache")),
        ..Default::default()
    })
    .expect("engine");
    evos::Runtime::with_parts(
        engine,
        Arc::new(evos::store::SqliteKv::new(store.clone())),
        Default::default(),
    )
}

async fn run_claims(
    rt: &evos::Runtime,
    app: &evos::app::App,
    store: &Arc<SqliteStore>,
    claims: Vec<Value>,
    execute: bool,
) -> evos::pipeline::PipelineReport {
    let config = app.recording.clone().expect("[recording]");
    let recorder = evos::recording::Recorder::new(config, &[3; 32]).expect("recorder");
    let store: Arc<dyn StateStore> = store.clone();
    pipeline::run(
        Arc::new(rt.clone()),
        Arc::new(app.clone()),
        "claims-webhook",
        json!({ "claims": claims }).to_string().into_bytes(),
        "application/json",
        &RunOptions {
            execute,
            reviews: Some(evos::review::ReviewQueue::new(store.clone())),
            audit: Some(store),
            recorder: Some(Arc::new(recorder)),
            ..Default::default()
        },
    )
    .await
    .expect("pipeline")
}

pub(crate) const CALM: &str =
    "Rear-ended at a traffic light; photos of the damage and the repair estimate are attached.";

/// `app_path` loaded, with claims-webhook posting to `endpoint`.
pub(crate) fn load_app(app_path: &std::path::Path, endpoint: &str) -> evos::app::App {
    let mut app = evos::app::App::load(app_path).expect("app");
    for p in &mut app.plugins {
        if p.name == "claims-webhook" {
            p.manifest.set_config("endpoint", endpoint).expect("config");
        }
    }
    app
}

#[tokio::test(flavor = "multi_thread")]
async fn escalated_events_are_recorded_beside_the_sampled_share() {
    let dir = tempdir("recording-share");
    let app_path = app_file(&dir, "sample = { claims-webhook = 0.2 }\nescalated = true");
    let app = load_app(&app_path, "http://127.0.0.1:9/unused");
    let store = Arc::new(SqliteStore::open(dir.join("data")).expect("store"));
    let rt = runtime_with(&store);
    app.load_into(&rt).expect("load");
    let mut claims: Vec<Value> = (0..200)
        .map(|i| claim(&format!("C-{i}"), &format!("CL-{i}"), 200.0, CALM))
        .collect();
    // Escalated by payout-limit (a large payout).
    claims.push(claim("C-big", "CL-big", 4200.0, CALM));
    let report = run_claims(&rt, &app, &store, claims, false).await;
    assert_eq!(report.events.len(), 201);

    let recorded = store
        .recordings(&RecordingFilter::default())
        .expect("recordings");
    let reason_of = |id: &str| {
        recorded
            .iter()
            .find(|r| r.event_id == id)
            .map(|r| r.reason.clone())
    };
    let sampled = recorded.iter().filter(|r| r.reason == "sampled").count();
    // Unless it fell in the sample, the escalated event is recorded as such.
    let big = reason_of("C-big").expect("C-big recorded");
    assert!(big == "escalated" || big == "sampled", "{big}");
    assert_eq!(recorded.len(), sampled + usize::from(big == "escalated"));
    // 20 % of 200, by event id.
    assert!(
        (25..=55).contains(&sampled),
        "{sampled} of 200 sampled at 0.2"
    );
    // Sampling is by event id: the recorder says which ones.
    let recorder =
        evos::recording::Recorder::new(app.recording.clone().unwrap(), &[3; 32]).unwrap();
    for r in recorded.iter().filter(|r| r.reason == "sampled") {
        assert!(recorder.sampled("claims-webhook", &r.event_id));
    }
    // The audit entry of each recorded event says so.
    let audited = store.audit_list(0, None).expect("audit");
    let marked = audited
        .iter()
        .filter(|e| e.action == "pipeline" && e.detail.get("recorded").is_some())
        .count();
    assert_eq!(marked, recorded.len());
    // Calls of one plugin, for replay: one model call per recorded event.
    let model_calls = store
        .recorded_calls(&RecordingFilter {
            plugin: Some("fraud-score"),
            ..Default::default()
        })
        .expect("calls");
    assert_eq!(model_calls.len(), recorded.len());
    assert!(model_calls.iter().all(|c| c.call.step == "model"));
    // `limit` keeps the newest.
    let last = store
        .recorded_calls(&RecordingFilter {
            plugin: Some("fraud-score"),
            limit: Some(2),
            ..Default::default()
        })
        .expect("calls");
    assert_eq!(
        last.iter().map(|c| c.id).collect::<Vec<_>>(),
        model_calls[model_calls.len() - 2..]
            .iter()
            .map(|c| c.id)
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_actions_are_recorded_with_the_execute_call_and_its_error() {
    let downstream = crate::support::Downstream::start(503);
    let dir = tempdir("recording-failed");
    let app_path = app_file(&dir, "failed = true");
    let app = load_app(&app_path, &downstream.url("/claims/payouts"));
    let store = Arc::new(SqliteStore::open(dir.join("data")).expect("store"));
    let rt = runtime_with(&store);
    app.load_into(&rt).expect("load");
    let claims = vec![
        claim("F-1", "CL-1", 120.0, CALM),
        // Escalated, not failed: not recorded.
        claim("F-2", "CL-2", 4200.0, CALM),
    ];
    run_claims(&rt, &app, &store, claims, true).await;
    let recorded = store.recordings(&RecordingFilter::default()).unwrap();
    assert_eq!(recorded.len(), 1, "{recorded:#?}");
    let r = &recorded[0];
    assert_eq!((r.event_id.as_str(), r.reason.as_str()), ("F-1", "failed"));
    let execute = r.calls.last().expect("calls");
    assert_eq!(execute.step, "execute");
    assert_eq!(execute.plugin, "claims-webhook");
    assert_eq!(execute.action_index, Some(0));
    assert_eq!(execute.input["execute"]["kind"], "approve-payout");
    assert!(
        execute.error.as_deref().unwrap_or("").contains("503"),
        "{execute:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pruning_keeps_the_newest_rows_and_audits_what_it_removed() {
    let dir = tempdir("recording-prune");
    let app_path = app_file(
        &dir,
        "sample = { \"*\" = 1.0 }\nmax-rows = 4\nretention = \"1h\"",
    );
    let app = load_app(&app_path, "http://127.0.0.1:9/unused");
    let store = Arc::new(SqliteStore::open(dir.join("data")).expect("store"));
    let rt = runtime_with(&store);
    app.load_into(&rt).expect("load");
    let claims = (0..10)
        .map(|i| claim(&format!("P-{i}"), &format!("CL-{i}"), 150.0, CALM))
        .collect();
    run_claims(&rt, &app, &store, claims, false).await;
    let config = app.recording.clone().expect("config");
    let all = store.recordings(&RecordingFilter::default()).unwrap();
    assert_eq!(all.len(), 10);
    // Newest by the order they were recorded in (events run concurrently).
    let mut newest: Vec<String> = all[6..].iter().map(|r| r.event_id.clone()).collect();
    newest.sort();

    // Over max-rows: the oldest go, with their calls.
    let pruned = evos::recording::prune(&*store, &config, "ops").expect("prune");
    assert_eq!((pruned.expired, pruned.over_limit, pruned.kept), (0, 6, 4));
    let left = store.recordings(&RecordingFilter::default()).unwrap();
    let ids: Vec<&str> = left.iter().map(|r| r.event_id.as_str()).collect();
    let mut got: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    got.sort();
    assert_eq!(got, newest);
    let calls = store.recorded_calls(&RecordingFilter::default()).unwrap();
    assert!(
        calls
            .iter()
            .all(|c| left.iter().any(|r| r.id == c.recording_id))
    );
    let entry = store
        .audit_list(0, None)
        .unwrap()
        .into_iter()
        .rev()
        .find(|e| e.action == "recording-prune")
        .expect("audited");
    assert_eq!(entry.actor, "ops");
    assert_eq!(entry.detail["over_limit"], 6);

    // A second pass has nothing to do, and is not audited.
    let again = evos::recording::prune(&*store, &config, "ops").expect("prune");
    assert_eq!((again.expired, again.over_limit, again.kept), (0, 0, 4));
    let prunes = store
        .audit_list(0, None)
        .unwrap()
        .iter()
        .filter(|e| e.action == "recording-prune")
        .count();
    assert_eq!(prunes, 1);

    // Past retention: everything recorded before the cut-off goes.
    let future = humantime::format_rfc3339_micros(
        std::time::SystemTime::now() + std::time::Duration::from_secs(60),
    )
    .to_string();
    let expired = store
        .prune_recordings(Some(&future), None, "ops")
        .expect("prune");
    assert_eq!((expired.expired, expired.kept), (4, 0));
    assert!(
        store
            .recorded_calls(&RecordingFilter::default())
            .unwrap()
            .is_empty()
    );
    assert!(
        store.audit_verify().expect("verify").intact,
        "the chain holds"
    );
}
