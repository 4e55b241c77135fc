//! Keyed topics (`events::topics`) on a real Kafka-protocol broker (tansu): appends, followers
//! from the beginning and the end, caught_up, a named consumer resuming after its commit, and
//! shared followers splitting a topic's partitions through the group protocol.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchyard::events::log::FsyncPolicy;
use switchyard::events::topics::{Follower, Record, Start, Topics};
use switchyard::events::{EventLogConfig, KafkaConfig};

use crate::kafka::Broker;

fn config(broker: &Broker) -> EventLogConfig {
    config_with(broker, 2)
}

fn config_with(broker: &Broker, partitions: i32) -> EventLogConfig {
    let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    EventLogConfig {
        enabled: false,
        kafka: Some(KafkaConfig {
            bootstrap_servers: broker.bootstrap(),
            topic_prefix: prefix,
            partitions,
            replication_factor: 1,
            producer: Vec::new(),
        }),
        path: std::env::temp_dir().join(format!("switchyard-topics-it-{}", uuid::Uuid::new_v4())),
        fsync: FsyncPolicy::Always,
        segment_bytes: 1 << 20,
        queue_capacity: 16,
        gateway_id: "gw-test".into(),
    }
}

/// Reads until `n` records have come (or 30 s have passed).
async fn read(follower: &mut Follower, n: usize) -> Vec<Record> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        out.extend(follower.next_batch(100, Duration::from_millis(500)).await.unwrap());
    }
    out
}

