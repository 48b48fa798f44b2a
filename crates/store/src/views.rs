//! Feature views on the store: apply and describe definitions, materialise point-in-time
//! correct training datasets from the offline store, and serve online feature vectors.
//!
//! The decisions live in `kairos-view` (the plan, the join, the datasets, the vectors); this
//! module does the I/O around them: catalog reads, offline scans pushed into the join, online
//! multi-gets, files under `<data_dir>/training_datasets`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use kairos_offline::{INGESTED_AT, OFFSET, ReadFilter};
use kairos_transform::{FunctionRegistry, UserFunction};
use kairos_types::value::format_timestamp;
use kairos_types::{FeatureGroupSpec, FeatureType, Format, LogCut, Value, ingest};
use kairos_view::dataset::{decode_split, split_file};
use kairos_view::vector::EntryStatus;
use kairos_view::{
    AsofJoin, AsofOptions, AsofOutput, AsofStage, DatasetWriter, FeatureView, FeatureViewSpec,
    RightInput, SplitName, TrainingDataset, TrainingDatasetRequest, TransformSet, VectorBatch,
    ViewPlan,
};
use serde::{Deserialize, Serialize};

use crate::{FeatureStore, GroupRuntime, KeyStatus, Result, StoreError, parse_key};

/// The storage area of training datasets: `<view>/v<version>/td<version>/<split>.parquet`.
const DATASETS: &str = "training_datasets";

/// Resolved views by (name, version asked for; `None` is the latest).
pub(crate) type ViewCache = HashMap<(String, Option<u32>), Arc<ResolvedView>>;

/// Names a training dataset: (view, view version, dataset version).
pub(crate) type DatasetKey = (String, u32, u32);

/// A view with its plan, cached so online reads do not resolve the definition each time.
#[derive(Debug)]
pub(crate) struct ResolvedView {
    pub(crate) view: FeatureView,
    pub(crate) plan: ViewPlan,
}

/// Online vectors as transports answer them: the column names once, then one result per entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VectorAnswer {
    pub view: String,
    pub view_version: u32,
    /// The training dataset whose frozen transforms were applied, if one was named.
    pub training_dataset_version: Option<u32>,
    pub columns: Vec<String>,
    pub vectors: Vec<VectorResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VectorResult {
    pub status: EntryStatus,
    /// The feature groups that had no row for this entry; their features are null.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    #[schema(value_type = Vec<Object>)]
    pub values: Vec<serde_json::Value>,
}

/// Online vectors as one Arrow batch with each entry's status: what the clients answer, in
/// process or from a server's `?format=arrow` (Arrow IPC, the statuses in the schema's
/// metadata), and what the JSON answer is made from.
#[derive(Debug, Clone, PartialEq)]
pub struct Vectors {
    pub view: String,
    pub view_version: u32,
    pub training_dataset_version: Option<u32>,
    /// One row per entry, in the view's feature order.
    pub features: RecordBatch,
    pub statuses: Vec<EntryStatus>,
    /// Per entry, the feature groups that had no row.
    pub missing: Vec<Vec<String>>,
}

/// The schema metadata key of the vectors' answer as Arrow IPC: the rest of [`Vectors`] as JSON.
const VECTORS_METADATA: &str = "kairos.vectors";

/// [`Vectors`] less its batch: the metadata of its Arrow IPC form.
#[derive(Serialize, Deserialize)]
struct VectorsHeader {
    view: String,
    view_version: u32,
    training_dataset_version: Option<u32>,
    statuses: Vec<EntryStatus>,
    missing: Vec<Vec<String>>,
}

impl Vectors {
    /// The JSON answer: every value as JSON, row by row.
    pub fn to_answer(&self) -> VectorAnswer {
        let batch = &self.features;
        let schema = batch.schema();
        let types: Vec<Option<FeatureType>> = schema
            .fields()
            .iter()
            .map(|f| FeatureType::from_arrow(f.data_type()))
            .collect();
        let vectors = (0..batch.num_rows())
            .map(|row| VectorResult {
                status: self.statuses[row],
                missing: self.missing[row].clone(),
                values: batch
                    .columns()
                    .iter()
                    .zip(&types)
                    .map(|(c, ty)| {
                        ty.map_or(serde_json::Value::Null, |ty| {
                            Value::from_array(c, ty, row).to_json()
                        })
                    })
                    .collect(),
            })
            .collect();
        VectorAnswer {
            view: self.view.clone(),
            view_version: self.view_version,
            training_dataset_version: self.training_dataset_version,
            columns: schema.fields().iter().map(|f| f.name().clone()).collect(),
            vectors,
        }
    }

