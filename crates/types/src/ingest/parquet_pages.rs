//! A Parquet file's Thrift structures — its footer and its page headers — read before Parquet's
//! reader gets to them (the `ingest_parquet` fuzz target found files of a few kilobytes that
//! took that reader seconds or gigabytes):
//!
//! - The footer's decoder skips a boolean in a list without reading its byte, so lists that
//!   declare billions of them, or nest many deep, spin for seconds on a few bytes. And its typed
//!   readers take a field's value without looking at the field's wire type, so a field that
//!   says "list" where the format has an integer sends that reader down a path no generic
//!   walk would take. [`check_footer`] walks the footer first as that decoder reads it — the
//!   fields it decodes by the format's layout ([`format`]), each of which must arrive with a
//!   wire type that reads the same, and the rest skipped as it skips them — and refuses it
//!   when the walk takes more steps than its bytes could justify.
//! - The page reader believes each page header's `uncompressed_page_size`, and allocates and
//!   zero-fills that much before it decompresses the page (up to 2 GiB a page). [`check`] reads
//!   the two sizes from each header (walked the same way) and holds the file to a budget
//!   before any page is unpacked.
//!
//! The parquet crate keeps its Thrift reader private; [`Compact`] is the little of the compact
//! protocol these checks need.

use parquet::file::metadata::ParquetMetaData;

/// What the pages of any file may unpack to in all.
const MIN_UNPACKED_BYTES: u64 = 64 << 20;
/// What the pages of a larger file may unpack to, per byte of file (real data compresses far
/// less; a file past both limits is refused, and can be sent in parts).
const MAX_UNPACK_RATIO: u64 = 1024;
/// How deeply Thrift structures may nest (parquet-format's footer nests seven deep).
const MAX_DEPTH: usize = 32;

/// Refuses a file whose footer (parquet-format's `FileMetaData`) is not well-formed Thrift within
/// its bytes. What does not look like a Parquet footer at all is left to Parquet's reader, whose
/// error says so.
pub(super) fn check_footer(file: &[u8]) -> Result<(), String> {
    let Some(tail) = file.len().checked_sub(8).map(|at| &file[at..]) else {
        return Ok(());
    };
    if &tail[4..] != b"PAR1" {
        return Ok(());
    }
    let length = u32::from_le_bytes(tail[..4].try_into().expect("four bytes")) as usize;
    let Some(start) = (file.len() - 8).checked_sub(length) else {
        return Ok(());
    };
    Compact::new(&file[start..file.len() - 8])
        .record(&format::FILE_META_DATA, 0)
        .map_err(|e| format!("its footer {e}"))
}

/// Walks every column chunk's pages as Parquet's reader would (from the dictionary page, or
/// the first data page, for the chunk's compressed size), and refuses a file whose pages are
/// malformed, overlap, lie past its end, or would unpack past the budget.
pub(super) fn check(file: &[u8], metadata: &ParquetMetaData) -> Result<(), String> {
    let budget = MIN_UNPACKED_BYTES.max(MAX_UNPACK_RATIO.saturating_mul(file.len() as u64));
    let mut unpacked: u64 = 0;
    let mut chunk_bytes: u64 = 0;
    for (g, group) in metadata.row_groups().iter().enumerate() {
        for (c, column) in group.columns().iter().enumerate() {
            let at = |what: String| format!("row group {g}, column {c}: {what}");
            let start = column
                .dictionary_page_offset()
                .unwrap_or(column.data_page_offset());
            let range = u64::try_from(start)
                .ok()
                .zip(u64::try_from(column.compressed_size()).ok())
                .and_then(|(start, len)| Some((start, start.checked_add(len)?)))
                .filter(|&(_, end)| end <= file.len() as u64)
                .ok_or_else(|| at("its pages lie outside the file".into()))?;
            // Chunks that share bytes would have the same pages read again and again.
            chunk_bytes += range.1 - range.0;
            if chunk_bytes > file.len() as u64 {
                return Err(at("its pages overlap another column's".into()));
            }
            let (mut offset, end) = (range.0 as usize, range.1 as usize);
            while offset < end {
                let mut header = Compact::new(&file[offset..end]);
                let page = header
                    .page_sizes()
                    .map_err(|e| at(format!("the page header at byte {offset} {e}")))?;
                unpacked = unpacked.saturating_add(page.uncompressed as u64);
                if unpacked > budget {
                    return Err(format!(
                        "its pages would unpack to more than {budget} bytes from {} bytes of \
                         file; send the rows in smaller files",
                        file.len()
                    ));
                }
                offset += header.at;
                if page.compressed > end - offset {
                    return Err(at(format!(
                        "the page at byte {offset} is {} bytes, past the column's end",
                        page.compressed
                    )));
                }
                offset += page.compressed;
            }
        }
    }
    Ok(())
}

