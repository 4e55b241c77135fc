//! Configuration: LiteLLM's `config.yaml`, read into [`raw`] structs, then validated into
//! [`Config`]. Errors name the field path; LiteLLM keys we do not implement become warnings.

mod env;
pub mod raw;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use secrecy::SecretString;
use serde_yaml_ng::Value;
use sha2::{Digest, Sha256};

use crate::events::log::FsyncPolicy;
use crate::events::{EventLogConfig, KafkaConfig};
use crate::failure::ClassMap;
use crate::providers::{self, EndpointUrls, ProviderSpec};
use raw::{AliasTarget, EventLogSection, Extra, RawConfig, RawDeployment, RouterKeys};

pub use raw::{duration_from_secs, parse_duration, MAX_DURATION};

/// A config that cannot be served, with the field path that is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl ConfigError {
    fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid { path: path.into(), message: message.into() }
    }
}

/// The validated configuration the gateway runs on.
#[derive(Debug)]
pub struct Config {
    pub deployments: Vec<DeploymentConfig>,
    pub router: RouterSettings,
    pub general: GeneralSettings,
    /// A user-supplied price map replacing the bundled one.
    pub model_cost_map_path: Option<String>,
    pub event_log: EventLogConfig,
    /// One line per LiteLLM key that was accepted but is not implemented.
    pub warnings: Vec<String>,
}

/// What an endpoint of a deployment is for (`model_info.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Chat,
    Completion,
    Embedding,
    ImageGeneration,
    AudioTranscription,
    AudioSpeech,
    Rerank,
    Moderation,
    Responses,
}

impl Mode {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "chat" => Self::Chat,
            "completion" => Self::Completion,
            "embedding" => Self::Embedding,
            "image_generation" => Self::ImageGeneration,
            "audio_transcription" => Self::AudioTranscription,
            "audio_speech" => Self::AudioSpeech,
            "rerank" => Self::Rerank,
            "moderation" => Self::Moderation,
            "responses" => Self::Responses,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Completion => "completion",
            Self::Embedding => "embedding",
            Self::ImageGeneration => "image_generation",
            Self::AudioTranscription => "audio_transcription",
            Self::AudioSpeech => "audio_speech",
            Self::Rerank => "rerank",
            Self::Moderation => "moderation",
            Self::Responses => "responses",
        }
    }
}

/// One `model_list` entry: an upstream endpoint serving a model group.
#[derive(Debug, Clone)]
pub struct DeploymentConfig {
    /// `model_info.id`, or a stable hash of the entry.
    pub id: String,
    /// The model group clients ask for.
    pub model_name: String,
    /// `litellm_params.model` as written, e.g. `groq/llama-3.1-8b-instant`.
    pub litellm_model: String,
    pub provider: &'static ProviderSpec,
    /// The model name sent upstream (the part after the provider prefix).
    pub upstream_model: String,
    pub api_key: Option<SecretString>,
    pub api_base: String,
    /// `api_base` + each endpoint's path, parsed once.
    pub urls: EndpointUrls,
    pub api_version: Option<String>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub order: Option<u64>,
    pub weight: Option<f64>,
    pub timeout: Option<Duration>,
    pub stream_timeout: Option<Duration>,
    /// Extra attempts on this same deployment for retryable failures.
    pub max_retries: u32,
    pub max_parallel_requests: Option<u32>,
    pub mock_response: Option<String>,
    pub mode: Mode,
    pub base_model: Option<String>,
    pub max_input_tokens: Option<u64>,
    pub max_output_tokens: Option<u64>,
    pub pricing: CustomPricing,
}

/// Per-deployment prices from `litellm_params` / `model_info`; they win over the price map.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CustomPricing {
    pub input_cost_per_token: Option<f64>,
    pub output_cost_per_token: Option<f64>,
    pub cache_read_input_token_cost: Option<f64>,
    pub cache_creation_input_token_cost: Option<f64>,
    pub output_cost_per_reasoning_token: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    SimpleShuffle,
    LeastBusy,
    UsageBased,
    LatencyBased,
    CostBased,
}

