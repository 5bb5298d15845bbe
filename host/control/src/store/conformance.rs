//! What every [`StateStore`] backend must do, checked through the trait
//! alone: the SQLite backend runs these in its tests, and another backend
//! runs the same [`run`] over fresh instances of itself.
//!
//! Each check gets a new, empty store from `fresh` and returns what it
//! found wrong instead of panicking, so a backend's test can report every
//! failing check at once.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{
    Agreement, Change, Decision, DecisionRecord, Deploy, LABEL_FROM_FEEDBACK, NewDeadLetter,
    NewLabel, NewReview, NewVersion, Processed, ReviewResult, ReviewStatus, Role, Serving, Slot,
    StateStore, Token,
};
use crate::audit::NewEntry;
use crate::capability::kv::{KvQuota, KvStoreError};
use crate::rollout::OutcomeCounts;
use crate::types::{Action, Event, Payload};

/// One check: `Err` says what the backend did wrong.
pub type Check = fn(&dyn Fn() -> Arc<dyn StateStore>) -> Result<(), String>;

/// Every check, by name.
pub const CHECKS: &[(&str, Check)] = &[
    ("blobs", blobs),
    ("deployments", deployments),
    ("stale changes", stale_changes),
    ("stats", stats),
    ("agreement", agreement),
    ("audit", audit),
    ("reviews", reviews),
    ("labels", labels),
    ("recordings", recordings),
    ("drift", drift),
    ("event sources", event_sources),
    ("tokens", tokens),
    ("console sessions", console_sessions),
    ("kv", kv),
    ("generation watch", generation_watch),
];

/// Run every check on fresh stores; `Err` lists each failed check.
pub fn run(fresh: &dyn Fn() -> Arc<dyn StateStore>) -> Result<(), String> {
    let failed: Vec<String> = CHECKS
        .iter()
        .filter_map(|(name, check)| check(fresh).err().map(|why| format!("{name}: {why}")))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("\n"))
    }
}

macro_rules! ensure {
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            return Err(format!($($why)+));
        }
    };
}

/// `r`'s value, or what failed while `doing`.
fn ok<T, E: std::fmt::Display>(r: Result<T, E>, doing: &str) -> Result<T, String> {
    r.map_err(|e| format!("{doing}: {e}"))
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    ok(
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build(),
        "starting a runtime",
    )
}

fn version<'a>(plugin: &'a str, version: &'a str, digest: &'a str) -> NewVersion<'a> {
    NewVersion {
        plugin,
        version,
        digest,
        manifest: "[plugin]\nname = \"x\"\n",
        manifest_origin: "plugin.toml",
        manifest_base: "/plugins/x",
    }
}

fn entries(store: &dyn StateStore) -> Result<Vec<crate::audit::Entry>, String> {
    ok(store.audit_list(0, None), "listing the audit log")
}

fn blobs(fresh: &dyn Fn() -> Arc<dyn StateStore>) -> Result<(), String> {
    let store = fresh();
    let bytes = b"\0asm component bytes".to_vec();
    let digest = ok(store.put_blob(&bytes), "storing a blob")?;
    let expected = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    ensure!(
        digest == expected,
        "the digest is {digest}, not the sha256 {expected}"
    );
    ensure!(
        ok(store.put_blob(&bytes), "storing a blob again")? == digest,
        "storing the same bytes twice gave another digest"
    );
    ensure!(
        ok(store.get_blob(&digest), "reading a blob")? == bytes,
        "the blob read back differs"
    );
    ensure!(store.has_blob(&digest), "has_blob misses a stored blob");
    let missing = "0".repeat(64);
    ensure!(
        !store.has_blob(&missing),
        "has_blob finds a blob never stored"
    );
    ensure!(!store.has_blob("../evos.db"), "has_blob accepts a path");
    ensure!(
        store.get_blob(&missing).is_err(),
        "reading a missing blob succeeded"
    );
    Ok(())
}

