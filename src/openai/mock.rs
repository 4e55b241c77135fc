//! OpenAI-shaped answers built locally: `mock_response` (LiteLLM's testing feature) and the
//! mock upstream server both use these, so they answer in exactly the real wire format.

use bytes::Bytes;
use serde_json::{json, Value};

use super::TokenUsage;
use crate::failure::{FailureKind, UpstreamFailure};

/// LiteLLM's `mock_response` values that raise an error instead of answering.
pub fn mock_failure(mock: &str) -> Option<UpstreamFailure> {
    let (status, code) = match mock.strip_prefix("litellm.")? {
        "RateLimitError" => (429, "rate_limit_exceeded"),
        "InternalServerError" | "APIError" => (500, "internal_server_error"),
        "ServiceUnavailableError" => (503, "service_unavailable"),
        "ContextWindowExceededError" => (400, "context_length_exceeded"),
        "ContentPolicyViolationError" => (400, "content_policy_violation"),
        "BadRequestError" => (400, "bad_request"),
        "AuthenticationError" => (401, "invalid_api_key"),
        "NotFoundError" => (404, "model_not_found"),
        "Timeout" => return Some(UpstreamFailure::new(FailureKind::Timeout, "mock_response: litellm.Timeout")),
        _ => return None,
    };
    let message = format!("mock_response: {mock}");
    let body = error_json(&message, code, status);
    Some(UpstreamFailure {
        kind: FailureKind::Status(status),
        message,
        body: Some(Bytes::from(body.to_string())),
        retry_after: None,
    })
}

/// An OpenAI error object as upstreams send it (`code` is the provider's error code).
pub fn error_json(message: &str, code: &str, status: u16) -> Value {
    let kind = crate::error::type_for_status(status);
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

pub fn usage_json(u: &TokenUsage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cache_read_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    })
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub fn completion_id() -> String {
    format!("chatcmpl-{}", uuid::Uuid::new_v4().simple())
}

pub fn chat_completion(id: &str, model: &str, content: &str, u: &TokenUsage) -> Value {
    json!({
        "id": id,
        "object": "chat.completion",
        "created": now_secs(),
        "model": model,
        "system_fingerprint": null,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": null},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": usage_json(u),
    })
}

pub fn text_completion(id: &str, model: &str, text: &str, u: &TokenUsage) -> Value {
    json!({
        "id": id,
        "object": "text_completion",
        "created": now_secs(),
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": "stop"}],
        "usage": usage_json(u),
    })
}

/// A deterministic embedding per input, so tests can compare vectors.
pub fn embedding(model: &str, inputs: usize, prompt_tokens: u64) -> Value {
    let data: Vec<Value> = (0..inputs)
        .map(|i| {
            let vector: Vec<f64> = (0..8).map(|j| ((i * 8 + j) as f64 * 0.125).sin()).collect();
            json!({"object": "embedding", "index": i, "embedding": vector})
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    })
}

/// The `data:` payloads of a chat stream: a role chunk, one chunk per word, the finish chunk,
/// and (when `usage` is given) the usage-only chunk. `[DONE]` is left to the caller.
pub fn chat_stream_payloads(id: &str, model: &str, content: &str, usage: Option<&TokenUsage>) -> Vec<String> {
    let created = now_secs();
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": null,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        })
        .to_string()
    };
    let mut out = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
    out.extend(words_with_spaces(content).map(|w| chunk(json!({"content": w}), Value::Null)));
    out.push(chunk(json!({}), json!("stop")));
    if let Some(u) = usage {
        out.push(
            json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [], "usage": usage_json(u),
            })
            .to_string(),
        );
    }
    out
}

/// The `data:` payloads of a legacy completions stream.
pub fn text_stream_payloads(id: &str, model: &str, text: &str, usage: Option<&TokenUsage>) -> Vec<String> {
    let created = now_secs();
    let mut out: Vec<String> = words_with_spaces(text)
        .map(|w| {
            json!({"id": id, "object": "text_completion", "created": created, "model": model,
                   "choices": [{"index": 0, "text": w, "logprobs": null, "finish_reason": null}]})
            .to_string()
        })
        .collect();
    out.push(
        json!({"id": id, "object": "text_completion", "created": created, "model": model,
               "choices": [{"index": 0, "text": "", "logprobs": null, "finish_reason": "stop"}]})
        .to_string(),
    );
    if let Some(u) = usage {
        out.push(
            json!({"id": id, "object": "text_completion", "created": created, "model": model, "choices": [], "usage": usage_json(u)})
                .to_string(),
        );
    }
    out
}

/// Splits text into words, each keeping its leading space, so the pieces concatenate back.
fn words_with_spaces(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let start = rest.len() - rest.trim_start().len();
        let end = rest[start..].find(char::is_whitespace).map_or(rest.len(), |i| start + i);
        let (word, tail) = rest.split_at(end);
        rest = tail;
        Some(word)
    })
}

/// Words in a text, the mock's token count.
pub fn word_count(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_pieces_concatenate_to_the_content() {
        let payloads = chat_stream_payloads("id", "m", "Hello there,  world", Some(&TokenUsage::new(3, 3)));
        let text: String = payloads
            .iter()
            .filter_map(|p| serde_json::from_str::<Value>(p).ok())
            .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_string))
            .collect();
        assert_eq!(text, "Hello there,  world");
        let last: Value = serde_json::from_str(payloads.last().unwrap()).unwrap();
        assert_eq!(last["usage"]["total_tokens"], 6);
        assert_eq!(last["choices"], json!([]));
    }

    #[test]
    fn litellm_error_mocks_raise_the_matching_status() {
        assert_eq!(mock_failure("litellm.RateLimitError").unwrap().status(), 429);
        assert_eq!(
            mock_failure("litellm.ContextWindowExceededError").unwrap().class(),
            crate::failure::ErrorClass::ContextWindowExceeded
        );
        assert!(mock_failure("Hello!").is_none());
    }
}
