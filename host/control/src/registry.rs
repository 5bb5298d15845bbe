//! Deployed plugin versions: stable, canary, hot swap and rollback.
//!
//! Each plugin name has a stable version and optionally a canary that gets a
//! share of the calls (by weight, or sticky by a routing key). What serves a
//! name is one immutable [`Route`] behind an `ArcSwap`: a change builds and
//! fully links the new versions first, commits the change (with its audit
//! entry) in one transaction, and only then swaps the route — atomically.
//! A call holds the `Arc` of the version it started on, so calls in flight
//! finish on that version while new calls see the new route.
//!
//! Every call's outcome and latency land in its version's rolling window;
//! a canary that breaks its rollout policy is rolled back automatically and
//! the audit entry carries the evidence.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use arc_swap::ArcSwap;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::json;

use crate::audit::NewEntry;
use crate::compare::Answer;
use crate::drift::{Drift, DriftStatus, Transition};
use crate::engine::{Engine, EngineConfig};
use crate::manifest::Manifest;
use crate::rollout::{Breach, OutcomeCounts, Window, judge};
use crate::runtime::{CallInput, CallReport, Plugin, Routed, Router, Runtime};
use crate::shadow::Shadow;
use crate::store::{
    Change, Deploy, DeploymentRow, NewVersion, Seen, Serving, Slot, SqliteStore, StateStore,
    crashpoint,
};
use crate::{Error, Result};

/// Who the host itself acts as in audit entries.
pub const HOST_ACTOR: &str = "evos";

/// One live version of a plugin.
pub struct Live {
    pub version_id: i64,
    pub plugin: Arc<Plugin>,
    window: Mutex<Window>,
    /// The same version's windows on the other nodes sharing the store,
    /// as last read ([`Live::share_window`]).
    peers: Mutex<crate::rollout::WindowCounts>,
    totals: Mutex<Totals>,
    dirty: AtomicBool,
    calls_since_judged: AtomicU64,
    /// The manifest's `[drift]` watch, when it has one.
    drift: Option<Mutex<Drift>>,
}

struct Totals {
    outcomes: OutcomeCounts,
    latency: Histogram<u64>,
    fuel: u64,
    usage: crate::types::Usage,
}

/// How recent another node's published window must be to count: a node
/// publishes every second, so one that stopped drops out after a few.
const PEERS_FRESH: std::time::Duration = std::time::Duration::from_secs(5);

/// Latencies are recorded in microseconds up to 10 minutes.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable_histogram()))
}

/// `Histogram::new(3)` cannot fail (3 significant figures is valid); this
/// keeps the fallback total without a panic path.
fn unreachable_histogram() -> Histogram<u64> {
    let mut sigfig = 2;
    loop {
        if let Ok(h) = Histogram::new(sigfig) {
            return h;
        }
        sigfig = sigfig.saturating_sub(1);
    }
}

impl Live {
    fn new(version_id: i64, plugin: Arc<Plugin>, store: &dyn StateStore) -> Result<Live> {
        let (outcomes, hist) = store.stats(version_id)?;
        let mut latency = new_histogram();
        if let Some(bytes) = hist
            && let Ok(pairs) = serde_json::from_slice::<Vec<(u64, u64)>>(&bytes)
        {
            for (value, count) in pairs {
                let _ = latency.record_n(value.max(1), count);
            }
        }
        let drift = plugin.manifest().drift.clone().map(|config| {
            let (reference, judged) = store.drift(version_id).unwrap_or((None, None));
            let reference = reference
                .and_then(|text| serde_json::from_str::<crate::drift::Reference>(&text).ok());
            let mut drift = Drift::new(config, reference);
            if let Some(judged) = judged.and_then(|t| serde_json::from_str(&t).ok()) {
                drift.restore(judged);
            }
            Mutex::new(drift)
        });
        Ok(Live {
            drift,
            version_id,
            plugin,
            window: Mutex::new(Window::default()),
            peers: Mutex::default(),
            totals: Mutex::new(Totals {
                outcomes,
                latency,
                fuel: 0,
                usage: Default::default(),
            }),
            dirty: AtomicBool::new(false),
            calls_since_judged: AtomicU64::new(0),
        })
    }

    pub(crate) fn record(&self, report: &CallReport) {
        if let Ok(mut w) = self.window.lock() {
            w.record(&report.outcome, report.duration_us);
        }
        if let Ok(mut t) = self.totals.lock() {
            *t.outcomes
                .entry(report.outcome.name().to_string())
                .or_default() += 1;
            let _ = t.latency.record(report.duration_us.max(1));
            t.fuel = t.fuel.saturating_add(report.fuel_consumed);
            if let Some(crate::runtime::CallOutput::Model(resp)) = &report.output {
                t.usage.input_units = t.usage.input_units.saturating_add(resp.usage.input_units);
                t.usage.output_units = t.usage.output_units.saturating_add(resp.usage.output_units);
            }
        }
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// The rollout window's statistics over `window`: this process's
    /// calls and those the other nodes published.
    fn window_stats(&self, window: std::time::Duration) -> Option<crate::rollout::WindowStats> {
        let peers = self.peers.lock().ok()?.clone();
        Some(self.window.lock().ok()?.stats_with(window, &peers))
    }

    /// Publish this process's rollout window of the version and read the
    /// other nodes' (every second while serving; a no-op for a store no
    /// other node shares).
    fn share_window(&self, store: &dyn StateStore, window: std::time::Duration) -> Result<()> {
        let mine = match self.window.lock() {
            Ok(mut w) => w.counts(window),
            Err(_) => return Ok(()),
        };
        store.put_window(self.version_id, &mine)?;
        let peers = store.peer_windows(self.version_id, PEERS_FRESH)?;
        if let Ok(mut p) = self.peers.lock() {
            *p = peers;
        }
        Ok(())
    }

    /// Calls this version answered (persisted across restarts).
    pub fn calls(&self) -> u64 {
        self.totals.lock().map_or(0, |t| t.latency.len())
    }

    /// This version's calls, outcomes and latency; `weight` is its share
    /// of calls in percent.
    pub fn status(&self, weight: u8) -> VersionStatus {
        let (outcomes, calls, p50, p95, p99, fuel, usage, buckets) = match self.totals.lock() {
            Ok(t) => (
                t.outcomes.clone(),
                t.latency.len(),
                t.latency.value_at_quantile(0.50),
                t.latency.value_at_quantile(0.95),
                t.latency.value_at_quantile(0.99),
                t.fuel,
                t.usage,
                LATENCY_BUCKETS_US
                    .iter()
                    .map(|le| (*le, t.latency.count_between(0, *le)))
                    .collect(),
            ),
            Err(_) => (
                OutcomeCounts::default(),
                0,
                0,
                0,
                0,
                0,
                Default::default(),
                Vec::new(),
            ),
        };
        VersionStatus {
            drift: self
                .drift
                .as_ref()
                .map(|d| evos_core::sync::lock(d).status()),
            cost: self.plugin.manifest().cost,
            fuel_consumed: fuel,
            usage,
            latency_buckets: buckets,
            humans: None,
            version_id: self.version_id,
            version: self.plugin.version().to_string(),
            digest: self.plugin.digest().to_string(),
            weight,
            calls,
            outcomes,
            p50_us: p50,
            p95_us: p95,
            p99_us: p99,
        }
    }

    fn flush(&self, store: &dyn StateStore) -> Result<()> {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        if let Some(drift) = &self.drift {
            let (judged, filling) = {
                let d = evos_core::sync::lock(drift);
                let r = d.reference();
                // A reference still filling is kept as far as it got, so
                // short-lived processes (`evos call`) fill it together.
                let filling = (r.calls > 0 && r.calls < d.config().reference)
                    .then(|| serde_json::to_string(r).unwrap_or_default());
                (d.judged(), filling)
            };
            if let Some(text) = filling {
                store.put_drift_reference(self.version_id, &text, None)?;
            }
            if !judged.fields.is_empty() {
                store.put_drift_judged(
                    self.version_id,
                    &serde_json::to_string(&judged).unwrap_or_default(),
                )?;
            }
        }
        let (outcomes, pairs) = match self.totals.lock() {
            Ok(t) => (
                t.outcomes.clone(),
                t.latency
                    .iter_recorded()
                    .map(|v| (v.value_iterated_to(), v.count_at_value()))
                    .collect::<Vec<_>>(),
            ),
            Err(_) => return Ok(()),
        };
        let bytes = serde_json::to_vec(&pairs).unwrap_or_default();
        store.put_stats(self.version_id, &outcomes, &bytes)
    }
}

/// What serves one plugin name.
pub struct Route {
    pub stable: Arc<Live>,
    /// The canary and its share of calls in percent (1-100).
    pub canary: Option<(Arc<Live>, u8)>,
    /// The shadow and the percent of live calls mirrored to it (1-100).
    pub shadow: Option<(Arc<Shadow>, u8)>,
    /// Where the candidate (the canary, else the shadow) is in its
    /// manifest's `[[rollout.steps]]`, when it is rolled out that way.
    pub rollout: Option<Progress>,
}

/// A candidate's place in its progressive rollout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// The step, 0-based.
    pub step: u32,
    /// When it entered the step.
    pub since: std::time::SystemTime,
    /// The candidate's count when it entered the step (compared answers
    /// in a shadow step, calls in a canary step): the step counts from
    /// here.
    pub base: u64,
}

