//! The Kafka backend, with rdkafka (its bundled librdkafka).
//!
//! - Topics are created on first use if missing (the admin API), with `event_log.kafka`'s
//!   partitions and replication factor, and `cleanup.policy=compact` for `keys` and `spend`.
//!   (tansu 0.6, the broker of the tests, keeps the setting; its sqlite storage compacts in its
//!   maintenance round, every 10 minutes, its in-memory storage never. The tests do not wait
//!   for it: nothing here depends on when, or whether, the broker compacts.)
//! - Appends go through one `FutureProducer` (the event publisher's client settings, with
//!   `event_log.kafka.producer`, except for the four below): idempotent, `acks=all`,
//!   `linger.ms` 1, keyed (a tombstone is a null payload); the future resolves with the
//!   broker's acknowledgement. Unlike the event
//!   publisher's producer, it gives up on a record after [`APPEND_TIMEOUT`], so a caller is
//!   never left waiting on a broker that is gone. (A timeout leaves a gap in the idempotent
//!   producer's sequence, which Kafka and Redpanda accept and tansu 0.6 does not, see
//!   `events::kafka`.)
//! - A follower is a consumer with every partition assigned by hand at its start position,
//!   resolved at its first `next_batch`: the low watermark (`Beginning`), the high watermark
//!   (`End`), the given offsets (`At`), or the group's committed offsets (`Group`: `group.id`
//!   is the name, auto commit off; [`Follower::commit`] commits synchronously). No group
//!   membership: a name is one follower, not a balanced group. librdkafka assigns only with a
//!   group id, so other followers get a throwaway one (`switchyard-follower-<uuid>`) under
//!   which they never commit.
//! - A follower's fetch waits at most `fetch.wait.max.ms` (100 ms) on a broker that does not
//!   answer it as soon as a record arrives (tansu: a follower sees an append about 60 ms after
//!   its acknowledgement).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::FutureExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::{blocking, Append, Record, Start, TopicError};
use crate::events::KafkaConfig;

/// How long an append waits for the broker's acknowledgement before it fails.
pub(super) const APPEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a metadata, watermark, offset or admin request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a follower's setup waits for a topic's partitions to show up after it was created.
const PARTITIONS_WAIT: Duration = Duration::from_secs(10);

/// The Kafka topics; cheap to clone.
#[derive(Clone)]
pub(super) struct Kafka {
    /// The clients, shared by every clone and follower.
    cluster: Arc<Cluster>,
}

struct Cluster {
    /// Where the brokers are, and how topics are created.
    config: KafkaConfig,
    /// Every append goes through it.
    producer: FutureProducer,
    /// Creates missing topics.
    admin: AdminClient<DefaultClientContext>,
    /// Topics known to exist, so each is created (or found) once.
    ready: Mutex<HashSet<String>>,
}

impl Kafka {
    /// The producer and the admin client (no connection is made yet).
    pub(super) fn new(config: &KafkaConfig) -> Result<Self, TopicError> {
        let mut producer = crate::events::kafka::client_config(config);
        producer
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", APPEND_TIMEOUT.as_millis().to_string())
            // A key mutation waits for its acknowledgement: do not hold it back for a batch.
            .set("linger.ms", "1");
        let admin = ClientConfig::new().set("bootstrap.servers", &config.bootstrap_servers).create()?;
        Ok(Self {
            cluster: Arc::new(Cluster {
                config: config.clone(),
                producer: producer.create()?,
                admin,
                ready: Mutex::new(HashSet::new()),
            }),
        })
    }

