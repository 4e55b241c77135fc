//! Spend snapshots: the compacted topic `<prefix>.spend`, written by the budgets consumer
//! (`crate::consumers::budgets`) and read by every gateway at start, so a gateway counts only
//! the events after the snapshot instead of the whole history. Schema:
//! `schemas/events/spend.json`.
//!
//! # A record
//!
//! One per account, keyed by [`Account::topic_key`] (`key:<hash>`, `team:<id>`, …): the
//! account's [`Tally`] (its window and the nano-dollars counted in it) and `positions`, the
//! next offset per partition of `<prefix>.events` when it was taken. It says: **every event
//! before these positions is in this value, and none after**.
//!
//! # Starting from a snapshot (the gateway, and the consumer itself after a restart)
//!
//! 1. Read the `budgets` consumer's committed position on `.events` ([`GROUP`]), *then* read
//!    `.spend` to its end. The consumer commits only after the records of everything before
//!    its commit are durable, so every account charged by an event before the committed
//!    position has a record, read in step 1's order, that includes that event.
//! 2. Seed each account's tally, and keep its positions ([`Resume`]).
//! 3. Follow `.events` from the committed position (the beginning when there is none). An
//!    event at (partition, offset) counts on an account only if the offset is at or after the
//!    account's position on that partition (an account without a record: always). An account's
//!    record may be ahead of the committed position (the consumer wrote it and stopped before
//!    committing): the events it already includes are skipped for it, counted for the others.
//!    An account's record may also be behind (it was not charged since): then no event between
//!    its position and the committed one charges it, or it would have been written again.
//! 4. Once the follower has caught up with the end of `.events` it had at start, every
//!    position has been passed and the [`Resume`] is dropped.
//!
//! So each event is counted once on each account, whatever the consumer's crashes and
//! replays: in effect exactly once, on top of the log's at-least-once delivery. (A response
//! event delivered twice by the publisher is two events here, as it is for the follower
//! without snapshots.)
//!
//! This holds with **one** budgets consumer per log: two would interleave their records and
//! commits, and an account's latest record could then be older than a commit made by the
//! other one. The key table is the one at fold time, as on every gateway: an event of a key
//! the table does not know (yet, or any more) charges nothing.

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::ledger::{Account, Ledger, Tally};
use crate::events::topics::{Start, TopicError, Topics};

/// The topic, by its short name (`<prefix>.spend`).
pub const SHORT: &str = "spend";
/// The budgets consumer's name on `<prefix>.events`: its committed position is where
/// snapshots start from.
pub const GROUP: &str = "budgets";
/// The version of the records' shape.
pub const SCHEMA_VERSION: u32 = 1;

/// The next offset to read on one partition of `<prefix>.events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub partition: i32,
    pub offset: i64,
}

/// The value of one record of `<prefix>.spend`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpendRecord {
    #[serde(default = "version_one")]
    pub schema_version: u32,
    /// Where the window `spent` belongs to starts (the budget window, or the spend start if
    /// later).
    pub window_start: Timestamp,
    /// Nano-dollars counted in that window (without the entity's `spend` base).
    pub spent: i64,
    /// `<prefix>.events` positions this value includes every event before.
    pub positions: Vec<Position>,
    /// When the consumer wrote it.
    pub updated_at: Timestamp,
}

fn version_one() -> u32 {
    1
}

impl SpendRecord {
    pub fn new(tally: Tally, positions: &[(i32, i64)], now: Timestamp) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            window_start: tally.window_start,
            spent: tally.spent,
            positions: positions.iter().map(|&(partition, offset)| Position { partition, offset }).collect(),
            updated_at: now,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> serde_json::Result<Self> {
        serde_json::from_slice(bytes)
    }

    pub fn tally(&self) -> Tally {
        Tally { window_start: self.window_start, spent: self.spent }
    }
}

/// Each account's snapshot position, while the follower replays events from before some of
/// them. Dropped once the follower has caught up.
#[derive(Debug, Default)]
pub struct Resume {
    positions: HashMap<Account, Vec<Position>>,
}

impl Resume {
    /// Whether the event at `offset` of `partition` still counts on `account`: its snapshot
    /// does not include it.
    pub fn counts(&self, account: &Account, partition: i32, offset: i64) -> bool {
        match self.positions.get(account) {
            None => true,
            Some(positions) => offset >= positions.iter().find(|p| p.partition == partition).map_or(0, |p| p.offset),
        }
    }

    pub fn len(&self) -> usize {
        self.positions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }
}