/// Every version's agreement with human labels.
type HumanAgreements =
    std::collections::BTreeMap<crate::labels::VersionKey, crate::labels::HumanAgreement>;

/// A judgement of a progressive rollout's current step.
struct ProgressJudgement {
    candidate: Arc<Live>,
    shadow: Option<Arc<Shadow>>,
    policy: crate::rollout::RolloutPolicy,
    progress: Progress,
    verdict: crate::progressive::StepVerdict,
    gates: Vec<crate::progressive::Gate>,
}

/// A progressive rollout as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutStatus {
    /// The candidate version.
    pub version: String,
    /// The step, 1-based, of `steps`.
    pub step: u32,
    pub steps: usize,
    /// `shadow 100%` or `canary 10%`.
    pub slot: String,
    pub since: String,
    pub verdict: crate::progressive::StepVerdict,
    /// Every gate's value and threshold.
    pub gates: Vec<crate::progressive::Gate>,
    /// What happens next.
    pub next: String,
}

/// A version as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct VersionStatus {
    /// Drift of its watched fields (a `[drift]` table).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftStatus>,
    pub version_id: i64,
    pub version: String,
    pub digest: String,
    /// Share of calls in percent.
    pub weight: u8,
    pub calls: u64,
    pub outcomes: OutcomeCounts,
    pub p50_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
    /// Fuel burned by the calls counted since this host loaded the version.
    pub fuel_consumed: u64,
    /// Model usage reported by the calls (model adapters).
    pub usage: crate::types::Usage,
    /// Prices from the version's manifest, if any.
    pub cost: Option<crate::manifest::Cost>,
    /// Cumulative call counts at `LATENCY_BUCKETS_US` bounds (microseconds).
    #[serde(skip)]
    pub latency_buckets: Vec<(u64, u64)>,
    /// How this version's decisions agree with human labels, once any of
    /// its decisions was labelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub humans: Option<crate::labels::HumanAgreement>,
}

/// Histogram bucket bounds for metrics, in microseconds.
pub const LATENCY_BUCKETS_US: &[u64] = &[
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

#[derive(Debug, Clone, Serialize)]
pub struct PluginStatus {
    pub plugin: String,
    pub kind: String,
    pub stable: VersionStatus,
    pub canary: Option<VersionStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowStatus>,
    /// The candidate's progressive rollout, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
}

/// A shadow as `status` shows it: its own calls (`weight` is its share
/// of mirrored live calls) and how its answers compared.
#[derive(Debug, Clone, Serialize)]
pub struct ShadowStatus {
    #[serde(flatten)]
    pub version: VersionStatus,
    /// Comparisons with each live version that answered the same inputs;
    /// the current stable version's first.
    pub agreement: Vec<crate::shadow::PairStatus>,
    /// The latest answers that disagreed with the live ones.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub disagreements: Vec<crate::shadow::Disagreement>,
}

/// The result of a control-plane change.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeReport {
    pub plugin: String,
    pub action: String,
    pub version: String,
    pub digest: String,
    pub stable: String,
    pub canary: Option<(String, u8)>,
    /// The shadow and the percent of live calls mirrored to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<(String, u8)>,
}

/// The deployed plugins of one data directory.
pub struct Registry {
    store: Arc<dyn StateStore>,
    runtime: Runtime,
    routes: RwLock<HashMap<String, Arc<ArcSwap<Route>>>>,
    /// Serializes control-plane changes (deploy, promote, rollback).
    control: tokio::sync::Mutex<()>,
    rng: AtomicU64,
    /// This registry, for callbacks that outlive a borrow of it.
    me: std::sync::Weak<Registry>,
    /// Versions loaded and linked, by version id: a rollback to a version
    /// seen before swaps routes without loading anything.
    loaded: std::sync::Mutex<HashMap<i64, Arc<Live>>>,
}

/// Versions kept loaded beyond those in use.
const LOADED_MAX: usize = 32;

/// Run blocking work (loading a component, a durable commit) without
/// stalling the calls that share this async worker: on a multi-threaded
/// runtime the worker hands its other tasks to another thread first.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

impl Registry {
    /// Open a data directory and bring every deployed version back, linked
    /// and ready, exactly as last committed.
    pub fn open(
        data_dir: impl AsRef<std::path::Path>,
        config: EngineConfig,
        host_env: std::collections::BTreeMap<String, String>,
    ) -> Result<Arc<Registry>> {
        Registry::with_store(Arc::new(SqliteStore::open(data_dir)?), config, host_env)
    }

