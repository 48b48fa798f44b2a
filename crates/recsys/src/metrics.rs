//! Ranking metrics for leave-one-out evaluation: one relevant item per user, so Recall@k is the
//! hit rate and NDCG@k is 1 / log₂(rank + 2) for a hit at 0-based `rank`.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct RankingMetrics {
    pub users: usize,
    pub recall_at_10: f64,
    pub recall_at_50: f64,
    pub ndcg_at_10: f64,
}

/// Accumulates the rank of each user's held-out item (`None`: not in the list).
#[derive(Debug, Default)]
pub struct Accumulator {
    users: usize,
    hits_10: usize,
    hits_50: usize,
    ndcg_10: f64,
}

impl Accumulator {
    pub fn add(&mut self, rank: Option<usize>) {
        self.users += 1;
        if let Some(rank) = rank {
            if rank < 10 {
                self.hits_10 += 1;
                self.ndcg_10 += 1.0 / ((rank + 2) as f64).log2();
            }
            if rank < 50 {
                self.hits_50 += 1;
            }
        }
    }

    pub fn finish(&self) -> RankingMetrics {
        let n = self.users.max(1) as f64;
        RankingMetrics {
            users: self.users,
            recall_at_10: self.hits_10 as f64 / n,
            recall_at_50: self.hits_50 as f64 / n,
            ndcg_at_10: self.ndcg_10 / n,
        }
    }
}

/// The 0-based rank of `target` among `scores` (higher first), items in `exclude` left out;
/// ties rank the target after every item scoring the same (the pessimistic convention).
pub fn rank_of(scores: &[f32], target: u32, exclude: &[bool]) -> usize {
    let own = scores[target as usize];
    scores
        .iter()
        .enumerate()
        .filter(|&(item, &score)| item != target as usize && !exclude[item] && score >= own)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_and_metrics() {
        let scores = [0.9, 0.5, 0.7, 0.7, 0.1];
        let mut seen = vec![false; 5];
        assert_eq!(
            rank_of(&scores, 2, &seen),
            2,
            "0.9 and the tie at 0.7 come first"
        );
        seen[0] = true;
        assert_eq!(rank_of(&scores, 2, &seen), 1);
        let mut acc = Accumulator::default();
        acc.add(Some(0));
        acc.add(Some(12));
        acc.add(None);
        acc.add(Some(1));
        let m = acc.finish();
        assert_eq!(m.recall_at_10, 0.5);
        assert_eq!(m.recall_at_50, 0.75);
        assert!((m.ndcg_at_10 - (1.0 + 1.0 / 3f64.log2()) / 4.0).abs() < 1e-12);
    }
}
