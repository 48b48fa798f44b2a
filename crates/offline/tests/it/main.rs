//! The offline store against a reference: every read is the rows a plain filter keeps, in
//! log-offset order, whatever the commits, partitions, compactions and file orders that made
//! the table.

use std::sync::Arc;

use arrow::array::{
    AsArray, FixedSizeListArray, Float32Array, Float64Array, Int64Array, RecordBatch,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{Field, Float32Type, Int64Type, TimestampMicrosecondType};
use kairos_offline::{
    DeltaOfflineStore, INGESTED_AT, OFFSET, PartitionStep, ReadFilter, to_offline,
};
use kairos_storage::Storage;
use kairos_types::{Column, FeatureGroupSpec, FeatureType, LogCut, LogPosition, TableId};
use proptest::prelude::*;

const T0: i64 = 1_714_521_600_000_000; // 2024-05-01T00:00:00Z
const HOUR: i64 = 3_600_000_000;

fn spec() -> FeatureGroupSpec {
    FeatureGroupSpec {
        name: "cards".into(),
        description: String::new(),
        columns: vec![
            Column::new("cc_num", FeatureType::Int64),
            Column::new("ts", FeatureType::Timestamp),
            Column::new("amount", FeatureType::Float64),
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

fn table() -> TableId {
    TableId {
        name: "cards".into(),
        version: 1,
    }
}

/// One row as the reference holds it: offset, key, event time, amount, ingested at.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Row {
    offset: i64,
    key: i64,
    ts: i64,
    amount: f64,
    ingested_at: i64,
}

fn canonical(spec: &FeatureGroupSpec, rows: &[Row]) -> RecordBatch {
    let emb = FixedSizeListArray::new(
        Arc::new(Field::new(
            "item",
            arrow::datatypes::DataType::Float32,
            true,
        )),
        2,
        Arc::new(Float32Array::from_iter_values(
            rows.iter().flat_map(|r| [r.offset as f32, r.amount as f32]),
        )),
        None,
    );
    RecordBatch::try_new(
        spec.arrow_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.key))),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.ts))
                    .with_timezone("UTC"),
            ),
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|r| r.amount),
            )),
            Arc::new(emb),
        ],
    )
    .unwrap()
}

fn rows_of(batches: &[RecordBatch]) -> Vec<Row> {
    let mut rows = Vec::new();
    for b in batches {
        let col = |name: &str| b.column_by_name(name).unwrap();
        let keys = col("cc_num").as_primitive::<Int64Type>();
        let ts = col("ts").as_primitive::<TimestampMicrosecondType>();
        let amounts = col("amount").as_primitive::<arrow::datatypes::Float64Type>();
        let ingested = col(INGESTED_AT).as_primitive::<TimestampMicrosecondType>();
        let offsets = col(OFFSET).as_primitive::<Int64Type>();
        let emb = col("emb").as_fixed_size_list();
        for i in 0..b.num_rows() {
            let vector = emb.value(i);
            let vector = vector.as_primitive::<Float32Type>();
            assert_eq!(
                (vector.value(0), vector.value(1)),
                (offsets.value(i) as f32, amounts.value(i) as f32),
                "the embedding travels with its row"
            );
            rows.push(Row {
                offset: offsets.value(i),
                key: keys.value(i),
                ts: ts.value(i),
                amount: amounts.value(i),
                ingested_at: ingested.value(i),
            });
        }
    }
    rows
}

fn reference(rows: &[Row], f: &ReadFilter) -> Vec<Row> {
    let mut kept: Vec<Row> = rows
        .iter()
        .filter(|r| {
            f.start.is_none_or(|s| r.ts >= s)
                && f.end.is_none_or(|e| r.ts < e)
                && f.as_of.is_none_or(|a| r.ingested_at <= a)
                && f.before.as_ref().is_none_or(|cut| {
                    // Stored positions are offset × partitions + partition.
                    let partitions = cut.ends().len() as i64;
                    let partition = (r.offset % partitions) as usize;
                    r.offset / partitions < cut.ends()[partition] as i64
                })
        })
        .copied()
        .collect();
    kept.sort_by_key(|r| r.offset);
    kept
}

