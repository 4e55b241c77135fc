//! The router: model groups, aliases and the routing table, owned by the [`Router`] actor and
//! published to the request path through an `ArcSwap`, so requests never queue on one mailbox.
//!
//! Each request runs [`RouterHandle::dispatch`] in its own future: it reads the published table
//! and the deployments' health snapshots, picks with a pure [`strategy`], and plans retries and
//! fallbacks with [`plan`]. Outcomes go back to the deployment actors without waiting.

mod attempt;
mod dispatch;
mod health_check;
pub mod plan;
pub mod strategy;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, Message, WrapFuture};
use arc_swap::ArcSwap;

use crate::config::{Config, RouterSettings};
use crate::cost::PriceMap;
use crate::deployment::{Deployment, DeploymentHandle, HealthPolicy};
use crate::events::{DeploymentEvent, Event, EventSink};
use crate::metrics::Metrics;
pub use attempt::Attempt;
pub use dispatch::{invalid_model, AttemptError, CallRequest, Dispatched, Failed, Reply};
pub use health_check::HealthReport;

/// Model groups and their deployments, as the request path reads them.
pub struct RoutingTable {
    /// Group name → deployments, in config order.
    groups: HashMap<String, Vec<DeploymentHandle>>,
    /// Group names in config order (for `/models`).
    group_order: Vec<String>,
    /// alias → (group, hidden)
    aliases: HashMap<String, (String, bool)>,
    /// Groups whose name is a pattern (`*`, `openai/*`), most specific (longest) first.
    wildcards: Vec<String>,
}

impl RoutingTable {
    pub fn group(&self, name: &str) -> Option<&[DeploymentHandle]> {
        self.groups.get(name).map(Vec::as_slice)
    }

    /// The group a client's `model` names: a group, an alias of one, or else the most specific
    /// wildcard group whose pattern matches it.
    pub fn resolve<'a>(&'a self, model: &'a str) -> Option<&'a str> {
        if self.groups.contains_key(model) {
            return Some(model);
        }
        if let Some((group, _)) = self.aliases.get(model) {
            return Some(group);
        }
        self.wildcards.iter().find(|p| crate::config::wildcard_matches(p, model)).map(String::as_str)
    }

    pub fn group_names(&self) -> &[String] {
        &self.group_order
    }

    /// Aliases shown in `/models`.
    pub fn visible_aliases(&self) -> impl Iterator<Item = &str> {
        self.aliases.iter().filter(|(_, (_, hidden))| !hidden).map(|(alias, _)| alias.as_str())
    }

    pub fn deployments(&self) -> impl Iterator<Item = &DeploymentHandle> {
        self.group_order.iter().filter_map(|g| self.groups.get(g)).flatten()
    }
}

/// The actor owning the routing table (it builds it, starts the deployment actors, runs the
/// background health checks, and stops the deployments on shutdown).
pub struct Router {
    table: Arc<ArcSwap<RoutingTable>>,
    /// Set when `background_health_checks` is on: how often to check.
    check_interval: Option<Duration>,
    /// The handle the checks run through (set right after start).
    handle: Option<RouterHandle>,
    checking: bool,
    /// Health check failures and recoveries are published to `<prefix>.deployments`.
    events: EventSink,
    /// Deployments whose last background check failed.
    failing: HashMap<String, bool>,
}

impl Actor for Router {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(64);
        if let Some(interval) = self.check_interval {
            ctx.run_interval(interval, |act, ctx| act.run_health_checks(ctx));
        }
    }
}

impl Router {
    fn run_health_checks(&mut self, ctx: &mut Context<Self>) {
        let Some(handle) = self.handle.clone() else {
            return;
        };
        if self.checking {
            return; // the previous round is still running
        }
        self.checking = true;
        let round = async move {
            let report = handle.check_all().await;
            handle.last_health.store(Some(Arc::new(report.clone())));
            report
        };
        ctx.spawn(round.into_actor(self).map(|report, act, _| {
            act.checking = false;
            act.publish_health_changes(&report);
        }));
    }

    /// Tells the event log which deployments started failing their checks, or recovered.
    fn publish_health_changes(&mut self, report: &HealthReport) {
        for (d, error) in &report.results {
            let was_failing = self.failing.insert(d.id().to_string(), error.is_some()).unwrap_or(false);
            let change = match (was_failing, error) {
                (false, Some(e)) => {
                    tracing::warn!(deployment = %d.id(), error = %e, "health check failed");
                    "health_check_failed"
                }
                (true, None) => {
                    tracing::info!(deployment = %d.id(), "health check recovered");
                    "health_check_recovered"
                }
                _ => continue,
            };
            let event = DeploymentEvent::new(d.config(), self.events.gateway_id(), change, error.clone(), None);
            self.events.publish(Event::Deployment(Box::new(event)));
        }
    }
}

/// The handle is only known once the actor has an address.
#[derive(Message)]
#[rtype(result = "()")]
struct Attach(RouterHandle);

impl Handler<Attach> for Router {
    type Result = ();

    fn handle(&mut self, msg: Attach, ctx: &mut Self::Context) {
        self.handle = Some(msg.0);
        if self.check_interval.is_some() {
            self.run_health_checks(ctx);
        }
    }
}

