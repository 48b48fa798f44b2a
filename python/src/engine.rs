//! [`Engine`]: a [`Client`] as a Python class. Each method runs one client operation to its
//! end with the GIL released; what it answers is JSON text (definitions and reports) or an
//! Arrow table (rows).

use std::sync::{Arc, Mutex};

use arrow::compute::concat_batches;
use arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use kairos_client::{
    Artifact, Client, ClientError, DeploymentSpec, Embedded, ErrorKind, FeatureViewSpec,
    InteractionEvent, JoinTuning, MonitorSpec, PipelineSpec, PredictRequest, ReadFilter,
    RecommendRequest, RecommenderSpec, Remote, RemoteOptions, Spine, Split, SplitName,
    TrainRequest, TrainingData, TrainingDatasetRequest, VectorRequest, Vectors, Wait,
};
use kairos_store::StoreConfig;
use kairos_types::Format;
use kairos_types::export::encode_ipc;
use pyo3::prelude::*;
use pyo3::types::PyList;
use pyo3_arrow::{PyRecordBatchReader, PyTable};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::errors::{bad_input, to_py};
use crate::runtime::block_on;
use crate::values::{json_of, rows_of};

/// The platform, opened in this process (a data dir) or reached at a server's URL.
#[pyclass(module = "kairos._internal", frozen)]
pub struct Engine {
    /// Taken out by `close`, so the data dir's files are let go of even while Python objects
    /// that point here live on; an operation in flight holds its own reference till it ends.
    client: Mutex<Option<Arc<Client>>>,
    /// Which backend, kept past `close`.
    remote: bool,
    target: String,
}

impl Engine {
    fn client(&self, py: Python<'_>) -> PyResult<Arc<Client>> {
        let client = self.client.lock().expect("client lock").clone();
        client.ok_or_else(|| {
            to_py(
                py,
                ClientError::new(
                    ErrorKind::Conflict,
                    format!("the connection to {} is closed", self.target),
                ),
            )
        })
    }

