//! An alert, as the alerts consumer raises it on `<prefix>.alerts` (an `alert` record, schema
//! `schemas/events/alert.json`) and as it reads every record there back: its own, and the
//! `budget_alert` records the gateways write (`crate::budget::alert`), old ones included.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::budget::alert::{BudgetAlert, Crossing, WebhookEvent};
use crate::budget::ledger::Account;
use crate::config::AlertType;

/// LiteLLM's alert levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Level {
    Low,
    Medium,
    High,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "Low",
            Self::Medium => "Medium",
            Self::High => "High",
        }
    }
}

/// An `alert` record of `<prefix>.alerts`; also what a `budget_alert` record is read into.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// 1.
    pub v: u32,
    /// `alert`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The same for every copy of one alert (a replay raises it with the same id), so a
    /// duplicate can be recognised.
    pub alert_id: String,
    pub alert_type: AlertType,
    /// A finer kind within the type: the budget event (`budget_crossed`, …), or
    /// `minor_outage` / `major_outage`.
    #[serde(default)]
    pub event: Option<String>,
    pub level: Level,
    /// What it is about: an account (`key:<hash>`), a model group, a deployment, a period.
    pub entity: String,
    /// The alert in words (Slack's `Message:`).
    pub message: String,
    /// When it happened: RFC 3339 with milliseconds, UTC.
    pub timestamp: String,
    /// Alerts with the same key are delivered once per the type's time to live.
    #[serde(default)]
    pub dedup_key: Option<String>,
    /// The facts behind it, per type (see the schema).
    #[serde(default)]
    pub details: Map<String, Value>,
    /// Budget alerts: LiteLLM's WebhookEvent, what `WEBHOOK_URL` receives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_event: Option<WebhookEvent>,
}

impl Alert {
    /// An alert raised at `at` (ms since the epoch); its id derived from `source`, what makes
    /// it unique (an event id, a window's start), so raising it again gives the same id.
    pub fn new(alert_type: AlertType, level: Level, at_ms: i64, source: &str) -> Self {
        Self {
            v: 1,
            kind: "alert".into(),
            alert_id: derived_id(alert_type.as_str(), source),
            alert_type,
            event: None,
            level,
            entity: String::new(),
            message: String::new(),
            timestamp: timestamp(at_ms),
            dedup_key: None,
            details: Map::new(),
            webhook_event: None,
        }
    }

