//! One call to one deployment, from the slot it takes to the outcome it reports.
//!
//! The router hands out an [`Attempt`] when it picks a deployment; whoever learns how the call
//! ended settles it: the dispatcher for a complete answer or a failure, the stream relay for a
//! stream. Settling reports the outcome to the deployment's actor and its metrics in one place.
//! An attempt dropped unsettled (the client went away while the call was on its way) gives its
//! slot back and reports nothing.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::deployment::{DeploymentHandle, InFlight, Outcome};
use crate::failure::UpstreamFailure;
use crate::openai::TokenUsage;

pub struct Attempt {
    deployment: DeploymentHandle,
    /// The model group the client's request resolved to, when it is not the deployment's own
    /// (a fallback): the `requested_model` metric label, always a configured name. `None` in the
    /// common case, so picking a deployment allocates nothing.
    requested_group: Option<Arc<str>>,
    started: Instant,
    /// The `max_parallel_requests` slot, given back on drop.
    _slot: InFlight,
}

impl Attempt {
    pub(super) fn new(deployment: DeploymentHandle, slot: InFlight, requested_group: &str) -> Self {
        let requested_group = (deployment.config().model_name != requested_group).then(|| requested_group.into());
        Self { deployment, requested_group, started: Instant::now(), _slot: slot }
    }

    fn requested_group(&self) -> &str {
        self.requested_group.as_deref().unwrap_or(&self.deployment.config().model_name)
    }

    pub fn deployment(&self) -> &DeploymentHandle {
        &self.deployment
    }

    /// When the upstream call started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The call succeeded with `usage`; `ttft` for streams.
    pub fn succeeded(self, usage: &TokenUsage, ttft: Option<Duration>) {
        let latency = self.started.elapsed();
        let d = &self.deployment;
        d.report(Outcome::Success { latency, ttft, completion_tokens: usage.completion_tokens });
        d.add_tokens(usage.total_tokens);
        d.series().success(self.requested_group(), latency.as_secs_f64(), usage.completion_tokens);
        if let Some(t) = ttft {
            d.series().time_to_first_token(t.as_secs_f64());
        }
        tracing::debug!(
            deployment = %d.id(),
            model_group = %d.config().model_name,
            latency_ms = latency.as_secs_f64() * 1000.0,
            "upstream call succeeded"
        );
    }

    /// The call failed (before or during the answer); `usage` is what a broken stream still
    /// generated.
    pub fn failed(self, failure: &UpstreamFailure, usage: Option<&TokenUsage>) {
        let d = &self.deployment;
        d.report_failure(failure);
        if let Some(usage) = usage {
            d.add_tokens(usage.total_tokens);
        }
        d.series().failure(self.requested_group(), failure.status());
        tracing::debug!(deployment = %d.id(), status = failure.status(), error = %failure.message, "upstream call failed");
    }
}
