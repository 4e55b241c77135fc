//! Prometheus metrics under LiteLLM's names, so users' dashboards keep working.

use prometheus::{
    exponential_buckets, CounterVec, Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts,
    Registry, TextEncoder,
};

use crate::config::DeploymentConfig;
use crate::deployment::State;

const DEPLOYMENT_LABELS: &[&str] = &["litellm_model_name", "model_id", "api_base", "api_provider", "requested_model"];

pub struct Metrics {
    registry: Registry,
    total_requests: IntCounterVec,
    failed_requests: IntCounterVec,
    spend: CounterVec,
    total_tokens: IntCounterVec,
    input_tokens: IntCounterVec,
    output_tokens: IntCounterVec,
    deployment_success: IntCounterVec,
    deployment_failure: IntCounterVec,
    deployment_total: IntCounterVec,
    deployment_state: GaugeVec,
    deployment_cooled_down: IntCounterVec,
    latency_per_output_token: HistogramVec,
    request_total_latency: HistogramVec,
    overhead_latency: HistogramVec,
    llm_api_latency: HistogramVec,
    time_to_first_token: HistogramVec,
    successful_fallbacks: IntCounterVec,
    failed_fallbacks: IntCounterVec,
    health_reports_dropped: IntCounter,
}

fn latency_buckets() -> Vec<f64> {
    // 0.5 ms .. ~65 s
    exponential_buckets(0.0005, 2.0, 18).unwrap_or_default()
}

