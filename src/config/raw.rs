//! LiteLLM's `config.yaml` as it is written: serde structs, lenient where LiteLLM's sections are
//! (unknown keys land in `extra` and are warned about) and strict in Switchyard's own sections.
//!
//! [`read`] deserializes each section, and each `model_list` entry, on its own, so one mistake
//! does not hide the others: every section that does not fit its struct becomes a [`Problem`]
//! and the rest are still validated.
//!
//! Numbers are read the way LiteLLM's YAML reader (PyYAML, YAML 1.1) reads them: `20_000` is a
//! number there, so it is here too.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::de::{self, DeserializeOwned, Deserializer};
use serde::Deserialize;
use serde_path_to_error::Segment;
use serde_yaml_ng::Value;

use super::Problem;

/// Keys we do not implement, kept so each can be warned about once.
pub type Extra = BTreeMap<String, Value>;

/// The whole file, section by section. A section that could not be read is left at its default
/// (its problem is already recorded), so the other sections are still checked.
#[derive(Debug, Default)]
pub struct RawConfig {
    /// One slot per `model_list` entry, in order; `None` where the entry could not be read.
    pub model_list: Vec<Option<RawDeployment>>,
    /// `model_name`s of entries that could not be read: references to them are not reported as
    /// unknown on top of the entry's own problem.
    pub unreadable_groups: BTreeSet<String>,
    pub router_settings: RawRouterSettings,
    pub litellm_settings: RawLitellmSettings,
    pub general_settings: RawGeneralSettings,
    /// Switchyard's own section: where prices come from.
    pub pricing: Option<PricingSection>,
    /// Switchyard's own section: where events go.
    pub event_log: Option<EventLogSection>,
    pub analytics: Option<AnalyticsSection>,
    /// Top-level keys that are not a section Switchyard reads.
    pub extra: Extra,
}

/// Reads every section of `doc` (a mapping, `os.environ/` references already resolved),
/// recording each section or entry that does not fit in `problems`.
pub fn read(doc: Value, problems: &mut Vec<Problem>) -> RawConfig {
    let mut raw = RawConfig::default();
    let map = match doc {
        Value::Mapping(map) => map,
        Value::Null => return raw,
        other => {
            problems.push(Problem::new("config", format!("expected a mapping of sections, got {}", kind(&other))));
            return raw;
        }
    };
    for (key, value) in map {
        let Some(name) = key.as_str().map(str::to_string) else {
            problems.push(Problem::new("config", format!("section names are strings, got {}", kind(&key))));
            continue;
        };
        match name.as_str() {
            "model_list" => read_model_list(value, &mut raw, problems),
            "router_settings" => {
                let (known, extra) = split_known(value, &name, &[struct_fields::<RouterKeys>()], problems);
                raw.router_settings = RawRouterSettings { keys: section(known, &name, problems), extra };
            }
            "litellm_settings" => {
                let fields = [struct_fields::<RouterKeys>(), struct_fields::<LitellmOwnKeys>()];
                let (known, extra) = split_known(value, &name, &fields, problems);
                let own: LitellmOwnKeys = section(known.clone(), &name, problems);
                let keys = section(known, &name, problems);
                raw.litellm_settings =
                    RawLitellmSettings { keys, request_timeout: own.request_timeout, timezone: own.timezone, extra };
            }
            "general_settings" => raw.general_settings = section(value, &name, problems),
            // Resolved into the environment overlay before this point; nothing else to read.
            "environment_variables" => {}
            "pricing" => raw.pricing = Some(section(value, &name, problems)),
            "event_log" => raw.event_log = Some(section(value, &name, problems)),
            "analytics" => raw.analytics = Some(section(value, &name, problems)),
            _ => {
                raw.extra.insert(name, value);
            }
        }
    }
    raw
}

fn read_model_list(value: Value, raw: &mut RawConfig, problems: &mut Vec<Problem>) {
    let items = match value {
        Value::Sequence(items) => items,
        Value::Null => return,
        other => {
            problems.push(Problem::new("model_list", format!("expected a list of deployments, got {}", kind(&other))));
            return;
        }
    };
    for (i, item) in items.into_iter().enumerate() {
        let name = item.get("model_name").and_then(Value::as_str).map(str::to_string);
        let before = problems.len();
        let entry = deserialize_all::<RawDeployment>(item, &format!("model_list[{i}]"), problems);
        // An entry with a field that does not fit is not validated further: its other
        // problems are already listed.
        if problems.len() > before {
            raw.unreadable_groups.extend(name);
            raw.model_list.push(None);
        } else {
            raw.model_list.push(entry);
        }
    }
}

