-- Daily rollups per key, team, user, end user, model, tag and provider: the shape behind
-- LiteLLM's daily-activity endpoints. One row per (day, entity, key, model group, provider)
-- per block of 4096 offsets of one partition of <prefix>.events. A consumer always rewrites a
-- block whole (after a restart it re-reads from the block's first offset), and `covered_to`
-- (the next offset the row includes) only grows, so ReplacingMergeTree keeps the row covering
-- the most: a duplicate or replayed event can never count twice. Query with FINAL.
CREATE TABLE IF NOT EXISTS daily_spend
(
    date Date,
    entity_kind String,
    entity String,
    api_key String,
    model_group String,
    provider String,
    spend_nanos Int64,
    prompt_tokens UInt64,
    completion_tokens UInt64,
    total_tokens UInt64,
    cache_read_input_tokens UInt64,
    cache_creation_input_tokens UInt64,
    requests UInt64,
    successes UInt64,
    failures UInt64,
    source_partition Int32,
    source_block Int64,
    covered_to UInt64
)
ENGINE = ReplacingMergeTree(covered_to)
PARTITION BY toYYYYMM(date)
ORDER BY (date, entity_kind, entity, api_key, model_group, provider, source_partition, source_block)