impl Strategy {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "simple-shuffle" => Self::SimpleShuffle,
            "least-busy" => Self::LeastBusy,
            "usage-based-routing" | "usage-based-routing-v2" => Self::UsageBased,
            "latency-based-routing" => Self::LatencyBased,
            "cost-based-routing" => Self::CostBased,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct RouterSettings {
    pub strategy: Strategy,
    /// Latency entries older than this are forgotten.
    pub latency_ttl: Duration,
    pub lowest_latency_buffer: f64,
    pub max_latency_list_size: usize,
    pub num_retries: u32,
    pub timeout: Duration,
    pub stream_timeout: Option<Duration>,
    pub retry_after: Duration,
    pub max_fallbacks: usize,
    pub allowed_fails: Option<u32>,
    pub cooldown_time: Duration,
    pub disable_cooldowns: bool,
    pub fallbacks: HashMap<String, Vec<String>>,
    pub context_window_fallbacks: HashMap<String, Vec<String>>,
    pub content_policy_fallbacks: HashMap<String, Vec<String>>,
    pub default_fallbacks: Vec<String>,
    pub retry_policy: ClassMap,
    pub allowed_fails_policy: ClassMap,
    pub enable_pre_call_checks: bool,
    /// alias → (model group, hidden from `/models`)
    pub model_group_alias: HashMap<String, (String, bool)>,
}

impl Default for RouterSettings {
    fn default() -> Self {
        Self {
            strategy: Strategy::SimpleShuffle,
            latency_ttl: Duration::from_secs(3600),
            lowest_latency_buffer: 0.0,
            max_latency_list_size: 10,
            num_retries: 2,
            timeout: Duration::from_secs(600),
            stream_timeout: None,
            retry_after: Duration::ZERO,
            max_fallbacks: 5,
            allowed_fails: None,
            cooldown_time: Duration::from_secs(5),
            disable_cooldowns: false,
            fallbacks: HashMap::new(),
            context_window_fallbacks: HashMap::new(),
            content_policy_fallbacks: HashMap::new(),
            default_fallbacks: Vec::new(),
            retry_policy: ClassMap::default(),
            allowed_fails_policy: ClassMap::default(),
            enable_pre_call_checks: false,
            model_group_alias: HashMap::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GeneralSettings {
    pub master_key: Option<SecretString>,
    pub max_request_size_bytes: usize,
    pub store_prompts_in_spend_logs: bool,
    pub background_health_checks: bool,
    pub health_check_interval: Duration,
}

impl Default for GeneralSettings {
    fn default() -> Self {
        Self {
            master_key: None,
            max_request_size_bytes: default_max_request_size_bytes(),
            store_prompts_in_spend_logs: false,
            background_health_checks: false,
            health_check_interval: Duration::from_secs(300),
        }
    }
}

fn default_max_request_size_bytes() -> usize {
    32 * 1024 * 1024
}

impl Config {
    /// Reads and validates a config file, using the process environment for `os.environ/…`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::from_yaml(&text, &|name| std::env::var(name).ok())
    }

    /// Parses and validates YAML text; `env` looks up environment variables.
    pub fn from_yaml(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut doc: Value =
            serde_yaml_ng::from_str(text).map_err(|e| ConfigError::invalid("config", e.to_string()))?;
        if doc.is_null() {
            doc = Value::Mapping(Default::default());
        }
        // `environment_variables` are visible to every other `os.environ/` reference.
        let mut overlay: HashMap<String, String> = HashMap::new();
        if let Some(vars) = doc.get_mut("environment_variables") {
            env::resolve(vars, env);
            if let Some(map) = vars.as_mapping() {
                for (k, v) in map {
                    if let (Some(k), Some(v)) = (k.as_str(), scalar_string(v)) {
                        overlay.insert(k.to_string(), v);
                    }
                }
            }
        }
        let lookup = |name: &str| overlay.get(name).cloned().or_else(|| env(name));
        let missing = env::resolve(&mut doc, &lookup);
        let mut warnings = Vec::new();
        for m in missing {
            if m.path.starts_with("model_list") || m.path == "general_settings.master_key" {
                return Err(ConfigError::invalid(m.path, format!("environment variable {} is not set", m.var)));
            }
            warnings.push(format!("{}: environment variable {} is not set; treated as unset", m.path, m.var));
        }
        let raw: RawConfig = serde_path_to_error::deserialize(doc).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::invalid(if path == "." { "config".into() } else { path }, e.into_inner().to_string())
        })?;
        Validator { warnings, env: &lookup, seen_unsupported: BTreeSet::new() }.validate(raw)
    }

