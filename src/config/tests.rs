use super::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml_ng::Value;

fn load(yaml: &str) -> Result<Config, ConfigError> {
    Config::from_yaml(yaml, &|name| match name {
        "OPENAI_API_KEY" => Some("sk-from-env".into()),
        "LITELLM_MASTER_KEY" => Some("sk-master-env".into()),
        _ => None,
    })
}

fn error_of(yaml: &str) -> String {
    load(yaml).err().map(|e| e.to_string()).unwrap_or_default()
}

#[test]
fn router_settings_win_over_litellm_settings() {
    let cfg = load(
        "litellm_settings: {num_retries: 5, request_timeout: 30, cooldown_time: 9}\nrouter_settings: {num_retries: 1, timeout: 12}\n",
    )
    .unwrap();
    assert_eq!(cfg.router.num_retries, 1);
    assert_eq!(cfg.router.timeout, Duration::from_secs(12));
    assert_eq!(cfg.router.cooldown_time, Duration::from_secs(9));
}

#[test]
fn keys_come_from_the_config_the_provider_variable_or_nowhere() {
    let cfg = load(
        "model_list:\n  - model_name: a\n    litellm_params: {model: gpt-4o}\n  - model_name: b\n    litellm_params: {model: groq/llama, api_key: explicit}\n",
    )
    .unwrap();
    use secrecy::ExposeSecret;
    assert_eq!(cfg.deployments[0].api_key.as_ref().unwrap().expose_secret(), "sk-from-env");
    assert_eq!(cfg.deployments[0].api_base, "https://api.openai.com/v1");
    assert_eq!(cfg.deployments[1].api_base, "https://api.groq.com/openai/v1");
    assert_eq!(cfg.deployments[1].upstream_model, "llama");
    assert_eq!(cfg.general.master_key.as_ref().unwrap().expose_secret(), "sk-master-env");
}

#[test]
fn unimplemented_keys_are_warned_about_once_each() {
    let cfg = load(
        "model_list:\n  - {model_name: a, litellm_params: {model: gpt-4o, temperature: 0.2}}\n  - {model_name: b, litellm_params: {model: gpt-4o, temperature: 0.5}}\nlitellm_settings: {callbacks: [x]}\nmystery_section: {}\n",
    )
    .unwrap();
    let temperature = cfg.warnings.iter().filter(|w| w.contains("litellm_params.temperature")).count();
    assert_eq!(temperature, 1, "{:?}", cfg.warnings);
    assert!(cfg.warnings.iter().any(|w| w.starts_with("litellm_settings.callbacks")));
    assert!(cfg.warnings.iter().any(|w| w.starts_with("mystery_section")));
}

#[test]
fn durations_accept_seconds_and_humantime() {
    let cfg = load("router_settings: {timeout: 2.5, cooldown_time: \"1m\", retry_after: \"3\"}\n").unwrap();
    assert_eq!(cfg.router.timeout, Duration::from_millis(2500));
    assert_eq!(cfg.router.cooldown_time, Duration::from_secs(60));
    assert_eq!(cfg.router.retry_after, Duration::from_secs(3));
}

#[test]
fn errors_name_the_field_path() {
    assert!(error_of("model_list:\n  - {model_name: a, litellm_params: {model: gpt-4o, tpm: -3}}\n")
        .starts_with("model_list[0].litellm_params.tpm"));
    assert!(error_of(
        "model_list:\n  - {model_name: a, litellm_params: {model: gpt-4o}, model_info: {mode: chatty}}\n"
    )
    .starts_with("model_list[0].model_info.mode"));
    assert!(error_of("model_list:\n  - {model_name: a, litellm_params: {model: hosted_vllm/llama}}\n")
        .starts_with("model_list[0].litellm_params.api_base"));
    assert!(error_of("model_list:\n  - {model_name: a}\n").contains("litellm_params"));
    let bad_base =
        error_of("model_list:\n  - {model_name: a, litellm_params: {model: gpt-4o, api_base: \"ftp://x\"}}\n");
    assert!(bad_base.starts_with("model_list[0].litellm_params.api_base") && bad_base.contains("scheme"), "{bad_base}");
    assert!(
        error_of("general_settings: {max_request_size_mb: 0}\n").starts_with("general_settings.max_request_size_mb")
    );
    assert!(error_of("router_settings: {model_group_alias: {x: missing}}\n")
        .starts_with("router_settings.model_group_alias.x"));
    // Router keys are read from both sections; a value that does not fit names its key.
    assert!(error_of("litellm_settings: {num_retries: lots}\n").starts_with("litellm_settings.num_retries: expected"));
    assert!(error_of("router_settings: {fallbacks: gpt}\n").starts_with("router_settings.fallbacks: invalid type"));
    assert!(error_of("router_settings: [a]\n").starts_with("router_settings: expected a mapping"));
}

