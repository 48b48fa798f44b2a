//! The ranking stage: a gradient-boosted classifier (the serving work's GBDT) over features of a
//! user and a retrieved candidate, trained on held-out positives against the retrieval's own
//! candidates as negatives — the hard negatives it will meet when serving.

use kairos_model::gbdt::{Features, Gbdt, GbdtParams, Task};

use kairos_vector::kernels::dot_f32 as dot;

use crate::RecsysError;
use crate::data::{Dataset, Interaction};

/// The features' names, in column order.
pub const FEATURES: [&str; 10] = [
    "retrieval_score",
    "retrieval_rank",
    "log_popularity",
    "log_recent_popularity",
    "genre_affinity",
    "similarity_to_last",
    "similarity_to_recent",
    "year_gap",
    "item_year",
    "log_history",
];

/// How far back "recent popularity" counts.
const RECENT_SECONDS: i64 = 14 * 24 * 3600;

/// What the features are computed from: the items, when each was interacted with, and the
/// item vectors.
pub struct Context<'a> {
    pub dataset: &'a Dataset,
    /// Per item, the times it was interacted with, sorted (`item_times`).
    times: &'a [Vec<i64>],
    pub item_vectors: &'a [Vec<f32>],
}

/// Per item, the times of its interactions in `events`, sorted.
pub fn item_times(events: &[Interaction], items: usize) -> Vec<Vec<i64>> {
    let mut times = vec![Vec::new(); items];
    for event in events {
        times[event.item as usize].push(event.time);
    }
    for t in &mut times {
        t.sort_unstable();
    }
    times
}

impl<'a> Context<'a> {
    pub fn new(
        dataset: &'a Dataset,
        times: &'a [Vec<i64>],
        item_vectors: &'a [Vec<f32>],
    ) -> Context<'a> {
        Context {
            dataset,
            times,
            item_vectors,
        }
    }

    /// Interactions with `item` before `at` (within `window` seconds when given).
    fn count_before(&self, item: u32, at: i64, window: Option<i64>) -> usize {
        let times = &self.times[item as usize];
        let end = times.partition_point(|&t| t < at);
        let start = window.map_or(0, |w| times.partition_point(|&t| t < at - w));
        end - start
    }
}

/// An item retrieval found for a request: its score and its place in the retrieval's order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub item: u32,
    pub score: f32,
    pub rank: usize,
}

/// One user at one time: their history (oldest first) and the retrieval's candidates.
pub struct Request<'a> {
    pub history: &'a [u32],
    pub at: i64,
    /// Candidate items with their retrieval scores, best first.
    pub candidates: &'a [Candidate],
}

/// The feature rows of a request's candidates, column by column.
pub fn features(context: &Context<'_>, request: &Request<'_>) -> Vec<Vec<f64>> {
    let dataset = context.dataset;
    let categories = dataset.category_names.len();
    let mut genre_share = vec![0f64; categories];
    for &item in request.history {
        for &c in &dataset.items[item as usize].categories {
            genre_share[c as usize] += 1.0;
        }
    }
    let total: f64 = genre_share.iter().sum::<f64>().max(1.0);
    genre_share.iter_mut().for_each(|g| *g /= total);
    let recent: Vec<u32> = request.history.iter().rev().take(5).copied().collect();
    let years: Vec<f64> = recent
        .iter()
        .filter_map(|&i| dataset.items[i as usize].year)
        .map(f64::from)
        .collect();
    let mean_year = (!years.is_empty()).then(|| years.iter().sum::<f64>() / years.len() as f64);
    let mut columns = vec![Vec::with_capacity(request.candidates.len()); FEATURES.len()];
    for &Candidate { item, score, rank } in request.candidates {
        let meta = &dataset.items[item as usize];
        let vector = &context.item_vectors[item as usize];
        let affinity: f64 = meta
            .categories
            .iter()
            .map(|&c| genre_share[c as usize])
            .sum();
        let last = recent.first().map_or(f64::NAN, |&l| {
            f64::from(dot(vector, &context.item_vectors[l as usize]))
        });
        let mean_recent = if recent.is_empty() {
            f64::NAN
        } else {
            recent
                .iter()
                .map(|&r| f64::from(dot(vector, &context.item_vectors[r as usize])))
                .sum::<f64>()
                / recent.len() as f64
        };
        let year = meta.year.map_or(f64::NAN, f64::from);
        let row = [
            f64::from(score),
            rank as f64,
            (1.0 + context.count_before(item, request.at, None) as f64).ln(),
            (1.0 + context.count_before(item, request.at, Some(RECENT_SECONDS)) as f64).ln(),
            affinity,
            last,
            mean_recent,
            mean_year.map_or(f64::NAN, |m| (year - m).abs()),
            year,
            (1.0 + request.history.len() as f64).ln(),
        ];
        for (column, value) in columns.iter_mut().zip(row) {
            column.push(value);
        }
    }
    columns
}

/// The ranking model.
#[derive(Debug)]
pub struct Ranker {
    model: Gbdt,
}

impl Ranker {
    /// Trains on feature columns and 0/1 labels.
    pub fn train(
        columns: &[Vec<f64>],
        labels: &[f64],
        params: GbdtParams,
    ) -> Result<Ranker, RecsysError> {
        let model = Gbdt::train(
            Task::Binary,
            &Features::from_columns(columns),
            labels,
            params,
        )
        .map_err(|e| RecsysError::Model(e.to_string()))?;
        Ok(Ranker { model })
    }

    /// The model as kairos-model's GBDT artifact: registered, it loads as any GBDT does.
    pub fn to_json(&self) -> Result<Vec<u8>, RecsysError> {
        self.model
            .to_json()
            .map_err(|e| RecsysError::Model(e.to_string()))
    }

    pub fn from_json(bytes: &[u8]) -> Result<Ranker, RecsysError> {
        let model =
            Gbdt::from_json(bytes, Task::Binary).map_err(|e| RecsysError::Model(e.to_string()))?;
        Ok(Ranker { model })
    }

    pub fn score(&self, columns: &[Vec<f64>]) -> Vec<f64> {
        self.model.predict(&Features::from_columns(columns))
    }
}
