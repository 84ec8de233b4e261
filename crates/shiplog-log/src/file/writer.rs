//! Writing: group commit and rolling. The writer thread is the only code that changes
//! segment files.
//!
//! [`Log::append`](crate::Log::append) hands its batch to the writer thread through a channel and waits. The
//! writer takes the first waiting request and every request queued behind it (up to
//! [`FileLogConfig::max_batch_bytes`]), assigns offsets in queue order, encodes all frames
//! into one buffer, writes it with one `pwrite` at the end of the last segment, calls
//! `fdatasync` once, and only then completes every request of the group. While one sync
//! runs, new requests queue up and share the next one.
//!
//! Before a frame would take a non-empty segment past [`FileLogConfig::segment_bytes`], the
//! writer *rolls*: it writes and syncs what it has for the current segment (which becomes
//! sealed and is never written again), creates the next segment named by the next offset,
//! writes its header, and continues. A group that created a segment also fsyncs the
//! directory before acknowledging. A record larger than a segment gets a segment of its own.
//!
//! If a write or sync fails, every request of the group fails (`ENOSPC`/`EDQUOT` as
//! [`LogError::NoSpace`]), the segments created by the group are deleted, the segment that
//! was last when the group began is truncated back to its last synced length (and is the
//! last segment again), and the writer keeps serving later requests. If that truncation
//! fails too, it is retried before the next group writes anything.
//!
//! Readers never see a byte that is not synced: after each successful group commit the
//! writer publishes the durable lengths of the segments and then the durable end offset
//! (through a `tokio::sync::watch` channel); readers read only below both.
//!

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc};

use tokio::sync::{oneshot, watch};

use super::format::*;
use super::{map_io_error, write_lock, FileLogConfig, SegmentInfo, Shared};
use crate::durable::DirLock;
use crate::{LogError, LogRecord, Offset, RecordPosition};

/// Error injection for tests: each counter fails that many upcoming operations.
#[derive(Default)]
pub(crate) struct Faults {
    /// Upcoming writes fail with ENOSPC after writing half their bytes.
    fail_writes: AtomicU32,
    /// Upcoming fdatasyncs fail with EIO.
    fail_syncs: AtomicU32,
}

impl Faults {
    #[cfg(test)]
    pub(crate) fn fail_next_writes(&self, n: u32) {
        self.fail_writes.store(n, Ordering::SeqCst);
    }

    #[cfg(test)]
    pub(crate) fn fail_next_syncs(&self, n: u32) {
        self.fail_syncs.store(n, Ordering::SeqCst);
    }

    fn take(counter: &AtomicU32) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    fn write_all_at(&self, file: &File, data: &[u8], pos: u64) -> io::Result<()> {
        if Self::take(&self.fail_writes) {
            file.write_all_at(&data[..data.len() / 2], pos)?;
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        file.write_all_at(data, pos)
    }

    fn sync_data(&self, file: &File) -> io::Result<()> {
        if Self::take(&self.fail_syncs) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        file.sync_data()
    }
}

pub(super) struct AppendRequest {
    pub(super) records: Vec<LogRecord>,
    /// Sum of the frame sizes.
    pub(super) bytes: usize,
    pub(super) reply: oneshot::Sender<Result<Vec<RecordPosition>, LogError>>,
}

/// The writer thread's state: the only code that changes segment files.
pub(super) struct Writer {
    pub(super) dir: PathBuf,
    pub(super) dir_file: File,
    pub(super) _lock: DirLock,
    pub(super) config: FileLogConfig,
    /// The last segment, open for writing.
    pub(super) file: File,
    pub(super) tail_base: Offset,
    pub(super) tail_path: PathBuf,
    /// Synced length of the last segment.
    pub(super) tail_len: u64,
    /// Next offset to assign (= durable end).
    pub(super) next_offset: Offset,
    /// A failed group may have left bytes past `tail_len` that could not be truncated yet.
    pub(super) dirty: bool,
    pub(super) buf: Vec<u8>,
    pub(super) shared: Arc<Shared>,
}

/// What one group commit changed, to publish on success or undo on failure.
pub(super) struct Group {
    /// The segment that was the tail when the group began, if the group rolled.
    pub(super) original: Option<File>,
    /// Segments this group created.
    pub(super) created: Vec<PathBuf>,
    /// Durable lengths and new index entries per segment touched, in order.
    pub(super) updates: Vec<SegmentUpdate>,
    pub(super) seg_base: Offset,
    pub(super) seg_path: PathBuf,
    /// File position where `Writer::buf` goes in the current segment.
    pub(super) seg_start: u64,
    pub(super) index: Vec<(Offset, u64)>,
    pub(super) next: Offset,
}

pub(super) struct SegmentUpdate {
    pub(super) base: Offset,
    pub(super) path: PathBuf,
    pub(super) len: u64,
    pub(super) index: Vec<(Offset, u64)>,
}

impl Writer {
    pub(super) fn run(
        mut self,
        requests: mpsc::Receiver<AppendRequest>,
        stopped: watch::Sender<()>,
    ) {
        let max_batch = self.config.max_batch_bytes;
        let mut carry: Option<AppendRequest> = None;
        loop {
            let first = match carry.take() {
                Some(request) => request,
                None => match requests.recv() {
                    Ok(request) => request,
                    Err(_) => break, // every sender is gone and the queue is drained
                },
            };
            let mut bytes = first.bytes;
            let mut group = vec![first];
            while bytes < max_batch {
                match requests.try_recv() {
                    Ok(request) if bytes + request.bytes > max_batch => {
                        carry = Some(request);
                        break;
                    }
                    Ok(request) => {
                        bytes += request.bytes;
                        group.push(request);
                    }
                    Err(_) => break,
                }
            }
            self.commit(group);
        }
        drop(self); // close the files and release the directory lock
        drop(stopped); // then tell close() we are done
    }

