//! Compressed sealed segments: `<base>.zseg`, the same records as `<base>.seg` in seekable,
//! independently checkable zstd blocks (after the zstd seekable format's idea: independent
//! frames plus what it takes to find them, here a checked header before each block).
//!
//! # Format (version 1)
//!
//! ```text
//! +--------------------+----------------+------------------+---------------------+
//! | magic "SHPLGZSG"   | version u32 LE | reserved u32 LE  | base offset u64 LE  |   24 bytes
//! +--------------------+----------------+------------------+---------------------+
//! then blocks, back to back:
//! +--------------+------------+-------------+------------------+-------------+--------------+----------+
//! | raw pos u64  | raw len u32| comp len u32| first offset u64 | raw CRC u32 | header CRC u32| zstd ... |
//! +--------------+------------+-------------+------------------+-------------+--------------+----------+
//! |<------------------------------ block header, 32 bytes ------------------------------->|comp len  |
//! ```
//!
//! A block holds the bytes `raw pos .. raw pos + raw len` of the original segment file
//! (whole frames; the first block starts right after the segment header, which readers
//! get back from the base offset of this file's header), compressed as one
//! zstd frame of about [`BLOCK_BYTES`] raw bytes. `raw CRC` is the CRC32C of the raw bytes,
//! `header CRC` the CRC32C of the header's first 28 bytes. Every record frame inside keeps
//! its own CRC32C.
//!
//! # Reading
//!
//! [`SegmentFile`] presents a compressed segment as the raw bytes of the original one, so
//! the scans, the readers and [`verify`](super::verify()) work on raw byte positions and
//! the sparse index stays valid: a read decompresses only the block(s) it touches (one
//! block is cached, so a sequential read decompresses each block once). A block whose
//! header or bytes do not check out reads as zeros: the frames there fail their checks,
//! and readers skip them and report the lost offsets exactly as they do for damage in a
//! plain segment (resynchronising on the next block's frames). Raw bytes covered by no
//! block (a damaged header) read as zeros too.
//!
//! # Who creates and deletes `.zseg` files, crash-safely
//!
//! The log's compressor thread compresses a sealed segment (one with no damage, whose
//! successor holds records, so it can never become the tail again) into
//! `<base>.zseg.tmp`, fsyncs it, renames it to `<base>.zseg` and fsyncs the directory;
//! then it points the segment table at the `.zseg` and only then deletes the `.seg` and
//! fsyncs the directory. A reader that had the `.seg` open keeps reading it; new readers
//! open the `.zseg`. A crash before the rename leaves a `.tmp` that the next open deletes;
//! after it, both files are complete and the next open deletes the `.seg`. So readers
//! always see one complete form or the other. The `.zseg` keeps the `.seg`'s modification
//! time (a segment's age, for retention). When retention removed the segment while it was
//! being compressed, the compressor deletes the `.zseg` it made (the switch-over and
//! retention share a lock). The active segment is never compressed: the
//! write path and the cost of an acknowledgement do not change.

use std::cell::RefCell;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::format::*;
use super::scan::scan_sealed;
use super::Shared;
use crate::durable::sync_dir;
use crate::Offset;

/// The first 8 bytes of every compressed segment.
pub const COMPRESSED_MAGIC: [u8; 8] = *b"SHPLGZSG";
/// The version of the compressed format this code writes and reads.
pub const COMPRESSED_VERSION: u32 = 1;
/// Raw bytes per block (blocks end at a frame boundary at or after this; a larger frame
/// gets a block of its own).
pub const BLOCK_BYTES: usize = 1 << 20;
/// zstd level of the blocks.
pub const ZSTD_LEVEL: i32 = 3;
const BLOCK_HEADER_LEN: u64 = 32;
pub(super) const COMPRESSED_SUFFIX: &str = ".zseg";

/// One block of a compressed segment, as found in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Block {
    pub(super) raw_pos: u64,
    pub(super) raw_len: u64,
    /// File position of the zstd frame.
    pub(super) pos: u64,
    pub(super) comp_len: u64,
    pub(super) first_offset: Offset,
    pub(super) raw_crc: u32,
}

/// A segment file read as raw segment bytes, plain or compressed (see the module docs).
pub(super) enum SegmentFile {
    Plain(File),
    Compressed {
        /// The original segment's header (zeros when this file's header is damaged).
        header: [u8; SEGMENT_HEADER_LEN as usize],
        file: File,
        blocks: Vec<Block>,
        raw_len: u64,
        /// The last block decompressed (index, raw bytes; empty when damaged).
        cache: RefCell<Option<(usize, Vec<u8>)>>,
    },
}

