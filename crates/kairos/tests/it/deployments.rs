//! Deployments through a real server: a model trained on the card-fraud view deployed, asked
//! for predictions (single, batch, a missing entity, a bad request), swapped for a new model
//! version under load with no failed request, and every prediction found in its inference log.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kairos_model::predictor::Predictor;
use serde_json::json;

use crate::models::{card_fraud_training_dataset, json as out_json, kairos, train_card_fraud};
use crate::server::Server;

const CARD: i64 = 4000123412341234;

/// The transaction being scored; its time is the example data's (profiles go stale after a
/// year).
fn request() -> serde_json::Value {
    json!({"ts": "2024-05-03T09:00:00Z", "amount": 250.0, "category": "travel", "latitude": 48.85, "longitude": 2.35})
}

/// Trains two GBDT versions of `card_fraud` on the example's training dataset.
fn two_trained_versions(data: &Path) {
    card_fraud_training_dataset(data);
    for trees in ["10", "30"] {
        train_card_fraud(data, &[], trees);
    }
}

async fn post(
    client: &reqwest::Client,
    url: String,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let response = client.post(url).json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_predicts_from_online_features_and_swaps_models_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    two_trained_versions(&data);
    let server = Server::start(&data).await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", server.url);

    let (status, applied) = post(
        &client,
        url("/v1/deployments"),
        json!({"name": "fraud", "model": "card_fraud", "model_version": 1, "slo": {"latency_ms": 50.0}}),
    )
    .await;
    assert_eq!(status, 201, "{applied}");
    assert_eq!(applied["revision"], 1);

    // One entity: the features are the view's online vector with the frozen transforms, and
    // the probability is the registered model's on exactly those features.
    let (status, answer) = post(
        &client,
        url("/v1/deployments/fraud/predict"),
        json!({"entries": [CARD], "request": request(), "return_features": true}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["model_version"], 1);
    let names: Vec<String> = serde_json::from_value(answer["features"].clone()).unwrap();
    let prediction = &answer["predictions"][0];
    assert_eq!(prediction["status"], "complete");
    let features: Vec<f64> = prediction["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap_or(f64::NAN))
        .collect();
    let (_, vectors) = post(
        &client,
        url("/v1/feature-views/card_fraud/vectors"),
        json!({"entries": [CARD], "request": request(), "training_dataset_version": 1}),
    )
    .await;
    let columns: Vec<String> = serde_json::from_value(vectors["columns"].clone()).unwrap();
    for (name, value) in names.iter().zip(&features) {
        let at = columns
            .iter()
            .position(|c| c == name)
            .expect("a view column");
        let expected = &vectors["vectors"][0]["values"][at];
        let expected = expected
            .as_f64()
            .or_else(|| expected.as_bool().map(f64::from))
            .unwrap();
        assert!(
            (expected - value).abs() < 1e-12,
            "{name}: {expected} vs {value}"
        );
    }
    // The server holds the data dir: the registry is asked through it.
    let model: kairos_model::Model = serde_json::from_value(out_json(&kairos(
        &data,
        &[
            "--url",
            &server.url,
            "model",
            "describe",
            "card_fraud",
            "--version",
            "1",
        ],
    )))
    .unwrap();
    let artifact = std::fs::read(data.join("models/card_fraud/v1/model.json")).unwrap();
    let predictor = Predictor::load(&model, &artifact).unwrap();
    let probability = predictor.predict(&features, 1).unwrap()[0];
    assert!((prediction["probability"].as_f64().unwrap() - probability).abs() < 1e-12);
    assert_eq!(prediction["label"], i32::from(probability >= 0.5));

    // A batch with an unknown card: its profile features are missing, it still gets a score.
    let (status, batch) = post(
        &client,
        url("/v1/deployments/fraud/predict"),
        json!({"entries": [CARD, 4000987698769876_i64, 1], "request": request()}),
    )
    .await;
    assert_eq!(status, 200, "{batch}");
    let predictions = batch["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 3);
    assert_eq!(predictions[2]["status"], "incomplete");
    assert_eq!(predictions[2]["missing"], json!(["card_profiles"]));
    assert!(predictions.iter().all(|p| p["probability"].is_f64()));

    // A request without a request-time value is refused, naming it.
    let (status, refused) = post(
        &client,
        url("/v1/deployments/fraud/predict"),
        json!({"entries": [CARD], "request": {"ts": "2024-05-03T09:00:00Z", "amount": 1.0}}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'category' is missing"),
        "{refused}"
    );

    // Hot swap under load: clients predict without pause while model v2 is applied. No
    // request fails, and once a client has seen v2 it never sees v1 again.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            let url = url("/v1/deployments/fraud/predict");
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut versions = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let (status, answer) = post(
                        &client,
                        url.clone(),
                        json!({"entries": [CARD], "request": request()}),
                    )
                    .await;
                    assert_eq!(status, 200, "{answer}");
                    versions.push(answer["model_version"].as_u64().unwrap());
                }
                versions
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, applied) = post(
        &client,
        url("/v1/deployments"),
        json!({"name": "fraud", "model": "card_fraud", "slo": {"latency_ms": 50.0}}),
    )
    .await;
    assert_eq!(status, 201, "{applied}");
    assert_eq!(applied["revision"], 2);
    assert_eq!(applied["model_version"], 2, "the latest version is pinned");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut under_load = 0;
    for c in clients {
        let versions = c.await.unwrap();
        under_load += versions.len();
        let first_v2 = versions
            .iter()
            .position(|v| *v == 2)
            .expect("the swap was seen");
        assert!(versions[..first_v2].iter().all(|v| *v == 1));
        assert!(versions[first_v2..].iter().all(|v| *v == 2), "{versions:?}");
        assert!(first_v2 > 0, "the clients ran before the swap");
    }

    let status: serde_json::Value = client
        .get(url("/v1/deployments/fraud"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["revision"], 2);
    assert_eq!(status["inference_log_dropped"], 0);
    let answered = 2 + under_load as u64;
    assert_eq!(status["latency"]["requests"], answered);
    assert_eq!(status["latency"]["errors"], 1);
    let metrics = client
        .get(url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        r#"kairos_deployment_stage_seconds_bucket{deployment="fraud",stage="lookup""#,
        r#"kairos_deployment_stage_seconds_bucket{deployment="fraud",stage="predict""#,
        r#"kairos_deployment_requests_total{deployment="fraud",status="bad_request"} 1"#,
        r#"kairos_deployment_slo_compliance{deployment="fraud"}"#,
    ] {
        assert!(metrics.contains(series), "{series} not in /metrics");
    }

    // A clean stop flushes the inference log: one row per predicted entry, none dropped. The
    // rows are read from the offline store once it has caught up with the log (a restarted
    // server's materialiser applies what the log holds).
    server.stop();
    let server = Server::start(&data).await;
    let group = format!("{}/v1/feature-groups/fraud_inference_log", server.url);
    let mut caught_up = false;
    for _ in 0..300 {
        let status: serde_json::Value = client
            .get(&group)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["log_end_offset"] == status["offline_offset"] {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        caught_up,
        "the offline store did not catch up with the inference log"
    );
    let rows = client
        .get(format!("{group}/offline"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let logged: Vec<serde_json::Value> = rows
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(logged.len() as u64, 1 + 3 + under_load as u64);
    let v2 = logged.iter().filter(|r| r["model_version"] == 2).count();
    assert!(v2 > 0 && v2 < logged.len());
    assert!(logged.iter().all(|r| r["latency_us"].as_i64().unwrap() > 0));
    assert!(
        logged
            .iter()
            .any(|r| r["cc_num"] == 1 && r["profile_credit_limit"].is_null())
    );

    // The restarted server loaded the live revision from the catalog.
    let (status, answer) = post(
        &client,
        format!("{}/v1/deployments/fraud/predict", server.url),
        json!({"entries": [CARD], "request": request()}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["revision"], 2);
    assert_eq!(answer["model_version"], 2);
}

/// Whether Python's tritonclient is importable; when it is not, a test that needs it is
/// skipped, unless `KAIROS_REQUIRE_INTEROP` is set (as in CI), where that fails it.
pub(crate) fn tritonclient_available() -> bool {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import tritonclient.http, tritonclient.grpc, numpy"])
        .output();
    if probe.is_ok_and(|o| o.status.success()) {
        return true;
    }
    assert!(
        std::env::var("KAIROS_REQUIRE_INTEROP").is_err(),
        "python tritonclient is required but missing"
    );
    eprintln!("skipped: python3 -c 'import tritonclient' failed");
    false
}

/// NVIDIA's tritonclient (the Python package, not this code) drives the server over the Open
/// Inference Protocol, HTTP and gRPC: metadata, readiness, configuration, and inference with
/// JSON and binary tensors on a deployment and on a registered ONNX model. Skipped where
/// tritonclient is not installed, unless `KAIROS_REQUIRE_INTEROP=1` (as in CI).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_speaks_to_kairos_over_http_and_grpc() {
    if !tritonclient_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    card_fraud_training_dataset(&data);
    train_card_fraud(&data, &[], "10");
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/models");
    out_json(&kairos(
        &data,
        &[
            "model",
            "register",
            &models.join("fraud_logistic.toml").display().to_string(),
            "--artifact",
            &models.join("fraud_logistic.onnx").display().to_string(),
        ],
    ));
    let server = Server::start(&data).await;
    let client = reqwest::Client::new();
    let (status, _) = post(
        &client,
        format!("{}/v1/deployments", server.url),
        json!({"name": "fraud", "model": "card_fraud"}),
    )
    .await;
    assert_eq!(status, 201);
    let cards = json!([CARD, 4000987698769876_i64, 1]);
    let (_, answer) = post(
        &client,
        format!("{}/v1/deployments/fraud/predict", server.url),
        json!({"entries": cards, "request": request()}),
    )
    .await;
    let probabilities: Vec<f64> = answer["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["probability"].as_f64().unwrap())
        .collect();
    let recorded: serde_json::Value =
        serde_json::from_slice(&std::fs::read(models.join("expected.json")).unwrap()).unwrap();
    let expected = json!({
        "deployment": "fraud",
        "cards": cards,
        "request": request(),
        "probabilities": probabilities,
        "model": "fraud_logistic",
        "inputs": recorded["inputs"],
        "model_probabilities": recorded["fraud_logistic"],
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tritonclient_check.py");
    let address = server.url.trim_start_matches("http://").to_string();
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(script)
            .arg(address)
            .arg(expected.to_string())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    eprint!("{}", String::from_utf8_lossy(&run.stdout));
}

/// Training over REST, then the V2 REST protocol without a client library: metadata with -1
/// dimensions, readiness, inference with nested JSON data and with binary tensor data (the
/// deployment answers the same), and errors as `{"error": "..."}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_v2_rest_protocol_takes_json_and_binary_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    card_fraud_training_dataset(&data);
    let server = Server::start(&data).await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", server.url);
    let get = |path: &str| {
        let request = client.get(url(path));
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<serde_json::Value>().await.unwrap())
        }
    };
    // Trained in the running server, over REST.
    let (status, model) = post(
        &client,
        url("/v1/train"),
        json!({"feature_view": "card_fraud", "label": "is_fraud", "trees": 10}),
    )
    .await;
    assert_eq!(status, 201, "{model}");
    assert_eq!(model["lineage"]["training_dataset_version"], 1);
    let (status, refused) = post(
        &client,
        url("/v1/train"),
        json!({"feature_view": "card_fraud", "label": "amount"}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'amount' is not a label")
    );

    let (status, server_metadata) = get("/v2").await;
    assert_eq!(status, 200);
    assert_eq!(server_metadata["name"], "kairos");
    assert!(server_metadata["extensions"].is_array());
    assert_eq!(get("/v2/health/live").await.0, 200);
    assert_eq!(get("/v2/health/ready").await, (200, json!({"ready": true})));
    let (status, missing) = get("/v2/models/fraud").await;
    assert_eq!(status, 404);
    assert!(
        missing["error"].as_str().unwrap().contains("not found"),
        "{missing}"
    );

    // The registered model is a V2 model before any deployment: its feature tensor.
    let (status, model) = get("/v2/models/card_fraud/versions/1").await;
    assert_eq!(status, 200, "{model}");
    assert_eq!(model["inputs"][0]["name"], "features");
    assert_eq!(model["inputs"][0]["shape"][0], -1);

    let (status, _) = post(
        &client,
        url("/v1/deployments"),
        json!({"name": "fraud", "model": "card_fraud"}),
    )
    .await;
    assert_eq!(status, 201);
    let (status, metadata) = get("/v2/models/fraud").await;
    assert_eq!(status, 200, "{metadata}");
    assert_eq!(metadata["versions"], json!(["1"]));
    assert_eq!(
        metadata["inputs"][0],
        json!({"name": "cc_num", "datatype": "INT64", "shape": [-1]})
    );
    assert_eq!(get("/v2/models/fraud/ready").await.0, 200);
    assert_eq!(get("/v2/models/fraud/versions/7/ready").await.0, 404);
    let (status, config) = get("/v2/models/fraud/config").await;
    assert_eq!(status, 200);
    assert_eq!(config["input"][0]["data_type"], "TYPE_INT64");

    let r = request();
    let cards = [CARD, 4000987698769876];
    let json_request = json!({
        "id": "r1",
        "inputs": [
            {"name": "cc_num", "datatype": "INT64", "shape": [2, 1], "data": [[cards[0]], [cards[1]]]},
            {"name": "ts", "datatype": "BYTES", "shape": [2], "data": [r["ts"], r["ts"]]},
            {"name": "amount", "datatype": "FP64", "shape": [2], "data": [r["amount"], r["amount"]]},
            {"name": "category", "datatype": "BYTES", "shape": [2], "data": [r["category"], r["category"]]},
            {"name": "latitude", "datatype": "FP64", "shape": [2], "data": [r["latitude"], r["latitude"]]},
            {"name": "longitude", "datatype": "FP64", "shape": [2], "data": [r["longitude"], r["longitude"]]},
        ]
    });
    let (status, answer) = post(&client, url("/v2/models/fraud/infer"), json_request.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["model_name"], "fraud");
    assert_eq!(answer["id"], "r1");
    let probability = &answer["outputs"][0];
    assert_eq!(probability["name"], "probability");
    assert_eq!(probability["datatype"], "FP64");
    assert_eq!(probability["shape"], json!([2]));
    let (_, simple) = post(
        &client,
        url("/v1/deployments/fraud/predict"),
        json!({"entries": cards, "request": r}),
    )
    .await;
    for i in 0..2 {
        assert_eq!(
            probability["data"][i],
            simple["predictions"][i]["probability"]
        );
    }

    // The same request with cc_num and category as binary data, and binary outputs.
    let mut header = json_request.clone();
    let mut binary = Vec::new();
    for (i, bytes) in [
        (
            0,
            cards
                .iter()
                .flat_map(|c| c.to_le_bytes())
                .collect::<Vec<u8>>(),
        ),
        (3, {
            let c = r["category"].as_str().unwrap().as_bytes();
            [c, c]
                .iter()
                .flat_map(|c| {
                    (c.len() as u32)
                        .to_le_bytes()
                        .into_iter()
                        .chain(c.iter().copied())
                })
                .collect()
        }),
    ] {
        let input = &mut header["inputs"][i];
        input.as_object_mut().unwrap().remove("data");
        input["parameters"] = json!({"binary_data_size": bytes.len()});
        binary.extend(bytes);
    }
    header["parameters"] = json!({"binary_data_output": true});
    let head = serde_json::to_vec(&header).unwrap();
    let mut body = head.clone();
    body.extend(&binary);
    let response = client
        .post(url("/v2/models/fraud/infer"))
        .header("Inference-Header-Content-Length", head.len())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let length: usize = response.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = response.bytes().await.unwrap();
    let head: serde_json::Value = serde_json::from_slice(&bytes[..length]).unwrap();
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 16);
    let first = f64::from_le_bytes(bytes[length..length + 8].try_into().unwrap());
    assert_eq!(json!(first), simple["predictions"][0]["probability"]);

    // Errors: {"error": "..."} with a non-200 status.
    let mut wrong = json_request.clone();
    wrong["inputs"][2]["data"] = json!(["a lot", "more"]);
    let (status, error) = post(&client, url("/v2/models/fraud/infer"), wrong).await;
    assert_eq!(status, 400);
    assert!(
        error["error"].as_str().unwrap().contains("input 'amount'"),
        "{error}"
    );
    let mut uneven = json_request.clone();
    uneven["inputs"][1] =
        json!({"name": "ts", "datatype": "BYTES", "shape": [1], "data": [r["ts"]]});
    let (status, error) = post(&client, url("/v2/models/fraud/infer"), uneven).await;
    assert_eq!(status, 400);
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("input 'ts' has 1 elements"),
        "{error}"
    );
    let mut short = json_request;
    short["inputs"][2]["shape"] = json!([3]);
    let (status, error) = post(&client, url("/v2/models/fraud/infer"), short).await;
    assert_eq!(status, 400);
    assert!(
        error["error"].as_str().unwrap().contains("shape [3]"),
        "{error}"
    );
}
