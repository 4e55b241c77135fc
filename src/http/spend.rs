//! LiteLLM's spend endpoints: `GET /spend/logs`, `/global/spend`, `/global/spend/report`,
//! `/user/daily/activity`, `/team/daily/activity`, `/tag/daily/activity`. From ClickHouse when
//! `analytics.clickhouse` is set, else from the in-process rollups (embedded log). An internal
//! user's key sees only its own user's keys' rows.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::admin::Authed;
use super::Gateway;
use crate::auth::{key, Caller};
use crate::budget::ledger::usd;
use crate::clickhouse::queries::{self, DayFilter, DayRow, LogFilter};
use crate::consumers::spend::MemoryStore;
use crate::error::GatewayError;

/// Where spend is read.
pub enum SpendSource {
    ClickHouse(Box<clickhouse::Client>),
    Memory(std::sync::Arc<MemoryStore>),
}

impl SpendSource {
    async fn days(&self, f: &DayFilter) -> Result<Vec<DayRow>, GatewayError> {
        match self {
            Self::ClickHouse(c) => bounded(queries::days(c, f)).await,
            Self::Memory(m) => Ok(ready(m).await?.days(f)),
        }
    }

    async fn logs(&self, f: &LogFilter) -> Result<Vec<crate::clickhouse::rows::SpendLogRow>, GatewayError> {
        match self {
            Self::ClickHouse(c) => bounded(queries::logs(c, f)).await,
            Self::Memory(m) => Ok(ready(m).await?.logs(f)),
        }
    }
}

/// A ClickHouse query, answered within 30 s or refused with 503.
async fn bounded<T>(
    query: impl std::future::Future<Output = Result<T, clickhouse::error::Error>>,
) -> Result<T, GatewayError> {
    match tokio::time::timeout(std::time::Duration::from_secs(30), query).await {
        Ok(result) => result.map_err(unavailable),
        Err(_) => Err(GatewayError::Denied {
            status: 503,
            kind: "service_unavailable",
            message: "ClickHouse did not answer the spend query within 30s".into(),
        }),
    }
}

/// The in-memory store once it holds the history.
async fn ready(m: &MemoryStore) -> Result<&MemoryStore, GatewayError> {
    if m.ready().await {
        return Ok(m);
    }
    Err(GatewayError::Denied {
        status: 503,
        kind: "service_unavailable",
        message: "The spend history is still being read from the event log; try again shortly".into(),
    })
}

fn client(gw: &Gateway) -> Result<&SpendSource, GatewayError> {
    gw.spend.as_ref().ok_or_else(|| GatewayError::Denied {
        status: 501,
        kind: "not_implemented",
        message: "With Kafka the spend endpoints read ClickHouse: set analytics.clickhouse (or SWITCHYARD_CLICKHOUSE_URL), run `switchyard migrate` and `switchyard consume spend`".into(),
    })
}

fn unavailable(e: clickhouse::error::Error) -> GatewayError {
    tracing::warn!(error = %e, "a spend query failed");
    GatewayError::Denied {
        status: 503,
        kind: "service_unavailable",
        message: format!("ClickHouse did not answer the spend query: {e}"),
    }
}

/// The keys whose rows the caller may see: all (`None`) for admins, else its user's keys (or
/// its own key when it has no user).
fn visible_keys(gw: &Gateway, caller: &Caller) -> Option<Vec<String>> {
    if caller.can_view_all() {
        return None;
    }
    let own = caller.key.as_ref().map(|k| k.token.clone());
    match caller.user_id() {
        Some(user) => Some(
            gw.auth.table.keys_where(|k| k.user_id.as_deref() == Some(user)).iter().map(|k| k.token.clone()).collect(),
        ),
        None => Some(own.into_iter().collect()),
    }
}

/// A key given as `sk-…` or as its hash.
fn key_hash(named: &str) -> String {
    if named.starts_with("sk-") {
        key::hash(named)
    } else {
        named.to_string()
    }
}

