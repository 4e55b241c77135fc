-- Every alert raised (<prefix>.alerts: the alerts consumer's own and the gateways' budget
-- alerts), with what became of it: `outcome` is delivered, rejected (a destination refused it
-- for good), deduplicated (its dedup_key was delivered within the type's time to live),
-- disabled (its type is not in alert_types) or no_destination. A replayed alert has the same
-- alert_id and collapses (ReplacingMergeTree; the newest `written_at` wins): query with FINAL.
-- Runs on ClickHouse 18.16 and current releases (no LowCardinality, Map, DateTime64, TTL, CODEC).
CREATE TABLE IF NOT EXISTS alerts
(
    alert_id String,
    alert_type String,
    event String,
    level String,
    entity String,
    message String,
    dedup_key String,
    timestamp DateTime,
    timestamp_ms UInt64,
    details String,
    outcome String,
    destinations Array(String),
    written_at DateTime
)
ENGINE = ReplacingMergeTree(written_at)
PARTITION BY toYYYYMM(timestamp)
ORDER BY (alert_type, alert_id)