fn deployments(fresh: &dyn Fn() -> Arc<dyn StateStore>) -> Result<(), String> {
    let store = fresh();
    let g0 = ok(store.generation(), "reading the generation")?;
    let detail = json!({"version": "1.0.0"});
    let stable = Deploy {
        action: "deploy",
        actor: "alice",
        slot: Slot::Stable,
        detail: &detail,
        seen: None,
        step: None,
    };
    let v1 = ok(
        store.record_deploy(&version("p", "1.0.0", "d1"), &stable),
        "deploying",
    )?;
    let row = ok(store.deployment("p"), "reading the deployment")?
        .ok_or("no deployment after a deploy")?;
    ensure!(
        (row.stable_id, row.canary_id, row.canary_weight) == (v1, None, 0),
        "after a deploy the deployment is {row:?}"
    );
    let g1 = ok(store.generation(), "reading the generation")?;
    ensure!(
        g1 > g0,
        "the generation did not advance with a deploy ({g0} -> {g1})"
    );

    let history = ok(store.history("p"), "reading history")?;
    ensure!(
        history.len() == 1,
        "{} history rows after one deploy",
        history.len()
    );
    let h = &history[0];
    ensure!(
        h.action == "deploy" && h.actor == "alice" && h.version_id == Some(v1),
        "history row {h:?}"
    );
    ensure!(
        h.detail["version_id"] == json!(v1),
        "history detail lacks the version id: {}",
        h.detail
    );
    let log = entries(&*store)?;
    let last = log.last().ok_or("a deploy wrote no audit entry")?;
    ensure!(
        last.action == "deploy" && last.subject == "p" && last.actor == "alice",
        "audit entry {last:?}"
    );
    ensure!(
        last.digest.as_deref() == Some("d1"),
        "the audit entry names digest {:?}",
        last.digest
    );
    ensure!(
        last.detail["version_id"] == json!(v1),
        "audit detail lacks the version id"
    );

    // The same version again reuses its row.
    let seen = Some(Serving {
        stable_id: v1,
        canary: None,
        shadow: None,
        step: None,
    });
    let again = Deploy { seen, ..stable };
    let v1b = ok(
        store.record_deploy(&version("p", "1.0.0", "d1"), &again),
        "redeploying",
    )?;
    ensure!(
        v1b == v1,
        "an identical version got a new id ({v1} then {v1b})"
    );

    // A canary next to the stable version.
    let canary = Deploy {
        action: "canary",
        slot: Slot::Canary(10),
        seen,
        ..stable
    };
    let v2 = ok(
        store.record_deploy(&version("p", "1.1.0", "d2"), &canary),
        "deploying a canary",
    )?;
    ensure!(v2 != v1, "a new version reused id {v1}");
    let row = ok(store.deployment("p"), "reading the deployment")?.ok_or("deployment gone")?;
    ensure!(
        (row.stable_id, row.canary_id, row.canary_weight) == (v1, Some(v2), 10),
        "after a canary the deployment is {row:?}"
    );
    let versions: Vec<i64> = ok(store.versions_of("p"), "listing versions")?
        .iter()
        .map(|v| v.id)
        .collect();
    ensure!(
        versions == vec![v2, v1],
        "versions newest first are {versions:?}"
    );
    let row1 = ok(store.version(v1), "reading a version")?;
    ensure!(
        row1.version == "1.0.0" && row1.digest == "d1" && row1.manifest.contains("[plugin]"),
        "version row {row1:?}"
    );

    // Promote.
    ok(
        store.record_change(&Change {
            plugin: "p",
            serving: Serving {
                stable_id: v2,
                canary: None,
                shadow: None,
                step: None,
            },
            action: "promote",
            actor: "bob",
            version_id: Some(v2),
            digest: "d2",
            detail: &json!({}),
            seen: Some(Serving {
                stable_id: v1,
                canary: Some((v2, 10)),
                shadow: None,
                step: None,
            }),
        }),
        "promoting",
    )?;
    let row = ok(store.deployment("p"), "reading the deployment")?.ok_or("deployment gone")?;
    ensure!(
        (row.stable_id, row.canary_id) == (v2, None),
        "after promote the deployment is {row:?}"
    );
    let actions: Vec<String> = ok(store.history("p"), "reading history")?
        .into_iter()
        .map(|h| h.action)
        .collect();
    ensure!(
        actions == ["deploy", "deploy", "canary", "promote"],
        "history actions are {actions:?}"
    );

    // A shadow next to the stable version, then dropped.
    let promoted = Some(Serving {
        stable_id: v2,
        canary: None,
        shadow: None,
        step: None,
    });
    let shadow = Deploy {
        action: "shadow",
        slot: Slot::Shadow(100),
        seen: promoted,
        ..stable
    };
    let v3 = ok(
        store.record_deploy(&version("p", "1.2.0", "d4"), &shadow),
        "deploying a shadow",
    )?;
    let row = ok(store.deployment("p"), "reading the deployment")?.ok_or("deployment gone")?;
    ensure!(
        row.serving()
            == Serving {
                stable_id: v2,
                canary: None,
                shadow: Some((v3, 100)),
                step: None,
            },
        "after a shadow the deployment is {row:?}"
    );
    let last = ok(store.history("p"), "reading history")?
        .pop()
        .ok_or("no history")?;
    ensure!(
        last.action == "shadow" && last.shadow_id == Some(v3) && last.shadow_share == 100,
        "the shadow's history row is {last:?}"
    );
    ok(
        store.record_change(&Change {
            plugin: "p",
            serving: promoted.ok_or("no serving")?,
            action: "rollback",
            actor: "bob",
            version_id: Some(v3),
            digest: "d4",
            detail: &json!({}),
            seen: Some(row.serving()),
        }),
        "dropping the shadow",
    )?;
    let after = ok(store.deployment("p"), "reading the deployment")?.map(|d| d.serving());
    ensure!(after == promoted, "dropping the shadow left {after:?}");
    let no_stable = store.record_deploy(
        &version("r", "1.0.0", "d5"),
        &Deploy {
            seen: None,
            ..shadow
        },
    );
    ensure!(
        no_stable.is_err(),
        "a shadow was deployed with no stable version"
    );

    ok(
        store.record_deploy(&version("q", "0.1.0", "d3"), &stable),
        "deploying another plugin",
    )?;
    let names: Vec<String> = ok(store.deployments(), "listing deployments")?
        .into_iter()
        .map(|d| d.plugin)
        .collect();
    ensure!(names == ["p", "q"], "deployments are {names:?}");
    let verified = ok(store.audit_verify(), "verifying the audit log")?;
    ensure!(
        verified.intact && verified.entries == 7,
        "the audit log after 7 changes: {verified:?}"
    );
    Ok(())
}

fn stale_changes(fresh: &dyn Fn() -> Arc<dyn StateStore>) -> Result<(), String> {
    let store = fresh();
    let detail = json!({});
    let deploy = Deploy {
        action: "deploy",
        actor: "alice",
        slot: Slot::Stable,
        detail: &detail,
        seen: None,
        step: None,
    };
    let v1 = ok(
        store.record_deploy(&version("p", "1.0.0", "d1"), &deploy),
        "deploying",
    )?;
    let v2 = ok(
        store.record_deploy(
            &version("p", "2.0.0", "d2"),
            &Deploy {
                seen: Some(Serving {
                    stable_id: v1,
                    canary: None,
                    shadow: None,
                    step: None,
                }),
                ..deploy
            },
        ),
        "deploying again",
    )?;
    let (generation, history, log) = (
        ok(store.generation(), "reading the generation")?,
        ok(store.history("p"), "reading history")?.len(),
        entries(&*store)?.len(),
    );
    // Decided on the deployment before v2: refused.
    let stale = store.record_change(&Change {
        plugin: "p",
        serving: Serving {
            stable_id: v1,
            canary: None,
            shadow: None,
            step: None,
        },
        action: "rollback",
        actor: "bob",
        version_id: Some(v1),
        digest: "d1",
        detail: &detail,
        seen: Some(Serving {
            stable_id: v1,
            canary: None,
            shadow: None,
            step: None,
        }),
    });
    ensure!(
        stale.is_err(),
        "a change decided on an old deployment was applied"
    );
    let stale_deploy = store.record_deploy(&version("p", "3.0.0", "d3"), &deploy);
    ensure!(
        stale_deploy.is_err(),
        "a first deploy over an existing deployment was applied"
    );
    let row = ok(store.deployment("p"), "reading the deployment")?.ok_or("deployment gone")?;
    ensure!(
        row.stable_id == v2,
        "a refused change moved the deployment: {row:?}"
    );
    ensure!(
        ok(store.generation(), "reading the generation")? == generation,
        "a refused change advanced the generation"
    );
    ensure!(
        ok(store.history("p"), "reading history")?.len() == history,
        "a refused change wrote history"
    );
    ensure!(
        entries(&*store)?.len() == log,
        "a refused change wrote an audit entry"
    );
    ensure!(
        ok(store.versions_of("p"), "listing versions")?.len() == 2,
        "a refused deploy kept its version row"
    );
    Ok(())
}

