//! `evos recordings`: the recorded, redacted pipeline traffic.

use anyhow::Result;
use evos::store::RecordingFilter;

use super::{Cli, Exit};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Recorded events as JSON lines on stdout, oldest first: trace id,
    /// why it was recorded, what redaction replaced, and every call on its
    /// path (plugin, version, digest, input, output, outcome, fuel, time).
    List {
        /// Only the event with this trace id.
        #[arg(long)]
        trace: Option<String>,
        /// Only events recorded at or after this time: RFC 3339, or a
        /// duration ago such as `7d`.
        #[arg(long)]
        since: Option<String>,
        /// At most this many events (the newest).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Delete recordings past the app's `[recording]` retention and
    /// beyond its `max-rows` (audited as `recording-prune`). `evos up`
    /// does this every minute.
    Prune {
        /// The app file whose `[recording]` table says what is kept.
        #[arg(long, default_value = "evos.toml")]
        app: std::path::PathBuf,
    },
}

pub fn run(cli: &Cli, cmd: &Command) -> Result<Exit> {
    let store = super::open_store(cli)?;
    match cmd {
        Command::List {
            trace,
            since,
            limit,
        } => {
            let since = since.as_deref().map(super::since_time).transpose()?;
            let rows = store.recordings(&RecordingFilter {
                trace_id: trace.as_deref(),
                since: since.as_deref(),
                limit: *limit,
                ..Default::default()
            })?;
            for row in &rows {
                println!("{}", serde_json::to_string(row)?);
            }
            shout!("{} recorded events", rows.len());
            Ok(Exit::Success)
        }
        Command::Prune { app } => {
            let app = evos::app::App::load(app)?;
            let Some(config) = &app.recording else {
                anyhow::bail!(
                    "{} has no [recording] table, so nothing says what to keep; add one (e.g. retention = \"30d\") and run again",
                    app.path.display()
                );
            };
            let pruned = evos::recording::prune(&*store, config, &super::control::actor())?;
            say!(
                "pruned {} recorded events past retention and {} beyond max-rows; {} kept",
                pruned.expired,
                pruned.over_limit,
                pruned.kept
            );
            Ok(Exit::Success)
        }
    }
}
