//! Scalar quantisation: every component of every vector mapped onto one byte by one affine
//! map, `x ≈ lo + step · code`. The graph is built and walked on the codes — a quarter of the
//! memory traffic of `f32` and integer arithmetic — and the candidates found are re-ranked on the
//! exact vectors. One map for all dimensions keeps distances between codes proportional to
//! distances between vectors (a map per dimension would weight the dimensions unequally).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quantizer {
    pub lo: f32,
    pub step: f32,
}

/// Headroom added when the range grows, so a stream of slightly larger values does not
/// re-encode the index each time.
const HEADROOM: f32 = 0.05;

impl Quantizer {
    /// A map covering `[min, max]`.
    pub fn covering(min: f32, max: f32) -> Quantizer {
        let span = (max - min).max(f32::MIN_POSITIVE * 255.0);
        Quantizer {
            lo: min,
            step: span / 255.0,
        }
    }

    pub fn hi(&self) -> f32 {
        self.lo + self.step * 255.0
    }

    pub fn covers(&self, min: f32, max: f32) -> bool {
        min >= self.lo && max <= self.hi()
    }

    /// The map after the range must also cover `[min, max]`, with headroom.
    pub fn widened(&self, min: f32, max: f32) -> Quantizer {
        let (lo, hi) = (self.lo.min(min), self.hi().max(max));
        let margin = (hi - lo) * HEADROOM;
        Quantizer::covering(
            if min < self.lo { lo - margin } else { lo },
            if max > self.hi() { hi + margin } else { hi },
        )
    }

    #[inline]
    pub fn encode_into(&self, vector: &[f32], codes: &mut [u8]) {
        let inverse = 1.0 / self.step;
        for (code, &x) in codes.iter_mut().zip(vector) {
            *code = ((x - self.lo) * inverse).round().clamp(0.0, 255.0) as u8;
        }
    }
}

/// The smallest and greatest component of some vectors.
pub fn range(values: &[f32]) -> (f32, f32) {
    values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_in_range_round_trip_exactly() {
        let q = Quantizer::covering(0.0, 255.0);
        let v: Vec<f32> = (0..=255).map(|i| i as f32).collect();
        let mut codes = vec![0u8; v.len()];
        q.encode_into(&v, &mut codes);
        assert!(codes.iter().enumerate().all(|(i, &c)| usize::from(c) == i));
    }

    #[test]
    fn widening_covers_the_new_values_with_headroom() {
        let q = Quantizer::covering(-1.0, 1.0);
        assert!(q.covers(-1.0, 1.0));
        assert!(!q.covers(-1.0, 1.5));
        let w = q.widened(-1.0, 1.5);
        assert!(w.covers(-1.0, 1.6));
        assert_eq!(w.lo, -1.0);
    }
}
