//! Offline evaluation by time-ordered leave-last-out: each user's last interaction is the test
//! item; every model ranks all items with the user's training items left out; Recall@10,
//! Recall@50 and NDCG@10 over users.
//!
//! The ranking stage needs positives the retrieval model has not trained on, so the training
//! data is split once more the same way: the two-tower model for the ranker's training data
//! learns without each user's last training interaction (the ranker's positive), the one for
//! the test learns from all training data.

use std::time::Instant;

use kairos_model::gbdt::GbdtParams;
use kairos_vector::{HnswIndex, IndexConfig, Metric, SearchOptions};
use serde::Serialize;

use kairos_vector::kernels::dot_f32 as dot;

use crate::RecsysError;
use crate::baselines::{self, AlsParams};
use crate::data::{Dataset, Interaction, Split, leave_last_out};
use crate::metrics::{Accumulator, RankingMetrics, rank_of};
use crate::ranking::{self, Candidate, Context, Ranker, Request};
use crate::two_tower::{TwoTower, TwoTowerParams, UserQuery};

/// Evaluation settings.
#[derive(Debug, Clone, Copy)]
pub struct EvalParams {
    pub two_tower: TwoTowerParams,
    pub als: AlsParams,
    /// Candidates retrieved for the ranker.
    pub candidates: usize,
    /// Retrieved candidates per user kept as the ranker's negatives.
    pub negatives: usize,
    pub gbdt: GbdtParams,
}

