//! `POST /chat/completions`, `/completions`, `/embeddings`: validate, route, answer with
//! LiteLLM's `x-litellm-*` headers.

use std::time::Duration;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde_json::{Map, Value};

use super::admission::{self, Admission};
use super::record::{Finished, Recorder, Trace};
use super::relay::{Relay, StreamSummary};
use super::{read_body, Gateway};
use crate::deployment::DeploymentHandle;
use crate::error::GatewayError;
use crate::failure::ErrorClass;
use crate::openai::request::RequestBody;
use crate::openai::{estimate_tokens, prompt_len, TokenUsage};
use crate::providers::Endpoint;
use crate::router::{Attempt, CallRequest, Dispatched, Failed, Reply};

pub async fn chat_completions(req: HttpRequest, payload: web::Payload, gw: web::Data<Gateway>) -> HttpResponse {
    proxy(req, payload, gw, Endpoint::ChatCompletions).await
}

pub async fn completions(req: HttpRequest, payload: web::Payload, gw: web::Data<Gateway>) -> HttpResponse {
    proxy(req, payload, gw, Endpoint::Completions).await
}

pub async fn embeddings(req: HttpRequest, payload: web::Payload, gw: web::Data<Gateway>) -> HttpResponse {
    proxy(req, payload, gw, Endpoint::Embeddings).await
}

/// LiteLLM's instructions to the gateway that a request may carry; never sent upstream.
#[derive(Debug, Default, PartialEq)]
struct GatewayParams {
    mock_response: Option<String>,
    mock_failure: Option<ErrorClass>,
    timeout: Option<Duration>,
    stream_timeout: Option<Duration>,
}

/// Request keys that are LiteLLM's instructions to the gateway.
const GATEWAY_KEYS: &[&str] = &[
    "mock_response",
    "mock_testing_fallbacks",
    "mock_testing_context_fallbacks",
    "mock_testing_content_policy_fallbacks",
    "timeout",
    "stream_timeout",
];

/// Removes the gateway's own keys from `body` and checks them: a duration that is not a
/// positive number of seconds (or a duration string) of at most a year is a 400 naming it.
fn take_gateway_params(body: &mut RequestBody) -> Result<GatewayParams, GatewayError> {
    let mut params = GatewayParams::default();
    for key in GATEWAY_KEYS {
        let Some(value) = body.remove(key) else { continue };
        match (*key, value) {
            (_, Value::Null) => {}
            ("mock_response", Value::String(s)) => params.mock_response = Some(s),
            ("mock_testing_fallbacks", Value::Bool(true)) => params.mock_failure = Some(ErrorClass::InternalServer),
            ("mock_testing_context_fallbacks", Value::Bool(true)) => {
                params.mock_failure = Some(ErrorClass::ContextWindowExceeded)
            }
            ("mock_testing_content_policy_fallbacks", Value::Bool(true)) => {
                params.mock_failure = Some(ErrorClass::ContentPolicyViolation)
            }
            ("timeout", value) => params.timeout = Some(duration_param("timeout", &value)?),
            ("stream_timeout", value) => params.stream_timeout = Some(duration_param("stream_timeout", &value)?),
            _ => {}
        }
    }
    Ok(params)
}

fn duration_param(field: &str, value: &Value) -> Result<Duration, GatewayError> {
    let parsed = match value {
        Value::Number(n) => {
            n.as_f64().ok_or_else(|| format!("not a number: {n}")).and_then(crate::config::duration_from_secs)
        }
        Value::String(s) => crate::config::parse_duration(s),
        other => Err(format!("expected seconds, got {other}")),
    };
    match parsed {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(invalid(field, format!("`{field}` must be a positive number of seconds, got 0"))),
        Err(e) => Err(invalid(field, format!("Invalid `{field}`: {e}"))),
    }
}

fn invalid(field: &str, message: String) -> GatewayError {
    GatewayError::InvalidParam { message, param: field.into() }
}

