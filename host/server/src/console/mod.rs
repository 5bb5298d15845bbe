//! The web console at `/ui`: the review queue, rollouts, one event's trace
//! and the audit log, for people who do not use the CLI.
//!
//! Pages are rendered on the server ([`maud`] escapes everything it is
//! given), with a stylesheet and a small script for keyboard shortcuts
//! embedded in the binary: there is no build step and nothing loads from
//! elsewhere. Every response carries a Content-Security-Policy that allows
//! only those two files, so markup that slipped through could not run.
//!
//! Sign-in exchanges an API token for a session cookie (see [`session`]);
//! every page and action is checked with the token's role and scope by the
//! same [`crate::server::permit`] the API uses, and refusals are audited
//! the same way. Every form carries the session's CSRF secret; a POST
//! without it, or from another origin, is refused and audited.

#![allow(
    clippy::result_large_err,
    reason = "the error of a page is the response to send, built once per refused request"
)]

pub mod session;
pub mod timeline;
mod view;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{Permission, Token};
use crate::server::{ApiError, Host, permit};
use session::{COOKIE, LOGIN_COOKIE, Session, Sessions};

/// What the console keeps per node.
pub struct Console {
    pub sessions: Sessions,
    pub timeline: timeline::Timeline,
}

impl Console {
    pub fn new(store: Arc<dyn crate::store::StateStore>, session_ttl: Duration) -> Console {
        Console {
            sessions: Sessions::new(store, session_ttl),
            timeline: timeline::Timeline::default(),
        }
    }
}

/// The console's routes.
pub fn router() -> Router<Arc<Host>> {
    Router::new()
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/logout", axum::routing::post(logout))
        .route("/ui/reviews", get(reviews))
        .route("/ui/reviews/{id}", get(review).post(decide))
        .route("/ui/events", get(find_event))
        .route("/ui/events/{id}", get(event).post(label))
        .route("/ui/rollouts", get(rollouts))
        .route("/ui/rollouts/{plugin}", get(rollout))
        .route("/ui/rollouts/{plugin}/{change}", get(confirm).post(change))
        .route("/ui/audit", get(audit))
        .route("/ui/audit/verify", get(verify))
        .route("/ui/assets/{file}", get(asset))
        .fallback(not_found)
}

/// The headers of every console response.
fn secured(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    let pairs = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in pairs {
        h.insert(name, HeaderValue::from_static(value));
    }
    resp
}

fn page(status: StatusCode, markup: maud::Markup) -> Response {
    secured(
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            markup.into_string(),
        )
            .into_response(),
    )
}

fn redirect(to: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    secured(resp)
}

/// An error shown as a page, in the layout when signed in.
fn error_page(signed: Option<&Signed>, e: ApiError) -> Response {
    page(e.status, view::error(signed, e.status, &e.message))
}

async fn not_found(State(host): State<Arc<Host>>, headers: HeaderMap) -> Response {
    let signed = signed_in(&host, &headers).ok();
    error_page(
        signed.as_ref(),
        ApiError::new(StatusCode::NOT_FOUND, "not-found", "no such page"),
    )
}

/// A signed-in browser: its session and the token behind it, looked up
/// again for this request.
pub struct Signed {
    pub token: Token,
    pub session: Session,
    cookie: String,
}

impl Signed {
    pub fn csrf(&self) -> &str {
        &self.session.csrf
    }

    pub fn may(&self, permission: Permission, plugin: Option<&str>) -> bool {
        self.token.allows(permission, plugin)
    }

    fn actor(&self) -> String {
        format!("token/{} (console)", self.token.id)
    }

    /// Whether a form this session posted to `path` is its own (see
    /// [`same_origin`]).
    fn posted(
        &self,
        host: &Host,
        headers: &HeaderMap,
        csrf: &str,
        path: &str,
    ) -> Result<(), Response> {
        same_origin(host, headers, Some(self.csrf()), csrf, &self.actor(), path)
    }
}

