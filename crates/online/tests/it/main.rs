//! One test suite, run against every online-store backend: redb always, Redis when
//! `KAIROS_TEST_REDIS_URL` names a server, and Redis Cluster when
//! `KAIROS_TEST_REDIS_CLUSTER_URL` names its nodes (comma-separated; `.ci/run` starts both).

use std::collections::BTreeMap;

use kairos_online::{
    KeyPart, OnlineBackend, OnlineError, OnlineStore, RedbStore, RedisStore, Step,
};
use kairos_types::value::encode_key;
use kairos_types::{OnlineRow, TableId, Value};
use proptest::prelude::*;

struct Fixture {
    store: OnlineBackend,
    _dir: Option<tempfile::TempDir>,
}

fn redb() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("online.redb")).unwrap();
    Fixture {
        store: OnlineBackend::Redb(store),
        _dir: Some(dir),
    }
}

/// A Redis-backed store under a fresh key prefix, or `None` when no server is configured.
async fn redis() -> Option<Fixture> {
    let url = std::env::var("KAIROS_TEST_REDIS_URL").ok()?;
    let prefix = test_prefix();
    let store = RedisStore::connect(&url, &prefix)
        .await
        .expect("KAIROS_TEST_REDIS_URL is set but unreachable");
    Some(Fixture {
        store: OnlineBackend::Redis(store),
        _dir: None,
    })
}

/// A store on the Redis Cluster, its tables spread over `SLOT_GROUPS` slot groups, or `None`
/// when no cluster is configured.
async fn redis_cluster() -> Option<Fixture> {
    let nodes = cluster_nodes()?;
    let prefix = test_prefix();
    let store = RedisStore::connect_cluster(&nodes, &prefix, SLOT_GROUPS)
        .await
        .expect("KAIROS_TEST_REDIS_CLUSTER_URL is set but unreachable");
    Some(Fixture {
        store: OnlineBackend::Redis(store),
        _dir: None,
    })
}

const SLOT_GROUPS: u16 = 6;

fn cluster_nodes() -> Option<Vec<String>> {
    let urls = std::env::var("KAIROS_TEST_REDIS_CLUSTER_URL").ok()?;
    Some(urls.split(',').map(str::to_string).collect())
}

/// A key prefix no other test run uses.
fn test_prefix() -> String {
    format!(
        "kairos-test-{}-{}:",
        std::process::id(),
        rand::random::<u64>()
    )
}

fn key(id: i64) -> Vec<u8> {
    encode_key(&[Value::Int64(id)])
}

fn row(event_time: i64, offset: u64, amount: f64) -> OnlineRow {
    OnlineRow {
        event_time,
        offset,
        ingested_at: offset as i64,
        values: vec![Value::Float64(amount)],
    }
}

fn table() -> TableId {
    TableId::new("cards", 1)
}

/// A step of log partition 0.
fn step(from: u64, through: u64) -> Step {
    Step::whole(from, through)
}

async fn latest_row_wins_and_late_events_do_not_overwrite(store: &OnlineBackend) {
    let t = table();
    assert_eq!(store.offset(&t, 0).await.unwrap(), None);
    store
        .apply(
            &t,
            step(0, 2),
            vec![(key(1), row(100, 0, 1.0)), (key(2), row(50, 1, 2.0))],
        )
        .await
        .unwrap();
    // A late event for key 1 (older event time) and a same-time rewrite for key 2.
    store
        .apply(
            &t,
            step(2, 4),
            vec![(key(1), row(90, 2, 9.0)), (key(2), row(50, 3, 3.0))],
        )
        .await
        .unwrap();
    let got = store.get_many(&t, &[key(1), key(2), key(3)]).await.unwrap();
    assert_eq!(got[0], Some(row(100, 0, 1.0)));
    assert_eq!(got[1], Some(row(50, 3, 3.0)));
    assert_eq!(got[2], None);
    assert_eq!(store.offset(&t, 0).await.unwrap(), Some(4));

    let mut scanned = store.scan(&t, KeyPart::WHOLE).await.unwrap();
    scanned.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(scanned.len(), 2);
    // Parts split the keys: each key in exactly one of them.
    let mut parted = Vec::new();
    for index in 0..3 {
        parted.extend(store.scan(&t, KeyPart { index, of: 3 }).await.unwrap());
    }
    parted.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(parted, scanned);

    store.drop_table(&t).await.unwrap();
    assert_eq!(store.get_many(&t, &[key(1)]).await.unwrap(), vec![None]);
    assert_eq!(store.offset(&t, 0).await.unwrap(), None);
    assert!(store.scan(&t, KeyPart::WHOLE).await.unwrap().is_empty());
}

