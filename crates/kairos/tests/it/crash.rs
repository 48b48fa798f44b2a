//! The crash test: inserts run against a real server that is killed with SIGKILL at random
//! points; after each restart every acknowledged row is in the offline store exactly once, no
//! row is there twice, and `check` is clean (DESIGN invariant 1).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use reqwest::Client;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::server::Server;

const KILLS: usize = 12;
const WRITERS: usize = 4;

fn spec() -> Value {
    json!({
        "name": "crashy",
        "columns": [
            {"name": "id", "type": "int64"},
            {"name": "ts", "type": "timestamp"},
            {"name": "seq", "type": "int64"},
            {"name": "amount", "type": "float64"}
        ],
        "primary_key": ["id"],
        "event_time": "ts"
    })
}

/// Writes batches until the server goes away; returns the `seq`s of acknowledged rows.
async fn writer(url: String, seq: Arc<AtomicI64>, seed: u64) -> Vec<i64> {
    let client = Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut acked = Vec::new();
    loop {
        let rows = rng.random_range(1..40);
        let mut body = String::new();
        let mut seqs = Vec::with_capacity(rows);
        for _ in 0..rows {
            let s = seq.fetch_add(1, Ordering::SeqCst);
            // Few ids and scattered event times: many late events.
            let id = rng.random_range(0..50);
            let ts = 1_700_000_000 + rng.random_range(0..10_000);
            body.push_str(&format!(
                "{{\"id\": {id}, \"ts\": {ts}, \"seq\": {s}, \"amount\": {}}}\n",
                s as f64 / 2.0
            ));
            seqs.push(s);
        }
        let sent = client
            .post(format!("{url}/v1/feature-groups/crashy/rows"))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => acked.extend(seqs),
            Ok(r) => panic!(
                "insert refused: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            ),
            Err(_) => return acked,
        }
    }
}

async fn offline_seqs(client: &Client, url: &str) -> Vec<i64> {
    let text = client
        .get(format!("{url}/v1/feature-groups/crashy/offline"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_i64()
                .unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_at_random_points_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::new();
    let seq = Arc::new(AtomicI64::new(0));
    let acked: Arc<Mutex<HashSet<i64>>> = Arc::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);

    let mut server = Server::start(dir.path()).await;
    client
        .post(format!("{}/v1/feature-groups", server.url))
        .json(&spec())
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();

    for round in 0..KILLS {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                tokio::spawn(writer(
                    server.url.clone(),
                    seq.clone(),
                    (round * WRITERS + w) as u64,
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..600))).await;
        server.kill();
        for w in writers {
            acked.lock().await.extend(w.await.unwrap());
        }
        server = Server::start(dir.path()).await;

        // After every restart: nothing acknowledged is lost, nothing is there twice.
        let report: Value = client
            .get(format!("{}/v1/feature-groups/crashy/check", server.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(report["clean"], true, "round {round}: {report:#}");
        let seqs = offline_seqs(&client, &server.url).await;
        let mut counts: HashMap<i64, usize> = HashMap::new();
        for s in &seqs {
            *counts.entry(*s).or_default() += 1;
        }
        assert!(
            counts.values().all(|&c| c == 1),
            "round {round}: a row is in the offline store twice"
        );
        let acked = acked.lock().await;
        let lost: Vec<_> = acked
            .iter()
            .filter(|s| !counts.contains_key(s))
            .take(5)
            .collect();
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged rows lost, e.g. {lost:?}"
        );
    }
    let total = acked.lock().await.len();
    assert!(
        total > 100,
        "the test should have written something: {total} rows acknowledged"
    );
    server.stop();
}
