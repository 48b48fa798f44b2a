//! The vector index: approximate nearest neighbours of an embedding column.
//!
//! [`HnswIndex`] is an HNSW graph of `u64` keys under a cosine, dot-product or L2 [`Metric`].
//! The graph is built and walked on one-byte scalar codes of the vectors and the candidates it
//! finds are re-ranked on the exact vectors, so the walk reads a quarter of the memory while
//! results keep exact distances. A filtered search walks the graph through every key but returns
//! only those passing the filter; when few keys pass (below `exact_below` of them) it scans
//! them exactly instead, and it falls back to the scan whenever the walk finds fewer than `k`,
//! so a search returns `k` keys whenever `k` pass. The index saves to one checksummed file
//! together with the log position it holds, so a restart loads it and applies only the log
//! after that position.

mod error;
mod hnsw;
mod index;
pub mod kernels;
mod metric;
mod quantize;

pub use error::VectorError;
pub use hnsw::HnswParams;
pub use index::{
    HnswIndex, IndexConfig, IndexStats, LoadedIndex, Neighbour, SearchOptions, SearchOutcome,
    SearchPath,
};
pub use metric::Metric;
