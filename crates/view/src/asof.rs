//! The point-in-time join (DESIGN invariant 3): a sort-merge ASOF join over Arrow record batches
//! that stays within a memory budget.
//!
//! For every left row (keys, time t) and every right input, it finds the right row of the same
//! key with the greatest event time ≤ t (or < t when `strict`); among rows with equal event time
//! the one with the greatest log offset wins, exactly as in the online store. Options: a
//! per-input `lookback` (the match must be at most that old), a per-input `latest` (the key's
//! latest row whatever t: for labels, which arrive after their event), and `as_known_at` (only
//! right rows whose `_ingested_at` ≤ t: what the store knew at t, so late or backfilled values
//! never leak).
//!
//! How: inputs are pushed batch by batch (left first, so right rows later than every left row are
//! dropped on arrival), projected to the columns the join needs. While they fit in the memory
//! budget they stay in memory; past it, every input is hash-partitioned on the join key into
//! spill files, and the join runs one partition at a time. Within a partition both sides become
//! compact `(key, time, tie-break, row)` tuples, put in order by a counting sort into hash
//! buckets of a few thousand rows and a small in-cache sort per bucket; equal keys share a
//! bucket, so one merge pass per bucket finds every match. Each right input is bucketed by all
//! threads (a share of its batches each), then merged by all threads (a share of its buckets
//! each); the features of the matched rows are gathered from the input batches with one
//! `interleave` per column. Keys of one integer column are
//! compared as integers; any other key (several columns, strings) is dictionary-encoded through
//! Arrow's row format first.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, UInt32Array};
use arrow::compute::{cast, concat_batches, filter_record_batch, take_record_batch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::row::{RowConverter, SortField};

use crate::{Result, ViewError};

/// One right-hand input of a join stage.
#[derive(Debug, Clone)]
pub struct RightInput {
    /// The right key columns, aligned with the stage's `left_keys`.
    pub keys: Vec<String>,
    /// The event-time column (timestamp, µs).
    pub time: String,
    /// The ingestion-time column, needed when `as_known_at` is on.
    pub ingested_at: Option<String>,
    /// A tie-break for equal event times (the log offset); the later row wins. Without one,
    /// the later row in input order wins.
    pub tie_break: Option<String>,
    /// `(right column, output column)` pairs.
    pub features: Vec<(String, String)>,
    /// The match must satisfy time ≥ t − lookback (µs).
    pub lookback: Option<i64>,
    /// Match the key's latest row whatever the left row's time: what is known when the join
    /// runs, not when the left row happened. Labels are joined so, since they arrive after
    /// the event they describe.
    pub latest: bool,
}

/// A join of one left input with right inputs that share its key columns.
#[derive(Debug, Clone)]
pub struct AsofStage {
    pub left_keys: Vec<String>,
    /// The left time column (timestamp, µs).
    pub left_time: String,
    pub rights: Vec<RightInput>,
}

#[derive(Debug, Clone)]
pub struct AsofOptions {
    /// Right rows must be strictly older than the left row.
    pub strict: bool,
    /// Right rows must have been ingested at or before the left row's time.
    pub as_known_at: bool,
    /// Buffered input beyond this many bytes goes to spill files.
    pub memory_budget: usize,
    /// How many partitions spilling splits the inputs into.
    pub spill_partitions: usize,
    /// Where spill files go (a temporary folder is made inside).
    pub spill_dir: PathBuf,
    /// Threads that bucket and merge each right input of a partition.
    pub threads: usize,
}

impl Default for AsofOptions {
    fn default() -> Self {
        Self {
            strict: false,
            as_known_at: false,
            memory_budget: 1 << 30,
            spill_partitions: 64,
            spill_dir: std::env::temp_dir(),
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

/// How keys become comparable integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyMode {
    /// One integer-like column, compared as i64.
    Integer,
    /// Anything else, dictionary-encoded through the row format.
    Rows,
}

const LEFT: usize = 0;

/// A running join: push the left input first, then the right inputs, then [`AsofJoin::finish`].
pub struct AsofJoin {
    joiner: Joiner,
    left_max_time: Option<i64>,
    buffers: Buffers,
    rows_in: Vec<u64>,
}

impl std::fmt::Debug for AsofJoin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsofJoin")
            .field("stage", &self.joiner.stage)
            .field("rows_in", &self.rows_in)
            .finish()
    }
}

enum Buffers {
    Memory {
        inputs: Vec<Vec<RecordBatch>>,
        bytes: usize,
    },
    Spilled(Spill),
}

struct Spill {
    dir: tempfile::TempDir,
    /// `[input][partition]`; opened lazily.
    writers: Vec<Vec<Option<StreamWriter<BufWriter<File>>>>>,
}

fn field<'a>(schema: &'a Schema, name: &str, what: &str) -> Result<&'a Field> {
    schema
        .field_with_name(name)
        .map_err(|_| ViewError::Join(format!("{what} column '{name}' is missing from the input")))
}

