//! `log`: structured log lines from a plugin into the host's log.
//!
//! Guards against log flooding (a plugin filling disks or drowning other
//! plugins' lines): at most `max-lines` lines per call and `max-line-bytes`
//! per line; control characters are escaped so a plugin cannot forge log
//! lines or terminal escapes. Lines past `max-lines` are dropped and counted
//! as refusals. A guest's stdout and stderr are captured into the same
//! report, bounded the same way.
//!
//! The host's own log (a disk, a journal, a collector) is guarded across
//! calls too: a plugin writes at most `lines-per-second` lines there on
//! average, in bursts up to `burst` (a token bucket shared by all its calls,
//! so many short calls cannot add up to a flood). Lines over the rate still
//! reach the call's report, which is bounded per call anyway, and the
//! call's outcome is untouched (a busy, healthy plugin is not failing); the
//! report counts them (`log_lines_suppressed`), and the host log says how
//! many were held back once the plugin is under its rate again.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Deserializer};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi_io::async_trait;
use wasmtime_wasi_io::bytes::Bytes;

use wasmtime::component::Linker;

use super::{CallContext, Cap, Capability, HasCap, HasCapability, Views};
use crate::bindings::evos::plugin::log::{Host, Level, add_to_linker};
use crate::manifest::Manifest;
use crate::{Error, Result};

/// The `log` capability.
pub struct Log;

impl Capability for Log {
    const NAME: &'static str = "log";
    const INTERFACES: &'static [&'static str] = &["evos:plugin/log"];
    const PRIVILEGED: bool = true;
    const EXAMPLE: &'static str = "log = true";
    type State = LogState;

    fn granted(m: &Manifest) -> bool {
        m.capabilities.log.is_some()
    }

    fn link<T: Views>(linker: &mut Linker<T>) -> Result<()> {
        add_to_linker::<T, HasCap<LogState>>(linker, HasCapability::<Log>::capability)
            .map_err(|e| Error::wasmtime("linking evos:plugin/log", e))
    }

    fn state(call: &CallContext<'_>) -> LogState {
        LogState::new(call.grants)
    }
}

/// Log limits per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LogGrant {
    #[serde(default = "LogGrant::default_lines")]
    pub max_lines: u32,
    #[serde(default = "LogGrant::default_line_bytes")]
    pub max_line_bytes: u32,
    /// Average lines per second across all calls of the plugin.
    #[serde(default = "LogGrant::default_rate")]
    pub lines_per_second: u32,
    /// Lines the plugin may log at once above the average.
    #[serde(default = "LogGrant::default_burst")]
    pub burst: u32,
}

impl LogGrant {
    fn default_lines() -> u32 {
        1000
    }
    fn default_line_bytes() -> u32 {
        4096
    }
    fn default_rate() -> u32 {
        1000
    }
    fn default_burst() -> u32 {
        5000
    }
}

impl Default for LogGrant {
    fn default() -> Self {
        LogGrant {
            max_lines: LogGrant::default_lines(),
            max_line_bytes: LogGrant::default_line_bytes(),
            lines_per_second: LogGrant::default_rate(),
            burst: LogGrant::default_burst(),
        }
    }
}

/// The token bucket behind `lines-per-second` and `burst`, one per loaded
/// plugin, shared by all its calls.
#[derive(Debug)]
pub struct LogRate {
    per_second: f64,
    burst: f64,
    /// Tokens, when they were last counted, and lines held back since the
    /// host log last said so.
    bucket: Mutex<(f64, Instant, u64)>,
}

/// Whether a line may go to the host log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admit {
    /// Yes; `held_back` lines were not written before it.
    Yes { held_back: u64 },
    /// No: the plugin is over its rate.
    No,
}

impl LogRate {
    pub fn new(grant: &LogGrant) -> LogRate {
        let burst = f64::from(grant.burst.max(1));
        LogRate {
            per_second: f64::from(grant.lines_per_second),
            burst,
            bucket: Mutex::new((burst, Instant::now(), 0)),
        }
    }

    /// Take one line's token.
    fn take(&self) -> Admit {
        let mut bucket = evos_core::sync::lock(&self.bucket);
        let (tokens, last, held_back) = &mut *bucket;
        let now = Instant::now();
        let refill = now.duration_since(*last).as_secs_f64() * self.per_second;
        *tokens = (*tokens + refill).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Admit::Yes {
                held_back: std::mem::take(held_back),
            }
        } else {
            *held_back += 1;
            Admit::No
        }
    }
}

impl Default for LogRate {
    fn default() -> Self {
        LogRate::new(&LogGrant::default())
    }
}

/// `log = true | false | { max-lines = .., max-line-bytes = .. }`.
pub(crate) fn deserialize_grant<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<LogGrant>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Setting {
        Enabled(bool),
        Limits(LogGrant),
    }
    match Setting::deserialize(d).map_err(|_| {
        serde::de::Error::custom(
            "`log` must be true, false or a table like { max-lines = 1000, max-line-bytes = 4096 }",
        )
    })? {
        Setting::Enabled(true) => Ok(Some(LogGrant::default())),
        Setting::Enabled(false) => Ok(None),
        Setting::Limits(l) => Ok(Some(l)),
    }
}

pub use evos_core::LogLine;

/// Per-call log state.
#[derive(Debug, Default)]
pub struct LogState {
    pub(crate) grant: LogGrant,
    pub(crate) lines: Vec<LogLine>,
    pub(crate) plugin: std::sync::Arc<str>,
    pub(crate) rate: Arc<LogRate>,
    /// Lines of this call kept in its report but not written to the host
    /// log (over the plugin's rate).
    pub(crate) suppressed: u64,
}

