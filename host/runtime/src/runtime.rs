//! Loading plugins and calling them.
//!
//! Loading does all the expensive and fallible work once: compile (or hit
//! the cache), check imports against grants, link exactly the granted
//! capabilities, build the `InstancePre` and resolve the kind's export. A
//! call then only builds a fresh `Store` (fuel, memory limiter, epoch
//! deadline), instantiates from the pooling allocator and calls. A fresh
//! instance per call means no state leaks between calls; one plugin's trap,
//! timeout or exhaustion ends only its own store.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use wasmtime::component::{Instance, InstancePre, ResourceTable};
use wasmtime::{Store, Trap};

use crate::bindings::evos::plugin::types as wit;
use crate::bindings::exports::evos::plugin::{
    agent_api, connector_api, model_adapter_api, policy_api,
};
use crate::capability::kv::{KvStore, MemoryKv};
use crate::capability::log::LogLine;
use crate::capability::{self, CallContext, Grants};
use crate::engine::Engine;
use crate::manifest::{Kind, Manifest};
use crate::state::{CapabilityStates, LazyWasi, Limiter, PluginState};
use crate::types::{Action, Decision, Event, GuestError, ModelResponse};
use crate::{Error, Result, inspect};

pub use evos_core::call::{CallInput, CallOutput, CallReport, Outcome, Refusal};

/// Fuel between yields to the async executor (roughly a millisecond of
/// guest work).
const FUEL_YIELD_INTERVAL: u64 = 2_000_000;

/// Captured stdout/stderr per call; output beyond this is dropped and counted.
const STDIO_CAPACITY: usize = 64 * 1024;

/// Entries in a call's resource table (pollables, streams, HTTP requests,
/// fields, ...). Guards the host against a guest creating handles until
/// host memory runs out (GHSA-852m-cvvp-9p4w).
pub const MAX_TABLE_ENTRIES: usize = 10_000;
/// Live component-model handles per call.
pub const MAX_COMPONENT_HANDLES: usize = 10_000;
/// Bytes one host call may carry from guest to host, before the kv value
/// quota is added: a guest passing a huge string or list traps instead of
/// making the host copy it.
pub const HOSTCALL_BYTES: usize = 8 * 1024 * 1024;

fn hostcall_bytes(grants: &Grants) -> usize {
    let kv = grants
        .kv
        .map(|kv| {
            usize::try_from(kv.max_value_bytes.saturating_add(kv.max_key_bytes))
                .unwrap_or(usize::MAX)
        })
        .unwrap_or(0);
    HOSTCALL_BYTES.saturating_add(kv)
}

enum Export {
    Connector(connector_api::GuestIndices),
    ModelAdapter(model_adapter_api::GuestIndices),
    Policy(policy_api::GuestIndices),
    Agent(agent_api::GuestIndices),
}

/// A loaded, fully linked plugin version, ready to be called.
pub struct Plugin {
    manifest: Manifest,
    /// Name, version and digest as reports carry them on every call.
    name: Arc<str>,
    version: Arc<str>,
    digest: Arc<str>,
    cache_hit: bool,
    grants: Arc<Grants>,
    pre: InstancePre<PluginState>,
    export: Export,
    concurrency: Arc<Semaphore>,
}

impl Plugin {
    pub fn name(&self) -> &str {
        self.manifest.name()
    }
    pub fn kind(&self) -> Kind {
        self.manifest.kind()
    }
    pub fn version(&self) -> &str {
        &self.version
    }
    pub fn digest(&self) -> &str {
        &self.digest
    }
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    /// Whether loading found the compiled code in the compile cache.
    pub fn cache_hit(&self) -> bool {
        self.cache_hit
    }
}

