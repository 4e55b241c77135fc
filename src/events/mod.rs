//! The event log: every request and response, and deployment health changes, published off the
//! request path.
//!
//! # How an event travels
//!
//! Handlers give events to an [`EventSink`]. [`EventSink::publish`] puts the event on a bounded
//! in-memory queue and returns: no disk or network I/O, no waiting for the publisher (each
//! publishing thread has a shard of the queue, whose lock the publisher takes only to empty it;
//! a sequence counter keeps publish order across shards).
//! A publisher thread takes the whole queue every 2 ms while events come (every 20 ms when idle),
//! in publish order, and
//! - with no Kafka configured, appends them to the embedded [`log::SegmentLog`]: one `write` per
//!   round, synced as `event_log.fsync` says;
//! - with Kafka, hands them to the producer, or appends them to the spool while the broker is
//!   down or behind, and sends the spool back in order ([`kafka`]: the two modes, the catch-up,
//!   and why a call's response event never reaches the topic before its request event).
//!
//! # What can be lost
//!
//! Delivery is at least once (a consumer de-duplicates on `event_id`), except for these cases,
//! each counted in `switchyard_events_dropped_total{reason}` and logged:
//! - `queue_full`: the queue already holds `event_log.queue_capacity` events (65,536 by default;
//!   events are about 1 KB in memory, more with prompts stored). It fills only when the
//!   publisher cannot keep up with the disk; the handler neither waits nor writes instead.
//! - `rejected`: the broker refuses an event for good (larger than its `message.max.bytes`).
//! - `write_error`: the log or spool cannot be written (a full disk).
//! - `shutdown_timeout`: the shutdown's deadline passed while events were still only in memory.
//!
//! At shutdown (SIGTERM), the publisher takes what is queued, gives what is in flight to Kafka up
//! to three quarters of the timeout (only while the broker answers), purges the rest from the
//! producer into the spool, and syncs the log or spool. Events published after that (a stream
//! that ends late) are written directly.
//!
//! A crash of the process (kill -9, out of memory) loses what exists only in its memory:
//! - the queue: what was published since the publisher's last round, at most 2 ms of traffic
//!   under load (20 ms when idle);
//! - with Kafka, events handed to the producer and not yet acknowledged, and events waiting
//!   behind an unacknowledged event of their key (`switchyard_event_kafka_in_flight`): normally
//!   `linger.ms` (5 ms) plus a broker round trip of traffic. When the broker stops answering,
//!   new events go to the spool after [`kafka::STALL`] (1 s), so at most that much traffic (and
//!   never more than `queue.buffering.max.messages`, 10,000) waits in memory until the broker
//!   answers again or the gateway shuts down.
//!
//! What reached the log or the spool survives a crash of the process (after each round it is in
//! the operating system's cache); a crash of the machine loses what `event_log.fsync` had not
//! synced yet (up to 1 s with the default). The README gives measured numbers.

pub mod kafka;
pub mod log;
mod queue;
pub mod tail;
pub mod topics;
pub mod types;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

pub use crate::config::{EventLogConfig, FsyncPolicy, KafkaConfig};
use log::SegmentLog;
use queue::Queue;
pub use types::{DeploymentEvent, Envelope, Event, RequestEvent, ResponseEvent};

/// Counters of the event pipeline, registered with the gateway's Prometheus registry.
#[derive(Clone)]
pub struct EventMetrics {
    pub queue_depth: IntGauge,
    pub spooled: IntCounter,
    pub spool_pending: IntGauge,
    pub sent: IntCounter,
    pub failed: IntCounter,
    /// Events given up on, by `reason`: `queue_full` (the queue was at `queue_capacity`),
    /// `rejected` (the broker refuses the event for good, e.g. too large), `write_error` (the log
    /// or spool cannot be written), `shutdown_timeout` (still in memory when the shutdown timed
    /// out).
    pub dropped: IntCounterVec,
    /// Events handed to Kafka (or waiting behind an earlier event of their key) and not yet
    /// acknowledged: what a crash of the process would lose on top of the queue.
    pub in_flight: IntGauge,
}

