//! Thin actix-web handlers, one file per endpoint family; [`configure`] mounts them all, each
//! with and without `/v1` as LiteLLM does.

pub mod admin;
mod admission;
pub mod cors;
mod health;
mod models;
mod proxy;
pub mod record;
pub mod relay;
mod spend;
pub use spend::SpendSource;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::auth::{Auth, KeyStore};
use crate::budget::follow::Following;
use crate::budget::Budgets;
use crate::config::GeneralSettings;
use crate::consumers::InProcess;
use crate::events::EventSink;
use crate::limits::Limiter;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use bytes::BytesMut;
use futures_util::StreamExt;

use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::router::RouterHandle;

/// Everything a handler needs, shared by all workers.
pub struct Gateway {
    pub router: RouterHandle,
    pub metrics: Arc<Metrics>,
    /// Where calls' metrics and events go.
    pub recorder: record::Recorder,
    /// The master key's hash and the key table: who is calling.
    pub auth: Auth,
    /// Writes to the key table (through the log).
    pub keys: Arc<KeyStore>,
    pub budgets: Arc<Budgets>,
    pub limiter: Arc<Limiter>,
    /// Other instances' calls, counted from the event log (none with the event log off).
    pub following: Option<Arc<Following>>,
    /// The consumers this process runs (embedded log): as long as the gateway's handlers do.
    pub consumers: InProcess,
    /// Where the spend endpoints read: ClickHouse, or the in-process rollups.
    pub spend: Option<SpendSource>,
    pub max_request_size: usize,
    /// The longest a client may take to send its request body once its headers are in.
    pub body_timeout: Duration,
    pub started_at: SystemTime,
}

/// Keys, budgets and limits, as the gateway is given them.
pub struct Accounts {
    pub auth: Auth,
    pub keys: Arc<KeyStore>,
    pub budgets: Arc<Budgets>,
    pub limiter: Arc<Limiter>,
    pub following: Option<Arc<Following>>,
    pub consumers: InProcess,
    pub spend: Option<SpendSource>,
}

impl Gateway {
    pub fn new(
        router: RouterHandle,
        metrics: Arc<Metrics>,
        events: EventSink,
        general: &GeneralSettings,
        accounts: Accounts,
        body_timeout: Duration,
    ) -> Self {
        let Accounts { auth, keys, budgets, limiter, following, consumers, spend } = accounts;
        Self {
            router,
            recorder: record::Recorder {
                metrics: metrics.clone(),
                events,
                store_prompts: general.store_prompts_in_spend_logs,
            },
            metrics,
            auth,
            keys,
            budgets,
            limiter,
            following,
            consumers,
            spend,
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
    admin_routes(cfg);
    get(cfg, "/spend/logs".into(), web::get().to(spend::logs));
    get(cfg, "/global/spend".into(), web::get().to(spend::global_spend));
    get(cfg, "/global/spend/report".into(), web::get().to(spend::global_spend_report));
    get(cfg, "/user/daily/activity".into(), web::get().to(spend::user_daily_activity));
    get(cfg, "/team/daily/activity".into(), web::get().to(spend::team_daily_activity));
    get(cfg, "/tag/daily/activity".into(), web::get().to(spend::tag_daily_activity));
    get(cfg, "/health/liveliness".into(), web::get().to(health::liveliness));
    get(cfg, "/health/liveness".into(), web::get().to(health::liveliness));
    get(cfg, "/health/readiness".into(), web::get().to(health::readiness));
    get(cfg, "/health".into(), web::get().to(health::health));
    get(cfg, "/metrics".into(), web::get().to(health::metrics));
    get(cfg, "/metrics/".into(), web::get().to(health::metrics));
    get(cfg, "/".into(), web::get().to(health::liveliness));
}

/// LiteLLM's key management routes (no `/v1` variants, as in LiteLLM).
fn admin_routes(cfg: &mut web::ServiceConfig) {
    use admin::{customers, keys, teams, users};
    post(cfg, "/key/generate".into(), web::post().to(keys::generate));
    post(cfg, "/key/update".into(), web::post().to(keys::update));
    post(cfg, "/key/delete".into(), web::post().to(keys::delete));
    get(cfg, "/key/info".into(), web::get().to(keys::info));
    get(cfg, "/key/list".into(), web::get().to(keys::list));
    post(cfg, "/key/block".into(), web::post().to(keys::block));
    post(cfg, "/key/unblock".into(), web::post().to(keys::unblock));
    post(cfg, "/key/regenerate".into(), web::post().to(keys::regenerate_named));
    post(cfg, "/key/{key}/regenerate".into(), web::post().to(keys::regenerate));
    post(cfg, "/key/{key}/reset_spend".into(), web::post().to(keys::reset_spend));
    post(cfg, "/team/new".into(), web::post().to(teams::new));
    post(cfg, "/team/update".into(), web::post().to(teams::update));
    post(cfg, "/team/delete".into(), web::post().to(teams::delete));
    get(cfg, "/team/info".into(), web::get().to(teams::info));
    get(cfg, "/team/list".into(), web::get().to(teams::list));
    post(cfg, "/team/member_add".into(), web::post().to(teams::member_add));
    post(cfg, "/team/member_update".into(), web::post().to(teams::member_update));
    post(cfg, "/team/member_delete".into(), web::post().to(teams::member_delete));
    post(cfg, "/team/block".into(), web::post().to(teams::block));
    post(cfg, "/team/unblock".into(), web::post().to(teams::unblock));
    post(cfg, "/user/new".into(), web::post().to(users::new));
    post(cfg, "/user/update".into(), web::post().to(users::update));
    post(cfg, "/user/delete".into(), web::post().to(users::delete));
    get(cfg, "/user/info".into(), web::get().to(users::info));
    get(cfg, "/user/list".into(), web::get().to(users::list));
    for prefix in ["/customer", "/end_user"] {
        post(cfg, format!("{prefix}/new"), web::post().to(customers::new));
        post(cfg, format!("{prefix}/update"), web::post().to(customers::update));
        post(cfg, format!("{prefix}/delete"), web::post().to(customers::delete));
        get(cfg, format!("{prefix}/info"), web::get().to(customers::info));
        get(cfg, format!("{prefix}/list"), web::get().to(customers::list));
        post(cfg, format!("{prefix}/block"), web::post().to(customers::block));
        post(cfg, format!("{prefix}/unblock"), web::post().to(customers::unblock));
    }
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

/// A query string that does not fit its handler is a 400 with the OpenAI error body.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default()
        .error_handler(|e, _| GatewayError::BadRequest(format!("Invalid query string: {e}")).into())
}

/// So is a path parameter that does not fit.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|e, _| GatewayError::BadRequest(format!("Invalid path: {e}")).into())
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
