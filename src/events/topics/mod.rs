//! Named, keyed topics, the same over Kafka and over the embedded log: what the key table
//! (`<prefix>.keys`), the budgets consumer (`<prefix>.spend`) and anyone following other
//! instances' admissions (`<prefix>.events`) read and write.
//!
//! Topics are named by their short name (`keys`, `spend`, `alerts`, `events`, `deployments`);
//! [`Topics::name`] gives the full name, `<prefix>.<short>` (`event_log.kafka.topic_prefix`, or
//! `switchyard` for the embedded log).
//!
//! # Semantics (both backends)
//!
//! - A record has a key and a value; a `None` value is a tombstone (the entity was deleted).
//! - `keys` and `spend` are **compacted**: eventually only the last record of each key is kept.
//!   A follower that reads from the beginning still sees the latest value of every key, and one
//!   positioned before a compaction loses nothing it had not already superseded.
//! - Offsets are per partition and never reused; they can have gaps (compaction, and on the
//!   embedded `events` view, the deployment events it leaves out).
//! - [`Topics::append`] resolves once the record is durable: Kafka acknowledged it with
//!   `acks=all`, or the embedded log wrote and fsync'd it.
//! - `events` and `deployments` are written only by the event publisher ([`super::EventSink`]);
//!   here they can only be followed. On the embedded log they are views of the event log itself
//!   (`event_log.path`): `events` the request and response events keyed by `request_id`,
//!   `deployments` the deployment events keyed by `deployment_id`.
//!
//! # Backends
//!
//! - [`embedded`]: one directory per topic under `event_log.path`, one partition (0).
//! - [`kafka`]: rdkafka; topics created if missing (`cleanup.policy=compact` for `keys` and
//!   `spend`), an idempotent producer, followers by manual assignment of every partition, or
//!   ([`Start::Shared`]) members of a consumer group that share the partitions out.
//!
//! # Shared followers
//!
//! A [`Start::Shared`] follower is one member of a consumer group: the group's members (in
//! any number of processes) share the topic's partitions, each partition read by one member at
//! a time, moved when a member joins, leaves or dies. The caller keeps its positions where it
//! likes (the spend consumer: in ClickHouse), so a partition given to the follower is *held*,
//! nothing read from it, until the caller *places* it at an offset:
//!
//! 1. [`Follower::next_batch`] returns early when the assignment changed (and at once while
//!    a change is unreported); it never returns a record of a partition the follower no longer
//!    has, or has not placed.
//! 2. [`Follower::reassigned`] says what changed since it was last asked: partitions revoked
//!    (whatever the caller holds of them unwritten is the next owner's to read again) and
//!    partitions assigned (held until placed).
//! 3. [`Follower::place`] starts the held partitions at the caller's offsets.
//!
//! On the embedded log, which is one process's, the follower is the whole group: the first
//! [`Follower::reassigned`] assigns it partition 0, and nothing is ever revoked.

mod embedded;
mod kafka;

use std::collections::BTreeSet;
use std::time::Duration;

use super::EventLogConfig;

/// One record of a topic. `value: None` is a tombstone (the entity was deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The partition it was read from (always 0 on the embedded log).
    pub partition: i32,
    /// Its offset in that partition; the next record read from the partition has a larger one.
    pub offset: i64,
    /// The entity it is about (a request id for `events`).
    pub key: String,
    /// The entity's new state; `None` when it was deleted.
    pub value: Option<Vec<u8>>,
}

/// A record to append: its key, and its value (`None`: a tombstone).
pub type Append = (String, Option<Vec<u8>>);

/// Where a [`Follower`] starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// The first record still kept.
    Beginning,
    /// After the last record that exists when the follower is created (Kafka: at its first
    /// [`Follower::next_batch`], which fetches the high watermarks).
    End,
    /// Where the named consumer last committed ([`Follower::commit`]); the beginning if it never
    /// did. One follower per name at a time: the name keeps a position, it does not share out
    /// partitions between members (that is [`Start::Shared`]).
    Group(String),
    /// As `Group`, but the end (as [`Start::End`]) for a name that never committed: a consumer
    /// that reacts to what happens from its first start on (alerts), not to the history.
    GroupOrEnd(String),
    /// The next offset to read, per partition (as [`Follower::position`] returned it, e.g. from
    /// a snapshot); partitions not listed start at the beginning.
    At(Vec<(i32, i64)>),
    /// A member of the named consumer group, sharing the topic's partitions with the group's
    /// other members (Kafka's group protocol: subscribe, not assign). Each partition is held
    /// until the caller places it ([`Follower::place`]): the group's committed offsets are
    /// never where it starts. See the module's "Shared followers". Embedded: the whole log.
    Shared(String),
}