/// The `reason` label values of `switchyard_events_dropped_total`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum DropReason {
    QueueFull,
    Rejected,
    WriteError,
    ShutdownTimeout,
}

impl DropReason {
    fn metric_label(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::Rejected => "rejected",
            Self::WriteError => "write_error",
            Self::ShutdownTimeout => "shutdown_timeout",
        }
    }
}

impl EventMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            queue_depth: IntGauge::new("switchyard_event_queue_depth", "Events waiting in the publisher queue")?,
            spooled: IntCounter::new(
                "switchyard_events_spooled_total",
                "Events written to the disk spool (broker down, slow, or the spool not yet caught up)",
            )?,
            spool_pending: IntGauge::new("switchyard_event_spool_pending", "Spooled events not yet delivered")?,
            sent: IntCounter::new("switchyard_events_sent_total", "Events delivered to the event log")?,
            failed: IntCounter::new("switchyard_events_failed_total", "Event deliveries that failed (then spooled)")?,
            dropped: IntCounterVec::new(
                Opts::new("switchyard_events_dropped_total", "Events given up on (lost), by reason"),
                &["reason"],
            )?,
            in_flight: IntGauge::new(
                "switchyard_event_kafka_in_flight",
                "Events handed to Kafka (or waiting behind an earlier event of their key), not yet acknowledged",
            )?,
        };
        for reason in [DropReason::QueueFull, DropReason::Rejected, DropReason::WriteError, DropReason::ShutdownTimeout]
        {
            m.dropped.with_label_values(&[reason.metric_label()]);
        }
        registry.register(Box::new(m.queue_depth.clone()))?;
        registry.register(Box::new(m.spooled.clone()))?;
        registry.register(Box::new(m.spool_pending.clone()))?;
        registry.register(Box::new(m.sent.clone()))?;
        registry.register(Box::new(m.failed.clone()))?;
        registry.register(Box::new(m.dropped.clone()))?;
        registry.register(Box::new(m.in_flight.clone()))?;
        Ok(m)
    }

    fn dropped(&self, reason: DropReason, n: u64) {
        self.dropped.with_label_values(&[reason.metric_label()]).inc_by(n);
    }
}

/// What `/health/readiness` reports of the event log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EventLogState {
    pub backend: &'static str,
    /// `connected`, or `spooling` while events go to the spool (broker unreachable or slow, or
    /// the spool still being sent).
    pub state: &'static str,
    pub queue_depth: i64,
    pub spool_pending: i64,
    /// Events given up on since start (`switchyard_events_dropped_total`, all reasons).
    pub dropped: u64,
}

/// What the handlers and the publisher thread share.
struct Shared {
    /// Handlers put events here; the publisher takes them off in batches.
    queue: Queue,
    metrics: EventMetrics,
    /// Kafka only: new events go to the spool, not the broker.
    spooling: AtomicBool,
    kafka: bool,
    /// Set at shutdown: the publisher delivers what it holds (or spools it) and stops.
    closing: AtomicBool,
    /// Set with `closing`: when the publisher must be done.
    deadline: Mutex<Option<Instant>>,
    /// After the publisher has stopped: its log, where the rare event published after shutdown
    /// (a stream that ended late) is written at once, and whether it is the Kafka spool.
    closed: Mutex<Option<SegmentLog>>,
    is_closed: AtomicBool,
    /// When a dropped event was last logged (seconds since start), so drops are logged once a second.
    last_drop_log: AtomicU64,
    started: Instant,
    /// The embedded log only: what sees each event as it is written ([`EventSink::tap`]).
    tap: Mutex<Option<Box<dyn Tap>>>,
}

impl Shared {
    /// A queue of `queue_capacity`; with Kafka, spooling until the broker has answered.
    fn new(queue_capacity: usize, kafka: bool, metrics: EventMetrics) -> Self {
        Self {
            queue: Queue::new(queue_capacity),
            metrics,
            spooling: AtomicBool::new(kafka),
            kafka,
            closing: AtomicBool::new(false),
            deadline: Mutex::new(None),
            closed: Mutex::new(None),
            is_closed: AtomicBool::new(false),
            last_drop_log: AtomicU64::new(0),
            started: Instant::now(),
            tap: Mutex::new(None),
        }
    }
}

