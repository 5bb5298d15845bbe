//! Drift of a model adapter's fields: detected against the reference,
//! audited, shown, and turned into human reviews while it lasts.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::recording::{CALM, app_file, claim, load_app};
use crate::support::{open_registry, root, tempdir};
use evos::pipeline::{self, Disposition, RunOptions};
use evos::registry::Registry;
use evos::store::StateStore;

const DRIFT: &str = "\n[drift]\noutputs = [\"score\"]\ninputs = [\"region\", \"amount\"]\nreference = 40\nwindow = 40\nthreshold = 0.25\nreview-share = 1.0\n";

/// The claims app in `registry`, fraud-score watched for drift.
async fn deployed(dir: &std::path::Path, registry: &Arc<Registry>) -> evos::app::App {
    let app = load_app(&app_file(dir, ""), "http://127.0.0.1:9/unused");
    for p in &app.plugins {
        let mut manifest = p.manifest.clone();
        if p.name == "fraud-score" {
            let text = std::fs::read_to_string(root().join("policies/fraud-score.toml")).unwrap();
            manifest =
                evos::Manifest::parse(&format!("{text}{DRIFT}"), "fraud-score+drift", &root())
                    .expect("manifest");
        }
        let bytes = std::fs::read(&p.component).expect("component");
        registry
            .deploy(manifest, &bytes, "test", None, "test")
            .await
            .expect("deploy");
    }
    app
}

const REGIONS: [&str; 4] = ["north", "south", "west", "central"];

/// `n` claims from `from`: calm claims spread over four regions, or (the
/// shift) suspicious round claims from the east.
fn claims(from: usize, n: usize, shifted: bool) -> Vec<Value> {
    (from..from + n)
        .map(|i| {
            let mut c = if shifted {
                claim(
                    &format!("D-{i}"),
                    &format!("CL-{i}"),
                    1500.0,
                    "Phone stolen at the station.",
                )
            } else {
                claim(
                    &format!("D-{i}"),
                    &format!("CL-{i}"),
                    100.0 + (i % 7) as f64 * 45.0,
                    CALM,
                )
            };
            c["region"] = json!(if shifted { "east" } else { REGIONS[i % 4] });
            c
        })
        .collect()
}

async fn run(
    registry: &Arc<Registry>,
    app: &evos::app::App,
    claims: Vec<Value>,
) -> evos::pipeline::PipelineReport {
    let store: Arc<dyn StateStore> = registry.store().clone();
    pipeline::run(
        registry.clone(),
        Arc::new(app.clone()),
        "claims-webhook",
        json!({ "claims": claims }).to_string().into_bytes(),
        "application/json",
        &RunOptions {
            reviews: Some(evos::review::ReviewQueue::new(store.clone())),
            audit: Some(store),
            // One at a time: the windows fill in claim order.
            concurrency: 1,
            ..Default::default()
        },
    )
    .await
    .expect("pipeline")
}

