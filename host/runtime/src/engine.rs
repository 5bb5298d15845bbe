//! The wasmtime engine evos runs every plugin on, and its compile cache.
//!
//! One engine per host: the pooling allocator (instances come from
//! preallocated slots, so a call's instantiation is cheap and bounded), fuel
//! metering (bounds CPU per call) and epoch interruption (bounds wall clock
//! per call; a ticker thread advances the epoch).
//!
//! Compiled components are cached in a host-owned directory keyed by the
//! component's sha256 and the engine's compatibility hash. Deserializing
//! compiled code is `unsafe` in wasmtime because a crafted file is arbitrary
//! native code, so the cache only ever loads files this host wrote: each
//! entry carries an HMAC under a key that is created in the cache directory
//! (mode 0600) and never leaves it, and the directory must be owned by the
//! current user and not writable by others.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use crate::{Error, Result};

/// Bytes of each pooled linear memory reset with memset and kept resident.
const KEEP_RESIDENT: usize = 1024 * 1024;
/// Slots decommitted together.
const DECOMMIT_BATCH: usize = 16;

/// Engine-wide settings (the per-plugin limits live in manifests).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where compiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Instances that can exist at once (pool size).
    pub max_instances: u32,
    /// Largest linear memory one instance may ever have; manifests asking
    /// for more are refused at load.
    pub max_memory_per_instance: u64,
    /// Largest component accepted, checked before parsing or compiling
    /// (64 MiB by default; the example plugins are 15-260 KiB). The API's
    /// upload endpoint takes bodies up to this size.
    pub max_component_bytes: u64,
    /// How often the epoch advances; wall-clock limits have this resolution.
    pub epoch_tick: Duration,
    /// Wasm stack per call; deeper recursion is a stack-overflow outcome.
    pub max_wasm_stack: usize,
    /// Fuel metering: bounds CPU per call (a manifest's `fuel` limit).
    /// Turning it off removes that bound; it exists to measure its cost.
    pub fuel: bool,
    /// Epoch interruption: bounds wall clock inside wasm (a manifest's
    /// `timeout`; host calls stay bounded by the call's outer timeout).
    /// Turning it off exists to measure its cost.
    pub epoch: bool,
    /// Bytes of each pooled linear memory reset in place (memset) when an
    /// instance ends and kept resident for the next; the rest is returned
    /// to the kernel. Interpreted plugins (Python, JavaScript) touch
    /// megabytes of their memory image per call; compiled ones little.
    pub keep_resident: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            cache_dir: None,
            max_instances: 128,
            max_memory_per_instance: 256 * 1024 * 1024,
            max_component_bytes: 64 * 1024 * 1024,
            epoch_tick: Duration::from_millis(5),
            max_wasm_stack: 1024 * 1024,
            fuel: true,
            epoch: true,
            keep_resident: KEEP_RESIDENT,
        }
    }
}

/// Counters of the compile cache.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Entries found but refused (bad HMAC, wrong owner, unreadable).
    pub rejected: AtomicU64,
}

/// A compiled component and how it was obtained.
pub struct Compiled {
    pub component: Component,
    /// sha256 of the component bytes, hex.
    pub digest: String,
    pub cache_hit: bool,
}

