//! The Kafka backend of the [`Log`] trait (rdkafka / librdkafka).
//!
//! - **Producer**: idempotent (`enable.idempotence=true`, `acks=all`), key = the record's
//!   key (the project: a project's events stay in one partition, in order), value = the
//!   event JSON, partitioner `murmur2_random` (the Java client's, so a team's own Kafka
//!   producers route the same project to the same partition). [`Log::append`] resolves only
//!   once every record's delivery report succeeded; a failed or timed-out delivery (brokers
//!   unreachable: `message.timeout.ms`, default here 15 s) or a full queue is
//!   [`LogError::Unavailable`] (ingest answers 503 + Retry-After).
//! - **Partitions** come from the topic's metadata at open (the topic must exist).
//! - **Readers** are `BaseConsumer`s assigned manually to one partition at one offset (no
//!   consumer group, no committed Kafka offsets: the projection's own state is the
//!   position), polled on a blocking thread; `auto.offset.reset=error`.
//! - **End offsets** are high watermarks, refreshed in the background every second and
//!   raised by every successful delivery, so [`Log::end_offset`] never blocks.
//! - **Start offsets** are low watermarks, refreshed with the high ones (and when a read
//!   finds its offset gone): the topic's retention (`retention.ms`, `retention.bytes`,
//!   `DeleteRecords`) moves them forward, and [`Log::start_offset`] says where each
//!   partition starts now without blocking. As the [`Log`] trait documents for Kafka, a
//!   reader asked for an offset below the start is [`LogError::OutOfRange`] with the real
//!   start and end: at once when the start is known to be past it, or from the read that
//!   finds the offset deleted since (between two refreshes). Nothing is skipped silently:
//!   a consumer (replay, the projection) decides what the deleted offsets mean.
//!
//! Settings passed in [`KafkaLogConfig::settings`] go to librdkafka as they are (SASL/SSL
//! for managed Kafka), after the defaults, so they override them; `_` in a key is read as
//! `.` (`sasl_mechanism` = `sasl.mechanism`, so the keys can come from environment
//! variables).

use bytes::Bytes;
use futures::future::BoxFuture;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::{Message, TopicPartitionList};
use shiplog_log::{
    Log, LogEntry, LogError, LogReader, LogRecord, LogStats, Offset, Partition, RecordPosition,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The default topic.
pub const DEFAULT_TOPIC: &str = "shiplog.events";

/// How to reach the Kafka log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaLogConfig {
    /// `bootstrap.servers`: `host:port[,host:port…]`.
    pub brokers: String,
    /// The topic (default [`DEFAULT_TOPIC`]); it must exist.
    pub topic: String,
    /// librdkafka settings passed through (override the defaults).
    pub settings: BTreeMap<String, String>,
    /// How long opening waits for the topic's metadata (default 10 s).
    pub metadata_timeout: Duration,
}

impl KafkaLogConfig {
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaLogConfig {
            brokers: brokers.into(),
            topic: DEFAULT_TOPIC.to_string(),
            settings: BTreeMap::new(),
            metadata_timeout: Duration::from_secs(10),
        }
    }

    fn client_config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in &self.settings {
            c.set(normalize_key(k), v);
        }
        c
    }

    fn producer_config(&self) -> ClientConfig {
        self.client_config(&[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("partitioner", "murmur2_random"),
            ("message.timeout.ms", "15000"),
            ("linger.ms", "5"),
            ("compression.type", "lz4"),
            ("allow.auto.create.topics", "false"),
        ])
    }

    fn consumer_config(&self) -> ClientConfig {
        let mut c = self.client_config(&[
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "error"),
            ("enable.partition.eof", "false"),
            ("fetch.wait.max.ms", "50"),
            // Readers assign partitions by hand and never commit: the group is unused,
            // but librdkafka wants one.
            ("group.id", "shiplog-reader"),
        ]);
        // Producer-only settings make a consumer complain: keep them out.
        for k in [
            "enable.idempotence",
            "acks",
            "partitioner",
            "message.timeout.ms",
            "linger.ms",
            "compression.type",
            "delivery.timeout.ms",
            "request.required.acks",
            "queue.buffering.max.ms",
            "queue.buffering.max.messages",
            "queue.buffering.max.kbytes",
            "batch.num.messages",
            "batch.size",
            "compression.codec",
            "retries",
            "retry.backoff.ms",
        ] {
            c.remove(k);
        }
        c
    }
}

