//! The state of a host, behind one boundary of domain operations.
//!
//! [`StateStore`] is everything the control plane keeps: component blobs,
//! versions and deployments with their history, the deployment generation
//! other processes watch, per-version stats, the audit log, the review
//! queue, API tokens and the `kv` capability's data. Each operation is a
//! whole domain step (a deployment change *with* its audit entry, a review
//! decision *with* its audit entry, a kv write *with* its quota check), so a
//! backend decides how to make it atomic and no caller ever holds a
//! transaction or a connection.
//!
//! [`SqliteStore`] is the embedded backend (one data directory, SQLite in
//! WAL mode, migrations in `host/control/migrations/*.sql`). Another backend
//! implements the same trait and proves it with [`conformance::run`], the
//! checks the SQLite backend passes.
//!
//! The records below are the store's own: the review queue, the token
//! checks and the registry build on them, the store imports none of them.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::audit::{self, NewEntry};
use crate::capability::kv::KvStore;
use crate::rollout::OutcomeCounts;
use crate::types::{Action, Event};
use crate::{Error, Result};

pub mod conformance;
pub mod postgres;
mod sqlite;

pub use sqlite::{SqliteKv, SqliteStore};

/// The store of a host: SQLite in `dir` when `url` is absent (the embedded
/// default), else the PostgreSQL database at `url` that several nodes
/// share, with `dir` as this node's own directory (compile cache, audit
/// anchor, admin token).
pub fn open(dir: &Path, url: Option<&str>) -> Result<Arc<dyn StateStore>> {
    match url {
        None => Ok(Arc::new(SqliteStore::open(dir)?)),
        Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
            Ok(Arc::new(postgres::PgStore::connect(u, dir)?))
        }
        Some(u) => Err(Error::Refused(format!(
            "the store `{}` is not a PostgreSQL URL; give postgres://user:password@host:5432/database, or leave --store out to keep the state in SQLite in the data directory",
            postgres::without_password(u)
        ))),
    }
}