/// What changed in a [`Start::Shared`] follower's partitions since [`Follower::reassigned`]
/// was last called.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reassigned {
    /// Taken away: the follower returns none of their records any more. (A partition taken
    /// away and given back is in both sets: drop what is held of it, then place it again.)
    pub revoked: BTreeSet<i32>,
    /// Given to the follower and held: nothing is read from them until they are placed.
    pub assigned: BTreeSet<i32>,
}

impl Reassigned {
    fn is_empty(&self) -> bool {
        self.revoked.is_empty() && self.assigned.is_empty()
    }

    fn assign(&mut self, partition: i32) {
        self.assigned.insert(partition);
    }

    fn revoke(&mut self, partition: i32) {
        self.assigned.remove(&partition);
        self.revoked.insert(partition);
    }
}

/// What can go wrong with a topic.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("invalid topic name {0:?}: expected a short name such as \"keys\" (letters, digits, '_' or '-')")]
    Name(String),
    #[error("invalid consumer name {0:?}: expected 1 to 200 letters, digits, '.', '_' or '-'")]
    Group(String),
    #[error("the topic {0} is written only by the event publisher")]
    NotWritable(String),
    #[error("a record of {size} bytes is larger than the limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("a background task of the topic failed: {0}")]
    Task(String),
    #[error("{0} is not supported on Kafka")]
    Unsupported(&'static str),
}

impl TopicError {
    fn io(context: impl std::fmt::Display, source: std::io::Error) -> Self {
        Self::Io { context: context.to_string(), source }
    }
}

/// Runs blocking file or network work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, TopicError> + Send + 'static,
) -> Result<T, TopicError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| TopicError::Task(e.to_string()))?
}

/// The topics of this deployment: one per process (it holds the embedded log's writers, or the
/// Kafka producer), cheap to clone.
#[derive(Clone)]
pub struct Topics {
    /// `<prefix>` of every full topic name.
    prefix: std::sync::Arc<str>,
    /// Where the records are.
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    /// No `event_log.kafka`: files under `event_log.path`.
    Embedded(embedded::Embedded),
    /// `event_log.kafka` is configured.
    Kafka(kafka::Kafka),
}

/// The compacted topics: only the last record of each key is kept.
fn compacted(short: &str) -> bool {
    matches!(short, "keys" | "spend")
}

/// The embedded log's view a topic is, if it is one.
fn view(short: &str) -> Option<embedded::View> {
    match short {
        "events" => Some(embedded::View::Events),
        "deployments" => Some(embedded::View::Deployments),
        _ => None,
    }
}

/// The topics the event publisher writes (followed here, never appended to).
fn publisher_owned(short: &str) -> bool {
    matches!(short, "events" | "deployments")
}

fn check_short(short: &str) -> Result<(), TopicError> {
    let ok = !short.is_empty()
        && short.len() <= 100
        && short.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(TopicError::Name(short.to_string()))
    }
}

fn check_group(group: &str) -> Result<(), TopicError> {
    let ok = !group.is_empty()
        && group.len() <= 200
        && !group.starts_with('.')
        && group.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(TopicError::Group(group.to_string()))
    }
}

impl Topics {
    /// Opens the topics of `config`: Kafka's when `event_log.kafka` is configured, otherwise the
    /// embedded log's under `event_log.path` (created if missing). Also when
    /// `event_log.enabled` is false: keys must persist whether events are published or not.
    /// Does not wait for the brokers (Kafka topics are created on first use). Embedded: opening
    /// the same path again in the process shares the writers.
    pub fn open(config: &EventLogConfig) -> Result<Topics, TopicError> {
        match &config.kafka {
            Some(k) => {
                Ok(Topics { prefix: k.topic_prefix.as_str().into(), backend: Backend::Kafka(kafka::Kafka::new(k)?) })
            }
            None => Ok(Topics {
                prefix: "switchyard".into(),
                backend: Backend::Embedded(embedded::Embedded::open(&config.path)?),
            }),
        }
    }

    /// The full name of a topic: `"keys"` → `"<prefix>.keys"`.
    pub fn name(&self, short: &str) -> String {
        format!("{}.{short}", self.prefix)
    }

