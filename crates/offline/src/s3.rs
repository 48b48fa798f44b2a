//! Delta tables in an S3 bucket: delta-rs resolves a table's URL through process-wide
//! factories, one per scheme. Kairos's build has none for `s3://` (deltalake's `s3` feature
//! brings the AWS SDK and a DynamoDB lock), so it registers its own: the bucket's object_store
//! client, shared with the rest of Kairos's storage, and delta-rs's default log store, whose
//! commits are conditional PUTs (`If-None-Match: *`). Two committers of one version cannot both
//! win: the loser's PUT is refused and delta-rs retries it at the next version.
//! [`kairos_storage::Storage::verify`] makes sure at start that the bucket enforces it.

use std::sync::{Arc, Once};

use deltalake::logstore::object_store::path::Path;
use deltalake::logstore::{
    LogStore, LogStoreFactory, ObjectStoreFactory, ObjectStoreRef, StorageConfig, default_logstore,
    logstore_factories, object_store_factories,
};
use deltalake::{DeltaResult, DeltaTableError};
use url::Url;

struct S3Tables;

impl ObjectStoreFactory for S3Tables {
    fn parse_url_opts(
        &self,
        url: &Url,
        _config: &StorageConfig,
    ) -> DeltaResult<(ObjectStoreRef, Path)> {
        let bucket = url
            .host_str()
            .ok_or_else(|| DeltaTableError::InvalidTableLocation(url.to_string()))?;
        let store = kairos_storage::bucket_store(bucket)?;
        let path = Path::from_url_path(url.path())
            .map_err(|_| DeltaTableError::InvalidTableLocation(url.to_string()))?;
        Ok((store, path))
    }
}

impl LogStoreFactory for S3Tables {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

/// Makes `s3://` table URLs resolvable (once per process).
pub(crate) fn register() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        let scheme = Url::parse("s3://").expect("a scheme-only URL");
        object_store_factories().insert(scheme.clone(), Arc::new(S3Tables));
        logstore_factories().insert(scheme, Arc::new(S3Tables));
    });
}
