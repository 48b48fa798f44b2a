//! The card-fraud application end to end, on a store in this process: the example's definitions
//! (`examples/fraud/`) applied, a generated history written and streamed through the window
//! pipelines, point-in-time training data, a GBDT trained, registered and deployed, and a live
//! period replayed through the deployment over HTTP ([`replay`]) while labels arrive late.
//! [`quality`] scores the model and its ablations on a time-ordered held-out period;
//! [`evaluate`] computes the same features on a CSV nobody here wrote, through a [`mapping`].
//!
//! `kairos demo fraud` drives these steps and draws them; the end-to-end test runs them small.

pub mod drift;
pub mod evaluate;
pub mod mapping;
pub mod quality;
pub mod replay;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use kairos_deploy::Deployments;
use kairos_deploy::training::{self, TrainRequest};
use kairos_model::{DeploymentSpec, Model};
use kairos_pipeline::{PipelineStatus, Pipelines};
use kairos_store::{FeatureStore, InsertOptions};
use kairos_stream::PipelineSpec;
use kairos_stream::spec::{Duration as WindowDuration, SourceSpec};
use kairos_types::FeatureGroupSpec;
use kairos_view::{FeatureViewSpec, Split, TrainingDataset, TrainingDatasetRequest};

use crate::generator::{Card, Drift, GenConfig, Generated, Label, Transaction, generate};

/// The example's definitions, compiled in so the demo runs from any folder.
pub mod definitions {
    pub const TRANSACTIONS: &str = include_str!("../../../../examples/fraud/transactions.toml");
    pub const CARD_PROFILES: &str = include_str!("../../../../examples/fraud/card_profiles.toml");
    pub const LABELS: &str = include_str!("../../../../examples/fraud/labels.toml");
    pub const WINDOWS: [(&str, &str); 3] = [
        (
            "card_amounts_10m.toml",
            include_str!("../../../../examples/fraud/card_amounts_10m.toml"),
        ),
        (
            "card_amounts_1h.toml",
            include_str!("../../../../examples/fraud/card_amounts_1h.toml"),
        ),
        (
            "card_amounts_1d.toml",
            include_str!("../../../../examples/fraud/card_amounts_1d.toml"),
        ),
    ];
    pub const VIEW: &str = include_str!("../../../../examples/fraud/card_fraud.toml");
    pub const DEPLOYMENT: &str = include_str!("../../../../examples/fraud/deployment.toml");
    pub const MONITOR: &str = include_str!("../../../../examples/fraud/monitor.toml");
}

pub const TRANSACTIONS_GROUP: &str = "fraud_transactions";
pub const PROFILES_GROUP: &str = "fraud_card_profiles";
pub const LABELS_GROUP: &str = "fraud_labels";
pub const VIEW: &str = "fraud_payments";
pub const LABEL: &str = "is_fraud";

/// Inputs of on-demand features that are not features themselves: raw coordinates say where a
/// card lives, not whether a payment is fraud (distances and speeds are the features).
pub const INPUTS_ONLY: [&str; 4] = [
    "profile_home_latitude",
    "profile_home_longitude",
    "prev_latitude",
    "prev_longitude",
];

/// How long after a payment its label can still be missing: genuine payments settle in at most
/// four days. Training data ends this long before the cut, so it is not all frauds.
pub const LABEL_MATURITY_MICROS: i64 = 4 * DAY;

const MINUTE: i64 = 60_000_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

pub type Result<T> = std::result::Result<T, DemoError>;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Store(#[from] kairos_store::StoreError),
    #[error(transparent)]
    Deploy(#[from] kairos_deploy::DeployError),
    #[error("{0}")]
    Failed(String),
}

fn failed(what: impl std::fmt::Display) -> DemoError {
    DemoError::Failed(what.to_string())
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    pub seed: u64,
    pub cards: usize,
    pub merchants: usize,
    /// Days of history before the live period.
    pub history_days: f64,
    /// Minutes of live payments replayed through the deployment.
    pub live_minutes: i64,
    pub fraud_rate: f64,
    /// Requests per second the replay sends.
    pub rate: f64,
    pub trees: usize,
    /// The world changes this many days into the history (see [`crate::generator::Drift`]).
    pub drift: Option<DemoDrift>,
}

/// When the world changes and how much amounts move.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DemoDrift {
    pub after_days: f64,
    pub amount_scale: f64,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            seed: 7,
            cards: 20_000,
            merchants: 600,
            // Ends at noon, so the live hour is a busy one.
            history_days: 20.5,
            live_minutes: 60,
            fraud_rate: 0.005,
            rate: 100.0,
            trees: 100,
            drift: None,
        }
    }
}