/// Sees, on the embedded log's publisher thread, each event as it is written: an in-process
/// consumer fed this way need not read the log back (and parse it again). Must be quick and
/// never block; it holds up the publisher.
pub trait Tap: Send {
    /// `event` was appended to the log at `offset`.
    fn appended(&mut self, offset: u64, event: &Event);
    /// Everything given to [`Tap::appended`] is now in the operating system's hands (what a
    /// follower of the log could read). False detaches the tap for good (its reader is gone,
    /// or too far behind: it reads the log instead).
    fn flushed(&mut self) -> bool;
}

/// The handle handlers publish through; cheap to clone.
#[derive(Clone)]
pub struct EventSink {
    /// None with `event_log.enabled: false`.
    shared: Option<Arc<Shared>>,
    gateway_id: Arc<str>,
    publisher: Arc<Mutex<Option<JoinHandle<SegmentLog>>>>,
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
    /// Opens the log (or spool) and starts the publisher thread. With `enabled: false`, does
    /// neither (no directory is created).
    pub fn start(config: &EventLogConfig, metrics: EventMetrics) -> Result<Self, EventLogError> {
        let gateway_id: Arc<str> = config.gateway_id.clone().into();
        if !config.enabled {
            tracing::warn!("event_log.enabled is false: no request or response events are published");
            return Ok(Self { shared: None, gateway_id, publisher: Arc::new(Mutex::new(None)) });
        }
        let dir = match config.kafka {
            Some(_) => config.path.join("spool"),
            None => config.path.clone(),
        };
        let log = SegmentLog::open(&dir, config.segment_bytes, config.fsync)
            .map_err(|source| EventLogError::Open { path: dir.display().to_string(), source })?;
        let shared = Arc::new(Shared::new(config.queue_capacity, config.kafka.is_some(), metrics));
        let thread_shared = shared.clone();
        let publisher = match &config.kafka {
            Some(k) => {
                let publisher = kafka::Publisher::new(k, shared.clone(), log)?;
                std::thread::Builder::new().name("event-publisher".into()).spawn(move || publisher.run())
            }
            None => std::thread::Builder::new()
                .name("event-publisher".into())
                .spawn(move || run_embedded(&thread_shared, log)),
        }
        .map_err(EventLogError::Thread)?;
        Ok(Self { shared: Some(shared), gateway_id, publisher: Arc::new(Mutex::new(Some(publisher))) })
    }

    /// Gives `tap` every event the embedded log's publisher writes from now on (it replaces an
    /// earlier tap). False, and `tap` dropped, with Kafka or the log off.
    pub fn tap(&self, tap: Box<dyn Tap>) -> bool {
        match &self.shared {
            Some(shared) if !shared.kafka => {
                *shared.tap.lock().unwrap_or_else(PoisonError::into_inner) = Some(tap);
                true
            }
            _ => false,
        }
    }

    /// False when `event_log.enabled` is false (callers can skip building events).
    pub fn enabled(&self) -> bool {
        self.shared.is_some()
    }

    pub fn gateway_id(&self) -> &str {
        &self.gateway_id
    }

    /// Queues an event for the publisher thread and returns: no disk or network I/O, no waiting.
    /// At the queue's bound the event is dropped, counted and logged (see the module doc).
    pub fn publish(&self, event: Event) {
        let Some(shared) = &self.shared else { return };
        if shared.is_closed.load(Ordering::SeqCst) {
            shared.write_late(Some(event));
            return;
        }
        if let Err(event) = shared.queue.push(event) {
            shared.drop_events(DropReason::QueueFull, 1, Some(&event));
        }
        if shared.is_closed.load(Ordering::SeqCst) {
            // The sink closed while this event went in: the final sweep may have missed it.
            shared.write_late(None);
        }
    }

