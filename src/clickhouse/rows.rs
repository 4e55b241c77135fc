//! The rows the spend consumer writes: one `spend_logs` row per response event, and the
//! `daily_spend` rollups of a block of the log.
//!
//! A block is [`BLOCK`] consecutive offsets of one partition. Its rollup rows are a pure
//! function of the events in it, and the consumer always writes a block's rows from the block's
//! first offset (after a restart it re-reads from there), with `covered_to` the next offset
//! they include. So rewriting a block can only replace its rows with rows that cover more:
//! a duplicate or a replay cannot count twice, in the raw table or in the rollups.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Serialize;

use crate::budget::ledger::nanos;
use crate::events::ResponseEvent;

/// Offsets per rollup block.
pub const BLOCK: i64 = 4096;

/// The block an offset is in.
pub fn block_of(offset: i64) -> i64 {
    offset.div_euclid(BLOCK)
}

/// The first offset of the block `offset` is in: where a consumer resumes.
pub fn block_start(offset: i64) -> i64 {
    block_of(offset) * BLOCK
}

/// The sums of one block of one partition, built from the block's first offset.
#[derive(Debug, Clone)]
pub struct Block<T> {
    pub partition: i32,
    pub block: i64,
    /// The next offset the sums include: a row's version (`covered_to`).
    pub covered_to: i64,
    pub sums: T,
}

impl<T: Default> Block<T> {
    pub fn new(partition: i32, block: i64) -> Self {
        Self { partition, block, covered_to: block * BLOCK, sums: T::default() }
    }
}

impl<T> Block<T> {
    /// The event at `offset` is in the block's sums (whether it counted on any or not).
    pub fn cover(&mut self, offset: i64) {
        self.covered_to = self.covered_to.max(offset + 1);
    }

    /// `covered_to` as the column holds it.
    pub fn version(&self) -> u64 {
        u64::try_from(self.covered_to).unwrap_or(0)
    }
}

/// A consumer's blocks between two inserts: the open block of each partition, and the blocks
/// closed since the last insert (their final rows still to be written).
#[derive(Debug)]
pub struct Blocks<T> {
    open: BTreeMap<i32, Block<T>>,
    closed: Vec<Block<T>>,
}

impl<T> Default for Blocks<T> {
    fn default() -> Self {
        Self { open: BTreeMap::new(), closed: Vec::new() }
    }
}

impl<T: Default> Blocks<T> {
    /// The block holding `offset` of `partition`, which covers it from now on (the partition's
    /// earlier block, if open, is closed).
    pub fn at(&mut self, partition: i32, offset: i64) -> &mut Block<T> {
        let block = block_of(offset);
        let open = self.open.entry(partition).or_insert_with(|| Block::new(partition, block));
        if open.block != block {
            let done = std::mem::replace(open, Block::new(partition, block));
            self.closed.push(done);
        }
        open.cover(offset);
        open
    }

    /// Every block to write: the closed ones and the open ones, whole.
    pub fn iter(&self) -> impl Iterator<Item = &Block<T>> {
        self.closed.iter().chain(self.open.values())
    }

    /// The rows are in: closed blocks are done.
    pub fn written(&mut self) {
        self.closed.clear();
    }

    /// Drops the blocks of `partitions`.
    pub fn forget(&mut self, partitions: &std::collections::BTreeSet<i32>) {
        self.open.retain(|p, _| !partitions.contains(p));
        self.closed.retain(|b| !partitions.contains(&b.partition));
    }
}

/// An RFC 3339 time as (seconds, milliseconds) since the epoch; the epoch when unreadable.
pub fn instant(text: &str) -> (u32, u64) {
    let t: Timestamp = text.parse().unwrap_or(Timestamp::UNIX_EPOCH);
    let ms = u64::try_from(t.as_millisecond()).unwrap_or(0);
    (u32::try_from(t.as_second()).unwrap_or(0), ms)
}

/// `spend_logs`, column for column (schemas/clickhouse/001_spend_logs.sql): written by the
/// spend consumer, read back by `/spend/logs`.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, clickhouse::Row)]
pub struct SpendLogRow {
    pub event_id: String,
    pub request_id: String,
    pub call_type: String,
    pub api_key: String,
    pub key_alias: String,
    pub team_id: String,
    pub user: String,
    pub end_user: String,
    pub model: String,
    pub model_group: String,
    pub deployment: String,
    pub provider: String,
    pub api_base: String,
    pub status: String,
    pub http_status: u16,
    pub error_type: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub reasoning_tokens: u64,
    pub spend_nanos: i64,
    /// DateTime: seconds since the epoch.
    pub start_time: u32,
    pub end_time: u32,
    pub start_time_ms: u64,
    pub duration_ms: f64,
    pub ttft_ms: Option<f64>,
    pub cache_hit: u8,
    pub tags: Vec<String>,
    pub metadata: String,
    pub gateway_id: String,
}