struct Inner {
    engine: Engine,
    kv: Arc<dyn KvStore>,
    /// Keep-alive connections of plugins' outgoing HTTP.
    egress: crate::capability::pool::Pool,
    host_env: BTreeMap<String, String>,
    plugins: RwLock<HashMap<String, Arc<Plugin>>>,
    /// Host directories no `files` grant may reach (canonical paths, with
    /// what they are): the data directory and the compile cache.
    protected: RwLock<Vec<(PathBuf, &'static str)>>,
}

/// Resolves plugin names for calls the host makes on a plugin's behalf
/// (an agent's `models` calls), so they follow the same routing as direct
/// calls: versions, canary weights and outcome windows. See
/// the control plane's registry (`evos_control::registry::Registry`).
pub trait Router: Send + Sync {
    fn resolve(&self, name: &str) -> Option<Routed>;
}

/// Calls plugins by name: the pipeline's view of a host. [`Runtime`] calls
/// its registered plugins; the control plane's registry (`evos_control::registry::Registry`) routes through
/// deployed versions.
pub trait Caller: Send + Sync {
    /// The kind of the plugin called `name`, if there is one.
    fn kind_of(&self, name: &str) -> Option<Kind>;
    /// Call the plugin called `name`.
    fn call<'a>(
        &'a self,
        name: &'a str,
        input: CallInput,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<CallReport>> + Send + 'a>>;
    /// Whether an action resting on the answer of `plugin` at `version`
    /// goes to human review because that version drifts (see
    /// [`crate::drift`]): the reason, for the events its `review-share`
    /// picks. Hosts that do not watch drift send none.
    fn drift_review(&self, _plugin: &str, _version: &str, _event_id: &str) -> Option<String> {
        None
    }
}

impl Caller for Runtime {
    fn kind_of(&self, name: &str) -> Option<Kind> {
        self.get(name).map(|p| p.kind())
    }

    fn call<'a>(
        &'a self,
        name: &'a str,
        input: CallInput,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<CallReport>> + Send + 'a>> {
        Box::pin(async move {
            let plugin = self
                .get(name)
                .ok_or_else(|| Error::UnknownPlugin(name.to_string()))?;
            Runtime::call(self, &plugin, input).await
        })
    }
}

/// A routed plugin and what to do with the call's report.
pub struct Routed {
    pub plugin: Arc<Plugin>,
    pub on_done: Box<dyn FnOnce(&CallReport) + Send>,
    /// When the call should also reach a shadow version: given a copy of
    /// the input and the live report once the call answered. Not called
    /// for calls made by a shadow.
    pub mirror: Option<Mirror>,
}

/// Hands a copy of a call's input and its report to a shadow version.
pub type Mirror = Box<dyn FnOnce(CallInput, &CallReport) + Send>;

/// Whether `input` is of the kind `plugin` takes.
fn fits(plugin: &Plugin, input: &CallInput) -> Result<()> {
    if input.kind() == plugin.kind() {
        return Ok(());
    }
    Err(Error::Input {
        plugin: plugin.name().to_string(),
        kind: plugin.kind().to_string(),
        message: format!("a {} input was given", input.kind()),
    })
}

