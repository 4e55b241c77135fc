//! Deployments: one actor per `model_list` entry, owning its health, and a handle the request
//! path uses without a mailbox hop.
//!
//! The [`Deployment`] actor is the only writer of the deployment's [`Health`]; after every
//! reported outcome it publishes a [`HealthSnapshot`] through an `ArcSwap`. Counters that must be
//! exact at admission (in-flight requests, this minute's requests and tokens, the rpm limiter)
//! are atomics on the [`DeploymentHandle`], updated by the request itself.

pub mod health;

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::{Actor, ActorContext, Addr, AsyncContext, Context, Handler, Message};
use actix_web::http::header::HeaderValue;
use arc_swap::ArcSwap;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

use crate::config::DeploymentConfig;
use crate::cost::Price;
use crate::events::{DeploymentEvent, Event, EventSink};
use crate::failure::UpstreamFailure;
use crate::metrics::{DeploymentSeries, Metrics};
pub use health::{Health, HealthPolicy, HealthSnapshot, Outcome, State, Transition};

/// Reports queued for one deployment before new ones are dropped (and counted).
const MAILBOX_CAPACITY: usize = 16_384;
/// How often the actor folds in the successes reported since the last tick. Successes are
/// batched so that a request does not wake the actor's thread; failures are sent at once,
/// because they decide cooldowns.
const SUCCESS_BATCH_INTERVAL: Duration = Duration::from_millis(50);
/// Successes buffered between ticks before new ones are dropped (and counted).
const MAX_PENDING_SUCCESSES: usize = 100_000;

/// The actor that owns one deployment's health.
pub struct Deployment {
    handle: DeploymentHandle,
    health: Health,
    policy: HealthPolicy,
    /// Cooldowns entered and left are published to `<prefix>.deployments`.
    events: EventSink,
}

impl Actor for Deployment {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        ctx.run_interval(SUCCESS_BATCH_INTERVAL, |act, _| {
            if act.fold_successes() {
                act.publish();
            }
        });
        self.publish();
    }
}

/// An upstream call finished; fold its outcome into the deployment's health.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReportOutcome {
    pub outcome: Outcome,
    pub at: Instant,
}

/// Stop the actor (the gateway is shutting down).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

impl Handler<ReportOutcome> for Deployment {
    type Result = ();

    fn handle(&mut self, msg: ReportOutcome, ctx: &mut Self::Context) {
        // Successes reported before this outcome count first (the failure-rate rule needs them).
        self.fold_successes();
        let transition = self.health.record(msg.at, &msg.outcome, &self.policy);
        self.publish();
        let (entered, until) = match transition {
            Transition::None => return,
            Transition::CooldownEntered { until } => (true, until),
            Transition::CooldownExtended { until } => (false, until),
        };
        let cfg = self.handle.config();
        let secs = until.saturating_duration_since(msg.at).as_secs_f64();
        if entered {
            tracing::warn!(deployment = %cfg.id, model_group = %cfg.model_name, cooldown_secs = secs, "deployment cooling down");
            let (reason, status) = match &msg.outcome {
                Outcome::Failure { class, status, .. } => (class.litellm_name(), *status),
                Outcome::Success { .. } => ("", 0),
            };
            self.handle.inner.series.cooled_down(status);
            let until_wall = std::time::SystemTime::now() + until.saturating_duration_since(msg.at);
            let event = DeploymentEvent::new(
                cfg,
                self.events.gateway_id(),
                "cooldown_entered",
                Some(reason.to_string()),
                Some(until_wall),
            );
            self.events.publish(Event::Deployment(Box::new(event)));
        } else {
            tracing::debug!(deployment = %cfg.id, cooldown_secs = secs, "deployment cooldown extended");
        }
        // Publish again when the cooldown is over, so the state gauge and the log follow.
        ctx.run_later(until.saturating_duration_since(Instant::now()) + Duration::from_millis(1), |act, _| {
            let now = Instant::now();
            // A later, extended cooldown schedules its own end; only the last one reports.
            if act.health.cooldown_until(now).is_none() && act.health.cooldown_ended_at(now) {
                let cfg = act.handle.config();
                tracing::info!(deployment = %cfg.id, "deployment cooldown over");
                let event = DeploymentEvent::new(cfg, act.events.gateway_id(), "cooldown_left", None, None);
                act.events.publish(Event::Deployment(Box::new(event)));
            }
            act.publish();
        });
    }
}

