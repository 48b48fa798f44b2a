//! An insert or a pipeline's events in Parquet: any bytes are refused with an error or accepted
//! as a batch every store can write.
#![no_main]

use kairos_types::Format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kairos_fuzz::ingest(Format::Parquet, data));
