//! The retraining loop: fresh point-in-time training data up to the labels known now, a
//! challenger trained with the champion's settings, both scored on the latest labelled
//! period (the fresh dataset's test split, which neither trained on), and the challenger
//! promoted through the deployment's hot swap only when it wins by the policy's margin.
//! Every decision, failures included, is written to the monitor's `_retraining` group.

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::TimestampMicrosecondType;
use kairos_deploy::training::{self, TrainRequest};
use kairos_deploy::{DeployError, Deployments, Result};
use kairos_model::train::Labelled;
use kairos_model::{DeploymentSpec, Model};
use kairos_offline::ReadFilter;
use kairos_store::{FeatureStore, InsertOptions};
use kairos_types::{Column, FeatureGroupSpec, FeatureType, Format};
use kairos_view::{Split, SplitName, TrainingDatasetRequest, TransformSet};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::service::read_group;
use crate::spec::{MonitorSpec, RetrainMetric, RetrainPolicy};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The challenger serves now.
    Promoted,
    /// The champion stays: the challenger did not win by the margin.
    Kept,
    /// Retraining could not finish; the champion stays.
    Failed,
}

/// One retraining: what went in, how both models scored, what was decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RetrainDecision {
    pub monitor: String,
    pub deployment: String,
    /// When it was decided, RFC 3339.
    pub at: String,
    pub trigger: String,
    pub model: String,
    pub champion_version: u32,
    pub challenger_version: Option<u32>,
    /// The fresh training dataset (view version, dataset version) and where its data ends.
    pub training_dataset: Option<(u32, u32)>,
    pub training_end: Option<String>,
    pub metric: RetrainMetric,
    pub champion_score: Option<f64>,
    pub challenger_score: Option<f64>,
    pub margin: f64,
    /// The labelled rows both were scored on, and their positives.
    pub evaluated_rows: u64,
    pub evaluated_positives: u64,
    pub outcome: Outcome,
    pub reason: String,
}

/// The group of a monitor's retraining decisions.
pub fn decisions_group(monitor: &str) -> String {
    format!("{monitor}_retraining")
}

/// Retrains as the policy says; never fails: a failure is a decision too.
pub async fn retrain(
    deployments: &Deployments,
    spec: &MonitorSpec,
    policy: &RetrainPolicy,
    trigger: &str,
) -> RetrainDecision {
    let at = chrono::Utc::now();
    let mut decision = RetrainDecision {
        monitor: spec.name.clone(),
        deployment: spec.deployment.clone(),
        at: at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        trigger: trigger.to_string(),
        model: String::new(),
        champion_version: 0,
        challenger_version: None,
        training_dataset: None,
        training_end: None,
        metric: policy.metric,
        champion_score: None,
        challenger_score: None,
        margin: policy.margin,
        evaluated_rows: 0,
        evaluated_positives: 0,
        outcome: Outcome::Failed,
        reason: String::new(),
    };
    if let Err(e) = run(deployments, spec, policy, &mut decision).await {
        decision.outcome = Outcome::Failed;
        decision.reason = e.to_string();
    }
    tracing::info!(
        monitor = %spec.name,
        outcome = ?decision.outcome,
        champion = decision.champion_version,
        challenger = ?decision.challenger_version,
        reason = %decision.reason,
        "retraining decided"
    );
    if let Err(e) = record(deployments.store(), &decision, at.timestamp_micros()).await {
        tracing::warn!(monitor = %spec.name, error = %e, "cannot record the retraining decision");
    }
    crate::telemetry::retraining(&spec.name, decision.outcome);
    decision
}

