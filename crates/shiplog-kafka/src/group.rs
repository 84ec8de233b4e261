//! Processors sharing the topic's partitions in a Kafka consumer group
//! (`[log] consumer_group = "…"`).
//!
//! Each partition has its own projection directory, `<data_dir>/parquet/_partitions/p<P>/`
//! (its own lock, `_state.json`, dedup index and Parquet files, which the query views
//! include), so two processors writing different partitions never share a file. On
//! assignment a processor opens the partition's projector (recovery included) and starts
//! reading at the projector's committed offset: the position comes from the Parquet state,
//! never from Kafka. After every flush, and before giving partitions up in a rebalance (the
//! revoked partitions are flushed first), it commits the next offsets to Kafka: these
//! committed offsets only serve lag monitoring. A processor killed mid-batch loses only
//! uncommitted temp files; whoever gets the partition next resumes at its state.

use crate::{Error, KafkaLogConfig};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Message, TopicPartitionList};
use shiplog_log::{LogEntry, Partition};
use shiplog_store::{
    group_partition_dir, ParquetProjector, ProjectedOffsets, ProjectionHandle, ProjectionMetrics,
    ProjectorConfig, StoreError,
};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{info, warn};

struct Shared {
    topic: String,
    data_dir: PathBuf,
    config: ProjectorConfig,
    projectors: Mutex<BTreeMap<Partition, ParquetProjector>>,
    metrics: Arc<ProjectionMetrics>,
    progress: watch::Sender<ProjectedOffsets>,
}

impl Shared {
    /// Flushes the projectors (all, or those of `only`) and returns the next offsets.
    fn flush(&self, only: Option<&[Partition]>) -> Result<BTreeMap<Partition, u64>, StoreError> {
        let mut ps = self.projectors.lock().unwrap();
        let mut next = BTreeMap::new();
        for (&part, p) in ps.iter_mut() {
            if only.is_some_and(|o| !o.contains(&part)) {
                continue;
            }
            if p.buffered() > 0 {
                self.metrics.record_flush(&p.flush()?);
                self.metrics.record_merge(&p.merge_small_files()?);
            }
            next.insert(part, p.committed_offsets().get(&part).copied().unwrap_or(0));
        }
        let all: ProjectedOffsets = ps
            .iter()
            .map(|(&part, p)| (part, p.committed_offsets().get(&part).copied().unwrap_or(0)))
            .collect();
        let _ = self.progress.send(all);
        Ok(next)
    }

    fn commit(&self, c: &BaseConsumer<GroupContext>, next: &BTreeMap<Partition, u64>) {
        if next.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (&p, &o) in next {
            let _ =
                tpl.add_partition_offset(&self.topic, p as i32, rdkafka::Offset::Offset(o as i64));
        }
        if let Err(e) = c.commit(&tpl, CommitMode::Sync) {
            warn!(error = %e, "committing offsets to Kafka failed (they only serve lag monitoring)");
        }
    }

    fn open_projector(&self, p: Partition) -> Result<ParquetProjector, StoreError> {
        let dir = group_partition_dir(&self.data_dir, p);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match ParquetProjector::open(&dir, self.config.clone()) {
                // The previous owner may still be flushing before it lets go.
                Err(StoreError::Locked(_)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                r => return r,
            }
        }
    }
}

pub struct GroupContext {
    shared: Arc<Shared>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn rebalance(&self, c: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let s = &self.shared;
        let parts: Vec<Partition> = tpl
            .elements()
            .iter()
            .map(|e| e.partition() as Partition)
            .collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                match s.flush(Some(&parts)) {
                    Ok(next) => s.commit(c, &next),
                    Err(e) => {
                        warn!(error = %e, "flush before giving up partitions failed; the next owner re-reads them")
                    }
                }
                let mut ps = s.projectors.lock().unwrap();
                for p in &parts {
                    ps.remove(p);
                }
                drop(ps);
                info!(?parts, "partitions revoked");
                let _ = c.unassign();
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let mut assigned = TopicPartitionList::new();
                for p in &parts {
                    match s.open_projector(*p) {
                        Ok(proj) => {
                            let from = proj.next_offset(*p);
                            let _ = assigned.add_partition_offset(
                                &s.topic,
                                *p as i32,
                                rdkafka::Offset::Offset(from as i64),
                            );
                            s.projectors.lock().unwrap().insert(*p, proj);
                        }
                        Err(e) => {
                            warn!(partition = p, error = %e, "cannot open the partition's projection; not consuming it")
                        }
                    }
                }
                info!(?parts, "partitions assigned");
                if let Err(e) = c.assign(&assigned) {
                    warn!(error = %e, "assign failed");
                }
            }
            other => {
                warn!(error = ?other, "rebalance error");
                let _ = c.unassign();
            }
        }
    }
}

