//! The store's operations as SQL on PostgreSQL: reads over any client,
//! writes inside a transaction the caller commits.
//!
//! Locks are always taken in one order, so transactions of different
//! nodes never wait on each other in a cycle: the deployment generation,
//! then a review's row, then the audit chain's head, then kv usage rows
//! (sorted by namespace).

use std::collections::BTreeMap;

use deadpool_postgres::Transaction;
use tokio_postgres::{GenericClient, Row};

use crate::audit::{self, Anchor, AuditError, NewEntry, Record};
use crate::capability::kv::KvQuota;
use crate::recording::Pruned;
use crate::rollout::OutcomeCounts;
use crate::store::review_entries as entries;
use crate::store::{
    Agreement, Change, DeadLetter, Decision, DecisionRecord, DeploymentRow, HistoryRow,
    LABEL_FROM_REVIEW, Label, NewDeadLetter, NewLabel, NewRecording, NewReview, NewVersion,
    Processed, REVIEWS_LISTED, RecordedCall, Recording, RecordingFilter, Review, ReviewResult,
    ReviewStatus, Role, StoredCall, Token, VersionRow, already_processed, check_label,
    dead_letter_entry, feedback_entry, now, prune_detail, stale,
};
use crate::{Error, Result};

pub(super) type PgError = tokio_postgres::Error;

/// A database error while `context`, with what the server said.
pub(super) fn db(context: &str) -> impl Fn(PgError) -> Error + '_ {
    move |e| Error::store(context.to_string(), describe(&e))
}

/// What went wrong, in the server's words when it answered (tokio-postgres
/// shows a server's error as just "db error").
pub(super) fn describe(e: &PgError) -> String {
    match e.as_db_error() {
        Some(d) => {
            let mut s = format!("{} ({})", d.message(), d.code().code());
            if let Some(detail) = d.detail() {
                s.push_str(&format!("; {detail}"));
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                s.push_str(&format!(": {c}"));
                cause = c.source();
            }
            s
        }
    }
}

fn audit_db(context: &str) -> impl Fn(PgError) -> AuditError + '_ {
    move |e| AuditError::Store {
        context: context.to_string(),
        source: describe(&e).into(),
    }
}

fn to_u8(v: i32) -> u8 {
    u8::try_from(v.clamp(0, 255)).unwrap_or(0)
}

fn to_index(v: i32) -> usize {
    usize::try_from(v).unwrap_or(0)
}

fn index(i: usize) -> i32 {
    i32::try_from(i).unwrap_or(i32::MAX)
}

fn json_or_text(text: String) -> serde_json::Value {
    serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
}

