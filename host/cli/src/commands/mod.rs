//! CLI commands. Each command returns an [`Exit`]; errors print their whole
//! cause chain and exit 2.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

/// Print one line of human-readable output on stdout. Control characters
/// in it are escaped ([`evos::text::escape`]): values in it may come from
/// API clients, manifests or plugins, and must neither forge lines nor
/// drive the terminal. JSON output uses `print_json` instead.
macro_rules! say {
    ($($arg:tt)*) => {
        println!("{}", evos::text::escape(&format!($($arg)*)))
    };
}

/// [`say!`] on stderr.
macro_rules! shout {
    ($($arg:tt)*) => {
        eprintln!("{}", evos::text::escape(&format!($($arg)*)))
    };
}

mod author;
mod check;
mod control;
mod demo;
mod evolve;
mod feedback;
mod inspect;
mod invoke;
mod labels;
mod recordings;
mod replay;
mod run;
mod sources;
mod up;

/// Host for sandboxed AI automation: WebAssembly plugins with capability
/// manifests, metering and typed outcomes.
#[derive(Parser)]
#[command(name = "evos", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Directory for host state (the compile cache lives in <data-dir>/cache).
    #[arg(long, global = true, default_value = ".evos", env = "EVOS_DATA_DIR")]
    data_dir: PathBuf,
    /// The state several nodes share: a PostgreSQL URL
    /// (postgres://user:password@host:5432/database). Without it the state
    /// is SQLite in the data directory.
    #[arg(long, global = true, env = "EVOS_STORE", hide_env_values = true)]
    store: Option<String>,
    /// Do not read or write the compile cache.
    #[arg(long, global = true)]
    no_cache: bool,
    /// Log format on stderr (filter with EVOS_LOG, e.g. EVOS_LOG=info).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Digest, size, imports and exports of a component.
    Inspect(inspect::Args),
    /// Compare a component's imports with its manifest's grants.
    Check(check::Args),
    /// Call a plugin once with JSON input.
    Invoke(invoke::Args),
    /// Drive input through the app's pipeline: connector -> agents -> policies -> action.
    Run(run::Args),
    /// Deploy a version as stable, as a canary (--canary <percent>) or as a shadow (--shadow).
    Deploy(control::DeployArgs),
    /// Make the canary the stable version.
    Promote(control::PromoteArgs),
    /// Drop the canary, or restore the previous (or a given) stable version.
    Rollback(control::RollbackArgs),
    /// Stable and canary versions, weights, digests, calls, outcomes, latency.
    Status(control::StatusArgs),
    /// The deployment history of a plugin.
    History(control::HistoryArgs),
    /// Call a deployed plugin through its route (canary weights apply).
    Call(control::CallArgs),
    /// The tamper-evident audit log.
    #[command(subcommand)]
    Audit(control::AuditCommand),
    /// Run the host: pipeline, review queue, API, metrics.
    Up(up::UpArgs),
    /// Start the host with the claims app and drive sample claims through its API.
    Demo(demo::DemoArgs),
    /// API tokens.
    #[command(subcommand)]
    Token(up::TokenCommand),
    /// The human review queue.
    #[command(subcommand)]
    Review(up::ReviewCommand),
    /// Label a recorded action after the fact (a paid claim found
    /// fraudulent later): a human label versions are judged against.
    Feedback(feedback::Args),
    /// Human labels of recorded decisions, exported for training.
    #[command(subcommand)]
    Labels(labels::Command),
    /// Run recorded inputs through a candidate version with effects
    /// suppressed, and compare its answers with the recorded ones and with
    /// human labels; or re-score a JSONL file of inputs (--input).
    Replay(replay::Args),
    /// Recorded (redacted) pipeline traffic: list it, prune it.
    #[command(subcommand)]
    Recordings(recordings::Command),
    /// Event sources (NATS JetStream): the messages they gave up on.
    #[command(subcommand)]
    Sources(sources::Command),
    /// Write a new plugin: source (Rust, Python or JavaScript), a manifest
    /// with least privilege and a [build] table, a sample input and a test.
    New(author::NewArgs),
    /// Run a plugin's build command (its manifest's [build]), then check the
    /// component against the manifest; --test also runs its tests and
    /// invokes it on its sample input.
    Build(author::BuildArgs),
}