impl KafkaLogConfig {
    /// The settings of a consumer in group `group` (processors sharing partitions): manual
    /// offset commits only, `auto.offset.reset=error`, eager rebalancing.
    pub fn group_consumer_config(&self, group: &str) -> ClientConfig {
        let mut c = self.consumer_config();
        c.set("group.id", group);
        c.set("partition.assignment.strategy", "range,roundrobin");
        c
    }
}

fn normalize_key(k: &str) -> String {
    k.replace('_', ".")
}

/// Whether a Kafka error means "try again later" rather than "this record is wrong".
fn map_kafka_error(e: &KafkaError) -> LogError {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageSizeTooLarge) => {
            LogError::RecordTooLarge { size: 0, limit: 0 }
        }
        _ => LogError::Unavailable(e.to_string()),
    }
}

struct Shared {
    topic: String,
    partitions: Vec<Partition>,
    /// High watermark per partition.
    ends: Mutex<BTreeMap<Partition, Offset>>,
    /// Low watermark per partition (only moves forward).
    starts: Mutex<BTreeMap<Partition, Offset>>,
    bytes: AtomicU64,
    records: AtomicU64,
    closed: AtomicBool,
}

impl Shared {
    fn raise_end(&self, partition: Partition, next: Offset) {
        let mut ends = self.ends.lock().unwrap();
        let e = ends.entry(partition).or_insert(0);
        if next > *e {
            *e = next;
        }
    }

    fn raise_start(&self, partition: Partition, start: Offset) {
        let mut starts = self.starts.lock().unwrap();
        let s = starts.entry(partition).or_insert(0);
        if start > *s {
            *s = start;
        }
    }

    fn start(&self, partition: Partition) -> Offset {
        self.starts
            .lock()
            .unwrap()
            .get(&partition)
            .copied()
            .unwrap_or(0)
    }

    fn end(&self, partition: Partition) -> Offset {
        self.ends
            .lock()
            .unwrap()
            .get(&partition)
            .copied()
            .unwrap_or(0)
    }

    /// Reads one partition's watermarks from the brokers and records them.
    fn refresh(
        &self,
        c: &BaseConsumer,
        partition: Partition,
        timeout: Duration,
    ) -> Result<(), LogError> {
        let (low, high) = c
            .fetch_watermarks(&self.topic, partition as i32, timeout)
            .map_err(|e| map_kafka_error(&e))?;
        self.raise_start(partition, low.max(0) as Offset);
        self.raise_end(partition, high.max(0) as Offset);
        Ok(())
    }

    /// The error of a read at `offset` below the partition's start.
    fn out_of_range(&self, partition: Partition, offset: Offset) -> LogError {
        LogError::OutOfRange {
            offset,
            start: self.start(partition),
            end: self.end(partition),
        }
    }
}

/// The Kafka log. See the module docs.
pub struct KafkaLog {
    config: KafkaLogConfig,
    producer: FutureProducer,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for KafkaLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaLog")
            .field("brokers", &self.config.brokers)
            .field("topic", &self.shared.topic)
            .field("partitions", &self.shared.partitions)
            .finish()
    }
}

