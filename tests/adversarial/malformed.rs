//! Malformed input: components that are truncated, corrupt, too large, not
//! components at all or not what their manifest says, and manifests with
//! bad syntax, unknown fields, duplicate keys or hostile values. Each is a
//! clear error naming what is wrong, and nothing changes: no blob, no
//! version, no deployment, no compile cache entry; the audit log gains only
//! the `deploy-refused` entry that records the attempt.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use evos::capability::kv::MemoryKv;
use evos::registry::Registry;
use evos::{Engine, EngineConfig, Error, Manifest, Runtime};
use wasmparser::{Parser, Payload};

use crate::support::*;

const MIB: usize = 1024 * 1024;

/// A runtime on its own engine and compile cache, so a test can see
/// exactly which cache files a load wrote.
fn isolated_runtime(tag: &str, tweak: impl FnOnce(&mut EngineConfig)) -> (Runtime, TempDir) {
    let cache = tempdir(tag);
    let mut config = EngineConfig {
        cache_dir: Some(cache.path_buf()),
        max_instances: 4,
        ..Default::default()
    };
    tweak(&mut config);
    let engine = Engine::new(config).expect("engine");
    let rt = Runtime::with_parts(engine, Arc::new(MemoryKv::default()), BTreeMap::new());
    (rt, cache)
}

/// Every file under `dir` (the compile cache), sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Compiled code in the cache (the HMAC key is not an entry).
fn cache_entries(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm" || e == "hmac"))
        .collect()
}

/// Load `bytes` as payout-limit; the error as text.
fn refused_load(rt: &Runtime, manifest: Manifest, bytes: &[u8]) -> (Error, String) {
    match rt.load(manifest, bytes, "payout-limit.wasm") {
        Ok(_) => panic!("a malformed component was loaded"),
        Err(e) => {
            let text = e.to_string();
            (e, text)
        }
    }
}

/// The byte range of the first code section in `bytes` (a component's
/// embedded core module).
fn code_section(bytes: &[u8]) -> std::ops::Range<usize> {
    Parser::new(0)
        .parse_all(bytes)
        .filter_map(|p| match p {
            Ok(Payload::CodeSectionStart { range, .. }) => Some(range),
            _ => None,
        })
        .max_by_key(|r| r.len())
        .expect("the component has a code section")
}

/// The smallest core module: the magic number and version 1.
const CORE_MODULE: &[u8] = b"\0asm\x01\0\0\0";

/// A core module with one exported function `(func (export "f") (result i32) i32.const 42)`.
const CORE_MODULE_WITH_FUNC: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // header
    0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7f, // type: () -> i32
    0x03, 0x02, 0x01, 0x00, // func 0: type 0
    0x07, 0x05, 0x01, 0x01, b'f', 0x00, 0x00, // export "f" func 0
    0x0a, 0x06, 0x01, 0x04, 0x00, 0x41, 0x2a, 0x0b, // code: i32.const 42
];

/// payout-limit's bytes padded past `size` with a custom section, so the
/// input is a well-formed component that is simply too large.
fn padded_component(size: usize) -> Vec<u8> {
    let mut bytes = component("payout-limit");
    let name = b"padding";
    let payload = size.saturating_sub(bytes.len());
    let mut section = vec![0u8]; // custom section id
    let body_len = 1 + name.len() + payload;
    let mut n = body_len;
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        section.push(if n == 0 { b } else { b | 0x80 });
        if n == 0 {
            break;
        }
    }
    section.push(name.len() as u8);
    section.extend_from_slice(name);
    section.resize(section.len() + payload, 0);
    bytes.extend_from_slice(&section);
    bytes
}

/// Threat: a deployer sends a component cut short (a failed upload, or a
/// crafted prefix that parses partway); it is refused as malformed before
/// compiling, and no cache entry is written.
#[test]
fn truncated_components_are_refused() {
    let (rt, cache) = isolated_runtime("malformed-truncated", |_| {});
    let whole = component("payout-limit");
    for cut in [9, 64, whole.len() / 2, whole.len() - 1] {
        let (e, text) = refused_load(&rt, manifest("payout-limit"), &whole[..cut]);
        assert!(
            matches!(e, Error::InvalidComponent { .. }),
            "cut at {cut}: {text}"
        );
        assert!(text.contains("payout-limit.wasm"), "{text}");
        assert!(
            text.contains("malformed") || text.contains("unexpected end"),
            "cut at {cut}: {text}"
        );
    }
    assert!(
        cache_entries(&cache).is_empty(),
        "{:?}",
        files_under(&cache)
    );
}

