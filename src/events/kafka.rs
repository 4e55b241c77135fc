//! Publishing to Kafka with rdkafka (its bundled librdkafka): one `BaseProducer`, owned by the
//! publisher thread, which serves its delivery reports (a callback) between rounds; batched
//! (`linger.ms` 5), lz4-compressed, idempotent, keyed by request id so a call's request and
//! response events share a partition. Topic names are built once.
//!
//! The publisher is in one of two modes:
//! - **live**: new events go to the producer;
//! - **spooling**: new events are appended to the spool (a [`SegmentLog`] under
//!   `<path>/spool`), and the spool is sent from a cursor ([`Reader`]), in order, as fast as the
//!   broker acknowledges it: at most [`DRAIN_WINDOW`] unacknowledged at a time, one (a probe)
//!   for the first second after going to spooling or after a failure. When the cursor reaches
//!   the end of the spool, everything spooled has been handed to the producer ahead of any new
//!   event, and the publisher goes live again, under load too. The spool's commit point follows
//!   the acknowledgements (written down every 200 ms); a failure sends it again from there.
//!
//! It goes from live to spooling when a delivery fails (the failed event is spooled), when the
//! producer's queue is full, when the broker has acknowledged nothing for [`STALL`] while events
//! wait, and at start until the topics exist.
//!
//! **Order per key.** An event is handed to the producer only when no earlier event with the
//! same key is unacknowledged; until then it waits behind it, in memory. If the earlier one fails,
//! both go to the spool, in their order. So a call's response event never reaches the topic
//! before its request event, across failures and restarts (its first copy: delivery is at least
//! once, and a spool sent again can repeat events that were acknowledged). A response is the
//! last event of its key, so it is not tracked while in flight.
//!
//! **Idempotence and timeouts.** `enable.idempotence` is on, and `message.timeout.ms` is 0
//! (never): a message that times out leaves a gap in the producer's sequence, after which
//! librdkafka bumps its epoch; Kafka and Redpanda accept that, tansu 0.6 does not (its sqlite
//! storage panics in `idempotent_message_check` and the broker takes no more produce requests).
//! STALL notices a broker that does not answer instead, and what the producer holds waits for it
//! (or is purged into the spool at shutdown). Both are producer properties a config can change.
//!
//! The spool's records carry their route (topic, key, last-of-key) in front of the JSON, so
//! sending them does not parse them; spools written before this format (plain JSON) are still
//! read.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig};
use rdkafka::util::Timeout;

use super::log::{Reader, Record, SegmentLog};
use super::{poll_interval, DropReason, Event, KafkaConfig, Shared};

/// After a failure, how long the spool waits before it tries the broker again (with one event).
const DRAIN_RETRY: Duration = Duration::from_secs(1);
/// Spooled events handed to the producer and not yet acknowledged, at most.
pub const DRAIN_WINDOW: usize = 5000;
/// Live: when the broker has acknowledged nothing for this long while events wait, new events
/// go to the spool (it bounds how many events sit only in memory when a broker hangs).
pub const STALL: Duration = Duration::from_secs(1);
/// How often the spool's progress is written down (a restart re-sends at most this much).
const COMMIT_EVERY: Duration = Duration::from_millis(200);
/// At start, how long the publisher waits for the topics before it spools.
const TOPICS_WAIT: Duration = Duration::from_secs(3);

/// The base client settings: the user's `producer` properties win.
pub fn client_config(k: &KafkaConfig) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &k.bootstrap_servers)
        // No duplicates from the producer's own retries, and no reordering within a partition.
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        // Never time a message out: a timeout leaves a gap in the idempotent producer's
        // sequence, and the producer then bumps its epoch, which Kafka and Redpanda accept but
        // tansu 0.6 does not (its storage panics and takes no more produce requests). A broker
        // that does not answer is noticed by STALL instead: new events then go to the spool,
        // while those already handed over wait in the producer until it answers (or, at
        // shutdown, are purged and spooled).
        .set("message.timeout.ms", "0")
        // Bounds what can wait in memory for a broker that does not answer; beyond it events go
        // to the spool at once.
        .set("queue.buffering.max.messages", "10000")
        .set("socket.timeout.ms", "5000")
        .set("reconnect.backoff.max.ms", "1000");
    for (key, value) in &k.producer {
        cfg.set(key, value);
    }
    cfg
}

/// The two topics events go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topic {
    Events = 0,
    Deployments = 1,
}