    /// [`Registry::open`] over any [`StateStore`].
    pub fn with_store(
        store: Arc<dyn StateStore>,
        config: EngineConfig,
        host_env: std::collections::BTreeMap<String, String>,
    ) -> Result<Arc<Registry>> {
        let engine = Engine::new(config)?;
        let runtime = Runtime::with_parts(engine, store.clone().kv(), host_env);
        runtime.protect(store.dir(), "data directory");
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15)
            | 1;
        let registry = Arc::new_cyclic(|me| Registry {
            store,
            runtime,
            routes: RwLock::new(HashMap::new()),
            control: tokio::sync::Mutex::new(()),
            rng: AtomicU64::new(seed),
            me: me.clone(),
            loaded: Default::default(),
        });
        for d in registry.store.deployments()? {
            let route = registry.build_route(&d, None)?;
            registry.install(&d.plugin, route);
        }
        Ok(registry)
    }

    /// The route a deployment row describes, reusing the versions (and
    /// the shadow, with its comparisons) `current` already has.
    fn build_route(&self, d: &DeploymentRow, current: Option<&Route>) -> Result<Route> {
        let live = |id: i64| -> Result<Arc<Live>> {
            let reused = current.and_then(|r| {
                std::iter::once(&r.stable)
                    .chain(r.canary.as_ref().map(|(c, _)| c))
                    .chain(r.shadow.as_ref().map(|(s, _)| &s.live))
                    .find(|l| l.version_id == id)
                    .cloned()
            });
            match reused {
                Some(l) => Ok(l),
                None => self.load_version(id),
            }
        };
        let stable = live(d.stable_id)?;
        let canary = match d.canary_id {
            Some(id) => Some((live(id)?, d.canary_weight)),
            None => None,
        };
        let shadow = match d.shadow_id {
            Some(id) => {
                let kept = current
                    .and_then(|r| r.shadow.as_ref())
                    .filter(|(s, _)| s.live.version_id == id)
                    .map(|(s, _)| s.clone());
                let shadow = match kept {
                    Some(s) => s,
                    None => Arc::new(Shadow::new(live(id)?, &*self.store, d.stable_id)),
                };
                Some((shadow, d.shadow_share))
            }
            None => None,
        };
        // A step's start as recorded; a route already in that step keeps
        // its own clock.
        let rollout = d.rollout_step.map(|step| Progress {
            step,
            // Counted again from here after a restart.
            base: current
                .and_then(|r| r.rollout)
                .filter(|p| p.step == step)
                .map(|p| p.base)
                .unwrap_or_else(|| match (&shadow, d.canary_id) {
                    (Some((s, _)), None) => s.agreement(stable.version_id).compared,
                    _ => canary.as_ref().map_or(0, |(c, _)| c.calls()),
                }),
            since: current
                .and_then(|r| r.rollout)
                .filter(|p| p.step == step)
                .map(|p| p.since)
                .or_else(|| {
                    d.step_since
                        .as_deref()
                        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
                })
                .unwrap_or_else(std::time::SystemTime::now),
        });
        Ok(Route {
            stable,
            canary,
            shadow,
            rollout,
        })
    }

    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// A stored version of `plugin` (the newest stored under `version`),
    /// loaded and linked but not routed: a candidate for replay.
    pub fn stored_version(&self, plugin: &str, version: &str) -> Result<Arc<Plugin>> {
        let rows = self.store.versions_of(plugin)?;
        let Some(row) = rows
            .iter()
            .filter(|r| r.version == version)
            .max_by_key(|r| r.id)
        else {
            let known: Vec<&str> = rows.iter().map(|r| r.version.as_str()).collect();
            return Err(Error::NotFound(if known.is_empty() {
                format!(
                    "no versions of `{plugin}` are stored; deploy one, or give a manifest and component"
                )
            } else {
                format!(
                    "`{plugin}` has no stored version {version} (stored: {}); deploy it, or give a manifest and component",
                    known.join(", ")
                )
            }));
        };
        Ok(self.load_version(row.id)?.plugin.clone())
    }

    fn load_version(&self, id: i64) -> Result<Arc<Live>> {
        let loaded = || evos_core::sync::lock(&self.loaded);
        if let Some(live) = loaded().get(&id) {
            return Ok(live.clone());
        }
        let live = blocking(|| self.load_version_uncached(id))?;
        let mut cache = loaded();
        cache.insert(id, live.clone());
        if cache.len() > LOADED_MAX {
            // Keep what is in use (routed or mid-call); drop the rest.
            cache.retain(|_, l| Arc::strong_count(l) > 1);
        }
        Ok(live)
    }

    fn load_version_uncached(&self, id: i64) -> Result<Arc<Live>> {
        let row = self.store.version(id)?;
        let bytes = self.store.get_blob(&row.digest)?;
        let manifest = Manifest::parse(
            &row.manifest,
            &row.manifest_origin,
            std::path::Path::new(&row.manifest_base),
        )?;
        let plugin =
            self.runtime
                .load(manifest, &bytes, &format!("{}@{}", row.plugin, row.version))?;
        Ok(Arc::new(Live::new(id, plugin, &*self.store)?))
    }

    fn routes(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<ArcSwap<Route>>>> {
        evos_core::sync::read(&self.routes)
    }

    /// The current route of `name`.
    pub fn route(&self, name: &str) -> Option<Arc<Route>> {
        self.routes().get(name).map(|r| r.load_full())
    }

    /// Swap in a new route for `name` (atomic for callers).
    fn install(&self, name: &str, route: Route) {
        // The plugin map of the runtime follows the stable version, so
        // lookups without routing still find the plugin.
        self.runtime.register(route.stable.plugin.clone());
        let existing = self.routes().get(name).cloned();
        match existing {
            Some(slot) => {
                let old = slot.swap(Arc::new(route));
                let _ = old.stable.flush(&*self.store);
                if let Some((c, _)) = &old.canary {
                    let _ = c.flush(&*self.store);
                }
                if let Some((s, _)) = &old.shadow {
                    let _ = s.live.flush(&*self.store);
                    let _ = s.flush(&*self.store);
                }
            }
            None => {
                let mut map = evos_core::sync::write(&self.routes);
                map.insert(name.to_string(), Arc::new(ArcSwap::from_pointee(route)));
            }
        }
    }

    fn next_random(&self) -> u64 {
        // xorshift64*: traffic splitting needs spread, not secrecy.
        let mut x = self.rng.load(Ordering::Relaxed);
        loop {
            let mut y = x;
            y ^= y >> 12;
            y ^= y << 25;
            y ^= y >> 27;
            match self
                .rng
                .compare_exchange_weak(x, y, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return y.wrapping_mul(0x2545_f491_4f6c_dd1d),
                Err(current) => x = current,
            }
        }
    }

    /// Pick the version for one call. With a routing key the choice is
    /// sticky: the same key always lands on the same version for a weight.
    fn pick(&self, route: &Route, key: Option<&str>) -> (Arc<Live>, bool) {
        if let Some((canary, weight)) = &route.canary {
            let bucket = match key {
                Some(k) => fnv1a(k.as_bytes()) % 100,
                None => self.next_random() % 100,
            };
            if bucket < u64::from(*weight) {
                return (canary.clone(), true);
            }
        }
        (route.stable.clone(), false)
    }

    /// Call the plugin `name` through its route.
    pub async fn call(
        &self,
        name: &str,
        input: CallInput,
        key: Option<&str>,
    ) -> Result<CallReport> {
        let route = self
            .route(name)
            .ok_or_else(|| Error::UnknownPlugin(name.to_string()))?;
        let (live, is_canary) = self.pick(&route, key);
        let mirror = self.mirror_to(&route).map(|shadow| (shadow, input.clone()));
        let report = match self.me.upgrade() {
            Some(me) => {
                self.runtime
                    .call_routed(&live.plugin, input, me as Arc<dyn Router>)
                    .await?
            }
            None => self.runtime.call(&live.plugin, input).await?,
        };
        self.after_call(name, &live, is_canary, &report).await;
        if let Some((shadow, input)) = mirror {
            shadow.offer(&self.me, live.version_id, input, Answer::from(&report));
        }
        Ok(report)
    }

    /// The shadow this call is mirrored to, if the route has one and the
    /// call falls in its share.
    fn mirror_to(&self, route: &Route) -> Option<Arc<Shadow>> {
        let (shadow, share) = route.shadow.as_ref()?;
        (self.next_random() % 100 < u64::from(*share)).then(|| shadow.clone())
    }

    async fn after_call(&self, name: &str, live: &Arc<Live>, is_canary: bool, report: &CallReport) {
        if let Some(breach) = self.record_call(name, live, is_canary, report)
            && let Err(e) = self.auto_rollback(name, live.version_id, &breach).await
        {
            tracing::error!(target: "evos::registry", plugin = name, "automatic rollback failed: {e}");
        }
        if is_canary
            && live
                .calls_since_judged
                .load(Ordering::Relaxed)
                .is_multiple_of(10)
        {
            self.check_rollout_later(name);
        }
    }

    /// Judge `name`'s progressive rollout off the caller's path (it takes
    /// the control lock).
    pub(crate) fn check_rollout_later(&self, name: &str) {
        let has_rollout = self.route(name).is_some_and(|r| r.rollout.is_some());
        let (Some(me), true) = (self.me.upgrade(), has_rollout) else {
            return;
        };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let name = name.to_string();
        handle.spawn(async move {
            if let Err(e) = me.check_rollout(&name).await {
                tracing::error!(target: "evos::registry", plugin = name, "judging the rollout failed: {e}");
            }
        });
    }

    /// Judge every canary's window now, other nodes' calls included, and
    /// roll back those that break their policy. A serving host does this
    /// every second after reading the other nodes' windows, so a canary
    /// whose calls are spread over several nodes is judged on all of them.
    /// Nodes judging at once race to commit the rollback: the first wins,
    /// the others' change is refused as decided on a deployment that has
    /// since changed, and they pick the rollback up.
    pub async fn judge_canaries(&self) {
        let canaries: Vec<(String, Arc<Live>)> = self
            .routes()
            .iter()
            .filter_map(|(n, r)| {
                r.load()
                    .canary
                    .as_ref()
                    .map(|(c, _)| (n.clone(), c.clone()))
            })
            .collect();
        for (name, canary) in canaries {
            let Some(breach) = self.judge(&name, &canary) else {
                continue;
            };
            match self.auto_rollback(&name, canary.version_id, &breach).await {
                Ok(()) => {}
                Err(Error::Refused(why)) => {
                    tracing::info!(target: "evos::registry", plugin = name, "the canary is no longer this host's to roll back: {why}");
                }
                Err(e) => {
                    tracing::error!(target: "evos::registry", plugin = name, "automatic rollback failed: {e}");
                }
            }
        }
    }

    /// Judge every progressive rollout now (steps that wait for time to
    /// pass advance here).
    pub async fn tick_rollouts(&self) {
        let names: Vec<String> = self
            .routes()
            .iter()
            .filter(|(_, r)| r.load().rollout.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        for name in names {
            if let Err(e) = self.check_rollout(&name).await {
                tracing::error!(target: "evos::registry", plugin = name, "judging the rollout failed: {e}");
            }
        }
    }

    /// The candidate of a route's progressive rollout, whether it is the
    /// shadow, its step and the step's judgement. `humans`: every version's
    /// agreement with labels when the caller has read it already.
    fn judge_progress(
        &self,
        name: &str,
        route: &Route,
        humans: Option<&HumanAgreements>,
    ) -> Option<ProgressJudgement> {
        let progress = route.rollout?;
        let (candidate, shadow) = match (&route.canary, &route.shadow) {
            (Some((c, _)), _) => (c.clone(), None),
            (None, Some((s, _))) => (s.live.clone(), Some(s.clone())),
            (None, None) => return None,
        };
        let policy = candidate.plugin.manifest().rollout.clone();
        let step = policy.steps.get(progress.step as usize)?.clone();
        let candidate_stats = candidate.window_stats(policy.window)?;
        let stable_stats = route.stable.window_stats(policy.window)?;
        let agreement = shadow
            .as_ref()
            .map(|s| s.agreement(route.stable.version_id));
        let key = crate::labels::VersionKey {
            plugin: name.to_string(),
            version: candidate.plugin.version().to_string(),
            digest: candidate.plugin.digest().to_string(),
        };
        let humans = match (policy.min_agreement_with_humans, humans) {
            (None, _) => None,
            (Some(_), Some(known)) => known.get(&key).cloned(),
            (Some(_), None) => self.human_agreements().get(&key).cloned(),
        };
        let in_step = progress.since.elapsed().unwrap_or_default();
        let count = match &agreement {
            Some(a) if step.shadow.is_some() => a.compared,
            _ => candidate.calls(),
        };
        let step_calls = count.saturating_sub(progress.base);
        let (verdict, gates) = crate::progressive::judge_step(&crate::progressive::Evidence {
            policy: &policy,
            step: &step,
            candidate: &candidate_stats,
            stable: &stable_stats,
            agreement: agreement.as_ref(),
            humans: humans.as_ref(),
            in_step,
            step_calls,
        });
        Some(ProgressJudgement {
            candidate,
            shadow,
            policy,
            progress,
            verdict,
            gates,
        })
    }

    /// Every version's agreement with human labels (empty, and logged,
    /// when the labels cannot be read).
    fn human_agreements(&self) -> HumanAgreements {
        crate::labels::by_version(&*self.store, None).unwrap_or_else(|e| {
            tracing::warn!(target: "evos::registry", "reading labels: {e}");
            Default::default()
        })
    }

    /// Judge `name`'s progressive rollout and act: advance to the next
    /// step, promote after the last (`auto-promote`), or roll back when a
    /// gate failed. Returns the action taken.
    pub async fn check_rollout(&self, name: &str) -> Result<Option<String>> {
        use crate::progressive::StepVerdict;
        let _guard = self.control.lock().await;
        let Some(route) = self.route(name) else {
            return Ok(None);
        };
        let Some(j) = self.judge_progress(name, &route, None) else {
            return Ok(None);
        };
        let step_no = j.progress.step as usize;
        let removed = |why: &str| {
            json!({
                "removed": {"version": j.candidate.plugin.version(), "digest": j.candidate.plugin.digest(), "version_id": j.candidate.version_id},
                "stable": {"version": route.stable.plugin.version(), "digest": route.stable.plugin.digest()},
                "reason": why,
                "step": step_no + 1,
                "steps": j.policy.steps.len(),
                "slot": j.policy.steps.get(step_no).map(|s| s.describe()),
                "gates": j.gates,
            })
        };
        let (action, detail, next) = match &j.verdict {
            StepVerdict::Wait => return Ok(None),
            StepVerdict::Fail { summary, .. } => (
                "auto-rollback",
                removed(summary),
                Route {
                    stable: route.stable.clone(),
                    canary: if j.shadow.is_some() {
                        route.canary.clone()
                    } else {
                        None
                    },
                    shadow: if j.shadow.is_some() {
                        None
                    } else {
                        route.shadow.clone()
                    },
                    rollout: None,
                },
            ),
            StepVerdict::Pass => match j.policy.steps.get(step_no + 1) {
                Some(next_step) => {
                    let next = Route {
                        stable: route.stable.clone(),
                        canary: next_step.weight.map(|w| (j.candidate.clone(), w)),
                        shadow: next_step.shadow.map(|share| {
                            let kept = j.shadow.clone().unwrap_or_else(|| {
                                Arc::new(Shadow::new(
                                    j.candidate.clone(),
                                    &*self.store,
                                    route.stable.version_id,
                                ))
                            });
                            (kept, share)
                        }),
                        rollout: Some(Progress {
                            step: j.progress.step + 1,
                            since: std::time::SystemTime::now(),
                            base: match &j.shadow {
                                Some(s) if next_step.shadow.is_some() => {
                                    s.agreement(route.stable.version_id).compared
                                }
                                _ => j.candidate.calls(),
                            },
                        }),
                    };
                    let detail = json!({
                        "version": j.candidate.plugin.version(),
                        "passed": {"step": step_no + 1, "slot": j.policy.steps.get(step_no).map(|s| s.describe()), "gates": j.gates},
                        "next": {"step": step_no + 2, "slot": next_step.describe()},
                        "steps": j.policy.steps.len(),
                    });
                    ("rollout-step", detail, next)
                }
                None if j.policy.auto_promote => {
                    let next = Route {
                        stable: j.candidate.clone(),
                        canary: None,
                        shadow: if j.shadow.is_some() {
                            None
                        } else {
                            route.shadow.clone()
                        },
                        rollout: None,
                    };
                    let detail = json!({
                        "promoted": {"version": j.candidate.plugin.version(), "digest": j.candidate.plugin.digest(), "from": "rollout"},
                        "replaced": {"version": route.stable.plugin.version(), "digest": route.stable.plugin.digest()},
                        "passed": {"step": step_no + 1, "gates": j.gates},
                    });
                    ("promote", detail, next)
                }
                None => return Ok(None),
            },
        };
        self.switch(
            &Change {
                plugin: name,
                serving: serving(&next),
                action,
                actor: HOST_ACTOR,
                version_id: Some(j.candidate.version_id),
                detail: &detail,
                digest: j.candidate.plugin.digest(),
                seen: seen(&route),
            },
            next,
        )?;
        tracing::info!(target: "evos::registry", plugin = name, "rollout: {action} ({})", match &j.verdict {
            StepVerdict::Fail { summary, .. } => summary.clone(),
            _ => format!("step {} of {} passed", step_no + 1, j.policy.steps.len()),
        });
        Ok(Some(action.to_string()))
    }

    /// Where a plugin's progressive rollout stands, for `status`.
    fn rollout_status(
        &self,
        name: &str,
        route: &Route,
        humans: &HumanAgreements,
    ) -> Option<RolloutStatus> {
        let j = self.judge_progress(name, route, Some(humans))?;
        let step = j.policy.steps.get(j.progress.step as usize)?;
        let last = j.progress.step as usize + 1 == j.policy.steps.len();
        let waiting = last
            && !j.policy.auto_promote
            && matches!(j.verdict, crate::progressive::StepVerdict::Pass);
        Some(RolloutStatus {
            version: j.candidate.plugin.version().to_string(),
            step: j.progress.step + 1,
            steps: j.policy.steps.len(),
            slot: step.describe(),
            since: humantime::format_rfc3339_seconds(j.progress.since).to_string(),
            verdict: j.verdict,
            gates: j.gates,
            next: if waiting {
                "every gate holds: waiting for `evos promote`".into()
            } else if last {
                if j.policy.auto_promote {
                    "promoted when every gate holds"
                } else {
                    "waits for `evos promote` when every gate holds"
                }
                .into()
            } else {
                j.policy
                    .steps
                    .get(j.progress.step as usize + 1)
                    .map(|s| format!("{} when every gate holds", s.describe()))
                    .unwrap_or_default()
            },
        })
    }

    /// Account one call to its version; returns a breach when the call was
    /// a canary's and its window now breaks the rollout policy.
    fn record_call(
        &self,
        name: &str,
        live: &Arc<Live>,
        is_canary: bool,
        report: &CallReport,
    ) -> Option<Breach> {
        live.record(report);
        self.observe_drift(name, live, !is_canary, report);
        for r in report
            .refusals
            .iter()
            .filter(|r| r.capability == "kv" && r.detail.starts_with("quota"))
        {
            let _ = self.store.audit(NewEntry {
                actor: name,
                action: "kv-quota-refused",
                subject: name,
                digest: Some(live.plugin.digest()),
                detail: json!({"version": live.plugin.version(), "detail": r.detail, "count": r.count}),
            });
        }
        if !is_canary {
            return None;
        }
        // Judging sorts the window; every tenth canary call is plenty.
        let n = live.calls_since_judged.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_multiple_of(10) {
            self.judge(name, live)
        } else {
            None
        }
    }

    /// Take a model call into its version's drift watch; persist a
    /// reference that just filled, audit drift starting or clearing.
    fn observe_drift(&self, name: &str, live: &Arc<Live>, stable: bool, report: &CallReport) {
        let Some(drift) = &live.drift else {
            return;
        };
        let (Some(CallInput::Infer(request)), Some(crate::runtime::CallOutput::Model(answer))) =
            (&report.input, &report.output)
        else {
            return;
        };
        let (transition, reference) = {
            let mut d = evos_core::sync::lock(drift);
            let t = d.observe(&request.input, &answer.output, stable);
            let reference = matches!(t, Some(Transition::ReferenceComplete))
                .then(|| serde_json::to_string(d.reference()).unwrap_or_default());
            (t, reference)
        };
        let version = live.plugin.version();
        let (action, fields) = match transition {
            None => return,
            Some(Transition::ReferenceComplete) => {
                if let Some(text) = reference
                    && let Err(e) =
                        blocking(|| self.store.put_drift_reference(live.version_id, &text, None))
                {
                    tracing::warn!(target: "evos::registry", plugin = name, version, "could not keep the drift reference: {e}");
                }
                return;
            }
            Some(Transition::Started(over)) => ("drift", over),
            Some(Transition::Cleared(fields)) => ("drift-cleared", fields),
        };
        let config = live.plugin.manifest().drift.clone();
        tracing::warn!(target: "evos::registry", plugin = name, version, action, "{}", fields.iter().map(|f| format!("{} PSI {:.3}", f.field, f.psi)).collect::<Vec<_>>().join(", "));
        let entry = NewEntry {
            actor: HOST_ACTOR,
            action,
            subject: name,
            digest: Some(live.plugin.digest()),
            detail: json!({
                "version": version,
                "fields": fields,
                "threshold": config.as_ref().map(|c| c.threshold),
                "review_share": config.as_ref().map(|c| c.review_share),
            }),
        };
        if let Err(e) = blocking(|| self.store.audit(entry)) {
            tracing::error!(target: "evos::registry", plugin = name, "could not audit {action}: {e}");
        }
    }

    /// The route's live version (stable or canary) of `name` at `version`.
    fn live_version(&self, name: &str, version: &str) -> Option<Arc<Live>> {
        let route = self.route(name)?;
        std::iter::once(&route.stable)
            .chain(route.canary.as_ref().map(|(c, _)| c))
            .find(|l| l.plugin.version() == version)
            .cloned()
    }

    /// Make the current window of `name`'s stable version its drift
    /// reference, audited as `drift-pin` by `actor`.
    pub fn pin_drift(&self, name: &str, actor: &str) -> Result<DriftStatus> {
        let route = self
            .route(name)
            .ok_or_else(|| Error::UnknownPlugin(name.to_string()))?;
        let live = &route.stable;
        let Some(drift) = &live.drift else {
            return Err(Error::Refused(format!(
                "`{name}` {} watches no drift: add a [drift] table to its manifest",
                live.plugin.version()
            )));
        };
        let (text, status) = {
            let mut d = evos_core::sync::lock(drift);
            d.pin().map_err(Error::Refused)?;
            (
                serde_json::to_string(d.reference()).unwrap_or_default(),
                d.status(),
            )
        };
        self.store.put_drift_reference(
            live.version_id,
            &text,
            Some(NewEntry {
                actor,
                action: "drift-pin",
                subject: name,
                digest: Some(live.plugin.digest()),
                detail: json!({"version": live.plugin.version(), "reference_calls": status.reference_calls}),
            }),
        )?;
        Ok(status)
    }

    fn judge(&self, name: &str, canary: &Arc<Live>) -> Option<Breach> {
        let route = self.route(name)?;
        let policy = &canary.plugin.manifest().rollout;
        let canary_stats = canary.window_stats(policy.window)?;
        let stable_stats = route.stable.window_stats(policy.window)?;
        judge(policy, &canary_stats, &stable_stats)
    }

    /// Remove a misbehaving canary (if it is still the canary).
    async fn auto_rollback(&self, name: &str, canary_id: i64, breach: &Breach) -> Result<()> {
        let _guard = self.control.lock().await;
        let Some(route) = self.route(name) else {
            return Ok(());
        };
        let Some((canary, _)) = &route.canary else {
            return Ok(());
        };
        if canary.version_id != canary_id {
            return Ok(());
        }
        let detail = json!({
            "removed": {"version": canary.plugin.version(), "digest": canary.plugin.digest(), "version_id": canary_id},
            "stable": {"version": route.stable.plugin.version(), "digest": route.stable.plugin.digest()},
            "reason": breach.summary(),
            "evidence": breach,
            "policy": canary.plugin.manifest().rollout,
        });
        let next = Route {
            stable: route.stable.clone(),
            canary: None,
            shadow: route.shadow.clone(),
            rollout: None,
        };
        self.switch(
            &Change {
                plugin: name,
                serving: serving(&next),
                action: "auto-rollback",
                actor: HOST_ACTOR,
                version_id: Some(canary_id),
                detail: &detail,
                digest: canary.plugin.digest(),
                seen: seen(&route),
            },
            next,
        )?;
        tracing::warn!(target: "evos::registry", plugin = name, "canary rolled back: {}", breach.summary());
        Ok(())
    }

    /// Commit `change` with its audit entry, then swap in `route`. The
    /// crash point between the two lets tests kill the process after the
    /// commit and before the in-memory switch.
    fn switch(&self, change: &Change<'_>, route: Route) -> Result<ChangeReport> {
        blocking(|| self.store.record_change(change))?;
        crashpoint(&format!("{}:before-swap", change.action));
        let report = change_report(
            change.plugin,
            change.action,
            &route,
            route.stable.version_id,
        );
        // Swapping flushes the replaced version's stats (a durable write).
        blocking(|| self.install(change.plugin, route));
        Ok(report)
    }

    fn refuse(&self, actor: &str, manifest: &Manifest, bytes: &[u8], why: &Error) {
        let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes));
        let _ = self.store.audit(NewEntry {
            actor,
            action: "deploy-refused",
            subject: manifest.name(),
            digest: Some(&digest),
            detail: json!({"version": manifest.plugin.version.to_string(), "manifest": manifest.origin, "reason": why.to_string()}),
        });
    }

    /// Deploy a version: as the new stable, or with `canary = Some(percent)`
    /// as a canary next to the current stable. Everything is validated
    /// (manifest, imports against grants, link, one instantiation) before
    /// anything changes; a refusal changes nothing but the audit log.
    pub async fn deploy(
        &self,
        manifest: Manifest,
        bytes: &[u8],
        what: &str,
        canary: Option<u8>,
        actor: &str,
    ) -> Result<ChangeReport> {
        let slot = canary.map_or(Slot::Stable, Slot::Canary);
        self.deploy_to(manifest, bytes, what, slot, actor).await
    }

    /// [`Registry::deploy`] to any slot: the stable version, a canary, or
    /// a shadow mirroring a share of the live calls. A version whose
    /// manifest declares `[[rollout.steps]]`, deployed as stable next to a
    /// stable version, starts its progressive rollout at the first step.
    pub async fn deploy_to(
        &self,
        manifest: Manifest,
        bytes: &[u8],
        what: &str,
        slot: Slot,
        actor: &str,
    ) -> Result<ChangeReport> {
        let _guard = self.control.lock().await;
        // What runs is exactly what is stored: the manifest as its source
        // text says, whatever was changed on the value in memory.
        let manifest = Manifest::parse(&manifest.source, &manifest.origin, &manifest.base)?;
        let name = manifest.name().to_string();
        let first_step = match (slot, manifest.rollout.steps.first(), self.route(&name)) {
            (Slot::Stable, Some(step), Some(_)) => Some(step.clone()),
            _ => None,
        };
        let slot = match &first_step {
            Some(step) => match (step.shadow, step.weight) {
                (Some(share), _) => Slot::Shadow(share),
                (None, Some(w)) => Slot::Canary(w),
                (None, None) => slot,
            },
            None => slot,
        };
        let result = self.validate(&manifest, bytes, what, slot).await;
        let (plugin, current) = match result {
            Ok(ok) => ok,
            Err(e) => {
                self.refuse(actor, &manifest, bytes, &e);
                return Err(e);
            }
        };
        crashpoint("deploy:before-blob");
        let digest = self.store.put_blob(bytes)?;
        crashpoint("deploy:after-blob");
        let (action, weight, share) = match slot {
            Slot::Stable => ("deploy", None, None),
            Slot::Canary(w) => ("canary", Some(w), None),
            Slot::Shadow(s) => ("shadow", None, Some(s)),
        };
        let action = if first_step.is_some() {
            "rollout"
        } else {
            action
        };
        let version = manifest.plugin.version.to_string();
        let base = manifest.base.display().to_string();
        let mut detail = json!({
            "version": version,
            "weight": weight,
            "manifest": manifest.origin,
            "grants": grants_summary(&manifest),
            "replaces": current.as_ref().map(|c| c.stable.plugin.version()),
        });
        if let (Some(share), Some(fields)) = (share, detail.as_object_mut()) {
            fields.insert("shadow-share".into(), share.into());
        }
        if let (true, Some(fields)) = (first_step.is_some(), detail.as_object_mut()) {
            fields.insert(
                "steps".into(),
                json!(
                    manifest
                        .rollout
                        .steps
                        .iter()
                        .map(|s| s.describe())
                        .collect::<Vec<_>>()
                ),
            );
        }
        let version_id = self.store.record_deploy(
            &NewVersion {
                plugin: &name,
                version: &version,
                digest: &digest,
                manifest: &manifest.source,
                manifest_origin: &manifest.origin,
                manifest_base: &base,
            },
            &Deploy {
                action,
                actor,
                slot,
                detail: &detail,
                seen: current.as_deref().and_then(seen),
                step: first_step.as_ref().map(|_| 0),
            },
        )?;
        crashpoint("deploy:before-swap");
        let rollout = first_step.as_ref().map(|_| Progress {
            step: 0,
            since: std::time::SystemTime::now(),
            base: 0,
        });
        let live = Arc::new(Live::new(version_id, plugin, &*self.store)?);
        let route = match (slot, current) {
            (Slot::Canary(w), Some(cur)) => Route {
                stable: cur.stable.clone(),
                canary: Some((live, w)),
                shadow: cur.shadow.clone(),
                rollout,
            },
            (Slot::Shadow(share), Some(cur)) => Route {
                stable: cur.stable.clone(),
                canary: cur.canary.clone(),
                shadow: Some((
                    Arc::new(Shadow::new(live, &*self.store, cur.stable.version_id)),
                    share,
                )),
                rollout,
            },
            _ => Route {
                stable: live,
                canary: None,
                shadow: None,
                rollout: None,
            },
        };
        let report = change_report(&name, action, &route, version_id);
        self.install(&name, route);
        Ok(report)
    }

    async fn validate(
        &self,
        manifest: &Manifest,
        bytes: &[u8],
        what: &str,
        slot: Slot,
    ) -> Result<(Arc<Plugin>, Option<Arc<Route>>)> {
        let current = self.route(manifest.name());
        // A canary or a shadow: a percentage, next to a stable version.
        let joins = match slot {
            Slot::Stable => None,
            Slot::Canary(w) => Some((
                "--canary",
                w,
                "the canary weight",
                "canary against",
                "--canary",
            )),
            Slot::Shadow(s) => Some((
                "--share",
                s,
                "the shadow's share of live calls",
                "shadow",
                "--shadow",
            )),
        };
        if let Some((flag, percent, what, verb, option)) = joins {
            if !(1..=100).contains(&percent) {
                return Err(Error::Refused(format!(
                    "{flag} {percent}: {what} is a percentage from 1 to 100"
                )));
            }
            if current.is_none() {
                return Err(Error::Refused(format!(
                    "`{}` has no stable version to {verb}; deploy it without {option} first",
                    manifest.name()
                )));
            }
        }
        if matches!(slot, Slot::Shadow(_)) && manifest.kind() == crate::manifest::Kind::Connector {
            return Err(Error::Refused(format!(
                "`{}` is a connector: connectors carry actions out, so they are rolled out with --canary; shadow agents, model adapters and policies",
                manifest.name()
            )));
        }
        if let Some(cur) = &current {
            let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes));
            let same = |live: &Live| {
                live.plugin.digest() == digest && live.plugin.manifest().source == manifest.source
            };
            if same(&cur.stable)
                || cur.canary.as_ref().is_some_and(|(c, _)| same(c))
                || cur.shadow.as_ref().is_some_and(|(s, _)| same(&s.live))
            {
                return Err(Error::Refused(format!(
                    "this exact version of `{}` ({} with the same manifest) is already deployed",
                    manifest.name(),
                    manifest.plugin.version
                )));
            }
        }
        if let Some(cur) = &current
            && cur.stable.plugin.kind() != manifest.kind()
        {
            return Err(Error::Refused(format!(
                "`{}` is deployed as a {}; a {} cannot replace it",
                manifest.name(),
                cur.stable.plugin.kind(),
                manifest.kind()
            )));
        }
        let plugin = blocking(|| self.runtime.load(manifest.clone(), bytes, what))?;
        self.runtime.smoke(&plugin).await?;
        Ok((plugin, current))
    }

    /// Make the canary the stable version; without a canary, the shadow
    /// (which then stops being mirrored to).
    pub async fn promote(&self, name: &str, actor: &str) -> Result<ChangeReport> {
        let _guard = self.control.lock().await;
        let route = self
            .route(name)
            .ok_or_else(|| Error::UnknownPlugin(name.to_string()))?;
        let (canary, next) = match (&route.canary, &route.shadow) {
            (Some((canary, _)), _) => (
                canary.clone(),
                Route {
                    stable: canary.clone(),
                    canary: None,
                    shadow: route.shadow.clone(),
                    rollout: None,
                },
            ),
            (None, Some((shadow, _))) => (
                shadow.live.clone(),
                Route {
                    stable: shadow.live.clone(),
                    canary: None,
                    shadow: None,
                    rollout: None,
                },
            ),
            (None, None) => {
                return Err(Error::Refused(format!(
                    "`{name}` has no canary or shadow to promote"
                )));
            }
        };
        let detail = json!({
            "promoted": {
                "version": canary.plugin.version(),
                "digest": canary.plugin.digest(),
                "from": if route.canary.is_some() { "canary" } else { "shadow" },
                "weight": route.canary.as_ref().map(|(_, w)| *w),
                "agreement": route.shadow.as_ref().filter(|(s, _)| s.live.version_id == canary.version_id)
                    .map(|(s, _)| s.agreement(route.stable.version_id)),
            },
            "replaced": {"version": route.stable.plugin.version(), "digest": route.stable.plugin.digest()},
        });
        self.switch(
            &Change {
                plugin: name,
                serving: serving(&next),
                action: "promote",
                actor,
                version_id: Some(canary.version_id),
                detail: &detail,
                digest: canary.plugin.digest(),
                seen: seen(&route),
            },
            next,
        )
    }

    /// Roll back: drop the canary if there is one; otherwise restore the
    /// previous stable version (or `to`, a version or digest prefix of this
    /// plugin) with exactly its stored component and grants.
    pub async fn rollback(
        &self,
        name: &str,
        to: Option<&str>,
        actor: &str,
    ) -> Result<ChangeReport> {
        self.rollback_with(name, to, false, actor).await
    }

    /// [`Registry::rollback`]; a version the host rolled back automatically
    /// is reinstated only with `force`, and the refusal says why it was
    /// rolled back.
    pub async fn rollback_with(
        &self,
        name: &str,
        to: Option<&str>,
        force: bool,
        actor: &str,
    ) -> Result<ChangeReport> {
        let _guard = self.control.lock().await;
        let route = self
            .route(name)
            .ok_or_else(|| Error::UnknownPlugin(name.to_string()))?;
        if let (None, Some((canary, _))) = (to, &route.canary) {
            let detail = json!({
                "removed": {"version": canary.plugin.version(), "digest": canary.plugin.digest()},
                "stable": {"version": route.stable.plugin.version(), "digest": route.stable.plugin.digest()},
            });
            let next = Route {
                stable: route.stable.clone(),
                canary: None,
                shadow: route.shadow.clone(),
                rollout: None,
            };
            return self.switch(
                &Change {
                    plugin: name,
                    serving: serving(&next),
                    action: "rollback",
                    actor,
                    version_id: Some(canary.version_id),
                    detail: &detail,
                    digest: canary.plugin.digest(),
                    seen: seen(&route),
                },
                next,
            );
        }
        if let (None, Some((shadow, share))) = (to, &route.shadow) {
            let detail = json!({
                "removed": {"version": shadow.live.plugin.version(), "digest": shadow.live.plugin.digest(), "shadow": true, "share": share},
                "stable": {"version": route.stable.plugin.version(), "digest": route.stable.plugin.digest()},
                "agreement": shadow.agreement(route.stable.version_id),
            });
            let next = Route {
                stable: route.stable.clone(),
                canary: None,
                shadow: None,
                rollout: None,
            };
            return self.switch(
                &Change {
                    plugin: name,
                    serving: serving(&next),
                    action: "rollback",
                    actor,
                    version_id: Some(shadow.live.version_id),
                    detail: &detail,
                    digest: shadow.live.plugin.digest(),
                    seen: seen(&route),
                },
                next,
            );
        }

        let target_id = self.rollback_target(name, to, route.stable.version_id)?;
        if !force
            && let Some(auto) = self
                .store
                .history(name)?
                .into_iter()
                .rev()
                .find(|h| h.action == "auto-rollback" && h.version_id == Some(target_id))
        {
            let version = self
                .store
                .version(target_id)
                .map(|v| v.version)
                .unwrap_or_else(|_| target_id.to_string());
            let reason = auto
                .detail
                .get("reason")
                .and_then(|r| r.as_str())
                .unwrap_or("its rollout policy was breached");
            return Err(Error::Refused(format!(
                "`{name}` {version} was rolled back automatically at {}: {reason}; reinstating it needs --force (API: \"force\": true)",
                auto.at
            )));
        }
        let target = self.load_version(target_id)?;
        self.runtime.smoke(&target.plugin).await?;
        let detail = json!({
            "from": {"version": route.stable.plugin.version(), "digest": route.stable.plugin.digest()},
            "to": {"version": target.plugin.version(), "digest": target.plugin.digest(), "version_id": target_id},
            "grants": grants_summary(target.plugin.manifest()),
            "forced": force,
        });
        let next = Route {
            stable: target.clone(),
            canary: None,
            shadow: route.shadow.clone(),
            rollout: None,
        };
        self.switch(
            &Change {
                plugin: name,
                serving: serving(&next),
                action: "rollback",
                actor,
                version_id: Some(target_id),
                detail: &detail,
                digest: target.plugin.digest(),
                seen: seen(&route),
            },
            next,
        )
    }

    fn rollback_target(&self, name: &str, to: Option<&str>, current: i64) -> Result<i64> {
        match to {
            Some(wanted) => {
                let versions = self.store.versions_of(name)?;
                let found = versions.iter().find(|v| {
                    v.version == wanted || (wanted.len() >= 8 && v.digest.starts_with(wanted))
                });
                found.map(|v| v.id).ok_or_else(|| {
                    let known: Vec<String> = versions
                        .iter()
                        .map(|v| format!("{} ({})", v.version, &v.digest[..12.min(v.digest.len())]))
                        .collect();
                    Error::NotFound(format!(
                        "`{name}` has no version or digest `{wanted}`; known: {}",
                        known.join(", ")
                    ))
                })
            }
            None => {
                // The stable version before the current one, from history.
                let history = self.store.history(name)?;
                history
                    .iter()
                    .rev()
                    .filter_map(|h| h.stable_id)
                    .find(|id| *id != current)
                    .ok_or_else(|| {
                        Error::Refused(format!("`{name}` has no earlier version to roll back to"))
                    })
            }
        }
    }

    /// Bring every route in line with the deployments in the store: the
    /// way changes committed by another process (a CLI `deploy`,
    /// `promote` or `rollback` on this data directory, another node) go
    /// live here. Versions already loaded are reused; new ones are loaded
    /// and linked before their route is swapped in. Returns the plugins
    /// whose route changed.
    pub async fn sync(&self) -> Result<Vec<String>> {
        let _guard = self.control.lock().await;
        let mut changed = Vec::new();
        for d in self.store.deployments()? {
            let current = self.route(&d.plugin);
            if current.as_deref().and_then(seen) == Some(d.serving()) {
                continue;
            }
            let route = self.build_route(&d, current.as_deref())?;
            blocking(|| self.install(&d.plugin, route));
            changed.push(d.plugin);
        }
        Ok(changed)
    }

    /// Status of one plugin or all.
    pub fn status(&self, name: Option<&str>) -> Result<Vec<PluginStatus>> {
        let mut names: Vec<String> = match name {
            Some(n) => {
                if self.route(n).is_none() {
                    return Err(Error::UnknownPlugin(n.to_string()));
                }
                vec![n.to_string()]
            }
            None => self.routes().keys().cloned().collect(),
        };
        names.sort();
        let humans = self.human_agreements();
        let with_humans = |mut v: VersionStatus, plugin: &str| {
            let key = crate::labels::VersionKey {
                plugin: plugin.to_string(),
                version: v.version.clone(),
                digest: v.digest.clone(),
            };
            v.humans = humans.get(&key).cloned();
            v
        };
        let mut out = Vec::new();
        for n in names {
            if let Some(route) = self.route(&n) {
                let canary_weight = route.canary.as_ref().map_or(0, |(_, w)| *w);
                out.push(PluginStatus {
                    rollout: self.rollout_status(&n, &route, &humans),
                    plugin: n.clone(),
                    kind: route.stable.plugin.kind().to_string(),
                    stable: with_humans(route.stable.status(100 - canary_weight), &n),
                    canary: route
                        .canary
                        .as_ref()
                        .map(|(c, w)| with_humans(c.status(*w), &n)),
                    shadow: route.shadow.as_ref().map(|(s, share)| {
                        let mut agreement = s.pairs();
                        agreement.sort_by_key(|p| p.live_version_id != route.stable.version_id);
                        for pair in &mut agreement {
                            pair.live_version = std::iter::once(&route.stable)
                                .chain(route.canary.as_ref().map(|(c, _)| c))
                                .find(|l| l.version_id == pair.live_version_id)
                                .map(|l| l.plugin.version().to_string())
                                .or_else(|| {
                                    self.store
                                        .version(pair.live_version_id)
                                        .ok()
                                        .map(|v| v.version)
                                })
                                .unwrap_or_else(|| pair.live_version_id.to_string());
                        }
                        ShadowStatus {
                            version: s.live.status(*share),
                            agreement,
                            disagreements: s.disagreements(),
                        }
                    }),
                });
            }
        }
        Ok(out)
    }

    /// Wait until every mirrored call queued so far has run on its shadow,
    /// at most `limit`; whether they all did. A short-lived process (a CLI
    /// `call`) waits here so its shadows see its traffic.
    pub async fn drain_shadows(&self, limit: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let pending: u64 = self
                .routes()
                .values()
                .filter_map(|r| r.load().shadow.as_ref().map(|(s, _)| s.pending()))
                .sum();
            if pending == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Persist every live version's outcome counts and latency histogram.
    pub fn flush_stats(&self) -> Result<()> {
        let routes: Vec<Arc<Route>> = self.routes().values().map(|r| r.load_full()).collect();
        for route in routes {
            route.stable.flush(&*self.store)?;
            if let Some((c, _)) = &route.canary {
                c.flush(&*self.store)?;
            }
            // A candidate and the stable version it is judged against
            // share their windows with the other nodes.
            let candidate = route
                .canary
                .as_ref()
                .map(|(c, _)| c.clone())
                .or_else(|| route.shadow.as_ref().map(|(s, _)| s.live.clone()));
            if let Some(candidate) = candidate {
                let window = candidate.plugin.manifest().rollout.window;
                candidate.share_window(&*self.store, window)?;
                route.stable.share_window(&*self.store, window)?;
            }
            if let Some((s, _)) = &route.shadow {
                s.live.flush(&*self.store)?;
                s.flush(&*self.store)?;
            }
        }
        Ok(())
    }
}

