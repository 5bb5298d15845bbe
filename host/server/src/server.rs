//! `evos up`: the long-running host — the pipeline over HTTP, the human
//! review queue, the admin and invoke API, metrics and health.
//!
//! Every `/v1` and `/metrics` request needs a bearer token (see
//! [`crate::auth`]); refusals are audited. Clients see a stable error code
//! and a short message; details go to the log. Requests are bounded: body
//! size (413), header read time and total time (slow clients cannot hold a
//! worker), and per-plugin concurrency (a bounded queue, then 429).
//!
//! | method | path                              | permission |
//! |--------|-----------------------------------|------------|
//! | GET    | /healthz, /readyz                 | none       |
//! | GET    | /metrics                          | metrics    |
//! | POST   | /v1/ingest/{connector}            | ingest     |
//! | GET    | /v1/reviews[?status=pending]      | review     |
//! | POST   | /v1/reviews/{id}/approve\|reject  | review     |
//! | POST   | /v1/components                    | deploy     |
//! | POST   | /v1/plugins/{name}/deploy         | deploy     |
//! | POST   | /v1/plugins/{name}/promote        | deploy     |
//! | POST   | /v1/plugins/{name}/rollback       | deploy     |
//! | GET    | /v1/plugins, /v1/plugins/{name}   | status     |
//! | GET    | /v1/plugins/{name}/history        | status     |
//! | POST   | /v1/plugins/{name}/invoke         | invoke     |
//! | POST   | /v1/plugins/{name}/replay         | deploy     |
//! | POST   | /v1/plugins/{name}/drift/pin      | deploy     |
//! | GET    | /v1/audit[?after=N&since=1h]      | audit      |
//! | GET    | /v1/audit/verify                  | audit      |
//! | GET    | /ui/... (the web console, [`crate::console`]) | by page |

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::app::App;
use crate::audit::NewEntry;
use crate::auth::{Permission, Role, Token, Tokens};
use crate::engine::EngineConfig;
use crate::manifest::Manifest;
use crate::pipeline::{self, RunOptions};
use crate::registry::Registry;
use crate::review::{ReviewQueue, ReviewStatus};
use crate::runtime::CallInput;
use crate::store::Slot;
use crate::{Error, Result};

/// Settings of a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// This node's directory: the compile cache, the audit anchor, the
    /// admin token, and the state itself unless `store` is given.
    pub data_dir: PathBuf,
    /// The PostgreSQL URL of the state several nodes share; SQLite in
    /// `data_dir` when absent.
    pub store: Option<String>,
    pub app: PathBuf,
    pub engine: EngineConfig,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Time a client has to send its request headers.
    pub header_timeout: Duration,
    /// Time a whole request may take, body and handling included.
    pub request_timeout: Duration,
    /// Calls that may wait for a plugin beyond its `max-concurrency`
    /// before further requests are refused with 429.
    pub queue_per_plugin: usize,
    /// Retries and circuit breakers for connectors' executions.
    pub breaker: crate::breaker::BreakerConfig,
    /// Refused requests audited per client address and second, on average
    /// (see `RefusalRate`).
    pub refusal_audit_rate: f64,
    /// Refused requests a client may have audited in a burst.
    pub refusal_audit_burst: f64,
    /// How long a console session lasts from sign-in.
    pub console_session: Duration,
    /// How often the console's plots take a sample of every version.
    pub console_sample_every: Duration,
    /// OpenTelemetry export of spans and metrics; off when absent.
    pub otlp: Option<crate::otlp::OtlpConfig>,
}

impl ServerConfig {
    pub fn new(data_dir: impl Into<PathBuf>, app: impl Into<PathBuf>) -> ServerConfig {
        let data_dir = data_dir.into();
        ServerConfig {
            engine: EngineConfig {
                cache_dir: Some(data_dir.join("cache")),
                ..Default::default()
            },
            data_dir,
            store: None,
            app: app.into(),
            max_body_bytes: 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            queue_per_plugin: 64,
            breaker: Default::default(),
            refusal_audit_rate: 5.0,
            refusal_audit_burst: 50.0,
            console_session: Duration::from_secs(8 * 3600),
            console_sample_every: Duration::from_secs(10),
            otlp: None,
        }
    }
}

/// Everything the handlers share.
pub struct Host {
    pub registry: Arc<Registry>,
    pub app: Arc<App>,
    pub tokens: Tokens,
    pub reviews: ReviewQueue,
    pub metrics: crate::telemetry::Metrics,
    pub breakers: Arc<crate::breaker::Breakers>,
    /// Records sampled events, redacted (the app's `[recording]`).
    pub recorder: Option<Arc<crate::recording::Recorder>>,
    /// The web console's sessions and plot samples.
    pub console: crate::console::Console,
    /// OpenTelemetry export, when configured.
    pub otlp: std::sync::OnceLock<crate::otlp::Otlp>,
    config: ServerConfig,
    admission: Mutex<HashMap<String, Arc<Semaphore>>>,
    refusals: RefusalRate,
}

/// Bounds how fast one client can grow the audit log with refused
/// requests: a token bucket per client address. Refusals past it are still
/// refused, but counted instead of audited one by one; the next refusal of
/// that client that is audited carries the count (`suppressed_before`),
/// and `evos_audit_refusals_suppressed_total` counts them all.
struct RefusalRate {
    rate: f64,
    burst: f64,
    clients: Mutex<HashMap<std::net::IpAddr, Bucket>>,
}

struct Bucket {
    tokens: f64,
    last: std::time::Instant,
    suppressed: u64,
}

/// Clients tracked at once; past it, clients whose bucket refilled are
/// forgotten (they would start full anyway).
const RATE_CLIENTS_MAX: usize = 65_536;

