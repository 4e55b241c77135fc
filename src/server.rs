//! Starting the gateway: the upstream client, the actors, and the HTTP server.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};

use crate::auth::{Auth, KeyStore, MasterKey, Table};
use crate::budget::follow::{self, Counter};
use crate::budget::ledger::Ledger;
use crate::budget::{AlertLog, Budgets};
use crate::config::Config;
use crate::cost::{PriceMap, PriceMapError};
use crate::events::topics::Topics;
use crate::events::{EventLogError, EventMetrics, EventSink};
use crate::http::{self, Accounts, Gateway};
use crate::limits::Limiter;
use crate::metrics::Metrics;
use crate::router::RouterHandle;

/// How the HTTP server runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// actix-web workers (threads); `None` = one per core.
    pub workers: Option<usize>,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub graceful_timeout: Duration,
    /// Stop on SIGTERM/SIGINT (the binary); tests stop the server through its handle.
    pub handle_signals: bool,
    /// The longest a client may take to send a request body once its headers are in.
    pub body_timeout: Duration,
    /// Origins allowed to call from a browser (CORS); `["*"]` allows any, as LiteLLM does.
    pub cors_origins: Vec<String>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            workers: None,
            graceful_timeout: Duration::from_secs(30),
            handle_signals: true,
            body_timeout: Duration::from_secs(60),
            cors_origins: vec!["*".into()],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Prices(#[from] PriceMapError),
    #[error("cannot build the upstream HTTP client: {0}")]
    Client(#[from] crate::providers::client::BuildError),
    #[error("cannot listen: {0}")]
    Listen(#[from] std::io::Error),
    #[error(transparent)]
    EventLog(#[from] EventLogError),
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot open the key log: {0}")]
    Keys(String),
}

/// A running gateway.
pub struct Running {
    pub server: Server,
    pub router: RouterHandle,
    pub events: EventSink,
}

impl Running {
    /// After the HTTP server has stopped, while the actix system still runs: stop the actors
    /// (waiting until they have), then deliver or spool queued events, waiting for the publisher
    /// thread off the runtime's thread.
    pub async fn shut_down(self, timeout: Duration) {
        self.router.shutdown().await;
        let events = self.events;
        if actix_web::rt::task::spawn_blocking(move || events.shutdown(timeout)).await.is_err() {
            tracing::error!("the event log did not shut down cleanly");
        }
    }
}

/// The key table (following `<prefix>.keys`), budgets and limits, and (with the event log
/// on) the follower that counts other instances' calls from `<prefix>.events`, starting from
/// the spend snapshots on `<prefix>.spend`, and on the embedded log the budgets consumer that
/// writes them.
fn accounts(config: &Config, events: &EventSink, metrics: &Metrics) -> Result<Accounts, StartError> {
    use secrecy::ExposeSecret;
    let topics = Topics::open(&config.event_log).map_err(|e| StartError::Keys(e.to_string()))?;
    let table = Arc::new(Table::default());
    let keys = KeyStore::start(topics.clone(), table.clone()).map_err(StartError::Keys)?;
    let alerts = AlertLog { topics: topics.clone(), gateway_id: events.gateway_id().to_string() };
    let budgets = Arc::new(Budgets::new(Ledger::new(config.timezone.clone()), Some(alerts)));
    let limiter = Arc::new(Limiter::default());
    let following = if events.enabled() {
        let mut counter =
            Counter::new(table.clone(), budgets.clone(), limiter.clone(), events.gateway_id().to_string());
        counter.delay = Some(follow::delay_histogram(metrics.registry())?);
        Some(follow::start(&topics, keys.clone(), counter, config.event_log.kafka.is_some()))
    } else {
        None
    };
    // The embedded log belongs to this process, so its consumers run here; with Kafka each is a
    // process of its own (`switchyard consume <name>`).
    let memory = Arc::new(crate::consumers::spend::MemoryStore::default());
    let consumer_metrics = crate::consumers::ConsumerMetrics::register(metrics.registry())?;
    let consumers =
        crate::consumers::InProcess::start(&topics, &keys, config, memory.clone(), consumer_metrics, events);
    if !consumers.names().is_empty() {
        tracing::info!(consumers = ?consumers.names(), "running the event log's consumers in this process");
    }
    let master = config.general.master_key.as_ref().map(|k| MasterKey::new(k.expose_secret()));
    let spend = match &config.clickhouse {
        Some(ch) => Some(http::SpendSource::ClickHouse(Box::new(crate::clickhouse::client(ch)))),
        None if consumers.names().contains(&"spend") => Some(http::SpendSource::Memory(memory)),
        None => None,
    };
    Ok(Accounts { auth: Auth { master, table }, keys, budgets, limiter, following, consumers, spend })
}

/// Starts the actors and the HTTP server on `listener`. Must run inside an actix system.
pub fn start(config: &Config, listener: TcpListener, opts: &ServeOptions) -> Result<Running, StartError> {
    for warning in &config.warnings {
        tracing::warn!("config: {warning}");
    }
    let prices = match &config.model_cost_map_path {
        Some(path) => PriceMap::load(path)?,
        None => PriceMap::bundled(),
    };
    let model_names =
        config.model_groups().into_iter().chain(config.router.model_group_alias.keys().map(String::as_str));
    let metrics = Arc::new(Metrics::new(model_names));
    let events = EventSink::start(&config.event_log, EventMetrics::register(metrics.registry())?)?;
    // Each thread builds its own client later; building one now reports a broken TLS setup at once.
    crate::providers::client::build()?;
    let router = RouterHandle::start(config, &prices, metrics.clone(), events.clone());
    let accounts = accounts(config, &events, &metrics)?;
    let gateway = web::Data::new(Gateway::new(
        router.clone(),
        metrics,
        events.clone(),
        &config.general,
        accounts,
        opts.body_timeout,
    ));
    let cors = http::cors::CorsPolicy::new(&opts.cors_origins);
    let mut server = HttpServer::new(move || {
        let cors = cors.clone();
        App::new()
            .wrap(actix_web::middleware::from_fn(move |req, next| http::cors::middleware(cors.clone(), req, next)))
            .app_data(gateway.clone())
            .app_data(http::query_config())
            .app_data(http::path_config())
            .configure(http::configure)
            .default_service(web::to(http::not_found))
    })
    .shutdown_timeout(opts.graceful_timeout.as_secs().max(1))
    .backlog(4096)
    .max_connection_rate(1024);
    if let Some(workers) = opts.workers {
        server = server.workers(workers.max(1));
    }
    if !opts.handle_signals {
        server = server.disable_signals();
    }
    let server = server.listen(listener)?.run();
    Ok(Running { server, router, events })
}
