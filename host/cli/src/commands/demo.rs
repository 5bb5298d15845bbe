//! `evos demo`: the main job end to end on embedded defaults. Starts the
//! host (`evos up`) on a fresh data directory with the claims app, starts a
//! local downstream claims system, then drives sample claims through the
//! HTTP API as clients would: ingest, decisions, the review queue, a human
//! approval, the audit verification and a glance at the metrics.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use evos::app::App;
use evos::auth::Role;
use evos::server::{Host, ServerConfig};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{Cli, Exit};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// The app file.
    #[arg(long, default_value = "evos.toml")]
    pub app: PathBuf,
    /// Claims to send (a webhook body).
    #[arg(long, default_value = "plugins/claims-webhook/claims.json")]
    claims: PathBuf,
    /// Keep the demo's data directory instead of removing it.
    #[arg(long)]
    pub keep: bool,
    /// Run the evolution loop instead: drift in the claims traffic, human
    /// labels, retraining, replay and a judged rollout of the retrained
    /// model (on policies/evolve/evos.toml unless --app names another).
    #[arg(long)]
    pub evolve: bool,
}

/// A minimal HTTP/1.1 exchange over loopback.
pub(super) async fn http(
    port: u16,
    method: &str,
    path: &str,
    token: &str,
    body: &[u8],
) -> Result<(u16, Value)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .context("connecting to the host")?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let value = serde_json::from_str(body).unwrap_or(Value::String(body.to_string()));
    Ok((status, value))
}

/// The downstream claims system: accepts POSTs and remembers them.
pub(super) async fn downstream() -> Result<(u16, Arc<Mutex<Vec<String>>>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let rec = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let rec = rec.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut got = Vec::new();
                // Read until the declared body has arrived.
                loop {
                    let Ok(n) = s.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got);
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            if let Ok(mut r) = rec.lock() {
                                r.push(body.to_string());
                            }
                            break;
                        }
                    }
                }
                let reply = "{\"accepted\":true}";
                let _ = s
                    .write_all(format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}", reply.len()).as_bytes())
                    .await;
            });
        }
    });
    Ok((port, seen))
}

/// The app file at `path` with its executing connectors posting to the
/// local downstream claims system on `sink_port`.
pub(super) fn app_with_sink(path: &std::path::Path, sink_port: u16) -> Result<App> {
    let mut app = App::load(path)?;
    for p in &mut app.plugins {
        if !p.executes.is_empty() {
            p.manifest.set_config(
                "endpoint",
                &format!("http://127.0.0.1:{sink_port}/claims/payouts"),
            )?;
        }
    }
    Ok(app)
}

/// A host started for a demo: bootstrapped on a fresh data directory and
/// serving its API on a free 127.0.0.1 port.
pub(super) struct Serving {
    pub host: Arc<Host>,
    pub port: u16,
    /// The first admin token.
    pub admin: String,
    /// A reviewer token.
    pub reviewer: String,
    /// What bootstrap deployed.
    pub deployed: Vec<String>,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<evos::Result<()>>,
}

impl Serving {
    pub(super) async fn start(config: ServerConfig, app: App, reviewer: &str) -> Result<Serving> {
        let (host, boot) = Host::bootstrap_with(config, app).await?;
        let admin = match &boot.admin_token_file {
            Some(path) => std::fs::read_to_string(path)?.trim().to_string(),
            None => bail!("the demo's data directory already had tokens"),
        };
        let (_, reviewer) = host.tokens.create(reviewer, Role::Reviewer, "*", "demo")?;
        let listener = evos::server::bind("127.0.0.1:0".parse()?).await?;
        let port = listener.local_addr()?.port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(evos::server::serve(
            host.clone(),
            listener,
            async {
                let _ = stopped.await;
            },
            Duration::from_secs(5),
        ));
        Ok(Serving {
            host,
            port,
            admin,
            reviewer,
            deployed: boot.deployed,
            stop,
            server,
        })
    }

    /// Stop serving, letting requests in flight finish.
    pub(super) async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        self.server.await.context("joining the server")??;
        Ok(())
    }
}

