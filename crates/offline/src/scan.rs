//! Offline reads without a query engine: a table's files are chosen by their partition, read
//! with Parquet's async reader, filtered with one pass over three columns, and merged in
//! log-offset order.
//!
//! A read promises rows in log order, and a table's files do not come in it: one commit writes a
//! file per event date, so files interleave by offset, and a file compacted by another writer
//! (delta-rs's `OPTIMIZE`) concatenates sorted files. So each file is first read for its
//! `_offset` column alone and cut into *runs*, row ranges whose offsets rise; the runs are then
//! merged. A run is opened only when the merge reaches its first offset, so a table written in
//! log order (the materialiser's) holds only the runs that overlap open at once, one batch each.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray, Int64Array, RecordBatch};
use arrow::buffer::ScalarBuffer;
use arrow::compute::{filter_record_batch, interleave_record_batch};
use arrow::datatypes::{Int64Type, SchemaRef, TimestampMicrosecondType};
use bytes::Bytes;
use deltalake::kernel::LogicalFileView;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryFutureExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::{ArrowReaderOptions, RowSelection, RowSelector};
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStream};
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

use crate::layout::{EVENT_DATE, INGESTED_AT, MICROS_PER_DAY, OFFSET, conform};
use crate::{ReadFilter, Result};
use kairos_types::LogCut;

/// Rows a merged batch gathers before it is handed on.
const BATCH_ROWS: usize = 8192;

/// Files whose offsets are read at once when a read starts.
const CONCURRENT_OPENS: usize = 8;

/// One data file of a table, as the log lists it.
#[derive(Debug, Clone)]
pub(crate) struct DataFile {
    pub path: Path,
    pub size: u64,
    /// Days since the epoch of the file's `_event_date` partition, when it has one.
    pub event_date: Option<i32>,
}

impl DataFile {
    /// The file as the log lists it; one with a deletion vector (written by another engine's
    /// `DELETE`) is refused, since a read would return the rows it deletes.
    pub fn from_view(file: &LogicalFileView) -> Result<Self> {
        if file.deletion_vector_descriptor().is_some() {
            return Err(crate::OfflineError::Layout(format!(
                "data file {} has a deletion vector, which the offline store does not apply",
                file.path()
            )));
        }
        let event_date = file
            .partition_values_map()
            .get(EVENT_DATE)
            .cloned()
            .flatten()
            .and_then(|day| chrono::NaiveDate::parse_from_str(&day, "%Y-%m-%d").ok())
            .map(|day| (day - chrono::NaiveDate::default()).num_days() as i32);
        Ok(Self {
            path: file.object_store_path(),
            size: file.size().max(0) as u64,
            event_date,
        })
    }

    /// Whether the file's partition can hold rows `filter` keeps; a file without one can.
    fn may_match(&self, filter: &ReadFilter) -> bool {
        let Some(day) = self.event_date else {
            return true;
        };
        let day_of = |micros: i64| micros.div_euclid(MICROS_PER_DAY);
        filter
            .start
            .is_none_or(|start| i64::from(day) >= day_of(start))
            && filter.end.is_none_or(|end| i64::from(day) <= day_of(end))
    }
}

/// The rows a read keeps, judged on the stored columns.
#[derive(Debug, Clone)]
pub(crate) struct RowFilter {
    filter: ReadFilter,
    event_time: String,
}

impl RowFilter {
    /// Keeps the rows `filter` asks for, `event_time` naming the group's event-time column.
    pub fn new(filter: ReadFilter, event_time: &str) -> Self {
        Self {
            filter,
            event_time: event_time.to_string(),
        }
    }

    /// Keeps every row.
    pub fn everything() -> Self {
        Self::new(ReadFilter::default(), "")
    }

    fn apply(&self, batch: RecordBatch) -> Result<RecordBatch> {
        if self.filter == ReadFilter::default() {
            return Ok(batch);
        }
        let f = &self.filter;
        let micros = |name: &str| {
            batch.column_by_name(name).map(|a| {
                a.as_primitive::<TimestampMicrosecondType>()
                    .values()
                    .clone()
            })
        };
        let event_times = micros(&self.event_time).expect("conformed batch has its event time");
        let ingested = micros(INGESTED_AT).expect("conformed batch has _ingested_at");
        let offsets = offsets_of(&batch);
        let keep: BooleanArray = (0..batch.num_rows())
            .map(|row| {
                let t = event_times[row];
                Some(
                    f.start.is_none_or(|start| t >= start)
                        && f.end.is_none_or(|end| t < end)
                        && f.as_of.is_none_or(|as_of| ingested[row] <= as_of)
                        && f.before
                            .as_ref()
                            .is_none_or(|cut| cut.admits(offsets.value(row) as u64)),
                )
            })
            .collect();
        Ok(filter_record_batch(&batch, &keep)?)
    }
}

