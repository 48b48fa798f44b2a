//! Logistic regression: a binary classifier with an L2 penalty on the weights (not the
//! intercept), fitted by Newton's method to the optimum scikit-learn's `LogisticRegression`
//! finds for the same `C` — the test holds its coefficients.

use serde::{Deserialize, Serialize};

use crate::gbdt::Features;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LogisticError {
    #[error("row {row}: label {value} is not 0 or 1")]
    BadLabel { row: usize, value: f64 },
    #[error("row {row}, feature {col}: missing or not finite (impute before training)")]
    MissingValue { row: usize, col: usize },
    #[error("{labels} labels for {rows} rows")]
    LengthMismatch { labels: usize, rows: usize },
    #[error("no rows to train on")]
    Empty,
    #[error("C must be a positive number, got {0}")]
    BadPenalty(f64),
    #[error("did not converge in {0} Newton steps")]
    NoConvergence(usize),
}

/// A fitted model: p = σ(w·x + b).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Logistic {
    pub weights: Vec<f64>,
    pub intercept: f64,
}

const MAX_STEPS: usize = 100;

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

impl Logistic {
    /// Minimises ½‖w‖² + C·Σ log loss over the rows.
    pub fn train(features: &Features, labels: &[f64], c: f64) -> Result<Logistic, LogisticError> {
        let (n, d) = (features.rows, features.cols);
        if labels.len() != n {
            return Err(LogisticError::LengthMismatch {
                labels: labels.len(),
                rows: n,
            });
        }
        if n == 0 {
            return Err(LogisticError::Empty);
        }
        if !(c.is_finite() && c > 0.0) {
            return Err(LogisticError::BadPenalty(c));
        }
        for (row, &value) in labels.iter().enumerate() {
            if value != 0.0 && value != 1.0 {
                return Err(LogisticError::BadLabel { row, value });
            }
        }
        if let Some(i) = features.data.iter().position(|v| !v.is_finite()) {
            return Err(LogisticError::MissingValue {
                row: i % n,
                col: i / n,
            });
        }
        let x = |row: usize, col: usize| features.data[col * n + row];
        // θ = (w, b); the last coordinate is the intercept.
        let mut theta = vec![0.0; d + 1];
        for _ in 0..MAX_STEPS {
            let mut gradient = vec![0.0; d + 1];
            let mut hessian = vec![vec![0.0; d + 1]; d + 1];
            for (j, g) in gradient.iter_mut().enumerate().take(d) {
                *g = theta[j];
                hessian[j][j] = 1.0;
            }
            let mut xi = vec![1.0; d + 1];
            for (row, &y) in labels.iter().enumerate() {
                for (col, v) in xi.iter_mut().enumerate().take(d) {
                    *v = x(row, col);
                }
                let p = sigmoid(xi.iter().zip(&theta).map(|(a, b)| a * b).sum());
                let weight = c * p * (1.0 - p);
                for ((g, h), xa) in gradient.iter_mut().zip(&mut hessian).zip(&xi) {
                    *g += c * (p - y) * xa;
                    for (h, xb) in h.iter_mut().zip(&xi) {
                        *h += weight * xa * xb;
                    }
                }
            }
            let step = solve(hessian, gradient);
            for (t, s) in theta.iter_mut().zip(&step) {
                *t -= s;
            }
            if step.iter().map(|s| s * s).sum::<f64>().sqrt() < 1e-12 {
                let intercept = theta.pop().expect("d + 1 coordinates");
                return Ok(Logistic {
                    weights: theta,
                    intercept,
                });
            }
        }
        Err(LogisticError::NoConvergence(MAX_STEPS))
    }

    /// The probability of the positive class for every row.
    pub fn predict(&self, features: &Features) -> Vec<f64> {
        let n = features.rows;
        (0..n)
            .map(|row| {
                let z: f64 = self
                    .weights
                    .iter()
                    .enumerate()
                    .map(|(col, w)| w * features.data[col * n + row])
                    .sum();
                sigmoid(z + self.intercept)
            })
            .collect()
    }
}

/// Solves `a·x = b` for a symmetric positive-definite `a` (Gaussian elimination with partial
/// pivoting; the systems are the size of the feature count).
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .expect("a row");
        a.swap(col, pivot);
        b.swap(col, pivot);
        let (above, below) = a.split_at_mut(col + 1);
        let pivot_row = &above[col];
        for (offset, row) in below.iter_mut().enumerate() {
            let factor = row[col] / pivot_row[col];
            for (v, p) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                *v -= factor * p;
            }
            b[col + 1 + offset] -= factor * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let rest: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - rest) / a[row][row];
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 200 rows computed the same way in the scikit-learn script that gave the reference:
    /// x0 = sin(0.7 i), x1 = cos(1.3 i), x2 = (37 i mod 101) / 50 - 1, label 1 when
    /// x0 + 0.5 x1 - x2 + 0.8 sin(5.1 i) > 0 (100 positives).
    fn data() -> (Features, Vec<f64>) {
        let mut columns = vec![Vec::new(), Vec::new(), Vec::new()];
        let mut labels = Vec::new();
        for i in 0..200 {
            let f = i as f64;
            let x = [
                (f * 0.7).sin(),
                (f * 1.3).cos(),
                ((i * 37) % 101) as f64 / 50.0 - 1.0,
            ];
            labels.push(f64::from(
                x[0] + 0.5 * x[1] - x[2] + 0.8 * (f * 5.1).sin() > 0.0,
            ));
            for (c, v) in x.into_iter().enumerate() {
                columns[c].push(v);
            }
        }
        (Features::from_columns(&columns), labels)
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-6, "{a} != {b}");
    }

    /// scikit-learn 1.9.1: `LogisticRegression(C=…, tol=1e-12, max_iter=100000).fit(X, y)`.
    #[test]
    fn the_fit_is_scikit_learns_for_the_same_penalty() {
        let (x, y) = data();
        assert_eq!(y.iter().sum::<f64>(), 100.0);
        let m = Logistic::train(&x, &y, 1.0).unwrap();
        for (w, expected) in
            m.weights
                .iter()
                .zip([2.6285920774941984, 1.1370634185188553, -2.507209846702237])
        {
            close(*w, expected);
        }
        close(m.intercept, -0.0022812143641169104);
        let one = Features::from_columns(&[vec![0.2], vec![-0.4], vec![0.1]]);
        close(m.predict(&one)[0], 0.45459811766137304);

        let m = Logistic::train(&x, &y, 0.1).unwrap();
        for (w, expected) in
            m.weights
                .iter()
                .zip([1.302539571851472, 0.5328415177449121, -1.0575096462612674])
        {
            close(*w, expected);
        }
        close(m.intercept, -0.008277431260375683);
    }

    #[test]
    fn missing_values_and_bad_labels_are_refused_naming_where() {
        let (mut x, mut y) = data();
        y[3] = 0.5;
        assert_eq!(
            Logistic::train(&x, &y, 1.0),
            Err(LogisticError::BadLabel { row: 3, value: 0.5 })
        );
        y[3] = 1.0;
        x.data[200 + 17] = f64::NAN;
        assert_eq!(
            Logistic::train(&x, &y, 1.0),
            Err(LogisticError::MissingValue { row: 17, col: 1 })
        );
        assert_eq!(
            Logistic::train(&x, &y, 0.0),
            Err(LogisticError::BadPenalty(0.0))
        );
    }
}
