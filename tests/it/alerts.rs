//! Alerts as an operator sees them: the gateway (or `switchyard consume alerts` next to a Kafka
//! cluster) posting LiteLLM's Slack text and WebhookEvent JSON to a local receiver standing in
//! for Slack and the webhook, the records on `<prefix>.alerts`, and the rows of ClickHouse
//! `alerts`.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};
use switchyard::config::Config;
use switchyard::events::topics::{Start, Topics};

use crate::support::{header, start, Gateway, KEY};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// What the receiver got, and whether it answers 503 (down).
#[derive(Default)]
struct Received {
    posts: Mutex<Vec<(String, Value)>>,
    down: AtomicBool,
    attempts: AtomicUsize,
}

/// A local HTTP server standing in for Slack (`/slack`) and the webhook (`/webhook`).
struct Hooks {
    base: String,
    state: Arc<Received>,
}

async fn receive(req: HttpRequest, body: web::Bytes, state: web::Data<Received>) -> HttpResponse {
    state.attempts.fetch_add(1, Ordering::SeqCst);
    if state.down.load(Ordering::SeqCst) {
        return HttpResponse::ServiceUnavailable().finish();
    }
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    state.posts.lock().unwrap().push((req.path().to_string(), value));
    HttpResponse::Ok().body("ok")
}

impl Hooks {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Received::default());
        let data = web::Data::from(state.clone());
        let server = HttpServer::new(move || App::new().app_data(data.clone()).default_service(web::to(receive)))
            .workers(1)
            .disable_signals()
            .listen(listener)
            .unwrap()
            .run();
        actix_web::rt::spawn(server);
        Self { base, state }
    }

    fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    fn attempts(&self) -> usize {
        self.state.attempts.load(Ordering::SeqCst)
    }

    /// The bodies posted to `path` that `keep` accepts.
    fn posts(&self, path: &str, keep: impl Fn(&Value) -> bool) -> Vec<Value> {
        let posts = self.state.posts.lock().unwrap();
        posts.iter().filter(|(p, v)| p == path && keep(v)).map(|(_, v)| v.clone()).collect()
    }

    /// Waits (at most `wait`) for a body posted to `path` that `keep` accepts.
    async fn within(&self, wait: Duration, path: &str, keep: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(found) = self.posts(path, &keep).into_iter().next() {
                return Some(found);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (at most 30 s) for a body posted to `path` that `keep` accepts.
    async fn wait_for(&self, path: &str, keep: impl Fn(&Value) -> bool) -> Value {
        match self.within(Duration::from_secs(30), path, &keep).await {
            Some(found) => found,
            None => panic!("nothing matching was posted to {path}; got {:?}", self.state.posts.lock().unwrap()),
        }
    }
}

/// Slack's text of an alert of type `t`.
fn slack_of(t: &str) -> impl Fn(&Value) -> bool {
    let header = format!("Alert type: `{t}`\n");
    move |v: &Value| v["text"].as_str().is_some_and(|text| text.starts_with(&header))
}

/// A gateway config: `ok` is priced (0.011 USD a call), `broken` answers 500, `slow` takes
/// 1.5 s; alerting to the receiver with a threshold of 1 s. `extra` is appended.
fn config(hooks: &Hooks, router: &str, extra: &str) -> String {
    format!(
        r#"
model_list:
  - {{model_name: ok, litellm_params: {{model: openai/gpt-4o-mini, api_base: "{{mock}}", input_cost_per_token: 0.001, output_cost_per_token: 0.001}}}}
  - {{model_name: broken, litellm_params: {{model: openai/error-500, api_base: "{{mock}}"}}, model_info: {{id: broken-1}}}}
  - {{model_name: slow, litellm_params: {{model: openai/slow-1500ms, api_base: "{{mock}}"}}}}
router_settings: {{{router}}}
general_settings:
  master_key: {KEY}
  alerting: ["slack", "webhook"]
  alerting_threshold: 1
environment_variables: {{SLACK_WEBHOOK_URL: "{base}/slack", WEBHOOK_URL: "{base}/webhook"}}
{extra}
"#,
        base = hooks.base,
        router = if router.is_empty() { "num_retries: 0".to_string() } else { format!("num_retries: 0, {router}") },
    )
}

/// `yaml` with `general_settings.alerting_args: <args>`.
fn with_args(yaml: String, args: &str) -> String {
    yaml.replace("  alerting_threshold: 1\n", &format!("  alerting_threshold: 1\n  alerting_args: {args}\n"))
}

/// The records of `<prefix>.alerts` that `keep` accepts, once there are `n` (waits up to 30 s).
async fn on_topic(topics: &Topics, n: usize, keep: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut follower = topics.follow("alerts", Start::Beginning).unwrap();
    let mut found = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while found.len() < n && Instant::now() < deadline {
        for record in follower.next_batch(100, Duration::from_millis(100)).await.unwrap() {
            let value: Value = serde_json::from_slice(&record.value.unwrap()).unwrap();
            if keep(&value) {
                found.push(value);
            }
        }
    }
    assert!(found.len() >= n, "{} of {n} alerts on the topic: {found:?}", found.len());
    found
}

fn embedded_topics(gw: &Gateway) -> Topics {
    let dir = gw.events_dir.clone().expect("an embedded log of the test's own");
    let yaml = format!("event_log: {{path: {}}}", dir.display());
    Topics::open(&Config::from_yaml(&yaml, &|_| None).unwrap().event_log).unwrap()
}

/// Asserts `record` matches `schemas/events/<schema>.json`.
fn assert_schema(schema: &str, record: &Value) {
    let path = format!("{}/schemas/events/{schema}.json", env!("CARGO_MANIFEST_DIR"));
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(record).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "{errors:?}\n{record}");
}

