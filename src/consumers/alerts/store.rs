//! ClickHouse `alerts` (`schemas/clickhouse/005_alerts.sql`): one row per alert read from
//! `<prefix>.alerts`, with what became of it. ReplacingMergeTree by `alert_id`: a replay writes
//! the same row again, which collapses (query with FINAL).

use serde::Serialize;

use super::alert::Alert;

#[derive(Debug, Serialize, clickhouse::Row)]
pub struct AlertRow {
    pub alert_id: String,
    pub alert_type: String,
    /// The budget event or the outage's severity; empty for the other types.
    pub event: String,
    pub level: String,
    pub entity: String,
    pub message: String,
    pub dedup_key: String,
    /// DateTime: seconds since the epoch.
    pub timestamp: u32,
    pub timestamp_ms: u64,
    /// The alert's details, JSON.
    pub details: String,
    /// `delivered`, `rejected`, `deduplicated`, `disabled` or `no_destination`.
    pub outcome: String,
    /// The channels it was delivered to (`slack`, `webhook`; one per URL).
    pub destinations: Vec<String>,
    /// DateTime: the row's version (the newest wins).
    pub written_at: u32,
}

impl AlertRow {
    pub fn of(alert: &Alert, outcome: &str, destinations: Vec<String>, now_secs: u32) -> Self {
        let ms = u64::try_from(alert.at_ms()).unwrap_or(0);
        Self {
            alert_id: alert.alert_id.clone(),
            alert_type: alert.alert_type.as_str().into(),
            event: alert.event.clone().unwrap_or_default(),
            level: alert.level.as_str().into(),
            entity: alert.entity.clone(),
            message: alert.message.clone(),
            dedup_key: alert.dedup_key.clone().unwrap_or_default(),
            timestamp: u32::try_from(ms / 1000).unwrap_or(u32::MAX),
            timestamp_ms: ms,
            details: serde_json::to_string(&alert.details).unwrap_or_default(),
            outcome: outcome.into(),
            destinations,
            written_at: now_secs,
        }
    }
}

/// Inserts the rows (nothing for none).
pub async fn insert(client: &clickhouse::Client, rows: &[AlertRow]) -> Result<(), clickhouse::error::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = client.insert::<AlertRow>("alerts").await?;
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await
}
