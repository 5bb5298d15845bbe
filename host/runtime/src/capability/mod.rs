//! Capabilities: one module per thing a plugin may reach, all with one shape.
//!
//! Each capability module implements [`Capability`]:
//! - `granted` reads its part of the (already validated) manifest;
//! - `link` adds its bindings to a plugin's linker — called **only when
//!   granted**, so an ungranted import of a privileged interface fails at link
//!   time by construction, not by a check someone must remember. It is
//!   generic over the store's data type: any `T` that gives host functions
//!   the capability's view ([`Views`]);
//! - `state` builds its per-call state from values computed once at load
//!   ([`Grants`]) when a call's `Store` is created;
//! - `prepare_wasi` refines the call's baseline WASI context (env, files,
//!   sockets).
//!
//! Host functions see their own state plus the call's list of refusals
//! through [`Cap`], so every refused use (a quota, a denied URL, a dropped log
//! line) reaches the call's report even when the guest handles the error.
//! Adding a capability is one module implementing the trait and one line in
//! `crate::state`'s list of capabilities, which generates the store's
//! fields, the views and [`ALL`].
//!
//! Baseline WASI (io, clocks, random, cli, filesystem types and preopens) is
//! always linked but inert unless granted: no preopens, an empty environment,
//! stdin empty and stdout/stderr captured. `env` and `files` fill those in.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;

use wasmtime::component::{HasData, Linker};
use wasmtime_wasi::WasiCtxBuilder;

use crate::manifest::Manifest;
use crate::runtime::Refusal;
use crate::state::PluginState;
pub use crate::state::Views;
use crate::{Error, Result};

pub mod config;
pub mod egress;
pub mod env;
pub mod files;
pub mod http;
pub mod kv;
pub mod log;
pub mod models;
pub mod pool;
pub mod sockets;

/// The shape every capability shares.
pub trait Capability: Sized + 'static {
    /// The manifest key that grants it (`[capabilities] <name>`, or `[config]`).
    const NAME: &'static str;
    /// Imports (interface names without version) this capability provides.
    const INTERFACES: &'static [&'static str];
    /// Privileged interfaces are linked only when granted. Non-privileged
    /// ones (env, files) refine baseline WASI that is always linked.
    const PRIVILEGED: bool;
    /// A grant to suggest when a component needs it and the manifest lacks it.
    const EXAMPLE: &'static str;
    /// What one call holds of this capability (`()` for capabilities that
    /// only refine WASI).
    type State: Send + 'static;

    /// Whether the manifest grants this capability.
    fn granted(manifest: &Manifest) -> bool;

    /// Add the capability's bindings to `linker`; called only when granted.
    fn link<T: Views>(_linker: &mut Linker<T>) -> Result<()> {
        Ok(())
    }

    /// Whether its interfaces are linked without a grant too, inert: every
    /// use refused and reported. For standard interfaces language runtimes
    /// (Python's, JavaScript's) import whether or not the plugin uses them.
    const INERT: bool = false;

    /// Add the inert bindings; called only when `INERT` and not granted.
    fn link_inert<T: Views>(_linker: &mut Linker<T>) -> Result<()> {
        Ok(())
    }

    /// The per-call state.
    fn state(call: &CallContext<'_>) -> Self::State;

    /// Refine the call's WASI context (run when the guest first uses WASI).
    fn prepare_wasi(_grants: &Grants, _setup: &mut CallSetup<'_>) -> Result<()> {
        Ok(())
    }
}

/// Store data whose host functions see capability `C`'s state.
pub trait HasCapability<C: Capability>: Send + 'static {
    fn capability(&mut self) -> Cap<'_, C::State>;
}

