//! Integration tests: the host library, the `evos` binary and the real guest
//! plugins (built by `cargo xtask plugins` into target/plugins/).
//!
//! Nothing here reaches beyond 127.0.0.1: tests that need a downstream
//! system start one ([`support::Downstream`]).

// Test code states its expectations with unwrap/expect/panic: a failed
// expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cache;
mod capabilities;
mod cli;
mod control;
mod crash;
mod drift;
mod examples;
mod nodes;
mod otlp;
mod postgres;
mod recording;
mod replay;
mod rollout;
mod server;
mod shadow;
mod sources;
mod ui;
// Shared with the other test target (host/test-support).
mod support {
    pub use evos_test_support::*;
}
