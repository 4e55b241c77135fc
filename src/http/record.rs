//! What a call leaves behind: its metrics, and its request and response events.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::deployment::DeploymentHandle;
use crate::events::types::timestamp;
use crate::events::types::CallerFields;
use crate::events::{Envelope, Event, EventSink, RequestEvent, ResponseEvent};
use crate::metrics::{Identity, Metrics, RequestRecord};
use crate::openai::request::RequestBody;
use crate::openai::{estimate_tokens, TokenUsage};
use crate::providers::Endpoint;

/// Where a call's records go; cloned into streams, which finish after their handler.
#[derive(Clone)]
pub struct Recorder {
    pub metrics: Arc<Metrics>,
    pub events: EventSink,
    /// `general_settings.store_prompts_in_spend_logs`: put messages and answers in the events.
    pub store_prompts: bool,
}

/// One call as it goes: its id, clocks, and whether its request event was published.
#[derive(Clone)]
pub struct Trace {
    pub call_id: String,
    pub started: Instant,
    pub started_at: SystemTime,
    pub endpoint: Endpoint,
    pub requested_model: String,
    /// The model group `requested_model` resolves to; `None` while unknown.
    pub group: Option<String>,
    /// Hex SHA-256 of the key the caller presented, once it is known to be a valid key.
    pub key_hash: Option<Arc<str>>,
    /// Who called, as the events name them.
    pub caller: CallerFields,
    /// USD reserved on the caller's budgets at admission.
    pub reserved_cost: f64,
    /// The request's `metadata.tags` and `metadata`, repeated on the response event (spend is
    /// per tag, and spend logs keep the metadata).
    pub tags: Vec<String>,
    pub metadata: Option<Value>,
    pub stream: bool,
    /// Set once the request event is out: from then on every ending publishes a response event.
    pub announced: bool,
}

impl Trace {
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            call_id: uuid::Builder::from_random_bytes(rand::random()).into_uuid().to_string(),
            started: Instant::now(),
            started_at: SystemTime::now(),
            endpoint,
            requested_model: String::new(),
            group: None,
            key_hash: None,
            caller: CallerFields::default(),
            reserved_cost: 0.0,
            tags: Vec::new(),
            metadata: None,
            stream: false,
            announced: false,
        }
    }

    /// The wall-clock time of a monotonic instant during this call.
    fn wall(&self, at: Instant) -> SystemTime {
        self.started_at + at.saturating_duration_since(self.started)
    }
}

/// How a call ended.
pub struct Finished<'a> {
    pub group: Option<&'a str>,
    pub deployment: Option<&'a DeploymentHandle>,
    pub status: u16,
    /// (metric label, OpenAI error type, message) of a failure.
    pub error: Option<(&'static str, String, String)>,
    pub retries: u32,
    pub fallbacks: u32,
    pub attempts: u32,
    pub usage: TokenUsage,
    pub cost: f64,
    pub first_token_at: Option<Instant>,
    pub finish_reason: Option<String>,
    pub completed: bool,
    /// The token counts are the gateway's estimate (a stream that ended before its usage).
    pub tokens_estimated: bool,
    /// The answer's body, when prompts are stored.
    pub response: Option<Value>,
    pub upstream_time: Duration,
}

impl Finished<'_> {
    pub fn failed(status: u16, label: &'static str, error_type: &str, message: String) -> Self {
        Finished {
            group: None,
            deployment: None,
            status,
            error: Some((label, error_type.to_string(), message)),
            retries: 0,
            fallbacks: 0,
            attempts: 0,
            usage: TokenUsage::default(),
            cost: 0.0,
            first_token_at: None,
            finish_reason: None,
            completed: true,
            tokens_estimated: false,
            response: None,
            upstream_time: Duration::ZERO,
        }
    }
}

/// Sampling and shape parameters worth seeing in analytics; the prompt itself is not here.
const PARAMS: &[&str] = &[
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "tool_choice",
    "parallel_tool_calls",
    "logprobs",
    "top_logprobs",
    "reasoning_effort",
    "dimensions",
    "encoding_format",
];

fn params(body: &RequestBody) -> Value {
    let mut out: Map<String, Value> = PARAMS.iter().filter_map(|k| body.get(k).map(|v| (k.to_string(), v))).collect();
    if let Some(Value::Array(tools)) = body.get("tools") {
        out.insert("tools".into(), Value::from(tools.len()));
    }
    if let Some(kind) = body.get("response_format").and_then(|f| f.get("type").cloned()) {
        out.insert("response_format".into(), kind);
    }
    if body.raw("stop").is_some_and(|s| s != b"null") {
        out.insert("stop".into(), Value::Bool(true));
    }
    Value::Object(out)
}