async fn proxy(req: HttpRequest, payload: web::Payload, gw: web::Data<Gateway>, endpoint: Endpoint) -> HttpResponse {
    let mut trace = Trace::new(endpoint);
    let (call, admission) = match admit(&req, payload, &gw, &mut trace).await {
        Ok(admitted) => admitted,
        Err(err) => return rejected(&gw.recorder, &trace, &err),
    };
    match gw.router.dispatch(&call).await {
        Ok(served) => answer(&gw, trace, &call, served, admission),
        Err(failed) => failure(&gw, &trace, failed),
    }
}

/// Authenticates, reads and validates the request, checks the caller's access, budgets and
/// limits, and announces it.
async fn admit(
    req: &HttpRequest,
    payload: web::Payload,
    gw: &Gateway,
    trace: &mut Trace,
) -> Result<(CallRequest, Admission), GatewayError> {
    let caller = gw.auth.identify(req.headers())?;
    caller.check_route(req.path())?;
    trace.key_hash = caller.key_hash.clone();
    let endpoint = trace.endpoint;
    let bytes = read_body(payload, gw.max_request_size, gw.body_timeout).await?;
    let mut body = RequestBody::parse(bytes).map_err(|e| GatewayError::BadRequest(e.to_string()))?;
    // OpenAI's engine-style path names the model; it wins over the body's.
    let model = match req.match_info().get("model") {
        Some(model) => model.to_string(),
        None => match body.get_as::<String>("model") {
            Some(Ok(m)) if !m.is_empty() => m,
            Some(Ok(_)) | None => return Err(missing("model")),
            Some(Err(_)) => return Err(invalid("model", "`model` must be a string".into())),
        },
    };
    trace.requested_model = model.clone();
    let table = gw.router.table();
    trace.group = table.resolve(&model).map(str::to_string);
    validate_input(endpoint, &body)?;
    let stream = match body.get_as::<Option<bool>>("stream") {
        None | Some(Ok(None)) => false,
        Some(Ok(Some(b))) => b && endpoint.supports_stream(),
        Some(Err(_)) => return Err(invalid("stream", "`stream` must be a boolean".into())),
    };
    trace.stream = stream;
    let params = take_gateway_params(&mut body)?;
    let prompt_bytes = prompt_len(&body);
    let input_tokens = estimate_tokens(prompt_bytes);
    let end_user = admission::end_user(&body);
    trace.caller = admission::caller_fields(&caller, end_user.clone());
    let call = admission::Call { model: &model, group: trace.group.as_deref(), body: &body, input_tokens };
    let (hold, reserved) = admission::admit(gw, &caller, &call, end_user.as_deref())?;
    trace.reserved_cost = reserved;
    gw.recorder.request(trace, &body, prompt_bytes);
    let group = trace.group.clone().ok_or_else(|| GatewayError::BadRequest(crate::router::invalid_model(&model)))?;
    let mut overrides = Vec::new();
    if stream {
        // Always learn the usage of a stream; the relay hides it again if the client did not ask.
        let mut options = match body.get("stream_options") {
            Some(Value::Object(o)) => o,
            _ => Map::new(),
        };
        options.insert("include_usage".into(), Value::Bool(true));
        overrides.push(("stream_options", Value::Object(options)));
    }
    let call = CallRequest {
        endpoint,
        model,
        group,
        input_tokens,
        body,
        overrides,
        stream,
        timeout: params.timeout,
        stream_timeout: params.stream_timeout,
        mock_response: params.mock_response,
        mock_failure: params.mock_failure,
    };
    Ok((call, hold))
}

/// The endpoint's required input: `messages` (a non-empty array), `prompt` or `input`. Judged
/// from the value's JSON text, without parsing it.
fn validate_input(endpoint: Endpoint, body: &RequestBody) -> Result<(), GatewayError> {
    let required = match endpoint {
        Endpoint::ChatCompletions => "messages",
        Endpoint::Completions => "prompt",
        Endpoint::Embeddings => "input",
    };
    let raw = match body.raw(required) {
        None | Some(b"null") => return Err(missing(required)),
        Some(raw) => raw,
    };
    if required != "messages" {
        return Ok(());
    }
    match raw.strip_prefix(b"[") {
        None => Err(invalid("messages", "`messages` must be an array".into())),
        Some(rest) if rest.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b']') => {
            Err(invalid("messages", "`messages` must not be empty".into()))
        }
        Some(_) => Ok(()),
    }
}