/// The host runtime: an engine, the kv store and the loaded plugins.
/// Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl Runtime {
    /// A runtime with in-memory kv and the process environment as the source
    /// of `env` grants.
    pub fn new(engine: Engine) -> Runtime {
        Runtime::with_parts(
            engine,
            Arc::new(MemoryKv::default()),
            std::env::vars().collect(),
        )
    }

    /// A runtime with an explicit kv store and host environment.
    pub fn with_parts(
        engine: Engine,
        kv: Arc<dyn KvStore>,
        host_env: BTreeMap<String, String>,
    ) -> Runtime {
        let runtime = Runtime {
            inner: Arc::new(Inner {
                engine,
                kv,
                egress: Default::default(),
                host_env,
                plugins: RwLock::new(HashMap::new()),
                protected: RwLock::new(Vec::new()),
            }),
        };
        if let Some(cache) = runtime.inner.engine.config().cache_dir.clone() {
            runtime.protect(&cache, "compile cache");
        }
        runtime
    }

    /// Refuse `manifest` if its `files` grants reach a protected directory
    /// (see [`Runtime::protect`]).
    pub fn check_protected(&self, manifest: &Manifest) -> Result<()> {
        let protected = evos_core::sync::read(&self.inner.protected);
        capability::files::check_protected(&manifest.capabilities.files, &protected).map_err(
            |message| Error::Manifest {
                path: manifest.origin.clone(),
                message,
            },
        )
    }

    /// Refuse, from now on, every manifest whose `files` grants reach `dir`
    /// (the directory itself, a parent of it, or anything inside it).
    /// Directories that do not exist yet are protected by the path they
    /// will have.
    pub fn protect(&self, dir: &Path, what: &'static str) {
        let canonical = dir.canonicalize().unwrap_or_else(|_| {
            // Not created yet: protect the absolute path it will have.
            std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
        });
        let mut list = evos_core::sync::write(&self.inner.protected);
        if !list.iter().any(|(p, _)| *p == canonical) {
            list.push((canonical, what));
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Load a manifest and component from files.
    pub fn load_files(
        &self,
        manifest: impl AsRef<Path>,
        component: impl AsRef<Path>,
    ) -> Result<Arc<Plugin>> {
        let manifest = Manifest::load(manifest)?;
        let path = component.as_ref();
        self.load(
            manifest,
            &self.inner.engine.read_component(path)?,
            &path.display().to_string(),
        )
    }

    /// Compile, check, link and pre-instantiate a plugin. Nothing is
    /// registered; see [`Runtime::register`].
    /// The storage behind the `kv` capability of the calls this runtime makes.
    pub fn kv(&self) -> &Arc<dyn KvStore> {
        &self.inner.kv
    }

    pub fn load(&self, manifest: Manifest, bytes: &[u8], what: &str) -> Result<Arc<Plugin>> {
        let engine = &self.inner.engine;
        engine.check_size(bytes, what)?;
        let max = engine.config().max_memory_per_instance;
        if manifest.limits.memory.0 > max {
            return Err(Error::Manifest {
                path: manifest.origin.clone(),
                message: format!(
                    "limits.memory is {} bytes but this host allows at most {max} bytes per instance",
                    manifest.limits.memory.0
                ),
            });
        }
        self.check_protected(&manifest)?;
        let inspection = inspect::inspect(bytes, what)?;
        let report = inspect::check(&manifest, &inspection);
        if !report.under_granted.is_empty() {
            return Err(Error::NotGranted {
                plugin: manifest.name().to_string(),
                problems: report
                    .under_granted
                    .iter()
                    .map(|f| f.message.clone())
                    .collect(),
            });
        }
        if !report.exports_kind {
            return Err(Error::WrongKind {
                plugin: manifest.name().to_string(),
                kind: manifest.kind().to_string(),
                export: manifest.kind().export_interface().to_string(),
            });
        }
        let compiled = engine.compile(bytes, what)?;
        let linker = capability::linker_for(engine.wasmtime(), &manifest)?;
        let pre = linker
            .instantiate_pre(&compiled.component)
            .map_err(|e| Error::NotGranted {
                plugin: manifest.name().to_string(),
                problems: vec![format!("{e:#}")],
            })?;
        let wrong_kind = |_| Error::WrongKind {
            plugin: manifest.name().to_string(),
            kind: manifest.kind().to_string(),
            export: manifest.kind().export_interface().to_string(),
        };
        let export = match manifest.kind() {
            Kind::Connector => {
                Export::Connector(connector_api::GuestIndices::new(&pre).map_err(wrong_kind)?)
            }
            Kind::ModelAdapter => Export::ModelAdapter(
                model_adapter_api::GuestIndices::new(&pre).map_err(wrong_kind)?,
            ),
            Kind::Policy => {
                Export::Policy(policy_api::GuestIndices::new(&pre).map_err(wrong_kind)?)
            }
            Kind::Agent => Export::Agent(agent_api::GuestIndices::new(&pre).map_err(wrong_kind)?),
        };
        let grants = Arc::new(Grants::new(&manifest, &self.inner.host_env));
        let concurrency = Arc::new(Semaphore::new(manifest.limits.max_concurrency.0 as usize));
        Ok(Arc::new(Plugin {
            name: Arc::from(manifest.name()),
            version: Arc::from(manifest.plugin.version.to_string()),
            manifest,
            digest: Arc::from(compiled.digest),
            cache_hit: compiled.cache_hit,
            grants,
            pre,
            export,
            concurrency,
        }))
    }

    /// Make `plugin` reachable by name (e.g. for agents' `models` calls),
    /// replacing any plugin of the same name. Returns the replaced one.
    pub fn register(&self, plugin: Arc<Plugin>) -> Option<Arc<Plugin>> {
        let mut map = evos_core::sync::write(&self.inner.plugins);
        map.insert(plugin.name().to_string(), plugin)
    }

    /// The registered plugin called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Plugin>> {
        let map = evos_core::sync::read(&self.inner.plugins);
        map.get(name).cloned()
    }

    /// The plugin a call by name goes to: through `router` when the call
    /// has one (the registry's routes: versions, canary weights, outcome
    /// windows), else the registered plugin.
    pub fn resolve(&self, name: &str, router: Option<&Arc<dyn Router>>) -> Option<Routed> {
        match router {
            Some(router) => router.resolve(name),
            None => self.get(name).map(|plugin| Routed {
                plugin,
                on_done: Box::new(|_| {}),
                mirror: None,
            }),
        }
    }

    /// Instantiate `plugin` once without calling it: proves it links and
    /// starts within its limits before it can receive traffic.
    pub async fn smoke(&self, plugin: &Arc<Plugin>) -> Result<()> {
        let limits = &plugin.manifest.limits;
        let mut store = self.new_store(plugin, 0, None, false)?;
        let instantiate = plugin.pre.instantiate_async(&mut store);
        match tokio::time::timeout(limits.timeout.0, instantiate).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(Error::Refused(format!(
                "plugin `{}` failed to instantiate: {}",
                plugin.name(),
                classify_trap(&e, store.data().limiter.refused.as_deref()).summary()
            ))),
            Err(_) => Err(Error::Refused(format!(
                "plugin `{}` did not instantiate within its timeout",
                plugin.name()
            ))),
        }
    }

    /// Names of the registered plugins, sorted.
    pub fn plugin_names(&self) -> Vec<String> {
        let map = evos_core::sync::read(&self.inner.plugins);
        let mut names: Vec<String> = map.keys().cloned().collect();
        names.sort();
        names
    }

    /// Call `plugin` once. Errors only when `input` does not fit the plugin's
    /// kind; everything that happens inside the call is in the report.
    pub async fn call(&self, plugin: &Arc<Plugin>, input: CallInput) -> Result<CallReport> {
        fits(plugin, &input)?;
        Ok(self.call_nested(plugin, input, 0, None, false).await)
    }

    /// [`Runtime::call`], with the calls the plugin makes by name (an
    /// agent's `models`) resolved by `router` rather than among the
    /// registered plugins. The runtime keeps no pointer to whoever routes:
    /// each call carries its router.
    pub async fn call_routed(
        &self,
        plugin: &Arc<Plugin>,
        input: CallInput,
        router: Arc<dyn Router>,
    ) -> Result<CallReport> {
        fits(plugin, &input)?;
        Ok(self
            .call_nested(plugin, input, 0, Some(router), false)
            .await)
    }

    /// Call `plugin` as a shadow: with the same input and grants as a live
    /// call, but without effects. Its kv writes go to an overlay dropped
    /// when the call ends (reads see live data), the outgoing requests and
    /// connections its grants allow are not made and are reported in
    /// [`CallReport::suppressed`], granted directories are read-only, and
    /// its model calls run as shadow calls of the versions `router` (or
    /// the runtime) resolves, outside their stats.
    pub async fn call_shadow(
        &self,
        plugin: &Arc<Plugin>,
        input: CallInput,
        router: Option<Arc<dyn Router>>,
    ) -> Result<CallReport> {
        fits(plugin, &input)?;
        Ok(self.call_nested(plugin, input, 0, router, true).await)
    }

    pub(crate) async fn call_nested(
        &self,
        plugin: &Arc<Plugin>,
        input: CallInput,
        depth: u32,
        router: Option<Arc<dyn Router>>,
        shadow: bool,
    ) -> CallReport {
        // The semaphore is never closed, so acquiring only waits.
        let _permit = plugin.concurrency.acquire().await.ok();
        let start = Instant::now();
        let limits = &plugin.manifest.limits;

        let mut store = match self.new_store(plugin, depth, router, shadow) {
            Ok(store) => store,
            Err(e) => {
                return self.report(
                    plugin,
                    Outcome::Trap {
                        message: format!("preparing the call failed: {e}"),
                    },
                    start,
                );
            }
        };

        // The epoch deadline interrupts wasm; this outer bound also covers
        // time spent in host calls (a slow HTTP peer, a nested model call).
        let grace = (limits.timeout.0 / 10).max(Duration::from_millis(50));
        let result = {
            let call = invoke(&plugin.pre, &plugin.export, &mut store, &input);
            tokio::time::timeout(limits.timeout.0 + grace, call).await
        };
        let duration = start.elapsed();
        let fuel_consumed = match store.get_fuel() {
            Ok(left) => limits.fuel.0.saturating_sub(left),
            Err(_) => 0, // fuel metering is off
        };
        let state = store.into_data();

        let mut refusals = state.refusals;
        refusals.extend(state.caps.http.hooks.refusals.take());
        refusals.extend(state.wasi.socket_refusals.take());
        let suppressed = state.suppressed.map(|s| s.take()).unwrap_or_default();
        let mut logs = state.caps.log.lines;
        let pipes = state
            .wasi
            .output
            .iter()
            .flat_map(|(out, err)| [(out, "stdout"), (err, "stderr")]);
        let mut stderr_tail = Vec::new();
        for (pipe, level) in pipes {
            let (bytes, dropped) = pipe.take();
            let text = String::from_utf8_lossy(&bytes);
            for line in text.lines() {
                logs.push(LogLine {
                    level,
                    message: capability::log::sanitize(line, 4096),
                });
            }
            if level == "stderr" {
                stderr_tail = last_lines(&text);
            }
            if dropped > 0 {
                refusals.push(Refusal {
                    capability: "log".into(),
                    detail: format!(
                        "{dropped} bytes of {level} beyond {STDIO_CAPACITY} bytes dropped"
                    ),
                    count: 1,
                });
            }
        }

        let mut backtrace = Vec::new();
        let (mut outcome, output) = match result {
            Err(_elapsed) => (Outcome::Timeout, None),
            Ok(Err(err)) => {
                backtrace = guest_backtrace(&err);
                let mut outcome = classify_trap(&err, state.limiter.refused.as_deref());
                // An interpreter prints its exception (a Python traceback,
                // a JavaScript error) to stderr, then traps: the trap says
                // why only with those lines.
                if let Outcome::Trap { message } = &mut outcome
                    && !stderr_tail.is_empty()
                {
                    message.push_str("; the guest's last stderr lines: ");
                    message.push_str(&stderr_tail.join(" | "));
                }
                (outcome, None)
            }
            Ok(Ok(Err(guest))) => (Outcome::GuestError { error: guest }, None),
            Ok(Ok(Ok(out))) => (Outcome::Ok, Some(out)),
        };
        if matches!(outcome, Outcome::Ok | Outcome::GuestError { .. }) {
            if let Some(first) = refusals.first() {
                outcome = Outcome::Denied {
                    capability: first.capability.clone(),
                    reason: first.detail.clone(),
                };
            } else if let Some(why) = &state.limiter.refused {
                outcome = Outcome::Denied {
                    capability: "memory".into(),
                    reason: why.clone(),
                };
            }
        }

        CallReport {
            plugin: plugin.name.clone(),
            version: plugin.version.clone(),
            digest: plugin.digest.clone(),
            kind: plugin.kind(),
            outcome,
            output,
            fuel_consumed,
            duration_us: duration.as_micros() as u64,
            started_us: evos_core::call::unix_micros().saturating_sub(duration.as_micros() as u64),
            backtrace,
            refusals,
            logs,
            log_lines_suppressed: state.caps.log.suppressed,
            nested: state.caps.models.nested,
            suppressed,
            input: Some(input),
        }
    }

    /// A fresh store for one call of `plugin`: WASI refined by its grants,
    /// each capability's per-call state, fuel, memory limiter and epoch
    /// deadline.
    fn new_store(
        &self,
        plugin: &Plugin,
        depth: u32,
        router: Option<Arc<dyn Router>>,
        shadow: bool,
    ) -> Result<Store<PluginState>> {
        let grants = &plugin.grants;
        let limits = &plugin.manifest.limits;
        let engine = &self.inner.engine;
        let suppressed = shadow.then(crate::capability::SharedRefusals::default);
        let state = PluginState {
            wasi: LazyWasi::new(grants.clone(), STDIO_CAPACITY, suppressed.clone()),
            table: ResourceTable::new(),
            limiter: Limiter::new(limits.memory.0 as usize),
            refusals: Vec::new(),
            caps: CapabilityStates::new(&CallContext {
                grants,
                kv: &self.inner.kv,
                egress: &self.inner.egress,
                runtime: self,
                router,
                depth,
                shadow: suppressed.as_ref(),
            }),
            suppressed,
        };
        let mut store = Store::new(engine.wasmtime(), state);
        store.limiter(|s| &mut s.limiter);
        // Host-side state a guest can make the host allocate, capped per
        // call: resources in the WASI/HTTP table, component-model handles,
        // and the bytes one host call may carry from guest to host.
        store.data_mut().table.set_max_capacity(MAX_TABLE_ENTRIES);
        store.set_max_component_handles(MAX_COMPONENT_HANDLES);
        store.set_hostcall_fuel(hostcall_bytes(grants));
        if engine.config().fuel {
            store
                .set_fuel(limits.fuel.0)
                .map_err(|e| Error::wasmtime("setting fuel", e))?;
            // Long-running guests yield to the executor regularly, so a busy
            // plugin cannot starve other tasks (other calls, the accept loop)
            // that share its worker thread.
            store
                .fuel_async_yield_interval(Some(FUEL_YIELD_INTERVAL))
                .map_err(|e| Error::wasmtime("setting the fuel yield interval", e))?;
        }
        if engine.config().epoch {
            store.set_epoch_deadline(engine.ticks_for(limits.timeout.0));
            store.epoch_deadline_trap();
        }
        Ok(store)
    }

    fn report(&self, plugin: &Plugin, outcome: Outcome, start: Instant) -> CallReport {
        let duration_us = start.elapsed().as_micros() as u64;
        CallReport {
            plugin: plugin.name.clone(),
            version: plugin.version.clone(),
            digest: plugin.digest.clone(),
            kind: plugin.kind(),
            outcome,
            output: None,
            fuel_consumed: 0,
            duration_us,
            started_us: evos_core::call::unix_micros().saturating_sub(duration_us),
            backtrace: Vec::new(),
            refusals: Vec::new(),
            logs: Vec::new(),
            log_lines_suppressed: 0,
            nested: Vec::new(),
            suppressed: Vec::new(),
            input: None,
        }
    }
}

