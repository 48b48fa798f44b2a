//! Model artifacts: one directory per model version, `<name>/v<version>/`, in an object store —
//! the data dir's `models/` folder by default, a bucket later, behind the same trait.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

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
    /// The artifacts of the store at `data_dir`: its `models/` folder.
    pub fn in_data_dir(data_dir: &Path) -> Result<Artifacts, ArtifactError> {
        Artifacts::local(&data_dir.join("models"))
    }

    /// Artifacts under `dir` on the local file system (created if absent).
    pub fn local(dir: &Path) -> Result<Artifacts, ArtifactError> {
        std::fs::create_dir_all(dir).map_err(|e| object_store::Error::Generic {
            store: "local",
            source: Box::new(e),
        })?;
        Ok(Artifacts {
            // A deleted version's folder goes with its last file.
            store: Arc::new(LocalFileSystem::new_with_prefix(dir)?.with_automatic_cleanup(true)),
        })
    }

    /// Stores `bytes` as `file` of the model version (whole or not at all: the local store
    /// writes a temporary file and renames it).
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
        let artifacts = Artifacts::local(dir.path()).unwrap();
        let body = Bytes::from_static(b"\x08\x07onnx bytes");
        artifacts
            .put("fraud", 2, "model.onnx", body.clone())
            .await
            .unwrap();
        assert!(dir.path().join("fraud/v2/model.onnx").is_file());
        assert_eq!(artifacts.get("fraud", 2, "model.onnx").await.unwrap(), body);
        assert!(artifacts.get("fraud", 1, "model.onnx").await.is_err());
        artifacts.delete("fraud", 2).await.unwrap();
        assert!(artifacts.get("fraud", 2, "model.onnx").await.is_err());
    }
}
