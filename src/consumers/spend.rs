//! The spend consumer: `<prefix>.events` → ClickHouse `spend_logs` (one row per response
//! event) and `daily_spend` (rollups per key, team, user, end user, model, tag and provider).
//!
//! Exactly once in effect, on at-least-once delivery:
//! - rows are inserted first, then the consumer's position (`consumer_offsets`), so a crash
//!   between the two re-reads events whose rows are already in;
//! - a `spend_logs` duplicate has the same sorting key and collapses (ReplacingMergeTree);
//! - rollups are per block of [`BLOCK`] offsets, always rebuilt from the block's first offset:
//!   a partition is read from the start of the block holding its saved position, and a
//!   rewritten block's rows replace the old ones (`covered_to` only grows). Query with FINAL.
//!
//! Many processes share the work: the follower is a member of the consumer group
//! `<prefix>.consumer.spend` ([`Start::Shared`]), each partition of `<prefix>.events` read by
//! one member at a time. ClickHouse's `consumer_offsets` stays the source of truth: a
//! partition given to this process starts at the start of the block holding its position
//! there (or at the beginning: a fresh database is rebuilt from the log), never at the
//! group's Kafka offsets, which are committed after each batch only so that standard Kafka
//! tools show the lag. A partition taken away is forgotten: its unwritten rows and its open
//! block are dropped, and its position is not written; its next owner reads them again from
//! the block's start. Even a member that wrote late (after losing a partition) cannot break
//! a total: everything it writes is a function of the log from a block's start, and the
//! furthest row wins.
//!
//! ClickHouse down: the batch is kept and retried with backoff, the position does not move, and
//! the follower is not read meanwhile (the log holds what comes).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::ConsumerMetrics;
use crate::clickhouse::queries::{DayFilter, DayRow, LogFilter};
use crate::clickhouse::rows::{
    block_of, block_start, rollup_keys, BlockRollup, DailySpendRow, Key, SpendLogRow, Totals, BLOCK,
};
use crate::config::ClickHouseConfig;
use crate::events::topics::{Follower, Reassigned, Record, Start, Topics};
use crate::events::types::kind_hint;
use crate::events::Event;

/// The consumer's name in `consumer_offsets`.
pub const NAME: &str = "spend";
/// Rows buffered before an insert, and the longest a row waits.
const BATCH_ROWS: usize = 5000;
const BATCH_TIME: Duration = Duration::from_secs(1);

#[derive(Debug, Serialize, Deserialize, clickhouse::Row)]
struct Offset {
    consumer: String,
    partition: i32,
    next_offset: u64,
    /// DateTime: seconds since the epoch.
    updated_at: u32,
}

/// What the consumer holds between inserts.
#[derive(Default)]
pub struct Batch {
    /// The rows to insert, each with the partition it was read from.
    rows: Vec<(i32, SpendLogRow)>,
    /// Records that cannot be read: (partition, key, value), for `<prefix>.dead_letters`.
    dead: Vec<(i32, String, Vec<u8>)>,
    /// When the newest event read ended (ms since the epoch): the consumer's lag.
    newest_ms: u64,
    /// The open block of each partition, rebuilt from its first offset.
    blocks: BTreeMap<i32, BlockRollup>,
    /// Blocks that closed since the last insert (their final rows are still to be written).
    closed: Vec<BlockRollup>,
    /// Per partition read since the last insert, the offset after the last record added: the
    /// position written with the rows.
    positions: BTreeMap<i32, i64>,
    /// Partitions with rows, dead letters or blocks to write since the last insert.
    touched: BTreeSet<i32>,
}

impl Batch {
    /// Adds one record of `<prefix>.events`.
    pub fn add(&mut self, record: &Record) {
        let next = self.positions.entry(record.partition).or_insert(0);
        *next = (*next).max(record.offset + 1);
        let row = match read(record) {
            Read::Row(row) => *row,
            Read::Other => return,
            Read::Bad => {
                self.dead.push((record.partition, record.key.clone(), record.value.clone().unwrap_or_default()));
                self.touched.insert(record.partition);
                return;
            }
        };
        self.newest_ms = self.newest_ms.max(row.start_time_ms.saturating_add(row.duration_ms as u64));
        let block = block_of(record.offset);
        let open = self.blocks.entry(record.partition).or_insert_with(|| BlockRollup::new(record.partition, block));
        if open.block != block {
            let done = std::mem::replace(open, BlockRollup::new(record.partition, block));
            self.closed.push(done);
        }
        open.add(&row, record.offset);
        self.rows.push((record.partition, row));
        self.touched.insert(record.partition);
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.touched.is_empty()
    }

