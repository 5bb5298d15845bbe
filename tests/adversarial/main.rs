//! The adversarial catalogue: every way a plugin, an API client or a
//! manifest can attack the host, each case a test naming the threat it
//! covers and, where one applies, the advisory it regression-tests.
//!
//! Each test's doc comment starts with `Threat:` and may carry an
//! `Advisory:` line; [`catalogue`] checks that every case is documented
//! that way and listed in `tests/adversarial/README.md`.
//!
//! Nothing here reaches beyond 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod catalogue;
mod egress;
mod escalation;
mod files;
mod hostcalls;
mod lifecycle;
mod limits;
mod malformed;
// Shared with the other test target (host/test-support).
mod support {
    pub use evos_test_support::*;
}
