//! Faults beyond a kill during inserts (`crash.rs`) and pipeline checkpoints (`pipelines.rs`):
//! a server aborted between the two writes of a training-dataset build and of a model
//! registration (the files, then the catalog entry), a data dir on a full disk, and one the
//! server may not write. Each ends in a clear error or nothing half-made, and everything
//! acknowledged before is there after a restart.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::models::card_fraud_training_dataset;
use crate::server::Server;

async fn post(client: &Client, url: &str, body: &Value) -> reqwest::Result<(StatusCode, Value)> {
    let response = client.post(url).json(body).send().await?;
    let status = response.status();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

async fn get(client: &Client, url: &str) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// Starts a server with `point` armed, asks it for what passes the point, and waits for the
/// abort: the request gets no answer.
async fn abort_at(data: &Path, point: &str, path: &str, body: &Value) {
    let faults = format!("{point}=1");
    let server = Server::start_with(data, &[("KAIROS_FAULTS", &faults)]).await;
    let answer = post(&Client::new(), &format!("{}{path}", server.url), body).await;
    assert!(answer.is_err(), "{point} was not reached: {answer:?}");
    assert!(!server.wait_exit().success(), "{point} did not abort");
}

#[tokio::test]
async fn a_kill_between_files_and_catalog_entry_leaves_nothing_half_made() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    card_fraud_training_dataset(&data);
    let client = Client::new();
    let split = json!({"split": {"kind": "time", "validation_start": "2024-05-02T00:00:00Z", "test_start": "2024-05-02T12:00:00Z"}});
    let datasets = "/v1/feature-views/card_fraud/training-datasets";

    // A training dataset whose files were written but never recorded.
    abort_at(&data, "dataset.before_catalog", datasets, &split).await;
    let unfinished = data.join("training_datasets/card_fraud/v1/td2");
    assert!(unfinished.is_dir(), "the build stopped after its files");
    let server = Server::start(&data).await;
    assert!(
        !unfinished.exists(),
        "the unfinished build was swept at start"
    );
    let unlisted = client
        .get(format!("{}{datasets}/2", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(unlisted.status(), StatusCode::NOT_FOUND);
    let (status, td) = post(&client, &format!("{}{datasets}", server.url), &split)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{td}");
    assert_eq!(
        td["version"], 3,
        "the unfinished build's number is not handed out again"
    );
    server.stop();

    // A model whose artifact was stored but never registered.
    let train = json!({"feature_view": "card_fraud", "label": "is_fraud", "trees": 5});
    abort_at(&data, "model.before_catalog", "/v1/train", &train).await;
    let orphan = data.join("models/card_fraud/v1");
    assert!(
        orphan.is_dir(),
        "the registration stopped after its artifact"
    );
    let server = Server::start(&data).await;
    let models = get(&client, &format!("{}/v1/models", server.url)).await;
    assert_eq!(
        models,
        json!([]),
        "no version is listed without its artifact"
    );
    let (status, model) = post(&client, &format!("{}/v1/train", server.url), &train)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{model}");
    assert_eq!(
        model["version"], 2,
        "a reserved number is never handed out twice"
    );
    let ready = client
        .get(format!(
            "{}/v2/models/card_fraud/versions/2/ready",
            server.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ready.status(),
        StatusCode::OK,
        "the registered version serves"
    );
    server.stop();

    // The orphan goes once it is older than any registration still running could be.
    let files = std::fs::read_dir(&orphan)
        .unwrap()
        .map(|f| f.unwrap().path());
    let old = Command::new("touch")
        .args(["-d", "2 hours ago"])
        .args(files)
        .status()
        .unwrap();
    assert!(old.success());
    let server = Server::start(&data).await;
    assert!(!orphan.exists(), "the orphaned artifact was swept at start");
    assert!(data.join("models/card_fraud/v2").is_dir());
    server.stop();
}

/// A tmpfs of a fixed size mounted over a folder for the test's life.
struct Tmpfs<'a>(&'a Path);

impl<'a> Tmpfs<'a> {
    fn mount(at: &'a Path, size: &str) -> Tmpfs<'a> {
        std::fs::create_dir_all(at).unwrap();
        let options = format!("size={size}");
        mount(&["-t", "tmpfs", "-o", &options, "tmpfs"], at);
        Tmpfs(at)
    }

    /// Mounts it again with `options` (a new size, read-only), keeping its files.
    fn remount(&self, options: &str) {
        mount(&["-o", &format!("remount,{options}")], self.0);
    }
}

impl Drop for Tmpfs<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

fn mount(args: &[&str], at: &Path) {
    let status = Command::new("mount").args(args).arg(at).status().unwrap();
    assert!(status.success(), "mount {args:?} failed");
}

/// Mounting needs root; CI runs as root. Elsewhere the test says it did not run.
fn may_mount() -> bool {
    let uid = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&uid.stdout).trim() == "0"
}

fn filler_rows(first: usize, rows: usize) -> String {
    (first..first + rows)
        .map(|i| {
            format!(
                "{{\"id\": {i}, \"ts\": {}, \"payload\": \"{}\"}}\n",
                1_700_000_000 + i,
                "x".repeat(1000)
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_or_read_only_data_dir_refuses_writes_clearly_and_keeps_every_acknowledged_row() {
    if !may_mount() {
        eprintln!("not run: mounting a small tmpfs as the data dir needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let disk = Tmpfs::mount(&data, "40m");
    let client = Client::new();
    let server = Server::start(&data).await;
    let group = json!({
        "name": "filler",
        "columns": [
            {"name": "id", "type": "int64"},
            {"name": "ts", "type": "timestamp"},
            {"name": "payload", "type": "string"}
        ],
        "primary_key": ["id"],
        "event_time": "ts"
    });
    let (status, body) = post(
        &client,
        &format!("{}/v1/feature-groups", server.url),
        &group,
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Fill the disk: about 1 MB a batch until one is refused.
    let rows_url = format!("{}/v1/feature-groups/filler/rows", server.url);
    let mut acked = 0;
    let refusal = loop {
        assert!(acked < 100_000, "a 40 MB disk never filled");
        let response = client
            .post(&rows_url)
            .header("content-type", "application/x-ndjson")
            .body(filler_rows(acked, 1000))
            .send()
            .await
            .unwrap();
        if !response.status().is_success() {
            break (response.status(), response.text().await.unwrap());
        }
        acked += 1000;
    };
    assert_eq!(refusal.0, StatusCode::SERVICE_UNAVAILABLE, "{}", refusal.1);
    assert!(refusal.1.contains("takes no more writes"), "{}", refusal.1);
    assert!(acked > 0);
    // Reads go on while the disk is full.
    let listed = client
        .get(format!("{}/v1/feature-groups", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), StatusCode::OK);
    server.kill();

    // Room again: everything acknowledged is there, once, and the stores agree.
    disk.remount("size=400m");
    let server = Server::start(&data).await;
    wait_clean(&client, &server.url).await;
    let offline = client
        .get(format!("{}/v1/feature-groups/filler/offline", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut ids: Vec<i64> = offline
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), offline.lines().count(), "a row is there twice");
    assert!(
        ids.len() >= acked && ids[..acked].iter().zip(0..).all(|(id, i)| *id == i),
        "acknowledged rows lost: {} of {acked} there",
        ids.len()
    );
    server.stop();

    // Read-only: the server will not start on it, and says why.
    disk.remount("ro");
    let out = Command::new(env!("CARGO_BIN_EXE_kairos"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("KAIROS_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started on a read-only data dir");
    assert!(
        stderr.contains("data dir") && stderr.contains("cannot be written: Read-only file system"),
        "{stderr}"
    );
    disk.remount("rw");
}

/// Waits until `check` reports the group's stores agree with its log.
async fn wait_clean(client: &Client, url: &str) {
    let mut report = Value::Null;
    for _ in 0..100 {
        report = get(client, &format!("{url}/v1/feature-groups/filler/check")).await;
        if report["clean"] == true {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the stores never agreed: {report:#}");
}

/// A server started on storage it cannot use stops at once and names the engine and the
/// reason: a bucket that does not exist, an endpoint nothing listens on (within the check's
/// bound, not a hang), and a bucket without conditional PUT (turned off in the client here,
/// as a service without it would leave it), which would let two Delta committers overwrite
/// each other. Needs the test S3 service (`KAIROS_TEST_S3_URL`).
#[test]
fn a_server_refuses_storage_it_cannot_use_at_start() {
    let Some(url) = kairos_storage::testing::s3_url("refused") else {
        return;
    };
    let bucket = url.trim_start_matches("s3://").split('/').next().unwrap();
    let data = tempfile::tempdir().unwrap();
    let start = |storage: &str, env: &[(&str, &str)]| {
        let started = std::time::Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_kairos"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data.path())
            .env("KAIROS_LOG", "warn")
            .env("KAIROS_STORAGE_URL", storage)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "started on {storage} {env:?}: {stderr}"
        );
        assert!(started.elapsed() < Duration::from_secs(60), "{stderr}");
        stderr
    };

    let missing = start("s3://kairos-no-such-bucket/x", &[]);
    assert!(
        missing.contains("S3 s3://kairos-no-such-bucket/x") && missing.contains("NoSuchBucket"),
        "{missing}"
    );

    let nobody = start(&url, &[("AWS_ENDPOINT_URL", "http://127.0.0.1:9")]);
    assert!(nobody.contains(&format!("S3 s3://{bucket}")), "{nobody}");

    let unconditional = start(&url, &[("AWS_CONDITIONAL_PUT", "disabled")]);
    assert!(
        unconditional.contains("conditional PUT is turned off"),
        "{unconditional}"
    );
}
