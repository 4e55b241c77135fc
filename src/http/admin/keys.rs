//! `/key/*`: virtual keys. The raw key is in the answer of `/key/generate` and
//! `/key/{key}/regenerate` only; everywhere else a key is its hash (`token`).

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{
    bad, field, merged, not_found, page, required, shown, spend, validate_limits, Admin, Authed, Body, Viewer,
    LIMIT_FIELDS,
};
use crate::auth::entity::{Entity, EntityId, KeyRecord, Limits, SpendStart};
use crate::auth::{key, Role};
use crate::budget::ledger::Account;
use crate::budget::window::expiry;
use crate::error::GatewayError;
use crate::http::Gateway;

/// What `/key/generate`, `/key/update` and `/key/regenerate` may set besides the limits.
const KEY_FIELDS: &[&str] = &[
    "key_alias",
    "user_id",
    "team_id",
    "models",
    "model_max_budget",
    "model_rpm_limit",
    "model_tpm_limit",
    "metadata",
    "tags",
    "blocked",
    "allowed_routes",
    "aliases",
    "config",
    "permissions",
];

fn fields() -> Vec<&'static str> {
    KEY_FIELDS.iter().chain(LIMIT_FIELDS).copied().collect()
}

/// A key as the answers show it: the record without its internals, with its spend.
pub fn key_json(gw: &Gateway, k: &KeyRecord) -> Value {
    let account = Account::Key(k.token.clone());
    shown(gw, k, &account, &k.limits, k.spend_start, &[("litellm_budget_table", Value::Null)])
}

/// A key named by its raw value (`sk-…`) or its hash.
pub fn find(gw: &Gateway, named: &str) -> Result<Arc<KeyRecord>, GatewayError> {
    let hash = if named.starts_with("sk-") { key::hash(named) } else { named.to_string() };
    gw.auth.table.key(&hash).ok_or_else(|| not_found("Key not found in database"))
}

/// The checks every written key passes: limits, a unique alias, a known team, an expiry.
fn validate(gw: &Gateway, k: &KeyRecord) -> Result<(), GatewayError> {
    validate_limits(&k.limits)?;
    for (name, budget) in &k.model_max_budget {
        validate_limits(&Limits {
            max_budget: Some(budget.budget_limit),
            budget_duration: budget.time_period.clone(),
            ..Limits::default()
        })
        .map_err(|e| bad(format!("model_max_budget.{name}: {e}")))?;
    }
    if let Some(alias) = &k.key_alias {
        if gw.auth.table.key_by_alias(alias).is_some_and(|other| other.token != k.token) {
            return Err(bad(format!(
                "Unique key aliases across all keys are required. Key alias={alias} already exists."
            )));
        }
    }
    if let Some(team) = &k.team_id {
        if gw.auth.table.team(team).is_none() {
            return Err(bad(format!("Team not found, passed team_id={team}")));
        }
    }
    Ok(())
}

/// `duration` → `expires` (`null` = never).
fn apply_duration(k: &mut KeyRecord, body: &Map<String, Value>, now: Timestamp) -> Result<(), GatewayError> {
    match body.get("duration") {
        None => Ok(()),
        Some(Value::Null) => {
            k.expires = None;
            Ok(())
        }
        Some(v) => {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => format!("{n}s"),
                other => return Err(bad(format!("Invalid `duration`: {other}"))),
            };
            k.expires = Some(expiry(now, &text).map_err(|e| bad(format!("Invalid `duration`: {e}")))?);
            Ok(())
        }
    }
}

fn created_by(caller: &crate::auth::Caller) -> Option<String> {
    match caller.role {
        Role::Master => Some("master_key".into()),
        _ => caller.user_id().map(str::to_string),
    }
}

/// A caller-chosen key must look like one.
fn chosen_key(body: &Map<String, Value>, name: &str) -> Result<Option<String>, GatewayError> {
    match field::<String>(body, name)? {
        Some(k) if !k.starts_with("sk-") => Err(bad(format!(
            "Invalid key format. LiteLLM Virtual Key must start with 'sk-'. Received: {}",
            key::masked(&k)
        ))),
        other => Ok(other),
    }
}

/// The key a body chooses in `field`, or a new one, with its hash; one that exists is refused.
fn fresh_key(gw: &Gateway, body: &Map<String, Value>, field: &str) -> Result<(String, String), GatewayError> {
    let raw = match chosen_key(body, field)? {
        Some(k) => k,
        None => new_key()?,
    };
    let token = key::hash(&raw);
    if gw.auth.table.key(&token).is_some() {
        return Err(bad("This key already exists"));
    }
    Ok((raw, token))
}

fn new_key() -> Result<String, GatewayError> {
    key::generate().map_err(|e| GatewayError::Denied {
        status: 503,
        kind: "service_unavailable",
        message: format!("The operating system's random number generator failed: {e}"),
    })
}

