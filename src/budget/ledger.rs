//! Spend per account (key, key and model, team, team member, user, end user) in its current
//! budget window, and what admitted calls have reserved against it.
//!
//! Money is integer nano-dollars, so the same costs added in any order give the same total on
//! every instance. An account's spend counts every cost at or after its [`SpendStart`] that
//! falls in the window containing now; the start's `base` counts in the window it falls in.

use std::sync::atomic::{AtomicI64, Ordering};

use dashmap::DashMap;
use jiff::tz::TimeZone;
use jiff::Timestamp;

use super::window::Window;
use crate::auth::entity::SpendStart;

/// Whose spend.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Account {
    /// By the key's hash.
    Key(String),
    /// A key's spend on one model group (`model_max_budget`).
    KeyModel(String, String),
    Team(String),
    /// (team, user).
    TeamMember(String, String),
    User(String),
    EndUser(String),
}

impl Account {
    /// How records name the account (`key:<hash>`, `team_member:<team>:<user>`, …).
    pub fn name(&self) -> String {
        match self {
            Self::Key(h) => format!("key:{h}"),
            Self::KeyModel(h, m) => format!("key_model:{h}:{m}"),
            Self::Team(t) => format!("team:{t}"),
            Self::TeamMember(t, u) => format!("team_member:{t}:{u}"),
            Self::User(u) => format!("user:{u}"),
            Self::EndUser(e) => format!("end_user:{e}"),
        }
    }
}

/// How an account's spend is windowed.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub window: Option<Window>,
    pub start: SpendStart,
}

/// USD as nano-dollars (saturating; negative and NaN costs count as 0).
pub fn nanos(usd: f64) -> i64 {
    if usd.is_nan() || usd <= 0.0 {
        return 0;
    }
    (usd * 1e9).round().min(i64::MAX as f64) as i64
}

pub fn usd(nanos: i64) -> f64 {
    nanos as f64 / 1e9
}

#[derive(Debug)]
struct Tally {
    /// The window `spent` belongs to.
    window_start: Timestamp,
    spent: i64,
}

impl Default for Tally {
    fn default() -> Self {
        Self { window_start: Timestamp::MIN, spent: 0 }
    }
}

/// Every account's spend and reservations; shared by the handlers and the log follower.
pub struct Ledger {
    tallies: DashMap<Account, Tally>,
    reserved: DashMap<Account, AtomicI64>,
    tz: TimeZone,
}

impl Ledger {
    pub fn new(tz: TimeZone) -> Self {
        Self { tallies: DashMap::new(), reserved: DashMap::new(), tz }
    }

    pub fn timezone(&self) -> &TimeZone {
        &self.tz
    }

    /// Where the window containing `at` starts for this policy (never before the spend start).
    fn window_start(&self, policy: &Policy, at: Timestamp) -> Timestamp {
        let calendar = policy.window.map(|w| w.start(at, &self.tz)).unwrap_or(Timestamp::MIN);
        calendar.max(policy.start.since)
    }

    /// Counts a cost made at `at`. Costs before the spend start, or in a window that has
    /// already given way to a later one, change nothing.
    pub fn add(&self, account: &Account, policy: &Policy, at: Timestamp, cost: i64) {
        if cost == 0 || at < policy.start.since {
            return;
        }
        let start = self.window_start(policy, at);
        let mut tally = self.tallies.entry(account.clone()).or_default();
        if tally.window_start < start {
            *tally = Tally { window_start: start, spent: 0 };
        }
        if tally.window_start == start {
            tally.spent = tally.spent.saturating_add(cost);
        }
    }

    /// The account's spend in the window containing `now`, base included.
    pub fn spent(&self, account: &Account, policy: &Policy, now: Timestamp) -> i64 {
        let start = self.window_start(policy, now);
        let base = if start <= policy.start.since { nanos(policy.start.base) } else { 0 };
        let counted = match self.tallies.get(account) {
            Some(t) if t.window_start == start => t.spent,
            _ => 0,
        };
        base.saturating_add(counted)
    }

    /// What admitted calls (of every instance) have reserved and not yet settled.
    pub fn reserved(&self, account: &Account) -> i64 {
        self.reserved.get(account).map(|r| r.load(Ordering::Relaxed)).unwrap_or(0)
    }

    pub fn reserve(&self, account: &Account, amount: i64) {
        if amount != 0 {
            self.reserved.entry(account.clone()).or_default().fetch_add(amount, Ordering::Relaxed);
        }
    }

    pub fn release(&self, account: &Account, amount: i64) {
        if amount == 0 {
            return;
        }
        if let Some(r) = self.reserved.get(account) {
            r.fetch_sub(amount, Ordering::Relaxed);
        }
    }

    /// Forgets an account's spend (its entity was deleted).
    pub fn forget(&self, account: &Account) {
        self.tallies.remove(account);
    }

    /// Accounts with spend counted; for the 1M-key figures.
    pub fn len(&self) -> usize {
        self.tallies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tallies.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn policy(window: Option<Window>, since: &str, base: f64) -> Policy {
        Policy { window, start: SpendStart { since: ts(since), base } }
    }

    #[test]
    fn counts_costs_after_the_start_in_the_current_window() {
        let ledger = Ledger::new(TimeZone::UTC);
        let key = Account::Key("h".into());
        let daily = policy(Some(Window::Day), "2026-11-01T00:00:00Z", 0.0);
        ledger.add(&key, &daily, ts("2026-11-27T23:00:00Z"), 5);
        ledger.add(&key, &daily, ts("2026-11-28T01:00:00Z"), 7);
        ledger.add(&key, &daily, ts("2026-11-28T02:00:00Z"), 3);
        // A late event of the day before no longer counts.
        ledger.add(&key, &daily, ts("2026-11-27T23:30:00Z"), 100);
        assert_eq!(ledger.spent(&key, &daily, ts("2026-11-28T12:00:00Z")), 10);
        // The next day starts from zero.
        assert_eq!(ledger.spent(&key, &daily, ts("2026-11-29T00:00:01Z")), 0);
    }

    #[test]
    fn a_reset_moves_the_start_and_sets_the_base() {
        let ledger = Ledger::new(TimeZone::UTC);
        let key = Account::Key("h".into());
        let before = policy(None, "2026-11-01T00:00:00Z", 0.0);
        ledger.add(&key, &before, ts("2026-11-20T00:00:00Z"), nanos(2.0));
        assert_eq!(usd(ledger.spent(&key, &before, ts("2026-11-21T00:00:00Z"))), 2.0);
        let after = policy(None, "2026-11-21T00:00:00Z", 0.5);
        // A cost made before the reset, arriving late, does not count.
        ledger.add(&key, &after, ts("2026-11-20T12:00:00Z"), nanos(1.0));
        ledger.add(&key, &after, ts("2026-11-22T00:00:00Z"), nanos(0.25));
        assert_eq!(usd(ledger.spent(&key, &after, ts("2026-11-23T00:00:00Z"))), 0.75);
    }

    #[test]
    fn reservations_add_and_release() {
        let ledger = Ledger::new(TimeZone::UTC);
        let team = Account::Team("t".into());
        ledger.reserve(&team, 10);
        ledger.reserve(&team, 5);
        ledger.release(&team, 10);
        assert_eq!(ledger.reserved(&team), 5);
    }

    #[test]
    fn money_is_exact_nanos() {
        assert_eq!(nanos(0.000_001_5), 1500);
        assert_eq!(nanos(-1.0), 0);
        assert_eq!(nanos(f64::NAN), 0);
        assert_eq!(nanos(f64::INFINITY), i64::MAX);
    }
}
