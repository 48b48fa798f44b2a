//! Gradient-boosted decision trees, trained by `forust-ml`: pure Rust, histogram-based, with
//! missing values handled at each split. (`perpetual`, the first choice, needs a nightly
//! compiler in every stable release.) A binary classifier is trained on log loss and predicts
//! probabilities; a regressor on squared loss.

use forust_ml::GradientBooster;
use forust_ml::data::Matrix;
use forust_ml::objective::ObjectiveType;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum GbdtError {
    #[error("row {row}: label {value} is not 0 or 1")]
    BadLabel { row: usize, value: f64 },
    #[error("row {row}: label is not a finite number")]
    MissingLabel { row: usize },
    #[error("{labels} labels for {rows} rows")]
    LengthMismatch { labels: usize, rows: usize },
    #[error("no rows to train on")]
    Empty,
    #[error("gradient boosting: {0}")]
    Booster(#[from] forust_ml::errors::ForustError),
}

/// What a model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// The probability of the positive class (labels 0 and 1).
    Binary,
    /// A number.
    Regression,
}

/// Rows of numeric features stored column by column (NaN is a missing value).
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    pub data: Vec<f64>,
    pub rows: usize,
    pub cols: usize,
}

impl Features {
    /// The values row by row, as [`crate::predictor::Predictor::predict`] takes them.
    pub fn row_major(&self) -> Vec<f64> {
        let mut out = vec![0.0; self.data.len()];
        for c in 0..self.cols {
            for r in 0..self.rows {
                out[r * self.cols + c] = self.data[c * self.rows + r];
            }
        }
        out
    }

    /// From columns of equal length.
    pub fn from_columns(columns: &[Vec<f64>]) -> Features {
        let rows = columns.first().map_or(0, Vec::len);
        assert!(
            columns.iter().all(|c| c.len() == rows),
            "feature columns of one length"
        );
        Features {
            data: columns.concat(),
            rows,
            cols: columns.len(),
        }
    }

    fn matrix(&self) -> Matrix<'_, f64> {
        Matrix::new(&self.data, self.rows, self.cols)
    }
}

/// Training settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GbdtParams {
    pub trees: usize,
    pub learning_rate: f32,
    pub max_depth: usize,
    pub seed: u64,
}

impl Default for GbdtParams {
    fn default() -> Self {
        GbdtParams {
            trees: 100,
            learning_rate: 0.1,
            max_depth: 5,
            seed: 0,
        }
    }
}

/// A trained ensemble.
pub struct Gbdt {
    booster: GradientBooster,
    /// The same trees laid out for prediction.
    flat: FlatEnsemble,
    task: Task,
}

/// The booster's prediction trees laid out for prediction in batches: a ranker scores
/// hundreds of rows through hundreds of trees per request. A tree is walked a level at a time
/// for every row, the same number of steps for all (a leaf points back to itself), so the
/// rows' walks are independent and overlap instead of each ending at its own mispredicted
/// exit. The trees are summed in forust's order, so predictions are the same to the bit.
#[derive(Debug, Clone)]
struct FlatEnsemble {
    base_score: f64,
    missing: f64,
    trees: Vec<FlatTree>,
    nodes: Vec<FlatNode>,
}

#[derive(Debug, Clone, Copy)]
struct FlatTree {
    /// The root's index in `nodes`.
    root: u32,
    /// Splits from the root to the deepest leaf.
    depth: u32,
}

#[derive(Debug, Clone, Copy)]
struct FlatNode {
    /// The split value (+∞ for a leaf: every value goes left, to the leaf itself).
    threshold: f64,
    /// A leaf's weight.
    weight: f64,
    feature: u32,
    /// Children as indices into `nodes`; a leaf's are itself.
    left: u32,
    right: u32,
    missing: u32,
}