/// Threat: a deployer flips bytes inside a real component's code (or its
/// section headers) hoping the compiler trusts what the parser skimmed; the
/// compiler's validation refuses it with the reason and nothing is cached.
#[test]
fn corrupt_bytes_in_a_real_component_are_refused() {
    let (rt, cache) = isolated_runtime("malformed-corrupt", |_| {});
    let whole = component("payout-limit");
    let code = code_section(&whole);
    // 0xff is no opcode: a run of them in the middle of the code section
    // breaks whichever function body it lands in.
    let mut in_code = whole.clone();
    let mid = code.start + code.len() / 2;
    in_code[mid..mid + 32].fill(0xff);
    let (e, text) = refused_load(&rt, manifest("payout-limit"), &in_code);
    assert!(matches!(e, Error::InvalidComponent { .. }), "{text}");
    // The first section's id and size.
    let mut in_header = whole.clone();
    in_header[8] = 0x7f;
    in_header[9] ^= 0xff;
    let (e, text) = refused_load(&rt, manifest("payout-limit"), &in_header);
    assert!(matches!(e, Error::InvalidComponent { .. }), "{text}");
    assert!(text.contains("malformed"), "{text}");
    assert!(
        cache_entries(&cache).is_empty(),
        "{:?}",
        files_under(&cache)
    );
}

/// Threat: a deployer hands over a core WebAssembly module where a
/// component is expected (the usual build mistake, or a probe of which
/// parser runs); it is refused with a hint to build for wasm32-wasip2.
#[test]
fn a_core_module_is_refused_with_a_hint() {
    let (rt, _cache) = isolated_runtime("malformed-core", |_| {});
    for module in [CORE_MODULE, CORE_MODULE_WITH_FUNC] {
        let (e, text) = refused_load(&rt, manifest("payout-limit"), module);
        assert!(matches!(e, Error::InvalidComponent { .. }), "{text}");
        assert!(
            text.contains("core WebAssembly module, not a component")
                && text.contains("wasm32-wasip2"),
            "{text}"
        );
    }
}

/// Threat: a deployer sends an empty file, text, or another binary format
/// under a `.wasm` name; each is refused as not WebAssembly at all.
#[test]
fn empty_and_non_wasm_files_are_refused() {
    let (rt, _cache) = isolated_runtime("malformed-empty", |_| {});
    let inputs: [&[u8]; 5] = [
        b"",
        b"\0asm",
        b"hello, world",
        b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0",
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR",
    ];
    for bytes in inputs {
        let (e, text) = refused_load(&rt, manifest("payout-limit"), bytes);
        assert!(matches!(e, Error::InvalidComponent { .. }), "{text}");
        assert!(
            text.contains("not a WebAssembly binary"),
            "{bytes:?}: {text}"
        );
    }
    // A wasm header with an unknown version or layer.
    let (_, text) = refused_load(&rt, manifest("payout-limit"), b"\0asm\x0d\0\x02\0");
    assert!(text.contains("malformed"), "{text}");
}

/// Threat: an operator's app file names a huge component file (a core dump, a disk
/// image) so that loading it reads gigabytes into host memory; the file's length is
/// checked against the cap before a byte is read.
#[test]
fn an_oversized_component_file_is_refused_before_it_is_read() {
    let dir = tempdir("malformed-huge-file");
    let path = dir.join("huge.wasm");
    // 64 GiB, sparse: reading it into memory would exhaust this machine.
    std::fs::File::create(&path)
        .and_then(|f| f.set_len(64 << 30))
        .expect("sparse file");
    let rt = runtime();
    let Err(e) = rt.load_files(manifest_path("payout-limit"), &path) else {
        panic!("a 64 GiB component was loaded")
    };
    let e = e.to_string();
    assert!(
        e.contains("component is 64.0 GiB") && e.contains("the limit is 64.0 MiB"),
        "{e}"
    );
}