async fn reapplying_a_batch_changes_nothing(store: &OnlineBackend) {
    let t = table();
    let batch = vec![
        (key(1), row(10, 5, 1.0)),
        (key(1), row(20, 6, 2.0)),
        (key(1), row(15, 7, 3.0)),
    ];
    store.apply(&t, step(0, 8), batch.clone()).await.unwrap();
    store.apply(&t, step(0, 8), batch).await.unwrap();
    assert_eq!(
        store.get_many(&t, &[key(1)]).await.unwrap(),
        vec![Some(row(20, 6, 2.0))]
    );
    store.drop_table(&t).await.unwrap();
}

/// Each log partition has an offset of its own, and a step is written only from where its
/// partition stands: one planned from further on (a materialiser that lost track) is refused
/// whole, and one planned from before takes only what the store lacks of it.
async fn partitions_move_on_their_own_and_only_from_where_they_stand(store: &OnlineBackend) {
    let t = table();
    store.drop_table(&t).await.unwrap();
    // A log of two partitions: rows carry `offset × 2 + partition` as their position.
    let at = |partition, from, through| Step {
        partition,
        partitions: 2,
        from,
        through,
    };
    let p0 = |event_time, offset: u64, amount| row(event_time, offset * 2, amount);
    store
        .apply(
            &t,
            at(0, 0, 2),
            vec![(key(1), p0(10, 0, 1.0)), (key(2), p0(10, 1, 2.0))],
        )
        .await
        .unwrap();
    store
        .apply(&t, at(1, 0, 3), vec![(key(3), row(10, 2 * 2 + 1, 3.0))])
        .await
        .unwrap();
    assert_eq!(store.offset(&t, 0).await.unwrap(), Some(2));
    assert_eq!(store.offset(&t, 1).await.unwrap(), Some(3));
    assert_eq!(store.offset(&t, 2).await.unwrap(), None);

    let err = store
        .apply(&t, at(0, 5, 6), vec![(key(1), p0(99, 5, 99.0))])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            OnlineError::Moved {
                partition: 0,
                from: 5,
                found: Some(2),
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        store.get_many(&t, &[key(1)]).await.unwrap(),
        vec![Some(p0(10, 0, 1.0))]
    );

    // From offset 1, through 4: the rows before 2 are held, so only 2 and 3 are written. (The
    // log never changes a row; a different row at offset 1 shows that it was not rewritten.)
    store
        .apply(
            &t,
            at(0, 1, 4),
            vec![(key(2), p0(20, 1, 0.0)), (key(1), p0(30, 3, 4.0))],
        )
        .await
        .unwrap();
    let got = store.get_many(&t, &[key(1), key(2)]).await.unwrap();
    assert_eq!(got, vec![Some(p0(30, 3, 4.0)), Some(p0(10, 1, 2.0))]);
    assert_eq!(store.offset(&t, 0).await.unwrap(), Some(4));

    store.drop_table(&t).await.unwrap();
    assert_eq!(store.offset(&t, 0).await.unwrap(), None);
    assert_eq!(store.offset(&t, 1).await.unwrap(), None);
}

