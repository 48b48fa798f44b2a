//! The card-fraud application end to end, small, in process: generate → stream through the
//! window pipelines → point-in-time training data → train → deploy → serve → score a live
//! period over HTTP. The model must beat a trivial baseline on the held-out period, and the
//! scores served online must equal the scores of the same payments' training-data rows
//! computed offline once their labels are in: no skew between the two paths, end to end.

use std::collections::HashMap;
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use kairos_demo::fraud::replay::{self, ReplayOptions};
use kairos_demo::fraud::{self, DemoConfig, Scenario};
use kairos_deploy::Deployments;
use kairos_model::Evaluation;
use kairos_pipeline::Pipelines;
use kairos_store::{FeatureStore, InsertOptions, StoreConfig};
use kairos_view::{Split, SplitName, TrainingDatasetRequest};

const TEN_MINUTES: i64 = 600_000_000;

fn config() -> DemoConfig {
    DemoConfig {
        seed: 11,
        cards: 1_000,
        merchants: 300,
        history_days: 14.5,
        live_minutes: 120,
        // A higher fraud rate than a bank's, so a small world has frauds to learn from.
        fraud_rate: 0.02,
        rate: 1_000.0,
        trees: 40,
        drift: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_stream_train_deploy_score_with_no_skew() {
    let dir = tempfile::tempdir().unwrap();
    let demo = config();
    let scenario = Scenario::generate(&demo);
    let store = FeatureStore::open(StoreConfig::with_data_dir(dir.path()))
        .await
        .unwrap();

    // History through the window pipelines.
    let pipelines = Pipelines::new(store.clone());
    fraud::apply_definitions(&store, &pipelines).await.unwrap();
    fraud::load_history(&store, &scenario).await.unwrap();
    fraud::wait_for_windows(&store, &pipelines, Duration::from_secs(300))
        .await
        .unwrap();
    pipelines.close().await;

    // Training data and the model: better than a trivial baseline on the held-out period.
    let dataset = fraud::training_data(&store, &scenario).await.unwrap();
    assert_eq!(
        dataset.unlabelled, 0,
        "payments older than the maturity gap all have labels"
    );
    let model = fraud::train(&store, &demo).await.unwrap();
    let Some(Evaluation::Binary {
        test: Some(test), ..
    }) = &model.spec.metrics
    else {
        panic!("no test metrics: {:?}", model.spec.metrics);
    };
    let prevalence = test.positives as f64 / test.rows as f64;
    assert!(test.positives >= 10, "{test:?}");
    // A constant score has ROC-AUC 0.5 and PR-AUC equal to the fraud share.
    assert!(test.roc_auc.unwrap() > 0.85, "{test:?}");
    assert!(test.pr_auc.unwrap() > 5.0 * prevalence, "{test:?}");

    // Serve, and replay the live period; every third payment is scored once the pipelines
    // have caught up with every payment before it.
    fraud::deploy(&store).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(kairos_serve::serve(
        store.clone(),
        listener,
        Default::default(),
        async {
            let _ = stopped.await;
        },
    ));
    fraud::wait_ready(&url, Duration::from_secs(60))
        .await
        .unwrap();
    let options = ReplayOptions {
        url: url.clone(),
        deployment: "fraud".into(),
        rate: demo.rate,
        settle_every: Some(3),
    };
    let (stats, scored) = replay::replay(&store, &scenario, &options, |_| {})
        .await
        .unwrap();
    assert_eq!(stats.sent as usize, scenario.live().len());
    assert!(scored.len() > 150, "{} live payments", scored.len());
    // Every prediction reaches the inference log while the server runs, within the log's
    // flush interval, not when a batch fills or the server stops.
    let mut logged = 0;
    for _ in 0..50 {
        logged = store
            .describe("fraud_inference_log", None)
            .await
            .unwrap()
            .log_end_offset;
        if logged >= scored.len() as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        logged,
        scored.len() as u64,
        "predictions in the inference log"
    );

    // The rest of the truth arrives later; then the live period's training rows can be built.
    let later: Vec<_> = scenario
        .generated
        .labels
        .iter()
        .filter(|l| {
            l.ts >= scenario.live_end && l.tx_ts >= scenario.cut && l.tx_ts < scenario.live_end
        })
        .cloned()
        .collect();
    store
        .insert_batch(
            fraud::LABELS_GROUP,
            None,
            &fraud::labels_batch(&later),
            InsertOptions::default(),
        )
        .await
        .unwrap();
    let live_rows = store
        .create_training_dataset(
            fraud::VIEW,
            None,
            TrainingDatasetRequest {
                start: Some(scenario.cut),
                end: Some(scenario.live_end),
                split: Split::None,
                strict: true,
                as_known_at: false,
                description: "the live period, for the skew check".into(),
            },
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(live_rows.unlabelled, 0);
    // Read with the transforms frozen with the model's training data, as serving applies them.
    let frozen = kairos_view::TrainingDataset {
        transforms: dataset.transforms.clone(),
        ..live_rows
    };
    let batches = store
        .read_training_dataset(&frozen, SplitName::Train, true)
        .await
        .unwrap();
    let offline = offline_scores(&store, &model, &batches).await;
    assert_eq!(
        offline.len(),
        scored.len(),
        "one training row per live payment"
    );

    // Every payment of the sample for which the stream had closed the windows before it: the
    // same score online and offline. (A window closes when a later payment is seen; the first
    // payment after a window boundary can be scored before anything closed the window it
    // follows, which the training data, built later, holds.)
    let mut previous = scenario.history().last().map_or(i64::MIN, |t| t.ts);
    let (mut compared, mut unclosed) = (0, 0);
    for s in &scored {
        let closed = s.ts.div_euclid(TEN_MINUTES) * TEN_MINUTES <= previous;
        previous = s.ts;
        if !s.settled {
            continue;
        }
        if !closed {
            unclosed += 1;
            continue;
        }
        let (want, row) = &offline[&(s.cc_num, s.ts)];
        let served = s
            .features
            .as_ref()
            .expect("settled payments keep their features");
        let differ: Vec<String> = model
            .spec
            .lineage
            .features
            .iter()
            .zip(served.iter().zip(row))
            .filter(|(_, (a, b))| a.unwrap_or(f64::NAN).to_bits() != b.to_bits())
            .map(|(name, (a, b))| format!("{name}: online {a:?} offline {b}"))
            .collect();
        assert!(
            differ.is_empty() && (s.probability - want).abs() <= 1e-12 * want.abs().max(1.0),
            "payment {} of card {} at {}: online {} offline {want}; {differ:?}",
            s.tx_id,
            s.cc_num,
            kairos_types::value::format_timestamp(s.ts),
            s.probability
        );
        compared += 1;
    }
    eprintln!(
        "{compared} settled payments scored alike online and offline; {unclosed} followed an unclosed window"
    );
    assert!(
        compared >= 30,
        "{compared} compared, {unclosed} after an unclosed window"
    );
    assert!(
        unclosed * 5 <= compared,
        "{compared} compared, {unclosed} after an unclosed window"
    );

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// The model's score and input of every training row, by (card, payment time).
async fn offline_scores(
    store: &FeatureStore,
    model: &kairos_model::Model,
    batches: &[RecordBatch],
) -> HashMap<(i64, i64), (f64, Vec<f64>)> {
    let deployments = Deployments::new(store.clone()).unwrap();
    let (labelled, scores) = fraud::quality::score(&deployments, model, batches)
        .await
        .unwrap();
    let rows = labelled.features.row_major();
    let mut keys = Vec::new();
    for b in batches {
        let cards = b
            .column_by_name("cc_num")
            .unwrap()
            .as_primitive::<Int64Type>();
        let times = b
            .column_by_name("ts")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>();
        keys.extend(
            cards
                .values()
                .iter()
                .zip(times.values())
                .map(|(c, t)| (*c, *t)),
        );
    }
    let width = labelled.features.cols;
    keys.into_iter()
        .zip(scores)
        .zip(rows.chunks(width))
        .map(|(((c, t), score), row)| ((c, t), (score, row.to_vec())))
        .collect()
}