/// What a call's capability states are built from.
pub struct CallContext<'a> {
    pub(crate) grants: &'a Grants,
    pub(crate) kv: &'a Arc<dyn kv::KvStore>,
    pub(crate) egress: &'a pool::Pool,
    pub(crate) runtime: &'a crate::runtime::Runtime,
    /// Who resolves the names the plugin calls (`models`), if not the
    /// runtime's registered plugins.
    pub(crate) router: Option<std::sync::Arc<dyn crate::runtime::Router>>,
    /// How deep in nested calls (an agent's model calls) this call is.
    pub(crate) depth: u32,
    /// For a shadow call, where suppressed effects are recorded: its kv
    /// writes stay in a per-call overlay, outgoing requests and
    /// connections are not made, granted directories are read-only, and
    /// its model calls are shadow calls too.
    pub(crate) shadow: Option<&'a SharedRefusals>,
}

/// A capability as data, for the checks that go over all of them
/// (`inspect`, linking, preparing WASI).
pub struct Descriptor {
    pub name: &'static str,
    pub interfaces: &'static [&'static str],
    pub privileged: bool,
    pub example: &'static str,
    pub granted: fn(&Manifest) -> bool,
    /// Add bindings to the linker; called only when granted.
    pub link: fn(&mut Linker<PluginState>) -> Result<()>,
    /// Linked inert (every use refused) when not granted.
    pub inert: bool,
    pub link_inert: fn(&mut Linker<PluginState>) -> Result<()>,
    pub prepare_wasi: fn(&Grants, &mut CallSetup<'_>) -> Result<()>,
}

impl Descriptor {
    /// The descriptor of capability `C` for the host's store type.
    pub const fn of<C: Capability>() -> Descriptor {
        Descriptor {
            name: C::NAME,
            interfaces: C::INTERFACES,
            privileged: C::PRIVILEGED,
            example: C::EXAMPLE,
            granted: C::granted,
            link: C::link::<PluginState>,
            inert: C::INERT,
            link_inert: C::link_inert::<PluginState>,
            prepare_wasi: C::prepare_wasi,
        }
    }
}

/// Every capability evos knows, in manifest order.
pub const ALL: &[Descriptor] = crate::state::ALL;

/// Baseline WASI interfaces: always linked, inert unless `env`/`files` grant
/// something.
pub const BASELINE: &[&str] = &[
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:cli/exit",
    "wasi:cli/environment",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
];

/// Interfaces implied by the contract's shared types; harmless to import.
pub const TYPES: &[&str] = &["evos:plugin/types"];

/// Values derived from a manifest once, at load, so each call only clones
/// `Arc`s.
#[derive(Debug, Clone)]
pub struct Grants {
    pub plugin: Arc<str>,
    pub kind: evos_core::Kind,
    pub log: Option<log::LogGrant>,
    pub log_rate: Arc<log::LogRate>,
    pub kv: Option<kv::KvGrant>,
    pub models: Arc<[String]>,
    pub config: Arc<BTreeMap<String, String>>,
    pub http: Arc<http::Allowlist>,
    pub sockets: Arc<sockets::SocketPolicy>,
    pub env: Vec<(String, String)>,
    pub files: Vec<files::FileGrant>,
}

impl Grants {
    pub fn new(manifest: &Manifest, host_env: &BTreeMap<String, String>) -> Grants {
        let caps = &manifest.capabilities;
        Grants {
            plugin: Arc::from(manifest.name()),
            kind: manifest.kind(),
            log: caps.log,
            log_rate: Arc::new(log::LogRate::new(&caps.log.unwrap_or_default())),
            kv: caps.kv,
            models: caps.models.iter().map(|m| m.to_string()).collect(),
            config: Arc::new(manifest.config.clone()),
            http: Arc::new(http::Allowlist::new(caps.http.clone())),
            sockets: Arc::new(sockets::SocketPolicy::new(caps.sockets.clone())),
            env: env::resolve(&caps.env, host_env),
            files: caps.files.clone(),
        }
    }
}