impl crate::runtime::Caller for Registry {
    fn kind_of(&self, name: &str) -> Option<crate::manifest::Kind> {
        self.route(name).map(|r| r.stable.plugin.kind())
    }

    fn drift_review(&self, plugin: &str, version: &str, event_id: &str) -> Option<String> {
        let live = self.live_version(plugin, version)?;
        let d = evos_core::sync::lock(live.drift.as_ref()?);
        let share = d.config().review_share;
        if !d.drifting() || share <= 0.0 {
            return None;
        }
        // By event id, so a redelivered event is picked alike.
        if (fnv1a(event_id.as_bytes()) % 1_000_000) as f64 >= share * 1_000_000.0 {
            return None;
        }
        let over: Vec<String> = d
            .status()
            .fields
            .iter()
            .filter(|f| f.psi > d.config().threshold)
            .map(|f| format!("{} PSI {:.2}", f.field, f.psi))
            .collect();
        Some(format!(
            "`{plugin}` {version} drifts ({}; threshold {}): {:.0}% of its decisions go to review while it lasts",
            over.join(", "),
            d.config().threshold,
            share * 100.0
        ))
    }

    fn call<'a>(
        &'a self,
        name: &'a str,
        input: CallInput,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<CallReport>> + Send + 'a>> {
        Box::pin(Registry::call(self, name, input, None))
    }
}

