//! `evos up`: run the host — the pipeline, the review queue and the API —
//! until interrupted, then let requests in flight finish. Also the
//! `token` and `review` commands that manage its data directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use evos::auth::{Role, Tokens};
use evos::review::{ReviewQueue, ReviewStatus};
use evos::server::{Host, ServerConfig};

use super::{Cli, Exit, print_json};

#[derive(clap::Args)]
pub struct UpArgs {
    /// The app file: plugins and how events flow between them.
    #[arg(long, default_value = "evos.toml")]
    app: PathBuf,
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = "127.0.0.1:8787")]
    listen: SocketAddr,
    /// Largest request body accepted.
    #[arg(long, default_value = "1MiB")]
    max_body: bytesize::ByteSize,
    /// How long requests in flight may run on after shutdown is requested.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    drain: Duration,
    /// How long a web console session lasts from sign-in (the console is
    /// served at /ui).
    #[arg(long, default_value = "8h", value_parser = humantime::parse_duration)]
    console_session: Duration,
    /// Export the pipeline's spans and the metrics over OTLP/HTTP to this
    /// collector (e.g. http://127.0.0.1:4318); off when not given.
    #[arg(long, value_name = "URL")]
    otlp: Option<String>,
    /// How often metrics are sent to the --otlp collector.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    otlp_metrics_every: Duration,
}

pub async fn up(cli: &Cli, args: &UpArgs) -> Result<Exit> {
    if let Some((before, after)) = evos::server::raise_open_file_limit()
        && after != before
    {
        tracing::info!("raised the open-file limit from {before} to {after}");
    }
    let mut config = ServerConfig::new(&cli.data_dir, &args.app);
    config.store = cli.store.clone();
    config.max_body_bytes = usize::try_from(args.max_body.as_u64()).unwrap_or(usize::MAX);
    if args.console_session.is_zero() {
        anyhow::bail!(
            "--console-session 0s would end every session at sign-in; give a duration such as 8h"
        );
    }
    config.console_session = args.console_session;
    if let Some(endpoint) = &args.otlp {
        if args.otlp_metrics_every.is_zero() {
            anyhow::bail!("--otlp-metrics-every 0s is not an interval; give one such as 10s");
        }
        config.otlp = Some(evos::otlp::OtlpConfig {
            endpoint: endpoint.clone(),
            metrics_every: args.otlp_metrics_every,
        });
    }
    if cli.no_cache {
        config.engine.cache_dir = None;
    }
    let (host, boot) = Host::bootstrap(config).await?;
    for name in &boot.deployed {
        shout!("deployed {name} from {}", args.app.display());
    }
    if let Some(path) = &boot.admin_token_file {
        shout!(
            "created the first admin token in {} (mode 0600); use it as `Authorization: Bearer <token>`",
            path.display()
        );
    }
    let listener = evos::server::bind(args.listen).await?;
    let addr = listener
        .local_addr()
        .context("reading the listen address")?;
    shout!(
        "evos listening on http://{addr} (data in {}); the console is at http://{addr}/ui",
        cli.data_dir.display()
    );
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
        shout!("shutting down: finishing requests in flight");
    };
    evos::server::serve(host, listener, shutdown, args.drain).await?;
    Ok(Exit::Success)
}

#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token; its secret is printed once.
    Create {
        /// A name for the token's holder.
        name: String,
        /// admin | deployer | invoker | reviewer | auditor
        #[arg(long)]
        role: String,
        /// Plugin-name pattern the token is limited to: `*`, a name, or a prefix ending in `*`.
        #[arg(long, default_value = "*")]
        scope: String,
        /// Print the result as JSON (for scripts and CI).
        #[arg(long)]
        json: bool,
    },
    /// List tokens (never their secrets).
    List {
        /// Print the result as JSON (for scripts and CI).
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id.
    Revoke {
        /// The token's id (the part after `evos_`, as `token list` shows).
        id: String,
    },
}

fn store(cli: &Cli) -> Result<std::sync::Arc<dyn evos::store::StateStore>> {
    super::open_store(cli)
}

