//! `evos demo --evolve`: the evolution loop end to end, on the claims app
//! of `policies/evolve`.
//!
//! 1. Claims arrive from five regions; the fraud model scores them, a
//!    scripted reviewer decides what reaches the review queue by the
//!    generator's ground truth and labels it.
//! 2. A new fraud pattern appears in the east: new accounts claiming round
//!    sums with terse descriptions. The model misses it; the drift watch
//!    sees the region, amount and score distributions move, audits it, and
//!    sends a share of the model's decisions to review, where the reviewer
//!    labels them.
//! 3. The labels are exported (redacted) and `train.py` fits new weights
//!    from them; `replay` runs the recorded traffic through the retrained
//!    version and compares it with what humans said.
//! 4. The retrained version is deployed next to the stable one and rolls
//!    out in judged steps while adjusters report their findings on every
//!    claim; the last step promotes it.
//!
//! Every number printed is measured in the run.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use evos::app::App;
use evos::runtime::Router;
use evos::server::ServerConfig;
use serde_json::{Value, json};

use super::demo::{DemoArgs, Serving, app_with_sink, downstream, http};
use super::{Cli, Exit};

/// The evolution app, relative to the repository root.
pub const EVOLVE_APP: &str = "policies/evolve/evos.toml";

/// Claims per POST.
const BATCH: usize = 50;

/// SplitMix64: a small, seeded generator, so the run is reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// Log-normal with the given median and sigma (Box-Muller).
    fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        let (u, v) = (self.unit().max(1e-12), self.unit());
        let z = (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos();
        median * (sigma * z).exp()
    }

    /// Poisson (Knuth), for small rates.
    fn poisson(&mut self, rate: f64) -> usize {
        let limit = (-rate).exp();
        let (mut k, mut p) = (0, 1.0);
        loop {
            p *= self.unit();
            if p <= limit {
                return k;
            }
            k += 1;
        }
    }
}

const REGIONS: [&str; 5] = ["north", "south", "east", "west", "central"];
const NEUTRAL: [&str; 10] = [
    "rear-ended at a traffic light on the way to work",
    "water leak from the upstairs bathroom damaged the ceiling",
    "hail dented the roof and bonnet of the car",
    "laptop screen cracked after a fall at the office",
    "storm blew tiles off the garage roof",
    "side mirror clipped by a passing van while parked",
    "burst pipe flooded the kitchen floor overnight",
    "tree branch fell onto the fence during high winds",
    "police report attached with the repair estimate",
    "photos of the damage and the invoice are attached",
];
const RISK: [&str; 7] = [
    "please pay in cash",
    "this is urgent",
    "everything was stolen",
    "the vehicle is a total loss",
    "there were no witnesses",
    "a fire destroyed the contents",
    "I lost receipt for the items",
];
const TERSE: [&str; 6] = [
    "car damaged",
    "items gone",
    "house damage",
    "accident",
    "broken",
    "water damage",
];

/// Synthetic claims with their ground truth: the process `train.py`
/// trains on (fraud is rarer, larger, rounder, terser, riskier in words and
/// made by repeat claimants), and the new pattern of the shift.
struct Claims {
    rng: Rng,
    next: usize,
    /// Whether each claim (by id) is fraud.
    truth: HashMap<String, bool>,
}

impl Claims {
    fn new(seed: u64) -> Claims {
        Claims {
            rng: Rng(seed),
            next: 0,
            truth: HashMap::new(),
        }
    }

    fn claim(
        &mut self,
        claimant: String,
        amount: f64,
        incident: String,
        region: &str,
        fraud: bool,
    ) -> Value {
        self.next += 1;
        let id = format!("C-{:05}", self.next);
        self.truth.insert(id.clone(), fraud);
        json!({
            "claim_id": id,
            "claimant_id": claimant,
            "amount": amount,
            "policy_number": format!("POL-{}", 100_000 + self.rng.below(900_000)),
            "incident": incident,
            "region": region,
        })
    }