/// Writes `commits`, each a list of rows; a commit's rows are handed to the writer as batches
/// in the order given, so a commit whose batches go backwards makes a file whose offsets do
/// not rise (as a compaction by another writer does).
async fn write(
    store: &DeltaOfflineStore,
    spec: &FeatureGroupSpec,
    commits: &[Vec<Vec<Row>>],
    compact_after: Option<usize>,
) {
    let mut writer = store.writer(&table(), spec).await.unwrap();
    for (i, batches) in commits.iter().enumerate() {
        let offline: Vec<RecordBatch> = batches
            .iter()
            .filter(|b| !b.is_empty())
            .map(|b| {
                to_offline(
                    spec,
                    &canonical(spec, b),
                    LogPosition::new(0, b[0].offset as u64),
                    1,
                    b[0].ingested_at,
                )
                .unwrap()
            })
            .collect();
        let through = batches
            .iter()
            .flatten()
            .map(|r| r.offset + 1)
            .max()
            .unwrap_or(0);
        let from = writer.committed_offset(0).await.unwrap().unwrap_or(0);
        let step = PartitionStep {
            partition: 0,
            from,
            through: through as u64,
            batches: offline,
        };
        only(writer.commit(vec![step]).await).unwrap();
        if compact_after == Some(i) {
            store.compact(&table()).await.unwrap();
        }
    }
}

