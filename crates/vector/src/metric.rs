//! What "near" means for an index.

use serde::{Deserialize, Serialize};

use crate::kernels;

/// The distance an index orders by. Results carry it as a distance, smaller is nearer:
/// `l2` the squared Euclidean distance, `cosine` one minus the cosine similarity, `dot` the
/// negated dot product (so maximum inner product is minimum distance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    #[default]
    Cosine,
    Dot,
    L2,
}

impl Metric {
    pub fn parse(name: &str) -> Option<Metric> {
        match name.to_ascii_lowercase().as_str() {
            "cosine" | "cos" => Some(Metric::Cosine),
            "dot" | "ip" | "inner_product" => Some(Metric::Dot),
            "l2" | "euclidean" => Some(Metric::L2),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::Dot => "dot",
            Metric::L2 => "l2",
        }
    }

    /// The vector as the index stores it: unit length for cosine (so cosine is a dot product),
    /// as given otherwise. `None` for a zero vector under cosine, which has no direction.
    pub fn prepare(self, vector: &[f32]) -> Option<Vec<f32>> {
        match self {
            Metric::Cosine => {
                let norm = kernels::dot_f32(vector, vector).sqrt();
                (norm > 0.0).then(|| vector.iter().map(|x| x / norm).collect())
            }
            Metric::Dot | Metric::L2 => Some(vector.to_vec()),
        }
    }

    /// The exact distance between two prepared vectors.
    #[inline(always)]
    pub fn distance(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Metric::Cosine => 1.0 - kernels::dot_f32(a, b),
            Metric::Dot => -kernels::dot_f32(a, b),
            Metric::L2 => kernels::l2_f32(a, b),
        }
    }
}
