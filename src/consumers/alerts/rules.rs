//! The rules: which events raise which alerts. Plain functions of the events read and a clock,
//! without I/O; the runner (`super::raise`) feeds them and appends what they raise.
//!
//! - `llm_exceptions`: a call that failed (its response event's status is `failure`).
//! - `llm_too_slow`: a call that succeeded after more than `alerting_threshold`.
//! - `llm_requests_hanging`: a request event whose response event has not come
//!   `alerting_threshold` after it ([`Pending`], bounded).
//! - `cooldown_deployment`: a deployment event `cooldown_entered`.
//! - `outage_alerts`: per deployment (or api_base), timeouts (408) and 5xx counted in a window
//!   of `outage_alert_ttl` from the first one: a minor outage at
//!   `minor_outage_alert_threshold` errors, a major one at `major_outage_alert_threshold`.
//! - `daily_reports`: `super::report`.
//!
//! Time is the events' own (their timestamps) and, for what fires when nothing happens
//! (a hanging request, a period's end), the runner's clock: the newest event time while it
//! reads a backlog, the wall clock once it has read everything. So a replay raises the same
//! alerts, with the same ids, at the same times.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::alert::{Alert, Level};
use super::report::Report;
use crate::config::{AlertType, AlertingConfig};
use crate::events::DeploymentEvent;

/// Requests waiting for their response, at most: beyond, new ones are not watched (counted).
pub const MAX_PENDING: usize = 100_000;
/// Deployments with an open outage window, at most.
const MAX_OUTAGE_WINDOWS: usize = 10_000;

/// What the rules read of a request or response event (the rest is skipped unparsed).
#[derive(Debug, Deserialize)]
pub struct CallFacts<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow)]
    pub event_id: Cow<'a, str>,
    #[serde(borrow)]
    pub request_id: Option<Cow<'a, str>>,
    pub timestamp: crate::events::types::Timestamp,
    #[serde(borrow, default)]
    pub requested_model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub model_group: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub api_key_hash: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub key_alias: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub deployment_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub provider: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub api_base: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub status: Option<Cow<'a, str>>,
    #[serde(default)]
    pub http_status: u16,
    #[serde(borrow, default)]
    pub error_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub error_message: Option<Cow<'a, str>>,
    #[serde(default)]
    pub duration_ms: f64,
    #[serde(default)]
    pub cost: f64,
}

impl CallFacts<'_> {
    /// A request or response event's facts; `None` for anything else or what cannot be read.
    pub fn of(json: &[u8]) -> Option<CallFacts<'_>> {
        serde_json::from_slice::<CallFacts>(json).ok().filter(|f| f.kind == "request" || f.kind == "response")
    }

    pub fn at_ms(&self) -> i64 {
        ms_of(self.timestamp.system_time())
    }

    /// The model group, or the model asked for when none was reached.
    pub fn model(&self) -> &str {
        self.model_group.as_deref().or(self.requested_model.as_deref()).unwrap_or("")
    }

    /// The key as alerts show it: its alias, or the start of its hash.
    fn key(&self) -> Option<String> {
        self.key_alias.as_deref().map(str::to_string).or_else(|| self.api_key_hash.as_deref().map(short_hash))
    }

    fn failed(&self) -> bool {
        self.status.as_deref() == Some("failure")
    }
}

