//! The broker conformance test: exactly the Kafka behaviours a Kairos log relies on, checked
//! against a broker in a process of its own — `kairos broker` (librdkafka's mock cluster), or
//! the brokers `KAIROS_TEST_KAFKA_BROKERS` names (with topics made on first use), so the same
//! test can judge a real Kafka or another broker before Kairos runs on it.
//!
//! Relied on: an idempotent producer with `acks=all` is acknowledged per message with its
//! offset; a partition keeps the order of its messages, at consecutive offsets from the log
//! start; the high watermark is one past the last acknowledged offset; a consumer group shares
//! a topic's partitions among its members without overlap, hands a leaving member's partitions
//! to the others, and a new owner resumes at the offsets the old one committed. Not relied on,
//! so not tested: transactions (the mock cluster does not isolate them).

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// A broker for one test: its bootstrap address, and the process when this test started it.
struct Broker {
    bootstrap: String,
    process: Option<Child>,
}

impl Broker {
    /// Starts `kairos broker` with `topics` (name, partitions) made, or uses the external
    /// brokers of `KAIROS_TEST_KAFKA_BROKERS`.
    fn start(topics: &[(&str, i32)]) -> Broker {
        if let Ok(bootstrap) = std::env::var("KAIROS_TEST_KAFKA_BROKERS") {
            create_topics(&bootstrap, topics);
            return Broker {
                bootstrap,
                process: None,
            };
        }
        let mut command = Command::new(env!("CARGO_BIN_EXE_kairos"));
        command.arg("broker");
        for (name, partitions) in topics {
            command.arg("--topic").arg(format!("{name}:{partitions}"));
        }
        let mut process = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(process.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(!line.trim().is_empty(), "kairos broker printed no address");
        Broker {
            bootstrap: line.trim().to_string(),
            process: Some(process),
        }
    }

    fn client(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap);
        config
    }

    fn consumer(&self, group: &str) -> BaseConsumer {
        self.client()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "200")
            .create()
            .unwrap()
    }
}