/// How a command ended.
pub enum Exit {
    Success,
    Negative,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("EVOS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Colours only for a terminal: a log file or pipe gets plain text.
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => fmt.init(),
        // One JSON object per line, with the span fields (plugin, version,
        // digest, trace_id) of each pipeline step.
        LogFormat::Json => fmt
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
    let result = match &cli.command {
        Command::Inspect(a) => inspect::run(a),
        Command::Check(a) => check::run(a),
        Command::Invoke(a) => block_on(invoke::run(&cli, a)),
        Command::Run(a) => block_on(run::run(&cli, a)),
        Command::Deploy(a) => block_on(control::deploy(&cli, a)),
        Command::Promote(a) => block_on(control::promote(&cli, a)),
        Command::Rollback(a) => block_on(control::rollback(&cli, a)),
        Command::Status(a) => control::status(&cli, a),
        Command::History(a) => control::history(&cli, a),
        Command::Call(a) => block_on(control::call(&cli, a)),
        Command::Audit(a) => control::audit(&cli, a),
        Command::Up(a) => block_on(up::up(&cli, a)),
        Command::Demo(a) => block_on(demo::demo(&cli, a)),
        Command::Token(a) => up::token(&cli, a),
        Command::Review(a) => block_on(up::review(&cli, a)),
        Command::Feedback(a) => feedback::run(&cli, a),
        Command::Labels(a) => labels::run(&cli, a),
        Command::Recordings(a) => recordings::run(&cli, a),
        Command::Sources(a) => sources::run(&cli, a),
        Command::Replay(a) => block_on(replay::run(&cli, a)),
        Command::New(a) => author::new(a),
        Command::Build(a) => block_on(author::build(&cli, a)),
    };
    match result {
        Ok(Exit::Success) => ExitCode::SUCCESS,
        Ok(Exit::Negative) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {}", evos::text::escape_lines(&e.to_string()));
            for cause in e.chain().skip(1) {
                eprintln!(
                    "  caused by: {}",
                    evos::text::escape_lines(&cause.to_string())
                );
            }
            ExitCode::from(2)
        }
    }
}

fn block_on<F: Future<Output = Result<Exit>>>(f: F) -> Result<Exit> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(f)
}

fn engine(cli: &Cli) -> Result<evos::Engine> {
    let config = evos::EngineConfig {
        cache_dir: (!cli.no_cache).then(|| cli.data_dir.join("cache")),
        ..Default::default()
    };
    Ok(evos::Engine::new(config)?)
}

/// A runtime whose `kv` persists in the data directory, as deployed
/// plugins' does.
fn runtime(cli: &Cli) -> Result<evos::Runtime> {
    let runtime = evos::Runtime::with_parts(
        engine(cli)?,
        open_store(cli)?.kv(),
        std::env::vars().collect(),
    );
    runtime.protect(&cli.data_dir, "data directory");
    Ok(runtime)
}

/// The host's state: `--store` when given, else the data directory's.
fn open_store(cli: &Cli) -> Result<std::sync::Arc<dyn evos::store::StateStore>> {
    evos::store::open(&cli.data_dir, cli.store.as_deref())
        .with_context(|| format!("opening the state of {}", cli.data_dir.display()))
}

/// Read a file, or standard input for `-`.
fn read_input(path: &Path) -> Result<Vec<u8>> {
    if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading standard input")?;
        Ok(buf)
    } else {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    }
}

/// `since` as an RFC 3339 time: given as one (or a date), or a duration
/// ago such as `7d`.
pub(crate) fn since_time(since: &str) -> Result<String> {
    evos::audit::since_rfc3339(since).with_context(|| {
        format!("--since {since:?}: give an RFC 3339 time (2026-12-01T00:00:00Z) or a duration such as 7d")
    })
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every command and argument explains itself in `--help`.
    #[test]
    fn every_command_and_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let here = format!("{path} {}", cmd.get_name());
            if cmd.get_about().is_none() && !path.is_empty() {
                missing.push(format!("{here} (the command)"));
            }
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{here} <{id}>"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &here, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }
}
