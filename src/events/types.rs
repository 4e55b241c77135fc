//! The events, as published. Each type has a JSON Schema under `schemas/events/`; fields may be
//! added in later versions, never removed or retyped without a new `schema_version`.
//!
//! The types serialize to exactly that JSON and deserialize from it (consumers read them back).
//! Fields that hold one of a closed set of names (`type`, `call_type`, `endpoint`, `status`,
//! `change`) are `&'static str`; reading an event back maps them onto the names this version
//! knows, and a name it does not know is an error.

use std::time::SystemTime;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

pub const SCHEMA_VERSION: u32 = 1;

/// RFC 3339 with milliseconds, UTC (`2026-11-21T13:27:39.586Z`).
pub fn timestamp(at: SystemTime) -> String {
    let text = rfc3339_millis(at);
    // ASCII digits and separators only.
    String::from_utf8_lossy(&text).into_owned()
}

/// `at` as RFC 3339 with milliseconds, UTC, without going through `fmt` (events carry several
/// timestamps, formatted on every call). Times before 1970 are written as 1970, after 9999 as
/// the end of 9999.
fn rfc3339_millis(at: SystemTime) -> [u8; 24] {
    const MAX_SECS: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let (secs, millis) = match since.as_secs() {
        s if s > MAX_SECS => (MAX_SECS, 999),
        s => (s, since.subsec_millis()),
    };
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (non-negative here).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let mut out = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut value: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, rem / 3_600);
    put(14, 2, rem / 60 % 60);
    put(17, 2, rem % 60);
    put(20, 3, u64::from(millis));
    out
}

/// A name from a closed set (`&'static str`; an alias so that serde's derive does not read the
/// field as borrowed from the input, which would tie deserializing to `'static` input).
pub type Name = &'static str;

/// The closed sets of names, as this version writes them.
pub mod names {
    pub const KINDS: &[&str] = &["request", "response", "deployment"];
    pub const CALL_TYPES: &[&str] = &["acompletion", "atext_completion", "aembedding"];
    pub const ENDPOINTS: &[&str] = &["/chat/completions", "/completions", "/embeddings"];
    pub const STATUSES: &[&str] = &["success", "failure"];
    pub const CHANGES: &[&str] =
        &["cooldown_entered", "cooldown_left", "health_check_failed", "health_check_recovered"];
}

/// Reads a name of a closed set back as the `&'static str` this version writes.
fn known<'de, D: Deserializer<'de>>(d: D, set: &'static [&'static str], what: &str) -> Result<&'static str, D::Error> {
    let name = std::borrow::Cow::<'de, str>::deserialize(d)?;
    set.iter()
        .find(|known| **known == name)
        .copied()
        .ok_or_else(|| serde::de::Error::custom(format!("unknown {what} {name:?}")))
}

fn kind<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    known(d, names::KINDS, "event type")
}
fn call_type<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    known(d, names::CALL_TYPES, "call_type")
}
fn endpoint<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    known(d, names::ENDPOINTS, "endpoint")
}
fn status<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    known(d, names::STATUSES, "status")
}
fn change<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    known(d, names::CHANGES, "change")
}

/// An event's id: a random UUID, kept as its text (no allocation, written as is).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventId([u8; 36]);

impl EventId {
    pub fn random() -> Self {
        let mut text = [0u8; 36];
        uuid::Builder::from_random_bytes(rand::random()).into_uuid().hyphenated().encode_lower(&mut text);
        Self(text)
    }

    pub fn as_str(&self) -> &str {
        // Only ever built from a UUID's (ASCII) text.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Debug for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        let uuid = uuid::Uuid::parse_str(&text).map_err(serde::de::Error::custom)?;
        let mut out = [0u8; 36];
        uuid.hyphenated().encode_lower(&mut out);
        Ok(Self(out))
    }
}

/// When an event happened, to the millisecond; written as RFC 3339 (UTC) when the event is
/// serialized (by the publisher thread, not the handler).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct Timestamp(SystemTime);

impl Timestamp {
    pub fn now() -> Self {
        Self::at(SystemTime::now())
    }

