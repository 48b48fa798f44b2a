//! A group's vector index through the store: fed by the write path (newer rows replace, older
//! ones change nothing, a null embedding removes), filtered by its attributes, saved and loaded
//! again at restart without a rebuild.

use bytes::Bytes;
use kairos_store::{
    FeatureStore, InsertOptions, NearestQuery, SearchPath, StoreConfig, StoreError,
};
use kairos_types::value::format_timestamp;
use kairos_types::{FeatureGroupSpec, Format};

const T0: i64 = 1_714_521_600_000_000;
const DIM: usize = 8;

fn items_spec() -> FeatureGroupSpec {
    serde_json::from_value(serde_json::json!({
        "name": "items",
        "columns": [
            {"name": "item_id", "type": "int64"},
            {"name": "ts", "type": "timestamp"},
            {"name": "embedding", "type": format!("embedding({DIM})")},
            {"name": "in_stock", "type": "bool"},
            {"name": "region", "type": "string"},
        ],
        "primary_key": ["item_id"],
        "event_time": "ts",
        "vector_index": {"column": "embedding", "metric": "cosine", "attributes": ["in_stock", "region"], "exact_below": 0.1},
    }))
    .unwrap()
}

/// A deterministic vector per item: spread on the sphere by a simple hash.
fn vector(item: i64) -> Vec<f32> {
    (0..DIM as i64)
        .map(|d| (((item * 7919 + d * 104_729) % 1000) as f32 / 500.0) - 1.0)
        .collect()
}

fn row(item: i64, at: i64, embedding: Option<Vec<f32>>) -> serde_json::Value {
    serde_json::json!({
        "item_id": item,
        "ts": format_timestamp(at),
        "embedding": embedding,
        "in_stock": item % 3 != 0,
        "region": if item % 4 == 0 { "SE" } else { "DE" },
    })
}

async fn insert(store: &FeatureStore, rows: &[serde_json::Value]) {
    let body: String = rows.iter().map(|r| format!("{r}\n")).collect();
    let ack = store
        .insert(
            "items",
            None,
            Format::JsonLines,
            Bytes::from(body),
            InsertOptions::default(),
        )
        .await
        .unwrap();
    store.wait_indexed("items", None, &ack).await.unwrap();
}

/// Items 1 to `n`, each with its own vector, at `T0`.
async fn insert_items(store: &FeatureStore, n: i64) {
    let rows: Vec<_> = (1..=n).map(|i| row(i, T0, Some(vector(i)))).collect();
    insert(store, &rows).await;
}

fn cosine_distance(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    1.0 - dot / (norm(a) * norm(b))
}

/// The k nearest items by brute force among `items` that pass `keep`.
fn exact(
    query: &[f32],
    items: impl Iterator<Item = i64>,
    keep: impl Fn(i64) -> bool,
    k: usize,
) -> Vec<i64> {
    let mut scored: Vec<(f32, i64)> = items
        .filter(|&i| keep(i))
        .map(|i| (cosine_distance(query, &vector(i)), i))
        .collect();
    scored.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    scored.into_iter().take(k).map(|(_, i)| i).collect()
}

fn by_vector(vector: &[f32], k: usize, filter: Option<&str>) -> NearestQuery {
    NearestQuery {
        vector: Some(vector.to_vec()),
        k,
        filter: filter.map(str::to_owned),
        ..Default::default()
    }
}

fn keys(store: &FeatureStore, query: &NearestQuery) -> Vec<i64> {
    store
        .nearest("items", None, query)
        .unwrap()
        .neighbours
        .iter()
        .map(|n| n.key as i64)
        .collect()
}

#[tokio::test]
async fn the_index_follows_the_log_filters_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    follows_filters_and_survives(StoreConfig::with_data_dir(dir.path())).await;
}

/// The same with the group's log on Kafka (librdkafka's mock cluster): the index follows every
/// partition of the topic, and its file keeps each partition's position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_follows_a_kafka_log_and_survives_a_restart() {
    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        log: super::kafka::kafka(cluster.bootstrap_servers()),
        ..StoreConfig::with_data_dir(dir.path())
    };
    follows_filters_and_survives(config).await;
}

