//! The `evos` command line: a thin layer over the `evos` library.
//!
//! Exit codes: 0 success, 1 a negative answer (a check that fails, a call
//! whose outcome is not ok), 2 bad input or an error.

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

#[path = "../commands/mod.rs"]
mod commands;

fn main() -> std::process::ExitCode {
    commands::main()
}
