//! Shadow versions: a candidate that sees a copy of a share of its
//! plugin's live calls, after each live call has answered, and whose
//! answers are compared with the live ones.
//!
//! A mirrored call waits in a bounded queue; when the queue is full it is
//! shed and counted, so shadows never hold up a live call beyond the copy
//! of its input. Shadow calls run on a thread of their own at the lowest
//! scheduling priority (nice 19), so under load the live calls get the CPU
//! and the shadows shed, rather than the other way round. Shadow calls run without effects (see
//! `Runtime::call_shadow`): kv writes stay in a per-call overlay, outgoing
//! requests and connections are not made, and model calls reach the live
//! model versions as shadow calls outside their stats. Each answer is
//! compared with the live version's answer to the same input per kind
//! (`evos_runtime::compare`), and the counts are kept per pair of
//! (live version, shadow version).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use crate::compare::{self, Answer};
use crate::registry::{Live, Registry};
use crate::runtime::{CallInput, Router};
use crate::store::{Agreement, StateStore};

/// Mirrored calls waiting for a shadow, at most.
pub const QUEUE: usize = 256;
/// Shadow calls of one shadow version running at once.
pub const WORKERS: usize = 2;

/// The runtime shadow calls run on: one thread, started on first use, at
/// the lowest scheduling priority; `None` if it could not start (mirrored
/// calls are then shed).
fn executor() -> Option<&'static tokio::runtime::Handle> {
    static EXECUTOR: OnceLock<Option<tokio::runtime::Handle>> = OnceLock::new();
    EXECUTOR
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            let started = std::thread::Builder::new()
                .name("evos-shadow".into())
                .spawn(move || {
                    // Linux applies a thread's nice value to that thread alone.
                    #[cfg(target_os = "linux")]
                    if let Err(e) =
                        rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19)
                    {
                        tracing::warn!(target: "evos::registry", "shadow calls run at normal priority: {e}");
                    }
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => {
                            let _ = tx.send(Some(rt.handle().clone()));
                            rt.block_on(std::future::pending::<()>());
                        }
                        Err(e) => {
                            tracing::error!(target: "evos::registry", "the shadow runtime did not start: {e}");
                            let _ = tx.send(None);
                        }
                    }
                });
            match started {
                Ok(_) => rx.recv().ok().flatten(),
                Err(e) => {
                    tracing::error!(target: "evos::registry", "the shadow thread did not start: {e}");
                    None
                }
            }
        })
        .as_ref()
}

/// A live call to replay on the shadow.
struct Mirrored {
    live_id: i64,
    input: CallInput,
    answer: Answer,
}

/// A shadow version and what it has shown so far.
pub struct Shadow {
    pub live: Arc<Live>,
    /// Started with the first mirrored call (it needs an async runtime).
    queue: OnceLock<Option<tokio::sync::mpsc::Sender<Mirrored>>>,
    /// Comparisons by the live version's id.
    pairs: Mutex<HashMap<i64, Agreement>>,
    dirty: AtomicBool,
    /// Shadow calls that could not run at all (the registry was gone).
    pub lost: AtomicU64,
    /// Mirrored calls queued or running.
    pending: AtomicU64,
    /// The latest answers that disagreed, newest last (at most
    /// [`DISAGREEMENTS_KEPT`]), to see what a candidate does differently.
    disagreements: Mutex<std::collections::VecDeque<Disagreement>>,
}

/// Disagreeing answers kept per shadow.
pub const DISAGREEMENTS_KEPT: usize = 20;

/// A live answer and the shadow's answer to the same input that did not
/// agree.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Disagreement {
    pub live_version_id: i64,
    pub at: String,
    /// The classes, when the answers have them.
    pub live_class: Option<String>,
    pub shadow_class: Option<String>,
    /// The outputs, or the outcome of a call that gave none.
    pub live: serde_json::Value,
    pub shadow: serde_json::Value,
}

/// What an answer shows in a disagreement: its output, or its outcome.
fn shown(a: &Answer) -> serde_json::Value {
    match &a.output {
        Some(output) => serde_json::to_value(output).unwrap_or_default(),
        None => serde_json::json!({ "outcome": a.outcome.summary() }),
    }
}

/// One pair's comparison as `status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PairStatus {
    pub live_version_id: i64,
    /// The live version's version string (filled in by `status`).
    pub live_version: String,
    #[serde(flatten)]
    pub agreement: Agreement,
    /// agreed / compared.
    pub agreement_rate: Option<f64>,
    /// shifted / classed: the share of decisions whose class changed.
    pub decision_shift: Option<f64>,
}

impl Shadow {
    /// A shadow of `live`, with the comparisons kept for it against
    /// `stable_id` (the version it was deployed next to).
    pub(crate) fn new(live: Arc<Live>, store: &dyn StateStore, stable_id: i64) -> Shadow {
        let mut pairs = HashMap::new();
        if let Ok(kept) = store.agreement(stable_id, live.version_id)
            && kept != Agreement::default()
        {
            pairs.insert(stable_id, kept);
        }
        Shadow {
            live,
            queue: OnceLock::new(),
            pairs: Mutex::new(pairs),
            dirty: AtomicBool::new(false),
            lost: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            disagreements: Mutex::default(),
        }
    }

