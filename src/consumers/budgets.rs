//! The budgets consumer: folds every response event of `<prefix>.events` into spend per
//! account and budget window, and publishes it to the compacted topic `<prefix>.spend`, one
//! record per account (schema `schemas/events/spend.json`), from which every gateway starts
//! instead of replaying the whole event history (`crate::budget::snapshot`).
//!
//! # How it runs
//!
//! It follows `<prefix>.keys` into a key table (an event is charged to the accounts the table
//! names, as on every gateway) and `<prefix>.events` under the consumer name `budgets`
//! ([`GROUP`]). Each response event goes through the same fold as a gateway's follower
//! ([`crate::budget::follow::fold`]), into its own ledger. About every [`FLUSH_EVERY`], it
//! appends a record for each account charged since its last record (the account's tally and
//! the follower's position: the next offset per partition; on the embedded log up to
//! 4096 records per write and fsync), waits until every one is durable, and only then commits
//! its position as the group's.
//!
//! # Exactly once in effect
//!
//! Delivery from the log is at least once: after a crash, the consumer resumes from its last
//! commit and reads again events it had already folded, maybe already published. It starts
//! the way a gateway does (`crate::budget::snapshot`): it seeds its ledger from `.spend` and
//! counts an event on an account only if the event lies at or after that account's record's
//! position. A record says "every event before these positions is in", so an event already
//! published for an account is not counted again for it, and one that was not is.
//!
//! - A crash after some records of a round were written and before the commit: those accounts
//!   skip the events replayed up to their records; the others count them.
//! - A commit covers only events whose accounts' records are durable: a gateway that starts
//!   from the committed position misses nothing.
//! - Records of a round that fail are written again in the next round (with later positions)
//!   and the position is not committed until a round succeeds whole.
//!
//! With Kafka, run it as its own process (`switchyard consume budgets`), one per cluster: a
//! consumer name is one follower, not a balanced group. On the embedded log it runs inside the
//! gateway (the embedded log belongs to one process).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::Timestamp;
use tokio::sync::watch;

use crate::auth::{KeyStore, Table};
use crate::budget::follow::{fold, SpendFacts};
use crate::budget::ledger::{Account, Ledger};
use crate::budget::snapshot::{self, Resume, SpendRecord, GROUP};
use crate::events::topics::{Append, Follower, Record, Start, TopicError, Topics};
use crate::events::EventSink;

/// How often the accounts charged since are published.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Records read from the log at once.
const READ_BATCH: usize = 4096;
/// Records appended at once (embedded: one write and one fsync).
const APPEND_CHUNK: usize = 4096;

/// The fold without the topics: what the consumer counted, and which accounts' records are
/// due. Testable alone.
pub struct Fold {
    table: Arc<Table>,
    ledger: Ledger,
    /// Accounts charged since their last record was written.
    dirty: HashSet<Account>,
    /// The snapshot's positions per account while replaying from before them; `None` once
    /// caught up.
    resume: Option<Resume>,
}

