//! The loop every ClickHouse consumer runs: follow one topic as a member of the consumer's
//! group, fold its records into a [`Batch`], and insert the batch, then the positions, retrying
//! while ClickHouse is down.
//!
//! - Rows go in before the positions (`consumer_offsets`): a crash between the two re-reads
//!   records whose rows are already in, so a batch's rows must be idempotent (see
//!   `crate::clickhouse::rows`: ReplacingMergeTree, and rollups per block of [`BLOCK`] offsets
//!   rewritten whole).
//! - Many processes share the work: the follower is a member of the Kafka consumer group
//!   `<prefix>.consumer.<name>` ([`Start::Shared`]), each partition read by one member at a
//!   time (on the embedded log, the one process is the whole group). ClickHouse's
//!   `consumer_offsets` stays the source of truth: a partition given to this process starts at
//!   the start of the block holding its position there (the beginning when there is none: a
//!   fresh database is rebuilt from the log), never at the group's Kafka offsets, which are
//!   committed after each batch only so that Kafka's tools show the lag. A partition taken
//!   away is forgotten (its unwritten rows, blocks and position); its next owner reads them
//!   again from the block's start. Even a member that writes late, after losing a partition,
//!   cannot break a total: what it writes is a function of the log from a block's start, and
//!   the row covering the most wins.
//! - ClickHouse down: the batch is kept and retried with backoff, the positions do not move,
//!   and the follower is not read meanwhile (the log holds what comes).
//! - Records that cannot be read go to `<prefix>.dead_letters`, counted; never a stuck consumer.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{sleep_or_stop, with_deadline, ConsumerMetrics};
use crate::clickhouse::rows::{block_start, BLOCK};
use crate::config::ClickHouseConfig;
use crate::events::topics::{Follower, Reassigned, Record, Start, Topics};

/// Rows buffered before an insert, and the longest a row waits.
const BATCH_ROWS: usize = 5000;
const BATCH_TIME: Duration = Duration::from_secs(1);

/// What a consumer makes of its topic's records between two inserts.
pub trait Batch: Default + Send {
    /// The consumer's name in `consumer_offsets` and in the metrics.
    const NAME: &'static str;
    /// The topic it follows (short name).
    const TOPIC: &'static str;

    fn add(&mut self, record: &Record);
    /// Records taken since the last insert.
    fn len(&self) -> usize;
    /// Nothing to write.
    fn is_empty(&self) -> bool;
    /// Records that cannot be read, for `<prefix>.dead_letters`.
    fn dead(&self) -> &[Dead];
    /// When the newest event taken happened (ms since the epoch; 0: none): the lag.
    fn newest_ms(&self) -> u64;
    /// Inserts the rows (not the position); the rows written per table.
    fn insert(
        &self,
        client: &clickhouse::Client,
    ) -> impl Future<Output = Result<Vec<(&'static str, u64)>, clickhouse::error::Error>> + Send;
    /// After a successful insert.
    fn written(&mut self);
    /// Drops everything held of `partitions` (taken away from this process, or given anew).
    fn forget(&mut self, partitions: &BTreeSet<i32>);
}

/// A record a consumer cannot read: copied to `<prefix>.dead_letters`.
#[derive(Debug, Clone)]
pub struct Dead {
    pub partition: i32,
    pub key: String,
    pub value: Vec<u8>,
}

impl Dead {
    pub fn of(record: &Record) -> Self {
        Self { partition: record.partition, key: record.key.clone(), value: record.value.clone().unwrap_or_default() }
    }
}

#[derive(Debug, Serialize, Deserialize, clickhouse::Row)]
struct Offset {
    consumer: String,
    partition: i32,
    next_offset: u64,
    /// DateTime: seconds since the epoch.
    updated_at: u32,
}

/// Where a batch goes.
struct Sink<'a> {
    client: &'a clickhouse::Client,
    topics: &'a Topics,
    metrics: &'a ConsumerMetrics,
}

