//! A deployment's health as plain data: rolling per-minute outcomes, cooldown, and latency
//! windows. The [`super::Deployment`] actor owns one [`Health`] and publishes its snapshots;
//! every rule LiteLLM applies lives here as a function of `now`, so it is tested with paused time.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::failure::{ClassMap, ErrorClass};

/// LiteLLM's thresholds for the default cooldown rule.
const FAILURE_THRESHOLD_PERCENT: f64 = 0.5;
const FAILURE_THRESHOLD_MIN_REQUESTS: u64 = 5;
const SINGLE_DEPLOYMENT_MIN_REQUESTS: u64 = 1000;
/// What a timeout adds to the latency list, as in LiteLLM's latency-based routing.
const TIMEOUT_PENALTY_SECS: f64 = 1000.0;

/// The cooldown rules of one deployment's router settings.
#[derive(Debug, Clone)]
pub struct HealthPolicy {
    pub cooldown_time: Duration,
    pub disable_cooldowns: bool,
    pub allowed_fails: Option<u32>,
    pub allowed_fails_policy: ClassMap,
    /// Deployments in the same model group: a lone deployment is cooled down far less eagerly.
    pub group_size: usize,
    pub latency_window: usize,
    pub latency_ttl: Duration,
}

/// What one upstream call taught us about the deployment.
#[derive(Debug, Clone)]
pub enum Outcome {
    Success {
        latency: Duration,
        /// Time to first token, for streams.
        ttft: Option<Duration>,
        completion_tokens: u64,
    },
    Failure {
        class: ErrorClass,
        /// The HTTP status (or the one the gateway answers for timeouts and broken connections).
        status: u16,
        /// Whether this kind of failure may cool the deployment down at all.
        may_cool_down: bool,
        /// Whether the failure was a 429 (cools a multi-deployment group down at once).
        rate_limited: bool,
        /// Whether the failure was non-retryable (401, 404): cools down at once.
        non_retryable: bool,
        timeout: bool,
        retry_after: Option<Duration>,
    },
}

/// What recording an outcome changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    None,
    /// The deployment started cooling down until the given time.
    CooldownEntered {
        until: Instant,
    },
    /// A failure while cooling down pushed the end further out.
    CooldownExtended {
        until: Instant,
    },
}

/// LiteLLM's `litellm_deployment_state`: 0 healthy, 1 partial outage, 2 complete outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Healthy = 0,
    Partial = 1,
    Outage = 2,
}

/// Successes and failures over the last 60 seconds, in one-second buckets.
#[derive(Debug)]
struct RollingMinute {
    start: Instant,
    /// (second since `start`, successes, failures) per bucket.
    buckets: [(u64, u64, u64); 60],
}

impl RollingMinute {
    fn new(start: Instant) -> Self {
        Self { start, buckets: [(u64::MAX, 0, 0); 60] }
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_secs()
    }

    fn add(&mut self, now: Instant, success: bool) {
        let sec = self.second(now);
        let bucket = &mut self.buckets[(sec % 60) as usize];
        if bucket.0 != sec {
            *bucket = (sec, 0, 0);
        }
        if success {
            bucket.1 += 1;
        } else {
            bucket.2 += 1;
        }
    }

    /// (successes, failures) in the minute ending at `now`.
    fn totals(&self, now: Instant) -> (u64, u64) {
        let sec = self.second(now);
        self.buckets
            .iter()
            .filter(|(s, _, _)| *s != u64::MAX && *s + 60 > sec && *s <= sec)
            .fold((0, 0), |(ok, fail), (_, s, f)| (ok + s, fail + f))
    }
}

/// Recent values with their time, bounded in count and age.
#[derive(Debug, Default)]
struct Window {
    values: VecDeque<(Instant, f64)>,
}

impl Window {
    fn push(&mut self, now: Instant, value: f64, cap: usize) {
        if self.values.len() >= cap {
            self.values.pop_front();
        }
        self.values.push_back((now, value));
    }

    fn average(&self, now: Instant, ttl: Duration) -> Option<f64> {
        let fresh = self.values.iter().filter(|(at, _)| now.saturating_duration_since(*at) <= ttl);
        let (sum, n) = fresh.fold((0.0, 0usize), |(s, n), (_, v)| (s + v, n + 1));
        (n > 0).then(|| sum / n as f64)
    }
}

/// One deployment's health.
#[derive(Debug)]
pub struct Health {
    minute: RollingMinute,
    /// Failures within `cooldown_time`, for the `allowed_fails` rules.
    recent_failures: VecDeque<(Instant, ErrorClass)>,
    cooldown_until: Option<Instant>,
    /// What caused the current cooldown.
    cooldown_class: Option<ErrorClass>,
    /// Seconds per output token (or seconds, when a call produced no tokens).
    latency: Window,
    ttft: Window,
}

