//! What the recommender knows of past interactions: each user's items in time order (for the
//! "already interacted" rule and the user tower's recent history) and each item's interaction
//! times (for the ranker's popularity features). Built from the interactions group — its
//! offline table up to a cut of its log, then each log partition from there — and kept current
//! by a task that follows every partition, so an interaction written by anyone takes effect
//! within a log poll.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arrow::array::RecordBatch;
use futures::FutureExt as _;
use kairos_store::OfflineFilter as ReadFilter;
use kairos_store::{FeatureStore, StoreError};

use crate::error::Result;
use crate::train::int_column;

/// Interactions by user and by item, as of a position in each log partition.
#[derive(Debug, Default)]
pub struct History {
    /// Per user id: (time in seconds, item id), in time order.
    users: HashMap<i64, Vec<(i64, i64)>>,
    /// Per item index of the model's vocabulary: interaction times in seconds, sorted.
    pub(crate) item_times: Vec<Vec<i64>>,
    /// Per log partition, the offset everything before which is folded in.
    pub(crate) positions: Vec<u64>,
}

/// The columns of an interaction row the history reads.
#[derive(Debug, Clone)]
pub(crate) struct Columns {
    pub user: String,
    pub item: String,
    pub time: String,
}

impl History {
    fn new(items: usize) -> History {
        History {
            item_times: vec![Vec::new(); items],
            ..History::default()
        }
    }

    /// A user's interactions, oldest first.
    pub fn of(&self, user: i64) -> &[(i64, i64)] {
        self.users.get(&user).map_or(&[], Vec::as_slice)
    }

    fn fold(
        &mut self,
        batch: &RecordBatch,
        columns: &Columns,
        item_index: &HashMap<i64, u32>,
    ) -> Result<()> {
        let users = int_column(batch, &columns.user)?;
        let items = int_column(batch, &columns.item)?;
        let times = int_column(batch, &columns.time)?;
        for row in 0..batch.num_rows() {
            let (user, item) = (users.value(row), items.value(row));
            let time = times.value(row).div_euclid(1_000_000);
            let events = self.users.entry(user).or_default();
            let at = events.partition_point(|&(t, _)| t <= time);
            events.insert(at, (time, item));
            if let Some(&index) = item_index.get(&item) {
                let times = &mut self.item_times[index as usize];
                let at = times.partition_point(|&t| t <= time);
                times.insert(at, time);
            }
        }
        Ok(())
    }
}

/// Reads the interactions group into a `History` and starts following its log; the task ends
/// when the returned handle is aborted or the group goes away.
pub(crate) async fn follow(
    store: &FeatureStore,
    group: &str,
    columns: Columns,
    item_index: Arc<HashMap<i64, u32>>,
) -> Result<(Arc<RwLock<History>>, tokio::task::JoinHandle<()>)> {
    let cut = store.wait_materialised(group, None).await?;
    let batches = store
        .read_offline(
            group,
            None,
            ReadFilter {
                before: Some(cut.clone()),
                ..ReadFilter::default()
            },
        )
        .await?
        .collect()
        .await
        .map_err(StoreError::from)?;
    let mut history = History::new(item_index.len());
    for batch in &batches {
        history.fold(batch, &columns, &item_index)?;
    }
    history.positions = cut.ends().to_vec();
    let history = Arc::new(RwLock::new(history));
    let followers = (0..cut.ends().len() as u32).map(|partition| {
        run(
            store.clone(),
            group.to_owned(),
            partition,
            columns.clone(),
            item_index.clone(),
            history.clone(),
        )
    });
    let task = tokio::spawn(futures::future::join_all(followers).map(drop));
    Ok((history, task))
}

/// How long a log read waits for a new record before asking again.
const POLL: Duration = Duration::from_millis(500);

/// Follows one partition of the interactions log into the history.
async fn run(
    store: FeatureStore,
    group: String,
    partition: u32,
    columns: Columns,
    item_index: Arc<HashMap<i64, u32>>,
    history: Arc<RwLock<History>>,
) {
    let at = partition as usize;
    loop {
        let position = history.read().expect("lock").positions[at];
        match store
            .read_log(&group, None, partition, position, 4 << 20, POLL)
            .await
        {
            Ok(records) => {
                let mut state = history.write().expect("lock");
                for (_, end, batch) in &records {
                    if let Err(e) = state.fold(batch, &columns, &item_index) {
                        tracing::warn!(group, partition, error = %e, "an interaction record could not be read");
                    }
                    state.positions[at] = state.positions[at].max(*end);
                }
            }
            Err(StoreError::NotFound(_)) => return,
            Err(e) => {
                tracing::warn!(group, error = %e, "reading the interactions log failed; retrying");
                tokio::time::sleep(POLL).await;
            }
        }
    }
}
