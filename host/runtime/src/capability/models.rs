//! `models`: an agent asks the host to run a named model adapter.
//!
//! The host, not the agent, resolves the name to a loaded model-adapter
//! plugin, runs it in its own sandbox with its own limits, and returns the
//! answer. Only adapters listed in the agent's manifest can be reached;
//! anything else is refused and reported. The adapter's call report is kept
//! inside the agent's report, so usage and failures are accounted per call.

use std::sync::Arc;

use wasmtime::component::Linker;

use super::{CallContext, Cap, Capability, HasCap, HasCapability, Views};
use crate::bindings::evos::plugin::models::{Host, add_to_linker};
use crate::bindings::evos::plugin::types as wit;
use crate::manifest::{Kind, Manifest};
use crate::runtime::{CallInput, CallOutput, CallReport, Outcome, Router, Runtime};
use crate::{Error, Result};

/// The `models` capability.
pub struct Models;

impl Capability for Models {
    const NAME: &'static str = "models";
    const INTERFACES: &'static [&'static str] = &["evos:plugin/models"];
    const PRIVILEGED: bool = true;
    const EXAMPLE: &'static str = "models = [\"<model-adapter name>\"]";
    type State = ModelsState;

    fn granted(m: &Manifest) -> bool {
        !m.capabilities.models.is_empty()
    }

    fn link<T: Views>(linker: &mut Linker<T>) -> Result<()> {
        add_to_linker::<T, HasCap<ModelsState>>(linker, HasCapability::<Models>::capability)
            .map_err(|e| Error::wasmtime("linking evos:plugin/models", e))
    }

    fn state(call: &CallContext<'_>) -> ModelsState {
        let mut state =
            ModelsState::new(call.grants, call.runtime, call.router.clone(), call.depth);
        state.shadow = call.shadow.is_some();
        state
    }
}

/// Deepest chain of nested plugin calls. Model adapters cannot import
/// `models`, so real chains have depth 1; the bound is defence in depth.
const MAX_DEPTH: u32 = 4;

/// Per-call models state.
#[derive(Default)]
pub struct ModelsState {
    pub(crate) allowed: Arc<[String]>,
    pub(crate) runtime: Option<Runtime>,
    pub(crate) router: Option<Arc<dyn Router>>,
    pub(crate) depth: u32,
    /// Whether the calling plugin runs as a shadow: its model calls are
    /// shadow calls of the live model versions, kept out of their stats.
    pub(crate) shadow: bool,
    pub(crate) nested: Vec<CallReport>,
}

impl ModelsState {
    pub(crate) fn new(
        grants: &super::Grants,
        runtime: &Runtime,
        router: Option<Arc<dyn Router>>,
        depth: u32,
    ) -> ModelsState {
        ModelsState {
            allowed: grants.models.clone(),
            runtime: Some(runtime.clone()),
            router,
            depth,
            shadow: false,
            nested: Vec::new(),
        }
    }
}

impl Host for Cap<'_, ModelsState> {
    async fn infer(
        &mut self,
        model: String,
        request: wit::ModelRequestResult,
    ) -> std::result::Result<wit::ModelResponse, wit::Error> {
        if !self.state.allowed.contains(&model) {
            self.refuse(
                "models",
                format!("model `{model}` is not listed in the manifest's `models` grant"),
            );
            return Err(wit::Error::Denied(format!(
                "model `{model}` is not granted"
            )));
        }
        let Some(runtime) = self.state.runtime.clone() else {
            return Err(wit::Error::Internal(
                "no runtime to route model calls".into(),
            ));
        };
        if self.state.depth >= MAX_DEPTH {
            self.refuse("models", format!("call depth limit {MAX_DEPTH} reached"));
            return Err(wit::Error::Denied("model call nesting too deep".into()));
        }
        let Some(routed) = runtime.resolve(&model, self.state.router.as_ref()) else {
            return Err(wit::Error::NotFound(format!(
                "no model adapter `{model}` is loaded"
            )));
        };
        let adapter = routed.plugin;
        if adapter.kind() != Kind::ModelAdapter {
            return Err(wit::Error::NotFound(format!(
                "`{model}` is a {} plugin, not a model adapter",
                adapter.kind()
            )));
        }
        let input = CallInput::Infer(request.into());
        let mirror = routed.mirror.filter(|_| !self.state.shadow);
        let copy = mirror.as_ref().map(|_| input.clone());
        let report = Box::pin(runtime.call_nested(
            &adapter,
            input,
            self.state.depth + 1,
            self.state.router.clone(),
            self.state.shadow,
        ))
        .await;
        if !self.state.shadow {
            (routed.on_done)(&report);
        }
        if let (Some(mirror), Some(input)) = (mirror, copy) {
            mirror(input, &report);
        }
        let answer = match (&report.outcome, &report.output) {
            (Outcome::Ok, Some(CallOutput::Model(resp))) => {
                Ok(wit::ModelResponse::from(resp.clone()))
            }
            (Outcome::GuestError { error }, _) => Err(wit::Error::Upstream(format!(
                "model `{model}` answered with an error: {error}"
            ))),
            (outcome, _) => Err(wit::Error::Upstream(format!(
                "model `{model}` failed: {}",
                outcome.summary()
            ))),
        };
        self.state.nested.push(report);
        answer
    }
}