fn date_param(name: &str, value: &Option<String>) -> Result<Option<String>, GatewayError> {
    match value {
        None => Ok(None),
        Some(v) => {
            v.parse::<jiff::civil::Date>().map(|d| Some(d.to_string())).map_err(|_| GatewayError::InvalidParam {
                message: format!("`{name}` must be a date like 2026-11-28, got {v:?}"),
                param: name.into(),
            })
        }
    }
}

#[derive(Default, Clone, Copy)]
struct Metrics {
    spend: i64,
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    cache_read_input_tokens: u64,
    cache_creation_input_tokens: u64,
    requests: u64,
    successes: u64,
    failures: u64,
}

impl Metrics {
    fn add(&mut self, r: &DayRow) {
        let t = &r.totals;
        self.spend += t.spend_nanos;
        self.prompt_tokens += t.prompt_tokens;
        self.completion_tokens += t.completion_tokens;
        self.total_tokens += t.total_tokens;
        self.cache_read_input_tokens += t.cache_read_input_tokens;
        self.cache_creation_input_tokens += t.cache_creation_input_tokens;
        self.requests += t.requests;
        self.successes += t.successes;
        self.failures += t.failures;
    }

    /// LiteLLM's metrics object.
    fn shown(&self) -> MetricsJson {
        MetricsJson {
            spend: usd(self.spend),
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            cache_read_input_tokens: self.cache_read_input_tokens,
            cache_creation_input_tokens: self.cache_creation_input_tokens,
            total_tokens: self.total_tokens,
            api_requests: self.requests,
            successful_requests: self.successes,
            failed_requests: self.failures,
        }
    }
}

/// The daily activity answers are large (a day per page row, each with every key of the day):
/// typed and serialized once, not built as a JSON tree first.
#[derive(Serialize)]
struct MetricsJson {
    spend: f64,
    prompt_tokens: u64,
    completion_tokens: u64,
    cache_read_input_tokens: u64,
    cache_creation_input_tokens: u64,
    total_tokens: u64,
    api_requests: u64,
    successful_requests: u64,
    failed_requests: u64,
}

#[derive(Serialize)]
struct Entry {
    metrics: MetricsJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<KeyMetadata>,
}

#[derive(Serialize)]
struct KeyMetadata {
    key_alias: Option<String>,
    team_id: Option<String>,
}

type Entries<'a> = BTreeMap<&'a str, Entry>;

#[derive(Serialize)]
struct Breakdown<'a> {
    models: &'a Entries<'a>,
    model_groups: &'a Entries<'a>,
    providers: &'a Entries<'a>,
    endpoints: Entries<'a>,
    api_keys: &'a Entries<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entities: Option<&'a Entries<'a>>,
}

#[derive(Serialize)]
struct Day<'a> {
    date: &'a str,
    metrics: MetricsJson,
    breakdown: Breakdown<'a>,
}

#[derive(Serialize)]
struct Activity<'a> {
    results: Vec<Day<'a>>,
    metadata: Value,
}

#[derive(Deserialize)]
pub struct ActivityQuery {
    start_date: Option<String>,
    end_date: Option<String>,
    model: Option<String>,
    api_key: Option<String>,
    page: Option<u64>,
    page_size: Option<u64>,
    team_ids: Option<String>,
    tags: Option<String>,
}

pub async fn user_daily_activity(
    Authed(caller): Authed,
    gw: web::Data<Gateway>,
    q: web::Query<ActivityQuery>,
) -> Result<HttpResponse, GatewayError> {
    activity(&gw, &caller, &q, "model", None).await
}

pub async fn team_daily_activity(
    Authed(caller): Authed,
    gw: web::Data<Gateway>,
    q: web::Query<ActivityQuery>,
) -> Result<HttpResponse, GatewayError> {
    let teams = q.team_ids.clone();
    activity(&gw, &caller, &q, "team", teams).await
}

pub async fn tag_daily_activity(
    Authed(caller): Authed,
    gw: web::Data<Gateway>,
    q: web::Query<ActivityQuery>,
) -> Result<HttpResponse, GatewayError> {
    let tags = q.tags.clone();
    activity(&gw, &caller, &q, "tag", tags).await
}