/// Makes `topics` on external brokers (each test's topics under a name of their own, so runs
/// do not meet).
fn create_topics(bootstrap: &str, topics: &[(&str, i32)]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1)))
        .collect();
    // A runtime of its own on a thread of its own: the caller may be an async test, where a
    // runtime can neither block nor be dropped.
    let made = std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(admin.create_topics(&new, &AdminOptions::new()))
        })
        .join()
        .unwrap()
    })
    .unwrap();
    for result in made {
        if let Err((topic, e)) = result
            && e != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists
        {
            panic!("cannot make topic {topic}: {e}");
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(process) = &mut self.process {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

/// Polls `consumers` round-robin until `done` holds of their assignments, or panics with them.
fn poll_until(
    consumers: &[&BaseConsumer],
    what: &str,
    done: impl Fn(&[BTreeSet<i32>]) -> bool,
) -> Vec<BTreeSet<i32>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for c in consumers {
            // Messages are not what this waits for; the poll drives the group protocol.
            let _ = c.poll(Duration::from_millis(50));
        }
        let assigned: Vec<BTreeSet<i32>> = consumers
            .iter()
            .map(|c| {
                c.assignment()
                    .unwrap()
                    .elements()
                    .iter()
                    .map(|e| e.partition())
                    .collect()
            })
            .collect();
        if done(&assigned) {
            return assigned;
        }
        assert!(Instant::now() < deadline, "{what}: still {assigned:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_producer_is_acknowledged_in_order_and_the_high_watermark_counts_it() {
    const TOPIC: &str = "conformance_produce";
    const MESSAGES: usize = 2000;
    let broker = Broker::start(&[(TOPIC, 4)]);
    let producer: FutureProducer = broker
        .client()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let sends = (0..MESSAGES).map(|i| {
        let key = format!("key-{}", i % 37);
        let payload = format!("{i}");
        let producer = producer.clone();
        async move {
            let record = FutureRecord::to(TOPIC).key(&key).payload(&payload);
            let delivery = producer
                .send(record, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| e)
                .unwrap();
            (key, i, delivery.partition, delivery.offset)
        }
    });
    let acked = futures::future::join_all(sends).await;

    // One key, one partition; per partition, consecutive offsets from 0, in send order.
    let mut partition_of_key = BTreeMap::new();
    let mut per_partition: BTreeMap<i32, Vec<(i64, usize)>> = BTreeMap::new();
    for (key, i, partition, offset) in &acked {
        assert_eq!(
            *partition_of_key.entry(key.clone()).or_insert(*partition),
            *partition,
            "{key} went to two partitions"
        );
        per_partition
            .entry(*partition)
            .or_default()
            .push((*offset, *i));
    }
    assert!(per_partition.len() > 1, "every key went to one partition");
    for (partition, rows) in &mut per_partition {
        rows.sort_unstable();
        let offsets: Vec<i64> = rows.iter().map(|(o, _)| *o).collect();
        assert_eq!(
            offsets,
            (0..rows.len() as i64).collect::<Vec<_>>(),
            "partition {partition}"
        );
        let consumer = broker.consumer("conformance-watermarks");
        let (low, high) = consumer
            .fetch_watermarks(TOPIC, *partition, Duration::from_secs(10))
            .unwrap();
        assert_eq!((low, high), (0, rows.len() as i64), "partition {partition}");

        // Read back: the same payloads at the same offsets.
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(TOPIC, *partition, Offset::Beginning)
            .unwrap();
        consumer.assign(&assignment).unwrap();
        let mut read = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while read.len() < rows.len() {
            assert!(
                Instant::now() < deadline,
                "partition {partition}: read {}",
                read.len()
            );
            if let Some(message) = consumer.poll(Duration::from_millis(100)) {
                let message = message.unwrap();
                let payload: usize = std::str::from_utf8(message.payload().unwrap())
                    .unwrap()
                    .parse()
                    .unwrap();
                read.push((message.offset(), payload));
            }
        }
        assert_eq!(&read, rows, "partition {partition}");
    }
    // Sends to one key were issued in order; the partition kept that order.
    for rows in per_partition.values() {
        let by_key: BTreeMap<usize, Vec<usize>> =
            rows.iter().fold(BTreeMap::new(), |mut m, (_, i)| {
                m.entry(i % 37).or_insert_with(Vec::new).push(*i);
                m
            });
        for sent in by_key.values() {
            assert!(sent.windows(2).all(|w| w[0] < w[1]), "{sent:?}");
        }
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

#[test]
fn a_consumer_group_shares_partitions_and_hands_a_leavers_over_at_its_committed_offsets() {
    const TOPIC: &str = "conformance_group";
    let broker = Broker::start(&[(TOPIC, 4)]);
    let producer: rdkafka::producer::BaseProducer = broker
        .client()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .unwrap();
    for partition in 0..4 {
        for i in 0..10 {
            let payload = format!("{partition}-{i}");
            producer
                .send(
                    rdkafka::producer::BaseRecord::<(), _>::to(TOPIC)
                        .partition(partition)
                        .payload(&payload),
                )
                .unwrap();
        }
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    let first = broker.consumer("conformance-group");
    first.subscribe(&[TOPIC]).unwrap();
    poll_until(&[&first], "the first member gets every partition", |a| {
        a[0].len() == 4
    });
    let second = broker.consumer("conformance-group");
    second.subscribe(&[TOPIC]).unwrap();
    let shared = poll_until(
        &[&first, &second],
        "two members share the partitions",
        |a| {
            !a[0].is_empty()
                && !a[1].is_empty()
                && a[0].is_disjoint(&a[1])
                && a[0].union(&a[1]).count() == 4
        },
    );

    // The second member commits a position in each of its partitions, then leaves.
    let mut committed = TopicPartitionList::new();
    for &partition in &shared[1] {
        committed
            .add_partition_offset(TOPIC, partition, Offset::Offset(3 + i64::from(partition)))
            .unwrap();
    }
    second.commit(&committed, CommitMode::Sync).unwrap();
    drop(second);
    poll_until(
        &[&first],
        "the leaver's partitions go to the other member",
        |a| a[0].len() == 4,
    );
    // The new owner resumes each of them where the leaver committed.
    let mut resumed: BTreeMap<i32, i64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while resumed.len() < shared[1].len() {
        assert!(Instant::now() < deadline, "resumed only {resumed:?}");
        if let Some(message) = first.poll(Duration::from_millis(100)) {
            let message = message.unwrap();
            if shared[1].contains(&message.partition()) {
                resumed
                    .entry(message.partition())
                    .or_insert(message.offset());
            }
        }
    }
    for (partition, offset) in resumed {
        assert_eq!(offset, 3 + i64::from(partition), "partition {partition}");
    }
}

/// The log relies on its broker keeping a partition's rows until every materialiser has read
/// them (Kafka's retention, set long). librdkafka's mock keeps 5 MiB a partition and drops the
/// oldest beyond that, which is why it serves tests only: this writes 8 MiB to one partition and
/// checks that the mock dropped the start — so the figure ARCHITECTURE.md gives stays true —
/// and that any other broker kept all of it.
#[test]
fn a_partition_keeps_what_was_written_except_on_the_capped_mock() {
    const TOPIC: &str = "conformance_retention";
    let broker = Broker::start(&[(TOPIC, 1)]);
    let producer: rdkafka::producer::BaseProducer = broker
        .client()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .unwrap();
    let payload = vec![b'x'; 1024];
    for _ in 0..8192 {
        loop {
            match producer.send(
                rdkafka::producer::BaseRecord::<(), _>::to(TOPIC)
                    .partition(0)
                    .payload(&payload),
            ) {
                Ok(()) => break,
                Err((_, _)) => {
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
    let (low, high) = broker
        .consumer("conformance-retention")
        .fetch_watermarks(TOPIC, 0, Duration::from_secs(10))
        .unwrap();
    assert_eq!(high, 8192);
    if broker.process.is_some() {
        assert!(
            low > 0,
            "the mock kept all 8 MiB: its cap is not what ARCHITECTURE.md says"
        );
    } else {
        assert_eq!(
            low, 0,
            "the broker dropped the partition's first {low} rows"
        );
    }
}
