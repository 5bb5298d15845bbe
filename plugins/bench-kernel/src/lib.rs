//! `bench-kernel`: two pure compute kernels behind a model adapter, so the
//! benchmarks can measure what fuel metering and epoch interruption cost on
//! guest code that is mostly calls or mostly branches. Both instrumentations
//! insert checks at function entries and loop back-edges, so these are the
//! shapes where their cost shows.
//!
//! Input `{"kernel": "calls" | "branches", "n": <size>}`; output
//! `{"kernel": ..., "n": ..., "result": <u64>}`. The result is returned so
//! the work cannot be optimized away.
//! - `calls`: naive recursive Fibonacci of `n` (about 2·fib(n) small calls
//!   that are never inlined).
//! - `branches`: total Collatz steps of every start in `1..=n` (a loop whose
//!   exit and step depend on the data).

use evos_sdk::{Error, ModelAdapter, ModelRequest, ModelResponse, Usage, json};
use serde::{Deserialize, Serialize};

#[derive(Deserialize, Serialize, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
enum Kernel {
    Calls,
    Branches,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    kernel: Kernel,
    n: u32,
}

#[derive(Serialize)]
struct Output {
    kernel: Kernel,
    n: u32,
    result: u64,
}

/// Largest `n` for `calls`: fib(40) is about 3·10⁸ calls, far past any
/// sensible fuel limit.
const MAX_FIB: u32 = 40;

#[inline(never)]
fn fib(n: u32) -> u64 {
    if n < 2 {
        n as u64
    } else {
        fib(n - 1) + fib(n - 2)
    }
}

fn collatz_steps(n: u32) -> u64 {
    let mut total = 0u64;
    for start in 1..=u64::from(n) {
        let mut x = start;
        while x != 1 {
            x = if x % 2 == 0 { x / 2 } else { 3 * x + 1 };
            total += 1;
        }
    }
    total
}

struct BenchKernel;

impl ModelAdapter for BenchKernel {
    fn infer(request: ModelRequest) -> Result<ModelResponse, Error> {
        let Input { kernel, n } = json::parse(&request.input)?;
        let result = match kernel {
            Kernel::Calls if n > MAX_FIB => {
                return Err(Error::InvalidInput(format!(
                    "calls: n must be at most {MAX_FIB}, got {n}"
                )));
            }
            Kernel::Calls => fib(n),
            Kernel::Branches => collatz_steps(n),
        };
        Ok(ModelResponse {
            output: json::to_string(&Output { kernel, n, result })?,
            model: "bench-kernel@1.0.0".into(),
            usage: Usage {
                input_units: u64::from(n),
                output_units: 1,
            },
        })
    }
}

evos_sdk::export_model_adapter!(BenchKernel);