#[actix_web::test]
async fn a_failing_call_is_an_llm_exceptions_alert_on_slack_the_webhook_and_the_topic() {
    let hooks = Hooks::start();
    let gw = start(&config(&hooks, "", "")).await;
    let resp = gw.chat("broken").await;
    assert_eq!(resp.status(), 500);
    let call = header(&resp, "x-litellm-call-id").to_string();

    let slack = hooks.wait_for("/slack", slack_of("llm_exceptions")).await;
    let text = slack["text"].as_str().unwrap();
    assert!(text.starts_with("Alert type: `llm_exceptions`\nLevel: `High`\nTimestamp: `"), "{text}");
    assert!(text.contains(" UTC`\n\nMessage: LLM API call failed: `500 "), "{text}");
    assert!(text.contains("Request Model: `broken`") && text.contains(&format!("Request ID: `{call}`")), "{text}");
    assert_eq!(slack.as_object().unwrap().len(), 1, "Slack gets {{\"text\": …}} only: {slack}");

    let hook = hooks.wait_for("/webhook", |v| v["alert_type"] == "llm_exceptions").await;
    assert_schema("alert", &hook);
    assert_eq!((hook["level"].as_str(), hook["details"]["request_id"].as_str()), (Some("High"), Some(call.as_str())));
    assert_eq!(hook["details"]["http_status"], 500);

    let records = on_topic(&embedded_topics(&gw), 1, |r| r["alert_type"] == "llm_exceptions").await;
    assert_schema("alert", &records[0]);
    assert_eq!(records[0]["alert_id"], hook["alert_id"], "what was delivered is the record on the topic");
    gw.metrics_with(&["switchyard_consumer_rows_written_total", "consumer=\"alerts\"", "table=\"slack\""]).await;
    gw.metrics_with(&["switchyard_consumer_rows_written_total", "consumer=\"alerts\"", "table=\"webhook\""]).await;
    gw.stop().await;
}

#[actix_web::test]
async fn a_slow_call_is_llm_too_slow_and_hangs_first() {
    let hooks = Hooks::start();
    let gw = start(&config(&hooks, "", "")).await;
    assert_eq!(gw.chat("slow").await.status(), 200);
    let slow = hooks.wait_for("/slack", slack_of("llm_too_slow")).await;
    let text = slow["text"].as_str().unwrap();
    assert!(text.contains("Level: `Low`"), "{text}");
    assert!(text.contains("s response time > Alerting threshold: 1s`\nRequest Model: `slow`"), "{text}");
    // While it was waiting for the upstream, longer than the threshold, it was hanging.
    let hanging = hooks.wait_for("/slack", slack_of("llm_requests_hanging")).await;
    let text = hanging["text"].as_str().unwrap();
    assert!(text.contains("Level: `Medium`") && text.contains("`Requests are hanging - 1s+ request time`"), "{text}");
    gw.stop().await;
}