/// What one finished request contributes to the request-level metrics.
pub struct RequestRecord<'a> {
    pub requested_model: &'a str,
    pub status: u16,
    pub error_class: Option<&'static str>,
    pub model: Option<&'a str>,
    pub spend: f64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_secs: f64,
    pub overhead_secs: f64,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        macro_rules! register {
            ($metric:expr) => {{
                let m = $metric.expect("metric definitions are static");
                registry.register(Box::new(m.clone())).expect("metric names are unique");
                m
            }};
        }
        let counter = |name: &str, help: &str, labels: &[&str]| IntCounterVec::new(Opts::new(name, help), labels);
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            HistogramVec::new(HistogramOpts::new(name, help).buckets(latency_buckets()), labels)
        };
        Self {
            total_requests: register!(counter(
                "litellm_proxy_total_requests_metric",
                "Requests made to the proxy",
                &["requested_model", "status_code"]
            )),
            failed_requests: register!(counter(
                "litellm_proxy_failed_requests_metric",
                "Requests that failed",
                &["requested_model", "exception_status", "exception_class"]
            )),
            spend: register!(CounterVec::new(
                Opts::new("litellm_spend_metric", "Spend in USD"),
                &["model", "requested_model"]
            )),
            total_tokens: register!(counter(
                "litellm_total_tokens",
                "Input + output tokens",
                &["model", "requested_model"]
            )),
            input_tokens: register!(counter("litellm_input_tokens", "Input tokens", &["model", "requested_model"])),
            output_tokens: register!(counter("litellm_output_tokens", "Output tokens", &["model", "requested_model"])),
            deployment_success: register!(counter(
                "litellm_deployment_success_responses",
                "Successful upstream calls",
                DEPLOYMENT_LABELS
            )),
            deployment_failure: register!(counter(
                "litellm_deployment_failure_responses",
                "Failed upstream calls",
                &["litellm_model_name", "model_id", "api_base", "api_provider", "requested_model", "exception_status"]
            )),
            deployment_total: register!(counter(
                "litellm_deployment_total_requests",
                "Upstream calls",
                DEPLOYMENT_LABELS
            )),
            deployment_state: register!(GaugeVec::new(
                Opts::new("litellm_deployment_state", "0 healthy, 1 partial outage, 2 complete outage (cooling down)"),
                &["litellm_model_name", "model_id", "api_base", "api_provider"]
            )),
            deployment_cooled_down: register!(counter(
                "litellm_deployment_cooled_down",
                "Times a deployment entered cooldown",
                &["litellm_model_name", "model_id", "api_base", "api_provider", "exception_status"]
            )),
            latency_per_output_token: register!(histogram(
                "litellm_deployment_latency_per_output_token",
                "Upstream latency per output token, seconds",
                &["litellm_model_name", "model_id", "api_base", "api_provider"]
            )),
            request_total_latency: register!(histogram(
                "litellm_request_total_latency_metric",
                "Total request latency, seconds",
                &["model"]
            )),
            overhead_latency: register!(histogram(
                "litellm_overhead_latency_metric",
                "Latency the gateway added, seconds",
                &["model"]
            )),
            llm_api_latency: register!(histogram(
                "litellm_llm_api_latency_metric",
                "Upstream call latency, seconds",
                &["model"]
            )),
            time_to_first_token: register!(histogram(
                "litellm_llm_api_time_to_first_token_metric",
                "Time to first token of streams, seconds",
                &["model"]
            )),
            successful_fallbacks: register!(counter(
                "litellm_deployment_successful_fallbacks",
                "Requests served by a fallback model group",
                &["requested_model", "fallback_model"]
            )),
            failed_fallbacks: register!(counter(
                "litellm_deployment_failed_fallbacks",
                "Fallback attempts that failed",
                &["requested_model", "fallback_model"]
            )),
            health_reports_dropped: register!(IntCounter::new(
                "switchyard_health_reports_dropped_total",
                "Outcome reports dropped because a deployment's mailbox was full"
            )),
            registry,
        }
    }

    fn deployment_labels<'a>(d: &'a DeploymentConfig, requested_model: &'a str) -> [&'a str; 5] {
        [&d.litellm_model, &d.id, &d.api_base, d.provider.name, requested_model]
    }

    pub fn request(&self, r: &RequestRecord) {
        self.total_requests.with_label_values(&[r.requested_model, status_label(r.status)]).inc();
        if let Some(class) = r.error_class {
            self.failed_requests.with_label_values(&[r.requested_model, status_label(r.status), class]).inc();
        }
        let model = r.model.unwrap_or("");
        if r.spend > 0.0 {
            self.spend.with_label_values(&[model, r.requested_model]).inc_by(r.spend);
        }
        if r.prompt_tokens + r.completion_tokens > 0 {
            let labels = [model, r.requested_model];
            self.input_tokens.with_label_values(&labels).inc_by(r.prompt_tokens);
            self.output_tokens.with_label_values(&labels).inc_by(r.completion_tokens);
            self.total_tokens.with_label_values(&labels).inc_by(r.prompt_tokens + r.completion_tokens);
        }
        self.request_total_latency.with_label_values(&[r.requested_model]).observe(r.total_secs);
        self.overhead_latency.with_label_values(&[r.requested_model]).observe(r.overhead_secs);
    }

    pub fn upstream_success(
        &self,
        d: &DeploymentConfig,
        requested_model: &str,
        latency_secs: f64,
        completion_tokens: u64,
    ) {
        let labels = Self::deployment_labels(d, requested_model);
        self.deployment_total.with_label_values(&labels).inc();
        self.deployment_success.with_label_values(&labels).inc();
        self.llm_api_latency.with_label_values(&[&d.model_name]).observe(latency_secs);
        if completion_tokens > 0 {
            self.latency_per_output_token
                .with_label_values(&labels[..4])
                .observe(latency_secs / completion_tokens as f64);
        }
    }

    pub fn upstream_failure(&self, d: &DeploymentConfig, requested_model: &str, status: u16) {
        let labels = Self::deployment_labels(d, requested_model);
        self.deployment_total.with_label_values(&labels).inc();
        let [a, b, c, e, f] = labels;
        self.deployment_failure.with_label_values(&[a, b, c, e, f, status_label(status)]).inc();
    }

    pub fn time_to_first_token(&self, model_group: &str, secs: f64) {
        self.time_to_first_token.with_label_values(&[model_group]).observe(secs);
    }

    pub fn deployment_state(&self, d: &DeploymentConfig, state: State) {
        self.deployment_state
            .with_label_values(&[&d.litellm_model, &d.id, &d.api_base, d.provider.name])
            .set(state as i64 as f64);
    }

    pub fn deployment_cooled_down(&self, d: &DeploymentConfig, reason: &str) {
        self.deployment_cooled_down
            .with_label_values(&[&d.litellm_model, &d.id, &d.api_base, d.provider.name, reason])
            .inc();
    }

    pub fn fallback(&self, requested_model: &str, fallback_model: &str, succeeded: bool) {
        let metric = if succeeded { &self.successful_fallbacks } else { &self.failed_fallbacks };
        metric.with_label_values(&[requested_model, fallback_model]).inc();
    }

    pub fn health_report_dropped(&self) {
        self.health_reports_dropped.inc();
    }

    /// The registry, for other parts (the event log) to register their metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Status codes as static labels (no allocation per request).
fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        408 => "408",
        413 => "413",
        422 => "422",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        s if s < 300 => "2xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}
