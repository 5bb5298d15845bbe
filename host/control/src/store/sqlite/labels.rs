//! Decision records and labels.

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{SqliteStore, db_err};
use crate::audit::{self, NewEntry};
use crate::store::{DecisionRecord, Label, NewLabel, check_label, now};
use crate::{Error, Result};

pub(super) fn insert_decisions(tx: &Transaction<'_>, decisions: &[DecisionRecord]) -> Result<()> {
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO decisions (event_id, action_index, trace_id, action_kind, proposed_by, steps, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(event_id, action_index) DO UPDATE SET trace_id = ?3, action_kind = ?4, proposed_by = ?5, steps = ?6, at = ?7",
        )
        .map_err(db_err("recording decisions"))?;
    for d in decisions {
        stmt.execute(params![
            d.event_id,
            d.action_index as i64,
            d.trace_id,
            d.action_kind,
            d.proposed_by,
            d.steps.to_string(),
            d.at
        ])
        .map_err(db_err("recording decisions"))?;
    }
    Ok(())
}

/// Keep a label inside `tx`, without an audit entry of its own (a review
/// decision's entry covers it).
pub(super) fn insert_label(tx: &Transaction<'_>, l: &NewLabel<'_>) -> Result<Label> {
    check_label(l.label)?;
    let at = now();
    tx.prepare_cached(
        "INSERT INTO labels (event_id, action_index, label, source, actor, comment, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut s| {
        s.execute(params![
            l.event_id,
            l.action_index as i64,
            l.label,
            l.source,
            l.actor,
            l.comment,
            at
        ])
    })
    .map_err(db_err("recording a label"))?;
    Ok(Label {
        id: tx.last_insert_rowid(),
        event_id: l.event_id.to_string(),
        action_index: l.action_index,
        label: l.label.to_string(),
        source: l.source.to_string(),
        actor: l.actor.to_string(),
        comment: l.comment.map(str::to_string),
        at,
    })
}

pub(super) fn decision(
    conn: &Connection,
    event_id: &str,
    action_index: usize,
) -> Result<Option<DecisionRecord>> {
    conn.prepare_cached(&format!(
        "{DECISION_SELECT} WHERE event_id = ?1 AND action_index = ?2"
    ))
    .and_then(|mut s| {
        s.query_row(params![event_id, action_index as i64], decision_from_row)
            .optional()
    })
    .map_err(db_err("reading a decision"))
}

pub(super) fn add(store: &SqliteStore, l: &NewLabel<'_>) -> Result<Label> {
    store.transaction("label", |tx| {
        let Some(d) = decision(tx, l.event_id, l.action_index)? else {
            return Err(Error::NotFound(format!(
                "no recorded decision for action {} of event {:?}: labels apply to actions an audited pipeline recorded (`evos up`, or `evos run --record`)",
                l.action_index, l.event_id
            )));
        };
        let label = insert_label(tx, l)?;
        let (subject, detail) = crate::store::feedback_entry(l, &d, label.id);
        audit::append(
            tx,
            NewEntry {
                actor: l.actor,
                action: "feedback",
                subject: &subject,
                digest: None,
                detail,
            },
        )?;
        Ok(label)
    })
}

const DECISION_SELECT: &str =
    "SELECT event_id, action_index, trace_id, action_kind, proposed_by, steps, at FROM decisions";
const LABEL_SELECT: &str =
    "SELECT id, event_id, action_index, label, source, actor, comment, at FROM labels";

fn decision_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DecisionRecord> {
    let steps: String = r.get(5)?;
    Ok(DecisionRecord {
        event_id: r.get(0)?,
        action_index: usize::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
        trace_id: r.get(2)?,
        action_kind: r.get(3)?,
        proposed_by: r.get(4)?,
        steps: serde_json::from_str(&steps).unwrap_or(serde_json::Value::Null),
        at: r.get(6)?,
    })
}

fn label_from_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Label> {
    Ok(Label {
        id: r.get(at)?,
        event_id: r.get(at + 1)?,
        action_index: usize::try_from(r.get::<_, i64>(at + 2)?).unwrap_or(0),
        label: r.get(at + 3)?,
        source: r.get(at + 4)?,
        actor: r.get(at + 5)?,
        comment: r.get(at + 6)?,
        at: r.get(at + 7)?,
    })
}

pub(super) fn of_event(conn: &Connection, event_id: &str) -> Result<Vec<Label>> {
    let mut stmt = conn
        .prepare(&format!("{LABEL_SELECT} WHERE event_id = ?1 ORDER BY id"))
        .map_err(db_err("reading labels"))?;
    let rows = stmt
        .query_map([event_id], |r| label_from_row(r, 0))
        .map_err(db_err("reading labels"))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err("reading labels"))
}

pub(super) fn labeled(
    conn: &Connection,
    since: Option<&str>,
) -> Result<Vec<(DecisionRecord, Label)>> {
    // The newest label of each labelled action.
    let sql = "SELECT d.event_id, d.action_index, d.trace_id, d.action_kind, d.proposed_by, d.steps, d.at,
                      l.id, l.event_id, l.action_index, l.label, l.source, l.actor, l.comment, l.at
               FROM decisions d
               JOIN labels l ON l.event_id = d.event_id AND l.action_index = d.action_index
               WHERE l.id = (SELECT MAX(id) FROM labels m WHERE m.event_id = d.event_id AND m.action_index = d.action_index)
                 AND (?1 IS NULL OR l.at >= ?1)
               ORDER BY l.id";
    let mut stmt = conn.prepare(sql).map_err(db_err("reading labels"))?;
    let rows = stmt
        .query_map([since], |r| {
            Ok((decision_from_row(r)?, label_from_row(r, 7)?))
        })
        .map_err(db_err("reading labels"))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err("reading labels"))
}