    /// One Arrow IPC stream: the batch, the rest in its schema's metadata.
    pub fn to_ipc(&self) -> Result<Bytes> {
        let header = VectorsHeader {
            view: self.view.clone(),
            view_version: self.view_version,
            training_dataset_version: self.training_dataset_version,
            statuses: self.statuses.clone(),
            missing: self.missing.clone(),
        };
        let header = serde_json::to_string(&header).map_err(|e| {
            StoreError::Internal(format!("the vectors' header cannot be written: {e}"))
        })?;
        let schema = self
            .features
            .schema()
            .as_ref()
            .clone()
            .with_metadata(HashMap::from([(VECTORS_METADATA.to_string(), header)]));
        let batch = self
            .features
            .clone()
            .with_schema(Arc::new(schema))
            .map_err(StoreError::internal)?;
        kairos_types::export::encode_ipc(&batch).map_err(StoreError::internal)
    }

    /// Reads [`Self::to_ipc`]'s stream back.
    pub fn from_ipc(bytes: Bytes) -> Result<Vectors> {
        let bad =
            |why: String| StoreError::Internal(format!("the vectors' answer is unreadable: {why}"));
        let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
            .map_err(|e| bad(e.to_string()))?;
        let schema = reader.schema();
        let header = schema
            .metadata()
            .get(VECTORS_METADATA)
            .ok_or_else(|| bad(format!("its schema has no {VECTORS_METADATA} metadata")))?;
        let header: VectorsHeader = serde_json::from_str(header).map_err(|e| bad(e.to_string()))?;
        let batches = reader
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        let plain = Arc::new(schema.as_ref().clone().with_metadata(HashMap::new()));
        let features =
            arrow::compute::concat_batches(&plain, &batches).map_err(|e| bad(e.to_string()))?;
        if header.statuses.len() != features.num_rows()
            || header.missing.len() != features.num_rows()
        {
            return Err(bad(format!(
                "{} rows, {} statuses",
                features.num_rows(),
                header.statuses.len()
            )));
        }
        Ok(Vectors {
            view: header.view,
            view_version: header.view_version,
            training_dataset_version: header.training_dataset_version,
            features,
            statuses: header.statuses,
            missing: header.missing,
        })
    }
}

/// A spine: the rows to build training data for, instead of the root group's rows.
#[derive(Debug, Clone)]
pub struct Spine {
    pub name: String,
    pub format: Format,
    pub bytes: Bytes,
}

/// Tuning of the point-in-time join.
#[derive(Debug, Clone)]
pub struct JoinTuning {
    pub memory_budget: usize,
}

impl FeatureStore {
    /// The user functions on-demand features may call.
    pub fn functions(&self) -> &FunctionRegistry {
        &self.inner.functions
    }

    /// Registers a Rust function for on-demand features.
    pub fn register_function(&self, function: UserFunction) -> Result<()> {
        self.inner.functions.register(function)?;
        self.inner.views.write().expect("lock").clear();
        Ok(())
    }

    /// Validates a view definition against the catalog and stores it as the next version of its
    /// name, with every group version pinned.
    pub async fn apply_view(&self, spec: FeatureViewSpec) -> Result<FeatureView> {
        let catalog = &self.inner.catalog;
        let lookup = |name: &str, version: Option<u32>| {
            catalog.get_feature_group(name, version).ok().flatten()
        };
        let plan = ViewPlan::resolve(&spec, &lookup, &self.inner.functions)?;
        let view = catalog.create_feature_view(&plan.pinned(&spec))?;
        self.inner.views.write().expect("lock").clear();
        Ok(view)
    }

    pub fn list_views(&self) -> Result<Vec<FeatureView>> {
        Ok(self.inner.catalog.list_feature_views()?)
    }

    /// A view (the latest version unless one is given) with its training datasets.
    pub fn describe_view(&self, name: &str, version: Option<u32>) -> Result<ViewStatus> {
        let resolved = self.resolve_view(name, version)?;
        let view = resolved.view.clone();
        let training_datasets = self
            .inner
            .catalog
            .list_training_datasets(name, view.version)?
            .into_iter()
            .map(|td| TrainingDatasetSummary {
                version: td.version,
                created_at: td.created_at,
                row_counts: td.row_counts,
            })
            .collect();
        let columns = resolved
            .plan
            .features
            .iter()
            .map(|(n, t)| (n.clone(), t.to_string()))
            .collect();
        Ok(ViewStatus {
            view,
            columns,
            labels: resolved
                .plan
                .labels
                .iter()
                .map(|(l, _)| l.clone())
                .collect(),
            training_datasets,
        })
    }

    /// Forgets the resolved views, so the next use reads the catalog again (a view changed
    /// elsewhere: another replica, another process).
    pub fn forget_views(&self) {
        self.inner.views.write().expect("lock").clear();
    }

    /// Deletes one version of a view with its training datasets.
    pub async fn delete_view(&self, name: &str, version: u32) -> Result<()> {
        if !self.inner.catalog.delete_feature_view(name, version)? {
            return Err(StoreError::NotFound(format!(
                "feature view '{name}' has no version {version}"
            )));
        }
        self.inner.views.write().expect("lock").clear();
        self.inner
            .storage
            .delete_all(&[DATASETS, name, &format!("v{version}")])
            .await?;
        Ok(())
    }