impl KafkaLog {
    /// Connects, reads the topic's partitions and their end offsets, and starts the
    /// background watermark refresh. Blocking (call from a blocking context or at startup).
    /// Must be called inside a tokio runtime (the producer's delivery futures use it).
    pub fn open(config: KafkaLogConfig) -> Result<KafkaLog, LogError> {
        let producer: FutureProducer = config
            .producer_config()
            .create()
            .map_err(|e| LogError::Unavailable(format!("cannot create the Kafka producer: {e}")))?;
        let md = producer
            .client()
            .fetch_metadata(Some(&config.topic), config.metadata_timeout)
            .map_err(|e| {
                LogError::Unavailable(format!(
                    "cannot read the metadata of topic {:?} from {}: {e}",
                    config.topic, config.brokers
                ))
            })?;
        let topic_md = md
            .topics()
            .iter()
            .find(|t| t.name() == config.topic)
            .ok_or_else(|| LogError::Unavailable(format!("topic {:?} not found", config.topic)))?;
        if let Some(err) = topic_md.error() {
            return Err(LogError::Unavailable(format!(
                "topic {:?}: {:?} (create it first, see docs/operations.md)",
                config.topic,
                RDKafkaErrorCode::from(err)
            )));
        }
        let mut partitions: Vec<Partition> = topic_md
            .partitions()
            .iter()
            .map(|p| p.id() as Partition)
            .collect();
        partitions.sort_unstable();
        if partitions.is_empty() {
            return Err(LogError::Unavailable(format!(
                "topic {:?} has no partitions",
                config.topic
            )));
        }
        let shared = Arc::new(Shared {
            topic: config.topic.clone(),
            partitions,
            ends: Mutex::new(BTreeMap::new()),
            starts: Mutex::new(BTreeMap::new()),
            bytes: AtomicU64::new(0),
            records: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        });
        let watcher: BaseConsumer = config
            .consumer_config()
            .create()
            .map_err(|e| LogError::Unavailable(format!("cannot create a Kafka consumer: {e}")))?;
        refresh_watermarks(&watcher, &shared, config.metadata_timeout)?;
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("shiplog-kafka-watermarks".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_secs(1));
                let Some(shared) = weak.upgrade() else { return };
                if shared.closed.load(Relaxed) {
                    return;
                }
                let _ = refresh_watermarks(&watcher, &shared, Duration::from_secs(2));
            })
            .map_err(LogError::Io)?;
        Ok(KafkaLog {
            config,
            producer,
            shared,
        })
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.shared.topic
    }
}

/// Reads every partition's watermarks (the background refresh, every second).
fn refresh_watermarks(
    c: &BaseConsumer,
    shared: &Shared,
    timeout: Duration,
) -> Result<(), LogError> {
    for &p in &shared.partitions {
        shared.refresh(c, p, timeout)?;
    }
    Ok(())
}

impl Log for KafkaLog {
    fn append(
        &self,
        records: Vec<LogRecord>,
    ) -> BoxFuture<'static, Result<Vec<RecordPosition>, LogError>> {
        if self.shared.closed.load(Relaxed) {
            return Box::pin(async { Err(LogError::Closed) });
        }
        let mut futures = Vec::with_capacity(records.len());
        let mut bytes = 0u64;
        for r in &records {
            let rec = FutureRecord::to(&self.shared.topic)
                .key(r.key.as_ref())
                .payload(r.value.as_ref());
            match self.producer.send_result(rec) {
                Ok(f) => futures.push(f),
                Err((e, _)) => {
                    // Records already queued may still be delivered: the caller answers
                    // with an error and the client's retry is deduplicated.
                    let err = match e.rdkafka_error_code() {
                        Some(RDKafkaErrorCode::MessageSizeTooLarge) => LogError::RecordTooLarge {
                            size: r.value.len(),
                            limit: 0,
                        },
                        _ => LogError::Unavailable(format!("cannot queue the record: {e}")),
                    };
                    return Box::pin(async move { Err(err) });
                }
            }
            bytes += r.value.len() as u64;
        }
        let shared = self.shared.clone();
        Box::pin(async move {
            let results = futures::future::join_all(futures).await;
            let mut positions = Vec::with_capacity(results.len());
            let mut first_err = None;
            for r in results {
                match r {
                    Ok(Ok(d)) => positions.push(RecordPosition {
                        partition: d.partition as Partition,
                        offset: d.offset as Offset,
                    }),
                    Ok(Err((e, _))) => {
                        first_err.get_or_insert_with(|| map_kafka_error(&e));
                    }
                    Err(_) => {
                        first_err.get_or_insert(LogError::Closed);
                    }
                }
            }
            if let Some(e) = first_err {
                return Err(e);
            }
            for p in &positions {
                shared.raise_end(p.partition, p.offset + 1);
            }
            shared.bytes.fetch_add(bytes, Relaxed);
            shared.records.fetch_add(positions.len() as u64, Relaxed);
            Ok(positions)
        })
    }

    fn partitions(&self) -> Vec<Partition> {
        self.shared.partitions.clone()
    }

    fn reader(&self, partition: Partition, from: Offset) -> Result<Box<dyn LogReader>, LogError> {
        if !self.shared.partitions.contains(&partition) {
            return Err(LogError::Unavailable(format!(
                "topic {:?} has no partition {partition}",
                self.shared.topic
            )));
        }
        if from < self.shared.start(partition) {
            return Err(self.shared.out_of_range(partition, from));
        }
        let consumer: BaseConsumer =
            self.config.consumer_config().create().map_err(|e| {
                LogError::Unavailable(format!("cannot create a Kafka consumer: {e}"))
            })?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            &self.shared.topic,
            partition as i32,
            rdkafka::Offset::Offset(from as i64),
        )
        .map_err(|e| map_kafka_error(&e))?;
        consumer.assign(&tpl).map_err(|e| map_kafka_error(&e))?;
        Ok(Box::new(KafkaReader {
            consumer: Arc::new(consumer),
            shared: self.shared.clone(),
            partition,
            position: from,
        }))
    }

    /// The low watermark as last read (every second, and by a read that found its offset
    /// deleted): never blocks.
    fn start_offset(&self, partition: Partition) -> Offset {
        self.shared.start(partition)
    }

    fn end_offset(&self, partition: Partition) -> Offset {
        self.shared.end(partition)
    }

    fn close(&self) -> BoxFuture<'static, Result<(), LogError>> {
        self.shared.closed.store(true, Relaxed);
        let producer = self.producer.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                producer.flush(Timeout::After(Duration::from_secs(30)))
            })
            .await
            .map_err(|e| LogError::Unavailable(e.to_string()))?
            .map_err(|e| map_kafka_error(&e))
        })
    }

    fn stats(&self) -> LogStats {
        LogStats {
            bytes: self.shared.bytes.load(Relaxed),
            records: self.shared.records.load(Relaxed),
            syncs: 0,
            ..LogStats::default()
        }
    }
}

