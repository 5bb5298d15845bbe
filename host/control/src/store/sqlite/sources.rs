//! What event sources keep: the events processed and the dead letters.

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use sha2::{Digest, Sha256};

use super::{SqliteStore, db_err};
use crate::Result;
use crate::audit::{self, NewEntry};
use crate::store::{
    DeadLetter, NewDeadLetter, Processed, REVIEWS_LISTED, already_processed, dead_letter_entry, now,
};

/// Mark an event processed inside `tx`; refused when it already was.
pub(super) fn mark(tx: &Transaction<'_>, p: &Processed) -> Result<()> {
    let inserted = tx
        .prepare_cached(
            "INSERT INTO processed_events (source, event_id, at) VALUES (?1, ?2, ?3)
             ON CONFLICT(source, event_id) DO NOTHING",
        )
        .and_then(|mut s| s.execute(params![p.source, p.event_id, now()]))
        .map_err(db_err("marking an event processed"))?;
    if inserted == 0 {
        return Err(already_processed(p));
    }
    Ok(())
}

pub(super) fn processed(conn: &Connection, source: &str, event_id: &str) -> Result<bool> {
    conn.prepare_cached("SELECT 1 FROM processed_events WHERE source = ?1 AND event_id = ?2")
        .and_then(|mut s| {
            s.query_row(params![source, event_id], |_| Ok(()))
                .optional()
        })
        .map(|found| found.is_some())
        .map_err(db_err("looking up a processed event"))
}

pub(super) fn dead_letter(store: &SqliteStore, l: &NewDeadLetter<'_>) -> Result<i64> {
    let sha = hex::encode(Sha256::digest(l.payload));
    store.transaction("dead letter", |tx| {
        tx.execute(
            "INSERT INTO dead_letters (source, connector, subject, sequence, delivered, error, payload, payload_sha256, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                l.source,
                l.connector,
                l.subject,
                i64::try_from(l.sequence).unwrap_or(i64::MAX),
                i64::try_from(l.delivered).unwrap_or(i64::MAX),
                l.error,
                l.payload,
                sha,
                now()
            ],
        )
        .map_err(db_err("keeping a dead letter"))?;
        let id = tx.last_insert_rowid();
        let (subject, detail) = dead_letter_entry(l, id, &sha);
        audit::append(
            tx,
            NewEntry {
                actor: l.connector,
                action: "dead-letter",
                subject: &subject,
                digest: Some(&sha),
                detail,
            },
        )?;
        Ok(id)
    })
}

pub(super) fn dead_letters(conn: &Connection, source: Option<&str>) -> Result<Vec<DeadLetter>> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT id, source, connector, subject, sequence, delivered, error, payload, payload_sha256, at
             FROM dead_letters WHERE (?1 IS NULL OR source = ?1) ORDER BY id DESC LIMIT {REVIEWS_LISTED}"
        ))
        .map_err(db_err("listing dead letters"))?;
    let rows = stmt
        .query_map([source], |r| {
            Ok(DeadLetter {
                id: r.get(0)?,
                source: r.get(1)?,
                connector: r.get(2)?,
                subject: r.get(3)?,
                sequence: u64::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
                delivered: u64::try_from(r.get::<_, i64>(5)?).unwrap_or(0),
                error: r.get(6)?,
                payload: r.get(7)?,
                payload_sha256: r.get(8)?,
                at: r.get(9)?,
            })
        })
        .map_err(db_err("listing dead letters"))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err("listing dead letters"))
}
