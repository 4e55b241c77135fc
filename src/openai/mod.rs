//! OpenAI wire types shared by every adapter: the parts of requests and responses the gateway
//! reads. Bodies are otherwise passed through untouched, so only what we need is typed here.

pub mod mock;
pub mod request;
pub mod sse;

use serde::Deserialize;

/// The OpenAI endpoints the gateway proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
}

impl Endpoint {
    /// The path under the upstream's base URL.
    pub fn path(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/chat/completions",
            Self::Completions => "/completions",
            Self::Embeddings => "/embeddings",
        }
    }

    /// LiteLLM's `call_type` for this endpoint.
    pub fn call_type(self) -> &'static str {
        match self {
            Self::ChatCompletions => "acompletion",
            Self::Completions => "atext_completion",
            Self::Embeddings => "aembedding",
        }
    }

    pub fn supports_stream(self) -> bool {
        !matches!(self, Self::Embeddings)
    }
}

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
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
            ..Self::default()
        }
    }

    /// Adds another call's counts (saturating).
    pub fn add(&mut self, other: &TokenUsage) {
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(other.completion_tokens);
        self.total_tokens = self.total_tokens.saturating_add(other.total_tokens);
        self.cache_read_input_tokens = self.cache_read_input_tokens.saturating_add(other.cache_read_input_tokens);
        self.cache_creation_input_tokens =
            self.cache_creation_input_tokens.saturating_add(other.cache_creation_input_tokens);
        self.reasoning_tokens = self.reasoning_tokens.saturating_add(other.reasoning_tokens);
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
    /// DeepSeek's cache hits.
    #[serde(default)]
    prompt_cache_hit_tokens: Option<u64>,
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
    /// Normalized as LiteLLM does before pricing: cached tokens from Anthropic's field, else
    /// DeepSeek's, else OpenAI's details; reasoning tokens that a provider (xAI) counts beside
    /// `completion_tokens` rather than in it (the total says so) are folded into it.
    fn from(u: WireUsage) -> Self {
        let cache_read = u
            .cache_read_input_tokens
            .or(u.prompt_cache_hit_tokens)
            .or(u.prompt_tokens_details.and_then(|d| d.cached_tokens))
            .unwrap_or(0);
        let reasoning = u.completion_tokens_details.and_then(|d| d.reasoning_tokens).unwrap_or(0);
        let beside = u.prompt_tokens.saturating_add(u.completion_tokens).saturating_add(reasoning);
        let completion = match u.total_tokens {
            Some(total) if reasoning > 0 && total == beside => u.completion_tokens + reasoning,
            _ => u.completion_tokens,
        };
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: completion,
            total_tokens: u.total_tokens.unwrap_or(u.prompt_tokens.saturating_add(completion)),
            cache_read_input_tokens: cache_read,
            cache_creation_input_tokens: u.cache_creation_input_tokens.unwrap_or(0),
            reasoning_tokens: reasoning,
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
}

/// A rough token count for text we have not sent anywhere yet (pre-call context-window checks
/// and mock answers): about four bytes a token, as OpenAI's own rule of thumb says.
pub fn estimate_tokens(text_len: usize) -> u64 {
    (text_len as u64).div_ceil(4)
}

/// The prompt's size in bytes: the text of `messages` (chat), `prompt` (completions) or `input`
/// (embeddings), summed as it is read, without building the values. Used for estimates.
pub fn prompt_len(body: &request::RequestBody) -> usize {
    ["messages", "prompt", "input"]
        .iter()
        .filter_map(|k| body.raw(k))
        .map(|raw| {
            let mut de = serde_json::Deserializer::from_slice(raw);
            serde::de::DeserializeSeed::deserialize(PromptLen, &mut de).unwrap_or(0)
        })
        .sum()
}

/// Sums a prompt value's text: a string counts whole, arrays sum their items, and objects count
/// only their `content` and `text` values (message parts), recursively.
struct PromptLen;

impl<'de> serde::de::DeserializeSeed<'de> for PromptLen {
    type Value = usize;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for PromptLen {
    type Value = usize;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a prompt")
    }
    fn visit_str<E>(self, v: &str) -> Result<usize, E> {
        Ok(v.len())
    }
    fn visit_bool<E>(self, _: bool) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_i64<E>(self, _: i64) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_u64<E>(self, _: u64) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_f64<E>(self, _: f64) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_unit<E>(self) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let mut total = 0usize;
        while let Some(n) = seq.next_element_seed(PromptLen)? {
            total = total.saturating_add(n);
        }
        Ok(total)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
        let mut total = 0usize;
        while let Some(counted) = map.next_key_seed(IsTextKey)? {
            if counted {
                total = total.saturating_add(map.next_value_seed(PromptLen)?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(total)
    }
}

/// Whether a key is `content` or `text`, read without allocating.
struct IsTextKey;

impl<'de> serde::de::DeserializeSeed<'de> for IsTextKey {
    type Value = bool;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for IsTextKey {
    type Value = bool;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E>(self, v: &str) -> Result<bool, E> {
        Ok(v == "content" || v == "text")
    }
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
        let body = request::RequestBody::parse(bytes::Bytes::from_static(
            br#"{"messages":[{"role":"user","content":"abcd"},{"role":"user","content":[{"type":"text","text":"efgh"}]}],"input":["ij"]}"#,
        ))
        .unwrap();
        assert_eq!(prompt_len(&body), 10);
        assert_eq!(estimate_tokens(8), 2);
    }
}
