//! The event log as a consumer sees it: exactly the expected events, fields matching what the
//! client saw, valid against `schemas/events/`.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::support::{chat_body, header, start, Gateway};

pub fn validators() -> [(String, jsonschema::Validator); 3] {
    ["request", "response", "deployment"].map(|kind| {
        let path = format!("{}/schemas/events/{kind}.json", env!("CARGO_MANIFEST_DIR"));
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        (kind.to_string(), jsonschema::validator_for(&schema).unwrap())
    })
}

/// Every event validates against the schema of its type; event ids are unique.
pub fn assert_valid(events: &[Value]) {
    let validators = validators();
    let mut ids = HashSet::new();
    for event in events {
        let kind = event["type"].as_str().unwrap();
        let (_, validator) =
            validators.iter().find(|(k, _)| k == kind).unwrap_or_else(|| panic!("unknown type {kind}"));
        let errors: Vec<String> =
            validator.iter_errors(event).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(errors.is_empty(), "{kind} event does not match its schema: {errors:?}\n{event}");
        assert!(ids.insert(event["event_id"].as_str().unwrap().to_string()), "duplicate event_id");
    }
}

/// The request and response events of one call, in log order.
fn call_events<'a>(events: &'a [Value], call_id: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["request_id"] == call_id).collect()
}

const CONFIG: &str = r#"
model_list:
  - {model_name: gpt-4o-mini, litellm_params: {model: openai/gpt-4o-mini, api_base: "{mock}"}, model_info: {id: mini}}
  - {model_name: broken, litellm_params: {model: openai/error-500, api_base: "{mock}"}, model_info: {id: broken-1}}
  - {model_name: slow-stream, litellm_params: {model: openai/stream-delay-200ms, api_base: "{mock}"}}
router_settings:
  num_retries: 0
  fallbacks: [{"broken": ["gpt-4o-mini"]}]
"#;

async fn call(gw: &Gateway, body: Value) -> (String, u16, Option<f64>, String) {
    let resp = gw.post("/v1/chat/completions", &body).await;
    let id = header(&resp, "x-litellm-call-id").to_string();
    let status = resp.status().as_u16();
    let cost = resp.headers().get("x-litellm-response-cost").map(|v| v.to_str().unwrap().parse().unwrap());
    (id, status, cost, resp.text().await.unwrap())
}

#[actix_web::test]
async fn every_call_leaves_a_request_and_a_response_event() {
    let gw = start(CONFIG).await;
    let mut body = chat_body("gpt-4o-mini");
    body["user"] = json!("alice");
    body["metadata"] = json!({"tags": ["team-a", "batch"]});
    body["temperature"] = json!(0.2);
    let (plain, _, cost, _) = call(&gw, body).await;
    let mut stream = chat_body("gpt-4o-mini");
    stream["stream"] = json!(true);
    let (streamed, _, _, _) = call(&gw, stream).await;
    let (fell_back, status, _, _) = call(&gw, chat_body("broken")).await;
    assert_eq!(status, 200);
    let (unknown, status, _, _) = call(&gw, chat_body("nope")).await;
    assert_eq!(status, 400);

    let events = gw.events(8).await;
    assert_eq!(events.len(), 8, "{events:#?}");
    assert_valid(&events);
    for id in [&plain, &streamed, &fell_back, &unknown] {
        let pair = call_events(&events, id);
        let kinds: Vec<&str> = pair.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["request", "response"], "call {id}");
    }

    let request = call_events(&events, &plain)[0];
    assert_eq!(request["requested_model"], "gpt-4o-mini");
    let unknown_request = call_events(&events, &unknown)[0];
    assert_eq!((&unknown_request["requested_model"], &unknown_request["model_group"]), (&json!("nope"), &Value::Null));
    // `user` is the key's user (none for the master key); `end_user` is the body's `user`.
    assert_eq!((&request["user"], &request["end_user"]), (&Value::Null, &json!("alice")));
    assert_eq!(request["tags"], json!(["team-a", "batch"]));
    assert_eq!(request["params"]["temperature"], 0.2);
    assert_eq!(request["messages"], Value::Null, "prompts are not stored by default");
    let expected_hash: String = {
        use sha2::Digest;
        sha2::Sha256::digest(crate::support::KEY.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    };
    assert_eq!(request["api_key_hash"], expected_hash);

    let response = call_events(&events, &plain)[1];
    assert_eq!(response["status"], "success");
    assert_eq!(response["http_status"], 200);
    assert_eq!(response["deployment_id"], "mini");
    assert_eq!(response["provider"], "openai");
    assert_eq!((response["prompt_tokens"].as_u64(), response["completion_tokens"].as_u64()), (Some(2), Some(9)));
    assert_eq!(response["cost"].as_f64(), cost, "the event's cost is the header's");
    assert_eq!(response["finish_reason"], "stop");
    assert_eq!(response["tokens_estimated"], false);
    assert_eq!(response["response"], Value::Null);

    let streamed = call_events(&events, &streamed)[1];
    assert_eq!(streamed["stream"], true);
    assert_eq!(streamed["completed"], true);
    assert_eq!(streamed["completion_tokens"], 9, "usage is learned even when the client did not ask");
    assert!(streamed["first_token_time"].is_string());
    assert!(streamed["cost"].as_f64().unwrap() > 0.0);

    let fallback = call_events(&events, &fell_back)[1];
    assert_eq!(
        (fallback["requested_model"].as_str(), fallback["model_group"].as_str()),
        (Some("broken"), Some("gpt-4o-mini"))
    );
    assert_eq!(fallback["fallbacks"], 1);
    assert_eq!(fallback["attempts"], 2);

    let failed = call_events(&events, &unknown)[1];
    assert_eq!((failed["status"].as_str(), failed["http_status"].as_u64()), (Some("failure"), Some(400)));
    assert!(failed["error_message"].as_str().unwrap().contains("Invalid model name"));
    gw.stop().await;
}

