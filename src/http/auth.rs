//! The master key: accepted in every header LiteLLM accepts. A missing or wrong key is 401
//! with the OpenAI error body (LiteLLM without a database answers 500 or 400 here).

use actix_web::HttpRequest;
use sha2::{Digest, Sha256};

use super::Gateway;
use crate::error::GatewayError;

/// Headers carrying the key, in LiteLLM's order of preference.
const KEY_HEADERS: &[&str] = &["authorization", "x-litellm-api-key", "api-key", "x-api-key", "x-goog-api-key"];

pub fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The key a request presents, if any (`Bearer ` is optional, as in LiteLLM).
fn presented_key(req: &HttpRequest) -> Option<&str> {
    KEY_HEADERS.iter().find_map(|name| {
        let value = req.headers().get(*name)?.to_str().ok()?.trim();
        let key = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).unwrap_or(value).trim();
        (!key.is_empty()).then_some(key)
    })
}

/// SHA-256 in hex: how keys appear in events and metrics (never the key itself).
pub fn hex_hash(key: &str) -> String {
    hash(key).iter().map(|b| format!("{b:02x}")).collect()
}

/// The master key as the gateway keeps it: only its hash, raw and hex.
pub struct MasterKey {
    hash: [u8; 32],
    hex: std::sync::Arc<str>,
}

impl MasterKey {
    pub fn new(key: &str) -> Self {
        Self { hash: hash(key), hex: hex_hash(key).into() }
    }
}

/// Admits the request when no master key is configured or the right one is presented; returns
/// the hex hash of the key it presented (computed once, at startup).
pub fn authorize(req: &HttpRequest, gw: &Gateway) -> Result<Option<std::sync::Arc<str>>, GatewayError> {
    let Some(expected) = &gw.master_key else {
        return Ok(presented_key(req).map(|key| hex_hash(key).into()));
    };
    match presented_key(req) {
        None => Err(GatewayError::Unauthorized(
            "Authentication Error, No api key passed in. Pass it as `Authorization: Bearer <key>` (or x-api-key, api-key, x-litellm-api-key).".into(),
        )),
        Some(key) if hash(key) == expected.hash => Ok(Some(expected.hex.clone())),
        Some(key) => Err(GatewayError::Unauthorized(format!("Authentication Error, Invalid proxy server token passed. Received API Key = {}", abbreviate(key)))),
    }
}

/// `sk-...7sFA`: enough to recognise a key without revealing it.
pub fn abbreviate(key: &str) -> String {
    let tail: String = key.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
    let head: String = key.chars().take(3).collect();
    format!("{head}...{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn finds_the_key_in_any_litellm_header() {
        for (name, value) in [
            ("authorization", "Bearer sk-1"),
            ("x-api-key", "sk-1"),
            ("api-key", "sk-1"),
            ("x-litellm-api-key", "Bearer sk-1"),
            ("x-goog-api-key", "sk-1"),
        ] {
            let req = TestRequest::default().insert_header((name, value)).to_http_request();
            assert_eq!(presented_key(&req), Some("sk-1"), "{name}");
        }
        assert_eq!(presented_key(&TestRequest::default().to_http_request()), None);
    }

    #[test]
    fn abbreviates_keys() {
        assert_eq!(abbreviate("sk-1234567sFA"), "sk-...7sFA");
    }
}
