//! Budgets: spend per key, key and model, team, team member, user and end user per budget
//! window, checked in LiteLLM's order before a call and reserved at admission.
//!
//! A call is charged to every account of its caller ([`Charges::of`]). Before the call each
//! budgeted account must have room (spend + what admitted calls have reserved, against
//! `max_budget`); the call then reserves its worst-case cost on each ([`Reservation`]), and
//! settles with its real cost when it ends. Other instances learn of the reservation from the
//! call's request event and of the cost from its response event (`crate::budget::follow`),
//! so every instance counts every instance's calls, each after the log's propagation delay.
//! At start, an instance seeds its spend from the budgets consumer's snapshots on
//! `<prefix>.spend` and counts only the events after them (`crate::budget::snapshot`). A cost
//! that crosses a budget (soft, max, or 15% / 5% of max left) is reported on `<prefix>.alerts`
//! (`crate::budget::alert`).

pub mod alert;
pub mod follow;
pub mod ledger;
pub mod snapshot;
pub mod window;

use std::sync::Arc;

use jiff::Timestamp;

use crate::auth::entity::{EndUserRecord, KeyRecord, Limits, SpendStart, TeamRecord, UserRecord};
use crate::auth::Table;
use crate::error::GatewayError;
pub use alert::{AlertLog, Crossing};
use ledger::{usd, Account, Ledger, Policy};
use window::Window;

/// Who a call is charged to, as its events name them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity<'a> {
    pub key_hash: Option<&'a str>,
    pub team_id: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub end_user: Option<&'a str>,
    pub model_group: Option<&'a str>,
}

/// Which budget an account's limit is, for LiteLLM's message.
#[derive(Debug, Clone, PartialEq)]
enum Owner {
    Key,
    KeyModel { hash: String, alias: Option<String>, model: String },
    Team(String),
    TeamMember { team: String, user: String },
    User(String),
    EndUser(String),
}

/// One account a call is charged to.
#[derive(Debug, Clone)]
pub struct Charge {
    pub account: Account,
    pub policy: Policy,
    /// `max_budget` in nano-dollars, if the account has one.
    max: Option<i64>,
    /// `soft_budget` in nano-dollars: crossing it is only reported.
    soft: Option<i64>,
    owner: Owner,
}

fn policy(limits_window: Option<&str>, start: SpendStart) -> Policy {
    Policy { window: limits_window.and_then(|w| Window::parse(w).ok()), start }
}

fn charge(account: Account, limits: &Limits, start: SpendStart, owner: Owner) -> Charge {
    Charge {
        account,
        policy: policy(limits.budget_duration.as_deref(), start),
        max: limits.max_budget.map(ledger::nanos),
        soft: limits.soft_budget.map(ledger::nanos),
        owner,
    }
}

/// Every account a call is charged to, in LiteLLM's order of budget checks.
pub struct Charges(pub Vec<Charge>);

/// The records a call's charges and limits come from, looked up once: from the caller on
/// the request path (which already holds them), from the key table for an event.
#[derive(Debug, Clone, Default)]
pub struct Parties<'a> {
    /// After a regeneration, the key that replaced the presented one.
    pub key: Option<Arc<KeyRecord>>,
    pub team: Option<Arc<TeamRecord>>,
    pub user: Option<Arc<UserRecord>>,
    pub end_user: Option<Arc<EndUserRecord>>,
    /// The key's user id: a team member is charged even without a user record.
    pub user_id: Option<&'a str>,
    pub model_group: Option<&'a str>,
}

impl<'a> Parties<'a> {
    /// Only entities the table knows are charged (an end user without a record has no budget).
    pub fn lookup(table: &Table, who: &Identity<'a>) -> Self {
        Self {
            key: who.key_hash.and_then(|h| table.effective_key(h)),
            team: who.team_id.and_then(|t| table.team(t)),
            user: who.user_id.and_then(|u| table.user(u)),
            end_user: who.end_user.and_then(|e| table.end_user(e)),
            user_id: who.user_id,
            model_group: who.model_group,
        }
    }
}