/// Build a linker holding baseline WASI plus exactly the granted
/// capabilities, and the inert form of the ones a language runtime imports
/// anyway.
pub(crate) fn linker_for(
    engine: &wasmtime::Engine,
    manifest: &Manifest,
) -> Result<Linker<PluginState>> {
    let mut linker = Linker::new(engine);
    add_baseline_wasi(&mut linker).map_err(|e| Error::wasmtime("linking baseline WASI", e))?;
    for cap in ALL {
        if cap.privileged && (cap.granted)(manifest) {
            (cap.link)(&mut linker)?;
        } else if cap.inert {
            (cap.link_inert)(&mut linker)?;
        }
    }
    Ok(linker)
}

/// Per-call inputs every `prepare` may fill.
pub struct CallSetup<'a> {
    pub wasi: &'a mut WasiCtxBuilder,
    /// Where the `sockets` address check records what it refuses.
    pub socket_refusals: &'a SharedRefusals,
    /// For a shadow call, where suppressed connections are recorded.
    pub shadow: Option<&'a SharedRefusals>,
}

/// Configure the call's WASI context: each capability's refinement of
/// baseline WASI.
pub(crate) fn prepare_wasi(grants: &Grants, setup: &mut CallSetup<'_>) -> Result<()> {
    for cap in ALL {
        (cap.prepare_wasi)(grants, setup)?;
    }
    Ok(())
}

/// What a host function of capability state `S` sees: its own state and the
/// call's refusals.
pub struct Cap<'a, S> {
    pub state: &'a mut S,
    pub refusals: &'a mut Vec<Refusal>,
}

impl<S> Cap<'_, S> {
    pub(crate) fn refuse(&mut self, capability: &str, detail: impl Into<String>) {
        record_refusal(self.refusals, capability, detail.into());
    }
}

/// Refusals kept per list: a plugin hammering a refused capability must not
/// grow host memory without bound, so the first ones are kept and the rest
/// counted on the last.
const MAX_REFUSALS: usize = 64;

/// Why using capability `name` is refused when the manifest does not grant
/// it, with the fix when there is one: the grant to add, or, for a kind
/// that can never have it, that it cannot.
pub(crate) fn not_granted(kind: evos_core::Kind, name: &str) -> String {
    match crate::manifest::never_granted(kind, name) {
        Some(why) => format!("a {kind} plugin can never be granted `{name}`: {why}"),
        None => {
            let example = ALL
                .iter()
                .find(|c| c.name == name)
                .map_or("", |c| c.example);
            format!(
                "the manifest grants no `{name}`; add `{example}` under [capabilities] to allow it"
            )
        }
    }
}

/// Add a refusal to a call's list, within [`MAX_REFUSALS`].
pub(crate) fn record_refusal(list: &mut Vec<Refusal>, capability: &str, detail: String) {
    if list.len() < MAX_REFUSALS {
        list.push(Refusal {
            capability: capability.to_string(),
            detail,
            count: 1,
        });
    } else if let Some(last) = list.last_mut() {
        last.count += 1;
    }
}

/// A call's refusals, shared with work that runs outside any host call's
/// view of the store (an HTTP body cut at its size cap after
/// `send_request` returned, a socket connect's address check).
#[derive(Debug, Clone, Default)]
pub struct SharedRefusals(Arc<std::sync::Mutex<Vec<Refusal>>>);

impl SharedRefusals {
    pub(crate) fn push(&self, capability: &str, detail: String) {
        let mut list = evos_core::sync::lock(&self.0);
        record_refusal(&mut list, capability, detail);
    }

    /// The refusals so far; the list is left empty.
    pub(crate) fn take(&self) -> Vec<Refusal> {
        std::mem::take(&mut *evos_core::sync::lock(&self.0))
    }
}

/// `HasData` projection for [`Cap`].
pub struct HasCap<S>(PhantomData<S>);

impl<S: Send + 'static> HasData for HasCap<S> {
    type Data<'a> = Cap<'a, S>;
}

/// `HasData` projection giving wasi-io the resource table.
struct HasIo;

impl HasData for HasIo {
    type Data<'a> = &'a mut wasmtime::component::ResourceTable;
}