impl RefusalRate {
    /// `Some(suppressed since the last audited refusal)` when this refusal
    /// of `client` is to be audited, `None` when it is over the rate.
    fn admit(&self, client: std::net::IpAddr) -> Option<u64> {
        let now = std::time::Instant::now();
        let mut clients = evos_core::sync::lock(&self.clients);
        if clients.len() >= RATE_CLIENTS_MAX && !clients.contains_key(&client) {
            let (rate, burst) = (self.rate, self.burst);
            clients.retain(|_, b| {
                b.suppressed > 0
                    || b.tokens + now.duration_since(b.last).as_secs_f64() * rate < burst
            });
            if clients.len() >= RATE_CLIENTS_MAX {
                // Every tracked client is mid-burst: refuse to track more
                // rather than grow; the newcomer is not audited.
                return None;
            }
        }
        let bucket = clients.entry(client).or_insert(Bucket {
            tokens: self.burst,
            last: now,
            suppressed: 0,
        });
        let refill = now.duration_since(bucket.last).as_secs_f64() * self.rate;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Some(std::mem::take(&mut bucket.suppressed))
        } else {
            bucket.suppressed += 1;
            None
        }
    }
}

tokio::task_local! {
    /// The address of the client whose request is being handled.
    static CLIENT: std::net::IpAddr;
}

/// The address of the client whose request is being handled, if known.
pub(crate) fn client() -> Option<std::net::IpAddr> {
    CLIENT.try_with(|c| *c).ok()
}

/// Longest URL path, plugin name or reason kept in an audit entry of a
/// refused request; longer ones are cut and carry their digest.
const AUDITED_FIELD_MAX: usize = 256;

/// What `bootstrap` did that the operator should know.
#[derive(Debug, Clone, Default)]
pub struct Bootstrap {
    /// Plugins of the app file deployed because they were not yet.
    pub deployed: Vec<String>,
    /// Where the first admin token was written (first start only).
    pub admin_token_file: Option<PathBuf>,
}

impl Host {
    /// Open the data directory, deploy the app's plugins that are not yet
    /// deployed, and on first start create an admin token in a 0600 file.
    pub async fn bootstrap(config: ServerConfig) -> Result<(Arc<Host>, Bootstrap)> {
        let app = App::load(&config.app)?;
        Host::bootstrap_with(config, app).await
    }

    /// [`Host::bootstrap`] with an app already loaded (and possibly adjusted).
    pub async fn bootstrap_with(config: ServerConfig, app: App) -> Result<(Arc<Host>, Bootstrap)> {
        if let Some(otlp) = &config.otlp {
            crate::otlp::check(otlp)?;
        }
        let registry = Registry::with_store(
            crate::store::open(&config.data_dir, config.store.as_deref())?,
            config.engine.clone(),
            std::env::vars().collect(),
        )?;
        let mut report = Bootstrap::default();
        for p in &app.plugins {
            if registry.route(&p.name).is_none() {
                let bytes = registry.runtime().engine().read_component(&p.component)?;
                registry
                    .deploy(
                        p.manifest.clone(),
                        &bytes,
                        &p.component.display().to_string(),
                        None,
                        "evos up",
                    )
                    .await?;
                report.deployed.push(p.name.clone());
            }
        }
        let tokens = Tokens::new(registry.store().clone());
        if tokens.list()?.is_empty() {
            let (_, secret) = tokens.create("bootstrap admin", Role::Admin, "*", "evos up")?;
            let path = config.data_dir.join("admin.token");
            write_secret(&path, &secret)?;
            report.admin_token_file = Some(path);
        }
        let reviews = ReviewQueue::new(registry.store().clone());
        let breakers = Arc::new(crate::breaker::Breakers::new(
            config.breaker.clone(),
            Some(registry.store().clone()),
        ));
        let recorder = match &app.recording {
            Some(recording) => {
                let key = crate::redact::host_key(&config.data_dir)?;
                Some(Arc::new(crate::recording::Recorder::new(
                    recording.clone(),
                    &key,
                )?))
            }
            None => None,
        };
        let store = registry.store().clone();
        let host = Arc::new(Host {
            breakers,
            recorder,
            registry,
            app: Arc::new(app),
            tokens,
            reviews,
            metrics: crate::telemetry::Metrics::default(),
            console: crate::console::Console::new(store, config.console_session),
            otlp: std::sync::OnceLock::new(),
            refusals: RefusalRate {
                rate: config.refusal_audit_rate,
                burst: config.refusal_audit_burst.max(1.0),
                clients: Mutex::new(HashMap::new()),
            },
            config,
            admission: Mutex::new(HashMap::new()),
        });
        if let Some(otlp) = &host.config.otlp {
            let node = host.config.data_dir.display().to_string();
            let started = crate::otlp::Otlp::start(otlp, Arc::downgrade(&host), &node)?;
            let _ = host.otlp.set(started);
        }
        Ok((host, report))
    }

    /// Audit a refused request to `path` by `actor`, at a bounded rate per
    /// client address (see `RefusalRate`); past the rate it is only counted.
    /// Everything here may come from an anonymous client: the path is
    /// bounded before it reaches the log.
    pub(crate) fn audit_refusal(
        &self,
        status: StatusCode,
        actor: &str,
        path: &str,
        more: Option<serde_json::Value>,
        why: &str,
    ) {
        let path = crate::text::bounded(path, AUDITED_FIELD_MAX);
        let client = client();
        let admitted = match client {
            Some(ip) => self.refusals.admit(ip),
            None => Some(0),
        };
        match admitted {
            Some(suppressed) => {
                let mut detail =
                    json!({"status": status.as_u16(), "reason": why, "client": client});
                if let Some(serde_json::Value::Object(more)) = more {
                    for (k, v) in more {
                        detail[k] = v;
                    }
                }
                if suppressed > 0 {
                    detail["suppressed_before"] = json!(suppressed);
                }
                let _ = self.registry.store().audit(NewEntry {
                    actor,
                    action: "access-refused",
                    subject: &path,
                    digest: None,
                    detail,
                });
            }
            None => {
                self.metrics
                    .refusals_suppressed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// A slot for a call of `plugin`: the plugin's own `max-concurrency`
    /// runs, `queue_per_plugin` more wait, beyond that `None` (429).
    fn admit(&self, plugin: &str) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let route = self.registry.route(plugin)?;
        let limit = route.stable.plugin.manifest().limits.max_concurrency.0 as usize;
        let sem = {
            let mut map = evos_core::sync::lock(&self.admission);
            map.entry(plugin.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(limit + self.config.queue_per_plugin)))
                .clone()
        };
        sem.try_acquire_owned().ok()
    }
}

fn write_secret(path: &Path, secret: &str) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| Error::io(path, e))?;
    writeln!(f, "{secret}").map_err(|e| Error::io(path, e))
}

