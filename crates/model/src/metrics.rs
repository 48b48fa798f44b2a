//! Evaluation metrics of a model on a labelled split: for a binary classifier ROC-AUC, PR-AUC
//! (average precision), log loss and precision/recall at a threshold; for a regressor RMSE, MAE
//! and R². Definitions follow scikit-learn's `roc_auc_score`, `average_precision_score`,
//! `log_loss`, `precision_score`, `recall_score`, `mean_squared_error`, `mean_absolute_error`
//! and `r2_score`, ties included.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    #[error("{labels} labels but {predictions} predictions")]
    LengthMismatch { labels: usize, predictions: usize },
    #[error("no rows to evaluate")]
    Empty,
    #[error("row {row}: {what}")]
    BadValue { row: usize, what: String },
}

/// How a binary classifier does on a split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BinaryMetrics {
    pub rows: u64,
    pub positives: u64,
    /// Area under the ROC curve; `None` when the split holds one class only.
    pub roc_auc: Option<f64>,
    /// Average precision (the area under the precision-recall curve, as a step function);
    /// `None` without positives.
    pub pr_auc: Option<f64>,
    /// Mean cross-entropy, probabilities clipped to [1e-15, 1 - 1e-15].
    pub log_loss: f64,
    /// The score from which a row is predicted positive.
    pub threshold: f64,
    /// Of the rows predicted positive, the share that are (0 when none is predicted positive).
    pub precision: f64,
    /// Of the positive rows, the share predicted positive (0 without positives).
    pub recall: f64,
}

/// How a regressor does on a split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RegressionMetrics {
    pub rows: u64,
    pub rmse: f64,
    pub mae: f64,
    /// Coefficient of determination; `None` when the labels are all equal.
    pub r2: Option<f64>,
}

fn check_lengths(labels: usize, predictions: usize) -> Result<(), MetricsError> {
    if labels != predictions {
        return Err(MetricsError::LengthMismatch {
            labels,
            predictions,
        });
    }
    if labels == 0 {
        return Err(MetricsError::Empty);
    }
    Ok(())
}

