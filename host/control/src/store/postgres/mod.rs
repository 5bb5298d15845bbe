//! The PostgreSQL backend of the storage boundary: the state several evos
//! nodes share.
//!
//! The store's methods are synchronous, as the SQLite backend's are. A
//! [`PgStore`] runs its connection pool (deadpool-postgres over
//! tokio-postgres) on a thread of its own with its own single-threaded
//! tokio runtime; a method sends its query there and waits for the answer.
//! So it may be called from any thread, inside another runtime or not, and
//! dropping the store ends the thread without dropping a runtime inside an
//! async context.
//!
//! What several writers need, and how each is kept:
//! - **One audit chain.** Every appending transaction locks the chain's
//!   head row (`audit_head`) until it commits, so entries of all nodes form
//!   one sequence. Each node keeps an anchor of the head it committed in
//!   its own directory, outside the database; verification accepts entries
//!   other nodes appended after it.
//! - **Group commit.** Audit entries, events and kv writes that arrive
//!   together share one transaction (each in a savepoint), as in the
//!   SQLite backend; the locks a group needs are taken first, in the order
//!   `ops` documents, and a deadlock the server reports is retried.
//! - **Counts per node.** Call statistics and shadow comparisons are kept
//!   in one row per (version, node): a node writes only its own row, and
//!   reads sum every node's.
//! - **Deployments.** A change locks the generation row, compares the
//!   deployment with what it was decided on, and announces the new
//!   generation with `pg_notify`; nodes listening on a connection of their
//!   own pick it up at once ([`StateStore::changes`]), and poll as well.
//! - **Reviews.** A decision moves the row out of `pending` in one
//!   `UPDATE … WHERE status = 'pending'`, so exactly one of two nodes
//!   deciding at once succeeds; an approval leases the execution to the
//!   deciding node.
//! - **kv quotas.** A namespace's usage row is locked with each write.
//! - **Blobs** live in the database, so every node reads what any node
//!   uploaded.
//!
//! The schema (`migrations/postgres/*.sql`) is applied under a session
//! advisory lock, each migration in its own transaction with its version,
//! so nodes starting together apply each migration exactly once and a node
//! never sees half of one.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, mpsc};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use evos_core::sync::lock;
use sha2::{Digest, Sha256};
use tokio_postgres::NoTls;

use super::{
    Agreement, Change, Decision, DecisionRecord, Deploy, DeploymentRow, HistoryRow, Label,
    NewLabel, NewRecording, NewReview, NewVersion, Recording, RecordingFilter, Review,
    ReviewResult, ReviewStatus, StateStore, StoreFuture, StoredCall, Token, VersionRow, now,
};
use crate::audit::{self, Anchor, AuditError, NewEntry};
use crate::capability::kv::{KvFuture, KvQuota, KvStore, KvStoreError};
use crate::rollout::OutcomeCounts;
use crate::{Error, Result};

mod ops;

use ops::db;

/// Migrations in order; the schema's version is the number applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/postgres/0001_schema.sql"),
    include_str!("../../../migrations/postgres/0002_audit_subject.sql"),
    include_str!("../../../migrations/postgres/0003_console_sessions.sql"),
];

/// Key of the advisory lock migrations run under ("evos" in ASCII).
const MIGRATION_LOCK: i64 = 0x6576_6f73;

/// Connections in the pool.
const POOL_SIZE: usize = 16;

/// The channel deployment changes are announced on.
pub(crate) const CHANNEL: &str = "evos_generation";

/// Most writes committed as one group.
const GROUP_MAX: usize = 512;

/// Times a group is tried again after the server broke a deadlock or a
/// serialization conflict.
const GROUP_RETRIES: usize = 5;

type Job = Box<dyn FnOnce(Pool) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// A write that joins a group commit.
enum Write {
    Audit(OwnedEntry),
    Event {
        entry: OwnedEntry,
        decisions: Vec<DecisionRecord>,
        recording: Option<Box<NewRecording>>,
        processed: Option<super::Processed>,
    },
    KvSet {
        ns: String,
        key: String,
        value: Vec<u8>,
        quota: KvQuota,
    },
    KvDelete {
        ns: String,
        key: String,
    },
}

/// What a grouped write did.
enum Written {
    Done,
    Deleted(bool),
    /// A kv quota refused it (nothing written); why.
    Refused(String),
}

type Reply = Box<dyn FnOnce(Result<Written>) + Send>;

struct GroupJob {
    write: Write,
    reply: Reply,
}

/// An audit entry owned, to cross to the store's thread.
#[derive(Clone)]
struct OwnedEntry {
    actor: String,
    action: String,
    subject: String,
    digest: Option<String>,
    detail: serde_json::Value,
}

impl OwnedEntry {
    fn new(e: &NewEntry<'_>) -> OwnedEntry {
        OwnedEntry {
            actor: e.actor.to_owned(),
            action: e.action.to_owned(),
            subject: e.subject.to_owned(),
            digest: e.digest.map(str::to_owned),
            detail: e.detail.clone(),
        }
    }

    fn entry(&self) -> NewEntry<'_> {
        NewEntry {
            actor: &self.actor,
            action: &self.action,
            subject: &self.subject,
            digest: self.digest.as_deref(),
            detail: self.detail.clone(),
        }
    }
}

/// Counts this node read from the other nodes' rows when it loaded a
/// version: what it writes back is its total less these.
#[derive(Default)]
struct Baselines {
    stats: HashMap<i64, (OutcomeCounts, Vec<(u64, u64)>)>,
    agreement: HashMap<(i64, i64), Agreement>,
}

/// A connection to the shared state on PostgreSQL.
pub struct PgStore {
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
    group: tokio::sync::mpsc::UnboundedSender<GroupJob>,
    /// The URL without its password, for messages.
    shown: String,
    /// This node's directory: compile cache and audit anchor.
    dir: PathBuf,
    /// This node's name in per-node rows and review leases.
    node: String,
    /// The newest chain head this node anchored.
    anchored: Arc<Mutex<Option<Anchor>>>,
    baselines: Mutex<Baselines>,
    /// Advances with every announcement of a deployment change this node
    /// hears, and with every (re)connection of its listener.
    changes: tokio::sync::watch::Receiver<u64>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.shown)
            .field("node", &self.node)
            .finish()
    }
}

/// `url` with its password replaced, for logs and errors.
pub(crate) fn without_password(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split(':').next().unwrap_or("");
                format!("{scheme}://{user}:***@{host}")
            }
            None => url.to_string(),
        },
        None => "<unparsable URL>".to_string(),
    }
}

fn pg_err(shown: &str, doing: &str) -> impl Fn(tokio_postgres::Error) -> Error + use<> {
    let context = format!("{doing} on {shown}");
    move |e| Error::store(context.clone(), ops::describe(&e))
}

