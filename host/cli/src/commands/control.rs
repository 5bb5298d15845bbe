//! Control-plane commands over the data directory: deploy, promote,
//! rollback, status, history, call, and the audit log.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use evos::registry::{ChangeReport, Registry};
use evos::{CallInput, EngineConfig};

use super::{Cli, Exit, print_json, read_input};

pub(super) fn open(cli: &Cli) -> Result<Arc<Registry>> {
    let config = EngineConfig {
        cache_dir: (!cli.no_cache).then(|| cli.data_dir.join("cache")),
        ..Default::default()
    };
    Registry::with_store(super::open_store(cli)?, config, std::env::vars().collect())
        .with_context(|| format!("opening the data directory {}", cli.data_dir.display()))
}

pub(super) fn actor() -> String {
    std::env::var("EVOS_ACTOR")
        .or_else(|_| std::env::var("USER"))
        .map(|u| format!("cli:{u}"))
        .unwrap_or_else(|_| "cli".into())
}

fn print_change(r: &ChangeReport, json: bool) -> Result<()> {
    if json {
        return print_json(r);
    }
    say!(
        "{} {} {} (sha256:{})",
        r.action,
        r.plugin,
        r.version,
        &r.digest[..12.min(r.digest.len())]
    );
    say!("  stable  {}", r.stable);
    match &r.canary {
        Some((c, w)) => say!("  canary  {c} at {w}%"),
        None => say!("  canary  none"),
    }
    if let Some((s, share)) = &r.shadow {
        say!("  shadow  {s} mirroring {share}% of live calls");
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct DeployArgs {
    /// The capability manifest (.toml).
    manifest: PathBuf,
    /// The component (.wasm).
    component: PathBuf,
    /// Deploy as a canary receiving this percentage of calls (1-100).
    #[arg(long, value_name = "PERCENT", conflicts_with = "shadow")]
    canary: Option<u8>,
    /// Deploy as a shadow: it gets a copy of live calls after they
    /// answered, runs without effects, and its answers are compared with
    /// the live ones (see `status`).
    #[arg(long)]
    shadow: bool,
    /// The percentage of live calls mirrored to the shadow (1-100).
    #[arg(
        long,
        value_name = "PERCENT",
        requires = "shadow",
        default_value_t = 100
    )]
    share: u8,
    /// Print the result as JSON (for scripts and CI).
    #[arg(long)]
    json: bool,
}

fn slot(args: &DeployArgs) -> evos::store::Slot {
    use evos::store::Slot;
    match (args.canary, args.shadow) {
        (Some(w), _) => Slot::Canary(w),
        (None, true) => Slot::Shadow(args.share),
        (None, false) => Slot::Stable,
    }
}

