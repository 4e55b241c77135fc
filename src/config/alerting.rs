//! LiteLLM's alerting keys of `general_settings`: `alerting` (where alerts go),
//! `alerting_threshold`, `alert_types`, `alert_to_webhook_url` and `alerting_args`, with the
//! environment's `SLACK_WEBHOOK_URL` and `WEBHOOK_URL`. The alerts consumer
//! (`crate::consumers::alerts`) acts on them. A value that cannot be right (an unknown alert
//! type, a URL that is not http(s), a threshold of 0) is a problem naming its field; what
//! LiteLLM accepts and Switchyard does not do (email, `region_outage_alerts`, …) is a warning.

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::SecretString;
use serde_yaml_ng::Value;

use super::raw::{duration_from_secs, parse_duration};
use super::Validator;

/// Where alerts are delivered (`general_settings.alerting`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Slack's incoming webhooks: `{"text": …}` to `SLACK_WEBHOOK_URL`, or per alert type to
    /// `alert_to_webhook_url` (LiteLLM's routing, which is Slack's format too).
    Slack,
    /// JSON to `WEBHOOK_URL`: LiteLLM's WebhookEvent for budget alerts, the alert record for the
    /// others.
    Webhook,
}

/// LiteLLM's alert types (`AlertType`), the closed set `alert_types` and
/// `alert_to_webhook_url` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlertType {
    LlmExceptions,
    LlmTooSlow,
    LlmRequestsHanging,
    BudgetAlerts,
    SpendReports,
    FailedTrackingSpend,
    DbExceptions,
    DailyReports,
    CooldownDeployment,
    NewModelAdded,
    ModelDeprecationWarnings,
    OutageAlerts,
    RegionOutageAlerts,
    FallbackReports,
    NewVirtualKeyCreated,
    VirtualKeyUpdated,
    VirtualKeyDeleted,
    NewTeamCreated,
    TeamUpdated,
    TeamDeleted,
    NewInternalUserCreated,
    InternalUserUpdated,
    InternalUserDeleted,
}

impl AlertType {
    /// Every type, LiteLLM's default `alert_types` (the first 14) first.
    pub const ALL: [AlertType; 23] = [
        Self::LlmExceptions,
        Self::LlmTooSlow,
        Self::LlmRequestsHanging,
        Self::BudgetAlerts,
        Self::SpendReports,
        Self::FailedTrackingSpend,
        Self::DbExceptions,
        Self::DailyReports,
        Self::CooldownDeployment,
        Self::NewModelAdded,
        Self::ModelDeprecationWarnings,
        Self::OutageAlerts,
        Self::RegionOutageAlerts,
        Self::FallbackReports,
        Self::NewVirtualKeyCreated,
        Self::VirtualKeyUpdated,
        Self::VirtualKeyDeleted,
        Self::NewTeamCreated,
        Self::TeamUpdated,
        Self::TeamDeleted,
        Self::NewInternalUserCreated,
        Self::InternalUserUpdated,
        Self::InternalUserDeleted,
    ];

    /// LiteLLM's default `alert_types`.
    pub fn defaults() -> Vec<AlertType> {
        Self::ALL[..14].to_vec()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::LlmExceptions => "llm_exceptions",
            Self::LlmTooSlow => "llm_too_slow",
            Self::LlmRequestsHanging => "llm_requests_hanging",
            Self::BudgetAlerts => "budget_alerts",
            Self::SpendReports => "spend_reports",
            Self::FailedTrackingSpend => "failed_tracking_spend",
            Self::DbExceptions => "db_exceptions",
            Self::DailyReports => "daily_reports",
            Self::CooldownDeployment => "cooldown_deployment",
            Self::NewModelAdded => "new_model_added",
            Self::ModelDeprecationWarnings => "model_deprecation_warnings",
            Self::OutageAlerts => "outage_alerts",
            Self::RegionOutageAlerts => "region_outage_alerts",
            Self::FallbackReports => "fallback_reports",
            Self::NewVirtualKeyCreated => "new_virtual_key_created",
            Self::VirtualKeyUpdated => "virtual_key_updated",
            Self::VirtualKeyDeleted => "virtual_key_deleted",
            Self::NewTeamCreated => "new_team_created",
            Self::TeamUpdated => "team_updated",
            Self::TeamDeleted => "team_deleted",
            Self::NewInternalUserCreated => "new_internal_user_created",
            Self::InternalUserUpdated => "internal_user_updated",
            Self::InternalUserDeleted => "internal_user_deleted",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// Whether Switchyard raises alerts of this type.
    pub fn raised(self) -> bool {
        matches!(
            self,
            Self::LlmExceptions
                | Self::LlmTooSlow
                | Self::LlmRequestsHanging
                | Self::BudgetAlerts
                | Self::DailyReports
                | Self::CooldownDeployment
                | Self::OutageAlerts
        )
    }
}

impl serde::Serialize for AlertType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for AlertType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Self::parse(&name).ok_or_else(|| serde::de::Error::custom(format!("unknown alert type {name:?}")))
    }
}

