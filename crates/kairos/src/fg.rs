//! `kairos fg …`: feature-group commands, in process on the data dir or against `--url`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Subcommand;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use kairos_client::{Batches, Client, ReadFilter, Rows, Wait};
use kairos_types::export::BatchEncoder;
use kairos_types::ingest::parse_timestamp;
use kairos_types::{FeatureGroupSpec, Format};

use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum FgCommand {
    /// Create a feature group (or its next version) from a definition file (TOML or JSON).
    Create { file: PathBuf },
    /// List every version of every feature group.
    List,
    /// Show a feature group's definition and where its log and materialisers stand.
    Describe {
        name: String,
        #[arg(long)]
        version: Option<u32>,
    },
    /// Insert a file of rows (CSV with header, JSON lines, Parquet or Arrow IPC), validated whole.
    Insert {
        name: String,
        file: PathBuf,
        #[arg(long)]
        version: Option<u32>,
        /// The file's format, when its extension does not say: csv, jsonl, parquet, arrow.
        #[arg(long)]
        format: Option<String>,
        /// Return only once the online store shows the rows.
        #[arg(long)]
        wait_online: bool,
    },
    /// Read the latest rows of keys from the online store. Each ENTRY is `col=value[,col=value]`,
    /// or a bare value for single-column keys.
    Get {
        name: String,
        #[arg(required = true)]
        entries: Vec<String>,
        #[arg(long)]
        version: Option<u32>,
    },
    /// Read rows from the offline store, optionally by event time or as known at a time.
    Read {
        name: String,
        #[arg(long)]
        version: Option<u32>,
        /// Event time at or after (RFC 3339 or epoch seconds/ms).
        #[arg(long)]
        start: Option<String>,
        /// Event time before.
        #[arg(long)]
        end: Option<String>,
        /// Only rows ingested at or before this time.
        #[arg(long)]
        as_of: Option<String>,
        /// jsonl (default), csv, arrow or parquet.
        #[arg(long, default_value = "jsonl")]
        format: String,
        /// Write here instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Compare the online store with the latest row per key of the offline store.
    Check {
        name: String,
        #[arg(long)]
        version: Option<u32>,
    },
    /// Delete one version of a feature group and all its data.
    Delete {
        name: String,
        #[arg(long)]
        version: u32,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
    },
    /// Compact the offline Delta table's small files.
    Compact {
        name: String,
        #[arg(long)]
        version: Option<u32>,
    },
}

pub(crate) fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{}", serde_json::to_string_pretty(value)?) {
        // A closed pipe (`| head`) is the reader's choice, not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn read_spec(file: &Path) -> anyhow::Result<FeatureGroupSpec> {
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

pub(crate) fn spinner(message: String) -> ProgressBar {
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("template"));
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// Parses `col=value,col=value` (or a bare value) into a JSON entry.
pub(crate) fn parse_entry(entry: &str) -> serde_json::Value {
    if !entry.contains('=') {
        return serde_json::Value::String(entry.to_string());
    }
    let map = entry
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_string(),
                serde_json::Value::String(v.trim().to_string()),
            )
        })
        .collect();
    serde_json::Value::Object(map)
}

