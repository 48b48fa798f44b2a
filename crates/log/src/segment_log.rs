//! [`SegmentLog`]: the embedded log on local segment files, with group commit.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock, mpsc};

use bytes::{Bytes, BytesMut};
use kairos_types::Clock;
use tokio::sync::{oneshot, watch};

use crate::record::{self, HEADER_LEN};
use crate::{AppendAck, FeatureLog, LogError, LogRecord, Result};

/// Settings of a [`SegmentLog`].
#[derive(Debug, Clone)]
pub struct SegmentLogOptions {
    /// A segment is closed and a new one started once it holds this many bytes.
    pub segment_bytes: u64,
    /// The largest record accepted.
    pub max_record_bytes: usize,
}

impl Default for SegmentLogOptions {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            max_record_bytes: 512 << 20,
        }
    }
}

/// Resolves when an appended record is durable.
#[derive(Debug)]
pub struct AppendTicket(oneshot::Receiver<Result<AppendAck>>);

impl AppendTicket {
    pub async fn wait(self) -> Result<AppendAck> {
        self.0.await.map_err(|_| LogError::Closed)?
    }

    /// For callers outside an async runtime.
    pub fn wait_blocking(self) -> Result<AppendAck> {
        self.0.blocking_recv().map_err(|_| LogError::Closed)?
    }
}

#[derive(Debug)]
struct Request {
    rows: u32,
    payload: Bytes,
    reply: oneshot::Sender<Result<AppendAck>>,
}

/// Where one record lies.
#[derive(Debug, Clone, Copy)]
struct RecordPos {
    end_offset: u64,
    segment: u64,
    position: u64,
    len: u32,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    file: Arc<File>,
    len: u64,
    end_offset: u64,
}

#[derive(Debug, Default)]
struct Index {
    /// Segments by first offset; the last one is the active segment.
    segments: BTreeMap<u64, Segment>,
    /// Every record still on disk, in offset order.
    records: Vec<RecordPos>,
    last_ingested_at: i64,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    options: SegmentLogOptions,
    clock: Arc<dyn Clock>,
    index: RwLock<Index>,
    end: watch::Sender<u64>,
    queue: Mutex<Queue>,
    /// Signalled when a drain finds the queue empty.
    drained: Condvar,
}

/// Appends waiting for the writer.
#[derive(Debug, Default)]
struct Queue {
    requests: VecDeque<Request>,
    /// A writer thread is draining this log; it goes on until the queue is empty.
    draining: bool,
    closed: bool,
}

/// A feature-group log on local segment files. See the crate docs for the format.
#[derive(Debug)]
pub struct SegmentLog {
    shared: Arc<Shared>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn segment_path(dir: &Path, first_offset: u64) -> PathBuf {
    dir.join(format!("{first_offset:020}.seg"))
}

impl SegmentLog {
    /// Opens the log in `dir`, creating it if absent, and cuts off a torn tail.
    pub fn open(
        dir: impl Into<PathBuf>,
        options: SegmentLogOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let mut firsts: Vec<u64> = fs::read_dir(&dir)
            .map_err(io_err(&dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".seg")?.parse().ok())
            .collect();
        firsts.sort_unstable();

        let mut index = Index::default();
        let mut expected: Option<u64> = None;
        for (i, &first) in firsts.iter().enumerate() {
            let is_last = i + 1 == firsts.len();
            let path = segment_path(&dir, first);
            let bytes = fs::read(&path).map_err(io_err(&path))?;
            let mut position = 0usize;
            let mut next = first;
            if let Some(expected) = expected
                && expected != first
            {
                return Err(LogError::Corrupt {
                    path: path.display().to_string(),
                    position: 0,
                    reason: format!("segment starts at offset {first}, expected {expected}"),
                });
            }
            while position < bytes.len() {
                match record::decode(&bytes[position..]) {
                    Ok((rec, len)) => {
                        if rec.first_offset != next {
                            return Err(LogError::Corrupt {
                                path: path.display().to_string(),
                                position: position as u64,
                                reason: format!(
                                    "record at offset {}, expected {next}",
                                    rec.first_offset
                                ),
                            });
                        }
                        index.records.push(RecordPos {
                            end_offset: rec.end_offset(),
                            segment: first,
                            position: position as u64,
                            len: len as u32,
                        });
                        index.last_ingested_at = index.last_ingested_at.max(rec.ingested_at);
                        next = rec.end_offset();
                        position += len;
                    }
                    Err(reason) if is_last => {
                        // A crash mid-append leaves a torn record that was never acknowledged.
                        tracing::warn!(path = %path.display(), position, ?reason, "cutting torn tail off the log");
                        let file = OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .map_err(io_err(&path))?;
                        file.set_len(position as u64).map_err(io_err(&path))?;
                        file.sync_all().map_err(io_err(&path))?;
                        break;
                    }
                    Err(reason) => {
                        return Err(LogError::Corrupt {
                            path: path.display().to_string(),
                            position: position as u64,
                            reason: format!("{reason:?} in a closed segment"),
                        });
                    }
                }
            }
            let file = OpenOptions::new()
                .read(true)
                .append(true)
                .open(&path)
                .map_err(io_err(&path))?;
            index.segments.insert(
                first,
                Segment {
                    path,
                    file: Arc::new(file),
                    len: position as u64,
                    end_offset: next,
                },
            );
            expected = Some(next);
        }
        if index.segments.is_empty() {
            let segment = create_segment(&dir, 0)?;
            index.segments.insert(0, segment);
        }
        let end = index
            .segments
            .values()
            .next_back()
            .map_or(0, |s| s.end_offset);
        let (end_tx, _) = watch::channel(end);
        let shared = Arc::new(Shared {
            dir,
            options,
            clock,
            index: RwLock::new(index),
            end: end_tx,
            queue: Mutex::new(Queue::default()),
            drained: Condvar::new(),
        });
        Ok(Self { shared })
    }