fn is_timestamp(ty: &DataType) -> bool {
    matches!(ty, DataType::Timestamp(TimeUnit::Microsecond, _))
}

impl AsofJoin {
    /// Plans a join of a left input with `left_schema` and right inputs with `right_schemas`.
    pub fn new(
        stage: AsofStage,
        left_schema: &Schema,
        right_schemas: &[SchemaRef],
        options: AsofOptions,
    ) -> Result<AsofJoin> {
        if right_schemas.len() != stage.rights.len() {
            return Err(ViewError::Join(
                "one schema per right input is needed".into(),
            ));
        }
        if !is_timestamp(field(left_schema, &stage.left_time, "left time")?.data_type()) {
            return Err(ViewError::Join(format!(
                "left time column '{}' must be a timestamp",
                stage.left_time
            )));
        }
        let key_types: Vec<DataType> = stage
            .left_keys
            .iter()
            .map(|k| Ok(field(left_schema, k, "left key")?.data_type().clone()))
            .collect::<Result<_>>()?;
        let mut schemas = vec![Arc::new(left_schema.clone())];
        let mut output_fields: Vec<Field> = left_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        for (right, schema) in stage.rights.iter().zip(right_schemas) {
            if right.keys.len() != key_types.len() {
                return Err(ViewError::Join(format!(
                    "right input keyed by ({}) does not match the left keys ({})",
                    right.keys.join(", "),
                    stage.left_keys.join(", ")
                )));
            }
            let mut projected = Vec::new();
            for (key, left_ty) in right.keys.iter().zip(&key_types) {
                let f = field(schema, key, "right key")?;
                if f.data_type() != left_ty {
                    return Err(ViewError::Join(format!(
                        "key column '{key}' has type {}, but the left key has type {left_ty}",
                        f.data_type()
                    )));
                }
                projected.push(f.clone());
            }
            let time = field(schema, &right.time, "right time")?;
            if !is_timestamp(time.data_type()) {
                return Err(ViewError::Join(format!(
                    "right time column '{}' must be a timestamp",
                    right.time
                )));
            }
            projected.push(time.clone());
            if options.as_known_at {
                let name = right.ingested_at.as_deref().ok_or_else(|| {
                    ViewError::Join("as-known-at needs an ingestion-time column".into())
                })?;
                projected.push(field(schema, name, "ingestion time")?.clone());
            }
            if let Some(tie) = &right.tie_break {
                projected.push(field(schema, tie, "tie-break")?.clone());
            }
            for (source, output) in &right.features {
                let f = field(schema, source, "feature")?;
                if !projected.iter().any(|p| p.name() == source) {
                    projected.push(f.clone());
                }
                output_fields.push(Field::new(output, f.data_type().clone(), true));
            }
            schemas.push(Arc::new(Schema::new(projected)));
        }
        let key_mode = if key_types.len() == 1
            && matches!(
                key_types[0],
                DataType::Int8
                    | DataType::Int16
                    | DataType::Int32
                    | DataType::Int64
                    | DataType::UInt8
                    | DataType::UInt16
                    | DataType::UInt32
                    | DataType::Date32
                    | DataType::Timestamp(_, _)
            ) {
            KeyMode::Integer
        } else {
            KeyMode::Rows
        };
        let inputs = schemas.len();
        Ok(AsofJoin {
            joiner: Joiner {
                key_fields: key_types.into_iter().map(SortField::new).collect(),
                key_mode,
                output_schema: Arc::new(Schema::new(output_fields)),
                schemas,
                options,
                stage,
            },
            left_max_time: None,
            buffers: Buffers::Memory {
                inputs: vec![Vec::new(); inputs],
                bytes: 0,
            },
            rows_in: vec![0; inputs],
        })
    }

