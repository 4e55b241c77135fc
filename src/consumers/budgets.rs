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

/// How often the accounts charged since are published.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
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
        let at = facts.at(now);
        let resume = self.resume.as_ref();
        let counts = |account: &Account| resume.is_none_or(|r| r.counts(account, record.partition, record.offset));
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

/// Runs the consumer until `stop` turns true (or its sender is dropped); then publishes what
/// is due and commits. Follows `<prefix>.keys` itself unless given the gateway's `keys`.
pub async fn run(
    topics: Topics,
    keys: Option<Arc<KeyStore>>,
    tz: TimeZone,
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
    let mut fold = Fold::new(keys.table().clone(), tz);
    let events = topics.name("events");
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
        tokio::select! {
            _ = stop.changed() => break,
            batch = follower.next_batch(4096, FLUSH_EVERY) => match batch {
                Ok(records) => {
                    let now = Timestamp::now();
                    for record in &records {
                        fold.apply(record, now);
                    }
                    if !caught_up && follower.caught_up() {
                        caught_up = true;
                        fold.caught_up();
                        tracing::info!(topic = %events, accounts = fold.ledger().len(), "budgets consumer caught up");
                    }
                }
                Err(e) => {
                    tracing::warn!(topic = %events, error = %e, "the budgets consumer cannot read the event log; retrying");
                    if stopped(&mut stop, Duration::from_secs(1)).await {
                        break;
                    }
                }
            },
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
    /// Spawns the consumer on the current runtime, sharing the gateway's key table.
    pub fn spawn(topics: Topics, keys: Arc<KeyStore>, tz: TimeZone) -> Self {
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(async move {
            if let Err(e) = run(topics, Some(keys), tz, stopped).await {
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
