//! The `switchyard` binary: config errors, a LiteLLM docs config, graceful shutdown.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// A config file in the system temp dir, removed on drop.
struct TempConfig(std::path::PathBuf);

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn config_file(yaml: &str) -> TempConfig {
    let path = std::env::temp_dir().join(format!("switchyard-test-{}.yaml", uuid::Uuid::new_v4()));
    std::fs::write(&path, yaml).unwrap();
    TempConfig(path)
}

#[test]
fn a_bad_config_exits_non_zero_naming_the_field() {
    let cases = [
        ("model_list:\n  - model_name: x\n    litellm_params: {model: openai/x, rpm: lots}\n", "model_list[0].litellm_params.rpm"),
        ("router_settings: {routing_strategy: fastest}\n", "router_settings.routing_strategy"),
        ("general_settings: {master_key: os.environ/SWITCHYARD_TEST_UNSET}\n", "general_settings.master_key: environment variable SWITCHYARD_TEST_UNSET is not set"),
        ("model_list:\n  - model_name: x\n    litellm_params: {model: openai/x}\nrouter_settings: {fallbacks: [{x: [y]}]}\n", "router_settings.fallbacks.x"),
        ("pricing: {model_cost_map_path: a, surprise: 1}\n", "surprise"),
    ];
    for (yaml, expected) in cases {
        let file = config_file(yaml);
        let out = Command::new(BIN).arg("--config").arg(&file.0).arg("--port").arg("0").output().unwrap();
        assert!(!out.status.success(), "{yaml}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "expected {expected:?} in: {stderr}");
    }
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("--config"));
}

