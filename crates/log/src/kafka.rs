//! A feature-group log on Kafka: one topic per group version, partitioned by a stable hash of
//! the primary key. An append is sent as messages, each carrying rows of one partition (what
//! they are is the caller's: the store sends Arrow batches), so a key's rows stay in one
//! partition, in order — each partition is what a [`SegmentLog`] is for a single-node group.
//! Kafka's offsets count messages, not rows: the store numbers a row by its message's offset
//! and its place in it.
//!
//! The producer is idempotent with `acks=all`: an append is acknowledged once every one of its
//! messages is, each with its partition and offset, and a broker that does not answer fails it
//! within the message timeout rather than hanging it. Kafka transactions are not used (the
//! development broker does not isolate them, see `kairos broker`), so a broker failure in the
//! middle of an append can leave part of it written; the append reports the failure, and the
//! messages that were written carry their producer tag and the numbers of their rows in the
//! batch, by which a retry of the same tagged batch finds them.
//!
//! [`SegmentLog`]: crate::SegmentLog

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::try_join_all;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, TopicResult};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Header, Headers, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode as Code;

use crate::{LogError, Result};

/// The header naming the producer tag of an appended batch (pipelines' `append_once`).
const PRODUCER_HEADER: &str = "kairos-producer";
/// The header placing a message's rows in their tagged batch: the batch's rows, then the
/// number of each row the message carries, each a big-endian `u32`.
const ROWS_HEADER: &str = "kairos-rows";
/// How long a CreateTopics or DeleteTopics request waits for its answer; a broker that has
/// none makes a topic on first use instead, and keeps a deleted group's.
const ADMIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a read that has rows waits for the next before it answers.
const FOLLOW_ON: Duration = Duration::from_millis(10);
/// The header holding when the row was appended, in microseconds (big-endian i64).
const INGESTED_HEADER: &str = "kairos-ingested-at";
/// How long past the message timeout an append waits for librdkafka's own verdict.
const APPEND_GRACE: Duration = Duration::from_secs(1);

/// How the log reaches its brokers.
#[derive(Debug, Clone)]
pub struct KafkaLogOptions {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Partitions the group's topic must have.
    pub partitions: u32,
    /// How long an append waits for the brokers before it fails.
    pub message_timeout: Duration,
    /// How long a member of a [`KafkaLog::join`]ed group may go unheard before the group
    /// hands its partitions to the others.
    pub session_timeout: Duration,
    /// How long a reader's fetch may wait at a broker for rows (`fetch.wait.max.ms`): a
    /// broker answers as soon as rows arrive, but one that holds the fetch to its wait
    /// whatever arrives (librdkafka's mock does) adds up to this to every row's way to the
    /// stores — librdkafka's default of 500 ms would.
    pub fetch_wait: Duration,
    /// Further librdkafka properties (security, say), set on producer and readers alike.
    pub properties: BTreeMap<String, String>,
}

impl KafkaLogOptions {
    pub fn new(brokers: impl Into<String>, partitions: u32) -> KafkaLogOptions {
        KafkaLogOptions {
            brokers: brokers.into(),
            partitions,
            message_timeout: Duration::from_secs(30),
            session_timeout: Duration::from_secs(6),
            fetch_wait: Duration::from_millis(50),
            properties: BTreeMap::new(),
        }
    }

    /// What a member of a consumer group over the log's cluster sets: its session timeout, and
    /// a few heartbeats per session so a live member is never taken for a dead one.
    pub fn membership(&self) -> [(&'static str, String); 2] {
        let heartbeat = (self.session_timeout / 6).min(Duration::from_millis(500));
        [
            (
                "session.timeout.ms",
                self.session_timeout.as_millis().to_string(),
            ),
            ("heartbeat.interval.ms", heartbeat.as_millis().to_string()),
        ]
    }

    fn client(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.properties {
            config.set(k, v);
        }
        config
    }
}

/// One message to append: the partition it goes to, its payload, and the numbers in their
/// batch of the rows it carries (only a tagged append sends them, so a retry can tell which
/// rows of the batch landed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub partition: u32,
    pub payload: Bytes,
    pub numbers: Vec<u32>,
}

/// Where an appended message landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub partition: u32,
    pub offset: u64,
}

/// A message read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedMessage {
    pub offset: u64,
    pub payload: Bytes,
    /// When the message was appended, microseconds since the epoch.
    pub ingested_at: i64,
    /// The producer tag and the place of the message's rows in their batch, when the batch
    /// was tagged.
    pub tag: Option<MessageTag>,
}