    /// Refuses further appends and returns once the queued ones are durable.
    pub fn close(&self) {
        let mut queue = self.shared.queue.lock().expect("lock");
        queue.closed = true;
        while queue.draining {
            queue = self.shared.drained.wait(queue).expect("lock");
        }
    }

    /// How many segment files the log has now.
    pub fn segment_count(&self) -> usize {
        self.shared.index.read().expect("lock").segments.len()
    }
}

impl Drop for SegmentLog {
    fn drop(&mut self) {
        self.close();
    }
}

fn create_segment(dir: &Path, first_offset: u64) -> Result<Segment> {
    let path = segment_path(dir, first_offset);
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(&path)
        .map_err(io_err(&path))?;
    // The new name must survive a crash too.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    Ok(Segment {
        path,
        file: Arc::new(file),
        len: 0,
        end_offset: first_offset,
    })
}

/// Threads that write logs: shared by every log of the process, so a thousand idle feature
/// groups hold no thread, and a log being written holds one only while its queue has appends.
/// Writing is mostly waiting on `fsync`, so there are more of them than cores.
const WRITERS: usize = 8;

/// Hands `shared` to a writer thread, which drains its queue.
fn schedule(shared: Arc<Shared>) {
    static WORK: OnceLock<mpsc::Sender<Arc<Shared>>> = OnceLock::new();
    let work = WORK.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Arc<Shared>>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..WRITERS {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("kairos-log-writer-{i}"))
                .spawn(move || {
                    loop {
                        let next = rx.lock().expect("lock").recv();
                        match next {
                            Ok(shared) => drain(&shared),
                            Err(_) => return,
                        }
                    }
                })
                .expect("a log writer thread starts");
        }
        tx
    });
    work.send(shared)
        .expect("the log writers run as long as the process");
}

/// The group-commit loop: take every queued request, write them, one `fsync`, acknowledge all;
/// again until the queue is empty. Appends queued meanwhile form the next group.
fn drain(shared: &Shared) {
    const GROUP_BYTES: usize = 64 << 20;
    loop {
        let group: Vec<Request> = {
            let mut queue = shared.queue.lock().expect("lock");
            if queue.requests.is_empty() {
                queue.draining = false;
                shared.drained.notify_all();
                return;
            }
            let mut bytes = 0;
            let mut group = Vec::new();
            while bytes < GROUP_BYTES {
                let Some(request) = queue.requests.pop_front() else {
                    break;
                };
                bytes += request.payload.len();
                group.push(request);
            }
            group
        };
        match write_group(shared, &group) {
            Ok(acks) => {
                for (request, ack) in group.into_iter().zip(acks) {
                    let _ = request.reply.send(Ok(ack));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "log append failed");
                for request in group {
                    let _ = request.reply.send(Err(e.for_another_waiter()));
                }
            }
        }
    }
}

fn write_group(shared: &Shared, group: &[Request]) -> Result<Vec<AppendAck>> {
    let mut index = shared.index.write().expect("lock");
    let written = write_records(shared, &mut index, group);
    // The end of what is durable, whatever happened (a group that rolled a segment and then
    // failed has its first part on disk), published before the index is let go: a reader never
    // sees a record past the end offset, so no store a materialiser writes is ever ahead of it.
    let end = index
        .segments
        .values()
        .next_back()
        .expect("at least one segment")
        .end_offset;
    shared.end.send_replace(end);
    drop(index);
    written
}

