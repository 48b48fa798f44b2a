//! Decoding an inserted batch (Arrow IPC, Parquet, CSV, JSON lines) and validating it against a
//! feature group's schema.
//!
//! The output is one [`RecordBatch`] in the group's canonical schema, or an [`IngestError`] that
//! names the column, the row and what was expected. A batch is accepted or refused whole: this
//! module never returns part of one.

use std::fmt;
use std::io::Cursor;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Date32Builder, FixedSizeListArray, Float32Array,
    Float32Builder, Float64Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder, new_null_array,
};
use arrow::compute::{CastOptions, cast_with_options, concat_batches};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, NaiveDateTime};

use crate::schema::{FeatureGroupSpec, FeatureType, UTC};
use crate::value::Value;

mod parquet_pages;

/// The wire formats an insert may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    ArrowIpc,
    Parquet,
    Csv,
    JsonLines,
}

impl Format {
    /// Picks the format from an HTTP `Content-Type`.
    pub fn from_content_type(content_type: &str) -> Option<Format> {
        let mime = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        Some(match mime.as_str() {
            "application/vnd.apache.arrow.stream" | "application/vnd.apache.arrow.file" => {
                Format::ArrowIpc
            }
            "application/vnd.apache.parquet" | "application/x-parquet" | "application/parquet" => {
                Format::Parquet
            }
            "text/csv" => Format::Csv,
            "application/x-ndjson"
            | "application/jsonl"
            | "application/json-lines"
            | "application/json" => Format::JsonLines,
            _ => return None,
        })
    }

    /// Picks the format from a name: a file extension or a format word.
    pub fn from_name(name: &str) -> Option<Format> {
        let ext = name.rsplit('.').next().unwrap_or(name).to_ascii_lowercase();
        Some(match ext.as_str() {
            "arrow" | "arrows" | "ipc" => Format::ArrowIpc,
            "parquet" | "pq" => Format::Parquet,
            "csv" => Format::Csv,
            "jsonl" | "ndjson" | "json" => Format::JsonLines,
            _ => return None,
        })
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::ArrowIpc => "application/vnd.apache.arrow.stream",
            Format::Parquet => "application/vnd.apache.parquet",
            Format::Csv => "text/csv",
            Format::JsonLines => "application/x-ndjson",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::ArrowIpc => "arrow",
            Format::Parquet => "parquet",
            Format::Csv => "csv",
            Format::JsonLines => "jsonl",
        })
    }
}

/// Why a batch was refused: which column, which row (1-based, first data row is 1), what was
/// expected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct IngestError {
    pub column: Option<String>,
    pub row: Option<usize>,
    pub expected: Option<String>,
    pub message: String,
}

impl IngestError {
    /// An error about the batch as a whole, not one cell.
    pub fn batch(message: impl Into<String>) -> Self {
        Self {
            column: None,
            row: None,
            expected: None,
            message: message.into(),
        }
    }

    fn column(column: &str, message: impl Into<String>) -> Self {
        Self {
            column: Some(column.to_string()),
            row: None,
            expected: None,
            message: message.into(),
        }
    }

    /// A column whose values are of a type that cannot be read as `ty`.
    fn mismatch(column: &str, ty: FeatureType, source: &DataType, cause: String) -> Self {
        Self {
            column: Some(column.to_string()),
            row: None,
            expected: Some(ty.to_string()),
            message: format!("expected {ty}, got values of type {source}{cause}"),
        }
    }

    fn cell(column: &str, row_index: usize, expected: String, message: impl Into<String>) -> Self {
        Self {
            column: Some(column.to_string()),
            row: Some(row_index + 1),
            expected: Some(expected),
            message: message.into(),
        }
    }
}

