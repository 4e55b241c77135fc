//! The spend consumer: `<prefix>.events` → ClickHouse `spend_logs` (one row per response
//! event) and `daily_spend` (rollups per key, team, user, end user, model, tag and provider).
//!
//! Exactly once in effect, on at-least-once delivery:
//! - rows are inserted first, then the consumer's position (`consumer_offsets`), so a crash
//!   between the two re-reads events whose rows are already in;
//! - a `spend_logs` duplicate has the same sorting key and collapses (ReplacingMergeTree);
//! - rollups are per block of [`BLOCK`] offsets, always rebuilt from the block's first offset:
//!   at start the consumer resumes from the start of the block holding its saved position, and
//!   a rewritten block's rows replace the old ones (`covered_to` only grows). Query with FINAL.
//!
//! ClickHouse down: the batch is kept and retried with backoff, the position does not move, and
//! the follower is not read meanwhile (the log holds what comes).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::clickhouse::rows::{block_of, block_start, BlockRollup, DailySpendRow, SpendLogRow, BLOCK};
use crate::config::ClickHouseConfig;
use crate::events::topics::{Record, Start, Topics};
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
    rows: Vec<SpendLogRow>,
    /// The open block of each partition, rebuilt from its first offset.
    blocks: BTreeMap<i32, BlockRollup>,
    /// Blocks that closed since the last insert (their final rows are still to be written).
    closed: Vec<BlockRollup>,
    /// Blocks touched since the last insert.
    touched: bool,
    /// Events that could not be read (skipped, counted).
    pub unreadable: u64,
}

impl Batch {
    /// Adds one record of `<prefix>.events`.
    pub fn add(&mut self, record: &Record) {
        let Some(value) = &record.value else { return };
        if kind_hint(value).is_some_and(|k| k != "response") {
            return;
        }
        let event = match Event::from_json(value) {
            Ok(Event::Response(e)) => e,
            Ok(_) => return,
            Err(e) => {
                self.unreadable += 1;
                tracing::warn!(partition = record.partition, offset = record.offset, error = %e, "an event the spend consumer cannot read; skipped");
                return;
            }
        };
        let row = SpendLogRow::of(&event);
        let block = block_of(record.offset);
        let open = self.blocks.entry(record.partition).or_insert_with(|| BlockRollup::new(record.partition, block));
        if open.block != block {
            let done = std::mem::replace(open, BlockRollup::new(record.partition, block));
            self.closed.push(done);
        }
        open.add(&row, record.offset);
        self.rows.push(row);
        self.touched = true;
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        !self.touched
    }

    /// The rollup rows to write: closed blocks and the open ones, whole.
    fn rollups(&self) -> Vec<DailySpendRow> {
        self.closed.iter().chain(self.blocks.values()).flat_map(BlockRollup::rows).collect()
    }

    /// After a successful insert: the rows are in; closed blocks are done.
    fn written(&mut self) {
        self.rows.clear();
        self.closed.clear();
        self.touched = false;
    }
}

/// Inserts a batch, then the position. Nothing is cleared on failure.
async fn write(
    client: &clickhouse::Client,
    batch: &mut Batch,
    position: &[(i32, i64)],
) -> Result<(), clickhouse::error::Error> {
    if !batch.rows.is_empty() {
        let mut insert = client.insert::<SpendLogRow>("spend_logs").await?;
        for row in &batch.rows {
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
    for (partition, next) in position {
        let next_offset = u64::try_from(*next).unwrap_or(0);
        insert.write(&Offset { consumer: NAME.into(), partition: *partition, next_offset, updated_at: now }).await?;
    }
    insert.end().await?;
    batch.written();
    Ok(())
}

/// Where to resume: the start of the block holding each saved position.
async fn resume_from(client: &clickhouse::Client) -> Result<Start, clickhouse::error::Error> {
    let saved: Vec<Offset> = client
        .query("SELECT consumer, partition, next_offset, updated_at FROM consumer_offsets FINAL WHERE consumer = ?")
        .bind(NAME)
        .fetch_all()
        .await?;
    if saved.is_empty() {
        return Ok(Start::Beginning);
    }
    Ok(Start::At(saved.iter().map(|o| (o.partition, block_start(i64::try_from(o.next_offset).unwrap_or(0)))).collect()))
}

/// Runs until `stop` turns true (then writes what it holds). ClickHouse errors are retried.
pub async fn run(topics: Topics, clickhouse: ClickHouseConfig, mut stop: watch::Receiver<bool>) -> Result<(), String> {
    let client = crate::clickhouse::client(&clickhouse);
    let start = loop {
        match resume_from(&client).await {
            Ok(start) => break start,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the spend consumer's position from ClickHouse; retrying");
                if sleep_or_stop(&mut stop, Duration::from_secs(1)).await {
                    return Ok(());
                }
            }
        }
    };
    tracing::info!(?start, block = BLOCK, "spend consumer starting");
    let mut follower = topics.follow("events", start).map_err(|e| format!("cannot follow the events: {e}"))?;
    let mut batch = Batch::default();
    let mut since = Instant::now();
    let mut backoff = Duration::from_millis(200);
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
        }
        let due = batch.len() >= BATCH_ROWS || since.elapsed() >= BATCH_TIME || stopping;
        if due && !batch.is_empty() {
            match write(&client, &mut batch, &follower.position()).await {
                Ok(()) => {
                    since = Instant::now();
                    backoff = Duration::from_millis(200);
                }
                Err(e) => {
                    tracing::warn!(error = %e, rows = batch.len(), ?backoff, "writing to ClickHouse failed; retrying");
                    if stopping {
                        return Err(format!("stopped with {} spend rows not written: {e}", batch.len()));
                    }
                    // Keep the batch; do not read further until it is written. A stop meanwhile
                    // makes the outer loop try once more, then give up.
                    loop {
                        if sleep_or_stop(&mut stop, backoff).await {
                            break;
                        }
                        match write(&client, &mut batch, &follower.position()).await {
                            Ok(()) => break,
                            Err(e) => {
                                tracing::warn!(error = %e, rows = batch.len(), ?backoff, "writing to ClickHouse failed; retrying")
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
    pub fn spawn(topics: Topics, clickhouse: ClickHouseConfig) -> Self {
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(async move {
            if let Err(e) = run(topics, clickhouse, stopped).await {
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