/// A store operation that waits without holding a thread.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// The operations of a host's state. Every write that changes what the
/// host does or decides appends its audit entry in the same atomic step:
/// both are kept or neither is.
pub trait StateStore: Send + Sync + 'static {
    /// The host's local directory: the compile cache, the audit anchor and
    /// (for the embedded backend) everything else. No manifest may grant it.
    fn dir(&self) -> &Path;

    /// Pulses when another process announces a deployment change (and
    /// when the announcements may have been missed, after a reconnection),
    /// for backends that can announce; [`watch_generation`] then reads the
    /// generation at once instead of at its next poll.
    ///
    /// [`watch_generation`]: StateStore::watch_generation
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    // ---- components ---------------------------------------------------

    /// Keep component bytes under their sha256 (idempotent, durable
    /// before it returns); returns the digest.
    fn put_blob(&self, bytes: &[u8]) -> Result<String>;
    /// The bytes stored under `digest`, checked to still hash to it.
    fn get_blob(&self, digest: &str) -> Result<Vec<u8>>;
    /// Whether bytes are stored under `digest`.
    fn has_blob(&self, digest: &str) -> bool;

    // ---- deployments --------------------------------------------------

    fn deployment(&self, plugin: &str) -> Result<Option<DeploymentRow>>;
    /// Every deployment, by plugin name.
    fn deployments(&self) -> Result<Vec<DeploymentRow>>;
    fn version(&self, id: i64) -> Result<VersionRow>;
    /// Versions of `plugin`, newest first.
    fn versions_of(&self, plugin: &str) -> Result<Vec<VersionRow>>;
    /// Changes to `plugin`'s deployment, oldest first.
    fn history(&self, plugin: &str) -> Result<Vec<HistoryRow>>;
    /// The deployment generation: it advances with every deployment change
    /// committed by any process sharing this state.
    fn generation(&self) -> Result<i64>;
    /// Record a deployed version (reusing the row of an identical plugin,
    /// digest and manifest) and make it serve as `deploy` says, with the
    /// audit entry; returns the version id. The history and audit detail
    /// get `version_id` set to it.
    fn record_deploy(&self, version: &NewVersion<'_>, deploy: &Deploy<'_>) -> Result<i64>;
    /// Change what serves a plugin, with its history row and audit entry.
    /// Refused, changing nothing, when the deployment is no longer what
    /// the change was decided on ([`Change::seen`]).
    fn record_change(&self, change: &Change<'_>) -> Result<()>;

    // ---- stats --------------------------------------------------------

    /// A version's persisted outcome counts and latency histogram.
    fn stats(&self, version_id: i64) -> Result<(OutcomeCounts, Option<Vec<u8>>)>;
    /// Replace a version's persisted stats.
    fn put_stats(&self, version_id: i64, outcomes: &OutcomeCounts, histogram: &[u8]) -> Result<()>;

    /// How `candidate_id`'s answers compared with `live_id`'s so far
    /// (empty when never compared).
    fn agreement(&self, live_id: i64, candidate_id: i64) -> Result<Agreement>;
    /// Replace the kept comparison of a version pair.
    fn put_agreement(&self, live_id: i64, candidate_id: i64, agreement: &Agreement) -> Result<()>;

    /// Publish this process's recent calls of a version (its rollout
    /// window), for the other nodes sharing this state: canaries and
    /// rollout steps are judged on the calls of every node. The embedded
    /// store serves one host and keeps none.
    fn put_window(&self, _version_id: i64, _counts: &crate::rollout::WindowCounts) -> Result<()> {
        Ok(())
    }

    /// The windows of a version other nodes published within `fresh`,
    /// summed (none for the embedded store).
    fn peer_windows(
        &self,
        _version_id: i64,
        _fresh: Duration,
    ) -> Result<crate::rollout::WindowCounts> {
        Ok(Default::default())
    }

    // ---- audit --------------------------------------------------------

    /// Append one audit entry, durably.
    fn audit(&self, entry: NewEntry<'_>) -> Result<()>;
    /// [`StateStore::audit`] for async code.
    fn audit_async(&self, entry: NewEntry<'_>) -> StoreFuture<'_, ()>;
    /// Append an event's audit entry, the decision records of its actions
    /// (which versions produced each), its recording (already redacted)
    /// and, for an event from an event source, that it was processed,
    /// durably and together. An event a source already marked processed
    /// is refused ([`Error::Duplicate`]) and nothing is written.
    fn record_event(
        &self,
        entry: NewEntry<'_>,
        decisions: Vec<DecisionRecord>,
        recording: Option<NewRecording>,
        processed: Option<Processed>,
    ) -> StoreFuture<'_, ()>;

    // ---- event sources --------------------------------------------------

    /// Whether `source` marked `event_id` processed.
    fn processed(&self, source: &str, event_id: &str) -> Result<bool>;
    /// Forget `source`'s processed marks made before `before` (RFC 3339);
    /// how many. A message redelivered or republished after that is
    /// processed again.
    fn forget_processed(&self, source: &str, before: &str) -> Result<u64>;
    /// Keep a message a source gave up on, with its `dead-letter` audit
    /// entry (by the source), together.
    fn dead_letter(&self, letter: &NewDeadLetter<'_>) -> Result<i64>;
    /// Dead letters, newest first (at most [`REVIEWS_LISTED`]); only
    /// `source`'s when given.
    fn dead_letters(&self, source: Option<&str>) -> Result<Vec<DeadLetter>>;
    /// Entries after `after_seq`, at or after `since` (RFC 3339 or a
    /// duration ago such as `1h`), oldest first.
    fn audit_list(&self, after_seq: i64, since: Option<&str>) -> Result<Vec<audit::Entry>>;
    /// Verify the whole chain and that it leads to its anchor.
    fn audit_verify(&self) -> Result<audit::Verification>;
    /// One page of the log, newest first (the console's audit view and an
    /// event's trace).
    fn audit_page(&self, page: &audit::Page<'_>) -> Result<Vec<audit::Entry>>;

    // ---- reviews ------------------------------------------------------

    /// Queue an escalated action (audited as `escalated`); returns its id.
    fn enqueue_review(&self, review: &NewReview<'_>) -> Result<i64>;
    /// Reviews, newest first, at most [`REVIEWS_LISTED`]; only those with
    /// `status` when given.
    fn reviews(&self, status: Option<ReviewStatus>) -> Result<Vec<Review>>;
    fn review(&self, id: i64) -> Result<Option<Review>>;
    fn pending_reviews(&self) -> Result<u64>;
    /// Approve or reject a pending review (audited as `review-approved` or
    /// `review-rejected`). An unknown or already decided review is refused.
    fn decide_review(&self, decision: &Decision<'_>) -> Result<Review>;
    /// Record carrying out an approved review (audited as `executed` or
    /// `execute-failed`).
    fn record_review_result(&self, outcome: &ReviewResult<'_>) -> Result<()>;
    /// Approved reviews whose execution lease ran out (the node that
    /// approved them stopped before carrying them out), leased now to this
    /// process: of several nodes asking at once, each review goes to one.
    /// The embedded store serves one host and leases nothing.
    fn take_expired_reviews(&self) -> Result<Vec<Review>> {
        Ok(Vec::new())
    }

    // ---- labels -------------------------------------------------------

    /// What people said about a recorded action: kept with an audit entry
    /// (`feedback`, by the label's actor). Refused as not found when the
    /// action has no decision record.
    fn add_label(&self, label: &NewLabel<'_>) -> Result<Label>;
    /// The decision record of one action of an event.
    fn decision(&self, event_id: &str, action_index: usize) -> Result<Option<DecisionRecord>>;
    /// The labels of an event's actions, oldest first.
    fn labels(&self, event_id: &str) -> Result<Vec<Label>>;
    /// Recorded actions with their newest label, oldest first; only those
    /// labelled at or after `since` when given (RFC 3339).
    fn labeled(&self, since: Option<&str>) -> Result<Vec<(DecisionRecord, Label)>>;

    // ---- recordings ---------------------------------------------------

    /// Recorded calls matching `filter`, oldest first.
    fn recorded_calls(&self, filter: &RecordingFilter<'_>) -> Result<Vec<StoredCall>>;
    /// Recorded events matching `filter` (its `plugin` is ignored),
    /// oldest first, with their calls.
    fn recordings(&self, filter: &RecordingFilter<'_>) -> Result<Vec<Recording>>;
    /// Delete recordings made before `before` and the oldest beyond
    /// `max_rows`, with their calls; audited as `recording-prune` by
    /// `actor` when anything was removed.
    fn prune_recordings(
        &self,
        before: Option<&str>,
        max_rows: Option<u64>,
        actor: &str,
    ) -> Result<crate::recording::Pruned>;

    // ---- drift ----------------------------------------------------------

    /// A version's drift reference and last judgement (JSON), as kept.
    fn drift(&self, version_id: i64) -> Result<(Option<String>, Option<String>)>;
    /// Keep a version's last drift judgement (JSON).
    fn put_drift_judged(&self, version_id: i64, judged: &str) -> Result<()>;
    /// Keep a version's drift reference (JSON), with `entry` audited in
    /// the same transaction when given (a pinned reference).
    fn put_drift_reference(
        &self,
        version_id: i64,
        reference: &str,
        entry: Option<NewEntry<'_>>,
    ) -> Result<()>;

    // ---- tokens -------------------------------------------------------

    /// Keep a new token with the sha256 of its secret (audited as
    /// `token-created` by `actor`).
    fn create_token(&self, token: &Token, secret_sha256: &str, actor: &str) -> Result<()>;
    /// Every token, oldest first, never with its secret hash.
    fn tokens(&self) -> Result<Vec<Token>>;
    /// A token and its secret's sha256.
    fn token(&self, id: &str) -> Result<Option<(Token, String)>>;
    /// Revoke an active token (audited as `token-revoked`); an unknown or
    /// revoked id is refused.
    fn revoke_token(&self, id: &str, actor: &str) -> Result<()>;

    // ---- console sessions ------------------------------------------------

    /// Keep a new console session with `entry` (its sign-in) audited in the
    /// same step. Sessions that ended by `session.created` are deleted, and
    /// the token's oldest beyond [`SESSIONS_PER_TOKEN`].
    fn open_session(&self, session: &ConsoleSession, entry: NewEntry<'_>) -> Result<()>;
    /// The session whose id hashes to `id_sha256`, ended or not.
    fn session(&self, id_sha256: &str) -> Result<Option<ConsoleSession>>;
    /// End a session, with `entry` (its sign-out) audited when given.
    fn close_session(&self, id_sha256: &str, entry: Option<NewEntry<'_>>) -> Result<()>;
    /// End every session of `token_id` (it was revoked).
    fn close_sessions_of(&self, token_id: &str) -> Result<()>;

    // ---- kv -----------------------------------------------------------

    /// The `kv` capability's storage over this state: quotas checked in
    /// the same atomic step as each write.
    fn kv(self: Arc<Self>) -> Arc<dyn KvStore>;
}

impl dyn StateStore {
    /// A watch of [`StateStore::generation`], read every `every` while a
    /// receiver is alive, and at once when the backend announces a change
    /// ([`StateStore::changes`]); needs a tokio runtime. A read that fails
    /// keeps the last value and is logged.
    pub fn watch_generation(self: Arc<Self>, every: Duration) -> tokio::sync::watch::Receiver<i64> {
        let first = self.generation().unwrap_or(0);
        let (tx, rx) = tokio::sync::watch::channel(first);
        let mut changes = self.changes();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let announced = async {
                    match changes.as_mut() {
                        Some(c) => {
                            if c.changed().await.is_err() {
                                std::future::pending::<()>().await;
                            }
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tick.tick() => {}
                    _ = announced => {}
                }
                match self.generation() {
                    Ok(g) => {
                        tx.send_if_modified(|seen| std::mem::replace(seen, g) != g);
                    }
                    Err(e) => {
                        tracing::warn!(target: "evos::store", "reading the deployment generation: {e}");
                    }
                }
            }
        });
        rx
    }
}

/// An event of an event source whose processing an audit entry records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Processed {
    /// The source, e.g. `nats:CLAIMS/evos` (stream and consumer).
    pub source: String,
    pub event_id: String,
}

/// A message an event source gave up on.
#[derive(Debug, Clone, Copy)]
pub struct NewDeadLetter<'a> {
    pub source: &'a str,
    /// The connector that was to ingest it.
    pub connector: &'a str,
    /// Where the message was published.
    pub subject: &'a str,
    /// Its position in the stream.
    pub sequence: u64,
    /// Deliveries tried.
    pub delivered: u64,
    /// Why the last one failed.
    pub error: &'a str,
    pub payload: &'a [u8],
}

/// A kept dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub source: String,
    pub connector: String,
    pub subject: String,
    pub sequence: u64,
    pub delivered: u64,
    pub error: String,
    /// The payload as received (base64 in JSON).
    #[serde(serialize_with = "base64_bytes")]
    pub payload: Vec<u8>,
    pub payload_sha256: String,
    pub at: String,
}

fn base64_bytes<S: serde::Serializer>(bytes: &[u8], s: S) -> std::result::Result<S::Ok, S::Error> {
    use base64::Engine;
    s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The audit entry of a dead letter: (actor, action, subject, detail).
pub(crate) fn dead_letter_entry(
    l: &NewDeadLetter<'_>,
    id: i64,
    payload_sha256: &str,
) -> (String, serde_json::Value) {
    (
        format!("dead-letter/{id}"),
        serde_json::json!({
            "source": l.source,
            "connector": l.connector,
            "subject": l.subject,
            "sequence": l.sequence,
            "delivered": l.delivered,
            "error": l.error,
            "payload_sha256": payload_sha256,
            "payload_bytes": l.payload.len(),
        }),
    )
}

/// `bytes` read back from a store as the blob `digest`, checked to still
/// hash to it.
pub(crate) fn checked_blob(digest: &str, bytes: Vec<u8>) -> Result<Vec<u8>> {
    use sha2::Digest;
    let actual = hex::encode(sha2::Sha256::digest(&bytes));
    if actual != digest {
        return Err(Error::store(
            format!("blob {digest}"),
            format!("content hashes to {actual}: the blob store was modified"),
        ));
    }
    Ok(bytes)
}

/// The audit entry of a label given after the fact: (subject, detail).
pub(crate) fn feedback_entry(
    l: &NewLabel<'_>,
    d: &DecisionRecord,
    label_id: i64,
) -> (String, serde_json::Value) {
    (
        format!("event/{}", l.event_id),
        serde_json::json!({
            "action_index": l.action_index,
            "action": d.action_kind,
            "proposed_by": d.proposed_by,
            "label": l.label,
            "source": l.source,
            "comment": l.comment,
            "label_id": label_id,
        }),
    )
}

/// The detail of a `recording-prune` audit entry.
pub(crate) fn prune_detail(
    pruned: &crate::recording::Pruned,
    before: Option<&str>,
    max_rows: Option<u64>,
) -> serde_json::Value {
    serde_json::json!({
        "expired": pruned.expired,
        "over_limit": pruned.over_limit,
        "kept": pruned.kept,
        "before": before,
        "max_rows": max_rows,
    })
}

/// The refusal of an event a source already marked processed.
pub(crate) fn already_processed(p: &Processed) -> Error {
    Error::Duplicate(format!(
        "event {} from {} was already processed",
        p.event_id, p.source
    ))
}

/// Most reviews one listing returns.
pub const REVIEWS_LISTED: usize = 1000;

/// A stored plugin version.
#[derive(Debug, Clone, Serialize)]
pub struct VersionRow {
    pub id: i64,
    pub plugin: String,
    pub version: String,
    pub digest: String,
    #[serde(skip)]
    pub manifest: String,
    pub manifest_origin: String,
    #[serde(skip)]
    pub manifest_base: String,
    pub created_at: String,
}

/// A version to record: the manifest exactly as its source text says.
#[derive(Debug, Clone, Copy)]
pub struct NewVersion<'a> {
    pub plugin: &'a str,
    pub version: &'a str,
    pub digest: &'a str,
    pub manifest: &'a str,
    pub manifest_origin: &'a str,
    pub manifest_base: &'a str,
}

/// What serves a plugin name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeploymentRow {
    pub plugin: String,
    pub stable_id: i64,
    pub canary_id: Option<i64>,
    pub canary_weight: u8,
    pub shadow_id: Option<i64>,
    /// Percent of live calls mirrored to the shadow.
    pub shadow_share: u8,
    pub updated_at: String,
    /// The step of a progressive rollout the candidate is in (0-based).
    pub rollout_step: Option<u32>,
    /// When it entered that step.
    pub step_since: Option<String>,
}

impl DeploymentRow {
    pub fn serving(&self) -> Serving {
        Serving {
            stable_id: self.stable_id,
            canary: self.canary_id.map(|id| (id, self.canary_weight)),
            shadow: self.shadow_id.map(|id| (id, self.shadow_share)),
            step: self.rollout_step,
        }
    }
}

/// The versions that serve a plugin: the stable one, a canary with its
/// percent of calls, a shadow with its percent of mirrored calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Serving {
    pub stable_id: i64,
    pub canary: Option<(i64, u8)>,
    pub shadow: Option<(i64, u8)>,
    /// The step of a progressive rollout the candidate (the canary, else
    /// the shadow) is in.
    pub step: Option<u32>,
}

/// One change to a deployment.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryRow {
    pub id: i64,
    pub plugin: String,
    pub at: String,
    pub action: String,
    pub actor: String,
    pub version_id: Option<i64>,
    pub stable_id: Option<i64>,
    pub canary_id: Option<i64>,
    pub canary_weight: u8,
    pub shadow_id: Option<i64>,
    pub shadow_share: u8,
    pub rollout_step: Option<u32>,
    pub detail: serde_json::Value,
}

/// The deployment a change was decided on; `None` for a plugin not yet
/// deployed.
pub type Seen = Option<Serving>;

/// A change to what serves a plugin, recorded with an audit entry of the
/// same actor, action, subject (the plugin) and detail.
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    pub plugin: &'a str,
    /// What serves the plugin after the change.
    pub serving: Serving,
    pub action: &'a str,
    pub actor: &'a str,
    /// The version the change is about (deployed, promoted, rolled back to).
    pub version_id: Option<i64>,
    /// The component digest the audit entry names.
    pub digest: &'a str,
    pub detail: &'a serde_json::Value,
    /// The deployment the change was decided on, `None` for a plugin not
    /// yet deployed. Another process may have changed it meanwhile; then
    /// the change is refused rather than overwriting what it never saw.
    pub seen: Seen,
}

/// Where a newly deployed version serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Slot {
    /// The new stable version (replacing any canary and shadow).
    Stable,
    /// A canary with this percent of calls, next to the current stable.
    Canary(u8),
    /// A shadow mirroring this percent of live calls.
    Shadow(u8),
}

/// How a newly recorded version serves.
#[derive(Debug, Clone, Copy)]
pub struct Deploy<'a> {
    /// `deploy`, `canary` or `shadow`: the history and audit action.
    pub action: &'a str,
    pub actor: &'a str,
    /// A canary or shadow joins what `seen` says serves (and is refused
    /// when nothing does); a stable version replaces it all.
    pub slot: Slot,
    /// The rollout step a canary or shadow starts in, for a progressive
    /// rollout.
    pub step: Option<u32>,
    /// History and audit detail; the store sets its `version_id`.
    pub detail: &'a serde_json::Value,
    pub seen: Seen,
}

/// How a candidate version's answers compared with a live version's on
/// the same inputs (see `evos_runtime::compare`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agreement {
    /// Inputs both versions answered and that were compared.
    pub compared: u64,
    /// Of those, the answers that agreed.
    pub agreed: u64,
    /// Comparisons where both answers have a class (a decision, action
    /// kinds, a model label).
    pub classed: u64,
    /// Of those, the ones whose class changed: the decision shift.
    pub shifted: u64,
    /// Count per `"<live class> -> <candidate class>"`.
    pub confusion: std::collections::BTreeMap<String, u64>,
    /// Mirrored calls dropped because the candidate's queue was full.
    pub shed: u64,
    /// Shadow calls that timed out, not compared: shadow calls run at the
    /// lowest priority, so their wall clock measures the host's load more
    /// than the candidate (its timeouts are judged in canary steps).
    #[serde(default)]
    pub timed_out: u64,
}

impl Agreement {
    /// Agreed / compared, when anything was compared.
    pub fn rate(&self) -> Option<f64> {
        (self.compared > 0).then(|| self.agreed as f64 / self.compared as f64)
    }

    /// Shifted / classed, when any comparison had classes.
    pub fn shift(&self) -> Option<f64> {
        (self.classed > 0).then(|| self.shifted as f64 / self.classed as f64)
    }
}

/// What serves after `deploy` records version `vid`, and the change's
/// detail with `version_id` set: the same for every backend.
pub(crate) fn deployed(
    version: &NewVersion<'_>,
    deploy: &Deploy<'_>,
    vid: i64,
) -> Result<(Serving, serde_json::Value)> {
    let serving = match (deploy.slot, deploy.seen) {
        (Slot::Stable, _) => Serving {
            stable_id: vid,
            canary: None,
            shadow: None,
            step: None,
        },
        (Slot::Canary(weight), Some(current)) => Serving {
            canary: Some((vid, weight)),
            step: deploy.step,
            ..current
        },
        (Slot::Shadow(share), Some(current)) => Serving {
            shadow: Some((vid, share)),
            step: deploy.step,
            ..current
        },
        (Slot::Canary(_) | Slot::Shadow(_), None) => {
            return Err(Error::Refused(format!(
                "`{}` has no stable version to {} next to; deploy it as the stable version first",
                version.plugin, deploy.action
            )));
        }
    };
    let mut detail = deploy.detail.clone();
    if let Some(fields) = detail.as_object_mut() {
        fields.insert("version_id".into(), vid.into());
    }
    Ok((serving, detail))
}

/// When the candidate of `serving` entered its rollout step: a step keeps
/// its start while the same candidate stays in it, a new one starts `at`.
pub(crate) fn step_since(
    current: Option<&DeploymentRow>,
    serving: &Serving,
    at: &str,
) -> Option<String> {
    let candidate = |s: &Serving| s.canary.or(s.shadow).map(|(id, _)| id);
    match (current, serving.step) {
        (Some(d), Some(step))
            if d.rollout_step == Some(step) && candidate(&d.serving()) == candidate(serving) =>
        {
            d.step_since.clone()
        }
        (_, Some(_)) => Some(at.to_string()),
        (_, None) => None,
    }
}

/// The refusal of a change decided on a deployment that has changed since.
pub(crate) fn stale(plugin: &str) -> Error {
    Error::Refused(format!(
        "the deployment of `{plugin}` was changed by another process after this host last saw it; \
         this host has picked the change up (or will within a second): check `evos status {plugin}` and retry"
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReviewStatus {
    Pending,
    Approved,
    Rejected,
    Executed,
    Failed,
}

impl ReviewStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewStatus::Pending => "pending",
            ReviewStatus::Approved => "approved",
            ReviewStatus::Rejected => "rejected",
            ReviewStatus::Executed => "executed",
            ReviewStatus::Failed => "failed",
        }
    }

    /// The status a stored name stands for.
    pub fn parse(s: &str) -> Option<ReviewStatus> {
        Some(match s {
            "pending" => ReviewStatus::Pending,
            "approved" => ReviewStatus::Approved,
            "rejected" => ReviewStatus::Rejected,
            "executed" => ReviewStatus::Executed,
            "failed" => ReviewStatus::Failed,
            _ => return None,
        })
    }
}

/// One escalated action.
#[derive(Debug, Clone, Serialize)]
pub struct Review {
    pub id: i64,
    pub created_at: String,
    pub status: ReviewStatus,
    pub trace_id: String,
    /// The connector that carries the action out when approved.
    pub connector: Option<String>,
    pub proposed_by: String,
    pub action: Action,
    pub event: Event,
    /// Why it was escalated (`policy: reason`).
    pub reasons: Vec<String>,
    pub decided_by: Option<String>,
    pub decided_at: Option<String>,
    pub comment: Option<String>,
    /// The execution receipt or error, once carried out.
    pub result: Option<String>,
    /// The action's position among its event's actions (the idempotency
    /// key is `<event id>/<action index>`).
    pub action_index: usize,
}

/// A web console session as stored: the id itself is never kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    pub id_sha256: String,
    pub token_id: String,
    pub csrf: String,
    /// Unix seconds.
    pub created: i64,
    pub expires: i64,
}