/// Where an event goes, and whether it is the last event of its key (a call's response: no
/// event waits behind it, so its key is not tracked while it is in flight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Route {
    topic: Topic,
    last: bool,
}

impl Route {
    fn of(event: &Event) -> Self {
        match event {
            Event::Request(_) => Self { topic: Topic::Events, last: false },
            Event::Response(_) => Self { topic: Topic::Events, last: true },
            Event::Deployment(_) => Self { topic: Topic::Deployments, last: false },
        }
    }

    fn mark(self) -> u8 {
        match (self.topic, self.last) {
            (Topic::Events, false) => b'E',
            (Topic::Events, true) => b'L',
            (Topic::Deployments, _) => b'D',
        }
    }

    fn from_mark(mark: u8) -> Option<Self> {
        match mark {
            b'E' => Some(Self { topic: Topic::Events, last: false }),
            b'L' => Some(Self { topic: Topic::Events, last: true }),
            b'D' => Some(Self { topic: Topic::Deployments, last: false }),
            _ => None,
        }
    }
}

/// Writes a spool record, `<E|L|D><key length>:<key><json>`, to `out`; returns where the JSON
/// starts. (`E`: the events topic; `L`: the same, the last event of its key; `D`: deployments.)
pub(super) fn encode_spooled(event: &Event, out: &mut Vec<u8>) -> usize {
    let json_at = route_prefix(Route::of(event), super::queue::key(event).as_bytes(), out);
    event.write_json(out);
    json_at
}

fn route_prefix(route: Route, key: &[u8], out: &mut Vec<u8>) -> usize {
    out.push(route.mark());
    let _ = write!(out, "{}:", key.len());
    out.extend_from_slice(key);
    out.len()
}

/// A spool record read back.
struct Spooled<'a> {
    route: Route,
    key: Cow<'a, [u8]>,
    json: &'a [u8],
}

fn decode_spooled(record: &[u8]) -> Option<Spooled<'_>> {
    let first = *record.first()?;
    if first == b'{' {
        return decode_legacy(record);
    }
    let route = Route::from_mark(first)?;
    let colon = record.iter().position(|b| *b == b':')?;
    let len: usize = std::str::from_utf8(&record[1..colon]).ok()?.parse().ok()?;
    let key = record.get(colon + 1..colon + 1 + len)?;
    let json = record.get(colon + 1 + len..)?;
    Some(Spooled { route, key: Cow::Borrowed(key), json })
}

/// Spools written before records carried their route: plain JSON, routed by its fields.
fn decode_legacy(json: &[u8]) -> Option<Spooled<'_>> {
    let fields = super::types::RouteFields::of(json)?;
    let (route, key) = match (fields.kind.as_str(), fields.deployment_id) {
        ("deployment", Some(id)) => (Route { topic: Topic::Deployments, last: false }, id),
        (kind, _) => (Route { topic: Topic::Events, last: kind == "response" }, fields.request_id.unwrap_or_default()),
    };
    Some(Spooled { route, key: Cow::Owned(key.into_bytes()), json })
}

/// Where a message handed to the producer came from, packed into its delivery opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// From the queue.
    Live,
    /// From the spool, at this offset.
    Spool(u64),
}

/// A message's route and origin, packed into a `usize` (its delivery opaque).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tag {
    route: Route,
    origin: Origin,
}

impl Tag {
    fn pack(self) -> usize {
        let (spool, offset) = match self.origin {
            Origin::Live => (0, 0),
            Origin::Spool(offset) => (4, offset as usize),
        };
        (offset << 3) | spool | (usize::from(self.route.last) << 1) | self.route.topic as usize
    }

    fn unpack(tag: usize) -> Self {
        let topic = if tag & 1 == 1 { Topic::Deployments } else { Topic::Events };
        let origin = if tag & 4 == 4 { Origin::Spool((tag >> 3) as u64) } else { Origin::Live };
        Self { route: Route { topic, last: tag & 2 == 2 }, origin }
    }
}

/// A delivery report, as the callback saw it.
struct Outcome {
    tag: usize,
    key: Box<[u8]>,
    /// The error, and the payload when it must be spooled (a live event).
    error: Option<(RDKafkaErrorCode, Vec<u8>)>,
}

/// The producer's context: collects delivery reports while the publisher polls.
#[derive(Default)]
struct Deliveries {
    outcomes: Mutex<Vec<Outcome>>,
    /// Callbacks run (deliveries and errors): tells the publisher whether a poll served anything.
    served: AtomicU64,
}