async fn read(store: &DeltaOfflineStore, spec: &FeatureGroupSpec, f: ReadFilter) -> Vec<Row> {
    let batches = store
        .scan(&table(), spec, f)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    rows_of(&batches)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Commits of rows with consecutive offsets, event times over four days (so a commit spans
/// partitions and files interleave by offset), each commit cut into batches that may come in
/// reverse.
fn commits() -> impl Strategy<Value = Vec<Vec<Vec<Row>>>> {
    let commit = (
        prop::collection::vec((0i64..5, 0i64..96, -100i32..100), 1..40),
        1usize..4,
        any::<bool>(),
    );
    prop::collection::vec(commit, 1..6).prop_map(|commits| {
        let mut offset = 0;
        let mut out = Vec::new();
        for (c, (rows, pieces, backwards)) in commits.into_iter().enumerate() {
            let rows: Vec<Row> = rows
                .into_iter()
                .map(|(key, hour, amount)| {
                    let row = Row {
                        offset,
                        key,
                        ts: T0 + hour * HOUR,
                        amount: f64::from(amount),
                        ingested_at: T0 + c as i64,
                    };
                    offset += 1;
                    row
                })
                .collect();
            let size = rows.len().div_ceil(pieces);
            let mut batches: Vec<Vec<Row>> = rows.chunks(size).map(<[Row]>::to_vec).collect();
            if backwards {
                batches.reverse();
            }
            out.push(batches);
        }
        out
    })
}

fn filter(total: i64) -> impl Strategy<Value = ReadFilter> {
    (
        prop::option::of(0i64..96),
        prop::option::of(0i64..97),
        prop::option::of(0i64..6),
        // A cut of a log of one to three partitions.
        prop::option::of(prop::collection::vec(0..total.max(1) as u64 + 1, 1..4)),
    )
        .prop_map(|(start, end, as_of, before)| ReadFilter {
            start: start.map(|h| T0 + h * HOUR),
            end: end.map(|h| T0 + h * HOUR),
            as_of: as_of.map(|c| T0 + c),
            before: before.map(LogCut::new),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn reads_are_the_reference_rows_in_offset_order(
        (commits, filter, compact_after) in commits().prop_flat_map(|commits| {
            let total = commits.iter().flatten().flatten().count() as i64;
            let n = commits.len();
            (Just(commits), filter(total), prop::option::of(0..n))
        })
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = local(dir.path());
        let spec = spec();
        let all: Vec<Row> = commits.iter().flatten().flatten().copied().collect();
        let got = runtime().block_on(async {
            write(&store, &spec, &commits, compact_after).await;
            read(&store, &spec, filter.clone()).await
        });
        prop_assert_eq!(got, reference(&all, &filter));
    }
}

/// Two commits whose rows hop between four event dates row by row, more than a read's batch
/// of them: the files interleave at every row across the batches a read hands on, and the rows
/// still come back whole, each once, in offset order.
#[tokio::test]
async fn rows_interleaved_row_by_row_across_files_come_back_in_offset_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = local(dir.path());
    let spec = spec();
    let mut offset = 0;
    let commits: Vec<Vec<Vec<Row>>> = (0..2)
        .map(|c| {
            let rows: Vec<Row> = (0..12_000)
                .map(|i: i64| {
                    let row = Row {
                        offset,
                        key: i % 7,
                        // Each next row on another day: a file per day, interleaved by offset.
                        ts: T0 + (i % 4) * 24 * HOUR + i % 24 * HOUR,
                        amount: (offset % 1000) as f64,
                        ingested_at: T0 + c,
                    };
                    offset += 1;
                    row
                })
                .collect();
            vec![rows]
        })
        .collect();
    write(&store, &spec, &commits, None).await;
    let all: Vec<Row> = commits.iter().flatten().flatten().copied().collect();
    let everything = ReadFilter::default();
    assert_eq!(
        read(&store, &spec, everything.clone()).await,
        reference(&all, &everything)
    );
    let day_two = ReadFilter {
        start: Some(T0 + 24 * HOUR),
        end: Some(T0 + 48 * HOUR),
        ..ReadFilter::default()
    };
    assert_eq!(
        read(&store, &spec, day_two.clone()).await,
        reference(&all, &day_two)
    );
}

fn local(dir: &std::path::Path) -> DeltaOfflineStore {
    DeltaOfflineStore::new(Storage::data_dir(dir).unwrap())
}

/// A store in a fresh prefix of the test bucket (a real S3 API: moto in CI), or `None` where
/// `KAIROS_TEST_S3_URL` is not set.
fn in_bucket(name: &str) -> Option<DeltaOfflineStore> {
    let url = kairos_storage::testing::s3_url(name)?;
    Some(DeltaOfflineStore::new(
        Storage::open(Some(&url), std::path::Path::new("unused")).unwrap(),
    ))
}

/// A compaction merges each day's small files into one, in offset order, in a commit that keeps
/// the materialiser's offset; a second finds nothing to do.
#[tokio::test]
async fn compaction_merges_each_partition_and_keeps_rows_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    compaction_merges_each_partition(&local(dir.path())).await;
}

/// The same in a bucket: the Delta log, the Parquet files and the compaction's commit on S3.
#[tokio::test]
async fn compaction_merges_each_partition_in_a_bucket() {
    if let Some(store) = in_bucket("offline-compaction") {
        compaction_merges_each_partition(&store).await;
    }
}

async fn compaction_merges_each_partition(store: &DeltaOfflineStore) {
    let spec = spec();
    let commits: Vec<Vec<Vec<Row>>> = (0..12)
        .map(|c| {
            vec![
                (0..5)
                    .map(|i| {
                        let offset = c * 5 + i;
                        Row {
                            offset,
                            key: i,
                            // Two days, alternating row by row.
                            ts: T0 + (offset % 2) * 24 * HOUR,
                            amount: offset as f64,
                            ingested_at: T0 + c,
                        }
                    })
                    .collect(),
            ]
        })
        .collect();
    write(store, &spec, &commits, None).await;
    let before = read(store, &spec, ReadFilter::default()).await;
    assert_eq!(before.len(), 60);

    let report = store.compact(&table()).await.unwrap();
    assert_eq!((report.files_removed, report.files_added), (24, 2));
    assert_eq!(read(store, &spec, ReadFilter::default()).await, before);
    let again = store.compact(&table()).await.unwrap();
    assert_eq!((again.files_removed, again.files_added), (0, 0));

    let mut writer = store.writer(&table(), &spec).await.unwrap();
    assert_eq!(writer.committed_offset(0).await.unwrap(), Some(60));
}

/// Two writers of different log partitions append to one table at the same moment, again and
/// again: each commit is a conditional PUT of the next version, so when both try one version
/// the loser is refused and retries at the next. Every row of both lands, and the log's
/// versions are every commit once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_committers_never_overwrite_each_other() {
    let dir = tempfile::tempdir().unwrap();
    racing_committers(&local(dir.path())).await;
}

/// The same in a bucket, where only the service's `If-None-Match` keeps the commits apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_committers_in_a_bucket_never_overwrite_each_other() {
    if let Some(store) = in_bucket("offline-race") {
        racing_committers(&store).await;
    }
}

