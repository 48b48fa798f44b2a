//! What a catalog engine keeps: versioned JSON documents by kind and name.
//!
//! Everything the catalog stores — feature groups, views, training datasets, pipelines, models,
//! deployments, services' documents — is one of these, so an engine (SQLite embedded,
//! PostgreSQL for a cluster) implements these few operations and the typed catalog above them
//! ([`crate::DocumentCatalog`]) is written once.

use crate::Result;

/// Documents one [`Backend::delete`] removes: one version, or every version of a name.
#[derive(Debug, Clone, Copy)]
pub struct Doc<'a> {
    pub kind: &'a str,
    pub name: &'a str,
    pub version: Option<u32>,
}

/// A document as stored: its name, version and JSON body.
pub type StoredDoc = (String, u32, String);

pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Hands out the next version of `name` among `kind`'s documents — one more than any
    /// version ever handed out for it, deleted ones included, so old data is never mistaken
    /// for new — and, when `body` is given, stores `body(version)` under it in the same
    /// transaction. Two writers at once never get the same version.
    fn next_version(
        &self,
        kind: &str,
        name: &str,
        body: Option<&dyn Fn(u32) -> String>,
    ) -> Result<u32>;

    /// Stores `body` under a version handed out before, replacing what it held.
    fn put(&self, kind: &str, name: &str, version: u32, body: &str) -> Result<()>;

    /// One version, or the latest when `version` is `None`.
    fn get(&self, kind: &str, name: &str, version: Option<u32>) -> Result<Option<(u32, String)>>;

    /// Every version of `kind`'s documents (of one name, when given), by name then version.
    fn list(&self, kind: &str, name: Option<&str>) -> Result<Vec<StoredDoc>>;

    /// Deletes `docs` in one transaction; returns whether the first of them existed.
    fn delete(&self, docs: &[Doc<'_>]) -> Result<bool>;
}