impl Handler<Stop> for Deployment {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Deployment {
    /// Records the successes buffered since the last tick; true when there were any.
    fn fold_successes(&mut self) -> bool {
        let batch = match self.handle.inner.pending_successes.lock() {
            Ok(mut pending) if !pending.is_empty() => std::mem::take(&mut *pending),
            _ => return false,
        };
        for (at, outcome) in &batch {
            self.health.record(*at, outcome, &self.policy);
        }
        true
    }

    fn publish(&mut self) {
        let snapshot = self.health.snapshot(Instant::now(), &self.policy);
        self.handle.inner.series.state(snapshot.state as i64);
        self.handle.inner.health.store(Arc::new(snapshot));
    }

    /// Starts the actor for one deployment on the current arbiter and returns its handle.
    pub fn start(
        config: DeploymentConfig,
        price: Option<Price>,
        max_input_tokens: Option<u64>,
        max_output_tokens: Option<u64>,
        policy: HealthPolicy,
        metrics: Arc<Metrics>,
        events: EventSink,
    ) -> DeploymentHandle {
        let rpm = config
            .rpm
            .and_then(|rpm| NonZeroU32::new(rpm.min(u32::MAX as u64) as u32))
            .map(|rpm| RateLimiter::direct(Quota::per_minute(rpm)));
        let ctx = Context::new();
        let series = metrics.deployment(&config);
        let (id_header, api_base_header) = (header_value(&config.id), header_value(&config.api_base));
        let handle = DeploymentHandle {
            inner: Arc::new(Inner {
                config,
                price,
                max_input_tokens,
                max_output_tokens,
                in_flight: AtomicU32::new(0),
                rpm,
                usage: MinuteUsage::default(),
                health: ArcSwap::from_pointee(HealthSnapshot::healthy()),
                pending_successes: Mutex::new(Vec::new()),
                addr: ctx.address(),
                series,
                id_header,
                api_base_header,
                metrics: metrics.clone(),
            }),
        };
        let actor = Deployment { handle: handle.clone(), health: Health::new(Instant::now()), policy, events };
        ctx.run(actor);
        handle
    }
}

/// A header value for a config string (ids and URLs are valid header text; anything else shows
/// as `invalid` rather than failing the answer).
fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// Requests and tokens in the current UTC minute (LiteLLM's rpm/tpm accounting).
#[derive(Debug, Default)]
struct MinuteUsage {
    minute: AtomicU64,
    requests: AtomicU64,
    tokens: AtomicU64,
}

fn utc_minute() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() / 60).unwrap_or(0)
}

impl MinuteUsage {
    fn roll(&self, minute: u64) {
        let seen = self.minute.load(Ordering::Relaxed);
        if seen != minute && self.minute.compare_exchange(seen, minute, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            self.requests.store(0, Ordering::Relaxed);
            self.tokens.store(0, Ordering::Relaxed);
        }
    }

    fn add(&self, requests: u64, tokens: u64) {
        self.roll(utc_minute());
        if requests > 0 {
            self.requests.fetch_add(requests, Ordering::Relaxed);
        }
        if tokens > 0 {
            self.tokens.fetch_add(tokens, Ordering::Relaxed);
        }
    }

    fn current(&self) -> (u64, u64) {
        if self.minute.load(Ordering::Relaxed) != utc_minute() {
            return (0, 0);
        }
        (self.requests.load(Ordering::Relaxed), self.tokens.load(Ordering::Relaxed))
    }
}

struct Inner {
    config: DeploymentConfig,
    price: Option<Price>,
    /// From the config, else from the price map.
    max_input_tokens: Option<u64>,
    max_output_tokens: Option<u64>,
    in_flight: AtomicU32,
    /// `litellm_params.rpm` as a rate limiter.
    rpm: Option<DefaultDirectRateLimiter>,
    usage: MinuteUsage,
    health: ArcSwap<HealthSnapshot>,
    /// Successes waiting for the actor's next tick.
    pending_successes: Mutex<Vec<(Instant, Outcome)>>,
    addr: Addr<Deployment>,
    /// This deployment's metric series, bound once.
    series: DeploymentSeries,
    /// Its `x-litellm-model-id` and `x-litellm-model-api-base` answer headers, built once.
    id_header: HeaderValue,
    api_base_header: HeaderValue,
    metrics: Arc<Metrics>,
}

