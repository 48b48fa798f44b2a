//! `kairos bench recsys`: a recommender's end-to-end latency over HTTP — user features online,
//! the user tower, ANN retrieval of `candidates` items, their rows online, the rules, the
//! ranker on every candidate left, diversity — on a synthetic catalogue, in a fresh data dir.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kairos_recommend::{RecommenderSpec, Recommenders};
use kairos_recsys::eval::EvalParams;
use kairos_store::{FeatureStore, InsertOptions, StoreConfig};
use kairos_types::{FeatureGroupSpec, Format};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::histogram;

#[derive(Debug, clap::Args)]
pub struct RecsysArgs {
    #[arg(long, default_value_t = 100_000)]
    items: usize,
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    /// Interactions per user.
    #[arg(long, default_value_t = 20)]
    per_user: usize,
    /// Candidates retrieved, filtered and ranked per request.
    #[arg(long, default_value_t = 500)]
    candidates: usize,
    /// Requests measured, one at a time, after 200 of warm-up.
    #[arg(long, default_value_t = 2_000)]
    requests: usize,
    /// Two-tower training epochs (the latency does not depend on them).
    #[arg(long, default_value_t = 2)]
    epochs: usize,
}

/// The stages a response times (`stages` in its JSON, `<stage>_ms`).
const STAGES: [&str; 7] = [
    "user_features",
    "user_vector",
    "retrieval",
    "item_features",
    "filters",
    "ranking",
    "selection",
];

/// Taste clusters: a user interacts with items of their cluster.
const CLUSTERS: usize = 20;

const GROUPS: [&str; 3] = [
    r#"name = "bench_users"
primary_key = ["user_id"]
event_time = "ts"
columns = [
  { name = "user_id", type = "int64" },
  { name = "ts", type = "timestamp" },
  { name = "age", type = "int64" },
  { name = "segment", type = "string" },
]"#,
    r#"name = "bench_items"
primary_key = ["item_id"]
event_time = "ts"
columns = [
  { name = "item_id", type = "int64" },
  { name = "ts", type = "timestamp" },
  { name = "genres", type = "string" },
  { name = "year", type = "int64" },
  { name = "in_stock", type = "bool" },
  { name = "min_age", type = "int64" },
]"#,
    r#"name = "bench_interactions"
primary_key = ["user_id", "item_id"]
event_time = "ts"
columns = [
  { name = "user_id", type = "int64" },
  { name = "item_id", type = "int64" },
  { name = "ts", type = "timestamp" },
]"#,
];

fn spec(candidates: usize) -> anyhow::Result<RecommenderSpec> {
    let text = format!(
        r#"
name = "bench"
candidates = {candidates}
k = 10
[users]
group = "bench_users"
traits = ["segment"]
age = "age"
[items]
group = "bench_items"
categories = "genres"
year = "year"
embeddings = "bench_item_embeddings"
[interactions]
group = "bench_interactions"
user = "user_id"
item = "item_id"
[[filters]]
name = "seen"
already_interacted = true
[[filters]]
name = "sold_out"
keep = "in_stock = true"
[[filters]]
name = "age"
keep = "min_age <= user_age"
[diversity]
column = "genres"
max_per_value = 4
"#
    );
    Ok(RecommenderSpec::parse("bench", &text)?)
}

async fn insert_csv(
    store: &FeatureStore,
    group: &str,
    header: &str,
    rows: &[String],
) -> anyhow::Result<()> {
    for chunk in rows.chunks(20_000) {
        let body = format!("{header}\n{}\n", chunk.join("\n"));
        store
            .insert(
                group,
                None,
                Format::Csv,
                Bytes::from(body),
                InsertOptions::default(),
            )
            .await?;
    }
    store.wait_materialised(group, None).await?;
    Ok(())
}

async fn load(store: &FeatureStore, args: &RecsysArgs) -> anyhow::Result<()> {
    for text in GROUPS {
        let spec: FeatureGroupSpec = toml::from_str(text)?;
        store.create_group(spec).await?;
    }
    let mut rng = StdRng::seed_from_u64(7);
    let users: Vec<String> = (0..args.users)
        .map(|u| {
            format!(
                "{u},2024-01-01T00:00:00Z,{},s{}",
                rng.random_range(12..70),
                u % CLUSTERS
            )
        })
        .collect();
    insert_csv(store, "bench_users", "user_id,ts,age,segment", &users).await?;
    let items: Vec<String> = (0..args.items)
        .map(|i| {
            format!(
                "{i},2024-01-01T00:00:00Z,g{}|h{},{},{},{}",
                // Genres across the taste clusters (13 and 7 are coprime with 20), so the
                // diversity caps leave k items.
                i % 13,
                i % 7,
                1950 + i % 70,
                rng.random_bool(0.95),
                if rng.random_bool(0.1) { 18 } else { 0 }
            )
        })
        .collect();
    insert_csv(
        store,
        "bench_items",
        "item_id,ts,genres,year,in_stock,min_age",
        &items,
    )
    .await?;
    let per_cluster = args.items / CLUSTERS;
    let mut interactions = Vec::with_capacity(args.users * args.per_user);
    for u in 0..args.users {
        let mut chosen = std::collections::BTreeSet::new();
        while chosen.len() < args.per_user.min(per_cluster) {
            chosen.insert(u % CLUSTERS + CLUSTERS * rng.random_range(0..per_cluster));
        }
        for (step, item) in chosen.into_iter().enumerate() {
            let t = 1_717_200_000 + (step * 3_600 + u) as i64;
            let ts = chrono::DateTime::from_timestamp(t, 0)
                .unwrap_or_default()
                .to_rfc3339();
            interactions.push(format!("{u},{item},{ts}"));
        }
    }
    insert_csv(
        store,
        "bench_interactions",
        "user_id,item_id,ts",
        &interactions,
    )
    .await?;
    Ok(())
}

