//! Budget alerts: a call's cost crossed a budget ([`Crossing`]); the gateway that settled it
//! appends a `budget_alert` record to `<prefix>.alerts` ([`AlertLog`], schema
//! `schemas/events/budget_alert.json`), with LiteLLM's WebhookEvent for it ([`WebhookEvent`]),
//! which the alerts consumer delivers (`crate::consumers::alerts`).
//!
//! LiteLLM's events: `soft_budget_crossed` (spend reached `soft_budget`), `budget_crossed`
//! (reached `max_budget`), and `threshold_crossed` when 15% and then 5% of `max_budget` is left.

use std::sync::Arc;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::ledger::{usd, Account};
use crate::auth::Table;

/// The thresholds of `max_budget` left at which `threshold_crossed` fires, most severe first.
pub const LEFT_PERCENTS: [u8; 2] = [5, 15];

/// A budget a call's cost crossed: reported on `<prefix>.alerts`, never enforced for soft
/// budgets.
#[derive(Debug, Clone, PartialEq)]
pub struct Crossing {
    pub account: Account,
    /// `soft_budget_crossed`, `budget_crossed` or `threshold_crossed` (LiteLLM's budget alert
    /// events).
    pub event: &'static str,
    /// USD spent after the call.
    pub spend: f64,
    /// The budget crossed, USD (`max_budget` for `threshold_crossed`).
    pub budget: f64,
    /// `threshold_crossed`: the percent of `max_budget` left at the threshold (15 or 5).
    pub left_percent: Option<u8>,
    pub max_budget: Option<f64>,
    pub soft_budget: Option<f64>,
}

/// The budgets an account's spend crossed going from `before` to `after` nano-dollars: its soft
/// budget, and its max budget or else the most severe threshold of it.
pub fn crossings(
    account: &Account,
    before: i64,
    after: i64,
    soft: Option<i64>,
    max: Option<i64>,
) -> impl Iterator<Item = Crossing> {
    let passed = |point: i64| before < point && point <= after;
    let crossing = |event, budget: i64, left_percent| Crossing {
        account: account.clone(),
        event,
        spend: usd(after),
        budget: usd(budget),
        left_percent,
        max_budget: max.map(usd),
        soft_budget: soft.map(usd),
    };
    let soft_crossed = soft.filter(|s| passed(*s)).map(|s| crossing("soft_budget_crossed", s, None));
    let max_crossed = max.and_then(|m| {
        if passed(m) {
            return Some(crossing("budget_crossed", m, None));
        }
        LEFT_PERCENTS
            .into_iter()
            .find(|pct| passed(threshold(m, *pct)))
            .map(|pct| crossing("threshold_crossed", m, Some(pct)))
    });
    soft_crossed.into_iter().chain(max_crossed)
}

/// The spend at which `left` percent of `max` is left.
fn threshold(max: i64, left: u8) -> i64 {
    let left_part = i128::from(max) * i128::from(left) / 100;
    i64::try_from(i128::from(max) - left_part).unwrap_or(max)
}

/// The fields of LiteLLM's WebhookEvent, in its order.
pub const WEBHOOK_EVENT_FIELDS: [&str; 16] = [
    "spend",
    "max_budget",
    "soft_budget",
    "token",
    "customer_id",
    "user_id",
    "team_id",
    "team_alias",
    "organization_id",
    "user_email",
    "key_alias",
    "projected_exceeded_date",
    "projected_spend",
    "event_group",
    "event",
    "event_message",
];

/// LiteLLM's WebhookEvent: what `WEBHOOK_URL` receives for a budget alert, field for field
/// ([`WEBHOOK_EVENT_FIELDS`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookEvent {
    pub spend: f64,
    pub max_budget: Option<f64>,
    pub soft_budget: Option<f64>,
    /// The key's hash.
    pub token: Option<String>,
    /// The end user.
    pub customer_id: Option<String>,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub team_alias: Option<String>,
    pub organization_id: Option<String>,
    pub user_email: Option<String>,
    pub key_alias: Option<String>,
    pub projected_exceeded_date: Option<String>,
    pub projected_spend: Option<f64>,
    /// `key`, `team`, `internal_user` or `customer`.
    pub event_group: String,
    pub event: String,
    pub event_message: String,
}