async fn run(
    deployments: &Deployments,
    spec: &MonitorSpec,
    policy: &RetrainPolicy,
    decision: &mut RetrainDecision,
) -> Result<()> {
    let store = deployments.store();
    let live = deployments.get(&spec.deployment)?;
    let champion = live.model.clone();
    decision.model = champion.spec.name.clone();
    decision.champion_version = champion.version;
    let lineage = &champion.spec.lineage;
    let request: TrainRequest = lineage
        .training
        .clone()
        .ok_or_else(|| {
            DeployError::BadRequest(format!(
                "model {} v{} was not trained by kairos train: its settings are unknown",
                champion.spec.name, champion.version
            ))
        })
        .and_then(|v| serde_json::from_value(v).map_err(DeployError::internal))?;
    let (Some(view), Some(view_version), Some(dataset_version)) = (
        &lineage.feature_view,
        lineage.feature_view_version,
        lineage.training_dataset_version,
    ) else {
        return Err(DeployError::BadRequest(format!(
            "model {} v{} has no training dataset in its lineage",
            champion.spec.name, champion.version
        )));
    };
    let labels = spec
        .labels
        .as_ref()
        .ok_or_else(|| DeployError::BadRequest("retraining needs the monitor's labels".into()))?;

    // Fresh data: the champion's dataset definition, ending a label maturity before the
    // latest label known (labels of later events may still come), split by time so that the
    // last evaluation window is the latest labelled period.
    let latest_label = latest_event_time(store, &labels.group).await?;
    let end = latest_label - policy.label_maturity.micros();
    let window = policy.evaluation_window.micros();
    let old = store.training_dataset(view, Some(view_version), Some(dataset_version))?;
    let fresh = store
        .create_training_dataset(
            view,
            Some(view_version),
            TrainingDatasetRequest {
                start: None,
                end: Some(end),
                split: Split::Time {
                    validation_start: end - 2 * window,
                    test_start: end - window,
                },
                strict: old.strict,
                as_known_at: old.as_known_at,
                description: format!("retraining by monitor {} ({})", spec.name, decision.trigger),
            },
            None,
            None,
        )
        .await?;
    decision.training_dataset = Some((fresh.view_version, fresh.version));
    decision.training_end = fresh.end.clone();

    let challenger_request = TrainRequest {
        view_version: Some(fresh.view_version),
        training_dataset: Some(fresh.version),
        features: Some(lineage.features.clone()),
        exclude: Vec::new(),
        name: Some(champion.spec.name.clone()),
        ..request
    };
    let challenger = training::train(store, &challenger_request).await?;
    decision.challenger_version = Some(challenger.version);

    // Both on the fresh test split: the latest labelled period, each through its own frozen
    // transforms.
    let champion_score = score(deployments, &champion, &fresh, policy.metric).await?;
    let challenger_score = score(deployments, &challenger, &fresh, policy.metric).await?;
    decision.evaluated_rows = champion_score.1;
    decision.evaluated_positives = champion_score.2;
    decision.champion_score = champion_score.0;
    decision.challenger_score = challenger_score.0;
    let (Some(old_score), Some(new_score)) = (champion_score.0, challenger_score.0) else {
        decision.outcome = Outcome::Kept;
        decision.reason = "the latest labelled period has a single class: no comparison".into();
        return Ok(());
    };
    if new_score < old_score + policy.margin {
        decision.outcome = Outcome::Kept;
        decision.reason = format!(
            "the challenger's {} {new_score:.4} does not beat the champion's {old_score:.4} by {}",
            metric_name(policy.metric),
            policy.margin
        );
        return Ok(());
    }
    let current = live.deployment.spec.clone();
    deployments
        .apply(DeploymentSpec {
            model_version: Some(challenger.version),
            ..current
        })
        .await?;
    decision.outcome = Outcome::Promoted;
    decision.reason = format!(
        "the challenger's {} {new_score:.4} beats the champion's {old_score:.4} by {:.4} ≥ {}",
        metric_name(policy.metric),
        new_score - old_score,
        policy.margin
    );
    Ok(())
}

fn metric_name(metric: RetrainMetric) -> &'static str {
    match metric {
        RetrainMetric::PrAuc => "PR-AUC",
        RetrainMetric::RocAuc => "ROC-AUC",
    }
}