    fn commit(&mut self, requests: Vec<AppendRequest>) {
        let first_offset = self.next_offset;
        let mut group = Group {
            original: None,
            created: Vec::new(),
            updates: Vec::new(),
            seg_base: self.tail_base,
            seg_path: self.tail_path.clone(),
            seg_start: self.tail_len,
            index: Vec::new(),
            next: self.next_offset,
        };
        match self.write_group(&requests, &mut group) {
            Ok(()) => {
                self.publish(group);
                let mut offset = first_offset;
                for request in requests {
                    let n = request.records.len() as u64;
                    let positions = (offset..offset + n)
                        .map(|offset| RecordPosition {
                            partition: 0,
                            offset,
                        })
                        .collect();
                    offset += n;
                    let _ = request.reply.send(Ok(positions));
                }
            }
            Err(error) => {
                tracing::error!(%error, requests = requests.len(), "log group commit failed");
                self.rollback(group);
                for request in requests {
                    let _ = request.reply.send(Err(map_io_error(&error)));
                }
            }
        }
    }

    fn write_group(&mut self, requests: &[AppendRequest], g: &mut Group) -> io::Result<()> {
        let faults = &self.shared.faults;
        if self.dirty {
            self.file.set_len(self.tail_len)?;
            faults.sync_data(&self.file)?;
            self.dirty = false;
        }
        self.buf.clear();
        for record in requests.iter().flat_map(|r| &r.records) {
            let frame_len = (FRAME_OVERHEAD + record.key.len() + record.value.len()) as u64;
            let current = g.seg_start + self.buf.len() as u64;
            if current > SEGMENT_HEADER_LEN && current + frame_len > self.config.segment_bytes {
                // Seal the current segment, then roll to a new one named by the next offset.
                faults.write_all_at(&self.file, &self.buf, g.seg_start)?;
                faults.sync_data(&self.file)?;
                self.shared.syncs.fetch_add(1, Ordering::Relaxed);
                g.updates.push(SegmentUpdate {
                    base: g.seg_base,
                    path: g.seg_path.clone(),
                    len: current,
                    index: std::mem::take(&mut g.index),
                });
                let path = segment_path(&self.dir, g.next);
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&path)?;
                g.created.push(path.clone());
                let previous = std::mem::replace(&mut self.file, file);
                if g.original.is_none() {
                    g.original = Some(previous);
                }
                faults.write_all_at(&self.file, &segment_header(g.next), 0)?;
                g.seg_base = g.next;
                g.seg_path = path;
                g.seg_start = SEGMENT_HEADER_LEN;
                self.buf.clear();
            }
            if (g.next - g.seg_base) & (INDEX_INTERVAL - 1) == 0 {
                g.index.push((g.next, g.seg_start + self.buf.len() as u64));
            }
            encode_frame(&mut self.buf, g.next, &record.key, &record.value);
            g.next += 1;
        }
        faults.write_all_at(&self.file, &self.buf, g.seg_start)?;
        faults.sync_data(&self.file)?;
        self.shared.syncs.fetch_add(1, Ordering::Relaxed);
        if !g.created.is_empty() {
            self.dir_file.sync_all()?;
        }
        g.updates.push(SegmentUpdate {
            base: g.seg_base,
            path: g.seg_path.clone(),
            len: g.seg_start + self.buf.len() as u64,
            index: std::mem::take(&mut g.index),
        });
        Ok(())
    }

    /// Makes a committed group visible: segment table first, then the durable end.
    fn publish(&mut self, g: Group) {
        self.tail_base = g.seg_base;
        self.tail_path = g.seg_path;
        self.tail_len = g.seg_start + self.buf.len() as u64;
        self.next_offset = g.next;
        {
            let mut table = write_lock(&self.shared.table);
            for update in g.updates {
                match table.segments.last_mut() {
                    Some(last) if last.base == update.base => {
                        last.len = update.len;
                        last.disk_len = update.len;
                        last.index.extend(update.index);
                    }
                    _ => table.segments.push(SegmentInfo {
                        base: update.base,
                        path: update.path,
                        len: update.len,
                        disk_len: update.len,
                        index: update.index,
                        indexed: true,
                        damage: Vec::new(),
                        keep_plain: false,
                    }),
                }
            }
        }
        self.shared.durable.send_replace(self.next_offset);
    }

    /// Undoes a failed group: deletes the segments it created and truncates the tail back
    /// to its synced length. If that fails too, retries before the next group.
    fn rollback(&mut self, g: Group) {
        if let Some(original) = g.original {
            self.file = original;
        }
        for path in &g.created {
            if let Err(error) = fs::remove_file(path) {
                tracing::error!(%error, path = %path.display(), "could not remove segment of a failed group");
            }
        }
        if !g.created.is_empty() {
            if let Err(error) = self.dir_file.sync_all() {
                tracing::error!(%error, "could not sync the log directory");
            }
        }
        let truncated = self
            .file
            .set_len(self.tail_len)
            .and_then(|()| self.shared.faults.sync_data(&self.file));
        if let Err(error) = truncated {
            tracing::error!(%error, "could not truncate the log tail after a failed write");
            self.dirty = true;
        }
    }
}