/// Whether `path` names a compressed segment.
pub(super) fn is_compressed(path: &Path) -> bool {
    path.to_str()
        .is_some_and(|p| p.ends_with(COMPRESSED_SUFFIX))
}

/// The compressed segment's path for base `base`.
pub(super) fn compressed_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{base:020}{COMPRESSED_SUFFIX}"))
}

impl SegmentFile {
    /// Opens a segment file; a `.zseg` is indexed from its block headers.
    pub(super) fn open(path: &Path) -> io::Result<SegmentFile> {
        let file = File::open(path)?;
        if !is_compressed(path) {
            return Ok(SegmentFile::Plain(file));
        }
        let (header, blocks) = read_blocks(&file)?;
        let raw_len = blocks
            .last()
            .map_or(SEGMENT_HEADER_LEN, |b| b.raw_pos + b.raw_len);
        Ok(SegmentFile::Compressed {
            header,
            file,
            blocks,
            raw_len,
            cache: RefCell::new(None),
        })
    }

    /// Length of the raw segment bytes.
    pub(super) fn len(&self) -> io::Result<u64> {
        match self {
            SegmentFile::Plain(f) => Ok(f.metadata()?.len()),
            SegmentFile::Compressed { raw_len, .. } => Ok(*raw_len),
        }
    }

    /// Bytes on disk.
    pub(super) fn disk_len(&self) -> io::Result<u64> {
        match self {
            SegmentFile::Plain(f) | SegmentFile::Compressed { file: f, .. } => {
                Ok(f.metadata()?.len())
            }
        }
    }

    /// Reads raw segment bytes at raw position `pos`, like `pread`: fails with
    /// `UnexpectedEof` past the end.
    pub(super) fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        let (header, file, blocks, raw_len, cache) = match self {
            SegmentFile::Plain(f) => return f.read_exact_at(buf, pos),
            SegmentFile::Compressed {
                header,
                file,
                blocks,
                raw_len,
                cache,
            } => (header, file, blocks, *raw_len, cache),
        };
        if pos + buf.len() as u64 > raw_len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of the compressed segment",
            ));
        }
        let mut done = 0usize;
        while done < buf.len() {
            let p = pos + done as u64;
            if p < SEGMENT_HEADER_LEN {
                let n = ((SEGMENT_HEADER_LEN - p) as usize).min(buf.len() - done);
                buf[done..done + n].copy_from_slice(&header[p as usize..p as usize + n]);
                done += n;
                continue;
            }
            let i = blocks.partition_point(|b| b.raw_pos <= p);
            let inside = i
                .checked_sub(1)
                .filter(|&j| p < blocks[j].raw_pos + blocks[j].raw_len);
            let Some(j) = inside else {
                // No block covers these bytes (a damaged header): zeros up to the next one.
                let until = blocks.get(i).map_or(raw_len, |b| b.raw_pos);
                let n = ((until - p) as usize).min(buf.len() - done);
                buf[done..done + n].fill(0);
                done += n;
                continue;
            };
            let mut cached = cache.borrow_mut();
            if cached.as_ref().is_none_or(|(k, _)| *k != j) {
                *cached = Some((j, decompress_block(file, &blocks[j]).unwrap_or_default()));
            }
            let raw = &cached.as_ref().expect("just cached").1;
            let b = &blocks[j];
            let from = (p - b.raw_pos) as usize;
            let n = (b.raw_len as usize - from).min(buf.len() - done);
            if raw.is_empty() {
                buf[done..done + n].fill(0); // a damaged block
            } else {
                buf[done..done + n].copy_from_slice(&raw[from..from + n]);
            }
            done += n;
        }
        Ok(())
    }
}

/// A part of a compressed segment that does not check out, for `verify`.
pub(super) struct BadBlock {
    /// Raw segment bytes it held (they read as zeros).
    pub(super) raw: std::ops::Range<u64>,
    /// Its bytes in the `.zseg` file.
    pub(super) file: std::ops::Range<u64>,
    pub(super) reason: String,
}