impl ClientContext for Deliveries {
    fn error(&self, error: KafkaError, reason: &str) {
        self.served.fetch_add(1, Ordering::Relaxed);
        match error.rdkafka_error_code() {
            // A broker that went away: librdkafka reconnects, and STALL decides when to spool.
            Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown) => {
                tracing::debug!(error = %error, reason, "Kafka producer error")
            }
            _ => tracing::warn!(error = %error, reason, "Kafka producer error"),
        }
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, tag: usize) {
        self.served.fetch_add(1, Ordering::Relaxed);
        let outcome = match result {
            Ok(message) => Outcome { tag, key: message.key().unwrap_or_default().into(), error: None },
            Err((error, message)) => {
                let code = error.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
                let payload = match Tag::unpack(tag).origin {
                    Origin::Live => message.payload().unwrap_or_default().to_vec(),
                    Origin::Spool(_) => Vec::new(),
                };
                Outcome { tag, key: message.key().unwrap_or_default().into(), error: Some((code, payload)) }
            }
        };
        self.outcomes.lock().unwrap_or_else(PoisonError::into_inner).push(outcome);
    }
}

/// Errors that sending again cannot fix: the event is dropped (and counted), not spooled.
fn permanent(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::MessageBatchTooLarge
            | RDKafkaErrorCode::InvalidRecord
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Live,
    Spooling,
}

/// An event waiting behind an earlier, unacknowledged event of its key.
struct Held {
    route: Route,
    origin: Origin,
    /// The spool record (route, then JSON).
    record: Vec<u8>,
    json_at: usize,
}

/// Sending the spool: a cursor, and which of the records it has handed out are acknowledged.
struct Drain {
    reader: Reader,
    payload: Vec<u8>,
    /// Everything before this offset is acknowledged (the spool's commit point).
    base: u64,
    /// From `base` on, for each record read: acknowledged (or skipped) yet?
    acked: VecDeque<bool>,
    /// Read, and not yet acknowledged or failed (in the producer, or held behind their key).
    outstanding: usize,
    /// How many may be outstanding: one (a probe) after a failure, then DRAIN_WINDOW.
    window: usize,
    /// A delivery failed: read nothing more; once nothing is outstanding, go back to `base`.
    failed: bool,
    retry_at: Instant,
    /// A record read that the producer had no room for.
    stash: Option<(u64, Vec<u8>)>,
}

impl Drain {
    fn read(&mut self, offset: u64) {
        debug_assert_eq!(offset, self.base + self.acked.len() as u64);
        self.acked.push_back(false);
    }

    fn ack(&mut self, offset: u64) {
        if let Some(slot) = offset.checked_sub(self.base).and_then(|i| self.acked.get_mut(i as usize)) {
            *slot = true;
        }
        while self.acked.front() == Some(&true) {
            self.acked.pop_front();
            self.base += 1;
        }
    }

    fn fail(&mut self) {
        self.failed = true;
        self.window = 1;
    }
}

pub(super) struct Publisher {
    shared: Arc<Shared>,
    client_config: ClientConfig,
    producer: BaseProducer<Deliveries>,
    /// Topic names, built once.
    topics: [String; 2],
    /// Set by the `event-topics` thread once both topics exist.
    topics_ready: Arc<AtomicBool>,
    spool: SegmentLog,
    mode: Mode,
    /// Per topic, the keys with an event in the producer, each with the events waiting behind it.
    keys: [HashMap<Box<[u8]>, VecDeque<Held>>; 2],
    /// Events from the queue waiting behind their key (only in memory, unlike spooled ones).
    held_live: usize,
    /// Handed to the producer, no report processed yet.
    in_flight: usize,
    live_in_flight: usize,
    /// The last acknowledgement of a live event (or when one was sent after none were waiting).
    last_ack: Instant,
    drain: Drain,
    last_commit: Instant,
    outcomes: Vec<Outcome>,
    buf: Vec<u8>,
}