/// The sizes a page header declares, in bytes.
#[derive(Debug, PartialEq)]
struct PageSizes {
    uncompressed: usize,
    compressed: usize,
}

/// A reader of the Thrift compact protocol over one structure's bytes, which skips what it does
/// not need the way parquet's reader does, and counts the values it steps over.
struct Compact<'a> {
    bytes: &'a [u8],
    at: usize,
    steps: usize,
}

/// The values a walk may step over per byte (each takes a byte at least, but for the booleans
/// in a collection that parquet's reader skips without reading).
const STEPS_PER_BYTE: usize = 4;

/// Compact-protocol type codes.
mod ty {
    pub const STOP: u8 = 0;
    pub const BOOL_TRUE: u8 = 1;
    pub const BOOL_FALSE: u8 = 2;
    pub const BYTE: u8 = 3;
    pub const I16: u8 = 4;
    pub const I32: u8 = 5;
    pub const I64: u8 = 6;
    pub const DOUBLE: u8 = 7;
    pub const BINARY: u8 = 8;
    pub const LIST: u8 = 9;
    pub const SET: u8 = 10;
    pub const MAP: u8 = 11;
    pub const STRUCT: u8 = 12;
    pub const UUID: u8 = 13;
}

impl<'a> Compact<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            at: 0,
            steps: 0,
        }
    }

    /// `PageHeader`'s fields 2 (`uncompressed_page_size`) and 3 (`compressed_page_size`), the
    /// rest walked as parquet reads them.
    fn page_sizes(&mut self) -> Result<PageSizes, String> {
        let (mut uncompressed, mut compressed) = (None, None);
        let mut last = 0;
        let layout = &format::PAGE_HEADER;
        while let Some((id, kind)) = self.field(&mut last)? {
            match id {
                2 | 3 => {
                    self.expect(kind, Shape::Int, id, layout)?;
                    let size = self.size()?;
                    if id == 2 {
                        uncompressed = Some(size);
                    } else {
                        compressed = Some(size);
                    }
                }
                _ => self.value(kind, layout.shape_of(id), id, layout, 0)?,
            }
        }
        match (uncompressed, compressed) {
            (Some(uncompressed), Some(compressed)) => Ok(PageSizes {
                uncompressed,
                compressed,
            }),
            _ => Err("lacks its sizes".into()),
        }
    }

    /// A structure parquet decodes field by field: those the layout names, read as it says,
    /// and the rest skipped.
    fn record(&mut self, layout: &Layout, depth: usize) -> Result<(), String> {
        self.step(depth)?;
        let mut last = 0;
        while let Some((id, kind)) = self.field(&mut last)? {
            self.value(kind, layout.shape_of(id), id, layout, depth + 1)?;
        }
        Ok(())
    }

    /// The next field's id and wire type, or `None` at the structure's end. The id is worked
    /// out as parquet's typed readers do (a delta from the last id, or a full i16 truncated
    /// from its varint), so that both take the same field for the same one.
    fn field(&mut self, last: &mut i16) -> Result<Option<(i16, u8)>, String> {
        let header = self.byte()?;
        let kind = header & 0x0f;
        if kind == ty::STOP {
            return Ok(None);
        }
        *last = match header >> 4 {
            0 => zigzag(self.varint()?) as i16,
            delta => last
                .checked_add(i16::from(delta))
                .ok_or("numbers a field past 32767")?,
        };
        Ok(Some((*last, kind)))
    }

    /// One field's value: decoded by its shape where parquet decodes it, skipped where parquet
    /// skips it.
    fn value(
        &mut self,
        kind: u8,
        shape: Option<Shape>,
        id: i16,
        layout: &Layout,
        depth: usize,
    ) -> Result<(), String> {
        let Some(shape) = shape else {
            return self.skip(kind, depth);
        };
        self.expect(kind, shape, id, layout)?;
        self.shaped(shape, depth)
    }

    /// Refuses a field whose wire type parquet's typed reader would not read the same way.
    fn expect(&self, kind: u8, shape: Shape, id: i16, layout: &Layout) -> Result<(), String> {
        if shape.read_as(kind) {
            return Ok(());
        }
        Err(format!(
            "sends field {id} of {} as Thrift type {kind}, where Parquet reads {}",
            layout.name,
            shape.name()
        ))
    }

    fn shaped(&mut self, shape: Shape, depth: usize) -> Result<(), String> {
        match shape {
            Shape::Byte => self.skip(ty::BYTE, depth),
            Shape::Int => self.skip(ty::I64, depth),
            Shape::Bool => self.skip(ty::BOOL_TRUE, depth),
            Shape::Double => self.skip(ty::DOUBLE, depth),
            Shape::Binary => self.skip(ty::BINARY, depth),
            Shape::Record(layout) => self.record(layout, depth),
            Shape::List(item) => {
                self.step(depth)?;
                let (kind, items) = self.list_header()?;
                if items > 0 && !item.read_as(kind) {
                    return Err(format!(
                        "holds a list of Thrift type {kind} where Parquet reads {}",
                        item.name()
                    ));
                }
                for _ in 0..items {
                    self.shaped(*item, depth + 1)?;
                }
                Ok(())
            }
        }
    }

    /// A page size: a non-negative i32.
    fn size(&mut self) -> Result<usize, String> {
        let value = zigzag(self.varint()?);
        i32::try_from(value)
            .ok()
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| format!("declares a size of {value}"))
    }

    /// Skips a value as parquet's reader skips one it does not decode.
    fn skip(&mut self, kind: u8, depth: usize) -> Result<(), String> {
        self.step(depth)?;
        match kind {
            ty::BOOL_TRUE | ty::BOOL_FALSE => Ok(()),
            ty::BYTE => self.take(1),
            ty::I16 | ty::I32 | ty::I64 => self.varint().map(drop),
            ty::DOUBLE => self.take(8),
            ty::BINARY => {
                let len = self.varint()?;
                self.take(usize::try_from(len).map_err(|_| "declares a huge string")?)
            }
            ty::LIST | ty::SET => {
                let (kind, items) = self.list_header()?;
                // A boolean item has a byte of its own in the compact protocol, which
                // parquet's reader skips without reading: walked as it does, so both read the
                // same bytes, and counted as a step.
                for _ in 0..items {
                    self.skip(kind, depth + 1)?;
                }
                Ok(())
            }
            ty::MAP => {
                let entries = self.varint()?;
                if entries == 0 {
                    return Ok(());
                }
                self.items(entries)?;
                let kinds = self.byte()?;
                for _ in 0..entries {
                    self.skip(kinds >> 4, depth + 1)?;
                    self.skip(kinds & 0x0f, depth + 1)?;
                }
                Ok(())
            }
            ty::STRUCT => loop {
                let header = self.byte()?;
                if header & 0x0f == ty::STOP {
                    return Ok(());
                }
                if header >> 4 == 0 {
                    self.varint()?;
                }
                self.skip(header & 0x0f, depth + 1)?;
            },
            ty::UUID => self.take(16),
            other => Err(format!("holds an unknown Thrift type {other}")),
        }
    }

    /// A list's or set's header: its items' wire type and how many there are, no more than
    /// the bytes left could hold.
    fn list_header(&mut self) -> Result<(u8, u64), String> {
        let header = self.byte()?;
        let items = match header >> 4 {
            15 => self.varint()?,
            n => u64::from(n),
        };
        self.items(items)?;
        Ok((header & 0x0f, items))
    }

    /// Counts one value walked, and refuses a walk nested too deep or longer than its bytes
    /// could justify.
    fn step(&mut self, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("nests deeper than {MAX_DEPTH}"));
        }
        self.steps += 1;
        if self.steps > 1024 + STEPS_PER_BYTE * self.bytes.len() {
            return Err(format!(
                "holds more values than its {} bytes could",
                self.bytes.len()
            ));
        }
        Ok(())
    }

    /// Refuses a collection longer than the bytes left could hold (each item takes one at
    /// least), before it is walked.
    fn items(&self, count: u64) -> Result<(), String> {
        if count > (self.bytes.len() - self.at) as u64 {
            return Err(format!("declares {count} items in fewer bytes"));
        }
        Ok(())
    }

    fn byte(&mut self) -> Result<u8, String> {
        let byte = *self.bytes.get(self.at).ok_or("is cut short")?;
        self.at += 1;
        Ok(byte)
    }

    fn take(&mut self, n: usize) -> Result<(), String> {
        if n > self.bytes.len() - self.at {
            return Err("is cut short".into());
        }
        self.at += n;
        Ok(())
    }

    /// An unsigned LEB128 varint of at most 64 bits.
    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("holds a varint longer than 64 bits".into())
    }
}

