//! `kairos fv …`: feature-view commands, on the client (in process on the data dir, or the
//! server at `--url`).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Subcommand;
use kairos_client::{
    Client, FeatureViewSpec, JoinTuning, Spine, Split, SplitName, TrainingData,
    TrainingDatasetRequest, VectorRequest,
};
use kairos_types::Format;
use kairos_types::ingest::parse_timestamp;

use crate::config::Config;
use crate::fg::{confirm, file_format, parse_entry, print_json, spinner, write_rows};

#[derive(Debug, Subcommand)]
pub enum FvCommand {
    /// Create a feature view (or its next version) from a definition file (TOML or JSON).
    Apply { file: PathBuf },
    /// List every version of every feature view.
    List,
    /// Show a view's definition, vector columns and training datasets.
    Describe {
        name: String,
        #[arg(long)]
        version: Option<u32>,
    },
    /// Delete one version of a feature view and its training datasets.
    Delete {
        name: String,
        #[arg(long)]
        version: u32,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
    },
    /// Materialise a point-in-time correct training dataset (Parquet per split, statistics,
    /// fitted transforms).
    TrainingData {
        name: String,
        #[arg(long)]
        version: Option<u32>,
        /// Root event time at or after (RFC 3339 or epoch seconds/ms).
        #[arg(long)]
        start: Option<String>,
        /// Root event time before.
        #[arg(long)]
        end: Option<String>,
        /// `random:TRAIN,VALIDATION,TEST[:SEED]` (fractions) or `time:VALIDATION_START,TEST_START`.
        #[arg(long)]
        split: Option<String>,
        /// Joined rows must be strictly older than the root row.
        #[arg(long)]
        strict: bool,
        /// Joined rows must have been ingested by the root row's time (no late or backfilled
        /// values leak in).
        #[arg(long)]
        as_known_at: bool,
        /// A file of root keys and event times (CSV or JSON lines; Parquet in process) to build
        /// rows for instead of the root group's rows.
        #[arg(long)]
        spine: Option<PathBuf>,
        #[arg(long, default_value = "")]
        description: String,
        /// Memory for the join before it spills to disk, in MiB (in process only).
        #[arg(long)]
        memory_budget_mb: Option<usize>,
    },
    /// Read one split of a training dataset.
    Read {
        name: String,
        /// The training dataset version.
        td: u32,
        #[arg(long)]
        version: Option<u32>,
        /// train (default), validation or test.
        #[arg(long, default_value = "train")]
        split: String,
        /// Apply the frozen model-dependent transforms.
        #[arg(long)]
        transformed: bool,
        /// jsonl (default), csv, arrow or parquet.
        #[arg(long, default_value = "jsonl")]
        format: String,
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Online feature vectors. Each ENTRY is `col=value[,col=value]`, or a bare value for
    /// single-column keys.
    Get {
        name: String,
        #[arg(required = true)]
        entries: Vec<String>,
        #[arg(long)]
        version: Option<u32>,
        /// Request-time values for every entry, `col=value[,col=value]` (the event time too).
        #[arg(long)]
        request: Option<String>,
        /// Apply the transforms frozen with this training dataset version.
        #[arg(long)]
        training_dataset: Option<u32>,
    },
}

fn read_view(file: &Path) -> anyhow::Result<FeatureViewSpec> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let spec = if file.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text)
            .with_context(|| format!("invalid definition in {}", file.display()))?
    } else {
        toml::from_str(&text)
            .with_context(|| format!("invalid definition in {}", file.display()))?
    };
    Ok(spec)
}

fn time(flag: &str, v: &Option<String>) -> anyhow::Result<Option<i64>> {
    v.as_deref()
        .map(|v| parse_timestamp(v).map_err(|e| anyhow::anyhow!("--{flag}: {e}, got '{v}'")))
        .transpose()
}