impl FlatEnsemble {
    fn new(booster: &GradientBooster) -> FlatEnsemble {
        let count = booster.prediction_iteration.unwrap_or(booster.trees.len());
        let mut trees = Vec::with_capacity(count);
        let mut nodes = Vec::new();
        for tree in &booster.trees[..count] {
            let root = nodes.len();
            let at = |child: usize| (root + child) as u32;
            nodes.extend(tree.nodes.iter().enumerate().map(|(i, n)| {
                if n.is_leaf {
                    FlatNode {
                        threshold: f64::INFINITY,
                        weight: f64::from(n.weight_value),
                        feature: 0,
                        left: at(i),
                        right: at(i),
                        missing: at(i),
                    }
                } else {
                    FlatNode {
                        threshold: n.split_value,
                        weight: 0.0,
                        feature: n.split_feature as u32,
                        left: at(n.left_child),
                        right: at(n.right_child),
                        missing: at(n.missing_node),
                    }
                }
            }));
            // Splits from the root to the deepest leaf, any path (the missing ones too).
            let mut depth = 0;
            let mut stack = vec![(0usize, 0u32)];
            while let Some((i, d)) = stack.pop() {
                let n = &tree.nodes[i];
                if n.is_leaf {
                    depth = depth.max(d);
                } else {
                    stack.extend([n.left_child, n.right_child, n.missing_node].map(|c| (c, d + 1)));
                }
            }
            trees.push(FlatTree {
                root: root as u32,
                depth,
            });
        }
        FlatEnsemble {
            base_score: booster.base_score,
            missing: booster.missing,
            trees,
            nodes,
        }
    }

    /// The raw score of every row of `features`.
    fn predict(&self, features: &Features) -> Vec<f64> {
        if self.missing.is_nan() {
            self.walk(features, |v| v.is_nan())
        } else {
            self.walk(features, |v| v == self.missing)
        }
    }

    fn walk(&self, features: &Features, is_missing: impl Fn(f64) -> bool) -> Vec<f64> {
        let rows = features.rows;
        let mut sums = vec![self.base_score; rows];
        let mut at = vec![0u32; rows];
        for tree in &self.trees {
            at.fill(tree.root);
            for _ in 0..tree.depth {
                for (row, node) in at.iter_mut().enumerate() {
                    let n = &self.nodes[*node as usize];
                    let v = features.data[n.feature as usize * rows + row];
                    *node = if is_missing(v) {
                        n.missing
                    } else if v < n.threshold {
                        n.left
                    } else {
                        n.right
                    };
                }
            }
            for (sum, &node) in sums.iter_mut().zip(&at) {
                *sum += self.nodes[node as usize].weight;
            }
        }
        sums
    }
}

impl std::fmt::Debug for Gbdt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gbdt")
            .field("task", &self.task)
            .field("trees", &self.booster.trees.len())
            .finish()
    }
}

impl Gbdt {
    /// Trains on `features` and `labels` (0/1 for a binary task). Deterministic for a seed.
    pub fn train(
        task: Task,
        features: &Features,
        labels: &[f64],
        params: GbdtParams,
    ) -> Result<Gbdt, GbdtError> {
        if labels.len() != features.rows {
            return Err(GbdtError::LengthMismatch {
                labels: labels.len(),
                rows: features.rows,
            });
        }
        if labels.is_empty() {
            return Err(GbdtError::Empty);
        }
        for (row, &value) in labels.iter().enumerate() {
            if !value.is_finite() {
                return Err(GbdtError::MissingLabel { row });
            }
            if task == Task::Binary && value != 0.0 && value != 1.0 {
                return Err(GbdtError::BadLabel { row, value });
            }
        }
        let objective = match task {
            Task::Binary => ObjectiveType::LogLoss,
            Task::Regression => ObjectiveType::SquaredLoss,
        };
        let mut booster = GradientBooster::default()
            .set_objective_type(objective)
            .set_iterations(params.trees)
            .set_learning_rate(params.learning_rate)
            .set_max_depth(params.max_depth)
            .set_seed(params.seed)
            .set_parallel(false);
        booster.fit_unweighted(&features.matrix(), labels, None)?;
        Ok(Gbdt::new(booster, task))
    }

    fn new(booster: GradientBooster, task: Task) -> Gbdt {
        Gbdt {
            flat: FlatEnsemble::new(&booster),
            booster,
            task,
        }
    }

    pub fn task(&self) -> Task {
        self.task
    }

    /// One prediction per row: a probability for a binary task, a value for a regression.
    pub fn predict(&self, features: &Features) -> Vec<f64> {
        let raw = self.flat.predict(features);
        match self.task {
            Task::Binary => raw.into_iter().map(|z| 1.0 / (1.0 + (-z).exp())).collect(),
            Task::Regression => raw,
        }
    }

