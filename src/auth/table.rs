//! The in-memory key table: the latest record of every key, team, user and end user, built by
//! applying `<prefix>.keys` in order. Reads are lock-free per entry (DashMap); records are
//! `Arc`s, so a request holds its caller's records without copying them.

use std::sync::Arc;

use dashmap::DashMap;

use super::entity::{EndUserRecord, Entity, EntityId, KeyRecord, TeamRecord, UserRecord};

#[derive(Default)]
pub struct Table {
    keys: DashMap<String, Arc<KeyRecord>, foldhash::fast::RandomState>,
    /// key_alias → key hash: aliases are unique, and `/key/delete` takes them.
    aliases: DashMap<String, String, foldhash::fast::RandomState>,
    teams: DashMap<String, Arc<TeamRecord>, foldhash::fast::RandomState>,
    users: DashMap<String, Arc<UserRecord>, foldhash::fast::RandomState>,
    end_users: DashMap<String, Arc<EndUserRecord>, foldhash::fast::RandomState>,
}

impl Table {
    /// Applies one record of the topic: the entity's new state, or its deletion.
    pub fn apply(&self, id: &EntityId, entity: Option<Entity>) {
        match (id, entity) {
            (EntityId::Key(hash), Some(Entity::Key(key))) => {
                if let Some(old) = self.keys.get(hash).and_then(|k| k.key_alias.clone()) {
                    self.aliases.remove_if(&old, |_, h| h == hash);
                }
                if let Some(alias) = &key.key_alias {
                    self.aliases.insert(alias.clone(), hash.clone());
                }
                self.keys.insert(hash.clone(), Arc::new(key));
            }
            (EntityId::Key(hash), None) => {
                if let Some((_, old)) = self.keys.remove(hash) {
                    if let Some(alias) = &old.key_alias {
                        self.aliases.remove_if(alias, |_, h| h == hash);
                    }
                }
            }
            (EntityId::Team(id), Some(Entity::Team(team))) => {
                self.teams.insert(id.clone(), Arc::new(team));
            }
            (EntityId::Team(id), None) => {
                self.teams.remove(id);
            }
            (EntityId::User(id), Some(Entity::User(user))) => {
                self.users.insert(id.clone(), Arc::new(user));
            }
            (EntityId::User(id), None) => {
                self.users.remove(id);
            }
            (EntityId::EndUser(id), Some(Entity::EndUser(end_user))) => {
                self.end_users.insert(id.clone(), Arc::new(end_user));
            }
            (EntityId::EndUser(id), None) => {
                self.end_users.remove(id);
            }
            (id, Some(entity)) => {
                tracing::warn!(topic_key = %id.topic_key(), kind = ?entity.id(), "a keys record does not match its key; ignored");
            }
        }
    }

    pub fn key(&self, hash: &str) -> Option<Arc<KeyRecord>> {
        self.keys.get(hash).map(|k| k.clone())
    }

    /// The key a hash stands for: after a regeneration, the key that replaced it.
    pub fn effective_key(&self, hash: &str) -> Option<Arc<KeyRecord>> {
        let key = self.key(hash)?;
        match &key.replaced_by {
            Some(new) => self.key(new).or(Some(key)),
            None => Some(key),
        }
    }

    pub fn key_by_alias(&self, alias: &str) -> Option<Arc<KeyRecord>> {
        let hash = self.aliases.get(alias)?.clone();
        self.key(&hash)
    }

    pub fn team(&self, id: &str) -> Option<Arc<TeamRecord>> {
        self.teams.get(id).map(|t| t.clone())
    }

    pub fn user(&self, id: &str) -> Option<Arc<UserRecord>> {
        self.users.get(id).map(|u| u.clone())
    }

    pub fn end_user(&self, id: &str) -> Option<Arc<EndUserRecord>> {
        self.end_users.get(id).map(|e| e.clone())
    }

    /// Every key matching `keep`, oldest first (ties by hash, so pages are stable).
    pub fn keys_where(&self, keep: impl Fn(&KeyRecord) -> bool) -> Vec<Arc<KeyRecord>> {
        let mut out: Vec<Arc<KeyRecord>> = self.keys.iter().filter(|k| keep(k)).map(|k| k.clone()).collect();
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.token.cmp(&b.token)));
        out
    }

    pub fn teams(&self) -> Vec<Arc<TeamRecord>> {
        let mut out: Vec<_> = self.teams.iter().map(|t| t.clone()).collect();
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.team_id.cmp(&b.team_id)));
        out
    }

    pub fn users(&self) -> Vec<Arc<UserRecord>> {
        let mut out: Vec<_> = self.users.iter().map(|u| u.clone()).collect();
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.user_id.cmp(&b.user_id)));
        out
    }

    pub fn end_users(&self) -> Vec<Arc<EndUserRecord>> {
        let mut out: Vec<_> = self.end_users.iter().map(|e| e.clone()).collect();
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.user_id.cmp(&b.user_id)));
        out
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }
}