/// A name for this node: the host's name, the process and a counter, so
/// two stores never share per-node rows.
fn node_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "node".into());
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    format!(
        "{host}-{}-{:x}-{}",
        std::process::id(),
        started,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether the server gave up on a transaction to break a deadlock or a
/// serialization conflict, so trying it again may succeed.
fn retryable(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code().is_some_and(|c| {
        *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
    })
}

/// Run `$body` (which sees `$tx`, a transaction) on a pooled connection of
/// `$store`'s thread and commit; `$body` gives (result, chain head if it
/// appended), and the head is anchored once committed.
macro_rules! in_tx {
    ($store:expr, $label:expr, |$tx:ident| $body:expr) => {{
        let shown = $store.shown.clone();
        let committed = $store.run(move |pool| async move {
            let mut client = client(&pool, &shown).await?;
            let tx = client.transaction().await.map_err(db(concat!(
                "starting a transaction (",
                $label,
                ")"
            )))?;
            let result = {
                let $tx: &deadpool_postgres::Transaction<'_> = &tx;
                $body
            };
            let result = result?;
            tx.commit()
                .await
                .map_err(db(concat!("committing (", $label, ")")))?;
            Ok(result)
        });
        committed.and_then(|(value, head)| {
            $store.anchor(head)?;
            Ok(value)
        })
    }};
}

/// Run `$body` (which sees `$c`, a `&tokio_postgres::Client`) on a pooled
/// connection of `$store`'s thread.
macro_rules! read {
    ($store:expr, |$c:ident| $body:expr) => {{
        let shown = $store.shown.clone();
        $store.run(move |pool| async move {
            let object = client(&pool, &shown).await?;
            let $c: &tokio_postgres::Client = &object;
            $body
        })
    }};
}

impl PgStore {
    /// Connect to `url` (`postgres://user:password@host:port/database`),
    /// check that the server answers and bring the schema up to date.
    /// `dir` is this node's own directory (compile cache, audit anchor).
    pub fn connect(url: &str, dir: impl AsRef<Path>) -> Result<PgStore> {
        let dir = dir.as_ref().to_path_buf();
        super::sqlite::private_dirs(&dir).map_err(|e| Error::io(&dir, e))?;
        let shown = without_password(url);
        let config: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| {
            Error::Refused(format!(
                "{shown} is not a PostgreSQL URL ({e}); write postgres://user:password@host:5432/database"
            ))
        })?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let (jobs, mut queue) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let (group, grouped) = tokio::sync::mpsc::unbounded_channel::<GroupJob>();
        let (changed, changes) = tokio::sync::watch::channel(0u64);
        let (ready, started) = mpsc::sync_channel::<Result<Pool>>(1);
        let anchored: Arc<Mutex<Option<Anchor>>> = Arc::new(Mutex::new(
            audit::read_anchor(&dir.join("audit.anchor")).ok().flatten(),
        ));
        let thread_shown = shown.clone();
        let (group_anchor, anchor_path) = (anchored.clone(), dir.join("audit.anchor"));
        std::thread::Builder::new()
            .name("evos-postgres".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready.send(Err(Error::io("the PostgreSQL runtime", e)));
                        return;
                    }
                };
                rt.block_on(async move {
                    let pool = match Pool::builder(manager)
                        .max_size(POOL_SIZE)
                        .runtime(deadpool_postgres::Runtime::Tokio1)
                        .build()
                    {
                        Ok(pool) => pool,
                        Err(e) => {
                            let _ = ready.send(Err(Error::Refused(format!(
                                "cannot set up a connection pool for {thread_shown}: {e}"
                            ))));
                            return;
                        }
                    };
                    let _ = ready.send(Ok(pool.clone()));
                    tokio::spawn(commit_groups(
                        pool.clone(),
                        thread_shown.clone(),
                        grouped,
                        group_anchor,
                        anchor_path,
                    ));
                    tokio::spawn(listen(config, thread_shown, changed));
                    while let Some(job) = queue.recv().await {
                        tokio::spawn(job(pool.clone()));
                    }
                });
            })
            .map_err(|e| Error::io("starting the PostgreSQL thread", e))?;
        started
            .recv()
            .map_err(|_| Error::Refused("the PostgreSQL thread stopped while starting".into()))??;
        let store = PgStore {
            jobs,
            group,
            shown,
            dir,
            node: node_name(),
            anchored,
            baselines: Mutex::default(),
            changes,
        };
        store.migrate()?;
        store.anchor_joined()?;
        Ok(store)
    }

    /// A node without an anchor yet anchors the chain's head as it finds
    /// it, so entries cut off from then on are detected from this node too.
    fn anchor_joined(&self) -> Result<()> {
        if lock(&self.anchored).is_some() {
            return Ok(());
        }
        let head = read!(self, |c| {
            let r = c
                .query_one("SELECT seq, hash FROM audit_head WHERE id = 1", &[])
                .await
                .map_err(db("reading the head of the audit chain"))?;
            Ok((r.get::<_, i64>(0), r.get::<_, String>(1)))
        })?;
        self.anchor((head.0 > 0).then_some(Anchor {
            seq: head.0,
            hash: head.1,
            pending: 0,
        }))
    }

    /// This node's name in the rows it owns.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Run `f` with the pool on the store's thread and wait for its answer.
    fn run<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Pool) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let (answer, wait) = mpsc::sync_channel::<Result<T>>(1);
        let job: Job = Box::new(move |pool| {
            Box::pin(async move {
                let _ = answer.send(f(pool).await);
            })
        });
        self.jobs
            .send(job)
            .map_err(|_| Error::Refused(format!("the connection to {} is closed", self.shown)))?;
        wait.recv().map_err(|_| {
            Error::Refused(format!(
                "the connection to {} stopped before answering",
                self.shown
            ))
        })?
    }

    /// Keep `head` as this node's anchor when it is newer than the last.
    fn anchor(&self, head: Option<Anchor>) -> Result<()> {
        keep_anchor(&self.anchored, &self.dir.join("audit.anchor"), head)
    }

    /// Queue a write for the next group commit and wait for it.
    fn grouped(&self, write: Write) -> Result<Written> {
        let (answer, wait) = mpsc::sync_channel::<Result<Written>>(1);
        self.group
            .send(GroupJob {
                write,
                reply: Box::new(move |r| {
                    let _ = answer.send(r);
                }),
            })
            .map_err(|_| Error::Refused(format!("the connection to {} is closed", self.shown)))?;
        wait.recv().unwrap_or_else(|_| {
            Err(Error::Refused(format!(
                "the connection to {} stopped before committing",
                self.shown
            )))
        })
    }

    /// [`PgStore::grouped`] for async code: waits without holding a thread.
    fn grouped_async(
        &self,
        write: Write,
    ) -> impl Future<Output = Result<Written>> + Send + 'static {
        let (answer, wait) = tokio::sync::oneshot::channel::<Result<Written>>();
        let sent = self.group.send(GroupJob {
            write,
            reply: Box::new(move |r| {
                let _ = answer.send(r);
            }),
        });
        let shown = self.shown.clone();
        async move {
            if sent.is_err() {
                return Err(Error::Refused(format!(
                    "the connection to {shown} is closed"
                )));
            }
            wait.await.unwrap_or_else(|_| {
                Err(Error::Refused(format!(
                    "the connection to {shown} stopped before committing"
                )))
            })
        }
    }

    /// Apply the migrations this database lacks, under the advisory lock.
    fn migrate(&self) -> Result<()> {
        let shown = self.shown.clone();
        self.run(move |pool| async move {
            let mut client = client(&pool, &shown).await?;
            let err = |doing: &str| pg_err(&shown, doing);
            client
                .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
                .await
                .map_err(err("taking the migration lock"))?;
            let applied = async {
                client
                    .batch_execute(
                        "CREATE TABLE IF NOT EXISTS evos_schema (version INTEGER NOT NULL)",
                    )
                    .await
                    .map_err(err("reading the schema version"))?;
                let version: i32 = client
                    .query_opt("SELECT version FROM evos_schema", &[])
                    .await
                    .map_err(err("reading the schema version"))?
                    .map_or(0, |r| r.get(0));
                let known = MIGRATIONS.len() as i32;
                if version > known {
                    return Err(Error::Refused(format!(
                        "{shown} has schema version {version}, newer than this evos knows ({known}); upgrade evos"
                    )));
                }
                for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
                    let next = i as i32 + 1;
                    let tx = client
                        .transaction()
                        .await
                        .map_err(err("starting a migration"))?;
                    tx.batch_execute(sql)
                        .await
                        .map_err(err(&format!("applying migration {next}")))?;
                    tx.execute("DELETE FROM evos_schema", &[])
                        .await
                        .map_err(err("recording the schema version"))?;
                    tx.execute("INSERT INTO evos_schema (version) VALUES ($1)", &[&next])
                        .await
                        .map_err(err("recording the schema version"))?;
                    tx.commit()
                        .await
                        .map_err(err(&format!("committing migration {next}")))?;
                }
                Ok(())
            }
            .await;
            // Released whatever happened; a lost connection releases it too.
            let _ = client
                .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
                .await;
            applied
        })
    }

    /// The schema version of the database (the migrations applied).
    pub fn schema_version(&self) -> Result<i64> {
        read!(self, |c| {
            let row = c
                .query_one("SELECT version FROM evos_schema", &[])
                .await
                .map_err(db("reading the schema version"))?;
            Ok(i64::from(row.get::<_, i32>(0)))
        })
    }

    /// The tables of the schema, sorted (for checks and `evos status`).
    pub fn tables(&self) -> Result<Vec<String>> {
        read!(self, |c| {
            let rows = c
                .query(
                    "SELECT table_name::text FROM information_schema.tables
                     WHERE table_schema = current_schema() ORDER BY table_name",
                    &[],
                )
                .await
                .map_err(db("listing tables"))?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }
}

/// A pooled connection; the error says what to check.
async fn client(pool: &Pool, shown: &str) -> Result<Object> {
    pool.get().await.map_err(|e| {
        Error::Refused(format!(
            "cannot connect to {shown}: {e}; check the URL, that the server runs and that it accepts this user"
        ))
    })
}

/// Write `head` to the anchor file when it is newer than what `kept` says
/// was anchored.
fn keep_anchor(kept: &Mutex<Option<Anchor>>, path: &Path, head: Option<Anchor>) -> Result<()> {
    let Some(head) = head else {
        return Ok(());
    };
    let mut kept = lock(kept);
    if kept.as_ref().is_some_and(|k| k.seq >= head.seq) {
        return Ok(());
    }
    audit::write_anchor(path, &head)?;
    *kept = Some(head);
    Ok(())
}

/// The group-commit task: takes every write waiting, commits them as one
/// transaction, answers each.
async fn commit_groups(
    pool: Pool,
    shown: String,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<GroupJob>,
    anchored: Arc<Mutex<Option<Anchor>>>,
    anchor_path: PathBuf,
) {
    while let Some(first) = queue.recv().await {
        let mut group = vec![first];
        while group.len() < GROUP_MAX {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let (writes, replies): (Vec<Write>, Vec<Reply>) =
            group.into_iter().map(|j| (j.write, j.reply)).unzip();
        let mut attempt = 0;
        let outcome = loop {
            match commit_group(&pool, &shown, &writes).await {
                Err(GroupError::Retry(_)) if attempt < GROUP_RETRIES => attempt += 1,
                Err(GroupError::Retry(e)) => break Err(ops::describe(&e)),
                Err(GroupError::Failed(why)) => break Err(why),
                Ok(done) => break Ok(done),
            }
        };
        match outcome {
            Ok((results, head)) => {
                let anchored = keep_anchor(&anchored, &anchor_path, head);
                for (reply, result) in replies.into_iter().zip(results) {
                    reply(match &anchored {
                        Ok(()) => result,
                        Err(e) => Err(Error::store("anchoring the audit chain", e.to_string())),
                    });
                }
            }
            Err(why) => {
                for reply in replies {
                    reply(Err(Error::store("committing on PostgreSQL", why.clone())));
                }
            }
        }
    }
}

enum GroupError {
    Retry(tokio_postgres::Error),
    Failed(String),
}

fn group_err(e: tokio_postgres::Error) -> GroupError {
    if retryable(&e) {
        GroupError::Retry(e)
    } else {
        GroupError::Failed(ops::describe(&e))
    }
}

/// One try at committing `writes` together: the chain head locked first
/// when any of them appends, then the kv namespaces they touch in order,
/// then each write in a savepoint of its own, so one that fails rolls
/// back alone.
async fn commit_group(
    pool: &Pool,
    shown: &str,
    writes: &[Write],
) -> std::result::Result<(Vec<Result<Written>>, Option<Anchor>), GroupError> {
    let mut c = client(pool, shown)
        .await
        .map_err(|e| GroupError::Failed(e.to_string()))?;
    let tx = c.transaction().await.map_err(group_err)?;
    // The chain's head: locked first, then kept here as the group appends.
    let mut head: Option<Option<Anchor>> = None;
    if writes
        .iter()
        .any(|w| matches!(w, Write::Audit(_) | Write::Event { .. }))
    {
        let row = tx
            .query_one(
                "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE",
                &[],
            )
            .await
            .map_err(group_err)?;
        let (seq, hash): (i64, String) = (row.get(0), row.get(1));
        head = Some((seq > 0).then_some(Anchor {
            seq,
            hash,
            pending: 0,
        }));
    }
    let locked = head.clone();
    let mut namespaces: Vec<&str> = writes
        .iter()
        .filter_map(|w| match w {
            Write::KvSet { ns, .. } | Write::KvDelete { ns, .. } => Some(ns.as_str()),
            _ => None,
        })
        .collect();
    namespaces.sort_unstable();
    namespaces.dedup();
    for ns in namespaces {
        tx.execute(
            "INSERT INTO kv_usage (namespace, keys, bytes) VALUES ($1, 0, 0) ON CONFLICT (namespace) DO NOTHING",
            &[&ns],
        )
        .await
        .map_err(group_err)?;
        tx.execute(
            "SELECT 1 FROM kv_usage WHERE namespace = $1 FOR UPDATE",
            &[&ns],
        )
        .await
        .map_err(group_err)?;
    }
    // Each write in a savepoint of its own; releasing one and opening the
    // next is one round trip.
    let mut results = Vec::with_capacity(writes.len());
    tx.batch_execute("SAVEPOINT grouped")
        .await
        .map_err(group_err)?;
    for (i, write) in writes.iter().enumerate() {
        let before = head.clone();
        let result = run_write(&tx, &mut head, write).await;
        let next = if i + 1 < writes.len() {
            " SAVEPOINT grouped;"
        } else {
            ""
        };
        match result {
            Ok(written) if !matches!(written, Written::Refused(_)) => {
                tx.batch_execute(&format!("RELEASE SAVEPOINT grouped;{next}"))
                    .await
                    .map_err(group_err)?;
                results.push(Ok(written));
            }
            other => {
                tx.batch_execute(&format!(
                    "ROLLBACK TO SAVEPOINT grouped; RELEASE SAVEPOINT grouped;{next}"
                ))
                .await
                .map_err(group_err)?;
                head = before;
                results.push(other);
            }
        }
    }
    let appended = match (&head, &locked) {
        (Some(Some(now)), Some(was)) if was.as_ref().map(|w| w.seq) != Some(now.seq) => {
            Some(now.clone())
        }
        _ => None,
    };
    if let Some(now) = &appended {
        // The row is this transaction's since the group began.
        ops::write_head(&tx, now)
            .await
            .map_err(|e| GroupError::Failed(e.to_string()))?;
    }
    tx.commit().await.map_err(group_err)?;
    Ok((results, appended))
}

/// Run one grouped write in its savepoint; appends go after `head`, the
/// group's chain head.
async fn run_write(
    tx: &deadpool_postgres::Transaction<'_>,
    head: &mut Option<Option<Anchor>>,
    write: &Write,
) -> Result<Written> {
    match write {
        Write::Audit(entry) => {
            ops::append_at(tx, head, &entry.entry()).await?;
            Ok(Written::Done)
        }
        Write::Event {
            entry,
            decisions,
            recording,
            processed,
        } => {
            // Independent statements, sent together on the connection; the
            // first to fail says why (the savepoint undoes them all).
            let entry = entry.entry();
            let recorded = async {
                if let Some(p) = processed {
                    ops::mark_processed(tx, p).await?;
                }
                ops::insert_decisions(tx, decisions).await?;
                if let Some(r) = recording {
                    ops::insert_recording(tx, r).await?;
                }
                Ok::<_, Error>(())
            };
            let (recorded, appended) =
                futures_util::future::join(recorded, ops::append_at(tx, head, &entry)).await;
            match (recorded, appended) {
                (Ok(()), Ok(_)) => Ok(Written::Done),
                // A statement sent after the failing one only reports the
                // transaction aborted; the other error says why.
                (Err(e), Ok(_)) | (Ok(()), Err(e)) => Err(e),
                (Err(a), Err(b)) => Err(if a.to_string().contains("(25P02)") {
                    b
                } else {
                    a
                }),
            }
        }
        Write::KvSet {
            ns,
            key,
            value,
            quota,
        } => Ok(match ops::kv_set(tx, ns, key, value, *quota).await? {
            Ok(()) => Written::Done,
            Err(why) => Written::Refused(why),
        }),
        Write::KvDelete { ns, key } => Ok(Written::Deleted(ops::kv_delete(tx, ns, key).await?)),
    }
}

/// Listen for deployment changes on a connection of its own, advancing
/// `changed` with each announcement and with each (re)connection (a full
/// resync: announcements sent while disconnected are lost).
async fn listen(
    config: tokio_postgres::Config,
    shown: String,
    changed: tokio::sync::watch::Sender<u64>,
) {
    use futures_util::StreamExt;
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (notified, mut notifications) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(tokio_postgres::AsyncMessage::Notification(_)) => {
                                if notified.send(()).is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(_) => return,
                        }
                    }
                });
                if client
                    .batch_execute(&format!("LISTEN {CHANNEL}"))
                    .await
                    .is_ok()
                {
                    changed.send_modify(|n| *n += 1);
                    while notifications.recv().await.is_some() {
                        changed.send_modify(|n| *n += 1);
                    }
                }
                driver.abort();
                tracing::warn!(target: "evos::store", "the change listener on {shown} lost its connection; reconnecting");
            }
            Err(e) => {
                tracing::warn!(target: "evos::store", "cannot listen for changes on {shown}: {e}; retrying");
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// The audit table read a page at a time through the store's thread.
struct PgRows<'s>(&'s PgStore);