impl axum::extract::FromRequestParts<Arc<Host>> for Signed {
    /// Where to sign in, or the error page.
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        host: &Arc<Host>,
    ) -> Result<Signed, Response> {
        signed_in(host, &parts.headers)
    }
}

/// The session of this request, or where to go to sign in.
fn signed_in(host: &Host, headers: &HeaderMap) -> Result<Signed, Response> {
    let Some(cookie) = session::cookie(headers, COOKIE) else {
        return Err(redirect("/ui/login"));
    };
    let session = match host.console.sessions.get(cookie) {
        Ok(Some(s)) => s,
        Ok(None) => return Err(redirect("/ui/login?expired=1")),
        Err(e) => return Err(error_page(None, e.into())),
    };
    match host.tokens.active(&session.token_id) {
        Ok(Some(token)) => Ok(Signed {
            token,
            session,
            cookie: cookie.to_string(),
        }),
        Ok(None) => {
            // The token was revoked: every session it opened ends.
            let _ = host.console.sessions.close_token(&session.token_id);
            Err(redirect("/ui/login?expired=1"))
        }
        Err(e) => Err(error_page(None, e.into())),
    }
}

/// Check the session's token for `permission` (on `plugin`), audited as
/// the API's checks are.
fn require(
    host: &Host,
    signed: &Signed,
    permission: Permission,
    plugin: Option<&str>,
    path: &str,
) -> Result<(), Response> {
    permit(host, Some(signed.token.clone()), permission, plugin, path)
        .map(|_| ())
        .map_err(|e| error_page(Some(signed), e))
}

/// Whether a POST comes from this console: its form carries the session's
/// CSRF secret, and the browser does not say it comes from another origin.
/// A refusal is audited (at the same bounded rate as other refusals).
fn same_origin(
    host: &Host,
    headers: &HeaderMap,
    expected: Option<&str>,
    given: &str,
    actor: &str,
    path: &str,
) -> Result<(), Response> {
    let cross_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v != "same-origin" && v != "none");
    let origin_host = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|o| *o != "null")
        .map(|o| o.split_once("://").map_or(o, |(_, rest)| rest).to_string());
    let host_header = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let foreign_origin = match (&origin_host, host_header) {
        (Some(o), Some(h)) => o != h,
        (Some(_), None) => true,
        (None, _) => false,
    };
    let csrf_ok = expected.is_some_and(|e| !given.is_empty() && crate::auth::same(e, given));
    if csrf_ok && !cross_site && !foreign_origin {
        return Ok(());
    }
    let why = if !csrf_ok {
        "the form's CSRF token is missing or wrong; reload the page and try again"
    } else {
        "the request came from another site"
    };
    host.audit_refusal(StatusCode::FORBIDDEN, actor, path, None, why);
    Err(page(
        StatusCode::FORBIDDEN,
        view::error(None, StatusCode::FORBIDDEN, why),
    ))
}

fn is_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// Where a signed-in token starts: the first page its role may see.
fn landing(token: &Token) -> &'static str {
    if token.allows(Permission::Review, None) {
        "/ui/reviews"
    } else if token.allows(Permission::Status, None) {
        "/ui/rollouts"
    } else if token.allows(Permission::Audit, None) {
        "/ui/audit"
    } else {
        "/ui/events"
    }
}

/// A path to return to after sign-in: only the console's own pages.
fn local_next(next: Option<&str>) -> Option<&str> {
    next.filter(|n| {
        n.starts_with("/ui/")
            && !n.starts_with("/ui/login")
            && !n.contains("//")
            && !n.contains('\\')
            && n.chars().all(|c| c.is_ascii_graphic())
    })
}

async fn index(State(host): State<Arc<Host>>, headers: HeaderMap) -> Response {
    match signed_in(&host, &headers) {
        Ok(s) => redirect(landing(&s.token)),
        Err(r) => r,
    }
}

