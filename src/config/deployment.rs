//! `model_list`: one [`DeploymentConfig`] per entry this build serves.
//!
//! An entry is served, skipped with a warning (a provider this build does not implement, or no
//! model after the provider prefix: LiteLLM starts with those too), or has problems, which are
//! reported with the rest of the file's.

use std::collections::BTreeSet;
use std::time::Duration;

use secrecy::SecretString;
use sha2::{Digest, Sha256};

use super::env::MissingVar;
use super::providers::{self, EndpointUrls, ProviderSpec};
use super::raw::{Extra, RawDeployment};
use super::router::GroupNames;
use super::Validator;

/// What an endpoint of a deployment is for (`model_info.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Chat,
    Completion,
    Embedding,
    ImageGeneration,
    AudioTranscription,
    AudioSpeech,
    Rerank,
    Moderation,
    Responses,
}

impl Mode {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "chat" => Self::Chat,
            "completion" => Self::Completion,
            "embedding" => Self::Embedding,
            "image_generation" => Self::ImageGeneration,
            "audio_transcription" => Self::AudioTranscription,
            "audio_speech" => Self::AudioSpeech,
            "rerank" => Self::Rerank,
            "moderation" => Self::Moderation,
            "responses" => Self::Responses,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Completion => "completion",
            Self::Embedding => "embedding",
            Self::ImageGeneration => "image_generation",
            Self::AudioTranscription => "audio_transcription",
            Self::AudioSpeech => "audio_speech",
            Self::Rerank => "rerank",
            Self::Moderation => "moderation",
            Self::Responses => "responses",
        }
    }
}

/// One `model_list` entry: an upstream endpoint serving a model group.
#[derive(Debug, Clone)]
pub struct DeploymentConfig {
    /// `model_info.id`, or a stable hash of the entry.
    pub id: String,
    /// The model group clients ask for.
    pub model_name: String,
    /// `litellm_params.model` as written, e.g. `groq/llama-3.1-8b-instant`.
    pub litellm_model: String,
    pub provider: &'static ProviderSpec,
    /// The model name sent upstream (the part after the provider prefix).
    pub upstream_model: String,
    pub api_key: Option<SecretString>,
    /// As configured; `os.environ/NAME` as written when that variable is not set.
    pub api_base: String,
    /// `api_base` + each endpoint's path, parsed once.
    pub urls: EndpointUrls,
    pub api_version: Option<String>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub order: Option<u64>,
    pub weight: Option<f64>,
    pub timeout: Option<Duration>,
    pub stream_timeout: Option<Duration>,
    /// Extra attempts on this same deployment for retryable failures.
    pub max_retries: u32,
    pub max_parallel_requests: Option<u32>,
    pub mock_response: Option<String>,
    pub mode: Mode,
    pub base_model: Option<String>,
    pub max_input_tokens: Option<u64>,
    pub max_output_tokens: Option<u64>,
    pub pricing: CustomPricing,
    /// Set when a `litellm_params` value comes from an environment variable that is not set:
    /// the deployment is kept (LiteLLM reads the variable when the deployment is called) and
    /// every call to it fails with this message, e.g. "environment variable AZURE_API_KEY is not
    /// set (model_list[3].litellm_params.api_key)".
    pub unresolved_env: Option<String>,
}

/// Per-deployment prices from `litellm_params` / `model_info`; they win over the price map.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CustomPricing {
    pub input_cost_per_token: Option<f64>,
    pub output_cost_per_token: Option<f64>,
    pub cache_read_input_token_cost: Option<f64>,
    pub cache_creation_input_token_cost: Option<f64>,
    pub output_cost_per_reasoning_token: Option<f64>,
}

/// The most attempts `max_retries` may add on one deployment.
const MAX_RETRIES: u32 = 10;

/// The endpoints of a deployment whose `api_base` variable is not set. Never called: the
/// deployment's calls fail on `unresolved_env` first (`.invalid` cannot resolve, RFC 2606).
const UNRESOLVED_API_BASE: &str = "http://unresolved-api-base.invalid";

/// What became of one `model_list` entry.
enum Entry {
    Served(Box<DeploymentConfig>),
    /// Not served, with a warning already given: references to the group are dropped.
    Skipped(String),
    /// Has problems (already recorded); its name, if any, is not reported as unknown again.
    Broken(Option<String>),
}