fn missing(field: &str) -> GatewayError {
    invalid(field, format!("Missing required parameter: `{field}`"))
}

fn client_wants_usage(call: &CallRequest) -> bool {
    call.body.get("stream_options").and_then(|o| o.get("include_usage").and_then(Value::as_bool)).unwrap_or(false)
}

fn answer(
    gw: &Gateway,
    trace: Trace,
    call: &CallRequest,
    served: Dispatched,
    mut admission: Admission,
) -> HttpResponse {
    let Dispatched { deployment, group, headers: upstream_headers, reply, retries, fallbacks, attempts, upstream_time } =
        served;
    // The key's spend as it was when the call was admitted, as LiteLLM reports it.
    let mut key_headers = HeaderMap::new();
    admission.headers(gw, &mut key_headers);
    let mut headers = Headers {
        trace: &trace,
        deployment: Some(&deployment),
        group: Some(&group),
        retries,
        fallbacks,
        max_fallbacks: gw.router.max_fallbacks(),
        total: trace.started.elapsed(),
        upstream: upstream_time,
        cost: None,
    };
    let mut resp = match reply {
        Reply::Complete { body, usage, finish_reason } => {
            let cost = deployment.price().map(|p| p.cost(&usage));
            headers.cost = cost;
            admission.settle(cost.unwrap_or(0.0), usage.completion_tokens);
            let response = if gw.recorder.store_prompts { serde_json::from_slice(&body).ok() } else { None };
            gw.recorder.finish(
                &trace,
                Finished {
                    group: Some(&group),
                    deployment: Some(&deployment),
                    status: 200,
                    error: None,
                    retries,
                    fallbacks,
                    attempts,
                    usage,
                    cost: cost.unwrap_or(0.0),
                    first_token_at: None,
                    finish_reason,
                    completed: true,
                    tokens_estimated: false,
                    response,
                    upstream_time,
                },
            );
            HttpResponse::Ok().insert_header((CONTENT_TYPE, "application/json")).body(body)
        }
        Reply::Stream { events, attempt } => {
            headers.upstream = upstream_time + attempt.started().elapsed();
            let idle = gw.router.timeout_for(&deployment, true, call.timeout, call.stream_timeout);
            let ended = StreamEnd {
                recorder: gw.recorder.clone(),
                trace: trace.clone(),
                group: group.clone(),
                attempt,
                retries,
                fallbacks,
                attempts,
                upstream_time,
                input_tokens: call.input_tokens,
                admission: std::mem::take(&mut admission),
            };
            let relay =
                Relay::new(events, !client_wants_usage(call), idle, Box::new(move |summary| ended.finish(summary)));
            HttpResponse::Ok()
                .insert_header((CONTENT_TYPE, "text/event-stream"))
                .insert_header((CACHE_CONTROL, "no-cache"))
                .insert_header((HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no")))
                .streaming(relay)
        }
    };
    let out = resp.headers_mut();
    for (name, value) in &upstream_headers {
        if let Some(echoed) = echoed_header(name.as_str()) {
            if let (Ok(n), Ok(v)) =
                (HeaderName::from_bytes(echoed.as_bytes()), HeaderValue::from_bytes(value.as_bytes()))
            {
                out.insert(n, v);
            }
        }
    }
    headers.write(out);
    for (name, value) in key_headers.iter() {
        out.insert(name.clone(), value.clone());
    }
    resp
}

/// What a stream needs to report itself when it ends (or is abandoned).
struct StreamEnd {
    recorder: Recorder,
    trace: Trace,
    group: String,
    /// Settled here: the deployment hears how the stream went, and its slot is given back.
    attempt: Attempt,
    retries: u32,
    fallbacks: u32,
    attempts: u32,
    /// Upstream time before this stream's call (failed attempts).
    upstream_time: Duration,
    /// The prompt estimate, for a stream that ends before its usage arrives.
    input_tokens: u64,
    /// Settled with what the stream cost, even when the client left early.
    admission: Admission,
}

impl StreamEnd {
    fn finish(self, summary: StreamSummary) {
        let StreamEnd {
            recorder,
            trace,
            group,
            attempt,
            retries,
            fallbacks,
            attempts,
            upstream_time,
            input_tokens,
            mut admission,
        } = self;
        let d = attempt.deployment().clone();
        let started = attempt.started();
        let latency = started.elapsed();
        // Without the upstream's usage (the client left first), count what was generated.
        let tokens_estimated = summary.usage.is_none() && summary.content_chunks > 0;
        let usage = summary.usage.unwrap_or_else(|| TokenUsage::new(input_tokens, summary.content_chunks));
        let ttft = summary.first_chunk_at.map(|t| t.saturating_duration_since(started));
        let (status, error) = match &summary.error {
            Some(failure) => {
                attempt.failed(failure, Some(&usage));
                let kind = crate::error::type_for_status(failure.status()).to_string();
                (failure.status(), Some(("StreamError", kind, failure.message.clone())))
            }
            None => {
                attempt.succeeded(&usage, ttft);
                (200, None)
            }
        };
        let cost = d.price().map(|p| p.cost(&usage)).unwrap_or(0.0);
        admission.settle(cost, usage.completion_tokens);
        let finished = Finished {
            group: Some(&group),
            deployment: Some(&d),
            status,
            error,
            retries,
            fallbacks,
            attempts,
            usage,
            cost,
            first_token_at: summary.first_chunk_at,
            finish_reason: summary.finish_reason,
            completed: summary.completed,
            tokens_estimated,
            response: None,
            upstream_time: upstream_time + latency,
        };
        recorder.finish(&trace, finished);
    }
}

fn failure(gw: &Gateway, trace: &Trace, failed: Failed) -> HttpResponse {
    let Failed { error, retries, fallbacks, attempts, last_deployment, upstream_time } = failed;
    let status = error.status_code().as_u16();
    tracing::warn!(
        call_id = %trace.call_id,
        model = %trace.requested_model,
        key_alias = ?trace.caller.key_alias,
        team = ?trace.caller.team_id,
        status,
        error = %error,
        "request failed"
    );
    let mut finished = Finished::failed(status, error.metric_label(), error.error_type(), error.to_string());
    finished.group = trace.group.as_deref();
    finished.deployment = last_deployment.as_ref();
    finished.retries = retries;
    finished.fallbacks = fallbacks;
    finished.attempts = attempts;
    finished.upstream_time = upstream_time;
    gw.recorder.finish(trace, finished);
    let mut resp = error.error_response();
    let headers = Headers {
        trace,
        deployment: last_deployment.as_ref(),
        group: trace.group.as_deref(),
        retries,
        fallbacks,
        max_fallbacks: gw.router.max_fallbacks(),
        total: trace.started.elapsed(),
        upstream: upstream_time,
        cost: None,
    };
    headers.write(resp.headers_mut());
    resp
}

/// A request turned away before routing (auth, validation, unknown model, budgets, limits).
fn rejected(recorder: &Recorder, trace: &Trace, err: &GatewayError) -> HttpResponse {
    let status = err.status_code().as_u16();
    tracing::debug!(
        call_id = %trace.call_id,
        key_alias = ?trace.caller.key_alias,
        team = ?trace.caller.team_id,
        status,
        error = %err,
        "request refused"
    );
    recorder.finish(trace, Finished::failed(status, err.metric_label(), err.error_type(), err.to_string()));
    let mut resp = err.error_response();
    resp.headers_mut().insert(HeaderName::from_static("x-litellm-call-id"), header_value(&trace.call_id));
    resp
}

/// LiteLLM's response headers.
struct Headers<'a> {
    trace: &'a Trace,
    deployment: Option<&'a DeploymentHandle>,
    group: Option<&'a str>,
    retries: u32,
    fallbacks: u32,
    max_fallbacks: usize,
    total: Duration,
    upstream: Duration,
    /// The answer's cost (complete answers only).
    cost: Option<f64>,
}

impl Headers<'_> {
    /// Sets LiteLLM's headers on an answer. Names are constants and numbers are formatted
    /// without going through floats or `String`s: this runs for every answer.
    fn write(&self, out: &mut HeaderMap) {
        const CALL_ID: HeaderName = HeaderName::from_static("x-litellm-call-id");
        const VERSION: HeaderName = HeaderName::from_static("x-litellm-version");
        const RESPONSE_MS: HeaderName = HeaderName::from_static("x-litellm-response-duration-ms");
        const OVERHEAD_MS: HeaderName = HeaderName::from_static("x-litellm-overhead-duration-ms");
        const RETRIES: HeaderName = HeaderName::from_static("x-litellm-attempted-retries");
        const FALLBACKS: HeaderName = HeaderName::from_static("x-litellm-attempted-fallbacks");
        const MAX_FALLBACKS: HeaderName = HeaderName::from_static("x-litellm-max-fallbacks");
        const MODEL_GROUP: HeaderName = HeaderName::from_static("x-litellm-model-group");
        const MODEL_ID: HeaderName = HeaderName::from_static("x-litellm-model-id");
        const API_BASE: HeaderName = HeaderName::from_static("x-litellm-model-api-base");
        const COST: HeaderName = HeaderName::from_static("x-litellm-response-cost");
        // The table grows once, not once per doubling.
        out.reserve(11);
        out.insert(CALL_ID, header_value(&self.trace.call_id));
        out.insert(VERSION, HeaderValue::from_static(env!("CARGO_PKG_VERSION")));
        out.insert(RESPONSE_MS, ms(self.total));
        out.insert(OVERHEAD_MS, ms(self.total.saturating_sub(self.upstream)));
        out.insert(RETRIES, count(self.retries as usize));
        out.insert(FALLBACKS, count(self.fallbacks as usize));
        out.insert(MAX_FALLBACKS, count(self.max_fallbacks));
        if let Some(group) = self.group {
            out.insert(MODEL_GROUP, header_value(group));
        }
        if let Some(d) = self.deployment {
            out.insert(MODEL_ID, d.id_header().clone());
            out.insert(API_BASE, d.api_base_header().clone());
        }
        if let Some(cost) = self.cost {
            out.insert(COST, header_value(&cost.to_string()));
        }
    }
}

