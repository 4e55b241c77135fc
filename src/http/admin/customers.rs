//! `/customer/*` (also `/end_user/*`): end users, the `user` of a request body, with budgets,
//! limits and a block switch.

use actix_web::{web, HttpResponse};
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{
    bad, field, merged, not_found, required, shown, typed, validate_limits, Admin, Body, Viewer, LIMIT_FIELDS,
};
use crate::auth::entity::{EndUserRecord, Entity, EntityId, Limits, SpendStart};
use crate::budget::ledger::Account;
use crate::error::GatewayError;
use crate::http::Gateway;

const END_USER_FIELDS: &[&str] = &["alias", "blocked", "allowed_model_region", "default_model", "budget_id"];

fn fields() -> Vec<&'static str> {
    END_USER_FIELDS.iter().chain(LIMIT_FIELDS).copied().collect()
}

fn find(gw: &Gateway, id: &str) -> Result<EndUserRecord, GatewayError> {
    gw.auth
        .table
        .end_user(id)
        .map(|e| e.as_ref().clone())
        .ok_or_else(|| not_found(format!("End User Id={id} does not exist in db")))
}

fn end_user_json(gw: &Gateway, e: &EndUserRecord) -> Value {
    let l = &e.limits;
    let table = json!({"max_budget": l.max_budget, "tpm_limit": l.tpm_limit, "rpm_limit": l.rpm_limit, "budget_duration": l.budget_duration});
    shown(gw, e, &Account::EndUser(e.user_id.clone()), l, e.spend_start, &[("litellm_budget_table", table)])
}

async fn save(gw: &Gateway, mut e: EndUserRecord) -> Result<EndUserRecord, GatewayError> {
    e.updated_at = Timestamp::now();
    validate_limits(&e.limits)?;
    if let Some(region) = &e.allowed_model_region {
        if region != "eu" && region != "us" {
            return Err(bad(format!("allowed_model_region must be 'eu' or 'us'. Received: {region}")));
        }
    }
    gw.keys.put(Entity::EndUser(e.clone())).await?;
    Ok(e)
}

pub async fn new(Admin(_): Admin, gw: web::Data<Gateway>, Body(body): Body) -> Result<HttpResponse, GatewayError> {
    let user_id = required(&body, "user_id")?;
    if body.get("max_budget").is_some_and(|v| !v.is_null()) && body.get("budget_id").is_some_and(|v| !v.is_null()) {
        return Err(bad("Set either 'max_budget' or 'budget_id', not both."));
    }
    if gw.auth.table.end_user(&user_id).is_some() {
        return Err(bad(format!("Customer with id={user_id} already exists")));
    }
    let now = Timestamp::now();
    let base = EndUserRecord {
        user_id,
        alias: None,
        blocked: false,
        allowed_model_region: None,
        default_model: None,
        budget_id: None,
        limits: Limits::default(),
        spend_start: SpendStart { since: now, base: 0.0 },
        created_at: now,
        updated_at: now,
    };
    let e = save(&gw, merged(&base, &body, &fields())?).await?;
    Ok(HttpResponse::Ok().json(end_user_json(&gw, &e)))
}

pub async fn update(Admin(_): Admin, gw: web::Data<Gateway>, Body(body): Body) -> Result<HttpResponse, GatewayError> {
    let e = find(&gw, &required(&body, "user_id")?)?;
    let e = save(&gw, merged(&e, &body, &fields())?).await?;
    Ok(HttpResponse::Ok().json(end_user_json(&gw, &e)))
}

#[derive(Deserialize)]
pub struct IdsBody {
    user_ids: Vec<String>,
}

pub async fn delete(Admin(_): Admin, gw: web::Data<Gateway>, Body(body): Body) -> Result<HttpResponse, GatewayError> {
    let body: IdsBody = typed(Value::Object(body))?;
    for id in &body.user_ids {
        find(&gw, id)?;
    }
    for id in &body.user_ids {
        gw.keys.delete(&EntityId::EndUser(id.clone())).await?;
        gw.budgets.ledger.forget(&Account::EndUser(id.clone()));
    }
    Ok(HttpResponse::Ok().json(json!({"deleted_customers": body.user_ids})))
}

#[derive(Deserialize)]
pub struct InfoQuery {
    end_user_id: String,
}

pub async fn info(
    Viewer(_): Viewer,
    gw: web::Data<Gateway>,
    q: web::Query<InfoQuery>,
) -> Result<HttpResponse, GatewayError> {
    Ok(HttpResponse::Ok().json(end_user_json(&gw, &find(&gw, &q.end_user_id)?)))
}

pub async fn list(Viewer(_): Viewer, gw: web::Data<Gateway>) -> Result<HttpResponse, GatewayError> {
    let all: Vec<Value> = gw.auth.table.end_users().iter().map(|e| end_user_json(&gw, e)).collect();
    Ok(HttpResponse::Ok().json(all))
}

async fn set_blocked(gw: &Gateway, body: Map<String, Value>, blocked: bool) -> Result<HttpResponse, GatewayError> {
    let ids: Vec<String> = field(&body, "user_ids")?.ok_or_else(|| bad("Pass `user_ids`: a list of end user ids"))?;
    let mut out = Vec::with_capacity(ids.len());
    for id in &ids {
        let mut e = find(gw, id)?;
        e.blocked = blocked;
        out.push(end_user_json(gw, &save(gw, e).await?));
    }
    Ok(HttpResponse::Ok().json(json!({"blocked_users": if blocked { ids.clone() } else { vec![] }, "customers": out})))
}

pub async fn block(Admin(_): Admin, gw: web::Data<Gateway>, Body(body): Body) -> Result<HttpResponse, GatewayError> {
    set_blocked(&gw, body, true).await
}

pub async fn unblock(Admin(_): Admin, gw: web::Data<Gateway>, Body(body): Body) -> Result<HttpResponse, GatewayError> {
    set_blocked(&gw, body, false).await
}