/// The steps of eight partitions at once (redb writes whatever queued in one transaction),
/// one of them stale: each lands whole, and the stale one is refused alone.
async fn steps_of_many_partitions_at_once_land_or_are_refused_alone(store: &OnlineBackend) {
    let t = table();
    store.drop_table(&t).await.unwrap();
    const PARTITIONS: u32 = 8;
    let at = |partition, from, through| Step {
        partition,
        partitions: PARTITIONS,
        from,
        through,
    };
    // Partition p's rows: keys p*100.., at offsets 0..10.
    let rows = |partition: u32| -> Vec<_> {
        (0..10u64)
            .map(|offset| {
                let position = offset * u64::from(PARTITIONS) + u64::from(partition);
                let id = i64::from(partition) * 100 + offset as i64;
                (key(id), row(10, position, id as f64))
            })
            .collect()
    };
    let steps = (0..PARTITIONS).map(|p| store.apply(&t, at(p, 0, 10), rows(p)));
    // Partition 3 stands at 0 or 10 (whichever step goes first): a step from 20 lacks the
    // rows before it.
    let stale = store.apply(&t, at(3, 20, 30), rows(3));
    let (landed, refused) = tokio::join!(futures::future::join_all(steps), stale);
    assert!(landed.iter().all(Result::is_ok), "{landed:?}");
    match refused {
        Err(OnlineError::Moved {
            partition: 3,
            from: 20,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    for p in 0..PARTITIONS {
        assert_eq!(
            store.offset(&t, p).await.unwrap(),
            Some(10),
            "partition {p}"
        );
        let keys: Vec<_> = rows(p).into_iter().map(|(k, _)| k).collect();
        let got = store.get_many(&t, &keys).await.unwrap();
        let expected: Vec<_> = rows(p).into_iter().map(|(_, r)| Some(r)).collect();
        assert_eq!(got, expected, "partition {p}");
    }
    store.drop_table(&t).await.unwrap();
}

/// Two materialisers of one partition at once (an owner and the stale one it replaced): each
/// step lands whole or not at all, and the rows end as one writer would leave them.
async fn racing_writers_of_one_partition_leave_one_writers_rows(store: &OnlineBackend) {
    let t = table();
    store.drop_table(&t).await.unwrap();
    let rows: Vec<_> = (0..64)
        .map(|i| (key(i % 16), row(i, i as u64, i as f64)))
        .collect();
    let (a, b) = tokio::join!(
        store.apply(&t, step(0, 64), rows.clone()),
        store.apply(&t, step(0, 64), rows.clone()),
    );
    for outcome in [a, b] {
        match outcome {
            Ok(()) | Err(OnlineError::Moved { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    let got = store
        .get_many(&t, &(0..16).map(key).collect::<Vec<_>>())
        .await
        .unwrap();
    let expected: Vec<_> = (48..64).map(|i| Some(row(i, i as u64, i as f64))).collect();
    assert_eq!(got, expected);
    assert_eq!(store.offset(&t, 0).await.unwrap(), Some(64));
    store.drop_table(&t).await.unwrap();
}

#[tokio::test]
async fn redb_partitions_move_on_their_own() {
    let f = redb();
    partitions_move_on_their_own_and_only_from_where_they_stand(&f.store).await;
    racing_writers_of_one_partition_leave_one_writers_rows(&f.store).await;
}

#[tokio::test]
async fn redis_partitions_move_on_their_own() {
    if let Some(f) = redis().await {
        partitions_move_on_their_own_and_only_from_where_they_stand(&f.store).await;
        racing_writers_of_one_partition_leave_one_writers_rows(&f.store).await;
    }
}

#[tokio::test]
async fn redis_cluster_partitions_move_on_their_own() {
    if let Some(f) = redis_cluster().await {
        partitions_move_on_their_own_and_only_from_where_they_stand(&f.store).await;
        racing_writers_of_one_partition_leave_one_writers_rows(&f.store).await;
    }
}

#[tokio::test]
async fn redb_latest_row_wins() {
    latest_row_wins_and_late_events_do_not_overwrite(&redb().store).await;
}

#[tokio::test]
async fn redis_latest_row_wins() {
    if let Some(f) = redis().await {
        latest_row_wins_and_late_events_do_not_overwrite(&f.store).await;
    }
}

#[tokio::test]
async fn redis_cluster_latest_row_wins() {
    if let Some(f) = redis_cluster().await {
        latest_row_wins_and_late_events_do_not_overwrite(&f.store).await;
    }
}

#[tokio::test]
async fn redis_cluster_reapply_is_idempotent() {
    if let Some(f) = redis_cluster().await {
        reapplying_a_batch_changes_nothing(&f.store).await;
    }
}

/// On a cluster a table's rows land on more than one node (its slot groups' hash tags spread
/// it), each node holding whole groups: rows and offset side by side, as one transaction
/// wrote them. And a multi-get finds every row wherever it is.
#[tokio::test]
async fn a_table_on_a_cluster_is_spread_over_its_nodes() {
    let Some(f) = redis_cluster().await else {
        return;
    };
    let t = table();
    let rows: Vec<_> = (0..200)
        .map(|i| (key(i), row(i, i as u64, i as f64)))
        .collect();
    f.store.apply(&t, step(0, 200), rows.clone()).await.unwrap();
    let mut holding = 0;
    for url in cluster_nodes().unwrap() {
        let mut node = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let OnlineBackend::Redis(store) = &f.store else {
            unreachable!()
        };
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
            .arg(format!("{{{}fg:cards:v1:*", store.prefix()))
            .query_async(&mut node)
            .await
            .unwrap();
        if keys.is_empty() {
            continue;
        }
        holding += 1;
        // Every group on this node has its offset here too.
        let keys: Vec<String> = keys
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        for k in &keys {
            let tag = &k[..=k.find('}').unwrap()];
            assert!(
                keys.contains(&format!("{tag}offset")),
                "{k} without its group's offset"
            );
        }
    }
    assert!(holding > 1, "the table sits on {holding} node");
    let ids: Vec<Vec<u8>> = (0..200).map(key).collect();
    let got = f.store.get_many(&t, &ids).await.unwrap();
    let expected: Vec<_> = rows.into_iter().map(|(_, r)| Some(r)).collect();
    assert_eq!(got, expected);
    assert_eq!(f.store.offset(&t, 0).await.unwrap(), Some(200));
    f.store.drop_table(&t).await.unwrap();
    assert_eq!(f.store.offset(&t, 0).await.unwrap(), None);
}

#[tokio::test]
async fn redb_reapply_is_idempotent() {
    reapplying_a_batch_changes_nothing(&redb().store).await;
}

#[tokio::test]
async fn redis_reapply_is_idempotent() {
    if let Some(f) = redis().await {
        reapplying_a_batch_changes_nothing(&f.store).await;
    }
}

#[tokio::test]
async fn redb_keeps_rows_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("online.redb");
    {
        let store = RedbStore::open(&path).unwrap();
        store
            .apply(&table(), step(0, 1), vec![(key(7), row(1, 0, 7.0))])
            .await
            .unwrap();
    }
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(
        store.get_many(&table(), &[key(7)]).await.unwrap(),
        vec![Some(row(1, 0, 7.0))]
    );
    assert_eq!(store.offset(&table(), 0).await.unwrap(), Some(1));
}

/// The differential test: any sequence of writes, cut into any batches, leaves each backend
/// equal to a map of latest-by-(event time, offset).
async fn differential(store: &OnlineBackend, writes: &[(i64, i64)], cuts: &[usize]) {
    {
        let t = table();
        store.drop_table(&t).await.unwrap();
        let mut model: BTreeMap<i64, OnlineRow> = BTreeMap::new();
        let rows: Vec<(i64, OnlineRow)> = writes
            .iter()
            .enumerate()
            .map(|(offset, &(id, event_time))| (id, row(event_time, offset as u64, offset as f64)))
            .collect();
        for (id, r) in &rows {
            let replace = model
                .get(id)
                .is_none_or(|cur| (r.event_time, r.offset) > (cur.event_time, cur.offset));
            if replace {
                model.insert(*id, r.clone());
            }
        }
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&rows.len())) {
            let end = cut.clamp(start, rows.len());
            let batch = rows[start..end]
                .iter()
                .map(|(id, r)| (key(*id), r.clone()))
                .collect();
            store
                .apply(&t, step(start as u64, end as u64), batch)
                .await
                .unwrap();
            start = end;
        }
        let ids: Vec<i64> = (0..8).collect();
        let got = store
            .get_many(&t, &ids.iter().map(|id| key(*id)).collect::<Vec<_>>())
            .await
            .unwrap();
        for (id, got) in ids.iter().zip(got) {
            assert_eq!(got.as_ref(), model.get(id), "key {id}");
        }
        assert_eq!(store.offset(&t, 0).await.unwrap(), Some(rows.len() as u64));
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn redb_matches_the_model(
        writes in proptest::collection::vec((0i64..8, 0i64..20), 1..80),
        mut cuts in proptest::collection::vec(0usize..80, 0..6),
    ) {
        cuts.sort_unstable();
        runtime().block_on(differential(&redb().store, &writes, &cuts));
    }

    #[test]
    fn redis_cluster_matches_the_model(
        writes in proptest::collection::vec((0i64..8, 0i64..20), 1..80),
        mut cuts in proptest::collection::vec(0usize..80, 0..6),
    ) {
        cuts.sort_unstable();
        runtime().block_on(async {
            if let Some(f) = redis_cluster().await {
                differential(&f.store, &writes, &cuts).await;
            }
        });
    }

    #[test]
    fn redis_matches_the_model(
        writes in proptest::collection::vec((0i64..8, 0i64..20), 1..80),
        mut cuts in proptest::collection::vec(0usize..80, 0..6),
    ) {
        cuts.sort_unstable();
        runtime().block_on(async {
            if let Some(f) = redis().await {
                differential(&f.store, &writes, &cuts).await;
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_steps_of_many_partitions_at_once() {
    steps_of_many_partitions_at_once_land_or_are_refused_alone(&redb().store).await;
}

#[tokio::test]
async fn redis_cluster_steps_of_many_partitions_at_once() {
    if let Some(f) = redis_cluster().await {
        steps_of_many_partitions_at_once_land_or_are_refused_alone(&f.store).await;
    }
}
