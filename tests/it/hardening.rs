//! Regressions from trying the gateway as an attacker and a new user would: numbers that used to
//! panic a worker, limits that two workers could both pass, streams that leaked, unbounded
//! metric labels and bodies, and drop-in gaps real clients hit.

use std::io::{Read, Write};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::support::{chat_body, error_of, header, sse_payloads, start, KEY};

const CONFIG: &str = r#"
model_list:
  - {model_name: g, litellm_params: {model: openai/gpt-4o-mini, api_base: "{mock}"}}
  - {model_name: stalling, litellm_params: {model: openai/stall, api_base: "{mock}"}}
  - {model_name: cut, litellm_params: {model: openai/stream-cut, api_base: "{mock}"}}
  - {model_name: erroring, litellm_params: {model: openai/stream-error, api_base: "{mock}"}}
  - {model_name: not-sse, litellm_params: {model: openai/malformed, api_base: "{mock}"}}
  - {model_name: two-at-once, litellm_params: {model: openai/slow-400ms, api_base: "{mock}", max_parallel_requests: 2}}
  - {model_name: five-a-minute, litellm_params: {model: openai/m, api_base: "{mock}", rpm: 5}}
router_settings: {num_retries: 0, routing_strategy: usage-based-routing-v2}
"#;

fn stream_body(model: &str) -> Value {
    let mut body = chat_body(model);
    body["stream"] = json!(true);
    body
}

#[actix_web::test]
async fn huge_or_bad_timeouts_are_a_400_naming_the_field_and_never_panic() {
    let gw = start(CONFIG).await;
    for (field, value) in [
        ("timeout", json!(1e300)),
        ("timeout", json!(1e19)),
        ("timeout", json!("1e300")),
        ("timeout", json!(-1)),
        ("timeout", json!(0)),
        ("timeout", json!("soon")),
        ("timeout", json!([1])),
        ("stream_timeout", json!(1e300)),
        ("stream_timeout", json!("1e19")),
    ] {
        let mut body = stream_body("g");
        body[field] = value.clone();
        let err = error_of(gw.post("/v1/chat/completions", &body).await, 400).await;
        assert_eq!(err["param"], field, "{field}={value}: {err}");
    }
    // Every worker is still alive and serving.
    for _ in 0..4 {
        assert_eq!(gw.chat("g").await.status(), 200);
    }
    let mut body = chat_body("g");
    body["timeout"] = json!("30s");
    assert_eq!(gw.post("/v1/chat/completions", &body).await.status(), 200);
    gw.stop().await;
}

/// Sends `n` chat requests for `model` at once; returns (answered 200, answered 429).
async fn at_once(gw: &crate::support::Gateway, model: &str, n: usize) -> (usize, usize) {
    let calls = (0..n).map(|_| gw.chat(model));
    let statuses: Vec<u16> = futures_util::future::join_all(calls).await.iter().map(|r| r.status().as_u16()).collect();
    let count = |status: u16| statuses.iter().filter(|s| **s == status).count();
    assert_eq!(count(200) + count(429), n, "only 200s and 429s: {statuses:?}");
    (count(200), count(429))
}

#[actix_web::test]
async fn max_parallel_requests_and_rpm_hold_under_concurrency() {
    let gw = start(CONFIG).await;
    assert_eq!(at_once(&gw, "two-at-once", 10).await, (2, 8));
    // The slots come back once the calls end.
    assert_eq!(gw.chat("two-at-once").await.status(), 200);
    assert_eq!(at_once(&gw, "five-a-minute", 20).await, (5, 15));
    gw.stop().await;
}

