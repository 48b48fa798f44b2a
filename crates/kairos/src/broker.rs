//! `kairos broker`: a Kafka-protocol broker for development clusters and tests — librdkafka's
//! mock cluster (the one librdkafka's own test suite runs against), in a process of its own so
//! that several Kairos processes can share it over loopback. It speaks the Kafka protocol over
//! TCP and keeps everything in memory — the last 5 MiB of each partition (the mock's own
//! retention; a reader behind it fails, naming the offset): a production cluster runs Kafka.
//!
//! What a Kairos log relies on of its broker is checked by the broker conformance test
//! (`tests/it/broker.rs`), run in CI against this one. Read from librdkafka's source and not
//! relied on: its Fetch answers a `read_committed` consumer with the high watermark as the last
//! stable offset and no aborted transactions, so transactional isolation does not hold here;
//! and it has no CreateTopics, so topics are made at start (`--topic`) or on first use with
//! four partitions.

use anyhow::{Context, bail};
use rdkafka::mocking::MockCluster;

#[derive(Debug, clap::Args)]
pub struct BrokerArgs {
    /// Brokers in the cluster (each listens on a loopback port of its own).
    #[arg(long, default_value_t = 1)]
    brokers: i32,
    /// A topic to create at start, as NAME:PARTITIONS (repeatable).
    #[arg(long = "topic", value_name = "NAME:PARTITIONS")]
    topics: Vec<String>,
}

/// Starts the brokers, prints their bootstrap address as the first line of stdout (what a
/// script reads), and runs until SIGINT or SIGTERM.
pub async fn run(args: BrokerArgs) -> anyhow::Result<()> {
    let mut topics = Vec::new();
    for topic in &args.topics {
        let Some((name, partitions)) = topic.rsplit_once(':') else {
            bail!("--topic {topic}: expected NAME:PARTITIONS");
        };
        let partitions: i32 = partitions
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .with_context(|| format!("--topic {topic}: partitions must be a positive number"))?;
        topics.push((name.to_string(), partitions));
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let cluster = MockCluster::new(args.brokers).context("cannot start the mock cluster")?;
    for (name, partitions) in &topics {
        cluster
            .create_topic(name, *partitions, args.brokers.min(3))
            .with_context(|| format!("cannot create topic {name}"))?;
    }
    println!("{}", cluster.bootstrap_servers());
    eprintln!(
        "kairos broker: {} broker(s) at {} (in memory; stop with Ctrl-C)",
        args.brokers,
        cluster.bootstrap_servers()
    );
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    drop(cluster);
    Ok(())
}
