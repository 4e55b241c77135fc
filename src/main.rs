//! The `switchyard` command: `serve` (the default), and `mock-upstream` for local trials.

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
    /// Print the event stream (request, response and deployment events), one JSON per line.
    Tail(TailArgs),
    /// Run a mock OpenAI-compatible upstream (for trying the gateway without API keys).
    MockUpstream(MockArgs),
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
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Tail(args)) => tail(args),
        Some(Command::MockUpstream(args)) => mock_upstream(args),
        None => serve(cli.serve),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("switchyard: {message}");
            ExitCode::FAILURE
        }
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
