//! The events, as published. Each type has a JSON Schema under `schemas/events/`; fields may be
//! added in later versions, never removed or retyped without a new `schema_version`.

use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value;

pub const SCHEMA_VERSION: u32 = 1;

/// RFC 3339 with milliseconds, UTC.
pub fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// Fields every event carries.
#[derive(Debug, Clone, Serialize)]
pub struct Envelope {
    pub schema_version: u32,
    /// Unique per event, for de-duplication (delivery is at least once).
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The call's `x-litellm-call-id`; null for deployment events.
    pub request_id: Option<String>,
    pub gateway_id: String,
    pub timestamp: String,
}

impl Envelope {
    pub fn new(kind: &'static str, request_id: Option<String>, gateway_id: &str) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            event_id: uuid::Builder::from_random_bytes(rand::random()).into_uuid().to_string(),
            kind,
            request_id,
            gateway_id: gateway_id.to_string(),
            timestamp: timestamp(SystemTime::now()),
        }
    }
}

/// A call was admitted.
#[derive(Debug, Clone, Serialize)]
pub struct RequestEvent {
    #[serde(flatten)]
    pub envelope: Envelope,
    /// LiteLLM's call type: `acompletion`, `atext_completion`, `aembedding`.
    pub call_type: &'static str,
    pub endpoint: &'static str,
    /// The model the client asked for.
    pub model_group: String,
    pub stream: bool,
    /// SHA-256 (hex) of the key presented; never the key itself.
    pub api_key_hash: Option<String>,
    pub key_alias: Option<String>,
    pub user: Option<String>,
    pub team_id: Option<String>,
    pub end_user: Option<String>,
    pub tags: Vec<String>,
    pub metadata: Option<Value>,
    /// Sampling and shape parameters (temperature, max_tokens, n, number of tools, …).
    pub params: Value,
    pub prompt_bytes: u64,
    pub prompt_tokens_estimate: u64,
    /// The messages/prompt/input, only with `general_settings.store_prompts_in_spend_logs`.
    pub messages: Option<Value>,
}

/// A call finished: answered, failed, or abandoned by the client mid-stream.
#[derive(Debug, Clone, Serialize)]
pub struct ResponseEvent {
    #[serde(flatten)]
    pub envelope: Envelope,
    pub call_type: &'static str,
    /// The model the client asked for.
    pub requested_model: String,
    /// The group that answered (differs after a fallback); null when none was reached.
    pub model_group: Option<String>,
    pub deployment_id: Option<String>,
    pub provider: Option<String>,
    pub upstream_model: Option<String>,
    pub api_base: Option<String>,
    /// `success` or `failure`.
    pub status: &'static str,
    pub http_status: u16,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    /// Upstream calls made (retries included).
    pub attempts: u32,
    pub retries: u32,
    pub fallbacks: u32,
    pub stream: bool,
    /// False when the client went away before the stream ended.
    pub completed: bool,
    pub start_time: String,
    pub end_time: String,
    pub first_token_time: Option<String>,
    pub duration_ms: f64,
    pub overhead_ms: f64,
    /// prompt, completion, total, cache read/write and reasoning token counts.
    #[serde(flatten)]
    pub tokens: crate::openai::TokenUsage,
    /// USD, equal to the `x-litellm-response-cost` header.
    pub cost: f64,
    /// True when the token counts are the gateway's estimate: a stream that ended (client gone,
    /// upstream cut) before the upstream reported its usage; about one token per text chunk.
    pub tokens_estimated: bool,
    pub cache_hit: bool,
    pub finish_reason: Option<String>,
    /// The response body, only with `general_settings.store_prompts_in_spend_logs`.
    pub response: Option<Value>,
}

/// A deployment's health changed.
#[derive(Debug, Clone, Serialize)]
pub struct DeploymentEvent {
    #[serde(flatten)]
    pub envelope: Envelope,
    pub deployment_id: String,
    pub model_group: String,
    pub provider: String,
    pub api_base: String,
    /// `cooldown_entered`, `cooldown_left`, `health_check_failed`, `health_check_recovered`.
    pub change: &'static str,
    pub reason: Option<String>,
    pub cooldown_until: Option<String>,
}

impl DeploymentEvent {
    pub fn new(
        d: &crate::config::DeploymentConfig,
        gateway_id: &str,
        change: &'static str,
        reason: Option<String>,
        cooldown_until: Option<SystemTime>,
    ) -> Self {
        Self {
            envelope: Envelope::new("deployment", None, gateway_id),
            deployment_id: d.id.clone(),
            model_group: d.model_name.clone(),
            provider: d.provider.name.to_string(),
            api_base: d.api_base.clone(),
            change,
            reason,
            cooldown_until: cooldown_until.map(timestamp),
        }
    }
}

/// Anything published.
#[derive(Debug, Clone)]
pub enum Event {
    Request(Box<RequestEvent>),
    Response(Box<ResponseEvent>),
    Deployment(Box<DeploymentEvent>),
}

impl Event {
    pub fn to_json(&self) -> Vec<u8> {
        let result = match self {
            Self::Request(e) => serde_json::to_vec(e),
            Self::Response(e) => serde_json::to_vec(e),
            Self::Deployment(e) => serde_json::to_vec(e),
        };
        // Serializing these structs cannot fail (string keys, finite numbers or null).
        result.unwrap_or_default()
    }
}
