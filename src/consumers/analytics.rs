//! The analytics consumer: per deployment per minute, what its calls did, into ClickHouse
//! `deployment_minute` (schemas/clickhouse/004_deployment_minute.sql): requests, successes,
//! failures by error type, every call's latency and time to first token (so quantiles over
//! any span are exact: `quantilesArray(0.5, 0.9, 0.99)(latency_ms)`), tokens of every kind,
//! cost, and the cooldowns the deployment entered.
//!
//! It is two followers under [`super::writer`]'s loop, each with its own position:
//! - `Minutes<Calls>` (consumer name `analytics`): response events of `<prefix>.events`;
//! - `Minutes<Cooldowns>` (`analytics_deployments`): `cooldown_entered` events of
//!   `<prefix>.deployments`.
//!
//! Exactly once in effect as for spend: the rows are per block of
//! [`crate::clickhouse::rows::BLOCK`] offsets of one partition of one source topic, always
//! rewritten whole, and ReplacingMergeTree(`covered_to`) keeps the row covering the most.
//! Query with FINAL. A call is counted in the minute it started; a cooldown in the minute it
//! began.

use std::collections::BTreeMap;

use serde::Serialize;

use super::spend::{read, Read};
use super::writer::{insert_all, Dead};
use crate::clickhouse::rows::{Block, Blocks, SpendLogRow};
use crate::events::topics::Record;
use crate::events::types::kind_hint;
use crate::events::Event;

/// The table.
const TABLE: &str = "deployment_minute";

/// `deployment_minute`, column for column.
#[derive(Debug, Clone, PartialEq, Serialize, clickhouse::Row)]
pub struct MinuteRow {
    /// DateTime: seconds since the epoch, at the start of the minute.
    pub minute: u32,
    pub deployment: String,
    pub model_group: String,
    pub provider: String,
    pub api_base: String,
    pub requests: u64,
    pub successes: u64,
    pub failures: u64,
    /// Failures by error type (`ARRAY JOIN error_types AS type, error_counts AS n`).
    pub error_types: Vec<String>,
    pub error_counts: Vec<u64>,
    /// Each call's duration, ms.
    pub latency_ms: Vec<f32>,
    /// Each call's time to first token, ms (calls that had one).
    pub ttft_ms: Vec<f32>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub reasoning_tokens: u64,
    pub spend_nanos: i64,
    pub cooldowns: u64,
    /// The topic the row was built from: `events` or `deployments`.
    pub source: &'static str,
    pub source_partition: i32,
    pub source_block: i64,
    pub covered_to: u64,
}

/// What a deployment did in one minute, within one block.
#[derive(Debug, Clone, Default)]
pub struct Minute {
    model_group: String,
    provider: String,
    api_base: String,
    requests: u64,
    successes: u64,
    errors: BTreeMap<String, u64>,
    latency_ms: Vec<f32>,
    ttft_ms: Vec<f32>,
    tokens: crate::openai::TokenUsage,
    spend_nanos: i64,
    cooldowns: u64,
}

impl Minute {
    fn call(&mut self, row: &SpendLogRow) {
        self.requests += 1;
        if row.status == "success" {
            self.successes += 1;
        } else {
            let kind = if row.error_type.is_empty() { "unknown" } else { row.error_type.as_str() };
            *self.errors.entry(kind.to_string()).or_default() += 1;
        }
        self.latency_ms.push(row.duration_ms as f32);
        self.ttft_ms.extend(row.ttft_ms.map(|t| t as f32));
        self.tokens.add(&row.tokens());
        self.spend_nanos = self.spend_nanos.saturating_add(row.spend_nanos);
    }
}

/// The minutes of one block.
pub type MinuteRollup = Block<BTreeMap<(u32, String), Minute>>;

impl MinuteRollup {
    /// The minute of `deployment` starting at `at` (seconds), recording the event at `offset`.
    fn minute(&mut self, offset: i64, at: u32, deployment: &str, describe: impl FnOnce(&mut Minute)) -> &mut Minute {
        self.cover(offset);
        let key = (at - at % 60, deployment.to_string());
        self.sums.entry(key).or_insert_with(|| {
            let mut m = Minute::default();
            describe(&mut m);
            m
        })
    }

    /// A call (its spend log row) read at `offset`; calls that reached no deployment are left out.
    pub fn call(&mut self, offset: i64, row: &SpendLogRow) {
        self.cover(offset);
        if row.deployment.is_empty() {
            return;
        }
        self.minute(offset, row.start_time, &row.deployment, |m| {
            (m.model_group, m.provider, m.api_base) =
                (row.model_group.clone(), row.provider.clone(), row.api_base.clone());
        })
        .call(row);
    }

    /// A deployment's health change read at `offset` (only cooldowns are counted).
    pub fn change(&mut self, offset: i64, e: &crate::events::DeploymentEvent) {
        self.cover(offset);
        if e.change != "cooldown_entered" {
            return;
        }
        let at = u32::try_from(e.envelope.timestamp.unix_millis() / 1000).unwrap_or(0);
        self.minute(offset, at, &e.deployment_id, |m| {
            (m.model_group, m.provider, m.api_base) = (e.model_group.clone(), e.provider.clone(), e.api_base.clone());
        })
        .cooldowns += 1;
    }