/// A client-facing error: stable code, short message.
#[derive(Debug)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        match &e {
            Error::UnknownPlugin(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "not-found", e.to_string())
            }
            Error::Input { .. } | Error::Manifest { .. } | Error::InvalidComponent { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad-request", e.to_string())
            }
            Error::NotGranted { .. } | Error::WrongKind { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "refused", e.to_string())
            }
            Error::Refused(_) => ApiError::new(StatusCode::CONFLICT, "refused", e.to_string()),
            Error::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "not-found", e.to_string()),
            _ => {
                tracing::error!(target: "evos::server", "internal error: {e}");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; see the host log",
                )
            }
        }
    }
}

pub(crate) type ApiResult<T = Response> = std::result::Result<T, ApiError>;

/// Check the bearer token for `permission` (on `plugin`); audit refusals.
fn authorize(
    host: &Host,
    headers: &HeaderMap,
    permission: Permission,
    plugin: Option<&str>,
    path: &str,
) -> ApiResult<Token> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let token = match bearer {
        Some(b) => host.tokens.authenticate(b.trim())?,
        None => None,
    };
    permit(host, token, permission, plugin, path)
}

/// Check `token` (none: an anonymous client) for `permission` (on
/// `plugin`); refusals are audited, at a bounded rate per client. The API
/// and the console both decide access here.
pub(crate) fn permit(
    host: &Host,
    token: Option<Token>,
    permission: Permission,
    plugin: Option<&str>,
    path: &str,
) -> ApiResult<Token> {
    // Everything here may come from an anonymous client: the path and the
    // plugin name are bounded before they reach the audit log, and each
    // client's refusals are audited at a bounded rate.
    let shown_plugin = plugin.map(|p| crate::text::bounded(p, AUDITED_FIELD_MAX));
    let refuse = |status: StatusCode, code: &'static str, actor: &str, why: String| {
        host.audit_refusal(
            status,
            actor,
            path,
            Some(json!({"permission": permission, "plugin": shown_plugin})),
            &why,
        );
        ApiError::new(status, code, why)
    };
    match token {
        None => Err(refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "anonymous",
            "a valid bearer token is required (Authorization: Bearer evos_...)".into(),
        )),
        Some(t) if !t.allows(permission, plugin) => {
            let why = format!(
                "token {} ({} scoped to {:?}) may not {:?}{}",
                t.id,
                t.role,
                t.scope,
                permission,
                shown_plugin
                    .as_ref()
                    .map(|p| format!(" `{p}`"))
                    .unwrap_or_default()
            );
            Err(refuse(
                StatusCode::FORBIDDEN,
                "forbidden",
                &format!("token/{}", t.id),
                why,
            ))
        }
        Some(t) => Ok(t),
    }
}

/// The API router.
pub fn router(host: Arc<Host>) -> Router {
    let max_body = host.config.max_body_bytes;
    let timeout = host.config.request_timeout;
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/ingest/{connector}", post(ingest))
        .route("/v1/reviews", get(list_reviews))
        .route("/v1/reviews/{id}/{decision}", post(decide_review))
        .route("/v1/events/{id}/feedback", post(feedback))
        .route("/v1/events/{id}/labels", get(event_labels))
        .route("/v1/components", post(upload))
        .route("/v1/plugins", get(status_all))
        .route("/v1/plugins/{name}", get(status_one))
        .route("/v1/plugins/{name}/history", get(history))
        .route("/v1/plugins/{name}/deploy", post(deploy))
        .route("/v1/plugins/{name}/promote", post(promote))
        .route("/v1/plugins/{name}/rollback", post(rollback))
        .route("/v1/plugins/{name}/invoke", post(invoke))
        .route("/v1/plugins/{name}/replay", post(replay))
        .route("/v1/plugins/{name}/drift/pin", post(pin_drift))
        .route("/v1/audit", get(audit_log))
        .route("/v1/audit/verify", get(audit_verify))
        .merge(crate::console::router())
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not-found", "no such endpoint")
        })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            edge(req, next, timeout)
        }))
        .with_state(host)
}

/// What every request passes through: the client's address for the
/// handlers ([`CLIENT`]), the whole-request time limit, and the documented
/// error shape for errors produced before a handler runs (a body over the
/// limit, a path that does not parse), which axum answers in plain text.
async fn edge(req: Request, next: Next, timeout: Duration) -> Response {
    let client = req
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let run = async {
        match tokio::time::timeout(timeout, next.run(req)).await {
            Ok(resp) => resp,
            Err(_) => ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                "the request took too long",
            )
            .into_response(),
        }
    };
    let resp = match client {
        Some(ip) => CLIENT.scope(ip, run).await,
        None => run.await,
    };
    as_json_error(resp).await
}

/// An error response that is not JSON, rewritten as `{"error": {"code",
/// "message"}}` with its text as the message.
async fn as_json_error(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "too-large",
        StatusCode::NOT_FOUND => "not-found",
        StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        s if s.is_server_error() => "internal",
        _ => "bad-request",
    };
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let mut message = String::from_utf8_lossy(&text).trim().to_string();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        message = "the request body is larger than this host accepts (evos up --max-body)".into();
    } else if message.is_empty() {
        message = status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_lowercase();
    }
    let mut fixed = ApiError::new(status, code, message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            fixed.headers_mut().insert(name.clone(), value.clone());
        }
    }
    fixed
}

/// Raise this process's soft limit of open files to its hard limit: each
/// connection, outgoing request and pooled component needs descriptors,
/// and the soft limit is often a low default (1024). Returns the limits
/// before and after, when they could be read.
pub fn raise_open_file_limit() -> Option<(u64, u64)> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let before = limit.current?;
    // An unlimited hard limit cannot be a soft one (the kernel caps open
    // files at `nr_open`): leave the soft limit as it is then.
    if let Some(hard) = limit.maximum
        && hard > before
    {
        let raised = Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        };
        if setrlimit(Resource::Nofile, raised).is_err() {
            return Some((before, before));
        }
    }
    Some((
        before,
        getrlimit(Resource::Nofile).current.unwrap_or(before),
    ))
}