impl LogState {
    pub(crate) fn new(grants: &super::Grants) -> LogState {
        LogState {
            grant: grants.log.unwrap_or_default(),
            lines: Vec::new(),
            plugin: grants.plugin.clone(),
            rate: grants.log_rate.clone(),
            suppressed: 0,
        }
    }

    /// Record a line (from the `log` interface or captured stdio).
    pub(crate) fn push(
        &mut self,
        level: &'static str,
        message: &str,
    ) -> std::result::Result<(), String> {
        if self.lines.len() >= self.grant.max_lines as usize {
            return Err(format!(
                "log line dropped: the limit of {} lines per call is reached (raise `max-lines` in the `log` grant)",
                self.grant.max_lines
            ));
        }
        let message = sanitize(message, self.grant.max_line_bytes as usize);
        let plugin = &*self.plugin;
        match self.rate.take() {
            Admit::No => {
                self.suppressed += 1;
                self.lines.push(LogLine { level, message });
                return Ok(());
            }
            Admit::Yes { held_back: 0 } => {}
            Admit::Yes { held_back } => tracing::warn!(
                target: "evos::plugin",
                plugin,
                "{held_back} log lines of this plugin were not written here: it logged faster than {} lines per second (bursts up to {}); they are in its call reports",
                self.grant.lines_per_second,
                self.grant.burst
            ),
        }
        match level {
            "trace" => tracing::trace!(target: "evos::plugin", plugin, "{message}"),
            "debug" => tracing::debug!(target: "evos::plugin", plugin, "{message}"),
            "warn" => tracing::warn!(target: "evos::plugin", plugin, "{message}"),
            "error" => tracing::error!(target: "evos::plugin", plugin, "{message}"),
            _ => tracing::info!(target: "evos::plugin", plugin, "{message}"),
        }
        self.lines.push(LogLine { level, message });
        Ok(())
    }
}

/// Escape control characters and cut the line at `max` bytes on a char
/// boundary.
pub(crate) fn sanitize(message: &str, max: usize) -> String {
    let mut out = String::with_capacity(message.len().min(max));
    for c in message.chars() {
        if out.len() >= max {
            out.push_str("…[truncated]");
            break;
        }
        if crate::text::dangerous(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A guest's stdout or stderr, captured into its call report. Output past
/// `capacity` is dropped and counted rather than failing the guest's write,
/// so printing too much cannot crash a plugin, and cannot fill host memory.
#[derive(Clone)]
pub(crate) struct CapturedOutput {
    inner: Arc<Mutex<Captured>>,
}

struct Captured {
    bytes: Vec<u8>,
    capacity: usize,
    dropped: u64,
}

impl CapturedOutput {
    pub fn new(capacity: usize) -> CapturedOutput {
        CapturedOutput {
            inner: Arc::new(Mutex::new(Captured {
                bytes: Vec::new(),
                capacity,
                dropped: 0,
            })),
        }
    }

    fn append(&self, data: &[u8]) {
        if let Ok(mut c) = self.inner.lock() {
            let room = c.capacity.saturating_sub(c.bytes.len());
            let take = room.min(data.len());
            c.bytes.extend_from_slice(&data[..take]);
            c.dropped += (data.len() - take) as u64;
        }
    }

    /// The captured bytes and how many were dropped.
    pub fn take(&self) -> (Vec<u8>, u64) {
        match self.inner.lock() {
            Ok(mut c) => (std::mem::take(&mut c.bytes), c.dropped),
            Err(_) => (Vec::new(), 0),
        }
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CapturedOutput {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.append(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    }
}

impl Host for Cap<'_, LogState> {
    async fn write(&mut self, level: Level, message: String) {
        if let Err(why) = self.state.push(level_name(level), &message) {
            self.refuse("log", why);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_lines_cut() {
        assert_eq!(sanitize("a\nb\x1b[31m", 100), "a\\nb\\u{1b}[31m");
        let long = "x".repeat(50);
        let cut = sanitize(&long, 10);
        assert!(cut.starts_with("xxxxxxxxxx") && cut.ends_with("[truncated]"));
    }

    #[test]
    fn lines_past_the_limit_are_refused() {
        let mut s = LogState {
            grant: LogGrant {
                max_lines: 2,
                max_line_bytes: 100,
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(s.push("info", "one").is_ok());
        assert!(s.push("info", "two").is_ok());
        assert!(s.push("info", "three").is_err());
        assert_eq!(s.lines.len(), 2);
    }

    #[test]
    fn the_rate_is_shared_across_calls_and_refills() {
        let grant = LogGrant {
            lines_per_second: 50,
            burst: 3,
            ..Default::default()
        };
        let rate = Arc::new(LogRate::new(&grant));
        let call = || LogState {
            grant,
            rate: rate.clone(),
            ..Default::default()
        };
        let (mut a, mut b) = (call(), call());
        assert!(a.push("info", "1").is_ok());
        assert!(b.push("info", "2").is_ok());
        assert!(a.push("info", "3").is_ok());
        assert!(b.push("info", "4").is_ok());
        // The fourth line stays in its report but not in the host log.
        assert_eq!((a.suppressed, b.suppressed), (0, 1));
        assert_eq!(b.lines.len(), 2);
        // 50 lines per second: one token back within 20 ms, and the
        // held-back count is handed over once.
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert_eq!(rate.take(), Admit::Yes { held_back: 1 });
        assert_eq!(rate.take(), Admit::No);
    }
}
