//! `HnswIndex`: the graph behind a lock, with the checks, the filter's choice between the graph
//! and an exact scan, and the file it is saved to.

use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, RwLock};

use serde::{Deserialize, Serialize};

use crate::error::VectorError;
use crate::hnsw::{Allow, Graph, HnswParams, Scored, Visited};
use crate::metric::Metric;

/// An index's definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexConfig {
    pub dim: usize,
    #[serde(default)]
    pub metric: Metric,
    #[serde(default)]
    pub hnsw: HnswParams,
    /// Below this share of live keys passing a filter, a filtered search scans the passing keys
    /// exactly instead of walking the graph (`kairos bench ann --filters` measures the crossing).
    #[serde(default = "default_exact_below")]
    pub exact_below: f64,
}

/// Measured on MNIST (784 dimensions, 9,000 vectors): the scan answers faster than the walk
/// up to about a fifth of the keys passing (BENCHMARKS.md, "Vector index").
fn default_exact_below() -> f64 {
    0.2
}

impl IndexConfig {
    pub fn new(dim: usize, metric: Metric) -> IndexConfig {
        IndexConfig {
            dim,
            metric,
            hnsw: HnswParams::default(),
            exact_below: default_exact_below(),
        }
    }

    pub fn validate(&self) -> Result<(), VectorError> {
        let bad = |why: &str| {
            Err(VectorError::Config(format!(
                "invalid index configuration: {why}"
            )))
        };
        if self.dim == 0 || self.dim > 65_536 {
            return bad("dim must be between 1 and 65536");
        }
        if self.hnsw.m < 2 || self.hnsw.m > 128 {
            return bad("hnsw.m must be between 2 and 128");
        }
        if self.hnsw.ef_construction == 0 || self.hnsw.ef_search == 0 {
            return bad("hnsw.ef_construction and hnsw.ef_search must be positive");
        }
        if !(0.0..=1.0).contains(&self.exact_below) {
            return bad("exact_below must be a share between 0 and 1");
        }
        Ok(())
    }
}

/// A key and its distance from the query (smaller is nearer; see [`Metric`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Neighbour {
    pub key: u64,
    pub distance: f32,
}

/// How a search was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchPath {
    /// Walking the graph (filters applied on the way).
    Graph,
    /// Scanning every key that passes the filter.
    Exact,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchOutcome {
    pub neighbours: Vec<Neighbour>,
    pub path: SearchPath,
    /// Keys that passed the filter, when there was one.
    pub allowed: Option<usize>,
}

/// A search's settings beyond the query.
#[derive(Clone, Copy, Default)]
pub struct SearchOptions<'a> {
    /// Candidates kept while walking (the index's `ef_search` when absent).
    pub ef: Option<usize>,
    /// Only keys for which this holds are returned.
    pub filter: Option<&'a (dyn Fn(u64) -> bool + Sync)>,
    /// Answer by this path whatever the filter's selectivity (the exact scan is the reference
    /// for tests; the benchmark times both).
    pub force: Option<SearchPath>,
}

impl std::fmt::Debug for SearchOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchOptions")
            .field("ef", &self.ef)
            .field("filter", &self.filter.is_some())
            .field("force", &self.force)
            .finish()
    }
}

/// Counts describing an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexStats {
    pub keys: usize,
    pub tombstones: usize,
}

/// An HNSW index of `u64` keys. Searches share it; writes take it alone.
pub struct HnswIndex {
    config: IndexConfig,
    graph: RwLock<Graph>,
    /// Reused visit marks, one per concurrent search.
    visited: Mutex<Vec<Visited>>,
}

impl std::fmt::Debug for HnswIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HnswIndex")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish()
    }
}

const MAGIC: &[u8; 8] = b"KAIRSVX1";

#[derive(Serialize, Deserialize)]
struct IndexFile {
    config: IndexConfig,
    position: u64,
    graph: Graph,
    extra: Vec<u8>,
}

/// An index read back from its file.
#[derive(Debug)]
pub struct LoadedIndex {
    pub index: HnswIndex,
    /// The log position the index holds everything before.
    pub position: u64,
    /// What the owner saved beside it (see [`HnswIndex::save`]).
    pub extra: Vec<u8>,
}

