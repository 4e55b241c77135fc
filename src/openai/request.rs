//! A client's request body as the gateway handles it: the client's own bytes, with the span of
//! each top-level value. Nothing is parsed until something asks for it, and the upstream body is
//! the client's bytes spliced back together (the model replaced, the gateway's own keys left
//! out, a few keys overridden), so keys keep their order and values their exact text.

use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

/// Why a body is not a request.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("Invalid JSON in request body: {0}")]
    Json(#[from] serde_json::Error),
    #[error("Request body must be a JSON object")]
    NotAnObject,
}

#[derive(Debug, Clone)]
struct Field {
    key: String,
    /// The value's bytes in `RequestBody::bytes`.
    value: Range<usize>,
}

/// A JSON object body, kept as the client sent it.
#[derive(Clone)]
pub struct RequestBody {
    bytes: Bytes,
    /// Top-level fields in order; a key sent twice keeps its last value, as serde_json's maps do.
    fields: Vec<Field>,
}

impl fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBody").field("keys", &self.keys().collect::<Vec<_>>()).finish()
    }
}

/// The top level of an object as (key, raw value) pairs borrowed from the input.
struct TopLevel<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for TopLevel<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = TopLevel<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(key) = map.next_key::<String>()? {
                    let value: &'de RawValue = map.next_value()?;
                    fields.push((key, value));
                }
                Ok(TopLevel(fields))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// Whether a key appears twice: pairwise for the few keys of a real request (no allocation),
/// with a set beyond that, so a body of millions of keys costs linear time, not quadratic.
fn has_repeated_keys(fields: &[Field]) -> bool {
    if fields.len() <= 16 {
        return fields.iter().enumerate().any(|(i, f)| fields[..i].iter().any(|g| g.key == f.key));
    }
    let mut seen = std::collections::HashSet::with_capacity(fields.len());
    !fields.iter().all(|f| seen.insert(f.key.as_str()))
}

/// Collapses repeated keys: each key once, where it first appeared, with its last value.
fn last_value_wins(fields: Vec<Field>) -> Vec<Field> {
    let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::with_capacity(fields.len());
    let mut out: Vec<Field> = Vec::with_capacity(fields.len());
    for field in fields {
        match at.get(&field.key) {
            Some(&i) => out[i].value = field.value,
            None => {
                at.insert(field.key.clone(), out.len());
                out.push(field);
            }
        }
    }
    out
}

