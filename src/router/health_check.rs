//! Health checks: a one-token request to a deployment, used by `GET /health` and by the
//! Router's background checks (`general_settings.background_health_checks`).

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::RouterHandle;
use crate::config::Mode;
use crate::deployment::DeploymentHandle;
use crate::openai::request::RequestBody;
use crate::providers::{self, Endpoint, ReplyBody};
use futures_util::StreamExt;

/// The longest a health check waits for one deployment.
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(30);
/// Deployments checked at once: a config with hundreds of them must not fire hundreds of
/// upstream calls (and sockets) in the same instant.
const HEALTH_CHECK_CONCURRENCY: usize = 8;

/// The outcome of checking every deployment.
#[derive(Clone)]
pub struct HealthReport {
    pub checked_at: SystemTime,
    /// (deployment, error) in table order; `None` is healthy.
    pub results: Vec<(DeploymentHandle, Option<String>)>,
}

impl RouterHandle {
    /// Checks every deployment, [`HEALTH_CHECK_CONCURRENCY`] at a time.
    pub async fn check_all(&self) -> HealthReport {
        let table = self.table();
        // A wildcard deployment (`model: openai/*`) has no one model to ask; it is not checked.
        let deployments: Vec<DeploymentHandle> =
            table.deployments().filter(|d| !d.config().upstream_model.contains('*')).cloned().collect();
        let results: Vec<Result<(), String>> = futures_util::stream::iter(deployments.iter().map(|d| self.check(d)))
            .buffered(HEALTH_CHECK_CONCURRENCY)
            .collect()
            .await;
        HealthReport {
            checked_at: SystemTime::now(),
            results: deployments.into_iter().zip(results.into_iter().map(Result::err)).collect(),
        }
    }

    /// One health check: a tiny real request, unless the deployment answers with `mock_response`.
    /// Healthy means a success status and an answer in OpenAI's shape, not just any 200.
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
        let body = RequestBody::from_value(&body).map_err(|e| e.to_string())?;
        let timeout = self.timeout_for(d, false, None, None).min(HEALTH_CHECK_TIMEOUT);
        let call = providers::Call {
            deployment: cfg,
            model: &cfg.upstream_model,
            endpoint,
            body: &body,
            overrides: &[],
            stream: false,
            timeout,
        };
        let reply = providers::call(&providers::client::for_this_thread(), &call)
            .await
            .map_err(|f| format!("{} ({})", f.message, f.status()))?;
        match reply.body {
            ReplyBody::Complete(bytes) => judge_answer(endpoint, &bytes),
            ReplyBody::Stream(_) => Ok(()),
        }
    }
}

/// Whether a health check's 200 is a real answer: JSON with `choices` (or `data` for
/// embeddings).
fn judge_answer(endpoint: Endpoint, body: &[u8]) -> Result<(), String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the deployment answered 200 with invalid JSON: {e}"))?;
    let field = if endpoint == Endpoint::Embeddings { "data" } else { "choices" };
    match value.get(field) {
        Some(Value::Array(_)) => Ok(()),
        _ => Err(format!("the deployment answered 200 without `{field}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_health_check_judges_the_answer_not_just_the_status() {
        assert!(judge_answer(Endpoint::ChatCompletions, br#"{"choices":[{"message":{}}]}"#).is_ok());
        assert!(judge_answer(Endpoint::Embeddings, br#"{"data":[]}"#).is_ok());
        assert!(judge_answer(Endpoint::ChatCompletions, br#"{"id": "x", "choices": ["#).is_err());
        assert!(judge_answer(Endpoint::ChatCompletions, b"<html>ok</html>").is_err());
        assert!(judge_answer(Endpoint::ChatCompletions, br#"{"data":[]}"#).is_err());
    }
}
