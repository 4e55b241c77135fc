//! OpenAI's API, and every provider that speaks it and differs only in base URL and key.

use reqwest::RequestBuilder;
use secrecy::ExposeSecret;

use super::{Provider, ProviderSpec};
use crate::config::DeploymentConfig;

/// The adapter for OpenAI and the OpenAI-compatible family.
pub struct OpenAi;

impl Provider for OpenAi {
    fn authorize(&self, request: RequestBuilder, d: &DeploymentConfig) -> RequestBuilder {
        match &d.api_key {
            Some(key) => request.bearer_auth(key.expose_secret()),
            None => request,
        }
    }
}

static OPENAI: OpenAi = OpenAi;

const fn spec(
    name: &'static str,
    default_api_base: Option<&'static str>,
    api_key_env: &'static [&'static str],
    api_base_env: &'static [&'static str],
) -> ProviderSpec {
    ProviderSpec { name, default_api_base, api_key_env, api_base_env, adapter: &OPENAI }
}

/// The OpenAI-compatible providers: prefix, default base URL, and where their key and base
/// come from when the config does not say (LiteLLM's environment variable names).
pub(super) static SPECS: &[ProviderSpec] = &[
    spec("openai", Some("https://api.openai.com/v1"), &["OPENAI_API_KEY"], &["OPENAI_API_BASE", "OPENAI_BASE_URL"]),
    spec("hosted_vllm", None, &["HOSTED_VLLM_API_KEY"], &["HOSTED_VLLM_API_BASE"]),
    spec("openai_like", None, &[], &[]),
    spec("custom_openai", None, &[], &[]),
    spec("custom", None, &[], &[]),
    spec("text-completion-openai", Some("https://api.openai.com/v1"), &["OPENAI_API_KEY"], &["OPENAI_API_BASE"]),
    spec("groq", Some("https://api.groq.com/openai/v1"), &["GROQ_API_KEY"], &["GROQ_API_BASE"]),
    spec("deepseek", Some("https://api.deepseek.com/v1"), &["DEEPSEEK_API_KEY"], &["DEEPSEEK_API_BASE"]),
    spec("mistral", Some("https://api.mistral.ai/v1"), &["MISTRAL_API_KEY"], &["MISTRAL_API_BASE"]),
    spec(
        "together_ai",
        Some("https://api.together.xyz/v1"),
        &["TOGETHERAI_API_KEY", "TOGETHER_AI_API_KEY", "TOGETHER_API_KEY"],
        &["TOGETHER_AI_API_BASE"],
    ),
    spec(
        "fireworks_ai",
        Some("https://api.fireworks.ai/inference/v1"),
        &["FIREWORKS_AI_API_KEY", "FIREWORKS_API_KEY", "FIREWORKSAI_API_KEY"],
        &["FIREWORKS_AI_API_BASE"],
    ),
    spec(
        "openrouter",
        Some("https://openrouter.ai/api/v1"),
        &["OPENROUTER_API_KEY", "OR_API_KEY"],
        &["OPENROUTER_API_BASE"],
    ),
    spec("xai", Some("https://api.x.ai/v1"), &["XAI_API_KEY"], &["XAI_API_BASE"]),
    spec(
        "perplexity",
        Some("https://api.perplexity.ai"),
        &["PERPLEXITYAI_API_KEY", "PERPLEXITY_API_KEY"],
        &["PERPLEXITY_API_BASE"],
    ),
    spec(
        "vercel_ai_gateway",
        Some("https://ai-gateway.vercel.sh/v1"),
        &["VERCEL_AI_GATEWAY_API_KEY", "AI_GATEWAY_API_KEY"],
        &["VERCEL_AI_GATEWAY_API_BASE"],
    ),
];