    /// The schema of the joined rows: the left columns, then each right input's features
    /// (nullable: a left row may have no match).
    pub fn output_schema(&self) -> SchemaRef {
        self.joiner.output_schema.clone()
    }

    /// The greatest left time pushed so far: right rows after it are never needed.
    pub fn left_max_time(&self) -> Option<i64> {
        self.left_max_time
    }

    /// Adds left rows. All left rows come before any right rows.
    pub fn push_left(&mut self, batch: RecordBatch) -> Result<()> {
        if self.rows_in[1..].iter().any(|n| *n > 0) {
            return Err(ViewError::Join(
                "left rows must be pushed before right rows".into(),
            ));
        }
        let times = batch
            .column_by_name(&self.joiner.stage.left_time)
            .ok_or_else(|| {
                ViewError::Join(format!(
                    "left batch has no '{}'",
                    self.joiner.stage.left_time
                ))
            })?;
        let batch_max =
            arrow::compute::max(times.as_primitive::<arrow::datatypes::TimestampMicrosecondType>());
        self.left_max_time = self.left_max_time.max(batch_max);
        self.push(LEFT, batch)
    }

    /// Adds rows of right input `input`.
    pub fn push_right(&mut self, input: usize, batch: RecordBatch) -> Result<()> {
        let schema = self
            .joiner
            .schemas
            .get(input + 1)
            .ok_or_else(|| ViewError::Join(format!("there is no right input {input}")))?;
        let columns = schema
            .fields()
            .iter()
            .map(|f| {
                batch.column_by_name(f.name()).cloned().ok_or_else(|| {
                    ViewError::Join(format!("right batch has no column '{}'", f.name()))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut batch = RecordBatch::try_new(schema.clone(), columns)?;
        // A right row newer than every left row can never be chosen (unless the latest is).
        let right = &self.joiner.stage.rights[input];
        if right.latest {
            return self.push(input + 1, batch);
        }
        let time = right.time.clone();
        let times = batch.column_by_name(&time).expect("projected").clone();
        let times = times.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        let limit = self.left_max_time.unwrap_or(i64::MIN);
        if arrow::compute::max(times).is_some_and(|max| max > limit) {
            let keep: arrow::array::BooleanArray = times
                .iter()
                .map(|t| Some(t.is_some_and(|t| t <= limit)))
                .collect();
            batch = filter_record_batch(&batch, &keep)?;
        }
        self.push(input + 1, batch)
    }

    fn push(&mut self, input: usize, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.rows_in[input] += batch.num_rows() as u64;
        match &mut self.buffers {
            Buffers::Memory { inputs, bytes } => {
                *bytes += batch.get_array_memory_size();
                inputs[input].push(batch);
                if *bytes > self.joiner.options.memory_budget {
                    self.spill()?;
                }
                Ok(())
            }
            Buffers::Spilled(_) => self.write_partitioned(input, &batch),
        }
    }

    /// Moves everything buffered into partitioned spill files; later pushes go there directly.
    fn spill(&mut self) -> Result<()> {
        let dir = tempfile::Builder::new()
            .prefix("kairos-asof-")
            .tempdir_in(&self.joiner.options.spill_dir)
            .map_err(|e| ViewError::Io(format!("cannot make a spill folder: {e}")))?;
        let partitions = self.joiner.options.spill_partitions.max(1);
        let writers = (0..self.joiner.schemas.len())
            .map(|_| (0..partitions).map(|_| None).collect())
            .collect();
        let old = std::mem::replace(&mut self.buffers, Buffers::Spilled(Spill { dir, writers }));
        if let Buffers::Memory { inputs, .. } = old {
            for (input, batches) in inputs.into_iter().enumerate() {
                for batch in batches {
                    self.write_partitioned(input, &batch)?;
                }
            }
        }
        Ok(())
    }

    fn key_columns(&self, input: usize, batch: &RecordBatch) -> Vec<ArrayRef> {
        let names = if input == LEFT {
            &self.joiner.stage.left_keys
        } else {
            &self.joiner.stage.rights[input - 1].keys
        };
        names
            .iter()
            .map(|k| batch.column_by_name(k).expect("key column checked").clone())
            .collect()
    }

    fn write_partitioned(&mut self, input: usize, batch: &RecordBatch) -> Result<()> {
        let keys = self.key_columns(input, batch);
        let hashes = hash_keys(self.joiner.key_mode, &self.joiner.key_fields, &keys)?;
        let Buffers::Spilled(spill) = &mut self.buffers else {
            unreachable!("only called once spilled");
        };
        let partitions = spill.writers[input].len() as u64;
        let mut rows: Vec<Vec<u32>> = vec![Vec::new(); partitions as usize];
        for (row, h) in hashes.iter().enumerate() {
            rows[(h % partitions) as usize].push(row as u32);
        }
        for (p, indices) in rows.into_iter().enumerate() {
            if indices.is_empty() {
                continue;
            }
            let part = take_record_batch(batch, &UInt32Array::from(indices))?;
            let writer = &mut spill.writers[input][p];
            if writer.is_none() {
                let path = spill.dir.path().join(format!("{input}-{p}.arrows"));
                let file = File::create(&path)
                    .map_err(|e| ViewError::Io(format!("cannot write {}: {e}", path.display())))?;
                *writer = Some(StreamWriter::try_new(
                    BufWriter::new(file),
                    &self.joiner.schemas[input],
                )?);
            }
            writer.as_mut().expect("opened").write(&part)?;
        }
        Ok(())
    }

    /// Whether the inputs went to spill files.
    pub fn spilled(&self) -> bool {
        matches!(self.buffers, Buffers::Spilled(_))
    }

    /// Runs the join; the output comes one partition at a time, in the output schema. Without
    /// spilling there is one partition and left rows keep their input order.
    pub fn finish(self) -> Result<AsofOutput> {
        let state = match self.buffers {
            Buffers::Memory { inputs, .. } => OutputState::Memory(Some(inputs)),
            Buffers::Spilled(mut spill) => {
                for writers in &mut spill.writers {
                    for writer in writers.iter_mut().flatten() {
                        writer.finish()?;
                    }
                }
                let partitions = spill.writers[0].len();
                OutputState::Spilled {
                    dir: spill.dir,
                    next: 0,
                    partitions,
                }
            }
        };
        Ok(AsofOutput {
            joiner: self.joiner,
            state,
        })
    }
}

enum OutputState {
    Memory(Option<Vec<Vec<RecordBatch>>>),
    Spilled {
        dir: tempfile::TempDir,
        next: usize,
        partitions: usize,
    },
}

/// The joined rows, a partition at a time.
pub struct AsofOutput {
    joiner: Joiner,
    state: OutputState,
}

impl std::fmt::Debug for AsofOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsofOutput").finish()
    }
}

impl AsofOutput {
    pub fn schema(&self) -> SchemaRef {
        self.joiner.output_schema.clone()
    }
}

impl Iterator for AsofOutput {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        let inputs = match &mut self.state {
            OutputState::Memory(inputs) => inputs.take()?,
            OutputState::Spilled {
                dir,
                next,
                partitions,
            } => loop {
                if *next >= *partitions {
                    return None;
                }
                let p = *next;
                *next += 1;
                match read_partition(dir.path(), p, &self.joiner.schemas) {
                    Ok(inputs) if inputs[LEFT].is_empty() => continue,
                    Ok(inputs) => break inputs,
                    Err(e) => return Some(Err(e)),
                }
            },
        };
        Some(self.joiner.join(inputs))
    }
}

fn read_partition(
    dir: &std::path::Path,
    p: usize,
    schemas: &[SchemaRef],
) -> Result<Vec<Vec<RecordBatch>>> {
    (0..schemas.len())
        .map(|input| {
            let path = dir.join(format!("{input}-{p}.arrows"));
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => {
                    return Err(ViewError::Io(format!(
                        "cannot read {}: {e}",
                        path.display()
                    )));
                }
            };
            let batches = StreamReader::try_new(BufReader::new(file), None)?
                .collect::<std::result::Result<Vec<_>, _>>()?;
            // The file is read whole; its disk space is not needed any more.
            let _ = std::fs::remove_file(&path);
            Ok(batches)
        })
        .collect()
}