impl Validator<'_> {
    /// Every `model_list` entry; `missing` are the unset `os.environ/` references in it.
    pub(super) fn deployments(
        &mut self,
        entries: Vec<Option<RawDeployment>>,
        unreadable: BTreeSet<String>,
        missing: &[MissingVar],
    ) -> (Vec<DeploymentConfig>, GroupNames) {
        let mut deployments: Vec<DeploymentConfig> = Vec::with_capacity(entries.len());
        let mut groups = GroupNames { broken: unreadable, ..GroupNames::default() };
        let mut ids = BTreeSet::new();
        for (i, entry) in entries.into_iter().enumerate() {
            let Some(entry) = entry else { continue };
            let prefix = format!("model_list[{i}].");
            let missing: Vec<&MissingVar> = missing.iter().filter(|m| m.path.starts_with(&prefix)).collect();
            match self.deployment(i, entry, &missing) {
                Entry::Served(d) => {
                    if ids.insert(d.id.clone()) {
                        groups.served.insert(d.model_name.clone());
                        deployments.push(*d);
                    } else {
                        let message = format!("duplicate deployment id {:?}", d.id);
                        self.problem(format!("model_list[{i}].model_info.id"), message);
                        groups.broken.insert(d.model_name);
                    }
                }
                Entry::Skipped(name) => {
                    groups.skipped.insert(name);
                }
                Entry::Broken(name) => groups.broken.extend(name),
            }
        }
        let served = groups.served.clone();
        groups.skipped.retain(|name| !served.contains(name));
        (deployments, groups)
    }

    fn deployment(&mut self, i: usize, entry: RawDeployment, missing: &[&MissingVar]) -> Entry {
        let at = |field: &str| format!("model_list[{i}].{field}");
        let unset = |field: &str| missing.iter().find(|m| m.path == at(field)).map(|m| m.var.clone());
        let Some(model_name) = entry.model_name.filter(|n| !n.trim().is_empty()) else {
            let message = match unset("model_name") {
                Some(var) => format!("environment variable {var} is not set"),
                None => "required, and must not be empty".to_string(),
            };
            self.problem(at("model_name"), message);
            return Entry::Broken(None);
        };
        let p = entry.litellm_params;
        let info = entry.model_info;
        let model = match p.model.filter(|m| !m.trim().is_empty()) {
            Some(model) => model,
            None => {
                if let Some(var) = unset("litellm_params.model") {
                    self.warn(format!(
                        "{}: environment variable {var} is not set; deployment {model_name:?} is not served",
                        at("litellm_params.model")
                    ));
                    return Entry::Skipped(model_name);
                }
                self.problem(at("litellm_params.model"), "required: the upstream model, like \"openai/gpt-4o\"");
                return Entry::Broken(Some(model_name));
            }
        };
        let (provider, upstream_model) = match serving_provider(&model) {
            Ok(served) => served,
            Err(reason) => {
                self.warn(format!("{}: {reason}; deployment {model_name:?} is not served", at("litellm_params.model")));
                return Entry::Skipped(model_name);
            }
        };

        let problems_before = self.problems.len();
        self.unsupported("model_list[].litellm_params", &at("litellm_params"), &p.extra);
        self.unsupported("model_list[].model_info", &at("model_info"), &info.extra);
        self.unsupported("model_list[]", &format!("model_list[{i}]"), &entry.extra);
        let unresolved_env = self.unresolved_env(i, &model_name, missing, (&p.extra, &info.extra));

        let api_base_var = unset("litellm_params.api_base");
        let api_base = match (p.api_base.filter(|b| !b.is_empty()), &api_base_var) {
            (Some(base), _) => Some(base),
            (None, Some(var)) => Some(format!("os.environ/{var}")),
            (None, None) => provider
                .api_base_env
                .iter()
                .find_map(|var| (self.env)(var))
                .or_else(|| provider.default_api_base.map(str::to_string)),
        };
        let Some(api_base) = api_base else {
            self.problem(at("litellm_params.api_base"), format!("required for provider {}", provider.name));
            return Entry::Broken(Some(model_name));
        };
        let url_base = if api_base_var.is_some() { UNRESOLVED_API_BASE } else { api_base.as_str() };
        let urls = match EndpointUrls::new(url_base) {
            Ok(urls) => Some(urls),
            Err(e) => {
                self.problem(at("litellm_params.api_base"), e);
                None
            }
        };
        let api_key =
            p.api_key.filter(|k| !k.is_empty()).or_else(|| provider.api_key_env.iter().find_map(|var| (self.env)(var)));
        let mode = match info.mode.as_deref() {
            None => Some(Mode::Chat),
            Some(m) => {
                let mode = Mode::parse(m);
                if mode.is_none() {
                    self.problem(at("model_info.mode"), format!("unknown mode {m:?} (chat, completion, embedding, image_generation, audio_transcription, audio_speech, rerank, moderation, responses)"));
                }
                mode
            }
        };
        let negatives = [
            ("litellm_params.weight", p.weight),
            ("litellm_params.input_cost_per_token", p.input_cost_per_token),
            ("litellm_params.output_cost_per_token", p.output_cost_per_token),
            ("model_info.input_cost_per_token", info.input_cost_per_token),
            ("model_info.output_cost_per_token", info.output_cost_per_token),
            ("model_info.cache_read_input_token_cost", info.cache_read_input_token_cost),
            ("model_info.cache_creation_input_token_cost", info.cache_creation_input_token_cost),
            ("model_info.output_cost_per_reasoning_token", info.output_cost_per_reasoning_token),
        ];
        for (field, value) in negatives {
            if let Some(v) = value.filter(|v| *v < 0.0) {
                self.problem(at(field), format!("must not be negative, got {v}"));
            }
        }
        // Rate limiters count requests in a u32.
        let rpm = self.in_range(at("litellm_params.rpm"), p.rpm, 0..=u64::from(u32::MAX));
        let max_parallel_requests = self
            .in_range(at("litellm_params.max_parallel_requests"), p.max_parallel_requests, 1..=u64::from(u32::MAX))
            .and_then(|n| u32::try_from(n).ok());
        let max_retries = p.max_retries.map_or(0, |n| self.capped(&at("litellm_params.max_retries"), n, MAX_RETRIES));
        let (Some(urls), Some(mode)) = (urls, mode) else {
            return Entry::Broken(Some(model_name));
        };
        if self.problems.len() > problems_before {
            return Entry::Broken(Some(model_name));
        }
        let id = info.id.filter(|s| !s.is_empty()).unwrap_or_else(|| stable_id(&model_name, &model, &api_base, i));
        Entry::Served(Box::new(DeploymentConfig {
            id,
            model_name,
            litellm_model: model.clone(),
            provider,
            upstream_model: upstream_model.to_string(),
            api_key: api_key.map(SecretString::from),
            urls,
            api_base: api_base.trim_end_matches('/').to_string(),
            api_version: p.api_version,
            rpm,
            tpm: p.tpm,
            order: p.order,
            weight: p.weight,
            timeout: p.timeout,
            stream_timeout: p.stream_timeout,
            max_retries,
            max_parallel_requests,
            mock_response: p.mock_response,
            mode,
            base_model: info.base_model,
            max_input_tokens: info.max_input_tokens,
            max_output_tokens: info.max_output_tokens,
            pricing: CustomPricing {
                input_cost_per_token: p.input_cost_per_token.or(info.input_cost_per_token),
                output_cost_per_token: p.output_cost_per_token.or(info.output_cost_per_token),
                cache_read_input_token_cost: info.cache_read_input_token_cost,
                cache_creation_input_token_cost: info.cache_creation_input_token_cost,
                output_cost_per_reasoning_token: info.output_cost_per_reasoning_token,
            },
            unresolved_env,
        }))
    }

    /// The unset variables of a served deployment, each with a warning. Those in the
    /// `litellm_params` Switchyard uses make the deployment's calls fail: the message says
    /// which (`None` when there are none). Those in `model_info` are treated as unset; those in
    /// ignored keys change nothing (the key's own warning says it is ignored).
    fn unresolved_env(
        &mut self,
        i: usize,
        model_name: &str,
        missing: &[&MissingVar],
        ignored: (&Extra, &Extra),
    ) -> Option<String> {
        let (ignored_params, ignored_info) = ignored;
        let entry = format!("model_list[{i}].");
        let mut reasons = Vec::new();
        for m in missing {
            let field = m.path.strip_prefix(&entry).unwrap_or(&m.path);
            let mut segments = field.split(['.', '[']);
            match (segments.next(), segments.next()) {
                (Some("litellm_params"), Some(key)) if key != "model" && !ignored_params.contains_key(key) => {
                    self.warn(format!(
                        "{}: environment variable {} is not set; deployment {model_name:?} is kept, but its calls fail until it is set",
                        m.path, m.var
                    ));
                    reasons.push(format!("environment variable {} is not set ({})", m.var, m.path));
                }
                (Some("model_info"), Some(key)) if !ignored_info.contains_key(key) => {
                    self.warn(format!("{}: environment variable {} is not set; treated as unset", m.path, m.var));
                }
                _ => {}
            }
        }
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }
}