#[derive(Deserialize, Default)]
struct LoginQuery {
    expired: Option<String>,
    next: Option<String>,
}

async fn login_form(headers: HeaderMap, Query(q): Query<LoginQuery>) -> Response {
    let notice = q
        .expired
        .is_some()
        .then_some("Your session ended. Sign in again.");
    login_page(
        StatusCode::OK,
        notice,
        local_next(q.next.as_deref()),
        is_https(&headers),
    )
}

/// The sign-in form, with a fresh CSRF secret in a short-lived cookie and
/// in the form.
fn login_page(
    status: StatusCode,
    notice: Option<&str>,
    next: Option<&str>,
    https: bool,
) -> Response {
    let csrf = match crate::auth::random_hex(16) {
        Ok(c) => c,
        Err(e) => return error_page(None, e.into()),
    };
    with_cookies(
        page(status, view::login(&csrf, notice, next)),
        &[session::set_cookie(
            LOGIN_COOKIE,
            &csrf,
            Duration::from_secs(600),
            https,
        )],
    )
}

/// `resp` setting `cookies`.
fn with_cookies(mut resp: Response, cookies: &[String]) -> Response {
    for cookie in cookies {
        if let Ok(v) = HeaderValue::from_str(cookie) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    csrf: String,
    next: Option<String>,
}

async fn login(
    State(host): State<Arc<Host>>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let https = is_https(&headers);
    if let Err(r) = same_origin(
        &host,
        &headers,
        session::cookie(&headers, LOGIN_COOKIE),
        &f.csrf,
        "anonymous",
        "/ui/login",
    ) {
        return r;
    }
    let token = match host.tokens.authenticate(f.token.trim()) {
        Ok(t) => t,
        Err(e) => return error_page(None, e.into()),
    };
    let Some(token) = token else {
        host.audit_refusal(
            StatusCode::UNAUTHORIZED,
            "anonymous",
            "/ui/login",
            None,
            "sign-in with an unknown or revoked token",
        );
        return login_page(
            StatusCode::UNAUTHORIZED,
            Some("That token is not valid (unknown or revoked). Paste an API token: evos_…"),
            local_next(f.next.as_deref()),
            https,
        );
    };
    let detail = json!({"name": token.name, "role": token.role, "scope": token.scope, "client": crate::server::client()});
    let (id, _) = match host.console.sessions.open(&token, detail) {
        Ok(s) => s,
        Err(e) => return error_page(None, e.into()),
    };
    let resp = redirect(local_next(f.next.as_deref()).unwrap_or(landing(&token)));
    let ttl = host.console.sessions.ttl();
    with_cookies(
        resp,
        &[
            session::set_cookie(COOKIE, &id, ttl, https),
            session::clear_cookie(LOGIN_COOKIE),
        ],
    )
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(host): State<Arc<Host>>,
    signed: Signed,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(r) = signed.posted(&host, &headers, &f.csrf, "/ui/logout") {
        return r;
    }
    if let Err(e) = host
        .console
        .sessions
        .close(&signed.cookie, &format!("token/{}", signed.token.id))
    {
        return error_page(Some(&signed), e.into());
    }
    with_cookies(redirect("/ui/login"), &[session::clear_cookie(COOKIE)])
}

#[derive(Deserialize, Default)]
struct ReviewsQuery {
    status: Option<crate::review::ReviewStatus>,
}

async fn reviews(
    State(host): State<Arc<Host>>,
    signed: Signed,
    Query(q): Query<ReviewsQuery>,
) -> Response {
    if let Err(r) = require(&host, &signed, Permission::Review, None, "/ui/reviews") {
        return r;
    }
    let status = q.status.or(Some(crate::review::ReviewStatus::Pending));
    match host.reviews.list(status) {
        Ok(all) => {
            let visible: Vec<_> = all
                .into_iter()
                .filter(|r| r.visible_to(&signed.token.scope))
                .collect();
            page(StatusCode::OK, view::reviews(&signed, status, &visible))
        }
        Err(e) => error_page(Some(&signed), e.into()),
    }
}

/// A review the session may see, or the page saying why not.
fn visible_review(
    host: &Host,
    signed: &Signed,
    id: i64,
    path: &str,
) -> Result<crate::review::Review, Response> {
    require(host, signed, Permission::Review, None, path)?;
    let review = host
        .reviews
        .get(id)
        .map_err(|e| error_page(Some(signed), e.into()))?
        .ok_or_else(|| {
            error_page(
                Some(signed),
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not-found",
                    format!("no review {id}"),
                ),
            )
        })?;
    if !review.visible_to(&signed.token.scope) {
        require(
            host,
            signed,
            Permission::Review,
            Some(&review.proposed_by),
            path,
        )?;
    }
    Ok(review)
}

