//! Binary tensor data of each datatype: refused, or read into elements that encode back to the
//! same bytes (BOOL's nonzero bytes read as one).
#![no_main]

use kairos_tensor::Datatype;
use kairos_tensor::binary::{from_binary, to_binary};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((first, bytes)) = data.split_first() else {
        return;
    };
    let datatype = Datatype::ALL[usize::from(*first) % Datatype::ALL.len()];
    if let Ok(elements) = from_binary(datatype, bytes) {
        let again = to_binary(&elements);
        if datatype == Datatype::Bool {
            assert_eq!(again.len(), bytes.len());
        } else {
            assert_eq!(again, bytes);
        }
    }
});
