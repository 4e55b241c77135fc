//! Routing strategies, retries, cooldown, fallbacks and upstream faults, as a client sees them.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{chat_body, error_of, header, start};

/// Which deployment answered each of `n` sequential requests.
async fn served_by(gw: &crate::support::Gateway, model: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let resp = gw.chat(model).await;
        assert_eq!(resp.status(), 200);
        ids.push(header(&resp, "x-litellm-model-id").to_string());
    }
    ids
}

fn count(ids: &[String]) -> HashMap<&str, usize> {
    ids.iter().fold(HashMap::new(), |mut m, id| {
        *m.entry(id.as_str()).or_default() += 1;
        m
    })
}

#[actix_web::test]
async fn simple_shuffle_follows_the_weights() {
    let gw = start(
        r#"
model_list:
  - {model_name: g, litellm_params: {model: openai/m, api_base: "{mock}", weight: 9}, model_info: {id: heavy}}
  - {model_name: g, litellm_params: {model: openai/m, api_base: "{mock}", weight: 1}, model_info: {id: light}}
"#,
    )
    .await;
    let ids = served_by(&gw, "g", 200).await;
    let c = count(&ids);
    // 9:1 weights: heavy ~180 of 200 (sd ~4); P(heavy <= 150) and P(light == 0) are below 1e-9.
    assert!(c.get("heavy").copied().unwrap_or(0) > 150, "{c:?}");
    assert!(c.get("light").copied().unwrap_or(0) > 0, "weights share traffic, they do not exclude: {c:?}");
    gw.stop().await;
}

#[actix_web::test]
async fn cost_based_routing_picks_the_cheapest_deployment() {
    let gw = start(
        r#"
model_list:
  - {model_name: g, litellm_params: {model: openai/m, api_base: "{mock}", input_cost_per_token: 0.01, output_cost_per_token: 0.01}, model_info: {id: dear}}
  - {model_name: g, litellm_params: {model: openai/m, api_base: "{mock}", input_cost_per_token: 0.000001, output_cost_per_token: 0.000002}, model_info: {id: cheap}}
router_settings: {routing_strategy: cost-based-routing}
"#,
    )
    .await;
    assert_eq!(count(&served_by(&gw, "g", 8).await), HashMap::from([("cheap", 8)]));
    gw.stop().await;
}

#[actix_web::test]
async fn usage_based_routing_balances_tokens_and_respects_tpm() {
    let gw = start(
        r#"
model_list:
  - {model_name: g, litellm_params: {model: openai/m, api_base: "{mock}", tpm: 100000}, model_info: {id: a}}
  - {model_name: g, litellm_params: {model: openai/m, api_base: "{mock}", tpm: 100000}, model_info: {id: b}}
  - {model_name: tiny, litellm_params: {model: openai/m, api_base: "{mock}", tpm: 1}, model_info: {id: full}}
  - {model_name: tiny, litellm_params: {model: openai/m, api_base: "{mock}", tpm: 100000}, model_info: {id: roomy}}
router_settings: {routing_strategy: usage-based-routing-v2}
"#,
    )
    .await;
    // Each answer uses the same tokens, so after every second request both have used the same
    // (ties are broken at random) and each pair of requests is split between them.
    let ids = served_by(&gw, "g", 6).await;
    for pair in ids.chunks(2) {
        assert_ne!(pair[0], pair[1], "{ids:?}");
    }
    // A request never fits the 1-token tpm.
    assert_eq!(count(&served_by(&gw, "tiny", 4).await), HashMap::from([("roomy", 4)]));
    gw.stop().await;
}