/// What the request path holds for a deployment: cheap to clone, never blocks.
#[derive(Clone)]
pub struct DeploymentHandle {
    inner: Arc<Inner>,
}

impl DeploymentHandle {
    pub fn config(&self) -> &DeploymentConfig {
        &self.inner.config
    }

    pub fn id(&self) -> &str {
        &self.inner.config.id
    }

    pub fn id_header(&self) -> &HeaderValue {
        &self.inner.id_header
    }

    pub fn api_base_header(&self) -> &HeaderValue {
        &self.inner.api_base_header
    }

    pub fn series(&self) -> &DeploymentSeries {
        &self.inner.series
    }

    pub fn price(&self) -> Option<&Price> {
        self.inner.price.as_ref()
    }

    pub fn max_input_tokens(&self) -> Option<u64> {
        self.inner.max_input_tokens
    }

    /// The most a call can generate (the price map's `max_output_tokens`): what a budget
    /// reservation assumes when the request sets no `max_tokens`.
    pub fn max_output_tokens(&self) -> Option<u64> {
        self.inner.max_output_tokens
    }

    pub fn health(&self) -> Arc<HealthSnapshot> {
        self.inner.health.load_full()
    }

    pub fn in_flight(&self) -> u32 {
        self.inner.in_flight.load(Ordering::Relaxed)
    }

    /// (requests, tokens) in the current UTC minute.
    pub fn usage_this_minute(&self) -> (u64, u64) {
        self.inner.usage.current()
    }

    /// Whether `max_parallel_requests` leaves room for one more call (a hint for choosing;
    /// [`DeploymentHandle::try_start_call`] is what takes the slot).
    pub fn has_capacity(&self) -> bool {
        self.inner.config.max_parallel_requests.is_none_or(|max| self.in_flight() < max)
    }

    /// Takes one request from the rpm limiter; false when this minute's budget is spent.
    pub fn try_admit(&self) -> bool {
        self.inner.rpm.as_ref().is_none_or(|limiter| limiter.check().is_ok())
    }

    /// Takes one of the deployment's `max_parallel_requests` slots in one atomic step (two
    /// workers cannot both take the last one); `None` when they are all taken. The guard gives
    /// the slot back when dropped, however the call ends.
    pub fn try_start_call(&self) -> Option<InFlight> {
        let max = self.inner.config.max_parallel_requests.unwrap_or(u32::MAX);
        self.inner.in_flight.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| (n < max).then_some(n + 1)).ok()?;
        self.inner.usage.add(1, 0);
        Some(InFlight { handle: self.clone() })
    }

    pub fn add_tokens(&self, tokens: u64) {
        self.inner.usage.add(0, tokens);
    }

    /// Hands an outcome to the actor; never waits. Successes are buffered for the actor's next tick,
    /// failures sent at once; a full buffer or mailbox drops the report (counted).
    pub fn report(&self, outcome: Outcome) {
        let at = Instant::now();
        if let Outcome::Success { .. } = outcome {
            if let Ok(mut pending) = self.inner.pending_successes.lock() {
                if pending.len() < MAX_PENDING_SUCCESSES {
                    pending.push((at, outcome));
                    return;
                }
            }
            self.inner.metrics.health_report_dropped();
            return;
        }
        if self.inner.addr.try_send(ReportOutcome { outcome, at }).is_err() {
            self.inner.metrics.health_report_dropped();
            tracing::debug!(deployment = %self.id(), "health report dropped: mailbox full");
        }
    }

    pub fn report_failure(&self, failure: &UpstreamFailure) {
        self.report(Outcome::Failure {
            class: failure.class(),
            status: failure.status(),
            may_cool_down: failure.may_cool_down(),
            rate_limited: failure.status() == 429,
            non_retryable: matches!(failure.status(), 401 | 404),
            timeout: failure.kind == crate::failure::FailureKind::Timeout,
            retry_after: failure.retry_after,
        });
    }

    /// Asks the actor to stop; resolves once it has handled the request (or was gone already).
    pub fn stop(&self) -> impl std::future::Future<Output = ()> {
        let sent = self.inner.addr.send(Stop);
        async move {
            let _ = sent.await;
        }
    }
}

/// One call in progress on a deployment.
pub struct InFlight {
    handle: DeploymentHandle,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.handle.inner.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}
