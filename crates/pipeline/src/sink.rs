//! Where a pipeline's rows go: the feature store in this process, or a Kairos server.
//!
//! The embedded store belongs to one process, so a worker of a pipeline run as several
//! processes (`kairos pipeline worker`) writes through the server that holds it. Both ends give
//! the same guarantee: rows tagged with a producer tag are appended once, however often they
//! are sent (the store's `append_once`; `POST …/rows?producer=…&after=…` on the server).

use std::time::Duration;

use arrow::record_batch::RecordBatch;
use kairos_store::{FeatureStore, InsertAck, Result, StoreError};
use kairos_stream::Plan;
use serde::Deserialize;

/// The output end of a running pipeline.
#[derive(Debug, Clone)]
pub enum Sink {
    /// The feature store of this process.
    Store(FeatureStore),
    /// A Kairos server, over its REST API.
    Server(Server),
}

impl Sink {
    /// The output feature group's version: created from the pipeline's schema if absent in
    /// process; a server created it when the pipeline was applied there.
    pub async fn ensure_output(&self, plan: &Plan) -> Result<u32> {
        match self {
            Sink::Store(store) => crate::runner::ensure_output(store, plan).await,
            Sink::Server(server) => server.group_version(&plan.output.name).await,
        }
    }

    /// The output log's end offset per partition: rows appended later are at or after them.
    pub async fn log_ends(&self, group: &str, version: u32) -> Result<Vec<u64>> {
        match self {
            Sink::Store(store) => store.log_ends(group, Some(version)).await,
            Sink::Server(server) => server.log_ends(group, version).await,
        }
    }

    /// Appends `batch` unless the log holds the rows tagged `producer` after `search_from`
    /// (per partition).
    pub async fn append_once(
        &self,
        group: &str,
        version: u32,
        batch: &RecordBatch,
        producer: &str,
        search_from: &[u64],
    ) -> Result<InsertAck> {
        match self {
            Sink::Store(store) => {
                store
                    .append_once(group, Some(version), batch, producer, search_from)
                    .await
            }
            Sink::Server(server) => {
                server
                    .append_once(group, version, batch, producer, search_from)
                    .await
            }
        }
    }

    /// Waits until the online store shows the rows of an append (a server's append answered
    /// only once it did).
    pub async fn wait_visible(&self, group: &str, version: u32, ack: &InsertAck) -> Result<()> {
        match self {
            Sink::Store(store) => store.wait_visible(group, Some(version), ack).await,
            Sink::Server(_) => Ok(()),
        }
    }
}

/// A Kairos server's REST API, as a worker uses it.
#[derive(Debug, Clone)]
pub struct Server {
    base: String,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct GroupStatus {
    version: u32,
    log_end_offset: u64,
    /// Each partition's, in a log of several.
    #[serde(default)]
    partitions: Vec<PartitionStatus>,
}

#[derive(Deserialize)]
struct PartitionStatus {
    log_end_offset: u64,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    message: String,
}

/// How long one request may take before the worker fails (and restarts from its checkpoint).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl Server {
    /// A sink writing through the server at `base`, sending `api_key` as a bearer token.
    pub fn new(base: &str, api_key: Option<&str>) -> Result<Server> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = api_key {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| {
                    StoreError::BadRequest(
                        "the API key holds characters a header cannot carry".into(),
                    )
                })?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            // Let idle connections go before the server's header timeout closes them.
            .pool_idle_timeout(Duration::from_secs(5))
            .default_headers(headers)
            .build()
            .map_err(StoreError::internal)?;
        Ok(Server {
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let response = request.send().await.map_err(|e| {
            StoreError::Unavailable(format!("cannot reach kairos at {}: {e}", self.base))
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let message = response
            .json::<ErrorBody>()
            .await
            .map(|b| b.error.message)
            .unwrap_or_else(|_| "no message".into());
        let message = format!("kairos at {}: {status}: {message}", self.base);
        Err(match status.as_u16() {
            404 => StoreError::NotFound(message),
            409 => StoreError::Conflict(message),
            400..=499 => StoreError::BadRequest(message),
            _ => StoreError::Unavailable(message),
        })
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T> {
        self.send(request)
            .await?
            .json()
            .await
            .map_err(|e| StoreError::Unavailable(format!("kairos at {}: {e}", self.base)))
    }

    async fn status(&self, group: &str, version: Option<u32>) -> Result<GroupStatus> {
        let mut request = self
            .http
            .get(format!("{}/v1/feature-groups/{group}", self.base));
        if let Some(v) = version {
            request = request.query(&[("version", v)]);
        }
        self.json(request).await
    }

    async fn group_version(&self, group: &str) -> Result<u32> {
        Ok(self.status(group, None).await?.version)
    }

    async fn log_ends(&self, group: &str, version: u32) -> Result<Vec<u64>> {
        let status = self.status(group, Some(version)).await?;
        if status.partitions.is_empty() {
            return Ok(vec![status.log_end_offset]);
        }
        Ok(status.partitions.iter().map(|p| p.log_end_offset).collect())
    }

    async fn append_once(
        &self,
        group: &str,
        version: u32,
        batch: &RecordBatch,
        producer: &str,
        search_from: &[u64],
    ) -> Result<InsertAck> {
        let after: Vec<String> = search_from.iter().map(u64::to_string).collect();
        let body = kairos_types::export::encode_ipc(batch).map_err(StoreError::internal)?;
        let request = self
            .http
            .post(format!("{}/v1/feature-groups/{group}/rows", self.base))
            .query(&[
                ("version", version.to_string()),
                ("producer", producer.to_owned()),
                ("after", after.join(",")),
                ("wait", "online".to_owned()),
            ])
            .header("content-type", "application/vnd.apache.arrow.stream")
            .body(body);
        self.json(request).await
    }
}
