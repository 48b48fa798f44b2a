//! The baselines a recommender must beat: most-popular, and matrix factorisation by implicit
//! alternating least squares (Hu, Koren & Volinsky, "Collaborative Filtering for Implicit
//! Feedback Datasets", 2008).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::data::Interaction;

/// Items scored by how often they were interacted with in training.
pub fn popularity(train: &[Interaction], items: usize) -> Vec<f32> {
    let mut counts = vec![0f32; items];
    for event in train {
        counts[event.item as usize] += 1.0;
    }
    counts
}

/// Implicit ALS settings.
#[derive(Debug, Clone, Copy)]
pub struct AlsParams {
    pub factors: usize,
    pub iterations: usize,
    /// Confidence of an observed interaction is `1 + alpha`.
    pub alpha: f64,
    pub regularisation: f64,
    pub seed: u64,
}

impl Default for AlsParams {
    fn default() -> Self {
        AlsParams {
            factors: 32,
            iterations: 15,
            alpha: 20.0,
            regularisation: 5.0,
            seed: 7,
        }
    }
}

/// User and item factors; a user's score for an item is their dot product.
#[derive(Debug, Clone)]
pub struct Factors {
    pub factors: usize,
    pub users: Vec<f64>,
    pub items: Vec<f64>,
}

impl Factors {
    pub fn scores(&self, user: u32) -> Vec<f32> {
        let f = self.factors;
        let u = &self.users[user as usize * f..(user as usize + 1) * f];
        self.items
            .chunks_exact(f)
            .map(|v| u.iter().zip(v).map(|(a, b)| a * b).sum::<f64>() as f32)
            .collect()
    }
}

/// Fits implicit ALS: each half-step solves every user (then item) exactly given the other side.
pub fn implicit_als(
    train: &[Interaction],
    users: usize,
    items: usize,
    params: AlsParams,
) -> Factors {
    let f = params.factors;
    let mut rng = StdRng::seed_from_u64(params.seed);
    let mut init = |n: usize| {
        (0..n * f)
            .map(|_| rng.random_range(-0.01..0.01))
            .collect::<Vec<f64>>()
    };
    let (mut user_factors, mut item_factors) = (init(users), init(items));
    let mut by_user = vec![Vec::new(); users];
    let mut by_item = vec![Vec::new(); items];
    for event in train {
        by_user[event.user as usize].push(event.item as usize);
        by_item[event.item as usize].push(event.user as usize);
    }
    for _ in 0..params.iterations {
        solve_side(&mut user_factors, &item_factors, &by_user, f, params);
        solve_side(&mut item_factors, &user_factors, &by_item, f, params);
    }
    Factors {
        factors: f,
        users: user_factors,
        items: item_factors,
    }
}

/// `x_u = (YᵀY + α Σ y_i y_iᵀ + λI)⁻¹ (1 + α) Σ y_i` over the items `i` of `u`.
fn solve_side(
    target: &mut [f64],
    other: &[f64],
    observed: &[Vec<usize>],
    f: usize,
    params: AlsParams,
) {
    let mut gram = vec![0f64; f * f];
    for y in other.chunks_exact(f) {
        for a in 0..f {
            for b in 0..f {
                gram[a * f + b] += y[a] * y[b];
            }
        }
    }
    for (row, seen) in target.chunks_exact_mut(f).zip(observed) {
        let mut a = gram.clone();
        let mut rhs = vec![0f64; f];
        for &i in seen {
            let y = &other[i * f..(i + 1) * f];
            for p in 0..f {
                rhs[p] += (1.0 + params.alpha) * y[p];
                for q in 0..f {
                    a[p * f + q] += params.alpha * y[p] * y[q];
                }
            }
        }
        for p in 0..f {
            a[p * f + p] += params.regularisation;
        }
        cholesky_solve(&mut a, &mut rhs, f);
        row.copy_from_slice(&rhs);
    }
}

/// Solves `A x = b` for a symmetric positive-definite `A` (overwritten by its factor); `b`
/// becomes `x`.
fn cholesky_solve(a: &mut [f64], b: &mut [f64], n: usize) {
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= a[j * n + k] * a[j * n + k];
        }
        let d = d.max(1e-12).sqrt();
        a[j * n + j] = d;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = s / d;
        }
    }
    for i in 0..n {
        let mut s = b[i];
        for k in 0..i {
            s -= a[i * n + k] * b[k];
        }
        b[i] = s / a[i * n + i];
    }
    for i in (0..n).rev() {
        let mut s = b[i];
        for k in i + 1..n {
            s -= a[k * n + i] * b[k];
        }
        b[i] = s / a[i * n + i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves_a_small_system() {
        let mut a = vec![4.0, 2.0, 2.0, 3.0];
        let mut b = vec![2.0, 1.0];
        cholesky_solve(&mut a, &mut b, 2);
        assert!((b[0] - 0.5).abs() < 1e-12 && b[1].abs() < 1e-12, "{b:?}");
    }

    #[test]
    fn als_recovers_two_communities() {
        // Users 0..10 take items 0..5, users 10..20 items 5..10; each leaves one item out.
        let mut train = Vec::new();
        for user in 0..20u32 {
            let base = if user < 10 { 0 } else { 5 };
            for item in base..base + 5 {
                if item != base + user % 5 {
                    train.push(Interaction {
                        user,
                        item,
                        time: 0,
                        weight: 1.0,
                    });
                }
            }
        }
        let factors = implicit_als(
            &train,
            20,
            10,
            AlsParams {
                factors: 4,
                ..Default::default()
            },
        );
        for user in 0..20u32 {
            let scores = factors.scores(user);
            let left_out = if user < 10 { user % 5 } else { 5 + user % 5 };
            let other_side = if user < 10 { 5..10 } else { 0..5 };
            assert!(
                other_side
                    .clone()
                    .all(|i| scores[left_out as usize] > scores[i]),
                "user {user}: {scores:?}"
            );
        }
    }
}