impl Health {
    pub fn new(now: Instant) -> Self {
        Self {
            minute: RollingMinute::new(now),
            recent_failures: VecDeque::new(),
            cooldown_until: None,
            cooldown_class: None,
            latency: Window::default(),
            ttft: Window::default(),
        }
    }

    pub fn record(&mut self, now: Instant, outcome: &Outcome, policy: &HealthPolicy) -> Transition {
        match outcome {
            Outcome::Success { latency, ttft, completion_tokens } => {
                self.minute.add(now, true);
                let secs = latency.as_secs_f64();
                let per_token = if *completion_tokens > 0 { secs / *completion_tokens as f64 } else { secs };
                self.latency.push(now, per_token, policy.latency_window);
                if let Some(t) = ttft {
                    self.ttft.push(now, t.as_secs_f64(), policy.latency_window);
                }
                Transition::None
            }
            Outcome::Failure { class, may_cool_down, rate_limited, non_retryable, timeout, retry_after, .. } => {
                self.minute.add(now, false);
                if *timeout {
                    self.latency.push(now, TIMEOUT_PENALTY_SECS, policy.latency_window);
                }
                if !*may_cool_down || policy.disable_cooldowns {
                    return Transition::None;
                }
                let cool = if policy.allowed_fails.is_some() || !policy.allowed_fails_policy.is_empty() {
                    self.exceeds_allowed_fails(now, *class, policy)
                } else {
                    self.default_rule(now, *rate_limited, *non_retryable, policy.group_size)
                };
                if !cool {
                    return Transition::None;
                }
                let until = now + retry_after.unwrap_or(policy.cooldown_time);
                self.cooldown_class = Some(*class);
                match self.cooldown_until {
                    Some(current) if current > now => {
                        // LiteLLM keeps the first, shorter deadline; a deployment still failing
                        // while cooling down should stay out longer.
                        let until = until.max(current);
                        self.cooldown_until = Some(until);
                        Transition::CooldownExtended { until }
                    }
                    _ => {
                        self.cooldown_until = Some(until);
                        Transition::CooldownEntered { until }
                    }
                }
            }
        }
    }

    /// LiteLLM's rule when no `allowed_fails` is configured.
    fn default_rule(&self, now: Instant, rate_limited: bool, non_retryable: bool, group_size: usize) -> bool {
        let (ok, fail) = self.minute.totals(now);
        let total = ok + fail;
        let failure_rate = if total == 0 { 0.0 } else { fail as f64 / total as f64 };
        let shared_group = group_size > 1;
        (rate_limited && shared_group)
            || (failure_rate >= 1.0 && total >= SINGLE_DEPLOYMENT_MIN_REQUESTS)
            || (failure_rate > FAILURE_THRESHOLD_PERCENT && total >= FAILURE_THRESHOLD_MIN_REQUESTS && shared_group)
            || non_retryable
    }

    /// Cool down when failures within `cooldown_time` exceed what is allowed (per class when
    /// `allowed_fails_policy` names the class).
    fn exceeds_allowed_fails(&mut self, now: Instant, class: ErrorClass, policy: &HealthPolicy) -> bool {
        while let Some((at, _)) = self.recent_failures.front() {
            if now.saturating_duration_since(*at) > policy.cooldown_time {
                self.recent_failures.pop_front();
            } else {
                break;
            }
        }
        self.recent_failures.push_back((now, class));
        if self.recent_failures.len() > 100_000 {
            self.recent_failures.pop_front();
        }
        match policy.allowed_fails_policy.get(class) {
            Some(allowed) => {
                self.recent_failures.iter().filter(|(_, c)| *c == class).count() as u64 > u64::from(allowed)
            }
            None => match policy.allowed_fails {
                Some(allowed) => self.recent_failures.len() as u64 > u64::from(allowed),
                None => false,
            },
        }
    }

    pub fn cooldown_until(&self, now: Instant) -> Option<Instant> {
        self.cooldown_until.filter(|until| *until > now)
    }

    /// True once, for the first check after a cooldown has ended (so "cooldown over" is told
    /// once even when several timers were set while it was being extended).
    pub fn cooldown_ended_at(&mut self, now: Instant) -> bool {
        match self.cooldown_until {
            Some(until) if until <= now => {
                self.cooldown_until = None;
                true
            }
            _ => false,
        }
    }

