//! `evos up --otlp`: the pipeline's spans and the host's metrics reach a
//! local OTLP/HTTP collector the test runs, under the caller's W3C trace,
//! continuing into the downstream call; nothing is sent without it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use evos::server::{Host, ServerConfig};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use crate::server::claims;
use crate::support::*;

/// What the collector received.
#[derive(Default)]
struct Received {
    traces: Vec<ExportTraceServiceRequest>,
    metrics: Vec<ExportMetricsServiceRequest>,
}

/// An OTLP/HTTP collector on a loopback port: decodes every export and
/// answers 200. Runs until the test process ends.
fn collector() -> (u16, Arc<Mutex<Received>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let received = Arc::new(Mutex::new(Received::default()));
    let into = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let into = into.clone();
            std::thread::spawn(move || serve(stream, &into));
        }
    });
    (port, received)
}

/// Requests on one (kept-alive) connection.
fn serve(stream: std::net::TcpStream, into: &Mutex<Received>) {
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut length = 0;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.trim().eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        {
            let mut r = into.lock().unwrap();
            match path.as_str() {
                "/v1/traces" => r
                    .traces
                    .push(ExportTraceServiceRequest::decode(&*body).expect("a trace export")),
                "/v1/metrics" => r
                    .metrics
                    .push(ExportMetricsServiceRequest::decode(&*body).expect("a metrics export")),
                other => panic!("unexpected export to {other}"),
            }
        }
        let reply =
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

fn spans(r: &Received) -> Vec<Span> {
    r.traces
        .iter()
        .flat_map(|t| t.resource_spans.iter())
        .flat_map(|rs| rs.scope_spans.iter())
        .flat_map(|ss| ss.spans.iter().cloned())
        .collect()
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match &kv.value {
            Some(AnyValue {
                value: Some(any_value::Value::StringValue(s)),
            }) => Some(s.as_str()),
            _ => None,
        })
}

async fn host(
    downstream: &Downstream,
    otlp: Option<u16>,
) -> (u16, String, tokio::sync::oneshot::Sender<()>, TempDir) {
    let dir = tempdir("otlp");
    let mut config = ServerConfig::new(&*dir, root().join("evos.toml"));
    config.engine.cache_dir = Some(root().join("target/evos-test-cache"));
    config.otlp = otlp.map(|port| evos::otlp::OtlpConfig {
        endpoint: format!("http://127.0.0.1:{port}"),
        metrics_every: Duration::from_millis(300),
    });
    let (host, boot) = Host::bootstrap_with(config, claims_app(&downstream.url("/claims/payouts")))
        .await
        .expect("bootstrap");
    let admin = std::fs::read_to_string(boot.admin_token_file.unwrap())
        .unwrap()
        .trim()
        .to_string();
    let (port, stop) = serve_on_loopback(host).await;
    (port, admin, stop, dir)
}