fn stats(fresh: &dyn Fn() -> Arc<dyn StateStore>) -> Result<(), String> {
    let store = fresh();
    let detail = json!({});
    let id = ok(
        store.record_deploy(
            &version("p", "1.0.0", "d1"),
            &Deploy {
                action: "deploy",
                actor: "alice",
                slot: Slot::Stable,
                detail: &detail,
                seen: None,
                step: None,
            },
        ),
        "deploying",
    )?;
    let (counts, hist) = ok(store.stats(id), "reading stats never written")?;
    ensure!(
        counts.is_empty() && hist.is_none(),
        "a version with no stats has {counts:?}"
    );
    let mut outcomes = OutcomeCounts::new();
    outcomes.insert("ok".into(), 41);
    outcomes.insert("trap".into(), 1);
    ok(
        store.put_stats(id, &outcomes, b"[[100,41]]"),
        "writing stats",
    )?;
    let (counts, hist) = ok(store.stats(id), "reading stats")?;
    ensure!(counts == outcomes, "stats read back as {counts:?}");
    ensure!(
        hist.as_deref() == Some(&b"[[100,41]]"[..]),
        "histogram read back as {hist:?}"
    );
    outcomes.insert("ok".into(), 50);
    ok(store.put_stats(id, &outcomes, b"[]"), "replacing stats")?;
    let (counts, hist) = ok(store.stats(id), "reading stats")?;
    ensure!(
        counts.get("ok") == Some(&50) && hist.as_deref() == Some(&b"[]"[..]),
        "replaced stats read back as {counts:?}"
    );
    Ok(())
}

fn agreement(fresh: &dyn Fn() -> Arc<dyn StateStore>) -> Result<(), String> {
    let store = fresh();
    let detail = json!({});
    let deploy = Deploy {
        action: "deploy",
        actor: "alice",
        slot: Slot::Stable,
        detail: &detail,
        seen: None,
        step: None,
    };
    let live = ok(
        store.record_deploy(&version("p", "1.0.0", "d1"), &deploy),
        "deploying",
    )?;
    let seen = Some(Serving {
        stable_id: live,
        canary: None,
        shadow: None,
        step: None,
    });
    let candidate = ok(
        store.record_deploy(
            &version("p", "1.1.0", "d2"),
            &Deploy {
                action: "shadow",
                slot: Slot::Shadow(50),
                seen,
                ..deploy
            },
        ),
        "deploying a shadow",
    )?;
    let empty = ok(
        store.agreement(live, candidate),
        "reading an agreement never written",
    )?;
    ensure!(
        empty == Agreement::default(),
        "a new pair has counts {empty:?}"
    );
    let mut counts = Agreement {
        compared: 10,
        agreed: 7,
        classed: 10,
        shifted: 3,
        shed: 2,
        ..Default::default()
    };
    counts.confusion.insert("allow -> deny".into(), 3);
    counts.confusion.insert("allow -> allow".into(), 7);
    ok(
        store.put_agreement(live, candidate, &counts),
        "writing an agreement",
    )?;
    ensure!(
        ok(store.agreement(live, candidate), "reading")? == counts,
        "the agreement read back differs"
    );
    ensure!(
        ok(store.agreement(candidate, live), "reading the reverse pair")? == Agreement::default(),
        "pairs are not ordered"
    );
    counts.compared = 11;
    ok(
        store.put_agreement(live, candidate, &counts),
        "replacing an agreement",
    )?;
    ensure!(
        ok(store.agreement(live, candidate), "reading")?.compared == 11,
        "an agreement was not replaced"
    );
    Ok(())
}