/// What a join is: its stage, options, key encoding and the projected schemas (left, then
/// each right input).
struct Joiner {
    stage: AsofStage,
    options: AsofOptions,
    key_mode: KeyMode,
    key_fields: Vec<SortField>,
    schemas: Vec<SchemaRef>,
    output_schema: SchemaRef,
}

/// `(left row, right row)` pairs of one part of a join.
type Matches = Vec<(u32, u32)>;

/// A row of one side as a sortable tuple: `(key, (time, tie-break, row))`.
type Tuple = (i64, (i64, i64, u32));

/// Hash buckets for the counting sort of both sides of a join.
#[derive(Debug, Clone, Copy)]
struct Buckets {
    bits: u32,
}

impl Buckets {
    /// About 2,048 right rows a bucket: few enough write heads for the scatter to stay in
    /// cache, and a bucket small enough to sort in cache.
    fn for_rows(rows: usize) -> Buckets {
        let bits = (rows / 2048)
            .max(1)
            .next_power_of_two()
            .trailing_zeros()
            .min(24);
        Buckets { bits }
    }

    fn count(self) -> usize {
        1 << self.bits
    }

    fn of(self, key: i64) -> usize {
        if self.bits == 0 {
            0
        } else {
            (mix(key as u64) >> (64 - self.bits)) as usize
        }
    }

