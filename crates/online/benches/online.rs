//! The embedded KV choice, measured: redb against fjall on the online store's own access
//! pattern (point gets and 100-key multi-gets of ~120-byte rows, and durable batch upserts),
//! plus the online store's get path on redb.
//!
//! `cargo bench -p kairos-online --bench online`

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use fjall::{Database as FjallDb, KeyspaceCreateOptions, PersistMode};
use kairos_online::{OnlineStore, RedbStore};
use kairos_types::value::encode_key;
use kairos_types::{OnlineRow, TableId, Value};
use rand::Rng;
use redb::{Database as RedbDb, ReadableDatabase, TableDefinition};

const KEYS: i64 = 100_000;
const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("rows");

fn key(id: i64) -> Vec<u8> {
    encode_key(&[Value::Int64(id)])
}

fn row(id: i64) -> Vec<u8> {
    let values = (0..10).map(|f| Value::Float64((id * f) as f64)).collect();
    OnlineRow {
        event_time: id,
        offset: id as u64,
        ingested_at: id,
        values,
    }
    .encode()
}

fn random_keys(n: usize) -> Vec<Vec<u8>> {
    let mut rng = rand::rng();
    (0..n).map(|_| key(rng.random_range(0..KEYS))).collect()
}

fn kv_choice(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let redb = RedbDb::create(dir.path().join("bench.redb")).unwrap();
    let txn = redb.begin_write().unwrap();
    {
        let mut t = txn.open_table(TABLE).unwrap();
        for id in 0..KEYS {
            t.insert(key(id).as_slice(), row(id).as_slice()).unwrap();
        }
    }
    txn.commit().unwrap();
    let fjall = FjallDb::builder(dir.path().join("fjall")).open().unwrap();
    let rows = fjall
        .keyspace("rows", KeyspaceCreateOptions::default)
        .unwrap();
    let mut batch = fjall.batch();
    for id in 0..KEYS {
        batch.insert(&rows, key(id), row(id));
    }
    batch.commit().unwrap();
    fjall.persist(PersistMode::SyncAll).unwrap();

    let mut group = c.benchmark_group("kv_get");
    for n in [1usize, 100] {
        group.bench_with_input(BenchmarkId::new("redb", n), &n, |b, &n| {
            b.iter_batched(
                || random_keys(n),
                |keys| {
                    let txn = redb.begin_read().unwrap();
                    let t = txn.open_table(TABLE).unwrap();
                    keys.iter()
                        .filter(|k| t.get(k.as_slice()).unwrap().is_some())
                        .count()
                },
                criterion::BatchSize::SmallInput,
            )
        });
        group.bench_with_input(BenchmarkId::new("fjall", n), &n, |b, &n| {
            b.iter_batched(
                || random_keys(n),
                |keys| {
                    keys.iter()
                        .filter(|k| rows.get(k.as_slice()).unwrap().is_some())
                        .count()
                },
                criterion::BatchSize::SmallInput,
            )
        });
    }
    group.finish();

    let mut group = c.benchmark_group("kv_durable_upsert_1000");
    group.sample_size(20);
    group.bench_function("redb", |b| {
        b.iter_batched(
            || random_keys(1000),
            |keys| {
                let txn = redb.begin_write().unwrap();
                {
                    let mut t = txn.open_table(TABLE).unwrap();
                    for (i, k) in keys.iter().enumerate() {
                        t.insert(k.as_slice(), row(i as i64).as_slice()).unwrap();
                    }
                }
                txn.commit().unwrap();
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.bench_function("fjall", |b| {
        b.iter_batched(
            || random_keys(1000),
            |keys| {
                let mut batch = fjall.batch().durability(Some(PersistMode::SyncAll));
                for (i, k) in keys.iter().enumerate() {
                    batch.insert(&rows, k.clone(), row(i as i64));
                }
                batch.commit().unwrap();
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn online_store_get(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("online.redb")).unwrap();
    let table = TableId::new("bench", 1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rows: Vec<_> = (0..KEYS)
        .map(|id| (key(id), OnlineRow::decode(&row(id)).unwrap()))
        .collect();
    rt.block_on(store.apply(&table, kairos_online::Step::whole(0, KEYS as u64), rows))
        .unwrap();
    let mut group = c.benchmark_group("online_store_get_redb");
    for n in [1usize, 100] {
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter_batched(
                || random_keys(n),
                |keys| store.get_many_blocking(&table, &keys).unwrap(),
                criterion::BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, kv_choice, online_store_get);
criterion_main!(benches);
