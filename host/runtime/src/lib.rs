//! evos-runtime: the sandbox.
//!
//! Agents, connectors, model adapters and policies are WebAssembly
//! components (the `evos:plugin` WIT package in `wit/`). This crate loads
//! them and calls them, giving each only the capabilities its manifest
//! grants, metering every call (fuel, memory, wall clock) and reporting it
//! as a typed [`Outcome`]. It is the crate a security reviewer audits: it
//! holds no database and no HTTP server, and Cargo shows it.
//!
//! ```text
//! manifest (policies/<name>.toml) ──► Manifest (typed, validated once)
//! component bytes ──► Engine (compile cache by sha256) ──► Component
//! Manifest + Component ──► Linker with exactly the granted capabilities
//!                      ──► InstancePre (built once per plugin)
//! each call: fresh Store (fuel, memory limiter, epoch deadline)
//!            ──► instantiate from the pooling allocator ──► call ──► CallReport
//! ```

mod bindings;
pub mod capability;
pub mod compare;
mod convert;
pub mod drift;
pub mod engine;
pub mod inspect;
pub mod manifest;
pub mod rollout;
pub mod runtime;
mod state;

pub use engine::{Engine, EngineConfig};
pub use evos_core::{
    CallInput, CallOutput, CallReport, Error, Kind, Outcome, Refusal, Result, text, types,
};
pub use manifest::Manifest;
pub use runtime::{Plugin, Runtime};
