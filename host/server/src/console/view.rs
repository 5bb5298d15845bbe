//! The console's pages. Every value goes through [`maud`], which escapes
//! it; nothing here builds markup from strings.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use super::timeline::{self, Point};
use super::{Change, Signed};
use crate::audit::{Entry, Page, Verification};
use crate::auth::Permission;
use crate::registry::{PluginStatus, VersionStatus};
use crate::review::{Review, ReviewStatus};
use crate::store::{DecisionRecord, HistoryRow, Label};

/// `s` as one URL path segment (percent-encoded).
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Seconds between reloads of the live rollout pages.
const REFRESH: u32 = 10;

fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn layout(signed: Option<&Signed>, title: &str, body: Markup) -> Markup {
    page_with(signed, title, None, body)
}

/// A page; `refresh` reloads it every that many seconds (live numbers).
fn page_with(signed: Option<&Signed>, title: &str, refresh: Option<u32>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(r) = refresh { meta http-equiv="refresh" content=(r); }
                title { (title) " · evos" }
                link rel="stylesheet" href="/ui/assets/console.css";
                script src="/ui/assets/console.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/ui" { "evos" }
                    @if let Some(s) = signed {
                        nav {
                            @if s.may(Permission::Review, None) { a href="/ui/reviews" accesskey="q" { "Reviews" } }
                            @if s.may(Permission::Status, None) { a href="/ui/rollouts" { "Rollouts" } }
                            @if s.may(Permission::Review, None) || s.may(Permission::Audit, None) { a href="/ui/events" { "Events" } }
                            @if s.may(Permission::Audit, None) { a href="/ui/audit" { "Audit" } }
                        }
                        div.who {
                            span id="who" { (s.token.name) " · " (s.token.role.as_str()) " · scope " code { (s.token.scope) } }
                            form method="post" action="/ui/logout" {
                                input type="hidden" name="csrf" value=(s.csrf());
                                button type="submit" id="sign-out" { "Sign out" }
                            }
                        }
                    }
                }
                main { (body) }
                footer { "Keyboard: " kbd { "?" } " shows the shortcuts of this page." }
            }
        }
    }
}

pub fn error(signed: Option<&Signed>, status: StatusCode, message: &str) -> Markup {
    layout(
        signed,
        "Refused",
        html! {
            h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
            p.error id="error" { (message) }
            @if signed.is_none() { p { a href="/ui/login" { "Sign in" } } }
        },
    )
}

pub fn login(csrf: &str, notice: Option<&str>, next: Option<&str>) -> Markup {
    layout(
        None,
        "Sign in",
        html! {
            h1 { "Sign in" }
            @if let Some(n) = notice { p.notice id="notice" { (n) } }
            form.login method="post" action="/ui/login" {
                input type="hidden" name="csrf" value=(csrf);
                @if let Some(n) = next { input type="hidden" name="next" value=(n); }
                label for="token" { "API token" }
                input id="token" name="token" type="password" autocomplete="off" placeholder="evos_…" required autofocus;
                button type="submit" id="sign-in" { "Sign in" }
            }
            p.hint { "An operator creates tokens with " code { "evos token create --role reviewer" } ". The token is exchanged for a session cookie; it is not stored in the browser." }
        },
    )
}

fn status_badge(status: ReviewStatus) -> Markup {
    html! { span class=(format!("badge {}", status.as_str())) { (status.as_str()) } }
}