/// `sql` prepared once per connection (the pool's statement cache), run.
async fn run_cached(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> std::result::Result<u64, PgError> {
    let stmt = tx.prepare_cached(sql).await?;
    tx.execute(&stmt, params).await
}

/// [`run_cached`] for a query of at most one row.
async fn opt_cached(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> std::result::Result<Option<Row>, PgError> {
    let stmt = tx.prepare_cached(sql).await?;
    tx.query_opt(&stmt, params).await
}

/// [`run_cached`] for a query of exactly one row.
async fn one_cached(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> std::result::Result<Row, PgError> {
    let stmt = tx.prepare_cached(sql).await?;
    tx.query_one(&stmt, params).await
}

// ---- audit ------------------------------------------------------------

/// Append `entry` to the chain inside `tx`, holding the chain's head row
/// until the transaction ends, so appends of all nodes form one sequence.
pub(super) async fn append(tx: &Transaction<'_>, entry: &NewEntry<'_>) -> Result<Anchor> {
    let mut head = None;
    let link = append_at(tx, &mut head, entry).await?;
    write_head(tx, &link).await?;
    Ok(link)
}

/// The chain's head, read and locked until `tx` ends.
pub(super) async fn lock_head(tx: &Transaction<'_>) -> Result<Option<Anchor>> {
    let stmt = tx
        .prepare_cached("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")
        .await
        .map_err(db("reading the head of the audit chain"))?;
    let row = tx
        .query_one(&stmt, &[])
        .await
        .map_err(db("reading the head of the audit chain"))?;
    let (seq, hash): (i64, String) = (row.get(0), row.get(1));
    Ok((seq > 0).then_some(Anchor {
        seq,
        hash,
        pending: 0,
    }))
}

/// Append `entry` after `head` (locked and read first when `None`), and
/// advance `head` to it; the head row itself is written by
/// [`write_head`], once for every entry a transaction appends.
pub(super) async fn append_at(
    tx: &Transaction<'_>,
    head: &mut Option<Option<Anchor>>,
    entry: &NewEntry<'_>,
) -> Result<Anchor> {
    let current = match head.take() {
        Some(known) => known,
        None => lock_head(tx).await?,
    };
    let link = audit::next_link(current.as_ref(), entry)?;
    let stmt = tx
        .prepare_cached(
            "INSERT INTO audit (seq, at, actor, action, subject, digest, detail, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .await
        .map_err(db("appending to the audit chain"))?;
    let inserted = tx
        .execute(
            &stmt,
            &[
                &link.seq,
                &link.at,
                &link.actor,
                &link.action,
                &link.subject,
                &link.digest,
                &link.detail,
                &link.prev_hash,
                &link.hash,
            ],
        )
        .await
        .map_err(db("appending to the audit chain"));
    if let Err(e) = inserted {
        *head = Some(current);
        return Err(e);
    }
    let anchor = Anchor {
        seq: link.seq,
        hash: link.hash,
        pending: 0,
    };
    *head = Some(Some(anchor.clone()));
    Ok(anchor)
}

/// Record `head` as the chain's head.
pub(super) async fn write_head(tx: &Transaction<'_>, head: &Anchor) -> Result<()> {
    let stmt = tx
        .prepare_cached("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
        .await
        .map_err(db("advancing the head of the audit chain"))?;
    tx.execute(&stmt, &[&head.seq, &head.hash])
        .await
        .map_err(db("advancing the head of the audit chain"))?;
    Ok(())
}

const AUDIT_COLUMNS: &str = "seq, at, actor, action, subject, digest, detail, prev_hash, hash";

fn record(row: &Row) -> audit::RowRead {
    let seq: i64 = row.get(0);
    let text = |i: usize, name: &str| -> std::result::Result<String, audit::Unreadable> {
        row.get::<_, Option<String>>(i)
            .ok_or_else(|| audit::Unreadable {
                seq,
                message: format!("`{name}` is NULL"),
            })
    };
    Ok(Record {
        seq,
        at: text(1, "at")?,
        actor: text(2, "actor")?,
        action: text(3, "action")?,
        subject: text(4, "subject")?,
        digest: row.get(5),
        detail: text(6, "detail")?,
        prev_hash: text(7, "prev_hash")?,
        hash: text(8, "hash")?,
    })
}

pub(super) async fn audit_list(
    c: &impl GenericClient,
    after_seq: i64,
    since: Option<String>,
) -> Result<Vec<audit::Entry>> {
    let rows = c
        .query(
            &format!(
                "SELECT {AUDIT_COLUMNS} FROM audit WHERE seq > $1 AND ($2::text IS NULL OR at >= $2) ORDER BY seq"
            ),
            &[&after_seq, &since],
        )
        .await
        .map_err(db("listing audit entries"))?;
    entries(&rows)
}

/// The entries of audit rows (in `AUDIT_COLUMNS` order).
fn entries(rows: &[tokio_postgres::Row]) -> Result<Vec<audit::Entry>> {
    rows.iter()
        .map(|r| {
            record(r)
                .map_err(|u| AuditError::Malformed {
                    seq: u.seq,
                    message: u.message,
                })
                .and_then(Record::into_entry)
                .map_err(Error::from)
        })
        .collect()
}

/// One page of the log, newest first (see [`audit::Page`]).
pub(super) async fn audit_newest(
    c: &impl GenericClient,
    before: Option<i64>,
    action: Option<String>,
    subject: Option<String>,
    actor: Option<String>,
    limit: i64,
) -> Result<Vec<audit::Entry>> {
    let rows = c
        .query(
            &format!(
                "SELECT {AUDIT_COLUMNS} FROM audit WHERE ($1::bigint IS NULL OR seq < $1) \
                 AND ($2::text IS NULL OR action = $2) \
                 AND ($3::text IS NULL OR left(subject, length($3)) = $3) \
                 AND ($4::text IS NULL OR strpos(actor, $4) > 0) \
                 ORDER BY seq DESC LIMIT $5"
            ),
            &[&before, &action, &subject, &actor, &limit],
        )
        .await
        .map_err(db("paging audit entries"))?;
    entries(&rows)
}

/// The chain's rows, read a page at a time for verification.
pub(super) async fn audit_page(
    c: &impl GenericClient,
    after: i64,
    limit: i64,
) -> std::result::Result<Vec<audit::RowRead>, AuditError> {
    let rows = c
        .query(
            &format!("SELECT {AUDIT_COLUMNS} FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2"),
            &[&after, &limit],
        )
        .await
        .map_err(audit_db("verifying the chain"))?;
    Ok(rows.iter().map(record).collect())
}

pub(super) async fn audit_chained_onto(
    c: &impl GenericClient,
    prev_hash: String,
) -> std::result::Result<Vec<audit::RowRead>, AuditError> {
    let rows = c
        .query(
            &format!("SELECT {AUDIT_COLUMNS} FROM audit WHERE prev_hash = $1"),
            &[&prev_hash],
        )
        .await
        .map_err(audit_db("looking for a renumbered entry"))?;
    Ok(rows.iter().map(record).collect())
}

// ---- versions and deployments -----------------------------------------

const VERSION_SELECT: &str = "SELECT id, plugin, version, digest, manifest, manifest_origin, manifest_base, created_at FROM versions";

fn version_row(r: &Row) -> VersionRow {
    VersionRow {
        id: r.get(0),
        plugin: r.get(1),
        version: r.get(2),
        digest: r.get(3),
        manifest: r.get(4),
        manifest_origin: r.get(5),
        manifest_base: r.get(6),
        created_at: r.get(7),
    }
}

const DEPLOYMENT_SELECT: &str = "SELECT plugin, stable_id, canary_id, canary_weight, updated_at, shadow_id, shadow_share, rollout_step, step_since FROM deployments";

fn deployment_row(r: &Row) -> DeploymentRow {
    DeploymentRow {
        plugin: r.get(0),
        stable_id: r.get(1),
        canary_id: r.get(2),
        canary_weight: to_u8(r.get(3)),
        updated_at: r.get(4),
        shadow_id: r.get(5),
        shadow_share: to_u8(r.get(6)),
        rollout_step: r
            .get::<_, Option<i32>>(7)
            .and_then(|s| u32::try_from(s).ok()),
        step_since: r.get(8),
    }
}

pub(super) async fn version(c: &impl GenericClient, id: i64) -> Result<VersionRow> {
    c.query_opt(&format!("{VERSION_SELECT} WHERE id = $1"), &[&id])
        .await
        .map_err(db("reading a version"))?
        .map(|r| version_row(&r))
        .ok_or_else(|| Error::NotFound(format!("no version with id {id}")))
}

pub(super) async fn versions_of(c: &impl GenericClient, plugin: &str) -> Result<Vec<VersionRow>> {
    Ok(c.query(
        &format!("{VERSION_SELECT} WHERE plugin = $1 ORDER BY id DESC"),
        &[&plugin],
    )
    .await
    .map_err(db("listing versions"))?
    .iter()
    .map(version_row)
    .collect())
}

pub(super) async fn deployment(
    c: &impl GenericClient,
    plugin: &str,
    lock: bool,
) -> Result<Option<DeploymentRow>> {
    let sql = format!(
        "{DEPLOYMENT_SELECT} WHERE plugin = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    Ok(c.query_opt(&sql, &[&plugin])
        .await
        .map_err(db("reading a deployment"))?
        .map(|r| deployment_row(&r)))
}

pub(super) async fn deployments(c: &impl GenericClient) -> Result<Vec<DeploymentRow>> {
    Ok(
        c.query(&format!("{DEPLOYMENT_SELECT} ORDER BY plugin"), &[])
            .await
            .map_err(db("listing deployments"))?
            .iter()
            .map(deployment_row)
            .collect(),
    )
}

pub(super) async fn history(c: &impl GenericClient, plugin: &str) -> Result<Vec<HistoryRow>> {
    let rows = c
        .query(
            "SELECT id, plugin, at, action, actor, version_id, stable_id, canary_id, canary_weight, detail, shadow_id, shadow_share, rollout_step
             FROM history WHERE plugin = $1 ORDER BY id",
            &[&plugin],
        )
        .await
        .map_err(db("reading history"))?;
    Ok(rows
        .iter()
        .map(|r| HistoryRow {
            id: r.get(0),
            plugin: r.get(1),
            at: r.get(2),
            action: r.get(3),
            actor: r.get(4),
            version_id: r.get(5),
            stable_id: r.get(6),
            canary_id: r.get(7),
            canary_weight: to_u8(r.get(8)),
            detail: json_or_text(r.get(9)),
            shadow_id: r.get(10),
            shadow_share: to_u8(r.get(11)),
            rollout_step: r
                .get::<_, Option<i32>>(12)
                .and_then(|s| u32::try_from(s).ok()),
        })
        .collect())
}

/// The id of the version row for this exact (plugin, digest, manifest),
/// inserting it if new (nodes deploying the same version at once share
/// one row).
pub(super) async fn upsert_version(tx: &Transaction<'_>, v: &NewVersion<'_>) -> Result<i64> {
    use sha2::Digest;
    let manifest_sha = hex::encode(sha2::Sha256::digest(v.manifest.as_bytes()));
    tx.execute(
        "INSERT INTO versions (plugin, version, digest, manifest, manifest_origin, manifest_base, created_at, manifest_sha256)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (plugin, digest, manifest_sha256) DO NOTHING",
        &[
            &v.plugin,
            &v.version,
            &v.digest,
            &v.manifest,
            &v.manifest_origin,
            &v.manifest_base,
            &now(),
            &manifest_sha,
        ],
    )
    .await
    .map_err(db("recording a version"))?;
    let row = tx
        .query_one(
            "SELECT id FROM versions WHERE plugin = $1 AND digest = $2 AND manifest_sha256 = $3",
            &[&v.plugin, &v.digest, &manifest_sha],
        )
        .await
        .map_err(db("finding a version"))?;
    Ok(row.get(0))
}

/// Write a deployment change, its history row and its audit entry inside
/// `tx`; returns the new generation and the chain's head. The generation
/// row is locked first, so deployment changes of all nodes are one
/// sequence, and each is announced to listening nodes when it commits.
pub(super) async fn record_change(
    tx: &Transaction<'_>,
    change: &Change<'_>,
) -> Result<(i64, Anchor)> {
    let generation: i64 = tx
        .query_one(
            "UPDATE control_generation SET generation = generation + 1 WHERE id = 1 RETURNING generation",
            &[],
        )
        .await
        .map_err(db("advancing the control generation"))?
        .get(0);
    let Change {
        plugin,
        serving,
        action,
        actor,
        version_id,
        detail,
        seen,
        ..
    } = *change;
    let current = deployment(&**tx, plugin, true).await?;
    if current.as_ref().map(DeploymentRow::serving) != seen {
        return Err(stale(plugin));
    }
    let at = now();
    let step_since = crate::store::step_since(current.as_ref(), &serving, &at);
    let (canary_id, weight) = match serving.canary {
        Some((id, w)) => (Some(id), i32::from(w)),
        None => (None, 0),
    };
    let (shadow_id, share) = match serving.shadow {
        Some((id, s)) => (Some(id), i32::from(s)),
        None => (None, 0),
    };
    let step = serving.step.map(|s| i32::try_from(s).unwrap_or(i32::MAX));
    tx.execute(
        "INSERT INTO deployments (plugin, stable_id, canary_id, canary_weight, updated_at, shadow_id, shadow_share, rollout_step, step_since)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (plugin) DO UPDATE SET stable_id = $2, canary_id = $3, canary_weight = $4, updated_at = $5,
           shadow_id = $6, shadow_share = $7, rollout_step = $8, step_since = $9",
        &[&plugin, &serving.stable_id, &canary_id, &weight, &at, &shadow_id, &share, &step, &step_since],
    )
    .await
    .map_err(db("updating a deployment"))?;
    tx.execute(
        "INSERT INTO history (plugin, at, action, actor, version_id, stable_id, canary_id, canary_weight, detail, shadow_id, shadow_share, rollout_step)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        &[&plugin, &at, &action, &actor, &version_id, &serving.stable_id, &canary_id, &weight, &detail.to_string(), &shadow_id, &share, &step],
    )
    .await
    .map_err(db("recording history"))?;
    let head = append(
        tx,
        &NewEntry {
            actor,
            action,
            subject: plugin,
            digest: Some(change.digest),
            detail: detail.clone(),
        },
    )
    .await?;
    // Delivered to listening nodes when the transaction commits.
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&super::CHANNEL, &generation.to_string()],
    )
    .await
    .map_err(db("announcing the change"))?;
    Ok((generation, head))
}

// ---- stats and agreement, one row per node ------------------------------

/// A version's counts from every node: (this node's row, the others'
/// rows summed).
pub(super) async fn stats_rows(
    c: &impl GenericClient,
    version_id: i64,
    node: &str,
) -> Result<(
    (OutcomeCounts, Vec<(u64, u64)>),
    (OutcomeCounts, Vec<(u64, u64)>),
)> {
    let rows = c
        .query(
            "SELECT node, outcomes, histogram FROM version_stats WHERE version_id = $1",
            &[&version_id],
        )
        .await
        .map_err(db("reading stats"))?;
    let mut mine = (OutcomeCounts::new(), Vec::new());
    let mut others = (OutcomeCounts::new(), Vec::new());
    for r in rows {
        let outcomes: OutcomeCounts =
            serde_json::from_str(&r.get::<_, String>(1)).unwrap_or_default();
        let pairs: Vec<(u64, u64)> = r
            .get::<_, Option<Vec<u8>>>(2)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let into = if r.get::<_, String>(0) == node {
            &mut mine
        } else {
            &mut others
        };
        add_counts(&mut into.0, &outcomes);
        into.1 = add_pairs(&into.1, &pairs);
    }
    Ok((mine, others))
}

pub(super) fn add_counts(into: &mut OutcomeCounts, more: &OutcomeCounts) {
    for (k, v) in more {
        let slot = into.entry(k.clone()).or_default();
        *slot = slot.saturating_add(*v);
    }
}

pub(super) fn sub_counts(total: &OutcomeCounts, less: &OutcomeCounts) -> OutcomeCounts {
    total
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.saturating_sub(less.get(k).copied().unwrap_or(0)),
            )
        })
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// Histogram (value, count) pairs added value by value.
pub(super) fn add_pairs(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut sum: BTreeMap<u64, u64> = BTreeMap::new();
    for (v, n) in a.iter().chain(b) {
        let slot = sum.entry(*v).or_default();
        *slot = slot.saturating_add(*n);
    }
    sum.into_iter().collect()
}

pub(super) fn sub_pairs(total: &[(u64, u64)], less: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let less: BTreeMap<u64, u64> = less.iter().copied().collect();
    total
        .iter()
        .map(|(v, n)| (*v, n.saturating_sub(less.get(v).copied().unwrap_or(0))))
        .filter(|(_, n)| *n > 0)
        .collect()
}

pub(super) async fn put_stats_row(
    c: &impl GenericClient,
    version_id: i64,
    node: &str,
    outcomes: &OutcomeCounts,
    pairs: &[(u64, u64)],
) -> Result<()> {
    let outcomes = serde_json::to_string(outcomes).unwrap_or_else(|_| "{}".into());
    let histogram = serde_json::to_vec(pairs).unwrap_or_default();
    c.execute(
        "INSERT INTO version_stats (version_id, node, outcomes, histogram, updated_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (version_id, node) DO UPDATE SET outcomes = $3, histogram = $4, updated_at = $5",
        &[&version_id, &node, &outcomes, &histogram, &now()],
    )
    .await
    .map_err(db("writing stats"))?;
    Ok(())
}

pub(super) fn add_agreement(into: &mut Agreement, more: &Agreement) {
    into.compared = into.compared.saturating_add(more.compared);
    into.agreed = into.agreed.saturating_add(more.agreed);
    into.classed = into.classed.saturating_add(more.classed);
    into.shifted = into.shifted.saturating_add(more.shifted);
    into.shed = into.shed.saturating_add(more.shed);
    into.timed_out = into.timed_out.saturating_add(more.timed_out);
    add_counts(&mut into.confusion, &more.confusion);
}

pub(super) fn sub_agreement(total: &Agreement, less: &Agreement) -> Agreement {
    Agreement {
        compared: total.compared.saturating_sub(less.compared),
        agreed: total.agreed.saturating_sub(less.agreed),
        classed: total.classed.saturating_sub(less.classed),
        shifted: total.shifted.saturating_sub(less.shifted),
        shed: total.shed.saturating_sub(less.shed),
        timed_out: total.timed_out.saturating_sub(less.timed_out),
        confusion: sub_counts(&total.confusion, &less.confusion),
    }
}

/// A version pair's comparisons: (this node's row, the others' summed).
pub(super) async fn agreement_rows(
    c: &impl GenericClient,
    live_id: i64,
    candidate_id: i64,
    node: &str,
) -> Result<(Agreement, Agreement)> {
    let rows = c
        .query(
            "SELECT node, counts FROM agreement WHERE live_id = $1 AND candidate_id = $2",
            &[&live_id, &candidate_id],
        )
        .await
        .map_err(db("reading an agreement"))?;
    let (mut mine, mut others) = (Agreement::default(), Agreement::default());
    for r in rows {
        let counts: Agreement = serde_json::from_str(&r.get::<_, String>(1)).unwrap_or_default();
        if r.get::<_, String>(0) == node {
            add_agreement(&mut mine, &counts);
        } else {
            add_agreement(&mut others, &counts);
        }
    }
    Ok((mine, others))
}

pub(super) async fn put_agreement_row(
    c: &impl GenericClient,
    live_id: i64,
    candidate_id: i64,
    node: &str,
    agreement: &Agreement,
) -> Result<()> {
    let counts = serde_json::to_string(agreement).unwrap_or_else(|_| "{}".into());
    c.execute(
        "INSERT INTO agreement (live_id, candidate_id, node, counts, updated_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (live_id, candidate_id, node) DO UPDATE SET counts = $4, updated_at = $5",
        &[&live_id, &candidate_id, &node, &counts, &now()],
    )
    .await
    .map_err(db("writing an agreement"))?;
    Ok(())
}

// ---- reviews ----------------------------------------------------------

const REVIEW_SELECT: &str = "SELECT id, created_at, status, trace_id, connector, proposed_by, action, event, reasons, decided_by, decided_at, comment, result, action_index FROM reviews";

fn review_row(r: &Row) -> Result<Review> {
    fn parse<T: serde::de::DeserializeOwned>(what: &str, text: String) -> Result<T> {
        serde_json::from_str(&text)
            .map_err(|e| Error::store(format!("reading a review's {what}"), e))
    }
    let status: String = r.get(2);
    Ok(Review {
        id: r.get(0),
        created_at: r.get(1),
        status: ReviewStatus::parse(&status).unwrap_or(ReviewStatus::Pending),
        trace_id: r.get(3),
        connector: r.get(4),
        proposed_by: r.get(5),
        action: parse("action", r.get(6))?,
        event: parse("event", r.get(7))?,
        reasons: parse("reasons", r.get(8))?,
        decided_by: r.get(9),
        decided_at: r.get(10),
        comment: r.get(11),
        result: r.get(12),
        action_index: to_index(r.get(13)),
    })
}

pub(super) async fn enqueue_review(
    tx: &Transaction<'_>,
    r: &NewReview<'_>,
) -> Result<(i64, Anchor)> {
    let action = serde_json::to_string(r.action).unwrap_or_default();
    let event = serde_json::to_string(r.event).unwrap_or_default();
    let reasons = serde_json::to_string(r.reasons).unwrap_or_default();
    let id: i64 = tx
        .query_one(
            "INSERT INTO reviews (created_at, status, trace_id, connector, proposed_by, action, event, reasons, action_index)
             VALUES ($1, 'pending', $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            &[&now(), &r.event.trace_id, &r.connector, &r.proposed_by, &action, &event, &reasons, &index(r.action_index)],
        )
        .await
        .map_err(db("queueing a review"))?
        .get(0);
    let head = append(
        tx,
        &NewEntry {
            actor: r.proposed_by,
            action: "escalated",
            subject: &entries::subject(id),
            digest: None,
            detail: entries::escalated(r),
        },
    )
    .await?;
    Ok((id, head))
}

pub(super) async fn reviews(
    c: &impl GenericClient,
    status: Option<ReviewStatus>,
) -> Result<Vec<Review>> {
    let status = status.map(ReviewStatus::as_str);
    c.query(
        &format!(
            "{REVIEW_SELECT} WHERE ($1::text IS NULL OR status = $1) ORDER BY id DESC LIMIT {REVIEWS_LISTED}"
        ),
        &[&status],
    )
    .await
    .map_err(db("listing reviews"))?
    .iter()
    .map(review_row)
    .collect()
}

pub(super) async fn review(c: &impl GenericClient, id: i64) -> Result<Option<Review>> {
    c.query_opt(&format!("{REVIEW_SELECT} WHERE id = $1"), &[&id])
        .await
        .map_err(db("reading a review"))?
        .map(|r| review_row(&r))
        .transpose()
}

pub(super) async fn pending_reviews(c: &impl GenericClient) -> Result<u64> {
    let n: i64 = c
        .query_one("SELECT COUNT(*) FROM reviews WHERE status = 'pending'", &[])
        .await
        .map_err(db("counting reviews"))?
        .get(0);
    Ok(u64::try_from(n).unwrap_or(0))
}

/// How long the node that approved a review has to carry it out before
/// another node may.
pub(super) const REVIEW_LEASE: std::time::Duration = std::time::Duration::from_secs(60);

/// Decide a pending review: the row moves from `pending` in one statement,
/// so of two nodes deciding at once exactly one does; an approval leases
/// the execution to `node`.
pub(super) async fn decide_review(
    tx: &Transaction<'_>,
    d: &Decision<'_>,
    node: &str,
) -> Result<(Review, Anchor)> {
    let status = if d.approve {
        ReviewStatus::Approved
    } else {
        ReviewStatus::Rejected
    };
    let lease_until = d.approve.then(|| {
        humantime::format_rfc3339_micros(std::time::SystemTime::now() + REVIEW_LEASE).to_string()
    });
    let lease_node = d.approve.then_some(node);
    let decided = tx
        .query_opt(
                            "UPDATE reviews SET status = $2, decided_by = $3, decided_at = $4, comment = $5, lease_node = $6, lease_until = $7
                 WHERE id = $1 AND status = 'pending'
                 RETURNING id, created_at, status, trace_id, connector, proposed_by, action, event, reasons, decided_by, decided_at, comment, result, action_index"
            ,
            &[&d.id, &status.as_str(), &d.reviewer, &now(), &d.comment, &lease_node, &lease_until],
        )
        .await
        .map_err(db("deciding a review"))?;
    let Some(row) = decided else {
        let current = tx
            .query_opt("SELECT status FROM reviews WHERE id = $1", &[&d.id])
            .await
            .map_err(db("reading a review"))?;
        return Err(match current {
            None => Error::NotFound(format!("no review {}", d.id)),
            Some(r) => Error::Refused(format!(
                "review {} is already {}",
                d.id,
                r.get::<_, String>(0)
            )),
        });
    };
    let review = review_row(&row)?;
    // The decision is also a label of the action it was about.
    insert_label(
        tx,
        &NewLabel {
            event_id: &review.event.id,
            action_index: review.action_index,
            label: if d.approve { "approve" } else { "reject" },
            source: LABEL_FROM_REVIEW,
            actor: d.reviewer,
            comment: d.comment,
        },
    )
    .await?;
    let (action, detail) = entries::decided(d, &review.proposed_by, review.connector.as_deref());
    let head = append(
        tx,
        &NewEntry {
            actor: d.reviewer,
            action,
            subject: &entries::subject(d.id),
            digest: None,
            detail,
        },
    )
    .await?;
    Ok((review, head))
}

pub(super) async fn record_review_result(
    tx: &Transaction<'_>,
    r: &ReviewResult<'_>,
) -> Result<Anchor> {
    let status = if r.executed {
        ReviewStatus::Executed
    } else {
        ReviewStatus::Failed
    };
    let row = tx
        .query_opt(
            "UPDATE reviews SET status = $2, result = $3, lease_node = NULL, lease_until = NULL
             WHERE id = $1 RETURNING proposed_by, connector",
            &[&r.id, &status.as_str(), &r.result],
        )
        .await
        .map_err(db("recording a review result"))?
        .ok_or_else(|| Error::NotFound(format!("no review {}", r.id)))?;
    let (proposed_by, connector): (String, Option<String>) = (row.get(0), row.get(1));
    let (action, detail) = entries::result(r, &proposed_by, connector.as_deref());
    append(
        tx,
        &NewEntry {
            actor: crate::registry::HOST_ACTOR,
            action,
            subject: &entries::subject(r.id),
            digest: None,
            detail,
        },
    )
    .await
}

// ---- decisions and labels ---------------------------------------------

pub(super) async fn insert_decisions(
    tx: &Transaction<'_>,
    decisions: &[DecisionRecord],
) -> Result<()> {
    if decisions.is_empty() {
        return Ok(());
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO decisions (event_id, action_index, trace_id, action_kind, proposed_by, steps, at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (event_id, action_index) DO UPDATE SET trace_id = $3, action_kind = $4, proposed_by = $5, steps = $6, at = $7",
        )
        .await
        .map_err(db("recording decisions"))?;
    for d in decisions {
        tx.execute(
            &stmt,
            &[
                &d.event_id,
                &index(d.action_index),
                &d.trace_id,
                &d.action_kind,
                &d.proposed_by,
                &d.steps.to_string(),
                &d.at,
            ],
        )
        .await
        .map_err(db("recording decisions"))?;
    }
    Ok(())
}

pub(super) async fn insert_label(tx: &Transaction<'_>, l: &NewLabel<'_>) -> Result<Label> {
    check_label(l.label)?;
    let at = now();
    let id: i64 = tx
        .query_one(
            "INSERT INTO labels (event_id, action_index, label, source, actor, comment, at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            &[&l.event_id, &index(l.action_index), &l.label, &l.source, &l.actor, &l.comment, &at],
        )
        .await
        .map_err(db("recording a label"))?
        .get(0);
    Ok(Label {
        id,
        event_id: l.event_id.to_string(),
        action_index: l.action_index,
        label: l.label.to_string(),
        source: l.source.to_string(),
        actor: l.actor.to_string(),
        comment: l.comment.map(str::to_string),
        at,
    })
}

const DECISION_SELECT: &str =
    "SELECT event_id, action_index, trace_id, action_kind, proposed_by, steps, at FROM decisions";
const LABEL_SELECT: &str =
    "SELECT id, event_id, action_index, label, source, actor, comment, at FROM labels";

fn decision_row(r: &Row) -> DecisionRecord {
    DecisionRecord {
        event_id: r.get(0),
        action_index: to_index(r.get(1)),
        trace_id: r.get(2),
        action_kind: r.get(3),
        proposed_by: r.get(4),
        steps: serde_json::from_str(&r.get::<_, String>(5)).unwrap_or(serde_json::Value::Null),
        at: r.get(6),
    }
}

fn label_row(r: &Row, at: usize) -> Label {
    Label {
        id: r.get(at),
        event_id: r.get(at + 1),
        action_index: to_index(r.get(at + 2)),
        label: r.get(at + 3),
        source: r.get(at + 4),
        actor: r.get(at + 5),
        comment: r.get(at + 6),
        at: r.get(at + 7),
    }
}

pub(super) async fn decision(
    c: &impl GenericClient,
    event_id: &str,
    action_index: usize,
) -> Result<Option<DecisionRecord>> {
    Ok(c.query_opt(
        &format!("{DECISION_SELECT} WHERE event_id = $1 AND action_index = $2"),
        &[&event_id, &index(action_index)],
    )
    .await
    .map_err(db("reading a decision"))?
    .map(|r| decision_row(&r)))
}

pub(super) async fn add_label(tx: &Transaction<'_>, l: &NewLabel<'_>) -> Result<(Label, Anchor)> {
    let Some(d) = decision(&**tx, l.event_id, l.action_index).await? else {
        return Err(Error::NotFound(format!(
            "no recorded decision for action {} of event {:?}: labels apply to actions an audited pipeline recorded (`evos up`, or `evos run --record`)",
            l.action_index, l.event_id
        )));
    };
    let label = insert_label(tx, l).await?;
    let (subject, detail) = feedback_entry(l, &d, label.id);
    let head = append(
        tx,
        &NewEntry {
            actor: l.actor,
            action: "feedback",
            subject: &subject,
            digest: None,
            detail,
        },
    )
    .await?;
    Ok((label, head))
}

pub(super) async fn labels(c: &impl GenericClient, event_id: &str) -> Result<Vec<Label>> {
    Ok(c.query(
        &format!("{LABEL_SELECT} WHERE event_id = $1 ORDER BY id"),
        &[&event_id],
    )
    .await
    .map_err(db("reading labels"))?
    .iter()
    .map(|r| label_row(r, 0))
    .collect())
}

pub(super) async fn labeled(
    c: &impl GenericClient,
    since: Option<&str>,
) -> Result<Vec<(DecisionRecord, Label)>> {
    let rows = c
        .query(
            "SELECT d.event_id, d.action_index, d.trace_id, d.action_kind, d.proposed_by, d.steps, d.at,
                    l.id, l.event_id, l.action_index, l.label, l.source, l.actor, l.comment, l.at
             FROM decisions d
             JOIN labels l ON l.event_id = d.event_id AND l.action_index = d.action_index
             WHERE l.id = (SELECT MAX(id) FROM labels m WHERE m.event_id = d.event_id AND m.action_index = d.action_index)
               AND ($1::text IS NULL OR l.at >= $1)
             ORDER BY l.id",
            &[&since],
        )
        .await
        .map_err(db("reading labels"))?;
    Ok(rows
        .iter()
        .map(|r| (decision_row(r), label_row(r, 7)))
        .collect())
}

// ---- recordings -------------------------------------------------------

pub(super) async fn insert_recording(tx: &Transaction<'_>, r: &NewRecording) -> Result<()> {
    let redactions = serde_json::to_string(&r.redactions).unwrap_or_else(|_| "{}".into());
    let id: i64 = one_cached(
        tx,
        "INSERT INTO recordings (trace_id, event_id, event_kind, connector, reason, redactions, at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        &[
            &r.trace_id,
            &r.event_id,
            &r.event_kind,
            &r.connector,
            &r.reason,
            &redactions,
            &now(),
        ],
    )
    .await
    .map_err(db("recording an event"))?
    .get(0);
    let stmt = tx
        .prepare_cached(
            "INSERT INTO recorded_calls (recording_id, step, action_index, plugin, kind, version, digest, input, output, outcome, error, duration_us, fuel)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .await
        .map_err(db("recording an event"))?;
    for c in &r.calls {
        tx.execute(
            &stmt,
            &[
                &id,
                &c.step,
                &c.action_index.map(index),
                &c.plugin,
                &c.kind,
                &c.version,
                &c.digest,
                &c.input.to_string(),
                &c.output.to_string(),
                &c.outcome,
                &c.error,
                &i64::try_from(c.duration_us).unwrap_or(i64::MAX),
                &i64::try_from(c.fuel).unwrap_or(i64::MAX),
            ],
        )
        .await
        .map_err(db("recording an event"))?;
    }
    Ok(())
}

const CALL_SELECT: &str = "SELECT c.id, c.recording_id, r.trace_id, r.event_id, r.at,
        c.step, c.action_index, c.plugin, c.kind, c.version, c.digest, c.input, c.output,
        c.outcome, c.error, c.duration_us, c.fuel
    FROM recorded_calls c JOIN recordings r ON r.id = c.recording_id";

fn call_row(r: &Row) -> StoredCall {
    let json =
        |i: usize| serde_json::from_str(&r.get::<_, String>(i)).unwrap_or(serde_json::Value::Null);
    StoredCall {
        id: r.get(0),
        recording_id: r.get(1),
        trace_id: r.get(2),
        event_id: r.get(3),
        at: r.get(4),
        call: RecordedCall {
            step: r.get(5),
            action_index: r
                .get::<_, Option<i32>>(6)
                .and_then(|i| usize::try_from(i).ok()),
            plugin: r.get(7),
            kind: r.get(8),
            version: r.get(9),
            digest: r.get(10),
            input: json(11),
            output: json(12),
            outcome: r.get(13),
            error: r.get(14),
            duration_us: u64::try_from(r.get::<_, i64>(15)).unwrap_or(0),
            fuel: u64::try_from(r.get::<_, i64>(16)).unwrap_or(0),
        },
    }
}

fn limit(limit: Option<usize>) -> Option<i64> {
    limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX))
}

pub(super) async fn recorded_calls(
    c: &impl GenericClient,
    f: &RecordingFilter<'_>,
) -> Result<Vec<StoredCall>> {
    let rows = c
        .query(
            &format!(
                "{CALL_SELECT} WHERE ($1::text IS NULL OR c.plugin = $1) AND ($2::text IS NULL OR r.trace_id = $2)
                   AND ($3::text IS NULL OR r.at >= $3)
                 ORDER BY c.id DESC LIMIT $4"
            ),
            &[&f.plugin, &f.trace_id, &f.since, &limit(f.limit)],
        )
        .await
        .map_err(db("reading recordings"))?;
    let mut calls: Vec<StoredCall> = rows.iter().map(call_row).collect();
    calls.reverse();
    Ok(calls)
}

pub(super) async fn recordings(
    c: &impl GenericClient,
    f: &RecordingFilter<'_>,
) -> Result<Vec<Recording>> {
    let rows = c
        .query(
            "SELECT id, trace_id, event_id, event_kind, connector, reason, redactions, at FROM recordings
             WHERE ($1::text IS NULL OR trace_id = $1) AND ($2::text IS NULL OR at >= $2) ORDER BY id DESC LIMIT $3",
            &[&f.trace_id, &f.since, &limit(f.limit)],
        )
        .await
        .map_err(db("reading recordings"))?;
    let mut out: Vec<Recording> = rows
        .iter()
        .map(|r| Recording {
            id: r.get(0),
            trace_id: r.get(1),
            event_id: r.get(2),
            event_kind: r.get(3),
            connector: r.get(4),
            reason: r.get(5),
            redactions: serde_json::from_str(&r.get::<_, String>(6)).unwrap_or_default(),
            at: r.get(7),
            calls: Vec::new(),
        })
        .collect();
    out.reverse();
    let ids: Vec<i64> = out.iter().map(|r| r.id).collect();
    let calls = c
        .query(
            &format!("{CALL_SELECT} WHERE c.recording_id = ANY($1) ORDER BY c.id"),
            &[&ids],
        )
        .await
        .map_err(db("reading recordings"))?;
    let mut by_recording: BTreeMap<i64, Vec<RecordedCall>> = BTreeMap::new();
    for row in &calls {
        let call = call_row(row);
        by_recording
            .entry(call.recording_id)
            .or_default()
            .push(call.call);
    }
    for rec in &mut out {
        rec.calls = by_recording.remove(&rec.id).unwrap_or_default();
    }
    Ok(out)
}

pub(super) async fn prune_recordings(
    tx: &Transaction<'_>,
    before: Option<&str>,
    max_rows: Option<u64>,
    actor: &str,
) -> Result<(Pruned, Option<Anchor>)> {
    let count = || async {
        tx.query_one("SELECT COUNT(*) FROM recordings", &[])
            .await
            .map(|r| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0))
            .map_err(db("pruning recordings"))
    };
    // Calls go with their recording (ON DELETE CASCADE).
    let expired = match before {
        Some(t) => tx
            .execute("DELETE FROM recordings WHERE at < $1", &[&t])
            .await
            .map_err(db("pruning recordings"))?,
        None => 0,
    };
    let over_limit = match max_rows {
        Some(max) => {
            let n = count().await?;
            if n > max {
                let excess = i64::try_from(n - max).unwrap_or(i64::MAX);
                tx.execute(
                    "DELETE FROM recordings WHERE id IN (SELECT id FROM recordings ORDER BY id LIMIT $1)",
                    &[&excess],
                )
                .await
                .map_err(db("pruning recordings"))?
            } else {
                0
            }
        }
        None => 0,
    };
    let pruned = Pruned {
        expired,
        over_limit,
        kept: count().await?,
    };
    let head = if expired + over_limit > 0 {
        Some(
            append(
                tx,
                &NewEntry {
                    actor,
                    action: "recording-prune",
                    subject: "recordings",
                    digest: None,
                    detail: prune_detail(&pruned, before, max_rows),
                },
            )
            .await?,
        )
    } else {
        None
    };
    Ok((pruned, head))
}

