//! The model registry through the real binary: register a definition with its artifact, list,
//! describe, refuse a bad definition without taking a version, delete.

use std::path::Path;
use std::process::{Command, Output};

pub(crate) fn kairos(data_dir: &Path, args: &[&str]) -> Output {
    kairos_with(data_dir, &[], args)
}

/// `kairos` on `data_dir` with environment variables set (a cluster's configuration, say).
pub(crate) fn kairos_with(data_dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kairos"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("KAIROS_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

pub(crate) fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

const DEFINITION: &str = r#"
name = "fraud"
framework = "onnx"
description = "card fraud, trained elsewhere"

[signature]
inputs = [{ name = "features", datatype = "FP32", shape = [-1, 4] }]
outputs = [{ name = "probabilities", datatype = "FP32", shape = [-1, 2] }]

[lineage]
feature_view = "fraud_fv"
feature_view_version = 1
training_dataset_version = 3
"#;

#[test]
fn a_model_is_registered_with_its_artifact_listed_described_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let definition = dir.path().join("fraud.toml");
    std::fs::write(&definition, DEFINITION).unwrap();
    // A logistic regression exported from scikit-learn (examples/models/make_onnx.py).
    let artifact = dir.path().join("fraud.onnx");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/models/fraud_logistic.onnx"),
        &artifact,
    )
    .unwrap();
    let register = |def: &Path| {
        kairos(
            &data,
            &[
                "model",
                "register",
                def.to_str().unwrap(),
                "--artifact",
                artifact.to_str().unwrap(),
            ],
        )
    };

    let first = json(&register(&definition));
    assert_eq!(first["version"], 1);
    assert_eq!(first["artifact"], "fraud.onnx");
    assert_eq!(first["lineage"]["training_dataset_version"], 3);
    assert_eq!(
        std::fs::read(data.join("models/fraud/v1/fraud.onnx")).unwrap(),
        std::fs::read(&artifact).unwrap()
    );
    assert_eq!(json(&register(&definition))["version"], 2);

    // A bad definition is refused whole, naming the field, and takes no version.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, DEFINITION.replace("[-1, 4]", "[-1, 0]")).unwrap();
    let out = register(&bad);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("signature.inputs[0].shape"), "{stderr}");

    // Bytes tract cannot run are refused at registration, and take no version either.
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"not an onnx graph").unwrap();
    let out = kairos(
        &data,
        &[
            "model",
            "register",
            definition.to_str().unwrap(),
            "--artifact",
            junk.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the ONNX model cannot be run"), "{stderr}");

    let listed = json(&kairos(&data, &["model", "list"]));
    assert_eq!(listed.as_array().unwrap().len(), 2);
    let latest = json(&kairos(&data, &["model", "describe", "fraud"]));
    assert_eq!(latest["version"], 2);
    assert_eq!(latest["signature"]["inputs"][0]["shape"][1], 4);

    let out = kairos(&data, &["model", "delete", "fraud", "--version", "2"]);
    assert!(out.status.success());
    assert!(!data.join("models/fraud/v2/fraud.onnx").exists());
    assert_eq!(
        json(&kairos(&data, &["model", "describe", "fraud"]))["version"],
        1
    );
    let out = kairos(&data, &["model", "describe", "fraud", "--version", "2"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("model 'fraud' v2 not found"));
    // The next registration does not reuse the deleted version's number.
    assert_eq!(json(&register(&definition))["version"], 3);
}

/// The card-fraud feature-view example on `data`: both groups created and loaded, the view
/// applied and training dataset 1 made with a time split (5 train, 1 validation, 2 test rows).
pub(crate) fn card_fraud_training_dataset(data: &Path) -> serde_json::Value {
    card_fraud_training_dataset_with(data, &[])
}

/// The same with environment variables set for every command.
pub(crate) fn card_fraud_training_dataset_with(
    data: &Path,
    env: &[(&str, &str)],
) -> serde_json::Value {
    let example = |f: &str| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/feature_views")
            .join(f)
            .display()
            .to_string()
    };
    for group in ["transactions", "card_profiles"] {
        json(&kairos_with(
            data,
            env,
            &["fg", "create", &example(&format!("{group}.toml"))],
        ));
        let csv = example(&format!("{group}.csv"));
        json(&kairos_with(
            data,
            env,
            &["fg", "insert", group, &csv, "--wait-online"],
        ));
    }
    json(&kairos_with(
        data,
        env,
        &["fv", "apply", &example("card_fraud.toml")],
    ));
    json(&kairos_with(
        data,
        env,
        &[
            "fv",
            "training-data",
            "card_fraud",
            "--split",
            "time:2024-05-02T00:00:00Z,2024-05-02T12:00:00Z",
        ],
    ))
}

/// A GBDT of `trees` trees trained on the card-fraud example's training dataset and registered
/// (the next version of `card_fraud`).
pub(crate) fn train_card_fraud(
    data: &Path,
    env: &[(&str, &str)],
    trees: &str,
) -> serde_json::Value {
    json(&kairos_with(
        data,
        env,
        &[
            "train",
            "--feature-view",
            "card_fraud",
            "--label",
            "is_fraud",
            "--trees",
            trees,
        ],
    ))
}

/// `kairos train` on the feature-view example: a GBDT fitted on the training dataset's train
/// split (transforms applied), scored on validation and test, registered with its lineage; a
/// logistic regression refused for the missing profile values, naming the feature.
#[test]
fn a_model_is_trained_on_a_feature_views_training_dataset_and_registered() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let td = card_fraud_training_dataset(&data);
    assert_eq!(td["row_counts"]["train"], 5);

    let train = |extra: &[&str]| {
        let mut args = vec!["train", "--feature-view", "card_fraud"];
        args.extend_from_slice(extra);
        kairos(&data, &args)
    };
    let model = json(&train(&["--label", "is_fraud", "--trees", "10"]));
    assert_eq!(model["name"], "card_fraud");
    assert_eq!(model["version"], 1);
    assert_eq!(model["framework"], "gbdt");
    assert_eq!(model["metrics"]["task"], "binary");
    assert_eq!(model["metrics"]["test"]["rows"], 2);
    assert_eq!(model["metrics"]["validation"]["rows"], 1);
    let lineage = &model["lineage"];
    assert_eq!(lineage["training_dataset_version"], 1);
    assert_eq!(lineage["label"], "is_fraud");
    let features: Vec<&str> = lineage["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    // One-hot columns replace the category; keys, event time and the label are not features.
    assert!(features.contains(&"category__unknown") && !features.contains(&"category"));
    assert!(!features.contains(&"cc_num") && !features.contains(&"is_fraud"));
    assert_eq!(model["signature"]["inputs"][0]["shape"][1], features.len());
    assert_eq!(lineage["transforms"]["transforms"][0]["feature"], "amount");
    assert!(data.join("models/card_fraud/v1/model.json").is_file());

    let out = train(&["--label", "is_fraud", "--algorithm", "logistic"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("feature 'profile_home_latitude' is missing"),
        "{stderr}"
    );
    let out = train(&["--label", "amount"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("'amount' is not a label"));
    // Neither failure took a version.
    assert_eq!(
        json(&kairos(&data, &["model", "list"]))
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// The registry over REST: a model registered in process on the data dir and again through a
/// server on it (`kairos --url`, a multipart upload; a junk artifact refused), then listed,
/// described and deleted over REST.
#[tokio::test]
async fn registered_models_are_listed_described_and_deleted_over_rest() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let example = |f: &str| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/models")
            .join(f)
            .display()
            .to_string()
    };
    let register = &[
        "model",
        "register",
        &example("fraud_logistic.toml"),
        "--artifact",
        &example("fraud_logistic.onnx"),
    ];
    json(&kairos(&data, register));

    // The second version is registered through the server (a multipart upload).
    let server = crate::server::Server::start(&data).await;
    let client = reqwest::Client::new();
    let second = json(&kairos(
        &data,
        &[&["--url", server.url.as_str()][..], register].concat(),
    ));
    assert_eq!(second["version"], 2);
    assert_eq!(second["artifact"], "fraud_logistic.onnx");
    let junk = reqwest::multipart::Form::new()
        .text(
            "definition",
            std::fs::read_to_string(example("fraud_logistic.toml")).unwrap(),
        )
        .part(
            "artifact",
            reqwest::multipart::Part::bytes(b"not an onnx graph".to_vec()).file_name("junk.onnx"),
        );
    let refused = client
        .post(format!("{}/v1/models", server.url))
        .multipart(junk)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::BAD_REQUEST);
    let body: serde_json::Value = refused.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("the ONNX model cannot be run"),
        "{message}"
    );

    let models: serde_json::Value = client
        .get(format!("{}/v1/models", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models.as_array().unwrap().len(), 2);
    let first = json(&kairos(
        &data,
        &[
            "--url",
            &server.url,
            "model",
            "describe",
            "fraud_logistic",
            "--version",
            "1",
        ],
    ));
    assert_eq!(first["framework"], "onnx");
    assert_eq!(first["signature"]["outputs"][1]["name"], "probabilities");

    let out = kairos(
        &data,
        &[
            "--url",
            &server.url,
            "model",
            "delete",
            "fraud_logistic",
            "--version",
            "2",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !data
            .join("models/fraud_logistic/v2/fraud_logistic.onnx")
            .exists()
    );
    let missing = client
        .get(format!("{}/v1/models/fraud_logistic?version=2", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), reqwest::StatusCode::NOT_FOUND);
    let latest: serde_json::Value = client
        .get(format!("{}/v1/models/fraud_logistic", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(latest["version"], 1);
    server.stop();
}
