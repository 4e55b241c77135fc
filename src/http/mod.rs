//! Thin actix-web handlers, one file per endpoint family; [`configure`] mounts them all, each
//! with and without `/v1` as LiteLLM does.

mod auth;
mod health;
mod models;
mod proxy;
pub mod record;
pub mod relay;

use std::sync::Arc;
use std::time::SystemTime;

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
    /// SHA-256 of the master key; requests are compared by hash, so timing reveals nothing.
    master_key_hash: Option<[u8; 32]>,
    pub max_request_size: usize,
    pub started_at: SystemTime,
}

impl Gateway {
    pub fn new(router: RouterHandle, metrics: Arc<Metrics>, events: EventSink, general: &GeneralSettings) -> Self {
        Self {
            router,
            recorder: record::Recorder {
                metrics: metrics.clone(),
                events,
                store_prompts: general.store_prompts_in_spend_logs,
            },
            metrics,
            master_key_hash: general.master_key.as_ref().map(|k| auth::hash(k.expose_secret())),
            max_request_size: general.max_request_size_bytes,
            started_at: SystemTime::now(),
        }
    }
}

/// Mounts every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    for prefix in ["", "/v1"] {
        cfg.route(&format!("{prefix}/chat/completions"), web::post().to(proxy::chat_completions))
            .route(&format!("{prefix}/completions"), web::post().to(proxy::completions))
            .route(&format!("{prefix}/embeddings"), web::post().to(proxy::embeddings))
            .route(&format!("{prefix}/models"), web::get().to(models::list))
            .route(&format!("{prefix}/model/info"), web::get().to(models::model_info))
            .route(&format!("{prefix}/model_group/info"), web::get().to(models::model_group_info));
        // OpenAI's engine-style path, which some clients still use.
        cfg.route(&format!("{prefix}/engines/{{model}}/chat/completions"), web::post().to(proxy::chat_completions));
    }
    cfg.route("/health/liveliness", web::get().to(health::liveliness))
        .route("/health/liveness", web::get().to(health::liveliness))
        .route("/health/readiness", web::get().to(health::readiness))
        .route("/health", web::get().to(health::health))
        .route("/metrics", web::get().to(health::metrics))
        .route("/", web::get().to(health::liveliness));
}

/// Unknown paths and methods get the OpenAI error body too.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    GatewayError::NotFound(format!("{} {} is not an endpoint of this gateway", req.method(), req.path()))
        .error_response()
}

/// Reads a request body, refusing more than `limit` bytes with 413 before buffering it all.
pub async fn read_body(mut payload: web::Payload, limit: usize) -> Result<bytes::Bytes, GatewayError> {
    let limit_mb = (limit as u64).div_ceil(1024 * 1024);
    let mut buf = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| match e {
            actix_web::error::PayloadError::Overflow => GatewayError::PayloadTooLarge { limit_mb },
            other => GatewayError::BadRequest(format!("Could not read the request body: {other}")),
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(GatewayError::PayloadTooLarge { limit_mb });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}
