//! Prometheus metrics under LiteLLM's names (counters end in `_total`, as LiteLLM's Python
//! exporter writes them), so users' dashboards keep working.
//!
//! Label values a client could make up are bounded: `requested_model` is always a configured
//! model group or alias, and anything else is counted under [`UNKNOWN_MODEL`]. The series a
//! request touches most are bound once — per deployment ([`DeploymentSeries`]) and per model
//! group — so the request path does not hash label values into a locked map each time.

use std::collections::HashMap;

use prometheus::{
    exponential_buckets, CounterVec, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, Opts, Registry, TextEncoder,
};

use crate::config::DeploymentConfig;

/// The `requested_model` label of requests naming no configured model group or alias.
pub const UNKNOWN_MODEL: &str = "unknown";

const DEPLOYMENT_LABELS: &[&str] = &["litellm_model_name", "model_id", "api_base", "api_provider"];
const IDENTITY_LABELS: &[&str] = &["end_user", "hashed_api_key", "api_key_alias", "team", "team_alias", "user"];

/// The metric families; [`Metrics`] and [`DeploymentSeries`] hold bound children of them.
#[derive(Clone)]
struct Families {
    total_requests: IntCounterVec,
    failed_requests: IntCounterVec,
    requests: IntCounterVec,
    spend: CounterVec,
    total_tokens: IntCounterVec,
    input_tokens: IntCounterVec,
    output_tokens: IntCounterVec,
    deployment_success: IntCounterVec,
    deployment_failure: IntCounterVec,
    deployment_total: IntCounterVec,
    deployment_state: GaugeVec,
    deployment_cooled_down: IntCounterVec,
    remaining_requests: GaugeVec,
    remaining_tokens: GaugeVec,
    latency_per_output_token: HistogramVec,
    request_total_latency: HistogramVec,
    overhead_latency: HistogramVec,
    llm_api_latency: HistogramVec,
    time_to_first_token: HistogramVec,
    successful_fallbacks: IntCounterVec,
    failed_fallbacks: IntCounterVec,
}

/// The per-request series of one `requested_model` label value, bound once.
struct GroupSeries {
    ok: IntCounter,
    total_latency: Histogram,
    overhead: Histogram,
    /// The series of the caller seen last, keyed by its hashed key and answering group: most
    /// traffic of a group comes from few keys, so this is usually a hit.
    last_caller: arc_swap::ArcSwapOption<CallerSeries>,
}

/// The series labelled by caller: requests and tokens.
struct CallerSeries {
    hashed_api_key: String,
    model: String,
    requests: IntCounter,
    spend: prometheus::Counter,
    input_tokens: IntCounter,
    output_tokens: IntCounter,
    total_tokens: IntCounter,
}

pub struct Metrics {
    registry: Registry,
    families: Families,
    /// Configured groups and aliases (and [`UNKNOWN_MODEL`]) → their bound series.
    groups: HashMap<String, GroupSeries>,
    health_reports_dropped: IntCounter,
}

fn latency_buckets() -> Vec<f64> {
    // 0.5 ms .. ~65 s
    exponential_buckets(0.0005, 2.0, 18).unwrap_or_default()
}

/// Who made a request, for the metrics LiteLLM labels by key, team and user.
#[derive(Debug, Default, Clone, Copy)]
pub struct Identity<'a> {
    pub hashed_api_key: &'a str,
    pub api_key_alias: &'a str,
    pub team: &'a str,
    pub user: &'a str,
}

/// What one finished request contributes to the request-level metrics.
pub struct RequestRecord<'a> {
    /// The client's model, if it names a configured group or alias; `None` counts as
    /// [`UNKNOWN_MODEL`].
    pub requested_model: Option<&'a str>,
    pub identity: Identity<'a>,
    pub status: u16,
    pub error_class: Option<&'static str>,
    /// The group that answered.
    pub model: Option<&'a str>,
    pub spend: f64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_secs: f64,
    pub overhead_secs: f64,
}

