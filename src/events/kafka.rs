//! Publishing to Kafka with rdkafka (its bundled librdkafka): batched, lz4-compressed, keyed by
//! request id so a call's request and response events share a partition. Events that cannot be
//! delivered go to the spool; while the spool holds events, new ones join it, and it is drained
//! in order once the broker answers again (also after a restart).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use serde::Deserialize;
use tokio::task::JoinSet;

use super::{Event, KafkaConfig, Shared};

/// How often the drain task looks at the spool (and tries the broker again).
const DRAIN_RETRY: Duration = Duration::from_secs(1);
/// Spooled events sent per round trip.
const DRAIN_BATCH: usize = 2000;

pub struct KafkaBackend {
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    config: KafkaConfig,
    shared: Arc<Shared>,
    /// Whether the topics are known to exist (created at startup, or later once reachable).
    topics_ready: Mutex<bool>,
}

/// The base client settings: the user's `producer` properties win.
pub fn client_config(k: &KafkaConfig) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &k.bootstrap_servers)
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("message.timeout.ms", "5000")
        // Bounds what waits in memory for a broker that is down (the rest goes to the spool
        // at once): about 10 MB of events rather than librdkafka's default of 100,000 messages.
        .set("queue.buffering.max.messages", "10000")
        .set("socket.timeout.ms", "5000")
        .set("reconnect.backoff.max.ms", "1000");
    for (key, value) in &k.producer {
        cfg.set(key, value);
    }
    cfg
}

/// Where a spooled event goes, read back from its JSON.
#[derive(Deserialize)]
struct Route {
    #[serde(rename = "type")]
    kind: String,
    request_id: Option<String>,
    deployment_id: Option<String>,
}

impl KafkaBackend {
    pub(super) fn new(config: &KafkaConfig, shared: Arc<Shared>) -> Result<Self, rdkafka::error::KafkaError> {
        let cfg = client_config(config);
        let backend = Self {
            producer: cfg.create()?,
            admin: cfg.create()?,
            config: config.clone(),
            shared,
            topics_ready: Mutex::new(false),
        };
        Ok(backend)
    }

    fn topic_and_key(&self, json: &[u8]) -> (String, String) {
        let route: Option<Route> = serde_json::from_slice(json).ok();
        match route {
            Some(Route { kind, deployment_id: Some(id), .. }) if kind == "deployment" => {
                (self.config.deployments_topic(), id)
            }
            Some(Route { request_id, .. }) => (self.config.events_topic(), request_id.unwrap_or_default()),
            None => (self.config.events_topic(), String::new()),
        }
    }

    fn route(&self, event: &Event) -> (String, String) {
        match event {
            Event::Request(e) => (self.config.events_topic(), e.envelope.request_id.clone().unwrap_or_default()),
            Event::Response(e) => (self.config.events_topic(), e.envelope.request_id.clone().unwrap_or_default()),
            Event::Deployment(e) => (self.config.deployments_topic(), e.deployment_id.clone()),
        }
    }

