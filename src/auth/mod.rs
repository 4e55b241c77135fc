//! Who is calling: the master key or a virtual key, resolved once per request into a
//! [`Caller`] that routing, budgets, limits, events and logs read.
//!
//! The checks run in LiteLLM's order, with its messages and error types:
//! [`Auth::identify`] (no key, malformed, not `sk-`, unknown, blocked) from the headers, then
//! [`Caller::check_model`] (key, team and user model access) and [`Caller::check_expiry`] once
//! the body names the model; budgets and rate limits follow (`crate::budget`,
//! `crate::limits`). Management routes take a caller [`Caller::can_manage`] admits.

pub mod entity;
pub mod key;
pub mod store;
pub mod table;

use std::sync::Arc;

use actix_web::http::header::HeaderMap;
use jiff::Timestamp;

use crate::error::GatewayError;
use entity::{KeyRecord, TeamRecord, UserRecord, UserRole};
use key::Presented;

pub use store::KeyStore;
pub use table::Table;

/// What the caller may do beyond calling models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The master key.
    Master,
    /// A virtual key; its user's role (internal user when it has none).
    User(UserRole),
    /// No master key is configured: the gateway is open, as LiteLLM's is.
    Open,
}

/// The caller of one request, computed once.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Hex SHA-256 of the presented key (none on an open gateway).
    pub key_hash: Option<Arc<str>>,
    pub role: Role,
    /// The virtual key's record (after a regeneration, the key that replaced the presented one).
    pub key: Option<Arc<KeyRecord>>,
    pub team: Option<Arc<TeamRecord>>,
    pub user: Option<Arc<UserRecord>>,
    /// When the presented key stops working (its own expiry, or the end of its grace period).
    pub expires: Option<Timestamp>,
}

/// The master key as the gateway keeps it: its hash only.
pub struct MasterKey {
    hash: String,
}

impl MasterKey {
    pub fn new(key: &str) -> Self {
        Self { hash: key::hash(key) }
    }
}

/// Authentication: the master key and the key table.
pub struct Auth {
    pub master: Option<MasterKey>,
    pub table: Arc<Table>,
}

fn unauthorized(message: String) -> GatewayError {
    GatewayError::Denied { status: 401, kind: "auth_error", message: format!("Authentication Error, {message}") }
}

impl Auth {
    /// Checks 1-4 of LiteLLM's order, from the headers alone.
    pub fn identify(&self, headers: &HeaderMap) -> Result<Caller, GatewayError> {
        let presented = key::presented(headers);
        let Some(master) = &self.master else {
            // Keys mean nothing on an open gateway: none is recorded (a client could otherwise
            // grow the metrics' key label without bound).
            return Ok(Caller { key_hash: None, role: Role::Open, key: None, team: None, user: None, expires: None });
        };
        let key = match presented {
            Presented::None => return Err(unauthorized("No api key passed in.".into())),
            Presented::Empty => {
                return Err(unauthorized("Malformed API Key passed in. Ensure Key has `Bearer ` prefix.".into()))
            }
            Presented::Key(key) => key,
        };
        let hash = key::hash(key);
        if hash == master.hash {
            return Ok(Caller {
                key_hash: Some(hash.into()),
                role: Role::Master,
                key: None,
                team: None,
                user: None,
                expires: None,
            });
        }
        if !key.starts_with("sk-") {
            return Err(unauthorized(format!(
                "LiteLLM Virtual Key expected. Received={}, expected to start with 'sk-'.",
                key::masked(key)
            )));
        }
        let Some(record) = self.table.key(&hash) else {
            return Err(GatewayError::Denied {
                status: 401,
                kind: "token_not_found_in_db",
                message: format!(
                    "Authentication Error, Invalid proxy server token passed. Received API Key = {}, Key Hash (Token) ={hash}. Unable to find token in cache or `LiteLLM_VerificationTokenTable`",
                    key::key_name(key)
                ),
            });
        };
        let expires = record.expires;
        // The old key of a regeneration works, within its grace period, as the new key.
        let record = match &record.replaced_by {
            Some(new) => self.table.key(new).unwrap_or(record),
            None => record,
        };
        if record.blocked {
            return Err(unauthorized("Key is blocked. Update via `/key/unblock` if you're an admin.".into()));
        }
        let team = record.team_id.as_deref().and_then(|t| self.table.team(t));
        let user = record.user_id.as_deref().and_then(|u| self.table.user(u));
        let role = Role::User(user.as_ref().map(|u| u.user_role).unwrap_or_default());
        Ok(Caller { key_hash: Some(hash.into()), role, key: Some(record), team, user, expires })
    }
}

