//! `evos labels`: the human labels, for training.

use anyhow::{Context, Result};
use evos::store::SqliteStore;

use super::{Cli, Exit};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Labelled decisions of a plugin as JSON lines on stdout: the label,
    /// the class it stands for, the version's output and features, times,
    /// redacted. The input of `plugins/fraud-score/train/train.py --labels`.
    Export {
        /// The plugin whose decisions to export (a model adapter's rows
        /// carry its features and the label's class).
        #[arg(long)]
        plugin: String,
        /// Only labels given at or after this time: RFC 3339, or a duration
        /// ago such as `7d`.
        #[arg(long)]
        since: Option<String>,
        /// The app file, for the manifests of versions recorded by `evos run
        /// --record` (not deployed); skipped when it does not exist.
        #[arg(long, default_value = "evos.toml")]
        app: std::path::PathBuf,
    },
}

/// `since` as an RFC 3339 time: given as one, or a duration ago.
fn since_time(since: &str) -> Result<String> {
    if humantime::parse_rfc3339_weak(since).is_ok() {
        return Ok(since.to_string());
    }
    let ago = humantime::parse_duration(since).with_context(|| {
        format!("--since {since:?}: give an RFC 3339 time (2026-12-01T00:00:00Z) or a duration such as 7d")
    })?;
    let at = std::time::SystemTime::now()
        .checked_sub(ago)
        .context("--since reaches before 1970")?;
    Ok(humantime::format_rfc3339_micros(at).to_string())
}

pub fn run(cli: &Cli, cmd: &Command) -> Result<Exit> {
    match cmd {
        Command::Export { plugin, since, app } => {
            let since = since.as_deref().map(since_time).transpose()?;
            let store = SqliteStore::open(&cli.data_dir)
                .with_context(|| format!("opening {}", cli.data_dir.display()))?;
            let key = evos::redact::host_key(&cli.data_dir)?;
            let redactor = evos::redact::Redactor::new(&key, &[]).map_err(anyhow::Error::msg)?;
            let app = if app.exists() {
                Some(evos::app::App::load(app)?)
            } else {
                None
            };
            let rows =
                evos::labels::export(&store, plugin, since.as_deref(), &redactor, app.as_ref())?;
            for row in &rows {
                println!("{row}");
            }
            shout!("{} labelled decisions of {plugin}", rows.len());
            Ok(Exit::Success)
        }
    }
}
