//! Rate limits per key, user, team, team member, end user and key-and-model: requests and
//! tokens per minute and parallel requests, with LiteLLM's v3 semantics and messages.
//!
//! Windows are fixed UTC minutes, so every instance agrees on them: a call counts one request
//! at admission (refused when the count would pass `rpm_limit`), its output tokens when it
//! ends (later calls are refused once `tpm_limit` is reached), and one parallel request while
//! it runs. Other instances' calls are added from their events (`crate::budget::follow`), so
//! the limits hold across instances after the log's propagation delay.
//!
//! Counters are plain counts, not a GCRA bucket (`governor`): LiteLLM's limits are fixed
//! windows whose reset time its messages and headers report, and other instances' admissions
//! must be added to the same count after the fact, which a GCRA cell cannot take.

use std::sync::Arc;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use dashmap::DashMap;

use crate::auth::Table;
use crate::budget::{Identity, Parties};
use crate::error::GatewayError;

/// What a limit is on (LiteLLM's descriptors).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    ApiKey(String),
    ModelPerKey(String, String),
    User(String),
    Team(String),
    /// (team, user).
    TeamMember(String, String),
    EndUser(String),
}

impl Scope {
    fn descriptor(&self) -> &'static str {
        match self {
            Self::ApiKey(_) => "api_key",
            Self::ModelPerKey(..) => "model_per_key",
            Self::User(_) => "user",
            Self::Team(_) => "team",
            Self::TeamMember(..) => "team_member",
            Self::EndUser(_) => "end_user",
        }
    }

    /// `x-ratelimit-<descriptor>-{remaining,limit}-{requests,tokens}`, without formatting them
    /// per answer.
    fn header_names(&self) -> [&'static str; 4] {
        macro_rules! names {
            ($d:literal) => {
                [
                    concat!("x-ratelimit-", $d, "-remaining-requests"),
                    concat!("x-ratelimit-", $d, "-limit-requests"),
                    concat!("x-ratelimit-", $d, "-remaining-tokens"),
                    concat!("x-ratelimit-", $d, "-limit-tokens"),
                ]
            };
        }
        match self {
            Self::ApiKey(_) => names!("api_key"),
            Self::ModelPerKey(..) => names!("model_per_key"),
            Self::User(_) => names!("user"),
            Self::Team(_) => names!("team"),
            Self::TeamMember(..) => names!("team_member"),
            Self::EndUser(_) => names!("end_user"),
        }
    }

    fn value(&self) -> String {
        match self {
            Self::ApiKey(v) | Self::User(v) | Self::Team(v) | Self::EndUser(v) => v.clone(),
            Self::ModelPerKey(key, model) => format!("{key}:{model}"),
            Self::TeamMember(team, user) => format!("{team}:{user}"),
        }
    }
}

/// The limits on one scope.
#[derive(Debug, Clone, PartialEq)]
pub struct Limit {
    pub scope: Scope,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub parallel: Option<u64>,
}

/// The limits that apply to a call, from the key table.
pub fn limits_of(table: &Table, who: &Identity) -> Vec<Limit> {
    limits_of_parties(&Parties::lookup(table, who))
}

/// The limits that apply to a call, from its parties.
pub fn limits_of_parties(p: &Parties) -> Vec<Limit> {
    let mut out = Vec::new();
    let mut push = |scope: Scope, rpm: Option<u64>, tpm: Option<u64>, parallel: Option<u64>| {
        if rpm.is_some() || tpm.is_some() || parallel.is_some() {
            out.push(Limit { scope, rpm, tpm, parallel });
        }
    };
    if let Some(key) = &p.key {
        let l = &key.limits;
        push(Scope::ApiKey(key.token.clone()), l.rpm_limit, l.tpm_limit, l.max_parallel_requests);
        if let Some(model) = p.model_group {
            let (rpm, tpm) = (key.model_rpm_limit.get(model).copied(), key.model_tpm_limit.get(model).copied());
            if rpm.is_some() || tpm.is_some() {
                push(Scope::ModelPerKey(key.token.clone(), model.to_string()), rpm, tpm, None);
            }
        }
    }
    if let Some(user) = &p.user {
        let l = &user.limits;
        push(Scope::User(user.user_id.clone()), l.rpm_limit, l.tpm_limit, l.max_parallel_requests);
    }
    if let Some(team) = &p.team {
        let l = &team.limits;
        push(Scope::Team(team.team_id.clone()), l.rpm_limit, l.tpm_limit, l.max_parallel_requests);
        if let Some(user) = p.user_id {
            let member = team.member(user);
            let rpm = member.and_then(|m| m.rpm_limit).or(team.team_member_rpm_limit);
            let tpm = member.and_then(|m| m.tpm_limit).or(team.team_member_tpm_limit);
            if rpm.is_some() || tpm.is_some() {
                push(Scope::TeamMember(team.team_id.clone(), user.to_string()), rpm, tpm, None);
            }
        }
    }
    if let Some(end_user) = &p.end_user {
        let l = &end_user.limits;
        push(Scope::EndUser(end_user.user_id.clone()), l.rpm_limit, l.tpm_limit, l.max_parallel_requests);
    }
    out
}

