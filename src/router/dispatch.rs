//! Dispatching one request: pick a deployment, call it, retry and fall back as planned.
//! Runs in the request's own future; the deployment actors only hear about outcomes.

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::HeaderMap;
use serde_json::Value;
use tokio::time::Instant;

use super::attempt::Attempt;
use super::{plan, strategy, RouterHandle, RoutingTable};
use crate::config::Strategy;
use crate::deployment::DeploymentHandle;
use crate::error::GatewayError;
use crate::failure::{ErrorClass, FailureKind, UpstreamFailure};
use crate::openai::request::RequestBody;
use crate::openai::{self, mock, sse, ResponseView, TokenUsage};
use crate::providers::{self, Endpoint, ReplyBody, UpstreamReply};

/// One client request, as the router needs it.
pub struct CallRequest {
    pub endpoint: Endpoint,
    /// The model the client named (a wildcard group serves it under this name).
    pub model: String,
    /// The model group (aliases already resolved).
    pub group: String,
    /// The client's body, minus the gateway's own keys.
    pub body: RequestBody,
    /// Top-level keys to set on the upstream body (e.g. `stream_options`).
    pub overrides: Vec<(&'static str, Value)>,
    pub stream: bool,
    /// Estimated prompt tokens, for pre-call checks and usage-based routing.
    pub input_tokens: u64,
    /// The request's own `timeout`.
    pub timeout: Option<Duration>,
    /// The request's own `stream_timeout` (streams only).
    pub stream_timeout: Option<Duration>,
    /// The request's own `mock_response`.
    pub mock_response: Option<String>,
    /// `mock_testing_fallbacks` (and friends): fail the first group with this class.
    pub mock_failure: Option<ErrorClass>,
}

/// A deployment answered.
pub struct Dispatched {
    pub deployment: DeploymentHandle,
    /// The group that answered (a fallback group when `fallbacks > 0`).
    pub group: String,
    pub headers: HeaderMap,
    pub reply: Reply,
    pub retries: u32,
    pub fallbacks: u32,
    /// Deployment calls made, this one included.
    pub attempts: u32,
    /// Time spent waiting on upstreams: every attempt of a complete answer; for a stream, the
    /// failed attempts before it (the stream's own time runs from its attempt's start).
    pub upstream_time: Duration,
}

pub enum Reply {
    Complete {
        body: Bytes,
        usage: TokenUsage,
        finish_reason: Option<String>,
    },
    /// Upstream server-sent events, to be relayed as they come; the relay settles the attempt
    /// when the stream ends.
    Stream {
        events: BoxStream<'static, Result<Bytes, UpstreamFailure>>,
        attempt: Attempt,
    },
}

/// Every attempt failed.
pub struct Failed {
    pub error: GatewayError,
    pub retries: u32,
    pub fallbacks: u32,
    /// Deployment calls made.
    pub attempts: u32,
    pub last_deployment: Option<DeploymentHandle>,
    pub upstream_time: Duration,
}

/// Why one model group could not serve the request.
#[derive(Debug)]
pub enum AttemptError {
    Upstream {
        failure: UpstreamFailure,
        deployment: String,
    },
    /// Every deployment is cooling down or at its limits; `retry_after` is when the first
    /// cooldown ends, in whole seconds.
    NoDeployments {
        message: String,
        retry_after: Option<u64>,
    },
    ContextWindow(String),
    UnknownGroup(String),
}

impl AttemptError {
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Upstream { failure, .. } => failure.class(),
            Self::NoDeployments { .. } => ErrorClass::RateLimit,
            Self::ContextWindow(_) => ErrorClass::ContextWindowExceeded,
            Self::UnknownGroup(_) => ErrorClass::BadRequest,
        }
    }

    fn is_rate_limit(&self) -> bool {
        self.class() == ErrorClass::RateLimit
    }
}

/// What a dispatch accumulates across groups and attempts.
#[derive(Default)]
struct Progress {
    retries: u32,
    fallbacks: u32,
    tried: Vec<String>,
    /// The first "too many requests" seen: the answer when everything failed.
    first_rate_limit: Option<AttemptError>,
    last_error: Option<AttemptError>,
    last_deployment: Option<DeploymentHandle>,
    upstream_time: Duration,
}