impl Router for Registry {
    fn resolve(&self, name: &str) -> Option<Routed> {
        let route = self.route(name)?;
        let (live, is_canary) = self.pick(&route, None);
        let plugin = live.plugin.clone();
        let mirror = self.mirror_to(&route).map(|shadow| {
            let (registry, live_id) = (self.me.clone(), live.version_id);
            Box::new(move |input: CallInput, report: &CallReport| {
                shadow.offer(&registry, live_id, input, Answer::from(report));
            }) as crate::runtime::Mirror
        });
        let name = name.to_string();
        let weak = self.me.clone();
        Some(Routed {
            plugin,
            mirror,
            on_done: Box::new(move |report: &CallReport| {
                let Some(registry) = weak.upgrade() else {
                    return;
                };
                if let Some(breach) = registry.record_call(&name, &live, is_canary, report) {
                    // A rollback takes the control lock: do it off the
                    // caller's path.
                    tokio::spawn(async move {
                        if let Err(e) = registry
                            .auto_rollback(&name, live.version_id, &breach)
                            .await
                        {
                            tracing::error!(target: "evos::registry", plugin = name, "automatic rollback failed: {e}");
                        }
                    });
                }
            }),
        })
    }
}

/// The deployment a route was built from.
fn seen(route: &Route) -> Seen {
    Some(serving(route))
}