/// A scope's counter, found without cloning the scope when it exists (every admission).
fn counter<'a>(
    counters: &'a DashMap<Scope, Counter, foldhash::fast::RandomState>,
    scope: &Scope,
) -> dashmap::mapref::one::RefMut<'a, Scope, Counter> {
    match counters.get_mut(scope) {
        Some(c) => c,
        None => counters.entry(scope.clone()).or_default(),
    }
}

#[derive(Debug, Default)]
struct Counter {
    /// The minute (seconds since the epoch, a multiple of 60) `requests` and `tokens` are of.
    minute: i64,
    requests: u64,
    tokens: u64,
    parallel: u64,
}

impl Counter {
    fn roll(&mut self, minute: i64) {
        if self.minute < minute {
            self.minute = minute;
            self.requests = 0;
            self.tokens = 0;
        }
    }
}

/// Every scope's counters.
#[derive(Default)]
pub struct Limiter {
    counters: DashMap<Scope, Counter, foldhash::fast::RandomState>,
}

fn minute_of(now_secs: i64) -> i64 {
    now_secs - now_secs.rem_euclid(60)
}

impl Limiter {
    /// Admits a call if every limit has room, counting it in each; else LiteLLM's 429 for
    /// the first limit without room. The returned guard holds the parallel slots.
    pub fn admit(self: &Arc<Self>, limits: Vec<Limit>, now_secs: i64) -> Result<Admitted, GatewayError> {
        let minute = minute_of(now_secs);
        for limit in &limits {
            let mut c = counter(&self.counters, &limit.scope);
            c.roll(minute);
            let refused = [
                (limit.rpm, c.requests.saturating_add(1), "requests"),
                (limit.tpm, c.tokens.saturating_add(1), "tokens"),
                (limit.parallel, c.parallel.saturating_add(1), "max_parallel_requests"),
            ]
            .into_iter()
            .find(|(max, next, _)| max.is_some_and(|m| *next > m));
            if let Some((Some(max), _, kind)) = refused {
                drop(c);
                return Err(refuse(&limit.scope, kind, max, minute, now_secs));
            }
        }
        for limit in &limits {
            let mut c = counter(&self.counters, &limit.scope);
            c.roll(minute);
            c.requests += 1;
            if limit.parallel.is_some() {
                c.parallel += 1;
            }
        }
        Ok(Admitted { limiter: self.clone(), limits })
    }

    /// Another instance admitted a call at `at_secs` (its request event).
    pub fn count_request(&self, limits: &[Limit], at_secs: i64) {
        let minute = minute_of(at_secs);
        for limit in limits {
            let mut c = counter(&self.counters, &limit.scope);
            c.roll(minute);
            if c.minute == minute {
                c.requests += 1;
            }
        }
    }

    /// A call's output tokens, counted in the minute it ended.
    pub fn count_tokens(&self, limits: &[Limit], tokens: u64, at_secs: i64) {
        let minute = minute_of(at_secs);
        for limit in limits.iter().filter(|l| l.tpm.is_some()) {
            let mut c = counter(&self.counters, &limit.scope);
            c.roll(minute);
            if c.minute == minute {
                c.tokens = c.tokens.saturating_add(tokens);
            }
        }
    }

    /// LiteLLM's success headers: remaining and limit per descriptor.
    pub fn headers(&self, limits: &[Limit], now_secs: i64, out: &mut HeaderMap) {
        let minute = minute_of(now_secs);
        for limit in limits {
            let (requests, tokens) = match self.counters.get(&limit.scope) {
                Some(c) if c.minute == minute => (c.requests, c.tokens),
                _ => (0, 0),
            };
            let [rem_requests, lim_requests, rem_tokens, lim_tokens] = limit.scope.header_names();
            for (names, max, used) in
                [((rem_requests, lim_requests), limit.rpm, requests), ((rem_tokens, lim_tokens), limit.tpm, tokens)]
            {
                let Some(max) = max else { continue };
                out.insert(HeaderName::from_static(names.0), HeaderValue::from(max.saturating_sub(used)));
                out.insert(HeaderName::from_static(names.1), HeaderValue::from(max));
            }
        }
    }
}