impl audit::ChainRows for PgRows<'_> {
    fn after(
        &mut self,
        after: i64,
        limit: usize,
    ) -> std::result::Result<Vec<audit::RowRead>, AuditError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = read!(self.0, |c| Ok(ops::audit_page(c, after, limit).await));
        flatten_audit(rows)
    }

    fn chained_onto(
        &mut self,
        prev_hash: &str,
    ) -> std::result::Result<Vec<audit::RowRead>, AuditError> {
        let prev_hash = prev_hash.to_owned();
        let rows = read!(self.0, |c| Ok(ops::audit_chained_onto(c, prev_hash).await));
        flatten_audit(rows)
    }
}

fn flatten_audit(
    rows: Result<std::result::Result<Vec<audit::RowRead>, AuditError>>,
) -> std::result::Result<Vec<audit::RowRead>, AuditError> {
    rows.map_err(|e| AuditError::Store {
        context: "reading the chain".into(),
        source: Box::new(e),
    })?
}

/// Whether `s` is a sha256 digest as blobs are named: 64 lowercase hex.
fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl StateStore for PgStore {
    fn dir(&self) -> &Path {
        &self.dir
    }

    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.changes.clone())
    }

    fn put_blob(&self, bytes: &[u8]) -> Result<String> {
        let digest = hex::encode(Sha256::digest(bytes));
        let (d, bytes) = (digest.clone(), bytes.to_vec());
        read!(self, |c| {
            c.execute(
                "INSERT INTO blobs (digest, bytes, created_at) VALUES ($1, $2, $3) ON CONFLICT (digest) DO NOTHING",
                &[&d, &bytes, &now()],
            )
            .await
            .map_err(db("storing a component"))?;
            Ok(())
        })?;
        Ok(digest)
    }

    fn get_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let d = digest.to_owned();
        let bytes: Option<Vec<u8>> = read!(self, |c| {
            Ok(
                c.query_opt("SELECT bytes FROM blobs WHERE digest = $1", &[&d])
                    .await
                    .map_err(db("reading a component"))?
                    .map(|r| r.get(0)),
            )
        })?;
        let bytes =
            bytes.ok_or_else(|| Error::NotFound(format!("no component stored as {digest}")))?;
        super::checked_blob(digest, bytes)
    }

    fn has_blob(&self, digest: &str) -> bool {
        if !is_digest(digest) {
            return false;
        }
        let d = digest.to_owned();
        read!(self, |c| {
            Ok(c.query_opt("SELECT 1 FROM blobs WHERE digest = $1", &[&d])
                .await
                .map_err(db("looking for a component"))?
                .is_some())
        })
        .unwrap_or(false)
    }

    fn deployment(&self, plugin: &str) -> Result<Option<DeploymentRow>> {
        let plugin = plugin.to_owned();
        read!(self, |c| ops::deployment(c, &plugin, false).await)
    }

    fn deployments(&self) -> Result<Vec<DeploymentRow>> {
        read!(self, |c| ops::deployments(c).await)
    }

    fn version(&self, id: i64) -> Result<VersionRow> {
        read!(self, |c| ops::version(c, id).await)
    }

    fn versions_of(&self, plugin: &str) -> Result<Vec<VersionRow>> {
        let plugin = plugin.to_owned();
        read!(self, |c| ops::versions_of(c, &plugin).await)
    }

    fn history(&self, plugin: &str) -> Result<Vec<HistoryRow>> {
        let plugin = plugin.to_owned();
        read!(self, |c| ops::history(c, &plugin).await)
    }

    fn generation(&self) -> Result<i64> {
        read!(self, |c| {
            Ok(c.query_one(
                "SELECT generation FROM control_generation WHERE id = 1",
                &[],
            )
            .await
            .map_err(db("reading the control generation"))?
            .get(0))
        })
    }

    fn record_deploy(&self, version: &NewVersion<'_>, deploy: &Deploy<'_>) -> Result<i64> {
        let v = OwnedVersion::new(version);
        let (action, actor, slot, step, detail, seen) = (
            deploy.action.to_owned(),
            deploy.actor.to_owned(),
            deploy.slot,
            deploy.step,
            deploy.detail.clone(),
            deploy.seen,
        );
        in_tx!(self, "deploy", |tx| {
            let version = v.borrow();
            let vid = ops::upsert_version(tx, &version).await?;
            let deploy = Deploy {
                action: &action,
                actor: &actor,
                slot,
                step,
                detail: &detail,
                seen,
            };
            let (serving, detail) = super::deployed(&version, &deploy, vid)?;
            let (_, head) = ops::record_change(
                tx,
                &Change {
                    plugin: version.plugin,
                    serving,
                    action: &action,
                    actor: &actor,
                    version_id: Some(vid),
                    digest: version.digest,
                    detail: &detail,
                    seen,
                },
            )
            .await?;
            Ok::<_, Error>((vid, Some(head)))
        })
    }

    fn record_change(&self, change: &Change<'_>) -> Result<()> {
        let (plugin, action, actor, digest, detail) = (
            change.plugin.to_owned(),
            change.action.to_owned(),
            change.actor.to_owned(),
            change.digest.to_owned(),
            change.detail.clone(),
        );
        let (serving, version_id, seen) = (change.serving, change.version_id, change.seen);
        in_tx!(self, "change", |tx| {
            let change = Change {
                plugin: &plugin,
                serving,
                action: &action,
                actor: &actor,
                version_id,
                digest: &digest,
                detail: &detail,
                seen,
            };
            let (_, head) = ops::record_change(tx, &change).await?;
            Ok::<_, Error>(((), Some(head)))
        })
    }

    /// The sum of every node's counts; what this node writes back later is
    /// its total less the other nodes' share read here.
    fn stats(&self, version_id: i64) -> Result<(OutcomeCounts, Option<Vec<u8>>)> {
        let node = self.node.clone();
        let (mine, others) = read!(self, |c| ops::stats_rows(c, version_id, &node).await)?;
        let mut outcomes = mine.0.clone();
        ops::add_counts(&mut outcomes, &others.0);
        let pairs = ops::add_pairs(&mine.1, &others.1);
        let any = !pairs.is_empty() || !outcomes.is_empty();
        lock(&self.baselines).stats.insert(version_id, others);
        Ok((
            outcomes,
            any.then(|| serde_json::to_vec(&pairs).unwrap_or_default()),
        ))
    }

    fn put_stats(&self, version_id: i64, outcomes: &OutcomeCounts, histogram: &[u8]) -> Result<()> {
        let pairs: Vec<(u64, u64)> = serde_json::from_slice(histogram).unwrap_or_default();
        let (own_outcomes, own_pairs) = match lock(&self.baselines).stats.get(&version_id) {
            Some((o, p)) => (ops::sub_counts(outcomes, o), ops::sub_pairs(&pairs, p)),
            None => (outcomes.clone(), pairs),
        };
        let node = self.node.clone();
        read!(self, |c| {
            ops::put_stats_row(c, version_id, &node, &own_outcomes, &own_pairs).await
        })
    }

    fn agreement(&self, live_id: i64, candidate_id: i64) -> Result<Agreement> {
        let node = self.node.clone();
        let (mut mine, others) = read!(self, |c| ops::agreement_rows(
            c,
            live_id,
            candidate_id,
            &node
        )
        .await)?;
        ops::add_agreement(&mut mine, &others);
        lock(&self.baselines)
            .agreement
            .insert((live_id, candidate_id), others);
        Ok(mine)
    }

    fn put_agreement(&self, live_id: i64, candidate_id: i64, agreement: &Agreement) -> Result<()> {
        let own = match lock(&self.baselines)
            .agreement
            .get(&(live_id, candidate_id))
        {
            Some(others) => ops::sub_agreement(agreement, others),
            None => agreement.clone(),
        };
        let node = self.node.clone();
        read!(self, |c| {
            ops::put_agreement_row(c, live_id, candidate_id, &node, &own).await
        })
    }

    fn put_window(&self, version_id: i64, counts: &crate::rollout::WindowCounts) -> Result<()> {
        let (node, counts) = (
            self.node.clone(),
            serde_json::to_string(counts).unwrap_or_else(|_| "{}".into()),
        );
        read!(self, |c| {
            c.execute(
                "INSERT INTO windows (version_id, node, counts, at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (version_id, node) DO UPDATE SET counts = $3, at = $4",
                &[&version_id, &node, &counts, &now()],
            )
            .await
            .map_err(db("publishing a rollout window"))?;
            Ok(())
        })
    }

    fn peer_windows(
        &self,
        version_id: i64,
        fresh: std::time::Duration,
    ) -> Result<crate::rollout::WindowCounts> {
        let node = self.node.clone();
        let since = humantime::format_rfc3339_micros(
            std::time::SystemTime::now()
                .checked_sub(fresh)
                .unwrap_or(std::time::UNIX_EPOCH),
        )
        .to_string();
        read!(self, |c| {
            let rows = c
                .query(
                    "SELECT counts FROM windows WHERE version_id = $1 AND node <> $2 AND at >= $3",
                    &[&version_id, &node, &since],
                )
                .await
                .map_err(db("reading other nodes' rollout windows"))?;
            let mut sum = crate::rollout::WindowCounts::default();
            for r in rows {
                if let Ok(counts) = serde_json::from_str(&r.get::<_, String>(0)) {
                    sum.add(&counts);
                }
            }
            Ok(sum)
        })
    }

    fn audit(&self, entry: NewEntry<'_>) -> Result<()> {
        self.grouped(Write::Audit(OwnedEntry::new(&entry)))
            .map(|_| ())
    }

    fn audit_async(&self, entry: NewEntry<'_>) -> StoreFuture<'_, ()> {
        let done = self.grouped_async(Write::Audit(OwnedEntry::new(&entry)));
        Box::pin(async move { done.await.map(|_| ()) })
    }

    fn record_event(
        &self,
        entry: NewEntry<'_>,
        decisions: Vec<DecisionRecord>,
        recording: Option<NewRecording>,
        processed: Option<super::Processed>,
    ) -> StoreFuture<'_, ()> {
        let done = self.grouped_async(Write::Event {
            entry: OwnedEntry::new(&entry),
            decisions,
            recording: recording.map(Box::new),
            processed,
        });
        Box::pin(async move { done.await.map(|_| ()) })
    }

    fn processed(&self, source: &str, event_id: &str) -> Result<bool> {
        let (source, event_id) = (source.to_owned(), event_id.to_owned());
        read!(self, |c| ops::processed(c, &source, &event_id).await)
    }

    fn forget_processed(&self, source: &str, before: &str) -> Result<u64> {
        let (source, before) = (source.to_owned(), before.to_owned());
        read!(self, |c| {
            c.execute(
                "DELETE FROM processed_events WHERE source = $1 AND at < $2",
                &[&source, &before],
            )
            .await
            .map_err(db("forgetting processed events"))
        })
    }

    fn dead_letter(&self, letter: &super::NewDeadLetter<'_>) -> Result<i64> {
        let (source, connector, subject, error, payload) = (
            letter.source.to_owned(),
            letter.connector.to_owned(),
            letter.subject.to_owned(),
            letter.error.to_owned(),
            letter.payload.to_vec(),
        );
        let (sequence, delivered) = (letter.sequence, letter.delivered);
        in_tx!(self, "dead letter", |tx| {
            let l = super::NewDeadLetter {
                source: &source,
                connector: &connector,
                subject: &subject,
                sequence,
                delivered,
                error: &error,
                payload: &payload,
            };
            let (id, head) = ops::dead_letter(tx, &l).await?;
            Ok::<_, Error>((id, Some(head)))
        })
    }

    fn dead_letters(&self, source: Option<&str>) -> Result<Vec<super::DeadLetter>> {
        let source = source.map(str::to_owned);
        read!(self, |c| ops::dead_letters(c, source.as_deref()).await)
    }

    fn audit_list(&self, after_seq: i64, since: Option<&str>) -> Result<Vec<audit::Entry>> {
        let since = since.map(audit::since_rfc3339).transpose()?;
        read!(self, |c| ops::audit_list(c, after_seq, since).await)
    }

    fn audit_page(&self, page: &audit::Page<'_>) -> Result<Vec<audit::Entry>> {
        let (before, limit) = (page.before, page.limit.clamp(1, audit::PAGE_MAX) as i64);
        let action = page.action.map(str::to_owned);
        let subject = page.subject.map(str::to_owned);
        let actor = page.actor.map(str::to_owned);
        read!(self, |c| ops::audit_newest(
            c,
            before,
            action.clone(),
            subject.clone(),
            actor.clone(),
            limit
        )
        .await)
    }

    /// Verify the whole chain and that it leads to this node's anchor;
    /// entries other nodes appended after it are expected.
    fn audit_verify(&self) -> Result<audit::Verification> {
        let anchor = audit::read_anchor(&self.dir.join("audit.anchor"))?;
        Ok(audit::verify_rows(
            &mut PgRows(self),
            anchor.as_ref(),
            audit::Writers::Shared,
        )?)
    }

    fn enqueue_review(&self, review: &NewReview<'_>) -> Result<i64> {
        let (action, event, reasons) = (
            review.action.clone(),
            review.event.clone(),
            review.reasons.to_vec(),
        );
        let (index, proposed_by, connector) = (
            review.action_index,
            review.proposed_by.to_owned(),
            review.connector.map(str::to_owned),
        );
        in_tx!(self, "review", |tx| {
            let review = NewReview {
                action_index: index,
                action: &action,
                event: &event,
                reasons: &reasons,
                proposed_by: &proposed_by,
                connector: connector.as_deref(),
            };
            let (id, head) = ops::enqueue_review(tx, &review).await?;
            Ok::<_, Error>((id, Some(head)))
        })
    }

    fn reviews(&self, status: Option<ReviewStatus>) -> Result<Vec<Review>> {
        read!(self, |c| ops::reviews(c, status).await)
    }

    fn review(&self, id: i64) -> Result<Option<Review>> {
        read!(self, |c| ops::review(c, id).await)
    }

    fn pending_reviews(&self) -> Result<u64> {
        read!(self, |c| ops::pending_reviews(c).await)
    }

    fn decide_review(&self, decision: &Decision<'_>) -> Result<Review> {
        let (id, approve, reviewer, comment) = (
            decision.id,
            decision.approve,
            decision.reviewer.to_owned(),
            decision.comment.map(str::to_owned),
        );
        let node = self.node.clone();
        in_tx!(self, "review", |tx| {
            let d = Decision {
                id,
                approve,
                reviewer: &reviewer,
                comment: comment.as_deref(),
            };
            let (review, head) = ops::decide_review(tx, &d, &node).await?;
            Ok::<_, Error>((review, Some(head)))
        })
    }

    fn record_review_result(&self, outcome: &ReviewResult<'_>) -> Result<()> {
        let (id, executed, result, detail) = (
            outcome.id,
            outcome.executed,
            outcome.result.to_owned(),
            outcome.detail.clone(),
        );
        in_tx!(self, "review", |tx| {
            let r = ReviewResult {
                id,
                executed,
                result: &result,
                detail,
            };
            let head = ops::record_review_result(tx, &r).await?;
            Ok::<_, Error>(((), Some(head)))
        })
    }

    fn take_expired_reviews(&self) -> Result<Vec<Review>> {
        let node = self.node.clone();
        let reviews = in_tx!(self, "taking over reviews", |tx| {
            let until =
                humantime::format_rfc3339_micros(std::time::SystemTime::now() + ops::REVIEW_LEASE)
                    .to_string();
            let rows = tx
                .query(
                    "UPDATE reviews SET lease_node = $1, lease_until = $2
                     WHERE id IN (SELECT id FROM reviews WHERE status = 'approved' AND lease_until < $3
                                  ORDER BY id FOR UPDATE SKIP LOCKED)
                     RETURNING id",
                    &[&node, &until, &now()],
                )
                .await
                .map_err(db("taking over reviews"))?;
            let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
            let mut taken = Vec::new();
            for id in ids {
                if let Some(r) = ops::review(&**tx, id).await? {
                    taken.push(r);
                }
            }
            Ok::<_, Error>((taken, None))
        })?;
        Ok(reviews)
    }

    fn add_label(&self, label: &NewLabel<'_>) -> Result<Label> {
        let (event_id, index, word, source, actor, comment) = (
            label.event_id.to_owned(),
            label.action_index,
            label.label.to_owned(),
            label.source.to_owned(),
            label.actor.to_owned(),
            label.comment.map(str::to_owned),
        );
        in_tx!(self, "label", |tx| {
            let l = NewLabel {
                event_id: &event_id,
                action_index: index,
                label: &word,
                source: &source,
                actor: &actor,
                comment: comment.as_deref(),
            };
            let (label, head) = ops::add_label(tx, &l).await?;
            Ok::<_, Error>((label, Some(head)))
        })
    }

    fn decision(&self, event_id: &str, action_index: usize) -> Result<Option<DecisionRecord>> {
        let event_id = event_id.to_owned();
        read!(self, |c| ops::decision(c, &event_id, action_index).await)
    }

    fn labels(&self, event_id: &str) -> Result<Vec<Label>> {
        let event_id = event_id.to_owned();
        read!(self, |c| ops::labels(c, &event_id).await)
    }

    fn labeled(&self, since: Option<&str>) -> Result<Vec<(DecisionRecord, Label)>> {
        let since = since.map(str::to_owned);
        read!(self, |c| ops::labeled(c, since.as_deref()).await)
    }

    fn recorded_calls(&self, filter: &RecordingFilter<'_>) -> Result<Vec<StoredCall>> {
        let f = OwnedFilter::new(filter);
        read!(self, |c| ops::recorded_calls(c, &f.borrow()).await)
    }

    fn recordings(&self, filter: &RecordingFilter<'_>) -> Result<Vec<Recording>> {
        let f = OwnedFilter::new(filter);
        read!(self, |c| ops::recordings(c, &f.borrow()).await)
    }

    fn prune_recordings(
        &self,
        before: Option<&str>,
        max_rows: Option<u64>,
        actor: &str,
    ) -> Result<crate::recording::Pruned> {
        let (before, actor) = (before.map(str::to_owned), actor.to_owned());
        in_tx!(self, "pruning recordings", |tx| {
            ops::prune_recordings(tx, before.as_deref(), max_rows, &actor).await
        })
    }

    fn drift(&self, version_id: i64) -> Result<(Option<String>, Option<String>)> {
        read!(self, |c| ops::drift(c, version_id).await)
    }

    fn put_drift_judged(&self, version_id: i64, judged: &str) -> Result<()> {
        let judged = judged.to_owned();
        read!(self, |c| {
            c.execute(
                "INSERT INTO drift (version_id, judged, at) VALUES ($1, $2, $3)
                 ON CONFLICT (version_id) DO UPDATE SET judged = $2, at = $3",
                &[&version_id, &judged, &now()],
            )
            .await
            .map_err(db("keeping a drift judgement"))?;
            Ok(())
        })
    }

    fn put_drift_reference(
        &self,
        version_id: i64,
        reference: &str,
        entry: Option<NewEntry<'_>>,
    ) -> Result<()> {
        let reference = reference.to_owned();
        let entry = entry.as_ref().map(OwnedEntry::new);
        in_tx!(self, "keeping a drift reference", |tx| {
            tx.execute(
                "INSERT INTO drift (version_id, reference, at) VALUES ($1, $2, $3)
                 ON CONFLICT (version_id) DO UPDATE SET reference = $2, at = $3",
                &[&version_id, &reference, &now()],
            )
            .await
            .map_err(db("keeping a drift reference"))?;
            let head = match &entry {
                Some(e) => Some(ops::append(tx, &e.entry()).await?),
                None => None,
            };
            Ok::<_, Error>(((), head))
        })
    }

    fn create_token(&self, token: &Token, secret_sha256: &str, actor: &str) -> Result<()> {
        let (token, secret, actor) = (token.clone(), secret_sha256.to_owned(), actor.to_owned());
        in_tx!(self, "token", |tx| {
            tx.execute(
                "INSERT INTO tokens (id, name, secret_sha256, role, scope, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                &[&token.id, &token.name, &secret, &token.role.as_str(), &token.scope, &token.created_at],
            )
            .await
            .map_err(db("creating a token"))?;
            let head = ops::append(
                tx,
                &NewEntry {
                    actor: &actor,
                    action: "token-created",
                    subject: &format!("token/{}", token.id),
                    digest: None,
                    detail: serde_json::json!({"name": token.name, "role": token.role, "scope": token.scope}),
                },
            )
            .await?;
            Ok::<_, Error>(((), Some(head)))
        })
    }

    fn tokens(&self) -> Result<Vec<Token>> {
        read!(self, |c| ops::tokens(c).await)
    }

    fn token(&self, id: &str) -> Result<Option<(Token, String)>> {
        let id = id.to_owned();
        read!(self, |c| ops::token(c, &id).await)
    }

    fn open_session(&self, session: &super::ConsoleSession, entry: NewEntry<'_>) -> Result<()> {
        let (s, entry) = (session.clone(), OwnedEntry::new(&entry));
        in_tx!(self, "console session", |tx| {
            tx.execute(
                "DELETE FROM console_sessions WHERE expires <= $1",
                &[&s.created],
            )
            .await
            .map_err(db("deleting ended sessions"))?;
            tx.execute(
                "DELETE FROM console_sessions WHERE token_id = $1 AND id_sha256 NOT IN \
                 (SELECT id_sha256 FROM console_sessions WHERE token_id = $1 ORDER BY created DESC LIMIT $2)",
                &[&s.token_id, &(super::SESSIONS_PER_TOKEN - 1)],
            )
            .await
            .map_err(db("ending a token's oldest sessions"))?;
            tx.execute(
                "INSERT INTO console_sessions (id_sha256, token_id, csrf, created, expires) VALUES ($1, $2, $3, $4, $5)",
                &[&s.id_sha256, &s.token_id, &s.csrf, &s.created, &s.expires],
            )
            .await
            .map_err(db("opening a session"))?;
            let head = ops::append(tx, &entry.entry()).await?;
            Ok::<_, Error>(((), Some(head)))
        })
    }

    fn session(&self, id_sha256: &str) -> Result<Option<super::ConsoleSession>> {
        let id = id_sha256.to_owned();
        read!(self, |c| {
            let row = c
                .query_opt(
                    "SELECT id_sha256, token_id, csrf, created, expires FROM console_sessions WHERE id_sha256 = $1",
                    &[&id],
                )
                .await
                .map_err(db("reading a session"))?;
            Ok::<_, Error>(row.map(|r| super::ConsoleSession {
                id_sha256: r.get(0),
                token_id: r.get(1),
                csrf: r.get(2),
                created: r.get(3),
                expires: r.get(4),
            }))
        })
    }

    fn close_session(&self, id_sha256: &str, entry: Option<NewEntry<'_>>) -> Result<()> {
        let (id, entry) = (id_sha256.to_owned(), entry.as_ref().map(OwnedEntry::new));
        in_tx!(self, "console session", |tx| {
            tx.execute("DELETE FROM console_sessions WHERE id_sha256 = $1", &[&id])
                .await
                .map_err(db("closing a session"))?;
            let head = match &entry {
                Some(e) => Some(ops::append(tx, &e.entry()).await?),
                None => None,
            };
            Ok::<_, Error>(((), head))
        })
    }

    fn close_sessions_of(&self, token_id: &str) -> Result<()> {
        let id = token_id.to_owned();
        in_tx!(self, "console session", |tx| {
            tx.execute("DELETE FROM console_sessions WHERE token_id = $1", &[&id])
                .await
                .map_err(db("closing a token's sessions"))?;
            Ok::<_, Error>(((), None))
        })
    }

    fn revoke_token(&self, id: &str, actor: &str) -> Result<()> {
        let (id, actor) = (id.to_owned(), actor.to_owned());
        in_tx!(self, "token", |tx| {
            let n = tx
                .execute(
                    "UPDATE tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                    &[&id, &now()],
                )
                .await
                .map_err(db("revoking a token"))?;
            if n == 0 {
                return Err(Error::NotFound(format!("no active token with id {id}")));
            }
            let head = ops::append(
                tx,
                &NewEntry {
                    actor: &actor,
                    action: "token-revoked",
                    subject: &format!("token/{id}"),
                    digest: None,
                    detail: serde_json::json!({}),
                },
            )
            .await?;
            Ok::<_, Error>(((), Some(head)))
        })
    }

    fn kv(self: Arc<Self>) -> Arc<dyn KvStore> {
        Arc::new(PgKv(self))
    }
}

