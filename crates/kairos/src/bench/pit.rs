//! The point-in-time join benchmark: a spine of entity/time rows joined ASOF with feature groups,
//! on Parquet files any engine can read (`bench/pit.sh` runs DuckDB's `ASOF JOIN` on the same
//! files and checks both produce the same rows).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use arrow::array::RecordBatchReader;
use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use kairos_view::{AsofJoin, AsofOptions, AsofStage, RightInput};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const T0: i64 = 1_704_067_200_000_000; // 2024-01-01T00:00:00Z
const YEAR: i64 = 365 * 86_400_000_000;

#[derive(Debug, clap::Args)]
pub struct DataArgs {
    /// Folder for spine.parquet and g1.parquet … gN.parquet.
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, default_value_t = 1_000_000)]
    spine_rows: usize,
    /// Rows per feature group.
    #[arg(long, default_value_t = 10_000_000)]
    group_rows: usize,
    #[arg(long, default_value_t = 100_000)]
    keys: usize,
    #[arg(long, default_value_t = 3)]
    groups: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

#[derive(Debug, clap::Args)]
pub struct JoinArgs {
    /// The folder `pit-data` wrote.
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, default_value_t = 3)]
    groups: usize,
    /// Memory for buffered inputs before the join spills hash partitions to disk, in MiB.
    #[arg(long, default_value_t = 4096)]
    memory_budget_mb: usize,
    /// Where the joined rows go (Parquet).
    #[arg(long)]
    out: PathBuf,
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn writer(path: &Path, schema: SchemaRef) -> anyhow::Result<ArrowWriter<File>> {
    let file = File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    Ok(ArrowWriter::try_new(file, schema, Some(props))?)
}

/// Writes the spine (uniform keys and times over a year) and the groups: per key, rows at
/// distinct times spread over the year, written round by round in a shuffled key order, as an
/// append-only log of updates would be.
pub fn write_data(args: &DataArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let started = Instant::now();
    let spine_schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("key", DataType::Int64, false),
        Field::new("ts", ts_type(), false),
    ]));
    let mut w = writer(&args.dir.join("spine.parquet"), spine_schema.clone())?;
    for start in (0..args.spine_rows).step_by(1 << 20) {
        let n = (1 << 20).min(args.spine_rows - start);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(
                (start..start + n).map(|i| i as i64),
            )),
            Arc::new(Int64Array::from_iter_values(
                (0..n).map(|_| rng.random_range(0..args.keys as i64)),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    (0..n).map(|_| T0 + rng.random_range(0..YEAR)),
                )
                .with_timezone("UTC"),
            ),
        ];
        w.write(&RecordBatch::try_new(spine_schema.clone(), columns)?)?;
    }
    w.close()?;

    let group_schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Int64, false),
        Field::new("ts", ts_type(), false),
        Field::new("f1", DataType::Float64, true),
        Field::new("f2", DataType::Float64, true),
    ]));
    let rounds = args.group_rows.div_ceil(args.keys);
    let slot = YEAR / rounds as i64;
    let mut keys: Vec<i64> = (0..args.keys as i64).collect();
    for g in 1..=args.groups {
        let mut w = writer(
            &args.dir.join(format!("g{g}.parquet")),
            group_schema.clone(),
        )?;
        let mut written = 0;
        for round in 0..rounds {
            keys.shuffle(&mut rng);
            let n = args.keys.min(args.group_rows - written);
            let ks = &keys[..n];
            // Each key gets one time inside this round's slot: times per key never repeat.
            let columns: Vec<ArrayRef> = vec![
                Arc::new(Int64Array::from_iter_values(ks.iter().copied())),
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(
                        (0..n).map(|_| T0 + round as i64 * slot + rng.random_range(0..slot)),
                    )
                    .with_timezone("UTC"),
                ),
                Arc::new(Float64Array::from_iter_values(
                    (0..n).map(|_| rng.random::<f64>()),
                )),
                Arc::new(Float64Array::from_iter_values(
                    (0..n).map(|_| rng.random::<f64>()),
                )),
            ];
            w.write(&RecordBatch::try_new(group_schema.clone(), columns)?)?;
            written += n;
        }
        w.close()?;
    }
    eprintln!(
        "wrote {} spine rows and {} groups of {} rows over {} keys in {:.1}s",
        args.spine_rows,
        args.groups,
        args.group_rows,
        args.keys,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<(SchemaRef, Vec<RecordBatch>)> {
    let file = File::open(path).with_context(|| {
        format!(
            "cannot read {}; run `kairos bench pit-data` first",
            path.display()
        )
    })?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)?
        .with_batch_size(64 * 1024)
        .build()?;
    let schema = reader.schema();
    Ok((schema, reader.collect::<Result<Vec<_>, _>>()?))
}

