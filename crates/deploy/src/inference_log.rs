//! The inference log: every prediction appended to the deployment's inference-log feature group
//! through the store's normal write path, where monitoring reads it.
//!
//! Requests hand their entries to a bounded channel and never wait: a background task batches
//! them (up to [`BATCH_ROWS`] rows or [`FLUSH_EVERY`]) into one insert. A full channel drops the
//! entry and counts it (`kairos_inference_log_dropped_total`); the goal is zero. When the last
//! handle to a log goes (a revision swapped out, or the server shutting down) the task writes
//! what it holds and ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema};
use kairos_store::{FeatureStore, InsertOptions};
use kairos_types::{Column, FeatureGroupSpec, FeatureType, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::{DeployError, Result};
use crate::telemetry::LOG_DROPPED;

/// Rows written per insert at most.
pub const BATCH_ROWS: usize = 4096;
/// How long a logged prediction may wait for its batch to fill.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Requests the channel holds before it drops.
const CHANNEL_REQUESTS: usize = 16_384;

/// The columns every inference log has, before the entity keys and the features.
const FIXED: [&str; 4] = ["request_id", "entry", "logged_at", "model_version"];
/// The columns after the features.
const OUTCOME: [&str; 3] = ["prediction", "label", "latency_us"];

/// The inference-log feature group of a deployment: `<deployment>_inference_log`, with the
/// request id and entry number as its key, the entity keys, one float column per model feature,
/// the prediction, the label (classifiers) and the request's latency. Offline only: it is read
/// in bulk, never per key.
pub fn log_group_spec(
    deployment: &str,
    keys: &[(String, FeatureType)],
    features: &[String],
    classifier: bool,
) -> Result<FeatureGroupSpec> {
    let column = |name: &str, ty: FeatureType, nullable: bool| Column {
        name: name.to_string(),
        ty,
        nullable,
        description: None,
    };
    let mut columns = vec![
        column(FIXED[0], FeatureType::String, false),
        column(FIXED[1], FeatureType::Int32, false),
        column(FIXED[2], FeatureType::Timestamp, false),
        column(FIXED[3], FeatureType::Int32, false),
    ];
    for (name, ty) in keys {
        columns.push(column(name, *ty, false));
    }
    for name in features {
        columns.push(column(name, FeatureType::Float64, true));
    }
    columns.push(column(OUTCOME[0], FeatureType::Float64, true));
    if classifier {
        columns.push(column(OUTCOME[1], FeatureType::Int32, true));
    }
    columns.push(column(OUTCOME[2], FeatureType::Int64, false));
    let taken: Vec<&str> = FIXED.iter().chain(&OUTCOME).copied().collect();
    if let Some(clash) = keys
        .iter()
        .map(|(k, _)| k)
        .chain(features)
        .find(|n| taken.contains(&n.as_str()))
    {
        return Err(DeployError::Invalid(format!(
            "the model's input '{clash}' has the name of an inference-log column ({}); rename it in the feature view",
            taken.join(", ")
        )));
    }
    let spec = FeatureGroupSpec {
        name: format!("{deployment}_inference_log"),
        description: format!("Every prediction of deployment {deployment}"),
        columns,
        primary_key: vec![FIXED[0].into(), FIXED[1].into()],
        event_time: FIXED[2].into(),
        online: false,
        ttl_seconds: None,
        vector_index: None,
        expectations: Vec::new(),
    };
    spec.validate()
        .map_err(|e| DeployError::Invalid(e.to_string()))?;
    Ok(spec)
}

/// One request's predictions, as logged.
#[derive(Debug)]
pub struct LoggedRequest {
    pub request_id: String,
    pub at_micros: i64,
    pub model_version: u32,
    /// Per entry, its key values.
    pub keys: Vec<Vec<Value>>,
    /// Row-major, one row of the model's features per entry (NaN: missing).
    pub features: Vec<f64>,
    pub predictions: Vec<f64>,
    pub labels: Option<Vec<i32>>,
    pub latency_us: i64,
}

/// The entries a log could not write, counted where `deployment status` and `/metrics` read
/// them, whichever side dropped them (a full channel, or a batch the store refused).
#[derive(Debug)]
struct Drops {
    deployment: String,
    count: AtomicU64,
}

impl Drops {
    fn add(&self, rows: u64) {
        self.count.fetch_add(rows, Ordering::Relaxed);
        metrics::counter!(LOG_DROPPED, "deployment" => self.deployment.clone()).increment(rows);
    }
}

/// A running inference log; cheap to clone, and the writer ends when the last clone goes.
#[derive(Debug, Clone)]
pub struct InferenceLog {
    tx: mpsc::Sender<LoggedRequest>,
    drops: Arc<Drops>,
    group: Arc<str>,
}

impl InferenceLog {
    /// Starts the writer of `group` (version `version`); the handle finishes after the last
    /// batch is written.
    pub fn start(
        store: FeatureStore,
        deployment: &str,
        group: FeatureGroupSpec,
        version: u32,
    ) -> (InferenceLog, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(CHANNEL_REQUESTS);
        let drops = Arc::new(Drops {
            deployment: deployment.to_string(),
            count: AtomicU64::new(0),
        });
        let log = InferenceLog {
            tx,
            drops: drops.clone(),
            group: group.name.as_str().into(),
        };
        let writer = Writer {
            store,
            group,
            version,
            drops,
            pending: Vec::new(),
            rows: 0,
        };
        (log, tokio::spawn(writer.run(rx)))
    }

    /// The feature group the log writes to.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Hands a request's predictions to the writer without waiting; drops them (counted) when
    /// the writer is behind by the whole channel.
    pub fn record(&self, request: LoggedRequest) {
        if let Err(e) = self.tx.try_send(request) {
            let (mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r)) = e;
            self.drops.add(r.predictions.len() as u64);
        }
    }

    /// Entries dropped since this log started.
    pub fn dropped(&self) -> u64 {
        self.drops.count.load(Ordering::Relaxed)
    }
}