    /// When it happened, ms since the epoch (0 if its timestamp cannot be read).
    pub fn at_ms(&self) -> i64 {
        millis(&self.timestamp).unwrap_or(0)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A UUID (version 8) from the SHA-256 of `kind` and `source`.
fn derived_id(kind: &str, source: &str) -> String {
    let digest = Sha256::new().chain_update(kind).chain_update([0]).chain_update(source).finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid().to_string()
}

/// RFC 3339 with milliseconds of ms since the epoch.
pub fn timestamp(ms: i64) -> String {
    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    crate::events::types::timestamp(at)
}

/// ms since the epoch of an RFC 3339 time.
pub fn millis(text: &str) -> Option<i64> {
    let at = humantime::parse_rfc3339_weak(text).ok()?;
    i64::try_from(at.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_millis()).ok()
}

/// What a record of `<prefix>.alerts` is.
#[derive(Debug)]
pub enum Read {
    Alert(Box<Alert>),
    /// A record of another type (a later version's), or a tombstone: not for this version.
    Other,
    /// Not JSON, or an `alert` / `budget_alert` that does not fit its schema.
    Bad(String),
}

/// Reads a record of `<prefix>.alerts`.
pub fn read(value: Option<&[u8]>) -> Read {
    #[derive(Deserialize)]
    struct Head {
        #[serde(rename = "type")]
        kind: String,
    }
    let Some(value) = value else { return Read::Other };
    let kind = match serde_json::from_slice::<Head>(value) {
        Ok(head) => head.kind,
        Err(e) => return Read::Bad(e.to_string()),
    };
    let alert = match kind.as_str() {
        "alert" => serde_json::from_slice::<Alert>(value).map_err(|e| e.to_string()),
        "budget_alert" => {
            serde_json::from_slice::<BudgetAlert>(value).map_err(|e| e.to_string()).map(|b| of_budget(&b, value))
        }
        _ => return Read::Other,
    };
    match alert {
        Ok(alert) => Read::Alert(Box::new(alert)),
        Err(e) => Read::Bad(e),
    }
}

/// A gateway's budget alert as an alert of type `budget_alerts`. Records written before they
/// carried an id get one from their bytes (the same record read again has the same id), and a
/// WebhookEvent from their account.
fn of_budget(b: &BudgetAlert, bytes: &[u8]) -> Alert {
    let account = Account::from_topic_key(&b.account);
    let webhook = b.webhook_event.clone().or_else(|| {
        let event = match b.event.as_str() {
            "soft_budget_crossed" => "soft_budget_crossed",
            "threshold_crossed" => "threshold_crossed",
            _ => "budget_crossed",
        };
        let crossing = Crossing {
            account: account.clone()?,
            event,
            spend: b.spend,
            budget: b.budget,
            left_percent: b.left_percent,
            max_budget: b.max_budget.or((event != "soft_budget_crossed").then_some(b.budget)),
            soft_budget: b.soft_budget.or((event == "soft_budget_crossed").then_some(b.budget)),
        };
        Some(WebhookEvent::of(&crossing, None))
    });
    let id = b.alert_id.clone().unwrap_or_else(|| derived_id("budget_alert", &String::from_utf8_lossy(bytes)));
    let threshold = b.left_percent.map(|pct| format!(":{pct}")).unwrap_or_default();
    let mut message = webhook.as_ref().map_or_else(|| b.event.clone(), |w| w.event_message.clone());
    message.push_str(&format!("\n\nSpend: `{}`", b.spend));
    if let Some(w) = &webhook {
        for (label, value) in [
            ("Key Alias", &w.key_alias),
            ("Key", &w.token),
            ("Team", &w.team_alias),
            ("Team ID", &w.team_id),
            ("User", &w.user_id),
            ("Customer", &w.customer_id),
        ] {
            if let Some(value) = value {
                message.push_str(&format!("\n{label}: `{value}`"));
            }
        }
    }
    let mut details = Map::new();
    for (k, v) in [
        ("account", Value::from(b.account.clone())),
        ("spend", Value::from(b.spend)),
        ("budget", Value::from(b.budget)),
        ("max_budget", b.max_budget.map_or(Value::Null, Value::from)),
        ("soft_budget", b.soft_budget.map_or(Value::Null, Value::from)),
        ("left_percent", b.left_percent.map_or(Value::Null, Value::from)),
        ("gateway_id", Value::from(b.gateway_id.clone())),
    ] {
        details.insert(k.into(), v);
    }
    Alert {
        v: 1,
        kind: "alert".into(),
        alert_id: id,
        alert_type: AlertType::BudgetAlerts,
        event: Some(b.event.clone()),
        level: Level::High,
        entity: b.account.clone(),
        message,
        timestamp: b.timestamp.clone(),
        dedup_key: Some(format!("budget_alerts:{}:{}{threshold}", b.event, b.account)),
        details,
        webhook_event: webhook,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let a = Alert::new(AlertType::LlmExceptions, Level::High, 0, "event-1");
        assert_eq!(a.alert_id, Alert::new(AlertType::LlmExceptions, Level::High, 5, "event-1").alert_id);
        assert_ne!(a.alert_id, Alert::new(AlertType::LlmTooSlow, Level::High, 0, "event-1").alert_id);
        assert_eq!(uuid::Uuid::parse_str(&a.alert_id).unwrap().get_version_num(), 8);
        assert_eq!(a.timestamp, "1970-01-01T00:00:00.000Z");
        assert_eq!(millis("2026-11-21T13:27:39.586Z"), Some(1_795_267_659_586));
    }

    #[test]
    fn alerts_and_budget_alerts_of_any_age_read_back() {
        let mut alert = Alert::new(AlertType::OutageAlerts, Level::Medium, 1_000, "d:0:minor");
        alert.event = Some("minor_outage".into());
        alert.details.insert("errors".into(), Value::from(5));
        let Read::Alert(back) = read(Some(&alert.to_json())) else { panic!() };
        assert_eq!(*back, alert);

        // A record as the first version wrote it: no id, no WebhookEvent.
        let old = br#"{"v":1,"type":"budget_alert","event":"soft_budget_crossed","account":"key:abc","spend":0.02,"budget":0.015,"gateway_id":"gw","timestamp":"2026-01-01T00:00:00.000Z"}"#;
        let Read::Alert(a) = read(Some(old)) else { panic!() };
        assert_eq!(
            (a.alert_type, a.event.as_deref(), a.level),
            (AlertType::BudgetAlerts, Some("soft_budget_crossed"), Level::High)
        );
        assert_eq!(a.dedup_key.as_deref(), Some("budget_alerts:soft_budget_crossed:key:abc"));
        let Read::Alert(again) = read(Some(old)) else { panic!() };
        assert_eq!(a.alert_id, again.alert_id, "the same record, the same id");
        let w = a.webhook_event.as_ref().unwrap();
        assert_eq!((w.token.as_deref(), w.soft_budget, w.event_group.as_str()), (Some("abc"), Some(0.015), "key"));
        assert!(a.message.starts_with("Key Budget: Soft Budget Crossed"), "{}", a.message);

        // The gateway's records now: a threshold keeps its own dedup key per threshold.
        let crossing =
            crate::budget::alert::crossings(&Account::Team("t".into()), 0, 95, None, Some(100)).next().unwrap();
        let record = BudgetAlert::new(&crossing, None, "gw", jiff::Timestamp::UNIX_EPOCH);
        let Read::Alert(a) = read(Some(&serde_json::to_vec(&record).unwrap())) else { panic!() };
        assert_eq!(a.alert_id, record.alert_id.unwrap());
        assert_eq!(a.dedup_key.as_deref(), Some("budget_alerts:threshold_crossed:team:t:5"));
        assert_eq!(a.webhook_event.unwrap().event_group, "team");

        assert!(matches!(read(Some(b"{\"type\":\"something_new\"}")), Read::Other));
        assert!(matches!(read(None), Read::Other));
        assert!(matches!(read(Some(b"{not json")), Read::Bad(_)));
        assert!(matches!(read(Some(b"{\"type\":\"alert\",\"v\":1}")), Read::Bad(_)));
    }
}
