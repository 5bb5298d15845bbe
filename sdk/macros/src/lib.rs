//! Export macros of `evos-sdk`.
//!
//! Each macro generates, inside the plugin crate, the export bindings of one
//! plugin world from the `evos:plugin` WIT package and wires them to the
//! plugin's implementation of the matching `evos-sdk` trait. Import bindings
//! (types, log, kv, models, config) are generated once in `evos-sdk` and reused
//! through wit-bindgen's `with`, so a plugin and the SDK agree on one set of
//! types. Use the re-exports in `evos-sdk` (`evos_sdk::export_agent!` etc.)
//! rather than this crate directly.

use proc_macro::TokenStream;

/// The WIT package the SDK was built against, found beside this crate.
const WIT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../wit");

struct World {
    name: &'static str,
    export_interface: &'static str,
    sdk_trait: &'static str,
    /// Host interfaces the world imports (besides `types`).
    imports: &'static [&'static str],
    /// `(function, parameters, argument names, result type)` per export.
    functions: &'static [(&'static str, &'static str, &'static str, &'static str)],
}

const AGENT: World = World {
    name: "agent",
    imports: &["log", "kv", "models", "config"],
    export_interface: "agent_api",
    sdk_trait: "Agent",
    functions: &[(
        "handle",
        "event: ::evos_sdk::Event",
        "event",
        "::core::result::Result<::std::vec::Vec<::evos_sdk::Action>, ::evos_sdk::Error>",
    )],
};

const CONNECTOR: World = World {
    name: "connector",
    imports: &["log", "kv", "config"],
    export_interface: "connector_api",
    sdk_trait: "Connector",
    functions: &[
        (
            "ingest",
            "raw: ::std::vec::Vec<u8>, content_type: ::std::string::String",
            "raw, content_type",
            "::core::result::Result<::std::vec::Vec<::evos_sdk::Event>, ::evos_sdk::Error>",
        ),
        (
            "execute",
            "action: ::evos_sdk::Action",
            "action",
            "::core::result::Result<::std::string::String, ::evos_sdk::Error>",
        ),
    ],
};

const MODEL_ADAPTER: World = World {
    name: "model-adapter",
    imports: &["log", "config"],
    export_interface: "model_adapter_api",
    sdk_trait: "ModelAdapter",
    functions: &[(
        "infer",
        "request: ::evos_sdk::ModelRequest",
        "request",
        "::core::result::Result<::evos_sdk::ModelResponse, ::evos_sdk::Error>",
    )],
};

const POLICY: World = World {
    name: "policy",
    imports: &["log", "config"],
    export_interface: "policy_api",
    sdk_trait: "Policy",
    functions: &[(
        "evaluate",
        "action: ::evos_sdk::Action, event: ::evos_sdk::Event",
        "action, event",
        "::evos_sdk::Decision",
    )],
};

fn expand(world: &World, input: TokenStream) -> TokenStream {
    let ty = input.to_string();
    if ty.trim().is_empty() {
        return compile_error(&format!(
            "export_{}! needs the type that implements evos_sdk::{}, e.g. `export_{}!(MyPlugin);`",
            world.name.replace('-', "_"),
            world.sdk_trait,
            world.name.replace('-', "_"),
        ));
    }
    let methods: String = world
        .functions
        .iter()
        .map(|(name, params, args, ret)| {
            format!(
                "fn {name}({params}) -> {ret} {{ <{ty} as ::evos_sdk::{tr}>::{name}({args}) }}\n",
                tr = world.sdk_trait
            )
        })
        .collect();
    let with: String = world
        .imports
        .iter()
        .map(|i| format!("\"evos:plugin/{i}@0.1.0\": ::evos_sdk::__rt::{i},\n"))
        .collect();
    let code = format!(
        r#"
#[doc(hidden)]
#[allow(unsafe_code, unused_imports, clippy::all)]
mod __evos_plugin_export {{
    use super::*;
    ::evos_sdk::__rt::wit_bindgen::generate!({{
        world: "evos:plugin/{world}",
        path: {wit:?},
        runtime_path: "::evos_sdk::__rt::wit_bindgen::rt",
        with: {{
            "evos:plugin/types@0.1.0": ::evos_sdk::__rt::types,
            {with}
        }},
    }});
    impl exports::evos::plugin::{iface}::Guest for {ty} {{
        {methods}
    }}
    export!({ty});
}}
"#,
        world = world.name,
        wit = WIT_DIR,
        iface = world.export_interface,
        with = with,
    );
    match code.parse() {
        Ok(tokens) => tokens,
        Err(e) => compile_error(&format!("evos-sdk export macro produced invalid code: {e}")),
    }
}

fn compile_error(message: &str) -> TokenStream {
    format!("::core::compile_error!({message:?});")
        .parse()
        .unwrap_or_default()
}

/// Export a type implementing `evos_sdk::Agent` as the plugin's `agent` world.
#[proc_macro]
pub fn export_agent(input: TokenStream) -> TokenStream {
    expand(&AGENT, input)
}

/// Export a type implementing `evos_sdk::Connector` as the plugin's `connector` world.
#[proc_macro]
pub fn export_connector(input: TokenStream) -> TokenStream {
    expand(&CONNECTOR, input)
}

/// Export a type implementing `evos_sdk::ModelAdapter` as the plugin's `model-adapter` world.
#[proc_macro]
pub fn export_model_adapter(input: TokenStream) -> TokenStream {
    expand(&MODEL_ADAPTER, input)
}

/// Export a type implementing `evos_sdk::Policy` as the plugin's `policy` world.
#[proc_macro]
pub fn export_policy(input: TokenStream) -> TokenStream {
    expand(&POLICY, input)
}