    pub fn snapshot(&self, now: Instant, policy: &HealthPolicy) -> HealthSnapshot {
        let (successes, failures) = self.minute.totals(now);
        let cooldown_until = self.cooldown_until(now);
        let state = if cooldown_until.is_some() {
            State::Outage
        } else if failures > 0 {
            State::Partial
        } else {
            State::Healthy
        };
        HealthSnapshot {
            cooldown_until,
            cooldown_class: cooldown_until.and(self.cooldown_class),
            latency: self.latency.average(now, policy.latency_ttl),
            ttft: self.ttft.average(now, policy.latency_ttl),
            successes_last_minute: successes,
            failures_last_minute: failures,
            state,
        }
    }
}

/// What the request path reads: published by the actor after every outcome.
#[derive(Debug, Clone)]
pub struct HealthSnapshot {
    pub cooldown_until: Option<Instant>,
    /// The error class that started (or last extended) the cooldown, for the "no deployments
    /// available" answer.
    pub cooldown_class: Option<ErrorClass>,
    /// Average seconds per output token over the latency window.
    pub latency: Option<f64>,
    /// Average time to first token, for streams.
    pub ttft: Option<f64>,
    pub successes_last_minute: u64,
    pub failures_last_minute: u64,
    pub state: State,
}

impl HealthSnapshot {
    pub fn healthy() -> Self {
        Self {
            cooldown_until: None,
            cooldown_class: None,
            latency: None,
            ttft: None,
            successes_last_minute: 0,
            failures_last_minute: 0,
            state: State::Healthy,
        }
    }