pub fn reviews(signed: &Signed, status: Option<ReviewStatus>, list: &[Review]) -> Markup {
    let tabs = [
        ReviewStatus::Pending,
        ReviewStatus::Executed,
        ReviewStatus::Rejected,
        ReviewStatus::Failed,
        ReviewStatus::Approved,
    ];
    layout(
        Some(signed),
        "Reviews",
        html! {
            h1 { "Review queue" }
            nav.tabs {
                @for t in tabs {
                    a.active[status == Some(t)] href=(format!("/ui/reviews?status={}", t.as_str())) { (t.as_str()) }
                }
            }
            @if list.is_empty() {
                p.empty id="empty" { "Nothing here." }
            } @else {
                table.list id="reviews" data-keys="rows" {
                    thead { tr { th { "#" } th { "Created" } th { "Status" } th { "Action" } th { "Proposed by" } th { "Event" } th { "Why" } } }
                    tbody {
                        @for r in list {
                            tr data-href=(format!("/ui/reviews/{}", r.id)) {
                                td { a href=(format!("/ui/reviews/{}", r.id)) { (r.id) } }
                                td { (r.created_at) }
                                td { (status_badge(r.status)) }
                                td { (r.action.kind) }
                                td { (r.proposed_by) }
                                td { (r.event.id) }
                                td { (r.reasons.join("; ")) }
                            }
                        }
                    }
                }
                p.hint { kbd { "j" } "/" kbd { "k" } " move, " kbd { "Enter" } " opens." }
            }
        },
    )
}

