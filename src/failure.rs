//! Upstream failures and the classes LiteLLM sorts them into.
//!
//! One classification feeds three decisions: whether to retry (and how often, per
//! `retry_policy`), whether a deployment may cool down (per `allowed_fails_policy`), and which
//! fallback list applies (context window, content policy, or the generic one).

use std::time::Duration;

use bytes::Bytes;

/// How an upstream call failed.
#[derive(Debug, Clone)]
pub struct UpstreamFailure {
    pub kind: FailureKind,
    pub message: String,
    /// The upstream's error body, passed through to the client for 4xx answers.
    pub body: Option<Bytes>,
    /// From the upstream's `Retry-After` header.
    pub retry_after: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The upstream answered with this non-2xx status.
    Status(u16),
    /// No answer within the timeout.
    Timeout,
    /// Could not connect, or the connection broke.
    Connection,
    /// The upstream answered 2xx with something we could not read.
    Malformed,
}

/// LiteLLM's exception classes, as named in `retry_policy` and `allowed_fails_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    BadRequest,
    Authentication,
    PermissionDenied,
    NotFound,
    Timeout,
    RateLimit,
    ContentPolicyViolation,
    ContextWindowExceeded,
    InternalServer,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 9] = [
        Self::BadRequest,
        Self::Authentication,
        Self::PermissionDenied,
        Self::NotFound,
        Self::Timeout,
        Self::RateLimit,
        Self::ContentPolicyViolation,
        Self::ContextWindowExceeded,
        Self::InternalServer,
    ];

    /// The name LiteLLM uses, as in `RateLimitErrorRetries` / `RateLimitErrorAllowedFails`.
    pub fn litellm_name(self) -> &'static str {
        match self {
            Self::BadRequest => "BadRequestError",
            Self::Authentication => "AuthenticationError",
            Self::PermissionDenied => "PermissionDeniedError",
            Self::NotFound => "NotFoundError",
            Self::Timeout => "TimeoutError",
            Self::RateLimit => "RateLimitError",
            Self::ContentPolicyViolation => "ContentPolicyViolationError",
            Self::ContextWindowExceeded => "ContextWindowExceededError",
            Self::InternalServer => "InternalServerError",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A value per error class (a retry count or an allowed-fails count), unset by default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClassMap([Option<u32>; 9]);

impl ClassMap {
    pub fn get(&self, class: ErrorClass) -> Option<u32> {
        self.0[class.index()]
    }

    pub fn set(&mut self, class: ErrorClass, value: u32) {
        self.0[class.index()] = Some(value);
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }

    /// Parses LiteLLM's `{"<Class>Error<suffix>": n}` map; returns unknown keys.
    pub fn from_litellm(map: &std::collections::BTreeMap<String, u64>, suffix: &str) -> (Self, Vec<String>) {
        let mut out = Self::default();
        let mut unknown = Vec::new();
        for (key, value) in map {
            let class = key
                .strip_suffix(suffix)
                .and_then(|name| ErrorClass::ALL.into_iter().find(|c| c.litellm_name() == name));
            match class {
                Some(class) => out.set(class, (*value).min(u32::MAX as u64) as u32),
                None => unknown.push(key.clone()),
            }
        }
        (out, unknown)
    }
}

impl UpstreamFailure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), body: None, retry_after: None }
    }

    pub fn class(&self) -> ErrorClass {
        match self.kind {
            FailureKind::Timeout => ErrorClass::Timeout,
            FailureKind::Connection | FailureKind::Malformed => ErrorClass::InternalServer,
            FailureKind::Status(status) => match status {
                400 | 422 => {
                    let text = self.body.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                    if is_context_window_error(&text) || is_context_window_error(&self.message) {
                        ErrorClass::ContextWindowExceeded
                    } else if is_content_policy_error(&text) || is_content_policy_error(&self.message) {
                        ErrorClass::ContentPolicyViolation
                    } else {
                        ErrorClass::BadRequest
                    }
                }
                401 => ErrorClass::Authentication,
                403 => ErrorClass::PermissionDenied,
                404 => ErrorClass::NotFound,
                408 => ErrorClass::Timeout,
                429 => ErrorClass::RateLimit,
                _ => ErrorClass::InternalServer,
            },
        }
    }

    /// The HTTP status this failure stands for (LiteLLM's map: timeouts are 408, connection
    /// problems and unreadable answers 502).
    pub fn status(&self) -> u16 {
        match self.kind {
            FailureKind::Status(s) => s,
            FailureKind::Timeout => 408,
            FailureKind::Connection | FailureKind::Malformed => 502,
        }
    }

    /// Retryable per LiteLLM: 408, 409, 429, 5xx, timeouts and connection errors.
    pub fn is_retryable(&self) -> bool {
        match self.kind {
            FailureKind::Timeout | FailureKind::Connection | FailureKind::Malformed => true,
            FailureKind::Status(s) => matches!(s, 408 | 409 | 429) || s >= 500,
        }
    }

    /// Whether this failure counts towards cooling the deployment down: 429, 401, 408, 404, 5xx
    /// and timeouts. Connection errors count too (LiteLLM ignores them, so a dead endpoint keeps
    /// taking traffic; we would rather stop sending to it). Other 4xx are the caller's fault.
    pub fn may_cool_down(&self) -> bool {
        match self.kind {
            FailureKind::Timeout | FailureKind::Connection | FailureKind::Malformed => true,
            FailureKind::Status(s) => matches!(s, 401 | 404 | 408 | 429) || s >= 500,
        }
    }
}

