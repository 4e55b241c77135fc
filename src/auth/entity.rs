//! The records of key management: virtual keys, teams, users and end users, as they travel on
//! the compacted topic `<prefix>.keys` (one record per entity, keyed `key:<hash>`, `team:<id>`,
//! `user:<id>`, `end_user:<id>`; a deleted entity is a tombstone) and as the in-memory table
//! holds them. Every record is the entity's whole state after a mutation, so the latest record
//! of a key is all a reader needs: compaction loses nothing. Schema: `schemas/events/keys.json`.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The version of the records' shape; readers accept records without it (version 1).
pub const SCHEMA_VERSION: u32 = 1;

/// Budgets and rate limits, the same fields on keys, teams, users and end users.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// USD; over budget once spend in the current window reaches it.
    pub max_budget: Option<f64>,
    /// USD; crossing it only raises an alert.
    pub soft_budget: Option<f64>,
    /// The budget window (`30s`, `1h`, `1d`, `7d`, `30d`, `1mo`); none = spend never resets.
    pub budget_duration: Option<String>,
    pub tpm_limit: Option<u64>,
    pub rpm_limit: Option<u64>,
    pub max_parallel_requests: Option<u64>,
}

/// Where an entity's spend is counted from: `base` USD plus every cost after `since`.
/// `/key/{key}/reset_spend` and `/key/regenerate` move it; creation sets it to the creation
/// time and the request's `spend`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SpendStart {
    pub since: Timestamp,
    pub base: f64,
}

impl SpendStart {
    pub fn now(base: f64) -> Self {
        Self { since: Timestamp::now(), base }
    }
}

/// A per-model budget of a key (`model_max_budget`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelBudget {
    pub budget_limit: f64,
    /// Its window, like `budget_duration`; none = never resets.
    #[serde(default)]
    pub time_period: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// SHA-256 (hex) of the key: its identity everywhere.
    pub token: String,
    /// `sk-...abcd`.
    pub key_name: String,
    pub key_alias: Option<String>,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    /// Model groups, aliases, wildcards (`openai/*`) or `*` / `all-proxy-models`; empty = all.
    #[serde(default)]
    pub models: Vec<String>,
    /// After this the key is refused (`duration` at creation).
    pub expires: Option<Timestamp>,
    #[serde(flatten)]
    pub limits: Limits,
    #[serde(default)]
    pub model_max_budget: BTreeMap<String, ModelBudget>,
    #[serde(default)]
    pub model_rpm_limit: BTreeMap<String, u64>,
    #[serde(default)]
    pub model_tpm_limit: BTreeMap<String, u64>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub blocked: bool,
    /// Routes the key may call (`/chat/completions`, …); empty = LLM routes and its own info.
    #[serde(default)]
    pub allowed_routes: Vec<String>,
    /// LiteLLM's pass-through objects, kept and returned as given.
    #[serde(default)]
    pub aliases: Map<String, Value>,
    #[serde(default)]
    pub config: Map<String, Value>,
    #[serde(default)]
    pub permissions: Map<String, Value>,
    pub spend_start: SpendStart,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub created_by: Option<String>,
    /// Set on the old key of a regeneration: the key that replaced it. The old key works until
    /// `expires` (the grace period), spending against the new key's budget.
    #[serde(default)]
    pub replaced_by: Option<String>,
}

impl KeyRecord {
    /// A key with no limits, models or metadata, created at `now` with no spend.
    pub fn new(token: String, key_name: String, now: Timestamp) -> Self {
        Self {
            token,
            key_name,
            key_alias: None,
            user_id: None,
            team_id: None,
            models: vec![],
            expires: None,
            limits: Limits::default(),
            model_max_budget: BTreeMap::new(),
            model_rpm_limit: BTreeMap::new(),
            model_tpm_limit: BTreeMap::new(),
            metadata: Map::new(),
            tags: vec![],
            blocked: false,
            allowed_routes: vec![],
            aliases: Map::new(),
            config: Map::new(),
            permissions: Map::new(),
            spend_start: SpendStart { since: now, base: 0.0 },
            created_at: now,
            updated_at: now,
            created_by: None,
            replaced_by: None,
        }
    }
}