/// Most console sessions one token keeps open; signing in again past it
/// ends the oldest.
pub const SESSIONS_PER_TOKEN: i64 = 64;

/// An action to queue for review.
#[derive(Debug, Clone, Copy)]
pub struct NewReview<'a> {
    pub action_index: usize,
    pub action: &'a Action,
    pub event: &'a Event,
    pub reasons: &'a [String],
    pub proposed_by: &'a str,
    pub connector: Option<&'a str>,
}

/// A reviewer's decision.
#[derive(Debug, Clone, Copy)]
pub struct Decision<'a> {
    pub id: i64,
    pub approve: bool,
    pub reviewer: &'a str,
    pub comment: Option<&'a str>,
}

/// The outcome of carrying out an approved review.
#[derive(Debug, Clone)]
pub struct ReviewResult<'a> {
    pub id: i64,
    pub executed: bool,
    /// The receipt or the error.
    pub result: &'a str,
    /// The execution step's report.
    pub detail: serde_json::Value,
}

/// The audit entries of the review transitions, the same from every
/// backend: (action, subject, detail).
pub(crate) mod review_entries {
    use serde_json::{Value, json};

    use super::{Decision, NewReview, ReviewResult};

    pub fn subject(id: i64) -> String {
        format!("review/{id}")
    }