    /// A claim of the world the model was trained on.
    fn usual(&mut self) -> Value {
        let r = &mut self.rng;
        let fraud = r.unit() < 0.12;
        let (median, sigma, round_p, threshold_p, kw_rate, terse_p) = if fraud {
            (3500.0, 1.0, 0.35, 0.15, 1.4, 0.45)
        } else {
            (1200.0, 0.9, 0.06, 0.03, 0.35, 0.15)
        };
        let mut amount = r.lognormal(median, sigma);
        let u = r.unit();
        amount = if u < threshold_p {
            let low = if r.unit() < 0.6 { 900.0 } else { 9000.0 };
            (low + r.unit() * (low / 9.0 - 1.0)).floor()
        } else if u < threshold_p + round_p {
            ((amount / 500.0).round().max(1.0)) * 500.0
        } else {
            (amount.max(20.0) * 100.0).round() / 100.0
        };
        // Fraud comes from a small ring of repeat claimants, whose history
        // the triage agent counts.
        let claimant = if fraud {
            format!("CL-F{}", r.below(25))
        } else {
            format!("CL-{}", r.below(50_000))
        };
        let keywords = r.poisson(kw_rate).min(RISK.len());
        let mut phrases: Vec<&str> = Vec::new();
        if r.unit() < terse_p {
            phrases.push(TERSE[r.below(TERSE.len())]);
        } else {
            for _ in 0..2 + r.below(3) {
                phrases.push(NEUTRAL[r.below(NEUTRAL.len())]);
            }
        }
        let start = r.below(RISK.len());
        for k in 0..keywords {
            phrases.push(RISK[(start + k) % RISK.len()]);
        }
        let incident = sentence(&phrases.join(", "));
        let region = REGIONS[r.below(REGIONS.len())];
        self.claim(claimant, amount, incident, region, fraud)
    }

    /// The new pattern: new accounts in the east claiming round sums with
    /// a terse description and no risk words.
    fn ring(&mut self) -> Value {
        let r = &mut self.rng;
        let amount = 500.0 * (2 + r.below(4)) as f64;
        let incident = sentence(TERSE[r.below(TERSE.len())]);
        let claimant = format!("CL-N{}", r.below(1_000_000));
        self.claim(claimant, amount, incident, "east", true)
    }

    /// `n` claims; `ring` of each is the new pattern.
    fn batch(&mut self, n: usize, ring: f64) -> Vec<Value> {
        (0..n)
            .map(|_| {
                if self.rng.unit() < ring {
                    self.ring()
                } else {
                    self.usual()
                }
            })
            .collect()
    }
}

fn sentence(text: &str) -> String {
    let mut c = text.chars();
    match c.next() {
        Some(first) => format!("{}{}.", first.to_uppercase(), c.as_str()),
        None => String::new(),
    }
}

/// A running evolution demo: the host, its API and the people around it.
struct Loop {
    /// The host and its tokens.
    serving: Serving,
    claims: Claims,
    /// Labels given, by source.
    reviewed: u64,
    investigated: u64,
}

impl Loop {
    async fn get(&self, path: &str) -> Result<Value> {
        let (status, body) = http(self.serving.port, "GET", path, &self.serving.admin, b"").await?;
        if status != 200 {
            bail!("GET {path} answered {status}: {body}");
        }
        Ok(body)
    }

    /// Send `claims` through the ingest API; the actions by kind and
    /// status, and every claim id.
    async fn send(&mut self, claims: Vec<Value>) -> Result<(BTreeMap<String, u64>, Vec<String>)> {
        let ids: Vec<String> = claims
            .iter()
            .filter_map(|c| c["claim_id"].as_str().map(str::to_string))
            .collect();
        let body = serde_json::to_vec(&json!({ "claims": claims }))?;
        let (status, report) = http(
            self.serving.port,
            "POST",
            "/v1/ingest/claims-webhook",
            &self.serving.admin,
            &body,
        )
        .await?;
        if status != 200 {
            bail!("ingest answered {status}: {report}");
        }
        let mut counts = BTreeMap::new();
        for e in report["report"]["events"].as_array().into_iter().flatten() {
            for a in e["actions"].as_array().into_iter().flatten() {
                let key = format!(
                    "{} {}",
                    a["action"]["kind"].as_str().unwrap_or("?"),
                    a["status"].as_str().unwrap_or("?")
                );
                *counts.entry(key).or_default() += 1;
            }
        }
        Ok((counts, ids))
    }

