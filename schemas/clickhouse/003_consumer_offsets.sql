-- Where each consumer has got in <prefix>.events, per partition: written after the rows of
-- the events before `next_offset` are in, read at start (the consumer resumes from the start of
-- the rollup block that holds it). ReplacingMergeTree keeps the furthest position.
CREATE TABLE IF NOT EXISTS consumer_offsets
(
    consumer String,
    partition Int32,
    next_offset UInt64,
    updated_at DateTime
)
ENGINE = ReplacingMergeTree(next_offset)
ORDER BY (consumer, partition)