    /// `at`, truncated to the millisecond (what the JSON holds).
    pub fn at(at: SystemTime) -> Self {
        let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let millis = std::time::Duration::from_millis(since.as_millis().try_into().unwrap_or(u64::MAX));
        Self(SystemTime::UNIX_EPOCH + millis)
    }

    pub fn system_time(self) -> SystemTime {
        self.0
    }

    /// Milliseconds since the epoch (0 before it).
    pub fn unix_millis(self) -> u64 {
        self.0.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = rfc3339_millis(self.0);
        s.serialize_str(std::str::from_utf8(&text).unwrap_or_default())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        humantime::parse_rfc3339_weak(&text).map(Self::at).map_err(serde::de::Error::custom)
    }
}

/// How far into an event's JSON the hints look: past the envelope of an event whose ids have
/// the usual lengths.
const HINT_WINDOW: usize = 400;

/// An event's `type`, read from the start of its JSON without parsing it, when it is where the
/// publisher writes it (the envelope comes first); `None` when it is not found there, and the
/// caller must parse the event to know.
pub fn kind_hint(json: &[u8]) -> Option<&str> {
    field_hint(json, b"\"type\":\"", 16)
}

/// An event's `gateway_id` and `timestamp`, read from its envelope like [`kind_hint`]; `None`
/// when they are not where the publisher writes them (parse the event instead).
pub fn origin_hint(json: &[u8]) -> Option<(&str, jiff::Timestamp)> {
    let gateway = field_hint(json, b"\"gateway_id\":\"", 200)?;
    let at = field_hint(json, b"\"timestamp\":\"", 40)?.parse().ok()?;
    Some((gateway, at))
}

/// A string field written near the start of an event's JSON (the envelope's), read without
/// parsing; `None` when it is not there or is not a plain string of at most `max` bytes. (A
/// string value cannot hold the field's name in quotes: its quotes are escaped.)
fn field_hint<'a>(json: &'a [u8], field: &[u8], max: usize) -> Option<&'a str> {
    let head = &json[..json.len().min(HINT_WINDOW)];
    let start = head.windows(field.len()).position(|w| w == field)? + field.len();
    let len = json[start..].iter().take(max).position(|b| *b == b'"')?;
    let value = &json[start..start + len];
    // An escape inside means the value is not the plain text between the quotes.
    (!value.contains(&b'\\')).then(|| std::str::from_utf8(value).ok()).flatten()
}

/// The fields that route an event (its type and key), read from its JSON without parsing the
/// rest: the spool's old records, and the embedded log's topic views.
#[derive(Debug, Deserialize)]
pub(crate) struct RouteFields {
    /// `request`, `response` or `deployment`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The key of request and response events.
    pub request_id: Option<String>,
    /// The key of deployment events.
    pub deployment_id: Option<String>,
}

impl RouteFields {
    pub(crate) fn of(json: &[u8]) -> Option<Self> {
        serde_json::from_slice(json).ok()
    }

    /// The same for request and response events as the publisher writes them, read from the
    /// envelope's bytes (what the embedded events view does for every event); `None` for
    /// anything else (the caller parses).
    pub(crate) fn hint(json: &[u8]) -> Option<Self> {
        let kind = kind_hint(json)?;
        if kind != "request" && kind != "response" {
            return None;
        }
        let request_id = field_hint(json, b"\"request_id\":\"", 128)?;
        Some(Self { kind: kind.to_string(), request_id: Some(request_id.to_string()), deployment_id: None })
    }
}

/// Fields every event carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub schema_version: u32,
    /// Unique per event, for de-duplication (delivery is at least once).
    pub event_id: EventId,
    #[serde(rename = "type", deserialize_with = "kind")]
    pub kind: Name,
    /// The call's `x-litellm-call-id`; null for deployment events.
    pub request_id: Option<String>,
    pub gateway_id: String,
    pub timestamp: Timestamp,
}

impl Envelope {
    pub fn new(kind: &'static str, request_id: Option<String>, gateway_id: &str) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            event_id: EventId::random(),
            kind,
            request_id,
            gateway_id: gateway_id.to_string(),
            timestamp: Timestamp::now(),
        }
    }
}

