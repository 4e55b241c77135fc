-- One row per call, from its response event: LiteLLM's SpendLogs columns plus event_id.
-- Money is integer nano-dollars (spend_nanos / 1e9 = USD). A replayed or duplicated event
-- writes an identical row with the same sorting key, which ReplacingMergeTree collapses: query
-- with FINAL (or GROUP BY request_id) for exact totals before background merges have run.
-- Runs on ClickHouse 18.16 and current releases (no LowCardinality, Map, DateTime64, TTL, CODEC).
CREATE TABLE IF NOT EXISTS spend_logs
(
    event_id String,
    request_id String,
    call_type String,
    api_key String,
    key_alias String,
    team_id String,
    user String,
    end_user String,
    model String,
    model_group String,
    deployment String,
    provider String,
    api_base String,
    status String,
    http_status UInt16,
    error_type String,
    prompt_tokens UInt64,
    completion_tokens UInt64,
    total_tokens UInt64,
    cache_read_input_tokens UInt64,
    cache_creation_input_tokens UInt64,
    reasoning_tokens UInt64,
    spend_nanos Int64,
    start_time DateTime,
    end_time DateTime,
    start_time_ms UInt64,
    duration_ms Float64,
    ttft_ms Nullable(Float64),
    cache_hit UInt8,
    tags Array(String),
    metadata String,
    gateway_id String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(start_time)
ORDER BY (start_time, request_id)