impl Caller {
    /// Master key, or a key of a `proxy_admin` user; an open gateway lets anyone manage.
    pub fn can_manage(&self) -> bool {
        matches!(self.role, Role::Master | Role::Open | Role::User(UserRole::ProxyAdmin))
    }

    /// The guard of every management route.
    pub fn require_admin(&self) -> Result<(), GatewayError> {
        self.check_expiry(Timestamp::now())?;
        if self.can_manage() {
            return Ok(());
        }
        Err(unauthorized(
            "Only the master key or a proxy_admin's key can call this route. Your role does not allow it.".into(),
        ))
    }

    /// Admins and `proxy_admin_viewer`s see every key's data; others only their own.
    pub fn can_view_all(&self) -> bool {
        self.can_manage() || self.role == Role::User(UserRole::ProxyAdminViewer)
    }

    /// The guard of the management routes that only read: admins, and `proxy_admin_viewer`s.
    pub fn require_viewer(&self) -> Result<(), GatewayError> {
        if self.role == Role::User(UserRole::ProxyAdminViewer) {
            return self.check_expiry(Timestamp::now());
        }
        self.require_admin()
    }

    /// Check 6: an expired key (status 401, LiteLLM's current one).
    pub fn check_expiry(&self, now: Timestamp) -> Result<(), GatewayError> {
        match self.expires {
            Some(expires) if expires <= now => Err(GatewayError::Denied {
                status: 401,
                kind: "expired_key",
                message: format!(
                    "Authentication Error - Expired Key. Key Expiry time {expires} and current time {now}"
                ),
            }),
            _ => Ok(()),
        }
    }

    /// `allowed_routes`: a key restricted to some routes may call only those.
    pub fn check_route(&self, path: &str) -> Result<(), GatewayError> {
        let Some(key) = &self.key else { return Ok(()) };
        if key.allowed_routes.is_empty() {
            return Ok(());
        }
        let bare = path.strip_prefix("/v1").unwrap_or(path);
        if key.allowed_routes.iter().any(|r| r == path || r.strip_prefix("/v1").unwrap_or(r) == bare) {
            return Ok(());
        }
        Err(unauthorized(format!(
            "Virtual key is not allowed to call this route. Only allowed to call routes: {}. Tried to call route: {path}",
            python_list(&key.allowed_routes)
        )))
    }

    /// Check 5 and common_checks' model access: the key's models, then its team's, then (for
    /// a key outside any team) its user's. `group` is what `model` resolves to.
    pub fn check_model(&self, model: &str, group: Option<&str>) -> Result<(), GatewayError> {
        if let Some(key) = &self.key {
            model_access("key", &key.models, model, group)?;
        }
        if let Some(team) = &self.team {
            if team.blocked {
                return Err(unauthorized(format!(
                    "Team={} is blocked. Update via `/team/unblock` if you're an admin.",
                    team.team_id
                )));
            }
            model_access("team", &team.models, model, group)?;
        }
        if let (Some(user), None) = (&self.user, &self.team) {
            model_access("user", &user.models, model, group)?;
        }
        Ok(())
    }

    pub fn key_alias(&self) -> Option<&str> {
        self.key.as_ref()?.key_alias.as_deref()
    }

    pub fn team_id(&self) -> Option<&str> {
        self.key.as_ref()?.team_id.as_deref()
    }

    pub fn user_id(&self) -> Option<&str> {
        self.key.as_ref()?.user_id.as_deref()
    }
}

