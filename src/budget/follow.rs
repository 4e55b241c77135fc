//! Following `<prefix>.events` so that budgets and rate limits count every instance's calls.
//!
//! At start, the ledger is seeded from the budgets consumer's snapshots on `<prefix>.spend`
//! and the events are read from the consumer's committed position (from the beginning when
//! there is none), each counted only on the accounts whose snapshot does not include it
//! (`crate::budget::snapshot`); then followed. The spend fold itself ([`fold`]) is shared with
//! the budgets consumer (`crate::consumers::budgets`). Each request event
//! of another instance counts one request against the caller's rate limits and, while the call
//! runs, reserves its `reserved_cost` on the caller's budgets; its response event releases the
//! reservation and counts its cost and output tokens. This instance's own calls are counted
//! when they happen, so its own events are skipped once it runs (events it wrote in an earlier
//! run, before this process started, are history and are counted). An own call that ended
//! before the snapshot was read may be in the snapshot too; when its event comes, that second
//! copy is taken back out.
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
    /// How long other instances' events took to reach this one (publish to count): the
    /// propagation delay that bounds cross-instance overspend.
    pub delay: Option<prometheus::Histogram>,
}

/// `switchyard_follow_delay_seconds`, registered with the gateway's registry.
pub fn delay_histogram(registry: &prometheus::Registry) -> prometheus::Result<prometheus::Histogram> {
    let h = prometheus::Histogram::with_opts(
        prometheus::HistogramOpts::new(
            "switchyard_follow_delay_seconds",
            "Time from another instance publishing a request or response event to this instance counting it",
        )
        .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
    )?;
    registry.register(Box::new(h.clone()))?;
    Ok(h)
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

/// What the spend fold reads of a response event, read from its JSON without the rest (about a
/// sixth of the cost of reading the whole event, which an in-process consumer pays per call).
#[derive(Debug, serde::Deserialize)]
pub struct SpendFacts<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: std::borrow::Cow<'a, str>,
    pub timestamp: crate::events::types::Timestamp,
    #[serde(borrow)]
    pub api_key_hash: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    pub team_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    pub user: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    pub end_user: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    pub model_group: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    pub cost: f64,
}

impl<'a> SpendFacts<'a> {
    /// The facts of a response event; `None` for another event or one that cannot be read.
    pub fn of(json: &'a [u8]) -> Option<Self> {
        serde_json::from_slice::<Self>(json).ok().filter(|f| f.kind == "response")
    }

    /// The facts of a response event the publisher holds, if the fold would charge it (a
    /// virtual key and a cost): the others need no copy.
    pub fn chargeable(event: &ResponseEvent) -> Option<SpendFacts<'static>> {
        let owned = |field: &Option<String>| field.clone().map(std::borrow::Cow::Owned);
        (event.caller.api_key_hash.is_some() && ledger::nanos(event.cost) != 0).then(|| SpendFacts {
            kind: std::borrow::Cow::Borrowed("response"),
            timestamp: event.envelope.timestamp,
            api_key_hash: owned(&event.caller.api_key_hash),
            team_id: owned(&event.caller.team_id),
            user: owned(&event.caller.user),
            end_user: owned(&event.caller.end_user),
            model_group: owned(&event.model_group),
            cost: event.cost,
        })
    }

    pub fn identity(&self) -> Identity<'_> {
        Identity {
            key_hash: self.api_key_hash.as_deref(),
            team_id: self.team_id.as_deref(),
            user_id: self.user.as_deref(),
            end_user: self.end_user.as_deref(),
            model_group: self.model_group.as_deref(),
        }
    }

    /// When the call ended (`now` if out of range).
    pub fn at(&self, now: Timestamp) -> Timestamp {
        Timestamp::try_from(self.timestamp.system_time()).unwrap_or(now)
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
    who: &Identity,
    cost: f64,
    at: Timestamp,
    counts: impl Fn(&Account) -> bool,
) -> Option<Vec<Account>> {
    let (charges, cost) = charges_of(table, who, cost)?;
    let mut charged = Vec::new();
    for c in charges.0 {
        if counts(&c.account) {
            ledger.add(&c.account, &c.policy, at, cost);
            charged.push(c.account);
        }
    }
    Some(charged)
}

