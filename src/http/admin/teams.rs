//! `/team/*`: teams, their members and the members' budgets and limits.

use actix_web::{web, HttpResponse};
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::keys::key_json;
use super::{
    bad, field, merged, not_found, required, shown, spend, typed, validate_limits, with, Admin, Body, Viewer,
    LIMIT_FIELDS,
};
use crate::auth::entity::{Entity, EntityId, Limits, Member, SpendStart, TeamRecord};
use crate::budget::ledger::Account;
use crate::error::GatewayError;
use crate::http::Gateway;

const TEAM_FIELDS: &[&str] = &[
    "team_alias",
    "organization_id",
    "members_with_roles",
    "models",
    "metadata",
    "blocked",
    "model_aliases",
    "team_member_budget",
    "team_member_rpm_limit",
    "team_member_tpm_limit",
];

fn fields() -> Vec<&'static str> {
    TEAM_FIELDS.iter().chain(LIMIT_FIELDS).copied().collect()
}

fn find(gw: &Gateway, id: &str) -> Result<TeamRecord, GatewayError> {
    gw.auth
        .table
        .team(id)
        .map(|t| t.as_ref().clone())
        .ok_or_else(|| not_found(format!("Team not found, passed team_id={id}")))
}

fn validate(t: &TeamRecord) -> Result<(), GatewayError> {
    validate_limits(&t.limits)?;
    if let Some(b) = t.team_member_budget {
        validate_limits(&Limits { max_budget: Some(b), ..Limits::default() })?;
    }
    for m in &t.members_with_roles {
        if m.user_id.is_none() && m.user_email.is_none() {
            return Err(bad("Each member needs a `user_id` or a `user_email`"));
        }
    }
    Ok(())
}

pub fn team_json(gw: &Gateway, t: &TeamRecord) -> Value {
    shown(gw, t, &Account::Team(t.team_id.clone()), &t.limits, t.spend_start, &[])
}

async fn save(gw: &Gateway, mut team: TeamRecord) -> Result<TeamRecord, GatewayError> {
    team.updated_at = Timestamp::now();
    validate(&team)?;
    gw.keys.put(Entity::Team(team.clone())).await?;
    Ok(team)
}

pub async fn new(Admin(_): Admin, gw: web::Data<Gateway>, Body(body): Body) -> Result<HttpResponse, GatewayError> {
    let team_id = field::<String>(&body, "team_id")?.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    if gw.auth.table.team(&team_id).is_some() {
        return Err(bad(format!("Team id = {team_id} already exists. Please use a different team id.")));
    }
    let now = Timestamp::now();
    let base = TeamRecord {
        team_id,
        team_alias: None,
        organization_id: None,
        members_with_roles: vec![],
        models: vec![],
        limits: Limits::default(),
        metadata: Map::new(),
        blocked: false,
        model_aliases: Map::new(),
        team_member_budget: None,
        team_member_rpm_limit: None,
        team_member_tpm_limit: None,
        spend_start: SpendStart { since: now, base: 0.0 },
        created_at: now,
        updated_at: now,
    };
    let team = save(&gw, merged(&base, &body, &fields())?).await?;
    Ok(HttpResponse::Ok().json(team_json(&gw, &team)))
}

pub async fn update(Admin(_): Admin, gw: web::Data<Gateway>, Body(body): Body) -> Result<HttpResponse, GatewayError> {
    let team = find(&gw, &required(&body, "team_id")?)?;
    let team = save(&gw, merged(&team, &body, &fields())?).await?;
    Ok(HttpResponse::Ok().json(json!({"team_id": team.team_id, "data": team_json(&gw, &team)})))
}

#[derive(Deserialize)]
pub struct DeleteBody {
    team_ids: Vec<String>,
}

/// Deletes teams and their keys.
pub async fn delete(Admin(_): Admin, gw: web::Data<Gateway>, Body(body): Body) -> Result<HttpResponse, GatewayError> {
    let body: DeleteBody = typed(Value::Object(body))?;
    for id in &body.team_ids {
        find(&gw, id)?;
    }
    for id in &body.team_ids {
        for k in gw.auth.table.keys_where(|k| k.team_id.as_deref() == Some(id)) {
            gw.keys.delete(&EntityId::Key(k.token.clone())).await?;
        }
        gw.keys.delete(&EntityId::Team(id.clone())).await?;
        gw.budgets.ledger.forget(&Account::Team(id.clone()));
    }
    Ok(HttpResponse::Ok().json(json!({"deleted_teams": body.team_ids})))
}

#[derive(Deserialize)]
pub struct InfoQuery {
    team_id: String,
}