pub fn token(cli: &Cli, cmd: &TokenCommand) -> Result<Exit> {
    let tokens = Tokens::new(store(cli)?);
    match cmd {
        TokenCommand::Create {
            name,
            role,
            scope,
            json,
        } => {
            let role: Role = role.parse().map_err(anyhow::Error::msg)?;
            let (t, secret) = tokens.create(name, role, scope, &super::control::actor())?;
            if *json {
                print_json(
                    &serde_json::json!({"token": secret, "id": t.id, "role": t.role, "scope": t.scope}),
                )?;
            } else {
                say!("{secret}");
                shout!(
                    "token {} ({} scoped to {:?}); the secret above is shown only once",
                    t.id,
                    t.role,
                    t.scope
                );
            }
        }
        TokenCommand::List { json } => {
            let list = tokens.list()?;
            if *json {
                print_json(&list)?;
            } else {
                for t in list {
                    let state = t
                        .revoked_at
                        .as_deref()
                        .map(|r| format!("revoked {r}"))
                        .unwrap_or_else(|| "active".into());
                    say!(
                        "{}  {:<9} {:<16} {:<24} {state}",
                        t.id,
                        t.role,
                        t.scope,
                        t.name
                    );
                }
            }
        }
        TokenCommand::Revoke { id } => {
            tokens.revoke(id, &super::control::actor())?;
            say!("revoked {id}");
        }
    }
    Ok(Exit::Success)
}

#[derive(clap::Subcommand)]
pub enum ReviewCommand {
    /// List reviews (pending by default).
    List {
        /// Show reviews in every state, not only pending ones.
        #[arg(long)]
        all: bool,
        /// Print the result as JSON (for scripts and CI).
        #[arg(long)]
        json: bool,
    },
    /// Approve a review; the action is carried out by its connector.
    Approve {
        /// The review id, as `review list` shows it.
        id: i64,
        /// Why: kept with the decision in the review and the audit log.
        #[arg(long)]
        comment: Option<String>,
        /// Print the result as JSON (for scripts and CI).
        #[arg(long)]
        json: bool,
    },
    /// Reject a review; the action is dropped.
    Reject {
        /// The review id, as `review list` shows it.
        id: i64,
        /// Why: kept with the decision in the review and the audit log.
        #[arg(long)]
        comment: Option<String>,
        /// Print the result as JSON (for scripts and CI).
        #[arg(long)]
        json: bool,
    },
}

pub async fn review(cli: &Cli, cmd: &ReviewCommand) -> Result<Exit> {
    let queue = ReviewQueue::new(store(cli)?);
    let reviewer = super::control::actor();
    let show = |r: &evos::review::Review, json: bool| -> Result<()> {
        if json {
            print_json(r)
        } else {
            say!(
                "review {} [{}] {} for event {} (trace {}): {}",
                r.id,
                r.status.as_str(),
                r.action.kind,
                r.action.event_id,
                r.trace_id,
                r.reasons.join("; ")
            );
            if let Some(result) = &r.result {
                say!("  result: {result}");
            }
            Ok(())
        }
    };
    match cmd {
        ReviewCommand::List { all, json } => {
            let list = queue.list((!all).then_some(ReviewStatus::Pending))?;
            if *json {
                print_json(&list)?;
            } else {
                for r in &list {
                    show(r, false)?;
                }
            }
        }
        ReviewCommand::Approve { id, comment, json } => {
            let review = queue.decide(*id, true, &reviewer, comment.as_deref())?;
            let registry = super::control::open(cli)?;
            let review =
                evos::pipeline::carry_out(registry.as_ref(), &queue, &review, None).await?;
            registry.flush_stats()?;
            show(&review, *json)?;
            if review.status != ReviewStatus::Executed {
                return Ok(Exit::Negative);
            }
        }
        ReviewCommand::Reject { id, comment, json } => {
            let review = queue.decide(*id, false, &reviewer, comment.as_deref())?;
            show(&review, *json)?;
        }
    }
    Ok(Exit::Success)
}