/// Upstream wording for "the prompt is too long" across OpenAI-compatible providers.
pub fn is_context_window_error(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("context_length_exceeded")
        || t.contains("maximum context length")
        || t.contains("context window")
        || t.contains("prompt is too long")
}

pub fn is_content_policy_error(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("content_policy_violation") || t.contains("content_filter") || t.contains("content management policy")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, body: &str) -> UpstreamFailure {
        UpstreamFailure {
            kind: FailureKind::Status(code),
            message: String::new(),
            body: Some(Bytes::copy_from_slice(body.as_bytes())),
            retry_after: None,
        }
    }

    #[test]
    fn classifies_like_litellm() {
        assert_eq!(
            status(400, r#"{"error":{"code":"context_length_exceeded"}}"#).class(),
            ErrorClass::ContextWindowExceeded
        );
        assert_eq!(
            status(400, r#"{"error":{"code":"content_policy_violation"}}"#).class(),
            ErrorClass::ContentPolicyViolation
        );
        assert_eq!(status(400, "{}").class(), ErrorClass::BadRequest);
        assert_eq!(status(429, "").class(), ErrorClass::RateLimit);
        assert_eq!(status(503, "").class(), ErrorClass::InternalServer);
        assert_eq!(UpstreamFailure::new(FailureKind::Timeout, "t").class(), ErrorClass::Timeout);
    }

    #[test]
    fn retryable_and_cooldown_sets() {
        for code in [408, 409, 429, 500, 502, 503] {
            assert!(status(code, "").is_retryable(), "{code}");
        }
        for code in [400, 401, 403, 404, 422] {
            assert!(!status(code, "").is_retryable(), "{code}");
        }
        for code in [401, 404, 408, 429, 500] {
            assert!(status(code, "").may_cool_down(), "{code}");
        }
        for code in [400, 403, 409, 422] {
            assert!(!status(code, "").may_cool_down(), "{code}");
        }
    }

    #[test]
    fn parses_litellm_policy_maps() {
        let map = [("RateLimitErrorRetries".to_string(), 3u64), ("BogusRetries".to_string(), 1)].into_iter().collect();
        let (policy, unknown) = ClassMap::from_litellm(&map, "Retries");
        assert_eq!(policy.get(ErrorClass::RateLimit), Some(3));
        assert_eq!(policy.get(ErrorClass::Timeout), None);
        assert_eq!(unknown, vec!["BogusRetries".to_string()]);
    }
}
