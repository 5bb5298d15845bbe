//! The human review queue.
//!
//! An action a policy escalates waits here until a person approves or
//! rejects it. The queue lives in the data directory, so pending reviews
//! survive a restart; every transition (escalated, approved, rejected,
//! executed, failed) is one transaction together with its audit entry, and
//! a review can be decided only once.

use std::sync::Arc;

use crate::Result;
use crate::store::{Decision, NewReview, ReviewResult, StateStore};
pub use crate::store::{Review, ReviewStatus};
use crate::types::{Action, Event};

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

/// The queue over a host's state.
#[derive(Clone)]
pub struct ReviewQueue {
    store: Arc<dyn StateStore>,
}

impl ReviewQueue {
    pub fn new(store: Arc<dyn StateStore>) -> ReviewQueue {
        ReviewQueue { store }
    }

    /// Queue an escalated action; returns its review id.
    pub fn enqueue(
        &self,
        (action_index, action): (usize, &Action),
        event: &Event,
        reasons: &[String],
        proposed_by: &str,
        connector: Option<&str>,
    ) -> Result<i64> {
        self.store.enqueue_review(&NewReview {
            action_index,
            action,
            event,
            reasons,
            proposed_by,
            connector,
        })
    }

    /// Reviews, newest first; only those with `status` when given.
    pub fn list(&self, status: Option<ReviewStatus>) -> Result<Vec<Review>> {
        self.store.reviews(status)
    }

    pub fn get(&self, id: i64) -> Result<Option<Review>> {
        self.store.review(id)
    }

    pub fn pending(&self) -> Result<u64> {
        self.store.pending_reviews()
    }

    /// Approve or reject a pending review. Deciding twice is refused.
    pub fn decide(
        &self,
        id: i64,
        approve: bool,
        reviewer: &str,
        comment: Option<&str>,
    ) -> Result<Review> {
        self.store.decide_review(&Decision {
            id,
            approve,
            reviewer,
            comment,
        })
    }

    /// Approved reviews another node approved but did not carry out before
    /// its lease ran out, now this process's to carry out.
    pub fn take_expired(&self) -> Result<Vec<Review>> {
        self.store.take_expired_reviews()
    }

    /// Record the outcome of carrying out an approved review.
    pub fn record_result(
        &self,
        id: i64,
        executed: bool,
        result: &str,
        detail: serde_json::Value,
    ) -> Result<()> {
        self.store.record_review_result(&ReviewResult {
            id,
            executed,
            result,
            detail,
        })
    }
}