/// A version to record, owned to cross to the store's thread.
struct OwnedVersion {
    plugin: String,
    version: String,
    digest: String,
    manifest: String,
    manifest_origin: String,
    manifest_base: String,
}

impl OwnedVersion {
    fn new(v: &NewVersion<'_>) -> OwnedVersion {
        OwnedVersion {
            plugin: v.plugin.to_owned(),
            version: v.version.to_owned(),
            digest: v.digest.to_owned(),
            manifest: v.manifest.to_owned(),
            manifest_origin: v.manifest_origin.to_owned(),
            manifest_base: v.manifest_base.to_owned(),
        }
    }

    fn borrow(&self) -> NewVersion<'_> {
        NewVersion {
            plugin: &self.plugin,
            version: &self.version,
            digest: &self.digest,
            manifest: &self.manifest,
            manifest_origin: &self.manifest_origin,
            manifest_base: &self.manifest_base,
        }
    }
}

/// A recording filter, owned to cross to the store's thread.
struct OwnedFilter {
    plugin: Option<String>,
    trace_id: Option<String>,
    since: Option<String>,
    limit: Option<usize>,
}

impl OwnedFilter {
    fn new(f: &RecordingFilter<'_>) -> OwnedFilter {
        OwnedFilter {
            plugin: f.plugin.map(str::to_owned),
            trace_id: f.trace_id.map(str::to_owned),
            since: f.since.map(str::to_owned),
            limit: f.limit,
        }
    }

