//! Prices: LiteLLM's `model_prices_and_context_window.json` format, the bundled copy under
//! `config/` or a user's own, resolved once per deployment at startup.

use std::collections::HashMap;

use serde::Deserialize;

use crate::config::{CustomPricing, DeploymentConfig};
use crate::openai::TokenUsage;

const BUNDLED: &str = include_str!("../config/model_prices_and_context_window.json");

/// One entry of the price map (the fields we use; the rest are ignored).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ModelEntry {
    pub input_cost_per_token: Option<f64>,
    pub output_cost_per_token: Option<f64>,
    pub cache_read_input_token_cost: Option<f64>,
    pub cache_creation_input_token_cost: Option<f64>,
    pub output_cost_per_reasoning_token: Option<f64>,
    /// Token limits are floats in parts of LiteLLM's own file (`2000000.0`).
    pub max_input_tokens: Option<f64>,
    pub max_output_tokens: Option<f64>,
    pub max_tokens: Option<f64>,
    pub litellm_provider: Option<String>,
    pub mode: Option<String>,
    /// The `*_above_<N>k_tokens` rates, by threshold (read by [`PriceMap::from_json`]).
    #[serde(skip)]
    pub tiers: Tiers,
}

/// Rates that replace the base ones, every token of the call included, once its prompt is
/// above `above` tokens (LiteLLM's `input_cost_per_token_above_200k_tokens` and the like).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tier {
    pub above: u64,
    pub input: Option<f64>,
    pub output: Option<f64>,
    pub cache_read: Option<f64>,
    pub cache_write: Option<f64>,
}

/// A model's tiers, lowest threshold first (the map has at most two per model).
pub type Tiers = [Option<Tier>; 2];

/// The rate a tier key sets: (threshold in tokens, which rate), for the keys without a service
/// tier suffix (`_priority`, `_flex`, `_batches`: not served here).
fn tier_key(key: &str) -> Option<(u64, &'static str)> {
    let (rate, rest) = key.split_once("_above_")?;
    let threshold = rest.strip_suffix("_tokens")?;
    let (digits, scale) = match threshold.strip_suffix('k') {
        Some(d) => (d, 1000),
        None => (threshold, 1),
    };
    let above = digits.parse::<u64>().ok()?.checked_mul(scale)?;
    let rate = [
        "input_cost_per_token",
        "output_cost_per_token",
        "cache_read_input_token_cost",
        "cache_creation_input_token_cost",
    ]
    .into_iter()
    .find(|r| *r == rate)?;
    Some((above, rate))
}

/// The tiers of a map entry, from its keys (read without building a JSON tree: the map has
/// thousands of entries of dozens of keys).
fn tiers_of(entry: &serde_json::value::RawValue) -> Tiers {
    // The map's keys hold no escapes, so they borrow from the text.
    let Ok(fields) = serde_json::from_str::<HashMap<&str, &serde_json::value::RawValue>>(entry.get()) else {
        return Tiers::default();
    };
    let mut found: Vec<Tier> = Vec::new();
    for (key, value) in &fields {
        let Some((above, rate)) = tier_key(key) else { continue };
        let Ok(value) = serde_json::from_str::<f64>(value.get()) else { continue };
        let at = match found.iter().position(|t| t.above == above) {
            Some(at) => at,
            None => {
                found.push(Tier { above, ..Tier::default() });
                found.len() - 1
            }
        };
        let tier = &mut found[at];
        match rate {
            "input_cost_per_token" => tier.input = Some(value),
            "output_cost_per_token" => tier.output = Some(value),
            "cache_read_input_token_cost" => tier.cache_read = Some(value),
            _ => tier.cache_write = Some(value),
        }
    }
    found.sort_by_key(|t| t.above);
    let mut tiers = Tiers::default();
    for (slot, tier) in tiers.iter_mut().zip(found) {
        *slot = Some(tier);
    }
    tiers
}

#[derive(Debug, Default)]
pub struct PriceMap {
    /// Keyed by LiteLLM's model names (`gpt-4o-mini`, `groq/llama-3.1-8b-instant`).
    models: HashMap<String, ModelEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum PriceMapError {
    #[error("cannot read price map {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("price map {path} is not valid: {source}")]
    Parse { path: String, source: serde_json::Error },
}

impl PriceMap {
    /// The copy shipped with Switchyard (see `config/PRICES.md` for its source).
    /// Parsed once per process (3 MB of JSON).
    pub fn bundled() -> &'static Self {
        static MAP: std::sync::OnceLock<PriceMap> = std::sync::OnceLock::new();
        // The bundled file is checked by a unit test; an empty map is the safe fallback.
        MAP.get_or_init(|| Self::from_json(BUNDLED).unwrap_or_default())
    }

