//! CORS, as LiteLLM's proxy answers browsers: any origin by default (or the configured list),
//! credentials allowed, every method and requested header, and the `x-litellm-*` headers
//! readable. A request without an `Origin` header (every non-browser client) costs one header
//! lookup.

use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::HttpResponse;

/// Response headers a browser script may read (with credentials, `*` is not a wildcard).
const EXPOSED: &str = "x-litellm-call-id, x-litellm-model-id, x-litellm-model-group, x-litellm-model-api-base, \
x-litellm-response-cost, x-litellm-response-duration-ms, x-litellm-overhead-duration-ms, \
x-litellm-attempted-retries, x-litellm-attempted-fallbacks, x-litellm-max-fallbacks, x-litellm-version, retry-after";

/// Which origins may call.
#[derive(Debug, Clone)]
pub struct CorsPolicy {
    any: bool,
    origins: Arc<[String]>,
}

impl CorsPolicy {
    /// `*` among `origins` allows any.
    pub fn new(origins: &[String]) -> Self {
        Self { any: origins.iter().any(|o| o == "*"), origins: origins.iter().filter(|o| *o != "*").cloned().collect() }
    }

    fn allows(&self, origin: &[u8]) -> bool {
        self.any || self.origins.iter().any(|o| o.as_bytes() == origin)
    }
}

/// Answers preflights and marks the answers to allowed origins.
pub async fn middleware(
    policy: CorsPolicy,
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let Some(origin) = req.headers().get(header::ORIGIN).cloned() else {
        return next.call(req).await.map(ServiceResponse::map_into_left_body);
    };
    let allowed = policy.allows(origin.as_bytes());
    let preflight =
        req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let mut resp = HttpResponse::Ok().finish();
        if allowed {
            let headers = resp.headers_mut();
            allow_origin(headers, origin);
            let method = req.headers().get(header::ACCESS_CONTROL_REQUEST_METHOD).cloned();
            headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, method.unwrap_or(HeaderValue::from_static("*")));
            if let Some(requested) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned() {
                headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested);
            }
            headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("3600"));
        }
        return Ok(req.into_response(resp).map_into_right_body());
    }
    let mut resp = next.call(req).await?;
    if allowed {
        let headers = resp.headers_mut();
        allow_origin(headers, origin);
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSED));
    }
    Ok(resp.map_into_left_body())
}

/// The request's own origin is echoed (what a credentialed request needs, even when any origin
/// is allowed), so caches must key on it.
fn allow_origin(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}
