//! The offline row layout, as pure functions over Arrow batches.
//!
//! Offline rows are the group's columns plus `_event_date` (the partition column), `_ingested_at`
//! and `_offset`. Embeddings are stored as `list<float>`, since Delta has no fixed-size list
//! type, and come back as fixed-size lists on read.

use std::sync::Arc;

use arrow::array::{ArrayRef, Date32Array, Int64Array, TimestampMicrosecondArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use kairos_types::{FeatureGroupSpec, FeatureType, LogPosition};

pub const EVENT_DATE: &str = "_event_date";
pub const INGESTED_AT: &str = "_ingested_at";
pub const OFFSET: &str = "_offset";

pub(crate) const MICROS_PER_DAY: i64 = 86_400_000_000;

fn offline_type(ty: FeatureType) -> DataType {
    match ty {
        FeatureType::Embedding { .. } => {
            DataType::List(Arc::new(Field::new("element", DataType::Float32, true)))
        }
        other => other.arrow_type(),
    }
}

fn timestamp_type() -> DataType {
    FeatureType::Timestamp.arrow_type()
}

/// The schema of an offline table.
pub fn offline_schema(spec: &FeatureGroupSpec) -> SchemaRef {
    let mut fields: Vec<Field> = spec
        .columns
        .iter()
        .map(|c| Field::new(&c.name, offline_type(c.ty), spec.is_nullable(c)))
        .collect();
    fields.push(Field::new(EVENT_DATE, DataType::Date32, false));
    fields.push(Field::new(INGESTED_AT, timestamp_type(), false));
    fields.push(Field::new(OFFSET, DataType::Int64, false));
    Arc::new(Schema::new(fields))
}

/// The schema offline reads return: the group's columns, then `_ingested_at` and `_offset`.
pub fn output_schema(spec: &FeatureGroupSpec) -> SchemaRef {
    let canonical = spec.arrow_schema();
    let mut fields: Vec<Field> = canonical
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(INGESTED_AT, timestamp_type(), false));
    fields.push(Field::new(OFFSET, DataType::Int64, false));
    Arc::new(Schema::new(fields))
}

/// Turns a batch in the group's canonical schema, whose rows lie at consecutive offsets of one
/// log partition from `first` on, into the offline layout: `_offset` holds each row's stored
/// position in a log of `partitions` partitions ([`LogPosition::encode`]).
pub fn to_offline(
    spec: &FeatureGroupSpec,
    batch: &RecordBatch,
    first: LogPosition,
    partitions: u32,
    ingested_at: i64,
) -> Result<RecordBatch, ArrowError> {
    let rows = batch.num_rows();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns() + 3);
    for (col, array) in spec.columns.iter().zip(batch.columns()) {
        columns.push(match col.ty {
            FeatureType::Embedding { .. } => cast(array, &offline_type(col.ty))?,
            _ => array.clone(),
        });
    }
    let event_times = batch
        .column(spec.event_time_index())
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .ok_or_else(|| ArrowError::SchemaError("event time is not a timestamp".into()))?;
    let dates: Date32Array = event_times
        .values()
        .iter()
        .map(|t| Some(t.div_euclid(MICROS_PER_DAY) as i32))
        .collect();
    columns.push(Arc::new(dates));
    columns.push(Arc::new(
        TimestampMicrosecondArray::from(vec![ingested_at; rows]).with_timezone("UTC"),
    ));
    columns.push(Arc::new(Int64Array::from_iter_values(
        (0..rows as u64)
            .map(|i| LogPosition::new(first.partition, first.offset + i).encode(partitions) as i64),
    )));
    RecordBatch::try_new(offline_schema(spec), columns)
}

/// The columns a data file of the group's table holds.
pub(crate) fn stored_schema(spec: &FeatureGroupSpec) -> SchemaRef {
    file_schema(&offline_schema(spec), &[EVENT_DATE.to_string()])
}

/// A table's columns less its partition columns, which Delta keeps in the log: the columns of
/// its data files.
pub(crate) fn file_schema(table: &SchemaRef, partition_columns: &[String]) -> SchemaRef {
    let fields: Vec<Field> = table
        .fields()
        .iter()
        .filter(|f| !partition_columns.contains(f.name()))
        .map(|f| f.as_ref().clone())
        .collect();
    Arc::new(Schema::new(fields))
}

/// Turns a batch read from an offline table (with at least the output columns) into the
/// output schema.
pub fn from_offline(
    spec: &FeatureGroupSpec,
    batch: &RecordBatch,
) -> Result<RecordBatch, ArrowError> {
    conform(&output_schema(spec), batch)
}

/// Picks `schema`'s columns out of `batch` by name, cast to its types: files written by other
/// writers (or before a type's offline form changed) read the same.
pub(crate) fn conform(schema: &SchemaRef, batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            let array = batch.column_by_name(field.name()).ok_or_else(|| {
                ArrowError::SchemaError(format!("offline table lacks column '{}'", field.name()))
            })?;
            if array.data_type() == field.data_type() {
                Ok(array.clone())
            } else {
                cast(array, field.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
}
