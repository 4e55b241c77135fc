//! The event log: every request and response, and deployment health changes, published off the
//! request path.
//!
//! Handlers give events to an [`EventSink`], which puts them on a bounded queue and returns. A
//! publisher thread takes them off in batches (it polls, so a request never wakes it up) and
//! writes them either to the embedded [`log::SegmentLog`]
//! (no Kafka configured) or to Kafka ([`kafka`]), where events that cannot be delivered go to a
//! spool (the same log format) and are re-sent, in order, when the broker is back. When the
//! queue is full, the handler writes the event to the log or spool itself: nothing is dropped.

pub mod kafka;
pub mod log;
pub mod tail;
pub mod types;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus::{IntCounter, IntGauge, Registry};

pub use crate::config::{EventLogConfig, FsyncPolicy, KafkaConfig};
use log::SegmentLog;
pub use types::{DeploymentEvent, Envelope, Event, RequestEvent, ResponseEvent};

/// Counters of the event pipeline, registered with the gateway's Prometheus registry.
#[derive(Clone)]
pub struct EventMetrics {
    pub queue_depth: IntGauge,
    pub spooled: IntCounter,
    pub spool_pending: IntGauge,
    pub sent: IntCounter,
    pub failed: IntCounter,
}

impl EventMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            queue_depth: IntGauge::new("switchyard_event_queue_depth", "Events waiting in the publisher queue")?,
            spooled: IntCounter::new(
                "switchyard_events_spooled_total",
                "Events written to the disk spool (broker down or queue full)",
            )?,
            spool_pending: IntGauge::new("switchyard_event_spool_pending", "Spooled events not yet delivered")?,
            sent: IntCounter::new("switchyard_events_sent_total", "Events delivered to the event log")?,
            failed: IntCounter::new("switchyard_events_failed_total", "Event deliveries that failed (then spooled)")?,
        };
        registry.register(Box::new(m.queue_depth.clone()))?;
        registry.register(Box::new(m.spooled.clone()))?;
        registry.register(Box::new(m.spool_pending.clone()))?;
        registry.register(Box::new(m.sent.clone()))?;
        registry.register(Box::new(m.failed.clone()))?;
        Ok(m)
    }
}

/// What `/health/readiness` reports of the event log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EventLogState {
    pub backend: &'static str,
    /// `connected`, or `spooling` while the broker is unreachable.
    pub state: &'static str,
    pub queue_depth: i64,
    pub spool_pending: i64,
}

struct Shared {
    /// The embedded log, or the Kafka spool: where the handler writes when the queue is full.
    overflow: Mutex<SegmentLog>,
    metrics: EventMetrics,
    /// Kafka only: events go to the spool while it holds undelivered ones (keeps them in order).
    spooling: AtomicBool,
    /// The bounded queue between handlers and the publisher.
    queue: Mutex<Vec<Event>>,
    capacity: usize,
    kafka: bool,
    /// Set at shutdown: the publisher finishes the queue and stops; later events go to disk.
    closing: AtomicBool,
    /// `event_log.enabled: false`: publishing does nothing.
    disabled: bool,
}

/// The handle handlers publish through; cheap to clone.
#[derive(Clone)]
pub struct EventSink {
    shared: Arc<Shared>,
    gateway_id: Arc<str>,
    publisher: Arc<Mutex<Option<JoinHandle<()>>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum EventLogError {
    #[error("cannot open the event log at {path}: {source}")]
    Open { path: String, source: std::io::Error },
    #[error("cannot start the Kafka producer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("cannot start the event publisher thread: {0}")]
    Thread(std::io::Error),
}

impl EventSink {
    /// Opens the log (or spool) and starts the publisher thread.
    pub fn start(config: &EventLogConfig, metrics: EventMetrics) -> Result<Self, EventLogError> {
        let dir = match config.kafka {
            Some(_) => config.path.join("spool"),
            None => config.path.clone(),
        };
        let log = SegmentLog::open(&dir, config.segment_bytes, config.fsync)
            .map_err(|source| EventLogError::Open { path: dir.display().to_string(), source })?;
        let pending = log.pending();
        let shared = Arc::new(Shared {
            spooling: AtomicBool::new(config.kafka.is_some() && pending > 0),
            overflow: Mutex::new(log),
            metrics,
            queue: Mutex::new(Vec::with_capacity(1024)),
            capacity: config.queue_capacity.max(1),
            kafka: config.kafka.is_some(),
            closing: AtomicBool::new(false),
            disabled: !config.enabled,
        });
        if !config.enabled {
            tracing::warn!("event_log.enabled is false: no request or response events are published");
        }
        if config.kafka.is_some() {
            shared.metrics.spool_pending.set(pending as i64);
            if pending > 0 {
                tracing::info!(pending, "the event spool holds undelivered events; sending them first");
            }
        }
        let backend = match &config.kafka {
            Some(k) => Backend::Kafka(kafka::KafkaBackend::new(k, shared.clone())?),
            None => Backend::Embedded,
        };
        let thread_shared = shared.clone();
        let publisher = std::thread::Builder::new()
            .name("event-publisher".into())
            .spawn(move || run_publisher(backend, thread_shared))
            .map_err(EventLogError::Thread)?;
        Ok(Self {
            shared,
            gateway_id: config.gateway_id.clone().into(),
            publisher: Arc::new(Mutex::new(Some(publisher))),
        })
    }

    /// False when `event_log.enabled` is false (callers can skip building events).
    pub fn enabled(&self) -> bool {
        !self.shared.disabled
    }

    pub fn gateway_id(&self) -> &str {
        &self.gateway_id
    }

