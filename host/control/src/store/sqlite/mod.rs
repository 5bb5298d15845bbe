//! The embedded state of a host: one data directory.
//!
//! ```text
//! <data-dir>/
//!   evos.db            SQLite (WAL): versions, deployments, history, audit, kv, stats
//!   audit.anchor       head of the audit chain, written after each commit
//!   blobs/sha256/<hex> components, content-addressed
//!   cache/             the compile cache (see engine)
//! ```
//!
//! Crash safety: every multi-step change is one SQLite transaction, and the
//! audit entry recording it is appended inside that same transaction, so a
//! kill at any point leaves either the state before or the state after,
//! never a mix. Component blobs are written (atomically, fsynced) before the
//! transaction that references them; a kill in between leaves only an
//! unreferenced blob. Migrations are versioned by `PRAGMA user_version`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use evos_core::sync::lock;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use sha2::{Digest, Sha256};

use super::{
    Agreement, Change, DeadLetter, Decision, DecisionRecord, Deploy, DeploymentRow, HistoryRow,
    Label, NewDeadLetter, NewLabel, NewRecording, NewReview, NewVersion, Processed, Recording,
    RecordingFilter, Review, ReviewResult, ReviewStatus, StateStore, StoreFuture, StoredCall,
    Token, VersionRow, crashpoint, now, stale,
};
use crate::audit::{self, Anchor, NewEntry};
use crate::capability::kv::KvStore;
use crate::rollout::OutcomeCounts;
use crate::{Error, Result};

mod kv;
mod labels;
mod recordings;
mod reviews;
mod sessions;
mod sources;
mod tokens;

pub use kv::SqliteKv;

/// Migrations in order (`migrations/*.sql`); `user_version` is the number
/// applied. A migration is never edited once released: a change is a new
/// file.
const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/0001_control_plane.sql"),
    include_str!("../../../migrations/0002_audit.sql"),
    include_str!("../../../migrations/0003_reviews.sql"),
    include_str!("../../../migrations/0004_tokens.sql"),
    include_str!("../../../migrations/0005_kv_usage.sql"),
    include_str!("../../../migrations/0006_control_generation.sql"),
    include_str!("../../../migrations/0007_review_action_index.sql"),
    include_str!("../../../migrations/0008_shadow.sql"),
    include_str!("../../../migrations/0009_labels.sql"),
    include_str!("../../../migrations/0010_rollout_steps.sql"),
    include_str!("../../../migrations/0011_recordings.sql"),
    include_str!("../../../migrations/0012_drift.sql"),
    include_str!("../../../migrations/0013_event_sources.sql"),
    include_str!("../../../migrations/0014_audit_subject.sql"),
    include_str!("../../../migrations/0015_console_sessions.sql"),
];

pub struct SqliteStore {
    dir: PathBuf,
    conn: Arc<Mutex<Connection>>,
    /// A second connection for reads that must not wait behind a commit
    /// (WAL lets it read the last committed state meanwhile).
    reader: Mutex<Connection>,
    /// Writes for the group-commit thread (see [`SqliteStore::write`]); the
    /// thread ends when the store is dropped.
    writer: std::sync::mpsc::Sender<Job>,
}

/// Most writes committed as one group.
const GROUP_MAX: usize = 1024;

/// How a queued write learns whether its group committed: `None` when it
/// did, else why not.
type Deliver = Box<dyn FnOnce(Option<&str>) + Send>;
/// A queued write: runs inside the group's transaction (`None` when the
/// transaction could not start) and returns how to deliver its result.
type Job = Box<dyn for<'a, 'b> FnOnce(Option<&'a Transaction<'b>>) -> Deliver + Send>;

/// A database error while `context`, with the error kept as its cause.
pub(crate) fn db_err(context: &str) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| Error::store(context, e)
}

/// Create `dir` and its missing parents as 0700: the data directory holds
/// the admin token, the database and the components, readable by the
/// host's user only. Existing directories keep their mode (a data
/// directory the operator made is theirs to set).
pub(crate) fn private_dirs(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Create `path` as 0600 if missing, and make it 0600 if it is not: the
/// database holds token hashes, kv data and reviews. SQLite creates its
/// `-wal` and `-shm` files with the database file's mode.
fn private_file(path: &Path) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        opts.mode(0o600);
        let file = opts.open(path)?;
        if file.metadata()?.permissions().mode() & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
    }
    #[cfg(not(unix))]
    opts.open(path)?;
    Ok(())
}