/// LiteLLM's daily activity answer: a page of days, each with its metrics and breakdowns.
async fn activity(
    gw: &Gateway,
    caller: &Caller,
    q: &ActivityQuery,
    kind: &'static str,
    entities: Option<String>,
) -> Result<HttpResponse, GatewayError> {
    let client = client(gw)?;
    let mut api_keys = visible_keys(gw, caller);
    if let Some(k) = &q.api_key {
        let k = key_hash(k);
        api_keys = Some(match api_keys {
            Some(visible) => visible.into_iter().filter(|v| *v == k).collect(),
            None => vec![k],
        });
    }
    let filter = DayFilter {
        kind,
        start_date: date_param("start_date", &q.start_date)?,
        end_date: date_param("end_date", &q.end_date)?,
        entity: None,
        api_keys,
        model_group: q.model.clone(),
    };
    let wanted: Option<Vec<String>> =
        entities.map(|e| e.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect());
    let rows = client.days(&filter).await?;
    let rows: Vec<DayRow> =
        rows.into_iter().filter(|r| wanted.as_ref().is_none_or(|w| w.contains(&r.entity))).collect();
    let mut days: BTreeMap<String, Vec<&DayRow>> = BTreeMap::new();
    let mut total = Metrics::default();
    for r in &rows {
        total.add(r);
        days.entry(r.date.clone()).or_default().push(r);
    }
    let page_size = q.page_size.unwrap_or(50).clamp(1, 1000) as usize;
    let page = q.page.unwrap_or(1).max(1) as usize;
    let total_pages = days.len().div_ceil(page_size).max(1);
    let shown: Vec<(&String, DaySums)> = days
        .iter()
        .rev()
        .skip((page - 1).saturating_mul(page_size))
        .take(page_size)
        .map(|(date, rows)| (date, DaySums::of(gw, rows)))
        .collect();
    let results = shown.iter().map(|(date, sums)| sums.shown(date, kind)).collect();
    let t = total.shown();
    Ok(HttpResponse::Ok().json(Activity {
        results,
        metadata: json!({
            "total_spend": t.spend,
            "total_prompt_tokens": t.prompt_tokens,
            "total_completion_tokens": t.completion_tokens,
            "total_tokens": t.total_tokens,
            "total_api_requests": t.api_requests,
            "total_successful_requests": t.successful_requests,
            "total_failed_requests": t.failed_requests,
            "total_cache_read_input_tokens": t.cache_read_input_tokens,
            "total_cache_creation_input_tokens": t.cache_creation_input_tokens,
            "page": page,
            "total_pages": total_pages,
            "has_more": page < total_pages,
        }),
    }))
}

/// One day's sums, whole and per model group, provider, key and entity.
struct DaySums<'a> {
    metrics: Metrics,
    models: Entries<'a>,
    providers: Entries<'a>,
    api_keys: Entries<'a>,
    entities: Entries<'a>,
}

