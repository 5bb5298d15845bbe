//! `pii-guard` policy: denies an action whose payload or rationale carries
//! unredacted personal data, so that no proposed action can push it to an
//! outside system or into the review queue in clear text.
//!
//! Detected kinds:
//! - US social security numbers written `ddd-dd-dddd`, excluding numbers the
//!   SSA never issues (area 000, 666 or 900-999, group 00, serial 0000);
//! - payment card numbers: 13 to 19 digits, optionally grouped with single
//!   spaces or dashes, passing the Luhn check;
//! - e-mail addresses `local@domain.tld`.
//!
//! The payload is walked as JSON (string values, numbers and object keys) and
//! every finding is reported with its location as a JSON path, e.g.
//! `payload contains an unredacted e-mail address at $.claimant.contact
//! (j***@***.com)`. Reasons and logs only ever show masked values. Redacted
//! forms such as `***-**-1234`, `**** 1111` or `[REDACTED]` pass.

use evos_sdk::{Action, Decision, Event, Policy, log};
use serde_json::Value;

/// Findings spelled out in one deny reason before the rest are counted.
const MAX_REPORTED: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Ssn,
    Card,
    Email,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::Ssn => "US social security number",
            Kind::Card => "payment card number",
            Kind::Email => "e-mail address",
        }
    }
}

/// One piece of PII found in a text, in masked form.
#[derive(Debug, PartialEq, Eq)]
struct Hit {
    kind: Kind,
    masked: String,
}

/// A hit and where it was found.
struct Finding {
    /// `payload` or `rationale`.
    part: &'static str,
    /// JSON path inside the payload; `None` for plain text.
    path: Option<String>,
    hit: Hit,
}

impl Finding {
    fn describe(&self) -> String {
        let location = match &self.path {
            Some(path) => format!(" at {path}"),
            None => String::new(),
        };
        format!(
            "{} contains an unredacted {}{location} ({})",
            self.part,
            self.hit.kind.describe(),
            self.hit.masked
        )
    }
}

struct PiiGuard;

impl Policy for PiiGuard {
    fn evaluate(action: Action, _event: Event) -> Decision {
        let decision = check(&action);
        log::debug(&format!(
            "{} for event {}: {}",
            action.kind,
            action.event_id,
            decision.summary()
        ));
        decision
    }
}

evos_sdk::export_policy!(PiiGuard);

/// The verdict on one action: deny when the payload or rationale holds PII.
fn check(action: &Action) -> Decision {
    let mut findings = Vec::new();
    match serde_json::from_str::<Value>(&action.payload) {
        Ok(payload) => walk(&payload, "$".to_string(), &mut findings),
        Err(_) => findings.extend(scan(&action.payload).into_iter().map(|hit| Finding {
            part: "payload",
            path: None,
            hit,
        })),
    }
    findings.extend(scan(&action.rationale).into_iter().map(|hit| Finding {
        part: "rationale",
        path: None,
        hit,
    }));

    if findings.is_empty() {
        return Decision::Allow;
    }
    let mut reasons: Vec<String> = findings
        .iter()
        .take(MAX_REPORTED)
        .map(Finding::describe)
        .collect();
    if findings.len() > MAX_REPORTED {
        reasons.push(format!(
            "and {} more finding(s)",
            findings.len() - MAX_REPORTED
        ));
    }
    Decision::Deny(reasons.join("; "))
}

/// Scan every string, integer and object key below `value`.
fn walk(value: &Value, path: String, findings: &mut Vec<Finding>) {
    fn record(findings: &mut Vec<Finding>, hits: Vec<Hit>, path: &str) {
        findings.extend(hits.into_iter().map(|hit| Finding {
            part: "payload",
            path: Some(path.to_string()),
            hit,
        }))
    }
    match value {
        Value::String(s) => record(findings, scan(s), &path),
        // Integers can carry identifiers (a card number sent as a number);
        // a fractional number is a measurement such as a model score, whose
        // digits must not be mistaken for a card number.
        Value::Number(n) if n.is_u64() || n.is_i64() => {
            record(findings, scan(&n.to_string()), &path)
        }
        Value::Number(_) => {}
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(item, format!("{path}[{i}]"), findings);
            }
        }
        Value::Object(fields) => {
            for (key, item) in fields {
                let key_hits = scan(key);
                let child = if key_hits.is_empty() {
                    format!("{path}{}", key_segment(key))
                } else {
                    // The key itself is PII: name it by its masked form only.
                    let masked: Vec<&str> = key_hits.iter().map(|h| h.masked.as_str()).collect();
                    let child = format!("{path}[key {}]", masked.join(" "));
                    record(findings, key_hits, &child);
                    child
                };
                walk(item, child, findings);
            }
        }
        Value::Null | Value::Bool(_) => {}
    }
}

