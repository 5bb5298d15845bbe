//! The `evos` command line: a thin layer over the `evos` library.
//!
//! Exit codes: 0 success, 1 a negative answer (a check that fails, a call
//! whose outcome is not ok), 2 bad input or an error.

#[path = "../commands/mod.rs"]
mod commands;

fn main() -> std::process::ExitCode {
    commands::main()
}
