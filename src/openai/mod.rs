//! OpenAI wire types shared by every adapter: the parts of requests and responses the gateway
//! reads. Bodies are otherwise passed through untouched, so only what we need is typed here.

pub mod mock;
pub mod sse;

use serde::Deserialize;
use serde_json::{Map, Value};

/// Token counts of one call, normalized across providers (serialized as in the response event).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenUsage {
    /// All input tokens, cached ones included (OpenAI's `prompt_tokens`).
    pub prompt_tokens: u64,
    /// All output tokens, reasoning included (OpenAI's `completion_tokens`).
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// Input tokens read from the provider's prompt cache (part of `prompt_tokens`).
    pub cache_read_input_tokens: u64,
    /// Input tokens written to the provider's prompt cache (part of `prompt_tokens`).
    pub cache_creation_input_tokens: u64,
    /// Reasoning tokens (part of `completion_tokens`).
    pub reasoning_tokens: u64,
}

impl TokenUsage {
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens, ..Self::default() }
    }
}

/// `usage` as OpenAI-compatible upstreams send it (LiteLLM's Anthropic-style cache fields too).
#[derive(Debug, Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    total_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl From<WireUsage> for TokenUsage {
    fn from(u: WireUsage) -> Self {
        let cache_read =
            u.prompt_tokens_details.and_then(|d| d.cached_tokens).or(u.cache_read_input_tokens).unwrap_or(0);
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total_tokens.unwrap_or(u.prompt_tokens + u.completion_tokens),
            cache_read_input_tokens: cache_read,
            cache_creation_input_tokens: u.cache_creation_input_tokens.unwrap_or(0),
            reasoning_tokens: u.completion_tokens_details.and_then(|d| d.reasoning_tokens).unwrap_or(0),
        }
    }
}

/// What the gateway reads from a complete response (or one stream chunk).
#[derive(Debug, Deserialize)]
pub struct ResponseView {
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    choices: Option<Vec<ChoiceView>>,
}

#[derive(Debug, Deserialize)]
struct ChoiceView {
    #[serde(default)]
    finish_reason: Option<String>,
}

impl ResponseView {
    pub fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    pub fn usage(self) -> Option<TokenUsage> {
        self.usage.map(TokenUsage::from)
    }

    pub fn finish_reason(&self) -> Option<&str> {
        self.choices.as_ref()?.iter().find_map(|c| c.finish_reason.as_deref())
    }

    /// A stream's usage-only chunk: `choices` empty and `usage` set.
    pub fn is_usage_only(&self) -> bool {
        self.usage.is_some() && self.choices.as_ref().is_none_or(|c| c.is_empty())
    }

    pub fn has_usage(&self) -> bool {
        self.usage.is_some()
    }
}

/// A rough token count for text we have not sent anywhere yet (pre-call context-window checks
/// and mock answers): about four bytes a token, as OpenAI's own rule of thumb says.
pub fn estimate_tokens(text_len: usize) -> u64 {
    (text_len as u64).div_ceil(4)
}

/// The prompt's size in bytes: the JSON of `messages` (chat), `prompt` (completions) or `input`
/// (embeddings). Used for estimates, so the JSON overhead is acceptable.
pub fn prompt_len(body: &Map<String, Value>) -> usize {
    fn len(v: &Value) -> usize {
        match v {
            Value::String(s) => s.len(),
            Value::Array(a) => a.iter().map(len).sum(),
            Value::Object(o) => o.iter().map(|(k, v)| if k == "content" || k == "text" { len(v) } else { 0 }).sum(),
            _ => 0,
        }
    }
    ["messages", "prompt", "input"].iter().filter_map(|k| body.get(*k)).map(len).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_usage_with_cache_and_reasoning_details() {
        let body = br#"{"choices":[{"finish_reason":"stop"}],"usage":{"prompt_tokens":100,"completion_tokens":50,"total_tokens":150,
            "prompt_tokens_details":{"cached_tokens":40},"completion_tokens_details":{"reasoning_tokens":20}}}"#;
        let view = ResponseView::parse(body).unwrap();
        assert_eq!(view.finish_reason(), Some("stop"));
        let u = view.usage().unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens, u.total_tokens), (100, 50, 150));
        assert_eq!((u.cache_read_input_tokens, u.reasoning_tokens), (40, 20));
    }

    #[test]
    fn recognizes_the_usage_only_stream_chunk() {
        assert!(ResponseView::parse(br#"{"choices":[],"usage":{"prompt_tokens":1}}"#).unwrap().is_usage_only());
        assert!(!ResponseView::parse(br#"{"choices":[{"delta":{}}],"usage":null}"#).unwrap().is_usage_only());
    }

    #[test]
    fn measures_prompt_text_not_structure() {
        let body: Map<String, Value> =
            serde_json::from_str(r#"{"messages":[{"role":"user","content":"abcd"},{"role":"user","content":[{"type":"text","text":"efgh"}]}]}"#).unwrap();
        assert_eq!(prompt_len(&body), 8);
        assert_eq!(estimate_tokens(8), 2);
    }
}
