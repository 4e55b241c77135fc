//! `GET /health/liveliness`, `/health/readiness`, `/health` (calls every deployment), `/metrics`.

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use serde_json::{json, Map, Value};

use super::admin::Authed;
use super::Gateway;
use crate::error::GatewayError;

pub async fn liveliness() -> HttpResponse {
    HttpResponse::Ok().json("I'm alive!")
}

/// 503 until the key table is loaded and the spend history counted: an instance that
/// answered before would admit keys it does not know yet, or over budgets it has not summed.
pub async fn readiness(gw: web::Data<Gateway>) -> HttpResponse {
    let keys_loaded = gw.keys.ready();
    let spend_counted = gw.following.as_ref().is_none_or(|f| f.caught_up.load(std::sync::atomic::Ordering::Acquire));
    let ready = keys_loaded && spend_counted;
    let mut answer = if ready { HttpResponse::Ok() } else { HttpResponse::ServiceUnavailable() };
    answer.json(json!({
        "status": if ready { "connected" } else { "loading" },
        "keys": {"loaded": keys_loaded, "count": gw.auth.table.key_count()},
        "spend_history": {"counted": spend_counted},
        "db": "Not connected",
        "cache": null,
        "litellm_version": env!("CARGO_PKG_VERSION"),
        "success_callbacks": [],
        "model_groups": gw.router.table().group_names().len(),
        "event_log": gw.recorder.events.state(),
    }))
}

pub async fn metrics(gw: web::Data<Gateway>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(gw.metrics.render())
}

/// Every deployment's health (LiteLLM's shape): the latest background check when
/// `background_health_checks` is on, else a one-token request to each deployment now.
pub async fn health(Authed(_): Authed, gw: web::Data<Gateway>) -> Result<HttpResponse, GatewayError> {
    let report = match gw.router.last_health() {
        Some(report) => report,
        None => Arc::new(gw.router.check_all().await),
    };
    let (mut healthy, mut unhealthy) = (Vec::new(), Vec::new());
    for (d, error) in &report.results {
        let mut entry = Map::new();
        entry.insert("model".into(), json!(d.config().litellm_model));
        entry.insert("model_name".into(), json!(d.config().model_name));
        entry.insert("model_id".into(), json!(d.id()));
        entry.insert("api_base".into(), json!(d.config().api_base));
        match error {
            None => healthy.push(Value::Object(entry)),
            Some(error) => {
                entry.insert("error".into(), json!(error));
                unhealthy.push(Value::Object(entry));
            }
        }
    }
    let checked_at = humantime::format_rfc3339_seconds(report.checked_at).to_string();
    Ok(HttpResponse::Ok().json(json!({
        "healthy_endpoints": healthy,
        "unhealthy_endpoints": unhealthy,
        "healthy_count": healthy.len(),
        "unhealthy_count": unhealthy.len(),
        "checked_at": checked_at,
    })))
}