struct Inner {
    engine: wasmtime::Engine,
    config: EngineConfig,
    cache: Option<Cache>,
    stats: CacheStats,
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

/// The shared engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    pub fn new(config: EngineConfig) -> Result<Engine> {
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        let n = config.max_instances.max(1);
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(8))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(8))
            .total_stacks(n)
            .max_memory_size(config.max_memory_per_instance as usize)
            // Reset small memories and tables with memset instead of
            // madvise, and decommit the rest in batches: each madvise is a
            // TLB shootdown across cores, the largest per-call cost after
            // instantiation itself. Reused slots are zeroed either way.
            .linear_memory_keep_resident(config.keep_resident)
            .table_keep_resident(KEEP_RESIDENT / 16)
            .decommit_batch_size(DECOMMIT_BATCH)
            .pagemap_scan(wasmtime::Enabled::Auto);

        let mut cfg = wasmtime::Config::new();
        cfg.wasm_component_model(true)
            .consume_fuel(config.fuel)
            .epoch_interruption(config.epoch)
            .max_wasm_stack(config.max_wasm_stack)
            .allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        let engine =
            wasmtime::Engine::new(&cfg).map_err(|e| Error::wasmtime("creating the engine", e))?;

        let cache = match &config.cache_dir {
            Some(dir) => Some(Cache::open(dir, &engine)?),
            None => None,
        };

        let stop = Arc::new(AtomicBool::new(false));
        if config.epoch {
            spawn_ticker(engine.clone(), config.epoch_tick, stop.clone());
        }

        Ok(Engine {
            inner: Arc::new(Inner {
                engine,
                config,
                cache,
                stats: CacheStats::default(),
                stop_ticker: stop,
            }),
        })
    }

    pub fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner.engine
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    pub fn cache_stats(&self) -> &CacheStats {
        &self.inner.stats
    }

    /// Epoch ticks for a deadline no earlier than `timeout` from now. The
    /// next tick may come at any moment, so one tick is added: a limit may
    /// fire up to one tick late, never early.
    pub(crate) fn ticks_for(&self, timeout: Duration) -> u64 {
        let tick = self.inner.config.epoch_tick.as_nanos().max(1);
        timeout.as_nanos().div_ceil(tick) as u64 + 1
    }

    /// Refuse a component larger than `max_component_bytes`, before any
    /// parsing or compiling: guards against an upload or deploy that would
    /// make the host spend memory and CPU (Cranelift's time grows with the
    /// code) on an arbitrarily large input.
    pub fn check_size(&self, bytes: &[u8], what: &str) -> Result<()> {
        self.check_length(bytes.len() as u64, what)
    }

    fn check_length(&self, size: u64, what: &str) -> Result<()> {
        let max = self.inner.config.max_component_bytes;
        if size <= max {
            return Ok(());
        }
        Err(Error::InvalidComponent {
            what: what.into(),
            message: format!(
                "component is {} ({size} bytes); the limit is {} ({max} bytes), checked before compiling; strip debug info (`wasm-tools strip`) or raise the host's `max_component_bytes`",
                bytesize::ByteSize(size).display().iec(),
                bytesize::ByteSize(max).display().iec(),
            ),
        })
    }

    /// Read a component file, refusing one over the size cap before
    /// reading it (the file's length, then at most one byte past the cap
    /// in case it grows meanwhile). A missing file says how to build it.
    pub fn read_component(&self, path: &Path) -> Result<Vec<u8>> {
        use std::io::Read;
        let what = path.display().to_string();
        let cannot = |e: std::io::Error| Error::InvalidComponent {
            what: what.clone(),
            message: format!(
                "cannot read the component: {e}{}",
                if e.kind() == std::io::ErrorKind::NotFound {
                    "; build the plugins with `cargo xtask plugins`"
                } else {
                    ""
                }
            ),
        };
        let file = std::fs::File::open(path).map_err(cannot)?;
        let length = file.metadata().map_err(cannot)?.len();
        self.check_length(length, &what)?;
        let max = self.inner.config.max_component_bytes;
        let mut bytes = Vec::with_capacity(usize::try_from(length).unwrap_or(0));
        file.take(max.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(cannot)?;
        self.check_size(&bytes, &what)?;
        Ok(bytes)
    }

    /// Everything that can be checked about a component without a manifest
    /// or a compile: its size, that it is a component (not a core module)
    /// and that it is valid WebAssembly (wasmparser's validator, which
    /// reads every function body). What an upload must pass before it is
    /// stored.
    pub fn validate_component(&self, bytes: &[u8], what: &str) -> Result<()> {
        self.check_size(bytes, what)?;
        crate::inspect::ensure_component(bytes, what)?;
        wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::default())
            .validate_all(bytes)
            .map(|_| ())
            .map_err(|e| Error::InvalidComponent {
                what: what.into(),
                message: format!("invalid WebAssembly: {e}"),
            })
    }

    /// Compile `bytes` (or load the cached compilation). `what` names the
    /// component in errors.
    pub fn compile(&self, bytes: &[u8], what: &str) -> Result<Compiled> {
        self.check_size(bytes, what)?;
        crate::inspect::ensure_component(bytes, what)?;
        let digest = hex::encode(Sha256::digest(bytes));
        if let Some(cache) = &self.inner.cache {
            match cache.load(&self.inner.engine, &digest) {
                CacheLookup::Hit(component) => {
                    self.inner.stats.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(Compiled {
                        component,
                        digest,
                        cache_hit: true,
                    });
                }
                CacheLookup::Rejected(why) => {
                    self.inner.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(target: "evos::engine", digest, "compile cache entry refused: {why}");
                }
                CacheLookup::Miss => {}
            }
        }
        self.inner.stats.misses.fetch_add(1, Ordering::Relaxed);
        let component =
            Component::new(&self.inner.engine, bytes).map_err(|e| Error::InvalidComponent {
                what: what.into(),
                message: format!("{e:#}"),
            })?;
        if let Some(cache) = &self.inner.cache
            && let Err(e) = cache.store(&component, &digest)
        {
            tracing::warn!(target: "evos::engine", digest, "could not write the compile cache: {e}");
        }
        Ok(Compiled {
            component,
            digest,
            cache_hit: false,
        })
    }
}