/// The adapter serving `model` (`groq/llama-3.1-8b`), and the model name sent upstream; or why
/// this build does not serve it (LiteLLM starts with such entries, so they are skipped, not
/// errors).
fn serving_provider(model: &str) -> Result<(&'static ProviderSpec, &str), String> {
    let (provider_name, upstream_model) = providers::split_model(model);
    if upstream_model.is_empty() {
        return Err(format!("{model:?} names no model after the provider prefix"));
    }
    match providers::spec(provider_name) {
        Some(provider) => Ok((provider, upstream_model)),
        None => Err(format!("provider {provider_name:?} is not supported by this Switchyard build yet")),
    }
}

/// A deployment id that stays the same across restarts for the same entry (LiteLLM hashes the
/// params too); the index keeps two identical entries apart.
fn stable_id(model_name: &str, model: &str, api_base: &str, index: usize) -> String {
    let digest = Sha256::digest(format!("{model_name}\0{model}\0{api_base}\0{index}").as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_openai_compatible_models_with_a_name_are_served() {
        fn served(model: &str) -> Result<(&'static str, &str), String> {
            serving_provider(model).map(|(spec, upstream)| (spec.name, upstream))
        }
        assert_eq!(served("gpt-4o"), Ok(("openai", "gpt-4o")));
        assert_eq!(served("groq/llama-3.1-8b"), Ok(("groq", "llama-3.1-8b")));
        assert_eq!(served("openai/*"), Ok(("openai", "*")));
        assert_eq!(
            served("azure/gpt-4o"),
            Err("provider \"azure\" is not supported by this Switchyard build yet".into())
        );
        assert_eq!(served("azure/"), Err("\"azure/\" names no model after the provider prefix".into()));
        assert_eq!(served("openai/"), Err("\"openai/\" names no model after the provider prefix".into()));
    }
}
