-- Per deployment per minute: requests, failures by error type, every call's latency and time
-- to first token (exact quantiles over any span: quantilesArray(0.5, 0.9, 0.99)(latency_ms)),
-- tokens, cost in nano-dollars, and cooldowns entered. Written by the analytics consumer from
-- <prefix>.events (source 'events') and <prefix>.deployments (source 'deployments'). One row per
-- (minute, deployment) per block of 4096 offsets of one partition of its source topic; a block is
-- always rewritten whole and `covered_to` only grows, so ReplacingMergeTree keeps the row covering
-- the most: a duplicate or replayed event never counts twice. Query with FINAL.
CREATE TABLE IF NOT EXISTS deployment_minute
(
    minute DateTime,
    deployment String,
    model_group String,
    provider String,
    api_base String,
    requests UInt64,
    successes UInt64,
    failures UInt64,
    error_types Array(String),
    error_counts Array(UInt64),
    latency_ms Array(Float32),
    ttft_ms Array(Float32),
    prompt_tokens UInt64,
    completion_tokens UInt64,
    total_tokens UInt64,
    cache_read_input_tokens UInt64,
    cache_creation_input_tokens UInt64,
    reasoning_tokens UInt64,
    spend_nanos Int64,
    cooldowns UInt64,
    source String,
    source_partition Int32,
    source_block Int64,
    covered_to UInt64
)
ENGINE = ReplacingMergeTree(covered_to)
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, deployment, source, source_partition, source_block)
