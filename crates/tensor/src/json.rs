//! A tensor's `data` in JSON: flat or nested arrays, read row-major.

use serde_json::{Value, json};

use crate::{Datatype, TensorData};

/// Flattens nested `data` arrays (row-major) into the tensor's elements.
///
/// The nesting is as deep as the JSON parser let through (serde_json stops at 128 levels).
pub fn from_json(datatype: Datatype, data: &Value) -> Result<TensorData, String> {
    let mut flat = Vec::new();
    flatten(data, &mut flat);
    let bad = |i: usize, v: &Value| format!("element {i} is {v}, not {datatype:?}");
    macro_rules! elements {
        ($variant:ident, $get:expr) => {
            TensorData::$variant(
                flat.iter()
                    .enumerate()
                    .map(|(i, v)| $get(v).ok_or_else(|| bad(i, v)))
                    .collect::<Result<_, _>>()?,
            )
        };
    }
    Ok(match datatype {
        Datatype::Bool => elements!(Bool, |v: &Value| v.as_bool()),
        Datatype::Int32 => elements!(Int32, |v: &Value| v
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())),
        Datatype::Int64 => elements!(Int64, |v: &Value| v.as_i64()),
        Datatype::Fp32 => elements!(Fp32, |v: &Value| v.as_f64().map(|f| f as f32)),
        Datatype::Fp64 => elements!(Fp64, |v: &Value| v.as_f64()),
        Datatype::Bytes => elements!(Bytes, |v: &Value| v.as_str().map(|s| s.as_bytes().to_vec())),
    })
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

/// The elements as a flat JSON array; BYTES elements as text.
pub fn to_json(data: &TensorData) -> Value {
    match data {
        TensorData::Bool(v) => json!(v),
        TensorData::Int32(v) => json!(v),
        TensorData::Int64(v) => json!(v),
        TensorData::Fp32(v) => json!(v),
        TensorData::Fp64(v) => json!(v),
        TensorData::Bytes(v) => json!(
            v.iter()
                .map(|b| String::from_utf8_lossy(b))
                .collect::<Vec<_>>()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_and_flat_json_data_read_alike() {
        let nested = from_json(Datatype::Fp32, &json!([[1.0, 2.0], [3.0, 4.5]])).unwrap();
        let flat = from_json(Datatype::Fp32, &json!([1, 2, 3, 4.5])).unwrap();
        assert_eq!(nested, flat);
        let e = from_json(Datatype::Int64, &json!([1, "x"])).unwrap_err();
        assert!(e.contains("element 1"), "{e}");
        assert!(from_json(Datatype::Int32, &json!([1_i64 << 40])).is_err());
    }
}
