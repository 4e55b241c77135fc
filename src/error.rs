//! The one error type every handler returns, rendered as OpenAI's error body.
//!
//! Every failure a client can see is a [`GatewayError`]; its [`ResponseError`] impl is the only
//! place that turns errors into HTTP, so the body is always
//! `{"error":{"message","type","param","code"}}` with `code` the status as a string.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use bytes::Bytes;
use serde_json::json;

/// What went wrong, in the words the client will read.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{message}")]
    InvalidParam { message: String, param: String },
    /// A check of the caller failed: authentication (401), model access (401), budget (429,
    /// `budget_exceeded`), or a bad management request; `kind` is LiteLLM's error type.
    #[error("{message}")]
    Denied { status: u16, kind: &'static str, message: String },
    /// A rate limit of the caller's (LiteLLM's v3 limiter): 429 with `retry-after`,
    /// `rate_limit_type` and `reset_at`.
    #[error("{message}")]
    RateLimited { message: String, retry_after: u64, limit_type: &'static str, reset_at: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The client did not send its whole request body in time.
    #[error("{0}")]
    RequestTimeout(String),
    #[error("Request body is larger than max_request_size_mb ({limit_mb} MB)")]
    PayloadTooLarge { limit_mb: u64 },
    /// Every deployment is cooling down or at its limits; `retry_after` is in seconds.
    #[error("{message}")]
    NoDeploymentsAvailable { message: String, retry_after: Option<u64> },
    #[error("{0}")]
    ContextWindowExceeded(String),
    /// An upstream answered with an error; its status and body are passed through.
    #[error("{message}")]
    Upstream {
        status: u16,
        message: String,
        /// The upstream's own body when it was an OpenAI-style error object.
        body: Option<Bytes>,
        retry_after: Option<u64>,
    },
    /// Every attempt failed before an upstream answered (timeouts, connection errors,
    /// malformed upstream responses); `status` is 408, 502 or 504.
    #[error("{message}")]
    UpstreamUnreachable { status: u16, message: String },
}

impl GatewayError {
    /// The OpenAI `type` field; LiteLLM's values where it has one.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::BadRequest(_) | Self::InvalidParam { .. } | Self::PayloadTooLarge { .. } => "invalid_request_error",
            Self::ContextWindowExceeded(_) => "invalid_request_error",
            Self::Denied { kind, .. } => kind,
            Self::RateLimited { .. } => "rate_limit_error",
            Self::NotFound(_) => "not_found_error",
            Self::MethodNotAllowed(_) => "invalid_request_error",
            Self::RequestTimeout(_) => "timeout_error",
            Self::NoDeploymentsAvailable { .. } => "rate_limit_error",
            Self::Upstream { status, .. } => type_for_status(*status),
            Self::UpstreamUnreachable { status, .. } => type_for_status(*status),
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            Self::InvalidParam { param, .. } => Some(param),
            _ => None,
        }
    }

    /// A low-cardinality label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::BadRequest(_) | Self::InvalidParam { .. } => "BadRequestError",
            Self::Denied { status: 429, .. } => "BudgetExceededError",
            Self::Denied { status: 401 | 403, .. } => "AuthenticationError",
            Self::Denied { .. } => "BadRequestError",
            Self::RateLimited { .. } => "RateLimitError",
            Self::NotFound(_) => "NotFoundError",
            Self::MethodNotAllowed(_) => "MethodNotAllowed",
            Self::RequestTimeout(_) => "Timeout",
            Self::PayloadTooLarge { .. } => "PayloadTooLarge",
            Self::NoDeploymentsAvailable { .. } => "RateLimitError",
            Self::ContextWindowExceeded(_) => "ContextWindowExceededError",
            Self::Upstream { .. } => "UpstreamError",
            Self::UpstreamUnreachable { status: 408, .. } => "Timeout",
            Self::UpstreamUnreachable { .. } => "APIConnectionError",
        }
    }
}