    pub fn escalated(r: &NewReview<'_>) -> Value {
        json!({"trace_id": r.event.trace_id, "action": r.action.kind, "event_id": r.event.id, "reasons": r.reasons, "proposed_by": r.proposed_by, "connector": r.connector})
    }

    pub fn decided(
        d: &Decision<'_>,
        proposed_by: &str,
        connector: Option<&str>,
    ) -> (&'static str, Value) {
        let action = if d.approve {
            "review-approved"
        } else {
            "review-rejected"
        };
        (
            action,
            json!({"comment": d.comment, "proposed_by": proposed_by, "connector": connector}),
        )
    }

    pub fn result(
        r: &ReviewResult<'_>,
        proposed_by: &str,
        connector: Option<&str>,
    ) -> (&'static str, Value) {
        let action = if r.executed {
            "executed"
        } else {
            "execute-failed"
        };
        (
            action,
            json!({"result": r.result, "step": r.detail, "proposed_by": proposed_by, "connector": connector}),
        )
    }
}

/// Which versions produced one action of an event: the agent that
/// proposed it, the model answers it rested on, the policies that judged
/// it (`steps`, JSON: `[{"plugin", "kind", "version", "digest", "class"?,
/// "output"?}]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    pub event_id: String,
    pub action_index: usize,
    pub trace_id: String,
    pub action_kind: String,
    pub proposed_by: String,
    pub steps: serde_json::Value,
    pub at: String,
}