    pub(crate) fn resolve_view(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<Arc<ResolvedView>> {
        let key = (name.to_string(), version);
        if let Some(found) = self.inner.views.read().expect("lock").get(&key) {
            return Ok(found.clone());
        }
        let view = self
            .inner
            .catalog
            .get_feature_view(name, version)?
            .ok_or_else(|| match version {
                Some(v) => {
                    StoreError::NotFound(format!("feature view '{name}' has no version {v}"))
                }
                None => StoreError::NotFound(format!("feature view '{name}' not found")),
            })?;
        let catalog = &self.inner.catalog;
        let lookup = |n: &str, v: Option<u32>| catalog.get_feature_group(n, v).ok().flatten();
        let plan = ViewPlan::resolve(&view.spec, &lookup, &self.inner.functions)?;
        let resolved = Arc::new(ResolvedView { view, plan });
        self.inner
            .views
            .write()
            .expect("lock")
            .insert(key, resolved.clone());
        Ok(resolved)
    }

    /// Removes what builds that never finished left: training-dataset folders the catalog
    /// does not list (a crash between writing the files and recording them) and the local
    /// scratch files of builds; returns how many datasets it removed. [`FeatureStore::open`]
    /// runs it, when no build of this data dir can be running (the process holding the store
    /// is the only one that builds); call it only while none runs. A bucket that replicas share
    /// is not swept: another replica's build may be between its files and its catalog entry.
    pub fn sweep_unfinished_builds(&self) -> Result<usize> {
        let data_dir = &self.inner.config.data_dir;
        let _ = std::fs::remove_dir_all(data_dir.join("tmp"));
        if self.inner.storage.is_shared() {
            return Ok(0);
        }
        let root = data_dir.join(DATASETS);
        let entries = |dir: &std::path::Path| -> Vec<(String, PathBuf)> {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
                .collect()
        };
        let mut removed = 0;
        for (view, view_dir) in entries(&root) {
            for (version, version_dir) in entries(&view_dir) {
                for (td, td_dir) in entries(&version_dir) {
                    let numbers = version
                        .strip_prefix('v')
                        .and_then(|v| v.parse::<u32>().ok())
                        .zip(td.strip_prefix("td").and_then(|t| t.parse::<u32>().ok()));
                    let Some((view_version, td_version)) = numbers else {
                        continue;
                    };
                    let listed = self.inner.catalog.get_training_dataset(
                        &view,
                        view_version,
                        Some(td_version),
                    )?;
                    if listed.is_none() {
                        tracing::warn!(path = %td_dir.display(), "removed a training dataset whose build never finished");
                        std::fs::remove_dir_all(&td_dir).map_err(StoreError::internal)?;
                        removed += 1;
                    }
                }
            }
        }
        Ok(removed)
    }

    /// Materialises a point-in-time correct training dataset of a view: Parquet files per split
    /// under the data dir, statistics of the training split, the transforms fitted on them, and
    /// the metadata in the catalog.
    pub async fn create_training_dataset(
        &self,
        name: &str,
        version: Option<u32>,
        request: TrainingDatasetRequest,
        spine: Option<Spine>,
        tuning: Option<JoinTuning>,
    ) -> Result<TrainingDataset> {
        request.split.validate()?;
        let resolved = self.resolve_view(name, version)?;
        let (view, plan) = (&resolved.view, &resolved.plan);
        let td_version = self
            .inner
            .catalog
            .next_training_dataset_version(name, view.version)?;
        let parts = [
            DATASETS.to_string(),
            name.to_string(),
            format!("v{}", view.version),
            format!("td{td_version}"),
        ];
        // Built in the data dir's scratch space, then published to the storage whole.
        let target = self
            .inner
            .config
            .data_dir
            .join("tmp")
            .join(format!("build-{}", parts[1..].join("-")));

        let root_rt = self.runtime(&plan.root.spec.name, Some(plan.root.version))?;
        // Feature joins (point-in-time), then label joins (the latest row known now).
        let all_joins: Vec<(&kairos_view::JoinPlan, bool)> = plan
            .joins
            .iter()
            .map(|j| (j, false))
            .chain(plan.label_joins.iter().map(|j| (j, true)))
            .collect();
        let join_rts = all_joins
            .iter()
            .map(|(j, _)| self.runtime(&j.group.spec.name, Some(j.group.version)))
            .collect::<Result<Vec<_>>>()?;
        // The dataset holds every row acknowledged before it was asked for, and nothing later:
        // each group is read up to the log ends it had now (a cut of each of its partitions),
        // once its offline table is there. The recorded offset is the rows the log held.
        let mut log_offsets = BTreeMap::new();
        let mut cuts = HashMap::new();
        for rt in std::iter::once(&root_rt).chain(&join_rts) {
            let ends = rt.log.end_offsets().await?;
            for &(partition, end) in &ends {
                crate::wait_offline(rt, partition, end).await?;
            }
            let rows: u64 = ends.iter().map(|(_, end)| end).sum();
            log_offsets.insert(rt.group.id().to_string(), rows);
            let cut = LogCut::new(ends.iter().map(|&(_, end)| end).collect());
            cuts.insert(rt.group.id().to_string(), cut);
        }
        let before = |rt: &GroupRuntime| cuts.get(&rt.group.id().to_string()).cloned();

        let mut options = AsofOptions {
            strict: request.strict,
            as_known_at: request.as_known_at,
            spill_dir: self.inner.config.data_dir.join("tmp"),
            ..AsofOptions::default()
        };
        if let Some(t) = tuning {
            options.memory_budget = t.memory_budget;
        }
        std::fs::create_dir_all(&options.spill_dir).map_err(StoreError::internal)?;

        // The left side: the spine's rows, or the root group's rows in the time range.
        let root_spec = &plan.root.spec;
        let mut left: Left = match &spine {
            Some(spine) => {
                let batch = parse_spine(plan, spine, &request)?;
                Left::Batches(batch.schema(), vec![batch])
            }
            None => {
                let filter = ReadFilter {
                    start: request.start,
                    end: request.end,
                    as_of: None,
                    before: before(&root_rt),
                };
                let stream = self
                    .inner
                    .offline
                    .scan(&root_rt.group.id(), root_spec, filter)
                    .await?;
                Left::Scan(kairos_offline::output_schema(root_spec), stream)
            }
        };
        let first_columns = left.schema();
        let mut stages: Vec<(AsofStage, Vec<Arc<GroupRuntime>>)> = Vec::new();
        if spine.is_some() {
            // The root group joins the spine on its own key, for the root columns the spine lacks.
            let present = first_columns.clone();
            let features = plan
                .root_columns()
                .iter()
                .filter(|c| present.column_with_name(c).is_none())
                .map(|c| (c.clone(), c.clone()))
                .collect();
            stages.push((
                AsofStage {
                    left_keys: root_spec.primary_key.clone(),
                    left_time: root_spec.event_time.clone(),
                    rights: vec![right_input(root_spec, features, None)],
                },
                vec![root_rt.clone()],
            ));
        }
        // Joins on the same root columns run in one stage.
        for ((join, latest), rt) in all_joins.iter().zip(&join_rts) {
            let features = join
                .features
                .iter()
                .map(|(s, o, _)| (s.clone(), o.clone()))
                .collect();
            let mut input = right_input(&join.group.spec, features, join.lookback_micros);
            input.latest = *latest;
            // The first stage's left side is the spine or the root rows; a join reading a root
            // column the spine lacks runs after the root group has been joined.
            let ready_first = join
                .left
                .iter()
                .all(|c| first_columns.column_with_name(c).is_some());
            let found = stages
                .iter_mut()
                .enumerate()
                .find(|(i, (s, _))| s.left_keys == join.left && (*i > 0 || ready_first))
                .map(|(_, stage)| stage);
            match found {
                Some((stage, rts)) => {
                    stage.rights.push(input);
                    rts.push(rt.clone());
                }
                None => stages.push((
                    AsofStage {
                        left_keys: join.left.clone(),
                        left_time: root_spec.event_time.clone(),
                        rights: vec![input],
                    },
                    vec![rt.clone()],
                )),
            }
        }

        for (stage, rts) in stages {
            let right_schemas: Vec<_> = rts
                .iter()
                .map(|rt| kairos_offline::output_schema(&rt.group.spec))
                .collect();
            let left_schema = left.schema();
            let latest: Vec<bool> = stage.rights.iter().map(|r| r.latest).collect();
            let mut join = AsofJoin::new(stage, &left_schema, &right_schemas, options.clone())?;
            join = match left {
                // Root rows stream from the offline store into the join, which spills past
                // its budget: the root group is never held whole.
                Left::Scan(_, mut stream) => {
                    while let Some(batch) = stream.next().await {
                        join.push_left(batch?)?;
                    }
                    join
                }
                left => tokio::task::spawn_blocking(move || -> Result<AsofJoin> {
                    for batch in left.into_batches() {
                        join.push_left(batch?)?;
                    }
                    Ok(join)
                })
                .await
                .map_err(StoreError::internal)??,
            };
            let end = join.left_max_time().map(|t| t.saturating_add(1));
            for (i, rt) in rts.iter().enumerate() {
                let filter = ReadFilter {
                    start: None,
                    end: if latest[i] { None } else { end },
                    as_of: None,
                    before: before(rt),
                };
                let mut stream = self
                    .inner
                    .offline
                    .scan(&rt.group.id(), &rt.group.spec, filter)
                    .await?;
                while let Some(batch) = stream.next().await {
                    join.push_right(i, batch?)?;
                }
            }
            left = Left::Joined(join.finish()?);
        }

        if let Left::Scan(schema, stream) = left {
            // No join at all: the root rows are the training rows.
            left = Left::Batches(schema, stream.collect().await?);
        }
        let columns = plan.training_columns();
        let schema = kairos_view::rows::schema_of(&columns, root_spec.primary_key.len() + 1);
        let stats_columns: Vec<String> = plan
            .features
            .iter()
            .chain(&plan.labels)
            .map(|(n, _)| n.clone())
            .collect();
        let mut writer = DatasetWriter::new(
            &target,
            schema,
            request.split.clone(),
            root_spec.primary_key.clone(),
            root_spec.event_time.clone(),
            &stats_columns,
        )?;
        let resolved_for_rows = resolved.clone();
        let (row_counts, statistics, unlabelled) =
            tokio::task::spawn_blocking(move || -> Result<_> {
                let plan = &resolved_for_rows.plan;
                let required = plan.root.spec.primary_key.len() + 1;
                let mut unlabelled = 0;
                for batch in left.into_batches() {
                    let (batch, dropped) = without_unknown_labels(plan, batch?)?;
                    unlabelled += dropped;
                    let rows = plan.compute_on_demand(&batch)?;
                    writer.write(&plan.select(&rows, &columns, required)?)?;
                }
                let (row_counts, statistics) = writer.finish()?;
                Ok((row_counts, statistics, unlabelled))
            })
            .await
            .map_err(StoreError::internal)
            .and_then(|written| written)
            .inspect_err(|_| {
                // A refused or failed build leaves no files behind.
                let _ = std::fs::remove_dir_all(&target);
            })?;
        let transforms = match TransformSet::fit(plan, &statistics) {
            Ok(t) => t,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&target);
                return Err(e.into());
            }
        };
        if let Err(e) = self
            .inner
            .storage
            .publish_dir(&target, &parts.each_ref().map(String::as_str))
            .await
        {
            let _ = std::fs::remove_dir_all(&target);
            return Err(e.into());
        }
        let dataset = TrainingDataset {
            view: name.to_string(),
            view_version: view.version,
            version: td_version,
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            description: request.description.clone(),
            start: request.start.map(format_timestamp),
            end: request.end.map(format_timestamp),
            split: request.split.clone(),
            strict: request.strict,
            as_known_at: request.as_known_at,
            spine: spine.map(|s| s.name),
            columns: plan
                .training_columns()
                .into_iter()
                .map(|(n, t)| (n, t.to_string()))
                .collect(),
            row_counts,
            unlabelled,
            log_offsets,
            statistics,
            transforms,
            path: parts.join("/"),
        };
        kairos_types::fault::point("dataset.before_catalog");
        self.inner.catalog.save_training_dataset(&dataset)?;
        Ok(dataset)
    }

    /// A training dataset's metadata; the latest of the view version when `version` is `None`.
    pub fn training_dataset(
        &self,
        name: &str,
        view_version: Option<u32>,
        version: Option<u32>,
    ) -> Result<TrainingDataset> {
        let view = self.resolve_view(name, view_version)?.view.version;
        self.inner
            .catalog
            .get_training_dataset(name, view, version)?
            .ok_or_else(|| match version {
                Some(v) => StoreError::NotFound(format!(
                    "feature view '{name}' v{view} has no training dataset {v}"
                )),
                None => StoreError::NotFound(format!(
                    "feature view '{name}' v{view} has no training dataset"
                )),
            })
    }

    /// Reads one split of a training dataset, with its frozen transforms applied when
    /// `transformed` (what a model trains on) or as stored.
    pub async fn read_training_dataset(
        &self,
        dataset: &TrainingDataset,
        split: SplitName,
        transformed: bool,
    ) -> Result<Vec<RecordBatch>> {
        if !transformed {
            return self.read_split(dataset, split).await;
        }
        self.read_training_dataset_with(dataset, split, &dataset.transforms)
            .await
    }

    /// The rows of one split as stored (none when the split has no file).
    async fn read_split(
        &self,
        dataset: &TrainingDataset,
        split: SplitName,
    ) -> Result<Vec<RecordBatch>> {
        let file = split_file(split);
        let parts: Vec<&str> = dataset
            .path
            .split('/')
            .chain(std::iter::once(file.as_str()))
            .collect();
        let Some(bytes) = self.inner.storage.read(&parts).await? else {
            return Ok(Vec::new());
        };
        tokio::task::spawn_blocking(move || decode_split(bytes))
            .await
            .map_err(StoreError::internal)?
            .map_err(StoreError::from)
    }

    /// Reads a split of `dataset` through `transforms` frozen with another dataset of the
    /// same view version (a model trained on that one, evaluated on this one's rows).
    pub async fn read_training_dataset_with(
        &self,
        dataset: &TrainingDataset,
        split: SplitName,
        transforms: &kairos_view::TransformSet,
    ) -> Result<Vec<RecordBatch>> {
        let batches = self.read_split(dataset, split).await?;
        let resolved = self.resolve_view(&dataset.view, Some(dataset.view_version))?;
        let plan = &resolved.plan;
        let keys = plan.keys();
        let mut head = keys.clone();
        head.push((plan.event_time().to_string(), FeatureType::Timestamp));
        let labels = &plan.labels;
        batches
            .iter()
            .map(|b| {
                let features = transforms.apply(&plan.select(b, &plan.features, 0)?)?;
                let head = plan.select(b, &head, head.len())?;
                let labels = plan.select(b, labels, 0)?;
                let mut fields: Vec<arrow::datatypes::Field> = Vec::new();
                let mut columns = Vec::new();
                for part in [&head, &features, &labels] {
                    fields.extend(part.schema().fields().iter().map(|f| f.as_ref().clone()));
                    columns.extend(part.columns().iter().cloned());
                }
                RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), columns)
                    .map_err(StoreError::internal)
            })
            .collect()
    }

    /// Online feature vectors for entries of the view's root key, with request-time values:
    /// one multi-get per feature group, then the same on-demand features and (when a training
    /// dataset version is named) the same frozen transforms as its training data.
    pub async fn feature_vectors(
        &self,
        name: &str,
        version: Option<u32>,
        entries: &[serde_json::Value],
        request: &[serde_json::Map<String, serde_json::Value>],
        training_dataset: Option<u32>,
    ) -> Result<VectorBatch> {
        let resolved = self.resolve_view(name, version)?;
        self.vectors_of(&resolved, entries, request, training_dataset)
            .await
    }

    async fn vectors_of(
        &self,
        resolved: &ResolvedView,
        entries: &[serde_json::Value],
        request: &[serde_json::Map<String, serde_json::Value>],
        training_dataset: Option<u32>,
    ) -> Result<VectorBatch> {
        let plan = &resolved.plan;
        let transforms = match training_dataset {
            None => Arc::new(TransformSet::default()),
            Some(v) => self.frozen_transforms(&resolved.view, v)?,
        };
        if request.len() > 1 && request.len() != entries.len() {
            return Err(StoreError::BadRequest(format!(
                "request: give one object for all entries or one per entry ({} entries, {} objects)",
                entries.len(),
                request.len()
            )));
        }
        let root_spec = &plan.root.spec;
        let keys = entries
            .iter()
            .enumerate()
            .map(|(i, e)| parse_key(root_spec, i, e))
            .collect::<Result<Vec<_>>>()?;
        let now = self.inner.clock.now_micros();
        let mut times = Vec::with_capacity(entries.len());
        let mut values = Vec::with_capacity(entries.len());
        for i in 0..entries.len() {
            let given = request.get(if request.len() == 1 { 0 } else { i });
            let (t, v) = parse_request(plan, i, given, now)?;
            times.push(t);
            values.push(v);
        }

        let lookup_started = std::time::Instant::now();
        let root_rows = if plan.needs_root_lookup() {
            let rt = self.runtime(&root_spec.name, Some(plan.root.version))?;
            let found = self.lookup(&rt, &keys).await?;
            Some(
                found
                    .into_iter()
                    .map(|l| {
                        (l.status == KeyStatus::Present)
                            .then_some(l.values)
                            .flatten()
                    })
                    .collect::<Vec<_>>(),
            )
        } else {
            None
        };
        let root = plan.root_values(&keys, &times, &values, root_rows.as_deref());
        let lookups = plan.joins.iter().enumerate().map(|(j, join)| {
            let keys = plan.join_keys(&root, j);
            let times = &times;
            async move {
                let rt = self.runtime(&join.group.spec.name, Some(join.group.version))?;
                let wanted: Vec<Vec<Value>> = keys.iter().flatten().cloned().collect();
                let mut found = self.lookup(&rt, &wanted).await?.into_iter();
                Ok::<_, StoreError>(
                    keys.iter()
                        .enumerate()
                        .map(|(i, k)| {
                            k.as_ref()?;
                            let l = found.next().expect("one lookup per key");
                            let fresh = match (join.lookback_micros, l.event_time) {
                                (Some(lb), Some(et)) => et >= times[i].saturating_sub(lb),
                                _ => true,
                            };
                            (l.status == KeyStatus::Present && fresh)
                                .then_some(l.values)
                                .flatten()
                        })
                        .collect::<Vec<_>>(),
                )
            }
        });
        let joined = futures::future::try_join_all(lookups).await?;
        let lookup = lookup_started.elapsed();
        let mut vectors = plan.assemble(&root, &joined, &transforms)?;
        vectors.stages.lookup = lookup;
        Ok(vectors)
    }

    /// What a request for the view's online vectors carries: the root's key columns, the
    /// request-time values and the event-time column (optional in a request; now by default).
    pub fn view_inputs(&self, name: &str, version: Option<u32>) -> Result<ViewInputs> {
        let resolved = self.resolve_view(name, version)?;
        let plan = &resolved.plan;
        let root = &plan.root.spec;
        let typed = |names: &[String]| {
            names
                .iter()
                .map(|n| (n.clone(), root.column(n).expect("root column").ty))
                .collect()
        };
        Ok(ViewInputs {
            view_version: resolved.view.version,
            keys: typed(&root.primary_key),
            request: typed(&plan.request),
            event_time: root.event_time.clone(),
        })
    }

    /// [`Self::feature_vectors`] as transports answer them: named by the view's version, one
    /// batch with each entry's status.
    pub async fn online_vectors(
        &self,
        name: &str,
        version: Option<u32>,
        entries: &[serde_json::Value],
        request: &[serde_json::Map<String, serde_json::Value>],
        training_dataset: Option<u32>,
    ) -> Result<Vectors> {
        let resolved = self.resolve_view(name, version)?;
        let vectors = self
            .vectors_of(&resolved, entries, request, training_dataset)
            .await?;
        Ok(Vectors {
            view: name.to_string(),
            view_version: resolved.view.version,
            training_dataset_version: training_dataset,
            features: vectors.features,
            statuses: vectors.statuses,
            missing: vectors.missing,
        })
    }

    fn frozen_transforms(&self, view: &FeatureView, td_version: u32) -> Result<Arc<TransformSet>> {
        let key = (view.spec.name.clone(), view.version, td_version);
        if let Some(t) = self.inner.transforms.read().expect("lock").get(&key) {
            return Ok(t.clone());
        }
        let td = self
            .inner
            .catalog
            .get_training_dataset(&view.spec.name, view.version, Some(td_version))?
            .ok_or_else(|| {
                StoreError::NotFound(format!(
                    "feature view '{}' v{} has no training dataset {td_version}",
                    view.spec.name, view.version
                ))
            })?;
        let t = Arc::new(td.transforms);
        self.inner
            .transforms
            .write()
            .expect("lock")
            .insert(key, t.clone());
        Ok(t)
    }
}

