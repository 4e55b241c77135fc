//! Following `<prefix>.events` so that budgets and rate limits count every instance's calls.
//!
//! Read from the beginning at start (the spend history), then followed. Each request event
//! of another instance counts one request against the caller's rate limits and, while the call
//! runs, reserves its `reserved_cost` on the caller's budgets; its response event releases the
//! reservation and counts its cost and output tokens. This instance's own calls are counted
//! when they happen, so its own events are skipped once it runs (events it wrote in an earlier
//! run, before this process started, are history and are counted).
//!
//! A reservation whose response never comes (the instance that made it crashed) is released
//! after [`RESERVATION_TTL`]; request events older than that reserve nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use jiff::Timestamp;

use super::ledger::{self, Account, Ledger};
use super::snapshot::{self, Snapshot};
use super::{Budgets, Charges, Identity};
use crate::auth::{KeyStore, Table};
use crate::events::topics::{Follower, TopicError, Topics};
use crate::events::types::CallerFields;
use crate::events::{Envelope, Event, ResponseEvent};
use crate::limits::{limits_of, Limiter};

/// The topic, by its short name (`<prefix>.events`).
const SHORT: &str = "events";

/// How long another instance's reservation counts without its response.
pub const RESERVATION_TTL: Duration = Duration::from_secs(600);

/// What the follower shares with the gateway.
pub struct Following {
    /// True once the history that existed at start has been counted.
    pub caught_up: AtomicBool,
    /// Other instances' running calls: call id → (charges, nano-dollars reserved, when).
    pending: DashMap<String, (Charges, i64, Timestamp)>,
}

/// The counting itself, without the log: testable alone.
pub struct Counter {
    pub table: Arc<Table>,
    pub budgets: Arc<Budgets>,
    pub limiter: Arc<Limiter>,
    pub gateway_id: String,
    /// When this process started: its own events after this are already counted.
    pub started: Timestamp,
    pub following: Arc<Following>,
}

fn identity<'a>(caller: &'a CallerFields, model_group: Option<&'a str>) -> Identity<'a> {
    Identity {
        key_hash: caller.api_key_hash.as_deref(),
        team_id: caller.team_id.as_deref(),
        user_id: caller.user.as_deref(),
        end_user: caller.end_user.as_deref(),
        model_group,
    }
}

/// When an event happened: its envelope's time (`now` if that is out of range).
pub fn event_time(envelope: &Envelope, now: Timestamp) -> Timestamp {
    Timestamp::try_from(envelope.timestamp.system_time()).unwrap_or(now)
}

/// The spend fold, shared by every gateway's follower and the budgets consumer: counts a
/// response event's cost, made at `at`, on every account of its caller the key table knows
/// ([`Charges::of`]) and `counts` admits. Returns the accounts charged; `None` for a call
/// without a virtual key (nothing to charge). A zero cost charges nothing.
pub fn fold(
    table: &Table,
    ledger: &Ledger,
    event: &ResponseEvent,
    at: Timestamp,
    counts: impl Fn(&Account) -> bool,
) -> Option<Vec<Account>> {
    let who = identity(&event.caller, event.model_group.as_deref());
    who.key_hash?;
    let cost = ledger::nanos(event.cost);
    let mut charged = Vec::new();
    if cost == 0 {
        return Some(charged);
    }
    for c in Charges::of(table, &who).0 {
        if counts(&c.account) {
            ledger.add(&c.account, &c.policy, at, cost);
            charged.push(c.account);
        }
    }
    Some(charged)
}

impl Counter {
    pub fn new(table: Arc<Table>, budgets: Arc<Budgets>, limiter: Arc<Limiter>, gateway_id: String) -> Self {
        Self {
            table,
            budgets,
            limiter,
            gateway_id,
            started: Timestamp::now(),
            following: Arc::new(Following { caught_up: AtomicBool::new(false), pending: DashMap::new() }),
        }
    }