impl Fold {
    pub fn new(table: Arc<Table>, tz: TimeZone) -> Self {
        Self { table, ledger: Ledger::new(tz), dirty: HashSet::new(), resume: None }
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The snapshot this fold started from (its tallies are already in the ledger).
    pub fn resume_from(&mut self, resume: Resume) {
        self.resume = (!resume.is_empty()).then_some(resume);
    }

    /// Folds one record of `<prefix>.events`.
    pub fn apply(&mut self, record: &Record, now: Timestamp) {
        let Some(value) = &record.value else { return };
        if crate::events::types::kind_hint(value).is_some_and(|kind| kind != "response") {
            return;
        }
        // Only what the fold needs is read: this runs for every call.
        let Some(facts) = SpendFacts::of(value) else {
            tracing::debug!(offset = record.offset, "an event the budgets consumer cannot read; skipped");
            return;
        };
        self.apply_facts(record.partition, record.offset, &facts, now);
    }

    /// Folds a response event's facts, read at `offset` of `partition`.
    pub fn apply_facts(&mut self, partition: i32, offset: i64, facts: &SpendFacts, now: Timestamp) {
        let at = facts.at(now);
        let resume = self.resume.as_ref();
        let counts = |account: &Account| resume.is_none_or(|r| r.counts(account, partition, offset));
        if let Some(charged) = fold(&self.table, &self.ledger, &facts.identity(), facts.cost, at, counts) {
            self.dirty.extend(charged);
        }
    }

    /// The follower has read what existed at its start: every snapshot position is passed.
    pub fn caught_up(&mut self) {
        self.resume = None;
    }

    /// Accounts whose record is due.
    pub fn pending(&self) -> usize {
        self.dirty.len()
    }

    /// The due records: (account, topic key, value) with the follower's `positions`.
    pub fn records(&self, positions: &[(i32, i64)], now: Timestamp) -> Vec<(Account, String, Vec<u8>)> {
        self.dirty
            .iter()
            .filter_map(|account| {
                let tally = self.ledger.tally(account)?;
                let value = SpendRecord::new(tally, positions, now).to_json();
                Some((account.clone(), account.topic_key(), value))
            })
            .collect()
    }

    /// These accounts' records are durable.
    pub fn written(&mut self, accounts: impl IntoIterator<Item = Account>) {
        for account in accounts {
            self.dirty.remove(&account);
        }
    }
}

/// One round of the embedded publisher, as its [`crate::events::Tap`] saw it: the response
/// events it wrote that charge something, at their offsets, and the offset after the round's
/// last event.
struct Fed {
    charged: Vec<(i64, SpendFacts<'static>)>,
    next: i64,
}

/// Rounds the feed holds before the consumer takes them; a full feed is closed, and the
/// consumer reads the log from where it is (a long catch-up, a slow disk). Tests switch
/// between the two often.
const FEED_ROUNDS: usize = if cfg!(test) { 2 } else { 256 };

/// The embedded publisher's tap: what the consumer reads instead of the log once caught up.
struct Feed {
    round: Fed,
    sent: i64,
    to: tokio::sync::mpsc::Sender<Fed>,
}

impl Feed {
    /// The tap, and what the consumer receives from it.
    fn new() -> (Self, tokio::sync::mpsc::Receiver<Fed>) {
        let (to, from) = tokio::sync::mpsc::channel(FEED_ROUNDS);
        (Self { round: Fed { charged: Vec::new(), next: 0 }, sent: 0, to }, from)
    }
}

impl crate::events::Tap for Feed {
    fn appended(&mut self, offset: u64, event: &crate::events::Event) {
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        self.round.next = offset.saturating_add(1);
        if let crate::events::Event::Response(response) = event {
            if let Some(facts) = SpendFacts::chargeable(response) {
                self.round.charged.push((offset, facts));
            }
        }
    }

