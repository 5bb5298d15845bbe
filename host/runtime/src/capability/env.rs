//! `env`: host environment variables a plugin may read.
//!
//! Baseline WASI always links `wasi:cli/environment`, but the environment is
//! empty unless the manifest names variables; only those pass, with the
//! values the host had when the plugin was loaded. The host's other variables
//! (credentials, paths) never reach a plugin.

use std::collections::BTreeMap;

use super::{CallContext, CallSetup, Capability, Grants};
use crate::Result;
use crate::manifest::{EnvName, Manifest};

/// The `env` capability: refines baseline WASI's environment.
pub struct Env;

impl Capability for Env {
    const NAME: &'static str = "env";
    const INTERFACES: &'static [&'static str] = &["wasi:cli/environment"];
    const PRIVILEGED: bool = false;
    const EXAMPLE: &'static str = "env = [\"REGION\"]";
    type State = ();

    fn granted(m: &Manifest) -> bool {
        !m.capabilities.env.is_empty()
    }

    fn state(_call: &CallContext<'_>) {}

    fn prepare_wasi(grants: &Grants, setup: &mut CallSetup<'_>) -> Result<()> {
        prepare(grants, setup);
        Ok(())
    }
}

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

fn prepare(grants: &Grants, setup: &mut CallSetup<'_>) {
    if !grants.env.is_empty() {
        setup.wasi.envs(&grants.env);
    }
}