#[actix_web::test]
async fn the_engines_path_names_the_model() {
    let gw = start(CONFIG).await;
    let resp = gw.post("/engines/g/chat/completions", &chat_body("not-a-model")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-litellm-model-group"), "g");
    let err = error_of(gw.post("/v1/engines/nope/chat/completions", &chat_body("g")).await, 400).await;
    assert!(err["message"].as_str().unwrap().contains("model=nope"), "{err}");
    gw.stop().await;
}

/// Streams `body` and returns the payloads and how long the stream took.
async fn stream_text(gw: &crate::support::Gateway, body: &Value) -> (Vec<String>, Duration) {
    let started = std::time::Instant::now();
    let resp = gw.post("/v1/chat/completions", body).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    (sse_payloads(&text), started.elapsed())
}

#[actix_web::test]
async fn a_stalled_stream_is_cut_by_the_requests_stream_timeout_or_its_timeout() {
    let gw = start(CONFIG).await;
    for field in ["stream_timeout", "timeout"] {
        let mut body = stream_body("stalling");
        body[field] = json!(0.5);
        let (payloads, took) = stream_text(&gw, &body).await;
        let last: Value = serde_json::from_str(payloads.last().unwrap()).unwrap();
        assert_eq!(last["error"]["code"], "408", "{field}: {payloads:?}");
        assert!(took < Duration::from_secs(5), "{field}: cut after {took:?}");
    }
    gw.stop().await;
}

#[actix_web::test]
async fn an_abandoned_stalled_stream_releases_its_upstream_and_slot() {
    let yaml = CONFIG
        .replace("openai/stall, api_base: \"{mock}\"", "openai/stall, api_base: \"{mock}\", max_parallel_requests: 1");
    let gw = start(&yaml).await;
    let resp = gw.post("/v1/chat/completions", &stream_body("stalling")).await;
    let mut body = resp.bytes_stream();
    body.next().await.unwrap().unwrap();
    drop(body);
    // The relay's keep-alive notices the closed socket: the gateway closes its upstream
    // connection (the stalled mock never writes, so only the gateway's side can tell) and the
    // deployment's only slot is free again (a second stream is admitted, not a 429).
    let port = gw.mock.addr.port();
    let mut open = usize::MAX;
    for _ in 0..300 {
        open = established_to(port);
        if open == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(open, 0, "the upstream connection was closed after the client left");
    let resp = gw.post("/v1/chat/completions", &stream_body("stalling")).await;
    assert_eq!(resp.status(), 200, "the slot was released");
    drop(resp);
    gw.stop().await;
}

/// Sockets in ESTABLISHED state connected to `port` on loopback (the gateway's side of its
/// upstream connections), from /proc/net/tcp.
fn established_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let port_hex = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            cols.len() > 3 && cols[2].ends_with(&port_hex) && cols[3] == "01"
        })
        .count()
}

#[actix_web::test]
async fn streams_that_break_are_failures_in_the_stream_the_event_and_the_metrics() {
    let gw = start(CONFIG).await;
    // Cut mid-way: what came is relayed, then an error event.
    let (payloads, _) = stream_text(&gw, &stream_body("cut")).await;
    assert!(payloads.len() >= 2, "{payloads:?}");
    let last: Value = serde_json::from_str(payloads.last().unwrap()).unwrap();
    assert!(last["error"]["message"].is_string(), "{payloads:?}");
    // An error event from the upstream is relayed and ends the stream as a failure.
    let (payloads, _) = stream_text(&gw, &stream_body("erroring")).await;
    assert!(payloads.iter().any(|p| p.contains("mock failure inside the stream")), "{payloads:?}");
    // A 200 that is not a stream is a 502 before any byte is sent.
    let err = error_of(gw.post("/v1/chat/completions", &stream_body("not-sse")).await, 502).await;
    assert!(err["message"].as_str().unwrap().contains("instead of server-sent events"), "{err}");

    let events = gw.events(6).await;
    let statuses: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["type"] == "response")
        .map(|e| (e["requested_model"].as_str().unwrap().to_string(), e["status"].as_str().unwrap().to_string()))
        .collect();
    for model in ["cut", "erroring", "not-sse"] {
        assert!(statuses.contains(&(model.to_string(), "failure".to_string())), "{model}: {statuses:?}");
    }
    for model in ["cut", "erroring", "not-sse"] {
        gw.metrics_with(&["litellm_deployment_failure_responses_total{", &format!("requested_model=\"{model}\"")])
            .await;
    }
    gw.stop().await;
}