/// Inserts a batch, then the position; bad records go to the dead-letter topic first. Nothing
/// is cleared on failure.
async fn write<B: Batch>(sink: &Sink<'_>, batch: &mut B, position: &[(i32, i64)]) -> Result<(), String> {
    for dead in batch.dead() {
        sink.topics
            .append("dead_letters", &dead.key, Some(&dead.value))
            .await
            .map_err(|e| format!("dead letters: {e}"))?;
    }
    let rows = batch.insert(sink.client).await.map_err(|e| e.to_string())?;
    save_position(sink.client, B::NAME, position).await.map_err(|e| e.to_string())?;
    let m = sink.metrics;
    for (table, n) in rows {
        m.rows.with_label_values(&[B::NAME, table]).inc_by(n);
    }
    m.skipped.with_label_values(&[B::NAME, "unreadable"]).inc_by(batch.dead().len() as u64);
    m.batches.with_label_values(&[B::NAME]).inc();
    if batch.newest_ms() > 0 {
        let now = u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap_or(0);
        m.lag.with_label_values(&[B::NAME]).set(now.saturating_sub(batch.newest_ms()) as f64 / 1000.0);
    }
    batch.written();
    Ok(())
}

async fn save_position(
    client: &clickhouse::Client,
    consumer: &str,
    position: &[(i32, i64)],
) -> Result<(), clickhouse::error::Error> {
    let now = u32::try_from(jiff::Timestamp::now().as_second()).unwrap_or(0);
    let mut insert = client.insert::<Offset>("consumer_offsets").await?;
    for (partition, next) in position {
        let next_offset = u64::try_from(*next).unwrap_or(0);
        insert
            .write(&Offset { consumer: consumer.into(), partition: *partition, next_offset, updated_at: now })
            .await?;
    }
    insert.end().await
}

/// Writes `rows` into `table` in one insert (none when empty); how many.
pub async fn insert_all<'r, R: clickhouse::RowOwned + clickhouse::RowWrite + 'r>(
    client: &clickhouse::Client,
    table: &'static str,
    rows: impl ExactSizeIterator<Item = &'r R> + Send,
) -> Result<(&'static str, u64), clickhouse::error::Error> {
    let n = rows.len() as u64;
    if n > 0 {
        let mut insert = client.insert::<R>(table).await?;
        for row in rows {
            insert.write(row).await?;
        }
        insert.end().await?;
    }
    Ok((table, n))
}

