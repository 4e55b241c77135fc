//! A mock upstream speaking OpenAI's wire format (streaming included), with faults chosen by the
//! model name, for tests, benchmarks and the quickstart. It answers with the same builders as
//! `mock_response`, so every answer is exactly what a real OpenAI-compatible server sends.
//!
//! Faults, by words in the requested model name (combine them freely):
//! - `error-<status>`: answer with that status and an OpenAI error body (`429` adds
//!   `Retry-After: 1`, or `retry-<secs>`); `context-window` / `content-policy`: OpenAI's 400s
//! - `flaky-<n>`: fail the first `n` calls for this model name with 500, then succeed
//! - `slow-<ms>ms`: wait before answering; `stream-delay-<ms>ms`: wait between stream chunks
//! - `stall`: stream one chunk, then nothing; `reset`: cut the connection mid-answer
//! - `stream-cut`: stream two chunks, then cut the connection; `stream-error`: stream one chunk,
//!   then an OpenAI error event
//! - `malformed`: answer 200 with invalid JSON (also to stream requests)

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, App, HttpResponse, HttpServer};
use bytes::Bytes;
use dashmap::DashMap;
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::openai::{mock, sse, TokenUsage};

/// The default reply: nine words, so nine completion tokens.
pub const REPLY: &str = "Hello from the Switchyard mock upstream, how are you?";

#[derive(Default)]
pub struct MockState {
    /// Request bodies received, when recording.
    requests: Mutex<Vec<Value>>,
    record: bool,
    /// Calls per model name (for `flaky-<n>`).
    calls: DashMap<String, u64>,
    /// Streams whose client went away before the end.
    streams_cut: AtomicU64,
    served: AtomicU64,
}

impl MockState {
    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn streams_cut(&self) -> u64 {
        self.streams_cut.load(Ordering::SeqCst)
    }

    pub fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }
}

pub struct MockUpstream {
    pub addr: SocketAddr,
    pub state: Arc<MockState>,
    handle: ServerHandle,
}

