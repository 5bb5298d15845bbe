//! Integration tests: the host library, the `evos` binary and the real guest
//! plugins (built by `cargo xtask plugins` into target/plugins/).
//!
//! Nothing here reaches beyond 127.0.0.1: tests that need a downstream
//! system start one ([`support::Downstream`]).

mod adversarial;
mod cache;
mod capabilities;
mod cli;
mod examples;
mod support;
