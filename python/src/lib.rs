//! `kairos._internal`: the engine under the Python SDK.
//!
//! One class, [`Engine`], holds a [`kairos_client::Client`] (the platform in this process or
//! behind a server) and runs each of its operations on the process's one tokio runtime with
//! the GIL released, so other Python threads (and an asyncio loop's executor) go on meanwhile.
//! Definitions and reports cross as JSON text, which the typed layer (`kairos/*.py`) reads;
//! rows cross as Arrow through the PyCapsule interface, without a copy; online vectors, where
//! microseconds count, cross as Python values built here.

mod engine;
mod errors;
mod runtime;
mod udf;
mod values;

use pyo3::prelude::*;

// The engine's allocations only (Python's own stay with Python's allocator): an online vector
// is a few hundred small ones, which glibc's malloc spent a sixth of the call on.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[pymodule]
fn _internal(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<engine::Engine>()?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