#[test]
fn aliases_may_be_hidden_and_fallbacks_may_use_a_wildcard() {
    let cfg = load(
        "model_list:\n  - {model_name: a, litellm_params: {model: gpt-4o}}\nrouter_settings:\n  model_group_alias: {x: a, y: {model: a, hidden: true}}\n  fallbacks: [{\"*\": [a]}]\n",
    )
    .unwrap();
    assert_eq!(cfg.router.model_group_alias["x"], ("a".to_string(), false));
    assert_eq!(cfg.router.model_group_alias["y"], ("a".to_string(), true));
    assert_eq!(cfg.router.fallbacks["*"], vec!["a".to_string()]);
}

#[test]
fn deployment_ids_are_stable_and_unique() {
    let yaml = "model_list:\n  - {model_name: a, litellm_params: {model: gpt-4o}}\n  - {model_name: a, litellm_params: {model: gpt-4o}}\n";
    let first = load(yaml).unwrap();
    let second = load(yaml).unwrap();
    assert_eq!(first.deployments[0].id, second.deployments[0].id);
    assert_ne!(first.deployments[0].id, first.deployments[1].id);
    let dup = "model_list:\n  - {model_name: a, litellm_params: {model: gpt-4o}, model_info: {id: x}}\n  - {model_name: b, litellm_params: {model: gpt-4o}, model_info: {id: x}}\n";
    assert!(error_of(dup).contains("duplicate deployment id"));
}

#[test]
fn the_quickstart_config_loads_without_warnings() {
    let cfg = load(include_str!("../../config/quickstart.yaml")).unwrap();
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    assert_eq!(cfg.model_groups(), ["gpt-4o-mini", "local-mock", "text-embedding-3-small"]);
}

#[test]
fn event_log_is_strict_and_env_overrides_the_connection() {
    let err = error_of("event_log: {kafka: {bootstrap_servers: x, surprise: 1}}\n");
    assert!(err.contains("surprise"), "{err}");
    let cfg = load("event_log: {path: /tmp/ev, fsync: always, enabled: false}\n").unwrap();
    assert!(cfg.event_log.kafka.is_none() && !cfg.event_log.enabled);
    assert_eq!(cfg.event_log.fsync, FsyncPolicy::Always);
    let cfg =
        Config::from_yaml("event_log: {kafka: {bootstrap_servers: 'file:9092', producer: {acks: 1}}}\n", &|name| {
            (name == "SWITCHYARD_KAFKA_BOOTSTRAP_SERVERS").then(|| "env:9092".to_string())
        })
        .unwrap();
    let kafka = cfg.event_log.kafka.unwrap();
    assert_eq!(kafka.bootstrap_servers, "env:9092");
    assert_eq!(kafka.events_topic(), "switchyard.events");
    assert_eq!(kafka.producer, vec![("acks".to_string(), "1".to_string())]);
    assert!(error_of("event_log: {fsync: sometimes}\n").starts_with("event_log.fsync"));
}

