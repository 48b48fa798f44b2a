//! Values between Python and the engine without a text format in between: a request's keys
//! and values read straight from Python objects, and online vectors answered as Python rows.
//! Online calls are a few tens of microseconds; JSON text each way cost a third of that.

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, FixedSizeListArray, Float32Array,
    Float64Array, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyDate, PyDateTime, PyDelta, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple,
    PyTzInfo,
};

/// A Python value as the JSON value the engine's requests carry: lists and tuples as arrays,
/// dicts as objects, dates and times as ISO 8601 text, numpy's scalars as numbers; anything
/// else as its `str()`, as `json.dumps(default=str)` would.
pub fn json_of(value: &Bound<'_, PyAny>) -> PyResult<serde_json::Value> {
    use serde_json::Value as Json;
    Ok(if value.is_none() {
        Json::Null
    } else if let Ok(b) = value.cast::<PyBool>() {
        Json::Bool(b.is_true())
    } else if value.is_instance_of::<PyInt>() {
        match value.extract::<i64>() {
            Ok(i) => Json::from(i),
            Err(_) => Json::String(value.str()?.to_string()),
        }
    } else if let Ok(f) = value.cast::<PyFloat>() {
        serde_json::Number::from_f64(f.value()).map_or(Json::Null, Json::Number)
    } else if let Ok(s) = value.cast::<PyString>() {
        Json::String(s.to_str()?.to_owned())
    } else if let Ok(list) = value.cast::<PyList>() {
        Json::Array(list.iter().map(|v| json_of(&v)).collect::<PyResult<_>>()?)
    } else if let Ok(tuple) = value.cast::<PyTuple>() {
        Json::Array(tuple.iter().map(|v| json_of(&v)).collect::<PyResult<_>>()?)
    } else if let Ok(dict) = value.cast::<PyDict>() {
        let mut object = serde_json::Map::with_capacity(dict.len());
        for (k, v) in dict.iter() {
            object.insert(k.str()?.to_string(), json_of(&v)?);
        }
        Json::Object(object)
    } else if value.is_instance_of::<PyDate>() {
        // datetime is a date too.
        Json::String(value.call_method0("isoformat")?.str()?.to_string())
    } else if value.hasattr("__index__")? {
        Json::from(value.extract::<i64>()?)
    } else if value.hasattr("__float__")? {
        serde_json::Number::from_f64(value.extract::<f64>()?).map_or(Json::Null, Json::Number)
    } else {
        Json::String(value.str()?.to_string())
    })
}

/// The batch's rows as Python lists: numbers, strings and bools as themselves, times as
/// tz-aware UTC `datetime`s, dates as `date`s, embeddings as lists of floats, nulls as `None`.
pub fn rows_of<'py>(py: Python<'py>, batch: &RecordBatch) -> PyResult<Bound<'py, PyList>> {
    let columns = batch
        .columns()
        .iter()
        .map(|c| Column::of(py, c))
        .collect::<PyResult<Vec<_>>>()?;
    let rows = PyList::empty(py);
    for row in 0..batch.num_rows() {
        let values = columns
            .iter()
            .map(|c| c.value(py, row))
            .collect::<PyResult<Vec<_>>>()?;
        rows.append(PyList::new(py, values)?)?;
    }
    Ok(rows)
}