/// Starts a group processor on a dedicated thread; the handle's task ends after
/// `shutdown` (the partitions are flushed and their offsets committed first). Call
/// [`shiplog_store::ensure_group_layout`] first, so the query views see the partitions.
pub async fn run_group_projection(
    kafka: KafkaLogConfig,
    group: String,
    data_dir: PathBuf,
    config: ProjectorConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<ProjectionHandle, Error> {
    let schedule: cron::Schedule = config.compaction_schedule.parse().map_err(|e| {
        StoreError::Config(format!(
            "projection.compaction_schedule {:?}: {e}",
            config.compaction_schedule
        ))
    })?;
    let (tx, rx) = watch::channel(ProjectedOffsets::new());
    let metrics = Arc::new(ProjectionMetrics::default());
    let shared = Arc::new(Shared {
        topic: kafka.topic.clone(),
        data_dir,
        config: config.clone(),
        projectors: Mutex::new(BTreeMap::new()),
        metrics: metrics.clone(),
        progress: tx,
    });
    let consumer: BaseConsumer<GroupContext> = kafka
        .group_consumer_config(&group)
        .create_with_context(GroupContext {
            shared: shared.clone(),
        })
        .map_err(|e| Error::Client {
            what: "cannot create the Kafka group consumer",
            source: e,
        })?;
    consumer
        .subscribe(&[&kafka.topic])
        .map_err(|e| Error::Client {
            what: "cannot subscribe to the topic",
            source: e,
        })?;
    info!(%group, topic = %kafka.topic, "joined the processors' consumer group");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    tokio::spawn(async move {
        let _ = shutdown.wait_for(|v| *v).await;
        stop2.store(true, Relaxed);
    });
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("shiplog-group-projection".into())
        .spawn(move || {
            let r = group_loop(&consumer, &shared, &config, &schedule, &stop);
            // Leave the group: the revoke callback flushes and commits.
            consumer.unsubscribe();
            let _ = done_tx.send(r);
        })?;
    let task = tokio::spawn(async move {
        match done_rx.await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Config(
                "the group projection thread died".into(),
            )),
        }
    });
    Ok(ProjectionHandle {
        progress: rx,
        metrics,
        task,
    })
}

fn group_loop(
    c: &BaseConsumer<GroupContext>,
    s: &Shared,
    config: &ProjectorConfig,
    schedule: &cron::Schedule,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(), StoreError> {
    let mut first_buffered: Option<Instant> = None;
    let mut next_compaction = schedule.upcoming(chrono::Utc).next();
    loop {
        if next_compaction.is_some_and(|t| chrono::Utc::now() >= t) {
            // Each partition's directory is compacted (and retention applied) by its owner.
            let now = chrono::Utc::now();
            for (part, p) in s.projectors.lock().unwrap().iter_mut() {
                match p.compact_and_apply_retention(now) {
                    Ok((c, ret)) => s.metrics.record_compaction(&c, &ret),
                    Err(e) => warn!(partition = part, error = %e, "compaction failed"),
                }
            }
            next_compaction = schedule.upcoming(chrono::Utc).next();
        }
        if stop.load(Relaxed) {
            let next = s.flush(None)?;
            s.commit(c, &next);
            return Ok(());
        }
        match c.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                let entry = LogEntry {
                    partition: m.partition() as Partition,
                    offset: m.offset() as u64,
                    key: bytes::Bytes::copy_from_slice(m.key().unwrap_or_default()),
                    value: bytes::Bytes::copy_from_slice(m.payload().unwrap_or_default()),
                };
                drop(m);
                let mut ps = s.projectors.lock().unwrap();
                if let Some(p) = ps.get_mut(&entry.partition) {
                    let next = p.next_offset(entry.partition);
                    if entry.offset > next {
                        // Fetched before a rewind: read again from the projector's position.
                        let _ = c.seek(
                            &s.topic,
                            entry.partition as i32,
                            rdkafka::Offset::Offset(next as i64),
                            Duration::from_secs(5),
                        );
                        continue;
                    }
                    p.push(vec![entry]);
                    first_buffered.get_or_insert_with(Instant::now);
                }
            }
            Some(Err(e)) => {
                warn!(error = %e, "Kafka consumer error");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        let full = s
            .projectors
            .lock()
            .unwrap()
            .values()
            .any(|p| p.should_flush());
        if full || first_buffered.is_some_and(|t| t.elapsed() >= config.flush_interval) {
            match s.flush(None) {
                Ok(next) => s.commit(c, &next),
                Err(e) => {
                    // Reopen the projectors (recovery), which rewinds to their state.
                    s.metrics.flush_errors.fetch_add(1, Relaxed);
                    warn!(error = %e, "group flush failed; reopening the partitions' projections");
                    let parts: Vec<Partition> =
                        s.projectors.lock().unwrap().keys().copied().collect();
                    s.projectors.lock().unwrap().clear();
                    std::thread::sleep(Duration::from_millis(500));
                    for p in parts {
                        let proj = s.open_projector(p)?;
                        let from = proj.next_offset(p);
                        s.projectors.lock().unwrap().insert(p, proj);
                        let _ = c.seek(
                            &s.topic,
                            p as i32,
                            rdkafka::Offset::Offset(from as i64),
                            Duration::from_secs(5),
                        );
                    }
                }
            }
            first_buffered = None;
        }
    }
}
