//! `evos sources`: what the app's event sources gave up on.

use anyhow::Result;

use super::{Cli, Exit, print_json};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Messages an event source gave up on (a connector could not read
    /// them, or they failed `max-deliver` times), newest first: source,
    /// stream position, deliveries, the last error and the payload.
    DeadLetters {
        /// Only this source's (`nats:<stream>/<consumer>`).
        #[arg(long)]
        source: Option<String>,
        /// Print the result as JSON (payloads in base64).
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cli: &Cli, cmd: &Command) -> Result<Exit> {
    let store = super::open_store(cli)?;
    match cmd {
        Command::DeadLetters { source, json } => {
            let letters = store.dead_letters(source.as_deref())?;
            if *json {
                print_json(&letters)?;
            } else {
                for l in &letters {
                    say!(
                        "{} {} {} seq {} ({} deliveries, {} bytes): {}",
                        l.id,
                        l.at,
                        l.source,
                        l.sequence,
                        l.delivered,
                        l.payload.len(),
                        l.error
                    );
                }
                shout!("{} dead letters", letters.len());
            }
            Ok(Exit::Success)
        }
    }
}
