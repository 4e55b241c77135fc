//! OpenAI's API, and every provider that speaks it and differs only in base URL and key (the
//! list is in [`crate::config::providers`]).

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};
use secrecy::ExposeSecret;

use super::Provider;
use crate::config::DeploymentConfig;

/// The adapter for OpenAI and the OpenAI-compatible family.
pub struct OpenAi;

impl Provider for OpenAi {
    fn authorize(&self, headers: &mut HeaderMap, d: &DeploymentConfig) -> Result<(), String> {
        let Some(key) = &d.api_key else { return Ok(()) };
        let mut value = HeaderValue::try_from(format!("Bearer {}", key.expose_secret()))
            .map_err(|_| format!("the API key of deployment {} cannot be sent in a header", d.id))?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
        Ok(())
    }
}
