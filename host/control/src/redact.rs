//! PII redaction before anything is recorded.
//!
//! [`Redactor::redact`] walks a JSON value and replaces personal data with
//! stable keyed pseudonyms: `[email:3f9a1c0e5b7d2a64]` is the first 8 bytes
//! of HMAC-SHA256(host key, `email|<value, normalized>`) in hex, so the same
//! address always gets the same pseudonym on one host (joins and counts
//! still work) while nobody without the key can test a guess against it.
//!
//! Found by the built-in detectors, in every string (and in numbers that
//! could be a card number):
//!
//! | kind    | what                                                           |
//! |---------|----------------------------------------------------------------|
//! | `email` | `name@domain.tld`                                              |
//! | `ssn`   | US social security numbers, `123-45-6789`                      |
//! | `card`  | 13 to 19 digits (spaces or dashes allowed) passing the Luhn check |
//! | `iban`  | IBANs passing the ISO 13616 mod-97 check                       |
//! | `phone` | 9 to 15 digits: with a leading `+`, an area code in brackets, or `415-555-0199` |
//!
//! Strings that hide text are opened first: JSON inside a string is parsed
//! and redacted as JSON, percent-encoded text is decoded, and base64 that
//! decodes to text is decoded; when anything was found inside, the whole
//! string is replaced by one pseudonym of kind `encoded`. Values at
//! configured JSON paths (`/payload/claimant_id`, `*` for any key or index)
//! are replaced whole (kind `field`), whatever they hold.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use hmac::{Hmac, Mac};
use regex::Regex;
use serde_json::Value;
use sha2::Sha256;

/// The host's redaction key in `dir` (`redaction.key`, 32 random bytes,
/// readable by the host's user only), made on first use.
pub fn host_key(dir: &std::path::Path) -> crate::Result<Vec<u8>> {
    use std::io::{Read, Write};
    let path = dir.join("redaction.key");
    if let Ok(key) = std::fs::read(&path)
        && key.len() >= 16
    {
        return Ok(key);
    }
    let mut key = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .map_err(|e| crate::Error::io("/dev/urandom", e))?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(&path) {
        Ok(mut f) => {
            f.write_all(&key).map_err(|e| crate::Error::io(&path, e))?;
            f.sync_all().map_err(|e| crate::Error::io(&path, e))?;
            Ok(key)
        }
        // Another process made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::read(&path).map_err(|e| crate::Error::io(&path, e))
        }
        Err(e) => Err(crate::Error::io(&path, e)),
    }
}

/// What was replaced, by kind.
pub type Redactions = BTreeMap<&'static str, u64>;

