//! The README's feature-view walkthrough against a real server, with the example files.

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::server::Server;

fn example(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/feature_views")
        .join(name)
}

/// A TOML definition from the examples, as the JSON the REST API takes.
fn definition(name: &str) -> Value {
    let text = std::fs::read_to_string(example(name)).unwrap();
    let toml: toml::Value = toml::from_str(&text).unwrap();
    serde_json::to_value(toml).unwrap()
}

async fn call(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn feature_view_walkthrough() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let (client, url) = (Client::new(), server.url.clone());

    for group in ["transactions", "card_profiles"] {
        let (status, _) = call(
            client
                .post(format!("{url}/v1/feature-groups"))
                .json(&definition(&format!("{group}.toml"))),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        let csv = std::fs::read(example(&format!("{group}.csv"))).unwrap();
        let (status, ack) = call(
            client
                .post(format!("{url}/v1/feature-groups/{group}/rows?wait=online"))
                .header("content-type", "text/csv")
                .body(csv),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{ack}");
    }

    let (status, view) = call(
        client
            .post(format!("{url}/v1/feature-views"))
            .json(&definition("card_fraud.toml")),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{view}");
    assert_eq!(view["version"], 1);
    assert_eq!(view["root"]["version"], 1, "group versions are pinned");

    let mut bad = definition("card_fraud.toml");
    bad["join"][0]["on"] = json!({"category": "cc_num"});
    let (status, err) = call(client.post(format!("{url}/v1/feature-views")).json(&bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"]["code"], "invalid_definition");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("root column 'category' is string"),
        "{err}"
    );

    let split = json!({"split": {"kind": "time", "validation_start": "2024-05-02T00:00:00Z", "test_start": "2024-05-02T12:00:00Z"}});
    let (status, td) = call(
        client
            .post(format!(
                "{url}/v1/feature-views/card_fraud/training-datasets"
            ))
            .json(&split),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{td}");
    assert_eq!(
        td["row_counts"],
        json!({"train": 5, "validation": 1, "test": 2})
    );
    assert_eq!(
        td["log_offsets"],
        json!({"transactions_v1": 8, "card_profiles_v1": 3})
    );

    let (status, csv) = call(client.get(format!(
        "{url}/v1/feature-views/card_fraud/training-datasets/1/data?format=csv"
    )))
    .await;
    assert_eq!(status, StatusCode::OK);
    let csv = csv.as_str().unwrap().to_string();
    // The fraud at 10:07 on May 1 sees the limit set in April (2000), not May 2's (1000).
    let fraud = csv
        .lines()
        .find(|l| l.contains("2024-05-01T10:07:00Z"))
        .unwrap();
    assert!(
        fraud.contains(",2000.0,") && fraud.ends_with(",true"),
        "{fraud}"
    );
    let (_, transformed) = call(
        client.get(format!("{url}/v1/feature-views/card_fraud/training-datasets/1/data?format=csv&transformed=true&split=test")),
    )
    .await;
    let header = transformed
        .as_str()
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    assert!(
        header.contains("category__unknown") && !header.contains(",category,"),
        "{header}"
    );

    let request = json!({
        "entries": [{"cc_num": 4000123412341234u64}, {"cc_num": 4000555544443333u64}],
        "request": {"ts": "2024-05-03T09:00:00Z", "amount": 250.0, "category": "electronics", "latitude": 48.86, "longitude": 2.35},
        "training_dataset_version": 1
    });
    let (status, vectors) = call(
        client
            .post(format!("{url}/v1/feature-views/card_fraud/vectors"))
            .json(&request),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{vectors}");
    let columns = vectors["columns"].as_array().unwrap().len();
    assert_eq!(vectors["vectors"][0]["status"], "complete");
    assert_eq!(
        vectors["vectors"][0]["values"].as_array().unwrap().len(),
        columns
    );
    assert_eq!(vectors["vectors"][1]["status"], "incomplete");
    assert_eq!(vectors["vectors"][1]["missing"], json!(["card_profiles"]));

    // The same vectors as one Arrow IPC stream, the statuses in its metadata.
    let arrow = client
        .post(format!(
            "{url}/v1/feature-views/card_fraud/vectors?format=arrow"
        ))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(arrow.status(), StatusCode::OK);
    assert_eq!(
        arrow.headers()["content-type"],
        "application/vnd.apache.arrow.stream"
    );
    let batch = kairos_store::Vectors::from_ipc(arrow.bytes().await.unwrap()).unwrap();
    assert_eq!(batch.features.num_columns(), columns);
    assert_eq!(batch.features.num_rows(), 2);
    assert_eq!(batch.training_dataset_version, Some(1));
    assert_eq!(
        batch.missing,
        vec![vec![], vec!["card_profiles".to_string()]]
    );
    assert_eq!(
        batch.to_answer().vectors[0].values,
        vectors["vectors"][0]["values"].as_array().unwrap().clone()
    );
    let (status, err) = call(
        client
            .post(format!(
                "{url}/v1/feature-views/card_fraud/vectors?format=xml"
            ))
            .json(&request),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        err["error"]["message"].as_str().unwrap().contains("format"),
        "{err}"
    );

    let mut wrong = request.clone();
    wrong["request"]["amount"] = json!("lots");
    let (status, err) = call(
        client
            .post(format!("{url}/v1/feature-views/card_fraud/vectors"))
            .json(&wrong),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("request value 'amount'"),
        "{err}"
    );

    let (_, described) = call(client.get(format!("{url}/v1/feature-views/card_fraud"))).await;
    assert_eq!(described["training_datasets"].as_array().unwrap().len(), 1);
    let (status, _) =
        call(client.delete(format!("{url}/v1/feature-views/card_fraud?version=1"))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(
        client
            .post(format!("{url}/v1/feature-views/card_fraud/vectors"))
            .json(&request),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop();
}