/// One call on a recorded event's path, redacted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedCall {
    /// `agent`, `model`, `policy` or `execute`.
    pub step: String,
    /// The action a policy or execute call concerns (its index among the
    /// event's actions); for model calls, none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_index: Option<usize>,
    pub plugin: String,
    /// The plugin's kind (`agent`, `model-adapter`, ...).
    pub kind: String,
    pub version: String,
    pub digest: String,
    /// The call's input, in the shape `evos invoke` reads.
    pub input: serde_json::Value,
    /// What it returned (`{"model": {...}}`, `{"decision": ...}`, ...), or
    /// null.
    pub output: serde_json::Value,
    /// The outcome's name (`ok`, `timeout`, ...).
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_us: u64,
    pub fuel: u64,
}

/// A recorded event to keep.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRecording {
    pub trace_id: String,
    pub event_id: String,
    pub event_kind: String,
    pub connector: String,
    /// `sampled`, `escalated` or `failed`.
    pub reason: String,
    /// What redaction replaced, by kind.
    pub redactions: std::collections::BTreeMap<String, u64>,
    pub calls: Vec<RecordedCall>,
}

/// A recorded event as kept.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recording {
    pub id: i64,
    pub trace_id: String,
    pub event_id: String,
    pub event_kind: String,
    pub connector: String,
    pub reason: String,
    pub redactions: serde_json::Value,
    pub at: String,
    pub calls: Vec<RecordedCall>,
}