fn audit(fresh: &dyn Fn() -> Arc<dyn StateStore>) -> Result<(), String> {
    let store = fresh();
    let entry = |i: i64| NewEntry {
        actor: "tester",
        action: "note",
        subject: "audit",
        digest: None,
        detail: json!({"i": i, "text": "line\nbreak \u{202e}"}),
    };
    ok(store.audit(entry(1)), "appending")?;
    let rt = runtime()?;
    ok(
        rt.block_on(store.audit_async(entry(2))),
        "appending from async code",
    )?;
    ok(store.audit(entry(3)), "appending")?;
    let log = entries(&*store)?;
    let seqs: Vec<i64> = log.iter().map(|e| e.seq).collect();
    ensure!(seqs == [1, 2, 3], "sequence numbers are {seqs:?}");
    let order: Vec<i64> = log.iter().filter_map(|e| e.detail["i"].as_i64()).collect();
    ensure!(order == [1, 2, 3], "entries came back in order {order:?}");
    ensure!(
        log[0].detail["text"] == json!("line\nbreak \u{202e}"),
        "detail text changed on the way: {}",
        log[0].detail
    );
    ensure!(
        log.windows(2).all(|w| w[1].prev_hash == w[0].hash),
        "entries are not chained"
    );
    let after = ok(store.audit_list(2, None), "listing after seq 2")?;
    ensure!(
        after.len() == 1 && after[0].seq == 3,
        "after seq 2: {after:?}"
    );
    let recent = ok(store.audit_list(0, Some("1h")), "listing the last hour")?;
    ensure!(
        recent.len() == 3,
        "the last hour holds {} entries",
        recent.len()
    );
    let future = ok(
        store.audit_list(0, Some("2999-01-01T00:00:00Z")),
        "listing from 2999",
    )?;
    ensure!(future.is_empty(), "entries from the future: {future:?}");
    ensure!(
        store.audit_list(0, Some("yesterday-ish")).is_err(),
        "a bad `since` was accepted"
    );
    // Pages: newest first, narrowed by action, subject prefix and actor.
    ok(
        store.audit(NewEntry {
            actor: "token/ab12 (console)",
            action: "pipeline",
            subject: "event/E-7",
            digest: None,
            detail: json!({}),
        }),
        "appending",
    )?;
    let seqs = |page: &crate::audit::Page<'_>| -> Result<Vec<i64>, String> {
        Ok(ok(store.audit_page(page), "paging")?
            .iter()
            .map(|e| e.seq)
            .collect())
    };
    let all = crate::audit::Page {
        limit: 10,
        ..Default::default()
    };
    ensure!(
        seqs(&all)? == [4, 3, 2, 1],
        "newest first: {:?}",
        seqs(&all)?
    );
    let older = crate::audit::Page {
        before: Some(3),
        limit: 1,
        ..all
    };
    ensure!(seqs(&older)? == [2], "one before 3: {:?}", seqs(&older)?);
    for (page, want, what) in [
        (
            crate::audit::Page {
                action: Some("pipeline"),
                ..all
            },
            vec![4],
            "action",
        ),
        (
            crate::audit::Page {
                action: Some("pipe"),
                ..all
            },
            vec![],
            "action (not a prefix)",
        ),
        (
            crate::audit::Page {
                subject: Some("event/"),
                ..all
            },
            vec![4],
            "subject prefix",
        ),
        (
            crate::audit::Page {
                subject: Some("event/E-7"),
                ..all
            },
            vec![4],
            "subject",
        ),
        (
            crate::audit::Page {
                subject: Some("%"),
                ..all
            },
            vec![],
            "subject (no wildcard)",
        ),
        (
            crate::audit::Page {
                actor: Some("ab12"),
                ..all
            },
            vec![4],
            "actor",
        ),
        (
            crate::audit::Page {
                actor: Some("test"),
                action: Some("note"),
                ..all
            },
            vec![3, 2, 1],
            "actor and action",
        ),
    ] {
        let got = seqs(&page)?;
        ensure!(got == want, "by {what}: {got:?}, expected {want:?}");
    }
    let v = ok(store.audit_verify(), "verifying")?;
    ensure!(
        v.intact && v.entries == 4 && v.anchored,
        "verification: {v:?}"
    );
    Ok(())
}

fn reviews(fresh: &dyn Fn() -> Arc<dyn StateStore>) -> Result<(), String> {
    let store = fresh();
    let event = Event {
        id: "evt-1".into(),
        kind: "claim".into(),
        source: "test".into(),
        payload: Payload::new(json!({"amount": 9000})),
        trace_id: "trace-1".into(),
    };
    let action = |kind: &str| Action {
        kind: kind.into(),
        event_id: "evt-1".into(),
        payload: Payload::new(json!({"claim": 1})),
        rationale: "large".into(),
    };
    let (pay, hold) = (action("pay"), action("hold"));
    let reasons = vec!["limits: over 5000".to_string()];
    let new = |i: usize, a: &'static str| NewReview {
        action_index: i,
        action: if a == "pay" { &pay } else { &hold },
        event: &event,
        reasons: &reasons,
        proposed_by: "triage",
        connector: Some("payments"),
    };
    let first = ok(store.enqueue_review(&new(0, "pay")), "queueing a review")?;
    let second = ok(store.enqueue_review(&new(1, "hold")), "queueing a review")?;
    ensure!(second > first, "review ids {first} then {second}");
    ensure!(
        ok(store.pending_reviews(), "counting")? == 2,
        "two queued reviews are not pending"
    );
    let listed: Vec<i64> = ok(store.reviews(None), "listing")?
        .iter()
        .map(|r| r.id)
        .collect();
    ensure!(
        listed == [second, first],
        "reviews newest first are {listed:?}"
    );
    let r = ok(store.review(first), "reading a review")?.ok_or("a queued review is missing")?;
    ensure!(
        r.status == ReviewStatus::Pending
            && r.action == pay
            && r.event.id == "evt-1"
            && r.event.payload.value() == &json!({"amount": 9000})
            && r.reasons == reasons
            && r.connector.as_deref() == Some("payments")
            && r.proposed_by == "triage"
            && r.trace_id == "trace-1"
            && r.action_index == 0,
        "the review read back as {r:?}"
    );
    ensure!(
        ok(store.review(first + 100), "reading")?.is_none(),
        "an unknown review was found"
    );

    let decided = ok(
        store.decide_review(&Decision {
            id: first,
            approve: true,
            reviewer: "rita",
            comment: Some("checked"),
        }),
        "approving",
    )?;
    ensure!(
        decided.status == ReviewStatus::Approved
            && decided.decided_by.as_deref() == Some("rita")
            && decided.comment.as_deref() == Some("checked")
            && decided.decided_at.is_some(),
        "the approved review reads {decided:?}"
    );
    let twice = store.decide_review(&Decision {
        id: first,
        approve: false,
        reviewer: "sam",
        comment: None,
    });
    ensure!(twice.is_err(), "a review was decided twice");
    let unknown = store.decide_review(&Decision {
        id: first + 100,
        approve: true,
        reviewer: "sam",
        comment: None,
    });
    ensure!(unknown.is_err(), "an unknown review was decided");
    ok(
        store.record_review_result(&ReviewResult {
            id: first,
            executed: true,
            result: "receipt-7",
            detail: json!({"outcome": "ok"}),
        }),
        "recording the result",
    )?;
    let r = ok(store.review(first), "reading")?.ok_or("review gone")?;
    ensure!(
        r.status == ReviewStatus::Executed && r.result.as_deref() == Some("receipt-7"),
        "the executed review reads {r:?}"
    );
    ok(
        store.decide_review(&Decision {
            id: second,
            approve: false,
            reviewer: "rita",
            comment: None,
        }),
        "rejecting",
    )?;
    ensure!(
        ok(store.pending_reviews(), "counting")? == 0,
        "decided reviews still pending"
    );
    let rejected = ok(
        store.reviews(Some(ReviewStatus::Rejected)),
        "listing rejected",
    )?;
    ensure!(
        rejected.len() == 1 && rejected[0].id == second,
        "rejected reviews: {rejected:?}"
    );
    let log: Vec<(String, String)> = entries(&*store)?
        .into_iter()
        .map(|e| (e.action, e.subject))
        .collect();
    let (a, b) = (format!("review/{first}"), format!("review/{second}"));
    let expected = [
        ("escalated", &a),
        ("escalated", &b),
        ("review-approved", &a),
        ("executed", &a),
        ("review-rejected", &b),
    ];
    ensure!(
        log.len() == expected.len()
            && log
                .iter()
                .zip(expected)
                .all(|((x, s), (y, t))| x == y && s == t),
        "audit entries of the reviews: {log:?}"
    );
    Ok(())
}