    /// Queues an event; never waits. When the queue is full the event goes straight to disk.
    pub fn publish(&self, event: Event) {
        if self.shared.disabled {
            return;
        }
        if self.shared.closing.load(Ordering::Acquire) {
            self.shared.write_to_disk(&[event]);
            return;
        }
        let overflow = match self.shared.queue.lock() {
            Ok(mut queue) if queue.len() < self.shared.capacity => {
                queue.push(event);
                None
            }
            Ok(_) | Err(_) => Some(event),
        };
        if let Some(event) = overflow {
            self.shared.write_to_disk(&[event]);
        }
    }

    pub fn state(&self) -> EventLogState {
        let kafka = self.shared.kafka;
        EventLogState {
            backend: if self.shared.disabled {
                "disabled"
            } else if kafka {
                "kafka"
            } else {
                "embedded"
            },
            state: if kafka && self.shared.spooling.load(Ordering::Relaxed) { "spooling" } else { "connected" },
            queue_depth: self.shared.queue.lock().map(|q| q.len() as i64).unwrap_or(0),
            spool_pending: if kafka { self.shared.metrics.spool_pending.get() } else { 0 },
        }
    }

    /// Stops taking events, delivers (or spools) what is queued, and syncs the log to disk.
    /// Waits at most `timeout` for the publisher.
    pub fn shutdown(self, timeout: Duration) {
        let EventSink { publisher, shared, .. } = self;
        shared.closing.store(true, Ordering::Release);
        let handle = publisher.lock().ok().and_then(|mut p| p.take());
        if let Some(handle) = handle {
            let deadline = std::time::Instant::now() + timeout;
            while !handle.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if handle.is_finished() {
                let _ = handle.join();
            } else {
                tracing::warn!("the event publisher did not finish in time; queued events may be lost");
            }
        }
        let synced = match shared.overflow.lock() {
            Ok(mut log) => log.sync(),
            Err(_) => Ok(()),
        };
        if let Err(e) = synced {
            tracing::error!(error = %e, "cannot sync the event log");
        }
    }
}

impl Shared {
    /// Appends events to the embedded log or the spool.
    fn write_to_disk(&self, events: &[Event]) {
        self.append_json(events.iter().map(Event::to_json));
    }

    /// Syncs the log if the fsync policy says it is time.
    fn flush_log(&self) {
        let flushed = match self.overflow.lock() {
            Ok(mut log) => log.flush(),
            Err(_) => Ok(()),
        };
        if let Err(e) = flushed {
            tracing::error!(error = %e, "cannot flush the event log");
        }
    }

    /// Appends already-serialized events to the spool (deliveries that failed).
    fn spool_json(&self, events: Vec<Vec<u8>>) {
        self.append_json(events.into_iter());
    }

    fn append_json(&self, events: impl Iterator<Item = Vec<u8>>) {
        let Ok(mut log) = self.overflow.lock() else {
            tracing::error!("event log lock poisoned; events lost");
            self.metrics.failed.inc();
            return;
        };
        for json in events {
            if let Err(e) = log.append(&json) {
                tracing::error!(error = %e, "cannot write an event to the event log");
                self.metrics.failed.inc();
                continue;
            }
            if self.kafka {
                self.metrics.spooled.inc();
            } else {
                self.metrics.sent.inc();
            }
        }
        if let Err(e) = log.flush() {
            tracing::error!(error = %e, "cannot flush the event log");
        }
        if self.kafka {
            self.spooling.store(true, Ordering::Relaxed);
            self.metrics.spool_pending.set(log.pending() as i64);
        }
    }
}

enum Backend {
    Embedded,
    Kafka(kafka::KafkaBackend),
}

/// How often a busy publisher looks at the queue, and an idle one.
const POLL_BUSY: Duration = Duration::from_millis(2);
const POLL_IDLE: Duration = Duration::from_millis(20);

/// The publisher thread: takes the queue in batches to the backend until the sink closes.
fn run_publisher(backend: Backend, shared: Arc<Shared>) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the event publisher runtime");
            return;
        }
    };
    runtime.block_on(async move {
        let kafka = match backend {
            Backend::Kafka(k) => Some(Arc::new(k)),
            Backend::Embedded => None,
        };
        if let Some(k) = &kafka {
            // Topics are created at startup (or, if the broker is down, once it is back).
            k.ensure_topics().await;
            tokio::spawn(k.clone().drain_loop());
        }
        let mut deliveries = tokio::task::JoinSet::new();
        let mut idle_rounds = 0u32;
        loop {
            let batch = match shared.queue.lock() {
                Ok(mut queue) => std::mem::take(&mut *queue),
                Err(_) => Vec::new(),
            };
            shared.metrics.queue_depth.set(batch.len() as i64);
            while deliveries.try_join_next().is_some() {}
            if batch.is_empty() {
                if shared.closing.load(Ordering::Acquire) {
                    break;
                }
                if kafka.is_none() {
                    // Idle: sync what the fsync interval still owes the disk.
                    shared.flush_log();
                }
                idle_rounds = idle_rounds.saturating_add(1);
                tokio::time::sleep(if idle_rounds < 50 { POLL_BUSY } else { POLL_IDLE }).await;
                continue;
            }
            idle_rounds = 0;
            match &kafka {
                None => shared.write_to_disk(&batch),
                Some(k) => k.publish(batch, &mut deliveries),
            }
        }
        // Every delivery settles (acknowledged, or spooled) within message.timeout.ms.
        while deliveries.join_next().await.is_some() {}
        if let Some(k) = &kafka {
            k.shutdown();
        }
    });
}