/// How the accept loop backs off when accepting fails for lack of
/// resources (EMFILE, ENFILE, ENOBUFS, ENOMEM): the failing connection
/// stays in the kernel's backlog, so retrying at once fails again, at
/// full speed. The loop pauses, doubling from 5 ms to 1 s while failures
/// last, and logs one warning per interval with the count.
struct AcceptBackoff {
    pause: Duration,
    failures: u64,
    last_report: Option<std::time::Instant>,
}

const ACCEPT_PAUSE_MIN: Duration = Duration::from_millis(5);
const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(1);
const ACCEPT_REPORT_EVERY: Duration = Duration::from_secs(10);

impl AcceptBackoff {
    fn new() -> AcceptBackoff {
        AcceptBackoff {
            pause: Duration::ZERO,
            failures: 0,
            last_report: None,
        }
    }

    /// An accept failed with `e`: how long to pause, and the warning to
    /// log now, if any.
    fn failed(&mut self, e: &std::io::Error) -> (Duration, Option<String>) {
        let exhausted = matches!(
            e.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
        );
        self.failures += 1;
        if exhausted {
            self.pause = (self.pause * 2).clamp(ACCEPT_PAUSE_MIN, ACCEPT_PAUSE_MAX);
        }
        let now = std::time::Instant::now();
        let due = self
            .last_report
            .is_none_or(|t| now.duration_since(t) >= ACCEPT_REPORT_EVERY);
        let warning = due.then(|| {
            self.last_report = Some(now);
            let count = std::mem::take(&mut self.failures);
            if exhausted {
                format!(
                    "accepting connections failed {count} time(s) since the last report: {e}; pausing accepts (up to {ACCEPT_PAUSE_MAX:?}) until descriptors free up; raise the open-file limit (ulimit -n) if this persists"
                )
            } else {
                format!("accepting a connection failed {count} time(s) since the last report: {e}")
            }
        });
        (
            if exhausted {
                self.pause
            } else {
                Duration::ZERO
            },
            warning,
        )
    }

    fn succeeded(&mut self) {
        self.pause = Duration::ZERO;
    }
}

/// Serve on `listener` until `shutdown` resolves; then stop accepting and
/// let requests in flight finish (up to `drain`).
pub async fn serve(
    host: Arc<Host>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    drain: Duration,
) -> Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};

    let header_timeout = host.config.header_timeout;
    let app = router(host.clone());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut backoff = AcceptBackoff::new();
    let background = tokio::spawn(keep_in_step(host.clone()));
    let sampler = tokio::spawn(crate::console::sample(
        host.clone(),
        host.config.console_sample_every,
    ));
    // Each event source's consumer; stopped with the listener, so messages
    // in flight are delivered again (and found processed where they were).
    let consumers: Vec<_> = host
        .app
        .sources
        .iter()
        .map(|s| tokio::spawn(crate::source::consume(host.clone(), s.clone())))
        .collect();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => {
                        backoff.succeeded();
                        a
                    }
                    Err(e) => {
                        host.metrics
                            .accept_errors
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let (pause, warning) = backoff.failed(&e);
                        if let Some(w) = warning {
                            tracing::warn!(target: "evos::server", "{w}");
                        }
                        if !pause.is_zero() {
                            tokio::select! {
                                _ = tokio::time::sleep(pause) => {}
                                _ = &mut shutdown => break,
                            }
                        }
                        continue;
                    }
                };
                let app = app.clone();
                let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                    tower_service::Service::call(&mut app.clone(), req)
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(target: "evos::server", "connection ended: {e}");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    background.abort();
    sampler.abort();
    for consumer in consumers {
        consumer.abort();
    }
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(target: "evos::server", "requests still running after {drain:?}; stopping anyway");
    }
    host.registry.flush_stats()?;
    if let Some(otlp) = host.otlp.get() {
        otlp.shutdown();
    }
    Ok(())
}

/// How often a serving host looks for control-plane changes made by other
/// processes.
pub const WATCH_EVERY: Duration = Duration::from_millis(250);
/// How often a serving host persists its per-version call statistics.
pub const FLUSH_STATS_EVERY: Duration = Duration::from_secs(1);
/// How often a serving host prunes recordings past their retention.
pub const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// How often a serving host looks for approved reviews whose node stopped
/// before carrying them out (several nodes on one shared store).
pub const REVIEW_SWEEP_EVERY: Duration = Duration::from_secs(5);

/// What a serving host does besides answering requests: pick up
/// control-plane changes committed by other processes (it watches the
/// store's generation), and persist per-version statistics every second,
/// so `status` from another process is current and a crash loses at most
/// a second of counts.
async fn keep_in_step(host: Arc<Host>) {
    let mut generations = host.registry.store().clone().watch_generation(WATCH_EVERY);
    // Paces retries of a failed sync and the stats flushes.
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_flush = tokio::time::Instant::now();
    // The first pass prunes at start.
    let mut last_prune: Option<tokio::time::Instant> = None;
    let mut last_sweep = tokio::time::Instant::now();
    let mut last_forget: Option<tokio::time::Instant> = None;
    let mut behind = false;
    loop {
        tokio::select! {
            changed = generations.changed() => {
                if changed.is_err() {
                    return;
                }
                behind = true;
            }
            _ = tick.tick() => {}
        }
        if behind {
            match host.registry.sync().await {
                Ok(changed) => {
                    for plugin in changed {
                        tracing::info!(target: "evos::server",
                            plugin,
                            "picked up a deployment change committed by another process"
                        );
                    }
                    behind = false;
                }
                Err(e) => tracing::warn!(target: "evos::server",
                    "could not apply a deployment change committed by another process (retrying): {e}"
                ),
            }
        }
        if let Some(recorder) = &host.recorder
            && last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY)
        {
            last_prune = Some(tokio::time::Instant::now());
            let (store, recorder) = (host.registry.store().clone(), recorder.clone());
            let pruned = tokio::task::spawn_blocking(move || {
                crate::recording::prune(&*store, recorder.config(), crate::registry::HOST_ACTOR)
            })
            .await;
            match pruned {
                Ok(Ok(p)) if p.expired + p.over_limit > 0 => {
                    tracing::info!(target: "evos::server",
                        expired = p.expired, over_limit = p.over_limit, kept = p.kept,
                        "pruned recordings"
                    )
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(target: "evos::server", "could not prune recordings: {e}")
                }
                Err(e) => tracing::warn!(target: "evos::server", "pruning recordings stopped: {e}"),
            }
        }
        if last_forget.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            last_forget = Some(tokio::time::Instant::now());
            forget_processed(&host).await;
        }
        if last_sweep.elapsed() >= REVIEW_SWEEP_EVERY {
            last_sweep = tokio::time::Instant::now();
            carry_out_orphaned_reviews(&host).await;
        }
        if last_flush.elapsed() >= FLUSH_STATS_EVERY {
            last_flush = tokio::time::Instant::now();
            // Steps that wait for time (`hold`) advance here.
            host.registry.tick_rollouts().await;
            let registry = host.registry.clone();
            match tokio::task::spawn_blocking(move || registry.flush_stats()).await {
                Ok(Ok(())) => host.registry.judge_canaries().await,
                Ok(Err(e)) => {
                    tracing::warn!(target: "evos::server", "could not persist call statistics: {e}")
                }
                Err(e) => {
                    tracing::warn!(target: "evos::server", "persisting call statistics stopped: {e}")
                }
            }
        }
    }
}