#[actix_web::test]
async fn a_soft_budget_crossing_is_one_webhook_event_within_the_ttl() {
    let hooks = Hooks::start();
    let gw = start(&config(&hooks, "", "")).await;
    let created: Value =
        gw.post("/key/generate", &json!({"key_alias": "search-app", "soft_budget": 0.015})).await.json().await.unwrap();
    let (key, hash) = (created["key"].as_str().unwrap().to_string(), created["token"].as_str().unwrap().to_string());
    let spend = |n: usize| {
        let (gw, key) = (&gw, &key);
        async move {
            for _ in 0..n {
                let body = crate::support::chat_body("ok");
                let resp =
                    gw.http.post(gw.url("/v1/chat/completions")).bearer_auth(key).json(&body).send().await.unwrap();
                assert_eq!(resp.status(), 200);
            }
        }
    };
    // 0.011 USD a call: the second crosses 0.015.
    spend(2).await;
    let event = hooks.wait_for("/webhook", |v| v["event"] == "soft_budget_crossed").await;
    let fields: Vec<&str> = event.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(fields, switchyard::budget::alert::WEBHOOK_EVENT_FIELDS, "LiteLLM's WebhookEvent: {event}");
    assert_eq!((event["token"].as_str(), event["key_alias"].as_str()), (Some(hash.as_str()), Some("search-app")));
    assert_eq!((event["event_group"].as_str(), event["soft_budget"].as_f64()), (Some("key"), Some(0.015)));
    assert!((event["spend"].as_f64().unwrap() - 0.022).abs() < 1e-9, "{event}");
    assert_eq!(event["event_message"], "Key Budget: Soft Budget Crossed\n Total Soft Budget:`0.015`");
    let slack = hooks.wait_for("/slack", slack_of("budget_alerts")).await;
    assert!(slack["text"].as_str().unwrap().contains("Message: Key Budget: Soft Budget Crossed"), "{slack}");

    // The spend is reset and the soft budget crossed again: the gateway records it, the
    // consumer does not deliver it again within budget_alert_ttl (24 h).
    let reset = gw.post(&format!("/key/{hash}/reset_spend"), &json!({"reset_to": 0.0})).await;
    assert_eq!(reset.status(), 200);
    spend(2).await;
    let topics = embedded_topics(&gw);
    let crossings = on_topic(&topics, 2, |r| r["event"] == "soft_budget_crossed").await;
    for record in &crossings {
        assert_schema("budget_alert", record);
    }
    gw.metrics_with(&["switchyard_consumer_skipped_total", "consumer=\"alerts\"", "reason=\"deduplicated\""]).await;
    assert_eq!(hooks.posts("/webhook", |v| v["event"] == "soft_budget_crossed").len(), 1, "once within the TTL");
    assert_eq!(hooks.posts("/slack", slack_of("budget_alerts")).len(), 1);
    gw.stop().await;
}