/// A new key's record from a request body (shared with `/user/new`).
pub fn new_record(
    gw: &Gateway,
    caller: &crate::auth::Caller,
    body: &Map<String, Value>,
) -> Result<(String, KeyRecord), GatewayError> {
    let (raw, token) = fresh_key(gw, body, "key")?;
    let now = Timestamp::now();
    let spent = field::<f64>(body, "spend")?.unwrap_or(0.0);
    let mut base = KeyRecord::new(token, key::key_name(&raw), now);
    base.spend_start.base = spent.max(0.0);
    base.created_by = created_by(caller);
    let mut record = merged(&base, body, &fields())?;
    apply_duration(&mut record, body, now)?;
    validate(gw, &record)?;
    Ok((raw, record))
}

/// The answer to a key's creation: the key once, raw.
pub fn created_json(gw: &Gateway, raw: &str, k: &KeyRecord) -> Value {
    let mut value = key_json(gw, k);
    if let Value::Object(map) = &mut value {
        map.insert("key".into(), json!(raw));
        map.insert("token_id".into(), json!(k.token));
    }
    value
}

pub async fn generate(
    Admin(caller): Admin,
    gw: web::Data<Gateway>,
    Body(body): Body,
) -> Result<HttpResponse, GatewayError> {
    let (raw, record) = new_record(&gw, &caller, &body)?;
    gw.keys.put(Entity::Key(record.clone())).await?;
    tracing::info!(token = %record.token, alias = ?record.key_alias, "key generated");
    Ok(HttpResponse::Ok().json(created_json(&gw, &raw, &record)))
}

pub async fn update(Admin(_): Admin, gw: web::Data<Gateway>, Body(body): Body) -> Result<HttpResponse, GatewayError> {
    let named = required(&body, "key")?;
    let old = find(&gw, &named)?;
    let now = Timestamp::now();
    let mut record = merged(old.as_ref(), &body, &fields())?;
    apply_duration(&mut record, &body, now)?;
    record.updated_at = now;
    validate(&gw, &record)?;
    gw.keys.put(Entity::Key(record.clone())).await?;
    let mut answer = key_json(&gw, &record);
    if let Value::Object(map) = &mut answer {
        map.insert("key".into(), json!(named));
    }
    Ok(HttpResponse::Ok().json(answer))
}

#[derive(Deserialize)]
pub struct DeleteBody {
    #[serde(default)]
    keys: Option<Vec<String>>,
    #[serde(default)]
    key_aliases: Option<Vec<String>>,
}

