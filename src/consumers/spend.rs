//! The spend consumer: `<prefix>.events` → ClickHouse `spend_logs` (one row per response
//! event) and `daily_spend` (rollups per key, team, user, end user, model, tag and provider).
//!
//! Exactly once in effect, on at-least-once delivery (the loop: [`super::writer`]):
//! - a `spend_logs` duplicate has the same sorting key and collapses (ReplacingMergeTree);
//! - rollups are per block of [`crate::clickhouse::rows::BLOCK`] offsets, always rebuilt from
//!   the block's first offset, and a rewritten block's rows replace the old ones (`covered_to`
//!   only grows). Query with FINAL.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::watch;

use super::sleep_or_stop;
use super::writer::{insert_all, run, Dead};
use super::ConsumerMetrics;
use crate::clickhouse::queries::{DayFilter, DayRow, LogFilter};
use crate::clickhouse::rows::{rollup_keys, BlockRollup, Blocks, DailySpendRow, Key, SpendLogRow, Totals};
use crate::config::ClickHouseConfig;
use crate::events::topics::{Record, Start, Topics};
use crate::events::types::kind_hint;
use crate::events::Event;

/// Response events read at once when rebuilding the in-memory rollups.
const READ_BATCH: usize = 5000;

/// What the consumer holds between inserts.
#[derive(Default)]
pub struct Batch {
    /// The rows to insert, each with the partition it was read from.
    rows: Vec<(i32, SpendLogRow)>,
    dead: Vec<Dead>,
    /// When the newest event read ended (ms since the epoch): the consumer's lag.
    newest_ms: u64,
    /// The rollups per block, each rebuilt from its first offset.
    blocks: Blocks<BTreeMap<Key, Totals>>,
}

impl super::writer::Batch for Batch {
    const NAME: &'static str = "spend";
    const TOPIC: &'static str = "events";

    fn add(&mut self, record: &Record) {
        let row = match read(record) {
            Read::Row(row) => *row,
            Read::Other => return,
            Read::Bad => {
                self.dead.push(Dead::of(record));
                return;
            }
        };
        self.newest_ms = self.newest_ms.max(row.start_time_ms.saturating_add(row.duration_ms as u64));
        self.blocks.at(record.partition, record.offset).add(&row, record.offset);
        self.rows.push((record.partition, row));
    }

    fn len(&self) -> usize {
        self.rows.len()
    }

    fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.dead.is_empty()
    }

    fn dead(&self) -> &[Dead] {
        &self.dead
    }

    fn newest_ms(&self) -> u64 {
        self.newest_ms
    }

    async fn insert(&self, client: &clickhouse::Client) -> Result<Vec<(&'static str, u64)>, clickhouse::error::Error> {
        let rollups: Vec<DailySpendRow> = self.blocks.iter().flat_map(BlockRollup::rows).collect();
        Ok(vec![
            insert_all(client, "spend_logs", self.rows.iter().map(|(_, row)| row)).await?,
            insert_all(client, "daily_spend", rollups.iter()).await?,
        ])
    }

    /// The rows are in; closed blocks are done.
    fn written(&mut self) {
        self.rows.clear();
        self.dead.clear();
        self.blocks.written();
    }

    fn forget(&mut self, partitions: &std::collections::BTreeSet<i32>) {
        self.rows.retain(|(p, _)| !partitions.contains(p));
        self.dead.retain(|d| !partitions.contains(&d.partition));
        self.blocks.forget(partitions);
    }
}

/// What a record of `<prefix>.events` is to the spend consumer.
pub(super) enum Read {
    Row(Box<SpendLogRow>),
    /// A request or deployment event.
    Other,
    /// Not an event this version can read (malformed, or an unknown schema version): logged,
    /// counted and sent to `<prefix>.dead_letters`; it never stops the consumer.
    Bad,
}

pub(super) fn read(record: &Record) -> Read {
    let Some(value) = record.value.as_ref() else { return Read::Other };
    if kind_hint(value).is_some_and(|k| k != "response") {
        return Read::Other;
    }
    match Event::from_json(value) {
        Ok(Event::Response(e)) if e.envelope.schema_version == crate::events::types::SCHEMA_VERSION => {
            Read::Row(Box::new(SpendLogRow::of(&e)))
        }
        Ok(Event::Response(e)) => {
            tracing::warn!(
                offset = record.offset,
                version = e.envelope.schema_version,
                "an event of an unknown schema version; skipped"
            );
            Read::Bad
        }
        Ok(_) => Read::Other,
        Err(e) => {
            tracing::warn!(partition = record.partition, offset = record.offset, error = %e, "an event the spend consumer cannot read; skipped");
            Read::Bad
        }
    }
}