/// A count as a header value; the usual small ones without an allocation.
fn count(n: usize) -> HeaderValue {
    const DIGITS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    match DIGITS.get(n) {
        Some(digit) => HeaderValue::from_static(digit),
        None => HeaderValue::from(n),
    }
}

/// Milliseconds with three decimals (`12.345`), from whole microseconds.
fn ms(d: Duration) -> HeaderValue {
    use std::io::Write;
    let micros = d.as_micros();
    let mut buf = [0u8; 48];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cursor, "{}.{:03}", micros / 1000, micros % 1000);
    let len = cursor.position() as usize;
    HeaderValue::from_bytes(&buf[..len]).unwrap_or(HeaderValue::from_static("0.000"))
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// Upstream headers are echoed as `llm_provider-<name>`, except those about the connection or
/// the body encoding, which belong to this hop.
fn echoed_header(name: &str) -> Option<String> {
    const HOP: &[&str] = &[
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "content-encoding",
        "content-type",
        "date",
        "server",
        "alt-svc",
        "set-cookie",
    ];
    (!HOP.contains(&name)).then(|| format!("llm_provider-{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_milliseconds_with_three_decimals() {
        assert_eq!(ms(Duration::from_micros(12_345)), "12.345");
        assert_eq!(ms(Duration::from_micros(7)), "0.007");
        assert_eq!(ms(Duration::from_secs(3600)), "3600000.000");
    }

    #[test]
    fn counts_are_decimal() {
        assert_eq!(count(0), "0");
        assert_eq!(count(9), "9");
        assert_eq!(count(10), "10");
        assert_eq!(count(123), "123");
    }

    #[test]
    fn echoes_upstream_headers_but_not_hop_by_hop_ones() {
        assert_eq!(
            echoed_header("x-ratelimit-remaining-requests").as_deref(),
            Some("llm_provider-x-ratelimit-remaining-requests")
        );
        assert_eq!(echoed_header("transfer-encoding"), None);
    }
}
