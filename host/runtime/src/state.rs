//! The one store type: everything a call's `Store` owns.
//!
//! It holds the resource table, the WASI context, the memory limiter and
//! each capability's per-call state. Host functions reach their part through
//! small views (`WasiView`, `WasiHttpView`, [`crate::capability::Cap`]).

use std::sync::Arc;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;

use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::WasiHttpView;

use crate::capability::SharedRefusals as SocketRefusals;
use crate::capability::log::CapturedOutput;
use crate::capability::{
    CallContext, CallSetup, Cap, Capability, Descriptor, Grants, HasCapability, prepare_wasi,
};
use crate::runtime::Refusal;

/// The capabilities evos knows, in manifest order: one line each. From
/// this list come the store's per-call state of each capability, the
/// [`Views`] a store type gives host functions, and `capability::ALL`.
macro_rules! capabilities {
    ($($field:ident: $cap:ty),* $(,)?) => {
        /// Every capability's per-call state.
        pub(crate) struct CapabilityStates {
            $(pub(crate) $field: <$cap as Capability>::State,)*
        }

        impl CapabilityStates {
            pub(crate) fn new(call: &CallContext<'_>) -> CapabilityStates {
                CapabilityStates {
                    $($field: <$cap as Capability>::state(call),)*
                }
            }
        }

        $(
            impl HasCapability<$cap> for PluginState {
                fn capability(&mut self) -> Cap<'_, <$cap as Capability>::State> {
                    Cap {
                        state: &mut self.caps.$field,
                        refusals: &mut self.refusals,
                    }
                }
            }
        )*

        /// What a store type must give host functions for every capability
        /// to link against it: WASI's and wasi-http's views, and each
        /// capability's state with the call's refusals.
        pub trait Views: WasiView + WasiHttpView $(+ HasCapability<$cap>)* {}

        impl<T: WasiView + WasiHttpView $(+ HasCapability<$cap>)*> Views for T {}

        pub(crate) const ALL: &[Descriptor] = &[$(Descriptor::of::<$cap>(),)*];
    };
}

capabilities! {
    log: crate::capability::log::Log,
    kv: crate::capability::kv::Kv,
    models: crate::capability::models::Models,
    config: crate::capability::config::Config,
    http: crate::capability::http::Http,
    sockets: crate::capability::sockets::Sockets,
    files: crate::capability::files::Files,
    env: crate::capability::env::Env,
}

pub struct PluginState {
    pub(crate) wasi: LazyWasi,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: Limiter,
    pub(crate) refusals: Vec<Refusal>,
    /// A shadow call's suppressed effects; `None` for a live call.
    pub(crate) suppressed: Option<SocketRefusals>,
    pub(crate) caps: CapabilityStates,
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: self.wasi.get(&mut self.refusals),
            table: &mut self.table,
        }
    }
}

/// The call's WASI context, built on the guest's first WASI call: building
/// one (seeding its random generators, opening granted directories) costs
/// more than a whole call of a plugin that never touches WASI.
pub(crate) struct LazyWasi {
    ctx: Option<WasiCtx>,
    grants: Arc<Grants>,
    capacity: usize,
    /// The guest's captured stdout and stderr, once the context exists.
    pub(crate) output: Option<(CapturedOutput, CapturedOutput)>,
    /// What the `sockets` address check refused during the call.
    pub(crate) socket_refusals: SocketRefusals,
    /// A shadow call's suppressed effects.
    shadow: Option<SocketRefusals>,
}

impl LazyWasi {
    /// `capacity`: bytes of stdout and of stderr kept per call.
    pub(crate) fn new(
        grants: Arc<Grants>,
        capacity: usize,
        shadow: Option<SocketRefusals>,
    ) -> Self {
        LazyWasi {
            ctx: None,
            grants,
            capacity,
            output: None,
            socket_refusals: SocketRefusals::default(),
            shadow,
        }
    }

    pub(crate) fn get(&mut self, refusals: &mut Vec<Refusal>) -> &mut WasiCtx {
        let LazyWasi {
            ctx,
            grants,
            capacity,
            output,
            socket_refusals,
            shadow,
        } = self;
        ctx.get_or_insert_with(|| {
            let (stdout, stderr) = output.get_or_insert_with(|| {
                (
                    CapturedOutput::new(*capacity),
                    CapturedOutput::new(*capacity),
                )
            });
            let base = || {
                let mut b = WasiCtxBuilder::new();
                b.stdout(stdout.clone()).stderr(stderr.clone());
                b
            };
            let mut builder = base();
            match prepare_wasi(
                grants,
                &mut CallSetup {
                    wasi: &mut builder,
                    socket_refusals,
                    shadow: shadow.as_ref(),
                },
            ) {
                Ok(()) => builder.build(),
                Err(e) => {
                    // A granted directory that cannot be opened now: the
                    // call goes on without the grants, and says why.
                    refusals.push(Refusal {
                        capability: "files".into(),
                        detail: format!("preparing the call's WASI context failed: {e}"),
                        count: 1,
                    });
                    base().build()
                }
            }
        })
    }
}

/// Caps the whole instance's linear memory (all memories together) and its
/// tables. Guards the host against a plugin exhausting memory. A refused
/// growth is remembered so the outcome says out-of-memory rather than the
/// trap the guest's allocator turns it into.
#[derive(Debug)]
pub(crate) struct Limiter {
    pub max_memory: usize,
    pub used_memory: usize,
    pub max_table_elements: usize,
    pub refused: Option<String>,
}

impl Limiter {
    pub fn new(max_memory: usize) -> Limiter {
        Limiter {
            max_memory,
            used_memory: 0,
            max_table_elements: 100_000,
            refused: None,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grow = desired.saturating_sub(current);
        let total = self.used_memory.saturating_add(grow);
        if total > self.max_memory {
            self.refused = Some(format!(
                "memory growth to {} bytes refused: the manifest allows {} bytes",
                total, self.max_memory
            ));
            return Ok(false);
        }
        self.used_memory = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.max_table_elements)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.refused
            .get_or_insert_with(|| format!("memory growth failed: {error}"));
        Ok(())
    }
}
