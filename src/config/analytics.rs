//! `analytics`: Switchyard's own section (unknown keys are errors), saying where the consumers
//! write spend and analytics, and where the spend endpoints read them. The environment
//! overrides the file (`SWITCHYARD_CLICKHOUSE_URL`, `_DATABASE`, `_USER`, `_PASSWORD`), so one
//! file serves every environment.

use secrecy::SecretString;

use super::raw::AnalyticsSection;
use super::Validator;

/// `analytics.clickhouse`, validated.
#[derive(Debug, Clone)]
pub struct ClickHouseConfig {
    /// The HTTP interface, `http://host:8123`.
    pub url: String,
    pub database: String,
    pub user: String,
    pub password: Option<SecretString>,
}

impl Validator<'_> {
    /// `analytics.clickhouse`, or `None` when neither the file nor the environment names a
    /// ClickHouse (the consumers then keep their rollups in memory).
    pub(super) fn analytics(&mut self, section: Option<AnalyticsSection>) -> Option<ClickHouseConfig> {
        let ch = section.and_then(|s| s.clickhouse).unwrap_or_default();
        let env = |name: &str| (self.env)(name).filter(|v| !v.is_empty());
        let url = env("SWITCHYARD_CLICKHOUSE_URL").or(ch.url)?;
        let database = env("SWITCHYARD_CLICKHOUSE_DATABASE").or(ch.database).unwrap_or_else(|| "switchyard".into());
        let user = env("SWITCHYARD_CLICKHOUSE_USER").or(ch.user).unwrap_or_else(|| "default".into());
        let password = env("SWITCHYARD_CLICKHOUSE_PASSWORD").or(ch.password).map(SecretString::from);
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            self.problem(
                "analytics.clickhouse.url",
                format!("expected http://host:port (the HTTP interface), got {url:?}"),
            );
        }
        if database.is_empty() || !database.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            self.problem("analytics.clickhouse.database", format!("expected letters, digits and _, got {database:?}"));
        }
        Some(ClickHouseConfig { url, database, user, password })
    }
}