type GuestResult = std::result::Result<CallOutput, GuestError>;

/// Instantiate and call the kind's export.
async fn invoke(
    pre: &InstancePre<PluginState>,
    export: &Export,
    store: &mut Store<PluginState>,
    input: &CallInput,
) -> wasmtime::Result<GuestResult> {
    let instance: Instance = pre.instantiate_async(&mut *store).await?;
    let out = match (export, input) {
        (Export::Agent(idx), CallInput::Handle(event)) => {
            let guest = idx.load(&mut *store, &instance)?;
            guest
                .call_handle(&mut *store, wit::EventParam::from(event))
                .await?
                .map(|actions| CallOutput::Actions(actions.into_iter().map(Action::from).collect()))
                .map_err(GuestError::from)
        }
        (Export::Connector(idx), CallInput::Ingest { body, content_type }) => {
            let guest = idx.load(&mut *store, &instance)?;
            guest
                .call_ingest(&mut *store, body, content_type)
                .await?
                .map(|events| CallOutput::Events(events.into_iter().map(Event::from).collect()))
                .map_err(GuestError::from)
        }
        (Export::Connector(idx), CallInput::Execute(action)) => {
            let guest = idx.load(&mut *store, &instance)?;
            guest
                .call_execute(&mut *store, wit::ActionParam::from(action))
                .await?
                .map(CallOutput::Receipt)
                .map_err(GuestError::from)
        }
        (Export::ModelAdapter(idx), CallInput::Infer(request)) => {
            let guest = idx.load(&mut *store, &instance)?;
            let (input, parameters) = crate::convert::request_texts(request);
            guest
                .call_infer(
                    &mut *store,
                    wit::ModelRequestParam {
                        input: &input,
                        parameters: &parameters,
                    },
                )
                .await?
                .map(|r| CallOutput::Model(ModelResponse::from(r)))
                .map_err(GuestError::from)
        }
        (Export::Policy(idx), CallInput::Evaluate { action, event }) => {
            let guest = idx.load(&mut *store, &instance)?;
            let decision = guest
                .call_evaluate(
                    &mut *store,
                    wit::ActionParam::from(action),
                    wit::EventParam::from(event),
                )
                .await?;
            Ok(CallOutput::Decision(Decision::from(decision)))
        }
        _ => wasmtime::bail!("the call input does not match the plugin's kind"),
    };
    Ok(out)
}

