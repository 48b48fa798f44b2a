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
        /// Also send each file's rows to Kafka at these brokers (`bootstrap.servers`), one JSON
        /// object per message keyed by card, in time order: topics `<prefix>card_profiles`,
        /// `<prefix>transactions`, `<prefix>labels`.
        #[arg(long)]
        kafka: Option<String>,
        #[arg(long, default_value = "fraud_")]
        topic_prefix: String,
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
            kafka,
            topic_prefix,
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
                drift: None,
            };
            let g = generate(&config);
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            let time = |micros: i64| {
                chrono::DateTime::from_timestamp_micros(micros)
                    .expect("in range")
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            };
            let start_ts = time(config.start_micros);
            let profiles = || {
                g.cards.iter().map(|c| {
                    let mut v = serde_json::to_value(c).expect("serialises");
                    v["ts"] = start_ts.clone().into();
                    v
                })
            };
            let transactions = || {
                g.transactions.iter().map(|t| {
                    let mut v = serde_json::to_value(t).expect("serialises");
                    v["ts"] = time(t.ts).into();
                    v
                })
            };
            let labels = || {
                g.labels.iter().map(|l| {
                    let mut v = serde_json::to_value(l).expect("serialises");
                    v["ts"] = time(l.ts).into();
                    v["tx_ts"] = time(l.tx_ts).into();
                    v
                })
            };
            write_lines(&out.join("merchants.jsonl"), g.merchants.iter())?;
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
            } else {
                write_lines(&out.join("card_profiles.jsonl"), profiles())?;
                write_lines(&out.join("transactions.jsonl"), transactions())?;
                write_lines(&out.join("labels.jsonl"), labels())?;
            }
            if let Some(brokers) = &kafka {
                let producer = Producer::new(brokers)?;
                for (topic, rows) in [
                    ("card_profiles", profiles().collect::<Vec<_>>()),
                    ("transactions", transactions().collect()),
                    ("labels", labels().collect()),
                ] {
                    let topic = format!("{topic_prefix}{topic}");
                    producer.send_all(&topic, &rows)?;
                    eprintln!("{} messages to Kafka topic {topic}", rows.len());
                }
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

/// A Kafka producer that sends rows and waits until the brokers have them all.
struct Producer(rdkafka::producer::BaseProducer<Deliveries>);

/// Counts messages the brokers did not take, keeping the first reason.
#[derive(Default)]
struct Deliveries {
    failed: std::sync::atomic::AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

impl rdkafka::ClientContext for Deliveries {}

impl rdkafka::producer::ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.first_error
                .lock()
                .expect("lock")
                .get_or_insert_with(|| e.to_string());
        }
    }
}

impl Producer {
    fn new(brokers: &str) -> anyhow::Result<Producer> {
        Ok(Producer(
            rdkafka::ClientConfig::new()
                .set("bootstrap.servers", brokers)
                .set("linger.ms", "5")
                .create_with_context(Deliveries::default())
                .context("cannot create a Kafka producer")?,
        ))
    }

    fn send_all(&self, topic: &str, rows: &[serde_json::Value]) -> anyhow::Result<()> {
        use rdkafka::error::{KafkaError, RDKafkaErrorCode};
        use rdkafka::producer::{BaseRecord, Producer as _};
        for row in rows {
            let payload = serde_json::to_vec(row)?;
            let key = row["cc_num"].to_string();
            loop {
                match self
                    .0
                    .send(BaseRecord::to(topic).key(&key).payload(&payload))
                {
                    Ok(()) => break,
                    // The local queue is full: let deliveries drain, then retry.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        self.0.poll(std::time::Duration::from_millis(50));
                    }
                    Err((e, _)) => anyhow::bail!("Kafka topic {topic}: {e}"),
                }
            }
            self.0.poll(std::time::Duration::ZERO);
        }
        self.0
            .flush(std::time::Duration::from_secs(60))
            .with_context(|| format!("Kafka topic {topic}: not every message was delivered"))?;
        let deliveries = self.0.context();
        let failed = deliveries.failed.load(std::sync::atomic::Ordering::Relaxed);
        anyhow::ensure!(
            failed == 0,
            "Kafka topic {topic}: {failed} messages were not delivered: {}",
            deliveries
                .first_error
                .lock()
                .expect("lock")
                .clone()
                .unwrap_or_default()
        );
        Ok(())
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