/// The alerting settings, validated.
#[derive(Debug, Clone)]
pub struct AlertingConfig {
    /// `alerting`, without `email` (warned about); empty: alerting is off.
    pub channels: Vec<Channel>,
    /// `alerting_threshold`: a call slower than this is `llm_too_slow`, one without an answer
    /// after this long `llm_requests_hanging`.
    pub threshold: Duration,
    /// `alert_types`: the types delivered.
    pub alert_types: Vec<AlertType>,
    /// `alert_to_webhook_url`: Slack webhooks per alert type, instead of `SLACK_WEBHOOK_URL`.
    pub routes: BTreeMap<AlertType, Vec<SecretString>>,
    /// The environment's `SLACK_WEBHOOK_URL`.
    pub slack_webhook_url: Option<SecretString>,
    /// The environment's `WEBHOOK_URL`.
    pub webhook_url: Option<SecretString>,
    /// `alerting_args.budget_alert_ttl`: a budget alert is sent once per entity and event in this.
    pub budget_alert_ttl: Duration,
    /// `alerting_args.daily_report_frequency` (env `SLACK_DAILY_REPORT_FREQUENCY`).
    pub daily_report_frequency: Duration,
    /// `alerting_args.outage_alert_ttl`: the window in which a deployment's errors count
    /// towards an outage; also how long per-call alerts of one kind are not repeated.
    pub outage_alert_ttl: Duration,
    /// `alerting_args.minor_outage_alert_threshold`: errors in the window for a minor outage.
    pub minor_outage_threshold: u32,
    /// `alerting_args.major_outage_alert_threshold`: errors in the window for a major outage.
    pub major_outage_threshold: u32,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        Self {
            channels: Vec::new(),
            threshold: Duration::from_secs(300),
            alert_types: AlertType::defaults(),
            routes: BTreeMap::new(),
            slack_webhook_url: None,
            webhook_url: None,
            budget_alert_ttl: Duration::from_secs(24 * 3600),
            daily_report_frequency: Duration::from_secs(12 * 3600),
            outage_alert_ttl: Duration::from_secs(60),
            minor_outage_threshold: 5,
            major_outage_threshold: 10,
        }
    }
}

impl AlertingConfig {
    /// Whether `general_settings.alerting` names a channel Switchyard delivers to.
    pub fn is_on(&self) -> bool {
        !self.channels.is_empty()
    }

    pub fn has(&self, channel: Channel) -> bool {
        self.channels.contains(&channel)
    }

    /// Whether alerts of this type are delivered (`alert_types`).
    pub fn enabled(&self, t: AlertType) -> bool {
        self.alert_types.contains(&t)
    }
}

/// The alerting keys of `general_settings`, as written.
#[derive(Debug, Default)]
pub struct RawAlerting {
    pub alerting: Option<Value>,
    pub alerting_threshold: Option<Value>,
    pub alert_types: Option<Value>,
    pub alert_to_webhook_url: Option<Value>,
    pub alerting_args: Option<Value>,
}

/// The path of a key of `general_settings`.
fn path(key: &str) -> String {
    format!("general_settings.{key}")
}