fn body_json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).expect("json")
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread")]
async fn spans_and_metrics_reach_the_collector_under_the_callers_trace() {
    let (collector_port, received) = collector();
    let downstream = Downstream::start(200);
    let (port, admin, _stop, _dir) = host(&downstream, Some(collector_port)).await;
    let (status, body) = http_request(
        port,
        "POST",
        "/v1/ingest/claims-webhook",
        Some(&admin),
        &claims(),
        &[
            ("content-type", "application/json"),
            ("traceparent", &format!("00-{TRACE}-{CALLER_SPAN}-01")),
        ],
    );
    assert_eq!(status, 200, "{body}");

    // Every event's trace arrives: a root span per event, and its steps.
    let deadline = Instant::now() + Duration::from_secs(20);
    let all = loop {
        let all = spans(&received.lock().unwrap());
        let roots = all.iter().filter(|s| s.name.starts_with("event ")).count();
        if roots >= 4 {
            break all;
        }
        assert!(
            Instant::now() < deadline,
            "spans: {:?}",
            all.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    assert!(
        all.iter().all(|s| hex(&s.trace_id) == TRACE),
        "one trace: the caller's"
    );
    let root = |event: &str| {
        all.iter()
            .find(|s| {
                s.name.starts_with("event ") && attr(&s.attributes, "evos.event.id") == Some(event)
            })
            .unwrap_or_else(|| panic!("no span for {event}"))
    };
    let c1001 = root("C-1001");
    assert_eq!(
        hex(&c1001.parent_span_id),
        CALLER_SPAN,
        "the caller's span is the parent"
    );
    let children: Vec<&Span> = all
        .iter()
        .filter(|s| s.parent_span_id == c1001.span_id)
        .collect();
    let names: Vec<&str> = children.iter().map(|s| s.name.as_str()).collect();
    for want in [
        "ingest claims-webhook",
        "agent claims-triage",
        "policy payout-limit",
        "policy pii-guard",
        "execute claims-webhook",
    ] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    let agent = children
        .iter()
        .find(|s| s.name == "agent claims-triage")
        .unwrap();
    let model = all
        .iter()
        .find(|s| s.parent_span_id == agent.span_id)
        .expect("the agent's model call");
    assert_eq!(model.name, "model fraud-score");
    for s in children.iter().copied().chain([model]) {
        assert!(
            s.start_time_unix_nano > 0 && s.end_time_unix_nano >= s.start_time_unix_nano,
            "{}",
            s.name
        );
        for key in [
            "evos.plugin",
            "evos.plugin.version",
            "evos.plugin.digest",
            "evos.outcome",
        ] {
            assert!(
                attr(&s.attributes, key).is_some_and(|v| !v.is_empty()),
                "{key} on {}",
                s.name
            );
        }
    }
    assert_eq!(
        attr(&model.attributes, "evos.plugin.version"),
        Some("1.0.0")
    );
    let allow = children
        .iter()
        .find(|s| s.name == "policy payout-limit")
        .unwrap();
    assert_eq!(attr(&allow.attributes, "evos.decision"), Some("allow"));
    let escalated = all
        .iter()
        .find(|s| s.name == "policy payout-limit" && s.parent_span_id == root("C-1002").span_id)
        .unwrap();
    assert_eq!(
        attr(&escalated.attributes, "evos.decision"),
        Some("escalate")
    );

    // The downstream call continues the trace under the execute span.
    let execute = children
        .iter()
        .find(|s| s.name == "execute claims-webhook")
        .unwrap();
    let delivered = downstream
        .requests()
        .into_iter()
        .find(|r| r.body.contains("C-1001"))
        .expect("C-1001 delivered");
    assert_eq!(
        delivered.header("traceparent"),
        Some(format!("00-{TRACE}-{}-01", hex(&execute.span_id)).as_str()),
    );
    let resource = received.lock().unwrap().traces[0].resource_spans[0]
        .resource
        .clone()
        .unwrap();
    assert_eq!(attr(&resource.attributes, "service.name"), Some("evos"));

    // A reviewer approves the escalated claim: the execution after the
    // review is in the same trace, and the downstream continues from it.
    let review = body_json(&body)["report"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["actions"].as_array().cloned().unwrap_or_default())
        .find_map(|a| a["review_id"].as_i64())
        .expect("an escalated claim");
    let (status, body) = http_request(
        port,
        "POST",
        &format!("/v1/reviews/{review}/approve"),
        Some(&admin),
        b"{}",
        &[("content-type", "application/json")],
    );
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let (decided, carried) = loop {
        let all = spans(&received.lock().unwrap());
        let decided = all
            .iter()
            .find(|s| s.name == format!("review {review}"))
            .cloned();
        if let Some(d) = decided {
            let carried = all
                .iter()
                .find(|s| s.parent_span_id == d.span_id)
                .cloned()
                .expect("the execute span of the review");
            break (d, carried);
        }
        assert!(Instant::now() < deadline, "no review span");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(hex(&decided.trace_id), TRACE);
    assert_eq!(carried.name, "execute claims-webhook");
    let delivered = downstream
        .requests()
        .into_iter()
        .find(|r| r.body.contains("C-1002"))
        .expect("C-1002 delivered after the approval");
    assert_eq!(
        delivered.header("traceparent"),
        Some(format!("00-{TRACE}-{}-01", hex(&carried.span_id)).as_str()),
    );

    // Metrics: calls per plugin version and outcome, latency, actions.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let names: Vec<String> = {
            let r = received.lock().unwrap();
            r.metrics
                .iter()
                .flat_map(|m| m.resource_metrics.iter())
                .flat_map(|rm| rm.scope_metrics.iter())
                .flat_map(|sm| sm.metrics.iter())
                .filter(|m| {
                    let shown = format!("{m:?}");
                    shown.contains("fraud-score")
                        || shown.contains("claims-webhook")
                        || m.name == "evos.pipeline.actions"
                })
                .map(|m| m.name.clone())
                .collect()
        };
        if [
            "evos.plugin.calls",
            "evos.plugin.latency",
            "evos.pipeline.actions",
            "evos.breaker.state",
        ]
        .iter()
        .all(|n| names.iter().any(|m| m == n))
        {
            break;
        }
        assert!(Instant::now() < deadline, "metrics so far: {names:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_is_exported_without_a_collector_and_a_bad_endpoint_is_refused() {
    let (collector_port, received) = collector();
    let downstream = Downstream::start(200);
    let (port, admin, _stop, _dir) = host(&downstream, None).await;
    let (status, _) = http_request(
        port,
        "POST",
        "/v1/ingest/claims-webhook",
        Some(&admin),
        &claims(),
        &[("content-type", "application/json")],
    );
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_millis(800));
    let (traces, metrics) = {
        let r = received.lock().unwrap();
        (r.traces.len(), r.metrics.len())
    };
    assert_eq!(
        (traces, metrics),
        (0, 0),
        "nothing went to port {collector_port}"
    );

    let dir = tempdir("otlp-bad");
    let mut config = ServerConfig::new(&*dir, root().join("evos.toml"));
    config.otlp = Some(evos::otlp::OtlpConfig {
        endpoint: "127.0.0.1:4318".into(),
        metrics_every: Duration::from_secs(10),
    });
    let Err(e) = Host::bootstrap_with(config, claims_app("http://127.0.0.1:9/")).await else {
        panic!("an endpoint without a scheme was taken");
    };
    assert!(e.to_string().contains("http://127.0.0.1:4318"), "{e}");
    assert!(
        std::fs::read_dir(&*dir).unwrap().next().is_none(),
        "nothing was written to the data directory"
    );
}
