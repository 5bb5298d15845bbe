//! Criterion suite for the in-process call path, so regressions show in
//! review: a call of the smallest policy, a call of a policy with host
//! imports, and the parsing a call input needs. Not part of `cargo test`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use evos::capability::kv::MemoryKv;
use evos::{CallInput, Engine, EngineConfig, Manifest, Runtime};

fn root() -> PathBuf {
    // The repository root: this package is host/cli.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn bench(c: &mut Criterion) {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return eprintln!("no async runtime: {e}"),
    };
    let Ok(engine) = Engine::new(EngineConfig {
        max_instances: 32,
        ..Default::default()
    }) else {
        return eprintln!("no engine");
    };
    let runtime = Runtime::with_parts(engine, Arc::new(MemoryKv::default()), BTreeMap::new());
    let sample =
        std::fs::read(root().join("plugins/payout-limit/invoke-input.json")).unwrap_or_default();
    let value: serde_json::Value = serde_json::from_slice(&sample).unwrap_or_default();
    let Ok(input) = CallInput::from_json(evos::manifest::Kind::Policy, value.clone()) else {
        return eprintln!("bad sample input");
    };
    for name in ["bench-allow", "payout-limit"] {
        let (Ok(manifest), Ok(bytes)) = (
            Manifest::load(root().join(format!("policies/{name}.toml"))),
            std::fs::read(root().join(format!("target/plugins/{name}.wasm"))),
        ) else {
            return eprintln!("{name} is missing: run `cargo xtask plugins`");
        };
        let Ok(plugin) = runtime.load(manifest, &bytes, name) else {
            return eprintln!("{name} did not load");
        };
        c.bench_function(&format!("call/{name}"), |b| {
            b.to_async(&rt)
                .iter(|| runtime.call(&plugin, input.clone()));
        });
    }
    c.bench_function("input/policy-from-json", |b| {
        b.iter(|| CallInput::from_json(evos::manifest::Kind::Policy, value.clone()));
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