pub async fn demo(cli: &Cli, args: &DemoArgs) -> Result<Exit> {
    if args.evolve {
        return super::evolve::evolve(cli, args).await;
    }
    let data_dir = std::env::temp_dir().join(format!("evos-demo-{}", std::process::id()));
    let (sink_port, received) = downstream().await?;
    let app = app_with_sink(&args.app, sink_port)?;
    let mut config = ServerConfig::new(&data_dir, &args.app);
    if cli.no_cache {
        config.engine.cache_dir = None;
    } else {
        config.engine.cache_dir = Some(cli.data_dir.join("cache"));
    }
    say!(
        "== starting evos up on a fresh data directory {}",
        data_dir.display()
    );
    let _ = evos::server::raise_open_file_limit();
    let serving = Serving::start(config, app, "demo reviewer").await?;
    say!("   deployed {}", serving.deployed.join(", "));
    let (port, admin, reviewer) = (
        serving.port,
        serving.admin.clone(),
        serving.reviewer.clone(),
    );
    say!(
        "   listening on http://127.0.0.1:{port}; downstream claims system on 127.0.0.1:{sink_port}"
    );

    let claims = std::fs::read(&args.claims)
        .with_context(|| {
            format!(
                "reading the sample claims {} (looked at {}); run from the repository root or pass --claims <file>",
                args.claims.display(),
                std::path::absolute(&args.claims)
                    .unwrap_or_else(|_| args.claims.clone())
                    .display()
            )
        })?;
    say!(
        "\n== POST /v1/ingest/claims-webhook ({})",
        args.claims.display()
    );
    let (status, body) = http(port, "POST", "/v1/ingest/claims-webhook", &admin, &claims).await?;
    if status != 200 {
        bail!("ingest answered {status}: {body}");
    }
    say!("   trace {}", body["trace_id"].as_str().unwrap_or("?"));
    let mut escalated = Vec::new();
    for event in body["report"]["events"].as_array().into_iter().flatten() {
        for a in event["actions"].as_array().into_iter().flatten() {
            let status = a["status"].as_str().unwrap_or("?");
            let why = a["reasons"]
                .as_array()
                .map(|r| {
                    r.iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .or_else(|| a["receipt"].as_str().map(String::from))
                .or_else(|| a["error"].as_str().map(String::from))
                .unwrap_or_default();
            say!(
                "   {:<7} {:<17} -> {status:<9} {why}",
                a["action"]["event_id"].as_str().unwrap_or("?"),
                a["action"]["kind"].as_str().unwrap_or("?"),
            );
            if let Some(id) = a["review_id"].as_i64() {
                escalated.push(id);
            }
        }
    }

    println!();

    say!("== GET /v1/reviews?status=pending (as a reviewer)");
    let (_, reviews) = http(port, "GET", "/v1/reviews?status=pending", &reviewer, b"").await?;
    for r in reviews.as_array().into_iter().flatten() {
        say!(
            "   review {} {} for {}: {}",
            r["id"],
            r["action"]["kind"].as_str().unwrap_or("?"),
            r["action"]["event_id"].as_str().unwrap_or("?"),
            r["reasons"][0].as_str().unwrap_or("")
        );
    }
    for id in &escalated {
        println!();
        say!("== POST /v1/reviews/{id}/approve");
        let (status, r) = http(
            port,
            "POST",
            &format!("/v1/reviews/{id}/approve"),
            &reviewer,
            br#"{"comment":"invoices checked"}"#,
        )
        .await?;
        say!(
            "   {status}: review {} is {} ({})",
            r["id"],
            r["status"].as_str().unwrap_or("?"),
            r["result"].as_str().unwrap_or("")
        );
    }

    let delivered = received.lock().map(|r| r.len()).unwrap_or(0);
    println!();
    say!("== the downstream claims system received {delivered} action(s)");
    println!();
    say!("== GET /v1/audit/verify");
    let (status, v) = http(port, "GET", "/v1/audit/verify", &admin, b"").await?;
    say!(
        "   {status}: intact={} entries={}",
        v["intact"],
        v["entries"]
    );
    let (_, metrics) = http(port, "GET", "/metrics", &admin, b"").await?;
    println!();
    say!("== GET /metrics (excerpt)");
    for line in metrics.as_str().unwrap_or("").lines().filter(|l| {
        l.starts_with("evos_pipeline_actions_total")
            || l.starts_with("evos_review_queue_depth")
            || l.starts_with("evos_calls_total{plugin=\"fraud-score\"")
    }) {
        say!("   {line}");
    }

    serving.stop().await?;
    if args.keep {
        println!();
        say!("data directory kept at {}", data_dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    Ok(if status == 200 {
        Exit::Success
    } else {
        Exit::Negative
    })
}