fn drift_of(registry: &Registry) -> evos::drift::DriftStatus {
    registry.status(Some("fraud-score")).expect("status")[0]
        .stable
        .drift
        .clone()
        .expect("watched")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shift_in_traffic_is_detected_audited_and_sent_to_review() {
    let dir = tempdir("drift");
    let registry = open_registry(&dir.join("data"));
    let app = deployed(&dir, &registry).await;
    let version_id = registry.route("fraud-score").unwrap().stable.version_id;

    // The first 40 calls are the reference, kept in the store; one still
    // filling is kept as far as it got, and a restart goes on from there.
    run(&registry, &app, claims(0, 15, false)).await;
    registry.flush_stats().unwrap();
    drop(registry);
    let registry = open_registry(&dir.join("data"));
    assert_eq!(drift_of(&registry).reference_calls, 15);
    run(&registry, &app, claims(15, 25, false)).await;
    let d = drift_of(&registry);
    assert_eq!((d.reference_calls, d.window_calls), (40, 0));
    assert!(registry.store().drift(version_id).unwrap().0.is_some());
    // More of the same: judged, and calm.
    run(&registry, &app, claims(40, 40, false)).await;
    let d = drift_of(&registry);
    assert_eq!(d.window_calls, 40);
    assert!(!d.drifting, "{d:?}");
    assert_eq!(d.fields.len(), 3, "{d:?}");
    assert!(d.fields.iter().all(|f| f.psi < 0.25), "{d:?}");
    let audited = |action: &str| {
        registry
            .store()
            .audit_list(0, None)
            .unwrap()
            .into_iter()
            .filter(|e| e.action == action)
            .collect::<Vec<_>>()
    };
    assert!(audited("drift").is_empty());

    // A new pattern in the east: drift starts, is audited with the fields
    // over the threshold, and what the model decides from then on goes
    // to people.
    let report = run(&registry, &app, claims(80, 40, true)).await;
    let d = drift_of(&registry);
    assert!(d.drifting, "{d:?}");
    let entries = audited("drift");
    assert_eq!(entries.len(), 1, "{entries:?}");
    let e = &entries[0];
    assert_eq!(
        (e.actor.as_str(), e.subject.as_str()),
        ("evos", "fraud-score")
    );
    assert_eq!(e.detail["version"], "1.0.0");
    let fields = e.detail["fields"].as_array().expect("fields");
    assert!(
        fields.iter().all(|f| f["psi"].as_f64().unwrap() > 0.25),
        "{fields:?}"
    );
    let to_review: Vec<_> = report
        .actions()
        .filter(|a| match &a.disposition {
            Disposition::Escalated { reasons, review_id } => {
                review_id.is_some()
                    && reasons
                        .iter()
                        .any(|r| r.starts_with("drift: `fraud-score` 1.0.0 drifts"))
            }
            _ => false,
        })
        .collect();
    // Every action after the judgement that found it (a tenth of a window
    // at most after the shift began).
    assert!(
        to_review.len() >= 30,
        "{} of 40 sent to review",
        to_review.len()
    );
    assert!(
        d.fields
            .iter()
            .any(|f| f.field == "input.region" && f.psi > 1.0),
        "{d:?}"
    );

    // The metrics show it.
    let metrics = evos::telemetry::Metrics::default();
    let text = evos::telemetry::render(
        evos::telemetry::Snapshot {
            status: registry.status(None).unwrap(),
            metrics: &metrics,
            breakers: Vec::new(),
            pending_reviews: 0,
        },
        "*",
    );
    assert!(
        text.contains("evos_drift_active{plugin=\"fraud-score\",version=\"1.0.0\"} 1"),
        "{text}"
    );
    assert!(text.contains(
        "evos_drift_psi{plugin=\"fraud-score\",version=\"1.0.0\",field=\"output.score\"}"
    ));
    assert!(text.contains(
        "evos_drift_ks{plugin=\"fraud-score\",version=\"1.0.0\",field=\"input.amount\"}"
    ));

    // A restart keeps the reference and the judgement.
    registry.flush_stats().unwrap();
    drop(registry);
    let registry = open_registry(&dir.join("data"));
    let d = drift_of(&registry);
    assert_eq!(d.reference_calls, 40);
    assert!(d.drifting);

    // Traffic back to normal clears it, audited.
    run(&registry, &app, claims(120, 80, false)).await;
    assert!(!drift_of(&registry).drifting);
    assert_eq!(audited_in(&registry, "drift-cleared"), 1);
}

fn audited_in(registry: &Registry, action: &str) -> usize {
    registry
        .store()
        .audit_list(0, None)
        .unwrap()
        .iter()
        .filter(|e| e.action == action)
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn pinning_accepts_the_current_window_as_the_new_normal() {
    let dir = tempdir("drift-pin");
    let registry = open_registry(&dir.join("data"));
    let app = deployed(&dir, &registry).await;
    // Nothing to pin before calls arrive after the reference.
    let e = registry
        .pin_drift("fraud-score", "ops")
        .unwrap_err()
        .to_string();
    assert!(e.contains("nothing to pin"), "{e}");
    run(&registry, &app, claims(0, 40, false)).await;
    run(&registry, &app, claims(40, 40, true)).await;
    assert!(drift_of(&registry).drifting);
    let status = registry.pin_drift("fraud-score", "ops").expect("pin");
    assert!(status.reference_pinned && !status.drifting);
    assert_eq!(audited_in(&registry, "drift-pin"), 1);
    // The shifted traffic is now the reference: more of it does not drift.
    run(&registry, &app, claims(80, 40, true)).await;
    let d = drift_of(&registry);
    assert_eq!(d.window_calls, 40);
    assert!(!d.drifting, "{d:?}");
    // A plugin without a [drift] table says so.
    let e = registry
        .pin_drift("payout-limit", "ops")
        .unwrap_err()
        .to_string();
    assert!(e.contains("add a [drift] table"), "{e}");
}
