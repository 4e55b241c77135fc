//! The second half of the alerts consumer: follows `<prefix>.alerts` under the consumer name
//! [`GROUP`], decides what to deliver (`super::dedup`), posts it to each destination
//! (`super::payload`), retrying with exponential backoff while a destination is down or
//! answers 408, 429 or 5xx, and only then commits its position. The rows of ClickHouse
//! `alerts` (when it is configured) go to a writer task of their own (`spawn_writer`): a
//! ClickHouse outage does not hold up alerts. A destination that is down holds the alerts after it (on
//! the topic, not in memory) until it is back; a restart delivers them again, so nothing is
//! lost (and an alert delivered just before a crash may be delivered twice). A destination that
//! refuses an alert for good (another 4xx) is logged and counted; it does not hold the others.
//!
//! At start it reads the topic up to its committed position without delivering, to know which
//! dedup keys were delivered within their time to live.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use super::alert::{read, Alert, Read};
use super::dedup::{Dedup, Verdict};
use super::payload::{destinations, ttl, Destination};
use super::store::{self, AlertRow};
use crate::config::{AlertingConfig, ClickHouseConfig};
use crate::consumers::{sleep_or_stop, with_deadline, ConsumerMetrics};
use crate::events::topics::{Follower, Record, Start, TopicError, Topics};

/// The consumer name on `<prefix>.alerts`.
pub const GROUP: &str = "alerts.deliver";
const NAME: &str = super::NAME;
/// How long one post may take.
const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// The first wait before a retry, and the longest.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What became of an alert (ClickHouse `alerts.outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// A destination refused it for good.
    Rejected,
    Deduplicated,
    /// Its type is not in `alert_types`.
    Disabled,
    NoDestination,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Rejected => "rejected",
            Self::Deduplicated => "deduplicated",
            Self::Disabled => "disabled",
            Self::NoDestination => "no_destination",
        }
    }
}

/// How one post went.
#[derive(Debug)]
enum Sent {
    Ok,
    /// Worth trying again: no answer, 408, 429 or 5xx.
    Retry(String),
    /// Refused for good.
    Refused(u16),
}

async fn post(http: &reqwest::Client, to: &Destination, alert: &Alert) -> Sent {
    let request = http.post(to.url()).header("content-type", "application/json").body(to.body(alert));
    match request.send().await {
        Ok(resp) if resp.status().is_success() => Sent::Ok,
        Ok(resp) => {
            let status = resp.status().as_u16();
            if status == 408 || status == 429 || status >= 500 {
                Sent::Retry(format!("HTTP {status}"))
            } else {
                Sent::Refused(status)
            }
        }
        // Without the URL: it is a secret (a Slack webhook URL lets anyone post).
        Err(e) => Sent::Retry(e.without_url().to_string()),
    }
}

/// Delivers alerts and remembers what it delivered.
struct Deliverer {
    config: AlertingConfig,
    http: reqwest::Client,
    dedup: Dedup,
    metrics: ConsumerMetrics,
}

impl Deliverer {
    /// Whether to deliver `alert`, and where.
    fn plan(&mut self, alert: &Alert) -> Result<Vec<Destination>, Option<Outcome>> {
        let ttl_ms = ttl(&self.config, alert.alert_type).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        match self.dedup.check(&alert.alert_id, alert.dedup_key.as_deref(), alert.at_ms(), ttl_ms) {
            Verdict::Seen => return Err(None),
            Verdict::Repeat => return Err(Some(Outcome::Deduplicated)),
            Verdict::New => {}
        }
        if !self.config.enabled(alert.alert_type) {
            return Err(Some(Outcome::Disabled));
        }
        let to = destinations(&self.config, alert.alert_type);
        if to.is_empty() {
            return Err(Some(Outcome::NoDestination));
        }
        Ok(to)
    }

