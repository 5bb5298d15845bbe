//! Recorded events and their calls (already redacted when they get here).

use rusqlite::{Connection, Transaction, params};

use super::{SqliteStore, db_err};
use crate::audit::{self, NewEntry};
use crate::recording::Pruned;
use crate::store::{NewRecording, RecordedCall, Recording, RecordingFilter, StoredCall, now};
use crate::{Error, Result};

pub(super) fn insert(tx: &Transaction<'_>, r: &NewRecording) -> Result<()> {
    let redactions = serde_json::to_string(&r.redactions).unwrap_or_else(|_| "{}".into());
    tx.prepare_cached(
        "INSERT INTO recordings (trace_id, event_id, event_kind, connector, reason, redactions, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut s| {
        s.execute(params![
            r.trace_id,
            r.event_id,
            r.event_kind,
            r.connector,
            r.reason,
            redactions,
            now()
        ])
    })
    .map_err(db_err("recording an event"))?;
    let id = tx.last_insert_rowid();
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO recorded_calls (recording_id, step, action_index, plugin, kind, version, digest, input, output, outcome, error, duration_us, fuel)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )
        .map_err(db_err("recording an event"))?;
    for c in &r.calls {
        stmt.execute(params![
            id,
            c.step,
            c.action_index.map(|i| i as i64),
            c.plugin,
            c.kind,
            c.version,
            c.digest,
            c.input.to_string(),
            c.output.to_string(),
            c.outcome,
            c.error,
            i64::try_from(c.duration_us).unwrap_or(i64::MAX),
            i64::try_from(c.fuel).unwrap_or(i64::MAX),
        ])
        .map_err(db_err("recording an event"))?;
    }
    Ok(())
}

const CALL_SELECT: &str = "SELECT c.id, c.recording_id, r.trace_id, r.event_id, r.at,
        c.step, c.action_index, c.plugin, c.kind, c.version, c.digest, c.input, c.output,
        c.outcome, c.error, c.duration_us, c.fuel
    FROM recorded_calls c JOIN recordings r ON r.id = c.recording_id";

fn call_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredCall> {
    let json = |i: usize| -> rusqlite::Result<serde_json::Value> {
        let text: String = r.get(i)?;
        Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    };
    Ok(StoredCall {
        id: r.get(0)?,
        recording_id: r.get(1)?,
        trace_id: r.get(2)?,
        event_id: r.get(3)?,
        at: r.get(4)?,
        call: RecordedCall {
            step: r.get(5)?,
            action_index: r
                .get::<_, Option<i64>>(6)?
                .and_then(|i| usize::try_from(i).ok()),
            plugin: r.get(7)?,
            kind: r.get(8)?,
            version: r.get(9)?,
            digest: r.get(10)?,
            input: json(11)?,
            output: json(12)?,
            outcome: r.get(13)?,
            error: r.get(14)?,
            duration_us: u64::try_from(r.get::<_, i64>(15)?).unwrap_or(0),
            fuel: u64::try_from(r.get::<_, i64>(16)?).unwrap_or(0),
        },
    })
}

/// `limit` as SQL: the newest rows are read newest first (`LIMIT -1` is
/// no limit in SQLite) and turned back to oldest first.
fn sql_limit(limit: Option<usize>) -> i64 {
    limit.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX))
}

pub(super) fn calls(conn: &Connection, f: &RecordingFilter<'_>) -> Result<Vec<StoredCall>> {
    let sql = format!(
        "{CALL_SELECT} WHERE (?1 IS NULL OR c.plugin = ?1) AND (?2 IS NULL OR r.trace_id = ?2)
           AND (?3 IS NULL OR r.at >= ?3)
         ORDER BY c.id DESC LIMIT ?4"
    );
    let mut stmt = conn.prepare(&sql).map_err(db_err("reading recordings"))?;
    let mut rows = stmt
        .query_map(
            params![f.plugin, f.trace_id, f.since, sql_limit(f.limit)],
            call_from_row,
        )
        .map_err(db_err("reading recordings"))?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err("reading recordings"))?;
    rows.reverse();
    Ok(rows)
}

