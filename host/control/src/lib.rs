//! evos-control: the control plane.
//!
//! What is deployed and how traffic reaches it ([`registry`]), the state of
//! a data directory ([`store`]) with its tamper-evident [`audit`] log, API
//! tokens ([`auth`]), the human [`review`] queue, retries and circuit
//! breakers for downstream systems ([`breaker`]), the app file ([`app`]) and
//! what a deployer may grant without the operator ([`approval`]), and the
//! [`pipeline`] that drives events through connectors, agents, policies and
//! actions. The sandbox it drives is `evos-runtime`.

pub mod app;
pub mod approval;
pub mod audit;
pub mod auth;
pub mod breaker;
pub mod labels;
pub mod pipeline;
pub mod progressive;
pub mod recording;
pub mod redact;
pub mod registry;
pub mod replay;
pub mod review;
pub mod shadow;
pub mod source;
pub mod store;

// The sandbox's modules under the names this crate's code uses for them.
pub(crate) use evos_runtime::{capability, compare, drift, engine, manifest, rollout, runtime};

pub use evos_core::{Error, Result, text, types};