impl SegmentFile {
    /// Every block that does not decompress to bytes matching its CRC32C, and every raw
    /// range no readable block header covers (empty for a plain segment).
    pub(super) fn bad_blocks(&self) -> Vec<BadBlock> {
        let SegmentFile::Compressed {
            file,
            blocks,
            raw_len,
            ..
        } = self
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let (mut raw_at, mut file_at) = (SEGMENT_HEADER_LEN, SEGMENT_HEADER_LEN);
        for (i, b) in blocks.iter().enumerate() {
            let header_at = b.pos - BLOCK_HEADER_LEN;
            if b.raw_pos > raw_at {
                out.push(BadBlock {
                    raw: raw_at..b.raw_pos,
                    file: file_at..header_at,
                    reason: "compressed block with a damaged header".into(),
                });
            }
            if decompress_block(file, b).is_none() {
                out.push(BadBlock {
                    raw: b.raw_pos..b.raw_pos + b.raw_len,
                    file: header_at..b.pos + b.comp_len,
                    reason: format!(
                        "compressed block {i} does not check out (zstd or CRC32C of its bytes)"
                    ),
                });
            }
            raw_at = b.raw_pos + b.raw_len;
            file_at = b.pos + b.comp_len;
        }
        if *raw_len > raw_at {
            out.push(BadBlock {
                raw: raw_at..*raw_len,
                file: file_at..file_at,
                reason: "compressed block with a damaged header".into(),
            });
        }
        out
    }
}

/// The raw bytes of a block, or `None` when they do not check out (zstd error, wrong
/// length or CRC).
pub(super) fn decompress_block(file: &File, b: &Block) -> Option<Vec<u8>> {
    let mut comp = vec![0u8; b.comp_len as usize];
    file.read_exact_at(&mut comp, b.pos).ok()?;
    let raw = zstd::bulk::decompress(&comp, b.raw_len as usize).ok()?;
    (raw.len() as u64 == b.raw_len && crc32c::crc32c(&raw) == b.raw_crc).then_some(raw)
}

fn parse_block_header(h: &[u8; BLOCK_HEADER_LEN as usize], pos: u64) -> Option<Block> {
    let u64_at = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().expect("8 bytes"));
    let u32_at = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().expect("4 bytes"));
    (crc32c::crc32c(&h[..28]) == u32_at(28)).then(|| Block {
        raw_pos: u64_at(0),
        raw_len: u32_at(8) as u64,
        comp_len: u32_at(12) as u64,
        first_offset: u64_at(16),
        raw_crc: u32_at(24),
        pos: pos + BLOCK_HEADER_LEN,
    })
}

/// Walks the block headers of a compressed segment. A header that does not check out is
/// skipped by searching, byte by byte, for the next one that does (its block's raw bytes
/// then read as zeros).
/// Returns the original segment's header too (rebuilt from this file's base offset).
#[allow(clippy::type_complexity)]
fn read_blocks(file: &File) -> io::Result<([u8; SEGMENT_HEADER_LEN as usize], Vec<Block>)> {
    let len = file.metadata()?.len();
    let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
    let mut blocks: Vec<Block> = Vec::new();
    if len < SEGMENT_HEADER_LEN {
        return Ok((header, blocks));
    }
    file.read_exact_at(&mut header, 0)?;
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    header = if header[..8] == COMPRESSED_MAGIC && version == COMPRESSED_VERSION {
        segment_header(u64::from_le_bytes(
            header[16..24].try_into().expect("8 bytes"),
        ))
    } else {
        [0u8; SEGMENT_HEADER_LEN as usize]
    };
    let mut pos = SEGMENT_HEADER_LEN;
    let mut h = [0u8; BLOCK_HEADER_LEN as usize];
    while pos + BLOCK_HEADER_LEN <= len {
        file.read_exact_at(&mut h, pos)?;
        match parse_block_header(&h, pos) {
            Some(b)
                if b.pos + b.comp_len <= len
                    && blocks
                        .last()
                        .is_none_or(|l| b.raw_pos >= l.raw_pos + l.raw_len) =>
            {
                pos = b.pos + b.comp_len;
                blocks.push(b);
            }
            _ => pos += 1,
        }
    }
    Ok((header, blocks))
}

/// What [`compress_segment`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompressReport {
    pub raw_bytes: u64,
    pub compressed_bytes: u64,
    pub blocks: u64,
}