/// Splits a lenient section into the keys named in `fields` and the rest.
fn split_known(value: Value, path: &str, fields: &[&[&str]], problems: &mut Vec<Problem>) -> (Value, Extra) {
    let map = match value {
        Value::Mapping(map) => map,
        Value::Null => return (Value::Null, Extra::new()),
        other => {
            problems.push(Problem::new(path, format!("expected a mapping, got {}", kind(&other))));
            return (Value::Null, Extra::new());
        }
    };
    let mut known = serde_yaml_ng::Mapping::new();
    let mut extra = Extra::new();
    for (key, v) in map {
        match key.as_str() {
            Some(k) if fields.iter().any(|f| f.contains(&k)) => {
                known.insert(key, v);
            }
            Some(k) => {
                extra.insert(k.to_string(), v);
            }
            None => problems.push(Problem::new(path, format!("keys are strings, got {}", kind(&key)))),
        }
    }
    (Value::Mapping(known), extra)
}

/// The field names of a struct deriving `Deserialize` (serde hands them to
/// `deserialize_struct`), so a list of known keys cannot drift from the struct.
fn struct_fields<T: DeserializeOwned>() -> &'static [&'static str] {
    struct FieldNames<'a>(&'a mut &'static [&'static str]);

    impl<'de> Deserializer<'de> for FieldNames<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: de::Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("fields read"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
            unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    // Always an error: the point is the side effect.
    let _ = T::deserialize(FieldNames(&mut fields));
    fields
}

/// One section; null (a section whose keys are all commented out) is the default. The keys
/// that fit are kept, so the rest of the section is still validated.
fn section<T: DeserializeOwned + Default>(value: Value, path: &str, problems: &mut Vec<Problem>) -> T {
    if value.is_null() {
        return T::default();
    }
    deserialize_all(value, path, problems).unwrap_or_default()
}

/// The most fields of one section or entry reported as not fitting.
const MAX_UNFIT_FIELDS: usize = 50;

/// Deserializes `value`, recording every field that does not fit, by its full path: each such
/// field is removed and the rest tried again, so one mistake does not hide the next. `None`
/// when what is left still does not fit (a required field is missing, or the bad value is a
/// list item, which cannot be removed without renumbering the others).
fn deserialize_all<T: DeserializeOwned>(mut value: Value, path: &str, problems: &mut Vec<Problem>) -> Option<T> {
    for _ in 0..MAX_UNFIT_FIELDS {
        let e = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(v) => return Some(v),
            Err(e) => e,
        };
        let inner = e.path().to_string();
        let full = match inner.as_str() {
            "." => path.to_string(),
            p if p.starts_with('[') => format!("{path}{p}"),
            p => format!("{path}.{p}"),
        };
        let segments: Vec<Segment> = e.path().iter().cloned().collect();
        problems.push(Problem::new(full, e.into_inner().to_string()));
        if !remove_field(&mut value, &segments) {
            return None;
        }
    }
    None
}

/// Removes the mapping key at `path` from `value`; false when `path` does not end in a key
/// that is there.
fn remove_field(value: &mut Value, path: &[Segment]) -> bool {
    let Some((Segment::Map { key }, parents)) = path.split_last() else { return false };
    let mut at = value;
    for segment in parents {
        let next = match segment {
            Segment::Map { key } => at.get_mut(key.as_str()),
            Segment::Seq { index } => at.get_mut(*index),
            Segment::Enum { .. } | Segment::Unknown => None,
        };
        match next {
            Some(v) => at = v,
            None => return false,
        }
    }
    at.as_mapping_mut().and_then(|m| m.remove(key.as_str())).is_some()
}

/// How a YAML value is described in messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