    /// Model group names, in config order, without duplicates.
    pub fn model_groups(&self) -> Vec<&str> {
        let mut seen = BTreeSet::new();
        self.deployments.iter().map(|d| d.model_name.as_str()).filter(|n| seen.insert(*n)).collect()
    }
}

fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

struct Validator<'a> {
    warnings: Vec<String>,
    env: &'a dyn Fn(&str) -> Option<String>,
    /// Unsupported keys already warned about, by normalized path (one warning each).
    seen_unsupported: BTreeSet<String>,
}

impl Validator<'_> {
    fn unsupported(&mut self, section: &str, extra: &Extra) {
        for key in extra.keys() {
            let path = format!("{section}.{key}");
            if self.seen_unsupported.insert(path.clone()) {
                self.warnings.push(format!("{path}: not implemented by Switchyard; ignored"));
            }
        }
    }

    fn validate(mut self, raw: RawConfig) -> Result<Config, ConfigError> {
        for key in raw.extra.keys() {
            self.warnings.push(format!("{key}: not a section Switchyard implements; ignored"));
        }
        let mut deployments = Vec::with_capacity(raw.model_list.len());
        let mut ids = BTreeSet::new();
        for (i, entry) in raw.model_list.into_iter().enumerate() {
            if let Some(d) = self.deployment(i, entry)? {
                if !ids.insert(d.id.clone()) {
                    return Err(ConfigError::invalid(
                        format!("model_list[{i}].model_info.id"),
                        format!("duplicate deployment id {:?}", d.id),
                    ));
                }
                deployments.push(d);
            }
        }
        self.unsupported("litellm_settings", &raw.litellm_settings.extra);
        self.unsupported("router_settings", &raw.router_settings.extra);
        let mut router = RouterSettings::default();
        if let Some(t) = raw.litellm_settings.request_timeout {
            router.timeout = t;
        }
        // router_settings wins over the same key in litellm_settings.
        self.apply_router_keys(&mut router, raw.litellm_settings.keys, "litellm_settings")?;
        self.apply_router_keys(&mut router, raw.router_settings.keys, "router_settings")?;
        let groups: BTreeSet<&str> = deployments.iter().map(|d| d.model_name.as_str()).collect();
        check_group_references(&router, &groups)?;

        self.unsupported("general_settings", &raw.general_settings.extra);
        let g = raw.general_settings;
        let master_key = g.master_key.or_else(|| (self.env)("LITELLM_MASTER_KEY")).filter(|k| !k.is_empty());
        let max_request_size_bytes = match g.max_request_size_mb {
            Some(mb) if mb > 0.0 => (mb * 1024.0 * 1024.0) as usize,
            Some(mb) => {
                return Err(ConfigError::invalid(
                    "general_settings.max_request_size_mb",
                    format!("must be positive, got {mb}"),
                ))
            }
            None => default_max_request_size_bytes(),
        };
        let general = GeneralSettings {
            master_key: master_key.map(SecretString::from),
            max_request_size_bytes,
            store_prompts_in_spend_logs: g.store_prompts_in_spend_logs.unwrap_or(false),
            background_health_checks: g.background_health_checks.unwrap_or(false),
            health_check_interval: g.health_check_interval.unwrap_or(Duration::from_secs(300)),
        };
        let event_log = self.event_log(raw.event_log.unwrap_or_default())?;
        Ok(Config {
            deployments,
            router,
            general,
            model_cost_map_path: raw.pricing.and_then(|p| p.model_cost_map_path),
            event_log,
            warnings: self.warnings,
        })
    }

    /// `event_log`, with `SWITCHYARD_KAFKA_BOOTSTRAP_SERVERS` and `SWITCHYARD_EVENT_LOG_PATH`
    /// overriding the file, so one file serves every environment.
    fn event_log(&self, section: EventLogSection) -> Result<EventLogConfig, ConfigError> {
        let bootstrap_env = (self.env)("SWITCHYARD_KAFKA_BOOTSTRAP_SERVERS").filter(|s| !s.is_empty());
        let kafka = match (section.kafka, bootstrap_env) {
            (None, None) => None,
            (kafka, env) => {
                let k = kafka.unwrap_or_default();
                let bootstrap_servers = env.or(k.bootstrap_servers).filter(|s| !s.is_empty()).ok_or_else(|| {
                    ConfigError::invalid(
                        "event_log.kafka.bootstrap_servers",
                        "required (or set SWITCHYARD_KAFKA_BOOTSTRAP_SERVERS)",
                    )
                })?;
                let producer = k
                    .producer
                    .into_iter()
                    .map(|(key, value)| match scalar_string(&value) {
                        Some(v) => Ok((key, v)),
                        None => Err(ConfigError::invalid(
                            format!("event_log.kafka.producer.{key}"),
                            "must be a string, number or boolean",
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let positive = |v: Option<u64>, field: &str| match v {
                    None => Ok(None),
                    Some(n) if n >= 1 && n <= i32::MAX as u64 => Ok(Some(n as i32)),
                    Some(n) => Err(ConfigError::invalid(
                        format!("event_log.kafka.{field}"),
                        format!("must be at least 1, got {n}"),
                    )),
                };
                Some(KafkaConfig {
                    bootstrap_servers,
                    topic_prefix: k.topic_prefix.filter(|p| !p.is_empty()).unwrap_or_else(|| "switchyard".into()),
                    partitions: positive(k.partitions, "partitions")?.unwrap_or(3),
                    replication_factor: positive(k.replication_factor, "replication_factor")?.unwrap_or(1),
                    producer,
                })
            }
        };
        let fsync = match section.fsync.as_deref().map(str::trim) {
            None => FsyncPolicy::Interval(Duration::from_secs(1)),
            Some("always") => FsyncPolicy::Always,
            Some("never") => FsyncPolicy::Never,
            Some(other) => FsyncPolicy::Interval(parse_duration(other).map_err(|e| {
                ConfigError::invalid(
                    "event_log.fsync",
                    format!("expected always, never or an interval like \"1s\": {e}"),
                )
            })?),
        };
        let path = (self.env)("SWITCHYARD_EVENT_LOG_PATH").or(section.path).unwrap_or_else(|| "./data/events".into());
        let gateway_id = section.gateway_id.or_else(|| (self.env)("SWITCHYARD_GATEWAY_ID")).unwrap_or_else(|| {
            format!(
                "{}-{}",
                hostname::get().map(|h| h.to_string_lossy().into_owned()).unwrap_or_else(|_| "gateway".into()),
                std::process::id()
            )
        });
        Ok(EventLogConfig {
            enabled: section.enabled.unwrap_or(true),
            kafka,
            path: path.into(),
            fsync,
            segment_bytes: section
                .segment_mb
                .filter(|mb| *mb > 0.0)
                .map_or(64 << 20, |mb| (mb * 1024.0 * 1024.0) as u64),
            queue_capacity: section.queue_capacity.map_or(65_536, |n| n.clamp(1, 10_000_000) as usize),
            gateway_id,
        })
    }

    fn deployment(&mut self, i: usize, entry: RawDeployment) -> Result<Option<DeploymentConfig>, ConfigError> {
        let at = |field: &str| format!("model_list[{i}].{field}");
        if entry.model_name.trim().is_empty() {
            return Err(ConfigError::invalid(at("model_name"), "must not be empty"));
        }
        self.unsupported("model_list[].litellm_params", &entry.litellm_params.extra);
        self.unsupported("model_list[].model_info", &entry.model_info.extra);
        self.unsupported("model_list[]", &entry.extra);
        let p = entry.litellm_params;
        let info = entry.model_info;
        let (provider_name, upstream_model) = providers::split_model(&p.model);
        if upstream_model.is_empty() {
            return Err(ConfigError::invalid(at("litellm_params.model"), "must name a model, like \"openai/gpt-4o\""));
        }
        let Some(provider) = providers::spec(provider_name) else {
            self.warnings.push(format!(
                "{}: provider {provider_name:?} is not supported by this Switchyard build yet; deployment {:?} is not served",
                at("litellm_params.model"),
                entry.model_name
            ));
            return Ok(None);
        };
        let api_base = match p.api_base.filter(|b| !b.is_empty()) {
            Some(base) => base,
            None => provider
                .api_base_env
                .iter()
                .find_map(|var| (self.env)(var))
                .or_else(|| provider.default_api_base.map(str::to_string))
                .ok_or_else(|| {
                    ConfigError::invalid(
                        at("litellm_params.api_base"),
                        format!("required for provider {}", provider.name),
                    )
                })?,
        };
        let api_key =
            p.api_key.filter(|k| !k.is_empty()).or_else(|| provider.api_key_env.iter().find_map(|var| (self.env)(var)));
        let mode = match info.mode.as_deref() {
            None => Mode::Chat,
            Some(m) => Mode::parse(m).ok_or_else(|| {
                ConfigError::invalid(at("model_info.mode"), format!("unknown mode {m:?} (chat, completion, embedding, image_generation, audio_transcription, audio_speech, rerank, moderation, responses)"))
            })?,
        };
        if let Some(w) = p.weight {
            if !(w >= 0.0 && w.is_finite()) {
                return Err(ConfigError::invalid(
                    at("litellm_params.weight"),
                    format!("must be a non-negative number, got {w}"),
                ));
            }
        }
        let id =
            info.id.filter(|s| !s.is_empty()).unwrap_or_else(|| stable_id(&entry.model_name, &p.model, &api_base, i));
        Ok(Some(DeploymentConfig {
            id,
            model_name: entry.model_name,
            litellm_model: p.model.clone(),
            provider,
            upstream_model: upstream_model.to_string(),
            api_key: api_key.map(SecretString::from),
            urls: EndpointUrls::new(provider.adapter, &api_base)
                .map_err(|e| ConfigError::invalid(at("litellm_params.api_base"), e))?,
            api_base: api_base.trim_end_matches('/').to_string(),
            api_version: p.api_version,
            rpm: p.rpm,
            tpm: p.tpm,
            order: p.order,
            weight: p.weight,
            timeout: p.timeout,
            stream_timeout: p.stream_timeout,
            max_retries: p.max_retries.unwrap_or(0).min(10) as u32,
            max_parallel_requests: p.max_parallel_requests.map(|n| n.min(u32::MAX as u64) as u32),
            mock_response: p.mock_response,
            mode,
            base_model: info.base_model,
            max_input_tokens: info.max_input_tokens,
            max_output_tokens: info.max_output_tokens,
            pricing: CustomPricing {
                input_cost_per_token: p.input_cost_per_token.or(info.input_cost_per_token),
                output_cost_per_token: p.output_cost_per_token.or(info.output_cost_per_token),
                cache_read_input_token_cost: info.cache_read_input_token_cost,
                cache_creation_input_token_cost: info.cache_creation_input_token_cost,
                output_cost_per_reasoning_token: info.output_cost_per_reasoning_token,
            },
        }))
    }

    fn apply_router_keys(&mut self, r: &mut RouterSettings, k: RouterKeys, section: &str) -> Result<(), ConfigError> {
        if let Some(s) = k.routing_strategy {
            r.strategy = Strategy::parse(&s).ok_or_else(|| {
                ConfigError::invalid(format!("{section}.routing_strategy"), format!("unknown strategy {s:?} (simple-shuffle, least-busy, usage-based-routing, usage-based-routing-v2, latency-based-routing, cost-based-routing)"))
            })?;
        }
        if let Some(args) = k.routing_strategy_args {
            self.unsupported(&format!("{section}.routing_strategy_args"), &args.extra);
            if let Some(ttl) = args.ttl {
                r.latency_ttl = ttl;
            }
            if let Some(b) = args.lowest_latency_buffer {
                r.lowest_latency_buffer = b.max(0.0);
            }
            if let Some(n) = args.max_latency_list_size {
                r.max_latency_list_size = (n as usize).clamp(1, 10_000);
            }
        }
        set(&mut r.num_retries, k.num_retries.map(|n| n.min(20) as u32));
        set(&mut r.timeout, k.timeout);
        if k.stream_timeout.is_some() {
            r.stream_timeout = k.stream_timeout;
        }
        set(&mut r.retry_after, k.retry_after);
        set(&mut r.max_fallbacks, k.max_fallbacks.map(|n| n as usize));
        if let Some(n) = k.allowed_fails {
            r.allowed_fails = Some(n.min(u32::MAX as u64) as u32);
        }
        set(&mut r.cooldown_time, k.cooldown_time);
        set(&mut r.disable_cooldowns, k.disable_cooldowns);
        set(&mut r.enable_pre_call_checks, k.enable_pre_call_checks);
        if let Some(f) = k.fallbacks {
            r.fallbacks = flatten_fallbacks(f);
        }
        if let Some(f) = k.context_window_fallbacks {
            r.context_window_fallbacks = flatten_fallbacks(f);
        }
        if let Some(f) = k.content_policy_fallbacks {
            r.content_policy_fallbacks = flatten_fallbacks(f);
        }
        set(&mut r.default_fallbacks, k.default_fallbacks);
        if let Some(p) = k.retry_policy {
            let (policy, unknown) = ClassMap::from_litellm(&p, "Retries");
            for key in unknown {
                self.warnings.push(format!("{section}.retry_policy.{key}: unknown error class; ignored"));
            }
            r.retry_policy = policy;
        }
        if let Some(p) = k.allowed_fails_policy {
            let (policy, unknown) = ClassMap::from_litellm(&p, "AllowedFails");
            for key in unknown {
                self.warnings.push(format!("{section}.allowed_fails_policy.{key}: unknown error class; ignored"));
            }
            r.allowed_fails_policy = policy;
        }
        if let Some(aliases) = k.model_group_alias {
            r.model_group_alias = aliases
                .into_iter()
                .map(|(alias, target)| match target {
                    AliasTarget::Name(group) => (alias, (group, false)),
                    AliasTarget::Detailed { model, hidden } => (alias, (model, hidden)),
                })
                .collect();
        }
        Ok(())
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

/// LiteLLM writes fallbacks as a list of one-key maps: `[{"gpt-4o": ["claude"]}]`.
fn flatten_fallbacks(list: Vec<BTreeMap<String, Vec<String>>>) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for map in list {
        for (group, targets) in map {
            out.entry(group).or_default().extend(targets);
        }
    }
    out
}

/// Fallbacks and aliases must name groups that exist, or they would silently never apply.
fn check_group_references(r: &RouterSettings, groups: &BTreeSet<&str>) -> Result<(), ConfigError> {
    let known = |name: &str| groups.contains(name) || r.model_group_alias.contains_key(name);
    for (alias, (target, _)) in &r.model_group_alias {
        if !groups.contains(target.as_str()) {
            return Err(ConfigError::invalid(
                format!("router_settings.model_group_alias.{alias}"),
                format!("unknown model group {target:?}"),
            ));
        }
    }
    for (field, map) in [
        ("fallbacks", &r.fallbacks),
        ("context_window_fallbacks", &r.context_window_fallbacks),
        ("content_policy_fallbacks", &r.content_policy_fallbacks),
    ] {
        for (group, targets) in map {
            // A source of "*" applies to every group, as in LiteLLM.
            if group != "*" && !known(group) {
                return Err(ConfigError::invalid(
                    format!("router_settings.{field}.{group}"),
                    format!("unknown model group {group:?}"),
                ));
            }
            if let Some(t) = targets.iter().find(|t| !known(t)) {
                return Err(ConfigError::invalid(
                    format!("router_settings.{field}.{group}"),
                    format!("unknown fallback model group {t:?}"),
                ));
            }
        }
    }
    if let Some(t) = r.default_fallbacks.iter().find(|t| !known(t)) {
        return Err(ConfigError::invalid("router_settings.default_fallbacks", format!("unknown model group {t:?}")));
    }
    Ok(())
}

/// A deployment id that stays the same across restarts for the same entry (LiteLLM hashes the
/// params too); the index keeps two identical entries apart.
fn stable_id(model_name: &str, model: &str, api_base: &str, index: usize) -> String {
    let digest = Sha256::digest(format!("{model_name}\0{model}\0{api_base}\0{index}").as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