async fn racing_committers(store: &DeltaOfflineStore) {
    const COMMITS: i64 = 8;
    let spec = spec();
    // The table exists before the race: creating it is a race of its own, at version 0.
    write(store, &spec, &[vec![vec![row(0)]]], None).await;
    let writers = (0..2).map(|w| {
        let (store, spec) = (store.clone(), spec.clone());
        tokio::spawn(async move {
            let partition = 1 + w as u32;
            let mut writer = store.writer(&table(), &spec).await.unwrap();
            for c in 0..COMMITS {
                let r = row(1 + w * COMMITS + c);
                let batch = to_offline(
                    &spec,
                    &canonical(&spec, &[r]),
                    LogPosition::new(0, r.offset as u64),
                    1,
                    r.ingested_at,
                )
                .unwrap();
                let step = PartitionStep {
                    partition,
                    from: if c == 0 { 0 } else { r.offset as u64 },
                    through: r.offset as u64 + 1,
                    batches: vec![batch],
                };
                only(writer.commit(vec![step]).await).unwrap();
            }
        })
    });
    for writer in futures::future::join_all(writers).await {
        writer.unwrap();
    }
    let got = read(store, &spec, ReadFilter::default()).await;
    let expected: Vec<Row> = (0..1 + 2 * COMMITS).map(row).collect();
    assert_eq!(got, expected);

    // The commit files themselves: versions 0 to 2 × COMMITS, each written once, and a second
    // PUT of an existing version refused by the store (what made the loser of each race retry).
    let mut table = deltalake::DeltaTableBuilder::from_url(store.table_url(&table()))
        .unwrap()
        .build()
        .unwrap();
    table.load().await.unwrap();
    assert_eq!(table.version(), Some(2 * COMMITS as u64));
    let taken = table
        .log_store()
        .write_commit_entry(
            1,
            deltalake::logstore::CommitOrBytes::LogBytes(bytes::Bytes::from_static(b"{}\n")),
            uuid::Uuid::new_v4(),
        )
        .await;
    assert!(
        matches!(
            taken,
            Err(deltalake::kernel::transaction::TransactionError::VersionAlreadyExists(1))
        ),
        "{taken:?}"
    );
    let still = read(store, &spec, ReadFilter::default()).await;
    assert_eq!(still, expected);
}

/// Two writers of one log partition (a stale owner and its successor): the first to commit
/// wins, and the other's commit is refused whole — none of its rows land — because the
/// partition's offset moved under it. Reopened, it reads the offset the winner left.
#[tokio::test]
async fn a_stale_writer_of_a_partition_is_fenced() {
    let dir = tempfile::tempdir().unwrap();
    stale_writer_is_fenced(&local(dir.path())).await;
}

#[tokio::test]
async fn a_stale_writer_of_a_partition_in_a_bucket_is_fenced() {
    if let Some(store) = in_bucket("offline-fence") {
        stale_writer_is_fenced(&store).await;
    }
}