// ---- drift ------------------------------------------------------------

pub(super) async fn drift(
    c: &impl GenericClient,
    version_id: i64,
) -> Result<(Option<String>, Option<String>)> {
    Ok(c.query_opt(
        "SELECT reference, judged FROM drift WHERE version_id = $1",
        &[&version_id],
    )
    .await
    .map_err(db("reading drift"))?
    .map_or((None, None), |r| (r.get(0), r.get(1))))
}

// ---- tokens -----------------------------------------------------------

fn token_row(r: &Row) -> Token {
    let role: String = r.get(2);
    Token {
        id: r.get(0),
        name: r.get(1),
        // An unknown role reads as the least privileged one.
        role: role.parse().unwrap_or(Role::Auditor),
        scope: r.get(3),
        created_at: r.get(4),
        revoked_at: r.get(5),
    }
}

pub(super) async fn tokens(c: &impl GenericClient) -> Result<Vec<Token>> {
    Ok(c.query(
        "SELECT id, name, role, scope, created_at, revoked_at FROM tokens ORDER BY created_at",
        &[],
    )
    .await
    .map_err(db("listing tokens"))?
    .iter()
    .map(token_row)
    .collect())
}

pub(super) async fn token(c: &impl GenericClient, id: &str) -> Result<Option<(Token, String)>> {
    Ok(c
        .query_opt(
            "SELECT id, name, role, scope, created_at, revoked_at, secret_sha256 FROM tokens WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(db("checking a token"))?
        .map(|r| (token_row(&r), r.get(6))))
}

// ---- kv ---------------------------------------------------------------

// kv writes run in a group commit, which has made and locked the usage row
// of every namespace its writes touch (`commit_group`), so concurrent
// writers of every node check a namespace's quota one at a time.

/// A namespace's (keys, bytes), from its usage row the group locked.
async fn kv_usage(tx: &Transaction<'_>, ns: &str) -> Result<(i64, i64)> {
    Ok(opt_cached(
        tx,
        "SELECT keys, bytes FROM kv_usage WHERE namespace = $1",
        &[&ns],
    )
    .await
    .map_err(db("reading kv usage"))?
    .map_or((0, 0), |r| (r.get(0), r.get(1))))
}

/// A kv write with its quota check; `Ok(Err(why))` when the quota refused it.
pub(super) async fn kv_set(
    tx: &Transaction<'_>,
    ns: &str,
    key: &str,
    value: &[u8],
    quota: KvQuota,
) -> Result<std::result::Result<(), String>> {
    let (keys, bytes) = kv_usage(tx, ns).await?;
    let old: Option<i64> = opt_cached(
        tx,
        "SELECT octet_length(value)::bigint FROM kv WHERE namespace = $1 AND key = $2",
        &[&ns, &key],
    )
    .await
    .map_err(db("reading kv"))?
    .map(|r| r.get(0));
    if old.is_none() && i128::from(keys) >= i128::from(quota.max_keys) {
        return Ok(Err(format!(
            "the namespace holds {keys} keys, the limit `max-keys` is {}",
            quota.max_keys
        )));
    }
    let key_len = key.len() as i64;
    let after = bytes - old.map_or(0, |old| old + key_len) + key_len + value.len() as i64;
    if i128::from(after) > i128::from(quota.max_total_bytes) {
        return Ok(Err(crate::capability::kv::total_bytes_refusal(
            after.max(0) as u64,
            quota,
        )));
    }
    run_cached(
        tx,
        "INSERT INTO kv (namespace, key, value) VALUES ($1, $2, $3)
         ON CONFLICT (namespace, key) DO UPDATE SET value = $3",
        &[&ns, &key, &value],
    )
    .await
    .map_err(db("writing kv"))?;
    let added_keys = i64::from(old.is_none());
    let added_bytes = match old {
        Some(old) => value.len() as i64 - old,
        None => key_len + value.len() as i64,
    };
    run_cached(
        tx,
        "UPDATE kv_usage SET keys = keys + $2, bytes = bytes + $3 WHERE namespace = $1",
        &[&ns, &added_keys, &added_bytes],
    )
    .await
    .map_err(db("updating kv usage"))?;
    Ok(Ok(()))
}

pub(super) async fn kv_delete(tx: &Transaction<'_>, ns: &str, key: &str) -> Result<bool> {
    let old: Option<i64> = opt_cached(
        tx,
        "DELETE FROM kv WHERE namespace = $1 AND key = $2 RETURNING octet_length(value)::bigint",
        &[&ns, &key],
    )
    .await
    .map_err(db("deleting kv"))?
    .map(|r| r.get(0));
    match old {
        Some(old) => {
            run_cached(
                tx,
                "UPDATE kv_usage SET keys = keys - 1, bytes = bytes - $2 WHERE namespace = $1",
                &[&ns, &(key.len() as i64 + old)],
            )
            .await
            .map_err(db("updating kv usage"))?;
            Ok(true)
        }
        None => Ok(false),
    }
}

// ---- event sources ----------------------------------------------------

/// Mark an event processed inside `tx`; refused when it already was.
pub(super) async fn mark_processed(tx: &Transaction<'_>, p: &Processed) -> Result<()> {
    let inserted = run_cached(
        tx,
        "INSERT INTO processed_events (source, event_id, at) VALUES ($1, $2, $3)
             ON CONFLICT (source, event_id) DO NOTHING",
        &[&p.source, &p.event_id, &now()],
    )
    .await
    .map_err(db("marking an event processed"))?;
    if inserted == 0 {
        return Err(already_processed(p));
    }
    Ok(())
}

pub(super) async fn processed(
    c: &impl GenericClient,
    source: &str,
    event_id: &str,
) -> Result<bool> {
    Ok(c.query_opt(
        "SELECT 1 FROM processed_events WHERE source = $1 AND event_id = $2",
        &[&source, &event_id],
    )
    .await
    .map_err(db("looking up a processed event"))?
    .is_some())
}

pub(super) async fn dead_letter(
    tx: &Transaction<'_>,
    l: &NewDeadLetter<'_>,
) -> Result<(i64, Anchor)> {
    use sha2::Digest;
    let sha = hex::encode(sha2::Sha256::digest(l.payload));
    let id: i64 = tx
        .query_one(
            "INSERT INTO dead_letters (source, connector, subject, sequence, delivered, error, payload, payload_sha256, at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
            &[
                &l.source,
                &l.connector,
                &l.subject,
                &i64::try_from(l.sequence).unwrap_or(i64::MAX),
                &i64::try_from(l.delivered).unwrap_or(i64::MAX),
                &l.error,
                &l.payload,
                &sha,
                &now(),
            ],
        )
        .await
        .map_err(db("keeping a dead letter"))?
        .get(0);
    let (subject, detail) = dead_letter_entry(l, id, &sha);
    let head = append(
        tx,
        &NewEntry {
            actor: l.connector,
            action: "dead-letter",
            subject: &subject,
            digest: Some(&sha),
            detail,
        },
    )
    .await?;
    Ok((id, head))
}

pub(super) async fn dead_letters(
    c: &impl GenericClient,
    source: Option<&str>,
) -> Result<Vec<DeadLetter>> {
    let rows = c
        .query(
            &format!(
                "SELECT id, source, connector, subject, sequence, delivered, error, payload, payload_sha256, at
                 FROM dead_letters WHERE ($1::text IS NULL OR source = $1) ORDER BY id DESC LIMIT {REVIEWS_LISTED}"
            ),
            &[&source],
        )
        .await
        .map_err(db("listing dead letters"))?;
    Ok(rows
        .iter()
        .map(|r| DeadLetter {
            id: r.get(0),
            source: r.get(1),
            connector: r.get(2),
            subject: r.get(3),
            sequence: u64::try_from(r.get::<_, i64>(4)).unwrap_or(0),
            delivered: u64::try_from(r.get::<_, i64>(5)).unwrap_or(0),
            error: r.get(6),
            payload: r.get(7),
            payload_sha256: r.get(8),
            at: r.get(9),
        })
        .collect())
}
