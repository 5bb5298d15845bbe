//! The NATS JetStream consumer of each `[sources.<connector>]` in the app
//! file (see `evos_control::source` for the configuration).
//!
//! Every node serving the app pulls from the same durable consumer, so
//! JetStream hands each message to one node at a time. A message goes
//! through the pipeline as the connector's input and is acknowledged only
//! once its events' audit entries committed; each event is marked
//! processed in that same transaction, so when a node dies between the
//! commit and the ack (or before either) the redelivered message skips
//! what was done and does the rest. Effects carried out before a crash
//! and repeated after it carry the same idempotency key (`<event id>/<action
//! index>`), which downstream systems use to drop the repeat.
//!
//! A failed delivery (the store unreachable, a plugin's host error) is
//! sent back with the source's backoff; after `max-deliver` deliveries,
//! or at once when the connector cannot read the message at all, it is
//! kept as a dead letter with an audit entry and terminated, so JetStream
//! stops delivering it.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures_util::StreamExt;

use crate::pipeline::{self, RunOptions};
use crate::server::Host;
use crate::sources::Source;
use crate::store::NewDeadLetter;
use crate::telemetry::SourceCounters;

/// How often the consumer's lag is read from the server.
const LAG_EVERY: Duration = Duration::from_secs(2);

