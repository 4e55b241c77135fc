//! Configuration: LiteLLM's `config.yaml`, read into [`raw`] structs, then validated into
//! [`Config`].
//!
//! Every problem in a file is reported at once, each with its field path. LiteLLM keys and
//! providers Switchyard does not implement are warnings (one per key, one per skipped
//! deployment), so a real LiteLLM config starts and serves what this build supports.
//!
//! One module per section: `deployment` (`model_list`), `router` (`router_settings` and the
//! router keys LiteLLM also accepts in `litellm_settings`), `general` (`general_settings`, with
//! its alerting keys in `alerting`), `event_log` and `analytics` (Switchyard's own sections);
//! `env` resolves `os.environ/NAME` references.

mod alerting;
mod analytics;
mod deployment;
mod env;
mod event_log;
mod general;
pub mod providers;
pub mod raw;
mod router;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

use env::MissingVar;
use raw::{Extra, RawConfig};

pub use alerting::{AlertType, AlertingConfig, Channel};
pub use analytics::ClickHouseConfig;
pub use deployment::{CustomPricing, DeploymentConfig, Mode};
pub use event_log::{EventLogConfig, FsyncPolicy, KafkaConfig};
pub use general::GeneralSettings;
pub use providers::{EndpointUrls, ProviderSpec};
pub use raw::{duration_from_secs, parse_duration, MAX_DURATION};
pub use router::{wildcard_matches, wildcard_upstream_model, RouterSettings, Strategy};

/// One thing wrong with a config: the field path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl Problem {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// A config that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    /// Every problem found, never empty: one per line when there are several.
    #[error("{}", list_problems(.0))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// The problems found (none for a file that could not be read).
    pub fn problems(&self) -> &[Problem] {
        match self {
            Self::Invalid(problems) => problems,
            Self::Read { .. } => &[],
        }
    }
}

fn list_problems(problems: &[Problem]) -> String {
    match problems {
        [one] => one.to_string(),
        many => {
            let lines: Vec<String> = many.iter().map(|p| format!("  {p}")).collect();
            format!("{} problems:\n{}", many.len(), lines.join("\n"))
        }
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
    /// `analytics.clickhouse`: where spend and analytics go (in-memory rollups when unset).
    pub clickhouse: Option<ClickHouseConfig>,
    /// `litellm_settings.timezone`: where budget windows start (UTC when unset).
    pub timezone: jiff::tz::TimeZone,
    /// One line per LiteLLM key, provider or deployment that was accepted but is not served.
    pub warnings: Vec<String>,
}

impl Config {
    /// Reads and validates a config file, using the process environment for `os.environ/…`.
    /// Relative paths in the file (`event_log.path`, `pricing.model_cost_map_path`) are relative
    /// to the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        Self::parse(&text, &|name| std::env::var(name).ok(), Some(&dir))
    }

    /// Parses and validates YAML text; `env` looks up environment variables. Relative paths are
    /// relative to the working directory.
    pub fn from_yaml(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::parse(text, env, None)
    }

    fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>, base_dir: Option<&Path>) -> Result<Self, ConfigError> {
        let mut doc: Value = serde_yaml_ng::from_str(text)
            .map_err(|e| ConfigError::Invalid(vec![Problem::new("config", e.to_string())]))?;
        let overlay = environment_overlay(&mut doc, env);
        let lookup = |name: &str| overlay.get(name).cloned().or_else(|| env(name));
        let missing = env::resolve(&mut doc, &lookup);
        let mut problems = Vec::new();
        let raw = raw::read(doc, &mut problems);
        let validator = Validator {
            warnings: Vec::new(),
            problems,
            env: &lookup,
            seen_unsupported: BTreeSet::new(),
            ignored: Vec::new(),
            base_dir,
        };
        validator.validate(raw, missing)
    }

    /// Model group names, in config order, without duplicates.
    pub fn model_groups(&self) -> Vec<&str> {
        let mut seen = BTreeSet::new();
        self.deployments.iter().map(|d| d.model_name.as_str()).filter(|n| seen.insert(*n)).collect()
    }
}

/// `environment_variables`, resolved against the real environment: they are visible to every
/// other `os.environ/` reference in the file.
fn environment_overlay(doc: &mut Value, env: &dyn Fn(&str) -> Option<String>) -> HashMap<String, String> {
    let mut overlay = HashMap::new();
    if let Some(vars) = doc.get_mut("environment_variables") {
        // An unset variable here is only a problem where it is used.
        env::resolve(vars, env);
        if let Some(map) = vars.as_mapping() {
            for (k, v) in map {
                if let (Some(k), Some(v)) = (k.as_str(), scalar_string(v)) {
                    overlay.insert(k.to_string(), v);
                }
            }
        }
    }
    overlay
}

fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Turns raw sections into a [`Config`], collecting every problem and warning on the way.
struct Validator<'a> {
    warnings: Vec<String>,
    problems: Vec<Problem>,
    env: &'a dyn Fn(&str) -> Option<String>,
    /// Unsupported keys already warned about, by normalized path (one warning each).
    seen_unsupported: BTreeSet<String>,
    /// Concrete paths of keys accepted but ignored: an unset variable under one of them is not
    /// worth a warning of its own.
    ignored: Vec<String>,
    /// The config file's directory, when there is a file.
    base_dir: Option<&'a Path>,
}

impl Validator<'_> {
    fn warn(&mut self, warning: impl Into<String>) {
        self.warnings.push(warning.into());
    }

    /// Records a problem; one per field (a value that did not fit its type is not also reported
    /// as missing, say).
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        if !self.problems.iter().any(|p| p.path == path) {
            self.problems.push(Problem::new(path, message));
        }
    }

    /// Warns once per `normalized` path (`model_list[].litellm_params`) about keys Switchyard
    /// does not implement; `at` is where they are in this file (`model_list[3].litellm_params`).
    fn unsupported(&mut self, normalized: &str, at: &str, extra: &Extra) {
        for key in extra.keys() {
            self.ignored.push(format!("{at}.{key}"));
            let path = format!("{normalized}.{key}");
            if self.seen_unsupported.insert(path.clone()) {
                self.warn(format!("{path}: not implemented by Switchyard; ignored"));
            }
        }
    }

    /// `value` if it lies in `range`; otherwise a problem naming `path`.
    fn in_range(&mut self, path: impl Into<String>, value: Option<u64>, range: RangeInclusive<u64>) -> Option<u64> {
        let n = value?;
        if range.contains(&n) {
            return Some(n);
        }
        self.problem(path, format!("must be between {} and {}, got {n}", range.start(), range.end()));
        None
    }

    /// `value`, capped at `max` with a warning: for LiteLLM keys whose large values are
    /// mistakes, but which LiteLLM itself accepts.
    fn capped(&mut self, path: &str, value: u64, max: u32) -> u32 {
        if value > u64::from(max) {
            self.warn(format!("{path}: {value} is more than Switchyard allows; capped at {max}"));
        }
        u32::try_from(value).map_or(max, |v| v.min(max))
    }

    /// A relative path from the file, resolved against the file's directory.
    fn file_path(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        match self.base_dir {
            Some(dir) if p.is_relative() => dir.join(p.strip_prefix(".").unwrap_or(p)),
            _ => p.to_path_buf(),
        }
    }

    fn validate(mut self, raw: RawConfig, missing: Vec<MissingVar>) -> Result<Config, ConfigError> {
        for key in raw.extra.keys() {
            self.ignored.push(key.clone());
            self.warnings.push(format!("{key}: not a section Switchyard implements; ignored"));
        }
        let (in_model_list, elsewhere): (Vec<MissingVar>, Vec<MissingVar>) =
            missing.into_iter().partition(|m| m.path.starts_with("model_list["));
        let (deployments, groups) = self.deployments(raw.model_list, raw.unreadable_groups, &in_model_list);
        let timezone = self.timezone(raw.litellm_settings.timezone.as_deref());
        let router = self.router_settings(raw.litellm_settings, raw.router_settings, &groups);
        let general = self.general(raw.general_settings);
        let event_log = self.event_log(raw.event_log.unwrap_or_default());
        let clickhouse = self.analytics(raw.analytics);
        self.unset_variables(elsewhere);
        if !self.problems.is_empty() {
            return Err(ConfigError::Invalid(self.problems));
        }
        Ok(Config {
            deployments,
            router,
            general,
            model_cost_map_path: raw
                .pricing
                .and_then(|p| p.model_cost_map_path)
                .map(|p| self.file_path(&p).to_string_lossy().into_owned()),
            event_log,
            clickhouse,
            timezone,
            warnings: self.warnings,
        })
    }

    fn timezone(&mut self, name: Option<&str>) -> jiff::tz::TimeZone {
        let Some(name) = name else { return jiff::tz::TimeZone::UTC };
        match jiff::tz::TimeZone::get(name) {
            Ok(tz) => tz,
            Err(e) => {
                self.problem("litellm_settings.timezone", format!("unknown timezone {name:?}: {e}"));
                jiff::tz::TimeZone::UTC
            }
        }
    }

    /// Unset `os.environ/` references outside `model_list`: the master key is required (starting
    /// without it would serve everyone); elsewhere the key is treated as unset, with a warning
    /// unless the key is ignored anyway.
    fn unset_variables(&mut self, missing: Vec<MissingVar>) {
        for m in missing {
            if m.path == "general_settings.master_key" {
                self.problem(
                    m.path,
                    format!(
                        "environment variable {} is not set (the gateway does not start without its master key)",
                        m.var
                    ),
                );
                continue;
            }
            let under = |ignored: &String| {
                m.path
                    .strip_prefix(ignored.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
            };
            if !self.ignored.iter().any(under) {
                self.warn(format!("{}: environment variable {} is not set; treated as unset", m.path, m.var));
            }
        }
    }
}

#[cfg(test)]
mod tests;