fn refuse(scope: &Scope, kind: &'static str, max: u64, minute: i64, now_secs: i64) -> GatewayError {
    let reset = minute + 60;
    let reset_at = jiff::Timestamp::from_second(reset)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default();
    GatewayError::RateLimited {
        message: format!(
            "Rate limit exceeded for {}: {}. Limit type: {kind}. Current limit: {max}, Remaining: 0. Limit resets at: {reset_at}",
            scope.descriptor(),
            scope.value()
        ),
        retry_after: u64::try_from(reset - now_secs).unwrap_or(1).max(1),
        limit_type: kind,
        reset_at,
    }
}

/// An admitted call's hold on its limits: its parallel slots, given back on drop.
pub struct Admitted {
    limiter: Arc<Limiter>,
    pub limits: Vec<Limit>,
}

impl Admitted {
    pub fn count_tokens(&self, tokens: u64, at_secs: i64) {
        self.limiter.count_tokens(&self.limits, tokens, at_secs);
    }

    pub fn headers(&self, now_secs: i64, out: &mut HeaderMap) {
        self.limiter.headers(&self.limits, now_secs, out);
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        for limit in self.limits.iter().filter(|l| l.parallel.is_some()) {
            if let Some(mut c) = self.limiter.counters.get_mut(&limit.scope) {
                c.parallel = c.parallel.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_limit(rpm: Option<u64>, tpm: Option<u64>, parallel: Option<u64>) -> Vec<Limit> {
        vec![Limit { scope: Scope::ApiKey("h".into()), rpm, tpm, parallel }]
    }

    fn refused(r: Result<Admitted, GatewayError>) -> (String, u64, &'static str) {
        match r {
            Err(GatewayError::RateLimited { message, retry_after, limit_type, .. }) => {
                (message, retry_after, limit_type)
            }
            Err(other) => panic!("expected a rate limit, got {other:?}"),
            Ok(_) => panic!("expected a rate limit, got an admission"),
        }
    }

    #[test]
    fn requests_per_minute_in_fixed_utc_minutes() {
        let limiter = Arc::new(Limiter::default());
        let t = 1_764_327_000; // a whole minute
        let _a = limiter.admit(key_limit(Some(2), None, None), t).unwrap();
        let _b = limiter.admit(key_limit(Some(2), None, None), t + 10).unwrap();
        let (message, retry_after, kind) = refused(limiter.admit(key_limit(Some(2), None, None), t + 20));
        assert_eq!(kind, "requests");
        assert_eq!(retry_after, 40);
        assert_eq!(
            message,
            "Rate limit exceeded for api_key: h. Limit type: requests. Current limit: 2, Remaining: 0. Limit resets at: 2025-11-28 10:51:00 UTC"
        );
        assert!(limiter.admit(key_limit(Some(2), None, None), t + 60).is_ok());
    }

    #[test]
    fn tokens_count_after_the_call_and_other_instances_count_too() {
        let limiter = Arc::new(Limiter::default());
        let t = 1_764_327_000;
        let a = limiter.admit(key_limit(None, Some(100), None), t).unwrap();
        a.count_tokens(60, t + 1);
        limiter.count_tokens(&a.limits, 40, t + 2);
        assert_eq!(refused(limiter.admit(key_limit(None, Some(100), None), t + 3)).2, "tokens");
        limiter.count_request(&key_limit(Some(1), None, None), t + 4);
        assert_eq!(refused(limiter.admit(key_limit(Some(1), None, None), t + 5)).2, "requests");
    }

    #[test]
    fn parallel_slots_are_given_back_on_drop() {
        let limiter = Arc::new(Limiter::default());
        let t = 1_764_327_000;
        let a = limiter.admit(key_limit(None, None, Some(1)), t).unwrap();
        assert_eq!(refused(limiter.admit(key_limit(None, None, Some(1)), t)).2, "max_parallel_requests");
        drop(a);
        assert!(limiter.admit(key_limit(None, None, Some(1)), t).is_ok());
    }

    #[test]
    fn success_headers_name_the_descriptor() {
        let limiter = Arc::new(Limiter::default());
        let t = 1_764_327_000;
        let a = limiter.admit(key_limit(Some(5), Some(100), None), t).unwrap();
        let mut headers = HeaderMap::new();
        a.headers(t, &mut headers);
        assert_eq!(headers.get("x-ratelimit-api_key-remaining-requests").unwrap(), "4");
        assert_eq!(headers.get("x-ratelimit-api_key-limit-requests").unwrap(), "5");
        assert_eq!(headers.get("x-ratelimit-api_key-remaining-tokens").unwrap(), "100");
    }
}