/// LiteLLM's user roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserRole {
    ProxyAdmin,
    ProxyAdminViewer,
    #[default]
    InternalUser,
    InternalUserViewer,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    pub user_id: String,
    pub user_email: Option<String>,
    pub user_alias: Option<String>,
    #[serde(default)]
    pub user_role: UserRole,
    #[serde(default)]
    pub teams: Vec<String>,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(flatten)]
    pub limits: Limits,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    pub spend_start: SpendStart,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// LiteLLM's team member roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberRole {
    Admin,
    #[default]
    User,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub user_id: Option<String>,
    pub user_email: Option<String>,
    #[serde(default)]
    pub role: MemberRole,
    /// This member's budget within the team (else the team's `team_member_budget`).
    pub max_budget_in_team: Option<f64>,
    pub tpm_limit: Option<u64>,
    pub rpm_limit: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeamRecord {
    pub team_id: String,
    pub team_alias: Option<String>,
    pub organization_id: Option<String>,
    #[serde(default)]
    pub members_with_roles: Vec<Member>,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(flatten)]
    pub limits: Limits,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(default)]
    pub blocked: bool,
    #[serde(default)]
    pub model_aliases: Map<String, Value>,
    /// Defaults for members without their own.
    pub team_member_budget: Option<f64>,
    pub team_member_rpm_limit: Option<u64>,
    pub team_member_tpm_limit: Option<u64>,
    pub spend_start: SpendStart,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl TeamRecord {
    pub fn member(&self, user_id: &str) -> Option<&Member> {
        self.members_with_roles.iter().find(|m| m.user_id.as_deref() == Some(user_id))
    }
}

/// An end user (LiteLLM's "customer"): the `user` field of a request body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndUserRecord {
    pub user_id: String,
    pub alias: Option<String>,
    #[serde(default)]
    pub blocked: bool,
    /// `eu` or `us`.
    pub allowed_model_region: Option<String>,
    pub default_model: Option<String>,
    pub budget_id: Option<String>,
    #[serde(flatten)]
    pub limits: Limits,
    pub spend_start: SpendStart,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// One record of `<prefix>.keys`. Entities live in `Arc`s in the table and travel only on
/// the management path, so the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entity {
    Key(KeyRecord),
    Team(TeamRecord),
    User(UserRecord),
    EndUser(EndUserRecord),
}

/// Which entity a record of `<prefix>.keys` is about: its topic key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EntityId {
    Key(String),
    Team(String),
    User(String),
    EndUser(String),
}

impl EntityId {
    pub fn topic_key(&self) -> String {
        match self {
            Self::Key(hash) => format!("key:{hash}"),
            Self::Team(id) => format!("team:{id}"),
            Self::User(id) => format!("user:{id}"),
            Self::EndUser(id) => format!("end_user:{id}"),
        }
    }

    pub fn parse(topic_key: &str) -> Option<Self> {
        let (kind, id) = topic_key.split_once(':')?;
        let id = id.to_string();
        Some(match kind {
            "key" => Self::Key(id),
            "team" => Self::Team(id),
            "user" => Self::User(id),
            "end_user" => Self::EndUser(id),
            _ => return None,
        })
    }
}

impl Entity {
    pub fn id(&self) -> EntityId {
        match self {
            Self::Key(k) => EntityId::Key(k.token.clone()),
            Self::Team(t) => EntityId::Team(t.team_id.clone()),
            Self::User(u) => EntityId::User(u.user_id.clone()),
            Self::EndUser(e) => EntityId::EndUser(e.user_id.clone()),
        }
    }
}

/// One record of `<prefix>.keys`: an entity's new state (`entity: null` = deleted, later
/// followed by a tombstone so compaction can drop the key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mutation {
    #[serde(default = "version_one")]
    pub v: u32,
    /// Unique per write: the writer waits until its follower has applied this record.
    pub write_id: String,
    pub entity: Option<Entity>,
}

fn version_one() -> u32 {
    1
}

impl Mutation {
    pub fn new(entity: Option<Entity>) -> Self {
        Self { v: SCHEMA_VERSION, write_id: uuid::Uuid::new_v4().to_string(), entity }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> serde_json::Result<Self> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> KeyRecord {
        let mut key = KeyRecord::new("ab".repeat(32), "sk-...wxyz".into(), Timestamp::now());
        key.key_alias = Some("app".into());
        key.team_id = Some("t1".into());
        key.models = vec!["gpt-4o".into()];
        key.limits = Limits { max_budget: Some(1.5), rpm_limit: Some(10), ..Limits::default() };
        key
    }

    #[test]
    fn records_round_trip_with_their_kind_and_version() {
        let mutation = Mutation::new(Some(Entity::Key(key())));
        let json = mutation.to_json();
        let value: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value["v"], 1);
        assert_eq!(value["entity"]["kind"], "key");
        assert_eq!(value["entity"]["max_budget"], 1.5);
        assert_eq!(Mutation::from_json(&json).unwrap(), mutation);
        let deleted = Mutation::new(None);
        assert_eq!(Mutation::from_json(&deleted.to_json()).unwrap(), deleted);
    }

    #[test]
    fn topic_keys_name_the_entity() {
        for id in [EntityId::Key("h".into()), EntityId::Team("t".into()), EntityId::EndUser("e:1".into())] {
            assert_eq!(EntityId::parse(&id.topic_key()), Some(id));
        }
        assert_eq!(EntityId::parse("nope"), None);
    }
}
