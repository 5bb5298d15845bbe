//! `evos labels`: the human labels, for training.

use anyhow::Result;

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

pub fn run(cli: &Cli, cmd: &Command) -> Result<Exit> {
    match cmd {
        Command::Export { plugin, since, app } => {
            let since = since.as_deref().map(super::since_time).transpose()?;
            let store = super::open_store(cli)?;
            let key = evos::redact::host_key(&cli.data_dir)?;
            let app = if app.exists() {
                Some(evos::app::App::load(app)?)
            } else {
                None
            };
            // The app's `[recording] redact` paths apply here too.
            let paths = app
                .as_ref()
                .and_then(|a| a.recording.as_ref())
                .map(|r| r.redact.clone())
                .unwrap_or_default();
            let redactor = evos::redact::Redactor::new(&key, &paths).map_err(anyhow::Error::msg)?;
            let rows =
                evos::labels::export(&*store, plugin, since.as_deref(), &redactor, app.as_ref())?;
            for row in &rows {
                println!("{row}");
            }
            shout!("{} labelled decisions of {plugin}", rows.len());
            Ok(Exit::Success)
        }
    }
}