    /// The tuples `rows` gives, grouped by bucket (unordered within one), and where each bucket
    /// starts (one more entry than buckets).
    fn scatter(self, rows: impl Fn(&mut dyn FnMut(Tuple))) -> (Vec<Tuple>, Vec<usize>) {
        let mut starts = vec![0usize; self.count() + 1];
        rows(&mut |(key, _)| starts[self.of(key) + 1] += 1);
        for b in 0..self.count() {
            starts[b + 1] += starts[b];
        }
        let mut grouped = vec![(0, (0, 0, 0)); starts[self.count()]];
        let mut next = starts.clone();
        rows(&mut |t| {
            let b = self.of(t.0);
            grouped[next[b]] = t;
            next[b] += 1;
        });
        (grouped, starts)
    }

    /// As [`Self::scatter`], with every bucket sorted.
    fn sort(self, rows: impl Fn(&mut dyn FnMut(Tuple))) -> (Vec<Tuple>, Vec<usize>) {
        let (mut sorted, starts) = self.scatter(rows);
        for b in 0..self.count() {
            sorted[starts[b]..starts[b + 1]].sort_unstable();
        }
        (sorted, starts)
    }
}

/// Tuples grouped by bucket, with where each bucket starts.
type Bucketed = (Vec<Tuple>, Vec<usize>);

/// One right input of a partition, batch by batch, with its keys encoded to match the left's.
struct RightSide<'a> {
    input: &'a RightInput,
    schema: SchemaRef,
    batches: &'a [RecordBatch],
    /// Where each batch starts in the input's row numbering, and the total at the end.
    offsets: Vec<usize>,
    codes: Vec<Int64Array>,
    times: Vec<Int64Array>,
    ties: Option<Vec<Int64Array>>,
    ingested: Option<Vec<Int64Array>>,
    /// The left rows' key codes for this input.
    left_codes: Int64Array,
}

