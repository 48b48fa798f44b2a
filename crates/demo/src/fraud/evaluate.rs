//! The example's features on someone else's data: a CSV mapped onto the example's groups
//! ([`super::mapping`]), streamed through the same window pipelines and joined by the same
//! view, then summarised per feature — coverage, the median for genuine and fraudulent
//! payments, and how well the feature alone ranks frauds above genuine payments (ROC-AUC).

use std::time::Duration;

use arrow::array::RecordBatch;
use kairos_model::metrics;
use kairos_pipeline::Pipelines;
use kairos_store::FeatureStore;
use kairos_types::FeatureGroupSpec;
use kairos_view::{Split, SplitName, TrainingDatasetRequest};
use serde::Serialize;

use super::mapping::{self, Mapping};
use super::{LABEL, Result, VIEW, definitions, failed};

/// One feature over the mapped data.
#[derive(Debug, Clone, Serialize)]
pub struct FeatureSummary {
    pub name: String,
    /// Rows with a value.
    pub present: usize,
    pub genuine_median: Option<f64>,
    pub fraud_median: Option<f64>,
    /// ROC-AUC of the feature as a score (0.5: no signal; below 0.5: lower means fraud).
    pub roc_auc: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub rows: usize,
    pub cards: usize,
    pub frauds: usize,
    pub window_rows: u64,
    pub features: Vec<FeatureSummary>,
}

/// Maps `csv` with `mapping` into a fresh store's example groups, runs the pipelines and the
/// view over it, and summarises every numeric feature.
pub async fn evaluate(store: &FeatureStore, mapping: &Mapping, csv: &[u8]) -> Result<Evaluation> {
    let pipelines = Pipelines::new(store.clone());
    super::apply_definitions(store, &pipelines).await?;
    let group = |text: &str| -> Result<FeatureGroupSpec> {
        toml::from_str(text).map_err(|e| failed(e.to_string()))
    };
    let groups = [
        group(definitions::TRANSACTIONS)?,
        group(definitions::CARD_PROFILES)?,
        group(definitions::LABELS)?,
    ];
    let mapped = mapping::map_csv(mapping, csv, [&groups[0], &groups[1], &groups[2]])?;
    let (rows, cards) = (mapped.rows, mapped.cards);
    mapping::load(store, mapped).await?;
    super::wait_for_windows(store, &pipelines, Duration::from_secs(600)).await?;
    let mut window_rows = 0;
    for spec in super::window_pipelines()? {
        window_rows += pipelines.status(&spec.name).await?.rows_written;
    }
    pipelines.close().await;
    let dataset = store
        .create_training_dataset(
            VIEW,
            None,
            TrainingDatasetRequest {
                start: None,
                end: None,
                split: Split::None,
                strict: true,
                as_known_at: false,
                description: "mapped external data".into(),
            },
            None,
            None,
        )
        .await?;
    let batches = store
        .read_training_dataset(&dataset, SplitName::Train, false)
        .await?;
    let labels: Vec<bool> = column(&batches, LABEL)?
        .into_iter()
        .map(|v| v == Some(1.0))
        .collect();
    let view = store.describe_view(VIEW, None)?;
    let mut features = Vec::new();
    for (name, ty) in &view.columns {
        if ty == "string" || ty == "timestamp" {
            continue;
        }
        features.push(summarise(name, &column(&batches, name)?, &labels));
    }
    Ok(Evaluation {
        rows,
        cards,
        frauds: labels.iter().filter(|l| **l).count(),
        window_rows,
        features,
    })
}

fn column(batches: &[RecordBatch], name: &str) -> Result<Vec<Option<f64>>> {
    let mut out = Vec::new();
    for b in batches {
        out.extend(kairos_model::train::as_f64(b, name).map_err(|e| failed(e.to_string()))?);
    }
    Ok(out)
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

fn summarise(name: &str, values: &[Option<f64>], labels: &[bool]) -> FeatureSummary {
    let present: Vec<(f64, bool)> = values
        .iter()
        .zip(labels)
        .filter_map(|(v, l)| v.filter(|v| v.is_finite()).map(|v| (v, *l)))
        .collect();
    let of = |fraud: bool| {
        median(
            present
                .iter()
                .filter(|(_, l)| *l == fraud)
                .map(|(v, _)| *v)
                .collect(),
        )
    };
    // The ROC-AUC depends on the order of the scores alone: scale them into [0, 1].
    let (lo, hi) = present
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (v, _)| {
            (lo.min(*v), hi.max(*v))
        });
    let scores: Vec<f64> = present
        .iter()
        .map(|(v, _)| if hi > lo { (v - lo) / (hi - lo) } else { 0.5 })
        .collect();
    let truth: Vec<bool> = present.iter().map(|(_, l)| *l).collect();
    let roc_auc = metrics::binary(&truth, &scores, 0.5)
        .ok()
        .and_then(|m| m.roc_auc);
    FeatureSummary {
        name: name.to_string(),
        present: present.len(),
        genuine_median: of(false),
        fraud_median: of(true),
        roc_auc,
    }
}