#[actix_web::test]
async fn latency_based_routing_moves_traffic_to_the_faster_deployment() {
    let gw = start(
        r#"
model_list:
  - {model_name: g, litellm_params: {model: openai/slow-300ms, api_base: "{mock}"}, model_info: {id: slow}}
  - {model_name: g, litellm_params: {model: openai/fast, api_base: "{mock}"}, model_info: {id: fast}}
router_settings: {routing_strategy: latency-based-routing}
"#,
    )
    .await;
    // Deployments without measurements are tried first; once both are measured, the fast one
    // wins. (Outcomes reach the deployment actors on a short tick, hence the pauses.)
    let mut measured = HashSet::new();
    for _ in 0..20 {
        measured.extend(served_by(&gw, "g", 1).await);
        if measured.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(measured.len(), 2, "both deployments were tried while unmeasured");
    // Successes reach the actors on a tick: once both latencies are in, the fast one wins.
    let mut last = HashMap::new();
    for _ in 0..50 {
        last = count(&served_by(&gw, "g", 6).await).into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        if last == HashMap::from([("fast".to_string(), 6)]) {
            break;
        }
    }
    assert_eq!(last, HashMap::from([("fast".to_string(), 6)]));
    gw.stop().await;
}

#[actix_web::test]
async fn least_busy_routing_avoids_the_deployment_with_a_request_in_flight() {
    let gw = start(
        r#"
model_list:
  - {model_name: g, litellm_params: {model: openai/stall, api_base: "{mock}"}, model_info: {id: a}}
  - {model_name: g, litellm_params: {model: openai/stall, api_base: "{mock}"}, model_info: {id: b}}
router_settings: {routing_strategy: least-busy}
"#,
    )
    .await;
    let mut body = chat_body("g");
    body["stream"] = json!(true);
    // A stalled stream keeps one deployment busy.
    let busy = gw.post("/v1/chat/completions", &body).await;
    let busy_id = header(&busy, "x-litellm-model-id").to_string();
    let second = gw.post("/v1/chat/completions", &body).await;
    assert_ne!(header(&second, "x-litellm-model-id"), busy_id);
    drop((busy, second));
    gw.stop().await;
}

#[actix_web::test]
async fn retries_recover_from_a_flaky_upstream_and_say_so() {
    let gw = start(
        r#"
model_list:
  - {model_name: g, litellm_params: {model: openai/flaky-2, api_base: "{mock}"}}
router_settings: {num_retries: 2, retry_after: 0}
"#,
    )
    .await;
    let resp = gw.chat("g").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-litellm-attempted-retries"), "2");
    assert_eq!(gw.mock.state.served(), 3);
    gw.stop().await;
}

#[actix_web::test]
async fn a_429_with_retry_after_is_retried_then_returned_as_429() {
    let gw = start(
        r#"
model_list:
  - {model_name: g, litellm_params: {model: openai/error-429-retry-1, api_base: "{mock}"}}
router_settings: {num_retries: 1}
"#,
    )
    .await;
    let resp = gw.chat("g").await;
    assert_eq!(header(&resp, "x-litellm-attempted-retries"), "1");
    assert_eq!(header(&resp, "retry-after"), "1");
    let err = error_of(resp, 429).await;
    assert_eq!(err["type"], "rate_limit_error");
    assert_eq!(gw.mock.state.served(), 2);
    gw.stop().await;
}

#[actix_web::test]
async fn timeouts_connection_errors_and_malformed_answers_are_gateway_errors() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/v1", closed.local_addr().unwrap());
    drop(closed);
    let gw = start(&format!(
        r#"
model_list:
  - {{model_name: slow, litellm_params: {{model: openai/slow-3000ms, api_base: "{{mock}}", timeout: 0.3}}}}
  - {{model_name: reset, litellm_params: {{model: openai/reset, api_base: "{{mock}}"}}}}
  - {{model_name: malformed, litellm_params: {{model: openai/malformed, api_base: "{{mock}}"}}}}
  - {{model_name: dead, litellm_params: {{model: openai/m, api_base: "{dead}"}}}}
router_settings: {{num_retries: 0}}
"#
    ))
    .await;
    let err = error_of(gw.chat("slow").await, 408).await;
    assert!(err["message"].as_str().unwrap().starts_with("Timeout"), "{err}");
    // The request's own timeout wins over the deployment's.
    let mut body = chat_body("slow");
    body["timeout"] = json!(0.1);
    error_of(gw.post("/v1/chat/completions", &body).await, 408).await;
    error_of(gw.chat("reset").await, 502).await;
    let err = error_of(gw.chat("malformed").await, 502).await;
    assert!(err["message"].as_str().unwrap().contains("invalid JSON"), "{err}");
    let err = error_of(gw.chat("dead").await, 502).await;
    assert!(err["message"].as_str().unwrap().contains("deployments tried"), "{err}");
    gw.stop().await;
}