    pub fn load(path: &str) -> Result<Self, PriceMapError> {
        let text = std::fs::read_to_string(path).map_err(|source| PriceMapError::Read { path: path.into(), source })?;
        Self::from_json(&text).map_err(|source| PriceMapError::Parse { path: path.into(), source })
    }

    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        let raw: HashMap<String, &serde_json::value::RawValue> = serde_json::from_str(text)?;
        let models = raw
            .into_iter()
            .filter(|(k, _)| k != "sample_spec")
            // An entry with an unexpected shape is skipped rather than failing the whole map.
            .filter_map(|(k, v)| {
                let entry = serde_json::from_str::<ModelEntry>(v.get()).ok()?;
                Some((k, ModelEntry { tiers: tiers_of(v), ..entry }))
            })
            .collect();
        Ok(Self { models })
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// The map entry for a deployment: `base_model` first, then the model as configured, with
    /// and without its provider prefix, then the group name.
    pub fn entry_for(&self, d: &DeploymentConfig) -> Option<&ModelEntry> {
        let prefixed = format!("{}/{}", d.provider.name, d.upstream_model);
        let keys = [
            d.base_model.as_deref(),
            Some(d.litellm_model.as_str()),
            Some(prefixed.as_str()),
            Some(d.upstream_model.as_str()),
            Some(d.model_name.as_str()),
        ];
        let entry = keys.into_iter().flatten().find_map(|k| self.models.get(k));
        entry
    }

    /// The price a deployment's calls are charged at: custom pricing wins field by field.
    pub fn price_for(&self, d: &DeploymentConfig) -> Option<Price> {
        let entry = self.entry_for(d).cloned().unwrap_or_default();
        let CustomPricing {
            input_cost_per_token,
            output_cost_per_token,
            cache_read_input_token_cost,
            cache_creation_input_token_cost,
            output_cost_per_reasoning_token,
        } = &d.pricing;
        let input = input_cost_per_token.or(entry.input_cost_per_token);
        let output = output_cost_per_token.or(entry.output_cost_per_token);
        if input.is_none() && output.is_none() {
            return None;
        }
        // Custom pricing is one flat rate: the map's tiers do not apply to it.
        let custom = input_cost_per_token.is_some() || output_cost_per_token.is_some();
        Some(Price {
            input: input.unwrap_or(0.0),
            output: output.unwrap_or(0.0),
            cache_read: cache_read_input_token_cost.or(entry.cache_read_input_token_cost),
            cache_write: cache_creation_input_token_cost.or(entry.cache_creation_input_token_cost),
            reasoning: output_cost_per_reasoning_token.or(entry.output_cost_per_reasoning_token),
            tiers: if custom { Tiers::default() } else { entry.tiers },
            // LiteLLM: xAI bills the higher tier once the prompt reaches the threshold.
            inclusive: d.provider.name == "xai",
        })
    }
}

/// USD per token for one deployment.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    pub cache_read: Option<f64>,
    pub cache_write: Option<f64>,
    pub reasoning: Option<f64>,
    pub tiers: Tiers,
    /// A tier applies from a prompt of exactly its threshold (not only above it).
    pub inclusive: bool,
}

impl Price {
    /// The rates for a prompt of `prompt_tokens`: the highest tier it crosses replaces the
    /// rates that tier sets (LiteLLM's `_get_token_base_cost`).
    fn at(&self, prompt_tokens: u64) -> Self {
        let mut p = *self;
        for tier in self.tiers.iter().flatten() {
            let crossed = prompt_tokens > tier.above || (self.inclusive && prompt_tokens == tier.above);
            if crossed {
                p.input = tier.input.unwrap_or(p.input);
                p.output = tier.output.unwrap_or(p.output);
                p.cache_read = tier.cache_read.or(p.cache_read);
                p.cache_write = tier.cache_write.or(p.cache_write);
            }
        }
        p
    }

    /// The cost of a call. Cached reads and writes are part of `prompt_tokens` and priced at
    /// their own rates where the map has them (else at the input rate); reasoning tokens are
    /// part of `completion_tokens`. A prompt above a tier's threshold bills every token at
    /// that tier's rates.
    pub fn cost(&self, u: &TokenUsage) -> f64 {
        let rates = self.at(u.prompt_tokens);
        rates.cost_flat(u)
    }

