//! The human review queue.
//!
//! An action a policy escalates waits here until a person approves or
//! rejects it. The queue lives in the data directory, so pending reviews
//! survive a restart; every transition (escalated, approved, rejected,
//! executed, failed) is one transaction together with its audit entry, and
//! a review can be decided only once.

use std::sync::Arc;

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit::{self, NewEntry};
use crate::store::{Store, now};
use crate::types::{Action, Event};
use crate::{Error, Result};

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

    fn parse(s: &str) -> ReviewStatus {
        match s {
            "approved" => ReviewStatus::Approved,
            "rejected" => ReviewStatus::Rejected,
            "executed" => ReviewStatus::Executed,
            "failed" => ReviewStatus::Failed,
            _ => ReviewStatus::Pending,
        }
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

impl Review {
    /// Whether a token scoped to `scope` may see and decide this review:
    /// the agent that proposed it or the connector that would carry it out
    /// is inside the scope.
    pub fn visible_to(&self, scope: &str) -> bool {
        crate::auth::scope_matches(scope, &self.proposed_by)
            || self
                .connector
                .as_deref()
                .is_some_and(|c| crate::auth::scope_matches(scope, c))
    }
}

/// The queue over a data directory.
#[derive(Clone)]
pub struct ReviewQueue {
    store: Arc<Store>,
}

fn db(context: &'static str) -> impl Fn(rusqlite::Error) -> Error {
    crate::store::db_err(context)
}

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
        status: ReviewStatus::parse(&status),
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

impl ReviewQueue {
    pub fn new(store: Arc<Store>) -> ReviewQueue {
        ReviewQueue { store }
    }

    /// Queue an escalated action; returns its review id.
    pub fn enqueue(
        &self,
        (index, action): (usize, &Action),
        event: &Event,
        reasons: &[String],
        proposed_by: &str,
        connector: Option<&str>,
    ) -> Result<i64> {
        let action_json = serde_json::to_string(action).unwrap_or_default();
        let event_json = serde_json::to_string(event).unwrap_or_default();
        let reasons_json = serde_json::to_string(reasons).unwrap_or_default();
        self.store.transaction("review", |tx| {
            tx.execute(
                "INSERT INTO reviews (created_at, status, trace_id, connector, proposed_by, action, event, reasons, action_index)
                 VALUES (?1, 'pending', ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![now(), event.trace_id, connector, proposed_by, action_json, event_json, reasons_json, index as i64],
            )
            .map_err(db("queueing a review"))?;
            let id = tx.last_insert_rowid();
            audit::append(
                tx,
                NewEntry {
                    actor: proposed_by,
                    action: "escalated",
                    subject: &format!("review/{id}"),
                    digest: None,
                    detail: json!({"trace_id": event.trace_id, "action": action.kind, "event_id": event.id, "reasons": reasons, "proposed_by": proposed_by, "connector": connector}),
                },
            )?;
            Ok(id)
        })
    }

    /// Reviews, newest first; only those with `status` when given.
    pub fn list(&self, status: Option<ReviewStatus>) -> Result<Vec<Review>> {
        let conn = self.store.conn();
        let (sql, arg) = match status {
            Some(s) => (
                format!("{SELECT} WHERE status = ?1 ORDER BY id DESC LIMIT 1000"),
                Some(s.as_str()),
            ),
            None => (format!("{SELECT} ORDER BY id DESC LIMIT 1000"), None),
        };
        let mut stmt = conn.prepare(&sql).map_err(db("listing reviews"))?;
        let rows = match arg {
            Some(a) => stmt.query_map([a], from_row),
            None => stmt.query_map([], from_row),
        }
        .map_err(db("listing reviews"))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db("listing reviews"))
    }

    pub fn get(&self, id: i64) -> Result<Option<Review>> {
        self.store
            .conn()
            .query_row(&format!("{SELECT} WHERE id = ?1"), [id], from_row)
            .optional()
            .map_err(db("reading a review"))
    }

    pub fn pending(&self) -> Result<u64> {
        self.store
            .conn()
            .query_row(
                "SELECT COUNT(*) FROM reviews WHERE status = 'pending'",
                [],
                |r| r.get(0),
            )
            .map_err(db("counting reviews"))
    }

    /// Approve or reject a pending review. Deciding twice is refused.
    pub fn decide(
        &self,
        id: i64,
        approve: bool,
        reviewer: &str,
        comment: Option<&str>,
    ) -> Result<Review> {
        let status = if approve {
            ReviewStatus::Approved
        } else {
            ReviewStatus::Rejected
        };
        self.store.transaction("review", |tx| {
            let current: Option<(String, String, Option<String>)> = tx
                .query_row(
                    "SELECT status, proposed_by, connector FROM reviews WHERE id = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(db("reading a review"))?;
            let (current, proposed_by, connector) = match current {
                Some((status, p, c)) => (Some(status), p, c),
                None => (None, String::new(), None),
            };
            match current.as_deref() {
                None => return Err(Error::Refused(format!("no review {id}"))),
                Some("pending") => {}
                Some(other) => {
                    return Err(Error::Refused(format!("review {id} is already {other}")));
                }
            }
            tx.execute(
                "UPDATE reviews SET status = ?2, decided_by = ?3, decided_at = ?4, comment = ?5 WHERE id = ?1",
                params![id, status.as_str(), reviewer, now(), comment],
            )
            .map_err(db("deciding a review"))?;
            audit::append(
                tx,
                NewEntry {
                    actor: reviewer,
                    action: if approve { "review-approved" } else { "review-rejected" },
                    subject: &format!("review/{id}"),
                    digest: None,
                    detail: json!({"comment": comment, "proposed_by": proposed_by, "connector": connector}),
                },
            )?;
            Ok(())
        })?;
        self.get(id)?
            .ok_or_else(|| Error::Refused(format!("no review {id}")))
    }

    /// Record the outcome of carrying out an approved review.
    pub fn record_result(
        &self,
        id: i64,
        executed: bool,
        result: &str,
        detail: serde_json::Value,
    ) -> Result<()> {
        let status = if executed {
            ReviewStatus::Executed
        } else {
            ReviewStatus::Failed
        };
        self.store.transaction("review", |tx| {
            let (proposed_by, connector): (String, Option<String>) = tx
                .query_row(
                    "SELECT proposed_by, connector FROM reviews WHERE id = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(db("reading a review"))?;
            tx.execute(
                "UPDATE reviews SET status = ?2, result = ?3 WHERE id = ?1",
                params![id, status.as_str(), result],
            )
            .map_err(db("recording a review result"))?;
            audit::append(
                tx,
                NewEntry {
                    actor: crate::registry::HOST_ACTOR,
                    action: if executed {
                        "executed"
                    } else {
                        "execute-failed"
                    },
                    subject: &format!("review/{id}"),
                    digest: None,
                    detail: json!({"result": result, "step": detail, "proposed_by": proposed_by, "connector": connector}),
                },
            )?;
            Ok(())
        })
    }
}
