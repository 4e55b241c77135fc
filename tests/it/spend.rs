//! Spend snapshots (`<prefix>.spend`) and the budgets consumer: a gateway that starts again,
//! or a new instance, starts from the snapshots and shows the same spend; `switchyard consume`.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchyard::config::Config;
use switchyard::events::topics::{Start, Topics};

use crate::kafka::{kafka_yaml, Broker};
use crate::support::{chat_body, start, Gateway, KEY};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// `priced`: the mock's "hello there" costs 0.011 USD.
const MODELS: &str = r#"
model_list:
  - model_name: priced
    litellm_params: {model: openai/gpt-4o-mini, api_base: "{mock}", input_cost_per_token: 0.001, output_cost_per_token: 0.001}
router_settings: {num_retries: 0}
general_settings: {master_key: sk-test}
"#;

/// A new key with a budget; returns (raw key, hash).
async fn key(gw: &Gateway) -> (String, String) {
    let resp = gw.post("/key/generate", &json!({"max_budget": 10})).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    (body["key"].as_str().unwrap().to_string(), body["token"].as_str().unwrap().to_string())
}

async fn spend(gw: &Gateway, key: &str, calls: usize) {
    for _ in 0..calls {
        let resp =
            gw.http.post(gw.url("/v1/chat/completions")).bearer_auth(key).json(&chat_body("priced")).send().await;
        assert_eq!(resp.unwrap().status(), 200);
    }
}

/// The key's spend as `/key/info` reports it.
async fn spent(gw: &Gateway, key: &str) -> f64 {
    let info: Value = gw.http.get(gw.url("/key/info")).bearer_auth(key).send().await.unwrap().json().await.unwrap();
    info["info"]["spend"].as_f64().unwrap_or_else(|| panic!("no spend in {info}"))
}

/// The latest value of every key of `<prefix>.spend`.
async fn spend_topic(topics: &Topics) -> HashMap<String, Value> {
    let mut follower = topics.follow("spend", Start::Beginning).unwrap();
    let mut latest = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for record in follower.next_batch(1000, Duration::from_millis(200)).await.unwrap() {
            latest.insert(record.key, record.value.map(|v| serde_json::from_slice(&v).unwrap()).unwrap_or(Value::Null));
        }
        if follower.caught_up() || Instant::now() > deadline {
            return latest;
        }
    }
}

