//! evos against its baselines, measured in the same run.
//!
//! Each row times evos and a baseline doing the same work, alternating them
//! over several runs, and reports medians, their spread and the ratio. The
//! machine is shared and noisy, so the ratio is the number that matters.
//!
//! `cargo bench -p evos --bench ratios -- [--quick] [--out docs/BENCHMARKS.md]`
//! (or `cargo xtask bench`). Needs the plugins: `cargo xtask plugins`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use ::evos::capability::kv::MemoryKv;
use ::evos::registry::Registry;
use ::evos::{CallInput, Engine, EngineConfig, Manifest, Runtime};

// A bench file is a crate root, so its submodules are found by path.
#[path = "ratios/evolve.rs"]
mod evolve;
#[path = "ratios/http.rs"]
mod http;
#[path = "ratios/languages.rs"]
mod languages;
#[path = "ratios/meter.rs"]
mod meter;
#[path = "ratios/nodes.rs"]
mod nodes;

/// Bindings for the raw-wasmtime baseline, generated from the same WIT.
mod wit {
    wasmtime::component::bindgen!({
        world: "evos:plugin/policy",
        path: "../../wit",
        exports: { default: async },
    });
}

fn root() -> PathBuf {
    // The repository root: this package is host/cli.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn read(rel: &str) -> anyhow::Result<Vec<u8>> {
    let p = root().join(rel);
    std::fs::read(&p)
        .map_err(|e| anyhow::anyhow!("{}: {e}; run `cargo xtask plugins` first", p.display()))
}

/// Median and spread of per-operation times over runs.
#[derive(Clone, Copy)]
struct Stat {
    median: f64,
    min: f64,
    max: f64,
}

fn stat(mut v: Vec<f64>) -> Stat {
    v.sort_by(|a, b| a.total_cmp(b));
    Stat {
        median: v[v.len() / 2],
        min: v[0],
        max: v[v.len() - 1],
    }
}

struct Row {
    name: String,
    evos: Stat,
    baseline: Option<(String, Stat)>,
    unit: &'static str,
    /// The ratio evos/baseline (or evos alone) and the target it must meet.
    target: String,
    met: bool,
    ratio: Option<f64>,
    note: String,
}

fn fmt_us(v: f64, unit: &str) -> String {
    match unit {
        "us" => format!("{v:.1} µs"),
        "ms" => format!("{v:.2} ms"),
        "s" => format!("{v:.3} s"),
        "events/s" => format!("{v:.0} events/s"),
        "calls/s" => format!("{v:.0} calls/s"),
        _ => format!("{v:.1} {unit}"),
    }
}

struct Bench {
    runs: usize,
    iters: usize,
    rt: tokio::runtime::Runtime,
}

impl Bench {
    /// Time `iters` operations of `f`, per operation, in microseconds.
    fn time<F, Fut>(&self, iters: usize, mut f: F) -> f64
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = ()>,
    {
        self.rt.block_on(async {
            let start = Instant::now();
            for _ in 0..iters {
                f().await;
            }
            start.elapsed().as_secs_f64() * 1e6 / iters as f64
        })
    }
}

impl Bench {
    /// Warm both paths up, then time them alternately over the runs.
    fn compare<F, Fut, G, Gut>(&self, ours: F, baseline: G) -> (Stat, Stat)
    where
        F: FnMut() -> Fut + Copy,
        Fut: Future<Output = ()>,
        G: FnMut() -> Gut + Copy,
        Gut: Future<Output = ()>,
    {
        self.time(200, ours);
        self.time(200, baseline);
        let (mut e, mut r) = (Vec::new(), Vec::new());
        for _ in 0..self.runs {
            e.push(self.time(self.iters, ours));
            r.push(self.time(self.iters, baseline));
        }
        (stat(e), stat(r))
    }
}

fn engine(cache: Option<PathBuf>) -> anyhow::Result<Engine> {
    Ok(Engine::new(EngineConfig {
        cache_dir: cache,
        max_instances: 64,
        ..Default::default()
    })?)
}

fn policy_input() -> anyhow::Result<CallInput> {
    let v: serde_json::Value =
        serde_json::from_slice(&read("plugins/payout-limit/invoke-input.json")?)?;
    CallInput::from_json(::evos::manifest::Kind::Policy, v).map_err(anyhow::Error::msg)
}