async fn follows_filters_and_survives(config: StoreConfig) {
    let store = FeatureStore::open(config.clone()).await.unwrap();
    store.create_group(items_spec()).await.unwrap();
    insert_items(&store, 400).await;

    let query = vector(1_000);
    let nearest = keys(&store, &by_vector(&query, 10, None));
    assert_eq!(nearest, exact(&query, 1..=400, |_| true, 10));

    // Filtered: only keys in stock in SE, and still ten of them.
    let filter = "in_stock = true AND region = 'SE'";
    let passes = |i: i64| i % 3 != 0 && i % 4 == 0;
    let outcome = store
        .nearest("items", None, &by_vector(&query, 10, Some(filter)))
        .unwrap();
    assert_eq!(
        outcome.allowed,
        Some((1..=400).filter(|&i| passes(i)).count())
    );
    let found: Vec<i64> = outcome.neighbours.iter().map(|n| n.key as i64).collect();
    assert_eq!(found, exact(&query, 1..=400, passes, 10));
    assert_eq!(outcome.path, SearchPath::Graph, "a sixth pass: the walk");
    // A filter over a column the index does not keep is refused by name.
    let outcome = store
        .nearest(
            "items",
            None,
            &by_vector(
                &query,
                10,
                Some("region = 'SE' and in_stock and item_id_copy < 0"),
            ),
        )
        .unwrap_err();
    assert!(
        outcome
            .to_string()
            .contains("'item_id_copy' is not an attribute"),
        "{outcome}"
    );

    // A newer row moves item 5 onto the query; an older row for item 6 changes nothing; a null
    // embedding takes item 7 out.
    insert(
        &store,
        &[
            row(5, T0 + 1, Some(query.clone())),
            row(6, T0 - 1, Some(query.clone())),
            row(7, T0 + 1, None),
        ],
    )
    .await;
    let nearest = keys(&store, &by_vector(&query, 400, None));
    assert_eq!(nearest[0], 5);
    assert_ne!(nearest[1], 6);
    assert!(!nearest.contains(&7));
    assert_eq!(nearest.len(), 399);

    // Similar items: by key, the key left out.
    let similar = keys(
        &store,
        &NearestQuery {
            key: Some(5),
            k: 3,
            ..Default::default()
        },
    );
    assert_eq!(
        similar,
        exact(&query, (1..=400).filter(|&i| i != 5 && i != 7), |_| true, 3)
    );
    let missing = store.nearest(
        "items",
        None,
        &NearestQuery {
            key: Some(7),
            k: 3,
            ..Default::default()
        },
    );
    assert!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "{missing:?}"
    );
    let bad = store.nearest(
        "items",
        None,
        &NearestQuery {
            vector: Some(vec![1.0; 3]),
            k: 3,
            ..Default::default()
        },
    );
    assert!(
        matches!(&bad, Err(StoreError::BadRequest(m)) if m.contains("3 components")),
        "{bad:?}"
    );

    store.close().await;
    drop(store);
    let file = config.data_dir.join("vectors/items/v1/embedding.hnsw");
    assert!(file.exists(), "the index is saved at shutdown");

    // Restarted: the saved index answers alike at once, and takes the log's new rows.
    let store = FeatureStore::open(config).await.unwrap();
    let again = keys(&store, &by_vector(&query, 400, None));
    assert_eq!(again, nearest);
    insert(&store, &[row(401, T0, Some(query.clone()))]).await;
    let top: Vec<i64> = keys(&store, &by_vector(&query, 2, None));
    assert_eq!(
        top.iter()
            .copied()
            .collect::<std::collections::HashSet<_>>(),
        [5, 401].into()
    );
    let few = "in_stock = false AND region = 'SE'";
    let filtered = store
        .nearest("items", None, &by_vector(&query, 5, Some(few)))
        .unwrap();
    assert_eq!(
        filtered.path,
        SearchPath::Exact,
        "a twelfth pass, below exact_below: the scan"
    );
    let found: Vec<i64> = filtered.neighbours.iter().map(|n| n.key as i64).collect();
    assert_eq!(
        found,
        exact(
            &query,
            (1..=401).filter(|&i| i != 7),
            |i| i % 12 == 0 && i != 401,
            5
        )
    );
    store.close().await;
}

