//! Storage: where Kairos keeps the files that are neither a feature group's log nor the online
//! store — the offline Delta tables, model artifacts, training datasets and vector-index
//! snapshots.
//!
//! The data dir's file system is the default. A cluster names an S3 bucket instead
//! (`storage.url = "s3://bucket/prefix"`, the endpoint and credentials from the usual `AWS_*`
//! variables), and then every replica sees the same files. Both sit behind object_store's one
//! trait, so the code above does not know which it has. Delta commits on S3 rely on a
//! conditional PUT (`If-None-Match: *`); a bucket that does not enforce it would let two
//! committers overwrite each other, so [`Storage::verify`] refuses it at start.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::prefix::PrefixStore;
use object_store::{
    ClientConfigKey, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
    WriteMultipart,
};
use tokio::io::AsyncReadExt;
use url::Url;

pub use object_store;

pub mod testing;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage.url: {0}")]
    BadUrl(String),
    /// The engine did not answer, or answered with an error that is not the caller's.
    #[error("{engine}: {source}")]
    Unavailable {
        engine: String,
        source: object_store::Error,
    },
    /// The engine answers but cannot keep one of Kairos's guarantees.
    #[error("{engine}: {reason}")]
    Unsuitable { engine: String, reason: String },
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Where the files are.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    DataDir(PathBuf),
    S3 { bucket: String, prefix: StorePath },
}

/// The storage of one Kairos deployment: cheap to clone, every clone the same files.
#[derive(Debug, Clone)]
pub struct Storage {
    location: Location,
    /// The store at the location (the prefix already applied).
    root: Arc<dyn ObjectStore>,
}

impl Storage {
    /// The bucket at `url` when given (`s3://bucket/prefix`), else the data dir.
    pub fn open(url: Option<&str>, data_dir: &Path) -> Result<Storage> {
        match url {
            None => Storage::data_dir(data_dir),
            Some(url) => Storage::s3(url),
        }
    }

    /// The data dir's file system (created if absent).
    pub fn data_dir(dir: &Path) -> Result<Storage> {
        let unavailable = |source| StorageError::Unavailable {
            engine: format!("data dir {}", dir.display()),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| {
            unavailable(object_store::Error::Generic {
                store: "local",
                source: Box::new(e),
            })
        })?;
        let dir = std::path::absolute(dir).map_err(|e| {
            unavailable(object_store::Error::Generic {
                store: "local",
                source: Box::new(e),
            })
        })?;
        // A deleted folder's last file takes the folder with it, as it would on S3.
        let root = LocalFileSystem::new_with_prefix(&dir)
            .map_err(unavailable)?
            .with_automatic_cleanup(true);
        Ok(Storage {
            location: Location::DataDir(dir),
            root: Arc::new(root),
        })
    }

    /// An S3 bucket, `s3://bucket/prefix`.
    pub fn s3(url: &str) -> Result<Storage> {
        let parsed = Url::parse(url).map_err(|e| StorageError::BadUrl(format!("'{url}': {e}")))?;
        if parsed.scheme() != "s3" {
            return Err(StorageError::BadUrl(format!(
                "'{url}' is not an s3://bucket/prefix URL"
            )));
        }
        let Some(bucket) = parsed.host_str().filter(|b| !b.is_empty()) else {
            return Err(StorageError::BadUrl(format!("'{url}' names no bucket")));
        };
        let prefix = StorePath::from_url_path(parsed.path())
            .map_err(|e| StorageError::BadUrl(format!("'{url}': {e}")))?;
        let engine = format!("S3 s3://{bucket}");
        let bucket_store = bucket_store(bucket).map_err(|source| StorageError::Unavailable {
            engine: engine.clone(),
            source,
        })?;
        let root: Arc<dyn ObjectStore> = if prefix.as_ref().is_empty() {
            bucket_store
        } else {
            Arc::new(PrefixStore::new(bucket_store, prefix.clone()))
        };
        Ok(Storage {
            location: Location::S3 {
                bucket: bucket.to_string(),
                prefix,
            },
            root,
        })
    }

    /// What the storage is, for messages and readiness: `data dir <path>` or `S3 s3://…`.
    pub fn engine(&self) -> String {
        match &self.location {
            Location::DataDir(dir) => format!("data dir {}", dir.display()),
            Location::S3 { bucket, prefix } if prefix.as_ref().is_empty() => {
                format!("S3 s3://{bucket}")
            }
            Location::S3 { bucket, prefix } => format!("S3 s3://{bucket}/{prefix}"),
        }
    }