impl Recorder {
    /// Publishes the request event of an admitted call.
    /// `prompt_bytes`: the prompt text's size ([`crate::openai::prompt_len`]).
    pub fn request(&self, trace: &mut Trace, body: &RequestBody, prompt_bytes: usize) {
        if !self.events.enabled() {
            return;
        }
        let metadata = body.get("metadata").filter(|m| m.is_object());
        let tags = metadata
            .as_ref()
            .and_then(|m| m.get("tags"))
            .and_then(Value::as_array)
            .map(|t| t.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default();
        let prompt_bytes = prompt_bytes as u64;
        let messages =
            self.store_prompts.then(|| ["messages", "prompt", "input"].iter().find_map(|k| body.get(k))).flatten();
        let event = RequestEvent {
            envelope: Envelope::new("request", Some(trace.call_id.clone()), self.events.gateway_id()),
            call_type: trace.endpoint.call_type(),
            endpoint: trace.endpoint.path(),
            requested_model: trace.requested_model.clone(),
            model_group: trace.group.clone(),
            stream: trace.stream,
            caller: trace.caller.clone(),
            tags,
            metadata,
            params: params(body),
            prompt_bytes,
            prompt_tokens_estimate: estimate_tokens(prompt_bytes as usize),
            messages,
            reserved_cost: trace.reserved_cost,
        };
        trace.tags = event.tags.clone();
        trace.metadata = event.metadata.clone();
        self.events.publish(Event::Request(Box::new(event)));
        trace.announced = true;
    }

    /// Records a call's end: metrics always, the response event once the call was announced.
    pub fn finish(&self, trace: &Trace, f: Finished) {
        let end = Instant::now();
        let total = end.saturating_duration_since(trace.started);
        let overhead = total.saturating_sub(f.upstream_time);
        self.metrics.request(&RequestRecord {
            requested_model: trace.group.as_ref().map(|_| trace.requested_model.as_str()),
            identity: Identity {
                hashed_api_key: trace.key_hash.as_deref().unwrap_or(""),
                api_key_alias: trace.caller.key_alias.as_deref().unwrap_or(""),
                team: trace.caller.team_id.as_deref().unwrap_or(""),
                user: trace.caller.user.as_deref().unwrap_or(""),
            },
            status: f.status,
            error_class: f.error.as_ref().map(|(label, _, _)| *label),
            model: f.group,
            spend: f.cost,
            prompt_tokens: f.usage.prompt_tokens,
            completion_tokens: f.usage.completion_tokens,
            total_secs: total.as_secs_f64(),
            overhead_secs: overhead.as_secs_f64(),
        });
        if !trace.announced {
            return;
        }
        let d = f.deployment.map(DeploymentHandle::config);
        let (error_type, error_message) = match f.error {
            Some((_, kind, message)) => (Some(kind), Some(message)),
            None => (None, None),
        };
        let event = ResponseEvent {
            envelope: Envelope::new("response", Some(trace.call_id.clone()), self.events.gateway_id()),
            call_type: trace.endpoint.call_type(),
            requested_model: trace.requested_model.clone(),
            model_group: f.group.map(str::to_string),
            caller: trace.caller.clone(),
            tags: trace.tags.clone(),
            metadata: trace.metadata.clone(),
            deployment_id: d.map(|d| d.id.clone()),
            provider: d.map(|d| d.provider.name.to_string()),
            upstream_model: d.map(|d| d.upstream_model.clone()),
            api_base: d.map(|d| d.api_base.clone()),
            status: if error_type.is_none() { "success" } else { "failure" },
            http_status: f.status,
            error_type,
            error_message,
            attempts: f.attempts,
            retries: f.retries,
            fallbacks: f.fallbacks,
            stream: trace.stream,
            completed: f.completed,
            start_time: timestamp(trace.started_at),
            end_time: timestamp(trace.wall(end)),
            first_token_time: f.first_token_at.map(|t| timestamp(trace.wall(t))),
            duration_ms: total.as_secs_f64() * 1000.0,
            overhead_ms: overhead.as_secs_f64() * 1000.0,
            tokens: f.usage,
            cost: f.cost,
            tokens_estimated: f.tokens_estimated,
            cache_hit: false,
            finish_reason: f.finish_reason,
            response: f.response,
        };
        self.events.publish(Event::Response(Box::new(event)));
    }
}
