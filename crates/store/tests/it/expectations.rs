//! Expectations on the write path: a refusing rule refuses the batch whole, a quarantining one
//! splits it between the group and its quarantine group, and every batch gets its report.

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use kairos_store::{
    FeatureStore, InsertOptions, OfflineFilter, OnlineConfig, StoreConfig, StoreError,
};
use kairos_types::Format;
use kairos_types::expectations::{Expectation, FAILED_EXPECTATIONS, OnFailure, Outcome};

use super::{HOUR, T0, open, spec};

fn expectation(column: &str, on_failure: OnFailure) -> Expectation {
    Expectation {
        column: column.into(),
        min: None,
        max: None,
        one_of: Vec::new(),
        matches: None,
        min_not_null_share: None,
        max_age_seconds: None,
        on_failure,
    }
}

async fn offline(store: &FeatureStore, group: &str) -> Vec<RecordBatch> {
    store.wait_materialised(group, None).await.unwrap();
    store
        .read_offline(group, None, OfflineFilter::default())
        .await
        .unwrap()
        .collect()
        .await
        .unwrap()
}

fn keys(batches: &[RecordBatch]) -> Vec<i64> {
    let mut keys: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    keys.sort();
    keys
}

fn csv(rows: &str) -> Bytes {
    Bytes::from(format!("cc_num,ts,amount\n{rows}"))
}

#[tokio::test]
async fn a_refusing_expectation_refuses_the_batch_whole() {
    let f = open(OnlineConfig::Redb).await;
    let mut s = spec(None);
    s.expectations = vec![Expectation {
        min: Some(0.0),
        ..expectation("amount", OnFailure::Refuse)
    }];
    f.store.create_group(s).await.unwrap();
    let bad = csv("1,2024-05-01T00:00:00Z,5\n2,2024-05-01T00:00:00Z,-3\n");
    let err = f
        .store
        .insert("cards", None, Format::Csv, bad, InsertOptions::default())
        .await
        .unwrap_err();
    let StoreError::BadRequest(message) = err else {
        panic!("expected a refusal, got {err:?}");
    };
    assert_eq!(
        message,
        "column 'amount': expectation 'min 0' failed for 1 of 2 rows, the first at row 1; \
         the batch is refused whole"
    );
    assert_eq!(
        f.store
            .describe("cards", None)
            .await
            .unwrap()
            .log_end_offset,
        0
    );
    // No quarantine group for a group that only refuses.
    assert!(f.store.describe("cards_quarantine", None).await.is_err());

    let good = csv("1,2024-05-01T00:00:00Z,5\n");
    let ack = f
        .store
        .insert("cards", None, Format::Csv, good, InsertOptions::default())
        .await
        .unwrap();
    let report = ack.validation.unwrap();
    assert_eq!((ack.rows, report.accepted, report.quarantined), (1, 1, 0));
    assert_eq!(report.results[0].outcome, Outcome::Passed);
    f.store.close().await;
}

#[tokio::test]
async fn quarantined_rows_go_to_the_quarantine_group_with_the_rules_they_broke() {
    let f = open(OnlineConfig::Redb).await;
    let mut s = spec(None);
    s.expectations = vec![
        Expectation {
            max: Some(1000.0),
            ..expectation("amount", OnFailure::Quarantine)
        },
        // The fixture's clock stands at T0 + 10 h.
        Expectation {
            max_age_seconds: Some(3600),
            ..expectation("ts", OnFailure::Quarantine)
        },
    ];
    f.store.create_group(s.clone()).await.unwrap();
    let quarantine = f.store.describe("cards_quarantine", None).await.unwrap();
    assert!(!quarantine.group.spec.online);

    let at = |micros| {
        chrono::DateTime::from_timestamp_micros(micros)
            .unwrap()
            .to_rfc3339()
    };
    let (recent, old) = (at(T0 + 9 * HOUR + 1), at(T0));
    let rows = format!("1,{recent},10\n2,{recent},5000\n3,{old},10\n4,{old},5000\n5,{recent},\n");
    let ack = f
        .store
        .insert(
            "cards",
            None,
            Format::Csv,
            csv(&rows),
            InsertOptions { wait_online: true },
        )
        .await
        .unwrap();
    let report = ack.validation.clone().unwrap();
    assert_eq!(
        (ack.rows, report.rows, report.accepted, report.quarantined),
        (2, 5, 2, 3)
    );
    let failed: Vec<(u64, Option<u64>, Outcome)> = report
        .results
        .iter()
        .map(|r| (r.failed_rows, r.first_failed_row, r.outcome))
        .collect();
    assert_eq!(
        failed,
        [
            (2, Some(1), Outcome::Quarantined),
            (2, Some(2), Outcome::Quarantined)
        ]
    );

    assert_eq!(keys(&offline(&f.store, "cards").await), [1, 5]);
    let online = f
        .store
        .get_online("cards", None, &[vec![kairos_types::Value::Int64(2)]])
        .await
        .unwrap();
    assert_eq!(online[0].status, kairos_store::KeyStatus::NotFound);
    let held = offline(&f.store, "cards_quarantine").await;
    assert_eq!(keys(&held), [2, 3, 4]);
    let mut reasons: Vec<String> = held
        .iter()
        .flat_map(|b| {
            let reasons = b
                .column_by_name(FAILED_EXPECTATIONS)
                .unwrap()
                .as_string::<i32>();
            (0..reasons.len())
                .map(|i| reasons.value(i).to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            "amount max 1000",
            "amount max 1000; ts max_age_seconds 3600",
            "ts max_age_seconds 3600"
        ]
    );

    // A batch wholly quarantined writes nothing to the group and is still acknowledged.
    let ack = f
        .store
        .insert(
            "cards",
            None,
            Format::Csv,
            csv(&format!("6,{recent},9999\n")),
            InsertOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!((ack.rows, ack.first_offset, ack.end_offset), (0, 2, 2));
    assert_eq!(
        f.store
            .describe("cards_quarantine", None)
            .await
            .unwrap()
            .log_end_offset,
        4
    );
    let super::Fixture { store, dir, .. } = f;
    store.close().await;
    drop(store);

    // After a restart, and for the group's next version with the same columns, the same
    // quarantine group serves.
    let store = FeatureStore::open(StoreConfig::with_data_dir(dir.path()))
        .await
        .unwrap();
    store.create_group(s).await.unwrap();
    let versions: Vec<u32> = store
        .list_groups()
        .unwrap()
        .into_iter()
        .filter(|g| g.spec.name == "cards_quarantine")
        .map(|g| g.version)
        .collect();
    assert_eq!(versions, [1]);
    store.close().await;
}