impl Validator<'_> {
    pub(super) fn alerting(&mut self, raw: RawAlerting) -> AlertingConfig {
        let mut out = AlertingConfig { channels: self.channels(raw.alerting), ..AlertingConfig::default() };
        if let Some(v) = raw.alerting_threshold.filter(|v| !v.is_null()) {
            out.threshold = self.positive_duration(&path("alerting_threshold"), &v).unwrap_or(out.threshold);
        }
        if let Some(v) = raw.alert_types.filter(|v| !v.is_null()) {
            out.alert_types = self.alert_types(&v);
        }
        if let Some(v) = raw.alert_to_webhook_url.filter(|v| !v.is_null()) {
            out.routes = self.routes(&v);
        }
        if let Some(frequency) = (self.env)("SLACK_DAILY_REPORT_FREQUENCY").filter(|v| !v.is_empty()) {
            match parse_duration(&frequency).ok().filter(|d| !d.is_zero()) {
                Some(d) => out.daily_report_frequency = d,
                None => self.problem(
                    "SLACK_DAILY_REPORT_FREQUENCY",
                    format!("expected a positive number of seconds, got {frequency:?}"),
                ),
            }
        }
        if let Some(v) = raw.alerting_args.filter(|v| !v.is_null()) {
            self.alerting_args(&v, &mut out);
        }
        out.slack_webhook_url = self.env_url("SLACK_WEBHOOK_URL");
        out.webhook_url = self.env_url("WEBHOOK_URL");
        if out.has(Channel::Slack) && out.slack_webhook_url.is_none() && out.routes.is_empty() {
            self.warn("general_settings.alerting: slack is on, but neither SLACK_WEBHOOK_URL nor alert_to_webhook_url is set: no alert goes to Slack");
        }
        if out.has(Channel::Webhook) && out.webhook_url.is_none() {
            self.warn(
                "general_settings.alerting: webhook is on, but WEBHOOK_URL is not set: no alert goes to a webhook",
            );
        }
        out
    }

    fn channels(&mut self, value: Option<Value>) -> Vec<Channel> {
        let at = path("alerting");
        let items = match value {
            None | Some(Value::Null) => return Vec::new(),
            Some(Value::Sequence(items)) => items,
            Some(other) => {
                self.problem(at, format!("expected a list such as [\"slack\", \"webhook\"], got {other:?}"));
                return Vec::new();
            }
        };
        let mut channels = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let channel = match item.as_str() {
                Some("slack") => Channel::Slack,
                Some("webhook") => Channel::Webhook,
                Some("email") => {
                    self.warn(format!("{at}: email is not implemented by Switchyard; ignored (slack and webhook are)"));
                    continue;
                }
                _ => {
                    self.problem(format!("{at}[{i}]"), format!("expected slack, webhook or email, got {item:?}"));
                    continue;
                }
            };
            if !channels.contains(&channel) {
                channels.push(channel);
            }
        }
        channels
    }

    /// An alert type's name at `at`; a problem listing the known names if it is none.
    fn alert_type(&mut self, at: String, name: &Value) -> Option<AlertType> {
        let found = name.as_str().and_then(AlertType::parse);
        if found.is_none() {
            let known: Vec<&str> = AlertType::ALL.iter().map(|t| t.as_str()).collect();
            let name = name.as_str().map_or_else(|| format!("{name:?}"), |s| format!("{s:?}"));
            self.problem(at, format!("unknown alert type {name}; known: {}", known.join(", ")));
        }
        found
    }

    fn alert_types(&mut self, value: &Value) -> Vec<AlertType> {
        let at = path("alert_types");
        let Some(items) = value.as_sequence() else {
            self.problem(at, format!("expected a list of alert types, got {value:?}"));
            return AlertType::defaults();
        };
        let mut types = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if let Some(t) = self.alert_type(format!("{at}[{i}]"), item) {
                if !types.contains(&t) {
                    types.push(t);
                }
            }
        }
        let silent: Vec<&str> = types.iter().filter(|t| !t.raised()).map(|t| t.as_str()).collect();
        if !silent.is_empty() {
            self.warn(format!("{at}: {} not raised by Switchyard; ignored", silent.join(", ")));
        }
        types
    }

    /// `alert_to_webhook_url`: alert type → one URL or a list of them.
    fn routes(&mut self, value: &Value) -> BTreeMap<AlertType, Vec<SecretString>> {
        let at = path("alert_to_webhook_url");
        let Some(map) = value.as_mapping() else {
            self.problem(at, format!("expected a mapping of alert type to URL(s), got {value:?}"));
            return BTreeMap::new();
        };
        let mut routes = BTreeMap::new();
        for (key, urls) in map {
            let Some(t) = self.alert_type(at.clone(), key) else { continue };
            let here = format!("{at}.{}", t.as_str());
            let list: Vec<(String, &Value)> = match urls {
                Value::Sequence(items) => items.iter().enumerate().map(|(i, u)| (format!("{here}[{i}]"), u)).collect(),
                one => vec![(here.clone(), one)],
            };
            let mut checked = Vec::new();
            for (at, url) in list {
                match url.as_str() {
                    Some(u) if is_http_url(u) => checked.push(SecretString::from(u.to_string())),
                    _ => self.problem(at, "expected an http(s) URL"),
                }
            }
            if !checked.is_empty() {
                routes.insert(t, checked);
            }
        }
        routes
    }

    fn alerting_args(&mut self, value: &Value, out: &mut AlertingConfig) {
        let at = path("alerting_args");
        let Some(map) = value.as_mapping() else {
            self.problem(at, format!("expected a mapping, got {value:?}"));
            return;
        };
        let mut unsupported = super::raw::Extra::new();
        for (key, v) in map {
            let Some(name) = key.as_str() else {
                self.problem(at.clone(), format!("keys are strings, got {key:?}"));
                continue;
            };
            let here = format!("{at}.{name}");
            match name {
                "budget_alert_ttl" => {
                    out.budget_alert_ttl = self.positive_duration(&here, v).unwrap_or(out.budget_alert_ttl)
                }
                "daily_report_frequency" => {
                    out.daily_report_frequency = self.positive_duration(&here, v).unwrap_or(out.daily_report_frequency)
                }
                "outage_alert_ttl" => {
                    out.outage_alert_ttl = self.positive_duration(&here, v).unwrap_or(out.outage_alert_ttl)
                }
                "minor_outage_alert_threshold" => {
                    out.minor_outage_threshold = self.count(&here, v).unwrap_or(out.minor_outage_threshold)
                }
                "major_outage_alert_threshold" => {
                    out.major_outage_threshold = self.count(&here, v).unwrap_or(out.major_outage_threshold)
                }
                _ => {
                    unsupported.insert(name.to_string(), v.clone());
                }
            }
        }
        if out.major_outage_threshold < out.minor_outage_threshold {
            self.problem(
                format!("{at}.major_outage_alert_threshold"),
                format!(
                    "must be at least minor_outage_alert_threshold ({}), got {}",
                    out.minor_outage_threshold, out.major_outage_threshold
                ),
            );
        }
        // report_check_interval, region_outage_alert_ttl, max_outage_alert_list_size, …
        self.unsupported(&at, &at, &unsupported);
    }

    /// Seconds (LiteLLM's numbers) or a duration like "5m", more than 0.
    fn positive_duration(&mut self, at: &str, value: &Value) -> Option<Duration> {
        let parsed = match value {
            Value::Number(n) => {
                n.as_f64().ok_or_else(|| format!("expected seconds, got {n}")).and_then(duration_from_secs)
            }
            Value::String(s) => parse_duration(s),
            other => Err(format!("expected seconds or a duration like \"5m\", got {other:?}")),
        };
        match parsed {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                self.problem(at, "must be more than 0");
                None
            }
            Err(e) => {
                self.problem(at, e);
                None
            }
        }
    }

    /// A count of at least 1.
    fn count(&mut self, at: &str, value: &Value) -> Option<u32> {
        match value.as_u64().and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0) {
            Some(n) => Some(n),
            None => {
                self.problem(at, format!("expected a whole number of at least 1, got {value:?}"));
                None
            }
        }
    }

    /// An http(s) URL from the environment variable `name`; a problem if it is set to
    /// anything else.
    fn env_url(&mut self, name: &str) -> Option<SecretString> {
        let url = (self.env)(name).filter(|v| !v.is_empty())?;
        if is_http_url(&url) {
            Some(SecretString::from(url))
        } else {
            self.problem(name, "environment variable: expected an http(s) URL");
            None
        }
    }
}

fn is_http_url(s: &str) -> bool {
    url::Url::parse(s).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}