    /// Appends a record (`value: None`, a tombstone) to the topic `short`; resolves once it is
    /// durable (Kafka: acknowledged with `acks=all`; embedded: written and fsync'd).
    pub async fn append(&self, short: &str, key: &str, value: Option<&[u8]>) -> Result<(), TopicError> {
        check_short(short)?;
        if publisher_owned(short) {
            return Err(TopicError::NotWritable(self.name(short)));
        }
        match &self.backend {
            Backend::Embedded(e) => e.append(&self.name(short), compacted(short), key, value).await,
            Backend::Kafka(k) => k.append(&self.name(short), compacted(short), key, value).await,
        }
    }

    /// Appends records to the topic `short`, in order per key; resolves once every one is
    /// durable (embedded: one write and one fsync for all). On an error some may be durable.
    pub async fn append_all(&self, short: &str, records: Vec<Append>) -> Result<(), TopicError> {
        check_short(short)?;
        if publisher_owned(short) {
            return Err(TopicError::NotWritable(self.name(short)));
        }
        if records.is_empty() {
            return Ok(());
        }
        match &self.backend {
            Backend::Embedded(e) => e.append_all(&self.name(short), compacted(short), records).await,
            Backend::Kafka(k) => k.append_all(&self.name(short), compacted(short), records).await,
        }
    }

    /// A follower of the topic `short` from `start`. With Kafka, cheap: the first
    /// [`Follower::next_batch`] creates the topic if missing, fetches the watermarks and the
    /// group's offsets, and assigns the partitions (or, [`Start::Shared`], joins the group). Embedded: reads the group's file, and the
    /// first use of a topic in the process opens it (reads its file through, compacts it if
    /// due) in the calling thread; `Start::End` on the event log reads its last segment through.
    ///
    /// [`Start::Shared`] on the embedded log opens nothing until partition 0 is placed.
    pub fn follow(&self, short: &str, start: Start) -> Result<Follower, TopicError> {
        check_short(short)?;
        if let Start::Group(group) | Start::GroupOrEnd(group) | Start::Shared(group) = &start {
            check_group(group)?;
        }
        let inner = match (&self.backend, start) {
            (Backend::Embedded(e), Start::Shared(_)) => {
                let mut unreported = Reassigned::default();
                unreported.assign(0);
                Inner::Unplaced { topics: e.clone(), name: self.name(short), short: short.to_string(), unreported }
            }
            (Backend::Embedded(e), start) => {
                Inner::Embedded(e.follow(&self.name(short), view(short), compacted(short), start)?)
            }
            (Backend::Kafka(k), start) => Inner::Kafka(k.follow(&self.name(short), compacted(short), start)?),
        };
        Ok(Follower { inner })
    }

    /// The consumer group id of the consumer `name` for [`Start::Shared`]:
    /// `<prefix>.consumer.<name>`, so two deployments on one cluster never share a group.
    pub fn group(&self, name: &str) -> String {
        format!("{}.consumer.{name}", self.prefix)
    }

    /// Where the named consumer last committed on the topic `short`, per partition (what
    /// [`Start::Group`] would start from); partitions it never committed are left out, so an
    /// empty answer means "from the beginning". Reads only: it does not join the group or
    /// disturb its follower.
    pub async fn committed(&self, short: &str, group: &str) -> Result<Vec<(i32, i64)>, TopicError> {
        check_short(short)?;
        check_group(group)?;
        match &self.backend {
            Backend::Embedded(e) => e.committed(&self.name(short), group),
            Backend::Kafka(k) => k.committed(&self.name(short), group).await,
        }
    }
}

/// Reads a topic in order, from its [`Start`], then follows what is appended.
pub struct Follower {
    /// The backend's follower.
    inner: Inner,
}

enum Inner {
    /// Reads the topic's file, or the event log.
    Embedded(embedded::Follower),
    /// A Kafka consumer.
    Kafka(kafka::Follower),
    /// [`Start::Shared`] on the embedded log before partition 0 is placed: what to open then.
    Unplaced {
        topics: embedded::Embedded,
        /// The topic's full and short names.
        name: String,
        short: String,
        /// Partition 0, assigned until [`Follower::reassigned`] reports it.
        unreported: Reassigned,
    },
}