    pub fn state(&self) -> EventLogState {
        let Some(shared) = &self.shared else {
            return EventLogState {
                backend: "disabled",
                state: "connected",
                queue_depth: 0,
                spool_pending: 0,
                dropped: 0,
            };
        };
        let m = &shared.metrics;
        let dropped =
            [DropReason::QueueFull, DropReason::Rejected, DropReason::WriteError, DropReason::ShutdownTimeout]
                .iter()
                .map(|r| m.dropped.with_label_values(&[r.metric_label()]).get())
                .sum();
        EventLogState {
            backend: if shared.kafka { "kafka" } else { "embedded" },
            state: if shared.kafka && shared.spooling.load(Ordering::Relaxed) { "spooling" } else { "connected" },
            queue_depth: shared.queue.len() as i64,
            spool_pending: if shared.kafka { m.spool_pending.get() } else { 0 },
            dropped,
        }
    }

    /// Stops taking events, delivers what is queued or in flight (with Kafka, for at most about
    /// three quarters of `timeout`), writes whatever is left to the log or spool, and syncs it.
    /// Waits at most `timeout` for the publisher; if it is not done by then (a disk that does
    /// not answer), says how many events are lost.
    pub fn shutdown(self, timeout: Duration) {
        let EventSink { publisher, shared, .. } = self;
        let Some(shared) = shared else { return };
        let deadline = Instant::now() + timeout;
        *shared.deadline.lock().unwrap_or_else(PoisonError::into_inner) = Some(deadline);
        shared.closing.store(true, Ordering::SeqCst);
        let handle = publisher.lock().unwrap_or_else(PoisonError::into_inner).take();
        let Some(handle) = handle else { return };
        while !handle.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if !handle.is_finished() {
            let lost = shared.queue.len() as u64 + shared.metrics.in_flight.get().max(0) as u64;
            shared.metrics.dropped(DropReason::ShutdownTimeout, lost);
            tracing::error!(
                lost,
                ?timeout,
                "the event publisher did not finish in time: events it still held in memory are lost"
            );
            return;
        }
        match handle.join() {
            Ok(log) => {
                *shared.closed.lock().unwrap_or_else(PoisonError::into_inner) = Some(log);
                shared.is_closed.store(true, Ordering::SeqCst);
                // Whatever was published after the publisher's last sweep.
                shared.write_late(None);
            }
            Err(_) => tracing::error!("the event publisher panicked; events it held are lost"),
        }
    }
}

impl Shared {
    /// After shutdown: writes `event` and anything left in the queue to the log (or spool) at
    /// once, and syncs it. Only events published after shutdown get here.
    fn write_late(&self, event: Option<Event>) {
        let mut closed = self.closed.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(log) = closed.as_mut() else { return };
        let mut taken = Vec::new();
        self.queue.take_into(&mut taken);
        let events: Vec<Event> = taken.into_iter().map(|t| t.event).chain(event).collect();
        if events.is_empty() {
            return;
        }
        let mut buf = Vec::with_capacity(1024);
        for event in &events {
            buf.clear();
            if self.kafka {
                kafka::encode_spooled(event, &mut buf);
            } else {
                event.write_json(&mut buf);
            }
            self.append(log, &buf, Some(event));
        }
        if let Err(e) = log.sync() {
            tracing::error!(error = %e, "cannot sync the event log");
        }
    }

    /// Appends one record to the log (or spool), counting it.
    /// The offset it was written at; `None` (counted, logged) if it could not be.
    fn append(&self, log: &mut SegmentLog, record: &[u8], event: Option<&Event>) -> Option<u64> {
        match log.append(record) {
            Ok(offset) => {
                if self.kafka {
                    self.metrics.spooled.inc();
                } else {
                    self.metrics.sent.inc();
                }
                Some(offset)
            }
            Err(e) => {
                self.drop_events(DropReason::WriteError, 1, event);
                self.log_drop(|| tracing::error!(error = %e, dir = %log.dir().display(), "cannot write to the event log; events are lost"));
                None
            }
        }
    }