impl RequestBody {
    /// Reads the top level of `bytes`; the values themselves are only checked to be valid JSON.
    pub fn parse(bytes: Bytes) -> Result<Self, BodyError> {
        match serde_json::from_slice::<TopLevel>(&bytes) {
            Ok(top) => Ok(Self::from_top_level(&bytes, top)),
            // Valid JSON that is not an object, or not JSON at all.
            Err(e) => match serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
                Ok(_) => Err(BodyError::NotAnObject),
                Err(_) => Err(BodyError::Json(e)),
            },
        }
    }

    fn from_top_level(bytes: &Bytes, top: TopLevel) -> Self {
        let base = bytes.as_ptr() as usize;
        let mut fields: Vec<Field> = top
            .0
            .into_iter()
            .map(|(key, raw)| {
                let text = raw.get();
                let start = text.as_ptr() as usize - base;
                Field { key, value: start..start + text.len() }
            })
            .collect();
        // A key sent twice keeps its last value, in the place of its first.
        if has_repeated_keys(&fields) {
            fields = last_value_wins(fields);
        }
        Self { bytes: bytes.clone(), fields }
    }

    /// A body built by the gateway itself (health checks, tests).
    pub fn from_value(value: &Value) -> Result<Self, BodyError> {
        Self::parse(Bytes::from(serde_json::to_vec(value)?))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|f| f.key.as_str())
    }

    /// The JSON text of `key`'s value.
    pub fn raw(&self, key: &str) -> Option<&[u8]> {
        self.fields.iter().find(|f| f.key == key).map(|f| &self.bytes[f.value.clone()])
    }

    pub fn contains(&self, key: &str) -> bool {
        self.fields.iter().any(|f| f.key == key)
    }

    /// `key`'s value, parsed (it was valid JSON when the body was read).
    pub fn get(&self, key: &str) -> Option<Value> {
        self.raw(key).and_then(|raw| serde_json::from_slice(raw).ok())
    }

    /// `key`'s value read as `T`; `None` when absent, `Err` when it is not a `T`.
    pub fn get_as<'a, T: Deserialize<'a>>(&'a self, key: &str) -> Option<Result<T, serde_json::Error>> {
        self.raw(key).map(serde_json::from_slice)
    }

    /// Removes `key` and returns its value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let at = self.fields.iter().position(|f| f.key == key)?;
        let field = self.fields.remove(at);
        serde_json::from_slice(&self.bytes[field.value]).ok()
    }

    /// The upstream body: `{"model": model, ...the client's other fields..., ...overrides}`, the
    /// client's values copied byte for byte.
    pub fn encode(&self, model: &str, overrides: &[(&'static str, Value)]) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = Vec::with_capacity(self.bytes.len() + model.len() + 64);
        out.extend_from_slice(b"{\"model\":");
        serde_json::to_writer(&mut out, model)?;
        for field in &self.fields {
            if field.key == "model" || overrides.iter().any(|(k, _)| *k == field.key) {
                continue;
            }
            out.push(b',');
            serde_json::to_writer(&mut out, &field.key)?;
            out.push(b':');
            out.extend_from_slice(&self.bytes[field.value.clone()]);
        }
        for (key, value) in overrides {
            out.push(b',');
            serde_json::to_writer(&mut out, key)?;
            out.push(b':');
            serde_json::to_writer(&mut out, value)?;
        }
        out.push(b'}');
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(text: &str) -> RequestBody {
        RequestBody::parse(Bytes::from(text.to_string())).unwrap()
    }

    #[test]
    fn reads_the_top_level_without_parsing_values() {
        let b = body(r#"{"model":"g", "messages":[{"role":"user","content":"hi \"x\""}], "n": 1e3, "k\u00e9y": null}"#);
        assert_eq!(b.keys().collect::<Vec<_>>(), ["model", "messages", "n", "kéy"]);
        assert_eq!(b.raw("n"), Some(&b"1e3"[..]));
        assert_eq!(b.get("messages").unwrap()[0]["content"], "hi \"x\"");
        assert_eq!(b.get_as::<String>("model").unwrap().unwrap(), "g");
        assert!(b.get_as::<bool>("model").unwrap().is_err());
        assert!(b.get("absent").is_none());
    }

    #[test]
    fn encodes_the_clients_bytes_with_the_model_replaced_and_overrides_last() {
        let mut b =
            body(r#"{"temperature": 0.50, "model":"alias","timeout":3,"tools":[ {"a":1} ],"stream_options":{}}"#);
        assert_eq!(b.remove("timeout"), Some(json!(3)));
        let out = b.encode("gpt-4o", &[("stream_options", json!({"include_usage": true}))]).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"model":"gpt-4o","temperature":0.50,"tools":[ {"a":1} ],"stream_options":{"include_usage":true}}"#
        );
    }

    #[test]
    fn rejects_what_is_not_an_object_and_keeps_the_last_duplicate() {
        assert!(matches!(RequestBody::parse(Bytes::from_static(b"[1]")), Err(BodyError::NotAnObject)));
        assert!(matches!(RequestBody::parse(Bytes::from_static(b"{\"a\":")), Err(BodyError::Json(_))));
        assert!(matches!(RequestBody::parse(Bytes::from_static(b"{} x")), Err(BodyError::Json(_))));
        let b = body(r#"{"a":1,"b":2,"a":3}"#);
        assert_eq!(b.get("a"), Some(json!(3)));
        assert_eq!(b.keys().collect::<Vec<_>>(), ["a", "b"]);
        // Many keys, one repeated at the end: found without comparing every pair.
        let many: String = (0..1000).map(|i| format!("\"k{i}\":{i},")).collect();
        let b = body(&format!("{{{many}\"k7\":\"last\"}}"));
        assert_eq!((b.keys().count(), b.get("k7")), (1000, Some(json!("last"))));
    }
}
