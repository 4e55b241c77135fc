//! The providers LiteLLM's configs name: each `litellm_params.model` prefix this build serves,
//! with LiteLLM's default base URL and key variables, and the wire format ([`Family`]) it speaks.
//! Also the prefixes LiteLLM knows that this build does not serve, so `azure/x` is not taken for
//! an OpenAI model called `azure/x`. Configuration data: the adapters live in `crate::providers`.

use crate::openai::Endpoint;

/// A wire format, served by one adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// OpenAI's API, passed through.
    OpenAi,
}

/// A `litellm_params.model` prefix and what serves it.
pub struct ProviderSpec {
    pub name: &'static str,
    pub default_api_base: Option<&'static str>,
    /// Environment variables holding the key when the config has none (LiteLLM's names).
    pub api_key_env: &'static [&'static str],
    pub api_base_env: &'static [&'static str],
    /// The wire format it speaks.
    pub family: Family,
}

impl std::fmt::Debug for ProviderSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// The spec for a provider prefix, if this build serves it.
pub fn spec(name: &str) -> Option<&'static ProviderSpec> {
    SPECS.iter().find(|s| s.name == name)
}

/// Splits `groq/llama-3.1-8b` into (`groq`, `llama-3.1-8b`). A model without a known prefix is
/// OpenAI's, as in LiteLLM (`gpt-4o`, or `ft:gpt-4o:org::id`).
pub fn split_model(model: &str) -> (&str, &str) {
    match model.split_once('/') {
        Some((prefix, rest)) if is_provider_prefix(prefix) => (prefix, rest),
        _ => ("openai", model),
    }
}

/// Prefixes LiteLLM knows, served here or not, so `azure/x` is not mistaken for an OpenAI model
/// called `azure/x`.
fn is_provider_prefix(prefix: &str) -> bool {
    spec(prefix).is_some()
        || matches!(
            prefix,
            "azure"
                | "azure_ai"
                | "anthropic"
                | "gemini"
                | "vertex_ai"
                | "bedrock"
                | "cohere"
                | "ollama"
                | "ollama_chat"
                | "huggingface"
                | "replicate"
                | "sagemaker"
                | "watsonx"
                | "databricks"
                | "cerebras"
                | "sambanova"
                | "nvidia_nim"
                | "cloudflare"
                | "ai21"
                | "voyage"
                | "jina_ai"
                | "lm_studio"
                | "github"
                | "litellm_proxy"
        )
}

/// A deployment's upstream URL per endpoint, parsed once.
#[derive(Debug, Clone)]
pub struct EndpointUrls {
    chat_completions: UpstreamUrl,
    completions: UpstreamUrl,
    embeddings: UpstreamUrl,
}

impl EndpointUrls {
    /// `api_base` + each endpoint's path (`/chat/completions`, …), checked to be http(s).
    pub fn new(api_base: &str) -> Result<Self, String> {
        let parse =
            |endpoint: Endpoint| UpstreamUrl::new(&format!("{}{}", api_base.trim_end_matches('/'), endpoint.path()));
        Ok(Self {
            chat_completions: parse(Endpoint::ChatCompletions)?,
            completions: parse(Endpoint::Completions)?,
            embeddings: parse(Endpoint::Embeddings)?,
        })
    }

    pub fn get(&self, endpoint: Endpoint) -> &UpstreamUrl {
        match endpoint {
            Endpoint::ChatCompletions => &self.chat_completions,
            Endpoint::Completions => &self.completions,
            Endpoint::Embeddings => &self.embeddings,
        }
    }
}

/// One upstream URL, split once into what a call needs: where to connect, the `Host` header and
/// the request target, so that no call parses or formats it again.
#[derive(Debug, Clone)]
pub struct UpstreamUrl {
    /// The whole URL: for messages, and for the client that goes through a proxy.
    pub url: url::Url,
    pub tls: bool,
    /// The host to connect to (an IPv6 address without its brackets) and its TLS server name.
    pub host: Box<str>,
    pub port: u16,
    /// The `Host` header: the host, and the port unless it is the scheme's default.
    pub authority: http::HeaderValue,
    /// The request target: path and query (HTTP/1.1's origin form).
    pub target: http::Uri,
    /// `scheme://host:port`: the connections of one origin are interchangeable.
    pub origin: std::sync::Arc<str>,
}

