//! Events on a real Kafka-protocol broker (tansu, started here on loopback), as a consumer
//! group sees them: exact events, broker outages, and gateway restarts.

use std::collections::{HashMap, HashSet};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message};
use serde_json::{json, Value};

use crate::events::assert_valid;
use crate::support::{chat_body, header, start, Gateway};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn tansu_bin() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("TANSU_BIN") {
        return Some(path.into());
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let candidates = [format!("{home}/.cargo/bin/tansu"), "/usr/local/bin/tansu".into()];
    candidates.into_iter().map(PathBuf::from).find(|p| p.exists())
}

/// A tansu broker on a loopback port, with sqlite storage so it keeps messages across restarts.
pub struct Broker {
    bin: PathBuf,
    port: u16,
    /// The broker's working directory, holding its sqlite database.
    db: PathBuf,
    child: Option<Child>,
}

impl Broker {
    /// Starts a broker; `None` only when tansu is missing and `SWITCHYARD_SKIP_KAFKA_TESTS=1`.
    pub fn start() -> Option<Self> {
        let Some(bin) = tansu_bin() else {
            if std::env::var("SWITCHYARD_SKIP_KAFKA_TESTS").as_deref() == Ok("1") {
                eprintln!("tansu not found and SWITCHYARD_SKIP_KAFKA_TESTS=1: skipping a Kafka test");
                return None;
            }
            panic!("tansu not found: `cargo install tansu --locked --features dynostore,libsql` (scripts/test.sh does), or set TANSU_BIN");
        };
        // tansu opens `sqlite://NAME` relative to its working directory.
        let db = std::env::temp_dir().join(format!("switchyard-tansu-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&db).unwrap();
        let mut broker = Self { bin, port: free_port(), db, child: None };
        broker.resume();
        Some(broker)
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// (Re)starts the broker process on the same port and storage.
    pub fn resume(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(&self.bin)
            .args(["broker", "--cluster-id", "switchyard-test"])
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(&self.db)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.db);
    }
}

pub fn kafka_yaml(models: &str, broker: &Broker, prefix: &str) -> String {
    let spool = std::env::temp_dir().join(format!("switchyard-spool-{}", uuid::Uuid::new_v4()));
    format!(
        "{models}\nevent_log:\n  path: {}\n  kafka:\n    bootstrap_servers: \"{}\"\n    topic_prefix: {prefix}\n    partitions: 2\n    producer: {{\"message.timeout.ms\": 3000}}\n",
        spool.display(),
        broker.bootstrap()
    )
}

/// Reads `topic` from the beginning with a fresh consumer group until `done` holds (or 60 s).
pub async fn consume(bootstrap: &str, topic: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("test-{}", uuid::Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut stream = consumer.stream();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(&out) && Instant::now() < deadline {
        if let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_secs(1), stream.next()).await {
            let value: Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
            assert_eq!(
                message.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                value["request_id"].as_str().map(str::to_string),
                "keyed by request id"
            );
            out.push(value);
        }
    }
    out
}

/// One event per event_id (delivery is at least once).
fn dedup(events: Vec<Value>) -> Vec<Value> {
    let mut seen = HashSet::new();
    events.into_iter().filter(|e| seen.insert(e["event_id"].as_str().unwrap().to_string())).collect()
}

const MODELS: &str = r#"
model_list:
  - {model_name: g, litellm_params: {model: openai/gpt-4o-mini, api_base: "{mock}"}}
  - {model_name: broken, litellm_params: {model: openai/error-500, api_base: "{mock}"}}
router_settings: {num_retries: 0, fallbacks: [{"broken": ["g"]}]}
"#;

async fn send(gw: &Gateway, body: Value) -> (String, u16, Option<String>) {
    let resp = gw.post("/v1/chat/completions", &body).await;
    let id = header(&resp, "x-litellm-call-id").to_string();
    let cost = resp.headers().get("x-litellm-response-cost").map(|v| v.to_str().unwrap().to_string());
    let status = resp.status().as_u16();
    let _ = resp.bytes().await;
    (id, status, cost)
}

#[actix_web::test]
async fn every_call_is_published_to_kafka() {
    let Some(broker) = Broker::start() else { return };
    let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let gw = start(&kafka_yaml(MODELS, &broker, &prefix)).await;
    let mut stream = chat_body("g");
    stream["stream"] = json!(true);
    let mut calls = Vec::new();
    for body in [chat_body("g"), stream, chat_body("broken"), chat_body("nope")] {
        calls.push(send(&gw, body).await);
    }
    let events = consume(&broker.bootstrap(), &format!("{prefix}.events"), |e| e.len() >= 8).await;
    assert_eq!(events.len(), 8, "{events:#?}");
    assert_valid(&events);
    let by_call: HashMap<&str, Vec<&Value>> = events.iter().fold(HashMap::new(), |mut m, e| {
        m.entry(e["request_id"].as_str().unwrap()).or_default().push(e);
        m
    });
    for (id, _, cost) in &calls {
        let kinds: Vec<&str> = by_call[id.as_str()].iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["request", "response"], "same partition, in order");
        if let Some(cost) = cost {
            assert_eq!(by_call[id.as_str()][1]["cost"].as_f64(), cost.parse::<f64>().ok());
        }
    }
    let fallback = by_call[calls[2].0.as_str()][1];
    assert_eq!((fallback["model_group"].as_str(), fallback["fallbacks"].as_u64()), (Some("g"), Some(1)));
    assert_eq!(by_call[calls[3].0.as_str()][1]["http_status"], 400);
    let ready: Value = gw.http.get(gw.url("/health/readiness")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["event_log"]["backend"], "kafka");
    assert_eq!(ready["event_log"]["state"], "connected");
    gw.stop().await;
}

#[actix_web::test]
async fn a_broker_outage_loses_nothing() {
    let Some(mut broker) = Broker::start() else { return };
    let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let gw = start(&kafka_yaml(MODELS, &broker, &prefix)).await;
    let mut calls = Vec::new();
    let started = Instant::now();
    let mut stopped = false;
    let mut resumed = false;
    // 45 s of steady load; the broker is down from 5 s to 35 s.
    while started.elapsed() < Duration::from_secs(45) {
        let at = started.elapsed();
        if !stopped && at > Duration::from_secs(5) {
            broker.stop();
            stopped = true;
        }
        if !resumed && at > Duration::from_secs(35) {
            broker.resume();
            resumed = true;
        }
        let (id, status, _) = send(&gw, chat_body("g")).await;
        assert_eq!(status, 200, "the gateway keeps serving while the broker is down");
        calls.push(id);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Wait for the spool to drain.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready: Value = gw.http.get(gw.url("/health/readiness")).send().await.unwrap().json().await.unwrap();
        if ready["event_log"]["state"] == "connected" && ready["event_log"]["spool_pending"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the spool never drained: {ready}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let metrics = gw.http.get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(!metrics.contains("switchyard_events_spooled_total 0"), "events were spooled during the outage");
    let expected = calls.len() * 2;
    let events =
        dedup(consume(&broker.bootstrap(), &format!("{prefix}.events"), |e| dedup(e.to_vec()).len() >= expected).await);
    assert_valid(&events);
    let mut per_call: HashMap<&str, Vec<&str>> = HashMap::new();
    for e in &events {
        per_call.entry(e["request_id"].as_str().unwrap()).or_default().push(e["type"].as_str().unwrap());
    }
    for id in &calls {
        let mut kinds = per_call.get(id.as_str()).cloned().unwrap_or_default();
        kinds.sort_unstable();
        assert_eq!(kinds, ["request", "response"], "call {id} has each event exactly once");
    }
    assert_eq!(events.len(), expected);
    gw.stop().await;
}

/// SIGTERM flushes what the gateway holds; a gateway that stopped while the broker was down
/// sends its spool when it starts again.
#[actix_web::test]
async fn sigterm_flushes_and_a_restart_drains_the_spool() {
    let Some(mut broker) = Broker::start() else { return };
    let bin = env!("CARGO_BIN_EXE_switchyard");
    let mock_port = free_port();
    let mut mock = Command::new(bin)
        .args(["mock-upstream", "--port", &mock_port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let models = format!("model_list:\n  - {{model_name: g, litellm_params: {{model: openai/slow-200ms, api_base: 'http://127.0.0.1:{mock_port}/v1'}}}}\n");
    let yaml = kafka_yaml(&models, &broker, &prefix);
    let config = std::env::temp_dir().join(format!("switchyard-kafka-{}.yaml", uuid::Uuid::new_v4()));
    std::fs::write(&config, yaml).unwrap();
    let client = reqwest::Client::new();
    let mut calls: Vec<String> = Vec::new();

    // Phase 1, broker up: SIGTERM while requests are in flight; all finish, all events arrive.
    // Phase 2, broker down: the events are spooled, and stay spooled across the stop.
    for phase in [1, 2] {
        if phase == 2 {
            broker.stop();
        }
        let (port, mut gateway) = spawn_gateway(&config);
        let url = format!("http://127.0.0.1:{port}/chat/completions");
        let in_flight: Vec<_> = (0..8)
            .map(|_| {
                let (client, url) = (client.clone(), url.clone());
                tokio::spawn(async move {
                    let resp = client.post(url).json(&chat_body("g")).send().await.unwrap();
                    assert_eq!(resp.status(), 200);
                    resp.headers()["x-litellm-call-id"].to_str().unwrap().to_string()
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(Command::new("kill").args(["-TERM", &gateway.id().to_string()]).status().unwrap().success());
        for call in in_flight {
            calls.push(call.await.unwrap());
        }
        let status = tokio::task::spawn_blocking(move || gateway.wait()).await.unwrap().unwrap();
        assert!(status.success(), "phase {phase}: {status:?}");
    }

    // Phase 3: broker back, gateway restarted: the spool drains.
    broker.resume();
    let (_, mut gateway) = spawn_gateway(&config);
    let expected = calls.len() * 2;
    let events =
        dedup(consume(&broker.bootstrap(), &format!("{prefix}.events"), |e| dedup(e.to_vec()).len() >= expected).await);
    let ids: HashSet<&str> = events.iter().map(|e| e["request_id"].as_str().unwrap()).collect();
    for id in &calls {
        assert!(ids.contains(id.as_str()), "events of call {id} reached Kafka");
    }
    assert_eq!(events.len(), expected);
    let _ = gateway.kill();
    let _ = gateway.wait();
    let _ = mock.kill();
    let _ = mock.wait();
    let _ = std::fs::remove_file(config);
}

/// The gateway binary on a free port, listening.
fn spawn_gateway(config: &std::path::Path) -> (u16, Child) {
    let port = free_port();
    let gateway = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["--config", config.to_str().unwrap(), "--host", "127.0.0.1", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(port);
    (port, gateway)
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listening on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