impl Publisher {
    pub(super) fn new(config: &KafkaConfig, shared: Arc<Shared>, mut spool: SegmentLog) -> Result<Self, KafkaError> {
        let client_config = client_config(config);
        let producer = client_config.create_with_context(Deliveries::default())?;
        let topics = [format!("{}.events", config.topic_prefix), format!("{}.deployments", config.topic_prefix)];
        let topics_ready = Arc::new(AtomicBool::new(false));
        start_topic_creation(config, &client_config, topics.clone(), topics_ready.clone(), shared.clone())?;
        let base = spool.committed();
        let reader = spool.reader(base).map_err(|e| KafkaError::Global(io_code(&e)))?;
        let pending = spool.pending();
        if pending > 0 {
            tracing::info!(pending, "the event spool holds undelivered events; sending them first");
        }
        shared.metrics.spool_pending.set(pending as i64);
        Ok(Self {
            shared,
            client_config,
            producer,
            topics,
            topics_ready,
            spool,
            mode: Mode::Spooling,
            keys: [HashMap::new(), HashMap::new()],
            held_live: 0,
            in_flight: 0,
            live_in_flight: 0,
            last_ack: Instant::now(),
            drain: Drain {
                reader,
                payload: Vec::with_capacity(4096),
                base,
                acked: VecDeque::new(),
                outstanding: 0,
                window: DRAIN_WINDOW,
                failed: false,
                retry_at: Instant::now(),
                stash: None,
            },
            last_commit: Instant::now(),
            outcomes: Vec::new(),
            buf: Vec::with_capacity(4096),
        })
    }

    /// The publisher thread: until the sink closes, takes the queue in batches, sends or spools
    /// them, sends the spool, and serves delivery reports. Returns the spool, synced.
    pub(super) fn run(mut self) -> SegmentLog {
        let started = Instant::now();
        while !self.topics_ready.load(Ordering::Acquire)
            && started.elapsed() < TOPICS_WAIT
            && !self.shared.closing.load(Ordering::SeqCst)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut batch = Vec::with_capacity(1024);
        let mut idle_rounds = 0;
        loop {
            let closing = self.shared.closing.load(Ordering::SeqCst);
            self.settle();
            self.maybe_go_live();
            let took = self.shared.queue.take_into(&mut batch);
            for taken in &batch {
                self.accept(&taken.event);
            }
            self.shared.queue.recycle(&mut batch);
            self.check_stall();
            self.flush_spool();
            if !closing {
                self.send_spool();
            }
            self.maybe_go_live();
            self.commit(false);
            self.update_gauges();
            if closing {
                break;
            }
            let idle_wait = poll_interval(took, &mut idle_rounds);
            let wait = if self.in_flight > 0 { POLL_BUSY_KAFKA } else { idle_wait };
            std::thread::sleep(wait);
            self.serve_reports();
        }
        self.finish();
        self.spool
    }

