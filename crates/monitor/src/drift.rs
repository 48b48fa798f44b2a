//! Drift of one column, and of a dataset, between a reference sample and a current one, with
//! Evidently's defaults: a numerical column is judged by the Kolmogorov–Smirnov p-value when
//! the reference holds at most 1,000 rows and by the normed Wasserstein distance above that; a
//! categorical column by the chi-squared p-value, then by the Jensen–Shannon distance. Every
//! statistic is computed either way (the report shows them all); the method decides.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::stats::{self, Binned, CategoryCounts, Sorted};

/// A statistic that can decide whether a column drifted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Kolmogorov–Smirnov p-value (numerical): drift at or below the threshold.
    Ks,
    /// Wasserstein distance over the reference's standard deviation (numerical): drift at or
    /// above the threshold.
    Wasserstein,
    /// Population stability index (both kinds): drift at or above the threshold.
    Psi,
    /// Jensen–Shannon distance (both kinds): drift at or above the threshold.
    JensenShannon,
    /// Chi-squared p-value (categorical): drift at or below the threshold.
    ChiSquared,
}

impl Method {
    /// Whether small scores (p-values) mean drift.
    pub fn is_p_value(self) -> bool {
        matches!(self, Method::Ks | Method::ChiSquared)
    }

    pub fn name(self) -> &'static str {
        match self {
            Method::Ks => "ks",
            Method::Wasserstein => "wasserstein",
            Method::Psi => "psi",
            Method::JensenShannon => "jensen_shannon",
            Method::ChiSquared => "chi_squared",
        }
    }
}

/// How drift is decided. Every field has Evidently's default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DriftOptions {
    /// References of at most this many rows are judged by a test's p-value, larger ones by a
    /// distance (a test on many rows finds every tiny difference significant).
    pub small_reference_rows: usize,
    /// The method for every numerical column, instead of the choice by reference size.
    pub numerical_method: Option<Method>,
    /// The method for every categorical column, instead of the choice by reference size.
    pub categorical_method: Option<Method>,
    pub ks_p_value: f64,
    pub chi_squared_p_value: f64,
    pub wasserstein: f64,
    pub jensen_shannon: f64,
    pub psi: f64,
    /// Equal-width bins of a numerical column for PSI, Jensen–Shannon and the report.
    pub bins: usize,
    /// The dataset drifted when at least this share of its columns did.
    pub dataset_drift_share: f64,
}

impl Default for DriftOptions {
    fn default() -> Self {
        Self {
            small_reference_rows: 1000,
            numerical_method: None,
            categorical_method: None,
            ks_p_value: 0.05,
            chi_squared_p_value: 0.05,
            wasserstein: 0.1,
            jensen_shannon: 0.1,
            psi: 0.1,
            bins: 30,
            dataset_drift_share: 0.5,
        }
    }
}

impl DriftOptions {
    pub fn threshold(&self, method: Method) -> f64 {
        match method {
            Method::Ks => self.ks_p_value,
            Method::ChiSquared => self.chi_squared_p_value,
            Method::Wasserstein => self.wasserstein,
            Method::JensenShannon => self.jensen_shannon,
            Method::Psi => self.psi,
        }
    }

    /// Checks what a definition set: thresholds in range, methods fit for their kind.
    pub fn validate(&self) -> Result<(), String> {
        for (name, p) in [
            ("ks_p_value", self.ks_p_value),
            ("chi_squared_p_value", self.chi_squared_p_value),
            ("dataset_drift_share", self.dataset_drift_share),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{name} must be within [0, 1], not {p}"));
            }
        }
        for (name, t) in [
            ("wasserstein", self.wasserstein),
            ("jensen_shannon", self.jensen_shannon),
            ("psi", self.psi),
        ] {
            if !(t.is_finite() && t >= 0.0) {
                return Err(format!("{name} must be a number ≥ 0, not {t}"));
            }
        }
        if self.bins == 0 {
            return Err("bins must be at least 1".into());
        }
        if let Some(m) = self.numerical_method
            && m == Method::ChiSquared
        {
            return Err("numerical_method chi_squared is for categorical columns".into());
        }
        if let Some(m) = self.categorical_method
            && matches!(m, Method::Ks | Method::Wasserstein)
        {
            return Err(format!(
                "categorical_method {} is for numerical columns",
                m.name()
            ));
        }
        Ok(())
    }
}