/// What a page shows after a change it redirected to it (`?done=`).
#[derive(Deserialize, Default)]
struct Done {
    done: Option<String>,
}

async fn review(
    State(host): State<Arc<Host>>,
    signed: Signed,
    UrlPath(id): UrlPath<i64>,
    Query(q): Query<Done>,
) -> Response {
    let path = format!("/ui/reviews/{id}");
    let review = match visible_review(&host, &signed, id, &path) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let store = host.registry.store();
    let decision = store
        .decision(&review.event.id, review.action_index)
        .ok()
        .flatten();
    let after = store
        .audit_page(&crate::audit::Page {
            subject: Some(&format!("review/{id}")),
            limit: 50,
            ..Default::default()
        })
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.subject == format!("review/{id}"))
        .rev()
        .collect::<Vec<_>>();
    let next = host
        .reviews
        .list(Some(crate::review::ReviewStatus::Pending))
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.id != id && r.visible_to(&signed.token.scope))
        .map(|r| r.id)
        .next_back();
    page(
        StatusCode::OK,
        view::review(
            &signed,
            &review,
            decision.as_ref(),
            &after,
            next,
            q.done.as_deref(),
        ),
    )
}

#[derive(Deserialize)]
struct DecideForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    comment: String,
}

/// Longest reviewer comment kept.
const COMMENT_MAX: usize = 4096;

/// A form's comment: none when blank, refused when too long.
fn comment(text: &str) -> Result<Option<&str>, ApiError> {
    if text.len() > COMMENT_MAX {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            format!(
                "the comment is {} bytes; keep it under {COMMENT_MAX}",
                text.len()
            ),
        ));
    }
    Ok(Some(text.trim()).filter(|c| !c.is_empty()))
}

async fn decide(
    State(host): State<Arc<Host>>,
    signed: Signed,
    headers: HeaderMap,
    UrlPath(id): UrlPath<i64>,
    Form(f): Form<DecideForm>,
) -> Response {
    let path = format!("/ui/reviews/{id}");
    if let Err(r) = signed.posted(&host, &headers, &f.csrf, &path) {
        return r;
    }
    if let Err(r) = require(&host, &signed, Permission::Review, None, &path) {
        return r;
    }
    let approve = match f.decision.as_str() {
        "approve" => true,
        "reject" => false,
        _ => {
            return error_page(
                Some(&signed),
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad-request",
                    "choose approve or reject",
                ),
            );
        }
    };
    let comment = match comment(&f.comment) {
        Ok(c) => c,
        Err(e) => return error_page(Some(&signed), e),
    };
    match crate::server::decide(&host, &signed.token, id, approve, comment, &path).await {
        Ok(_) => redirect(&format!(
            "/ui/reviews/{id}?done={}",
            if approve { "approved" } else { "rejected" }
        )),
        Err(e) => error_page(Some(&signed), e),
    }
}