/// Redacts JSON values with one host key.
#[derive(Clone)]
pub struct Redactor {
    key: Vec<u8>,
    paths: Vec<Vec<String>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

struct Detectors {
    email: Regex,
    ssn: Regex,
    card: Regex,
    iban: Regex,
    phone: Regex,
    percent: Regex,
}

fn detectors() -> Option<&'static Detectors> {
    static DETECTORS: OnceLock<Option<Detectors>> = OnceLock::new();
    DETECTORS
        .get_or_init(|| {
            Some(Detectors {
                email: Regex::new(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}").ok()?,
                ssn: Regex::new(r"\b\d{3}-\d{2}-\d{4}\b").ok()?,
                card: Regex::new(r"\b\d(?:[ -]?\d){12,18}\b").ok()?,
                iban: Regex::new(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b").ok()?,
                // International with a `+`, an area code in brackets, or
                // 3-3-4 digits joined by dots or dashes; digit groups with
                // spaces alone (amounts, ids) are not phone numbers.
                phone: Regex::new(
                    r"\+\d[\d ().-]{7,18}\d|\(\d{2,4}\)[ .-]?\d{3,4}[ .-]?\d{3,4}|\b\d{3}[.-]\d{3}[.-]\d{4}\b",
                )
                .ok()?,
                percent: Regex::new(r"%[0-9A-Fa-f]{2}").ok()?,
            })
        })
        .as_ref()
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(*d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn iban_valid(text: &str) -> bool {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut rem: u32 = 0;
    for c in tail.chars().chain(head.chars()) {
        let v = match c.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        rem = if v < 10 {
            (rem * 10 + v) % 97
        } else {
            (rem * 100 + v) % 97
        };
    }
    rem == 1
}

fn digits_of(text: &str) -> Vec<u8> {
    text.bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect()
}

impl Redactor {
    /// A redactor keyed with `key` (at least 16 bytes), replacing the
    /// values at `paths` (JSON pointers, `*` for any key or index) whole.
    pub fn new(key: &[u8], paths: &[String]) -> Result<Redactor, String> {
        if key.len() < 16 {
            return Err("the redaction key must be at least 16 bytes".into());
        }
        let paths = paths
            .iter()
            .map(|p| {
                let rest = p.strip_prefix('/').ok_or_else(|| {
                    format!(
                        "redact path {p:?}: write a JSON pointer such as \"/payload/claimant_id\""
                    )
                })?;
                Ok(rest
                    .split('/')
                    .map(|s| s.replace("~1", "/").replace("~0", "~"))
                    .collect())
            })
            .collect::<Result<_, String>>()?;
        Ok(Redactor {
            key: key.to_vec(),
            paths,
        })
    }

    /// The pseudonym of `raw` as a `kind`.
    pub fn pseudonym(&self, kind: &str, raw: &str) -> String {
        let normalized = match kind {
            "email" => raw.trim().to_ascii_lowercase(),
            "card" | "ssn" | "phone" => digits_of(raw)
                .iter()
                .map(|d| char::from(b'0' + d))
                .collect(),
            "iban" => raw
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect::<String>()
                .to_ascii_uppercase(),
            _ => raw.to_string(),
        };
        let tag = match Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(mut mac) => {
                mac.update(kind.as_bytes());
                mac.update(b"|");
                mac.update(normalized.as_bytes());
                hex::encode(&mac.finalize().into_bytes()[..8])
            }
            // A key of any length is valid for HMAC; keep the shape anyway.
            Err(_) => "0".repeat(16),
        };
        format!("[{kind}:{tag}]")
    }

    /// Replace the personal data in `value`; what was replaced, by kind.
    pub fn redact(&self, value: &mut Value) -> Redactions {
        let mut found = Redactions::new();
        for path in &self.paths {
            self.redact_path(value, path, &mut found);
        }
        self.walk(value, &mut found, 0);
        found
    }

    /// Replace the values at the configured paths only.
    pub fn redact_paths(&self, value: &mut Value, found: &mut Redactions) {
        for path in &self.paths {
            self.redact_path(value, path, found);
        }
    }

    /// Run the built-in detectors only (no paths).
    pub fn redact_detected(&self, value: &mut Value, found: &mut Redactions) {
        self.walk(value, found, 0);
    }

    /// [`Redactor::redact_detected`] over several values that share
    /// strings (one event seen by every call on its path): each distinct
    /// string is examined once.
    pub fn redact_detected_all(&self, values: &mut [&mut Value], found: &mut Redactions) {
        let mut seen: std::collections::HashMap<String, (Option<String>, Redactions)> =
            std::collections::HashMap::new();
        for v in values.iter_mut() {
            self.walk_memo(v, found, &mut seen);
        }
    }

    fn walk_memo(
        &self,
        value: &mut Value,
        found: &mut Redactions,
        seen: &mut std::collections::HashMap<String, (Option<String>, Redactions)>,
    ) {
        match value {
            Value::String(s) => {
                let (replaced, counts) = match seen.get(s.as_str()) {
                    Some(hit) => hit.clone(),
                    None => {
                        let mut counts = Redactions::new();
                        let replaced = self.redact_text(s, &mut counts, 0);
                        seen.insert(s.clone(), (replaced.clone(), counts.clone()));
                        (replaced, counts)
                    }
                };
                for (k, n) in counts {
                    *found.entry(k).or_default() += n;
                }
                if let Some(r) = replaced {
                    *s = r;
                }
            }
            Value::Array(items) => {
                for v in items {
                    self.walk_memo(v, found, seen);
                }
            }
            Value::Object(map) => {
                for v in map.values_mut() {
                    self.walk_memo(v, found, seen);
                }
            }
            Value::Number(_) => self.walk(value, found, 0),
            Value::Null | Value::Bool(_) => {}
        }
    }

    fn redact_path(&self, value: &mut Value, path: &[String], found: &mut Redactions) {
        let Some((first, rest)) = path.split_first() else {
            if !matches!(value, Value::Null) {
                let raw = match &*value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                *value = Value::String(self.pseudonym("field", &raw));
                *found.entry("field").or_default() += 1;
            }
            return;
        };
        match value {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    if first == "*" || first == k {
                        self.redact_path(v, rest, found);
                    }
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter_mut().enumerate() {
                    if first == "*" || first.parse::<usize>().is_ok_and(|n| n == i) {
                        self.redact_path(v, rest, found);
                    }
                }
            }
            _ => {}
        }
    }

    fn walk(&self, value: &mut Value, found: &mut Redactions, depth: usize) {
        match value {
            Value::String(s) => {
                if let Some(replaced) = self.redact_text(s, found, depth) {
                    *s = replaced;
                }
            }
            Value::Number(n) => {
                // A card number sent as a JSON number.
                let text = n.to_string();
                if text.bytes().all(|b| b.is_ascii_digit())
                    && (13..=19).contains(&text.len())
                    && luhn(&digits_of(&text))
                {
                    *value = Value::String(self.pseudonym("card", &text));
                    *found.entry("card").or_default() += 1;
                }
            }
            Value::Array(items) => {
                for v in items {
                    self.walk(v, found, depth);
                }
            }
            Value::Object(map) => {
                for v in map.values_mut() {
                    self.walk(v, found, depth);
                }
            }
            Value::Null | Value::Bool(_) => {}
        }
    }

    /// `text` with its personal data replaced, or `None` when it has none.
    fn redact_text(&self, text: &str, found: &mut Redactions, depth: usize) -> Option<String> {
        let d = detectors()?;
        if depth < 3
            && let Some(inner) = self.decoded(text, d)
        {
            let mut hidden = Redactions::new();
            let mut inner = inner;
            self.walk(&mut inner, &mut hidden, depth + 1);
            if !hidden.is_empty() {
                for (k, n) in hidden {
                    *found.entry(k).or_default() += n;
                }
                *found.entry("encoded").or_default() += 1;
                return Some(self.pseudonym("encoded", text));
            }
        }
        let mut out = text.to_string();
        let mut changed = false;
        let mut replace =
            |re: &Regex, kind: &'static str, valid: &dyn Fn(&str) -> bool, out: &mut String| {
                let mut next = String::with_capacity(out.len());
                let mut last = 0;
                for m in re.find_iter(out) {
                    if !valid(m.as_str()) {
                        continue;
                    }
                    next.push_str(&out[last..m.start()]);
                    next.push_str(&self.pseudonym(kind, m.as_str()));
                    last = m.end();
                    *found.entry(kind).or_default() += 1;
                    changed = true;
                }
                if last > 0 {
                    next.push_str(&out[last..]);
                    *out = next;
                }
            };
        replace(&d.email, "email", &|_| true, &mut out);
        replace(&d.iban, "iban", &iban_valid, &mut out);
        replace(&d.ssn, "ssn", &|_| true, &mut out);
        replace(&d.card, "card", &|m| luhn(&digits_of(m)), &mut out);
        replace(
            &d.phone,
            "phone",
            &|m| (9..=15).contains(&digits_of(m).len()),
            &mut out,
        );
        changed.then_some(out)
    }

