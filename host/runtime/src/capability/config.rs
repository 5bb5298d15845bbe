//! `config`: read-only values from the manifest's `[config]` table.
//!
//! A plugin sees exactly the keys its manifest lists, nothing from the host's
//! own configuration or environment. The grant is the table itself: a
//! component importing `config` needs a `[config]` table.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Cap, Descriptor, HasCap};
use crate::bindings::evos::plugin::config::{Host, add_to_linker};
use crate::manifest::Manifest;
use crate::state::PluginState;
use crate::{Error, Result};

pub const DESCRIPTOR: Descriptor = Descriptor {
    name: "config",
    interfaces: &["evos:plugin/config"],
    privileged: true,
    example: "[config] with the keys the plugin reads, e.g. `limit = 1000`",
    granted: |m: &Manifest| !m.config.is_empty(),
    link,
};

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

fn link(linker: &mut wasmtime::component::Linker<PluginState>) -> Result<()> {
    add_to_linker::<PluginState, HasCap<ConfigState>>(linker, |s| Cap {
        state: &mut s.config,
        refusals: &mut s.refusals,
    })
    .map_err(|e| Error::wasmtime("linking evos:plugin/config", e))
}
