//! Streaming: forwarded as it comes, usage always learned, `[DONE]` always sent, upstream calls
//! cancelled with the client.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::support::{chat_body, header, sse_payloads, start};

const STREAMS: &str = r#"
model_list:
  - {model_name: g, litellm_params: {model: openai/gpt-4o-mini, api_base: "{mock}"}}
  - {model_name: stalling, litellm_params: {model: openai/stall, api_base: "{mock}"}}
  - {model_name: slow-stream, litellm_params: {model: openai/stream-delay-200ms, api_base: "{mock}"}}
  - {model_name: quiet, litellm_params: {model: openai/stall, api_base: "{mock}", stream_timeout: 0.3}}
  - {model_name: text, litellm_params: {model: openai/gpt-3.5-turbo-instruct, api_base: "{mock}"}, model_info: {mode: completion}}
router_settings: {num_retries: 0}
"#;

fn stream_body(model: &str, include_usage: Option<bool>) -> Value {
    let mut body = chat_body(model);
    body["stream"] = json!(true);
    if let Some(u) = include_usage {
        body["stream_options"] = json!({"include_usage": u});
    }
    body
}

fn content(payloads: &[String]) -> String {
    payloads
        .iter()
        .filter_map(|p| serde_json::from_str::<Value>(p).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_string))
        .collect()
}

#[actix_web::test]
async fn usage_is_stripped_unless_asked_for_but_always_requested_upstream() {
    let gw = start(STREAMS).await;
    let resp = gw.post("/v1/chat/completions", &stream_body("g", None)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), "text/event-stream");
    assert!(!header(&resp, "x-litellm-call-id").is_empty());
    let payloads = sse_payloads(&resp.text().await.unwrap());
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(content(&payloads), "Hello from the Switchyard mock upstream, how are you?");
    assert!(payloads.iter().all(|p| !p.contains("\"usage\":{")), "no usage chunk: {payloads:?}");
    let sent = gw.mock.state.requests().pop().unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);

    let resp = gw.post("/v1/chat/completions", &stream_body("g", Some(true))).await;
    let payloads = sse_payloads(&resp.text().await.unwrap());
    let usage: Value = serde_json::from_str(&payloads[payloads.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 9);

    // The gateway counted the tokens of both streams, usage asked for or not.
    gw.metrics_with(&["litellm_output_tokens_metric_total{", "model=\"g\"", "requested_model=\"g\"", "} 18"]).await;
    gw.stop().await;
}

#[actix_web::test]
async fn chunks_are_forwarded_before_the_upstream_finishes() {
    let gw = start(STREAMS).await;
    // The upstream sends its first chunk and then nothing: a buffering proxy would never answer.
    let resp = gw.post("/v1/chat/completions", &stream_body("stalling", None)).await;
    let mut body = resp.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(10), body.next())
        .await
        .expect("first chunk is flushed")
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&first);
    assert!(text.starts_with("data: {") && text.contains("chat.completion.chunk"), "{text}");
    gw.stop().await;
}

#[actix_web::test]
async fn a_client_that_goes_away_cancels_the_upstream_call() {
    let gw = start(STREAMS).await;
    let resp = gw.post("/v1/chat/completions", &stream_body("slow-stream", None)).await;
    let mut body = resp.bytes_stream();
    body.next().await.unwrap().unwrap();
    drop(body);
    let mut cut = 0;
    for _ in 0..50 {
        cut = gw.mock.state.streams_cut();
        if cut > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(cut, 1, "the upstream stream was closed when the client left");
    gw.stop().await;
}

#[actix_web::test]
async fn a_silent_upstream_stream_ends_with_a_timeout_error_event() {
    let gw = start(STREAMS).await;
    let resp = gw.post("/v1/chat/completions", &stream_body("quiet", None)).await;
    let payloads = sse_payloads(&resp.text().await.unwrap());
    let last: Value = serde_json::from_str(payloads.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "408", "{payloads:?}");
    gw.stop().await;
}

#[actix_web::test]
async fn legacy_completions_stream_too() {
    let gw = start(STREAMS).await;
    let resp = gw.post("/completions", &json!({"model": "text", "prompt": "hi", "stream": true})).await;
    let payloads = sse_payloads(&resp.text().await.unwrap());
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
    let text: String = payloads
        .iter()
        .filter_map(|p| serde_json::from_str::<Value>(p).ok())
        .filter_map(|v| v["choices"][0]["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(text, "Hello from the Switchyard mock upstream, how are you?");
    gw.stop().await;
}