/// Forget each event source's processed marks older than its
/// `dedupe-window`.
async fn forget_processed(host: &Arc<Host>) {
    for source in &host.app.sources {
        let before = humantime::format_rfc3339_micros(
            std::time::SystemTime::now()
                .checked_sub(source.dedupe_window)
                .unwrap_or(std::time::UNIX_EPOCH),
        )
        .to_string();
        let (store, name) = (host.registry.store().clone(), source.name());
        let forgot =
            tokio::task::spawn_blocking(move || store.forget_processed(&name, &before)).await;
        match forgot {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(target: "evos::server",
                source = source.name(), forgotten = n,
                "forgot processed events past the dedupe window"
            ),
            Ok(Err(e)) => tracing::warn!(target: "evos::server",
                source = source.name(), "could not forget processed events: {e}"
            ),
            Err(e) => {
                tracing::warn!(target: "evos::server", "forgetting processed events stopped: {e}")
            }
        }
    }
}

/// Carry out the approved reviews whose approving node stopped before it
/// did (its lease ran out); the downstream drops a repeat by its
/// idempotency key if that node got as far as sending it.
async fn carry_out_orphaned_reviews(host: &Arc<Host>) {
    let reviews = host.reviews.clone();
    let taken = match tokio::task::spawn_blocking(move || reviews.take_expired()).await {
        Ok(Ok(taken)) => taken,
        Ok(Err(e)) => {
            tracing::warn!(target: "evos::server", "looking for orphaned approved reviews: {e}");
            return;
        }
        Err(e) => {
            tracing::warn!(target: "evos::server", "looking for orphaned approved reviews stopped: {e}");
            return;
        }
    };
    for review in taken {
        tracing::info!(target: "evos::server", review = review.id,
            "carrying out an approved review whose node stopped before it did"
        );
        match pipeline::carry_out(
            host.registry.as_ref(),
            &host.reviews,
            &review,
            Some(&host.breakers),
        )
        .await
        {
            Ok(done) => host.metrics.observe_review(&done),
            Err(e) => {
                tracing::warn!(target: "evos::server", review = review.id, "carrying out: {e}")
            }
        }
    }
}

/// Bind `addr`.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io(addr.to_string(), e))
}

async fn readyz(State(host): State<Arc<Host>>) -> impl IntoResponse {
    axum::Json(
        json!({"ready": true, "plugins": host.registry.status(None).map(|s| s.len()).unwrap_or(0)}),
    )
}

async fn metrics(State(host): State<Arc<Host>>, headers: HeaderMap) -> ApiResult {
    let token = authorize(&host, &headers, Permission::Metrics, None, "/metrics")?;
    let snapshot = crate::telemetry::Snapshot {
        status: host.registry.status(None)?,
        metrics: &host.metrics,
        breakers: host.breakers.states(),
        pending_reviews: host.reviews.pending()?,
    };
    let text = crate::telemetry::render(snapshot, &token.scope);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

/// A W3C trace id from `traceparent`, if well formed.
fn incoming_trace(headers: &HeaderMap) -> Option<String> {
    trace_of(headers.get("traceparent")?.to_str().ok()?)
}

/// The caller's span id from a valid `traceparent`.
fn incoming_span(headers: &HeaderMap) -> Option<String> {
    let v = headers.get("traceparent")?.to_str().ok()?;
    trace_of(v)?;
    v.trim().split('-').nth(2).map(str::to_string)
}

/// The trace id of a W3C `traceparent` value, when it is a valid one.
pub(crate) fn trace_of(v: &str) -> Option<String> {
    let mut parts = v.trim().split('-');
    let (version, trace, span, _flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    (version == "00" && hex(trace, 32) && hex(span, 16) && trace != "0".repeat(32))
        .then(|| trace.to_string())
}

fn traceparent(trace: &str) -> Option<HeaderValue> {
    let span = &pipeline::new_trace_id()[..16];
    HeaderValue::from_str(&format!("00-{trace}-{span}-01")).ok()
}

async fn ingest(
    State(host): State<Arc<Host>>,
    UrlPath(connector): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let path = format!("/v1/ingest/{connector}");
    authorize(&host, &headers, Permission::Ingest, Some(&connector), &path)?;
    if host.app.get(&connector).is_none() || host.registry.route(&connector).is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no connector `{connector}`"),
        ));
    }
    let _slot = host.admit(&connector).ok_or_else(|| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "busy",
            format!("`{connector}` is at its concurrency limit; retry later"),
        )
    })?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_string();
    let trace = incoming_trace(&headers).unwrap_or_else(pipeline::new_trace_id);
    let options = RunOptions {
        execute: true,
        reviews: Some(host.reviews.clone()),
        audit: Some(host.registry.store().clone()),
        trace_id: Some(trace.clone()),
        breakers: Some(host.breakers.clone()),
        concurrency: 0,
        recorder: host.recorder.clone(),
        source: None,
    };
    let report = pipeline::run(
        host.registry.clone(),
        host.app.clone(),
        &connector,
        body.to_vec(),
        &content_type,
        &options,
    )
    .await?;
    host.metrics.observe_pipeline(&report);
    if let Some(otlp) = host.otlp.get() {
        let span = incoming_span(&headers);
        otlp.pipeline(&report, span.as_deref().map(|s| (trace.as_str(), s)));
    }
    let status = if report.ingest_error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let mut resp = (
        status,
        axum::Json(json!({"trace_id": trace, "report": report})),
    )
        .into_response();
    if let Some(v) = traceparent(&trace) {
        resp.headers_mut().insert("traceparent", v);
    }
    Ok(resp)
}

