//! A Parquet file's Thrift structures — its footer and its page headers — read before Parquet's
//! reader gets to them (the `ingest_parquet` fuzz target found files of a few kilobytes that
//! took that reader seconds or gigabytes):
//!
//! - The footer's decoder skips a boolean in a list without reading its byte, so lists that
//!   declare billions of them, or nest many deep, spin for seconds on a few bytes.
//!   [`check_footer`] walks the footer first the way that decoder would, and refuses it when
//!   the walk takes more steps than its bytes could justify.
//! - The page reader believes each page header's `uncompressed_page_size`, and allocates and
//!   zero-fills that much before it decompresses the page (up to 2 GiB a page). [`check`] reads
//!   the two sizes from each header and holds the file to a budget before any page is unpacked.
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
        .skip(ty::STRUCT, 0)
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

    /// `PageHeader`'s fields 2 (`uncompressed_page_size`) and 3 (`compressed_page_size`).
    fn page_sizes(&mut self) -> Result<PageSizes, String> {
        let (mut uncompressed, mut compressed) = (None, None);
        let mut field: i64 = 0;
        loop {
            let header = self.byte()?;
            let kind = header & 0x0f;
            if kind == ty::STOP {
                break;
            }
            field = match header >> 4 {
                0 => zigzag(self.varint()?),
                delta => field + i64::from(delta),
            };
            match (field, kind) {
                (2, ty::I32) => uncompressed = Some(self.size()?),
                (3, ty::I32) => compressed = Some(self.size()?),
                _ => self.skip(kind, 0)?,
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

    /// A page size: a non-negative i32.
    fn size(&mut self) -> Result<usize, String> {
        let value = zigzag(self.varint()?);
        i32::try_from(value)
            .ok()
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| format!("declares a size of {value}"))
    }

    fn skip(&mut self, kind: u8, depth: usize) -> Result<(), String> {
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
                let header = self.byte()?;
                let items = match header >> 4 {
                    15 => self.varint()?,
                    n => u64::from(n),
                };
                self.items(items)?;
                // A boolean item has a byte of its own in the compact protocol, which
                // parquet's reader skips without reading: walked as it does, so both read the
                // same bytes, and counted as a step.
                for _ in 0..items {
                    self.skip(header & 0x0f, depth + 1)?;
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
        // A footer of one field: 1, a list (0x19) of 2^31 - 1 booleans (0xf1, then the count).
        let mut spinning = b"PAR1".to_vec();
        let footer = [0x19, 0xf1, 0xff, 0xff, 0xff, 0xff, 0x07, 0x00];
        spinning.extend_from_slice(&footer);
        spinning.extend_from_slice(&(footer.len() as u32).to_le_bytes());
        spinning.extend_from_slice(b"PAR1");
        let message = check_footer(&spinning).unwrap_err();
        assert!(message.contains("items in fewer bytes"), "{message}");
        // Not Parquet at all: Parquet's reader says so.
        check_footer(b"PAR1").unwrap();
        check_footer(b"id,ts\n1,2\n").unwrap();
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
        let huge_list = Compact::new(&[0x59, 0xf5, 0xff, 0xff, 0xff, 0x0f])
            .page_sizes()
            .unwrap_err();
        assert!(huge_list.contains("items in fewer bytes"), "{huge_list}");
        let mut deep = vec![0x1c; 40];
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