#[derive(Debug, Deserialize)]
pub struct RawDeployment {
    /// Optional here so an unset `os.environ/` reference (null) is reported by the validator.
    #[serde(default)]
    pub model_name: Option<String>,
    pub litellm_params: RawLitellmParams,
    #[serde(default, deserialize_with = "null_default")]
    pub model_info: RawModelInfo,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawLitellmParams {
    /// Optional here so an unset `os.environ/` reference (null) is reported by the validator.
    #[serde(default)]
    pub model: Option<String>,
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
    #[serde(default, deserialize_with = "opt_bool")]
    pub disable_cooldowns: Option<bool>,
    pub fallbacks: Option<Vec<BTreeMap<String, Vec<String>>>>,
    pub context_window_fallbacks: Option<Vec<BTreeMap<String, Vec<String>>>>,
    pub content_policy_fallbacks: Option<Vec<BTreeMap<String, Vec<String>>>>,
    pub default_fallbacks: Option<Vec<String>>,
    pub retry_policy: Option<BTreeMap<String, u64>>,
    pub allowed_fails_policy: Option<BTreeMap<String, u64>>,
    #[serde(default, deserialize_with = "opt_bool")]
    pub enable_pre_call_checks: Option<bool>,
    pub model_group_alias: Option<BTreeMap<String, AliasTarget>>,
}

/// `router_settings`. Not a serde struct: a flattened [`RouterKeys`] would lose the name of a
/// field that does not fit (the error would only say `router_settings`), so [`read`] splits the
/// keys itself.
#[derive(Debug, Default)]
pub struct RawRouterSettings {
    pub keys: RouterKeys,
    pub extra: Extra,
}

/// `litellm_settings`: the router keys, `request_timeout`, and the many keys we ignore.
#[derive(Debug, Default)]
pub struct RawLitellmSettings {
    pub keys: RouterKeys,
    /// LiteLLM's name for the default upstream timeout in this section.
    pub request_timeout: Option<Duration>,
    /// Budget windows are aligned to this IANA zone (UTC when unset).
    pub timezone: Option<String>,
    pub extra: Extra,
}

/// The keys of `litellm_settings` that are not router keys but are read.
#[derive(Debug, Default, Deserialize)]
struct LitellmOwnKeys {
    #[serde(default, deserialize_with = "opt_duration")]
    request_timeout: Option<Duration>,
    timezone: Option<String>,
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
    #[serde(default, deserialize_with = "opt_bool")]
    pub store_prompts_in_spend_logs: Option<bool>,
    #[serde(default, deserialize_with = "opt_bool")]
    pub background_health_checks: Option<bool>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub health_check_interval: Option<Duration>,
    /// The alerting keys, read as written: `config::alerting` checks each value.
    pub alerting: Option<Value>,
    pub alerting_threshold: Option<Value>,
    pub alert_types: Option<Value>,
    pub alert_to_webhook_url: Option<Value>,
    pub alerting_args: Option<Value>,
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

/// `analytics:` — Switchyard's own section, so unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsSection {
    pub clickhouse: Option<ClickHouseSection>,
}

/// `analytics.clickhouse`: where the consumers write and the spend endpoints read.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseSection {
    /// `http://host:8123`.
    pub url: Option<String>,
    pub database: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
}

/// `event_log:` — Switchyard's own section, so unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventLogSection {
    /// `false` turns publishing off entirely (benchmarks, or a deliberate choice).
    #[serde(default, deserialize_with = "opt_bool")]
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

/// A null value as the type's default (a mapping whose keys are all commented out is null).
fn null_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A YAML 1.1 number written with digit separators (`20_000`, `0.000_42`), which PyYAML reads
/// as a number and YAML 1.2 as a string: the digits without the underscores. `None` when `s`
/// is not such a number.
fn without_digit_separators(s: &str) -> Option<String> {
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    if !s.contains('_') || !unsigned.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e)),
        None => (unsigned, None),
    };
    let mantissa_ok =
        mantissa.chars().all(|c| c.is_ascii_digit() || c == '_' || c == '.') && mantissa.matches('.').count() <= 1;
    let exponent_ok = exponent.is_none_or(|e| {
        let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
        !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
    });
    (mantissa_ok && exponent_ok).then(|| s.replace('_', ""))
}

/// The text of a number as written in a string: trimmed, digit separators removed.
fn number_text(s: &str) -> String {
    let s = s.trim();
    without_digit_separators(s).unwrap_or_else(|| s.to_string())
}

/// 2^64: an `f64` at or above it does not fit a `u64` (`as` would saturate silently).
const U64_LIMIT: f64 = 18_446_744_073_709_551_616.0;

