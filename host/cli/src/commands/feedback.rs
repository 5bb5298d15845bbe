//! `evos feedback`: label a recorded action after the fact.

use anyhow::Result;
use evos::store::{LABEL_FROM_FEEDBACK, NewLabel};

use super::{Cli, Exit, print_json};

#[derive(clap::Args)]
pub struct Args {
    /// The event's id, as the pipeline recorded it (`evos audit log` shows
    /// `pipeline` entries with subject `event/<id>`).
    event: String,
    /// What the action should have been: `approve`, `reject`, or a word
    /// the models' `[rollout.compare.labels]` map (e.g. `fraud`, `legit`).
    #[arg(long)]
    label: String,
    /// Which of the event's actions (0 for the first).
    #[arg(long, default_value_t = 0)]
    action: usize,
    /// Why: kept with the label and in the audit log.
    #[arg(long)]
    comment: Option<String>,
    /// Print the result as JSON (for scripts and CI).
    #[arg(long)]
    json: bool,
}

pub fn run(cli: &Cli, args: &Args) -> Result<Exit> {
    let store = super::open_store(cli)?;
    let actor = super::control::actor();
    let label = match store.add_label(&NewLabel {
        event_id: &args.event,
        action_index: args.action,
        label: &args.label,
        source: LABEL_FROM_FEEDBACK,
        actor: &actor,
        comment: args.comment.as_deref(),
    }) {
        Ok(label) => label,
        Err(e @ (evos::Error::NotFound(_) | evos::Error::Input { .. })) => {
            shout!("{e}");
            return Ok(Exit::Negative);
        }
        Err(e) => return Err(e.into()),
    };
    if args.json {
        print_json(&label)?;
    } else {
        say!(
            "labelled action {} of event {} as {} (label {})",
            label.action_index,
            label.event_id,
            label.label,
            label.id
        );
        for earlier in store
            .labels(&args.event)?
            .into_iter()
            .filter(|l| l.action_index == args.action && l.id != label.id)
        {
            say!(
                "  earlier: {} by {} ({}) at {}",
                earlier.label,
                earlier.actor,
                earlier.source,
                earlier.at
            );
        }
    }
    Ok(Exit::Success)
}
