//! The Kafka log against librdkafka's mock cluster (the broker `kairos broker` hosts):
//! messages go to their partition in order and come back with their tags; the high watermark
//! counts them; a topic with another partition count is refused; brokers that do not answer
//! fail an append within its timeout instead of hanging it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kairos_log::kafka::{KafkaLog, KafkaLogOptions, Message, MessageTag, Tag, partition_of};
use rdkafka::mocking::MockCluster;

/// A message as sent: its offset, the message, and its tag.
type Sent = (u64, Message, Option<MessageTag>);

/// A message of `rows` rows to `key`'s partition among four, numbered from `first`.
fn message(key: u32, n: u32, first: u32, rows: u32) -> Message {
    Message {
        partition: partition_of(format!("key-{key}").as_bytes(), 4),
        payload: Bytes::from(format!("{key}:{n}")),
        numbers: (first..first + rows).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_go_to_their_partition_in_order_and_read_back_with_their_tags() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("fg.cards.v1", 4, 1).unwrap();
    let log = KafkaLog::open(
        "fg.cards.v1",
        KafkaLogOptions::new(cluster.bootstrap_servers(), 4),
    )
    .unwrap();

    // Three appends of 20 messages of 3 rows over 13 keys, the second tagged.
    let mut sent: BTreeMap<u32, Vec<Sent>> = BTreeMap::new();
    let mut n = 0;
    for batch in 0..3 {
        let messages: Vec<Message> = (0..20)
            .map(|i| {
                n += 1;
                message(n % 13, n, i * 3, 3)
            })
            .collect();
        let tag = (batch == 1).then_some(Tag {
            producer: "pipeline/p/v1/p0/7",
            rows: 60,
        });
        let ingested_at = 1_714_521_600_000_000 + batch;
        let at = log
            .append(&messages, ingested_at * 1000, tag)
            .await
            .unwrap();
        assert_eq!(at.len(), messages.len());
        for (position, message) in at.iter().zip(messages) {
            assert_eq!(position.partition, message.partition);
            let tagged = tag.map(|t| MessageTag {
                producer: t.producer.to_string(),
                numbers: message.numbers.clone(),
                rows: t.rows,
            });
            sent.entry(position.partition)
                .or_default()
                .push((position.offset, message, tagged));
        }
    }
    assert!(sent.len() > 1, "every key in one partition");
    for (partition, messages) in &sent {
        // One partition, one writer: consecutive offsets from 0, in append order.
        let offsets: Vec<u64> = messages.iter().map(|(o, _, _)| *o).collect();
        assert_eq!(offsets, (0..messages.len() as u64).collect::<Vec<_>>());
        assert_eq!(log.end_offset(*partition).unwrap(), messages.len() as u64);
        // Read back in small steps, from the start and from the middle.
        for start in [0, messages.len() as u64 / 2] {
            let mut read = Vec::new();
            let mut next = start;
            while next < messages.len() as u64 {
                let got = log
                    .read_from(*partition, next, 4, Duration::from_secs(10))
                    .unwrap();
                assert!(
                    !got.is_empty(),
                    "nothing at {next} of partition {partition}"
                );
                next = got.last().unwrap().offset + 1;
                read.extend(got);
            }
            let expected = &messages[start as usize..];
            assert_eq!(read.len(), expected.len());
            for (got, (offset, message, tag)) in read.iter().zip(expected) {
                assert_eq!((got.offset, &got.payload), (*offset, &message.payload));
                assert_eq!(&got.tag, tag);
            }
        }
    }
    // Nothing past the end: an empty answer once the wait is over.
    let (partition, messages) = sent.iter().next().unwrap();
    let started = Instant::now();
    let none = log
        .read_from(
            *partition,
            messages.len() as u64,
            1 << 20,
            Duration::from_millis(200),
        )
        .unwrap();
    assert!(none.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[test]
fn a_topic_with_another_partition_count_is_refused() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("fg.cards.v2", 3, 1).unwrap();
    let err = KafkaLog::open(
        "fg.cards.v2",
        KafkaLogOptions::new(cluster.bootstrap_servers(), 4),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("fg.cards.v2") && err.contains("3 partitions") && err.contains("expects 4"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_to_brokers_that_do_not_answer_fails_within_its_timeout() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("fg.cards.v3", 2, 1).unwrap();
    let mut options = KafkaLogOptions::new(cluster.bootstrap_servers(), 2);
    options.message_timeout = Duration::from_secs(2);
    let log = KafkaLog::open("fg.cards.v3", options).unwrap();
    // The topic has two partitions.
    let to = |partition, message: Message| Message {
        partition,
        ..message
    };
    log.append(&[to(0, message(1, 1, 0, 1))], 0, None)
        .await
        .unwrap();
    cluster.broker_down(1).unwrap();
    let started = Instant::now();
    let err = log
        .append(
            &[to(0, message(1, 2, 0, 1)), to(1, message(2, 3, 1, 1))],
            0,
            None,
        )
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10), "{err}");
    assert!(err.to_string().contains("fg.cards.v3"), "{err}");
}

/// The development broker keeps 5 MiB of each partition (librdkafka's mock): a read from an
/// offset retention removed fails, naming it, rather than going on from the end and losing
/// the rows between without a word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_from_an_offset_retention_removed_fails() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("fg.cards.v4", 1, 1).unwrap();
    let log = KafkaLog::open(
        "fg.cards.v4",
        KafkaLogOptions::new(cluster.bootstrap_servers(), 1),
    )
    .unwrap();
    let big = Message {
        partition: 0,
        payload: Bytes::from(vec![7u8; 900 << 10]),
        numbers: Vec::new(),
    };
    for _ in 0..8 {
        log.append(std::slice::from_ref(&big), 0, None)
            .await
            .unwrap();
    }
    assert_eq!(log.end_offset(0).unwrap(), 8);
    // Asked again, it fails again: a materialiser retrying is told each time.
    for _ in 0..2 {
        let err = log
            .read_from(0, 0, 1 << 20, Duration::from_secs(10))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("fg.cards.v4") && err.contains("no longer holds offset 0"),
            "{err}"
        );
    }
    // What it still holds reads back.
    let kept = log
        .read_from(0, 7, 1 << 20, Duration::from_secs(10))
        .unwrap();
    assert_eq!(kept.len(), 1);
}