/// A tagged append's producer, as every message of it carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag<'a> {
    pub producer: &'a str,
    /// The rows of the whole batch (a retry that appends only the rows missing still names
    /// them all, so a later search knows when it found the whole batch).
    pub rows: u32,
}

/// A message's tag read back: its producer, the numbers of its rows in their batch, and the
/// batch's rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageTag {
    pub producer: String,
    pub numbers: Vec<u32>,
    pub rows: u32,
}

/// The partition of an encoded key among `partitions`: a stable hash, so every writer, reader
/// and store agrees on it.
pub fn partition_of(key: &[u8], partitions: u32) -> u32 {
    crc32fast::hash(key) % partitions.max(1)
}

/// One group version's log on Kafka.
pub struct KafkaLog {
    topic: String,
    options: KafkaLogOptions,
    producer: FutureProducer,
    /// One reader per partition, made when first read.
    readers: Vec<Mutex<Option<PartitionReader>>>,
}

/// A reader of one partition, owned by whoever follows it (each materialiser has its own:
/// two followers at different offsets sharing one would move its assignment back and forth,
/// and neither would get far). It knows the offset its assignment reads next: a read that goes
/// on from there keeps what it has fetched ahead; one from elsewhere moves the assignment.
pub struct PartitionReader {
    topic: String,
    partition: u32,
    consumer: BaseConsumer,
    next: u64,
}

impl std::fmt::Debug for KafkaLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaLog")
            .field("topic", &self.topic)
            .field("partitions", &self.options.partitions)
            .finish()
    }
}

fn kafka(topic: &str, what: &str, e: impl std::fmt::Display) -> LogError {
    LogError::Kafka(format!("Kafka topic {topic}: {what}: {e}"))
}

fn admin_client(
    topic: &str,
    options: &KafkaLogOptions,
) -> Result<AdminClient<DefaultClientContext>> {
    options
        .client()
        .create()
        .map_err(|e| kafka(topic, "cannot make an admin client", e))
}

/// How long an admin request waits: a broker without the request (the development one) leaves
/// it unanswered rather than refusing it, hence the short request timeout. The admin client
/// answers from a thread of its own, so its futures need no runtime to be driven.
fn admin_wait(options: &KafkaLogOptions) -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(ADMIN_REQUEST_TIMEOUT))
        .operation_timeout(Some(options.message_timeout))
}

/// What the brokers made of an admin request on one topic: done (or already as asked,
/// `already`), not answered (`Some` of why: the broker lacks the request), or refused.
fn settle(
    topic: &str,
    what: &str,
    answer: KafkaResult<Vec<TopicResult>>,
    already: Code,
) -> Result<Option<Code>> {
    let code = match answer {
        Ok(results) => match results.into_iter().find_map(|result| result.err()) {
            None => return Ok(None),
            Some((_, code)) => code,
        },
        Err(KafkaError::AdminOp(code)) => code,
        Err(e) => return Err(kafka(topic, what, e)),
    };
    match code {
        code if code == already => Ok(None),
        Code::UnsupportedVersion | Code::OperationTimedOut | Code::RequestTimedOut => {
            Ok(Some(code))
        }
        code => Err(kafka(topic, what, code)),
    }
}

impl KafkaLog {
    /// Opens the log of `topic`, making the topic first when the brokers do not have it: with
    /// `options.partitions` partitions and `replication` replicas where the brokers take
    /// CreateTopics (a broker that does not, like the development one, makes a topic on first
    /// use with its own default count, which [`KafkaLog::open`] then checks). Blocks on the
    /// brokers for up to twice the message timeout.
    pub fn open_or_create(
        topic: &str,
        options: KafkaLogOptions,
        replication: i32,
    ) -> Result<KafkaLog> {
        use rdkafka::admin::{NewTopic, TopicReplication};
        let admin = admin_client(topic, &options)?;
        let exists = admin
            .inner()
            .fetch_metadata(None, options.message_timeout)
            .map_err(|e| kafka(topic, &format!("no answer from {}", options.brokers), e))?
            .topics()
            .iter()
            .any(|t| t.name() == topic);
        if !exists {
            let new = NewTopic::new(
                topic,
                options.partitions as i32,
                TopicReplication::Fixed(replication),
            );
            let answer =
                futures::executor::block_on(admin.create_topics([&new], &admin_wait(&options)));
            // Unanswered, the topic is made on first use instead.
            settle(
                topic,
                "cannot make the topic",
                answer,
                Code::TopicAlreadyExists,
            )?;
        }
        KafkaLog::open(topic, options)
    }

