//! Two replicas on one cluster configuration — a PostgreSQL catalog, an S3 bucket (moto in CI)
//! and Redis — each with a data dir of its own: a deployment applied through one answers on the
//! other with the same prediction, a group made through one is served by the other, and a
//! deployment deleted through one goes from the other. Needs `KAIROS_TEST_POSTGRES_URL`,
//! `KAIROS_TEST_S3_URL` and `KAIROS_TEST_REDIS_URL` (`.ci/run` sets all three).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::cluster::ClusterConfig;
use crate::models::{card_fraud_training_dataset_with, train_card_fraud};
use crate::server::Server;

const CARD: i64 = 4000123412341234;

/// Polls `probe` until it answers, for at most 15 s; returns the answer and how long it took.
async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> (T, Duration) {
    let started = Instant::now();
    loop {
        if let Some(answer) = probe().await {
            return (answer, started.elapsed());
        }
        assert!(started.elapsed() < Duration::from_secs(15), "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_replica_applies_the_other_serves_alike() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cluster) = ClusterConfig::create("replicas", dir.path(), None).await else {
        return;
    };
    let env = cluster.env();
    let (a_data, b_data) = (dir.path().join("a"), dir.path().join("b"));

    // The card-fraud example and a model trained on it, through replica A's data dir.
    card_fraud_training_dataset_with(&a_data, &env);
    train_card_fraud(&a_data, &env, "10");
    let a = Server::start_with(&a_data, &env).await;
    let b = Server::start_with(&b_data, &env).await;
    let client = reqwest::Client::new();
    let predict = async |server: &Server| {
        let response = client
            .post(format!("{}/v1/deployments/fraud/predict", server.url))
            .json(&json!({
                "entries": [CARD],
                "request": {"ts": "2024-05-03T09:00:00Z", "amount": 250.0, "category": "travel",
                            "latitude": 48.85, "longitude": 2.35}
            }))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json::<serde_json::Value>().await.unwrap())
    };

    // A deployment applied on A answers on B, with A's answer.
    let applied = client
        .post(format!("{}/v1/deployments", a.url))
        .json(&json!({"name": "fraud", "model": "card_fraud", "model_version": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(applied.status().as_u16(), 201);
    let (on_b, took) = eventually("B serves the deployment applied on A", async || {
        let (status, answer) = predict(&b).await;
        (status == 200).then_some(answer)
    })
    .await;
    eprintln!("the deployment answered on B {took:?} after it was applied on A");
    let (status, on_a) = predict(&a).await;
    assert_eq!(status, 200, "{on_a}");
    assert_eq!(on_a["predictions"], on_b["predictions"]);
    assert_eq!(on_b["predictions"][0]["status"], "complete", "{on_b}");

    // A group made on A after both started is served by B too.
    let made = client
        .post(format!("{}/v1/feature-groups", a.url))
        .json(&json!({
            "name": "merchants",
            "columns": [{"name": "merchant", "type": "string"}, {"name": "ts", "type": "timestamp"},
                        {"name": "risk", "type": "float64"}],
            "primary_key": ["merchant"],
            "event_time": "ts"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        made.status().as_u16(),
        201,
        "{}",
        made.text().await.unwrap()
    );
    eventually("B knows the group made on A", async || {
        let response = client
            .get(format!("{}/v1/feature-groups/merchants", b.url))
            .send()
            .await
            .unwrap();
        response.status().is_success().then_some(())
    })
    .await;

    // A monitor applied on A is scheduled on B too, and each slot of its schedule runs on one
    // of them: counted mid-slot, the slots either ran add up to the slots A saw.
    let monitor = client
        .post(format!("{}/v1/monitors", a.url))
        .json(
            &json!({"name": "fraud_drift", "deployment": "fraud", "window": "1h",
                      "schedule": "1s"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        monitor.status().as_u16(),
        201,
        "{}",
        monitor.text().await.unwrap()
    );
    let slots = async |server: &Server| {
        let metrics = server.metrics().await;
        let count = |claim: &str| -> u64 {
            metrics
                .lines()
                .filter(|l| l.starts_with("kairos_monitor_schedule_slots_total{"))
                .filter(|l| {
                    l.contains("monitor=\"fraud_drift\"")
                        && l.contains(&format!("claim=\"{claim}\""))
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>() as u64
        };
        (count("here"), count("elsewhere"))
    };
    eventually("B schedules the monitor applied on A", async || {
        let (here, elsewhere) = slots(&b).await;
        (here + elsewhere >= 2).then_some(())
    })
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let to_mid_slot = (1500 - u64::from(now.subsec_millis())) % 1000;
    tokio::time::sleep(Duration::from_millis(to_mid_slot)).await;
    let ((a_here, a_elsewhere), (b_here, b_elsewhere)) = (slots(&a).await, slots(&b).await);
    eprintln!(
        "monitor slots: A ran {a_here} of {}, B ran {b_here} of {}",
        a_here + a_elsewhere,
        b_here + b_elsewhere
    );
    assert_eq!(
        a_here + b_here,
        a_here + a_elsewhere,
        "slots run on A {a_here}, on B {b_here}; A saw {}, B saw {}",
        a_here + a_elsewhere,
        b_here + b_elsewhere
    );

    // A deployment deleted on A goes from B.
    let deleted = client
        .delete(format!("{}/v1/deployments/fraud", a.url))
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success());
    eventually("B drops the deployment deleted on A", async || {
        let (status, _) = predict(&b).await;
        (status == 404).then_some(())
    })
    .await;
    a.stop();
    b.stop();
    cluster.remove().await;
}