/// `.name` for identifier-like keys, `["..."]` otherwise.
fn key_segment(key: &str) -> String {
    let mut chars = key.chars();
    let identifier = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if identifier {
        format!(".{key}")
    } else {
        format!("[{}]", Value::String(key.to_string()))
    }
}

/// All PII in `text`, masked, in the order SSNs, cards, e-mail addresses.
fn scan(text: &str) -> Vec<Hit> {
    let bytes = text.as_bytes();
    let mut hits = ssns(bytes);
    hits.extend(cards(bytes));
    hits.extend(emails(bytes));
    hits
}

fn digits_value(digits: &[u8]) -> u32 {
    digits
        .iter()
        .fold(0, |acc, d| acc * 10 + u32::from(d - b'0'))
}

/// `ddd-dd-dddd` not adjacent to other digits, with an issuable area, group
/// and serial.
fn ssns(b: &[u8]) -> Vec<Hit> {
    const SHAPE: &[u8; 11] = b"ddd-dd-dddd";
    let mut hits = Vec::new();
    if b.len() < SHAPE.len() {
        return hits;
    }
    for start in 0..=b.len() - SHAPE.len() {
        let window = &b[start..start + SHAPE.len()];
        let shaped = window.iter().zip(SHAPE).all(|(c, s)| match s {
            b'd' => c.is_ascii_digit(),
            _ => c == s,
        });
        if !shaped
            || (start > 0 && b[start - 1].is_ascii_digit())
            || b.get(start + SHAPE.len()).is_some_and(u8::is_ascii_digit)
        {
            continue;
        }
        let area = digits_value(&window[0..3]);
        let group = digits_value(&window[4..6]);
        let serial = digits_value(&window[7..11]);
        if area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0 {
            continue;
        }
        hits.push(Hit {
            kind: Kind::Ssn,
            masked: format!("***-**-{}", String::from_utf8_lossy(&window[7..11])),
        });
    }
    hits
}

/// Runs of digit groups joined by single spaces or dashes; every contiguous
/// span of groups holding 13-19 digits that passes Luhn is a card number.
fn cards(b: &[u8]) -> Vec<Hit> {
    let mut hits = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let mut groups: Vec<&[u8]> = Vec::new();
        let mut start = i;
        loop {
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            groups.push(&b[start..i]);
            let joined =
                i + 1 < b.len() && (b[i] == b' ' || b[i] == b'-') && b[i + 1].is_ascii_digit();
            if !joined {
                break;
            }
            i += 1;
            start = i;
        }
        let mut first = 0;
        while first < groups.len() {
            let mut digits: Vec<u8> = Vec::new();
            let mut found = None;
            for (last, group) in groups.iter().enumerate().skip(first) {
                digits.extend_from_slice(group);
                if digits.len() > 19 {
                    break;
                }
                if digits.len() >= 13 && luhn(&digits) && digits.iter().any(|&d| d != b'0') {
                    found = Some(last);
                }
            }
            match found {
                Some(last) => {
                    let digits: Vec<u8> = groups[first..=last].concat();
                    let tail = String::from_utf8_lossy(&digits[digits.len() - 4..]).into_owned();
                    hits.push(Hit {
                        kind: Kind::Card,
                        masked: format!("**** {tail}"),
                    });
                    first = last + 1;
                }
                None => first += 1,
            }
        }
    }
    hits
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(d - b'0');
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn is_local_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b".!#$%&'+/=?^_`{|}~-".contains(&c)
}

fn is_domain_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'.' || c == b'-'
}

/// `local@domain.tld` where the local part is non-empty and unmasked and the
/// domain has at least two labels and an alphabetic top-level label.
fn emails(b: &[u8]) -> Vec<Hit> {
    let mut hits = Vec::new();
    for (at, _) in b.iter().enumerate().filter(|(_, c)| **c == b'@') {
        let mut start = at;
        while start > 0 && is_local_char(b[start - 1]) {
            start -= 1;
        }
        let mut end = at + 1;
        while end < b.len() && is_domain_char(b[end]) {
            end += 1;
        }
        let local = &b[start..at];
        // A trailing dot or dash ends the sentence, not the domain.
        let mut domain = &b[at + 1..end];
        while let Some((last, rest)) = domain.split_last() {
            if *last == b'.' || *last == b'-' {
                domain = rest;
            } else {
                break;
            }
        }
        let local = trim_dots(local);
        if local.is_empty() || (start > 0 && b[start - 1] == b'*') || !valid_domain(domain) {
            continue;
        }
        let tld = domain.rsplit(|c| *c == b'.').next().unwrap_or_default();
        hits.push(Hit {
            kind: Kind::Email,
            masked: format!(
                "{}***@***.{}",
                char::from(local[0]),
                String::from_utf8_lossy(tld)
            ),
        });
    }
    hits
}

