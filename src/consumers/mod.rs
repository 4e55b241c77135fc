//! Consumers of the event log: processes (or, on the embedded log, tasks of the gateway) that
//! follow `<prefix>.events` under a consumer name of their own and turn it into state others
//! read. `switchyard consume <name>` runs one.
//!
//! - [`budgets`]: spend per account and budget window → the compacted `<prefix>.spend`
//!   (schema `schemas/events/spend.json`), from which every gateway starts.
//!
//! - [`spend`]: response events → ClickHouse `spend_logs` and `daily_spend` rollups.
//!
//! - [`analytics`]: response events and cooldowns → ClickHouse `deployment_minute`.
//!
//! - [`alerts`]: events and deployment events → alerts on `<prefix>.alerts` → Slack and
//!   webhooks (LiteLLM's alerting), and ClickHouse `alerts`.
//!
//! The ClickHouse consumers share one loop ([`writer`]).

pub mod alerts;
pub mod analytics;
pub mod budgets;
pub mod spend;
pub mod writer;

use std::time::Duration;

use prometheus::{GaugeVec, IntCounterVec, Opts, Registry};
use tokio::sync::watch;

/// Progress of the consumers, in `/metrics` (of the gateway that runs them).
#[derive(Clone)]
pub struct ConsumerMetrics {
    /// Seconds between now and the newest event the consumer has written.
    pub lag: GaugeVec,
    /// Rows written, by `consumer` and `table`.
    pub rows: IntCounterVec,
    pub batches: IntCounterVec,
    /// Writes that failed and were retried.
    pub retries: IntCounterVec,
    /// Records skipped, by `reason` (`unreadable`: sent to `<prefix>.dead_letters`).
    pub skipped: IntCounterVec,
}

impl ConsumerMetrics {
    pub fn new() -> prometheus::Result<Self> {
        Ok(Self {
            lag: GaugeVec::new(
                Opts::new(
                    "switchyard_consumer_lag",
                    "Seconds between now and the newest event the consumer has written",
                ),
                &["consumer"],
            )?,
            rows: IntCounterVec::new(
                Opts::new("switchyard_consumer_rows_written_total", "Rows written"),
                &["consumer", "table"],
            )?,
            batches: IntCounterVec::new(
                Opts::new("switchyard_consumer_batches_total", "Batches written"),
                &["consumer"],
            )?,
            retries: IntCounterVec::new(
                Opts::new("switchyard_consumer_retries_total", "Writes retried"),
                &["consumer"],
            )?,
            skipped: IntCounterVec::new(
                Opts::new("switchyard_consumer_skipped_total", "Records skipped"),
                &["consumer", "reason"],
            )?,
        })
    }

    /// The metrics, registered with `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self::new()?;
        registry.register(Box::new(m.lag.clone()))?;
        registry.register(Box::new(m.rows.clone()))?;
        registry.register(Box::new(m.batches.clone()))?;
        registry.register(Box::new(m.retries.clone()))?;
        registry.register(Box::new(m.skipped.clone()))?;
        Ok(m)
    }
}

/// The consumers `switchyard consume` knows, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Name {
    Spend,
    Budgets,
    Alerts,
    Analytics,
    /// Every consumer in one process.
    All,
}

impl Name {
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Spend, Self::Budgets, Self::Alerts, Self::Analytics, Self::All].into_iter().find(|n| n.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Spend => "spend",
            Self::Budgets => "budgets",
            Self::Alerts => "alerts",
            Self::Analytics => "analytics",
            Self::All => "all",
        }
    }

    /// What `config` lacks for this consumer to run (its output), if anything.
    pub fn missing(self, config: &crate::config::Config) -> Option<String> {
        match self {
            Self::Spend | Self::Analytics if config.clickhouse.is_none() => Some(format!(
                "`consume {}` needs analytics.clickhouse (or SWITCHYARD_CLICKHOUSE_URL): it writes there",
                self.as_str()
            )),
            Self::Alerts if !config.general.alerting.is_on() => Some(
                "`consume alerts` needs general_settings.alerting (slack and/or webhook): it delivers alerts there"
                    .into(),
            ),
            _ => None,
        }
    }
}

