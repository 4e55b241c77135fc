//! Starting a real gateway on 127.0.0.1:0 in front of the mock upstream.

use std::net::TcpListener;
use std::time::Duration;

use serde_json::{json, Value};
use switchyard::config::Config;
use switchyard::mock::{self, MockUpstream};
use switchyard::server::{self, ServeOptions};

pub const KEY: &str = "sk-test";

pub struct Gateway {
    pub base: String,
    /// The embedded event log's directory (when the test did not configure its own).
    pub events_dir: Option<std::path::PathBuf>,
    pub http: reqwest::Client,
    pub mock: MockUpstream,
    server: actix_web::dev::ServerHandle,
}

/// Starts the mock upstream and a gateway whose config is `yaml` with `{mock}` replaced by the
/// mock's base URL. A `general_settings.master_key` of [`KEY`] is added unless `yaml` has one.
pub async fn start(yaml: &str) -> Gateway {
    let mock = mock::start(TcpListener::bind("127.0.0.1:0").unwrap(), true, 1).unwrap();
    start_with_mock(yaml, mock).await
}

pub async fn start_with_mock(yaml: &str, mock: MockUpstream) -> Gateway {
    let mut yaml = yaml.replace("{mock}", &mock.api_base());
    if !yaml.contains("general_settings") {
        yaml.push_str(&format!("\ngeneral_settings:\n  master_key: {KEY}\n"));
    }
    let mut events_dir = None;
    if !yaml.contains("event_log") {
        // Each test writes its events to a log of its own.
        let dir = std::env::temp_dir().join(format!("switchyard-it-{}", uuid::Uuid::new_v4()));
        yaml.push_str(&format!("\nevent_log:\n  path: {}\n", dir.display()));
        events_dir = Some(dir);
    }
    let config = Config::from_yaml(&yaml, &|_| None).unwrap_or_else(|e| panic!("test config is invalid: {e}\n{yaml}"));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let opts = ServeOptions {
        workers: Some(2),
        graceful_timeout: Duration::from_secs(1),
        handle_signals: false,
        body_timeout: Duration::from_secs(2),
        ..ServeOptions::default()
    };
    let running = server::start(&config, listener, &opts).unwrap();
    let server = running.server.handle();
    actix_web::rt::spawn(running.server);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let gw = Gateway { base: format!("http://{addr}"), events_dir, http, mock, server };
    gw.wait_ready().await;
    gw
}

impl Gateway {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http.post(self.url(path)).bearer_auth(KEY).json(body).send().await.unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).bearer_auth(KEY).send().await.unwrap()
    }

    pub async fn chat(&self, model: &str) -> reqwest::Response {
        self.post("/v1/chat/completions", &chat_body(model)).await
    }

    /// Waits until the embedded log holds at least `n` events, and returns them all.
    pub async fn events(&self, n: usize) -> Vec<Value> {
        let dir = self.events_dir.as_ref().expect("this gateway writes its events elsewhere");
        let mut events = Vec::new();
        for _ in 0..100 {
            events = switchyard::events::log::read_records(dir, 0, 100_000)
                .unwrap_or_default()
                .into_iter()
                .map(|(_, json)| serde_json::from_slice(&json).unwrap())
                .collect();
            if events.len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        events
    }

    /// Waits (at most 10 s) until `/health/readiness` is 200: the key table is loaded.
    pub async fn wait_ready(&self) {
        for _ in 0..500 {
            let resp = self.http.get(self.url("/health/readiness")).send().await.unwrap();
            if resp.status() == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the gateway did not become ready");
    }

    pub async fn metrics(&self) -> String {
        self.http.get(self.url("/metrics")).send().await.unwrap().text().await.unwrap()
    }

    /// Polls `/metrics` until a line contains every one of `parts` (at most 10 s); returns the text.
    pub async fn metrics_with(&self, parts: &[&str]) -> String {
        let mut text = String::new();
        for _ in 0..500 {
            text = self.metrics().await;
            if text.lines().any(|line| parts.iter().all(|p| line.contains(p))) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no metric line has all of {parts:?}:\n{text}");
    }

    pub async fn stop(self) {
        self.server.stop(false).await;
        self.mock.stop().await;
    }
}

pub fn chat_body(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello there"}]})
}

pub fn header<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers().get(name).unwrap_or_else(|| panic!("missing header {name}")).to_str().unwrap()
}

/// Asserts the OpenAI error body and returns its `message`.
pub async fn error_of(resp: reqwest::Response, status: u16) -> Value {
    assert_eq!(resp.status().as_u16(), status, "status");
    let body: Value = resp.json().await.unwrap();
    let err = &body["error"];
    assert!(err["message"].is_string(), "error body without message: {body}");
    assert!(err.get("type").is_some() && err.get("param").is_some(), "error body shape: {body}");
    assert_eq!(err["code"], json!(status.to_string()), "code is the status as a string: {body}");
    err.clone()
}

/// The SSE `data:` payloads of a streamed answer, in order.
pub fn sse_payloads(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|event| event.lines().find_map(|l| l.strip_prefix("data: ")).map(str::to_string))
        .collect()
}
