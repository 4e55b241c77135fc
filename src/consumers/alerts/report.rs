//! The `daily_reports` alert: every `daily_report_frequency` (12 h by default; periods aligned
//! to multiples of it since the epoch, UTC), what the period's calls cost and how they went,
//! folded from the response events the consumer reads: requests, failures and spend, the top
//! keys and model groups by spend, and the deployments with the most failed requests and the
//! slowest ones (LiteLLM's daily report has the last two).
//!
//! The fold is bounded: at most [`MAX_KEYS`] keys and [`MAX_OTHERS`] model groups and
//! deployments per period; what does not fit counts in the totals only.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::alert::{timestamp, Alert, Level};
use super::rules::{short_hash, CallFacts};
use crate::budget::ledger::{nanos, usd};
use crate::config::AlertType;

/// Keys kept per period.
pub const MAX_KEYS: usize = 100_000;
/// Model groups and deployments kept per period.
pub const MAX_OTHERS: usize = 10_000;
/// Lines per list in the report.
const TOP: usize = 5;

#[derive(Debug, Default, Clone)]
struct Tally {
    /// What the report calls it (a key's alias).
    label: String,
    spend: i64,
    requests: u64,
    failures: u64,
    total_ms: f64,
}

impl Tally {
    fn add(&mut self, f: &CallFacts, spend: i64) {
        self.spend = self.spend.saturating_add(spend);
        self.requests += 1;
        self.failures += u64::from(f.status.as_deref() == Some("failure"));
        self.total_ms += f.duration_ms;
    }

    fn mean_ms(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.total_ms / self.requests as f64
        }
    }
}

/// One period's fold.
#[derive(Debug)]
struct Period {
    start_ms: i64,
    total: Tally,
    keys: HashMap<String, Tally>,
    models: HashMap<String, Tally>,
    deployments: HashMap<String, Tally>,
}

/// The fold of the open period, and when it ends.
#[derive(Debug)]
pub struct Report {
    every_ms: i64,
    open: Option<Period>,
}

/// The tally of `key` (allocating its name only the first time); `None` when it is new and
/// the map holds `max` already.
fn tally<'a>(map: &'a mut HashMap<String, Tally>, key: &str, max: usize) -> Option<&'a mut Tally> {
    if map.contains_key(key) {
        return map.get_mut(key);
    }
    if map.len() >= max {
        return None;
    }
    Some(map.entry(key.to_string()).or_default())
}

impl Report {
    pub fn new(every_ms: i64) -> Self {
        Self { every_ms: every_ms.max(1), open: None }
    }

    fn start_of(&self, at: i64) -> i64 {
        at - at.rem_euclid(self.every_ms)
    }

    /// Folds a response event at `at` (ms); an event of a later period first closes the open
    /// one, whose report it returns. A late event (of a period already closed) counts in the
    /// open one.
    pub fn add(&mut self, f: &CallFacts, at: i64) -> Option<Alert> {
        let closed = self.due(at);
        let start = self.start_of(at);
        let period = self.open.get_or_insert_with(|| Period {
            start_ms: start,
            total: Tally::default(),
            keys: HashMap::new(),
            models: HashMap::new(),
            deployments: HashMap::new(),
        });
        let spend = nanos(f.cost);
        period.total.add(f, spend);
        if let Some(hash) = f.api_key_hash.as_deref() {
            if let Some(t) = tally(&mut period.keys, hash, MAX_KEYS) {
                t.add(f, spend);
                if let Some(alias) = f.key_alias.as_deref().filter(|a| *a != t.label) {
                    t.label = alias.to_string();
                }
            }
        }
        if let Some(t) = tally(&mut period.models, f.model(), MAX_OTHERS) {
            t.add(f, spend);
        }
        if let Some(d) = f.deployment_id.as_deref() {
            if let Some(t) = tally(&mut period.deployments, d, MAX_OTHERS) {
                t.add(f, spend);
                if t.label.is_empty() {
                    t.label = format!("{} ({})", f.model(), f.api_base.as_deref().unwrap_or(""));
                }
            }
        }
        closed
    }

    /// The open period's report once `clock` (ms) has reached its end; `None` before, or for a
    /// period without calls.
    pub fn due(&mut self, clock: i64) -> Option<Alert> {
        let end = self.open.as_ref()?.start_ms.saturating_add(self.every_ms);
        if clock < end {
            return None;
        }
        let period = self.open.take()?;
        (period.total.requests > 0).then(|| self.alert(&period, end))
    }