impl Follower {
    /// Up to `max` records: at once if some are available, otherwise as soon as one is
    /// appended, or none once `wait` has passed. Cancel-safe: records read but not yet returned
    /// when the call is dropped are returned by the next call.
    pub async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Record>, TopicError> {
        let max = max.max(1);
        match &mut self.inner {
            Inner::Embedded(f) => f.next_batch(max, wait).await,
            Inner::Kafka(f) => f.next_batch(max, wait).await,
            Inner::Unplaced { unreported, .. } => {
                if unreported.is_empty() {
                    tokio::time::sleep(wait).await;
                }
                Ok(Vec::new())
            }
        }
    }

    /// True once every record that existed when the follower was created has been returned
    /// (then it stays true). Per partition: the position reached the end offset at creation
    /// (Kafka: the high watermark fetched by the first `next_batch`; false before it). On the
    /// embedded `events` and `deployments` views, once a read has reached the end of the log.
    /// Embedded keyed topics: at once when the topic is empty (or the start is at its end).
    pub fn caught_up(&self) -> bool {
        match &self.inner {
            Inner::Embedded(f) => f.caught_up(),
            Inner::Kafka(f) => f.caught_up(),
            Inner::Unplaced { .. } => false,
        }
    }

    /// The next offset to read, per partition: what [`Start::At`] takes to resume right after
    /// the records returned so far. (Kafka: empty until the first `next_batch` has assigned the
    /// partitions. [`Start::Shared`]: the placed partitions only.)
    pub fn position(&self) -> Vec<(i32, i64)> {
        match &self.inner {
            Inner::Embedded(f) => f.position(),
            Inner::Kafka(f) => f.position(),
            Inner::Unplaced { .. } => Vec::new(),
        }
    }

    /// [`Start::Shared`]: what changed in the follower's partitions since the last call
    /// (`None`: nothing). Other followers: always `None`.
    pub fn reassigned(&mut self) -> Option<Reassigned> {
        let changes = match &mut self.inner {
            Inner::Embedded(_) => return None,
            Inner::Kafka(f) => f.reassigned(),
            Inner::Unplaced { unreported, .. } => std::mem::take(unreported),
        };
        (!changes.is_empty()).then_some(changes)
    }

    /// [`Start::Shared`]: starts reading held partitions, each at its offset (the next record
    /// returned from it is the first at or after it; an offset the topic no longer has means
    /// its first record). Partitions the follower does not hold are ignored.
    pub async fn place(&mut self, at: &[(i32, i64)]) -> Result<(), TopicError> {
        match &mut self.inner {
            Inner::Embedded(_) => Ok(()),
            Inner::Kafka(f) => f.place(at).await,
            Inner::Unplaced { topics, name, short, .. } => {
                let Some((_, offset)) = at.iter().find(|(p, _)| *p == 0) else { return Ok(()) };
                let start = Start::At(vec![(0, *offset)]);
                self.inner = Inner::Embedded(topics.follow(name, view(short), compacted(short), start)?);
                Ok(())
            }
        }
    }

    /// Moves the follower forward to `positions` without reading the records before them (the
    /// caller had them another way: the embedded publisher's [`crate::events::Tap`]). Positions
    /// behind the follower's are ignored. Embedded log only.
    pub fn skip_to(&mut self, positions: &[(i32, i64)]) -> Result<(), TopicError> {
        match &mut self.inner {
            Inner::Embedded(f) => {
                if let Some((_, offset)) = positions.iter().find(|(p, _)| *p == 0) {
                    f.skip_to(*offset);
                }
                Ok(())
            }
            Inner::Kafka(_) => Err(TopicError::Unsupported("skipping ahead of a follower")),
            Inner::Unplaced { .. } => Ok(()),
        }
    }

    /// [`Start::Group`] and [`Start::GroupOrEnd`] followers: stores the position (after the
    /// records returned so far) durably as the group's, where the next follower of the group
    /// starts. [`Start::Shared`] on Kafka: commits the placed partitions' positions as the
    /// group's, for operators' lag tools (the follower itself never starts from them). Others:
    /// nothing.
    pub async fn commit(&mut self) -> Result<(), TopicError> {
        match &mut self.inner {
            Inner::Embedded(f) => f.commit().await,
            Inner::Kafka(f) => f.commit().await,
            Inner::Unplaced { .. } => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_short("keys").is_ok());
        for bad in ["", "a.b", "../x", "a/b", "k eys"] {
            assert!(check_short(bad).is_err(), "{bad:?}");
        }
        assert!(check_group("budgets.v1").is_ok());
        for bad in ["", ".hidden", "a/b", &"x".repeat(201)] {
            assert!(check_group(bad).is_err(), "{bad:?}");
        }
    }
}