impl Charges {
    pub fn of(table: &Table, who: &Identity) -> Self {
        Self::of_parties(&Parties::lookup(table, who))
    }

    pub fn of_parties(p: &Parties) -> Self {
        let mut out = Vec::new();
        if let Some(key) = &p.key {
            out.push(charge(Account::Key(key.token.clone()), &key.limits, key.spend_start, Owner::Key));
            if let Some((model, budget)) = p.model_group.and_then(|m| key.model_max_budget.get_key_value(m)) {
                out.push(Charge {
                    account: Account::KeyModel(key.token.clone(), model.clone()),
                    policy: policy(budget.time_period.as_deref(), key.spend_start),
                    max: Some(ledger::nanos(budget.budget_limit)),
                    soft: None,
                    owner: Owner::KeyModel {
                        hash: key.token.clone(),
                        alias: key.key_alias.clone(),
                        model: model.clone(),
                    },
                });
            }
        }
        if let Some(team) = &p.team {
            out.push(charge(
                Account::Team(team.team_id.clone()),
                &team.limits,
                team.spend_start,
                Owner::Team(team.team_id.clone()),
            ));
        }
        if let Some(user) = &p.user {
            out.push(charge(
                Account::User(user.user_id.clone()),
                &user.limits,
                user.spend_start,
                Owner::User(user.user_id.clone()),
            ));
        }
        if let (Some(team), Some(user)) = (&p.team, p.user_id) {
            let member = team.member(user);
            let max = member.and_then(|m| m.max_budget_in_team).or(team.team_member_budget);
            let limits =
                Limits { max_budget: max, budget_duration: team.limits.budget_duration.clone(), ..Limits::default() };
            out.push(charge(
                Account::TeamMember(team.team_id.clone(), user.to_string()),
                &limits,
                team.spend_start,
                Owner::TeamMember { team: team.team_id.clone(), user: user.to_string() },
            ));
        }
        if let Some(end_user) = &p.end_user {
            out.push(charge(
                Account::EndUser(end_user.user_id.clone()),
                &end_user.limits,
                end_user.spend_start,
                Owner::EndUser(end_user.user_id.clone()),
            ));
        }
        Self(out)
    }
}

fn exceeded(message: String) -> GatewayError {
    GatewayError::Denied { status: 429, kind: "budget_exceeded", message }
}

/// The ledger, shared by the handlers and the log follower.
pub struct Budgets {
    pub ledger: Ledger,
    /// None in unit tests.
    alerts: Option<AlertLog>,
}

impl Budgets {
    pub fn new(ledger: Ledger, alerts: Option<AlertLog>) -> Self {
        Self { ledger, alerts }
    }

    /// Spend of an account now (USD), in its current window.
    pub fn spent(&self, charge: &Charge, now: Timestamp) -> f64 {
        usd(self.ledger.spent(&charge.account, &charge.policy, now))
    }