/// A number, a numeric string ("480") or a YAML 1.1 number with separators (`20_000`).
fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let expected =
        |got: &dyn std::fmt::Display| de::Error::custom(format!("expected a non-negative integer, got {got}"));
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| (0.0..U64_LIMIT).contains(f) && f.fract() == 0.0).map(|f| f as u64))
            .map(Some)
            .ok_or_else(|| expected(&n)),
        Some(Value::String(s)) => number_text(&s).parse().map(Some).map_err(|_| expected(&format!("{s:?}"))),
        Some(other) => Err(expected(&format!("{other:?}"))),
    }
}

/// A finite number, a numeric string, or a YAML 1.1 number with separators (`0.000_42`).
fn opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let expected = |got: &dyn std::fmt::Display| de::Error::custom(format!("expected a finite number, got {got}"));
    let n = match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_f64().ok_or_else(|| expected(&n))?,
        Some(Value::String(s)) => number_text(&s).parse::<f64>().map_err(|_| expected(&format!("{s:?}")))?,
        Some(other) => return Err(expected(&format!("{other:?}"))),
    };
    if n.is_finite() {
        Ok(Some(n))
    } else {
        Err(expected(&n))
    }
}

/// A boolean, including YAML 1.1's spellings that PyYAML reads as one (`yes`, `no`, `on`, `off`).
fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" | "on" => Ok(Some(true)),
            "false" | "no" | "n" | "off" => Ok(Some(false)),
            _ => Err(de::Error::custom(format!("expected true or false, got {s:?}"))),
        },
        Some(other) => Err(de::Error::custom(format!("expected true or false, got {other:?}"))),
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

/// Seconds as a number ("300", "0.5", "1_000") or a humantime duration ("30s", "5m"), at most
/// [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = number_text(s).parse::<f64>() {
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
        assert_eq!(parse_duration("1_000"), Ok(Duration::from_secs(1000)));
    }

    #[test]
    fn digit_separators_are_read_as_pyyaml_reads_them() {
        assert_eq!(without_digit_separators("20_000").as_deref(), Some("20000"));
        assert_eq!(without_digit_separators("-1_000.000_5e+3").as_deref(), Some("-1000.0005e+3"));
        for not_a_number in ["_1", "20000", "1_0_a", "1.2.3_4", "1_0e", "gpt_4", "2023-05_15"] {
            assert_eq!(without_digit_separators(not_a_number), None, "{not_a_number}");
        }
    }

    #[derive(Debug, Deserialize)]
    struct Numbers {
        #[serde(default, deserialize_with = "opt_u64")]
        int: Option<u64>,
        #[serde(default, deserialize_with = "opt_f64")]
        float: Option<f64>,
        #[serde(default, deserialize_with = "opt_bool")]
        flag: Option<bool>,
    }

    fn numbers(yaml: &str) -> Result<Numbers, String> {
        serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn every_field_that_does_not_fit_is_reported() {
        let mut problems = Vec::new();
        let value = serde_yaml_ng::from_str("{int: x, float: 1.5, flag: maybe}").unwrap();
        let numbers = deserialize_all::<Numbers>(value, "section", &mut problems).unwrap();
        assert_eq!(numbers.float, Some(1.5), "the fields that fit are kept");
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["section.int", "section.flag"]);
        // A bad list item cannot be removed without renumbering the others: reading stops there.
        let mut problems = Vec::new();
        let value = serde_yaml_ng::from_str("[{model_name: a}, {model_name: b, litellm_params: 3}]").unwrap();
        assert!(deserialize_all::<Vec<RawDeployment>>(value, "model_list", &mut problems).is_none());
        assert_eq!(problems[0].path, "model_list[0]");
        assert_eq!(problems.len(), 1);
    }

    #[test]
    fn numbers_never_saturate_and_must_be_finite() {
        let n = numbers("{int: 20_000, float: 0.000_42, flag: yes}").unwrap();
        assert_eq!((n.int, n.float, n.flag), (Some(20_000), Some(0.00042), Some(true)));
        assert_eq!(numbers("{int: 18446744073709551615}").unwrap().int, Some(u64::MAX));
        for bad in ["{int: 1e30}", "{int: 1.5}", "{int: -1}", "{int: \"1e30\"}", "{float: .inf}", "{float: \"NaN\"}"] {
            assert!(numbers(bad).is_err(), "{bad}");
        }
    }
}