    /// The block's rows as they stand.
    pub fn rows(&self, source: &'static str) -> Vec<MinuteRow> {
        let covered_to = self.version();
        self.sums
            .iter()
            .map(|((minute, deployment), m)| MinuteRow {
                minute: *minute,
                deployment: deployment.clone(),
                model_group: m.model_group.clone(),
                provider: m.provider.clone(),
                api_base: m.api_base.clone(),
                requests: m.requests,
                successes: m.successes,
                failures: m.requests - m.successes,
                error_types: m.errors.keys().cloned().collect(),
                error_counts: m.errors.values().copied().collect(),
                latency_ms: m.latency_ms.clone(),
                ttft_ms: m.ttft_ms.clone(),
                prompt_tokens: m.tokens.prompt_tokens,
                completion_tokens: m.tokens.completion_tokens,
                total_tokens: m.tokens.total_tokens,
                cache_read_input_tokens: m.tokens.cache_read_input_tokens,
                cache_creation_input_tokens: m.tokens.cache_creation_input_tokens,
                reasoning_tokens: m.tokens.reasoning_tokens,
                spend_nanos: m.spend_nanos,
                cooldowns: m.cooldowns,
                source,
                source_partition: self.partition,
                source_block: self.block,
                covered_to,
            })
            .collect()
    }
}

/// What either follower holds between inserts.
#[derive(Default)]
pub struct Rollups {
    blocks: Blocks<BTreeMap<(u32, String), Minute>>,
    dead: Vec<Dead>,
    newest_ms: u64,
    /// Records taken since the last insert, per partition.
    taken: BTreeMap<i32, usize>,
}

/// Which topic a [`Minutes`] follows, and what it takes from each record.
pub trait Source: Send + 'static {
    const NAME: &'static str;
    const TOPIC: &'static str;
    fn add(rollups: &mut Rollups, record: &Record);
}

/// The calls of `<prefix>.events`.
pub enum Calls {}

/// The cooldowns of `<prefix>.deployments`.
pub enum Cooldowns {}

impl Source for Calls {
    const NAME: &'static str = "analytics";
    const TOPIC: &'static str = "events";

    fn add(r: &mut Rollups, record: &Record) {
        let block = r.blocks.at(record.partition, record.offset);
        match read(record) {
            Read::Row(row) => {
                r.newest_ms = r.newest_ms.max(row.start_time_ms.saturating_add(row.duration_ms as u64));
                block.call(record.offset, &row);
            }
            Read::Other => {}
            Read::Bad => r.dead.push(Dead::of(record)),
        }
    }
}

impl Source for Cooldowns {
    const NAME: &'static str = "analytics_deployments";
    const TOPIC: &'static str = "deployments";

    fn add(r: &mut Rollups, record: &Record) {
        let block = r.blocks.at(record.partition, record.offset);
        let Some(value) = record.value.as_deref() else { return };
        if kind_hint(value).is_some_and(|k| k != "deployment") {
            return;
        }
        match Event::from_json(value) {
            Ok(Event::Deployment(e)) => {
                r.newest_ms = r.newest_ms.max(e.envelope.timestamp.unix_millis());
                block.change(record.offset, &e);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(partition = record.partition, offset = record.offset, error = %e, "a deployment event the analytics consumer cannot read; skipped");
                r.dead.push(Dead::of(record));
            }
        }
    }
}

/// The batch of the follower of `S`.
pub struct Minutes<S> {
    rollups: Rollups,
    source: std::marker::PhantomData<fn() -> S>,
}

impl<S> Default for Minutes<S> {
    fn default() -> Self {
        Self { rollups: Rollups::default(), source: std::marker::PhantomData }
    }
}

impl<S: Source> super::writer::Batch for Minutes<S> {
    const NAME: &'static str = S::NAME;
    const TOPIC: &'static str = S::TOPIC;

    fn add(&mut self, record: &Record) {
        *self.rollups.taken.entry(record.partition).or_default() += 1;
        S::add(&mut self.rollups, record);
    }

    fn len(&self) -> usize {
        self.rollups.taken.values().sum()
    }

    fn is_empty(&self) -> bool {
        self.rollups.taken.is_empty()
    }

    fn dead(&self) -> &[Dead] {
        &self.rollups.dead
    }

    fn newest_ms(&self) -> u64 {
        self.rollups.newest_ms
    }

    async fn insert(&self, client: &clickhouse::Client) -> Result<Vec<(&'static str, u64)>, clickhouse::error::Error> {
        let rows: Vec<MinuteRow> = self.rollups.blocks.iter().flat_map(|b| b.rows(S::TOPIC)).collect();
        Ok(vec![insert_all(client, TABLE, rows.iter()).await?])
    }

    fn written(&mut self) {
        let r = &mut self.rollups;
        r.blocks.written();
        r.dead.clear();
        r.taken.clear();
    }

