//! Thin actix-web handlers, one file per endpoint family; [`configure`] mounts them all, each
//! with and without `/v1` as LiteLLM does.

mod auth;
pub mod cors;
mod health;
mod models;
mod proxy;
pub mod record;
pub mod relay;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use bytes::BytesMut;
use futures_util::StreamExt;
use secrecy::ExposeSecret;

use crate::config::GeneralSettings;
use crate::events::EventSink;

use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::router::RouterHandle;

/// Everything a handler needs, shared by all workers.
pub struct Gateway {
    pub router: RouterHandle,
    pub metrics: Arc<Metrics>,
    /// Where calls' metrics and events go.
    pub recorder: record::Recorder,
    /// The master key's SHA-256; requests are compared by hash, so timing reveals nothing.
    master_key: Option<auth::MasterKey>,
    pub max_request_size: usize,
    /// The longest a client may take to send its request body once its headers are in.
    pub body_timeout: Duration,
    pub started_at: SystemTime,
}

impl Gateway {
    pub fn new(
        router: RouterHandle,
        metrics: Arc<Metrics>,
        events: EventSink,
        general: &GeneralSettings,
        body_timeout: Duration,
    ) -> Self {
        Self {
            router,
            recorder: record::Recorder {
                metrics: metrics.clone(),
                events,
                store_prompts: general.store_prompts_in_spend_logs,
            },
            metrics,
            master_key: general.master_key.as_ref().map(|k| auth::MasterKey::new(k.expose_secret())),
            max_request_size: general.max_request_size_bytes,
            body_timeout,
            started_at: SystemTime::now(),
        }
    }
}

/// Mounts every route. A path called with a method it does not serve is a 405 with the OpenAI
/// error body. Paths are matched in the order mounted, and a path with a parameter is matched
/// with a regex: the hot static paths come first, so that they never pay for one. One resource
/// per path: a resource with several paths is matched with a regex set.
pub fn configure(cfg: &mut web::ServiceConfig) {
    for prefix in ["", "/v1"] {
        post(cfg, format!("{prefix}/chat/completions"), web::post().to(proxy::chat_completions));
        post(cfg, format!("{prefix}/completions"), web::post().to(proxy::completions));
        post(cfg, format!("{prefix}/embeddings"), web::post().to(proxy::embeddings));
    }
    for prefix in ["", "/v1"] {
        get(cfg, format!("{prefix}/models"), web::get().to(models::list));
        get(cfg, format!("{prefix}/model/info"), web::get().to(models::model_info));
        get(cfg, format!("{prefix}/model_group/info"), web::get().to(models::model_group_info));
    }
    for prefix in ["", "/v1"] {
        // OpenAI's engine-style path, which some clients still use: the path names the model.
        post(cfg, format!("{prefix}/engines/{{model}}/chat/completions"), web::post().to(proxy::chat_completions));
        get(cfg, format!("{prefix}/models/{{model:.+}}"), web::get().to(models::retrieve));
    }
    get(cfg, "/health/liveliness".into(), web::get().to(health::liveliness));
    get(cfg, "/health/liveness".into(), web::get().to(health::liveliness));
    get(cfg, "/health/readiness".into(), web::get().to(health::readiness));
    get(cfg, "/health".into(), web::get().to(health::health));
    get(cfg, "/metrics".into(), web::get().to(health::metrics));
    get(cfg, "/metrics/".into(), web::get().to(health::metrics));
    get(cfg, "/".into(), web::get().to(health::liveliness));
}

fn post(cfg: &mut web::ServiceConfig, path: String, route: actix_web::Route) {
    cfg.service(web::resource(path).route(route).default_service(web::to(method_not_allowed)));
}

fn get(cfg: &mut web::ServiceConfig, path: String, route: actix_web::Route) {
    // HEAD is answered wherever GET is, as HTTP expects.
    cfg.service(
        web::resource(path)
            .route(route)
            .route(web::head().to(HttpResponse::Ok))
            .default_service(web::to(method_not_allowed)),
    );
}

/// Unknown paths get the OpenAI error body too.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    GatewayError::NotFound(format!("{} {} is not an endpoint of this gateway", req.method(), req.path()))
        .error_response()
}

async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    GatewayError::MethodNotAllowed(format!("Method {} is not allowed on {}", req.method(), req.path())).error_response()
}

/// Reads a request body, refusing more than `limit` bytes with 413 before buffering it all, and
/// a body that takes longer than `timeout` to arrive with 408 (a body trickled a byte at a time
/// would otherwise hold its connection and buffer forever).
pub async fn read_body(payload: web::Payload, limit: usize, timeout: Duration) -> Result<bytes::Bytes, GatewayError> {
    match tokio::time::timeout(timeout, read_all(payload, limit)).await {
        Ok(result) => result,
        Err(_) => Err(GatewayError::RequestTimeout(format!(
            "The request body did not arrive within {}s",
            timeout.as_secs_f64()
        ))),
    }
}

async fn read_all(mut payload: web::Payload, limit: usize) -> Result<bytes::Bytes, GatewayError> {
    let limit_mb = (limit as u64).div_ceil(1024 * 1024);
    let mut buf = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| match e {
            actix_web::error::PayloadError::Overflow => GatewayError::PayloadTooLarge { limit_mb },
            other => GatewayError::BadRequest(format!("Could not read the request body: {other}")),
        })?;
        if buf.len().saturating_add(chunk.len()) > limit {
            return Err(GatewayError::PayloadTooLarge { limit_mb });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}
