//! Manifest errors as people see them: each `tests/ui/<case>.toml` is a
//! manifest evos must refuse, and `tests/ui/<case>.err` the exact message
//! (the repository's path written `$ROOT`). A changed message fails here
//! until it is reviewed and blessed:
//!
//!     EVOS_BLESS_UI=1 cargo test -p evos --test integration ui

use crate::support::*;

#[test]
fn manifest_errors_match_their_snapshots() {
    let dir = root().join("tests/ui");
    let bless = std::env::var_os("EVOS_BLESS_UI").is_some();
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/ui")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 15, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let text = std::fs::read_to_string(case).expect("case");
        let origin = format!(
            "tests/ui/{}",
            case.file_name().expect("name").to_string_lossy()
        );
        let message = match evos::Manifest::parse(&text, &origin, &dir) {
            Ok(_) => "(accepted, but every case must be refused)".to_string(),
            Err(e) => e.to_string(),
        };
        let message = format!(
            "{}\n",
            message.replace(&root().display().to_string(), "$ROOT")
        );
        let expected_path = case.with_extension("err");
        if bless {
            std::fs::write(&expected_path, &message).expect("bless");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != message {
            failures.push(format!(
                "{origin}\n  expected: {expected:?}\n  got:      {message:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "manifest errors changed (review, then bless with EVOS_BLESS_UI=1):\n{}",
        failures.join("\n")
    );
}
