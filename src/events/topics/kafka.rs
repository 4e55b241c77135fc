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
//! - A `Shared` follower is a member of its group (`subscribe`), with the eager `roundrobin`
//!   assignor (every rebalance takes every partition back, then shares them out again; it
//!   needs nothing of the broker beyond JoinGroup, SyncGroup, Heartbeat and LeaveGroup).
//!   Its context replaces rdkafka's rebalance handling, which would start each partition at
//!   the group's committed offset: on an assignment it assigns nothing and notes the
//!   partitions as held; [`Follower::place`] assigns them, with every placed partition, at
//!   explicit offsets, so no committed-offset lookup or seek can race with the caller's
//!   position. A member that stops heartbeating (killed) loses its partitions after
//!   [`SESSION_TIMEOUT`].
//! - A follower's fetch waits at most `fetch.wait.max.ms` (100 ms) on a broker that does not
//!   answer it as soon as a record arrives (tansu: a follower sees an append about 60 ms after
//!   its acknowledgement).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::FutureExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::util::Timeout;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::{blocking, Append, Reassigned, Record, Start, TopicError};
use crate::events::KafkaConfig;

/// How long an append waits for the broker's acknowledgement before it fails.
pub(super) const APPEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a metadata, watermark, offset or admin request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a follower's setup waits for a topic's partitions to show up after it was created.
const PARTITIONS_WAIT: Duration = Duration::from_secs(10);
/// How long a shared follower's group waits for its heartbeat before it gives its partitions
/// to the other members (Kafka's default before 3.0; librdkafka's is now 45 s).
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);

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
            Start::Shared(group) => config
                .set("group.id", group)
                .set("partition.assignment.strategy", "roundrobin")
                .set("session.timeout.ms", SESSION_TIMEOUT.as_millis().to_string()),
            _ => config.set("group.id", format!("switchyard-follower-{}", uuid::Uuid::new_v4())),
        };
        let membership = Arc::new(Membership::default());
        let consumer: StreamConsumer<FollowerContext> =
            config.create_with_context(FollowerContext { membership: membership.clone() })?;
        Ok(Follower {
            cluster: self.cluster.clone(),
            name: name.to_string(),
            compacted,
            start,
            consumer: Arc::new(consumer),
            partitions: None,
            caught_up: false,
            membership,
            held: BTreeSet::new(),
            unreported: Reassigned::default(),
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
    consumer: Arc<StreamConsumer<FollowerContext>>,
    /// Per partition, once assigned (`Shared`: placed): where the follower is, and the high
    /// watermark at setup (`Shared`: none, `i64::MAX`).
    partitions: Option<BTreeMap<i32, Partition>>,
    /// Set once every partition reached its end at setup (then it stays set; never `Shared`).
    caught_up: bool,
    /// `Shared`: what the group's rebalances said, from the consumer's context.
    membership: Arc<Membership>,
    /// `Shared`: partitions the group gave this follower that the caller has not placed.
    held: BTreeSet<i32>,
    /// `Shared`: changes not yet returned by [`Follower::reassigned`].
    unreported: Reassigned,
}

/// What a group's rebalance did to a shared follower.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rebalanced {
    /// Gave it these partitions (held until placed).
    Assigned(Vec<i32>),
    /// Took every partition back: the eager protocol does at each rebalance, and so does a
    /// lost membership or a failed rebalance.
    RevokedAll,
}

/// The rebalances a shared follower has not applied yet: written by its [`FollowerContext`]
/// inside the follower's own `recv` (where librdkafka serves them), applied after it.
#[derive(Default)]
struct Membership {
    events: Mutex<Vec<Rebalanced>>,
    /// Wakes a `next_batch` waiting for records.
    changed: tokio::sync::Notify,
}

impl Membership {
    fn push(&self, event: Rebalanced) {
        self.events.lock().unwrap_or_else(PoisonError::into_inner).push(event);
        self.changed.notify_one();
    }

    fn take(&self) -> Vec<Rebalanced> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// A follower's consumer context. Only a shared follower (subscribed) ever sees a rebalance.
struct FollowerContext {
    membership: Arc<Membership>,
}

impl ClientContext for FollowerContext {}

impl ConsumerContext for FollowerContext {
    /// Instead of rdkafka's default (assign at the group's committed offsets): an assignment
    /// assigns nothing yet and is noted, the partitions held until the caller places them
    /// ([`Follower::place`]); a revocation unassigns everything (the eager protocol).
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let event = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                Rebalanced::Assigned(tpl.elements().iter().map(|e| e.partition()).collect())
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => Rebalanced::RevokedAll,
            err => {
                let error = RDKafkaErrorCode::from(err);
                tracing::warn!(%error, "the consumer group's rebalance failed; the follower gives up its partitions");
                Rebalanced::RevokedAll
            }
        };
        let done = match &event {
            Rebalanced::Assigned(_) => consumer.assign(&TopicPartitionList::new()),
            Rebalanced::RevokedAll => consumer.unassign(),
        };
        if let Err(error) = done {
            tracing::warn!(%error, ?event, "cannot apply the consumer group's rebalance");
        }
        self.membership.push(event);
    }
}

