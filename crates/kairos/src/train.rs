//! `kairos train`: fits a model on a feature view's training dataset (its frozen transforms
//! applied), scores it on the validation and test splits, and registers it with its metrics
//! and lineage.

use anyhow::{Context, bail};
use kairos_model::gbdt::{GbdtParams, Task};
use kairos_model::train::{Algorithm, Labelled};
use kairos_model::{Artifacts, Lineage, ModelSpec};
use kairos_store::FeatureStore;
use kairos_view::SplitName;

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
    if url.is_some() {
        bail!("kairos train works on --data-dir");
    }
    let store = FeatureStore::open(config.store.clone()).await?;
    let result = train(&store, &args).await;
    store.close().await;
    print_json(&result?)
}

async fn train(store: &FeatureStore, args: &TrainArgs) -> anyhow::Result<kairos_model::Model> {
    let view = store.describe_view(&args.feature_view, args.view_version)?;
    if !view.labels.contains(&args.label) {
        bail!(
            "'{}' is not a label of feature view {} v{} (its labels: {:?})",
            args.label,
            args.feature_view,
            view.view.version,
            view.labels
        );
    }
    let dataset = store.training_dataset(
        &args.feature_view,
        Some(view.view.version),
        args.training_dataset,
    )?;
    let root = store.describe(&view.view.spec.root.group, view.view.spec.root.version)?;
    let root = &root.group.spec;
    let split = |name: SplitName| -> anyhow::Result<Vec<arrow::record_batch::RecordBatch>> {
        if dataset.row_counts.get(&name).copied().unwrap_or(0) == 0 {
            return Ok(Vec::new());
        }
        Ok(store.read_training_dataset(&dataset, name, true)?)
    };
    let train_rows = split(SplitName::Train)?;
    let schema = train_rows
        .first()
        .map(|b| b.schema())
        .context("the training dataset's train split has no rows")?;
    // Everything but the keys, the event time and the labels is a feature.
    let features: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| {
            !root.primary_key.contains(n) && *n != root.event_time && !view.labels.contains(n)
        })
        .collect();
    let labelled = |name: SplitName, batches: &[arrow::record_batch::RecordBatch]| {
        Labelled::from_batches(name.as_str(), batches, &features, &args.label)
    };
    let train = labelled(SplitName::Train, &train_rows)?;
    let validation = labelled(SplitName::Validation, &split(SplitName::Validation)?)?;
    let test = labelled(SplitName::Test, &split(SplitName::Test)?)?;
    let task = match args.task {
        TaskName::Binary => Task::Binary,
        TaskName::Regression => Task::Regression,
    };
    let algorithm = match args.algorithm {
        AlgorithmName::Gbdt => Algorithm::Gbdt(GbdtParams {
            trees: args.trees,
            learning_rate: args.learning_rate,
            max_depth: args.max_depth,
            seed: args.seed,
        }),
        AlgorithmName::Logistic => Algorithm::Logistic { c: args.c },
    };
    let bar = spinner(format!(
        "training {:?} on {} rows × {} features",
        args.algorithm,
        train.labels.len(),
        features.len()
    ));
    // Fitting is CPU work: off the async workers.
    let threshold = args.threshold;
    let trained = tokio::task::spawn_blocking(move || {
        kairos_model::train::train(
            algorithm,
            task,
            &train,
            Some(&validation),
            Some(&test),
            threshold,
        )
    })
    .await??;
    bar.finish_and_clear();
    let spec = ModelSpec {
        name: args
            .name
            .clone()
            .unwrap_or_else(|| args.feature_view.clone()),
        framework: trained.framework,
        artifact: trained.artifact_name.clone(),
        signature: trained.signature.clone(),
        description: format!(
            "{:?} on feature view {} v{}, training dataset {}",
            args.algorithm, args.feature_view, view.view.version, dataset.version
        ),
        metrics: Some(trained.evaluation.clone()),
        lineage: Lineage {
            feature_view: Some(args.feature_view.clone()),
            feature_view_version: Some(view.view.version),
            training_dataset_version: Some(dataset.version),
            transforms: Some(serde_json::to_value(&dataset.transforms)?),
            features,
            label: Some(args.label.clone()),
        },
    };
    let artifacts = Artifacts::in_data_dir(&store.config().data_dir)?;
    crate::model::store_model(store.catalog(), &artifacts, &spec, trained.artifact).await
}