    /// Deletes the log's topic (its group version was deleted). A broker without
    /// DeleteTopics (the development one) keeps it: that is said, not failed on.
    pub fn delete_topic(&self) -> Result<()> {
        let admin = admin_client(&self.topic, &self.options)?;
        let answer = futures::executor::block_on(
            admin.delete_topics(&[&self.topic], &admin_wait(&self.options)),
        );
        let done = Code::UnknownTopicOrPartition;
        if let Some(e) = settle(&self.topic, "cannot delete the topic", answer, done)? {
            tracing::warn!(topic = %self.topic, error = %e, "the brokers did not delete the topic; it stays");
        }
        Ok(())
    }

    /// Opens the log of `topic`, which must exist with `options.partitions` partitions: a
    /// topic with another count would move keys to other partitions than the stores expect.
    pub fn open(topic: &str, options: KafkaLogOptions) -> Result<KafkaLog> {
        let producer: FutureProducer = options
            .client()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            // A large append is bounded by the queue's bytes (1 GiB) alone: with librdkafka's
            // default of 100,000 messages, each row of a larger append that finds the queue
            // full is retried every 100 ms, a timer per row.
            .set("queue.buffering.max.messages", "0")
            .set(
                "message.timeout.ms",
                options.message_timeout.as_millis().to_string(),
            )
            .create()
            .map_err(|e| kafka(topic, "cannot make a producer", e))?;
        let metadata = producer
            .client()
            .fetch_metadata(Some(topic), options.message_timeout)
            .map_err(|e| kafka(topic, &format!("no answer from {}", options.brokers), e))?;
        let found = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map_or(0, |t| t.partitions().len()) as u32;
        if found != options.partitions {
            return Err(LogError::Kafka(format!(
                "Kafka topic {topic} has {found} partitions where the log expects {}: make it \
                 with that many, or set the log's partitions to {found}",
                options.partitions
            )));
        }
        Ok(KafkaLog {
            topic: topic.to_string(),
            readers: (0..options.partitions).map(|_| Mutex::new(None)).collect(),
            options,
            producer,
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn partitions(&self) -> u32 {
        self.options.partitions
    }

    /// How the log reaches its brokers.
    pub fn options(&self) -> &KafkaLogOptions {
        &self.options
    }

    /// Appends `messages`, each to its partition, and answers once every one is acknowledged
    /// by the brokers (`acks=all`): where each landed, in the order given. `tag` marks the
    /// messages so that a retry can find them. A partition's messages land in the order given.
    pub async fn append(
        &self,
        messages: &[Message],
        ingested_at: i64,
        tag: Option<Tag<'_>>,
    ) -> Result<Vec<Position>> {
        let millis = ingested_at.div_euclid(1000);
        let ingested_micros = ingested_at.to_be_bytes();
        let sends = messages.iter().map(|message| {
            // The message timestamp holds milliseconds; the header keeps the microseconds.
            let mut headers = OwnedHeaders::new().insert(Header {
                key: INGESTED_HEADER,
                value: Some(&ingested_micros),
            });
            if let Some(tag) = tag {
                let place: Vec<u8> = std::iter::once(tag.rows)
                    .chain(message.numbers.iter().copied())
                    .flat_map(u32::to_be_bytes)
                    .collect();
                headers = headers
                    .insert(Header {
                        key: PRODUCER_HEADER,
                        value: Some(tag.producer),
                    })
                    .insert(Header {
                        key: ROWS_HEADER,
                        value: Some(&place),
                    });
            }
            let record = FutureRecord::<(), _>::to(&self.topic)
                .partition(message.partition as i32)
                .payload(message.payload.as_ref())
                .timestamp(millis)
                .headers(headers);
            let delivery = self.producer.send(record, self.options.message_timeout);
            async move {
                let delivered = delivery.await.map_err(|(e, _)| e)?;
                Ok::<_, rdkafka::error::KafkaError>(Position {
                    partition: delivered.partition as u32,
                    offset: delivered.offset as u64,
                })
            }
        });
        // librdkafka times each message out itself, yet a message in flight to a broker that
        // went away can outlive that by a reconnect backoff; the append's own deadline is what
        // bounds the caller's wait. A message it gave up on may still land: its tag finds it.
        let deadline = self.options.message_timeout + APPEND_GRACE;
        match tokio::time::timeout(deadline, try_join_all(sends)).await {
            Ok(acknowledged) => {
                acknowledged.map_err(|e| kafka(&self.topic, "an append was not acknowledged", e))
            }
            Err(_) => Err(kafka(
                &self.topic,
                "an append was not acknowledged",
                format!("no answer from the brokers within {deadline:?}"),
            )),
        }
    }

    /// One past the last acknowledged offset of `partition` (its high watermark).
    pub fn end_offset(&self, partition: u32) -> Result<u64> {
        let (_, high) = self
            .producer
            .client()
            .fetch_watermarks(&self.topic, partition as i32, self.options.message_timeout)
            .map_err(|e| kafka(&self.topic, "no high watermark", e))?;
        Ok(high.max(0) as u64)
    }

    /// A reader of `partition` of its own for the caller.
    pub fn reader(&self, partition: u32) -> Result<PartitionReader> {
        let consumer = self
            .options
            .client()
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("group.id", format!("kairos-reader-{}", self.topic))
            .set(
                "fetch.wait.max.ms",
                self.options.fetch_wait.as_millis().to_string(),
            )
            // An offset the topic no longer holds (retention removed it unread) is an error:
            // librdkafka's default would go on from the end, and the rows between would be
            // lost without a word.
            .set("auto.offset.reset", "error")
            .create::<BaseConsumer>()
            .map_err(|e| kafka(&self.topic, "cannot make a reader", e))?;
        Ok(PartitionReader {
            topic: self.topic.clone(),
            partition,
            consumer,
            // Never a real position, so the first read assigns.
            next: u64::MAX,
        })
    }

    /// The messages of `partition` from `offset` on, in order, up to about `max_bytes` of
    /// payload (at least one when there is any); waits up to `wait` for the first. Reads share
    /// one reader per partition; a follower of a partition takes a [`KafkaLog::reader`] of its
    /// own.
    pub fn read_from(
        &self,
        partition: u32,
        offset: u64,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<Vec<LoggedMessage>> {
        let mut slot = self.readers[partition as usize]
            .lock()
            .expect("reader lock");
        let reader = match &mut *slot {
            Some(reader) => reader,
            None => slot.insert(self.reader(partition)?),
        };
        reader.read_from(offset, max_bytes, wait)
    }
}

impl PartitionReader {
    /// The partition's messages from `offset` on, in order, up to about `max_bytes` of payload
    /// (at least one when there is any); waits up to `wait` for the first.
    pub fn read_from(
        &mut self,
        offset: u64,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<Vec<LoggedMessage>> {
        if self.next != offset {
            let mut assignment = TopicPartitionList::new();
            assignment
                .add_partition_offset(
                    &self.topic,
                    self.partition as i32,
                    Offset::Offset(offset as i64),
                )
                .map_err(|e| kafka(&self.topic, "bad position", e))?;
            self.consumer
                .assign(&assignment)
                .map_err(|e| kafka(&self.topic, "cannot read", e))?;
            self.next = offset;
        }
        let deadline = Instant::now() + wait;
        let mut messages = Vec::new();
        let mut bytes = 0;
        loop {
            // Once messages come, a read goes on while more follow within a moment: a backlog
            // arrives fetch by fetch, and a read that ended with the local queue would hand
            // its follower one small step per fetch.
            let timeout = if messages.is_empty() {
                deadline.saturating_duration_since(Instant::now())
            } else {
                FOLLOW_ON
            };
            let Some(message) = self.consumer.poll(timeout) else {
                break;
            };
            let message = match message {
                Ok(message) => message,
                Err(KafkaError::MessageConsumption(Code::AutoOffsetReset)) => {
                    let offset = self.next;
                    // librdkafka stops fetching the partition; the next read assigns it
                    // afresh, and fails again rather than wait on a stopped fetch.
                    self.next = u64::MAX;
                    return Err(kafka(
                        &self.topic,
                        &format!(
                            "partition {} no longer holds offset {offset}",
                            self.partition
                        ),
                        "retention removed it before it was read",
                    ));
                }
                Err(e) => return Err(kafka(&self.topic, "read failed", e)),
            };
            let at = message.offset() as u64;
            if at < self.next {
                continue;
            }
            self.next = at + 1;
            let payload = Bytes::copy_from_slice(message.payload().unwrap_or_default());
            bytes += payload.len();
            let mut producer = None;
            let mut place = None;
            let mut ingested_at = message.timestamp().to_millis().unwrap_or(0) * 1000;
            for header in message.headers().iter().flat_map(|headers| headers.iter()) {
                match (header.key, header.value) {
                    (PRODUCER_HEADER, Some(v)) => {
                        producer = Some(String::from_utf8_lossy(v).into_owned());
                    }
                    (ROWS_HEADER, Some(v)) if v.len() >= 4 && v.len() % 4 == 0 => {
                        let mut numbers = v
                            .chunks_exact(4)
                            .map(|n| u32::from_be_bytes(n.try_into().expect("four bytes")));
                        let rows = numbers.next().expect("at least one number");
                        place = Some((rows, numbers.collect()));
                    }
                    (INGESTED_HEADER, Some(v)) => {
                        if let Ok(micros) = v.try_into() {
                            ingested_at = i64::from_be_bytes(micros);
                        }
                    }
                    _ => {}
                }
            }
            let tag = producer
                .zip(place)
                .map(|(producer, (rows, numbers))| MessageTag {
                    producer,
                    numbers,
                    rows,
                });
            messages.push(LoggedMessage {
                offset: at,
                payload,
                ingested_at,
                tag,
            });
            if bytes >= max_bytes {
                break;
            }
        }
        Ok(messages)
    }
}

/// A change in which of a topic's partitions this member of a consumer group holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    Assigned(Vec<u32>),
    Revoked(Vec<u32>),
}

/// Passes the group's rebalances on, and pauses what it assigns: a member takes partitions
/// to own them, not to read them through this consumer.
struct Rebalances {
    events: tokio::sync::mpsc::UnboundedSender<Ownership>,
}

impl rdkafka::ClientContext for Rebalances {}

impl rdkafka::consumer::ConsumerContext for Rebalances {
    fn pre_rebalance(
        &self,
        _: &BaseConsumer<Rebalances>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        if let rdkafka::consumer::Rebalance::Revoke(list) = rebalance {
            let _ = self.events.send(Ownership::Revoked(partitions_of(list)));
        }
    }

    fn post_rebalance(
        &self,
        consumer: &BaseConsumer<Rebalances>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        if let rdkafka::consumer::Rebalance::Assign(list) = rebalance {
            let _ = consumer.pause(list);
            let _ = self.events.send(Ownership::Assigned(partitions_of(list)));
        }
    }
}

fn partitions_of(list: &TopicPartitionList) -> Vec<u32> {
    let mut partitions: Vec<u32> = list
        .elements()
        .iter()
        .map(|e| e.partition() as u32)
        .collect();
    partitions.sort_unstable();
    partitions
}

/// This process's membership of a consumer group over the log's topic: the group shares the
/// partitions out among its live members and hands a member's to the others when it leaves
/// or stops answering. Dropping it leaves the group.
pub struct Membership {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KafkaLog {
    /// Joins consumer group `group` over the log's topic; `Ownership` changes arrive on the
    /// receiver, starting with this member's first assignment.
    pub fn join(
        &self,
        group: &str,
    ) -> Result<(Membership, tokio::sync::mpsc::UnboundedReceiver<Ownership>)> {
        let (events, received) = tokio::sync::mpsc::unbounded_channel();
        let mut config = self.options.client();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false");
        for (key, value) in self.options.membership() {
            config.set(key, value);
        }
        let consumer: BaseConsumer<Rebalances> = config
            .create_with_context(Rebalances { events })
            .map_err(|e| kafka(&self.topic, "cannot join the consumer group", e))?;
        consumer
            .subscribe(&[&self.topic])
            .map_err(|e| kafka(&self.topic, "cannot join the consumer group", e))?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("kafka-member-{}", self.topic))
            .spawn(move || {
                // Polling drives the group's heartbeats and rebalances; the assigned
                // partitions are paused, so nothing is fetched.
                while !stopping.load(std::sync::atomic::Ordering::Acquire) {
                    let _ = consumer.poll(Duration::from_millis(100));
                }
                // Leaves the group at once, so the others take the partitions over now
                // rather than after the session timeout.
                consumer.unsubscribe();
                let _ = consumer.poll(Duration::from_millis(100));
            })
            .map_err(|e| kafka(&self.topic, "cannot start the member's thread", e))?;
        Ok((
            Membership {
                stop,
                thread: Some(thread),
            },
            received,
        ))
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
