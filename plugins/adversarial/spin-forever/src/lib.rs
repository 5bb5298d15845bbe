//! Adversarial agent `spin-forever`: `handle` never returns. It spins on a
//! counter the optimizer cannot see through, so only the host's wall-clock
//! deadline (epoch interruption) can stop it; its manifest grants practically
//! unlimited fuel to prove that the timeout, not fuel, ends the call.

use core::hint::black_box;

use evos_sdk::{Action, Agent, Error, Event};

struct SpinForever;

impl Agent for SpinForever {
    fn handle(_event: Event) -> Result<Vec<Action>, Error> {
        let mut counter: u64 = 0;
        loop {
            counter = black_box(counter.wrapping_add(1));
        }
    }
}

evos_sdk::export_agent!(SpinForever);