/// A call was admitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestEvent {
    #[serde(flatten)]
    pub envelope: Envelope,
    /// LiteLLM's call type: `acompletion`, `atext_completion`, `aembedding`.
    #[serde(deserialize_with = "call_type")]
    pub call_type: Name,
    #[serde(deserialize_with = "endpoint")]
    pub endpoint: Name,
    /// The model the client asked for (`model` of the body, as sent).
    pub requested_model: String,
    /// The model group that name resolved to (an alias resolves to its target); null when the
    /// gateway does not know the model.
    pub model_group: Option<String>,
    pub stream: bool,
    #[serde(flatten)]
    pub caller: CallerFields,
    pub tags: Vec<String>,
    pub metadata: Option<Value>,
    /// Sampling and shape parameters (temperature, max_tokens, n, number of tools, …).
    pub params: Value,
    pub prompt_bytes: u64,
    pub prompt_tokens_estimate: u64,
    /// The messages/prompt/input, only with `general_settings.store_prompts_in_spend_logs`.
    pub messages: Option<Value>,
    /// USD reserved against each of the caller's budgets until the call settles (its
    /// worst-case cost; 0 when nothing is reserved). Other instances count it until they see
    /// the call's response event.
    #[serde(default)]
    pub reserved_cost: f64,
}

/// Who made a call, on its request and response events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallerFields {
    /// SHA-256 (hex) of the key presented; never the key itself.
    pub api_key_hash: Option<String>,
    pub key_alias: Option<String>,
    /// The key's user (`user_id`).
    pub user: Option<String>,
    pub team_id: Option<String>,
    /// The end user: the request body's `user` field.
    pub end_user: Option<String>,
}

/// A call finished: answered, failed, or abandoned by the client mid-stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseEvent {
    #[serde(flatten)]
    pub envelope: Envelope,
    #[serde(deserialize_with = "call_type")]
    pub call_type: Name,
    /// The model the client asked for.
    pub requested_model: String,
    /// The group that answered (differs after a fallback); null when none was reached.
    pub model_group: Option<String>,
    #[serde(flatten)]
    pub caller: CallerFields,
    /// The request's `metadata.tags`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The request's `metadata`.
    #[serde(default)]
    pub metadata: Option<Value>,
    pub deployment_id: Option<String>,
    pub provider: Option<String>,
    pub upstream_model: Option<String>,
    pub api_base: Option<String>,
    /// `success` or `failure`.
    #[serde(deserialize_with = "status")]
    pub status: Name,
    pub http_status: u16,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    /// Upstream calls made (retries included).
    pub attempts: u32,
    pub retries: u32,
    pub fallbacks: u32,
    pub stream: bool,
    /// False when the client went away before the stream ended.
    pub completed: bool,
    pub start_time: String,
    pub end_time: String,
    pub first_token_time: Option<String>,
    pub duration_ms: f64,
    pub overhead_ms: f64,
    /// prompt, completion, total, cache read/write and reasoning token counts.
    #[serde(flatten)]
    pub tokens: crate::openai::TokenUsage,
    /// USD, equal to the `x-litellm-response-cost` header.
    pub cost: f64,
    /// True when the token counts are the gateway's estimate: a stream that ended (client gone,
    /// upstream cut) before the upstream reported its usage; about one token per text chunk.
    pub tokens_estimated: bool,
    pub cache_hit: bool,
    pub finish_reason: Option<String>,
    /// The response body, only with `general_settings.store_prompts_in_spend_logs`.
    pub response: Option<Value>,
}

/// A deployment's health changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentEvent {
    #[serde(flatten)]
    pub envelope: Envelope,
    pub deployment_id: String,
    pub model_group: String,
    pub provider: String,
    pub api_base: String,
    /// `cooldown_entered`, `cooldown_left`, `health_check_failed`, `health_check_recovered`.
    #[serde(deserialize_with = "change")]
    pub change: Name,
    pub reason: Option<String>,
    pub cooldown_until: Option<String>,
}