    /// Counts one event read from the log. `counts` says which of the caller's accounts the
    /// event's cost still counts on (false for an account whose snapshot already includes it).
    pub fn count(&self, event: &Event, now: Timestamp, counts: impl Fn(&Account) -> bool) {
        let envelope = event.envelope();
        let at = event_time(envelope, now);
        if envelope.gateway_id == self.gateway_id && at >= self.started {
            return;
        }
        match event {
            Event::Request(e) => {
                let who = identity(&e.caller, e.model_group.as_deref());
                if who.key_hash.is_none() {
                    return;
                }
                self.limiter.count_request(&limits_of(&self.table, &who), at.as_second());
                let recent = now.duration_since(at).as_secs() < RESERVATION_TTL.as_secs() as i64;
                let amount = ledger::nanos(e.reserved_cost);
                if amount > 0 && recent {
                    if let Some(id) = &envelope.request_id {
                        let charges = Charges::of(&self.table, &who);
                        for c in &charges.0 {
                            self.budgets.ledger.reserve(&c.account, amount);
                        }
                        self.following.pending.insert(id.clone(), (charges, amount, at));
                    }
                }
            }
            Event::Response(e) => {
                if let Some((_, (charges, amount, _))) =
                    envelope.request_id.as_ref().and_then(|id| self.following.pending.remove(id))
                {
                    for c in &charges.0 {
                        self.budgets.ledger.release(&c.account, amount);
                    }
                }
                if fold(&self.table, &self.budgets.ledger, e, at, counts).is_some() {
                    let who = identity(&e.caller, e.model_group.as_deref());
                    self.limiter.count_tokens(
                        &limits_of(&self.table, &who),
                        e.tokens.completion_tokens,
                        at.as_second(),
                    );
                }
            }
            Event::Deployment(_) => {}
        }
    }

    /// Releases reservations whose response has not come within [`RESERVATION_TTL`].
    pub fn expire(&self, now: Timestamp) {
        let ttl = RESERVATION_TTL.as_secs() as i64;
        self.following.pending.retain(|_, (charges, amount, at)| {
            let keep = now.duration_since(*at).as_secs() < ttl;
            if !keep {
                for c in &charges.0 {
                    self.budgets.ledger.release(&c.account, *amount);
                }
            }
            keep
        });
    }
}

/// Starts following `<prefix>.events` on the current runtime, once `keys` has loaded the key
/// table (an event is charged to the accounts the table names): first the spend snapshot
/// ([`snapshot::load`]) into the ledger, then the events after it. `caught_up` turns true once
/// the events that existed at start are counted.
pub fn start(topics: &Topics, keys: Arc<KeyStore>, counter: Counter) -> Arc<Following> {
    let following = counter.following.clone();
    let topics = topics.clone();
    tokio::spawn(async move {
        while !keys.ready() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let topic = topics.name(SHORT);
        let (snapshot, mut follower) = loop {
            match resume(&topics, &counter.budgets.ledger).await {
                Ok(started) => break started,
                Err(e) => {
                    tracing::warn!(topic = %topics.name(snapshot::SHORT), error = %e, "reading the spend snapshot failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let mut skip = Some(snapshot.resume);
        let mut last_expiry = Timestamp::now();
        loop {
            match follower.next_batch(4096, Duration::from_millis(200)).await {
                Ok(records) => {
                    let now = Timestamp::now();
                    for record in records {
                        let Some(value) = record.value else { continue };
                        match Event::from_json(&value) {
                            Ok(event) => counter.count(&event, now, |account| {
                                skip.as_ref().is_none_or(|s| s.counts(account, record.partition, record.offset))
                            }),
                            Err(e) => tracing::debug!(error = %e, "an event the budget follower cannot read; skipped"),
                        }
                    }
                    if !counter.following.caught_up.load(Ordering::Relaxed) && follower.caught_up() {
                        // Every snapshot position is behind the end the follower had at start.
                        skip = None;
                        tracing::info!(topic = %topic, accounts = counter.budgets.ledger.len(), "spend history counted");
                        counter.following.caught_up.store(true, Ordering::Release);
                    }
                    if now.duration_since(last_expiry).as_secs() >= 10 {
                        counter.expire(now);
                        last_expiry = now;
                    }
                }
                Err(e) => {
                    tracing::warn!(topic = %topic, error = %e, "reading the event log failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
    following
}

/// The snapshot seeded into `ledger`, and a follower of the events after it.
async fn resume(topics: &Topics, ledger: &Ledger) -> Result<(Snapshot, Follower), TopicError> {
    let snapshot = snapshot::load(topics, ledger).await?;
    tracing::info!(
        topic = %topics.name(snapshot::SHORT),
        accounts = snapshot.resume.len(),
        from = ?snapshot.start,
        "spend snapshot loaded"
    );
    let follower = topics.follow(SHORT, snapshot.follow_from())?;
    Ok((snapshot, follower))
}