/// Whether the session may read events: reviewers (whose cases they are)
/// and auditors.
fn may_read_events(host: &Host, signed: &Signed, path: &str) -> Result<(), Response> {
    if signed.may(Permission::Review, None) {
        Ok(())
    } else {
        require(host, signed, Permission::Audit, None, path)
    }
}

#[derive(Deserialize, Default)]
struct FindEvent {
    id: Option<String>,
}

async fn find_event(
    State(host): State<Arc<Host>>,
    signed: Signed,
    Query(q): Query<FindEvent>,
) -> Response {
    if let Err(r) = may_read_events(&host, &signed, "/ui/events") {
        return r;
    }
    match q.id.as_deref().map(str::trim).filter(|i| !i.is_empty()) {
        Some(id) => redirect(&format!("/ui/events/{}", view::path_segment(id))),
        None => {
            let recent = host
                .registry
                .store()
                .audit_page(&crate::audit::Page {
                    action: Some("pipeline"),
                    limit: 50,
                    ..Default::default()
                })
                .unwrap_or_default()
                .into_iter()
                .filter(|e| e.visible_to(&signed.token.scope))
                .collect::<Vec<_>>();
            page(StatusCode::OK, view::events(&signed, &recent))
        }
    }
}

async fn event(
    State(host): State<Arc<Host>>,
    signed: Signed,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<Done>,
) -> Response {
    let path = format!("/ui/events/{}", crate::text::bounded(&id, 256));
    if let Err(r) = may_read_events(&host, &signed, &path) {
        return r;
    }
    let subject = format!("event/{id}");
    let entries: Vec<_> = match host.registry.store().audit_page(&crate::audit::Page {
        subject: Some(&subject),
        limit: 100,
        ..Default::default()
    }) {
        Ok(e) => e
            .into_iter()
            .filter(|e| e.subject == subject && e.visible_to(&signed.token.scope))
            .rev()
            .collect(),
        Err(e) => return error_page(Some(&signed), e.into()),
    };
    // What became of its escalated actions: the reviews' entries.
    let mut entries = entries;
    let reviews: Vec<i64> = entries
        .iter()
        .filter(|e| e.action == "pipeline")
        .flat_map(|e| e.detail["actions"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["disposition"]["review_id"].as_i64())
        .collect();
    for rid in reviews {
        let subject = format!("review/{rid}");
        let more = host
            .registry
            .store()
            .audit_page(&crate::audit::Page {
                subject: Some(&subject),
                limit: 50,
                ..Default::default()
            })
            .unwrap_or_default();
        entries.extend(
            more.into_iter()
                .filter(|e| e.subject == subject && e.visible_to(&signed.token.scope)),
        );
    }
    entries.sort_by_key(|e| e.seq);
    if entries.is_empty() {
        return error_page(
            Some(&signed),
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not-found",
                format!("no event {id:?} in the audit log that this token may see"),
            ),
        );
    }
    let labels = host.registry.store().labels(&id).unwrap_or_default();
    page(
        StatusCode::OK,
        view::event(&signed, &id, &entries, &labels, q.done.as_deref()),
    )
}

#[derive(Deserialize)]
struct LabelForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    action_index: usize,
    #[serde(default)]
    label: String,
    #[serde(default)]
    comment: String,
}

/// A reviewer's label for one of the event's actions (what it should have
/// been), fed back to the versions that decided it.
async fn label(
    State(host): State<Arc<Host>>,
    signed: Signed,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    Form(f): Form<LabelForm>,
) -> Response {
    let path = format!("/ui/events/{}", crate::text::bounded(&id, 256));
    if let Err(r) = signed.posted(&host, &headers, &f.csrf, &path) {
        return r;
    }
    if let Err(r) = require(&host, &signed, Permission::Review, None, &path) {
        return r;
    }
    let comment = match comment(&f.comment) {
        Ok(c) => c,
        Err(e) => return error_page(Some(&signed), e),
    };
    match crate::server::add_label(
        &host,
        &signed.token,
        &id,
        f.action_index,
        f.label.trim(),
        comment,
        &path,
    ) {
        Ok(l) => redirect(&format!(
            "/ui/events/{}?done={}",
            view::path_segment(&id),
            view::path_segment(&format!("labelled action {} {}", l.action_index, l.label))
        )),
        Err(e) => error_page(Some(&signed), e),
    }
}