#[tokio::test]
async fn a_vector_index_needs_an_embedding_column_and_one_integer_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = FeatureStore::open(StoreConfig::with_data_dir(dir.path()))
        .await
        .unwrap();
    let mut spec = items_spec();
    spec.vector_index.as_mut().unwrap().column = "region".into();
    let err = store.create_group(spec).await.unwrap_err().to_string();
    assert!(
        err.contains("vector_index: column 'region' has type string, expected an embedding"),
        "{err}"
    );
    let mut spec = items_spec();
    spec.vector_index
        .as_mut()
        .unwrap()
        .attributes
        .push("colour".into());
    let err = store.create_group(spec).await.unwrap_err().to_string();
    assert!(
        err.contains("attribute 'colour' is not in columns"),
        "{err}"
    );
    store.close().await;
}

/// Two replicas of a cluster (a Kafka log, a PostgreSQL catalog, a bucket): the first publishes
/// its saved index to the bucket when it stops, and the second, started on an empty data dir,
/// fetches that snapshot before it follows the log — it has the index file at once, before any
/// save of its own — and answers as the first did. A snapshot that does not load is not kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_replica_starts_its_index_from_the_published_snapshot() {
    let Some(bucket) = kairos_storage::testing::s3_url("store-vectors") else {
        eprintln!("skipped: KAIROS_TEST_S3_URL is not set");
        return;
    };
    let create = || kairos_catalog::testing::TestDatabase::create("kairos_store_vectors");
    let Some(db) = tokio::task::spawn_blocking(create).await.unwrap() else {
        eprintln!("skipped: KAIROS_TEST_POSTGRES_URL is not set");
        return;
    };
    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let log = super::kafka::kafka(cluster.bootstrap_servers());
    let config = |dir: &tempfile::TempDir| StoreConfig {
        catalog: kairos_store::CatalogConfig {
            url: Some(db.url()),
        },
        storage: kairos_store::StorageConfig {
            url: Some(bucket.clone()),
        },
        log: log.clone(),
        ..StoreConfig::with_data_dir(dir.path())
    };
    let a = FeatureStore::open(config(&dir_a)).await.unwrap();
    a.create_group(items_spec()).await.unwrap();
    insert_items(&a, 200).await;
    let query = vector(1_000);
    let nearest = keys(&a, &by_vector(&query, 20, None));
    assert_eq!(nearest, exact(&query, 1..=200, |_| true, 20));
    a.close().await;
    drop(a);

    let file = dir_b.path().join("vectors/items/v1/embedding.hnsw");
    let b = FeatureStore::open(config(&dir_b)).await.unwrap();
    assert!(
        file.exists(),
        "the snapshot is fetched before the group starts"
    );
    assert_eq!(keys(&b, &by_vector(&query, 20, None)), nearest);
    // And it follows the log past the snapshot.
    insert(&b, &[row(201, T0, Some(query.clone()))]).await;
    assert_eq!(keys(&b, &by_vector(&query, 1, None)), vec![201]);
    let answer = keys(&b, &by_vector(&query, 20, None));
    b.close().await;
    drop(b);

    // A snapshot that does not load is not kept: a third replica builds its index from the log.
    let dir_c = tempfile::tempdir().unwrap();
    let storage = kairos_store::Storage::open(Some(&bucket), dir_c.path()).unwrap();
    storage
        .write(
            &["vectors", "items", "v1", "embedding.hnsw"],
            Bytes::from_static(b"not an index"),
        )
        .await
        .unwrap();
    let c = FeatureStore::open(config(&dir_c)).await.unwrap();
    assert!(
        !dir_c
            .path()
            .join("vectors/items/v1/embedding.hnsw")
            .exists()
    );
    let started = std::time::Instant::now();
    loop {
        let rebuilt = keys(&c, &by_vector(&query, 20, None));
        if rebuilt == answer {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "the index was never rebuilt from the log: {rebuilt:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    c.close().await;
    tokio::task::spawn_blocking(move || drop(db)).await.unwrap();
}