    fn cost_flat(&self, u: &TokenUsage) -> f64 {
        let cache_read = u.cache_read_input_tokens.min(u.prompt_tokens);
        let cache_write = u.cache_creation_input_tokens.min(u.prompt_tokens - cache_read);
        let plain_input = u.prompt_tokens - cache_read - cache_write;
        let reasoning = u.reasoning_tokens.min(u.completion_tokens);
        let (plain_output, reasoning_rate) = match self.reasoning {
            Some(rate) => (u.completion_tokens - reasoning, rate),
            None => (u.completion_tokens, 0.0),
        };
        let reasoning_billed = if self.reasoning.is_some() { reasoning } else { 0 };
        let cost = plain_input as f64 * self.input
            + cache_read as f64 * self.cache_read.unwrap_or(self.input)
            + cache_write as f64 * self.cache_write.unwrap_or(self.input)
            + plain_output as f64 * self.output
            + reasoning_billed as f64 * reasoning_rate;
        round_cost(cost)
    }
}

/// Costs are sums of tiny products; rounding to 1e-12 USD keeps `7.2e-06` from printing as
/// `7.199999999999999e-06` without losing anything a bill would show.
fn round_cost(cost: f64) -> f64 {
    (cost * 1e12).round() / 1e12
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(prompt: u64, completion: u64) -> TokenUsage {
        TokenUsage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            ..Default::default()
        }
    }

    fn deployment(yaml: &str) -> DeploymentConfig {
        let cfg = crate::config::Config::from_yaml(yaml, &|_| None).unwrap();
        cfg.deployments.into_iter().next().unwrap()
    }

    #[test]
    fn bundled_map_prices_gpt_4o_mini_like_openai() {
        let map = PriceMap::bundled();
        assert!(map.len() > 30, "bundled map has {} entries", map.len());
        let d = deployment("model_list:\n  - model_name: mini\n    litellm_params: {model: openai/gpt-4o-mini}\n");
        let price = map.price_for(&d).unwrap();
        assert_eq!(price.cost(&usage(12, 9)), 7.2e-06);
    }

    #[test]
    fn custom_pricing_wins_over_the_map() {
        let map = PriceMap::bundled();
        let d = deployment(
            "model_list:\n  - model_name: mini\n    litellm_params: {model: openai/gpt-4o-mini, input_cost_per_token: 0.001, output_cost_per_token: 0.002}\n",
        );
        assert_eq!(map.price_for(&d).unwrap().cost(&usage(10, 10)), 0.03);
    }

    #[test]
    fn unknown_models_have_no_price() {
        let d = deployment("model_list:\n  - model_name: x\n    litellm_params: {model: openai/not-a-real-model, api_base: 'http://x'}\n");
        assert!(PriceMap::bundled().price_for(&d).is_none());
    }

    /// LiteLLM's `completion_cost` is the oracle: tests/fixtures/litellm_costs.json holds what
    /// it answers for models of every OpenAI-compatible provider on cached, reasoning (inside
    /// and beside the completion) and above-threshold usage (scripts/litellm_costs.py).
    #[test]
    fn costs_match_litellm() {
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/litellm_costs.json")).unwrap();
        let map = PriceMap::bundled();
        let cases = fixture["cases"].as_array().unwrap();
        assert!(cases.len() > 100);
        let mut wrong = Vec::new();
        for case in cases {
            let (provider, model) = (case["provider"].as_str().unwrap(), case["model"].as_str().unwrap());
            let d = deployment(&format!(
                "model_list:\n  - model_name: m\n    litellm_params: {{model: '{provider}/{model}', api_base: 'http://x'}}\n"
            ));
            let body = serde_json::json!({"usage": case["usage"]}).to_string();
            let usage = crate::openai::ResponseView::parse(body.as_bytes()).unwrap().usage().unwrap();
            let ours = map.price_for(&d).map_or(0.0, |p| p.cost(&usage));
            let theirs = case["cost"].as_f64().unwrap();
            if (ours - theirs).abs() > 1e-12 {
                wrong.push(format!("{provider}/{model} {}: {ours} here, {theirs} in LiteLLM", case["shape"]));
            }
        }
        assert!(wrong.is_empty(), "{} of {} differ:\n{}", wrong.len(), cases.len(), wrong.join("\n"));
    }

    #[test]
    fn cached_and_reasoning_tokens_use_their_own_rates() {
        let price = Price {
            input: 1.0,
            output: 10.0,
            cache_read: Some(0.1),
            cache_write: Some(1.25),
            reasoning: Some(20.0),
            ..Price::default()
        };
        let u = TokenUsage {
            prompt_tokens: 100,
            completion_tokens: 50,
            total_tokens: 150,
            cache_read_input_tokens: 40,
            cache_creation_input_tokens: 10,
            reasoning_tokens: 20,
        };
        // 50 plain input + 40*0.1 + 10*1.25 + 30*10 + 20*20
        assert_eq!(price.cost(&u), 50.0 + 4.0 + 12.5 + 300.0 + 400.0);
        // Without a reasoning rate, reasoning tokens are ordinary output tokens.
        let plain = Price { reasoning: None, ..price };
        assert_eq!(plain.cost(&u), 50.0 + 4.0 + 12.5 + 500.0);
    }
}