#[derive(Deserialize)]
struct ReviewFilter {
    status: Option<ReviewStatus>,
}

async fn list_reviews(
    State(host): State<Arc<Host>>,
    headers: HeaderMap,
    Query(f): Query<ReviewFilter>,
) -> ApiResult {
    let token = authorize(&host, &headers, Permission::Review, None, "/v1/reviews")?;
    let visible: Vec<_> = host
        .reviews
        .list(f.status)?
        .into_iter()
        .filter(|r| r.visible_to(&token.scope))
        .collect();
    Ok(axum::Json(visible).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Decision {
    comment: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Feedback {
    /// `approve`, `reject`, or a word the models' `[rollout.compare.labels]` map.
    label: String,
    /// Which of the event's actions (default: the first).
    #[serde(default)]
    action_index: usize,
    comment: Option<String>,
}

/// A label for a recorded action after the fact: a reviewer corrects what
/// the host (or an earlier review) decided. Audited as `feedback`.
async fn feedback(
    State(host): State<Arc<Host>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let path = format!("/v1/events/{id}/feedback");
    let token = authorize(&host, &headers, Permission::Review, None, &path)?;
    let f: Feedback = json_body(&body)?;
    if f.label.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "the body needs a label: {\"label\": \"reject\", \"action_index\": 0, \"comment\": \"...\"}",
        ));
    }
    let label = add_label(
        &host,
        &token,
        &id,
        f.action_index,
        &f.label,
        f.comment.as_deref(),
        &path,
    )?;
    Ok((StatusCode::CREATED, axum::Json(label)).into_response())
}

/// A reviewer's label for action `action_index` of event `id`, checked
/// against `token`'s scope (a scoped reviewer labels only what an agent in
/// its scope proposed). The API and the console both label here.
pub(crate) fn add_label(
    host: &Host,
    token: &Token,
    id: &str,
    action_index: usize,
    label: &str,
    comment: Option<&str>,
    path: &str,
) -> ApiResult<crate::store::Label> {
    let store = host.registry.store();
    let Some(decision) = store.decision(id, action_index)? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no recorded decision for action {action_index} of event {id:?}"),
        ));
    };
    permit(
        host,
        Some(token.clone()),
        Permission::Review,
        Some(&decision.proposed_by),
        path,
    )?;
    let actor = format!("{} (token {})", token.name, token.id);
    Ok(store.add_label(&crate::store::NewLabel {
        event_id: id,
        action_index,
        label,
        source: crate::store::LABEL_FROM_FEEDBACK,
        actor: &actor,
        comment,
    })?)
}

/// The labels of a recorded event's actions.
async fn event_labels(
    State(host): State<Arc<Host>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult {
    let path = format!("/v1/events/{id}/labels");
    let token = authorize(&host, &headers, Permission::Review, None, &path)?;
    let store = host.registry.store();
    let mut visible = Vec::new();
    for label in store.labels(&id)? {
        let agent = store
            .decision(&id, label.action_index)?
            .map(|d| d.proposed_by)
            .unwrap_or_default();
        if crate::auth::scope_matches(&token.scope, &agent) {
            visible.push(label);
        }
    }
    Ok(axum::Json(visible).into_response())
}

fn json_body<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> ApiResult<T> {
    if body.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            format!("malformed JSON body: {e}"),
        )
    })
}

async fn decide_review(
    State(host): State<Arc<Host>>,
    UrlPath((id, decision)): UrlPath<(i64, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let path = format!("/v1/reviews/{id}/{decision}");
    let token = authorize(&host, &headers, Permission::Review, None, &path)?;
    let approve = match decision.as_str() {
        "approve" => true,
        "reject" => false,
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not-found",
                "use /approve or /reject",
            ));
        }
    };
    let d: Decision = json_body(&body)?;
    let review = decide(&host, &token, id, approve, d.comment.as_deref(), &path).await?;
    Ok(axum::Json(review).into_response())
}

/// A reviewer's decision on review `id`, checked against `token`'s scope;
/// an approved action is carried out at once. The API and the console both
/// decide reviews here.
pub(crate) async fn decide(
    host: &Host,
    token: &Token,
    id: i64,
    approve: bool,
    comment: Option<&str>,
    path: &str,
) -> ApiResult<crate::review::Review> {
    let Some(pending) = host.reviews.get(id)? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no review {id}"),
        ));
    };
    if !pending.visible_to(&token.scope) {
        // Checked again with the plugin, so the refusal is audited as any
        // other scope refusal.
        permit(
            host,
            Some(token.clone()),
            Permission::Review,
            Some(&pending.proposed_by),
            path,
        )?;
    }
    let reviewer = format!("{} (token {})", token.name, token.id);
    let started = evos_core::call::unix_micros();
    let review = host.reviews.decide(id, approve, &reviewer, comment)?;
    let review = if approve {
        let (review, step) = pipeline::carry_out_traced(
            host.registry.as_ref(),
            &host.reviews,
            &review,
            Some(&host.breakers),
        )
        .await?;
        if let (Some(otlp), Some(step)) = (host.otlp.get(), step) {
            otlp.carried_out(&review, started, &step);
        }
        review
    } else {
        review
    };
    host.metrics.observe_review(&review);
    Ok(review)
}