    fn borrow(&self) -> RecordingFilter<'_> {
        RecordingFilter {
            plugin: self.plugin.as_deref(),
            trace_id: self.trace_id.as_deref(),
            since: self.since.as_deref(),
            limit: self.limit,
        }
    }
}

/// The `kv` capability's storage on PostgreSQL: each write checks its
/// namespace's quota under the namespace's usage row lock, in a group
/// commit.
pub struct PgKv(Arc<PgStore>);

fn kv_answer(written: Result<Written>) -> std::result::Result<Written, KvStoreError> {
    match written {
        Ok(Written::Refused(why)) => Err(KvStoreError::Quota(why)),
        Ok(w) => Ok(w),
        Err(e) => Err(KvStoreError::Backend(format!("kv store: {e}"))),
    }
}

impl KvStore for PgKv {
    fn get(&self, ns: &str, key: &str) -> std::result::Result<Option<Vec<u8>>, KvStoreError> {
        let (ns, key) = (ns.to_owned(), key.to_owned());
        read!(self.0, |c| {
            Ok(c.query_opt(
                "SELECT value FROM kv WHERE namespace = $1 AND key = $2",
                &[&ns, &key],
            )
            .await
            .map_err(db("reading kv"))?
            .map(|r| r.get(0)))
        })
        .map_err(|e| KvStoreError::Backend(format!("kv store: {e}")))
    }