/// The task that batches logged requests into the group.
struct Writer {
    store: FeatureStore,
    group: FeatureGroupSpec,
    version: u32,
    drops: Arc<Drops>,
    pending: Vec<LoggedRequest>,
    /// Rows in `pending`.
    rows: usize,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<LoggedRequest>) {
        // When the oldest entry held must be written: a steady trickle of requests must not
        // hold entries back until a batch fills.
        let mut deadline = tokio::time::Instant::now();
        loop {
            let next = if self.pending.is_empty() {
                let next = rx.recv().await;
                deadline = tokio::time::Instant::now() + FLUSH_EVERY;
                next
            } else {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(next) => next,
                    Err(_) => {
                        self.flush().await;
                        continue;
                    }
                }
            };
            let Some(request) = next else {
                // Every handle is gone: write what is held and end.
                self.flush().await;
                return;
            };
            self.push(request);
            while self.rows < BATCH_ROWS
                && let Ok(request) = rx.try_recv()
            {
                self.push(request);
            }
            if self.rows >= BATCH_ROWS {
                self.flush().await;
            }
        }
    }

    fn push(&mut self, request: LoggedRequest) {
        self.rows += request.predictions.len();
        self.pending.push(request);
    }

    async fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let group = &self.group;
        let written = match batch_of(group, &self.pending) {
            Ok(batch) => self
                .store
                .insert_batch(
                    &group.name,
                    Some(self.version),
                    &batch,
                    InsertOptions::default(),
                )
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = written {
            tracing::error!(group = %group.name, rows = self.rows, error = %e, "inference log batch not written");
            self.drops.add(self.rows as u64);
        }
        self.pending.clear();
        self.rows = 0;
    }
}

/// The rows of `requests` as a batch of the log group's columns.
fn batch_of(group: &FeatureGroupSpec, requests: &[LoggedRequest]) -> Result<RecordBatch> {
    let width = group.columns.len();
    let mut columns: Vec<Vec<Value>> = vec![Vec::new(); width];
    for r in requests {
        let features = r.features.len() / r.predictions.len().max(1);
        for (entry, prediction) in r.predictions.iter().enumerate() {
            let mut row = vec![
                Value::String(r.request_id.clone()),
                Value::Int32(entry as i32),
                Value::Timestamp(r.at_micros),
                Value::Int32(r.model_version as i32),
            ];
            row.extend(r.keys[entry].iter().cloned());
            row.extend(
                r.features[entry * features..(entry + 1) * features]
                    .iter()
                    .map(|v| finite_or_null(*v)),
            );
            row.push(finite_or_null(*prediction));
            if let Some(labels) = &r.labels {
                row.push(Value::Int32(labels[entry]));
            }
            row.push(Value::Int64(r.latency_us));
            if row.len() != width {
                return Err(DeployError::internal(format!(
                    "an inference-log row of {} values for {width} columns",
                    row.len()
                )));
            }
            for (column, value) in columns.iter_mut().zip(row) {
                column.push(value);
            }
        }
    }
    let mut fields = Vec::with_capacity(width);
    let mut arrays = Vec::with_capacity(width);
    for (c, values) in group.columns.iter().zip(&columns) {
        fields.push(Field::new(&c.name, c.ty.arrow_type(), c.nullable));
        arrays.push(
            kairos_view::vector::array_of(c.ty, values.iter()).map_err(DeployError::internal)?,
        );
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).map_err(DeployError::internal)
}

fn finite_or_null(v: f64) -> Value {
    if v.is_nan() {
        Value::Null
    } else {
        Value::Float64(v)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use kairos_store::StoreConfig;

    use super::*;

    fn request(i: usize) -> LoggedRequest {
        LoggedRequest {
            request_id: format!("r{i}"),
            at_micros: 1_714_521_600_000_000 + i as i64,
            model_version: 1,
            keys: vec![vec![Value::Int64(i as i64)]],
            features: vec![0.5],
            predictions: vec![0.25],
            labels: Some(vec![0]),
            latency_us: 100,
        }
    }

    /// A steady trickle of requests, far below a batch, is written within the flush interval
    /// of the oldest entry, not held until a batch fills or the log closes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_steady_trickle_is_written_within_the_flush_interval() {
        let dir = tempfile::tempdir().unwrap();
        let store = FeatureStore::open(StoreConfig::with_data_dir(dir.path()))
            .await
            .unwrap();
        let spec = log_group_spec(
            "d",
            &[("id".into(), FeatureType::Int64)],
            &["x".into()],
            true,
        )
        .unwrap();
        let group = store.create_group(spec.clone()).await.unwrap();
        let (log, writer) = InferenceLog::start(store.clone(), "d", spec, group.version);
        // One request every 20 ms for 1.2 s: never a 200 ms pause, never a full batch.
        let started = Instant::now();
        let mut sent = 0;
        while started.elapsed() < Duration::from_millis(1_200) {
            log.record(request(sent));
            sent += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let written = store
            .describe(&group.spec.name, None)
            .await
            .unwrap()
            .log_end_offset;
        // Everything but the last flush interval's worth (about 10 requests) is in.
        assert!(
            written + 20 >= sent as u64 && written > 0,
            "{written} of {sent} written while requests kept coming"
        );
        drop(log);
        writer.await.unwrap();
        assert_eq!(
            store
                .describe(&group.spec.name, None)
                .await
                .unwrap()
                .log_end_offset,
            sent as u64
        );
        store.close().await;
    }
}