    /// The value a string hides: JSON in a string, percent-encoded or
    /// base64 text.
    fn decoded(&self, text: &str, d: &Detectors) -> Option<Value> {
        let trimmed = text.trim();
        if (trimmed.starts_with('{') || trimmed.starts_with('['))
            && let Ok(v) = serde_json::from_str::<Value>(trimmed)
        {
            return Some(v);
        }
        if d.percent.is_match(text) {
            let decoded = percent_decode(text)?;
            if decoded != text {
                return Some(Value::String(decoded));
            }
        }
        if trimmed.len() >= 16
            && trimmed.len().is_multiple_of(4)
            && trimmed
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
        {
            let bytes = base64_decode(trimmed)?;
            let text = String::from_utf8(bytes).ok()?;
            if text.chars().all(|c| !c.is_control() || c.is_whitespace()) {
                return Some(Value::String(text));
            }
        }
        None
    }
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes.get(i), bytes.get(i + 1), bytes.get(i + 2)) {
            (Some(b'%'), Some(h), Some(l)) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
                let hex = [*h, *l];
                let s = std::str::from_utf8(&hex).ok()?;
                out.push(u8::from_str_radix(s, 16).ok()?);
                i += 3;
            }
            (Some(b'+'), _, _) => {
                out.push(b' ');
                i += 1;
            }
            (Some(b), _, _) => {
                out.push(*b);
                i += 1;
            }
            (None, _, _) => break,
        }
    }
    String::from_utf8(out).ok()
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        })
    }
    let bytes = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n: u32 = 0;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c)? << (18 - 6 * i);
        }
        let take = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        for i in 0..take {
            out.push(((n >> (16 - 8 * i)) & 0xff) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn redactor() -> Redactor {
        Redactor::new(
            b"0123456789abcdef0123456789abcdef",
            &["/payload/claimant_id".into(), "/people/*/name".into()],
        )
        .unwrap()
    }

    fn text(v: &Value) -> String {
        v.to_string()
    }

    #[test]
    fn redacting_many_values_at_once_matches_one_at_a_time() {
        let r = redactor();
        let event = json!({"incident": "mail a@b.example or call +1 415 555 0199", "n": 4111111111111111u64, "s": "e30="});
        let mut one = [event.clone(), json!({"event": event.clone(), "x": "plain"})];
        let mut each = Redactions::new();
        for v in &mut one {
            r.redact_detected(v, &mut each);
        }
        let mut all = [event.clone(), json!({"event": event, "x": "plain"})];
        let mut found = Redactions::new();
        let [a, b] = &mut all;
        r.redact_detected_all(&mut [a, b], &mut found);
        assert_eq!(one, all);
        assert_eq!(each, found);
        assert_eq!(found["email"], 2);
    }

    #[test]
    fn each_detector_replaces_what_it_finds_and_nothing_else() {
        let r = redactor();
        let mut v = json!({
            "note": "Write to Jane.Doe@Example.com or call +1 (415) 555-0199; SSN 123-45-6789.",
            "card": "4111 1111 1111 1111",
            "not_a_card": "4111 1111 1111 1112",
            "iban": "DE89 3704 0044 0532 0130 00",
            "not_an_iban": "DE00 3704 0044 0532 0130 00",
            "amount": 1250.5,
            "policy": "POL-20931",
            "date": "2026-12-01",
            "card_number": 4111111111111111u64,
        });
        let found = r.redact(&mut v);
        let out = text(&v);
        for raw in [
            "Jane.Doe",
            "555-0199",
            "123-45-6789",
            "4111 1111 1111 1111",
            "DE89 3704",
            "4111111111111111",
        ] {
            assert!(!out.contains(raw), "{raw} survived: {out}");
        }
        for kept in [
            "4111 1111 1111 1112",
            "DE00 3704",
            "1250.5",
            "POL-20931",
            "2026-12-01",
        ] {
            assert!(out.contains(kept), "{kept} was redacted: {out}");
        }
        assert_eq!(found.get("email"), Some(&1));
        assert_eq!(found.get("ssn"), Some(&1));
        assert_eq!(found.get("card"), Some(&2));
        assert_eq!(found.get("iban"), Some(&1));
        assert_eq!(found.get("phone"), Some(&1));
    }

    #[test]
    fn pseudonyms_are_stable_per_key_and_normalized() {
        let r = redactor();
        assert_eq!(
            r.pseudonym("email", "Jane@Example.com"),
            r.pseudonym("email", " jane@example.com")
        );
        assert_eq!(
            r.pseudonym("card", "4111-1111-1111-1111"),
            r.pseudonym("card", "4111111111111111")
        );
        assert_ne!(
            r.pseudonym("email", "a@example.com"),
            r.pseudonym("email", "b@example.com")
        );
        let other = Redactor::new(b"another key of 32 bytes, at least", &[]).unwrap();
        assert_ne!(
            r.pseudonym("email", "a@example.com"),
            other.pseudonym("email", "a@example.com")
        );
        assert!(r.pseudonym("email", "a@example.com").starts_with("[email:"));
    }

    #[test]
    fn configured_paths_are_replaced_whole() {
        let r = redactor();
        let mut v = json!({"payload": {"claimant_id": "CL-4711", "amount": 3}, "people": [{"name": "Ann"}, {"name": "Bo"}]});
        let found = r.redact(&mut v);
        assert_eq!(found.get("field"), Some(&3));
        assert_eq!(v["payload"]["amount"], 3);
        assert_eq!(
            v["payload"]["claimant_id"],
            json!(r.pseudonym("field", "CL-4711"))
        );
        assert!(!text(&v).contains("Ann") && !text(&v).contains("\"Bo\""));
    }

    #[test]
    fn nested_and_encoded_pii_is_found() {
        let r = redactor();
        let inner = r#"{"contact": {"email": "ann@example.org"}}"#;
        let url = "mailto=ann%40example.org&x=1";
        let b64 = "Y29udGFjdDogYW5uQGV4YW1wbGUub3Jn"; // "contact: ann@example.org"
        let mut v =
            json!({"raw": inner, "url": url, "blob": b64, "deep": [[{"x": "ann@example.org"}]]});
        let found = r.redact(&mut v);
        let out = text(&v);
        assert!(
            !out.contains("ann@example.org") && !out.contains("ann%40") && !out.contains(b64),
            "{out}"
        );
        assert_eq!(found.get("encoded"), Some(&3), "{found:?}");
        assert_eq!(found.get("email"), Some(&4), "{found:?}");
        // Plain base64-looking text without PII stays.
        let mut plain = json!({"id": "QUJDREVGR0hJSktMTU5PUA=="});
        assert!(r.redact(&mut plain).is_empty());
    }

    #[test]
    fn bad_configuration_is_explained() {
        assert!(
            Redactor::new(b"short", &[])
                .unwrap_err()
                .contains("16 bytes")
        );
        assert!(
            Redactor::new(&[7; 32], &["payload.x".into()])
                .unwrap_err()
                .contains("JSON pointer")
        );
    }
}
