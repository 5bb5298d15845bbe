//! The feature-store lookup of `fraud-lr@1.2.0`, a faulty release.
//!
//! Only the `fraud-score-regressed` build runs it, as its
//! [`FraudModel::before_scoring`](crate::FraudModel::before_scoring) hook.
//! That build exists to exercise canary rollback: it answers the same
//! contract as 1.0.0 but fails on a deterministic share of inputs, the way a
//! bad release does, so a canary of it has something to catch.
//!
//! 1.2.0 fetches a shadow feature, `shard_prior`: the base fraud rate of the
//! feature-store shard a claim is stored on. The feature is logged, not yet
//! weighted (the build scores with the 1.0.0 weights), so every call that
//! gets past the lookup scores exactly like 1.0.0. The shard and replica come
//! from the feature-store key, FNV-1a over the request's input JSON text, and
//! the lookup has two defects:
//!
//! - shard numbers are computed from 0 but the priors table is indexed from
//!   1, so a key on shard 0 (key % 3 == 0, about 1 call in 3) indexes out of
//!   range and the guest panics: the call traps;
//! - one replica in six never answers and the lookup has no fallback, so
//!   about 1 in 6 of the remaining calls fails with
//!   `Error::Internal("feature store timeout")`.
//!
//! [`outcome`] says which of these happens to an input without doing it.

use evos_sdk::{Error, ModelRequest, log};

/// Feature-store shards.
const SHARDS: u64 = 3;
/// Replicas per shard.
const REPLICAS: u64 = 6;
/// The replica that never answers.
const UNREACHABLE_REPLICA: u64 = 0;
/// Base fraud rate of shards 1..=SHARDS, in shard order.
const SHARD_PRIORS: [f64; SHARDS as usize] = [0.128, 0.141, 0.133];

/// 64-bit FNV-1a.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(PRIME)
    })
}

/// The feature-store key of a request: FNV-1a over its input JSON text.
fn key(input: &str) -> u64 {
    fnv1a(input.as_bytes())
}

/// The shard a key is stored on, numbered from 0.
fn shard(key: u64) -> u64 {
    key % SHARDS
}

/// The replica of its shard a key's lookup is routed to.
fn replica(key: u64) -> u64 {
    (key / SHARDS) % REPLICAS
}

/// What the 1.2.0 lookup does with one request input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The priors lookup indexes out of range: the guest panics and traps.
    Trap,
    /// The lookup fails with `Error::Internal("feature store timeout")`.
    Timeout,
    /// The lookup succeeds and the claim is scored as by 1.0.0.
    Scored,
}

/// The outcome of [`shard_prior_lookup`] for a request whose
/// `model-request.input` is `input`, computed without running it.
pub fn outcome(input: &str) -> Outcome {
    let key = key(input);
    if shard(key) == 0 {
        Outcome::Trap
    } else if replica(key) == UNREACHABLE_REPLICA {
        Outcome::Timeout
    } else {
        Outcome::Scored
    }
}

/// The 1.2.0 shadow-feature lookup, a [`crate::BeforeScoring`] hook.
///
/// Panics for inputs on shard 0 and times out for inputs routed to the
/// unreachable replica; see the module documentation.
pub fn shard_prior_lookup(request: &ModelRequest) -> Result<(), Error> {
    let key = key(&request.input);
    let shard = shard(key) as usize;
    // Defect of 1.2.0 (this build exists to exercise canary rollback):
    // `shard` counts from 0 but the table is indexed by 1-based shard number,
    // so shard 0 wraps to an out-of-range index and the lookup panics.
    let prior = SHARD_PRIORS[shard - 1];
    if replica(key) == UNREACHABLE_REPLICA {
        return Err(Error::Internal("feature store timeout".into()));
    }
    log::debug(&format!(
        "shadow feature shard_prior={prior} (shard {shard})"
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const TRAFFIC: &str = include_str!("../../fraud-score/traffic.jsonl");

    /// The `model-request.input` text of each traffic line, as the host
    /// passes it: the `input` value serialized as compact JSON.
    fn traffic_inputs() -> Vec<String> {
        TRAFFIC
            .lines()
            .map(|line| {
                let request: Value = serde_json::from_str(line).unwrap();
                assert_eq!(request["parameters"], serde_json::json!({}), "{line}");
                request["input"].to_string()
            })
            .collect()
    }

    fn shares(inputs: &[String]) -> (f64, f64) {
        let n = inputs.len() as f64;
        let count = |o: Outcome| inputs.iter().filter(|i| outcome(i) == o).count() as f64;
        (count(Outcome::Trap) / n, count(Outcome::Timeout) / n)
    }

    #[test]
    fn fnv1a_matches_reference_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn outcome_is_deterministic() {
        for input in traffic_inputs() {
            assert_eq!(outcome(&input), outcome(&input.clone()));
        }
        // Pinned: a change to the key, the hash or the routing moves these.
        let claim =
            |i: u32| format!(r#"{{"amount":250.0,"incident":"claim {i}","prior_claims":0}}"#);
        assert_eq!(fnv1a(claim(0).as_bytes()), 0x56ca_9622_18b7_48b6);
        let expected = [
            (0, Outcome::Trap),
            (1, Outcome::Scored),
            (5, Outcome::Trap),
            (9, Outcome::Timeout),
            (10, Outcome::Trap),
            (11, Outcome::Scored),
        ];
        for (i, o) in expected {
            assert_eq!(outcome(&claim(i)), o, "{}", claim(i));
        }
    }

    #[test]
    fn traffic_hits_a_third_traps_and_a_ninth_timeouts() {
        let inputs = traffic_inputs();
        assert_eq!(inputs.len(), 200);
        for input in &inputs {
            crate::Claim::from_input(input).unwrap();
        }
        let (trap, timeout) = shares(&inputs);
        assert!((0.25..=0.42).contains(&trap), "trap share {trap}");
        assert!((0.06..=0.17).contains(&timeout), "timeout share {timeout}");
        // The counts train/traffic.py reports for the file it writes.
        assert_eq!((trap * 200.0, timeout * 200.0), (71.0, 30.0));
    }

    #[test]
    fn shares_converge_to_a_third_and_a_ninth() {
        let inputs: Vec<String> = (0..9000)
            .map(|i| {
                format!(
                    r#"{{"amount":{}.5,"incident":"claim {i}","prior_claims":{}}}"#,
                    100 + i * 7,
                    i % 4
                )
            })
            .collect();
        let (trap, timeout) = shares(&inputs);
        assert!((trap - 1.0 / 3.0).abs() < 0.02, "trap share {trap}");
        assert!(
            (timeout - 1.0 / 9.0).abs() < 0.015,
            "timeout share {timeout}"
        );
    }

    #[test]
    fn lookup_times_out_where_the_outcome_says_so() {
        let timeouts: Vec<String> = traffic_inputs()
            .into_iter()
            .filter(|i| outcome(i) == Outcome::Timeout)
            .collect();
        assert!(!timeouts.is_empty());
        for input in timeouts {
            let request = ModelRequest {
                input,
                parameters: "{}".into(),
            };
            match shard_prior_lookup(&request) {
                Err(Error::Internal(m)) => assert_eq!(m, "feature store timeout"),
                other => panic!("expected a timeout, got {other:?}"),
            }
        }
    }
}
