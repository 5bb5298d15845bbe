//! `bench-allow`: the smallest possible policy — it allows everything and
//! imports no host interface. Benchmarks use it to measure the cost of the
//! call path itself (store, limits, instantiation, call) against raw
//! wasmtime doing the same work.

use evos_sdk::{Action, Decision, Event, Policy};

struct Allow;

impl Policy for Allow {
    fn evaluate(_action: Action, _event: Event) -> Decision {
        Decision::Allow
    }
}

evos_sdk::export_policy!(Allow);