/// Whether a models list lets a caller use `model`: empty, `*` and `all-proxy-models` allow
/// all; otherwise the name, the group it resolves to (so a list naming a group allows its
/// aliases), or a wildcard entry (`openai/*`) matching the name.
pub fn models_allow(models: &[String], model: &str, group: Option<&str>) -> bool {
    models.is_empty()
        || models.iter().any(|m| {
            m == "*"
                || m == "all-proxy-models"
                || m == model
                || Some(m.as_str()) == group
                || (m.contains('*') && crate::config::wildcard_matches(m, model))
        })
}

fn model_access(owner: &str, models: &[String], model: &str, group: Option<&str>) -> Result<(), GatewayError> {
    if models_allow(models, model, group) {
        return Ok(());
    }
    let kind = match owner {
        "key" => "key_model_access_denied",
        "team" => "team_model_access_denied",
        _ => "user_model_access_denied",
    };
    Err(GatewayError::Denied {
        status: 401,
        kind,
        message: format!(
            "Authentication Error, {owner} not allowed to access model. This {owner} can only access models={}. Tried to access {model}",
            python_list(models)
        ),
    })
}

/// `['a', 'b']`, as LiteLLM's messages print lists.
pub fn python_list(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|i| format!("'{i}'")).collect();
    format!("[{}]", inner.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn model_lists_allow_names_groups_and_wildcards() {
        assert!(models_allow(&[], "anything", None));
        assert!(models_allow(&strings(&["*"]), "gpt-4o", Some("gpt-4o")));
        assert!(models_allow(&strings(&["all-proxy-models"]), "gpt-4o", None));
        assert!(models_allow(&strings(&["gpt-4o"]), "gpt-4o", Some("gpt-4o")));
        // An alias of an allowed group.
        assert!(models_allow(&strings(&["gpt-4o"]), "smart", Some("gpt-4o")));
        assert!(models_allow(&strings(&["openai/*"]), "openai/gpt-4o-mini", Some("openai/*")));
        assert!(!models_allow(&strings(&["gpt-4o"]), "gpt-3.5", Some("gpt-3.5")));
        assert!(!models_allow(&strings(&["openai/*"]), "anthropic/claude", None));
    }

    fn headers(value: &'static str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(HeaderName::from_static("authorization"), HeaderValue::from_static(value));
        map
    }

    fn auth() -> Auth {
        Auth { master: Some(MasterKey::new("sk-master")), table: Arc::new(Table::default()) }
    }

    fn denied(r: Result<Caller, GatewayError>) -> (u16, &'static str, String) {
        match r {
            Err(GatewayError::Denied { status, kind, message }) => (status, kind, message),
            other => panic!("expected a denial, got {other:?}"),
        }
    }

    #[test]
    fn identifies_in_litellms_order_with_its_messages() {
        let a = auth();
        assert_eq!(a.identify(&headers("Bearer sk-master")).unwrap().role, Role::Master);
        let (status, _, message) = denied(a.identify(&HeaderMap::new()));
        assert_eq!((status, message.as_str()), (401, "Authentication Error, No api key passed in."));
        let (_, _, message) = denied(a.identify(&headers("Bearer ")));
        assert!(message.contains("Malformed API Key passed in"), "{message}");
        let (_, _, message) = denied(a.identify(&headers("Bearer abcdefghwxyz")));
        assert_eq!(
            message,
            "Authentication Error, LiteLLM Virtual Key expected. Received=abcd****wxyz, expected to start with 'sk-'."
        );
        let (status, kind, message) = denied(a.identify(&headers("Bearer sk-unknownkey")));
        assert_eq!((status, kind), (401, "token_not_found_in_db"));
        assert!(message.contains("Received API Key = sk-...nkey"), "{message}");
        assert!(message.contains(&key::hash("sk-unknownkey")), "{message}");
    }

    #[test]
    fn an_open_gateway_admits_everyone() {
        let a = Auth { master: None, table: Arc::new(Table::default()) };
        let caller = a.identify(&HeaderMap::new()).unwrap();
        assert_eq!(caller.role, Role::Open);
        assert!(caller.can_manage());
    }

    #[test]
    fn messages_print_lists_as_litellm_does() {
        assert_eq!(python_list(&strings(&["a", "b"])), "['a', 'b']");
    }
}