impl WebhookEvent {
    /// The event of a crossing; `table` (when there is one) names the account's key alias, team
    /// alias, organization and user email.
    pub fn of(c: &Crossing, table: Option<&Table>) -> Self {
        let mut e = Self {
            spend: c.spend,
            max_budget: c.max_budget,
            soft_budget: c.soft_budget,
            token: None,
            customer_id: None,
            user_id: None,
            team_id: None,
            team_alias: None,
            organization_id: None,
            user_email: None,
            key_alias: None,
            projected_exceeded_date: None,
            projected_spend: None,
            event_group: String::new(),
            event: c.event.to_string(),
            event_message: String::new(),
        };
        let (group, whose) = match &c.account {
            Account::Key(hash) => {
                e.key(hash, table);
                ("key", "Key Budget".to_string())
            }
            Account::KeyModel(hash, model) => {
                e.key(hash, table);
                ("key", format!("Key Budget for model {model}"))
            }
            Account::Team(team) => {
                e.team(team, table);
                ("team", "Team Budget".to_string())
            }
            Account::TeamMember(team, user) => {
                e.team(team, table);
                e.user(user, table);
                ("team", format!("Team Member Budget of {user}"))
            }
            Account::User(user) => {
                e.user(user, table);
                ("internal_user", "User Budget".to_string())
            }
            Account::EndUser(id) => {
                e.customer_id = Some(id.clone());
                ("customer", "Customer Budget".to_string())
            }
        };
        let what = match (c.event, c.left_percent) {
            ("budget_crossed", _) => format!("Budget Crossed\n Total Budget:`{}`", c.budget),
            ("soft_budget_crossed", _) => format!("Soft Budget Crossed\n Total Soft Budget:`{}`", c.budget),
            (_, Some(pct)) => format!("{pct}% Threshold Crossed\n Total Budget:`{}`", c.budget),
            (other, None) => other.to_string(),
        };
        e.event_group = group.to_string();
        e.event_message = format!("{whose}: {what}");
        e
    }

    fn key(&mut self, hash: &str, table: Option<&Table>) {
        self.token = Some(hash.to_string());
        let Some(key) = table.and_then(|t| t.key(hash)) else { return };
        self.key_alias = key.key_alias.clone();
        if let Some(team) = &key.team_id {
            self.team(team, table);
        }
        if let Some(user) = &key.user_id {
            self.user(user, table);
        }
    }

    fn team(&mut self, id: &str, table: Option<&Table>) {
        self.team_id = Some(id.to_string());
        let Some(team) = table.and_then(|t| t.team(id)) else { return };
        self.team_alias = team.team_alias.clone();
        self.organization_id = team.organization_id.clone();
    }

    fn user(&mut self, id: &str, table: Option<&Table>) {
        self.user_id = Some(id.to_string());
        self.user_email = table.and_then(|t| t.user(id)).and_then(|u| u.user_email.clone());
    }
}

/// A `budget_alert` record of `<prefix>.alerts` (`schemas/events/budget_alert.json`). The
/// fields after `timestamp` were added later: records written before them lack them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetAlert {
    /// 1.
    pub v: u32,
    /// `budget_alert`.
    #[serde(rename = "type")]
    pub kind: String,
    pub event: String,
    /// The account's topic key (`key:<hash>`, `team:<id>`, …).
    pub account: String,
    pub spend: f64,
    pub budget: f64,
    pub gateway_id: String,
    /// RFC 3339, UTC.
    pub timestamp: String,
    /// Unique per crossing.
    #[serde(default)]
    pub alert_id: Option<String>,
    #[serde(default)]
    pub max_budget: Option<f64>,
    #[serde(default)]
    pub soft_budget: Option<f64>,
    #[serde(default)]
    pub left_percent: Option<u8>,
    #[serde(default)]
    pub webhook_event: Option<WebhookEvent>,
}

impl BudgetAlert {
    pub fn new(c: &Crossing, table: Option<&Table>, gateway_id: &str, now: Timestamp) -> Self {
        Self {
            v: 1,
            kind: "budget_alert".into(),
            event: c.event.to_string(),
            account: c.account.topic_key(),
            spend: c.spend,
            budget: c.budget,
            gateway_id: gateway_id.to_string(),
            timestamp: crate::events::types::timestamp(now.into()),
            alert_id: Some(uuid::Builder::from_random_bytes(rand::random()).into_uuid().to_string()),
            max_budget: c.max_budget,
            soft_budget: c.soft_budget,
            left_percent: c.left_percent,
            webhook_event: Some(WebhookEvent::of(c, table)),
        }
    }
}

/// Where crossings are reported: `<prefix>.alerts`, one record per crossing, keyed by the
/// account.
pub struct AlertLog {
    pub topics: crate::events::topics::Topics,
    pub gateway_id: String,
    /// The key table, for who an account is in the record's WebhookEvent.
    pub table: Arc<Table>,
}