    /// Routes one new event: behind its key, to the producer, or to the spool.
    fn accept(&mut self, event: &Event) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let json_at = encode_spooled(event, &mut buf);
        let route = Route::of(event);
        let key = super::queue::key(event).as_bytes();
        if !self.hold_if_busy(route, key, Origin::Live, &buf, json_at) {
            match self.mode {
                Mode::Live => self.send_live(route, key, &buf, json_at),
                Mode::Spooling => self.append(&buf),
            }
        }
        self.buf = buf;
    }

    /// When an event of `key` is unacknowledged, queues this one behind it (true).
    fn hold_if_busy(&mut self, route: Route, key: &[u8], origin: Origin, record: &[u8], json_at: usize) -> bool {
        match self.keys[route.topic as usize].get_mut(key) {
            Some(waiting) => {
                waiting.push_back(Held { route, origin, record: record.to_vec(), json_at });
                if origin == Origin::Live {
                    self.held_live += 1;
                }
                true
            }
            None => false,
        }
    }

    /// Hands a message to the producer; on success its key is busy until it is acknowledged
    /// (unless it is the key's last event).
    fn produce(&mut self, route: Route, key: &[u8], json: &[u8], origin: Origin) -> Result<(), RDKafkaErrorCode> {
        let tag = Tag { route, origin }.pack();
        let record = BaseRecord::with_opaque_to(&self.topics[route.topic as usize], tag).key(key).payload(json);
        if let Err((e, _)) = self.producer.send(record) {
            return Err(e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail));
        }
        if !key.is_empty() && !route.last {
            self.keys[route.topic as usize].insert(key.into(), VecDeque::new());
        }
        self.in_flight += 1;
        if origin == Origin::Live {
            if self.live_in_flight == 0 {
                self.last_ack = Instant::now();
            }
            self.live_in_flight += 1;
        }
        Ok(())
    }

    fn send_live(&mut self, route: Route, key: &[u8], record: &[u8], json_at: usize) {
        match self.produce(route, key, &record[json_at..], Origin::Live) {
            Ok(()) => {}
            Err(code) if permanent(code) => self.reject(code, &record[json_at..]),
            Err(code) => {
                if code != RDKafkaErrorCode::QueueFull {
                    tracing::debug!(error = %code, "Kafka producer refused an event; spooling it");
                }
                self.enter_spooling(code);
                self.append(record);
            }
        }
    }

    fn reject(&self, code: RDKafkaErrorCode, json: &[u8]) {
        self.shared.metrics.dropped(DropReason::Rejected, 1);
        self.shared.log_drop(
            || tracing::error!(error = %code, bytes = json.len(), "Kafka refuses an event for good; it is dropped"),
        );
    }

    fn append(&mut self, record: &[u8]) {
        self.shared.append(&mut self.spool, record, None);
    }

    fn enter_spooling(&mut self, why: impl std::fmt::Display) {
        if self.mode == Mode::Live {
            tracing::warn!(reason = %why, "Kafka is not taking events: spooling them to disk");
            self.mode = Mode::Spooling;
            self.shared.spooling.store(true, Ordering::Relaxed);
            self.drain.window = 1;
            self.drain.retry_at = Instant::now() + DRAIN_RETRY;
        }
    }

    /// Live, with events waiting and no acknowledgement for STALL: spool new events.
    fn check_stall(&mut self) {
        if self.mode == Mode::Live && self.live_in_flight > 0 && self.last_ack.elapsed() > STALL {
            self.enter_spooling(format_args!("no acknowledgement for {STALL:?}"));
        }
    }

    /// Runs the delivery callbacks of every report librdkafka has ready, without waiting.
    /// (`BaseProducer::poll` with a timeout spins on the clock for the last millisecond of it,
    /// so the publisher sleeps on its own and polls with none.)
    fn serve_reports(&self) {
        let served = &self.producer.context().served;
        for _ in 0..10_000 {
            let before = served.load(Ordering::Relaxed);
            self.producer.poll(Duration::ZERO);
            if served.load(Ordering::Relaxed) == before {
                break;
            }
        }
    }

    /// Processes the delivery reports collected by the callbacks.
    fn settle(&mut self) {
        std::mem::swap(
            &mut self.outcomes,
            &mut self.producer.context().outcomes.lock().unwrap_or_else(PoisonError::into_inner),
        );
        let mut outcomes = std::mem::take(&mut self.outcomes);
        for outcome in outcomes.drain(..) {
            self.on_outcome(outcome);
        }
        self.outcomes = outcomes;
        if self.producer.client().fatal_error().is_some() {
            self.rebuild_producer();
        }
    }

    fn on_outcome(&mut self, outcome: Outcome) {
        let tag = Tag::unpack(outcome.tag);
        self.in_flight = self.in_flight.saturating_sub(1);
        match tag.origin {
            Origin::Live => self.live_in_flight = self.live_in_flight.saturating_sub(1),
            Origin::Spool(_) => self.drain.outstanding = self.drain.outstanding.saturating_sub(1),
        }
        let failed = match outcome.error {
            None => {
                self.shared.metrics.sent.inc();
                match tag.origin {
                    Origin::Live => self.last_ack = Instant::now(),
                    Origin::Spool(offset) => {
                        self.drain.ack(offset);
                        self.drain.window = DRAIN_WINDOW;
                    }
                }
                false
            }
            Some((code, payload)) if permanent(code) => {
                self.reject(code, &payload);
                if let Origin::Spool(offset) = tag.origin {
                    self.drain.ack(offset);
                }
                false
            }
            Some((code, payload)) => {
                self.shared.metrics.failed.inc();
                tracing::debug!(error = %code, "event delivery failed; spooling it");
                self.enter_spooling(code);
                match tag.origin {
                    Origin::Live => {
                        let mut record = Vec::with_capacity(payload.len() + outcome.key.len() + 8);
                        route_prefix(tag.route, &outcome.key, &mut record);
                        record.extend_from_slice(&payload);
                        self.append(&record);
                    }
                    // Still in the spool: sent again from the commit point.
                    Origin::Spool(_) => self.drain.fail(),
                }
                true
            }
        };
        if !tag.route.last {
            self.release(tag.route.topic, &outcome.key, failed);
        }
    }

    /// The event of `key` in the producer has settled: hand on the next one waiting behind it,
    /// or, if it failed, put every waiting event after it in the spool.
    fn release(&mut self, topic: Topic, key: &[u8], failed: bool) {
        let Some(mut waiting) = self.keys[topic as usize].remove(key) else { return };
        while let Some(held) = waiting.pop_front() {
            if held.origin == Origin::Live {
                self.held_live -= 1;
            }
            match held.origin {
                Origin::Spool(_) if failed || self.drain.failed => {
                    // Still in the spool: the drain goes back to its commit point (which is not
                    // past this record) and sends it again.
                    self.drain.outstanding = self.drain.outstanding.saturating_sub(1);
                    self.drain.fail();
                }
                Origin::Spool(offset) => {
                    match self.produce(held.route, key, &held.record[held.json_at..], held.origin) {
                        Ok(()) if held.route.last => {}
                        Ok(()) => {
                            // Busy again: the rest keep waiting, behind this one.
                            self.keys[topic as usize].insert(key.into(), waiting);
                            return;
                        }
                        Err(code) if permanent(code) => {
                            self.reject(code, &held.record[held.json_at..]);
                            self.drain.outstanding = self.drain.outstanding.saturating_sub(1);
                            self.drain.ack(offset);
                        }
                        Err(_) => {
                            self.drain.outstanding = self.drain.outstanding.saturating_sub(1);
                            self.drain.fail();
                        }
                    }
                }
                Origin::Live if failed || self.mode == Mode::Spooling => self.append(&held.record),
                Origin::Live => {
                    self.send_live(held.route, key, &held.record, held.json_at);
                    if self.keys[topic as usize].contains_key(key) {
                        self.keys[topic as usize].insert(key.into(), waiting);
                        return;
                    }
                }
            }
        }
    }

    fn flush_spool(&mut self) {
        if let Err(e) = self.spool.flush() {
            self.shared.log_drop(|| tracing::error!(error = %e, "cannot flush the event spool"));
        }
    }

    /// Spooling: hands the next spooled events to the producer, up to the window.
    fn send_spool(&mut self) {
        if self.mode != Mode::Spooling || !self.topics_ready.load(Ordering::Acquire) {
            return;
        }
        if self.drain.failed {
            if self.drain.outstanding == 0 {
                self.rewind();
            }
            return;
        }
        if Instant::now() < self.drain.retry_at {
            return;
        }
        while self.drain.outstanding < self.drain.window {
            let (offset, payload) = match self.drain.stash.take() {
                Some(stashed) => stashed,
                None => match self.drain.reader.next_record(&mut self.drain.payload) {
                    Ok(Some(Record::Valid(offset))) => {
                        self.drain.read(offset);
                        (offset, std::mem::take(&mut self.drain.payload))
                    }
                    Ok(Some(Record::Corrupt(offset))) => {
                        self.drain.read(offset);
                        self.drain.ack(offset);
                        continue;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read the event spool");
                        self.drain.fail();
                        break;
                    }
                },
            };
            let Some(spooled) = decode_spooled(&payload) else {
                tracing::warn!(offset, "skipping an unreadable spool record");
                self.drain.ack(offset);
                self.drain.payload = payload;
                continue;
            };
            let (route, json_at) = (spooled.route, payload.len() - spooled.json.len());
            let key = spooled.key.into_owned();
            self.drain.outstanding += 1;
            if self.hold_if_busy(route, &key, Origin::Spool(offset), &payload, json_at) {
                self.drain.payload = payload;
                continue;
            }
            match self.produce(route, &key, &payload[json_at..], Origin::Spool(offset)) {
                Ok(()) => self.drain.payload = payload,
                Err(RDKafkaErrorCode::QueueFull) => {
                    self.drain.outstanding -= 1;
                    self.drain.stash = Some((offset, payload));
                    break;
                }
                Err(code) if permanent(code) => {
                    self.drain.outstanding -= 1;
                    self.reject(code, &payload[json_at..]);
                    self.drain.ack(offset);
                    self.drain.payload = payload;
                }
                Err(code) => {
                    tracing::debug!(error = %code, "Kafka producer refused a spooled event");
                    self.drain.outstanding -= 1;
                    self.drain.fail();
                    break;
                }
            }
        }
    }

    /// After a failure, once nothing sent from the spool is outstanding: start again from the
    /// first unacknowledged record, after DRAIN_RETRY, with one record.
    fn rewind(&mut self) {
        self.drain.reader = match self.spool.reader(self.drain.base) {
            Ok(reader) => reader,
            Err(e) => {
                tracing::error!(error = %e, "cannot reopen the event spool");
                return;
            }
        };
        self.drain.acked.clear();
        self.drain.stash = None;
        self.drain.failed = false;
        self.drain.window = 1;
        self.drain.retry_at = Instant::now() + DRAIN_RETRY;
    }

    /// Spooling, and every spooled event is in the producer ahead of any new one: go live.
    fn maybe_go_live(&mut self) {
        if self.mode == Mode::Spooling
            && self.topics_ready.load(Ordering::Acquire)
            && !self.drain.failed
            && self.drain.stash.is_none()
            && Instant::now() >= self.drain.retry_at
            && self.drain.reader.next_offset() >= self.spool.next_offset()
        {
            tracing::info!(
                in_flight = self.in_flight,
                "the event spool is caught up: publishing to Kafka directly again"
            );
            self.mode = Mode::Live;
            self.shared.spooling.store(false, Ordering::Relaxed);
            self.last_ack = Instant::now();
        }
    }

    /// Writes down the spool's commit point (at most every COMMIT_EVERY, unless `now`).
    fn commit(&mut self, now: bool) {
        if self.drain.base > self.spool.committed() && (now || self.last_commit.elapsed() >= COMMIT_EVERY) {
            self.last_commit = Instant::now();
            if let Err(e) = self.spool.commit(self.drain.base) {
                tracing::error!(error = %e, "cannot record the event spool's progress");
            }
        }
    }

    fn update_gauges(&self) {
        let m = &self.shared.metrics;
        m.queue_depth.set(self.shared.queue.len() as i64);
        m.in_flight.set((self.live_in_flight + self.held_live) as i64);
        m.spool_pending.set(self.spool.next_offset().saturating_sub(self.drain.base) as i64);
    }

    /// After a fatal producer error (e.g. the idempotent producer's sequence broken), every
    /// message it holds is reported failed and spooled, and a new producer takes over.
    fn rebuild_producer(&mut self) {
        let reason = self.producer.client().fatal_error().map(|(_, r)| r).unwrap_or_default();
        tracing::error!(reason, "the Kafka producer hit a fatal error; starting a new one");
        let fresh = match self.client_config.create_with_context(Deliveries::default()) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot create a new Kafka producer");
                return;
            }
        };
        let old_context = self.producer.context().clone();
        let old = std::mem::replace(&mut self.producer, fresh);
        // Dropping purges it and serves the reports of what it held, into its context.
        drop(old);
        let outcomes = std::mem::take(&mut *old_context.outcomes.lock().unwrap_or_else(PoisonError::into_inner));
        for outcome in outcomes {
            self.on_outcome(outcome);
        }
        // Start over from a clean slate: what still waits goes to the spool (live events) or
        // stays there (spooled ones), and the spool is sent again from its commit point.
        self.enter_spooling("a new producer");
        for topic in [Topic::Events, Topic::Deployments] {
            let waiting: Vec<Held> = self.keys[topic as usize].drain().flat_map(|(_, held)| held).collect();
            for held in waiting.iter().filter(|h| h.origin == Origin::Live) {
                self.append(&held.record);
            }
        }
        if self.live_in_flight > 0 {
            tracing::error!(
                lost = self.live_in_flight,
                "the old Kafka producer did not report these events; they may be lost"
            );
        }
        self.held_live = 0;
        self.in_flight = 0;
        self.live_in_flight = 0;
        self.drain.outstanding = 0;
        self.drain.fail();
    }

    /// Shutdown: what is in flight gets until about three quarters of the way to the deadline
    /// to be acknowledged (only while live: a broker that is down is not waited for); the rest
    /// is purged from the producer and spooled, with what waited behind it.
    fn finish(&mut self) {
        let deadline = self.shared.deadline();
        let now = Instant::now();
        let flush_until = now + deadline.saturating_duration_since(now).mul_f32(0.75);
        let mut batch = Vec::new();
        while self.mode == Mode::Live && self.in_flight > 0 && Instant::now() < flush_until {
            std::thread::sleep(Duration::from_millis(2));
            self.serve_reports();
            self.settle();
            self.shared.queue.take_into(&mut batch);
            for taken in batch.drain(..) {
                self.accept(&taken.event);
            }
        }
        if self.in_flight > 0 {
            self.producer.purge(PurgeConfig::default().queue().inflight());
            let until = Instant::now() + deadline.saturating_duration_since(Instant::now()) / 2;
            while self.in_flight > 0 && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(2));
                self.serve_reports();
                self.settle();
            }
        }
        self.mode = Mode::Spooling;
        // Whatever still waits behind an event whose report never came, and late arrivals.
        for topic in [Topic::Events, Topic::Deployments] {
            let waiting: Vec<Held> = self.keys[topic as usize]
                .drain()
                .flat_map(|(_, held)| held)
                .filter(|h| h.origin == Origin::Live)
                .collect();
            for held in waiting {
                self.append(&held.record);
            }
        }
        self.held_live = 0;
        self.shared.queue.take_into(&mut batch);
        for taken in batch.drain(..) {
            self.accept(&taken.event);
        }
        if self.in_flight > 0 {
            tracing::error!(
                lost = self.in_flight,
                "Kafka reported nothing about these events at shutdown; they may be lost"
            );
            self.shared.metrics.dropped(DropReason::ShutdownTimeout, self.in_flight as u64);
        }
        self.commit(true);
        if let Err(e) = self.spool.sync() {
            tracing::error!(error = %e, "cannot sync the event spool");
        }
        self.update_gauges();
    }
}

