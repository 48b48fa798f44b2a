//! One writer per table per process, shared by the materialisers of the log partitions the
//! process holds: each partition's steps queue here, and whatever queued while a commit was
//! being made goes into the next one. A bulk insert into 32 partitions so makes a commit of
//! up to 32 steps at a time instead of 32 commits that each check the others for conflicts.
//!
//! The committer is a task that owns the [`OfflineWriter`]; it ends when the last handle is
//! dropped. A failure to open or read the table is answered to every request it concerns, and
//! the next request opens the table again.

use tokio::sync::{mpsc, oneshot};

use kairos_types::{FeatureGroupSpec, TableId};

use crate::{DeltaOfflineStore, OfflineError, OfflineWriter, PartitionStep, Result};

enum Request {
    Offset {
        partition: u32,
        reply: oneshot::Sender<Result<Option<u64>>>,
    },
    Commit {
        step: PartitionStep,
        reply: oneshot::Sender<Result<()>>,
    },
}

/// A handle on a table's committer in this process.
#[derive(Debug, Clone)]
pub struct OfflineCommitter {
    requests: mpsc::UnboundedSender<Request>,
}

impl OfflineCommitter {
    pub(crate) fn start(
        store: DeltaOfflineStore,
        table: TableId,
        spec: FeatureGroupSpec,
    ) -> OfflineCommitter {
        let (requests, queue) = mpsc::unbounded_channel();
        tokio::spawn(serve(store, table, spec, queue));
        OfflineCommitter { requests }
    }

    /// The log offset of `partition` the table holds everything before, if any of its rows
    /// was ever committed, read from the table as it is now (other processes' commits too).
    pub async fn committed_offset(&self, partition: u32) -> Result<Option<u64>> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Offset { partition, reply })?;
        answer.await.map_err(|_| gone())?
    }

    /// Commits `step` with whatever other partitions' steps are waiting; see
    /// [`OfflineWriter::commit`].
    pub async fn commit(&self, step: PartitionStep) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Commit { step, reply })?;
        answer.await.map_err(|_| gone())?
    }

    fn send(&self, request: Request) -> Result<()> {
        self.requests.send(request).map_err(|_| gone())
    }
}

fn gone() -> OfflineError {
    OfflineError::Committer("the table's committer stopped".to_string())
}

async fn serve(
    store: DeltaOfflineStore,
    table: TableId,
    spec: FeatureGroupSpec,
    mut queue: mpsc::UnboundedReceiver<Request>,
) {
    let mut writer: Option<OfflineWriter> = None;
    while let Some(first) = queue.recv().await {
        let mut asked = Vec::new();
        let mut steps = Vec::new();
        let mut waiting = Some(first);
        while let Some(request) = waiting.take().or_else(|| queue.try_recv().ok()) {
            match request {
                Request::Offset { partition, reply } => asked.push((partition, reply)),
                Request::Commit { step, reply } => steps.push((step, reply)),
            }
        }
        let opened = match writer.as_mut() {
            Some(writer) => Ok(writer),
            None => store.writer(&table, &spec).await.map(|w| writer.insert(w)),
        };
        let open = match opened {
            Ok(open) => open,
            Err(e) => {
                answer_all(asked, steps, &e);
                continue;
            }
        };
        // An offset is asked after a failure, or by a replica that does not hold the
        // partition: either way what the table says now, other writers' commits included.
        if !asked.is_empty()
            && let Err(e) = open.refresh().await
        {
            writer = None;
            answer_all(asked, steps, &e);
            continue;
        }
        for (partition, reply) in asked {
            let _ = reply.send(open.committed_offset(partition).await);
        }
        if steps.is_empty() {
            continue;
        }
        let (steps, replies): (Vec<_>, Vec<_>) = steps.into_iter().unzip();
        let outcomes = open.commit(steps).await;
        let failed = outcomes.iter().any(Result::is_err);
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            let _ = reply.send(outcome);
        }
        if failed {
            // Read afresh for the retries: the failure may have left this state behind.
            writer = None;
        }
    }
}

fn answer_all(
    asked: Vec<(u32, oneshot::Sender<Result<Option<u64>>>)>,
    steps: Vec<(PartitionStep, oneshot::Sender<Result<()>>)>,
    error: &OfflineError,
) {
    let failed = || OfflineError::Committer(format!("cannot read the table: {error}"));
    for (_, reply) in asked {
        let _ = reply.send(Err(failed()));
    }
    for (_, reply) in steps {
        let _ = reply.send(Err(failed()));
    }
}