impl Default for EvalParams {
    fn default() -> Self {
        EvalParams {
            two_tower: TwoTowerParams::default(),
            als: AlsParams::default(),
            candidates: 200,
            negatives: 50,
            gbdt: GbdtParams {
                trees: 200,
                learning_rate: 0.05,
                max_depth: 5,
                seed: 3,
            },
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelResult {
    pub model: String,
    pub metrics: RankingMetrics,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub users: usize,
    pub items: usize,
    pub train_interactions: usize,
    pub results: Vec<ModelResult>,
}

/// Items a user saw in training, as a mask.
fn seen_masks(train: &[Interaction], users: usize, items: usize) -> Vec<Vec<bool>> {
    let mut seen = vec![vec![false; items]; users];
    for event in train {
        seen[event.user as usize][event.item as usize] = true;
    }
    seen
}

fn evaluate_scores(
    split: &Split,
    seen: &[Vec<bool>],
    mut scores: impl FnMut(u32) -> Result<Vec<f32>, RecsysError>,
) -> Result<RankingMetrics, RecsysError> {
    let mut acc = Accumulator::default();
    for test in &split.test {
        let s = scores(test.user)?;
        acc.add(Some(rank_of(&s, test.item, &seen[test.user as usize])));
    }
    Ok(acc.finish())
}

/// Each user's training items, oldest first.
fn histories(train: &[Interaction], users: usize) -> Vec<Vec<u32>> {
    Dataset::histories(train, users)
        .into_iter()
        .map(|h| h.into_iter().map(|e| e.item).collect())
        .collect()
}

struct Retrieval {
    model: TwoTower,
    item_vectors: Vec<Vec<f32>>,
    index: HnswIndex,
}

impl Retrieval {
    fn train(
        dataset: &Dataset,
        train: &[Interaction],
        params: TwoTowerParams,
    ) -> Result<Retrieval, RecsysError> {
        let model = TwoTower::train(dataset, train, params)?;
        let item_vectors = model.item_vectors()?;
        let index = HnswIndex::new(IndexConfig::new(params.dim, Metric::Dot))
            .map_err(RecsysError::index)?;
        let items: Vec<(u64, &[f32])> = item_vectors
            .iter()
            .enumerate()
            .map(|(i, v)| (i as u64, v.as_slice()))
            .collect();
        index.upsert(&items).map_err(RecsysError::index)?;
        Ok(Retrieval {
            model,
            item_vectors,
            index,
        })
    }

    fn user_vector(&self, user: u32, history: &[u32]) -> Result<Vec<f32>, RecsysError> {
        self.model.user_vector(&UserQuery {
            user,
            recent: history.to_vec(),
        })
    }

    /// Candidates from the ANN index, seen items filtered out, best first.
    fn candidates(
        &self,
        query: &[f32],
        n: usize,
        seen: &[bool],
    ) -> Result<Vec<Candidate>, RecsysError> {
        let unseen = |key: u64| !seen[key as usize];
        let found = self
            .index
            .search(
                query,
                n,
                SearchOptions {
                    filter: Some(&unseen),
                    ef: Some(n.max(64)),
                    ..Default::default()
                },
            )
            .map_err(RecsysError::index)?;
        Ok(found
            .neighbours
            .iter()
            .enumerate()
            .map(|(rank, n)| Candidate {
                item: n.key as u32,
                score: -n.distance,
                rank,
            })
            .collect())
    }
}

/// Runs every model and returns their metrics.
pub fn evaluate(
    dataset: &Dataset,
    params: &EvalParams,
    mut progress: impl FnMut(&str),
) -> Result<EvalReport, RecsysError> {
    let (users, items) = (dataset.users.len(), dataset.items.len());
    let split = leave_last_out(dataset);
    let seen = seen_masks(&split.train, users, items);
    let mut results = Vec::new();

    let start = Instant::now();
    let popular = baselines::popularity(&split.train, items);
    let metrics = evaluate_scores(&split, &seen, |_| Ok(popular.clone()))?;
    results.push(ModelResult {
        model: "most popular".into(),
        metrics,
        seconds: start.elapsed().as_secs_f64(),
    });
    progress("most popular");

    let start = Instant::now();
    let factors = baselines::implicit_als(&split.train, users, items, params.als);
    let metrics = evaluate_scores(&split, &seen, |user| Ok(factors.scores(user)))?;
    results.push(ModelResult {
        model: "matrix factorisation (implicit ALS)".into(),
        metrics,
        seconds: start.elapsed().as_secs_f64(),
    });
    progress("matrix factorisation");

    // The ranker's training data: one more leave-last-out inside the training data.
    let start = Instant::now();
    let ranker = train_ranker(dataset, &split.train, params)?;
    let ranker_seconds = start.elapsed().as_secs_f64();
    progress("ranker");

    let start = Instant::now();
    let retrieval = Retrieval::train(dataset, &split.train, params.two_tower)?;
    let train_seconds = start.elapsed().as_secs_f64();
    let test_histories = histories(&split.train, users);
    let mut tower_scores = Vec::with_capacity(users);
    let metrics = evaluate_scores(&split, &seen, |user| {
        let query = retrieval.user_vector(user, &test_histories[user as usize])?;
        let scores: Vec<f32> = retrieval
            .item_vectors
            .iter()
            .map(|v| dot(&query, v))
            .collect();
        tower_scores.push((user, query));
        Ok(scores)
    })?;
    results.push(ModelResult {
        model: "two-tower retrieval".into(),
        metrics,
        seconds: train_seconds,
    });
    progress("two-tower");

    let start = Instant::now();
    let times = ranking::item_times(&split.train, items);
    let context = Context::new(dataset, &times, &retrieval.item_vectors);
    let mut acc = Accumulator::default();
    for (test, (user, query)) in split.test.iter().zip(&tower_scores) {
        debug_assert_eq!(test.user, *user);
        let candidates =
            retrieval.candidates(query, params.candidates, &seen[test.user as usize])?;
        let request = Request {
            history: &test_histories[test.user as usize],
            at: test.time,
            candidates: &candidates,
        };
        let scores = ranker.score(&ranking::features(&context, &request));
        let mut order: Vec<(f64, u32)> = scores
            .into_iter()
            .zip(candidates.iter().map(|c| c.item))
            .collect();
        order.sort_by(|a, b| b.0.total_cmp(&a.0));
        acc.add(order.iter().position(|&(_, item)| item == test.item));
    }
    results.push(ModelResult {
        model: "two-tower retrieval + ranking".into(),
        metrics: acc.finish(),
        seconds: ranker_seconds + train_seconds + start.elapsed().as_secs_f64(),
    });
    progress("two-tower + ranking");
    Ok(EvalReport {
        users,
        items,
        train_interactions: split.train.len(),
        results,
    })
}

/// Trains the ranker on `train`: one more leave-last-out inside it, each held-out positive
/// among negatives drawn from the candidates a two-tower model trained on the rest retrieves —
/// the hard negatives it meets when serving.
pub fn train_ranker(
    dataset: &Dataset,
    train: &[Interaction],
    params: &EvalParams,
) -> Result<Ranker, RecsysError> {
    let (users, items) = (dataset.users.len(), dataset.items.len());
    let inner = leave_last_out(&Dataset {
        interactions: train.to_vec(),
        ..dataset.clone()
    });
    let inner_retrieval = Retrieval::train(dataset, &inner.train, params.two_tower)?;
    let inner_histories = histories(&inner.train, users);
    let inner_seen = seen_masks(&inner.train, users, items);
    let inner_times = ranking::item_times(&inner.train, items);
    let inner_context = Context::new(dataset, &inner_times, &inner_retrieval.item_vectors);
    let mut columns = vec![Vec::new(); ranking::FEATURES.len()];
    let mut labels = Vec::new();
    for positive in &inner.test {
        let history = &inner_histories[positive.user as usize];
        let query = inner_retrieval.user_vector(positive.user, history)?;
        let candidates = inner_retrieval.candidates(
            &query,
            params.candidates,
            &inner_seen[positive.user as usize],
        )?;
        // The ranker only ever sees what retrieval found: users whose positive it missed
        // teach it nothing it will meet.
        let Some(position) = candidates.iter().position(|c| c.item == positive.item) else {
            continue;
        };
        // Negatives: evenly through the candidates, so the ranker sees easy and hard ones.
        let stride = (candidates.len() / params.negatives.max(1)).max(1);
        let mut chosen: Vec<Candidate> = candidates
            .iter()
            .enumerate()
            .filter(|(rank, c)| rank % stride == 0 && c.item != positive.item)
            .map(|(_, c)| *c)
            .take(params.negatives)
            .collect();
        chosen.push(candidates[position]);
        let request = Request {
            history,
            at: positive.time,
            candidates: &chosen,
        };
        for (column, values) in columns
            .iter_mut()
            .zip(ranking::features(&inner_context, &request))
        {
            column.extend(values);
        }
        let last = chosen.len() - 1;
        labels.extend(std::iter::repeat_n(0.0, last));
        labels.push(1.0);
    }
    Ranker::train(&columns, &labels, params.gbdt)
}