impl DeploymentEvent {
    pub fn new(
        d: &crate::config::DeploymentConfig,
        gateway_id: &str,
        change: &'static str,
        reason: Option<String>,
        cooldown_until: Option<SystemTime>,
    ) -> Self {
        Self {
            envelope: Envelope::new("deployment", None, gateway_id),
            deployment_id: d.id.clone(),
            model_group: d.model_name.clone(),
            provider: d.provider.name.to_string(),
            api_base: d.api_base.clone(),
            change,
            reason,
            cooldown_until: cooldown_until.map(timestamp),
        }
    }
}

/// Anything published.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Request(Box<RequestEvent>),
    Response(Box<ResponseEvent>),
    Deployment(Box<DeploymentEvent>),
}

impl Event {
    /// Appends the event's JSON to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let result = match self {
            Self::Request(e) => serde_json::to_writer(&mut *out, e),
            Self::Response(e) => serde_json::to_writer(&mut *out, e),
            Self::Deployment(e) => serde_json::to_writer(&mut *out, e),
        };
        // Serializing these structs cannot fail (string keys, finite numbers or null) and
        // writing to a Vec cannot either.
        debug_assert!(result.is_ok());
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1024);
        self.write_json(&mut out);
        out
    }

    /// An event read back from its JSON.
    pub fn from_json(json: &[u8]) -> serde_json::Result<Self> {
        serde_json::from_slice(json)
    }

    pub fn envelope(&self) -> &Envelope {
        match self {
            Self::Request(e) => &e.envelope,
            Self::Response(e) => &e.envelope,
            Self::Deployment(e) => &e.envelope,
        }
    }
}

impl Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Request(e) => e.serialize(s),
            Self::Response(e) => e.serialize(s),
            Self::Deployment(e) => e.serialize(s),
        }
    }
}