/// A generated world cut into history and a live period.
#[derive(Debug)]
pub struct Scenario {
    pub config: DemoConfig,
    pub generated: Generated,
    /// Where history ends and the live period starts (µs).
    pub cut: i64,
    /// The live period's end (µs).
    pub live_end: i64,
}

impl Scenario {
    pub fn generate(config: &DemoConfig) -> Scenario {
        let gen_config = GenConfig {
            seed: config.seed,
            cards: config.cards,
            merchants: config.merchants,
            days: config.history_days + config.live_minutes as f64 / (24.0 * 60.0),
            fraud_rate: config.fraud_rate,
            ..GenConfig::default()
        };
        let gen_config = GenConfig {
            drift: config.drift.map(|d| Drift {
                at_micros: gen_config.start_micros + (d.after_days * DAY as f64) as i64,
                amount_scale: d.amount_scale,
            }),
            ..gen_config
        };
        let cut = gen_config.start_micros + (config.history_days * DAY as f64) as i64;
        Scenario {
            config: config.clone(),
            generated: generate(&gen_config),
            cut,
            live_end: cut + config.live_minutes * MINUTE,
        }
    }

    pub fn start(&self) -> i64 {
        GenConfig::default().start_micros
    }

    pub fn history(&self) -> &[Transaction] {
        let n = self
            .generated
            .transactions
            .partition_point(|t| t.ts < self.cut);
        &self.generated.transactions[..n]
    }

    pub fn live(&self) -> &[Transaction] {
        let all = &self.generated.transactions;
        let from = all.partition_point(|t| t.ts < self.cut);
        let to = all.partition_point(|t| t.ts < self.live_end);
        &all[from..to]
    }

    /// Labels known before the cut.
    pub fn known_labels(&self) -> &[Label] {
        let n = self.generated.labels.partition_point(|l| l.ts < self.cut);
        &self.generated.labels[..n]
    }

    /// Labels that arrive during the live period, in arrival order.
    pub fn live_labels(&self) -> &[Label] {
        let labels = &self.generated.labels;
        let from = labels.partition_point(|l| l.ts < self.cut);
        let to = labels.partition_point(|l| l.ts < self.live_end);
        &labels[from..to]
    }
}

fn timestamp(values: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from_iter_values(values).with_timezone("UTC"))
}

fn ts_field(name: &str) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        false,
    )
}

fn batch(fields: Vec<Field>, columns: Vec<ArrayRef>) -> RecordBatch {
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("columns match")
}

/// Payments as the example's transactions group holds them.
pub fn transactions_batch(rows: &[Transaction]) -> RecordBatch {
    batch(
        vec![
            Field::new("cc_num", DataType::Int64, false),
            ts_field("ts"),
            Field::new("tx_id", DataType::Int64, false),
            Field::new("amount", DataType::Float64, false),
            Field::new("merchant_id", DataType::Int64, false),
            Field::new("category", DataType::Utf8, false),
            Field::new("latitude", DataType::Float64, false),
            Field::new("longitude", DataType::Float64, false),
        ],
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|t| t.cc_num))),
            timestamp(rows.iter().map(|t| t.ts)),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|t| t.tx_id))),
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|t| t.amount),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|t| t.merchant_id),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|t| t.category),
            )),
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|t| t.latitude),
            )),
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|t| t.longitude),
            )),
        ],
    )
}