fn offsets_of(batch: &RecordBatch) -> &Int64Array {
    batch
        .column_by_name(OFFSET)
        .expect("conformed batch has _offset")
        .as_primitive::<Int64Type>()
}

/// Rows of one file whose offsets rise.
#[derive(Debug)]
struct Run {
    file: DataFile,
    rows: Range<usize>,
    first_offset: i64,
}

/// A run being merged: its reader and the rest of its current batch.
struct OpenRun {
    reader: ParquetRecordBatchStream<FileReader>,
    batch: RecordBatch,
    /// `batch`'s offsets, found once: the merge reads a head per run for every row.
    offsets: ScalarBuffer<i64>,
    cursor: usize,
    /// Where `batch` is among the merge's sources.
    source: usize,
}

impl OpenRun {
    fn head(&self) -> i64 {
        self.offsets[self.cursor]
    }
}

/// Reads files of one table and merges their rows in log-offset order.
pub(crate) struct OffsetMerge {
    store: Arc<dyn ObjectStore>,
    /// The stored columns a read returns, in the order it returns them.
    schema: SchemaRef,
    rows: RowFilter,
    /// Runs not opened yet, by first offset.
    pending: VecDeque<Run>,
    open: Vec<OpenRun>,
    /// The batches the picks point into: the open runs' current ones, and those used up
    /// since the last batch went out.
    sources: Vec<RecordBatch>,
    /// The rows merged so far, in order, as (source, row): gathered in one pass per batch
    /// handed on, since runs that interleave row by row (a commit's files, one per event
    /// date) would otherwise cost a slice per row.
    picks: Vec<(usize, usize)>,
}

impl OffsetMerge {
    /// Plans a read of `files`: partitions pruned, each remaining file cut into runs.
    /// `schema` is the stored schema a read returns (every column the filter needs in it).
    pub async fn new(
        store: Arc<dyn ObjectStore>,
        files: Vec<DataFile>,
        schema: SchemaRef,
        rows: RowFilter,
    ) -> Result<Self> {
        let filter = &rows.filter;
        let bound = filter.before.as_ref().map(LogCut::bound);
        let files = files.into_iter().filter(|f| f.may_match(filter));
        let runs: Vec<Vec<Run>> = futures::stream::iter(files)
            .map(|file| runs_of(store.clone(), file, bound))
            .buffer_unordered(CONCURRENT_OPENS)
            .try_collect()
            .await?;
        let mut pending: Vec<Run> = runs.into_iter().flatten().collect();
        pending.sort_by_key(|run| run.first_offset);
        Ok(Self {
            store,
            schema,
            rows,
            pending: pending.into(),
            open: Vec::new(),
            sources: Vec::new(),
            picks: Vec::with_capacity(BATCH_ROWS),
        })
    }

    /// The next batch in offset order, in the stored schema; `None` at the end.
    pub async fn next(&mut self) -> Option<Result<RecordBatch>> {
        self.step().await.transpose()
    }

    async fn step(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            if self.picks.len() >= BATCH_ROWS {
                return self.emit().map(Some);
            }
            let next_pending = self.pending.front().map(|run| run.first_offset);
            // The open run with the smallest head, and the smallest head of the others: one
            // pass, since this runs once per row where runs interleave row by row.
            let (mut smallest, mut others) = (None, i64::MAX);
            for (i, open) in self.open.iter().enumerate() {
                let head = open.head();
                match smallest {
                    Some((_, least)) if head >= least => others = others.min(head),
                    Some((_, least)) => {
                        others = least;
                        smallest = Some((i, head));
                    }
                    None => smallest = Some((i, head)),
                }
            }
            let Some((run, _)) =
                smallest.filter(|&(_, head)| next_pending.is_none_or(|p| head < p))
            else {
                // Either nothing is open or a run not opened yet comes first.
                match self.pending.pop_front() {
                    Some(run) => {
                        if let Some(mut open) =
                            open_run(&self.store, &self.schema, &self.rows, run).await?
                        {
                            open.source = self.sources.len();
                            self.sources.push(open.batch.clone());
                            self.open.push(open);
                        }
                        continue;
                    }
                    None if self.picks.is_empty() => return Ok(None),
                    None => return self.emit().map(Some),
                }
            };
            // Everything below the next head of any other run goes out at once.
            let bound = next_pending.map_or(others, |p| p.min(others));
            let open = &mut self.open[run];
            let rest = &open.offsets[open.cursor..];
            let take = rest.partition_point(|&o| o < bound).max(1);
            let source = open.source;
            self.picks
                .extend((open.cursor..open.cursor + take).map(|row| (source, row)));
            open.cursor += take;
            if open.cursor == open.batch.num_rows() && !self.refill(run).await? {
                self.open.swap_remove(run);
            }
        }
    }

    fn emit(&mut self) -> Result<RecordBatch> {
        let sources: Vec<&RecordBatch> = self.sources.iter().collect();
        let batch = interleave_record_batch(&sources, &self.picks)?;
        self.picks.clear();
        // Only the open runs' batches are picked from again.
        self.sources.clear();
        for open in &mut self.open {
            open.source = self.sources.len();
            self.sources.push(open.batch.clone());
        }
        Ok(batch)
    }

    /// Moves run `i` to its next batch with kept rows; false when it has none left.
    async fn refill(&mut self, i: usize) -> Result<bool> {
        let open = &mut self.open[i];
        let refilled = next_kept(open, &self.schema, &self.rows).await?;
        if refilled {
            open.source = self.sources.len();
            self.sources.push(open.batch.clone());
        }
        Ok(refilled)
    }
}

