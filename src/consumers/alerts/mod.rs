//! The alerts consumer: LiteLLM's alerting (`general_settings.alerting`, `alert_types`, …;
//! `crate::config::AlertingConfig`) on the event log.
//!
//! Two halves, each with its own position:
//! - [`raise`]: `<prefix>.events` and `<prefix>.deployments` → the rules ([`rules`],
//!   [`report`]) → alert records on `<prefix>.alerts` ([`alert`], schema
//!   `schemas/events/alert.json`). Budget alerts are raised by the gateway that settled the
//!   call (`budget_alert` records, `crate::budget::alert`).
//! - [`deliver`]: every record of `<prefix>.alerts` → dedup ([`dedup`]) → Slack and webhooks
//!   ([`payload`]), retried until delivered → ClickHouse `alerts` ([`store`], when
//!   `analytics.clickhouse` is configured) → commit.
//!
//! `switchyard consume alerts` runs both (with Kafka, once per cluster); on the embedded log
//! the gateway runs them itself when `general_settings.alerting` names slack or webhook.

pub mod alert;
pub mod dedup;
pub mod deliver;
pub mod payload;
pub mod raise;
pub mod report;
pub mod rules;
pub mod store;

use tokio::sync::{oneshot, watch};

use super::ConsumerMetrics;
use crate::config::{AlertingConfig, ClickHouseConfig};
use crate::events::topics::{Follower, Topics};

/// The consumer's label in the metrics.
pub const NAME: &str = "alerts";

/// The consumer's three followers, made before it runs: on the embedded log their positions
/// are set when they are made, so a gateway that makes them before it serves raises alerts
/// about every call it serves, also on a first start (at the topics' end).
pub struct Followers {
    alerts: Follower,
    events: (Follower, Follower),
}

impl Followers {
    pub fn open(topics: &Topics) -> Result<Self, String> {
        let alerts = deliver::follow(topics).map_err(|e| format!("cannot follow the alerts: {e}"))?;
        let events = raise::follow(topics).map_err(|e| format!("cannot follow the events: {e}"))?;
        Ok(Self { alerts, events })
    }
}

/// Runs both halves until `stop` turns true. The rules read only once the deliverer has its
/// position (Kafka sets it at the first read), so a first start (at the end of
/// `<prefix>.alerts`) misses none of their alerts.
pub async fn run(
    topics: Topics,
    config: AlertingConfig,
    clickhouse: Option<ClickHouseConfig>,
    metrics: ConsumerMetrics,
    stop: watch::Receiver<bool>,
    followers: Followers,
) -> Result<(), String> {
    let (ready, deliverer_ready) = oneshot::channel();
    let Followers { alerts, events } = followers;
    let deliver =
        deliver::run(topics.clone(), config.clone(), clickhouse, metrics.clone(), stop.clone(), ready, alerts);
    let raise = async move {
        if deliverer_ready.await.is_err() {
            return Ok(());
        }
        raise::run(topics, config, metrics, stop, events).await
    };
    let (delivered, raised) = tokio::join!(deliver, raise);
    delivered.and(raised)
}

/// The consumer as a task of the gateway (embedded log), stopped when dropped.
pub struct InProcess {
    stop: watch::Sender<bool>,
}

impl InProcess {
    /// Makes the followers here, then runs the consumer on the current runtime.
    pub fn spawn(
        topics: Topics,
        config: AlertingConfig,
        clickhouse: Option<ClickHouseConfig>,
        metrics: ConsumerMetrics,
    ) -> Result<Self, String> {
        let followers = Followers::open(&topics)?;
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(async move {
            if let Err(e) = run(topics, config, clickhouse, metrics, stopped, followers).await {
                tracing::error!(error = %e, "the alerts consumer stopped");
            }
        });
        Ok(Self { stop })
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}
