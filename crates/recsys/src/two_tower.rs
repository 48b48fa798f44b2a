//! The two-tower retrieval model (Yi et al., "Sampling-Bias-Corrected Neural Modeling for Large
//! Corpus Item Recommendations", RecSys 2019), trained with candle.
//!
//! - **User tower**: the user's id embedding, their traits (multi-hot) and age, and the mean of
//!   the id embeddings of the items they interacted with most recently *before* the example's
//!   time (point-in-time: never the example itself or anything after it) → MLP → unit vector.
//! - **Item tower**: the item's id embedding (the same table the history reads), its categories
//!   (multi-hot) and year → MLP → unit vector.
//! - **Loss**: softmax over the batch's items (in-batch negatives), each logit `u·v / τ` less
//!   `log q(item)`, the item's sampling probability — the logQ correction, without which popular
//!   items, negatives more often, are pushed down — plus optional uniform random negatives with
//!   their own `log q`.

use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::{AdamW, Embedding, Linear, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::RecsysError;
use crate::data::{Dataset, Interaction};

/// Training settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TwoTowerParams {
    /// Width of the id embeddings and of the towers' outputs.
    pub dim: usize,
    pub hidden: usize,
    /// Recent items averaged into the user tower.
    pub history: usize,
    pub epochs: usize,
    pub batch: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// Softmax temperature over cosine similarities.
    pub temperature: f64,
    pub logq_correction: bool,
    /// Uniformly drawn extra negatives per batch.
    pub random_negatives: usize,
    pub seed: u64,
}

impl Default for TwoTowerParams {
    fn default() -> Self {
        TwoTowerParams {
            dim: 32,
            hidden: 64,
            history: 20,
            epochs: 10,
            batch: 512,
            learning_rate: 0.005,
            weight_decay: 1e-4,
            temperature: 0.05,
            logq_correction: true,
            random_negatives: 0,
            seed: 11,
        }
    }
}

/// Side features laid out as dense rows, once.
struct Features {
    user_width: usize,
    item_width: usize,
    trait_sizes: Vec<usize>,
    /// Per user: traits multi-hot, then age / 100.
    users: Vec<f32>,
    /// Per item: categories multi-hot, then (year − 1900) / 100.
    items: Vec<f32>,
}

/// A user's side-feature row: each trait one-hot in its block (a value outside the vocabulary
/// leaves its block empty), then age / 100 (30 when unknown).
fn user_side_row(row: &mut [f32], trait_sizes: &[usize], traits: &[u16], age: Option<u8>) {
    let mut base = 0;
    for (value, size) in traits.iter().zip(trait_sizes) {
        if (*value as usize) < *size {
            row[base + *value as usize] = 1.0;
        }
        base += size;
    }
    row[base] = f32::from(age.unwrap_or(30)) / 100.0;
}

impl Features {
    fn new(dataset: &Dataset) -> Features {
        let traits: usize = dataset.trait_sizes.iter().sum();
        let user_width = traits + 1;
        let mut users = vec![0f32; dataset.users.len() * user_width];
        for (row, user) in users.chunks_exact_mut(user_width).zip(&dataset.users) {
            user_side_row(row, &dataset.trait_sizes, &user.traits, user.age);
        }
        let categories = dataset.category_names.len();
        let item_width = categories + 1;
        let mut items = vec![0f32; dataset.items.len() * item_width];
        for (row, item) in items.chunks_exact_mut(item_width).zip(&dataset.items) {
            for &c in &item.categories {
                row[c as usize] = 1.0;
            }
            row[categories] = item.year.map_or(0.9, |y| (f32::from(y) - 1900.0) / 100.0);
        }
        Features {
            user_width,
            item_width,
            trait_sizes: dataset.trait_sizes.clone(),
            users,
            items,
        }
    }
}

/// One of the two towers, as registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tower {
    User,
    Item,
}

impl Tower {
    fn prefixes(self) -> &'static [&'static str] {
        match self {
            Tower::User => &["user_ids", "user_mlp", "item_ids"],
            Tower::Item => &["item_ids", "item_mlp"],
        }
    }
}

/// The trained towers.
pub struct TwoTower {
    pub params: TwoTowerParams,
    device: Device,
    varmap: VarMap,
    user_ids: Embedding,
    item_ids: Embedding,
    user_mlp: (Linear, Linear),
    item_mlp: (Linear, Linear),
    features: Features,
    items: usize,
}

impl std::fmt::Debug for TwoTower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwoTower")
            .field("params", &self.params)
            .field("items", &self.items)
            .finish()
    }
}

/// What the user tower reads of one user.
#[derive(Debug, Clone, Copy)]
pub struct UserInput<'a> {
    /// The user's index in training, if they were there.
    pub user: Option<u32>,
    /// Recent items, oldest first.
    pub recent: &'a [u32],
    /// The side-feature row (`TwoTower::user_side`).
    pub side: &'a [f32],
}

