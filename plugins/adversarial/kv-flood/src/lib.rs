//! Adversarial agent `kv-flood`: stores 1 KiB values under fresh keys
//! `flood/0`, `flood/1`, ... until the host refuses one, then returns that
//! refusal as the call's error. Proves that the manifest's kv quotas
//! (`max-keys`, `max-value-bytes`) are enforced and reported as errors the
//! plugin can see, not as crashes.

use evos_sdk::{Action, Agent, Error, Event, kv};

const VALUE_BYTES: usize = 1024;

struct KvFlood;

impl Agent for KvFlood {
    fn handle(_event: Event) -> Result<Vec<Action>, Error> {
        let value = vec![b'k'; VALUE_BYTES];
        let mut n: u64 = 0;
        loop {
            if let Err(e) = kv::set(&format!("flood/{n}"), &value) {
                return Err(e.into());
            }
            n += 1;
        }
    }
}

evos_sdk::export_agent!(KvFlood);