pub(super) fn recordings(conn: &Connection, f: &RecordingFilter<'_>) -> Result<Vec<Recording>> {
    let mut stmt = conn
        .prepare(
            "SELECT id, trace_id, event_id, event_kind, connector, reason, redactions, at FROM recordings
             WHERE (?1 IS NULL OR trace_id = ?1) AND (?2 IS NULL OR at >= ?2) ORDER BY id DESC LIMIT ?3",
        )
        .map_err(db_err("reading recordings"))?;
    let rows = stmt
        .query_map(params![f.trace_id, f.since, sql_limit(f.limit)], |r| {
            let redactions: String = r.get(6)?;
            Ok(Recording {
                id: r.get(0)?,
                trace_id: r.get(1)?,
                event_id: r.get(2)?,
                event_kind: r.get(3)?,
                connector: r.get(4)?,
                reason: r.get(5)?,
                redactions: serde_json::from_str(&redactions).unwrap_or_default(),
                at: r.get(7)?,
                calls: Vec::new(),
            })
        })
        .map_err(db_err("reading recordings"))?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err("reading recordings"))?;
    let mut rows = rows;
    rows.reverse();
    let mut stmt = conn
        .prepare_cached(&format!(
            "{CALL_SELECT} WHERE c.recording_id = ?1 ORDER BY c.id"
        ))
        .map_err(db_err("reading recordings"))?;
    for rec in &mut rows {
        rec.calls = stmt
            .query_map([rec.id], call_from_row)
            .map_err(db_err("reading recordings"))?
            .map(|c| c.map(|c| c.call))
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db_err("reading recordings"))?;
    }
    Ok(rows)
}

pub(super) fn prune(
    store: &SqliteStore,
    before: Option<&str>,
    max_rows: Option<u64>,
    actor: &str,
) -> Result<Pruned> {
    store.transaction("pruning recordings", |tx| {
        let count = |tx: &Transaction<'_>| -> Result<u64> {
            tx.query_row("SELECT COUNT(*) FROM recordings", [], |r| r.get::<_, i64>(0))
                .map(|n| u64::try_from(n).unwrap_or(0))
                .map_err(db_err("pruning recordings"))
        };
        let delete = |tx: &Transaction<'_>, condition: &str, arg: &dyn rusqlite::ToSql| {
            tx.execute(
                &format!(
                    "DELETE FROM recorded_calls WHERE recording_id IN (SELECT id FROM recordings WHERE {condition})"
                ),
                [arg],
            )
            .and_then(|_| {
                tx.execute(
                    &format!("DELETE FROM recordings WHERE {condition}"),
                    [arg],
                )
            })
            .map(|n| n as u64)
            .map_err(db_err("pruning recordings"))
        };
        let expired = match before {
            Some(t) => delete(tx, "at < ?1", &t)?,
            None => 0,
        };
        let over_limit = match max_rows.map(|m| (m, count(tx))) {
            Some((max, Ok(n))) if n > max => {
                let excess = i64::try_from(n - max).unwrap_or(i64::MAX);
                delete(
                    tx,
                    "id IN (SELECT id FROM recordings ORDER BY id LIMIT ?1)",
                    &excess,
                )?
            }
            Some((_, Err(e))) => return Err(e),
            _ => 0,
        };
        let pruned = Pruned {
            expired,
            over_limit,
            kept: count(tx)?,
        };
        if expired + over_limit > 0 {
            audit::append(
                tx,
                NewEntry {
                    actor,
                    action: "recording-prune",
                    subject: "recordings",
                    digest: None,
                    detail: crate::store::prune_detail(&pruned, before, max_rows),
                },
            )
            .map_err(Error::from)?;
        }
        Ok(pruned)
    })
}
