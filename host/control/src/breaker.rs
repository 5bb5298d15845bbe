//! Resilience for calls from connectors to downstream systems: retries with
//! exponential backoff and full jitter, and a circuit breaker per connector.
//!
//! A downstream outage must not turn into a retry storm or hold every
//! worker: after `failure-threshold` consecutive failed executions a
//! connector's breaker opens and executions fail fast; after `cooldown` one
//! trial call is let through (half-open) and its result closes or reopens
//! the breaker. Every state change is audited and visible in metrics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use crate::audit::NewEntry;
use crate::store::StateStore;

#[derive(Debug, Clone)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long an open breaker refuses calls before a trial.
    pub cooldown: Duration,
    /// Retries of one execution after its first attempt.
    pub retries: u32,
    /// First backoff; doubles per retry, capped at `max_backoff`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            cooldown: Duration::from_secs(10),
            retries: 2,
            base_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half-open",
        }
    }
}

#[derive(Debug)]
struct Breaker {
    state: State,
    failures: u32,
    opened_at: Option<Instant>,
    trial_in_flight: bool,
}

/// The breakers of a host, one per connector.
pub struct Breakers {
    config: BreakerConfig,
    map: Mutex<HashMap<String, Breaker>>,
    audit: Option<Arc<dyn StateStore>>,
    seed: std::sync::atomic::AtomicU64,
}

impl Breakers {
    pub fn new(config: BreakerConfig, audit: Option<Arc<dyn StateStore>>) -> Breakers {
        Breakers {
            config,
            map: Mutex::new(HashMap::new()),
            audit,
            seed: std::sync::atomic::AtomicU64::new(0x853c_49e6_748f_ea9b),
        }
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    fn with<R>(&self, connector: &str, f: impl FnOnce(&mut Breaker) -> R) -> R {
        let mut map = evos_core::sync::lock(&self.map);
        let b = map.entry(connector.to_string()).or_insert(Breaker {
            state: State::Closed,
            failures: 0,
            opened_at: None,
            trial_in_flight: false,
        });
        f(b)
    }

    fn changed(&self, connector: &str, from: State, to: State, failures: u32) {
        tracing::warn!(target: "evos::breaker",
            connector,
            from = from.as_str(),
            to = to.as_str(),
            "circuit breaker changed state"
        );
        if let Some(store) = &self.audit {
            let _ = store.audit(NewEntry {
                actor: crate::registry::HOST_ACTOR,
                action: "breaker",
                subject: connector,
                digest: None,
                detail: json!({"from": from, "to": to, "consecutive_failures": failures}),
            });
        }
    }

    /// May a call go out now? `Err` says when the breaker will let one
    /// through again.
    pub fn allow(&self, connector: &str) -> Result<(), Duration> {
        let cooldown = self.config.cooldown;
        let (result, change) = self.with(connector, |b| match b.state {
            State::Closed => (Ok(()), None),
            State::Open => {
                let since = b.opened_at.map(|t| t.elapsed()).unwrap_or(cooldown);
                if since >= cooldown {
                    b.state = State::HalfOpen;
                    b.trial_in_flight = true;
                    (Ok(()), Some((State::Open, State::HalfOpen, b.failures)))
                } else {
                    (Err(cooldown - since), None)
                }
            }
            State::HalfOpen if !b.trial_in_flight => {
                b.trial_in_flight = true;
                (Ok(()), None)
            }
            State::HalfOpen => (Err(Duration::from_millis(100)), None),
        });
        if let Some((from, to, n)) = change {
            self.changed(connector, from, to, n);
        }
        result
    }

    pub fn success(&self, connector: &str) {
        let change = self.with(connector, |b| {
            let from = b.state;
            b.state = State::Closed;
            b.failures = 0;
            b.trial_in_flight = false;
            (from != State::Closed).then_some((from, 0))
        });
        if let Some((from, n)) = change {
            self.changed(connector, from, State::Closed, n);
        }
    }

    pub fn failure(&self, connector: &str) {
        let threshold = self.config.failure_threshold;
        let change = self.with(connector, |b| {
            b.failures = b.failures.saturating_add(1);
            b.trial_in_flight = false;
            let from = b.state;
            let open = match from {
                State::HalfOpen => true,
                State::Closed => b.failures >= threshold,
                State::Open => false,
            };
            if open {
                b.state = State::Open;
                b.opened_at = Some(Instant::now());
                Some((from, b.failures))
            } else {
                None
            }
        });
        if let Some((from, n)) = change {
            self.changed(connector, from, State::Open, n);
        }
    }

    /// Backoff before retry `attempt` (1-based): full jitter over an
    /// exponentially growing cap.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let cap = self
            .config
            .base_backoff
            .saturating_mul(
                1u32.checked_shl(attempt.saturating_sub(1))
                    .unwrap_or(u32::MAX),
            )
            .min(self.config.max_backoff);
        let mut x = self
            .seed
            .fetch_add(0x9e37_79b9_7f4a_7c15, std::sync::atomic::Ordering::Relaxed);
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        let nanos = cap.as_nanos() as u64;
        Duration::from_nanos(if nanos == 0 { 0 } else { x % nanos })
    }

    /// Every connector's state, for metrics.
    pub fn states(&self) -> Vec<(String, State)> {
        let map = evos_core::sync::lock(&self.map);
        let mut v: Vec<(String, State)> = map.iter().map(|(k, b)| (k.clone(), b.state)).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breakers() -> Breakers {
        Breakers::new(
            BreakerConfig {
                failure_threshold: 3,
                cooldown: Duration::from_millis(30),
                ..Default::default()
            },
            None,
        )
    }

    #[test]
    fn opens_after_the_threshold_and_recovers_through_half_open() {
        let b = breakers();
        for _ in 0..2 {
            b.failure("c");
        }
        assert!(b.allow("c").is_ok(), "still closed below the threshold");
        b.failure("c");
        assert!(b.allow("c").is_err(), "open after 3 failures");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allow("c").is_ok(), "one trial after the cooldown");
        assert!(b.allow("c").is_err(), "only one trial at a time");
        b.success("c");
        assert_eq!(b.states(), vec![("c".to_string(), State::Closed)]);
    }

    #[test]
    fn a_failed_trial_reopens() {
        let b = breakers();
        for _ in 0..3 {
            b.failure("c");
        }
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allow("c").is_ok());
        b.failure("c");
        assert!(b.allow("c").is_err());
        assert_eq!(b.states()[0].1, State::Open);
    }

    #[test]
    fn backoff_is_jittered_under_an_exponential_cap() {
        let b = breakers();
        for attempt in 1..6 {
            let cap = Duration::from_millis(50 * (1 << (attempt - 1))).min(Duration::from_secs(1));
            assert!(b.backoff(attempt) < cap);
        }
    }
}