fn labels(fresh: &dyn Fn() -> Arc<dyn StateStore>) -> Result<(), String> {
    let store = fresh();
    let record = |event: &str, index: usize| DecisionRecord {
        event_id: event.into(),
        action_index: index,
        trace_id: format!("trace-{event}"),
        action_kind: "approve-payout".into(),
        proposed_by: "triage".into(),
        steps: json!([{"plugin": "triage", "kind": "agent", "version": "1.0.0", "digest": "d", "class": "approve-payout"}]),
        at: "2026-01-01T00:00:00.000000Z".into(),
    };
    let entry = NewEntry {
        actor: "webhook",
        action: "pipeline",
        subject: "event/e1",
        digest: None,
        detail: json!({}),
    };
    let rt = runtime()?;
    ok(
        rt.block_on(store.record_event(entry, vec![record("e1", 0), record("e1", 1)], None, None)),
        "recording an event",
    )?;
    ensure!(
        ok(store.decision("e1", 1), "reading a decision")? == Some(record("e1", 1)),
        "a decision record read back differs"
    );
    ensure!(
        ok(store.decision("e1", 2), "reading")?.is_none(),
        "an unrecorded action has a decision"
    );
    let log = entries(&*store)?;
    ensure!(
        log.len() == 1 && log[0].action == "pipeline",
        "recording an event wrote {log:?}"
    );
    let label = |event: &'static str, index: usize, word: &'static str| NewLabel {
        event_id: event,
        action_index: index,
        label: word,
        source: LABEL_FROM_FEEDBACK,
        actor: "rita",
        comment: Some("found later"),
    };
    let unknown = store.add_label(&label("e2", 0, "reject"));
    ensure!(
        matches!(unknown, Err(crate::Error::NotFound(_))),
        "a label for an unrecorded action: {unknown:?}"
    );
    ensure!(
        store.add_label(&label("e1", 0, "Not A Word")).is_err(),
        "a malformed label was kept"
    );
    let first = ok(store.add_label(&label("e1", 0, "approve")), "labelling")?;
    let second = ok(store.add_label(&label("e1", 0, "fraud")), "labelling again")?;
    let other = ok(
        store.add_label(&label("e1", 1, "reject")),
        "labelling another action",
    )?;
    ensure!(
        first.id < second.id && second.id < other.id,
        "label ids {} {} {}",
        first.id,
        second.id,
        other.id
    );
    ensure!(
        second.label == "fraud"
            && second.actor == "rita"
            && second.comment.as_deref() == Some("found later"),
        "a label read back as {second:?}"
    );
    let all = ok(store.labels("e1"), "listing labels")?;
    ensure!(
        all == [first.clone(), second.clone(), other.clone()],
        "labels of e1: {all:?}"
    );
    let newest = ok(store.labeled(None), "listing labelled decisions")?;
    let got: Vec<(usize, String)> = newest
        .iter()
        .map(|(d, l)| (d.action_index, l.label.clone()))
        .collect();
    ensure!(
        got == [(0, "fraud".to_string()), (1, "reject".to_string())],
        "the newest label per action: {got:?}"
    );
    ensure!(
        ok(
            store.labeled(Some("2999-01-01T00:00:00Z")),
            "listing from 2999"
        )?
        .is_empty(),
        "labels from the future"
    );
    let feedback: Vec<String> = entries(&*store)?
        .into_iter()
        .filter(|e| e.action == "feedback" && e.subject == "event/e1")
        .map(|e| e.detail["label"].as_str().unwrap_or_default().to_string())
        .collect();
    ensure!(
        feedback == ["approve", "fraud", "reject"],
        "feedback audit entries: {feedback:?}"
    );

    // A review decision labels the action it was about.
    let event = Event {
        id: "e3".into(),
        kind: "claim".into(),
        source: "test".into(),
        payload: Payload::new(json!({})),
        trace_id: "trace-e3".into(),
    };
    let action = Action {
        kind: "approve-payout".into(),
        event_id: "e3".into(),
        payload: Payload::new(json!({})),
        rationale: String::new(),
    };
    let id = ok(
        store.enqueue_review(&NewReview {
            action_index: 2,
            action: &action,
            event: &event,
            reasons: &[],
            proposed_by: "triage",
            connector: None,
        }),
        "queueing",
    )?;
    ok(
        store.decide_review(&Decision {
            id,
            approve: false,
            reviewer: "sam",
            comment: Some("too high"),
        }),
        "rejecting",
    )?;
    let from_review = ok(store.labels("e3"), "listing labels")?;
    ensure!(
        from_review.len() == 1
            && from_review[0].label == "reject"
            && from_review[0].action_index == 2
            && from_review[0].source == "review"
            && from_review[0].actor == "sam",
        "the review's label: {from_review:?}"
    );
    Ok(())
}

