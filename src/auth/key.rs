//! Virtual key values: how they are made, hashed and shown. Only a key's SHA-256 is kept
//! anywhere (the log, memory, events, metrics); the raw key appears once, in the answer that
//! created it.

use actix_web::http::header::HeaderMap;
use rand::TryRngCore;
use sha2::{Digest, Sha256};

/// Headers carrying the key, in LiteLLM's order of preference.
const KEY_HEADERS: &[&str] =
    &["authorization", "x-litellm-api-key", "api-key", "x-api-key", "x-goog-api-key", "ocp-apim-subscription-key"];

/// What a request presented as its key.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented<'a> {
    None,
    /// A key header was sent with nothing in it (`Authorization: Bearer `).
    Empty,
    Key(&'a str),
}

/// The key a request presents, in the first header that carries one. `Bearer ` (any case) and
/// `Basic ` are optional prefixes, as in LiteLLM.
pub fn presented(headers: &HeaderMap) -> Presented<'_> {
    let mut empty = false;
    for name in KEY_HEADERS {
        let Some(value) = headers.get(*name).and_then(|v| v.to_str().ok()) else { continue };
        let value = value.trim();
        let key = ["Bearer ", "bearer ", "Basic ", "basic "]
            .iter()
            .find_map(|p| value.strip_prefix(p))
            .unwrap_or(value)
            .trim();
        if key.is_empty() || key.eq_ignore_ascii_case("bearer") {
            empty = true;
            continue;
        }
        return Presented::Key(key);
    }
    if empty {
        Presented::Empty
    } else {
        Presented::None
    }
}

/// SHA-256 in lowercase hex: a key's `token`, its only stored form.
pub fn hash(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    }
    out
}

/// URL-safe base64's alphabet.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Random characters in a new key: 6 bits each, 144 bits in all (LiteLLM: 22 characters).
const KEY_CHARS: usize = 24;

/// A new key: `sk-` and 24 URL-safe characters from the operating system's RNG.
pub fn generate() -> Result<String, rand::rand_core::OsError> {
    let mut bytes = [0u8; KEY_CHARS];
    rand::rngs::OsRng.try_fill_bytes(&mut bytes)?;
    let mut key = String::with_capacity(3 + KEY_CHARS);
    key.push_str("sk-");
    key.extend(bytes.iter().map(|b| ALPHABET[usize::from(b & 63)] as char));
    Ok(key)
}

/// `sk-...7sFA`: LiteLLM's `key_name`, enough to recognise a key without revealing it.
pub fn key_name(key: &str) -> String {
    let tail: String = key.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
    let head: String = key.chars().take(3).collect();
    format!("{head}...{tail}")
}

/// `abcd****wxyz`: how LiteLLM shows a key it rejects.
pub fn masked(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 8 {
        return "****".into();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}****{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn finds_the_key_in_any_litellm_header() {
        for (name, value) in [
            ("authorization", "Bearer sk-1"),
            ("authorization", "bearer sk-1"),
            ("authorization", "Basic sk-1"),
            ("x-api-key", "sk-1"),
            ("api-key", "sk-1"),
            ("x-litellm-api-key", "Bearer sk-1"),
            ("x-goog-api-key", "sk-1"),
            ("ocp-apim-subscription-key", "sk-1"),
        ] {
            assert_eq!(presented(&headers(&[(name, value)])), Presented::Key("sk-1"), "{name}");
        }
        assert_eq!(presented(&HeaderMap::new()), Presented::None);
        assert_eq!(presented(&headers(&[("authorization", "Bearer ")])), Presented::Empty);
        // An empty Authorization does not hide a key in another header (anthropic's SDK).
        assert_eq!(presented(&headers(&[("authorization", "Bearer"), ("x-api-key", "sk-2")])), Presented::Key("sk-2"));
    }

    #[test]
    fn generated_keys_are_long_url_safe_and_distinct() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("sk-") && a.len() == 27, "{a}");
        assert!(a[3..].bytes().all(|c| ALPHABET.contains(&c)));
    }

    #[test]
    fn hashes_are_sha256_hex() {
        assert_eq!(hash("sk-1234"), "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b");
    }

    #[test]
    fn shows_keys_without_revealing_them() {
        assert_eq!(key_name("sk-1234567sFA"), "sk-...7sFA");
        assert_eq!(masked("abcdefghijwxyz"), "abcd****wxyz");
        assert_eq!(masked("short"), "****");
    }
}
