//! Key management routes (LiteLLM's `/key/*`, `/team/*`, `/user/*`, `/customer/*`), one file
//! per entity. Every route takes its caller through an extractor: [`Admin`] (the master key
//! or a `proxy_admin`'s key) or [`Authed`] (any valid key; the handler narrows what it may
//! see). Writes go through the [`crate::auth::KeyStore`] and answer once applied.
//!
//! Bodies are read as JSON objects and merged into the entity's record: a field that is sent
//! replaces the record's, a field that is left out is left alone (LiteLLM's partial updates),
//! and only the fields each route lists can be set. The merged record is then validated.

pub mod customers;
pub mod keys;
pub mod teams;
pub mod users;

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use super::Gateway;
use crate::auth::entity::{Limits, SpendStart};
use crate::auth::Caller;
use crate::budget::ledger::{Account, Policy};
use crate::budget::window::Window;
use crate::error::GatewayError;

/// A caller allowed to manage keys, teams, users and end users.
pub struct Admin(pub Caller);

/// A caller allowed to read what admins manage: an admin, or a `proxy_admin_viewer`'s key.
pub struct Viewer(pub Caller);

/// Any authenticated caller.
pub struct Authed(pub Caller);

fn gateway(req: &HttpRequest) -> Result<&Gateway, GatewayError> {
    req.app_data::<web::Data<Gateway>>()
        .map(|g| g.get_ref())
        .ok_or_else(|| GatewayError::BadRequest("the gateway is not configured".into()))
}

fn authed(req: &HttpRequest) -> Result<Caller, GatewayError> {
    let gw = gateway(req)?;
    let caller = gw.auth.identify(req.headers())?;
    caller.check_expiry(Timestamp::now())?;
    caller.check_route(req.path())?;
    Ok(caller)
}

impl FromRequest for Admin {
    type Error = GatewayError;
    type Future = Ready<Result<Self, GatewayError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authed(req).and_then(|caller| caller.require_admin().map(|()| Admin(caller))))
    }
}

/// A management request's body: a JSON object (empty = `{}`), at most [`BODY_LIMIT`] bytes,
/// arriving within the server's body timeout; anything else is the OpenAI error body.
pub struct Body(pub Map<String, Value>);

/// Management bodies are small; a larger one is a mistake or an attack.
const BODY_LIMIT: usize = 1 << 20;

impl FromRequest for Body {
    type Error = GatewayError;
    type Future = futures_util::future::LocalBoxFuture<'static, Result<Self, GatewayError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let timeout = gateway(req).map(|g| g.body_timeout).unwrap_or(std::time::Duration::from_secs(60));
        let payload = web::Payload::from_request(req, payload).into_inner();
        Box::pin(async move {
            let payload = payload.map_err(|e| bad(format!("Could not read the request body: {e}")))?;
            let bytes = super::read_body(payload, BODY_LIMIT, timeout).await?;
            object(&bytes).map(Body)
        })
    }
}

impl FromRequest for Viewer {
    type Error = GatewayError;
    type Future = Ready<Result<Self, GatewayError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authed(req).and_then(|caller| caller.require_viewer().map(|()| Viewer(caller))))
    }
}

impl FromRequest for Authed {
    type Error = GatewayError;
    type Future = Ready<Result<Self, GatewayError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authed(req).map(Authed))
    }
}

pub fn bad(message: impl Into<String>) -> GatewayError {
    GatewayError::BadRequest(message.into())
}

pub fn not_found(message: impl Into<String>) -> GatewayError {
    GatewayError::NotFound(message.into())
}

/// The body as a JSON object (an empty body is `{}`).
pub fn object(body: &[u8]) -> Result<Map<String, Value>, GatewayError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(bad("The request body must be a JSON object")),
        Err(e) => Err(bad(format!("The request body is not valid JSON: {e}"))),
    }
}

/// A typed value out of a body, with the field named in the error.
pub fn typed<T: DeserializeOwned>(value: Value) -> Result<T, GatewayError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        GatewayError::InvalidParam { message: format!("Invalid `{path}`: {}", e.inner()), param: path }
    })
}

/// One field of a body, typed; absent and `null` are `None`.
pub fn field<T: DeserializeOwned>(body: &Map<String, Value>, name: &str) -> Result<Option<T>, GatewayError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| GatewayError::InvalidParam { message: format!("Invalid `{name}`: {e}"), param: name.into() }),
    }
}

/// A required string field.
pub fn required(body: &Map<String, Value>, name: &str) -> Result<String, GatewayError> {
    field::<String>(body, name)?.filter(|s| !s.is_empty()).ok_or_else(|| GatewayError::InvalidParam {
        message: format!("Missing required parameter: `{name}`"),
        param: name.into(),
    })
}

/// Fields whose JSON `null` means "empty" (collections the records always have).
const COLLECTIONS: &[&str] = &[
    "models",
    "tags",
    "allowed_routes",
    "metadata",
    "aliases",
    "config",
    "permissions",
    "model_max_budget",
    "model_rpm_limit",
    "model_tpm_limit",
    "members_with_roles",
    "model_aliases",
    "teams",
];