fn spawn_ticker(engine: wasmtime::Engine, tick: Duration, stop: Arc<AtomicBool>) {
    let spawned = std::thread::Builder::new()
        .name("evos-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                engine.increment_epoch();
            }
        });
    if let Err(e) = spawned {
        // Without a ticker wall-clock limits still hold through the host-side
        // timeout around every call; only wasm-level interruption is lost.
        tracing::error!(target: "evos::engine", "could not start the epoch ticker: {e}");
    }
}

enum CacheLookup {
    Hit(Component),
    Miss,
    Rejected(String),
}

type HmacSha256 = Hmac<Sha256>;

struct Cache {
    dir: PathBuf,
    key: Vec<u8>,
}

impl Cache {
    fn open(root: &Path, engine: &wasmtime::Engine) -> Result<Cache> {
        let compat = compatibility_key(engine);
        let dir = root.join(compat);
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        restrict_dir(root)?;
        restrict_dir(&dir)?;
        let key_path = root.join("cache.key");
        let key = match fs::read(&key_path) {
            Ok(k) if k.len() == 32 => k,
            Ok(_) | Err(_) => {
                let mut k = vec![0u8; 32];
                getrandom_fill(&mut k).map_err(|e| Error::io(&key_path, e))?;
                write_private(&key_path, &k)?;
                k
            }
        };
        Ok(Cache { dir, key })
    }

    fn paths(&self, digest: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{digest}.cwasm")),
            self.dir.join(format!("{digest}.hmac")),
        )
    }

    fn mac(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        let mut mac = HmacSha256::new_from_slice(&self.key).ok()?;
        mac.update(bytes);
        Some(mac.finalize().into_bytes().to_vec())
    }

    fn load(&self, engine: &wasmtime::Engine, digest: &str) -> CacheLookup {
        let (code_path, mac_path) = self.paths(digest);
        let Ok(code) = fs::read(&code_path) else {
            return CacheLookup::Miss;
        };
        let Ok(tag) = fs::read(&mac_path) else {
            return CacheLookup::Rejected("no HMAC beside the cached code".into());
        };
        if let Err(why) = owned_and_private(&code_path) {
            return CacheLookup::Rejected(why);
        }
        let verified = HmacSha256::new_from_slice(&self.key)
            .map(|mut m| {
                m.update(&code);
                m.verify_slice(&tag).is_ok()
            })
            .unwrap_or(false);
        if !verified {
            return CacheLookup::Rejected("HMAC mismatch: not written by this host".into());
        }
        // SAFETY: the bytes were produced by `Component::serialize` of this
        // engine configuration (the directory is keyed by its compatibility
        // hash) and written by this host: the HMAC under the host's private
        // key proves it, so no foreign or tampered code is deserialized.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine, &code) };
        match component {
            Ok(c) => CacheLookup::Hit(c),
            Err(e) => CacheLookup::Rejected(format!("{e:#}")),
        }
    }

    fn store(&self, component: &Component, digest: &str) -> std::result::Result<(), String> {
        let code = component.serialize().map_err(|e| format!("{e:#}"))?;
        let tag = self.mac(&code).ok_or("HMAC key unusable")?;
        let (code_path, mac_path) = self.paths(digest);
        // The tag goes first: a reader that finds code always finds a tag,
        // and a stale tag never verifies new code.
        write_private(&mac_path, &tag).map_err(|e| e.to_string())?;
        write_private(&code_path, &code).map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// A directory name for this wasmtime version and engine configuration.
fn compatibility_key(engine: &wasmtime::Engine) -> String {
    use std::hash::{Hash, Hasher};
    struct ShaHasher(Sha256);
    impl Hasher for ShaHasher {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut h = ShaHasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    let digest = h.0.finalize();
    hex::encode(&digest[..12])
}

/// Write atomically (temp file + rename) with mode 0600.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| Error::io(path, e))
}

#[cfg(unix)]
fn restrict_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| Error::io(dir, e))?;
    owned_and_private(dir).map_err(|why| Error::io(dir, std::io::Error::other(why)))
}

#[cfg(not(unix))]
fn restrict_dir(_dir: &Path) -> Result<()> {
    Ok(())
}

#[cfg(unix)]
fn owned_and_private(path: &Path) -> std::result::Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    let me = fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(meta.uid());
    if meta.uid() != me {
        return Err(format!(
            "{} is owned by uid {}, not by this host",
            path.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!("{} is writable by other users", path.display()));
    }
    Ok(())
}

#[cfg(not(unix))]
fn owned_and_private(_path: &Path) -> std::result::Result<(), String> {
    Ok(())
}

/// Fill `buf` from the operating system's random source.
fn getrandom_fill(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    fs::File::open("/dev/urandom")?.read_exact(buf)
}
