//! What a component can reach, read from the component itself, and how that
//! compares with what its manifest grants.
//!
//! `inspect` lists a component's real imports and exports without compiling
//! it. `check` answers the security reviewer's question — "what can this
//! component reach?" — by classifying every import: baseline WASI (always
//! linked, inert unless granted), a capability (linked only when granted), or
//! something evos never provides. An ungranted privileged import is an
//! error naming the import and the manifest line that would grant it; a grant
//! the component cannot use is an over-grant warning.

use serde::Serialize;
use sha2::{Digest, Sha256};
use wasmparser::{Encoding, Parser, Payload};

use crate::capability::{self, Descriptor};
use crate::manifest::Manifest;
use crate::{Error, Result};

/// A component's identity and interface.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// sha256 of the bytes, hex.
    pub digest: String,
    pub size: u64,
    /// Import names as written in the component (with versions).
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

/// Refuse anything that is not a component, with a hint for the usual
/// mistake (a core module).
pub fn ensure_component(bytes: &[u8], what: &str) -> Result<()> {
    let invalid = |message: String| Error::InvalidComponent {
        what: what.to_string(),
        message,
    };
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(invalid(
            "not a WebAssembly binary (no `\\0asm` header); build the plugin with `cargo xtask plugins`".into(),
        ));
    }
    match Parser::new(0).parse_all(bytes).next() {
        Some(Ok(Payload::Version { encoding: Encoding::Component, .. })) => Ok(()),
        Some(Ok(Payload::Version { encoding: Encoding::Module, .. })) => Err(invalid(
            "this is a core WebAssembly module, not a component; build for `--target wasm32-wasip2` (or wrap it with `wasm-tools component new`)".into(),
        )),
        Some(Err(e)) => Err(invalid(format!("malformed WebAssembly: {e}"))),
        _ => Err(invalid("malformed WebAssembly header".into())),
    }
}

/// List a component's imports and exports.
pub fn inspect(bytes: &[u8], what: &str) -> Result<Inspection> {
    ensure_component(bytes, what)?;
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| Error::InvalidComponent {
            what: what.to_string(),
            message: format!("malformed component: {e}"),
        })?;
        match payload {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    let import = import.map_err(|e| Error::InvalidComponent {
                        what: what.to_string(),
                        message: format!("malformed import section: {e}"),
                    })?;
                    imports.push(import.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    let export = export.map_err(|e| Error::InvalidComponent {
                        what: what.to_string(),
                        message: format!("malformed export section: {e}"),
                    })?;
                    exports.push(export.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(Inspection {
        digest: hex::encode(Sha256::digest(bytes)),
        size: bytes.len() as u64,
        imports,
        exports,
    })
}

/// The interface name without its version: `wasi:http/types@0.2.4` ->
/// `wasi:http/types`.
pub fn unversioned(name: &str) -> &str {
    name.split_once('@').map_or(name, |(n, _)| n)
}

/// One finding of `check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The import (for under-grants) or the grant (for over-grants).
    pub subject: String,
    /// The capability involved, if any.
    pub capability: Option<String>,
    pub message: String,
}

/// The component's imports against the manifest's grants.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub plugin: String,
    pub kind: String,
    pub digest: String,
    /// Imports that will not be linked: deploy is refused.
    pub under_granted: Vec<Finding>,
    /// Grants the component cannot use: warnings.
    pub over_granted: Vec<Finding>,
    /// Imports and the capability (or baseline) that provides each.
    pub reachable: Vec<Reach>,
    /// Whether the component exports its kind's interface.
    pub exports_kind: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Reach {
    pub import: String,
    pub provided_by: String,
    /// Linked so the component instantiates, but every use is refused and
    /// reported: the import reaches nothing.
    pub refused: bool,
}

impl CheckReport {
    /// Deployable: every import is linked and the kind's export is present.
    pub fn ok(&self) -> bool {
        self.under_granted.is_empty() && self.exports_kind
    }
}

fn capability_for(import: &str) -> Option<&'static Descriptor> {
    capability::ALL
        .iter()
        .find(|c| c.interfaces.contains(&import))
}

/// How to make an import of `cap` linkable: the grant to add, or, when the
/// plugin's kind can never have it, the world to build against instead.
fn grant_fix(manifest: &Manifest, cap: &Descriptor) -> String {
    let kind = manifest.kind();
    if let Some(why) = crate::manifest::never_granted(kind, cap.name) {
        return format!(
            "a {kind} plugin can never be granted `{}` ({why}); build the component against the `{kind}` world of evos's WIT, which does not import it",
            cap.name
        );
    }
    if cap.name == "config" {
        format!(
            "add a [config] table with the keys it reads (e.g. `limit = 1000`) to {}",
            manifest.origin
        )
    } else {
        format!(
            "add `{}` under [capabilities] at {}",
            cap.example,
            manifest.grant_location()
        )
    }
}

