//! A loaded recommender and its request path:
//! user features (online) + recent history → user tower → vector index (candidates) → item
//! features (online) → filter rules → ranker → diversity caps → top k.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Float64Type, Schema};
use kairos_model::artifacts::Artifacts;
use kairos_recsys::ranking::{self, Candidate, Context, Ranker};
use kairos_recsys::two_tower::{Tower, TwoTower, UserInput};
use kairos_store::{FeatureStore, KeyStatus, NearestQuery, StoreError};
use kairos_transform::expr::Expr;
use kairos_types::Value;
use kairos_types::schema::{Column, FeatureGroup};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{DeployError, Result};
use crate::history::{self, History};
use crate::spec::RecommenderSpec;
use crate::train::{VOCABULARY_FILE, Vocabulary, group, single_key, split_categories};

/// A request: whose recommendations, how many, and request-time user values (a `region`
/// the client knows now) that the rules read as `user_<name>`, over the stored ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecommendRequest {
    pub user_id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<usize>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub context: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Recommended {
    pub item_id: i64,
    /// The ranker's probability (the retrieval score when ranking is off).
    pub score: f64,
    /// The dot product of the user and item embeddings.
    pub retrieval_score: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RecommendResponse {
    pub recommender: String,
    pub user_id: i64,
    pub items: Vec<Recommended>,
    /// Candidates the vector index gave.
    pub candidates: usize,
    /// Candidates each rule removed, by rule name (and "diversity").
    pub removed: BTreeMap<String, usize>,
    /// Whether the user was known to the towers' training (otherwise: history and features
    /// only).
    pub known_user: bool,
    pub took_ms: f64,
    /// Where the time went, stage by stage.
    pub stages: Stages,
}

/// Milliseconds spent in each stage of a request, in the order they run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Stages {
    /// The user's row from the online store.
    pub user_features_ms: f64,
    /// History and the user tower.
    pub user_vector_ms: f64,
    /// The vector index's search for the candidates.
    pub retrieval_ms: f64,
    /// The candidates' rows from the online store.
    pub item_features_ms: f64,
    pub filters_ms: f64,
    /// The ranker's features and scores.
    pub ranking_ms: f64,
    /// Diversity and the top k.
    pub selection_ms: f64,
}

/// Milliseconds since the last lap.
struct Stopwatch(Instant);

impl Stopwatch {
    fn lap(&mut self) -> f64 {
        let now = Instant::now();
        let ms = (now - self.0).as_secs_f64() * 1e3;
        self.0 = now;
        ms
    }
}

/// A compiled filter rule.
enum Rule {
    AlreadyInteracted,
    Keep(Expr),
}

/// A recommender loaded and serving.
pub struct Live {
    pub spec: RecommenderSpec,
    /// (name, version) of the user tower, item tower and ranker loaded.
    pub models: Vec<(String, u32)>,
    towers: TwoTower,
    vocabulary: Vocabulary,
    user_index: HashMap<i64, u32>,
    item_index: Arc<HashMap<i64, u32>>,
    trait_lookup: Vec<HashMap<String, u16>>,
    item_vectors: Vec<Vec<f32>>,
    ranker: Ranker,
    rules: Vec<(String, Rule)>,
    users: FeatureGroup,
    items: FeatureGroup,
    history: Arc<RwLock<History>>,
    /// The interactions group's event-time column (filled in for interactions posted back).
    pub(crate) interactions_time: String,
    follower: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("spec", &self.spec.name)
            .field("models", &self.models)
            .finish()
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(task) = self.follower.lock().expect("lock").take() {
            task.abort();
        }
    }
}