/// A user's query: who, and which items they interacted with recently (oldest first).
#[derive(Debug, Clone, PartialEq)]
pub struct UserQuery {
    pub user: u32,
    pub recent: Vec<u32>,
}

fn candle(e: candle_core::Error) -> RecsysError {
    RecsysError::Model(e.to_string())
}

impl TwoTower {
    fn build(
        dataset: &Dataset,
        params: TwoTowerParams,
        device: Device,
    ) -> Result<TwoTower, RecsysError> {
        let features = Features::new(dataset);
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
        let d = params.dim;
        let user_ids =
            candle_nn::embedding(dataset.users.len(), d, vb.pp("user_ids")).map_err(candle)?;
        let item_ids =
            candle_nn::embedding(dataset.items.len(), d, vb.pp("item_ids")).map_err(candle)?;
        let user_in = 2 * d + features.user_width;
        let item_in = d + features.item_width;
        let user_mlp = (
            candle_nn::linear(user_in, params.hidden, vb.pp("user_mlp.0")).map_err(candle)?,
            candle_nn::linear(params.hidden, d, vb.pp("user_mlp.1")).map_err(candle)?,
        );
        let item_mlp = (
            candle_nn::linear(item_in, params.hidden, vb.pp("item_mlp.0")).map_err(candle)?,
            candle_nn::linear(params.hidden, d, vb.pp("item_mlp.1")).map_err(candle)?,
        );
        Ok(TwoTower {
            params,
            device,
            varmap,
            user_ids,
            item_ids,
            user_mlp,
            item_mlp,
            features,
            items: dataset.items.len(),
        })
    }

    /// Trains on `train`; every example's history is the user's items strictly before it.
    pub fn train(
        dataset: &Dataset,
        train: &[Interaction],
        params: TwoTowerParams,
    ) -> Result<TwoTower, RecsysError> {
        let model = TwoTower::build(dataset, params, Device::Cpu)?;
        model.seed_weights(params.seed)?;
        let histories = Dataset::histories(train, dataset.users.len());
        // Examples with their point-in-time histories.
        let mut examples: Vec<(UserQuery, u32)> = Vec::with_capacity(train.len());
        for history in &histories {
            for (at, event) in history.iter().enumerate() {
                // The history is in time order: what happened strictly before is a prefix
                // (events in the same second as this one are not "before" it).
                let before = history[..at].partition_point(|e| e.time < event.time);
                let earlier: Vec<u32> = history[before.saturating_sub(params.history)..before]
                    .iter()
                    .map(|e| e.item)
                    .collect();
                examples.push((
                    UserQuery {
                        user: event.user,
                        recent: earlier,
                    },
                    event.item,
                ));
            }
        }
        // q(item): how often an item is a positive, hence an in-batch negative.
        let mut counts = vec![0f32; dataset.items.len()];
        for (_, item) in &examples {
            counts[*item as usize] += 1.0;
        }
        let total: f32 = counts.iter().sum();
        let log_q: Vec<f32> = counts
            .iter()
            .map(|c| ((c + 1.0) / (total + counts.len() as f32)).ln())
            .collect();

        let mut optimiser = AdamW::new(
            model.varmap.all_vars(),
            ParamsAdamW {
                lr: params.learning_rate,
                weight_decay: params.weight_decay,
                ..Default::default()
            },
        )
        .map_err(candle)?;
        let mut rng = StdRng::seed_from_u64(params.seed);
        let uniform_log_q = (1.0 / dataset.items.len() as f32).ln();
        for _epoch in 0..params.epochs {
            examples.shuffle(&mut rng);
            for batch in examples.chunks(params.batch) {
                if batch.len() < 2 {
                    continue;
                }
                let queries: Vec<&UserQuery> = batch.iter().map(|(q, _)| q).collect();
                let mut items: Vec<u32> = batch.iter().map(|(_, i)| *i).collect();
                let mut item_log_q: Vec<f32> = items.iter().map(|&i| log_q[i as usize]).collect();
                for _ in 0..params.random_negatives {
                    items.push(rand::Rng::random_range(
                        &mut rng,
                        0..dataset.items.len() as u32,
                    ));
                    item_log_q.push(uniform_log_q);
                }
                let users = model.user_tower(&queries)?;
                let item_vectors = model.item_tower(&items)?;
                let mut logits = (users
                    .matmul(&item_vectors.t().map_err(candle)?)
                    .map_err(candle)?
                    / params.temperature)
                    .map_err(candle)?;
                if params.logq_correction {
                    let correction = Tensor::from_vec(item_log_q, (1, items.len()), &model.device)
                        .map_err(candle)?;
                    logits = logits.broadcast_sub(&correction).map_err(candle)?;
                }
                let labels =
                    Tensor::arange(0u32, batch.len() as u32, &model.device).map_err(candle)?;
                let loss = candle_nn::loss::cross_entropy(&logits, &labels).map_err(candle)?;
                optimiser.backward_step(&loss).map_err(candle)?;
            }
        }
        Ok(model)
    }