impl UpstreamUrl {
    pub fn new(url: &str) -> Result<Self, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("not a valid URL ({url}): {e}"))?;
        let tls = match parsed.scheme() {
            "http" => false,
            "https" => true,
            other => return Err(format!("unsupported scheme {other:?} in {url}")),
        };
        let host = match parsed.host() {
            Some(url::Host::Domain(name)) => name.to_string(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(format!("no host in {url}")),
        };
        let port = parsed.port_or_known_default().ok_or_else(|| format!("no port in {url}"))?;
        let host_str = parsed.host_str().unwrap_or_default();
        let authority = match parsed.port() {
            Some(port) => format!("{host_str}:{port}"),
            None => host_str.to_string(),
        };
        let target = match parsed.query() {
            Some(query) => format!("{}?{query}", parsed.path()),
            None => parsed.path().to_string(),
        };
        let invalid = |e: &dyn std::fmt::Display| format!("not a valid URL ({url}): {e}");
        Ok(Self {
            authority: http::HeaderValue::try_from(authority).map_err(|e| invalid(&e))?,
            target: http::Uri::try_from(target).map_err(|e| invalid(&e))?,
            origin: format!("{}://{host_str}:{port}", parsed.scheme()).into(),
            host: host.into(),
            port,
            tls,
            url: parsed,
        })
    }
}

/// `(name, default base, key variables, base variables)` of one OpenAI-compatible provider.
const fn openai_compatible(
    name: &'static str,
    default_api_base: Option<&'static str>,
    api_key_env: &'static [&'static str],
    api_base_env: &'static [&'static str],
) -> ProviderSpec {
    ProviderSpec { name, default_api_base, api_key_env, api_base_env, family: Family::OpenAi }
}

/// The OpenAI-compatible providers: prefix, default base URL, and where their key and base
/// come from when the config does not say (LiteLLM's environment variable names).
static SPECS: &[ProviderSpec] = &[
    openai_compatible(
        "openai",
        Some("https://api.openai.com/v1"),
        &["OPENAI_API_KEY"],
        &["OPENAI_API_BASE", "OPENAI_BASE_URL"],
    ),
    openai_compatible("hosted_vllm", None, &["HOSTED_VLLM_API_KEY"], &["HOSTED_VLLM_API_BASE"]),
    openai_compatible("openai_like", None, &[], &[]),
    openai_compatible("custom_openai", None, &[], &[]),
    openai_compatible("custom", None, &[], &[]),
    openai_compatible(
        "text-completion-openai",
        Some("https://api.openai.com/v1"),
        &["OPENAI_API_KEY"],
        &["OPENAI_API_BASE"],
    ),
    openai_compatible("groq", Some("https://api.groq.com/openai/v1"), &["GROQ_API_KEY"], &["GROQ_API_BASE"]),
    openai_compatible("deepseek", Some("https://api.deepseek.com/v1"), &["DEEPSEEK_API_KEY"], &["DEEPSEEK_API_BASE"]),
    openai_compatible("mistral", Some("https://api.mistral.ai/v1"), &["MISTRAL_API_KEY"], &["MISTRAL_API_BASE"]),
    openai_compatible(
        "together_ai",
        Some("https://api.together.xyz/v1"),
        &["TOGETHERAI_API_KEY", "TOGETHER_AI_API_KEY", "TOGETHER_API_KEY"],
        &["TOGETHER_AI_API_BASE"],
    ),
    openai_compatible(
        "fireworks_ai",
        Some("https://api.fireworks.ai/inference/v1"),
        &["FIREWORKS_AI_API_KEY", "FIREWORKS_API_KEY", "FIREWORKSAI_API_KEY"],
        &["FIREWORKS_AI_API_BASE"],
    ),
    openai_compatible(
        "openrouter",
        Some("https://openrouter.ai/api/v1"),
        &["OPENROUTER_API_KEY", "OR_API_KEY"],
        &["OPENROUTER_API_BASE"],
    ),
    openai_compatible("xai", Some("https://api.x.ai/v1"), &["XAI_API_KEY"], &["XAI_API_BASE"]),
    openai_compatible(
        "perplexity",
        Some("https://api.perplexity.ai"),
        &["PERPLEXITYAI_API_KEY", "PERPLEXITY_API_KEY"],
        &["PERPLEXITY_API_BASE"],
    ),
    openai_compatible(
        "vercel_ai_gateway",
        Some("https://ai-gateway.vercel.sh/v1"),
        &["VERCEL_AI_GATEWAY_API_KEY", "AI_GATEWAY_API_KEY"],
        &["VERCEL_AI_GATEWAY_API_BASE"],
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_known_prefixes_only() {
        assert_eq!(split_model("groq/llama-3.1-8b-instant"), ("groq", "llama-3.1-8b-instant"));
        assert_eq!(split_model("gpt-4o"), ("openai", "gpt-4o"));
        assert_eq!(split_model("openrouter/anthropic/claude-3.5"), ("openrouter", "anthropic/claude-3.5"));
        assert_eq!(split_model("azure/gpt-4o-eu"), ("azure", "gpt-4o-eu"));
        assert_eq!(split_model("meta-llama/Llama-3-8b"), ("openai", "meta-llama/Llama-3-8b"));
        assert!(spec("azure").is_none());
        assert_eq!(spec("vercel_ai_gateway").unwrap().default_api_base, Some("https://ai-gateway.vercel.sh/v1"));
    }
}
