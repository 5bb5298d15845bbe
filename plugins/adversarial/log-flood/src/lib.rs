//! Adversarial agent `log-flood`: writes 100 000 log lines of about 1 KiB
//! each in one call, then returns no actions. Proves that the host's per-call
//! log limits (line count and line size) hold, that excess lines are dropped
//! and counted rather than stored, and that the host stays responsive.
//!
//! Each line is a fixed filler followed by a six-digit counter. The filler is
//! built once; each iteration only truncates the buffer back to it and appends
//! the counter, so the guest spends its fuel on log calls rather than on
//! copying strings.
//!
//! With the payload `{"stdout": true}` the same lines go to stdout instead,
//! which the host captures into the call report under its own cap.

use evos_sdk::{Action, Agent, Error, Event, log};

const LINES: u32 = 100_000;
const LINE_BYTES: usize = 1024;
const COUNTER_DIGITS: usize = 6;

struct LogFlood;

impl Agent for LogFlood {
    fn handle(event: Event) -> Result<Vec<Action>, Error> {
        let to_stdout = event.payload.contains("\"stdout\":true");
        let filler_bytes = LINE_BYTES - COUNTER_DIGITS - 1;
        let mut line = String::with_capacity(LINE_BYTES);
        line.push_str(&"x".repeat(filler_bytes));
        line.push(' ');
        let base_len = line.len();
        for n in 0..LINES {
            line.truncate(base_len);
            let mut divisor = 100_000;
            while divisor > 0 {
                line.push(char::from(b'0' + ((n / divisor) % 10) as u8));
                divisor /= 10;
            }
            if to_stdout {
                println!("{line}");
            } else {
                log::info(&line);
            }
        }
        Ok(Vec::new())
    }
}

evos_sdk::export_agent!(LogFlood);