pub fn ms_of(at: std::time::SystemTime) -> i64 {
    at.duration_since(std::time::SystemTime::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The first 12 characters of a key's hash.
pub fn short_hash(hash: &str) -> String {
    hash.chars().take(12).collect()
}

/// Seconds as LiteLLM writes a threshold: `300`, `1.5`.
fn secs(ms: i64) -> String {
    format!("{}", ms as f64 / 1000.0)
}

/// A request waiting for its response.
#[derive(Debug, Clone)]
struct Waiting {
    event_id: String,
    started_ms: i64,
    model: String,
    key: Option<String>,
}

/// Requests waiting for their response, by request id; at most [`MAX_PENDING`].
#[derive(Debug, Default)]
pub struct Pending {
    waiting: HashMap<String, Waiting>,
    /// Requests not watched because the map was full.
    pub dropped: u64,
}

impl Pending {
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

/// An open outage window of one deployment.
#[derive(Debug)]
struct Window {
    start_ms: i64,
    timeouts: u32,
    api_errors: u32,
    minor_sent: bool,
    major_sent: bool,
}

impl Window {
    fn errors(&self) -> u32 {
        self.timeouts + self.api_errors
    }
}

/// The rules and what they remember between events.
pub struct Rules {
    /// The types raised (`alert_types`, of those Switchyard raises).
    types: Vec<AlertType>,
    threshold_ms: i64,
    outage_ms: i64,
    minor: u32,
    major: u32,
    pending: Pending,
    outages: HashMap<String, Window>,
    report: Report,
}

impl Rules {
    pub fn new(config: &AlertingConfig) -> Self {
        let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Self {
            types: config.alert_types.clone(),
            threshold_ms: ms(config.threshold),
            outage_ms: ms(config.outage_alert_ttl),
            minor: config.minor_outage_threshold,
            major: config.major_outage_threshold,
            pending: Pending::default(),
            outages: HashMap::new(),
            report: Report::new(ms(config.daily_report_frequency)),
        }
    }

    fn on(&self, t: AlertType) -> bool {
        self.types.contains(&t)
    }

    pub fn pending(&self) -> &Pending {
        &self.pending
    }

    /// One request or response event: the alerts it raises go to `out`.
    pub fn call(&mut self, f: &CallFacts, out: &mut Vec<Alert>) {
        let at = f.at_ms();
        if f.kind == "request" {
            self.request(f, at);
            return;
        }
        if let Some(id) = &f.request_id {
            self.pending.waiting.remove(id.as_ref());
        }
        if self.on(AlertType::DailyReports) {
            out.extend(self.report.add(f, at));
        }
        if f.failed() {
            if self.on(AlertType::LlmExceptions) {
                out.push(exception(f, at));
            }
            if self.on(AlertType::OutageAlerts) {
                out.extend(self.outage(f, at));
            }
        } else if self.on(AlertType::LlmTooSlow) && f.duration_ms > self.threshold_ms as f64 {
            out.push(self.slow(f, at));
        }
    }

    fn request(&mut self, f: &CallFacts, at: i64) {
        let Some(id) = f.request_id.as_deref() else { return };
        if !self.on(AlertType::LlmRequestsHanging) {
            return;
        }
        if self.pending.waiting.len() >= MAX_PENDING {
            self.pending.dropped += 1;
            return;
        }
        let waiting =
            Waiting { event_id: f.event_id.to_string(), started_ms: at, model: f.model().to_string(), key: f.key() };
        self.pending.waiting.insert(id.to_string(), waiting);
    }

    fn slow(&self, f: &CallFacts, at: i64) -> Alert {
        let mut a = Alert::new(AlertType::LlmTooSlow, Level::Low, at, &f.event_id);
        let took = (f.duration_ms / 10.0).round() / 100.0;
        a.message = format!(
            "`Responses are slow - {took}s response time > Alerting threshold: {}s`\nRequest Model: `{}`\nAPI Base: `{}`{}",
            secs(self.threshold_ms),
            f.model(),
            f.api_base.as_deref().unwrap_or(""),
            key_line(f.key().as_deref()),
        );
        a.entity = f.model().to_string();
        a.dedup_key = Some(format!("llm_too_slow:{}", f.model()));
        a.details = call_details(f);
        a.details.insert("threshold_s".into(), Value::from(self.threshold_ms as f64 / 1000.0));
        a
    }

    /// Counts a failure towards its deployment's outage window (timeouts and 5xx only).
    fn outage(&mut self, f: &CallFacts, at: i64) -> Option<Alert> {
        let timeout = f.http_status == 408;
        if !(timeout || f.http_status >= 500) {
            return None;
        }
        let key = f.deployment_id.as_deref().or(f.api_base.as_deref())?;
        if !self.outages.contains_key(key) && self.outages.len() >= MAX_OUTAGE_WINDOWS {
            return None;
        }
        let outage_ms = self.outage_ms;
        let w = self.outages.entry(key.to_string()).or_insert(Window {
            start_ms: at,
            timeouts: 0,
            api_errors: 0,
            minor_sent: false,
            major_sent: false,
        });
        if at.saturating_sub(w.start_ms) >= outage_ms {
            *w = Window { start_ms: at, timeouts: 0, api_errors: 0, minor_sent: false, major_sent: false };
        }
        if timeout {
            w.timeouts += 1;
        } else {
            w.api_errors += 1;
        }
        let severity = if !w.major_sent && w.errors() >= self.major {
            w.major_sent = true;
            w.minor_sent = true;
            "major"
        } else if !w.minor_sent && w.errors() >= self.minor {
            w.minor_sent = true;
            "minor"
        } else {
            return None;
        };
        let (level, title) = if severity == "major" { (Level::High, "Major") } else { (Level::Medium, "Minor") };
        let source = format!("{key}:{}:{severity}", w.start_ms);
        let mut a = Alert::new(AlertType::OutageAlerts, level, at, &source);
        let mut errors = String::new();
        if w.timeouts > 0 {
            errors.push_str(&format!("\nTimeout Errors: {}\n", w.timeouts));
        }
        if w.api_errors > 0 {
            errors.push_str(&format!("\nAPI Errors: {}\n", w.api_errors));
        }
        a.message = format!(
            "\n\n*⚠️ {title} Service Outage*\n\n*Model Name:* `{}`\n*Deployment:* `{key}`\n*Provider:* `{}`\n*API Base:* `{}`\n\n*Errors in {}s:*\n{errors}",
            f.model(),
            f.provider.as_deref().unwrap_or(""),
            f.api_base.as_deref().unwrap_or(""),
            secs(self.outage_ms),
        );
        a.event = Some(format!("{severity}_outage"));
        a.entity = key.to_string();
        a.dedup_key = Some(format!("outage_alerts:{key}:{severity}"));
        let mut d = Map::new();
        d.insert("deployment_id".into(), opt(f.deployment_id.as_deref()));
        d.insert("model_group".into(), Value::from(f.model()));
        d.insert("provider".into(), opt(f.provider.as_deref()));
        d.insert("api_base".into(), opt(f.api_base.as_deref()));
        d.insert("severity".into(), Value::from(severity));
        d.insert("errors".into(), Value::from(w.errors()));
        d.insert("timeout_errors".into(), Value::from(w.timeouts));
        d.insert("api_errors".into(), Value::from(w.api_errors));
        d.insert("window_start".into(), Value::from(super::alert::timestamp(w.start_ms)));
        d.insert("window_s".into(), Value::from(self.outage_ms as f64 / 1000.0));
        a.details = d;
        Some(a)
    }

    /// A deployment event: `cooldown_entered` raises `cooldown_deployment`.
    pub fn deployment(&mut self, e: &DeploymentEvent, out: &mut Vec<Alert>) {
        if e.change != "cooldown_entered" || !self.on(AlertType::CooldownDeployment) {
            return;
        }
        let at = ms_of(e.envelope.timestamp.system_time());
        let mut a = Alert::new(AlertType::CooldownDeployment, Level::Low, at, e.envelope.event_id.as_str());
        a.message = format!(
            "Deployment `{}` of model group `{}` is cooling down\nAPI Base: `{}`\nProvider: `{}`\nReason: `{}`\nUntil: `{}`\nGateway: `{}`",
            e.deployment_id,
            e.model_group,
            e.api_base,
            e.provider,
            e.reason.as_deref().unwrap_or(""),
            e.cooldown_until.as_deref().unwrap_or(""),
            e.envelope.gateway_id,
        );
        a.entity = e.deployment_id.clone();
        a.dedup_key = Some(format!("cooldown_deployment:{}", e.deployment_id));
        for (k, v) in [
            ("deployment_id", Value::from(e.deployment_id.as_str())),
            ("model_group", Value::from(e.model_group.as_str())),
            ("provider", Value::from(e.provider.as_str())),
            ("api_base", Value::from(e.api_base.as_str())),
            ("reason", opt(e.reason.as_deref())),
            ("cooldown_until", opt(e.cooldown_until.as_deref())),
            ("gateway_id", Value::from(e.envelope.gateway_id.as_str())),
        ] {
            a.details.insert(k.into(), v);
        }
        out.push(a);
    }

    /// What fires with time alone, as of `clock` (ms): requests hanging for longer than the
    /// threshold, a report period that ended. Also forgets outage windows that closed.
    pub fn tick(&mut self, clock: i64, out: &mut Vec<Alert>) {
        let threshold = self.threshold_ms;
        let mut hanging: Vec<(String, Waiting)> = Vec::new();
        self.pending.waiting.retain(|id, w| {
            let due = clock.saturating_sub(w.started_ms) >= threshold;
            if due {
                hanging.push((id.clone(), w.clone()));
            }
            !due
        });
        hanging.sort_by_key(|(_, w)| w.started_ms);
        for (id, w) in hanging {
            let at = w.started_ms.saturating_add(threshold);
            let mut a = Alert::new(AlertType::LlmRequestsHanging, Level::Medium, at, &w.event_id);
            a.message = format!(
                "`Requests are hanging - {}s+ request time`\nRequest Model: `{}`\nRequest ID: `{id}`{}",
                secs(threshold),
                w.model,
                key_line(w.key.as_deref()),
            );
            a.entity = w.model.clone();
            a.dedup_key = Some(format!("llm_requests_hanging:{}", w.model));
            a.details.insert("request_id".into(), Value::from(id));
            a.details.insert("model_group".into(), Value::from(w.model));
            a.details.insert("key".into(), opt(w.key.as_deref()));
            a.details.insert("started".into(), Value::from(super::alert::timestamp(w.started_ms)));
            a.details.insert("threshold_s".into(), Value::from(threshold as f64 / 1000.0));
            out.push(a);
        }
        let outage_ms = self.outage_ms;
        self.outages.retain(|_, w| clock.saturating_sub(w.start_ms) < outage_ms);
        if self.on(AlertType::DailyReports) {
            out.extend(self.report.due(clock));
        }
    }
}

fn opt(v: Option<&str>) -> Value {
    v.map_or(Value::Null, Value::from)
}

fn key_line(key: Option<&str>) -> String {
    key.map(|k| format!("\nKey: `{k}`")).unwrap_or_default()
}

/// The facts of a call an alert about it carries.
fn call_details(f: &CallFacts) -> Map<String, Value> {
    let mut d = Map::new();
    d.insert("request_id".into(), opt(f.request_id.as_deref()));
    d.insert("model_group".into(), opt(f.model_group.as_deref()));
    d.insert("requested_model".into(), opt(f.requested_model.as_deref()));
    d.insert("deployment_id".into(), opt(f.deployment_id.as_deref()));
    d.insert("provider".into(), opt(f.provider.as_deref()));
    d.insert("api_base".into(), opt(f.api_base.as_deref()));
    d.insert("api_key_hash".into(), opt(f.api_key_hash.as_deref()));
    d.insert("key_alias".into(), opt(f.key_alias.as_deref()));
    d.insert("http_status".into(), Value::from(f.http_status));
    d.insert("duration_s".into(), Value::from(f.duration_ms / 1000.0));
    d
}

fn exception(f: &CallFacts, at: i64) -> Alert {
    let mut a = Alert::new(AlertType::LlmExceptions, Level::High, at, &f.event_id);
    let error_type = f.error_type.as_deref().unwrap_or("error");
    a.message = format!(
        "LLM API call failed: `{} {}: {}`\nRequest Model: `{}`\nAPI Base: `{}`\nRequest ID: `{}`{}",
        f.http_status,
        error_type,
        f.error_message.as_deref().unwrap_or(""),
        f.model(),
        f.api_base.as_deref().unwrap_or(""),
        f.request_id.as_deref().unwrap_or(""),
        key_line(f.key().as_deref()),
    );
    a.entity = f.model().to_string();
    a.dedup_key = Some(format!("llm_exceptions:{}:{error_type}", f.model()));
    a.details = call_details(f);
    a.details.insert("error_type".into(), opt(f.error_type.as_deref()));
    a.details.insert("error_message".into(), opt(f.error_message.as_deref()));
    a
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    pub(crate) fn config() -> AlertingConfig {
        AlertingConfig {
            threshold: Duration::from_secs(2),
            outage_alert_ttl: Duration::from_secs(60),
            minor_outage_threshold: 3,
            major_outage_threshold: 5,
            ..AlertingConfig::default()
        }
    }

    /// The JSON of an event as the gateway writes it (only what the rules read, and a little
    /// more), at `at` ms.
    pub(crate) fn event(kind: &str, id: &str, at: i64, fields: Value) -> Vec<u8> {
        let mut e = serde_json::json!({
            "schema_version": 1, "event_id": uuid::Uuid::new_v4().to_string(), "type": kind,
            "request_id": id, "gateway_id": "gw", "timestamp": super::super::alert::timestamp(at),
            "requested_model": "m", "model_group": "m", "api_key_hash": "0123456789abcdef", "key_alias": null,
        });
        if kind == "response" {
            let defaults = serde_json::json!({"deployment_id": "d1", "provider": "openai", "api_base": "http://up/v1",
                "status": "success", "http_status": 200, "error_type": null, "error_message": null, "duration_ms": 10.0, "cost": 0.001});
            e.as_object_mut().unwrap().extend(defaults.as_object().unwrap().clone());
        }
        e.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
        serde_json::to_vec(&e).unwrap()
    }

    fn run(rules: &mut Rules, events: &[Vec<u8>]) -> Vec<Alert> {
        let mut out = Vec::new();
        for e in events {
            rules.call(&CallFacts::of(e).unwrap(), &mut out);
        }
        out
    }

    fn failure(id: &str, at: i64, status: u16) -> Vec<u8> {
        event(
            "response",
            id,
            at,
            serde_json::json!({"status": "failure", "http_status": status, "error_type": "APIError", "error_message": "upstream said no"}),
        )
    }

    #[test]
    fn a_failed_call_is_an_llm_exception_and_a_slow_one_llm_too_slow() {
        let mut rules = Rules::new(&config());
        let alerts = run(
            &mut rules,
            &[failure("r1", 1_000, 500), event("response", "r2", 2_000, serde_json::json!({"duration_ms": 2500.0}))],
        );
        let types: Vec<AlertType> = alerts.iter().map(|a| a.alert_type).collect();
        assert_eq!(types, [AlertType::LlmExceptions, AlertType::LlmTooSlow]);
        let e = &alerts[0];
        assert_eq!(e.level, Level::High);
        assert!(
            e.message.starts_with("LLM API call failed: `500 APIError: upstream said no`\nRequest Model: `m`"),
            "{}",
            e.message
        );
        assert!(e.message.contains("\nKey: `0123456789ab`"), "{}", e.message);
        assert_eq!(e.dedup_key.as_deref(), Some("llm_exceptions:m:APIError"));
        assert_eq!(e.details["request_id"], "r1");
        let s = &alerts[1];
        assert_eq!(
            s.message.lines().next(),
            Some("`Responses are slow - 2.5s response time > Alerting threshold: 2s`")
        );
        assert_eq!((s.level, s.timestamp.as_str()), (Level::Low, "1970-01-01T00:00:02.000Z"));
        // At or under the threshold, or a failure, is not slow.
        let quick = event("response", "r3", 3_000, serde_json::json!({"duration_ms": 2000.0}));
        assert!(run(&mut rules, &[quick]).is_empty());
    }

    #[test]
    fn a_request_without_its_response_after_the_threshold_is_hanging() {
        let mut rules = Rules::new(&config());
        let mut out = Vec::new();
        assert!(run(
            &mut rules,
            &[
                event("request", "a", 1_000, Value::Object(Map::new())),
                event("request", "b", 1_500, Value::Object(Map::new()))
            ]
        )
        .is_empty());
        rules.tick(2_999, &mut out);
        assert!(out.is_empty(), "not yet");
        // `b` is answered in time; `a` is not.
        run(&mut rules, &[event("response", "b", 3_000, Value::Object(Map::new()))]);
        rules.tick(3_000, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].alert_type, out[0].level), (AlertType::LlmRequestsHanging, Level::Medium));
        assert_eq!(out[0].details["request_id"], "a");
        assert_eq!(out[0].timestamp, "1970-01-01T00:00:03.000Z", "the request's start plus the threshold");
        assert!(out[0].message.starts_with("`Requests are hanging - 2s+ request time`"));
        rules.tick(10_000, &mut out);
        assert_eq!(out.len(), 1, "once");
        assert!(rules.pending().is_empty());
    }

    #[test]
    fn pending_requests_are_bounded() {
        let mut rules = Rules::new(&config());
        let facts = |i: usize| event("request", &format!("r{i}"), 0, Value::Object(Map::new()));
        for i in 0..MAX_PENDING + 3 {
            rules.call(&CallFacts::of(&facts(i)).unwrap(), &mut Vec::new());
        }
        assert_eq!((rules.pending().len(), rules.pending().dropped), (MAX_PENDING, 3));
    }

    #[test]
    fn outages_are_counted_per_deployment_in_a_window_minor_then_major() {
        let mut rules = Rules::new(&AlertingConfig { alert_types: vec![AlertType::OutageAlerts], ..config() });
        // 4xx do not count; 408 and 5xx do.
        assert!(run(&mut rules, &[failure("x", 0, 400), failure("y", 0, 429)]).is_empty());
        let calls: Vec<Vec<u8>> =
            (0..6).map(|i| failure(&format!("r{i}"), 1_000 + i, if i == 0 { 408 } else { 503 })).collect();
        let alerts = run(&mut rules, &calls);
        let events: Vec<(Option<&str>, Level)> = alerts.iter().map(|a| (a.event.as_deref(), a.level)).collect();
        assert_eq!(events, [(Some("minor_outage"), Level::Medium), (Some("major_outage"), Level::High)]);
        assert_eq!(alerts[0].details["errors"], 3);
        assert!(
            alerts[0].message.contains("*⚠️ Minor Service Outage*") && alerts[0].message.contains("Timeout Errors: 1")
        );
        assert_eq!(alerts[1].details["api_errors"], 4);
        // Another deployment has its own window; after the window a new one starts.
        let other: Vec<Vec<u8>> = (0..3)
            .map(|i| {
                event(
                    "response",
                    "o",
                    2_000 + i,
                    serde_json::json!({"status": "failure", "http_status": 500, "deployment_id": "d2"}),
                )
            })
            .collect();
        assert_eq!(run(&mut rules, &other).len(), 1);
        let later: Vec<Vec<u8>> = (0..3).map(|i| failure("l", 61_000 + i, 500)).collect();
        let again = run(&mut rules, &later);
        assert_eq!(again.len(), 1, "a new window raises again");
        assert_ne!(again[0].alert_id, alerts[0].alert_id);
        // Replaying the same failures raises the same ids.
        let mut replay = Rules::new(&AlertingConfig { alert_types: vec![AlertType::OutageAlerts], ..config() });
        assert_eq!(run(&mut replay, &calls)[0].alert_id, alerts[0].alert_id);
    }

    #[test]
    fn a_cooldown_is_an_alert_and_disabled_types_raise_nothing() {
        let d = crate::events::DeploymentEvent {
            envelope: crate::events::Envelope::new("deployment", None, "gw-1"),
            deployment_id: "d1".into(),
            model_group: "g".into(),
            provider: "openai".into(),
            api_base: "http://up/v1".into(),
            change: "cooldown_entered",
            reason: Some("RateLimitError".into()),
            cooldown_until: Some("2026-01-01T00:00:05.000Z".into()),
        };
        let mut out = Vec::new();
        Rules::new(&config()).deployment(&d, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].alert_type, out[0].entity.as_str()), (AlertType::CooldownDeployment, "d1"));
        assert!(out[0].message.contains("Reason: `RateLimitError`"));
        let left = crate::events::DeploymentEvent { change: "cooldown_left", ..d.clone() };
        Rules::new(&config()).deployment(&left, &mut out);
        assert_eq!(out.len(), 1);

        let mut none = Rules::new(&AlertingConfig { alert_types: vec![], ..config() });
        none.deployment(&d, &mut out);
        let alerts = run(&mut none, &[event("request", "a", 0, Value::Object(Map::new())), failure("b", 0, 500)]);
        none.tick(1_000_000, &mut out);
        assert!(alerts.is_empty() && out.len() == 1 && none.pending().is_empty());
    }
}