/// Request-time values as JSON transports carry them — absent, one object for every entry, or
/// a list of one object per entry — as the list [`FeatureStore::feature_vectors`] takes.
pub fn request_objects(
    value: Option<serde_json::Value>,
) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    let not_object =
        || StoreError::BadRequest("request: expected an object or a list of objects".into());
    match value {
        None | Some(serde_json::Value::Null) => Ok(Vec::new()),
        Some(serde_json::Value::Object(map)) => Ok(vec![map]),
        Some(serde_json::Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                serde_json::Value::Object(map) => Ok(map),
                _ => Err(not_object()),
            })
            .collect(),
        Some(_) => Err(not_object()),
    }
}

/// The inputs of a view's online vectors; see [`FeatureStore::view_inputs`].
#[derive(Debug, Clone, PartialEq)]
pub struct ViewInputs {
    pub view_version: u32,
    pub keys: Vec<(String, FeatureType)>,
    pub request: Vec<(String, FeatureType)>,
    pub event_time: String,
}

/// A view, its vector columns and its training datasets.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ViewStatus {
    #[serde(flatten)]
    pub view: FeatureView,
    /// The online vector's columns (before transforms) and their types.
    pub columns: Vec<(String, String)>,
    pub labels: Vec<String>,
    pub training_datasets: Vec<TrainingDatasetSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TrainingDatasetSummary {
    pub version: u32,
    pub created_at: String,
    #[schema(value_type = Object)]
    pub row_counts: BTreeMap<SplitName, u64>,
}

