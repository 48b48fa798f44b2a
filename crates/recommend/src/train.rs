//! `kairos recsys train`: a recommender's models trained on what the feature store holds.
//!
//! The interactions come point-in-time from the interactions group through a feature view
//! (with each user's features as of the event); the items from the items group's latest rows.
//! The two towers are trained on every interaction, the ranker on a leave-last-out inside them;
//! all three are registered with their lineage, and every item's embedding is written to the
//! item-embedding group, whose vector index the recommender retrieves from.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};
use bytes::Bytes;
use kairos_deploy::training::register_with_files;
use kairos_model::artifacts::Artifacts;
use kairos_model::registry::{Datatype, Framework, Lineage, ModelSpec, Signature, TensorSpec};
use kairos_recsys::data::{Dataset, Interaction, Item, User};
use kairos_recsys::eval::{EvalParams, train_ranker};
use kairos_recsys::ranking::FEATURES;
use kairos_recsys::two_tower::{Tower, TwoTower, TwoTowerParams};
use kairos_store::{FeatureStore, InsertOptions, StoreError};
use kairos_types::ingest::Format;
use kairos_types::schema::{FeatureGroup, FeatureGroupSpec};
use kairos_view::{FeatureViewSpec, Split, SplitName, TrainingDatasetRequest};
use serde::{Deserialize, Serialize};

use crate::error::{DeployError, Result};
use crate::spec::RecommenderSpec;

/// The file beside each tower's weights: the shapes, ids and side features it was trained on.
pub const VOCABULARY_FILE: &str = "vocabulary.json";
const USER_TOWER_FILE: &str = "user_tower.safetensors";
const ITEM_TOWER_FILE: &str = "item_tower.safetensors";
const RANKER_FILE: &str = "ranker.json";

/// What a tower needs besides its weights to be rebuilt and fed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Vocabulary {
    pub params: TwoTowerParams,
    /// Users and items (ids, side features) in index order; no interactions.
    pub dataset: Dataset,
    /// Each user trait column with its values in index order.
    pub traits: Traits,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub interactions: usize,
    /// Interactions left out because their item is not in the items group.
    pub unknown_items: usize,
    pub users: usize,
    pub items: usize,
    pub feature_view: String,
    pub feature_view_version: u32,
    pub training_dataset_version: u32,
    /// Registered (name, version).
    pub models: Vec<(String, u32)>,
    pub embeddings_written: usize,
    pub seconds: f64,
}

/// A group the recommender names; a missing one is an invalid definition.
pub(crate) fn group(store: &FeatureStore, name: &str) -> Result<FeatureGroup> {
    store
        .catalog()
        .get_feature_group(name, None)
        .map_err(StoreError::from)?
        .ok_or_else(|| DeployError::Invalid(format!("feature group '{name}' does not exist")))
}

/// The single primary-key column of a group the recommender keys by.
pub(crate) fn single_key(spec: &FeatureGroupSpec) -> Result<&str> {
    match spec.primary_key.as_slice() {
        [key] => Ok(key),
        other => Err(DeployError::Invalid(format!(
            "feature group '{}' must have one primary-key column (the id), it has {other:?}",
            spec.name
        ))),
    }
}

