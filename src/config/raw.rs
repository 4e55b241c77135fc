//! LiteLLM's `config.yaml` as it is written: serde structs, lenient where LiteLLM's sections are
//! (unknown keys land in `extra` and are warned about) and strict in Switchyard's own sections.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_yaml_ng::Value;

/// Keys we do not implement, kept so each can be warned about once.
pub type Extra = BTreeMap<String, Value>;

#[derive(Debug, Default, Deserialize)]
pub struct RawConfig {
    #[serde(default)]
    pub model_list: Vec<RawDeployment>,
    #[serde(default)]
    pub router_settings: RawRouterSettings,
    #[serde(default)]
    pub litellm_settings: RawLitellmSettings,
    #[serde(default)]
    pub general_settings: RawGeneralSettings,
    #[serde(default)]
    pub environment_variables: BTreeMap<String, Value>,
    /// Switchyard's own section: where prices come from.
    #[serde(default)]
    pub pricing: Option<PricingSection>,
    /// Switchyard's own section: where events go.
    #[serde(default)]
    pub event_log: Option<EventLogSection>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Deserialize)]
pub struct RawDeployment {
    pub model_name: String,
    pub litellm_params: RawLitellmParams,
    #[serde(default)]
    pub model_info: RawModelInfo,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawLitellmParams {
    pub model: String,
    pub api_key: Option<String>,
    pub api_base: Option<String>,
    pub api_version: Option<String>,
    #[serde(default, deserialize_with = "opt_u64")]
    pub rpm: Option<u64>,
    #[serde(default, deserialize_with = "opt_u64")]
    pub tpm: Option<u64>,
    #[serde(default, deserialize_with = "opt_u64")]
    pub order: Option<u64>,
    #[serde(default, deserialize_with = "opt_f64")]
    pub weight: Option<f64>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub stream_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "opt_u64")]
    pub max_retries: Option<u64>,
    #[serde(default, deserialize_with = "opt_u64")]
    pub max_parallel_requests: Option<u64>,
    pub mock_response: Option<String>,
    #[serde(default, deserialize_with = "opt_f64")]
    pub input_cost_per_token: Option<f64>,
    #[serde(default, deserialize_with = "opt_f64")]
    pub output_cost_per_token: Option<f64>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawModelInfo {
    pub id: Option<String>,
    pub mode: Option<String>,
    pub base_model: Option<String>,
    #[serde(default, deserialize_with = "opt_u64")]
    pub max_input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "opt_u64")]
    pub max_output_tokens: Option<u64>,
    #[serde(default, deserialize_with = "opt_f64")]
    pub input_cost_per_token: Option<f64>,
    #[serde(default, deserialize_with = "opt_f64")]
    pub output_cost_per_token: Option<f64>,
    #[serde(default, deserialize_with = "opt_f64")]
    pub cache_read_input_token_cost: Option<f64>,
    #[serde(default, deserialize_with = "opt_f64")]
    pub cache_creation_input_token_cost: Option<f64>,
    #[serde(default, deserialize_with = "opt_f64")]
    pub output_cost_per_reasoning_token: Option<f64>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// The router keys, which LiteLLM accepts both under `router_settings` and `litellm_settings`.
