//! Admitting a call once its model is known: the caller's model access and expiry, the end
//! user, budgets and rate limits, in LiteLLM's order; then the hold the call keeps on its
//! budgets (a reservation) and limits (its parallel slots) until it ends.

use std::sync::Arc;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use jiff::Timestamp;

use super::Gateway;
use crate::auth::entity::KeyRecord;
use crate::auth::Caller;
use crate::budget::ledger::{usd, Account, Policy};
use crate::budget::window::Window;
use crate::budget::{worst_case, Charges, Parties, Reservation};
use crate::error::GatewayError;
use crate::events::types::CallerFields;
use crate::limits::{limits_of_parties, Admitted};
use crate::openai::request::RequestBody;

/// An admitted call's hold on its budgets and limits, released when dropped.
#[derive(Default)]
pub struct Admission {
    reservation: Option<Reservation>,
    limits: Option<Admitted>,
    /// The caller's key, for the spend headers.
    key: Option<Arc<KeyRecord>>,
}

/// What admission needs to know of the call.
pub struct Call<'a> {
    pub model: &'a str,
    pub group: Option<&'a str>,
    pub body: &'a RequestBody,
    pub input_tokens: u64,
}

/// The end user: the body's `user`.
pub fn end_user(body: &RequestBody) -> Option<String> {
    body.get_as::<String>("user").and_then(Result::ok).filter(|u| !u.is_empty())
}

/// The events' view of the caller.
pub fn caller_fields(caller: &Caller, end_user: Option<String>) -> CallerFields {
    CallerFields {
        api_key_hash: caller.key_hash.as_deref().map(str::to_string),
        key_alias: caller.key_alias().map(str::to_string),
        user: caller.user_id().map(str::to_string),
        team_id: caller.team_id().map(str::to_string),
        end_user,
    }
}

/// Checks 5 onwards; returns the hold and the USD reserved.
pub fn admit(
    gw: &Gateway,
    caller: &Caller,
    call: &Call,
    end_user: Option<&str>,
) -> Result<(Admission, f64), GatewayError> {
    let now = Timestamp::now();
    caller.check_model(call.model, call.group)?;
    caller.check_expiry(now)?;
    let table = &gw.auth.table;
    let end_user_record = end_user.and_then(|e| table.end_user(e));
    if let Some(e) = &end_user_record {
        if e.blocked {
            return Err(GatewayError::Denied {
                status: 401,
                kind: "auth_error",
                message: format!(
                    "Authentication Error, End User={} is blocked. Update via `/customer/unblock` if you're an admin.",
                    e.user_id
                ),
            });
        }
    }
    let Some(key) = &caller.key else {
        // The master key and an open gateway have no budgets or limits.
        return Ok((Admission::default(), 0.0));
    };
    // The caller already holds its key, team and user: only the end user is looked up.
    let parties = Parties {
        key: Some(key.clone()),
        team: caller.team.clone(),
        user: caller.user.clone(),
        end_user: end_user_record,
        user_id: key.user_id.as_deref(),
        model_group: call.group,
    };
    let charges = Charges::of_parties(&parties);
    let (price, max_output) = price_of(gw, call.group);
    // LiteLLM skips budget checks for models whose configured cost is zero.
    let free = price.is_some_and(|p| p.input == 0.0 && p.output == 0.0);
    if !free {
        gw.budgets.check(&charges, now)?;
    }
    let limits = gw.limiter.admit(limits_of_parties(&parties), now.as_second())?;
    let max_tokens = ["max_completion_tokens", "max_tokens"].iter().find_map(|k| body_u64(call.body, k)).or(max_output);
    let amount = worst_case(call.input_tokens, max_tokens, price.as_ref());
    let reservation = gw.budgets.reserve(charges, amount);
    Ok((Admission { reservation: Some(reservation), limits: Some(limits), key: Some(key.clone()) }, usd(amount)))
}

fn body_u64(body: &RequestBody, key: &str) -> Option<u64> {
    body.get_as::<u64>(key).and_then(Result::ok)
}

/// The price and maximum output of the group's costliest deployment.
fn price_of(gw: &Gateway, group: Option<&str>) -> (Option<crate::cost::Price>, Option<u64>) {
    let table = gw.router.table();
    let Some(deployments) = group.and_then(|g| table.group(g)) else { return (None, None) };
    let price = deployments
        .iter()
        .filter_map(|d| d.price().copied())
        .max_by(|a, b| a.output.total_cmp(&b.output).then(a.input.total_cmp(&b.input)));
    let max_output = deployments.iter().filter_map(|d| d.max_output_tokens()).max();
    (price, max_output)
}

impl Admission {
    /// The call ended with this cost (USD) and these output tokens.
    pub fn settle(&mut self, cost: f64, output_tokens: u64) {
        let now = Timestamp::now();
        if let Some(r) = self.reservation.take() {
            r.settle(cost, now);
        }
        if let Some(l) = &self.limits {
            l.count_tokens(output_tokens, now.as_second());
        }
    }

    /// `x-litellm-key-spend`, `x-litellm-key-max-budget` and the `x-ratelimit-*` headers.
    pub fn headers(&self, gw: &Gateway, out: &mut HeaderMap) {
        let Some(key) = &self.key else { return };
        let now = Timestamp::now();
        // The key's account is the reservation's first charge (built at admission).
        let charge = self.reservation.as_ref().and_then(|r| r.charges.0.first());
        let spent = match charge {
            Some(c) => usd(gw.budgets.ledger.spent(&c.account, &c.policy, now)),
            None => {
                let window = key.limits.budget_duration.as_deref().and_then(|d| Window::parse(d).ok());
                let policy = Policy { window, start: key.spend_start };
                usd(gw.budgets.ledger.spent(&Account::Key(key.token.clone()), &policy, now))
            }
        };
        let mut set = |name: &'static str, value: String| {
            if let Ok(v) = HeaderValue::from_str(&value) {
                out.insert(HeaderName::from_static(name), v);
            }
        };
        set("x-litellm-key-spend", spent.to_string());
        if let Some(max) = key.limits.max_budget {
            set("x-litellm-key-max-budget", max.to_string());
        }
        if let Some(l) = &self.limits {
            l.headers(now.as_second(), out);
        }
    }
}