/// Waits until `<prefix>.spend` holds `spent` nano-dollars for the key; returns its record.
async fn wait_for_record(topics: &Topics, hash: &str, spent: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let topic = spend_topic(topics).await;
        if let Some(record) = topic.get(&format!("key:{hash}")) {
            if record["spent"] == spent {
                return record.clone();
            }
        }
        assert!(Instant::now() < deadline, "no spend record of {spent} for key:{hash}: {topic:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the budgets consumer has committed a position past `events` events in all.
async fn wait_for_commit(topics: &Topics, events: i64) -> Vec<(i32, i64)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let committed = topics.committed("events", "budgets").await.unwrap();
        if committed.iter().map(|p| p.1).sum::<i64>() >= events {
            return committed;
        }
        assert!(Instant::now() < deadline, "the budgets consumer did not commit past {events} events: {committed:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn validate(record: &Value) {
    let path = format!("{}/schemas/events/spend.json", env!("CARGO_MANIFEST_DIR"));
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(record).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{record} is not a valid spend record: {errors:?}");
}

#[actix_web::test]
async fn an_embedded_gateway_restarts_from_its_spend_snapshot() {
    let dir = std::env::temp_dir().join(format!("switchyard-spend-{}", uuid::Uuid::new_v4()));
    let config = format!("{MODELS}\nevent_log: {{path: {}}}\n", dir.display());
    let gw = start(&config).await;
    let (key, hash) = key(&gw).await;
    spend(&gw, &key, 3).await;
    let before = spent(&gw, &key).await;
    assert!((before - 0.033).abs() < 1e-9, "{before}");
    // The in-process budgets consumer publishes the key's spend, with the events it includes.
    let yaml = config.replace("{mock}", &gw.mock.api_base());
    let topics = Topics::open(&Config::from_yaml(&yaml, &|_| None).unwrap().event_log).unwrap();
    let record = wait_for_record(&topics, &hash, 33_000_000).await;
    validate(&record);
    assert_eq!(record["positions"][0]["partition"], 0);
    assert!(record["positions"][0]["offset"].as_i64().unwrap() >= 6, "3 calls are 6 events: {record}");
    let team_less = spend_topic(&topics).await;
    assert!(team_less.keys().all(|k| k.starts_with("key:")), "only the key is charged: {team_less:?}");
    // The consumer commits once its records are durable.
    wait_for_commit(&topics, 6).await;
    gw.stop().await;

    let gw = start(&config).await;
    assert_eq!(spent(&gw, &key).await, before, "the same spend after the restart");
    spend(&gw, &key, 1).await;
    assert!((spent(&gw, &key).await - 0.044).abs() < 1e-9);
    let record = wait_for_record(&topics, &hash, 44_000_000).await;
    let committed = wait_for_commit(&topics, 8).await;
    gw.stop().await;

    // The spend comes from the record, not from the events before its positions: a record
    // saying 0.5 USD is what a third start shows.
    let forged = json!({"schema_version": 1, "window_start": record["window_start"], "spent": 500_000_000,
        "positions": [{"partition": 0, "offset": committed[0].1}], "updated_at": record["updated_at"]});
    topics.append("spend", &format!("key:{hash}"), Some(forged.to_string().as_bytes())).await.unwrap();
    let gw = start(&config).await;
    assert!((spent(&gw, &key).await - 0.5).abs() < 1e-9, "the restart starts from the snapshot");
    gw.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[actix_web::test]
async fn a_new_kafka_instance_starts_from_the_budgets_consumers_snapshot() {
    let Some(broker) = Broker::start() else { return };
    let prefix = format!("s{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    // Two instances: each skips only its own events.
    let instance = |id: &str| format!("{}  gateway_id: {id}\n", kafka_yaml(MODELS, &broker, &prefix));
    let first = start(&instance("gw-first")).await;
    // The consumer as its own process, as in production.
    let yaml = kafka_yaml(MODELS, &broker, &prefix).replace("{mock}", &first.mock.api_base());
    let file = std::env::temp_dir().join(format!("switchyard-consume-{}.yaml", uuid::Uuid::new_v4()));
    std::fs::write(&file, &yaml).unwrap();
    let mut consumer = Command::new(BIN)
        .args(["consume", "budgets", "--config", file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let (key, hash) = key(&first).await;
    spend(&first, &key, 2).await;
    assert!((spent(&first, &key).await - 0.022).abs() < 1e-9);
    let topics = Topics::open(&Config::from_yaml(&yaml, &|_| None).unwrap().event_log).unwrap();
    let record = wait_for_record(&topics, &hash, 22_000_000).await;
    validate(&record);
    wait_for_commit(&topics, 4).await;

    // A new instance on the same cluster starts from the snapshot and sees the same spend.
    let second = start(&instance("gw-second")).await;
    assert!((spent(&second, &key).await - 0.022).abs() < 1e-9);
    // Spend on the second reaches the first through the log, and the snapshot.
    spend(&second, &key, 1).await;
    wait_for_record(&topics, &hash, 33_000_000).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while (spent(&first, &key).await - 0.033).abs() > 1e-9 {
        assert!(Instant::now() < deadline, "the first instance did not count the second's call");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let committed = wait_for_commit(&topics, 6).await;
    let _ = consumer.kill();
    let _ = consumer.wait();

    // A third instance takes the key's spend from its record, not from the events before the
    // record's positions: a record saying 0.5 USD (as if for older events) is what it shows.
    let positions: Vec<Value> = committed.iter().map(|(p, o)| json!({"partition": p, "offset": o})).collect();
    let forged = json!({"schema_version": 1, "window_start": record["window_start"], "spent": 500_000_000,
        "positions": positions, "updated_at": record["updated_at"]});
    topics.append("spend", &format!("key:{hash}"), Some(forged.to_string().as_bytes())).await.unwrap();
    let third = start(&instance("gw-third")).await;
    assert!((spent(&third, &key).await - 0.5).abs() < 1e-9, "the third instance starts from the snapshot");
    first.stop().await;
    second.stop().await;
    third.stop().await;
    let _ = std::fs::remove_file(file);
}

#[test]
fn consume_runs_only_with_kafka_and_says_what_is_missing() {
    let file = std::env::temp_dir().join(format!("switchyard-consume-{}.yaml", uuid::Uuid::new_v4()));
    std::fs::write(&file, format!("general_settings: {{master_key: {KEY}, alerting: [webhook]}}\n")).unwrap();
    for name in ["budgets", "spend", "analytics", "alerts", "all"] {
        let out = Command::new(BIN).args(["consume", name, "--config", file.to_str().unwrap()]).output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("needs event_log.kafka"));
    }
    // With Kafka but without ClickHouse: the ClickHouse consumers say what they need.
    std::fs::write(
        &file,
        format!(
            "general_settings: {{master_key: {KEY}}}\nevent_log: {{kafka: {{bootstrap_servers: '127.0.0.1:1'}}}}\n"
        ),
    )
    .unwrap();
    for (name, needs) in [
        ("spend", "needs analytics.clickhouse"),
        ("analytics", "needs analytics.clickhouse"),
        ("alerts", "needs general_settings.alerting"),
    ] {
        let out = Command::new(BIN).args(["consume", name, "--config", file.to_str().unwrap()]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(needs), "{name}");
    }
    let out = Command::new(BIN).args(["consume", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("analytics"));
    let _ = std::fs::remove_file(file);
}

/// How long a restart takes to be ready with a long event history, replayed (no snapshot of it
/// yet) and from the snapshot: `cargo test --test it start_time -- --ignored --nocapture`
/// (`SWITCHYARD_HISTORY_EVENTS`, default 100000 response events).
#[actix_web::test]
#[ignore]
async fn start_time_from_the_snapshot_and_from_the_history() {
    let n: usize = std::env::var("SWITCHYARD_HISTORY_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let dir = std::env::temp_dir().join(format!("switchyard-spend-{}", uuid::Uuid::new_v4()));
    let config = format!("{MODELS}\nevent_log: {{path: {}}}\n", dir.display());
    let gw = start(&config).await;
    let (key, _) = key(&gw).await;
    spend(&gw, &key, 1).await;
    gw.stop().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let events = switchyard::events::log::read_records(&dir, 0, 100).unwrap();
    let response = events
        .iter()
        .map(|(_, json)| serde_json::from_slice::<Value>(json).unwrap())
        .find(|e| e["type"] == "response")
        .unwrap();
    {
        let mut log =
            switchyard::events::log::SegmentLog::open(&dir, 64 << 20, switchyard::events::log::FsyncPolicy::Never)
                .unwrap();
        for i in 0..n {
            let mut event = response.clone();
            event["event_id"] = json!(uuid::Uuid::new_v4().to_string());
            event["request_id"] = json!(format!("history-{i}"));
            log.append(&serde_json::to_vec(&event).unwrap()).unwrap();
        }
        log.sync().unwrap();
    }
    let expected = 0.011 * (n + 1) as f64;

    let started = Instant::now();
    let gw = start(&config).await;
    let replayed = started.elapsed();
    assert!((spent(&gw, &key).await - expected).abs() < 1e-6);
    let yaml = config.replace("{mock}", &gw.mock.api_base());
    let topics = Topics::open(&Config::from_yaml(&yaml, &|_| None).unwrap().event_log).unwrap();
    wait_for_commit(&topics, 2 + n as i64).await;
    gw.stop().await;

    let started = Instant::now();
    let gw = start(&config).await;
    let from_snapshot = started.elapsed();
    assert!((spent(&gw, &key).await - expected).abs() < 1e-6);
    gw.stop().await;
    eprintln!("{n} response events: ready after {replayed:?} replaying them, {from_snapshot:?} from the snapshot");
    let _ = std::fs::remove_dir_all(dir);
}