fn write_records(shared: &Shared, index: &mut Index, group: &[Request]) -> Result<Vec<AppendAck>> {
    let now = shared.clock.now_micros().max(index.last_ingested_at);
    let mut acks = Vec::with_capacity(group.len());
    let mut buf = BytesMut::new();
    let mut pending: Vec<RecordPos> = Vec::new();
    let (mut active_first, mut next) = {
        let (first, seg) = index
            .segments
            .iter()
            .next_back()
            .expect("at least one segment");
        (*first, seg.end_offset)
    };
    let mut active_len = index.segments[&active_first].len;

    for request in group {
        let record_len = (HEADER_LEN + request.payload.len()) as u64;
        if active_len + buf.len() as u64 > 0
            && active_len + buf.len() as u64 + record_len > shared.options.segment_bytes
        {
            flush(index, active_first, &mut buf, &mut pending, next)?;
            let segment = create_segment(&shared.dir, next)?;
            index.segments.insert(next, segment);
            active_first = next;
            active_len = 0;
        }
        let position = active_len + buf.len() as u64;
        record::encode(next, request.rows, now, &request.payload, &mut buf);
        let end = next + u64::from(request.rows);
        pending.push(RecordPos {
            end_offset: end,
            segment: active_first,
            position,
            len: record_len as u32,
        });
        acks.push(AppendAck {
            first_offset: next,
            end_offset: end,
            ingested_at: now,
        });
        next = end;
    }
    flush(index, active_first, &mut buf, &mut pending, next)?;
    index.last_ingested_at = now;
    Ok(acks)
}

/// Writes `buf` to the active segment and makes it durable; on failure the segment is cut back
/// so no half-written group stays behind.
fn flush(
    index: &mut Index,
    segment_first: u64,
    buf: &mut BytesMut,
    pending: &mut Vec<RecordPos>,
    end_offset: u64,
) -> Result<()> {
    if buf.is_empty() {
        return Ok(());
    }
    let segment = index
        .segments
        .get_mut(&segment_first)
        .expect("active segment");
    let path = segment.path.clone();
    let written = (&*segment.file)
        .write_all(buf)
        .and_then(|()| segment.file.sync_data());
    if let Err(e) = written {
        let _ = segment.file.set_len(segment.len);
        return Err(LogError::Io {
            path: path.display().to_string(),
            source: e,
        });
    }
    segment.len += buf.len() as u64;
    segment.end_offset = pending.last().map_or(end_offset, |p| p.end_offset);
    index.records.append(pending);
    buf.clear();
    Ok(())
}

impl FeatureLog for SegmentLog {
    fn append(&self, rows: u32, payload: Bytes) -> Result<AppendTicket> {
        if payload.len() > self.shared.options.max_record_bytes {
            return Err(LogError::TooLarge(
                payload.len(),
                self.shared.options.max_record_bytes,
            ));
        }
        let (reply, ticket) = oneshot::channel();
        let mut queue = self.shared.queue.lock().expect("lock");
        if queue.closed {
            return Err(LogError::Closed);
        }
        queue.requests.push_back(Request {
            rows,
            payload,
            reply,
        });
        if !queue.draining {
            queue.draining = true;
            drop(queue);
            schedule(self.shared.clone());
        }
        Ok(AppendTicket(ticket))
    }

    fn read_from(&self, offset: u64, max_bytes: usize) -> Result<Vec<LogRecord>> {
        let wanted: Vec<(RecordPos, Arc<File>, PathBuf)> = {
            let index = self.shared.index.read().expect("lock");
            let start = index.records.partition_point(|r| r.end_offset <= offset);
            let mut total = 0usize;
            let mut wanted = Vec::new();
            for pos in &index.records[start..] {
                if !wanted.is_empty() && total + pos.len as usize > max_bytes {
                    break;
                }
                total += pos.len as usize;
                let segment = &index.segments[&pos.segment];
                wanted.push((*pos, segment.file.clone(), segment.path.clone()));
            }
            wanted
        };
        let mut records = Vec::with_capacity(wanted.len());
        for (pos, file, path) in wanted {
            let mut bytes = vec![0u8; pos.len as usize];
            file.read_exact_at(&mut bytes, pos.position)
                .map_err(io_err(&path))?;
            let (rec, _) = record::decode(&bytes).map_err(|reason| LogError::Corrupt {
                path: path.display().to_string(),
                position: pos.position,
                reason: format!("{reason:?}"),
            })?;
            records.push(rec);
        }
        Ok(records)
    }

    fn end_offset(&self) -> u64 {
        *self.shared.end.borrow()
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.end.subscribe()
    }

    fn remove_before(&self, offset: u64, older_than_micros: i64) -> Result<usize> {
        let mut index = self.shared.index.write().expect("lock");
        let active = *index
            .segments
            .keys()
            .next_back()
            .expect("at least one segment");
        let doomed: Vec<u64> = index
            .segments
            .iter()
            .filter(|(first, seg)| **first != active && seg.end_offset <= offset)
            .filter(|(_, seg)| {
                let modified = fs::metadata(&seg.path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(i64::MAX, |d| d.as_micros() as i64);
                modified < older_than_micros
            })
            .map(|(first, _)| *first)
            .collect();
        for first in &doomed {
            let segment = index.segments.remove(first).expect("listed");
            fs::remove_file(&segment.path).map_err(io_err(&segment.path))?;
        }
        if let Some(first_kept) = index.segments.keys().next().copied() {
            index.records.retain(|r| r.segment >= first_kept);
        }
        Ok(doomed.len())
    }
}
