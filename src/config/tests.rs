use super::*;

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