/// In-process invoke of a trivial policy vs raw wasmtime on the same engine.
fn invoke(b: &Bench) -> anyhow::Result<Row> {
    let engine = engine(None)?;
    let runtime = Runtime::with_parts(
        engine.clone(),
        Arc::new(MemoryKv::default()),
        BTreeMap::new(),
    );
    let bytes = read("target/plugins/bench-allow.wasm")?;
    let manifest = Manifest::load(root().join("policies/bench-allow.toml"))?;
    let plugin = runtime.load(manifest, &bytes, "bench-allow")?;
    let input = policy_input()?;

    // Raw wasmtime: the same component and engine, an empty linker (the
    // component imports nothing), a fresh store with fuel and an epoch
    // deadline, instantiate, typed call.
    let wt = engine.wasmtime().clone();
    let component = wasmtime::component::Component::new(&wt, &bytes)?;
    let linker = wasmtime::component::Linker::<()>::new(&wt);
    let pre = wit::PolicyPre::new(linker.instantiate_pre(&component)?)?;
    let action = wit::evos::plugin::types::Action {
        kind: "approve-payout".into(),
        event_id: "C-1".into(),
        payload: r#"{"amount":250.0}"#.into(),
        rationale: String::new(),
    };
    let event = wit::evos::plugin::types::Event {
        id: "C-1".into(),
        kind: "claim.submitted".into(),
        source: "bench".into(),
        payload: "{}".into(),
        trace_id: String::new(),
    };
    let raw = || {
        let (wt, pre, action, event) = (&wt, &pre, &action, &event);
        async move {
            let mut store = wasmtime::Store::new(wt, ());
            let _ = store.set_fuel(100_000_000);
            store.set_epoch_deadline(1_000);
            store.epoch_deadline_trap();
            if let Ok(p) = pre.instantiate_async(&mut store).await {
                let _ = p
                    .evos_plugin_policy_api()
                    .call_evaluate(&mut store, action, event)
                    .await;
            }
        }
    };
    let ours = || {
        let (runtime, plugin, input) = (&runtime, &plugin, &input);
        async move {
            let _ = runtime.call(plugin, input.clone()).await;
        }
    };
    let (e, r) = b.compare(ours, raw);
    let ratio = e.median / r.median;
    Ok(Row {
        name: "in-process invoke, trivial policy".into(),
        evos: e,
        baseline: Some((
            "raw wasmtime (Store::new + InstancePre::instantiate + typed call)".into(),
            r,
        )),
        unit: "us",
        target: "≤ 1.15×".into(),
        met: ratio <= 1.15,
        ratio: Some(ratio),
        note: "per call; fresh store, fuel, limiter, epoch deadline, outcome and report in evos"
            .into(),
    })
}