/// Parses `--split`.
fn parse_split(text: &str) -> anyhow::Result<Split> {
    let usage = || {
        anyhow::anyhow!(
            "--split: expected random:TRAIN,VALIDATION,TEST[:SEED] or time:VALIDATION_START,TEST_START, got '{text}'"
        )
    };
    let (kind, rest) = text.split_once(':').ok_or_else(usage)?;
    match kind {
        "random" => {
            let (fractions, seed) = match rest.split_once(':') {
                Some((f, s)) => (f, s.parse::<u64>().map_err(|_| usage())?),
                None => (rest, 0),
            };
            let f: Vec<f64> = fractions
                .split(',')
                .map(|x| x.trim().parse::<f64>())
                .collect::<Result<_, _>>()
                .map_err(|_| usage())?;
            let [train, validation, test] = f[..] else {
                return Err(usage());
            };
            Ok(Split::Random {
                seed,
                train,
                validation,
                test,
            })
        }
        "time" => {
            let (v, t) = rest.split_once(',').ok_or_else(usage)?;
            Ok(Split::Time {
                validation_start: parse_timestamp(v.trim())
                    .map_err(|e| anyhow::anyhow!("--split: {e}"))?,
                test_start: parse_timestamp(t.trim())
                    .map_err(|e| anyhow::anyhow!("--split: {e}"))?,
            })
        }
        _ => Err(usage()),
    }
}

fn request_object(request: &Option<String>) -> Vec<serde_json::Map<String, serde_json::Value>> {
    match request.as_deref().map(parse_entry) {
        Some(serde_json::Value::Object(map)) => vec![map],
        _ => Vec::new(),
    }
}

pub async fn run(command: FvCommand, config: &Config, url: Option<&str>) -> anyhow::Result<()> {
    if let FvCommand::Delete {
        name,
        version,
        yes: false,
    } = &command
        && !confirm(&format!(
            "Delete feature view '{name}' version {version} and its training datasets?"
        ))?
    {
        bail!("not deleted");
    }
    let client = crate::client::open(config, url).await?;
    let result = run_on(command, &client).await;
    let closed = client.close().await;
    result?;
    Ok(closed?)
}

async fn run_on(command: FvCommand, client: &Client) -> anyhow::Result<()> {
    match command {
        FvCommand::Apply { file } => print_json(&client.apply_view(&read_view(&file)?).await?),
        FvCommand::List => print_json(&client.list_views().await?),
        FvCommand::Describe { name, version } => {
            print_json(&client.describe_view(&name, version).await?)
        }
        FvCommand::Delete { name, version, .. } => {
            client.delete_view(&name, version).await?;
            eprintln!("deleted feature view {name} version {version}");
            Ok(())
        }
        FvCommand::TrainingData {
            name,
            version,
            start,
            end,
            split,
            strict,
            as_known_at,
            spine,
            description,
            memory_budget_mb,
        } => {
            let request = TrainingDatasetRequest {
                start: time("start", &start)?,
                end: time("end", &end)?,
                split: split
                    .as_deref()
                    .map(parse_split)
                    .transpose()?
                    .unwrap_or_default(),
                strict,
                as_known_at,
                description,
            };
            let spine = match spine {
                Some(path) => Some(Spine {
                    name: path
                        .file_name()
                        .map(|n| n.to_string_lossy().to_string())
                        .unwrap_or_default(),
                    format: file_format(&path, None)?,
                    bytes: Bytes::from(
                        std::fs::read(&path)
                            .with_context(|| format!("cannot read {}", path.display()))?,
                    ),
                }),
                None => None,
            };
            let tuning = memory_budget_mb.map(|mb| JoinTuning {
                memory_budget: mb << 20,
            });
            let data = TrainingData {
                request,
                spine,
                tuning,
            };
            let bar = spinner(format!("building training data for {name}"));
            let td = client.create_training_dataset(&name, version, data).await;
            bar.finish_and_clear();
            print_json(&td?)
        }
        FvCommand::Read {
            name,
            td,
            version,
            split,
            transformed,
            format,
            output,
        } => {
            let split = SplitName::parse(&split).with_context(|| {
                format!("--split: expected train, validation or test, got '{split}'")
            })?;
            let format =
                Format::from_name(&format).with_context(|| format!("unknown format '{format}'"))?;
            let rows = client
                .read_training_dataset(&name, version, td, split, transformed)
                .await?;
            write_rows(rows, format, output.as_deref()).await
        }
        FvCommand::Get {
            name,
            entries,
            version,
            request,
            training_dataset,
        } => {
            let request = VectorRequest {
                entries: entries.iter().map(|e| parse_entry(e)).collect(),
                request: request_object(&request)
                    .into_iter()
                    .next()
                    .map(serde_json::Value::Object),
                training_dataset,
            };
            print_json(
                &client
                    .get_vectors(&name, version, &request)
                    .await?
                    .to_answer(),
            )
        }
    }
}