    /// Drops everything held of `partitions`: unwritten rows, dead letters, blocks and
    /// positions. What is dropped is read again by whoever reads the partition next, from the
    /// start of the block holding the position written last.
    pub fn forget(&mut self, partitions: &BTreeSet<i32>) {
        self.rows.retain(|(p, _)| !partitions.contains(p));
        self.dead.retain(|(p, _, _)| !partitions.contains(p));
        self.blocks.retain(|p, _| !partitions.contains(p));
        self.closed.retain(|b| !partitions.contains(&b.partition));
        self.positions.retain(|p, _| !partitions.contains(p));
        self.touched.retain(|p| !partitions.contains(p));
    }

    /// The rollup rows to write: closed blocks and the open ones, whole.
    fn rollups(&self) -> Vec<DailySpendRow> {
        self.closed.iter().chain(self.blocks.values()).flat_map(BlockRollup::rows).collect()
    }

    /// After a successful insert: the rows are in; closed blocks are done.
    fn written(&mut self) {
        self.rows.clear();
        self.dead.clear();
        self.closed.clear();
        self.positions.clear();
        self.touched.clear();
    }
}

/// What a record of `<prefix>.events` is to the spend consumer.
enum Read {
    Row(Box<SpendLogRow>),
    /// A request or deployment event.
    Other,
    /// Not an event this version can read (malformed, or an unknown schema version): logged,
    /// counted and sent to `<prefix>.dead_letters`; it never stops the consumer.
    Bad,
}

fn read(record: &Record) -> Read {
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

/// Where a batch goes.
struct Sink<'a> {
    client: &'a clickhouse::Client,
    topics: &'a Topics,
    metrics: &'a ConsumerMetrics,
}

/// Inserts a batch, then its positions; bad records go to the dead-letter topic first.
/// Nothing is cleared on failure.
async fn write(sink: &Sink<'_>, batch: &mut Batch) -> Result<(), String> {
    for (_, key, value) in &batch.dead {
        sink.topics.append("dead_letters", key, Some(value)).await.map_err(|e| format!("dead letters: {e}"))?;
    }
    insert(sink.client, batch).await.map_err(|e| e.to_string())?;
    let m = sink.metrics;
    m.rows.with_label_values(&[NAME, "spend_logs"]).inc_by(batch.rows.len() as u64);
    m.skipped.with_label_values(&[NAME, "unreadable"]).inc_by(batch.dead.len() as u64);
    m.batches.with_label_values(&[NAME]).inc();
    if batch.newest_ms > 0 {
        let now = u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap_or(0);
        m.lag.with_label_values(&[NAME]).set(now.saturating_sub(batch.newest_ms) as f64 / 1000.0);
    }
    batch.written();
    Ok(())
}

async fn insert(client: &clickhouse::Client, batch: &Batch) -> Result<(), clickhouse::error::Error> {
    if !batch.rows.is_empty() {
        let mut insert = client.insert::<SpendLogRow>("spend_logs").await?;
        for (_, row) in &batch.rows {
            insert.write(row).await?;
        }
        insert.end().await?;
    }
    let rollups = batch.rollups();
    if !rollups.is_empty() {
        let mut insert = client.insert::<DailySpendRow>("daily_spend").await?;
        for row in &rollups {
            insert.write(row).await?;
        }
        insert.end().await?;
    }
    let now = u32::try_from(jiff::Timestamp::now().as_second()).unwrap_or(0);
    let mut insert = client.insert::<Offset>("consumer_offsets").await?;
    for (partition, next) in &batch.positions {
        let next_offset = u64::try_from(*next).unwrap_or(0);
        insert.write(&Offset { consumer: NAME.into(), partition: *partition, next_offset, updated_at: now }).await?;
    }
    insert.end().await?;
    Ok(())
}

/// The positions stored in ClickHouse: the next offset to read, per partition.
async fn stored_positions(client: &clickhouse::Client) -> Result<BTreeMap<i32, u64>, clickhouse::error::Error> {
    let saved: Vec<Offset> = client
        .query("SELECT consumer, partition, next_offset, updated_at FROM consumer_offsets FINAL WHERE consumer = ?")
        .bind(NAME)
        .fetch_all()
        .await?;
    Ok(saved.into_iter().map(|o| (o.partition, o.next_offset)).collect())
}