impl RouterHandle {
    /// Serves `req` from its model group, retrying and falling back as configured.
    pub async fn dispatch(&self, req: &CallRequest) -> Result<Dispatched, Failed> {
        let table = self.table();
        let mut progress = Progress::default();
        // The primary target is the client's own model name (it decides a wildcard group's
        // upstream model); fallbacks are named by the config.
        let mut group = req.model.clone();
        let mut fallback_list: Option<Vec<String>> = None;
        loop {
            let is_primary = progress.fallbacks == 0;
            match self.try_group(&table, &group, req, is_primary, &mut progress).await {
                Ok(mut served) => {
                    if !is_primary {
                        self.metrics.fallback(&req.group, &group, true);
                    }
                    served.retries = progress.retries;
                    served.fallbacks = progress.fallbacks;
                    served.attempts = progress.tried.len() as u32 + 1;
                    served.upstream_time = progress.upstream_time;
                    return Ok(served);
                }
                Err(err) => {
                    if !is_primary {
                        self.metrics.fallback(&req.group, &group, false);
                    }
                    let list =
                        fallback_list.get_or_insert_with(|| plan::fallbacks(&self.settings, &req.group, err.class()));
                    let next = list.get(progress.fallbacks as usize).cloned();
                    tracing::debug!(group = %group, fallback = ?next, error = ?err, "model group failed");
                    if err.is_rate_limit() && progress.first_rate_limit.is_none() {
                        progress.first_rate_limit = Some(err);
                    } else {
                        progress.last_error = Some(err);
                    }
                    match next {
                        Some(next) => {
                            progress.fallbacks += 1;
                            group = next;
                        }
                        None => return Err(self.failed(req, progress)),
                    }
                }
            }
        }
    }

    /// The most meaningful failure: a 429 if any group was rate limited, else the last one.
    fn failed(&self, req: &CallRequest, mut progress: Progress) -> Failed {
        let err = match (progress.first_rate_limit.take(), progress.last_error.take()) {
            (Some(err), _) | (None, Some(err)) => err,
            (None, None) => AttemptError::NoDeployments {
                message: format!("No deployments available for model={}", req.group),
                retry_after: None,
            },
        };
        let attempts = progress.tried.len();
        let tried = progress.tried.join(", ");
        let error = match err {
            AttemptError::UnknownGroup(group) => GatewayError::BadRequest(invalid_model(&group)),
            AttemptError::NoDeployments { message, retry_after } => {
                GatewayError::NoDeploymentsAvailable { message, retry_after }
            }
            AttemptError::ContextWindow(message) => GatewayError::ContextWindowExceeded(message),
            AttemptError::Upstream { failure, deployment } => {
                let summary = format!(
                    "{} (model group {}, {attempts} attempt(s), deployments tried: {tried}; last error from {deployment})",
                    failure.message, req.group
                );
                match failure.kind {
                    FailureKind::Status(status) if status < 500 => GatewayError::Upstream {
                        status,
                        message: summary,
                        body: failure.body,
                        retry_after: failure.retry_after.map(|d| d.as_secs().max(1)),
                    },
                    FailureKind::Status(status) => {
                        GatewayError::Upstream { status, message: summary, body: None, retry_after: None }
                    }
                    FailureKind::Timeout => {
                        GatewayError::UpstreamUnreachable { status: 408, message: format!("Timeout: {summary}") }
                    }
                    FailureKind::Connection | FailureKind::Malformed => {
                        GatewayError::UpstreamUnreachable { status: 502, message: summary }
                    }
                }
            }
        };
        Failed {
            error,
            retries: progress.retries,
            fallbacks: progress.fallbacks,
            attempts: progress.tried.len() as u32,
            last_deployment: progress.last_deployment,
            upstream_time: progress.upstream_time,
        }
    }