/// The write appending `entry` to the audit chain, owning what it needs.
fn append_job(entry: NewEntry<'_>) -> impl FnOnce(&Transaction<'_>) -> Result<()> + Send + 'static {
    let (actor, action, subject) = (
        entry.actor.to_owned(),
        entry.action.to_owned(),
        entry.subject.to_owned(),
    );
    let (digest, detail) = (entry.digest.map(str::to_owned), entry.detail);
    move |tx| {
        audit::append(
            tx,
            NewEntry {
                actor: &actor,
                action: &action,
                subject: &subject,
                digest: digest.as_deref(),
                detail,
            },
        )
        .map_err(Error::from)?;
        Ok(())
    }
}

/// Whether `s` is a sha256 digest as blobs are named: 64 lowercase hex.
fn is_digest(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn not_run(label: &str) -> Error {
    Error::store(
        format!("committing ({label})"),
        "the store's commit thread stopped before the write ran",
    )
}

/// Commit `jobs` as one transaction (see [`SqliteStore::write`]).
fn commit_group(conn: &mut Connection, anchor: &Path, jobs: Vec<Job>) {
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let why = e.to_string();
            for job in jobs {
                job(None)(Some(&why));
            }
            return;
        }
    };
    let before = audit::head(&tx).ok().flatten();
    let delivers: Vec<Deliver> = jobs.into_iter().map(|job| job(Some(&tx))).collect();
    let failed = (|| -> std::result::Result<(), String> {
        let after = audit::head(&tx).map_err(|e| e.to_string())?;
        let before_seq = before.as_ref().map_or(0, |a| a.seq);
        let appended = after.as_ref().map_or(0, |a| a.seq) - before_seq;
        if appended > 1 {
            // Announce the group before committing it: a crash between
            // the commit and the anchor update is then not tampering.
            let announced = Anchor {
                seq: before_seq,
                hash: before
                    .as_ref()
                    .map_or_else(|| audit::GENESIS.to_owned(), |a| a.hash.clone()),
                pending: appended,
            };
            audit::write_anchor(anchor, &announced).map_err(|e| e.to_string())?;
        }
        crashpoint("group:before-commit");
        tx.commit().map_err(|e| e.to_string())?;
        crashpoint("group:after-commit");
        if appended > 0
            && let Some(head) = after
        {
            audit::write_anchor(anchor, &head).map_err(|e| e.to_string())?;
        }
        Ok(())
    })();
    let failed = failed.err();
    for deliver in delivers {
        deliver(failed.as_deref());
    }
}

