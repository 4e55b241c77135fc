//! Every endpoint, auth, error bodies, headers and cost.

use serde_json::{json, Value};

use crate::support::{chat_body, error_of, header, start, KEY};

const BASIC: &str = r#"
model_list:
  - model_name: gpt-4o-mini
    litellm_params: {model: openai/gpt-4o-mini, api_base: "{mock}", api_key: upstream-key}
    model_info: {id: mini-1}
  - model_name: text-embedding-3-small
    litellm_params: {model: openai/text-embedding-3-small, api_base: "{mock}", api_key: upstream-key}
    model_info: {mode: embedding}
  - model_name: instruct
    litellm_params: {model: openai/gpt-3.5-turbo-instruct, api_base: "{mock}"}
    model_info: {mode: completion}
  - model_name: canned
    litellm_params: {model: openai/gpt-4o-mini, mock_response: "canned answer"}
  - model_name: slow
    litellm_params: {model: openai/slow-300ms, api_base: "{mock}"}
router_settings:
  num_retries: 0
  model_group_alias: {"gpt-4o-mini-alias": "gpt-4o-mini"}
general_settings:
  master_key: sk-test
  max_request_size_mb: 0.01
"#;

#[actix_web::test]
async fn chat_passes_the_body_through_and_answers_with_litellm_headers_and_cost() {
    let gw = start(BASIC).await;
    // Twelve words in, nine words (the mock's reply) out: gpt-4o-mini prices that at 7.2e-06.
    let body = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "one two three four five six seven eight nine ten eleven twelve"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
        ]}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
        "n": 1, "logprobs": false, "seed": 7, "user": "u-1", "metadata": {"team": "a"},
        "mock_testing_fallbacks": false
    });
    let resp = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-litellm-model-group"), "gpt-4o-mini");
    assert_eq!(header(&resp, "x-litellm-model-id"), "mini-1");
    assert_eq!(header(&resp, "x-litellm-model-api-base"), gw.mock.api_base());
    assert_eq!(header(&resp, "x-litellm-response-cost").parse::<f64>().unwrap(), 7.2e-06);
    assert_eq!(header(&resp, "x-litellm-attempted-retries"), "0");
    assert_eq!(header(&resp, "x-litellm-attempted-fallbacks"), "0");
    assert_eq!(header(&resp, "llm_provider-x-ratelimit-remaining-requests"), "9999");
    assert!(uuid_like(header(&resp, "x-litellm-call-id")));
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "Hello from the Switchyard mock upstream, how are you?");
    assert_eq!(answer["usage"]["prompt_tokens"], 12);

    let sent = gw.mock.state.requests().pop().unwrap();
    for key in ["messages", "tools", "tool_choice", "response_format", "n", "logprobs", "seed", "user", "metadata"] {
        assert_eq!(sent[key], body[key], "{key} passes through untouched");
    }
    assert_eq!(sent["model"], "gpt-4o-mini");
    assert!(sent.get("mock_testing_fallbacks").is_none(), "gateway keys are not sent upstream");

    // The overhead header leaves out the upstream's time: of a 300 ms upstream call, almost all
    // is upstream time (the margin is for a loaded machine, not a performance bound).
    let resp = gw.chat("slow").await;
    let total: f64 = header(&resp, "x-litellm-response-duration-ms").parse().unwrap();
    let overhead: f64 = header(&resp, "x-litellm-overhead-duration-ms").parse().unwrap();
    assert!(total >= 300.0, "total {total} ms");
    assert!(overhead < total - 250.0, "overhead {overhead} ms of {total} ms");
    gw.stop().await;
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

#[actix_web::test]
async fn completions_embeddings_and_aliases() {
    let gw = start(BASIC).await;
    for path in ["/completions", "/v1/completions"] {
        let resp = gw.post(path, &json!({"model": "instruct", "prompt": "say hi"})).await;
        assert_eq!(resp.status(), 200, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["object"], "text_completion");
        assert_eq!(body["choices"][0]["text"], "Hello from the Switchyard mock upstream, how are you?");
    }
    let resp = gw.post("/embeddings", &json!({"model": "text-embedding-3-small", "input": ["a b", "c"]})).await;
    assert_eq!(resp.status(), 200);
    assert!(header(&resp, "x-litellm-response-cost").parse::<f64>().unwrap() > 0.0);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert_eq!(body["usage"]["prompt_tokens"], 3);

    let resp = gw.chat("gpt-4o-mini-alias").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-litellm-model-group"), "gpt-4o-mini");
    gw.stop().await;
}