    /// Queue a copy of a live call; shed (and counted) when the queue is
    /// full or there is no async runtime to run it on.
    pub(crate) fn offer(
        self: &Arc<Self>,
        registry: &Weak<Registry>,
        live_id: i64,
        input: CallInput,
        answer: Answer,
    ) {
        let queue = self.queue.get_or_init(|| self.start(registry));
        self.pending.fetch_add(1, Ordering::Relaxed);
        let sent = match queue {
            Some(q) => q
                .try_send(Mirrored {
                    live_id,
                    input,
                    answer,
                })
                .is_ok(),
            None => false,
        };
        if !sent {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            self.with_pair(live_id, |a| a.shed += 1);
        }
    }

    /// Mirrored calls queued or running now.
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    fn start(
        self: &Arc<Self>,
        registry: &Weak<Registry>,
    ) -> Option<tokio::sync::mpsc::Sender<Mirrored>> {
        let handle = executor()?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Mirrored>(QUEUE);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..WORKERS {
            // Workers hold the shadow weakly: they end once it is replaced
            // (its sender dropped) or the registry is gone.
            let (me, registry, rx) = (Arc::downgrade(self), registry.clone(), rx.clone());
            handle.spawn(async move {
                loop {
                    let Some(job) = rx.lock().await.recv().await else {
                        return;
                    };
                    let (Some(shadow), Some(registry)) = (me.upgrade(), registry.upgrade()) else {
                        return;
                    };
                    shadow.run(&registry, job).await;
                    shadow.pending.fetch_sub(1, Ordering::Relaxed);
                }
            });
        }
        Some(tx)
    }

    async fn run(&self, registry: &Arc<Registry>, job: Mirrored) {
        let plugin = &self.live.plugin;
        let router = registry.clone() as Arc<dyn Router>;
        let report = match registry
            .runtime()
            .call_shadow(plugin, job.input, Some(router))
            .await
        {
            Ok(report) => report,
            Err(e) => {
                self.lost.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(target: "evos::registry", plugin = %plugin.name(), "a shadow call could not run: {e}");
                return;
            }
        };
        if matches!(report.outcome, crate::runtime::Outcome::Timeout) {
            self.with_pair(job.live_id, |a| a.timed_out += 1);
            return;
        }
        self.live.record(&report);
        let manifest_compare = plugin.manifest().rollout.compare.as_ref();
        let answer = Answer::from(&report);
        let agreed = compare::agree(&job.answer, &answer, manifest_compare);
        let classes = (
            compare::class_of(&job.answer, manifest_compare),
            compare::class_of(&answer, manifest_compare),
        );
        let mut judge = false;
        self.with_pair(job.live_id, |a| {
            a.compared += 1;
            judge = a.compared.is_multiple_of(10);
            a.agreed += u64::from(agreed);
            if let (Some(live), Some(candidate)) = &classes {
                a.classed += 1;
                a.shifted += u64::from(live != candidate);
                *a.confusion
                    .entry(format!("{live} -> {candidate}"))
                    .or_default() += 1;
            }
        });
        if !agreed {
            let mut kept = evos_core::sync::lock(&self.disagreements);
            if kept.len() >= DISAGREEMENTS_KEPT {
                kept.pop_front();
            }
            kept.push_back(Disagreement {
                live_version_id: job.live_id,
                at: crate::store::now(),
                live_class: classes.0.clone(),
                shadow_class: classes.1.clone(),
                live: shown(&job.answer),
                shadow: shown(&answer),
            });
        }
        if judge {
            registry.check_rollout_later(plugin.name());
        }
    }

    fn with_pair(&self, live_id: i64, f: impl FnOnce(&mut Agreement)) {
        f(evos_core::sync::lock(&self.pairs)
            .entry(live_id)
            .or_default());
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// The comparison against one live version.
    pub fn agreement(&self, live_id: i64) -> Agreement {
        evos_core::sync::lock(&self.pairs)
            .get(&live_id)
            .cloned()
            .unwrap_or_default()
    }

    /// The latest disagreeing answers, oldest first.
    pub fn disagreements(&self) -> Vec<Disagreement> {
        evos_core::sync::lock(&self.disagreements)
            .iter()
            .cloned()
            .collect()
    }

    /// Every pair, by live version id.
    pub fn pairs(&self) -> Vec<PairStatus> {
        let mut pairs: Vec<PairStatus> = evos_core::sync::lock(&self.pairs)
            .iter()
            .map(|(id, a)| PairStatus {
                live_version_id: *id,
                live_version: String::new(),
                agreement_rate: a.rate(),
                decision_shift: a.shift(),
                agreement: a.clone(),
            })
            .collect();
        pairs.sort_by_key(|p| p.live_version_id);
        pairs
    }

    /// Persist the comparisons that changed.
    pub(crate) fn flush(&self, store: &dyn StateStore) -> crate::Result<()> {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let pairs: Vec<(i64, Agreement)> = evos_core::sync::lock(&self.pairs)
            .iter()
            .map(|(id, a)| (*id, a.clone()))
            .collect();
        for (live_id, agreement) in pairs {
            store.put_agreement(live_id, self.live.version_id, &agreement)?;
        }
        Ok(())
    }
}