/// Consume `source` until the task is aborted, reconnecting after a
/// second whenever the server is unreachable or the subscription ends.
pub async fn consume(host: Arc<Host>, source: Source) {
    let counters = host.metrics.source(&source.name(), &source.connector);
    loop {
        if let Err(e) = consume_once(&host, &source, &counters).await {
            tracing::warn!(target: "evos::source",
                source = source.name(), connector = source.connector,
                "consuming {} on {}: {e}; retrying in 1s", source.subject, source.url
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Credentials from the environment: `EVOS_NATS_USER` and
/// `EVOS_NATS_PASSWORD`, or `EVOS_NATS_TOKEN`.
fn connect_options() -> async_nats::ConnectOptions {
    let options = async_nats::ConnectOptions::new()
        .name("evos")
        .connection_timeout(Duration::from_secs(5));
    match (
        std::env::var("EVOS_NATS_USER"),
        std::env::var("EVOS_NATS_PASSWORD"),
        std::env::var("EVOS_NATS_TOKEN"),
    ) {
        (Ok(user), Ok(password), _) => options.user_and_password(user, password),
        (_, _, Ok(token)) => options.token(token),
        _ => options,
    }
}

async fn consume_once(
    host: &Arc<Host>,
    source: &Source,
    counters: &Arc<SourceCounters>,
) -> Result<(), String> {
    let client = connect_options()
        .connect(source.url.as_str())
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let js = jetstream::new(client);
    let stream = js
        .get_or_create_stream(jetstream::stream::Config {
            name: source.stream.clone(),
            subjects: vec![source.subject.clone()],
            ..Default::default()
        })
        .await
        .map_err(|e| format!("stream {}: {e}", source.stream))?;
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            &source.consumer,
            pull::Config {
                durable_name: Some(source.consumer.clone()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: source.ack_wait,
                // Redelivery is bounded here, not by the server, so the
                // last failure is still seen and kept as a dead letter.
                max_deliver: -1,
                filter_subject: source.subject.clone(),
                max_ack_pending: i64::try_from(source.in_flight.saturating_mul(4))
                    .unwrap_or(i64::MAX),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("consumer {}: {e}", source.consumer))?;
    tracing::info!(target: "evos::source",
        source = source.name(), connector = source.connector,
        "consuming {} from stream {}", source.subject, source.stream
    );
    let lag = {
        let (mut consumer, counters) = (consumer.clone(), counters.clone());
        tokio::spawn(async move {
            loop {
                if let Ok(info) = consumer.info().await {
                    counters
                        .lag
                        .store(info.num_pending, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(LAG_EVERY).await;
            }
        })
    };
    let messages = consumer
        .stream()
        .max_messages_per_batch(source.in_flight)
        .messages()
        .await
        .map_err(|e| format!("pulling messages: {e}"))?;
    let name: Arc<str> = Arc::from(source.name());
    let ended = messages
        .for_each_concurrent(source.in_flight, |message| {
            let (host, name, counters) = (host.clone(), name.clone(), counters.clone());
            async move {
                match message {
                    Ok(message) => handle(&host, source, &name, &counters, message).await,
                    Err(e) => tracing::warn!(target: "evos::source", "receiving a message: {e}"),
                }
            }
        })
        .await;
    lag.abort();
    let () = ended;
    Err("the subscription ended".into())
}

/// Count a delivery and return (delivered, stream sequence).
fn delivery(message: &jetstream::Message, counters: &SourceCounters) -> (u64, u64) {
    use std::sync::atomic::Ordering::Relaxed;
    let (delivered, sequence) = message
        .info()
        .map(|i| (u64::try_from(i.delivered).unwrap_or(1), i.stream_sequence))
        .unwrap_or((1, 0));
    counters.received.fetch_add(1, Relaxed);
    if delivered > 1 {
        counters.redelivered.fetch_add(1, Relaxed);
    }
    (delivered, sequence)
}

async fn handle(
    host: &Arc<Host>,
    source: &Source,
    name: &Arc<str>,
    counters: &SourceCounters,
    message: jetstream::Message,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let (delivered, sequence) = delivery(&message, counters);
    let trace = message
        .headers
        .as_ref()
        .and_then(|h| h.get("traceparent"))
        .and_then(|v| crate::server::trace_of(v.as_str()))
        .unwrap_or_else(pipeline::new_trace_id);
    let options = RunOptions {
        execute: true,
        reviews: Some(host.reviews.clone()),
        audit: Some(host.registry.store().clone()),
        trace_id: Some(trace),
        breakers: Some(host.breakers.clone()),
        concurrency: 0,
        recorder: host.recorder.clone(),
        source: Some(name.clone()),
    };
    let run = pipeline::run(
        host.registry.clone(),
        host.app.clone(),
        &source.connector,
        message.payload.to_vec(),
        &source.content_type,
        &options,
    )
    .await;
    let failure = match run {
        Ok(report) => {
            host.metrics.observe_pipeline(&report);
            if let Some(otlp) = host.otlp.get() {
                otlp.pipeline(&report, None);
            }
            match &report.ingest_error {
                // The connector cannot read it: no retry will.
                Some(e) => Some((format!("the connector refused the message: {e}"), true)),
                None => {
                    let duplicates = report.events.iter().filter(|e| e.duplicate).count();
                    counters.duplicates.fetch_add(duplicates as u64, Relaxed);
                    None
                }
            }
        }
        // Another node finished the event first: it is processed.
        Err(crate::Error::Duplicate(_)) => {
            counters.duplicates.fetch_add(1, Relaxed);
            None
        }
        Err(e) => Some((e.to_string(), false)),
    };
    match failure {
        None => match message.ack().await {
            Ok(()) => {
                counters.acked.fetch_add(1, Relaxed);
            }
            Err(e) => {
                // Redelivered later and found processed.
                tracing::warn!(target: "evos::source", sequence, "acknowledging: {e}");
            }
        },
        Some((error, permanent)) if permanent || delivered >= u64::from(source.max_deliver) => {
            let subject = message.subject.to_string();
            let kept = {
                let store = host.registry.store().clone();
                let owned = (
                    name.to_string(),
                    source.connector.clone(),
                    subject.clone(),
                    error.clone(),
                    message.payload.to_vec(),
                );
                tokio::task::spawn_blocking(move || {
                    store.dead_letter(&NewDeadLetter {
                        source: &owned.0,
                        connector: &owned.1,
                        subject: &owned.2,
                        sequence,
                        delivered,
                        error: &owned.3,
                        payload: &owned.4,
                    })
                })
                .await
            };
            match kept {
                Ok(Ok(id)) => {
                    counters.dead_letters.fetch_add(1, Relaxed);
                    tracing::warn!(target: "evos::source",
                        source = &**name, sequence, delivered, dead_letter = id,
                        "gave up on a message: {error}"
                    );
                    if let Err(e) = message.ack_with(AckKind::Term).await {
                        tracing::warn!(target: "evos::source", sequence, "terminating: {e}");
                    }
                }
                failed => {
                    // Not kept: leave it to be delivered again.
                    tracing::error!(target: "evos::source", sequence,
                        "could not keep a dead letter ({failed:?}); the message will be delivered again"
                    );
                    let _ = message
                        .ack_with(AckKind::Nak(Some(source.delay(delivered))))
                        .await;
                }
            }
        }
        Some((error, _)) => {
            counters.retried.fetch_add(1, Relaxed);
            let delay = source.delay(delivered);
            tracing::warn!(target: "evos::source",
                source = &**name, sequence, delivered,
                "delivery failed, retrying in {delay:?}: {error}"
            );
            if let Err(e) = message.ack_with(AckKind::Nak(Some(delay))).await {
                tracing::warn!(target: "evos::source", sequence, "sending back: {e}");
            }
        }
    }
}
