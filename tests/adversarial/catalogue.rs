//! The catalogue checks itself: every case in `tests/adversarial/` names its
//! threat, advisories are well-formed, and README.md lists exactly the
//! cases that exist (so the published catalogue cannot drift from the
//! tests CI runs).

use std::path::Path;

/// One catalogued case.
#[derive(Debug)]
struct Case {
    /// `module::function`.
    id: String,
    threat: String,
    advisories: Vec<String>,
}

/// Modules that hold cases (everything but the harness itself).
fn case_files(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("tests/adversarial")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .filter_map(|p| {
            let module = p.file_stem()?.to_str()?.to_string();
            (!matches!(module.as_str(), "main" | "catalogue")).then_some(module)
        })
        .map(|m| {
            let text = std::fs::read_to_string(dir.join(format!("{m}.rs"))).expect("read");
            (m, text)
        })
        .collect();
    files.sort();
    files
}

fn cases_in(module: &str, text: &str) -> Vec<Case> {
    let lines: Vec<&str> = text.lines().collect();
    let mut cases = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim();
        if !(t == "#[test]" || t.starts_with("#[tokio::test")) {
            continue;
        }
        // The function follows its attributes.
        let name = lines[i + 1..]
            .iter()
            .map(|l| l.trim())
            .find(|l| !l.starts_with("#["))
            .and_then(|l| {
                let l = l.strip_prefix("async ").unwrap_or(l);
                l.strip_prefix("fn ")?.split('(').next().map(str::to_string)
            })
            .unwrap_or_else(|| panic!("{module}.rs:{}: no fn after a test attribute", i + 1));
        // The doc comment precedes its attributes.
        let mut doc = Vec::new();
        for l in lines[..i].iter().rev().map(|l| l.trim()) {
            if let Some(d) = l.strip_prefix("///") {
                doc.push(d.trim().to_string());
            } else if l.starts_with("#[") {
                continue;
            } else {
                break;
            }
        }
        doc.reverse();
        let text = doc.join(" ");
        let threat = text
            .strip_prefix("Threat:")
            .map(|t| t.split("Advisory:").next().unwrap_or(t).trim().to_string())
            .unwrap_or_default();
        let advisories = text
            .split("Advisory:")
            .skip(1)
            .flat_map(|a| a.split([',', ' ']))
            .map(|a| a.trim().trim_end_matches('.').to_string())
            .filter(|a| a.starts_with("GHSA-") || a.starts_with("CVE-"))
            .collect();
        cases.push(Case {
            id: format!("{module}::{name}"),
            threat,
            advisories,
        });
    }
    cases
}

/// The published catalogue, derived from the cases' doc comments.
fn render(cases: &[Case]) -> String {
    let mut out = String::from(
        "# Adversarial catalogue\n\n\
         Every case is a test in this directory, run by `cargo test --workspace`\n\
         (and so by CI). Each names the threat it covers and, where one applies,\n\
         the advisory it regression-tests. This file is generated from the tests'\n\
         doc comments; `catalogue.rs` fails when it is out of date.\n\n",
    );
    out.push_str(&format!("{} cases.\n\n", cases.len()));
    out.push_str("| case | threat | advisory |\n|---|---|---|\n");
    for c in cases {
        let advisories = c
            .advisories
            .iter()
            .map(|a| {
                if a.starts_with("GHSA-") {
                    format!("[{a}](https://github.com/advisories/{a})")
                } else {
                    a.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            c.id,
            c.threat.replace('|', "\\|"),
            advisories
        ));
    }
    out
}

fn is_ghsa(id: &str) -> bool {
    let parts: Vec<&str> = id.split('-').collect();
    parts.len() == 4
        && parts[0] == "GHSA"
        && parts[1..]
            .iter()
            .all(|p| p.len() == 4 && p.chars().all(|c| c.is_ascii_alphanumeric()))
}

#[test]
fn every_case_names_its_threat_and_the_readme_lists_exactly_the_cases() {
    let dir = crate::support::root().join("tests/adversarial");
    let cases: Vec<Case> = case_files(&dir)
        .iter()
        .flat_map(|(m, text)| cases_in(m, text))
        .collect();
    let mut problems = Vec::new();
    for c in &cases {
        if c.threat.len() < 10 {
            problems.push(format!(
                "{}: the doc comment must start with `/// Threat: <what the attacker does>`",
                c.id
            ));
        }
        for a in &c.advisories {
            if a.starts_with("GHSA-") && !is_ghsa(a) {
                problems.push(format!("{}: malformed advisory id {a}", c.id));
            }
        }
    }
    let path = dir.join("README.md");
    let expected = render(&cases);
    if std::env::var_os("EVOS_BLESS_CATALOGUE").is_some() {
        std::fs::write(&path, &expected).expect("write README.md");
    }
    let readme = std::fs::read_to_string(&path).unwrap_or_default();
    if readme != expected {
        problems.push(
            "tests/adversarial/README.md does not match the cases; regenerate it with \
             `EVOS_BLESS_CATALOGUE=1 cargo test -p evos --test adversarial catalogue`"
                .to_string(),
        );
    }
    assert!(
        problems.is_empty(),
        "catalogue problems:\n{}",
        problems.join("\n")
    );
    assert!(
        cases.len() >= 50,
        "the catalogue holds {} cases; it promises at least 50",
        cases.len()
    );
}
