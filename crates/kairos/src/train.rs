//! `kairos train`: fits a model on a feature view's training dataset (its frozen transforms
//! applied), scores it on the validation and test splits, and registers it with its metrics
//! and lineage — in process, or in the server at `--url` (`POST /v1/train`).

use kairos_deploy::training::{self, TrainRequest};

use crate::config::Config;
use crate::fg::{print_json, spinner};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum AlgorithmName {
    Gbdt,
    Logistic,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TaskName {
    Binary,
    Regression,
}

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// The feature view whose training dataset to train on.
    #[arg(long)]
    feature_view: String,
    /// The view's version (the latest when left out).
    #[arg(long)]
    view_version: Option<u32>,
    /// The training dataset's version (the view version's latest when left out).
    #[arg(long)]
    training_dataset: Option<u32>,
    /// The label column: one of the view's labels.
    #[arg(long)]
    label: String,
    /// The features to train on, comma-separated (every feature but timestamps when left out).
    #[arg(long, value_delimiter = ',')]
    features: Option<Vec<String>>,
    /// Features left out of the default set, comma-separated.
    #[arg(long, value_delimiter = ',')]
    exclude: Vec<String>,
    #[arg(long, value_enum, default_value = "gbdt")]
    algorithm: AlgorithmName,
    /// A binary classifier (labels 0/1 or booleans) or a regressor (gbdt only).
    #[arg(long, value_enum, default_value = "binary")]
    task: TaskName,
    /// The model's name in the registry (the feature view's name when left out).
    #[arg(long)]
    name: Option<String>,
    /// GBDT: number of trees.
    #[arg(long, default_value_t = 100)]
    trees: usize,
    /// GBDT: shrinkage of each tree.
    #[arg(long, default_value_t = 0.1)]
    learning_rate: f32,
    /// GBDT: greatest tree depth.
    #[arg(long, default_value_t = 5)]
    max_depth: usize,
    /// Logistic regression: inverse L2 penalty, as scikit-learn's C.
    #[arg(long, default_value_t = 1.0)]
    c: f64,
    /// The probability from which the precision and recall count a row as positive.
    #[arg(long, default_value_t = 0.5)]
    threshold: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub async fn run(args: TrainArgs, config: &Config, url: Option<&str>) -> anyhow::Result<()> {
    let request = TrainRequest {
        feature_view: args.feature_view,
        view_version: args.view_version,
        training_dataset: args.training_dataset,
        label: args.label,
        features: args.features,
        exclude: args.exclude,
        algorithm: match args.algorithm {
            AlgorithmName::Gbdt => training::AlgorithmName::Gbdt,
            AlgorithmName::Logistic => training::AlgorithmName::Logistic,
        },
        task: match args.task {
            TaskName::Binary => training::TaskName::Binary,
            TaskName::Regression => training::TaskName::Regression,
        },
        name: args.name,
        trees: args.trees,
        learning_rate: args.learning_rate,
        max_depth: args.max_depth,
        c: args.c,
        threshold: args.threshold,
        seed: args.seed,
    };
    let bar = spinner(format!(
        "training {:?} on feature view {}",
        args.algorithm, request.feature_view
    ));
    let client = crate::client::open(config, url).await?;
    let model = client.train(&request).await;
    bar.finish_and_clear();
    client.close().await?;
    print_json(&model?)
}