    /// Runs one operation of the client, its error raised as the typed layer's exception.
    fn run<T, F>(&self, py: Python<'_>, op: impl FnOnce(Arc<Client>) -> F) -> PyResult<T>
    where
        F: Future<Output = Result<T, ClientError>> + Send,
        T: Send,
    {
        let client = self.client(py)?;
        block_on(py, op(client))?.map_err(|e| to_py(py, e))
    }

    /// Online vectors of `entries`, the keys and request values read from Python objects.
    fn vectors_of(
        &self,
        py: Python<'_>,
        name: &str,
        version: Option<u32>,
        entries: &Bound<'_, PyAny>,
        request: Option<&Bound<'_, PyAny>>,
        training_dataset: Option<u32>,
    ) -> PyResult<Vectors> {
        let entries = entries
            .try_iter()?
            .map(|entry| json_of(&entry?))
            .collect::<PyResult<Vec<_>>>()?;
        let request = VectorRequest {
            entries,
            request: request.map(json_of).transpose()?,
            training_dataset,
        };
        self.run(py, |c| async move {
            c.get_vectors(name, version, &request).await
        })
    }

    /// Runs one operation and answers its result as JSON text.
    fn run_json<T, F>(&self, py: Python<'_>, op: impl FnOnce(Arc<Client>) -> F) -> PyResult<String>
    where
        F: Future<Output = Result<T, ClientError>> + Send,
        T: Send + Serialize,
    {
        let answer = self.run(py, op)?;
        serde_json::to_string(&answer)
            .map_err(|e| to_py(py, ClientError::new(ErrorKind::Internal, e.to_string())))
    }
}

/// `text` read as the JSON of a `T`, or a `BadInput` naming `what` it should have been.
fn parse<T: DeserializeOwned>(py: Python<'_>, what: &str, text: &str) -> PyResult<T> {
    serde_json::from_str(text).map_err(|e| bad_input(py, format!("{what}: {e}")))
}

/// A definition written as JSON (an object) or TOML, as the CLI's files are.
fn definition_of<T: DeserializeOwned>(py: Python<'_>, what: &str, text: &str) -> PyResult<T> {
    if text.trim_start().starts_with('{') {
        parse(py, &format!("the {what}'s definition"), text)
    } else {
        toml::from_str(text).map_err(|e| bad_input(py, format!("the {what}'s definition: {e}")))
    }
}

fn wait_of(py: Python<'_>, wait: &str) -> PyResult<Wait> {
    [Wait::Logged, Wait::Online, Wait::Stored]
        .into_iter()
        .find(|w| w.name() == wait)
        .ok_or_else(|| {
            bad_input(
                py,
                format!("wait must be 'logged', 'online' or 'stored', not {wait:?}"),
            )
        })
}

/// A training dataset's options as the typed layer sends them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TrainingOptions {
    start: Option<i64>,
    end: Option<i64>,
    #[serde(default)]
    split: Split,
    #[serde(default)]
    strict: bool,
    #[serde(default)]
    as_known_at: bool,
    #[serde(default)]
    description: String,
    /// Bytes the join may buffer before it spills; embedded only.
    #[serde(default)]
    memory_budget: Option<usize>,
}

/// Every row of `rows` as one batch.
fn one_batch(py: Python<'_>, rows: PyRecordBatchReader) -> PyResult<RecordBatch> {
    let unreadable = |e: arrow::error::ArrowError| {
        bad_input(py, format!("the rows could not be read as Arrow: {e}"))
    };
    let reader = rows.into_reader()?;
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>().map_err(unreadable)?;
    concat_batches(&schema, &batches).map_err(unreadable)
}

#[pymethods]
impl Engine {
    /// Opens the platform at `target`: a server's `http://` or `https://` URL, or else the
    /// path of a data dir to open in this process (made if missing).
    #[new]
    #[pyo3(signature = (target, api_key = None, ca_cert_pem = None))]
    fn new(
        py: Python<'_>,
        target: String,
        api_key: Option<String>,
        ca_cert_pem: Option<Vec<u8>>,
    ) -> PyResult<Engine> {
        let client = if target.starts_with("http://") || target.starts_with("https://") {
            let options = RemoteOptions {
                api_key,
                ca_cert_pem,
            };
            Client::Remote(Remote::connect(&target, &options).map_err(|e| to_py(py, e))?)
        } else {
            if api_key.is_some() || ca_cert_pem.is_some() {
                return Err(bad_input(
                    py,
                    "api_key and ca_cert are for a server's URL; an embedded engine has no \
                     server to show them to",
                ));
            }
            let config = StoreConfig::with_data_dir(&target);
            let embedded = block_on(py, Embedded::open(config))?.map_err(|e| to_py(py, e))?;
            // Views' Python functions run here, in the user's process.
            embedded
                .store()
                .functions()
                .set_python_host(Arc::new(crate::udf::Interpreter));
            Client::Embedded(embedded)
        };
        Ok(Engine {
            remote: matches!(client, Client::Remote(_)),
            client: Mutex::new(Some(Arc::new(client))),
            target,
        })
    }

    /// `"embedded"` or `"remote"`.
    #[getter]
    fn backend(&self) -> &'static str {
        if self.remote { "remote" } else { "embedded" }
    }

    /// The data dir or URL this engine was opened on.
    #[getter]
    fn target(&self) -> &str {
        &self.target
    }

    fn create_group(&self, py: Python<'_>, spec: &str) -> PyResult<String> {
        let spec = parse(py, "the feature group's definition", spec)?;
        self.run_json(py, |c| async move { c.create_group(&spec).await })
    }

    fn list_groups(&self, py: Python<'_>) -> PyResult<String> {
        self.run_json(py, |c| async move { c.list_groups().await })
    }

    #[pyo3(signature = (name, version = None))]
    fn describe_group(&self, py: Python<'_>, name: &str, version: Option<u32>) -> PyResult<String> {
        self.run_json(py, |c| async move { c.describe_group(name, version).await })
    }

    /// Inserts every row of `rows` (anything with `__arrow_c_stream__`) as one batch.
    #[pyo3(signature = (name, version, rows, wait = "logged"))]
    fn insert(
        &self,
        py: Python<'_>,
        name: &str,
        version: Option<u32>,
        rows: PyRecordBatchReader,
        wait: &str,
    ) -> PyResult<String> {
        let wait = wait_of(py, wait)?;
        let batch = one_batch(py, rows)?;
        self.run_json(py, |c| async move {
            c.insert_batch(name, version, &batch, wait).await
        })
    }

    /// The latest row of each key; `entries` is a JSON array, per entry an object of key
    /// columns, an array in key order, or a bare value for a one-column key.
    #[pyo3(signature = (name, version, entries))]
    fn get_online(
        &self,
        py: Python<'_>,
        name: &str,
        version: Option<u32>,
        entries: &str,
    ) -> PyResult<String> {
        let entries: Vec<serde_json::Value> = parse(py, "the keys", entries)?;
        self.run_json(py, |c| async move {
            c.get_online(name, version, &entries).await
        })
    }

