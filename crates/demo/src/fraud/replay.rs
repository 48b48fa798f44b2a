//! The live period: each payment is scored by the deployment over HTTP, as a payment switch
//! would ask, at a steady rate, and then written to the payments group (where it becomes the
//! card's previous payment and feeds the window pipelines). Labels are written as they arrive,
//! and precision and recall are counted from those that have, as a bank would see them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use kairos_pipeline::PipelineStatus;
use kairos_store::{FeatureStore, InsertOptions};
use serde_json::json;

use super::{
    DemoError, LABELS_GROUP, Result, Scenario, TRANSACTIONS_GROUP, failed, labels_batch,
    transactions_batch, window_pipelines,
};
use crate::generator::Transaction;

/// How the replay runs.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// The server, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    pub deployment: String,
    /// Requests per second.
    pub rate: f64,
    /// Before every this many payments, wait until the window pipelines have caught up with
    /// the payments written, so the served features are exactly what training data would hold
    /// (the skew check's sample). `None`: never wait, as in production.
    pub settle_every: Option<usize>,
}

/// One scored payment.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub tx_id: i64,
    pub cc_num: i64,
    pub ts: i64,
    pub probability: f64,
    pub alert: bool,
    /// The truth, from the generator (the model never sees it).
    pub is_fraud: bool,
    /// Whether the pipelines had caught up before it was scored; the model's input is kept
    /// for those (null: missing).
    pub settled: bool,
    pub features: Option<Vec<Option<f64>>>,
}

/// The replay so far.
#[derive(Debug, Clone)]
pub struct ReplayStats {
    pub total: usize,
    pub sent: u64,
    pub elapsed: Duration,
    /// The event time reached (µs).
    pub event_time: i64,
    /// Round trips, µs.
    pub latency: Histogram<u64>,
    pub alerts: u64,
    /// Live payments whose label has arrived, and of those the frauds.
    pub labelled: u64,
    pub labelled_fraud: u64,
    /// Alerts on payments since labelled fraud, and since labelled genuine.
    pub caught: u64,
    pub false_alarms: u64,
}

impl ReplayStats {
    fn new(total: usize) -> ReplayStats {
        ReplayStats {
            total,
            sent: 0,
            elapsed: Duration::ZERO,
            event_time: 0,
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
            alerts: 0,
            labelled: 0,
            labelled_fraud: 0,
            caught: 0,
            false_alarms: 0,
        }
    }

    pub fn requests_per_second(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A latency quantile in milliseconds.
    pub fn latency_ms(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1_000.0
    }

    /// Of the alerts whose label has arrived, the share that were fraud.
    pub fn precision(&self) -> Option<f64> {
        let judged = self.caught + self.false_alarms;
        (judged > 0).then(|| self.caught as f64 / judged as f64)
    }

    /// Of the frauds labelled so far, the share alerted on.
    pub fn recall(&self) -> Option<f64> {
        (self.labelled_fraud > 0).then(|| self.caught as f64 / self.labelled_fraud as f64)
    }
}

/// Replays the scenario's live payments; `progress` sees the stats about four times a second.
pub async fn replay(
    store: &FeatureStore,
    scenario: &Scenario,
    options: &ReplayOptions,
    mut progress: impl FnMut(&ReplayStats),
) -> Result<(ReplayStats, Vec<Scored>)> {
    let client = reqwest::Client::new();
    let predict = format!(
        "{}/v1/deployments/{}/predict",
        options.url.trim_end_matches('/'),
        options.deployment
    );
    let live = scenario.live();
    let labels = scenario.live_labels();
    let mut next_label = 0;
    let mut stats = ReplayStats::new(live.len());
    let mut scored: Vec<Scored> = Vec::with_capacity(live.len());
    let mut by_id: HashMap<i64, usize> = HashMap::with_capacity(live.len());
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / options.rate.max(0.001)));
    let started = Instant::now();
    let mut shown = Instant::now();
    for (i, tx) in live.iter().enumerate() {
        ticks.tick().await;
        // Labels that have arrived by this payment's time.
        let arrived = labels[next_label..].partition_point(|l| l.ts <= tx.ts);
        if arrived > 0 {
            let batch = &labels[next_label..next_label + arrived];
            write_labels(store, batch).await?;
            for l in batch {
                count_label(&mut stats, &scored, &by_id, l.tx_id, l.is_fraud);
            }
            next_label += arrived;
        }
        let settled = options.settle_every.is_some_and(|n| i % n == 0);
        if settled {
            settle(&client, &options.url, store, Duration::from_secs(30)).await?;
        }
        let sent = Instant::now();
        let (probability, alert, features) = score(&client, &predict, tx, settled).await?;
        stats
            .latency
            .saturating_record(sent.elapsed().as_micros() as u64);
        stats.sent += 1;
        stats.alerts += u64::from(alert);
        stats.event_time = tx.ts;
        by_id.insert(tx.tx_id, scored.len());
        scored.push(Scored {
            tx_id: tx.tx_id,
            cc_num: tx.cc_num,
            ts: tx.ts,
            probability,
            alert,
            is_fraud: tx.is_fraud,
            settled,
            features,
        });
        // Now it is the card's previous payment, and in its windows.
        store
            .insert_batch(
                TRANSACTIONS_GROUP,
                None,
                &transactions_batch(std::slice::from_ref(tx)),
                InsertOptions { wait_online: true },
            )
            .await?;
        stats.elapsed = started.elapsed();
        if shown.elapsed() >= Duration::from_millis(250) {
            progress(&stats);
            shown = Instant::now();
        }
    }
    // The rest of the labels that arrive within the live period.
    let rest = &labels[next_label..];
    if !rest.is_empty() {
        write_labels(store, rest).await?;
        for l in rest {
            count_label(&mut stats, &scored, &by_id, l.tx_id, l.is_fraud);
        }
    }
    stats.event_time = scenario.live_end;
    stats.elapsed = started.elapsed();
    progress(&stats);
    Ok((stats, scored))
}