/// Threat: a deployer sends a huge component to make the host spend memory
/// and minutes of Cranelift time on it; the size cap (64 MiB by default)
/// refuses it before parsing or compiling, saying how large it is and what
/// the limit is.
#[test]
fn an_oversized_component_is_refused_before_compiling() {
    let (rt, cache) = isolated_runtime("malformed-oversized", |_| {});
    let huge = padded_component(80 * MIB);
    assert!(Parser::new(0).parse_all(&huge).all(|p| p.is_ok()));
    let (e, text) = refused_load(&rt, manifest("payout-limit"), &huge);
    assert!(matches!(e, Error::InvalidComponent { .. }), "{text}");
    assert!(
        text.contains("component is 80.0 MiB") && text.contains("the limit is 64.0 MiB"),
        "{text}"
    );
    assert!(text.contains("before compiling"), "{text}");
    // Nothing was compiled: no cache entry.
    assert!(cache_entries(&cache).is_empty());

    // The cap is the host's setting: a small one refuses a real plugin and
    // accepts a smaller one.
    let (rt, _cache) = isolated_runtime("malformed-cap", |c| c.max_component_bytes = 100_000);
    let (_, text) = refused_load(&rt, manifest("payout-limit"), &component("payout-limit"));
    assert!(
        text.contains("the limit is 97.7 KiB (100000 bytes)"),
        "{text}"
    );
    rt.load(
        manifest("spin-forever"),
        &component("spin-forever"),
        "spin-forever",
    )
    .expect("a component under the cap loads");
}

/// Threat: a component is deployed under a manifest of another kind (a
/// policy declared as an agent, to be called with events it never expected);
/// it is refused, naming the export the kind requires.
#[test]
fn exports_that_do_not_match_the_kind_are_refused() {
    let (rt, cache) = isolated_runtime("malformed-kind", |_| {});
    for kind in ["agent", "connector", "model-adapter"] {
        let text = manifest_text("payout-limit")
            .replace("kind = \"policy\"", &format!("kind = \"{kind}\""));
        let (e, msg) = refused_load(
            &rt,
            manifest_from("payout-limit", &text),
            &component("payout-limit"),
        );
        assert!(matches!(e, Error::WrongKind { .. }), "{msg}");
        assert!(
            msg.contains(&format!("declared `kind = \"{kind}\"`"))
                && msg.contains(&format!("evos:plugin/{kind}-api")),
            "{msg}"
        );
    }
    // fraud-score is a model adapter; declared a policy it is refused too
    // (its manifest grants nothing a policy may not have).
    let text =
        manifest_text("fraud-score").replace("kind = \"model-adapter\"", "kind = \"policy\"");
    if let Ok(m) = Manifest::parse(&text, "fraud-score.toml", Path::new(".")) {
        let (e, msg) = refused_load(&rt, m, &component("fraud-score"));
        assert!(matches!(e, Error::WrongKind { .. }), "{msg}");
    }
    assert!(
        cache_entries(&cache).is_empty(),
        "{:?}",
        files_under(&cache)
    );
}

/// Threat: a manifest file with broken TOML is deployed; the error names the
/// file, the line and column, and what the parser expected.
#[test]
fn manifest_with_bad_syntax_names_file_and_line() {
    let dir = tempdir("malformed-syntax");
    let cases = [
        ("[plugin\nname = \"p\"\n", "line 1"),
        ("[plugin]\nname = \"p\nkind = \"policy\"\n", "line 2"),
        ("[plugin]\nname = \"p\"\nkind = policy\n", "line 3"),
        (
            "[plugin]\nname = \"p\"\nkind = \"policy\"\nversion = \"1.0.0\"\n[limits]\nfuel = = 1\n",
            "line 6",
        ),
    ];
    for (i, (text, line)) in cases.iter().enumerate() {
        let path = dir.join(format!("bad-{i}.toml"));
        std::fs::write(&path, text).expect("write");
        let e = Manifest::load(&path).expect_err("bad syntax").to_string();
        assert!(e.contains(&format!("bad-{i}.toml")), "{e}");
        assert!(e.contains(line) && e.contains("TOML parse error"), "{e}");
    }
    // Not UTF-8 at all.
    let path = dir.join("latin1.toml");
    std::fs::write(&path, b"[plugin]\nname = \"caf\xe9\"\n").expect("write");
    let e = Manifest::load(&path).expect_err("latin-1").to_string();
    assert!(e.contains("not UTF-8"), "{e}");
}

