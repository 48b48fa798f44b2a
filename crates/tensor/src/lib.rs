//! Tensors as the Open Inference Protocol (KServe V2) carries them: the datatypes with the
//! protocol's names, a tensor's elements, and the encodings a client sends them in — JSON
//! `data` (flat or nested), binary tensor data, and the REST request body that mixes the two.
//!
//! Shared by the model registry (signatures), the deployments (inference on tensors) and both
//! transports; it holds no state and reaches no store, so every byte a client can send through
//! it is fuzzed on its own (`fuzz/`).

pub mod binary;
pub mod json;
pub mod rest;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A tensor's element type, with the Open Inference Protocol's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Datatype {
    Bool,
    Int32,
    Int64,
    Fp32,
    Fp64,
    Bytes,
}

impl Datatype {
    /// Every datatype, in the protocol's order.
    pub const ALL: [Datatype; 6] = [
        Datatype::Bool,
        Datatype::Int32,
        Datatype::Int64,
        Datatype::Fp32,
        Datatype::Fp64,
        Datatype::Bytes,
    ];

    /// The protocol's name: `BOOL`, `INT32`, `INT64`, `FP32`, `FP64`, `BYTES`.
    pub fn as_str(self) -> &'static str {
        match self {
            Datatype::Bool => "BOOL",
            Datatype::Int32 => "INT32",
            Datatype::Int64 => "INT64",
            Datatype::Fp32 => "FP32",
            Datatype::Fp64 => "FP64",
            Datatype::Bytes => "BYTES",
        }
    }

    /// The datatype of a protocol name, in any case.
    pub fn parse(name: &str) -> Option<Datatype> {
        Datatype::ALL
            .into_iter()
            .find(|d| d.as_str().eq_ignore_ascii_case(name))
    }
}

/// A tensor's elements, flat in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    Bool(Vec<bool>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Fp32(Vec<f32>),
    Fp64(Vec<f64>),
    Bytes(Vec<Vec<u8>>),
}

impl TensorData {
    pub fn len(&self) -> usize {
        match self {
            TensorData::Bool(v) => v.len(),
            TensorData::Int32(v) => v.len(),
            TensorData::Int64(v) => v.len(),
            TensorData::Fp32(v) => v.len(),
            TensorData::Fp64(v) => v.len(),
            TensorData::Bytes(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn datatype(&self) -> Datatype {
        match self {
            TensorData::Bool(_) => Datatype::Bool,
            TensorData::Int32(_) => Datatype::Int32,
            TensorData::Int64(_) => Datatype::Int64,
            TensorData::Fp32(_) => Datatype::Fp32,
            TensorData::Fp64(_) => Datatype::Fp64,
            TensorData::Bytes(_) => Datatype::Bytes,
        }
    }

    /// Element `i` as a float, for numeric tensors.
    pub fn float(&self, i: usize) -> Option<f64> {
        Some(match self {
            TensorData::Bool(v) => f64::from(u8::from(v[i])),
            TensorData::Int32(v) => f64::from(v[i]),
            TensorData::Int64(v) => v[i] as f64,
            TensorData::Fp32(v) => f64::from(v[i]),
            TensorData::Fp64(v) => v[i],
            TensorData::Bytes(_) => return None,
        })
    }

    /// Element `i` as JSON, the form feature-vector requests take.
    pub fn json(&self, i: usize) -> Result<serde_json::Value, String> {
        Ok(match self {
            TensorData::Bool(v) => v[i].into(),
            TensorData::Int32(v) => v[i].into(),
            TensorData::Int64(v) => v[i].into(),
            TensorData::Fp32(v) => f64::from(v[i]).into(),
            TensorData::Fp64(v) => v[i].into(),
            TensorData::Bytes(v) => std::str::from_utf8(&v[i])
                .map_err(|_| format!("element {i} is not UTF-8 text"))?
                .into(),
        })
    }
}

/// A named tensor of a request or a response.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub data: TensorData,
}

impl Tensor {
    pub fn datatype(&self) -> Datatype {
        self.data.datatype()
    }

    /// Checks that the shape holds exactly the elements given.
    pub fn check(&self) -> Result<(), String> {
        let expected = self
            .shape
            .iter()
            .try_fold(1_i64, |n, d| (*d >= 0).then(|| n.saturating_mul(*d)));
        match expected {
            Some(n) if usize::try_from(n).is_ok_and(|n| n == self.data.len()) => Ok(()),
            _ => Err(format!(
                "input '{}': shape {:?} does not hold the {} elements given",
                self.name,
                self.shape,
                self.data.len()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datatype_names_are_the_protocols_and_serdes() {
        for d in Datatype::ALL {
            assert_eq!(serde_json::to_value(d).unwrap(), d.as_str());
            assert_eq!(Datatype::parse(d.as_str()), Some(d));
            assert_eq!(Datatype::parse(&d.as_str().to_lowercase()), Some(d));
        }
        assert_eq!(Datatype::parse("FP16"), None);
    }

    #[test]
    fn a_shape_must_hold_exactly_the_elements() {
        let t = |shape: Vec<i64>| Tensor {
            name: "x".into(),
            shape,
            data: TensorData::Fp64(vec![1.0, 2.0, 3.0, 4.0]),
        };
        assert!(t(vec![2, 2]).check().is_ok());
        assert!(t(vec![4]).check().is_ok());
        assert!(t(vec![3]).check().is_err());
        assert!(t(vec![-1, 4]).check().is_err());
        assert!(t(vec![i64::MAX, i64::MAX]).check().is_err());
    }
}
