//! `switchyard migrate`: applies `schemas/clickhouse/NNN_*.sql` in order and records each in
//! `schema_migrations`; a migration already recorded is skipped, so running it again changes
//! nothing. The files are compiled into the binary, so it needs no checkout.

use serde::Deserialize;

use super::{client, server};
use crate::config::ClickHouseConfig;

/// One schema file.
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "spend_logs", sql: include_str!("../../schemas/clickhouse/001_spend_logs.sql") },
    Migration { version: 2, name: "daily_spend", sql: include_str!("../../schemas/clickhouse/002_daily_spend.sql") },
    Migration {
        version: 3,
        name: "consumer_offsets",
        sql: include_str!("../../schemas/clickhouse/003_consumer_offsets.sql"),
    },
    Migration {
        version: 4,
        name: "deployment_minute",
        sql: include_str!("../../schemas/clickhouse/004_deployment_minute.sql"),
    },
    Migration { version: 5, name: "alerts", sql: include_str!("../../schemas/clickhouse/005_alerts.sql") },
];

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("migration {version} ({name}) failed: {source}")]
    Statement { version: u32, name: &'static str, source: clickhouse::error::Error },
    #[error("cannot prepare the database: {0}")]
    Database(#[from] clickhouse::error::Error),
}

/// The statements of a schema file: `--` comment lines dropped, split at `;` ending a line.
pub fn statements(sql: &str) -> Vec<String> {
    let text: String = sql.lines().filter(|l| !l.trim_start().starts_with("--")).map(|l| format!("{l}\n")).collect();
    text.split(";\n").map(str::trim).filter(|s| !s.is_empty()).map(|s| s.trim_end_matches(';').to_string()).collect()
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct Applied {
    version: u32,
}

/// Applies the migrations not yet recorded; returns those it applied.
pub async fn migrate(config: &ClickHouseConfig) -> Result<Vec<&'static Migration>, MigrateError> {
    server(config).query(&format!("CREATE DATABASE IF NOT EXISTS {}", config.database)).execute().await?;
    let db = client(config);
    db.query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, applied_at DateTime) \
         ENGINE = ReplacingMergeTree ORDER BY version",
    )
    .execute()
    .await?;
    let applied: Vec<u32> = db
        .query("SELECT version FROM schema_migrations FINAL")
        .fetch_all::<Applied>()
        .await?
        .into_iter()
        .map(|a| a.version)
        .collect();
    let mut done = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        for statement in statements(m.sql) {
            db.query(&statement).execute().await.map_err(|source| MigrateError::Statement {
                version: m.version,
                name: m.name,
                source,
            })?;
        }
        db.query(&format!(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ({}, '{}', now())",
            m.version, m.name
        ))
        .execute()
        .await?;
        tracing::info!(version = m.version, name = m.name, "migration applied");
        done.push(m);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_files_split_into_statements_without_comments() {
        for m in MIGRATIONS {
            let statements = statements(m.sql);
            assert!(!statements.is_empty(), "{}", m.name);
            for s in &statements {
                assert!(s.starts_with("CREATE TABLE IF NOT EXISTS"), "{}: {s}", m.name);
                assert!(!s.contains('?'), "a `?` is a bind placeholder to the client: {}", m.name);
                for banned in ["LowCardinality", "Map(", "DateTime64", " TTL ", "CODEC"] {
                    assert!(!s.contains(banned), "{} uses {banned}, which ClickHouse 18.16 lacks", m.name);
                }
            }
        }
        assert_eq!(
            statements("-- a\nCREATE TABLE a (x UInt8) ENGINE = Log;\nCREATE TABLE b (y UInt8) ENGINE = Log;\n").len(),
            2
        );
    }

    #[test]
    fn versions_are_in_order_and_match_the_file_names() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1);
        }
    }
}