#[actix_web::test]
async fn mock_response_in_config_and_in_the_request() {
    let gw = start(BASIC).await;
    let resp = gw.chat("canned").await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "canned answer");
    assert!(body["usage"]["total_tokens"].as_u64().unwrap() > 0);

    let mut req = chat_body("gpt-4o-mini");
    req["mock_response"] = json!("from the request");
    let body: Value = gw.post("/chat/completions", &req).await.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "from the request");

    req["mock_response"] = json!("litellm.RateLimitError");
    error_of(gw.post("/chat/completions", &req).await, 429).await;
    assert!(gw.mock.state.requests().is_empty(), "mock responses never reach the upstream");
    gw.stop().await;
}

#[actix_web::test]
async fn model_listing_and_info_endpoints() {
    let gw = start(BASIC).await;
    for path in ["/models", "/v1/models"] {
        let body: Value = gw.get(path).await.json().await.unwrap();
        assert_eq!(body["object"], "list");
        let ids: Vec<&str> = body["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["gpt-4o-mini", "text-embedding-3-small", "instruct", "canned", "slow", "gpt-4o-mini-alias"]);
        assert_eq!(body["data"][0]["object"], "model");
    }
    let info: Value = gw.get("/model/info").await.json().await.unwrap();
    let first = &info["data"][0];
    assert_eq!(first["model_name"], "gpt-4o-mini");
    assert_eq!(first["model_info"]["id"], "mini-1");
    assert_eq!(first["model_info"]["input_cost_per_token"], 1.5e-07);
    assert!(first["litellm_params"].get("api_key").is_none(), "keys are never shown");
    assert!(!info.to_string().contains("upstream-key"));

    let groups: Value = gw.get("/v1/model_group/info").await.json().await.unwrap();
    let embedding =
        groups["data"].as_array().unwrap().iter().find(|g| g["model_group"] == "text-embedding-3-small").unwrap();
    assert_eq!(embedding["mode"], "embedding");
    assert_eq!(embedding["providers"], json!(["openai"]));
    gw.stop().await;
}

#[actix_web::test]
async fn health_endpoints_and_metrics() {
    let yaml = BASIC.replace(
        "router_settings:",
        "  - model_name: broken\n    litellm_params: {model: openai/error-500, api_base: \"{mock}\"}\nrouter_settings:",
    );
    let gw = start(&yaml).await;
    let live = gw.http.get(gw.url("/health/liveliness")).send().await.unwrap();
    assert_eq!(live.status(), 200);
    assert_eq!(live.json::<Value>().await.unwrap(), json!("I'm alive!"));
    let ready: Value = gw.http.get(gw.url("/health/readiness")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["status"], "connected");

    error_of(gw.http.get(gw.url("/health")).send().await.unwrap(), 401).await;
    let health: Value = gw.get("/health").await.json().await.unwrap();
    assert_eq!(health["healthy_count"], 5, "{health}");
    assert_eq!(health["unhealthy_count"], 1, "{health}");
    assert_eq!(health["unhealthy_endpoints"][0]["model"], "openai/error-500");
    assert!(health["unhealthy_endpoints"][0]["error"].as_str().unwrap().contains("500"));

    assert_eq!(gw.chat("gpt-4o-mini").await.status(), 200);
    let metrics = gw.http.get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for name in [
        "litellm_proxy_total_requests_metric_total{requested_model=\"gpt-4o-mini\",status_code=\"200\"} 1",
        "litellm_deployment_success_responses_total",
        "litellm_llm_api_latency_metric",
        "litellm_overhead_latency_metric",
        "litellm_spend_metric_total",
        "litellm_input_tokens_metric_total",
        "litellm_output_tokens_metric_total",
        "litellm_total_tokens_metric_total",
        "litellm_requests_metric_total",
        "litellm_deployment_state",
    ] {
        assert!(metrics.contains(name), "metrics lack {name}:\n{metrics}");
    }
    gw.stop().await;
}

#[actix_web::test]
async fn the_master_key_is_required_in_any_litellm_header() {
    let gw = start(BASIC).await;
    let url = gw.url("/v1/chat/completions");
    let body = chat_body("gpt-4o-mini");
    let err = error_of(gw.http.post(&url).json(&body).send().await.unwrap(), 401).await;
    assert_eq!(err["type"], "auth_error");
    let err = error_of(gw.http.post(&url).bearer_auth("sk-wrong").json(&body).send().await.unwrap(), 401).await;
    assert!(err["message"].as_str().unwrap().contains("sk-...rong"));
    for name in ["x-api-key", "api-key", "x-litellm-api-key"] {
        let resp = gw.http.post(&url).header(name, KEY).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{name}");
    }
    error_of(gw.http.get(gw.url("/v1/models")).send().await.unwrap(), 401).await;
    gw.stop().await;
}

#[actix_web::test]
async fn bad_requests_get_the_openai_error_body() {
    let gw = start(BASIC).await;
    let url = gw.url("/v1/chat/completions");
    let send = |body: &'static str| {
        gw.http.post(&url).bearer_auth(KEY).header("content-type", "application/json").body(body).send()
    };

    let err = error_of(send("{not json").await.unwrap(), 400).await;
    assert!(err["message"].as_str().unwrap().contains("Invalid JSON"));
    let err = error_of(send(r#"{"messages":[{"role":"user","content":"x"}]}"#).await.unwrap(), 400).await;
    assert_eq!(err["param"], "model");
    let err = error_of(send(r#"{"model":"gpt-4o-mini"}"#).await.unwrap(), 400).await;
    assert_eq!(err["param"], "messages");
    let err = error_of(gw.chat("nope").await, 400).await;
    assert!(err["message"].as_str().unwrap().starts_with("Invalid model name passed in model=nope"));

    // max_request_size_mb: 0.01 is about 10 KB.
    let big = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x".repeat(20_000)}]});
    error_of(gw.post("/v1/chat/completions", &big).await, 413).await;

    let err = error_of(gw.get("/v1/no/such/endpoint").await, 404).await;
    assert_eq!(err["type"], "not_found_error");
    gw.stop().await;
}

#[actix_web::test]
async fn upstream_client_errors_pass_through_with_their_status_and_body() {
    let yaml = r#"
model_list:
  - model_name: unprocessable
    litellm_params: {model: openai/error-422, api_base: "{mock}"}
  - model_name: unauthorized
    litellm_params: {model: openai/error-401, api_base: "{mock}"}
"#;
    let gw = start(yaml).await;
    let err = error_of(gw.chat("unprocessable").await, 422).await;
    assert!(err["message"].as_str().unwrap().starts_with("mock upstream error 422"), "{err}");
    assert_eq!(err["type"], "invalid_request_error");
    error_of(gw.chat("unauthorized").await, 401).await;
    assert_eq!(gw.mock.state.served(), 2, "4xx are not retried");
    gw.stop().await;
}

#[actix_web::test]
async fn background_health_checks_run_on_their_own_and_answer_health() {
    let gw = start(
        r#"
model_list:
  - {model_name: ok, litellm_params: {model: openai/m, api_base: "{mock}"}}
  - {model_name: down, litellm_params: {model: openai/error-503, api_base: "{mock}"}}
general_settings: {master_key: sk-test, background_health_checks: true, health_check_interval: 60}
"#,
    )
    .await;
    // The first round runs at startup, without any request.
    for _ in 0..50 {
        if gw.mock.state.served() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(gw.mock.state.served(), 2);
    let health: Value = gw.get("/health").await.json().await.unwrap();
    assert_eq!((health["healthy_count"].as_u64(), health["unhealthy_count"].as_u64()), (Some(1), Some(1)), "{health}");
    assert!(health["checked_at"].is_string());
    assert_eq!(gw.mock.state.served(), 2, "/health answered from the background check");
    gw.stop().await;
}
