//! Plugins in Python and JavaScript: the SDKs, `evos new` and `evos build`.
//!
//! A test binary of its own: these tests run componentize-py, Node and
//! cargo builds flat out, and cargo runs test binaries one after another,
//! so they never share the CPU with the integration tests that measure
//! latencies (canary gates, shadows).

// Test code states its expectations with unwrap/expect/panic: a failed
// expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// The Rust builds' checks, run here against the other languages' builds.
#[path = "../integration/examples.rs"]
mod examples;
mod plugins;
mod support {
    pub use evos_test_support::*;
}