    fn fraud(&self, claim_id: &str) -> Option<bool> {
        self.claims.truth.get(claim_id).copied()
    }

    /// The reviewer works through the queue: each escalated action is
    /// approved when it is right for the claim (a payout of a genuine
    /// claim, a fraud flag on a fraudulent one) and rejected otherwise, and
    /// the claim is labelled `fraud` or `legit`.
    async fn review(&mut self) -> Result<(u64, u64)> {
        let (_, pending) = http(
            self.serving.port,
            "GET",
            "/v1/reviews?status=pending",
            &self.serving.reviewer,
            b"",
        )
        .await?;
        let (mut decided, mut drift) = (0, 0);
        for r in pending.as_array().into_iter().flatten() {
            let (Some(id), Some(event)) = (r["id"].as_i64(), r["action"]["event_id"].as_str())
            else {
                continue;
            };
            let Some(fraud) = self.fraud(event) else {
                continue;
            };
            let kind = r["action"]["kind"].as_str().unwrap_or("");
            let right = match kind {
                "approve-payout" => !fraud,
                "flag-fraud" => fraud,
                _ => true,
            };
            let verdict = if right { "approve" } else { "reject" };
            let body = json!({"comment": if fraud { "fraud, by the investigation" } else { "checked: genuine" }});
            let (status, answer) = http(
                self.serving.port,
                "POST",
                &format!("/v1/reviews/{id}/{verdict}"),
                &self.serving.reviewer,
                body.to_string().as_bytes(),
            )
            .await?;
            if status != 200 {
                bail!("deciding review {id} answered {status}: {answer}");
            }
            if r["reasons"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|x| x.as_str().is_some_and(|s| s.starts_with("drift:")))
            {
                drift += 1;
            }
            let index = r["action_index"].as_u64().unwrap_or(0);
            self.label(event, index, fraud, &self.serving.reviewer.clone())
                .await?;
            decided += 1;
        }
        self.reviewed += decided;
        Ok((decided, drift))
    }

    async fn label(&self, event: &str, index: u64, fraud: bool, token: &str) -> Result<()> {
        let body = json!({"action_index": index, "label": if fraud { "fraud" } else { "legit" }});
        let (status, answer) = http(
            self.serving.port,
            "POST",
            &format!("/v1/events/{event}/feedback"),
            token,
            body.to_string().as_bytes(),
        )
        .await?;
        if status != 200 && status != 201 {
            bail!("labelling {event} answered {status}: {answer}");
        }
        Ok(())
    }

    /// Adjusters report what every claim turned out to be.
    async fn investigate(&mut self, ids: &[String]) -> Result<()> {
        for id in ids {
            if let Some(fraud) = self.fraud(id) {
                self.label(id, 0, fraud, &self.serving.reviewer.clone())
                    .await?;
                self.investigated += 1;
            }
        }
        Ok(())
    }

    /// fraud-score's status, from the API.
    async fn status(&self) -> Result<Value> {
        let mut s = self.get("/v1/plugins/fraud-score").await?;
        Ok(s[0].take())
    }

    /// fraud-score's drift, from the API.
    async fn drift(&self) -> Result<Value> {
        Ok(self.status().await?["stable"]["drift"].take())
    }
}