/// The rows of `batch` whose label-join labels are all known, and how many were not: a row
/// whose label has not arrived yet is not a training row.
fn without_unknown_labels(plan: &ViewPlan, batch: RecordBatch) -> Result<(RecordBatch, u64)> {
    let mut known: Option<arrow::array::BooleanArray> = None;
    for (_, label, _) in plan.label_joins.iter().flat_map(|j| &j.features) {
        let column = batch.column_by_name(label).ok_or_else(|| {
            StoreError::Internal(format!("the joined rows lack the label '{label}'"))
        })?;
        let present = arrow::compute::is_not_null(column).map_err(StoreError::internal)?;
        known = Some(match known {
            Some(k) => arrow::compute::and(&k, &present).map_err(StoreError::internal)?,
            None => present,
        });
    }
    let Some(known) = known else {
        return Ok((batch, 0));
    };
    let dropped = (batch.num_rows() - known.true_count()) as u64;
    if dropped == 0 {
        return Ok((batch, 0));
    }
    let kept = arrow::compute::filter_record_batch(&batch, &known).map_err(StoreError::internal)?;
    Ok((kept, dropped))
}

fn right_input(
    spec: &FeatureGroupSpec,
    features: Vec<(String, String)>,
    lookback: Option<i64>,
) -> RightInput {
    RightInput {
        keys: spec.primary_key.clone(),
        time: spec.event_time.clone(),
        ingested_at: Some(INGESTED_AT.to_string()),
        tie_break: Some(OFFSET.to_string()),
        features,
        lookback,
        latest: false,
    }
}