/// Card profiles, valid from `since`.
pub fn profiles_batch(cards: &[Card], since: i64) -> RecordBatch {
    batch(
        vec![
            Field::new("cc_num", DataType::Int64, false),
            ts_field("ts"),
            Field::new("home_latitude", DataType::Float64, false),
            Field::new("home_longitude", DataType::Float64, false),
            Field::new("credit_limit", DataType::Float64, false),
        ],
        vec![
            Arc::new(Int64Array::from_iter_values(cards.iter().map(|c| c.cc_num))),
            timestamp(cards.iter().map(|_| since)),
            Arc::new(Float64Array::from_iter_values(
                cards.iter().map(|c| c.home_latitude),
            )),
            Arc::new(Float64Array::from_iter_values(
                cards.iter().map(|c| c.home_longitude),
            )),
            Arc::new(Float64Array::from_iter_values(
                cards.iter().map(|c| c.credit_limit),
            )),
        ],
    )
}

/// Label events as the example's labels group holds them.
pub fn labels_batch(rows: &[Label]) -> RecordBatch {
    batch(
        vec![
            Field::new("tx_id", DataType::Int64, false),
            ts_field("ts"),
            Field::new("cc_num", DataType::Int64, false),
            ts_field("tx_ts"),
            Field::new("is_fraud", DataType::Boolean, false),
        ],
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|l| l.tx_id))),
            timestamp(rows.iter().map(|l| l.ts)),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|l| l.cc_num))),
            timestamp(rows.iter().map(|l| l.tx_ts)),
            Arc::new(BooleanArray::from_iter(
                rows.iter().map(|l| Some(l.is_fraud)),
            )),
        ],
    )
}

fn parse_group(text: &str) -> Result<FeatureGroupSpec> {
    toml::from_str(text).map_err(|e| failed(format!("example feature group: {e}")))
}

/// The window pipelines as the demo runs them: reading the payments group as it is written
/// (the example files replay a file), checkpointing often so windows reach serving quickly.
pub fn window_pipelines() -> Result<Vec<PipelineSpec>> {
    definitions::WINDOWS
        .iter()
        .map(|(file, text)| {
            let mut spec =
                PipelineSpec::parse(file, text).map_err(kairos_store::StoreError::from)?;
            spec.source = SourceSpec::FeatureGroup {
                name: TRANSACTIONS_GROUP.into(),
                version: None,
            };
            spec.checkpoint_interval = Some(WindowDuration::parse("200ms").map_err(failed)?);
            Ok(spec)
        })
        .collect()
}

/// Creates the example's feature groups and view, and applies and starts its window pipelines.
pub async fn apply_definitions(store: &FeatureStore, pipelines: &Pipelines) -> Result<()> {
    for text in [
        definitions::TRANSACTIONS,
        definitions::CARD_PROFILES,
        definitions::LABELS,
    ] {
        store.create_group(parse_group(text)?).await?;
    }
    for spec in window_pipelines()? {
        pipelines.deploy(spec).await?;
    }
    let view: FeatureViewSpec = toml::from_str(definitions::VIEW)
        .map_err(|e| failed(format!("example feature view: {e}")))?;
    store.apply_view(view).await?;
    Ok(())
}

/// Rows per insert when loading history.
const LOAD_BATCH: usize = 50_000;

/// Writes the history: card profiles, payments (which the window pipelines read as they are
/// written) and the labels known before the cut.
pub async fn load_history(store: &FeatureStore, scenario: &Scenario) -> Result<()> {
    let options = InsertOptions::default();
    store
        .insert_batch(
            PROFILES_GROUP,
            None,
            &profiles_batch(&scenario.generated.cards, scenario.start()),
            options,
        )
        .await?;
    for chunk in scenario.history().chunks(LOAD_BATCH) {
        store
            .insert_batch(
                TRANSACTIONS_GROUP,
                None,
                &transactions_batch(chunk),
                options,
            )
            .await?;
    }
    for chunk in scenario.known_labels().chunks(LOAD_BATCH) {
        store
            .insert_batch(LABELS_GROUP, None, &labels_batch(chunk), options)
            .await?;
    }
    Ok(())
}