/// Where each newly assigned partition starts: the start of the block holding its stored
/// position, or the beginning when none is stored.
fn starts(assigned: &BTreeSet<i32>, stored: &BTreeMap<i32, u64>) -> Vec<(i32, i64)> {
    assigned
        .iter()
        .map(|p| (*p, stored.get(p).map_or(0, |next| block_start(i64::try_from(*next).unwrap_or(i64::MAX)))))
        .collect()
}

/// After a rebalance: forgets what the batch holds of partitions taken away or given anew,
/// then places the given ones where [`starts`] says (reading their positions from ClickHouse,
/// retried until it answers). False when stopped first.
async fn take_over(
    follower: &mut Follower,
    batch: &mut Batch,
    change: Reassigned,
    client: &clickhouse::Client,
    stop: &mut watch::Receiver<bool>,
) -> Result<bool, String> {
    batch.forget(&change.revoked.union(&change.assigned).copied().collect());
    if !change.revoked.is_empty() {
        tracing::info!(partitions = ?change.revoked.iter().collect::<Vec<_>>(), "spend consumer: partitions revoked");
    }
    if change.assigned.is_empty() {
        return Ok(true);
    }
    let stored = loop {
        match with_deadline(stored_positions(client)).await.and_then(|r| r.map_err(|e| e.to_string())) {
            Ok(stored) => break stored,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the spend consumer's positions from ClickHouse; retrying");
                if sleep_or_stop(stop, Duration::from_secs(1)).await {
                    return Ok(false);
                }
            }
        }
    };
    let at = starts(&change.assigned, &stored);
    tracing::info!(partitions = ?change.assigned.iter().collect::<Vec<_>>(), from = ?at, "spend consumer: partitions assigned");
    follower.place(&at).await.map_err(|e| format!("cannot start reading the assigned partitions: {e}"))?;
    Ok(true)
}

/// Runs until `stop` turns true (then writes what it holds). ClickHouse errors are retried.
pub async fn run(
    topics: Topics,
    clickhouse: ClickHouseConfig,
    metrics: ConsumerMetrics,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let client = crate::clickhouse::client(&clickhouse);
    let sink = Sink { client: &client, topics: &topics, metrics: &metrics };
    let group = topics.group(NAME);
    tracing::info!(%group, block = BLOCK, "spend consumer starting");
    let mut follower =
        topics.follow("events", Start::Shared(group)).map_err(|e| format!("cannot follow the events: {e}"))?;
    let mut batch = Batch::default();
    let mut since = Instant::now();
    loop {
        let stopping = *stop.borrow();
        if !stopping {
            match follower.next_batch(BATCH_ROWS, Duration::from_millis(200)).await {
                Ok(records) => records.iter().for_each(|r| batch.add(r)),
                Err(e) => {
                    tracing::warn!(error = %e, "reading the events failed; retrying");
                    let _ = sleep_or_stop(&mut stop, Duration::from_secs(1)).await;
                }
            }
            if let Some(change) = follower.reassigned() {
                if !take_over(&mut follower, &mut batch, change, &client, &mut stop).await? {
                    return Ok(());
                }
            }
        }
        let due = batch.len() >= BATCH_ROWS || since.elapsed() >= BATCH_TIME || stopping;
        if due && !batch.is_empty() {
            flush(&sink, &mut batch, &mut follower, &mut stop, stopping).await?;
        }
        if due {
            since = Instant::now();
        }
        if stopping {
            return Ok(());
        }
    }
}

