//! The loop every ClickHouse consumer runs: follow one topic from the saved position, fold its
//! records into a [`Batch`], and insert the batch, then the position, retrying while
//! ClickHouse is down.
//!
//! - Rows go in before the position (`consumer_offsets`): a crash between the two re-reads
//!   records whose rows are already in, so a batch's rows must be idempotent (see
//!   `crate::clickhouse::rows`: ReplacingMergeTree, and rollups per block of [`BLOCK`] offsets
//!   rewritten whole).
//! - At start the consumer resumes from the start of the block holding its saved position.
//! - ClickHouse down: the batch is kept and retried with backoff, the position does not move,
//!   and the follower is not read meanwhile (the log holds what comes).
//! - Records that cannot be read go to `<prefix>.dead_letters`, counted; never a stuck consumer.

use std::future::Future;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{sleep_or_stop, with_deadline, ConsumerMetrics};
use crate::clickhouse::rows::{block_start, BLOCK};
use crate::config::ClickHouseConfig;
use crate::events::topics::{Record, Start, Topics};

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
    /// Records that cannot be read: (key, value), for `<prefix>.dead_letters`.
    fn dead(&self) -> &[(String, Vec<u8>)];
    /// When the newest event taken happened (ms since the epoch; 0: none): the lag.
    fn newest_ms(&self) -> u64;
    /// Inserts the rows (not the position); the rows written per table.
    fn insert(
        &self,
        client: &clickhouse::Client,
    ) -> impl Future<Output = Result<Vec<(&'static str, u64)>, clickhouse::error::Error>> + Send;
    /// After a successful insert.
    fn written(&mut self);
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
    for (key, value) in batch.dead() {
        sink.topics.append("dead_letters", key, Some(value)).await.map_err(|e| format!("dead letters: {e}"))?;
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
pub async fn insert_all<R: clickhouse::RowOwned + clickhouse::RowWrite>(
    client: &clickhouse::Client,
    table: &'static str,
    rows: &[R],
) -> Result<(&'static str, u64), clickhouse::error::Error> {
    if !rows.is_empty() {
        let mut insert = client.insert::<R>(table).await?;
        for row in rows {
            insert.write(row).await?;
        }
        insert.end().await?;
    }
    Ok((table, rows.len() as u64))
}

/// Where to resume: the start of the block holding each saved position.
async fn resume_from(client: &clickhouse::Client, consumer: &str) -> Result<Start, clickhouse::error::Error> {
    let saved: Vec<Offset> = client
        .query("SELECT consumer, partition, next_offset, updated_at FROM consumer_offsets FINAL WHERE consumer = ?")
        .bind(consumer)
        .fetch_all()
        .await?;
    if saved.is_empty() {
        return Ok(Start::Beginning);
    }
    Ok(Start::At(saved.iter().map(|o| (o.partition, block_start(i64::try_from(o.next_offset).unwrap_or(0)))).collect()))
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
    let start = loop {
        match with_deadline(resume_from(&client, name))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
        {
            Ok(start) => break start,
            Err(e) => {
                tracing::warn!(consumer = name, error = %e, "cannot read the consumer's position from ClickHouse; retrying");
                if sleep_or_stop(&mut stop, Duration::from_secs(1)).await {
                    return Ok(());
                }
            }
        }
    };
    tracing::info!(consumer = name, ?start, block = BLOCK, "consumer starting");
    let mut follower =
        topics.follow(B::TOPIC, start).map_err(|e| format!("cannot follow {}: {e}", topics.name(B::TOPIC)))?;
    let mut batch = B::default();
    let mut since = Instant::now();
    let mut backoff = Duration::from_millis(200);
    loop {
        let stopping = *stop.borrow();
        if !stopping {
            match follower.next_batch(BATCH_ROWS, Duration::from_millis(200)).await {
                Ok(records) => records.iter().for_each(|r| batch.add(r)),
                Err(e) => {
                    tracing::warn!(consumer = name, error = %e, "reading the topic failed; retrying");
                    let _ = sleep_or_stop(&mut stop, Duration::from_secs(1)).await;
                }
            }
        }
        let due = batch.len() >= BATCH_ROWS || since.elapsed() >= BATCH_TIME || stopping;
        if due && !batch.is_empty() {
            match with_deadline(write(&sink, &mut batch, &follower.position())).await.and_then(|r| r) {
                Ok(()) => {
                    since = Instant::now();
                    backoff = Duration::from_millis(200);
                }
                Err(e) => {
                    metrics.retries.with_label_values(&[name]).inc();
                    tracing::warn!(consumer = name, error = %e, records = batch.len(), ?backoff, "writing to ClickHouse failed; retrying");
                    if stopping {
                        return Err(format!(
                            "the {name} consumer stopped with {} records not written: {e}",
                            batch.len()
                        ));
                    }
                    // Keep the batch; do not read further until it is written. A stop meanwhile
                    // makes the outer loop try once more, then give up.
                    loop {
                        if sleep_or_stop(&mut stop, backoff).await {
                            break;
                        }
                        match with_deadline(write(&sink, &mut batch, &follower.position())).await.and_then(|r| r) {
                            Ok(()) => {
                                tracing::info!(consumer = name, "ClickHouse is back: the consumer goes on");
                                backoff = Duration::from_millis(200);
                                break;
                            }
                            Err(e) => {
                                metrics.retries.with_label_values(&[name]).inc();
                                tracing::warn!(consumer = name, error = %e, records = batch.len(), ?backoff, "writing to ClickHouse failed; retrying")
                            }
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                    since = Instant::now();
                }
            }
        } else if due {
            since = Instant::now();
        }
        if stopping {
            return Ok(());
        }
    }
}
