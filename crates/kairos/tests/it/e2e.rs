//! Walks the REST API of a real server, as the README does.

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::server::Server;

/// A refused insert: content type, body, expected status, and the cell the error must name.
type BadCase = (
    &'static str,
    Vec<u8>,
    StatusCode,
    Option<(&'static str, u64)>,
);

fn spec() -> Value {
    json!({
        "name": "cards",
        "description": "card profile features",
        "columns": [
            {"name": "cc_num", "type": "int64"},
            {"name": "ts", "type": "timestamp"},
            {"name": "avg_amount", "type": "float64"},
            {"name": "category", "type": "string"},
            {"name": "emb", "type": "embedding(2)"}
        ],
        "primary_key": ["cc_num"],
        "event_time": "ts",
        "online": true
    })
}

async fn insert(
    client: &Client,
    url: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> (StatusCode, Value) {
    let body: reqwest::Body = body.into();
    let len = body.as_bytes().map_or(0, <[u8]>::len);
    let response = client
        .post(format!("{url}/v1/feature-groups/cards/rows?wait=online"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{content_type} ({len} bytes): {e:?}"));
    let status = response.status();
    (status, response.json().await.unwrap())
}

async fn offline_lines(client: &Client, url: &str, query: &str) -> Vec<Value> {
    group_offline_lines(client, url, "cards", query).await
}

async fn group_offline_lines(client: &Client, url: &str, group: &str, query: &str) -> Vec<Value> {
    get_text(
        client,
        &format!("{url}/v1/feature-groups/{group}/offline?{query}"),
    )
    .await
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect()
}

async fn get_text(client: &Client, address: &str) -> String {
    client
        .get(address)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn online(client: &Client, url: &str, entries: Value) -> Value {
    client
        .post(format!("{url}/v1/feature-groups/cards/online"))
        .json(&json!({ "entries": entries }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn check_clean(client: &Client, url: &str) -> Value {
    group_check_clean(client, url, "cards").await
}

async fn group_check_clean(client: &Client, url: &str, group: &str) -> Value {
    let report: Value = client
        .get(format!("{url}/v1/feature-groups/{group}/check"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["clean"], json!(true), "{report:#}");
    report
}

#[tokio::test]
async fn rest_walkthrough_bad_input_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let url = server.url.clone();
    let client = Client::new();

    // Create, create again (a new version), delete that version.
    let created = client
        .post(format!("{url}/v1/feature-groups"))
        .json(&spec())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(created.json::<Value>().await.unwrap()["version"], 1);
    let again: Value = client
        .post(format!("{url}/v1/feature-groups"))
        .json(&spec())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["version"], 2);
    let deleted = client
        .delete(format!("{url}/v1/feature-groups/cards?version=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let listed: Value = client
        .get(format!("{url}/v1/feature-groups"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);

    // Inserts in two formats; the second carries a late event for card 1.
    let csv = "cc_num,ts,avg_amount,category,emb\n\
               1,2024-05-01T10:00:00Z,10.5,food,\"[0.1,0.2]\"\n\
               2,2024-05-01T11:00:00Z,20.0,travel,\n\
               3,1714561200,30.0,,\n";
    let (status, ack) = insert(&client, &url, "text/csv", csv).await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert_eq!(
        (ack["first_offset"].as_u64(), ack["end_offset"].as_u64()),
        (Some(0), Some(3))
    );
    assert_eq!(ack["online_visible"], true);
    let before_second = chrono::Utc::now().to_rfc3339();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let jsonl = "{\"cc_num\": 1, \"ts\": \"2024-04-30T00:00:00Z\", \"avg_amount\": 99.0}\n\
                 {\"cc_num\": 2, \"ts\": \"2024-05-02T00:00:00Z\", \"avg_amount\": 25.0, \"category\": \"fuel\"}\n";
    let (status, ack) = insert(&client, &url, "application/x-ndjson", jsonl).await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert_eq!(ack["end_offset"], 5);

    // Online: the late event did not overwrite card 1; card 2 moved on; card 9 is not there.
    let single: Value = client
        .get(format!("{url}/v1/feature-groups/cards/online?cc_num=1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        single["columns"],
        json!(["cc_num", "ts", "avg_amount", "category", "emb"])
    );
    assert_eq!(single["results"][0]["status"], "present");
    assert_eq!(single["results"][0]["values"][2], 10.5);
    let many = online(&client, &url, json!([{"cc_num": 2}, 9, [3]])).await;
    assert_eq!(many["results"][0]["values"][2], 25.0);
    assert_eq!(many["results"][1]["status"], "not_found");
    assert_eq!(many["results"][2]["status"], "present");

    // Offline (once materialised, which check waits for): all five rows; as known before the
    // second insert, three; by event time, fewer.
    check_clean(&client, &url).await;
    assert_eq!(offline_lines(&client, &url, "").await.len(), 5);
    assert_eq!(
        offline_lines(
            &client,
            &url,
            &format!("as_of={}", urlencode(&before_second))
        )
        .await
        .len(),
        3
    );
    let may_first = offline_lines(
        &client,
        &url,
        "start=2024-05-01T00:00:00Z&end=2024-05-02T00:00:00Z",
    )
    .await;
    assert_eq!(may_first.len(), 3);
    assert!(may_first.iter().all(|r| r["_offset"].as_i64().unwrap() < 3));
    check_clean(&client, &url).await;

    // Bad input: each refused with a reason, nothing written.
    let cases: Vec<BadCase> = vec![
        (
            "text/csv",
            b"cc_num,ts,avg_amount\n1,2024-05-01T00:00:00Z,abc\n".to_vec(),
            StatusCode::BAD_REQUEST,
            Some(("avg_amount", 1)),
        ),
        (
            "application/x-ndjson",
            b"{\"cc_num\": 5, \"ts\": 1}\n{\"ts\": 2}\n".to_vec(),
            StatusCode::BAD_REQUEST,
            Some(("cc_num", 2)),
        ),
        (
            "application/x-ndjson",
            b"{\"cc_num\": 5, \"ts\": \"not a time\"}\n".to_vec(),
            StatusCode::BAD_REQUEST,
            Some(("ts", 1)),
        ),
        (
            "application/x-ndjson",
            b"{\"cc_num\": 5, \"ts\": 1, \"nope\": 1}\n".to_vec(),
            StatusCode::BAD_REQUEST,
            Some(("nope", 1)),
        ),
        (
            "application/x-ndjson",
            b"{\"cc_num\": 5, \"ts\": 1, \"emb\": [1]}\n".to_vec(),
            StatusCode::BAD_REQUEST,
            Some(("emb", 1)),
        ),
        (
            "application/vnd.apache.parquet",
            b"PAR1 this is not parquet".to_vec(),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            "application/vnd.apache.arrow.stream",
            vec![0xff, 0xff, 0xff, 0xff, 0x10],
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            "image/png",
            b"x".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            None,
        ),
    ];
    for (content_type, body, expected_status, cell) in cases {
        let (status, error) = insert(&client, &url, content_type, body).await;
        assert_eq!(status, expected_status, "{content_type}: {error}");
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{error}"
        );
        if let Some((column, row)) = cell {
            assert_eq!(error["error"]["details"]["column"], column, "{error}");
            assert_eq!(error["error"]["details"]["row"], row, "{error}");
        }
    }
    assert!(oversized_upload_is_refused_up_front(&url).await);
    let missing = client
        .get(format!("{url}/v1/feature-groups/nope/online?id=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(missing.json::<Value>().await.unwrap()["error"]["code"] == "not_found");
    let bad_version = client
        .get(format!("{url}/v1/feature-groups/cards?version=latest"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_version.status(), StatusCode::BAD_REQUEST);
    let bad_version: Value = bad_version.json().await.unwrap();
    assert_eq!(bad_version["error"]["code"], "bad_request", "{bad_version}");
    let bad_key = online(&client, &url, json!([{"cc_num": "abc"}])).await;
    assert!(
        bad_key["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cc_num"),
        "{bad_key}"
    );
    assert_eq!(offline_lines(&client, &url, "").await.len(), 5);
    let described: Value = client
        .get(format!("{url}/v1/feature-groups/cards"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(described["log_end_offset"], 5);

    // The API documents itself and reports metrics.
    let openapi: Value = client
        .get(format!("{url}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(openapi["paths"]["/v1/feature-groups/{name}/rows"]["post"].is_object());
    let metrics = get_text(&client, &format!("{url}/metrics")).await;
    assert!(
        metrics.contains("kairos_http_request_duration_seconds"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kairos_materialiser_lag_rows"),
        "{metrics}"
    );

    let compacted = client
        .post(format!("{url}/v1/feature-groups/cards/compact"))
        .send()
        .await
        .unwrap();
    assert_eq!(compacted.status(), StatusCode::OK);

    // A restart keeps everything.
    server.stop();
    let server = Server::start(dir.path()).await;
    let url = server.url.clone();
    let after = online(&client, &url, json!([1, 2, 3])).await;
    assert!(
        after["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "present"),
        "{after}"
    );
    assert_eq!(offline_lines(&client, &url, "").await.len(), 5);
    check_clean(&client, &url).await;
    server.stop();
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

/// Announces a body over the server's limit (8 MiB in these tests) and expects a JSON 413 before
/// sending any of it, as a client using `Expect: 100-continue` (curl, for large bodies) would.
async fn oversized_upload_is_refused_up_front(url: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /v1/feature-groups/cards/rows HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-ndjson\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        9 << 20
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) =
        tokio::time::timeout(std::time::Duration::from_secs(2), stream.read(&mut buf)).await
    {
        if n == 0 {
            break;
        }
        response.extend_from_slice(&buf[..n]);
        if response.windows(4).any(|w| w == b"}}\r\n" || w == b"\"}}") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    text.contains("payload_too_large")
}

/// The README's expectations example over REST: the report in the answer, quarantined rows
/// readable as a group of their own, a refusal naming column, rule and row, and the metrics.
#[tokio::test]
async fn expectations_refuse_or_quarantine_and_report_every_batch() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let url = server.url.clone();
    let client = Client::new();
    let examples =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/feature_groups");
    let definition = std::fs::read_to_string(examples.join("card_payments.toml")).unwrap();
    let definition: Value = toml::from_str(&definition).unwrap();
    let created = client
        .post(format!("{url}/v1/feature-groups"))
        .json(&definition)
        .send()
        .await
        .unwrap();
    assert_eq!(
        created.status(),
        StatusCode::CREATED,
        "{}",
        created.text().await.unwrap()
    );

    let rows = |body: Vec<u8>| {
        client
            .post(format!(
                "{url}/v1/feature-groups/card_payments/rows?wait=online"
            ))
            .header("content-type", "text/csv")
            .body(body)
            .send()
    };
    let answer = rows(std::fs::read(examples.join("card_payments.csv")).unwrap())
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let ack: Value = answer.json().await.unwrap();
    assert_eq!(ack["rows"], 2, "{ack}");
    let report = &ack["validation"];
    assert_eq!(
        (report["rows"].as_u64(), report["quarantined"].as_u64()),
        (Some(4), Some(2))
    );
    let outcomes: Vec<(&str, &str, u64)> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["rule"].as_str().unwrap(),
                r["outcome"].as_str().unwrap(),
                r["failed_rows"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("min 0", "passed", 0),
            ("max 100000", "passed", 0),
            ("one_of [\"EUR\",\"SEK\",\"USD\"]", "quarantined", 1),
            ("matches ^[a-z0-9_]+$", "quarantined", 1),
            ("min_not_null_share 0.9", "passed", 0),
        ]
    );

    // `check` waits for the materialisers: the quarantined rows are in the offline table then.
    let check = group_check_clean(&client, &url, "card_payments_quarantine").await;
    assert_eq!(check["offline_rows"], 2, "{check}");
    let quarantined = group_offline_lines(&client, &url, "card_payments_quarantine", "").await;
    let mut held: Vec<(&str, &str)> = quarantined
        .iter()
        .map(|r| {
            (
                r["currency"].as_str().unwrap(),
                r["failed_expectations"].as_str().unwrap(),
            )
        })
        .collect();
    held.sort();
    assert_eq!(
        held,
        [
            ("DKK", "currency one_of [\"EUR\",\"SEK\",\"USD\"]"),
            ("EUR", "merchant matches ^[a-z0-9_]+$"),
        ]
    );

    let refused = rows(b"cc_num,ts,amount,currency,merchant\n1,2024-05-01T10:00:00Z,5,EUR,a\n2,2024-05-01T10:00:00Z,-1,EUR,b\n".to_vec())
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let error: Value = refused.json().await.unwrap();
    assert_eq!(
        error["error"]["message"],
        "column 'amount': expectation 'min 0' failed for 1 of 2 rows, the first at row 1; \
         the batch is refused whole",
        "{error}"
    );
    let metrics = get_text(&client, &format!("{url}/metrics")).await;
    for line in [
        "kairos_rows_quarantined_total{group=\"card_payments\",version=\"1\"} 2",
        "kairos_expectation_failures_total{group=\"card_payments\",version=\"1\",column=\"amount\",rule=\"min 0\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    server.stop();
}