/// Writes `<base>.zseg` from the sealed, undamaged segment `<base>.seg` whose successor
/// starts at `upper` (see the module docs for the crash-safe steps; this does the steps up
/// to the rename and the directory fsync; the caller then switches readers over and
/// deletes the `.seg`). `Ok(None)` when the segment has damage (it stays plain, so that
/// readers and `verify` keep naming the damaged bytes where they are).
/// `cancelled` is asked between blocks: when it says so, the temp file is removed and the
/// segment stays plain (`Interrupted`).
pub(super) fn compress_segment(
    dir: &Path,
    base: Offset,
    upper: Offset,
    cancelled: &dyn Fn() -> bool,
) -> io::Result<Option<CompressReport>> {
    let path = segment_path(dir, base);
    let file = File::open(&path)?;
    let len = file.metadata()?.len();
    let scan = scan_sealed(
        &SegmentFile::Plain(file.try_clone()?),
        base,
        len,
        Some(upper),
    )?;
    if !scan.damage.is_empty() || scan.stop.is_some() || scan.valid_len != len {
        return Ok(None);
    }
    let tmp = dir.join(format!("{base:020}{COMPRESSED_SUFFIX}.tmp"));
    let result = (|| {
        let out = File::create(&tmp)?;
        let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
        header[..8].copy_from_slice(&COMPRESSED_MAGIC);
        header[8..12].copy_from_slice(&COMPRESSED_VERSION.to_le_bytes());
        header[16..24].copy_from_slice(&base.to_le_bytes());
        out.write_all_at(&header, 0)?;
        let mut at = SEGMENT_HEADER_LEN;
        let mut report = CompressReport {
            raw_bytes: len,
            ..CompressReport::default()
        };
        let mut raw = vec![0u8; len as usize];
        file.read_exact_at(&mut raw, 0)?;
        // Cut blocks at frame boundaries: the first after the segment header.
        let header_len = SEGMENT_HEADER_LEN as usize;
        let (mut start, mut pos, mut first, mut next) = (header_len, header_len, base, base);
        while start < raw.len() {
            if cancelled() {
                return Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "the log is closing",
                ));
            }
            while pos < raw.len() && (pos - start < BLOCK_BYTES) {
                match parse_frame(&raw[pos..]) {
                    Parsed::Frame { total, .. } => {
                        pos += total;
                        next += 1;
                    }
                    _ => return Err(io::Error::other("segment changed while compressing")),
                }
            }
            let block = &raw[start..pos];
            let comp = zstd::bulk::compress(block, ZSTD_LEVEL)?;
            let mut h = [0u8; BLOCK_HEADER_LEN as usize];
            h[0..8].copy_from_slice(&(start as u64).to_le_bytes());
            h[8..12].copy_from_slice(&(block.len() as u32).to_le_bytes());
            h[12..16].copy_from_slice(&(comp.len() as u32).to_le_bytes());
            h[16..24].copy_from_slice(&first.to_le_bytes());
            h[24..28].copy_from_slice(&crc32c::crc32c(block).to_le_bytes());
            let hcrc = crc32c::crc32c(&h[..28]);
            h[28..32].copy_from_slice(&hcrc.to_le_bytes());
            out.write_all_at(&h, at)?;
            out.write_all_at(&comp, at + BLOCK_HEADER_LEN)?;
            at += BLOCK_HEADER_LEN + comp.len() as u64;
            report.blocks += 1;
            start = pos;
            first = next;
        }
        // The segment's age is its last write (retention reads it): carried over.
        out.set_modified(file.metadata()?.modified()?)?;
        out.sync_all()?;
        report.compressed_bytes = at;
        fs::rename(&tmp, compressed_path(dir, base))?;
        sync_dir(dir)?;
        Ok(report)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(Some)
}

/// Finishes what a crash interrupted (see the module docs), at open: deletes every
/// `.zseg.tmp` (never renamed into place) and every `.seg` whose `.zseg` exists (renamed:
/// complete and synced), then fsyncs the directory.
pub(super) fn finish_interrupted(dir: &Path) -> io::Result<()> {
    let mut changed = false;
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let stale = if name.ends_with(".zseg.tmp") {
            true
        } else if let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) {
            dir.join(format!("{stem}{COMPRESSED_SUFFIX}")).exists()
        } else {
            false
        };
        if stale {
            tracing::info!(file = %path.display(), "removing a file of an interrupted segment compression");
            fs::remove_file(&path)?;
            changed = true;
        }
    }
    if changed {
        sync_dir(dir)?;
    }
    Ok(())
}

/// The background thread that compresses sealed segments, oldest first, one at a time.
pub(super) struct Compressor {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: JoinHandle<()>,
}

/// How often the compressor looks for sealed segments.
const COMPRESS_EVERY: Duration = Duration::from_secs(1);

impl Compressor {
    pub(super) fn start(shared: Arc<Shared>, dir: PathBuf) -> io::Result<Compressor> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("shiplog-log-compressor".into())
            .spawn(move || {
                lowest_cpu_priority();
                compressor_loop(&shared, &dir, &flag)
            })?;
        Ok(Compressor { stop, thread })
    }

    /// Stops the thread after the segment it is compressing, if any.
    pub(super) fn stop(self) {
        *super::lock(&self.stop.0) = true;
        self.stop.1.notify_all();
        let _ = self.thread.join();
    }
}

