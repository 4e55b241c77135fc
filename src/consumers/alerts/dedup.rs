//! Which alerts are delivered: not a second copy of one alert (the same id, read again after a
//! replay), and not an alert whose dedup key was delivered less than the type's time to live
//! before it (LiteLLM's `budget_alerts:{event}:{id}`, sent once per `budget_alert_ttl`).
//!
//! Decided on the alerts' own timestamps, in the order of the topic, so the consumer rebuilds
//! the same state at start by reading the topic up to its committed position.

use std::collections::{HashMap, HashSet, VecDeque};

/// Alert ids remembered, at most (the oldest are forgotten first).
pub const MAX_IDS: usize = 100_000;
/// Keys remembered before expired ones are dropped.
const PRUNE_ABOVE: usize = 10_000;

/// What to do with an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver it.
    New,
    /// Its key was delivered within the time to live: do not deliver it again.
    Repeat,
    /// This very alert was read before.
    Seen,
}

#[derive(Debug, Default)]
pub struct Dedup {
    /// Dedup key → (time of the alert delivered, ms; its time to live, ms).
    last: HashMap<String, (i64, i64)>,
    ids: HashSet<String>,
    order: VecDeque<String>,
    /// The newest alert time seen (ms): keys older than their time to live before it go.
    newest: i64,
    /// How many keys before the next pruning (twice what the last one kept: amortised).
    prune_at: usize,
}

impl Dedup {
    /// The verdict on an alert at `at` (ms) with `key` and a time to live of `ttl_ms`
    /// (`None`: never a repeat), remembered.
    pub fn check(&mut self, id: &str, key: Option<&str>, at: i64, ttl_ms: Option<i64>) -> Verdict {
        if self.ids.contains(id) {
            return Verdict::Seen;
        }
        self.remember(id);
        self.newest = self.newest.max(at);
        let (Some(key), Some(ttl)) = (key, ttl_ms) else { return Verdict::New };
        if let Some((when, _)) = self.last.get(key) {
            if at.abs_diff(*when) < ttl.unsigned_abs() {
                return Verdict::Repeat;
            }
        }
        if self.last.len() >= self.prune_at.max(PRUNE_ABOVE) {
            let newest = self.newest;
            self.last.retain(|_, (when, ttl)| newest.saturating_sub(*when) < *ttl);
            self.prune_at = self.last.len() * 2;
        }
        self.last.insert(key.to_string(), (at, ttl));
        Verdict::New
    }

    fn remember(&mut self, id: &str) {
        if self.order.len() >= MAX_IDS {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        self.ids.insert(id.to_string());
        self.order.push_back(id.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    #[test]
    fn a_key_is_delivered_once_per_ttl_and_an_alert_once() {
        let mut d = Dedup::default();
        let key = Some("budget_alerts:soft_budget_crossed:key:abc");
        assert_eq!(d.check("a", key, 0, Some(DAY)), Verdict::New);
        assert_eq!(d.check("a", key, 0, Some(DAY)), Verdict::Seen);
        assert_eq!(d.check("b", key, DAY - 1, Some(DAY)), Verdict::Repeat);
        assert_eq!(d.check("c", Some("budget_alerts:budget_crossed:key:abc"), 5, Some(DAY)), Verdict::New);
        assert_eq!(d.check("d", key, DAY, Some(DAY)), Verdict::New, "the TTL has passed");
        assert_eq!(d.check("e", key, DAY + 5, Some(DAY)), Verdict::Repeat, "counted from the last delivered");
        assert_eq!(d.check("f", key, DAY + 5, None), Verdict::New, "no TTL, no repeats");
        assert_eq!(d.check("g", None, 0, Some(DAY)), Verdict::New);
    }

    #[test]
    fn memory_is_bounded() {
        let mut d = Dedup::default();
        for i in 0..(MAX_IDS + 10) as i64 {
            d.check(&i.to_string(), Some(&format!("k{}", i % 20_000)), i * 1000, Some(1000));
        }
        assert_eq!((d.ids.len(), d.order.len()), (MAX_IDS, MAX_IDS));
        assert!(d.last.len() <= 2 * PRUNE_ABOVE, "{}", d.last.len());
        assert_eq!(d.check("0", None, 0, None), Verdict::New, "the oldest id was forgotten");
    }
}
