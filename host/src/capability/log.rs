//! `log`: structured log lines from a plugin into the host's log.
//!
//! Guards against log flooding (a plugin filling disks or drowning other
//! plugins' lines): at most `max-lines` lines per call and `max-line-bytes`
//! per line; control characters are escaped so a plugin cannot forge log
//! lines or terminal escapes. Dropped lines are counted as refusals.

use serde::{Deserialize, Deserializer};

use super::{Cap, Descriptor, HasCap};
use crate::bindings::evos::plugin::log::{Host, Level, add_to_linker};
use crate::manifest::Manifest;
use crate::state::PluginState;
use crate::{Error, Result};

pub const DESCRIPTOR: Descriptor = Descriptor {
    name: "log",
    interfaces: &["evos:plugin/log"],
    privileged: true,
    example: "log = true",
    granted: |m: &Manifest| m.capabilities.log.is_some(),
    link,
};

/// Log limits per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LogGrant {
    #[serde(default = "LogGrant::default_lines")]
    pub max_lines: u32,
    #[serde(default = "LogGrant::default_line_bytes")]
    pub max_line_bytes: u32,
}

impl LogGrant {
    fn default_lines() -> u32 {
        1000
    }
    fn default_line_bytes() -> u32 {
        4096
    }
}

impl Default for LogGrant {
    fn default() -> Self {
        LogGrant {
            max_lines: LogGrant::default_lines(),
            max_line_bytes: LogGrant::default_line_bytes(),
        }
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

/// One line a plugin logged (or wrote to stdout/stderr).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LogLine {
    pub level: &'static str,
    pub message: String,
}

/// Per-call log state.
#[derive(Debug, Default)]
pub struct LogState {
    pub(crate) grant: LogGrant,
    pub(crate) lines: Vec<LogLine>,
    pub(crate) plugin: std::sync::Arc<str>,
}

impl LogState {
    pub(crate) fn new(grants: &super::Grants) -> LogState {
        LogState {
            grant: grants.log.unwrap_or_default(),
            lines: Vec::new(),
            plugin: grants.plugin.clone(),
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
        tracing::event!(target: "evos::plugin", tracing::Level::INFO, plugin = %self.plugin, level, "{message}");
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
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
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

fn link(linker: &mut wasmtime::component::Linker<PluginState>) -> Result<()> {
    add_to_linker::<PluginState, HasCap<LogState>>(linker, |s| Cap {
        state: &mut s.log,
        refusals: &mut s.refusals,
    })
    .map_err(|e| Error::wasmtime("linking evos:plugin/log", e))
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
            },
            ..Default::default()
        };
        assert!(s.push("info", "one").is_ok());
        assert!(s.push("info", "two").is_ok());
        assert!(s.push("info", "three").is_err());
        assert_eq!(s.lines.len(), 2);
    }
}
