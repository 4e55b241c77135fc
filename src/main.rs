//! The `switchyard` command: `serve` (the default), `consume <name>` (a consumer of the event
//! log), `migrate` (ClickHouse tables), `tail`, and `mock-upstream` for local trials.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use switchyard::config::Config;
use switchyard::server::{self, ServeOptions};

/// A request allocates and frees many small objects (header maps, buffers, futures); glibc's
/// malloc spent ~6% of the gateway's CPU on them, mimalloc's thread-local free lists less. Built
/// without transparent huge pages (`no_thp`): with them its arenas doubled the resident memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Switchyard: an OpenAI-compatible LLM gateway that reads LiteLLM's config.yaml.
///
/// Point any OpenAI client at http://HOST:PORT (with or without /v1) and use the model names
/// from your config's model_list.
///
/// Budgets across instances: the budgets consumer folds spend into the topic <prefix>.spend,
/// where every gateway starts from. On the embedded event log (no event_log.kafka) it runs
/// inside the gateway; with Kafka, run `switchyard consume budgets --config PATH` once per
/// cluster next to the gateways (without it, each gateway replays the whole event history at
/// start).
#[derive(Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gateway (the default when no subcommand is given).
    Serve(ServeArgs),
    /// Run a consumer of the event log: `budgets` (spend per account and budget window, published
    /// to <prefix>.spend), `spend` (ClickHouse) or `alerts` (Slack and webhooks). Needs
    /// event_log.kafka: on the embedded log the gateway runs them itself.
    Consume(ConsumeArgs),
    /// Print the event stream (request, response and deployment events), one JSON per line.
    Tail(TailArgs),
    /// Run a mock OpenAI-compatible upstream (for trying the gateway without API keys).
    MockUpstream(MockArgs),
    /// Create or upgrade the ClickHouse tables (schemas/clickhouse/NNN_*.sql, in order; applied
    /// ones are skipped, so it is safe to run again).
    Migrate(MigrateArgs),
}

#[derive(Args)]
struct MigrateArgs {
    /// The gateway's config.yaml (its `analytics.clickhouse` section, or SWITCHYARD_CLICKHOUSE_URL,
    /// says where ClickHouse is).
    #[arg(long, short = 'c', env = "SWITCHYARD_CONFIG")]
    config: PathBuf,
}

#[derive(Args)]
struct ConsumeArgs {
    /// Which consumer: budgets (spend snapshots for the gateways), spend (ClickHouse spend logs
    /// and rollups), analytics (ClickHouse deployment_minute), alerts (LiteLLM's alerting to
    /// Slack and webhooks), or all of them. spend and analytics need analytics.clickhouse,
    /// alerts needs general_settings.alerting; `all` skips those whose output is not set.
    #[arg(value_parser = ["spend", "budgets", "alerts", "analytics", "all"])]
    name: String,
    /// The gateways' config.yaml (its `event_log.kafka` says where the topics are).
    #[arg(long, short = 'c', env = "SWITCHYARD_CONFIG")]
    config: PathBuf,
}

#[derive(Args)]
struct TailArgs {
    /// The gateway's config.yaml (its `event_log` section says where the events are).
    #[arg(long, short = 'c', env = "SWITCHYARD_CONFIG")]
    config: PathBuf,
    /// Keep printing new events as they arrive.
    #[arg(long, short = 'f')]
    follow: bool,
    /// Only events of this type.
    #[arg(long = "type", value_parser = ["request", "response", "deployment"])]
    kind: Option<String>,
}

#[derive(Args, Clone)]
struct ServeArgs {
    /// LiteLLM-style config.yaml (model_list, router_settings, general_settings, ...).
    #[arg(long, short = 'c', env = "SWITCHYARD_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0", env = "SWITCHYARD_HOST")]
    host: String,
    /// Port to listen on.
    #[arg(long, default_value_t = 4000, env = "SWITCHYARD_PORT")]
    port: u16,
    /// HTTP worker threads (default: one per core).
    #[arg(long = "num_workers", alias = "num-workers")]
    num_workers: Option<usize>,
    /// Seconds in-flight requests get to finish after SIGTERM.
    #[arg(long, default_value_t = 30)]
    graceful_timeout: u64,
    /// Seconds a client may take to send its request body (then 408).
    #[arg(long, default_value_t = 60)]
    request_body_timeout: u64,
    /// Origins browsers may call from, comma-separated (LiteLLM's variable); `*` allows any.
    #[arg(long, env = "LITELLM_CORS_ALLOW_ORIGINS", default_value = "*", value_delimiter = ',')]
    cors_allow_origins: Vec<String>,
}