    /// Draws the initial weights from a seeded generator (candle's CPU generator cannot be
    /// seeded), in name order, so a training run is reproducible: id embeddings from N(0, 1) as
    /// candle draws them, linear weights uniform in ±1/√fan-in, biases zero.
    fn seed_weights(&self, seed: u64) -> Result<(), RecsysError> {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5EED);
        let vars = self
            .varmap
            .data()
            .lock()
            .map_err(|_| RecsysError::Model("poisoned weights".into()))?;
        let mut names: Vec<&String> = vars.keys().collect();
        names.sort();
        for name in names {
            let var = &vars[name];
            let dims = var.dims().to_vec();
            let count: usize = dims.iter().product();
            let values: Vec<f32> = if name.ends_with(".bias") {
                vec![0.0; count]
            } else if name.starts_with("user_ids") || name.starts_with("item_ids") {
                (0..count)
                    .map(|_| {
                        let (u, v): (f32, f32) = (
                            1.0 - rand::Rng::random::<f32>(&mut rng),
                            rand::Rng::random(&mut rng),
                        );
                        (-2.0 * u.ln()).sqrt() * (2.0 * std::f32::consts::PI * v).cos()
                    })
                    .collect()
            } else {
                let bound = 1.0 / (dims[dims.len() - 1] as f32).sqrt();
                (0..count)
                    .map(|_| rand::Rng::random_range(&mut rng, -bound..bound))
                    .collect()
            };
            var.set(&Tensor::from_vec(values, dims, &self.device).map_err(candle)?)
                .map_err(candle)?;
        }
        Ok(())
    }

    /// Unit user vectors, one row per query, with the side features the user had in training.
    pub fn user_tower(&self, queries: &[&UserQuery]) -> Result<Tensor, RecsysError> {
        let w = self.features.user_width;
        let inputs: Vec<UserInput<'_>> = queries
            .iter()
            .map(|q| UserInput {
                user: Some(q.user),
                recent: &q.recent,
                side: &self.features.users[q.user as usize * w..(q.user as usize + 1) * w],
            })
            .collect();
        self.user_tower_of(&inputs)
    }

    /// The side-feature row of a user as serving sees them (traits as vocabulary indices,
    /// `u16::MAX` for a value not seen in training): the layout `user_tower_of` takes.
    pub fn user_side(&self, traits: &[u16], age: Option<u8>) -> Vec<f32> {
        let mut row = vec![0f32; self.features.user_width];
        user_side_row(&mut row, &self.features.trait_sizes, traits, age);
        row
    }

    /// Unit user vectors from explicit inputs. A user unknown to training (`user: None`) gets
    /// no id embedding — the tower still reads their history and side features.
    pub fn user_tower_of(&self, inputs: &[UserInput<'_>]) -> Result<Tensor, RecsysError> {
        let n = inputs.len();
        let h = self.params.history.max(1);
        let w = self.features.user_width;
        let ids: Vec<u32> = inputs.iter().map(|q| q.user.unwrap_or(0)).collect();
        let known: Vec<f32> = inputs
            .iter()
            .map(|q| if q.user.is_some() { 1.0 } else { 0.0 })
            .collect();
        let mut recent = vec![0u32; n * h];
        let mut mask = vec![0f32; n * h];
        let mut side = Vec::with_capacity(n * w);
        for (row, input) in inputs.iter().enumerate() {
            for (slot, &item) in input.recent.iter().rev().take(h).enumerate() {
                recent[row * h + slot] = item;
                mask[row * h + slot] = 1.0;
            }
            if input.side.len() != w {
                return Err(RecsysError::Model(format!(
                    "a user side-feature row has {} values, the tower takes {w}",
                    input.side.len()
                )));
            }
            side.extend_from_slice(input.side);
        }
        let counts: Vec<f32> = mask
            .chunks_exact(h)
            .map(|m| m.iter().sum::<f32>().max(1.0))
            .collect();
        let ids = Tensor::from_vec(ids, n, &self.device).map_err(candle)?;
        let known = Tensor::from_vec(known, (n, 1), &self.device).map_err(candle)?;
        let recent = Tensor::from_vec(recent, (n, h), &self.device).map_err(candle)?;
        let mask = Tensor::from_vec(mask, (n, h, 1), &self.device).map_err(candle)?;
        let counts = Tensor::from_vec(counts, (n, 1), &self.device).map_err(candle)?;
        let history = self
            .item_ids
            .forward(&recent)
            .and_then(|e| e.broadcast_mul(&mask))
            .and_then(|e| e.sum(1))
            .and_then(|e| e.broadcast_div(&counts))
            .map_err(candle)?;
        let side = Tensor::from_vec(side, (n, w), &self.device).map_err(candle)?;
        let id = self
            .user_ids
            .forward(&ids)
            .and_then(|e| e.broadcast_mul(&known))
            .map_err(candle)?;
        let input = Tensor::cat(&[&id, &history, &side], 1).map_err(candle)?;
        self.head(&self.user_mlp, &input)
    }

    /// Unit item vectors, one row per item.
    pub fn item_tower(&self, items: &[u32]) -> Result<Tensor, RecsysError> {
        let n = items.len();
        let w = self.features.item_width;
        let ids = Tensor::from_vec(items.to_vec(), n, &self.device).map_err(candle)?;
        let mut side = Vec::with_capacity(n * w);
        for &item in items {
            side.extend_from_slice(
                &self.features.items[item as usize * w..(item as usize + 1) * w],
            );
        }
        let side = Tensor::from_vec(side, (n, w), &self.device).map_err(candle)?;
        let input = Tensor::cat(&[&self.item_ids.forward(&ids).map_err(candle)?, &side], 1)
            .map_err(candle)?;
        self.head(&self.item_mlp, &input)
    }

    fn head(&self, mlp: &(Linear, Linear), input: &Tensor) -> Result<Tensor, RecsysError> {
        let out = mlp
            .0
            .forward(input)
            .and_then(|x| x.relu())
            .and_then(|x| mlp.1.forward(&x))
            .map_err(candle)?;
        let norm = out
            .sqr()
            .and_then(|x| x.sum_keepdim(1))
            .and_then(|x| x.sqrt())
            .and_then(|x| x.clamp(1e-6, f64::MAX))
            .map_err(candle)?;
        out.broadcast_div(&norm).map_err(candle)
    }

    /// The weights one tower needs, as a safetensors file: the user tower's (`Tower::User`,
    /// which reads the item id table for the history) or the item tower's.
    pub fn tower_weights(&self, tower: Tower) -> Result<Vec<u8>, RecsysError> {
        let vars = self
            .varmap
            .data()
            .lock()
            .map_err(|_| RecsysError::Model("poisoned weights".into()))?;
        let mut tensors: Vec<(String, Tensor)> = vars
            .iter()
            .filter(|(name, _)| tower.prefixes().iter().any(|p| name.starts_with(p)))
            .map(|(name, var)| (name.clone(), var.as_tensor().clone()))
            .collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        safetensors::tensor::serialize(tensors, None).map_err(|e| RecsysError::Model(e.to_string()))
    }

    /// A model with the shape `dataset` and `params` give, its weights read from safetensors
    /// files (`tower_weights`); each file must hold every tensor of its tower.
    pub fn load(
        dataset: &Dataset,
        params: TwoTowerParams,
        files: &[(Tower, &[u8])],
    ) -> Result<TwoTower, RecsysError> {
        let model = TwoTower::build(dataset, params, Device::Cpu)?;
        {
            let vars = model
                .varmap
                .data()
                .lock()
                .map_err(|_| RecsysError::Model("poisoned weights".into()))?;
            for (tower, bytes) in files {
                let tensors =
                    candle_core::safetensors::load_buffer(bytes, &model.device).map_err(candle)?;
                for (name, var) in vars
                    .iter()
                    .filter(|(name, _)| tower.prefixes().iter().any(|p| name.starts_with(p)))
                {
                    let tensor = tensors.get(name).ok_or_else(|| {
                        RecsysError::Model(format!("the {tower:?} tower's file has no '{name}'"))
                    })?;
                    if tensor.dims() != var.dims() {
                        return Err(RecsysError::Model(format!(
                            "'{name}' has shape {:?} in the file, the model takes {:?}",
                            tensor.dims(),
                            var.dims()
                        )));
                    }
                    var.set(tensor).map_err(candle)?;
                }
            }
        }
        Ok(model)
    }

    /// Every item's vector, row by row.
    pub fn item_vectors(&self) -> Result<Vec<Vec<f32>>, RecsysError> {
        let items: Vec<u32> = (0..self.items as u32).collect();
        let mut out = Vec::with_capacity(self.items);
        for chunk in items.chunks(4096) {
            let vectors = self.item_tower(chunk)?;
            out.extend(vectors.to_vec2::<f32>().map_err(candle)?);
        }
        Ok(out)
    }

    /// One user's vector.
    pub fn user_vector(&self, query: &UserQuery) -> Result<Vec<f32>, RecsysError> {
        let vectors = self.user_tower(&[query])?;
        vectors
            .i(0)
            .and_then(|v| v.to_vec1::<f32>())
            .map_err(candle)
    }
}