impl HnswIndex {
    pub fn new(config: IndexConfig) -> Result<HnswIndex, VectorError> {
        config.validate()?;
        let graph = Graph::new(config.metric, config.dim, config.hnsw);
        Ok(HnswIndex {
            config,
            graph: RwLock::new(graph),
            visited: Mutex::new(Vec::new()),
        })
    }

    pub fn config(&self) -> &IndexConfig {
        &self.config
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn stats(&self) -> IndexStats {
        let graph = self.read();
        IndexStats {
            keys: graph.len(),
            tombstones: graph.tombstones(),
        }
    }

    pub fn contains(&self, key: u64) -> bool {
        self.read().slot_of(key).is_some()
    }

    /// The stored vector of a key (unit length under cosine).
    pub fn vector(&self, key: u64) -> Option<Vec<f32>> {
        let graph = self.read();
        graph.slot_of(key).map(|slot| graph.vector(slot).to_vec())
    }

    /// Whether the index could take this vector (dimension, finite components, a direction
    /// under cosine).
    pub fn check(&self, vector: &[f32]) -> Result<(), VectorError> {
        self.prepare(vector, || "given".to_owned()).map(drop)
    }

    /// Inserts or replaces vectors. Every one is checked first: one bad vector refuses the
    /// batch, and nothing of it is applied.
    pub fn upsert(&self, items: &[(u64, &[f32])]) -> Result<(), VectorError> {
        let prepared = items
            .iter()
            .map(|(key, vector)| Ok((*key, self.prepare(vector, || format!("for key {key}"))?)))
            .collect::<Result<Vec<_>, VectorError>>()?;
        let mut graph = self.graph.write().unwrap_or_else(|e| e.into_inner());
        let mut visited = self.take_visited();
        pulp::Arch::new().dispatch(Insert {
            graph: &mut graph,
            items: &prepared,
            visited: &mut visited,
        });
        self.give_back(visited);
        Ok(())
    }

    /// Removes keys; returns how many were present.
    pub fn remove(&self, keys: &[u64]) -> usize {
        let mut graph = self.graph.write().unwrap_or_else(|e| e.into_inner());
        keys.iter().filter(|&&key| graph.remove(key)).count()
    }

    /// The `k` nearest keys to a vector.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        options: SearchOptions<'_>,
    ) -> Result<SearchOutcome, VectorError> {
        let query = self.prepare(query, || "query".to_owned())?;
        Ok(self.search_prepared(&query, k, options, None))
    }

    /// The `k` nearest keys to a key's own vector, the key itself left out ("similar items").
    pub fn similar(
        &self,
        key: u64,
        k: usize,
        options: SearchOptions<'_>,
    ) -> Result<SearchOutcome, VectorError> {
        let query = self.vector(key).ok_or(VectorError::UnknownKey(key))?;
        Ok(self.search_prepared(&query, k, options, Some(key)))
    }

    fn search_prepared(
        &self,
        query: &[f32],
        k: usize,
        options: SearchOptions<'_>,
        without: Option<u64>,
    ) -> SearchOutcome {
        let graph = self.read();
        let user_filter = options.filter;
        let allow = (user_filter.is_some() || without.is_some()).then(|| {
            Allow::from_fn(graph.slots(), |slot| {
                let key = graph.key(slot);
                graph.is_live(slot) && Some(key) != without && user_filter.is_none_or(|f| f(key))
            })
        });
        let candidates = allow.as_ref().map_or(graph.len(), Allow::count);
        let k = k.min(candidates);
        let selective = allow.as_ref().is_some_and(|a| {
            a.count() <= k || (a.count() as f64) < self.config.exact_below * graph.len() as f64
        });
        let ef = options.ef.unwrap_or(self.config.hnsw.ef_search);
        let mut visited = self.take_visited();
        let (found, path) = pulp::Arch::new().dispatch(Search {
            graph: &graph,
            query,
            k,
            ef,
            allow: allow.as_ref(),
            visited: &mut visited,
            exact: options
                .force
                .map_or(selective, |path| path == SearchPath::Exact),
        });
        self.give_back(visited);
        SearchOutcome {
            neighbours: found
                .into_iter()
                .map(|s| Neighbour {
                    key: graph.key(s.slot),
                    distance: s.distance,
                })
                .collect(),
            path,
            allowed: allow.map(|a| a.count()),
        }
    }