impl fmt::Display for IngestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(column) = &self.column {
            write!(f, "column '{column}'")?;
            if let Some(row) = self.row {
                write!(f, ", row {row}")?;
            }
            f.write_str(": ")?;
        } else if let Some(row) = self.row {
            write!(f, "row {row}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Decodes `bytes` in `format` and validates the rows against `spec`.
///
/// Returns the rows in the canonical schema ([`FeatureGroupSpec::arrow_schema`]).
pub fn parse_batch(
    spec: &FeatureGroupSpec,
    format: Format,
    bytes: Bytes,
) -> Result<RecordBatch, IngestError> {
    let source = decode(spec, format, bytes)?;
    conform(spec, &source)
}

/// Validates a batch already in memory (the Rust API's insert) against `spec`.
pub fn conform(spec: &FeatureGroupSpec, source: &RecordBatch) -> Result<RecordBatch, IngestError> {
    let source_schema = source.schema();
    for field in source_schema.fields() {
        if spec.column(field.name()).is_none() {
            return Err(unknown_column(spec, field.name()));
        }
    }
    let rows = source.num_rows();
    let mut arrays = Vec::with_capacity(spec.columns.len());
    for col in &spec.columns {
        let nullable = spec.is_nullable(col);
        let array = match source_schema.index_of(&col.name) {
            Ok(i) => to_canonical(source.column(i), col.ty, &col.name)?,
            Err(_) if nullable => new_null_array(&col.ty.arrow_type(), rows),
            Err(_) => {
                return Err(IngestError {
                    column: Some(col.name.clone()),
                    row: None,
                    expected: Some(col.ty.to_string()),
                    message: format!("missing column; it is required ({})", col.ty),
                });
            }
        };
        if !nullable && array.null_count() > 0 {
            let row = (0..rows).find(|&r| array.is_null(r)).unwrap_or(0);
            let role = if spec.primary_key.contains(&col.name) {
                "primary-key column"
            } else if col.name == spec.event_time {
                "event-time column"
            } else {
                "non-nullable column"
            };
            return Err(IngestError::cell(
                &col.name,
                row,
                col.ty.to_string(),
                format!("null or missing value in {role}, expected {}", col.ty),
            ));
        }
        check_time_range(&array, col.ty, &col.name)?;
        arrays.push(array);
    }
    RecordBatch::try_new(spec.arrow_schema(), arrays).map_err(|e| IngestError::batch(e.to_string()))
}

/// The first and last instants every store holds: years 1 to 9999, what RFC 3339, Delta
/// Lake's readers (Spark, DuckDB) and PostgreSQL all represent. An instant outside is refused
/// at ingest, whatever the format it came in, so no store ever meets one it cannot write.
pub const MIN_TIMESTAMP_MICROS: i64 = -62_135_596_800_000_000;
pub const MAX_TIMESTAMP_MICROS: i64 = 253_402_300_799_999_999;
const MIN_DATE_DAYS: i32 = -719_162;
const MAX_DATE_DAYS: i32 = 2_932_896;

fn check_time_range(array: &ArrayRef, ty: FeatureType, name: &str) -> Result<(), IngestError> {
    let out_of_range = |row: usize, what: &str| {
        IngestError::cell(
            name,
            row,
            ty.to_string(),
            format!("{what} outside the years 1 to 9999, expected {ty} within them"),
        )
    };
    match ty {
        FeatureType::Timestamp => {
            let values = array.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
            let range = MIN_TIMESTAMP_MICROS..=MAX_TIMESTAMP_MICROS;
            match values
                .iter()
                .position(|v| v.is_some_and(|v| !range.contains(&v)))
            {
                Some(row) => Err(out_of_range(row, "a timestamp")),
                None => Ok(()),
            }
        }
        FeatureType::Date => {
            let values = array.as_primitive::<arrow::datatypes::Date32Type>();
            let range = MIN_DATE_DAYS..=MAX_DATE_DAYS;
            match values
                .iter()
                .position(|v| v.is_some_and(|v| !range.contains(&v)))
            {
                Some(row) => Err(out_of_range(row, "a date")),
                None => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

/// Decodes `bytes` in `format` into a batch of the columns it holds, not yet checked against
/// `spec` (which [`conform`] does); JSON lines are read with the types of `spec`'s columns.
pub fn decode(
    spec: &FeatureGroupSpec,
    format: Format,
    bytes: Bytes,
) -> Result<RecordBatch, IngestError> {
    match format {
        Format::ArrowIpc => {
            let bad = |e: arrow::error::ArrowError| {
                IngestError::batch(format!("invalid Arrow IPC stream: {e}"))
            };
            check_ipc_framing(&bytes)?;
            guarded("Arrow IPC stream", || {
                let reader = arrow::ipc::reader::StreamReader::try_new(Cursor::new(bytes), None)
                    .map_err(bad)?;
                let schema = reader.schema();
                let batches = reader.collect::<Result<Vec<_>, _>>().map_err(bad)?;
                concat_batches(&schema, &batches).map_err(bad)
            })
        }
        Format::Parquet => {
            use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
            let bad = |e: String| IngestError::batch(format!("invalid Parquet file: {e}"));
            guarded("Parquet file", || {
                parquet_pages::check_footer(&bytes).map_err(bad)?;
                let builder = ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
                    .map_err(|e| bad(e.to_string()))?;
                parquet_pages::check(&bytes, builder.metadata()).map_err(bad)?;
                let schema = builder.schema().clone();
                let reader = builder
                    .with_batch_size(64 * 1024)
                    .build()
                    .map_err(|e| bad(e.to_string()))?;
                let batches = reader
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| bad(e.to_string()))?;
                concat_batches(&schema, &batches).map_err(|e| bad(e.to_string()))
            })
        }
        Format::Csv => decode_csv(spec, bytes, false),
        Format::JsonLines => decode_json_lines(spec, &bytes, false),
    }
}

/// Runs Arrow's or Parquet's reader over a client's bytes. Both check most of what they read,
/// but some malformed input still ends in a panic inside them (a buffer sliced past its end, an
/// unknown type code in an embedded schema) instead of an error; such a batch is refused like
/// any other that does not decode, and nothing is written.
fn guarded(
    what: &str,
    read: impl FnOnce() -> Result<RecordBatch, IngestError>,
) -> Result<RecordBatch, IngestError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)).unwrap_or_else(|panic| {
        Err(IngestError::batch(format!(
            "invalid {what}: the reader gave up on it ({})",
            crate::panic::message(&*panic)
        )))
    })
}

/// Like [`decode`], for events that may carry more fields than `spec` names (a pipeline reads
/// the columns it declares and ignores the rest): unknown JSON fields are skipped, not refused.
pub fn decode_events(
    spec: &FeatureGroupSpec,
    format: Format,
    bytes: Bytes,
) -> Result<RecordBatch, IngestError> {
    match format {
        Format::JsonLines => decode_json_lines(spec, &bytes, true),
        // Numbers and epoch times parsed by the CSV reader itself, without a text column in
        // between; anything it cannot read goes the general way, which names the bad cell.
        Format::Csv => decode_csv_typed(spec, &bytes).or_else(|_| decode_csv(spec, bytes, true)),
        other => decode(spec, other, bytes),
    }
}

/// Reads CSV straight into typed columns: numbers and bools as themselves, timestamps as epoch
/// integers (converted by [`conform`]), columns `spec` does not know as text. Fails on anything
/// else — RFC 3339 times, dates, a cell that does not parse — for the caller to fall back.
fn decode_csv_typed(spec: &FeatureGroupSpec, bytes: &Bytes) -> Result<RecordBatch, IngestError> {
    let bad = |e: arrow::error::ArrowError| IngestError::batch(format!("invalid CSV: {e}"));
    let (format, header, projection) = csv_header(spec, bytes, true)?;
    let mut fields = Vec::with_capacity(header.fields().len());
    for field in header.fields() {
        let ty = match spec.column(field.name()).map(|c| c.ty) {
            None | Some(FeatureType::String) => DataType::Utf8,
            Some(FeatureType::Timestamp) => DataType::Int64,
            Some(
                t @ (FeatureType::Bool
                | FeatureType::Int32
                | FeatureType::Int64
                | FeatureType::Float32
                | FeatureType::Float64),
            ) => t.arrow_type(),
            Some(_) => return Err(IngestError::batch("not a plain CSV column type")),
        };
        fields.push(Field::new(field.name(), ty, true));
    }
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    let reader = arrow::csv::ReaderBuilder::new(schema.clone())
        .with_format(format)
        .with_batch_size(csv_batch_size(bytes))
        .with_projection(projection.clone())
        .build(Cursor::new(bytes.clone()))
        .map_err(bad)?;
    let batches = reader.collect::<Result<Vec<_>, _>>().map_err(bad)?;
    let projected = Arc::new(schema.project(&projection).map_err(bad)?);
    concat_batches(&projected, &batches).map_err(bad)
}

/// Walks an Arrow IPC stream's framing before the reader does: every message's declared
/// metadata and body must fit in the bytes that came, so a few bytes declaring gigabytes cannot
/// make the reader allocate them.
fn check_ipc_framing(bytes: &[u8]) -> Result<(), IngestError> {
    let bad = |m: String| IngestError::batch(format!("invalid Arrow IPC stream: {m}"));
    let word = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .ok_or_else(|| bad("a message length is cut short".into()))
    };
    let mut at = 0;
    while at < bytes.len() {
        let mut length = word(at)?;
        at += 4;
        // A continuation marker, then the length (the format since Arrow 0.15).
        if length == u32::MAX {
            length = word(at)?;
            at += 4;
        }
        if length == 0 {
            return Ok(());
        }
        let remaining = bytes.len() - at;
        let metadata = bytes.get(at..at + length as usize).ok_or_else(|| {
            bad(format!(
                "a message declares {length} bytes of metadata; {remaining} bytes remain"
            ))
        })?;
        let message = arrow::ipc::root_as_message(metadata).map_err(|e| bad(e.to_string()))?;
        at += length as usize;
        let remaining = bytes.len() - at;
        let body = usize::try_from(message.bodyLength())
            .ok()
            .filter(|body| *body <= remaining)
            .ok_or_else(|| {
                bad(format!(
                    "a message declares a body of {} bytes; {remaining} bytes remain",
                    message.bodyLength()
                ))
            })?;
        at += body;
    }
    Ok(())
}

/// The most columns a CSV header may name, known to the group or not.
pub const MAX_CSV_COLUMNS: usize = 4096;

/// Reads and checks a CSV header before any row: no more than [`MAX_CSV_COLUMNS`] names, none
/// twice, and (unless `ignore_unknown`) every one a column of `spec`. Returns the header as a
/// schema and the indices of the columns `spec` knows, the only ones decoded.
fn csv_header(
    spec: &FeatureGroupSpec,
    bytes: &Bytes,
    ignore_unknown: bool,
) -> Result<(arrow::csv::reader::Format, Schema, Vec<usize>), IngestError> {
    let first_line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    // A quick count before the reader builds a field per name.
    if first_line.iter().filter(|b| **b == b',').count() >= MAX_CSV_COLUMNS {
        return Err(IngestError::batch(format!(
            "invalid CSV: the header names more than {MAX_CSV_COLUMNS} columns"
        )));
    }
    let bad = |e: arrow::error::ArrowError| IngestError::batch(format!("invalid CSV: {e}"));
    let format = arrow::csv::reader::Format::default().with_header(true);
    let (header, _) = format
        .infer_schema(Cursor::new(first_line), Some(0))
        .map_err(bad)?;
    if header.fields().is_empty() {
        return Err(IngestError::batch("invalid CSV: no header row"));
    }
    let mut seen = std::collections::HashSet::new();
    let mut known = Vec::with_capacity(spec.columns.len());
    for (i, field) in header.fields().iter().enumerate() {
        if !seen.insert(field.name().as_str()) {
            return Err(IngestError::column(
                field.name(),
                "the CSV header names this column twice",
            ));
        }
        if spec.column(field.name()).is_some() {
            known.push(i);
        } else if !ignore_unknown {
            return Err(unknown_column(spec, field.name()));
        }
    }
    Ok((format, header, known))
}

fn unknown_column(spec: &FeatureGroupSpec, name: &str) -> IngestError {
    IngestError::column(
        name,
        format!(
            "unknown column; the feature group's columns are: {}",
            spec.columns
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
}

/// CSV cells are read as text and parsed per column type by [`to_canonical`], so every error can
/// name its row.
/// Rows per batch the CSV reader decodes: its buffers are sized (and zeroed) for a whole batch,
/// so a request of a few rows must not pay for 64K of them.
fn csv_batch_size(bytes: &[u8]) -> usize {
    const MOST: usize = 64 * 1024;
    let lines = bytes.iter().filter(|b| **b == b'\n').take(MOST).count();
    (lines + 1).min(MOST)
}

fn decode_csv(
    spec: &FeatureGroupSpec,
    bytes: Bytes,
    ignore_unknown: bool,
) -> Result<RecordBatch, IngestError> {
    let bad = |e: arrow::error::ArrowError| IngestError::batch(format!("invalid CSV: {e}"));
    let (format, header, projection) = csv_header(spec, &bytes, ignore_unknown)?;
    let text_schema: SchemaRef = Arc::new(Schema::new(
        header
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let reader = arrow::csv::ReaderBuilder::new(text_schema.clone())
        .with_format(format)
        .with_batch_size(csv_batch_size(&bytes))
        .with_projection(projection.clone())
        .build(Cursor::new(bytes))
        .map_err(bad)?;
    let batches = reader.collect::<Result<Vec<_>, _>>().map_err(bad)?;
    let projected = Arc::new(text_schema.project(&projection).map_err(bad)?);
    concat_batches(&projected, &batches).map_err(bad)
}

/// A JSON object whose keys each appear once: serde_json's own map would keep the last of a
/// repeated key without a word.
struct UniqueObject(serde_json::Map<String, serde_json::Value>);

impl<'de> serde::Deserialize<'de> for UniqueObject {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = UniqueObject;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut entries: A,
            ) -> Result<UniqueObject, A::Error> {
                let mut object = serde_json::Map::new();
                while let Some((key, value)) = entries.next_entry::<String, serde_json::Value>()? {
                    if object.contains_key(&key) {
                        return Err(serde::de::Error::custom(format!(
                            "the key '{key}' appears twice"
                        )));
                    }
                    object.insert(key, value);
                }
                Ok(UniqueObject(object))
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

/// JSON lines become text columns (strings as they are, everything else as its JSON text) and
/// go through the same per-type parsing as CSV.
fn decode_json_lines(
    spec: &FeatureGroupSpec,
    bytes: &[u8],
    ignore_unknown: bool,
) -> Result<RecordBatch, IngestError> {
    let mut columns: Vec<StringBuilder> =
        spec.columns.iter().map(|_| StringBuilder::new()).collect();
    let mut present = vec![false; spec.columns.len()];
    let mut row = 0usize;
    for line in bytes.split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let UniqueObject(object) = serde_json::from_slice(line).map_err(|e| IngestError {
            column: None,
            row: Some(row + 1),
            expected: Some("a JSON object".into()),
            message: format!("invalid JSON object: {e}"),
        })?;
        for key in object.keys() {
            if !ignore_unknown && spec.column(key).is_none() {
                return Err(IngestError {
                    column: Some(key.clone()),
                    row: Some(row + 1),
                    expected: None,
                    message: "unknown column".into(),
                });
            }
        }
        for (i, col) in spec.columns.iter().enumerate() {
            match object.get(&col.name) {
                None | Some(serde_json::Value::Null) => columns[i].append_null(),
                Some(serde_json::Value::String(s)) => {
                    present[i] = true;
                    columns[i].append_value(s)
                }
                Some(serde_json::Value::Object(_)) => {
                    return Err(IngestError::cell(
                        &col.name,
                        row,
                        col.ty.to_string(),
                        format!("expected {}, got an object", col.ty),
                    ));
                }
                Some(other) => {
                    present[i] = true;
                    columns[i].append_value(other.to_string())
                }
            }
        }
        row += 1;
    }
    if row == 0 {
        return Err(IngestError::batch("empty batch: no JSON lines"));
    }
    let fields: Vec<Field> = spec
        .columns
        .iter()
        .map(|c| Field::new(&c.name, DataType::Utf8, true))
        .collect();
    let arrays: Vec<ArrayRef> = columns
        .iter_mut()
        .map(|b| Arc::new(b.finish()) as ArrayRef)
        .collect();
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
        .map_err(|e| IngestError::batch(e.to_string()))?;
    // Columns absent from every line count as missing, so required ones are reported as such.
    let keep: Vec<usize> = (0..spec.columns.len()).filter(|&i| present[i]).collect();
    batch
        .project(&keep)
        .map_err(|e| IngestError::batch(e.to_string()))
}

/// Converts one source column to its canonical Arrow type, or names the first row that cannot be.
fn to_canonical(array: &ArrayRef, ty: FeatureType, name: &str) -> Result<ArrayRef, IngestError> {
    let target = ty.arrow_type();
    let source = array.data_type();
    if source == &target {
        return Ok(array.clone());
    }
    let mismatch = || IngestError::mismatch(name, ty, source, String::new());
    match (source, ty) {
        (DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View, _) => {
            let text = cast_with_options(array, &DataType::Utf8, &CastOptions::default())
                .map_err(|_| mismatch())?;
            parse_text_column(text.as_string::<i32>(), ty, name)
        }
        (DataType::Timestamp(_, _), FeatureType::Timestamp)
        | (DataType::Date64, FeatureType::Date) => lossless_cast(array, &target, ty, name),
        (DataType::Date32 | DataType::Date64, FeatureType::Timestamp) => {
            lossless_cast(array, &target, ty, name)
        }
        (source, FeatureType::Timestamp) if source.is_integer() => {
            let ints = lossless_cast(array, &DataType::Int64, FeatureType::Int64, name)?;
            let ints = ints.as_primitive::<arrow::datatypes::Int64Type>();
            let mut builder =
                TimestampMicrosecondBuilder::with_capacity(ints.len()).with_timezone(UTC);
            for v in ints.iter() {
                builder.append_option(v.map(epoch_to_micros));
            }
            Ok(Arc::new(builder.finish()))
        }
        (
            source,
            FeatureType::Int32 | FeatureType::Int64 | FeatureType::Float32 | FeatureType::Float64,
        ) if source.is_integer() => lossless_cast(array, &target, ty, name),
        (
            DataType::Float16 | DataType::Float32 | DataType::Float64,
            FeatureType::Float32 | FeatureType::Float64,
        ) => lossless_cast(array, &target, ty, name),
        (
            DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(_, _),
            FeatureType::Embedding { dim },
        ) => embedding_from_lists(array, dim, name),
        _ => Err(mismatch()),
    }
}

/// Casts and refuses any value the cast would lose (overflow becomes null under a safe cast; a
/// value that was present and is now null names the row).
fn lossless_cast(
    array: &ArrayRef,
    target: &DataType,
    ty: FeatureType,
    name: &str,
) -> Result<ArrayRef, IngestError> {
    let cast = cast_with_options(
        array,
        target,
        &CastOptions {
            safe: true,
            ..Default::default()
        },
    )
    .map_err(|e| IngestError::mismatch(name, ty, array.data_type(), format!(": {e}")))?;
    if cast.null_count() != array.null_count() {
        let row = (0..array.len())
            .find(|&r| array.is_valid(r) && cast.is_null(r))
            .unwrap_or(0);
        return Err(IngestError::cell(
            name,
            row,
            ty.to_string(),
            format!("value of type {} does not fit {ty}", array.data_type()),
        ));
    }
    Ok(cast)
}

fn embedding_from_lists(array: &ArrayRef, dim: u32, name: &str) -> Result<ArrayRef, IngestError> {
    let ty = FeatureType::Embedding { dim };
    let list_type = DataType::List(Arc::new(Field::new("item", DataType::Float32, true)));
    let lists = cast_with_options(array, &list_type, &CastOptions::default())
        .map_err(|e| IngestError::mismatch(name, ty, array.data_type(), format!(": {e}")))?;
    let lists = lists.as_list::<i32>();
    let mut values = Float32Builder::with_capacity(lists.len() * dim as usize);
    for row in 0..lists.len() {
        if lists.is_null(row) {
            values.append_nulls(dim as usize);
            continue;
        }
        let item = lists.value(row);
        if item.len() != dim as usize {
            return Err(IngestError::cell(
                name,
                row,
                ty.to_string(),
                format!("expected {dim} values for {ty}, got {}", item.len()),
            ));
        }
        if item.null_count() > 0 {
            return Err(IngestError::cell(
                name,
                row,
                ty.to_string(),
                "embedding holds a null value",
            ));
        }
        values.append_slice(
            item.as_primitive::<arrow::datatypes::Float32Type>()
                .values(),
        );
    }
    let field = Arc::new(Field::new("item", DataType::Float32, true));
    let values: Float32Array = values.finish();
    let nulls = lists.nulls().cloned();
    FixedSizeListArray::try_new(field, dim as i32, Arc::new(values), nulls)
        .map(|a| Arc::new(a) as ArrayRef)
        .map_err(|e| IngestError::column(name, e.to_string()))
}

/// Parses a text column as `ty`. Empty cells are nulls for every type but `string`.
fn parse_text_column(
    text: &arrow::array::StringArray,
    ty: FeatureType,
    name: &str,
) -> Result<ArrayRef, IngestError> {
    let cell = |row: usize| -> Result<Option<Value>, IngestError> {
        if text.is_null(row) {
            return Ok(None);
        }
        let s = text.value(row);
        if s.is_empty() && ty != FeatureType::String {
            return Ok(None);
        }
        Value::parse_text(s, ty)
            .map(Some)
            .map_err(|message| IngestError::cell(name, row, ty.to_string(), message))
    };
    let rows = text.len();
    // One builder per type; `cell` has already checked that the value is of that type.
    macro_rules! build {
        ($builder:expr, $variant:ident) => {{
            let mut b = $builder;
            for r in 0..rows {
                b.append_option(match cell(r)? {
                    Some(Value::$variant(v)) => Some(v),
                    _ => None,
                });
            }
            Arc::new(b.finish()) as ArrayRef
        }};
    }
    Ok(match ty {
        FeatureType::Bool => build!(BooleanBuilder::with_capacity(rows), Bool),
        FeatureType::Int32 => build!(Int32Builder::with_capacity(rows), Int32),
        FeatureType::Int64 => build!(Int64Builder::with_capacity(rows), Int64),
        FeatureType::Float32 => build!(Float32Builder::with_capacity(rows), Float32),
        FeatureType::Float64 => build!(Float64Builder::with_capacity(rows), Float64),
        FeatureType::String => build!(
            StringBuilder::with_capacity(rows, text.value_data().len()),
            String
        ),
        FeatureType::Timestamp => build!(
            TimestampMicrosecondBuilder::with_capacity(rows).with_timezone(UTC),
            Timestamp
        ),
        FeatureType::Date => build!(Date32Builder::with_capacity(rows), Date),
        FeatureType::Embedding { dim } => {
            let mut values = Float32Builder::with_capacity(rows * dim as usize);
            let mut valid = Vec::with_capacity(rows);
            for r in 0..rows {
                match cell(r)? {
                    Some(Value::Embedding(v)) => {
                        values.append_slice(&v);
                        valid.push(true);
                    }
                    _ => {
                        values.append_nulls(dim as usize);
                        valid.push(false);
                    }
                }
            }
            let field = Arc::new(Field::new("item", DataType::Float32, true));
            Arc::new(
                FixedSizeListArray::try_new(
                    field,
                    dim as i32,
                    Arc::new(values.finish()),
                    Some(valid.into()),
                )
                .map_err(|e| IngestError::column(name, e.to_string()))?,
            )
        }
    })
}

/// Epoch numbers below 10^11 are seconds (until the year 5138), larger ones milliseconds.
pub fn epoch_to_micros(v: i64) -> i64 {
    if v.unsigned_abs() < 100_000_000_000 {
        v.saturating_mul(1_000_000)
    } else {
        v.saturating_mul(1_000)
    }
}

/// Parses a timestamp: RFC 3339 (a `T` or a space between date and time; no zone means UTC), or
/// epoch seconds or milliseconds (see [`epoch_to_micros`]).
pub fn parse_timestamp(s: &str) -> Result<i64, String> {
    let s = s.trim();
    // Epoch numbers first: cheap to try, and no date format reads as a plain integer.
    if let Ok(v) = s.parse::<i64>() {
        return Ok(epoch_to_micros(v));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_micros());
    }
    for pattern in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, pattern) {
            return Ok(t.and_utc().timestamp_micros());
        }
    }
    if let Ok(seconds) = s.parse::<f64>()
        && seconds.is_finite()
    {
        return Ok((seconds * 1e6).round() as i64);
    }
    Err("expected a timestamp (RFC 3339, or epoch seconds or milliseconds)".into())
}

/// Parses a `YYYY-MM-DD` date into days since the epoch.
pub fn parse_date(s: &str) -> Result<i32, String> {
    let date = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|_| "expected a date (YYYY-MM-DD)".to_string())?;
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
    Ok((date - epoch).num_days() as i32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Column;

    fn spec() -> FeatureGroupSpec {
        FeatureGroupSpec {
            name: "cards".into(),
            description: String::new(),
            columns: vec![
                Column::new("cc_num", FeatureType::Int64),
                Column::new("ts", FeatureType::Timestamp),
                Column::new("amount", FeatureType::Float64),
                Column::new("category", FeatureType::String),
                Column::new("emb", FeatureType::Embedding { dim: 2 }),
            ],
            primary_key: vec!["cc_num".into()],
            event_time: "ts".into(),
            online: true,
            ttl_seconds: None,
            vector_index: None,
            expectations: Vec::new(),
        }
    }

    #[test]
    fn csv_headers_and_json_keys_are_checked_before_any_row() {
        let err = csv("cc_num,ts,amount,amount\n1,2024-01-01T00:00:00Z,1,2\n").unwrap_err();
        assert_eq!(err.column.as_deref(), Some("amount"), "{err}");
        assert!(err.message.contains("twice"), "{err}");
        let err = jsonl("{\"cc_num\": 1, \"ts\": \"2024-01-01T00:00:00Z\", \"cc_num\": 2}\n")
            .unwrap_err();
        assert!(err.message.contains("'cc_num' appears twice"), "{err}");
        // Unknown names are refused from the header alone, however many rows follow.
        let wide: Vec<String> = (0..1000).map(|i| format!("c{i}")).collect();
        let body = format!("{}\n{}\n", wide.join(","), vec!["1"; 1000].join(",")).repeat(2);
        let err = csv(&body).unwrap_err();
        assert_eq!(err.column.as_deref(), Some("c0"), "{err}");
        let wider: Vec<String> = (0..100_000).map(|i| format!("c{i}")).collect();
        let err = csv(&format!("{}\n", wider.join(","))).unwrap_err();
        assert!(err.message.contains("more than 4096 columns"), "{err}");
        // Events ignore columns the pipeline does not read, and decode only the others.
        let batch = decode_events(
            &spec(),
            Format::Csv,
            Bytes::from("cc_num,extra,ts\n1,x,1714550400\n"),
        )
        .unwrap();
        assert_eq!(batch.num_columns(), 2);
    }

    #[test]
    fn an_arrow_stream_cannot_declare_more_than_it_holds() {
        let spec = spec();
        let mut huge = vec![0xFF, 0xFF, 0xFF, 0xFF];
        huge.extend_from_slice(&0x7FFF_FFF0u32.to_le_bytes());
        huge.extend_from_slice(&[0u8; 64]);
        let err = parse_batch(&spec, Format::ArrowIpc, Bytes::from(huge)).unwrap_err();
        assert!(err.message.contains("declares"), "{err}");
        // A real stream passes the walk.
        let rows = csv("cc_num,ts,amount,category,emb\n1,2024-01-01T00:00:00Z,1,a,\n").unwrap();
        let ipc = crate::export::encode_ipc(&rows).unwrap();
        assert_eq!(
            parse_batch(&spec, Format::ArrowIpc, ipc)
                .unwrap()
                .num_rows(),
            1
        );
    }

    #[test]
    fn timestamps_outside_the_years_1_to_9999_are_refused_in_every_format() {
        for ts in [
            "-9223372036854775808",
            "9223372036854775807",
            "99999999999999999999",
            "1e300",
            "-1e300",
            "10000-01-01T00:00:00Z",
        ] {
            let err = csv(&format!(
                "cc_num,ts,amount,category,emb\n1,2024-01-01T00:00:00Z,1,a,\n2,{ts},1,a,\n"
            ))
            .unwrap_err();
            assert_eq!(err.column.as_deref(), Some("ts"), "{ts}: {err}");
            assert_eq!(err.row, Some(2), "{ts}: {err}");
            let err = jsonl(&format!("{{\"cc_num\": 1, \"ts\": \"{ts}\"}}\n")).unwrap_err();
            assert_eq!(err.column.as_deref(), Some("ts"), "{ts}: {err}");
        }
        let err = jsonl("{\"cc_num\": 1, \"ts\": 9223372036854775807}\n").unwrap_err();
        assert_eq!(err.column.as_deref(), Some("ts"), "{err}");
        // Arrow's own timestamps go through the same rule.
        let spec = spec();
        let ts =
            arrow::array::TimestampMicrosecondArray::from(vec![0, i64::MAX]).with_timezone(UTC);
        let source = RecordBatch::try_from_iter([
            (
                "cc_num",
                Arc::new(arrow::array::Int64Array::from(vec![1, 2])) as ArrayRef,
            ),
            ("ts", Arc::new(ts) as ArrayRef),
        ])
        .unwrap();
        let err = conform(&spec, &source).unwrap_err();
        assert_eq!(
            (err.column.as_deref(), err.row),
            (Some("ts"), Some(2)),
            "{err}"
        );
        // The edges themselves are fine.
        csv("cc_num,ts,amount,category,emb\n1,0001-01-01T00:00:00Z,1,a,\n2,9999-12-31T23:59:59.999999Z,1,a,\n")
            .unwrap();
    }

    fn csv(text: &str) -> Result<RecordBatch, IngestError> {
        parse_batch(&spec(), Format::Csv, Bytes::from(text.to_string()))
    }

    fn jsonl(text: &str) -> Result<RecordBatch, IngestError> {
        parse_batch(&spec(), Format::JsonLines, Bytes::from(text.to_string()))
    }

    #[test]
    fn csv_with_every_timestamp_form_is_accepted() {
        let batch = csv("cc_num,ts,amount,category,emb\n\
                         1,2024-01-01T00:00:00Z,1.5,food,\"[1,2]\"\n\
                         2,1704067200,2.5,,\n\
                         3,1704067200000,,travel,\"[0.5, 0.25]\"\n")
        .unwrap();
        assert_eq!(batch.num_rows(), 3);
        assert_eq!(batch.schema(), spec().arrow_schema());
        let ts = batch
            .column(1)
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!(ts.value(0), 1_704_067_200_000_000);
        assert_eq!(ts.value(1), 1_704_067_200_000_000);
        assert_eq!(ts.value(2), 1_704_067_200_000_000);
        assert!(batch.column(2).is_null(2));
        assert!(batch.column(4).is_null(1));
    }

    #[test]
    fn a_bad_cell_names_column_row_and_type() {
        let err = csv("cc_num,ts,amount\n1,2024-01-01T00:00:00Z,1.0\n2,2024-01-01T00:00:00Z,abc\n")
            .unwrap_err();
        assert_eq!(err.column.as_deref(), Some("amount"));
        assert_eq!(err.row, Some(2));
        assert_eq!(err.expected.as_deref(), Some("float64"));
        assert!(
            err.to_string()
                .contains("column 'amount', row 2: expected float64"),
            "{err}"
        );
    }

    #[test]
    fn null_keys_unknown_and_missing_columns_are_refused() {
        let err = jsonl("{\"cc_num\": 1, \"ts\": 1}\n{\"ts\": 2}\n").unwrap_err();
        assert_eq!((err.column.as_deref(), err.row), (Some("cc_num"), Some(2)));
        assert!(err.message.contains("primary-key"));

        let err = jsonl("{\"cc_num\": 1, \"ts\": 1, \"colour\": \"red\"}\n").unwrap_err();
        assert_eq!((err.column.as_deref(), err.row), (Some("colour"), Some(1)));

        let err = csv("cc_num,amount\n1,2.0\n").unwrap_err();
        assert_eq!(err.column.as_deref(), Some("ts"));
        assert!(err.message.contains("missing column"));

        let err = jsonl("{\"cc_num\": 1, \"ts\": \"yesterday\"}\n").unwrap_err();
        assert_eq!((err.column.as_deref(), err.row), (Some("ts"), Some(1)));
        assert!(err.message.contains("RFC 3339"), "{err}");
    }

    #[test]
    fn embedding_dimension_is_checked() {
        let err = jsonl("{\"cc_num\": 1, \"ts\": 1, \"emb\": [1.0, 2.0, 3.0]}\n").unwrap_err();
        assert_eq!((err.column.as_deref(), err.row), (Some("emb"), Some(1)));
        assert!(err.message.contains("expected 2 values"));
    }

    #[test]
    fn arrow_and_parquet_round_trip_and_truncation_is_refused() {
        let batch = csv("cc_num,ts,amount\n1,2024-01-01T00:00:00Z,1.0\n").unwrap();
        let mut ipc = Vec::new();
        {
            let mut w =
                arrow::ipc::writer::StreamWriter::try_new(&mut ipc, &batch.schema()).unwrap();
            w.write(&batch).unwrap();
            w.finish().unwrap();
        }
        let again = parse_batch(&spec(), Format::ArrowIpc, Bytes::from(ipc.clone())).unwrap();
        assert_eq!(again, batch);
        let truncated = Bytes::from(ipc[..ipc.len() / 2].to_vec());
        assert!(
            parse_batch(&spec(), Format::ArrowIpc, truncated)
                .unwrap_err()
                .message
                .contains("Arrow IPC")
        );

        let mut pq = Vec::new();
        {
            let mut w =
                parquet::arrow::ArrowWriter::try_new(&mut pq, batch.schema(), None).unwrap();
            w.write(&batch).unwrap();
            w.close().unwrap();
        }
        assert_eq!(
            parse_batch(&spec(), Format::Parquet, Bytes::from(pq.clone())).unwrap(),
            batch
        );
        let truncated = Bytes::from(pq[..pq.len() - 10].to_vec());
        assert!(
            parse_batch(&spec(), Format::Parquet, truncated)
                .unwrap_err()
                .message
                .contains("Parquet")
        );
    }

    #[test]
    fn narrower_numbers_widen_and_overflow_is_refused() {
        let small = Arc::new(arrow::array::Int32Array::from(vec![1, 2])) as ArrayRef;
        assert_eq!(
            to_canonical(&small, FeatureType::Int64, "x")
                .unwrap()
                .data_type(),
            &DataType::Int64
        );
        let big = Arc::new(arrow::array::Int64Array::from(vec![1, i64::MAX])) as ArrayRef;
        let err = to_canonical(&big, FeatureType::Int32, "x").unwrap_err();
        assert_eq!(err.row, Some(2));
        let floats = Arc::new(arrow::array::Float64Array::from(vec![1.5])) as ArrayRef;
        assert!(to_canonical(&floats, FeatureType::Int64, "x").is_err());
    }

    /// Inputs the fuzzers found that panicked inside Arrow's IPC reader (a buffer sliced past
    /// the body) and inside Parquet's embedded-schema reader (an unknown float precision).
    #[test]
    fn a_reader_that_panics_on_a_batch_refuses_it() {
        let cases = [
            (
                Format::ArrowIpc,
                &include_bytes!("../../../fuzz/corpus/ingest_arrow/regression-buffer-past-end")[..],
            ),
            (
                Format::Parquet,
                &include_bytes!(
                    "../../../fuzz/corpus/ingest_parquet/regression-unknown-float-precision"
                )[..],
            ),
        ];
        for (format, bytes) in cases {
            let err = parse_batch(&spec(), format, Bytes::from_static(bytes)).unwrap_err();
            assert!(err.message.contains("the reader gave up"), "{err}");
        }
    }

    /// A 784-byte file the fuzzer found, whose footer nests lists (of booleans, which Parquet's
    /// footer decoder steps over without reading) so deep and long that the decoder spun for
    /// seconds: refused before it sees it.
    #[test]
    fn a_footer_that_would_spin_the_reader_is_refused() {
        let bytes =
            include_bytes!("../../../fuzz/corpus/ingest_parquet/regression-footer-bool-list-spin");
        let err = parse_batch(&spec(), Format::Parquet, Bytes::from_static(bytes)).unwrap_err();
        // Refused by the walk of the footer (the field that opens the nesting is sent as a
        // set where the format has bytes, which is now refused first).
        assert!(
            err.message.contains("invalid Parquet file: its footer"),
            "{err}"
        );
    }

    /// A 779-byte file the fuzzer found next: its footer sends fields Parquet decodes as
    /// integers with other wire types, so Parquet's typed reader, which takes the value
    /// whatever the wire type, read its way into lists of billions of items that a walk by
    /// wire types never saw (1.7 s in a debug build): refused, before Parquet reads it, by the
    /// field's wire type.
    #[test]
    fn a_footer_whose_wire_types_mislead_the_reader_is_refused() {
        let bytes =
            include_bytes!("../../../fuzz/corpus/ingest_parquet/regression-footer-wire-type-spin");
        let err = parse_batch(&spec(), Format::Parquet, Bytes::from_static(bytes)).unwrap_err();
        assert!(err.message.contains("where Parquet reads"), "{err}");
    }
}
