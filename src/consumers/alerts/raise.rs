//! The first half of the alerts consumer: follows `<prefix>.events` and `<prefix>.deployments`
//! under the consumer name [`GROUP`], runs the rules (`super::rules`) and appends the alerts
//! they raise to `<prefix>.alerts`; commits its position only once those are durable, so a
//! crash raises them again (with the same ids) rather than losing them.
//!
//! A name that never committed starts at the end of the topics: turning alerting on does not
//! raise alerts about the history. What the rules hold in memory (requests waiting for their
//! response, outage windows, the report period's fold) starts empty after a restart.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::alert::Alert;
use super::rules::{ms_of, CallFacts, Rules};
use crate::config::AlertingConfig;
use crate::consumers::{sleep_or_stop, ConsumerMetrics};
use crate::events::topics::{Append, Follower, Record, Start, TopicError, Topics};
use crate::events::types::kind_hint;
use crate::events::Event;

/// The consumer name on `<prefix>.events` and `<prefix>.deployments`.
pub const GROUP: &str = "alerts";
const BATCH: usize = 4096;
const WAIT: Duration = Duration::from_millis(200);
/// How often time-driven rules run and the position is committed, at most.
const TICK: Duration = Duration::from_millis(250);
const COMMIT_EVERY: Duration = Duration::from_secs(1);
const NAME: &str = super::NAME;

/// The followers of `<prefix>.events` and `<prefix>.deployments` under [`GROUP`].
pub fn follow(topics: &Topics) -> Result<(Follower, Follower), TopicError> {
    let group = || Start::GroupOrEnd(GROUP.into());
    Ok((topics.follow("events", group())?, topics.follow("deployments", group())?))
}

/// Runs until `stop` turns true; then appends what is raised and commits.
pub async fn run(
    topics: Topics,
    config: AlertingConfig,
    metrics: ConsumerMetrics,
    mut stop: watch::Receiver<bool>,
    (mut events, mut deployments): (Follower, Follower),
) -> Result<(), String> {
    let mut state = State { rules: Rules::new(&config), raised: Vec::new(), newest_ms: 0, dropped: 0 };
    // Until a read of the events comes back empty, the clock is the newest event's time.
    let mut at_head = false;
    let (mut last_tick, mut last_commit) = (Instant::now(), Instant::now());
    let mut uncommitted = true;
    tracing::info!(group = GROUP, threshold = ?config.threshold, "alert rules starting");
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            batch = events.next_batch(BATCH, WAIT) => match batch {
                Ok(records) => {
                    at_head = records.is_empty();
                    uncommitted |= !records.is_empty();
                    records.iter().for_each(|r| state.event(r, &metrics));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the alert rules cannot read the events; retrying");
                    if sleep_or_stop(&mut stop, Duration::from_secs(1)).await { break }
                }
            },
            batch = deployments.next_batch(256, WAIT) => match batch {
                Ok(records) => {
                    uncommitted |= !records.is_empty();
                    records.iter().for_each(|r| state.deployment(r, &metrics));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the alert rules cannot read the deployment events; retrying");
                    if sleep_or_stop(&mut stop, Duration::from_secs(1)).await { break }
                }
            },
        }
        if last_tick.elapsed() >= TICK {
            let clock = if at_head { ms_of(std::time::SystemTime::now()) } else { state.newest_ms };
            state.rules.tick(clock, &mut state.raised);
            state.report(&metrics);
            last_tick = Instant::now();
        }
        if !state.raised.is_empty() && !append(&topics, &mut state.raised, &metrics, &mut stop).await {
            return Ok(());
        }
        if uncommitted && last_commit.elapsed() >= COMMIT_EVERY {
            uncommitted = !commit(&mut events, &mut deployments).await;
            last_commit = Instant::now();
        }
    }
    if append(&topics, &mut state.raised, &metrics, &mut stop).await {
        commit(&mut events, &mut deployments).await;
    }
    Ok(())
}

/// The rules and what they raised, not yet appended.
struct State {
    rules: Rules,
    raised: Vec<Alert>,
    /// The newest event time read (ms).
    newest_ms: i64,
    /// Requests not watched (the pending map was full), as last reported.
    dropped: u64,
}

impl State {
    fn event(&mut self, record: &Record, metrics: &ConsumerMetrics) {
        let Some(value) = record.value.as_deref() else { return };
        if kind_hint(value).is_some_and(|k| k != "request" && k != "response") {
            return;
        }
        match CallFacts::of(value) {
            Some(facts) => {
                self.newest_ms = self.newest_ms.max(facts.at_ms());
                self.rules.call(&facts, &mut self.raised);
            }
            None => {
                tracing::debug!(offset = record.offset, "an event the alert rules cannot read; skipped");
                metrics.skipped.with_label_values(&[NAME, "unreadable"]).inc();
            }
        }
    }

    fn deployment(&mut self, record: &Record, metrics: &ConsumerMetrics) {
        let Some(value) = record.value.as_deref() else { return };
        match Event::from_json(value) {
            Ok(Event::Deployment(e)) => self.rules.deployment(&e, &mut self.raised),
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(offset = record.offset, error = %e, "a deployment event the alert rules cannot read; skipped");
                metrics.skipped.with_label_values(&[NAME, "unreadable"]).inc();
            }
        }
    }

    /// Lag and requests not watched, in the metrics.
    fn report(&mut self, metrics: &ConsumerMetrics) {
        if self.newest_ms > 0 {
            let lag = ms_of(std::time::SystemTime::now()).saturating_sub(self.newest_ms).max(0);
            metrics.lag.with_label_values(&[NAME]).set(lag as f64 / 1000.0);
        }
        let dropped = self.rules.pending().dropped;
        if dropped > self.dropped {
            metrics.skipped.with_label_values(&[NAME, "pending_full"]).inc_by(dropped - self.dropped);
            tracing::warn!(
                watched = self.rules.pending().len(),
                "too many requests in flight to watch for hanging ones; new ones are not watched"
            );
            self.dropped = dropped;
        }
    }
}

/// Appends the alerts, retrying with backoff until they are durable; false when told to stop
/// first (they are not committed: a restart raises them again).
async fn append(
    topics: &Topics,
    raised: &mut Vec<Alert>,
    metrics: &ConsumerMetrics,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    if raised.is_empty() {
        return true;
    }
    let records: Vec<Append> = raised
        .iter()
        .map(|a| (if a.entity.is_empty() { a.alert_id.clone() } else { a.entity.clone() }, Some(a.to_json())))
        .collect();
    let mut backoff = Duration::from_millis(200);
    loop {
        match topics.append_all("alerts", records.clone()).await {
            Ok(()) => {
                metrics.rows.with_label_values(&[NAME, "topic"]).inc_by(raised.len() as u64);
                for a in raised.iter() {
                    tracing::info!(alert_type = a.alert_type.as_str(), entity = %a.entity, alert_id = %a.alert_id, "alert raised");
                }
                raised.clear();
                return true;
            }
            Err(e) => {
                metrics.retries.with_label_values(&[NAME]).inc();
                tracing::warn!(error = %e, alerts = raised.len(), ?backoff, "cannot append alerts; retrying");
                if sleep_or_stop(stop, backoff).await {
                    return false;
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Commits both positions; true when both are stored.
async fn commit(events: &mut Follower, deployments: &mut Follower) -> bool {
    let mut ok = true;
    for (name, follower) in [("events", events), ("deployments", deployments)] {
        if let Err(e) = follower.commit().await {
            tracing::warn!(topic = name, error = %e, "cannot commit the alert rules' position; retrying");
            ok = false;
        }
    }
    ok
}