#[actix_web::test]
async fn a_destination_that_is_down_gets_the_alert_once_it_is_back_across_a_restart() {
    let hooks = Hooks::start();
    hooks.set_down(true);
    let dir = std::env::temp_dir().join(format!("switchyard-alerts-{}", uuid::Uuid::new_v4()));
    let yaml = config(&hooks, "", &format!("event_log: {{path: {}}}", dir.display()));
    let first = start(&yaml).await;
    let resp = first.chat("broken").await;
    let call = header(&resp, "x-litellm-call-id").to_string();
    // Slack and the webhook answer 503: the consumer retries, holding its position.
    let deadline = Instant::now() + Duration::from_secs(30);
    while hooks.attempts() < 4 {
        assert!(Instant::now() < deadline, "the consumer did not try to deliver");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.metrics_with(&["switchyard_consumer_retries_total", "consumer=\"alerts\""]).await;
    first.stop().await;

    // A restart on the same log, then the destinations come back: the alert arrives, once.
    let second = start(&yaml).await;
    hooks.set_down(false);
    let has_call = |v: &Value| v["details"]["request_id"] == call.as_str();
    let hook = hooks.wait_for("/webhook", has_call).await;
    assert_eq!(hook["alert_type"], "llm_exceptions");
    let text_has_call = |v: &Value| v["text"].as_str().is_some_and(|t| t.contains(&call));
    hooks.wait_for("/slack", text_has_call).await;
    second.metrics_with(&["switchyard_consumer_batches_total", "consumer=\"alerts\""]).await;
    assert_eq!(hooks.posts("/webhook", has_call).len(), 1, "delivered once");
    assert_eq!(hooks.posts("/slack", text_has_call).len(), 1, "delivered once");
    second.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[actix_web::test]
async fn failures_on_one_deployment_are_an_outage_and_a_cooldown_an_alert() {
    let hooks = Hooks::start();
    let yaml = with_args(
        config(&hooks, "disable_cooldowns: true", ""),
        "{minor_outage_alert_threshold: 2, major_outage_alert_threshold: 3}",
    );
    let gw = start(&yaml).await;
    for _ in 0..3 {
        assert_eq!(gw.chat("broken").await.status(), 500);
    }
    let minor =
        hooks.wait_for("/slack", |v| v["text"].as_str().is_some_and(|t| t.contains("Minor Service Outage"))).await;
    let text = minor["text"].as_str().unwrap();
    assert!(text.starts_with("Alert type: `outage_alerts`\nLevel: `Medium`"), "{text}");
    assert!(text.contains("*Deployment:* `broken-1`") && text.contains("API Errors: 2"), "{text}");
    let major = hooks.wait_for("/webhook", |v| v["event"] == "major_outage").await;
    assert_eq!((major["level"].as_str(), major["details"]["errors"].as_u64()), (Some("High"), Some(3)));
    gw.stop().await;

    // allowed_fails 0: the first failure cools the deployment down.
    let gw = start(&config(&hooks, "allowed_fails: 0", "")).await;
    gw.chat("broken").await;
    let cooldown = hooks.wait_for("/slack", slack_of("cooldown_deployment")).await;
    let text = cooldown["text"].as_str().unwrap();
    assert!(text.contains("Deployment `broken-1` of model group `broken` is cooling down"), "{text}");
    gw.stop().await;
}

#[actix_web::test]
async fn the_daily_report_names_the_periods_top_spenders() {
    let hooks = Hooks::start();
    let yaml = with_args(config(&hooks, "", ""), "{daily_report_frequency: 1}");
    let gw = start(&yaml).await;
    let created: Value = gw.post("/key/generate", &json!({"key_alias": "reporting-app"})).await.json().await.unwrap();
    let body = crate::support::chat_body("ok");
    let resp = gw
        .http
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(created["key"].as_str().unwrap())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let report = hooks.wait_for("/webhook", |v| v["alert_type"] == "daily_reports").await;
    assert_eq!(report["details"]["top_keys"][0]["label"], "reporting-app", "{report}");
    assert_eq!(report["details"]["top_models"][0]["model_group"], "ok");
    assert!((report["details"]["spend"].as_f64().unwrap() - 0.011).abs() < 1e-9, "{report}");
    let slack = hooks.wait_for("/slack", slack_of("daily_reports")).await;
    let text = slack["text"].as_str().unwrap();
    assert!(text.contains("*Top keys by spend:*\n\t1. `reporting-app`: `$0.011` (1 requests)"), "{text}");
    gw.stop().await;
}

#[actix_web::test]
async fn with_kafka_switchyard_consume_alerts_delivers_them() {
    let Some(broker) = crate::kafka::Broker::start() else { return };
    let hooks = Hooks::start();
    let prefix = format!("a{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let yaml = crate::kafka::kafka_yaml(&config(&hooks, "", ""), &broker, &prefix);
    let gw = start(&yaml).await;
    let yaml = yaml.replace("{mock}", &gw.mock.api_base());
    let file = std::env::temp_dir().join(format!("switchyard-alerts-{}.yaml", uuid::Uuid::new_v4()));
    std::fs::write(&file, &yaml).unwrap();
    let mut consumer = Command::new(BIN)
        .args(["consume", "alerts", "--config", file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The consumer starts at the end of the topics: fail calls until one is delivered.
    let deadline = Instant::now() + Duration::from_secs(60);
    let slack = loop {
        assert!(Instant::now() < deadline, "no llm_exceptions alert reached Slack");
        assert_eq!(gw.chat("broken").await.status(), 500);
        if let Some(found) = hooks.within(Duration::from_secs(2), "/slack", slack_of("llm_exceptions")).await {
            break found;
        }
    };
    assert!(slack["text"].as_str().unwrap().contains("Message: LLM API call failed: `500 "), "{slack}");
    let hook = hooks.wait_for("/webhook", |v| v["alert_type"] == "llm_exceptions").await;
    let topics = Topics::open(&Config::from_yaml(&yaml, &|_| None).unwrap().event_log).unwrap();
    let records = on_topic(&topics, 1, |r| r["alert_id"] == hook["alert_id"]).await;
    assert_schema("alert", &records[0]);
    let _ = consumer.kill();
    let _ = consumer.wait();
    gw.stop().await;
    let _ = std::fs::remove_file(file);
}

#[actix_web::test]
async fn every_alert_is_a_row_of_clickhouse_alerts() {
    #[derive(Debug, serde::Deserialize, clickhouse::Row)]
    struct Row {
        alert_id: String,
        alert_type: String,
        outcome: String,
        destinations: Vec<String>,
    }
    let Some(mut server) = crate::clickhouse::ClickHouse::start() else { return };
    let ch = server.config();
    switchyard::clickhouse::migrate::migrate(&ch).await.unwrap();
    let hooks = Hooks::start();
    let analytics = format!("analytics: {{clickhouse: {{url: \"{}\", database: {}}}}}", ch.url, ch.database);
    let gw = start(&config(&hooks, "", &analytics)).await;
    assert_eq!(gw.chat("broken").await.status(), 500);
    let hook = hooks.wait_for("/webhook", |v| v["alert_type"] == "llm_exceptions").await;
    let client = switchyard::clickhouse::client(&ch);
    let row_of = |alert_type: &'static str| {
        let client = client.clone();
        async move {
            let sql = format!(
                "SELECT alert_id, alert_type, outcome, destinations FROM alerts FINAL WHERE alert_type = '{alert_type}'"
            );
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let rows: Vec<Row> = client.query(&sql).fetch_all().await.unwrap_or_default();
                if let Some(row) = rows.into_iter().next() {
                    return row;
                }
                assert!(Instant::now() < deadline, "no {alert_type} row in alerts");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let row = row_of("llm_exceptions").await;
    assert_eq!(
        (row.alert_id.as_str(), row.alert_type.as_str()),
        (hook["alert_id"].as_str().unwrap(), "llm_exceptions")
    );
    assert_eq!(
        (row.outcome.as_str(), row.destinations),
        ("delivered", vec!["slack".to_string(), "webhook".to_string()])
    );

    // ClickHouse down does not hold alerts up; their rows go in once it is back.
    server.stop();
    assert_eq!(gw.chat("slow").await.status(), 200);
    let slow = hooks.wait_for("/webhook", |v| v["alert_type"] == "llm_too_slow").await;
    gw.metrics_with(&["switchyard_consumer_retries_total", "consumer=\"alerts\""]).await;
    server.resume();
    let row = row_of("llm_too_slow").await;
    assert_eq!((row.alert_id.as_str(), row.outcome.as_str()), (slow["alert_id"].as_str().unwrap(), "delivered"));
    gw.stop().await;
}

#[test]
fn consume_alerts_needs_alerting() {
    let file = std::env::temp_dir().join(format!("switchyard-alerts-{}.yaml", uuid::Uuid::new_v4()));
    let yaml = format!(
        "general_settings: {{master_key: {KEY}}}\nevent_log: {{kafka: {{bootstrap_servers: \"127.0.0.1:9\", topic_prefix: t}}}}\n"
    );
    std::fs::write(&file, yaml).unwrap();
    let out = Command::new(BIN).args(["consume", "alerts", "--config", file.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`consume alerts` needs general_settings.alerting"), "{stderr}");
    let _ = std::fs::remove_file(file);
}
