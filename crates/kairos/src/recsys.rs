//! `kairos recsys …`: the recommender's commands.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Subcommand;
use kairos_recommend::{RecommenderSpec, Recommenders};
use kairos_recsys::eval::{EvalParams, evaluate};
use kairos_store::{FeatureStore, InsertOptions};
use kairos_types::{FeatureGroupSpec, Format};

use crate::config::Config;
use crate::fg::print_json;

#[derive(Debug, Subcommand)]
pub enum RecsysCommand {
    /// Offline evaluation on MovieLens 100K by time-ordered leave-last-out: Recall@10,
    /// Recall@50 and NDCG@10 of most-popular, matrix factorisation, the two-tower retrieval and
    /// retrieval + ranking.
    Eval(EvalArgs),
    /// Trains a recommender's models on the store (training data through a feature view),
    /// registers them, writes the item embeddings to their indexed group and applies the
    /// recommender. With --movielens, MovieLens 100K is loaded into the example's groups first.
    Train(TrainArgs),
    /// Applies a recommender definition (its models trained already), on the data dir or the
    /// server at --url.
    Apply {
        /// The definition (TOML or JSON).
        file: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// The recommender's definition (TOML or JSON), e.g. examples/recsys/movielens.toml.
    file: PathBuf,
    /// Load MovieLens 100K from this folder (u.data, u.item, u.user, u.genre) into the groups
    /// movie_users, movies and movie_ratings first (skipped for groups that already exist).
    #[arg(long)]
    movielens: Option<PathBuf>,
    /// Two-tower training epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Train without applying the recommender.
    #[arg(long)]
    no_apply: bool,
}

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The folder holding u.data, u.item, u.user and u.genre.
    #[arg(long)]
    data: PathBuf,
    /// Two-tower training epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Uniform random negatives per batch, besides the in-batch ones.
    #[arg(long)]
    random_negatives: Option<usize>,
    /// Train without the logQ correction (to measure what it brings).
    #[arg(long)]
    no_logq: bool,
    /// Candidates retrieved per user for the ranker.
    #[arg(long)]
    candidates: Option<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(command: RecsysCommand, config: &Config, url: Option<&str>) -> anyhow::Result<()> {
    match command {
        RecsysCommand::Eval(args) => tokio::task::block_in_place(|| eval(&args)),
        // Training reads the offline store and writes models and embeddings in this process.
        RecsysCommand::Train(_) if url.is_some() => {
            bail!("`recsys train` trains on the data dir, not through a server: leave out --url")
        }
        RecsysCommand::Train(args) => {
            let store = FeatureStore::open(config.store.clone()).await?;
            let result = train(&store, &args).await;
            store.close().await;
            result
        }
        RecsysCommand::Apply { file } => {
            let spec = read_spec(&file)?;
            let client = crate::client::open(config, url).await?;
            let status = client.apply_recommender(&spec).await;
            client.close().await?;
            print_json(&status?)
        }
    }
}

fn read_spec(file: &std::path::Path) -> anyhow::Result<RecommenderSpec> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    Ok(RecommenderSpec::parse(&file.display().to_string(), &text)?)
}

async fn train(store: &FeatureStore, args: &TrainArgs) -> anyhow::Result<()> {
    let spec = read_spec(&args.file)?;
    if let Some(dir) = &args.movielens {
        load_movielens(store, dir).await?;
    }
    let mut params = EvalParams::default();
    if let Some(epochs) = args.epochs {
        params.two_tower.epochs = epochs;
    }
    let start = Instant::now();
    let report = kairos_recommend::train::train(store, &spec, &params, |step| {
        eprintln!("  {step}: done at {:.1} s", start.elapsed().as_secs_f64())
    })
    .await?;
    println!(
        "trained on {} interactions ({} users, {} items; {} with an unknown item left out) \
         from feature view {} v{}, training dataset {}",
        report.interactions,
        report.users,
        report.items,
        report.unknown_items,
        report.feature_view,
        report.feature_view_version,
        report.training_dataset_version
    );
    for (name, version) in &report.models {
        println!("registered {name} v{version}");
    }
    println!(
        "wrote {} item embeddings to {} (indexed) in {:.1} s",
        report.embeddings_written, spec.items.embeddings, report.seconds
    );
    if !args.no_apply {
        let status = Recommenders::new(store.clone()).apply(spec).await?;
        println!(
            "applied recommender '{}' (revision {}); `kairos serve` answers POST \
             /v1/recommenders/{}/recommend",
            status.spec.name, status.revision, status.spec.name
        );
    }
    Ok(())
}