pub async fn deploy(cli: &Cli, args: &DeployArgs) -> Result<Exit> {
    let manifest = evos::Manifest::load(&args.manifest)?;
    let bytes = read_input(&args.component)?;
    let registry = open(cli)?;
    let what = args.component.display().to_string();
    match registry
        .deploy_to(manifest, &bytes, &what, slot(args), &actor())
        .await
    {
        Ok(report) => {
            print_change(&report, args.json)?;
            Ok(Exit::Success)
        }
        Err(
            e @ (evos::Error::NotGranted { .. }
            | evos::Error::WrongKind { .. }
            | evos::Error::Refused(_)
            | evos::Error::NotFound(_)),
        ) => {
            shout!("refused: {e}");
            shout!("nothing was changed");
            Ok(Exit::Negative)
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(clap::Args)]
pub struct PromoteArgs {
    /// The deployed plugin (its manifest name).
    plugin: String,
    /// Print the result as JSON (for scripts and CI).
    #[arg(long)]
    json: bool,
}

pub async fn promote(cli: &Cli, args: &PromoteArgs) -> Result<Exit> {
    let registry = open(cli)?;
    refusal_is_negative(registry.promote(&args.plugin, &actor()).await, args.json)
}

#[derive(clap::Args)]
pub struct RollbackArgs {
    /// The deployed plugin (its manifest name).
    plugin: String,
    /// A version (e.g. 1.0.0) or digest prefix (8+ hex digits) to restore.
    #[arg(long)]
    to: Option<String>,
    /// Reinstate a version even though the host rolled it back
    /// automatically (the refusal without it says why it was).
    #[arg(long)]
    force: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn rollback(cli: &Cli, args: &RollbackArgs) -> Result<Exit> {
    let registry = open(cli)?;
    refusal_is_negative(
        registry
            .rollback_with(&args.plugin, args.to.as_deref(), args.force, &actor())
            .await,
        args.json,
    )
}

fn refusal_is_negative(result: evos::Result<ChangeReport>, json: bool) -> Result<Exit> {
    match result {
        Ok(r) => {
            print_change(&r, json)?;
            Ok(Exit::Success)
        }
        Err(evos::Error::Refused(why) | evos::Error::NotFound(why)) => {
            shout!("refused: {why}");
            Ok(Exit::Negative)
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(clap::Args)]
pub struct StatusArgs {
    /// One plugin; all deployed plugins when left out.
    plugin: Option<String>,
    /// Print the result as JSON (for scripts and CI).
    #[arg(long)]
    json: bool,
}

pub fn status(cli: &Cli, args: &StatusArgs) -> Result<Exit> {
    let registry = open(cli)?;
    let status = registry.status(args.plugin.as_deref())?;
    if args.json {
        print_json(&status)?;
        return Ok(Exit::Success);
    }
    if status.is_empty() {
        say!("nothing deployed in {}", cli.data_dir.display());
    }
    for p in &status {
        say!("{} ({})", p.plugin, p.kind);
        for (role, v) in std::iter::once(("stable", &p.stable))
            .chain(p.canary.iter().map(|c| ("canary", c)))
            .chain(p.shadow.iter().map(|s| ("shadow", &s.version)))
        {
            let outcomes: Vec<String> =
                v.outcomes.iter().map(|(k, n)| format!("{k}={n}")).collect();
            say!(
                "  {role:<6} {:<8} sha256:{} {:>3}%  calls {:>6}  p50 {}us p95 {}us p99 {}us  {}",
                v.version,
                &v.digest[..12.min(v.digest.len())],
                v.weight,
                v.calls,
                v.p50_us,
                v.p95_us,
                v.p99_us,
                outcomes.join(" ")
            );
            if let Some(h) = &v.humans {
                let rate = h
                    .rate()
                    .map_or("-".into(), |r| format!("{:.1}%", r * 100.0));
                say!(
                    "         humans: agreement {rate} ({}/{} compared), {} labelled",
                    h.agreed,
                    h.compared,
                    h.labeled
                );
                for (classes, n) in &h.confusion {
                    say!("           {classes}: {n}");
                }
            }
            if let Some(d) = &v.drift {
                say!(
                    "         drift: reference {}/{}{}, window {}/{}, threshold {}: {}",
                    d.reference_calls,
                    d.reference_size,
                    if d.reference_pinned { " (pinned)" } else { "" },
                    d.window_calls,
                    d.window_size,
                    d.threshold,
                    if d.drifting {
                        format!(
                            "DRIFTING ({:.0}% of its decisions go to review)",
                            d.review_share * 100.0
                        )
                    } else {
                        "stable".into()
                    }
                );
                for f in &d.fields {
                    say!(
                        "           {} PSI {:.3}{}",
                        f.field,
                        f.psi,
                        f.ks.map(|k| format!(" KS {k:.3}")).unwrap_or_default()
                    );
                }
            }
        }
        if let Some(r) = &p.rollout {
            say!(
                "  rollout of {}: step {} of {} ({}) since {}; {}",
                r.version,
                r.step,
                r.steps,
                r.slot,
                r.since,
                r.next
            );
            for g in &r.gates {
                let state = match g.passed {
                    Some(true) => "holds",
                    Some(false) => "FAILS",
                    None => "not judged",
                };
                let value = g.value.map_or("-".into(), |v| format!("{v:.4}"));
                say!(
                    "    {:<26} {value:>10}  threshold {:<8} {state}  ({})",
                    g.gate,
                    g.threshold,
                    g.note
                );
            }
        }
        for pair in p.shadow.iter().flat_map(|s| &s.agreement) {
            let a = &pair.agreement;
            let pct = |r: Option<f64>| r.map_or("-".into(), |r| format!("{:.1}%", r * 100.0));
            say!(
                "  shadow vs version {}: agreement {} ({}/{} compared), decision shift {} ({}/{}), shed {}, timed out {}",
                pair.live_version_id,
                pct(pair.agreement_rate),
                a.agreed,
                a.compared,
                pct(pair.decision_shift),
                a.shifted,
                a.classed,
                a.shed,
                a.timed_out
            );
            for (classes, n) in &a.confusion {
                say!("    {classes}: {n}");
            }
        }
    }
    Ok(Exit::Success)
}

#[derive(clap::Args)]
pub struct HistoryArgs {
    /// The deployed plugin (its manifest name).
    plugin: String,
    /// Print the result as JSON (for scripts and CI).
    #[arg(long)]
    json: bool,
}

pub fn history(cli: &Cli, args: &HistoryArgs) -> Result<Exit> {
    let store = super::open_store(cli)?;
    let rows = store.history(&args.plugin)?;
    if rows.is_empty() {
        anyhow::bail!(
            "no history for `{}` in {}",
            args.plugin,
            cli.data_dir.display()
        );
    }
    let mut versions = BTreeMap::new();
    for v in store.versions_of(&args.plugin)? {
        versions.insert(
            v.id,
            format!("{} ({})", v.version, &v.digest[..12.min(v.digest.len())]),
        );
    }
    let label = |id: Option<i64>| {
        id.and_then(|i| versions.get(&i).cloned())
            .unwrap_or_else(|| "-".into())
    };
    if args.json {
        print_json(&rows)?;
        return Ok(Exit::Success);
    }
    for h in rows {
        let mut canary = match h.canary_id {
            Some(_) => format!(" canary {} at {}%", label(h.canary_id), h.canary_weight),
            None => String::new(),
        };
        if h.shadow_id.is_some() {
            canary.push_str(&format!(
                " shadow {} at {}%",
                label(h.shadow_id),
                h.shadow_share
            ));
        }
        say!(
            "{}  {:<14} by {:<12} stable {}{canary}",
            h.at,
            h.action,
            h.actor,
            label(h.stable_id)
        );
        if let Some(reason) = h.detail.get("reason").and_then(|r| r.as_str()) {
            say!("    reason: {reason}");
        }
    }
    Ok(Exit::Success)
}

#[derive(clap::Args)]
pub struct CallArgs {
    /// The deployed plugin to call.
    plugin: String,
    /// JSON input for the plugin's kind (as for `invoke`), or a .jsonl file
    /// of inputs used in turn.
    #[arg(long)]
    input: PathBuf,
    /// How many calls to make.
    #[arg(long, default_value_t = 1)]
    times: u32,
    /// Routing key: the same key always reaches the same version.
    #[arg(long)]
    key: Option<String>,
    /// Print the result as JSON (for scripts and CI).
    #[arg(long)]
    json: bool,
}

pub async fn call(cli: &Cli, args: &CallArgs) -> Result<Exit> {
    let registry = open(cli)?;
    let route = registry.route(&args.plugin).ok_or_else(|| {
        anyhow::anyhow!(
            "`{}` is not deployed in {}",
            args.plugin,
            cli.data_dir.display()
        )
    })?;
    let kind = route.stable.plugin.kind();
    let raw = read_input(&args.input)?;
    let text = String::from_utf8(raw).context("the input is not UTF-8")?;
    let values: Vec<serde_json::Value> = if args.input.extension().is_some_and(|e| e == "jsonl") {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .with_context(|| format!("{} line {}", args.input.display(), i + 1))
            })
            .collect::<Result<_>>()?
    } else {
        vec![
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", args.input.display()))?,
        ]
    };
    if values.is_empty() {
        anyhow::bail!("{} holds no inputs", args.input.display());
    }
    let mut inputs = Vec::new();
    for v in &values {
        inputs.push(
            CallInput::from_json(kind, v.clone())
                .map_err(|e| anyhow::anyhow!("{}: {e}", args.input.display()))?,
        );
    }
    let mut by_version: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut last = None;
    let mut all_ok = true;
    for i in 0..args.times as usize {
        let input = inputs[i % inputs.len()].clone();
        let report = registry
            .call(&args.plugin, input, args.key.as_deref())
            .await?;
        all_ok &= report.outcome.is_ok();
        *by_version
            .entry(report.version.to_string())
            .or_default()
            .entry(report.outcome.name().to_string())
            .or_default() += 1;
        last = Some(report);
    }
    if !registry
        .drain_shadows(std::time::Duration::from_secs(60))
        .await
    {
        shout!(
            "some mirrored calls had not run on their shadow after 60s; their comparisons are lost"
        );
    }
    registry.tick_rollouts().await;
    registry.flush_stats()?;
    if args.times == 1
        && let Some(report) = &last
    {
        if args.json {
            print_json(report)?;
        } else {
            super::invoke::print_report(report, 0)?;
        }
    } else if args.json {
        print_json(&by_version)?;
    } else {
        for (version, outcomes) in &by_version {
            let o: Vec<String> = outcomes.iter().map(|(k, n)| format!("{k}={n}")).collect();
            say!("{} {version}: {}", args.plugin, o.join(" "));
        }
        let route = registry.route(&args.plugin);
        if let Some(r) = route {
            match &r.canary {
                Some((c, w)) => say!(
                    "now: stable {} + canary {} at {w}%",
                    r.stable.plugin.version(),
                    c.plugin.version()
                ),
                None => say!("now: stable {} (no canary)", r.stable.plugin.version()),
            }
        }
    }
    Ok(if all_ok {
        Exit::Success
    } else {
        Exit::Negative
    })
}

#[derive(clap::Subcommand)]
pub enum AuditCommand {
    /// Print audit entries.
    Log {
        /// Only entries at or after this time (RFC 3339) or this long ago (e.g. 1h).
        #[arg(long)]
        since: Option<String>,
        /// Print the result as JSON (for scripts and CI).
        #[arg(long)]
        json: bool,
    },
    /// Check the hash chain; exit 1 naming the first bad entry.
    Verify {
        /// Print the result as JSON (for scripts and CI).
        #[arg(long)]
        json: bool,
    },
}

pub fn audit(cli: &Cli, cmd: &AuditCommand) -> Result<Exit> {
    let store = super::open_store(cli)?;
    match cmd {
        AuditCommand::Log { since, json } => {
            let entries = store.audit_list(0, since.as_deref())?;
            if *json {
                print_json(&entries)?;
            } else {
                for e in entries {
                    let digest = e
                        .digest
                        .as_deref()
                        .map(|d| &d[..12.min(d.len())])
                        .unwrap_or("-");
                    say!(
                        "{:>5} {} {:<18} {:<14} by {:<14} {digest} {}",
                        e.seq,
                        e.at,
                        e.action,
                        e.subject,
                        e.actor,
                        e.detail
                    );
                }
            }
            Ok(Exit::Success)
        }
        AuditCommand::Verify { json } => {
            let v = store.audit_verify()?;
            if *json {
                print_json(&v)?;
            } else if v.intact && v.anchored {
                say!("intact: {} entries, chain and anchor agree", v.entries);
                if let Some(note) = &v.note {
                    say!("note: {note}");
                }
            } else if v.intact {
                say!(
                    "chain intact: {} entries, but there is no anchor file ({}): deleting the newest entries would not be detected",
                    v.entries,
                    store.dir().join("audit.anchor").display()
                );
                if let Some(note) = &v.note {
                    say!("note: {note}");
                }
            } else if let Some(p) = &v.problem {
                say!("TAMPERED at entry {}: {:?}: {}", p.seq, p.kind, p.message);
            }
            Ok(if v.intact {
                Exit::Success
            } else {
                Exit::Negative
            })
        }
    }
}
