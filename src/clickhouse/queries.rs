//! The spend endpoints' queries. Rollups are read `FINAL` (a rewritten block must not count
//! twice before ClickHouse has merged it); money stays integer nano-dollars until the answer.

use serde::Deserialize;

use super::rows::{SpendLogRow, Totals};

/// A day of one entity's spend, at (key, model group, provider) grain.
#[derive(Debug, Clone, Deserialize, clickhouse::Row)]
pub struct DayRow {
    /// `YYYY-MM-DD` (selected as `day`: an alias named `date` would shadow the column in
    /// WHERE on ClickHouse 18.16).
    pub date: String,
    pub entity: String,
    pub api_key: String,
    pub model_group: String,
    pub provider: String,
    /// The sums, in the order the query selects them.
    pub totals: Totals,
}

/// What to read from `daily_spend`.
#[derive(Debug, Clone, Default)]
pub struct DayFilter {
    /// `key`, `team`, `user`, `end_user`, `model`, `tag` or `provider`. `model` rows count every
    /// call exactly once, so they are the grain for totals.
    pub kind: &'static str,
    /// Inclusive `YYYY-MM-DD` bounds.
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub entity: Option<String>,
    /// Only these keys (an internal user's own), when set.
    pub api_keys: Option<Vec<String>>,
    pub model_group: Option<String>,
}

pub async fn days(client: &clickhouse::Client, f: &DayFilter) -> Result<Vec<DayRow>, clickhouse::error::Error> {
    let mut sql = String::from(
        "SELECT toString(date) AS day, entity, api_key, model_group, provider, \
         sum(spend_nanos) AS spend_nanos, sum(prompt_tokens) AS prompt_tokens, \
         sum(completion_tokens) AS completion_tokens, sum(total_tokens) AS total_tokens, \
         sum(cache_read_input_tokens) AS cache_read_input_tokens, \
         sum(cache_creation_input_tokens) AS cache_creation_input_tokens, sum(requests) AS requests, \
         sum(successes) AS successes, sum(failures) AS failures \
         FROM daily_spend FINAL WHERE entity_kind = ?",
    );
    if f.start_date.is_some() {
        sql.push_str(" AND date >= toDate(?)");
    }
    if f.end_date.is_some() {
        sql.push_str(" AND date <= toDate(?)");
    }
    if f.entity.is_some() {
        sql.push_str(" AND entity = ?");
    }
    if f.model_group.is_some() {
        sql.push_str(" AND model_group = ?");
    }
    if f.api_keys.is_some() {
        sql.push_str(" AND has(?, api_key)");
    }
    sql.push_str(" GROUP BY date, entity, api_key, model_group, provider ORDER BY date");
    let mut q = client.query(&sql).bind(f.kind);
    for value in [&f.start_date, &f.end_date, &f.entity, &f.model_group].into_iter().flatten() {
        q = q.bind(value.as_str());
    }
    if let Some(keys) = &f.api_keys {
        q = q.bind(keys.as_slice());
    }
    q.fetch_all().await
}

/// What to read from `spend_logs`.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub api_key: Option<String>,
    pub user: Option<String>,
    pub request_id: Option<String>,
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub api_keys: Option<Vec<String>>,
    pub limit: u64,
}

pub async fn logs(client: &clickhouse::Client, f: &LogFilter) -> Result<Vec<SpendLogRow>, clickhouse::error::Error> {
    let mut sql = String::from(
        "SELECT event_id, request_id, call_type, api_key, key_alias, team_id, user, end_user, model, \
         model_group, deployment, provider, api_base, status, http_status, error_type, prompt_tokens, \
         completion_tokens, total_tokens, cache_read_input_tokens, cache_creation_input_tokens, \
         reasoning_tokens, spend_nanos, start_time, end_time, start_time_ms, duration_ms, ttft_ms, \
         cache_hit, tags, metadata, gateway_id FROM spend_logs FINAL WHERE 1",
    );
    let mut binds: Vec<&str> = Vec::new();
    for (cond, value) in [
        (" AND api_key = ?", &f.api_key),
        (" AND user = ?", &f.user),
        (" AND request_id = ?", &f.request_id),
        (" AND toDate(start_time) >= toDate(?)", &f.start_date),
        (" AND toDate(start_time) <= toDate(?)", &f.end_date),
    ] {
        if let Some(v) = value {
            sql.push_str(cond);
            binds.push(v);
        }
    }
    if f.api_keys.is_some() {
        sql.push_str(" AND has(?, api_key)");
    }
    sql.push_str(&format!(" ORDER BY start_time DESC LIMIT {}", f.limit.max(1)));
    let mut q = client.query(&sql);
    for b in binds {
        q = q.bind(b);
    }
    if let Some(keys) = &f.api_keys {
        q = q.bind(keys.as_slice());
    }
    q.fetch_all().await
}