/// The steps of a decision record: which agent, models and policies made it.
fn decision_steps(d: &DecisionRecord) -> Markup {
    let steps = d.steps.as_array().cloned().unwrap_or_default();
    html! {
        table.list id="decision" {
            thead { tr { th { "Step" } th { "Plugin" } th { "Version" } th { "Digest" } th { "Answer" } } }
            tbody {
                @for s in &steps {
                    @let kind = s["kind"].as_str().unwrap_or("");
                    tr class=(format!("step {kind}")) {
                        td { (kind) }
                        td { (s["plugin"].as_str().unwrap_or("")) }
                        td.version { (s["version"].as_str().unwrap_or("")) }
                        td { code { (short(s["digest"].as_str().unwrap_or(""))) } }
                        td {
                            @if let Some(class) = s["class"].as_str() { (class) }
                            @if kind == "model-adapter" {
                                @if let Some(o) = s.get("outcome").and_then(Value::as_str) { span.outcome { (o) } " " }
                                @if !s["output"].is_null() { code.score { (s["output"].to_string()) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn entries_table(id: &str, entries: &[Entry]) -> Markup {
    html! {
        table.list id=(id) {
            thead { tr { th { "#" } th { "At" } th { "Actor" } th { "Action" } th { "Subject" } th { "Detail" } } }
            tbody {
                @for e in entries {
                    tr {
                        td { (e.seq) }
                        td { (e.at) }
                        td { (e.actor) }
                        td.action { (e.action) }
                        td { (e.subject) }
                        td { details { summary { "detail" } pre { (pretty(&e.detail)) } } }
                    }
                }
            }
        }
    }
}

pub fn review(
    signed: &Signed,
    r: &Review,
    decision: Option<&DecisionRecord>,
    after: &[Entry],
    next: Option<i64>,
    done: Option<&str>,
) -> Markup {
    let event_link = format!("/ui/events/{}", path_segment(&r.event.id));
    layout(
        Some(signed),
        &format!("Review {}", r.id),
        html! {
            h1 { "Review " (r.id) " " (status_badge(r.status)) }
            @if let Some(d) = done { p.notice id="done" { "Review " (d) "." } }
            section.grid {
                div.card {
                    h2 { "Event" }
                    dl {
                        dt { "Id" } dd { a href=(event_link) id="event-link" { (r.event.id) } }
                        dt { "Kind" } dd { (r.event.kind) }
                        dt { "Source" } dd { (r.event.source) }
                        dt { "Trace" } dd { code { (r.trace_id) } }
                    }
                    pre id="event-payload" { (pretty(r.event.payload.value())) }
                }
                div.card {
                    h2 { "Proposed action" }
                    dl {
                        dt { "Kind" } dd id="action-kind" { (r.action.kind) }
                        dt { "Proposed by" } dd { (r.proposed_by) }
                        @if let Some(c) = &r.connector { dt { "Carried out by" } dd { (c) } }
                        dt { "Rationale" } dd id="rationale" { (r.action.rationale) }
                    }
                    pre id="action-payload" { (pretty(r.action.payload.value())) }
                }
            }
            section.card {
                h2 { @if r.status == ReviewStatus::Pending { "Why it waits for a human" } @else { "Why it went to a human" } }
                ul id="reasons" { @for reason in &r.reasons { li { (reason) } } }
                @if let Some(d) = decision { (decision_steps(d)) }
            }
            @if r.status == ReviewStatus::Pending && signed.may(Permission::Review, Some(&r.proposed_by)) {
                section.card.decide {
                    h2 { "Decide" }
                    form method="post" action=(format!("/ui/reviews/{}", r.id)) id="decide" {
                        input type="hidden" name="csrf" value=(signed.csrf());
                        label for="comment" { "Comment (kept in the audit log)" }
                        textarea id="comment" name="comment" rows="3" maxlength="4096" {}
                        div.buttons {
                            button type="submit" name="decision" value="approve" id="approve" data-key="a" { "Approve and carry out" }
                            button type="submit" name="decision" value="reject" id="reject" data-key="r" { "Reject" }
                        }
                    }
                    p.hint { kbd { "a" } " approves, " kbd { "r" } " rejects, " kbd { "c" } " writes a comment, " kbd { "n" } " opens the next pending review." }
                }
            }
            section.card {
                h2 { "What happened" }
                dl id="outcome" {
                    dt { "Status" } dd id="status" { (r.status.as_str()) }
                    @if let Some(by) = &r.decided_by { dt { "Decided by" } dd { (by) } }
                    @if let Some(at) = &r.decided_at { dt { "At" } dd { (at) } }
                    @if let Some(c) = &r.comment { dt { "Comment" } dd id="decided-comment" { (c) } }
                    @if let Some(res) = &r.result { dt { "Result" } dd id="result" { (res) } }
                }
                (entries_table("review-audit", after))
            }
            p {
                a href="/ui/reviews" { "Back to the queue" }
                @if let Some(n) = next { " · " a href=(format!("/ui/reviews/{n}")) id="next" data-key="n" { "Next pending review" } }
            }
        },
    )
}

pub fn events(signed: &Signed, recent: &[Entry]) -> Markup {
    layout(
        Some(signed),
        "Events",
        html! {
            h1 { "Events" }
            form method="get" action="/ui/events" {
                label for="event-id" { "Event id" }
                input id="event-id" name="id" type="search";
                button type="submit" { "Show trace" }
            }
            h2 { "Recent" }
            table.list id="events" data-keys="rows" {
                thead { tr { th { "Event" } th { "At" } th { "Kind" } th { "Connector" } th { "Actions" } } }
                tbody {
                    @for e in recent {
                        @let id = e.subject.strip_prefix("event/").unwrap_or(&e.subject);
                        @let href = format!("/ui/events/{}", path_segment(id));
                        tr data-href=(href) {
                            td { a href=(href) { (id) } }
                            td { (e.at) }
                            td { (e.detail["event_kind"].as_str().unwrap_or("")) }
                            td { (e.actor) }
                            td {
                                @for a in e.detail["actions"].as_array().into_iter().flatten() {
                                    span class=(format!("badge {}", a["disposition"]["status"].as_str().unwrap_or(""))) {
                                        (a["kind"].as_str().unwrap_or("")) ": " (a["disposition"]["status"].as_str().unwrap_or(""))
                                    }
                                    " "
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// One step of a trace with a bar for its time, scaled to `longest`.
fn step_row(kind: &str, s: &Value, longest: f64, depth: usize) -> Markup {
    let us = s["duration_us"].as_f64().unwrap_or(0.0);
    let width = if longest > 0.0 {
        (us / longest * 200.0).max(1.0)
    } else {
        1.0
    };
    html! {
        tr class=(format!("step {kind}")) {
            td { @for _ in 0..depth { "↳ " } (kind) }
            td.plugin { (s["plugin"].as_str().unwrap_or("")) }
            td.version { (s["version"].as_str().unwrap_or("")) }
            td { code { (short(s["digest"].as_str().unwrap_or(""))) } }
            td.outcome { (s["outcome"].as_str().unwrap_or("")) }
            td { (format!("{:.2} ms", us / 1000.0)) }
            td {
                svg xmlns="http://www.w3.org/2000/svg" width="200" height="10" viewBox="0 0 200 10" {
                    rect width=(format!("{width:.1}")) height="10" fill="#2563eb" {}
                }
            }
            td {
                @if let Some(m) = s.get("model_output").filter(|m| !m.is_null()) {
                    code.score { (m["output"].to_string()) }
                    " (" (m["model"].as_str().unwrap_or("")) ")"
                }
            }
        }
        @for n in s["nested"].as_array().into_iter().flatten() {
            (step_row("model", n, longest, depth + 1))
        }
    }
}

pub fn event(
    signed: &Signed,
    id: &str,
    entries: &[Entry],
    labels: &[Label],
    done: Option<&str>,
) -> Markup {
    let pipeline = entries.iter().find(|e| e.action == "pipeline");
    let steps: Vec<Value> = pipeline
        .and_then(|p| p.detail["steps"].as_array().cloned())
        .unwrap_or_default();
    let actions: Vec<Value> = pipeline
        .and_then(|p| p.detail["actions"].as_array().cloned())
        .unwrap_or_default();
    let mut longest = 0.0f64;
    for s in &steps {
        longest = longest.max(s["duration_us"].as_f64().unwrap_or(0.0));
    }
    for a in &actions {
        longest = longest.max(a["execute"]["duration_us"].as_f64().unwrap_or(0.0));
    }
    layout(
        Some(signed),
        &format!("Event {id}"),
        html! {
            h1 { "Event " code { (id) } }
            @if let Some(d) = done { p.notice id="done" { "Done: " (d) "." } }
            @if let Some(p) = pipeline {
                dl {
                    dt { "Trace" } dd id="trace" { code { (p.detail["trace_id"].as_str().unwrap_or("")) } }
                    dt { "Kind" } dd { (p.detail["event_kind"].as_str().unwrap_or("")) }
                    dt { "Ingested by" } dd { (p.actor) }
                    dt { "At" } dd { (p.at) }
                    @if let Some(r) = p.detail.get("recorded") { dt { "Recorded" } dd { (r.as_str().unwrap_or("")) } }
                }
                h2 { "Path" }
                table.list id="trace-steps" {
                    thead { tr { th { "Step" } th { "Plugin" } th { "Version" } th { "Digest" } th { "Outcome" } th { "Time" } th {} th { "Answer" } } }
                    tbody {
                        @for (i, s) in steps.iter().enumerate() {
                            (step_row(if i == 0 { "ingest" } else { "agent" }, s, longest, 0))
                        }
                    }
                }
                h2 { "Actions" }
                @for (i, a) in actions.iter().enumerate() {
                    @let status = a["disposition"]["status"].as_str().unwrap_or("");
                    section.card.action id=(format!("action-{i}")) {
                        h3 { (a["kind"].as_str().unwrap_or("")) " " span class=(format!("badge {status}")) { (status) } }
                        dl {
                            dt { "Proposed by" } dd { (a["proposed_by"].as_str().unwrap_or("")) }
                            dt { "Rationale" } dd { (a["rationale"].as_str().unwrap_or("")) }
                            @if let Some(r) = a["disposition"]["receipt"].as_str() { dt { "Receipt" } dd { (r) } }
                            @if let Some(e) = a["disposition"]["error"].as_str() { dt { "Error" } dd { (e) } }
                            @if let Some(rid) = a["disposition"]["review_id"].as_i64() {
                                dt { "Review" } dd { a href=(format!("/ui/reviews/{rid}")) { "#" (rid) } }
                            }
                        }
                        table.list {
                            thead { tr { th { "Policy" } th { "Version" } th { "Decision" } th { "Reason" } } }
                            tbody {
                                @for p in a["policies"].as_array().into_iter().flatten() {
                                    tr {
                                        td { (p["policy"].as_str().unwrap_or("")) }
                                        td.version { (p["version"].as_str().unwrap_or("")) }
                                        td { (p["decision"]["decision"].as_str().unwrap_or("")) }
                                        td { (p["decision"]["reason"].as_str().unwrap_or("")) }
                                    }
                                }
                            }
                        }
                        @if !a["execute"].is_null() {
                            table.list { tbody { (step_row("execute", &a["execute"], longest, 0)) } }
                        }
                        (action_labels(signed, id, i, labels))
                    }
                }
                datalist id="label-words" { option value="approve" {} option value="reject" {} }
            }
            h2 { "Audit entries" }
            (entries_table("event-audit", entries))
        },
    )
}

/// The labels reviewers gave action `index`, and the form to add one.
fn action_labels(signed: &Signed, id: &str, index: usize, labels: &[Label]) -> Markup {
    let mine: Vec<&Label> = labels.iter().filter(|l| l.action_index == index).collect();
    html! {
        h4 { "Labels" }
        @if mine.is_empty() {
            p.empty { "None yet." }
        } @else {
            ul.labels id=(format!("labels-{index}")) {
                @for l in &mine {
                    li { strong { (l.label) } " by " (l.actor) " at " (l.at) @if let Some(c) = &l.comment { ": " (c) } }
                }
            }
        }
        @if signed.may(Permission::Review, None) {
            form.label method="post" action=(format!("/ui/events/{}", path_segment(id))) id=(format!("label-{index}")) {
                input type="hidden" name="csrf" value=(signed.csrf());
                input type="hidden" name="action_index" value=(index);
                label { "What it should have been "
                    input name="label" list="label-words" required pattern="[a-z0-9-]{1,64}" placeholder="approve, reject, fraud…";
                }
                label { "Comment " input name="comment" maxlength="4096"; }
                button type="submit" { "Add label" }
            }
        }
    }
}

fn version_row(role: &str, v: &VersionStatus) -> Markup {
    let outcomes = v
        .outcomes
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    html! {
        tr class=(format!("version {role}")) {
            td { (role) }
            td.version { (v.version) }
            td { code { (short(&v.digest)) } }
            td { (v.weight) "%" }
            td { (v.calls) }
            td.outcomes { (outcomes) }
            td { (format!("{:.2}", v.p50_us as f64 / 1000.0)) " / " (format!("{:.2}", v.p95_us as f64 / 1000.0)) " / " (format!("{:.2}", v.p99_us as f64 / 1000.0)) " ms" }
            td {
                @if let Some(h) = v.humans.as_ref().and_then(|h| h.rate()) { (format!("{:.0}% with humans", h * 100.0)) }
                @if let Some(d) = &v.drift { @if d.drifting { " " span.badge.failed { "drifting" } } }
            }
        }
    }
}

fn plugin_versions(p: &PluginStatus) -> Markup {
    html! {
        table.list.versions {
            thead { tr { th {} th { "Version" } th { "Digest" } th { "Weight" } th { "Calls" } th { "Outcomes" } th { "p50 / p95 / p99" } th {} } }
            tbody {
                (version_row("stable", &p.stable))
                @if let Some(c) = &p.canary { (version_row("canary", c)) }
                @if let Some(s) = &p.shadow {
                    (version_row("shadow", &s.version))
                }
            }
        }
        @if let Some(s) = &p.shadow {
            @for a in &s.agreement {
                p.agreement { "Shadow agrees with " (a.live_version) ": "
                    @match a.agreement_rate { Some(r) => { strong { (format!("{:.1}%", r * 100.0)) } } None => { "nothing compared yet" } }
                }
            }
        }
        @if let Some(r) = &p.rollout {
            div.rollout {
                p { "Rollout of " strong { (r.version) } ": step " (r.step) " of " (r.steps) " (" (r.slot) ", since " (r.since) "). Next: " (r.next) }
                table.list.gates {
                    thead { tr { th { "Gate" } th { "Value" } th { "Threshold" } th { "Holds" } th { "Note" } } }
                    tbody {
                        @for g in &r.gates {
                            tr {
                                td { (g.gate) }
                                td { @if let Some(v) = g.value { (format!("{v:.4}")) } }
                                td { (format!("{:.4}", g.threshold)) }
                                td { @match g.passed { Some(true) => { span.badge.executed { "yes" } } Some(false) => { span.badge.failed { "no" } } None => { "—" } } }
                                td { (g.note) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn change_buttons(signed: &Signed, p: &PluginStatus) -> Markup {
    let may = signed.may(Permission::Deploy, Some(&p.plugin));
    let base = format!("/ui/rollouts/{}", path_segment(&p.plugin));
    html! {
        @if may {
            div.buttons {
                @if p.canary.is_some() || p.shadow.is_some() {
                    a.button href=(format!("{base}/promote")) id=(format!("promote-{}", p.plugin)) { "Promote…" }
                }
                a.button.danger href=(format!("{base}/rollback")) id=(format!("rollback-{}", p.plugin)) { "Roll back…" }
            }
        }
    }
}

pub fn rollouts(signed: &Signed, status: &[PluginStatus]) -> Markup {
    page_with(
        Some(signed),
        "Rollouts",
        Some(REFRESH),
        html! {
            h1 { "Rollouts" }
            p.hint { "Live: this page reloads every " (REFRESH) " seconds." }
            @for p in status {
                section.card.plugin id=(format!("plugin-{}", p.plugin)) {
                    h2 { a href=(format!("/ui/rollouts/{}", path_segment(&p.plugin))) { (p.plugin) } " " small { (p.kind) } }
                    (plugin_versions(p))
                    (change_buttons(signed, p))
                }
            }
        },
    )
}

pub fn rollout(
    signed: &Signed,
    status: &[PluginStatus],
    history: &[HistoryRow],
    series: &BTreeMap<String, Vec<Point>>,
    done: Option<&str>,
) -> Markup {
    let name = status.first().map(|p| p.plugin.as_str()).unwrap_or("");
    page_with(
        Some(signed),
        name,
        Some(REFRESH),
        html! {
            h1 { (name) }
            @if let Some(d) = done { p.notice id="done" { "Done: " (d) "." } }
            @for p in status {
                section.card.plugin id=(format!("plugin-{}", p.plugin)) {
                    (plugin_versions(p))
                    (change_buttons(signed, p))
                }
            }
            h2 { "Over time" }
            (timeline::plots(series))
            h2 { "History" }
            table.list id="history" {
                thead { tr { th { "At" } th { "Change" } th { "By" } th { "Canary" } th { "Shadow" } th { "Step" } } }
                tbody {
                    @for h in history.iter().rev() {
                        tr {
                            td { (h.at) }
                            td.action { (h.action) }
                            td { (h.actor) }
                            td { @if h.canary_id.is_some() { (h.canary_weight) "%" } }
                            td { @if h.shadow_id.is_some() { (h.shadow_share) "%" } }
                            td { @if let Some(s) = h.rollout_step { (s) } }
                        }
                    }
                }
            }
        },
    )
}

pub fn confirm(signed: &Signed, p: &PluginStatus, change: Change) -> Markup {
    let what = match change {
        Change::Promote => match (&p.canary, &p.shadow) {
            (Some(c), _) => format!(
                "Make {} the stable version of {} (it takes all traffic; {} stays stored).",
                c.version, p.plugin, p.stable.version
            ),
            (None, Some(s)) => format!(
                "Start serving the shadow {} of {} on canary traffic.",
                s.version.version, p.plugin
            ),
            (None, None) => format!("{} has no candidate to promote.", p.plugin),
        },
        Change::Rollback => match (&p.canary, &p.shadow) {
            (Some(c), _) => format!(
                "Take the canary {} of {} out of traffic; {} serves everything.",
                c.version, p.plugin, p.stable.version
            ),
            (None, Some(s)) => format!("Stop shadowing {} of {}.", s.version.version, p.plugin),
            (None, None) => format!(
                "Replace the stable version {} of {} with the version before it.",
                p.stable.version, p.plugin
            ),
        },
    };
    let action = format!(
        "/ui/rollouts/{}/{}",
        path_segment(&p.plugin),
        change.as_str()
    );
    layout(
        Some(signed),
        "Confirm",
        html! {
            h1 { "Confirm: " (change.as_str()) " " (p.plugin) }
            p id="what" { (what) }
            p { "The change is recorded in the audit log as made by token " code { (signed.token.id) } "." }
            form method="post" action=(action) id="confirm" {
                input type="hidden" name="csrf" value=(signed.csrf());
                input type="hidden" name="confirm" value="yes";
                button type="submit" id="confirm-button" class=(if matches!(change, Change::Rollback) { "danger" } else { "" }) { "Yes, " (change.as_str()) }
                " "
                a href=(format!("/ui/rollouts/{}", path_segment(&p.plugin))) { "Cancel" }
            }
        },
    )
}

pub fn audit(signed: &Signed, filter: &Page<'_>, entries: &[Entry], older: Option<i64>) -> Markup {
    let mut query = Vec::new();
    for (k, v) in [
        ("action", filter.action),
        ("subject", filter.subject),
        ("actor", filter.actor),
    ] {
        if let Some(v) = v {
            query.push(format!("{k}={}", path_segment(v)));
        }
    }
    let older = older.map(|before| {
        query.push(format!("before={before}"));
        format!("/ui/audit?{}", query.join("&"))
    });
    layout(
        Some(signed),
        "Audit",
        html! {
            h1 { "Audit log" }
            form.filters method="get" action="/ui/audit" {
                label { "Action " input name="action" value=(filter.action.unwrap_or("")) placeholder="pipeline"; }
                label { "Subject starts with " input name="subject" value=(filter.subject.unwrap_or("")) placeholder="event/"; }
                label { "Actor contains " input name="actor" value=(filter.actor.unwrap_or("")) placeholder="token/"; }
                button type="submit" { "Filter" }
                " "
                a.button href="/ui/audit/verify" id="verify" { "Verify the chain" }
            }
            (entries_table("audit", entries))
            p.pages {
                a href="/ui/audit" { "Newest" }
                @if let Some(href) = older {
                    " · " a href=(href) id="older" { "Older" }
                }
            }
        },
    )
}

pub fn verified(signed: &Signed, v: &Verification) -> Markup {
    layout(
        Some(signed),
        "Verify",
        html! {
            h1 { "Audit chain" }
            @if v.intact {
                p.notice id="verdict" { "Intact: " (v.entries) " entries chain from the first to the last" @if v.anchored { ", and the chain leads to this node's anchor" } "." }
            } @else {
                p.error id="verdict" { "Not intact: " (v.entries) " entries are good before the first problem." }
                @if let Some(p) = &v.problem { pre { (serde_json::to_string_pretty(p).unwrap_or_default()) } }
            }
            @if let Some(n) = &v.note { p { (n) } }
            p { a href="/ui/audit" { "Back to the log" } }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(path_segment("CLM-1"), "CLM-1");
        assert_eq!(path_segment("a/b?c#d e"), "a%2Fb%3Fc%23d%20e");
        assert_eq!(path_segment("\"><script>"), "%22%3E%3Cscript%3E");
    }
}