impl RightSide<'_> {
    /// Calls `f` with the tuple of every row of `batches` that can match (key and time not null).
    fn tuples(&self, batches: std::ops::Range<usize>, f: &mut dyn FnMut(Tuple)) {
        for b in batches {
            let (codes, times, base) = (&self.codes[b], &self.times[b], self.offsets[b]);
            let ties = self.ties.as_ref().map(|t| &t[b]);
            let dense = codes.null_count() == 0
                && times.null_count() == 0
                && ties.is_none_or(|t| t.null_count() == 0);
            if dense {
                // The common case, without a validity check per value.
                let (codes, times) = (codes.values(), times.values());
                for r in 0..codes.len() {
                    let row = base + r;
                    let tie = ties.map_or(row as i64, |t| t.values()[r]);
                    f((codes[r], (times[r], tie, row as u32)));
                }
            } else {
                for r in 0..codes.len() {
                    let row = base + r;
                    let tie = match ties {
                        None => Some(row as i64),
                        Some(t) => at(t, r),
                    };
                    if let (Some(key), Some(time), Some(tie)) = (at(codes, r), at(times, r), tie) {
                        f((key, (time, tie, row as u32)));
                    }
                }
            }
        }
    }

    /// When row `row` (in the input's numbering) was ingested.
    fn ingested_at(&self, row: usize) -> Option<i64> {
        let ingested = self.ingested.as_ref()?;
        let b = self.offsets.partition_point(|o| *o <= row) - 1;
        at(&ingested[b], row - self.offsets[b])
    }
}