/// The versions a route serves, as the store records them.
fn serving(route: &Route) -> Serving {
    Serving {
        stable_id: route.stable.version_id,
        canary: route.canary.as_ref().map(|(c, w)| (c.version_id, *w)),
        shadow: route
            .shadow
            .as_ref()
            .map(|(s, share)| (s.live.version_id, *share)),
        step: route.rollout.as_ref().map(|r| r.step),
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn grants_summary(m: &Manifest) -> serde_json::Value {
    let c = &m.capabilities;
    json!({
        "log": c.log.is_some(),
        "kv": c.kv.map(|k| json!({"max-value-bytes": k.max_value_bytes, "max-keys": k.max_keys})),
        "models": c.models.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
        "http": c.http.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
        "files": c.files.iter().map(|f| json!({"guest": f.guest, "host": f.host_display()})).collect::<Vec<_>>(),
        "env": c.env.iter().map(|e| e.0.clone()).collect::<Vec<_>>(),
        "config": m.config().keys().collect::<Vec<_>>(),
    })
}

fn change_report(name: &str, action: &str, route: &Route, version_id: i64) -> ChangeReport {
    let subject = std::iter::once(&route.stable)
        .chain(route.canary.as_ref().map(|(c, _)| c))
        .chain(route.shadow.as_ref().map(|(s, _)| &s.live))
        .find(|l| l.version_id == version_id)
        .unwrap_or(&route.stable);
    ChangeReport {
        plugin: name.to_string(),
        action: action.to_string(),
        version: subject.plugin.version().to_string(),
        digest: subject.plugin.digest().to_string(),
        stable: format!(
            "{} ({})",
            route.stable.plugin.version(),
            short(route.stable.plugin.digest())
        ),
        canary: route.canary.as_ref().map(|(c, w)| {
            (
                format!("{} ({})", c.plugin.version(), short(c.plugin.digest())),
                *w,
            )
        }),
        shadow: route.shadow.as_ref().map(|(s, share)| {
            (
                format!(
                    "{} ({})",
                    s.live.plugin.version(),
                    short(s.live.plugin.digest())
                ),
                *share,
            )
        }),
    }
}

fn short(digest: &str) -> &str {
    &digest[..12.min(digest.len())]
}