    /// The budget checks, in LiteLLM's order: the first account over its budget (counting what
    /// admitted calls have reserved) refuses the call with LiteLLM's message and 429.
    pub fn check(&self, charges: &Charges, now: Timestamp) -> Result<(), GatewayError> {
        for c in &charges.0 {
            let Some(max) = c.max else { continue };
            let spent = self.ledger.spent(&c.account, &c.policy, now);
            let current = spent.saturating_add(self.ledger.reserved(&c.account).max(0));
            // LiteLLM: teams and end users are over when spend > max, the others at spend >= max.
            let over = match c.owner {
                Owner::Team(_) | Owner::EndUser(_) => current > max,
                _ => current >= max,
            };
            if !over {
                continue;
            }
            let (x, y) = (usd(current), usd(max));
            return Err(exceeded(match &c.owner {
                Owner::Key => format!("Budget has been exceeded! Current cost: {x}, Max budget: {y}"),
                Owner::KeyModel { hash, alias, model } => format!(
                    "LiteLLM Virtual Key: {hash}, key_alias: {}, exceeded budget for model={model}",
                    alias.as_deref().unwrap_or("None")
                ),
                Owner::Team(id) => format!("Budget has been exceeded! Team={id} Current cost: {x}, Max budget: {y}"),
                Owner::User(id) => format!("ExceededBudget: User={id} over budget. Spend={x}, Budget={y}"),
                Owner::TeamMember { team, user } => {
                    format!("Budget has been exceeded! User={user} in Team={team} Current cost: {x}, Max budget: {y}")
                }
                Owner::EndUser(id) => format!("ExceededBudget: End User={id} over budget. Spend={x}, Budget={y}"),
            }));
        }
        Ok(())
    }

    /// Reserves `amount` nano-dollars on every account of the call until it settles.
    pub fn reserve(self: &Arc<Self>, charges: Charges, amount: i64) -> Reservation {
        for c in &charges.0 {
            self.ledger.reserve(&c.account, amount);
        }
        Reservation { budgets: self.clone(), charges, amount, settled: false }
    }

    /// Counts a finished call's cost on every account; returns the budgets it crossed.
    pub fn charge(&self, charges: &Charges, at: Timestamp, cost: i64) -> Vec<Crossing> {
        let mut crossed = Vec::new();
        for c in &charges.0 {
            let before = self.ledger.spent(&c.account, &c.policy, at);
            self.ledger.add(&c.account, &c.policy, at, cost);
            let after = self.ledger.spent(&c.account, &c.policy, at);
            crossed.extend(alert::crossings(&c.account, before, after, c.soft, c.max));
        }
        crossed
    }
}

/// A call's reservation: released when the call settles or is dropped (a client that goes
/// away cannot leave a reservation behind).
pub struct Reservation {
    budgets: Arc<Budgets>,
    pub charges: Charges,
    /// Nano-dollars reserved on each account.
    pub amount: i64,
    settled: bool,
}

impl Reservation {
    /// Replaces the reservation with the call's real cost (USD), counted at `at`; returns the
    /// budgets the cost crossed.
    pub fn settle(mut self, cost: f64, at: Timestamp) -> Vec<Crossing> {
        self.release();
        self.settled = true;
        let crossed = self.budgets.charge(&self.charges, at, ledger::nanos(cost));
        if let Some(alerts) = &self.budgets.alerts {
            alerts.report(crossed.clone());
        }
        crossed
    }

    fn release(&self) {
        for c in &self.charges.0 {
            self.budgets.ledger.release(&c.account, self.amount);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.settled {
            self.release();
        }
    }
}

/// The worst case a call can cost: its prompt estimate at the input price, and its
/// `max_tokens` (or the model's maximum output) at the output price. Zero when the model has
/// no price: nothing is reserved for what cannot be estimated, as in LiteLLM.
pub fn worst_case(input_tokens: u64, max_output: Option<u64>, price: Option<&crate::cost::Price>) -> i64 {
    let Some(price) = price else { return 0 };
    let output = max_output.unwrap_or(DEFAULT_MAX_OUTPUT) as f64;
    ledger::nanos(input_tokens as f64 * price.input + output * price.output)
}

/// Output tokens assumed when neither the request nor the price map bounds them.
pub const DEFAULT_MAX_OUTPUT: u64 = 4096;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::auth::entity::{Entity, EntityId, KeyRecord, TeamRecord};
    use jiff::tz::TimeZone;

    pub(crate) fn key(token: &str, max_budget: Option<f64>, team: Option<&str>) -> Entity {
        let mut key = KeyRecord::new(token.into(), "sk-...".into(), Timestamp::UNIX_EPOCH);
        key.limits.max_budget = max_budget;
        key.team_id = team.map(str::to_string);
        Entity::Key(key)
    }

