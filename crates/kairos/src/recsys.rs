//! `kairos recsys …`: the recommender's commands.

use std::path::PathBuf;
use std::time::Instant;

use clap::Subcommand;
use kairos_recsys::eval::{EvalParams, evaluate};

#[derive(Debug, Subcommand)]
pub enum RecsysCommand {
    /// Offline evaluation on MovieLens 100K by time-ordered leave-last-out: Recall@10,
    /// Recall@50 and NDCG@10 of most-popular, matrix factorisation, the two-tower retrieval and
    /// retrieval + ranking.
    Eval(EvalArgs),
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

pub fn run(command: RecsysCommand) -> anyhow::Result<()> {
    match command {
        RecsysCommand::Eval(args) => eval(&args),
    }
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