/// Stop every deployment actor; answered once they have all stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Handler<Shutdown> for Router {
    type Result = actix::ResponseFuture<()>;

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) -> Self::Result {
        let stops: Vec<_> = self.table.load().deployments().map(DeploymentHandle::stop).collect();
        ctx.stop();
        Box::pin(async move {
            futures_util::future::join_all(stops).await;
        })
    }
}

/// What handlers hold: the published table plus what dispatching needs.
#[derive(Clone)]
pub struct RouterHandle {
    table: Arc<ArcSwap<RoutingTable>>,
    settings: Arc<RouterSettings>,
    metrics: Arc<Metrics>,
    addr: actix::Addr<Router>,
    /// The latest background health check, when those are on.
    last_health: Arc<arc_swap::ArcSwapOption<HealthReport>>,
}

impl RouterHandle {
    /// Starts the router and one actor per deployment on the current arbiter.
    pub fn start(config: &Config, prices: &PriceMap, metrics: Arc<Metrics>, events: EventSink) -> Self {
        let general = &config.general;
        let check_interval =
            general.background_health_checks.then_some(general.health_check_interval.max(Duration::from_secs(1)));
        let settings = Arc::new(config.router.clone());
        let mut groups: HashMap<String, Vec<DeploymentHandle>> = HashMap::new();
        let group_sizes: HashMap<&str, usize> = config.deployments.iter().fold(HashMap::new(), |mut m, d| {
            *m.entry(d.model_name.as_str()).or_default() += 1;
            m
        });
        let mut unpriced = std::collections::HashSet::new();
        for d in &config.deployments {
            let price = prices.price_for(d);
            if price.is_none() && unpriced.insert(d.model_name.as_str()) {
                tracing::warn!(
                    model_group = %d.model_name,
                    model = %d.litellm_model,
                    "no price for this model in the price map: its calls cost 0 (set input_cost_per_token and output_cost_per_token, or model_info.base_model)"
                );
            }
            let policy = HealthPolicy {
                cooldown_time: settings.cooldown_time,
                disable_cooldowns: settings.disable_cooldowns,
                allowed_fails: settings.allowed_fails,
                allowed_fails_policy: settings.allowed_fails_policy.clone(),
                group_size: group_sizes.get(d.model_name.as_str()).copied().unwrap_or(1),
                latency_window: settings.max_latency_list_size,
                latency_ttl: settings.latency_ttl,
            };
            let entry = prices.entry_for(d);
            let max_input = d
                .max_input_tokens
                .or_else(|| entry.and_then(|e| e.max_input_tokens.or(e.max_tokens)).map(|t| t as u64));
            let max_output = entry.and_then(|e| e.max_output_tokens.or(e.max_tokens)).map(|t| t as u64);
            let handle =
                Deployment::start(d.clone(), price, max_input, max_output, policy, metrics.clone(), events.clone());
            groups.entry(d.model_name.clone()).or_default().push(handle);
        }
        let mut wildcards: Vec<String> = groups.keys().filter(|g| g.contains('*')).cloned().collect();
        wildcards.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        let table = RoutingTable {
            groups,
            group_order: config.model_groups().into_iter().map(str::to_string).collect(),
            aliases: settings.model_group_alias.clone(),
            wildcards,
        };
        let table = Arc::new(ArcSwap::from_pointee(table));
        let addr = Router {
            table: table.clone(),
            check_interval,
            handle: None,
            checking: false,
            events,
            failing: HashMap::new(),
        }
        .start();
        let handle = Self { table, settings, metrics, addr, last_health: Default::default() };
        handle.addr.do_send(Attach(handle.clone()));
        handle
    }

    /// The latest background health check, if background checks are on and one has finished.
    pub fn last_health(&self) -> Option<Arc<HealthReport>> {
        self.last_health.load_full()
    }

    pub fn table(&self) -> Arc<RoutingTable> {
        self.table.load_full()
    }

    pub fn settings(&self) -> &RouterSettings {
        &self.settings
    }

    pub fn max_fallbacks(&self) -> usize {
        self.settings.max_fallbacks
    }

    /// Stops the deployment actors (after the HTTP server has drained) and waits until they
    /// have stopped.
    pub async fn shutdown(&self) {
        if self.addr.send(Shutdown).await.is_err() {
            tracing::debug!("the router had already stopped");
        }
    }

    /// The upstream timeout for a call on deployment `d`: the whole answer of a complete call;
    /// for a stream, the wait for its headers and then for each next chunk. The request's own
    /// values win over the deployment's, which win over the router's; a stream without any
    /// `stream_timeout` uses `timeout` (as LiteLLM does), and the router's default otherwise.
    pub fn timeout_for(
        &self,
        d: &DeploymentHandle,
        stream: bool,
        timeout: Option<Duration>,
        stream_timeout: Option<Duration>,
    ) -> Duration {
        let cfg = d.config();
        let chosen = if stream {
            stream_timeout.or(timeout).or(cfg.stream_timeout).or(self.settings.stream_timeout).or(cfg.timeout)
        } else {
            timeout.or(cfg.timeout)
        };
        chosen.unwrap_or(self.settings.timeout)
    }
}
