//! Adversarial agent `memory-hog`: allocates 1 MiB chunks, writes to every
//! page of each so the memory is really committed, and keeps them all, until
//! the host refuses to grow linear memory past the manifest's limit and the
//! allocator aborts the call. Proves that a plugin cannot exhaust host memory
//! and that the failure is reported as out-of-memory.

use core::hint::black_box;

use evos_sdk::{Action, Agent, Error, Event};

const CHUNK: usize = 1024 * 1024;
const PAGE: usize = 4096;

struct MemoryHog;

impl Agent for MemoryHog {
    fn handle(_event: Event) -> Result<Vec<Action>, Error> {
        let mut kept: Vec<Vec<u8>> = Vec::new();
        loop {
            let mut chunk = vec![0u8; CHUNK];
            for (i, byte) in chunk.iter_mut().step_by(PAGE).enumerate() {
                *byte = (i as u8).wrapping_add(1);
            }
            kept.push(black_box(chunk));
            black_box(&kept);
        }
    }
}

evos_sdk::export_agent!(MemoryHog);
