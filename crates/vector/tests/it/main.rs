//! The index against its reference, exact search: recall, filters, updates, persistence, and
//! refusals.

use kairos_vector::{
    HnswIndex, IndexConfig, LoadedIndex, Metric, SearchOptions, SearchPath, VectorError,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DIM: usize = 24;

fn random_vectors(n: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| (0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect())
        .collect()
}

fn build(metric: Metric, vectors: &[Vec<f32>]) -> HnswIndex {
    let index = HnswIndex::new(IndexConfig::new(DIM, metric)).unwrap();
    let items: Vec<(u64, &[f32])> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| (i as u64, v.as_slice()))
        .collect();
    index.upsert(&items).unwrap();
    index
}

fn keys(index: &HnswIndex, query: &[f32], k: usize, options: SearchOptions<'_>) -> Vec<u64> {
    index
        .search(query, k, options)
        .unwrap()
        .neighbours
        .iter()
        .map(|n| n.key)
        .collect()
}

/// Mean share of the exact top k that the index's top k holds.
fn recall(
    index: &HnswIndex,
    queries: &[Vec<f32>],
    k: usize,
    filter: Option<&(dyn Fn(u64) -> bool + Sync)>,
) -> f64 {
    let mut hits = 0;
    let mut total = 0;
    for query in queries {
        let exact = keys(
            index,
            query,
            k,
            SearchOptions {
                force: Some(SearchPath::Exact),
                filter,
                ..Default::default()
            },
        );
        let found = keys(
            index,
            query,
            k,
            SearchOptions {
                filter,
                ..Default::default()
            },
        );
        total += exact.len();
        hits += found.iter().filter(|key| exact.contains(key)).count();
    }
    hits as f64 / total as f64
}

#[test]
fn recall_against_exact_search_at_default_settings() {
    let vectors = random_vectors(3_000, 1);
    let queries = random_vectors(100, 2);
    for metric in [Metric::Cosine, Metric::L2, Metric::Dot] {
        let index = build(metric, &vectors);
        let recall = recall(&index, &queries, 10, None);
        assert!(recall >= 0.95, "{metric:?}: recall@10 {recall}");
    }
}

#[test]
fn filtered_search_returns_k_passing_keys_at_every_selectivity() {
    let vectors = random_vectors(3_000, 3);
    let queries = random_vectors(30, 4);
    let index = build(Metric::Cosine, &vectors);
    for percent in [0.2, 1.0, 4.0, 10.0, 50.0] {
        let passes = move |key: u64| (key % 1000) as f64 / 10.0 < percent;
        let passing = (0..3_000u64).filter(|&k| passes(k)).count();
        for query in &queries {
            let outcome = index
                .search(
                    query,
                    10,
                    SearchOptions {
                        filter: Some(&passes),
                        ..Default::default()
                    },
                )
                .unwrap();
            assert_eq!(
                outcome.neighbours.len(),
                10.min(passing),
                "{percent}% passing"
            );
            assert!(outcome.neighbours.iter().all(|n| passes(n.key)));
            assert_eq!(outcome.allowed, Some(passing));
            let expected_path = if (passing as f64) < 0.2 * 3_000.0 {
                SearchPath::Exact
            } else {
                SearchPath::Graph
            };
            if expected_path == SearchPath::Exact {
                assert_eq!(outcome.path, SearchPath::Exact, "{percent}% passing");
            }
        }
        let recall = recall(&index, &queries, 10, Some(&passes));
        assert!(recall >= 0.9, "{percent}% passing: recall@10 {recall}");
    }
}

#[test]
fn deleted_keys_are_never_returned_and_updates_move_a_key() {
    let vectors = random_vectors(1_000, 5);
    let index = build(Metric::L2, &vectors);
    let removed: Vec<u64> = (0..1_000).step_by(3).collect();
    assert_eq!(index.remove(&removed), removed.len());
    assert_eq!(index.remove(&[0]), 0, "already removed");
    for query in random_vectors(20, 6) {
        let found = keys(&index, &query, 50, SearchOptions::default());
        assert_eq!(found.len(), 50);
        assert!(
            found.iter().all(|key| key % 3 != 0),
            "a removed key came back"
        );
    }
    // Key 1 moves onto the query itself: it must be the nearest now.
    let query = vec![0.25f32; DIM];
    index.upsert(&[(1, query.as_slice())]).unwrap();
    let outcome = index.search(&query, 1, SearchOptions::default()).unwrap();
    assert_eq!(outcome.neighbours[0].key, 1);
    assert!(outcome.neighbours[0].distance.abs() < 1e-6);
    assert_eq!(index.stats().keys, 1_000 - removed.len());
    assert_eq!(index.stats().tombstones, removed.len() + 1);
}

#[test]
fn similar_leaves_the_key_itself_out() {
    let vectors = random_vectors(500, 7);
    let index = build(Metric::Cosine, &vectors);
    let outcome = index.similar(42, 5, SearchOptions::default()).unwrap();
    assert_eq!(outcome.neighbours.len(), 5);
    assert!(outcome.neighbours.iter().all(|n| n.key != 42));
    let exact = index
        .similar(
            42,
            5,
            SearchOptions {
                force: Some(SearchPath::Exact),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(outcome.neighbours[0].key, exact.neighbours[0].key);
    assert!(matches!(
        index.similar(9_999, 5, SearchOptions::default()),
        Err(VectorError::UnknownKey(9_999))
    ));
}

#[test]
fn a_saved_index_loads_with_its_position_and_answers_alike() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("items.kvx");
    let vectors = random_vectors(800, 8);
    let index = build(Metric::Dot, &vectors);
    index.remove(&[3, 4, 5]);
    index.save(&path, 1_234, b"beside").unwrap();
    let LoadedIndex {
        index: loaded,
        position,
        extra,
    } = HnswIndex::load(&path).unwrap();
    assert_eq!(position, 1_234);
    assert_eq!(extra, b"beside");
    assert_eq!(loaded.config(), index.config());
    assert_eq!(loaded.stats(), index.stats());
    for query in random_vectors(20, 9) {
        assert_eq!(
            index.search(&query, 10, SearchOptions::default()).unwrap(),
            loaded.search(&query, 10, SearchOptions::default()).unwrap()
        );
    }
    // The loaded index goes on taking writes.
    loaded.upsert(&[(5, vectors[5].as_slice())]).unwrap();
    assert!(loaded.contains(5) && !loaded.contains(4));

    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        HnswIndex::load(&path),
        Err(VectorError::Corrupt { .. })
    ));
}

#[test]
fn a_bad_vector_refuses_the_whole_batch() {
    let index = HnswIndex::new(IndexConfig::new(3, Metric::Cosine)).unwrap();
    let good = [1.0f32, 0.0, 0.0];
    let short = [1.0f32, 0.0];
    let nan = [1.0f32, f32::NAN, 0.0];
    let zero = [0.0f32; 3];
    let err = index.upsert(&[(1, &good), (2, &short)]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "vector for key 2 has 2 components, the index expects 3"
    );
    let err = index.upsert(&[(1, &good), (3, &nan)]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "vector for key 3 has a non-finite component at position 1"
    );
    let err = index.upsert(&[(4, &zero)]).unwrap_err();
    assert!(err.to_string().contains("zero"), "{err}");
    assert!(index.is_empty(), "nothing of a refused batch is applied");
    assert!(
        index
            .search(&short, 1, SearchOptions::default())
            .unwrap_err()
            .is_bad_request()
    );
    assert!(
        index
            .search(&good, 5, SearchOptions::default())
            .unwrap()
            .neighbours
            .is_empty()
    );
}
