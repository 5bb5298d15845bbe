//! evos-server: the long-running host (`evos up`) over HTTP — the
//! pipeline's ingest, the human review queue, the admin and invoke API,
//! audit, health and metrics ([`telemetry`]).

pub mod console;
pub mod otlp;
pub mod server;
pub mod source;
pub mod telemetry;

pub(crate) use evos_control::{
    app, audit, auth, breaker, labels, pipeline, recording, redact, registry, replay, review,
    shadow, source as sources, store,
};
pub(crate) use evos_core::{Error, Result, text};
pub(crate) use evos_runtime::{engine, manifest, runtime};