    /// Posts `alert` to every destination, retrying those that may take it later; `None` when
    /// told to stop first.
    async fn deliver(
        &self,
        alert: &Alert,
        mut left: Vec<Destination>,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<(Outcome, Vec<String>)> {
        let (mut sent, mut refused) = (Vec::new(), false);
        let mut backoff = FIRST_BACKOFF;
        loop {
            let mut again = Vec::new();
            for to in left {
                match post(&self.http, &to, alert).await {
                    Sent::Ok => {
                        self.metrics.rows.with_label_values(&[NAME, to.label()]).inc();
                        sent.push(to.label().to_string());
                    }
                    Sent::Refused(status) => {
                        tracing::error!(destination = to.label(), status, alert_id = %alert.alert_id, alert_type = alert.alert_type.as_str(), "the destination refused the alert; not retried");
                        self.metrics.skipped.with_label_values(&[NAME, "rejected"]).inc();
                        refused = true;
                    }
                    Sent::Retry(error) => {
                        tracing::warn!(destination = to.label(), %error, alert_id = %alert.alert_id, ?backoff, "cannot deliver an alert; retrying");
                        again.push(to);
                    }
                }
            }
            if again.is_empty() {
                let outcome = if refused { Outcome::Rejected } else { Outcome::Delivered };
                return Some((outcome, sent));
            }
            self.metrics.retries.with_label_values(&[NAME]).inc();
            if sleep_or_stop(stop, backoff).await {
                return None;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            left = again;
        }
    }

    /// Handles one record; its row, if it is an alert read for the first time. `Err` when
    /// told to stop.
    async fn handle(
        &mut self,
        topics: &Topics,
        record: &Record,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Option<AlertRow>, ()> {
        let alert = match read(record.value.as_deref()) {
            Read::Alert(alert) => alert,
            Read::Other => return Ok(None),
            Read::Bad(error) => {
                tracing::warn!(partition = record.partition, offset = record.offset, %error, "a record of the alerts topic that cannot be read; skipped");
                self.metrics.skipped.with_label_values(&[NAME, "unreadable"]).inc();
                let value = record.value.clone().unwrap_or_default();
                if let Err(e) = topics.append("dead_letters", &record.key, Some(&value)).await {
                    tracing::warn!(error = %e, "cannot write a dead letter");
                }
                return Ok(None);
            }
        };
        let (outcome, sent) = match self.plan(&alert) {
            Err(None) => return Ok(None),
            Err(Some(outcome)) => {
                self.metrics.skipped.with_label_values(&[NAME, outcome.as_str()]).inc();
                tracing::debug!(alert_id = %alert.alert_id, outcome = outcome.as_str(), "alert not delivered");
                (outcome, Vec::new())
            }
            Ok(to) => self.deliver(&alert, to, stop).await.ok_or(())?,
        };
        if outcome == Outcome::Delivered {
            tracing::info!(alert_type = alert.alert_type.as_str(), alert_id = %alert.alert_id, to = ?sent, "alert delivered");
        }
        let now = u32::try_from(jiff::Timestamp::now().as_second()).unwrap_or(0);
        Ok(Some(AlertRow::of(&alert, outcome.as_str(), sent, now)))
    }
}

/// Runs until `stop` turns true. `ready` is told once the follower's position is set (the
/// alert rules start after it, so none of their alerts falls before a first start's end).
pub async fn run(
    topics: Topics,
    config: AlertingConfig,
    clickhouse: Option<ClickHouseConfig>,
    metrics: ConsumerMetrics,
    mut stop: watch::Receiver<bool>,
    ready: oneshot::Sender<()>,
    follower: Follower,
) -> Result<(), String> {
    let http = reqwest::Client::builder()
        .timeout(POST_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| format!("cannot build the alerts' HTTP client: {e}"))?;
    let mut d = Deliverer { config, http, dedup: Dedup::default(), metrics };
    let rows = clickhouse.as_ref().map(|ch| spawn_writer(crate::clickhouse::client(ch), d.metrics.clone()));
    let mut follower = Some(follower);
    let (mut follower, mut first) = loop {
        match start(&topics, &mut d, &mut follower).await {
            Ok(started) => break started,
            Err(e) => {
                tracing::warn!(error = %e, "the alerts consumer cannot start; retrying");
                if sleep_or_stop(&mut stop, Duration::from_secs(1)).await {
                    return Ok(());
                }
            }
        }
    };
    let _ = ready.send(());
    loop {
        let records = if !first.is_empty() {
            std::mem::take(&mut first)
        } else {
            tokio::select! {
                _ = stop.changed() => break,
                batch = follower.next_batch(256, Duration::from_millis(500)) => match batch {
                    Ok(records) => records,
                    Err(e) => {
                        tracing::warn!(error = %e, "the alerts consumer cannot read the alerts; retrying");
                        if sleep_or_stop(&mut stop, Duration::from_secs(1)).await { break }
                        Vec::new()
                    }
                },
            }
        };
        for record in &records {
            match d.handle(&topics, record, &mut stop).await {
                Ok(row) => {
                    if let (Some(rows), Some(row)) = (&rows, row) {
                        if rows.try_send(row).is_err() {
                            d.metrics.skipped.with_label_values(&[NAME, "clickhouse_dropped"]).inc();
                        }
                    }
                }
                // Told to stop while delivering: not committed, delivered again after a restart.
                Err(()) => return Ok(()),
            }
        }
        if !records.is_empty() {
            d.metrics.batches.with_label_values(&[NAME]).inc();
            if let Err(e) = follower.commit().await {
                tracing::warn!(error = %e, "cannot commit the alerts consumer's position; the next commit covers it");
            }
        }
    }
    Ok(())
}

/// Rows waiting for ClickHouse, at most; beyond, the oldest are dropped (counted).
const MAX_UNWRITTEN: usize = 10_000;

/// Starts the writer of ClickHouse `alerts`, a task of its own: writing rows never holds up a
/// delivery or the position (alerts matter most when other things are down, and a ClickHouse
/// that stops answering takes up to 30 s to give up on). Rows it cannot write are kept, at most
/// [`MAX_UNWRITTEN`] (and as many more in the channel, beyond which the deliverer drops them),
/// and tried again with backoff; a crash loses those (the alerts
/// themselves were delivered). It writes what it holds and stops once the sender is dropped.
fn spawn_writer(client: clickhouse::Client, metrics: ConsumerMetrics) -> mpsc::Sender<AlertRow> {
    let (rows, mut received) = mpsc::channel::<AlertRow>(MAX_UNWRITTEN);
    tokio::spawn(async move {
        let (mut unwritten, mut batch) = (Vec::new(), Vec::new());
        let (mut backoff, mut next_try) = (FIRST_BACKOFF, tokio::time::Instant::now());
        loop {
            tokio::select! {
                n = received.recv_many(&mut batch, 1024) => {
                    unwritten.append(&mut batch);
                    if unwritten.len() > MAX_UNWRITTEN {
                        let dropped = unwritten.len() - MAX_UNWRITTEN;
                        unwritten.drain(..dropped);
                        metrics.skipped.with_label_values(&[NAME, "clickhouse_dropped"]).inc_by(dropped as u64);
                        tracing::error!(dropped, "ClickHouse has been down too long: the oldest alert rows are dropped");
                    }
                    if n == 0 {
                        if !unwritten.is_empty() {
                            write(&client, &mut unwritten, &metrics).await;
                        }
                        return;
                    }
                }
                _ = tokio::time::sleep_until(next_try), if !unwritten.is_empty() => {
                    if write(&client, &mut unwritten, &metrics).await {
                        backoff = FIRST_BACKOFF;
                    } else {
                        next_try = tokio::time::Instant::now() + backoff;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        }
    });
    rows
}

/// Inserts the rows (and forgets them); false, keeping them, when ClickHouse fails.
async fn write(client: &clickhouse::Client, rows: &mut Vec<AlertRow>, metrics: &ConsumerMetrics) -> bool {
    match with_deadline(store::insert(client, rows)).await.and_then(|r| r.map_err(|e| e.to_string())) {
        Ok(()) => {
            metrics.rows.with_label_values(&[NAME, "alerts"]).inc_by(rows.len() as u64);
            rows.clear();
            true
        }
        Err(e) => {
            metrics.retries.with_label_values(&[NAME]).inc();
            tracing::warn!(error = %e, rows = rows.len(), "writing alerts to ClickHouse failed; retrying");
            false
        }
    }
}

/// The follower of `<prefix>.alerts` under [`GROUP`] (its position is set at once on the
/// embedded log, at its first read on Kafka).
pub fn follow(topics: &Topics) -> Result<Follower, TopicError> {
    topics.follow("alerts", Start::GroupOrEnd(GROUP.into()))
}

/// The dedup state from the topic up to the committed position, then the follower from there
/// with what its first read returned. When that read returns nothing, the position is committed
/// at once: a first start's position (the end) is kept.
async fn start(
    topics: &Topics,
    d: &mut Deliverer,
    follower: &mut Option<Follower>,
) -> Result<(Follower, Vec<Record>), String> {
    let committed = topics.committed("alerts", GROUP).await.map_err(|e| e.to_string())?;
    if !committed.is_empty() {
        let mut history = topics.follow("alerts", Start::Beginning).map_err(|e| e.to_string())?;
        let reached = |at: &[(i32, i64)]| committed.iter().all(|(p, end)| at.iter().any(|(q, o)| q == p && o >= end));
        let mut read_back = 0;
        while !reached(&history.position()) && !history.caught_up() {
            for record in history.next_batch(4096, Duration::from_millis(200)).await.map_err(|e| e.to_string())? {
                let before = committed.iter().any(|(p, end)| *p == record.partition && record.offset < *end);
                if let (true, Read::Alert(alert)) = (before, read(record.value.as_deref())) {
                    d.plan(&alert).ok();
                    read_back += 1;
                }
            }
        }
        tracing::info!(alerts = read_back, "alerts consumer: the alerts before its position read back");
    }
    let mut follower = match follower.take() {
        Some(f) => f,
        None => follow(topics).map_err(|e| e.to_string())?,
    };
    let first = follower.next_batch(256, Duration::ZERO).await.map_err(|e| e.to_string())?;
    if first.is_empty() {
        follower.commit().await.map_err(|e| e.to_string())?;
    }
    Ok((follower, first))
}