/// Threat: a manifest carries a field evos does not know (a typo that would
/// silently leave a limit at its default, or a grant from another tool's
/// schema); it is refused with the line and the nearest known field.
#[test]
fn unknown_manifest_fields_are_refused_with_a_hint() {
    let base = manifest_text("payout-limit");
    let cases = [
        (
            format!("{base}\n[limits]\nfule = 5\n"),
            "unknown field `fule`",
            Some("fuel"),
        ),
        (
            format!("{base}\n[limit]\nfuel = 5\n"),
            "unknown field `limit`",
            Some("limits"),
        ),
        (
            base.replace("[capabilities]", "[capabilities]\nnetwork = true"),
            "unknown field `network`",
            None,
        ),
        (
            base.replace("[plugin]", "[plugin]\nauthor = \"me\""),
            "unknown field `author`",
            None,
        ),
    ];
    for (text, what, hint) in cases {
        let e = Manifest::parse(&text, "payout-limit.toml", Path::new("."))
            .expect_err("unknown field")
            .to_string();
        assert!(e.contains(what) && e.contains("expected one of"), "{e}");
        if let Some(hint) = hint {
            assert!(e.contains(&format!("did you mean `{hint}`?")), "{e}");
        }
    }
}

/// Threat: a manifest states a key twice (`fuel` low where a reviewer reads
/// it, high further down), hoping reviewer and parser read different
/// values; duplicate keys and tables are refused, naming the key.
#[test]
fn duplicate_manifest_keys_are_refused() {
    let base = manifest_text("payout-limit");
    let cases = [
        format!("{base}\n[limits]\nfuel = 1000\nfuel = 999999999\n"),
        base.replace("kind = \"policy\"", "kind = \"policy\"\nkind = \"agent\""),
        format!("{base}\n[capabilities]\nlog = false\n"),
        format!("{base}\nallow-below = 5\n"),
    ];
    for text in cases {
        let e = Manifest::parse(&text, "payout-limit.toml", Path::new("."))
            .expect_err("duplicate")
            .to_string();
        assert!(e.contains("duplicate key") && e.contains("line "), "{e}");
    }
}

/// Threat: a manifest asks for limits meant to break the host (fuel 0 or
/// negative, `memory = "99999PiB"`, a zero or century-long timeout, zero
/// concurrency, kv quotas of 0, infinite prices); each is refused with the
/// accepted range rather than clamped.
#[test]
fn hostile_limit_values_are_refused() {
    let base = manifest_text("payout-limit");
    let with_limits = |l: &str| format!("{base}\n[limits]\n{l}\n");
    let cases = [
        (with_limits("fuel = 0"), "fuel must be a positive"),
        (with_limits("fuel = -1"), "fuel must be a positive"),
        (with_limits("fuel = 99999999999999999999999999"), "line "),
        (
            with_limits("memory = \"99999PiB\""),
            "more than a wasm32 memory can address",
        ),
        (with_limits("memory = \"1B\""), "too small"),
        (with_limits("memory = \"-64MiB\""), "invalid memory size"),
        (with_limits("timeout = \"0s\""), "between 1ms and 1h"),
        (with_limits("timeout = \"100years\""), "between 1ms and 1h"),
        (with_limits("max-concurrency = 0"), "between 1 and 10000"),
        (
            with_limits("max-concurrency = 4294967296"),
            "between 1 and 10000",
        ),
        (
            format!("{base}\n[cost]\nper-1k-input-units = inf\n"),
            "finite",
        ),
        (
            format!("{base}\n[rollout]\nmax-error-rate = 2.0\n"),
            "between 0.0 and 1.0",
        ),
    ];
    for (text, why) in cases {
        let e = Manifest::parse(&text, "payout-limit.toml", Path::new("."))
            .expect_err("hostile value")
            .to_string();
        assert!(
            e.contains("payout-limit.toml") && e.contains(why),
            "{why}: {e}"
        );
    }
    let agent = "[plugin]\nname = \"a\"\nkind = \"agent\"\nversion = \"1.0.0\"\n[capabilities]\n";
    for kv in [
        "max-keys = 0",
        "max-value-bytes = 0",
        "max-key-bytes = 0",
        "max-total-bytes = 0",
    ] {
        let e = Manifest::parse(
            &format!("{agent}kv = {{ {kv} }}\n"),
            "a.toml",
            Path::new("."),
        )
        .expect_err("zero kv limit")
        .to_string();
        assert!(e.contains("would refuse every write"), "{e}");
    }
}