fn recordings(fresh: &dyn Fn() -> Arc<dyn StateStore>) -> Result<(), String> {
    use super::{NewRecording, RecordedCall, RecordingFilter};
    let store = fresh();
    let call = |step: &str, plugin: &str| RecordedCall {
        step: step.into(),
        action_index: (step == "policy").then_some(0),
        plugin: plugin.into(),
        kind: "model-adapter".into(),
        version: "1.0.0".into(),
        digest: "d".into(),
        input: json!({"input": {"amount": 1}, "parameters": {}}),
        output: json!({"model": {"output": {"score": 0.5}, "model": "m", "usage": {"input_units": 1, "output_units": 1}}}),
        outcome: "ok".into(),
        error: None,
        duration_us: 10,
        fuel: 20,
    };
    let rt = runtime()?;
    for i in 0..3 {
        let entry = NewEntry {
            actor: "webhook",
            action: "pipeline",
            subject: "event",
            digest: None,
            detail: json!({}),
        };
        let recording = NewRecording {
            trace_id: format!("trace-{i}"),
            event_id: format!("e{i}"),
            event_kind: "claim".into(),
            connector: "webhook".into(),
            reason: "sampled".into(),
            redactions: [("email".to_string(), 2)].into_iter().collect(),
            calls: vec![call("agent", "triage"), call("model", "score")],
        };
        ok(
            rt.block_on(store.record_event(entry, Vec::new(), Some(recording), None)),
            "recording an event",
        )?;
    }
    let calls = ok(
        store.recorded_calls(&RecordingFilter {
            plugin: Some("score"),
            ..Default::default()
        }),
        "reading recorded calls",
    )?;
    ensure!(
        calls.len() == 3,
        "3 model calls recorded, read {}",
        calls.len()
    );
    ensure!(
        calls[0].call == call("model", "score")
            && calls[0].event_id == "e0"
            && calls[0].trace_id == "trace-0",
        "a recorded call read back differs: {:?}",
        calls[0]
    );
    let newest = ok(
        store.recorded_calls(&RecordingFilter {
            plugin: Some("score"),
            limit: Some(2),
            ..Default::default()
        }),
        "reading the newest recorded calls",
    )?;
    let events: Vec<&str> = newest.iter().map(|c| c.event_id.as_str()).collect();
    ensure!(
        events == ["e1", "e2"],
        "limit 2 reads the newest two, oldest first: {events:?}"
    );
    let newest = ok(
        store.recordings(&RecordingFilter {
            limit: Some(1),
            ..Default::default()
        }),
        "reading the newest recording",
    )?;
    ensure!(
        newest.len() == 1 && newest[0].event_id == "e2" && newest[0].calls.len() == 2,
        "limit 1 reads the newest recording with its calls: {newest:?}"
    );
    let one = ok(
        store.recordings(&RecordingFilter {
            trace_id: Some("trace-1"),
            ..Default::default()
        }),
        "reading recordings",
    )?;
    ensure!(
        one.len() == 1 && one[0].calls.len() == 2 && one[0].redactions["email"] == 2,
        "recording trace-1 read back as {one:?}"
    );
    let pruned = ok(store.prune_recordings(None, Some(1), "ops"), "pruning")?;
    ensure!(
        (pruned.expired, pruned.over_limit, pruned.kept) == (0, 2, 1),
        "pruning to 1 row: {pruned:?}"
    );
    let left = ok(store.recordings(&RecordingFilter::default()), "reading")?;
    ensure!(
        left.len() == 1 && left[0].event_id == "e2",
        "the newest recording stays: {left:?}"
    );
    let calls = ok(store.recorded_calls(&RecordingFilter::default()), "reading")?;
    ensure!(
        calls.len() == 2,
        "pruned recordings' calls go too: {calls:?}"
    );
    ensure!(
        entries(&*store)?
            .iter()
            .filter(|e| e.action == "recording-prune")
            .count()
            == 1,
        "pruning is audited once"
    );
    let pruned = ok(
        store.prune_recordings(Some("9999-01-01T00:00:00Z"), None, "ops"),
        "pruning by age",
    )?;
    ensure!(
        pruned.expired == 1 && pruned.kept == 0,
        "pruning by age: {pruned:?}"
    );
    Ok(())
}

fn drift(fresh: &dyn Fn() -> Arc<dyn StateStore>) -> Result<(), String> {
    let store = fresh();
    ensure!(
        ok(store.drift(7), "reading drift")? == (None, None),
        "an unwatched version has drift state"
    );
    ok(
        store.put_drift_reference(7, "{\"calls\":1}", None),
        "keeping a reference",
    )?;
    ok(
        store.put_drift_judged(7, "{\"drifting\":true}"),
        "keeping a judgement",
    )?;
    ensure!(
        ok(store.drift(7), "reading drift")?
            == (
                Some("{\"calls\":1}".to_string()),
                Some("{\"drifting\":true}".to_string())
            ),
        "drift state read back differs"
    );
    let pin = NewEntry {
        actor: "ops",
        action: "drift-pin",
        subject: "score",
        digest: None,
        detail: json!({}),
    };
    ok(
        store.put_drift_reference(7, "{\"calls\":2}", Some(pin)),
        "pinning",
    )?;
    ensure!(
        ok(store.drift(7), "reading drift")?.0.as_deref() == Some("{\"calls\":2}"),
        "a pinned reference replaces the old one"
    );
    ensure!(
        entries(&*store)?.iter().any(|e| e.action == "drift-pin"),
        "the pin is audited"
    );
    Ok(())
}