/// How long the publisher waits for delivery reports per round while messages are in flight.
const POLL_BUSY_KAFKA: Duration = Duration::from_millis(2);

fn io_code(_: &std::io::Error) -> RDKafkaErrorCode {
    RDKafkaErrorCode::Fail
}

/// Creates the topics if missing, in a thread of its own (retrying every second while the broker
/// is unreachable), so the publisher never waits on the admin API.
fn start_topic_creation(
    config: &KafkaConfig,
    client_config: &ClientConfig,
    topics: [String; 2],
    ready: Arc<AtomicBool>,
    shared: Arc<Shared>,
) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = client_config.create()?;
    let (partitions, replication) = (config.partitions, config.replication_factor);
    let spawned = std::thread::Builder::new().name("event-topics".into()).spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            tracing::error!("cannot start the runtime that creates the event topics");
            return;
        };
        let new: Vec<NewTopic> =
            topics.iter().map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(replication))).collect();
        let options = AdminOptions::new()
            .operation_timeout(Some(Timeout::After(Duration::from_secs(5))))
            .request_timeout(Some(Timeout::After(Duration::from_secs(5))));
        let mut warned = false;
        while !shared.closing.load(Ordering::SeqCst) {
            let ok = match runtime.block_on(admin.create_topics(&new, &options)) {
                Ok(results) => results.iter().all(|r| match r {
                    Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => true,
                    Err((topic, code)) => {
                        tracing::warn!(topic = %topic, error = %code, "cannot create topic");
                        false
                    }
                }),
                Err(e) => {
                    if !warned {
                        tracing::warn!(error = %e, "cannot reach Kafka to create topics; spooling events until it answers");
                        warned = true;
                    }
                    false
                }
            };
            if ok {
                tracing::info!(topics = ?topics, "event topics ready");
                ready.store(true, Ordering::Release);
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    spawned.map(|_| ()).map_err(|_| KafkaError::Global(RDKafkaErrorCode::Fail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_spool_records_round_trip() {
        let (event, last, deployment) = (
            Route { topic: Topic::Events, last: false },
            Route { topic: Topic::Events, last: true },
            Route { topic: Topic::Deployments, last: false },
        );
        for route in [event, last, deployment] {
            for origin in [Origin::Live, Origin::Spool(0), Origin::Spool(123_456_789_012)] {
                assert_eq!(Tag::unpack(Tag { route, origin }.pack()), Tag { route, origin });
            }
        }
        let mut record = Vec::new();
        let at = route_prefix(deployment, b"dep 1:x", &mut record);
        record.extend_from_slice(br#"{"type":"deployment"}"#);
        let spooled = decode_spooled(&record).unwrap();
        assert_eq!((spooled.route, &*spooled.key, spooled.json), (deployment, &b"dep 1:x"[..], &record[at..]));
        let legacy = br#"{"type":"response","request_id":"r-1"}"#;
        let spooled = decode_spooled(legacy).unwrap();
        assert_eq!((spooled.route, &*spooled.key, spooled.json), (last, &b"r-1"[..], &legacy[..]));
        assert!(decode_spooled(b"E99:short").is_none());
    }
}
