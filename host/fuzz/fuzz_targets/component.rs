//! The component loader on arbitrary bytes: `Runtime::load` (size cap,
//! header and import inspection, the grant check, Cranelift compilation,
//! linking) must return a plugin or an error, never panic or hang.
//!
//! The manifest's kind follows the component's exports when it has one of
//! the four plugin exports, so mutated real plugins get past the kind check
//! and reach the compiler and the linker.

#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use evos::capability::kv::MemoryKv;
use evos::manifest::Kind;
use evos::{Engine, EngineConfig, Manifest, Runtime};
use libfuzzer_sys::fuzz_target;

/// Inputs above this are not interesting (the size cap is tested
/// elsewhere) and would only slow the fuzzer down.
const MAX_INPUT: usize = 1024 * 1024;

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let engine = Engine::new(EngineConfig {
            cache_dir: None,
            max_instances: 4,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("engine: {e}"));
        Runtime::with_parts(engine, Arc::new(MemoryKv::default()), Default::default())
    })
}

fn manifest(kind: Kind) -> Manifest {
    let caps = match kind {
        Kind::Policy | Kind::ModelAdapter => "log = true",
        Kind::Agent | Kind::Connector => "log = true\nkv = { max-keys = 10 }",
    };
    let text = format!(
        "[plugin]\nname = \"fuzzed\"\nkind = \"{kind}\"\nversion = \"1.0.0\"\n[capabilities]\n{caps}\n[config]\nk = \"v\"\n"
    );
    Manifest::parse(&text, "fuzz.toml", Path::new("/nonexistent"))
        .unwrap_or_else(|e| panic!("fuzz manifest: {e}"))
}

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_INPUT {
        return;
    }
    let kinds = [Kind::Policy, Kind::ModelAdapter, Kind::Agent, Kind::Connector];
    let kind = evos::inspect::inspect(data, "fuzz")
        .ok()
        .and_then(|i| {
            kinds.into_iter().find(|k| {
                let export = evos::inspect::unversioned(k.export_interface());
                i.exports.iter().any(|e| evos::inspect::unversioned(e) == export)
            })
        })
        .unwrap_or(Kind::Policy);
    let _ = runtime().load(manifest(kind), data, "fuzz");
});