/// Applies a shared follower's rebalances, in order, to the partitions it reads (`placed`) and
/// holds, noting them in `report` for the caller.
fn apply(
    events: Vec<Rebalanced>,
    placed: &mut BTreeMap<i32, Partition>,
    held: &mut BTreeSet<i32>,
    report: &mut Reassigned,
) {
    for event in events {
        match event {
            Rebalanced::Assigned(partitions) => {
                for p in partitions {
                    held.insert(p);
                    report.assign(p);
                }
            }
            Rebalanced::RevokedAll => {
                for p in placed.keys().chain(held.iter()) {
                    report.revoke(*p);
                }
                placed.clear();
                held.clear();
            }
        }
    }
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
        self.apply_rebalances();
        if !self.unreported.is_empty() {
            return Ok(Vec::new());
        }
        let deadline = started.checked_add(wait).unwrap_or_else(|| started + Duration::from_secs(86_400 * 365));
        let mut batch = Vec::new();
        while batch.len() < max {
            let received = if batch.is_empty() {
                tokio::select! {
                    received = tokio::time::timeout_at(deadline, self.consumer.recv()) => match received {
                        Ok(received) => received,
                        Err(_) => break,
                    },
                    // A rebalance (served inside `recv`) ends the wait.
                    _ = self.membership.changed.notified() => break,
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
            // Not a partition it reads (a shared follower's, held or revoked): not returned.
            let Some(partition) = self.partitions.as_mut().and_then(|p| p.get_mut(&message.partition())) else {
                continue;
            };
            partition.position = partition.position.max(message.offset() + 1);
            batch.push(Record {
                partition: message.partition(),
                offset: message.offset(),
                key: message.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default(),
                value: message.payload().map(<[u8]>::to_vec),
            });
        }
        self.apply_rebalances();
        if let Some(placed) = &self.partitions {
            batch.retain(|r| placed.contains_key(&r.partition));
        }
        self.update_caught_up();
        Ok(batch)
    }

    fn shared(&self) -> bool {
        matches!(self.start, Start::Shared(_))
    }

    fn update_caught_up(&mut self) {
        if !self.caught_up && !self.shared() {
            self.caught_up = self.partitions.as_ref().is_some_and(|p| p.values().all(|p| p.position >= p.end));
        }
    }

    /// Applies the rebalances the context noted since the last call.
    fn apply_rebalances(&mut self) {
        let events = self.membership.take();
        if let Some(placed) = self.partitions.as_mut() {
            apply(events, placed, &mut self.held, &mut self.unreported);
        }
    }

    pub(super) fn reassigned(&mut self) -> Reassigned {
        self.apply_rebalances();
        std::mem::take(&mut self.unreported)
    }

    /// Assigns every placed partition at its position, the newly placed ones included.
    pub(super) async fn place(&mut self, at: &[(i32, i64)]) -> Result<(), TopicError> {
        let Some(placed) = &self.partitions else { return Ok(()) };
        let new: Vec<(i32, i64)> = at.iter().filter(|(p, _)| self.held.contains(p)).copied().collect();
        if new.is_empty() {
            return Ok(());
        }
        let mut list = TopicPartitionList::new();
        let all = placed.iter().map(|(id, p)| (*id, p.position)).chain(new.iter().map(|(id, o)| (*id, (*o).max(0))));
        for (id, offset) in all {
            list.add_partition_offset(&self.name, id, Offset::Offset(offset))?;
        }
        let consumer = self.consumer.clone();
        blocking(move || Ok(consumer.assign(&list)?)).await?;
        for (id, offset) in new {
            self.held.remove(&id);
            self.partitions.get_or_insert_default().insert(id, Partition { position: offset.max(0), end: i64::MAX });
        }
        Ok(())
    }

    /// Creates the topic if missing, finds its partitions, their watermarks and (for a group)
    /// the committed offsets, and assigns every partition at its start offset.
    async fn set_up(&mut self) -> Result<(), TopicError> {
        self.cluster.ensure(&self.name, self.compacted).await?;
        if self.shared() {
            // The group gives it partitions as it polls; `subscribe` only asks to join.
            self.consumer.subscribe(&[&self.name])?;
            self.partitions = Some(BTreeMap::new());
            return Ok(());
        }
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
                    Start::Beginning | Start::Shared(_) => low,
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
        let (Start::Group(_) | Start::GroupOrEnd(_) | Start::Shared(_), Some(partitions)) =
            (&self.start, &self.partitions)
        else {
            return Ok(());
        };
        if partitions.is_empty() {
            return Ok(());
        }
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
fn partition_ids(consumer: &StreamConsumer<FollowerContext>, name: &str) -> Result<Vec<i32>, TopicError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(position: i64) -> Partition {
        Partition { position, end: i64::MAX }
    }

    #[test]
    fn rebalances_hold_assigned_partitions_and_revoke_everything_eagerly() {
        let (mut placed, mut held, mut report) = (BTreeMap::new(), BTreeSet::new(), Reassigned::default());
        apply(vec![Rebalanced::Assigned(vec![0, 2])], &mut placed, &mut held, &mut report);
        assert_eq!((held.clone(), report.assigned.clone()), ([0, 2].into(), [0, 2].into()));
        assert!(placed.is_empty() && report.revoked.is_empty());

        // The caller took the report and placed 0; then a member joins: all back, 2 given again.
        let mut report = Reassigned::default();
        held.remove(&0);
        placed.insert(0, at(4096));
        let events = vec![Rebalanced::RevokedAll, Rebalanced::Assigned(vec![2])];
        apply(events, &mut placed, &mut held, &mut report);
        assert!(placed.is_empty());
        assert_eq!(held, [2].into());
        assert_eq!(report.revoked, [0, 2].into(), "both were taken away");
        assert_eq!(report.assigned, [2].into(), "2 is held again: to be placed anew");

        // Assigned, then lost before the caller looked: only the revocation is left to act on.
        let mut report = Reassigned::default();
        apply(vec![Rebalanced::Assigned(vec![5]), Rebalanced::RevokedAll], &mut placed, &mut held, &mut report);
        assert!(held.is_empty() && report.assigned.is_empty());
        assert_eq!(report.revoked, [2, 5].into());
    }
}