/// Runs the join end to end: read the Parquet files, join, write the result as Parquet.
pub fn join(args: &JoinArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut paths = vec![args.dir.join("spine.parquet")];
    paths.extend((1..=args.groups).map(|g| args.dir.join(format!("g{g}.parquet"))));
    // The files are read in parallel, as any engine would.
    let mut inputs = std::thread::scope(|scope| {
        let handles: Vec<_> = paths.iter().map(|p| scope.spawn(move || read(p))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("reader thread"))
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    let read_done = started.elapsed();
    let (spine_schema, spine) = inputs.remove(0);
    let stage = AsofStage {
        left_keys: vec!["key".into()],
        left_time: "ts".into(),
        rights: (1..=args.groups)
            .map(|g| RightInput {
                keys: vec!["key".into()],
                time: "ts".into(),
                ingested_at: None,
                tie_break: None,
                features: vec![
                    ("f1".into(), format!("g{g}_f1")),
                    ("f2".into(), format!("g{g}_f2")),
                ],
                lookback: None,
                latest: false,
            })
            .collect(),
    };
    let options = AsofOptions {
        memory_budget: args.memory_budget_mb << 20,
        spill_dir: args
            .out
            .parent()
            .map_or_else(std::env::temp_dir, Path::to_path_buf),
        ..AsofOptions::default()
    };
    let schemas: Vec<SchemaRef> = inputs.iter().map(|(s, _)| s.clone()).collect();
    let mut join = AsofJoin::new(stage, &spine_schema, &schemas, options)?;
    let spine_rows: usize = spine.iter().map(RecordBatch::num_rows).sum();
    for batch in spine {
        join.push_left(batch)?;
    }
    for (i, (_, batches)) in inputs.into_iter().enumerate() {
        for batch in batches {
            join.push_right(i, batch)?;
        }
    }
    let spilled = join.spilled();
    let pushed = started.elapsed();
    let output = join.finish()?;
    let mut w = writer(&args.out, output.schema())?;
    let mut rows = 0;
    // The join runs as the output is pulled; writing is timed apart from it.
    let mut joining = std::time::Duration::ZERO;
    let mut at = Instant::now();
    for batch in output {
        let batch = batch?;
        joining += at.elapsed();
        rows += batch.num_rows();
        w.write(&batch)?;
        at = Instant::now();
    }
    w.close()?;
    let total = started.elapsed();
    let peak = peak_rss_bytes();
    let report = serde_json::json!({
        "spine_rows": spine_rows,
        "rows_out": rows,
        "groups": args.groups,
        "spilled": spilled,
        "read_seconds": read_done.as_secs_f64(),
        "pushed_at_seconds": pushed.as_secs_f64(),
        "join_seconds": joining.as_secs_f64(),
        "total_seconds": total.as_secs_f64(),
        "spine_rows_per_second": spine_rows as f64 / total.as_secs_f64(),
        "peak_rss_bytes": peak,
    });
    eprintln!(
        "kairos ASOF join: {spine_rows} spine rows x {} groups in {:.2}s (read {:.2}s) = {:.0} spine rows/s, peak RSS {:.2} GiB{}",
        args.groups,
        total.as_secs_f64(),
        read_done.as_secs_f64(),
        spine_rows as f64 / total.as_secs_f64(),
        peak.unwrap_or(0) as f64 / (1u64 << 30) as f64,
        if spilled { ", spilled" } else { "" }
    );
    println!("{report}");
    Ok(())
}

/// The process's peak resident memory (Linux `VmHWM`).
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