/// Baseline WASI: io, clocks, random, cli, filesystem. Sockets only through
/// a `sockets` grant ([`sockets`]).
fn add_baseline_wasi(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::cli::{WasiCli, WasiCliView as _};
    use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView as _};
    use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView as _};
    use wasmtime_wasi::p2::bindings;
    use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, random};
    use wasmtime_wasi::random::WasiRandom;
    type T = PluginState;

    let l = linker;
    wasmtime_wasi_io::bindings::wasi::io::error::add_to_linker::<T, HasIo>(l, |t| &mut t.table)?;
    wasmtime_wasi_io::bindings::wasi::io::poll::add_to_linker::<T, HasIo>(l, |t| &mut t.table)?;
    wasmtime_wasi_io::bindings::wasi::io::streams::add_to_linker::<T, HasIo>(l, |t| &mut t.table)?;
    clocks::wall_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    clocks::monotonic_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    random::random::add_to_linker::<T, WasiRandom>(l, |t| t.wasi.get(&mut t.refusals).random())?;
    random::insecure::add_to_linker::<T, WasiRandom>(l, |t| t.wasi.get(&mut t.refusals).random())?;
    random::insecure_seed::add_to_linker::<T, WasiRandom>(l, |t| {
        t.wasi.get(&mut t.refusals).random()
    })?;
    cli::exit::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::environment::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_input::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_output::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    filesystem::preopens::add_to_linker::<T, WasiFilesystem>(l, T::filesystem)?;
    bindings::filesystem::types::add_to_linker::<T, WasiFilesystem>(l, T::filesystem)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_interface_belongs_to_one_capability_and_names_are_unique() {
        let mut names = std::collections::BTreeSet::new();
        let mut interfaces = std::collections::BTreeMap::new();
        for cap in ALL {
            assert!(names.insert(cap.name), "{} listed twice", cap.name);
            assert!(!cap.example.is_empty(), "{} has no example grant", cap.name);
            for i in cap.interfaces {
                if let Some(other) = interfaces.insert(*i, cap.name) {
                    panic!("{i} is provided by both {other} and {}", cap.name);
                }
                assert!(!BASELINE.contains(i) || !cap.privileged, "{i}");
            }
        }
        assert_eq!(
            names.len(),
            8,
            "log, kv, models, config, http, sockets, files, env"
        );
    }

    #[test]
    fn a_capability_links_into_a_linker_only_when_its_manifest_grants_it() {
        let engine = wasmtime::Engine::default();
        let manifest = |caps: &str| {
            Manifest::parse(
                &format!("[plugin]\nname = \"x\"\nkind = \"agent\"\nversion = \"1.0.0\"\n[capabilities]\n{caps}\n"),
                "x.toml",
                std::path::Path::new("/"),
            )
            .unwrap()
        };
        // Linking twice what is linked once is an error in wasmtime: a
        // second `log` link fails exactly when the first one happened.
        let granted = manifest("log = true");
        let mut linker = linker_for(&engine, &granted).unwrap();
        assert!((Descriptor::of::<log::Log>().link)(&mut linker).is_err());
        let not_granted = manifest("kv = {}");
        let mut linker = linker_for(&engine, &not_granted).unwrap();
        assert!((Descriptor::of::<log::Log>().link)(&mut linker).is_ok());
    }

    #[test]
    fn a_missing_grant_is_explained_by_what_the_kind_may_have() {
        use evos_core::Kind;
        let policy = not_granted(Kind::Policy, "sockets");
        assert!(
            policy.contains("a policy plugin can never be granted `sockets`")
                && !policy.contains("add"),
            "{policy}"
        );
        let agent = not_granted(Kind::Agent, "http");
        assert!(
            agent.contains("grants no `http`") && agent.contains("add `http = ["),
            "{agent}"
        );
    }

    #[test]
    fn refusals_are_capped_and_taken() {
        let r = SharedRefusals::default();
        for i in 0..100 {
            r.push("http", format!("r{i}"));
        }
        let list = r.take();
        assert_eq!(list.len(), MAX_REFUSALS);
        assert_eq!(list[MAX_REFUSALS - 1].count, 37);
        assert!(r.take().is_empty());
    }
}