/// The positions stored in ClickHouse: the next offset to read, per partition.
async fn stored_positions(
    client: &clickhouse::Client,
    consumer: &str,
) -> Result<BTreeMap<i32, u64>, clickhouse::error::Error> {
    let saved: Vec<Offset> = client
        .query("SELECT consumer, partition, next_offset, updated_at FROM consumer_offsets FINAL WHERE consumer = ?")
        .bind(consumer)
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

/// What a consumer process holds of its topic: the follower, the batch, and per partition read
/// since the last insert the offset after the last record taken (written with the rows).
struct Reading<B> {
    follower: Follower,
    batch: B,
    positions: BTreeMap<i32, i64>,
}

impl<B: Batch> Reading<B> {
    fn add(&mut self, record: &Record) {
        let next = self.positions.entry(record.partition).or_insert(0);
        *next = (*next).max(record.offset + 1);
        self.batch.add(record);
    }

    /// After a rebalance: forgets what is held of the partitions taken away or given anew,
    /// then places the given ones where [`starts`] says (their positions read from ClickHouse,
    /// retried until it answers). False when stopped first.
    async fn take_over(
        &mut self,
        change: Reassigned,
        client: &clickhouse::Client,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<bool, String> {
        let name = B::NAME;
        let changed: BTreeSet<i32> = change.revoked.union(&change.assigned).copied().collect();
        self.batch.forget(&changed);
        self.positions.retain(|p, _| !changed.contains(p));
        if !change.revoked.is_empty() {
            let partitions: Vec<i32> = change.revoked.iter().copied().collect();
            tracing::info!(partitions = ?partitions, consumer = name, "partitions revoked");
        }
        if change.assigned.is_empty() {
            return Ok(true);
        }
        let stored = loop {
            match with_deadline(stored_positions(client, name)).await.and_then(|r| r.map_err(|e| e.to_string())) {
                Ok(stored) => break stored,
                Err(e) => {
                    tracing::warn!(consumer = name, error = %e, "cannot read the consumer's positions from ClickHouse; retrying");
                    if sleep_or_stop(stop, Duration::from_secs(1)).await {
                        return Ok(false);
                    }
                }
            }
        };
        let at = starts(&change.assigned, &stored);
        let partitions: Vec<i32> = change.assigned.iter().copied().collect();
        tracing::info!(partitions = ?partitions, consumer = name, from = ?at, "partitions assigned");
        self.follower.place(&at).await.map_err(|e| format!("cannot start reading the assigned partitions: {e}"))?;
        Ok(true)
    }

    /// Writes the batch and its positions, then commits the group's offsets to Kafka. While
    /// ClickHouse fails it keeps the batch and retries with backoff, reading nothing further
    /// (the log holds what comes); once stopping, it tries once more, then gives up.
    async fn flush(
        &mut self,
        sink: &Sink<'_>,
        stop: &mut watch::Receiver<bool>,
        mut stopping: bool,
    ) -> Result<(), String> {
        let name = B::NAME;
        let mut backoff = Duration::from_millis(200);
        let mut failed = false;
        loop {
            let positions: Vec<(i32, i64)> = self.positions.iter().map(|(p, o)| (*p, *o)).collect();
            match with_deadline(write(sink, &mut self.batch, &positions)).await.and_then(|r| r) {
                Ok(()) => {
                    self.positions.clear();
                    if failed {
                        tracing::info!(consumer = name, "ClickHouse is back: the consumer goes on");
                    }
                    // For operators' lag tools only: a failure (e.g. during a rebalance) is left
                    // to the next batch.
                    if let Err(e) = self.follower.commit().await {
                        tracing::warn!(consumer = name, error = %e, "cannot commit the group's offsets to Kafka (lag tools only)");
                    }
                    return Ok(());
                }
                Err(e) => {
                    sink.metrics.retries.with_label_values(&[name]).inc();
                    tracing::warn!(consumer = name, error = %e, records = self.batch.len(), ?backoff, "writing to ClickHouse failed; retrying");
                    if stopping {
                        return Err(format!(
                            "the {name} consumer stopped with {} records not written: {e}",
                            self.batch.len()
                        ));
                    }
                }
            }
            failed = true;
            stopping = sleep_or_stop(stop, backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }
}

/// Runs the consumer `B` until `stop` turns true (then writes what it holds). ClickHouse errors
/// are retried.
pub async fn run<B: Batch>(
    topics: Topics,
    clickhouse: ClickHouseConfig,
    metrics: ConsumerMetrics,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let name = B::NAME;
    let client = crate::clickhouse::client(&clickhouse);
    let sink = Sink { client: &client, topics: &topics, metrics: &metrics };
    let group = topics.group(name);
    tracing::info!(consumer = name, %group, block = BLOCK, "consumer starting");
    let follower = topics
        .follow(B::TOPIC, Start::Shared(group))
        .map_err(|e| format!("cannot follow {}: {e}", topics.name(B::TOPIC)))?;
    let mut reading = Reading { follower, batch: B::default(), positions: BTreeMap::new() };
    let mut since = Instant::now();
    loop {
        let stopping = *stop.borrow();
        if !stopping {
            match reading.follower.next_batch(BATCH_ROWS, Duration::from_millis(200)).await {
                Ok(records) => records.iter().for_each(|r| reading.add(r)),
                Err(e) => {
                    tracing::warn!(consumer = name, error = %e, "reading the topic failed; retrying");
                    let _ = sleep_or_stop(&mut stop, Duration::from_secs(1)).await;
                }
            }
            if let Some(change) = reading.follower.reassigned() {
                if !reading.take_over(change, &client, &mut stop).await? {
                    return Ok(());
                }
            }
        }
        let due = reading.batch.len() >= BATCH_ROWS || since.elapsed() >= BATCH_TIME || stopping;
        if due && !reading.batch.is_empty() {
            reading.flush(&sink, &mut stop, stopping).await?;
        }
        if due {
            since = Instant::now();
        }
        if stopping {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_starts_at_the_block_holding_its_stored_position_or_the_beginning() {
        let stored = BTreeMap::from([(0, 4095), (1, 4096), (2, 10_000), (9, 5)]);
        assert_eq!(starts(&BTreeSet::from([0, 1, 2, 3]), &stored), [(0, 0), (1, 4096), (2, 8192), (3, 0)]);
    }
}