pub async fn delete(Admin(_): Admin, gw: web::Data<Gateway>, Body(body): Body) -> Result<HttpResponse, GatewayError> {
    let body: DeleteBody = super::typed(Value::Object(body))?;
    let (named, records): (Vec<String>, Vec<Arc<KeyRecord>>) = match (body.keys, body.key_aliases) {
        (Some(keys), _) if !keys.is_empty() => {
            let records = keys.iter().map(|k| find(&gw, k)).collect::<Result<Vec<_>, _>>()?;
            (keys, records)
        }
        (_, Some(aliases)) if !aliases.is_empty() => {
            let records = aliases
                .iter()
                .map(|a| {
                    gw.auth
                        .table
                        .key_by_alias(a)
                        .ok_or_else(|| not_found(format!("Key not found in database: key_alias={a}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            (aliases, records)
        }
        _ => return Err(bad("Pass `keys` (a list of keys or their hashes) or `key_aliases`")),
    };
    for record in &records {
        gw.keys.delete(&EntityId::Key(record.token.clone())).await?;
        gw.budgets.ledger.forget(&Account::Key(record.token.clone()));
    }
    Ok(HttpResponse::Ok().json(json!({"deleted_keys": named})))
}

#[derive(Deserialize)]
pub struct InfoQuery {
    key: Option<String>,
}

/// `GET /key/info`: any key may read its own; admins any key.
pub async fn info(
    Authed(caller): Authed,
    gw: web::Data<Gateway>,
    q: web::Query<InfoQuery>,
) -> Result<HttpResponse, GatewayError> {
    let (named, record) = match &q.key {
        Some(named) => (named.clone(), find(&gw, named)?),
        None => match &caller.key {
            Some(own) => (own.token.clone(), own.clone()),
            None => return Err(bad("Pass `key`: the master key is not a virtual key")),
        },
    };
    if !caller.can_manage() && caller.key.as_ref().map(|k| &k.token) != Some(&record.token) {
        return Err(GatewayError::Denied {
            status: 403,
            kind: "auth_error",
            message: "Authentication Error, you can only view your own key's info".into(),
        });
    }
    Ok(HttpResponse::Ok().json(json!({"key": named, "info": key_json(&gw, &record)})))
}

#[derive(Deserialize)]
pub struct ListQuery {
    page: Option<u64>,
    size: Option<u64>,
    user_id: Option<String>,
    team_id: Option<String>,
    key_alias: Option<String>,
    key_hash: Option<String>,
    #[serde(default)]
    return_full_object: bool,
}

pub async fn list(
    Viewer(_): Viewer,
    gw: web::Data<Gateway>,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, GatewayError> {
    let matches = |want: &Option<String>, have: &Option<String>| want.is_none() || want == have;
    let keys = gw.auth.table.keys_where(|k| {
        k.replaced_by.is_none()
            && matches(&q.user_id, &k.user_id)
            && matches(&q.team_id, &k.team_id)
            && matches(&q.key_alias, &k.key_alias)
            && q.key_hash.as_ref().is_none_or(|h| *h == k.token)
    });
    let total = keys.len();
    let (shown, current, pages) = page(&keys, q.page, q.size, 100);
    let shown: Vec<Value> = if q.return_full_object {
        shown.iter().map(|k| key_json(&gw, k)).collect()
    } else {
        shown.iter().map(|k| json!(k.token)).collect()
    };
    Ok(HttpResponse::Ok()
        .json(json!({"keys": shown, "total_count": total, "current_page": current, "total_pages": pages})))
}

async fn set_blocked(gw: &Gateway, body: Map<String, Value>, blocked: bool) -> Result<HttpResponse, GatewayError> {
    let mut record = find(gw, &required(&body, "key")?)?.as_ref().clone();
    record.blocked = blocked;
    record.updated_at = Timestamp::now();
    gw.keys.put(Entity::Key(record.clone())).await?;
    Ok(HttpResponse::Ok().json(key_json(gw, &record)))
}

pub async fn block(Admin(_): Admin, gw: web::Data<Gateway>, Body(body): Body) -> Result<HttpResponse, GatewayError> {
    set_blocked(&gw, body, true).await
}

pub async fn unblock(Admin(_): Admin, gw: web::Data<Gateway>, Body(body): Body) -> Result<HttpResponse, GatewayError> {
    set_blocked(&gw, body, false).await
}

/// `POST /key/{key}/regenerate`: a new key with the old one's settings (and spend); with
/// `grace_period`, the old key keeps working, as the new one, until it ends.
pub async fn regenerate(
    Admin(_): Admin,
    gw: web::Data<Gateway>,
    path: web::Path<String>,
    Body(body): Body,
) -> Result<HttpResponse, GatewayError> {
    regenerate_key(&gw, &path, body).await
}

/// `POST /key/regenerate {"key": …}`: the same, the key named in the body.
pub async fn regenerate_named(
    Admin(_): Admin,
    gw: web::Data<Gateway>,
    Body(body): Body,
) -> Result<HttpResponse, GatewayError> {
    let named = required(&body, "key")?;
    regenerate_key(&gw, &named, body).await
}

async fn regenerate_key(gw: &Gateway, named: &str, body: Map<String, Value>) -> Result<HttpResponse, GatewayError> {
    let old = find(gw, named)?;
    let (raw, token) = fresh_key(gw, &body, "new_key")?;
    let now = Timestamp::now();
    let (spent, _) = spend(gw, &Account::Key(old.token.clone()), &old.limits, old.spend_start);
    let mut fresh = old.as_ref().clone();
    fresh.token = token.clone();
    fresh.key_name = key::key_name(&raw);
    fresh.updated_at = now;
    // The spend so far carries over, counted from now on the new key.
    fresh.spend_start = SpendStart { since: now, base: spent };
    let mut fresh = merged(&fresh, &body, &fields())?;
    apply_duration(&mut fresh, &body, now)?;
    let grace = match field::<String>(&body, "grace_period")? {
        Some(g) => Some(expiry(now, &g).map_err(|e| bad(format!("Invalid `grace_period`: {e}")))?),
        None => None,
    };
    // The old record gives up its alias first, so the alias names the new key.
    match grace {
        Some(until) => {
            let mut retired = old.as_ref().clone();
            retired.key_alias = None;
            retired.replaced_by = Some(token.clone());
            retired.expires = Some(retired.expires.map_or(until, |e| e.min(until)));
            retired.updated_at = now;
            gw.keys.put(Entity::Key(retired)).await?;
        }
        None => gw.keys.delete(&EntityId::Key(old.token.clone())).await?,
    }
    validate(gw, &fresh)?;
    gw.keys.put(Entity::Key(fresh.clone())).await?;
    Ok(HttpResponse::Ok().json(created_json(gw, &raw, &fresh)))
}

/// `POST /key/{key}/reset_spend {"reset_to": X}`.
pub async fn reset_spend(
    Admin(_): Admin,
    gw: web::Data<Gateway>,
    path: web::Path<String>,
    Body(body): Body,
) -> Result<HttpResponse, GatewayError> {
    let reset_to = field::<f64>(&body, "reset_to")?.ok_or_else(|| GatewayError::InvalidParam {
        message: "Missing required parameter: `reset_to`".into(),
        param: "reset_to".into(),
    })?;
    if !reset_to.is_finite() || reset_to < 0.0 {
        return Err(bad(format!("reset_to must be a non-negative number. Received: {reset_to}")));
    }
    let mut record = find(&gw, &path)?.as_ref().clone();
    let now = Timestamp::now();
    record.spend_start = SpendStart { since: now, base: reset_to };
    record.updated_at = now;
    gw.keys.put(Entity::Key(record.clone())).await?;
    Ok(HttpResponse::Ok().json(key_json(&gw, &record)))
}