/// Runs the consumer `name` on `topics` until `stop` turns true; the first to fail stops the
/// others. `all` runs every consumer, except those whose output is not configured (the ClickHouse
/// ones without ClickHouse, alerts without `general_settings.alerting`).
pub async fn run(
    name: Name,
    topics: crate::events::topics::Topics,
    config: &crate::config::Config,
    metrics: ConsumerMetrics,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    use writer::run as write;
    let names = match name {
        Name::All => vec![Name::Budgets, Name::Spend, Name::Analytics, Name::Alerts],
        one => vec![one],
    };
    let all = name == Name::All;
    let mut tasks = tokio::task::JoinSet::new();
    for name in names {
        match name.missing(config) {
            Some(_) if all => continue,
            Some(missing) => return Err(missing),
            None => {}
        }
        let (topics, metrics, stop) = (topics.clone(), metrics.clone(), stop.clone());
        let clickhouse = config.clickhouse.clone();
        match (name, clickhouse) {
            (Name::Spend, Some(ch)) => {
                tasks.spawn(write::<spend::Batch>(topics, ch, metrics, stop));
            }
            (Name::Analytics, Some(ch)) => {
                tasks.spawn(analytics::run(topics, ch, metrics, stop));
            }
            (Name::Budgets, _) => {
                tasks.spawn(budgets::run(topics, None, config.timezone.clone(), None, stop));
            }
            (Name::Alerts, clickhouse) => {
                let followers = alerts::Followers::open(&topics)?;
                let alerting = config.general.alerting.clone();
                tasks.spawn(alerts::run(topics, alerting, clickhouse, metrics, stop, followers));
            }
            (other, _) => return Err(format!("`consume {}` cannot run here", other.as_str())),
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// The consumers a gateway runs itself: on the embedded log (which belongs to one process),
/// every consumer whose output is configured (alerts: when `general_settings.alerting` is);
/// with Kafka, none (`switchyard consume <name>` runs them, once per cluster). Dropping it
/// stops them.
#[derive(Default)]
pub struct InProcess {
    budgets: Option<budgets::InProcess>,
    spend: Option<spend::InProcess>,
    /// With ClickHouse only: its rows have no other reader.
    analytics: Option<tokio::sync::watch::Sender<bool>>,
    alerts: Option<alerts::InProcess>,
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = &self.analytics {
            stop.send_replace(true);
        }
    }
}

impl InProcess {
    /// Starts them on the current runtime.
    /// `memory` receives the spend rollups when no ClickHouse is configured.
    pub fn start(
        topics: &crate::events::topics::Topics,
        keys: &std::sync::Arc<crate::auth::KeyStore>,
        config: &crate::config::Config,
        memory: std::sync::Arc<spend::MemoryStore>,
        metrics: ConsumerMetrics,
        events: &crate::events::EventSink,
    ) -> Self {
        let alerting = &config.general.alerting;
        if !config.event_log.enabled || config.event_log.kafka.is_some() {
            if alerting.is_on() && !config.event_log.enabled {
                tracing::warn!("general_settings.alerting is on, but event_log.enabled is false: alerts are raised from the event log, so none will be sent");
            } else if alerting.is_on() {
                tracing::info!("general_settings.alerting is on: with Kafka, run `switchyard consume alerts` (once per cluster) to send alerts");
            }
            return Self::default();
        }
        let analytics = config.clickhouse.as_ref().map(|ch| {
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let (topics, ch, metrics, stopped) = (topics.clone(), ch.clone(), metrics.clone(), stopped);
            tokio::spawn(async move {
                if let Err(e) = analytics::run(topics, ch, metrics, stopped).await {
                    tracing::error!(error = %e, "the analytics consumer stopped");
                }
            });
            stop
        });
        Self {
            analytics,
            budgets: Some(budgets::InProcess::spawn(
                topics.clone(),
                keys.clone(),
                config.timezone.clone(),
                events.clone(),
            )),
            alerts: alerting
                .is_on()
                .then(|| {
                    alerts::InProcess::spawn(
                        topics.clone(),
                        alerting.clone(),
                        config.clickhouse.clone(),
                        metrics.clone(),
                    )
                    .inspect_err(|e| tracing::error!(error = %e, "the alerts consumer cannot start"))
                    .ok()
                })
                .flatten(),
            spend: Some(spend::InProcess::spawn(topics.clone(), config.clickhouse.clone(), memory, metrics)),
        }
    }

    /// Which run here, by name.
    pub fn names(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.budgets.is_some() {
            out.push(Name::Budgets.as_str());
        }
        if self.spend.is_some() {
            out.push(Name::Spend.as_str());
        }
        if self.analytics.is_some() {
            out.push(Name::Analytics.as_str());
        }
        if self.alerts.is_some() {
            out.push(Name::Alerts.as_str());
        }
        out
    }
}

/// The longest one ClickHouse round trip may take: a server that stops answering without
/// closing the connection must not hold the consumer forever (it retries instead).
pub const CLICKHOUSE_DEADLINE: Duration = Duration::from_secs(30);

pub async fn with_deadline<T>(work: impl std::future::Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(CLICKHOUSE_DEADLINE, work)
        .await
        .map_err(|_| format!("ClickHouse did not answer within {}s", CLICKHOUSE_DEADLINE.as_secs()))
}

/// Sleeps `d`; true when `stop` turned true meanwhile.
pub async fn sleep_or_stop(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}
