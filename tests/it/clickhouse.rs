//! ClickHouse (Debian's 18.16, started by scripts/clickhouse.sh): migrations apply once and
//! again without change, and the consumer's rows go in and sum exactly, duplicates included.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use switchyard::clickhouse::rows::{BlockRollup, SpendLogRow};
use switchyard::config::ClickHouseConfig;

/// A throwaway ClickHouse server on a loopback port, stopped on drop.
pub struct ClickHouse {
    pub url: String,
    dir: PathBuf,
    ports: (u16, u16),
    child: Option<Child>,
}

impl ClickHouse {
    /// `None` only when the server is missing and `SWITCHYARD_SKIP_CLICKHOUSE_TESTS=1`.
    pub fn start() -> Option<Self> {
        let installed = ["/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server"]
            .iter()
            .any(|p| std::path::Path::new(p).exists());
        if !installed && std::env::var("SWITCHYARD_SKIP_CLICKHOUSE_TESTS").as_deref() == Ok("1") {
            eprintln!("clickhouse-server not found and SWITCHYARD_SKIP_CLICKHOUSE_TESTS=1: skipping a ClickHouse test");
            return None;
        }
        let (port, tcp_port) = two_ports();
        // Under /tmp: every parent directory must be readable by the clickhouse user.
        let dir = PathBuf::from(format!("/tmp/switchyard-clickhouse-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let mut server = Self { url, dir, ports: (port, tcp_port), child: None };
        server.resume();
        Some(server)
    }

    /// (Re)starts the server on its ports and data, and waits until it answers.
    pub fn resume(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/clickhouse.sh");
        let child = Command::new("bash")
            .args([script, self.dir.to_str().unwrap(), &self.ports.0.to_string(), &self.ports.1.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while ureq_ok(&self.url).is_none() {
            assert!(Instant::now() < deadline, "ClickHouse did not start (see {}/log)", self.dir.display());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server (its data stays): SIGTERM to the script's process (runuser, which
    /// passes it on to the server; `Child::kill` would send SIGKILL, which it cannot).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("bash").args(["-c", &format!("kill -TERM {}", child.id())]).status();
            let _ = child.wait();
        }
        while ureq_ok(&self.url).is_some() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A config for a database of its own.
    pub fn config(&self) -> ClickHouseConfig {
        ClickHouseConfig {
            url: self.url.clone(),
            database: format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            user: "default".into(),
            password: None,
        }
    }
}

/// Two free ports for a server, below the range the system hands out for port 0 and never the
/// same twice in this process: a server stopped for a while (the outage tests) must find its
/// ports free when it starts again, not taken by another test's server.
fn two_ports() -> (u16, u16) {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 400) as u16 * 20;
    loop {
        let at = base.wrapping_add(NEXT.fetch_add(2, Ordering::Relaxed) % 8_000);
        if TcpListener::bind(("127.0.0.1", at)).is_ok() && TcpListener::bind(("127.0.0.1", at + 1)).is_ok() {
            return (at, at + 1);
        }
    }
}

/// `SELECT 1` over plain HTTP (std only), `Some` once the server answers.
fn ureq_ok(url: &str) -> Option<()> {
    use std::io::{Read, Write};
    let addr = url.strip_prefix("http://")?;
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.write_all(format!("GET /?query=SELECT%201 HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.starts_with("HTTP/1.0 200").then_some(())
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct Sums {
    rows: u64,
    spend: i64,
}

#[tokio::test]
async fn migrations_apply_once_and_rows_sum_exactly_with_duplicates() {
    let Some(server) = ClickHouse::start() else { return };
    let config = server.config();
    let applied = switchyard::clickhouse::migrate::migrate(&config).await.unwrap();
    assert_eq!(applied.len(), switchyard::clickhouse::migrate::MIGRATIONS.len());
    assert!(
        switchyard::clickhouse::migrate::migrate(&config).await.unwrap().is_empty(),
        "a second run changes nothing"
    );

    let client = switchyard::clickhouse::client(&config);
    let events: Vec<_> = (0..100).map(|i| crate::clickhouse::response(&format!("r{i}"), 0.001_234_567)).collect();
    let rows: Vec<SpendLogRow> = events.iter().map(SpendLogRow::of).collect();
    // Every row twice, in two inserts: a consumer killed after its insert, then replaying.
    for _ in 0..2 {
        let mut insert = client.insert::<SpendLogRow>("spend_logs").await.unwrap();
        for row in &rows {
            insert.write(row).await.unwrap();
        }
        insert.end().await.unwrap();
    }
    let sums: Sums = client
        .query("SELECT count() AS rows, sum(spend_nanos) AS spend FROM spend_logs FINAL")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!((sums.rows, sums.spend), (100, 100 * 1_234_567));

    // A block written partially, then whole: the whole one wins, nothing counts twice.
    let mut block = BlockRollup::new(0, 0);
    for (offset, row) in rows.iter().enumerate() {
        block.add(row, offset as i64);
        if offset == 49 || offset == 99 {
            let mut insert = client.insert::<switchyard::clickhouse::rows::DailySpendRow>("daily_spend").await.unwrap();
            for r in block.rows() {
                insert.write(&r).await.unwrap();
            }
            insert.end().await.unwrap();
        }
    }
    let sums: Sums = client
        .query(
            "SELECT sum(requests) AS rows, sum(spend_nanos) AS spend FROM daily_spend FINAL WHERE entity_kind = 'key'",
        )
        .fetch_one()
        .await
        .unwrap();
    assert_eq!((sums.rows, sums.spend), (100, 100 * 1_234_567));
}

/// A response event of 0.01 s, for key `h1` in team `t1`.
pub fn response(id: &str, cost: f64) -> switchyard::events::ResponseEvent {
    let json = format!(
        r#"{{"schema_version": 1, "event_id": "{}", "type": "response", "request_id": "{id}", "gateway_id": "gw",
        "timestamp": "2026-11-28T10:00:01.000Z", "call_type": "acompletion", "requested_model": "m", "model_group": "m",
        "api_key_hash": "h1", "key_alias": null, "user": null, "team_id": "t1", "end_user": null, "tags": [],
        "metadata": null, "deployment_id": "d", "provider": "openai", "upstream_model": "m", "api_base": "http://x",
        "status": "success", "http_status": 200, "error_type": null, "error_message": null, "attempts": 1,
        "retries": 0, "fallbacks": 0, "stream": false, "completed": true, "start_time": "2026-11-28T10:00:00.990Z",
        "end_time": "2026-11-28T10:00:01.000Z", "first_token_time": null, "duration_ms": 10.0, "overhead_ms": 0.5,
        "prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7, "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0, "reasoning_tokens": 0, "cost": {cost}, "tokens_estimated": false,
        "cache_hit": false, "finish_reason": "stop", "response": null}}"#,
        uuid::Uuid::new_v4()
    );
    match switchyard::events::Event::from_json(json.as_bytes()).unwrap() {
        switchyard::events::Event::Response(e) => *e,
        other => panic!("not a response: {other:?}"),
    }
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct KeyDay {
    requests: u64,
    spend: i64,
}

/// Polls until the rollup rows matching `filter` count `n` requests (at most 30 s).
async fn rollup_in(client: &clickhouse::Client, filter: &str, n: u64) -> KeyDay {
    let sql =
        format!("SELECT sum(requests) AS requests, sum(spend_nanos) AS spend FROM daily_spend FINAL WHERE {filter}");
    let mut sums = KeyDay { requests: 0, spend: 0 };
    for _ in 0..300 {
        sums = client.query(&sql).fetch_one().await.unwrap_or(KeyDay { requests: 0, spend: 0 });
        if sums.requests >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sums
}

/// Polls until `spend_logs` holds `n` rows (at most 30 s).
async fn rows_in(client: &clickhouse::Client, n: u64) -> Sums {
    let mut sums = Sums { rows: 0, spend: 0 };
    for _ in 0..300 {
        sums = client
            .query("SELECT count() AS rows, sum(spend_nanos) AS spend FROM spend_logs FINAL")
            .fetch_one()
            .await
            .unwrap_or(Sums { rows: 0, spend: 0 });
        if sums.rows >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sums
}

#[actix_web::test]
async fn the_gateway_writes_spend_logs_and_rollups_that_match_the_cost_headers_across_a_restart() {
    use serde_json::{json, Value};
    let Some(server) = ClickHouse::start() else { return };
    let ch = server.config();
    switchyard::clickhouse::migrate::migrate(&ch).await.unwrap();
    let dir = std::env::temp_dir().join(format!("switchyard-ch-gw-{}", uuid::Uuid::new_v4()));
    let yaml = gateway_yaml(&dir, &ch);
    let client = switchyard::clickhouse::client(&ch);
    let mut header_nanos: i64 = 0;
    let mut calls = 0;
    for round in 0..2 {
        let gw = crate::support::start(&yaml).await;
        let created: Value =
            gw.post("/key/generate", &json!({"key_alias": format!("k{round}")})).await.json().await.unwrap();
        let key = created["key"].as_str().unwrap().to_string();
        for i in 0..20 {
            let body = json!({"model": "priced", "messages": [{"role": "user", "content": format!("hello {i} there")}], "metadata": {"tags": ["nightly"]}});
            let resp = gw.http.post(gw.url("/v1/chat/completions")).bearer_auth(&key).json(&body).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            let cost: f64 = resp.headers()["x-litellm-response-cost"].to_str().unwrap().parse().unwrap();
            header_nanos += switchyard::budget::ledger::nanos(cost);
            calls += 1;
        }
        let sums = rows_in(&client, calls).await;
        assert_eq!(
            (sums.rows, sums.spend),
            (calls, header_nanos),
            "round {round}: every call once, to the nano-dollar"
        );
        gw.stop().await;
    }
    // The second gateway resumed from the start of the block holding the saved position: it
    // rewrote the block, and nothing counts twice in the rollups either. (The rollups go in
    // just after the spend rows: wait for them too.)
    let by_tag = rollup_in(&client, "entity_kind = 'tag' AND entity = 'nightly'", calls).await;
    assert_eq!((by_tag.requests, by_tag.spend), (calls, header_nanos));
    let by_key = rollup_in(&client, "entity_kind = 'key'", calls).await;
    assert_eq!((by_key.requests, by_key.spend), (calls, header_nanos));

    // LiteLLM's spend endpoints answer from these tables, to the same digits.
    let gw = crate::support::start(&yaml).await;
    let usd = header_nanos as f64 / 1e9;
    let get = |path: &str| {
        let req = gw.http.get(gw.url(path)).bearer_auth(crate::support::KEY);
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200, "{}", resp.url());
            resp.json::<Value>().await.unwrap()
        }
    };
    let close = |v: &Value| (v.as_f64().unwrap() - usd).abs() < 1e-12;
    assert!(close(&get("/global/spend").await["spend"]));
    let activity = get("/user/daily/activity").await;
    assert!(close(&activity["metadata"]["total_spend"]), "{activity}");
    assert_eq!(activity["metadata"]["total_api_requests"], calls);
    assert_eq!(activity["results"][0]["breakdown"]["model_groups"]["priced"]["metrics"]["api_requests"], calls);
    assert_eq!(activity["results"][0]["breakdown"]["api_keys"].as_object().unwrap().len(), 2);
    let tags = get("/tag/daily/activity?tags=nightly").await;
    assert!(close(&tags["metadata"]["total_spend"]), "{tags}");
    let report = get("/global/spend/report?group_by=api_key").await;
    let keys = report[0]["api_keys"].as_array().unwrap();
    let total: f64 = keys.iter().map(|k| k["total_spend"].as_f64().unwrap()).sum();
    assert!((total - usd).abs() < 1e-12, "{report}");
    let logs = get("/spend/logs").await;
    assert_eq!(logs.as_array().unwrap().len() as u64, calls);
    assert_eq!(logs[0]["request_tags"], json!(["nightly"]));
    let today = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date().to_string();
    let summary = get(&format!("/spend/logs?start_date={today}&end_date={today}")).await;
    assert!(close(&summary[0]["spend"]), "{summary}");
    let bad = gw
        .http
        .get(gw.url("/spend/logs?start_date=soon&end_date=x"))
        .bearer_auth(crate::support::KEY)
        .send()
        .await
        .unwrap();
    crate::support::error_of(bad, 400).await;
    gw.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A gateway config on the embedded log at `dir`, writing spend to `ch`.
fn gateway_yaml(dir: &std::path::Path, ch: &ClickHouseConfig) -> String {
    gateway_yaml_with(dir, ch, "")
}

/// [`gateway_yaml`] with `extra` after the model list: more `model_list` entries, then more
/// top-level sections.
fn gateway_yaml_with(dir: &std::path::Path, ch: &ClickHouseConfig, extra_models: &str) -> String {
    format!(
        r#"
model_list:
  - model_name: priced
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{{mock}}", input_cost_per_token: 0.0000013, output_cost_per_token: 0.0000071}}
{extra_models}
general_settings: {{master_key: {}}}
event_log: {{path: {}}}
analytics: {{clickhouse: {{url: "{}", database: {}}}}}
"#,
        crate::support::KEY,
        dir.display(),
        ch.url,
        ch.database
    )
}

/// `n` calls; returns the sum of their cost headers in nano-dollars.
async fn calls(gw: &crate::support::Gateway, n: usize) -> i64 {
    let mut total = 0;
    for i in 0..n {
        let body =
            serde_json::json!({"model": "priced", "messages": [{"role": "user", "content": format!("call {i}")}]});
        let resp = gw.post("/v1/chat/completions", &body).await;
        assert_eq!(resp.status(), 200);
        let cost: f64 = resp.headers()["x-litellm-response-cost"].to_str().unwrap().parse().unwrap();
        total += switchyard::budget::ledger::nanos(cost);
    }
    total
}

#[actix_web::test]
async fn clickhouse_down_then_back_a_replay_into_a_fresh_database_and_bad_events_keep_totals_exact() {
    let Some(mut server) = ClickHouse::start() else { return };
    let ch = server.config();
    switchyard::clickhouse::migrate::migrate(&ch).await.unwrap();
    let dir = std::env::temp_dir().join(format!("switchyard-ch-faults-{}", uuid::Uuid::new_v4()));
    let gw = crate::support::start(&gateway_yaml(&dir, &ch)).await;
    let mut expected = calls(&gw, 10).await;
    let client = switchyard::clickhouse::client(&ch);
    assert_eq!(rows_in(&client, 10).await.spend, expected);

    // ClickHouse stops for 30 s under load: calls go on, the consumer waits and retries, then
    // catches up.
    server.stop();
    let outage = std::time::Instant::now();
    let mut n = 10;
    while outage.elapsed() < Duration::from_secs(30) {
        expected += calls(&gw, 10).await;
        n += 10;
    }
    gw.metrics_with(&["switchyard_consumer_retries_total", "consumer=\"spend\""]).await;
    server.resume();
    let sums = rows_in(&client, n).await;
    assert_eq!((sums.rows, sums.spend), (n, expected), "every call once after the outage");
    gw.stop().await;

    // Bad records on the log: skipped, counted, sent to the dead-letter topic.
    {
        let mut log =
            switchyard::events::log::SegmentLog::open(&dir, 1 << 20, switchyard::events::log::FsyncPolicy::Always)
                .unwrap();
        log.append(b"{not json").unwrap();
        log.append(br#"{"schema_version":99,"type":"response","request_id":"x"}"#).unwrap();
        log.flush().unwrap();
    }
    let gw = crate::support::start(&gateway_yaml(&dir, &ch)).await;
    expected += calls(&gw, 5).await;
    n += 5;
    let sums = rows_in(&client, n).await;
    assert_eq!((sums.rows, sums.spend), (n, expected));
    gw.metrics_with(&["switchyard_consumer_skipped_total", "reason=\"unreadable\"", "} 2"]).await;
    gw.stop().await;

    // Replay: a fresh database, rebuilt from the log's first offset, holds the same totals.
    let fresh = server.config();
    switchyard::clickhouse::migrate::migrate(&fresh).await.unwrap();
    let gw = crate::support::start(&gateway_yaml(&dir, &fresh)).await;
    let replayed = rows_in(&switchyard::clickhouse::client(&fresh), n).await;
    assert_eq!((replayed.rows, replayed.spend), (n, expected));
    gw.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct DeploymentMinutes {
    requests: u64,
    failures: u64,
    errors: u64,
    cooldowns: u64,
    spend: i64,
    latencies: u64,
    p50: f64,
}

/// The deployment's minutes summed over all time; polls until `requests` and `cooldowns` are in.
async fn minutes_of(client: &clickhouse::Client, model: &str, requests: u64, cooldowns: u64) -> DeploymentMinutes {
    let sql = "SELECT sum(requests) AS requests, sum(failures) AS failures, \
        toUInt64(sum(arraySum(error_counts))) AS errors, sum(cooldowns) AS cooldowns, \
        sum(spend_nanos) AS spend, toUInt64(sum(length(latency_ms))) AS latencies, \
        toFloat64(quantileExactArray(0.5)(latency_ms)) AS p50 \
        FROM deployment_minute FINAL WHERE model_group = ?";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let got: DeploymentMinutes = client.query(sql).bind(model).fetch_one().await.unwrap();
        if (got.requests >= requests && got.cooldowns >= cooldowns) || std::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The analytics consumer (in process on the embedded log) writes each deployment's minutes:
/// calls, failures by type, latencies for exact quantiles, cost, and the cooldowns it entered;
/// a restart rewrites its blocks without counting anything twice.
#[actix_web::test]
async fn deployment_minutes_count_calls_failures_latencies_and_cooldowns_once_across_a_restart() {
    let Some(server) = ClickHouse::start() else { return };
    let ch = server.config();
    switchyard::clickhouse::migrate::migrate(&ch).await.unwrap();
    let dir = std::env::temp_dir().join(format!("switchyard-ch-minutes-{}", uuid::Uuid::new_v4()));
    let broken = r#"  - model_name: broken
    litellm_params: {model: openai/error-500, api_base: "{mock}"}
router_settings: {allowed_fails: 0, cooldown_time: 1, num_retries: 0}"#;
    let yaml = gateway_yaml_with(&dir, &ch, broken);
    let client = switchyard::clickhouse::client(&ch);
    let mut nanos = 0;
    for round in 0..2 {
        let gw = crate::support::start(&yaml).await;
        nanos += calls(&gw, 10).await;
        let body = serde_json::json!({"model": "broken", "messages": [{"role": "user", "content": "x"}]});
        let resp = gw.post("/v1/chat/completions", &body).await;
        assert_eq!(resp.status(), 500, "round {round}");
        let priced = minutes_of(&client, "priced", 10 * (round + 1), 0).await;
        assert_eq!((priced.requests, priced.failures, priced.spend), (10 * (round + 1), 0, nanos), "round {round}");
        assert_eq!(priced.latencies, priced.requests, "one latency per call");
        assert!(priced.p50 > 0.0);
        let broken = minutes_of(&client, "broken", round + 1, round + 1).await;
        assert_eq!(
            (broken.requests, broken.failures, broken.errors),
            (round + 1, round + 1, round + 1),
            "round {round}"
        );
        assert_eq!(broken.cooldowns, round + 1, "round {round}: the failure put the deployment in cooldown");
        gw.stop().await;
    }
    // Failures by type, and latency quantiles per minute, as the README queries them.
    let by_type: Vec<(String, u64)> = client
        .query("SELECT type, sum(n) FROM deployment_minute FINAL ARRAY JOIN error_types AS type, error_counts AS n WHERE model_group = 'broken' GROUP BY type")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(by_type.len(), 1, "{by_type:?}");
    assert_eq!(by_type[0].1, 2);
    #[derive(Debug, clickhouse::Row, serde::Deserialize)]
    struct Quantiles {
        q: Vec<f64>,
    }
    let quantiles: Vec<Quantiles> = client
        .query("SELECT arrayMap(x -> toFloat64(x), quantilesArray(0.5, 0.9, 0.99)(latency_ms)) AS q FROM deployment_minute FINAL WHERE model_group = 'priced' GROUP BY minute")
        .fetch_all()
        .await
        .unwrap();
    assert!(!quantiles.is_empty() && quantiles.iter().all(|m| m.q.len() == 3 && m.q[0] <= m.q[2]), "{quantiles:?}");
    let _ = std::fs::remove_dir_all(dir);
}