fn event_sources(fresh: &dyn Fn() -> Arc<dyn StateStore>) -> Result<(), String> {
    let store = fresh();
    let rt = runtime()?;
    let processed = |id: &str| Processed {
        source: "nats:CLAIMS/evos".into(),
        event_id: id.into(),
    };
    ensure!(
        !ok(store.processed("nats:CLAIMS/evos", "e1"), "looking up")?,
        "an event never recorded reads as processed"
    );
    let subject = "event/e1".to_string();
    let first = NewEntry {
        actor: "webhook",
        action: "pipeline",
        subject: &subject,
        digest: None,
        detail: json!({}),
    };
    ok(
        rt.block_on(store.record_event(first.clone(), Vec::new(), None, Some(processed("e1")))),
        "recording a sourced event",
    )?;
    ensure!(
        ok(store.processed("nats:CLAIMS/evos", "e1"), "looking up")?,
        "a recorded event does not read as processed"
    );
    ensure!(
        !ok(store.processed("nats:OTHER/evos", "e1"), "looking up")?,
        "an event reads as processed by another source"
    );
    let again = rt.block_on(store.record_event(first, Vec::new(), None, Some(processed("e1"))));
    ensure!(
        matches!(again, Err(crate::Error::Duplicate(_))),
        "recording a processed event again was not refused: {again:?}"
    );
    let log = entries(&*store)?;
    ensure!(
        log.len() == 1,
        "a refused duplicate left an audit entry: {log:?}"
    );

    // Marks older than a window are forgotten, the others kept.
    let forgot = ok(
        store.forget_processed("nats:CLAIMS/evos", "2000-01-01T00:00:00Z"),
        "forgetting nothing",
    )?;
    ensure!(forgot == 0, "a mark made now was older than 2000: {forgot}");
    let forgot = ok(
        store.forget_processed("nats:CLAIMS/evos", "9999-01-01T00:00:00Z"),
        "forgetting processed events",
    )?;
    ensure!(
        forgot == 1 && !ok(store.processed("nats:CLAIMS/evos", "e1"), "looking up")?,
        "forgetting the marks before 9999 removed {forgot} and left e1 processed"
    );

    let letter = NewDeadLetter {
        source: "nats:CLAIMS/evos",
        connector: "webhook",
        subject: "claims.new",
        sequence: 42,
        delivered: 5,
        error: "the store was unreachable",
        payload: b"{\"id\": \"C-9\"}",
    };
    let id = ok(store.dead_letter(&letter), "keeping a dead letter")?;
    let kept = ok(store.dead_letters(None), "listing dead letters")?;
    ensure!(
        kept.len() == 1
            && kept[0].id == id
            && kept[0].payload == letter.payload
            && kept[0].sequence == 42
            && kept[0].delivered == 5
            && kept[0].connector == "webhook",
        "the dead letter read back differs: {kept:?}"
    );
    ensure!(
        ok(store.dead_letters(Some("nats:OTHER/evos")), "listing")?.is_empty(),
        "another source's listing holds the letter"
    );
    let log = entries(&*store)?;
    let last = log.last().ok_or("no audit entry")?;
    ensure!(
        last.action == "dead-letter"
            && last.actor == "webhook"
            && last.subject == format!("dead-letter/{id}")
            && last.detail["sequence"] == 42
            && last.digest.as_deref() == Some(kept[0].payload_sha256.as_str()),
        "the dead letter's audit entry is {last:?}"
    );
    Ok(())
}

fn console_sessions(fresh: &dyn Fn() -> Arc<dyn StateStore>) -> Result<(), String> {
    use super::{ConsoleSession, SESSIONS_PER_TOKEN};
    let store = fresh();
    let session = |n: i64, token: &str, created: i64| ConsoleSession {
        id_sha256: format!("{n:064x}"),
        token_id: token.into(),
        csrf: format!("csrf-{n}"),
        created,
        expires: created + 100,
    };
    let entry = |action: &'static str| NewEntry {
        actor: "token/aaaa",
        action,
        subject: "console",
        digest: None,
        detail: json!({}),
    };
    let a = session(1, "aaaa", 1_000);
    ok(
        store.open_session(&a, entry("console-sign-in")),
        "opening a session",
    )?;
    ensure!(
        ok(store.session(&a.id_sha256), "reading a session")? == Some(a.clone()),
        "the session did not read back as kept"
    );
    ensure!(
        ok(store.session(&"f".repeat(64)), "reading a session")?.is_none(),
        "an unknown session was found"
    );
    // Opening one deletes those that ended before it.
    let b = session(2, "bbbb", 1_200);
    ok(
        store.open_session(&b, entry("console-sign-in")),
        "opening a session",
    )?;
    ensure!(
        ok(store.session(&a.id_sha256), "reading a session")?.is_none(),
        "an ended session was kept"
    );
    // A token keeps at most SESSIONS_PER_TOKEN; the oldest goes first.
    for n in 0..SESSIONS_PER_TOKEN {
        let s = session(100 + n, "cccc", 1_201 + n);
        ok(
            store.open_session(&s, entry("console-sign-in")),
            "opening a session",
        )?;
    }
    let newest = session(999, "cccc", 1_290);
    ok(
        store.open_session(&newest, entry("console-sign-in")),
        "opening a session",
    )?;
    ensure!(
        ok(store.session(&format!("{:064x}", 100)), "reading")?.is_none(),
        "the token's oldest session outlived the cap"
    );
    ensure!(
        ok(store.session(&format!("{:064x}", 101)), "reading")?.is_some()
            && ok(store.session(&newest.id_sha256), "reading")?.is_some(),
        "the cap ended more than the oldest"
    );
    ok(
        store.close_session(&b.id_sha256, Some(entry("console-sign-out"))),
        "closing a session",
    )?;
    ensure!(
        ok(store.session(&b.id_sha256), "reading a session")?.is_none(),
        "a closed session was found"
    );
    ok(
        store.close_sessions_of("cccc"),
        "closing a token's sessions",
    )?;
    ensure!(
        ok(store.session(&newest.id_sha256), "reading a session")?.is_none(),
        "a revoked token's session was found"
    );
    let audited: Vec<String> = entries(&*store)?.into_iter().map(|e| e.action).collect();
    ensure!(
        audited.iter().filter(|a| *a == "console-sign-in").count()
            == 3 + SESSIONS_PER_TOKEN as usize
            && audited.iter().filter(|a| *a == "console-sign-out").count() == 1,
        "sign-ins and sign-outs audited as {audited:?}"
    );
    Ok(())
}