/// A model's metric on `dataset`'s test split, with the rows and positives scored.
async fn score(
    deployments: &Deployments,
    model: &Model,
    dataset: &kairos_view::TrainingDataset,
    metric: RetrainMetric,
) -> Result<(Option<f64>, u64, u64)> {
    let lineage = &model.spec.lineage;
    let transforms: TransformSet = match &lineage.transforms {
        Some(t) => serde_json::from_value(t.clone()).map_err(DeployError::internal)?,
        None => TransformSet::default(),
    };
    let label = lineage.label.clone().unwrap_or_default();
    let batches: Vec<RecordBatch> = deployments
        .store()
        .read_training_dataset_with(dataset, SplitName::Test, &transforms)
        .await?;
    let labelled = Labelled::from_batches("test", &batches, &lineage.features, &label)
        .map_err(|e| DeployError::BadRequest(e.to_string()))?;
    let (_, predictor) = deployments
        .model_predictor(&model.spec.name, Some(model.version))
        .await?;
    let scores = tokio::task::spawn_blocking(move || {
        let scores = predictor.predict(&labelled.features.row_major(), labelled.features.rows);
        (labelled, scores)
    })
    .await
    .map_err(DeployError::internal)?;
    let (labelled, scores) = scores;
    let scores = scores.map_err(|e| DeployError::Internal(e.to_string()))?;
    let labels: Vec<bool> = labelled.labels.iter().map(|l| *l >= 0.5).collect();
    let m = kairos_model::metrics::binary(&labels, &scores, 0.5)
        .map_err(|e| DeployError::BadRequest(e.to_string()))?;
    let value = match metric {
        RetrainMetric::PrAuc => m.pr_auc,
        RetrainMetric::RocAuc => m.roc_auc,
    };
    Ok((value, m.rows, m.positives))
}

/// The greatest event time in a group's offline table.
async fn latest_event_time(store: &FeatureStore, group: &str) -> Result<i64> {
    let spec = store.group(group, None)?.spec;
    let batches = read_group(store, group, ReadFilter::default()).await?;
    batches
        .iter()
        .filter_map(|b| {
            let times = b
                .column_by_name(&spec.event_time)?
                .as_primitive::<TimestampMicrosecondType>();
            arrow::compute::max(times)
        })
        .max()
        .ok_or_else(|| DeployError::BadRequest(format!("label group {group} holds no labels yet")))
}

pub(crate) async fn ensure_decisions_group(store: &FeatureStore, monitor: &str) -> Result<()> {
    let name = decisions_group(monitor);
    if store.group(&name, None).is_ok() {
        return Ok(());
    }
    let spec = FeatureGroupSpec {
        name,
        description: format!("Every retraining decision of monitor {monitor}"),
        columns: vec![
            Column {
                name: "decided_at".into(),
                ty: FeatureType::Timestamp,
                nullable: false,
                description: None,
            },
            Column {
                name: "outcome".into(),
                ty: FeatureType::String,
                nullable: false,
                description: None,
            },
            Column {
                name: "decision".into(),
                ty: FeatureType::String,
                nullable: false,
                description: Some("the whole decision, as JSON".into()),
            },
        ],
        primary_key: vec!["decided_at".into()],
        event_time: "decided_at".into(),
        online: false,
        ttl_seconds: None,
        vector_index: None,
        expectations: Vec::new(),
    };
    store.create_group(spec).await?;
    Ok(())
}

async fn record(store: &FeatureStore, decision: &RetrainDecision, at: i64) -> Result<()> {
    let line = serde_json::json!({
        "decided_at": crate::service::precise(at),
        "outcome": decision.outcome,
        "decision": serde_json::to_string(decision).map_err(DeployError::internal)?,
    });
    store
        .insert(
            &decisions_group(&decision.monitor),
            None,
            Format::JsonLines,
            format!("{line}\n").into(),
            InsertOptions::default(),
        )
        .await?;
    Ok(())
}

/// Every decision of a monitor, oldest first.
pub(crate) async fn decisions(store: &FeatureStore, monitor: &str) -> Result<Vec<RetrainDecision>> {
    let batches = read_group(store, &decisions_group(monitor), ReadFilter::default()).await?;
    let mut decisions = Vec::new();
    for batch in &batches {
        let column = batch
            .column_by_name("decision")
            .expect("decision column")
            .as_string::<i32>();
        for text in column.iter().flatten() {
            decisions.push(serde_json::from_str(text).map_err(DeployError::internal)?);
        }
    }
    decisions.sort_by(|a: &RetrainDecision, b| a.at.cmp(&b.at));
    Ok(decisions)
}