    /// Creates the topics if they are missing; false when the broker cannot be reached.
    pub(super) async fn ensure_topics(&self) -> bool {
        if self.topics_ready.lock().map(|r| *r).unwrap_or(false) {
            return true;
        }
        let names = [self.config.events_topic(), self.config.deployments_topic()];
        let topics: Vec<NewTopic> = names
            .iter()
            .map(|n| NewTopic::new(n, self.config.partitions, TopicReplication::Fixed(self.config.replication_factor)))
            .collect();
        let options = AdminOptions::new()
            .operation_timeout(Some(Timeout::After(Duration::from_secs(5))))
            .request_timeout(Some(Timeout::After(Duration::from_secs(5))));
        let ok = match self.admin.create_topics(&topics, &options).await {
            Ok(results) => results.iter().all(|r| match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => true,
                Err((topic, code)) => {
                    tracing::warn!(topic = %topic, error = %code, "cannot create topic");
                    false
                }
            }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach Kafka to create topics");
                false
            }
        };
        if ok {
            tracing::info!(topics = ?names, "event topics ready");
            if let Ok(mut ready) = self.topics_ready.lock() {
                *ready = true;
            }
        }
        ok
    }

    /// Sends `payloads` (topic, key, json) and waits for every acknowledgement; returns those
    /// that failed.
    async fn send_all(&self, payloads: Vec<(String, String, Vec<u8>)>) -> Vec<Vec<u8>> {
        let mut waiting = Vec::with_capacity(payloads.len());
        let mut failed = Vec::new();
        for (topic, key, json) in payloads {
            let record = FutureRecord::to(&topic).key(&key).payload(&json);
            match self.producer.send_result(record) {
                Ok(delivery) => waiting.push((delivery, json)),
                Err((e, _)) => {
                    tracing::debug!(error = %e, "Kafka producer refused an event");
                    failed.push(json);
                }
            }
        }
        let mut sent = 0;
        for (delivery, json) in waiting {
            match delivery.await {
                Ok(Ok(_)) => sent += 1,
                Ok(Err((e, _))) => {
                    tracing::debug!(error = %e, "event delivery failed");
                    failed.push(json);
                }
                Err(_) => failed.push(json),
            }
        }
        self.shared.metrics.sent.inc_by(sent);
        failed
    }

    /// Hands a batch to the producer without waiting: each delivery settles in its own task
    /// (acknowledged, or spooled). While the spool holds events, the batch joins it instead.
    pub(super) fn publish(&self, batch: Vec<Event>, deliveries: &mut JoinSet<()>) {
        let topics_ready = self.topics_ready.lock().map(|r| *r).unwrap_or(false);
        if self.shared.spooling.load(Ordering::Relaxed) || !topics_ready {
            self.shared.write_to_disk(&batch);
            return;
        }
        for event in &batch {
            let (topic, key) = self.route(event);
            let json = event.to_json();
            let sent = self.producer.send_result(FutureRecord::to(&topic).key(&key).payload(&json)).map_err(|(e, _)| e);
            let shared = self.shared.clone();
            match sent {
                Ok(delivery) => {
                    deliveries.spawn(async move {
                        match delivery.await {
                            Ok(Ok(_)) => shared.metrics.sent.inc(),
                            Ok(Err((e, _))) => {
                                tracing::debug!(error = %e, "event delivery failed; spooling it");
                                shared.metrics.failed.inc();
                                shared.spool_json(vec![json]);
                            }
                            Err(_) => {
                                shared.metrics.failed.inc();
                                shared.spool_json(vec![json]);
                            }
                        }
                    });
                }
                Err(e) => {
                    tracing::debug!(error = %e, "Kafka producer refused an event; spooling it");
                    shared.metrics.failed.inc();
                    shared.spool_json(vec![json]);
                }
            }
        }
    }

    /// Runs until the sink closes: creates the topics once the broker is reachable, and sends
    /// whatever the spool holds.
    pub(super) async fn drain_loop(self: Arc<Self>) {
        loop {
            tokio::time::sleep(DRAIN_RETRY).await;
            if self.shared.closing.load(Ordering::Acquire) {
                return;
            }
            let pending = self.shared.overflow.lock().map(|s| s.pending()).unwrap_or(0);
            if pending > 0 || self.shared.spooling.load(Ordering::Relaxed) {
                self.drain().await;
            } else {
                self.ensure_topics().await;
            }
        }
    }

    /// Sends spooled events in order; commits what the broker acknowledged.
    async fn drain(&self) {
        if !self.ensure_topics().await {
            return;
        }
        loop {
            let records = match self.shared.overflow.lock() {
                Ok(mut spool) => {
                    let from = spool.committed();
                    spool.read(from, DRAIN_BATCH)
                }
                Err(_) => return,
            };
            let records = match records {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the event spool");
                    return;
                }
            };
            let Some(&(last_offset, _)) = records.last() else {
                break;
            };
            let count = records.len();
            let payloads = records
                .into_iter()
                .map(|(_, json)| {
                    let (topic, key) = self.topic_and_key(&json);
                    (topic, key, json)
                })
                .collect();
            let failed = self.send_all(payloads).await;
            if !failed.is_empty() {
                // Nothing is committed: the whole batch is sent again next time (at least once).
                tracing::debug!(failed = failed.len(), "spool drain interrupted; will retry");
                return;
            }
            if let Ok(mut spool) = self.shared.overflow.lock() {
                if let Err(e) = spool.commit(last_offset + 1) {
                    tracing::error!(error = %e, "cannot record spool progress");
                    return;
                }
                self.shared.metrics.spool_pending.set(spool.pending() as i64);
                tracing::info!(sent = count, remaining = spool.pending(), "sent spooled events");
            }
        }
        // Stop spooling only when nothing is left, under the lock that appends take.
        if let Ok(spool) = self.shared.overflow.lock() {
            if spool.pending() == 0 {
                self.shared.spooling.store(false, Ordering::Relaxed);
                self.shared.metrics.spool_pending.set(0);
                tracing::info!("event spool drained; publishing to Kafka directly again");
            }
        }
    }

    /// Flushes the producer at shutdown. Anything still spooled stays there for the next start
    /// (a broker that is down now is not waited for).
    pub(super) fn shutdown(&self) {
        if let Err(e) = self.producer.flush(Timeout::After(Duration::from_secs(5))) {
            tracing::warn!(error = %e, "Kafka producer did not flush at shutdown");
        }
    }
}
