//! The process's one tokio runtime, and running the engine's futures on it without the GIL.

use std::future::Future;
use std::sync::OnceLock;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// The runtime and the process that started it: a forked child inherits the memory but not
/// the runtime's threads, so it must not use it.
struct Shared {
    runtime: tokio::runtime::Runtime,
    pid: u32,
}

static SHARED: OnceLock<Result<Shared, String>> = OnceLock::new();

fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    let shared = SHARED.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .thread_name("kairos")
            .enable_all()
            .build()
            .map(|runtime| Shared {
                runtime,
                pid: std::process::id(),
            })
            .map_err(|e| format!("kairos cannot start its runtime: {e}"))
    });
    match shared {
        Ok(shared) if shared.pid == std::process::id() => Ok(&shared.runtime),
        Ok(shared) => Err(PyRuntimeError::new_err(format!(
            "kairos was started in process {} and this process ({}) is a fork of it: the \
             engine's threads did not come along. Connect in the child only (start it with \
             multiprocessing's 'spawn' or 'forkserver' method, or fork before the first \
             kairos.connect)",
            shared.pid,
            std::process::id()
        ))),
        Err(why) => Err(PyRuntimeError::new_err(why.clone())),
    }
}

/// Runs `future` to its end on the runtime, the GIL released meanwhile.
pub fn block_on<F>(py: Python<'_>, future: F) -> PyResult<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    let runtime = runtime()?;
    Ok(py.detach(|| runtime.block_on(future)))
}