/// Writes the batch, then commits the group's offsets to Kafka. While ClickHouse fails it keeps
/// the batch and retries with backoff, reading nothing further (the log holds what comes); once
/// stopping, it tries once more, then gives up with an error.
async fn flush(
    sink: &Sink<'_>,
    batch: &mut Batch,
    follower: &mut Follower,
    stop: &mut watch::Receiver<bool>,
    mut stopping: bool,
) -> Result<(), String> {
    let mut backoff = Duration::from_millis(200);
    let mut failed = false;
    loop {
        match with_deadline(write(sink, batch)).await.and_then(|r| r) {
            Ok(()) => {
                if failed {
                    tracing::info!("ClickHouse is back: the spend consumer goes on");
                }
                commit(follower).await;
                return Ok(());
            }
            Err(e) => {
                sink.metrics.retries.with_label_values(&[NAME]).inc();
                tracing::warn!(error = %e, rows = batch.len(), ?backoff, "writing to ClickHouse failed; retrying");
                if stopping {
                    return Err(format!("stopped with {} spend rows not written: {e}", batch.len()));
                }
            }
        }
        failed = true;
        stopping = sleep_or_stop(stop, backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// After ClickHouse has a batch: the group's offsets in Kafka follow, for operators' lag tools
/// only (a failure, e.g. during a rebalance, is logged and left to the next batch).
async fn commit(follower: &mut Follower) {
    if let Err(e) = follower.commit().await {
        tracing::warn!(error = %e, "cannot commit the spend consumer group's offsets to Kafka (lag tools only)");
    }
}

/// The longest one ClickHouse round trip may take: a server that stops answering without
/// closing the connection must not hold the consumer forever (it retries instead).
const CLICKHOUSE_DEADLINE: Duration = Duration::from_secs(30);

async fn with_deadline<T>(work: impl std::future::Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(CLICKHOUSE_DEADLINE, work)
        .await
        .map_err(|_| format!("ClickHouse did not answer within {}s", CLICKHOUSE_DEADLINE.as_secs()))
}

/// Sleeps `d`; true when `stop` turned true meanwhile.
async fn sleep_or_stop(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
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
                Some(ch) => run(topics, ch, metrics, stopped).await,
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
            batch = follower.next_batch(BATCH_ROWS, Duration::from_millis(500)) => match batch {
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
    use super::*;
    use crate::events::types::CallerFields;

    /// A response event at `offset` of `partition`, costing 1 USD.
    fn record(partition: i32, offset: i64) -> Record {
        let caller = CallerFields { api_key_hash: Some("k".into()), ..CallerFields::default() };
        let event = crate::events::types::tests::response(caller, 1.0);
        let value = Event::Response(Box::new(event)).to_json();
        Record { partition, offset, key: format!("call-{offset}"), value: Some(value) }
    }

    /// A record the spend consumer does not count (a request event).
    fn other(partition: i32, offset: i64) -> Record {
        let value = br#"{"schema_version":1,"type":"request"}"#.to_vec();
        Record { partition, offset, key: String::new(), value: Some(value) }
    }

    #[test]
    fn a_batch_writes_the_position_after_every_record_read_per_partition() {
        let mut batch = Batch::default();
        for r in [record(0, 7), other(0, 8), record(1, 3)] {
            batch.add(&r);
        }
        assert_eq!(batch.positions, BTreeMap::from([(0, 9), (1, 4)]));
        assert_eq!(batch.len(), 2);
        batch.written();
        assert!(batch.is_empty() && batch.positions.is_empty());
        // The open blocks stay: the next insert rewrites them whole, from their first offset.
        assert_eq!(batch.rollups().iter().map(|r| r.source_partition).collect::<BTreeSet<_>>(), [0, 1].into());
    }

    #[test]
    fn forgetting_a_partition_drops_its_rows_blocks_and_position_only() {
        let mut batch = Batch::default();
        for r in [record(0, 4095), record(0, 4096), record(1, 3), record(1, 4)] {
            batch.add(&r);
        }
        batch.add(&Record { partition: 0, offset: 4097, key: "bad".into(), value: Some(b"{not json".to_vec()) });
        assert_eq!(batch.closed.len(), 1, "offset 4096 closed partition 0's first block");
        batch.forget(&[0].into());
        assert_eq!(batch.rows.iter().map(|(p, _)| *p).collect::<Vec<_>>(), [1, 1]);
        assert!(batch.dead.is_empty() && batch.closed.is_empty());
        assert_eq!(batch.positions, BTreeMap::from([(1, 5)]));
        let rollups = batch.rollups();
        assert!(rollups.iter().all(|r| r.source_partition == 1));
        assert_eq!(rollups.iter().find(|r| r.entity_kind == "key").map(|r| r.requests), Some(2));
        batch.forget(&[1].into());
        assert!(batch.is_empty() && batch.rollups().is_empty());
    }

    #[test]
    fn a_partition_starts_at_the_block_holding_its_stored_position_or_the_beginning() {
        let stored = BTreeMap::from([(0, 4095), (1, 4096), (2, 10_000), (9, 5)]);
        assert_eq!(starts(&[0, 1, 2, 3].into(), &stored), [(0, 0), (1, 4096), (2, 8192), (3, 0)]);
    }
}