/// Opens a run at its first kept row; `None` when the filter keeps none of it.
async fn open_run(
    store: &Arc<dyn ObjectStore>,
    schema: &SchemaRef,
    rows: &RowFilter,
    run: Run,
) -> Result<Option<OpenRun>> {
    let reader = FileReader::new(store.clone(), &run.file);
    let builder = ParquetRecordBatchStreamBuilder::new(reader).await?;
    let wanted: Vec<usize> = builder
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| schema.field_with_name(f.name()).is_ok())
        .map(|(i, _)| i)
        .collect();
    let projection = ProjectionMask::roots(builder.parquet_schema(), wanted);
    let selection = RowSelection::from(vec![
        RowSelector::skip(run.rows.start),
        RowSelector::select(run.rows.len()),
    ]);
    let reader = builder
        .with_projection(projection)
        .with_row_selection(selection)
        .with_batch_size(BATCH_ROWS)
        .build()?;
    let mut open = OpenRun {
        reader,
        batch: RecordBatch::new_empty(schema.clone()),
        offsets: ScalarBuffer::from(Vec::new()),
        cursor: 0,
        source: usize::MAX,
    };
    Ok(next_kept(&mut open, schema, rows).await?.then_some(open))
}

/// Reads `open`'s next batch with rows the filter keeps, conformed to `schema`.
async fn next_kept(open: &mut OpenRun, schema: &SchemaRef, rows: &RowFilter) -> Result<bool> {
    while let Some(batch) = open.reader.next().await {
        let batch = rows.apply(conform(schema, &batch?)?)?;
        if batch.num_rows() > 0 {
            open.offsets = offsets_of(&batch).values().clone();
            open.batch = batch;
            open.cursor = 0;
            return Ok(true);
        }
    }
    Ok(false)
}

/// Reads one file's offsets and cuts it into runs, leaving out those that start at or past
/// `bound` (a cut's, [`LogCut::bound`]: nothing from there on is read).
async fn runs_of(
    store: Arc<dyn ObjectStore>,
    file: DataFile,
    bound: Option<u64>,
) -> Result<Vec<Run>> {
    let reader = FileReader::new(store, &file);
    let builder = ParquetRecordBatchStreamBuilder::new(reader).await?;
    let Some((index, _)) = builder.schema().column_with_name(OFFSET) else {
        return Err(crate::OfflineError::Layout(format!(
            "data file {} has no {OFFSET} column",
            file.path
        )));
    };
    let projection = ProjectionMask::roots(builder.parquet_schema(), [index]);
    let batches: Vec<RecordBatch> = builder
        .with_projection(projection)
        .build()?
        .try_collect()
        .await?;
    let mut runs = Vec::new();
    let mut row = 0;
    let mut start = 0;
    let mut previous: Option<i64> = None;
    let mut first = 0;
    for batch in &batches {
        let offsets = batch.column(0).as_primitive::<Int64Type>();
        if offsets.null_count() > 0 {
            return Err(crate::OfflineError::Layout(format!(
                "data file {} has rows without an offset",
                file.path
            )));
        }
        for &offset in offsets.values() {
            match previous {
                Some(p) if offset > p => {}
                Some(_) => {
                    runs.push((start..row, first));
                    start = row;
                    first = offset;
                }
                None => first = offset,
            }
            previous = Some(offset);
            row += 1;
        }
    }
    if row > start {
        runs.push((start..row, first));
    }
    Ok(runs
        .into_iter()
        .filter(|(_, first)| bound.is_none_or(|b| *first < b as i64))
        .map(|(rows, first_offset)| Run {
            file: file.clone(),
            rows,
            first_offset,
        })
        .collect())
}

/// One data file read through the table's object store, its size known from the log (so the
/// footer takes one request).
struct FileReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
}

impl FileReader {
    fn new(store: Arc<dyn ObjectStore>, file: &DataFile) -> Self {
        Self {
            store,
            path: file.path.clone(),
            size: file.size,
        }
    }
}

fn storage_error(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for FileReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        self.store
            .get_range(&self.path, range)
            .map_err(storage_error)
            .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(storage_error)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}