impl<'a> DaySums<'a> {
    fn of(gw: &Gateway, rows: &[&'a DayRow]) -> Self {
        let mut metrics = Metrics::default();
        let mut by: [BTreeMap<&'a str, Metrics>; 4] = Default::default();
        for r in rows {
            metrics.add(r);
            for (i, name) in [&r.model_group, &r.provider, &r.api_key, &r.entity].into_iter().enumerate() {
                by[i].entry(name.as_str()).or_default().add(r);
            }
        }
        let [models, providers, api_keys, entities] = by;
        let plain = |m: BTreeMap<&'a str, Metrics>| -> Entries<'a> {
            m.into_iter().map(|(k, v)| (k, Entry { metrics: v.shown(), metadata: None })).collect()
        };
        let api_keys = api_keys
            .into_iter()
            .map(|(hash, m)| {
                let k = gw.auth.table.key(hash);
                let metadata = KeyMetadata {
                    key_alias: k.as_ref().and_then(|k| k.key_alias.clone()),
                    team_id: k.as_ref().and_then(|k| k.team_id.clone()),
                };
                (hash, Entry { metrics: m.shown(), metadata: Some(metadata) })
            })
            .collect();
        Self { metrics, models: plain(models), providers: plain(providers), api_keys, entities: plain(entities) }
    }

    /// LiteLLM's day object (`entities` only on the team and tag variants).
    fn shown(&'a self, date: &'a str, kind: &str) -> Day<'a> {
        Day {
            date,
            metrics: self.metrics.shown(),
            breakdown: Breakdown {
                models: &self.models,
                model_groups: &self.models,
                providers: &self.providers,
                endpoints: BTreeMap::new(),
                api_keys: &self.api_keys,
                entities: (kind != "model").then_some(&self.entities),
            },
        }
    }
}

/// `GET /global/spend`: all spend, `{"spend", "max_budget"}`.
pub async fn global_spend(Authed(caller): Authed, gw: web::Data<Gateway>) -> Result<HttpResponse, GatewayError> {
    let client = client(&gw)?;
    let filter = DayFilter { kind: "model", api_keys: visible_keys(&gw, &caller), ..DayFilter::default() };
    let rows = client.days(&filter).await?;
    let spend: i64 = rows.iter().map(|r| r.totals.spend_nanos).sum();
    Ok(HttpResponse::Ok().json(json!({"spend": usd(spend), "max_budget": 0.0})))
}

#[derive(Deserialize)]
pub struct ReportQuery {
    start_date: Option<String>,
    end_date: Option<String>,
    group_by: Option<String>,
    api_key: Option<String>,
    team_id: Option<String>,
    customer_id: Option<String>,
}

/// `GET /global/spend/report?group_by=team|customer|api_key`: per day, per group, with the
/// models and keys behind each.
pub async fn global_spend_report(
    Authed(caller): Authed,
    gw: web::Data<Gateway>,
    q: web::Query<ReportQuery>,
) -> Result<HttpResponse, GatewayError> {
    let client = client(&gw)?;
    let (kind, list, name, entity) = match q.group_by.as_deref().unwrap_or("team") {
        "team" => ("team", "teams", "team_name", q.team_id.clone()),
        "customer" => ("end_user", "customers", "customer", q.customer_id.clone()),
        "api_key" => ("key", "api_keys", "api_key", q.api_key.as_deref().map(key_hash)),
        other => {
            return Err(GatewayError::InvalidParam {
                message: format!("`group_by` must be team, customer or api_key, got {other:?}"),
                param: "group_by".into(),
            })
        }
    };
    let filter = DayFilter {
        kind,
        start_date: date_param("start_date", &q.start_date)?,
        end_date: date_param("end_date", &q.end_date)?,
        entity,
        api_keys: visible_keys(&gw, &caller),
        model_group: None,
    };
    let rows = client.days(&filter).await?;
    let mut days: BTreeMap<&str, BTreeMap<&str, Vec<&DayRow>>> = BTreeMap::new();
    for r in &rows {
        days.entry(&r.date).or_default().entry(&r.entity).or_default().push(r);
    }
    let answer: Vec<Value> = days
        .iter()
        .map(|(date, groups)| {
            let entries: Vec<Value> = groups
                .iter()
                .map(|(entity, rows)| {
                    let label = match kind {
                        "team" => gw.auth.table.team(entity).and_then(|t| t.team_alias.clone()).unwrap_or_else(|| entity.to_string()),
                        _ => entity.to_string(),
                    };
                    let total: i64 = rows.iter().map(|r| r.totals.spend_nanos).sum();
                    let metadata: Vec<Value> = rows
                        .iter()
                        .map(|r| json!({"model": r.model_group, "api_key": r.api_key, "spend": usd(r.totals.spend_nanos), "total_tokens": r.totals.total_tokens}))
                        .collect();
                    json!({name: label, "total_spend": usd(total), "metadata": metadata})
                })
                .collect();
            json!({"group_by_day": date, list: entries})
        })
        .collect();
    Ok(HttpResponse::Ok().json(answer))
}

#[derive(Deserialize)]
pub struct LogsQuery {
    api_key: Option<String>,
    user_id: Option<String>,
    request_id: Option<String>,
    start_date: Option<String>,
    end_date: Option<String>,
    summarize: Option<bool>,
}

/// `GET /spend/logs`: the rows (newest first, at most 1000), or with both dates and
/// `summarize` (the default) a zero-filled day-by-day summary.
pub async fn logs(
    Authed(caller): Authed,
    gw: web::Data<Gateway>,
    q: web::Query<LogsQuery>,
) -> Result<HttpResponse, GatewayError> {
    let client = client(&gw)?;
    let start_date = date_param("start_date", &q.start_date)?;
    let end_date = date_param("end_date", &q.end_date)?;
    let filter = LogFilter {
        api_key: q.api_key.as_deref().map(key_hash),
        user: q.user_id.clone(),
        request_id: q.request_id.clone(),
        start_date: start_date.clone(),
        end_date: end_date.clone(),
        api_keys: visible_keys(&gw, &caller),
        limit: 1000,
    };
    if let (Some(start), Some(end), true) = (&start_date, &end_date, q.summarize.unwrap_or(true)) {
        return summary(&gw, client, &filter, start, end).await;
    }
    let rows = client.logs(&filter).await?;
    let answer: Vec<Value> = rows
        .iter()
        .map(|r| {
            let start =
                jiff::Timestamp::from_millisecond(r.start_time_ms as i64).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
            let end = start.checked_add(jiff::SignedDuration::from_secs_f64(r.duration_ms / 1000.0)).unwrap_or(start);
            json!({
                "request_id": r.request_id, "call_type": r.call_type, "api_key": r.api_key, "key_alias": r.key_alias,
                "spend": usd(r.spend_nanos), "total_tokens": r.total_tokens, "prompt_tokens": r.prompt_tokens,
                "completion_tokens": r.completion_tokens, "startTime": start.to_string(), "endTime": end.to_string(),
                "model": r.model, "model_group": r.model_group, "model_id": r.deployment,
                "custom_llm_provider": r.provider, "api_base": r.api_base, "user": r.user,
                "metadata": serde_json::from_str::<Value>(&r.metadata).unwrap_or(json!({})),
                "cache_hit": (r.cache_hit == 1).to_string(), "request_tags": r.tags, "team_id": r.team_id,
                "end_user": r.end_user, "status": r.status,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(answer))
}

/// Per day from `start` to `end`, zero-filled: spend, and spend per user and per model.
async fn summary(
    gw: &Gateway,
    client: &SpendSource,
    filter: &LogFilter,
    start: &str,
    end: &str,
) -> Result<HttpResponse, GatewayError> {
    let day_filter = DayFilter {
        kind: "model",
        start_date: Some(start.into()),
        end_date: Some(end.into()),
        entity: None,
        api_keys: match (&filter.api_keys, &filter.api_key) {
            (Some(visible), Some(k)) => Some(visible.iter().filter(|v| *v == k).cloned().collect()),
            (None, Some(k)) => Some(vec![k.clone()]),
            (visible, None) => visible.clone(),
        },
        model_group: None,
    };
    let rows = client.days(&day_filter).await?;
    let (Ok(first), Ok(last)) = (start.parse::<jiff::civil::Date>(), end.parse::<jiff::civil::Date>()) else {
        return Err(GatewayError::BadRequest("start_date and end_date must be dates".into()));
    };
    let mut out = Vec::new();
    let mut day = first;
    while day <= last && out.len() < 3660 {
        let date = day.to_string();
        let today: Vec<&DayRow> = rows.iter().filter(|r| r.date == date).collect();
        let mut users: BTreeMap<String, f64> = BTreeMap::new();
        let mut models: BTreeMap<String, f64> = BTreeMap::new();
        for r in &today {
            let user = gw.auth.table.key(&r.api_key).and_then(|k| k.user_id.clone()).unwrap_or_default();
            *users.entry(user).or_default() += usd(r.totals.spend_nanos);
            *models.entry(r.model_group.clone()).or_default() += usd(r.totals.spend_nanos);
        }
        let spend: i64 = today.iter().map(|r| r.totals.spend_nanos).sum();
        out.push(json!({"startTime": date, "spend": usd(spend), "users": users, "models": models}));
        match day.tomorrow() {
            Ok(next) => day = next,
            Err(_) => break,
        }
    }
    Ok(HttpResponse::Ok().json(out))
}