pub async fn run(args: &RecsysArgs) -> anyhow::Result<()> {
    // A data dir of its own, removed afterwards.
    let dir = std::env::temp_dir().join(format!("kairos-bench-recsys-{}", std::process::id()));
    let config = StoreConfig::with_data_dir(&dir);
    let store = FeatureStore::open(config.clone()).await?;
    let start = Instant::now();
    load(&store, args).await?;
    eprintln!(
        "catalogue: {} items, {} users, {} interactions in {:.1} s",
        args.items,
        args.users,
        args.users * args.per_user,
        start.elapsed().as_secs_f64()
    );
    let spec = spec(args.candidates)?;
    let mut params = EvalParams::default();
    params.two_tower.epochs = args.epochs;
    let trained = Instant::now();
    let report = kairos_recommend::train::train(&store, &spec, &params, |step| {
        eprintln!("  {step}: {:.1} s", trained.elapsed().as_secs_f64())
    })
    .await?;
    let recommenders = Recommenders::new(store.clone());
    recommenders.apply(spec).await?;
    recommenders.close().await;
    store.close().await;
    drop((recommenders, store));

    // The server as `kairos serve` runs it, on a loopback port.
    let store = FeatureStore::open(config).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(kairos_serve::serve(
        store,
        listener,
        Default::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let client = reqwest::Client::new();
    let ready = Instant::now();
    while client
        .get(format!("{url}/v1/recommenders/bench"))
        .send()
        .await
        .map_or(true, |r| !r.status().is_success())
    {
        anyhow::ensure!(
            ready.elapsed() < Duration::from_secs(120),
            "the server did not load the recommender"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut rng = StdRng::seed_from_u64(11);
    let mut latency = histogram();
    let mut server_side = histogram();
    let mut returned = 0usize;
    let mut stages: Vec<(&str, hdrhistogram::Histogram<u64>)> =
        STAGES.iter().map(|&stage| (stage, histogram())).collect();
    for n in 0..200 + args.requests {
        let user = rng.random_range(0..args.users);
        let body = format!(r#"{{"user_id": {user}, "k": 10}}"#);
        let t = Instant::now();
        let response = client
            .post(format!("{url}/v1/recommenders/bench/recommend"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        let status = response.status();
        let answer: serde_json::Value = response.json().await?;
        let took = t.elapsed();
        anyhow::ensure!(status.is_success(), "request failed: {answer}");
        if n >= 200 {
            latency.record(took.as_nanos() as u64)?;
            let ms = answer["took_ms"].as_f64().unwrap_or(0.0);
            server_side.record((ms * 1e6) as u64)?;
            returned += answer["items"].as_array().map_or(0, Vec::len);
            for (stage, histogram) in &mut stages {
                let ms = answer["stages"][format!("{stage}_ms")]
                    .as_f64()
                    .unwrap_or(0.0);
                histogram.record((ms * 1e6) as u64)?;
            }
        }
    }
    let _ = stop.send(());
    server.await??;
    let _ = std::fs::remove_dir_all(&dir);
    let ms = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1e6;
    println!(
        "trained in {:.1} s (towers and ranker on {} interactions), {} candidates per request",
        report.seconds, report.interactions, args.candidates
    );
    println!(
        "over HTTP, one request at a time ({} requests): p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        args.requests,
        ms(&latency, 0.5),
        ms(&latency, 0.99),
        ms(&latency, 0.999),
        latency.max() as f64 / 1e6
    );
    println!(
        "in the server (took_ms): p50 {:.2} ms, p99 {:.2} ms; {:.1} items per answer",
        ms(&server_side, 0.5),
        ms(&server_side, 0.99),
        returned as f64 / args.requests as f64
    );
    for (stage, histogram) in &stages {
        println!(
            "  {stage:<14} p50 {:.2} ms, p99 {:.2} ms",
            ms(histogram, 0.5),
            ms(histogram, 0.99)
        );
    }
    Ok(())
}
