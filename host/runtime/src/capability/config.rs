//! `config`: read-only values from the manifest's `[config]` table.
//!
//! A plugin sees exactly the keys its manifest lists, nothing from the host's
//! own configuration or environment. The grant is the table itself: a
//! component importing `config` needs a `[config]` table.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::Linker;

use super::{CallContext, Cap, Capability, HasCap, HasCapability, Views};
use crate::bindings::evos::plugin::config::{Host, add_to_linker};
use crate::manifest::Manifest;
use crate::{Error, Result};

/// The `config` capability.
pub struct Config;

impl Capability for Config {
    const NAME: &'static str = "config";
    const INTERFACES: &'static [&'static str] = &["evos:plugin/config"];
    const PRIVILEGED: bool = true;
    const EXAMPLE: &'static str = "[config] with the keys the plugin reads, e.g. `limit = 1000`";
    type State = ConfigState;

    fn granted(m: &Manifest) -> bool {
        !m.config.is_empty()
    }

    fn link<T: Views>(linker: &mut Linker<T>) -> Result<()> {
        add_to_linker::<T, HasCap<ConfigState>>(linker, HasCapability::<Config>::capability)
            .map_err(|e| Error::wasmtime("linking evos:plugin/config", e))
    }

    fn state(call: &CallContext<'_>) -> ConfigState {
        ConfigState::new(call.grants)
    }
}

/// Per-call config state: the manifest's values, shared.
#[derive(Debug, Default)]
pub struct ConfigState {
    pub(crate) values: Arc<BTreeMap<String, String>>,
}

impl ConfigState {
    pub(crate) fn new(grants: &super::Grants) -> ConfigState {
        ConfigState {
            values: grants.config.clone(),
        }
    }
}

impl Host for Cap<'_, ConfigState> {
    async fn get(&mut self, key: String) -> Option<String> {
        self.state.values.get(&key).cloned()
    }
}