/// The accounts a call charges (none if it cost nothing) and its cost in nano-dollars; `None`
/// for a call without a virtual key.
fn charges_of(table: &Table, who: &Identity, cost: f64) -> Option<(Charges, i64)> {
    who.key_hash?;
    let cost = ledger::nanos(cost);
    let charges = if cost == 0 { Charges(Vec::new()) } else { Charges::of(table, who) };
    Some((charges, cost))
}

/// Takes a response event's cost back out of the accounts `twice` names: this instance
/// counted its own call when it settled, and a snapshot seeded afterwards included it too.
fn uncount(table: &Table, ledger: &Ledger, event: &ResponseEvent, at: Timestamp, twice: impl Fn(&Account) -> bool) {
    let who = identity(&event.caller, event.model_group.as_deref());
    let Some((charges, cost)) = charges_of(table, &who, event.cost) else { return };
    for c in charges.0 {
        if twice(&c.account) {
            ledger.take_back(&c.account, &c.policy, at, cost);
        }
    }
}

fn to_millisecond(at: Timestamp) -> Timestamp {
    Timestamp::from_millisecond(at.as_millisecond()).unwrap_or(at)
}

impl Counter {
    pub fn new(table: Arc<Table>, budgets: Arc<Budgets>, limiter: Arc<Limiter>, gateway_id: String) -> Self {
        Self {
            table,
            budgets,
            limiter,
            gateway_id,
            // Events carry their time to the millisecond: one of this process's own in its first
            // millisecond must not look older than its start.
            started: to_millisecond(Timestamp::now()),
            following: Arc::new(Following { caught_up: AtomicBool::new(false), pending: DashMap::new() }),
            delay: None,
        }
    }