/// Reads one partition from a manually assigned consumer.
struct KafkaReader {
    consumer: Arc<BaseConsumer>,
    shared: Arc<Shared>,
    partition: Partition,
    position: Offset,
}

impl LogReader for KafkaReader {
    fn next_batch(
        &mut self,
        max_records: usize,
        max_bytes: usize,
        wait: Duration,
    ) -> BoxFuture<'_, Result<Vec<LogEntry>, LogError>> {
        let consumer = self.consumer.clone();
        let partition = self.partition;
        let position = self.position;
        let shared = self.shared.clone();
        Box::pin(async move {
            let batch = tokio::task::spawn_blocking(move || {
                poll_batch(
                    &consumer,
                    &shared,
                    partition,
                    position,
                    max_records,
                    max_bytes,
                    wait,
                )
            })
            .await
            .map_err(|e| LogError::Unavailable(e.to_string()))??;
            if let Some(last) = batch.last() {
                self.position = last.offset + 1;
                self.shared.raise_end(partition, self.position);
            }
            Ok(batch)
        })
    }

    fn position(&self) -> Offset {
        self.position
    }
}

fn poll_batch(
    consumer: &BaseConsumer,
    shared: &Shared,
    partition: Partition,
    position: Offset,
    max_records: usize,
    max_bytes: usize,
    wait: Duration,
) -> Result<Vec<LogEntry>, LogError> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let deadline = std::time::Instant::now() + wait;
    while out.len() < max_records.max(1) && bytes < max_bytes.max(1) {
        let timeout = if out.is_empty() {
            deadline.saturating_duration_since(std::time::Instant::now())
        } else {
            Duration::ZERO
        };
        match consumer.poll(timeout) {
            None => {
                if !out.is_empty() || std::time::Instant::now() >= deadline {
                    break;
                }
            }
            Some(Ok(m)) => {
                if m.topic() != shared.topic || m.partition() as Partition != partition {
                    continue;
                }
                let offset = m.offset() as Offset;
                if offset < position {
                    continue;
                }
                let value = Bytes::copy_from_slice(m.payload().unwrap_or_default());
                bytes += value.len();
                out.push(LogEntry {
                    partition,
                    offset,
                    key: Bytes::copy_from_slice(m.key().unwrap_or_default()),
                    value,
                });
            }
            Some(Err(e)) => {
                if !out.is_empty() {
                    break;
                }
                return Err(match e.rdkafka_error_code() {
                    Some(RDKafkaErrorCode::OffsetOutOfRange)
                    | Some(RDKafkaErrorCode::AutoOffsetReset) => {
                        // Deleted since the last refresh (or never written): say where the
                        // partition holds records now.
                        let _ = shared.refresh(consumer, partition, Duration::from_secs(5));
                        shared.out_of_range(partition, position)
                    }
                    _ => map_kafka_error(&e),
                });
            }
        }
    }
    Ok(out)
}
