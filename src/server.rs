//! Starting the gateway: the upstream client, the actors, and the HTTP server.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};

use crate::config::Config;
use crate::cost::{PriceMap, PriceMapError};
use crate::events::{EventLogError, EventMetrics, EventSink};
use crate::http::{self, Gateway};
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
    let gateway =
        web::Data::new(Gateway::new(router.clone(), metrics, events.clone(), &config.general, opts.body_timeout));
    let cors = http::cors::CorsPolicy::new(&opts.cors_origins);
    let mut server = HttpServer::new(move || {
        let cors = cors.clone();
        App::new()
            .wrap(actix_web::middleware::from_fn(move |req, next| http::cors::middleware(cors.clone(), req, next)))
            .app_data(gateway.clone())
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