/// The left input of a join stage.
enum Left {
    Batches(arrow::datatypes::SchemaRef, Vec<RecordBatch>),
    Scan(arrow::datatypes::SchemaRef, kairos_offline::OfflineStream),
    Joined(AsofOutput),
}

impl Left {
    fn schema(&self) -> arrow::datatypes::SchemaRef {
        match self {
            Left::Batches(schema, _) | Left::Scan(schema, _) => schema.clone(),
            Left::Joined(out) => out.schema(),
        }
    }

    fn into_batches(self) -> Box<dyn Iterator<Item = Result<RecordBatch>> + Send> {
        match self {
            Left::Batches(_, b) => Box::new(b.into_iter().map(Ok)),
            Left::Joined(out) => Box::new(out.map(|r| r.map_err(StoreError::from))),
            Left::Scan(..) => unreachable!("offline scans are read where they are awaited"),
        }
    }
}

/// Reads a spine: the root's key and event-time columns, and optionally labels and request
/// columns; anything else is refused by name. Columns the spine leaves out come from the root
/// group, point-in-time.
fn parse_spine(
    plan: &ViewPlan,
    spine: &Spine,
    request: &TrainingDatasetRequest,
) -> Result<RecordBatch> {
    let root = &plan.root.spec;
    let decoded = ingest::decode(root, spine.format, spine.bytes.clone())?;
    let present = decoded.schema();
    let allowed = |c: &str| {
        root.primary_key.iter().any(|k| k == c)
            || c == root.event_time
            || plan.is_root_label(c)
            || plan.request.iter().any(|r| r == c)
    };
    if let Some(extra) = present.fields().iter().find(|f| !allowed(f.name())) {
        return Err(StoreError::BadRequest(format!(
            "spine {}: column '{}' is not a key, event-time, label or request column of '{}'",
            spine.name,
            extra.name(),
            root.name
        )));
    }
    let sub = FeatureGroupSpec {
        columns: root
            .columns
            .iter()
            .filter(|c| {
                present.column_with_name(&c.name).is_some()
                    || root.primary_key.contains(&c.name)
                    || c.name == root.event_time
            })
            .cloned()
            .collect(),
        ..root.clone()
    };
    let batch = ingest::conform(&sub, &decoded)
        .map_err(|e| StoreError::BadRequest(format!("spine {}: {e}", spine.name)))?;
    // The time range applies to the spine as to root rows.
    let times = batch.column_by_name(&root.event_time).expect("event time");
    let times =
        arrow::array::AsArray::as_primitive::<arrow::datatypes::TimestampMicrosecondType>(times);
    let keep: arrow::array::BooleanArray = times
        .iter()
        .map(|t| {
            Some(t.is_some_and(|t| {
                request.start.is_none_or(|s| t >= s) && request.end.is_none_or(|e| t < e)
            }))
        })
        .collect();
    arrow::compute::filter_record_batch(&batch, &keep).map_err(StoreError::internal)
}