impl Joiner {
    fn join(&self, inputs: Vec<Vec<RecordBatch>>) -> Result<RecordBatch> {
        let left = concat_batches(&self.schemas[LEFT], &inputs[LEFT])?;
        let left_keys: Vec<ArrayRef> = self
            .stage
            .left_keys
            .iter()
            .map(|k| left.column_by_name(k).expect("checked").clone())
            .collect();
        let left_times = i64_column(left.column_by_name(&self.stage.left_time).expect("checked"))?;
        let sides = self
            .stage
            .rights
            .iter()
            .zip(&inputs[1..])
            .zip(&self.schemas[1..])
            .map(|((right, batches), schema)| {
                self.prepare(right, schema.clone(), batches, &left_keys)
            })
            .collect::<Result<Vec<_>>>()?;

        // Both sides are put in (key hash bucket, key, time, …) order: a counting sort into
        // buckets, then a small sort per bucket. Equal keys share a bucket, so merging bucket by
        // bucket is the sort-merge, with cache-sized sorts. Each right input is bucketed by all
        // threads (a share of its batches each), then merged by all threads (a share of the
        // buckets each), so every core works whatever the number of inputs.
        let threads = self.options.threads.max(1);
        let share = |n: usize, t: usize| n * t / threads..n * (t + 1) / threads;
        let mut matches: Vec<Vec<Option<u32>>> = vec![vec![None; left.num_rows()]; sides.len()];
        for (side, matches) in sides.iter().zip(&mut matches) {
            let buckets = Buckets::for_rows(*side.offsets.last().expect("offsets"));
            let pieces: Vec<Bucketed> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..threads)
                    .map(|t| {
                        let batches = share(side.batches.len(), t);
                        scope.spawn(move || buckets.scatter(|f| side.tuples(batches.clone(), f)))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("bucketing thread"))
                    .collect()
            });
            let left_codes = &side.left_codes;
            let latest = side.input.latest;
            let lefts = buckets.sort(|f| {
                for l in 0..left_times.len() {
                    if let (Some(key), Some(t)) = (at(left_codes, l), at(&left_times, l)) {
                        let t = if latest { i64::MAX } else { t };
                        f((key, (t, 0, l as u32)));
                    }
                }
            });
            let found: Vec<Matches> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..threads)
                    .map(|t| {
                        let (pieces, lefts) = (&pieces, &lefts);
                        let range = share(buckets.count(), t);
                        scope.spawn(move || self.merge(side, pieces, lefts, range))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("merging thread"))
                    .collect()
            });
            for (l, r) in found.into_iter().flatten() {
                matches[l as usize] = Some(r);
            }
        }
        let mut columns: Vec<ArrayRef> = left.columns().to_vec();
        for (side, matches) in sides.iter().zip(matches) {
            columns.extend(gather(side, &matches)?);
        }
        Ok(RecordBatch::try_new(self.output_schema.clone(), columns)?)
    }

    /// Reads one right input's join columns and encodes its keys and the left's alike.
    fn prepare<'a>(
        &self,
        input: &'a RightInput,
        schema: SchemaRef,
        batches: &'a [RecordBatch],
        left_keys: &[ArrayRef],
    ) -> Result<RightSide<'a>> {
        let column =
            |b: &RecordBatch, name: &str| b.column_by_name(name).expect("projected").clone();
        let ints = |name: &str| -> Result<Vec<Int64Array>> {
            batches
                .iter()
                .map(|b| i64_column(&column(b, name)))
                .collect()
        };
        let mut offsets = Vec::with_capacity(batches.len() + 1);
        let mut total = 0;
        for b in batches {
            offsets.push(total);
            total += b.num_rows();
        }
        offsets.push(total);
        let right_keys: Vec<Vec<ArrayRef>> = batches
            .iter()
            .map(|b| input.keys.iter().map(|k| column(b, k)).collect())
            .collect();
        let (left_codes, codes) = self.encode_keys(left_keys, &right_keys)?;
        Ok(RightSide {
            input,
            schema,
            batches,
            offsets,
            codes,
            times: ints(&input.time)?,
            ties: input.tie_break.as_deref().map(ints).transpose()?,
            ingested: match (&input.ingested_at, self.options.as_known_at) {
                (Some(name), true) => Some(ints(name)?),
                _ => None,
            },
            left_codes,
        })
    }

    /// Matches the left rows whose key falls in part `part` of `parts` of the buckets; returns
    /// `(left row, right row)` pairs.
    /// Matches the left rows of buckets `range` with the right rows of the same buckets, which
    /// are spread over `pieces`; returns `(left row, right row)` pairs.
    fn merge(
        &self,
        side: &RightSide,
        pieces: &[Bucketed],
        (ls, l_starts): &Bucketed,
        range: std::ops::Range<usize>,
    ) -> Matches {
        let strict = self.options.strict;
        let mut matches = Vec::new();
        let mut rs: Vec<Tuple> = Vec::new();
        for b in range {
            let lefts = &ls[l_starts[b]..l_starts[b + 1]];
            if lefts.is_empty() {
                continue;
            }
            rs.clear();
            for (tuples, starts) in pieces {
                rs.extend_from_slice(&tuples[starts[b]..starts[b + 1]]);
            }
            rs.sort_unstable();
            let mut r = 0;
            for &(key, (t, _, l)) in lefts {
                while r < rs.len()
                    && (rs[r].0 < key
                        || (rs[r].0 == key && (rs[r].1.0 < t || (!strict && rs[r].1.0 == t))))
                {
                    r += 1;
                }
                let oldest = side.input.lookback.map(|lb| t.saturating_sub(lb));
                let mut c = r;
                let found = loop {
                    if c == 0 {
                        break None;
                    }
                    c -= 1;
                    let (k, (time, _, row)) = rs[c];
                    if k != key || oldest.is_some_and(|o| time < o) {
                        break None;
                    }
                    if side.ingested.is_some()
                        && side.ingested_at(row as usize).is_none_or(|at| at > t)
                    {
                        // Not yet known at t: look at the next older row.
                        continue;
                    }
                    break Some(row);
                };
                if let Some(row) = found {
                    matches.push((l, row));
                }
            }
        }
        matches
    }

    /// Key codes for the left rows and the right batches: equal keys get equal codes; null
    /// keys, and left keys absent on the right, get none.
    fn encode_keys(
        &self,
        left: &[ArrayRef],
        right: &[Vec<ArrayRef>],
    ) -> Result<(Int64Array, Vec<Int64Array>)> {
        match self.key_mode {
            KeyMode::Integer => Ok((
                i64_column(&left[0])?,
                right
                    .iter()
                    .map(|keys| i64_column(&keys[0]))
                    .collect::<Result<_>>()?,
            )),
            KeyMode::Rows => {
                let converter = RowConverter::new(self.key_fields.clone())?;
                let right_rows = right
                    .iter()
                    .map(|keys| converter.convert_columns(keys))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let mut dictionary: HashMap<&[u8], i64> = HashMap::new();
                let mut codes = Vec::with_capacity(right.len());
                for (keys, rows) in right.iter().zip(&right_rows) {
                    let nulls = any_null(keys);
                    let batch_codes: Int64Array = (0..rows.num_rows())
                        .map(|i| {
                            if nulls.as_ref().is_some_and(|n| n[i]) {
                                return None;
                            }
                            let next = dictionary.len() as i64;
                            Some(*dictionary.entry(rows.row(i).data()).or_insert(next))
                        })
                        .collect();
                    codes.push(batch_codes);
                }
                let left_rows = converter.convert_columns(left)?;
                let left_nulls = any_null(left);
                let left_codes: Int64Array = (0..left_rows.num_rows())
                    .map(|i| {
                        if left_nulls.as_ref().is_some_and(|n| n[i]) {
                            return None;
                        }
                        dictionary.get(left_rows.row(i).data()).copied()
                    })
                    .collect();
                Ok((left_codes, codes))
            }
        }
    }
}