    /// Whether other processes on other machines see the same files (a cluster's storage).
    pub fn is_shared(&self) -> bool {
        matches!(self.location, Location::S3 { .. })
    }

    /// The store of one area (`models`, `offline`, …): paths in it are relative to
    /// `<location>/<parts…>`.
    pub fn area(&self, parts: &[&str]) -> Arc<dyn ObjectStore> {
        Arc::new(PrefixStore::new(self.root.clone(), area_path(parts)))
    }

    /// The URL of a folder, for engines that open tables by URL (delta-rs): `file:///…` in the
    /// data dir, `s3://bucket/prefix/…` in a bucket.
    pub fn url(&self, parts: &[&str]) -> Url {
        match &self.location {
            Location::DataDir(dir) => {
                let mut path = dir.clone();
                path.extend(parts);
                Url::from_directory_path(&path)
                    .expect("the data dir was made absolute when the storage was opened")
            }
            Location::S3 { bucket, prefix } => {
                let path = StorePath::from_iter(prefix.parts().chain(area_path(parts).parts()));
                Url::parse(&format!("s3://{bucket}/{path}/"))
                    .expect("a bucket name and object path form a URL")
            }
        }
    }

    /// Moves the finished files of the local folder `local` into `<location>/<parts…>`,
    /// replacing what was there; `local` is gone afterwards. In the data dir it is a rename (so
    /// `local` must be on the data dir's file system); in a bucket, an upload of each file,
    /// streamed in parts. Either way a reader sees each file whole or not at all; the caller
    /// makes the folder visible as a whole (a catalog entry written last).
    pub async fn publish_dir(&self, local: &Path, parts: &[&str]) -> Result<()> {
        let io = |e: std::io::Error| {
            self.unavailable(object_store::Error::Generic {
                store: "local",
                source: Box::new(e),
            })
        };
        match &self.location {
            Location::DataDir(dir) => {
                let mut target = dir.clone();
                target.extend(parts);
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent).map_err(io)?;
                }
                match std::fs::remove_dir_all(&target) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io(e)),
                }
                std::fs::rename(local, &target).map_err(io)
            }
            Location::S3 { .. } => {
                self.delete_all(parts).await?;
                let area = self.area(parts);
                for entry in std::fs::read_dir(local).map_err(io)? {
                    let entry = entry.map_err(io)?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let upload = area
                        .put_multipart(&StorePath::from(name))
                        .await
                        .map_err(|source| self.unavailable(source))?;
                    let mut upload = WriteMultipart::new_with_chunk_size(upload, UPLOAD_PART_BYTES);
                    let mut file = tokio::fs::File::open(entry.path()).await.map_err(io)?;
                    let mut buffer = vec![0; UPLOAD_PART_BYTES];
                    loop {
                        let n = file.read(&mut buffer).await.map_err(io)?;
                        if n == 0 {
                            break;
                        }
                        upload
                            .wait_for_capacity(UPLOADS_IN_FLIGHT)
                            .await
                            .map_err(|source| self.unavailable(source))?;
                        upload.write(&buffer[..n]);
                    }
                    upload
                        .finish()
                        .await
                        .map_err(|source| self.unavailable(source))?;
                }
                std::fs::remove_dir_all(local).map_err(io)
            }
        }
    }

    /// The bytes of the file `<location>/<parts…>`, or `None` when there is none.
    pub async fn read(&self, parts: &[&str]) -> Result<Option<bytes::Bytes>> {
        let path = area_path(parts);
        let got = match self.root.get(&path).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(source) => return Err(self.unavailable(source)),
        };
        got.bytes()
            .await
            .map(Some)
            .map_err(|source| self.unavailable(source))
    }

    /// Writes `bytes` as the file `<location>/<parts…>`, replacing it whole: a reader sees the
    /// old file or the new one (one PUT in a bucket, a rename in the data dir).
    pub async fn write(&self, parts: &[&str], bytes: bytes::Bytes) -> Result<()> {
        self.root
            .put(&area_path(parts), bytes.into())
            .await
            .map(drop)
            .map_err(|source| self.unavailable(source))
    }

    /// Deletes every file under `<location>/<parts…>`.
    pub async fn delete_all(&self, parts: &[&str]) -> Result<()> {
        let area = self.area(parts);
        let locations = area.list(None).map_ok(|meta| meta.location).boxed();
        area.delete_stream(locations)
            .try_collect::<Vec<_>>()
            .await
            .map_err(|source| self.unavailable(source))?;
        Ok(())
    }

    /// Whether the storage answers (an object looked up; that it is absent is an answer).
    pub async fn ping(&self) -> Result<()> {
        match self.root.head(&StorePath::from("_kairos/ping")).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(self.unavailable(source)),
        }
    }

    /// Checks that the storage answers and keeps the guarantee Delta commits rely on: a PUT
    /// that must create its object (`If-None-Match: *`) is refused when the object exists.
    /// Run once at start, so a bucket that would let two committers overwrite each other's
    /// commit is refused before it is written to.
    pub async fn verify(&self) -> Result<()> {
        let probe = StorePath::from_iter([
            "_kairos",
            &format!(
                "conditional-put-probe-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos()
            ),
        ]);
        let create = || PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let first = self
            .root
            .put_opts(&probe, PutPayload::from_static(b"first"), create())
            .await;
        let second = match first {
            Ok(_) => {
                self.root
                    .put_opts(&probe, PutPayload::from_static(b"second"), create())
                    .await
            }
            Err(object_store::Error::NotImplemented { .. }) => {
                return Err(self.unsuitable(
                    "conditional PUT is turned off (aws_conditional_put = disabled); Delta \
                     commits need it",
                ));
            }
            Err(source) => return Err(self.unavailable(source)),
        };
        let cleanup = self.root.delete(&probe).await;
        match second {
            Err(object_store::Error::AlreadyExists { .. }) => {}
            Ok(_) => {
                return Err(self.unsuitable(
                    "a PUT with If-None-Match: * overwrote an existing object; this service \
                     does not enforce conditional PUT, so two Delta committers could overwrite \
                     each other's commit",
                ));
            }
            Err(source) => return Err(self.unavailable(source)),
        }
        cleanup.map_err(|source| self.unavailable(source))
    }

    fn unavailable(&self, source: object_store::Error) -> StorageError {
        StorageError::Unavailable {
            engine: self.engine(),
            source,
        }
    }

    fn unsuitable(&self, reason: &str) -> StorageError {
        StorageError::Unsuitable {
            engine: self.engine(),
            reason: reason.to_string(),
        }
    }
}