    /// Rows of the offline store, times in microseconds since the epoch.
    #[pyo3(signature = (name, version = None, start = None, end = None, as_of = None))]
    fn read_offline(
        &self,
        py: Python<'_>,
        name: &str,
        version: Option<u32>,
        start: Option<i64>,
        end: Option<i64>,
        as_of: Option<i64>,
    ) -> PyResult<PyTable> {
        let filter = ReadFilter { start, end, as_of };
        let (schema, batches) = self.run(py, |c| async move {
            let read = c.read_offline(name, version, filter).await?;
            let batches: Vec<_> = read.batches.try_collect().await?;
            Ok((read.schema, batches))
        })?;
        PyTable::try_new(batches, schema)
    }

    #[pyo3(signature = (name, version = None))]
    fn check_group(&self, py: Python<'_>, name: &str, version: Option<u32>) -> PyResult<String> {
        self.run_json(py, |c| async move { c.check_group(name, version).await })
    }

    #[pyo3(signature = (name, version = None))]
    fn compact_group(&self, py: Python<'_>, name: &str, version: Option<u32>) -> PyResult<String> {
        self.run_json(py, |c| async move { c.compact_group(name, version).await })
    }

    fn delete_group(&self, py: Python<'_>, name: &str, version: u32) -> PyResult<()> {
        self.run(py, |c| async move { c.delete_group(name, version).await })
    }

    /// Creates a feature view (or its next version) from its definition, JSON or TOML (the
    /// CLI's files).
    fn apply_view(&self, py: Python<'_>, definition: &str) -> PyResult<String> {
        let spec: FeatureViewSpec = definition_of(py, "feature view", definition)?;
        self.run_json(py, |c| async move { c.apply_view(&spec).await })
    }

    fn list_views(&self, py: Python<'_>) -> PyResult<String> {
        self.run_json(py, |c| async move { c.list_views().await })
    }

    #[pyo3(signature = (name, version = None))]
    fn describe_view(&self, py: Python<'_>, name: &str, version: Option<u32>) -> PyResult<String> {
        self.run_json(py, |c| async move { c.describe_view(name, version).await })
    }

    fn delete_view(&self, py: Python<'_>, name: &str, version: u32) -> PyResult<()> {
        self.run(py, |c| async move { c.delete_view(name, version).await })
    }

    /// Materialises a training dataset; `options` is JSON (start and end in microseconds,
    /// split, strict, as_known_at, description), `spine` any Arrow stream of root keys and
    /// event times.
    #[pyo3(signature = (name, version, options, spine = None))]
    fn create_training_dataset(
        &self,
        py: Python<'_>,
        name: &str,
        version: Option<u32>,
        options: &str,
        spine: Option<PyRecordBatchReader>,
    ) -> PyResult<String> {
        let options: TrainingOptions = parse(py, "the training data's options", options)?;
        let spine = match spine {
            Some(rows) => Some(Spine {
                name: "dataframe".into(),
                format: Format::ArrowIpc,
                bytes: encode_ipc(&one_batch(py, rows)?).map_err(|e| {
                    bad_input(py, format!("the spine could not be written as Arrow: {e}"))
                })?,
            }),
            None => None,
        };
        let data = TrainingData {
            request: TrainingDatasetRequest {
                start: options.start,
                end: options.end,
                split: options.split,
                strict: options.strict,
                as_known_at: options.as_known_at,
                description: options.description,
            },
            spine,
            tuning: options
                .memory_budget
                .map(|memory_budget| JoinTuning { memory_budget }),
        };
        self.run_json(py, |c| async move {
            c.create_training_dataset(name, version, data).await
        })
    }

    #[pyo3(signature = (name, version = None, dataset = None))]
    fn training_dataset(
        &self,
        py: Python<'_>,
        name: &str,
        version: Option<u32>,
        dataset: Option<u32>,
    ) -> PyResult<String> {
        self.run_json(py, |c| async move {
            c.training_dataset(name, version, dataset).await
        })
    }