/// The last value of each key, as text (`None`: a tombstone).
fn latest(records: &[Record]) -> HashMap<String, Option<String>> {
    records.iter().map(|r| (r.key.clone(), r.value.as_ref().map(|v| String::from_utf8(v.clone()).unwrap()))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_topics_are_followed_from_the_beginning_by_two_followers_and_from_the_end() {
    let Some(broker) = Broker::start() else { return };
    let topics = Topics::open(&config(&broker)).unwrap();
    for n in 0..10 {
        topics.append("keys", &format!("k{n}"), Some(format!("v{n}").as_bytes())).await.unwrap();
    }
    topics.append("keys", "k3", None).await.unwrap();
    let mut first = topics.follow("keys", Start::Beginning).unwrap();
    let mut second = topics.follow("keys", Start::Beginning).unwrap();
    assert!(!first.caught_up());
    let a = read(&mut first, 11).await;
    let b = read(&mut second, 11).await;
    assert!(first.caught_up() && second.caught_up());
    for records in [&a, &b] {
        assert_eq!(records.len(), 11, "{records:?}");
        let latest = latest(records);
        assert_eq!(latest["k3"], None, "the tombstone is a null value");
        assert_eq!(latest["k9"].as_deref(), Some("v9"));
        assert_eq!(latest.len(), 10);
    }
    // Positions: the offset after the last record, per partition, adding up to what was read.
    let total: i64 = first.position().iter().map(|(_, offset)| offset).sum();
    assert_eq!((first.position().len(), total), (2, 11));

    // A follower from the end sees only what comes after, promptly.
    let mut end = topics.follow("keys", Start::End).unwrap();
    assert!(end.next_batch(10, Duration::from_millis(200)).await.unwrap().is_empty());
    assert!(end.caught_up(), "nothing existed after its start");
    let writer = topics.clone();
    let appended = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        writer.append("keys", "new", Some(b"n")).await.unwrap();
        Instant::now()
    });
    let batch = end.next_batch(10, Duration::from_secs(10)).await.unwrap();
    let delay = Instant::now().saturating_duration_since(appended.await.unwrap());
    assert_eq!(batch.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(), ["new"]);
    // Reported, not asserted: the machine is shared (the batch above came before the 10 s wait).
    eprintln!("kafka follower saw the append {delay:?} after it was acknowledged");
    // ... and so do the followers that started at the beginning.
    assert_eq!(read(&mut first, 1).await.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(), ["new"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_group_resumes_after_its_committed_position() {
    let Some(broker) = Broker::start() else { return };
    let topics = Topics::open(&config(&broker)).unwrap();
    for n in 0..6 {
        topics.append("spend", &format!("k{n}"), Some(b"1")).await.unwrap();
    }
    let mut group = topics.follow("spend", Start::Group("budgets".into())).unwrap();
    assert_eq!(read(&mut group, 6).await.len(), 6);
    assert!(group.caught_up());
    group.commit().await.unwrap();
    let committed = group.position();
    drop(group);
    for n in 6..8 {
        topics.append("spend", &format!("k{n}"), Some(b"2")).await.unwrap();
    }
    let mut resumed = topics.follow("spend", Start::Group("budgets".into())).unwrap();
    let records = read(&mut resumed, 2).await;
    let mut keys: Vec<&str> = records.iter().map(|r| r.key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["k6", "k7"], "only what came after the commit");
    assert!(resumed.caught_up());
    assert!(resumed.next_batch(10, Duration::from_millis(300)).await.unwrap().is_empty());
    // At() from the committed positions reads the same two.
    let mut at = topics.follow("spend", Start::At(committed)).unwrap();
    assert_eq!(read(&mut at, 2).await.len(), 2);
    // Another name starts at the beginning.
    let mut other = topics.follow("spend", Start::Group("other".into())).unwrap();
    assert_eq!(read(&mut other, 8).await.len(), 8);
}

/// A shared follower driven in a task of its own: it places every partition it is given at
/// the beginning, and shows what it owns and the keys it read (stopped when dropped).
struct Member {
    owned: Arc<Mutex<BTreeSet<i32>>>,
    keys: Arc<Mutex<BTreeSet<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Member {
    fn join(topics: &Topics, group: &str) -> Self {
        let mut follower = topics.follow("alerts", Start::Shared(group.into())).unwrap();
        let (owned, keys) = (Arc::new(Mutex::new(BTreeSet::new())), Arc::new(Mutex::new(BTreeSet::new())));
        let (o, k) = (owned.clone(), keys.clone());
        let task = tokio::spawn(async move {
            loop {
                let batch = follower.next_batch(100, Duration::from_millis(100)).await.unwrap();
                k.lock().unwrap().extend(batch.into_iter().map(|r| r.key));
                if let Some(change) = follower.reassigned() {
                    let at: Vec<(i32, i64)> = change.assigned.iter().map(|p| (*p, 0)).collect();
                    follower.place(&at).await.unwrap();
                    let mut owned = o.lock().unwrap();
                    owned.retain(|p| !change.revoked.contains(p));
                    owned.extend(change.assigned);
                }
            }
        });
        Self { owned, keys, task }
    }

    fn owned(&self) -> BTreeSet<i32> {
        self.owned.lock().unwrap().clone()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `done` every 100 ms for up to 60 s (a dead member's partitions move after the
/// session timeout, 10 s).
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_followers_split_the_partitions_and_one_takes_over_when_the_other_leaves() {
    let Some(broker) = Broker::start() else { return };
    let topics = Topics::open(&config_with(&broker, 4)).unwrap();
    let group = topics.group("test");
    let keys = |range: std::ops::Range<usize>| range.map(|n| format!("k{n}")).collect::<BTreeSet<_>>();
    for key in keys(0..40) {
        topics.append("alerts", &key, Some(b"x")).await.unwrap();
    }
    let all: BTreeSet<i32> = (0..4).collect();
    let first = Member::join(&topics, &group);
    until("the first member has every partition", || first.owned() == all).await;
    until("it read every record", || *first.keys.lock().unwrap() == keys(0..40)).await;

    let second = Member::join(&topics, &group);
    until("both members have partitions, none twice", || {
        let (a, b) = (first.owned(), second.owned());
        !a.is_empty() && !b.is_empty() && a.is_disjoint(&b) && a.union(&b).copied().collect::<BTreeSet<_>>() == all
    })
    .await;
    eprintln!("shared: first {:?}, second {:?}", first.owned(), second.owned());
    // Each record is read by the member that owns its partition (from the beginning, here).
    until("the second read its partitions", || !second.keys.lock().unwrap().is_empty()).await;

    drop(second);
    until("the first has every partition again", || first.owned() == all).await;
    first.keys.lock().unwrap().clear();
    for key in keys(40..60) {
        topics.append("alerts", &key, Some(b"x")).await.unwrap();
    }
    until("the first read the new records of every partition", || {
        first.keys.lock().unwrap().is_superset(&keys(40..60))
    })
    .await;
}
