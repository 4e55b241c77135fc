//! Upstream APIs: one [`Provider`] adapter per wire format, and [`ProviderSpec`]s naming the
//! `litellm_params.model` prefixes each adapter serves.
//!
//! An adapter turns an OpenAI-shaped request into the upstream's HTTP request and the upstream's
//! answer back into OpenAI's shape. The OpenAI-compatible family ([`openai`]) passes bodies
//! through; the next adapters (Azure, Anthropic, Gemini, Bedrock) implement the same trait.

pub mod client;
pub mod openai;

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::config::DeploymentConfig;
use crate::failure::{FailureKind, UpstreamFailure};
use crate::openai::request::RequestBody;

/// The OpenAI endpoints the gateway proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
}

impl Endpoint {
    /// The path under the upstream's base URL.
    pub fn path(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/chat/completions",
            Self::Completions => "/completions",
            Self::Embeddings => "/embeddings",
        }
    }

    /// LiteLLM's `call_type` for this endpoint.
    pub fn call_type(self) -> &'static str {
        match self {
            Self::ChatCompletions => "acompletion",
            Self::Completions => "atext_completion",
            Self::Embeddings => "aembedding",
        }
    }

    pub fn supports_stream(self) -> bool {
        !matches!(self, Self::Embeddings)
    }
}

/// One upstream wire format.
pub trait Provider: Send + Sync + 'static {
    /// The upstream URL of `endpoint` under `api_base`; parsed once, when the config is read.
    fn endpoint_url(&self, api_base: &str, endpoint: Endpoint) -> String {
        format!("{}{}", api_base.trim_end_matches('/'), endpoint.path())
    }

    /// Adds the deployment's credentials to an upstream request.
    fn authorize(&self, request: reqwest::RequestBuilder, d: &DeploymentConfig) -> reqwest::RequestBuilder;

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

/// A `litellm_params.model` prefix and what serves it.
pub struct ProviderSpec {
    pub name: &'static str,
    pub default_api_base: Option<&'static str>,
    /// Environment variables holding the key when the config has none (LiteLLM's names).
    pub api_key_env: &'static [&'static str],
    pub api_base_env: &'static [&'static str],
    pub adapter: &'static dyn Provider,
}

impl std::fmt::Debug for ProviderSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// The spec for a provider prefix, if this build serves it.
pub fn spec(name: &str) -> Option<&'static ProviderSpec> {
    openai::SPECS.iter().find(|s| s.name == name)
}

/// Splits `groq/llama-3.1-8b` into (`groq`, `llama-3.1-8b`). A model without a known prefix is
/// OpenAI's, as in LiteLLM (`gpt-4o`, or `ft:gpt-4o:org::id`).
pub fn split_model(model: &str) -> (&str, &str) {
    match model.split_once('/') {
        Some((prefix, rest)) if is_provider_prefix(prefix) => (prefix, rest),
        _ => ("openai", model),
    }
}

/// Prefixes LiteLLM knows, served here or not, so `azure/x` is not mistaken for an OpenAI model
/// called `azure/x`.
fn is_provider_prefix(prefix: &str) -> bool {
    spec(prefix).is_some()
        || matches!(
            prefix,
            "azure"
                | "azure_ai"
                | "anthropic"
                | "gemini"
                | "vertex_ai"
                | "bedrock"
                | "cohere"
                | "ollama"
                | "ollama_chat"
                | "huggingface"
                | "replicate"
                | "sagemaker"
                | "watsonx"
                | "databricks"
                | "cerebras"
                | "sambanova"
                | "nvidia_nim"
                | "cloudflare"
                | "ai21"
                | "voyage"
                | "jina_ai"
                | "lm_studio"
                | "github"
                | "litellm_proxy"
        )
}

/// A deployment's upstream URL per endpoint, parsed once.
#[derive(Debug, Clone)]
pub struct EndpointUrls {
    chat_completions: reqwest::Url,
    completions: reqwest::Url,
    embeddings: reqwest::Url,
}

impl EndpointUrls {
    pub fn new(adapter: &dyn Provider, api_base: &str) -> Result<Self, String> {
        let parse = |endpoint: Endpoint| {
            let url = adapter.endpoint_url(api_base, endpoint);
            let parsed = reqwest::Url::parse(&url).map_err(|e| format!("not a valid URL ({url}): {e}"))?;
            match parsed.scheme() {
                "http" | "https" => Ok(parsed),
                other => Err(format!("unsupported scheme {other:?} in {url}")),
            }
        };
        Ok(Self {
            chat_completions: parse(Endpoint::ChatCompletions)?,
            completions: parse(Endpoint::Completions)?,
            embeddings: parse(Endpoint::Embeddings)?,
        })
    }

    pub fn get(&self, endpoint: Endpoint) -> &reqwest::Url {
        match endpoint {
            Endpoint::ChatCompletions => &self.chat_completions,
            Endpoint::Completions => &self.completions,
            Endpoint::Embeddings => &self.embeddings,
        }
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
    Stream(BoxStream<'static, Result<Bytes, reqwest::Error>>),
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
pub async fn call(client: &reqwest::Client, call: &Call<'_>) -> Result<UpstreamReply, UpstreamFailure> {
    let &Call { deployment: d, model, endpoint, body, overrides, stream, timeout } = call;
    // A credential from an unset environment variable: fail like the upstream would without it
    // (an authentication error: not retried, and the deployment cools down).
    if let Some(message) = &d.unresolved_env {
        return Err(UpstreamFailure::new(FailureKind::Status(401), message.clone()));
    }
    let adapter = d.provider.adapter;
    let payload = adapter
        .encode_request(d, model, body, overrides)
        .map_err(|e| UpstreamFailure::new(FailureKind::Malformed, e.to_string()))?;
    let request = adapter
        .authorize(client.post(d.urls.get(endpoint).clone()), d)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(payload);
    let deadline = tokio::time::Instant::now() + timeout;
    let response = tokio::time::timeout_at(deadline, request.send())
        .await
        .map_err(|_| timed_out(timeout))?
        .map_err(transport_failure)?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
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
        if let Some(kind) = headers.get(reqwest::header::CONTENT_TYPE).filter(|ct| !is_event_stream(ct.as_bytes())) {
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
        return Ok(UpstreamReply { headers, body: ReplyBody::Stream(response.bytes_stream().boxed()) });
    }
    let bytes = tokio::time::timeout_at(deadline, response.bytes())
        .await
        .map_err(|_| timed_out(timeout))?
        .map_err(transport_failure)?;
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

pub fn transport_failure(e: reqwest::Error) -> UpstreamFailure {
    if e.is_timeout() {
        return UpstreamFailure::new(FailureKind::Timeout, e.to_string());
    }
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    UpstreamFailure::new(FailureKind::Connection, message)
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
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
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
    fn splits_known_prefixes_only() {
        assert_eq!(split_model("groq/llama-3.1-8b-instant"), ("groq", "llama-3.1-8b-instant"));
        assert_eq!(split_model("gpt-4o"), ("openai", "gpt-4o"));
        assert_eq!(split_model("openrouter/anthropic/claude-3.5"), ("openrouter", "anthropic/claude-3.5"));
        assert_eq!(split_model("azure/gpt-4o-eu"), ("azure", "gpt-4o-eu"));
        assert_eq!(split_model("meta-llama/Llama-3-8b"), ("openai", "meta-llama/Llama-3-8b"));
        assert!(spec("azure").is_none());
        assert_eq!(spec("vercel_ai_gateway").unwrap().default_api_base, Some("https://ai-gateway.vercel.sh/v1"));
    }

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