/// Component bytes to first successful call: compile vs compile-cache hit.
fn cold_load(b: &Bench) -> anyhow::Result<Row> {
    let bytes = read("target/plugins/fraud-score.wasm")?;
    let manifest = Manifest::load(root().join("policies/fraud-score.toml"))?;
    let input: serde_json::Value =
        serde_json::from_slice(&read("plugins/fraud-score/invoke-input.json")?)?;
    let input = CallInput::from_json(::evos::manifest::Kind::ModelAdapter, input)
        .map_err(anyhow::Error::msg)?;
    let cache = std::env::temp_dir().join(format!("evos-bench-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let load_and_call = |engine: Engine| -> anyhow::Result<f64> {
        let runtime = Runtime::with_parts(engine, Arc::new(MemoryKv::default()), BTreeMap::new());
        let start = Instant::now();
        let plugin = runtime.load(manifest.clone(), &bytes, "fraud-score")?;
        let report = b.rt.block_on(runtime.call(&plugin, input.clone()))?;
        anyhow::ensure!(
            report.outcome.is_ok(),
            "first call failed: {:?}",
            report.outcome
        );
        Ok(start.elapsed().as_secs_f64() * 1e3)
    };
    // Fill the cache once.
    load_and_call(engine(Some(cache.clone()))?)?;
    let (mut cached, mut uncached) = (Vec::new(), Vec::new());
    for _ in 0..b.runs {
        uncached.push(load_and_call(engine(None)?)?);
        cached.push(load_and_call(engine(Some(cache.clone()))?)?);
    }
    let _ = std::fs::remove_dir_all(&cache);
    let (c, u) = (stat(cached), stat(uncached));
    let ratio = c.median / u.median;
    Ok(Row {
        name: "cold load to first call (fraud-score), cache hit".into(),
        evos: c,
        baseline: Some(("same, compiling (no cache)".into(), u)),
        unit: "ms",
        target: "≤ 1/50 (0.02×)".into(),
        met: ratio <= 0.02,
        ratio: Some(ratio),
        note: "cache entries are HMAC-checked before deserializing".into(),
    })
}

/// A restarted host with 50 deployed plugins: time until ready.
fn ready_50(b: &Bench) -> anyhow::Result<Row> {
    let dir = std::env::temp_dir().join(format!("evos-bench-50-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = || EngineConfig {
        cache_dir: Some(dir.join("cache")),
        max_instances: 64,
        ..Default::default()
    };
    let bytes = read("target/plugins/bench-allow.wasm")?;
    let text = std::fs::read_to_string(root().join("policies/bench-allow.toml"))?;
    {
        let reg = Registry::open(&dir, config(), BTreeMap::new())?;
        for i in 0..50 {
            let t = text.replace(
                "name = \"bench-allow\"",
                &format!("name = \"bench-allow-{i}\""),
            );
            let m = Manifest::parse(&t, "bench", &root())?;
            b.rt.block_on(reg.deploy(m, &bytes, "bench", None, "bench"))?;
        }
    }
    let mut times = Vec::new();
    for _ in 0..b.runs {
        let start = Instant::now();
        let reg = Registry::open(&dir, config(), BTreeMap::new())?;
        anyhow::ensure!(reg.status(None)?.len() == 50, "not all plugins came back");
        times.push(start.elapsed().as_secs_f64());
    }
    let _ = std::fs::remove_dir_all(&dir);
    let s = stat(times);
    Ok(Row {
        name: "restart with 50 deployed plugins until ready".into(),
        evos: s,
        baseline: None,
        unit: "s",
        target: "< 0.5 s".into(),
        met: s.median < 0.5,
        ratio: None,
        note: "open the data directory, load, link and route every deployed version".into(),
    })
}

const REGO: &str = r#"
package payout

default decision := "deny"

decision := "allow" if input.amount < 1000

decision := "escalate" if {
    input.amount >= 1000
    input.amount <= 10000
}
"#;

/// payout-limit as a component vs the same rule in Rego evaluated by regorus.
fn policy_vs_rego(b: &Bench) -> anyhow::Result<Row> {
    let runtime = Runtime::with_parts(
        engine(None)?,
        Arc::new(MemoryKv::default()),
        BTreeMap::new(),
    );
    let plugin = runtime.load(
        Manifest::load(root().join("policies/payout-limit.toml"))?,
        &read("target/plugins/payout-limit.wasm")?,
        "payout-limit",
    )?;
    let input = policy_input()?;
    let mut engine = regorus::Engine::new();
    engine.add_policy("payout.rego".into(), REGO.into())?;
    let rego_input = regorus::Value::from_json_str(r#"{"amount": 250.0}"#)?;
    let check = {
        engine.set_input(rego_input.clone());
        engine.eval_rule("data.payout.decision".into())?
    };
    anyhow::ensure!(
        check == regorus::Value::from("allow"),
        "the Rego rule answered {check:?}"
    );
    let engine = std::cell::RefCell::new(engine);
    let ours = || {
        let (runtime, plugin, input) = (&runtime, &plugin, &input);
        async move {
            let _ = runtime.call(plugin, input.clone()).await;
        }
    };
    let rego = || {
        let (engine, rego_input) = (&engine, &rego_input);
        async move {
            let mut e = engine.borrow_mut();
            e.set_input(rego_input.clone());
            let _ = e.eval_rule("data.payout.decision".into());
        }
    };
    let (e, r) = b.compare(ours, rego);
    let ratio = e.median / r.median;
    Ok(Row {
        name: "policy decision: payout-limit component".into(),
        evos: e,
        baseline: Some(("same rule in Rego, regorus (native)".into(), r)),
        unit: "us",
        target: "≤ 0.5× (evos ≥ 2× faster)".into(),
        met: ratio <= 0.5,
        ratio: Some(ratio),
        note: "evos: fresh sandboxed instance per decision, config + log imports, JSON payload"
            .into(),
    })
}

/// A downstream system on 127.0.0.1 that answers every request with 200.
fn sink() -> anyhow::Result<u16> {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let Ok(clone) = stream.try_clone() else {
                    return;
                };
                let mut reader = BufReader::new(clone);
                let mut stream = stream;
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        if h.trim().is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; len];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let reply = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if stream.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(port)
}

/// The claims app deployed in a registry over a fresh directory, its
/// connector executing to a local sink.
fn deployed_claims_app(
    b: &Bench,
    tag: &str,
) -> anyhow::Result<(PathBuf, Arc<Registry>, Arc<::evos::app::App>)> {
    let dir = std::env::temp_dir().join(format!("evos-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = sink()?;
    let mut app = ::evos::app::App::load(root().join("evos.toml"))?;
    for p in &mut app.plugins {
        if !p.executes.is_empty() {
            p.manifest.set_config(
                "endpoint",
                &format!("http://127.0.0.1:{port}/claims/payouts"),
            )?;
        }
    }
    let reg = Registry::open(
        &dir,
        EngineConfig {
            cache_dir: Some(dir.join("cache")),
            ..Default::default()
        },
        BTreeMap::new(),
    )?;
    for p in &app.plugins {
        let bytes = std::fs::read(&p.component)?;
        b.rt.block_on(reg.deploy(p.manifest.clone(), &bytes, &p.name, None, "bench"))?;
    }
    Ok((dir, reg, Arc::new(app)))
}

/// A webhook body of `per_batch` small claims (all allowed and executed),
/// their ids unique to batch `n`, each incident as `incident` says.
fn claims_batch(n: usize, per_batch: usize, incident: &str) -> Vec<u8> {
    let claims: Vec<serde_json::Value> = (0..per_batch)
        .map(|i| serde_json::json!({"claim_id": format!("B{n}-{i}"), "claimant_id": format!("CL-{n}-{i}"), "amount": 100.0 + i as f64,
            "policy_number": "POL-1", "incident": incident, "region": "north"}))
        .collect();
    serde_json::to_vec(&serde_json::json!({"claims": claims})).unwrap_or_default()
}

/// Run `batches` batches through the pipeline with `options`; events/s.
/// Every action must end as `options` says (executed, or allowed).
fn pipeline_rate(
    b: &Bench,
    app: (&Arc<Registry>, &Arc<::evos::app::App>),
    options: &::evos::pipeline::RunOptions,
    batches: usize,
    next: &mut usize,
    incident: &str,
) -> anyhow::Result<f64> {
    pipeline_rate_then(b, app, options, batches, next, incident, &|_| {})
}

/// [`pipeline_rate`], handing each report to `then` as the server does
/// after a run (metrics, trace export), inside the timed loop.
fn pipeline_rate_then(
    b: &Bench,
    (reg, app): (&Arc<Registry>, &Arc<::evos::app::App>),
    options: &::evos::pipeline::RunOptions,
    batches: usize,
    next: &mut usize,
    incident: &str,
    then: &dyn Fn(&::evos::pipeline::PipelineReport),
) -> anyhow::Result<f64> {
    let per_batch = 100;
    let start = Instant::now();
    let mut events = 0;
    for _ in 0..batches {
        *next += 1;
        let report = b.rt.block_on(::evos::pipeline::run(
            reg.clone(),
            app.clone(),
            "claims-webhook",
            claims_batch(*next, per_batch, incident),
            "application/json",
            options,
        ))?;
        let wanted = |d: &::evos::pipeline::Disposition| {
            if options.execute {
                matches!(d, ::evos::pipeline::Disposition::Executed { .. })
            } else {
                matches!(d, ::evos::pipeline::Disposition::Allowed)
            }
        };
        anyhow::ensure!(
            report.actions().all(|a| wanted(&a.disposition)),
            "an action was not carried out"
        );
        anyhow::ensure!(report.events.len() == per_batch, "events were lost");
        then(&report);
        events += report.events.len();
    }
    Ok(events as f64 / start.elapsed().as_secs_f64())
}

/// The claims of the pipeline benchmarks.
const CALM_INCIDENT: &str =
    "Scratched bumper in the car park; photos and the repair quote attached.";

/// End-to-end pipeline throughput: connector -> agent -> model -> two
/// policies -> execute to a local sink, audit on and durable.
fn pipeline_throughput(b: &Bench) -> anyhow::Result<Row> {
    let (dir, reg, app) = deployed_claims_app(b, "pipeline")?;
    let per_batch = 100;
    let reviews = ::evos::review::ReviewQueue::new(reg.store().clone());
    let options = |execute: bool, audit: bool| ::evos::pipeline::RunOptions {
        execute,
        reviews: Some(reviews.clone()),
        audit: audit.then(|| reg.store().clone()),
        concurrency: CONCURRENCY,
        ..Default::default()
    };
    // The full path, and two variants that show where the time goes: the
    // same events without the audit log, and without executing actions.
    let variants = [
        ("full", options(true, true)),
        ("audit off", options(true, false)),
        ("execute off", options(false, true)),
    ];
    let batches = if b.runs <= 3 { 2 } else { 5 };
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut n = 0;
    for _ in 0..b.runs {
        for (i, (_, options)) in variants.iter().enumerate() {
            rates[i].push(pipeline_rate(
                b,
                (&reg, &app),
                options,
                batches,
                &mut n,
                CALM_INCIDENT,
            )?);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let mut stats = rates.into_iter().map(stat);
    let s = stats.next().ok_or_else(|| anyhow::anyhow!("no runs"))?;
    let others: Vec<String> = variants[1..]
        .iter()
        .zip(stats)
        .map(|((name, _), st)| format!("{name}: {:.0} events/s", st.median))
        .collect();
    Ok(Row {
        name: "pipeline events/s (connector → agent → model → 2 policies → execute, audit on)"
            .into(),
        evos: s,
        baseline: None,
        unit: "events/s",
        target: "≥ 5,000 events/s".into(),
        met: s.median >= 5000.0,
        ratio: None,
        note: format!(
            "batches of {per_batch} claims, one ingest call each, {CONCURRENCY} events in flight; every action executed over HTTP to a local sink (keep-alive), every event's audit entry durable before the batch answers; same run without parts: {}",
            others.join(", ")
        ),
    })
}

/// Events of one ingest in flight in the pipeline benchmark.
const CONCURRENCY: usize = 64;

/// A registry over a fresh temporary directory with its own compile cache.
fn bench_registry(tag: &str) -> anyhow::Result<(PathBuf, Arc<Registry>)> {
    let dir = std::env::temp_dir().join(format!("evos-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let reg = Registry::open(
        &dir,
        EngineConfig {
            cache_dir: Some(dir.join("cache")),
            max_instances: 64,
            ..Default::default()
        },
        BTreeMap::new(),
    )?;
    Ok((dir, reg))
}

/// The fraud-score sample request.
fn fraud_input() -> anyhow::Result<CallInput> {
    let input: serde_json::Value =
        serde_json::from_slice(&read("plugins/fraud-score/invoke-input.json")?)?;
    CallInput::from_json(::evos::manifest::Kind::ModelAdapter, input).map_err(anyhow::Error::msg)
}

/// p99 latency (µs) and failed calls of `calls` fraud-score calls by 4
/// callers flat out, while `during` runs.
async fn p99_under_load(
    reg: &Arc<Registry>,
    input: &CallInput,
    calls: usize,
    during: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<(f64, usize)> {
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (reg, input, done) = (reg.clone(), input.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut failed = 0;
            while done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < calls {
                let start = Instant::now();
                match reg.call("fraud-score", input.clone(), None).await {
                    Ok(r) if r.outcome.is_ok() => {}
                    _ => failed += 1,
                }
                lat.push(start.elapsed().as_secs_f64() * 1e6);
            }
            (lat, failed)
        }));
    }
    during.await?;
    let mut all = Vec::new();
    let mut failed = 0;
    for w in workers {
        let (lat, f) = w.await?;
        all.extend(lat);
        failed += f;
    }
    all.sort_by(|a, b| a.total_cmp(b));
    let p99 = all[(all.len() * 99 / 100).min(all.len() - 1)];
    Ok((p99, failed))
}

/// p99 latency of calls during 50 hot swaps vs steady state; no call may fail.
fn hot_swap(b: &Bench) -> anyhow::Result<Row> {
    let (dir, reg) = bench_registry("swap")?;
    let v1 = b.rt.block_on(reg.deploy(
        Manifest::load(root().join("policies/fraud-score.toml"))?,
        &read("target/plugins/fraud-score.wasm")?,
        "v1",
        None,
        "bench",
    ))?;
    let v2 = b.rt.block_on(reg.deploy(
        Manifest::load(root().join("policies/versions/fraud-score-1.1.0.toml"))?,
        &read("target/plugins/fraud-score-retrained.wasm")?,
        "v2",
        None,
        "bench",
    ))?;
    let input = fraud_input()?;
    let calls_per_phase = if b.runs <= 3 { 3_000 } else { 10_000 };
    let phase = |swaps: usize| -> anyhow::Result<(f64, usize)> {
        b.rt.block_on(p99_under_load(&reg, &input, calls_per_phase, async {
            for i in 0..swaps {
                let to = if i % 2 == 0 { &v1.digest } else { &v2.digest };
                reg.rollback("fraud-score", Some(&to[..16]), "bench")
                    .await?;
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            Ok(())
        }))
    };
    let (mut steady, mut swapping) = (Vec::new(), Vec::new());
    let mut failed = 0;
    for _ in 0..b.runs {
        steady.push(phase(0)?.0);
        let (p99, f) = phase(50)?;
        swapping.push(p99);
        failed += f;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let (sw, st) = (stat(swapping), stat(steady));
    let ratio = sw.median / st.median;
    Ok(Row {
        name: "p99 call latency during 50 hot swaps".into(),
        evos: sw,
        baseline: Some(("steady state, no swaps".into(), st)),
        unit: "us",
        target: "≤ 2× and 0 failed calls".into(),
        met: ratio <= 2.0 && failed == 0,
        ratio: Some(ratio),
        note: format!(
            "4 concurrent callers, {calls_per_phase} calls per phase; failed calls during swaps: {failed}"
        ),
    })
}

/// p99 latency of live calls with every call mirrored to a shadow vs
/// without one; callers run flat out (the shadow overloaded), so mirrored
/// calls are shed, and no live call may fail.
fn shadow_p99(b: &Bench) -> anyhow::Result<Row> {
    let (dir, reg) = bench_registry("shadow")?;
    b.rt.block_on(reg.deploy(
        Manifest::load(root().join("policies/fraud-score.toml"))?,
        &read("target/plugins/fraud-score.wasm")?,
        "v1",
        None,
        "bench",
    ))?;
    let shadow_manifest = Manifest::load(root().join("policies/versions/fraud-score-1.1.0.toml"))?;
    let shadow_bytes = read("target/plugins/fraud-score-retrained.wasm")?;
    let input = fraud_input()?;
    let calls_per_phase = if b.runs <= 3 { 4_000 } else { 20_000 };
    let phase = || -> anyhow::Result<(f64, usize)> {
        b.rt.block_on(p99_under_load(&reg, &input, calls_per_phase, async {
            Ok(())
        }))
    };
    let (mut without, mut with) = (Vec::new(), Vec::new());
    let (mut failed, mut compared, mut shed) = (0, 0, 0);
    for _ in 0..b.runs {
        without.push(phase()?.0);
        b.rt.block_on(reg.deploy_to(
            shadow_manifest.clone(),
            &shadow_bytes,
            "v2",
            ::evos::store::Slot::Shadow(100),
            "bench",
        ))?;
        let (p99, f) = phase()?;
        with.push(p99);
        failed += f;
        b.rt.block_on(reg.drain_shadows(std::time::Duration::from_secs(60)));
        if let Some(route) = reg.route("fraud-score")
            && let Some((s, _)) = &route.shadow
        {
            // The pair's counts are kept across runs: the last are the totals.
            let a = s.agreement(route.stable.version_id);
            (compared, shed) = (a.compared, a.shed);
        }
        // Drop the shadow for the next run's baseline.
        b.rt.block_on(reg.rollback("fraud-score", None, "bench"))?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let (w, wo) = (stat(with), stat(without));
    let ratio = w.median / wo.median;
    Ok(Row {
        name: "p99 live call latency with a 100% shadow".into(),
        evos: w,
        baseline: Some(("no shadow".into(), wo)),
        unit: "us",
        target: "≤ 1.1× and 0 failed live calls".into(),
        met: ratio <= 1.1 && failed == 0,
        ratio: Some(ratio),
        note: format!(
            "4 callers flat out, {calls_per_phase} calls per phase, every call mirrored; over all runs the shadow compared {compared} answers and shed {shed} (its queue full); failed live calls: {failed}"
        ),
    })
}

fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores, {cpu}")
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .map(|p| {
            // cargo runs benches from the package directory; relative paths
            // are meant from the repository root.
            let p = PathBuf::from(p);
            if p.is_absolute() { p } else { root().join(p) }
        });
    let b = Bench {
        runs: if quick { 3 } else { 5 },
        iters: if quick { 2_000 } else { 20_000 },
        rt: tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
    };
    // `--only <name>` runs one row (for profiling), e.g. `--only pipeline`.
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let mut rows = Vec::new();
    for (name, f) in [
        ("invoke", invoke as fn(&Bench) -> anyhow::Result<Row>),
        ("cold load", cold_load),
        ("ready with 50 plugins", ready_50),
        ("policy vs rego", policy_vs_rego),
        ("hot swap", hot_swap),
        ("shadow", shadow_p99),
        ("pipeline", pipeline_throughput),
        ("pipeline with 10% recorded", evolve::recording_10),
        ("pipeline with 100% recorded", evolve::recording_100),
        ("replay", evolve::replay),
        ("pipeline with otlp", evolve::otlp),
        ("postgres vs sqlite", nodes::pg_vs_sqlite),
        ("two nodes", nodes::two_nodes_vs_one),
        ("propagation", nodes::propagation),
        ("http vs wasmtime serve", http::vs_wasmtime),
        ("http vs plain hyper", http::vs_hyper),
        ("fuel and epoch, call-heavy", meter::calls),
        ("fuel and epoch, branch-heavy", meter::branches),
        ("python policy", languages::policy_python),
        ("js policy", languages::policy_js),
        ("python compile", languages::compile_python),
        ("js compile", languages::compile_js),
        ("python keep resident", languages::keep_resident),
        ("python pre-initialization", languages::preinit),
    ] {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        eprintln!("running {name} ...");
        rows.push(f(&b)?);
    }
    let date = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    let mut md = String::new();
    md.push_str("# Benchmarks\n\n");
    md.push_str(&format!(
        "Generated by `cargo xtask bench{}` on {date}.\nMachine: {}. Medians over {} runs (spread min–max); ratio = evos / baseline, measured in the same run.\n\n",
        if quick { " --quick" } else { "" },
        machine(),
        b.runs
    ));
    md.push_str(
        "| benchmark | evos | baseline | ratio | target | met |\n|---|---|---|---|---|---|\n",
    );
    for r in &rows {
        let evos = format!(
            "{} ({}–{})",
            fmt_us(r.evos.median, r.unit),
            fmt_us(r.evos.min, r.unit),
            fmt_us(r.evos.max, r.unit)
        );
        let base = match &r.baseline {
            Some((name, s)) => format!(
                "{name}: {} ({}–{})",
                fmt_us(s.median, r.unit),
                fmt_us(s.min, r.unit),
                fmt_us(s.max, r.unit)
            ),
            None => "—".into(),
        };
        let ratio = r
            .ratio
            .map(|x| format!("{x:.3}×"))
            .unwrap_or_else(|| "—".into());
        md.push_str(&format!(
            "| {} | {evos} | {base} | {ratio} | {} | {} |\n",
            r.name,
            r.target,
            if r.met { "yes" } else { "**no**" }
        ));
    }
    md.push_str("\nNotes:\n");
    for r in &rows {
        md.push_str(&format!("- {}: {}\n", r.name, r.note));
    }
    if rows.iter().any(|r| !r.met) {
        md.push_str(
            "\nTargets not met are explained, with the profiles behind them and what would change them, in [PERFORMANCE.md](PERFORMANCE.md).\n",
        );
    }
    print!("{md}");
    if let Some(path) = out {
        std::fs::write(&path, &md)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
