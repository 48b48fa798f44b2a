//! The Kairos pipeline runtime: the I/O around the streaming engine ([`kairos_stream`]).
//!
//! [`Pipelines`] is the service every transport calls (REST in `kairos serve`, the CLI): it
//! applies definitions to the catalog, creates output feature groups, starts and stops running
//! pipelines ([`runner`]) and takes HTTP-pushed events into durable stream logs ([`source`]).
//! A running pipeline reads its [`source`], parses events with [`decode`] (malformed ones to
//! the dead-letter file), folds them in the window operator and, on every barrier, writes a
//! [`checkpoint`] and delivers the window rows to the output group exactly once.

pub mod checkpoint;
pub mod decode;
pub mod policy;
pub mod runner;
pub mod sink;
pub mod source;
pub mod telemetry;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use kairos_store::{FeatureStore, Result, StoreError};
use kairos_stream::PipelineSpec;
use kairos_stream::spec::PipelineDef;
use tokio::sync::Mutex;

pub use policy::{Confinement, SourcePolicy};

/// A pipeline deployed: its definition as applied, and its status once started.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Deployed {
    pub pipeline: PipelineDef,
    pub status: PipelineStatus,
}

pub use runner::{Freshness, PipelineHandle, PipelineStatus, Placement, RunState};
pub use sink::Sink;
pub use source::Streams;

/// The kind of the catalog's documents that hold what an operator last asked of each pipeline
/// through a server ([`Wanted`]).
pub const RUN_KIND: &str = "pipeline_run";

/// What an operator last asked of a pipeline through a server: run it, or keep it stopped.
/// Kept in the catalog, so every replica does the same, and a server starting later starts
/// only the pipelines not kept stopped. A pipeline never asked either is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Wanted {
    Running,
    Stopped,
}

/// The pipelines of one store: definitions in the catalog, running ones in this process.
#[derive(Debug)]
pub struct Pipelines {
    store: FeatureStore,
    streams: Arc<Streams>,
    running: Mutex<HashMap<String, PipelineHandle>>,
    /// Held through a change of what runs here that reads first and acts after (a deploy, a
    /// stop or start kept in the catalog, following the catalog), so the catalog follower and
    /// a request never interleave their stops and starts of one pipeline.
    changing: Mutex<()>,
    /// Streams some applied pipeline reads (pushes to others are refused), kept here so a push
    /// does not read the catalog.
    http_streams: std::sync::RwLock<HashSet<String>>,
    /// What definitions may read: anything in the operator's own process, only what the
    /// policy allows in a server.
    confinement: Confinement,
}

/// The HTTP stream a definition reads, if it has an HTTP source.
fn http_stream(spec: &PipelineSpec) -> Option<&str> {
    match &spec.source {
        kairos_stream::SourceSpec::Http { stream, .. } => Some(stream),
        _ => None,
    }
}

impl Pipelines {
    /// The pipelines of the operator's own process (the CLI): definitions read what they name.
    pub fn new(store: FeatureStore) -> Pipelines {
        Self::with_confinement(store, Confinement::Trusted)
    }

    /// The pipelines of a server, whose definitions come from clients.
    pub fn confined(store: FeatureStore, policy: SourcePolicy) -> Pipelines {
        Self::with_confinement(store, Confinement::Confined(policy))
    }