fn tokens(fresh: &dyn Fn() -> Arc<dyn StateStore>) -> Result<(), String> {
    let store = fresh();
    let token = |id: &str, role: Role| Token {
        id: id.into(),
        name: format!("{id}-name"),
        role,
        scope: "claims-*".into(),
        created_at: "2026-01-01T00:00:00.000000Z".into(),
        revoked_at: None,
    };
    let (a, b) = (token("aaaa", Role::Deployer), token("bbbb", Role::Reviewer));
    ok(
        store.create_token(&a, &"1".repeat(64), "admin"),
        "creating a token",
    )?;
    ok(
        store.create_token(&b, &"2".repeat(64), "admin"),
        "creating a token",
    )?;
    ensure!(
        store.create_token(&a, &"3".repeat(64), "admin").is_err(),
        "a token id was created twice"
    );
    let listed = ok(store.tokens(), "listing tokens")?;
    ensure!(
        listed == [a.clone(), b.clone()],
        "tokens listed as {listed:?}"
    );
    let (found, hash) =
        ok(store.token("aaaa"), "looking a token up")?.ok_or("a created token is missing")?;
    ensure!(
        found == a && hash == "1".repeat(64),
        "token read back as {found:?} {hash}"
    );
    ensure!(
        ok(store.token("cccc"), "looking up")?.is_none(),
        "an unknown token was found"
    );
    ok(store.revoke_token("aaaa", "admin"), "revoking")?;
    let (found, _) = ok(store.token("aaaa"), "looking up")?.ok_or("a revoked token vanished")?;
    ensure!(
        found.revoked_at.is_some(),
        "a revoked token has no revocation time"
    );
    ensure!(
        store.revoke_token("aaaa", "admin").is_err(),
        "a token was revoked twice"
    );
    ensure!(
        store.revoke_token("cccc", "admin").is_err(),
        "an unknown token was revoked"
    );
    let log: Vec<(String, String)> = entries(&*store)?
        .into_iter()
        .map(|e| (e.action, e.subject))
        .collect();
    ensure!(
        log == [
            ("token-created".to_string(), "token/aaaa".to_string()),
            ("token-created".into(), "token/bbbb".into()),
            ("token-revoked".into(), "token/aaaa".into()),
        ],
        "audit entries of the tokens: {log:?}"
    );
    ensure!(
        entries(&*store)?
            .iter()
            .all(|e| !e.detail.to_string().contains(&"1".repeat(64))),
        "a secret hash reached the audit log"
    );
    Ok(())
}

fn kv(fresh: &dyn Fn() -> Arc<dyn StateStore>) -> Result<(), String> {
    let kv = fresh().kv();
    let roomy = KvQuota {
        max_keys: 100,
        max_total_bytes: 1 << 20,
    };
    ok(kv.set("a", "k1", b"12345", roomy), "setting")?;
    ok(kv.set("a", "k2", b"x", roomy), "setting")?;
    ok(
        kv.set("b", "k1", b"other", roomy),
        "setting in another namespace",
    )?;
    ensure!(
        ok(kv.get("a", "k1"), "getting")? == Some(b"12345".to_vec()),
        "a value read back wrong"
    );
    ensure!(
        ok(kv.get("b", "k1"), "getting")? == Some(b"other".to_vec()),
        "namespaces are not separate"
    );
    let keys = ok(kv.list_keys("a", "k", 10), "listing")?;
    ensure!(keys == ["k1", "k2"], "keys with prefix k: {keys:?}");
    let keys = ok(kv.list_keys("a", "k", 1), "listing")?;
    ensure!(keys == ["k1"], "the listing limit is not kept: {keys:?}");
    ensure!(
        ok(kv.delete("a", "k2"), "deleting")?,
        "deleting a present key said absent"
    );
    ensure!(
        !ok(kv.delete("a", "k2"), "deleting")?,
        "deleting an absent key said present"
    );

    let two = KvQuota {
        max_keys: 2,
        max_total_bytes: 1 << 20,
    };
    ok(kv.set("q", "x", b"1", two), "setting")?;
    ok(kv.set("q", "y", b"1", two), "setting")?;
    ok(kv.set("q", "y", b"2", two), "replacing at the key limit")?;
    ensure!(
        matches!(kv.set("q", "z", b"1", two), Err(KvStoreError::Quota(_))),
        "a key beyond max-keys was not refused as a quota"
    );
    ensure!(
        ok(kv.get("q", "z"), "getting")?.is_none(),
        "a refused write was stored"
    );
    let eight = KvQuota {
        max_keys: 100,
        max_total_bytes: 8,
    };
    ok(
        kv.set("t", "ab", b"123456", eight),
        "filling to the byte limit",
    )?;
    ensure!(
        matches!(kv.set("t", "c", b"", eight), Err(KvStoreError::Quota(_))),
        "bytes beyond max-total-bytes were not refused as a quota"
    );
    ok(kv.delete("t", "ab"), "deleting")?;
    ok(
        kv.set("t", "c", b"1234567", eight),
        "writing into freed bytes",
    )?;

    let rt = runtime()?;
    ok(
        rt.block_on(kv.set_owned("a".into(), "async".into(), b"v".to_vec(), roomy)),
        "setting from async code",
    )?;
    ensure!(
        ok(kv.get("a", "async"), "getting")? == Some(b"v".to_vec()),
        "an async write was not stored"
    );
    ensure!(
        ok(
            rt.block_on(kv.delete_owned("a".into(), "async".into())),
            "deleting from async code"
        )?,
        "an async delete missed its key"
    );
    Ok(())
}

fn generation_watch(fresh: &dyn Fn() -> Arc<dyn StateStore>) -> Result<(), String> {
    let store = fresh();
    let rt = runtime()?;
    rt.block_on(async {
        let mut watch = store.clone().watch_generation(Duration::from_millis(10));
        let before = *watch.borrow_and_update();
        let detail = json!({});
        ok(
            store.record_deploy(
                &version("p", "1.0.0", "d1"),
                &Deploy {
                    action: "deploy",
                    actor: "alice",
                    slot: Slot::Stable,
                    detail: &detail,
                    seen: None,
                    step: None,
                },
            ),
            "deploying",
        )?;
        let changed = tokio::time::timeout(Duration::from_secs(10), watch.changed()).await;
        ensure!(
            matches!(changed, Ok(Ok(()))),
            "the watch did not report the deploy"
        );
        let after = *watch.borrow();
        ensure!(
            after > before,
            "the watched generation went {before} -> {after}"
        );
        Ok(())
    })
}