    fn alert(&self, p: &Period, end: i64) -> Alert {
        let mut a = Alert::new(AlertType::DailyReports, Level::Low, end, &p.start_ms.to_string());
        let (from, to) = (timestamp(p.start_ms), timestamp(end));
        let keys = by_spend(&p.keys);
        let models = by_spend(&p.models);
        let mut failing: Vec<(&String, &Tally)> = p.deployments.iter().filter(|(_, t)| t.failures > 0).collect();
        failing.sort_by(|a, b| b.1.failures.cmp(&a.1.failures).then(a.0.cmp(b.0)));
        failing.truncate(TOP);
        let mut slowest: Vec<(&String, &Tally)> = p.deployments.iter().collect();
        slowest.sort_by(|a, b| b.1.mean_ms().total_cmp(&a.1.mean_ms()).then(a.0.cmp(b.0)));
        slowest.truncate(TOP);

        let key_name = |hash: &str, t: &Tally| if t.label.is_empty() { short_hash(hash) } else { t.label.clone() };
        let mut m = format!(
            "*📈 Spend report for `{from}` - `{to}`*\nRequests: `{}`, failed: `{}`, spend: `${}`\n",
            p.total.requests,
            p.total.failures,
            usd(p.total.spend)
        );
        let mut section = |title: &str, lines: Vec<String>| {
            m.push_str(&format!("\n*{title}:*\n"));
            if lines.is_empty() {
                m.push_str("\tNone\n");
            }
            for (i, line) in lines.iter().enumerate() {
                m.push_str(&format!("\t{}. {line}\n", i + 1));
            }
        };
        section(
            "Top keys by spend",
            keys.iter()
                .map(|(h, t)| format!("`{}`: `${}` ({} requests)", key_name(h, t), usd(t.spend), t.requests))
                .collect(),
        );
        section(
            "Top model groups by spend",
            models.iter().map(|(g, t)| format!("`{g}`: `${}` ({} requests)", usd(t.spend), t.requests)).collect(),
        );
        section(
            "Deployments with most failed requests",
            failing
                .iter()
                .map(|(d, t)| format!("`{d}` {}: `{}` of {} failed", t.label, t.failures, t.requests))
                .collect(),
        );
        section(
            "Slowest deployments",
            slowest
                .iter()
                .map(|(d, t)| format!("`{d}` {}: `{:.3}s` on average", t.label, t.mean_ms() / 1000.0))
                .collect(),
        );
        a.message = m;
        a.entity = "report".into();
        let list = |v: &[(&String, &Tally)], name: &str| -> Value {
            v.iter()
                .map(|(id, t)| json!({name: id, "label": t.label, "spend": usd(t.spend), "requests": t.requests, "failures": t.failures, "mean_latency_s": t.mean_ms() / 1000.0}))
                .collect()
        };
        for (k, v) in [
            ("period_start", Value::from(from)),
            ("period_end", Value::from(to)),
            ("requests", Value::from(p.total.requests)),
            ("failures", Value::from(p.total.failures)),
            ("spend", Value::from(usd(p.total.spend))),
            ("top_keys", list(&keys, "api_key_hash")),
            ("top_models", list(&models, "model_group")),
            ("most_failed_deployments", list(&failing, "deployment_id")),
            ("slowest_deployments", list(&slowest, "deployment_id")),
        ] {
            a.details.insert(k.into(), v);
        }
        a
    }
}

/// The [`TOP`] tallies with the most spend.
fn by_spend(map: &HashMap<String, Tally>) -> Vec<(&String, &Tally)> {
    let mut v: Vec<(&String, &Tally)> = map.iter().filter(|(_, t)| t.spend > 0).collect();
    v.sort_by(|a, b| b.1.spend.cmp(&a.1.spend).then(a.0.cmp(b.0)));
    v.truncate(TOP);
    v
}

#[cfg(test)]
mod tests {
    use super::super::rules::tests::event;
    use super::*;

    fn add(report: &mut Report, at: i64, fields: Value) -> Option<Alert> {
        let json = event("response", "r", at, fields);
        report.add(&CallFacts::of(&json).unwrap(), at)
    }

    #[test]
    fn a_period_is_reported_once_it_ends_with_the_top_spenders() {
        let hour = 3_600_000;
        let mut report = Report::new(12 * hour);
        assert!(report.due(13 * hour).is_none(), "nothing open");
        add(&mut report, hour, json!({"api_key_hash": "aaaa", "key_alias": "search", "cost": 0.5}));
        add(&mut report, 2 * hour, json!({"api_key_hash": "bbbbbbbbbbbbbbbbbb", "model_group": "big", "cost": 2.0}));
        add(
            &mut report,
            3 * hour,
            json!({"api_key_hash": "aaaa", "cost": 0.25, "status": "failure", "duration_ms": 3000.0}),
        );
        assert!(report.due(12 * hour - 1).is_none());
        let a = report.due(12 * hour).unwrap();
        assert_eq!((a.alert_type, a.timestamp.as_str()), (AlertType::DailyReports, "1970-01-01T12:00:00.000Z"));
        assert_eq!((a.details["requests"].clone(), a.details["failures"].clone()), (json!(3), json!(1)));
        assert_eq!(a.details["spend"], json!(2.75));
        assert_eq!(a.details["top_keys"][0]["api_key_hash"], "bbbbbbbbbbbbbbbbbb");
        assert_eq!(a.details["top_keys"][1]["label"], "search");
        assert_eq!(a.details["top_models"][0]["model_group"], "big");
        assert_eq!(a.details["most_failed_deployments"][0]["failures"], 1);
        assert!(a.message.contains("\t1. `bbbbbbbbbbbb`: `$2` (1 requests)"), "{}", a.message);
        assert!(a.message.contains("\t2. `search`: `$0.75` (2 requests)"), "{}", a.message);
        assert!(report.due(30 * hour).is_none(), "reported once");

        // An event of a later period closes the open one; the same fold gives the same id.
        let first = add(&mut report, 13 * hour, json!({"cost": 1.0}));
        assert!(first.is_none());
        let closed = add(&mut report, 25 * hour, json!({"cost": 1.0})).unwrap();
        assert_eq!(closed.details["period_start"], "1970-01-01T12:00:00.000Z");
        let mut again = Report::new(12 * hour);
        add(&mut again, 13 * hour, json!({"cost": 1.0}));
        assert_eq!(again.due(24 * hour).unwrap().alert_id, closed.alert_id);
    }
}
