//! Crash safety: a child `evos` process is killed with SIGKILL at injected
//! points of deploy, promote and rollback; after restart exactly one
//! consistent version set is active — the one before the change or the one
//! after it — and the audit chain is intact.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use evos::EngineConfig;
use evos::registry::Registry;

use crate::support::*;

fn open(dir: &Path) -> std::sync::Arc<Registry> {
    Registry::open(
        dir,
        EngineConfig {
            cache_dir: Some(dir.join("cache")),
            max_instances: 16,
            ..Default::default()
        },
        Default::default(),
    )
    .expect("open")
}

/// Run `evos <args>` with the crash point armed; SIGKILL it when it gets
/// there. Returns whether the point was reached.
fn run_until_killed(dir: &Path, point: &str, args: &[String]) -> bool {
    let mut child = Command::new(env!("CARGO_BIN_EXE_evos"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .current_dir(root())
        .env("EVOS_CRASHPOINT", point)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn evos");
    let stderr = child.stderr.take().expect("stderr");
    let mut reached = false;
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        if line.trim() == format!("evos-crashpoint {point}") {
            reached = true;
            break;
        }
    }
    // Child::kill sends SIGKILL on Unix: no destructor, no flush, no cleanup.
    let _ = child.kill();
    let _ = child.wait();
    reached
}

fn state(dir: &Path) -> (String, Option<String>) {
    let reg = open(dir);
    let route = reg.route("fraud-score").expect("exactly one route");
    let r = (
        route.stable.plugin.version().to_string(),
        route
            .canary
            .as_ref()
            .map(|(c, _)| c.plugin.version().to_string()),
    );
    // The committed history and the route agree.
    let d = reg
        .store()
        .deployment("fraud-score")
        .expect("db")
        .expect("deployment");
    assert_eq!(d.stable_id, route.stable.version_id);
    assert_eq!(
        d.canary_id,
        route.canary.as_ref().map(|(c, _)| c.version_id)
    );
    let v = reg.store().audit_verify().expect("verify");
    assert!(v.intact, "audit not intact after a crash: {v:?}");
    r
}

/// (crash point, command, a canary already deployed, expected (stable, canary) after restart)
type Case<'a> = (&'a str, &'a Vec<String>, bool, (&'a str, Option<&'a str>));

fn path(p: std::path::PathBuf) -> String {
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_every_step_leaves_one_consistent_version() {
    let v11 = (
        path(root().join("policies/versions/fraud-score-1.1.0.toml")),
        path(component_path("fraud-score-retrained")),
    );
    let deploy_canary = vec![
        "deploy".to_string(),
        v11.0.clone(),
        v11.1.clone(),
        "--canary".into(),
        "30".into(),
    ];
    let promote = vec!["promote".to_string(), "fraud-score".into()];
    let rollback = vec!["rollback".to_string(), "fraud-score".into()];

    let cases: Vec<Case<'_>> = vec![
        ("deploy:before-blob", &deploy_canary, false, ("1.0.0", None)),
        ("deploy:after-blob", &deploy_canary, false, ("1.0.0", None)),
        (
            "deploy:before-commit",
            &deploy_canary,
            false,
            ("1.0.0", None),
        ),
        (
            "deploy:after-commit",
            &deploy_canary,
            false,
            ("1.0.0", Some("1.1.0")),
        ),
        (
            "deploy:before-swap",
            &deploy_canary,
            false,
            ("1.0.0", Some("1.1.0")),
        ),
        (
            "promote:before-commit",
            &promote,
            true,
            ("1.0.0", Some("1.1.0")),
        ),
        ("promote:after-commit", &promote, true, ("1.1.0", None)),
        ("promote:before-swap", &promote, true, ("1.1.0", None)),
        (
            "rollback:before-commit",
            &rollback,
            true,
            ("1.0.0", Some("1.1.0")),
        ),
        ("rollback:after-commit", &rollback, true, ("1.0.0", None)),
        ("rollback:before-swap", &rollback, true, ("1.0.0", None)),
    ];
    for (point, args, with_canary, expected) in cases {
        let dir = crate::support::tempdir("crash");
        {
            let reg = open(&dir);
            reg.deploy(
                manifest("fraud-score"),
                &component("fraud-score"),
                "v1",
                None,
                "test",
            )
            .await
            .expect("deploy");
            if with_canary {
                let m =
                    evos::Manifest::load(root().join("policies/versions/fraud-score-1.1.0.toml"))
                        .expect("manifest");
                reg.deploy(
                    m,
                    &component("fraud-score-retrained"),
                    "v11",
                    Some(30),
                    "test",
                )
                .await
                .expect("canary");
            }
        }
        assert!(
            run_until_killed(&dir, point, args),
            "{point} was never reached"
        );
        let (stable, canary) = state(&dir);
        assert_eq!(
            (stable.as_str(), canary.as_deref()),
            expected,
            "after SIGKILL at {point}"
        );
        // The host keeps working from there.
        let reg = open(&dir);
        let input =
            evos::CallInput::from_json(evos::manifest::Kind::ModelAdapter, sample("fraud-score"))
                .expect("input");
        let r = reg.call("fraud-score", input, None).await.expect("call");
        assert!(r.outcome.is_ok(), "{point}: {:?}", r.outcome);
    }
}