/// The consumer as a task of the gateway (embedded log), stopped when dropped.
pub struct InProcess {
    stop: watch::Sender<bool>,
}

impl InProcess {
    /// Into ClickHouse when configured, else into `memory`.
    pub fn spawn(
        topics: Topics,
        clickhouse: Option<ClickHouseConfig>,
        memory: std::sync::Arc<MemoryStore>,
        metrics: ConsumerMetrics,
    ) -> Self {
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(async move {
            let result = match clickhouse {
                Some(ch) => run::<Batch>(topics, ch, metrics, stopped).await,
                None => run_memory(topics, memory, stopped).await,
            };
            if let Err(e) = result {
                tracing::error!(error = %e, "the spend consumer stopped");
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

/// Without ClickHouse (embedded log): the same rollups and the most recent spend log rows in
/// memory, for the spend endpoints. Built only once a spend endpoint is first called (reading
/// every response event costs CPU per call, which a gateway whose spend nobody asks for should
/// not pay), from the log's beginning; the first call waits until it has caught up.
#[derive(Default)]
pub struct MemoryStore {
    days: std::sync::Mutex<BTreeMap<Key, Totals>>,
    /// The newest rows, at most [`MEMORY_LOGS`].
    logs: std::sync::Mutex<std::collections::VecDeque<SpendLogRow>>,
    /// Set by the first spend query: the consumer starts reading.
    wanted: std::sync::atomic::AtomicBool,
    /// Set once the consumer has read what the log held when it started.
    ready: std::sync::atomic::AtomicBool,
    changed: tokio::sync::Notify,
}

/// How long the first spend query waits for the history to be read.
const FIRST_QUERY_WAIT: Duration = Duration::from_secs(30);

/// Spend log rows kept in memory.
pub const MEMORY_LOGS: usize = 10_000;

impl MemoryStore {
    /// Starts the consumer if it waits, and waits (bounded) until it has read the history.
    pub async fn ready(&self) -> bool {
        use std::sync::atomic::Ordering;
        if !self.wanted.swap(true, Ordering::AcqRel) {
            self.changed.notify_waiters();
        }
        let deadline = tokio::time::Instant::now() + FIRST_QUERY_WAIT;
        while !self.ready.load(Ordering::Acquire) {
            let wait = self.changed.notified();
            if self.ready.load(Ordering::Acquire) {
                break;
            }
            if tokio::time::timeout_at(deadline, wait).await.is_err() {
                return false;
            }
        }
        true
    }

    pub fn add(&self, row: SpendLogRow) {
        {
            let mut days = self.days.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for key in rollup_keys(&row) {
                days.entry(key).or_default().add(&row);
            }
        }
        let mut logs = self.logs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if logs.len() >= MEMORY_LOGS {
            logs.pop_front();
        }
        logs.push_back(row);
    }

    /// What [`crate::clickhouse::queries::days`] answers, from memory.
    pub fn days(&self, f: &DayFilter) -> Vec<DayRow> {
        let within =
            |d: &str| f.start_date.as_deref().is_none_or(|s| d >= s) && f.end_date.as_deref().is_none_or(|e| d <= e);
        let days = self.days.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        days.iter()
            .filter(|(k, _)| k.entity_kind == f.kind)
            .filter(|(k, _)| f.entity.as_ref().is_none_or(|e| *e == k.entity))
            .filter(|(k, _)| f.model_group.as_ref().is_none_or(|m| *m == k.model_group))
            .filter(|(k, _)| f.api_keys.as_ref().is_none_or(|keys| keys.contains(&k.api_key)))
            .map(|(k, t)| (date_text(k.date), k, t))
            .filter(|(d, _, _)| within(d))
            .map(|(date, k, t)| DayRow {
                date,
                entity: k.entity.clone(),
                api_key: k.api_key.clone(),
                model_group: k.model_group.clone(),
                provider: k.provider.clone(),
                totals: *t,
            })
            .collect()
    }

    /// What [`crate::clickhouse::queries::logs`] answers, from the rows kept, newest first.
    pub fn logs(&self, f: &LogFilter) -> Vec<SpendLogRow> {
        let logs = self.logs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        logs.iter()
            .rev()
            .filter(|r| eq(&f.api_key, &r.api_key) && eq(&f.user, &r.user) && eq(&f.request_id, &r.request_id))
            .filter(|r| f.api_keys.as_ref().is_none_or(|keys| keys.contains(&r.api_key)))
            .filter(|r| {
                let d = date_text(u16::try_from(r.start_time / 86_400).unwrap_or(u16::MAX));
                f.start_date.as_deref().is_none_or(|s| d.as_str() >= s)
                    && f.end_date.as_deref().is_none_or(|e| d.as_str() <= e)
            })
            .take(usize::try_from(f.limit.max(1)).unwrap_or(usize::MAX))
            .cloned()
            .collect()
    }
}

/// `YYYY-MM-DD` of a day number.
fn date_text(days: u16) -> String {
    jiff::civil::Date::constant(1970, 1, 1)
        .checked_add(jiff::Span::new().days(i64::from(days)))
        .map(|d| d.to_string())
        .unwrap_or_default()
}

/// Once a spend query wants it, follows the log from its beginning into `store` until `stop`.
pub async fn run_memory(
    topics: Topics,
    store: std::sync::Arc<MemoryStore>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    use std::sync::atomic::Ordering;
    while !store.wanted.load(Ordering::Acquire) {
        let wanted = store.changed.notified();
        if store.wanted.load(Ordering::Acquire) {
            break;
        }
        tokio::select! {
            _ = wanted => {}
            _ = stop.changed() => return Ok(()),
        }
    }
    let mut follower =
        topics.follow("events", Start::Beginning).map_err(|e| format!("cannot follow the events: {e}"))?;
    loop {
        tokio::select! {
            batch = follower.next_batch(READ_BATCH, Duration::from_millis(500)) => match batch {
                Ok(records) => {
                    for record in records {
                        if let Read::Row(row) = read(&record) {
                            store.add(*row);
                        }
                    }
                    if !store.ready.load(Ordering::Relaxed) && follower.caught_up() {
                        store.ready.store(true, Ordering::Release);
                        store.changed.notify_waiters();
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading the events failed; retrying");
                    if sleep_or_stop(&mut stop, Duration::from_secs(1)).await {
                        return Ok(());
                    }
                }
            },
            _ = stop.changed() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::consumers::writer::Batch as _;
    use crate::events::types::CallerFields;

    /// A response event at `offset` of `partition`, costing 1 USD.
    fn record(partition: i32, offset: i64) -> Record {
        let caller = CallerFields { api_key_hash: Some("k".into()), ..CallerFields::default() };
        let event = crate::events::types::tests::response(caller, 1.0);
        let value = Event::Response(Box::new(event)).to_json();
        Record { partition, offset, key: format!("call-{offset}"), value: Some(value) }
    }

    fn rollups(batch: &Batch) -> Vec<DailySpendRow> {
        batch.blocks.iter().flat_map(BlockRollup::rows).collect()
    }

    #[test]
    fn forgetting_a_partition_drops_its_rows_dead_letters_and_blocks_only() {
        let mut batch = Batch::default();
        for r in [record(0, 4095), record(0, 4096), record(1, 3), record(1, 4)] {
            batch.add(&r);
        }
        batch.add(&Record { partition: 0, offset: 4097, key: "bad".into(), value: Some(b"{not json".to_vec()) });
        batch.forget(&BTreeSet::from([0]));
        assert_eq!(batch.rows.iter().map(|(p, _)| *p).collect::<Vec<_>>(), [1, 1]);
        assert!(batch.dead.is_empty());
        let rows = rollups(&batch);
        assert!(rows.iter().all(|r| r.source_partition == 1));
        assert_eq!(rows.iter().find(|r| r.entity_kind == "key").map(|r| r.requests), Some(2));
        batch.forget(&BTreeSet::from([1]));
        assert!(batch.is_empty() && rollups(&batch).is_empty());
    }

    #[test]
    fn written_batches_keep_their_open_blocks_to_rewrite_them_whole() {
        let mut batch = Batch::default();
        for r in [record(0, 7), record(1, 3)] {
            batch.add(&r);
        }
        assert_eq!(batch.len(), 2);
        batch.written();
        assert!(batch.is_empty());
        let partitions: BTreeSet<i32> = rollups(&batch).iter().map(|r| r.source_partition).collect();
        assert_eq!(partitions, BTreeSet::from([0, 1]));
    }
}