pub async fn info(
    Viewer(_): Viewer,
    gw: web::Data<Gateway>,
    q: web::Query<InfoQuery>,
) -> Result<HttpResponse, GatewayError> {
    let team = find(&gw, &q.team_id)?;
    let keys: Vec<Value> = gw
        .auth
        .table
        .keys_where(|k| k.team_id.as_deref() == Some(&team.team_id))
        .iter()
        .map(|k| key_json(&gw, k))
        .collect();
    let memberships: Vec<Value> = team
        .members_with_roles
        .iter()
        .filter_map(|m| {
            let user = m.user_id.clone()?;
            let account = Account::TeamMember(team.team_id.clone(), user.clone());
            let limits = Limits {
                max_budget: m.max_budget_in_team.or(team.team_member_budget),
                budget_duration: team.limits.budget_duration.clone(),
                ..Limits::default()
            };
            let (spent, _) = spend(&gw, &account, &limits, team.spend_start);
            Some(json!({
                "user_id": user,
                "team_id": team.team_id,
                "spend": spent,
                "litellm_budget_table": {"max_budget": limits.max_budget, "tpm_limit": m.tpm_limit, "rpm_limit": m.rpm_limit},
            }))
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "team_id": team.team_id,
        "team_info": team_json(&gw, &team),
        "keys": keys,
        "team_memberships": memberships,
    })))
}

#[derive(Deserialize)]
pub struct ListQuery {
    user_id: Option<String>,
}

pub async fn list(
    Viewer(_): Viewer,
    gw: web::Data<Gateway>,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, GatewayError> {
    let teams: Vec<Value> = gw
        .auth
        .table
        .teams()
        .iter()
        .filter(|t| q.user_id.as_ref().is_none_or(|u| t.member(u).is_some()))
        .map(|t| team_json(&gw, t))
        .collect();
    Ok(HttpResponse::Ok().json(teams))
}

/// The member a body names (`user_id` or `user_email`).
fn member_index(team: &TeamRecord, body: &Map<String, Value>) -> Result<usize, GatewayError> {
    let user_id = field::<String>(body, "user_id")?;
    let email = field::<String>(body, "user_email")?;
    if user_id.is_none() && email.is_none() {
        return Err(bad("Pass `user_id` or `user_email`"));
    }
    team.members_with_roles
        .iter()
        .position(|m| (user_id.is_some() && m.user_id == user_id) || (email.is_some() && m.user_email == email))
        .ok_or_else(|| not_found(format!("Member not found in team {}", team.team_id)))
}

pub async fn member_add(
    Admin(_): Admin,
    gw: web::Data<Gateway>,
    Body(body): Body,
) -> Result<HttpResponse, GatewayError> {
    let mut team = find(&gw, &required(&body, "team_id")?)?;
    let members: Vec<Member> = match body.get("member") {
        Some(Value::Array(list)) => typed(Value::Array(list.clone()))?,
        Some(one @ Value::Object(_)) => vec![typed(one.clone())?],
        _ => return Err(bad("Pass `member`: {\"role\": \"user\", \"user_id\": ...} or a list of them")),
    };
    let budget = field::<f64>(&body, "max_budget_in_team")?;
    for mut m in members {
        if m.user_id.is_some() && team.members_with_roles.iter().any(|x| x.user_id == m.user_id) {
            return Err(bad(format!("User={} already in team={}", m.user_id.unwrap_or_default(), team.team_id)));
        }
        m.max_budget_in_team = m.max_budget_in_team.or(budget);
        team.members_with_roles.push(m);
    }
    let team = save(&gw, team).await?;
    Ok(HttpResponse::Ok().json(team_json(&gw, &team)))
}

pub async fn member_update(
    Admin(_): Admin,
    gw: web::Data<Gateway>,
    Body(body): Body,
) -> Result<HttpResponse, GatewayError> {
    let mut team = find(&gw, &required(&body, "team_id")?)?;
    let i = member_index(&team, &body)?;
    let member = merged(&team.members_with_roles[i], &body, &["role", "max_budget_in_team", "tpm_limit", "rpm_limit"])?;
    if let Some(b) = member.max_budget_in_team {
        validate_limits(&Limits { max_budget: Some(b), ..Limits::default() })?;
    }
    team.members_with_roles[i] = member.clone();
    let team = save(&gw, team).await?;
    Ok(HttpResponse::Ok().json(with(&member, &[("team_id", json!(team.team_id))])))
}

pub async fn member_delete(
    Admin(_): Admin,
    gw: web::Data<Gateway>,
    Body(body): Body,
) -> Result<HttpResponse, GatewayError> {
    let mut team = find(&gw, &required(&body, "team_id")?)?;
    let i = member_index(&team, &body)?;
    team.members_with_roles.remove(i);
    let team = save(&gw, team).await?;
    Ok(HttpResponse::Ok().json(team_json(&gw, &team)))
}

async fn set_blocked(gw: &Gateway, body: Map<String, Value>, blocked: bool) -> Result<HttpResponse, GatewayError> {
    let mut team = find(gw, &required(&body, "team_id")?)?;
    team.blocked = blocked;
    let team = save(gw, team).await?;
    Ok(HttpResponse::Ok().json(team_json(gw, &team)))
}

pub async fn block(Admin(_): Admin, gw: web::Data<Gateway>, Body(body): Body) -> Result<HttpResponse, GatewayError> {
    set_blocked(&gw, body, true).await
}

pub async fn unblock(Admin(_): Admin, gw: web::Data<Gateway>, Body(body): Body) -> Result<HttpResponse, GatewayError> {
    set_blocked(&gw, body, false).await
}
