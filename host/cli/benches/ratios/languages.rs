//! Plugins in Python and JavaScript against the same plugin in Rust: the
//! payout-limit policy per call (time and fuel), compiling and loading the
//! interpreters' components, what keeping more of a pooled memory resident
//! does for them, and what pre-initialization (work done when the
//! component is built, snapshotted by componentize-py) saves per call.
//!
//! The components are built by `cargo xtask bench` with `evos build`
//! (componentize-py 0.25.1, componentize-js 0.23.0).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use ::evos::capability::kv::MemoryKv;
use ::evos::{CallInput, Engine, EngineConfig, Manifest, Runtime};

use super::{Bench, Row, Stat, engine, policy_input, read, root, stat};

/// A runtime on `engine` with `component` loaded under `manifest`.
fn loaded(
    engine: Engine,
    manifest: &str,
    component: &str,
) -> anyhow::Result<(Runtime, Arc<::evos::Plugin>)> {
    let runtime = Runtime::with_parts(engine, Arc::new(MemoryKv::default()), BTreeMap::new());
    let m = Manifest::load(root().join(manifest))?;
    let bytes = read(component)?;
    let plugin = runtime.load(m, &bytes, component)?;
    Ok((runtime, plugin))
}

/// `n` calls one after the other, each timed: p50 and p99 in µs, and the
/// fuel of one call.
fn per_call(
    b: &Bench,
    runtime: &Runtime,
    plugin: &Arc<::evos::Plugin>,
    input: &CallInput,
    n: usize,
) -> anyhow::Result<(f64, f64, u64)> {
    let mut times = Vec::with_capacity(n);
    let mut fuel = 0;
    for _ in 0..n {
        let start = Instant::now();
        let report = b.rt.block_on(runtime.call(plugin, input.clone()))?;
        times.push(start.elapsed().as_secs_f64() * 1e6);
        anyhow::ensure!(report.outcome.is_ok(), "{:?}", report.outcome);
        fuel = report.fuel_consumed;
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    Ok((at(0.5), at(0.99), fuel))
}

/// Calls per timed run: an interpreter's call costs a millisecond or so.
fn iters(b: &Bench) -> usize {
    (b.iters / 20).max(100)
}

fn policy_vs_rust(b: &Bench, lang: &str, manifest: &str, component: &str) -> anyhow::Result<Row> {
    let (rust_rt, rust) = loaded(
        engine(None)?,
        "policies/payout-limit.toml",
        "target/plugins/payout-limit.wasm",
    )?;
    let (rt, plugin) = loaded(engine(None)?, manifest, component)?;
    let input = policy_input()?;
    let ours = || {
        let (rt, plugin, input) = (&rt, &plugin, &input);
        async move {
            let _ = rt.call(plugin, input.clone()).await;
        }
    };
    let rust_call = || {
        let (rt, plugin, input) = (&rust_rt, &rust, &input);
        async move {
            let _ = rt.call(plugin, input.clone()).await;
        }
    };
    let n = iters(b);
    let (mut e, mut r) = (Vec::new(), Vec::new());
    b.time(20, ours);
    b.time(200, rust_call);
    for _ in 0..b.runs {
        e.push(b.time(n, ours));
        r.push(b.time(n * 10, rust_call));
    }
    let (e, r) = (stat(e), stat(r));
    let (p50, p99, fuel) = per_call(b, &rt, &plugin, &input, n)?;
    let (rp50, rp99, rfuel) = per_call(b, &rust_rt, &rust, &input, n * 10)?;
    let ratio = e.median / r.median;
    Ok(Row {
        name: format!("payout-limit per call, {lang} vs Rust"),
        evos: e,
        baseline: Some(("the same policy in Rust".into(), r)),
        unit: "us",
        target: "≤ 2 ms a call".into(),
        met: e.median <= 2000.0,
        ratio: Some(ratio),
        note: format!(
            "{lang}: p50 {p50:.0} µs, p99 {p99:.0} µs, {fuel} fuel a call; Rust: p50 {rp50:.1} µs, p99 {rp99:.1} µs, {rfuel} fuel a call ({:.0}× the fuel). Every call instantiates the component afresh",
            fuel as f64 / rfuel.max(1) as f64
        ),
    })
}

pub fn policy_python(b: &Bench) -> anyhow::Result<Row> {
    policy_vs_rust(
        b,
        "Python",
        "plugins/python/payout-limit/plugin.toml",
        "target/plugins/payout-limit-py.wasm",
    )
}

pub fn policy_js(b: &Bench) -> anyhow::Result<Row> {
    policy_vs_rust(
        b,
        "JavaScript",
        "plugins/js/payout-limit/plugin.toml",
        "target/plugins/payout-limit-js.wasm",
    )
}

/// Peak resident memory of this process in bytes (VmHWM), after resetting
/// it, so the next reading is the peak of what runs in between.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// A memory figure of this process from /proc/self/status, in bytes.
fn status_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

fn peak_rss() -> u64 {
    status_bytes("VmHWM:")
}

fn current_rss() -> u64 {
    status_bytes("VmRSS:")
}

fn compile_and_load(b: &Bench, lang: &str, manifest: &str, component: &str) -> anyhow::Result<Row> {
    let bytes = read(component)?;
    let m = Manifest::load(root().join(manifest))?;
    let input = policy_input()?;
    let cache = std::env::temp_dir().join(format!(
        "evos-bench-lang-cache-{lang}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&cache);
    let load_and_call = |engine: Engine| -> anyhow::Result<f64> {
        let runtime = Runtime::with_parts(engine, Arc::new(MemoryKv::default()), BTreeMap::new());
        let start = Instant::now();
        let plugin = runtime.load(m.clone(), &bytes, component)?;
        let report = b.rt.block_on(runtime.call(&plugin, input.clone()))?;
        anyhow::ensure!(report.outcome.is_ok(), "{:?}", report.outcome);
        Ok(start.elapsed().as_secs_f64() * 1e3)
    };
    // Memory: the peak a compile adds to this process.
    let before = current_rss();
    reset_peak();
    load_and_call(engine(Some(cache.clone()))?)?;
    let compile_peak = peak_rss().saturating_sub(before);
    let (mut cached, mut uncached) = (Vec::new(), Vec::new());
    let runs = b.runs.min(3);
    for _ in 0..runs {
        uncached.push(load_and_call(engine(None)?)?);
        cached.push(load_and_call(engine(Some(cache.clone()))?)?);
    }
    let _ = std::fs::remove_dir_all(&cache);
    let (c, u): (Stat, Stat) = (stat(cached), stat(uncached));
    let ratio = c.median / u.median;
    Ok(Row {
        name: format!("{lang} component, cold load to first call, cache hit"),
        evos: c,
        baseline: Some(("same, compiling (no cache)".into(), u)),
        unit: "ms",
        target: "≤ 1/20 (0.05×)".into(),
        met: ratio <= 0.05,
        ratio: Some(ratio),
        note: format!(
            "payout-limit, a {:.1} MiB component; compiling it raised this process's resident memory by up to {:.0} MiB",
            bytes.len() as f64 / (1024.0 * 1024.0),
            compile_peak as f64 / (1024.0 * 1024.0)
        ),
    })
}

pub fn compile_python(b: &Bench) -> anyhow::Result<Row> {
    compile_and_load(
        b,
        "Python",
        "plugins/python/payout-limit/plugin.toml",
        "target/plugins/payout-limit-py.wasm",
    )
}

pub fn compile_js(b: &Bench) -> anyhow::Result<Row> {
    compile_and_load(
        b,
        "JavaScript",
        "plugins/js/payout-limit/plugin.toml",
        "target/plugins/payout-limit-js.wasm",
    )
}

type Loaded<'a> = (&'a Runtime, &'a Arc<::evos::Plugin>);

/// Per-call time of `ours` and `base` on the same input, warmed up, then
/// timed alternately over the runs.
fn alternate(b: &Bench, ours: Loaded<'_>, base: Loaded<'_>, input: &CallInput) -> (Stat, Stat) {
    let call = |(rt, p): Loaded<'_>| {
        let (rt, p, input) = (rt.clone(), p.clone(), input.clone());
        move || {
            let (rt, p, input) = (rt.clone(), p.clone(), input.clone());
            async move {
                let _ = rt.call(&p, input).await;
            }
        }
    };
    let (ours, base) = (call(ours), call(base));
    let n = iters(b);
    b.time(20, ours.clone());
    b.time(20, base.clone());
    let (mut e, mut r) = (Vec::new(), Vec::new());
    for _ in 0..b.runs {
        e.push(b.time(n, ours.clone()));
        r.push(b.time(n, base.clone()));
    }
    (stat(e), stat(r))
}

/// The pool's `keep_resident`: a Python call with 32 MiB of its memory
/// kept resident between instances against the default 1 MiB.
pub fn keep_resident(b: &Bench) -> anyhow::Result<Row> {
    let pool = |keep: usize| {
        Engine::new(EngineConfig {
            max_instances: 64,
            keep_resident: keep,
            ..Default::default()
        })
    };
    let manifest = "plugins/python/payout-limit/plugin.toml";
    let component = "target/plugins/payout-limit-py.wasm";
    let (big_rt, big) = loaded(pool(32 << 20)?, manifest, component)?;
    let (rt, plugin) = loaded(
        pool(EngineConfig::default().keep_resident)?,
        manifest,
        component,
    )?;
    let input = policy_input()?;
    let (e, r) = alternate(b, (&big_rt, &big), (&rt, &plugin), &input);
    let ratio = e.median / r.median;
    Ok(Row {
        name: "Python call, 32 MiB of pooled memory kept resident".into(),
        evos: e,
        baseline: Some(("the default, 1 MiB".into(), r)),
        unit: "us",
        target: "measured (≤ 1.0× would make it worth a setting per plugin)".into(),
        met: ratio <= 1.0,
        ratio: Some(ratio),
        note: "payout-limit in Python; kept-resident bytes are reset with memset instead of being returned to the kernel and faulted in again".into(),
    })
}

/// Pre-initialization: the Python fraud model with its weights parsed and
/// checked when the component is built (snapshotted) against a build of
/// the same model that parses them on every call.
pub fn preinit(b: &Bench) -> anyhow::Result<Row> {
    let manifest = "plugins/python/fraud-score/plugin.toml";
    let (rt, snap) = loaded(
        engine(None)?,
        manifest,
        "target/plugins/fraud-score-py.wasm",
    )?;
    let (lazy_rt, lazy) = loaded(
        engine(None)?,
        manifest,
        "target/plugins/fraud-score-py-per-call.wasm",
    )?;
    let v: serde_json::Value =
        serde_json::from_slice(&read("plugins/fraud-score/invoke-input.json")?)?;
    let input = CallInput::from_json(::evos::manifest::Kind::ModelAdapter, v)
        .map_err(anyhow::Error::msg)?;
    let (e, r) = alternate(b, (&rt, &snap), (&lazy_rt, &lazy), &input);
    let (_, _, fuel) = per_call(b, &rt, &snap, &input, 50)?;
    let (_, _, lazy_fuel) = per_call(b, &lazy_rt, &lazy, &input, 50)?;
    let ratio = e.median / r.median;
    Ok(Row {
        name: "Python fraud-score, weights parsed at build (snapshot)".into(),
        evos: e,
        baseline: Some(("weights parsed on every call".into(), r)),
        unit: "us",
        target: "< 1.0×".into(),
        met: ratio < 1.0,
        ratio: Some(ratio),
        note: format!(
            "{fuel} fuel a call pre-initialized, {lazy_fuel} parsing the weights each call; componentize-py snapshots the interpreter after the app module's top level ran, so what it does there costs no call anything"
        ),
    })
}
