//! `kairos gen …`: generated data sets for the examples and the demo.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use kairos_demo::{GenConfig, generate};
use serde::Serialize;

#[derive(Debug, Subcommand)]
pub enum GenCommand {
    /// A seeded history of card transactions with fraud patterns (geo-velocity, testing bursts,
    /// amount spikes, compromised merchants, card not present) and late labels: card_profiles,
    /// transactions and labels as JSON lines (timestamps in RFC 3339) or Parquet, and merchants.
    Transactions {
        /// The folder to write the four files into.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 1_000)]
        cards: usize,
        #[arg(long, default_value_t = 300)]
        merchants: usize,
        /// Days of history.
        #[arg(long, default_value_t = 7.0)]
        days: f64,
        /// The first day (RFC 3339).
        #[arg(long, default_value = "2024-05-01T00:00:00Z")]
        start: String,
        /// The share of transactions that are fraud, roughly.
        #[arg(long, default_value_t = 0.005)]
        fraud_rate: f64,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// jsonl (RFC 3339 timestamps) or parquet (UTC microsecond timestamps).
        #[arg(long, value_enum, default_value = "jsonl")]
        format: OutputFormat,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, clap::ValueEnum)]
pub enum OutputFormat {
    Jsonl,
    Parquet,
}

pub fn run(command: GenCommand) -> anyhow::Result<()> {
    match command {
        GenCommand::Transactions {
            out,
            cards,
            merchants,
            days,
            start,
            fraud_rate,
            seed,
            format,
        } => {
            let start = chrono::DateTime::parse_from_rfc3339(&start)
                .with_context(|| format!("--start: '{start}' is not an RFC 3339 time"))?;
            anyhow::ensure!(
                (0.0..0.5).contains(&fraud_rate),
                "--fraud-rate: expected a share below 0.5, got {fraud_rate}"
            );
            let config = GenConfig {
                seed,
                cards,
                merchants,
                start_micros: start.timestamp_micros(),
                days,
                fraud_rate,
            };
            let g = generate(&config);
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            let time = |micros: i64| {
                chrono::DateTime::from_timestamp_micros(micros)
                    .expect("in range")
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            };
            if format == OutputFormat::Parquet {
                use kairos_demo::fraud::{labels_batch, profiles_batch, transactions_batch};
                write_parquet(
                    &out.join("card_profiles.parquet"),
                    &profiles_batch(&g.cards, config.start_micros),
                )?;
                write_parquet(
                    &out.join("transactions.parquet"),
                    &transactions_batch(&g.transactions),
                )?;
                write_parquet(&out.join("labels.parquet"), &labels_batch(&g.labels))?;
                write_lines(&out.join("merchants.jsonl"), g.merchants.iter())?;
            } else {
                let start_ts = time(config.start_micros);
                write_lines(
                    &out.join("card_profiles.jsonl"),
                    g.cards.iter().map(|c| {
                        let mut v = serde_json::to_value(c).expect("serialises");
                        v["ts"] = start_ts.clone().into();
                        v
                    }),
                )?;
                write_lines(&out.join("merchants.jsonl"), g.merchants.iter())?;
                write_lines(
                    &out.join("transactions.jsonl"),
                    g.transactions.iter().map(|t| {
                        let mut v = serde_json::to_value(t).expect("serialises");
                        v["ts"] = time(t.ts).into();
                        v
                    }),
                )?;
                write_lines(
                    &out.join("labels.jsonl"),
                    g.labels.iter().map(|l| {
                        let mut v = serde_json::to_value(l).expect("serialises");
                        v["ts"] = time(l.ts).into();
                        v["tx_ts"] = time(l.tx_ts).into();
                        v
                    }),
                )?;
            }
            let fraud = g.transactions.iter().filter(|t| t.is_fraud).count();
            eprintln!(
                "{} cards, {} merchants, {} transactions ({fraud} fraud, {:.2}%), {} labels in {}",
                g.cards.len(),
                g.merchants.len(),
                g.transactions.len(),
                100.0 * fraud as f64 / g.transactions.len().max(1) as f64,
                g.labels.len(),
                out.display()
            );
            Ok(())
        }
    }
}

fn write_parquet(path: &Path, batch: &arrow::array::RecordBatch) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None)?;
    writer.write(batch)?;
    writer.close()?;
    Ok(())
}

fn write_lines<T: Serialize>(path: &Path, items: impl Iterator<Item = T>) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    for item in items {
        serde_json::to_writer(&mut out, &item)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}