    /// Writes the index, the log position it holds everything before, and the owner's `extra`
    /// bytes (state that must match the index, such as per-key versions) atomically: a
    /// temporary file, synced, then renamed over the old one.
    pub fn save(&self, path: &Path, position: u64, extra: &[u8]) -> Result<(), VectorError> {
        let io = |source| VectorError::Io {
            path: path.to_owned(),
            source,
        };
        let payload = {
            let graph = self.read();
            let file = IndexFile {
                config: self.config.clone(),
                position,
                graph: graph.clone(),
                extra: extra.to_vec(),
            };
            postcard::to_allocvec(&file).map_err(|e| VectorError::Corrupt {
                path: path.to_owned(),
                reason: e.to_string(),
            })?
        };
        let tmp = path.with_extension("tmp");
        {
            let mut out = std::fs::File::create(&tmp).map_err(io)?;
            out.write_all(MAGIC).map_err(io)?;
            out.write_all(&(payload.len() as u64).to_le_bytes())
                .map_err(io)?;
            out.write_all(&crc32fast::hash(&payload).to_le_bytes())
                .map_err(io)?;
            out.write_all(&payload).map_err(io)?;
            out.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        Ok(())
    }

    /// Reads an index saved by [`HnswIndex::save`].
    pub fn load(path: &Path) -> Result<LoadedIndex, VectorError> {
        let corrupt = |reason: &str| VectorError::Corrupt {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let bytes = std::fs::read(path).map_err(|source| VectorError::Io {
            path: path.to_owned(),
            source,
        })?;
        if bytes.len() < 20 || &bytes[..8] != MAGIC {
            return Err(corrupt("not a Kairos vector index"));
        }
        let len = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes"));
        let payload = &bytes[20..];
        if payload.len() != len || crc32fast::hash(payload) != crc {
            return Err(corrupt("truncated or damaged (length or checksum differs)"));
        }
        let file: IndexFile = postcard::from_bytes(payload).map_err(|e| corrupt(&e.to_string()))?;
        file.config.validate()?;
        let mut graph = file.graph;
        graph.restore_keys();
        let index = HnswIndex {
            config: file.config,
            graph: RwLock::new(graph),
            visited: Mutex::new(Vec::new()),
        };
        Ok(LoadedIndex {
            index,
            position: file.position,
            extra: file.extra,
        })
    }

    fn prepare(&self, vector: &[f32], what: impl Fn() -> String) -> Result<Vec<f32>, VectorError> {
        if vector.len() != self.config.dim {
            return Err(VectorError::Dimension {
                what: what(),
                expected: self.config.dim,
                got: vector.len(),
            });
        }
        if let Some(position) = vector.iter().position(|x| !x.is_finite()) {
            return Err(VectorError::NotFinite {
                what: what(),
                position,
            });
        }
        self.config
            .metric
            .prepare(vector)
            .ok_or_else(|| VectorError::Zero { what: what() })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Graph> {
        self.graph.read().unwrap_or_else(|e| e.into_inner())
    }

    fn take_visited(&self) -> Visited {
        self.visited
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default()
    }

    fn give_back(&self, visited: Visited) {
        self.visited
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(visited);
    }
}

// The graph's work runs inside `pulp` dispatches: `with_simd` is compiled once per instruction set
// with the graph's `#[inline(always)]` methods inlined into it, so the kernels vectorise for the
// CPU found at run time. (A closure would not do: its body is not inlined into the dispatch.)

struct Insert<'a> {
    graph: &'a mut Graph,
    items: &'a [(u64, Vec<f32>)],
    visited: &'a mut Visited,
}

impl pulp::WithSimd for Insert<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        self.graph.insert_batch(self.items, self.visited);
    }
}

struct Search<'a> {
    graph: &'a Graph,
    query: &'a [f32],
    k: usize,
    ef: usize,
    allow: Option<&'a Allow>,
    visited: &'a mut Visited,
    exact: bool,
}

impl pulp::WithSimd for Search<'_> {
    type Output = (Vec<Scored>, SearchPath);

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> Self::Output {
        let Search {
            graph,
            query,
            k,
            ef,
            allow,
            visited,
            exact,
        } = self;
        if exact {
            return (graph.exact(query, k, allow), SearchPath::Exact);
        }
        let found = graph.search(query, k, ef, allow, visited);
        if found.len() < k {
            // The walk ran out of reachable passing keys: the scan still finds k.
            (graph.exact(query, k, allow), SearchPath::Exact)
        } else {
            (found, SearchPath::Graph)
        }
    }
}