async fn rollouts(State(host): State<Arc<Host>>, signed: Signed) -> Response {
    if let Err(r) = require(&host, &signed, Permission::Status, None, "/ui/rollouts") {
        return r;
    }
    match host.registry.status(None) {
        Ok(all) => {
            let visible: Vec<_> = all
                .into_iter()
                .filter(|s| crate::auth::scope_matches(&signed.token.scope, &s.plugin))
                .collect();
            page(StatusCode::OK, view::rollouts(&signed, &visible))
        }
        Err(e) => error_page(Some(&signed), e.into()),
    }
}

async fn rollout(
    State(host): State<Arc<Host>>,
    signed: Signed,
    UrlPath(plugin): UrlPath<String>,
    Query(q): Query<Done>,
) -> Response {
    let path = format!("/ui/rollouts/{}", crate::text::bounded(&plugin, 256));
    if let Err(r) = require(&host, &signed, Permission::Status, Some(&plugin), &path) {
        return r;
    }
    let status = match host.registry.status(Some(&plugin)) {
        Ok(s) => s,
        Err(e) => return error_page(Some(&signed), e.into()),
    };
    let history = host.registry.store().history(&plugin).unwrap_or_default();
    let series = host.console.timeline.of(&plugin);
    page(
        StatusCode::OK,
        view::rollout(&signed, &status, &history, &series, q.done.as_deref()),
    )
}

/// A change the rollouts page offers.
#[derive(Clone, Copy)]
pub enum Change {
    Promote,
    Rollback,
}

impl Change {
    fn parse(s: &str) -> Option<Change> {
        match s {
            "promote" => Some(Change::Promote),
            "rollback" => Some(Change::Rollback),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Change::Promote => "promote",
            Change::Rollback => "rollback",
        }
    }
}

async fn confirm(
    State(host): State<Arc<Host>>,
    signed: Signed,
    headers: HeaderMap,
    UrlPath((plugin, change)): UrlPath<(String, String)>,
) -> Response {
    let Some(change) = Change::parse(&change) else {
        return not_found(State(host), headers).await;
    };
    let path = format!(
        "/ui/rollouts/{}/{}",
        crate::text::bounded(&plugin, 256),
        change.as_str()
    );
    if let Err(r) = require(&host, &signed, Permission::Deploy, Some(&plugin), &path) {
        return r;
    }
    match host.registry.status(Some(&plugin)) {
        Ok(status) => match status.first() {
            Some(s) => page(StatusCode::OK, view::confirm(&signed, s, change)),
            None => error_page(
                Some(&signed),
                ApiError::new(StatusCode::NOT_FOUND, "not-found", "no such plugin"),
            ),
        },
        Err(e) => error_page(Some(&signed), e.into()),
    }
}

#[derive(Deserialize)]
struct ChangeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirm: String,
}

async fn change(
    State(host): State<Arc<Host>>,
    signed: Signed,
    headers: HeaderMap,
    UrlPath((plugin, change)): UrlPath<(String, String)>,
    Form(f): Form<ChangeForm>,
) -> Response {
    let Some(change) = Change::parse(&change) else {
        return not_found(State(host), headers).await;
    };
    let path = format!(
        "/ui/rollouts/{}/{}",
        crate::text::bounded(&plugin, 256),
        change.as_str()
    );
    if let Err(r) = signed.posted(&host, &headers, &f.csrf, &path) {
        return r;
    }
    if let Err(r) = require(&host, &signed, Permission::Deploy, Some(&plugin), &path) {
        return r;
    }
    if f.confirm != "yes" {
        return redirect(&format!(
            "/ui/rollouts/{}/{}",
            view::path_segment(&plugin),
            change.as_str()
        ));
    }
    let actor = signed.actor();
    let done = match change {
        Change::Promote => host.registry.promote(&plugin, &actor).await,
        Change::Rollback => {
            host.registry
                .rollback_with(&plugin, None, false, &actor)
                .await
        }
    };
    match done {
        Ok(report) => redirect(&format!(
            "/ui/rollouts/{}?done={}",
            view::path_segment(&plugin),
            view::path_segment(&format!(
                "{}; the stable version is {}",
                report.action, report.stable
            ))
        )),
        Err(e) => error_page(Some(&signed), e.into()),
    }
}