impl Metrics {
    /// Registers every metric, binding the per-request series of `model_names` (the configured
    /// groups and aliases).
    pub fn new<'a>(model_names: impl IntoIterator<Item = &'a str>) -> Self {
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
        let request_labels = [&["model"], IDENTITY_LABELS].concat();
        let token_labels = [&["requested_model"], IDENTITY_LABELS, &["model"]].concat();
        let families = Families {
            total_requests: register!(counter(
                "litellm_proxy_total_requests_metric_total",
                "Requests made to the proxy",
                &["requested_model", "status_code"]
            )),
            failed_requests: register!(counter(
                "litellm_proxy_failed_requests_metric_total",
                "Requests that failed, by status code and LiteLLM exception class",
                &["requested_model", "exception_status", "exception_class"]
            )),
            requests: register!(counter(
                "litellm_requests_metric_total",
                "Requests, by model and caller",
                &request_labels
            )),
            spend: register!(CounterVec::new(
                Opts::new("litellm_spend_metric_total", "Spend in USD"),
                &["model", "requested_model"]
            )),
            total_tokens: register!(counter(
                "litellm_total_tokens_metric_total",
                "Input + output tokens",
                &token_labels
            )),
            input_tokens: register!(counter("litellm_input_tokens_metric_total", "Input tokens", &token_labels)),
            output_tokens: register!(counter("litellm_output_tokens_metric_total", "Output tokens", &token_labels)),
            deployment_success: register!(counter(
                "litellm_deployment_success_responses_total",
                "Successful upstream calls",
                &["litellm_model_name", "model_id", "api_base", "api_provider", "requested_model"]
            )),
            deployment_failure: register!(counter(
                "litellm_deployment_failure_responses_total",
                "Failed upstream calls",
                &["litellm_model_name", "model_id", "api_base", "api_provider", "requested_model", "exception_status"]
            )),
            deployment_total: register!(counter(
                "litellm_deployment_total_requests_total",
                "Upstream calls",
                &["litellm_model_name", "model_id", "api_base", "api_provider", "requested_model"]
            )),
            deployment_state: register!(GaugeVec::new(
                Opts::new("litellm_deployment_state", "0 healthy, 1 partial outage, 2 complete outage (cooling down)"),
                DEPLOYMENT_LABELS
            )),
            deployment_cooled_down: register!(counter(
                "litellm_deployment_cooled_down_total",
                "Times a deployment entered cooldown, by the status code that caused it",
                &["litellm_model_name", "model_id", "api_base", "api_provider", "exception_status"]
            )),
            remaining_requests: register!(GaugeVec::new(
                Opts::new(
                    "litellm_remaining_requests_metric",
                    "The upstream's x-ratelimit-remaining-requests, from its latest answer"
                ),
                &["model_group", "api_provider", "api_base", "litellm_model_name"]
            )),
            remaining_tokens: register!(GaugeVec::new(
                Opts::new(
                    "litellm_remaining_tokens_metric",
                    "The upstream's x-ratelimit-remaining-tokens, from its latest answer"
                ),
                &["model_group", "api_provider", "api_base", "litellm_model_name"]
            )),
            latency_per_output_token: register!(histogram(
                "litellm_deployment_latency_per_output_token",
                "Upstream latency per output token, seconds",
                DEPLOYMENT_LABELS
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
                "litellm_deployment_successful_fallbacks_total",
                "Requests served by a fallback model group",
                &["requested_model", "fallback_model"]
            )),
            failed_fallbacks: register!(counter(
                "litellm_deployment_failed_fallbacks_total",
                "Fallback attempts that failed",
                &["requested_model", "fallback_model"]
            )),
        };
        let groups = model_names
            .into_iter()
            .chain([UNKNOWN_MODEL])
            .map(|name| {
                let series = GroupSeries {
                    ok: families.total_requests.with_label_values(&[name, "200"]),
                    total_latency: families.request_total_latency.with_label_values(&[name]),
                    overhead: families.overhead_latency.with_label_values(&[name]),
                    last_caller: arc_swap::ArcSwapOption::empty(),
                };
                (name.to_string(), series)
            })
            .collect();
        Self {
            health_reports_dropped: register!(IntCounter::new(
                "switchyard_health_reports_dropped_total",
                "Outcome reports dropped because a deployment's mailbox was full"
            )),
            families,
            groups,
            registry,
        }
    }

    /// The series of one deployment, bound once when it starts.
    pub fn deployment(&self, d: &DeploymentConfig) -> DeploymentSeries {
        let f = &self.families;
        let labels = [d.litellm_model.as_str(), d.id.as_str(), d.api_base.as_str(), d.provider.name];
        let with_group = [labels[0], labels[1], labels[2], labels[3], d.model_name.as_str()];
        let limit_labels = [d.model_name.as_str(), d.provider.name, d.api_base.as_str(), d.litellm_model.as_str()];
        DeploymentSeries {
            labels: labels.map(str::to_string),
            group: d.model_name.clone(),
            total: f.deployment_total.with_label_values(&with_group),
            success: f.deployment_success.with_label_values(&with_group),
            api_latency: f.llm_api_latency.with_label_values(&[&d.model_name]),
            per_token: f.latency_per_output_token.with_label_values(&labels),
            time_to_first_token: f.time_to_first_token.with_label_values(&[&d.model_name]),
            state: f.deployment_state.with_label_values(&labels),
            remaining_requests: f.remaining_requests.with_label_values(&limit_labels),
            remaining_tokens: f.remaining_tokens.with_label_values(&limit_labels),
            families: f.clone(),
        }
    }

    pub fn request(&self, r: &RequestRecord) {
        let f = &self.families;
        let name = r.requested_model.filter(|m| self.groups.contains_key(*m)).unwrap_or(UNKNOWN_MODEL);
        let group = self.groups.get(name);
        match group {
            Some(g) if r.status == 200 => g.ok.inc(),
            _ => f.total_requests.with_label_values(&[name, status_label(r.status)]).inc(),
        }
        if let Some(class) = r.error_class {
            f.failed_requests.with_label_values(&[name, status_label(r.status), class]).inc();
        }
        let model = r.model.unwrap_or("");
        let caller = self.caller_series(group, name, model, r.identity);
        caller.requests.inc();
        if r.spend > 0.0 {
            caller.spend.inc_by(r.spend);
        }
        if r.prompt_tokens > 0 || r.completion_tokens > 0 {
            caller.input_tokens.inc_by(r.prompt_tokens);
            caller.output_tokens.inc_by(r.completion_tokens);
            caller.total_tokens.inc_by(r.prompt_tokens.saturating_add(r.completion_tokens));
        }
        match group {
            Some(g) => {
                g.total_latency.observe(r.total_secs);
                g.overhead.observe(r.overhead_secs);
            }
            None => {
                f.request_total_latency.with_label_values(&[name]).observe(r.total_secs);
                f.overhead_latency.with_label_values(&[name]).observe(r.overhead_secs);
            }
        }
    }

    /// The caller-labelled series (and spend) for this request: the group's cached one when it is the same
    /// caller and answering group, else bound now (and cached).
    fn caller_series(
        &self,
        group: Option<&GroupSeries>,
        name: &str,
        model: &str,
        id: Identity,
    ) -> std::sync::Arc<CallerSeries> {
        if let Some(cached) = group.and_then(|g| g.last_caller.load_full()) {
            if cached.hashed_api_key == id.hashed_api_key && cached.model == model {
                return cached;
            }
        }
        let f = &self.families;
        let tokens = [name, "", id.hashed_api_key, id.api_key_alias, id.team, "", id.user, model];
        let series = std::sync::Arc::new(CallerSeries {
            hashed_api_key: id.hashed_api_key.to_string(),
            model: model.to_string(),
            requests: f.requests.with_label_values(&[
                model,
                "",
                id.hashed_api_key,
                id.api_key_alias,
                id.team,
                "",
                id.user,
            ]),
            spend: f.spend.with_label_values(&[model, name]),
            input_tokens: f.input_tokens.with_label_values(&tokens),
            output_tokens: f.output_tokens.with_label_values(&tokens),
            total_tokens: f.total_tokens.with_label_values(&tokens),
        });
        if let Some(g) = group {
            g.last_caller.store(Some(series.clone()));
        }
        series
    }

    pub fn fallback(&self, requested_model: &str, fallback_model: &str, succeeded: bool) {
        let f = &self.families;
        let metric = if succeeded { &f.successful_fallbacks } else { &f.failed_fallbacks };
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

/// One deployment's series, bound when it starts. `requested_model` is the deployment's own
/// group in the common case (bound); an alias or a fallback's origin is looked up.
pub struct DeploymentSeries {
    labels: [String; 4],
    group: String,
    total: IntCounter,
    success: IntCounter,
    api_latency: Histogram,
    per_token: Histogram,
    time_to_first_token: Histogram,
    state: Gauge,
    remaining_requests: Gauge,
    remaining_tokens: Gauge,
    families: Families,
}

impl DeploymentSeries {
    fn labels_with<'a>(&'a self, last: &'a str) -> [&'a str; 5] {
        let [a, b, c, d] = &self.labels;
        [a, b, c, d, last]
    }

    /// A successful call for `requested_model` (a configured group or alias).
    pub fn success(&self, requested_model: &str, latency_secs: f64, completion_tokens: u64) {
        if requested_model == self.group {
            self.total.inc();
            self.success.inc();
        } else {
            let labels = self.labels_with(requested_model);
            self.families.deployment_total.with_label_values(&labels).inc();
            self.families.deployment_success.with_label_values(&labels).inc();
        }
        self.api_latency.observe(latency_secs);
        if completion_tokens > 0 {
            self.per_token.observe(latency_secs / completion_tokens as f64);
        }
    }

    pub fn failure(&self, requested_model: &str, status: u16) {
        let labels = self.labels_with(requested_model);
        if requested_model == self.group {
            self.total.inc();
        } else {
            self.families.deployment_total.with_label_values(&labels).inc();
        }
        let [a, b, c, d, e] = labels;
        self.families.deployment_failure.with_label_values(&[a, b, c, d, e, status_label(status)]).inc();
    }

    pub fn time_to_first_token(&self, secs: f64) {
        self.time_to_first_token.observe(secs);
    }

    /// LiteLLM's `litellm_deployment_state`: 0 healthy, 1 partial outage, 2 complete outage.
    pub fn state(&self, state: i64) {
        self.state.set(state as f64);
    }

    /// The deployment entered a cooldown caused by an answer with `status`.
    pub fn cooled_down(&self, status: u16) {
        let [a, b, c, d, e] = self.labels_with(status_label(status));
        self.families.deployment_cooled_down.with_label_values(&[a, b, c, d, e]).inc();
    }

    /// The upstream's remaining rate limits, from its `x-ratelimit-remaining-*` headers.
    pub fn remaining_limits(&self, requests: Option<f64>, tokens: Option<f64>) {
        if let Some(n) = requests {
            self.remaining_requests.set(n);
        }
        if let Some(n) = tokens {
            self.remaining_tokens.set(n);
        }
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
        405 => "405",
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(model: Option<&str>) -> RequestRecord<'_> {
        RequestRecord {
            requested_model: model,
            identity: Identity::default(),
            status: 400,
            error_class: Some("BadRequestError"),
            model: None,
            spend: 0.0,
            prompt_tokens: 0,
            completion_tokens: 0,
            total_secs: 0.01,
            overhead_secs: 0.001,
        }
    }

    #[test]
    fn unknown_model_names_share_one_series() {
        let m = Metrics::new(["gpt-4o"]);
        for i in 0..1000 {
            m.request(&record(Some(&format!("random-{i}"))));
        }
        m.request(&record(Some("gpt-4o")));
        let text = m.render();
        assert!(!text.contains("random-"), "made-up names must not become label values");
        assert!(text.contains(
            r#"litellm_proxy_total_requests_metric_total{requested_model="unknown",status_code="400"} 1000"#
        ));
        assert!(text.contains(r#"requested_model="gpt-4o",status_code="400"} 1"#), "{text}");
        assert!(text.len() < 64 * 1024, "metrics stay small: {} bytes", text.len());
    }
}
