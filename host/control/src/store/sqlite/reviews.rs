//! The review queue's rows.

use rusqlite::{Connection, OptionalExtension, params};

use super::{SqliteStore, db_err};
use crate::audit::{self, NewEntry};
use crate::registry::HOST_ACTOR;
use crate::store::review_entries as entries;
use crate::store::{
    Decision, LABEL_FROM_REVIEW, NewLabel, NewReview, REVIEWS_LISTED, Review, ReviewResult,
    ReviewStatus, now,
};
use crate::{Error, Result};

const SELECT: &str = "SELECT id, created_at, status, trace_id, connector, proposed_by, action, event, reasons, decided_by, decided_at, comment, result, action_index FROM reviews";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Review> {
    fn parse<T: serde::de::DeserializeOwned>(i: usize, text: String) -> rusqlite::Result<T> {
        serde_json::from_str(&text).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
        })
    }
    let status: String = r.get(2)?;
    Ok(Review {
        id: r.get(0)?,
        created_at: r.get(1)?,
        status: ReviewStatus::parse(&status).unwrap_or(ReviewStatus::Pending),
        trace_id: r.get(3)?,
        connector: r.get(4)?,
        proposed_by: r.get(5)?,
        action: parse(6, r.get(6)?)?,
        event: parse(7, r.get(7)?)?,
        reasons: parse(8, r.get(8)?)?,
        decided_by: r.get(9)?,
        decided_at: r.get(10)?,
        comment: r.get(11)?,
        result: r.get(12)?,
        action_index: usize::try_from(r.get::<_, i64>(13)?).unwrap_or(0),
    })
}

pub(super) fn enqueue(store: &SqliteStore, r: &NewReview<'_>) -> Result<i64> {
    let action_json = serde_json::to_string(r.action).unwrap_or_default();
    let event_json = serde_json::to_string(r.event).unwrap_or_default();
    let reasons_json = serde_json::to_string(r.reasons).unwrap_or_default();
    store.transaction("review", |tx| {
        tx.execute(
            "INSERT INTO reviews (created_at, status, trace_id, connector, proposed_by, action, event, reasons, action_index)
             VALUES (?1, 'pending', ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![now(), r.event.trace_id, r.connector, r.proposed_by, action_json, event_json, reasons_json, r.action_index as i64],
        )
        .map_err(db_err("queueing a review"))?;
        let id = tx.last_insert_rowid();
        audit::append(
            tx,
            NewEntry {
                actor: r.proposed_by,
                action: "escalated",
                subject: &entries::subject(id),
                digest: None,
                detail: entries::escalated(r),
            },
        )?;
        Ok(id)
    })
}

pub(super) fn list(conn: &Connection, status: Option<ReviewStatus>) -> Result<Vec<Review>> {
    let (sql, arg) = match status {
        Some(s) => (
            format!("{SELECT} WHERE status = ?1 ORDER BY id DESC LIMIT {REVIEWS_LISTED}"),
            Some(s.as_str()),
        ),
        None => (
            format!("{SELECT} ORDER BY id DESC LIMIT {REVIEWS_LISTED}"),
            None,
        ),
    };
    let mut stmt = conn.prepare(&sql).map_err(db_err("listing reviews"))?;
    let rows = match arg {
        Some(a) => stmt.query_map([a], from_row),
        None => stmt.query_map([], from_row),
    }
    .map_err(db_err("listing reviews"))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err("listing reviews"))
}

pub(super) fn get(conn: &Connection, id: i64) -> Result<Option<Review>> {
    conn.query_row(&format!("{SELECT} WHERE id = ?1"), [id], from_row)
        .optional()
        .map_err(db_err("reading a review"))
}

pub(super) fn pending(conn: &Connection) -> Result<u64> {
    conn.query_row(
        "SELECT COUNT(*) FROM reviews WHERE status = 'pending'",
        [],
        |r| r.get(0),
    )
    .map_err(db_err("counting reviews"))
}

pub(super) fn decide(store: &SqliteStore, d: &Decision<'_>) -> Result<Review> {
    let id = d.id;
    let status = if d.approve {
        ReviewStatus::Approved
    } else {
        ReviewStatus::Rejected
    };
    store.transaction("review", |tx| {
        let current: Option<(String, String, Option<String>)> = tx
            .query_row(
                "SELECT status, proposed_by, connector FROM reviews WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(db_err("reading a review"))?;
        let Some((current, proposed_by, connector)) = current else {
            return Err(Error::NotFound(format!("no review {id}")));
        };
        if current != ReviewStatus::Pending.as_str() {
            return Err(Error::Refused(format!("review {id} is already {current}")));
        }
        tx.execute(
            "UPDATE reviews SET status = ?2, decided_by = ?3, decided_at = ?4, comment = ?5 WHERE id = ?1",
            params![id, status.as_str(), d.reviewer, now(), d.comment],
        )
        .map_err(db_err("deciding a review"))?;
        // The decision is also a label of the action it was about.
        let (event_id, action_index): (String, i64) = tx
            .query_row(
                "SELECT json_extract(event, '$.id'), action_index FROM reviews WHERE id = ?1",
                [id],
                |r| Ok((r.get::<_, Option<String>>(0)?.unwrap_or_default(), r.get(1)?)),
            )
            .map_err(db_err("reading a review"))?;
        super::labels::insert_label(
            tx,
            &NewLabel {
                event_id: &event_id,
                action_index: usize::try_from(action_index).unwrap_or(0),
                label: if d.approve { "approve" } else { "reject" },
                source: LABEL_FROM_REVIEW,
                actor: d.reviewer,
                comment: d.comment,
            },
        )?;
        let (action, detail) = entries::decided(d, &proposed_by, connector.as_deref());
        audit::append(
            tx,
            NewEntry {
                actor: d.reviewer,
                action,
                subject: &entries::subject(id),
                digest: None,
                detail,
            },
        )?;
        Ok(())
    })?;
    get(&store.conn(), id)?.ok_or_else(|| Error::NotFound(format!("no review {id}")))
}

pub(super) fn record_result(store: &SqliteStore, r: &ReviewResult<'_>) -> Result<()> {
    let id = r.id;
    let status = if r.executed {
        ReviewStatus::Executed
    } else {
        ReviewStatus::Failed
    };
    store.transaction("review", |tx| {
        let (proposed_by, connector): (String, Option<String>) = tx
            .query_row(
                "SELECT proposed_by, connector FROM reviews WHERE id = ?1",
                [id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(db_err("reading a review"))?
            .ok_or_else(|| Error::NotFound(format!("no review {id}")))?;
        tx.execute(
            "UPDATE reviews SET status = ?2, result = ?3 WHERE id = ?1",
            params![id, status.as_str(), r.result],
        )
        .map_err(db_err("recording a review result"))?;
        let (action, detail) = entries::result(r, &proposed_by, connector.as_deref());
        audit::append(
            tx,
            NewEntry {
                actor: HOST_ACTOR,
                action,
                subject: &entries::subject(id),
                digest: None,
                detail,
            },
        )?;
        Ok(())
    })
}