/// `record` with the `allowed` fields of `patch` put over it, typed back. A field of the wrong
/// type is a 400 naming it.
pub fn merged<T: Serialize + DeserializeOwned>(
    record: &T,
    patch: &Map<String, Value>,
    allowed: &[&str],
) -> Result<T, GatewayError> {
    let original = serde_json::to_value(record).map_err(|e| bad(e.to_string()))?;
    let apply = |fields: &mut dyn Iterator<Item = &&str>| {
        let mut value = original.clone();
        if let Value::Object(map) = &mut value {
            for name in fields {
                match patch.get(*name) {
                    None => {}
                    Some(Value::Null) if COLLECTIONS.contains(name) => {
                        map.remove(*name);
                    }
                    Some(v) => {
                        map.insert(name.to_string(), v.clone());
                    }
                }
            }
        }
        serde_json::from_value::<T>(value)
    };
    match apply(&mut allowed.iter()) {
        Ok(merged) => Ok(merged),
        Err(e) => {
            // Flattened fields hide the path: find the field that does not fit by itself.
            let culprit = allowed.iter().find(|f| patch.contains_key(**f) && apply(&mut std::iter::once(*f)).is_err());
            let param = culprit.map_or_else(String::new, |f| f.to_string());
            Err(GatewayError::InvalidParam { message: format!("Invalid `{param}`: {e}"), param })
        }
    }
}

/// The fields of [`Limits`].
pub const LIMIT_FIELDS: &[&str] =
    &["max_budget", "soft_budget", "budget_duration", "tpm_limit", "rpm_limit", "max_parallel_requests"];

/// LiteLLM's checks of budgets and windows.
pub fn validate_limits(limits: &Limits) -> Result<(), GatewayError> {
    for (name, value) in [("max_budget", limits.max_budget), ("soft_budget", limits.soft_budget)] {
        if let Some(v) = value {
            if !v.is_finite() || v < 0.0 {
                return Err(GatewayError::InvalidParam {
                    message: format!("{name} cannot be negative. Received: {v}"),
                    param: name.into(),
                });
            }
        }
    }
    if let Some(d) = &limits.budget_duration {
        Window::parse(d).map_err(|e| GatewayError::InvalidParam {
            message: format!("Invalid `budget_duration`: {e}"),
            param: "budget_duration".into(),
        })?;
    }
    Ok(())
}

/// An account's spend now and when its window resets (`budget_reset_at`).
pub fn spend(gw: &Gateway, account: &Account, limits: &Limits, start: SpendStart) -> (f64, Option<Timestamp>) {
    let window = limits.budget_duration.as_deref().and_then(|d| Window::parse(d).ok());
    let policy = Policy { window, start };
    let now = Timestamp::now();
    let ledger = &gw.budgets.ledger;
    let spent = crate::budget::ledger::usd(ledger.spent(account, &policy, now));
    (spent, window.map(|w| w.end(now, ledger.timezone())))
}

/// An entity as the answers show it: its record without the internal `spend_start`, with its
/// spend now, when its budget window resets, and `extra` fields.
pub fn shown(
    gw: &Gateway,
    record: impl Serialize,
    account: &Account,
    limits: &Limits,
    start: SpendStart,
    extra: &[(&str, Value)],
) -> Value {
    let (spent, reset_at) = spend(gw, account, limits, start);
    let mut value = with(record, extra);
    if let Value::Object(map) = &mut value {
        map.remove("spend_start");
        map.insert("spend".into(), Value::from(spent));
        map.insert("budget_reset_at".into(), serde_json::to_value(reset_at).unwrap_or(Value::Null));
    }
    value
}

/// `value` (an object) with extra fields added.
pub fn with(value: impl Serialize, extra: &[(&str, Value)]) -> Value {
    let mut value = serde_json::to_value(value).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        for (k, v) in extra {
            map.insert(k.to_string(), v.clone());
        }
    }
    value
}

/// Paging: `page` from 1, `size` from 1 to `max`.
pub fn page<T: Clone>(items: &[T], page: Option<u64>, size: Option<u64>, max: u64) -> (Vec<T>, u64, u64) {
    let size = size.unwrap_or(10).clamp(1, max);
    let page = page.unwrap_or(1).max(1);
    let total = items.len() as u64;
    let pages = total.div_ceil(size).max(1);
    let start = usize::try_from((page - 1).saturating_mul(size)).unwrap_or(usize::MAX).min(items.len());
    let end = start.saturating_add(size as usize).min(items.len());
    (items[start..end].to_vec(), page, pages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct R {
        a: Option<u64>,
        #[serde(default)]
        models: Vec<String>,
        fixed: String,
    }

    #[test]
    fn a_patch_sets_what_it_sends_and_only_allowed_fields() {
        let record = R { a: Some(1), models: vec!["x".into()], fixed: "f".into() };
        let patch = object(br#"{"a": null, "fixed": "changed"}"#).unwrap();
        let out = merged(&record, &patch, &["a", "models"]).unwrap();
        assert_eq!(out, R { a: None, models: vec!["x".into()], fixed: "f".into() });
        let patch = object(br#"{"models": null}"#).unwrap();
        assert!(merged(&record, &patch, &["models"]).unwrap().models.is_empty());
        let err = merged(&record, &object(br#"{"a": "lots"}"#).unwrap(), &["a"]).unwrap_err();
        assert!(err.to_string().starts_with("Invalid `a`"), "{err}");
    }

    #[test]
    fn negative_budgets_are_refused_in_litellms_words() {
        let err = validate_limits(&Limits { max_budget: Some(-1.0), ..Limits::default() }).unwrap_err();
        assert_eq!(err.to_string(), "max_budget cannot be negative. Received: -1");
        assert!(validate_limits(&Limits { budget_duration: Some("2mo".into()), ..Limits::default() }).is_err());
    }

    #[test]
    fn pages_are_clamped() {
        let items: Vec<u32> = (0..25).collect();
        assert_eq!(page(&items, Some(3), Some(10), 100), (vec![20, 21, 22, 23, 24], 3, 3));
        assert_eq!(page(&items, Some(9), Some(10), 100).0, Vec::<u32>::new());
        assert_eq!(page(&items, None, Some(1000), 100).0.len(), 25);
    }
}