/// Trains, registers and writes the embeddings; `progress` hears each step.
pub async fn train(
    store: &FeatureStore,
    spec: &RecommenderSpec,
    params: &EvalParams,
    mut progress: impl FnMut(&str),
) -> Result<TrainReport> {
    let start = Instant::now();
    let users_group = group(store, &spec.users.group)?;
    let items_group = group(store, &spec.items.group)?;
    let user_key = single_key(&users_group.spec)?.to_owned();
    let item_key = single_key(&items_group.spec)?.to_owned();
    let view_name = spec.view_name();
    if let Err(StoreError::NotFound(_)) = store.describe_view(&view_name, None) {
        store.apply_view(training_view(spec, &user_key)?).await?;
    }
    let dataset = store
        .create_training_dataset(
            &view_name,
            None,
            TrainingDatasetRequest {
                start: None,
                end: None,
                split: Split::None,
                strict: false,
                as_known_at: false,
                description: format!("interactions for recommender '{}'", spec.name),
            },
            None,
            None,
        )
        .await?;
    let rows = store
        .read_training_dataset(&dataset, SplitName::Train, false)
        .await?;
    progress("training data");

    store.wait_materialised(&spec.items.group, None).await?;
    let items = store
        .read_offline(&spec.items.group, None, Default::default())
        .await?
        .collect()
        .await
        .map_err(StoreError::from)?;
    let (data, vocabulary_traits, unknown_items) =
        build_dataset(spec, &item_key, &items_group.spec.event_time, &items, &rows)?;
    if data.interactions.is_empty() {
        return Err(DeployError::BadRequest(format!(
            "feature view '{view_name}' gives no interactions with a known item to train on"
        )));
    }
    let two_tower = TwoTowerParams {
        history: spec.interactions.recent,
        ..params.two_tower
    };
    let eval_params = EvalParams {
        two_tower,
        ..*params
    };
    let trained = tokio::task::spawn_blocking(move || -> Result<_> {
        let ranker = train_ranker(&data, &data.interactions, &eval_params).map_err(model_error)?;
        let towers = TwoTower::train(&data, &data.interactions, two_tower).map_err(model_error)?;
        let vectors = towers.item_vectors().map_err(model_error)?;
        Ok((data, towers, ranker, vectors))
    })
    .await
    .map_err(DeployError::internal)??;
    let (data, towers, ranker, vectors) = trained;
    progress("models");

    let lineage = Lineage {
        feature_view: Some(view_name.clone()),
        feature_view_version: Some(dataset.view_version),
        training_dataset_version: Some(dataset.version),
        training: Some(serde_json::json!({ "recommender": spec.name, "params": two_tower })),
        ..Lineage::default()
    };
    let vocabulary = serde_json::to_vec(&Vocabulary {
        params: two_tower,
        dataset: Dataset {
            interactions: Vec::new(),
            ..data.clone()
        },
        traits: vocabulary_traits,
    })
    .map_err(DeployError::internal)?;
    let artifacts = Artifacts::new(store.storage());
    let tensor = |name: &str, datatype, shape: Vec<i64>| TensorSpec {
        name: name.into(),
        datatype,
        shape,
    };
    let dim = two_tower.dim as i64;
    let mut models = Vec::new();
    for (name, tower, file, input) in [
        (
            spec.user_tower_model(),
            Tower::User,
            USER_TOWER_FILE,
            "user",
        ),
        (
            spec.item_tower_model(),
            Tower::Item,
            ITEM_TOWER_FILE,
            "item",
        ),
    ] {
        let model_spec = ModelSpec {
            name,
            framework: Framework::Candle,
            artifact: file.into(),
            signature: Signature {
                inputs: vec![tensor(input, Datatype::Int64, vec![-1])],
                outputs: vec![tensor("embedding", Datatype::Fp32, vec![-1, dim])],
            },
            description: format!("the {input} tower of recommender '{}'", spec.name),
            metrics: None,
            lineage: lineage.clone(),
        };
        let weights = towers.tower_weights(tower).map_err(model_error)?;
        let model = register_with_files(
            store.catalog(),
            &artifacts,
            &model_spec,
            weights,
            vec![(VOCABULARY_FILE.into(), vocabulary.clone())],
        )
        .await?;
        models.push((model.spec.name, model.version));
    }
    let ranker_spec = ModelSpec {
        name: spec.ranker_model(),
        framework: Framework::Gbdt,
        artifact: RANKER_FILE.into(),
        signature: Signature {
            inputs: vec![tensor(
                "features",
                Datatype::Fp64,
                vec![-1, FEATURES.len() as i64],
            )],
            outputs: vec![tensor("probability", Datatype::Fp64, vec![-1])],
        },
        description: format!("the ranker of recommender '{}'", spec.name),
        metrics: None,
        lineage: Lineage {
            features: FEATURES.iter().map(|f| f.to_string()).collect(),
            ..lineage
        },
    };
    let ranker_model = kairos_deploy::training::register(
        store.catalog(),
        &artifacts,
        &ranker_spec,
        ranker.to_json().map_err(model_error)?,
    )
    .await?;
    models.push((ranker_model.spec.name, ranker_model.version));
    progress("registered");

    let written = write_embeddings(store, spec, &item_key, &data, &vectors).await?;
    progress("embeddings");
    Ok(TrainReport {
        interactions: data.interactions.len(),
        unknown_items,
        users: data.users.len(),
        items: data.items.len(),
        feature_view: view_name,
        feature_view_version: dataset.view_version,
        training_dataset_version: dataset.version,
        models,
        embeddings_written: written,
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn model_error(e: kairos_recsys::RecsysError) -> DeployError {
    DeployError::Internal(e.to_string())
}

/// The view the training data comes through: every interaction, with the user's traits and
/// age as of its time.
fn training_view(spec: &RecommenderSpec, user_key: &str) -> Result<FeatureViewSpec> {
    let mut features: Vec<String> = spec.users.traits.clone();
    features.extend(spec.users.age.clone());
    let mut view = serde_json::json!({
        "name": spec.view_name(),
        "description": format!("interactions for recommender '{}', with the user's features as of each", spec.name),
        "root": { "group": spec.interactions.group, "features": [] },
    });
    if !features.is_empty() {
        view["join"] = serde_json::json!([{
            "group": spec.users.group,
            "on": { (spec.interactions.user.clone()): user_key },
            "features": features,
            "prefix": "user_",
        }]);
    }
    serde_json::from_value(view).map_err(|e| DeployError::Invalid(e.to_string()))
}

/// A column as 64-bit integers (timestamps as microseconds), whatever integer type it has.
pub(crate) fn int_column(batch: &RecordBatch, name: &str) -> Result<arrow::array::Int64Array> {
    let column = batch
        .column_by_name(name)
        .ok_or_else(|| DeployError::Invalid(format!("the rows have no column '{name}'")))?;
    let column = arrow::compute::cast(column, &DataType::Int64)
        .map_err(|e| DeployError::Invalid(format!("column '{name}': {e}")))?;
    Ok(column.as_primitive::<Int64Type>().clone())
}

/// A column as text (numbers and booleans written out).
pub(crate) fn text_column(batch: &RecordBatch, name: &str) -> Result<arrow::array::StringArray> {
    let column = batch
        .column_by_name(name)
        .ok_or_else(|| DeployError::Invalid(format!("the rows have no column '{name}'")))?;
    let column = arrow::compute::cast(column, &DataType::Utf8)
        .map_err(|e| DeployError::Invalid(format!("column '{name}': {e}")))?;
    Ok(column.as_string::<i32>().clone())
}

/// An item's categories from its `|`-separated text.
pub(crate) fn split_categories(text: &str) -> impl Iterator<Item = &str> {
    text.split('|').map(str::trim).filter(|c| !c.is_empty())
}

/// Each user trait column with its values in index order.
type Traits = Vec<(String, Vec<String>)>;

/// A user's latest row in the training data: its time, traits and age.
type UserRow = (i64, Vec<Option<String>>, Option<i64>);

/// The items (latest row per id), users and interactions over dense indices.
fn build_dataset(
    spec: &RecommenderSpec,
    item_key: &str,
    item_time: &str,
    item_rows: &[RecordBatch],
    interaction_rows: &[RecordBatch],
) -> Result<(Dataset, Traits, usize)> {
    // Items: the latest row per id (rows come in log order; a later one of the same event time
    // wins, as online).
    let mut latest: BTreeMap<i64, (i64, Option<String>, Option<i64>)> = BTreeMap::new();
    let mut category_names = BTreeSet::new();
    for batch in item_rows {
        let ids = int_column(batch, item_key)?;
        let times = int_column(batch, item_time)?;
        let categories = spec
            .items
            .categories
            .as_deref()
            .map(|c| text_column(batch, c))
            .transpose()?;
        let years = spec
            .items
            .year
            .as_deref()
            .map(|c| int_column(batch, c))
            .transpose()?;
        for row in 0..batch.num_rows() {
            let time = times.value(row);
            let cats = categories
                .as_ref()
                .filter(|c| c.is_valid(row))
                .map(|c| c.value(row).to_owned());
            if let Some(c) = &cats {
                category_names.extend(split_categories(c).map(str::to_owned));
            }
            let year = years
                .as_ref()
                .filter(|y| y.is_valid(row))
                .map(|y| y.value(row));
            let id = ids.value(row);
            if latest.get(&id).is_none_or(|(t, ..)| *t <= time) {
                latest.insert(id, (time, cats, year));
            }
        }
    }
    let category_names: Vec<String> = category_names.into_iter().collect();
    let category_index: HashMap<&str, u16> = category_names
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i as u16))
        .collect();
    let items: Vec<Item> = latest
        .iter()
        .map(|(&id, (_, cats, year))| Item {
            id,
            title: String::new(),
            categories: cats
                .as_deref()
                .map(|c| split_categories(c).map(|c| category_index[c]).collect())
                .unwrap_or_default(),
            year: year.and_then(|y| u16::try_from(y).ok()),
        })
        .collect();
    let item_index: HashMap<i64, u32> = items
        .iter()
        .enumerate()
        .map(|(i, it)| (it.id, i as u32))
        .collect();

    // Users and interactions from the view's rows; a user's features are those of their
    // latest interaction.
    let trait_columns: Vec<String> = spec
        .users
        .traits
        .iter()
        .map(|t| format!("user_{t}"))
        .collect();
    let age_column = spec.users.age.as_ref().map(|a| format!("user_{a}"));
    let mut trait_values: Vec<BTreeSet<String>> = vec![BTreeSet::new(); trait_columns.len()];
    let mut user_rows: BTreeMap<i64, UserRow> = BTreeMap::new();
    let mut events: Vec<(i64, i64, i64)> = Vec::new();
    let mut unknown_items = 0;
    for batch in interaction_rows {
        let users = int_column(batch, &spec.interactions.user)?;
        let item_ids = int_column(batch, &spec.interactions.item)?;
        let time_column = batch
            .schema()
            .fields()
            .iter()
            .find(|f| matches!(f.data_type(), DataType::Timestamp(..)))
            .map(|f| f.name().clone())
            .ok_or_else(|| DeployError::Invalid("the training data has no event time".into()))?;
        let times = int_column(batch, &time_column)?;
        let traits = trait_columns
            .iter()
            .map(|c| text_column(batch, c))
            .collect::<Result<Vec<_>>>()?;
        let ages = age_column
            .as_deref()
            .map(|c| int_column(batch, c))
            .transpose()?;
        for row in 0..batch.num_rows() {
            let (user, item, time) = (users.value(row), item_ids.value(row), times.value(row));
            if !item_index.contains_key(&item) {
                unknown_items += 1;
                continue;
            }
            events.push((user, item, time));
            let values: Vec<Option<String>> = traits
                .iter()
                .map(|t| t.is_valid(row).then(|| t.value(row).to_owned()))
                .collect();
            for (set, v) in trait_values.iter_mut().zip(&values) {
                set.extend(v.clone());
            }
            let age = ages
                .as_ref()
                .filter(|a| a.is_valid(row))
                .map(|a| a.value(row));
            if user_rows.get(&user).is_none_or(|(t, ..)| *t <= time) {
                user_rows.insert(user, (time, values, age));
            }
        }
    }
    let traits: Traits = spec
        .users
        .traits
        .iter()
        .zip(trait_values)
        .map(|(name, values)| (name.clone(), values.into_iter().collect()))
        .collect();
    let trait_lookup: Vec<HashMap<&str, u16>> = traits
        .iter()
        .map(|(_, values)| {
            values
                .iter()
                .enumerate()
                .map(|(i, v)| (v.as_str(), i as u16))
                .collect()
        })
        .collect();
    let users: Vec<User> = user_rows
        .iter()
        .map(|(&id, (_, values, age))| User {
            id,
            age: age.and_then(|a| u8::try_from(a).ok()),
            traits: values
                .iter()
                .zip(&trait_lookup)
                .map(|(v, lookup)| v.as_deref().map_or(u16::MAX, |v| lookup[v]))
                .collect(),
        })
        .collect();
    let user_index: HashMap<i64, u32> = users
        .iter()
        .enumerate()
        .map(|(i, u)| (u.id, i as u32))
        .collect();
    // Time order, then the rows' order: the histories' "strictly before" reads it.
    events.sort_by_key(|&(_, _, t)| t);
    let interactions = events
        .into_iter()
        .map(|(user, item, time)| Interaction {
            user: user_index[&user],
            item: item_index[&item],
            time: time.div_euclid(1_000_000),
            weight: 1.0,
        })
        .collect();
    let dataset = Dataset {
        users,
        items,
        interactions,
        category_names,
        trait_sizes: traits.iter().map(|(_, v)| v.len()).collect(),
        // The vocabulary keeps them with their columns' names.
        trait_values: Vec::new(),
    };
    Ok((dataset, traits, unknown_items))
}

/// Writes every item's embedding to the item-embedding group (created, indexed, when missing)
/// and waits until its index holds them.
async fn write_embeddings(
    store: &FeatureStore,
    spec: &RecommenderSpec,
    item_key: &str,
    data: &Dataset,
    vectors: &[Vec<f32>],
) -> Result<usize> {
    let name = &spec.items.embeddings;
    let dim = vectors.first().map_or(0, Vec::len);
    match store
        .catalog()
        .get_feature_group(name, None)
        .map_err(StoreError::from)?
    {
        Some(existing) => {
            let fits = existing.spec.vector_index.as_ref().is_some_and(|index| {
                existing.spec.columns.iter().any(|c| {
                    c.name == index.column
                        && c.ty == kairos_types::FeatureType::Embedding { dim: dim as u32 }
                })
            });
            if !fits {
                return Err(DeployError::Invalid(format!(
                    "feature group '{name}' exists without an indexed embedding({dim}) column; \
                     name another group in items.embeddings, or delete it"
                )));
            }
        }
        None => {
            let group: FeatureGroupSpec = serde_json::from_value(serde_json::json!({
                "name": name,
                "description": format!("item embeddings of recommender '{}'", spec.name),
                "columns": [
                    { "name": item_key, "type": "int64" },
                    { "name": "ts", "type": "timestamp" },
                    { "name": "embedding", "type": format!("embedding({dim})") },
                ],
                "primary_key": [item_key],
                "event_time": "ts",
                "vector_index": { "column": "embedding", "metric": "dot" },
            }))
            .map_err(|e| DeployError::Invalid(e.to_string()))?;
            store.create_group(group).await?;
        }
    }
    let existing = group(store, name)?;
    let vector_column = existing
        .spec
        .vector_index
        .as_ref()
        .map(|i| i.column.clone())
        .unwrap_or_default();
    let now = chrono::Utc::now().to_rfc3339();
    let mut acks = Vec::new();
    for chunk in data
        .items
        .iter()
        .zip(vectors)
        .collect::<Vec<_>>()
        .chunks(5_000)
    {
        let mut body = String::new();
        for (item, vector) in chunk {
            let mut row = serde_json::Map::new();
            row.insert(item_key.into(), item.id.into());
            row.insert(existing.spec.event_time.clone(), now.clone().into());
            row.insert(vector_column.clone(), serde_json::json!(vector));
            body.push_str(&serde_json::Value::Object(row).to_string());
            body.push('\n');
        }
        let ack = store
            .insert(
                name,
                None,
                Format::JsonLines,
                Bytes::from(body),
                InsertOptions::default(),
            )
            .await?;
        acks.push(ack);
    }
    for ack in &acks {
        store.wait_indexed(name, None, ack).await?;
    }
    Ok(data.items.len())
}
