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
    /// The account's key on `<prefix>.spend`: `key:<hash>`, `key_model:<hash>:<model>`,
    /// `team:<id>`, `team_member:<team>:<user>`, `user:<id>`, `end_user:<id>`. In the parts
    /// after the kind, `%` and `:` are written `%25` and `%3A`, so every account has its own key
    /// (ids themselves may hold a `:`).
    pub fn topic_key(&self) -> String {
        match self {
            Self::Key(hash) => format!("key:{}", escape(hash)),
            Self::KeyModel(hash, model) => format!("key_model:{}:{}", escape(hash), escape(model)),
            Self::Team(id) => format!("team:{}", escape(id)),
            Self::TeamMember(team, user) => format!("team_member:{}:{}", escape(team), escape(user)),
            Self::User(id) => format!("user:{}", escape(id)),
            Self::EndUser(id) => format!("end_user:{}", escape(id)),
        }
    }

    /// The account of a `<prefix>.spend` key; `None` if it names none.
    pub fn from_topic_key(key: &str) -> Option<Self> {
        let (kind, rest) = key.split_once(':')?;
        let one = || (!rest.contains(':')).then(|| unescape(rest)).flatten();
        let two = || {
            let (a, b) = rest.split_once(':')?;
            if b.contains(':') {
                return None;
            }
            Some((unescape(a)?, unescape(b)?))
        };
        Some(match kind {
            "key" => Self::Key(one()?),
            "key_model" => two().map(|(h, m)| Self::KeyModel(h, m))?,
            "team" => Self::Team(one()?),
            "team_member" => two().map(|(t, u)| Self::TeamMember(t, u))?,
            "user" => Self::User(one()?),
            "end_user" => Self::EndUser(one()?),
            _ => return None,
        })
    }
}

fn escape(part: &str) -> std::borrow::Cow<'_, str> {
    if part.contains(['%', ':']) {
        part.replace('%', "%25").replace(':', "%3A").into()
    } else {
        part.into()
    }
}

fn unescape(part: &str) -> Option<String> {
    let mut out = String::with_capacity(part.len());
    let mut rest = part;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3)?;
        out.push(match code {
            "25" => '%',
            "3A" | "3a" => ':',
            _ => return None,
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
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

/// What the ledger counted for an account: the spend in one window, the base not included.
/// The budgets consumer publishes it (`crate::budget::snapshot`), a gateway seeds it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// The window `spent` belongs to.
    pub window_start: Timestamp,
    /// Nano-dollars counted in that window.
    pub spent: i64,
}

impl Default for Tally {
    fn default() -> Self {
        Self { window_start: Timestamp::MIN, spent: 0 }
    }
}

/// Every account's spend and reservations; shared by the handlers and the log follower.
pub struct Ledger {
    tallies: DashMap<Account, Tally, foldhash::fast::RandomState>,
    reserved: DashMap<Account, AtomicI64, foldhash::fast::RandomState>,
    tz: TimeZone,
}

impl Ledger {
    pub fn new(tz: TimeZone) -> Self {
        Self { tallies: DashMap::default(), reserved: DashMap::default(), tz }
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
        // The common case finds the account: no key is cloned for it.
        let mut tally = match self.tallies.get_mut(account) {
            Some(t) => t,
            None => self.tallies.entry(account.clone()).or_default(),
        };
        if tally.window_start < start {
            *tally = Tally { window_start: start, spent: 0 };
        }
        if tally.window_start == start {
            tally.spent = tally.spent.saturating_add(cost);
        }
    }

    /// Takes back a cost counted at `at`, if its window is still the account's (never below 0).
    pub fn take_back(&self, account: &Account, policy: &Policy, at: Timestamp, cost: i64) {
        let start = self.window_start(policy, at);
        if let Some(mut tally) = self.tallies.get_mut(account) {
            if tally.window_start == start {
                tally.spent = tally.spent.saturating_sub(cost).max(0);
            }
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
            match self.reserved.get(account) {
                Some(r) => r.fetch_add(amount, Ordering::Relaxed),
                None => self.reserved.entry(account.clone()).or_default().fetch_add(amount, Ordering::Relaxed),
            };
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

    /// What is counted for the account, if anything.
    pub fn tally(&self, account: &Account) -> Option<Tally> {
        self.tallies.get(account).map(|t| *t)
    }

    /// Seeds an account's tally from a snapshot, keeping what was counted meanwhile: the same
    /// window adds up (what the ledger counted since it started is not in the snapshot, which
    /// the caller ensures by skipping the events the snapshot includes), a later window wins.
    pub fn seed(&self, account: &Account, tally: Tally) {
        let mut current = self.tallies.entry(account.clone()).or_default();
        if current.window_start < tally.window_start {
            *current = tally;
        } else if current.window_start == tally.window_start {
            current.spent = current.spent.saturating_add(tally.spent);
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
    fn seeding_adds_in_the_same_window_and_a_later_window_wins() {
        let ledger = Ledger::new(TimeZone::UTC);
        let key = Account::Key("h".into());
        let daily = policy(Some(Window::Day), "2026-11-01T00:00:00Z", 0.0);
        ledger.add(&key, &daily, ts("2026-11-28T01:00:00Z"), 7);
        ledger.seed(&key, Tally { window_start: ts("2026-11-28T00:00:00Z"), spent: 5 });
        assert_eq!(ledger.spent(&key, &daily, ts("2026-11-28T12:00:00Z")), 12);
        ledger.seed(&key, Tally { window_start: ts("2026-11-27T00:00:00Z"), spent: 100 });
        assert_eq!(ledger.tally(&key), Some(Tally { window_start: ts("2026-11-28T00:00:00Z"), spent: 12 }));
        ledger.seed(&key, Tally { window_start: ts("2026-11-29T00:00:00Z"), spent: 3 });
        assert_eq!(ledger.spent(&key, &daily, ts("2026-11-29T12:00:00Z")), 3);
    }

    #[test]
    fn every_account_has_its_own_topic_key() {
        let accounts = [
            Account::Key("ab12".into()),
            Account::KeyModel("ab12".into(), "bedrock/claude:1".into()),
            Account::Team("t".into()),
            Account::TeamMember("a:b".into(), "c".into()),
            Account::TeamMember("a".into(), "b:c".into()),
            Account::User("u%3A".into()),
            Account::EndUser("e".into()),
        ];
        let keys: Vec<String> = accounts.iter().map(Account::topic_key).collect();
        assert_eq!(keys[0], "key:ab12");
        assert_eq!(keys[3], "team_member:a%3Ab:c");
        assert_ne!(keys[3], keys[4]);
        for (account, key) in accounts.iter().zip(&keys) {
            assert_eq!(Account::from_topic_key(key).as_ref(), Some(account), "{key}");
        }
        for bad in ["nope", "key", "team:a:b", "user:%zz", "organization:o"] {
            assert_eq!(Account::from_topic_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn money_is_exact_nanos() {
        assert_eq!(nanos(0.000_001_5), 1500);
        assert_eq!(nanos(-1.0), 0);
        assert_eq!(nanos(f64::NAN), 0);
        assert_eq!(nanos(f64::INFINITY), i64::MAX);
    }
}