impl AlertLog {
    /// Appends the records off the caller's path (a task on the current runtime).
    pub(super) fn report(&self, crossed: Vec<Crossing>) {
        if crossed.is_empty() {
            return;
        }
        let now = Timestamp::now();
        let records: Vec<(String, Vec<u8>)> = crossed
            .iter()
            .filter_map(|c| {
                let record = BudgetAlert::new(c, Some(&self.table), &self.gateway_id, now);
                Some((record.account.clone(), serde_json::to_vec(&record).ok()?))
            })
            .collect();
        let topics = self.topics.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            for (account, bytes) in records {
                if let Err(e) = topics.append("alerts", &account, Some(&bytes)).await {
                    tracing::warn!(error = %e, account = %account, "could not record a budget alert");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::ledger::nanos;

    fn events(before: f64, after: f64, soft: Option<f64>, max: Option<f64>) -> Vec<(&'static str, Option<u8>)> {
        let key = Account::Key("k".into());
        crossings(&key, nanos(before), nanos(after), soft.map(nanos), max.map(nanos))
            .map(|c| (c.event, c.left_percent))
            .collect()
    }

    #[test]
    fn thresholds_fire_when_15_then_5_percent_is_left_and_only_the_most_severe() {
        let max = Some(10.0);
        assert!(events(0.0, 8.4, None, max).is_empty());
        assert_eq!(events(8.4, 8.5, None, max), [("threshold_crossed", Some(15))]);
        assert!(events(8.5, 9.4, None, max).is_empty(), "once per crossing");
        assert_eq!(events(9.4, 9.5, None, max), [("threshold_crossed", Some(5))]);
        assert_eq!(events(0.0, 9.6, None, max), [("threshold_crossed", Some(5))], "a jump past both: the 5%");
        assert_eq!(events(9.6, 10.0, None, max), [("budget_crossed", None)]);
        assert_eq!(events(0.0, 12.0, Some(5.0), max), [("soft_budget_crossed", None), ("budget_crossed", None)]);
        assert!(events(12.0, 13.0, Some(5.0), max).is_empty());
        assert_eq!(events(4.0, 5.0, Some(5.0), None), [("soft_budget_crossed", None)]);
    }

    #[test]
    fn the_webhook_event_names_the_account_as_litellm_does() {
        use crate::auth::entity::{Entity, UserRecord};
        let table = Table::default();
        let mut key = match crate::budget::tests::key("h1", Some(10.0), Some("t1")) {
            Entity::Key(k) => k,
            _ => unreachable!(),
        };
        key.key_alias = Some("search-app".into());
        key.user_id = Some("u1".into());
        let user = UserRecord {
            user_id: "u1".into(),
            user_email: Some("u1@example.com".into()),
            user_alias: None,
            user_role: Default::default(),
            teams: vec![],
            models: vec![],
            limits: Default::default(),
            metadata: Default::default(),
            spend_start: crate::auth::entity::SpendStart { since: Timestamp::UNIX_EPOCH, base: 0.0 },
            created_at: Timestamp::UNIX_EPOCH,
            updated_at: Timestamp::UNIX_EPOCH,
        };
        for e in [Entity::Key(key), crate::budget::tests::team("t1", 100.0), Entity::User(user)] {
            table.apply(&e.id(), Some(e));
        }
        let c = crossings(&Account::Key("h1".into()), 0, nanos(8.5), Some(nanos(5.0)), Some(nanos(10.0)))
            .collect::<Vec<_>>();
        let soft = WebhookEvent::of(&c[0], Some(&table));
        assert_eq!(soft.event, "soft_budget_crossed");
        assert_eq!(soft.event_group, "key");
        assert_eq!(soft.event_message, "Key Budget: Soft Budget Crossed\n Total Soft Budget:`5`");
        assert_eq!(
            (soft.token.as_deref(), soft.key_alias.as_deref(), soft.team_id.as_deref(), soft.user_email.as_deref()),
            (Some("h1"), Some("search-app"), Some("t1"), Some("u1@example.com"))
        );
        assert_eq!((soft.spend, soft.max_budget, soft.soft_budget), (8.5, Some(10.0), Some(5.0)));
        let threshold = WebhookEvent::of(&c[1], None);
        assert_eq!(threshold.event_message, "Key Budget: 15% Threshold Crossed\n Total Budget:`10`");
        assert_eq!(threshold.key_alias, None, "no table: only what the account says");
        let json = serde_json::to_value(&threshold).unwrap();
        let fields: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(fields, WEBHOOK_EVENT_FIELDS, "every field, null or not");
        let team = WebhookEvent::of(
            &crossings(&Account::EndUser("cust".into()), 0, nanos(2.0), None, Some(nanos(1.0))).next().unwrap(),
            None,
        );
        assert_eq!((team.event_group.as_str(), team.customer_id.as_deref()), ("customer", Some("cust")));
    }
}
