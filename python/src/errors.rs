//! The engine's errors as the typed layer's exceptions (`kairos.errors`): one class per
//! [`ErrorKind`], carrying the engine's message and a server's status.

use kairos_client::{ClientError, ErrorKind};
use pyo3::prelude::*;

/// The exception class of `kairos.errors` for an error of `kind`.
fn class_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::BadInput => "BadInput",
        ErrorKind::NotFound => "NotFound",
        ErrorKind::Conflict => "Conflict",
        ErrorKind::Unavailable => "Unavailable",
        ErrorKind::Unauthorised => "Unauthorised",
        ErrorKind::Internal => "InternalError",
    }
}

/// `error` as the exception the typed layer raises.
pub fn to_py(py: Python<'_>, error: ClientError) -> PyErr {
    let raise = || -> PyResult<PyErr> {
        let class = py
            .import("kairos.errors")?
            .getattr(class_name(error.kind))?;
        let status = error.status.map(|s| s.as_u16());
        Ok(PyErr::from_value(
            class.call1((error.message.clone(), status))?,
        ))
    };
    raise().unwrap_or_else(|e| e)
}

/// A value the caller passed that the engine cannot take (not JSON it can read, say).
pub fn bad_input(py: Python<'_>, message: impl Into<String>) -> PyErr {
    to_py(py, ClientError::new(ErrorKind::BadInput, message))
}