impl MockUpstream {
    /// `http://127.0.0.1:PORT/v1`
    pub fn api_base(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

/// Starts the mock on `listener` in the current actix system (tests).
pub fn start(listener: TcpListener, record: bool, workers: usize) -> std::io::Result<MockUpstream> {
    let addr = listener.local_addr()?;
    let state = Arc::new(MockState { record, ..MockState::default() });
    let server = server(listener, state.clone(), workers)?;
    let handle = server.handle();
    actix_web::rt::spawn(server);
    Ok(MockUpstream { addr, state, handle })
}

/// The mock's HTTP server, to be awaited (the `mock-upstream` command).
pub fn server(listener: TcpListener, state: Arc<MockState>, workers: usize) -> std::io::Result<Server> {
    let data = web::Data::from(state);
    Ok(HttpServer::new(move || {
        let app = App::new().app_data(data.clone());
        ["", "/v1"].iter().fold(app, |app, prefix| {
            app.route(&format!("{prefix}/chat/completions"), web::post().to(chat))
                .route(&format!("{prefix}/completions"), web::post().to(completions))
                .route(&format!("{prefix}/embeddings"), web::post().to(embeddings))
                .route(&format!("{prefix}/models"), web::get().to(models))
        })
    })
    .workers(workers.max(1))
    .backlog(4096)
    .disable_signals()
    .listen(listener)?
    .run())
}

async fn chat(state: web::Data<MockState>, body: web::Json<Value>) -> HttpResponse {
    respond(state, body.into_inner(), Kind::Chat).await
}

async fn completions(state: web::Data<MockState>, body: web::Json<Value>) -> HttpResponse {
    respond(state, body.into_inner(), Kind::Text).await
}

async fn embeddings(state: web::Data<MockState>, body: web::Json<Value>) -> HttpResponse {
    respond(state, body.into_inner(), Kind::Embedding).await
}

async fn models() -> HttpResponse {
    HttpResponse::Ok().json(
        json!({"object": "list", "data": [{"id": "mock", "object": "model", "created": 0, "owned_by": "switchyard"}]}),
    )
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Chat,
    Text,
    Embedding,
}

/// The number after `word-` in a model name: `slow-250ms` → 250.
fn param(model: &str, word: &str) -> Option<u64> {
    let start = model.find(word)? + word.len();
    let digits: String = model[start..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn text_words(v: &Value) -> u64 {
    match v {
        Value::String(s) => mock::word_count(s),
        Value::Array(items) => items.iter().map(text_words).sum(),
        Value::Object(o) => o.iter().filter(|(k, _)| *k == "content" || *k == "text").map(|(_, v)| text_words(v)).sum(),
        _ => 0,
    }
}

async fn respond(state: web::Data<MockState>, body: Value, kind: Kind) -> HttpResponse {
    state.served.fetch_add(1, Ordering::Relaxed);
    if state.record {
        if let Ok(mut r) = state.requests.lock() {
            r.push(body.clone());
        }
    }
    let model = body["model"].as_str().unwrap_or("mock").to_string();
    if let Some(ms) = param(&model, "slow-") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(failures) = param(&model, "flaky-") {
        let mut calls = state.calls.entry(model.clone()).or_insert(0);
        *calls += 1;
        if *calls <= failures {
            return error(500, "server_error", "flaky mock failure");
        }
    }
    if let Some(status) = param(&model, "error-") {
        let mut resp = error(status as u16, "mock_error", &format!("mock upstream error {status}"));
        if status == 429 {
            let secs = param(&model, "retry-").unwrap_or(1);
            resp.headers_mut().insert(actix_web::http::header::RETRY_AFTER, secs.into());
        }
        return resp;
    }
    if model.contains("context-window") {
        return error(
            400,
            "context_length_exceeded",
            "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.",
        );
    }
    if model.contains("content-policy") {
        return error(400, "content_policy_violation", "Your request was rejected as a result of our safety system.");
    }
    if model.contains("malformed") {
        return HttpResponse::Ok()
            .content_type("application/json")
            .body("{\"id\": \"chatcmpl-broken\", \"choices\": [");
    }
    if model.contains("reset") {
        let broken = futures_util::stream::iter([
            Ok::<_, std::io::Error>(Bytes::from_static(b"{\"id\":")),
            Err(std::io::Error::other("mock reset")),
        ]);
        return HttpResponse::Ok().content_type("application/json").streaming(broken);
    }
    let prompt_tokens = ["messages", "prompt", "input"].iter().map(|k| text_words(&body[*k])).sum::<u64>();
    let reply = match body.get("max_tokens").and_then(Value::as_u64) {
        Some(n) => vec!["tok"; n.min(4096) as usize].join(" "),
        None => REPLY.to_string(),
    };
    let usage = TokenUsage::new(prompt_tokens, mock::word_count(&reply));
    let id = mock::completion_id();
    let stream = body["stream"].as_bool().unwrap_or(false) && kind != Kind::Embedding;
    let mut ok = HttpResponse::Ok();
    ok.insert_header(("x-request-id", id.clone())).insert_header(("x-ratelimit-remaining-requests", "9999"));
    if !stream {
        let answer = match kind {
            Kind::Chat => mock::chat_completion(&id, &model, &reply, &usage),
            Kind::Text => mock::text_completion(&id, &model, &reply, &usage),
            Kind::Embedding => mock::embedding(&model, body["input"].as_array().map_or(1, Vec::len), prompt_tokens),
        };
        return ok.content_type("application/json").body(answer.to_string());
    }
    let include_usage = body["stream_options"]["include_usage"].as_bool().unwrap_or(false);
    let usage = include_usage.then_some(&usage);
    let payloads = match kind {
        Kind::Text => mock::text_stream_payloads(&id, &model, &reply, usage),
        _ => mock::chat_stream_payloads(&id, &model, &reply, usage),
    };
    let delay = Duration::from_millis(param(&model, "stream-delay-").unwrap_or(0));
    let stall = model.contains("stall");
    let mut events: Vec<Bytes> = payloads
        .iter()
        .map(|p| sse::data_event(p.as_bytes()))
        .chain(std::iter::once(Bytes::from_static(sse::DONE)))
        .collect();
    if model.contains("stream-cut") {
        let cut =
            futures_util::stream::iter(events.into_iter().take(2).map(Ok)).chain(futures_util::stream::once(async {
                // Late enough that the headers and the first chunks are out.
                tokio::time::sleep(Duration::from_millis(100)).await;
                Err(std::io::Error::other("mock stream cut"))
            }));
        return ok.content_type("text/event-stream").streaming(cut);
    }
    if model.contains("stream-error") {
        let error = mock::error_json("mock failure inside the stream", "server_error", 500);
        events.truncate(1);
        events.push(sse::data_event(error.to_string().as_bytes()));
    }
    let stream = chunk_stream(events, delay, stall, state.clone());
    ok.content_type("text/event-stream").streaming(stream)
}

fn error(status: u16, code: &str, message: &str) -> HttpResponse {
    let status =
        actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(status)
        .content_type("application/json")
        .body(mock::error_json(message, code, status.as_u16()).to_string())
}

/// Counts a stream as cut when it is dropped before its last event was taken.
struct CutGuard {
    state: web::Data<MockState>,
    finished: bool,
}

impl Drop for CutGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.state.streams_cut.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The events with `delay` between them (`stall`: nothing after the first).
fn chunk_stream(
    events: Vec<Bytes>,
    delay: Duration,
    stall: bool,
    state: web::Data<MockState>,
) -> futures_util::stream::BoxStream<'static, Result<Bytes, std::io::Error>> {
    let last = events.len().saturating_sub(1);
    let guard = Arc::new(Mutex::new(CutGuard { state, finished: false }));
    futures_util::stream::iter(events.into_iter().enumerate())
        .then(move |(i, event)| {
            let guard = guard.clone();
            async move {
                if stall && i == 1 {
                    futures_util::future::pending::<()>().await;
                }
                if i > 0 && !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if i == last {
                    if let Ok(mut g) = guard.lock() {
                        g.finished = true;
                    }
                }
                Ok(event)
            }
        })
        .boxed()
}
