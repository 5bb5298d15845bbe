//! The library's error type. Every variant carries the context a person needs
//! to fix the problem (which file, which plugin, which import, which grant).
//! Errors a guest sees are WIT `error` values, not these; a guest trap is an
//! [`Outcome`](crate::Outcome), not an error of the host.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The cause of an error from a layer `evos-core` does not know (SQLite, a
/// task runtime), kept whole so the cause chain reaches the log and the CLI.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

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
    #[error("{context}: {source}")]
    Store {
        context: String,
        #[source]
        source: Cause,
    },

    /// The host failed at something that is nobody's input (a task that
    /// panicked or was cancelled). Reaches API clients as a 500.
    #[error("{context}: {source}")]
    Internal {
        context: String,
        #[source]
        source: Cause,
    },

    /// The audit log could not be read or written (the control plane's
    /// `AuditError`, converted where it is defined).
    #[error("audit log: {0}")]
    Audit(#[source] Cause),

    /// A control-plane request that conflicts with the current state (no
    /// canary to promote, a review already decided, a deployment changed
    /// by another process, ...). Reaches API clients as a 409.
    #[error("{0}")]
    Refused(String),

    /// An event its source had already processed (a redelivered message):
    /// nothing was written.
    #[error("{0}")]
    Duplicate(String),

    /// What a request names does not exist (a review, a token, a version).
    /// Reaches API clients as a 404.
    #[error("{0}")]
    NotFound(String),

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

    /// A store failure while `context`; `source` is the database's error,
    /// or a sentence when there is none.
    pub fn store(context: impl Into<String>, source: impl Into<Cause>) -> Self {
        Error::Store {
            context: context.into(),
            source: source.into(),
        }
    }

    /// An internal failure while `context`.
    pub fn internal(context: impl Into<String>, source: impl Into<Cause>) -> Self {
        Error::Internal {
            context: context.into(),
            source: source.into(),
        }
    }

    pub fn wasmtime(context: impl Into<String>, err: impl std::fmt::Display) -> Self {
        Error::Wasmtime {
            context: context.into(),
            message: format!("{err:#}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_and_internal_errors_keep_their_cause() {
        let io = std::io::Error::other("disk on fire");
        let e = Error::store("writing stats", io);
        assert_eq!(e.to_string(), "writing stats: disk on fire");
        let cause = std::error::Error::source(&e).map(|c| c.to_string());
        assert_eq!(cause.as_deref(), Some("disk on fire"));
        let e = Error::internal("handling an event", "task cancelled");
        assert!(std::error::Error::source(&e).is_some());
    }
}
