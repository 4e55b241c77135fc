//! Health checks: a one-token request to a deployment, used by `GET /health` and by the
//! Router's background checks (`general_settings.background_health_checks`).

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::RouterHandle;
use crate::config::Mode;
use crate::deployment::DeploymentHandle;
use crate::providers::{self, Endpoint};

/// The longest a health check waits for one deployment.
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// The outcome of checking every deployment.
#[derive(Clone)]
pub struct HealthReport {
    pub checked_at: SystemTime,
    /// (deployment, error) in table order; `None` is healthy.
    pub results: Vec<(DeploymentHandle, Option<String>)>,
}

impl RouterHandle {
    /// Checks every deployment concurrently.
    pub async fn check_all(&self) -> HealthReport {
        let table = self.table();
        let deployments: Vec<DeploymentHandle> = table.deployments().cloned().collect();
        let results = futures_util::future::join_all(deployments.iter().map(|d| self.check(d))).await;
        HealthReport {
            checked_at: SystemTime::now(),
            results: deployments.into_iter().zip(results.into_iter().map(Result::err)).collect(),
        }
    }

    /// One health check: a tiny real request, unless the deployment answers with `mock_response`.
    pub async fn check(&self, d: &DeploymentHandle) -> Result<(), String> {
        let cfg = d.config();
        if let Some(mock) = &cfg.mock_response {
            return match crate::openai::mock::mock_failure(mock) {
                Some(failure) => Err(failure.message),
                None => Ok(()),
            };
        }
        let (endpoint, body) = match cfg.mode {
            Mode::Embedding => (Endpoint::Embeddings, json!({"input": ["ping"]})),
            Mode::Completion => (Endpoint::Completions, json!({"prompt": "ping", "max_tokens": 1})),
            Mode::Chat | Mode::Responses => {
                (Endpoint::ChatCompletions, json!({"messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}))
            }
            other => return Err(format!("health checks for mode {} are not supported", other.as_str())),
        };
        let Value::Object(body) = body else {
            return Err("health check body is not an object".into());
        };
        let timeout = self.timeout_for(d, false, None, None).min(HEALTH_CHECK_TIMEOUT);
        providers::call(&self.client, cfg, endpoint, &body, &[], false, timeout)
            .await
            .map(|_| ())
            .map_err(|f| format!("{} ({})", f.message, f.status()))
    }
}