#[actix_web::test]
async fn a_failing_deployment_cools_down_and_comes_back() {
    let gw = start(
        r#"
model_list:
  - {model_name: g, litellm_params: {model: openai/flaky-1, api_base: "{mock}", order: 1}, model_info: {id: primary}}
  - {model_name: g, litellm_params: {model: openai/m, api_base: "{mock}", order: 2}, model_info: {id: backup}}
router_settings: {allowed_fails: 0, cooldown_time: 1, num_retries: 1}
"#,
    )
    .await;
    // The primary fails once (500): it cools down and the retry goes to the backup.
    let resp = gw.chat("g").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-litellm-model-id"), "backup");
    // The actor records the failure and publishes the cooldown (state 2, caused by a 500).
    gw.metrics_with(&["litellm_deployment_state{", "model_id=\"primary\"", "} 2"]).await;
    gw.metrics_with(&["litellm_deployment_cooled_down_total{", "exception_status=\"500\"", "model_id=\"primary\""])
        .await;
    assert_eq!(served_by(&gw, "g", 3).await, ["backup", "backup", "backup"]);
    // After cooldown_time the preferred deployment takes traffic again (and now succeeds); its
    // state is "partial outage" while the failure is within the last minute.
    gw.metrics_with(&["litellm_deployment_state{", "model_id=\"primary\"", "} 1"]).await;
    assert_eq!(served_by(&gw, "g", 2).await, ["primary", "primary"]);
    gw.stop().await;
}

#[actix_web::test]
async fn every_deployment_cooling_down_is_429_no_deployments_available() {
    let gw = start(
        r#"
model_list:
  - {model_name: g, litellm_params: {model: openai/error-401, api_base: "{mock}"}}
router_settings: {num_retries: 0, cooldown_time: 30}
"#,
    )
    .await;
    error_of(gw.chat("g").await, 401).await; // 401 cools down at once
    gw.metrics_with(&["litellm_deployment_state{", "} 2"]).await;
    let resp = gw.chat("g").await;
    let retry_after: u64 = header(&resp, "retry-after").parse().unwrap();
    assert!((1..=30).contains(&retry_after), "Retry-After is when the cooldown ends: {retry_after}");
    let err = error_of(resp, 429).await;
    let message = err["message"].as_str().unwrap();
    assert!(message.starts_with("No deployments available"), "{err}");
    assert!(message.contains("AuthenticationError"), "the 429 names why the deployment cools down: {err}");
    assert_eq!(gw.mock.state.served(), 1);
    gw.stop().await;
}

const FALLBACKS: &str = r#"
model_list:
  - {model_name: broken, litellm_params: {model: openai/error-500, api_base: "{mock}"}}
  - {model_name: short, litellm_params: {model: openai/context-window, api_base: "{mock}"}}
  - {model_name: strict, litellm_params: {model: openai/content-policy, api_base: "{mock}"}}
  - {model_name: lonely, litellm_params: {model: openai/error-503, api_base: "{mock}"}}
  - {model_name: small, litellm_params: {model: openai/m, api_base: "{mock}"}, model_info: {max_input_tokens: 5}}
  - {model_name: healthy, litellm_params: {model: openai/m, api_base: "{mock}"}}
  - {model_name: long, litellm_params: {model: openai/long, api_base: "{mock}"}}
  - {model_name: lenient, litellm_params: {model: openai/lenient, api_base: "{mock}"}}
router_settings:
  num_retries: 0
  enable_pre_call_checks: true
  fallbacks: [{"broken": ["healthy"]}]
  context_window_fallbacks: [{"short": ["long"]}, {"small": ["long"]}]
  content_policy_fallbacks: [{"strict": ["lenient"]}]
  default_fallbacks: ["healthy"]
"#;

async fn fallback_group(gw: &crate::support::Gateway, body: Value) -> (String, String) {
    let resp = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(resp.status(), 200, "{}", body["model"]);
    (header(&resp, "x-litellm-model-group").to_string(), header(&resp, "x-litellm-attempted-fallbacks").to_string())
}

