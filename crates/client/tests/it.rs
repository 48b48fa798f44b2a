//! Every operation of the client on both backends: an embedded store on one data dir, and a
//! server (in this process, on loopback) on another. Each answers alike, fails alike, and
//! writes nothing of a refused batch.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use kairos_client::{
    Batches, Client, Embedded, ErrorKind, KeySpec, ReadFilter, Remote, RemoteOptions, Rows, Scope,
    Wait,
};
use kairos_store::{FeatureStore, KeyStatus, StoreConfig};
use kairos_types::{FeatureGroupSpec, Format};
use tokio::sync::oneshot;

/// A server on `dir`, in this process; it stops when the sender is dropped.
async fn server(
    dir: &std::path::Path,
) -> (String, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let store = FeatureStore::open(StoreConfig::with_data_dir(dir))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let options = kairos_serve::ServerOptions::default();
    let serving = tokio::spawn(async move {
        kairos_serve::serve(store, listener, options, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (url, stop, serving)
}

fn cards() -> FeatureGroupSpec {
    serde_json::from_value(serde_json::json!({
        "name": "cards",
        "primary_key": ["cc_num"],
        "event_time": "ts",
        "columns": [
            {"name": "cc_num", "type": "int64"},
            {"name": "ts", "type": "timestamp"},
            {"name": "amount", "type": "float64"},
        ],
    }))
    .unwrap()
}

fn csv(body: &'static str) -> Rows {
    Rows {
        format: Format::Csv,
        bytes: Bytes::from_static(body.as_bytes()),
    }
}

/// What one backend answered, for comparing the two.
#[derive(Debug, PartialEq)]
struct Seen {
    online: kairos_store::OnlineResponse,
    offline_rows: usize,
    offline_columns: Vec<String>,
    log_end_offset: u64,
    /// A refused batch's kind and message (a server's answer also has its status).
    refused: (ErrorKind, String),
}

async fn exercise(client: &Client) -> Seen {
    let group = client.create_group(&cards()).await.unwrap();
    assert_eq!(group.version, 1);
    let listed = client.list_groups().await.unwrap();
    assert!(listed.iter().any(|g| g.spec.name == "cards"), "{listed:?}");

    let rows = "cc_num,ts,amount\n1,2024-05-01T10:00:00Z,10.5\n2,2024-05-01T10:00:00Z,20\n1,2024-05-01T11:00:00Z,11\n";
    let ack = client
        .insert("cards", None, csv(rows), Wait::Online)
        .await
        .unwrap();
    assert_eq!(ack.rows, 3);
    assert!(ack.online_visible);
    // Rows in memory, as the Python SDK hands them over, waiting for both stores.
    let in_memory = kairos_types::ingest::parse_batch(
        &cards(),
        Format::Csv,
        Bytes::from_static(b"cc_num,ts,amount\n5,2024-05-01T12:00:00Z,50\n"),
    )
    .unwrap();
    let ack = client
        .insert_batch("cards", None, &in_memory, Wait::Stored)
        .await
        .unwrap();
    assert_eq!(ack.rows, 1);
    assert!(ack.online_visible);

    // A batch with one bad row is refused whole, naming the column and the row.
    let bad = "cc_num,ts,amount\n3,2024-05-01T10:00:00Z,1\n4,2024-05-01T10:00:00Z,lots\n";
    let refused = client
        .insert("cards", None, csv(bad), Wait::Logged)
        .await
        .unwrap_err();
    assert_eq!(refused.kind, ErrorKind::BadInput, "{refused}");
    assert!(refused.message.contains("amount"), "{refused}");

    let keys = [
        serde_json::json!(1),
        serde_json::json!(2),
        serde_json::json!(3),
    ];
    let online = client.get_online("cards", None, &keys).await.unwrap();
    let statuses: Vec<KeyStatus> = online.results.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [KeyStatus::Present, KeyStatus::Present, KeyStatus::NotFound],
        "key 3 was in the refused batch only"
    );
    assert_eq!(
        online.results[0].values.as_ref().unwrap()[2],
        serde_json::json!(11.0)
    );

    let Batches {
        schema,
        mut batches,
    } = client
        .read_offline("cards", None, ReadFilter::default())
        .await
        .unwrap();
    let mut offline_rows = 0;
    while let Some(batch) = batches.next().await {
        offline_rows += batch.unwrap().num_rows();
    }
    let later = ReadFilter {
        start: Some(1_714_560_000_000_000 + 1),
        ..ReadFilter::default()
    };
    let mut after_ten = client.read_offline("cards", None, later).await.unwrap();
    let mut rows_after_ten = 0;
    while let Some(batch) = after_ten.batches.next().await {
        rows_after_ten += batch.unwrap().num_rows();
    }
    assert_eq!(
        rows_after_ten, 2,
        "only the 11:00 and 12:00 rows are after 10:00"
    );
    let report = client.check_group("cards", None).await.unwrap();
    assert!(report.clean, "{report:?}");
    let status = client.describe_group("cards", Some(1)).await.unwrap();

    client.compact_group("cards", None).await.unwrap();
    let missing = client.describe_group("nobody", None).await.unwrap_err();
    assert_eq!(missing.kind, ErrorKind::NotFound, "{missing}");

    client.delete_group("cards", 1).await.unwrap();
    let gone = client.get_online("cards", None, &keys).await.unwrap_err();
    assert_eq!(gone.kind, ErrorKind::NotFound, "{gone}");

    Seen {
        online,
        offline_rows,
        offline_columns: schema.fields().iter().map(|f| f.name().clone()).collect(),
        log_end_offset: status.log_end_offset,
        refused: (refused.kind, refused.message),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_feature_group_operation_answers_alike_embedded_and_remote() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let embedded = Client::Embedded(
        Embedded::open(StoreConfig::with_data_dir(dirs.0.path()))
            .await
            .unwrap(),
    );
    let (url, stop, serving) = server(dirs.1.path()).await;
    let remote = Client::Remote(Remote::connect(&url, &RemoteOptions::default()).unwrap());

    let in_process = exercise(&embedded).await;
    let through_server = exercise(&remote).await;
    assert_eq!(
        in_process.offline_rows, 4,
        "a stored wait leaves every row offline before any check"
    );
    assert_eq!(in_process.log_end_offset, 4);
    assert_eq!(in_process, through_server);

    embedded.close().await.unwrap();
    remote.close().await.unwrap();
    drop(stop);
    tokio::time::timeout(Duration::from_secs(30), serving)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_server_out_of_reach_is_unavailable_and_named() {
    // A port nothing listens on: bound, then let go.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let client = Client::Remote(Remote::connect(&url, &RemoteOptions::default()).unwrap());
    let err = client.list_groups().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable, "{err}");
    assert!(err.message.contains(&url), "{err}");
}

/// What [`keys`] saw: the listing (name, scopes, revoked), the new token's prefix, and the
/// kinds of the two refusals.
type KeysSeen = (
    Vec<(String, Vec<Scope>, bool)>,
    String,
    ErrorKind,
    ErrorKind,
);

/// Issues, lists and revokes keys on a client that already holds an admin key (a server
/// closes to anonymous callers once one exists).
async fn keys(client: &Client) -> KeysSeen {
    let spec = |name: &str, scopes: Vec<Scope>| KeySpec {
        name: name.into(),
        scopes,
        feature_groups: None,
        deployments: None,
    };
    let issued = client
        .create_key(&spec("dashboard", vec![Scope::Read]))
        .await
        .unwrap();
    let revoked = client.revoke_key(&issued.key.id).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    let listed = client.list_keys().await.unwrap();
    let invalid = client
        .create_key(&spec("nobody", vec![]))
        .await
        .unwrap_err();
    assert!(invalid.message.contains("scopes"), "{invalid}");
    let unknown = client.revoke_key("0000").await.unwrap_err();
    (
        listed
            .into_iter()
            .map(|k| (k.spec.name.clone(), k.spec.scopes.clone(), !k.is_active()))
            .collect(),
        issued.token[..7].to_string(),
        invalid.kind,
        unknown.kind,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_issued_listed_and_revoked_alike_embedded_and_remote() {
    let admin = KeySpec {
        name: "ops".into(),
        scopes: vec![Scope::Admin],
        feature_groups: None,
        deployments: None,
    };
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let embedded = Client::Embedded(
        Embedded::open(StoreConfig::with_data_dir(dirs.0.path()))
            .await
            .unwrap(),
    );
    embedded.create_key(&admin).await.unwrap();
    let in_process = keys(&embedded).await;

    let (url, stop, serving) = server(dirs.1.path()).await;
    let anonymous = Client::Remote(Remote::connect(&url, &RemoteOptions::default()).unwrap());
    let token = anonymous.create_key(&admin).await.unwrap().token;
    let refused = anonymous.list_keys().await.unwrap_err();
    assert_eq!(refused.kind, ErrorKind::Unauthorised, "{refused}");
    let options = RemoteOptions {
        api_key: Some(token),
        ca_cert_pem: None,
    };
    let remote = Client::Remote(Remote::connect(&url, &options).unwrap());
    let through_server = keys(&remote).await;

    assert_eq!(in_process.0.len(), 2);
    assert_eq!(in_process.1, "kairos_");
    assert_eq!(
        (in_process.2, in_process.3),
        (ErrorKind::BadInput, ErrorKind::NotFound)
    );
    assert_eq!(in_process, through_server);

    embedded.close().await.unwrap();
    drop(stop);
    tokio::time::timeout(Duration::from_secs(30), serving)
        .await
        .unwrap()
        .unwrap();
}
