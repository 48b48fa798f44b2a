//! The model quality report: the fraud model and its ablations — without the on-demand
//! features, without the window features, without either — each trained on the same training
//! split and scored on the same held-out test period (the latest, after everything trained on):
//! PR-AUC, ROC-AUC and recall at a 1% false-positive rate.

use kairos_deploy::Deployments;
use kairos_deploy::training;
use kairos_model::metrics;
use kairos_model::train::Labelled;
use kairos_store::FeatureStore;
use kairos_view::{FeatureViewSpec, SplitName, TrainingDataset};
use serde::Serialize;

use super::{DemoConfig, LABEL, Result, VIEW, definitions, failed, train_request};

/// One model of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Variant {
    pub name: String,
    pub description: String,
    pub model: String,
    pub model_version: u32,
    pub features: usize,
    pub test_rows: u64,
    pub test_frauds: u64,
    pub pr_auc: Option<f64>,
    pub roc_auc: Option<f64>,
    pub recall_at_1pct_fpr: f64,
}

/// The share of positives scored above the threshold that lets through at most `fpr` of the
/// negatives: what a bank catches when it may bother 1 in 100 genuine customers.
pub fn recall_at_fpr(labels: &[bool], scores: &[f64], fpr: f64) -> f64 {
    let mut negatives: Vec<f64> = labels
        .iter()
        .zip(scores)
        .filter(|(y, _)| !**y)
        .map(|(_, s)| *s)
        .collect();
    let positives: Vec<f64> = labels
        .iter()
        .zip(scores)
        .filter(|(y, _)| **y)
        .map(|(_, s)| *s)
        .collect();
    if positives.is_empty() {
        return 0.0;
    }
    negatives.sort_by(|a, b| b.total_cmp(a));
    // Flag scores strictly above the (k+1)-th highest negative: at most k negatives flagged.
    let allowed = (fpr * negatives.len() as f64).floor() as usize;
    let threshold = negatives.get(allowed).copied().unwrap_or(f64::NEG_INFINITY);
    positives.iter().filter(|s| **s > threshold).count() as f64 / positives.len() as f64
}

/// The view's on-demand features and its window features (those joined from the window
/// pipelines' groups, and the on-demand ones computed from them), read from the definition.
fn feature_families() -> Result<(Vec<String>, Vec<String>)> {
    let view: FeatureViewSpec = toml::from_str(definitions::VIEW)
        .map_err(|e| failed(format!("example feature view: {e}")))?;
    let on_demand: Vec<String> = view.on_demand.iter().map(|f| f.name.clone()).collect();
    let mut windows: Vec<String> = view
        .join
        .iter()
        .filter(|j| j.group.starts_with("fraud_card_amounts_"))
        .flat_map(|j| j.features.clone().unwrap_or_default())
        .collect();
    for f in &view.on_demand {
        if f.inputs.iter().any(|i| windows.contains(i))
            || f.expression
                .as_deref()
                .is_some_and(|e| windows.iter().any(|w| e.contains(w.as_str())))
        {
            windows.push(f.name.clone());
        }
    }
    Ok((on_demand, windows))
}

/// Trains the ablations on `dataset` (the full model is `full`, already trained) and scores all
/// four on its test split.
pub async fn report(
    store: &FeatureStore,
    config: &DemoConfig,
    dataset: &TrainingDataset,
    full: &kairos_model::Model,
) -> Result<Vec<Variant>> {
    let (on_demand, windows) = feature_families()?;
    let both: Vec<String> = on_demand.iter().chain(&windows).cloned().collect();
    let mut models = vec![(
        "full".to_string(),
        "every feature".to_string(),
        full.clone(),
    )];
    for (name, description, exclude) in [
        ("no_on_demand", "without the on-demand features", &on_demand),
        ("no_windows", "without the window features", &windows),
        ("neither", "without either", &both),
    ] {
        let exclude: Vec<&str> = exclude.iter().map(String::as_str).collect();
        let mut request = train_request(config, &format!("{VIEW}_{name}"), &exclude);
        request.training_dataset = Some(dataset.version);
        let model = training::train(store, &request).await?;
        models.push((name.to_string(), description.to_string(), model));
    }
    let test = store
        .read_training_dataset(dataset, SplitName::Test, true)
        .await?;
    let deployments = Deployments::new(store.clone())?;
    let mut variants = Vec::new();
    for (name, description, model) in models {
        let features = &model.spec.lineage.features;
        let (labelled, scores) = score(&deployments, &model, &test).await?;
        let truth: Vec<bool> = labelled.labels.iter().map(|l| *l == 1.0).collect();
        let scored = metrics::binary(&truth, &scores, 0.5).map_err(|e| failed(e.to_string()))?;
        variants.push(Variant {
            name,
            description,
            model: model.spec.name.clone(),
            model_version: model.version,
            features: features.len(),
            test_rows: scored.rows,
            test_frauds: scored.positives,
            pr_auc: scored.pr_auc,
            roc_auc: scored.roc_auc,
            recall_at_1pct_fpr: recall_at_fpr(&truth, &scores, 0.01),
        });
    }
    deployments.close().await;
    Ok(variants)
}

/// `model`'s inputs (its lineage's features, in order) and label from `batches` (rows with the
/// model's frozen transforms applied), and its score of each row.
pub async fn score(
    deployments: &Deployments,
    model: &kairos_model::Model,
    batches: &[arrow::array::RecordBatch],
) -> Result<(Labelled, Vec<f64>)> {
    let labelled = Labelled::from_batches("rows", batches, &model.spec.lineage.features, LABEL)
        .map_err(|e| failed(e.to_string()))?;
    let (_, predictor) = deployments
        .model_predictor(&model.spec.name, Some(model.version))
        .await?;
    let scores = predictor
        .predict(&labelled.features.row_major(), labelled.features.rows)
        .map_err(|e| failed(e.to_string()))?;
    Ok((labelled, scores))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recall_at_fpr_lets_through_at_most_the_share_of_negatives() {
        // 200 negatives scored 0.0..0.199, 4 positives.
        let mut labels = vec![false; 200];
        let mut scores: Vec<f64> = (0..200).map(|i| i as f64 / 1000.0).collect();
        labels.extend([true; 4]);
        scores.extend([0.5, 0.198, 0.1985, 0.05]);
        // 1% of 200 = 2 negatives may be flagged: the threshold is the third highest, 0.197.
        assert_eq!(recall_at_fpr(&labels, &scores, 0.01), 0.75);
        assert_eq!(recall_at_fpr(&labels, &scores, 0.0), 0.25);
        assert_eq!(recall_at_fpr(&[false, false], &[0.1, 0.2], 0.01), 0.0);
    }

    #[test]
    fn the_families_come_from_the_view_definition() {
        let (on_demand, windows) = feature_families().unwrap();
        assert!(on_demand.contains(&"speed_from_prev_kmh".to_string()));
        assert!(windows.contains(&"count_10m".to_string()));
        assert!(windows.contains(&"amount_to_avg_1d".to_string()));
        assert!(!windows.contains(&"speed_from_prev_kmh".to_string()));
    }
}