/// Run `f` inside a savepoint of `tx`: its writes stay when it succeeds and
/// are rolled back alone when it fails.
fn in_savepoint<R>(
    tx: &Transaction<'_>,
    label: &str,
    f: impl FnOnce(&Transaction<'_>) -> Result<R>,
) -> Result<R> {
    let run = |sql: &str| tx.prepare_cached(sql).and_then(|mut s| s.execute([]));
    run("SAVEPOINT group_write").map_err(db_err("starting a savepoint"))?;
    let result = f(tx);
    let ended = if result.is_ok() {
        run("RELEASE group_write")
    } else {
        run("ROLLBACK TO group_write").and_then(|_| run("RELEASE group_write"))
    };
    ended.map_err(|e| Error::store(format!("ending the savepoint of {label}"), e))?;
    result
}

impl SqliteStore {
    /// Open (creating if needed) the data directory and migrate its database.
    pub fn open(dir: impl AsRef<Path>) -> Result<SqliteStore> {
        let dir = dir.as_ref().to_path_buf();
        private_dirs(&dir.join("blobs/sha256")).map_err(|e| Error::io(&dir, e))?;
        let path = dir.join("evos.db");
        private_file(&path).map_err(|e| Error::io(&path, e))?;
        let mut conn = Connection::open(&path).map_err(db_err("opening evos.db"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db_err("enabling WAL"))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db_err("setting synchronous"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(db_err("enabling foreign keys"))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(db_err("setting busy timeout"))?;
        migrate(&mut conn)?;
        let reader = Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db_err("opening evos.db for reading"))?;
        reader
            .busy_timeout(std::time::Duration::from_secs(10))
            .map_err(db_err("setting busy timeout"))?;
        let conn = Arc::new(Mutex::new(conn));
        let (writer, jobs) = std::sync::mpsc::channel::<Job>();
        let (group_conn, anchor) = (conn.clone(), dir.join("audit.anchor"));
        std::thread::Builder::new()
            .name("evos-commit".into())
            .spawn(move || {
                // Take every write that is waiting, commit them together.
                while let Ok(first) = jobs.recv() {
                    let mut group = vec![first];
                    while group.len() < GROUP_MAX {
                        match jobs.try_recv() {
                            Ok(job) => group.push(job),
                            Err(_) => break,
                        }
                    }
                    commit_group(&mut lock(&group_conn), &anchor, group);
                }
            })
            .map_err(|e| Error::io(&dir, e))?;
        Ok(SqliteStore {
            dir,
            conn,
            reader: Mutex::new(reader),
            writer,
        })
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.dir.join("cache")
    }

    pub fn anchor_path(&self) -> PathBuf {
        self.dir.join("audit.anchor")
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        lock(&self.conn)
    }

    /// The read-only connection: sees the last committed state without
    /// waiting for a commit in progress.
    pub(crate) fn reader(&self) -> MutexGuard<'_, Connection> {
        lock(&self.reader)
    }

    /// Run `f` durably, sharing one transaction (and its syncs) with the
    /// writes that arrive meanwhile: group commit, on the store's commit
    /// thread. Each write runs in its own savepoint, so one that fails rolls
    /// back alone; the result comes once the group committed: `f`'s, or the
    /// commit's error for every write of the group. Audit entries appended
    /// by the group are anchored as one transaction's (see [`audit`]).
    ///
    /// Blocks the thread until then; async code uses [`SqliteStore::write_async`].
    pub fn write<R: Send + 'static>(
        &self,
        label: &'static str,
        f: impl FnOnce(&Transaction<'_>) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.submit(label, f, move |r| {
            let _ = tx.send(r);
        });
        rx.recv().unwrap_or_else(|_| Err(not_run(label)))
    }

    /// [`SqliteStore::write`] for async code: waits without holding a thread.
    pub async fn write_async<R: Send + 'static>(
        &self,
        label: &'static str,
        f: impl FnOnce(&Transaction<'_>) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(label, f, move |r| {
            let _ = tx.send(r);
        });
        rx.await.unwrap_or_else(|_| Err(not_run(label)))
    }

    fn submit<R: Send + 'static>(
        &self,
        label: &'static str,
        f: impl FnOnce(&Transaction<'_>) -> Result<R> + Send + 'static,
        reply: impl FnOnce(Result<R>) + Send + 'static,
    ) {
        let job: Job = Box::new(move |tx: Option<&Transaction<'_>>| {
            let result = match tx {
                Some(tx) => in_savepoint(tx, label, f),
                None => Err(Error::store(
                    "starting a transaction",
                    "the group commit could not start",
                )),
            };
            Box::new(move |failed: Option<&str>| {
                reply(match failed {
                    Some(why) => Err(Error::store(format!("committing ({label})"), why)),
                    None => result,
                })
            })
        });
        // A send fails only once the commit thread is gone; the reply
        // channel then closes and the caller gets `not_run`.
        let _ = self.writer.send(job);
    }

    /// Run `f` in one transaction; on success commit, then advance the audit
    /// anchor if `f` appended entries.
    pub fn transaction<R>(
        &self,
        label: &str,
        f: impl FnOnce(&Transaction<'_>) -> Result<R>,
    ) -> Result<R> {
        let mut conn = self.conn();
        // Immediate: take the write lock up front, so a writer in another
        // process (a CLI command beside `evos up`) makes this one wait
        // (busy timeout) rather than fail when a read would be upgraded.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err("starting a transaction"))?;
        let before = audit::head(&tx).map_err(Error::from)?;
        let result = f(&tx)?;
        let after = audit::head(&tx).map_err(Error::from)?;
        crashpoint(&format!("{label}:before-commit"));
        tx.commit().map_err(db_err("committing"))?;
        crashpoint(&format!("{label}:after-commit"));
        if after != before
            && let Some(head) = after
        {
            audit::write_anchor(&self.anchor_path(), &head).map_err(Error::from)?;
        }
        Ok(result)
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest)
    }

    pub fn read_anchor(&self) -> Result<Option<Anchor>> {
        audit::read_anchor(&self.anchor_path()).map_err(Error::from)
    }
}

impl StateStore for SqliteStore {
    fn dir(&self) -> &Path {
        &self.dir
    }

    /// Group-committed with concurrent writes (see [`SqliteStore::write`]).
    fn audit(&self, entry: NewEntry<'_>) -> Result<()> {
        self.write("audit", append_job(entry))
    }

    fn audit_async(&self, entry: NewEntry<'_>) -> StoreFuture<'_, ()> {
        let job = append_job(entry);
        Box::pin(self.write_async("audit", job))
    }

    fn has_blob(&self, digest: &str) -> bool {
        is_digest(digest) && self.blob_path(digest).is_file()
    }

    /// Store component bytes under their sha256 (idempotent, atomic, fsynced).
    fn put_blob(&self, bytes: &[u8]) -> Result<String> {
        let digest = hex::encode(Sha256::digest(bytes));
        let path = self.blob_path(&digest);
        if path.exists() {
            return Ok(digest);
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            if let Some(parent) = path.parent() {
                std::fs::File::open(parent)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(&path, e)
        })?;
        Ok(digest)
    }

    /// Read a blob and check it still has its digest.
    fn get_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        super::checked_blob(digest, bytes)
    }

