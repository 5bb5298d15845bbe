//! The library's error type. Every variant carries the context a person needs
//! to fix the problem (which file, which plugin, which import, which grant).
//! Errors a guest sees are WIT `error` values, not these; a guest trap is an
//! [`Outcome`](crate::Outcome), not an error of the host.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A manifest could not be read, parsed or validated.
    #[error("{path}: {message}")]
    Manifest { path: String, message: String },

    /// An app file (evos.toml) could not be read, parsed or validated.
    #[error("{path}: {message}")]
    App { path: String, message: String },

    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The bytes are not a WebAssembly component evos can run.
    #[error("{what}: {message}")]
    InvalidComponent { what: String, message: String },

    /// The component imports something its manifest does not grant (or that
    /// evos cannot provide). The message names the import and the fix.
    #[error("plugin `{plugin}` cannot be linked:\n{}", problems.join("\n"))]
    NotGranted {
        plugin: String,
        problems: Vec<String>,
    },

    /// The component does not export what its manifest's kind requires.
    #[error(
        "plugin `{plugin}` is declared `kind = \"{kind}\"` but the component does not export `{export}`; build it against the `evos:plugin/{kind}` world or fix `kind` in the manifest"
    )]
    WrongKind {
        plugin: String,
        kind: String,
        export: String,
    },

    /// The input given to a call does not fit the plugin's kind.
    #[error("invalid input for `{plugin}` ({kind}): {message}")]
    Input {
        plugin: String,
        kind: String,
        message: String,
    },

    /// No plugin of that name is loaded.
    #[error("no plugin named `{0}` is loaded")]
    UnknownPlugin(String),

    /// The data directory's database failed or holds something unexpected.
    #[error("{context}: {message}")]
    Store { context: String, message: String },

    /// The audit log could not be read or written (the control plane's
    /// `AuditError`, converted where it is defined).
    #[error("audit log: {0}")]
    Audit(#[source] Box<dyn std::error::Error + Send + Sync>),

    /// A control-plane request that cannot be carried out as asked (no
    /// canary to promote, an unknown version to roll back to, ...).
    #[error("{0}")]
    Refused(String),

    /// Wasmtime failed while compiling or linking (not a guest trap).
    #[error("{context}: {message}")]
    Wasmtime { context: String, message: String },
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn wasmtime(context: impl Into<String>, err: impl std::fmt::Display) -> Self {
        Error::Wasmtime {
            context: context.into(),
            message: format!("{err:#}"),
        }
    }
}