#[actix_web::test]
async fn made_up_model_names_do_not_grow_the_metrics() {
    let gw = start(CONFIG).await;
    let before = gw.metrics().await.len();
    for i in 0..200 {
        let name = format!("random-model-{i}-{}", "x".repeat(200));
        error_of(gw.chat(&name).await, 400).await;
    }
    let text = gw.metrics_with(&["litellm_proxy_total_requests_metric_total{", "unknown", "} 200"]).await;
    assert!(!text.contains("random-model-"), "made-up names are not label values");
    assert!(text.len() < before + 16 * 1024, "metrics grew from {before} to {} bytes", text.len());
    gw.stop().await;
}

#[actix_web::test]
async fn a_trickled_body_is_cut_with_408() {
    let gw = start(CONFIG).await;
    let addr = gw.base.trim_start_matches("http://").to_string();
    let result = tokio::task::spawn_blocking(move || {
        let mut sock = std::net::TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
        );
        sock.write_all(head.as_bytes()).unwrap();
        let started = std::time::Instant::now();
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        // Keep trickling a byte a second until the gateway answers.
        loop {
            sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            match sock.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                Err(_) if started.elapsed() < Duration::from_secs(20) => {
                    let _ = sock.write_all(b" ");
                }
                Err(e) => panic!("no answer: {e}"),
            }
        }
        (String::from_utf8_lossy(&answer).into_owned(), started.elapsed())
    })
    .await
    .unwrap();
    let (answer, took) = result;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(took < Duration::from_secs(10), "cut after {took:?}");
    gw.stop().await;
}

#[actix_web::test]
async fn drop_in_gaps_real_clients_hit() {
    let gw = start(CONFIG).await;
    // GET on a POST endpoint is 405 with the error body.
    let resp = gw.get("/v1/chat/completions").await;
    let err = error_of(resp, 405).await;
    assert!(err["message"].as_str().unwrap().contains("GET"), "{err}");
    // The SDK's models.retrieve.
    let model: Value = gw.get("/v1/models/g").await.json().await.unwrap();
    assert_eq!((model["id"].as_str(), model["object"].as_str()), (Some("g"), Some("model")));
    error_of(gw.get("/v1/models/nope").await, 404).await;
    // Prometheus scrapers configured with a trailing slash.
    assert_eq!(gw.http.get(gw.url("/metrics/")).send().await.unwrap().status(), 200);
    // CORS: a browser's preflight and answer.
    let preflight = gw
        .http
        .request(reqwest::Method::OPTIONS, gw.url("/v1/chat/completions"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization,content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 200);
    assert_eq!(header(&preflight, "access-control-allow-origin"), "https://app.example");
    assert_eq!(header(&preflight, "access-control-allow-methods"), "POST");
    assert_eq!(header(&preflight, "access-control-allow-headers"), "authorization,content-type");
    let resp = gw
        .http
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("origin", "https://app.example")
        .json(&chat_body("g"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "access-control-allow-origin"), "https://app.example");
    assert!(header(&resp, "access-control-expose-headers").contains("x-litellm-call-id"));
    // A non-browser request gets no CORS headers at all.
    assert!(!gw.chat("g").await.headers().contains_key("access-control-allow-origin"));
    // Rejected requests are counted as failures too (401 and malformed bodies).
    let bad = gw.http.post(gw.url("/v1/chat/completions")).body("{").bearer_auth(KEY).send().await.unwrap();
    error_of(bad, 400).await;
    error_of(gw.http.post(gw.url("/v1/chat/completions")).json(&chat_body("g")).send().await.unwrap(), 401).await;
    gw.metrics_with(&["litellm_proxy_failed_requests_metric_total{", "exception_status=\"401\""]).await;
    gw.metrics_with(&["litellm_proxy_failed_requests_metric_total{", "exception_status=\"400\""]).await;
    gw.stop().await;
}

#[actix_web::test]
async fn health_judges_the_answer_not_just_the_status() {
    let gw = start(
        r#"
model_list:
  - {model_name: ok, litellm_params: {model: openai/m, api_base: "{mock}"}}
  - {model_name: broken, litellm_params: {model: openai/malformed, api_base: "{mock}"}}
"#,
    )
    .await;
    let health: Value = gw.get("/health").await.json().await.unwrap();
    assert_eq!((health["healthy_count"].as_u64(), health["unhealthy_count"].as_u64()), (Some(1), Some(1)), "{health}");
    assert_eq!(health["unhealthy_endpoints"][0]["model"], "openai/malformed");
    gw.stop().await;
}
