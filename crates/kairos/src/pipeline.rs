//! `kairos pipeline …`: streaming pipelines, in process on the data dir or against `--url`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use kairos_catalog::Catalog;
use kairos_client::Client;
use kairos_pipeline::{PipelineStatus, Pipelines, RunState};
use kairos_store::FeatureStore;
use kairos_stream::{PipelineSpec, SourceSpec};

use crate::config::Config;
use crate::fg::{print_json, spinner};

#[derive(Debug, Subcommand)]
pub enum PipelineCommand {
    /// Store a pipeline definition (TOML or JSON) as its next version and create its output
    /// feature group if absent. With --url the server also starts it.
    Apply { file: PathBuf },
    /// Run a pipeline in this process, from its last checkpoint, until its source ends (a
    /// file) or Ctrl-C; then wait until its rows are in both stores. Give a definition file to
    /// apply it first, or the name of an applied pipeline. With --url, start it in the server.
    Run { pipeline: String },
    /// Every pipeline's latest version and status.
    List,
    /// A pipeline's state, counts, watermark, positions and freshness (p50/p99).
    Status { name: String },
    /// Stop a running pipeline after a last checkpoint: in the server with --url, or a
    /// `kairos pipeline run` on the same data dir.
    Stop { name: String },
    /// Run one more worker of a Kafka pipeline in this process, beside the one the server at
    /// --url runs: the workers share the topic's partitions through the consumer group, and
    /// when one stops or dies the others take its partitions over from their checkpoints.
    /// Rows are written through the server; partition checkpoints are kept in --data-dir,
    /// which must be the server's (this machine, or a shared filesystem). Ctrl-C stops the
    /// worker after a last checkpoint.
    Worker {
        /// The pipeline's definition file (applied to the server and run there too).
        file: PathBuf,
        /// This worker's name (its status and dead letters are kept under it).
        #[arg(long)]
        id: Option<String>,
    },
}

pub async fn run(
    command: PipelineCommand,
    config: &Config,
    url: Option<&str>,
) -> anyhow::Result<()> {
    if let PipelineCommand::Worker { file, id } = command {
        let Some(url) = url else {
            bail!("a worker writes through a server: give the server's --url");
        };
        return worker(config, url, &file, id).await;
    }
    match url {
        Some(url) => run_remote(command, &crate::client::open(config, Some(url)).await?).await,
        // Not the client's embedded backend, which runs pipelines while it is open: here a
        // pipeline runs in the foreground (`run`), and the other commands read what a `run`
        // in another process writes.
        None => run_local(command, config).await,
    }
}

/// Reads a definition file; a relative source path is read from the file's folder.
fn read_spec(file: &Path) -> anyhow::Result<PipelineSpec> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut spec = PipelineSpec::parse(&file.to_string_lossy(), &text)?;
    if let SourceSpec::File { path, .. } = &mut spec.source
        && Path::new(path.as_str()).is_relative()
    {
        let base = file.parent().unwrap_or(Path::new("."));
        let absolute = std::path::absolute(base.join(&*path))?;
        *path = absolute.to_string_lossy().into_owned();
    }
    Ok(spec)
}

async fn run_local(command: PipelineCommand, config: &Config) -> anyhow::Result<()> {
    let data_dir = &config.store.data_dir;
    match command {
        PipelineCommand::Apply { file } => {
            let store = FeatureStore::open(config.store.clone()).await?;
            let result = Pipelines::new(store.clone()).apply(read_spec(&file)?).await;
            store.close().await;
            print_json(&result?)
        }
        PipelineCommand::Run { pipeline } => run_here(config, &pipeline).await,
        // Status, list and stop read only the catalog and the files a running pipeline writes,
        // so they work while `kairos pipeline run` holds the stores in another process.
        PipelineCommand::List => {
            let catalog = catalog(config)?;
            let mut latest = std::collections::BTreeMap::new();
            for def in catalog.list_pipelines()? {
                latest.insert(def.spec.name.clone(), def);
            }
            let statuses: Vec<PipelineStatus> = latest
                .values()
                .map(|def| kairos_pipeline::runner::status_on_disk(data_dir, def))
                .collect();
            print_json(&statuses)
        }
        PipelineCommand::Status { name } => {
            let def = definition(catalog(config)?.as_ref(), &name)?;
            print_json(&kairos_pipeline::runner::status_on_disk(data_dir, &def))
        }
        PipelineCommand::Worker { .. } => unreachable!("run() handles workers"),
        PipelineCommand::Stop { name } => {
            let def = definition(catalog(config)?.as_ref(), &name)?;
            kairos_pipeline::runner::request_stop_on_disk(data_dir, &def)?;
            eprintln!("asked pipeline {name} to stop after a last checkpoint");
            Ok(())
        }
    }
}

fn catalog(config: &Config) -> anyhow::Result<Box<dyn Catalog>> {
    let data_dir = &config.store.data_dir;
    let url = config.store.catalog.url.as_deref();
    if url.is_none() && !data_dir.join("catalog.db").exists() {
        bail!("no Kairos data in {}", data_dir.display());
    }
    Ok(kairos_catalog::open(url, data_dir)?)
}

