//! Online feature-vector reads over HTTP: a view whose root key is looked up in 3 joined groups
//! (5 float64 features each), with 2 on-demand features on a request value.

use std::sync::Arc;

use kairos_types::{Column, FeatureGroupSpec, FeatureType};
use rand::Rng;
use reqwest::Method;

use super::{bench_spec, closed_loop, create_and_fill, print_report};
use crate::remote::Remote;

const VIEW: &str = "bench_vectors";
const FEATURES: usize = 5;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, default_value = "http://127.0.0.1:7070")]
    url: String,
    /// Entities in each group.
    #[arg(long, default_value_t = 100_000)]
    keys: usize,
    /// Entities per request.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Seconds to measure, after one second of warm-up.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Use the groups and view as they are.
    #[arg(long)]
    no_setup: bool,
}

async fn setup(remote: &Remote, keys: usize) -> anyhow::Result<()> {
    // The root holds only the request value: nothing of it is read from the store.
    let root = bench_spec("bench_events", 0);
    let root = FeatureGroupSpec {
        columns: [
            root.columns,
            vec![Column::new("amount", FeatureType::Float64)],
        ]
        .concat(),
        ..root
    };
    remote
        .json(
            remote
                .request(Method::POST, "/v1/feature-groups")
                .json(&root),
        )
        .await?;
    for g in 1..=3 {
        create_and_fill(remote, &bench_spec(&format!("bench_g{g}"), FEATURES), keys).await?;
    }
    let view = serde_json::json!({
        "name": VIEW,
        "root": {"group": "bench_events", "features": ["amount"], "request": ["amount"]},
        "join": (1..=3).map(|g| serde_json::json!({"group": format!("bench_g{g}"), "prefix": format!("g{g}_")})).collect::<Vec<_>>(),
        "on_demand": [
            {"name": "amount_ratio", "expression": "amount / (g1_f0 + 1)"},
            {"name": "log_g2", "function": "log1p", "inputs": ["g2_f1"]}
        ]
    });
    remote
        .json(
            remote
                .request(Method::POST, "/v1/feature-views")
                .json(&view),
        )
        .await?;
    Ok(())
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let remote = Remote::new(&args.url);
    if !args.no_setup {
        setup(&remote, args.keys).await?;
    }
    let (keys, batch) = (args.keys, args.batch);
    let path = format!("/v1/feature-views/{VIEW}/vectors");
    let make = move |remote: &Remote| {
        let mut rng = rand::rng();
        let entries: Vec<usize> = (0..batch).map(|_| rng.random_range(0..keys)).collect();
        let amount = rng.random_range(1.0..500.0);
        remote
            .request(Method::POST, &path)
            .json(&serde_json::json!({"entries": entries, "request": {"amount": amount}}))
    };
    let report = closed_loop(
        &remote,
        Arc::new(make),
        args.batch,
        args.concurrency,
        args.seconds,
    )
    .await?;
    print_report(&report)
}