    /// The artifact: the ensemble as JSON.
    pub fn to_json(&self) -> Result<Vec<u8>, GbdtError> {
        Ok(self.booster.json_dump()?.into_bytes())
    }

    pub fn from_json(bytes: &[u8], task: Task) -> Result<Gbdt, GbdtError> {
        let text = String::from_utf8_lossy(bytes);
        Ok(Gbdt::new(GradientBooster::from_json(&text)?, task))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Three features, the label a noisy linear rule; every 50th value missing.
    fn data(rows: usize, seed: u64) -> (Features, Vec<f64>, Vec<f64>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut columns: Vec<Vec<f64>> = (0..3).map(|_| Vec::with_capacity(rows)).collect();
        let (mut binary, mut numeric) = (Vec::new(), Vec::new());
        for r in 0..rows {
            let x: Vec<f64> = (0..3).map(|_| rng.random_range(-1.0..1.0)).collect();
            let signal = x[0] + 0.5 * x[1] - x[2];
            binary.push(f64::from(signal + rng.random_range(-0.3..0.3) > 0.0));
            numeric.push(3.0 * x[0] - 2.0 * x[1] + rng.random_range(-0.1..0.1));
            for (c, v) in x.into_iter().enumerate() {
                columns[c].push(if r % 50 == c { f64::NAN } else { v });
            }
        }
        (Features::from_columns(&columns), binary, numeric)
    }

    #[test]
    fn a_classifier_learns_a_noisy_rule_and_its_artifact_predicts_the_same() {
        let (train, labels, _) = data(2000, 1);
        let (test, test_labels, _) = data(600, 2);
        let model = Gbdt::train(Task::Binary, &train, &labels, GbdtParams::default()).unwrap();
        let p = model.predict(&test);
        assert!(p.iter().all(|p| (0.0..=1.0).contains(p)));
        let truth: Vec<bool> = test_labels.iter().map(|l| *l == 1.0).collect();
        let m = metrics::binary(&truth, &p, 0.5).unwrap();
        assert!(m.roc_auc.unwrap() > 0.93, "{m:?}");
        assert!(m.log_loss < 0.4, "{m:?}");

        // The flat trees answer what forust's own walk does, to the bit, missing values too.
        let forust: Vec<f64> = model
            .booster
            .predict(&test.matrix(), false)
            .into_iter()
            .map(|z| 1.0 / (1.0 + (-z).exp()))
            .collect();
        assert_eq!(p, forust);

        let again = Gbdt::from_json(&model.to_json().unwrap(), Task::Binary).unwrap();
        assert_eq!(again.predict(&test), p);
        // The same seed trains the same ensemble.
        let twin = Gbdt::train(Task::Binary, &train, &labels, GbdtParams::default()).unwrap();
        assert_eq!(twin.predict(&test), p);
    }

    #[test]
    fn a_regressor_fits_a_linear_target() {
        let (train, _, y) = data(2000, 3);
        let (test, _, test_y) = data(500, 4);
        let model = Gbdt::train(Task::Regression, &train, &y, GbdtParams::default()).unwrap();
        let predicted = model.predict(&test);
        assert_eq!(predicted, model.booster.predict(&test.matrix(), false));
        let m = metrics::regression(&test_y, &predicted).unwrap();
        // The target's spread is about 2.1; a fit explains nearly all of it.
        assert!(m.r2.unwrap() > 0.95, "{m:?}");
    }

    #[test]
    fn labels_that_are_not_0_or_1_are_refused_naming_the_row() {
        let (train, mut labels, _) = data(10, 5);
        labels[7] = 2.0;
        let e = Gbdt::train(Task::Binary, &train, &labels, GbdtParams::default()).unwrap_err();
        assert_eq!(e.to_string(), "row 7: label 2 is not 0 or 1");
        let e = Gbdt::train(Task::Binary, &train, &labels[..3], GbdtParams::default()).unwrap_err();
        assert!(matches!(
            e,
            GbdtError::LengthMismatch {
                labels: 3,
                rows: 10
            }
        ));
    }
}