    /// Whether an event's JSON is one of this instance's own, published since it started (already
    /// counted when it happened), read from its envelope alone: the follower skips those without
    /// reading the rest. During the history, own events are read in full (a snapshot may hold
    /// them twice, see [`Counter::count`]).
    fn is_own_live(&self, json: &[u8]) -> bool {
        #[derive(serde::Deserialize)]
        struct Head<'a> {
            #[serde(borrow)]
            gateway_id: std::borrow::Cow<'a, str>,
            timestamp: crate::events::types::Timestamp,
        }
        if !self.following.caught_up.load(Ordering::Relaxed) {
            return false;
        }
        if let Some((gateway, at)) = crate::events::types::origin_hint(json) {
            return gateway == self.gateway_id && at >= self.started;
        }
        match serde_json::from_slice::<Head>(json) {
            Ok(head) => {
                head.gateway_id == self.gateway_id
                    && Timestamp::try_from(head.timestamp.system_time()).is_ok_and(|at| at >= self.started)
            }
            Err(_) => false,
        }
    }

    /// Counts one event read from the log. `counts` says which of the caller's accounts the
    /// event's cost still counts on (false for an account whose snapshot already includes it).
    pub fn count(&self, event: &Event, now: Timestamp, counts: impl Fn(&Account) -> bool) {
        let envelope = event.envelope();
        let at = event_time(envelope, now);
        if envelope.gateway_id == self.gateway_id && at >= self.started {
            // Counted when it settled. A call that ended before the snapshot was read can be
            // in the snapshot as well: that copy is taken back out.
            if let Event::Response(e) = event {
                uncount(&self.table, &self.budgets.ledger, e, at, |account| !counts(account));
            }
            return;
        }
        if let (Some(delay), true) = (&self.delay, self.following.caught_up.load(Ordering::Relaxed)) {
            let elapsed = now.duration_since(at).as_secs_f64();
            if elapsed >= 0.0 {
                delay.observe(elapsed);
            }
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
                let who = identity(&e.caller, e.model_group.as_deref());
                if fold(&self.table, &self.budgets.ledger, &who, e.cost, at, counts).is_some() {
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
/// `others`: whether other instances can write the log (Kafka). On the embedded log nothing
/// but this process writes, and its own calls are counted as they happen, so the follower stops
/// once it has counted the history: it costs nothing per call after that.
pub fn start(topics: &Topics, keys: Arc<KeyStore>, counter: Counter, others: bool) -> Arc<Following> {
    let following = counter.following.clone();
    let topics = topics.clone();
    tokio::spawn(async move {
        while !keys.ready() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let topic = topics.name(SHORT);
        let (snapshot, mut follower) = loop {
            match resume(&topics).await {
                Ok(started) => break started,
                Err(e) => {
                    tracing::warn!(topic = %topics.name(snapshot::SHORT), error = %e, "reading the spend snapshot failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let mut skip = Some(snapshot.seed.into_ledger(&counter.budgets.ledger));
        let mut last_expiry = Timestamp::now();
        loop {
            match follower.next_batch(4096, Duration::from_millis(200)).await {
                Ok(records) => {
                    let now = Timestamp::now();
                    for record in records {
                        let Some(value) = record.value else { continue };
                        if counter.is_own_live(&value) {
                            continue;
                        }
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
                        if !others {
                            return;
                        }
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

/// The snapshot, and a follower of the events after it.
async fn resume(topics: &Topics) -> Result<(Snapshot, Follower), TopicError> {
    let snapshot = snapshot::load(topics).await?;
    tracing::info!(
        topic = %topics.name(snapshot::SHORT),
        accounts = snapshot.seed.len(),
        from = ?snapshot.start,
        "spend snapshot loaded"
    );
    let follower = topics.follow(SHORT, snapshot.follow_from())?;
    Ok((snapshot, follower))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::ledger::Tally;
    use crate::budget::snapshot::{Seed, SpendRecord};
    use crate::events::types::CallerFields;
    use jiff::tz::TimeZone;

    fn counter() -> Counter {
        let table = Arc::new(Table::default());
        let entity = crate::budget::tests::key("k", None, None);
        table.apply(&entity.id(), Some(entity));
        let budgets = Arc::new(Budgets::new(Ledger::new(TimeZone::UTC), None));
        Counter::new(table, budgets, Arc::new(Limiter::default()), "gw-1".into())
    }

    fn response(gateway: &str, cost: f64) -> Event {
        let caller = CallerFields { api_key_hash: Some("k".into()), ..CallerFields::default() };
        let mut event = crate::events::types::tests::response(caller, cost);
        event.envelope.gateway_id = gateway.into();
        Event::Response(Box::new(event))
    }

    #[test]
    fn events_a_snapshot_includes_are_not_counted_again_nor_own_calls_twice() {
        let counter = counter();
        let key = Account::Key("k".into());
        let ledger = &counter.budgets.ledger;
        let policy = Charges::of(&counter.table, &Identity { key_hash: Some("k"), ..Identity::default() }).0[0].policy;
        let now = Timestamp::now();
        // This instance settled a call of 1 USD before reading the snapshot, which has it too
        // (with 2 USD of another instance's calls before it): 3 USD up to offset 10.
        ledger.add(&key, &policy, now, ledger::nanos(1.0));
        let window_start = ledger.tally(&key).unwrap().window_start;
        let mut seed = Seed::default();
        let tally = Tally { window_start, spent: ledger::nanos(3.0) };
        seed.apply(&key.topic_key(), Some(&SpendRecord::new(tally, &[(0, 10)], now).to_json()));
        let resume = seed.into_ledger(ledger);
        assert_eq!(ledger::usd(ledger.spent(&key, &policy, now)), 4.0, "counted twice until the event comes");
        let resume = &resume;
        let at = |offset| move |a: &Account| resume.counts(a, 0, offset);
        // The replay from the consumer's commit: the other instance's call before offset 10 is
        // in the snapshot; this instance's own call at offset 9 is taken back out once.
        counter.count(&response("gw-2", 2.0), now, at(8));
        counter.count(&response("gw-1", 1.0), now, at(9));
        assert_eq!(ledger::usd(ledger.spent(&key, &policy, now)), 3.0);
        // After the snapshot: another instance's call counts, an own call was counted live.
        counter.count(&response("gw-2", 0.5), now, at(10));
        counter.count(&response("gw-1", 0.25), now, at(11));
        assert_eq!(ledger::usd(ledger.spent(&key, &policy, now)), 3.5);
    }
}
