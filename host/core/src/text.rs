//! Human-readable output of untrusted text.
//!
//! Much of what evos prints comes from outside: URL paths and plugin names
//! an anonymous client sent (audited refusals), actors, reasons, review
//! comments, a plugin's log lines, a component's import names. Printed raw,
//! a newline forges a whole log line and an escape sequence recolours (or
//! rewrites) the operator's terminal. Every human-readable output passes
//! such text through [`escape`]; JSON output stays exact, since JSON
//! escapes control characters itself and its readers are programs.

use std::borrow::Cow;

/// Whether `c` must not reach a terminal as itself: C0 and C1 controls
/// (newline, carriage return, ESC, CSI...), DEL, and the Unicode
/// bidirectional overrides and isolates that reorder what is shown
/// (CVE-2021-42574, "Trojan Source").
pub fn dangerous(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// `text` with every dangerous character written as a Rust escape (`\n`,
/// `\u{1b}`, `\u{202e}`), so one value prints as one line of visible text.
/// Borrows when there is nothing to escape.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(dangerous) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if dangerous(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// [`escape`] for text meant to span lines (an error with a quoted
/// excerpt): newlines stay, every other dangerous character is escaped.
pub fn escape_lines(text: &str) -> String {
    text.split('\n').map(escape).collect::<Vec<_>>().join("\n")
}

/// `text` cut to at most `max` bytes (at a character boundary) when longer,
/// followed by its length and the start of its sha256, so a record of
/// untrusted input stays small and still identifies what was sent:
/// `/v1/plugins/aaaa…[61440 bytes, sha256:3f2a…]`.
pub fn bounded(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes()));
    Cow::Owned(format!(
        "{}…[{} bytes, sha256:{}]",
        &text[..cut],
        text.len(),
        &digest[..16]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_overrides_are_escaped() {
        assert_eq!(escape("plain text"), Cow::Borrowed("plain text"));
        assert_eq!(escape("a\nb"), "a\\nb");
        assert_eq!(escape("\x1b[31mred"), "\\u{1b}[31mred");
        assert_eq!(escape("\r\t\x7f"), "\\r\\t\\u{7f}");
        assert_eq!(escape("csi\u{9b}2J"), "csi\\u{9b}2J");
        assert_eq!(escape("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(escape("café ✓"), Cow::Borrowed("café ✓"));
    }

    #[test]
    fn bounded_cuts_at_a_char_boundary_and_names_the_original() {
        assert_eq!(bounded("short", 8), Cow::Borrowed("short"));
        let long = "é".repeat(100);
        let b = bounded(&long, 5);
        assert!(b.starts_with("éé…[200 bytes, sha256:"), "{b}");
        assert_ne!(bounded(&"a".repeat(300), 10), bounded(&"a".repeat(301), 10));
    }

    #[test]
    fn escape_lines_keeps_newlines_only() {
        assert_eq!(escape_lines("a\n\x1b[2Jb\r"), "a\n\\u{1b}[2Jb\\r");
    }
}
