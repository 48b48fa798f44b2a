//! Which partitions of a group's Kafka log this process materialises. The replicas of a
//! cluster are one consumer group per group version (`kairos-materialisers.<topic>`): Kafka
//! shares the partitions out among the live ones and hands a leaver's — or a dead one's, after
//! its session times out — to the others. A replica runs the online and offline materialisers
//! of the partitions it holds, and stops them when they are taken away.
//!
//! Ownership is for sharing the work, not for safety: a rebalance can leave a partition with
//! two materialisers for a moment (the old owner has not seen the revocation yet), and the
//! stores refuse the stale one's steps (the online store's checked step, the offline table's
//! per-partition transaction). The positions of partitions this replica does not hold are read
//! from the stores instead, so that a read-your-writes insert or a `check` here still sees
//! them move.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kairos_log::kafka::{KafkaLog, Ownership};
use kairos_offline::OfflineCommitter;
use kairos_online::{OnlineBackend, OnlineStore};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::GroupRuntime;
use crate::materialise;
use crate::telemetry::{self, Sink};

/// How often the positions of partitions held elsewhere are read from the online store.
const REFRESH_EVERY: Duration = Duration::from_millis(100);
/// … and from the offline table, each of whose look-ups replays its log.
const REFRESH_OFFLINE_EVERY: u32 = 10;
/// How long a replica that cannot join the group waits before it tries again.
const JOIN_RETRY: Duration = Duration::from_secs(1);

/// What a process's materialisers of a group need, beside the group.
pub(crate) struct Materialisers {
    pub(crate) online: OnlineBackend,
    /// The group's offline table's writer in this process, which every partition's offline
    /// materialiser here commits through.
    pub(crate) offline: OfflineCommitter,
    pub(crate) max_bytes: usize,
    pub(crate) commit_interval: Duration,
}

impl Materialisers {
    /// Starts partition `partition`'s materialisers; they stop when `stop` says so.
    pub(crate) fn start(
        &self,
        group: &Arc<GroupRuntime>,
        partition: u32,
        stop: &watch::Sender<bool>,
    ) -> Vec<JoinHandle<()>> {
        let mut tasks = vec![tokio::spawn(materialise::run_offline(
            self.offline.clone(),
            group.clone(),
            partition,
            stop.subscribe(),
            self.max_bytes,
            self.commit_interval,
        ))];
        if group.group.spec.online {
            tasks.push(tokio::spawn(materialise::run_online(
                self.online.clone(),
                group.clone(),
                partition,
                stop.subscribe(),
                self.max_bytes,
            )));
        }
        tasks
    }
}

/// Takes part in the group's consumer group until the group stops, materialising the
/// partitions it is given.
pub(crate) async fn share(
    materialisers: Materialisers,
    group: Arc<GroupRuntime>,
    log: Arc<KafkaLog>,
) {
    let table = group.group.id();
    let mut shutdown = group.shutdown.subscribe();
    let name = format!("kairos-materialisers.{}", log.topic());
    let (membership, mut events) = loop {
        let joining = log.clone();
        let name = name.clone();
        match tokio::task::spawn_blocking(move || joining.join(&name)).await {
            Ok(Ok(joined)) => break joined,
            Ok(Err(e)) => {
                tracing::error!(group = %table, error = %e, "cannot join the materialisers' consumer group")
            }
            Err(e) => tracing::error!(group = %table, error = %e, "joining task failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(JOIN_RETRY) => {}
            _ = stopped(&mut shutdown) => return,
        }
    };
    let mut held: HashMap<u32, (watch::Sender<bool>, Vec<JoinHandle<()>>)> = HashMap::new();
    let mut refresh = tokio::time::interval(REFRESH_EVERY);
    let mut ticks: u32 = 0;
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(Ownership::Assigned(partitions)) => {
                    tracing::info!(group = %table, ?partitions, "log partitions taken");
                    telemetry::ownership_changed(&table, "taken", partitions.len());
                    for partition in partitions {
                        group.held[partition as usize].store(true, Ordering::Release);
                        held.entry(partition).or_insert_with(|| {
                            let stop = watch::channel(false).0;
                            let tasks = materialisers.start(&group, partition, &stop);
                            (stop, tasks)
                        });
                    }
                }
                Some(Ownership::Revoked(partitions)) => {
                    tracing::info!(group = %table, ?partitions, "log partitions let go");
                    telemetry::ownership_changed(&table, "let_go", partitions.len());
                    for partition in partitions {
                        group.held[partition as usize].store(false, Ordering::Release);
                        if let Some((stop, tasks)) = held.remove(&partition) {
                            stop_all(stop, tasks).await;
                        }
                    }
                }
                None => break,
            },
            _ = refresh.tick() => {
                ticks = ticks.wrapping_add(1);
                let offline = ticks.is_multiple_of(REFRESH_OFFLINE_EVERY);
                refresh_positions(&materialisers, &group, &held, offline).await;
                if offline {
                    report_lag(&group, &held).await;
                }
            }
            _ = stopped(&mut shutdown) => break,
        }
    }
    for (partition, (stop, tasks)) in held.drain() {
        group.held[partition as usize].store(false, Ordering::Release);
        stop_all(stop, tasks).await;
    }
    // Leaving the group joins the member's thread.
    let _ = tokio::task::spawn_blocking(move || drop(membership)).await;
}