/// Scores `probabilities` (of the positive class) against `labels`, predicting positive from
/// `threshold` up.
pub fn binary(
    labels: &[bool],
    probabilities: &[f64],
    threshold: f64,
) -> Result<BinaryMetrics, MetricsError> {
    check_lengths(labels.len(), probabilities.len())?;
    if let Some(row) = probabilities.iter().position(|p| !(0.0..=1.0).contains(p)) {
        return Err(MetricsError::BadValue {
            row,
            what: format!("probability {} is not in [0, 1]", probabilities[row]),
        });
    }
    let n = labels.len();
    let positives = labels.iter().filter(|l| **l).count();
    let negatives = n - positives;

    // Rows by descending score; equal scores form one step of both curves.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| probabilities[b].total_cmp(&probabilities[a]));
    let (mut tp, mut fp) = (0usize, 0usize);
    let (mut auc_twice, mut ap) = (0.0, 0.0);
    let mut i = 0;
    while i < n {
        let score = probabilities[order[i]];
        let (tp_before, fp_before) = (tp, fp);
        while i < n && probabilities[order[i]] == score {
            if labels[order[i]] {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        // Trapezoid under the ROC step (ties are a diagonal).
        auc_twice += (fp - fp_before) as f64 * (tp + tp_before) as f64;
        // Average precision: recall gained times the precision at this threshold.
        if tp > tp_before {
            ap += (tp - tp_before) as f64 * tp as f64 / (tp + fp) as f64;
        }
    }
    let roc_auc = (positives > 0 && negatives > 0)
        .then(|| auc_twice / 2.0 / (positives as f64 * negatives as f64));
    let pr_auc = (positives > 0).then(|| ap / positives as f64);

    const EPS: f64 = 1e-15;
    let log_loss = labels
        .iter()
        .zip(probabilities)
        .map(|(&y, &p)| {
            let p = p.clamp(EPS, 1.0 - EPS);
            -(if y { p.ln() } else { (1.0 - p).ln() })
        })
        .sum::<f64>()
        / n as f64;

    let predicted: Vec<bool> = probabilities.iter().map(|p| *p >= threshold).collect();
    let true_pos = labels
        .iter()
        .zip(&predicted)
        .filter(|(y, p)| **y && **p)
        .count();
    let predicted_pos = predicted.iter().filter(|p| **p).count();
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    Ok(BinaryMetrics {
        rows: n as u64,
        positives: positives as u64,
        roc_auc,
        pr_auc,
        log_loss,
        threshold,
        precision: ratio(true_pos, predicted_pos),
        recall: ratio(true_pos, positives),
    })
}

/// Scores `predictions` against `labels`.
pub fn regression(labels: &[f64], predictions: &[f64]) -> Result<RegressionMetrics, MetricsError> {
    check_lengths(labels.len(), predictions.len())?;
    if let Some(row) = labels
        .iter()
        .chain(predictions)
        .position(|v| !v.is_finite())
    {
        let row = row % labels.len();
        return Err(MetricsError::BadValue {
            row,
            what: "a label or prediction is not a finite number".into(),
        });
    }
    let n = labels.len() as f64;
    let (mut squared, mut absolute) = (0.0, 0.0);
    for (y, p) in labels.iter().zip(predictions) {
        squared += (y - p) * (y - p);
        absolute += (y - p).abs();
    }
    let mean = labels.iter().sum::<f64>() / n;
    let total: f64 = labels.iter().map(|y| (y - mean) * (y - mean)).sum();
    Ok(RegressionMetrics {
        rows: labels.len() as u64,
        rmse: (squared / n).sqrt(),
        mae: absolute / n,
        r2: (total > 0.0).then(|| 1.0 - squared / total),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    /// The reference values come from scikit-learn 1.9.1 on the same data:
    /// `roc_auc_score(y, p)`, `average_precision_score(y, p)`, `log_loss(y, p)`, and
    /// `precision_score` / `recall_score` of `p >= 0.5`. The scores have ties (0.35 three
    /// times, 0.65 and 0.5 twice), across classes and within one.
    #[test]
    fn binary_metrics_match_scikit_learn_ties_included() {
        let y = [1, 0, 1, 1, 0, 0, 1, 0, 0, 1, 0, 1, 0, 0, 0, 1, 1, 0, 1, 0].map(|v| v == 1);
        let p = [
            0.9, 0.1, 0.8, 0.35, 0.35, 0.2, 0.65, 0.65, 0.05, 0.7, 0.4, 0.35, 0.6, 0.15, 0.3, 0.95,
            0.5, 0.5, 0.45, 0.25,
        ];
        let m = binary(&y, &p, 0.5).unwrap();
        assert_eq!((m.rows, m.positives), (20, 9));
        close(m.roc_auc.unwrap(), 0.8484848484848484);
        close(m.pr_auc.unwrap(), 0.8317460317460317);
        close(m.log_loss, 0.4773048115602473);
        close(m.precision, 0.6666666666666666);
        close(m.recall, 0.6666666666666666);
    }

    #[test]
    fn a_split_of_one_class_has_no_auc_and_bad_input_is_refused() {
        let m = binary(&[false, false], &[0.2, 0.7], 0.5).unwrap();
        assert_eq!((m.roc_auc, m.pr_auc), (None, None));
        assert_eq!((m.precision, m.recall), (0.0, 0.0));
        assert_eq!(
            binary(&[true], &[0.2, 0.3], 0.5),
            Err(MetricsError::LengthMismatch {
                labels: 1,
                predictions: 2
            })
        );
        assert!(matches!(
            binary(&[true, false], &[0.2, 1.5], 0.5),
            Err(MetricsError::BadValue { row: 1, .. })
        ));
        assert_eq!(binary(&[], &[], 0.5), Err(MetricsError::Empty));
    }

    /// scikit-learn 1.9.1: `sqrt(mean_squared_error)`, `mean_absolute_error`, `r2_score`.
    #[test]
    fn regression_metrics_match_scikit_learn() {
        let y = [3.0, -0.5, 2.0, 7.0, 4.2];
        let p = [2.5, 0.0, 2.0, 8.0, 3.9];
        let m = regression(&y, &p).unwrap();
        close(m.rmse, 0.5639148871948674);
        close(m.mae, 0.4600000000000001);
        close(m.r2.unwrap(), 0.9480256276150627);
        assert_eq!(regression(&[1.0, 1.0], &[1.0, 2.0]).unwrap().r2, None);
        assert!(regression(&[1.0, f64::NAN], &[1.0, 2.0]).is_err());
    }
}