/// The request event names what the client asked for and the group it resolved to (here through
/// an alias), so a consumer need not resolve names itself.
#[actix_web::test]
async fn the_request_event_names_the_requested_model_and_its_group() {
    let gw = start(&format!("{CONFIG}  model_group_alias: {{\"mini-alias\": \"gpt-4o-mini\"}}\n")).await;
    let (plain, _, _, _) = call(&gw, chat_body("gpt-4o-mini")).await;
    let (aliased, status, _, _) = call(&gw, chat_body("mini-alias")).await;
    assert_eq!(status, 200);
    let events = gw.events(4).await;
    assert_valid(&events);
    for (id, requested) in [(&plain, "gpt-4o-mini"), (&aliased, "mini-alias")] {
        let request = call_events(&events, id)[0];
        assert_eq!(request["requested_model"], requested);
        assert_eq!(request["model_group"], "gpt-4o-mini", "{request}");
    }
    gw.stop().await;
}

#[actix_web::test]
async fn a_failed_call_and_an_abandoned_stream_still_report() {
    let gw = start(&CONFIG.replace("fallbacks: [{\"broken\": [\"gpt-4o-mini\"]}]", "fallbacks: []")).await;
    let (failed, status, _, _) = call(&gw, chat_body("broken")).await;
    assert_eq!(status, 500);

    let mut body = chat_body("slow-stream");
    body["stream"] = json!(true);
    let resp = gw.post("/v1/chat/completions", &body).await;
    let abandoned = header(&resp, "x-litellm-call-id").to_string();
    let mut chunks = resp.bytes_stream();
    chunks.next().await.unwrap().unwrap();
    drop(chunks);

    let events = gw.events(4).await;
    assert_valid(&events);
    let failed = call_events(&events, &failed)[1];
    assert_eq!((failed["status"].as_str(), failed["http_status"].as_u64()), (Some("failure"), Some(500)));
    assert_eq!(failed["deployment_id"], "broken-1");
    assert!(failed["error_message"].as_str().unwrap().contains("mock upstream error 500"));
    let abandoned = call_events(&events, &abandoned);
    assert_eq!(abandoned.len(), 2, "{events:#?}");
    assert_eq!(abandoned[1]["completed"], false);
    assert_eq!(abandoned[1]["tokens_estimated"], true);
    assert!(abandoned[1]["completion_tokens"].as_u64().unwrap() >= 1, "what was generated is counted");
    assert!(abandoned[1]["first_token_time"].is_string());
    gw.stop().await;
}

#[actix_web::test]
async fn prompts_and_answers_are_stored_only_when_asked() {
    let gw = start(
        r#"
model_list:
  - {model_name: g, litellm_params: {model: openai/m, api_base: "{mock}"}}
general_settings: {master_key: sk-test, store_prompts_in_spend_logs: true}
"#,
    )
    .await;
    let (id, _, _, _) = call(&gw, chat_body("g")).await;
    let events = gw.events(2).await;
    let pair = call_events(&events, &id);
    assert_eq!(pair[0]["messages"][0]["content"], "hello there");
    assert_eq!(
        pair[1]["response"]["choices"][0]["message"]["content"],
        "Hello from the Switchyard mock upstream, how are you?"
    );
    gw.stop().await;
}

#[actix_web::test]
async fn cooldowns_are_published_as_deployment_events() {
    let gw = start(
        r#"
model_list:
  - {model_name: g, litellm_params: {model: openai/error-500, api_base: "{mock}"}, model_info: {id: flaky}}
  - {model_name: g, litellm_params: {model: openai/m, api_base: "{mock}"}, model_info: {id: steady}}
router_settings: {allowed_fails: 0, cooldown_time: 0.5, num_retries: 0, routing_strategy: least-busy}
"#,
    )
    .await;
    // Until the flaky deployment answers once, it may not have been picked: try a few times.
    for _ in 0..10 {
        let _ = gw.chat("g").await;
    }
    // The cooldown (0.5 s) ends on the actor's timer: wait for its event rather than a fixed time.
    let mut events = Vec::new();
    for _ in 0..200 {
        events = gw.events(1).await;
        if events.iter().any(|e| e["change"] == "cooldown_left") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_valid(&events);
    let changes: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "deployment" && e["deployment_id"] == "flaky")
        .map(|e| e["change"].as_str().unwrap())
        .collect();
    assert_eq!(changes.first(), Some(&"cooldown_entered"), "{events:#?}");
    assert_eq!(changes.last(), Some(&"cooldown_left"), "{events:#?}");
    let entered = events.iter().find(|e| e["change"] == "cooldown_entered").unwrap();
    assert_eq!(entered["request_id"], Value::Null);
    assert!(entered["cooldown_until"].is_string());
    gw.stop().await;
}