async fn stale_writer_is_fenced(store: &DeltaOfflineStore) {
    let spec = spec();
    write(store, &spec, &[vec![vec![row(0)]]], None).await;
    let append = |r: Row| {
        vec![
            to_offline(
                &spec,
                &canonical(&spec, &[r]),
                LogPosition::new(0, r.offset as u64),
                1,
                r.ingested_at,
            )
            .unwrap(),
        ]
    };
    let step = |r: Row, from: u64| PartitionStep {
        partition: 0,
        from,
        through: r.offset as u64 + 1,
        batches: append(r),
    };
    let mut stale = store.writer(&table(), &spec).await.unwrap();
    assert_eq!(stale.committed_offset(0).await.unwrap(), Some(1));
    let mut successor = store.writer(&table(), &spec).await.unwrap();
    only(successor.commit(vec![step(row(1), 1)]).await).unwrap();
    let fenced = |refused: kairos_offline::Result<()>| {
        assert!(
            matches!(
                refused,
                Err(kairos_offline::OfflineError::Fenced { partition: 0, .. })
            ),
            "{refused:?}"
        );
    };
    // The stale writer's state still says 1: Delta's conflict check refuses it.
    fenced(only(stale.commit(vec![step(row(7), 1)]).await));
    assert_eq!(
        read(store, &spec, ReadFilter::default()).await,
        vec![row(0), row(1)]
    );
    // Read again, it knows the partition moved, and refuses a step from the old offset at once.
    stale.refresh().await.unwrap();
    assert_eq!(stale.committed_offset(0).await.unwrap(), Some(2));
    fenced(only(stale.commit(vec![step(row(7), 1)]).await));
}

/// One commit carries the steps of several log partitions (a process's committer gathers
/// them): each partition's offset is recorded, every row lands once, and a
/// step that does not go on from where the table holds its partition is refused alone.
#[tokio::test]
async fn one_commit_carries_several_partitions_and_refuses_only_a_stale_step() {
    let dir = tempfile::tempdir().unwrap();
    let store = local(dir.path());
    let spec = spec();
    // Two log partitions: partition p's offset o is stored as o × 2 + p.
    let step = |partition: u32, offsets: std::ops::Range<u64>, from: u64| {
        let rows: Vec<Row> = offsets
            .clone()
            .map(|o| row((o * 2 + u64::from(partition)) as i64))
            .collect();
        let batch = to_offline(
            &spec,
            &canonical(&spec, &rows),
            LogPosition::new(partition, offsets.start),
            2,
            rows[0].ingested_at,
        )
        .unwrap();
        PartitionStep {
            partition,
            from,
            through: offsets.end,
            batches: vec![batch],
        }
    };
    let mut writer = store.writer(&table(), &spec).await.unwrap();
    let first = writer
        .commit(vec![step(1, 0..3, 0), step(0, 0..2, 0)])
        .await;
    assert!(first.iter().all(Result::is_ok), "{first:?}");
    assert_eq!(writer.committed_offset(0).await.unwrap(), Some(2));
    assert_eq!(writer.committed_offset(1).await.unwrap(), Some(3));

    // Partition 1's step claims to go on from 1, where the table holds 3: refused, alone.
    let second = writer
        .commit(vec![step(0, 2..4, 2), step(1, 1..5, 1)])
        .await;
    assert!(second[0].is_ok(), "{second:?}");
    assert!(
        matches!(
            second[1],
            Err(kairos_offline::OfflineError::Fenced { partition: 1, .. })
        ),
        "{second:?}"
    );
    let mut fresh = store.writer(&table(), &spec).await.unwrap();
    assert_eq!(fresh.committed_offset(0).await.unwrap(), Some(4));
    assert_eq!(fresh.committed_offset(1).await.unwrap(), Some(3));
    let stored: Vec<i64> = read(&store, &spec, ReadFilter::default())
        .await
        .iter()
        .map(|r| r.offset)
        .collect();
    assert_eq!(stored, vec![0, 1, 2, 3, 4, 5, 6]);
}

/// The outcome of a commit of one step.
fn only(mut outcomes: Vec<kairos_offline::Result<()>>) -> kairos_offline::Result<()> {
    assert_eq!(outcomes.len(), 1);
    outcomes.pop().unwrap()
}

fn row(offset: i64) -> Row {
    Row {
        offset,
        key: offset % 3,
        ts: T0 + offset * HOUR,
        amount: offset as f64,
        ingested_at: T0 + offset,
    }
}
