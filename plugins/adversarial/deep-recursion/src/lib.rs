//! Adversarial agent `deep-recursion`: recurses without bound, and not in
//! tail position, so every frame stays alive until the wasm call stack
//! overflows.
//!
//! Each frame takes 32 words from a global array with read-modify-write
//! updates before recursing and folds them into its result afterwards. The
//! recursive call updates the same array, so the compiler can neither
//! recompute the words after the call nor drop them: all 32 stay live across
//! the call, in wasm locals that the engine spills to its native stack. No
//! frame uses Rust's shadow stack in linear memory, so the engine's stack
//! limit, not an out-of-bounds store, ends the call, and the host sees a
//! genuine stack overflow.

use core::hint::black_box;
use core::sync::atomic::{AtomicU64, Ordering};

use evos_sdk::{Action, Agent, Error, Event};

static WORDS: [AtomicU64; 32] = [const { AtomicU64::new(0) }; 32];

/// Takes one word per `name = index` from [`WORDS`], evaluates `next`, then
/// folds every word into the result, so all of them outlive `next`.
macro_rules! frame {
    ($depth:expr, $next:expr; $($v:ident = $i:literal),+ $(,)?) => {{
        $( let $v = WORDS[$i].fetch_add($depth | 1, Ordering::Relaxed); )+
        let mut acc: u64 = $next;
        $( acc = acc.wrapping_mul(31).wrapping_add($v ^ $i); )+
        acc
    }};
}

#[inline(never)]
fn descend(depth: u64) -> u64 {
    if WORDS[0].load(Ordering::Relaxed) == u64::MAX {
        return depth;
    }
    frame!(depth, descend(depth + 1); v0 = 0, v1 = 1, v2 = 2, v3 = 3, v4 = 4, v5 = 5, v6 = 6, v7 = 7, v8 = 8, v9 = 9, v10 = 10, v11 = 11, v12 = 12, v13 = 13, v14 = 14, v15 = 15, v16 = 16, v17 = 17, v18 = 18, v19 = 19, v20 = 20, v21 = 21, v22 = 22, v23 = 23, v24 = 24, v25 = 25, v26 = 26, v27 = 27, v28 = 28, v29 = 29, v30 = 30, v31 = 31)
}

struct DeepRecursion;

impl Agent for DeepRecursion {
    fn handle(_event: Event) -> Result<Vec<Action>, Error> {
        let folded = descend(black_box(0));
        Err(Error::Internal(format!(
            "recursion unexpectedly returned {folded}"
        )))
    }
}

evos_sdk::export_agent!(DeepRecursion);
