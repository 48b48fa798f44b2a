//! Encoding record batches into the wire formats, batch by batch, for streamed reads.

use arrow::csv::Writer as CsvWriter;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::ipc::writer::StreamWriter;
use arrow::json::LineDelimitedWriter;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;

use crate::ingest::Format;

/// One batch as a whole Arrow IPC stream (schema, batch, end marker): how a batch is stored
/// in a log record or a checkpoint, and sent to a server.
pub fn encode_ipc(batch: &RecordBatch) -> Result<Bytes, ArrowError> {
    let mut buf = Vec::with_capacity(batch.get_array_memory_size() + 1024);
    let mut writer = StreamWriter::try_new(&mut buf, &batch.schema())?;
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    Ok(Bytes::from(buf))
}

/// Turns batches into bytes of one format. CSV, JSON lines and Arrow IPC come out as each batch
/// arrives; Parquet, whose footer needs the whole file, comes out at [`BatchEncoder::finish`].
pub struct BatchEncoder {
    inner: Inner,
}

enum Inner {
    Csv { wrote_header: bool },
    JsonLines,
    Arrow(StreamWriter<Vec<u8>>),
    Parquet(parquet::arrow::ArrowWriter<Vec<u8>>),
}

impl std::fmt::Debug for BatchEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BatchEncoder")
    }
}

impl BatchEncoder {
    pub fn new(format: Format, schema: &SchemaRef) -> Result<Self, ArrowError> {
        let inner = match format {
            Format::Csv => Inner::Csv {
                wrote_header: false,
            },
            Format::JsonLines => Inner::JsonLines,
            Format::ArrowIpc => Inner::Arrow(StreamWriter::try_new(Vec::new(), schema)?),
            Format::Parquet => Inner::Parquet(
                parquet::arrow::ArrowWriter::try_new(Vec::new(), schema.clone(), None)
                    .map_err(|e| ArrowError::ExternalError(Box::new(e)))?,
            ),
        };
        Ok(Self { inner })
    }

    /// The bytes for one more batch (empty for Parquet until the end).
    pub fn encode(&mut self, batch: &RecordBatch) -> Result<Bytes, ArrowError> {
        match &mut self.inner {
            Inner::Csv { wrote_header } => {
                let mut out = Vec::new();
                let mut writer = arrow::csv::WriterBuilder::new()
                    .with_header(!*wrote_header)
                    .build(&mut out);
                writer.write(batch)?;
                drop::<CsvWriter<_>>(writer);
                *wrote_header = true;
                Ok(Bytes::from(out))
            }
            Inner::JsonLines => {
                let mut out = Vec::new();
                let mut writer = LineDelimitedWriter::new(&mut out);
                writer.write(batch)?;
                writer.finish()?;
                drop(writer);
                Ok(Bytes::from(out))
            }
            Inner::Arrow(writer) => {
                writer.write(batch)?;
                Ok(Bytes::from(std::mem::take(writer.get_mut())))
            }
            Inner::Parquet(writer) => {
                writer
                    .write(batch)
                    .map_err(|e| ArrowError::ExternalError(Box::new(e)))?;
                Ok(Bytes::new())
            }
        }
    }

    /// The closing bytes: the Arrow end-of-stream marker, or the whole Parquet file.
    pub fn finish(self) -> Result<Bytes, ArrowError> {
        match self.inner {
            Inner::Csv { .. } | Inner::JsonLines => Ok(Bytes::new()),
            Inner::Arrow(mut writer) => {
                writer.finish()?;
                Ok(Bytes::from(writer.into_inner()?))
            }
            Inner::Parquet(writer) => {
                let out = writer
                    .into_inner()
                    .map_err(|e| ArrowError::ExternalError(Box::new(e)))?;
                Ok(Bytes::from(out))
            }
        }
    }
}