/// Map a wasmtime error from a call to the typed outcome.
fn classify_trap(err: &wasmtime::Error, memory_refused: Option<&str>) -> Outcome {
    if let Some(trap) = err.downcast_ref::<Trap>() {
        return match trap {
            Trap::OutOfFuel => Outcome::OutOfFuel,
            Trap::Interrupt => Outcome::Timeout,
            Trap::StackOverflow => Outcome::StackOverflow,
            _ if memory_refused.is_some() => Outcome::OutOfMemory {
                detail: memory_refused.unwrap_or_default().to_string(),
            },
            other => Outcome::Trap {
                message: other.to_string(),
            },
        };
    }
    if let Some(why) = memory_refused {
        return Outcome::OutOfMemory {
            detail: why.to_string(),
        };
    }
    if let Some(exit) = err.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return Outcome::Trap {
            message: format!("the guest called exit({})", exit.0),
        };
    }
    Outcome::Trap {
        message: format!("{err:#}"),
    }
}

/// Lines of stderr a trap's message carries, and the characters of each.
const TRAP_STDERR_LINES: usize = 6;
const TRAP_STDERR_LINE_CHARS: usize = 300;

/// The last non-empty lines of a guest's stderr, each sanitized and cut.
fn last_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text
        .lines()
        .rev()
        .map(str::trim_end)
        // Rust's panic hook (an interpreter's runtime is Rust) suggests an
        // environment variable the plugin cannot set.
        .filter(|l| !l.trim().is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
        .take(TRAP_STDERR_LINES)
        .map(|l| capability::log::sanitize(l.trim(), TRAP_STDERR_LINE_CHARS))
        .collect();
    lines.reverse();
    lines
}

/// The guest frames of a trap, demangled.
fn guest_backtrace(err: &wasmtime::Error) -> Vec<String> {
    let Some(bt) = err.downcast_ref::<wasmtime::WasmBacktrace>() else {
        return Vec::new();
    };
    bt.frames()
        .iter()
        .take(64)
        .map(|f| match f.func_name() {
            Some(name) => format!("{:#}", rustc_demangle::demangle(name)),
            None => format!("<wasm function {}>", f.func_index()),
        })
        .collect()
}