/// MovieLens 100K into the example's three groups, each created and filled unless it exists.
async fn load_movielens(store: &FeatureStore, dir: &std::path::Path) -> anyhow::Result<()> {
    let data = kairos_recsys::movielens::load(dir)?;
    let when = |seconds: i64| {
        chrono::DateTime::from_timestamp(seconds, 0)
            .unwrap_or_default()
            .to_rfc3339()
    };
    // Users and movies are known before the first rating (1997-09-20), so every rating joins
    // them point-in-time.
    let known = when(852_076_800); // 1997-01-01
    let csv_text = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let mut users = String::from("user_id,ts,age,gender,occupation\n");
    for u in &data.users {
        let name = |t: usize| csv_text(&data.trait_values[t][u.traits[t] as usize]);
        users.push_str(&format!(
            "{},{known},{},{},{}\n",
            u.id,
            u.age.map(|a| a.to_string()).unwrap_or_default(),
            name(0),
            name(1)
        ));
    }
    let mut movies = String::from("movie_id,ts,title,genres,year,available\n");
    for m in &data.items {
        let genres: Vec<&str> = m
            .categories
            .iter()
            .map(|&c| data.category_names[c as usize].as_str())
            .collect();
        movies.push_str(&format!(
            "{},{known},{},{},{},true\n",
            m.id,
            csv_text(&m.title),
            csv_text(&genres.join("|")),
            m.year.map(|y| y.to_string()).unwrap_or_default()
        ));
    }
    let mut ratings = String::from("user_id,movie_id,ts,rating\n");
    for r in &data.interactions {
        ratings.push_str(&format!(
            "{},{},{},\n",
            data.users[r.user as usize].id,
            data.items[r.item as usize].id,
            when(r.time)
        ));
    }
    for (file, rows) in [
        (
            include_str!("../../../examples/recsys/movie_users.toml"),
            users,
        ),
        (include_str!("../../../examples/recsys/movies.toml"), movies),
        (
            include_str!("../../../examples/recsys/movie_ratings.toml"),
            ratings,
        ),
    ] {
        let spec: FeatureGroupSpec = toml::from_str(file)?;
        if store
            .catalog()
            .get_feature_group(&spec.name, None)?
            .is_some()
        {
            eprintln!("  feature group {} exists: not loaded again", spec.name);
            continue;
        }
        let name = spec.name.clone();
        store.create_group(spec).await?;
        // In slices under the insert size limit.
        let mut lines = rows.lines();
        let header = lines.next().unwrap_or_default().to_owned();
        let body: Vec<&str> = lines.collect();
        let mut written = 0;
        for chunk in body.chunks(20_000) {
            let text = format!("{header}\n{}\n", chunk.join("\n"));
            let ack = store
                .insert(
                    &name,
                    None,
                    Format::Csv,
                    Bytes::from(text),
                    InsertOptions::default(),
                )
                .await?;
            written += ack.rows;
        }
        eprintln!("  feature group {name}: {written} rows");
    }
    Ok(())
}

fn eval(args: &EvalArgs) -> anyhow::Result<()> {
    let dataset = kairos_recsys::movielens::load(&args.data)?;
    let mut params = EvalParams::default();
    if let Some(epochs) = args.epochs {
        params.two_tower.epochs = epochs;
    }
    if let Some(n) = args.random_negatives {
        params.two_tower.random_negatives = n;
    }
    if let Some(n) = args.candidates {
        params.candidates = n;
    }
    params.two_tower.logq_correction = !args.no_logq;
    let start = Instant::now();
    let report = evaluate(&dataset, &params, |step| {
        eprintln!("  {step}: done at {:.1} s", start.elapsed().as_secs_f64())
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "MovieLens: {} users, {} items, {} training interactions; leave-last-out over {} users",
        report.users,
        report.items,
        report.train_interactions,
        report.results.first().map_or(0, |r| r.metrics.users)
    );
    let popular = report
        .results
        .first()
        .map_or(f64::NAN, |r| r.metrics.recall_at_10);
    println!(
        "\n  {:<34} {:>9} {:>9} {:>9} {:>12} {:>8}",
        "model", "Recall@10", "Recall@50", "NDCG@10", "vs popular", "seconds"
    );
    for result in &report.results {
        let m = &result.metrics;
        println!(
            "  {:<34} {:>9.4} {:>9.4} {:>9.4} {:>11.2}× {:>8.1}",
            result.model,
            m.recall_at_10,
            m.recall_at_50,
            m.ndcg_at_10,
            m.recall_at_10 / popular,
            result.seconds
        );
    }
    Ok(())
}