/// A recorded call with the event it belongs to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredCall {
    pub id: i64,
    pub recording_id: i64,
    pub trace_id: String,
    pub event_id: String,
    pub at: String,
    #[serde(flatten)]
    pub call: RecordedCall,
}

/// Which recordings to read.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordingFilter<'a> {
    /// Calls of this plugin only.
    pub plugin: Option<&'a str>,
    /// The event with this trace id only.
    pub trace_id: Option<&'a str>,
    /// Recorded at or after this time (RFC 3339).
    pub since: Option<&'a str>,
    /// At most this many rows (the newest ones); none: all.
    pub limit: Option<usize>,
}

/// Where a label came from.
pub const LABEL_FROM_REVIEW: &str = "review";
/// A correction after the fact (`evos feedback`, the feedback API).
pub const LABEL_FROM_FEEDBACK: &str = "feedback";

/// A label to keep.
#[derive(Debug, Clone, Copy)]
pub struct NewLabel<'a> {
    pub event_id: &'a str,
    pub action_index: usize,
    /// `approve` or `reject` (what a reviewer decides), or another word
    /// the deployment's models map to a class.
    pub label: &'a str,
    /// [`LABEL_FROM_REVIEW`] or [`LABEL_FROM_FEEDBACK`].
    pub source: &'a str,
    pub actor: &'a str,
    pub comment: Option<&'a str>,
}

