//! `/user/*`: internal users, each with a role, budgets and (unless `auto_create_key: false`)
//! a key made with them.

use actix_web::{web, HttpResponse};
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::keys::{created_json, key_json, new_record};
use super::teams::team_json;
use super::{
    bad, field, merged, not_found, page, required, shown, typed, validate_limits, Admin, Authed, Body, Viewer,
    LIMIT_FIELDS,
};
use crate::auth::entity::{Entity, EntityId, Limits, SpendStart, UserRecord};
use crate::budget::ledger::Account;
use crate::error::GatewayError;
use crate::http::Gateway;

const USER_FIELDS: &[&str] = &["user_email", "user_alias", "user_role", "teams", "models", "metadata"];

/// The fields of `/user/new` that go to the key made with the user.
const KEY_FIELDS: &[&str] = &["key_alias", "duration", "models", "team_id", "tags", "key", "allowed_routes"];

fn fields() -> Vec<&'static str> {
    USER_FIELDS.iter().chain(LIMIT_FIELDS).copied().collect()
}

fn find(gw: &Gateway, id: &str) -> Result<UserRecord, GatewayError> {
    gw.auth
        .table
        .user(id)
        .map(|u| u.as_ref().clone())
        .ok_or_else(|| not_found(format!("User not found, passed user_id={id}")))
}

pub fn user_json(gw: &Gateway, u: &UserRecord) -> Value {
    shown(gw, u, &Account::User(u.user_id.clone()), &u.limits, u.spend_start, &[])
}

async fn save(gw: &Gateway, mut user: UserRecord) -> Result<UserRecord, GatewayError> {
    user.updated_at = Timestamp::now();
    validate_limits(&user.limits)?;
    gw.keys.put(Entity::User(user.clone())).await?;
    Ok(user)
}

pub async fn new(Admin(caller): Admin, gw: web::Data<Gateway>, Body(body): Body) -> Result<HttpResponse, GatewayError> {
    let user_id = field::<String>(&body, "user_id")?.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    if gw.auth.table.user(&user_id).is_some() {
        return Err(bad(format!("User with id={user_id} already exists")));
    }
    if let Some(p) = field::<String>(&body, "password")? {
        if !(8..=128).contains(&p.chars().count()) {
            return Err(bad("password must be 8 to 128 characters long"));
        }
    }
    let now = Timestamp::now();
    let base = UserRecord {
        user_id: user_id.clone(),
        user_email: None,
        user_alias: None,
        user_role: Default::default(),
        teams: vec![],
        models: vec![],
        limits: Limits::default(),
        metadata: Map::new(),
        spend_start: SpendStart { since: now, base: 0.0 },
        created_at: now,
        updated_at: now,
    };
    let user = merged(&base, &body, &fields())?;
    validate_limits(&user.limits)?;
    // The key is checked before anything is written, so a bad key field writes nothing.
    let key = if field::<bool>(&body, "auto_create_key")?.unwrap_or(true) {
        let mut key_body: Map<String, Value> =
            KEY_FIELDS.iter().filter_map(|f| body.get(*f).map(|v| (f.to_string(), v.clone()))).collect();
        key_body.insert("user_id".into(), json!(user_id));
        Some(new_record(&gw, &caller, &key_body)?)
    } else {
        None
    };
    let user = save(&gw, user).await?;
    let mut answer = user_json(&gw, &user);
    if let Some((raw, record)) = key {
        gw.keys.put(Entity::Key(record.clone())).await?;
        if let (Value::Object(out), Value::Object(k)) = (&mut answer, created_json(&gw, &raw, &record)) {
            for name in ["key", "token_id", "key_name", "key_alias", "expires", "team_id"] {
                if let Some(v) = k.get(name) {
                    out.insert(name.into(), v.clone());
                }
            }
        }
    }
    Ok(HttpResponse::Ok().json(answer))
}

pub async fn update(Admin(_): Admin, gw: web::Data<Gateway>, Body(body): Body) -> Result<HttpResponse, GatewayError> {
    let user = find(&gw, &required(&body, "user_id")?)?;
    let user = save(&gw, merged(&user, &body, &fields())?).await?;
    Ok(HttpResponse::Ok().json(user_json(&gw, &user)))
}

#[derive(Deserialize)]
pub struct DeleteBody {
    user_ids: Vec<String>,
}

/// Deletes users and their keys.
pub async fn delete(Admin(_): Admin, gw: web::Data<Gateway>, Body(body): Body) -> Result<HttpResponse, GatewayError> {
    let body: DeleteBody = typed(Value::Object(body))?;
    for id in &body.user_ids {
        find(&gw, id)?;
    }
    for id in &body.user_ids {
        for k in gw.auth.table.keys_where(|k| k.user_id.as_deref() == Some(id)) {
            gw.keys.delete(&EntityId::Key(k.token.clone())).await?;
        }
        gw.keys.delete(&EntityId::User(id.clone())).await?;
        gw.budgets.ledger.forget(&Account::User(id.clone()));
    }
    Ok(HttpResponse::Ok().json(json!({"deleted_users": body.user_ids})))
}

#[derive(Deserialize)]
pub struct InfoQuery {
    user_id: Option<String>,
}

/// `GET /user/info`: admins any user; a user's key its own user.
pub async fn info(
    Authed(caller): Authed,
    gw: web::Data<Gateway>,
    q: web::Query<InfoQuery>,
) -> Result<HttpResponse, GatewayError> {
    let Some(id) = q.user_id.clone().or_else(|| caller.user_id().map(str::to_string)) else {
        return Err(bad("Pass `user_id`"));
    };
    if !caller.can_manage() && caller.user_id() != Some(id.as_str()) {
        return Err(GatewayError::Denied {
            status: 403,
            kind: "auth_error",
            message: "Authentication Error, you can only view your own user's info".into(),
        });
    }
    let user = find(&gw, &id)?;
    let keys: Vec<Value> =
        gw.auth.table.keys_where(|k| k.user_id.as_deref() == Some(&id)).iter().map(|k| key_json(&gw, k)).collect();
    let teams: Vec<Value> =
        gw.auth.table.teams().iter().filter(|t| t.member(&id).is_some()).map(|t| team_json(&gw, t)).collect();
    Ok(HttpResponse::Ok()
        .json(json!({"user_id": id, "user_info": user_json(&gw, &user), "keys": keys, "teams": teams})))
}

#[derive(Deserialize)]
pub struct ListQuery {
    page: Option<u64>,
    page_size: Option<u64>,
    role: Option<String>,
}

pub async fn list(
    Viewer(_): Viewer,
    gw: web::Data<Gateway>,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, GatewayError> {
    let users: Vec<_> = gw
        .auth
        .table
        .users()
        .into_iter()
        .filter(|u| {
            q.role
                .as_ref()
                .is_none_or(|r| serde_json::to_value(u.user_role).ok().as_ref().and_then(Value::as_str) == Some(r))
        })
        .collect();
    let total = users.len();
    let size = q.page_size.unwrap_or(25);
    let (shown, current, pages) = page(&users, q.page, Some(size), 1000);
    let shown: Vec<Value> = shown.iter().map(|u| user_json(&gw, u)).collect();
    Ok(HttpResponse::Ok().json(json!({
        "users": shown,
        "total": total,
        "page": current,
        "page_size": size.clamp(1, 1000),
        "total_pages": pages,
    })))
}