impl SpendLogRow {
    /// The call's token counts.
    pub fn tokens(&self) -> crate::openai::TokenUsage {
        crate::openai::TokenUsage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            total_tokens: self.total_tokens,
            cache_read_input_tokens: self.cache_read_input_tokens,
            cache_creation_input_tokens: self.cache_creation_input_tokens,
            reasoning_tokens: self.reasoning_tokens,
        }
    }

    pub fn of(e: &ResponseEvent) -> Self {
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let (start_time, start_time_ms) = instant(&e.start_time);
        let (end_time, _) = instant(&e.end_time);
        let ttft_ms = e.first_token_time.as_deref().map(|t| instant(t).1.saturating_sub(start_time_ms) as f64);
        Self {
            event_id: e.envelope.event_id.as_str().to_string(),
            request_id: text(&e.envelope.request_id),
            call_type: e.call_type.to_string(),
            api_key: text(&e.caller.api_key_hash),
            key_alias: text(&e.caller.key_alias),
            team_id: text(&e.caller.team_id),
            user: text(&e.caller.user),
            end_user: text(&e.caller.end_user),
            model: e.requested_model.clone(),
            model_group: text(&e.model_group),
            deployment: text(&e.deployment_id),
            provider: text(&e.provider),
            api_base: text(&e.api_base),
            status: e.status.to_string(),
            http_status: e.http_status,
            error_type: text(&e.error_type),
            prompt_tokens: e.tokens.prompt_tokens,
            completion_tokens: e.tokens.completion_tokens,
            total_tokens: e.tokens.total_tokens,
            cache_read_input_tokens: e.tokens.cache_read_input_tokens,
            cache_creation_input_tokens: e.tokens.cache_creation_input_tokens,
            reasoning_tokens: e.tokens.reasoning_tokens,
            spend_nanos: nanos(e.cost),
            start_time,
            end_time,
            start_time_ms,
            duration_ms: e.duration_ms,
            ttft_ms,
            cache_hit: u8::from(e.cache_hit),
            tags: e.tags.clone(),
            metadata: e.metadata.as_ref().map(|m| m.to_string()).unwrap_or_default(),
            gateway_id: e.envelope.gateway_id.clone(),
        }
    }
}

/// `daily_spend`, column for column (schemas/clickhouse/002_daily_spend.sql).
#[derive(Debug, Clone, PartialEq, Serialize, clickhouse::Row)]
pub struct DailySpendRow {
    /// Date: days since the epoch.
    pub date: u16,
    pub entity_kind: &'static str,
    pub entity: String,
    pub api_key: String,
    pub model_group: String,
    pub provider: String,
    pub spend_nanos: i64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub requests: u64,
    pub successes: u64,
    pub failures: u64,
    pub source_partition: i32,
    pub source_block: i64,
    pub covered_to: u64,
}

/// What a rollup row sums (the RowBinary encoder takes no flattened structs, so
/// [`DailySpendRow`] repeats these fields).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Deserialize)]
pub struct Totals {
    pub spend_nanos: i64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub requests: u64,
    pub successes: u64,
    pub failures: u64,
}

impl Totals {
    pub fn add(&mut self, row: &SpendLogRow) {
        self.spend_nanos = self.spend_nanos.saturating_add(row.spend_nanos);
        self.prompt_tokens += row.prompt_tokens;
        self.completion_tokens += row.completion_tokens;
        self.total_tokens += row.total_tokens;
        self.cache_read_input_tokens += row.cache_read_input_tokens;
        self.cache_creation_input_tokens += row.cache_creation_input_tokens;
        self.requests += 1;
        if row.status == "success" {
            self.successes += 1;
        } else {
            self.failures += 1;
        }
    }
}

/// The rollup key of a row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    /// Days since the epoch.
    pub date: u16,
    pub entity_kind: &'static str,
    pub entity: String,
    pub api_key: String,
    pub model_group: String,
    pub provider: String,
}

/// The rollup keys a spend log row counts on: its key, team, user, end user, model group,
/// tags and provider (empty ones left out), at (day, key, model group, provider) grain.
pub fn rollup_keys(row: &SpendLogRow) -> Vec<Key> {
    let date = u16::try_from(row.start_time / 86_400).unwrap_or(u16::MAX);
    let model = if row.model_group.is_empty() { &row.model } else { &row.model_group };
    let mut entities: Vec<(&'static str, &str)> = vec![
        ("key", &row.api_key),
        ("team", &row.team_id),
        ("user", &row.user),
        ("end_user", &row.end_user),
        ("model", model),
        ("provider", &row.provider),
    ];
    entities.extend(row.tags.iter().map(|t| ("tag", t.as_str())));
    entities
        .into_iter()
        .filter(|(_, e)| !e.is_empty())
        .map(|(entity_kind, entity)| Key {
            date,
            entity_kind,
            entity: entity.to_string(),
            api_key: row.api_key.clone(),
            model_group: model.clone(),
            provider: row.provider.clone(),
        })
        .collect()
}