/// Store a component for a later deploy. The body is read only after the
/// token is checked, and only up to the engine's `max_component_bytes`
/// (the API's general body limit does not apply: components are larger
/// than requests). Bytes that are not a valid component are refused before
/// anything is stored.
async fn upload(
    State(host): State<Arc<Host>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult {
    use http_body_util::BodyExt;
    authorize(&host, &headers, Permission::Deploy, None, "/v1/components")?;
    let engine = host.registry.runtime().engine().clone();
    let max = engine.config().max_component_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!(
                "component exceeds the limit of {} ({max} bytes)",
                bytesize::ByteSize(max).display().iec()
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let body = http_body_util::Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                too_large()
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad-request",
                    "the request body could not be read",
                )
            }
        })?
        .to_bytes();
    let validated = tokio::task::spawn_blocking(move || {
        engine.validate_component(&body, "uploaded component")?;
        Ok::<_, Error>(body)
    })
    .await
    .map_err(|e| Error::InvalidComponent {
        what: "uploaded component".into(),
        message: format!("validation did not finish: {e}"),
    })?;
    let body = validated?;
    let digest = host.registry.store().put_blob(&body)?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"digest": digest, "size": body.len()})),
    )
        .into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DeployRequest {
    /// The manifest's TOML text.
    manifest: String,
    /// sha256 of a component uploaded to /v1/components.
    digest: String,
    canary: Option<u8>,
    /// Deploy as a shadow mirroring `share` percent (default 100) of the
    /// live calls.
    #[serde(default)]
    shadow: bool,
    share: Option<u8>,
}

async fn deploy(
    State(host): State<Arc<Host>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let path = format!("/v1/plugins/{name}/deploy");
    let token = authorize(&host, &headers, Permission::Deploy, Some(&name), &path)?;
    let req: DeployRequest = json_body(&body)?;
    let manifest = Manifest::parse(
        &req.manifest,
        &format!("manifest of {name} (API)"),
        Path::new("."),
    )?;
    if manifest.name() != name {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            format!(
                "the manifest names `{}` but the URL names `{name}`",
                manifest.name()
            ),
        ));
    }
    // The host's own directories are refused to everyone, before anything
    // else is said about the grants (and audited as a refused deploy).
    if let Err(e) = host.registry.runtime().check_protected(&manifest) {
        refused_deploy(&host, &token, &manifest, &e.to_string()).await;
        return Err(e.into());
    }
    if token.role != Role::Admin
        && let Err(problems) = host.app.deployers.check(&manifest, &token.scope)
    {
        let why = format!(
            "token {} (deployer scoped to {:?}) may not give these grants: {}",
            token.id,
            token.scope,
            problems.join("; ")
        );
        refused_deploy(&host, &token, &manifest, &why).await;
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", why));
    }
    if req.digest.len() != 64 || !req.digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "digest must be 64 hex digits; upload to /v1/components first",
        ));
    }
    let bytes = host.registry.store().get_blob(&req.digest).map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no uploaded component {}", req.digest),
        )
    })?;
    let slot = match (req.canary, req.shadow, req.share) {
        (Some(_), true, _) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad-request",
                "a version is deployed as a canary or as a shadow, not both: drop `canary` or `shadow`",
            ));
        }
        (_, false, Some(_)) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad-request",
                "`share` is the shadow's share of live calls: set \"shadow\": true with it",
            ));
        }
        (Some(w), false, None) => Slot::Canary(w),
        (None, true, share) => Slot::Shadow(share.unwrap_or(100)),
        (None, false, None) => Slot::Stable,
    };
    let report = host
        .registry
        .deploy_to(
            manifest,
            &bytes,
            &req.digest,
            slot,
            &format!("token/{}", token.id),
        )
        .await?;
    Ok(axum::Json(report).into_response())
}

/// Audit a deploy refused before it reached the registry.
async fn refused_deploy(host: &Host, token: &Token, manifest: &Manifest, reason: &str) {
    let _ = host
        .registry
        .store()
        .audit_async(NewEntry {
            actor: &format!("token/{}", token.id),
            action: "deploy-refused",
            subject: manifest.name(),
            digest: None,
            detail: json!({"version": manifest.plugin.version.to_string(), "manifest": manifest.origin, "reason": reason}),
        })
        .await;
}

async fn promote(
    State(host): State<Arc<Host>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult {
    let path = format!("/v1/plugins/{name}/promote");
    let token = authorize(&host, &headers, Permission::Deploy, Some(&name), &path)?;
    Ok(axum::Json(
        host.registry
            .promote(&name, &format!("token/{}", token.id))
            .await?,
    )
    .into_response())
}

/// Make the stable version's current drift window its reference (after a
/// shift people accept as the new normal).
async fn pin_drift(
    State(host): State<Arc<Host>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult {
    let path = format!("/v1/plugins/{name}/drift/pin");
    let token = authorize(&host, &headers, Permission::Deploy, Some(&name), &path)?;
    let status = host
        .registry
        .pin_drift(&name, &format!("token/{}", token.id))?;
    Ok(axum::Json(status).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    /// A stored version of the plugin.
    #[serde(default)]
    candidate: String,
    /// RFC 3339, or a duration ago such as `7d`.
    since: Option<String>,
    limit: Option<usize>,
}

/// Recorded calls of `name` through a stored candidate version, effects
/// suppressed: the report of [`crate::replay::replay`]. Replay runs code on
/// recorded traffic, so it takes the deploy permission.
async fn replay(
    State(host): State<Arc<Host>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let path = format!("/v1/plugins/{name}/replay");
    authorize(&host, &headers, Permission::Deploy, Some(&name), &path)?;
    let req: ReplayRequest = json_body(&body)?;
    if req.candidate.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "name the candidate: {\"candidate\": \"<stored version>\"} (optional: \"since\": \"7d\", \"limit\": 1000)".to_string(),
        ));
    }
    let since = req
        .since
        .as_deref()
        .map(crate::audit::since_rfc3339)
        .transpose()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad-request", e.to_string()))?;
    let candidate = host.registry.stored_version(&name, &req.candidate)?;
    let router: Arc<dyn crate::runtime::Router> = host.registry.clone();
    let report = crate::replay::replay(
        host.registry.runtime(),
        Some(router),
        &**host.registry.store(),
        &name,
        &candidate,
        &crate::replay::ReplayOptions {
            since,
            limit: req.limit,
            concurrency: 0,
        },
    )
    .await?;
    Ok(axum::Json(report).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    to: Option<String>,
    /// Reinstate a version the host rolled back automatically.
    #[serde(default)]
    force: bool,
}

async fn rollback(
    State(host): State<Arc<Host>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let path = format!("/v1/plugins/{name}/rollback");
    let token = authorize(&host, &headers, Permission::Deploy, Some(&name), &path)?;
    let req: RollbackRequest = json_body(&body)?;
    let report = host
        .registry
        .rollback_with(
            &name,
            req.to.as_deref(),
            req.force,
            &format!("token/{}", token.id),
        )
        .await?;
    Ok(axum::Json(report).into_response())
}

async fn status_all(State(host): State<Arc<Host>>, headers: HeaderMap) -> ApiResult {
    let token = authorize(&host, &headers, Permission::Status, None, "/v1/plugins")?;
    let all = host.registry.status(None)?;
    let visible: Vec<_> = all
        .into_iter()
        .filter(|s| crate::auth::scope_matches(&token.scope, &s.plugin))
        .collect();
    Ok(axum::Json(visible).into_response())
}

async fn status_one(
    State(host): State<Arc<Host>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult {
    authorize(
        &host,
        &headers,
        Permission::Status,
        Some(&name),
        &format!("/v1/plugins/{name}"),
    )?;
    Ok(axum::Json(host.registry.status(Some(&name))?).into_response())
}

async fn history(
    State(host): State<Arc<Host>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult {
    authorize(
        &host,
        &headers,
        Permission::Status,
        Some(&name),
        &format!("/v1/plugins/{name}/history"),
    )?;
    if host.registry.route(&name).is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no plugin `{name}`"),
        ));
    }
    Ok(axum::Json(host.registry.store().history(&name)?).into_response())
}