    /// Counts dropped events, and logs them (at most once a second).
    fn drop_events(&self, reason: DropReason, n: u64, example: Option<&Event>) {
        self.metrics.dropped(reason, n);
        self.log_drop(|| {
            let event_id = example.map(|e| e.envelope().event_id.as_str()).unwrap_or("");
            tracing::error!(
                reason = reason.metric_label(),
                n,
                event_id,
                "events dropped (switchyard_events_dropped_total)"
            );
        });
    }

    fn log_drop(&self, log: impl FnOnce()) {
        let now = self.started.elapsed().as_secs() + 1;
        let last = self.last_drop_log.load(Ordering::Relaxed);
        if now > last && self.last_drop_log.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            log();
        }
    }

    /// The shutdown deadline, once `closing` is set.
    fn deadline(&self) -> Instant {
        self.deadline
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(5))
    }
}

/// How often a busy publisher takes the queue, and an idle one (after `IDLE_AFTER` empty rounds).
/// Events wait in memory at most this long before the publisher writes or sends them.
const POLL_BUSY: Duration = Duration::from_millis(2);
const POLL_IDLE: Duration = Duration::from_millis(20);
const IDLE_AFTER: u32 = 50;

fn poll_interval(took: usize, idle_rounds: &mut u32) -> Duration {
    if took > 0 {
        *idle_rounds = 0;
    } else {
        *idle_rounds = idle_rounds.saturating_add(1);
    }
    if *idle_rounds < IDLE_AFTER {
        POLL_BUSY
    } else {
        POLL_IDLE
    }
}

