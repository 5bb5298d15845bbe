//! What fuel metering and epoch interruption cost on guest code.
//!
//! Both are instrumentation wasmtime compiles into the guest: fuel adds a
//! counter update per basic block and a check at function entries and loop
//! back-edges; epoch interruption adds a deadline check at the same places.
//! So the cost shows on code that is mostly small calls or mostly short
//! loops, and these rows run the `bench-kernel` plugin's two kernels on four
//! engines that differ only in those two switches. Each call goes through
//! `Runtime::call` (fresh store and instance), as every evos call does.

use std::collections::BTreeMap;
use std::sync::Arc;

use ::evos::capability::kv::MemoryKv;
use ::evos::manifest::Kind;
use ::evos::{CallInput, CallOutput, Engine, EngineConfig, Manifest, Plugin, Runtime};

use super::{Bench, Row, Stat, read, root, stat};

/// The engines compared: label, fuel, epoch. The first is evos's default.
const CONFIGS: [(&str, bool, bool); 4] = [
    ("fuel + epoch", true, true),
    ("fuel only", true, false),
    ("epoch only", false, true),
    ("neither", false, false),
];

/// Recursive Fibonacci: about 2·fib(n) ≈ 0.6 M small calls per evos call.
pub fn calls(b: &Bench) -> anyhow::Result<Row> {
    let n = 27;
    kernel(
        b,
        "calls",
        n,
        format!("fuel + epoch overhead, call-heavy kernel (recursive fib({n}))"),
    )
}

/// Collatz step counts: a data-dependent loop, about 0.85 M iterations.
pub fn branches(b: &Bench) -> anyhow::Result<Row> {
    let n = 10_000;
    kernel(
        b,
        "branches",
        n,
        format!("fuel + epoch overhead, branch-heavy kernel (Collatz steps of 1..={n})"),
    )
}

struct Setup {
    label: &'static str,
    runtime: Runtime,
    plugin: Arc<Plugin>,
}

impl Setup {
    /// Time `calls` calls, per call, in microseconds.
    fn time(&self, b: &Bench, calls: usize, input: &CallInput) -> f64 {
        b.time(calls, || {
            let (runtime, plugin) = (&self.runtime, &self.plugin);
            async move {
                let _ = runtime.call(plugin, input.clone()).await;
            }
        })
    }
}

fn kernel(b: &Bench, kernel: &str, n: u32, name: String) -> anyhow::Result<Row> {
    let bytes = read("target/plugins/bench-kernel.wasm")?;
    let manifest = Manifest::load(root().join("policies/bench-kernel.toml"))?;
    let input = CallInput::from_json(
        Kind::ModelAdapter,
        serde_json::json!({"input": {"kernel": kernel, "n": n}}),
    )
    .map_err(anyhow::Error::msg)?;

    let mut setups = Vec::new();
    for (label, fuel, epoch) in CONFIGS {
        let engine = Engine::new(EngineConfig {
            max_instances: 4,
            fuel,
            epoch,
            ..Default::default()
        })?;
        let runtime = Runtime::with_parts(engine, Arc::new(MemoryKv::default()), BTreeMap::new());
        let plugin = runtime.load(manifest.clone(), &bytes, "bench-kernel")?;
        setups.push(Setup {
            label,
            runtime,
            plugin,
        });
    }

    // Every engine must compute the same answer; keep evos's fuel count.
    let mut expected: Option<CallOutput> = None;
    let mut fuel = 0;
    for s in &setups {
        let report = b.rt.block_on(s.runtime.call(&s.plugin, input.clone()))?;
        anyhow::ensure!(
            report.outcome.is_ok(),
            "{kernel} on {}: {:?}",
            s.label,
            report.outcome
        );
        match &expected {
            None => {
                expected = report.output;
                fuel = report.fuel_consumed;
            }
            Some(e) => anyhow::ensure!(
                report.output.as_ref() == Some(e),
                "{kernel} on {} answered {:?}, fuel + epoch answered {e:?}",
                s.label,
                report.output
            ),
        }
    }
    let result = match &expected {
        Some(CallOutput::Model(m)) => m.output["result"].clone(),
        other => anyhow::bail!("{kernel}: unexpected output {other:?}"),
    };

    // Warm up, then size a chunk of calls to about 10 ms so that the
    // configurations alternate often within a run: drift on the shared
    // machine then lands on all four alike.
    for s in &setups {
        s.time(b, 5, &input);
    }
    let per_call = setups[0].time(b, 10, &input);
    let chunk = ((10_000.0 / per_call) as usize).clamp(1, 1_000);
    let quick = b.runs <= 3;
    let per_run_us = if quick { 300_000.0 } else { 1_000_000.0 };
    let rounds = ((per_run_us / (per_call * chunk as f64)) as usize).max(1);

    let mut runs: Vec<Vec<f64>> = vec![Vec::new(); setups.len()];
    for _ in 0..b.runs {
        let mut total = vec![0.0; setups.len()];
        for round in 0..rounds {
            // Rotate who goes first, so no configuration always follows the
            // same one.
            for k in 0..setups.len() {
                let i = (round + k) % setups.len();
                total[i] += setups[i].time(b, chunk, &input);
            }
        }
        for (i, t) in total.into_iter().enumerate() {
            // Per call, in milliseconds.
            runs[i].push(t / rounds as f64 / 1e3);
        }
    }
    let stats: Vec<Stat> = runs.into_iter().map(stat).collect();
    let (on, fuel_only, epoch_only, off) = (stats[0], stats[1], stats[2], stats[3]);
    let ratio = on.median / off.median;
    Ok(Row {
        name,
        evos: on,
        baseline: Some(("fuel and epoch off".into(), off)),
        unit: "ms",
        target: "reported (no target)".into(),
        met: true,
        ratio: Some(ratio),
        note: format!(
            "per call through Runtime::call; fuel only {:.3} ms ({:.3}×), epoch only {:.3} ms ({:.3}×); \
             result {result}, {:.1} M fuel per call; fuel also yields to the executor every 2 M fuel; \
             the four engines alternate in chunks of {chunk} calls",
            fuel_only.median,
            fuel_only.median / off.median,
            epoch_only.median,
            epoch_only.median / off.median,
            fuel as f64 / 1e6,
        ),
    })
}