    fn flushed(&mut self) -> bool {
        if self.round.next == self.sent {
            return true;
        }
        self.sent = self.round.next;
        let round = Fed { charged: std::mem::take(&mut self.round.charged), next: self.round.next };
        self.to.try_send(round).is_ok()
    }
}

/// Runs the consumer until `stop` turns true (or its sender is dropped); then publishes what
/// is due and commits. Follows `<prefix>.keys` itself unless given the gateway's `keys`.
///
/// `events` (the embedded log, in process): once caught up on the log, the consumer folds
/// the publisher's rounds ([`Feed`]) instead of reading the log back.
pub async fn run(
    topics: Topics,
    keys: Option<Arc<KeyStore>>,
    tz: TimeZone,
    events: Option<EventSink>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let keys = match keys {
        Some(keys) => keys,
        None => KeyStore::start(topics.clone(), Arc::new(Table::default()))?,
    };
    while !keys.ready() {
        if stopped(&mut stop, Duration::from_millis(5)).await {
            return Ok(());
        }
    }
    // Tapped before the log is read: the log up to its end and the feed from then on leave no gap.
    let mut feed = events.and_then(Tapped::new);
    let mut fold = Fold::new(keys.table().clone(), tz);
    let topic = topics.name("events");
    let mut follower = loop {
        match start(&topics, &mut fold).await {
            Ok(follower) => break follower,
            Err(e) => {
                tracing::warn!(topic = %topics.name(snapshot::SHORT), error = %e, "the budgets consumer cannot start; retrying");
                if stopped(&mut stop, Duration::from_secs(1)).await {
                    return Ok(());
                }
            }
        }
    };
    let mut publisher = Publisher { topics: topics.clone(), committed: None };
    let mut last_flush = tokio::time::Instant::now();
    let mut caught_up = false;
    loop {
        let fed = feed.as_ref().is_some_and(|f| f.live);
        tokio::select! {
            _ = stop.changed() => break,
            round = next_round(&mut feed), if fed => match round {
                Some(round) => {
                    let now = Timestamp::now();
                    let from = follower.position().first().map_or(0, |(_, offset)| *offset);
                    for (offset, facts) in round.charged.iter().filter(|(offset, _)| *offset >= from) {
                        fold.apply_facts(0, *offset, facts, now);
                    }
                    if let Err(e) = follower.skip_to(&[(0, round.next)]) {
                        tracing::warn!(error = %e, "the budgets consumer cannot be fed; it reads the log");
                        feed = None;
                    }
                }
                None => {
                    tracing::debug!(topic = %topic, "the publisher's feed fell behind; the budgets consumer reads the log to its end");
                    feed = feed.as_ref().and_then(Tapped::retap);
                }
            },
            batch = follower.next_batch(READ_BATCH, FLUSH_EVERY), if !fed => match batch {
                Ok(records) => {
                    let now = Timestamp::now();
                    for record in &records {
                        fold.apply(record, now);
                    }
                    if !caught_up && follower.caught_up() {
                        caught_up = true;
                        fold.caught_up();
                        tracing::info!(topic = %topic, accounts = fold.ledger().len(), "budgets consumer caught up");
                    }
                    // A short read reached the end of the log, which the feed (tapped earlier) goes on from.
                    if let Some(feed) = feed.as_mut().filter(|_| caught_up && records.len() < READ_BATCH) {
                        feed.live = true;
                    }
                }
                Err(e) => {
                    tracing::warn!(topic = %topic, error = %e, "the budgets consumer cannot read the event log; retrying");
                    if stopped(&mut stop, Duration::from_secs(1)).await {
                        break;
                    }
                }
            },
            () = tokio::time::sleep(FLUSH_EVERY), if fed => {}
        }
        if last_flush.elapsed() >= FLUSH_EVERY {
            publisher.flush(&mut fold, &mut follower).await;
            last_flush = tokio::time::Instant::now();
        }
    }
    publisher.flush(&mut fold, &mut follower).await;
    tracing::info!(pending = fold.pending(), "budgets consumer stopped");
    Ok(())
}

/// The feed's next round; `None` once it closed.
async fn next_round(feed: &mut Option<Tapped>) -> Option<Fed> {
    feed.as_mut()?.rounds.recv().await
}

/// The in-process consumer's feed from the publisher.
struct Tapped {
    events: EventSink,
    rounds: tokio::sync::mpsc::Receiver<Fed>,
    /// The log has been read up to where the feed starts: fold the feed, not the log.
    live: bool,
}

impl Tapped {
    /// `None` when `events` takes no tap (Kafka, or the log off): the log is read.
    fn new(events: EventSink) -> Option<Self> {
        let (tap, rounds) = Feed::new();
        events.tap(Box::new(tap)).then_some(Self { events, rounds, live: false })
    }