/// By its `type` field.
impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let value = Value::deserialize(d)?;
        let kind = value.get("type").and_then(Value::as_str).ok_or_else(|| D::Error::missing_field("type"))?;
        let event = match kind {
            "request" => serde_json::from_value(value).map(|e| Self::Request(Box::new(e))),
            "response" => serde_json::from_value(value).map(|e| Self::Response(Box::new(e))),
            "deployment" => serde_json::from_value(value).map(|e| Self::Deployment(Box::new(e))),
            other => return Err(D::Error::custom(format!("unknown event type {other:?}"))),
        };
        event.map_err(D::Error::custom)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::providers::Endpoint;
    use serde_json::json;

    fn request() -> RequestEvent {
        RequestEvent {
            envelope: Envelope::new("request", Some("call-1".into()), "gw-1"),
            call_type: "acompletion",
            endpoint: "/chat/completions",
            requested_model: "gpt-4o".into(),
            model_group: Some("gpt-4o-group".into()),
            stream: false,
            caller: CallerFields {
                user: Some("alice".into()),
                end_user: Some("alice".into()),
                ..CallerFields::default()
            },
            tags: vec!["a".into()],
            metadata: Some(json!({"tags": ["a"]})),
            params: json!({"temperature": 0.2}),
            prompt_bytes: 11,
            prompt_tokens_estimate: 3,
            messages: None,
            reserved_cost: 0.0,
        }
    }

    /// A response event of `caller` that cost `cost` USD (a failed embedding call).
    pub(crate) fn response(caller: CallerFields, cost: f64) -> ResponseEvent {
        ResponseEvent {
            envelope: Envelope::new("response", Some("call-1".into()), "gw-1"),
            call_type: "aembedding",
            requested_model: "e".into(),
            model_group: None,
            caller,
            tags: vec!["batch".into()],
            metadata: Some(json!({"tags": ["batch"]})),
            deployment_id: None,
            provider: None,
            upstream_model: None,
            api_base: None,
            status: "failure",
            http_status: 400,
            error_type: Some("invalid_request_error".into()),
            error_message: Some("no".into()),
            attempts: 0,
            retries: 0,
            fallbacks: 0,
            stream: false,
            completed: true,
            start_time: timestamp(SystemTime::now()),
            end_time: timestamp(SystemTime::now()),
            first_token_time: None,
            duration_ms: 1.5,
            overhead_ms: 0.25,
            tokens: crate::openai::TokenUsage::new(2, 9),
            cost,
            tokens_estimated: false,
            cache_hit: false,
            finish_reason: None,
            response: None,
        }
    }

    #[test]
    fn the_kind_is_read_from_the_start_of_the_json() {
        let json = Event::Request(Box::new(request())).to_json();
        assert_eq!(kind_hint(&json), Some("request"));
        let hint = RouteFields::hint(&json).unwrap();
        assert_eq!((hint.kind.as_str(), hint.request_id.as_deref()), ("request", Some("call-1")));
        assert!(RouteFields::hint(br#"{"type":"request","request_id":"a\"b"}"#).is_none());
        assert_eq!(kind_hint(br#"{"a":1}"#), None);
        assert_eq!(kind_hint(br#"{"type":"unterminated"#), None);
    }

    #[test]
    fn the_origin_is_read_from_the_envelope_as_a_parse_would() {
        let mut event = request();
        event.envelope.request_id = Some("a \"gateway_id\":\"spoof\" in a call id".into());
        let json = Event::Request(Box::new(event.clone())).to_json();
        let (gateway, at) = origin_hint(&json).unwrap();
        assert_eq!(gateway, event.envelope.gateway_id);
        assert_eq!(jiff::Timestamp::try_from(event.envelope.timestamp.system_time()).unwrap(), at);
        assert_eq!(origin_hint(br#"{"gateway_id":"g"}"#), None, "no timestamp: parse instead");
    }

    #[test]
    fn events_read_back_as_they_were_written() {
        let request = Event::Request(Box::new(request()));
        let json = request.to_json();
        let value: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(
            (value["requested_model"].as_str(), value["model_group"].as_str()),
            (Some("gpt-4o"), Some("gpt-4o-group"))
        );
        assert_eq!(Event::from_json(&json).unwrap(), request);

        let response = Event::Response(Box::new(response(
            CallerFields { api_key_hash: Some("ab".into()), team_id: Some("t".into()), ..CallerFields::default() },
            0.125,
        )));
        assert_eq!(Event::from_json(&response.to_json()).unwrap(), response);

        let deployment = Event::Deployment(Box::new(DeploymentEvent {
            envelope: Envelope::new("deployment", None, "gw-1"),
            deployment_id: "d".into(),
            model_group: "g".into(),
            provider: "openai".into(),
            api_base: "http://x".into(),
            change: "cooldown_left",
            reason: None,
            cooldown_until: None,
        }));
        assert_eq!(Event::from_json(&deployment.to_json()).unwrap(), deployment);
    }

    #[test]
    fn timestamps_are_rfc3339_with_milliseconds() {
        let mut at = SystemTime::UNIX_EPOCH;
        // Every few days over 1970..2400 (leap years, month ends), at odd times of day.
        for _ in 0..12_000 {
            assert_eq!(timestamp(at), humantime::format_rfc3339_millis(at).to_string());
            at += std::time::Duration::from_millis(11 * 86_400_000 + 3_723_456);
        }
        let leap = humantime::parse_rfc3339("2024-02-29T23:59:59.999Z").unwrap();
        assert_eq!(timestamp(leap), "2024-02-29T23:59:59.999Z");
        assert_eq!(timestamp(SystemTime::UNIX_EPOCH - std::time::Duration::from_secs(5)), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn every_name_the_gateway_writes_reads_back() {
        for e in [Endpoint::ChatCompletions, Endpoint::Completions, Endpoint::Embeddings] {
            assert!(names::CALL_TYPES.contains(&e.call_type()), "{e:?}");
            assert!(names::ENDPOINTS.contains(&e.path()), "{e:?}");
        }
        let mut value: Value = serde_json::from_slice(&Event::Request(Box::new(request())).to_json()).unwrap();
        value["call_type"] = json!("a_new_call_type");
        let err = serde_json::from_value::<Event>(value).unwrap_err();
        assert!(err.to_string().contains("unknown call_type \"a_new_call_type\""), "{err}");
    }
}
