//! A model's quality over a window once late labels arrive: the labelled predictions'
//! precision, recall, PR-AUC and calibration, and a concept-drift detector run over their
//! errors in the order they were served.

use kairos_model::metrics;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::detectors::{DetectorSpec, Signal};

/// One logged prediction whose label is known.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Labelled {
    /// When it was served (microseconds).
    pub at: i64,
    pub score: f64,
    pub label: bool,
}

/// Bins of predicted probability for calibration.
pub const CALIBRATION_BINS: usize = 10;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WindowQuality {
    pub labelled: u64,
    pub positives: u64,
    pub threshold: f64,
    pub precision: f64,
    pub recall: f64,
    /// `None` without positives.
    pub pr_auc: Option<f64>,
    /// `None` with one class only.
    pub roc_auc: Option<f64>,
    /// The mean predicted probability and the observed positive rate: equal when calibrated.
    pub mean_score: f64,
    pub positive_rate: f64,
    /// Expected calibration error over ten equal-width bins of probability: the rows'
    /// weighted mean of |mean score − positive rate| per bin.
    pub calibration_error: f64,
    /// Per bin with rows: (mean score, positive rate, rows), for the report's reliability plot.
    pub calibration: Vec<(f64, f64, u64)>,
    /// Where in the window's errors (time order) the detector signalled drift.
    pub detector: String,
    pub detector_drifts: u64,
    /// Time of the first drift signal (microseconds).
    pub first_drift_at: Option<i64>,
}

/// The quality of `rows` (any order) at `threshold`; `None` when there are none.
pub fn window_quality(
    rows: &mut [Labelled],
    threshold: f64,
    detector: &DetectorSpec,
) -> Option<WindowQuality> {
    if rows.is_empty() {
        return None;
    }
    rows.sort_by_key(|r| r.at);
    let labels: Vec<bool> = rows.iter().map(|r| r.label).collect();
    let scores: Vec<f64> = rows.iter().map(|r| r.score.clamp(0.0, 1.0)).collect();
    let m = metrics::binary(&labels, &scores, threshold).ok()?;
    let n = rows.len() as f64;
    let mut bins = vec![(0.0f64, 0u64, 0u64); CALIBRATION_BINS];
    for (score, label) in scores.iter().zip(&labels) {
        let b = ((score * CALIBRATION_BINS as f64) as usize).min(CALIBRATION_BINS - 1);
        bins[b].0 += score;
        bins[b].1 += u64::from(*label);
        bins[b].2 += 1;
    }
    let calibration: Vec<(f64, f64, u64)> = bins
        .iter()
        .filter(|b| b.2 > 0)
        .map(|(sum, pos, rows)| (sum / *rows as f64, *pos as f64 / *rows as f64, *rows))
        .collect();
    let calibration_error = calibration
        .iter()
        .map(|(score, rate, rows)| (score - rate).abs() * *rows as f64 / n)
        .sum();
    let mut detector_state = detector.build();
    let (mut drifts, mut first_drift_at) = (0, None);
    for (row, score) in rows.iter().zip(&scores) {
        let error = f64::from((*score >= threshold) != row.label);
        if detector_state.update(error) == Signal::Drift {
            drifts += 1;
            first_drift_at.get_or_insert(row.at);
        }
    }
    Some(WindowQuality {
        labelled: m.rows,
        positives: m.positives,
        threshold,
        precision: m.precision,
        recall: m.recall,
        pr_auc: m.pr_auc,
        roc_auc: m.roc_auc,
        mean_score: scores.iter().sum::<f64>() / n,
        positive_rate: m.positives as f64 / n,
        calibration_error,
        calibration,
        detector: detector.name().to_string(),
        detector_drifts: drifts,
        first_drift_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_calibrated_model_has_no_calibration_error_and_errors_that_grow_are_detected() {
        // Scores of exactly the positive rate of their bin: calibrated.
        let mut rows = Vec::new();
        for i in 0..1000 {
            let score = 0.25;
            rows.push(Labelled {
                at: i,
                score,
                label: i % 4 == 0,
            });
        }
        let q = window_quality(&mut rows, 0.5, &DetectorSpec::Ddm(Default::default())).unwrap();
        assert!(q.calibration_error < 1e-12, "{q:?}");
        assert_eq!(q.positives, 250);
        assert_eq!(q.recall, 0.0);
        assert_eq!(q.detector_drifts, 0);

        // A model right 95% of the time, then wrong half the time.
        let mut rows: Vec<Labelled> = (0..4000)
            .map(|i| {
                let wrong = if i < 2000 { i % 20 == 0 } else { i % 2 == 0 };
                let label = i % 3 == 0;
                Labelled {
                    at: i,
                    score: if label != wrong { 0.9 } else { 0.1 },
                    label,
                }
            })
            .collect();
        let q = window_quality(&mut rows, 0.5, &DetectorSpec::Ddm(Default::default())).unwrap();
        assert!(q.detector_drifts >= 1);
        let at = q.first_drift_at.unwrap();
        assert!((2000..2200).contains(&at), "detected at {at}");
    }
}