/// The embedded log's publisher thread: takes the queue in batches and appends them until the
/// sink closes; returns the log, synced.
fn run_embedded(shared: &Shared, mut log: SegmentLog) -> SegmentLog {
    let mut batch = Vec::with_capacity(1024);
    let mut buf = Vec::with_capacity(4096);
    let mut idle_rounds = 0;
    loop {
        let closing = shared.closing.load(Ordering::SeqCst);
        shared.metrics.queue_depth.set(shared.queue.len() as i64);
        let took = shared.queue.take_into(&mut batch);
        let mut tap = shared.tap.lock().unwrap_or_else(PoisonError::into_inner);
        for taken in &batch {
            buf.clear();
            taken.event.write_json(&mut buf);
            let offset = shared.append(&mut log, &buf, Some(&taken.event));
            if let (Some(offset), Some(tap)) = (offset, tap.as_mut()) {
                tap.appended(offset, &taken.event);
            }
        }
        shared.queue.recycle(&mut batch);
        // Hands the batch to the OS, and syncs as the fsync policy says (also when idle).
        match log.flush() {
            Ok(()) => {
                if tap.as_mut().is_some_and(|tap| !tap.flushed()) {
                    *tap = None;
                }
            }
            Err(e) => shared.log_drop(|| tracing::error!(error = %e, "cannot flush the event log")),
        }
        drop(tap);
        if closing {
            break;
        }
        std::thread::sleep(poll_interval(took, &mut idle_rounds));
    }
    if let Err(e) = log.sync() {
        tracing::error!(error = %e, "cannot sync the event log");
    }
    log
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &std::path::Path, enabled: bool, queue_capacity: usize) -> EventLogConfig {
        EventLogConfig {
            enabled,
            kafka: None,
            path: dir.to_path_buf(),
            fsync: FsyncPolicy::Always,
            segment_bytes: 1 << 20,
            queue_capacity,
            gateway_id: "gw-test".into(),
        }
    }

    fn temp_dir() -> std::path::PathBuf {
        std::env::temp_dir().join(format!("switchyard-events-{}", uuid::Uuid::new_v4()))
    }

    fn metrics() -> EventMetrics {
        EventMetrics::register(&Registry::new()).unwrap()
    }

    fn event(n: usize) -> Event {
        Event::Deployment(Box::new(DeploymentEvent {
            envelope: Envelope::new("deployment", None, "gw-test"),
            deployment_id: format!("d{n}"),
            model_group: "g".into(),
            provider: "openai".into(),
            api_base: String::new(),
            change: "cooldown_left",
            reason: None,
            cooldown_until: None,
        }))
    }

    #[test]
    fn a_disabled_log_creates_nothing_on_disk() {
        let dir = temp_dir();
        let sink = EventSink::start(&config(&dir, false, 16), metrics()).unwrap();
        sink.publish(event(0));
        assert!(!sink.enabled());
        assert_eq!(sink.state().backend, "disabled");
        sink.shutdown(Duration::from_secs(1));
        assert!(!dir.exists(), "no event log directory when the log is off");
    }

    /// With the publisher not taking events, a full queue refuses more without touching the
    /// disk from the publishing thread, and counts what it refused.
    #[test]
    fn a_full_queue_costs_the_publisher_no_disk_io_and_counts_what_it_refuses() {
        let dir = temp_dir();
        let log = SegmentLog::open(&dir, 1 << 20, FsyncPolicy::Always).unwrap();
        let m = metrics();
        // A sink whose publisher has not started: nothing takes events off the queue.
        let shared = Arc::new(Shared::new(2, false, m.clone()));
        let sink = EventSink { shared: Some(shared.clone()), gateway_id: "gw-test".into(), publisher: Arc::default() };
        for n in 0..5 {
            sink.publish(event(n));
        }
        assert_eq!(log::read_records(&dir, 0, 100).unwrap().len(), 0, "the publishing thread wrote nothing");
        assert_eq!(sink.state().queue_depth, 2);
        assert_eq!(m.dropped.with_label_values(&["queue_full"]).get(), 3);
        assert_eq!(sink.state().dropped, 3);
        // The publisher takes the queue as soon as it runs.
        let publisher = std::thread::spawn(move || run_embedded(&shared, log));
        *sink.publisher.lock().unwrap() = Some(publisher);
        sink.shutdown(Duration::from_secs(5));
        assert_eq!(log::read_records(&dir, 0, 100).unwrap().len(), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn shutdown_writes_everything_published_and_what_comes_after_it() {
        let dir = temp_dir();
        let m = metrics();
        let sink = EventSink::start(&config(&dir, true, 1000), m.clone()).unwrap();
        let late = sink.clone();
        // Three keys, published from two threads: each key's events stay in order.
        let other = sink.clone();
        let thread = std::thread::spawn(move || (0..50).for_each(|n| other.publish(keyed(n % 3, n))));
        (50..100).for_each(|n| sink.publish(keyed(n % 3, n)));
        thread.join().unwrap();
        sink.shutdown(Duration::from_secs(5));
        // A stream that ends after the shutdown still leaves its event.
        late.publish(keyed(0, 100));
        let mut seen: Vec<(String, usize)> = log::read_records(&dir, 0, 1000)
            .unwrap()
            .iter()
            .map(|(_, json)| match Event::from_json(json).unwrap() {
                Event::Deployment(d) => (d.deployment_id, d.model_group.parse().unwrap()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(seen.last(), Some(&("d0".to_string(), 100)));
        for key in ["d0", "d1", "d2"] {
            let of_key: Vec<usize> = seen.iter().filter(|(k, _)| k == key).map(|(_, n)| *n).collect();
            let by_thread =
                |lo: usize, hi: usize| of_key.iter().copied().filter(|n| (lo..hi).contains(n)).collect::<Vec<_>>();
            for (lo, hi) in [(0, 50), (50, 100)] {
                let mut sorted = by_thread(lo, hi);
                sorted.sort_unstable();
                assert_eq!(by_thread(lo, hi), sorted, "{key}: each thread's events of a key stay in order");
            }
        }
        seen.sort_unstable_by_key(|(_, n)| *n);
        assert_eq!(seen.iter().map(|(_, n)| *n).collect::<Vec<_>>(), (0..=100).collect::<Vec<_>>());
        assert_eq!(m.sent.get(), 101);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A deployment event with key `d<key>` and `n` in its model_group.
    fn keyed(key: usize, n: usize) -> Event {
        let Event::Deployment(mut d) = event(key) else { unreachable!() };
        d.model_group = n.to_string();
        Event::Deployment(d)
    }
}