/// The OpenAI error `type` for an HTTP status.
pub fn type_for_status(status: u16) -> &'static str {
    match status {
        400 | 405 | 413 | 422 => "invalid_request_error",
        401 => "auth_error",
        403 => "permission_error",
        404 => "not_found_error",
        408 | 504 => "timeout_error",
        429 => "rate_limit_error",
        503 => "service_unavailable",
        _ => "internal_server_error",
    }
}

/// The OpenAI error body, used by every error answer (and by errors sent inside a stream).
pub fn error_body(message: &str, error_type: &str, param: Option<&str>, status: u16) -> serde_json::Value {
    json!({"error": {"message": message, "type": error_type, "param": param, "code": status.to_string()}})
}

impl ResponseError for GatewayError {
    fn status_code(&self) -> StatusCode {
        let code = match self {
            Self::BadRequest(_) | Self::InvalidParam { .. } | Self::ContextWindowExceeded(_) => 400,
            Self::Denied { status, .. } => *status,
            Self::RateLimited { .. } => 429,
            Self::NotFound(_) => 404,
            Self::MethodNotAllowed(_) => 405,
            Self::RequestTimeout(_) => 408,
            Self::PayloadTooLarge { .. } => 413,
            Self::NoDeploymentsAvailable { .. } => 429,
            Self::Upstream { status, .. } | Self::UpstreamUnreachable { status, .. } => *status,
        };
        StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY)
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let mut builder = HttpResponse::build(status);
        builder.insert_header((header::CONTENT_TYPE, "application/json"));
        if let Self::Upstream { retry_after: Some(secs), .. }
        | Self::NoDeploymentsAvailable { retry_after: Some(secs), .. } = self
        {
            builder.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        if let Self::RateLimited { retry_after, limit_type, reset_at, .. } = self {
            builder.insert_header((header::RETRY_AFTER, retry_after.to_string()));
            builder.insert_header(("rate_limit_type", *limit_type));
            builder.insert_header(("reset_at", reset_at.as_str()));
        }
        // An upstream's own error keeps its type and param; `code` is always our status.
        let upstream = match self {
            Self::Upstream { body: Some(body), .. } => serde_json::from_slice::<serde_json::Value>(body).ok(),
            _ => None,
        };
        let upstream_field = |name: &str| upstream.as_ref().and_then(|v| v["error"][name].as_str()).map(str::to_string);
        let error_type = upstream_field("type").unwrap_or_else(|| self.error_type().to_string());
        let param = upstream_field("param").or_else(|| self.param().map(str::to_string));
        let body = error_body(&self.to_string(), &error_type, param.as_deref(), status.as_u16());
        builder.body(body.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    fn render(err: GatewayError) -> (u16, serde_json::Value) {
        let resp = err.error_response();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().try_into_bytes().unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[test]
    fn every_error_renders_the_openai_body_with_code_as_string() {
        let (status, body) =
            render(GatewayError::InvalidParam { message: "missing field `model`".into(), param: "model".into() });
        assert_eq!(status, 400);
        assert_eq!(body["error"]["code"], "400");
        assert_eq!(body["error"]["param"], "model");
        assert_eq!(body["error"]["type"], "invalid_request_error");

        let err =
            GatewayError::NoDeploymentsAvailable { message: "No deployments available".into(), retry_after: Some(3) };
        assert_eq!(err.error_response().headers().get("retry-after").unwrap(), "3");
        let (status, body) = render(err);
        assert_eq!(status, 429);
        assert_eq!(body["error"]["type"], "rate_limit_error");
        assert!(body["error"]["param"].is_null());
    }

    #[test]
    fn upstream_errors_keep_their_status_type_and_param_with_our_code() {
        let upstream = Bytes::from_static(
            br#"{"error":{"message":"bad","type":"invalid_request_error","param":"temperature","code":"x"}}"#,
        );
        let (status, body) = render(GatewayError::Upstream {
            status: 422,
            message: "bad (deployment a)".into(),
            body: Some(upstream),
            retry_after: None,
        });
        assert_eq!(status, 422);
        assert_eq!(body["error"]["message"], "bad (deployment a)");
        assert_eq!(body["error"]["param"], "temperature");
        assert_eq!(body["error"]["code"], "422");
    }
}
