//! Python user-defined functions run in this process, on the interpreter that loaded the SDK:
//! the engine's [`PythonHost`] when it is embedded. Each call takes the GIL, hands the columns
//! to `kairos._udf` as Arrow arrays (the PyCapsule interface, without a copy) and takes the
//! result back the same way.

use arrow::array::ArrayRef;
use kairos_transform::{PythonHost, PythonUdf, TransformError, UdfMode, UserFn};
use pyo3::prelude::*;
use pyo3::types::PyList;
use pyo3_arrow::PyArray;

#[derive(Debug)]
pub struct Interpreter;

impl PythonHost for Interpreter {
    fn load(
        &self,
        name: &str,
        udf: &PythonUdf,
        arity: usize,
    ) -> kairos_transform::Result<Box<UserFn>> {
        let mode = match udf.mode {
            UdfMode::Vectorized => "vectorized",
            UdfMode::Row => "row",
        };
        let returns = udf.returns.to_string();
        let run = Python::attach(|py| -> PyResult<Py<PyAny>> {
            let load = py.import("kairos._udf")?.getattr("load")?;
            Ok(load
                .call1((udf.source.as_str(), name, mode, returns, arity))?
                .unbind())
        })
        .map_err(|e| TransformError::Definition(format!("Python function '{name}': {e}")))?;
        let name = name.to_string();
        Ok(Box::new(move |columns: &[ArrayRef]| {
            Python::attach(|py| -> PyResult<ArrayRef> {
                let columns = columns
                    .iter()
                    .map(|c| PyArray::from_array_ref(c.clone()).into_pyobject(py))
                    .collect::<PyResult<Vec<_>>>()?;
                let out: PyArray = run
                    .bind(py)
                    .call1((PyList::new(py, columns)?,))?
                    .extract()?;
                Ok(out.into_inner().0)
            })
            .map_err(|e| TransformError::Value(format!("Python function '{name}' failed: {e}")))
        }))
    }
}
