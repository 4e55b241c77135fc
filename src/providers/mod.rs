//! Upstream APIs: one [`Provider`] adapter per wire format ([`Family`]). Which
//! `litellm_params.model` prefixes exist, their default bases and key variables, and which family
//! each speaks, is configuration ([`crate::config::providers`]).
//!
//! An adapter turns an OpenAI-shaped request into the upstream's HTTP request and the upstream's
//! answer back into OpenAI's shape. The OpenAI-compatible family ([`openai`]) passes bodies
//! through; the next adapters (Azure, Anthropic, Gemini, Bedrock) implement the same trait.

pub mod client;
pub mod openai;

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderValue};
use serde_json::Value;

use crate::config::providers::Family;
use crate::config::DeploymentConfig;
use crate::failure::{FailureKind, UpstreamFailure};
use crate::openai::request::RequestBody;
pub use crate::openai::Endpoint;

/// One upstream wire format.
pub trait Provider: Send + Sync + 'static {
    /// Adds the deployment's credentials to an upstream request's headers; an error says why
    /// they cannot be sent.
    fn authorize(&self, headers: &mut HeaderMap, d: &DeploymentConfig) -> Result<(), String>;

    /// The upstream request body for an OpenAI-shaped `body`, with `overrides` replacing (or
    /// adding) top-level keys. By default the body is the client's bytes with the upstream model
    /// name.
    fn encode_request(
        &self,
        _d: &DeploymentConfig,
        model: &str,
        body: &RequestBody,
        overrides: &[(&'static str, Value)],
    ) -> Result<Vec<u8>, serde_json::Error> {
        body.encode(model, overrides)
    }

    /// Rewrites a successful upstream body into OpenAI's shape; by default it already is.
    fn transform_response(&self, body: Bytes) -> Result<Bytes, UpstreamFailure> {
        Ok(body)
    }
}

/// The adapter for a wire format.
pub fn adapter(family: Family) -> &'static dyn Provider {
    match family {
        Family::OpenAi => &openai::OpenAi,
    }
}

/// An upstream's successful answer.
pub struct UpstreamReply {
    pub headers: HeaderMap,
    pub body: ReplyBody,
}

pub enum ReplyBody {
    Complete(Bytes),
    /// Server-sent events, as the upstream sends them.
    Stream(BoxStream<'static, Result<Bytes, UpstreamFailure>>),
}

/// One upstream call.
pub struct Call<'a> {
    pub deployment: &'a DeploymentConfig,
    /// The model named upstream (a wildcard deployment's depends on the request).
    pub model: &'a str,
    pub endpoint: Endpoint,
    pub body: &'a RequestBody,
    /// Top-level keys to set on the upstream body.
    pub overrides: &'a [(&'static str, Value)],
    pub stream: bool,
    /// Bounds the whole answer of a non-stream call, and the wait for a stream's headers (the
    /// stream then has its own idle timeout).
    pub timeout: Duration,
}

/// Sends one attempt.
pub async fn call(client: &client::Client, call: &Call<'_>) -> Result<UpstreamReply, UpstreamFailure> {
    let &Call { deployment: d, model, endpoint, body, overrides, stream, timeout } = call;
    // A credential from an unset environment variable: fail like the upstream would without it
    // (an authentication error: not retried, and the deployment cools down).
    if let Some(message) = &d.unresolved_env {
        return Err(UpstreamFailure::new(FailureKind::Status(401), message.clone()));
    }
    let adapter = adapter(d.provider.family);
    let payload = adapter
        .encode_request(d, model, body, overrides)
        .map_err(|e| UpstreamFailure::new(FailureKind::Malformed, e.to_string()))?;
    let mut headers = HeaderMap::with_capacity(8);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    adapter.authorize(&mut headers, d).map_err(|message| UpstreamFailure::new(FailureKind::Connection, message))?;
    let deadline = tokio::time::Instant::now() + timeout;
    let response = tokio::time::timeout_at(deadline, client.post(d.urls.get(endpoint), headers, payload.into()))
        .await
        .map_err(|_| timed_out(timeout))??;
    let client::Response { status, headers, body: response } = response;
    if !(200..300).contains(&status) {
        let retry_after = retry_after(&headers);
        let body =
            tokio::time::timeout_at(deadline, response.bytes()).await.ok().and_then(Result::ok).unwrap_or_default();
        return Err(UpstreamFailure {
            kind: FailureKind::Status(status),
            message: upstream_message(status, &body),
            body: serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .filter(|v| v.get("error").is_some())
                .map(|_| body),
            retry_after,
        });
    }
    if stream {
        if let Some(kind) = headers.get(CONTENT_TYPE).filter(|ct| !is_event_stream(ct.as_bytes())) {
            // A 200 that is not a stream (a proxy's error page, a JSON body) is a failed call.
            let kind = String::from_utf8_lossy(kind.as_bytes()).into_owned();
            let body =
                tokio::time::timeout_at(deadline, response.bytes()).await.ok().and_then(Result::ok).unwrap_or_default();
            return Err(UpstreamFailure::new(
                FailureKind::Malformed,
                format!(
                    "upstream answered a stream request with {kind} instead of server-sent events: {}",
                    upstream_message(status, &body)
                ),
            ));
        }
        return Ok(UpstreamReply { headers, body: ReplyBody::Stream(response.into_stream()) });
    }
    let bytes = tokio::time::timeout_at(deadline, response.bytes()).await.map_err(|_| timed_out(timeout))??;
    let bytes = adapter.transform_response(bytes)?;
    Ok(UpstreamReply { headers, body: ReplyBody::Complete(bytes) })
}

/// `text/event-stream`, with or without parameters.
fn is_event_stream(content_type: &[u8]) -> bool {
    content_type.len() >= 17 && content_type[..17].eq_ignore_ascii_case(b"text/event-stream")
}

fn timed_out(timeout: Duration) -> UpstreamFailure {
    UpstreamFailure::new(FailureKind::Timeout, format!("upstream did not answer within {:.1}s", timeout.as_secs_f64()))
}

/// The upstream's error message: `error.message` of an OpenAI error body, else the body text.
fn upstream_message(status: u16, body: &[u8]) -> String {
    let from_json = serde_json::from_slice::<serde_json::Value>(body).ok().and_then(|v| {
        let e = v.get("error")?;
        e.get("message").and_then(|m| m.as_str()).or_else(|| e.as_str()).map(str::to_string)
    });
    from_json.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        if text.is_empty() {
            format!("upstream answered {status}")
        } else {
            text.chars().take(500).collect()
        }
    })
}

/// `Retry-After` as seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs >= 0.0 && secs.is_finite()).then(|| Duration::from_secs_f64(secs.min(3600.0)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(std::time::SystemTime::now()).unwrap_or_default().min(Duration::from_secs(3600)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_retry_after_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        let later = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(30));
        h.insert("retry-after", later.parse().unwrap());
        let d = retry_after(&h).unwrap();
        assert!(d > Duration::from_secs(25) && d <= Duration::from_secs(30), "{d:?}");
    }

    #[test]
    fn error_messages_come_from_the_openai_error_body() {
        assert_eq!(upstream_message(400, br#"{"error":{"message":"bad thing"}}"#), "bad thing");
        assert_eq!(upstream_message(502, b""), "upstream answered 502");
        assert_eq!(upstream_message(500, b"oops"), "oops");
    }
}