/// What a person said about a recorded action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Label {
    pub id: i64,
    pub event_id: String,
    pub action_index: usize,
    pub label: String,
    pub source: String,
    pub actor: String,
    pub comment: Option<String>,
    pub at: String,
}

/// Whether `label` is a word a label may be: 1 to 64 lowercase letters,
/// digits and `-`.
pub fn valid_label(label: &str) -> bool {
    (1..=64).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// [`valid_label`], or the error saying what a label may be.
pub(crate) fn check_label(label: &str) -> Result<()> {
    if valid_label(label) {
        return Ok(());
    }
    Err(Error::Input {
        plugin: String::new(),
        kind: "label".into(),
        message: format!(
            "label {label:?}: use 1 to 64 lowercase letters, digits and `-` (e.g. approve, reject)"
        ),
    })
}

/// Who may do what with a token; see `auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Admin,
    Deployer,
    Invoker,
    Reviewer,
    Auditor,
}

/// A token as stored (never with its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Token {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub scope: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

pub(crate) fn now() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}

/// Fault injection for crash-safety tests: when `EVOS_CRASHPOINT` names
/// this point, the process announces it on stderr and stops making progress
/// so the test can `kill -9` it right here.
pub(crate) fn crashpoint(name: &str) {
    if std::env::var("EVOS_CRASHPOINT").is_ok_and(|p| p == name) {
        eprintln!("evos-crashpoint {name}");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}