    pub(crate) fn team(id: &str, max_budget: f64) -> Entity {
        let now = Timestamp::UNIX_EPOCH;
        Entity::Team(TeamRecord {
            team_id: id.into(),
            team_alias: None,
            organization_id: None,
            members_with_roles: vec![],
            models: vec![],
            limits: Limits { max_budget: Some(max_budget), ..Limits::default() },
            metadata: Default::default(),
            blocked: false,
            model_aliases: Default::default(),
            team_member_budget: None,
            team_member_rpm_limit: None,
            team_member_tpm_limit: None,
            spend_start: SpendStart { since: now, base: 0.0 },
            created_at: now,
            updated_at: now,
        })
    }

    fn setup() -> (Table, Arc<Budgets>) {
        let table = Table::default();
        for e in [key("k", Some(1.0), Some("t")), team("t", 0.5)] {
            table.apply(&e.id(), Some(e.clone()));
        }
        (table, Arc::new(Budgets::new(Ledger::new(TimeZone::UTC), None)))
    }

    fn who() -> Identity<'static> {
        Identity { key_hash: Some("k"), team_id: Some("t"), ..Identity::default() }
    }

    fn message(r: Result<(), GatewayError>) -> String {
        match r {
            Err(GatewayError::Denied { status: 429, kind: "budget_exceeded", message }) => message,
            other => panic!("expected budget_exceeded, got {other:?}"),
        }
    }

    #[test]
    fn the_first_account_over_budget_refuses_in_litellms_words() {
        let (table, budgets) = setup();
        let now = Timestamp::now();
        let charges = Charges::of(&table, &who());
        assert_eq!(charges.0.len(), 2);
        assert!(budgets.check(&charges, now).is_ok());
        // The team is over only when spend > max; reaching it is reported.
        let crossed = budgets.charge(&charges, now, ledger::nanos(0.5));
        assert_eq!(crossed.len(), 1);
        assert_eq!((crossed[0].event, crossed[0].budget), ("budget_crossed", 0.5));
        assert!(budgets.check(&charges, now).is_ok());
        budgets.charge(&charges, now, ledger::nanos(0.01));
        assert_eq!(
            message(budgets.check(&charges, now)),
            "Budget has been exceeded! Team=t Current cost: 0.51, Max budget: 0.5"
        );
        // The key (>=) is checked first.
        budgets.charge(&charges, now, ledger::nanos(0.49));
        assert_eq!(message(budgets.check(&charges, now)), "Budget has been exceeded! Current cost: 1, Max budget: 1");
    }

    #[test]
    fn reservations_count_until_settled_or_dropped() {
        let (table, budgets) = setup();
        let now = Timestamp::now();
        let reservation = budgets.reserve(Charges::of(&table, &who()), ledger::nanos(0.6));
        // 0.6 reserved puts the team (0.5) over.
        assert!(budgets.check(&Charges::of(&table, &who()), now).is_err());
        assert!(reservation.settle(0.1, now).is_empty());
        assert!(budgets.check(&Charges::of(&table, &who()), now).is_ok());
        let team = Account::Team("t".into());
        assert_eq!(budgets.ledger.reserved(&team), 0);
        drop(budgets.reserve(Charges::of(&table, &who()), 7));
        assert_eq!(budgets.ledger.reserved(&team), 0);
        table.apply(&EntityId::Team("t".into()), None);
        assert_eq!(Charges::of(&table, &who()).0.len(), 1);
    }

    #[test]
    fn the_worst_case_uses_max_tokens_at_the_output_price() {
        let price = crate::cost::Price { input: 1e-6, output: 2e-6, ..crate::cost::Price::default() };
        assert_eq!(worst_case(1000, Some(500), Some(&price)), ledger::nanos(0.001 + 0.001));
        assert_eq!(worst_case(1000, None, None), 0);
    }
}