/// Waits until every window pipeline has read every payment written so far and its windows are
/// in the online store.
pub async fn wait_for_windows(
    store: &FeatureStore,
    pipelines: &Pipelines,
    timeout: Duration,
) -> Result<()> {
    let started = Instant::now();
    let specs = window_pipelines()?;
    loop {
        let mut statuses = Vec::new();
        for spec in &specs {
            statuses.push(pipelines.status(&spec.name).await?);
        }
        if caught_up(store, &statuses).await? {
            return Ok(());
        }
        if started.elapsed() > timeout {
            return Err(failed(format!(
                "the window pipelines did not catch up with the payments within {timeout:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether the pipelines of `statuses` have read every payment written and their windows are
/// all online.
async fn caught_up(store: &FeatureStore, statuses: &[PipelineStatus]) -> Result<bool> {
    let end = store
        .describe(TRANSACTIONS_GROUP, None)
        .await?
        .log_end_offset;
    for status in statuses {
        if let Some(error) = &status.error {
            return Err(failed(format!("pipeline {}: {error}", status.name)));
        }
        let delivered = status.committed.values().copied().max().unwrap_or(0);
        let output = store.describe(&status.output_group, None).await?;
        if delivered < end || output.online_offset != Some(output.log_end_offset) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The training data: every payment old enough for its label to be known, split by time: the
/// first two thirds train, then a sixth validation, the last sixth test (held out, later than
/// anything the model saw).
pub async fn training_data(store: &FeatureStore, scenario: &Scenario) -> Result<TrainingDataset> {
    training_data_until(store, scenario, scenario.cut - LABEL_MATURITY_MICROS).await
}

/// The training data of payments before `end`, split by time as [`training_data`] does.
pub async fn training_data_until(
    store: &FeatureStore,
    scenario: &Scenario,
    end: i64,
) -> Result<TrainingDataset> {
    let span = end - scenario.start();
    let request = TrainingDatasetRequest {
        start: None,
        end: Some(end),
        split: Split::Time {
            validation_start: end - span / 3,
            test_start: end - span / 6,
        },
        // Joined rows strictly before each payment: its own row is not its previous payment.
        strict: true,
        as_known_at: false,
        description: "card-fraud demo: payments with mature labels".into(),
    };
    Ok(store
        .create_training_dataset(VIEW, None, request, None, None)
        .await?)
}

/// The demo's training request: a GBDT on every feature but the raw coordinates, plus `exclude`.
pub fn train_request(config: &DemoConfig, name: &str, exclude: &[&str]) -> TrainRequest {
    TrainRequest {
        feature_view: VIEW.into(),
        view_version: None,
        training_dataset: None,
        label: LABEL.into(),
        features: None,
        exclude: INPUTS_ONLY
            .iter()
            .chain(exclude)
            .map(|s| s.to_string())
            .collect(),
        algorithm: training::AlgorithmName::Gbdt,
        task: training::TaskName::Binary,
        name: Some(name.into()),
        trees: config.trees,
        learning_rate: 0.1,
        max_depth: 5,
        c: 1.0,
        threshold: 0.5,
        seed: config.seed,
    }
}

/// Trains the fraud model on the latest training dataset and registers it.
pub async fn train(store: &FeatureStore, config: &DemoConfig) -> Result<Model> {
    Ok(training::train(store, &train_request(config, VIEW, &[])).await?)
}

/// Applies the example's deployment (the model's latest version), to be loaded by the server.
pub async fn deploy(store: &FeatureStore) -> Result<DeploymentSpec> {
    let spec = DeploymentSpec::parse(definitions::DEPLOYMENT)
        .map_err(|e| failed(format!("example deployment: {e}")))?;
    let deployments = Deployments::new(store.clone())?;
    deployments.apply(spec.clone()).await?;
    deployments.close().await;
    Ok(spec)
}

/// Waits until the server at `url` says it is ready (`/v2/health/ready`: its deployments are
/// loaded).
pub async fn wait_ready(url: &str, timeout: Duration) -> Result<()> {
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        let ready = client
            .get(format!("{}/v2/health/ready", url.trim_end_matches('/')))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return Ok(());
        }
        if started.elapsed() > timeout {
            return Err(failed(format!(
                "the server at {url} was not ready within {timeout:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