/// A column's two samples.
#[derive(Debug, Clone)]
pub enum Samples<'a> {
    Numerical {
        reference: &'a [f64],
        current: &'a [f64],
    },
    Categorical {
        reference: &'a [String],
        current: &'a [String],
    },
}

/// Every statistic of a column; `None` where it does not apply to the column's kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statistics {
    pub ks_statistic: Option<f64>,
    pub ks_p_value: Option<f64>,
    /// Wasserstein distance over the reference's standard deviation (at least 0.001).
    pub wasserstein: Option<f64>,
    pub chi_squared_p_value: Option<f64>,
    pub jensen_shannon: f64,
    pub psi: f64,
}

impl Statistics {
    pub fn get(&self, method: Method) -> Option<f64> {
        match method {
            Method::Ks => self.ks_p_value,
            Method::Wasserstein => self.wasserstein,
            Method::ChiSquared => self.chi_squared_p_value,
            Method::JensenShannon => Some(self.jensen_shannon),
            Method::Psi => Some(self.psi),
        }
    }
}

/// How one column drifted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnDrift {
    pub column: String,
    pub kind: ColumnKind,
    pub reference_rows: u64,
    pub current_rows: u64,
    pub method: Method,
    pub score: f64,
    pub threshold: f64,
    pub drifted: bool,
    pub statistics: Statistics,
    /// The two distributions over the same bins or categories, for the report.
    pub bins: Distribution,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnKind {
    Numerical,
    Categorical,
}

/// Shares of each sample per bin (numerical) or category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    pub labels: Vec<String>,
    pub edges: Option<Vec<f64>>,
    pub reference: Vec<f64>,
    pub current: Vec<f64>,
}

