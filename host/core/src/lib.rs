//! evos-core: the vocabulary every layer of evos shares, and nothing heavy.
//!
//! - [`types`]: events, actions, decisions, model requests and responses,
//!   JSON payloads;
//! - [`call`]: one call's input by kind, its [`Outcome`], output and
//!   [`CallReport`], and the plugin [`Kind`]s;
//! - [`Error`]: the library error type every crate returns;
//! - [`text`]: escaping and bounding untrusted text for people and records.
//!
//! It depends on serde and thiserror only: the sandbox (`evos-runtime`), the
//! control plane (`evos-control`) and the server build on it without
//! depending on each other's engines or databases.

pub mod call;
mod error;
pub mod sync;
pub mod text;
pub mod types;

pub use call::{CallInput, CallOutput, CallReport, Kind, LogLine, Outcome, Refusal};
pub use error::{Cause, Error, Result};