/// Compare `inspection` with `manifest`.
pub fn check(manifest: &Manifest, inspection: &Inspection) -> CheckReport {
    let mut under = Vec::new();
    let mut reachable = Vec::new();
    for import in &inspection.imports {
        let name = unversioned(import);
        if capability::TYPES.contains(&name) {
            continue;
        }
        if let Some(cap) = capability_for(name) {
            let granted = (cap.granted)(manifest);
            if cap.privileged && !granted && !cap.inert {
                under.push(Finding {
                    subject: import.clone(),
                    capability: Some(cap.name.to_string()),
                    message: format!(
                        "component imports `{import}` but {} grants no `{}`; {}",
                        manifest.origin,
                        cap.name,
                        grant_fix(manifest, cap)
                    ),
                });
            } else {
                let refused = (!granted && cap.privileged)
                    || capability::sockets::ALWAYS_REFUSED.contains(&name);
                reachable.push(Reach {
                    import: import.clone(),
                    refused,
                    provided_by: if !granted && cap.privileged {
                        format!("linked, every use refused (no `{}` grant)", cap.name)
                    } else if capability::sockets::ALWAYS_REFUSED.contains(&name) {
                        format!("{} grant (linked, every use refused)", cap.name)
                    } else if granted {
                        format!("{} grant", cap.name)
                    } else {
                        "baseline WASI (inert: nothing granted)".into()
                    },
                });
            }
        } else if capability::BASELINE.contains(&name) {
            reachable.push(Reach {
                import: import.clone(),
                provided_by: "baseline WASI".into(),
                refused: false,
            });
        } else if name
            == manifest
                .kind()
                .export_interface()
                .split('@')
                .next()
                .unwrap_or_default()
        {
            // Importing one's own kind's interface is harmless but unusual.
            continue;
        } else {
            under.push(Finding {
                subject: import.clone(),
                capability: None,
                message: format!(
                    "component imports `{import}`, which evos does not provide; plugins may import the evos:plugin host interfaces and WASI 0.2"
                ),
            });
        }
    }

    let mut over = Vec::new();
    let imported: Vec<&str> = inspection.imports.iter().map(|i| unversioned(i)).collect();
    for cap in capability::ALL {
        if (cap.granted)(manifest) && !cap.interfaces.iter().any(|i| imported.contains(i)) {
            over.push(Finding {
                subject: cap.name.to_string(),
                capability: Some(cap.name.to_string()),
                message: format!(
                    "{} grants `{}` but the component never imports {}; remove the grant",
                    manifest.origin,
                    cap.name,
                    cap.interfaces
                        .iter()
                        .map(|i| format!("`{i}`"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            });
        }
    }

    let export = manifest.kind().export_interface();
    let exports_kind = inspection
        .exports
        .iter()
        .any(|e| unversioned(e) == unversioned(export));

    CheckReport {
        plugin: manifest.name().to_string(),
        kind: manifest.kind().to_string(),
        digest: inspection.digest.clone(),
        under_granted: under,
        over_granted: over,
        reachable,
        exports_kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_modules_and_garbage_are_refused_with_a_hint() {
        let core = b"\0asm\x01\0\0\0";
        let e = ensure_component(core, "x.wasm").unwrap_err().to_string();
        assert!(
            e.contains("core WebAssembly module") && e.contains("wasm32-wasip2"),
            "{e}"
        );
        let e = ensure_component(b"hello world!", "x.wasm")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a WebAssembly binary"), "{e}");
    }

    fn manifest(kind: &str) -> Manifest {
        Manifest::parse(
            &format!("[plugin]\nname = \"p\"\nkind = \"{kind}\"\nversion = \"1.0.0\"\n[capabilities]\nlog = true\n"),
            "p.toml",
            std::path::Path::new("/"),
        )
        .unwrap()
    }

    fn inspection(imports: &[&str]) -> Inspection {
        Inspection {
            digest: String::new(),
            size: 0,
            imports: imports.iter().map(|i| i.to_string()).collect(),
            exports: Vec::new(),
        }
    }

    #[test]
    fn runtime_imports_without_a_grant_are_listed_inert_and_hints_respect_the_kind() {
        let imports = inspection(&[
            "evos:plugin/log@0.1.0",
            "evos:plugin/kv@0.1.0",
            "wasi:sockets/tcp@0.2.9",
            "wasi:http/outgoing-handler@0.2.10",
        ]);
        let policy = check(&manifest("policy"), &imports);
        let [kv] = policy.under_granted.as_slice() else {
            panic!("{:?}", policy.under_granted);
        };
        assert!(
            kv.message
                .contains("a policy plugin can never be granted `kv`")
                && kv.message.contains("the `policy` world")
                && !kv.message.contains("add `kv"),
            "{}",
            kv.message
        );
        let refused: Vec<&str> = policy
            .reachable
            .iter()
            .filter(|r| r.refused)
            .map(|r| r.import.as_str())
            .collect();
        assert_eq!(
            refused,
            [
                "wasi:sockets/tcp@0.2.9",
                "wasi:http/outgoing-handler@0.2.10"
            ]
        );
        let agent = check(&manifest("agent"), &imports);
        let [kv] = agent.under_granted.as_slice() else {
            panic!("{:?}", agent.under_granted);
        };
        assert!(kv.message.contains("add `kv = {"), "{}", kv.message);
    }

    #[test]
    fn versions_are_stripped() {
        assert_eq!(unversioned("wasi:http/types@0.2.4"), "wasi:http/types");
        assert_eq!(unversioned("evos:plugin/kv"), "evos:plugin/kv");
    }
}