    fn deployment(&self, plugin: &str) -> Result<Option<DeploymentRow>> {
        deployment(&self.conn(), plugin)
    }

    /// The control-plane generation: it advances with every deployment
    /// change committed by any process sharing this data directory. Read
    /// on the read-only connection, so it never waits behind a commit.
    fn generation(&self) -> Result<i64> {
        self.reader()
            .query_row(
                "SELECT generation FROM control_generation WHERE id = 1",
                [],
                |r| r.get(0),
            )
            .map_err(db_err("reading the control generation"))
    }

    fn deployments(&self) -> Result<Vec<DeploymentRow>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!("{DEPLOYMENT_SELECT} ORDER BY plugin"))
            .map_err(db_err("listing deployments"))?;
        let rows = stmt
            .query_map([], deployment_from_row)
            .map_err(db_err("listing deployments"))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db_err("listing deployments"))
    }

    fn version(&self, id: i64) -> Result<VersionRow> {
        version(&self.conn(), id)
    }

    /// Versions of `plugin`, newest first.
    fn versions_of(&self, plugin: &str) -> Result<Vec<VersionRow>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "{VERSION_SELECT} WHERE plugin = ?1 ORDER BY id DESC"
            ))
            .map_err(db_err("listing versions"))?;
        let rows = stmt
            .query_map([plugin], version_from_row)
            .map_err(db_err("listing versions"))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db_err("listing versions"))
    }

    fn history(&self, plugin: &str) -> Result<Vec<HistoryRow>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT id, plugin, at, action, actor, version_id, stable_id, canary_id, canary_weight, detail, shadow_id, shadow_share, rollout_step
                 FROM history WHERE plugin = ?1 ORDER BY id",
            )
            .map_err(db_err("reading history"))?;
        let rows = stmt
            .query_map([plugin], |r| {
                let detail: String = r.get(9)?;
                Ok(HistoryRow {
                    id: r.get(0)?,
                    plugin: r.get(1)?,
                    at: r.get(2)?,
                    action: r.get(3)?,
                    actor: r.get(4)?,
                    version_id: r.get(5)?,
                    stable_id: r.get(6)?,
                    canary_id: r.get(7)?,
                    canary_weight: r.get(8)?,
                    shadow_id: r.get(10)?,
                    shadow_share: r.get(11)?,
                    rollout_step: r.get(12)?,
                    detail: serde_json::from_str(&detail)
                        .unwrap_or(serde_json::Value::String(detail)),
                })
            })
            .map_err(db_err("reading history"))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db_err("reading history"))
    }

    /// Persisted outcome counts and latency histogram of a version.
    fn stats(&self, version_id: i64) -> Result<(OutcomeCounts, Option<Vec<u8>>)> {
        let conn = self.conn();
        let row: Option<(String, Option<Vec<u8>>)> = conn
            .query_row(
                "SELECT outcomes, histogram FROM version_stats WHERE version_id = ?1",
                [version_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(db_err("reading stats"))?;
        Ok(match row {
            Some((outcomes, hist)) => (serde_json::from_str(&outcomes).unwrap_or_default(), hist),
            None => (Default::default(), None),
        })
    }

    /// Replace a version's persisted stats.
    fn put_stats(&self, version_id: i64, outcomes: &OutcomeCounts, histogram: &[u8]) -> Result<()> {
        let outcomes = serde_json::to_string(outcomes).unwrap_or_else(|_| "{}".into());
        let histogram = histogram.to_vec();
        self.write("stats", move |tx| {
            tx.prepare_cached(
                "INSERT INTO version_stats (version_id, outcomes, histogram, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(version_id) DO UPDATE SET outcomes = ?2, histogram = ?3, updated_at = ?4",
            )
            .and_then(|mut s| s.execute(params![version_id, outcomes, histogram, now()]))
            .map_err(db_err("writing stats"))?;
            Ok(())
        })
    }

    /// Audit entries after `after_seq`, and at or after `since` (RFC 3339
    /// or a duration ago such as `1h`), oldest first. Reads the last
    /// committed state without waiting behind a commit.
    fn audit_list(&self, after_seq: i64, since: Option<&str>) -> Result<Vec<audit::Entry>> {
        Ok(audit::list(&self.reader(), after_seq, since)?)
    }

    fn audit_page(&self, page: &crate::audit::Page<'_>) -> Result<Vec<audit::Entry>> {
        Ok(audit::page(&self.reader(), page)?)
    }

    /// Verify the whole chain and that it leads to the anchor file, when
    /// there is one.
    fn audit_verify(&self) -> Result<audit::Verification> {
        let anchor = self.read_anchor()?;
        Ok(audit::verify(&self.reader(), anchor.as_ref())?)
    }

    fn record_deploy(&self, version: &NewVersion<'_>, deploy: &Deploy<'_>) -> Result<i64> {
        self.transaction("deploy", |tx| {
            let vid = upsert_version(tx, version)?;
            let (serving, detail) = super::deployed(version, deploy, vid)?;
            record_change(
                tx,
                &Change {
                    plugin: version.plugin,
                    serving,
                    action: deploy.action,
                    actor: deploy.actor,
                    version_id: Some(vid),
                    digest: version.digest,
                    detail: &detail,
                    seen: deploy.seen,
                },
            )?;
            Ok(vid)
        })
    }

    fn record_change(&self, change: &Change<'_>) -> Result<()> {
        self.transaction(change.action, |tx| record_change(tx, change))
    }

    fn agreement(&self, live_id: i64, candidate_id: i64) -> Result<Agreement> {
        let counts: Option<String> = self
            .reader()
            .query_row(
                "SELECT counts FROM agreement WHERE live_id = ?1 AND candidate_id = ?2",
                [live_id, candidate_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err("reading an agreement"))?;
        Ok(counts
            .and_then(|c| serde_json::from_str(&c).ok())
            .unwrap_or_default())
    }

    fn put_agreement(&self, live_id: i64, candidate_id: i64, agreement: &Agreement) -> Result<()> {
        let counts = serde_json::to_string(agreement).unwrap_or_else(|_| "{}".into());
        self.write("agreement", move |tx| {
            tx.prepare_cached(
                "INSERT INTO agreement (live_id, candidate_id, counts, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(live_id, candidate_id) DO UPDATE SET counts = ?3, updated_at = ?4",
            )
            .and_then(|mut s| s.execute(params![live_id, candidate_id, counts, now()]))
            .map_err(db_err("writing an agreement"))?;
            Ok(())
        })
    }

    fn record_event(
        &self,
        entry: NewEntry<'_>,
        decisions: Vec<DecisionRecord>,
        recording: Option<NewRecording>,
        processed: Option<Processed>,
    ) -> StoreFuture<'_, ()> {
        let append = append_job(entry);
        Box::pin(self.write_async("event", move |tx| {
            if let Some(p) = &processed {
                sources::mark(tx, p)?;
            }
            labels::insert_decisions(tx, &decisions)?;
            if let Some(r) = &recording {
                recordings::insert(tx, r)?;
            }
            append(tx)
        }))
    }

    fn processed(&self, source: &str, event_id: &str) -> Result<bool> {
        sources::processed(&self.reader(), source, event_id)
    }

    fn forget_processed(&self, source: &str, before: &str) -> Result<u64> {
        let (source, before) = (source.to_owned(), before.to_owned());
        self.write("forgetting processed events", move |tx| {
            tx.execute(
                "DELETE FROM processed_events WHERE source = ?1 AND at < ?2",
                rusqlite::params![source, before],
            )
            .map(|n| n as u64)
            .map_err(db_err("forgetting processed events"))
        })
    }

    fn dead_letter(&self, letter: &NewDeadLetter<'_>) -> Result<i64> {
        sources::dead_letter(self, letter)
    }

    fn dead_letters(&self, source: Option<&str>) -> Result<Vec<DeadLetter>> {
        sources::dead_letters(&self.reader(), source)
    }

    fn drift(&self, version_id: i64) -> Result<(Option<String>, Option<String>)> {
        Ok(self
            .reader()
            .query_row(
                "SELECT reference, judged FROM drift WHERE version_id = ?1",
                [version_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(db_err("reading drift"))?
            .unwrap_or((None, None)))
    }

    fn put_drift_judged(&self, version_id: i64, judged: &str) -> Result<()> {
        self.transaction("keeping a drift judgement", |tx| {
            tx.execute(
                "INSERT INTO drift (version_id, judged, at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(version_id) DO UPDATE SET judged = ?2, at = ?3",
                params![version_id, judged, now()],
            )
            .map(|_| ())
            .map_err(db_err("keeping a drift judgement"))
        })
    }

    fn put_drift_reference(
        &self,
        version_id: i64,
        reference: &str,
        entry: Option<NewEntry<'_>>,
    ) -> Result<()> {
        self.transaction("keeping a drift reference", |tx| {
            tx.execute(
                "INSERT INTO drift (version_id, reference, at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(version_id) DO UPDATE SET reference = ?2, at = ?3",
                params![version_id, reference, now()],
            )
            .map_err(db_err("keeping a drift reference"))?;
            if let Some(entry) = entry {
                audit::append(tx, entry)?;
            }
            Ok(())
        })
    }

    fn recorded_calls(&self, filter: &RecordingFilter<'_>) -> Result<Vec<StoredCall>> {
        recordings::calls(&self.reader(), filter)
    }

    fn recordings(&self, filter: &RecordingFilter<'_>) -> Result<Vec<Recording>> {
        recordings::recordings(&self.reader(), filter)
    }

    fn prune_recordings(
        &self,
        before: Option<&str>,
        max_rows: Option<u64>,
        actor: &str,
    ) -> Result<crate::recording::Pruned> {
        recordings::prune(self, before, max_rows, actor)
    }

    fn add_label(&self, label: &NewLabel<'_>) -> Result<Label> {
        labels::add(self, label)
    }

    fn decision(&self, event_id: &str, action_index: usize) -> Result<Option<DecisionRecord>> {
        labels::decision(&self.reader(), event_id, action_index)
    }

    fn labels(&self, event_id: &str) -> Result<Vec<Label>> {
        labels::of_event(&self.reader(), event_id)
    }

    fn labeled(&self, since: Option<&str>) -> Result<Vec<(DecisionRecord, Label)>> {
        labels::labeled(&self.reader(), since)
    }

    fn enqueue_review(&self, review: &NewReview<'_>) -> Result<i64> {
        reviews::enqueue(self, review)
    }

    fn reviews(&self, status: Option<ReviewStatus>) -> Result<Vec<Review>> {
        reviews::list(&self.conn(), status)
    }

    fn review(&self, id: i64) -> Result<Option<Review>> {
        reviews::get(&self.conn(), id)
    }

    fn pending_reviews(&self) -> Result<u64> {
        reviews::pending(&self.conn())
    }

    fn decide_review(&self, decision: &Decision<'_>) -> Result<Review> {
        reviews::decide(self, decision)
    }

    fn record_review_result(&self, outcome: &ReviewResult<'_>) -> Result<()> {
        reviews::record_result(self, outcome)
    }

    fn create_token(&self, token: &Token, secret_sha256: &str, actor: &str) -> Result<()> {
        tokens::create(self, token, secret_sha256, actor)
    }

    fn tokens(&self) -> Result<Vec<Token>> {
        tokens::list(&self.conn())
    }

    fn token(&self, id: &str) -> Result<Option<(Token, String)>> {
        tokens::get(&self.reader(), id)
    }

    fn revoke_token(&self, id: &str, actor: &str) -> Result<()> {
        tokens::revoke(self, id, actor)
    }

    fn open_session(&self, session: &super::ConsoleSession, entry: NewEntry<'_>) -> Result<()> {
        sessions::open(self, session, entry)
    }

    fn session(&self, id_sha256: &str) -> Result<Option<super::ConsoleSession>> {
        sessions::get(&self.reader(), id_sha256)
    }

    fn close_session(&self, id_sha256: &str, entry: Option<NewEntry<'_>>) -> Result<()> {
        sessions::close(self, id_sha256, entry)
    }

    fn close_sessions_of(&self, token_id: &str) -> Result<()> {
        sessions::close_token(self, token_id)
    }

    fn kv(self: Arc<Self>) -> Arc<dyn KvStore> {
        Arc::new(SqliteKv::new(self))
    }
}

const VERSION_SELECT: &str = "SELECT id, plugin, version, digest, manifest, manifest_origin, manifest_base, created_at FROM versions";

fn version_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<VersionRow> {
    Ok(VersionRow {
        id: r.get(0)?,
        plugin: r.get(1)?,
        version: r.get(2)?,
        digest: r.get(3)?,
        manifest: r.get(4)?,
        manifest_origin: r.get(5)?,
        manifest_base: r.get(6)?,
        created_at: r.get(7)?,
    })
}

const DEPLOYMENT_SELECT: &str = "SELECT plugin, stable_id, canary_id, canary_weight, updated_at, shadow_id, shadow_share, rollout_step, step_since FROM deployments";

fn deployment_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeploymentRow> {
    Ok(DeploymentRow {
        plugin: r.get(0)?,
        stable_id: r.get(1)?,
        canary_id: r.get(2)?,
        canary_weight: r.get(3)?,
        updated_at: r.get(4)?,
        shadow_id: r.get(5)?,
        shadow_share: r.get(6)?,
        rollout_step: r.get(7)?,
        step_since: r.get(8)?,
    })
}

fn version(conn: &Connection, id: i64) -> Result<VersionRow> {
    conn.query_row(
        &format!("{VERSION_SELECT} WHERE id = ?1"),
        [id],
        version_from_row,
    )
    .map_err(db_err("reading a version"))
}

fn deployment(conn: &Connection, plugin: &str) -> Result<Option<DeploymentRow>> {
    conn.query_row(
        &format!("{DEPLOYMENT_SELECT} WHERE plugin = ?1"),
        [plugin],
        deployment_from_row,
    )
    .optional()
    .map_err(db_err("reading a deployment"))
}

/// The id of the version row for this exact (plugin, digest, manifest),
/// inserting it if new.
fn upsert_version(tx: &Transaction<'_>, v: &NewVersion<'_>) -> Result<i64> {
    let existing: Option<i64> = tx
        .query_row(
            "SELECT id FROM versions WHERE plugin = ?1 AND digest = ?2 AND manifest = ?3",
            params![v.plugin, v.digest, v.manifest],
            |r| r.get(0),
        )
        .optional()
        .map_err(db_err("finding a version"))?;
    if let Some(id) = existing {
        return Ok(id);
    }
    tx.execute(
        "INSERT INTO versions (plugin, version, digest, manifest, manifest_origin, manifest_base, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            v.plugin,
            v.version,
            v.digest,
            v.manifest,
            v.manifest_origin,
            v.manifest_base,
            now()
        ],
    )
    .map_err(db_err("recording a version"))?;
    Ok(tx.last_insert_rowid())
}

/// Write a deployment change and its audit entry (same actor, action,
/// subject and detail) inside the caller's transaction.
fn record_change(tx: &Transaction<'_>, change: &Change<'_>) -> Result<()> {
    set_deployment(tx, change)?;
    audit::append(
        tx,
        NewEntry {
            actor: change.actor,
            action: change.action,
            subject: change.plugin,
            digest: Some(change.digest),
            detail: change.detail.clone(),
        },
    )?;
    Ok(())
}

/// Set what serves a plugin and record the change in history.
fn set_deployment(tx: &Transaction<'_>, c: &Change<'_>) -> Result<()> {
    let Change {
        plugin,
        serving,
        action,
        actor,
        version_id,
        detail,
        seen,
        ..
    } = *c;
    let current = deployment(tx, plugin)?;
    if current.as_ref().map(|d| d.serving()) != seen {
        return Err(stale(plugin));
    }
    let at = now();
    let step_since = super::step_since(current.as_ref(), &serving, &at);
    let stable_id = serving.stable_id;
    let (canary_id, weight) = match serving.canary {
        Some((id, w)) => (Some(id), w),
        None => (None, 0),
    };
    let (shadow_id, share) = match serving.shadow {
        Some((id, s)) => (Some(id), s),
        None => (None, 0),
    };
    tx.execute(
        "INSERT INTO deployments (plugin, stable_id, canary_id, canary_weight, updated_at, shadow_id, shadow_share, rollout_step, step_since) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT(plugin) DO UPDATE SET stable_id = ?2, canary_id = ?3, canary_weight = ?4, updated_at = ?5, shadow_id = ?6, shadow_share = ?7, rollout_step = ?8, step_since = ?9",
        params![plugin, stable_id, canary_id, weight, at, shadow_id, share, serving.step, step_since],
    )
    .map_err(db_err("updating a deployment"))?;
    tx.execute(
        "INSERT INTO history (plugin, at, action, actor, version_id, stable_id, canary_id, canary_weight, detail, shadow_id, shadow_share, rollout_step)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![plugin, at, action, actor, version_id, stable_id, canary_id, weight, detail.to_string(), shadow_id, share, serving.step],
    )
    .map_err(db_err("recording history"))?;
    tx.prepare_cached("UPDATE control_generation SET generation = generation + 1 WHERE id = 1")
        .and_then(|mut st| st.execute([]))
        .map_err(db_err("advancing the control generation"))?;
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let current: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(db_err("reading the schema version"))?;
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(Error::store(
            "opening the data directory",
            format!(
                "the database has schema version {current}, newer than this evos knows ({known}); use a newer evos"
            ),
        ));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction().map_err(db_err("starting a migration"))?;
        tx.execute_batch(sql).map_err(db_err("migrating"))?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(db_err("recording the schema version"))?;
        tx.commit().map_err(db_err("committing a migration"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capability::kv::{KvQuota, KvStoreError};
    use crate::store::conformance;

    #[test]
    fn passes_the_conformance_checks() {
        let base = std::env::temp_dir().join(format!("evos-conformance-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let count = std::sync::atomic::AtomicUsize::new(0);
        let fresh = || -> Arc<dyn StateStore> {
            let n = count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Arc::new(SqliteStore::open(base.join(n.to_string())).unwrap())
        };
        let result = conformance::run(&fresh);
        let _ = std::fs::remove_dir_all(&base);
        assert_eq!(result, Ok(()));
        assert_eq!(count.into_inner(), conformance::CHECKS.len());
    }

    fn keys(max_keys: u64) -> KvQuota {
        KvQuota {
            max_keys,
            max_total_bytes: u64::MAX,
        }
    }

    fn temp_store(name: &str) -> (PathBuf, Arc<SqliteStore>) {
        let dir = std::env::temp_dir().join(format!("evos-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Arc::new(SqliteStore::open(&dir).unwrap());
        (dir, store)
    }

    fn entry(i: usize) -> NewEntry<'static> {
        NewEntry {
            actor: "test",
            action: "write",
            subject: "group",
            digest: None,
            detail: serde_json::json!({ "i": i }),
        }
    }

    #[test]
    fn concurrent_writes_share_commits_and_keep_the_chain_anchored() {
        let (dir, store) = temp_store("group");
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..25 {
                        store.audit(entry(t * 100 + i)).unwrap();
                        let kv = SqliteKv::new(store.clone());
                        kv.set("ns", &format!("k{t}-{i}"), b"v", keys(10_000))
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let conn = store.conn();
        let count: i64 = conn
            .query_row("SELECT COUNT(*) FROM kv", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 200);
        let anchor = audit::read_anchor(&store.anchor_path()).unwrap().unwrap();
        let v = audit::verify(&conn, Some(&anchor)).unwrap();
        assert!(v.intact && v.note.is_none(), "{v:?}");
        assert_eq!(v.entries, 200);
        assert_eq!(
            anchor.pending, 0,
            "the anchor names the head after the group"
        );
        drop(conn);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn kv_usage_follows_every_write() {
        let (dir, store) = temp_store("usage");
        let kv = SqliteKv::new(store.clone());
        kv.set("a", "k1", b"12345", keys(10)).unwrap();
        kv.set("a", "k2", b"1", keys(10)).unwrap();
        kv.set("a", "k1", b"123", keys(10)).unwrap(); // replace: no new key
        kv.set("b", "k", b"xy", keys(10)).unwrap();
        assert!(kv.delete("a", "k2").unwrap());
        assert!(!kv.delete("a", "k2").unwrap());
        let conn = store.conn();
        let kept: Vec<(String, i64, i64)> = conn
            .prepare("SELECT namespace, keys, bytes FROM kv_usage ORDER BY namespace")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        // a: "k1" + "123"; b: "k" + "xy".
        assert_eq!(kept, vec![("a".into(), 1, 5), ("b".into(), 1, 3)]);
        drop(conn);
        // Total bytes count keys and values, replacing counts the difference.
        let small = KvQuota {
            max_keys: 100,
            max_total_bytes: 8,
        };
        kv.set("c", "ab", b"123456", small).unwrap(); // 8 bytes: at the limit
        kv.set("c", "ab", b"654321", small).unwrap(); // replacing: still 8
        let err = kv.set("c", "x", b"", small).unwrap_err(); // 9 bytes
        assert!(err.to_string().contains("max-total-bytes"), "{err}");
        assert_eq!(kv.get("c", "x").unwrap(), None);
        // The quota counts from the kept usage.
        kv.set("b", "k2", b"", keys(2)).unwrap();
        assert!(matches!(
            kv.set("b", "k3", b"", keys(2)),
            Err(KvStoreError::Quota(_))
        ));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_failing_write_rolls_back_alone() {
        let (dir, store) = temp_store("rollback");
        let kv = SqliteKv::new(store.clone());
        kv.set("ns", "a", b"1", keys(1)).unwrap();
        // A second key exceeds max-keys = 1: refused as a quota, not stored.
        assert!(matches!(
            kv.set("ns", "b", b"2", keys(1)),
            Err(KvStoreError::Quota(_))
        ));
        let failed: Result<()> = store.write("test", |tx| {
            tx.execute(
                "INSERT INTO kv (namespace, key, value) VALUES ('ns', 'c', x'00')",
                [],
            )
            .map_err(db_err("writing"))?;
            Err(Error::Refused("changed its mind".into()))
        });
        assert!(failed.is_err());
        assert_eq!(kv.get("ns", "a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(kv.get("ns", "b").unwrap(), None);
        assert_eq!(
            kv.get("ns", "c").unwrap(),
            None,
            "the failed write left nothing"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
