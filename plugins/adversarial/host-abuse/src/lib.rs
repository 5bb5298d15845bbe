//! Adversarial agent `host-abuse`: attacks the host through its own host
//! calls and its own memory, one attack per event. The event payload picks
//! it: `{"op": "<name>", ...}`.
//!
//! | op         | what it does                                                         |
//! |------------|----------------------------------------------------------------------|
//! | `handles`  | creates `n` pollables (wasi:clocks) and keeps them all alive         |
//! | `big-log`  | sends one log line of `bytes` bytes to the host                      |
//! | `log-burst`| logs `lines` short lines                                             |
//! | `log-line` | logs `message` as it is                                              |
//! | `trap`     | writes `stderr` (if given) to stderr, then traps (`unreachable`)     |
//! | `fill`     | grows memory by `pages` pages and fills them with `byte`             |
//! | `scan`     | grows memory by `pages` pages and counts the bytes that are not zero |
//! | `env`      | returns every environment variable it can see                        |
//! | `kv-set`   | stores `value` under `key` in its own namespace                      |
//! | `kv-probe` | tries to read `keys` and lists keys under each of `prefixes`         |
//!
//! Results come back as one `abuse-report` action whose payload is JSON.

use evos_sdk::{Action, Agent, Error, Event, kv, log};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
enum Op {
    Handles {
        n: u32,
    },
    BigLog {
        bytes: usize,
    },
    LogBurst {
        lines: u32,
    },
    LogLine {
        message: String,
    },
    Trap {
        #[serde(default)]
        stderr: String,
    },
    Fill {
        pages: usize,
        byte: u8,
    },
    Scan {
        pages: usize,
    },
    Env,
    KvSet {
        key: String,
        value: String,
    },
    KvProbe {
        keys: Vec<String>,
        prefixes: Vec<String>,
    },
}

struct HostAbuse;

impl Agent for HostAbuse {
    fn handle(event: Event) -> Result<Vec<Action>, Error> {
        let op: Op = evos_sdk::json::parse(&event.payload)?;
        let report = match op {
            Op::Handles { n } => {
                let mut held = Vec::new();
                for _ in 0..n {
                    held.push(wasi::clocks::monotonic_clock::subscribe_duration(
                        1_000_000_000,
                    ));
                }
                json!({ "held": held.len() })
            }
            Op::BigLog { bytes } => {
                log::info(&"x".repeat(bytes));
                json!({ "sent": bytes })
            }
            Op::LogBurst { lines } => {
                for i in 0..lines {
                    log::info(&format!("burst line {i}"));
                }
                json!({ "sent": lines })
            }
            Op::LogLine { message } => {
                log::warn(&message);
                json!({ "sent": message.len() })
            }
            Op::Trap { stderr } => {
                eprint!("{stderr}");
                trap()
            }
            Op::Fill { pages, byte } => {
                let start = grow(pages)?;
                let word = u64::from_ne_bytes([byte; 8]);
                for addr in (start..start + pages * PAGE).step_by(8) {
                    // SAFETY: freshly grown memory that nothing else uses.
                    unsafe { core::ptr::write_volatile(addr as *mut u64, word) };
                }
                json!({ "filled": pages * PAGE })
            }
            Op::Scan { pages } => {
                let start = grow(pages)?;
                let mut nonzero = 0u64;
                for addr in (start..start + pages * PAGE).step_by(8) {
                    // SAFETY: freshly grown memory that nothing else uses.
                    let word = unsafe { core::ptr::read_volatile(addr as *const u64) };
                    nonzero +=
                        u64::from((word.to_ne_bytes()).iter().filter(|b| **b != 0).count() as u32);
                }
                json!({ "scanned": pages * PAGE, "nonzero": nonzero })
            }
            Op::Env => {
                let vars: serde_json::Map<String, Value> = std::env::vars()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect();
                json!({ "env": vars })
            }
            Op::KvSet { key, value } => {
                kv::set(&key, value.as_bytes()).map_err(Error::from)?;
                json!({ "stored": key })
            }
            Op::KvProbe { keys, prefixes } => {
                let found: Vec<Value> = keys
                    .iter()
                    .map(|k| match kv::get(k) {
                        Ok(Some(v)) => json!({"key": k, "value": String::from_utf8_lossy(&v)}),
                        Ok(None) => json!({"key": k, "value": null}),
                        Err(e) => json!({"key": k, "error": format!("{e:?}")}),
                    })
                    .collect();
                let listed: Vec<Value> = prefixes
                    .iter()
                    .map(|p| match kv::list_keys(p) {
                        Ok(keys) => json!({"prefix": p, "keys": keys}),
                        Err(e) => json!({"prefix": p, "error": format!("{e:?}")}),
                    })
                    .collect();
                json!({ "get": found, "list": listed })
            }
        };
        Ok(vec![Action::new(
            "abuse-report",
            &event,
            &report,
            "host-abuse",
        )?])
    }
}

const PAGE: usize = 65536;

/// Grow linear memory by `pages`; the address of the first new byte.
fn grow(pages: usize) -> Result<usize, Error> {
    #[cfg(target_arch = "wasm32")]
    let previous = core::arch::wasm32::memory_grow(0, pages);
    // Native builds (the plugin workspace's `cargo test`) have no linear
    // memory to grow.
    #[cfg(not(target_arch = "wasm32"))]
    let previous = {
        let _ = pages;
        usize::MAX
    };
    if previous == usize::MAX {
        return Err(Error::Internal(format!(
            "memory.grow by {pages} pages refused"
        )));
    }
    Ok(previous * PAGE)
}

/// The wasm `unreachable` instruction: a trap, not a panic the guest could
/// format and report.
fn trap() -> ! {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort()
}

evos_sdk::export_agent!(HostAbuse);
