//! Retry and fallback decisions as pure functions of the router settings and the failure.

use std::time::Duration;

use rand::Rng;

use crate::config::RouterSettings;
use crate::failure::ErrorClass;

/// LiteLLM's backoff when the same deployments must be retried: 0.5 s doubling to 8 s.
const INITIAL_RETRY_DELAY: f64 = 0.5;
const MAX_RETRY_DELAY: f64 = 8.0;
/// Never wait longer than this on an upstream's `Retry-After` inside one request.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// How many retries a failure of `class` gets within one model group.
pub fn retries_for(settings: &RouterSettings, class: ErrorClass, retryable: bool) -> u32 {
    match settings.retry_policy.get(class) {
        Some(n) => n,
        None if retryable => settings.num_retries,
        None => 0,
    }
}

/// The model groups to fall back to after `group` failed with `class`, at most `max_fallbacks`.
/// Context-window and content-policy failures use their own lists; a plain bad request does not
/// fall back (the same request would fail anywhere); everything else uses `fallbacks`, then
/// `default_fallbacks`.
pub fn fallbacks(settings: &RouterSettings, group: &str, class: ErrorClass) -> Vec<String> {
    let lookup =
        |map: &std::collections::HashMap<String, Vec<String>>| map.get(group).or_else(|| map.get("*")).cloned();
    let list = match class {
        ErrorClass::ContextWindowExceeded => lookup(&settings.context_window_fallbacks),
        ErrorClass::ContentPolicyViolation => lookup(&settings.content_policy_fallbacks),
        ErrorClass::BadRequest => None,
        _ => lookup(&settings.fallbacks)
            .or_else(|| (!settings.default_fallbacks.is_empty()).then(|| settings.default_fallbacks.clone())),
    };
    let mut list = list.unwrap_or_default();
    list.retain(|g| g != group);
    list.truncate(settings.max_fallbacks);
    list
}

/// How long to wait before retry number `retry` (1-based). No wait when another deployment can
/// take the retry; otherwise the upstream's `Retry-After`, else exponential backoff with jitter,
/// and never less than `retry_after`.
pub fn backoff(
    settings: &RouterSettings,
    retry: u32,
    upstream_retry_after: Option<Duration>,
    other_deployment_available: bool,
    rng: &mut impl Rng,
) -> Duration {
    if other_deployment_available {
        return settings.retry_after;
    }
    let wait = match upstream_retry_after {
        Some(d) => d.min(MAX_RETRY_AFTER),
        None => {
            let base = (INITIAL_RETRY_DELAY * 2f64.powi(retry.saturating_sub(1) as i32)).min(MAX_RETRY_DELAY);
            Duration::from_secs_f64(base * (1.0 - 0.25 * rng.random::<f64>()))
        }
    };
    wait.max(settings.retry_after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::ClassMap;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn settings() -> RouterSettings {
        let mut s = RouterSettings { num_retries: 2, ..RouterSettings::default() };
        s.fallbacks.insert("gpt".into(), vec!["claude".into(), "llama".into(), "mistral".into()]);
        s.context_window_fallbacks.insert("gpt".into(), vec!["gpt-long".into()]);
        s.content_policy_fallbacks.insert("*".into(), vec!["safe".into()]);
        s.default_fallbacks = vec!["default".into()];
        s
    }

    #[test]
    fn retry_policy_wins_over_num_retries() {
        let mut s = settings();
        let mut policy = ClassMap::default();
        policy.set(ErrorClass::RateLimit, 5);
        policy.set(ErrorClass::Authentication, 0);
        s.retry_policy = policy;
        assert_eq!(retries_for(&s, ErrorClass::RateLimit, true), 5);
        assert_eq!(retries_for(&s, ErrorClass::InternalServer, true), 2);
        assert_eq!(retries_for(&s, ErrorClass::Authentication, false), 0);
        assert_eq!(retries_for(&s, ErrorClass::BadRequest, false), 0);
    }

    #[test]
    fn each_kind_of_failure_uses_its_own_fallback_list() {
        let s = settings();
        assert_eq!(fallbacks(&s, "gpt", ErrorClass::InternalServer), vec!["claude", "llama", "mistral"]);
        assert_eq!(fallbacks(&s, "gpt", ErrorClass::ContextWindowExceeded), vec!["gpt-long"]);
        assert_eq!(fallbacks(&s, "gpt", ErrorClass::ContentPolicyViolation), vec!["safe"]);
        assert_eq!(fallbacks(&s, "other", ErrorClass::RateLimit), vec!["default"]);
        assert!(fallbacks(&s, "gpt", ErrorClass::BadRequest).is_empty());
        let capped = RouterSettings { max_fallbacks: 1, ..s };
        assert_eq!(fallbacks(&capped, "gpt", ErrorClass::Timeout), vec!["claude"]);
    }

    #[test]
    fn backoff_is_immediate_with_another_deployment_and_honours_retry_after_otherwise() {
        let s = settings();
        let mut rng = StdRng::seed_from_u64(3);
        assert_eq!(backoff(&s, 1, Some(Duration::from_secs(9)), true, &mut rng), Duration::ZERO);
        assert_eq!(backoff(&s, 1, Some(Duration::from_secs(2)), false, &mut rng), Duration::from_secs(2));
        let first = backoff(&s, 1, None, false, &mut rng);
        assert!(first <= Duration::from_millis(500) && first >= Duration::from_millis(375), "{first:?}");
        let late = backoff(&s, 10, None, false, &mut rng);
        assert!(late <= Duration::from_secs(8), "{late:?}");
        let floor = RouterSettings { retry_after: Duration::from_secs(3), ..settings() };
        assert_eq!(backoff(&floor, 1, Some(Duration::from_secs(1)), false, &mut rng), Duration::from_secs(3));
    }
}
