//! The events, as published. Each type has a JSON Schema under `schemas/events/`; fields may be
//! added in later versions, never removed or retyped without a new `schema_version`.
//!
//! The types serialize to exactly that JSON and deserialize from it (consumers read them back).
//! Fields that hold one of a closed set of names (`type`, `call_type`, `endpoint`, `status`,
//! `change`) are `&'static str`; reading an event back maps them onto the names this version
//! knows, and a name it does not know is an error.

use std::time::SystemTime;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

pub const SCHEMA_VERSION: u32 = 1;

/// RFC 3339 with milliseconds, UTC.
pub fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// A name from a closed set (`&'static str`; an alias so that serde's derive does not read the
/// field as borrowed from the input, which would tie deserializing to `'static` input).
pub type Name = &'static str;

/// The closed sets of names, as this version writes them.
pub mod names {
    pub const KINDS: &[&str] = &["request", "response", "deployment"];
    pub const CALL_TYPES: &[&str] = &["acompletion", "atext_completion", "aembedding"];
    pub const ENDPOINTS: &[&str] = &["/chat/completions", "/completions", "/embeddings"];
    pub const STATUSES: &[&str] = &["success", "failure"];
    pub const CHANGES: &[&str] =
        &["cooldown_entered", "cooldown_left", "health_check_failed", "health_check_recovered"];
}

/// Reads a name of a closed set back as the `&'static str` this version writes.
fn known<'de, D: Deserializer<'de>>(d: D, set: &'static [&'static str], what: &str) -> Result<&'static str, D::Error> {
    let name = std::borrow::Cow::<'de, str>::deserialize(d)?;
    set.iter()
        .find(|known| **known == name)
        .copied()
        .ok_or_else(|| serde::de::Error::custom(format!("unknown {what} {name:?}")))
}

fn kind<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    known(d, names::KINDS, "event type")
}
fn call_type<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    known(d, names::CALL_TYPES, "call_type")
}
fn endpoint<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    known(d, names::ENDPOINTS, "endpoint")
}
fn status<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    known(d, names::STATUSES, "status")
}
fn change<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    known(d, names::CHANGES, "change")
}

/// Fields every event carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub schema_version: u32,
    /// Unique per event, for de-duplication (delivery is at least once).
    pub event_id: String,
    #[serde(rename = "type", deserialize_with = "kind")]
    pub kind: Name,
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestEvent {
    #[serde(flatten)]
    pub envelope: Envelope,
    /// LiteLLM's call type: `acompletion`, `atext_completion`, `aembedding`.
    #[serde(deserialize_with = "call_type")]
    pub call_type: Name,
    #[serde(deserialize_with = "endpoint")]
    pub endpoint: Name,
    /// The model the client asked for (`model` of the body, as sent).
    pub requested_model: String,
    /// The model group that name resolved to (an alias resolves to its target); null when the
    /// gateway does not know the model.
    pub model_group: Option<String>,
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseEvent {
    #[serde(flatten)]
    pub envelope: Envelope,
    #[serde(deserialize_with = "call_type")]
    pub call_type: Name,
    /// The model the client asked for.
    pub requested_model: String,
    /// The group that answered (differs after a fallback); null when none was reached.
    pub model_group: Option<String>,
    pub deployment_id: Option<String>,
    pub provider: Option<String>,
    pub upstream_model: Option<String>,
    pub api_base: Option<String>,
    /// `success` or `failure`.
    #[serde(deserialize_with = "status")]
    pub status: Name,
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentEvent {
    #[serde(flatten)]
    pub envelope: Envelope,
    pub deployment_id: String,
    pub model_group: String,
    pub provider: String,
    pub api_base: String,
    /// `cooldown_entered`, `cooldown_left`, `health_check_failed`, `health_check_recovered`.
    #[serde(deserialize_with = "change")]
    pub change: Name,
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
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Request(Box<RequestEvent>),
    Response(Box<ResponseEvent>),
    Deployment(Box<DeploymentEvent>),
}

impl Event {
    /// Appends the event's JSON to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let result = match self {
            Self::Request(e) => serde_json::to_writer(&mut *out, e),
            Self::Response(e) => serde_json::to_writer(&mut *out, e),
            Self::Deployment(e) => serde_json::to_writer(&mut *out, e),
        };
        // Serializing these structs cannot fail (string keys, finite numbers or null) and
        // writing to a Vec cannot either.
        debug_assert!(result.is_ok());
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1024);
        self.write_json(&mut out);
        out
    }

    /// An event read back from its JSON.
    pub fn from_json(json: &[u8]) -> serde_json::Result<Self> {
        serde_json::from_slice(json)
    }

    pub fn envelope(&self) -> &Envelope {
        match self {
            Self::Request(e) => &e.envelope,
            Self::Response(e) => &e.envelope,
            Self::Deployment(e) => &e.envelope,
        }
    }
}

