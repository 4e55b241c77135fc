//! Key management, event-sourced: every mutation is a record on the compacted topic
//! `<prefix>.keys`, and every instance builds its [`Table`] by following that topic from its
//! beginning. A write answers once its record is durable and this instance's follower has
//! applied it, so the key works on this instance the moment `/key/generate` returns, and every
//! instance applies every write in the topic's order (two instances updating one key end up
//! with the same record).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::oneshot;

use super::entity::{Entity, EntityId, Mutation};
use super::table::Table;
use crate::error::GatewayError;
use crate::events::topics::{Follower, Start, Topics};

/// The topic, by its short name (`<prefix>.keys`).
const SHORT: &str = "keys";

/// How long a write waits for its record to come back through the follower.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct KeyStore {
    topics: Topics,
    /// `<prefix>.keys`.
    topic: String,
    table: Arc<Table>,
    /// Writes waiting for the follower to apply their record, by write id.
    waiting: DashMap<String, oneshot::Sender<()>>,
    /// Set once the follower has read every record that existed at start.
    ready: AtomicBool,
}

impl KeyStore {
    /// Starts following `<prefix>.keys` from its beginning into `table`, on the current
    /// runtime. [`KeyStore::ready`] turns true once the table holds what the topic held.
    pub fn start(topics: Topics, table: Arc<Table>) -> Result<Arc<Self>, String> {
        let topic = topics.name(SHORT);
        let follower = topics.follow(SHORT, Start::Beginning).map_err(|e| format!("cannot read {topic}: {e}"))?;
        let store = Arc::new(Self { topics, topic, table, waiting: DashMap::new(), ready: AtomicBool::new(false) });
        let reader = store.clone();
        tokio::spawn(async move { reader.follow(follower).await });
        Ok(store)
    }

    pub fn table(&self) -> &Arc<Table> {
        &self.table
    }

    /// True once every mutation that existed at start has been applied.
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Writes an entity's new state; returns once it is durable and applied here.
    pub async fn put(&self, entity: Entity) -> Result<(), GatewayError> {
        let id = entity.id();
        self.write(&id, Mutation::new(Some(entity))).await
    }

    /// Deletes an entity; returns once the deletion is durable and applied here.
    pub async fn delete(&self, id: &EntityId) -> Result<(), GatewayError> {
        self.write(id, Mutation::new(None)).await?;
        // The tombstone lets compaction drop the key; the deletion above already holds.
        if let Err(e) = self.topics.append(SHORT, &id.topic_key(), None).await {
            tracing::warn!(topic = %self.topic, error = %e, "could not write a tombstone; the deletion stands");
        }
        Ok(())
    }

    async fn write(&self, id: &EntityId, mutation: Mutation) -> Result<(), GatewayError> {
        let (tx, rx) = oneshot::channel();
        self.waiting.insert(mutation.write_id.clone(), tx);
        let written = self.topics.append(SHORT, &id.topic_key(), Some(&mutation.to_json())).await;
        if let Err(e) = written {
            self.waiting.remove(&mutation.write_id);
            tracing::error!(topic = %self.topic, error = %e, "a key management write failed");
            return Err(unavailable(format!("The key store could not write the change: {e}")));
        }
        match tokio::time::timeout(APPLY_TIMEOUT, rx).await {
            Ok(Ok(())) => Ok(()),
            _ => {
                self.waiting.remove(&mutation.write_id);
                Err(unavailable(
                    "The change was written but not yet read back from the key log; it will apply shortly".into(),
                ))
            }
        }
    }

    async fn follow(&self, mut follower: Follower) {
        loop {
            match follower.next_batch(1024, Duration::from_millis(500)).await {
                Ok(records) => {
                    for record in records {
                        self.apply(&record.key, record.value.as_deref());
                    }
                    if !self.ready.load(Ordering::Relaxed) && follower.caught_up() {
                        tracing::info!(topic = %self.topic, keys = self.table.key_count(), "key table loaded");
                        self.ready.store(true, Ordering::Release);
                    }
                }
                Err(e) => {
                    tracing::warn!(topic = %self.topic, error = %e, "reading the key log failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn apply(&self, topic_key: &str, value: Option<&[u8]>) {
        let Some(id) = EntityId::parse(topic_key) else {
            tracing::warn!(topic_key, "a record of the key log has an unknown key; ignored");
            return;
        };
        let Some(value) = value else {
            // A tombstone: its deletion was applied from the record before it.
            self.table.apply(&id, None);
            return;
        };
        match Mutation::from_json(value) {
            Ok(mutation) => {
                self.table.apply(&id, mutation.entity);
                if let Some((_, waiter)) = self.waiting.remove(&mutation.write_id) {
                    let _ = waiter.send(());
                }
            }
            Err(e) => tracing::warn!(topic_key, error = %e, "a record of the key log cannot be read; ignored"),
        }
    }
}

fn unavailable(message: String) -> GatewayError {
    GatewayError::Denied { status: 503, kind: "service_unavailable", message }
}