    pub fn is_cooling_down(&self, now: Instant) -> bool {
        self.cooldown_until.is_some_and(|until| until > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(group_size: usize) -> HealthPolicy {
        HealthPolicy {
            cooldown_time: Duration::from_secs(5),
            disable_cooldowns: false,
            allowed_fails: None,
            allowed_fails_policy: ClassMap::default(),
            group_size,
            latency_window: 3,
            latency_ttl: Duration::from_secs(3600),
        }
    }

    fn failure(status: u16) -> Outcome {
        let class = match status {
            429 => ErrorClass::RateLimit,
            401 => ErrorClass::Authentication,
            404 => ErrorClass::NotFound,
            _ => ErrorClass::InternalServer,
        };
        Outcome::Failure {
            class,
            status,
            may_cool_down: true,
            rate_limited: status == 429,
            non_retryable: matches!(status, 401 | 404),
            timeout: false,
            retry_after: None,
        }
    }

    fn success() -> Outcome {
        Outcome::Success { latency: Duration::from_millis(100), ttft: None, completion_tokens: 10 }
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_cools_down_a_shared_group_but_not_a_lone_deployment() {
        let now = Instant::now();
        let mut shared = Health::new(now);
        assert_eq!(
            shared.record(now, &failure(429), &policy(2)),
            Transition::CooldownEntered { until: now + Duration::from_secs(5) }
        );
        let mut lone = Health::new(now);
        assert_eq!(lone.record(now, &failure(429), &policy(1)), Transition::None);
    }

    #[tokio::test(start_paused = true)]
    async fn cooldown_ends_after_cooldown_time_or_retry_after() {
        let start = Instant::now();
        let mut h = Health::new(start);
        let p = policy(2);
        let with_retry_after = Outcome::Failure {
            class: ErrorClass::RateLimit,
            status: 429,
            may_cool_down: true,
            rate_limited: true,
            non_retryable: false,
            timeout: false,
            retry_after: Some(Duration::from_secs(2)),
        };
        h.record(start, &with_retry_after, &p);
        assert!(h.snapshot(Instant::now(), &p).is_cooling_down(Instant::now()));
        tokio::time::advance(Duration::from_millis(1999)).await;
        assert_eq!(h.snapshot(Instant::now(), &p).state, State::Outage);
        tokio::time::advance(Duration::from_millis(2)).await;
        let snap = h.snapshot(Instant::now(), &p);
        assert!(!snap.is_cooling_down(Instant::now()));
        assert_eq!(snap.state, State::Partial, "a failure in the last minute");
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(h.snapshot(Instant::now(), &p).state, State::Healthy);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_while_cooling_down_extends_the_deadline() {
        let start = Instant::now();
        let mut h = Health::new(start);
        let p = policy(2);
        h.record(start, &failure(429), &p);
        tokio::time::advance(Duration::from_secs(3)).await;
        let now = Instant::now();
        assert_eq!(
            h.record(now, &failure(429), &p),
            Transition::CooldownExtended { until: now + Duration::from_secs(5) }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn more_than_half_failing_over_five_requests_cools_down_a_shared_group() {
        let now = Instant::now();
        let mut h = Health::new(now);
        let p = policy(2);
        h.record(now, &success(), &p);
        h.record(now, &success(), &p);
        for _ in 0..2 {
            assert_eq!(h.record(now, &failure(500), &p), Transition::None);
        }
        // 5 requests, 3 failures: 60% > 50%.
        assert!(matches!(h.record(now, &failure(500), &p), Transition::CooldownEntered { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_deployment_cools_down_only_when_everything_fails_at_volume() {
        let now = Instant::now();
        let mut h = Health::new(now);
        let p = policy(1);
        for i in 0..999 {
            assert_eq!(h.record(now, &failure(500), &p), Transition::None, "failure {i}");
        }
        assert!(matches!(h.record(now, &failure(500), &p), Transition::CooldownEntered { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn non_retryable_errors_cool_down_at_once() {
        let now = Instant::now();
        let mut h = Health::new(now);
        assert!(matches!(h.record(now, &failure(401), &policy(1)), Transition::CooldownEntered { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn allowed_fails_counts_failures_within_cooldown_time() {
        let start = Instant::now();
        let mut h = Health::new(start);
        let p = HealthPolicy { allowed_fails: Some(2), ..policy(1) };
        assert_eq!(h.record(start, &failure(500), &p), Transition::None);
        assert_eq!(h.record(start, &failure(500), &p), Transition::None);
        tokio::time::advance(Duration::from_secs(6)).await;
        // The first two are older than cooldown_time now.
        assert_eq!(h.record(Instant::now(), &failure(500), &p), Transition::None);
        assert_eq!(h.record(Instant::now(), &failure(500), &p), Transition::None);
        assert!(matches!(h.record(Instant::now(), &failure(500), &p), Transition::CooldownEntered { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn allowed_fails_policy_counts_per_error_class() {
        let now = Instant::now();
        let mut h = Health::new(now);
        let mut afp = ClassMap::default();
        afp.set(ErrorClass::RateLimit, 3);
        let p = HealthPolicy { allowed_fails: Some(0), allowed_fails_policy: afp, ..policy(2) };
        for _ in 0..3 {
            assert_eq!(h.record(now, &failure(429), &p), Transition::None);
        }
        assert!(matches!(h.record(now, &failure(429), &p), Transition::CooldownEntered { .. }));
        // A class the policy does not name falls back to allowed_fails (0).
        let mut h = Health::new(now);
        assert!(matches!(h.record(now, &failure(500), &p), Transition::CooldownEntered { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn disable_cooldowns_and_caller_errors_never_cool_down() {
        let now = Instant::now();
        let mut h = Health::new(now);
        let p = HealthPolicy { disable_cooldowns: true, ..policy(2) };
        assert_eq!(h.record(now, &failure(429), &p), Transition::None);
        let bad_request = Outcome::Failure {
            class: ErrorClass::BadRequest,
            status: 400,
            may_cool_down: false,
            rate_limited: false,
            non_retryable: true,
            timeout: false,
            retry_after: None,
        };
        assert_eq!(h.record(now, &bad_request, &policy(2)), Transition::None);
    }

    #[tokio::test(start_paused = true)]
    async fn latency_is_a_rolling_window_of_seconds_per_token() {
        let now = Instant::now();
        let mut h = Health::new(now);
        let p = policy(1); // window of 3
        for ms in [1000, 2000, 3000, 4000] {
            h.record(
                now,
                &Outcome::Success { latency: Duration::from_millis(ms), ttft: None, completion_tokens: 10 },
                &p,
            );
        }
        // LiteLLM would keep the first values forever; the window holds the last three.
        let avg = h.snapshot(now, &p).latency.unwrap();
        assert!((avg - 0.3).abs() < 1e-9, "{avg}");
        let timeout = Outcome::Failure {
            class: ErrorClass::Timeout,
            status: 408,
            may_cool_down: false,
            rate_limited: false,
            non_retryable: false,
            timeout: true,
            retry_after: None,
        };
        h.record(now, &timeout, &p);
        assert!(h.snapshot(now, &p).latency.unwrap() > 300.0);
    }

    #[tokio::test(start_paused = true)]
    async fn latency_entries_expire_after_the_ttl() {
        let now = Instant::now();
        let mut h = Health::new(now);
        let p = HealthPolicy { latency_ttl: Duration::from_secs(10), ..policy(1) };
        h.record(now, &success(), &p);
        assert!(h.snapshot(now, &p).latency.is_some());
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(h.snapshot(Instant::now(), &p).latency.is_none());
    }
}