impl From<Binned> for Distribution {
    fn from(b: Binned) -> Self {
        Self {
            labels: b.labels,
            edges: b.edges,
            reference: b.reference,
            current: b.current,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DriftError {
    #[error("column {column}: the {side} sample has no values")]
    Empty { column: String, side: &'static str },
    #[error("column {column}: method {method} does not apply to a {kind} column")]
    Method {
        column: String,
        method: &'static str,
        kind: &'static str,
    },
}

/// Drift of one column.
pub fn column_drift(
    column: &str,
    samples: Samples<'_>,
    options: &DriftOptions,
) -> Result<ColumnDrift, DriftError> {
    let empty = |side| DriftError::Empty {
        column: column.to_string(),
        side,
    };
    let (kind, reference_rows, current_rows, statistics, bins) = match samples {
        Samples::Numerical { reference, current } => {
            let reference = Sorted::new(reference.to_vec());
            let current = Sorted::new(current.to_vec());
            if reference.is_empty() {
                return Err(empty("reference"));
            }
            if current.is_empty() {
                return Err(empty("current"));
            }
            let ks = stats::ks_2samp(&reference, &current);
            let wasserstein = stats::wasserstein(&reference, &current) / reference.std().max(0.001);
            let binned = stats::binned_numerical(&reference, &current, options.bins);
            let statistics = Statistics {
                ks_statistic: Some(ks.statistic),
                ks_p_value: Some(ks.p_value),
                wasserstein: Some(wasserstein),
                chi_squared_p_value: None,
                jensen_shannon: stats::jensen_shannon(&binned.reference, &binned.current),
                psi: stats::psi(&binned.reference, &binned.current),
            };
            (
                ColumnKind::Numerical,
                reference.len() as u64,
                current.len() as u64,
                statistics,
                binned,
            )
        }
        Samples::Categorical { reference, current } => {
            let counts = CategoryCounts::new(
                reference.iter().map(String::as_str),
                current.iter().map(String::as_str),
            );
            if counts.reference_rows() == 0 {
                return Err(empty("reference"));
            }
            if counts.current_rows() == 0 {
                return Err(empty("current"));
            }
            let binned = counts.binned();
            let statistics = Statistics {
                ks_statistic: None,
                ks_p_value: None,
                wasserstein: None,
                chi_squared_p_value: Some(stats::chi_squared(&counts).p_value),
                jensen_shannon: stats::jensen_shannon(&binned.reference, &binned.current),
                psi: stats::psi(&binned.reference, &binned.current),
            };
            (
                ColumnKind::Categorical,
                counts.reference_rows(),
                counts.current_rows(),
                statistics,
                binned,
            )
        }
    };
    let small = reference_rows as usize <= options.small_reference_rows;
    let method = match kind {
        ColumnKind::Numerical => options.numerical_method.unwrap_or(if small {
            Method::Ks
        } else {
            Method::Wasserstein
        }),
        ColumnKind::Categorical => options.categorical_method.unwrap_or(if small {
            Method::ChiSquared
        } else {
            Method::JensenShannon
        }),
    };
    let score = statistics.get(method).ok_or_else(|| DriftError::Method {
        column: column.to_string(),
        method: method.name(),
        kind: match kind {
            ColumnKind::Numerical => "numerical",
            ColumnKind::Categorical => "categorical",
        },
    })?;
    let threshold = options.threshold(method);
    let drifted = if method.is_p_value() {
        score <= threshold
    } else {
        score >= threshold
    };
    Ok(ColumnDrift {
        column: column.to_string(),
        kind,
        reference_rows,
        current_rows,
        method,
        score,
        threshold,
        drifted,
        statistics,
        bins: bins.into(),
    })
}

/// Drift of a dataset: each column's, and whether enough of them drifted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetDrift {
    pub columns: Vec<ColumnDrift>,
    pub drifted_columns: usize,
    pub share: f64,
    pub drifted: bool,
}

/// Drift of every column, the columns computed in parallel.
pub fn dataset_drift(
    columns: Vec<(String, Samples<'_>)>,
    options: &DriftOptions,
) -> Result<DatasetDrift, DriftError> {
    let columns = columns
        .into_par_iter()
        .map(|(name, samples)| column_drift(&name, samples, options))
        .collect::<Result<Vec<_>, _>>()?;
    let drifted_columns = columns.iter().filter(|c| c.drifted).count();
    let share = if columns.is_empty() {
        0.0
    } else {
        drifted_columns as f64 / columns.len() as f64
    };
    Ok(DatasetDrift {
        drifted: !columns.is_empty() && share >= options.dataset_drift_share,
        columns,
        drifted_columns,
        share,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal_like(n: usize, shift: f64) -> Vec<f64> {
        // A deterministic bell-ish shape: sums of three uniform steps.
        (0..n)
            .map(|i| {
                let u = |k: usize| ((i * k * 7919) % 1000) as f64 / 1000.0;
                u(1) + u(3) + u(7) + shift
            })
            .collect()
    }

    #[test]
    fn small_references_are_judged_by_the_ks_p_value_large_ones_by_wasserstein() {
        let options = DriftOptions::default();
        let (r, c) = (normal_like(500, 0.0), normal_like(500, 0.5));
        let small = column_drift(
            "x",
            Samples::Numerical {
                reference: &r,
                current: &c,
            },
            &options,
        )
        .unwrap();
        assert_eq!(small.method, Method::Ks);
        assert!(small.drifted, "{small:?}");
        let (r, c) = (normal_like(5000, 0.0), normal_like(5000, 0.01));
        let large = column_drift(
            "x",
            Samples::Numerical {
                reference: &r,
                current: &c,
            },
            &options,
        )
        .unwrap();
        assert_eq!(large.method, Method::Wasserstein);
        assert!(
            !large.drifted,
            "a shift of 1% of a std is not drift: {large:?}"
        );
    }

    #[test]
    fn the_dataset_drifts_when_the_share_is_reached() {
        let same = normal_like(400, 0.0);
        let moved = normal_like(400, 1.0);
        let options = DriftOptions {
            dataset_drift_share: 0.5,
            ..Default::default()
        };
        let columns = || {
            vec![
                (
                    "a".to_string(),
                    Samples::Numerical {
                        reference: &same,
                        current: &moved,
                    },
                ),
                (
                    "b".to_string(),
                    Samples::Numerical {
                        reference: &same,
                        current: &same,
                    },
                ),
            ]
        };
        let drift = dataset_drift(columns(), &options).unwrap();
        assert_eq!(drift.drifted_columns, 1);
        assert!(drift.drifted);
        let stricter = DriftOptions {
            dataset_drift_share: 0.75,
            ..options
        };
        assert!(!dataset_drift(columns(), &stricter).unwrap().drifted);
    }

    #[test]
    fn an_empty_sample_is_named() {
        let err = column_drift(
            "amount",
            Samples::Numerical {
                reference: &[1.0],
                current: &[f64::NAN],
            },
            &DriftOptions::default(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "column amount: the current sample has no values"
        );
    }
}
