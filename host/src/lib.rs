//! evos: a host for sandboxed AI automation.
//!
//! Agents, connectors, model adapters and policies are WebAssembly components
//! (the `evos:plugin` WIT package in `wit/`). The host gives each one only the
//! capabilities its manifest grants, meters every call (fuel, memory, wall
//! clock) and reports every call as a typed [`Outcome`].
//!
//! The library is the whole host; the `evos` binary is a thin CLI over it.
//!
//! ```text
//! manifest (policies/<name>.toml) ──► Manifest (typed, validated once)
//! component bytes ──► Engine (compile cache by sha256) ──► Component
//! Manifest + Component ──► Linker with exactly the granted capabilities
//!                      ──► InstancePre (built once per plugin)
//! each call: fresh Store (fuel, memory limiter, epoch deadline)
//!            ──► instantiate from the pooling allocator ──► call ──► CallReport
//! ```

// Nothing a plugin, a manifest or an API client sends may panic the host:
// unwrap/expect are denied workspace-wide outside tests (Cargo.toml), and
// explicit panics are denied here too. Test modules state expectations with
// them freely.
#![cfg_attr(
    not(test),
    deny(
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]

pub mod app;
pub mod approval;
pub mod audit;
pub mod auth;
mod bindings;
pub mod breaker;
pub mod capability;
pub mod engine;
mod error;
pub mod inspect;
pub mod manifest;
pub mod pipeline;
pub mod registry;
pub mod review;
pub mod rollout;
pub mod runtime;
pub mod server;
mod state;
pub mod store;
pub mod telemetry;
pub mod text;
pub mod types;

pub use engine::{Engine, EngineConfig};
pub use error::{Error, Result};
pub use manifest::Manifest;
pub use runtime::{CallInput, CallOutput, CallReport, Outcome, Plugin, Refusal, Runtime};