fn definition(
    catalog: &dyn Catalog,
    name: &str,
) -> anyhow::Result<kairos_stream::spec::PipelineDef> {
    catalog
        .get_pipeline(name, None)?
        .with_context(|| format!("pipeline '{name}' not found"))
}

/// Runs a pipeline in the foreground with a live line of progress.
async fn run_here(config: &Config, pipeline: &str) -> anyhow::Result<()> {
    let store = FeatureStore::open(config.store.clone()).await?;
    let pipelines = Arc::new(Pipelines::new(store.clone()));
    let result = async {
        let name = if Path::new(pipeline).is_file() {
            let def = pipelines.apply(read_spec(Path::new(pipeline))?).await?;
            def.spec.name
        } else {
            pipeline.to_owned()
        };
        pipelines.start(&name).await?;
        let bar = spinner(format!("pipeline {name}"));
        let waiting = {
            let pipelines = pipelines.clone();
            let name = name.clone();
            tokio::spawn(async move { pipelines.wait(&name).await })
        };
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let mut waiting = std::pin::pin!(waiting);
        let status = loop {
            tokio::select! {
                done = &mut waiting => break done??,
                _ = tokio::signal::ctrl_c() => {
                    bar.set_message(format!("pipeline {name}: stopping after a last checkpoint"));
                    break pipelines.stop(&name).await?;
                }
                _ = tick.tick() => {
                    let s = pipelines.status(&name).await?;
                    bar.set_message(format!(
                        "pipeline {name}: {} events, {} rows written, {} checkpoints, watermark {}",
                        s.events, s.rows_written, s.epoch, s.watermark.as_deref().unwrap_or("-")
                    ));
                }
            }
        };
        bar.finish_and_clear();
        if status.state == RunState::Failed {
            bail!(
                "pipeline {name} failed: {}",
                status.error.as_deref().unwrap_or("unknown error")
            );
        }
        store.wait_materialised(&status.output_group, None).await?;
        print_json(&status)
    }
    .await;
    pipelines.close().await;
    store.close().await;
    result
}

/// Runs an extra worker of a pipeline the server at `url` runs too.
async fn worker(config: &Config, url: &str, file: &Path, id: Option<String>) -> anyhow::Result<()> {
    let spec = read_spec(file)?;
    if !matches!(spec.source, SourceSpec::Kafka { .. }) {
        bail!(
            "only a pipeline reading Kafka runs as several workers (its consumer group shares the partitions)"
        );
    }
    let client = crate::client::open(config, Some(url)).await?;
    let def = client.deploy_pipeline(&spec).await?.pipeline;
    let id = id.unwrap_or_else(|| format!("worker-{}", std::process::id()));
    let placement = kairos_pipeline::Placement {
        sink: kairos_pipeline::Sink::Server(kairos_pipeline::sink::Server::new(
            url,
            config.client.api_key.as_deref(),
        )?),
        store: None,
        streams: None,
        data_dir: config.store.data_dir.clone(),
        storage: kairos_store::Storage::open(
            config.store.storage.url.as_deref(),
            &config.store.data_dir,
        )?,
        worker: Some(id.clone()),
    };
    let name = def.spec.name.clone();
    let mut handle = kairos_pipeline::runner::spawn(placement, def).await?;
    let bar = spinner(format!("pipeline {name}, worker {id}"));
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let status = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                bar.set_message(format!("worker {id}: stopping after a last checkpoint"));
                break handle.stop().await;
            }
            _ = tick.tick() => {
                if !handle.is_running() {
                    break handle.join().await;
                }
                let s = handle.control.status();
                bar.set_message(format!(
                    "pipeline {name}, worker {id}: partitions {:?}, {} events, {} rows written, watermark {}",
                    s.positions.keys().collect::<Vec<_>>(), s.events, s.rows_written,
                    s.watermark.as_deref().unwrap_or("-")
                ));
            }
        }
    };
    bar.finish_and_clear();
    if status.state == RunState::Failed {
        bail!(
            "worker {id} of pipeline {name} failed: {}",
            status.error.as_deref().unwrap_or("unknown error")
        );
    }
    print_json(&status)
}

/// The commands on a server, through the client.
async fn run_remote(command: PipelineCommand, client: &Client) -> anyhow::Result<()> {
    match command {
        PipelineCommand::Apply { file } => {
            print_json(&client.deploy_pipeline(&read_spec(&file)?).await?)
        }
        PipelineCommand::Run { pipeline } if Path::new(&pipeline).is_file() => print_json(
            &client
                .deploy_pipeline(&read_spec(Path::new(&pipeline))?)
                .await?,
        ),
        PipelineCommand::Run { pipeline } => print_json(&client.start_pipeline(&pipeline).await?),
        PipelineCommand::List => print_json(&client.list_pipelines().await?),
        PipelineCommand::Status { name } => print_json(&client.pipeline_status(&name).await?),
        PipelineCommand::Stop { name } => print_json(&client.stop_pipeline(&name).await?),
        PipelineCommand::Worker { .. } => unreachable!("run() handles workers"),
    }
}
