//! Shadow versions: a shadow call has no effects (kv, http, sockets,
//! files), a shadow deployment never changes a live answer, its answers
//! are compared with the live ones, and under overload mirrored calls are
//! shed and counted without failing a live call.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use evos::capability::kv::{KvStore, MemoryKv};
use evos::registry::Registry;
use evos::store::Slot;
use evos::{CallInput, Outcome};
use serde_json::json;

use crate::support::*;

fn agent_with(name: &str, capabilities: &str) -> evos::Manifest {
    let text = format!(
        "[plugin]\nname = \"{name}\"\nkind = \"agent\"\nversion = \"0.1.0\"\n\n[limits]\ntimeout = \"10s\"\n\n[capabilities]\n{capabilities}\n"
    );
    manifest_from(name, &text)
}

fn event(kind: &str, payload: serde_json::Value) -> serde_json::Value {
    json!({"id": "e-1", "kind": kind, "payload": payload})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shadow_call_keeps_its_kv_writes_to_itself() {
    let live_kv: Arc<dyn KvStore> = Arc::new(MemoryKv::default());
    let rt = evos::Runtime::with_parts(engine(), live_kv.clone(), BTreeMap::new());
    let plugin = load_with(
        &rt,
        "kv-flood",
        agent_with("kv-flood", "kv = { max-value-bytes = 1024, max-keys = 20 }"),
    );
    let input = CallInput::from_json(plugin.kind(), event("flood", json!({}))).expect("input");
    let shadow = rt
        .call_shadow(&plugin, input.clone(), None)
        .await
        .expect("shadow call");
    // The shadow met the quota as the live version would (its own writes
    // count against it)...
    assert!(
        matches!(
            shadow.outcome,
            Outcome::Denied { .. } | Outcome::GuestError { .. }
        ),
        "{:?}",
        shadow.outcome
    );
    // ...and the live data holds none of its keys.
    assert_eq!(
        live_kv.list_keys("kv-flood", "", 100).expect("list"),
        Vec::<String>::new()
    );
    // The same call live writes them.
    rt.call(&plugin, input).await.expect("live call");
    assert_eq!(
        live_kv.list_keys("kv-flood", "", 100).expect("list").len(),
        20
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shadow_call_sends_no_request_and_says_what_it_suppressed() {
    let downstream = Downstream::start(200);
    let rt = runtime();
    let grant = format!("http = [\"{}\"]", downstream.url("/api/*"));
    let plugin = load_with(&rt, "http-exfil", agent_with("http-exfil", &grant));
    let requests = json!({"requests": [{"url": downstream.url("/api/x")}]});
    let input =
        CallInput::from_json(plugin.kind(), event("test.http-exfil", requests)).expect("input");

    let shadow = rt
        .call_shadow(&plugin, input.clone(), None)
        .await
        .expect("shadow call");
    assert!(
        downstream.requests().is_empty(),
        "a shadow request reached the server"
    );
    assert!(
        shadow
            .suppressed
            .iter()
            .any(|s| s.capability == "http" && s.detail.contains("suppressed in shadow")),
        "{:?}",
        shadow.suppressed
    );
    assert!(
        shadow.refusals.is_empty(),
        "suppressed is not refused: {:?}",
        shadow.refusals
    );
    assert_eq!(
        shadow.outcome,
        Outcome::Ok,
        "the guest saw an error and answered"
    );

    // A request outside the grant is still a refusal in shadow.
    let outside = json!({"requests": [{"url": downstream.url("/admin")}]});
    let r = rt
        .call_shadow(
            &plugin,
            CallInput::from_json(plugin.kind(), event("test.http-exfil", outside)).expect("input"),
            None,
        )
        .await
        .expect("shadow call");
    assert!(r.refusals.iter().any(|x| x.capability == "http"), "{r:?}");
    assert!(r.suppressed.is_empty());

    // Live, the request is sent.
    let live = rt.call(&plugin, input).await.expect("live call");
    assert!(live.suppressed.is_empty());
    assert_eq!(downstream.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shadow_call_opens_no_connection() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let rt = runtime();
    let plugin = load_with(
        &rt,
        "tcp-probe",
        agent_with(
            "tcp-probe",
            &format!("sockets = [\"tcp://127.0.0.1:{port}\"]"),
        ),
    );
    let probe = json!({"attempts": [{"connect": format!("127.0.0.1:{port}"), "send": "x"}]});
    let input = CallInput::from_json(plugin.kind(), event("probe", probe)).expect("input");
    let shadow = rt
        .call_shadow(&plugin, input.clone(), None)
        .await
        .expect("shadow call");
    assert!(
        listener.accept().is_err(),
        "a shadow connection reached the listener"
    );
    assert!(
        shadow
            .suppressed
            .iter()
            .any(|s| s.capability == "sockets" && s.detail.contains("suppressed in shadow")),
        "{shadow:?}"
    );
    rt.call(&plugin, input).await.expect("live call");
    let mut accepted = false;
    for _ in 0..100 {
        if listener.accept().is_ok() {
            accepted = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(accepted, "the live connection did not arrive");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shadow_call_cannot_write_granted_directories() {
    let dir = tempdir("shadow-files");
    let rt = runtime();
    let grant = format!(
        "files = [{{ host = \"{}\", guest = \"/data\", mode = \"rw\" }}]",
        dir.display()
    );
    let plugin = load_with(&rt, "fs-probe", agent_with("fs-probe", &grant));
    let write = json!({"ops": [{"op": "write", "path": "/data/out.txt", "data": "x"}]});
    let input = CallInput::from_json(plugin.kind(), event("probe", write)).expect("input");
    rt.call_shadow(&plugin, input.clone(), None)
        .await
        .expect("shadow call");
    assert!(!dir.join("out.txt").exists(), "a shadow wrote a file");
    rt.call(&plugin, input).await.expect("live call");
    assert!(
        dir.join("out.txt").exists(),
        "the live write did not happen"
    );
}

/// fraud-score at `version` (its manifests compare scores within 0.05,
/// classes split at 0.7).
fn compared(version: &str, component_name: &str) -> (evos::Manifest, Vec<u8>) {
    let m = match version {
        "1.0.0" => manifest("fraud-score"),
        v => evos::Manifest::load(root().join(format!("policies/versions/fraud-score-{v}.toml")))
            .expect("versioned manifest"),
    };
    assert!(
        m.rollout.compare.is_some(),
        "fraud-score {version} has [rollout.compare]"
    );
    (m, component(component_name))
}

/// Wait (bounded) until the shadow of `fraud-score` compared `n` answers
/// against the stable version, or shed the rest.
async fn settled(reg: &Registry, n: u64) -> evos::store::Agreement {
    let stable = reg.route("fraud-score").expect("route").stable.version_id;
    for _ in 0..1000 {
        let route = reg.route("fraud-score").expect("route");
        let a = route.shadow.as_ref().expect("shadow").0.agreement(stable);
        if a.compared + a.shed >= n {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the shadow did not compare {n} calls within 20s");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shadow_deployment_is_compared_and_never_changes_a_live_answer() {
    let dir = tempdir("shadow-deploy");
    let reg = open_registry(&dir);
    let (m, bytes) = compared("1.0.0", "fraud-score");
    reg.deploy(m, &bytes, "1.0.0", None, "test")
        .await
        .expect("deploy");
    let (m, bytes) = compared("1.1.0", "fraud-score-retrained");
    let report = reg
        .deploy_to(m, &bytes, "1.1.0", Slot::Shadow(100), "test")
        .await
        .expect("deploy shadow");
    assert_eq!(report.action, "shadow");
    assert!(report.shadow.is_some());

    // What the live version answers alone.
    let rt = runtime();
    let (m, bytes) = compared("1.0.0", "fraud-score");
    let alone = rt.load(m, &bytes, "1.0.0").expect("load");
    let inputs = fraud_traffic();
    for input in &inputs {
        let live = reg
            .call("fraud-score", input.clone(), None)
            .await
            .expect("call");
        let expected = rt.call(&alone, input.clone()).await.expect("call alone");
        assert_eq!(live.version.as_ref(), "1.0.0");
        assert_eq!(
            live.output, expected.output,
            "the shadow changed a live answer"
        );
    }
    let n = inputs.len() as u64;
    let a = settled(&reg, n).await;
    assert_eq!(a.compared, n, "every call was compared (none shed): {a:?}");
    assert!(a.agreed <= a.compared && a.classed == a.compared, "{a:?}");
    assert_eq!(a.confusion.values().sum::<u64>(), a.classed);
    assert_eq!(
        a.shifted,
        a.confusion
            .iter()
            .filter(|(k, _)| {
                let (l, c) = k.split_once(" -> ").expect("pair");
                l != c
            })
            .map(|(_, v)| v)
            .sum::<u64>()
    );

    // The shadow's own calls count for it, not for the stable version.
    let status = reg.status(Some("fraud-score")).expect("status");
    let shadow = status[0].shadow.as_ref().expect("shadow status");
    assert_eq!(shadow.version.calls, n);
    assert_eq!(status[0].stable.calls, n);
    assert_eq!(shadow.agreement[0].agreement.compared, n);
    assert_eq!(shadow.agreement[0].live_version, "1.0.0");
    // The latest disagreements are kept with both answers.
    let disagreed = (a.compared - a.agreed) as usize;
    assert_eq!(
        shadow.disagreements.len(),
        disagreed.min(evos::shadow::DISAGREEMENTS_KEPT)
    );
    for d in &shadow.disagreements {
        let (live, candidate) = (
            &d.live["model"]["output"]["score"],
            &d.shadow["model"]["output"]["score"],
        );
        let gap =
            (live.as_f64().expect("live score") - candidate.as_f64().expect("shadow score")).abs();
        assert!(
            gap > 0.05,
            "a kept disagreement agrees within the tolerance: {d:?}"
        );
    }

    // The comparison survives a restart.
    reg.flush_stats().expect("flush");
    drop(reg);
    let reg = open_registry(&dir);
    let route = reg.route("fraud-score").expect("route");
    let (shadow, share) = route.shadow.as_ref().expect("shadow restored");
    assert_eq!(*share, 100);
    assert_eq!(shadow.agreement(route.stable.version_id), a);

    // Promoting makes the shadow the stable version; the history and the
    // audit entry carry the comparison.
    let promoted = reg.promote("fraud-score", "test").await.expect("promote");
    assert_eq!(promoted.version, "1.1.0");
    let route = reg.route("fraud-score").expect("route");
    assert!(route.shadow.is_none() && route.canary.is_none());
    let entry = reg
        .store()
        .audit_list(0, None)
        .expect("audit")
        .into_iter()
        .rev()
        .find(|e| e.action == "promote")
        .expect("promote entry");
    assert_eq!(entry.detail["promoted"]["from"], "shadow");
    assert_eq!(entry.detail["promoted"]["agreement"]["compared"], json!(n));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shadow_of_a_connector_or_without_a_stable_version_is_refused() {
    let dir = tempdir("shadow-refused");
    let reg = open_registry(&dir);
    let (m, bytes) = compared("1.1.0", "fraud-score-retrained");
    let err = reg
        .deploy_to(m, &bytes, "1.1.0", Slot::Shadow(100), "test")
        .await
        .expect_err("no stable version");
    assert!(
        err.to_string().contains("deploy it without --shadow first"),
        "{err}"
    );
    let (m, bytes) = compared("1.0.0", "fraud-score");
    reg.deploy(m, &bytes, "1.0.0", None, "test")
        .await
        .expect("deploy");
    let (m, bytes) = compared("1.1.0", "fraud-score-retrained");
    let err = reg
        .deploy_to(m, &bytes, "1.1.0", Slot::Shadow(0), "test")
        .await
        .expect_err("share 0");
    assert!(err.to_string().contains("--share 0"), "{err}");
    assert!(reg.route("fraud-score").expect("route").shadow.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_overloaded_shadow_sheds_and_no_live_call_fails() {
    let dir = tempdir("shadow-shed");
    let reg = open_registry(&dir);
    let (m, bytes) = compared("1.0.0", "fraud-score");
    reg.deploy(m, &bytes, "1.0.0", None, "test")
        .await
        .expect("deploy");
    // 1.2.0 times out (1s) on a sixth of the inputs: a slow shadow.
    let (m, bytes) = compared("1.2.0", "fraud-score-regressed");
    reg.deploy_to(m, &bytes, "1.2.0", Slot::Shadow(100), "test")
        .await
        .expect("deploy shadow");
    // 64 callers at once: live calls arrive far faster than the shadow's
    // workers replay them.
    let inputs = Arc::new(fraud_traffic());
    let (callers, each) = (64usize, evos::shadow::QUEUE / 16);
    let n = (callers * each) as u64;
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let (reg, inputs) = (reg.clone(), inputs.clone());
            tokio::spawn(async move {
                for i in 0..each {
                    let input = inputs[(c * each + i) % inputs.len()].clone();
                    let r = reg.call("fraud-score", input, None).await.expect("call");
                    assert_eq!(r.outcome, Outcome::Ok, "a live call failed: {r:?}");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("caller");
    }
    let stable = reg.route("fraud-score").expect("route").stable.version_id;
    let route = reg.route("fraud-score").expect("route");
    let a = route.shadow.as_ref().expect("shadow").0.agreement(stable);
    assert!(a.shed > 0, "nothing was shed: {a:?}");
    assert!(a.compared + a.shed <= n, "{a:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn model_calls_are_mirrored_and_a_shadow_agent_leaves_no_trace_on_live_models() {
    let dir = tempdir("shadow-agent");
    let reg = open_registry(&dir);
    let (m, bytes) = compared("1.0.0", "fraud-score");
    reg.deploy(m, &bytes, "1.0.0", None, "test")
        .await
        .expect("deploy model");
    reg.deploy(
        manifest("claims-triage"),
        &component("claims-triage"),
        "agent",
        None,
        "test",
    )
    .await
    .expect("deploy agent");
    let (m, bytes) = compared("1.1.0", "fraud-score-retrained");
    reg.deploy_to(m, &bytes, "1.1.0", Slot::Shadow(100), "test")
        .await
        .expect("deploy model shadow");

    let event: serde_json::Value = sample("claims-triage");
    let call = |n: usize| {
        let (reg, event) = (reg.clone(), event.clone());
        async move {
            let mut e = event.clone();
            e["id"] = json!(format!("C-{n}"));
            e["payload"]["claim_id"] = json!(format!("C-{n}"));
            e["payload"]["claimant_id"] = json!(format!("CL-{n}"));
            let input = CallInput::from_json(evos::manifest::Kind::Agent, e).expect("input");
            let r = reg.call("claims-triage", input, None).await.expect("call");
            assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
        }
    };
    for n in 0..10 {
        call(n).await;
    }
    // The agent's model calls reached the model's shadow.
    let a = settled(&reg, 10).await;
    assert_eq!(a.compared, 10, "{a:?}");

    // A shadow of the agent: its model calls go to the live model as
    // shadow calls (not counted for it, not mirrored again), its kv
    // writes (claimant history) stay in its overlay.
    let text = manifest_text("claims-triage").replace("version = \"1.0.0\"", "version = \"1.0.1\"");
    reg.deploy_to(
        manifest_from("claims-triage", &text),
        &component("claims-triage"),
        "agent 1.0.1",
        Slot::Shadow(100),
        "test",
    )
    .await
    .expect("deploy agent shadow");
    let history_before = reg
        .runtime()
        .kv()
        .list_keys("claims-triage", "", 1000)
        .expect("kv");
    let model_calls = |reg: &Registry| {
        reg.status(Some("fraud-score")).expect("status")[0]
            .stable
            .calls
    };
    let before = model_calls(&reg);
    for n in 10..20 {
        call(n).await;
    }
    let agent_route = reg.route("claims-triage").expect("route");
    let agent_shadow = agent_route.shadow.as_ref().expect("agent shadow").0.clone();
    for _ in 0..1000 {
        if agent_shadow
            .agreement(agent_route.stable.version_id)
            .compared
            >= 10
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let agent = agent_shadow.agreement(agent_route.stable.version_id);
    assert_eq!(
        (agent.compared, agent.agreed),
        (10, 10),
        "the same agent agrees: {agent:?}"
    );
    assert_eq!(agent_shadow.live.status(100).calls, 10);
    assert_eq!(
        model_calls(&reg) - before,
        10,
        "only the live agent's model calls count for the live model"
    );
    assert_eq!(
        settled(&reg, 20).await.compared,
        20,
        "shadow model calls were mirrored again"
    );
    let history_after = reg
        .runtime()
        .kv()
        .list_keys("claims-triage", "", 1000)
        .expect("kv");
    assert_eq!(
        history_after.len() - history_before.len(),
        10,
        "only the live agent's claims were recorded"
    );
}