    /// One split of a training dataset (`train`, `validation` or `test`).
    #[pyo3(signature = (name, version, dataset, split = "train", transformed = false))]
    fn read_training_dataset(
        &self,
        py: Python<'_>,
        name: &str,
        version: Option<u32>,
        dataset: u32,
        split: &str,
        transformed: bool,
    ) -> PyResult<PyTable> {
        let split = SplitName::parse(split).ok_or_else(|| {
            bad_input(
                py,
                format!("split is train, validation or test, not {split:?}"),
            )
        })?;
        let (schema, batches) = self.run(py, |c| async move {
            let read = c
                .read_training_dataset(name, version, dataset, split, transformed)
                .await?;
            let batches: Vec<_> = read.batches.try_collect().await?;
            Ok((read.schema, batches))
        })?;
        PyTable::try_new(batches, schema)
    }

    /// Online feature vectors as rows of Python values, and the view's column names.
    /// `entries` are the entities' keys (per entry a dict of key columns, a list in key order
    /// or a bare value); `request` one dict of request values for all, or one per entry.
    #[pyo3(signature = (name, version, entries, request = None, training_dataset_version = None))]
    fn vector_rows<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        version: Option<u32>,
        entries: &Bound<'py, PyAny>,
        request: Option<&Bound<'py, PyAny>>,
        training_dataset_version: Option<u32>,
    ) -> PyResult<(Vec<String>, Bound<'py, PyList>)> {
        let vectors = self.vectors_of(
            py,
            name,
            version,
            entries,
            request,
            training_dataset_version,
        )?;
        let schema = vectors.features.schema();
        let columns = schema.fields().iter().map(|f| f.name().clone()).collect();
        Ok((columns, rows_of(py, &vectors.features)?))
    }

    /// [`Self::vector_rows`] as one Arrow table.
    #[pyo3(signature = (name, version, entries, request = None, training_dataset_version = None))]
    fn vector_table(
        &self,
        py: Python<'_>,
        name: &str,
        version: Option<u32>,
        entries: &Bound<'_, PyAny>,
        request: Option<&Bound<'_, PyAny>>,
        training_dataset_version: Option<u32>,
    ) -> PyResult<PyTable> {
        let vectors = self.vectors_of(
            py,
            name,
            version,
            entries,
            request,
            training_dataset_version,
        )?;
        let schema = vectors.features.schema();
        PyTable::try_new(vec![vectors.features], schema)
    }

    fn list_models(&self, py: Python<'_>) -> PyResult<String> {
        self.run_json(py, |c| async move { c.list_models().await })
    }

    #[pyo3(signature = (name, version = None))]
    fn describe_model(&self, py: Python<'_>, name: &str, version: Option<u32>) -> PyResult<String> {
        self.run_json(py, |c| async move { c.describe_model(name, version).await })
    }

    /// Registers a model: its definition (JSON or TOML) and its artifact's bytes.
    fn register_model(
        &self,
        py: Python<'_>,
        definition: &str,
        file_name: String,
        artifact: Vec<u8>,
    ) -> PyResult<String> {
        let artifact = Artifact {
            file_name,
            bytes: artifact.into(),
        };
        self.run_json(py, |c| async move {
            c.register_model(definition, artifact).await
        })
    }

    fn delete_model(&self, py: Python<'_>, name: &str, version: u32) -> PyResult<()> {
        self.run(py, |c| async move { c.delete_model(name, version).await })
    }

    /// Trains a model; `request` is the REST API's body as JSON.
    fn train(&self, py: Python<'_>, request: &str) -> PyResult<String> {
        let request: TrainRequest = parse(py, "the training request", request)?;
        self.run_json(py, |c| async move { c.train(&request).await })
    }

    /// Applies a deployment from its definition, JSON or TOML.
    fn apply_deployment(&self, py: Python<'_>, definition: &str) -> PyResult<String> {
        let spec = DeploymentSpec::parse(definition)
            .map_err(|e| bad_input(py, format!("the deployment's definition: {e}")))?;
        self.run_json(py, |c| async move { c.apply_deployment(&spec).await })
    }

    fn list_deployments(&self, py: Python<'_>) -> PyResult<String> {
        self.run_json(py, |c| async move { c.list_deployments().await })
    }

    fn deployment_status(&self, py: Python<'_>, name: &str) -> PyResult<String> {
        self.run_json(py, |c| async move { c.deployment_status(name).await })
    }

    fn delete_deployment(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        self.run(py, |c| async move { c.delete_deployment(name).await })
    }

    /// Predicts; `request` is the REST API's body as JSON (entries, request, return_features).
    fn predict(&self, py: Python<'_>, name: &str, request: &str) -> PyResult<String> {
        let request: PredictRequest = parse(py, "the prediction request", request)?;
        self.run_json(py, |c| async move { c.predict(name, &request).await })
    }

    /// Deploys a streaming pipeline from its definition, JSON or TOML, and starts it.
    fn deploy_pipeline(&self, py: Python<'_>, definition: &str) -> PyResult<String> {
        let spec: PipelineSpec = definition_of(py, "pipeline", definition)?;
        self.run_json(py, |c| async move { c.deploy_pipeline(&spec).await })
    }

    fn list_pipelines(&self, py: Python<'_>) -> PyResult<String> {
        self.run_json(py, |c| async move { c.list_pipelines().await })
    }

    fn pipeline_status(&self, py: Python<'_>, name: &str) -> PyResult<String> {
        self.run_json(py, |c| async move { c.pipeline_status(name).await })
    }

    fn start_pipeline(&self, py: Python<'_>, name: &str) -> PyResult<String> {
        self.run_json(py, |c| async move { c.start_pipeline(name).await })
    }

    fn stop_pipeline(&self, py: Python<'_>, name: &str) -> PyResult<String> {
        self.run_json(py, |c| async move { c.stop_pipeline(name).await })
    }

    /// Pushes JSON-lines events into an HTTP stream; answers their position in its log.
    fn push_events(&self, py: Python<'_>, stream: &str, events: Vec<u8>) -> PyResult<u64> {
        self.run(
            py,
            |c| async move { c.push_events(stream, events.into()).await },
        )
    }

    /// Applies a monitor from its definition, JSON or TOML.
    fn apply_monitor(&self, py: Python<'_>, definition: &str) -> PyResult<String> {
        let spec: MonitorSpec = definition_of(py, "monitor", definition)?;
        self.run_json(py, |c| async move { c.apply_monitor(&spec).await })
    }

    fn list_monitors(&self, py: Python<'_>) -> PyResult<String> {
        self.run_json(py, |c| async move { c.list_monitors().await })
    }

    fn get_monitor(&self, py: Python<'_>, name: &str) -> PyResult<String> {
        self.run_json(py, |c| async move { c.get_monitor(name).await })
    }

    fn delete_monitor(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        self.run(py, |c| async move { c.delete_monitor(name).await })
    }

    fn run_monitor(&self, py: Python<'_>, name: &str) -> PyResult<String> {
        self.run_json(py, |c| async move { c.run_monitor(name).await })
    }

    fn retrain(&self, py: Python<'_>, name: &str) -> PyResult<String> {
        self.run_json(py, |c| async move { c.retrain(name).await })
    }

    fn monitor_history(&self, py: Python<'_>, name: &str) -> PyResult<String> {
        self.run_json(py, |c| async move { c.monitor_history(name).await })
    }

    /// A deployment's monitoring report, as HTML.
    #[pyo3(signature = (deployment, monitor = None))]
    fn monitoring_report(
        &self,
        py: Python<'_>,
        deployment: &str,
        monitor: Option<&str>,
    ) -> PyResult<String> {
        self.run(py, |c| async move {
            c.monitoring_report(deployment, monitor).await
        })
    }

    /// Applies a recommender from its definition, JSON or TOML.
    fn apply_recommender(&self, py: Python<'_>, definition: &str) -> PyResult<String> {
        let spec: RecommenderSpec = definition_of(py, "recommender", definition)?;
        self.run_json(py, |c| async move { c.apply_recommender(&spec).await })
    }

    fn list_recommenders(&self, py: Python<'_>) -> PyResult<String> {
        self.run_json(py, |c| async move { c.list_recommenders().await })
    }

    fn recommender_status(&self, py: Python<'_>, name: &str) -> PyResult<String> {
        self.run_json(py, |c| async move { c.recommender_status(name).await })
    }

    /// Recommendations; `request` is the REST API's body as JSON (user_id, k, context).
    fn recommend(&self, py: Python<'_>, name: &str, request: &str) -> PyResult<String> {
        let request: RecommendRequest = parse(py, "the recommendation request", request)?;
        self.run_json(py, |c| async move { c.recommend(name, &request).await })
    }

    /// Interactions; `events` is a JSON array of objects.
    fn interact(&self, py: Python<'_>, name: &str, events: &str) -> PyResult<String> {
        let events: Vec<InteractionEvent> = parse(py, "the interactions", events)?;
        self.run_json(py, |c| async move { c.interact(name, events).await })
    }

    /// Waits until both stores hold every row this engine inserted (embedded), then lets go
    /// of the data dir's files.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let Some(client) = self.client.lock().expect("client lock").take() else {
            return Ok(());
        };
        block_on(py, client.close())?.map_err(|e| to_py(py, e))
    }
}