/// The features of the matched right rows, one per left row; null where there is no match.
fn gather(side: &RightSide, matches: &[Option<u32>]) -> Result<Vec<ArrayRef>> {
    // (batch, row) per left row; unmatched rows point at a one-row null array after the batches.
    let none = side.batches.len();
    let indices: Vec<(usize, usize)> = matches
        .iter()
        .map(|m| match m {
            Some(row) => {
                let row = *row as usize;
                let b = side.offsets.partition_point(|o| *o <= row) - 1;
                (b, row - side.offsets[b])
            }
            None => (none, 0),
        })
        .collect();
    side.input
        .features
        .iter()
        .map(|(source, _)| {
            let mut arrays: Vec<ArrayRef> = side
                .batches
                .iter()
                .map(|b| b.column_by_name(source).expect("projected").clone())
                .collect();
            let ty = side.schema.field_with_name(source)?.data_type();
            arrays.push(arrow::array::new_null_array(ty, 1));
            let refs: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
            Ok(arrow::compute::interleave(&refs, &indices)?)
        })
        .collect()
}

/// Per row, whether any key column is null; `None` when none can be.
fn any_null(columns: &[ArrayRef]) -> Option<Vec<bool>> {
    if columns.iter().all(|c| c.null_count() == 0) {
        return None;
    }
    let rows = columns[0].len();
    Some(
        (0..rows)
            .map(|i| columns.iter().any(|c| c.is_null(i)))
            .collect(),
    )
}

/// An integer-like or timestamp column as int64; without a copy when it already is 64-bit.
fn i64_column(column: &ArrayRef) -> Result<Int64Array> {
    let ints = match column.data_type() {
        DataType::Int64 | DataType::Timestamp(_, _) => cast(column, &DataType::Int64)?,
        DataType::Date32 => cast(&cast(column, &DataType::Int32)?, &DataType::Int64)?,
        _ => cast(column, &DataType::Int64)?,
    };
    Ok(ints.as_primitive::<Int64Type>().clone())
}

/// Row `i` of `a`, or `None` where it is null.
#[inline]
fn at(a: &Int64Array, i: usize) -> Option<i64> {
    (a.null_count() == 0 || a.is_valid(i)).then(|| a.value(i))
}

/// Hashes each row's key into a partition hash; equal keys hash equally on both sides.
fn hash_keys(mode: KeyMode, fields: &[SortField], keys: &[ArrayRef]) -> Result<Vec<u64>> {
    match mode {
        KeyMode::Integer => Ok(i64_column(&keys[0])?
            .iter()
            .map(|k| k.map_or(0, |k| mix(k as u64)))
            .collect()),
        KeyMode::Rows => {
            let rows = RowConverter::new(fields.to_vec())?.convert_columns(keys)?;
            Ok(rows.iter().map(|row| fnv1a(row.data())).collect())
        }
    }
}

/// SplitMix64's finaliser: spreads consecutive integers over all partitions.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
