//! evos: a host for sandboxed AI automation.
//!
//! Agents, connectors, model adapters and policies are WebAssembly components
//! (the `evos:plugin` WIT package in `wit/`). The host gives each one only the
//! capabilities its manifest grants, meters every call (fuel, memory, wall
//! clock) and reports every call as a typed [`Outcome`].
//!
//! This crate is the `evos` binary (a thin CLI over the libraries) and, for
//! embedders and tests, the libraries under one name:
//!
//! | crate | modules |
//! |---|---|
//! | `evos-core` | [`types`], [`text`], [`Error`], [`CallReport`], [`Outcome`] |
//! | `evos-runtime` (the sandbox) | [`engine`], [`manifest`], [`capability`], [`inspect`], [`runtime`], [`rollout`] |
//! | `evos-control` (the control plane) | [`store`], [`audit`], [`auth`], [`review`], [`breaker`], [`registry`], [`app`], [`approval`], [`pipeline`] |
//! | `evos-server` (`evos up`) | [`server`], [`telemetry`] |
//!
//! See ARCHITECTURE.md for how they fit.

pub use evos_control::{
    app, approval, audit, auth, breaker, labels, pipeline, recording, redact, registry, replay,
    review, shadow, source, store,
};
pub use evos_core::{
    CallInput, CallOutput, CallReport, Error, Outcome, Refusal, Result, text, types,
};
pub use evos_runtime::{
    Engine, EngineConfig, Manifest, Plugin, Runtime, capability, compare, drift, engine, inspect,
    manifest, rollout, runtime,
};
pub use evos_server::{console, otlp, server, telemetry};
