//! Model artifacts: one folder per model version, `models/<name>/v<version>/`, in the
//! deployment's storage — the data dir, or the bucket every replica of a cluster reads.

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use kairos_storage::Storage;
use kairos_storage::object_store::path::Path as StorePath;
use kairos_storage::object_store::{self as object_store, ObjectStore, ObjectStoreExt, PutPayload};

#[derive(Debug, thiserror::Error)]
#[error("model artifacts: {0}")]
pub struct ArtifactError(#[from] object_store::Error);

/// Where model artifacts are kept.
#[derive(Debug, Clone)]
pub struct Artifacts {
    store: Arc<dyn ObjectStore>,
}

fn path(model: &str, version: u32, file: &str) -> StorePath {
    StorePath::from_iter([model, &format!("v{version}"), file])
}

impl Artifacts {
    /// The `models/` area of `storage`.
    pub fn new(storage: &Storage) -> Artifacts {
        Artifacts {
            store: storage.area(&["models"]),
        }
    }

    /// Stores `bytes` as `file` of the model version (whole or not at all: the local store
    /// writes a temporary file and renames it, and an S3 PUT is atomic).
    pub async fn put(
        &self,
        model: &str,
        version: u32,
        file: &str,
        bytes: Bytes,
    ) -> Result<(), ArtifactError> {
        self.store
            .put(&path(model, version, file), PutPayload::from_bytes(bytes))
            .await?;
        Ok(())
    }

    pub async fn get(&self, model: &str, version: u32, file: &str) -> Result<Bytes, ArtifactError> {
        Ok(self
            .store
            .get(&path(model, version, file))
            .await?
            .bytes()
            .await?)
    }

    /// Removes every file of the model version.
    /// Every model version that has files, with the age of its newest file.
    pub async fn versions(&self) -> Result<Vec<(String, u32, std::time::Duration)>, ArtifactError> {
        let files: Vec<_> = self.store.list(None).try_collect().await?;
        let mut newest: std::collections::BTreeMap<(String, u32), chrono::DateTime<chrono::Utc>> =
            Default::default();
        for file in files {
            let parts: Vec<_> = file.location.parts().collect();
            let [model, version, ..] = parts.as_slice() else {
                continue;
            };
            let Some(version) = version
                .as_ref()
                .strip_prefix('v')
                .and_then(|v| v.parse().ok())
            else {
                continue;
            };
            let entry = newest
                .entry((model.as_ref().to_string(), version))
                .or_insert(file.last_modified);
            *entry = (*entry).max(file.last_modified);
        }
        let now = chrono::Utc::now();
        Ok(newest
            .into_iter()
            .map(|((model, version), at)| (model, version, (now - at).to_std().unwrap_or_default()))
            .collect())
    }

    pub async fn delete(&self, model: &str, version: u32) -> Result<(), ArtifactError> {
        let prefix = StorePath::from_iter([model, &format!("v{version}")]);
        let files: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        for file in files {
            self.store.delete(&file.location).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_artifact_is_stored_read_and_deleted_per_model_version() {
        let dir = tempfile::tempdir().unwrap();
        let artifacts = Artifacts::new(&Storage::data_dir(dir.path()).unwrap());
        let body = Bytes::from_static(b"\x08\x07onnx bytes");
        artifacts
            .put("fraud", 2, "model.onnx", body.clone())
            .await
            .unwrap();
        assert!(dir.path().join("models/fraud/v2/model.onnx").is_file());
        assert_eq!(artifacts.get("fraud", 2, "model.onnx").await.unwrap(), body);
        assert!(artifacts.get("fraud", 1, "model.onnx").await.is_err());
        artifacts.delete("fraud", 2).await.unwrap();
        assert!(artifacts.get("fraud", 2, "model.onnx").await.is_err());
    }
}