    async fn try_group(
        &self,
        table: &RoutingTable,
        name: &str,
        req: &CallRequest,
        is_primary: bool,
        progress: &mut Progress,
    ) -> Result<Dispatched, AttemptError> {
        let Some(group) = table.resolve(name) else {
            return Err(AttemptError::UnknownGroup(name.to_string()));
        };
        let deployments = table.group(group).unwrap_or_default();
        if let (true, Some(class)) = (is_primary, req.mock_failure) {
            return Err(AttemptError::Upstream {
                failure: mock_class_failure(class),
                deployment: "mock_testing_fallbacks".into(),
            });
        }
        let mut retry = 0;
        loop {
            let attempt = self.pick(group, deployments, req, &progress.tried)?;
            let d = attempt.deployment().clone();
            progress.last_deployment = Some(d.clone());
            let started = Instant::now();
            let result = self.attempt(attempt, group, name, req).await;
            let failure = match result {
                Ok(served) => {
                    // A stream's own upstream time is counted by the relay, when it ends.
                    if let Reply::Complete { .. } = &served.reply {
                        progress.upstream_time += started.elapsed();
                    }
                    return Ok(served);
                }
                Err(failure) => {
                    progress.upstream_time += started.elapsed();
                    failure
                }
            };
            progress.tried.push(d.id().to_string());
            if retry >= plan::retries_for(&self.settings, failure.class(), failure.is_retryable()) {
                return Err(AttemptError::Upstream { failure, deployment: d.id().to_string() });
            }
            retry += 1;
            progress.retries += 1;
            let now = Instant::now();
            let other =
                deployments.iter().any(|o| o.id() != d.id() && o.has_capacity() && !o.health().is_cooling_down(now));
            let wait = plan::backoff(&self.settings, retry, failure.retry_after, other, &mut rand::rng());
            tracing::debug!(deployment = %d.id(), retry, wait_ms = wait.as_millis() as u64, error = %failure.message, "retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// Chooses a deployment of `group` and takes a slot on it: not cooling down, with capacity,
    /// fitting the prompt when pre-call checks are on, untried if possible; then the strategy
    /// decides.
    fn pick(
        &self,
        group: &str,
        deployments: &[DeploymentHandle],
        req: &CallRequest,
        tried: &[String],
    ) -> Result<Attempt, AttemptError> {
        let now = Instant::now();
        let s = &self.settings;
        let mut cooling = Vec::new();
        let mut too_small = 0;
        let mut candidates: Vec<strategy::Candidate> = Vec::with_capacity(deployments.len());
        for (index, d) in deployments.iter().enumerate() {
            let health = d.health();
            if let Some(until) = health.cooldown_until.filter(|until| *until > now) {
                let class = health.cooldown_class.map_or("unknown", |c| c.litellm_name());
                cooling.push((d.id(), class, until.saturating_duration_since(now)));
                continue;
            }
            if !d.has_capacity() {
                continue;
            }
            if s.enable_pre_call_checks && d.max_input_tokens().is_some_and(|max| req.input_tokens > max) {
                too_small += 1;
                continue;
            }
            let cfg = d.config();
            let (requests, tokens) = d.usage_this_minute();
            candidates.push(strategy::Candidate {
                index,
                order: cfg.order,
                weight: cfg.weight,
                rpm: cfg.rpm,
                tpm: cfg.tpm,
                in_flight: d.in_flight(),
                requests_this_minute: requests,
                tokens_this_minute: tokens,
                latency: health.latency,
                ttft: health.ttft,
                price: d.price().map(|p| p.input + p.output),
            });
        }
        if candidates.iter().any(|c| !tried.iter().any(|t| t == deployments[c.index].id())) {
            candidates.retain(|c| !tried.iter().any(|t| t == deployments[c.index].id()));
        }
        let need = strategy::Need {
            stream: req.stream,
            input_tokens: req.input_tokens,
            enforce_limits: s.enable_pre_call_checks,
        };
        let limit_rpm = s.enable_pre_call_checks || matches!(s.strategy, Strategy::UsageBased | Strategy::LatencyBased);
        let mut rng = rand::rng();
        while let Some(index) = strategy::select(s.strategy, &candidates, &need, s.lowest_latency_buffer, &mut rng) {
            let d = &deployments[index];
            if !limit_rpm || d.try_admit() {
                // Another request may have taken the last `max_parallel_requests` slot since
                // the candidates were read; then the next candidate is tried.
                if let Some(slot) = d.try_start_call() {
                    return Ok(Attempt::new(d.clone(), slot, &req.group));
                }
            }
            candidates.retain(|c| c.index != index);
        }
        if too_small > 0 && too_small + cooling.len() == deployments.len() {
            return Err(AttemptError::ContextWindow(format!(
                "The prompt (~{} tokens) is larger than the context window of every deployment of model={group}",
                req.input_tokens
            )));
        }
        Err(no_deployments(group, &cooling, s.enable_pre_call_checks, s.cooldown_time))
    }

    /// One call to one deployment (with its own `max_retries` for retryable failures) for
    /// `target`, the model name that led to `group`.
    async fn attempt(
        &self,
        attempt: Attempt,
        group: &str,
        target: &str,
        req: &CallRequest,
    ) -> Result<Dispatched, UpstreamFailure> {
        let d = attempt.deployment().clone();
        let cfg = d.config();
        let model = crate::config::wildcard_upstream_model(&cfg.model_name, &cfg.upstream_model, target);
        let mock = req.mock_response.as_deref().or(cfg.mock_response.as_deref());
        let result = match mock {
            Some(text) => mock_reply(req, &model, text),
            None => {
                let timeout = self.timeout_for(&d, req.stream, req.timeout, req.stream_timeout);
                let client = providers::client::for_this_thread();
                let mut extra_tries = cfg.max_retries;
                loop {
                    let call = providers::Call {
                        deployment: cfg,
                        model: &model,
                        endpoint: req.endpoint,
                        body: &req.body,
                        overrides: &req.overrides,
                        stream: req.stream,
                        timeout,
                    };
                    match providers::call(&client, &call).await {
                        Err(f) if f.is_retryable() && extra_tries > 0 => extra_tries -= 1,
                        other => break other,
                    }
                }
            }
        };
        let reply = match result {
            Ok(reply) => reply,
            Err(failure) => {
                attempt.failed(&failure, None);
                return Err(failure);
            }
        };
        let remaining = |name: &str| reply.headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok();
        d.series()
            .remaining_limits(remaining("x-ratelimit-remaining-requests"), remaining("x-ratelimit-remaining-tokens"));
        let body = match reply.body {
            ReplyBody::Complete(body) => body,
            ReplyBody::Stream(events) => {
                return Ok(self.dispatched(&d, group, reply.headers, Reply::Stream { events, attempt }));
            }
        };
        let view = match ResponseView::parse(&body) {
            Ok(view) => view,
            Err(e) => {
                let failure = UpstreamFailure::new(FailureKind::Malformed, format!("upstream sent invalid JSON: {e}"));
                attempt.failed(&failure, None);
                return Err(failure);
            }
        };
        let finish_reason = view.finish_reason().map(str::to_string);
        let usage = view.usage().unwrap_or_default();
        attempt.succeeded(&usage, None);
        Ok(self.dispatched(&d, group, reply.headers, Reply::Complete { body, usage, finish_reason }))
    }

    fn dispatched(&self, d: &DeploymentHandle, group: &str, headers: HeaderMap, reply: Reply) -> Dispatched {
        Dispatched {
            deployment: d.clone(),
            group: group.to_string(),
            headers,
            reply,
            retries: 0,
            fallbacks: 0,
            attempts: 1,
            upstream_time: Duration::ZERO,
        }
    }
}

/// LiteLLM's "No deployments available" answer, naming each deployment cooling down with the
/// error class that put it there; `retry_after` is when the first of them is back.
fn no_deployments(
    group: &str,
    cooling: &[(&str, &'static str, Duration)],
    pre_call_checks: bool,
    cooldown_time: Duration,
) -> AttemptError {
    let soonest = cooling.iter().map(|(_, _, left)| *left).min();
    let retry_in = soonest.unwrap_or(cooldown_time).as_secs_f64().ceil().max(1.0) as u64;
    let list: Vec<String> = cooling.iter().map(|(id, class, _)| format!("('{id}', '{class}')")).collect();
    AttemptError::NoDeployments {
        message: format!(
            "No deployments available for selected model, Try again in {retry_in} seconds. Passed model={group}. pre-call-checks={pre_call_checks}, cooldown_list=[{}]",
            list.join(", ")
        ),
        retry_after: soonest.map(|_| retry_in),
    }
}

/// LiteLLM's "Invalid model name" message.
pub fn invalid_model(model: &str) -> String {
    format!("Invalid model name passed in model={model}. Call `/v1/models` to view available models for your key.")
}

fn mock_class_failure(class: ErrorClass) -> UpstreamFailure {
    let name = match class {
        ErrorClass::ContextWindowExceeded => "litellm.ContextWindowExceededError",
        ErrorClass::ContentPolicyViolation => "litellm.ContentPolicyViolationError",
        _ => "litellm.InternalServerError",
    };
    let mut failure = mock::mock_failure(name).unwrap_or_else(|| UpstreamFailure::new(FailureKind::Status(500), name));
    failure.message = format!("This is a mock exception for model group fallbacks ({name})");
    failure
}

/// An answer built locally from `mock_response`, in the wire format of the endpoint.
fn mock_reply(req: &CallRequest, model: &str, text: &str) -> Result<UpstreamReply, UpstreamFailure> {
    if let Some(failure) = mock::mock_failure(text) {
        return Err(failure);
    }
    let id = mock::completion_id();
    let prompt_tokens = req.input_tokens;
    let usage = TokenUsage::new(prompt_tokens, openai::estimate_tokens(text.len()));
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let body = match (req.endpoint, req.stream) {
        (Endpoint::Embeddings, _) => {
            let inputs = match req.body.get("input") {
                Some(Value::Array(items)) => items.len(),
                _ => 1,
            };
            ReplyBody::Complete(Bytes::from(mock::embedding(model, inputs, prompt_tokens).to_string()))
        }
        (endpoint, true) => {
            let payloads = match endpoint {
                Endpoint::Completions => mock::text_stream_payloads(&id, model, text, Some(&usage)),
                _ => mock::chat_stream_payloads(&id, model, text, Some(&usage)),
            };
            let events = payloads
                .into_iter()
                .map(|p| sse::data_event(p.as_bytes()))
                .chain(std::iter::once(Bytes::from_static(sse::DONE)))
                .map(Ok);
            ReplyBody::Stream(futures_util::stream::iter(events).boxed())
        }
        (Endpoint::Completions, false) => {
            ReplyBody::Complete(Bytes::from(mock::text_completion(&id, model, text, &usage).to_string()))
        }
        (Endpoint::ChatCompletions, false) => {
            ReplyBody::Complete(Bytes::from(mock::chat_completion(&id, model, text, &usage).to_string()))
        }
    };
    Ok(UpstreamReply { headers, body })
}
