//! Binary tensor data (the protocol's `binary_tensor_data` extension): little-endian
//! elements; BOOL one byte each; BYTES each prefixed with its 4-byte little-endian length.

use crate::{Datatype, TensorData};

/// Reads `bytes` as elements of `datatype`; refused when they are not a whole number of them.
pub fn from_binary(datatype: Datatype, bytes: &[u8]) -> Result<TensorData, String> {
    fn fixed<const N: usize, T>(bytes: &[u8], f: fn([u8; N]) -> T) -> Result<Vec<T>, String> {
        if !bytes.len().is_multiple_of(N) {
            return Err(format!(
                "{} bytes are not a whole number of {N}-byte elements",
                bytes.len()
            ));
        }
        Ok(bytes
            .chunks_exact(N)
            .map(|c| f(c.try_into().expect("chunk of N")))
            .collect())
    }
    Ok(match datatype {
        Datatype::Bool => TensorData::Bool(bytes.iter().map(|b| *b != 0).collect()),
        Datatype::Int32 => TensorData::Int32(fixed(bytes, i32::from_le_bytes)?),
        Datatype::Int64 => TensorData::Int64(fixed(bytes, i64::from_le_bytes)?),
        Datatype::Fp32 => TensorData::Fp32(fixed(bytes, f32::from_le_bytes)?),
        Datatype::Fp64 => TensorData::Fp64(fixed(bytes, f64::from_le_bytes)?),
        Datatype::Bytes => {
            let mut items = Vec::new();
            let mut rest = bytes;
            while !rest.is_empty() {
                let Some((prefix, tail)) = rest.split_first_chunk::<4>() else {
                    return Err("a BYTES element's length prefix is cut short".into());
                };
                let n = u32::from_le_bytes(*prefix) as usize;
                if tail.len() < n {
                    return Err(format!("a BYTES element of {n} bytes is cut short"));
                }
                let (item, tail) = tail.split_at(n);
                items.push(item.to_vec());
                rest = tail;
            }
            TensorData::Bytes(items)
        }
    })
}

/// The elements as binary tensor data.
pub fn to_binary(data: &TensorData) -> Vec<u8> {
    match data {
        TensorData::Bool(v) => v.iter().map(|b| u8::from(*b)).collect(),
        TensorData::Int32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::Int64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::Fp32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::Fp64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::Bytes(v) => v
            .iter()
            .flat_map(|b| {
                (b.len() as u32)
                    .to_le_bytes()
                    .into_iter()
                    .chain(b.iter().copied())
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_data_round_trips_for_every_datatype() {
        let cases = [
            TensorData::Bool(vec![true, false]),
            TensorData::Int32(vec![-1, 7]),
            TensorData::Int64(vec![i64::MIN, 4000123412341234]),
            TensorData::Fp32(vec![0.5, -2.25]),
            TensorData::Fp64(vec![1e-300, 3.5]),
            TensorData::Bytes(vec![
                b"travel".to_vec(),
                Vec::new(),
                "kr\u{f6}na".as_bytes().to_vec(),
            ]),
        ];
        for data in cases {
            let bytes = to_binary(&data);
            assert_eq!(from_binary(data.datatype(), &bytes).unwrap(), data);
        }
        assert!(from_binary(Datatype::Fp64, &[0; 12]).is_err());
        assert!(from_binary(Datatype::Bytes, &[9, 0, 0, 0, 1]).is_err());
        assert!(from_binary(Datatype::Bytes, &[1, 0]).is_err());
    }
}