    fn forget(&mut self, partitions: &std::collections::BTreeSet<i32>) {
        let r = &mut self.rollups;
        r.blocks.forget(partitions);
        r.dead.retain(|d| !partitions.contains(&d.partition));
        r.taken.retain(|p, _| !partitions.contains(p));
    }
}

/// Runs both followers until `stop` turns true.
pub async fn run(
    topics: crate::events::topics::Topics,
    clickhouse: crate::config::ClickHouseConfig,
    metrics: super::ConsumerMetrics,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    let calls = super::writer::run::<Minutes<Calls>>(topics.clone(), clickhouse.clone(), metrics.clone(), stop.clone());
    let cooldowns = super::writer::run::<Minutes<Cooldowns>>(topics, clickhouse, metrics, stop);
    let (calls, cooldowns) = tokio::join!(calls, cooldowns);
    calls.and(cooldowns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{DeploymentEvent, Envelope};

    fn call(deployment: &str, start: &str, ms: f64, status: &'static str, error: Option<&str>) -> SpendLogRow {
        let mut e = crate::clickhouse::rows::tests::response("r", 0.001, &[]);
        e.deployment_id = Some(deployment.into());
        e.start_time = start.into();
        e.duration_ms = ms;
        e.status = status;
        e.error_type = error.map(String::from);
        SpendLogRow::of(&e)
    }

    fn cooldown(deployment: &str, change: &'static str) -> DeploymentEvent {
        DeploymentEvent {
            envelope: Envelope::new("deployment", None, "gw"),
            deployment_id: deployment.into(),
            model_group: "gpt-4o".into(),
            provider: "openai".into(),
            api_base: "http://upstream".into(),
            change,
            reason: None,
            cooldown_until: None,
        }
    }

    #[test]
    fn calls_roll_up_per_deployment_and_minute_with_every_latency() {
        let mut block = MinuteRollup::new(0, 0);
        block.call(0, &call("d1", "2026-11-28T10:00:05Z", 100.0, "success", None));
        block.call(1, &call("d1", "2026-11-28T10:00:59Z", 300.0, "failure", Some("RateLimitError")));
        block.call(2, &call("d1", "2026-11-28T10:01:00Z", 50.0, "failure", Some("RateLimitError")));
        block.call(3, &call("d2", "2026-11-28T10:00:10Z", 70.0, "success", None));
        block.call(4, &call("", "2026-11-28T10:00:10Z", 70.0, "failure", Some("NotFoundError")));
        let rows = block.rows("events");
        let at = |d: &str, minute: &str| {
            let minute = u32::try_from(minute.parse::<jiff::Timestamp>().unwrap().as_second()).unwrap();
            rows.iter().find(|r| r.deployment == d && r.minute == minute).unwrap()
        };
        let first = at("d1", "2026-11-28T10:00:00Z");
        assert_eq!((first.requests, first.successes, first.failures), (2, 1, 1));
        assert_eq!((first.error_types.clone(), first.error_counts.clone()), (vec!["RateLimitError".into()], vec![1]));
        assert_eq!(first.latency_ms, [100.0, 300.0]);
        assert_eq!(first.ttft_ms.len(), 2);
        assert_eq!(first.spend_nanos, 2_000_000);
        assert_eq!(at("d1", "2026-11-28T10:01:00Z").requests, 1);
        assert_eq!(at("d2", "2026-11-28T10:00:00Z").requests, 1);
        assert_eq!(rows.len(), 3, "a call that reached no deployment is no deployment's");
        assert!(rows.iter().all(|r| r.covered_to == 5 && r.source == "events"));
    }

    #[test]
    fn cooldowns_count_in_the_minute_they_began() {
        let mut block = MinuteRollup::new(0, 1);
        block.change(4096, &cooldown("d1", "cooldown_entered"));
        block.change(4097, &cooldown("d1", "cooldown_left"));
        block.change(4098, &cooldown("d1", "cooldown_entered"));
        let rows = block.rows("deployments");
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].cooldowns, rows[0].requests, rows[0].covered_to), (2, 0, 4099));
        assert_eq!((rows[0].source_block, rows[0].minute % 60), (1, 0));
    }

    #[test]
    fn rewriting_a_block_from_its_start_gives_the_same_rows_covering_more() {
        let calls: Vec<SpendLogRow> =
            (0..10).map(|n| call("d1", "2026-11-28T10:00:00Z", f64::from(n), "success", None)).collect();
        let mut partial = MinuteRollup::new(0, 0);
        let mut whole = MinuteRollup::new(0, 0);
        for (offset, row) in calls.iter().enumerate() {
            if offset < 6 {
                partial.call(offset as i64, row);
            }
            whole.call(offset as i64, row);
        }
        let (p, w) = (&partial.rows("events")[0], &whole.rows("events")[0]);
        assert_eq!((p.requests, w.requests), (6, 10));
        assert!(w.covered_to > p.covered_to, "ReplacingMergeTree keeps the whole block's row");
        assert_eq!(w.latency_ms, (0..10).map(|n| n as f32).collect::<Vec<_>>());
    }
}