    fn set(
        &self,
        ns: &str,
        key: &str,
        value: &[u8],
        quota: KvQuota,
    ) -> std::result::Result<(), KvStoreError> {
        kv_answer(self.0.grouped(Write::KvSet {
            ns: ns.to_owned(),
            key: key.to_owned(),
            value: value.to_vec(),
            quota,
        }))
        .map(|_| ())
    }

    fn delete(&self, ns: &str, key: &str) -> std::result::Result<bool, KvStoreError> {
        kv_answer(self.0.grouped(Write::KvDelete {
            ns: ns.to_owned(),
            key: key.to_owned(),
        }))
        .map(|w| matches!(w, Written::Deleted(true)))
    }

    fn set_owned(&self, ns: Arc<str>, key: String, value: Vec<u8>, quota: KvQuota) -> KvFuture<()> {
        let done = self.0.grouped_async(Write::KvSet {
            ns: ns.to_string(),
            key,
            value,
            quota,
        });
        Box::pin(async move { kv_answer(done.await).map(|_| ()) })
    }

    fn delete_owned(&self, ns: Arc<str>, key: String) -> KvFuture<bool> {
        let done = self.0.grouped_async(Write::KvDelete {
            ns: ns.to_string(),
            key,
        });
        Box::pin(async move { kv_answer(done.await).map(|w| matches!(w, Written::Deleted(true))) })
    }

