//! Integration tests of the segment log: durability across reopen, torn tails, group commit,
//! segment rolling and retention; and of the Kafka log (`kafka`).

mod kafka;

use std::sync::Arc;

use bytes::Bytes;
use kairos_log::{FeatureLog, SegmentLog, SegmentLogOptions};
use kairos_types::{ManualClock, SystemClock};

fn open(dir: &std::path::Path, segment_bytes: u64) -> SegmentLog {
    SegmentLog::open(
        dir,
        SegmentLogOptions {
            segment_bytes,
            ..Default::default()
        },
        Arc::new(SystemClock),
    )
    .unwrap()
}

fn all(log: &SegmentLog) -> Vec<kairos_log::LogRecord> {
    log.read_from(0, usize::MAX).unwrap()
}

#[test]
fn appends_are_ordered_durable_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1 << 20);
    let a = log
        .append(3, Bytes::from_static(b"aaa"))
        .unwrap()
        .wait_blocking()
        .unwrap();
    let b = log
        .append(2, Bytes::from_static(b"bb"))
        .unwrap()
        .wait_blocking()
        .unwrap();
    assert_eq!((a.first_offset, a.end_offset), (0, 3));
    assert_eq!((b.first_offset, b.end_offset), (3, 5));
    assert!(b.ingested_at >= a.ingested_at);
    drop(log);

    let log = open(dir.path(), 1 << 20);
    assert_eq!(log.end_offset(), 5);
    let records = all(&log);
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].payload, Bytes::from_static(b"bb"));
    // Reading from the middle of a record returns that whole record.
    assert_eq!(log.read_from(4, usize::MAX).unwrap()[0].first_offset, 3);
    assert!(log.read_from(5, usize::MAX).unwrap().is_empty());
}

#[test]
fn a_torn_tail_is_cut_off_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1 << 20);
    log.append(1, Bytes::from_static(b"kept"))
        .unwrap()
        .wait_blocking()
        .unwrap();
    drop(log);
    let segment = dir.path().join(format!("{:020}.seg", 0));
    let mut bytes = std::fs::read(&segment).unwrap();
    let whole = bytes.len();
    bytes.extend_from_slice(&[40, 0, 0, 0, 1, 2, 3]);
    std::fs::write(&segment, &bytes).unwrap();

    let log = open(dir.path(), 1 << 20);
    assert_eq!(std::fs::metadata(&segment).unwrap().len() as usize, whole);
    assert_eq!(log.end_offset(), 1);
    let ack = log
        .append(1, Bytes::from_static(b"next"))
        .unwrap()
        .wait_blocking()
        .unwrap();
    assert_eq!(ack.first_offset, 1);
    assert_eq!(all(&log).len(), 2);
}

#[test]
fn concurrent_writers_share_commits_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(dir.path(), 64 << 10));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                (0..200)
                    .map(|i| {
                        let payload = Bytes::from(format!("{t}:{i}"));
                        log.append(1, payload)
                            .unwrap()
                            .wait_blocking()
                            .unwrap()
                            .first_offset
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut offsets: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    offsets.sort_unstable();
    assert_eq!(offsets, (0..1600).collect::<Vec<_>>());
    let records = all(&log);
    assert_eq!(records.len(), 1600);
    assert!(
        records
            .windows(2)
            .all(|w| w[0].end_offset() == w[1].first_offset)
    );
}

#[test]
fn segments_roll_and_old_ones_are_removed_after_retention() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let log = SegmentLog::open(
        dir.path(),
        SegmentLogOptions {
            segment_bytes: 100,
            ..Default::default()
        },
        clock,
    )
    .unwrap();
    for _ in 0..10 {
        log.append(1, Bytes::from(vec![7u8; 60]))
            .unwrap()
            .wait_blocking()
            .unwrap();
    }
    assert_eq!(log.segment_count(), 10);
    // Nothing is old enough yet.
    assert_eq!(log.remove_before(5, 0).unwrap(), 0);
    let removed = log.remove_before(5, i64::MAX).unwrap();
    assert_eq!(removed, 5);
    assert_eq!(log.read_from(0, usize::MAX).unwrap()[0].first_offset, 5);
    drop(log);
    let log = open(dir.path(), 100);
    assert_eq!(log.end_offset(), 10);
    assert_eq!(log.read_from(0, usize::MAX).unwrap().len(), 5);
}

/// The writer threads of this process (names are cut to 15 bytes by the kernel).
fn writer_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("kairos-log-writ"))
        .count()
}

#[test]
fn many_logs_share_a_few_writer_threads_and_close_durably() {
    let dir = tempfile::tempdir().unwrap();
    let logs: Vec<SegmentLog> = (0..300)
        .map(|i| open(&dir.path().join(i.to_string()), 1 << 20))
        .collect();
    let tickets: Vec<_> = logs
        .iter()
        .map(|log| log.append(1, Bytes::from_static(b"x")).unwrap())
        .collect();
    for ticket in tickets {
        ticket.wait_blocking().unwrap();
    }
    let writers = writer_threads();
    assert!(writers <= 8, "{writers} writer threads for 300 logs");

    // Closing waits for what is queued, then refuses appends.
    let log = &logs[0];
    let queued: Vec<_> = (0..50)
        .map(|_| log.append(1, Bytes::from_static(b"y")).unwrap())
        .collect();
    log.close();
    assert!(matches!(
        log.append(1, Bytes::from_static(b"z")),
        Err(kairos_log::LogError::Closed)
    ));
    for ticket in queued {
        ticket.wait_blocking().unwrap();
    }
    assert_eq!(all(log).len(), 51);
}
