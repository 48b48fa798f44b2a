//! `kairos`: the command line. It parses arguments, loads the configuration and wires the
//! library crates together; the work itself lives in those crates.

mod auth;
mod bench;
mod broker;
mod client;
mod config;
mod datagen;
mod demo;
mod deploy;
mod fg;
mod fv;
mod model;
mod monitor;
mod pipeline;
mod recsys;
mod remote;
mod train;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::config::{Config, Overrides};

// Windowed aggregation creates and drops a small state per window; mimalloc keeps that cheap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Kairos: the operational machine-learning loop in one system — feature groups with an online
/// store (the latest row per key, for serving) and an offline store (the full history, for
/// training), feature views and point-in-time training data, streaming pipelines, models served
/// over KServe's V2 protocol, monitoring with retraining, and recommendations.
///
/// Every command runs in this process on the data dir, or against a running `kairos serve` with
/// --url. `kairos demo fraud` runs the whole loop once.
#[derive(Debug, Parser)]
#[command(name = "kairos", version)]
struct Cli {
    /// Configuration file (default: ./kairos.toml if present).
    #[arg(long, global = true, env = "KAIROS_CONFIG")]
    config: Option<PathBuf>,
    /// Where the embedded stores keep their data (default ./kairos-data).
    #[arg(long, global = true, env = "KAIROS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Talk to a running `kairos serve` at this URL instead of opening the data dir.
    #[arg(long, global = true, env = "KAIROS_URL")]
    url: Option<String>,
    /// Online store backend: redb (embedded, default), redis or redis-cluster.
    #[arg(long, global = true)]
    online_backend: Option<String>,
    /// Redis URL for the redis backend, e.g. redis://127.0.0.1:6379; for redis-cluster, some
    /// of its nodes' URLs, comma-separated.
    #[arg(long, global = true)]
    redis_url: Option<String>,
    /// The API key to send to the server at --url (or set KAIROS_API_KEY).
    #[arg(long, global = true)]
    api_key: Option<String>,
    /// A CA certificate (PEM) to trust for an https:// --url (or set KAIROS_CA_CERT).
    #[arg(long, global = true)]
    ca_cert: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the REST server (feature groups, views, inserts, reads, /metrics) and every applied
    /// pipeline.
    Serve {
        /// Address to listen on (default 127.0.0.1:7070). With no API key configured, only a
        /// loopback address is accepted.
        #[arg(long)]
        listen: Option<String>,
        /// Serve other machines even with no API key configured: anyone who reaches the port
        /// may read and change everything.
        #[arg(long)]
        insecure: bool,
    },
    /// Feature groups: create, list, describe, insert, get, read, check, delete, compact.
    #[command(subcommand)]
    Fg(fg::FgCommand),
    /// Feature views: apply, list, describe, delete, training-data, read, get (online vectors).
    #[command(subcommand)]
    Fv(fv::FvCommand),
    /// Streaming pipelines: apply, run, list, status, stop, worker.
    #[command(subcommand)]
    Pipeline(pipeline::PipelineCommand),
    /// The model registry: register, list, describe, delete.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// Train a model on a feature view's training dataset, score it on the held-out splits
    /// and register it with its metrics and lineage.
    Train(train::TrainArgs),
    /// Deployments: apply, list, status, delete, predict.
    #[command(subcommand)]
    Deploy(deploy::DeployCommand),
    /// Monitors of deployments: apply, list, run, retrain, history, report, delete.
    #[command(subcommand)]
    Monitor(monitor::MonitorCommand),
    /// Recommendations: train and apply a recommender, or evaluate on MovieLens offline.
    #[command(subcommand)]
    Recsys(recsys::RecsysCommand),
    /// API keys: create, list, revoke.
    #[command(subcommand)]
    Auth(auth::AuthCommand),
    /// End-to-end demos on the embedded stores: `kairos demo fraud`.
    #[command(subcommand)]
    Demo(demo::DemoCommand),
    /// Generated data sets: card transactions with fraud patterns and late labels.
    #[command(subcommand)]
    Gen(datagen::GenCommand),
    /// Benchmarks: online reads, inserts, point-in-time joins, feature vectors, streaming and
    /// freshness, serving, drift, vector search, recommendations, soak, replicas, failover.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// A Kafka-protocol broker for development clusters and tests (librdkafka's in-memory mock
    /// cluster, in a process of its own); prints its bootstrap address.
    Broker(broker::BrokerArgs),
}