/// The `daily_spend` sums of one block.
pub type BlockRollup = Block<BTreeMap<Key, Totals>>;

impl BlockRollup {
    /// Counts the spend log row of the event at `offset` (in this block) on every entity it
    /// belongs to.
    pub fn add(&mut self, row: &SpendLogRow, offset: i64) {
        self.cover(offset);
        for key in rollup_keys(row) {
            self.sums.entry(key).or_default().add(row);
        }
    }

    /// The block's rows as they stand.
    pub fn rows(&self) -> Vec<DailySpendRow> {
        let covered_to = self.version();
        self.sums
            .iter()
            .map(|(k, t)| DailySpendRow {
                date: k.date,
                entity_kind: k.entity_kind,
                entity: k.entity.clone(),
                api_key: k.api_key.clone(),
                model_group: k.model_group.clone(),
                provider: k.provider.clone(),
                spend_nanos: t.spend_nanos,
                prompt_tokens: t.prompt_tokens,
                completion_tokens: t.completion_tokens,
                total_tokens: t.total_tokens,
                cache_read_input_tokens: t.cache_read_input_tokens,
                cache_creation_input_tokens: t.cache_creation_input_tokens,
                requests: t.requests,
                successes: t.successes,
                failures: t.failures,
                source_partition: self.partition,
                source_block: self.block,
                covered_to,
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::events::types::CallerFields;
    use crate::events::{Envelope, Event};

    pub fn response(id: &str, cost: f64, tags: &[&str]) -> ResponseEvent {
        ResponseEvent {
            envelope: Envelope::new("response", Some(id.into()), "gw"),
            call_type: "acompletion",
            requested_model: "alias".into(),
            model_group: Some("gpt-4o".into()),
            caller: CallerFields {
                api_key_hash: Some("h1".into()),
                team_id: Some("t1".into()),
                ..CallerFields::default()
            },
            tags: tags.iter().map(|t| t.to_string()).collect(),
            metadata: None,
            deployment_id: Some("d1".into()),
            provider: Some("openai".into()),
            upstream_model: None,
            api_base: None,
            status: "success",
            http_status: 200,
            error_type: None,
            error_message: None,
            attempts: 1,
            retries: 0,
            fallbacks: 0,
            stream: false,
            completed: true,
            start_time: "2026-11-28T10:00:00.250Z".into(),
            end_time: "2026-11-28T10:00:01.000Z".into(),
            first_token_time: Some("2026-11-28T10:00:00.400Z".into()),
            duration_ms: 750.0,
            overhead_ms: 1.0,
            tokens: crate::openai::TokenUsage::new(10, 5),
            cost,
            tokens_estimated: false,
            cache_hit: false,
            finish_reason: None,
            response: None,
        }
    }

    #[test]
    fn a_spend_row_holds_the_event_exactly() {
        let e = response("r1", 0.000_123_456_789, &["batch"]);
        let row = SpendLogRow::of(&e);
        assert_eq!(row.spend_nanos, 123_457);
        assert_eq!((row.start_time_ms % 1000, row.ttft_ms), (250, Some(150.0)));
        assert_eq!((row.api_key.as_str(), row.team_id.as_str(), row.user.as_str()), ("h1", "t1", ""));
        assert_eq!(row.tags, vec!["batch".to_string()]);
        // Round trip through the log's JSON changes nothing.
        let json = Event::Response(Box::new(e.clone())).to_json();
        let Event::Response(back) = Event::from_json(&json).unwrap() else { panic!() };
        assert_eq!(SpendLogRow::of(&back), row);
    }

    #[test]
    fn a_block_rolls_up_per_entity_and_rewriting_it_covers_more() {
        let mut partial = BlockRollup::new(0, 0);
        partial.add(&SpendLogRow::of(&response("a", 0.5, &["x"])), 0);
        let mut whole = partial.clone();
        whole.add(&SpendLogRow::of(&response("b", 0.25, &[])), 1);
        let find = |r: &BlockRollup, kind: &str| r.rows().into_iter().find(|row| row.entity_kind == kind).unwrap();
        assert_eq!(find(&whole, "key").spend_nanos, 750_000_000);
        assert_eq!(find(&whole, "key").requests, 2);
        assert_eq!(find(&whole, "tag").requests, 1);
        assert_eq!(find(&whole, "model").entity, "gpt-4o");
        // The same rows with a larger covered_to: ReplacingMergeTree keeps the whole block.
        assert!(find(&whole, "key").covered_to > find(&partial, "key").covered_to);
        let kinds: Vec<&str> = whole.rows().iter().map(|r| r.entity_kind).collect();
        assert!(!kinds.contains(&"user") && !kinds.contains(&"end_user"), "empty entities are not rows");
    }

    #[test]
    fn blocks_are_fixed_ranges_of_offsets() {
        assert_eq!((block_of(0), block_of(4095), block_of(4096)), (0, 0, 1));
        assert_eq!(block_start(5000), 4096);
    }
}