#[actix_web::test]
async fn every_kind_of_fallback() {
    let gw = start(FALLBACKS).await;
    assert_eq!(fallback_group(&gw, chat_body("broken")).await, ("healthy".into(), "1".into()));
    assert_eq!(fallback_group(&gw, chat_body("short")).await, ("long".into(), "1".into()));
    assert_eq!(fallback_group(&gw, chat_body("strict")).await, ("lenient".into(), "1".into()));
    assert_eq!(fallback_group(&gw, chat_body("lonely")).await, ("healthy".into(), "1".into()), "default_fallbacks");
    // Pre-call check: the prompt does not fit max_input_tokens, so the context-window list applies.
    let mut long_prompt = chat_body("small");
    long_prompt["messages"][0]["content"] = json!("word ".repeat(50));
    assert_eq!(fallback_group(&gw, long_prompt).await, ("long".into(), "1".into()));
    // mock_testing_fallbacks fails the first group without calling it.
    let mut mocked = chat_body("healthy");
    mocked["mock_testing_fallbacks"] = json!(true);
    let resp = gw.post("/v1/chat/completions", &mocked).await;
    // "healthy" has no fallbacks of its own but default_fallbacks names itself: nothing to try.
    error_of(resp, 500).await;
    let mut mocked = chat_body("broken");
    mocked["mock_testing_fallbacks"] = json!(true);
    assert_eq!(fallback_group(&gw, mocked).await, ("healthy".into(), "1".into()));
    let metrics = gw.http.get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(
            "litellm_deployment_successful_fallbacks_total{fallback_model=\"healthy\",requested_model=\"broken\"} 2"
        ),
        "{metrics}"
    );
    gw.stop().await;
}

#[actix_web::test]
async fn a_plain_bad_request_does_not_fall_back() {
    let yaml = FALLBACKS.replace("openai/error-500", "openai/error-400");
    let gw = start(&yaml).await;
    error_of(gw.chat("broken").await, 400).await;
    gw.stop().await;
}

#[actix_web::test]
async fn fallbacks_go_down_the_list_and_are_counted_once_each() {
    let gw = start(
        r#"
model_list:
  - {model_name: broken, litellm_params: {model: openai/error-500, api_base: "{mock}"}}
  - {model_name: also-broken, litellm_params: {model: openai/error-503, api_base: "{mock}"}}
  - {model_name: healthy, litellm_params: {model: openai/m, api_base: "{mock}"}}
router_settings: {num_retries: 0, fallbacks: [{"broken": ["also-broken", "healthy"]}]}
"#,
    )
    .await;
    let resp = gw.chat("broken").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-litellm-attempted-fallbacks"), "2");
    assert_eq!(header(&resp, "x-litellm-model-group"), "healthy");
    let metrics = gw.http.get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(
            "litellm_deployment_failed_fallbacks_total{fallback_model=\"also-broken\",requested_model=\"broken\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "litellm_deployment_successful_fallbacks_total{fallback_model=\"healthy\",requested_model=\"broken\"} 1"
        ),
        "{metrics}"
    );
    gw.stop().await;
}

#[actix_web::test]
async fn wildcard_groups_route_any_matching_model_under_its_own_name() {
    let gw = start(
        r#"
model_list:
  - {model_name: "openai/*", litellm_params: {model: "openai/*", api_base: "{mock}"}}
  - {model_name: "*", litellm_params: {model: "openai/*", api_base: "{mock}"}}
  - {model_name: exact, litellm_params: {model: openai/exact-upstream, api_base: "{mock}"}}
  - {model_name: broken, litellm_params: {model: openai/error-500, api_base: "{mock}"}}
router_settings: {num_retries: 0, fallbacks: [{broken: ["some-other-model"]}]}
"#,
    )
    .await;
    let sent_model = |gw: &crate::support::Gateway| gw.mock.state.requests().pop().unwrap()["model"].clone();
    let resp = gw.chat("gpt-4o-anything").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-litellm-model-group"), "*");
    assert_eq!(sent_model(&gw), "gpt-4o-anything");
    // The most specific pattern wins, and its `*` is what goes upstream.
    let resp = gw.chat("openai/gpt-4o").await;
    assert_eq!(header(&resp, "x-litellm-model-group"), "openai/*");
    assert_eq!(sent_model(&gw), "gpt-4o");
    // An exact group wins over every pattern.
    let resp = gw.chat("exact").await;
    assert_eq!(header(&resp, "x-litellm-model-group"), "exact");
    assert_eq!(sent_model(&gw), "exact-upstream");
    // A fallback to a name only a wildcard serves.
    let resp = gw.chat("broken").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-litellm-attempted-fallbacks"), "1");
    assert_eq!(sent_model(&gw), "some-other-model");
    gw.stop().await;
}