/// A column downcast once, read row by row.
enum Column<'a, 'py> {
    Bool(&'a BooleanArray),
    Int32(&'a Int32Array),
    Int64(&'a Int64Array),
    Float32(&'a Float32Array),
    Float64(&'a Float64Array),
    String(&'a StringArray),
    Date(&'a Date32Array, Bound<'py, PyDate>),
    Timestamp(&'a TimestampMicrosecondArray, Bound<'py, PyDateTime>),
    Embedding(&'a FixedSizeListArray),
    /// A type no feature has: its values are `None`.
    Other,
}

/// The epochs that dates and times are counted from.
static EPOCH_DATE: PyOnceLock<Py<PyDate>> = PyOnceLock::new();
static EPOCH: PyOnceLock<Py<PyDateTime>> = PyOnceLock::new();

impl<'a, 'py> Column<'a, 'py> {
    fn of(py: Python<'py>, array: &'a ArrayRef) -> PyResult<Self> {
        Ok(match array.data_type() {
            DataType::Boolean => Column::Bool(array.as_boolean()),
            DataType::Int32 => Column::Int32(array.as_primitive()),
            DataType::Int64 => Column::Int64(array.as_primitive()),
            DataType::Float32 => Column::Float32(array.as_primitive()),
            DataType::Float64 => Column::Float64(array.as_primitive()),
            DataType::Utf8 => Column::String(array.as_string()),
            DataType::Date32 => {
                let epoch = EPOCH_DATE
                    .get_or_try_init(py, || PyDate::new(py, 1970, 1, 1).map(Bound::unbind))?;
                Column::Date(array.as_primitive(), epoch.bind(py).clone())
            }
            DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, _) => {
                let epoch = EPOCH.get_or_try_init(py, || {
                    let utc = PyTzInfo::utc(py)?;
                    PyDateTime::new(py, 1970, 1, 1, 0, 0, 0, 0, Some(&utc)).map(Bound::unbind)
                })?;
                Column::Timestamp(array.as_primitive(), epoch.bind(py).clone())
            }
            DataType::FixedSizeList(item, _) if item.data_type() == &DataType::Float32 => {
                Column::Embedding(array.as_fixed_size_list())
            }
            _ => Column::Other,
        })
    }

    fn value(&self, py: Python<'py>, row: usize) -> PyResult<Bound<'py, PyAny>> {
        let null = match self {
            Column::Bool(a) => a.is_null(row),
            Column::Int32(a) => a.is_null(row),
            Column::Int64(a) => a.is_null(row),
            Column::Float32(a) => a.is_null(row),
            Column::Float64(a) => a.is_null(row),
            Column::String(a) => a.is_null(row),
            Column::Date(a, _) => a.is_null(row),
            Column::Timestamp(a, _) => a.is_null(row),
            Column::Embedding(a) => a.is_null(row),
            Column::Other => true,
        };
        if null {
            return Ok(py.None().into_bound(py));
        }
        Ok(match self {
            Column::Bool(a) => PyBool::new(py, a.value(row)).to_owned().into_any(),
            Column::Int32(a) => a.value(row).into_pyobject(py)?.into_any(),
            Column::Int64(a) => a.value(row).into_pyobject(py)?.into_any(),
            Column::Float32(a) => PyFloat::new(py, f64::from(a.value(row))).into_any(),
            Column::Float64(a) => PyFloat::new(py, a.value(row)).into_any(),
            Column::String(a) => PyString::new(py, a.value(row)).into_any(),
            Column::Date(a, epoch) => {
                let days = PyDelta::new(py, a.value(row), 0, 0, false)?;
                epoch.add(days)?
            }
            Column::Timestamp(a, epoch) => {
                let micros = a.value(row);
                let days = micros.div_euclid(86_400_000_000);
                let rest = micros.rem_euclid(86_400_000_000);
                let since = PyDelta::new(
                    py,
                    i32::try_from(days).map_err(|_| {
                        pyo3::exceptions::PyOverflowError::new_err(format!(
                            "the time {micros} µs since the epoch is out of datetime's range"
                        ))
                    })?,
                    (rest / 1_000_000) as i32,
                    (rest % 1_000_000) as i32,
                    false,
                )?;
                epoch.add(since)?
            }
            Column::Embedding(a) => {
                let item = a.value(row);
                let floats: &Float32Array = item.as_primitive();
                let values = floats.iter().map(|x| x.map(f64::from)).collect::<Vec<_>>();
                PyList::new(py, values)?.into_any()
            }
            Column::Other => unreachable!("answered as None above"),
        })
    }
}
