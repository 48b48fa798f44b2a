//! The REST inference request body: a JSON document, optionally followed by the binary data of
//! its tensors, the JSON's length given by the `Inference-Header-Content-Length` header.

use serde::Deserialize;
use serde_json::Value;

use crate::binary::from_binary;
use crate::json::from_json;
use crate::{Datatype, Tensor};

/// The header giving the JSON part's length when binary tensor data follows it.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// An inference request as a REST body states it.
#[derive(Debug, Clone, PartialEq)]
pub struct RestInferRequest {
    pub id: Option<String>,
    pub inputs: Vec<Tensor>,
    /// The outputs wanted, by name; all of them when empty.
    pub outputs: Vec<String>,
    /// The outputs wanted as binary data (`binary_data` per output, or `binary_data_output`
    /// for all of them).
    pub binary_outputs: Vec<String>,
    /// Every output as binary data, named or not.
    pub all_binary: bool,
}

#[derive(Debug, Deserialize)]
struct Body {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<serde_json::Map<String, Value>>,
    inputs: Vec<Input>,
    #[serde(default)]
    outputs: Vec<Output>,
}

#[derive(Debug, Deserialize)]
struct Input {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Output {
    name: String,
    #[serde(default)]
    parameters: Option<serde_json::Map<String, Value>>,
}

fn parameter<'a>(p: &'a Option<serde_json::Map<String, Value>>, name: &str) -> Option<&'a Value> {
    p.as_ref().and_then(|p| p.get(name))
}

/// Reads a REST inference body; `header_length` is the `Inference-Header-Content-Length`
/// header's value, when sent. Each input's data is its JSON `data`, or its `binary_data_size`
/// bytes of the binary part, taken in input order.
pub fn decode(body: &[u8], header_length: Option<&[u8]>) -> Result<RestInferRequest, String> {
    let header_length = header_length
        .map(|v| {
            std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
                .filter(|n| *n <= body.len())
                .ok_or_else(|| {
                    format!(
                        "{HEADER_LENGTH}: expected a length of at most the body's {} bytes",
                        body.len()
                    )
                })
        })
        .transpose()?;
    let (json_part, mut binary) = body.split_at(header_length.unwrap_or(body.len()));
    let request: Body = serde_json::from_slice(json_part)
        .map_err(|e| format!("the request is not a V2 inference request: {e}"))?;
    let mut inputs = Vec::with_capacity(request.inputs.len());
    for input in request.inputs {
        let datatype = Datatype::parse(&input.datatype).ok_or_else(|| {
            format!(
                "input '{}': unknown datatype '{}'",
                input.name, input.datatype
            )
        })?;
        let data = match parameter(&input.parameters, "binary_data_size") {
            Some(size) => {
                let size = size
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        format!("input '{}': binary_data_size must be a number", input.name)
                    })?;
                if size > binary.len() {
                    return Err(format!(
                        "input '{}': binary_data_size {size} is past the end of the body",
                        input.name
                    ));
                }
                let (mine, rest) = binary.split_at(size);
                binary = rest;
                from_binary(datatype, mine).map_err(|e| format!("input '{}': {e}", input.name))?
            }
            None => {
                let data = input.data.as_ref().ok_or_else(|| {
                    format!("input '{}': no data and no binary_data_size", input.name)
                })?;
                from_json(datatype, data).map_err(|e| format!("input '{}': {e}", input.name))?
            }
        };
        inputs.push(Tensor {
            name: input.name,
            shape: input.shape,
            data,
        });
    }
    let all_binary = parameter(&request.parameters, "binary_data_output")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let binary_outputs = request
        .outputs
        .iter()
        .filter(|o| {
            parameter(&o.parameters, "binary_data")
                .and_then(Value::as_bool)
                .unwrap_or(all_binary)
        })
        .map(|o| o.name.clone())
        .collect();
    Ok(RestInferRequest {
        id: request.id,
        inputs,
        outputs: request.outputs.into_iter().map(|o| o.name).collect(),
        binary_outputs,
        all_binary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TensorData;
    use crate::binary::to_binary;

    #[test]
    fn json_and_binary_inputs_read_alike() {
        let json = br#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP64","data":[1.5,2]}]}"#;
        let from_json = decode(json, None).unwrap();
        let head = br#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP64","parameters":{"binary_data_size":16}}],"outputs":[{"name":"p","parameters":{"binary_data":true}}]}"#;
        let mut body = head.to_vec();
        body.extend(to_binary(&TensorData::Fp64(vec![1.5, 2.0])));
        let length = head.len().to_string();
        let from_binary = decode(&body, Some(length.as_bytes())).unwrap();
        assert_eq!(from_json.inputs, from_binary.inputs);
        assert_eq!(from_binary.binary_outputs, ["p"]);
    }

    #[test]
    fn a_body_that_lies_about_its_parts_is_refused() {
        let head = br#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP64","parameters":{"binary_data_size":16}}]}"#;
        let length = head.len().to_string();
        let e = decode(head, Some(length.as_bytes())).unwrap_err();
        assert!(e.contains("past the end"), "{e}");
        let e = decode(head, Some(b"99999")).unwrap_err();
        assert!(e.contains(HEADER_LENGTH), "{e}");
        let e = decode(
            br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP16","data":[1]}]}"#,
            None,
        )
        .unwrap_err();
        assert!(e.contains("unknown datatype"), "{e}");
    }
}