fn trim_dots(mut s: &[u8]) -> &[u8] {
    while let [b'.', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b'.'] = s {
        s = rest;
    }
    s
}

fn valid_domain(domain: &[u8]) -> bool {
    let labels: Vec<&[u8]> = domain.split(|c| *c == b'.').collect();
    labels.len() >= 2
        && labels
            .iter()
            .all(|l| !l.is_empty() && l[0] != b'-' && l[l.len() - 1] != b'-')
        && labels
            .last()
            .is_some_and(|tld| tld.len() >= 2 && tld.iter().all(u8::is_ascii_alphabetic))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<Kind> {
        scan(text).into_iter().map(|h| h.kind).collect()
    }

    fn decide(payload: &str, rationale: &str) -> Decision {
        let action = Action {
            kind: "approve-payout".into(),
            event_id: "C-1".into(),
            payload: payload.into(),
            rationale: rationale.into(),
        };
        check(&action)
    }

    #[test]
    fn finds_ssns_with_issuable_numbers_only() {
        assert_eq!(kinds("ssn 123-45-6789."), vec![Kind::Ssn]);
        assert_eq!(scan("123-45-6789")[0].masked, "***-**-6789");
        for invalid in [
            "000-12-3456",
            "666-12-3456",
            "912-34-5678",
            "123-00-4567",
            "123-45-0000",
        ] {
            assert!(kinds(invalid).is_empty(), "{invalid}");
        }
        assert!(kinds("1123-45-6789").is_empty());
        assert!(kinds("***-**-6789").is_empty());
    }

    #[test]
    fn finds_luhn_valid_card_numbers() {
        assert_eq!(kinds("card 4111 1111 1111 1111 exp"), vec![Kind::Card]);
        assert_eq!(kinds("4111-1111-1111-1111"), vec![Kind::Card]);
        assert_eq!(kinds("378282246310005"), vec![Kind::Card]);
        assert_eq!(scan("4111111111111111")[0].masked, "**** 1111");
        assert_eq!(kinds("4111 1111 1111 1111 2024"), vec![Kind::Card]);
        assert!(kinds("4111 1111 1111 1112").is_empty());
        assert!(kinds("**** **** **** 1111").is_empty());
        assert!(kinds("0000 0000 0000 0000").is_empty());
        assert!(kinds("POL-20931 amount 250").is_empty());
    }

    #[test]
    fn finds_email_addresses() {
        assert_eq!(kinds("mail jane.doe+x@example.co.uk."), vec![Kind::Email]);
        assert_eq!(scan("jane@example.com")[0].masked, "j***@***.com");
        assert!(kinds("j***@example.com").is_empty());
        assert!(kinds("[REDACTED]@example.com").is_empty());
        assert!(kinds("user@localhost").is_empty());
        assert!(kinds("a @ b.com").is_empty());
        assert!(kinds("x@1.2").is_empty());
    }

    #[test]
    fn deny_names_kind_and_location_without_the_value() {
        let payload = r#"{"claimant":{"contact":"jane.doe@example.com"},"amount":250}"#;
        match decide(payload, "ok") {
            Decision::Deny(reason) => {
                assert_eq!(
                    reason,
                    "payload contains an unredacted e-mail address at $.claimant.contact (j***@***.com)"
                );
            }
            other => panic!("expected deny, got {other:?}"),
        }
        match decide(
            r#"{"notes":["a","card 4111111111111111"]}"#,
            "SSN 123-45-6789",
        ) {
            Decision::Deny(reason) => {
                assert!(
                    reason.contains("payment card number at $.notes[1]"),
                    "{reason}"
                );
                assert!(
                    reason.contains("rationale contains an unredacted US social security number"),
                    "{reason}"
                );
                assert!(
                    !reason.contains("4111111111111111") && !reason.contains("123-45"),
                    "{reason}"
                );
            }
            other => panic!("expected deny, got {other:?}"),
        }
        match decide(r#"{"jane@example.com": 1}"#, "") {
            Decision::Deny(reason) => assert!(!reason.contains("jane@"), "{reason}"),
            other => panic!("expected deny, got {other:?}"),
        }
        assert!(matches!(
            decide(r#"{"ssn":"***-**-6789","email":"[REDACTED]"}"#, "clean"),
            Decision::Allow
        ));
    }
}