fn area_path(parts: &[&str]) -> StorePath {
    StorePath::from_iter(parts.iter().copied())
}

/// The size of one part of an upload (S3 takes parts of 5 MiB and more).
const UPLOAD_PART_BYTES: usize = 8 << 20;

/// Parts of one upload in flight at once.
const UPLOADS_IN_FLIGHT: usize = 4;

/// How long one storage request may take, retries included, before its caller is answered with
/// an error naming the storage (object_store's default, three minutes, would read as a hang).
const REQUEST_DEADLINE: Duration = Duration::from_secs(20);

/// The client of one S3 bucket, made once per process and shared (its connection pool with
/// it): the endpoint, region and credentials come from the `AWS_*` variables, as every AWS
/// tool takes them, and so may settings that override Kairos's bounds (`AWS_TIMEOUT`,
/// `AWS_CONNECT_TIMEOUT`).
pub fn bucket_store(bucket: &str) -> Result<Arc<dyn ObjectStore>, object_store::Error> {
    static BUCKETS: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
    let mut buckets = BUCKETS
        .get_or_init(Default::default)
        .lock()
        .expect("bucket clients lock");
    if let Some(store) = buckets.get(bucket) {
        return Ok(store.clone());
    }
    let mut builder = AmazonS3Builder::new()
        .with_retry(RetryConfig {
            retry_timeout: REQUEST_DEADLINE,
            max_retries: 5,
            ..RetryConfig::default()
        })
        .with_config(
            AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
            "5 seconds",
        );
    for (key, value) in std::env::vars() {
        if key.starts_with("AWS_")
            && let Ok(key) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>()
        {
            builder = builder.with_config(key, value);
        }
    }
    let store: Arc<dyn ObjectStore> = Arc::new(builder.with_bucket_name(bucket).build()?);
    buckets.insert(bucket.to_string(), store.clone());
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_area_of_the_data_dir_is_a_folder_and_its_url_a_file_url() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(None, dir.path()).unwrap();
        assert!(!storage.is_shared());
        let models = storage.area(&["models"]);
        models
            .put(
                &StorePath::from("fraud/v1/model.onnx"),
                PutPayload::from_static(b"onnx"),
            )
            .await
            .unwrap();
        assert!(dir.path().join("models/fraud/v1/model.onnx").is_file());
        let url = storage.url(&["offline", "fraud", "v1"]);
        assert_eq!(url.scheme(), "file");
        assert!(url.path().ends_with("/offline/fraud/v1/"), "{url}");
        storage.verify().await.unwrap();
        storage.delete_all(&["models", "fraud"]).await.unwrap();
        assert!(!dir.path().join("models/fraud").exists());
        publishes_a_folder(&storage, &dir.path().join("tmp")).await;
        assert!(dir.path().join("datasets/td1/train.parquet").is_file());
    }

    /// A folder built locally lands whole in the storage, and replaces what was there.
    async fn publishes_a_folder(storage: &Storage, scratch: &Path) {
        for (round, sizes) in [[3usize, 0], [UPLOAD_PART_BYTES * 2 + 17, 5]]
            .iter()
            .enumerate()
        {
            let local = scratch.join(format!("build-{round}"));
            std::fs::create_dir_all(&local).unwrap();
            let files: Vec<(String, Vec<u8>)> = sizes
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    (
                        format!("f{}-{i}", round),
                        (0..*n).map(|b| (b % 251) as u8).collect(),
                    )
                })
                .collect();
            for (name, bytes) in &files {
                std::fs::write(local.join(name), bytes).unwrap();
            }
            std::fs::write(local.join("train.parquet"), b"rows").unwrap();
            storage
                .publish_dir(&local, &["datasets", "td1"])
                .await
                .unwrap();
            assert!(!local.exists());
            for (name, bytes) in &files {
                let got = storage.read(&["datasets", "td1", name]).await.unwrap();
                assert_eq!(got.as_deref(), Some(bytes.as_slice()), "{name}");
            }
        }
        assert_eq!(
            storage.read(&["datasets", "td1", "f0-0"]).await.unwrap(),
            None,
            "replaced"
        );
    }

    /// Against a real S3 API (moto in CI): the probe passes, files land under the prefix, and
    /// a second create of one object is refused — the guarantee Delta commits rest on.
    #[tokio::test]
    async fn a_bucket_that_enforces_conditional_put_is_accepted() {
        let Some(url) = testing::s3_url("storage") else {
            return;
        };
        let storage = Storage::open(Some(&url), Path::new("unused")).unwrap();
        storage.verify().await.unwrap();
        let area = storage.area(&["models"]);
        let file = StorePath::from("fraud/v1/model.onnx");
        let create = || PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        area.put_opts(&file, PutPayload::from_static(b"one"), create())
            .await
            .unwrap();
        let again = area
            .put_opts(&file, PutPayload::from_static(b"two"), create())
            .await;
        assert!(
            matches!(again, Err(object_store::Error::AlreadyExists { .. })),
            "{again:?}"
        );
        let bytes = area.get(&file).await.unwrap().bytes().await.unwrap();
        assert_eq!(bytes.as_ref(), b"one");
        storage.delete_all(&["models"]).await.unwrap();
        assert!(area.get(&file).await.is_err());
        let scratch = tempfile::tempdir().unwrap();
        publishes_a_folder(&storage, scratch.path()).await;
    }

    #[test]
    fn an_s3_url_names_its_bucket_and_prefix() {
        let storage = Storage::open(Some("s3://features/prod/eu"), Path::new("unused")).unwrap();
        assert!(storage.is_shared());
        assert_eq!(storage.engine(), "S3 s3://features/prod/eu");
        assert_eq!(
            storage.url(&["offline", "fraud", "v1"]).as_str(),
            "s3://features/prod/eu/offline/fraud/v1/"
        );
        for bad in ["http://features/x", "s3:///x", "features/x"] {
            let e = Storage::open(Some(bad), Path::new("unused")).unwrap_err();
            assert!(matches!(e, StorageError::BadUrl(_)), "{bad}: {e}");
        }
    }
}