fn zigzag(n: u64) -> i64 {
    (n >> 1) as i64 ^ -((n & 1) as i64)
}

/// What parquet's typed readers decode a field as.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// An `i8`: one byte.
    Byte,
    /// An integer of any width, or an enum: a zigzag varint.
    Int,
    /// A boolean field, whose value is its wire type.
    Bool,
    Double,
    /// A string or bytes.
    Binary,
    /// A list of values of one shape.
    List(&'static Shape),
    /// A structure or a union (a structure of one field).
    Record(&'static Layout),
}

impl Shape {
    /// Whether a value sent as wire type `kind` is read the same by parquet's typed reader,
    /// which goes by the shape, as by a walk that goes by the wire type.
    fn read_as(self, kind: u8) -> bool {
        match self {
            Self::Byte => kind == ty::BYTE,
            Self::Int => matches!(kind, ty::I16 | ty::I32 | ty::I64),
            Self::Bool => matches!(kind, ty::BOOL_TRUE | ty::BOOL_FALSE),
            Self::Double => kind == ty::DOUBLE,
            Self::Binary => kind == ty::BINARY,
            Self::List(_) => matches!(kind, ty::LIST | ty::SET),
            Self::Record(_) => kind == ty::STRUCT,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Byte => "a byte",
            Self::Int => "an integer",
            Self::Bool => "a boolean",
            Self::Double => "a double",
            Self::Binary => "a string",
            Self::List(_) => "a list",
            Self::Record(layout) => layout.name,
        }
    }
}

/// A Thrift structure's fields, by id.
#[derive(Debug)]
struct Layout {
    name: &'static str,
    fields: &'static [(i16, Shape)],
}

impl Layout {
    fn shape_of(&self, id: i16) -> Option<Shape> {
        self.fields
            .iter()
            .find_map(|&(field, shape)| (field == id).then_some(shape))
    }
}

/// parquet-format's footer and page header, as parquet 59 decodes them: every field of the
/// format's Thrift definition, so that a field parquet decodes (or will decode, in a later
/// version or with its encryption feature) never escapes the check on its wire type. Fields
/// the format does not define are skipped by both.
mod format {
    use super::Layout;
    use super::Shape::{Binary, Bool, Byte, Double, Int, List, Record};

    const fn record(name: &'static str, fields: &'static [(i16, super::Shape)]) -> Layout {
        Layout { name, fields }
    }

    /// A union member without a value, which parquet reads as exactly one stop byte.
    static EMPTY: Layout = record("an empty struct", &[]);

    pub(super) static FILE_META_DATA: Layout = record(
        "FileMetaData",
        &[
            (1, Int), // version
            (2, List(&Record(&SCHEMA_ELEMENT))),
            (3, Int), // num_rows
            (4, List(&Record(&ROW_GROUP))),
            (5, List(&Record(&KEY_VALUE))),
            (6, Binary), // created_by
            (7, List(&Record(&COLUMN_ORDER))),
            (8, Record(&ENCRYPTION_ALGORITHM)),
            (9, Binary), // footer_signing_key_metadata
        ],
    );

    static SCHEMA_ELEMENT: Layout = record(
        "SchemaElement",
        &[
            (1, Int),    // type
            (2, Int),    // type_length
            (3, Int),    // repetition_type
            (4, Binary), // name
            (5, Int),    // num_children
            (6, Int),    // converted_type
            (7, Int),    // scale
            (8, Int),    // precision
            (9, Int),    // field_id
            (10, Record(&LOGICAL_TYPE)),
        ],
    );

    static LOGICAL_TYPE: Layout = record(
        "LogicalType",
        &[
            (1, Record(&EMPTY)), // STRING
            (2, Record(&EMPTY)), // MAP
            (3, Record(&EMPTY)), // LIST
            (4, Record(&EMPTY)), // ENUM
            (5, Record(&DECIMAL)),
            (6, Record(&EMPTY)), // DATE
            (7, Record(&TIME)),
            (8, Record(&TIME)), // TIMESTAMP
            (10, Record(&INTEGER)),
            (11, Record(&EMPTY)), // UNKNOWN
            (12, Record(&EMPTY)), // JSON
            (13, Record(&EMPTY)), // BSON
            (14, Record(&EMPTY)), // UUID
            (15, Record(&EMPTY)), // FLOAT16
            (16, Record(&VARIANT)),
            (17, Record(&GEOMETRY)),
            (18, Record(&GEOGRAPHY)),
        ],
    );

    static DECIMAL: Layout = record("DecimalType", &[(1, Int), (2, Int)]);
    static TIME: Layout = record("TimeType", &[(1, Bool), (2, Record(&TIME_UNIT))]);
    static TIME_UNIT: Layout = record(
        "TimeUnit",
        &[
            (1, Record(&EMPTY)),
            (2, Record(&EMPTY)),
            (3, Record(&EMPTY)),
        ],
    );
    static INTEGER: Layout = record("IntType", &[(1, Byte), (2, Bool)]);
    static VARIANT: Layout = record("VariantType", &[(1, Byte)]);
    static GEOMETRY: Layout = record("GeometryType", &[(1, Binary)]);
    static GEOGRAPHY: Layout = record("GeographyType", &[(1, Binary), (2, Int)]);

    static ROW_GROUP: Layout = record(
        "RowGroup",
        &[
            (1, List(&Record(&COLUMN_CHUNK))),
            (2, Int), // total_byte_size
            (3, Int), // num_rows
            (4, List(&Record(&SORTING_COLUMN))),
            (5, Int), // file_offset
            (6, Int), // total_compressed_size
            (7, Int), // ordinal
        ],
    );

    static SORTING_COLUMN: Layout = record("SortingColumn", &[(1, Int), (2, Bool), (3, Bool)]);

    static COLUMN_CHUNK: Layout = record(
        "ColumnChunk",
        &[
            (1, Binary), // file_path
            (2, Int),    // file_offset
            (3, Record(&COLUMN_META_DATA)),
            (4, Int), // offset_index_offset
            (5, Int), // offset_index_length
            (6, Int), // column_index_offset
            (7, Int), // column_index_length
            (8, Record(&COLUMN_CRYPTO_META_DATA)),
            (9, Binary), // encrypted_column_metadata
        ],
    );

    static COLUMN_META_DATA: Layout = record(
        "ColumnMetaData",
        &[
            (1, Int),           // type
            (2, List(&Int)),    // encodings
            (3, List(&Binary)), // path_in_schema
            (4, Int),           // codec
            (5, Int),           // num_values
            (6, Int),           // total_uncompressed_size
            (7, Int),           // total_compressed_size
            (8, List(&Record(&KEY_VALUE))),
            (9, Int),  // data_page_offset
            (10, Int), // index_page_offset
            (11, Int), // dictionary_page_offset
            (12, Record(&STATISTICS)),
            (13, List(&Record(&PAGE_ENCODING_STATS))),
            (14, Int), // bloom_filter_offset
            (15, Int), // bloom_filter_length
            (16, Record(&SIZE_STATISTICS)),
            (17, Record(&GEOSPATIAL_STATISTICS)),
        ],
    );

    static STATISTICS: Layout = record(
        "Statistics",
        &[
            (1, Binary), // max
            (2, Binary), // min
            (3, Int),    // null_count
            (4, Int),    // distinct_count
            (5, Binary), // max_value
            (6, Binary), // min_value
            (7, Bool),   // is_max_value_exact
            (8, Bool),   // is_min_value_exact
        ],
    );

    static PAGE_ENCODING_STATS: Layout =
        record("PageEncodingStats", &[(1, Int), (2, Int), (3, Int)]);
    static SIZE_STATISTICS: Layout = record(
        "SizeStatistics",
        &[(1, Int), (2, List(&Int)), (3, List(&Int))],
    );
    static GEOSPATIAL_STATISTICS: Layout = record(
        "GeospatialStatistics",
        &[(1, Record(&BOUNDING_BOX)), (2, List(&Int))],
    );
    static BOUNDING_BOX: Layout = record(
        "BoundingBox",
        &[
            (1, Double),
            (2, Double),
            (3, Double),
            (4, Double),
            (5, Double),
            (6, Double),
            (7, Double),
            (8, Double),
        ],
    );
    static KEY_VALUE: Layout = record("KeyValue", &[(1, Binary), (2, Binary)]);
    static COLUMN_ORDER: Layout = record("ColumnOrder", &[(1, Record(&EMPTY))]);

    static ENCRYPTION_ALGORITHM: Layout = record(
        "EncryptionAlgorithm",
        &[(1, Record(&AES_GCM)), (2, Record(&AES_GCM))],
    );
    static AES_GCM: Layout = record("AesGcmV1", &[(1, Binary), (2, Binary), (3, Bool)]);
    static COLUMN_CRYPTO_META_DATA: Layout = record(
        "ColumnCryptoMetaData",
        &[
            (1, Record(&EMPTY)),
            (2, Record(&ENCRYPTION_WITH_COLUMN_KEY)),
        ],
    );
    static ENCRYPTION_WITH_COLUMN_KEY: Layout = record(
        "EncryptionWithColumnKey",
        &[(1, List(&Binary)), (2, Binary)],
    );

    pub(super) static PAGE_HEADER: Layout = record(
        "PageHeader",
        &[
            (1, Int), // type
            (2, Int), // uncompressed_page_size
            (3, Int), // compressed_page_size
            (4, Int), // crc
            (5, Record(&DATA_PAGE_HEADER)),
            (6, Record(&EMPTY)), // index_page_header
            (7, Record(&DICTIONARY_PAGE_HEADER)),
            (8, Record(&DATA_PAGE_HEADER_V2)),
        ],
    );

    static DATA_PAGE_HEADER: Layout = record(
        "DataPageHeader",
        &[
            (1, Int), // num_values
            (2, Int), // encoding
            (3, Int), // definition_level_encoding
            (4, Int), // repetition_level_encoding
            (5, Record(&STATISTICS)),
        ],
    );
    static DICTIONARY_PAGE_HEADER: Layout =
        record("DictionaryPageHeader", &[(1, Int), (2, Int), (3, Bool)]);
    static DATA_PAGE_HEADER_V2: Layout = record(
        "DataPageHeaderV2",
        &[
            (1, Int),  // num_values
            (2, Int),  // num_nulls
            (3, Int),  // num_rows
            (4, Int),  // encoding
            (5, Int),  // definition_levels_byte_length
            (6, Int),  // repetition_levels_byte_length
            (7, Bool), // is_compressed
            (8, Record(&STATISTICS)),
        ],
    );
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;
    use bytes::Bytes;
    use parquet::arrow::ArrowWriter;
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::file::properties::WriterProperties;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    use super::*;

    fn file(rows: i64, compression: Compression) -> Vec<u8> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(0..rows)),
                Arc::new(StringArray::from_iter(
                    (0..rows).map(|i| (i % 3 != 0).then(|| format!("name {i}"))),
                )),
            ],
        )
        .unwrap();
        let properties = WriterProperties::builder()
            .set_compression(compression)
            .set_data_page_row_count_limit(100)
            .set_write_batch_size(100)
            .build();
        let mut out = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut out, schema, Some(properties)).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        out
    }

    fn metadata(file: &[u8]) -> ParquetMetaData {
        let reader = SerializedFileReader::new(Bytes::from(file.to_vec())).unwrap();
        reader.metadata().clone()
    }

    /// The sizes the parquet crate itself reads from every page, as the reference.
    fn pages_seen_by_parquet(file: &[u8]) -> usize {
        let reader = SerializedFileReader::new(Bytes::from(file.to_vec())).unwrap();
        let mut pages = 0;
        for g in 0..reader.num_row_groups() {
            let group = reader.get_row_group(g).unwrap();
            for c in 0..group.num_columns() {
                let mut column = group.get_column_page_reader(c).unwrap();
                while column.get_next_page().unwrap().is_some() {
                    pages += 1;
                }
            }
        }
        pages
    }

    #[test]
    fn files_written_by_parquet_pass_whatever_their_codec() {
        for compression in [
            Compression::UNCOMPRESSED,
            Compression::SNAPPY,
            Compression::ZSTD(ZstdLevel::default()),
        ] {
            let bytes = file(1000, compression);
            assert!(pages_seen_by_parquet(&bytes) > 2);
            check(&bytes, &metadata(&bytes)).unwrap();
        }
    }

    #[test]
    fn a_page_claiming_gigabytes_is_refused_before_it_is_unpacked() {
        let bytes = file(10, Compression::SNAPPY);
        let metadata = metadata(&bytes);
        let start = metadata.row_group(0).column(0).byte_range().0 as usize;
        // The first page's header opens with field 1 (the page type), then field 2,
        // uncompressed_page_size: a compact-protocol i32 field (0x15) and its varint.
        let mut header = Compact::new(&bytes[start..]);
        assert_eq!(header.byte().unwrap(), 0x15);
        header.varint().unwrap();
        let field2 = start + header.at;
        assert_eq!(header.byte().unwrap(), 0x15);
        header.varint().unwrap();
        let after = start + header.at;
        // Declare 2^31 - 1 bytes instead (zigzag: 2^32 - 2).
        let mut tampered = bytes[..field2].to_vec();
        tampered.push(0x15);
        tampered.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0x0f]);
        tampered.extend_from_slice(&bytes[after..]);
        let message = check(&tampered, &metadata).unwrap_err();
        assert!(
            message.contains("would unpack to more than 67108864 bytes"),
            "{message}"
        );
    }

    #[test]
    fn footers_written_by_parquet_pass_and_a_list_of_two_billion_booleans_does_not() {
        let bytes = file(1000, Compression::SNAPPY);
        check_footer(&bytes).unwrap();
        // A footer of one field the format does not define, 10: a list (0xa9) of 2^31 - 1
        // booleans (0xf1, then the count), which parquet's decoder would skip.
        let mut spinning = b"PAR1".to_vec();
        let footer = [0xa9, 0xf1, 0xff, 0xff, 0xff, 0xff, 0x07, 0x00];
        spinning.extend_from_slice(&footer);
        spinning.extend_from_slice(&(footer.len() as u32).to_le_bytes());
        spinning.extend_from_slice(b"PAR1");
        let message = check_footer(&spinning).unwrap_err();
        assert!(message.contains("items in fewer bytes"), "{message}");
        // Not Parquet at all: Parquet's reader says so.
        check_footer(b"PAR1").unwrap();
        check_footer(b"id,ts\n1,2\n").unwrap();
    }

    /// A file with a column of each logical type, statistics, bloom filters, page indexes,
    /// sorting columns, key-value metadata and version 2 data pages: every field of the footer
    /// and the page headers that parquet writes arrives with the wire type it reads.
    #[test]
    fn files_with_every_kind_of_footer_field_pass() {
        use arrow::array::{
            ArrayRef, BooleanArray, Date32Array, Decimal128Array, Int8Array, ListArray,
            TimestampMicrosecondArray, UInt32Array,
        };
        use arrow::datatypes::{Int32Type, TimeUnit};
        use parquet::file::metadata::{KeyValue, SortingColumn};
        use parquet::file::properties::{EnabledStatistics, WriterVersion};

        let rows = 300;
        let columns: Vec<(&str, ArrayRef)> = vec![
            (
                "small",
                Arc::new(Int8Array::from_iter_values((0..rows).map(|i| i as i8))),
            ),
            (
                "count",
                Arc::new(UInt32Array::from_iter_values(0..rows as u32)),
            ),
            (
                "at",
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values((0..rows).map(i64::from))
                        .with_timezone("UTC"),
                ),
            ),
            ("day", Arc::new(Date32Array::from_iter_values(0..rows))),
            (
                "price",
                Arc::new(
                    Decimal128Array::from_iter_values((0..rows).map(i128::from))
                        .with_precision_and_scale(10, 2)
                        .unwrap(),
                ),
            ),
            (
                "flag",
                Arc::new(BooleanArray::from_iter((0..rows).map(|i| Some(i % 2 == 0)))),
            ),
            (
                "tags",
                Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(
                    (0..rows).map(|i| Some(vec![Some(i), None])),
                )),
            ),
            (
                "name",
                Arc::new(StringArray::from_iter_values(
                    (0..rows).map(|i| format!("n{i}")),
                )),
            ),
        ];
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .map(|(name, array)| Field::new(*name, array.data_type().clone(), true))
                .collect::<Vec<_>>(),
        ));
        assert!(matches!(
            schema.field_with_name("at").unwrap().data_type(),
            DataType::Timestamp(TimeUnit::Microsecond, Some(_))
        ));
        let batch = RecordBatch::try_new(
            schema.clone(),
            columns.into_iter().map(|(_, a)| a).collect(),
        )
        .unwrap();
        let properties = WriterProperties::builder()
            .set_writer_version(WriterVersion::PARQUET_2_0)
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_bloom_filter_enabled(true)
            .set_sorting_columns(Some(vec![SortingColumn {
                column_idx: 1,
                descending: false,
                nulls_first: true,
            }]))
            .set_key_value_metadata(Some(vec![KeyValue::new(
                "origin".into(),
                "test".to_string(),
            )]))
            .set_data_page_row_count_limit(100)
            .set_write_batch_size(100)
            .build();
        let mut bytes = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut bytes, schema, Some(properties)).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();

        check_footer(&bytes).unwrap();
        check(&bytes, &metadata(&bytes)).unwrap();
        assert!(pages_seen_by_parquet(&bytes) > 8);
    }

    #[test]
    fn a_field_sent_with_a_wire_type_parquet_does_not_read_it_as_is_refused() {
        let footer = |thrift: &[u8]| {
            let mut file = b"PAR1".to_vec();
            file.extend_from_slice(thrift);
            file.extend_from_slice(&(thrift.len() as u32).to_le_bytes());
            file.extend_from_slice(b"PAR1");
            check_footer(&file).unwrap_err()
        };
        // Field 1, `version`, sent as a list (0x19) of one i32 (0x15) instead of an i32.
        assert_eq!(
            footer(&[0x19, 0x15, 0x02, 0x00]),
            "its footer sends field 1 of FileMetaData as Thrift type 9, where Parquet reads \
             an integer"
        );
        // Field 2, `schema`, a list of i32s (0x15) instead of structures.
        assert_eq!(
            footer(&[0x29, 0x15, 0x02, 0x00]),
            "its footer holds a list of Thrift type 5 where Parquet reads SchemaElement"
        );
        // In a page header: field 2, `uncompressed_page_size`, sent as a string.
        let header = Compact::new(&[0x15, 0x00, 0x18, 0x01, 0x41, 0x15, 0x02, 0x00])
            .page_sizes()
            .unwrap_err();
        assert_eq!(
            header,
            "sends field 2 of PageHeader as Thrift type 8, where Parquet reads an integer"
        );
    }

    #[test]
    fn malformed_headers_and_ranges_are_refused() {
        let cut = Compact::new(&[0x15, 0x80]).page_sizes().unwrap_err();
        assert_eq!(cut, "is cut short");
        let negative = Compact::new(&[0x15, 0x02, 0x15, 0x01, 0x00])
            .page_sizes()
            .unwrap_err();
        assert_eq!(negative, "declares a size of -1");
        let missing = Compact::new(&[0x15, 0x02, 0x00]).page_sizes().unwrap_err();
        assert_eq!(missing, "lacks its sizes");
        // Field 9 (not in the format, so skipped): a list of 2^31 - 1 i32s.
        let huge_list = Compact::new(&[0x99, 0xf5, 0xff, 0xff, 0xff, 0x0f])
            .page_sizes()
            .unwrap_err();
        assert!(huge_list.contains("items in fewer bytes"), "{huge_list}");
        // Field 9 again, a structure whose field 1 is a structure, 40 deep.
        let mut deep = vec![0x9c];
        deep.extend([0x1c; 39]);
        deep.push(0);
        assert!(
            Compact::new(&deep)
                .page_sizes()
                .unwrap_err()
                .contains("nests")
        );

        let bytes = file(10, Compression::SNAPPY);
        let metadata = metadata(&bytes);
        let (start, len) = metadata.row_group(0).column(0).byte_range();
        let shorter = &bytes[..(start + len - 1) as usize];
        assert!(
            check(shorter, &metadata)
                .unwrap_err()
                .contains("outside the file")
        );
    }
}
