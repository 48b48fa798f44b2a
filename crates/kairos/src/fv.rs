//! `kairos fv …`: feature-view commands, in process on the data dir or against `--url`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Subcommand;
use kairos_store::{FeatureStore, Spine};
use kairos_types::Format;
use kairos_types::export::BatchEncoder;
use kairos_types::ingest::parse_timestamp;
use kairos_view::{FeatureViewSpec, Split, SplitName, TrainingDatasetRequest};
use reqwest::Method;

use crate::config::Config;
use crate::fg::{confirm, dispatch, file_format, parse_entry, print_json, spinner, version_query};
use crate::remote::Remote;

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
    dispatch(command, config, url, run_local, run_remote).await
}

async fn run_local(command: FvCommand, store: &FeatureStore) -> anyhow::Result<()> {
    match command {
        FvCommand::Apply { file } => print_json(&store.apply_view(read_view(&file)?).await?),
        FvCommand::List => print_json(&store.list_views()?),
        FvCommand::Describe { name, version } => print_json(&store.describe_view(&name, version)?),
        FvCommand::Delete { name, version, .. } => {
            store.delete_view(&name, version).await?;
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
            let tuning = memory_budget_mb.map(|mb| kairos_store::JoinTuning {
                memory_budget: mb << 20,
            });
            let bar = spinner(format!("building training data for {name}"));
            let td = store
                .create_training_dataset(&name, version, request, spine, tuning)
                .await;
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
            let dataset = store.training_dataset(&name, version, Some(td))?;
            let batches = store
                .read_training_dataset(&dataset, split, transformed)
                .await?;
            let mut out: Box<dyn Write> = match &output {
                Some(path) => Box::new(std::io::BufWriter::new(std::fs::File::create(path)?)),
                None => Box::new(std::io::stdout().lock()),
            };
            if let Some(first) = batches.first() {
                let mut encoder = BatchEncoder::new(format, &first.schema())?;
                for b in &batches {
                    out.write_all(&encoder.encode(b)?)?;
                }
                out.write_all(&encoder.finish()?)?;
            }
            out.flush()?;
            Ok(())
        }
        FvCommand::Get {
            name,
            entries,
            version,
            request,
            training_dataset,
        } => {
            let entries: Vec<_> = entries.iter().map(|e| parse_entry(e)).collect();
            let answer = store
                .feature_vectors_json(
                    &name,
                    version,
                    &entries,
                    &request_object(&request),
                    training_dataset,
                )
                .await?;
            print_json(&answer)
        }
    }
}

async fn run_remote(command: FvCommand, remote: &Remote) -> anyhow::Result<()> {
    match command {
        FvCommand::Apply { file } => {
            let spec = read_view(&file)?;
            print_json(
                &remote
                    .json(
                        remote
                            .request(Method::POST, "/v1/feature-views")
                            .json(&spec),
                    )
                    .await?,
            )
        }
        FvCommand::List => print_json(
            &remote
                .json(remote.request(Method::GET, "/v1/feature-views"))
                .await?,
        ),
        FvCommand::Describe { name, version } => {
            let path = format!("/v1/feature-views/{name}{}", version_query(version));
            print_json(&remote.json(remote.request(Method::GET, &path)).await?)
        }
        FvCommand::Delete { name, version, .. } => {
            let path = format!("/v1/feature-views/{name}?version={version}");
            remote.send(remote.request(Method::DELETE, &path)).await?;
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
            if memory_budget_mb.is_some() {
                bail!("--memory-budget-mb applies in process only; the server uses its own");
            }
            let mut body = serde_json::json!({
                "start": start, "end": end, "strict": strict, "as_known_at": as_known_at, "description": description,
            });
            if let Some(split) = split {
                body["split"] = serde_json::to_value(parse_split(&split)?)?;
            }
            if let Some(path) = spine {
                let format = match file_format(&path, None)? {
                    Format::Csv => "csv",
                    Format::JsonLines => "jsonl",
                    _ => bail!("--spine: over --url the spine must be CSV or JSON lines"),
                };
                let data = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                body["spine"] = serde_json::json!({"format": format, "data": data});
            }
            let path = format!(
                "/v1/feature-views/{name}/training-datasets{}",
                version_query(version)
            );
            let bar = spinner(format!("building training data for {name}"));
            let result = remote
                .json(remote.request(Method::POST, &path).json(&body))
                .await;
            bar.finish_and_clear();
            print_json(&result?)
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
            let mut query = vec![
                ("split", split),
                ("format", format),
                ("transformed", transformed.to_string()),
            ];
            if let Some(v) = version {
                query.push(("version", v.to_string()));
            }
            let request = remote
                .request(
                    Method::GET,
                    &format!("/v1/feature-views/{name}/training-datasets/{td}/data"),
                )
                .query(&query);
            let bytes = remote.bytes(request).await?;
            match output {
                Some(path) => std::fs::write(&path, &bytes)?,
                None => std::io::stdout().write_all(&bytes)?,
            }
            Ok(())
        }
        FvCommand::Get {
            name,
            entries,
            version,
            request,
            training_dataset,
        } => {
            let entries: Vec<_> = entries.iter().map(|e| parse_entry(e)).collect();
            let request = request_object(&request)
                .into_iter()
                .next()
                .map(serde_json::Value::Object);
            let path = format!("/v1/feature-views/{name}/vectors{}", version_query(version));
            let body = serde_json::json!({"entries": entries, "request": request, "training_dataset_version": training_dataset});
            print_json(
                &remote
                    .json(remote.request(Method::POST, &path).json(&body))
                    .await?,
            )
        }
    }
}