    fn with_confinement(store: FeatureStore, confinement: Confinement) -> Pipelines {
        let streams = Arc::new(Streams::of(&store));
        let defs = store.catalog().list_pipelines().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot list pipelines");
            Vec::new()
        });
        let http_streams = defs
            .iter()
            .filter_map(|d| http_stream(&d.spec).map(str::to_owned))
            .collect();
        Pipelines {
            store,
            streams,
            running: Mutex::new(HashMap::new()),
            changing: Mutex::new(()),
            http_streams: std::sync::RwLock::new(http_streams),
            confinement,
        }
    }

    /// The definition with its source checked against the confinement (a file source's path
    /// made canonical).
    fn confine(&self, mut spec: PipelineSpec) -> Result<PipelineSpec> {
        spec.source = self
            .confinement
            .check(&spec.source, &self.store.config().data_dir)?;
        Ok(spec)
    }

    pub fn store(&self) -> &FeatureStore {
        &self.store
    }

    /// Checks a definition, creates its output group if absent and stores it as the next
    /// version — unless it equals the latest version, which is returned unchanged.
    pub async fn apply(&self, spec: PipelineSpec) -> Result<PipelineDef> {
        let spec = self.confine(spec)?;
        let plan = spec.plan()?;
        runner::ensure_output(&self.store, &plan).await?;
        self.take_pushes_for(&spec);
        if let Some(latest) = self.store.catalog().get_pipeline(&spec.name, None)?
            && latest.spec == spec
        {
            return Ok(latest);
        }
        Ok(self.store.catalog().create_pipeline(&spec)?)
    }

    fn definition(&self, name: &str) -> Result<PipelineDef> {
        self.store
            .catalog()
            .get_pipeline(name, None)?
            .ok_or_else(|| StoreError::NotFound(format!("pipeline '{name}' not found")))
    }

    /// Starts the latest version of pipeline `name`.
    pub async fn start(&self, name: &str) -> Result<PipelineStatus> {
        let mut def = self.definition(name)?;
        // Checked again: a stored definition may predate the policy, or its file a symlink.
        def.spec = self.confine(def.spec)?;
        let mut running = self.running.lock().await;
        if running.get(name).is_some_and(PipelineHandle::is_running) {
            return Err(StoreError::Conflict(format!(
                "pipeline '{name}' is running already"
            )));
        }
        let placement = runner::Placement::local(self.store.clone(), self.streams.clone());
        let handle = runner::spawn(placement, def).await?;
        let status = handle.control.status();
        running.insert(name.to_owned(), handle);
        Ok(status)
    }

    /// What an operator last asked of pipeline `name`.
    fn wanted(&self, name: &str) -> Result<Wanted> {
        let Some((_, body)) = self
            .store
            .catalog()
            .get_service_document(RUN_KIND, name, None)?
        else {
            return Ok(Wanted::Running);
        };
        serde_json::from_value(body["wanted"].clone()).map_err(|e| {
            StoreError::internal(format!(
                "pipeline '{name}' has an unreadable run state: {e}"
            ))
        })
    }

    /// Records what an operator asks of pipeline `name`, when it changes it (each record is a
    /// change every replica follows).
    fn set_wanted(&self, name: &str, wanted: Wanted) -> Result<()> {
        if self.wanted(name)? != wanted {
            let body = serde_json::json!({ "wanted": wanted });
            self.store
                .catalog()
                .put_service_document(RUN_KIND, name, &body)?;
        }
        Ok(())
    }

    /// Starts pipeline `name` here and keeps it running: every replica that shares its
    /// partitions runs it too, and a server starting later starts it. What
    /// `POST /v1/pipelines/{name}/start` does.
    pub async fn resume(&self, name: &str) -> Result<PipelineStatus> {
        let _changing = self.changing.lock().await;
        self.definition(name)?;
        self.set_wanted(name, Wanted::Running)?;
        self.start(name).await
    }

    /// Stops pipeline `name` here after a last checkpoint and keeps it stopped: on every
    /// replica, and when a server starts, until it is resumed. What
    /// `POST /v1/pipelines/{name}/stop` does. Refused as not running only when it was kept
    /// stopped already and does not run here.
    pub async fn pause(&self, name: &str) -> Result<PipelineStatus> {
        let _changing = self.changing.lock().await;
        self.definition(name)?;
        let was = self.wanted(name)?;
        self.set_wanted(name, Wanted::Stopped)?;
        match self.stop(name).await {
            Err(StoreError::Conflict(_)) if was == Wanted::Running => self.status(name).await,
            stopped => stopped,
        }
    }

    /// Starts every applied pipeline not kept stopped (what `kairos serve` does on start). A
    /// pipeline that fails to start is logged and left idle; the others still start.
    pub async fn start_all(&self) {
        let defs = match self.latest_definitions() {
            Ok(defs) => defs,
            Err(e) => {
                tracing::error!(error = %e, "cannot list pipelines");
                return;
            }
        };
        for def in defs {
            match self.wanted(&def.spec.name) {
                Ok(Wanted::Running) => {}
                Ok(Wanted::Stopped) => continue,
                Err(e) => {
                    tracing::error!(pipeline = %def.spec.name, error = %e, "pipeline did not start");
                    continue;
                }
            }
            if let Err(e) = self.start(&def.spec.name).await {
                tracing::error!(pipeline = %def.spec.name, error = %e, "pipeline did not start");
            }
        }
    }

    fn latest_definitions(&self) -> Result<Vec<PipelineDef>> {
        let mut latest: HashMap<String, PipelineDef> = HashMap::new();
        for def in self.store.catalog().list_pipelines()? {
            latest.insert(def.spec.name.clone(), def);
        }
        let mut defs: Vec<PipelineDef> = latest.into_values().collect();
        defs.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        Ok(defs)
    }

    /// Brings this process in line with a change of pipeline `name` another replica made. A
    /// pipeline whose partitions the replicas share — a Kafka source, or an HTTP stream (a
    /// topic of the log's Kafka cluster when the log is on Kafka), whose consumer group spreads
    /// its partitions over every replica running it, with checkpoints in a shared bucket,
    /// which whoever takes a partition over reads and where a stale owner is fenced, and an
    /// output group on the shared Kafka log, which any replica appends to — runs here too, at
    /// its latest version, and stops here once deleted. A file source runs where it was
    /// started. Any pipeline stops here once an operator kept it stopped ([`Pipelines::pause`]).
    pub async fn follow(&self, name: &str) -> Result<()> {
        let _changing = self.changing.lock().await;
        let latest = self.store.catalog().get_pipeline(name, None)?;
        let wanted = self.wanted(name)?;
        let running_version = self.running_version(name).await;
        if let Some(def) = &latest {
            // A push to this replica is taken for a pipeline applied on another.
            self.take_pushes_for(&def.spec);
        }
        let shared = |def: &PipelineDef| {
            matches!(
                def.spec.source,
                kairos_stream::SourceSpec::Kafka { .. } | kairos_stream::SourceSpec::Http { .. }
            ) && self.store.storage().is_shared()
                && matches!(
                    self.store.config().log,
                    kairos_store::LogConfig::Kafka { .. }
                )
        };
        match (latest, running_version) {
            (None, Some(_)) => {
                self.stop(name).await?;
            }
            (Some(_), Some(_)) if wanted == Wanted::Stopped => {
                self.stop(name).await?;
            }
            (Some(def), running)
                if shared(&def) && wanted == Wanted::Running && running != Some(def.version) =>
            {
                if running.is_some() {
                    self.stop(name).await?;
                }
                match self.start(name).await {
                    // Started meanwhile (the server's own start of every pipeline).
                    Ok(_) | Err(StoreError::Conflict(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Applies a definition and runs it: starts it if idle, or restarts it on the new version
    /// if an older one is running. What `POST /v1/pipelines` does.
    pub async fn deploy(&self, spec: PipelineSpec) -> Result<(PipelineDef, PipelineStatus)> {
        let _changing = self.changing.lock().await;
        let def = self.apply(spec).await?;
        let name = def.spec.name.clone();
        self.set_wanted(&name, Wanted::Running)?;
        let status = match self.running_version(&name).await {
            Some(v) if v == def.version => self.status(&name).await?,
            Some(_) => {
                self.stop(&name).await?;
                self.start(&name).await?
            }
            None => self.start(&name).await?,
        };
        Ok((def, status))
    }

    /// Stops a running pipeline after a last checkpoint.
    pub async fn stop(&self, name: &str) -> Result<PipelineStatus> {
        let handle = self.running.lock().await.remove(name);
        match handle {
            Some(handle) => Ok(handle.stop().await),
            None => {
                self.definition(name)?;
                Err(StoreError::Conflict(format!(
                    "pipeline '{name}' is not running"
                )))
            }
        }
    }

    /// Waits until pipeline `name` ends by itself (a file read to its end) or fails.
    pub async fn wait(&self, name: &str) -> Result<PipelineStatus> {
        let handle = self.running.lock().await.remove(name);
        match handle {
            Some(mut handle) => Ok(handle.join().await),
            None => self.status(name).await,
        }
    }

    /// The version of pipeline `name` running in this process, if it runs.
    async fn running_version(&self, name: &str) -> Option<u32> {
        let running = self.running.lock().await;
        running
            .get(name)
            .filter(|h| h.is_running())
            .map(|h| h.control.status().version)
    }

    /// Takes pushes to the HTTP stream `spec` reads, if it reads one.
    fn take_pushes_for(&self, spec: &PipelineSpec) {
        if let Some(stream) = http_stream(spec) {
            self.http_streams
                .write()
                .expect("lock")
                .insert(stream.to_owned());
        }
    }

    /// The names of the pipelines running in this process.
    pub async fn running(&self) -> Vec<String> {
        let running = self.running.lock().await;
        running
            .iter()
            .filter(|(_, h)| h.is_running())
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// A running pipeline's live status, or an idle one's from its last checkpoint.
    pub async fn status(&self, name: &str) -> Result<PipelineStatus> {
        if let Some(handle) = self.running.lock().await.get(name) {
            return Ok(handle.control.status());
        }
        Ok(runner::status_on_disk(
            &self.store.config().data_dir,
            &self.definition(name)?,
        ))
    }

    /// Every pipeline's latest version and its status.
    pub async fn list(&self) -> Result<Vec<PipelineStatus>> {
        let mut out = Vec::new();
        for def in self.latest_definitions()? {
            out.push(self.status(&def.spec.name).await?);
        }
        Ok(out)
    }

    /// Appends a body of events to stream `stream` durably; pipelines with an HTTP source of
    /// that name read it. Returns the body's position in the stream.
    pub async fn push(&self, stream: &str, body: Bytes) -> Result<u64> {
        if !self.http_streams.read().expect("lock").contains(stream) {
            return Err(StoreError::NotFound(format!(
                "no pipeline reads stream '{stream}'; apply one with source kind = \"http\" first"
            )));
        }
        self.streams.push(stream, body).await
    }

    /// Stops every running pipeline (each takes a last checkpoint) and closes the streams.
    pub async fn close(&self) {
        let handles: Vec<PipelineHandle> =
            self.running.lock().await.drain().map(|(_, h)| h).collect();
        for handle in handles {
            handle.stop().await;
        }
        self.streams.close();
    }
}