/// Every `.yaml` file under `dir`, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The distinct `model_name`s a config file lists.
fn named_groups(text: &str) -> BTreeSet<String> {
    let doc: Value = serde_yaml_ng::from_str(text).unwrap();
    doc.get("model_list")
        .and_then(Value::as_sequence)
        .map(|list| list.iter().filter_map(|e| e.get("model_name")?.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Real configs from LiteLLM's repository and documentation (tests/configs/litellm) start,
/// with only the master key in the environment (an operator always sets that one): each
/// serves the openai-compatible deployments and warns once about everything else.
#[test]
fn every_litellm_config_in_the_corpus_starts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/configs/litellm");
    let files = yaml_files(&dir);
    assert!(files.len() >= 25, "{} files", files.len());
    let env = |name: &str| (name == "LITELLM_MASTER_KEY").then(|| "sk-operator".to_string());
    let (mut served, mut named) = (0, 0);
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let name = file.strip_prefix(&dir).unwrap().display().to_string();
        match Config::from_yaml(&text, &env) {
            Ok(cfg) => {
                let mut seen = BTreeSet::new();
                let repeated: Vec<&String> = cfg.warnings.iter().filter(|w| !seen.insert(*w)).collect();
                assert!(repeated.is_empty(), "{name} repeats warnings: {repeated:?}");
                served += cfg.model_groups().len();
                named += named_groups(&text).len();
            }
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} configs do not start:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
    assert_eq!((files.len(), served, named), (38, 52, 93), "files, groups served, groups named");

    // Without the master key, the configs that take it from the environment do not start, and
    // say why; every other one does.
    let refused: Vec<String> = files
        .iter()
        .filter_map(|file| {
            let err = Config::from_yaml(&std::fs::read_to_string(file).unwrap(), &|_| None).err()?;
            assert_eq!(err.problems().len(), 1, "{err}");
            assert!(
                err.to_string()
                    .starts_with("general_settings.master_key: environment variable LITELLM_MASTER_KEY is not set"),
                "{err}"
            );
            Some(file.file_name().unwrap().to_string_lossy().into_owned())
        })
        .collect();
    assert_eq!(refused, ["adaptive_router_example.yaml", "pass_through_config.yaml", "tool_permission_example.yaml"]);
}

#[test]
fn an_unset_variable_in_model_list_keeps_the_deployment_and_fails_its_calls() {
    let cfg = load(
        "model_list:
  - {model_name: a, litellm_params: {model: gpt-4o}}
  - model_name: b
    litellm_params: {model: openai/gpt-4o, api_key: os.environ/B_KEY, organization: os.environ/B_ORG}
  - model_name: c
    litellm_params: {model: hosted_vllm/llama, api_base: os.environ/VLLM_BASE}
    model_info: {base_model: os.environ/C_BASE_MODEL}
",
    )
    .unwrap();
    assert_eq!(cfg.model_groups(), ["a", "b", "c"]);
    assert_eq!(cfg.deployments[0].unresolved_env, None);
    assert_eq!(
        cfg.deployments[1].unresolved_env.as_deref(),
        Some("environment variable B_KEY is not set (model_list[1].litellm_params.api_key)")
    );
    assert_eq!(
        cfg.deployments[2].unresolved_env.as_deref(),
        Some("environment variable VLLM_BASE is not set (model_list[2].litellm_params.api_base)")
    );
    assert_eq!(cfg.deployments[2].api_base, "os.environ/VLLM_BASE");
    assert!(cfg.warnings.contains(
        &"model_list[2].model_info.base_model: environment variable C_BASE_MODEL is not set; treated as unset"
            .to_string()
    ));
    assert!(cfg.warnings.contains(&"model_list[1].litellm_params.api_key: environment variable B_KEY is not set; deployment \"b\" is kept, but its calls fail until it is set".to_string()), "{:?}", cfg.warnings);
    // An unset variable in a key Switchyard ignores changes nothing: the key's own warning is enough.
    assert!(!cfg.warnings.iter().any(|w| w.contains("B_ORG")), "{:?}", cfg.warnings);
    assert!(cfg.warnings.iter().any(|w| w.starts_with("model_list[].litellm_params.organization")));
}

#[test]
fn an_unset_master_key_variable_stays_fatal() {
    let err = error_of("general_settings: {master_key: os.environ/MY_MASTER_KEY}\n");
    assert!(err.starts_with("general_settings.master_key: environment variable MY_MASTER_KEY is not set"), "{err}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let err = load(
        "model_list:
  - {model_name: a, litellm_params: {model: gpt-4o, rpm: lots, tpm: many}}
  - {model_name: b, litellm_params: {model: gpt-4o}, model_info: {mode: chatty}}
  - {model_name: c, litellm_params: {model: gpt-4o, weight: -1, max_parallel_requests: 0}}
router_settings:
  num_retries: twice
  routing_strategy: fastest
  fallbacks: [{b: [nowhere]}, {a: [b]}]
general_settings: {max_request_size_mb: 0}
event_log: {surprise: 1}
",
    )
    .unwrap_err();
    let paths: Vec<&str> = err.problems().iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "model_list[0].litellm_params.rpm",
            "model_list[0].litellm_params.tpm",
            "router_settings.num_retries",
            "event_log.surprise",
            "model_list[1].model_info.mode",
            "model_list[2].litellm_params.weight",
            "model_list[2].litellm_params.max_parallel_requests",
            "router_settings.routing_strategy",
            "router_settings.fallbacks.b",
            "general_settings.max_request_size_mb",
        ]
    );
    let text = err.to_string();
    assert!(
        text.starts_with("10 problems:\n  model_list[0].litellm_params.rpm: expected a non-negative integer"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 11, "{text}");
    assert!(text.contains("\n  router_settings.fallbacks.b: unknown fallback model group \"nowhere\"\n"), "{text}");
    // Group `a` and `b` have problems of their own, so references to them are not reported too.
    assert!(!text.contains("model group \"b\"") && !text.contains("model group \"a\""), "{text}");
}

#[test]
fn references_to_unserved_groups_are_dropped_with_a_warning() {
    let cfg = load(
        "model_list:
  - {model_name: gpt, litellm_params: {model: gpt-4o}}
  - {model_name: claude, litellm_params: {model: anthropic/claude-3-5-sonnet}}
litellm_settings:
  fallbacks: [{gpt: [claude]}, {claude: [gpt]}]
router_settings:
  model_group_alias: {sonnet: claude}
",
    )
    .unwrap();
    assert!(cfg.router.fallbacks.is_empty() && cfg.router.model_group_alias.is_empty());
    for warned in [
        "litellm_settings.fallbacks.gpt: fallback model group \"claude\" is not served by this build (its deployments were skipped); dropped from the list",
        "litellm_settings.fallbacks.claude: model group \"claude\" is not served by this build (its deployments were skipped); its fallbacks are dropped",
        "router_settings.model_group_alias.sonnet: model group \"claude\" is not served by this build (its deployments were skipped); alias dropped",
    ] {
        assert!(cfg.warnings.iter().any(|w| w == warned), "{warned}\n{:?}", cfg.warnings);
    }
    let err = error_of("model_list:\n  - {model_name: gpt, litellm_params: {model: gpt-4o}}\nrouter_settings: {fallbacks: [{gpt: [gtp]}]}\n");
    assert_eq!(err, "router_settings.fallbacks.gpt: unknown fallback model group \"gtp\"");
}

#[test]
fn names_a_wildcard_group_serves_may_be_fallbacks() {
    let cfg = load(
        "model_list:
  - {model_name: \"openai/*\", litellm_params: {model: \"openai/*\"}}
  - {model_name: mini, litellm_params: {model: gpt-4o-mini}}
router_settings: {context_window_fallbacks: [{mini: [openai/gpt-4.1]}]}
",
    )
    .unwrap();
    assert_eq!(cfg.router.context_window_fallbacks["mini"], ["openai/gpt-4.1"]);
    assert!(error_of("model_list:\n  - {model_name: \"openai/*\", litellm_params: {model: \"openai/*\"}}\nrouter_settings: {fallbacks: [{\"openai/x\": [groq/llama]}]}\n")
        .contains("unknown fallback model group \"groq/llama\""));
}

#[test]
fn a_provider_prefix_without_a_model_skips_the_deployment() {
    let cfg = load("model_list:\n  - {model_name: dall-e-2, litellm_params: {model: azure/}}\n  - {model_name: x, litellm_params: {model: openai/}}\n").unwrap();
    assert!(cfg.deployments.is_empty());
    assert_eq!(
        cfg.warnings,
        [
            "model_list[0].litellm_params.model: \"azure/\" names no model after the provider prefix; deployment \"dall-e-2\" is not served",
            "model_list[1].litellm_params.model: \"openai/\" names no model after the provider prefix; deployment \"x\" is not served",
        ]
    );
}

#[test]
fn numbers_may_use_yaml_1_1_digit_separators() {
    let cfg = load(
        "model_list:\n  - {model_name: a, litellm_params: {model: gpt-4o, tpm: 20_000, rpm: \"1_000\", timeout: 1_0, input_cost_per_token: 0.000_001}}\nrouter_settings: {cooldown_time: 1_0, disable_cooldowns: yes}\n",
    )
    .unwrap();
    let d = &cfg.deployments[0];
    assert_eq!((d.tpm, d.rpm, d.timeout), (Some(20_000), Some(1_000), Some(Duration::from_secs(10))));
    assert_eq!(d.pricing.input_cost_per_token, Some(0.000_001));
    assert_eq!(cfg.router.cooldown_time, Duration::from_secs(10));
    assert!(cfg.router.disable_cooldowns);
}

#[test]
fn numbers_out_of_bounds_name_their_field() {
    for (yaml, path) in [
        ("model_list:\n  - {model_name: a, litellm_params: {model: gpt-4o, rpm: 5000000000}}\n", "model_list[0].litellm_params.rpm: must be between 0 and 4294967295"),
        ("model_list:\n  - {model_name: a, litellm_params: {model: gpt-4o, max_parallel_requests: 5000000000}}\n", "model_list[0].litellm_params.max_parallel_requests: must be between 1 and 4294967295"),
        ("model_list:\n  - {model_name: a, litellm_params: {model: gpt-4o}, model_info: {input_cost_per_token: -1}}\n", "model_list[0].model_info.input_cost_per_token: must not be negative"),
        ("general_settings: {max_request_size_mb: 1e9}\n", "general_settings.max_request_size_mb: must be more than 0 and at most 1024"),
        ("event_log: {segment_mb: 0}\n", "event_log.segment_mb: must be more than 0"),
        ("event_log: {queue_capacity: 0}\n", "event_log.queue_capacity: must be between 1 and 10000000"),
        ("event_log: {kafka: {bootstrap_servers: x, partitions: 3000000000}}\n", "event_log.kafka.partitions: must be between 1 and 2147483647"),
        ("router_settings: {allowed_fails: 5000000000}\n", "router_settings.allowed_fails: must be between 0 and 4294967295"),
        ("router_settings: {allowed_fails_policy: {RateLimitErrorAllowedFails: 5000000000}}\n", "router_settings.allowed_fails_policy.RateLimitErrorAllowedFails: must be between"),
        ("router_settings: {routing_strategy_args: {lowest_latency_buffer: -0.5}}\n", "router_settings.routing_strategy_args.lowest_latency_buffer: must not be negative"),
        ("router_settings: {timeout: 1e12}\n", "router_settings.timeout: expected a number of seconds between 0 and 31536000"),
        ("model_list:\n  - {model_name: a, litellm_params: {model: gpt-4o, weight: .inf}}\n", "model_list[0].litellm_params.weight: expected a finite number"),
    ] {
        let err = error_of(yaml);
        assert!(err.starts_with(path), "expected {path:?}, got {err:?}");
    }
    // LiteLLM keys whose large values are mistakes it accepts: capped, with a warning.
    let cfg = load("model_list:\n  - {model_name: a, litellm_params: {model: gpt-4o, max_retries: 1000}}\nrouter_settings: {num_retries: 1000, retry_policy: {TimeoutErrorRetries: 1000}}\n").unwrap();
    assert_eq!((cfg.deployments[0].max_retries, cfg.router.num_retries), (10, 20));
    assert_eq!(cfg.router.retry_policy.get(crate::failure::ErrorClass::Timeout), Some(20));
    assert!(
        cfg.warnings
            .contains(&"router_settings.num_retries: 1000 is more than Switchyard allows; capped at 20".to_string()),
        "{:?}",
        cfg.warnings
    );
}

#[test]
fn sections_with_every_key_commented_out_are_empty() {
    let cfg = load("model_list:\n  - model_name: a\n    litellm_params: {model: gpt-4o}\n    model_info:\n      # id: x\ngeneral_settings:\n  # master_key: sk-1\nrouter_settings:\n").unwrap();
    assert_eq!(cfg.model_groups(), ["a"]);
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
}

#[test]
fn the_event_log_and_price_map_paths_are_relative_to_the_config_file() {
    let dir = std::env::temp_dir().join(format!("switchyard-config-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("config.yaml");
    std::fs::write(&file, "event_log: {path: events}\npricing: {model_cost_map_path: prices.json}\n").unwrap();
    let loaded = Config::load(&file).unwrap();
    let from_file = loaded.event_log.path;
    assert_eq!(loaded.model_cost_map_path.map(std::path::PathBuf::from), Some(dir.join("prices.json")));
    std::fs::write(&file, "model_list: []\n").unwrap();
    let default = Config::load(&file).map(|c| c.event_log.path);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(from_file, dir.join("events"));
    assert_eq!(default.unwrap(), dir.join("data/events"));
    // Without a file, relative to the working directory; the variable always is.
    assert_eq!(load("event_log: {path: events}\n").unwrap().event_log.path, Path::new("events"));
    let cfg = Config::from_yaml("event_log: {path: events}\n", &|name| {
        (name == "SWITCHYARD_EVENT_LOG_PATH").then(|| "from-env".to_string())
    })
    .unwrap();
    assert_eq!(cfg.event_log.path, Path::new("from-env"));
}

#[test]
fn database_url_is_accepted_with_a_warning_that_keys_live_on_the_log() {
    let cfg = load("general_settings: {master_key: sk-1, database_url: postgres://x}\n").unwrap();
    assert!(cfg.warnings.iter().any(|w| w.starts_with("general_settings.database_url") && w.contains("event log")));
}

#[test]
fn budget_windows_follow_litellm_settings_timezone() {
    let cfg = load("litellm_settings: {timezone: Europe/Paris}\n").unwrap();
    assert_eq!(cfg.timezone.iana_name(), Some("Europe/Paris"));
    assert!(error_of("litellm_settings: {timezone: Mars/Olympus}\n")
        .starts_with("litellm_settings.timezone: unknown timezone"));
}

#[test]
fn alerting_settings_are_read_with_litellms_defaults() {
    use secrecy::ExposeSecret;
    let cfg = load("general_settings: {master_key: sk-1}\n").unwrap();
    let a = &cfg.general.alerting;
    assert!(!a.is_on());
    assert_eq!((a.threshold, a.budget_alert_ttl), (Duration::from_secs(300), Duration::from_secs(86_400)));
    assert_eq!((a.daily_report_frequency, a.outage_alert_ttl), (Duration::from_secs(43_200), Duration::from_secs(60)));
    assert_eq!((a.minor_outage_threshold, a.major_outage_threshold), (5, 10));
    assert_eq!(a.alert_types.len(), 14);

    let yaml = r#"
general_settings:
  master_key: sk-1
  alerting: ["slack", "webhook", "email"]
  alerting_threshold: 1.5
  alert_types: ["llm_exceptions", "budget_alerts", "db_exceptions"]
  alert_to_webhook_url:
    llm_exceptions: ["http://hooks.test/a", "http://hooks.test/b"]
    budget_alerts: http://hooks.test/c
  alerting_args: {budget_alert_ttl: 10m, outage_alert_ttl: 30, minor_outage_alert_threshold: 2, major_outage_alert_threshold: 3, report_check_interval: 60}
environment_variables: {SLACK_WEBHOOK_URL: "http://hooks.test/slack", WEBHOOK_URL: "https://hooks.test/hook"}
"#;
    let cfg = load(yaml).unwrap();
    let a = &cfg.general.alerting;
    assert_eq!(a.channels, [Channel::Slack, Channel::Webhook]);
    assert_eq!(a.threshold, Duration::from_millis(1500));
    assert_eq!(a.alert_types, [AlertType::LlmExceptions, AlertType::BudgetAlerts, AlertType::DbExceptions]);
    assert_eq!(a.routes[&AlertType::LlmExceptions].len(), 2);
    assert_eq!(a.routes[&AlertType::BudgetAlerts][0].expose_secret(), "http://hooks.test/c");
    assert_eq!(a.slack_webhook_url.as_ref().unwrap().expose_secret(), "http://hooks.test/slack");
    assert_eq!(a.webhook_url.as_ref().unwrap().expose_secret(), "https://hooks.test/hook");
    assert_eq!((a.budget_alert_ttl, a.outage_alert_ttl), (Duration::from_secs(600), Duration::from_secs(30)));
    assert_eq!((a.minor_outage_threshold, a.major_outage_threshold), (2, 3));
    for warned in [
        "general_settings.alerting: email is not implemented",
        "general_settings.alert_types: db_exceptions not raised by Switchyard",
        "general_settings.alerting_args.report_check_interval: not implemented",
    ] {
        assert!(cfg.warnings.iter().any(|w| w.starts_with(warned)), "{warned}: {:?}", cfg.warnings);
    }
    assert!(!cfg.warnings.iter().any(|w| w.starts_with("general_settings.alerting:") && w.contains("no alert goes")));

    // Slack on without a URL still starts, with a warning.
    let cfg = load("general_settings: {master_key: sk-1, alerting: [slack]}\n").unwrap();
    assert!(cfg.warnings.iter().any(|w| w.contains("neither SLACK_WEBHOOK_URL nor alert_to_webhook_url")));
}

#[test]
fn bad_alerting_values_are_problems_naming_the_field() {
    let err = |settings: &str| error_of(&format!("general_settings: {{master_key: sk-1, {settings}}}\n"));
    for (settings, expected) in [
        ("alerting: slack", "general_settings.alerting: expected a list"),
        ("alerting: [slack, pager]", "general_settings.alerting[1]: expected slack, webhook or email"),
        ("alerting_threshold: 0", "general_settings.alerting_threshold: must be more than 0"),
        ("alerting_threshold: soon", "general_settings.alerting_threshold: expected seconds"),
        ("alert_types: [llm_exceptions, llm_slow]", "general_settings.alert_types[1]: unknown alert type \"llm_slow\""),
        ("alert_to_webhook_url: {nope: http://x}", "general_settings.alert_to_webhook_url: unknown alert type"),
        (
            "alert_to_webhook_url: {llm_exceptions: [http://a.test, ftp://b]}",
            "general_settings.alert_to_webhook_url.llm_exceptions[1]: expected an http(s) URL",
        ),
        ("alerting_args: {budget_alert_ttl: -5}", "general_settings.alerting_args.budget_alert_ttl: expected"),
        (
            "alerting_args: {minor_outage_alert_threshold: 0}",
            "general_settings.alerting_args.minor_outage_alert_threshold: expected a whole number of at least 1",
        ),
        (
            "alerting_args: {minor_outage_alert_threshold: 8, major_outage_alert_threshold: 4}",
            "general_settings.alerting_args.major_outage_alert_threshold: must be at least minor",
        ),
    ] {
        let e = err(settings);
        assert!(e.starts_with(expected), "{settings}: {e}");
    }
    let e = error_of("general_settings: {master_key: sk-1}\nenvironment_variables: {WEBHOOK_URL: not-a-url}\n");
    assert!(e.starts_with("WEBHOOK_URL: environment variable: expected an http(s) URL"), "{e}");
}