async fn invoke(
    State(host): State<Arc<Host>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let path = format!("/v1/plugins/{name}/invoke");
    authorize(&host, &headers, Permission::Invoke, Some(&name), &path)?;
    let Some(route) = host.registry.route(&name) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no plugin `{name}`"),
        ));
    };
    let input = CallInput::from_json_slice(route.stable.plugin.kind(), &body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad-request", e))?;
    let _slot = host.admit(&name).ok_or_else(|| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "busy",
            format!("`{name}` is at its concurrency limit; retry later"),
        )
    })?;
    let key = headers
        .get("x-evos-routing-key")
        .and_then(|v| v.to_str().ok());
    let report = host.registry.call(&name, input, key).await?;
    Ok(axum::Json(report).into_response())
}

#[derive(Deserialize)]
struct AuditQuery {
    after: Option<i64>,
    since: Option<String>,
}

async fn audit_log(
    State(host): State<Arc<Host>>,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> ApiResult {
    let token = authorize(&host, &headers, Permission::Audit, None, "/v1/audit")?;
    let mut entries = host
        .registry
        .store()
        .audit_list(q.after.unwrap_or(0), q.since.as_deref())
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad-request", e.to_string()))?;
    entries.retain(|e| e.visible_to(&token.scope));
    Ok(axum::Json(entries).into_response())
}

async fn audit_verify(State(host): State<Arc<Host>>, headers: HeaderMap) -> ApiResult {
    authorize(&host, &headers, Permission::Audit, None, "/v1/audit/verify")?;
    let v = host.registry.store().audit_verify()?;
    let status = if v.intact {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    Ok((status, axum::Json(v)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emfile() -> std::io::Error {
        std::io::Error::from_raw_os_error(libc::EMFILE)
    }

    #[test]
    fn accept_backoff_pauses_on_exhaustion_and_reports_once_per_interval() {
        let mut b = AcceptBackoff::new();
        let (first, warning) = b.failed(&emfile());
        assert_eq!(first, ACCEPT_PAUSE_MIN);
        assert!(warning.is_some_and(|w| w.contains("ulimit -n")));
        let mut pauses = vec![first];
        let mut warnings = 0;
        for _ in 0..10_000 {
            let (p, w) = b.failed(&emfile());
            pauses.push(p);
            warnings += usize::from(w.is_some());
        }
        assert_eq!(
            warnings, 0,
            "one warning per interval, however many failures"
        );
        assert!(pauses.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(pauses.last().copied(), Some(ACCEPT_PAUSE_MAX));
        b.succeeded();
        assert_eq!(b.failed(&emfile()).0, ACCEPT_PAUSE_MIN);
        let other = std::io::Error::from_raw_os_error(libc::ECONNABORTED);
        assert_eq!(
            b.failed(&other).0,
            Duration::ZERO,
            "no pause for a lost client"
        );
    }

    #[test]
    fn refusal_rate_allows_a_burst_then_counts_what_it_holds_back() {
        let rate = RefusalRate {
            rate: 0.0,
            burst: 3.0,
            clients: Mutex::new(HashMap::new()),
        };
        let a: std::net::IpAddr = [10, 0, 0, 1].into();
        let b: std::net::IpAddr = [10, 0, 0, 2].into();
        assert_eq!(
            (0..5).map(|_| rate.admit(a)).collect::<Vec<_>>(),
            [Some(0), Some(0), Some(0), None, None]
        );
        assert_eq!(rate.admit(b), Some(0), "clients have their own buckets");
        let refilling = RefusalRate {
            rate: 1e9,
            burst: 1.0,
            clients: Mutex::new(HashMap::new()),
        };
        assert_eq!(refilling.admit(a), Some(0));
        // With a refill this fast, the next admit sees a full bucket.
        std::thread::sleep(Duration::from_millis(1));
        assert_eq!(refilling.admit(a), Some(0));
        let slow = RefusalRate {
            rate: 0.0,
            burst: 1.0,
            clients: Mutex::new(HashMap::new()),
        };
        assert_eq!(slow.admit(a), Some(0));
        assert_eq!(slow.admit(a), None);
        assert_eq!(slow.admit(a), None);
        if let Ok(mut c) = slow.clients.lock()
            && let Some(bucket) = c.get_mut(&a)
        {
            bucket.tokens = 1.0;
        }
        assert_eq!(
            slow.admit(a),
            Some(2),
            "the next audited refusal carries the count"
        );
    }
}