/// Resolves once the group stops (the guard `wait_for` answers is not kept across an await).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn stop_all(stop: watch::Sender<bool>, tasks: Vec<JoinHandle<()>>) {
    stop.send_replace(true);
    for task in tasks {
        let _ = task.await;
    }
}

/// Reads where the stores stand in the partitions held elsewhere, and publishes what moved.
async fn refresh_positions(
    materialisers: &Materialisers,
    group: &Arc<GroupRuntime>,
    held: &HashMap<u32, (watch::Sender<bool>, Vec<JoinHandle<()>>)>,
    offline: bool,
) {
    let table = group.group.id();
    let elsewhere: Vec<u32> = (0..group.log.partitions())
        .filter(|p| !held.contains_key(p))
        .collect();
    if group.group.spec.online {
        for &partition in &elsewhere {
            if let Ok(Some(position)) = materialisers.online.offset(&table, partition).await {
                advance(&group.online_applied[partition as usize], position);
            }
        }
    }
    if offline {
        // Asked at once, so the committer reads the table once for all of them.
        let asked = elsewhere
            .iter()
            .map(|&partition| materialisers.offline.committed_offset(partition));
        let answers = futures::future::join_all(asked).await;
        for (&partition, answer) in elsewhere.iter().zip(answers) {
            if let Ok(Some(position)) = answer {
                advance(&group.offline_applied[partition as usize], position);
            }
        }
    }
}

/// The consumer lag of each partition held here, per store, in messages, on `/metrics` (a look
/// at the log's ends, once a second).
async fn report_lag(
    group: &Arc<GroupRuntime>,
    held: &HashMap<u32, (watch::Sender<bool>, Vec<JoinHandle<()>>)>,
) {
    if held.is_empty() {
        return;
    }
    let Ok(ends) = group.log.end_offsets().await else {
        return;
    };
    let table = group.group.id();
    for (partition, end) in ends.into_iter().filter(|(p, _)| held.contains_key(p)) {
        let at = partition as usize;
        let behind = |applied: &watch::Sender<u64>| group.log.lag(*applied.borrow(), end);
        if group.group.spec.online {
            let lag = behind(&group.online_applied[at]);
            telemetry::partition_lag(&table, Sink::Online, partition, lag);
        }
        let lag = behind(&group.offline_applied[at]);
        telemetry::partition_lag(&table, Sink::Offline, partition, lag);
    }
}

/// Publishes `position` if it is past what `published` holds.
fn advance(published: &watch::Sender<u64>, position: u64) {
    published.send_if_modified(|current| {
        let moved = position > *current;
        if moved {
            *current = position;
        }
        moved
    });
}
