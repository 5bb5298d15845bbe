//! `env`: host environment variables a plugin may read.
//!
//! Baseline WASI always links `wasi:cli/environment`, but the environment is
//! empty unless the manifest names variables; only those pass, with the
//! values the host had when the plugin was loaded. The host's other variables
//! (credentials, paths) never reach a plugin.

use std::collections::BTreeMap;

use super::{CallSetup, Descriptor, Grants};
use crate::manifest::{EnvName, Manifest};

pub const DESCRIPTOR: Descriptor = Descriptor {
    name: "env",
    interfaces: &["wasi:cli/environment"],
    privileged: false,
    example: "env = [\"REGION\"]",
    granted: |m: &Manifest| !m.capabilities.env.is_empty(),
    link: |_| Ok(()),
};

/// The granted variables present in `host_env`, in manifest order.
pub(crate) fn resolve(
    names: &[EnvName],
    host_env: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    names
        .iter()
        .filter_map(|n| host_env.get(&n.0).map(|v| (n.0.clone(), v.clone())))
        .collect()
}

pub(crate) fn prepare(grants: &Grants, setup: &mut CallSetup<'_>) {
    if !grants.env.is_empty() {
        setup.wasi.envs(&grants.env);
    }
}
