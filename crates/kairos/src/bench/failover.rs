//! Failover: two servers this command starts on one cluster configuration whose logs are on
//! Kafka. Each trial kills (SIGKILL) a replica that materialises some of a group's partitions,
//! writes through the survivor at once — rows of every partition, answered only once they are
//! visible online — and measures how long after the kill that answer came: the dead replica's
//! partitions served again by the survivor. A fresh replica is then started and the partitions
//! shared out again before the next trial.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::json;

use super::replicas::summary;
use super::soak::Server;
use super::{bench_batch, bench_spec, ipc_bytes};
use crate::remote::Remote;
use kairos_types::Format;

#[derive(Debug, clap::Args)]
pub struct FailoverArgs {
    /// The cluster configuration both servers start with: a shared catalog, storage and online
    /// store, and `[store.log]` on Kafka.
    #[arg(long)]
    config: std::path::PathBuf,
    /// Replicas killed, one after another.
    #[arg(long, default_value_t = 10)]
    kills: usize,
    /// Keys written after each kill (spread over the partitions by their hash).
    #[arg(long, default_value_t = 256)]
    keys: usize,
}

/// A failover slower than this is a failure, not a figure.
const GIVE_UP: Duration = Duration::from_secs(60);
/// How often a replica's hold on the partitions is looked at.
const POLL: Duration = Duration::from_millis(50);

pub async fn run(args: &FailoverArgs) -> anyhow::Result<()> {
    let config = args.config.display().to_string();
    let env = [("KAIROS_CONFIG", config.as_str())];
    let mut servers = vec![Server::start(&env)?, Server::start(&env)?];
    let group = format!("bench_failover_{}", rand::random::<u32>());
    let spec = bench_spec(&group, 10);
    let creator = Remote::new(&servers[0].url);
    creator
        .json(
            creator
                .request(Method::POST, "/v1/feature-groups")
                .json(&spec),
        )
        .await?;
    let partitions = partitions(&servers[0].url, &group).await?;

    let (mut served, mut held_again) = (Vec::new(), Vec::new());
    for kill in 0..args.kills {
        let holdings = shared_out(&servers, &group, partitions).await?;
        // Alternate between the replicas; each holds some partitions once shared out.
        let victim = kill % 2;
        let survivor = 1 - victim;
        eprintln!(
            "kill {}: replica {victim} holds partitions {:?}, replica {survivor} {:?}",
            kill + 1,
            holdings[victim],
            holdings[survivor]
        );
        let killed_at = Instant::now();
        servers[victim].kill();
        let remote = Remote::new(&servers[survivor].url);
        let first = (kill + 1) * args.keys;
        let batch = bench_batch(&spec, first..first + args.keys);
        let write = remote
            .request(
                Method::POST,
                &format!("/v1/feature-groups/{group}/rows?wait=online"),
            )
            .header("content-type", Format::ArrowIpc.content_type())
            .body(ipc_bytes(&batch)?);
        let ack = tokio::time::timeout(GIVE_UP, remote.json(write))
            .await
            .context("no answer within a minute of the kill")??;
        if ack["online_visible"] != true {
            bail!("the write through the survivor was not visible online: {ack}");
        }
        served.push(killed_at.elapsed());
        while held(&servers[survivor].url, &group).await?.len() < partitions {
            tokio::time::sleep(POLL).await;
        }
        held_again.push(killed_at.elapsed());
        eprintln!(
            "  served again after {:.2} s",
            served.last().expect("pushed").as_secs_f64()
        );
        servers[victim] = Server::start(&env)?;
    }
    let report = json!({
        "kills": args.kills,
        "keys_per_write": args.keys,
        "kill_to_write_visible_ms": summary(&mut served.clone()),
        "kill_to_all_partitions_held_ms": summary(&mut held_again),
        "each_ms": served.iter().map(|d| (d.as_secs_f64() * 1e3).round()).collect::<Vec<_>>(),
    });
    println!("{report}");
    Ok(())
}

/// Waits until every one of the `partitions` of `group` is materialised by exactly one of the
/// servers and each holds some; answers each server's partitions.
async fn shared_out(
    servers: &[Server],
    group: &str,
    partitions: usize,
) -> anyhow::Result<Vec<Vec<u32>>> {
    let started = Instant::now();
    loop {
        // A server that does not know the group yet (it follows the catalog) holds none of it.
        let mut holdings = Vec::new();
        for server in servers {
            holdings.push(held(&server.url, group).await.unwrap_or_default());
        }
        let mut all: Vec<u32> = holdings.iter().flatten().copied().collect();
        let total = all.len();
        all.sort_unstable();
        all.dedup();
        if all.len() == total && total == partitions && holdings.iter().all(|h| !h.is_empty()) {
            return Ok(holdings);
        }
        if started.elapsed() > GIVE_UP {
            bail!("the partitions of {group} were not shared out within a minute: {holdings:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn status(url: &str, group: &str) -> anyhow::Result<serde_json::Value> {
    let remote = Remote::new(url);
    remote
        .json(remote.request(Method::GET, &format!("/v1/feature-groups/{group}")))
        .await
}

/// The partitions of `group` the server at `url` materialises.
async fn held(url: &str, group: &str) -> anyhow::Result<Vec<u32>> {
    let status = status(url, group).await?;
    let partitions = status["partitions"].as_array().cloned().unwrap_or_default();
    Ok(partitions
        .iter()
        .filter(|p| p["materialised_here"] == true)
        .filter_map(|p| p["partition"].as_u64().map(|p| p as u32))
        .collect())
}

async fn partitions(url: &str, group: &str) -> anyhow::Result<usize> {
    let status = status(url, group).await?;
    match status["partitions"].as_array() {
        Some(partitions) if !partitions.is_empty() => Ok(partitions.len()),
        _ => bail!("group {group} is not on a log of several partitions: is [store.log] on Kafka?"),
    }
}