#[derive(Deserialize, Default)]
struct AuditQuery {
    before: Option<i64>,
    action: Option<String>,
    subject: Option<String>,
    actor: Option<String>,
}

/// Entries per audit page.
const AUDIT_PAGE: usize = 50;

async fn audit(
    State(host): State<Arc<Host>>,
    signed: Signed,
    Query(q): Query<AuditQuery>,
) -> Response {
    if let Err(r) = require(&host, &signed, Permission::Audit, None, "/ui/audit") {
        return r;
    }
    let nonempty = |s: &Option<String>| {
        s.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let (action, subject, actor) = (
        nonempty(&q.action),
        nonempty(&q.subject),
        nonempty(&q.actor),
    );
    let filter = crate::audit::Page {
        before: q.before,
        limit: AUDIT_PAGE,
        action: action.as_deref(),
        subject: subject.as_deref(),
        actor: actor.as_deref(),
    };
    match host.registry.store().audit_page(&filter) {
        Ok(entries) => {
            let last = entries.last().map(|e| e.seq);
            let full = entries.len() == AUDIT_PAGE;
            let visible: Vec<_> = entries
                .into_iter()
                .filter(|e| e.visible_to(&signed.token.scope))
                .collect();
            page(
                StatusCode::OK,
                view::audit(&signed, &filter, &visible, full.then_some(last).flatten()),
            )
        }
        Err(e) => error_page(Some(&signed), e.into()),
    }
}

async fn verify(State(host): State<Arc<Host>>, signed: Signed) -> Response {
    if let Err(r) = require(&host, &signed, Permission::Audit, None, "/ui/audit/verify") {
        return r;
    }
    match host.registry.store().audit_verify() {
        Ok(v) => {
            let status = if v.intact {
                StatusCode::OK
            } else {
                StatusCode::CONFLICT
            };
            page(status, view::verified(&signed, &v))
        }
        Err(e) => error_page(Some(&signed), e.into()),
    }
}

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

async fn asset(UrlPath(file): UrlPath<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "console.css" => (CSS, "text/css; charset=utf-8"),
        "console.js" => (JS, "text/javascript; charset=utf-8"),
        _ => {
            return secured(
                (
                    StatusCode::NOT_FOUND,
                    [(header::CONTENT_TYPE, "text/plain")],
                    "no such asset",
                )
                    .into_response(),
            );
        }
    };
    let mut resp = secured(([(header::CONTENT_TYPE, kind)], body).into_response());
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    );
    resp
}

/// Take a sample of every version's counters every `every`, for the plots.
pub async fn sample(host: Arc<Host>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Ok(status) = host.registry.status(None) {
            let at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            host.console.timeline.sample(&status, at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_console_paths_are_returned_to_after_sign_in() {
        assert_eq!(local_next(Some("/ui/reviews/3")), Some("/ui/reviews/3"));
        for bad in [
            "https://evil.example/",
            "//evil.example/ui/",
            "/ui//evil.example",
            "/ui/login?next=/ui/x",
            "/v1/audit",
            "/ui/\\evil",
            "/ui/a b",
        ] {
            assert_eq!(local_next(Some(bad)), None, "{bad}");
        }
    }
}