/// One entry's event time (given, or now) and request values, each checked against its column.
fn parse_request(
    plan: &ViewPlan,
    index: usize,
    given: Option<&serde_json::Map<String, serde_json::Value>>,
    now: i64,
) -> Result<(i64, HashMap<String, Value>)> {
    let root = &plan.root.spec;
    let bad = |m: String| StoreError::BadRequest(format!("entry {index}: {m}"));
    let empty = serde_json::Map::new();
    let given = given.unwrap_or(&empty);
    let mut time = now;
    let mut values = HashMap::new();
    for (name, json) in given {
        let is_time = *name == root.event_time;
        if !is_time && !plan.request.contains(name) {
            return Err(bad(format!(
                "'{name}' is not a request value of this view; request values are: {}",
                std::iter::once(root.event_time.as_str())
                    .chain(plan.request.iter().map(String::as_str))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let ty = root.column(name).expect("root column").ty;
        let value =
            Value::from_json(json, ty).map_err(|e| bad(format!("request value '{name}': {e}")))?;
        if is_time {
            match value {
                Value::Timestamp(t) => time = t,
                _ => return Err(bad(format!("request value '{name}' must be a timestamp"))),
            }
        } else {
            values.insert(name.clone(), value);
        }
    }
    if let Some(missing) = plan.request.iter().find(|r| !values.contains_key(*r)) {
        return Err(bad(format!("request value '{missing}' is missing")));
    }
    Ok((time, values))
}