    pub(super) async fn append(
        &self,
        name: &str,
        compacted: bool,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<(), TopicError> {
        self.cluster.ensure(name, compacted).await?;
        let mut record = FutureRecord::<str, [u8]>::to(name).key(key);
        if let Some(value) = value {
            record = record.payload(value);
        }
        self.cluster.producer.send(record, Timeout::After(APPEND_TIMEOUT)).await.map_err(|(e, _)| e)?;
        Ok(())
    }

    /// Sends the records at once (the producer batches them); resolves once every one is
    /// acknowledged, or at the first failure.
    pub(super) async fn append_all(&self, name: &str, compacted: bool, records: Vec<Append>) -> Result<(), TopicError> {
        let sends = records.iter().map(|(key, value)| self.append(name, compacted, key, value.as_deref()));
        futures_util::future::try_join_all(sends).await.map(|_| ())
    }

    pub(super) fn follow(&self, name: &str, compacted: bool, start: Start) -> Result<Follower, TopicError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.cluster.config.bootstrap_servers)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest")
            // A broker that holds a fetch until this long when nothing is new: the most a new
            // record can wait on a broker that does not answer a fetch as soon as one arrives.
            .set("fetch.wait.max.ms", "10");
        // librdkafka assigns partitions only to a consumer with a group id. A follower that is
        // not a named consumer gets a name of its own, under which it never commits.
        match &start {
            Start::Group(group) | Start::GroupOrEnd(group) => config.set("group.id", group),
            _ => config.set("group.id", format!("switchyard-follower-{}", uuid::Uuid::new_v4())),
        };
        let consumer: StreamConsumer = config.create()?;
        Ok(Follower {
            cluster: self.cluster.clone(),
            name: name.to_string(),
            compacted,
            start,
            consumer: Arc::new(consumer),
            partitions: None,
            caught_up: false,
        })
    }

    /// The group's committed offsets on the topic `name`: a consumer under the group's id that
    /// only asks (it neither subscribes nor commits, so it joins nothing). A topic that does not
    /// exist yet has none.
    pub(super) async fn committed(&self, name: &str, group: &str) -> Result<Vec<(i32, i64)>, TopicError> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.cluster.config.bootstrap_servers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("allow.auto.create.topics", "false")
            .create()?;
        let name = name.to_string();
        blocking(move || {
            let metadata = consumer.fetch_metadata(Some(&name), REQUEST_TIMEOUT)?;
            let Some(topic) = metadata.topics().iter().find(|t| t.name() == name && t.error().is_none()) else {
                return Ok(Vec::new());
            };
            let mut list = TopicPartitionList::new();
            for partition in topic.partitions() {
                list.add_partition(&name, partition.id());
            }
            let committed = consumer.committed_offsets(list, REQUEST_TIMEOUT)?;
            Ok(committed
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(offset) => Some((e.partition(), offset)),
                    _ => None,
                })
                .collect())
        })
        .await
    }
}

impl Cluster {
    /// Creates the topic unless it is known to exist.
    async fn ensure(&self, name: &str, compacted: bool) -> Result<(), TopicError> {
        if self.ready.lock().unwrap_or_else(PoisonError::into_inner).contains(name) {
            return Ok(());
        }
        let mut topic =
            NewTopic::new(name, self.config.partitions, TopicReplication::Fixed(self.config.replication_factor));
        if compacted {
            topic = topic.set("cleanup.policy", "compact");
        }
        let options = AdminOptions::new()
            .operation_timeout(Some(Timeout::After(REQUEST_TIMEOUT)))
            .request_timeout(Some(Timeout::After(REQUEST_TIMEOUT)));
        for result in self.admin.create_topics([&topic], &options).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(KafkaError::AdminOp(code).into()),
            }
        }
        self.ready.lock().unwrap_or_else(PoisonError::into_inner).insert(name.to_string());
        Ok(())
    }
}

/// Follows a Kafka topic.
pub(super) struct Follower {
    /// Creates the topic if missing.
    cluster: Arc<Cluster>,
    /// The topic's full name.
    name: String,
    /// Whether the topic is created compacted, if it is missing.
    compacted: bool,
    /// Where to start, resolved at the first `next_batch`.
    start: Start,
    /// The consumer (shared with the blocking tasks that set it up and commit).
    consumer: Arc<StreamConsumer>,
    /// Per partition, once assigned: where the follower is, and the high watermark at setup.
    partitions: Option<BTreeMap<i32, Partition>>,
    /// Set once every partition reached its end at setup (then it stays set).
    caught_up: bool,
}

/// One assigned partition.
#[derive(Debug, Clone, Copy)]
struct Partition {
    /// The offset after the last record returned (at first, the start offset).
    position: i64,
    /// The high watermark when the follower was set up.
    end: i64,
}