async fn model_file(
    store: &FeatureStore,
    artifacts: &Artifacts,
    name: &str,
    version: Option<u32>,
) -> Result<(kairos_model::registry::Model, Vec<u8>, Vec<u8>)> {
    let model = store
        .catalog()
        .get_model(name, version)
        .map_err(StoreError::from)?
        .ok_or_else(|| {
            DeployError::Invalid(format!(
                "model '{name}' is not registered; run `kairos recsys train` with this file first"
            ))
        })?;
    let artifact = artifacts
        .get(name, model.version, &model.spec.artifact)
        .await
        .map_err(DeployError::internal)?;
    let vocabulary = match model.spec.framework {
        kairos_model::registry::Framework::Candle => artifacts
            .get(name, model.version, VOCABULARY_FILE)
            .await
            .map_err(DeployError::internal)?
            .to_vec(),
        _ => Vec::new(),
    };
    Ok((model, artifact.to_vec(), vocabulary))
}

fn invalid(e: impl std::fmt::Display) -> DeployError {
    DeployError::Invalid(e.to_string())
}

impl Live {
    /// Loads the models the spec names, checks the groups, and reads the interaction history.
    pub async fn load(store: &FeatureStore, spec: RecommenderSpec) -> Result<Live> {
        let users = group(store, &spec.users.group)?;
        let items = group(store, &spec.items.group)?;
        single_key(&users.spec)?;
        single_key(&items.spec)?;
        let interactions = group(store, &spec.interactions.group)?;
        for column in [&spec.interactions.user, &spec.interactions.item] {
            if interactions.spec.column(column).is_none() {
                return Err(invalid(format!(
                    "feature group '{}' has no column '{column}'",
                    interactions.spec.name
                )));
            }
        }
        let item_columns: Vec<&str> = items.spec.columns.iter().map(|c| c.name.as_str()).collect();
        let mut rules = Vec::new();
        for rule in &spec.filters {
            let compiled = match &rule.keep {
                None => Rule::AlreadyInteracted,
                Some(text) => {
                    let expr = Expr::parse(text).map_err(invalid)?;
                    for column in expr.columns() {
                        let known = match column.strip_prefix("user_") {
                            Some(u) => users.spec.column(u).is_some(),
                            None => false,
                        } || item_columns.contains(&column.as_str());
                        if !known {
                            return Err(invalid(format!(
                                "filter '{}': '{column}' is neither a column of '{}' nor user_ \
                                 and a column of '{}'",
                                rule.name, items.spec.name, users.spec.name
                            )));
                        }
                    }
                    Rule::Keep(expr)
                }
            };
            rules.push((rule.name.clone(), compiled));
        }
        if let Some(d) = &spec.diversity
            && items.spec.column(&d.column).is_none()
        {
            return Err(invalid(format!(
                "diversity: '{}' is not a column of '{}'",
                d.column, items.spec.name
            )));
        }

        let embeddings = group(store, &spec.items.embeddings)?;
        if embeddings.spec.vector_index.is_none() {
            return Err(invalid(format!(
                "feature group '{}' has no vector index",
                spec.items.embeddings
            )));
        }
        let artifacts = Artifacts::new(store.storage());
        let (user_model, user_weights, vocabulary) = model_file(
            store,
            &artifacts,
            &spec.user_tower_model(),
            spec.models.user_tower_version,
        )
        .await?;
        // The item tower of the same training run: the ranker compares the user's recent items
        // with each candidate in its space.
        let item_name = spec.item_tower_model();
        let item_model = store
            .catalog()
            .list_models()
            .map_err(StoreError::from)?
            .into_iter()
            .filter(|m| m.spec.name == item_name && m.spec.lineage == user_model.spec.lineage)
            .max_by_key(|m| m.version)
            .ok_or_else(|| {
                invalid(format!(
                    "no version of '{item_name}' comes from the training run of '{}' v{}",
                    user_model.spec.name, user_model.version
                ))
            })?;
        let (item_model, item_weights, _) =
            model_file(store, &artifacts, &item_name, Some(item_model.version)).await?;
        let (ranker_model, ranker_json, _) = model_file(
            store,
            &artifacts,
            &spec.ranker_model(),
            spec.models.ranker_version,
        )
        .await?;
        let vocabulary: Vocabulary = serde_json::from_slice(&vocabulary).map_err(invalid)?;
        let (vocabulary, towers, item_vectors, ranker) =
            tokio::task::spawn_blocking(move || -> Result<_> {
                let towers = TwoTower::load(
                    &vocabulary.dataset,
                    vocabulary.params,
                    &[
                        (Tower::User, user_weights.as_slice()),
                        (Tower::Item, item_weights.as_slice()),
                    ],
                )
                .map_err(invalid)?;
                let vectors = towers.item_vectors().map_err(invalid)?;
                let ranker = Ranker::from_json(&ranker_json).map_err(invalid)?;
                Ok((vocabulary, towers, vectors, ranker))
            })
            .await
            .map_err(DeployError::internal)??;
        let user_index = vocabulary.dataset.user_index();
        let item_index = Arc::new(vocabulary.dataset.item_index());
        let trait_lookup = vocabulary
            .traits
            .iter()
            .map(|(_, values)| {
                values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (v.clone(), i as u16))
                    .collect()
            })
            .collect();
        let (history, follower) = history::follow(
            store,
            &spec.interactions.group,
            history::Columns {
                user: spec.interactions.user.clone(),
                item: spec.interactions.item.clone(),
                time: interactions.spec.event_time.clone(),
            },
            item_index.clone(),
        )
        .await?;
        let models = vec![
            (user_model.spec.name, user_model.version),
            (item_model.spec.name, item_model.version),
            (ranker_model.spec.name, ranker_model.version),
        ];
        Ok(Live {
            spec,
            models,
            towers,
            vocabulary,
            user_index,
            item_index,
            trait_lookup,
            item_vectors,
            ranker,
            rules,
            users,
            items,
            history,
            interactions_time: interactions.spec.event_time.clone(),
            follower: std::sync::Mutex::new(Some(follower)),
        })
    }

    /// Stops following the interactions log and waits until the follower (which holds the
    /// store) is gone.
    pub async fn stop(&self) {
        let task = self.follower.lock().expect("lock").take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// The interactions log rows the history holds (in a log of one partition, the offset
    /// up to which it holds them).
    pub fn history_position(&self) -> u64 {
        self.history.read().expect("lock").positions.iter().sum()
    }

    pub async fn recommend(
        &self,
        store: &FeatureStore,
        request: &RecommendRequest,
    ) -> Result<RecommendResponse> {
        let start = Instant::now();
        let mut stopwatch = Stopwatch(start);
        let mut stages = Stages::default();
        let k = request.k.unwrap_or(self.spec.k);
        if k == 0 || k > self.spec.candidates {
            return Err(DeployError::BadRequest(format!(
                "k is {k}, expected 1 to {} (the recommender's candidates)",
                self.spec.candidates
            )));
        }
        // The user's stored features, with the request's values over them.
        let lookup = store
            .get_online(
                &self.users.spec.name,
                None,
                &[vec![Value::Int64(request.user_id)]],
            )
            .await?;
        let mut user: HashMap<String, Value> = HashMap::new();
        if let Some(found) = lookup.first().filter(|l| l.status == KeyStatus::Present)
            && let Some(values) = &found.values
        {
            for (column, value) in self.users.spec.columns.iter().zip(values) {
                user.insert(column.name.clone(), value.clone());
            }
        }
        for (name, json) in &request.context {
            let column = self.users.spec.column(name).ok_or_else(|| {
                DeployError::BadRequest(format!(
                    "context: '{name}' is not a column of '{}'",
                    self.users.spec.name
                ))
            })?;
            let value = Value::from_json(json, column.ty)
                .map_err(|e| DeployError::BadRequest(format!("context: '{name}': {e}")))?;
            user.insert(name.clone(), value);
        }
        stages.user_features_ms = stopwatch.lap();

        // Recent history and the user vector.
        let (recent, interacted): (Vec<u32>, HashSet<i64>) = {
            let history = self.history.read().expect("lock");
            let events = history.of(request.user_id);
            let recent = events
                .iter()
                .filter_map(|(_, item)| self.item_index.get(item).copied())
                .collect::<Vec<_>>();
            let keep = recent.len().saturating_sub(self.spec.interactions.recent);
            (
                recent[keep..].to_vec(),
                events.iter().map(|&(_, item)| item).collect(),
            )
        };
        let traits: Vec<u16> = self
            .vocabulary
            .traits
            .iter()
            .zip(&self.trait_lookup)
            .map(|((name, _), lookup)| match user.get(name) {
                Some(Value::String(s)) => lookup.get(s).copied().unwrap_or(u16::MAX),
                _ => u16::MAX,
            })
            .collect();
        let age = self
            .spec
            .users
            .age
            .as_ref()
            .and_then(|a| user.get(a))
            .and_then(value_as_i64)
            .and_then(|a| u8::try_from(a).ok());
        let side = self.towers.user_side(&traits, age);
        let known = self.user_index.get(&request.user_id).copied();
        let query = self
            .towers
            .user_tower_of(&[UserInput {
                user: known,
                recent: &recent,
                side: &side,
            }])
            .and_then(|t| {
                t.to_vec2::<f32>()
                    .map_err(|e| kairos_recsys::RecsysError::Model(e.to_string()))
            })
            .map_err(DeployError::internal)?
            .remove(0);
        stages.user_vector_ms = stopwatch.lap();

        // Retrieval.
        let found = store.nearest(
            &self.spec.items.embeddings,
            None,
            &NearestQuery {
                vector: Some(query),
                k: self.spec.candidates,
                ..NearestQuery::default()
            },
        )?;
        let retrieved = found.neighbours.len();
        let mut candidates: Vec<(i64, f32)> = found
            .neighbours
            .iter()
            .map(|n| (n.key as i64, -n.distance))
            .collect();
        stages.retrieval_ms = stopwatch.lap();

        // Filter rules over the item's row and the user's.
        let mut removed = BTreeMap::new();
        let rows = store
            .get_online(
                &self.items.spec.name,
                None,
                &candidates
                    .iter()
                    .map(|&(id, _)| vec![Value::Int64(id)])
                    .collect::<Vec<_>>(),
            )
            .await?;
        let mut item_rows: Vec<Option<Vec<Value>>> = rows.into_iter().map(|l| l.values).collect();
        stages.item_features_ms = stopwatch.lap();
        for (name, rule) in &self.rules {
            let keep: Vec<bool> = match rule {
                Rule::AlreadyInteracted => candidates
                    .iter()
                    .map(|(id, _)| !interacted.contains(id))
                    .collect(),
                Rule::Keep(expr) => self.evaluate(expr, &item_rows, &user)?,
            };
            removed.insert(name.clone(), keep.iter().filter(|k| !**k).count());
            let mut flags = keep.into_iter();
            let mut flags_rows = flags.clone();
            candidates.retain(|_| flags.next().unwrap_or(false));
            item_rows.retain(|_| flags_rows.next().unwrap_or(false));
        }
        stages.filters_ms = stopwatch.lap();

        // Ranking.
        let mut scored: Vec<(i64, f64, f32, usize)> = candidates
            .iter()
            .enumerate()
            .map(|(at, &(id, score))| (id, f64::from(score), score, at))
            .collect();
        if self.spec.ranking && !scored.is_empty() {
            // Each ranked candidate with its place in `scored`.
            let (places, ranked): (Vec<usize>, Vec<Candidate>) = scored
                .iter()
                .enumerate()
                .filter_map(|(place, &(id, _, score, at))| {
                    self.item_index.get(&id).map(|&item| {
                        let candidate = Candidate {
                            item,
                            score,
                            rank: at,
                        };
                        (place, candidate)
                    })
                })
                .unzip();
            let history = self.history.read().expect("lock");
            let context = Context::new(
                &self.vocabulary.dataset,
                &history.item_times,
                &self.item_vectors,
            );
            let at = chrono::Utc::now().timestamp();
            let columns = ranking::features(
                &context,
                &ranking::Request {
                    history: &recent,
                    at,
                    candidates: &ranked,
                },
            );
            drop(history);
            let probabilities = self.ranker.score(&columns);
            // An item the towers never saw keeps no ranker score: after every ranked one.
            for entry in &mut scored {
                entry.1 = f64::NEG_INFINITY;
            }
            for (place, probability) in places.into_iter().zip(probabilities) {
                scored[place].1 = probability;
            }
            scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.3.cmp(&b.3)));
        }
        stages.ranking_ms = stopwatch.lap();

        // Diversity caps, then the top k.
        let mut items = Vec::with_capacity(k);
        let mut capped = 0;
        let diversity = self.spec.diversity.as_ref().and_then(|d| {
            self.items
                .spec
                .columns
                .iter()
                .position(|c| c.name == d.column)
                .map(|i| (i, d.max_per_value))
        });
        let mut counts: HashMap<String, usize> = HashMap::new();
        for (id, score, retrieval_score, at) in scored {
            if items.len() == k {
                break;
            }
            if let Some((column, cap)) = diversity {
                let values: Vec<String> = match item_rows[at].as_ref().map(|r| &r[column]) {
                    Some(Value::String(s)) => split_categories(s).map(str::to_owned).collect(),
                    Some(Value::Null) | None => Vec::new(),
                    Some(other) => vec![format!("{other:?}")],
                };
                if values
                    .iter()
                    .any(|v| counts.get(v).copied().unwrap_or(0) >= cap)
                {
                    capped += 1;
                    continue;
                }
                for v in values {
                    *counts.entry(v).or_default() += 1;
                }
            }
            items.push(Recommended {
                item_id: id,
                score,
                retrieval_score,
            });
        }
        if self.spec.diversity.is_some() {
            removed.insert("diversity".into(), capped);
        }
        stages.selection_ms = stopwatch.lap();
        Ok(RecommendResponse {
            recommender: self.spec.name.clone(),
            user_id: request.user_id,
            items,
            candidates: retrieved,
            removed,
            known_user: known.is_some(),
            took_ms: start.elapsed().as_secs_f64() * 1e3,
            stages,
        })
    }

    /// A rule over the candidates: their item columns and the user's as `user_<name>`, one
    /// Arrow batch; a null or false result drops the item.
    fn evaluate(
        &self,
        expr: &Expr,
        item_rows: &[Option<Vec<Value>>],
        user: &HashMap<String, Value>,
    ) -> Result<Vec<bool>> {
        let n = item_rows.len();
        let mut fields = Vec::new();
        let mut arrays: Vec<ArrayRef> = Vec::new();
        let wanted = expr.columns();
        let mut push = |column: &Column, name: String, values: Vec<Value>| {
            fields.push(Field::new(name, column.ty.arrow_type(), true));
            arrays.push(Value::to_array(column.ty, &values));
        };
        for (i, column) in self.items.spec.columns.iter().enumerate() {
            if !wanted.contains(&column.name) {
                continue;
            }
            let values = item_rows
                .iter()
                .map(|r| r.as_ref().map_or(Value::Null, |r| r[i].clone()))
                .collect();
            push(column, column.name.clone(), values);
        }
        for column in &self.users.spec.columns {
            let name = format!("user_{}", column.name);
            if !wanted.contains(&name) {
                continue;
            }
            let value = user.get(&column.name).cloned().unwrap_or(Value::Null);
            push(column, name, vec![value; n]);
        }
        let batch = RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields)),
            arrays,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(n)),
        )
        .map_err(DeployError::internal)?;
        let mask = expr
            .eval(&batch)
            .map_err(|e| DeployError::BadRequest(format!("filter: {e}")))?;
        if mask.data_type() != &DataType::Float64 {
            return Err(DeployError::Invalid(format!(
                "a filter gives {}, expected a truth value",
                mask.data_type()
            )));
        }
        let mask = mask.as_primitive::<Float64Type>();
        Ok((0..n)
            .map(|i| mask.is_valid(i) && mask.value(i) != 0.0)
            .collect())
    }
}

fn value_as_i64(value: &Value) -> Option<i64> {
    match value {
        Value::Int32(v) => Some(i64::from(*v)),
        Value::Int64(v) => Some(*v),
        Value::Float32(v) => Some(*v as i64),
        Value::Float64(v) => Some(*v as i64),
        _ => None,
    }
}
