//! `GET /health/liveliness`, `/health/readiness`, `/health` (calls every deployment), `/metrics`.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::future::join_all;
use serde_json::{json, Map, Value};

use super::{auth, Gateway};
use crate::config::Mode;
use crate::deployment::DeploymentHandle;
use crate::error::GatewayError;
use crate::providers::{self, Endpoint};

/// The longest a health check waits for one deployment.
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn liveliness() -> HttpResponse {
    HttpResponse::Ok().json("I'm alive!")
}

pub async fn readiness(gw: web::Data<Gateway>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "status": "connected",
        "db": "Not connected",
        "cache": null,
        "litellm_version": env!("CARGO_PKG_VERSION"),
        "success_callbacks": [],
        "model_groups": gw.router.table().group_names().len(),
    }))
}

pub async fn metrics(gw: web::Data<Gateway>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(gw.metrics.render())
}

/// Calls every deployment with a one-token request (LiteLLM's shape of answer).
pub async fn health(
    req: HttpRequest,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, GatewayError> {
    auth::authorize(&req, &gw)?;
    let table = gw.router.table();
    let deployments: Vec<&DeploymentHandle> = table.deployments().collect();
    let results = join_all(deployments.iter().map(|d| check(&gw, d))).await;
    let (mut healthy, mut unhealthy) = (Vec::new(), Vec::new());
    for (d, result) in deployments.iter().zip(results) {
        let mut entry = Map::new();
        entry.insert("model".into(), json!(d.config().litellm_model));
        entry.insert("model_name".into(), json!(d.config().model_name));
        entry.insert("model_id".into(), json!(d.id()));
        entry.insert("api_base".into(), json!(d.config().api_base));
        match result {
            Ok(()) => healthy.push(Value::Object(entry)),
            Err(error) => {
                entry.insert("error".into(), json!(error));
                unhealthy.push(Value::Object(entry));
            }
        }
    }
    Ok(HttpResponse::Ok().json(json!({
        "healthy_endpoints": healthy,
        "unhealthy_endpoints": unhealthy,
        "healthy_count": healthy.len(),
        "unhealthy_count": unhealthy.len(),
    })))
}

/// One health check: a tiny real request, unless the deployment answers with `mock_response`.
async fn check(gw: &Gateway, d: &DeploymentHandle) -> Result<(), String> {
    let cfg = d.config();
    if let Some(mock) = &cfg.mock_response {
        return match crate::openai::mock::mock_failure(mock) {
            Some(failure) => Err(failure.message),
            None => Ok(()),
        };
    }
    let (endpoint, body) = match cfg.mode {
        Mode::Embedding => (Endpoint::Embeddings, json!({"input": ["ping"]})),
        Mode::Completion => (
            Endpoint::Completions,
            json!({"prompt": "ping", "max_tokens": 1}),
        ),
        Mode::Chat | Mode::Responses => (
            Endpoint::ChatCompletions,
            json!({"messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}),
        ),
        other => {
            return Err(format!(
                "health checks for mode {} are not supported",
                other.as_str()
            ))
        }
    };
    let Value::Object(body) = body else {
        return Err("internal: health body".into());
    };
    let timeout = gw
        .router
        .timeout_for(d, false, None)
        .min(HEALTH_CHECK_TIMEOUT);
    providers::call(
        gw.router.client(),
        cfg,
        endpoint,
        &body,
        &[],
        false,
        timeout,
    )
    .await
    .map(|_| ())
    .map_err(|f| format!("{} ({})", f.message, f.status()))
}