/// Threat: a manifest asks for more memory than the host's instance pool
/// holds (valid on its own, 1 GiB against a 256 MiB pool); the load is
/// refused naming both numbers, instead of failing later per call.
#[test]
fn memory_above_the_engine_pool_is_refused_at_load() {
    let (rt, _cache) = isolated_runtime("malformed-pool", |_| {});
    let text = format!(
        "{}\n[limits]\nmemory = \"1GiB\"\n",
        manifest_text("payout-limit")
    );
    let (e, msg) = refused_load(
        &rt,
        manifest_from("payout-limit", &text),
        &component("payout-limit"),
    );
    assert!(matches!(e, Error::Manifest { .. }), "{msg}");
    assert!(
        msg.contains("1073741824 bytes") && msg.contains("at most 268435456 bytes"),
        "{msg}"
    );
}

/// Threat: a plugin name is chosen to escape or impersonate: a path (`../`,
/// `/`), control characters that rewrite a terminal, a Unicode confusable of
/// an existing plugin (Cyrillic `а` in `pаyout-limit`), empty, or very long;
/// each is refused with the reason, and the error never echoes the raw
/// control characters or the whole long name.
#[test]
fn hostile_plugin_names_are_refused() {
    let names = [
        ("../payout-limit", "'.'"),
        ("plugins/payout-limit", "'/'"),
        ("payout\u{1b}[2J", "control character U+001B"),
        ("payout\nlimit", "control character U+000A"),
        ("p\u{430}yout-limit", "U+0430"),
        ("payout-limit\u{200b}", "U+200B"),
        ("", "empty"),
        ("PAYOUT", "uppercase"),
    ];
    let base = manifest_text("payout-limit");
    for (name, why) in names {
        let quoted = toml_string(name);
        let text = base.replace("name = \"payout-limit\"", &format!("name = {quoted}"));
        let e = Manifest::parse(&text, "payout-limit.toml", Path::new("."))
            .expect_err("hostile name")
            .to_string();
        assert!(
            e.contains("invalid plugin name") && e.contains(why),
            "{name:?}: {e}"
        );
        assert!(!e.contains('\u{1b}'), "{e:?}");
    }
    let long = "a".repeat(1_000_000 / 8);
    let text = base.replace("name = \"payout-limit\"", &format!("name = \"{long}\""));
    let e = Manifest::parse(&text, "payout-limit.toml", Path::new("."))
        .expect_err("long name")
        .to_string();
    assert!(
        e.contains("at most 63") && e.len() < 1_000,
        "{} bytes",
        e.len()
    );
}

/// Threat: versions that are not semver (`latest`, `v1`, a 10 KB string)
/// make history, rollback targets and metrics labels ambiguous or huge; they
/// are refused.
#[test]
fn non_semver_versions_are_refused() {
    let base = manifest_text("payout-limit");
    for v in [
        "latest",
        "v1.0.0",
        "1.0",
        "1.0.0.0",
        "",
        &format!("1.0.0-{}", "x".repeat(10_000)),
    ] {
        let text = base.replace("version = \"1.0.0\"", &format!("version = \"{v}\""));
        let e = Manifest::parse(&text, "payout-limit.toml", Path::new("."))
            .expect_err("bad version")
            .to_string();
        assert!(
            e.contains("invalid version") || e.contains("at most 64"),
            "{v:?}: {e}"
        );
        assert!(e.len() < 1_000, "{} bytes", e.len());
    }
}

/// Threat: a manifest is made huge or deeply nested (a megabyte config
/// value, thousands of nested arrays) to exhaust the parser's memory or
/// stack; the size cap, the nesting limit and the config bounds refuse it
/// with an error, never a crash.
#[test]
fn oversized_and_deeply_nested_manifests_are_refused() {
    let base = manifest_text("payout-limit");
    let huge = format!("{base}\n# {}\n", "x".repeat(300 * 1024));
    let e = Manifest::parse(&huge, "payout-limit.toml", Path::new("."))
        .expect_err("huge")
        .to_string();
    assert!(e.contains("the limit is 262144 bytes"), "{e}");
    let value = base.replace(
        "deny-above = 10000",
        &format!("deny-above = \"{}\"", "9".repeat(100_000)),
    );
    let e = Manifest::parse(&value, "payout-limit.toml", Path::new("."))
        .expect_err("huge value")
        .to_string();
    assert!(e.contains("[config] deny-above is 100000 bytes"), "{e}");
    for depth in [128, 50_000] {
        let nested = format!("{base}deep = {}{}\n", "[".repeat(depth), "]".repeat(depth));
        let e = Manifest::parse(&nested, "payout-limit.toml", Path::new("."))
            .expect_err("nested")
            .to_string();
        assert!(e.contains("line 14") && e.len() < 2_000, "{e}");
    }
    let tables = base.replace("[config]", "[config.a.b.c.d]");
    let e = Manifest::parse(&tables, "payout-limit.toml", Path::new("."))
        .expect_err("nested config")
        .to_string();
    assert!(e.contains("a string, number or boolean"), "{e}");
}