/// [`replay`] on a thread and a runtime of its own, as a separate client process would run: the
/// server's tasks on this process's runtime (pipelines, materialisers, the inference log) do not
/// delay the client's timer or its reading of answers, so what it measures is the server and the
/// network, as `kairos bench serve` measures them.
pub async fn replay_apart(
    store: FeatureStore,
    scenario: std::sync::Arc<Scenario>,
    options: ReplayOptions,
    progress: impl FnMut(&ReplayStats) + Send + 'static,
) -> Result<(ReplayStats, Vec<Scored>)> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("replay".into())
        .spawn(move || {
            let outcome = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(failed)
                .and_then(|rt| rt.block_on(replay(&store, &scenario, &options, progress)));
            let _ = done.send(outcome);
        })
        .map_err(failed)?;
    result
        .await
        .map_err(|_| failed("the replay thread ended without an answer"))?
}

async fn write_labels(store: &FeatureStore, labels: &[crate::generator::Label]) -> Result<()> {
    store
        .insert_batch(
            LABELS_GROUP,
            None,
            &labels_batch(labels),
            InsertOptions::default(),
        )
        .await?;
    Ok(())
}

fn count_label(
    stats: &mut ReplayStats,
    scored: &[Scored],
    by_id: &HashMap<i64, usize>,
    tx_id: i64,
    is_fraud: bool,
) {
    // Labels of payments from before the live period train the next model; they are not
    // this deployment's to count.
    let Some(&i) = by_id.get(&tx_id) else {
        return;
    };
    stats.labelled += 1;
    stats.labelled_fraud += u64::from(is_fraud);
    match (scored[i].alert, is_fraud) {
        (true, true) => stats.caught += 1,
        (true, false) => stats.false_alarms += 1,
        _ => {}
    }
}

/// The predict request for a payment: its card, and the payment itself as request values.
pub fn predict_body(tx: &Transaction) -> serde_json::Value {
    json!({
        // The payment's id as the request id: late labels join the inference log on it.
        "id": tx.tx_id.to_string(),
        "entries": [tx.cc_num],
        "request": {
            "ts": kairos_types::value::format_timestamp(tx.ts),
            "amount": tx.amount,
            "category": tx.category,
            "latitude": tx.latitude,
            "longitude": tx.longitude,
        }
    })
}

async fn score(
    client: &reqwest::Client,
    url: &str,
    tx: &Transaction,
    return_features: bool,
) -> Result<(f64, bool, Option<Vec<Option<f64>>>)> {
    let mut body = predict_body(tx);
    body["return_features"] = return_features.into();
    let response = client
        .post(url)
        .json(&body)
        .send()
        .await
        .map_err(|e| failed(format!("predict: {e}")))?;
    let status = response.status();
    let body: serde_json::Value = response
        .json()
        .await
        .map_err(|e| failed(format!("predict: {e}")))?;
    if !status.is_success() {
        return Err(failed(format!("predict answered {status}: {body}")));
    }
    let prediction = &body["predictions"][0];
    let probability = prediction["probability"]
        .as_f64()
        .ok_or_else(|| failed(format!("predict: no probability in {body}")))?;
    let features = prediction["features"]
        .as_array()
        .map(|values| values.iter().map(serde_json::Value::as_f64).collect());
    Ok((
        probability,
        prediction["label"].as_i64() == Some(1),
        features,
    ))
}

/// Waits until the server's window pipelines have read every payment written and their windows
/// are in the online store.
pub async fn settle(
    client: &reqwest::Client,
    url: &str,
    store: &FeatureStore,
    timeout: Duration,
) -> Result<()> {
    let started = Instant::now();
    let names: Vec<String> = window_pipelines()?.into_iter().map(|p| p.name).collect();
    loop {
        let mut statuses = Vec::new();
        for name in &names {
            let status: PipelineStatus = client
                .get(format!("{}/v1/pipelines/{name}", url.trim_end_matches('/')))
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| failed(format!("pipeline status: {e}")))?
                .json()
                .await
                .map_err(|e| failed(format!("pipeline status: {e}")))?;
            statuses.push(status);
        }
        if super::caught_up(store, &statuses).await? {
            return Ok(());
        }
        if started.elapsed() > timeout {
            return Err(DemoError::Failed(format!(
                "the window pipelines did not catch up within {timeout:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
