//! A V2 REST inference body, with or without an `Inference-Header-Content-Length`: refused, or
//! read into tensors whose binary encoding reads back the same.
//!
//! An input starting with `H` carries the header's value up to the first newline.
#![no_main]

use kairos_tensor::binary::{from_binary, to_binary};
use kairos_tensor::json::to_json;
use kairos_tensor::rest::decode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (header, body) = match data.strip_prefix(b"H") {
        Some(rest) => match rest.iter().position(|b| *b == b'\n') {
            Some(end) => (Some(&rest[..end]), &rest[end + 1..]),
            None => return,
        },
        None => (None, data),
    };
    let Ok(request) = decode(body, header) else {
        return;
    };
    for tensor in &request.inputs {
        let _ = tensor.check();
        let bytes = to_binary(&tensor.data);
        let again = from_binary(tensor.datatype(), &bytes).expect("its own encoding reads");
        assert_eq!(to_binary(&again), bytes);
        let _ = to_json(&tensor.data);
        for i in 0..tensor.data.len().min(16) {
            let _ = tensor.data.json(i);
            let _ = tensor.data.float(i);
        }
    }
});
