//! Routing strategies as pure functions over snapshots of the candidate deployments.

use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::seq::IndexedRandom;
use rand::Rng;

use crate::config::Strategy;

/// What the strategies know of one available deployment.
#[derive(Debug, Clone, Default)]
pub struct Candidate {
    /// Position in the model group, returned by [`select`].
    pub index: usize,
    pub order: Option<u64>,
    pub weight: Option<f64>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub in_flight: u32,
    pub requests_this_minute: u64,
    pub tokens_this_minute: u64,
    /// Average seconds per output token.
    pub latency: Option<f64>,
    /// Average time to first token.
    pub ttft: Option<f64>,
    /// Input + output USD per token.
    pub price: Option<f64>,
}

/// The request as the strategies see it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Need {
    pub stream: bool,
    pub input_tokens: u64,
    /// Skip deployments at their rpm/tpm for this minute (pre-call checks, usage/latency routing).
    pub enforce_limits: bool,
}

/// Whether a deployment has room this minute for a request of `input_tokens`.
pub fn within_limits(c: &Candidate, input_tokens: u64) -> bool {
    c.tpm.is_none_or(|tpm| c.tokens_this_minute.saturating_add(input_tokens) <= tpm)
        && c.rpm.is_none_or(|rpm| c.requests_this_minute < rpm)
}

/// Picks a deployment: only the lowest `order` present is considered, then the strategy
/// decides. `None` when no candidate fits.
pub fn select(
    strategy: Strategy,
    candidates: &[Candidate],
    need: &Need,
    latency_buffer: f64,
    rng: &mut impl Rng,
) -> Option<usize> {
    let enforce = need.enforce_limits || matches!(strategy, Strategy::UsageBased | Strategy::LatencyBased);
    let fitting: Vec<&Candidate> =
        candidates.iter().filter(|c| !enforce || within_limits(c, need.input_tokens)).collect();
    let best_order = fitting.iter().map(|c| c.order.unwrap_or(u64::MAX)).min()?;
    let pool: Vec<&Candidate> = fitting.into_iter().filter(|c| c.order.unwrap_or(u64::MAX) == best_order).collect();
    let chosen = match strategy {
        Strategy::SimpleShuffle => shuffle(&pool, rng),
        Strategy::LeastBusy => lowest(&pool, |c| c.in_flight as f64, 0.0, rng),
        Strategy::UsageBased => lowest(&pool, |c| c.tokens_this_minute as f64, 0.0, rng),
        Strategy::LatencyBased => lowest(
            &pool,
            // Deployments without data yet count as fastest, so they get measured.
            |c| if need.stream { c.ttft.or(c.latency) } else { c.latency }.unwrap_or(0.0),
            latency_buffer,
            rng,
        ),
        Strategy::CostBased => lowest(&pool, |c| c.price.unwrap_or(f64::MAX), 0.0, rng),
    };
    chosen.map(|c| c.index)
}

/// Weighted random by `weight`, else `rpm`, else `tpm`, else uniform (LiteLLM's simple-shuffle).
fn shuffle<'a>(pool: &[&'a Candidate], rng: &mut impl Rng) -> Option<&'a Candidate> {
    let weights: Option<Vec<f64>> = if pool.iter().any(|c| c.weight.is_some()) {
        Some(pool.iter().map(|c| c.weight.unwrap_or(0.0)).collect())
    } else if pool.iter().any(|c| c.rpm.is_some()) {
        Some(pool.iter().map(|c| c.rpm.unwrap_or(0) as f64).collect())
    } else if pool.iter().any(|c| c.tpm.is_some()) {
        Some(pool.iter().map(|c| c.tpm.unwrap_or(0) as f64).collect())
    } else {
        None
    };
    match weights.and_then(|w| WeightedIndex::new(&w).ok()) {
        Some(dist) => pool.get(dist.sample(rng)).copied(),
        // No weights, or all zero: uniform.
        None => pool.choose(rng).copied(),
    }
}

