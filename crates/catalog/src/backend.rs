//! What a catalog engine keeps: versioned JSON documents by kind and name.
//!
//! Everything the catalog stores — feature groups, views, training datasets, pipelines, models,
//! deployments, services' documents — is one of these, so an engine (SQLite embedded,
//! PostgreSQL for a cluster) implements these few operations and the typed catalog above them
//! ([`crate::DocumentCatalog`]) is written once.

use crate::{CatalogError, Result};

/// Documents one [`Backend::delete`] removes: one version, or every version of a name.
#[derive(Debug, Clone, Copy)]
pub struct Doc<'a> {
    pub kind: &'a str,
    pub name: &'a str,
    pub version: Option<u32>,
}

/// A document as stored: its name, version and JSON body.
pub type StoredDoc = (String, u32, String);

/// Writes a new document's body once its version is known (the body records its version).
/// Owned and `Send`, since an engine may run its transactions on a thread of its own.
pub type MakeBody = Box<dyn Fn(u32) -> String + Send>;

/// One change to the catalog: a document written, or deleted (`deleted`; `version` `None` when
/// every version of the name went). Changes are numbered in the order they were committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub seq: i64,
    pub kind: String,
    pub name: String,
    pub version: Option<u32>,
    pub deleted: bool,
}

/// The changes after a position, as far as the catalog still keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    pub changes: Vec<Change>,
    /// False when changes after the position were already pruned: a reader that far behind
    /// must read everything again rather than apply these.
    pub complete: bool,
}

/// Changes a catalog keeps for readers that fall behind (a replica cut off for a while); one
/// further behind reads everything again.
pub const KEPT_CHANGES: i64 = 10_000;

pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Hands out the next version of `name` among `kind`'s documents — one more than any
    /// version ever handed out for it, deleted ones included, so old data is never mistaken
    /// for new — and, when `body` is given, stores `body(version)` under it in the same
    /// transaction. Two writers at once never get the same version.
    fn next_version(&self, kind: &str, name: &str, body: Option<MakeBody>) -> Result<u32>;

    /// Stores `body` under a version handed out before, replacing what it held.
    fn put(&self, kind: &str, name: &str, version: u32, body: &str) -> Result<()>;

    /// One version, or the latest when `version` is `None`.
    fn get(&self, kind: &str, name: &str, version: Option<u32>) -> Result<Option<(u32, String)>>;

    /// Every version of `kind`'s documents (of one name, when given), by name then version.
    fn list(&self, kind: &str, name: Option<&str>) -> Result<Vec<StoredDoc>>;

    /// Deletes `docs` in one transaction; returns whether the first of them existed.
    fn delete(&self, docs: &[Doc<'_>]) -> Result<bool>;

    /// The changes committed after change `seq` (0: from the start), in commit order; every
    /// write above records its change in its own transaction (a bare version reservation
    /// changes nothing).
    fn changes_since(&self, seq: i64) -> Result<Changes>;

    /// Advances `name`'s claimed slot to `slot` if it is behind it, and answers whether this
    /// call advanced it: of any number of callers claiming one slot, one is told yes.
    fn claim(&self, name: &str, slot: u64) -> Result<bool>;

    /// Whether the engine answers (a replica's readiness).
    fn ping(&self) -> Result<()>;

    /// The engine's name, as errors and readiness name it.
    fn engine(&self) -> &'static str;
}

/// The migrations an engine's schema still needs, each with the schema version it brings,
/// when `applied` of `all` are in; a schema newer than this build knows is refused.
pub(crate) fn pending_migrations(
    applied: i64,
    all: &'static [&'static str],
) -> Result<impl Iterator<Item = (i64, &'static str)>> {
    let applied = usize::try_from(applied).unwrap_or(usize::MAX);
    if applied > all.len() {
        return Err(CatalogError::NewerSchema {
            found: applied,
            known: all.len(),
        });
    }
    Ok(all
        .iter()
        .enumerate()
        .skip(applied)
        .map(|(i, sql)| (i as i64 + 1, *sql)))
}
