//! OpenAI's API, and every provider that speaks it and differs only in base URL and key (the
//! list is in [`crate::config::providers`]).

use reqwest::RequestBuilder;
use secrecy::ExposeSecret;

use super::Provider;
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