impl Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Request(e) => e.serialize(s),
            Self::Response(e) => e.serialize(s),
            Self::Deployment(e) => e.serialize(s),
        }
    }
}

/// By its `type` field.
impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let value = Value::deserialize(d)?;
        let kind = value.get("type").and_then(Value::as_str).ok_or_else(|| D::Error::missing_field("type"))?;
        let event = match kind {
            "request" => serde_json::from_value(value).map(|e| Self::Request(Box::new(e))),
            "response" => serde_json::from_value(value).map(|e| Self::Response(Box::new(e))),
            "deployment" => serde_json::from_value(value).map(|e| Self::Deployment(Box::new(e))),
            other => return Err(D::Error::custom(format!("unknown event type {other:?}"))),
        };
        event.map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Endpoint;
    use serde_json::json;

    fn request() -> RequestEvent {
        RequestEvent {
            envelope: Envelope::new("request", Some("call-1".into()), "gw-1"),
            call_type: "acompletion",
            endpoint: "/chat/completions",
            requested_model: "gpt-4o".into(),
            model_group: Some("gpt-4o-group".into()),
            stream: false,
            api_key_hash: None,
            key_alias: None,
            user: Some("alice".into()),
            team_id: None,
            end_user: Some("alice".into()),
            tags: vec!["a".into()],
            metadata: Some(json!({"tags": ["a"]})),
            params: json!({"temperature": 0.2}),
            prompt_bytes: 11,
            prompt_tokens_estimate: 3,
            messages: None,
        }
    }

    #[test]
    fn events_read_back_as_they_were_written() {
        let request = Event::Request(Box::new(request()));
        let json = request.to_json();
        let value: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(
            (value["requested_model"].as_str(), value["model_group"].as_str()),
            (Some("gpt-4o"), Some("gpt-4o-group"))
        );
        assert_eq!(Event::from_json(&json).unwrap(), request);

        let response = Event::Response(Box::new(ResponseEvent {
            envelope: Envelope::new("response", Some("call-1".into()), "gw-1"),
            call_type: "aembedding",
            requested_model: "e".into(),
            model_group: None,
            deployment_id: None,
            provider: None,
            upstream_model: None,
            api_base: None,
            status: "failure",
            http_status: 400,
            error_type: Some("invalid_request_error".into()),
            error_message: Some("no".into()),
            attempts: 0,
            retries: 0,
            fallbacks: 0,
            stream: false,
            completed: true,
            start_time: timestamp(SystemTime::now()),
            end_time: timestamp(SystemTime::now()),
            first_token_time: None,
            duration_ms: 1.5,
            overhead_ms: 0.25,
            tokens: crate::openai::TokenUsage::new(2, 9),
            cost: 0.125,
            tokens_estimated: false,
            cache_hit: false,
            finish_reason: None,
            response: None,
        }));
        assert_eq!(Event::from_json(&response.to_json()).unwrap(), response);

        let deployment = Event::Deployment(Box::new(DeploymentEvent {
            envelope: Envelope::new("deployment", None, "gw-1"),
            deployment_id: "d".into(),
            model_group: "g".into(),
            provider: "openai".into(),
            api_base: "http://x".into(),
            change: "cooldown_left",
            reason: None,
            cooldown_until: None,
        }));
        assert_eq!(Event::from_json(&deployment.to_json()).unwrap(), deployment);
    }

    #[test]
    fn every_name_the_gateway_writes_reads_back() {
        for e in [Endpoint::ChatCompletions, Endpoint::Completions, Endpoint::Embeddings] {
            assert!(names::CALL_TYPES.contains(&e.call_type()), "{e:?}");
            assert!(names::ENDPOINTS.contains(&e.path()), "{e:?}");
        }
        let mut value: Value = serde_json::from_slice(&Event::Request(Box::new(request())).to_json()).unwrap();
        value["call_type"] = json!("a_new_call_type");
        let err = serde_json::from_value::<Event>(value).unwrap_err();
        assert!(err.to_string().contains("unknown call_type \"a_new_call_type\""), "{err}");
    }
}