#[derive(Debug, Default, Deserialize)]
pub struct RouterKeys {
    pub routing_strategy: Option<String>,
    pub routing_strategy_args: Option<RoutingStrategyArgs>,
    #[serde(default, deserialize_with = "opt_u64")]
    pub num_retries: Option<u64>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub stream_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub retry_after: Option<Duration>,
    #[serde(default, deserialize_with = "opt_u64")]
    pub max_fallbacks: Option<u64>,
    #[serde(default, deserialize_with = "opt_u64")]
    pub allowed_fails: Option<u64>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub cooldown_time: Option<Duration>,
    pub disable_cooldowns: Option<bool>,
    pub fallbacks: Option<Vec<BTreeMap<String, Vec<String>>>>,
    pub context_window_fallbacks: Option<Vec<BTreeMap<String, Vec<String>>>>,
    pub content_policy_fallbacks: Option<Vec<BTreeMap<String, Vec<String>>>>,
    pub default_fallbacks: Option<Vec<String>>,
    pub retry_policy: Option<BTreeMap<String, u64>>,
    pub allowed_fails_policy: Option<BTreeMap<String, u64>>,
    pub enable_pre_call_checks: Option<bool>,
    pub model_group_alias: Option<BTreeMap<String, AliasTarget>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawRouterSettings {
    #[serde(flatten)]
    pub keys: RouterKeys,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawLitellmSettings {
    #[serde(flatten)]
    pub keys: RouterKeys,
    /// LiteLLM's name for the default upstream timeout in this section.
    #[serde(default, deserialize_with = "opt_duration")]
    pub request_timeout: Option<Duration>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Default, Deserialize)]
pub struct RoutingStrategyArgs {
    #[serde(default, deserialize_with = "opt_duration")]
    pub ttl: Option<Duration>,
    #[serde(default, deserialize_with = "opt_f64")]
    pub lowest_latency_buffer: Option<f64>,
    #[serde(default, deserialize_with = "opt_u64")]
    pub max_latency_list_size: Option<u64>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `model_group_alias` values: a group name, or `{model: name, hidden: bool}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum AliasTarget {
    Name(String),
    Detailed {
        model: String,
        #[serde(default)]
        hidden: bool,
    },
}

#[derive(Debug, Default, Deserialize)]
pub struct RawGeneralSettings {
    pub master_key: Option<String>,
    #[serde(default, deserialize_with = "opt_f64")]
    pub max_request_size_mb: Option<f64>,
    pub store_prompts_in_spend_logs: Option<bool>,
    pub background_health_checks: Option<bool>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub health_check_interval: Option<Duration>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `pricing:` — Switchyard's own section, so unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricingSection {
    /// A price map in LiteLLM's `model_prices_and_context_window.json` format, replacing the
    /// bundled one.
    pub model_cost_map_path: Option<String>,
}

/// `event_log:` — Switchyard's own section, so unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventLogSection {
    /// `false` turns publishing off entirely (benchmarks, or a deliberate choice).
    pub enabled: Option<bool>,
    pub kafka: Option<KafkaSection>,
    /// The embedded log's directory (with Kafka: where the spool lives).
    pub path: Option<String>,
    /// `always`, `never`, or an interval like `1s` (the default).
    pub fsync: Option<String>,
    #[serde(default, deserialize_with = "opt_f64")]
    pub segment_mb: Option<f64>,
    #[serde(default, deserialize_with = "opt_u64")]
    pub queue_capacity: Option<u64>,
    pub gateway_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSection {
    pub bootstrap_servers: Option<String>,
    pub topic_prefix: Option<String>,
    #[serde(default, deserialize_with = "opt_u64")]
    pub partitions: Option<u64>,
    #[serde(default, deserialize_with = "opt_u64")]
    pub replication_factor: Option<u64>,
    /// Extra librdkafka properties, passed through as strings.
    #[serde(default)]
    pub producer: BTreeMap<String, Value>,
}

/// A number or a numeric string ("480"); YAML configs carry both.
fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0 && f.fract() == 0.0).map(|f| f as u64))
            .map(Some)
            .ok_or_else(|| de::Error::custom(format!("expected a non-negative integer, got {n}"))),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| de::Error::custom(format!("expected a non-negative integer, got {s:?}"))),
        Some(other) => Err(de::Error::custom(format!("expected a non-negative integer, got {other:?}"))),
    }
}

fn opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(Value::String(s)) => {
            s.trim().parse().map(Some).map_err(|_| de::Error::custom(format!("expected a number, got {s:?}")))
        }
        Some(other) => Err(de::Error::custom(format!("expected a number, got {other:?}"))),
    }
}

/// LiteLLM's durations are seconds (integer or float); humantime strings ("30s", "2m") work too.
fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(secs) => duration_from_secs(secs).map(Some).map_err(de::Error::custom),
            None => Err(de::Error::custom(format!("expected a non-negative number of seconds, got {n}"))),
        },
        Some(Value::String(s)) => parse_duration(&s).map(Some).map_err(de::Error::custom),
        Some(other) => Err(de::Error::custom(format!("expected seconds or a duration like \"30s\", got {other:?}"))),
    }
}

/// The longest duration accepted anywhere (a config key or a request's `timeout`): a year.
/// Anything longer is a mistake, and would overflow `Instant` arithmetic.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Seconds as a client or config writes them, checked: finite, not negative, at most
/// [`MAX_DURATION`]. Never panics, whatever the number.
pub fn duration_from_secs(secs: f64) -> Result<Duration, String> {
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if d <= MAX_DURATION => Ok(d),
        _ => Err(format!("expected a number of seconds between 0 and {}, got {secs}", MAX_DURATION.as_secs())),
    }
}

/// Seconds as a number ("300", "0.5") or a humantime duration ("30s", "5m"), at most
/// [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return duration_from_secs(secs);
    }
    match humantime::parse_duration(s) {
        Ok(d) if d <= MAX_DURATION => Ok(d),
        Ok(_) => Err(format!("expected a duration of at most {}s, got {s:?}", MAX_DURATION.as_secs())),
        Err(e) => Err(format!("expected seconds or a duration like \"30s\", got {s:?} ({e})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_checked_never_panicking() {
        assert_eq!(duration_from_secs(1.5), Ok(Duration::from_millis(1500)));
        for bad in [1e300, 1e19, -1.0, f64::NAN, f64::INFINITY, 4e7] {
            assert!(duration_from_secs(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        for bad in ["1e300", "1e19", "-5", "100000000000s", "NaN", "soon"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
