//! The `switchyard` binary: config errors, a LiteLLM docs config, graceful shutdown.

use std::io::Write;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

fn config_file(yaml: &str) -> tempfile_path::TempConfig {
    tempfile_path::TempConfig::new(yaml)
}

mod tempfile_path {
    /// A config file in the system temp dir, removed on drop.
    pub struct TempConfig(pub std::path::PathBuf);

    impl TempConfig {
        pub fn new(yaml: &str) -> Self {
            let path =
                std::env::temp_dir().join(format!("switchyard-test-{}.yaml", uuid::Uuid::new_v4()));
            std::fs::write(&path, yaml).unwrap();
            Self(path)
        }
    }

    impl Drop for TempConfig {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

#[test]
fn a_bad_config_exits_non_zero_naming_the_field() {
    let cases = [
        ("model_list:\n  - model_name: x\n    litellm_params: {model: openai/x, rpm: lots}\n", "model_list[0].litellm_params.rpm"),
        ("router_settings: {routing_strategy: fastest}\n", "router_settings.routing_strategy"),
        ("model_list:\n  - model_name: x\n    litellm_params: {model: openai/x, api_key: os.environ/SWITCHYARD_TEST_UNSET}\n", "SWITCHYARD_TEST_UNSET"),
        ("model_list:\n  - model_name: x\n    litellm_params: {model: openai/x}\nrouter_settings: {fallbacks: [{x: [y]}]}\n", "router_settings.fallbacks.x"),
        ("pricing: {model_cost_map_path: a, surprise: 1}\n", "surprise"),
    ];
    for (yaml, expected) in cases {
        let file = config_file(yaml);
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&file.0)
            .arg("--port")
            .arg("0")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{yaml}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in: {stderr}"
        );
    }
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("--config"));
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

async fn wait_ready(port: u16) {
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if client
            .get(format!("http://127.0.0.1:{port}/health/liveliness"))
            .send()
            .await
            .is_ok()
        {
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
    let mut mock = spawn(&["mock-upstream", "--port", &mock_port.to_string()]);
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
litellm_settings:
  drop_params: True
  success_callback: ["langfuse"]
  num_retries: 3
  request_timeout: 10
  set_verbose: False
  json_logs: true
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
    let mut gateway = Command::new(BIN)
        .args([
            "--config",
            file.0.to_str().unwrap(),
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        .env("OPENAI_API_KEY", "sk-openai")
        .env("GROQ_API_KEY", "gsk-groq")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
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
    gateway.kill().unwrap();
    let out = gateway.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    for warned in [
        "litellm_settings.success_callback",
        "general_settings.database_url",
        "router_settings.redis_host",
        "provider \"azure\"",
    ] {
        assert!(
            log.contains(warned),
            "expected a warning about {warned}:\n{log}"
        );
    }
    mock.kill().unwrap();
    let _ = mock.wait();
}

/// SIGTERM: stop accepting, let the in-flight request finish, exit 0.
#[actix_web::test]
async fn sigterm_lets_in_flight_requests_finish() {
    let mock_port = free_port();
    let mut mock = spawn(&["mock-upstream", "--port", &mock_port.to_string()]);
    let file = config_file(&format!(
        "model_list:\n  - model_name: slow\n    litellm_params: {{model: openai/slow-1000ms, api_base: 'http://127.0.0.1:{mock_port}/v1'}}\n"
    ));
    let port = free_port();
    let mut gateway = spawn(&[
        "--config",
        file.0.to_str().unwrap(),
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--graceful-timeout",
        "10",
    ]);
    wait_ready(port).await;
    wait_ready(mock_port).await;
    let request = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/chat/completions"))
            .json(&json!({"model": "slow", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = gateway.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    assert_eq!(
        request.await.unwrap().unwrap(),
        200,
        "the in-flight request finished"
    );
    let status = tokio::task::spawn_blocking(move || gateway.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    let refused = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/health/liveliness"))
        .send()
        .await;
    assert!(refused.is_err(), "no longer accepting");
    mock.kill().unwrap();
    let _ = mock.wait();
    let _ = std::io::stderr().flush();
}