fn toml_string(s: &str) -> String {
    toml_escape(s)
}

/// `s` as a TOML basic string.
fn toml_escape(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn open_registry(dir: &Path, cache: &Path) -> Arc<Registry> {
    Registry::open(
        dir,
        EngineConfig {
            cache_dir: Some(cache.to_path_buf()),
            max_instances: 8,
            ..Default::default()
        },
        BTreeMap::new(),
    )
    .expect("open registry")
}

/// What a data directory holds that a deploy could change.
#[derive(Debug, PartialEq)]
struct Snapshot {
    digest: String,
    version: String,
    history: usize,
    versions: usize,
    blobs: Vec<PathBuf>,
    cache: Vec<PathBuf>,
    audit_other: usize,
}

fn snapshot(reg: &Registry, dir: &Path, cache: &Path) -> Snapshot {
    let status = reg.status(Some("payout-limit")).expect("status");
    let audit = reg.store().audit_list(0, None).expect("audit");
    Snapshot {
        digest: status[0].stable.digest.clone(),
        version: status[0].stable.version.clone(),
        history: reg.store().history("payout-limit").expect("history").len(),
        versions: reg
            .store()
            .versions_of("payout-limit")
            .expect("versions")
            .len(),
        blobs: files_under(&dir.join("blobs")),
        cache: cache_entries(cache),
        audit_other: audit
            .iter()
            .filter(|e| e.action != "deploy-refused")
            .count(),
    }
}

/// Threat: an operator deploys each kind of malformed component over a
/// running plugin (truncated, corrupt, a core module, empty, oversized, the
/// wrong kind, memory above the pool, a hostile manifest); every deploy is
/// refused and the data directory is exactly as before: same stable version,
/// no blob, no version row, no history, no cache entry, and audit entries
/// only for the refusals (each one `deploy-refused`, the chain verifying).
#[tokio::test(flavor = "multi_thread")]
async fn refused_deploys_of_malformed_input_change_nothing() {
    let dir = tempdir("malformed-deploy");
    let cache = dir.join("cache");
    let reg = open_registry(&dir, &cache);
    let v1 = manifest("payout-limit");
    reg.deploy(v1, &component("payout-limit"), "payout-limit", None, "test")
        .await
        .expect("deploy v1");
    let before = snapshot(&reg, &dir, &cache);

    // Version 1.1.0 of the manifest, so nothing is refused as "already
    // deployed" rather than for being malformed.
    let v11_text =
        manifest_text("payout-limit").replace("version = \"1.0.0\"", "version = \"1.1.0\"");
    let v11 = || manifest_from("payout-limit", &v11_text);
    let whole = component("payout-limit");
    let mut corrupt = whole.clone();
    let code = code_section(&whole);
    let mid = code.start + code.len() / 2;
    corrupt[mid..mid + 32].fill(0xff);
    let as_agent = manifest_from(
        "payout-limit",
        &v11_text.replace("kind = \"policy\"", "kind = \"agent\""),
    );
    let big_memory = manifest_from(
        "payout-limit",
        &format!("{v11_text}\n[limits]\nmemory = \"1GiB\"\n"),
    );
    let cases: Vec<(&str, Manifest, Vec<u8>)> = vec![
        ("truncated", v11(), whole[..whole.len() / 2].to_vec()),
        ("corrupt", v11(), corrupt),
        ("core module", v11(), CORE_MODULE_WITH_FUNC.to_vec()),
        ("empty", v11(), Vec::new()),
        ("oversized", v11(), padded_component(80 * MIB)),
        ("wrong kind", as_agent, whole.clone()),
        ("memory above the pool", big_memory, whole.clone()),
    ];
    let refused = cases.len();
    for (what, manifest, bytes) in cases {
        let err = reg
            .deploy(manifest, &bytes, what, None, "test")
            .await
            .expect_err(what);
        let text = err.to_string();
        assert!(!text.is_empty(), "{what}");
        // The wrong-kind and memory cases reuse v1's bytes, stored by v1.
        if bytes != whole {
            let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
            assert!(!reg.store().has_blob(&digest), "{what}: blob stored");
        }
    }
    // A manifest whose source is hostile, changed after it was parsed: the
    // registry parses the source again and refuses it before anything else.
    let mut hostile = v11();
    hostile.source = hostile
        .source
        .replace("name = \"payout-limit\"", "name = \"../payout-limit\"");
    let err = reg
        .deploy(hostile, &whole, "hostile", None, "test")
        .await
        .expect_err("hostile source");
    assert!(err.to_string().contains("invalid plugin name"), "{err}");

    assert_eq!(snapshot(&reg, &dir, &cache), before);
    let audit = reg.store().audit_list(0, None).expect("audit");
    let refusals: Vec<_> = audit
        .iter()
        .filter(|e| e.action == "deploy-refused")
        .collect();
    assert_eq!(refusals.len(), refused, "{refusals:#?}");
    let verification = reg.store().audit_verify().expect("verify");
    assert!(verification.intact, "{verification:?}");

    // The still-deployed version serves calls.
    let input = evos::CallInput::from_json(evos::manifest::Kind::Policy, sample("payout-limit"))
        .expect("input");
    let report = reg.call("payout-limit", input, None).await.expect("call");
    assert!(report.outcome.is_ok(), "{report:?}");
}

/// Threat: an API client uploads malformed components to `/v1/components`
/// (truncated, corrupt code, a core module, larger than the cap) to fill the
/// blob store or plant bytes a later deploy trusts; each is refused with a
/// stable error code (400, or 413 for the size cap, which matches the
/// engine's `max_component_bytes`) and no blob is written, while a valid
/// component is accepted.
#[tokio::test(flavor = "multi_thread")]
async fn malformed_uploads_store_nothing() {
    let dir = tempdir("malformed-upload");
    let mut config = evos::server::ServerConfig::new(&dir, root().join("evos.toml"));
    config.engine.cache_dir = Some(dir.join("cache"));
    config.engine.max_instances = 8;
    config.engine.max_component_bytes = 2 * MIB as u64;
    let app = evos::app::App {
        path: root().join("evos.toml"),
        plugins: Vec::new(),
        deployers: Default::default(),
        recording: None,
        sources: Vec::new(),
    };
    let (host, boot) = evos::server::Host::bootstrap_with(config, app)
        .await
        .expect("bootstrap");
    let token = std::fs::read_to_string(boot.admin_token_file.expect("admin token"))
        .expect("token")
        .trim()
        .to_string();
    let (port, stop) = serve_on_loopback(host.clone()).await;
    let upload = |body: Vec<u8>| {
        let token = token.clone();
        tokio::task::spawn_blocking(move || {
            http_request(port, "POST", "/v1/components", Some(&token), &body, &[])
        })
    };

    let whole = component("payout-limit");
    let mut corrupt = whole.clone();
    let code = code_section(&whole);
    let mid = code.start + code.len() / 2;
    corrupt[mid..mid + 32].fill(0xff);
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "truncated",
            whole[..whole.len() / 2].to_vec(),
            400,
            "unexpected end-of-file",
        ),
        ("corrupt", corrupt, 400, "invalid WebAssembly"),
        (
            "core module",
            CORE_MODULE_WITH_FUNC.to_vec(),
            400,
            "core WebAssembly module",
        ),
        ("empty", Vec::new(), 400, "not a WebAssembly binary"),
        (
            "oversized",
            padded_component(3 * MIB),
            413,
            "limit of 2.0 MiB",
        ),
    ];
    for (what, bytes, status, message) in cases {
        let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        let (got, body) = upload(bytes).await.expect("join");
        assert_eq!(got, status, "{what}: {body}");
        assert!(body.contains(message), "{what}: {body}");
        assert!(
            !host.registry.store().has_blob(&digest),
            "{what}: blob stored"
        );
    }
    assert!(files_under(&dir.join("blobs")).is_empty());
    // Components larger than the general 1 MiB body limit but under the cap
    // are accepted.
    let big = padded_component(MIB + MIB / 2);
    let (got, body) = upload(big).await.expect("join");
    assert_eq!(got, 201, "{body}");
    let (got, body) = upload(whole).await.expect("join");
    assert_eq!(got, 201, "{body}");
    let _ = stop.send(());
}