impl Follower {
    pub(super) async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Record>, TopicError> {
        let started = tokio::time::Instant::now();
        if self.partitions.is_none() {
            self.set_up().await?;
        }
        let deadline = started.checked_add(wait).unwrap_or_else(|| started + Duration::from_secs(86_400 * 365));
        let mut batch = Vec::new();
        while batch.len() < max {
            let received = if batch.is_empty() {
                match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                    Ok(received) => received,
                    Err(_) => break,
                }
            } else {
                match self.consumer.recv().now_or_never() {
                    Some(received) => received,
                    None => break,
                }
            };
            let message = match received {
                Ok(message) => message,
                Err(e) if batch.is_empty() => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(topic = %self.name, error = %e, "Kafka consumer error");
                    break;
                }
            };
            if let Some(partition) = self.partitions.as_mut().and_then(|p| p.get_mut(&message.partition())) {
                partition.position = partition.position.max(message.offset() + 1);
            }
            batch.push(Record {
                partition: message.partition(),
                offset: message.offset(),
                key: message.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default(),
                value: message.payload().map(<[u8]>::to_vec),
            });
        }
        self.update_caught_up();
        Ok(batch)
    }

    fn update_caught_up(&mut self) {
        if !self.caught_up {
            self.caught_up = self.partitions.as_ref().is_some_and(|p| p.values().all(|p| p.position >= p.end));
        }
    }

    /// Creates the topic if missing, finds its partitions, their watermarks and (for a group)
    /// the committed offsets, and assigns every partition at its start offset.
    async fn set_up(&mut self) -> Result<(), TopicError> {
        self.cluster.ensure(&self.name, self.compacted).await?;
        let (consumer, name, start) = (self.consumer.clone(), self.name.clone(), self.start.clone());
        let partitions = blocking(move || {
            let ids = partition_ids(&consumer, &name)?;
            let committed = match &start {
                Start::Group(_) | Start::GroupOrEnd(_) => {
                    let mut list = TopicPartitionList::new();
                    for id in &ids {
                        list.add_partition(&name, *id);
                    }
                    Some(consumer.committed_offsets(list, REQUEST_TIMEOUT)?)
                }
                _ => None,
            };
            let mut partitions = BTreeMap::new();
            let mut assignment = TopicPartitionList::new();
            for id in ids {
                let (low, high) = consumer.fetch_watermarks(&name, id, REQUEST_TIMEOUT)?;
                let position = match &start {
                    Start::Beginning => low,
                    Start::End => high,
                    Start::At(at) => at.iter().find(|(p, _)| *p == id).map_or(low, |(_, o)| *o),
                    Start::Group(_) | Start::GroupOrEnd(_) => {
                        // Where the group has no offset: the beginning, or for GroupOrEnd the end.
                        let unset = if matches!(start, Start::GroupOrEnd(_)) { high } else { low };
                        match committed.as_ref().and_then(|c| c.find_partition(&name, id)) {
                            Some(element) => match element.offset() {
                                Offset::Offset(offset) => offset,
                                _ => unset,
                            },
                            None => unset,
                        }
                    }
                };
                assignment.add_partition_offset(&name, id, Offset::Offset(position))?;
                partitions.insert(id, Partition { position, end: high });
            }
            consumer.assign(&assignment)?;
            Ok(partitions)
        })
        .await?;
        self.partitions = Some(partitions);
        self.update_caught_up();
        Ok(())
    }

    pub(super) fn caught_up(&self) -> bool {
        self.caught_up
    }

    pub(super) fn position(&self) -> Vec<(i32, i64)> {
        self.partitions.iter().flatten().map(|(id, p)| (*id, p.position)).collect()
    }

    pub(super) async fn commit(&mut self) -> Result<(), TopicError> {
        let (Start::Group(_) | Start::GroupOrEnd(_), Some(partitions)) = (&self.start, &self.partitions) else {
            return Ok(());
        };
        let mut list = TopicPartitionList::new();
        for (id, partition) in partitions {
            list.add_partition_offset(&self.name, *id, Offset::Offset(partition.position))?;
        }
        let consumer = self.consumer.clone();
        blocking(move || Ok(consumer.commit(&list, CommitMode::Sync)?)).await
    }
}

/// The topic's partitions, waiting up to [`PARTITIONS_WAIT`] for a topic just created to have
/// them.
fn partition_ids(consumer: &StreamConsumer, name: &str) -> Result<Vec<i32>, TopicError> {
    let deadline = std::time::Instant::now() + PARTITIONS_WAIT;
    loop {
        let metadata = consumer.fetch_metadata(Some(name), REQUEST_TIMEOUT)?;
        let topic = metadata.topics().iter().find(|t| t.name() == name);
        let ids: Vec<i32> = topic.map(|t| t.partitions().iter().map(|p| p.id()).collect()).unwrap_or_default();
        let error = topic.and_then(|t| t.error());
        if !ids.is_empty() && error.is_none() {
            return Ok(ids);
        }
        if std::time::Instant::now() >= deadline {
            let code = error.map(RDKafkaErrorCode::from).unwrap_or(RDKafkaErrorCode::UnknownTopicOrPartition);
            return Err(KafkaError::MetadataFetch(code).into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