/// A config with several mistakes lists them all, one per line, so one restart fixes them all.
#[test]
fn every_config_problem_is_reported_at_once() {
    let file = config_file(
        "model_list:\n  - {model_name: a, litellm_params: {model: openai/a, rpm: lots}}\n  - {model_name: b, litellm_params: {model: openai/b}, model_info: {mode: chatty}}\nrouter_settings: {routing_strategy: fastest, fallbacks: [{b: [nowhere]}]}\nevent_log: {surprise: 1}\n",
    );
    let out = Command::new(BIN).arg("--config").arg(&file.0).arg("--port").arg("0").output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let listed: Vec<&str> = stderr.lines().skip_while(|l| !l.ends_with("5 problems:")).skip(1).collect();
    assert_eq!(listed.len(), 5, "{stderr}");
    for (line, path) in listed.iter().zip([
        "model_list[0].litellm_params.rpm: ",
        "event_log.surprise: ",
        "model_list[1].model_info.mode: ",
        "router_settings.routing_strategy: ",
        "router_settings.fallbacks.b: ",
    ]) {
        assert!(line.trim_start().starts_with(path), "expected {path:?} in {line:?}:\n{stderr}");
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process killed when the test ends, passed or not.
struct Running(Option<Child>);

impl Running {
    fn pid(&self) -> String {
        self.0.as_ref().map(|c| c.id().to_string()).unwrap_or_default()
    }

    /// Waits for the process to exit by itself.
    fn wait(mut self) -> std::process::ExitStatus {
        self.0.take().unwrap().wait().unwrap()
    }

    /// Kills the process and returns what it wrote to stderr.
    fn kill(mut self) -> String {
        let mut child = self.0.take().unwrap();
        let _ = child.kill();
        String::from_utf8_lossy(&child.wait_with_output().unwrap().stderr).into_owned()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn(args: &[&str]) -> Running {
    spawn_with_env(args, &[])
}

fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Running {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    let events = std::env::temp_dir().join(format!("switchyard-cli-{}", uuid::Uuid::new_v4()));
    cmd.env("SWITCHYARD_EVENT_LOG_PATH", events);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Running(Some(cmd.spawn().unwrap()))
}

async fn wait_ready(port: u16) {
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if client.get(format!("http://127.0.0.1:{port}/health/liveliness")).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server on {port} never became ready");
}

/// LiteLLM's documented example config (openai and OpenAI-compatible providers, with keys from
/// the environment and settings Switchyard does not implement) loads and serves.
#[actix_web::test]
async fn a_litellm_docs_config_loads_and_serves() {
    let mock_port = free_port();
    let _mock = spawn(&["mock-upstream", "--port", &mock_port.to_string()]);
    let yaml = format!(
        r#"
model_list:
  - model_name: gpt-3.5-turbo
    litellm_params:
      model: openai/gpt-3.5-turbo
      api_base: http://127.0.0.1:{mock_port}/v1
      api_key: os.environ/OPENAI_API_KEY
      rpm: 6
  - model_name: gpt-3.5-turbo
    litellm_params:
      model: azure/chatgpt-v-2
      api_base: os.environ/AZURE_API_BASE
      api_key: os.environ/AZURE_API_KEY
      api_version: "2023-07-01-preview"
  - model_name: groq-llama
    litellm_params:
      model: groq/llama3-8b-8192
      api_base: http://127.0.0.1:{mock_port}/v1
      api_key: os.environ/GROQ_API_KEY
  - model_name: deepseek
    litellm_params:
      model: deepseek/deepseek-chat
      api_base: http://127.0.0.1:{mock_port}/v1
      api_key: os.environ/SWITCHYARD_TEST_DEEPSEEK_KEY_UNSET
  - model_name: dall-e-2
    litellm_params:
      model: azure/
      api_base: http://127.0.0.1:{mock_port}
  - model_name: gpt-4-azure
    litellm_params:
      model: azure/chatgpt-v-2
      api_base: http://127.0.0.1:{mock_port}
      tpm: 100_000
litellm_settings:
  drop_params: True
  success_callback: ["langfuse"]
  num_retries: 3
  request_timeout: 10
  set_verbose: False
  json_logs: true
  fallbacks: [{{"groq-llama": ["gpt-4-azure", "gpt-3.5-turbo"]}}]
router_settings:
  routing_strategy: usage-based-routing-v2
  redis_host: os.environ/REDIS_HOST
  enable_pre_call_checks: true
general_settings:
  master_key: sk-1234
  alerting: ["slack"]
  database_url: "postgresql://<user>:<password>@<host>:<port>/<dbname>"
environment_variables:
  AZURE_API_BASE: http://127.0.0.1:{mock_port}
  AZURE_API_KEY: azure-key
"#
    );
    let file = config_file(&yaml);
    let port = free_port();
    let gateway = spawn_with_env(
        &["--config", file.0.to_str().unwrap(), "--host", "127.0.0.1", "--port", &port.to_string()],
        &[("OPENAI_API_KEY", "sk-openai"), ("GROQ_API_KEY", "gsk-groq")],
    );
    wait_ready(port).await;
    wait_ready(mock_port).await;
    let client = reqwest::Client::new();
    for model in ["gpt-3.5-turbo", "groq-llama"] {
        let resp = client
            .post(format!("http://127.0.0.1:{port}/chat/completions"))
            .bearer_auth("sk-1234")
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{model}");
    }
    // The deployment whose key variable is unset was kept; its calls fail, saying why.
    let resp = client
        .post(format!("http://127.0.0.1:{port}/chat/completions"))
        .bearer_auth("sk-1234")
        .json(&json!({"model": "deepseek", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: serde_json::Value = resp.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(
            "environment variable SWITCHYARD_TEST_DEEPSEEK_KEY_UNSET is not set (model_list[3].litellm_params.api_key)"
        ),
        "{body}"
    );
    let log = gateway.kill();
    for warned in [
        "litellm_settings.success_callback",
        "general_settings.database_url",
        "router_settings.redis_host",
        "model_list[1].litellm_params.model: provider \"azure\"",
        "model_list[3].litellm_params.api_key: environment variable SWITCHYARD_TEST_DEEPSEEK_KEY_UNSET is not set",
        "model_list[4].litellm_params.model: \"azure/\" names no model after the provider prefix",
        "litellm_settings.fallbacks.groq-llama: fallback model group \"gpt-4-azure\" is not served by this build",
    ] {
        assert_eq!(log.matches(warned).count(), 1, "expected one warning about {warned}:\n{log}");
    }
    // stderr is not a terminal here: no colour codes in what ends up in log files.
    assert!(!log.contains('\u{1b}'), "ANSI escape codes in a piped log:\n{log}");
}

/// One chat call to model group `g` of the gateway on `port`; its `x-litellm-call-id`.
async fn chat_call_id(port: u16) -> String {
    let resp = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/chat/completions"))
        .json(&json!({"model": "g", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    resp.headers()["x-litellm-call-id"].to_str().unwrap().to_string()
}

/// A mock upstream and, in front of it, a gateway serving `models` (model group, mock model).
struct MockedGateway {
    gateway: Running,
    port: u16,
    _mock: Running,
    _config: TempConfig,
}

async fn mocked_gateway(models: &[(&str, &str)], graceful_timeout: &str) -> MockedGateway {
    let mock_port = free_port();
    let mock = spawn(&["mock-upstream", "--port", &mock_port.to_string()]);
    let mut yaml = String::from("model_list:\n");
    for (group, model) in models {
        yaml.push_str(&format!(
            "  - model_name: {group}\n    litellm_params: {{model: openai/{model}, api_base: 'http://127.0.0.1:{mock_port}/v1'}}\n"
        ));
    }
    let config = config_file(&yaml);
    let port = free_port();
    let path = config.0.to_str().unwrap().to_string();
    let gateway = spawn(&[
        "--config",
        &path,
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--graceful-timeout",
        graceful_timeout,
    ]);
    wait_ready(port).await;
    wait_ready(mock_port).await;
    MockedGateway { gateway, port, _mock: mock, _config: config }
}

/// SIGTERM: stop accepting, let the in-flight request finish, exit 0.
#[actix_web::test]
async fn sigterm_lets_in_flight_requests_finish() {
    let MockedGateway { gateway, port, _mock, _config } = mocked_gateway(&[("slow", "slow-1000ms")], "10").await;
    let request = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/chat/completions"))
            .json(&json!({"model": "slow", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = gateway.pid();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert_eq!(request.await.unwrap().unwrap(), 200, "the in-flight request finished");
    let status = tokio::task::spawn_blocking(move || gateway.wait()).await.unwrap();
    assert!(status.success(), "{status:?}");
    let refused = reqwest::Client::new().get(format!("http://127.0.0.1:{port}/health/liveliness")).send().await;
    assert!(refused.is_err(), "no longer accepting");
}

/// SIGTERM with streams open: a live stream runs to its end (`[DONE]`), an abandoned stalled one
/// is let go once its client is found gone, and the process exits without waiting out its
/// grace period.
#[actix_web::test]
async fn sigterm_with_streams_open() {
    let MockedGateway { gateway, port, _mock, _config } =
        mocked_gateway(&[("slow", "stream-delay-200ms"), ("stalled", "stall")], "60").await;
    let url = format!("http://127.0.0.1:{port}/chat/completions");
    let body = |model: &str| json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    // A client that opens a stalled stream and goes away.
    let abandoned = reqwest::Client::new().post(&url).json(&body("stalled")).send().await.unwrap();
    assert_eq!(abandoned.status(), 200);
    drop(abandoned);
    let live = reqwest::Client::new().post(&url).json(&body("slow")).send().await.unwrap();
    assert_eq!(live.status(), 200);
    let started = std::time::Instant::now();
    assert!(Command::new("kill").args(["-TERM", &gateway.pid()]).status().unwrap().success());
    let text = live.text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "the live stream ran to its end: {text}");
    let status = tokio::task::spawn_blocking(move || gateway.wait()).await.unwrap();
    assert!(status.success(), "{status:?}");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(30), "exited after {took:?}, not after the 60 s grace period");
}

/// The embedded event log survives a restart, and `switchyard tail` prints it.
#[actix_web::test]
async fn embedded_events_survive_a_restart_and_tail_shows_them() {
    let mock_port = free_port();
    let _mock = spawn(&["mock-upstream", "--port", &mock_port.to_string()]);
    let events = std::env::temp_dir().join(format!("switchyard-restart-{}", uuid::Uuid::new_v4()));
    let file = config_file(&format!(
        "model_list:\n  - model_name: g\n    litellm_params: {{model: openai/m, api_base: 'http://127.0.0.1:{mock_port}/v1'}}\nevent_log:\n  path: {}\n  fsync: always\n",
        events.display()
    ));
    let config = file.0.to_str().unwrap().to_string();
    let mut call_ids = Vec::new();
    for requests in [2, 1] {
        let port = free_port();
        let gateway = Running(Some(
            Command::new(BIN)
                .args(["--config", &config, "--host", "127.0.0.1", "--port", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        ));
        wait_ready(port).await;
        wait_ready(mock_port).await;
        for _ in 0..requests {
            call_ids.push(chat_call_id(port).await);
        }
        assert!(Command::new("kill").args(["-TERM", &gateway.pid()]).status().unwrap().success());
        let status = tokio::task::spawn_blocking(move || gateway.wait()).await.unwrap();
        assert!(status.success());
    }
    let out = Command::new(BIN).args(["tail", "--config", &config, "--type", "response"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let ids: Vec<&str> = printed.iter().map(|e| e["request_id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        call_ids.iter().map(String::as_str).collect::<Vec<_>>(),
        "every response, in order, across the restart"
    );
    assert!(printed.iter().all(|e| e["type"] == "response"));
    let _ = std::fs::remove_dir_all(events);
}

/// A relative `event_log.path` is relative to the config file, wherever the gateway and `tail`
/// are started from.
#[actix_web::test]
async fn a_relative_event_log_path_is_relative_to_the_config_file() {
    let root = std::env::temp_dir().join(format!("switchyard-relative-{}", uuid::Uuid::new_v4()));
    let (config_dir, elsewhere) = (root.join("etc"), root.join("elsewhere"));
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    let config = config_dir.join("config.yaml");
    std::fs::write(
        &config,
        "model_list:\n  - model_name: g\n    litellm_params: {model: openai/m, mock_response: hi}\nevent_log: {path: events, fsync: always}\n",
    )
    .unwrap();
    let port = free_port();
    let gateway = Running(Some(
        Command::new(BIN)
            .args(["--config", config.to_str().unwrap(), "--host", "127.0.0.1", "--port", &port.to_string()])
            .current_dir(&elsewhere)
            .env_remove("SWITCHYARD_EVENT_LOG_PATH")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    wait_ready(port).await;
    let call_id = chat_call_id(port).await;
    assert!(Command::new("kill").args(["-TERM", &gateway.pid()]).status().unwrap().success());
    let status = tokio::task::spawn_blocking(move || gateway.wait()).await.unwrap();
    assert!(status.success());
    assert!(config_dir.join("events").is_dir(), "no events beside the config");
    assert!(!elsewhere.join("events").exists(), "events written relative to the working directory");
    let out = Command::new(BIN)
        .args(["tail", "--config", "../etc/config.yaml", "--type", "response"])
        .current_dir(&elsewhere)
        .env_remove("SWITCHYARD_EVENT_LOG_PATH")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&call_id));
    let _ = std::fs::remove_dir_all(root);
}