    /// A new feed, after the last one fell behind and closed: the log is read up to where this
    /// one starts.
    fn retap(&self) -> Option<Self> {
        Self::new(self.events.clone())
    }
}

/// Waits up to `wait`; true if the consumer was told to stop meanwhile.
async fn stopped(stop: &mut watch::Receiver<bool>, wait: Duration) -> bool {
    if *stop.borrow() {
        return true;
    }
    match tokio::time::timeout(wait, stop.changed()).await {
        Ok(Ok(())) => *stop.borrow(),
        Ok(Err(_)) => true,
        Err(_) => false,
    }
}

/// Seeds the fold from `<prefix>.spend`; the follower of the events after the group's commit.
async fn start(topics: &Topics, fold: &mut Fold) -> Result<Follower, TopicError> {
    let snapshot = snapshot::load(topics).await?;
    let follower = topics.follow("events", Start::Group(GROUP.into()))?;
    tracing::info!(accounts = snapshot.seed.len(), from = ?snapshot.start, "budgets consumer starts from its snapshot");
    let resume = snapshot.seed.into_ledger(&fold.ledger);
    fold.resume_from(resume);
    Ok(follower)
}

/// Writes the due records, then commits.
struct Publisher {
    topics: Topics,
    /// The position last committed.
    committed: Option<Vec<(i32, i64)>>,
}

impl Publisher {
    async fn flush(&mut self, fold: &mut Fold, follower: &mut Follower) {
        let positions = follower.position();
        if fold.pending() == 0 && self.committed.as_ref() == Some(&positions) {
            return;
        }
        let records = fold.records(&positions, Timestamp::now());
        let total = records.len();
        let mut records = records.into_iter().peekable();
        while records.peek().is_some() {
            let (accounts, chunk): (Vec<Account>, Vec<Append>) =
                records.by_ref().take(APPEND_CHUNK).map(|(account, key, value)| (account, (key, Some(value)))).unzip();
            if let Err(e) = self.topics.append_all(snapshot::SHORT, chunk).await {
                // Not committed: the next round writes these again (with later positions), then
                // commits.
                tracing::warn!(topic = %self.topics.name(snapshot::SHORT), error = %e, pending = fold.pending(), "cannot publish spend; retrying");
                return;
            }
            fold.written(accounts);
        }
        match follower.commit().await {
            Ok(()) => {
                tracing::debug!(records = total, ?positions, "spend published and committed");
                self.committed = Some(positions);
            }
            Err(e) => tracing::warn!(error = %e, "cannot commit the budgets consumer's position; retrying"),
        }
    }
}

/// The consumer running inside the gateway: stops (publishing what is due) when dropped.
pub struct InProcess {
    stop: watch::Sender<bool>,
}

impl InProcess {
    /// Spawns the consumer on the current runtime, sharing the gateway's key table, fed by the
    /// embedded publisher through `events`' tap.
    pub fn spawn(topics: Topics, keys: Arc<KeyStore>, tz: TimeZone, events: EventSink) -> Self {
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(async move {
            if let Err(e) = run(topics, Some(keys), tz, Some(events), stopped).await {
                tracing::error!(error = %e, "the budgets consumer stopped");
            }
        });
        Self { stop }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::ledger::nanos;
    use crate::budget::snapshot::Seed;
    use crate::events::types::CallerFields;

    fn response(key: &str, cost: f64) -> Vec<u8> {
        let caller =
            CallerFields { api_key_hash: Some(key.into()), team_id: Some("t".into()), ..CallerFields::default() };
        crate::events::Event::Response(Box::new(crate::events::types::tests::response(caller, cost))).to_json()
    }

    /// The event log: keys `a` and `b` (team `t`) spend 1, 2, 3, … USD in turn.
    fn log(n: i64) -> Vec<Record> {
        (0..n)
            .map(|offset| Record {
                partition: (offset % 2) as i32,
                offset: offset / 2,
                key: format!("call-{offset}"),
                value: Some(response(if offset % 3 == 0 { "b" } else { "a" }, (offset + 1) as f64)),
            })
            .collect()
    }

    fn table() -> Arc<Table> {
        let table = Table::default();
        for entity in [
            crate::budget::tests::key("a", None, Some("t")),
            crate::budget::tests::key("b", None, Some("t")),
            crate::budget::tests::team("t", 1000.0),
        ] {
            table.apply(&entity.id(), Some(entity.clone()));
        }
        Arc::new(table)
    }

    fn spent(fold: &Fold, account: &Account) -> i64 {
        fold.ledger().tally(account).map_or(0, |t| t.spent)
    }

    /// Positions after the first `n` records of [`log`].
    fn positions(n: i64) -> Vec<(i32, i64)> {
        vec![(0, (n + 1) / 2), (1, n / 2)]
    }

    /// What the topic would hold after publishing `records`, as a seed.
    fn publish(topic: &mut Vec<(String, Vec<u8>)>, fold: &mut Fold, n: i64) {
        let records = fold.records(&positions(n), Timestamp::now());
        for (_, key, value) in &records {
            topic.push((key.clone(), value.clone()));
        }
        fold.written(records.into_iter().map(|(a, _, _)| a));
    }

    fn restart(topic: &[(String, Vec<u8>)]) -> Fold {
        let mut seed = Seed::default();
        for (key, value) in topic {
            seed.apply(key, Some(value));
        }
        let mut fold = Fold::new(table(), TimeZone::UTC);
        let resume = seed.into_ledger(&fold.ledger);
        fold.resume_from(resume);
        fold
    }

    #[test]
    fn a_replay_after_a_crash_counts_every_event_once_per_account() {
        let events = log(12);
        let (a, b, t) = (Account::Key("a".into()), Account::Key("b".into()), Account::Team("t".into()));
        let mut whole = Fold::new(table(), TimeZone::UTC);
        for record in &events {
            whole.apply(record, Timestamp::now());
        }
        let total: i64 = (1..=12).map(|c| nanos(c as f64)).sum();
        assert_eq!(spent(&whole, &a) + spent(&whole, &b), total);
        assert_eq!(spent(&whole, &t), total);

        // A consumer folds 8 events and publishes them all, but crashes before committing; it
        // had also published `a` alone after 4 events, then committed there.
        let mut topic = Vec::new();
        let mut first = Fold::new(table(), TimeZone::UTC);
        for record in &events[..4] {
            first.apply(record, Timestamp::now());
        }
        publish(&mut topic, &mut first, 4);
        for record in &events[4..8] {
            first.apply(record, Timestamp::now());
        }
        // Only `a`'s record of the second round made it.
        let records = first.records(&positions(8), Timestamp::now());
        let (kept, _lost): (Vec<_>, Vec<_>) = records.into_iter().partition(|(account, _, _)| *account == a);
        topic.extend(kept.into_iter().map(|(_, k, v)| (k, v)));

        // The restart replays from the commit (after 4 events) to the end.
        let mut second = restart(&topic);
        for record in &events[4..] {
            second.apply(record, Timestamp::now());
        }
        second.caught_up();
        for account in [&a, &b, &t] {
            assert_eq!(spent(&second, account), spent(&whole, account), "{account:?}");
        }
        // Replaying the same events again after a complete snapshot changes nothing.
        publish(&mut topic, &mut second, 12);
        let mut third = restart(&topic);
        for record in &events {
            third.apply(record, Timestamp::now());
        }
        for account in [&a, &b, &t] {
            assert_eq!(spent(&third, account), spent(&whole, account), "{account:?}");
        }
        assert_eq!(third.pending(), 0, "nothing new to publish");
    }

    /// A tap that takes the consumer's place.
    struct Deaf;

    impl crate::events::Tap for Deaf {
        fn appended(&mut self, _: u64, _: &crate::events::Event) {}
        fn flushed(&mut self) -> bool {
            true
        }
    }

    /// Calls before the consumer starts are read from the log; later ones come from the
    /// publisher's feed, which closes now and then and sends the consumer back to the log:
    /// every call counts once either way.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fed_by_the_publisher_or_reading_the_log_every_call_counts_once() {
        use crate::events::{EventLogConfig, EventMetrics, FsyncPolicy};
        let dir = std::env::temp_dir().join(format!("switchyard-budgets-{}", uuid::Uuid::new_v4()));
        let config = EventLogConfig {
            enabled: true,
            kafka: None,
            path: dir.clone(),
            fsync: FsyncPolicy::Never,
            segment_bytes: 1 << 16,
            queue_capacity: 1 << 16,
            gateway_id: "gw-test".into(),
        };
        let sink = EventSink::start(&config, EventMetrics::register(&prometheus::Registry::new()).unwrap()).unwrap();
        let topics = Topics::open(&config).unwrap();
        let keys = KeyStore::start(topics.clone(), table()).unwrap();
        let call = |key: &str| {
            let caller =
                CallerFields { api_key_hash: Some(key.into()), team_id: Some("t".into()), ..Default::default() };
            crate::events::Event::Response(Box::new(crate::events::types::tests::response(caller, 0.5)))
        };
        for _ in 0..100 {
            sink.publish(call("a"));
        }
        let (stop, stopped) = watch::channel(false);
        let consumer = tokio::spawn(run(topics.clone(), Some(keys), TimeZone::UTC, Some(sink.clone()), stopped));
        let (a, t) = (Account::Key("a".into()), Account::Team("t".into()));
        let published = |ledger: &Ledger, account: &Account| ledger.tally(account).map_or(0, |t| t.spent);
        let snapshot_reaches = |account: Account, usd: f64| {
            let topics = topics.clone();
            async move {
                let deadline = std::time::Instant::now() + Duration::from_secs(20);
                loop {
                    let ledger = Ledger::new(TimeZone::UTC);
                    snapshot::load(&topics).await.unwrap().seed.into_ledger(&ledger);
                    if published(&ledger, &account) >= nanos(usd) || std::time::Instant::now() > deadline {
                        return ledger;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        // The history is in: the consumer is on the feed.
        snapshot_reaches(t.clone(), 50.0).await;
        for burst in 0..100 {
            for _ in 0..10 {
                sink.publish(call(if burst % 2 == 0 { "a" } else { "b" }));
            }
            if burst % 25 == 0 {
                // Its feed closes (as when it fell behind): the consumer reads the log to its
                // end, then takes a new feed.
                sink.tap(Box::new(Deaf));
            }
            tokio::time::sleep(Duration::from_millis(1 + burst % 5)).await;
        }
        let ledger = snapshot_reaches(t.clone(), 550.0).await;
        assert_eq!(published(&ledger, &a), nanos(100.0 * 0.5 + 500.0 * 0.5));
        assert_eq!(published(&ledger, &t), nanos(1100.0 * 0.5), "every call once, on the team too");
        stop.send_replace(true);
        consumer.await.unwrap().unwrap();
        sink.shutdown(Duration::from_secs(5));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn only_charged_accounts_are_due_and_written_ones_are_not_again() {
        let mut fold = Fold::new(table(), TimeZone::UTC);
        for record in &log(2) {
            fold.apply(record, Timestamp::now());
        }
        // Call 0 was `b`'s, call 1 `a`'s; both charge team `t`.
        assert_eq!(fold.pending(), 3);
        let records = fold.records(&positions(2), Timestamp::now());
        let keys: HashSet<&str> = records.iter().map(|(_, k, _)| k.as_str()).collect();
        assert_eq!(keys, HashSet::from(["key:a", "key:b", "team:t"]));
        let value = SpendRecord::from_json(&records[0].2).unwrap();
        assert_eq!(value.positions.len(), 2);
        fold.written(records.into_iter().map(|(a, _, _)| a));
        assert_eq!(fold.pending(), 0);
        // A free call charges nothing.
        let free = Record { partition: 0, offset: 9, key: "c".into(), value: Some(response("a", 0.0)) };
        fold.apply(&free, Timestamp::now());
        assert_eq!(fold.pending(), 0);
    }
}