/// Compresses what there is, then waits [`COMPRESS_EVERY`] or until stopped.
fn compressor_loop(shared: &Shared, dir: &Path, flag: &(Mutex<bool>, Condvar)) {
    loop {
        let stopping = || *super::lock(&flag.0);
        while compress_next(shared, dir, &stopping).is_some() {
            if *super::lock(&flag.0) {
                return;
            }
        }
        let stopped = super::lock(&flag.0);
        let (stopped, _) = flag
            .1
            .wait_timeout(stopped, COMPRESS_EVERY)
            .unwrap_or_else(|e| e.into_inner());
        if *stopped {
            return;
        }
    }
}

/// Runs the calling thread at the idle scheduling class (Linux `SCHED_IDLE`): compression
/// only uses CPU time nothing else wants, so acknowledgements do not slow down while it
/// runs; under full load it falls behind and catches up when the load drops.
fn lowest_cpu_priority() {
    // SAFETY: sched_setscheduler on the calling thread (0) with a valid parameter struct.
    let param = libc::sched_param { sched_priority: 0 };
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "the log compressor keeps its normal priority");
    }
}

/// Figures of several compressed segments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompressSummary {
    pub segments: u64,
    pub raw_bytes: u64,
    pub compressed_bytes: u64,
    pub elapsed: Duration,
}

impl CompressSummary {
    pub(super) fn add(&mut self, r: Option<CompressReport>) {
        if let Some(r) = r {
            self.segments += 1;
            self.raw_bytes += r.raw_bytes;
            self.compressed_bytes += r.compressed_bytes;
        }
    }
}

/// Compresses the oldest sealed plain segment whose successor holds records: `None` when
/// there is none (or it failed: retried on the next round), `Some(None)` when it was left
/// plain (damaged).
pub(super) fn compress_next(
    shared: &Shared,
    dir: &Path,
    cancelled: &dyn Fn() -> bool,
) -> Option<Option<CompressReport>> {
    let candidate = {
        let table = super::read_lock(&shared.table);
        let s = &table.segments;
        (0..s.len().saturating_sub(1)).find_map(|i| {
            let next = &s[i + 1];
            let eligible = !is_compressed(&s[i].path)
                && !s[i].keep_plain
                && s[i].damage.is_empty()
                && next.len > SEGMENT_HEADER_LEN;
            eligible.then_some((s[i].base, next.base))
        })
    };
    let (base, upper) = candidate?;
    let started = std::time::Instant::now();
    match compress_segment(dir, base, upper, cancelled) {
        Ok(Some(report)) => {
            let _maintenance = super::lock(&shared.maintenance);
            let kept = {
                let mut table = super::write_lock(&shared.table);
                match table.segments.iter_mut().find(|s| s.base == base) {
                    Some(s) => {
                        s.path = compressed_path(dir, base);
                        s.disk_len = report.compressed_bytes;
                        true
                    }
                    None => false,
                }
            };
            if !kept {
                // Retention removed the segment meanwhile: the `.zseg` goes too (the next
                // open would, as it lies below the log's start).
                let removed =
                    fs::remove_file(compressed_path(dir, base)).and_then(|()| sync_dir(dir));
                if let Err(error) = removed {
                    tracing::warn!(%error, base, "could not delete the compressed form of a segment retention removed (the next start does)");
                }
                return Some(None);
            }
            let removed = fs::remove_file(segment_path(dir, base)).and_then(|()| sync_dir(dir));
            if let Err(error) = removed {
                tracing::warn!(%error, base, "compressed a segment but could not delete its .seg (the next start does)");
            }
            tracing::debug!(
                segment = base,
                raw_bytes = report.raw_bytes,
                compressed_bytes = report.compressed_bytes,
                blocks = report.blocks,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "compressed a sealed log segment"
            );
            Some(Some(report))
        }
        Ok(None) => {
            let mut table = super::write_lock(&shared.table);
            if let Some(s) = table.segments.iter_mut().find(|s| s.base == base) {
                s.keep_plain = true;
            }
            Some(None)
        }
        Err(error) if error.kind() == io::ErrorKind::Interrupted => None,
        Err(error) => {
            tracing::warn!(%error, segment = base, "compressing a sealed log segment failed; retrying later");
            None
        }
    }
}