pub(crate) fn confirm(question: &str) -> anyhow::Result<bool> {
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

pub async fn run(command: FgCommand, config: &Config, url: Option<&str>) -> anyhow::Result<()> {
    if let FgCommand::Delete {
        name,
        version,
        yes: false,
    } = &command
        && !confirm(&format!(
            "Delete feature group '{name}' version {version} and all its data?"
        ))?
    {
        bail!("not deleted");
    }
    let client = crate::client::open(config, url).await?;
    let result = run_on(command, &client).await;
    // In process the command is the only writer: closing waits until both stores hold what
    // it inserted, so it leaves them whole.
    let closed = client.close().await;
    result?;
    Ok(closed?)
}

/// Writes rows read through the client in `format`, to `output` or standard output, with a
/// spinner counting them.
pub(crate) async fn write_rows(
    rows: Batches,
    format: Format,
    output: Option<&Path>,
) -> anyhow::Result<()> {
    let Batches {
        schema,
        mut batches,
    } = rows;
    let mut encoder = BatchEncoder::new(format, &schema)?;
    let mut out: Box<dyn Write> = match output {
        Some(path) => Box::new(std::io::BufWriter::new(std::fs::File::create(path)?)),
        None => Box::new(std::io::stdout().lock()),
    };
    let bar = spinner("reading".into());
    let mut rows = 0usize;
    // A closed pipe (`| head`) is the reader's choice, not an error.
    let closed = |e: &std::io::Error| e.kind() == std::io::ErrorKind::BrokenPipe;
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        rows += batch.num_rows();
        bar.set_message(format!("read {rows} rows"));
        match out.write_all(&encoder.encode(&batch)?) {
            Err(e) if closed(&e) => return Ok(()),
            written => written?,
        }
    }
    match out.write_all(&encoder.finish()?).and_then(|()| out.flush()) {
        Err(e) if closed(&e) => return Ok(()),
        written => written?,
    }
    bar.finish_and_clear();
    if output.is_some() {
        eprintln!("wrote {rows} rows");
    }
    Ok(())
}

async fn run_on(command: FgCommand, client: &Client) -> anyhow::Result<()> {
    match command {
        FgCommand::Create { file } => print_json(&client.create_group(&read_spec(&file)?).await?),
        FgCommand::List => print_json(&client.list_groups().await?),
        FgCommand::Describe { name, version } => {
            print_json(&client.describe_group(&name, version).await?)
        }
        FgCommand::Insert {
            name,
            file,
            version,
            format,
            wait_online,
        } => {
            let format = file_format(&file, format.as_deref())?;
            let bytes = Bytes::from(
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?,
            );
            let bar = spinner(format!(
                "inserting {} ({} bytes)",
                file.display(),
                bytes.len()
            ));
            let wait = if wait_online {
                Wait::Online
            } else {
                Wait::Logged
            };
            let ack = client
                .insert(&name, version, Rows { format, bytes }, wait)
                .await;
            bar.finish_and_clear();
            print_json(&ack?)
        }
        FgCommand::Get {
            name,
            entries,
            version,
        } => {
            let entries: Vec<_> = entries.iter().map(|e| parse_entry(e)).collect();
            print_json(&client.get_online(&name, version, &entries).await?)
        }
        FgCommand::Read {
            name,
            version,
            start,
            end,
            as_of,
            format,
            output,
        } => {
            let format =
                Format::from_name(&format).with_context(|| format!("unknown format '{format}'"))?;
            let time = |name: &str, v: &Option<String>| -> anyhow::Result<Option<i64>> {
                v.as_deref()
                    .map(|v| {
                        parse_timestamp(v).map_err(|e| anyhow::anyhow!("--{name}: {e}, got '{v}'"))
                    })
                    .transpose()
            };
            let filter = ReadFilter {
                start: time("start", &start)?,
                end: time("end", &end)?,
                as_of: time("as-of", &as_of)?,
            };
            let rows = client.read_offline(&name, version, filter).await?;
            write_rows(rows, format, output.as_deref()).await
        }
        FgCommand::Check { name, version } => {
            let report = client.check_group(&name, version).await?;
            print_json(&report)?;
            if !report.clean {
                bail!("online and offline stores differ");
            }
            Ok(())
        }
        FgCommand::Delete { name, version, .. } => {
            client.delete_group(&name, version).await?;
            eprintln!("deleted {name} version {version}");
            Ok(())
        }
        FgCommand::Compact { name, version } => {
            print_json(&client.compact_group(&name, version).await?)
        }
    }
}

pub(crate) fn file_format(file: &Path, format: Option<&str>) -> anyhow::Result<Format> {
    match format {
        Some(f) => Format::from_name(f).with_context(|| format!("unknown format '{f}'")),
        None => Format::from_name(&file.to_string_lossy()).with_context(|| {
            format!(
                "cannot tell the format of {} from its extension; pass --format",
                file.display()
            )
        }),
    }
}