    fn list_keys(
        &self,
        ns: &str,
        prefix: &str,
        limit: usize,
    ) -> std::result::Result<Vec<String>, KvStoreError> {
        let (ns, prefix) = (ns.to_owned(), prefix.to_owned());
        let max = i64::try_from(limit).unwrap_or(i64::MAX);
        read!(self.0, |c| {
            // Keys starting with the prefix are those from it up to the
            // first key that no longer starts with it.
            let rows = c
                .query(
                    "SELECT key FROM kv WHERE namespace = $1 AND key COLLATE \"C\" >= $2 ORDER BY key COLLATE \"C\" LIMIT $3",
                    &[&ns, &prefix, &max.saturating_mul(4)],
                )
                .await
                .map_err(db("listing kv keys"))?;
            let mut keys = Vec::new();
            for r in rows {
                let k: String = r.get(0);
                if !k.starts_with(&prefix) || keys.len() >= limit {
                    break;
                }
                keys.push(k);
            }
            Ok(keys)
        })
        .map_err(|e| KvStoreError::Backend(format!("kv store: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            without_password("postgres://evos:s3cret@db.internal:5432/evos"),
            "postgres://evos:***@db.internal:5432/evos"
        );
        assert_eq!(
            without_password("postgres://127.0.0.1/evos"),
            "postgres://127.0.0.1/evos"
        );
        let e = PgStore::connect(
            "postgres://evos:s3cret@127.0.0.1:1/evos?connect_timeout=2",
            std::env::temp_dir().join("evos-pg-unreachable"),
        )
        .unwrap_err()
        .to_string();
        assert!(!e.contains("s3cret") && e.contains("cannot connect"), "{e}");
    }
}