fn show_drift(d: &Value) -> String {
    let fields: Vec<String> = d["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            format!(
                "{} PSI {:.2}{}",
                f["field"].as_str().unwrap_or("?"),
                f["psi"].as_f64().unwrap_or(0.0),
                f["ks"]
                    .as_f64()
                    .map(|k| format!(" KS {k:.2}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    format!(
        "reference {}/{}, window {}/{}: {}{}",
        d["reference_calls"],
        d["reference_size"],
        d["window_calls"],
        d["window_size"],
        if d["drifting"] == true {
            "DRIFTING"
        } else {
            "stable"
        },
        if fields.is_empty() {
            String::new()
        } else {
            format!(" ({})", fields.join(", "))
        }
    )
}

fn counts(map: &BTreeMap<String, u64>) -> String {
    map.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The retrained version's manifest: the stable manifest with a new
/// version, model id and weights.
fn retrained_manifest(
    stable: &evos::Manifest,
    version: &str,
    weights: &str,
) -> Result<evos::Manifest> {
    let mut m = stable.clone();
    m.set_version(version)?;
    m.set_config("model", &format!("fraud-lr@{version}"))?;
    m.set_config("weights", weights)?;
    Ok(m)
}

/// Train new weights from `labels` with `train.py`; the weights file as
/// compact JSON (what the manifest's `[config] weights` holds) and the
/// training metrics.
fn retrain(labels: &Path, out: &Path, version: &str) -> Result<(String, Value)> {
    let script = PathBuf::from("plugins/fraud-score/train/train.py");
    let run = std::process::Command::new("python3")
        .arg(&script)
        .arg("--labels")
        .arg(labels)
        .args(["--version", version, "--out"])
        .arg(out)
        .output()
        .with_context(|| {
            format!(
                "running python3 {} (install Python 3 to retrain the model)",
                script.display()
            )
        })?;
    if !run.status.success() {
        bail!(
            "train.py failed: {}",
            String::from_utf8_lossy(&run.stderr).trim()
        );
    }
    let file: Value = serde_json::from_slice(&std::fs::read(out)?)?;
    let compact = json!({
        "model": file["model"],
        "version": file["version"],
        "features": file["features"],
        "weights": file["weights"],
    });
    Ok((compact.to_string(), file["training"].clone()))
}

pub async fn evolve(cli: &Cli, args: &DemoArgs) -> Result<Exit> {
    let app_path = if args.app == Path::new("evos.toml") {
        PathBuf::from(EVOLVE_APP)
    } else {
        args.app.clone()
    };
    let data_dir = std::env::temp_dir().join(format!("evos-evolve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let (sink_port, _received) = downstream().await?;
    let app = app_with_sink(&app_path, sink_port)?;
    let mut config = ServerConfig::new(&data_dir, &app_path);
    config.engine.cache_dir = (!cli.no_cache).then(|| cli.data_dir.join("cache"));
    let _ = evos::server::raise_open_file_limit();
    say!(
        "== evos up with {} on {}",
        app_path.display(),
        data_dir.display()
    );
    let serving = Serving::start(config, app.clone(), "scripted reviewer").await?;
    let stable_manifest = app
        .get("fraud-score")
        .map(|p| p.manifest.clone())
        .context("the evolution app has no fraud-score")?;
    say!(
        "   fraud-score {} watches {} for drift; [recording] keeps a quarter of the claims and every escalated one",
        stable_manifest.plugin.version,
        stable_manifest
            .drift
            .as_ref()
            .map(|d| d
                .outputs
                .iter()
                .chain(&d.inputs)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default()
    );
    let mut run = Loop {
        serving,
        claims: Claims::new(20_261_201),
        reviewed: 0,
        investigated: 0,
    };
    let outcome = drive(&mut run, &data_dir, &app, &stable_manifest).await;
    run.serving.stop().await?;
    if args.keep {
        say!("data directory kept at {}", data_dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    outcome
}

async fn drive(
    run: &mut Loop,
    data_dir: &Path,
    app: &App,
    stable: &evos::Manifest,
) -> Result<Exit> {
    // 1. The usual traffic.
    println!();
    say!("== 1. the usual claims: 8 batches of {BATCH} from five regions");
    let mut total = BTreeMap::new();
    for _ in 0..8 {
        let claims = run.claims.batch(BATCH, 0.0);
        let (c, _) = run.send(claims).await?;
        for (k, n) in c {
            *total.entry(k).or_default() += n;
        }
        run.review().await?;
    }
    say!("   actions: {}", counts(&total));
    say!("   reviews decided and labelled: {}", run.reviewed);
    say!("   drift: {}", show_drift(&run.drift().await?));

    // 2. The shift.
    println!();
    say!(
        "== 2. a new pattern in the east: new accounts, round sums, terse descriptions (30% of claims)"
    );
    let mut drift_seen = false;
    for batch in 1..=12 {
        let claims = run.claims.batch(BATCH, 0.3);
        let (c, _) = run.send(claims).await?;
        let (decided, by_drift) = run.review().await?;
        let d = run.drift().await?;
        say!(
            "   batch {batch:>2}: {}; reviews {decided} ({by_drift} for drift); drift {}",
            counts(&c),
            show_drift(&d)
        );
        drift_seen |= d["drifting"] == true;
    }
    if !drift_seen {
        say!("   drift was not detected");
        return Ok(Exit::Negative);
    }
    let audit = run.get("/v1/audit?since=1h").await?;
    for e in audit
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["action"] == "drift")
    {
        say!(
            "   audit #{} {} by {}: {} {}",
            e["seq"],
            e["action"].as_str().unwrap_or(""),
            e["actor"].as_str().unwrap_or(""),
            e["subject"].as_str().unwrap_or(""),
            e["detail"]["fields"]
        );
    }
    say!("   labels so far: {} from reviews", run.reviewed);

    // 3. Export the labels and retrain.
    println!();
    say!("== 3. export the labels (redacted) and retrain");
    let store = run.serving.host.registry.store().clone();
    let key = evos::redact::host_key(data_dir)?;
    let paths = app
        .recording
        .as_ref()
        .map(|r| r.redact.clone())
        .unwrap_or_default();
    let redactor = evos::redact::Redactor::new(&key, &paths).map_err(anyhow::Error::msg)?;
    let rows = evos::labels::export(&*store, "fraud-score", None, &redactor, Some(app))?;
    let labels = data_dir.join("labels.jsonl");
    let mut text = String::new();
    let mut classes: BTreeMap<String, u64> = BTreeMap::new();
    for r in &rows {
        text.push_str(&r.to_string());
        text.push('\n');
        *classes
            .entry(r["class"].as_str().unwrap_or("unmapped").to_string())
            .or_default() += 1;
    }
    std::fs::write(&labels, text)?;
    say!(
        "   {} labelled decisions of fraud-score -> {} ({})",
        rows.len(),
        labels.display(),
        counts(&classes)
    );
    let version = "2.0.0";
    let (weights, training) = retrain(&labels, &data_dir.join("weights-2.0.0.json"), version)?;
    say!(
        "   train.py --labels: fraud-lr@{version} on {} rows, holdout accuracy {} (majority baseline {}), AUC {}",
        training["n"],
        training["holdout_accuracy"],
        training["majority_baseline_accuracy"],
        training["holdout_auc"]
    );
    let candidate_manifest = retrained_manifest(stable, version, &weights)?;

    // Replay the recorded traffic through it.
    println!();
    say!("== 4. replay the recorded claims through fraud-score {version}");
    let registry = &run.serving.host.registry;
    let bytes = std::fs::read(
        &app.get("fraud-score")
            .context("no fraud-score in the app")?
            .component,
    )?;
    let candidate = registry.runtime().load(
        candidate_manifest.clone(),
        &bytes,
        "fraud-score (retrained)",
    )?;
    let router: std::sync::Arc<dyn Router> = registry.clone();
    let report = evos::replay::replay(
        registry.runtime(),
        Some(router),
        &**registry.store(),
        "fraud-score",
        &candidate,
        &Default::default(),
    )
    .await?;
    let rate = |r: Option<f64>| r.map_or("-".into(), |r| format!("{:.3}", r));
    say!(
        "   {} recorded calls: {} agree with the recorded answer, {} changed class",
        report.replayed,
        rate(report.agreement),
        report.changed
    );
    say!(
        "   agreement with humans over {} labelled calls: {version} {} vs recorded {} {}",
        report.humans.compared,
        rate(report.humans.candidate_rate),
        stable.plugin.version,
        rate(report.humans.recorded_rate)
    );
    say!(
        "   latency p95 {}us vs {}us, fuel {} vs {}, {:.0} calls/s replayed",
        report.candidate.p95_us,
        report.recorded.p95_us,
        report.candidate.mean_fuel,
        report.recorded.mean_fuel,
        report.calls_per_second
    );
    let better = report.humans.candidate_rate > report.humans.recorded_rate;
    if !better {
        say!("   the retrained version does not agree better with humans; not rolling it out");
        return Ok(Exit::Negative);
    }

    // 5. Progressive rollout.
    println!();
    say!("== 5. roll out {version}: shadow, then half the traffic, judged at each step");
    let (status, up) = http(
        run.serving.port,
        "POST",
        "/v1/components",
        &run.serving.admin,
        &bytes,
    )
    .await?;
    if status != 201 && status != 200 {
        bail!("uploading the component answered {status}: {up}");
    }
    let body = json!({"manifest": candidate_manifest.source, "digest": up["digest"]});
    let (status, deployed) = http(
        run.serving.port,
        "POST",
        "/v1/plugins/fraud-score/deploy",
        &run.serving.admin,
        body.to_string().as_bytes(),
    )
    .await?;
    if status != 200 {
        bail!("deploying {version} answered {status}: {deployed}");
    }
    say!(
        "   deployed: {}",
        deployed["action"].as_str().unwrap_or("?")
    );
    let mut promoted = false;
    for batch in 1..=24 {
        let claims = run.claims.batch(BATCH, 0.3);
        let (_, ids) = run.send(claims).await?;
        run.review().await?;
        run.investigate(&ids).await?;
        // Let the host judge (it does every second).
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let s = run.status().await?;
        let step = &s["rollout"];
        if step.is_null() {
            promoted = s["stable"]["version"] == version;
            say!(
                "   batch {batch:>2}: stable is now {}",
                s["stable"]["version"].as_str().unwrap_or("?")
            );
            break;
        }
        let gates: Vec<String> = step["gates"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| {
                let value = g["value"]
                    .as_f64()
                    .map_or("-".into(), |v| format!("{v:.3}"));
                format!(
                    "{} {value}/{} {}",
                    g["gate"].as_str().unwrap_or("?"),
                    g["threshold"],
                    match g["passed"].as_bool() {
                        Some(true) => "ok",
                        Some(false) => "FAILED",
                        None => "waiting",
                    }
                )
            })
            .collect();
        say!(
            "   batch {batch:>2}: step {} of {} ({}): {}",
            step["step"],
            step["steps"],
            step["slot"].as_str().unwrap_or("?"),
            gates.join("; ")
        );
    }

    // 6. The story.
    println!();
    say!("== 6. what the audit log and status say");
    let audit = run.get("/v1/audit?since=1h").await?;
    let mut by_action: BTreeMap<String, u64> = BTreeMap::new();
    for e in audit.as_array().into_iter().flatten() {
        let a = e["action"].as_str().unwrap_or("?");
        *by_action.entry(a.to_string()).or_default() += 1;
        if matches!(
            a,
            "drift"
                | "drift-cleared"
                | "deploy"
                | "rollout"
                | "rollout-step"
                | "promote"
                | "auto-rollback"
        ) && e["subject"] == "fraud-score"
        {
            say!(
                "   #{:<5} {:<14} {:<10} {}",
                e["seq"],
                a,
                e["actor"].as_str().unwrap_or(""),
                e["detail"]["version"]
                    .as_str()
                    .or(e["detail"]["promoted"]["version"].as_str())
                    .unwrap_or("")
            );
        }
    }
    say!("   entries by action: {}", counts(&by_action));
    let s = run.status().await?;
    for v in std::iter::once(&s["stable"]).chain(s["canary"].as_object().map(|_| &s["canary"])) {
        say!(
            "   {} {}: {} calls, agreement with humans {}",
            if std::ptr::eq(v, &s["stable"]) {
                "stable"
            } else {
                "canary"
            },
            v["version"].as_str().unwrap_or("?"),
            v["calls"],
            v["humans"]["agreed"]
                .as_u64()
                .zip(v["humans"]["compared"].as_u64())
                .map(|(a, c)| format!("{a}/{c}"))
                .unwrap_or_else(|| "-".into())
        );
    }
    let (_, verify) = http(
        run.serving.port,
        "GET",
        "/v1/audit/verify",
        &run.serving.admin,
        b"",
    )
    .await?;
    say!(
        "   audit chain intact: {} ({} entries); labels: {} from reviews, {} from adjusters",
        verify["intact"],
        verify["entries"],
        run.reviewed,
        run.investigated
    );
    println!();
    say!(
        "{}",
        if promoted {
            format!("fraud-score {version}, retrained from human labels, is the stable version")
        } else {
            format!("fraud-score {version} was not promoted")
        }
    );
    Ok(if promoted {
        Exit::Success
    } else {
        Exit::Negative
    })
}
