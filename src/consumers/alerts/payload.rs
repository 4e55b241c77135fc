//! Where an alert goes and what is sent there.
//!
//! - Slack (`alerting: [slack]`): `{"text": "Alert type: `…`\nLevel: `…`\nTimestamp: `…`\n\nMessage: …"}`
//!   (LiteLLM's format) to the alert type's `alert_to_webhook_url`, else `SLACK_WEBHOOK_URL`.
//! - Webhook (`alerting: [webhook]`): to `WEBHOOK_URL`, a budget alert's LiteLLM WebhookEvent,
//!   and any other alert as its record on `<prefix>.alerts` (`schemas/events/alert.json`).
//!
//! Each type's dedup time to live: `budget_alert_ttl` for budget alerts; `outage_alert_ttl` for
//! the per-call and per-deployment types, so a provider that fails every call makes one
//! message per model group and error type a minute, not one per call; none for reports.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::alert::Alert;
use crate::config::{AlertType, AlertingConfig, Channel};

/// One place an alert is posted to.
#[derive(Debug, Clone)]
pub struct Destination {
    pub channel: Channel,
    pub url: SecretString,
}

impl Destination {
    /// The channel's name, for logs and metrics (never the URL: it is a secret).
    pub fn label(&self) -> &'static str {
        match self.channel {
            Channel::Slack => "slack",
            Channel::Webhook => "webhook",
        }
    }

    /// The JSON body posted for `alert`.
    pub fn body(&self, alert: &Alert) -> Vec<u8> {
        match (self.channel, &alert.webhook_event) {
            (Channel::Slack, _) => serde_json::to_vec(&serde_json::json!({"text": slack_text(alert)})),
            (Channel::Webhook, Some(event)) => serde_json::to_vec(event),
            (Channel::Webhook, None) => serde_json::to_vec(alert),
        }
        .unwrap_or_default()
    }

    pub fn url(&self) -> &str {
        self.url.expose_secret()
    }
}

/// Where alerts of type `t` go; empty when the type is not in `alert_types` or nothing is
/// configured for it.
pub fn destinations(config: &AlertingConfig, t: AlertType) -> Vec<Destination> {
    let mut out = Vec::new();
    if !config.enabled(t) {
        return out;
    }
    if config.has(Channel::Slack) {
        let urls = match config.routes.get(&t) {
            Some(urls) => urls.clone(),
            None => config.slack_webhook_url.iter().cloned().collect(),
        };
        out.extend(urls.into_iter().map(|url| Destination { channel: Channel::Slack, url }));
    }
    if let (true, Some(url)) = (config.has(Channel::Webhook), &config.webhook_url) {
        out.push(Destination { channel: Channel::Webhook, url: url.clone() });
    }
    out
}

/// How long an alert's dedup key holds, by type.
pub fn ttl(config: &AlertingConfig, t: AlertType) -> Option<Duration> {
    match t {
        AlertType::BudgetAlerts => Some(config.budget_alert_ttl),
        AlertType::DailyReports => None,
        _ => Some(config.outage_alert_ttl),
    }
}

/// Slack's text: LiteLLM's header (type, level, time) and the message.
pub fn slack_text(alert: &Alert) -> String {
    let when = alert.timestamp.get(..19).map_or(alert.timestamp.clone(), |t| format!("{} UTC", t.replace('T', " ")));
    format!(
        "Alert type: `{}`\nLevel: `{}`\nTimestamp: `{when}`\n\nMessage: {}",
        alert.alert_type.as_str(),
        alert.level.as_str(),
        alert.message
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumers::alerts::alert::{read, Level, Read};

    fn config() -> AlertingConfig {
        let url = |u: &str| SecretString::from(u.to_string());
        AlertingConfig {
            channels: vec![Channel::Slack, Channel::Webhook],
            slack_webhook_url: Some(url("http://slack.test/default")),
            webhook_url: Some(url("http://hook.test/")),
            routes: [(AlertType::LlmExceptions, vec![url("http://slack.test/a"), url("http://slack.test/b")])].into(),
            alert_types: vec![AlertType::LlmExceptions, AlertType::BudgetAlerts, AlertType::LlmTooSlow],
            ..AlertingConfig::default()
        }
    }

    fn urls(d: &[Destination]) -> Vec<(&'static str, &str)> {
        d.iter().map(|d| (d.label(), d.url())).collect()
    }

    #[test]
    fn alert_to_webhook_url_routes_slack_per_type_and_the_webhook_gets_everything() {
        let c = config();
        assert_eq!(
            urls(&destinations(&c, AlertType::LlmExceptions)),
            [("slack", "http://slack.test/a"), ("slack", "http://slack.test/b"), ("webhook", "http://hook.test/")]
        );
        assert_eq!(
            urls(&destinations(&c, AlertType::LlmTooSlow)),
            [("slack", "http://slack.test/default"), ("webhook", "http://hook.test/")]
        );
        assert!(destinations(&c, AlertType::OutageAlerts).is_empty(), "not in alert_types");
        let slack_only = AlertingConfig { channels: vec![Channel::Slack], ..config() };
        assert_eq!(urls(&destinations(&slack_only, AlertType::BudgetAlerts)), [("slack", "http://slack.test/default")]);
        assert_eq!(ttl(&c, AlertType::BudgetAlerts), Some(Duration::from_secs(86_400)));
        assert_eq!(ttl(&c, AlertType::LlmExceptions), Some(Duration::from_secs(60)));
        assert_eq!(ttl(&c, AlertType::DailyReports), None);
    }

    #[test]
    fn slack_gets_litellms_text_and_the_webhook_a_budget_alerts_webhook_event() {
        let mut alert = Alert::new(AlertType::LlmExceptions, Level::High, 1_795_267_659_586, "e");
        alert.message = "LLM API call failed: `500`".into();
        let slack = Destination { channel: Channel::Slack, url: SecretString::from("http://s".to_string()) };
        let body: serde_json::Value = serde_json::from_slice(&slack.body(&alert)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"text": "Alert type: `llm_exceptions`\nLevel: `High`\nTimestamp: `2026-11-21 13:27:39 UTC`\n\nMessage: LLM API call failed: `500`"})
        );
        let hook = Destination { channel: Channel::Webhook, url: SecretString::from("http://h".to_string()) };
        let body: serde_json::Value = serde_json::from_slice(&hook.body(&alert)).unwrap();
        assert_eq!((body["type"].as_str(), body["alert_type"].as_str()), (Some("alert"), Some("llm_exceptions")));

        let old = br#"{"v":1,"type":"budget_alert","event":"budget_crossed","account":"team:t1","spend":10.5,"budget":10,"gateway_id":"gw","timestamp":"2026-01-01T00:00:00.000Z"}"#;
        let Read::Alert(budget) = read(Some(old)) else { panic!() };
        let body: serde_json::Value = serde_json::from_slice(&hook.body(&budget)).unwrap();
        assert_eq!(body["event"], "budget_crossed");
        assert_eq!(body["event_group"], "team");
        assert_eq!(body["team_id"], "t1");
        assert_eq!(body["max_budget"], 10.0);
        assert_eq!(body["event_message"], "Team Budget: Budget Crossed\n Total Budget:`10`");
        assert!(body.get("type").is_none(), "LiteLLM's WebhookEvent, not the record: {body}");
    }
}