/// The most threads blocking work (file I/O, redb transactions, Delta log reads, training) may
/// hold at once. Tokio's default, 512, lets one burst — a Delta checkpoint reads a hundred log
/// files at once — leave a hundred threads behind that the steady work that follows keeps
/// alive; past this many, blocking work queues instead.
const MAX_BLOCKING_THREADS: usize = 32;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The Delta kernel logs every snapshot and scan at info: too chatty for a terminal. The demo
    // draws its own display, so only warnings interrupt it.
    let default_filter = match cli.command {
        Command::Demo(_) => "warn",
        _ => "info,buoyant_kernel=warn,delta_kernel=warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("KAIROS_LOG")
                .unwrap_or_else(|_| EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    let (listen, insecure) = match &cli.command {
        Command::Serve { listen, insecure } => (listen.clone(), *insecure),
        _ => (None, false),
    };
    let overrides = Overrides {
        data_dir: cli.data_dir.clone(),
        listen,
        online_backend: cli.online_backend.clone(),
        redis_url: cli.redis_url.clone(),
        api_key: cli.api_key.clone(),
        ca_cert: cli.ca_cert.clone(),
        insecure,
    };
    let config = Config::load(cli.config.as_deref(), |k| std::env::var(k).ok(), overrides)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve { .. } => serve(config).await,
            Command::Fg(command) => fg::run(command, &config, cli.url.as_deref()).await,
            Command::Fv(command) => fv::run(command, &config, cli.url.as_deref()).await,
            Command::Pipeline(command) => pipeline::run(command, &config, cli.url.as_deref()).await,
            Command::Model(command) => model::run(command, &config, cli.url.as_deref()).await,
            Command::Train(args) => train::run(args, &config, cli.url.as_deref()).await,
            Command::Deploy(c) => deploy::run(c, &config, cli.url.as_deref()).await,
            Command::Monitor(c) => monitor::run(c, &config, cli.url.as_deref()).await,
            Command::Recsys(c) => recsys::run(c, &config, cli.url.as_deref()).await,
            Command::Auth(c) => auth::run(c, &config, cli.url.as_deref()).await,
            Command::Demo(c) => demo::run(c, &config).await,
            Command::Gen(c) => datagen::run(c),
            Command::Bench(command) => bench::run(command, &config).await,
            Command::Broker(args) => broker::run(args).await,
        }
    })
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let options = kairos_serve::ServerOptions {
        access: kairos_serve::AccessPolicy {
            allowed_hosts: config.server.allowed_hosts.clone(),
            allowed_origins: config.server.allowed_origins.clone(),
            insecure: config.server.insecure,
        },
        sources: config.pipelines.clone(),
        transport: kairos_serve::TransportOptions {
            tls: config.server.tls.as_ref().map(|t| kairos_serve::TlsFiles {
                cert: t.cert.clone(),
                key: t.key.clone(),
            }),
            max_connections: config.server.max_connections,
            header_timeout: std::time::Duration::from_secs(config.server.header_timeout_secs),
            shutdown_grace: std::time::Duration::from_secs(config.server.shutdown_grace_secs),
        },
        webhook_hosts: config.server.webhook_hosts.clone(),
    };
    // Bad PEM files stop the start here, before an address is announced.
    if let Some(files) = &options.transport.tls {
        kairos_serve::transport::tls_config(files)?;
    }
    let store = kairos_store::FeatureStore::open(config.store.clone()).await?;
    let listener = tokio::net::TcpListener::bind(&config.server.listen).await?;
    let addr = listener.local_addr()?;
    // The server checks this too; checked here first so a refused start announces no address.
    kairos_serve::Access::new(store.clone(), options.access.clone(), Some(addr))?
        .check_listen(addr)
        .map_err(anyhow::Error::msg)?;
    // Tests and scripts read the bound address from this line (useful with port 0).
    let scheme = if options.transport.tls.is_some() {
        "https"
    } else {
        "http"
    };
    // The handlers are in place before the address is announced: a SIGTERM that follows the
    // announcement at once stops the server cleanly instead of killing it.
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    println!("kairos listening on {scheme}://{addr}");
    let (stopping, mut stop_requested) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = term.recv() => {}
        }
        let _ = stopping.send(true);
    };
    // A shutdown ends in bounded time whatever runs: 30 s past the requests' grace (for the
    // pipelines' last checkpoints and the stores), the process exits anyway. Nothing
    // acknowledged is lost by that; it is what a crash leaves, and the log replays it.
    let limit = options.transport.shutdown_grace + std::time::Duration::from_secs(30);
    let watchdog = async move {
        let _ = stop_requested.wait_for(|stop| *stop).await;
        tokio::time::sleep(limit).await;
    };
    tokio::select! {
        served = kairos_serve::serve(store, listener, options, shutdown) => served?,
        () = watchdog => {
            tracing::error!(?limit, "the shutdown did not finish in time; exiting without it");
            std::process::exit(1);
        }
    }
    Ok(())
}
