//! `GET /models`, `/model/info`, `/model_group/info`.

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use super::admin::Authed;
use super::Gateway;
use crate::deployment::DeploymentHandle;
use crate::error::GatewayError;

/// OpenAI's model list: one entry per model group and visible alias.
/// A key limited to some models sees only those.
pub async fn list(Authed(caller): Authed, gw: web::Data<Gateway>) -> Result<HttpResponse, GatewayError> {
    let table = gw.router.table();
    let mut names: Vec<&str> = table.group_names().iter().map(String::as_str).collect();
    let mut aliases: Vec<&str> = table.visible_aliases().collect();
    aliases.sort_unstable();
    names.extend(aliases);
    names.retain(|name| caller.check_model(name, table.resolve(name)).is_ok());
    let data: Vec<Value> = names.into_iter().map(|id| model_object(&gw, id)).collect();
    Ok(HttpResponse::Ok().json(json!({"object": "list", "data": data})))
}

/// `GET /models/{model}` (the SDKs' `models.retrieve`): a model group or alias, else 404.
pub async fn retrieve(
    Authed(_): Authed,
    model: web::Path<String>,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, GatewayError> {
    let model = model.into_inner();
    match gw.router.table().resolve(&model) {
        Some(_) => Ok(HttpResponse::Ok().json(model_object(&gw, &model))),
        None => Err(GatewayError::NotFound(format!("The model `{model}` does not exist"))),
    }
}

fn model_object(gw: &Gateway, id: &str) -> Value {
    let created = gw.started_at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    json!({"id": id, "object": "model", "created": created, "owned_by": "openai"})
}

/// Every deployment, keys left out.
pub async fn model_info(Authed(_): Authed, gw: web::Data<Gateway>) -> Result<HttpResponse, GatewayError> {
    let table = gw.router.table();
    let data: Vec<Value> = table.deployments().map(deployment_info).collect();
    Ok(HttpResponse::Ok().json(json!({"data": data})))
}

fn deployment_info(d: &DeploymentHandle) -> Value {
    let c = d.config();
    let price = d.price();
    json!({
        "model_name": c.model_name,
        "litellm_params": {
            "model": c.litellm_model,
            "api_base": c.api_base,
            "api_version": c.api_version,
            "rpm": c.rpm,
            "tpm": c.tpm,
            "order": c.order,
            "weight": c.weight,
            "timeout": c.timeout.map(|t| t.as_secs_f64()),
            "stream_timeout": c.stream_timeout.map(|t| t.as_secs_f64()),
            "max_retries": c.max_retries,
            "max_parallel_requests": c.max_parallel_requests,
            "mock_response": c.mock_response,
        },
        "model_info": {
            "id": c.id,
            "mode": c.mode.as_str(),
            "base_model": c.base_model,
            "litellm_provider": c.provider.name,
            "max_input_tokens": d.max_input_tokens(),
            "max_output_tokens": c.max_output_tokens,
            "input_cost_per_token": price.map(|p| p.input),
            "output_cost_per_token": price.map(|p| p.output),
            "cache_read_input_token_cost": price.and_then(|p| p.cache_read),
            "cache_creation_input_token_cost": price.and_then(|p| p.cache_write),
            "output_cost_per_reasoning_token": price.and_then(|p| p.reasoning),
        },
    })
}

/// One entry per model group, aggregated over its deployments (LiteLLM's shape).
pub async fn model_group_info(Authed(_): Authed, gw: web::Data<Gateway>) -> Result<HttpResponse, GatewayError> {
    let table = gw.router.table();
    let data: Vec<Value> = table
        .group_names()
        .iter()
        .filter_map(|name| table.group(name).map(|ds| (name, ds)))
        .map(|(name, ds)| {
            let mut providers: Vec<&str> = ds.iter().map(|d| d.config().provider.name).collect();
            providers.sort_unstable();
            providers.dedup();
            let sum = |f: fn(&DeploymentHandle) -> Option<u64>| {
                ds.iter().map(f).try_fold(0u64, |acc, v| v.map(|v| acc.saturating_add(v)))
            };
            let max_of = |f: fn(&DeploymentHandle) -> Option<u64>| ds.iter().filter_map(f).max();
            let min_price = |f: fn(&DeploymentHandle) -> Option<f64>| {
                ds.iter().filter_map(f).fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.min(v))))
            };
            json!({
                "model_group": name,
                "providers": providers,
                "mode": ds.first().map(|d| d.config().mode.as_str()),
                "max_input_tokens": max_of(|d| d.max_input_tokens()),
                "max_output_tokens": max_of(|d| d.config().max_output_tokens),
                "input_cost_per_token": min_price(|d| d.price().map(|p| p.input)),
                "output_cost_per_token": min_price(|d| d.price().map(|p| p.output)),
                "tpm": sum(|d| d.config().tpm),
                "rpm": sum(|d| d.config().rpm),
                "num_deployments": ds.len(),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"data": data})))
}
