//! Turning what a source read into rows of the pipeline's input schema, setting malformed
//! events aside with the reason instead of failing the chunk.
//!
//! Events are parsed and validated by the same code as feature-group inserts
//! ([`kairos_types::ingest`]): a chunk is parsed whole, and only when that fails is it parsed
//! again event by event to find the bad ones, so the common case stays fast.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use bytes::Bytes;
use kairos_stream::Plan;
use kairos_types::{Format, IngestError, ingest};

use crate::source::ChunkData;

/// An event that could not be read, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Malformed {
    /// The event as it came (a line of text, or a row rendered as JSON).
    pub event: String,
    pub reason: String,
}

/// The good rows of a chunk, and the bad events.
#[derive(Debug)]
pub struct Decoded {
    pub rows: Option<RecordBatch>,
    pub malformed: Vec<Malformed>,
}

/// Decodes a chunk into the plan's input schema.
pub fn decode(plan: &Plan, data: ChunkData) -> Decoded {
    let mut good = Vec::new();
    let mut malformed = Vec::new();
    match data {
        ChunkData::Raw(pieces) => match plan.format {
            Format::JsonLines => {
                let body = if pieces.len() == 1 {
                    pieces.into_iter().next().expect("one piece")
                } else {
                    let mut joined = Vec::new();
                    for p in pieces {
                        joined.extend_from_slice(&p);
                        if !p.ends_with(b"\n") {
                            joined.push(b'\n');
                        }
                    }
                    Bytes::from(joined)
                };
                text(plan, body, None, &mut good, &mut malformed);
            }
            _ => {
                for piece in pieces {
                    let header_end = piece
                        .iter()
                        .position(|b| *b == b'\n')
                        .map_or(piece.len(), |i| i + 1);
                    let header = piece.slice(..header_end);
                    text(plan, piece, Some(header), &mut good, &mut malformed);
                }
            }
        },
        ChunkData::Rows(batches) => {
            for batch in batches {
                rows(plan, &batch, &mut good, &mut malformed);
            }
        }
    }
    let rows = match good.len() {
        0 => None,
        1 => good.pop(),
        _ => Some(concat_batches(&plan.input.arrow_schema(), &good).expect("same schema")),
    };
    Decoded { rows, malformed }
}

/// Parses a text body (CSV with `header`, or JSON lines) whole, or line by line if that fails.
fn text(
    plan: &Plan,
    body: Bytes,
    header: Option<Bytes>,
    good: &mut Vec<RecordBatch>,
    malformed: &mut Vec<Malformed>,
) {
    match parse(plan, body.clone()) {
        Ok(Some(batch)) => good.push(batch),
        Ok(None) => {}
        Err(_) => {
            let skip = header.as_ref().map_or(0, |h| h.len());
            for line in body[skip..].split(|b| *b == b'\n') {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let mut one = header.as_ref().map_or_else(Vec::new, |h| h.to_vec());
                one.extend_from_slice(line);
                one.push(b'\n');
                match parse(plan, Bytes::from(one)) {
                    Ok(Some(batch)) => good.push(batch),
                    Ok(None) => {}
                    Err(e) => malformed.push(Malformed {
                        event: String::from_utf8_lossy(line).trim_end().to_owned(),
                        reason: reason(&e),
                    }),
                }
            }
        }
    }
}

/// The message of an error about a single event, without its row number (always 1).
fn reason(e: &IngestError) -> String {
    let mut e = e.clone();
    e.row = None;
    e.to_string()
}

fn parse(plan: &Plan, body: Bytes) -> Result<Option<RecordBatch>, IngestError> {
    let decoded = ingest::decode_events(&plan.input, plan.format, body)?;
    if decoded.num_rows() == 0 {
        return Ok(None);
    }
    conform(plan, &decoded).map(Some)
}

/// Keeps the input columns of `batch` (events may carry more) and validates them.
fn conform(plan: &Plan, batch: &RecordBatch) -> Result<RecordBatch, IngestError> {
    let schema = batch.schema();
    let keep: Vec<usize> = plan
        .input
        .columns
        .iter()
        .filter_map(|c| schema.index_of(&c.name).ok())
        .collect();
    let projected = batch
        .project(&keep)
        .map_err(|e| IngestError::batch(e.to_string()))?;
    // Metadata (a producer tag on a chained group's rows) is not part of the events.
    let plain = Arc::new(
        projected
            .schema()
            .as_ref()
            .clone()
            .with_metadata(Default::default()),
    );
    let projected = RecordBatch::try_new(plain, projected.columns().to_vec())
        .map_err(|e| IngestError::batch(e.to_string()))?;
    ingest::conform(&plan.input, &projected)
}

/// Rows already decoded (Parquet, a feature group): conformed whole, or row by row.
fn rows(
    plan: &Plan,
    batch: &RecordBatch,
    good: &mut Vec<RecordBatch>,
    malformed: &mut Vec<Malformed>,
) {
    match conform(plan, batch) {
        Ok(b) => good.push(b),
        Err(_) => {
            for r in 0..batch.num_rows() {
                let one = batch.slice(r, 1);
                match conform(plan, &one) {
                    Ok(b) => good.push(b),
                    Err(e) => malformed.push(Malformed {
                        event: row_json(&one),
                        reason: reason(&e),
                    }),
                }
            }
        }
    }
}

/// A one-row batch as a JSON object, for the dead-letter file.
pub fn row_json(batch: &RecordBatch) -> String {
    let mut buf = Vec::new();
    let mut writer = arrow::json::LineDelimitedWriter::new(&mut buf);
    if writer.write(batch).is_ok() && writer.finish().is_ok() {
        String::from_utf8_lossy(&buf).trim_end().to_owned()
    } else {
        format!("{batch:?}")
    }
}