#[derive(Args)]
struct MockArgs {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 4010)]
    port: u16,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_target(false)
        // Colour only on a terminal: piped to a file or a log collector, escape codes are noise.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Serve(args)) => serve(args).map_err(Failed::from),
        Some(Command::Consume(args)) => consume(args),
        Some(Command::Tail(args)) => tail(args).map_err(Failed::from),
        Some(Command::MockUpstream(args)) => mock_upstream(args).map_err(Failed::from),
        Some(Command::Migrate(args)) => migrate(args).map_err(Failed::from),
        None => serve(cli.serve).map_err(Failed::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failed { code, message }) => {
            eprintln!("switchyard: {message}");
            ExitCode::from(code)
        }
    }
}

/// Why the command failed, and its exit code: 1, or 2 for a command that cannot run as asked.
struct Failed {
    code: u8,
    message: String,
}

impl From<String> for Failed {
    fn from(message: String) -> Self {
        Self { code: 1, message }
    }
}

fn usage(message: String) -> Failed {
    Failed { code: 2, message }
}

fn consume(args: ConsumeArgs) -> Result<(), Failed> {
    use switchyard::consumers::{self, Name};
    let name = Name::parse(&args.name).ok_or_else(|| usage(format!("no consumer named {}", args.name)))?;
    let config = Config::load(&args.config).map_err(|e| format!("invalid config {}: {e}", args.config.display()))?;
    if config.event_log.kafka.is_none() {
        return Err(usage(format!(
            "`consume {}` needs event_log.kafka: on the embedded event log the consumers run inside the gateway (`switchyard --config PATH`)",
            args.name
        )));
    }
    if let Some(missing) = name.missing(&config) {
        return Err(usage(missing));
    }
    let topics = switchyard::events::topics::Topics::open(&config.event_log)
        .map_err(|e| format!("cannot open the topics: {e}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!(consumer = name.as_str(), "stopping");
            stop.send_replace(true);
        });
        tracing::info!(consumer = name.as_str(), "consumer starting");
        let metrics = consumers::ConsumerMetrics::new().map_err(|e| e.to_string())?;
        consumers::run(name, topics, &config, metrics, stopped).await.map_err(Failed::from)
    })
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn serve(args: ServeArgs) -> Result<(), String> {
    let path = args.config.ok_or("no config given: pass --config PATH (a LiteLLM config.yaml)")?;
    let config = Config::load(&path).map_err(|e| format!("invalid config {}: {e}", path.display()))?;
    let listener = TcpListener::bind((args.host.as_str(), args.port))
        .map_err(|e| format!("cannot listen on {}:{}: {e}", args.host, args.port))?;
    let opts = ServeOptions {
        workers: args.num_workers,
        graceful_timeout: Duration::from_secs(args.graceful_timeout),
        handle_signals: true,
        body_timeout: Duration::from_secs(args.request_body_timeout.max(1)),
        cors_origins: args.cors_allow_origins.iter().map(|o| o.trim().to_string()).filter(|o| !o.is_empty()).collect(),
    };
    actix_web::rt::System::new().block_on(async move {
        let mut running = server::start(&config, listener, &opts).map_err(|e| e.to_string())?;
        tracing::info!(host = %args.host, port = args.port, deployments = config.deployments.len(), "switchyard listening");
        let result = (&mut running.server).await.map_err(|e| e.to_string());
        tracing::info!("HTTP server stopped; flushing events");
        running.shut_down(Duration::from_secs(15)).await;
        tracing::info!("switchyard stopped");
        result
    })
}

fn tail(args: TailArgs) -> Result<(), String> {
    let config = Config::load(&args.config).map_err(|e| format!("invalid config {}: {e}", args.config.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(switchyard::events::tail::tail(&config.event_log, args.follow, args.kind.as_deref()))
}

fn migrate(args: MigrateArgs) -> Result<(), String> {
    let config = Config::load(&args.config).map_err(|e| format!("invalid config {}: {e}", args.config.display()))?;
    let clickhouse = config
        .clickhouse
        .ok_or("no ClickHouse configured: set analytics.clickhouse.url (or SWITCHYARD_CLICKHOUSE_URL)")?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let applied = runtime.block_on(switchyard::clickhouse::migrate::migrate(&clickhouse)).map_err(|e| e.to_string())?;
    match applied.len() {
        0 => println!("{}: up to date", clickhouse.database),
        _ => {
            for m in applied {
                println!("{}: applied {:03}_{}", clickhouse.database, m.version, m.name);
            }
        }
    }
    Ok(())
}

fn mock_upstream(args: MockArgs) -> Result<(), String> {
    let listener = TcpListener::bind((args.host.as_str(), args.port))
        .map_err(|e| format!("cannot listen on {}:{}: {e}", args.host, args.port))?;
    actix_web::rt::System::new().block_on(async move {
        let state = Arc::new(switchyard::mock::MockState::default());
        let server = switchyard::mock::server(listener, state, args.workers).map_err(|e| e.to_string())?;
        tracing::info!(host = %args.host, port = args.port, "mock upstream listening");
        server.await.map_err(|e| e.to_string())
    })
}