/// A random pick among the candidates whose `key` is within `buffer` (a fraction) of the lowest.
fn lowest<'a>(
    pool: &[&'a Candidate],
    key: impl Fn(&Candidate) -> f64,
    buffer: f64,
    rng: &mut impl Rng,
) -> Option<&'a Candidate> {
    let best = pool.iter().map(|c| key(c)).fold(f64::INFINITY, f64::min);
    let limit = if best.is_finite() { best * (1.0 + buffer) } else { best };
    let near: Vec<&Candidate> = pool.iter().copied().filter(|c| key(c) <= limit).collect();
    near.choose(rng).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn c(index: usize) -> Candidate {
        Candidate { index, ..Default::default() }
    }

    fn pick(strategy: Strategy, cands: &[Candidate], need: Need) -> Option<usize> {
        select(strategy, cands, &need, 0.0, &mut StdRng::seed_from_u64(7))
    }

    fn counts(strategy: Strategy, cands: &[Candidate], n: usize) -> Vec<usize> {
        let mut rng = StdRng::seed_from_u64(42);
        let mut out = vec![0; cands.len()];
        for _ in 0..n {
            out[select(strategy, cands, &Need::default(), 0.0, &mut rng).unwrap()] += 1;
        }
        out
    }

    #[test]
    fn simple_shuffle_follows_weight_then_rpm() {
        let by_weight = counts(
            Strategy::SimpleShuffle,
            &[Candidate { weight: Some(9.0), ..c(0) }, Candidate { weight: Some(1.0), ..c(1) }],
            10_000,
        );
        assert!(by_weight[0] > 8_500 && by_weight[0] < 9_500, "{by_weight:?}");
        let by_rpm = counts(
            Strategy::SimpleShuffle,
            &[Candidate { rpm: Some(100), ..c(0) }, Candidate { rpm: Some(300), ..c(1) }],
            10_000,
        );
        assert!(by_rpm[1] > 7_000 && by_rpm[1] < 8_000, "{by_rpm:?}");
        let uniform = counts(Strategy::SimpleShuffle, &[c(0), c(1)], 10_000);
        assert!(uniform[0] > 4_500 && uniform[0] < 5_500, "{uniform:?}");
    }

    #[test]
    fn least_busy_picks_fewest_in_flight() {
        let cands = [
            Candidate { in_flight: 3, ..c(0) },
            Candidate { in_flight: 1, ..c(1) },
            Candidate { in_flight: 2, ..c(2) },
        ];
        assert_eq!(pick(Strategy::LeastBusy, &cands, Need::default()), Some(1));
    }

    #[test]
    fn usage_based_picks_lowest_tokens_and_skips_full_deployments() {
        let cands = [
            Candidate { tokens_this_minute: 50, tpm: Some(1000), ..c(0) },
            Candidate { tokens_this_minute: 10, tpm: Some(100), ..c(1) },
            Candidate { tokens_this_minute: 900, tpm: Some(10_000), ..c(2) },
        ];
        assert_eq!(pick(Strategy::UsageBased, &cands, Need::default()), Some(1));
        // 10 + 95 > 100: deployment 1 cannot take this request.
        assert_eq!(pick(Strategy::UsageBased, &cands, Need { input_tokens: 95, ..Need::default() }), Some(0));
        let full = [Candidate { requests_this_minute: 5, rpm: Some(5), ..c(0) }];
        assert_eq!(pick(Strategy::UsageBased, &full, Need::default()), None);
    }

    #[test]
    fn latency_based_picks_fastest_per_token_and_ttft_for_streams() {
        let cands = [
            Candidate { latency: Some(0.05), ttft: Some(0.9), ..c(0) },
            Candidate { latency: Some(0.02), ttft: Some(1.5), ..c(1) },
        ];
        assert_eq!(pick(Strategy::LatencyBased, &cands, Need::default()), Some(1));
        assert_eq!(pick(Strategy::LatencyBased, &cands, Need { stream: true, ..Need::default() }), Some(0));
    }

    #[test]
    fn latency_buffer_spreads_load_over_near_best_deployments() {
        let cands = [
            Candidate { latency: Some(1.0), ..c(0) },
            Candidate { latency: Some(1.1), ..c(1) },
            Candidate { latency: Some(5.0), ..c(2) },
        ];
        let mut rng = StdRng::seed_from_u64(1);
        let mut seen = [0; 3];
        for _ in 0..1000 {
            seen[select(Strategy::LatencyBased, &cands, &Need::default(), 0.2, &mut rng).unwrap()] += 1;
        }
        assert!(seen[0] > 0 && seen[1] > 0 && seen[2] == 0, "{seen:?}");
    }

    #[test]
    fn cost_based_picks_cheapest_known_price() {
        let cands = [
            Candidate { price: Some(3e-6), ..c(0) },
            Candidate { price: None, ..c(1) },
            Candidate { price: Some(1e-6), ..c(2) },
        ];
        assert_eq!(pick(Strategy::CostBased, &cands, Need::default()), Some(2));
    }

    #[test]
    fn only_the_lowest_order_is_considered() {
        let cands = [
            Candidate { order: Some(2), in_flight: 0, ..c(0) },
            Candidate { order: Some(1), in_flight: 9, ..c(1) },
            c(2),
        ];
        assert_eq!(pick(Strategy::LeastBusy, &cands, Need::default()), Some(1));
        // When the order-1 deployment is over its limit, order 2 takes over.
        let limited = [
            Candidate { order: Some(1), rpm: Some(1), requests_this_minute: 1, ..c(0) },
            Candidate { order: Some(2), ..c(1) },
        ];
        assert_eq!(pick(Strategy::SimpleShuffle, &limited, Need { enforce_limits: true, ..Need::default() }), Some(1));
    }
}