/// The latest record of every account, gathered from `<prefix>.spend` in order.
#[derive(Debug, Default)]
pub struct Seed {
    latest: HashMap<Account, SpendRecord>,
}

impl Seed {
    /// Accounts with a record.
    pub fn len(&self) -> usize {
        self.latest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }

    /// Applies one record of the topic (`None`: a tombstone, the account's spend is gone).
    pub fn apply(&mut self, key: &str, value: Option<&[u8]>) {
        let Some(account) = Account::from_topic_key(key) else {
            tracing::warn!(topic_key = key, "a spend record has an unknown key; ignored");
            return;
        };
        match value.map(SpendRecord::from_json) {
            None => {
                self.latest.remove(&account);
            }
            Some(Ok(record)) => {
                self.latest.insert(account, record);
            }
            Some(Err(e)) => tracing::warn!(topic_key = key, error = %e, "a spend record cannot be read; ignored"),
        }
    }

    /// Seeds the ledger with every account's tally; returns their positions.
    pub fn into_ledger(self, ledger: &Ledger) -> Resume {
        let mut resume = Resume::default();
        for (account, record) in self.latest {
            ledger.seed(&account, record.tally());
            resume.positions.insert(account, record.positions);
        }
        resume
    }
}

/// Where to follow `<prefix>.events` from, and the accounts' records.
#[derive(Debug)]
pub struct Snapshot {
    /// The budgets consumer's committed position (empty: from the beginning).
    pub start: Vec<(i32, i64)>,
    /// The latest record of each account, for [`Seed::into_ledger`] once nothing can fail.
    pub seed: Seed,
}

impl Snapshot {
    /// The [`Start`] of a follower of `<prefix>.events` that counts after this snapshot.
    pub fn follow_from(&self) -> Start {
        if self.start.is_empty() {
            Start::Beginning
        } else {
            Start::At(self.start.clone())
        }
    }
}

/// Step 1 of the module doc: the committed position, then `<prefix>.spend` read to its end.
pub async fn load(topics: &Topics) -> Result<Snapshot, TopicError> {
    let start = topics.committed("events", GROUP).await?;
    let mut follower = topics.follow(SHORT, Start::Beginning)?;
    let mut seed = Seed::default();
    loop {
        for record in follower.next_batch(4096, Duration::from_millis(200)).await? {
            seed.apply(&record.key, record.value.as_deref());
        }
        if follower.caught_up() {
            break;
        }
    }
    Ok(Snapshot { start, seed })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::tz::TimeZone;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_record_round_trips_and_names_its_positions() {
        let tally = Tally { window_start: ts("2026-11-28T11:09:30.123456789Z"), spent: 11_000_000 };
        let record = SpendRecord::new(tally, &[(0, 42), (1, 7)], ts("2026-11-28T12:00:00Z"));
        let json: serde_json::Value = serde_json::from_slice(&record.to_json()).unwrap();
        assert_eq!(json["spent"], 11_000_000);
        assert_eq!(json["window_start"], "2026-11-28T11:09:30.123456789Z");
        assert_eq!(json["positions"][1], serde_json::json!({"partition": 1, "offset": 7}));
        assert_eq!(SpendRecord::from_json(&record.to_json()).unwrap(), record);
        assert_eq!(record.tally(), tally);
    }

    #[test]
    fn the_latest_record_of_each_account_seeds_the_ledger() {
        let at = ts("2026-11-28T00:00:00Z");
        let record = |spent, offset| SpendRecord::new(Tally { window_start: at, spent }, &[(0, offset)], at).to_json();
        let mut seed = Seed::default();
        seed.apply("key:a", Some(&record(5, 10)));
        seed.apply("key:a", Some(&record(8, 20)));
        seed.apply("team:t", Some(&record(3, 4)));
        seed.apply("team:t", None);
        seed.apply("bogus", Some(&record(1, 1)));
        seed.apply("user:u", Some(b"not json"));
        let ledger = Ledger::new(TimeZone::UTC);
        let resume = seed.into_ledger(&ledger);
        let key = Account::Key("a".into());
        assert_eq!(ledger.tally(&key), Some(Tally { window_start: at, spent: 8 }));
        assert_eq!(ledger.tally(&Account::Team("t".into())), None);
        assert_eq!(resume.len(), 1);
        assert!(!resume.counts(&key, 0, 19));
        assert!(resume.counts(&key, 0, 20));
        assert!(resume.counts(&key, 1, 0), "a partition the record does not name counts from its start");
        assert!(resume.counts(&Account::Team("t".into()), 0, 0));
    }
}
